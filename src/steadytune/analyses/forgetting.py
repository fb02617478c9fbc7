"""Catastrophic-forgetting probe (paper Fig. 2): MLM perplexity after top-k layer swaps.

``forgetting_curve`` measures masked-LM perplexity on WikiText-2 of a fine-tuned
encoder whose top ``k`` transformer blocks are replaced by their pre-trained weights,
for k = 0 (fully fine-tuned) ... L (all blocks pre-trained). The swap happens in a
parameter dict passed to ``torch.func.functional_call``: the caller's models are never
modified. The protocol (chunking, masking, heads) is documented in docs/analyses.md;
the text handling lives in :mod:`steadytune.mlmtext`, the MLM heads in
:mod:`steadytune.mlmhead` (both re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from steadytune.analyses.mlmhead import (
    FittedMLMHead,
    PretrainedMLMHead,
    default_cache_dir,
    fit_mlm_head,
    get_mlm_head,
    load_pretrained_mlm_head,
)
from steadytune.analyses.mlmtext import (
    load_wikitext,
    make_blocks,
    mask_blocks,
    wikitext_path,
)
from steadytune.analyses.mlmtext import run_encoder as _run_encoder

ProgressFn = Callable[[int, int, dict[str, Any]], None]

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


# ----------------------------------------------------------------------------- evaluation


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
    from steadytune.training.models import encoder_layers

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
    from steadytune.analyses.figures import (
        new_figure,  # matplotlib is imported only when plotting
    )

    return new_figure(width, height)


__all__ = ["forgetting_curve", "mlm_perplexity", "swapped_params", "make_blocks", "mask_blocks",
           "load_wikitext", "wikitext_path", "fit_mlm_head", "get_mlm_head", "load_pretrained_mlm_head",
           "FittedMLMHead", "PretrainedMLMHead", "plot_forgetting", "default_cache_dir"]
