"""Aggregate statistics over seed sweeps: failure rates, spread, expected max, variance tests.

Pure functions over tidy tables (rliable / scikit-learn conventions: explicit
``random_state``, nothing plotted here). The input table has one row per run with columns

    task, model, recipe, grid, seed, metric, final, best, baseline, status

``final`` / ``best`` are the primary ``metric`` at the last / best-dev checkpoint and
``baseline`` the majority baseline, all in [0, 1] units (:mod:`steadytune.metrics`);
``status`` is ``"finished"`` or ``"diverged"``.

Conventions, applied everywhere in this module:

* A **diverged** run counts as failed and its value (``final`` *or* ``best``) is treated
  as NaN: it is counted in ``n`` and ``n_failed`` but left out of mean/std/median/max,
  of the variance tests and of the expected-max distribution.
* A **failed** run is one with ``value <= baseline`` or a NaN value
  (:func:`steadytune.metrics.is_failed`). Failed-but-finished runs stay in the plain
  statistics (as in the paper's Table 1); the ``*_ok`` columns leave them out.
* ``std`` is the sample standard deviation (ddof=1; NaN for fewer than 2 values). The
  paper does not say which it used; for 25 seeds the two differ by a factor of 1.02.
* Metric values in output tables are ×100, as the paper prints them; rates are fractions.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as sps

from steadytune.training.metrics import FAILED_TOL

__all__ = ["bootstrap_ci", "compare_recipes", "expected_max", "expected_max_curve",
           "failed_mask", "stuck_mask", "summarize", "variance_tests", "wilson_interval", "STUCK_FRACTION"]

GROUP_KEYS = ["task", "model", "recipe", "grid"]
STUCK_FRACTION = 0.8
"""A run is *stuck* when its last training loss is still >= this fraction of the entropy of
the training label prior: it never got off the predict-the-prior solution, the paper's
optimisation failure (as opposed to fitting the training set and failing on dev)."""


def stuck_mask(train_loss: np.ndarray, label_entropy: np.ndarray) -> np.ndarray:
    """Float array: 1.0 stuck, 0.0 not, NaN where the loss or the label entropy is unknown."""
    loss = np.asarray(train_loss, dtype=np.float64)
    entropy = np.asarray(label_entropy, dtype=np.float64)
    known = np.isfinite(loss) & np.isfinite(entropy)
    out = np.full(loss.shape, np.nan)
    out[known] = (loss[known] >= STUCK_FRACTION * entropy[known]).astype(np.float64)
    return out


_STATUSES = ("finished", "diverged")


def failed_mask(values: np.ndarray, baselines: np.ndarray) -> np.ndarray:
    """Element-wise failed-run rule: ``value <= baseline`` (up to FAILED_TOL) or NaN.

    Args:
        values: per-run metric values (NaN for diverged runs).
        baselines: majority baselines, broadcastable to ``values``.

    Returns:
        Boolean array, True where the run failed.
    """
    v = np.asarray(values, dtype=np.float64)
    b = np.asarray(baselines, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isnan(v) | (v <= b + FAILED_TOL)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (e.g. a failure rate).

    Args:
        k: number of successes (failed runs), 0 <= k <= n.
        n: number of trials (runs).
        confidence: two-sided confidence level in (0, 1).

    Returns:
        ``(low, high)`` within [0, 1]; ``(nan, nan)`` when ``n == 0``.

    Raises:
        ValueError: if ``k`` is outside [0, n] or ``confidence`` outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (math.nan, math.nan)
    z = float(sps.norm.isf((1.0 - confidence) / 2.0))
    p, z2 = k / n, z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == n else min(1.0, center + half)
    return (low, high)


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` over runs.

    Args:
        values: per-run values; NaNs (diverged runs) are dropped first.
        statistic: function of a 1-D array returning a number; NumPy reductions that take
            ``axis`` (``np.mean``, ``np.median``, ``np.std``) are applied to all resamples at once.
        n_resamples: number of bootstrap resamples.
        confidence: two-sided confidence level in (0, 1).
        random_state: seed or generator; the same seed gives the same interval.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when no value is left.

    Raises:
        ValueError: if ``n_resamples < 1`` or ``confidence`` is outside (0, 1).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, v.size, size=(n_resamples, v.size))
    try:  # one vectorised call over all resamples (same draws as the loop below)
        boot = np.asarray(statistic(v[idx], axis=1), dtype=np.float64)
    except TypeError:
        boot = np.array([statistic(v[row]) for row in idx], dtype=np.float64)
    alpha = 1.0 - confidence
    low, high = np.percentile(boot, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return (float(low), float(high))


def expected_max(values: np.ndarray, n: int | np.ndarray) -> float | np.ndarray:
    """Expected maximum of ``n`` runs drawn iid from the runs seen (Dodge et al. 2019).

    With sorted values v_(1) <= ... <= v_(N):
    E[max_n] = sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n). n=1 gives the mean; n -> inf the max.

    Args:
        values: the N observed values (non-empty, finite; drop diverged runs first).
        n: number of runs drawn (with replacement), an int >= 1 or an array of them.

    Returns:
        A float for scalar ``n``, else an array shaped like ``n``.

    Raises:
        ValueError: if ``values`` is empty or non-finite, or any ``n < 1``.
    """
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError("values must be non-empty and finite")
    n_arr = np.asarray(n)
    if np.any(n_arr < 1):
        raise ValueError(f"n must be >= 1, got {n}")
    frac = np.arange(v.size + 1, dtype=np.float64) / v.size  # 0, 1/N, ..., 1
    cdf = frac[None, :] ** n_arr.astype(np.float64).reshape(-1, 1)
    result = np.diff(cdf, axis=1) @ v
    return float(result[0]) if n_arr.ndim == 0 else result.reshape(n_arr.shape)


MIN_GROUP_SIZE = 3
"""Fewest runs per group for Levene / Brown–Forsythe; fewer gives NaN."""


def variance_tests(groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Levene (center="mean") and Brown–Forsythe (center="median") tests of equal variance.

    Args:
        groups: group name -> values; NaNs (diverged runs) are dropped first.

    Returns:
        ``{"levene_stat", "levene_p", "bf_stat", "bf_p", "n_groups"}``. With fewer than
        2 groups, any group with fewer than ``MIN_GROUP_SIZE`` values, or all groups
        constant, the statistics and p-values are NaN (no exception). With two values a
        group's absolute deviations are equal, so the test degenerates (F = inf, p = 0).
    """
    arrays = [np.asarray(g, dtype=np.float64).ravel() for g in groups.values()]
    arrays = [a[~np.isnan(a)] for a in arrays]
    out = dict.fromkeys(["levene_stat", "levene_p", "bf_stat", "bf_p"], math.nan)
    out["n_groups"] = float(len(arrays))
    if len(arrays) < 2 or any(a.size < MIN_GROUP_SIZE for a in arrays):
        return out
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        lev = sps.levene(*arrays, center="mean")
        bf = sps.levene(*arrays, center="median")
    out.update(levene_stat=float(lev.statistic), levene_p=float(lev.pvalue),
               bf_stat=float(bf.statistic), bf_p=float(bf.pvalue))
    return out


def _checked(runs: pd.DataFrame, which: str) -> pd.DataFrame:
    """Validate the runs table; return a copy with ``value`` (diverged -> NaN) added."""
    if which not in ("final", "best"):
        raise ValueError(f"which must be 'final' or 'best', got {which!r}")
    needed = [*GROUP_KEYS, "seed", "metric", which, "baseline", "status"]
    missing = [c for c in needed if c not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks columns {missing}; needs {needed}")
    bad = sorted(set(runs["status"]) - set(_STATUSES))
    if bad:
        raise ValueError(f"unknown status {bad}; valid: {list(_STATUSES)}")
    dup = runs.duplicated([*GROUP_KEYS, "seed"], keep=False)
    if dup.any():
        rows = runs.loc[dup, [*GROUP_KEYS, "seed"]].drop_duplicates().to_dict("records")
        raise ValueError(f"duplicate runs (same task/model/recipe/grid/seed): {rows[:5]}")
    out = runs.copy()
    value = pd.to_numeric(out[which], errors="coerce").astype(np.float64)
    out["value"] = value.where(out["status"] == "finished", np.nan)
    return out


def _single(group: pd.DataFrame, column: str) -> object:
    """The one value of ``column`` within a group; ValueError if it varies."""
    uniq = pd.unique(group[column])
    if len(uniq) != 1:
        raise ValueError(f"column {column!r} varies within one group: {list(uniq)}")
    return uniq[0]


def _std(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1)) if v.size >= 2 else math.nan


def _describe(v: np.ndarray, suffix: str) -> dict[str, float]:
    """n, std, mean, median, max (and min) of non-NaN values, ×100."""
    if v.size == 0:
        stats = dict.fromkeys(["std", "mean", "median", "max", "min"], math.nan)
    else:
        stats = {"std": _std(v), "mean": float(np.mean(v)), "median": float(np.median(v)),
                 "max": float(np.max(v)), "min": float(np.min(v))}
    out = {f"n{suffix}": v.size} if suffix else {}
    out.update({f"{k}{suffix}": 100.0 * x for k, x in stats.items()})
    return out


SUMMARY_COLUMNS = [*GROUP_KEYS, "metric", "n", "n_failed", "failed_rate", "failed_ci_low",
                   "failed_ci_high", "std", "mean", "median", "max", "min", "mean_ci_low",
                   "mean_ci_high", "n_ok", "std_ok", "mean_ok", "median_ok", "max_ok",
                   "baseline", "n_stuck", "n_best_untrained"]
"""The columns of :func:`summarize`, in order."""


def summarize(runs: pd.DataFrame, which: str = "final", random_state: int = 0) -> pd.DataFrame:
    """One row of seed-sweep statistics per (task, model, recipe, grid).

    Args:
        runs: the runs table (module docstring); only the ``which`` column is needed.
        which: ``"final"`` (last checkpoint) or ``"best"`` (best dev checkpoint).
        random_state: seed of the bootstrap CI of the mean (same for every group).

    Returns:
        Columns ``task, model, recipe, grid, metric, n, n_failed, failed_rate,
        failed_ci_low, failed_ci_high`` (Wilson 95%), ``std, mean, median, max, min,
        mean_ci_low, mean_ci_high`` (percentile bootstrap 95%, over non-diverged runs),
        ``n_ok, std_ok, mean_ok, median_ok, max_ok`` (non-failed runs only),
        ``baseline``, and ``n_stuck``: runs whose last training loss stayed at the label
        prior (:func:`stuck_mask`; needs ``train_loss`` and ``label_entropy`` columns, as
        ``Study.runs_table()`` gives; NaN when unknown for every run of the group), and
        ``n_best_untrained``: runs whose best dev evaluation was the step-0 (untrained)
        model, as the paper's code allows (needs ``best_step``; NaN when unknown).
        Metric values ×100, rates in [0, 1]. Sorted by the group keys.

    Raises:
        ValueError: for missing columns, an unknown ``which`` or status, duplicate
            seeds, or a metric/baseline that varies within a group.
    """
    df = _checked(runs, which)
    rows = [_summary_row(keys, g, random_state) for keys, g in df.groupby(GROUP_KEYS, sort=True, dropna=False)]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _summary_row(keys: tuple, g: pd.DataFrame, random_state: int) -> dict[str, object]:
    """One group's row of :func:`summarize`."""
    baseline = float(_single(g, "baseline"))
    v = g["value"].to_numpy(dtype=np.float64)
    failed = failed_mask(v, baseline)
    n, n_failed = int(v.size), int(failed.sum())
    ci_f = wilson_interval(n_failed, n)
    finite = v[~np.isnan(v)]
    ci_m = bootstrap_ci(finite, random_state=random_state)
    ok = _describe(v[~failed], "_ok")
    ok.pop("min_ok")
    stuck = (stuck_mask(g["train_loss"], g["label_entropy"]) if {"train_loss", "label_entropy"} <= set(g)
             else np.full(n, np.nan))
    return {
        **dict(zip(GROUP_KEYS, keys)), "metric": _single(g, "metric"),
        "n": n, "n_failed": n_failed, "failed_rate": n_failed / n,
        "failed_ci_low": ci_f[0], "failed_ci_high": ci_f[1],
        **_describe(finite, ""),
        "mean_ci_low": 100.0 * ci_m[0], "mean_ci_high": 100.0 * ci_m[1],
        **ok, "baseline": 100.0 * baseline,
        "n_stuck": float(np.nansum(stuck)) if np.isfinite(stuck).any() else np.nan,
        "n_best_untrained": (float((g["best_step"] == 0).sum()) if "best_step" in g and g["best_step"].notna().any()
                             else np.nan),
    }


def compare_recipes(runs: pd.DataFrame, which: str = "final") -> pd.DataFrame:
    """Do the recipes differ in spread? Variance tests per (task, model, grid).

    Tests all recipes together (Levene, Brown–Forsythe), then the paper's comparison
    (§4(a)): the recipe with the smallest std against the one with the second smallest.
    Diverged runs are left out; failed-but-finished runs are kept (they are the spread).

    Args:
        runs: the runs table (module docstring).
        which: ``"final"`` or ``"best"``.

    Returns:
        Columns ``task, model, grid, recipes`` (comma-joined, sorted), ``levene_stat,
        levene_p, bf_stat, bf_p`` (all recipes), ``lowest_std_recipe,
        runner_up_recipe`` (None when fewer than 2 recipes have a std),
        ``pair_levene_p`` and ``pair_bf_p`` (that pair; NaN when undefined).

    Raises:
        ValueError: as :func:`summarize`.
    """
    df = _checked(runs, which)
    keys3 = ["task", "model", "grid"]
    rows = []
    for keys, g in df.groupby(keys3, sort=True, dropna=False):
        groups = {str(r): gr["value"].to_numpy(dtype=np.float64)
                  for r, gr in g.groupby("recipe", sort=True)}
        allt = variance_tests(groups)
        stds = {r: _std(v[~np.isnan(v)]) for r, v in groups.items()}
        ranked = [r for s, r in sorted((s, r) for r, s in stds.items() if not math.isnan(s))]
        low, runner = ranked[:2] if len(ranked) >= 2 else (None, None)
        pair = variance_tests({r: groups[r] for r in ranked[:2]}) if low is not None else {}
        rows.append({
            **dict(zip(keys3, keys)), "recipes": ",".join(groups),
            "levene_stat": allt["levene_stat"], "levene_p": allt["levene_p"],
            "bf_stat": allt["bf_stat"], "bf_p": allt["bf_p"],
            "lowest_std_recipe": low, "runner_up_recipe": runner,
            "pair_levene_p": pair.get("levene_p", math.nan),
            "pair_bf_p": pair.get("bf_p", math.nan),
        })
    columns = [*keys3, "recipes", "levene_stat", "levene_p", "bf_stat", "bf_p",
               "lowest_std_recipe", "runner_up_recipe", "pair_levene_p", "pair_bf_p"]
    return pd.DataFrame(rows, columns=columns)


def expected_max_curve(
    runs: pd.DataFrame, which: str = "final", max_n: int | None = None
) -> pd.DataFrame:
    """Expected best-of-n dev performance for n = 1..max_n, per (task, model, recipe, grid).

    The distribution is that of the non-diverged runs (failed-but-finished runs count);
    groups where every run diverged are left out.

    Args:
        runs: the runs table (module docstring).
        which: ``"final"`` or ``"best"``.
        max_n: largest n; None = the number of runs used in each group.

    Returns:
        Tidy columns ``task, model, recipe, grid, metric, n_runs`` (runs the
        distribution is built from), ``n_seeds`` (n), ``expected_max`` (×100).

    Raises:
        ValueError: as :func:`summarize`, or ``max_n < 1``.
    """
    if max_n is not None and max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    df = _checked(runs, which)
    parts = []
    for keys, g in df.groupby(GROUP_KEYS, sort=True, dropna=False):
        v = g["value"].to_numpy(dtype=np.float64)
        v = v[~np.isnan(v)]
        if v.size == 0:
            continue
        ns = np.arange(1, (max_n or v.size) + 1)
        part = pd.DataFrame({"n_seeds": ns, "expected_max": 100.0 * expected_max(v, ns)})
        for col, val in zip(GROUP_KEYS, keys):
            part[col] = val
        part["metric"] = _single(g, "metric")
        part["n_runs"] = v.size
        parts.append(part)
    columns = [*GROUP_KEYS, "metric", "n_runs", "n_seeds", "expected_max"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]
