"""steadytune.metrics against scikit-learn / SciPy and hand-computed GLUE baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sklearn.metrics as skm
from scipy import stats as sps

from steadytune.training import metrics as M

SEEDS = range(8)


def _labels(counts: dict[int, int], seed: int = 0) -> np.ndarray:
    """A shuffled label array with exactly the given class counts."""
    y = np.concatenate([np.full(c, k) for k, c in counts.items()])
    return np.random.default_rng(seed).permutation(y)


# --- agreement with the references on random data ---------------------------------------


@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("size", [1, 7, 100])
def test_binary_metrics_match_sklearn(seed: int, size: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size)
    p = np.where(rng.random(size) < 0.7, y, 1 - y)  # mostly right, some errors
    assert M.accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p), abs=1e-12)
    assert M.f1_binary(p, y) == pytest.approx(
        skm.f1_score(y, p, zero_division=0, labels=[0, 1]), abs=1e-12)
    assert M.f1_binary(p, y, positive=0) == pytest.approx(
        skm.f1_score(y, p, pos_label=0, zero_division=0, labels=[0, 1]), abs=1e-12)
    assert M.matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_mcc_multiclass_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.5, y, rng.integers(0, 3, 200))
    assert M.matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-12)
    # a class only ever predicted, never true (and non-contiguous ids)
    p2 = np.where(p == 2, 7, p)
    assert M.matthews_corrcoef(p2, y) == pytest.approx(skm.matthews_corrcoef(y, p2), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_correlations_match_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=60)
    y = 0.5 * x + rng.normal(size=60)
    assert M.pearson(x, y) == pytest.approx(sps.pearsonr(x, y)[0], abs=1e-12)
    assert M.spearman(x, y) == pytest.approx(sps.spearmanr(x, y)[0], abs=1e-12)
    # heavy ties (STS-B labels are on a 0..5 grid in steps of 0.2)
    xt = np.round(rng.uniform(0, 5, 60) * 5) / 5
    yt = np.round(np.clip(xt + rng.normal(scale=1.0, size=60), 0, 5))
    assert M.spearman(xt, yt) == pytest.approx(sps.spearmanr(xt, yt)[0], abs=1e-12)
    assert M.pearson(xt, yt) == pytest.approx(sps.pearsonr(xt, yt)[0], abs=1e-12)


def _numpy_pearson(a: np.ndarray, b: np.ndarray) -> float:
    """The hand-written Pearson steadytune used before it called SciPy (kept as a reference)."""
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip((a @ b) / np.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


def _numpy_ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks, as steadytune's hand-written ``_rankdata`` computed them."""
    order = np.argsort(x, kind="mergesort")
    inverse = np.empty(x.size, dtype=np.intp)
    inverse[order] = np.arange(x.size)
    xs = x[order]
    new_value = np.r_[True, xs[1:] != xs[:-1]]
    dense = np.cumsum(new_value)[inverse]
    bounds = np.r_[np.nonzero(new_value)[0], x.size]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_scipy_correlations_keep_the_previous_values(seed: int) -> None:
    """Moving to SciPy changed no stored number: same values as the former numpy code (1e-12)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=80)
    y = 0.3 * x + rng.normal(size=80)
    xt = np.round(rng.uniform(0, 5, 80) * 5) / 5  # STS-B-like ties
    for a, b in ((x, y), (xt, np.round(xt + rng.normal(size=80))), (x.astype(np.float32), y)):
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        assert M.pearson(a, b) == pytest.approx(_numpy_pearson(a64, b64), abs=1e-12)
        assert M.spearman(a, b) == pytest.approx(_numpy_pearson(_numpy_ranks(a64), _numpy_ranks(b64)), abs=1e-12)


# --- edge cases ------------------------------------------------------------------------


def test_all_correct() -> None:
    y = np.array([0, 1, 1, 0, 1])
    assert M.accuracy(y, y) == 1.0
    assert M.f1_binary(y, y) == 1.0
    assert M.matthews_corrcoef(y, y) == 1.0
    assert M.matthews_corrcoef(1 - y, y) == -1.0


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_constant_predictions() -> None:
    y = np.array([0, 1, 1, 0, 1, 1])
    zeros, ones = np.zeros_like(y), np.ones_like(y)
    assert M.matthews_corrcoef(zeros, y) == 0.0 == skm.matthews_corrcoef(y, zeros)
    assert M.matthews_corrcoef(ones, y) == 0.0
    assert M.f1_binary(zeros, y) == 0.0  # nothing predicted positive
    assert M.f1_binary(ones, y) == pytest.approx(skm.f1_score(y, ones))
    # no positive predicted and none true: sklearn zero_division=0 gives 0.0
    assert M.f1_binary(zeros, zeros) == 0.0 == skm.f1_score(zeros, zeros, zero_division=0)
    # all one class, all correct: MCC undefined -> 0.0 like sklearn
    assert M.matthews_corrcoef(ones, ones) == 0.0 == skm.matthews_corrcoef(ones, ones)


def test_correlation_of_constant_input_is_zero() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    c = np.full(4, 2.5)
    for fn in (M.pearson, M.spearman):
        assert fn(x, c) == 0.0
        assert fn(c, x) == 0.0
        assert fn(x, x) == pytest.approx(1.0)
        assert fn(x, -x) == pytest.approx(-1.0)
    assert math.isnan(M.pearson(np.array([1.0, np.nan, 2.0]), np.array([1.0, 2.0, 3.0])))


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="length"):
        M.accuracy(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="empty"):
        M.matthews_corrcoef(np.array([]), np.array([]))


# --- metric sets --------------------------------------------------------------------------


def test_compute_metrics_kinds() -> None:
    y = np.array([0, 1, 1, 0, 1, 1, 0, 1])
    p = np.array([0, 1, 0, 0, 1, 1, 1, 1])
    acc, f1 = 6 / 8, 2 * 4 / (2 * 4 + 1 + 1)
    assert M.compute_metrics("acc", p, y) == {"acc": acc}
    m = M.compute_metrics("acc_f1", p, y)
    assert set(m) == {"acc", "f1", "acc_and_f1"}
    assert m["f1"] == pytest.approx(f1) and m["acc_and_f1"] == pytest.approx((acc + f1) / 2)
    m = M.compute_metrics("mcc", p, y)
    assert set(m) == {"mcc", "acc"}
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, p))
    s = np.array([0.1, 0.9, 0.4, 0.2, 0.8, 0.7, 0.6, 0.95])
    m = M.compute_metrics("corr", s, y.astype(float))
    assert set(m) == {"pearson", "spearmanr", "corr"}
    assert m["corr"] == pytest.approx((m["pearson"] + m["spearmanr"]) / 2)
    with pytest.raises(ValueError, match="acc_f1"):
        M.compute_metrics("f1", p, y)


def test_metric_kind() -> None:
    expected = {"acc": "acc", "f1": "acc_f1", "acc_and_f1": "acc_f1", "mcc": "mcc",
                "pearson": "corr", "spearmanr": "corr", "corr": "corr"}
    assert {m: M.metric_kind(m) for m in expected} == expected
    for metric, kind in expected.items():  # each metric is in its kind's output
        out = M.compute_metrics(kind, np.array([0, 1, 1]), np.array([0, 1, 0]))
        assert metric in out
    with pytest.raises(ValueError, match="mcc"):
        M.metric_kind("MCC")


# --- majority baselines with the real GLUE label counts ----------------------------------


def test_majority_prediction() -> None:
    assert M.majority_prediction(np.array([2, 2, 1, 1, 0]), regression=False) == 1  # tie
    assert M.majority_prediction(np.array([3, 3, 3, 0]), regression=False) == 3
    assert M.majority_prediction(np.array([1.0, 2.0, 4.5]), regression=True) == 2.5
    with pytest.raises(ValueError):
        M.majority_prediction(np.array([]), regression=False)


def test_rte_baseline() -> None:
    train, dev = _labels({0: 1249, 1: 1241}), _labels({0: 146, 1: 131}, seed=1)
    assert M.majority_prediction(train, regression=False) == 0  # entailment
    b = M.majority_baseline(train, dev, "acc")
    assert b == pytest.approx(146 / 277) and round(b, 3) == 0.527


def test_mrpc_baseline() -> None:
    train, dev = _labels({0: 1194, 1: 2474}), _labels({0: 129, 1: 279}, seed=1)
    acc, f1 = 279 / 408, 2 * 279 / (2 * 279 + 129)
    assert M.majority_baseline(train, dev, "acc") == pytest.approx(acc)
    assert M.majority_baseline(train, dev, "f1") == pytest.approx(f1)
    both = M.majority_baseline(train, dev, "acc_and_f1")
    assert both == pytest.approx((acc + f1) / 2)
    assert (round(acc, 3), round(f1, 3), round(both, 3)) == (0.684, 0.812, 0.748)


def test_cola_and_regression_baselines() -> None:
    train, dev = _labels({0: 2528, 1: 6023}), _labels({0: 322, 1: 721}, seed=1)
    assert M.majority_baseline(train, dev, "mcc") == 0.0
    rng = np.random.default_rng(0)
    ytr, ydev = rng.uniform(0, 5, 500), rng.uniform(0, 5, 100)
    for metric in ("pearson", "spearmanr", "corr"):
        assert M.majority_baseline(ytr, ydev, metric, regression=True) == 0.0
    with pytest.raises(ValueError, match="regression"):
        M.majority_baseline(ytr, ydev, "acc", regression=True)


# --- failed runs ---------------------------------------------------------------------------


def test_is_failed() -> None:
    rte = 146 / 277
    assert M.is_failed(146 / 277, rte)  # equal to the majority classifier
    assert M.is_failed(131 / 277, rte)  # collapsed to the minority class
    assert not M.is_failed(147 / 277, rte)  # one more example right
    assert M.is_failed(0.0, 0.0)  # CoLA MCC 0
    assert M.is_failed(-0.05, 0.0)
    assert not M.is_failed(0.01, 0.0)
    assert M.is_failed(float("nan"), rte)
    # MRPC (acc+F1)/2 of an all-positive run, summed in another order, still ties
    acc, f1 = 279 / 408, 2 * 279 / (2 * 279 + 129)
    assert M.is_failed(0.5 * acc + 0.5 * f1, (acc + f1) / 2)
    assert not M.is_failed(0.9, float("nan"))
