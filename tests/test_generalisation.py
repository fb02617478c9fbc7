"""Generalisation tables (Fig. 8) on hand-made runs and curves tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from steadytune.analyses.generalisation import (
    dev_over_training,
    dev_vs_train_loss,
    plot_dev_over_training,
    plot_dev_vs_train_loss,
)


@pytest.fixture()
def runs() -> pd.DataFrame:
    return pd.DataFrame([
        # run_id, task, recipe, seed, metric, final, failed, status
        ("a", "rte", "ours", 1, "acc", 0.70, False, "finished"),
        ("b", "rte", "ours", 2, "acc", 0.52, True, "finished"),
        ("c", "rte", "ours", 3, "acc", float("nan"), True, "diverged"),
        ("d", "cola", "ours", 1, "mcc", 0.40, False, "finished"),
    ], columns=["run_id", "task", "recipe", "seed", "metric", "final", "failed", "status"])


@pytest.fixture()
def curves() -> pd.DataFrame:
    rows = []
    for run, losses in (("a", [0.7, 0.3, 1e-4]), ("b", [0.7, 0.69, 0.69]), ("d", [0.6, 0.2, 0.01])):
        # written out of order: the functions must sort by step
        for step, loss in reversed(list(zip((10, 20, 30), losses))):
            rows.append((run, step, "train", "loss", loss))
            rows.append((run, step, "train", "lr", 1e-5))
        for step, value in zip((0, 15, 30), (0.5, 0.6, 0.7)):
            rows.append((run, step, "dev", "acc", value))
            rows.append((run, step, "dev", "loss", 1.0 - value))
    rows.append(("d", 30, "dev", "mcc", 0.4))
    rows.append(("c", 0, "dev", "acc", 0.5))  # diverged before logging a train loss
    return pd.DataFrame(rows, columns=["run_id", "step", "split", "name", "value"])


def test_dev_over_training_keeps_successful_runs_and_their_metric(runs, curves):
    df = dev_over_training(runs, curves)
    assert list(df.columns) == ["run_id", "task", "recipe", "seed", "failed", "metric", "step", "value"]
    assert df["run_id"].unique().tolist() == ["a", "d"]
    a = df[df["run_id"] == "a"]
    assert a["step"].tolist() == [0, 15, 30] and a["value"].tolist() == [0.5, 0.6, 0.7]
    d = df[df["run_id"] == "d"]  # CoLA: its own metric (mcc), not acc
    assert d["metric"].tolist() == ["mcc"] and d["value"].tolist() == [0.4]
    everything = dev_over_training(runs, curves, successful_only=False)
    assert set(everything["run_id"]) == {"a", "b", "c", "d"}


def test_dev_vs_train_loss_uses_the_last_logged_train_loss(runs, curves):
    df = dev_vs_train_loss(runs, curves)
    by_run = df.set_index("run_id")
    assert by_run.loc["a", "train_loss"] == 1e-4 and by_run.loc["a", "train_loss_step"] == 30
    assert by_run.loc["b", "train_loss"] == 0.69 and by_run.loc["b", "dev"] == 0.52
    assert math.isnan(by_run.loc["c", "train_loss"])  # no train loss logged: NaN, row kept
    assert by_run.loc["d", "dev"] == 0.40 and by_run.loc["d", "train_loss"] == 0.01
    assert len(df) == len(runs)


def test_missing_columns_are_named(runs, curves):
    with pytest.raises(ValueError, match="failed"):
        dev_over_training(runs.drop(columns="failed"), curves)
    with pytest.raises(ValueError, match="split"):
        dev_vs_train_loss(runs, curves.drop(columns="split"))


def test_plots(runs, curves, tmp_path):
    fig = plot_dev_over_training(dev_over_training(runs, curves))
    assert len(fig.axes[0].get_lines()) == 2
    fig.savefig(tmp_path / "a.png")
    fig = plot_dev_vs_train_loss(dev_vs_train_loss(runs, curves))
    assert fig.axes[0].get_xscale() == "log"
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 3  # c has no loss
    fig.savefig(tmp_path / "b.png")


def save_runs(runs: pd.DataFrame, curves: pd.DataFrame, root) -> list:
    """Each row of ``runs`` as a run folder (result.json + curves.csv) named after its run_id."""
    from steadytune.training.results import RunResult

    folders = []
    for row in runs.itertuples():
        own = curves[curves["run_id"] == row.run_id].drop(columns="run_id").assign(epoch=0.0)
        RunResult(task=row.task, recipe=row.recipe, seed=row.seed, model="tiny", config={}, metric=row.metric,
                  metrics={"final": {row.metric: row.final}, "best": {}}, best_step=1, majority_baseline=0.5,
                  failed=row.failed, failed_best=row.failed, status=row.status, error=None, steps=30, total_steps=30,
                  warmup_steps=0, steps_per_epoch=10, wall_seconds=1.0, seeds={}, versions={}, data={},
                  model_info={}, curves=own).save(root / row.run_id)
        folders.append(root / row.run_id)
    return folders


def test_generalisation_probe_reads_run_folders_and_writes_both_tables(runs, curves, tmp_path):
    import json

    from steadytune.analyses.generalisation import generalisation_probe, load_tables

    folders = save_runs(runs, curves, tmp_path / "runs")
    stored_runs, _ = load_tables(folders)
    assert stored_runs["run_id"].tolist() == ["a", "b", "c", "d"] and math.isnan(stored_runs["final"].iloc[2])
    out = tmp_path / "out"
    result = generalisation_probe(folders, out)
    names = ["dev_over_training.csv", "dev_over_training.png", "dev_over_training.json",
             "dev_vs_train_loss.csv", "dev_vs_train_loss.png", "dev_vs_train_loss.json"]
    assert [p.name for p in result.files] == names and sorted(p.name for p in out.iterdir()) == sorted(names)
    assert list(result.tables) == ["dev_over_training", "dev_vs_train_loss"]
    expected = dev_over_training(runs, curves)
    pd.testing.assert_frame_equal(result.table, expected, check_dtype=False)
    pd.testing.assert_frame_equal(pd.read_csv(out / "dev_over_training.csv"), expected, check_dtype=False)
    versus = result.tables["dev_vs_train_loss"].set_index("run_id")
    assert versus.loc["a", "train_loss"] == 1e-4 and math.isnan(versus.loc["c", "train_loss"])
    record = json.loads((out / "dev_vs_train_loss.json").read_text())
    assert record["sources"] == [str(f) for f in folders] and record["successful_only"] is True
    everything = generalisation_probe(folders, tmp_path / "all", successful_only=False)
    assert set(everything.table["run_id"]) == {"a", "b", "c", "d"}
    with pytest.raises(FileNotFoundError, match="no such study file or run folder"):
        generalisation_probe([tmp_path / "missing"], tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_cli_writes_both_tables_and_names_a_bad_source(runs, curves, tmp_path):
    import typer
    from typer.testing import CliRunner

    from steadytune.cli import analyses as cli_analyses

    folders = save_runs(runs, curves, tmp_path / "runs")
    app = typer.Typer()
    app.command()(cli_analyses.generalisation)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [*map(str, folders), "--out", str(out), "--all-runs"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / f"{name}.{ext}") for name in ("dev_over_training", "dev_vs_train_loss")
                                     for ext in ("csv", "png", "json")]
    assert set(pd.read_csv(out / "dev_over_training.csv")["run_id"]) == {"a", "b", "c", "d"}
    (tmp_path / "notes.txt").write_text("not a study")
    for bad in (tmp_path / "missing", tmp_path / "notes.txt"):
        failed = CliRunner().invoke(app, [str(bad), "--out", str(tmp_path / "none")])
        assert failed.exit_code == 2 and "error:" in failed.output and str(bad.name) in failed.output, failed.output
    assert not (tmp_path / "none").exists()
