import pytest
import torch
from torch import nn

from steadytune.config import resolve_config
from steadytune.mixout import MixLinear, apply_mixout
from steadytune.models import ModelError, load_model, model_type_of


def _cfg(path, **over):
    return resolve_config(task="rte", recipe="devlin2019", model=str(path), overrides=over)


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
