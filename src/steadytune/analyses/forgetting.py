"""Catastrophic-forgetting probe (paper Fig. 2): MLM perplexity after top-k layer swaps.

``forgetting_curve`` measures masked-LM perplexity on WikiText-2 of a fine-tuned
encoder whose top ``k`` transformer blocks are replaced by their pre-trained weights,
for k = 0 (fully fine-tuned) ... L (all blocks pre-trained). The swap happens in a
parameter dict passed to ``torch.func.functional_call``: the caller's models are never
modified. ``forgetting_probe`` does the whole analysis of saved checkpoints (what
``steadytune forgetting`` runs). The protocol (chunking, masking, heads) is documented
in docs/analyses.md; the text handling lives in :mod:`steadytune.analyses.mlmtext`, the
MLM heads in :mod:`steadytune.analyses.mlmhead`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from steadytune.analyses.loading import (
    SAVE_HINT,
    checkpoint_run_info,
    default_data_dir,
    load_classifier,
    load_encoder,
    select_device,
)
from steadytune.analyses.mlmhead import get_mlm_head
from steadytune.analyses.mlmtext import load_wikitext, make_blocks, mask_blocks
from steadytune.analyses.mlmtext import run_encoder as _run_encoder
from steadytune.analyses.outputs import ProbeResult, StageProgress, stage, write_outputs
from steadytune.training.models import encoder_layers, load_tokenizer

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


# ----------------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class ForgettingSettings:
    """What :func:`forgetting_probe` computes; the defaults are the CLI's."""

    max_tokens: int | None = None
    """Evaluate only the first N tokens of WikiText-2 test (None: all of it)."""
    seed: int = 0
    """Masking seed, also of the fitted MLM head."""
    ks: tuple[int, ...] | None = None
    """Numbers of top layers to reset to pre-trained weights (None: 0 ... L)."""
    swap_embeddings: bool = True
    """Add the row k = L with the embeddings swapped too (= the pre-trained encoder)."""
    seq_len: int = 128
    """Tokens per block, [CLS] and [SEP] included."""
    batch_size: int = 32
    """Blocks per forward pass."""
    head_steps: int = 300
    """Steps to fit an MLM head if the pre-trained checkpoint has none."""
    head_tokens: int = 100_000
    """WikiText-2 valid tokens used to fit that head."""

    def __post_init__(self) -> None:
        for name, low in (("seq_len", 3), ("batch_size", 1), ("head_steps", 0), ("head_tokens", 1)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1 or None, got {self.max_tokens}")
        if self.ks is not None and any(k < 0 for k in self.ks):
            raise ValueError(f"ks must be layer counts >= 0, got {list(self.ks)}")


def forgetting_probe(finetuned: Sequence[str | Path], pretrained: str = "minilm",
                     out: str | Path = "runs/forgetting", settings: ForgettingSettings | None = None, *,
                     data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                     device: str | torch.device = "auto", threads: int = 0,
                     progress: StageProgress | None = None) -> ProbeResult:
    """The forgetting probe (paper Fig. 2) of saved checkpoints, written to ``out``.

    Gets the MLM head (:func:`get_mlm_head`: the pre-trained one, else one fitted on
    WikiText-2 valid), runs :func:`forgetting_curve` on WikiText-2 test for every
    checkpoint and writes ``forgetting.csv``, ``.png`` and ``.json`` (settings, the
    head's source and fit statistics, package versions).

    Args:
        finetuned: fine-tuned checkpoint folders (``save_pretrained`` output, e.g. RUN/final);
            a ``result.json`` in the folder or its parent labels the curve.
        pretrained: the pre-trained model: hub id, path or ``minilm``.
        out: output folder (created).
        settings: what to compute (default :class:`ForgettingSettings`).
        data_dir: folder holding ``wikitext-2/`` (default :func:`default_data_dir`).
        cache_dir: cache of fitted heads (default :func:`default_cache_dir`).
        device, threads: see :func:`select_device`.
        progress: called as ``progress(stage, done, total)``; stages are the MLM head and
            each checkpoint.

    Returns:
        ``tables["forgetting"]``: :func:`forgetting_curve`'s rows plus ``checkpoint, model,
        failed``, for every checkpoint; ``files``: the three paths.

    Raises:
        FileNotFoundError: a checkpoint folder or a WikiText-2 file is missing.
        ModelError: a model cannot be loaded.
        ValueError: no checkpoint, invalid settings, or texts too short.
    """
    settings = settings or ForgettingSettings()
    paths = [Path(p) for p in finetuned]
    _check_checkpoints(paths)
    dev = select_device(device, threads)
    data = data_dir or default_data_dir()
    texts = load_wikitext("test", data)
    tokenizer = load_tokenizer(pretrained)
    base = load_encoder(pretrained, dev)
    head = _probe_head(pretrained, base, tokenizer, load_wikitext("valid", data), settings, cache_dir, progress)
    table = pd.concat([_checkpoint_curve(path, base, head, tokenizer, texts, settings, dev, progress)
                       for path in paths], ignore_index=True)
    full = table.loc[table["embeddings"] == "pretrained", "perplexity"]
    fig = plot_forgetting(table, label="model", reference=float(full.iloc[0]) if len(full) else None)
    record = _record(paths, pretrained, settings, head)
    return ProbeResult({"forgetting": table}, write_outputs(out, "forgetting", table, fig, record), record)


def _record(paths: Sequence[Path], pretrained: str, settings: ForgettingSettings, head: nn.Module) -> dict[str, Any]:
    """What forgetting.json records (besides the package versions)."""
    return {"analysis": "forgetting", "finetuned": [str(p) for p in paths], "pretrained": pretrained,
            "wikitext": "test", "max_tokens": settings.max_tokens, "seed": settings.seed,
            "seq_len": settings.seq_len, "mask_prob": 0.15, "mlm_head": str(getattr(head, "source", "")),
            "mlm_head_fit": getattr(head, "fit_stats", None), "head_steps": settings.head_steps,
            "head_tokens": settings.head_tokens}


def _check_checkpoints(paths: Sequence[Path]) -> None:
    """Fail before the slow part: every checkpoint folder must exist."""
    if not paths:
        raise ValueError("no fine-tuned checkpoint given")
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"checkpoint directory {path} does not exist {SAVE_HINT}")


def _probe_head(pretrained: str, base: nn.Module, tokenizer: Any, fit_texts: Sequence[str],
                settings: ForgettingSettings, cache_dir: str | Path | None,
                progress: StageProgress | None) -> nn.Module:
    name = "MLM head (the pre-trained one, else fitted on WikiText-2 valid)"
    if progress is not None:
        progress(name, 0, None)
    head = get_mlm_head(pretrained, base, tokenizer, fit_texts, steps=settings.head_steps, seed=settings.seed,
                        cache_dir=cache_dir, max_tokens=settings.head_tokens, seq_len=settings.seq_len)
    if progress is not None:
        progress(name, 1, 1)
    return head


def _checkpoint_curve(path: Path, base: nn.Module, head: nn.Module, tokenizer: Any, texts: Sequence[str],
                      settings: ForgettingSettings, device: torch.device,
                      progress: StageProgress | None) -> pd.DataFrame:
    model = load_classifier(path, device)
    df = forgetting_curve(model, base, head, tokenizer, texts, settings.ks, seed=settings.seed,
                          seq_len=settings.seq_len, batch_size=settings.batch_size, max_tokens=settings.max_tokens,
                          swap_embeddings=settings.swap_embeddings, progress=stage(progress, str(path)))
    return df.assign(checkpoint=str(path), **checkpoint_run_info(path))


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from steadytune.analyses.figures import (
        new_figure,  # matplotlib is imported only when plotting
    )

    return new_figure(width, height)


__all__ = ["ForgettingSettings", "forgetting_curve", "forgetting_probe", "mlm_perplexity", "plot_forgetting",
           "swapped_params"]
