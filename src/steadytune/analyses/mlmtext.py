"""WikiText-2 text for masked-LM probing: loading, chunking into blocks, BERT masking,
and the encoder call shared by the forgetting probe and MLM-head fitting."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from steadytune.analyses.loading import shared_data_candidates


def wikitext_path(split: str = "test", data_dir: str | Path | None = None) -> Path:
    """``<data>/wikitext-2/<split>.txt``; data dir from ``data_dir``, ``$STEADYTUNE_DATA``
    or ``../shared/data`` (beside the working directory or the source checkout).

    ``data_dir`` may also be the ``wikitext-2`` folder itself.

    Raises:
        FileNotFoundError: the file is in none of these places.
    """
    if split not in ("test", "valid"):
        raise ValueError(f"WikiText-2 split {split!r}; use 'test' or 'valid' (train is not shipped)")
    given = data_dir or os.environ.get("STEADYTUNE_DATA")
    roots = [Path(given).expanduser()] if given else shared_data_candidates()
    for root in roots:
        for candidate in (root / "wikitext-2" / f"{split}.txt", root / f"{split}.txt"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"WikiText-2 {split}.txt not found under {', '.join(map(str, roots))}; "
                            "pass --data-dir or set STEADYTUNE_DATA to the folder holding wikitext-2/")


def load_wikitext(split: str = "test", data_dir: str | Path | None = None) -> list[str]:
    """The raw lines (newlines kept) of a WikiText-2 split; see :func:`wikitext_path`."""
    with open(wikitext_path(split, data_dir), encoding="utf-8") as f:
        return f.readlines()


def _special(tokenizer: Any) -> tuple[int, int, int]:
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls_id is None or sep_id is None or tokenizer.mask_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} lacks a CLS/SEP/MASK token; MLM probing needs them")
    return int(cls_id), int(sep_id), int(tokenizer.mask_token_id)


def make_blocks(tokenizer: Any, texts: Sequence[str], seq_len: int = 128,
                max_tokens: int | None = None) -> np.ndarray:
    """Tokenise the joined ``texts`` and cut them into ``[CLS] + (seq_len-2) tokens + [SEP]``.

    The short tail is dropped; ``max_tokens`` keeps only the first
    ``max_tokens // (seq_len - 2)`` blocks.

    Returns:
        int64 array of shape (n_blocks, seq_len).
    """
    from transformers.utils import (
        logging as hf_logging,  # transformers is heavy: imported when a model is read
    )

    if seq_len < 3:
        raise ValueError(f"seq_len must be >= 3, got {seq_len}")
    cls_id, sep_id, _ = _special(tokenizer)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "sequence longer than max length": we chunk ourselves
    try:
        ids = np.asarray(tokenizer("".join(texts), add_special_tokens=False)["input_ids"], dtype=np.int64)
    finally:
        hf_logging.set_verbosity(verbosity)
    width = seq_len - 2
    n = len(ids) // width
    if max_tokens is not None:
        n = min(n, int(max_tokens) // width)
    body = ids[: n * width].reshape(n, width)
    return np.concatenate([np.full((n, 1), cls_id), body, np.full((n, 1), sep_id)], axis=1)


def mask_blocks(blocks: np.ndarray, tokenizer: Any, mask_prob: float = 0.15,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking: ``mask_prob`` of the non-special tokens; 80% [MASK], 10% random, 10% kept.

    Block ``i`` draws from ``Generator(SeedSequence([seed, i]))``, so its mask depends only
    on its tokens, ``seed`` and ``i``: it is the same for every model compared and does
    not change when ``max_tokens`` drops later blocks. Random replacements are drawn
    uniformly from the non-special vocabulary.

    Returns:
        ``(inputs, labels)``: corrupted ids, and the original ids at selected positions
        with -100 elsewhere.
    """
    _, _, mask_id = _special(tokenizer)
    special = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    normal = np.setdiff1d(np.arange(len(tokenizer), dtype=np.int64), special)
    inputs, labels = blocks.copy(), np.full_like(blocks, -100)
    candidate = ~np.isin(blocks, special)
    for i in range(len(blocks)):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i]))
        chosen = (rng.random(blocks.shape[1]) < mask_prob) & candidate[i]
        action = rng.random(blocks.shape[1])
        replacement = rng.choice(normal, size=blocks.shape[1])
        labels[i, chosen] = blocks[i, chosen]
        inputs[i, chosen & (action < 0.8)] = mask_id
        swap = chosen & (action >= 0.8) & (action < 0.9)
        inputs[i, swap] = replacement[swap]
    return inputs, labels


def run_encoder(encoder: nn.Module, params: dict[str, torch.Tensor] | None, input_ids: torch.Tensor) -> torch.Tensor:
    """Last hidden states of ``encoder`` (with ``params`` swapped in through ``functional_call`` if given)."""
    if params is None:
        return encoder(input_ids=input_ids).last_hidden_state
    return functional_call(encoder, params, args=(), kwargs={"input_ids": input_ids}).last_hidden_state


__all__ = ["load_wikitext", "make_blocks", "mask_blocks", "run_encoder", "wikitext_path"]
