"""A Hugging Face ``Trainer`` run stored in a steadytune study, so ``summary`` and ``report`` include it.

The stored run has the same tables as steadytune's own runs (result, curves, diagnostics)
and is grouped like them by task, model and recipe; its grid label is ``trainer`` and its
id ``trainer-<config hash>``, so it never collides with a run steadytune trains itself
from the same configuration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from steadytune.config.run import RunConfig, config_hash
from steadytune.store.study import Study
from steadytune.training.metrics import is_failed
from steadytune.training.results import RunResult, versions

GRID = "trainer"
"""The grid label of stored Trainer runs."""


@dataclass(frozen=True)
class TrainerRunInfo:
    """What a Trainer run is, for the study: its configuration and how it is scored."""

    config: RunConfig
    """Task, model, recipe, seed and settings (e.g. the ``resolve_config`` the recipe came from)."""
    metric: str
    """The evaluation metric that decides failed / best, as the ``compute_metrics`` key
    without ``eval_`` (e.g. ``acc``)."""
    baseline: float
    """The majority-class baseline of ``metric`` on the dev set
    (:func:`steadytune.training.metrics.majority_baseline`)."""
    label_entropy: float | None = None
    """Entropy of the training labels (for the ``stuck`` count), if known."""


@dataclass(frozen=True)
class _Planned:
    run_id: str
    cfg: RunConfig
    grid: str


def _best(evaluations: list[tuple[int, dict[str, float]]], metric: str) -> tuple[int, dict[str, float]]:
    """The strictly best evaluation (first of equals; NaN never), as steadytune's loop picks it."""
    best: tuple[int, dict[str, float]] = (-1, {})
    for step, values in evaluations:
        value = values.get(metric, math.nan)
        if math.isfinite(value) and value > best[1].get(metric, -math.inf):
            best = (step, values)
    return best


def store_trainer_run(study: str | Path, info: TrainerRunInfo, curves: pd.DataFrame, diagnostics: pd.DataFrame,
                      evaluations: list[tuple[int, dict[str, float]]], *, steps: int, total_steps: int,
                      wall: float, guard: dict[str, Any] | None = None) -> str:
    """Write one Trainer run into ``study`` (created if missing); return its run id.

    Args:
        study: the study file.
        info: what the run is.
        curves, diagnostics: the callback's tables.
        evaluations: ``(step, {metric: value})`` of every evaluation, in order; the last is
            the final one.
        steps, total_steps: optimiser steps taken and planned.
        wall: seconds the run took.
        guard: the doomed-run detector's record (a run it stopped is stored as ``stopped``,
            counted as failed); None: no guard.

    Returns:
        ``trainer-<config hash>``. A run already stored under that id is kept as it was.
    """
    cfg = info.config
    final = dict(evaluations[-1][1]) if evaluations else {}
    best_step, best = _best(evaluations, info.metric)
    final_value = final.get(info.metric, math.nan)
    stopped = bool(guard and guard.get("stopped"))
    result = RunResult(
        task=cfg.task, recipe=cfg.recipe, seed=cfg.seed, model=cfg.model, config=cfg.to_dict(), metric=info.metric,
        metrics={"final": final, "best": dict(best)}, best_step=best_step, majority_baseline=info.baseline,
        failed=stopped or is_failed(final_value, info.baseline), failed_best=is_failed(best.get(info.metric, math.nan),
                                                                            info.baseline),
        status="stopped" if stopped else "finished", error=(guard or {}).get("reason") if stopped else None,
        steps=steps, total_steps=total_steps, warmup_steps=0, steps_per_epoch=0,
        wall_seconds=round(wall, 3), seeds={"run": cfg.seed}, versions=versions(),
        data={"label_entropy": info.label_entropy}, model_info={}, execution={"via": "transformers.Trainer"},
        curves=curves, diagnostics=diagnostics, guard=dict(guard or {}))
    run_id = f"trainer-{config_hash(cfg)}"
    with Study.open(study, create=True) as opened:
        opened.add_planned([_Planned(run_id, cfg, GRID)])
        opened.record_result(run_id, result)
    return run_id


__all__ = ["GRID", "TrainerRunInfo", "store_trainer_run"]
