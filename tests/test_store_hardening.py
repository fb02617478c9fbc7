"""Statistics groups by full config, read-only studies, foreign files left clean, run leases."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_store import fake_result
from test_sweep import _start, _sweep_cmd, tiny_spec
from typer.testing import CliRunner

from steadytune.analyses.stats import summarize
from steadytune.cli.app import app
from steadytune.config.recipes import resolve_config
from steadytune.config.run import (
    HASH_EXCLUDED,
    WITHIN_GROUP_KEYS,
    RunConfig,
    config_hash,
)
from steadytune.store.leases import (
    LEASE_TTL_SECONDS,
    Owner,
    holder_alive,
    process_start,
)
from steadytune.store.study import Study
from steadytune.sweeps.driver import plan_runs
from steadytune.sweeps.spec import PlannedRun

WIDE = {"COLUMNS": "2000"}


def _sweep_args(store: Path, model: Path, glue: Path, seeds: str, *extra: str) -> list[str]:
    return ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", seeds, "--store", str(store),
            "--model", str(model), "--data-dir", str(glue), "--max-steps", "2", "--set", "threads=1",
            "--set", "evals_per_epoch=1", *extra]


# ------------------------------------------------------------------ statistics groups


def test_runs_differing_by_set_values_are_never_pooled(tiny_bert, tiny_glue, tmp_path):
    """The probe's case: --set lr/max_grad_norm outside a grid, then defaults, one store."""
    store = tmp_path / "p.db"
    runner = CliRunner()
    first = runner.invoke(app, _sweep_args(store, tiny_bert, tiny_glue, "1", "--set", "lr=1e30",
                                           "--set", "max_grad_norm=0"))
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, _sweep_args(store, tiny_bert, tiny_glue, "2"))
    assert second.exit_code == 0, second.output
    with Study.open(store, readonly=True) as study:
        table = summarize(study.runs_table())
    assert sorted(table["grid"]) == ["lr=1e+30,max_grad_norm=0", "lr=2e-05,max_grad_norm=1"]
    assert table["n"].tolist() == [1, 1]
    shown = runner.invoke(app, ["summary", str(store), "--format", "csv"])
    assert shown.exit_code == 0 and "lr=1e+30,max_grad_norm=0" in shown.stdout


def _store_with(tmp_path: Path, cfgs: list[RunConfig]) -> Path:
    path = tmp_path / f"{len(list(tmp_path.iterdir()))}.db"
    runs = [PlannedRun(config_hash(c), c, "") for c in cfgs]
    with Study.open(path) as study:
        study.add_planned(runs)
        for run in runs:
            study.record_result(run.run_id, fake_result(run, n_curve=4, n_diag=0))
    return path


VARIED = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v * 0.5 + 0.25,
          str: lambda v: f"{v}-x"}
CHOICE_ALTERNATIVES = {"segment_ids": "zeros", "save_checkpoints": "final", "batching": "random",
                       "precision": "bf16", "metric": "f1", "data_file": "other.csv", "guard": "stop",
                       "guard_switch": "lr=1e-5"}


def test_every_config_key_except_seed_and_execution_keys_splits_a_group(tmp_path):
    """Fails if any RunConfig key can be left out of the statistics group identity."""
    assert HASH_EXCLUDED == ("data_dir",)  # a new key left out of the identity is a decision
    assert WITHIN_GROUP_KEYS == ("seed", "head_seed", "data_seed", "dropout_seed", "repeat", "attempt")  # so is this
    base = resolve_config(task="rte", recipe="devlin2019", seed=1, model="tiny", model_type="bert")
    checked = []
    for field in dataclasses.fields(RunConfig):
        if field.name in (*WITHIN_GROUP_KEYS, *HASH_EXCLUDED):
            continue
        old = getattr(base, field.name)
        new = CHOICE_ALTERNATIVES.get(field.name)
        if new is None:
            new = VARIED[type(old)](old) if type(old) in VARIED else "x"
        if field.name in ("warmup_ratio", "hidden_dropout", "attention_dropout", "classifier_dropout",
                          "mixout", "adam_beta1", "adam_beta2"):
            new = 0.5 if old != 0.5 else 0.25
        if field.name == "layer_lr_decay":
            new = 0.5
        other = dataclasses.replace(base, **{field.name: new, "seed": 2})
        with Study.open(_store_with(tmp_path, [base, other]), readonly=True) as study:
            runs = study.runs_table()
        if field.name in ("task", "model", "recipe"):
            assert runs[field.name].nunique() == 2, field.name
        else:
            assert runs["grid"].nunique() == 2, f"{field.name} does not split a statistics group"
            assert all(field.name in g for g in runs["grid"]), list(runs["grid"])
        checked.append(field.name)
    assert len(checked) == len(dataclasses.fields(RunConfig)) - len(WITHIN_GROUP_KEYS) - len(HASH_EXCLUDED)


def test_stream_seeds_and_repeats_vary_within_one_group(tmp_path):
    base = resolve_config(task="rte", recipe="devlin2019", seed=1, model="tiny", model_type="bert")
    others = [dataclasses.replace(base, head_seed=2), dataclasses.replace(base, data_seed=3, dropout_seed=4),
              dataclasses.replace(base, repeat=1), dataclasses.replace(base, seed=2, lr=1e-3)]
    with Study.open(_store_with(tmp_path, [base, *others]), readonly=True) as study:
        runs = study.runs_table()
    assert sorted(runs["grid"]) == ["lr=0.001", "lr=2e-05", "lr=2e-05", "lr=2e-05", "lr=2e-05"]
    units = runs[runs["grid"] == "lr=2e-05"][["seed", "head_seed", "data_seed", "dropout_seed", "repeat"]]
    assert sorted(map(tuple, units.to_numpy().tolist())) == [(1, 1, 1, 1, 0), (1, 1, 1, 1, 1), (1, 1, 3, 4, 0),
                                                            (1, 2, 1, 1, 0)]


def test_execution_keys_and_missing_keys_of_old_studies_do_not_split(tmp_path):
    base = resolve_config(task="rte", recipe="devlin2019", seed=1, model="tiny", model_type="bert")
    other = dataclasses.replace(base, seed=2, data_dir="/elsewhere")
    path = _store_with(tmp_path, [base, other])
    with Study.open(path) as study:  # as stored when device and threads were in the config
        study._conn.execute("UPDATE runs SET config_json = json_set(config_json, '$.threads', 3, '$.device', "
                            "'cpu') WHERE seed = 2")
    with Study.open(path) as study:  # as written by a steadytune that had no 'dev_limit' yet
        study._conn.execute("UPDATE runs SET config_json = json_remove(config_json, '$.dev_limit') "
                            "WHERE seed = 2")
    with Study.open(path, readonly=True) as study:
        assert study.runs_table()["grid"].tolist() == ["", ""]


# ------------------------------------------------------------------ read-only and foreign files


def _can_mount_read_only() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,ro,bind /tmp"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs unshare -rm to make a read-only mount")
def test_summary_report_and_export_read_a_study_in_a_read_only_folder(tiny_bert, tiny_glue, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    res = CliRunner().invoke(app, _sweep_args(ro / "s.db", tiny_bert, tiny_glue, "1-3"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in ro.iterdir()) == ["s.db"]  # closed cleanly: no -wal/-shm left
    out = tmp_path / "out"
    script = " && ".join([
        f"mount --bind {ro} {ro}", f"mount -o remount,ro,bind {ro}",
        f"{sys.executable} -m steadytune summary {ro}/s.db",
        f"{sys.executable} -m steadytune report {ro}/s.db --out {out}/report",
        f"{sys.executable} -m steadytune export {ro}/s.db --out {out}/runs.csv"])
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True,
                          env={**os.environ, **WIDE})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "devlin2019" in done.stdout and "unable to open" not in done.stderr
    assert (out / "report" / "index.html").is_file() and (out / "runs.csv").is_file()
    assert sorted(p.name for p in ro.iterdir()) == ["s.db"]


def _foreign(tmp_path: Path) -> Path:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    return path


def _corrupt(tmp_path: Path) -> Path:
    good = _foreign(tmp_path).read_bytes()
    path = tmp_path / "corrupt.db"
    path.write_bytes(good[:100] + b"\x00" * 60 + bytes(range(256)) * 8)
    return path


@pytest.mark.parametrize("make, words", [
    (_foreign, "is an SQLite database but not a steadytune study (no 'steadytune' entry in a meta table); "
               "the file was left untouched"),
    (_corrupt, "is not a readable steadytune study (database disk image is malformed); "
               "the file was left untouched"),
])
@pytest.mark.parametrize("command", ["summary", "report", "export", "sweep"])
def test_foreign_or_corrupt_file_is_refused_and_left_exactly_as_it_was(make, words, command, tmp_path,
                                                                       tiny_bert, tiny_glue):
    path = make(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = {"summary": ["summary", str(path)], "report": ["report", str(path), "--out", str(tmp_path / "r")],
            "export": ["export", str(path), "--out", str(tmp_path / "x.csv")],
            "sweep": _sweep_args(path, tiny_bert, tiny_glue, "1")}[command]
    res = CliRunner().invoke(app, args, env=WIDE)
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == f"error: {path} {words}"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no -wal/-shm, no output


# ------------------------------------------------------------------ leases


def test_holder_alive_rules(tmp_path):
    me = Owner.current()
    now = time.time()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        start = process_start(sleeper.pid)
        assert start and holder_alive(me, me.host, sleeper.pid, start, heartbeat_at=0.0, now=now)
        assert not holder_alive(me, me.host, sleeper.pid, "12345", 0.0, now)  # a re-used pid
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not holder_alive(me, me.host, sleeper.pid, start, now, now)  # died: taken over at once
    assert holder_alive(me, "node-2", 1, "1", now - 1.0, now)  # another host: by heartbeat
    assert not holder_alive(me, "node-2", 1, "1", now - LEASE_TTL_SECONDS - 1, now)
    assert holder_alive(me, me.host, me.pid, me.proc_start, now - 1.0, now)  # another driver here
    assert not holder_alive(me, me.host, me.pid, me.proc_start, now - LEASE_TTL_SECONDS - 1, now)


def _attempts(store: Path) -> dict[int, tuple[str, int, int]]:
    conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT r.seed, r.recipe, r.status, r.attempts, (SELECT count(*) FROM logs l "
                            "WHERE l.run_id = r.run_id) FROM runs r").fetchall()
    finally:
        conn.close()
    return {(seed, recipe): (status, attempts, logs) for seed, recipe, status, attempts, logs in rows}


def test_a_second_driver_plans_beside_a_study_file_created_but_not_yet_written(tiny_bert, tiny_glue, tmp_path):
    """Two drivers starting together: one has created the file (SQLite writes the tables a
    moment later); the other's read-only planning must see "no study yet", not fail."""
    from steadytune.sweeps.driver import run_sweep

    store = tmp_path / "study.db"
    store.touch()  # what the first driver's sqlite3.connect leaves before its schema transaction
    plan = run_sweep(tiny_spec(tiny_bert, tiny_glue, seeds=(1,)), store, dry_run=True)
    assert (plan["planned"], plan["done_before"], plan["to_run"]) == (2, 0, 2)
    assert store.stat().st_size == 0  # a dry run writes nothing


def test_two_real_drivers_on_one_store_train_every_run_once(tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "study.db"
    cmd = _sweep_cmd(store, tiny_bert, tiny_glue, "1-4")
    drivers = [_start(cmd), _start(cmd)]
    for proc, lines in drivers:
        code = proc.wait(timeout=300)
        text = "".join(iter(lines.get, None))
        assert code == 0, text
    runs = _attempts(store)
    assert len(runs) == 8
    assert all(status in ("finished", "diverged") and attempts == 1 and logs == 1
               for status, attempts, logs in runs.values()), runs


def test_a_driver_waits_for_a_leased_run_and_takes_it_over_when_its_holder_is_killed(
        tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "study.db"
    cmd = _sweep_cmd(store, tiny_bert, tiny_glue, "1")
    planned = plan_runs(tiny_spec(tiny_bert, tiny_glue, seeds=(1,)), store)
    held = next(r for r in planned if r.cfg.recipe == "mosbach2021")
    holder = subprocess.Popen(["sleep", "600"])  # stands for a driver training `held`
    try:
        with Study.open(store) as study:  # the holder planned the sweep and claimed one run
            study.add_planned(planned)
            fake = Owner("holder", Owner.current().host, holder.pid, process_start(holder.pid))
            assert study.claim(held.run_id, fake) is None
        driver, lines = _start(cmd)
        seen = []
        while not any("waiting for 1 run(s)" in line for line in seen):
            line = lines.get(timeout=120)
            assert line is not None, "".join(seen)
            seen.append(line)
        assert f"pid {holder.pid}" in seen[-1]
        runs = _attempts(store)
        assert runs[(1, "mosbach2021")][1] == 1  # only the holder's claim so far
        assert runs[(1, "devlin2019")][0] in ("finished", "diverged")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert driver.wait(timeout=120) == 0
    runs = _attempts(store)
    assert runs[(1, "mosbach2021")][0] in ("finished", "diverged") and runs[(1, "mosbach2021")][1:] == (2, 1)
    assert runs[(1, "devlin2019")][1:] == (1, 1)


def test_a_best_checkpoint_at_step_0_is_counted_and_said(tmp_path):
    base = resolve_config(task="rte", recipe="devlin2019", seed=1, model="tiny", model_type="bert")
    path = _store_with(tmp_path, [dataclasses.replace(base, seed=s) for s in (1, 2, 3)])
    with Study.open(path) as study:
        study._conn.execute("UPDATE runs SET result_json = json_set(result_json, '$.best_step', 0) WHERE seed = 2")
    with Study.open(path, readonly=True) as study:
        runs = study.runs_table()
    assert runs["best_step"].tolist() == [10, 0, 10]
    assert summarize(runs, "best")["n_best_untrained"].tolist() == [1]
    res = CliRunner().invoke(app, ["summary", str(path), "--which", "best"], env=WIDE)
    assert res.exit_code == 0
    assert "1 run(s) have their best dev score at step 0, the untrained model" in res.output
    assert "step 0" not in CliRunner().invoke(app, ["summary", str(path)], env=WIDE).output
