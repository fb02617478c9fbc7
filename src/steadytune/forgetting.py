"""Catastrophic-forgetting probe (paper Fig. 2): MLM perplexity after top-k layer swaps.

``forgetting_curve`` measures masked-LM perplexity on WikiText-2 of a fine-tuned
encoder whose top ``k`` transformer blocks are replaced by their pre-trained weights,
for k = 0 (fully fine-tuned) ... L (all blocks pre-trained). The swap happens in a
parameter dict passed to ``torch.func.functional_call``: the caller's models are never
modified. The protocol (chunking, masking, heads) is documented in docs/analyses.md.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

ProgressFn = Callable[[int, int, dict[str, Any]], None]

HEAD_VERSION = 2
"""Bumped whenever :func:`fit_mlm_head` changes, so stale cached heads are not reused."""

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# ----------------------------------------------------------------------------- data


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
    roots = [Path(given).expanduser()] if given else [
        Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"]
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
    from transformers.utils import logging as hf_logging

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


# ----------------------------------------------------------------------------- evaluation


def _run_encoder(encoder: nn.Module, params: dict[str, torch.Tensor] | None, input_ids: torch.Tensor) -> torch.Tensor:
    if params is None:
        return encoder(input_ids=input_ids).last_hidden_state
    return functional_call(encoder, params, args=(), kwargs={"input_ids": input_ids}).last_hidden_state


@torch.no_grad()
def _perplexity(encoder: nn.Module, params: dict[str, torch.Tensor] | None, head: nn.Module,
                inputs: np.ndarray, labels: np.ndarray, batch_size: int) -> tuple[float, int]:
    """exp(mean cross-entropy over masked positions) and the number of masked positions."""
    device = next(encoder.parameters()).device
    flags = [(m, m.training) for m in (encoder, head)]
    encoder.eval()
    head.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    try:
        for start in range(0, len(inputs), batch_size):
            ids = torch.from_numpy(inputs[start:start + batch_size]).to(device)
            gold = torch.from_numpy(labels[start:start + batch_size]).to(device)
            picked = gold != -100
            if not bool(picked.any()):
                continue
            hidden = _run_encoder(encoder, params, ids)[picked]
            logits = head(hidden).double()  # float64 softmax: exact enough to compare models
            total += nn.functional.cross_entropy(logits, gold[picked], reduction="sum")
            count += int(picked.sum())
    finally:
        for module, flag in flags:
            module.train(flag)
    if count == 0:
        raise ValueError("no token was masked: give more text or a larger mask_prob")
    return float(torch.exp(total / count)), count


def _prepare(tokenizer: Any, texts: Sequence[str], seq_len: int, mask_prob: float, seed: int,
             max_tokens: int | None) -> tuple[np.ndarray, np.ndarray]:
    blocks = make_blocks(tokenizer, texts, seq_len, max_tokens)
    if len(blocks) == 0:
        raise ValueError(f"texts give fewer than {seq_len - 2} tokens: not one block of seq_len={seq_len}")
    return mask_blocks(blocks, tokenizer, mask_prob, seed)


def mlm_perplexity(encoder_model: nn.Module, mlm_head: nn.Module, tokenizer: Any, texts: Sequence[str], *,
                   seq_len: int = 128, mask_prob: float = 0.15, seed: int = 0, batch_size: int = 32,
                   max_tokens: int | None = None) -> float:
    """Masked-LM perplexity of an encoder (its ``base_model``) with ``mlm_head`` on ``texts``.

    Args:
        encoder_model: any BERT-family model (``*ForSequenceClassification``, ``AutoModel``,
            ``*ForMaskedLM``); its ``base_model`` is used, in eval mode.
        mlm_head: maps hidden states (..., hidden) to vocabulary logits (..., vocab).
        tokenizer: the model's tokenizer.
        texts: raw text lines, joined before tokenising (see :func:`make_blocks`).
        seq_len, mask_prob, seed, max_tokens: see :func:`make_blocks` and :func:`mask_blocks`.
        batch_size: blocks per forward pass.

    Returns:
        exp(mean cross-entropy over the masked positions).

    Raises:
        ValueError: the texts are too short for one block, or nothing was masked.
    """
    inputs, labels = _prepare(tokenizer, texts, seq_len, mask_prob, seed, max_tokens)
    return _perplexity(encoder_model.base_model, None, mlm_head, inputs, labels, batch_size)[0]


def _layer_prefixes(encoder: nn.Module) -> list[str]:
    """Parameter-name prefixes (``encoder.layer.3.``) of the transformer blocks, bottom to top."""
    from steadytune.models import encoder_layers

    names = {id(module): name for name, module in encoder.named_modules()}
    return [names[id(layer)] + "." for layer in encoder_layers(encoder)]


def _embedding_prefix(encoder: nn.Module) -> str:
    for name in ("embeddings", "embedding"):
        if isinstance(getattr(encoder, name, None), nn.Module):
            return name + "."
    raise ValueError(f"{type(encoder).__name__} has no `embeddings` submodule to swap")


def swapped_params(finetuned: nn.Module, pretrained: nn.Module, k: int,
                   swap_embeddings: bool = False) -> dict[str, torch.Tensor]:
    """Parameters of ``finetuned.base_model`` with the top ``k`` blocks from ``pretrained``.

    The tensors are the models' own (no copies, nothing modified); use the dict with
    ``torch.func.functional_call(finetuned.base_model, ...)``.

    Raises:
        ValueError: ``k`` out of range, or the two encoders' parameters do not match.
    """
    ft, pt = finetuned.base_model, pretrained.base_model
    prefixes = _layer_prefixes(ft)
    if not 0 <= k <= len(prefixes):
        raise ValueError(f"k={k} outside 0..{len(prefixes)} (the encoder has {len(prefixes)} layers)")
    swap = tuple(prefixes[len(prefixes) - k:]) if k else ()
    if swap_embeddings:
        swap += (_embedding_prefix(ft),)
    pt_params = dict(pt.named_parameters())
    params = {}
    for name, param in ft.named_parameters():
        if swap and name.startswith(swap):
            other = pt_params.get(name)
            if other is None or other.shape != param.shape:
                raise ValueError(f"pre-trained encoder has no parameter {name} of shape {tuple(param.shape)}; "
                                 "the two models must share one architecture")
            params[name] = other
        else:
            params[name] = param
    return params


def forgetting_curve(finetuned: nn.Module, pretrained: nn.Module, mlm_head: nn.Module, tokenizer: Any,
                     texts: Sequence[str], ks: Sequence[int] | None = None, *, swap_embeddings: bool = True,
                     seq_len: int = 128, mask_prob: float = 0.15, seed: int = 0, batch_size: int = 32,
                     max_tokens: int | None = None, progress: ProgressFn | None = None) -> pd.DataFrame:
    """MLM perplexity of ``finetuned`` with its top-k blocks reset to ``pretrained`` (paper Fig. 2).

    The embedding layer stays fine-tuned in every row (k counts transformer blocks). With
    ``swap_embeddings`` one more row (k = L, ``embeddings="pretrained"``) swaps the
    embeddings too: that is the whole pre-trained encoder, and its perplexity equals
    ``mlm_perplexity(pretrained, ...)`` exactly. The masked corpus is built once and is
    identical for every k.

    Args:
        finetuned: the fine-tuned model (e.g. ``*ForSequenceClassification``).
        pretrained: the pre-trained model of the same architecture.
        mlm_head: hidden states -> vocabulary logits; the same head for every k (see
            :func:`get_mlm_head`). Its ``source`` attribute, if any, goes in ``mlm_head``.
        tokenizer, texts, seq_len, mask_prob, seed, batch_size, max_tokens: as
            :func:`mlm_perplexity`.
        ks: numbers of top blocks to swap (default 0 ... L).
        progress: called as ``progress(i, n_rows, row)`` after each row.

    Returns:
        One row per k: ``k, embeddings, perplexity, n_tokens, masked_tokens, n_layers, mlm_head``.

    Raises:
        ValueError: a k out of range, mismatched models, or texts too short.
    """
    inputs, labels = _prepare(tokenizer, texts, seq_len, mask_prob, seed, max_tokens)
    n_layers = len(_layer_prefixes(finetuned.base_model))
    ks = list(range(n_layers + 1)) if ks is None else [int(k) for k in ks]
    plan = [(k, False) for k in ks] + ([(n_layers, True)] if swap_embeddings else [])
    source = str(getattr(mlm_head, "source", "user-supplied"))
    rows = []
    for i, (k, emb) in enumerate(plan):
        params = swapped_params(finetuned, pretrained, k, swap_embeddings=emb)
        ppl, masked = _perplexity(finetuned.base_model, params, mlm_head, inputs, labels, batch_size)
        rows.append({"k": k, "embeddings": "pretrained" if emb else "finetuned", "perplexity": ppl,
                     "n_tokens": int(inputs.shape[0] * (seq_len - 2)), "masked_tokens": masked,
                     "n_layers": n_layers, "mlm_head": source})
        if progress is not None:
            progress(i + 1, len(plan), rows[-1])
    return pd.DataFrame(rows)


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
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    from steadytune.models import _load_error, resolve_model_path

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        mlm, info = AutoModelForMaskedLM.from_pretrained(resolve_model_path(model), output_loading_info=True)
    except Exception as exc:
        raise _load_error(model, exc) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
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
    bias = log frequencies of all tokens of ``texts`` outside the held-out blocks) and is
    trained with Adam (constant ``lr``) on random batches of ``batch_size`` masked
    positions for ``steps`` steps. ``head.fit_stats`` records the held-out perplexity of
    the unigram start and of the fitted head. The result is cached in ``cache_dir``
    (default :func:`default_cache_dir`) under a key made of the encoder's weights, the
    texts and every setting, so a repeated call loads it.

    Args:
        pretrained_encoder: the pre-trained model (its ``base_model`` is used, frozen).
        tokenizer: its tokenizer.
        texts: text to fit on; use WikiText-2 *valid*, never the test split.
        steps: optimiser steps.
        seed: seed of the masking and of the batch order.
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
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = path / "mlm-heads" / f"{key}.pt"
    embeddings = encoder.get_input_embeddings().weight
    eps = float(getattr(getattr(pretrained_encoder, "config", None), "layer_norm_eps", 1e-12))
    head = FittedMLMHead(embeddings, eps, f"fitted on frozen encoder ({text_name}, {steps} steps)")
    if use_cache and path.is_file():
        saved = torch.load(path, weights_only=True)
        head.load_state_dict(saved["state"])
        head.fit_stats = saved["stats"]
        return head.to(embeddings.device).eval().requires_grad_(False)

    blocks = make_blocks(tokenizer, texts, seq_len)
    n_fit = len(blocks) if max_tokens is None else min(len(blocks), int(max_tokens) // (seq_len - 2))
    if n_fit < 10:
        raise ValueError(f"fitting an MLM head needs at least 10 blocks of {seq_len} tokens; got {n_fit}")
    n_train = n_fit - max(1, n_fit // 10)
    inputs, labels = mask_blocks(blocks[:n_fit], tokenizer, mask_prob, seed)
    hidden, targets = _frozen_features(encoder, inputs[:n_train], labels[:n_train])
    held_hidden, held_targets = _frozen_features(encoder, inputs[n_train:], labels[n_train:])
    counted = np.concatenate([blocks[:n_train, 1:-1].ravel(), blocks[n_fit:, 1:-1].ravel()])
    counts = torch.from_numpy(np.bincount(counted, minlength=embeddings.shape[0])[: embeddings.shape[0]])
    with torch.no_grad():
        head.dense.weight.copy_(torch.eye(embeddings.shape[1]))
        head.dense.bias.zero_()
        head.bias.copy_(torch.log((counts.double() + 0.5) / (counts.sum() + 0.5 * len(counts))).float())
    head.to(hidden.device)
    start = _head_perplexity(head, held_hidden, held_targets)
    _train_head(head, hidden, targets, steps, seed, batch_size, lr)
    head.fit_stats = {"train_positions": len(targets), "heldout_positions": len(held_targets),
                      "heldout_perplexity_start": start,
                      "heldout_perplexity": _head_perplexity(head, held_hidden, held_targets)}
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"state": head.state_dict(), "stats": head.fit_stats, "settings": settings}, tmp)
        tmp.replace(path)
    return head.eval().requires_grad_(False)


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


def plot_forgetting(df: pd.DataFrame, label: str = "model", reference: float | None = None) -> Figure:
    """Perplexity against k, one line per ``label`` value (log y); returns a matplotlib Figure.

    Rows with ``embeddings == "pretrained"`` are drawn as stars; ``reference`` (e.g. the
    pre-trained perplexity) as a dashed line.
    """
    fig, ax = _figure(5.5, 3.8)
    groups = df.groupby(label, sort=False) if label in df.columns else [("", df)]
    for name, part in groups:
        layers = part[part["embeddings"] == "finetuned"].sort_values("k")
        (line,) = ax.plot(layers["k"], layers["perplexity"], marker="o", label=str(name) or None)
        full = part[part["embeddings"] == "pretrained"]
        ax.plot(full["k"], full["perplexity"], marker="*", markersize=12, linestyle="none", color=line.get_color())
    if reference is not None:
        ax.axhline(reference, color="grey", linestyle="--", linewidth=1, label="pre-trained")
    ax.set_yscale("log")
    ax.set_xlabel("k = number of top layers reset to pre-trained weights")
    ax.set_ylabel("MLM perplexity (WikiText-2)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from steadytune.plots import new_figure  # matplotlib is imported only when plotting

    return new_figure(width, height)


__all__ = ["forgetting_curve", "mlm_perplexity", "swapped_params", "make_blocks", "mask_blocks",
           "load_wikitext", "wikitext_path", "fit_mlm_head", "get_mlm_head", "load_pretrained_mlm_head",
           "FittedMLMHead", "PretrainedMLMHead", "plot_forgetting", "default_cache_dir"]
