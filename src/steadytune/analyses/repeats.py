"""Seed units and repeats: what ``n`` counts, and the spread among repeats (the nondeterminism floor).

A **seed unit** is one draw of a run's random streams: the run ``seed`` with the seed each
stream comes from (``head_seed``, ``data_seed``, ``dropout_seed``: the run seed unless the
config sets it; :data:`UNIT_COLUMNS`). Runs of one statistics group with the same unit
differ only by their ``repeat`` index (``sweep --repeats N``): the same computation run
again. On a deterministic device they are bit-identical; on a GPU their differences are
the nondeterminism floor, the spread no choice of seed can remove.

So the statistics count units, not runs: :func:`first_repeats` keeps one run per unit
(the lowest repeat index, so a study with repeats gives the statistics of the same study
without them), and :func:`repeat_spread` measures the spread among repeats of a unit,
to be set beside the spread among seeds.

Pure functions over the runs table (:mod:`steadytune.analyses.stats`); tables without
the unit columns (hand-made ones) are read as one unit per seed and repeat 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["UNIT_COLUMNS", "first_repeats", "repeat_spread", "with_units"]

UNIT_COLUMNS = ["seed", "head_seed", "data_seed", "dropout_seed"]
"""The columns that identify a seed unit within a group."""


def with_units(runs: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``runs`` with every unit column and ``repeat``, filled where missing.

    Args:
        runs: a runs table with a ``seed`` column.

    Returns:
        The table with ``head_seed``, ``data_seed``, ``dropout_seed`` (missing: the run
        seed, as :func:`~steadytune.training.results.derive_seeds` derives the streams)
        and ``repeat`` (missing: 0).
    """
    out = runs.copy()
    for col in UNIT_COLUMNS[1:]:
        if col not in out.columns:
            out[col] = out["seed"]
    if "repeat" not in out.columns:
        out["repeat"] = 0
    return out


def first_repeats(runs: pd.DataFrame, group_keys: list[str]) -> pd.DataFrame:
    """One run per group and seed unit: the one with the lowest ``repeat`` index.

    Args:
        runs: a runs table with ``group_keys``, :data:`UNIT_COLUMNS` and ``repeat``
            (see :func:`with_units`).
        group_keys: the columns that define a statistics group.

    Returns:
        The kept rows, in their original order.
    """
    if runs.empty:
        return runs
    lowest = runs.groupby([*group_keys, *UNIT_COLUMNS], dropna=False)["repeat"].transform("min")
    return runs[runs["repeat"] == lowest]


def repeat_spread(values: np.ndarray, units: pd.DataFrame) -> dict[str, float]:
    """How far repeats of the same seed unit differ.

    Args:
        values: per-run values (NaN for diverged runs, which are left out).
        units: the runs' :data:`UNIT_COLUMNS`, one row per value.

    Returns:
        ``n_repeated``: units with at least two finite values; ``repeat_std``: the pooled
        within-unit sample standard deviation, sqrt(sum_u sum_r (x_ur - mean_u)^2 /
        sum_u (n_u - 1)) over those units (NaN when there are none); ``repeat_max_diff``:
        the largest max - min within one unit (NaN when none). Exactly 0 when every
        repeat reproduced its unit bit for bit.
    """
    v = np.asarray(values, dtype=np.float64)
    frame = units[UNIT_COLUMNS].reset_index(drop=True).assign(value=v)
    frame = frame[np.isfinite(frame["value"])]
    by_unit = frame.groupby(UNIT_COLUMNS, dropna=False)["value"]
    stats = pd.DataFrame({"n": by_unit.size(), "ss": by_unit.apply(_sum_of_squares),
                          "range": by_unit.max() - by_unit.min()})
    stats = stats[stats["n"] >= 2]
    if stats.empty:
        return {"n_repeated": 0, "repeat_std": math.nan, "repeat_max_diff": math.nan}
    pooled = math.sqrt(stats["ss"].sum() / (stats["n"] - 1).sum())
    return {"n_repeated": int(len(stats)), "repeat_std": pooled, "repeat_max_diff": float(stats["range"].max())}


def _sum_of_squares(x: pd.Series) -> float:
    """Sum of squared deviations from the mean, of differences to the first value: exactly 0
    for equal values (a mean of equal floats need not equal them)."""
    d = x.to_numpy(dtype=np.float64) - float(x.iloc[0])
    return float(((d - d.mean()) ** 2).sum())
