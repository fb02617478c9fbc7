"""Loss surfaces between pre-trained, failed and successful models (paper Fig. 7, 13).

The plane is θ(α, β) = θp + α(θf − θp) + β(θs − θp), computed as the affine combination
(1 − α − β)θp + αθf + βθs so that (0, 0), (1, 0) and (0, 1) reproduce the three models
bit for bit. Every grid point is evaluated with ``torch.func.functional_call`` on a
freshly computed parameter dict: the models passed in are never modified.

The pre-trained model has no classifier head. Parameters outside the base encoder (the
classification head) of θp follow ``head``: ``"zero"`` (default: the mean of the
N(0, σ²) head initialisation, so θp predicts the uniform distribution), ``"mean"`` (the
average of the failed and successful heads) or ``"init"`` (one seeded N(0, 0.02) draw,
zero biases). See docs/analyses.md for why. ``surface_probe`` does the whole analysis of
saved checkpoints (what ``steadytune surface`` runs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from steadytune.analyses.loading import (
    default_data_dir,
    load_classifier,
    load_encoder,
    select_device,
)
from steadytune.analyses.outputs import (
    DPI,
    ProbeResult,
    StageProgress,
    stage,
    write_outputs,
)
from steadytune.data.batching import collate, encode, eval_batches
from steadytune.data.glue import load_glue
from steadytune.data.splits import downsample
from steadytune.training.models import load_tokenizer, uses_token_types

HEAD_CONVENTIONS = ("zero", "mean", "init")
ProgressFn = Callable[[int, int, dict[str, Any]], None]
Batches = Sequence[dict[str, torch.Tensor]]

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _base_names(model: nn.Module) -> dict[str, str]:
    """``{full parameter name: name inside base_model}`` for parameters of the base encoder."""
    base = model.base_model
    if base is model:
        return {name: name for name, _ in model.named_parameters()}
    ids = {id(p): name for name, p in base.named_parameters()}
    return {name: ids[id(p)] for name, p in model.named_parameters() if id(p) in ids}


def _head_init(param: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    if name.endswith("bias") or param.dim() < 2:
        return torch.zeros_like(param)
    return torch.randn(param.shape, generator=generator, dtype=param.dtype).to(param.device) * 0.02


def anchor_params(pretrained: nn.Module, failed: nn.Module, successful: nn.Module, head: str = "zero",
                  head_seed: int = 0) -> tuple[dict[str, torch.Tensor], ...]:
    """The three anchor points θp, θf, θs as parameter dicts keyed like ``failed``.

    Encoder parameters of θp come from ``pretrained.base_model`` (matched by name inside
    the base model); head parameters follow ``head`` (see module docstring).

    Raises:
        ValueError: unknown ``head``, or the models do not share one architecture.
    """
    if head not in HEAD_CONVENTIONS:
        raise ValueError(f"head={head!r}; use one of {', '.join(HEAD_CONVENTIONS)}")
    theta_f = dict(failed.named_parameters())
    theta_s = dict(successful.named_parameters())
    if theta_f.keys() != theta_s.keys() or any(theta_f[n].shape != theta_s[n].shape for n in theta_f):
        raise ValueError("failed and successful models have different parameters; they must share one architecture")
    in_base = _base_names(failed)
    pt = dict(pretrained.base_model.named_parameters())
    generator = torch.Generator().manual_seed(int(head_seed))
    theta_p: dict[str, torch.Tensor] = {}
    for name, param in theta_f.items():
        if name in in_base:
            other = pt.get(in_base[name])
            if other is None or other.shape != param.shape:
                raise ValueError(f"pre-trained model lacks encoder parameter {in_base[name]} of shape "
                                 f"{tuple(param.shape)}")
            theta_p[name] = other
        elif head == "zero":
            theta_p[name] = torch.zeros_like(param)
        elif head == "mean":
            theta_p[name] = (param.detach() + theta_s[name].detach()) / 2
        else:
            theta_p[name] = _head_init(param, name, generator)
    return theta_p, theta_f, theta_s


def _combine(anchors: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    names = anchors[0].keys()
    return {n: sum(float(w) * a[n].detach() for w, a in zip(weights, anchors)) for n in names}  # type: ignore[misc]


@torch.no_grad()
def evaluate_params(model: nn.Module, params: dict[str, torch.Tensor] | None, batches: Batches) -> dict[str, float]:
    """Mean loss and accuracy of ``model`` (with ``params`` swapped in, if given) in eval mode.

    Batches are dicts from :func:`steadytune.batching.collate` holding ``labels``; the loss
    is cross-entropy (MSE for one output, where ``acc`` is NaN), averaged over examples.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct, count, regression = 0, 0, False
    try:
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            labels = batch["labels"].to(device)
            out = model(**inputs) if params is None else functional_call(model, params, args=(), kwargs=inputs)
            logits = out.logits.float()
            if logits.shape[-1] == 1:
                regression = True
                loss_sum += nn.functional.mse_loss(logits.squeeze(-1), labels.float(), reduction="sum").double()
            else:
                loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").double()
                correct += int((logits.argmax(-1) == labels).sum())
            count += len(labels)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no examples: batches is empty")
    return {"loss": float(loss_sum) / count, "acc": float("nan") if regression else correct / count,
            "n_examples": count}


def loss_surface(pretrained: nn.Module, failed: nn.Module, successful: nn.Module, batches: Batches, *,
                 alphas: Sequence[float], betas: Sequence[float], head: str = "zero", head_seed: int = 0,
                 progress: ProgressFn | None = None) -> pd.DataFrame:
    """Eval-mode loss and accuracy on the plane through θp, θf and θs (paper Fig. 7).

    Args:
        pretrained: the pre-trained model (any class; its ``base_model`` is used).
        failed, successful: fine-tuned ``*ForSequenceClassification`` models of one architecture.
        batches: collated batches with labels (a train or dev slice).
        alphas, betas: grid coordinates along θf − θp and θs − θp.
        head: convention for θp's classifier head: ``zero``, ``mean`` or ``init``.
        head_seed: seed of the ``init`` head.
        progress: called as ``progress(i, n_points, row)`` after each grid point.

    Returns:
        One row per grid point: ``alpha, beta, loss, acc, n_examples, head``.

    Raises:
        ValueError: unknown head convention or models of different architectures.
    """
    anchors = anchor_params(pretrained, failed, successful, head, head_seed)
    grid = [(float(a), float(b)) for a in alphas for b in betas]
    rows = []
    for i, (alpha, beta) in enumerate(grid):
        params = _combine(anchors, (1.0 - alpha - beta, alpha, beta))
        rows.append({"alpha": alpha, "beta": beta, **evaluate_params(failed, params, batches), "head": head})
        if progress is not None:
            progress(i + 1, len(grid), rows[-1])
    return pd.DataFrame(rows)


def interpolate_1d(model_a: nn.Module, model_b: nn.Module, batches: Batches, ts: Sequence[float], *,
                   progress: ProgressFn | None = None) -> pd.DataFrame:
    """Loss and accuracy along (1 − t)θa + tθb, all parameters (head included) interpolated.

    Returns:
        One row per t: ``t, loss, acc, n_examples``; t = 0 and 1 reproduce the two models.

    Raises:
        ValueError: the models have different parameters.
    """
    theta_a, theta_b = dict(model_a.named_parameters()), dict(model_b.named_parameters())
    if theta_a.keys() != theta_b.keys() or any(theta_a[n].shape != theta_b[n].shape for n in theta_a):
        raise ValueError("models have different parameters; interpolation needs one architecture")
    rows = []
    for i, t in enumerate(float(t) for t in ts):
        rows.append({"t": t, **evaluate_params(model_a, _combine((theta_a, theta_b), (1.0 - t, t)), batches)})
        if progress is not None:
            progress(i + 1, len(ts), rows[-1])
    return pd.DataFrame(rows)


def plot_surface(df: pd.DataFrame, value: str = "loss", levels: int = 20) -> Figure:
    """Filled contours of ``value`` over (alpha, beta) with markers at θp, θf and θs."""
    table = df.pivot_table(index="beta", columns="alpha", values=value)
    fig, ax = _figure(5.2, 4.4)
    data = table.to_numpy()
    finite = np.isfinite(data)
    low = np.nanmin(data[finite]) if finite.any() else 0.0
    if value == "loss" and low > 0 and np.nanmax(data[finite]) > 10 * low:
        # Losses spanning orders of magnitude (far from the anchors): contour the log.
        data = np.log10(np.where(finite, data, np.nan))
        label = f"log10 {value}"
    else:
        label = value
    filled = ax.contourf(table.columns, table.index, data, levels=levels, cmap="viridis")
    ax.contour(table.columns, table.index, data, levels=levels, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(filled, ax=ax, label=label)
    for (x, y), name, marker in (((0, 0), "pre-trained", "o"), ((1, 0), "failed", "X"), ((0, 1), "successful", "*")):
        ax.plot(x, y, marker=marker, color="white", markeredgecolor="black", markersize=11, linestyle="none",
                label=name)
    ax.set_xlabel("α (towards failed)")
    ax.set_ylabel("β (towards successful)")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    return fig


def plot_interpolation(df: pd.DataFrame) -> Figure:
    """Loss (left axis) and accuracy (right axis) against t."""
    fig, ax = _figure(5, 3.4)
    ax.plot(df["t"], df["loss"], marker="o", color="C0")
    ax.set_xlabel("t")
    ax.set_ylabel("loss", color="C0")
    if df["acc"].notna().any():
        right = ax.twinx()
        right.plot(df["t"], df["acc"], marker="s", color="C1")
        right.set_ylabel("accuracy", color="C1")
    return fig


# ----------------------------------------------------------------------------- the probe


@dataclass(frozen=True)
class SurfaceSettings:
    """What :func:`surface_probe` computes; the defaults are the CLI's."""

    task: str = "rte"
    """GLUE task whose data gives the loss."""
    split: str = "dev"
    """``train`` or ``dev``."""
    alpha_range: tuple[float, float] = (-0.5, 1.5)
    """Grid start and end along θf − θp (towards the failed model)."""
    beta_range: tuple[float, float] = (-0.5, 1.5)
    """Grid start and end along θs − θp (towards the successful model)."""
    resolution: int = 9
    """Points per axis (at least 2); 0 and 1 are always added."""
    max_examples: int = 256
    """Evaluate a seeded stratified subset of N examples (0: all)."""
    sample_seed: int = 0
    """Seed of that subset."""
    head: str = "zero"
    """Classifier head of the pre-trained point: ``zero``, ``mean`` or ``init`` (see module docstring)."""
    interpolate: int = 0
    """Also evaluate N points on the line failed -> successful (N > 1; 0: none)."""
    segment_ids: str = "correct"
    """``correct`` or ``zeros``, as the runs were trained."""
    batch_size: int = 64
    """Evaluation batch size."""

    def __post_init__(self) -> None:
        if self.head not in HEAD_CONVENTIONS:
            raise ValueError(f"head={self.head!r}; use one of {', '.join(HEAD_CONVENTIONS)}")
        for name in ("max_examples", "interpolate", "resolution"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def alphas(self) -> list[float]:
        """The grid's α values."""
        return _axis(*self.alpha_range, self.resolution)

    @property
    def betas(self) -> list[float]:
        """The grid's β values."""
        return _axis(*self.beta_range, self.resolution)


def _axis(low: float, high: float, resolution: int) -> list[float]:
    return sorted({round(float(x), 10) for x in np.linspace(low, high, max(resolution, 2))} | {0.0, 1.0})


def surface_probe(failed: str | Path, successful: str | Path, pretrained: str = "minilm",
                  out: str | Path = "runs/surface", settings: SurfaceSettings | None = None, *,
                  data_dir: str | Path | None = None, device: str | torch.device = "auto", threads: int = 0,
                  progress: StageProgress | None = None) -> ProbeResult:
    """The loss surface (paper Fig. 7) through a pre-trained and two saved checkpoints, written to ``out``.

    Evaluates :func:`loss_surface` on (a seeded subset of) a GLUE split and, with
    ``settings.interpolate``, :func:`interpolate_1d` from failed to successful; writes
    ``surface.csv``, ``.png``, ``.json``, ``surface_acc.png`` (classification tasks) and
    ``interpolation.csv``, ``.png``, ``.json`` (if interpolated). Models are left unchanged.

    Args:
        failed, successful: checkpoint folders (``save_pretrained`` output) of two runs.
        pretrained: the pre-trained model: hub id, path or ``minilm``.
        out: output folder (created).
        settings: what to compute (default :class:`SurfaceSettings`).
        data_dir: GLUE folder or its parent (default ``$GLUE_DIR``, else :func:`default_data_dir`).
        device, threads: see :func:`select_device`.
        progress: called as ``progress(stage, done, total)`` for the stages ``grid`` and ``line``.

    Returns:
        ``tables["surface"]`` (one row per grid point, :func:`loss_surface`), and
        ``tables["interpolation"]`` if interpolated; ``files``: every path written.

    Raises:
        DataError: the GLUE data is missing or malformed.
        ModelError: a model cannot be loaded.
        ValueError: invalid settings or models of different architectures.
    """
    settings = settings or SurfaceSettings()
    dev = select_device(device, threads)
    models = [load_classifier(path, dev) for path in (failed, successful)]
    base = load_encoder(pretrained, dev)
    tokenizer = load_tokenizer(pretrained)
    glue = data_dir or os.environ.get("GLUE_DIR") or default_data_dir()
    data = load_glue(settings.task, settings.split, None if glue is None else str(glue))
    if settings.max_examples and settings.max_examples < len(data):
        data = downsample(data, settings.max_examples, settings.sample_seed)
    batches = _batches(data, tokenizer, models[0], settings)
    tables = {"surface": loss_surface(base, *models, batches, alphas=settings.alphas, betas=settings.betas,
                                      head=settings.head, progress=stage(progress, "grid"))}
    if settings.interpolate > 1:
        tables["interpolation"] = interpolate_1d(*models, batches, np.linspace(0, 1, settings.interpolate),
                                                 progress=stage(progress, "line"))
    record = {"analysis": "surface", "pretrained": pretrained, "failed": str(failed), "successful": str(successful),
              "task": settings.task, "split": settings.split, "n_examples": len(data), **_recorded(settings)}
    return ProbeResult(tables, _write(Path(out), tables, record), record)


def _recorded(settings: SurfaceSettings) -> dict[str, Any]:
    """The settings surface.json records besides the models, the data and its size."""
    return {"sample_seed": settings.sample_seed, "head": settings.head, "alphas": settings.alphas,
            "betas": settings.betas, "segment_ids": settings.segment_ids, "mode": "eval (no dropout)"}


def _batches(data: Any, tokenizer: Any, model: nn.Module, settings: SurfaceSettings) -> list[dict[str, torch.Tensor]]:
    enc = encode(data, tokenizer, segment_ids=settings.segment_ids, use_token_types=uses_token_types(model.config))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return [collate(enc, idx, pad) for idx in eval_batches(enc.lengths, settings.batch_size)]


def _write(out: Path, tables: dict[str, pd.DataFrame], record: dict[str, Any]) -> list[Path]:
    surface = tables["surface"]
    files = write_outputs(out, "surface", surface, plot_surface(surface), record)
    if surface["acc"].notna().any():
        plot_surface(surface, "acc").savefig(out / "surface_acc.png", dpi=DPI)
        files.append(out / "surface_acc.png")
    if "interpolation" in tables:
        line = tables["interpolation"]
        files += write_outputs(out, "interpolation", line, plot_interpolation(line), record)
    return files


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from steadytune.analyses.figures import (
        new_figure,  # matplotlib is imported only when plotting
    )

    return new_figure(width, height)


__all__ = ["SurfaceSettings", "loss_surface", "interpolate_1d", "anchor_params", "evaluate_params", "plot_surface",
           "plot_interpolation", "surface_probe", "HEAD_CONVENTIONS"]
