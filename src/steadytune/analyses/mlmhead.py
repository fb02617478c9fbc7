"""MLM heads for the forgetting probe: the pre-trained checkpoint's own, or one fitted on a
frozen pre-trained encoder (for checkpoints without one, like the packaged MiniLM).

Used by :mod:`steadytune.analyses.forgetting`; the protocol (tied decoder, identity/unigram
start, WikiText-2 valid, cache) is in docs/analyses.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from steadytune.analyses.loading import from_pretrained_quietly
from steadytune.analyses.mlmtext import make_blocks, mask_blocks
from steadytune.analyses.mlmtext import run_encoder as _run_encoder

HEAD_VERSION = 2
"""Bumped whenever :func:`fit_mlm_head` changes, so stale cached heads are not reused."""


# ----------------------------------------------------------------------------- MLM heads


class PretrainedMLMHead(nn.Module):
    """The MLM head of a pre-trained checkpoint, detached from its encoder."""

    source = "pretrained"

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)


class FittedMLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder tied to frozen pre-trained word embeddings (+ bias).

    The decoder matrix is a *copy* of the pre-trained input word embeddings held as a
    buffer, so it is never trained and no fine-tuned embedding can leak into it.
    """

    def __init__(self, word_embeddings: torch.Tensor, eps: float = 1e-12, source: str = "fitted") -> None:
        super().__init__()
        vocab, hidden = word_embeddings.shape
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab))
        self.register_buffer("decoder", word_embeddings.detach().clone(), persistent=False)
        self.source = source
        self.fit_stats: dict[str, float] = {}

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        x = self.norm(nn.functional.gelu(self.dense(hidden)))
        return x @ self.decoder.T + self.bias


def load_pretrained_mlm_head(model: str) -> PretrainedMLMHead | None:
    """The checkpoint's own MLM head, or None if it has none (any head weight missing).

    Raises:
        ModelError: the checkpoint cannot be loaded.
    """
    # transformers is heavy: imported when a model is read, not with the module
    from transformers import AutoModelForMaskedLM

    mlm, info = from_pretrained_quietly(AutoModelForMaskedLM, model, output_loading_info=True)
    base = mlm.base_model
    heads = [(name, child) for name, child in mlm.named_children()
             if child is not base and any(True for _ in child.parameters())]
    if len(heads) != 1:
        return None  # e.g. DistilBERT/ELECTRA spread the head over several modules
    name, head = heads[0]
    if any(key.startswith(name + ".") and not key.endswith("decoder.bias") for key in info.get("missing_keys", ())):
        return None
    return PretrainedMLMHead(head.eval())


def _fingerprint(encoder: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(encoder.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$STEADYTUNE_CACHE`` or ``~/.cache/steadytune``."""
    return Path(os.environ.get("STEADYTUNE_CACHE", Path.home() / ".cache" / "steadytune")).expanduser()


def fit_mlm_head(pretrained_encoder: nn.Module, tokenizer: Any, texts: Sequence[str], steps: int = 300,
                 seed: int = 0, *, cache_dir: str | Path | None = None, use_cache: bool = True,
                 seq_len: int = 128, mask_prob: float = 0.15, max_tokens: int | None = 100_000,
                 batch_size: int = 256, lr: float = 3e-4, text_name: str = "wikitext-2 valid") -> FittedMLMHead:
    """Train a :class:`FittedMLMHead` on the frozen pre-trained encoder (for checkpoints without one).

    The first ``max_tokens`` tokens of ``texts`` are masked as in :func:`mask_blocks`
    (seed ``seed``) and run once through the frozen encoder; the last 10% of those blocks
    are held out. The head starts as ``LN(gelu(h)) @ E.T + log unigram`` (dense = identity,
    bias = log frequencies of the tokens outside the held-out blocks) and is trained with
    Adam (constant ``lr``) on random batches of ``batch_size`` masked positions for
    ``steps`` steps. ``head.fit_stats`` records the held-out perplexity of the start and
    of the fitted head. The head is cached in ``cache_dir`` (default
    :func:`default_cache_dir`) under a key of the encoder's weights, the texts and every
    setting, so a repeated call loads it.

    Args:
        pretrained_encoder: the pre-trained model (its ``base_model`` is used, frozen).
        tokenizer, texts: its tokenizer; the text to fit on (WikiText-2 *valid*, never test).
        steps, seed: optimiser steps; seed of the masking and of the batch order.
        text_name: how the texts are named in the head's ``source``.

    Returns:
        The head in eval mode, with ``source = "fitted on frozen encoder (<text_name>, N steps)"``.

    Raises:
        ValueError: the texts give fewer than 10 blocks.
    """
    encoder = pretrained_encoder.base_model
    settings = dict(version=HEAD_VERSION, steps=steps, seed=seed, seq_len=seq_len, mask_prob=mask_prob,
                    max_tokens=max_tokens, batch_size=batch_size, lr=lr,
                    texts=hashlib.sha256("".join(texts).encode()).hexdigest(), encoder=_fingerprint(encoder))
    path = _cache_file(settings, cache_dir)
    eps = float(getattr(getattr(pretrained_encoder, "config", None), "layer_norm_eps", 1e-12))
    embeddings = encoder.get_input_embeddings().weight
    head = FittedMLMHead(embeddings, eps, f"fitted on frozen encoder ({text_name}, {steps} steps)")
    if use_cache and path.is_file():
        return _load_cached(head, path).to(embeddings.device).eval().requires_grad_(False)
    train, held, counts = _fitting_data(encoder, tokenizer, texts, seq_len, mask_prob, seed, max_tokens)
    _start_from_unigram(head, counts)
    head.to(train[0].device)
    start = _head_perplexity(head, *held)
    _train_head(head, *train, steps, seed, batch_size, lr)
    head.fit_stats = {"train_positions": len(train[1]), "heldout_positions": len(held[1]),
                      "heldout_perplexity_start": start, "heldout_perplexity": _head_perplexity(head, *held)}
    if use_cache:
        _save_cached(head, settings, path)
    return head.eval().requires_grad_(False)


def _cache_file(settings: dict[str, Any], cache_dir: str | Path | None) -> Path:
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "mlm-heads" / f"{key}.pt"


def _load_cached(head: FittedMLMHead, path: Path) -> FittedMLMHead:
    saved = torch.load(path, weights_only=True)
    head.load_state_dict(saved["state"])
    head.fit_stats = saved["stats"]
    return head


def _save_cached(head: FittedMLMHead, settings: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state": head.state_dict(), "stats": head.fit_stats, "settings": settings}, tmp)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file


Features = tuple[torch.Tensor, torch.Tensor]


def _fitting_data(encoder: nn.Module, tokenizer: Any, texts: Sequence[str], seq_len: int, mask_prob: float,
                  seed: int, max_tokens: int | None) -> tuple[Features, Features, torch.Tensor]:
    """Frozen features and targets of the training and held-out blocks, and the unigram token counts."""
    blocks = make_blocks(tokenizer, texts, seq_len)
    n_fit = len(blocks) if max_tokens is None else min(len(blocks), int(max_tokens) // (seq_len - 2))
    if n_fit < 10:
        raise ValueError(f"fitting an MLM head needs at least 10 blocks of {seq_len} tokens; got {n_fit}")
    n_train = n_fit - max(1, n_fit // 10)
    inputs, labels = mask_blocks(blocks[:n_fit], tokenizer, mask_prob, seed)
    train = _frozen_features(encoder, inputs[:n_train], labels[:n_train])
    held = _frozen_features(encoder, inputs[n_train:], labels[n_train:])
    vocab = encoder.get_input_embeddings().weight.shape[0]
    counted = np.concatenate([blocks[:n_train, 1:-1].ravel(), blocks[n_fit:, 1:-1].ravel()])
    return train, held, torch.from_numpy(np.bincount(counted, minlength=vocab)[:vocab])


@torch.no_grad()
def _start_from_unigram(head: FittedMLMHead, counts: torch.Tensor) -> None:
    """dense = identity, bias = log of the (add-½ smoothed) unigram frequencies."""
    head.dense.weight.copy_(torch.eye(head.dense.in_features))
    head.dense.bias.zero_()
    head.bias.copy_(torch.log((counts.double() + 0.5) / (counts.sum() + 0.5 * len(counts))).float())


@torch.no_grad()
def _head_perplexity(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> float:
    was_training = head.training
    head.eval()
    try:
        return float(torch.exp(nn.functional.cross_entropy(head(hidden).double(), targets)))
    finally:
        head.train(was_training)


@torch.no_grad()
def _frozen_features(encoder: nn.Module, inputs: np.ndarray, labels: np.ndarray,
                     batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(encoder.parameters()).device
    was_training = encoder.training
    encoder.eval()
    feats, golds = [], []
    try:
        for start in range(0, len(inputs), batch_size):
            gold = torch.from_numpy(labels[start:start + batch_size]).to(device)
            out = _run_encoder(encoder, None, torch.from_numpy(inputs[start:start + batch_size]).to(device))
            feats.append(out[gold != -100])
            golds.append(gold[gold != -100])
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(golds)


def _train_head(head: FittedMLMHead, hidden: torch.Tensor, targets: torch.Tensor, steps: int, seed: int,
                batch_size: int, lr: float) -> None:
    generator = torch.Generator().manual_seed(int(seed))
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for _ in range(steps):
        idx = torch.randint(len(targets), (min(batch_size, len(targets)),), generator=generator).to(hidden.device)
        loss = nn.functional.cross_entropy(head(hidden[idx]), targets[idx])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    head.eval()


def get_mlm_head(model: str, pretrained_encoder: nn.Module, tokenizer: Any, fit_texts: Sequence[str] | None = None,
                 *, steps: int = 300, seed: int = 0, **fit_kwargs: Any) -> nn.Module:
    """The checkpoint's pre-trained MLM head if it has one, else :func:`fit_mlm_head`.

    Raises:
        ValueError: a head must be fitted but ``fit_texts`` is None.
    """
    head = load_pretrained_mlm_head(model)
    if head is not None:
        return head
    if fit_texts is None:
        raise ValueError(f"{model} has no pre-trained MLM head; pass fit_texts (WikiText-2 valid) to fit one")
    return fit_mlm_head(pretrained_encoder, tokenizer, fit_texts, steps, seed, **fit_kwargs)
