"""Tests for steadytune.diagnostics: grouping by name, norms against autograd, head stats, one sync."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from steadytune.testing.tiny import FAMILIES, tiny_config
from steadytune.training.classifier import load_model
from steadytune.training.diagnostics import (
    KINDS,
    GradNormIndex,
    Recorder,
    clipped_norm,
    find_pooler_activation,
    grad_norms,
    kind_of,
    layer_of,
    majority_fraction,
    optimizer_stats,
    pooler_saturation,
    softmax_entropy,
)
from steadytune.training.models import resolve_for_model
from steadytune.training.optim import build_optimizer
from steadytune.training.results import DIAGNOSTICS_FILE, RunResult

# --- helpers -----------------------------------------------------------------------


def _cfg(path, **over):
    return resolve_for_model(task="rte", recipe="devlin2019", model=str(path), overrides=over)


def _model(path, seed: int = 0):
    model, _ = load_model(_cfg(path), 2, head_seed=seed)
    return model.eval()  # no dropout: two forward passes give the same graph


def _batch(family: str, n: int = 6, length: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    batch = {
        "input_ids": torch.randint(5, 98, (n, length), generator=gen),
        "attention_mask": torch.ones(n, length, dtype=torch.long),
        "labels": torch.tensor([i % 2 for i in range(n)]),
    }
    if family != "roberta":
        batch["token_type_ids"] = torch.zeros(n, length, dtype=torch.long)
    return batch


def _hand_layer(name: str) -> str:
    """Layer by splitting the name, independently of the regexes under test."""
    parts = name.split(".")
    if parts[1] == "embeddings" or parts[2:3] == ["embedding_hidden_mapping_in"]:
        return "embeddings"
    if parts[1:3] == ["encoder", "layer"]:
        return f"layer.{parts[3]}"
    if parts[2:3] == ["albert_layer_groups"]:
        return "layer.shared"
    if "pooler" in parts[1]:
        return "pooler"
    return "classifier"


def _trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _run_cfg(tiny_bert, tiny_glue, **over):
    base = dict(data_dir=str(tiny_glue), max_steps=12, batch_size=8,
                evals_per_epoch=2, log_every=2, correct_bias=True)
    return _cfg(tiny_bert, **{**base, **over})


# --- grouping by name --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, layer, kind",
    [
        ("bert.embeddings.word_embeddings.weight", "embeddings", "embeddings"),
        ("bert.embeddings.LayerNorm.bias", "embeddings", "layernorm"),
        ("bert.encoder.layer.3.attention.self.query.weight", "layer.3", "query"),
        ("roberta.encoder.layer.11.attention.self.key.bias", "layer.11", "key"),
        ("bert.encoder.layer.0.attention.self.value.weight", "layer.0", "value"),
        ("bert.encoder.layer.0.attention.output.dense.weight", "layer.0", "attention_output"),
        ("bert.encoder.layer.0.attention.output.LayerNorm.weight", "layer.0", "layernorm"),
        ("bert.encoder.layer.0.intermediate.dense.weight", "layer.0", "ffn_in"),
        ("bert.encoder.layer.0.output.dense.bias", "layer.0", "ffn_out"),
        ("bert.pooler.dense.weight", "pooler", "pooler"),
        ("classifier.weight", "classifier", "classifier"),
        ("classifier.out_proj.bias", "classifier", "classifier"),
        ("roberta.classifier.dense.weight", "classifier", "classifier"),
        ("albert.encoder.embedding_hidden_mapping_in.weight", "embeddings", "embeddings"),
        ("albert.encoder.albert_layer_groups.0.albert_layers.0.attention.query.weight", "layer.shared", "query"),
        ("albert.encoder.albert_layer_groups.0.albert_layers.0.attention.dense.bias", "layer.shared", "attention_output"),
        ("albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight", "layer.shared", "ffn_in"),
        ("albert.encoder.albert_layer_groups.0.albert_layers.0.ffn_output.weight", "layer.shared", "ffn_out"),
        ("albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.weight", "layer.shared", "layernorm"),
        ("albert.pooler.weight", "pooler", "pooler"),
        ("electra.embeddings_project.weight", "embeddings", "embeddings"),
        ("deberta.encoder.layer.1.attention.self.query_proj.weight", "layer.1", "query"),
        ("deberta.encoder.layer.1.attention.self.pos_q_proj.weight", "layer.1", "other"),
        ("pooler.dense.weight", "pooler", "pooler"),
        ("distilbert.transformer.layer.2.attention.v_lin.weight", "layer.2", "value"),
        ("distilbert.transformer.layer.2.ffn.lin2.weight", "layer.2", "ffn_out"),
        ("distilbert.transformer.layer.2.sa_layer_norm.weight", "layer.2", "layernorm"),
    ],
)
def test_layer_and_kind_of_names(name, layer, kind):
    assert (layer_of(name), kind_of(name)) == (layer, kind)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_of_each_family_is_grouped(family):
    model = AutoModelForSequenceClassification.from_config(tiny_config(family))
    names = [n for n, _ in _trainable(model)]
    layers = {layer_of(n) for n in names}
    blocks = {"layer.shared"} if family == "albert" else {"layer.0", "layer.1"}
    head = {"pooler", "classifier"} if family in ("bert", "albert", "deberta-v2") else {"classifier"}
    assert layers == {"embeddings"} | blocks | head
    kinds = [kind_of(n) for n in names]
    assert "other" not in kinds and set(kinds) <= set(KINDS)
    for kind in ("query", "key", "value", "attention_output", "ffn_in", "ffn_out", "layernorm"):
        per_block = [n for n, k in zip(names, kinds) if k == kind and layer_of(n) in blocks]
        assert len(per_block) == 2 * len(blocks) * (2 if kind == "layernorm" else 1), (kind, per_block)
    index = GradNormIndex.from_model(model)
    assert len(index.names) == len(names) and index.index.shape == (4 * len(names),)
    assert index.slots[-1] == ("optim", "total_grad_norm")


# --- norms against autograd --------------------------------------------------------


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_group_norms_equal_direct_autograd(tiny_models, family):
    model = _model(tiny_models[family])
    named = _trainable(model)
    params = [p for _, p in named]
    loss = model(**_batch(family)).loss
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    loss.backward()
    index = GradNormIndex.from_model(model)
    got = dict(zip(index.slots, grad_norms(params, index).tolist()))

    by_layer: dict[str, list[torch.Tensor]] = {}
    by_layer_kind: dict[str, list[torch.Tensor]] = {}
    for (name, _), g in zip(named, grads):
        by_layer.setdefault(_hand_layer(name), []).append(g)
        by_layer_kind.setdefault(f"{_hand_layer(name)}/{kind_of(name)}", []).append(g)

    def norm(gs):
        return torch.linalg.vector_norm(torch.cat([g.double().flatten() for g in gs])).item()

    expected = {("grad_norm_layer", k): norm(v) for k, v in by_layer.items()}
    expected |= {("grad_norm_layer_kind", k): norm(v) for k, v in by_layer_kind.items()}
    expected[("optim", "total_grad_norm")] = norm(grads)
    for slot, value in expected.items():
        assert got[slot] == pytest.approx(value, rel=1e-5), slot
    assert {s for s in got if s[0] != "grad_norm_kind"} == set(expected)
    kinds = {s[1]: v for s, v in got.items() if s[0] == "grad_norm_kind"}
    for kind, value in kinds.items():  # each kind is the norm over its layer/kind cells
        cells = [v for s, v in got.items() if s[0] == "grad_norm_layer_kind" and s[1].endswith("/" + kind)]
        assert value == pytest.approx(math.sqrt(sum(c * c for c in cells)), rel=1e-9)
    expected_layers = ["embeddings", "layer.shared"] if family == "albert" else ["embeddings", "layer.0", "layer.1"]
    expected_layers += ["pooler", "classifier"] if family != "roberta" else ["classifier"]
    assert [s[1] for s in index.slots if s[0] == "grad_norm_layer"] == expected_layers


def test_missing_gradients_count_as_zero(tiny_bert):
    model = _model(tiny_bert)
    params = [p for _, p in _trainable(model)]
    model(**_batch("bert")).loss.backward()
    index = GradNormIndex.from_model(model)
    full = dict(zip(index.slots, grad_norms(params, index).tolist()))
    model.classifier.weight.grad = None
    model.classifier.bias.grad = None
    part = dict(zip(index.slots, grad_norms(params, index).tolist()))
    assert part["grad_norm_layer", "classifier"] == 0.0
    assert part["grad_norm_layer", "layer.0"] == full["grad_norm_layer", "layer.0"]
    with pytest.raises(ValueError):
        grad_norms(params[:-1], index)


@pytest.mark.parametrize("max_norm", [1e-3, 1.0, 1e3])
def test_total_norm_matches_clip_grad_norm(tiny_bert, max_norm):
    model = _model(tiny_bert)
    params = [p for _, p in _trainable(model)]
    model(**_batch("bert")).loss.backward()
    index = GradNormIndex.from_model(model)
    total = grad_norms(params, index)[-1:]
    after = clipped_norm(total, max_norm).item()
    returned = torch.nn.utils.clip_grad_norm_(params, max_norm)
    assert total.item() == pytest.approx(returned.item(), rel=1e-6)
    measured = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])).item()
    assert after == pytest.approx(measured, rel=1e-5)
    assert after <= max_norm
    assert clipped_norm(total, 0.0) is total  # no clipping


# --- optimiser scalars and head statistics -----------------------------------------


def test_bias_correction_factor_and_effective_lr():
    group = {"lr": 2e-5, "betas": (0.9, 0.999), "correct_bias": True}
    first, tenth = optimizer_stats(0, group), optimizer_stats(9, group)  # Adam steps t = 1, 10
    assert first["bias_correction_factor"] == pytest.approx(0.316, abs=5e-4)
    assert tenth["bias_correction_factor"] == pytest.approx(0.153, abs=5e-4)
    assert tenth["effective_lr"] == pytest.approx(2e-5 * tenth["bias_correction_factor"])
    roberta = optimizer_stats(0, {**group, "betas": (0.9, 0.98)})
    assert roberta["bias_correction_factor"] == pytest.approx(1.414, abs=5e-4)
    off = optimizer_stats(9, {**group, "correct_bias": False})
    assert off["bias_correction_factor"] == tenth["bias_correction_factor"] and off["effective_lr"] == 2e-5


def test_head_statistics_on_hand_built_values():
    act = torch.tensor([[0.995, -0.999, 0.5, 0.95], [-0.2, 0.0, 0.91, -0.989]])
    assert pooler_saturation(act).tolist() == pytest.approx([2 / 8, 5 / 8])  # |a| >= 0.99; >= 0.9
    uniform = torch.zeros(4, 3)
    assert softmax_entropy(uniform).item() == pytest.approx(math.log(3))
    certain = torch.tensor([[100.0, 0.0], [0.0, 100.0]])
    assert softmax_entropy(certain).item() == pytest.approx(0.0, abs=1e-6)
    half = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    assert softmax_entropy(half).item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    logits = torch.tensor([[2.0, 1.0], [3.0, 0.0], [0.0, 1.0], [5.0, -1.0]])  # predictions 0, 0, 1, 0
    assert majority_fraction(logits).item() == pytest.approx(0.75)
    assert majority_fraction(torch.tensor([[0.0, 1.0, 0.0]] * 5)).item() == 1.0


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_recorded_pooler_saturation_matches_the_pooler_output(tiny_models, family):
    model = _model(tiny_models[family])
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-6, correct_bias=True)
    rec = Recorder(model, optimizer, every=1)
    model.train()
    for m in model.modules():  # train mode (so the tap records) without dropout
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    batch = _batch(family)
    out = model(**batch)
    out.loss.backward()
    rec.record(0, out.logits)
    with torch.no_grad():
        base = model.base_model(**{k: v for k, v in batch.items() if k != "labels"})
        if family == "roberta":
            pooled = torch.tanh(model.classifier.dense(base.last_hidden_state[:, 0]))
        else:
            pooled = base.pooler_output
    table = rec.frame().set_index("name").value
    for t in (0.99, 0.9):
        assert table[f"pooler_saturation_{t:g}"] == pytest.approx((pooled.abs() >= t).float().mean().item())
    assert table["entropy"] == pytest.approx(softmax_entropy(out.logits).item())
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())  # hook removed


def test_no_tanh_pooler_means_no_saturation_rows_and_regression_has_no_class_stats():
    electra = AutoModelForSequenceClassification.from_config(tiny_config("electra"))
    assert find_pooler_activation(electra) is None  # ELECTRA's head uses GELU
    config = tiny_config("bert")
    config.num_labels = 1
    reg = AutoModelForSequenceClassification.from_config(config)
    optimizer = build_optimizer(reg, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-6, correct_bias=True)
    rec = Recorder(reg, optimizer, every=1)
    batch = {**_batch("bert"), "labels": torch.rand(6)}
    out = reg(**batch)
    out.loss.backward()
    rec.record(0, out.logits)
    names = set(rec.frame().name)
    assert "pooler_saturation_0.99" in names and not {"entropy", "majority_fraction"} & names


# --- the recorder: purity, one sync, integration -----------------------------------


def _recorder_step(tiny_bert):
    model = _model(tiny_bert).train()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-6, correct_bias=True)
    rec = Recorder(model, optimizer, every=1, max_grad_norm=1.0)
    out = model(**_batch("bert"))
    out.loss.backward()
    return model, rec, out


def test_recorder_leaves_model_grads_and_rng_unchanged(tiny_bert):
    model, rec, out = _recorder_step(tiny_bert)
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    rec.record(0, out.logits)
    rec.frame()
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in model.state_dict().items():
        assert v.dtype == params[k].dtype and torch.equal(v, params[k]), k
        assert v.numpy().tobytes() == params[k].numpy().tobytes()
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n


def test_one_host_transfer_per_diagnostic_step(tiny_bert, monkeypatch):
    model, rec, out = _recorder_step(tiny_bert)
    calls: list[str] = []
    for method in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _name=method, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    rec.record(0, out.logits)
    rec.record(1, out.logits)
    monkeypatch.undo()
    assert calls == ["tolist", "tolist"]
    assert len(rec.rows) > 2 * 40


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_one_cuda_sync_per_diagnostic_step(tiny_bert):
    import warnings

    model, _ = load_model(_cfg(tiny_bert), 2, head_seed=0)
    model.cuda().train()
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-6, correct_bias=True)
    rec = Recorder(model, optimizer, every=1, max_grad_norm=1.0)
    out = model(**{k: v.cuda() for k, v in _batch("bert").items()})
    out.loss.backward()
    rec.record(0, out.logits)  # first call copies the index to the device
    out = model(**{k: v.cuda() for k, v in _batch("bert", seed=1).items()})
    out.loss.backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rec.record(1, out.logits)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len([w for w in caught if "synchroniz" in str(w.message)]) == 1


def test_disabled_recorder_does_nothing(tiny_bert):
    model = _model(tiny_bert)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-6, correct_bias=True)
    rec = Recorder(model, optimizer, every=0)
    assert not any(m._forward_hooks for m in model.modules())
    rec.record(0, None)
    assert rec.frame().empty and list(rec.frame().columns) == ["step", "group", "name", "value"]


def test_diagnostics_do_not_change_training(tiny_bert, tiny_glue, tmp_path):
    from steadytune.training.loop import train_and_evaluate

    runs = {every: train_and_evaluate(_run_cfg(tiny_bert, tiny_glue, diag_every=every), tmp_path / str(every))
            for every in (0, 1, 5)}
    for every in (1, 5):
        pd.testing.assert_frame_equal(runs[0].curves, runs[every].curves, check_exact=True)
        assert runs[0].metrics == runs[every].metrics
        assert (tmp_path / "0" / "curves.csv").read_bytes() == (tmp_path / str(every) / "curves.csv").read_bytes()
    assert runs[0].diagnostics.empty and not (tmp_path / "0" / DIAGNOSTICS_FILE).exists()
    assert sorted(runs[1].diagnostics.step.unique()) == list(range(12))
    assert sorted(runs[5].diagnostics.step.unique()) == [0, 5, 10]


def test_run_diagnostics_content_and_round_trip(tiny_bert, tiny_glue, tmp_path):
    from steadytune.training.loop import train_and_evaluate

    res = train_and_evaluate(_run_cfg(tiny_bert, tiny_glue, diag_every=1), tmp_path)
    diag = res.diagnostics
    assert list(diag.columns) == ["step", "group", "name", "value"]
    assert set(diag.group) == {"grad_norm_layer", "grad_norm_kind", "grad_norm_layer_kind", "optim", "head"}
    per_step = diag.groupby("step").size()
    assert per_step.nunique() == 1  # the same rows at every step
    optim = diag[diag.group == "optim"].pivot(index="step", columns="name", values="value")
    assert optim.loc[0, "bias_correction_factor"] == pytest.approx(0.316, abs=5e-4)
    assert optim.loc[9, "bias_correction_factor"] == pytest.approx(0.153, abs=5e-4)
    assert (optim.total_grad_norm_clipped <= 1.0 + 1e-9).all()
    assert (optim.total_grad_norm_clipped <= optim.total_grad_norm).all()
    assert optim.effective_lr.to_numpy() == pytest.approx((optim.lr * optim.bias_correction_factor).to_numpy())
    # the lr recorded before update `step` is the one the curves log after it (step + 1)
    curve_lr = res.curves[(res.curves.split == "train") & (res.curves.name == "lr")].set_index("step").value
    for step, lr in curve_lr.items():
        assert optim.loc[step - 1, "lr"] == lr
    assert optim.loc[0, "lr"] == 0.0  # the first update runs at lr 0 (protocol §3.4)

    assert "diagnostics" not in res.to_dict()
    loaded = RunResult.load(tmp_path)
    pd.testing.assert_frame_equal(loaded.diagnostics, diag, check_dtype=False, rtol=1e-12)
    assert loaded.to_dict() == res.to_dict()
    empty = RunResult.from_dict(res.to_dict(), curves=res.curves)
    empty.save(tmp_path)  # an empty table leaves no stale file behind
    assert not (tmp_path / DIAGNOSTICS_FILE).exists() and RunResult.load(tmp_path).diagnostics.empty
