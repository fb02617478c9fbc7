"""GLUE dev-set metrics, majority-class baselines and the failed-run rule.

Accuracy, F1 and MCC are numpy; the correlations are SciPy's (``scipy.stats``), with
steadytune's conventions for constant and non-finite inputs. The values match
scikit-learn / SciPy (checked in ``tests/test_metrics.py``) and are in
their units: accuracy, F1 and MCC in [0, 1] (MCC in [-1, 1]), correlations in [-1, 1].
Multiplying by 100, as the paper prints them, is left to :mod:`steadytune.stats`.

The failed-run rule (paper §2.3, after Dodge et al. 2020): a run has *failed* when its
primary metric at the end of training is no better than the majority-class classifier,
i.e. ``value <= baseline``. For CoLA that is MCC <= 0; for regression (STS-B) it is a
correlation <= 0, since a constant prediction has no correlation.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats

__all__ = ["FAILED_TOL", "METRIC_KINDS", "accuracy", "compute_metrics", "f1_binary",
           "is_failed", "majority_baseline", "majority_prediction", "matthews_corrcoef",
           "metric_kind", "pearson", "spearman"]

FAILED_TOL = 1e-9
"""Absolute slack in ``value <= baseline``: a run that ties the majority classifier up to
float round-off (e.g. (acc+F1)/2 summed in another order) still counts as failed. Dev-set
metrics move in steps of about 1/len(dev) >= 1e-5, so no real improvement is this small."""


def _pair(preds: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten two array-likes and check they are non-empty and of equal length."""
    p, y = np.asarray(preds).ravel(), np.asarray(labels).ravel()
    if p.shape != y.shape:
        raise ValueError(f"preds and labels differ in length: {p.size} vs {y.size}")
    if p.size == 0:
        raise ValueError("preds and labels are empty")
    return p, y


def accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predictions equal to the label.

    Args:
        preds: predicted class ids, any shape (flattened).
        labels: true class ids, same number of elements.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: if the inputs are empty or differ in length.
    """
    p, y = _pair(preds, labels)
    return float(np.mean(p == y))


def f1_binary(preds: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 score of the ``positive`` class (every other id counts as negative).

    Follows ``sklearn.metrics.f1_score(..., zero_division=0)``: when there are no true
    positives (including the case with no positive prediction and no positive label),
    F1 is 0.0.

    Args:
        preds: predicted class ids.
        labels: true class ids.
        positive: the class id whose F1 is computed.

    Returns:
        F1 = 2·TP / (2·TP + FP + FN), in [0, 1].

    Raises:
        ValueError: if the inputs are empty or differ in length.
    """
    p, y = _pair(preds, labels)
    pp, yp = p == positive, y == positive
    tp = int(np.sum(pp & yp))
    fp = int(np.sum(pp & ~yp))
    fn = int(np.sum(~pp & yp))
    denom = 2 * tp + fp + fn
    return 0.0 if tp == 0 or denom == 0 else 2.0 * tp / denom


def matthews_corrcoef(preds: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient, binary or multiclass (Gorodkin's R_K).

    Same formula as ``sklearn.metrics.matthews_corrcoef``, computed from the confusion
    matrix over the union of the classes seen in ``preds`` and ``labels``.

    Args:
        preds: predicted class ids.
        labels: true class ids.

    Returns:
        MCC in [-1, 1]; 0.0 when undefined (constant predictions or constant labels),
        as scikit-learn returns.

    Raises:
        ValueError: if the inputs are empty or differ in length.
    """
    p, y = _pair(preds, labels)
    _, codes = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = int(codes.max()) + 1
    y_code, p_code = codes[: y.size], codes[y.size :]
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (y_code, p_code), 1.0)
    t_sum, p_sum = cm.sum(axis=1), cm.sum(axis=0)
    n = float(y.size)
    cov_ytyp = float(np.trace(cm)) * n - float(t_sum @ p_sum)
    cov_ypyp = n * n - float(p_sum @ p_sum)
    cov_ytyt = n * n - float(t_sum @ t_sum)
    if cov_ypyp * cov_ytyt == 0.0:
        return 0.0
    return float(np.clip(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp), -1.0, 1.0))


def _finite_pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | float:
    """The two samples as float64, or the value a correlation of them takes by convention.

    NaN when either holds a non-finite value, 0.0 when either is constant (tested by
    equality: ``a - a.mean()`` may be ~1e-16); SciPy would return NaN with a warning there.
    """
    a, b = _pair(x, y)
    a, b = a.astype(np.float64), b.astype(np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")
    if np.all(a == a[0]) or np.all(b == b[0]):
        return 0.0
    return a, b


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation: ``scipy.stats.pearsonr(x, y).statistic``.

    Args:
        x: first sample (e.g. predicted scores).
        y: second sample, same length.

    Returns:
        Correlation in [-1, 1]. If either input is constant (SciPy returns NaN with a
        warning) this returns 0.0: a constant prediction carries no correlation, which is
        also the majority baseline for regression. Non-finite inputs give NaN, which
        :func:`is_failed` counts as a failed run.

    Raises:
        ValueError: if the inputs are empty or differ in length.
    """
    pair = _finite_pair(x, y)
    if isinstance(pair, float):
        return pair
    return float(np.clip(stats.pearsonr(*pair).statistic, -1.0, 1.0))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (ties get their average rank): ``scipy.stats.spearmanr``.

    Args:
        x: first sample.
        y: second sample, same length.

    Returns:
        Rank correlation in [-1, 1]; 0.0 when either input is constant, NaN when an
        input is non-finite (see :func:`pearson`).

    Raises:
        ValueError: if the inputs are empty or differ in length.
    """
    pair = _finite_pair(x, y)
    if isinstance(pair, float):
        return pair
    return float(np.clip(stats.spearmanr(*pair).statistic, -1.0, 1.0))


def _acc(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"acc": accuracy(p, y)}


def _acc_f1(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    acc, f1 = accuracy(p, y), f1_binary(p, y)
    return {"acc": acc, "f1": f1, "acc_and_f1": (acc + f1) / 2.0}


def _mcc(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"mcc": matthews_corrcoef(p, y), "acc": accuracy(p, y)}


def _corr(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    r, rho = pearson(p, y), spearman(p, y)
    return {"pearson": r, "spearmanr": rho, "corr": (r + rho) / 2.0}


_KIND_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {
    "acc": _acc,
    "acc_f1": _acc_f1,
    "mcc": _mcc,
    "corr": _corr,
}

METRIC_KINDS: dict[str, str] = {
    "acc": "acc",
    "f1": "acc_f1",
    "acc_and_f1": "acc_f1",
    "mcc": "mcc",
    "pearson": "corr",
    "spearmanr": "corr",
    "corr": "corr",
}
"""Primary metric name -> the metric set (``kind``) that contains it. Plain ``acc`` maps
to kind ``acc``; ask :func:`compute_metrics` for ``acc_f1`` or ``mcc`` to get it too."""


def compute_metrics(kind: str, preds: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """All metrics of one metric set, as the GLUE code reports them.

    Args:
        kind: ``"acc"`` -> {acc}; ``"acc_f1"`` -> {acc, f1, acc_and_f1} (mean of the
            two); ``"mcc"`` -> {mcc, acc}; ``"corr"`` (regression) -> {pearson,
            spearmanr, corr} (mean of the two).
        preds: class ids, or scores for ``"corr"``.
        labels: true class ids or scores.

    Returns:
        Metric name -> value, in scikit-learn units (not ×100).

    Raises:
        ValueError: for an unknown ``kind`` (the message lists the valid ones), or
            empty / mismatched inputs.
    """
    if kind not in _KIND_FUNCS:
        raise ValueError(f"unknown metric kind {kind!r}; valid: {', '.join(_KIND_FUNCS)}")
    p, y = _pair(preds, labels)
    return _KIND_FUNCS[kind](p, y)


def metric_kind(metric: str) -> str:
    """The metric set (``kind`` for :func:`compute_metrics`) that a primary metric is in.

    Args:
        metric: one of acc, f1, acc_and_f1, mcc, pearson, spearmanr, corr.

    Returns:
        ``"acc"``, ``"acc_f1"``, ``"mcc"`` or ``"corr"``.

    Raises:
        ValueError: for an unknown metric name (the message lists the valid ones).
    """
    if metric not in METRIC_KINDS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRIC_KINDS)}")
    return METRIC_KINDS[metric]


def majority_prediction(train_labels: np.ndarray, regression: bool) -> float | int:
    """The constant prediction of the majority baseline.

    Args:
        train_labels: training labels (class ids, or scores for regression).
        regression: if True, predict the training mean.

    Returns:
        The most frequent training class (ties -> the smallest id), or the training mean.

    Raises:
        ValueError: if ``train_labels`` is empty.
    """
    y = np.asarray(train_labels).ravel()
    if y.size == 0:
        raise ValueError("train_labels is empty")
    if regression:
        return float(np.mean(y))
    classes, counts = np.unique(y, return_counts=True)  # sorted, argmax takes the first
    return classes[int(np.argmax(counts))].item()


def majority_baseline(
    train_labels: np.ndarray, dev_labels: np.ndarray, metric: str, regression: bool = False
) -> float:
    """Dev ``metric`` of the classifier that always predicts the training majority.

    E.g. RTE accuracy 146/277 = 0.527; MRPC acc 0.684, F1 0.812, acc_and_f1 0.748;
    CoLA MCC 0.0; any correlation metric 0.0 (a constant has no correlation).

    Args:
        train_labels: training labels, which decide the majority class (or mean).
        dev_labels: dev labels the constant prediction is scored against.
        metric: the primary metric name (see :func:`metric_kind`).
        regression: True for a regression task (STS-B).

    Returns:
        The baseline value, in the same units as :func:`compute_metrics`.

    Raises:
        ValueError: for an unknown metric, a classification metric with
            ``regression=True``, or empty labels.
    """
    kind = metric_kind(metric)
    if regression and kind != "corr":
        raise ValueError(f"metric {metric!r} is for classification, not regression")
    y = np.asarray(dev_labels).ravel()
    preds = np.full(y.shape, majority_prediction(train_labels, regression))
    return compute_metrics(kind, preds, y)[metric]


def is_failed(value: float, baseline: float) -> bool:
    """Whether a run failed: its value is no better than the majority baseline.

    Args:
        value: the run's primary metric at the end of training.
        baseline: the majority baseline in the same units.

    Returns:
        True if ``value <= baseline`` (up to :data:`FAILED_TOL`) or ``value`` is NaN
        (diverged). A NaN baseline never fails a finite value.
    """
    return bool(np.isnan(value) or value <= baseline + FAILED_TOL)
