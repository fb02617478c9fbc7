"""Figures of a seed sweep, drawn from the stored tidy tables (never from models).

Every ``plot_*`` function takes the runs table (:mod:`steadytune.analyses.stats` docstring; rows
whose ``status`` is not ``finished``/``diverged``/``stopped`` are ignored; a restarted seed
is drawn once, by its last attempt) and returns a new
:class:`matplotlib.figure.Figure` on an Agg canvas. No ``pyplot`` is used, so nothing is
left in pyplot's global figure registry; the caller saves the figure and drops it.

Conventions shared with :mod:`steadytune.report.html`: metric values are drawn ×100; a run is
*failed* by :func:`steadytune.analyses.stats.failed_mask` on the chosen checkpoint (diverged and
stopped runs are failed and have no value); boxes are ordered by first appearance of the recipe in
the runs table, then grid point, then model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from steadytune.analyses.attempts import kept_runs
from steadytune.analyses.stats import expected_max_curve, failed_mask

__all__ = ["SCORED", "group_labels", "plot_boxplots", "plot_expected_max",
           "plot_learning_curves", "scored_runs"]

SCORED = ("finished", "diverged", "stopped")  # the statuses steadytune.analyses.stats accepts
KEYS = ["task", "model", "recipe", "grid"]
OK_COLOUR, FAILED_COLOUR = "tab:blue", "tab:red"


def scored_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished/diverged/stopped runs, one per seed, with ``model``/``grid`` as strings ("" for none).

    Args:
        runs: the runs table.

    Returns:
        A copy with only scorable rows (a seed the guard restarted by its last attempt,
        :func:`steadytune.analyses.attempts.kept_runs`), in the original order, and an
        ``order`` column (the group's rank: recipe by first appearance, then grid, then model).
    """
    df = runs.loc[runs["status"].isin(SCORED)].copy()
    if "attempt" in df.columns:
        df = kept_runs(df)
    for col in ("model", "grid"):
        if col not in df.columns:  # a table from before grids/models were recorded
            df[col] = ""
        df[col] = df[col].where(df[col].notna(), "").astype(str)
    rank = {c: {v: i for i, v in enumerate(dict.fromkeys(df[c]))} for c in ("recipe", "grid", "model")}
    keys = [(rank["recipe"][r], rank["grid"][g], rank["model"][m])
            for r, g, m in zip(df["recipe"], df["grid"], df["model"])]
    position = {k: i for i, k in enumerate(sorted(set(keys)))}
    df["order"] = [position[k] for k in keys]
    return df


def group_labels(table: pd.DataFrame, sep: str = " · ") -> pd.Series:
    """A short label per row: the recipe, plus the grid point / model where a task has several.

    Args:
        table: rows with ``task, model, recipe, grid`` (runs or a stats summary).
        sep: separator between the parts ("\\n" for tick labels).

    Returns:
        Strings aligned with ``table.index`` (raw text: escape before putting in HTML).
    """
    grid = table["grid"].where(table["grid"].notna(), "").astype(str)
    model = table["model"].where(table["model"].notna(), "").astype(str)
    several_grids = grid.groupby(table["task"]).transform("nunique") > 1
    several_models = model.groupby(table["task"]).transform("nunique") > 1
    parts = []
    for r, g, m, sg, sm in zip(table["recipe"], grid, model, several_grids, several_models):
        parts.append(sep.join([str(r), *([g] if sg else []), *([m] if sm else [])]))
    return pd.Series(parts, index=table.index, dtype=object)


def _prepared(runs: pd.DataFrame, which: str) -> pd.DataFrame:
    """Scored runs with ``label``, ``value`` (×100, NaN if diverged) and ``is_failed``."""
    if which not in ("final", "best"):
        raise ValueError(f"which must be 'final' or 'best', got {which!r}")
    df = scored_runs(runs)
    raw = pd.to_numeric(df[which], errors="coerce").where(df["status"] == "finished")
    df["is_failed"] = failed_mask(raw.to_numpy(np.float64), df["baseline"].to_numpy(np.float64))
    df["value"] = 100.0 * raw
    df["label"] = group_labels(df, sep="\n")
    return df


def _groups(sub: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per box of one task, in display order."""
    return [(str(g["label"].iloc[0]), g) for _, g in sub.groupby("order", sort=True)]


def _figure(n_panels: int, panel_w: float, panel_h: float, max_cols: int = 3) -> tuple[Figure, list[Axes]]:
    """A constrained-layout figure with ``n_panels`` axes wrapped onto rows of ``max_cols``."""
    cols = max(1, min(n_panels, max_cols))
    rows = max(1, -(-n_panels // cols))
    fig = Figure(figsize=(panel_w * cols, panel_h * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_axis_off()
    return fig, axes[:n_panels]


def _empty(message: str) -> Figure:
    """A small figure that only says ``message`` (nothing to draw)."""
    fig = Figure(figsize=(6, 1.2))
    FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _baselines(ax: Axes, sub: pd.DataFrame) -> None:
    """The majority-classifier line(s) of one task (blue dotted)."""
    for b in pd.unique(pd.to_numeric(sub["baseline"], errors="coerce").dropna()):
        ax.axhline(100.0 * b, color="tab:blue", ls=":", lw=1.5, zorder=1)


def plot_boxplots(runs: pd.DataFrame, which: str = "final") -> Figure:
    """The paper's Figure 1: one panel per task, one box per recipe (× grid point, × model).

    Each box shows quartiles and whiskers (1.5 IQR); every run is a jittered grey "×",
    failed runs are circled in red; per box the mean (red), median (orange) and max
    (red dotted), per panel the majority classifier (blue dotted). Tick labels give
    ``k/n failed`` and the number of diverged runs (which have no value to draw).

    Args:
        runs: the runs table.
        which: ``"final"`` or ``"best"`` checkpoint.

    Returns:
        A new Figure (a one-line notice if there is no finished or diverged run).

    Raises:
        ValueError: for an unknown ``which``.
    """
    df = _prepared(runs, which)
    if df.empty:
        return _empty("no finished runs")
    tasks = list(dict.fromkeys(df["task"]))
    n_boxes = max(df.loc[df["task"] == t, "order"].nunique() for t in tasks)
    fig, axes = _figure(len(tasks), max(3.8, 1.25 * n_boxes + 1.0), 4.4)
    rng = np.random.default_rng(0)  # fixed jitter: the same table gives the same picture
    for ax, task in zip(axes, tasks):
        sub = df[df["task"] == task]
        _draw_boxes(ax, sub, rng)
        ax.set_title(str(task))
        ax.set_ylabel(f"{sub['metric'].iloc[0]} ×100 ({which} checkpoint)")
        ax.grid(axis="y", alpha=0.3)
    handles = [
        Line2D([], [], ls="none", marker="x", color="0.5", label="run"),
        Line2D([], [], ls="none", marker="o", mfc="none", mec=FAILED_COLOUR, label="failed run"),
        Line2D([], [], color="tab:blue", ls=":", label="majority classifier"),
        Line2D([], [], color="tab:red", label="mean"),
        Line2D([], [], color="tab:orange", label="median"),
        Line2D([], [], color="tab:red", ls=":", label="max"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(fig, len(handles)),
               fontsize=8, frameon=False)
    return fig


def _draw_boxes(ax: Axes, sub: pd.DataFrame, rng: np.random.Generator) -> None:
    """One task's panel: a box per group, its runs jittered (failed circled), mean/median/max."""
    groups = _groups(sub)
    pos = np.arange(1, len(groups) + 1, dtype=float)
    vals = [g["value"].dropna().to_numpy(np.float64) for _, g in groups]
    have = [i for i, v in enumerate(vals) if v.size]
    if have:
        grey = {"color": "0.35"}
        ax.boxplot([vals[i] for i in have], positions=pos[have], widths=0.5, showfliers=False,
                   medianprops={"color": "tab:orange", "lw": 1.8}, boxprops=grey,
                   whiskerprops=grey, capprops=grey)
    ticks = []
    for p, v, (label, g) in zip(pos, vals, groups):
        if v.size:
            ax.hlines(v.mean(), p - 0.25, p + 0.25, color="tab:red", lw=1.8, zorder=4)
            ax.hlines(v.max(), p - 0.25, p + 0.25, color="tab:red", ls=":", lw=1.8, zorder=4)
        shown = g[g["value"].notna()]
        x = p + rng.uniform(-0.17, 0.17, len(shown))
        ax.scatter(x, shown["value"], marker="x", color="0.5", s=24, lw=1.0, zorder=3)
        bad = shown["is_failed"].to_numpy(bool)
        ax.scatter(x[bad], shown["value"].to_numpy()[bad], marker="o", facecolors="none",
                   edgecolors=FAILED_COLOUR, s=80, lw=1.2, zorder=5)
        n_div, n_stop = int((g["status"] == "diverged").sum()), int((g["status"] == "stopped").sum())
        ticks.append(f"{label}\n{int(g['is_failed'].sum())}/{len(g)} failed"
                     + (f"\n{n_div} diverged" if n_div else "") + (f"\n{n_stop} stopped" if n_stop else ""))
    _baselines(ax, sub)
    ax.set_xticks(pos, ticks, fontsize=8)
    ax.set_xlim(0.4, len(groups) + 0.6)


def _mean_curve(parts: list[pd.DataFrame]) -> pd.Series:
    """Mean over runs at each step (runs may stop early: the mean uses those present)."""
    return pd.concat(parts).groupby("step")["value"].mean()


def plot_learning_curves(runs: pd.DataFrame, curves: pd.DataFrame, which: str = "final",
                         loss_name: str = "loss") -> Figure:
    """Dev metric and train loss over steps, failed vs successful runs, per task × group.

    For each task a row of dev-metric panels (the run's ``metric``, ×100) and, where
    recorded, a row of train-loss panels (log scale); one column per recipe (× grid,
    × model). Thin lines are single runs (red failed, blue successful), thick lines
    their means per step.

    Args:
        runs: the runs table, with ``run_id``.
        curves: ``run_id, step, epoch, split, name, value`` (:mod:`steadytune.training.results`).
        which: the checkpoint that decides failed (``"final"`` as in the paper).
        loss_name: the train-split curve name of the loss.

    Returns:
        A new Figure (a one-line notice when no curve belongs to a scored run).

    Raises:
        ValueError: for an unknown ``which`` or a runs table without ``run_id``.
    """
    if "run_id" not in runs.columns:
        raise ValueError("runs table needs a run_id column to match curves")
    df = _prepared(runs, which)
    panels = _curve_panels(df, curves, loss_name)
    if not panels:
        return _empty("no learning curves recorded")
    ncols = max(df.loc[df["task"] == t, "order"].nunique() for t, _, _ in panels)
    fig = Figure(figsize=(3.7 * ncols, 2.6 * len(panels) + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), ncols, squeeze=False)
    for r, (task, kind, part) in enumerate(panels):
        by_run = {rid: g.sort_values("step") for rid, g in part.groupby("run_id")}
        groups = _groups(df[df["task"] == task])
        for j, ax in enumerate(axes[r]):
            if j >= len(groups):
                ax.set_axis_off()
                continue
            label, g = groups[j]
            _draw_curves(ax, g, by_run, part.loc[part["run_id"].isin(g["run_id"]), "value"], kind)
            ax.set_title(f"{task} · {label.replace(chr(10), ' · ')}", fontsize=9)
            ax.set_ylabel(f"dev {g['metric'].iloc[0]} ×100" if kind == "dev" else f"train {loss_name}",
                          fontsize=8)
    handles = [Line2D([], [], color=OK_COLOUR, lw=2, label="successful runs (thick: mean)"),
               Line2D([], [], color=FAILED_COLOUR, lw=2, label=f"failed runs ({which} checkpoint)"),
               Line2D([], [], color="tab:blue", ls=":", label="majority classifier")]
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(fig, 3),
               fontsize=8, frameon=False)
    return fig


def _curve_panels(df: pd.DataFrame, curves: pd.DataFrame,
                  loss_name: str) -> list[tuple[str, str, pd.DataFrame]]:
    """``(task, "dev"|"train", curve rows)`` per panel row: dev metric (×100), then train loss."""
    cur = curves[curves["run_id"].isin(df["run_id"])] if len(curves) else curves
    if df.empty or cur.empty:
        return []
    metric_of = dict(zip(df["run_id"], df["metric"]))
    dev = cur[(cur["split"] == "dev") & (cur["name"] == cur["run_id"].map(metric_of))]
    train = cur[(cur["split"] == "train") & (cur["name"] == loss_name)]
    dev = dev.assign(value=100.0 * dev["value"])
    return [(t, kind, part) for t in dict.fromkeys(df["task"])
            for kind, part in (("dev", dev), ("train", train))
            if part["run_id"].isin(df.loc[df["task"] == t, "run_id"]).any()]


def _draw_curves(ax: Axes, g: pd.DataFrame, by_run: dict[str, pd.DataFrame], values: pd.Series,
                 kind: str) -> None:
    """One panel: the group's runs (thin) and their mean (thick), successful then failed."""
    for failed, colour in ((False, OK_COLOUR), (True, FAILED_COLOUR)):
        lines = [by_run[rid] for rid in g.loc[g["is_failed"] == failed, "run_id"] if rid in by_run]
        for line in lines:
            ax.plot(line["step"], line["value"], color=colour, lw=0.6, alpha=0.35)
        if lines:
            mean = _mean_curve(lines)
            ax.plot(mean.index, mean.to_numpy(), color=colour, lw=2.0)
    if kind == "train" and len(values) and (values > 0).all():
        ax.set_yscale("log")
        # plain "0.01" labels: mathtext "10^-2" labels on 12 panels take seconds to lay out
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    elif kind == "dev":
        _baselines(ax, g)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def plot_expected_max(runs: pd.DataFrame, which: Sequence[str] = ("final", "best")) -> Figure:
    """Expected maximum dev performance vs number of seeds, one panel per task.

    One colour per recipe (× grid, × model); solid line for the first checkpoint in
    ``which``, dashed for the second (stats.expected_max_curve: diverged runs are left
    out of the distribution, failed-but-finished runs kept).

    Args:
        runs: the runs table.
        which: one or two of ``"final"``, ``"best"``.

    Returns:
        A new Figure (a one-line notice if no run has a value).

    Raises:
        ValueError: for an unknown checkpoint name or more than two.
    """
    if not 1 <= len(which) <= 2 or any(w not in ("final", "best") for w in which):
        raise ValueError(f"which must hold one or two of 'final', 'best', got {which!r}")
    df = _prepared(runs, which[0])
    if df.empty or df["value"].isna().all():
        return _empty("no finished runs")
    info = df.drop_duplicates(KEYS).set_index(KEYS)[["label", "order"]]
    tasks = list(dict.fromkeys(df["task"]))
    fig, axes = _figure(len(tasks), 4.6, 3.6)
    for w, style in zip(which, ("-", "--")):
        curve = expected_max_curve(df.drop(columns=["value", "label", "order"]), which=w)
        curve = curve.join(info, on=KEYS)
        for ax, task in zip(axes, tasks):
            for k, (order, g) in enumerate(curve[curve["task"] == task].groupby("order", sort=True)):
                ax.plot(g["n_seeds"], g["expected_max"], ls=style, color=f"C{k % 10}", lw=1.5,
                        label=str(g["label"].iloc[0]).replace("\n", " · ") if w == which[0] else None)
    for ax, task in zip(axes, tasks):
        sub = df[df["task"] == task]
        _baselines(ax, sub)
        ax.set_title(str(task))
        ax.set_xlabel("number of seeds n")
        ax.set_ylabel(f"expected max {sub['metric'].iloc[0]} ×100")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    handles = [Line2D([], [], color="0.3", ls=s, label=f"{w} checkpoint") for w, s in zip(which, ("-", "--"))]
    handles.append(Line2D([], [], color="tab:blue", ls=":", label="majority classifier"))
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(fig, len(handles)),
               fontsize=8, frameon=False)
    return fig


def _legend_columns(fig: Figure, n: int) -> int:
    """Legend columns that fit the figure's width (about 1.4 inches per entry)."""
    return max(1, min(n, int(fig.get_figwidth() / 1.4)))


