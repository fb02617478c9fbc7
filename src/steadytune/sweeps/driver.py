"""The resumable sweep driver: plan into a study, lease and run what is not done, record.

:func:`run_sweep` adds the plan of a :class:`~steadytune.sweeps.spec.SweepSpec` to a study
(:mod:`steadytune.store.study`), runs what is not done yet on an executor
(:mod:`steadytune.sweeps.executors`) and records each result as it arrives. Running the
same sweep again resumes it: finished and diverged runs are skipped, runs that errored or
were in flight when the driver died are redone. Two drivers on one study share the work
through run leases (:mod:`steadytune.store.leases`). With ``keep_checkpoints=K`` the
driver also keeps at most K failed and K successful models per group
(:mod:`steadytune.sweeps.checkpoints`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from steadytune.config.run import ConfigError
from steadytune.sweeps.spec import (
    EventFn,
    PlannedRun,
    SweepSpec,
    expand,
    spec_execution,
)


def _dry_run(planned: list[PlannedRun], store_path: Path) -> dict[str, Any]:
    """The plan and what of it is done, read without writing (no file is created)."""
    from steadytune.store.study import DONE, Study

    statuses: dict[str, str] = {}
    if store_path.exists():
        with Study.open(store_path, readonly=True) as study:
            statuses = study.statuses([r.run_id for r in planned])
    groups: dict[tuple[str, str, str, str], Counter[str]] = {}
    for run in planned:
        tally = groups.setdefault((run.cfg.task, run.cfg.model, run.cfg.recipe, run.grid), Counter())
        tally["runs"] += 1
        tally["done"] += statuses.get(run.run_id) in DONE
    rows = [{"task": t, "model": m, "recipe": r, "grid": g, "runs": c["runs"], "done": c["done"]}
            for (t, m, r, g), c in groups.items()]
    done = sum(row["done"] for row in rows)
    return {"planned": len(planned), "done_before": done, "to_run": len(planned) - done,
            "store": str(store_path), "dry_run": True, "groups": rows}


def default_threads(executor: str, workers: int) -> int:
    """Per-run CPU threads when the sweep leaves ``threads`` at 0.

    Local: the cores shared by the workers (two PyTorch processes that each use every
    core slow each other down several times). Ray: 1 per task; set ``threads`` to ask
    for more. Results on CPU depend on the thread count, so set ``threads`` explicitly
    to get the same numbers under every executor.
    """
    if executor == "ray":
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_sweep(spec: SweepSpec, store_path: str | Path, executor: str = "local", workers: int = 0,
              ray_address: str | None = None, dry_run: bool = False,
              on_event: EventFn | None = None, keep_checkpoints: int = 0) -> dict[str, Any]:
    """Run (or resume) a sweep into the study at ``store_path``.

    Args:
        spec: the sweep.
        store_path: the study file; created if missing (not by a dry run).
        executor: ``local`` (in-process, or a process pool when ``workers > 1``) or ``ray``.
        workers: parallel local processes; 0 = automatic (1 on CPU, several runs per
            GPU when the runs go to GPUs, see :func:`steadytune.executors.auto_workers`).
        ray_address: an existing Ray cluster (None: start a local Ray for this sweep).
        dry_run: only plan and count what is done; write nothing.
        on_event: called with ``{"kind": ..., ...}`` dicts: ``plan``, ``start``, ``finish``;
            ``wait`` (runs another driver on the same study is training: this one waits
            for them, and takes them over if that driver dies) and ``done_elsewhere``
            (a run that driver finished).
        keep_checkpoints: K > 0: every run saves its final model under
            ``<study>.checkpoints/<run_id>/`` and, after each recorded run, at most K
            failed and K successful checkpoints per (task, model, recipe, grid) are kept,
            those of the lowest seeds (:mod:`steadytune.checkpoints`); they are listed
            by ``Study.checkpoints()``. 0 (default): save none, touch none. The run ids
            and results are the same either way.

    Returns:
        Counts: ``planned``, ``done_before``, ``to_run``, and for a real run
        ``finished``, ``diverged``, ``error`` (and ``checkpoints``, the number kept for
        the sweep's groups, when ``keep_checkpoints`` > 0); plus ``store`` and (dry run)
        ``groups``.

    Raises:
        ConfigError, DataError, ModelError: a bad spec, before anything is written.
        ExecutorError: ``ray`` without Ray installed, before anything is written.
        StoreError: ``store_path`` is not a steadytune study.
    """
    from steadytune.store.leases import Heartbeat, Owner
    from steadytune.store.study import Study
    from steadytune.sweeps.checkpoints import checkpoint_root, prune_checkpoints
    from steadytune.sweeps.executors import EXECUTORS, Job, check_executor

    check_executor(executor)
    if workers < 0:
        raise ConfigError(f"workers must be >= 0 (0 = automatic), got {workers}")
    if keep_checkpoints < 0:
        raise ConfigError(f"keep_checkpoints must be >= 0, got {keep_checkpoints}")
    emit = on_event or (lambda event: None)
    planned = expand(spec)
    execution = spec_execution(spec)
    ids = [r.run_id for r in planned]
    if dry_run:
        return _dry_run(planned, Path(store_path))
    if workers == 0:
        from steadytune.sweeps.executors import auto_workers

        workers = auto_workers([execution] * len(planned)) if executor == "local" else 1
    root = checkpoint_root(store_path).resolve() if keep_checkpoints else None
    with Study.open(store_path, create=True) as study:
        study.add_planned(planned)
        group_of = _groups_of(study, ids) if root is not None else {}
        groups = set(group_of.values())
        if root is not None:  # first clean up after a sweep that was killed
            prune_checkpoints(study, keep_checkpoints, groups, root)
        todo = set(study.pending(ids))
        run_execution = execution.replace(threads=execution.threads or default_threads(executor, workers))
        jobs = [Job(r.run_id, r.cfg, r.grid, execution=run_execution,
                    checkpoint_dir=None if root is None else str(root / r.run_id))
                for r in planned if r.run_id in todo]
        counts: dict[str, Any] = {"planned": len(planned), "done_before": len(planned) - len(jobs),
                                  "to_run": len(jobs), "workers": workers, "store": str(store_path)}
        emit({"kind": "plan", **counts})
        tally: Counter[str] = Counter({"finished": 0, "diverged": 0, "error": 0})
        by_id = {job.run_id: job for job in jobs}
        owner, held_elsewhere = Owner.current(), {}

        def on_start(run_id: str) -> bool:
            why = study.claim(run_id, owner)
            if why == "done":  # finished meanwhile by another driver on this study
                held_elsewhere.pop(run_id, None)
                tally["done_elsewhere"] += 1
                emit({"kind": "done_elsewhere", "run_id": run_id})
            elif why is not None:
                held_elsewhere[run_id] = why
            else:
                held_elsewhere.pop(run_id, None)
                emit({"kind": "start", "run_id": run_id})
            return why is None

        def on_done(outcome: Any) -> None:
            job = by_id[outcome.run_id]
            event = _record(study, outcome, job)
            if root is not None:  # after the record: a kill in between leaves a folder the next prune judges
                prune_checkpoints(study, keep_checkpoints, [group_of[job.run_id]], root)
            tally[event["status"]] += 1
            emit(event)

        def execute(batch: list[Any]) -> None:
            EXECUTORS[executor](batch, on_start, on_done, workers=workers, ray_address=ray_address)

        with Heartbeat(study.path, owner):
            try:
                _run_and_wait(study, jobs, execute, held_elsewhere, emit)
            finally:
                study.release(owner)
        if root is not None:
            counts["checkpoints"] = len(prune_checkpoints(study, keep_checkpoints, groups, root))
    return {**counts, **tally}


def _groups_of(study: Any, run_ids: list[str]) -> dict[str, tuple[str, str, str, str]]:
    """``run_id -> (task, model, recipe, grid)`` with the study's group labels (``runs_table``)."""
    runs = study.runs_table(all_statuses=True)
    keys = zip(runs["task"], runs["model"], runs["recipe"], runs["grid"])
    wanted = set(run_ids)
    return {r: k for r, k in zip(runs["run_id"], keys) if r in wanted}


WAIT_POLL_SECONDS = 2.0


"""How often a driver looks again at runs that another driver is training."""


def _run_and_wait(study: Any, jobs: list[Any], execute: Callable[[list[Any]], None],
                  held_elsewhere: dict[str, str], emit: EventFn) -> None:
    """Execute ``jobs``; then keep retrying the runs another driver held until each is done.

    A run that another living driver is training is skipped (``execute``'s ``on_start``
    puts it in ``held_elsewhere``). The driver then waits for it: when the other driver
    records it, it is done; when the other driver dies, its lease is taken over and the
    run is trained here. So a sweep returns only when each of its runs is done or errored.
    """
    by_id = {job.run_id: job for job in jobs}
    batch, announced = jobs, None
    while batch:
        execute(batch)
        left = study.pending(list(held_elsewhere))
        for run_id in set(held_elsewhere) - set(left):
            held_elsewhere.pop(run_id)
        batch = [by_id[r] for r in left]
        if batch:
            waiting = sorted(set(held_elsewhere.values()))
            if waiting != announced:
                emit({"kind": "wait", "runs": len(batch), "holders": waiting})
                announced = waiting
            time.sleep(WAIT_POLL_SECONDS)


def _record(study: Any, outcome: Any, job: Any) -> dict[str, Any]:
    """Write one outcome to the study; return the ``finish`` event describing it."""
    cfg = job.cfg
    event: dict[str, Any] = {"kind": "finish", "run_id": outcome.run_id, "task": cfg.task,
                             "model": cfg.model, "recipe": cfg.recipe, "grid": job.grid,
                             "seed": cfg.seed, "seconds": outcome.seconds, "error": outcome.error}
    if outcome.result is None:
        study.record_error(outcome.run_id, outcome.error or "unknown error", outcome.log)
        return {**event, "status": "error", "metric": None, "value": None, "failed": True}
    study.record_result(outcome.run_id, outcome.result, outcome.curves, outcome.diagnostics, outcome.log)
    result = outcome.result
    value = result["metrics"]["final"].get(result["metric"])
    return {**event, "status": result["status"], "metric": result["metric"], "value": value,
            "failed": bool(result["failed"])}

