"""Robust aggregates beside mean and std, with rliable's definitions (Agarwal et al. 2021).

* :func:`iqm` — the interquartile mean: the mean of the middle 50% of all scores
  (``scipy.stats.trim_mean(scores, 0.25, axis=None)``), robust to the failed runs that
  make a fine-tuning mean jump and less noisy than the median.
* :func:`stratified_bootstrap_ci` — a percentile interval from resampling runs *within*
  each stratum (task; or recipe, when two are compared) independently.
* :func:`probability_of_improvement` — P(A > B): the probability that recipe A scores
  higher than recipe B on a random seed, ties counting one half (the Mann–Whitney U
  statistic over n_A·n_B), averaged over tasks.

Scores are ``(runs × tasks)`` arrays, or one 1-D array of runs per task (the tasks may
have different numbers of runs); every random draw comes from an explicit ``random_state``.
:func:`robust_summary` and :func:`improvement_table` apply them to a study's runs table
(:mod:`steadytune.analyses.stats`): per group, and per pair of recipes.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import trim_mean

from steadytune.analyses.stats import GROUP_KEYS, checked_runs

__all__ = ["improvement_table", "iqm", "probability_of_improvement", "robust_summary", "stratified_bootstrap_ci"]

Scores = np.ndarray | Sequence[np.ndarray]
"""A ``(runs × tasks)`` array, or a sequence of 1-D arrays (the runs of each task)."""


def _strata(scores: Scores) -> list[np.ndarray]:
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        strata = [scores[:, j].astype(np.float64) for j in range(scores.shape[1])]
    elif isinstance(scores, np.ndarray) and scores.ndim == 1:
        strata = [scores.astype(np.float64)]
    else:
        strata = [np.asarray(s, dtype=np.float64).ravel() for s in scores]
    if not strata or any(s.size == 0 for s in strata):
        raise ValueError("scores need at least one run in every task")
    return strata


def iqm(scores: Scores, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the scores left after cutting 25% from each end.

    Args:
        scores: ``(runs × tasks)`` array or per-task arrays; all scores are pooled.
        axis: for an array, reduce along this axis only (``axis=-1`` over rows of
            resamples); None pools every score.

    Returns:
        ``scipy.stats.trim_mean(scores, 0.25, axis=axis)``: with N scores, int(0.25·N)
        are cut from each end (8 scores: the mean of the 3rd to 6th smallest).
    """
    if axis is not None:
        return trim_mean(np.asarray(scores, dtype=np.float64), 0.25, axis=axis)
    return float(trim_mean(np.concatenate(_strata(scores)), 0.25, axis=None))


def stratified_bootstrap_ci(scores: Scores, statistic: Callable[[np.ndarray], float] = iqm,
                            n_resamples: int = 2000, confidence: float = 0.95,
                            random_state: int | np.random.Generator = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` of the pooled scores, resampling the runs
    of each task (stratum) with replacement, independently of the other tasks.

    Args:
        scores: ``(runs × tasks)`` array or per-task arrays (finite values).
        statistic: a function of one 1-D array of pooled scores (default :func:`iqm`).
        n_resamples: bootstrap resamples (>= 1).
        confidence: two-sided level in (0, 1).
        random_state: seed or generator; the same seed gives the same interval.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: empty task, non-finite score, ``n_resamples < 1``, ``confidence`` outside (0, 1).
    """
    strata = _strata(scores)
    if any(not np.all(np.isfinite(s)) for s in strata):
        raise ValueError("scores must be finite (drop or rank diverged runs first)")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(random_state)
    pooled = np.concatenate([s[rng.integers(0, s.size, size=(n_resamples, s.size))] for s in strata], axis=1)
    if statistic is iqm:
        boot = iqm(pooled, axis=1)
    else:
        boot = np.array([statistic(row) for row in pooled], dtype=np.float64)
    alpha = 1.0 - confidence
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(low), float(high))


def probability_of_improvement(a: Scores, b: Scores) -> float:
    """P(A > B) on a random seed: per task the fraction of (a, b) run pairs with a > b, ties
    counting 1/2 (Mann–Whitney U / (n_a·n_b)), then the mean over tasks.

    Args:
        a, b: scores of recipes A and B, the same tasks in the same order.

    Returns:
        A probability in [0, 1]; 0.5 means neither is better.

    Raises:
        ValueError: the two have different numbers of tasks, or a task has no run.
    """
    sa, sb = _strata(a), _strata(b)
    if len(sa) != len(sb):
        raise ValueError(f"A has {len(sa)} tasks and B {len(sb)}")
    per_task = [np.mean((x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])) for x, y in zip(sa, sb)]
    return float(np.mean(per_task))


ROBUST_COLUMNS = [*GROUP_KEYS, "metric", "n", "iqm", "iqm_ci_low", "iqm_ci_high", "median", "mean"]
"""The columns of :func:`robust_summary`."""


def robust_summary(runs: pd.DataFrame, which: str = "final", n_resamples: int = 2000, confidence: float = 0.95,
                   random_state: int = 0) -> pd.DataFrame:
    """IQM with its bootstrap interval, beside median and mean, per (task, model, recipe, grid).

    Diverged runs are left out (as from the mean, :mod:`steadytune.analyses.stats`); one
    run per seed unit (repeats are not seeds).

    Args:
        runs: the runs table (:mod:`steadytune.analyses.stats`).
        which: ``"final"`` or ``"best"``.
        n_resamples, confidence, random_state: of the bootstrap interval (the same seed for every group).

    Returns:
        :data:`ROBUST_COLUMNS`, values ×100; a group whose runs all diverged has NaN values.

    Raises:
        ValueError: as :func:`steadytune.analyses.stats.summarize`.
    """
    rows = []
    for keys, g in checked_runs(runs, which).groupby(GROUP_KEYS, sort=True, dropna=False):
        v = g["value"].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        ci = stratified_bootstrap_ci(v, iqm, n_resamples, confidence, random_state) if v.size else (math.nan,) * 2
        rows.append({**dict(zip(GROUP_KEYS, keys)), "metric": g["metric"].iloc[0], "n": v.size,
                     "iqm": 100 * iqm(v) if v.size else math.nan, "iqm_ci_low": 100 * ci[0],
                     "iqm_ci_high": 100 * ci[1], "median": 100 * float(np.median(v)) if v.size else math.nan,
                     "mean": 100 * float(np.mean(v)) if v.size else math.nan})
    return pd.DataFrame(rows, columns=ROBUST_COLUMNS)


IMPROVEMENT_COLUMNS = ["task", "model", "grid", "metric", "recipe_a", "recipe_b", "n_a", "n_b", "p_a_beats_b",
                       "ci_low", "ci_high"]
"""The columns of :func:`improvement_table`."""


def improvement_table(runs: pd.DataFrame, which: str = "final", n_resamples: int = 2000,
                      confidence: float = 0.95, random_state: int = 0) -> pd.DataFrame:
    """P(A > B) on a random seed for every pair of recipes of each (task, model, grid).

    A diverged run ranks below every finished run (it failed), two diverged runs tie.
    The interval resamples the runs of A and of B independently (stratified bootstrap).

    Args:
        runs: the runs table (:mod:`steadytune.analyses.stats`).
        which: ``"final"`` or ``"best"``.
        n_resamples, confidence, random_state: of the bootstrap interval.

    Returns:
        :data:`IMPROVEMENT_COLUMNS`, one row per pair (A before B alphabetically).

    Raises:
        ValueError: as :func:`steadytune.analyses.stats.summarize`.
    """
    rows = []
    df = checked_runs(runs, which)
    for keys, g in df.groupby(["task", "model", "grid"], sort=True, dropna=False):
        by_recipe = {r: np.nan_to_num(part["value"].to_numpy(dtype=np.float64), nan=-np.inf)
                     for r, part in g.groupby("recipe", sort=True)}
        for a, b in itertools.combinations(by_recipe, 2):
            x, y = by_recipe[a], by_recipe[b]
            ci = _improvement_ci(x, y, n_resamples, confidence, random_state)
            rows.append({**dict(zip(["task", "model", "grid"], keys)), "metric": g["metric"].iloc[0],
                         "recipe_a": a, "recipe_b": b, "n_a": x.size, "n_b": y.size,
                         "p_a_beats_b": probability_of_improvement(x, y), "ci_low": ci[0], "ci_high": ci[1]})
    return pd.DataFrame(rows, columns=IMPROVEMENT_COLUMNS)


def _improvement_ci(x: np.ndarray, y: np.ndarray, n_resamples: int, confidence: float,
                    random_state: int) -> tuple[float, float]:
    """Percentile interval of P(X > Y), resampling X's and Y's runs independently."""
    rng = np.random.default_rng(random_state)
    xs = x[rng.integers(0, x.size, size=(n_resamples, x.size))]
    ys = y[rng.integers(0, y.size, size=(n_resamples, y.size))]
    wins = (xs[:, :, None] > ys[:, None, :]) + 0.5 * (xs[:, :, None] == ys[:, None, :])
    boot = wins.mean(axis=(1, 2))
    alpha = 1.0 - confidence
    low, high = np.percentile(boot, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return (float(low), float(high))
