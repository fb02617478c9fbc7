"""Robust aggregates (rliable's definitions) on hand-computable examples and against SciPy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from steadytune.analyses.robust import (
    improvement_table,
    iqm,
    probability_of_improvement,
    robust_summary,
    stratified_bootstrap_ci,
)


def test_iqm_by_hand():
    assert iqm(np.arange(1.0, 9.0)) == 4.5  # 8 scores: mean of 3, 4, 5, 6
    assert iqm(np.array([0.0, 20.0, 10.0, 10.0, 10.0, 1000.0, -1000.0, 10.0])) == 10.0  # outliers cut
    # A (runs x tasks) matrix pools all scores: 12 scores, 3 cut from each end -> mean of 4..9
    assert iqm(np.arange(1.0, 13.0).reshape(4, 3)) == 6.5
    assert iqm([np.array([1.0, 2.0, 3.0]), np.array([4.0])]) == 2.5  # ragged tasks: 4 scores, 1 cut each end
    rng = np.random.default_rng(3)
    x = rng.normal(size=(17, 3))
    assert iqm(x) == pytest.approx(sps.trim_mean(x, 0.25, axis=None))


def test_probability_of_improvement_by_hand_and_against_mann_whitney():
    a, b = np.array([3.0, 1.0]), np.array([2.0, 1.0, 0.0])
    # pairs a > b: 3>2, 3>1, 3>0, 1>0 = 4; ties 1=1: one half; of 6 pairs -> 4.5 / 6
    assert probability_of_improvement(a, b) == 0.75
    assert probability_of_improvement(b, a) == 0.25
    assert probability_of_improvement(a, a) == 0.5
    two_tasks = probability_of_improvement(np.array([[1.0, 5.0], [2.0, 6.0]]), np.array([[0.0, 7.0], [3.0, 8.0]]))
    assert two_tasks == 0.25  # task 1: 1>0, 2>0 of 4 pairs = 1/2; task 2: none of 4; mean 1/4
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 11).astype(float), rng.integers(0, 5, 7).astype(float)  # many ties
    u = sps.mannwhitneyu(x, y, alternative="greater").statistic
    assert probability_of_improvement(x, y) == pytest.approx(u / (x.size * y.size))
    with pytest.raises(ValueError, match="A has 2 tasks and B 1"):
        probability_of_improvement(np.ones((3, 2)), np.ones(3))


def test_stratified_bootstrap_resamples_within_each_task_only():
    # Task 1 is constant 0, task 2 constant 1: any resample within tasks keeps half zeros,
    # half ones, so the pooled mean is exactly 0.5 (an unstratified resample would not be).
    scores = np.column_stack([np.zeros(6), np.ones(6)])
    assert stratified_bootstrap_ci(scores, np.mean, n_resamples=200) == (0.5, 0.5)
    ragged = [np.zeros(2), np.ones(6)]
    assert stratified_bootstrap_ci(ragged, np.mean, n_resamples=200) == (0.75, 0.75)
    x = np.random.default_rng(1).normal(size=(10, 2))
    assert stratified_bootstrap_ci(x, random_state=4) == stratified_bootstrap_ci(x, random_state=4)
    assert stratified_bootstrap_ci(x, random_state=4) != stratified_bootstrap_ci(x, random_state=5)
    for bad, words in (({"n_resamples": 0}, "n_resamples"), ({"confidence": 1.0}, "confidence")):
        with pytest.raises(ValueError, match=words):
            stratified_bootstrap_ci(x, **bad)
    with pytest.raises(ValueError, match="finite"):
        stratified_bootstrap_ci(np.array([1.0, np.nan]))


def test_stratified_iqm_interval_covers_the_true_value_about_95_percent():
    """Simulation: normal scores in 3 tasks (means 0, 1, 3); the IQM of the pooled population
    is found by a large sample. The percentile interval should cover it near 95% of the time."""
    rng = np.random.default_rng(7)
    means = np.array([0.0, 1.0, 3.0])
    truth = iqm(rng.normal(means, 1.0, size=(400_000, 3)))
    hits = [low <= truth <= high for low, high in
            (stratified_bootstrap_ci(rng.normal(means, 1.0, size=(30, 3)), n_resamples=400, random_state=rng)
             for _ in range(300))]
    assert 0.89 <= np.mean(hits) <= 0.99


def _runs():
    rows = []
    for recipe, values in (("a", [0.9, 0.8, 0.7, 0.6, 0.5]), ("b", [0.75, 0.55, 0.45, np.nan, 0.85])):
        for seed, v in enumerate(values, start=1):
            rows.append({"task": "rte", "model": "m", "recipe": recipe, "grid": "", "seed": seed, "metric": "acc",
                         "final": v, "best": v, "baseline": 0.5, "status": "diverged" if np.isnan(v) else "finished"})
    return pd.DataFrame(rows)


def test_tables_of_a_study():
    robust = robust_summary(_runs())
    a = robust[robust["recipe"] == "a"].iloc[0]
    assert a["n"] == 5 and a["iqm"] == pytest.approx(100 * sps.trim_mean([0.9, 0.8, 0.7, 0.6, 0.5], 0.25))
    assert a["iqm_ci_low"] <= a["iqm"] <= a["iqm_ci_high"] and a["median"] == pytest.approx(70.0)
    assert robust[robust["recipe"] == "b"].iloc[0]["n"] == 4  # the diverged run is left out
    imp = improvement_table(_runs()).iloc[0]
    # b's diverged run loses to all of a's; otherwise count by hand: pairs (a > b) + ties/2 of 25
    x, y = [0.9, 0.8, 0.7, 0.6, 0.5], [0.75, 0.55, 0.45, -np.inf, 0.85]
    wins = sum((u > v) + 0.5 * (u == v) for u in x for v in y)
    assert (imp["recipe_a"], imp["recipe_b"], imp["n_a"], imp["n_b"]) == ("a", "b", 5, 5)
    assert imp["p_a_beats_b"] == pytest.approx(wins / 25)
    assert imp["ci_low"] <= imp["p_a_beats_b"] <= imp["ci_high"]
