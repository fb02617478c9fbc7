"""Report sections drawn from stored tables of later analyses (the paper's Fig. 2, 7 and 8).

Each function returns ``(title, Figure)`` pairs for ``build_report(extra_sections=...)``;
they read stored runs/curves tables or the CSV tables an analysis command wrote, and
never train or load a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from steadytune.analyses.generalisation import (
    dev_over_training,
    dev_vs_train_loss,
    plot_dev_over_training,
    plot_dev_vs_train_loss,
)
from steadytune.analyses.stats import failed_mask
from steadytune.report.markup import Section
from steadytune.report.plots import SCORED


def generalisation_sections(runs: pd.DataFrame, curves: pd.DataFrame, max_runs: int = 10) -> list[Section]:
    """Report sections for the paper's Fig. 8, per task, from stored runs and curves.

    * Fig. 8a: the dev metric over training of up to ``max_runs`` successful runs (lowest
      seeds) of the task's longest-trained setting (model, recipe, grid point), as the
      paper shows 10 successful runs of its 20-epoch recipe.
    * Fig. 8b: final dev metric against final training loss of every finished or
      diverged run of the task (diverged runs have no dev value and are not drawn).

    Args:
        runs: the runs table (any statuses; only finished/diverged runs are used). A
            missing ``failed`` column is derived (final <= majority baseline, or not finished).
        curves: ``run_id, step, epoch, split, name, value``.
        max_runs: the most runs drawn in Fig. 8a.

    Returns:
        ``(title, Figure)`` pairs; empty without finished runs that have curves.
    """
    if runs.empty or curves.empty or not (runs["status"] == "finished").any():
        return []
    done = _with_verdicts(runs)
    sections: list[Section] = []
    for task in dict.fromkeys(done["task"]):
        mine = done[done["task"] == task]
        sections += _dev_over_training_section(task, mine, curves, max_runs)
        versus = dev_vs_train_loss(mine, curves)
        if versus["train_loss"].notna().any():
            sections.append((f"Generalisation (Fig. 8b): {task}, final dev metric vs final training loss "
                             f"({len(versus)} runs)", plot_dev_vs_train_loss(versus)))
    return sections


def _with_verdicts(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished/diverged runs with a boolean ``failed`` and string ``model``/``grid``."""
    done = runs[runs["status"].isin(SCORED)].copy()
    if "failed" not in done.columns:
        done["failed"] = failed_mask(pd.to_numeric(done["final"], errors="coerce").to_numpy(float),
                                     pd.to_numeric(done["baseline"], errors="coerce").to_numpy(float))
    done["failed"] = done["failed"].fillna(True).astype(bool) | (done["status"] != "finished")
    for col in ("model", "grid"):
        done[col] = done[col].fillna("") if col in done.columns else ""
    return done


def _dev_over_training_section(task: str, mine: pd.DataFrame, curves: pd.DataFrame,
                               max_runs: int) -> list[Section]:
    """Fig. 8a of one task: its longest-trained setting's lowest-seed successful runs (or nothing)."""
    over = dev_over_training(mine, curves).merge(mine[["run_id", "model", "grid"]], on="run_id")
    if not len(over):
        return []
    model, recipe, grid = over.groupby(["model", "recipe", "grid"], sort=False)["step"].max().idxmax()
    pick = over[(over["model"] == model) & (over["recipe"] == recipe) & (over["grid"] == grid)]
    seeds = sorted(pick["seed"].unique())[:max_runs]
    pick = pick[pick["seed"].isin(seeds)].assign(run_id=lambda d: "seed " + d["seed"].astype(str))
    setting = " ".join(str(x) for x in (Path(model).name, recipe, grid) if x)
    return [(f"Generalisation (Fig. 8a): {task}, dev {pick['metric'].iloc[0]} over training of "
             f"{len(seeds)} successful runs ({setting})", plot_dev_over_training(pick))]


def analysis_sections(folders: Sequence[str | Path]) -> list[Section]:
    """Sections for stored forgetting-probe and loss-surface tables (Fig. 2 and Fig. 7).

    Args:
        folders: output folders of ``steadytune forgetting`` / ``steadytune surface``.

    Returns:
        ``(title, Figure)`` pairs: per folder, one for ``forgetting.csv`` and one for
        ``surface.csv``, whichever it holds.

    Raises:
        FileNotFoundError: a folder holds neither ``forgetting.csv`` nor ``surface.csv``.
    """
    sections: list[Section] = []
    for folder in map(Path, folders):
        found = False
        if (folder / "forgetting.csv").exists():
            # analyses.forgetting imports torch (heavy): loaded only for a report that shows its table
            from steadytune.analyses.forgetting import plot_forgetting

            table = pd.read_csv(folder / "forgetting.csv")
            full = table.loc[table["embeddings"] == "pretrained", "perplexity"]
            fig = plot_forgetting(table, label="model" if "model" in table.columns else "checkpoint",
                                  reference=float(full.iloc[0]) if len(full) else None)
            sections.append((f"Forgetting probe: MLM perplexity vs layers reset ({folder.name})", fig))
            found = True
        if (folder / "surface.csv").exists():
            # analyses.surface imports torch (heavy): loaded only for a report that shows its table
            from steadytune.analyses.surface import plot_surface

            sections.append((f"Loss surface through pre-trained, failed and successful ({folder.name})",
                             plot_surface(pd.read_csv(folder / "surface.csv"))))
            found = True
        if not found:
            raise FileNotFoundError(f"{folder} holds neither forgetting.csv nor surface.csv")
    return sections


__all__ = ["analysis_sections", "generalisation_sections"]
