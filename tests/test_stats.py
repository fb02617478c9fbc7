"""steadytune.stats on hand-computed tables and against SciPy / written-out formulas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from steadytune.analyses import stats as S

RTE = 146 / 277  # majority baseline (accuracy)


def _runs() -> pd.DataFrame:
    """Two recipes × 5 seeds on RTE; recipe A has one failed and one diverged run."""
    a_final = [0.70, 0.72, 0.68, RTE, 0.473]  # seed 4 diverged: its 0.473 must be ignored
    b_final = [0.60, 0.65, 0.70, 0.75, 0.80]
    rows = []
    for recipe, finals in (("A", a_final), ("B", b_final)):
        for seed, final in enumerate(finals, start=1):
            diverged = recipe == "A" and seed == 5
            rows.append({"task": "rte", "model": "bert", "recipe": recipe, "grid": "",
                         "seed": seed, "metric": "acc", "final": final,
                         "best": final + 0.01, "baseline": RTE,
                         "status": "diverged" if diverged else "finished"})
    return pd.DataFrame(rows)


# --- failed runs -----------------------------------------------------------------------


def test_failed_mask_per_metric() -> None:
    values = np.array([RTE, RTE + 1 / 277, 0.0, 0.01, -0.2, np.nan, 0.75])
    base = np.array([RTE, RTE, 0.0, 0.0, 0.0, 0.0, 0.748])
    #                acc=base  +1 ex   MCC 0 MCC .01 MCC<0  NaN   MRPC acc_and_f1 > 0.748
    expected = [True, False, True, False, True, True, False]
    assert S.failed_mask(values, base).tolist() == expected
    assert S.failed_mask(values[:2], RTE).tolist() == [True, False]  # scalar baseline


# --- Wilson interval ----------------------------------------------------------------------


def _wilson_statsmodels(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """statsmodels.stats.proportion.proportion_confint(method="wilson"), written out."""
    q_ = k / n
    crit = sps.norm.isf(alpha / 2.0)
    crit2 = crit**2
    denom = 1 + crit2 / n
    center = (q_ + crit2 / (2 * n)) / denom
    dist = crit * np.sqrt(q_ * (1.0 - q_) / n + crit2 / (4.0 * n**2)) / denom
    return center - dist, center + dist


def test_wilson_hand_values() -> None:
    # k=3, n=25, z=1.96: (k + z²/2 ± z·sqrt(k(n-k)/n + z²/4)) / (n + z²)
    z = 1.959963984540054
    mid, half = 3 + z * z / 2, z * math.sqrt(3 * 22 / 25 + z * z / 4)
    low, high = S.wilson_interval(3, 25)
    assert (low, high) == pytest.approx(((mid - half) / (25 + z * z), (mid + half) / (25 + z * z)))
    assert (round(low, 4), round(high, 4)) == (0.0417, 0.2996)
    # k=0: the lower end is exactly 0, the upper end z²/(n + z²)
    assert S.wilson_interval(0, 25) == (0.0, pytest.approx(z * z / (25 + z * z)))
    assert S.wilson_interval(25, 25) == (pytest.approx(25 / (25 + z * z)), 1.0)


@pytest.mark.parametrize("k,n", [(0, 5), (1, 5), (3, 25), (12, 25), (24, 25), (7, 100)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels_formula(k: int, n: int, confidence: float) -> None:
    ref = _wilson_statsmodels(k, n, alpha=1 - confidence)
    assert S.wilson_interval(k, n, confidence) == pytest.approx(ref, abs=1e-12)


def test_wilson_edge_cases() -> None:
    assert all(math.isnan(x) for x in S.wilson_interval(0, 0))
    for bad in [(-1, 5), (6, 5)]:
        with pytest.raises(ValueError):
            S.wilson_interval(*bad)
    with pytest.raises(ValueError):
        S.wilson_interval(1, 5, confidence=1.0)


# --- bootstrap --------------------------------------------------------------------------


def test_bootstrap_ci() -> None:
    v = np.random.default_rng(3).normal(0.7, 0.05, 25)
    ci = S.bootstrap_ci(v, random_state=0)
    assert ci == S.bootstrap_ci(v, random_state=0)  # deterministic
    assert ci != S.bootstrap_ci(v, random_state=1)
    assert ci[0] < v.mean() < ci[1]
    # roughly the normal-theory width of a mean
    se = v.std(ddof=1) / math.sqrt(v.size)
    assert ci[1] - ci[0] == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert S.bootstrap_ci(np.append(v, np.nan), random_state=0) == ci  # NaN dropped
    med = S.bootstrap_ci(v, statistic=np.median, n_resamples=500, confidence=0.8)
    assert med[0] < np.median(v) < med[1]
    assert S.bootstrap_ci(np.full(5, 0.6)) == (pytest.approx(0.6), pytest.approx(0.6))
    assert all(math.isnan(x) for x in S.bootstrap_ci(np.array([np.nan])))
    with pytest.raises(ValueError):
        S.bootstrap_ci(v, n_resamples=0)


# --- expected max -------------------------------------------------------------------------


def test_expected_max_hand_values() -> None:
    v = np.array([3.0, 1.0, 2.0])
    assert S.expected_max(v, 2) == pytest.approx(1 * 1 / 9 + 2 * 3 / 9 + 3 * 5 / 9)
    assert S.expected_max(v, 2) == pytest.approx(22 / 9)
    assert S.expected_max(v, 1) == pytest.approx(v.mean())
    assert S.expected_max(v, 500) == pytest.approx(3.0)
    curve = S.expected_max(v, np.arange(1, 6))
    assert curve.shape == (5,) and np.all(np.diff(curve) >= 0)
    assert isinstance(S.expected_max(v, 3), float)


def test_expected_max_matches_simulation() -> None:
    rng = np.random.default_rng(0)
    v = rng.uniform(0.5, 0.8, 25)
    draws = rng.choice(v, size=(200_000, 5), replace=True).max(axis=1)
    assert S.expected_max(v, 5) == pytest.approx(draws.mean(), abs=1e-3)
    assert S.expected_max(v, 1) == pytest.approx(v.mean())
    assert S.expected_max(v, 10_000) == pytest.approx(v.max())


def test_expected_max_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        S.expected_max(np.array([]), 1)
    with pytest.raises(ValueError):
        S.expected_max(np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError):
        S.expected_max(np.array([1.0]), 0)


# --- variance tests ----------------------------------------------------------------------


def test_variance_tests_match_scipy() -> None:
    rng = np.random.default_rng(1)
    g = {"a": rng.normal(0, 1, 25), "b": rng.normal(0, 3, 25), "c": rng.normal(1, 1, 20)}
    out = S.variance_tests(g)
    lev = sps.levene(*g.values(), center="mean")
    bf = sps.levene(*g.values(), center="median")
    assert out["levene_stat"] == pytest.approx(lev.statistic, rel=1e-12)
    assert out["levene_p"] == pytest.approx(lev.pvalue, rel=1e-12)
    assert out["bf_stat"] == pytest.approx(bf.statistic, rel=1e-12)
    assert out["bf_p"] == pytest.approx(bf.pvalue, rel=1e-12)
    assert out["n_groups"] == 3
    # NaNs (diverged runs) are dropped before testing
    g_nan = {k: np.append(x, np.nan) for k, x in g.items()}
    assert S.variance_tests(g_nan)["levene_p"] == pytest.approx(lev.pvalue, rel=1e-12)


@pytest.mark.parametrize("groups", [
    {},
    {"a": np.array([1.0, 2.0, 3.0])},
    {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([4.0])},
    {"a": np.array([1.0, 2.0]), "b": np.array([5.0, np.nan])},
    {"a": np.full(3, 0.5), "b": np.full(4, 0.7)},  # zero spread everywhere: 0/0
])
def test_variance_tests_undefined_give_nan(groups: dict[str, np.ndarray]) -> None:
    out = S.variance_tests(groups)
    assert all(math.isnan(out[k]) for k in ("levene_stat", "levene_p", "bf_stat", "bf_p"))


# --- summarize -------------------------------------------------------------------------


def test_summarize_hand_values() -> None:
    out = S.summarize(_runs()).set_index("recipe")
    a, b = out.loc["A"], out.loc["B"]
    # A: values [.70 .72 .68 .527] (diverged seed dropped); failed: the tie and the diverged
    assert (a["n"], a["n_failed"], a["n_ok"]) == (5, 2, 3)
    assert a["failed_rate"] == pytest.approx(0.4)
    assert (a["failed_ci_low"], a["failed_ci_high"]) == pytest.approx(S.wilson_interval(2, 5))
    mean_a = (0.70 + 0.72 + 0.68 + RTE) / 4
    assert a["mean"] == pytest.approx(100 * mean_a)
    assert a["median"] == pytest.approx(69.0)
    assert (a["max"], a["min"]) == (pytest.approx(72.0), pytest.approx(100 * RTE))
    ss = sum((x - mean_a) ** 2 for x in (0.70, 0.72, 0.68, RTE))  # ddof=1 -> / (4 - 1)
    assert a["std"] == pytest.approx(100 * math.sqrt(ss / 3))
    assert a["std"] == pytest.approx(8.80, abs=0.01)  # with 0.527 for RTE: sqrt(.0232468/3)
    assert (a["mean_ok"], a["median_ok"], a["max_ok"]) == pytest.approx((70.0, 70.0, 72.0))
    assert a["std_ok"] == pytest.approx(2.0)  # [70, 72, 68], ddof=1
    assert a["mean_ci_low"] < a["mean"] < a["mean_ci_high"]
    assert a["baseline"] == pytest.approx(100 * RTE) and a["metric"] == "acc"
    # B: [.60 .65 .70 .75 .80], nothing failed
    assert (b["n"], b["n_failed"], b["n_ok"], b["failed_ci_low"]) == (5, 0, 5, 0.0)
    assert (b["mean"], b["median"], b["max"], b["min"]) == pytest.approx((70, 70, 80, 60))
    assert b["std"] == pytest.approx(100 * math.sqrt(0.025 / 4))
    assert b["std_ok"] == pytest.approx(b["std"])
    assert list(out.columns[:4]) == ["task", "model", "grid", "metric"]  # recipe is index


def test_summarize_best_and_determinism() -> None:
    runs = _runs()
    fin, best = S.summarize(runs), S.summarize(runs, which="best")
    # best = final + 0.01 everywhere; the diverged run is still NaN, the A tie now passes
    assert best["mean"].to_numpy() == pytest.approx(fin["mean"].to_numpy() + 1.0)
    assert best["n_failed"].tolist() == [1, 0]
    pd.testing.assert_frame_equal(fin, S.summarize(runs, random_state=0))


def test_summarize_single_run_and_all_diverged() -> None:
    runs = _runs().iloc[[0]]
    row = S.summarize(runs).iloc[0]
    assert row["n"] == 1 and math.isnan(row["std"]) and row["mean"] == pytest.approx(70.0)
    dead = _runs().assign(status="diverged")
    row = S.summarize(dead).iloc[0]
    assert (row["n"], row["n_failed"], row["n_ok"]) == (5, 5, 0)
    assert math.isnan(row["mean"]) and math.isnan(row["mean_ok"])


def test_summarize_validation() -> None:
    runs = _runs()
    with pytest.raises(ValueError, match="which"):
        S.summarize(runs, which="last")
    with pytest.raises(ValueError, match="baseline"):
        S.summarize(runs.drop(columns="baseline"))
    with pytest.raises(ValueError, match="status"):
        S.summarize(runs.assign(status="crashed"))
    with pytest.raises(ValueError, match="duplicate"):
        S.summarize(pd.concat([runs, runs.iloc[[0]]]))
    with pytest.raises(ValueError, match="metric"):
        S.summarize(runs.assign(metric=["acc"] * 9 + ["f1"]))
    assert S.summarize(runs.iloc[:0]).empty


# --- compare_recipes ---------------------------------------------------------------------


def test_compare_recipes() -> None:
    runs = _runs()
    c = runs[runs.recipe == "B"].assign(recipe="C", final=[0.70, 0.71, 0.69, 0.70, 0.72])
    out = S.compare_recipes(pd.concat([runs, c], ignore_index=True))
    assert len(out) == 1
    row = out.iloc[0]
    a = np.array([0.70, 0.72, 0.68, RTE])  # diverged run left out, failed run kept
    b = np.array([0.60, 0.65, 0.70, 0.75, 0.80])
    cc = c["final"].to_numpy()
    assert row["recipes"] == "A,B,C"
    assert row["levene_p"] == pytest.approx(sps.levene(a, b, cc, center="mean").pvalue)
    assert row["levene_stat"] == pytest.approx(sps.levene(a, b, cc, center="mean").statistic)
    assert row["bf_p"] == pytest.approx(sps.levene(a, b, cc, center="median").pvalue)
    # stds: C 0.011 < B 0.079 < A 0.088
    assert (row["lowest_std_recipe"], row["runner_up_recipe"]) == ("C", "B")
    assert row["pair_levene_p"] == pytest.approx(sps.levene(cc, b, center="mean").pvalue)
    assert row["pair_bf_p"] == pytest.approx(sps.levene(cc, b, center="median").pvalue)


def test_compare_recipes_two_and_one_recipe() -> None:
    row = S.compare_recipes(_runs()).iloc[0]
    assert (row["lowest_std_recipe"], row["runner_up_recipe"]) == ("B", "A")
    a, b = np.array([0.70, 0.72, 0.68, RTE]), np.array([0.60, 0.65, 0.70, 0.75, 0.80])
    assert row["pair_levene_p"] == pytest.approx(sps.levene(b, a, center="mean").pvalue)
    assert row["levene_p"] == pytest.approx(row["pair_levene_p"])
    one = S.compare_recipes(_runs().query("recipe == 'A'")).iloc[0]
    assert one["lowest_std_recipe"] is None and math.isnan(one["levene_p"])
    assert math.isnan(one["pair_levene_p"])


# --- expected_max_curve -------------------------------------------------------------------


def test_expected_max_curve() -> None:
    out = S.expected_max_curve(_runs())
    assert list(out.columns) == ["task", "model", "recipe", "grid", "metric", "n_runs",
                                 "n_seeds", "expected_max"]
    a = out[out.recipe == "A"]
    assert a["n_runs"].unique().tolist() == [4]  # diverged run not in the distribution
    assert a["n_seeds"].tolist() == [1, 2, 3, 4]
    assert a["expected_max"].iloc[0] == pytest.approx(100 * (2.10 + RTE) / 4)  # n=1: mean
    b = out[out.recipe == "B"]
    assert b["expected_max"].to_numpy() == pytest.approx(
        100 * S.expected_max(np.array([0.6, 0.65, 0.7, 0.75, 0.8]), np.arange(1, 6)))
    long = S.expected_max_curve(_runs(), max_n=50)
    assert long.groupby("recipe")["n_seeds"].max().tolist() == [50, 50]
    assert long[long.recipe == "B"]["expected_max"].iloc[-1] == pytest.approx(80.0, abs=0.01)
    assert S.expected_max_curve(_runs().assign(status="diverged")).empty
    with pytest.raises(ValueError):
        S.expected_max_curve(_runs(), max_n=0)


def test_stuck_runs_are_those_whose_training_loss_stayed_at_the_label_prior() -> None:
    from steadytune.training.results import label_entropy

    assert label_entropy([0, 0, 1, 1]) == pytest.approx(math.log(2))
    assert label_entropy([0] * 7 + [1] * 3) == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.3)))
    assert label_entropy(["a", "b", "c"]) == pytest.approx(math.log(3))
    assert label_entropy([0.1, 0.5], regression=True) is None
    h = math.log(2)
    mask = S.stuck_mask([0.693, 0.8 * h, 0.8 * h - 1e-6, 0.01, np.nan, 0.7], [h, h, h, h, h, np.nan])
    np.testing.assert_array_equal(mask[:4], [1.0, 1.0, 0.0, 0.0])
    assert np.isnan(mask[4:]).all()
    runs = _runs()
    runs["label_entropy"] = h
    runs["train_loss"] = [0.69, 0.01, 0.02, 0.68, np.nan, 0.60, 0.0, 0.0, 0.0, 0.0]
    out = S.summarize(runs).set_index("recipe")
    assert out.loc["A", "n_stuck"] == 2 and out.loc["B", "n_stuck"] == 1  # 0.60 >= 0.8 ln 2 = 0.5545
    assert np.isnan(S.summarize(_runs())["n_stuck"]).all()  # not recorded: unknown, not zero
