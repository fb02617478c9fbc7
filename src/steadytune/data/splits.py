"""A data split (texts + labels) and seeded, stratified down-sampling.

Every loader returns a :class:`Split`: parallel lists of texts plus a NumPy label array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Split:
    """One split of a data set: texts, labels and where they came from."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: np.ndarray
    """int64 class ids, or float32 scores for regression."""
    source: str
    """The file (or hub id) the split was read from, for messages and provenance."""
    label_names: tuple[str, ...] | None
    """Label strings in class-id order; None for regression."""

    def __post_init__(self) -> None:
        other = self.texts_a if self.texts_b is None else self.texts_b
        sizes = {len(self.texts_a), len(self.labels), len(other)}
        if len(sizes) != 1:
            raise ValueError(f"inconsistent split sizes {sorted(sizes)} for {self.source}")

    def __len__(self) -> int:
        return len(self.texts_a)

    @property
    def is_regression(self) -> bool:
        """True when the labels are float scores."""
        return self.label_names is None

    def subset(self, idx: np.ndarray) -> Split:
        """A new split holding the examples at positions ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = idx.tolist()
        texts_b = None if self.texts_b is None else [self.texts_b[i] for i in pick]
        return Split([self.texts_a[i] for i in pick], texts_b, self.labels[idx], self.source,
                     self.label_names)


def sample_indices(split: Split, n: int, seed: int, stratify: bool = True) -> np.ndarray:
    """Sorted positions of a seeded random subset of ``n`` examples (all when ``n >= len(split)``).

    Stratified sampling gives every class ``n * count / total`` examples, rounded by
    largest remainder so the sizes sum to exactly ``n``. Regression splits are never
    stratified.

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"downsample size must be >= 1, got {n}")
    total = len(split)
    if n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    if not stratify or split.is_regression:
        return np.sort(rng.choice(total, size=n, replace=False))
    classes, counts = np.unique(split.labels, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    # Largest remainder; ties go to the lower class id (stable sort) for determinism.
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: n - int(quota.sum())]] += 1
    chosen = [rng.choice(np.flatnonzero(split.labels == c), size=int(k), replace=False)
              for c, k in zip(classes, quota)]
    return np.sort(np.concatenate(chosen))


def downsample(split: Split, n: int, seed: int, stratify: bool = True) -> Split:
    """A seeded random subset of ``n`` examples, in their original order (:func:`sample_indices`).

    Args:
        split: the full split.
        n: subset size; ``n >= len(split)`` returns ``split`` itself.
        seed: seed of ``numpy.random.default_rng``; same seed, same subset.
        stratify: keep the label proportions (classification only).

    Raises:
        ValueError: ``n < 1``.
    """
    if n >= len(split) and n >= 1:
        return split
    return split.subset(sample_indices(split, n, seed, stratify))


def holdout(split: Split, fraction: float, seed: int, stratify: bool = True) -> tuple[Split, Split]:
    """Carve a seeded (stratified) dev split out of ``split``: ``(rest, held_out)``.

    ``round(fraction * len(split))`` examples (at least 1, and at least one left to train
    on) are drawn as by :func:`downsample` with ``seed``; the rest keep their order. The
    same arguments always give the same two parts, so the train and the dev split of a
    run, loaded separately, never overlap.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or fewer than 2 examples.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"dev fraction must be in (0, 1), got {fraction}")
    if len(split) < 2:
        raise ValueError(f"{split.source}: {len(split)} example(s) cannot be split into train and dev")
    n = min(len(split) - 1, max(1, round(fraction * len(split))))
    held = sample_indices(split, n, seed, stratify)
    rest = np.setdiff1d(np.arange(len(split)), held)
    return split.subset(rest), split.subset(held)
