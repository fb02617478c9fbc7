"""Intervals and estimators over one set of runs: Wilson, percentile bootstrap, expected max.

Pure functions over 1-D arrays of per-run values (rliable / scikit-learn conventions:
explicit ``random_state``, nothing plotted here). :mod:`steadytune.analyses.stats` applies
them per statistics group; :mod:`steadytune.analyses.planning` asks how they narrow with
the number of seeds.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import stats as sps

__all__ = ["bootstrap_ci", "expected_max", "wilson_interval"]


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
