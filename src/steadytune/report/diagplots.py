"""Figures from stored training diagnostics: the paper's Fig. 4 (gradient norms per layer,
failed vs successful run) and Fig. 6 (bias-correction factor and effective lr).

Pure plotting over tidy tables (``Study.runs_table()`` and ``Study.diagnostics_table()``,
:mod:`steadytune.store.study`);
nothing here trains or loads a model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from steadytune.analyses.stats import failed_mask


def pick_failed_and_successful(runs: pd.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """Per (task, recipe) with both outcomes: the run ids of one failed and one successful run.

    The failed run is the lowest-scoring finished failed run (a diverged run has no
    useful gradients to show), the successful one the highest-scoring run.

    Args:
        runs: the runs table (any statuses; only finished runs are picked).

    Returns:
        ``(task, recipe) -> {"failed": run_id, "successful": run_id}``, sorted by task and
        recipe; groups without both outcomes are left out.
    """
    done = runs[runs["status"] == "finished"].copy()
    if done.empty:
        return {}
    done["is_failed"] = failed_mask(done["final"].to_numpy(float), done["baseline"].to_numpy(float))
    picks: dict[tuple[str, str], dict[str, str]] = {}
    for (task, recipe), group in done.groupby(["task", "recipe"], sort=True):
        bad, good = group[group["is_failed"]], group[~group["is_failed"]]
        if len(bad) and len(good):
            picks[(str(task), str(recipe))] = {
                "failed": str(bad.sort_values("final").iloc[0]["run_id"]),
                "successful": str(good.sort_values("final").iloc[-1]["run_id"]),
            }
    return picks


def plot_layer_grad_norms(diagnostics: pd.DataFrame, failed_id: str, successful_id: str,
                          title: str = "", labels: tuple[str, str] = ("failed run", "successful run")) -> Figure:
    """Fig. 4: pre-clip gradient L2 norm of every layer over training, log scale.

    Args:
        diagnostics: tidy table with run_id, step, group, name, value.
        failed_id: run id of a failed run (left panel).
        successful_id: run id of a successful run (right panel).
        title: figure title.
        labels: the two panels' titles.

    Returns:
        A new Figure (two panels sharing the log y axis, one line per layer).
    """
    rows = diagnostics[diagnostics["group"] == "grad_norm_layer"]
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    layers = sorted(rows["name"].unique(), key=_layer_order)
    cmap = _colours(len(layers))
    for ax, (label, run_id) in zip(axes, ((labels[0], failed_id), (labels[1], successful_id))):
        run = rows[rows["run_id"] == run_id]
        for colour, layer in zip(cmap, layers):
            series = run[run["name"] == layer].sort_values("step")
            ax.plot(series["step"], series["value"].clip(lower=1e-12), color=colour, lw=1.2, label=layer,
                    marker=_marker(series))
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gradient L2 norm (pre-clip)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_bias_correction(runs: pd.DataFrame, diagnostics: pd.DataFrame) -> Figure:
    """Fig. 6: the Adam bias-correction factor and the effective lr per recipe over steps.

    Args:
        runs: the runs table; the first finished/diverged run of each (task, recipe, grid)
            is drawn.
        diagnostics: tidy table with run_id, step, group, name, value (group ``optim``).

    Returns:
        A new Figure: the factor (left) and the effective learning rate (right).
    """
    rows = diagnostics[diagnostics["group"] == "optim"]
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_factor, ax_lr = fig.subplots(1, 2)
    first = runs[runs["status"].isin(["finished", "diverged"])].drop_duplicates(["task", "recipe", "grid"])
    for _, run in first.iterrows():
        label = " ".join(str(x) for x in (run["task"], run["recipe"], run["grid"]) if x)
        mine = rows[rows["run_id"] == run["run_id"]]
        for ax, name in ((ax_factor, "bias_correction_factor"), (ax_lr, "effective_lr")):
            series = mine[mine["name"] == name].sort_values("step")
            ax.plot(series["step"], series["value"], lw=1.3, label=label, marker=_marker(series))
    ax_factor.set_title("bias-correction factor √(1−β₂ᵗ)/(1−β₁ᵗ)", fontsize=10)
    ax_lr.set_title("effective learning rate (lr × factor if corrected)", fontsize=10)
    for ax in (ax_factor, ax_lr):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    ax_lr.legend(fontsize=7, frameon=False)
    return fig


def diagnostic_sections(runs: pd.DataFrame, diagnostics: pd.DataFrame) -> list[tuple[str, Figure]]:
    """Report sections for a study's diagnostics: Fig. 4 per (task, recipe), then Fig. 6.

    Args:
        runs: the runs table.
        diagnostics: the study's diagnostics table.

    Returns:
        ``(title, Figure)`` pairs; empty when no diagnostics were recorded.
    """
    if diagnostics.empty:
        return []
    sections: list[tuple[str, Figure]] = []
    for (task, recipe), ids in pick_failed_and_successful(runs).items():
        sections.append((f"Gradient norms per layer: {task} {recipe}, failed vs successful run",
                         plot_layer_grad_norms(diagnostics, ids["failed"], ids["successful"])))
    if (diagnostics["group"] == "optim").any():
        sections.append(("Bias-correction factor and effective learning rate", plot_bias_correction(runs, diagnostics)))
    return sections


def _marker(series: pd.DataFrame) -> str | None:
    """Dots for short series (a handful of diagnostic steps would otherwise not show)."""
    return "o" if len(series) <= 30 else None


def _layer_order(name: str) -> tuple[int, int]:
    if name == "embeddings":
        return (0, 0)
    if name.startswith("layer."):
        tail = name.split(".", 1)[1]
        return (1, int(tail) if tail.isdigit() else 0)
    return (2, 0 if name == "pooler" else 1)


def _colours(n: int) -> list:
    """``n`` colours along viridis (one per layer, embeddings dark to classifier light)."""
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, max(n, 1))]
