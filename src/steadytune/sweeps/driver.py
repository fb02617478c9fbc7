"""The resumable sweep driver: plan into a study, lease and run what is not done, record.

:func:`run_sweep` adds the plan of a :class:`~steadytune.sweeps.spec.SweepSpec` to a study
(:mod:`steadytune.store.study`), runs what is not done yet on an executor
(:mod:`steadytune.sweeps.executors`) and records each result as it arrives. Running the
same sweep again resumes it: finished and diverged runs are skipped, runs that errored or
were in flight when the driver died are redone. Two drivers on one study share the work
through run leases (:mod:`steadytune.store.leases`). Under ``guard=restart`` / ``switch`` a
seed whose run the guard stopped gets its next attempt planned and run as a run of its own
(:mod:`steadytune.sweeps.attempts`), in rounds: the attempts that follow a round's stopped
runs form the next round. With ``keep_checkpoints=K`` the
driver also keeps at most K failed and K successful models per group
(:mod:`steadytune.sweeps.checkpoints`). :func:`run_sweeps` plans a list of specs (a bad
one fails before anything is written) and runs them one after another into one study:
it is what ``steadytune sweep`` and ``steadytune experiment`` call.

Progress is reported through ``on_event`` as the typed records of
:mod:`steadytune.sweeps.events`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steadytune.config.execution import Execution
from steadytune.config.run import ConfigError, within_group_label
from steadytune.store.file import inspect_file
from steadytune.store.leases import Heartbeat, Owner
from steadytune.store.study import DONE, Study
from steadytune.sweeps.attempts import current_attempts, next_job
from steadytune.sweeps.checkpoints import checkpoint_root, prune_checkpoints
from steadytune.sweeps.events import (
    AttemptEvent,
    DoneElsewhereEvent,
    EventFn,
    FinishEvent,
    PlanEvent,
    StartEvent,
    SweepEvent,
    SweepsDoneEvent,
    SweepsPlanEvent,
    WaitEvent,
)
from steadytune.sweeps.executors import EXECUTORS, check_executor
from steadytune.sweeps.grouping import auto_group_size, check_group_size, group_tasks
from steadytune.sweeps.interrupts import sigterm_stops_like_ctrl_c
from steadytune.sweeps.local import auto_workers
from steadytune.sweeps.precision import study_precision
from steadytune.sweeps.spec import (
    PlannedRun,
    SweepSpec,
    expand,
    spec_execution,
    with_precision,
)
from steadytune.sweeps.worker import Job, Outcome

Group = tuple[str, str, str, str]
"""``(task, model, recipe, grid)``: the unit of summaries and of checkpoint retention."""
WAIT_POLL_SECONDS = 2.0
"""How often a driver looks again at runs that another driver is training."""
COUNTS = ("planned", "done_before", "to_run", "finished", "diverged", "stopped", "restarted", "error", "done_elsewhere",
          "checkpoints")
"""The counts of :func:`run_sweep` that :func:`run_sweeps` adds up."""


@dataclass(frozen=True)
class PlanGroup:
    """One group of a plan, and how many of its runs are done."""

    task: str
    model: str
    recipe: str
    grid: str
    runs: int
    done: int


@dataclass(frozen=True)
class SweepTotals:
    """What :func:`run_sweeps` did (a dry run: would do), added up over its specs."""

    store: str
    """The study file."""
    planned: int
    done_before: int
    """Runs done before (a real run: also those another driver held when a spec started)."""
    to_run: int
    finished: int = 0
    diverged: int = 0
    stopped: int = 0
    """Runs the doomed-run guard stopped (counted as failed)."""
    restarted: int = 0
    """Attempts planned after a stopped run (``guard=restart`` / ``switch``)."""
    error: int = 0
    """Runs that raised; rerun the same sweep to retry them."""
    done_elsewhere: int = 0
    """Runs another driver on the same study finished meanwhile."""
    checkpoints: int | None = None
    """Checkpoints kept for the sweeps' groups (None without ``keep_checkpoints``)."""
    checkpoint_dir: str | None = None
    """Where they are (None without ``keep_checkpoints``)."""
    dry_run: bool = False
    groups: tuple[PlanGroup, ...] = ()
    """The plan per group (dry run only)."""


def _ignore(event: SweepEvent) -> None:
    """The ``on_event`` of a caller that gave none."""


def run_sweeps(specs: Sequence[SweepSpec], store: str | Path, *, executor: str = "local", workers: int = 0,
               ray_address: str | None = None, dry_run: bool = False, keep_checkpoints: int = 0,
               on_event: EventFn | None = None, group_size: int = 0) -> SweepTotals:
    """Plan every spec, then run (or resume) them one after another into one study.

    The plans are made first and read-only, so a bad spec fails before anything is
    written; then :class:`SweepsPlanEvent` is sent and each spec runs as in
    :func:`run_sweep`. While this runs in the main thread, SIGTERM stops it the way Ctrl-C
    does (:mod:`steadytune.sweeps.interrupts`): workers are killed, recorded runs stay,
    and running the same call again resumes.

    Args:
        specs: the sweeps (e.g. :func:`steadytune.sweeps.experiments.experiment_specs`).
        store, executor, workers, ray_address, keep_checkpoints, group_size: as in :func:`run_sweep`.
        dry_run: only plan and count what is done (``groups`` says per group); write nothing.
        on_event: called with the records of :mod:`steadytune.sweeps.events`.

    Returns:
        The totals over every spec.

    Raises:
        The errors of :func:`run_sweep`; ``KeyboardInterrupt`` on Ctrl-C and
        :class:`~steadytune.sweeps.interrupts.Terminated` (a ``KeyboardInterrupt``) on SIGTERM.
    """
    emit = on_event or _ignore
    options: dict[str, Any] = {"executor": executor, "workers": workers, "keep_checkpoints": keep_checkpoints,
                               "group_size": group_size}
    with sigterm_stops_like_ctrl_c():
        plan = _add_plans(store, [run_sweep(spec, store, dry_run=True, **options) for spec in specs])
        emit(SweepsPlanEvent(len(specs), plan.planned, plan.done_before, plan.to_run, plan.store))
        if dry_run:
            return plan
        outs = [run_sweep(spec, store, ray_address=ray_address, on_event=emit, **options) for spec in specs]
    total = {k: sum(out.get(k, 0) for out in outs) for k in COUNTS}
    emit(SweepsDoneEvent(str(store), total["finished"], total["diverged"], total["error"]))
    kept = {"checkpoints": total.pop("checkpoints"), "checkpoint_dir": str(checkpoint_root(store))}
    return SweepTotals(store=str(store), **total, **(kept if keep_checkpoints else {}))


def _add_plans(store: str | Path, plans: list[dict[str, Any]]) -> SweepTotals:
    """The dry-run totals of several :func:`run_sweep` dry runs."""
    counts = {k: sum(p[k] for p in plans) for k in ("planned", "done_before", "to_run")}
    groups = tuple(PlanGroup(**g) for p in plans for g in p["groups"])
    return SweepTotals(store=str(store), dry_run=True, groups=groups, **counts)


def run_sweep(spec: SweepSpec, store_path: str | Path, executor: str = "local", workers: int = 0,
              ray_address: str | None = None, dry_run: bool = False,
              on_event: EventFn | None = None, keep_checkpoints: int = 0, group_size: int = 0) -> dict[str, Any]:
    """Run (or resume) one sweep into the study at ``store_path``.

    Args:
        spec: the sweep.
        store_path: the study file; created if missing (not by a dry run).
        executor: ``local`` (in-process, or a process pool when ``workers > 1``) or ``ray``.
        workers: parallel local processes; 0 = automatic (1 on CPU, several runs per
            GPU when the runs go to GPUs, see :func:`steadytune.sweeps.local.auto_workers`).
        ray_address: an existing Ray cluster (None: start a local Ray for this sweep).
        dry_run: only plan and count what is done; write nothing.
        on_event: called with the records of :mod:`steadytune.sweeps.events` (all but
            :class:`SweepsPlanEvent`).
        keep_checkpoints: K > 0: every run saves its final model under
            ``<study>.checkpoints/<run_id>/``; after each recorded run at most K failed and
            K successful checkpoints per (task, model, recipe, grid) are kept, those of the
            lowest seeds (:mod:`steadytune.sweeps.checkpoints`), listed by
            :func:`steadytune.store.checkpoints.list_checkpoints`. 0 (default): save none,
            touch none. The run ids and results are the same either way.
        group_size: train up to this many runs that differ only in their seed as one
            grouped model (:mod:`steadytune.sweeps.grouping`); 1: every run alone; 0
            (default): automatic (:func:`~steadytune.sweeps.grouping.auto_group_size`). Each run's result is
            the one it gets alone, up to floating-point rounding.

    Returns:
        Counts: ``planned`` (first attempts), ``done_before`` (seeds whose latest attempt was
        done), ``to_run``, ``store``; a real run adds ``workers``, ``finished``, ``diverged``,
        ``stopped``, ``restarted`` (attempts planned after a stopped run), ``error``,
        ``done_elsewhere`` (when any) and ``checkpoints`` (kept for its groups, with
        ``keep_checkpoints``); a dry run ``dry_run`` and ``groups``.

    Raises:
        ConfigError, DataError, ModelError: a bad spec, before anything is written.
        ExecutorError: ``ray`` without Ray installed, before anything is written.
        StoreError: ``store_path`` is not a steadytune study.
    """
    _check_options(executor, workers, keep_checkpoints)
    check_group_size(group_size)
    execution = spec_execution(spec)
    planned = plan_runs(spec, store_path, record=not dry_run)
    if dry_run:
        return _dry_run(planned, Path(store_path))
    if workers == 0:
        workers = auto_workers([execution] * len(planned)) if executor == "local" else 1
    execution = execution.replace(threads=execution.threads or default_threads(executor, workers))
    with Study.open(store_path, create=True) as study:
        study.add_planned(planned)
        current = current_attempts(planned, study.statuses)  # a restarted seed continues where it stopped
        study.add_planned(current)
        retention = _Retention.start(study, keep_checkpoints, store_path, current) if keep_checkpoints else None
        session = _Session(study, on_event or _ignore, retention)
        counts = session.plan(current, execution, workers, str(store_path))
        size = group_size or auto_group_size([job.execution for job in session.jobs.values()])
        session.run(lambda batch: EXECUTORS[executor](group_tasks(batch, size), session.on_start, session.on_done,
                                                      workers=workers, ray_address=ray_address))
        if retention is not None:
            counts["checkpoints"] = len(retention.prune(study))
    return {**counts, **session.tally}


def plan_runs(spec: SweepSpec, store_path: str | Path, record: bool = False) -> list[PlannedRun]:
    """The runs a sweep of ``spec`` into the study at ``store_path`` plans (ids as stored).

    :func:`~steadytune.sweeps.spec.expand`, with ``precision=auto`` resolved the way the
    study resolves it (:func:`~steadytune.sweeps.precision.study_precision`).

    Args:
        spec: the sweep.
        store_path: the study (it may not exist yet).
        record: record a new precision choice in the study (a sweep that runs does).

    Raises:
        The errors of :func:`~steadytune.sweeps.spec.expand`; StoreError for a foreign file.
    """
    planned = expand(spec)
    choice = study_precision(store_path, spec_execution(spec), planned, record)
    return planned if choice is None else with_precision(planned, choice.used, choice.reason)


def _check_options(executor: str, workers: int, keep_checkpoints: int) -> None:
    check_executor(executor)
    if workers < 0:
        raise ConfigError(f"workers must be >= 0 (0 = automatic), got {workers}")
    if keep_checkpoints < 0:
        raise ConfigError(f"keep_checkpoints must be >= 0, got {keep_checkpoints}")


def _dry_run(planned: list[PlannedRun], store_path: Path) -> dict[str, Any]:
    """The plan and what of it is done, read without writing (no file is created)."""
    statuses: dict[str, str] = {}
    if inspect_file(store_path):  # not exists(): another driver may have created the file but no tables yet
        with Study.open(store_path, readonly=True) as study:
            planned = current_attempts(planned, study.statuses)
            statuses = study.statuses([r.run_id for r in planned])
    groups: dict[Group, Counter[str]] = {}
    for run in planned:
        tally = groups.setdefault((run.cfg.task, run.cfg.model, run.cfg.recipe, run.grid), Counter())
        tally["runs"] += 1
        tally["done"] += statuses.get(run.run_id) in DONE
    rows = [dataclasses.asdict(PlanGroup(t, m, r, g, c["runs"], c["done"])) for (t, m, r, g), c in groups.items()]
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


@dataclass(frozen=True)
class _Retention:
    """Checkpoint retention of one sweep: K, the checkpoint folder, and each run's group."""

    keep: int
    root: Path
    group_of: dict[str, Group]

    @classmethod
    def start(cls, study: Study, keep: int, store_path: str | Path, planned: list[PlannedRun]) -> _Retention:
        """Read the groups (the study's labels, as ``runs_table`` gives them); then clean up
        after a sweep that was killed (the first prune)."""
        root = checkpoint_root(store_path).resolve()
        runs = study.runs_table(all_statuses=True)
        keys = zip(runs["task"], runs["model"], runs["recipe"], runs["grid"])
        wanted = {r.run_id for r in planned}
        retention = cls(keep, root, {r: k for r, k in zip(runs["run_id"], keys) if r in wanted})
        retention.prune(study)
        return retention

    def prune(self, study: Study, run_id: str | None = None) -> list[str]:
        """Apply the rule to the group of ``run_id`` (None: every group of the sweep); the kept run ids."""
        groups = set(self.group_of.values()) if run_id is None else [self.group_of[run_id]]
        return prune_checkpoints(study, self.keep, groups, self.root)


class _Session:
    """One driver's pass over one sweep in an open study: claim, record, tally, report."""

    def __init__(self, study: Study, emit: EventFn, retention: _Retention | None) -> None:
        self.study, self.emit, self.retention = study, emit, retention
        self.owner = Owner.current()
        self.jobs: dict[str, Job] = {}
        self.followups: list[Job] = []
        """Attempts planned after a stopped run of this round: the next round."""
        self.held_elsewhere: dict[str, str] = {}
        """run_id -> why another living driver holds it (``leased by HOST pid PID``)."""
        self.tally: Counter[str] = Counter({"finished": 0, "diverged": 0, "stopped": 0, "restarted": 0,
                                            "error": 0})

    def plan(self, planned: list[PlannedRun], execution: Execution, workers: int, store: str) -> dict[str, Any]:
        """Make the jobs of the runs not done yet; send :class:`PlanEvent`; return the counts."""
        todo = set(self.study.pending([r.run_id for r in planned]))
        root = self.retention.root if self.retention is not None else None
        self.jobs = {r.run_id: Job(r.run_id, r.cfg, r.grid,
                                   execution=execution.replace(precision_note=r.precision_note),
                                   checkpoint_dir=None if root is None else str(root / r.run_id))
                     for r in planned if r.run_id in todo}
        counts = {"planned": len(planned), "done_before": len(planned) - len(self.jobs),
                  "to_run": len(self.jobs), "workers": workers, "store": store}
        self.emit(PlanEvent(counts["planned"], counts["done_before"], counts["to_run"], workers, store))
        return counts

    def run(self, execute: Callable[[list[Job]], None]) -> None:
        """Execute the jobs, round after round of restarted attempts, under this driver's lease
        heartbeat; release its leases after."""
        with Heartbeat(self.study.path, self.owner):
            try:
                batch = list(self.jobs.values())
                while batch:
                    _run_and_wait(self.study, batch, execute, self.held_elsewhere, self.emit)
                    batch, self.followups = self.followups, []
            finally:
                self.study.release(self.owner)

    def on_start(self, run_id: str) -> bool:
        """Claim ``run_id`` for this driver; False (skip it) when it is done or held elsewhere."""
        why = self.study.claim(run_id, self.owner)
        if why == "done":  # finished meanwhile by another driver on this study
            self.held_elsewhere.pop(run_id, None)
            self.tally["done_elsewhere"] += 1
            self.emit(DoneElsewhereEvent(run_id))
        elif why is not None:
            self.held_elsewhere[run_id] = why
        else:
            self.held_elsewhere.pop(run_id, None)
            self.emit(StartEvent(run_id))
        return why is None

    def on_done(self, outcome: Outcome) -> None:
        """Record ``outcome``, then prune its group's checkpoints, count it, report it and, for
        a stopped run whose policy restarts, plan the seed's next attempt."""
        job = self.jobs[outcome.run_id]
        event = _record(self.study, outcome, job)
        if self.retention is not None:  # after the record: a kill in between leaves a folder the next prune judges
            self.retention.prune(self.study, outcome.run_id)
        self.tally[event.status] += 1
        self.emit(event)
        nxt = next_job(job) if event.status == "stopped" else None
        if nxt is not None:  # planned after the record: a kill in between is caught by current_attempts
            self.study.add_planned([nxt])
            self.jobs[nxt.run_id] = nxt
            self.followups.append(nxt)
            if self.retention is not None:
                self.retention.group_of[nxt.run_id] = self.retention.group_of[job.run_id]
            self.tally["restarted"] += 1
            self.emit(AttemptEvent(nxt.run_id, job.run_id, nxt.cfg.seed, nxt.cfg.attempt))


def _run_and_wait(study: Study, jobs: list[Job], execute: Callable[[list[Job]], None],
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
                emit(WaitEvent(len(batch), tuple(waiting)))
                announced = waiting
            time.sleep(WAIT_POLL_SECONDS)


def _record(study: Study, outcome: Outcome, job: Job) -> FinishEvent:
    """Write one outcome to the study; return the :class:`FinishEvent` describing it."""
    cfg = job.cfg
    about: dict[str, Any] = {"run_id": outcome.run_id, "task": cfg.task, "model": cfg.model, "recipe": cfg.recipe,
                             "grid": job.grid, "seed": cfg.seed, "streams": within_group_label(cfg),
                             "seconds": outcome.seconds, "error": outcome.error}
    if outcome.result is None:
        study.record_error(outcome.run_id, outcome.error or "unknown error", outcome.log)
        return FinishEvent(**about, status="error", metric=None, value=None, failed=True)
    study.record_result(outcome.run_id, outcome.result, outcome.curves, outcome.diagnostics, outcome.log)
    result = outcome.result
    return FinishEvent(**about, status=result["status"], metric=result["metric"],
                       value=result["metrics"]["final"].get(result["metric"]), failed=bool(result["failed"]),
                       attempt=cfg.attempt)


__all__ = ["WAIT_POLL_SECONDS", "PlanGroup", "SweepTotals", "default_threads", "plan_runs", "run_sweep",
           "run_sweeps"]
