"""Executors: where the runs of a sweep execute. The driver stays the only store writer.

An executor takes the jobs and two callbacks: ``on_start(run_id)`` before a job is
handed out (it returns False for a job to skip, e.g. one another driver is training)
and ``on_done(outcome)`` when its :class:`Outcome` is back. Both run in the
driver process, which writes the study; workers only compute and return plain data
(the result dict, curve and diagnostic rows, the captured log).

* ``local`` — in-process one run after another (``workers=1``), or a spawn-context
  process pool. Each pool worker dies with the driver (Linux ``PR_SET_PDEATHSIG``),
  uses its share of the cores and, on a machine with GPUs, is bound to one of them
  (round robin), so several seeds share each GPU (:func:`auto_workers`).
* ``ray`` — one Ray task per run, on an existing cluster (``ray_address``) or on a
  local Ray started and shut down for the sweep. Ray is an optional extra.

A job with a ``checkpoint_dir`` also saves its final model there (see
:mod:`steadytune.checkpoints`); with Ray on several machines that folder must be on a
file system every node shares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import shutil
import signal
import socket
import sys
import time
import traceback
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from steadytune.config.execution import Execution
from steadytune.config.run import RunConfig
from steadytune.training.loop import train_and_evaluate

PR_SET_PDEATHSIG = 1
RUNS_PER_GPU = 16
"""Concurrent runs per GPU chosen by ``workers=0`` (auto): the best of 1/4/8/16 measured on
an H200 (docs/performance.md); capped by the CPU cores."""


class ExecutorError(RuntimeError):
    """An executor that cannot start (e.g. Ray is not installed)."""


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
DoneFn = Callable[[Outcome], None]


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


def _train_saving(cfg: RunConfig, execution: Execution, workdir: Path) -> Any:
    """Train ``cfg`` and also save its final model into ``workdir/final``.

    The checkpoint is a side effect of the sweep, not part of the run: it is asked for
    through the execution settings, so the config (and the run's identity) is the one
    planned. Saving does not touch the RNG streams or the weights: the numbers are the same.
    """
    shutil.rmtree(workdir, ignore_errors=True)  # the leftover of an attempt that was killed
    return train_and_evaluate(cfg, workdir, execution=dataclasses.replace(execution, save_final=True))


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
    """
    execution = execution or Execution()
    buf = io.StringIO()
    buf.write(f"{_stamp()} start run {run_id}: task={cfg.task} model={cfg.model} recipe={cfg.recipe} "
              f"seed={cfg.seed} threads={execution.threads} pid={os.getpid()} host={socket.gethostname()}\n")
    start = time.perf_counter()
    outcome = Outcome(run_id, None)
    with _capture(buf):
        try:
            if checkpoint_dir is None:
                result = train_and_evaluate(cfg, execution=execution)
            else:
                result = _train_saving(cfg, Path(checkpoint_dir))
        except Exception as exc:  # noqa: BLE001 - the sweep must survive any one run
            outcome.error = f"{type(exc).__name__}: {exc}"
            buf.write(traceback.format_exc())
        else:
            outcome.result = result.to_dict()
            outcome.error = result.error
            outcome.curves = list(result.curves.itertuples(index=False, name=None))
            diags = getattr(result, "diagnostics", None)
            if diags is not None and len(diags):
                outcome.diagnostics = list(diags[["step", "group", "name", "value"]]
                                           .itertuples(index=False, name=None))
    outcome.seconds = round(time.perf_counter() - start, 3)
    status = outcome.result["status"] if outcome.result else "error"
    buf.write(f"{_stamp()} end run {run_id}: {status} in {outcome.seconds:.1f}s"
              + (f" ({outcome.error})" if outcome.error else "") + "\n")
    outcome.log = buf.getvalue()
    return outcome


def _crashed(job: Job, exc: BaseException) -> Outcome:
    message = f"worker failed: {type(exc).__name__}: {exc}"
    return Outcome(job.run_id, None, error=message, log=f"{_stamp()} {message}\n")


# ---------------------------------------------------------------------------- local


def uses_gpu(executions: list[Execution]) -> bool:
    """Whether any of the runs will train on a GPU (``cuda*``, or ``auto`` with CUDA present)."""
    import torch

    wants = [e.device.startswith("cuda") or e.device == "auto" for e in executions]
    return any(wants) and torch.cuda.is_available()


def auto_workers(executions: list[Execution], cpus: int | None = None) -> int:
    """Local worker count for ``workers=0``: 1 on CPU; packed runs when they go to GPUs.

    A small encoder keeps a GPU busy only a fraction of each step (the Python side of
    the step dominates), so ``RUNS_PER_GPU`` concurrent runs per GPU, capped by the CPU
    cores and the number of runs, finish many times sooner than one at a time.
    """
    import torch

    if not executions or not uses_gpu(executions):
        return 1
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(RUNS_PER_GPU * torch.cuda.device_count(), cpus, len(executions)))


def _init_worker(driver_pid: int, threads: int, counter: Any = None) -> None:
    """Pool-worker setup: die with the driver; use ``threads`` intra-op threads; the
    n-th worker started makes GPU ``n mod count`` its current device (when there are GPUs)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != driver_pid:  # the driver died before prctl took effect
            os._exit(1)
    import torch

    torch.set_num_threads(max(1, threads))
    if counter is not None and torch.cuda.is_available():
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        torch.cuda.set_device(index % torch.cuda.device_count())


def run_local(jobs: list[Job], on_start: StartFn, on_done: DoneFn, *, workers: int = 1,
              ray_address: str | None = None) -> None:
    """Run ``jobs`` in this process (``workers=1``) or in a spawn process pool.

    A worker that dies (segfault, out of memory) fails only the runs it held: they are
    recorded as errors and the pool is rebuilt for the rest.
    """
    del ray_address  # the local executor has no cluster
    if workers <= 1:
        for job in jobs:
            if on_start(job.run_id):
                on_done(execute_run(job.run_id, job.cfg, job.checkpoint_dir, job.execution))
        return
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    queue = deque(jobs)
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0) if uses_gpu([job.execution for job in jobs]) else None
    while queue:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(os.getpid(), threads, counter))
        try:
            _drain(pool, queue, workers, on_start, on_done, BrokenProcessPool)
        except KeyboardInterrupt:  # Ctrl-C / SIGINT: stop the workers now; finished runs are stored
            manager = getattr(pool, "_executor_manager_thread", None)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            # Let the pool's manager thread notice the killed workers and close its wake-up
            # pipe before the interpreter exits: if it closes the pipe while the exit hook
            # writes to it, Python 3.11 prints an OSError traceback (EBADF) at shutdown.
            if manager is not None:
                manager.join(timeout=15)
            raise
        pool.shutdown(wait=True, cancel_futures=True)


def _drain(pool: ProcessPoolExecutor, queue: deque[Job], workers: int, on_start: StartFn,
           on_done: DoneFn, broken: type[Exception]) -> None:
    """Keep ``workers`` jobs in flight until the queue is empty or the pool breaks."""
    inflight: dict[Future[Outcome], Job] = {}
    is_broken = False
    while (queue and not is_broken) or inflight:
        while queue and not is_broken and len(inflight) < workers:
            job = queue.popleft()
            if not on_start(job.run_id):
                continue
            inflight[pool.submit(execute_run, job.run_id, job.cfg, job.checkpoint_dir, job.execution)] = job
        if not inflight:
            break
        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
        for future in done:
            job = inflight.pop(future)
            try:
                outcome = future.result()
            except broken as exc:
                is_broken = True
                outcome = _crashed(job, exc)
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                outcome = _crashed(job, exc)
            on_done(outcome)


# ---------------------------------------------------------------------------- ray


def check_executor(name: str) -> None:
    """Fail early (before a study is written) for an unknown or unusable executor.

    Raises:
        ConfigError: unknown name.
        ExecutorError: ``ray`` without Ray installed.
    """
    from steadytune.config.run import ConfigError

    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    if name == "ray":
        _import_ray()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError("executor 'ray' needs Ray: pip install 'steadytune[ray]'") from None
    return ray


def run_ray(jobs: list[Job], on_start: StartFn, on_done: DoneFn, *, workers: int = 1,
            ray_address: str | None = None) -> None:
    """Run each job as a Ray task; results come back to this (the only writing) process.

    Uses the Ray already initialised in this process if any; else connects to
    ``ray_address``, or starts a local Ray on every core (shut down afterwards). A task
    asks for ``execution.threads`` CPUs (capped by the largest node) and one GPU when the
    cluster has GPUs and the run is not pinned to the CPU; Ray retries a task twice
    if its worker dies.
    """
    del workers  # Ray schedules by resources, not a worker count
    ray = _import_ray()
    started = not ray.is_initialized()
    if started and ray_address:
        ray.init(address=ray_address, log_to_driver=False)
    elif started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        resources = ray.cluster_resources()
        max_cpus = max(1, int(resources.get("CPU", 1)))
        has_gpu = resources.get("GPU", 0) >= 1
        remote = ray.remote(max_retries=2)(execute_run)
        pending: dict[Any, Job] = {}
        for job in jobs:
            gpus = 1 if has_gpu and job.execution.device != "cpu" else 0
            if not on_start(job.run_id):
                continue
            ref = remote.options(num_cpus=min(max(1, job.execution.threads), max_cpus),
                                 num_gpus=gpus).remote(job.run_id, job.cfg, job.checkpoint_dir, job.execution)
            pending[ref] = job
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a task that died after its retries
                outcome = _crashed(job, exc)
            on_done(outcome)
    finally:
        if started:
            ray.shutdown()


EXECUTORS: dict[str, Callable[..., None]] = {"local": run_local, "ray": run_ray}
"""Executor name -> function ``(jobs, on_start, on_done, *, workers, ray_address)``."""

__all__ = ["EXECUTORS", "ExecutorError", "RUNS_PER_GPU", "auto_workers", "check_executor", "Job", "Outcome",
           "execute_run", "run_local", "run_ray", "uses_gpu"]
