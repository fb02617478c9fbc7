"""Stopped runs and restarted seeds in the store, the driver and the statistics."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import steadytune.store.file as storefile
from steadytune.analyses.attempts import compare_guards, kept_runs
from steadytune.analyses.stats import summarize
from steadytune.cli.app import app
from steadytune.report.html import write_report
from steadytune.store.file import SCHEMA_VERSION, schema_version
from steadytune.store.study import Study
from steadytune.sweeps.driver import plan_runs, run_sweep
from steadytune.sweeps.events import AttemptEvent, FinishEvent
from steadytune.sweeps.spec import SweepSpec

ROOT = Path(__file__).resolve().parents[1]
KILLPOINT = Path(__file__).with_name("_killpoint.py")
# lr 1e-9 keeps the tiny model at the label prior: the guard's plateau rule stops every
# attempt at step 7 of 10, whatever the machine (tests/test_guard.py).
STUCK = {"threads": "1", "log_every": "1", "diag_every": "1", "evals_per_epoch": "0", "lr": "1e-9"}
TABLES = ("runs", "curves", "diagnostics", "logs", "checkpoints", "leases")


def _dump(path: Path) -> dict[str, list]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES if t in names}
    finally:
        conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def old_study(tmp_path) -> Path:
    """A copy of a committed version-1 study (5 real runs with curves, diagnostics and logs)."""
    path = tmp_path / "old.db"
    shutil.copy(ROOT / "results" / "stuck-rte-cpu.db", path)
    return path


def test_a_version1_study_reads_untouched_and_is_upgraded_for_writing_without_changing_a_row(old_study):
    before, digest = _dump(old_study), _digest(old_study)
    assert len(before["runs"]) == 5 and len(before["curves"]) > 100
    with Study.open(old_study, readonly=True) as study:
        assert len(study.runs_table()) == 5 and schema_version(study._conn) == 1
    assert _digest(old_study) == digest  # reading never writes
    with Study.open(old_study) as study:
        assert schema_version(study._conn) == SCHEMA_VERSION == 2
        assert not storefile.upgrade(study._conn)  # done once
        refs = study._conn.execute("PRAGMA foreign_key_list(curves)").fetchall()
        assert [(r[2], r[3], r[6]) for r in refs] == [("runs", "run_id", "CASCADE")]
        assert "'stopped'" in study._conn.execute("SELECT sql FROM sqlite_master WHERE name='runs'").fetchone()[0]
    assert _dump(old_study) == before  # every stored row, byte for byte and in order
    with Study.open(old_study) as study:  # a stopped run can be written into the old study now
        study._conn.execute("UPDATE runs SET status='stopped' WHERE seed=1")
        assert study.runs_table().set_index("seed").loc[1, "status"] == "stopped"


def test_an_upgrade_that_fails_midway_leaves_version1_as_it_was(old_study, monkeypatch):
    before = _dump(old_study)
    real = storefile._rebuild_runs

    def broken(conn):
        real(conn)  # the table is rebuilt ... and then the process fails before COMMIT
        raise RuntimeError("power cut")

    monkeypatch.setattr(storefile, "_rebuild_runs", broken)
    with pytest.raises(RuntimeError, match="power cut"):
        Study.open(old_study)
    monkeypatch.undo()
    assert _dump(old_study) == before
    conn = sqlite3.connect(old_study)
    assert schema_version(conn) == 1 and conn.execute("PRAGMA foreign_keys").fetchone()[0] == 0
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE runs SET status='stopped' WHERE seed=1")
    conn.close()


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    with Study.open(path) as study:
        study._conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    with pytest.raises(storefile.StoreError, match="schema version 3"):
        Study.open(path)


# ------------------------------------------------------------------------------ the driver


def guarded_spec(tiny_bert, tiny_glue, seeds=(1, 2), **overrides) -> SweepSpec:
    return SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019",), seeds=seeds, max_steps=10,
                     data_dir=str(tiny_glue), overrides={**STUCK, **overrides})


def test_restart_plans_each_attempt_as_its_own_run_and_resumes_exactly(tiny_bert, tiny_glue, tmp_path):
    store, events = tmp_path / "study.db", []
    spec = guarded_spec(tiny_bert, tiny_glue, guard="restart", guard_attempts="3")
    out = run_sweep(spec, store, on_event=events.append)
    assert (out["planned"], out["to_run"], out["stopped"], out["restarted"], out["finished"]) == (2, 2, 6, 4, 0)
    attempts = [e for e in events if isinstance(e, AttemptEvent)]
    assert sorted((e.seed, e.attempt) for e in attempts) == [(1, 2), (1, 3), (2, 2), (2, 3)]
    assert [e.attempt for e in events if isinstance(e, FinishEvent)] == [1, 1, 2, 2, 3, 3]  # in rounds
    with Study.open(store, readonly=True) as study:
        runs = study.runs_table()
        configs = {r: json.loads(c) for r, c in study._conn.execute("SELECT run_id, config_json FROM runs")}
    assert len(runs) == 6 and set(runs["status"]) == {"stopped"} and set(runs["grid"]) == {""}
    assert sorted(zip(runs["seed"], runs["attempt"])) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    first = {r.run_id for r in plan_runs(spec, store)}
    assert first == set(runs.loc[runs["attempt"] == 1, "run_id"])
    assert all(configs[r]["attempt"] == a for r, a in zip(runs["run_id"], runs["attempt"]))
    again = run_sweep(spec, store)  # the same command: nothing left to do
    assert (again["done_before"], again["to_run"], again["stopped"]) == (2, 0, 0)
    stats = summarize(runs).iloc[0]
    assert (stats["n"], stats["n_failed"], stats["n_stuck"], stats["n_stopped"]) == (2, 2, 2.0, 2)
    assert (stats["attempts_per_seed"], stats["steps_per_seed"], stats["steps_per_success"]) == (3.0, 24.0, np.inf)


def test_switch_keeps_the_seed_whose_switched_attempt_finishes(tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "study.db"
    # attempt 2 trains with log_every=50: no loss is logged before the last check, so the
    # plateau rule cannot fire and attempt 2 finishes (a stand-in for a fix that works).
    spec = guarded_spec(tiny_bert, tiny_glue, seeds=(1,), guard="switch", guard_switch="log_every=50")
    out = run_sweep(spec, store)
    assert (out["stopped"], out["restarted"], out["finished"]) == (1, 1, 1)
    with Study.open(store, readonly=True) as study:
        runs = study.runs_table()
        kept = kept_runs(runs)
    assert list(runs["status"]) == ["stopped", "finished"] and len(kept) == 1
    row = kept.iloc[0]
    assert (row["attempt"], row["attempts"], row["seed_steps"], row["stopped_attempts"]) == (2, 2, 18.0, 1)


def _cli(store: Path, tiny_bert: Path, tiny_glue: Path) -> list[str]:
    sets = [x for k, v in {**STUCK, "guard": "restart", "guard_attempts": "3"}.items() for x in ("--set", f"{k}={v}")]
    return ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", "1-2", "--store", str(store),
            "--model", str(tiny_bert), "--data-dir", str(tiny_glue), "--max-steps", "10", *sets]


def _results(store: Path) -> dict[tuple, tuple]:
    """(seed, attempt) -> (run_id, status, steps, guard, curves) of every run with a result."""
    with Study.open(store, readonly=True) as study:
        runs = study.runs_table()
        curves = study.curves_table()
        guard = dict(study._conn.execute("SELECT run_id, json_extract(result_json, '$.guard') FROM runs"))
    return {(r.seed, r.attempt): (r.run_id, r.status, r.steps, guard[r.run_id],
                                  tuple(curves[curves["run_id"] == r.run_id].drop(columns="run_id").itertuples(
                                      index=False, name=None)))
            for r in runs.itertuples()}


def test_sigkill_in_the_middle_of_a_seeds_attempts_then_resume_gives_the_uninterrupted_attempts(
        tiny_bert, tiny_glue, tmp_path):
    """Kills right after a stopped attempt is committed (before its next attempt is planned)
    and inside a result transaction; the resumed study equals an uninterrupted one."""
    clean, killed = tmp_path / "clean.db", tmp_path / "killed.db"
    assert subprocess.run([sys.executable, "-m", "steadytune", *_cli(clean, tiny_bert, tiny_glue)],
                          capture_output=True, timeout=300).returncode == 0
    for mode, k, recorded in (("after", 0, 1), ("in_txn", 1, 2), ("after", 1, 4)):
        proc = subprocess.run([sys.executable, str(KILLPOINT), mode, str(k), *_cli(killed, tiny_bert, tiny_glue)],
                              capture_output=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        done = {key: v for key, v in _results(killed).items() if v[1] == "stopped"}
        assert len(done) == recorded, (mode, k, sorted(done))
    assert subprocess.run([sys.executable, "-m", "steadytune", *_cli(killed, tiny_bert, tiny_glue)],
                          capture_output=True, timeout=300).returncode == 0
    want, got = _results(clean), _results(killed)
    assert sorted(got) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)] == sorted(want)
    assert got == want  # the same run ids, verdicts and curves, bit for bit


# ------------------------------------------------------------------------------ statistics


def _hand_table() -> pd.DataFrame:
    """Seeds 1-3 under restart (1: stopped then 0.7; 2: 0.6 at once; 3: stopped twice) and one plain seed."""
    rows = [  # seed, attempt, status, final, steps, wall, train_loss
        (1, 1, "stopped", np.nan, 8, 2.0, 0.69), (1, 2, "finished", 0.7, 10, 3.0, 0.2),
        (2, 1, "finished", 0.6, 10, 3.0, 0.3), (3, 1, "stopped", np.nan, 8, 2.0, 0.69),
        (3, 2, "stopped", np.nan, 8, 2.0, 0.5)]
    df = pd.DataFrame(rows, columns=["seed", "attempt", "status", "final", "steps", "wall_seconds", "train_loss"])
    df = df.assign(task="rte", model="m", recipe="devlin2019", grid="guard=restart", metric="acc", baseline=0.5,
                   best=df["final"], label_entropy=np.log(2), guard="restart", failed=df["status"] != "finished")
    plain = df.iloc[[2]].assign(grid="guard=flag", guard="flag", attempt=1)
    return pd.concat([df, plain], ignore_index=True)


def test_statistics_count_seeds_by_their_last_attempt_and_charge_every_attempt():
    summary = summarize(_hand_table()).set_index("grid")
    g = summary.loc["guard=restart"]
    assert (g["n"], g["n_failed"], g["n_stopped"]) == (3, 1, 1)
    assert g["n_stuck"] == 1.0  # seed 3's last attempt was stopped (train loss 0.5 < 0.8 ln 2, still stuck)
    assert g["mean"] == pytest.approx(65.0) and g["std"] == pytest.approx(100 * np.std([0.7, 0.6], ddof=1))
    assert g["attempts_per_seed"] == pytest.approx(5 / 3)
    assert g["steps_per_seed"] == pytest.approx(44 / 3) and g["steps_per_success"] == pytest.approx(22.0)
    assert g["wall_per_success"] == pytest.approx(6.0)
    p = summary.loc["guard=flag"]
    assert (p["n"], p["n_failed"], p["attempts_per_seed"], p["steps_per_success"]) == (1, 0, 1.0, 10.0)
    table = compare_guards(summarize(_hand_table()), _hand_table())
    assert list(table["guard"]) == ["flag", "restart"]  # sorted by steps per successful seed
    assert table.iloc[1]["mean_ok"] == pytest.approx(65.0)


def test_a_table_without_attempts_keeps_its_old_statistics():
    old = _hand_table().drop(columns=["attempt", "guard"]).iloc[[1, 2]].assign(seed=[1, 2])
    s = summarize(old).iloc[0]
    assert (s["n"], s["n_failed"], s["attempts_per_seed"], s["steps_per_success"]) == (2, 0, 1.0, 10.0)
    with pytest.raises(ValueError, match="duplicate runs"):
        summarize(old.assign(seed=1))
    with pytest.raises(ValueError, match="duplicate runs"):  # attempts do not hide a real duplicate
        summarize(old.assign(seed=1, attempt=1))


def test_summary_and_report_show_attempts_and_the_guarded_comparison(tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "study.db"
    run_sweep(guarded_spec(tiny_bert, tiny_glue, seeds=(1,), guard="switch", guard_switch="log_every=50"), store)
    run_sweep(guarded_spec(tiny_bert, tiny_glue, seeds=(1,), guard="flag"), store)
    runner = CliRunner()
    shown = runner.invoke(app, ["summary", str(store)])
    assert shown.exit_code == 0, shown.output
    assert "attempts/seed" in shown.stdout and "guarded vs unguarded" in shown.stdout and "switch" in shown.stdout
    as_json = json.loads(runner.invoke(app, ["summary", str(store), "--format", "json"]).stdout)
    assert sorted(r["attempts_per_seed"] for r in as_json) == [1.0, 2.0]
    assert all(r["steps_per_success"] is None for r in as_json)  # no seed succeeded (inf -> null)
    page = write_report(store, tmp_path / "report").read_text()
    assert "Guarded vs unguarded" in page and "stopped: 1" in page
