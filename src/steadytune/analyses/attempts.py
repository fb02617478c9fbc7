"""Seeds with several attempts: the run each seed keeps, what its attempts cost, guarded vs unguarded.

Under ``guard=restart`` / ``switch`` a seed the guard stopped is trained again; every
attempt is a run of its own in the study (``attempt`` column of
:meth:`~steadytune.store.study.Study.runs_table`). Statistics that cannot be fooled count
**seeds**, not attempts: each seed is represented by its last attempt (its *kept* run),
which is the one that finished, or the last one stopped when the attempts ran out; and
the compute of *every* attempt is charged to the seeds that succeeded.

Pure functions over the tidy runs table (the :mod:`steadytune.analyses.stats` format).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from steadytune.analyses.repeats import UNIT_COLUMNS, with_units

SEED_KEYS = ["task", "model", "recipe", "grid", *UNIT_COLUMNS, "repeat"]
"""What one seed's attempts share: its statistics group, its seed unit (the run seed and the
stream seeds, :mod:`steadytune.analyses.repeats`) and its repeat index."""
COMPARE_COLUMNS = ["task", "model", "recipe", "grid", "guard", "metric", "n", "n_failed", "n_stuck", "n_stopped",
                   "attempts_per_seed", "mean_ok", "std_ok", "mean", "std", "steps_per_seed", "steps_per_success",
                   "wall_per_success"]
"""The columns of :func:`compare_guards`."""


def kept_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per seed (:data:`SEED_KEYS`): its last attempt, with the seed's costs.

    Args:
        runs: the runs table; without an ``attempt`` column every row is attempt 1. A table
            this function made (it has ``attempts``) is returned as it is.

    Returns:
        The kept rows, in the table's order, with ``attempts`` (how many attempts the seed
        had), ``seed_steps`` and ``seed_wall`` (updates and seconds of all its attempts;
        NaN when ``steps`` / ``wall_seconds`` are unknown) and ``stopped_attempts``.
    """
    if "attempts" in runs.columns:
        return runs
    df = with_units(runs)
    if "attempt" not in df.columns:
        df["attempt"] = 1
    keys = [k for k in SEED_KEYS if k in df.columns]
    by_seed = df.groupby(keys, sort=False, dropna=False)
    steps = pd.to_numeric(df["steps"], errors="coerce") if "steps" in df.columns else pd.Series(np.nan, df.index)
    wall = pd.to_numeric(df.get("wall_seconds", pd.Series(np.nan, df.index)), errors="coerce")
    df["attempts"] = by_seed["attempt"].transform("size")
    df["seed_steps"] = steps.groupby([df[k] for k in keys], dropna=False).transform(lambda s: s.sum(min_count=1))
    df["seed_wall"] = wall.groupby([df[k] for k in keys], dropna=False).transform(lambda s: s.sum(min_count=1))
    df["stopped_attempts"] = (df["status"] == "stopped").groupby([df[k] for k in keys], dropna=False).transform("sum")
    last = by_seed["attempt"].transform("max")
    return df[df["attempt"] == last]  # two rows of one seed and attempt stay: stats calls them duplicates


def seed_costs(kept: pd.DataFrame, failed: np.ndarray) -> dict[str, float]:
    """What one group's seeds cost: attempts per seed, steps per seed and per successful seed.

    Args:
        kept: the group's kept runs (:func:`kept_runs`; plain runs count as one attempt).
        failed: whether each kept run failed (aligned with ``kept``).

    Returns:
        ``n_stopped`` (kept runs the guard stopped), ``attempts_per_seed``, ``steps_per_seed``,
        ``steps_per_success`` and ``wall_per_success``: all attempts' updates / seconds over
        the seeds that did not fail (inf when none did; NaN when unknown).
    """
    n = len(kept)
    attempts = kept["attempts"] if "attempts" in kept else pd.Series(1, index=kept.index)
    steps = _total(kept, "seed_steps", "steps")
    wall = _total(kept, "seed_wall", "wall_seconds")
    ok = int(n - np.asarray(failed, dtype=bool).sum())
    return {"n_stopped": int((kept["status"] == "stopped").sum()),
            "attempts_per_seed": float(attempts.mean()) if n else math.nan,
            "steps_per_seed": steps / n if n else math.nan,
            "steps_per_success": _per(steps, ok), "wall_per_success": _per(wall, ok)}


def _total(kept: pd.DataFrame, seed_col: str, run_col: str) -> float:
    """The sum of ``seed_col`` (or, for a table without attempts, ``run_col``); NaN if any is unknown."""
    col = seed_col if seed_col in kept else run_col
    if col not in kept:
        return math.nan
    values = pd.to_numeric(kept[col], errors="coerce")
    return float(values.sum()) if values.notna().all() else math.nan


def _per(total: float, successes: int) -> float:
    if math.isnan(total):
        return math.nan
    return total / successes if successes else math.inf


def compare_guards(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Guarded against unguarded recipes, one row per group: failures, kept runs, compute.

    Args:
        summary: :func:`steadytune.analyses.stats.summarize` of ``runs``.
        runs: the runs table (gives each group's ``guard`` policy; ``flag`` when absent).

    Returns:
        :data:`COMPARE_COLUMNS`: ``n`` seeds, ``n_failed`` and ``n_stuck`` (stopped kept runs
        included), ``n_stopped``, ``attempts_per_seed``, mean/std of the non-failed kept runs
        (``mean_ok``, ``std_ok``) and of all kept runs (×100), ``steps_per_seed``,
        ``steps_per_success`` and ``wall_per_success``; sorted by task, model, then steps
        per successful seed.
    """
    keys = ["task", "model", "recipe", "grid"]
    guards = runs.assign(guard=runs["guard"] if "guard" in runs else "flag")
    policy = guards.groupby(keys, dropna=False)["guard"].agg(lambda g: ",".join(sorted(set(map(str, g)))))
    out = summary.merge(policy.reset_index(), on=keys, how="left")
    out["guard"] = out["guard"].fillna("flag")
    out = out.sort_values(["task", "model", "steps_per_success"], kind="stable", ignore_index=True)
    return out[COMPARE_COLUMNS]


__all__ = ["COMPARE_COLUMNS", "SEED_KEYS", "compare_guards", "kept_runs", "seed_costs"]
