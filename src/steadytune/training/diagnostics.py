"""Training-time diagnostics: gradient norms per layer and kind, optimiser scalars, head health.

Mosbach et al. (2021, Fig. 4/10-12) explain failed fine-tuning runs as an optimisation
failure: the gradients of the lower layers vanish early in training. The paper's code
logs, every 10 steps including step 0 and *before* clipping, the L2 norm of every
parameter's gradient, the total norm before and after clipping, the lr, the fraction of
saturated tanh pooler units and the classifier's softmax entropy (protocol §4(d)).

This module records the same, aggregated so the paper's plots are one ``groupby`` away,
as a tidy table of :class:`~steadytune.training.results.DiagRow` records, columns
``step, group, name, value`` (:data:`~steadytune.training.results.DIAG_COLUMNS`):

==========================  ===============================================================
group                       names
==========================  ===============================================================
``grad_norm_layer``         ``embeddings``, ``layer.0`` ... ``layer.{L-1}`` (ALBERT's shared
                            block: ``layer.shared``), ``pooler``, ``classifier``
``grad_norm_kind``          ``query``, ``key``, ``value``, ``attention_output``, ``ffn_in``,
                            ``ffn_out``, ``layernorm``, ``embeddings``, ``pooler``,
                            ``classifier``, ``other``
``grad_norm_layer_kind``    ``<layer>/<kind>``, e.g. ``layer.3/query``
``optim``                   ``total_grad_norm`` (pre-clip), ``total_grad_norm_clipped``,
                            ``lr``, ``bias_correction_factor``, ``effective_lr``
``head``                    ``pooler_saturation_0.99``, ``pooler_saturation_0.9``,
                            ``entropy``, ``majority_fraction``
==========================  ===============================================================

``step`` is the number of updates already taken, so step 0 holds the first update's
gradients (as the paper's code logs them). A group norm is the L2 norm of the
concatenation of its parameters' gradients: sqrt of the sum of squared per-tensor norms.

Everything is computed on the model's device and leaves it with one ``tolist()`` per
diagnostic step: per-tensor norms come from ``torch._foreach_norm``, are squared in
float64 (so vanishing gradients do not underflow) and summed into all groups at once
with ``index_add_`` over an index precomputed once per run (:class:`GradNormIndex`).
Nothing here changes parameters, gradients or random state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from steadytune.training.optim import bias_correction_factor, block_index
from steadytune.training.results import DiagRow, diagnostics_frame

KINDS = ("query", "key", "value", "attention_output", "ffn_in", "ffn_out", "layernorm",
         "embeddings", "pooler", "classifier", "other")
GROUPINGS = ("grad_norm_layer", "grad_norm_kind", "grad_norm_layer_kind")
SATURATION_THRESHOLDS = (0.99, 0.9)
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_ divides by (total + 1e-6)

# Leaf module names of the attention projections (BERT/RoBERTa/ELECTRA/ALBERT; DeBERTa;
# DistilBERT). Matched exactly, so DeBERTa's relative-position pos_q_proj stays "other".
_QKV = {
    "query": ("query", "query_proj", "q_lin"),
    "key": ("key", "key_proj", "k_lin"),
    "value": ("value", "value_proj", "v_lin"),
}
_ATTENTION_OUT = ("attention.output.dense", "attention.dense", "attention.out_lin")
_FFN_IN = ("intermediate.dense", "ffn", "ffn.lin1")
_FFN_OUT = ("output.dense", "ffn_output", "ffn.lin2")
_NORM = re.compile(r"layer_?norm", re.IGNORECASE)
# Classification heads that apply torch.tanh to dense(x) functionally (no module to hook):
# RoBERTa and its relatives. ELECTRA's head uses GELU and DeBERTa's pooler its config act.
_TANH_HEADS = ("RobertaClassificationHead", "XLMRobertaClassificationHead", "CamembertClassificationHead",
               "XLMRobertaXLClassificationHead", "RobertaPreLayerNormClassificationHead",
               "Data2VecTextClassificationHead", "XmodClassificationHead")


def layer_of(name: str) -> str:
    """The layer a parameter belongs to, by name, with the depth logic of ``optim.param_groups``.

    Returns:
        ``embeddings`` (incl. ALBERT's embedding projection and ELECTRA's
        ``embeddings_project``), ``layer.<i>`` for transformer block i, ``layer.shared``
        for ALBERT's shared block (``layer.shared.<g>`` for hidden group g > 0),
        ``pooler``, or ``classifier`` for anything else (the head).
    """
    block = block_index(name)
    if block == -1:
        return "embeddings"
    if block is not None:
        if "albert_layer_groups" in name:
            return "layer.shared" if block == 0 else f"layer.shared.{block}"
        return f"layer.{block}"
    return "pooler" if "pooler" in name else "classifier"


def kind_of(name: str) -> str:
    """The kind of parameter, by name, across BERT, RoBERTa, ALBERT, ELECTRA, DeBERTa, DistilBERT.

    Returns:
        One of :data:`KINDS`. Every LayerNorm (the embeddings' too) is ``layernorm``;
        parameters inside a block that match no pattern are ``other``.
    """
    module = name.rpartition(".")[0]
    leaf = module.rpartition(".")[2]
    layer = layer_of(name)
    if _NORM.search(leaf):
        return "layernorm"
    if layer in ("embeddings", "pooler", "classifier"):
        return layer
    for kind, leaves in _QKV.items():
        if leaf in leaves:
            return kind
    if module.endswith(_ATTENTION_OUT):
        return "attention_output"
    if any(module == s or module.endswith("." + s) for s in _FFN_IN):
        return "ffn_in"
    if any(module == s or module.endswith("." + s) for s in _FFN_OUT):
        return "ffn_out"
    return "other"


def _layer_rank(layer: str) -> tuple[int, int]:
    if layer == "embeddings":
        return (0, 0)
    if layer.startswith("layer."):
        tail = layer.rpartition(".")[2]
        return (1, int(tail) if tail.isdigit() else 0)
    return (2, 0) if layer == "pooler" else (3, 0)


@dataclass(frozen=True, eq=False)
class GradNormIndex:
    """Which output slot each parameter's squared gradient norm is added to; built once per run.

    Attributes:
        names: the parameter names, in the order :func:`grad_norms` expects the params.
        slots: ``(group, name)`` of each output entry: the three groupings, then
            ``("optim", "total_grad_norm")``.
        index: ``(4 * len(names),)`` slot ids; parameter i goes to ``index[i]`` (layer),
            ``index[P + i]`` (kind), ``index[2P + i]`` (layer/kind), ``index[3P + i]`` (total).
    """

    names: tuple[str, ...]
    slots: tuple[tuple[str, str], ...]
    index: torch.Tensor
    _on_device: dict[torch.device, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_names(cls, names: Iterable[str]) -> GradNormIndex:
        """Build the index for parameters called ``names`` (in that order)."""
        names = tuple(names)
        layers = [layer_of(n) for n in names]
        kinds = [kind_of(n) for n in names]
        by_layer = sorted(set(layers), key=_layer_rank)
        by_kind = [k for k in KINDS if k in set(kinds)]
        pairs = sorted({(l, k) for l, k in zip(layers, kinds)}, key=lambda p: (_layer_rank(p[0]), KINDS.index(p[1])))
        slots = ([("grad_norm_layer", l) for l in by_layer] + [("grad_norm_kind", k) for k in by_kind]
                 + [("grad_norm_layer_kind", f"{l}/{k}") for l, k in pairs] + [("optim", "total_grad_norm")])
        position = {slot: i for i, slot in enumerate(slots)}
        index = ([position["grad_norm_layer", l] for l in layers] + [position["grad_norm_kind", k] for k in kinds]
                 + [position["grad_norm_layer_kind", f"{l}/{k}"] for l, k in zip(layers, kinds)]
                 + [position["optim", "total_grad_norm"]] * len(names))
        return cls(names, tuple(slots), torch.tensor(index, dtype=torch.long))

    @classmethod
    def from_model(cls, model: nn.Module) -> GradNormIndex:
        """The index over ``model``'s trainable parameters (``named_parameters`` order)."""
        return cls.from_names(n for n, p in model.named_parameters() if p.requires_grad)

    def on(self, device: torch.device) -> torch.Tensor:
        """``index`` on ``device``, copied there once and cached."""
        if device not in self._on_device:
            self._on_device[device] = self.index.to(device)
        return self._on_device[device]


def _accumulate_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


def param_grad_norms(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each parameter's gradient (0 where it has none), as one device tensor.

    Raises:
        ValueError: if ``params`` is empty.
    """
    if not params:
        raise ValueError("no parameters")
    grads = [p.grad for p in params]
    present = [i for i, g in enumerate(grads) if g is not None]
    if not present:
        return torch.zeros(len(params), device=params[0].device)
    norms = torch._foreach_norm([grads[i] for i in present])
    if len({n.dtype for n in norms}) > 1:
        norms = [n.float() for n in norms]
    stacked = torch.stack(norms)
    if len(present) == len(params):
        return stacked
    full = stacked.new_zeros(len(params))
    return full.index_copy_(0, torch.tensor(present, device=full.device), stacked)


@torch.no_grad()
def group_norms(norms: torch.Tensor, index: GradNormIndex) -> torch.Tensor:
    """Every slot's L2 norm (groups and the total) from per-parameter gradient norms.

    Args:
        norms: one gradient norm per parameter, in the order of ``index.names``
            (:func:`param_grad_norms`).
        index: the slots (:class:`GradNormIndex`).

    Returns:
        A float64 (float32 on MPS) tensor of ``len(index.slots)`` norms, on the norms'
        device; no host sync.

    Raises:
        ValueError: if the number of norms does not match the index.
    """
    if len(norms) != len(index.names):
        raise ValueError(f"{len(norms)} params for an index of {len(index.names)}")
    squared = norms.to(_accumulate_dtype(norms.device)).square()
    ids = index.on(norms.device)
    sums = squared.new_zeros(len(index.slots)).index_add_(0, ids, squared.repeat(len(ids) // len(norms)))
    return sums.sqrt()


@torch.no_grad()
def grad_norms(params: Sequence[torch.Tensor], index: GradNormIndex) -> torch.Tensor:
    """:func:`group_norms` of the params' current gradients (``params`` in ``index.names`` order;
    only ``.grad`` is read; no host sync). Raises ValueError if the counts differ."""
    if len(params) != len(index.names):
        raise ValueError(f"{len(params)} params for an index of {len(index.names)}")
    return group_norms(param_grad_norms(params), index)


def clipped_norm(total: torch.Tensor, max_norm: float) -> torch.Tensor:
    """The total norm after ``clip_grad_norm_(params, max_norm)`` scales the gradients (0: no clip)."""
    if max_norm <= 0:
        return total
    return total * torch.clamp(max_norm / (total + CLIP_EPS), max=1.0)


def pooler_saturation(activations: torch.Tensor,
                      thresholds: Sequence[float] = SATURATION_THRESHOLDS) -> torch.Tensor:
    """Fraction of tanh activations with ``|a| >= t``, one entry per threshold (on device)."""
    magnitude = activations.detach().float().abs()
    return torch.stack([(magnitude >= t).float().mean() for t in thresholds])


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the entropy (nats) of ``softmax(logits)`` (0-dim, on device)."""
    logp = torch.log_softmax(logits.detach().float(), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def majority_fraction(logits: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch predicted as the most-predicted class (1.0 = collapsed predictions)."""
    logits = logits.detach()
    pred = logits.argmax(-1).reshape(-1)
    # A comparison, not bincount: bincount sizes its output from the data (a host sync).
    counts = (pred.unsqueeze(1) == torch.arange(logits.shape[-1], device=pred.device)).sum(0)
    return counts.max().float() / pred.numel()


def optimizer_stats(step: int, group: dict[str, Any]) -> dict[str, float]:
    """lr, bias-correction factor c_t and effective lr of the update at ``step`` (0-based).

    The update about to be taken is Adam step t = step + 1. ``bias_correction_factor``
    is the math factor sqrt(1 - b2^t) / (1 - b1^t) whether or not the optimiser applies
    it; ``effective_lr`` is lr * c_t with ``correct_bias`` and lr without.
    """
    beta1, beta2 = group["betas"]
    factor = bias_correction_factor(step + 1, beta1, beta2)
    lr = float(group["lr"])
    return {"lr": lr, "bias_correction_factor": factor,
            "effective_lr": lr * factor if group.get("correct_bias", True) else lr}


def find_pooler_activation(model: nn.Module) -> tuple[nn.Module, bool] | None:
    """The module whose output is the pooler's tanh activation, and whether tanh is still due.

    BERT/ALBERT: the pooler's ``nn.Tanh``. RoBERTa-style heads apply ``torch.tanh`` to
    ``classifier.dense`` functionally: that dense layer, with tanh to apply. None when
    there is no tanh pooler (ELECTRA's head uses GELU, DeBERTa's its config activation).
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.Tanh) and "pooler" in name:
            return module, False
    head = getattr(model, "classifier", None)
    if isinstance(getattr(head, "activation", None), nn.Tanh):
        return head.activation, False
    if type(head).__name__ in _TANH_HEADS and isinstance(getattr(head, "dense", None), nn.Module):
        return head.dense, True
    return None


class _Tap:
    """Keeps a detached reference to a module's latest training-mode output (forward hook)."""

    def __init__(self, module: nn.Module, apply_tanh: bool) -> None:
        self.apply_tanh = apply_tanh
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if module.training and isinstance(output, torch.Tensor):
            self.value = output.detach()

    def take(self) -> torch.Tensor | None:
        value, self.value = self.value, None
        if value is None:
            return None
        return torch.tanh(value.float()) if self.apply_tanh else value


class Recorder:
    """Collects diagnostics every ``every`` steps; the training loop calls :meth:`record` once per step.

    Build it after the optimiser; call ``record(step, logits)`` after ``backward()`` and
    before clipping; call :meth:`frame` at the end (it also removes the forward hook).
    With ``every == 0`` it does nothing and registers nothing. A loop that clips before it
    can call (a Hugging Face ``Trainer``) passes the pre-clip per-parameter norms it kept
    instead (``record(step, logits, param_norms=...)``,
    :class:`steadytune.integrations.transformers.DiagnosticsCallback`).

    Args:
        model: the model being trained (only its trainable params and pooler are used).
        optimizer: its last (top) param group gives lr, betas and correct_bias (None: no
            ``optim`` rows but the gradient norms).
        every: record at steps 0, every, 2*every, ...; 0 disables.
        max_grad_norm: the clipping threshold the loop applies (0: none).

    Attributes:
        rows: the :class:`~steadytune.training.results.DiagRow` records so far, in order.
        last: ``(group, name) -> value`` of the latest diagnostic step, on the host (what
            :class:`~steadytune.training.guard.Guard` reads; empty before the first).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, every: int,
                 max_grad_norm: float = 0.0) -> None:
        self.every, self.max_grad_norm, self.optimizer = int(every), float(max_grad_norm), optimizer
        self.rows: list[DiagRow] = []
        self.last: dict[tuple[str, str], float] = {}
        self._tap: _Tap | None = None
        if self.every <= 0:
            return
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.index = GradNormIndex.from_names(n for n, _ in named)
        self.params = [p for _, p in named]
        found = find_pooler_activation(model)
        if found is not None:
            self._tap = _Tap(*found)

    def due(self, step: int) -> bool:
        """Whether ``step`` is a diagnostic step."""
        return self.every > 0 and step % self.every == 0

    @torch.no_grad()
    def record(self, step: int, logits: torch.Tensor | None = None, param_norms: torch.Tensor | None = None) -> None:
        """Record ``step``'s diagnostics if it is due (one host transfer); a no-op otherwise.

        Args:
            step: updates already taken.
            logits: the training batch's logits (head statistics; None: none).
            param_norms: each trainable parameter's gradient norm, in ``named_parameters``
                order, taken before clipping (None: read the gradients now).
        """
        if not self.due(step):
            return
        activation = self._tap.take() if self._tap is not None else None
        if param_norms is None:
            slot_norms = grad_norms(self.params, self.index)
        else:
            slot_norms = group_norms(param_norms, self.index)
        dtype, device = slot_norms.dtype, slot_norms.device
        names = list(self.index.slots) + [("optim", "total_grad_norm_clipped")]
        parts = [slot_norms, clipped_norm(slot_norms[-1:], self.max_grad_norm)]
        if activation is not None:
            names += [("head", f"pooler_saturation_{t:g}") for t in SATURATION_THRESHOLDS]
            parts.append(pooler_saturation(activation).to(device, dtype))
        if logits is not None and logits.shape[-1] >= 2:  # classification; skip for regression
            names += [("head", "entropy"), ("head", "majority_fraction")]
            parts.append(torch.stack([softmax_entropy(logits), majority_fraction(logits)]).to(device, dtype))
        values = torch.cat(parts).tolist()  # the one host sync of a diagnostic step
        self.last = dict(zip(names, values))
        self.rows.extend(DiagRow(step, g, n, v) for (g, n), v in self.last.items())
        if self.optimizer is None:
            return
        stats = optimizer_stats(step, self.optimizer.param_groups[-1])
        self.rows.extend(DiagRow(step, "optim", n, v) for n, v in stats.items())

    def close(self) -> None:
        """Remove the forward hook (idempotent)."""
        if self._tap is not None:
            self._tap.handle.remove()
            self._tap = None

    def frame(self) -> pd.DataFrame:
        """The recorded rows as a tidy ``step, group, name, value`` table; removes the hook.

        Returns:
            :func:`~steadytune.training.results.diagnostics_frame` of :attr:`rows` (empty
            with ``every == 0``).
        """
        self.close()
        return diagnostics_frame(self.rows)


__all__ = [
    "KINDS", "GradNormIndex", "Recorder", "clipped_norm", "find_pooler_activation",
    "grad_norms", "group_norms", "kind_of", "layer_of", "majority_fraction", "optimizer_stats", "param_grad_norms",
    "pooler_saturation", "softmax_entropy",
]
