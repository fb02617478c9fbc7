"""Seed sweeps: parsing, expansion, resume, errors, dry runs, and surviving SIGKILL."""

from __future__ import annotations

import hashlib
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadytune.cli.app import app
from steadytune.config.run import ConfigError, config_hash
from steadytune.data.tasks import DataError
from steadytune.store.records import read_logs, read_result
from steadytune.store.study import Study
from steadytune.sweeps.driver import plan_runs, run_sweep
from steadytune.sweeps.events import FinishEvent, PlanEvent
from steadytune.sweeps.spec import SweepSpec, expand, parse_grid, parse_seeds
from steadytune.sweeps.worker import execute_run
from steadytune.training.models import ModelError

FAST = {"threads": "1", "evals_per_epoch": "1"}


def tiny_spec(model: Path, glue: Path, seeds=(1, 2), recipes=("devlin2019", "mosbach2021"), **kw) -> SweepSpec:
    kw.setdefault("overrides", dict(FAST))
    return SweepSpec(tasks=("rte",), models=(str(model),), recipes=recipes, seeds=seeds,
                     max_steps=4, data_dir=str(glue), **kw)


def test_parse_seeds():
    assert parse_seeds("1-5") == (1, 2, 3, 4, 5)
    assert parse_seeds("1,3,5") == (1, 3, 5)
    assert parse_seeds("1-3,10, 2") == (1, 2, 3, 10)
    assert len(parse_seeds("1-25")) == 25
    for bad in ("", " ", "1-", "-3", "a", "1,,2", "5-1", "1.5"):
        with pytest.raises(ConfigError, match="seed"):
            parse_seeds(bad)


def test_parse_grid():
    assert parse_grid(["lr=1e-5,2e-5", "epochs=3,10"]) == {"lr": ["1e-5", "2e-5"], "epochs": ["3", "10"]}
    with pytest.raises(ConfigError, match="valid keys: .*lr"):
        parse_grid(["learning_rate=1e-5"])
    for bad, words in ((["lr"], "key=value"), (["lr=1e-5,"], "empty"), (["lr=1e-5,1e-05"], "repeats"),
                       (["lr=1", "lr=2"], "twice"), (["seed=1,2"], "--seeds"), (["epochs=x"], "expects float"),
                       (["correct_bias=maybe"], "expects bool")):
        with pytest.raises(ConfigError, match=words):
            parse_grid(bad)


def test_paper_ablation_expands_to_450_unique_runs(tiny_bert, tiny_glue):
    grid = parse_grid(["lr=1e-5,2e-5,3e-5", "epochs=3,10,20", "correct_bias=true,false"])
    spec = SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019",),
                     seeds=parse_seeds("1-25"), grid=grid, data_dir=str(tiny_glue))
    runs = expand(spec)
    assert len(runs) == 450 == len({r.run_id for r in runs})
    assert all(r.run_id == config_hash(r.cfg) for r in runs)
    labels = {r.grid for r in runs}
    assert len(labels) == 18 and "correct_bias=false,epochs=3,lr=1e-05" in labels
    one = next(r for r in runs if r.grid == "correct_bias=true,epochs=20,lr=3e-05" and r.cfg.seed == 7)
    assert (one.cfg.correct_bias, one.cfg.epochs, one.cfg.lr) == (True, 20.0, 3e-5)  # grid beats recipe
    plain = expand(tiny_spec(tiny_bert, tiny_glue))
    assert {r.grid for r in plain} == {""} and len(plain) == 4


@pytest.mark.parametrize("change, error, words", [
    ({"tasks": ("rtee",)}, DataError, "unknown task"),
    ({"tasks": ("sst2",)}, DataError, "SST-2/train.tsv"),
    ({"recipes": ("devlin2020",)}, ConfigError, "unknown recipe"),
    ({"overrides": {"lr_rate": "1"}}, ConfigError, "valid keys"),
    ({"grid": {"lr": ["fast"]}}, ConfigError, "expects float"),
    ({"seeds": ()}, ConfigError, "no seeds"),
    ({"data_dir": "/nonexistent/glue"}, DataError, "does not exist"),
    ({"models": ("/nonexistent/model",)}, ModelError, "does not exist"),
])
def test_bad_specs_fail_before_anything_is_written(tiny_bert, tiny_glue, tmp_path, change, error, words):
    base = tiny_spec(tiny_bert, tiny_glue)
    spec = SweepSpec(**{**{k: getattr(base, k) for k in base.__dataclass_fields__}, **change})
    with pytest.raises(error, match=words):
        run_sweep(spec, tmp_path / "study.db")
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_seed_range_exits_2_without_a_file(tiny_bert, tiny_glue, tmp_path):
    for seeds in ("", "9-3"):
        res = CliRunner().invoke(app, ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", seeds,
                                       "--store", str(tmp_path / "s.db"), "--model", str(tiny_bert),
                                       "--data-dir", str(tiny_glue)])
        assert res.exit_code == 2 and "seed" in res.output
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def counted(monkeypatch):
    """Count (and optionally break) calls of train_and_evaluate made by the executor."""
    import steadytune.sweeps.worker as train  # where the executor looks the loop up

    real, calls, broken = train.train_and_evaluate, [], set()

    def fake(cfg, *args, **kwargs):
        calls.append((cfg.recipe, cfg.seed))
        if cfg.seed in broken:
            raise DataError(f"broken data for seed {cfg.seed}")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(train, "train_and_evaluate", fake)
    return calls, broken


def test_resume_skips_finished_runs(tiny_bert, tiny_glue, tmp_path, counted):
    calls, _ = counted
    store = tmp_path / "study.db"
    events = []
    out = run_sweep(tiny_spec(tiny_bert, tiny_glue), store, on_event=events.append)
    assert (out["planned"], out["finished"] + out["diverged"], len(calls)) == (4, 4, 4)
    assert sum(isinstance(e, FinishEvent) for e in events) == 4 and isinstance(events[0], PlanEvent)
    again = run_sweep(tiny_spec(tiny_bert, tiny_glue), store)
    assert (again["done_before"], again["to_run"], len(calls)) == (4, 0, 4)
    more = run_sweep(tiny_spec(tiny_bert, tiny_glue, seeds=(1, 2, 3)), store)
    assert (more["done_before"], more["to_run"], len(calls)) == (4, 2, 6)
    assert sorted(calls[4:]) == [("devlin2019", 3), ("mosbach2021", 3)]
    with Study.open(store, readonly=True) as study:
        table = study.runs_table()
        assert len(table) == 6 and table["seed"].tolist().count(3) == 2
        log = read_logs(study, table["run_id"].iloc[0])[0]
        assert "start run" in log and "end run" in log


def test_error_runs_are_recorded_and_retried(tiny_bert, tiny_glue, tmp_path, counted):
    calls, broken = counted
    store = tmp_path / "study.db"
    broken.add(2)
    out = run_sweep(tiny_spec(tiny_bert, tiny_glue), store)
    assert (out["error"], out["finished"] + out["diverged"]) == (2, 2)  # the sweep went on
    with Study.open(store, readonly=True) as study:
        errors = study.runs_table(all_statuses=True).query("status == 'error'")
        assert set(errors["seed"]) == {2}
        row = study._conn.execute("SELECT error, attempts FROM runs WHERE status='error'").fetchone()
        assert row == ("DataError: broken data for seed 2", 1)
        assert "Traceback" in read_logs(study, errors["run_id"].iloc[0])[0]
    broken.clear()
    retry = run_sweep(tiny_spec(tiny_bert, tiny_glue), store)
    assert (retry["to_run"], retry["error"], len(calls)) == (2, 0, 6)
    with Study.open(store, readonly=True) as study:
        assert set(study.statuses().values()) <= {"finished", "diverged"}
        assert study._conn.execute("SELECT max(attempts) FROM runs").fetchone()[0] == 2


def test_dry_run_writes_nothing(tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "study.db"
    plan = run_sweep(tiny_spec(tiny_bert, tiny_glue), store, dry_run=True)
    assert (plan["planned"], plan["done_before"], plan["to_run"]) == (4, 0, 4)
    assert not store.exists()
    run_sweep(tiny_spec(tiny_bert, tiny_glue, seeds=(1,), recipes=("devlin2019",)), store)
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    args = ["sweep", "--tasks", "rte", "--recipes", "devlin2019,mosbach2021", "--seeds", "1-3", "--store",
            str(store), "--model", str(tiny_bert), "--data-dir", str(tiny_glue), "--max-steps", "4",
            "--set", "threads=1", "--set", "evals_per_epoch=1", "--dry-run"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "6 runs planned, 1 already done, 5 to run" in res.stdout
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before


def _tables(store: Path) -> list:
    with Study.open(store, readonly=True) as study:
        return [study.runs_table().drop(columns="wall_seconds").sort_values("run_id", ignore_index=True),
                study.curves_table().sort_values(["run_id", "step", "split", "name"], ignore_index=True),
                study.diagnostics_table().sort_values(["run_id", "step", "group", "name"], ignore_index=True)]


def test_run_sweeps_from_python_does_what_the_cli_does(tiny_bert, tiny_glue, tmp_path):
    import dataclasses

    import pandas as pd

    from steadytune.sweeps.driver import PlanGroup, SweepTotals, run_sweeps
    from steadytune.sweeps.events import StartEvent, SweepsDoneEvent, SweepsPlanEvent

    by_cli = tmp_path / "cli.db"
    res = CliRunner().invoke(app, [*_sweep_cmd(by_cli, tiny_bert, tiny_glue, "1-2")[3:], "--workers", "1"])
    assert res.exit_code == 0, res.output
    specs = [tiny_spec(tiny_bert, tiny_glue, recipes=(recipe,)) for recipe in ("devlin2019", "mosbach2021")]
    store = tmp_path / "python.db"
    plan = run_sweeps(specs, store, workers=1, dry_run=True)
    assert not store.exists()
    groups = tuple(PlanGroup("rte", str(tiny_bert), recipe, "", 2, 0) for recipe in ("devlin2019", "mosbach2021"))
    assert plan == SweepTotals(store=str(store), planned=4, done_before=0, to_run=4, dry_run=True, groups=groups)
    events: list = []
    totals = run_sweeps(specs, store, workers=1, on_event=events.append)
    assert totals == SweepTotals(store=str(store), planned=4, done_before=0, to_run=4, finished=totals.finished,
                                 diverged=totals.diverged)
    assert totals.finished + totals.diverged == 4
    assert (f"done: {totals.finished} finished, {totals.diverged} diverged, 0 errors (0 were already done)"
            in res.output.splitlines())
    for mine, theirs in zip(_tables(store), _tables(by_cli)):  # the same runs, the same numbers
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    # the events are typed, frozen records, in order: all plans, then per spec its plan and runs
    per_spec = [PlanEvent, StartEvent, FinishEvent, StartEvent, FinishEvent]
    assert [type(e) for e in events] == [SweepsPlanEvent, *per_spec, *per_spec, SweepsDoneEvent]
    assert events[-1] == SweepsDoneEvent(str(store), totals.finished, totals.diverged, 0)
    assert events[0] == SweepsPlanEvent(specs=2, planned=4, done_before=0, to_run=4, store=str(store))
    assert events[1] == PlanEvent(planned=2, done_before=0, to_run=2, workers=1, store=str(store))
    with pytest.raises(dataclasses.FrozenInstanceError):
        events[0].planned = 5
    finished = [e for e in events if isinstance(e, FinishEvent)]
    assert [(e.recipe, e.seed) for e in finished] == [("devlin2019", 1), ("devlin2019", 2),
                                                       ("mosbach2021", 1), ("mosbach2021", 2)]
    assert [e.run_id for e in events if isinstance(e, StartEvent)] == [e.run_id for e in finished]
    assert {e.run_id for e in finished} == set(_tables(store)[0]["run_id"])
    assert all(e.status in ("finished", "diverged") and e.metric == "acc" for e in finished)
    again = run_sweeps(specs, store, workers=1)  # resume: nothing left
    assert (again.done_before, again.to_run, again.finished, again.checkpoints) == (4, 0, 0, None)


def test_sigterm_raises_terminated_only_inside_the_block():
    from steadytune.sweeps.interrupts import Terminated, sigterm_stops_like_ctrl_c

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with sigterm_stops_like_ctrl_c():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here at the latest
    assert issubclass(Terminated, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) == before


# ------------------------------------------------------------------ subprocess tests


def _sweep_cmd(store: Path, model: Path, glue: Path, seeds: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "steadytune", "sweep", "--tasks", "rte", "--recipes",
            "devlin2019,mosbach2021", "--seeds", seeds, "--store", str(store), "--model", str(model),
            "--data-dir", str(glue), "--max-steps", "4", "--set", "threads=1", "--set", "evals_per_epoch=1",
            *extra]


def _start(cmd: list[str]) -> tuple[subprocess.Popen, queue.Queue]:
    """Start ``cmd``; its stderr lines arrive on the queue (None at EOF)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # SIGINT as at a terminal: a test run started in the background by a script inherits
    # SIGINT ignored, and the driver would never see the Ctrl-C the test sends.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _wait_for_finished_run(lines: queue.Queue, timeout: float = 120.0) -> bool:
    """Block until the sweep prints a finished run; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            return False
        if " seed " in line and line.rstrip().endswith("s"):
            return True
    raise TimeoutError("no run finished in time")


def _done_rows(store: Path) -> dict[str, tuple]:
    """run_id -> (result_json, curves rows) of done runs, read without writing."""
    if not store.exists() or store.stat().st_size == 0:
        return {}
    conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='runs'").fetchone():
            return {}
        done = dict(conn.execute("SELECT run_id, result_json FROM runs WHERE status IN ('finished','diverged')"))
        curves: dict[str, list] = {r: [] for r in done}
        for row in conn.execute("SELECT run_id, step, epoch, split, name, value FROM curves ORDER BY rowid"):
            if row[0] in curves:
                curves[row[0]].append(row[1:])
        return {r: (done[r], tuple(curves[r])) for r in done}
    finally:
        conn.close()


KILLPOINT = Path(__file__).with_name("_killpoint.py")


def test_sweep_survives_sigkill_at_random_points(tiny_bert, tiny_glue, tmp_path):
    """Ten SIGKILLs, each at a point drawn from a seeded generator; then resume.

    The kill points do not depend on the machine's speed: a wrapper (``_killpoint.py``)
    kills the driver inside the k-th result transaction (after its curves are written,
    before COMMIT), right after the k-th commit, or holds it after k results until the
    test kills it at a random moment (start-up, planning, training, between runs). In
    every mode the driver dies before the sweep is complete.
    """
    store = tmp_path / "study.db"
    args = _sweep_cmd(store, tiny_bert, tiny_glue, "1-8")[3:]  # after "python -m steadytune.cli"
    rng = random.Random(20210503)
    seen: dict[str, tuple] = {}
    modes = []
    for attempt in range(10):
        mode = ("in_txn", "after", "hold")[attempt % 3]
        k = rng.randrange(0, 2)  # at most 2 results per attempt: 14 of the 16 runs at most
        proc, lines = _start([sys.executable, str(KILLPOINT), mode, str(k), *args])
        if mode == "hold":
            time.sleep(rng.uniform(0.0, 3.0))
            proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=120) == -signal.SIGKILL, f"{mode} k={k}: the driver was not killed"
        now = _done_rows(store)
        assert all(now.get(r) == seen[r] for r in seen), "a finished run was lost or changed after a kill"
        if mode == "after":
            assert len(now) == len(seen) + k + 1, "a committed result was lost"
        if mode == "in_txn":
            assert len(now) == len(seen) + k, "a half-written result became visible"
        seen.update(now)
        modes.append((mode, k, len(seen)))
    assert 0 < len(seen) < 16, modes
    proc, lines = _start([sys.executable, "-m", "steadytune", *args])
    assert proc.wait(timeout=180) == 0
    final = _done_rows(store)
    for run_id, rows in seen.items():  # byte-identical results and curves
        assert final[run_id] == rows
    spec = tiny_spec(tiny_bert, tiny_glue, seeds=parse_seeds("1-8"))
    with Study.open(store, readonly=True) as study:
        table = study.runs_table(all_statuses=True)
        assert sorted(table["run_id"]) == sorted(r.run_id for r in plan_runs(spec, store))
        assert set(table["status"]) <= {"finished", "diverged"}
        curves = study.curves_table()
        assert not curves.duplicated(["run_id", "step", "split", "name"]).any()
        assert curves.groupby("run_id").size().nunique() == 1  # same shape for every run


def _children(pid: int) -> list[int]:
    kids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            kids.append(int(status.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_pool_workers_die_with_the_driver_and_match_in_process_runs(tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "study.db"
    proc, lines = _start(_sweep_cmd(store, tiny_bert, tiny_glue, "1-2", "--workers", "2"))
    assert _wait_for_finished_run(lines)
    workers = _children(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers), "pool workers outlived the driver"
    by_pool = _done_rows(store)
    assert by_pool
    spec = tiny_spec(tiny_bert, tiny_glue, seeds=(1, 2))
    out = run_sweep(spec, store)  # resume in-process
    assert out["done_before"] >= 1 and out["done_before"] + out["to_run"] == 4
    assert all(_done_rows(store)[r] == rows for r, rows in by_pool.items())
    planned = {r.run_id: r for r in plan_runs(spec, store)}
    with Study.open(store, readonly=True) as study:
        pooled = read_result(study, next(iter(by_pool)))
    run_id = next(iter(by_pool))
    local = execute_run(run_id, planned[run_id].cfg)
    assert local.result["metrics"] == pooled.metrics
    assert [tuple(r) for r in local.curves] == list(pooled.curves.itertuples(index=False, name=None))


def test_unknown_or_missing_executor_fails_before_writing(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    from steadytune.sweeps.executors import ExecutorError

    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        run_sweep(tiny_spec(tiny_bert, tiny_glue), tmp_path / "s.db", executor="dask")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ExecutorError, match=r"pip install 'steadytune\[ray\]'"):
        run_sweep(tiny_spec(tiny_bert, tiny_glue), tmp_path / "s.db", executor="ray")
    assert list(tmp_path.iterdir()) == []


def test_auto_workers_pack_runs_per_gpu_and_stay_single_on_cpu(monkeypatch):
    import torch

    from steadytune.config.execution import Execution
    from steadytune.sweeps.local import RUNS_PER_GPU, auto_workers, uses_gpu

    cfgs = [Execution() for s in range(1, 41)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not uses_gpu(cfgs) and auto_workers(cfgs, cpus=16) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert uses_gpu(cfgs)
    assert auto_workers(cfgs, cpus=64) == min(2 * RUNS_PER_GPU, 40)
    assert auto_workers(cfgs, cpus=4) == 4  # never more workers than cores
    assert auto_workers(cfgs[:3], cpus=64) == 3  # nor than runs
    pinned = [c.replace(device="cpu") for c in cfgs]
    assert not uses_gpu(pinned) and auto_workers(pinned, cpus=64) == 1
    assert auto_workers([], cpus=64) == 1


def test_workers_zero_runs_in_process_on_cpu_and_negative_is_refused(tiny_bert, tiny_glue, tmp_path):
    spec = tiny_spec(tiny_bert, tiny_glue, seeds=(1,), recipes=("devlin2019",),
                     overrides={**FAST, "device": "cpu"})
    out = run_sweep(spec, tmp_path / "s.db", workers=0)
    assert out["workers"] == 1 and out["finished"] == 1
    with pytest.raises(ConfigError, match="workers must be >= 0"):
        run_sweep(spec, tmp_path / "t.db", workers=-1)


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_stops_a_pooled_sweep_cleanly_and_resume_finishes_it(
        signum, code, word, tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "study.db"
    cmd = _sweep_cmd(store, tiny_bert, tiny_glue, "1-4", "--workers", "2")
    # The driver holds after its first stored result (tests/_killpoint.py), so the signal
    # lands mid-sweep whatever the machine's speed.
    proc, lines = _start([sys.executable, str(KILLPOINT), "hold", "1", *cmd[3:]])
    assert _wait_for_finished_run(lines)
    workers = _children(proc.pid)
    proc.send_signal(signum)
    assert proc.wait(timeout=60) == code
    rest = []
    while (line := lines.get(timeout=10)) is not None:
        rest.append(line)
    text = "".join(rest)
    assert f"{word}: finished runs are stored; run the same command again to resume" in text.splitlines(), text
    assert "Traceback" not in text, text
    deadline = time.monotonic() + 20
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
    before = _done_rows(store)
    assert 0 < len(before) < 8
    proc, lines = _start(cmd)
    assert proc.wait(timeout=180) == 0
    after = _done_rows(store)
    assert len(after) == 8 and all(after[r] == before[r] for r in before)


def test_runs_table_carries_the_last_training_loss_and_the_label_entropy(tiny_bert, tiny_glue, tmp_path):
    from steadytune.data.glue import load_glue
    from steadytune.training.results import label_entropy

    store = tmp_path / "s.db"
    spec = tiny_spec(tiny_bert, tiny_glue, seeds=(1,), recipes=("devlin2019",),
                     overrides={**FAST, "log_every": "3"})
    run_sweep(spec, store, workers=1)
    with Study.open(store, readonly=True) as study:
        runs, curves = study.runs_table(), study.curves_table()
    loss = curves[(curves["split"] == "train") & (curves["name"] == "loss")].sort_values("step")
    assert runs["train_loss"].iloc[0] == loss["value"].iloc[-1] and loss["step"].iloc[-1] == 4
    expected = label_entropy(load_glue("rte", "train", str(tiny_glue)).labels)
    assert runs["label_entropy"].iloc[0] == pytest.approx(expected)
    res = CliRunner().invoke(app, ["summary", str(store)])
    assert res.exit_code == 0 and "stuck" in res.stdout
