"""Tokenisation, seeded batch order and dynamic padding.

Examples are tokenised once, unpadded (:func:`encode`); each epoch gets a batch order
derived from ``(seed, epoch)`` only (:func:`batch_order`), and each batch is padded to
its own longest example (:func:`collate`). Nothing here touches a global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from steadytune.data.splits import Split

SEGMENT_MODES = ("correct", "zeros")
BATCH_MODES = ("length_grouped", "random")
MEGABATCH_FACTOR = 50
"""Length grouping sorts windows of this many batches (as HF's LengthGroupedSampler)."""


@dataclass
class Encoded:
    """A tokenised split: one unpadded int64 array per example."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    """Segment ids per example; None when the model has no token types (RoBERTa)."""
    labels: np.ndarray
    """int64 class ids, or float32 regression scores."""
    lengths: np.ndarray
    """int64 token count of every example."""

    def __len__(self) -> int:
        return len(self.input_ids)


def encode(split: Split, tokenizer: Any, max_length: int = 128, segment_ids: str = "correct",
           use_token_types: bool = True) -> Encoded:
    """Tokenise a split in one batched call, truncating pairs longest-first.

    Args:
        split: texts and labels.
        tokenizer: a Hugging Face tokenizer (fast ones are much quicker here).
        max_length: maximum tokens per example, special tokens included.
        segment_ids: ``correct`` keeps the tokenizer's segment ids (text B = 1);
            ``zeros`` makes them all 0, replicating the official code (paper §3.3).
        use_token_types: False for models without segment embeddings
            (``type_vocab_size < 2``, e.g. RoBERTa): ``token_type_ids`` is None.

    Returns:
        The encoded split.

    Raises:
        ValueError: unknown ``segment_ids`` or ``max_length < 2``.
    """
    if segment_ids not in SEGMENT_MODES:
        raise ValueError(f"segment_ids={segment_ids!r}; use one of {', '.join(SEGMENT_MODES)}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    want_types = use_token_types and segment_ids == "correct"
    out = tokenizer(split.texts_a, split.texts_b, truncation="longest_first",
                    max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=want_types)
    input_ids = [np.asarray(ids, dtype=np.int64) for ids in out["input_ids"]]
    token_types: list[np.ndarray] | None = None
    if use_token_types:
        if want_types and "token_type_ids" in out:
            token_types = [np.asarray(t, dtype=np.int64) for t in out["token_type_ids"]]
        else:  # "zeros" mode, or a tokenizer that returns no segment ids
            token_types = [np.zeros_like(ids) for ids in input_ids]
    lengths = np.fromiter((len(ids) for ids in input_ids), dtype=np.int64, count=len(input_ids))
    return Encoded(input_ids, token_types, np.asarray(split.labels), lengths)


def _chunks(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def batch_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                mode: str = "length_grouped") -> list[np.ndarray]:
    """The batches (arrays of example indices) of one training epoch.

    Both modes start from a permutation drawn from
    ``Generator(SeedSequence([seed, epoch]))``, so the order depends only on the data
    order seed and the epoch, and differs between epochs. ``random`` chunks it into
    batches. ``length_grouped`` sorts windows of ``50 * batch_size`` examples by
    length (descending, stable), chunks them, and shuffles the batch order with the
    same generator, so batches need little padding but still come in random order.
    Every index appears exactly once; only the last batch may be smaller.

    Args:
        lengths: token count of every example.
        batch_size: examples per batch.
        seed: data-order seed (>= 0).
        epoch: epoch number (>= 0).
        mode: ``length_grouped`` or ``random``.

    Returns:
        One int64 index array per batch.

    Raises:
        ValueError: unknown mode, ``batch_size < 1`` or a negative seed/epoch.
    """
    if mode not in BATCH_MODES:
        raise ValueError(f"batching mode {mode!r}; use one of {', '.join(BATCH_MODES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be >= 0, got seed={seed}, epoch={epoch}")
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch]))
    perm = rng.permutation(len(lengths))
    if mode == "random":
        return _chunks(perm, batch_size)
    batches: list[np.ndarray] = []
    for mega in _chunks(perm, MEGABATCH_FACTOR * batch_size):
        # Negating keeps argsort stable for ties while sorting longest first.
        mega = mega[np.argsort(-lengths[mega], kind="stable")]
        batches.extend(_chunks(mega, batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation batches sorted by length (longest first) for little padding.

    Every index appears once; scatter predictions back with the returned indices.

    Raises:
        ValueError: ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return _chunks(order, batch_size)


def collate(enc: Encoded, idx: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """Pad the examples ``idx`` on the right to the longest among them.

    Args:
        enc: the encoded split.
        idx: example indices of the batch.
        pad_id: the tokenizer's ``pad_token_id``.

    Returns:
        ``input_ids``, ``attention_mask`` (1 = real token), ``token_type_ids`` (only
        when ``enc`` has them; padded with 0) as int64 tensors of shape (batch, longest),
        and ``labels`` (int64, or float32 for regression) of shape (batch,).
    """
    idx = np.asarray(idx, dtype=np.int64)
    lengths = enc.lengths[idx]
    width = int(lengths.max()) if len(idx) else 0
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    # Position j is real for row r when j < length[r]; build the mask in one step.
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    types = np.zeros_like(ids) if enc.token_type_ids is not None else None
    for row, i in enumerate(idx.tolist()):
        ids[row, : lengths[row]] = enc.input_ids[i]
        if types is not None:
            types[row, : lengths[row]] = enc.token_type_ids[i]  # type: ignore[index]
    labels = enc.labels[idx]
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)),
    }
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    return batch


__all__ = ["Encoded", "encode", "batch_order", "eval_batches", "collate",
           "SEGMENT_MODES", "BATCH_MODES"]
