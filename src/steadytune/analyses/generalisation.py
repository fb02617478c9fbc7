"""Generalisation (paper Fig. 8): dev metric over training and against final training loss.

Pure functions over stored tables; nothing here loads a model. ``generalisation_probe``
reads the tables of stored runs (:func:`load_tables`) and writes both analyses (what
``steadytune generalisation`` runs). The inputs are

* ``runs``: one row per run with ``run_id, task, recipe, seed, metric, final, failed, status``
  (``metric`` names the run's dev metric, ``final`` its final-checkpoint value);
* ``curves``: one row per logged value with ``run_id, step, split, name, value``
  (``split`` is ``train`` or ``dev``; ``name`` is ``loss``, ``acc``, ``mcc``, ...), as
  written to ``curves.csv`` by every run plus a ``run_id`` column.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import pandas as pd

from steadytune.analyses.outputs import ProbeResult, write_outputs
from steadytune.store.study import Study
from steadytune.training.results import RunResult

RUN_COLUMNS = ("run_id", "task", "recipe", "seed", "metric", "final", "failed", "status")
CURVE_COLUMNS = ("run_id", "step", "split", "name", "value")

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _check(table: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} table lacks column(s) {', '.join(missing)}; needs {', '.join(columns)}")


def _successful(runs: pd.DataFrame) -> pd.Series:
    return (~runs["failed"].astype(bool)) & (runs["status"] == "finished")


def dev_over_training(runs: pd.DataFrame, curves: pd.DataFrame, successful_only: bool = True) -> pd.DataFrame:
    """Each run's dev metric at every evaluated step (Fig. 8a).

    Args:
        runs: the runs table (see module docstring).
        curves: the curves table.
        successful_only: keep only finished runs that did not fail (the paper's 10
            successful runs); False keeps every run.

    Returns:
        One row per run × evaluation step: ``run_id, task, recipe, seed, failed, metric,
        step, value``, sorted by run and step. Runs without dev curves give no rows.

    Raises:
        ValueError: a table lacks a required column.
    """
    _check(runs, RUN_COLUMNS, "runs")
    _check(curves, CURVE_COLUMNS, "curves")
    keep = runs[_successful(runs)] if successful_only else runs
    keep = keep[["run_id", "task", "recipe", "seed", "failed", "metric"]]
    dev = curves[curves["split"] == "dev"][["run_id", "step", "name", "value"]]
    out = keep.merge(dev, left_on=["run_id", "metric"], right_on=["run_id", "name"], how="inner")
    out = out.drop(columns="name").sort_values(["run_id", "step"], kind="stable")
    return out.reset_index(drop=True)


def dev_vs_train_loss(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Final dev metric against final training loss, one row per run (Fig. 8b).

    The final training loss is the last logged ``train``/``loss`` value of the run (the
    one at the highest step); runs that logged none get NaN.

    Returns:
        ``run_id, task, recipe, seed, metric, failed, status, train_loss, train_loss_step,
        dev`` (``dev`` = the run's ``final`` value).

    Raises:
        ValueError: a table lacks a required column.
    """
    _check(runs, RUN_COLUMNS, "runs")
    _check(curves, CURVE_COLUMNS, "curves")
    train = curves[(curves["split"] == "train") & (curves["name"] == "loss")]
    last = train.sort_values(["run_id", "step"], kind="stable").groupby("run_id", sort=False).tail(1)
    last = last[["run_id", "value", "step"]].rename(columns={"value": "train_loss", "step": "train_loss_step"})
    out = runs[["run_id", "task", "recipe", "seed", "metric", "failed", "status", "final"]].merge(
        last, on="run_id", how="left")
    out = out.rename(columns={"final": "dev"})
    return out[["run_id", "task", "recipe", "seed", "metric", "failed", "status", "train_loss",
                "train_loss_step", "dev"]].reset_index(drop=True)


def plot_dev_over_training(df: pd.DataFrame, x: str = "step") -> Figure:
    """One line per run of the dev metric against ``x`` (a :func:`dev_over_training` table)."""
    fig, ax = _figure(5.5, 3.6)
    for run_id, part in df.groupby("run_id", sort=False):
        ax.plot(part[x], part["value"], marker=".", linewidth=1, label=str(run_id))
    metrics = sorted(df["metric"].unique()) if len(df) else []
    ax.set_xlabel(x)
    ax.set_ylabel("dev " + "/".join(metrics))
    if 0 < df["run_id"].nunique() <= 12:
        ax.legend(fontsize=7)
    return fig


def plot_dev_vs_train_loss(df: pd.DataFrame) -> Figure:
    """Dev metric against final training loss (log x), failed runs marked (a :func:`dev_vs_train_loss` table).

    Runs with a missing or non-positive training loss cannot be placed on a log axis and
    are left out.
    """
    shown = df[df["train_loss"].notna() & (df["train_loss"] > 0) & df["dev"].notna()]
    fig, ax = _figure(5.2, 3.6)
    for failed, marker, colour, name in ((False, "o", "C0", "successful"), (True, "x", "C3", "failed")):
        part = shown[shown["failed"].astype(bool) == failed]
        ax.scatter(part["train_loss"], part["dev"], marker=marker, color=colour, label=f"{name} ({len(part)})")
    ax.set_xscale("log")
    metrics = sorted(df["metric"].unique()) if len(df) else []
    ax.set_xlabel("final training loss")
    ax.set_ylabel("dev " + "/".join(metrics))
    ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------- the probe


def load_tables(sources: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The runs and curves tables of study files and/or run folders (``result.json`` + ``curves.csv``).

    A run folder's ``run_id`` is its name, or its whole path where two sources share a name.

    Returns:
        ``(runs, curves)`` with the columns of :data:`RUN_COLUMNS` and :data:`CURVE_COLUMNS`.

    Raises:
        FileNotFoundError: a source does not exist, or a run folder has no ``result.json``.
        StoreError: a file is not a steadytune study.
        ValueError: no source given.
    """
    if not sources:
        raise ValueError("no study file or run folder given")
    runs, curves = [], []
    names = [Path(s).name for s in sources]
    for source in map(Path, sources):
        if not source.exists():
            raise FileNotFoundError(f"{source}: no such study file or run folder")
        if source.is_dir():
            result = RunResult.load(source)
            run_id = source.name if names.count(source.name) == 1 else str(source)  # short legend labels
            runs.append(pd.DataFrame([{"run_id": run_id, "task": result.task, "recipe": result.recipe,
                                       "seed": result.seed, "metric": result.metric, "final": result.final,
                                       "failed": result.failed, "status": result.status}]))
            curves.append(result.curves.assign(run_id=run_id))
        else:
            with Study.open(source, readonly=True) as study:
                runs.append(study.runs_table())
                curves.append(study.curves_table())
    return pd.concat(runs, ignore_index=True), pd.concat(curves, ignore_index=True)


def generalisation_probe(sources: Sequence[str | Path], out: str | Path = "runs/generalisation", *,
                         successful_only: bool = True) -> ProbeResult:
    """Fig. 8 of stored runs: :func:`dev_over_training` and :func:`dev_vs_train_loss`, written to ``out``.

    Writes ``dev_over_training.csv``, ``.png``, ``.json`` and ``dev_vs_train_loss.csv``,
    ``.png``, ``.json``. Loads no model.

    Args:
        sources: study files and/or run folders (see :func:`load_tables`).
        out: output folder (created).
        successful_only: dev curves of successful runs only (False: of failed runs too).

    Returns:
        ``tables["dev_over_training"]`` and ``tables["dev_vs_train_loss"]``; ``files``: the six paths.

    Raises:
        FileNotFoundError, StoreError: a source cannot be read (see :func:`load_tables`).
        ValueError: no source, or the stored tables lack a column.
    """
    runs, curves = load_tables(sources)
    tables = {"dev_over_training": dev_over_training(runs, curves, successful_only=successful_only),
              "dev_vs_train_loss": dev_vs_train_loss(runs, curves)}
    record = {"analysis": "generalisation", "sources": [str(s) for s in sources], "successful_only": successful_only}
    files = write_outputs(out, "dev_over_training", tables["dev_over_training"],
                          plot_dev_over_training(tables["dev_over_training"]), record)
    files += write_outputs(out, "dev_vs_train_loss", tables["dev_vs_train_loss"],
                           plot_dev_vs_train_loss(tables["dev_vs_train_loss"]), record)
    return ProbeResult(tables, files, record)


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    from steadytune.analyses.figures import (
        new_figure,  # matplotlib is imported only when plotting
    )

    return new_figure(width, height)


__all__ = ["dev_over_training", "dev_vs_train_loss", "generalisation_probe", "load_tables", "plot_dev_over_training",
           "plot_dev_vs_train_loss", "RUN_COLUMNS", "CURVE_COLUMNS"]
