"""Diagnostics of a grouped model: each run's gradient norms and head statistics, as it would record alone.

The same groups, names and values as :class:`~steadytune.training.diagnostics.Recorder`
(per-layer, per-kind and per-layer-kind gradient norms before clipping, the clipped
total, optimiser scalars, pooler saturation, classifier entropy and prediction collapse),
one row list per run, computed for all runs at once and moved to the host with one
``tolist()`` per diagnostic step.
"""

from __future__ import annotations

import pandas as pd
import torch

from steadytune.training.diagnostics import (
    SATURATION_THRESHOLDS,
    GradNormIndex,
    clipped_norm,
    find_pooler_activation,
    majority_fraction,
    optimizer_stats,
    pooler_saturation,
    softmax_entropy,
)
from steadytune.training.grouped.model import GroupedModel
from steadytune.training.results import DiagRow, diagnostics_frame


def member_grad_norms(params: list[torch.nn.Parameter], k: int) -> torch.Tensor:
    """``(len(params), k)``: the L2 norm of each run's slice of each parameter's gradient (0 if none)."""
    norms = [torch.linalg.vector_norm(p.grad.flatten(1), dim=1) if p.grad is not None
             else torch.zeros(k, device=p.device) for p in params]
    return torch.stack([n.float() for n in norms])


class GroupRecorder:
    """Per-run diagnostics of a :class:`GroupedModel` every ``every`` steps (0: none).

    Call :meth:`record` after ``backward()`` and before clipping, with the group's logits;
    :meth:`frames` at the end gives one diagnostics table per run.
    """

    def __init__(self, model: GroupedModel, optimizer: torch.optim.Optimizer, every: int,
                 max_grad_norm: float = 0.0) -> None:
        self.model, self.optimizer = model, optimizer
        self.every, self.max_grad_norm = int(every), float(max_grad_norm)
        self.rows: list[list[DiagRow]] = [[] for _ in range(model.k)]
        self.last: list[dict[tuple[str, str], float]] = [{} for _ in range(model.k)]
        """Per run, ``(group, name) -> value`` of the latest diagnostic step (what its guard reads)."""
        self._hook = None
        self._activation: torch.Tensor | None = None
        if self.every <= 0:
            return
        named = [(n, p) for n, p in model.inner.named_parameters() if p.requires_grad]
        self.index = GradNormIndex.from_names(n for n, _ in named)
        self.params = [p for _, p in named]
        found = find_pooler_activation(model.inner)
        if found is not None:
            module, self._apply_tanh = found
            self._hook = module.register_forward_hook(self._keep)

    def _keep(self, module: torch.nn.Module, inputs: object, output: object) -> None:
        if module.training and isinstance(output, torch.Tensor):
            self._activation = output.detach()

    def due(self, step: int) -> bool:
        """Whether ``step`` is a diagnostic step."""
        return self.every > 0 and step % self.every == 0

    @torch.no_grad()
    def record(self, step: int, logits: torch.Tensor) -> None:
        """Record ``step``'s diagnostics of every run if due (one host transfer)."""
        if not self.due(step):
            return
        k, layout = self.model.k, self.model.layout
        squared = member_grad_norms(self.params, k).double().square()
        ids = self.index.on(squared.device)
        slots = squared.new_zeros(len(self.index.slots), k).index_add_(0, ids, squared.repeat(4, 1)).sqrt()
        names = list(self.index.slots) + [("optim", "total_grad_norm_clipped")]
        parts = [slots, clipped_norm(slots[-1:], self.max_grad_norm)]
        activation, self._activation = self._activation, None
        per_run_logits = logits.detach().reshape(k, layout.rows, -1)
        if activation is not None:
            act = activation.reshape(k, layout.rows, -1)
            act = torch.tanh(act.float()) if self._apply_tanh else act
            names += [("head", f"pooler_saturation_{t:g}") for t in SATURATION_THRESHOLDS]
            parts.append(torch.stack([pooler_saturation(act[i, : layout.sizes[i]]) for i in range(k)], 1).double())
        if per_run_logits.shape[-1] >= 2:
            names += [("head", "entropy"), ("head", "majority_fraction")]
            head = [torch.stack([softmax_entropy(per_run_logits[i, : layout.sizes[i]]),
                                 majority_fraction(per_run_logits[i, : layout.sizes[i]])]) for i in range(k)]
            parts.append(torch.stack(head, 1).double())
        values = torch.cat([p.to(slots.device, torch.float64) for p in parts]).T.tolist()  # the one host sync
        stats = optimizer_stats(step, self.optimizer.param_groups[-1])
        for run, row in enumerate(values):
            self.last[run] = dict(zip(names, row))
            self.rows[run].extend(DiagRow(step, g, n, v) for (g, n), v in zip(names, row))
            self.rows[run].extend(DiagRow(step, "optim", n, v) for n, v in stats.items())

    def frames(self) -> list[pd.DataFrame]:
        """One tidy ``step, group, name, value`` table per run; removes the forward hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        return [diagnostics_frame(rows) for rows in self.rows]


__all__ = ["GroupRecorder", "member_grad_norms"]
