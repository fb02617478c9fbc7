"""The study store: schema, foreign files, one-transaction writes, kills, concurrency, export."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.analyses.stats import summarize
from steadytune.cli.app import app
from steadytune.config.recipes import resolve_config
from steadytune.config.run import config_hash
from steadytune.store.checkpoints import (
    CHECKPOINT_COLUMNS,
    list_checkpoints,
    set_checkpoints,
)
from steadytune.store.export import export_study
from steadytune.store.file import StoreError
from steadytune.store.records import read_logs, read_result
from steadytune.store.study import Study
from steadytune.store.tables import RUN_COLUMNS, WITHIN_COLUMNS
from steadytune.sweeps.spec import PlannedRun
from steadytune.training.results import RunResult

REPO = Path(__file__).resolve().parents[1]


def planned(seed: int, recipe: str = "devlin2019", task: str = "rte") -> PlannedRun:
    cfg = resolve_config(task=task, recipe=recipe, seed=seed, model="tiny", model_type="bert")
    return PlannedRun(config_hash(cfg), cfg, "")


def fake_result(run: PlannedRun, n_curve: int = 200, n_diag: int = 20, status: str = "finished") -> RunResult:
    """A realistic-looking result: acc in [0.4, 0.8], baseline 0.5, ``n_curve`` curve rows."""
    rng = np.random.default_rng(run.cfg.seed)
    acc = float(rng.uniform(0.4, 0.8)) if status == "finished" else float("nan")
    steps = np.arange(n_curve // 2)
    curves = pd.DataFrame({"step": np.repeat(steps, 2), "epoch": np.repeat(steps / 10.0, 2),
                           "split": "dev", "name": ["acc", "loss"] * len(steps),
                           "value": rng.uniform(0, 1, 2 * len(steps))})
    diags = pd.DataFrame({"step": np.arange(n_diag), "group": "grad_norm_layer",
                          "name": [f"layer.{i % 4}" for i in range(n_diag)], "value": rng.uniform(0, 1, n_diag)})
    return RunResult(
        task=run.cfg.task, recipe=run.cfg.recipe, seed=run.cfg.seed, model=run.cfg.model,
        config=run.cfg.to_dict(), metric="acc", metrics={"final": {"acc": acc}, "best": {"acc": 0.8}},
        best_step=10, majority_baseline=0.5, failed=not acc > 0.5, failed_best=False, status=status,
        error=None if status == "finished" else "non-finite training loss", steps=100, total_steps=100,
        warmup_steps=10, steps_per_epoch=10, wall_seconds=1.5, seeds={"run": run.cfg.seed}, versions={},
        data={"n_train": 10}, model_info={}, curves=curves, diagnostics=diags)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_study_has_meta_wal_and_foreign_keys(tmp_path):
    with Study.open(tmp_path / "s.db") as study:
        conn = study._conn
        assert dict(conn.execute("SELECT key, value FROM meta"))["app"] == "steadytune"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    with Study.open(tmp_path / "s.db", create=False) as again:  # reopening is fine
        assert again.runs_table().empty


def test_foreign_files_are_refused_and_left_untouched(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.execute("INSERT INTO people VALUES ('ada')")
    conn.commit()
    conn.close()
    for path, words in ((text, "not an SQLite database"), (foreign, "not a steadytune study")):
        before = digest(path)
        for kwargs in ({}, {"readonly": True}):
            with pytest.raises(StoreError, match=words):
                Study.open(path, **kwargs)
        assert digest(path) == before
        assert not Path(f"{path}-wal").exists()
    with pytest.raises(StoreError, match="no steadytune study"):
        Study.open(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(StoreError, match="directory"):
        Study.open(tmp_path)


def test_study_killed_before_its_schema_commit_is_reused(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    sqlite3.connect(tmp_path / "bare.db").execute("PRAGMA journal_mode=WAL").close()
    for path in (empty, tmp_path / "bare.db"):
        with Study.open(path) as study:
            study.add_planned([planned(1)])
            assert study.pending() == [planned(1).run_id]


def test_round_trip_of_result_curves_diagnostics_and_log(tmp_path):
    run = planned(3)
    result = fake_result(run)
    with Study.open(tmp_path / "s.db") as study:
        assert study.add_planned([run]) == 1
        study.claim(run.run_id)
        assert study.record_result(run.run_id, result, log="hello\n")
        back = read_result(study, run.run_id)
        assert back.to_dict() == result.to_dict()
        pd.testing.assert_frame_equal(back.curves, result.curves, check_dtype=False)
        pd.testing.assert_frame_equal(back.diagnostics, result.diagnostics, check_dtype=False)
        assert read_logs(study, run.run_id) == ["hello\n"]
        table = study.runs_table()
        assert list(table.columns) == [*RUN_COLUMNS, *WITHIN_COLUMNS, "label_entropy", "best_step", "steps",
                                       "total_steps", "train_loss", "guard"]
        row = table.iloc[0]
        assert (row.status, row.metric, row.baseline, row.seed) == ("finished", "acc", 0.5, 3)
        assert row.final == pytest.approx(result.final)
        assert len(study.curves_table([run.run_id])) == len(result.curves) == 200
        assert len(summarize(table)) == 1


def test_done_runs_are_never_touched_again(tmp_path):
    runs = [planned(s) for s in (1, 2, 3, 4)]
    with Study.open(tmp_path / "s.db") as study:
        study.add_planned(runs)
        study.record_result(runs[0].run_id, fake_result(runs[0]))
        study.record_result(runs[1].run_id, fake_result(runs[1], status="diverged"))
        study.claim(runs[2].run_id)
        study.record_error(runs[3].run_id, "DataError: boom")
        snapshot = study._conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        curves = study.curves_table()
        # planning again, a second result, an error or a start do not change done runs
        assert study.add_planned(runs) == 0
        other = fake_result(runs[0])
        other.metrics["final"]["acc"] = 0.99
        assert study.record_result(runs[0].run_id, other) is False
        study.record_error(runs[0].run_id, "late error")
        assert study.claim(runs[1].run_id) == "done"
        after = study._conn.execute("SELECT * FROM runs ORDER BY run_id").fetchall()
        done = {runs[0].run_id, runs[1].run_id}
        assert [r for r in after if r[0] in done] == [r for r in snapshot if r[0] in done]
        pd.testing.assert_frame_equal(study.curves_table(), curves)
        # running (in flight when the study died) and error runs are redone
        assert study.pending([r.run_id for r in runs]) == [runs[2].run_id, runs[3].run_id]
        assert study.statuses()[runs[3].run_id] == "error"
        assert set(study.runs_table()["status"]) == {"finished", "diverged"}
        assert len(study.runs_table(all_statuses=True)) == 4


KILL_SCRIPT = """
import json, os, signal, sys
from steadytune.store.study import Study

class Bomb:
    def __float__(self):
        os.kill(os.getpid(), signal.SIGKILL)

study = Study.open(sys.argv[1], create=False)
run_id, payload = sys.argv[2], json.loads(sys.argv[3])
curves = [(i, 0.0, "dev", "acc", 0.5) for i in range(100_000)]  # spills into the WAL
study.record_result(run_id, payload, curves, [(0, "g", "n", Bomb())], log="never")
"""


def test_kill_inside_the_write_transaction_leaves_the_old_state(tmp_path):
    run = planned(1)
    path = tmp_path / "s.db"
    with Study.open(path) as study:
        study.add_planned([run])
        study.claim(run.run_id)
    payload = json.dumps(fake_result(run).to_dict())
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path), run.run_id, payload],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert Path(f"{path}-wal").stat().st_size > 1_000_000  # the write was well under way
    with Study.open(path) as study:
        assert study.statuses() == {run.run_id: "running"}
        assert study.curves_table().empty and study.diagnostics_table().empty
        assert read_logs(study, run.run_id) == []
        assert study.pending() == [run.run_id]


WRITER_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[3])
from test_store import fake_result, planned
from steadytune.store.study import Study

study = Study.open(sys.argv[1])
runs = [planned(seed, recipe=sys.argv[2]) for seed in range(1, 31)]
study.add_planned(runs)
for run in runs:
    study.claim(run.run_id)
    study.record_result(run.run_id, fake_result(run), log="x")
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "s.db"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path), recipe, str(REPO / "tests")],
                              stderr=subprocess.PIPE, text=True)
             for recipe in ("devlin2019", "mosbach2021", "bc")]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    with Study.open(path, readonly=True) as study:
        table = study.runs_table()
        assert len(table) == 90 and set(table["status"]) == {"finished"}
        curves = study.curves_table()
        assert len(curves) == 90 * 200
        assert not curves.duplicated(["run_id", "step", "split", "name"]).any()


@pytest.fixture()
def filled(tmp_path) -> Path:
    path = tmp_path / "filled.db"
    runs = [planned(s, r) for r in ("devlin2019", "mosbach2021") for s in range(1, 6)]
    with Study.open(path) as study:
        study.add_planned(runs)
        for run in runs[:-1]:
            study.record_result(run.run_id, fake_result(run, status="diverged" if run.cfg.seed == 5 else "finished"))
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_round_trip(filled, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="the 'parquet' extra (pyarrow) is not installed")
    out = tmp_path / "out" / f"study{suffix}"
    with Study.open(filled, readonly=True) as study:
        written = export_study(study, out)
        runs, curves = study.runs_table(all_statuses=True), study.curves_table()
    assert [p.name for p in written] == [f"study{suffix}", f"study.curves{suffix}", f"study.diagnostics{suffix}"]
    read = pd.read_parquet if suffix == ".parquet" else pd.read_csv
    back = read(out)
    back["grid"] = back["grid"].astype(object).fillna("")  # CSV cannot tell "" from missing
    back["failed"] = back["failed"].astype("boolean")
    assert len(back) == 10 and set(back["status"]) == {"finished", "diverged", "pending"}
    pd.testing.assert_frame_equal(back[list(runs.columns)].sort_values("run_id", ignore_index=True),
                                  runs.sort_values("run_id", ignore_index=True),
                                  check_dtype=False, check_exact=False)
    assert json.loads(back["config_json"].iloc[0])["task"] == "rte"
    pd.testing.assert_frame_equal(read(written[1]), curves, check_dtype=False)
    with pytest.raises(StoreError, match="parquet or .csv"):
        export_study(Study.open(filled, readonly=True), tmp_path / "x.xlsx")


def test_parquet_export_without_pyarrow_is_one_clear_error(filled, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with Study.open(filled, readonly=True) as study:
        with pytest.raises(StoreError, match=r"^study\.parquet: Parquet export needs pyarrow: "
                                             r"pip install 'steadytune\[parquet\]' \(or export to \.csv\)$"):
            export_study(study, tmp_path / "out" / "study.parquet")
    assert not (tmp_path / "out").exists()  # nothing written


def test_transactions_and_the_checkpoint_list(filled):
    with Study.open(filled) as study:
        ids = list(study.runs_table()["run_id"])[:2]
        assert list_checkpoints(study).empty
        set_checkpoints(study, ids, {ids[0]: ("filled.checkpoints/a/final", True)})
        kept = list_checkpoints(study)
        assert list(kept.columns) == CHECKPOINT_COLUMNS and kept["run_id"].tolist() == [ids[0]]
        assert kept["path"].iloc[0] == str(filled.resolve().parent / "filled.checkpoints/a/final")
        assert kept["failed"].tolist() == [True]
        set_checkpoints(study, ids[:1], {})  # only the runs in scope are replaced
        assert list_checkpoints(study).empty

        def boom(conn):
            conn.execute("DELETE FROM runs")
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            study.transaction(boom)  # a failed write keeps nothing
        assert len(study.runs_table(all_statuses=True)) == 10
    with Study.open(filled, readonly=True) as study:
        count = study.transaction(lambda conn: conn.execute("SELECT count(*) FROM runs").fetchone()[0],
                                  write=False)
        assert count == 10
        for write in (lambda: study.transaction(lambda conn: None), lambda: set_checkpoints(study, ids, {}),
                      lambda: study.claim(ids[0])):
            with pytest.raises(StoreError, match="read-only"):
                write()


def test_summary_and_export_commands(filled, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["summary", str(filled), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {r["recipe"] for r in rows} == {"devlin2019", "mosbach2021"}
    for key in ("task", "model", "recipe", "metric", "n", "n_failed", "std", "mean", "median", "max"):
        assert key in rows[0]
    by_recipe = {r["recipe"]: r for r in rows}
    assert (by_recipe["devlin2019"]["n"], by_recipe["mosbach2021"]["n"]) == (5, 4)
    assert by_recipe["devlin2019"]["n_failed"] >= 1  # the diverged run
    assert 40 <= by_recipe["mosbach2021"]["mean"] <= 80  # x100
    table = runner.invoke(app, ["summary", str(filled), "--which", "best"])
    assert table.exit_code == 0 and "mosbach2021" in table.stdout and "Levene" in table.stdout
    csv = runner.invoke(app, ["summary", str(filled), "--format", "csv"])
    assert csv.stdout.splitlines()[0].startswith("task,model,recipe,grid,metric,n,n_failed")
    exported = runner.invoke(app, ["export", str(filled), "--out", str(tmp_path / "e.csv")])
    assert exported.exit_code == 0 and (tmp_path / "e.curves.csv").exists()


def test_commands_refuse_missing_and_corrupt_studies(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 100)
    before = digest(bad)
    for args in (["summary", str(bad)], ["summary", str(tmp_path / "none.db")],
                 ["export", str(bad), "--out", str(tmp_path / "x.csv")]):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert "error" in res.output
    assert digest(bad) == before and not (tmp_path / "none.db").exists()
