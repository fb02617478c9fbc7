"""Tests for steadytune.optim: AdamW against independent references, schedule, groups."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from steadytune.training.optim import (
    AdamW,
    bias_correction_factor,
    build_optimizer,
    linear_warmup_decay,
    lr_multiplier,
    param_groups,
)

# --- a small fixed problem ---------------------------------------------------------

SHAPES = [(4, 3), (4,), (2, 4), (2,)]  # a tiny MLP: W1, b1, W2, b2


def _init_params(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 0.5, size=s) for s in SHAPES]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, generator=gen, dtype=torch.float64), torch.randn(8, 2, generator=gen, dtype=torch.float64)


def _loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2 = params
    out = torch.tanh(x.to(w1.dtype) @ w1.T + b1) @ w2.T + b2
    return ((out - y.to(w1.dtype)) ** 2).mean()


def _grads_np(params: list[np.ndarray]) -> list[np.ndarray]:
    """Gradients at a numpy point (fp64); the reference optimiser's only use of torch."""
    x, y = _data()
    ts = [torch.tensor(p, requires_grad=True) for p in params]
    return [g.numpy() for g in torch.autograd.grad(_loss(ts, x, y), ts)]


# Two groups that differ in every hyperparameter, so per-group handling is exercised.
def _group_hparams(correct_bias: bool, weight_decay: float) -> list[dict]:
    return [
        dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay, correct_bias=correct_bias),
        dict(lr=3e-3, betas=(0.8, 0.98), eps=1e-8, weight_decay=2 * weight_decay, correct_bias=not correct_bias),
    ]


def _reference_adamw(params: list[np.ndarray], hparams: list[dict], steps: int) -> list[list[np.ndarray]]:
    """transformers 2.5.1 AdamW.step written out in numpy fp64, straight from its formulas."""
    params = [p.copy() for p in params]
    group_of = [0, 0, 1, 1]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    trajectory = []
    for t in range(1, steps + 1):
        grads = _grads_np(params)
        for i, g in enumerate(grads):
            h = hparams[group_of[i]]
            b1, b2 = h["betas"]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            denom = np.sqrt(v[i]) + h["eps"]
            step_size = h["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t) if h["correct_bias"] else h["lr"]
            params[i] = params[i] - step_size * m[i] / denom
            if h["weight_decay"] > 0:
                params[i] = params[i] - h["lr"] * h["weight_decay"] * params[i]
        trajectory.append([p.copy() for p in params])
    return trajectory


def _run_ours(
    params: list[np.ndarray], hparams: list[dict], steps: int, dtype: torch.dtype, foreach: bool | None = None
) -> list[list[np.ndarray]]:
    ts = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in params]
    opt = AdamW([dict(params=ts[:2], **hparams[0]), dict(params=ts[2:], **hparams[1])], foreach=foreach)
    x, y = _data()
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        _loss(ts, x, y).backward()
        opt.step()
        trajectory.append([t.detach().to(torch.float64).numpy().copy() for t in ts])
    return trajectory


# --- 1. independent reference ------------------------------------------------------


@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize(("dtype", "rtol", "atol"), [(torch.float64, 1e-12, 1e-14), (torch.float32, 1e-5, 1e-6)])
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_numpy_reference(correct_bias, weight_decay, dtype, rtol, atol, foreach):
    hparams = _group_hparams(correct_bias, weight_decay)
    start = _init_params()
    expected = _reference_adamw(start, hparams, steps=20)
    got = _run_ours(start, hparams, steps=20, dtype=dtype, foreach=foreach)
    for step_expected, step_got in zip(expected, got):
        for e, g in zip(step_expected, step_got):
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    # The problem is not trivial: parameters really moved.
    assert max(np.abs(e - s).max() for e, s in zip(expected[-1], start)) > 0.05


# --- 2. hand-derived values --------------------------------------------------------

LR, B1, B2, EPS, G = 0.1, 0.9, 0.999, 1e-6, 0.5


def _one_scalar_step(correct_bias: bool, weight_decay: float = 0.0) -> float:
    p = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = AdamW([p], lr=LR, betas=(B1, B2), eps=EPS, weight_decay=weight_decay, correct_bias=correct_bias)
    p.grad = torch.tensor([G], dtype=torch.float64)
    opt.step()
    return float(p.detach())


def test_first_step_by_hand_with_bias_correction():
    move = LR * math.sqrt(1 - B2) / (1 - B1) * (1 - B1) * G / (math.sqrt(1 - B2) * abs(G) + EPS)
    assert _one_scalar_step(correct_bias=True) == pytest.approx(1.0 - move, rel=1e-15, abs=0)
    assert move == pytest.approx(LR, rel=1e-4)  # roughly lr * sign(g), as Adam promises


def test_first_step_by_hand_without_bias_correction():
    move = LR * (1 - B1) * G / (math.sqrt(1 - B2) * abs(G) + EPS)
    assert _one_scalar_step(correct_bias=False) == pytest.approx(1.0 - move, rel=1e-15, abs=0)
    # Without correction the first step is ~sqrt(1-b2)/(1-b1) ~ 3.16 times larger.
    assert move == pytest.approx(LR * (1 - B1) / math.sqrt(1 - B2), rel=1e-4)


def test_weight_decay_after_the_step_with_group_lr():
    wd = 0.5
    move = LR * math.sqrt(1 - B2) / (1 - B1) * (1 - B1) * G / (math.sqrt(1 - B2) * abs(G) + EPS)
    after_step = 1.0 - move
    expected = after_step - LR * wd * after_step
    got = _one_scalar_step(correct_bias=True, weight_decay=wd)
    assert got == pytest.approx(expected, rel=1e-15, abs=0)
    # The alternatives differ measurably, so the check above can tell them apart.
    decay_before = 1.0 - LR * wd * 1.0 - move  # torch.optim.AdamW's order
    step_size = LR * math.sqrt(1 - B2) / (1 - B1)
    decay_with_step_size = after_step - step_size * wd * after_step
    assert abs(got - decay_before) > 1e-4
    assert abs(got - decay_with_step_size) > 1e-3


# --- 3. cross-check against torch.optim.AdamW --------------------------------------


def _compare_with_torch(eps: float, grad_scale: float, steps: int = 10) -> float:
    """Max relative difference in the parameters after `steps` updates."""
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    grads = [grad_scale * torch.randn(5, 4, generator=gen, dtype=torch.float64) for _ in range(steps)]
    ours, theirs = init.clone().requires_grad_(), init.clone().requires_grad_()
    opt_ours = AdamW([ours], lr=1e-3, eps=eps, weight_decay=0.0, correct_bias=True)
    opt_theirs = torch.optim.AdamW([theirs], lr=1e-3, eps=eps, weight_decay=0.0, foreach=False)
    for g in grads:
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    ours, theirs = ours.detach(), theirs.detach()
    return float(((ours - theirs).abs() / (theirs - init).abs()).max())  # relative to the move


def test_agrees_with_torch_adamw_when_eps_is_tiny():
    assert _compare_with_torch(eps=1e-12, grad_scale=1.0) < 1e-5


def test_differs_from_torch_adamw_for_small_gradients():
    # eps enters at sqrt(v) here but at sqrt(v)/sqrt(1-b2^t) in torch: with gradients of
    # order eps the two updates differ by tens of percent.
    assert _compare_with_torch(eps=1e-6, grad_scale=1e-6) > 0.1


# --- 4. bias-correction table (protocol §3.4) --------------------------------------


@pytest.mark.parametrize(
    ("t", "betas", "expected"),
    [
        (1, (0.9, 0.999), 0.316), (10, (0.9, 0.999), 0.153), (46, (0.9, 0.999), 0.214),
        (100, (0.9, 0.999), 0.309), (468, (0.9, 0.999), 0.611), (1000, (0.9, 0.999), 0.795),
        (3120, (0.9, 0.999), 0.978), (1, (0.9, 0.98), 1.414), (10, (0.9, 0.98), 0.657),
        (46, (0.9, 0.98), 0.784), (100, (0.9, 0.98), 0.931), (468, (0.9, 0.98), 1.0),
    ],
)
def test_bias_correction_table(t, betas, expected):
    assert round(bias_correction_factor(t, *betas), 3) == expected


def test_bias_correction_minimum_and_validation():
    values = [bias_correction_factor(t, 0.9, 0.999) for t in range(1, 101)]
    assert 1 + int(np.argmin(values)) == 12
    assert round(min(values), 3) == 0.152
    with pytest.raises(ValueError, match="step"):
        bias_correction_factor(0, 0.9, 0.999)


# --- 5. schedule -------------------------------------------------------------------


def test_lr_multiplier_values():
    got = [lr_multiplier(s, warmup_steps=10, total_steps=100) for s in (0, 5, 10, 55, 100, 150)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0], abs=1e-15)
    assert lr_multiplier(0, warmup_steps=0, total_steps=10) == 1.0  # no warmup


def test_first_update_has_lr_zero_but_advances_state():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = AdamW(param_groups(model, lr=1e-3, weight_decay=0.01), lr=1e-3)
    sched = linear_warmup_decay(opt, warmup_steps=10, total_steps=100)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(4, 3)).pow(2).sum().backward()
    opt.step()
    sched.step()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
        assert opt.state[p]["step"] == 1
        assert opt.state[p]["exp_avg"].abs().sum() > 0 and opt.state[p]["exp_avg_sq"].abs().sum() > 0
    opt.step()  # now lr = 1e-4
    assert not torch.equal(model.weight, before[0])


def test_scheduler_follows_multiplier_per_group():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = AdamW([dict(params=[a], lr=1e-3), dict(params=[b], lr=5e-4)])
    sched = linear_warmup_decay(opt, warmup_steps=int(0.1 * 30), total_steps=30)
    for s in range(35):
        for group, base in zip(opt.param_groups, (1e-3, 5e-4)):
            assert group["lr"] == pytest.approx(base * lr_multiplier(s, 3, 30), abs=1e-18)
        opt.step()
        sched.step()
    with pytest.raises(ValueError):
        linear_warmup_decay(opt, warmup_steps=-1, total_steps=10)


# --- 6. param groups on tiny BERT / RoBERTa / ALBERT --------------------------------

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)


def _tiny(family: str) -> nn.Module:
    torch.manual_seed(0)
    if family == "bert":
        return transformers.BertForSequenceClassification(transformers.BertConfig(**TINY))
    if family == "roberta":
        config = transformers.RobertaConfig(**TINY, max_position_embeddings=130)
        return transformers.RobertaForSequenceClassification(config)
    return transformers.AlbertForSequenceClassification(transformers.AlbertConfig(**TINY, embedding_size=16))


def _group_of(groups: list[dict]) -> dict[int, dict]:
    """id(param) -> its group; fails if a parameter is in two groups."""
    owner: dict[int, dict] = {}
    for g in groups:
        for p in g["params"]:
            assert id(p) not in owner, "parameter in two groups"
            owner[id(p)] = g
    return owner


def _is_norm_or_bias(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
@pytest.mark.parametrize("decay", [1.0, 0.9])
def test_every_param_once_and_no_decay_on_bias_and_norm(family, decay):
    model = _tiny(family)
    groups = param_groups(model, lr=1e-3, weight_decay=0.01, layer_lr_decay=decay)
    owner = _group_of(groups)
    named = dict(model.named_parameters())
    assert set(owner) == {id(p) for p in named.values()}
    for name, p in named.items():
        assert owner[id(p)]["weight_decay"] == (0.0 if _is_norm_or_bias(name) else 0.01), name
    assert len({g["name"] for g in groups}) == len(groups)
    if decay == 1.0:
        assert [g["name"] for g in groups] == ["decay", "no_decay"]
        assert all(g["lr"] == 1e-3 for g in groups)


def _expected_depth(name: str, n_blocks: int) -> int:
    if "embeddings" in name or "embedding_hidden_mapping_in" in name:
        return 0
    for i in range(n_blocks):
        if f"layer.{i}." in name or f"albert_layer_groups.{i}." in name:
            return i + 1
    assert name.startswith(("classifier", "bert.pooler", "albert.pooler")), name
    return n_blocks + 1


@pytest.mark.parametrize(("family", "n_blocks"), [("bert", 2), ("roberta", 2), ("albert", 1)])
def test_layerwise_lr_decay(family, n_blocks):
    lr, decay = 1e-3, 0.9
    model = _tiny(family)
    owner = _group_of(param_groups(model, lr=lr, weight_decay=0.01, layer_lr_decay=decay))
    for name, p in model.named_parameters():
        expected = lr * decay ** (n_blocks + 1 - _expected_depth(name, n_blocks))
        assert owner[id(p)]["lr"] == pytest.approx(expected, rel=1e-12), name
    if family == "bert":  # the brief's table, spelled out
        lrs = {n: owner[id(p)]["lr"] for n, p in model.named_parameters()}
        assert lrs["bert.embeddings.word_embeddings.weight"] == pytest.approx(lr * 0.9**3)
        assert lrs["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(lr * 0.9**2)
        assert lrs["bert.encoder.layer.1.output.dense.bias"] == pytest.approx(lr * 0.9)
        assert lrs["bert.pooler.dense.weight"] == pytest.approx(lr)
        assert lrs["classifier.weight"] == pytest.approx(lr)


def test_frozen_params_left_out_and_norm_detected_by_type():
    class RMSNormLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

    class FinalNorm(nn.LayerNorm):  # a LayerNorm by type, not by name
        pass

    model = nn.Sequential(nn.Linear(3, 3), FinalNorm(3), RMSNormLike(), nn.Linear(3, 2))
    model[3].weight.requires_grad_(False)
    groups = param_groups(model, lr=1e-3, weight_decay=0.1)
    owner = _group_of(groups)
    assert id(model[3].weight) not in owner
    assert owner[id(model[0].weight)]["weight_decay"] == 0.1
    for p in (model[0].bias, model[1].weight, model[1].bias, model[2].scale, model[3].bias):
        assert owner[id(p)]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="layer_lr_decay"):
        param_groups(model, lr=1e-3, weight_decay=0.1, layer_lr_decay=0.0)


def test_build_optimizer_carries_groups_and_hparams():
    model = _tiny("bert")
    opt = build_optimizer(
        model, lr=2e-5, weight_decay=0.01, betas=(0.9, 0.98), eps=1e-6, correct_bias=False, layer_lr_decay=0.9
    )
    assert isinstance(opt, AdamW)
    assert {g["name"] for g in opt.param_groups} >= {"embeddings/decay", "layer_0/no_decay", "head/decay"}
    assert all(g["betas"] == (0.9, 0.98) and g["correct_bias"] is False for g in opt.param_groups)


# --- 7. foreach vs loop, state dict, errors ----------------------------------------


def _train(opt_kwargs: dict, steps: int, skip_every: int = 0) -> list[torch.Tensor]:
    """Tiny-BERT-free run on the fixed MLP in fp32; optionally drop one grad on some steps."""
    ts = [torch.tensor(p, dtype=torch.float32, requires_grad=True) for p in _init_params()]
    hp = _group_hparams(correct_bias=True, weight_decay=0.01)
    opt = AdamW([dict(params=ts[:2], **hp[0]), dict(params=ts[2:], **hp[1])], **opt_kwargs)
    x, y = _data()
    for s in range(steps):
        opt.zero_grad()
        _loss(ts, x, y).backward()
        if skip_every and s % skip_every == 0:
            ts[1].grad = None  # per-param step counts now differ
        opt.step()
    return [t.detach() for t in ts] + [opt.state[ts[1]]["step"]]


@pytest.mark.parametrize("skip_every", [0, 3])
def test_foreach_matches_loop(skip_every):
    loop = _train(dict(foreach=False), steps=20, skip_every=skip_every)
    fast = _train(dict(foreach=True, fused=False), steps=20, skip_every=skip_every)
    default = _train({}, steps=20, skip_every=skip_every)  # fused kernel where step counts agree
    assert loop[-1] == fast[-1] == default[-1] == (20 - (7 if skip_every else 0))
    for a, b, c in zip(loop[:-1], fast[:-1], default[:-1]):
        torch.testing.assert_close(b, a, rtol=1e-7, atol=0)
        # the fused kernel rescales lr and eps: equal up to fp32 rounding, not bit for bit
        torch.testing.assert_close(c, a, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_path_matches_float64_reference(monkeypatch, correct_bias, weight_decay):
    import steadytune.training.optim as optim

    calls = []
    real = optim._update_fused
    monkeypatch.setattr(optim, "_update_fused", lambda *a: (calls.append(1), real(*a)))
    x, y = _data()
    ts = [torch.tensor(p, dtype=torch.float32, requires_grad=True) for p in _init_params()]
    ref = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in _init_params()]
    kw = dict(lr=3e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=weight_decay, correct_bias=correct_bias)
    fused, exact = AdamW(ts, **kw), AdamW(ref, foreach=False, **kw)
    for _ in range(15):
        for opt, ps in ((fused, ts), (exact, ref)):
            opt.zero_grad()
            _loss(ps, x.to(ps[0].dtype), y.to(ps[0].dtype)).backward()
            opt.step()
    assert len(calls) == 15
    for a, b in zip(ts, ref):
        torch.testing.assert_close(a.detach().double(), b.detach(), rtol=1e-5, atol=1e-7)


def test_state_dict_round_trip_continues_identically():
    def make(seed_params):
        ps = [torch.tensor(p, dtype=torch.float32, requires_grad=True) for p in seed_params]
        hp = _group_hparams(correct_bias=True, weight_decay=0.01)
        opt = AdamW([dict(params=ps[:2], **hp[0]), dict(params=ps[2:], **hp[1])])
        return ps, opt, linear_warmup_decay(opt, warmup_steps=3, total_steps=30)

    def run(ps, opt, sched, steps):
        x, y = _data()
        for _ in range(steps):
            opt.zero_grad()
            _loss(ps, x, y).backward()
            opt.step()
            sched.step()

    ps, opt, sched = make(_init_params())
    run(ps, opt, sched, 10)
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    midpoint = [p.detach().numpy().copy() for p in ps]
    run(ps, opt, sched, 10)

    ps2, opt2, sched2 = make(midpoint)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert opt2.state[ps2[0]]["step"] == 10 and isinstance(opt2.state[ps2[0]]["step"], int)
    run(ps2, opt2, sched2, 10)
    for a, b in zip(ps, ps2):
        assert torch.equal(a, b)
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_closure_returns_loss():
    p = nn.Parameter(torch.ones(2))
    opt = AdamW([p], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert float(opt.step(closure).detach()) == 2.0
    assert (p < 1).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lr=-1.0), "lr"), (dict(eps=0.0), "eps"), (dict(betas=(1.0, 0.999)), "betas"),
        (dict(betas=(0.9, -0.1)), "betas"), (dict(weight_decay=-0.1), "weight_decay"),
    ],
)
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdamW([nn.Parameter(torch.ones(1))], **kwargs)
    with pytest.raises(ValueError, match=match):  # per-group values are checked too
        AdamW([dict(params=[nn.Parameter(torch.ones(1))], **kwargs)])


def test_sparse_gradients_rejected():
    emb = nn.Embedding(5, 3, sparse=True)
    opt = AdamW(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_group_without_grads_is_skipped():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    opt = AdamW([dict(params=[a]), dict(params=[b])], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert b not in opt.state and torch.equal(b, torch.ones(2))
    assert copy.deepcopy(opt.state_dict())["state"][0]["step"] == 1
