import pytest
import torch
from torch import nn

from steadytune.training.classifier import load_model
from steadytune.training.mixout import MixLinear, apply_mixout
from steadytune.training.models import ModelError, model_type_of, resolve_for_model


def _cfg(path, **over):
    return resolve_for_model(task="rte", recipe="devlin2019", model=str(path), overrides=over)


def test_head_init_is_seeded_normal_with_zero_bias(tiny_bert):
    a, rec = load_model(_cfg(tiny_bert, head_init_std=0.5), 2, head_seed=7)
    b, _ = load_model(_cfg(tiny_bert, head_init_std=0.5), 2, head_seed=7)
    c, _ = load_model(_cfg(tiny_bert, head_init_std=0.5), 2, head_seed=8)
    assert rec["new_parameters"] == ["classifier.bias", "classifier.weight"]
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert torch.count_nonzero(a.classifier.bias) == 0
    # the same generator draws as a plain N(0, 0.5) sample from that seed
    expected = torch.empty_like(a.classifier.weight).normal_(0, 0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.classifier.weight, expected)
    # pre-trained encoder weights are untouched by the seed
    assert torch.equal(a.bert.encoder.layer[0].attention.self.query.weight, c.bert.encoder.layer[0].attention.self.query.weight)


def test_dropout_settings_reach_the_model(tiny_models):
    model, rec = load_model(_cfg(tiny_models["albert"]), 2, 0)
    assert rec["dropout_config"]["hidden_dropout_prob"] == 0.0  # ALBERT preset
    bert, _ = load_model(_cfg(tiny_models["bert"], hidden_dropout=0.3, classifier_dropout=0.2), 2, 0)
    assert bert.config.hidden_dropout_prob == 0.3 and bert.dropout.p == 0.2


def test_reinit_top_layers_and_pooler(tiny_bert):
    base, _ = load_model(_cfg(tiny_bert), 2, 0)
    re, rec = load_model(_cfg(tiny_bert, reinit_layers=1, reinit_pooler=True), 2, 0)
    assert rec["reinitialised"] == ["layer.1", "pooler"]
    assert torch.equal(base.bert.encoder.layer[0].output.dense.weight, re.bert.encoder.layer[0].output.dense.weight)
    assert not torch.equal(base.bert.encoder.layer[1].output.dense.weight, re.bert.encoder.layer[1].output.dense.weight)
    assert torch.count_nonzero(re.bert.encoder.layer[1].output.dense.bias) == 0
    assert torch.all(re.bert.encoder.layer[1].output.LayerNorm.weight == 1)
    assert not torch.equal(base.bert.pooler.dense.weight, re.bert.pooler.dense.weight)


def test_reinit_errors(tiny_models):
    with pytest.raises(ModelError, match="exceeds"):
        load_model(_cfg(tiny_models["bert"], reinit_layers=5), 2, 0)
    with pytest.raises(ModelError, match="shares one"):
        load_model(_cfg(tiny_models["albert"], reinit_layers=1), 2, 0)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not a local directory"):
        model_type_of("no-such-org/no-such-model-xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="cannot load model from"):
        model_type_of(str(tmp_path / "empty"))


def test_mixout_expectation_and_eval():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    target = lin.weight.detach().clone()
    with torch.no_grad():
        lin.weight.add_(torch.randn_like(lin.weight))  # w != u
    mix = MixLinear.from_linear(lin, p=0.7)
    mix.mixout_target.copy_(target)
    mix.eval()
    x = torch.randn(3, 6)
    assert torch.equal(mix(x), lin(x))
    mix.train()
    draws = torch.stack([mix.mixed_weight() for _ in range(20000)])
    # E[w_mix] = w (unbiased), and each sample mixes whole input columns
    assert torch.allclose(draws.mean(0), lin.weight, atol=0.05)
    sample = draws[0]
    for j in range(6):
        col = sample[:, j]
        mixed = ((target[:, j] - 0.7 * target[:, j]) / 0.3)
        kept = ((lin.weight[:, j] - 0.7 * target[:, j]) / 0.3)
        assert torch.allclose(col, mixed) or torch.allclose(col, kept)


def test_mixout_gradient_is_mask_over_keep_prob():
    torch.manual_seed(1)
    mix = MixLinear.from_linear(nn.Linear(5, 3, bias=False), p=0.5)
    mix.train()
    x = torch.randn(2, 5)
    torch.manual_seed(3)
    mix(x).sum().backward()
    torch.manual_seed(3)
    keep = torch.empty(5).bernoulli_(0.5)
    expected = (keep / 0.5).expand(3, 5) * x.sum(0).expand(3, 5)
    assert torch.allclose(mix.weight.grad, expected)


def test_apply_mixout_keeps_names_and_checkpoint_keys(tiny_bert):
    model, _ = load_model(_cfg(tiny_bert), 2, 0)
    names = [n for n, _ in model.named_parameters()]
    keys = set(model.state_dict())
    replaced = apply_mixout(model, 0.9)
    assert len(replaced) == 2 * 6 + 2  # 6 linears per layer, pooler, classifier
    assert [n for n, _ in model.named_parameters()] == names
    assert set(model.state_dict()) == keys


def _pickle_only_copy(src, dest):
    """``src`` with its weights as ``pytorch_model.bin`` (``torch.save``) instead of safetensors.

    transformers 5 ignores ``save_pretrained(safe_serialization=False)``, so the pickle is
    written directly, as older transformers versions did.
    """
    import shutil

    from safetensors.torch import load_file

    shutil.copytree(src, dest)
    torch.save(load_file(dest / "model.safetensors"), dest / "pytorch_model.bin")
    (dest / "model.safetensors").unlink()
    return dest


def test_pickle_only_checkpoint_is_refused_with_a_conversion_that_works(tiny_bert, tmp_path, monkeypatch):
    import shlex
    import sys

    from transformers import AutoModelForSequenceClassification

    folder = _pickle_only_copy(tiny_bert, tmp_path / "pickled")
    AutoModelForSequenceClassification.from_pretrained(str(folder))  # transformers alone would unpickle it
    with pytest.raises(ModelError) as err:
        load_model(_cfg(folder), 2, 0)
    command = ('python -c "import sys, transformers as t; p = sys.argv[1]; '
               'a = t.AutoConfig.from_pretrained(p).architectures[0]; '
               f'getattr(t, a).from_pretrained(p).save_pretrained(p)" {folder}')
    assert str(err.value) == (f"{folder} has only pytorch_model.bin (a pickle); steadytune loads safetensors only: "
                              f"convert it with `{command}` in an environment you trust")
    # the advice works: run the command's code (in this process) and the folder loads
    _, _, code, path = shlex.split(command)
    monkeypatch.setattr(sys, "argv", ["-c", path])
    exec(code, {})
    model, _ = load_model(_cfg(folder), 2, 0)
    original, _ = load_model(_cfg(tiny_bert), 2, 0)
    weight = "bert.encoder.layer.1.output.dense.weight"
    assert torch.equal(model.get_parameter(weight), original.get_parameter(weight))


def test_config_naming_pickle_weights_is_refused(tiny_bert, tmp_path):
    import json
    import shutil

    from steadytune.training.models import require_safetensors

    folder = tmp_path / "explicit"
    shutil.copytree(tiny_bert, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "transformers_weights": "adapter_model.bin"}))
    with pytest.raises(ModelError, match=r"transformers_weights='adapter_model.bin', not a safetensors file"):
        require_safetensors(folder)
    require_safetensors(tiny_bert)  # safetensors: fine
    require_safetensors("some-org/some-hub-id")  # not a folder: use_safetensors=True decides


def test_hub_model_without_safetensors_is_a_clear_error():
    from steadytune.training.models import model_load_error

    # what transformers raises for a hub repo with only pytorch_model.bin under use_safetensors=True
    exc = OSError("org/old does not appear to have a file named model.safetensors or model.safetensors.index.json "
                  "and thus cannot be loaded with `safetensors`. Please do not set `use_safetensors=True`.")
    message = str(model_load_error("org/old", exc))
    assert message.startswith("model 'org/old' on the Hugging Face Hub has no safetensors weights; steadytune "
                              "loads safetensors only")
    assert "do not set" not in message
