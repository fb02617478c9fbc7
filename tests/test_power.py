"""Seeds per recipe against statsmodels (two proportions, t-test), SciPy (Fisher's exact test,
Levene/Brown–Forsythe) and simulation (Welch with unequal stds, power of the spread test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from steadytune.analyses import power as pw

smp = pytest.importorskip("statsmodels.stats.power", reason="statsmodels is the independent reference")
proportion_effectsize = pytest.importorskip("statsmodels.stats.proportion").proportion_effectsize


@pytest.mark.parametrize("pa, pb, alpha, power, alt", [
    (0.3, 0.1, 0.05, 0.8, "two-sided"), (0.3, 0.0, 0.05, 0.8, "two-sided"), (0.5, 0.45, 0.01, 0.9, "two-sided"),
    (0.2, 0.05, 0.05, 0.8, "larger"), (0.1, 0.3, 0.1, 0.7, "two-sided")])
def test_failure_rate_seeds_are_statsmodels_normal_ind_power(pa, pb, alpha, power, alt):
    h = proportion_effectsize(pa, pb)
    want = smp.NormalIndPower().solve_power(h, alpha=alpha, power=power, ratio=1.0, alternative=alt)
    assert pw.seeds_for_rates(pa, pb, alpha, power, alt) == max(2, math.ceil(want - 1e-9))
    for n in (5, 17, 60):
        assert pw.rate_power(pa, pb, n, alpha, alt) == pytest.approx(
            smp.NormalIndPower().power(h, n, alpha, ratio=1.0, alternative=alt), rel=1e-9)


def test_fisher_p_values_are_scipys_for_every_table():
    n = 7
    for total in range(2 * n + 1):
        for alt, scipy_alt in (("two-sided", "two-sided"), ("larger", "greater")):
            x, p = pw.fisher_p_values(n, total, alt)
            want = [sps.fisher_exact([[xa, n - xa], [total - xa, n - total + xa]], alternative=scipy_alt).pvalue
                    for xa in x]
            assert p == pytest.approx(want, abs=1e-12)


def test_fisher_power_is_the_sum_over_every_outcome():
    n, pa, pb, alpha = 6, 0.6, 0.1, 0.05
    brute = sum(sps.binom.pmf(xa, n, pa) * sps.binom.pmf(xb, n, pb)
                for xa in range(n + 1) for xb in range(n + 1)
                if sps.fisher_exact([[xa, n - xa], [xb, n - xb]]).pvalue <= alpha)
    assert pw.fisher_power(pa, pb, n, alpha) == pytest.approx(brute, abs=1e-12)
    exact = pw.seeds_for_rates_exact(0.3, 0.0, 0.05, 0.8)
    assert pw.fisher_power(0.3, 0.0, exact) >= 0.8
    assert all(pw.fisher_power(0.3, 0.0, n) < 0.8 for n in range(2, exact))
    assert pw.seeds_for_rates_exact(0.2, 0.2) is None and pw.seeds_for_rates(0.2, 0.2) is None


@pytest.mark.parametrize("diff, std, alt", [(0.5, 1.0, "two-sided"), (5.5, 2.7, "two-sided"), (0.3, 1.0, "larger")])
def test_mean_seeds_are_statsmodels_t_test_for_equal_stds(diff, std, alt):
    want = smp.TTestIndPower().solve_power(diff / std, alpha=0.05, power=0.8, ratio=1.0, alternative=alt)
    assert pw.seeds_for_means(diff, 0.0, std, std, 0.05, 0.8, alt) == math.ceil(want)
    assert pw.welch_power(diff, std, std, 12, 0.05, alt) == pytest.approx(
        smp.TTestIndPower().power(diff / std, 12, 0.05, ratio=1.0, alternative=alt), rel=1e-7)


def test_welch_power_with_unequal_stds_matches_simulation():
    rng = np.random.default_rng(2)
    n, diff, sa, sb = 9, 3.0, 3.6, 1.3
    a = rng.normal(diff, sa, size=(40_000, n))
    b = rng.normal(0.0, sb, size=(40_000, n))
    simulated = np.mean(sps.ttest_ind(a, b, axis=1, equal_var=False).pvalue <= 0.05)
    assert pw.welch_power(diff, sa, sb, n) == pytest.approx(simulated, abs=0.01)


def test_brown_forsythe_p_values_are_scipys_levene_about_the_median():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, (20, 7)), rng.exponential(2, (20, 9))
    want = [sps.levene(x, y, center="median").pvalue for x, y in zip(a, b)]
    assert pw.brown_forsythe_p(a, b) == pytest.approx(want, rel=1e-9)


def test_spread_seeds_reach_the_power_in_an_independent_simulation():
    """The n found by the vectorised simulation, checked with SciPy's levene on other random draws:
    power >= 0.8 at n and < 0.8 at n - 1 (up to the simulation error, 2000 studies: +-0.03)."""
    pilot_a = np.array([-3.6, 0.0, 1.2, 2.0, 3.1, 4.0, 4.4, 5.7, 6.3, 8.0])
    pilot_b = np.array([6.3, 7.0, 7.9, 8.2, 8.4, 8.5, 8.9, 9.4, 10.0, 10.3])
    n = pw.seeds_for_spread(pilot_a, pilot_b, 0.05, 0.8, n_sim=2000, random_state=0)
    rng = np.random.default_rng(99)

    def scipy_power(k: int) -> float:
        hits = [sps.levene(rng.choice(pilot_a, k), rng.choice(pilot_b, k), center="median").pvalue <= 0.05
                for _ in range(2000)]
        return float(np.mean(hits))

    assert 3 <= n <= 40
    assert scipy_power(n) >= 0.8 - 0.03 and scipy_power(n - 1) < 0.8 + 0.03
    assert pw.seeds_for_spread(2.0, 2.0) is None  # equal stated stds: never
    assert pw.seeds_for_spread(3.6, 1.3, random_state=1) == pw.seeds_for_spread(3.6, 1.3, random_state=1)


@pytest.mark.parametrize("kwargs, words", [
    ({"power": 1.0}, r"power must be in \(0, 1\), got 1.0"), ({"power": 0}, r"power must be in \(0, 1\), got 0"),
    ({"alpha": 1.5}, r"alpha must be in \(0, 1\), got 1.5"), ({"alternative": "less"}, "alternative must be one of")])
def test_levels_outside_zero_one_are_refused(kwargs, words):
    for call in (lambda: pw.seeds_for_rates(0.3, 0.1, **kwargs), lambda: pw.seeds_for_means(1, 0, 1, 1, **kwargs)):
        with pytest.raises(ValueError, match=words):
            call()


def test_bad_rates_and_pilots_are_refused():
    with pytest.raises(ValueError, match=r"rate_a must be a failure rate in \[0, 1\], got 1.3"):
        pw.seeds_for_rates(1.3, 0.1)
    with pytest.raises(ValueError, match="pilot runs of b: need at least 3 finite values, got 2"):
        pw.seeds_for_spread(np.ones(5), np.ones(2))
    with pytest.raises(ValueError, match="std of a must be >= 0"):
        pw.seeds_for_spread(-1.0, 2.0)
