"""Which seed stream causes the spread: variance components of a factorial seed study.

In a factorial study the head-initialisation, data-order and dropout seeds are crossed
(``sweep --seeds 1 --grid head_seed=1-5 --grid data_seed=1-5``: every head with every
data order). :func:`variance_components` splits the variance of the score over such runs
into a part per stream, their interactions and a residual, per (task, model, recipe,
grid), with the classical random-effects ANOVA (method of moments, as in Searle, Casella
& McCulloch, *Variance Components*, ch. 4):

* the **factors** are the streams whose seed varies in the group, read from the runs
  table's ``head_seed, data_seed, dropout_seed`` (the seed each stream came from). Two
  streams whose seeds always vary together (both follow the run seed) are one factor,
  named ``data_order+dropout``: their effects cannot be told apart;
* the design must be **balanced and complete**: every combination of the factors' seeds
  (a cell) has the same number of finished runs; runs of one cell (repeats, or run seeds
  whose streams are all set) are replicates;
* each effect's mean square MS_S has expectation sigma2_e + sum over effects T that
  contain S of c_T sigma2_T, with c_T = r x (the product of the numbers of levels of the
  factors not in T) and r the replicates per cell. Solving from the highest interaction
  down gives unbiased estimates; a negative estimate is reported as 0 (its share of the
  total as well);
* with one run per cell the highest interaction cannot be told from run-to-run noise:
  together they are the ``residual``. With r >= 2 replicates the within-cell variance is
  its own component, ``nondeterminism`` (exactly 0 on a CPU; :mod:`steadytune.analyses.repeats`).

Intervals are percentile bootstrap intervals that resample the seeds of each factor
independently, whole cells kept (the "pigeonhole" bootstrap of crossed designs). With five
levels per factor they are wide, and they are approximate: how often they cover the truth
is measured by simulation in ``tests/test_variance.py`` and docs/sweeps.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from steadytune.analyses.stats import GROUP_KEYS, checked_runs

__all__ = ["COMPONENT_COLUMNS", "STREAM_FACTORS", "FactorialDesign", "component_estimates", "design_components",
           "factorial_design", "mean_squares", "variance_components"]

STREAM_FACTORS = {"head_seed": "head_init", "data_seed": "data_order", "dropout_seed": "dropout"}
"""Runs-table column of a stream's seed -> the factor's name."""
COMPONENT_COLUMNS = [*GROUP_KEYS, "metric", "design", "component", "df", "mean_square", "variance", "std", "share",
                     "variance_ci_low", "variance_ci_high", "share_ci_low", "share_ci_high"]
"""The columns of :func:`variance_components`."""


@dataclass(frozen=True)
class FactorialDesign:
    """A balanced, complete factorial group: its factors and the scores as an array."""

    factors: tuple[str, ...]
    """Factor names, e.g. ``("head_init", "data_order")``."""
    levels: tuple[tuple[int, ...], ...]
    """The seeds of each factor, sorted."""
    y: np.ndarray
    """Scores, shape ``(levels of factor 1, ..., levels of factor k, replicates)``."""

    def describe(self) -> str:
        """``head_init 5 × data_order 5, 1 run per cell``."""
        r = self.y.shape[-1]
        return " × ".join(f"{f} {len(lv)}" for f, lv in zip(self.factors, self.levels)) + \
            f", {r} run{'s' if r > 1 else ''} per cell"


def factorial_design(group: pd.DataFrame, label: str = "the group") -> FactorialDesign:
    """The factorial design of one group's runs (``value`` column: the score, NaN if diverged).

    Args:
        group: the runs of one statistics group, every repeat (see
            :func:`~steadytune.analyses.stats.checked_runs` with ``repeats=True``).
        label: how error messages name the group.

    Returns:
        The :class:`FactorialDesign`.

    Raises:
        ValueError: the group is not factorial: no stream varies apart from the others,
            a single factor without replicates, a missing cell, unequal replicates, or a
            diverged run.
    """
    factors = _factors(group)
    if not factors or (len(factors) == 1 and group.groupby(factors[0][1]).size().min() < 2):
        raise ValueError(f"{label}: not a factorial study: the head-init, data-order and dropout seeds do not vary "
                         "apart (each run's streams follow its seed); sweep crossed stream seeds, e.g. --seeds 1 "
                         "--grid head_seed=1-5 --grid data_seed=1-5")
    names, columns = [f for f, _ in factors], [c for _, c in factors]
    levels = [tuple(sorted(int(v) for v in pd.unique(group[c]))) for c in columns]
    cells = group.groupby(columns, sort=True)
    counts = cells.size()
    expected = math.prod(len(lv) for lv in levels)
    if len(counts) < expected:
        present = set(counts.index if len(columns) > 1 else [(i,) for i in counts.index])
        missing = next(c for c in itertools.product(*levels) if c not in present)
        raise ValueError(f"{label}: not a factorial study: {len(counts)} of the {expected} {' × '.join(names)} "
                         f"cells have runs (none for {_cell(columns, missing)})")
    if counts.min() != counts.max():
        raise ValueError(f"{label}: not a balanced factorial study: cells have {counts.min()} to {counts.max()} runs; "
                         "each needs the same number")
    if group["value"].isna().any():
        bad = group[group["value"].isna()].iloc[0]
        raise ValueError(f"{label}: the run with {_cell(columns, tuple(bad[c] for c in columns))} diverged; the "
                         "decomposition needs a finished run in every cell")
    ordered = group.sort_values([*columns, "seed", "repeat"], kind="stable")
    y = ordered["value"].to_numpy(dtype=np.float64).reshape(*(len(lv) for lv in levels), int(counts.max()))
    return FactorialDesign(tuple(names), tuple(levels), y)


def _cell(columns: list[str], values: tuple) -> str:
    return ", ".join(f"{c}={int(v)}" for c, v in zip(columns, values))


def _factors(group: pd.DataFrame) -> list[tuple[str, str]]:
    """``(name, column)`` of each stream that varies; streams that always vary together are one."""
    varying = [c for c in STREAM_FACTORS if group[c].nunique() > 1]
    merged: list[list[str]] = []
    for col in varying:
        twin = next((m for m in merged if _aliased(group, m[0], col)), None)
        if twin is None:
            merged.append([col])
        else:
            twin.append(col)
    return [("+".join(STREAM_FACTORS[c] for c in m), m[0]) for m in merged]


def _aliased(group: pd.DataFrame, a: str, b: str) -> bool:
    return bool(group.groupby(a)[b].nunique().max() == 1 and group.groupby(b)[a].nunique().max() == 1)


def _subsets(k: int) -> list[tuple[int, ...]]:
    return [s for size in range(k + 1) for s in itertools.combinations(range(k), size)]


def mean_squares(y: np.ndarray) -> tuple[dict[tuple[int, ...], np.ndarray], dict[tuple[int, ...], int]]:
    """Mean squares and degrees of freedom of every effect of a balanced factorial array.

    Args:
        y: scores, shape ``(batch, n_1, ..., n_k, r)`` (a batch of designs, e.g. bootstrap resamples).

    Returns:
        ``(ms, df)``: per effect, keyed by the tuple of its factors' indices (``(0,)`` the
        first factor, ``(0, 1)`` the interaction of the first two), an array of ``batch``
        mean squares, and its degrees of freedom; the within-cell (replicate) mean square
        is under the key ``(-1,)`` (NaN when r = 1).
    """
    k, sizes, r = y.ndim - 2, y.shape[1:-1], y.shape[-1]
    sum_axes = tuple(range(1, y.ndim))
    margins = {s: y.mean(axis=tuple(1 + f for f in range(k) if f not in s) + (k + 1,), keepdims=True)
               for s in _subsets(k)}
    ms: dict[tuple[int, ...], np.ndarray] = {}
    df: dict[tuple[int, ...], int] = {}
    for s in _subsets(k)[1:]:
        effect = sum((-1) ** (len(s) - len(t)) * margins[t] for t in _subsets(k) if set(t) <= set(s))
        copies = r * math.prod(n for f, n in enumerate(sizes) if f not in s)
        df[s] = math.prod(sizes[f] - 1 for f in s)
        ms[s] = copies * np.broadcast_to(effect ** 2, (y.shape[0], *effect.shape[1:])).sum(axis=sum_axes) / df[s]
    df[(-1,)] = math.prod(sizes) * (r - 1)
    d = y - y[..., :1]  # differences to the first replicate: exactly 0 where replicates are equal
    within = ((d - d.mean(axis=-1, keepdims=True)) ** 2).sum(axis=sum_axes)
    ms[(-1,)] = within / df[(-1,)] if r > 1 else np.full(y.shape[0], np.nan)
    return ms, df


def component_estimates(y: np.ndarray) -> tuple[dict[tuple[int, ...], np.ndarray], dict, dict]:
    """Unbiased (unclipped, so possibly negative) variance components of balanced factorial arrays.

    Args:
        y: scores, shape ``(batch, n_1, ..., n_k, r)``.

    Returns:
        ``(estimates, ms, df)``: per effect (keys as :func:`mean_squares`) an array of
        ``batch`` estimates; ``(-1,)`` is the residual (r = 1: the highest interaction
        and the noise together, with that interaction's mean square and df) or, for
        r >= 2, the within-cell variance. ``ms`` and ``df`` as :func:`mean_squares`.
    """
    ms, df = mean_squares(y)
    k, sizes, r = y.ndim - 2, y.shape[1:-1], y.shape[-1]
    full = tuple(range(k))
    effects = [s for s in _subsets(k)[1:] if r > 1 or s != full]
    noise = ms[(-1,)] if r > 1 else ms[full]
    est: dict[tuple[int, ...], np.ndarray] = {(-1,): noise}
    for s in sorted(effects, key=len, reverse=True):
        above = sum((r * math.prod(n for f, n in enumerate(sizes) if f not in t)) * est[t]
                    for t in effects if set(t) > set(s))
        est[s] = (ms[s] - noise - above) / (r * math.prod(n for f, n in enumerate(sizes) if f not in s))
    if r == 1:
        ms[(-1,)], df[(-1,)] = ms[full], df[full]
    return est, ms, df


def _bootstrap(design: FactorialDesign, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Resampled designs, shape ``(n_resamples, *design.y.shape)``: each factor's seeds drawn with replacement."""
    y, k = design.y, design.y.ndim - 1
    index = []
    for f in range(k):
        shape = [n_resamples] + [1] * (k + 1)
        shape[1 + f] = y.shape[f]
        index.append(rng.integers(0, y.shape[f], size=(n_resamples, y.shape[f])).reshape(shape))
    index.append(np.arange(y.shape[-1]).reshape([1] * (k + 1) + [y.shape[-1]]))
    return y[tuple(index)]


def variance_components(runs: pd.DataFrame, which: str = "final", n_resamples: int = 1000,
                        confidence: float = 0.95, random_state: int = 0) -> pd.DataFrame:
    """Variance components of the score per (task, model, recipe, grid) of a factorial study.

    Args:
        runs: the runs table (:mod:`steadytune.analyses.stats`) with ``head_seed,
            data_seed, dropout_seed`` and ``repeat`` (``Study.runs_table()`` has them).
        which: ``"final"`` or ``"best"``.
        n_resamples: bootstrap resamples (>= 1) of the intervals.
        confidence: two-sided level of the intervals, in (0, 1).
        random_state: seed of the bootstrap (the same for every group).

    Returns:
        A tidy table, :data:`COMPONENT_COLUMNS`: one row per group and component (each
        factor, each interaction, then ``residual`` or ``nondeterminism``, then ``total``),
        with the design, the effect's ``df`` and ``mean_square``, the estimated
        ``variance`` (×100², negative estimates as 0), its ``std`` (×100), its ``share`` of
        the total, and bootstrap intervals of variance and share.

    Raises:
        ValueError: as :func:`~steadytune.analyses.stats.summarize`, ``n_resamples < 1``,
            ``confidence`` outside (0, 1), or a group that is not a balanced, complete
            factorial design (:func:`factorial_design`; the message names the group).
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    parts = []
    for keys, g in checked_runs(runs, which, repeats=True).groupby(GROUP_KEYS, sort=True, dropna=False):
        about = dict(zip(GROUP_KEYS, keys))
        label = "/".join([about["task"], Path(str(about["model"])).name, about["recipe"]]) + \
            (f" [{about['grid']}]" if about["grid"] else "")
        design = factorial_design(g, label)
        rows = design_components(design, n_resamples, confidence, random_state)
        parts.append(rows.assign(**about, metric=g["metric"].iloc[0], design=design.describe()))
    if not parts:
        return pd.DataFrame(columns=COMPONENT_COLUMNS)
    return pd.concat(parts, ignore_index=True)[COMPONENT_COLUMNS]


def design_components(design: FactorialDesign, n_resamples: int = 1000, confidence: float = 0.95,
                      random_state: int | np.random.Generator = 0) -> pd.DataFrame:
    """The components of one design (values ×100) with percentile bootstrap intervals.

    Args:
        design: a :class:`FactorialDesign` (scores in [0, 1] units).
        n_resamples, confidence: of the intervals.
        random_state: seed or generator of the bootstrap.

    Returns:
        The component columns of :func:`variance_components` (``component`` to
        ``share_ci_high``), one row per component and ``total``.
    """
    est, ms, df = component_estimates(100.0 * design.y[None])
    boot, _, _ = component_estimates(100.0 * _bootstrap(design, n_resamples, np.random.default_rng(random_state)))
    r = design.y.shape[-1]
    names = {s: "×".join(design.factors[f] for f in s) for s in est if s != (-1,)}
    names[(-1,)] = "nondeterminism" if r > 1 else "residual"
    order = sorted(names, key=lambda s: (s == (-1,), len(s), s))
    point = {s: max(float(est[s][0]), 0.0) for s in order}
    draws = {s: np.clip(boot[s], 0.0, None) for s in order}
    total, total_draws = sum(point.values()), sum(draws.values())
    tail = 100 * (1 - confidence) / 2
    rows = []
    for s in [*order, "total"]:
        value, sample = (total, total_draws) if s == "total" else (point[s], draws[s])
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = sample / total_draws
        rows.append({"component": "total" if s == "total" else names[s],
                     "df": np.nan if s == "total" else df[s], "mean_square": np.nan if s == "total" else float(ms[s][0]),
                     "variance": value, "std": math.sqrt(value), "share": value / total if total > 0 else math.nan,
                     "variance_ci_low": float(np.percentile(sample, tail)),
                     "variance_ci_high": float(np.percentile(sample, 100 - tail)),
                     "share_ci_low": float(np.nanpercentile(shares, tail)) if np.isfinite(shares).any() else math.nan,
                     "share_ci_high": float(np.nanpercentile(shares, 100 - tail)) if np.isfinite(shares).any()
                     else math.nan})
    return pd.DataFrame(rows)
