"""The paper's optimiser (HF 2.5.1 AdamW), its linear warmup schedule, and param groups.

Mosbach et al. (2021) fine-tune with transformers 2.5.1 ``AdamW``. It differs from
``torch.optim.AdamW`` in two ways that matter for the paper's bias-correction analysis
(protocol §3.4): eps is added to the *uncorrected* sqrt(v), and decoupled weight decay
is applied *after* the Adam step. The update of a parameter at step t is::

    m = b1*m + (1-b1)*g;   v = b2*v + (1-b2)*g*g          # moments stay uncorrected
    p -= lr * c_t * m / (sqrt(v) + eps)                    # c_t = sqrt(1-b2^t)/(1-b1^t) or 1
    p -= lr * weight_decay * p                             # after the step, group lr
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "AdamW", "bias_correction_factor", "block_index", "build_optimizer", "linear_warmup_decay",
    "lr_multiplier", "param_groups",
]


def _check_hyperparams(lr: float, betas: Iterable[float], eps: float, weight_decay: float) -> None:
    betas = tuple(betas)
    if lr < 0.0:
        raise ValueError(f"lr must be >= 0, got {lr}")
    if eps <= 0.0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"betas must be two values in [0, 1), got {betas}")
    if weight_decay < 0.0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")


class AdamW(torch.optim.Optimizer):
    """AdamW with the exact semantics of transformers 2.5.1 (see the module docstring).

    Args:
        params: Parameters or param-group dicts; each hyperparameter may be set per group.
        lr: Learning rate; the schedule scales it and weight decay uses it too.
        betas: (b1, b2) moment decay rates, each in [0, 1).
        eps: Added to the uncorrected sqrt(v); must be > 0.
        weight_decay: Decoupled weight decay, applied after the Adam step.
        correct_bias: Scale the step by ``bias_correction_factor`` (the paper's ablation).
        foreach: True: ``torch._foreach_*`` kernels per group; False: a per-tensor loop;
            None: foreach when a group's params share one device and are dense.
        fused: True/None: torch's fused Adam kernel with rescaled lr and eps (one pass over
            memory, about 3x faster than foreach on CPU; equal to the reference up to fp32
            rounding) when a group's params share one device, are dense floating tensors
            and share one step count; False: never. Ignored when ``foreach`` is False.

    Raises:
        ValueError: lr < 0, eps <= 0, betas outside [0, 1), or weight_decay < 0.
        RuntimeError: from ``step`` if a gradient is sparse.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        _check_hyperparams(lr, betas, eps, weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        correct_bias=correct_bias, foreach=foreach, fused=fused)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group after checking its hyperparameters (defaults fill the gaps)."""
        merged = {**self.defaults, **param_group}
        _check_hyperparams(merged["lr"], merged["betas"], merged["eps"], merged["weight_decay"])
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Update every parameter that has a gradient; return the closure's loss, if any.

        All per-step scalars are Python floats, so no host sync happens here.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # Check every group first, so an error leaves no group half-updated.
        if any(p.grad is not None and p.grad.is_sparse for g in self.param_groups for p in g["params"]):
            raise RuntimeError("AdamW does not support sparse gradients; use torch.optim.SparseAdam")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            step_sizes = [self._advance(p, group) for p in params]
            states = [self.state[p] for p in params]
            foreach = group["foreach"]
            uniform = len({p.device for p in params}) == 1 and all(p.layout == torch.strided for p in params)
            if foreach is None:
                foreach = uniform
            if foreach and group.get("fused") is not False and _fusable(params, states) and uniform:
                _update_fused(params, states, group)
                continue
            update = _update_foreach if foreach else _update_loop
            update(params, states, group, step_sizes)
        return loss

    def _advance(self, p: torch.Tensor, group: dict[str, Any]) -> float:
        """Create state on first use, count the step, return this param's step size."""
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        # Per-param count, as in HF: a param that skipped steps (no grad) lags behind.
        state["step"] += 1
        if not group["correct_bias"]:
            return group["lr"]
        beta1, beta2 = group["betas"]
        t = state["step"]
        # Same float order as HF 2.5.1 so trajectories match bit for bit.
        return group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)


def _update_loop(
    params: list[torch.Tensor], states: list[dict[str, Any]], group: dict[str, Any], step_sizes: list[float]
) -> None:
    beta1, beta2 = group["betas"]
    decay = group["lr"] * group["weight_decay"]
    for p, state, step_size in zip(params, states, step_sizes):
        grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-step_size)
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-decay)


def _update_foreach(
    params: list[torch.Tensor], states: list[dict[str, Any]], group: dict[str, Any], step_sizes: list[float]
) -> None:
    beta1, beta2 = group["betas"]
    grads = [p.grad for p in params]
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denoms, group["eps"])
    # A list of step sizes, since per-param step counts may differ.
    torch._foreach_addcdiv_(params, exp_avgs, denoms, [-s for s in step_sizes])
    if group["weight_decay"] > 0.0:
        torch._foreach_add_(params, params, alpha=-group["lr"] * group["weight_decay"])


def _fusable(params: list[torch.Tensor], states: list[dict[str, Any]]) -> bool:
    return (len({s["step"] for s in states}) == 1
            and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params))


def _update_fused(params: list[torch.Tensor], states: list[dict[str, Any]], group: dict[str, Any]) -> None:
    """The HF 2.5.1 update through torch's fused Adam kernel.

    The kernel computes ``p -= (lr_k / bc1) * m / (sqrt(v) / sqrt(bc2) + eps_k)`` with
    bc_i = 1 - beta_i**t. Ours is ``p -= c * m / (sqrt(v) + eps)`` with c the step size
    (lr * sqrt(bc2) / bc1, or lr without bias correction). Both agree when
    ``eps_k = eps / sqrt(bc2)`` and ``lr_k = c * bc1 / sqrt(bc2)``. Weight decay is then
    applied after the step, as HF does (the kernel's own decay comes before it).
    """
    beta1, beta2 = group["betas"]
    t = states[0]["step"]
    bc1, root_bc2 = 1.0 - beta1**t, math.sqrt(1.0 - beta2**t)
    size = group["lr"] * root_bc2 / bc1 if group["correct_bias"] else group["lr"]
    step = torch.tensor(float(t), dtype=torch.float32, device=params[0].device)
    torch._fused_adam_(
        params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
        [], [step] * len(params), lr=size * bc1 / root_bc2, beta1=beta1, beta2=beta2, weight_decay=0.0,
        eps=group["eps"] / root_bc2, amsgrad=False, maximize=False,
    )
    if group["weight_decay"] > 0.0:
        torch._foreach_mul_(params, 1.0 - group["lr"] * group["weight_decay"])


def bias_correction_factor(step: int, beta1: float, beta2: float) -> float:
    """The step-size factor c_t = sqrt(1 - beta2**t) / (1 - beta1**t) (paper Eq. 2, Fig. 6).

    Raises:
        ValueError: if step < 1.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    return math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)


def lr_multiplier(step: int, warmup_steps: int, total_steps: int) -> float:
    """The factor on the base lr after ``step`` scheduler steps (HF linear warmup + decay).

    Rises linearly from 0 at step 0 to 1 at ``warmup_steps``, then falls linearly to 0 at
    ``total_steps`` and stays there.
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def linear_warmup_decay(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """HF ``get_linear_schedule_with_warmup`` for every group of ``optimizer``.

    The training loop calls ``optimizer.step()`` and then ``scheduler.step()``, so the
    first update runs at multiplier(0) = 0: it leaves the weights unchanged but still
    advances the Adam moments and step counters, as in the paper's code (protocol §3.4).

    Args:
        optimizer: Its groups' current lrs become the base lrs.
        warmup_steps: Usually ``int(warmup_ratio * total_steps)``.
        total_steps: Number of optimiser updates in the run.

    Returns:
        A LambdaLR (its state_dict round-trips).

    Raises:
        ValueError: a negative step count.
    """
    if warmup_steps < 0 or total_steps < 0:
        raise ValueError(f"step counts must be >= 0, got warmup={warmup_steps}, total={total_steps}")
    # partial, not a lambda: LambdaLR can then save and load it.
    return LambdaLR(optimizer, partial(lr_multiplier, warmup_steps=warmup_steps, total_steps=total_steps))


_BLOCK = re.compile(r"(?:^|\.)(?:layer|albert_layer_groups)\.(\d+)\.")


def block_index(name: str) -> int | None:
    """The transformer block a parameter belongs to, by name.

    Args:
        name: a ``named_parameters`` name, e.g. ``bert.encoder.layer.3.attention.self.query.weight``.

    Returns:
        -1 for the embeddings (ALBERT's embedding projection included), i for block i
        (``.layer.<i>.``, ALBERT's shared ``albert_layer_groups.<i>.``), None for
        everything else (pooler, classifier).
    """
    # ALBERT's embedding_hidden_mapping_in projects the embeddings: keep it with them.
    if "embeddings" in name or "embedding_hidden_mapping_in" in name:
        return -1
    match = _BLOCK.search(name)
    return int(match.group(1)) if match else None


def _no_decay(name: str, module: nn.Module) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    kind = type(module).__name__
    is_norm = isinstance(module, nn.LayerNorm) or "LayerNorm" in kind or "RMSNorm" in kind
    by_name = "LayerNorm.weight" in name or "layer_norm.weight" in name
    return leaf == "bias" or leaf.endswith("_bias") or is_norm or by_name


def _depth_and_label(block: int | None, n_blocks: int, layered: bool) -> tuple[int, str]:
    """Depth (0 embeddings, i+1 block i, L+1 head; all 0 unless layered) and group-name prefix."""
    if not layered:
        return 0, ""
    if block is None:
        return n_blocks + 1, "head/"
    return block + 1, "embeddings/" if block == -1 else f"layer_{block}/"


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, layer_lr_decay: float = 1.0
) -> list[dict[str, Any]]:
    """Optimiser param groups: no weight decay on biases and norms, optional layer-wise lr decay.

    Every trainable parameter is in exactly one group. With L transformer blocks found
    by name (``.layer.<i>.``; ALBERT's shared ``albert_layer_groups.<i>.``), depth is 0
    for embeddings, i+1 for block i, and L+1 for everything else (pooler, classifier);
    a group's lr is ``lr * layer_lr_decay ** (L + 1 - depth)`` (Zhang et al. 2021).

    Args:
        model: The model; only parameters with ``requires_grad`` are included.
        lr: Base lr, used as is by the head (and by everything when layer_lr_decay == 1).
        weight_decay: For all parameters except biases and normalisation layers.
        layer_lr_decay: Per-layer lr factor in (0, 1]; 1.0 gives just the groups
            ``decay`` and ``no_decay``.

    Returns:
        Non-empty group dicts with keys params, lr, weight_decay and name (for example
        ``layer_3/decay``, ``embeddings/no_decay``, ``head/decay``), ordered by depth.

    Raises:
        ValueError: if layer_lr_decay <= 0.
    """
    if layer_lr_decay <= 0.0:
        raise ValueError(f"layer_lr_decay must be > 0, got {layer_lr_decay}")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    blocks = {n: block_index(n) for n, _ in trainable}
    n_blocks = 1 + max((i for i in blocks.values() if i is not None), default=-1)
    layered = layer_lr_decay != 1.0
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in trainable:
        no_decay = _no_decay(name, model.get_submodule(name.rpartition(".")[0]))
        depth, label = _depth_and_label(blocks[name], n_blocks, layered)
        key = (depth, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": lr * layer_lr_decay ** (n_blocks + 1 - depth) if layered else lr,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": label + ("no_decay" if no_decay else "decay"),
            }
        groups[key]["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def build_optimizer(
    model: nn.Module, *, lr: float, weight_decay: float, betas: tuple[float, float],
    eps: float, correct_bias: bool, layer_lr_decay: float = 1.0,
) -> AdamW:
    """``AdamW`` over ``param_groups(model, lr, weight_decay, layer_lr_decay)``.

    Args:
        model: its trainable parameters are optimised.
        lr, weight_decay, layer_lr_decay: as for :func:`param_groups`.
        betas, eps, correct_bias: as for :class:`AdamW`.

    Returns:
        The optimiser (its group order is :func:`param_groups`' depth order: the head last).

    Raises:
        ValueError: an invalid hyperparameter (see :class:`AdamW` and :func:`param_groups`).
    """
    groups = param_groups(model, lr, weight_decay, layer_lr_decay)
    return AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
