"""Dev-set evaluation and what the loop tracks: curve rows, the best and the final evaluation.

**Which evaluation is "best".** The strictly best dev value of the run's metric (the first
of equal values wins; NaN never does), over every evaluation *including the step-0
evaluation of the untrained model*, as the paper's code does (see
:mod:`steadytune.training.loop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from steadytune.config.run import RunConfig
from steadytune.data.batching import collate, eval_batches
from steadytune.training.inputs import RunData
from steadytune.training.metrics import compute_metrics
from steadytune.training.results import CurveRow, curves_frame


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: RunData, cfg: RunConfig, device: torch.device) -> dict[str, float]:
    """Dev metrics and mean dev loss of ``model``, in eval mode, in length-sorted batches.

    Args:
        model: the classifier; its train/eval mode is restored afterwards.
        data: the run's data (``dev_enc`` is scored with ``metric_kind``).
        cfg: gives ``eval_batch_size`` and ``precision`` (``bf16``: autocast).
        device: where the model is.

    Returns:
        ``{metric: value}`` for every metric of the kind, plus ``loss``.
    """
    was_training = model.training
    model.eval()
    preds, losses = [], []
    amp = cfg.precision == "bf16"
    for idx in eval_batches(data.dev_enc.lengths, cfg.eval_batch_size):
        batch = {k: v.to(device) for k, v in collate(data.dev_enc, idx, data.pad_id).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(**batch)
        logits = out.logits.float()
        losses.append(out.loss.float() * len(idx))
        preds.append((logits.squeeze(-1) if data.regression else logits.argmax(-1), idx))
    model.train(was_training)
    order = np.concatenate([i for _, i in preds])
    values = torch.cat([p for p, _ in preds]).cpu().numpy()
    pred = np.empty_like(values)
    pred[order] = values
    metrics = compute_metrics(data.metric_kind, pred, data.dev_enc.labels)
    metrics["loss"] = float(torch.stack(losses).sum().item() / len(order))
    return metrics


@dataclass
class Tracker:
    """The run's curve rows, its best and final dev evaluations (and the best weights)."""

    metric: str
    """The metric that decides the best evaluation."""
    keep_best_state: bool = False
    """Keep a CPU copy of the weights of the best evaluation (to save them at the end)."""
    rows: list[CurveRow] = field(default_factory=list)
    """The curves so far, in the order they were recorded."""
    best: dict[str, float] | None = None
    """Metrics of the best evaluation so far."""
    best_step: int = -1
    """Its step (0: the untrained model; -1: none yet)."""
    best_state: dict[str, torch.Tensor] | None = None
    """Its weights, when ``keep_best_state``."""
    final: dict[str, float] | None = None
    """Metrics of the latest evaluation (NaN after :meth:`mark_diverged`)."""

    def add(self, step: int, epoch: float, split: str, values: dict[str, float]) -> None:
        """Append one :class:`CurveRow` per entry of ``values`` (as floats).

        Args:
            step: updates taken.
            epoch: fractional epoch.
            split: ``train`` or ``dev``.
            values: ``{name: value}``, in the order the rows get.
        """
        self.rows.extend(CurveRow(step, epoch, split, name, float(v)) for name, v in values.items())

    def record_eval(self, metrics: dict[str, float], step: int, epoch: float, model: torch.nn.Module) -> None:
        """Record one dev evaluation; it becomes the best if strictly better (step 0 included).

        Args:
            metrics: from :func:`evaluate`.
            step: updates taken.
            epoch: fractional epoch.
            model: the evaluated model (its weights are copied if it is the best and
                ``keep_best_state``).
        """
        self.add(step, epoch, "dev", metrics)
        self.final = metrics
        value = metrics.get(self.metric, float("nan"))
        best = self.best[self.metric] if self.best else -math.inf
        if math.isfinite(value) and value > best:  # strictly better, as the paper's code
            self.best, self.best_step = metrics, step
            if self.keep_best_state:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def mark_diverged(self) -> None:
        """Make the final metrics NaN: a diverged (or stopped) run has no final model worth scoring."""
        self.final = {k: float("nan") for k in (self.final or {self.metric: 0.0})}

    def curves(self) -> pd.DataFrame:
        """The rows as the run's curves table (:func:`~steadytune.training.results.curves_frame`)."""
        return curves_frame(self.rows)


__all__ = ["Tracker", "evaluate"]
