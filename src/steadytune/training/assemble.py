"""The :class:`~steadytune.training.results.RunResult` of a run, built from the loop's end state."""

from __future__ import annotations

from typing import Any

import pandas as pd

from steadytune.config.run import RunConfig
from steadytune.training.evaluation import Tracker
from steadytune.training.inputs import RunData
from steadytune.training.metrics import is_failed
from steadytune.training.results import RunResult, label_entropy, versions
from steadytune.training.schedule import Schedule


def data_summary(data: RunData) -> dict[str, Any]:
    """``RunResult.data``: split sizes and sources, label names and the training label entropy."""
    return {
        "n_train": len(data.train),
        "n_dev": len(data.dev),
        "train_source": data.train.source,
        "dev_source": data.dev.source,
        "label_names": list(data.train.label_names) if data.train.label_names else None,
        "label_entropy": label_entropy(data.train.labels, data.regression),
    }


def build_result(cfg: RunConfig, data: RunData, tracker: Tracker, schedule: Schedule, *, status: str,
                 error: str | None, steps: int, model_info: dict[str, Any], seeds: dict[str, int], wall: float,
                 diagnostics: pd.DataFrame, execution: dict[str, Any] | None = None,
                 guard: dict[str, Any] | None = None) -> RunResult:
    """Assemble the :class:`RunResult` of a run from the training loop's state.

    Args:
        cfg: the run's resolved configuration (stored as ``config``).
        data: its data (metric, baseline, split sizes).
        tracker: its curves, final and best evaluations.
        schedule: its step plan (total, warmup, steps per epoch).
        status: ``finished``, ``diverged`` or ``stopped`` (anything but ``finished`` is a failed run).
        error: why it stopped early, or None.
        steps: updates taken.
        model_info: what :func:`~steadytune.training.classifier.load_model` initialised.
        seeds: the run's seed streams (:func:`~steadytune.training.results.derive_seeds`).
        wall: seconds the run took.
        diagnostics: the diagnostics table (:meth:`~steadytune.training.diagnostics.Recorder.frame`).
        execution: where it ran (``device``, ``threads``).
        guard: the doomed-run detector's record (:meth:`~steadytune.training.guard.Guard.record`).

    Returns:
        The result; ``failed`` / ``failed_best`` follow the failed-run rule of
        :func:`~steadytune.training.metrics.is_failed`.
    """
    final = dict(tracker.final or {})
    best = dict(tracker.best or {})
    final_value = final.get(data.metric, float("nan"))
    best_value = best.get(data.metric, float("nan"))
    return RunResult(
        task=cfg.task, recipe=cfg.recipe, seed=cfg.seed, model=cfg.model, config=cfg.to_dict(),
        metric=data.metric, metrics={"final": final, "best": best}, best_step=tracker.best_step,
        majority_baseline=data.baseline,
        failed=status != "finished" or is_failed(final_value, data.baseline),
        failed_best=is_failed(best_value, data.baseline),
        status=status, error=error, steps=steps, total_steps=schedule.total, warmup_steps=schedule.warmup,
        steps_per_epoch=schedule.steps_per_epoch, wall_seconds=round(wall, 3), seeds=seeds,
        versions=versions(), data=data_summary(data), model_info=model_info, execution=dict(execution or {}),
        guard=dict(guard or {}), curves=tracker.curves(), diagnostics=diagnostics,
    )


__all__ = ["build_result", "data_summary"]
