"""Aggregate statistics over seed sweeps: failure rates, spread, expected max, variance tests.

Pure functions over tidy tables (rliable / scikit-learn conventions: explicit
``random_state``, nothing plotted here). The input table has one row per run with columns

    task, model, recipe, grid, seed, metric, final, best, baseline, status

and optionally ``head_seed, data_seed, dropout_seed, repeat`` (``Study.runs_table()`` has
them; :mod:`steadytune.analyses.repeats`).
``final`` / ``best`` are the primary ``metric`` at the last / best-dev checkpoint and
``baseline`` the majority baseline, all in [0, 1] units (:mod:`steadytune.metrics`);
``status`` is ``"finished"``, ``"diverged"`` or ``"stopped"``.

Conventions, applied everywhere in this module:

* A **diverged** or **stopped** (by the doomed-run guard) run counts as failed and its
  value (``final`` *or* ``best``) is treated as NaN: it is counted in ``n`` and
  ``n_failed`` but left out of mean/std/median/max, of the variance tests and of the
  expected-max distribution. A stopped run also counts as stuck, never as a success.
* A seed the guard restarted has several attempts (an ``attempt`` column); every
  function here counts the seed once, by its last attempt, and charges the compute of
  all its attempts to the group (:mod:`steadytune.analyses.attempts`).
* A **failed** run is one with ``value <= baseline`` or a NaN value
  (:func:`steadytune.metrics.is_failed`). Failed-but-finished runs stay in the plain
  statistics (as in the paper's Table 1); the ``*_ok`` columns leave them out.
* ``std`` is the sample standard deviation (ddof=1; NaN for fewer than 2 values). The
  paper does not say which it used; for 25 seeds the two differ by a factor of 1.02.
* Metric values in output tables are ×100, as the paper prints them; rates are fractions.
* ``n`` counts seed units (a run seed with its stream seeds), not runs: of the repeats of
  a unit only the lowest ``repeat`` enters the statistics, and :func:`summarize` reports
  the spread among repeats beside the spread among seeds
  (:mod:`steadytune.analyses.repeats`).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from steadytune.analyses.attempts import kept_runs, seed_costs
from steadytune.analyses.intervals import bootstrap_ci, expected_max, wilson_interval
from steadytune.analyses.repeats import (
    UNIT_COLUMNS,
    first_repeats,
    repeat_spread,
    with_units,
)
from steadytune.training.metrics import FAILED_TOL

__all__ = ["checked_runs", "compare_recipes", "expected_max_curve", "failed_mask", "stuck_mask", "summarize", "variance_tests",
           "STUCK_FRACTION"]

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


_STATUSES = ("finished", "diverged", "stopped")


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


def _checked(runs: pd.DataFrame, which: str, repeats: bool = False) -> pd.DataFrame:
    """Validate the runs table; return a copy with the unit columns and ``value`` (diverged ->
    NaN) added, keeping only the first repeat of each seed unit unless ``repeats``."""
    if which not in ("final", "best"):
        raise ValueError(f"which must be 'final' or 'best', got {which!r}")
    needed = [*GROUP_KEYS, "seed", "metric", which, "baseline", "status"]
    missing = [c for c in needed if c not in runs.columns]
    if missing:
        raise ValueError(f"runs table lacks columns {missing}; needs {needed}")
    bad = sorted(set(runs["status"]) - set(_STATUSES))
    if bad:
        raise ValueError(f"unknown status {bad}; valid: {list(_STATUSES)}")
    out = with_units(runs)
    if "attempt" in out.columns:
        out = kept_runs(out)
    dup = out.duplicated([*GROUP_KEYS, *UNIT_COLUMNS, "repeat"], keep=False)
    if dup.any():
        rows = out.loc[dup, [*GROUP_KEYS, "seed"]].drop_duplicates().to_dict("records")
        raise ValueError(f"duplicate runs (same task/model/recipe/grid/seed, stream seeds and repeat): {rows[:5]}")
    value = pd.to_numeric(out[which], errors="coerce").astype(np.float64)
    out["value"] = value.where(out["status"] == "finished", np.nan)
    return out if repeats else first_repeats(out, GROUP_KEYS)


def checked_runs(runs: pd.DataFrame, which: str = "final", repeats: bool = False) -> pd.DataFrame:
    """The runs table checked as :func:`summarize` checks it, with the seed-unit columns and
    ``value`` (the ``which`` metric, NaN for diverged runs), for other aggregates to group.

    Args:
        runs: the runs table (module docstring).
        which: ``"final"`` or ``"best"``.
        repeats: keep every repeat of a seed unit (default: only the first, as the statistics count).

    Raises:
        ValueError: as :func:`summarize`.
    """
    return _checked(runs, which, repeats)


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
                   "baseline", "n_stuck", "n_best_untrained", "n_runs", "n_repeated", "repeat_std",
                   "repeat_max_diff", "n_stopped", "attempts_per_seed", "steps_per_seed", "steps_per_success",
                   "wall_per_success"]
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
        model, as the paper's code allows (needs ``best_step``; NaN when unknown);
        then the nondeterminism floor (:func:`~steadytune.analyses.repeats.repeat_spread`):
        ``n_runs`` (runs, repeats included; ``n`` counts seed units), ``n_repeated``
        (units run more than once), ``repeat_std`` (pooled std among repeats of a unit,
        NaN without repeats) and ``repeat_max_diff`` (largest difference within a unit).
        ``n_stopped, attempts_per_seed, steps_per_seed, steps_per_success,
        wall_per_success`` (:func:`steadytune.analyses.attempts.seed_costs`). Stopped runs
        count as failed and stuck; a seed with several attempts counts once, by its last.
        Metric values ×100, rates in [0, 1]. Sorted by the group keys.

    Raises:
        ValueError: for missing columns, an unknown ``which`` or status, duplicate
            seeds, or a metric/baseline that varies within a group.
    """
    df = _checked(runs, which, repeats=True)
    rows = [{**_summary_row(keys, first_repeats(g, GROUP_KEYS), random_state), **_floor(g)}
            for keys, g in df.groupby(GROUP_KEYS, sort=True, dropna=False)]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _floor(g: pd.DataFrame) -> dict[str, float]:
    """The spread among repeats of one group (×100), and its number of runs."""
    spread = repeat_spread(g["value"].to_numpy(dtype=np.float64), g)
    return {"n_runs": len(g), "n_repeated": spread["n_repeated"], "repeat_std": 100.0 * spread["repeat_std"],
            "repeat_max_diff": 100.0 * spread["repeat_max_diff"]}


def _summary_row(keys: tuple, g: pd.DataFrame, random_state: int) -> dict[str, object]:
    """One group's row of :func:`summarize` (one run per seed unit)."""
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
    stuck[(g["status"] == "stopped").to_numpy()] = 1.0  # the guard stopped it at the prior
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
        **seed_costs(g, failed),
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
