"""A run's data, ready to train on: loaded, down-sampled and tokenised splits and how to score them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from steadytune.config.run import RunConfig
from steadytune.data.batching import Encoded, encode
from steadytune.data.loading import load_split
from steadytune.data.splits import Split, downsample
from steadytune.data.tasks import TaskSpec, get_task, is_glue_task
from steadytune.training.metrics import majority_baseline, metric_kind


@dataclass
class RunData:
    """The train and dev splits of one run, tokenised, with the metric that scores them."""

    task: TaskSpec | None
    """The GLUE task; None for ``custom`` and ``hub:`` data."""
    train: Split
    """The (down-sampled) training split."""
    dev: Split
    """The (down-sampled) dev split."""
    train_enc: Encoded
    """``train`` tokenised."""
    dev_enc: Encoded
    """``dev`` tokenised."""
    regression: bool
    """Whether the labels are scores (STS-B) rather than classes."""
    metric: str
    """The run's metric: it decides the best evaluation and whether the run failed."""
    metric_kind: str
    """Which :func:`~steadytune.training.metrics.compute_metrics` family scores it."""
    baseline: float
    """The majority-class (or constant) baseline of ``metric`` on ``dev``."""
    pad_id: int
    """The tokenizer's padding id (0 if it has none)."""

    @property
    def num_labels(self) -> int:
        """Output size of the classifier head: 1 for regression, else the number of classes
        (the split's label names, or the distinct training labels if it has none)."""
        if self.regression:
            return 1
        return len(self.train.label_names or np.unique(self.train.labels))


def prepare_data(cfg: RunConfig, tokenizer: Any, use_token_types: bool) -> RunData:
    """Load, down-sample and tokenise the train and dev splits of ``cfg.task``.

    Args:
        cfg: the run's configuration (task, data location, limits, ``max_length``,
            ``segment_ids``, ``metric``).
        tokenizer: the model's ``transformers`` tokenizer.
        use_token_types: whether the model has segment embeddings for sentence B.

    Returns:
        The :class:`RunData`. ``train_limit`` / ``dev_limit`` subsets are drawn with
        ``cfg.train_limit_seed`` (stratified when ``cfg.stratify``, never for regression),
        so every run seed sees the same examples.

    Raises:
        DataError: the data cannot be found or read, or ``cfg.task`` is unknown.
        ValueError: an unknown ``cfg.metric``.
    """
    train, dev = load_split(cfg, "train"), load_split(cfg, "dev")
    regression = train.is_regression
    if cfg.train_limit:
        train = downsample(train, cfg.train_limit, cfg.train_limit_seed, stratify=cfg.stratify and not regression)
    if cfg.dev_limit:  # quick studies: a fixed subset, the same for every run seed
        dev = downsample(dev, cfg.dev_limit, cfg.train_limit_seed, stratify=cfg.stratify and not regression)
    task = get_task(cfg.task) if is_glue_task(cfg.task) else None
    metric = cfg.metric or (task.metric if task else ("pearson" if regression else "acc"))
    kind = metric_kind(metric)
    baseline = majority_baseline(train.labels, dev.labels, metric, regression=regression)
    enc_args = dict(max_length=cfg.max_length, segment_ids=cfg.segment_ids, use_token_types=use_token_types)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return RunData(task, train, dev, encode(train, tokenizer, **enc_args), encode(dev, tokenizer, **enc_args),
                   regression, metric, kind, float(baseline), int(pad_id))


__all__ = ["RunData", "prepare_data"]
