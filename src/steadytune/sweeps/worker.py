"""One run in a worker: the job it gets, the outcome it sends back, and the call in between.

This is the contract every executor (:mod:`steadytune.sweeps.executors`) shares. An
executor takes :class:`Job` s and two callbacks, both called in the driver process
(the only one that writes the study): ``on_start(run_id)`` before a job is handed out
(it returns False for a job to skip, e.g. one another driver is training) and
``on_done(outcome)`` when its :class:`Outcome` is back. A worker runs
:func:`execute_run`: it only computes and returns plain, picklable data (the result
dict, curve and diagnostic rows, the captured log), and never raises for the run.

A job with a ``checkpoint_dir`` also saves its final model there (see
:mod:`steadytune.sweeps.checkpoints`); with Ray on several machines that folder must be
on a file system every node shares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import socket
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from steadytune.config.execution import Execution
from steadytune.config.run import RunConfig
from steadytune.training.grouped.loop import train_group
from steadytune.training.grouped.model import NotGroupable
from steadytune.training.loop import train_and_evaluate
from steadytune.training.results import RunResult


@dataclass(frozen=True)
class Job:
    """A run to execute: its id, resolved config, how it executes, and grid label."""

    run_id: str
    cfg: RunConfig
    grid: str = ""
    checkpoint_dir: str | None = None
    """Save the final model into ``<checkpoint_dir>/final`` (None: save nothing)."""
    execution: Execution = field(default_factory=Execution)
    """Device and CPU threads (explicit: the driver resolves ``threads=0``)."""


@dataclass
class Outcome:
    """What a worker sends back: plain, picklable data."""

    run_id: str
    result: dict[str, Any] | None
    """``RunResult.to_dict()``; None when the run raised."""
    curves: list[tuple] = field(default_factory=list)
    """Rows ``(step, epoch, split, name, value)``."""
    diagnostics: list[tuple] = field(default_factory=list)
    """Rows ``(step, group, name, value)``."""
    error: str | None = None
    """The exception message of a run that raised (or why a diverged run stopped)."""
    log: str = ""
    """Captured stdout, stderr, logging and warnings of the run, with start/end lines."""
    seconds: float = 0.0


StartFn = Callable[[str], bool]
"""``on_start(run_id) -> bool``: False skips the job."""
DoneFn = Callable[[Outcome], None]
"""``on_done(outcome)``: record it."""


def _stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def _capture(buf: io.StringIO) -> Iterator[None]:
    """Send stdout, stderr, logging records and warnings of the block to ``buf``."""
    handler = logging.StreamHandler(buf)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(), logging.getLogger("transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    logging.captureWarnings(True)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("default")
            yield
    finally:
        logging.captureWarnings(False)
        for logger in loggers:
            logger.removeHandler(handler)


def _train(cfg: RunConfig, execution: Execution, checkpoint_dir: str | None) -> RunResult:
    """Train ``cfg``; with a ``checkpoint_dir``, also save its final model into ``checkpoint_dir/final``.

    The checkpoint is a side effect of the sweep, not part of the run: it is asked for
    through the execution settings, so the config (and the run's identity) is the one
    planned. Saving does not touch the RNG streams or the weights: the numbers are the same.
    """
    if checkpoint_dir is None:
        return train_and_evaluate(cfg, execution=execution)
    workdir = Path(checkpoint_dir)
    shutil.rmtree(workdir, ignore_errors=True)  # the leftover of an attempt that was killed
    return train_and_evaluate(cfg, workdir, execution=dataclasses.replace(execution, save_final=True))


def _fill(outcome: Outcome, result: RunResult) -> None:
    """Copy ``result`` into ``outcome`` as plain rows."""
    outcome.result = result.to_dict()
    outcome.error = result.error
    outcome.curves = list(result.curves.itertuples(index=False, name=None))
    diags = getattr(result, "diagnostics", None)
    if diags is not None and len(diags):
        outcome.diagnostics = list(diags[["step", "group", "name", "value"]].itertuples(index=False, name=None))


def execute_run(run_id: str, cfg: RunConfig, checkpoint_dir: str | None = None,
                execution: Execution | None = None) -> Outcome:
    """Train and evaluate one configuration, capturing its log; never raises for the run.

    Any exception becomes an :class:`Outcome` with ``result=None`` and the message
    (config, data and model errors as they are; anything else with its type and the
    traceback in the log), so one bad run does not end a sweep.

    Args:
        run_id: the planned run's id (recorded as is).
        cfg: its configuration.
        checkpoint_dir: also save the final model to ``<checkpoint_dir>/final`` (with
            ``result.json`` and ``curves.csv``); the folder is emptied first. The
            result is the same as without it.
        execution: device and CPU threads (default: :class:`Execution` ``()``).

    Returns:
        The outcome, with the captured log (start and end lines included).
    """
    execution = execution or Execution()
    buf = io.StringIO()
    buf.write(f"{_stamp()} start run {run_id}: task={cfg.task} model={cfg.model} recipe={cfg.recipe} "
              f"seed={cfg.seed} threads={execution.threads} pid={os.getpid()} host={socket.gethostname()}\n")
    start = time.perf_counter()
    outcome = Outcome(run_id, None)
    with _capture(buf):
        try:
            result = _train(cfg, execution, checkpoint_dir)
        except Exception as exc:  # noqa: BLE001 - the sweep must survive any one run
            outcome.error = f"{type(exc).__name__}: {exc}"
            buf.write(traceback.format_exc())
        else:
            _fill(outcome, result)
    outcome.seconds = round(time.perf_counter() - start, 3)
    status = outcome.result["status"] if outcome.result else "error"
    buf.write(f"{_stamp()} end run {run_id}: {status} in {outcome.seconds:.1f}s"
              + (f" ({outcome.error})" if outcome.error else "") + "\n")
    outcome.log = buf.getvalue()
    return outcome


def execute_task(jobs: list[Job]) -> list[Outcome]:
    """Train ``jobs``: one run alone, or several runs that differ only in their seed as one group.

    A group trains as one grouped model (:func:`~steadytune.training.grouped.loop.train_group`);
    each run's outcome is what it would be alone. If the group cannot be formed (the model
    cannot be stacked, :class:`~steadytune.training.grouped.model.NotGroupable`), its runs
    train one after another instead; any other error fails every run of the group, each
    with the message and the shared log. Never raises for the runs.

    Returns:
        One outcome per job, in order.
    """
    if len(jobs) == 1:
        job = jobs[0]
        return [execute_run(job.run_id, job.cfg, job.checkpoint_dir, job.execution)]
    buf = io.StringIO()
    ids = ", ".join(job.run_id for job in jobs)
    buf.write(f"{_stamp()} start group of {len(jobs)} runs ({ids}): task={jobs[0].cfg.task} "
              f"seeds={[job.cfg.seed for job in jobs]} pid={os.getpid()} host={socket.gethostname()}\n")
    start = time.perf_counter()
    outcomes = [Outcome(job.run_id, None) for job in jobs]
    with _capture(buf):
        try:
            results = _train_group(jobs)
        except NotGroupable as exc:
            buf.write(f"{_stamp()} not groupable ({exc}); training the runs one by one\n")
            results = None
        except Exception as exc:  # noqa: BLE001 - the sweep must survive any one group
            for outcome in outcomes:
                outcome.error = f"{type(exc).__name__}: {exc}"
            buf.write(traceback.format_exc())
            results = []
    if results is None:
        return [execute_run(job.run_id, job.cfg, job.checkpoint_dir, job.execution) for job in jobs]
    for outcome, result in zip(outcomes, results):
        _fill(outcome, result)
    seconds = round(time.perf_counter() - start, 3)
    buf.write(f"{_stamp()} end group: {seconds:.1f}s\n")
    for outcome in outcomes:
        outcome.seconds, outcome.log = seconds, buf.getvalue()
    return outcomes


def _train_group(jobs: list[Job]) -> list[RunResult]:
    workdirs: list[str | None] = []
    for job in jobs:
        if job.checkpoint_dir is not None:
            shutil.rmtree(job.checkpoint_dir, ignore_errors=True)  # the leftover of an attempt that was killed
        workdirs.append(job.checkpoint_dir)
    execution = jobs[0].execution
    if any(workdirs):
        execution = dataclasses.replace(execution, save_final=True)
    return train_group([job.cfg for job in jobs], workdirs, execution=execution)


def crashed(job: Job, exc: BaseException) -> Outcome:
    """The outcome of a job whose worker died or whose result could not come back."""
    message = f"worker failed: {type(exc).__name__}: {exc}"
    return Outcome(job.run_id, None, error=message, log=f"{_stamp()} {message}\n")


__all__ = ["DoneFn", "Job", "Outcome", "StartFn", "crashed", "execute_run", "execute_task"]
