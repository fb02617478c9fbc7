"""Seeds per recipe to tell two recipes apart: power and sample size, per quantity.

* **Failure rate** (two proportions): the normal approximation on Cohen's arcsine effect
  size h = 2 asin(sqrt(p_a)) - 2 asin(sqrt(p_b)) (what statsmodels'
  ``NormalIndPower`` solves), and, because fine-tuning pilots often show rates of 0 or
  a few runs where that approximation is poor, the exact power of Fisher's exact test,
  summed over every outcome of the two binomials (:func:`fisher_power`).
* **Mean score**: Welch's t-test with equal seeds per recipe, power from the noncentral
  t distribution with the Welch–Satterthwaite degrees of freedom (for equal stds this is
  the pooled t-test of statsmodels' ``TTestIndPower``).
* **Spread** (std): no closed form: the power of the Brown–Forsythe test (Levene's test
  about the medians, as :func:`~steadytune.analyses.stats.variance_tests`) by simulation,
  drawing each recipe's runs from its pilot runs with replacement, or from normal
  distributions with stated stds.

Every function takes ``alpha`` and ``power`` in (0, 1) and returns the smallest number of
seeds *per recipe*, or None when the two are equal (no number of seeds tells them apart)
or when more than ``max_n`` would be needed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq
from scipy.special import gammaln

__all__ = ["ALTERNATIVES", "MIN_SEEDS", "bf_power", "brown_forsythe_p", "check_levels", "fisher_power",
           "fisher_p_values", "normal_power", "rate_power", "seeds_for_means", "seeds_for_rates",
           "seeds_for_rates_exact", "seeds_for_spread", "welch_power"]

ALTERNATIVES = ("two-sided", "larger")
"""``two-sided``: A and B differ; ``larger``: A's value is larger than B's (one-sided)."""
MIN_SEEDS = 2
"""The fewest seeds per recipe a test can use."""


def check_levels(alpha: float, power: float, alternative: str = "two-sided") -> None:
    """Raise ValueError unless ``alpha`` and ``power`` are in (0, 1) and ``alternative`` is known."""
    for name, value in (("alpha", alpha), ("power", power)):
        if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
            raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {', '.join(ALTERNATIVES)}, got {alternative!r}")


def _check_rate(name: str, rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be a failure rate in [0, 1], got {rate!r}")


LARGE_DF = 1000
"""Above these degrees of freedom :func:`welch_power` uses the normal distribution."""


def normal_power(shift: float, alpha: float, alternative: str) -> float:
    """Power of a z-test whose statistic is N(shift, 1): one tail, or both when two-sided."""
    if alternative == "larger":
        return float(sps.norm.sf(sps.norm.isf(alpha) - shift))
    z = sps.norm.isf(alpha / 2)
    return float(sps.norm.sf(z - shift) + sps.norm.cdf(-z - shift))


def rate_power(rate_a: float, rate_b: float, n: float, alpha: float = 0.05, alternative: str = "two-sided") -> float:
    """Power of the normal test on the arcsine effect size with ``n`` seeds per recipe.

    ``NormalIndPower().power(h, n, alpha, ratio=1)`` of statsmodels: Phi(h sqrt(n/2) - z) (+ the
    other tail when two-sided), h = 2 asin(sqrt(rate_a)) - 2 asin(sqrt(rate_b)).
    """
    h = 2 * math.asin(math.sqrt(rate_a)) - 2 * math.asin(math.sqrt(rate_b))
    return normal_power(h * math.sqrt(n / 2.0), alpha, alternative)


def seeds_for_rates(rate_a: float, rate_b: float, alpha: float = 0.05, power: float = 0.8,
                    alternative: str = "two-sided", max_n: int = 100_000) -> int | None:
    """Seeds per recipe for the normal (arcsine) test to reach ``power``.

    Args:
        rate_a, rate_b: the failure rates, in [0, 1].
        alpha, power: in (0, 1).
        alternative: ``two-sided`` or ``larger`` (rate_a > rate_b).
        max_n: give up above this.

    Returns:
        The smallest integer n >= 2 with ``rate_power >= power``; None for equal rates, a
        one-sided alternative pointing the other way, or more than ``max_n``.

    Raises:
        ValueError: a rate outside [0, 1], alpha or power outside (0, 1).
    """
    check_levels(alpha, power, alternative)
    _check_rate("rate_a", rate_a)
    _check_rate("rate_b", rate_b)
    if rate_a == rate_b or (alternative == "larger" and rate_a < rate_b):
        return None
    return _smallest_n(lambda n: rate_power(rate_a, rate_b, n, alpha, alternative), power, max_n)


def _smallest_n(power_at, target: float, max_n: int) -> int | None:
    """Smallest integer n >= MIN_SEEDS with power_at(n) >= target, for power increasing in n."""
    if power_at(max_n) < target:
        return None
    if power_at(MIN_SEEDS) >= target:
        return MIN_SEEDS
    root = brentq(lambda n: power_at(n) - target, MIN_SEEDS, max_n, xtol=1e-9)
    n = max(MIN_SEEDS, math.floor(root))
    while power_at(n) < target:
        n += 1
    return n


def fisher_p_values(n: int, total: int, alternative: str = "two-sided") -> tuple[np.ndarray, np.ndarray]:
    """P-values of Fisher's exact test for every table with ``n`` runs per recipe and ``total`` failures.

    Args:
        n: seeds per recipe.
        total: failed runs of both recipes together (0..2n).
        alternative: ``two-sided`` (SciPy's: the tables no more likely than the one seen)
            or ``larger`` (A fails more: P(X >= x)).

    Returns:
        ``(x, p)``: the possible failures of recipe A and each one's p-value.
    """
    return _fisher_p(_log_choose(n), n, total, alternative)


def _log_choose(n: int) -> np.ndarray:
    """log C(n, k) for k = 0..n."""
    k = np.arange(n + 1)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def _fisher_p(log_choose: np.ndarray, n: int, total: int, alternative: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(max(0, total - n), min(n, total) + 1)
    log_pmf = log_choose[x] + log_choose[total - x]
    pmf = np.exp(log_pmf - log_pmf.max())
    pmf /= pmf.sum()  # the hypergeometric null given the total
    if alternative == "larger":
        return x, np.minimum(np.cumsum(pmf[::-1])[::-1], 1.0)
    ascending = np.sort(pmf)
    below = np.concatenate([[0.0], np.cumsum(ascending)])  # below[i]: the i least likely tables
    return x, np.minimum(below[np.searchsorted(ascending, pmf * (1 + 1e-7), side="right")], 1.0)


def fisher_power(rate_a: float, rate_b: float, n: int, alpha: float = 0.05,
                 alternative: str = "two-sided") -> float:
    """Exact power of Fisher's exact test with ``n`` seeds per recipe.

    The sum, over every pair of failure counts (x_a, x_b) of the two binomials, of
    P(x_a) P(x_b) where the test of that table rejects at ``alpha``.

    Raises:
        ValueError: a rate outside [0, 1], ``n < 1``, or a bad alpha / alternative.
    """
    check_levels(alpha, 0.5, alternative)
    _check_rate("rate_a", rate_a)
    _check_rate("rate_b", rate_b)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    pa, pb = sps.binom.pmf(np.arange(n + 1), n, rate_a), sps.binom.pmf(np.arange(n + 1), n, rate_b)
    log_choose = _log_choose(n)
    power = 0.0
    for total in range(2 * n + 1):
        x, p = _fisher_p(log_choose, n, total, alternative)
        reject = x[p <= alpha]
        power += float(np.sum(pa[reject] * pb[total - reject]))
    return power


def seeds_for_rates_exact(rate_a: float, rate_b: float, alpha: float = 0.05, power: float = 0.8,
                          alternative: str = "two-sided", start: int = MIN_SEEDS, max_n: int = 300) -> int | None:
    """Smallest n in [start, max_n] at which Fisher's exact test has ``power`` (exact, :func:`fisher_power`).

    The exact power is not monotone in n (a saw-tooth): this is the first n that reaches it.

    Returns:
        n, or None for equal rates (or the wrong direction for ``larger``) or above ``max_n``.
    """
    check_levels(alpha, power, alternative)
    if rate_a == rate_b or (alternative == "larger" and rate_a < rate_b):
        return None
    for n in range(max(1, start), max_n + 1):
        if fisher_power(rate_a, rate_b, n, alpha, alternative) >= power:
            return n
    return None


def welch_power(diff: float, std_a: float, std_b: float, n: float, alpha: float = 0.05,
                alternative: str = "two-sided") -> float:
    """Power of Welch's t-test with ``n`` seeds per recipe for a true mean difference ``diff`` (A - B)."""
    var = (std_a ** 2 + std_b ** 2) / n
    if var == 0:
        return 1.0 if diff != 0 else 0.0
    df = (n - 1) * (std_a ** 2 + std_b ** 2) ** 2 / (std_a ** 4 + std_b ** 4)
    ncp = diff / math.sqrt(var)
    if alternative == "larger":
        power = sps.nct.sf(sps.t.isf(alpha, df), df, ncp)
    else:
        crit = sps.t.isf(alpha / 2, df)
        power = sps.nct.sf(crit, df, ncp) + sps.nct.cdf(-crit, df, ncp)
    if df > LARGE_DF or not math.isfinite(power):  # normal there; SciPy's nct gives NaN far out in the tail
        return normal_power(ncp, alpha, alternative)
    return float(power)


def seeds_for_means(mean_a: float, mean_b: float, std_a: float, std_b: float, alpha: float = 0.05,
                    power: float = 0.8, alternative: str = "two-sided", max_n: int = 100_000) -> int | None:
    """Seeds per recipe for Welch's t-test to detect ``mean_a - mean_b`` with ``power``.

    Returns:
        The smallest n >= 2 (None: equal means, the wrong direction for ``larger``, or above ``max_n``).

    Raises:
        ValueError: a negative std, or bad alpha / power / alternative.
    """
    check_levels(alpha, power, alternative)
    if min(std_a, std_b) < 0:
        raise ValueError(f"stds must be >= 0, got {std_a!r}, {std_b!r}")
    diff = mean_a - mean_b
    if diff == 0 or (alternative == "larger" and diff < 0):
        return None
    return _smallest_n(lambda n: welch_power(diff, std_a, std_b, n, alpha, alternative), power, max_n)


def brown_forsythe_p(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Brown–Forsythe p-values of many pairs of samples at once (``scipy.stats.levene(center="median")``).

    Args:
        a, b: shape ``(simulations, n_a)`` and ``(simulations, n_b)``.

    Returns:
        One p-value per simulation (NaN where both samples are constant).
    """
    za = np.abs(a - np.median(a, axis=1, keepdims=True))
    zb = np.abs(b - np.median(b, axis=1, keepdims=True))
    na, nb = za.shape[1], zb.shape[1]
    ma, mb = za.mean(axis=1), zb.mean(axis=1)
    grand = (na * ma + nb * mb) / (na + nb)
    between = na * (ma - grand) ** 2 + nb * (mb - grand) ** 2
    within = ((za - ma[:, None]) ** 2).sum(axis=1) + ((zb - mb[:, None]) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = between / (within / (na + nb - 2))
    return sps.f.sf(f, 1, na + nb - 2)


def bf_power(draw_a, draw_b, n: int, alpha: float, n_sim: int, rng: np.random.Generator) -> float:
    """Simulated power of the Brown–Forsythe test with ``n`` seeds per recipe.

    ``draw_a(rng, shape)`` / ``draw_b`` draw runs of each recipe. A NaN p-value (both constant)
    does not reject.
    """
    p = brown_forsythe_p(draw_a(rng, (n_sim, n)), draw_b(rng, (n_sim, n)))
    return float(np.mean(np.nan_to_num(p, nan=1.0) <= alpha))


def seeds_for_spread(a: np.ndarray | float, b: np.ndarray | float, alpha: float = 0.05, power: float = 0.8,
                     n_sim: int = 2000, random_state: int = 0, max_n: int = 1000) -> int | None:
    """Seeds per recipe for the Brown–Forsythe test to tell the spreads apart with ``power``.

    Args:
        a, b: the pilot runs of each recipe (1-D arrays, finite; resampled with
            replacement), or a stated std each (normal runs).
        alpha, power: in (0, 1).
        n_sim: simulated studies per n.
        random_state: seed; every n is simulated with the same seed (common random numbers).
        max_n: give up above this.

    Returns:
        The smallest n >= 3 whose simulated power reaches ``power`` (searched by doubling
        then bisection, so for a power that grows with n), or None: equal stated stds, or
        more than ``max_n``.

    Raises:
        ValueError: bad alpha / power, fewer than 3 pilot runs, a negative std.
    """
    check_levels(alpha, power)
    draws = [_drawer(x, name) for x, name in ((a, "a"), (b, "b"))]
    if np.isscalar(a) and np.isscalar(b) and a == b:
        return None

    def power_at(n: int) -> float:
        return bf_power(draws[0], draws[1], n, alpha, n_sim, np.random.default_rng(random_state))

    low, high = 2, 3
    while power_at(high) < power:
        if high >= max_n:
            return None
        low, high = high, min(2 * high, max_n)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if power_at(mid) < power else (low, mid)
    return high


def _drawer(x: np.ndarray | float, name: str):
    """A function ``(rng, shape) -> runs`` drawing from pilot runs or from N(0, std)."""
    if np.isscalar(x):
        std = float(x)  # type: ignore[arg-type]
        if std < 0:
            raise ValueError(f"std of {name} must be >= 0, got {std!r}")
        return lambda rng, shape: rng.normal(0.0, std, size=shape)
    values = np.asarray(x, dtype=np.float64).ravel()
    if values.size < 3 or not np.all(np.isfinite(values)):
        raise ValueError(f"pilot runs of {name}: need at least 3 finite values, got {values.size}")
    return lambda rng, shape: values[rng.integers(0, values.size, size=shape)]
