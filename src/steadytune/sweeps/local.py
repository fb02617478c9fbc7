"""The ``local`` executor: in this process, or a spawn process pool on this machine.

``workers=1`` runs the jobs here one after another. ``workers > 1`` uses a spawn-context
process pool: each worker dies with the driver (Linux ``PR_SET_PDEATHSIG``), uses its
share of the cores and, on a machine with GPUs, is bound to one of them (round robin), so
several seeds share each GPU (:func:`auto_workers`). A worker that dies (segfault, out
of memory) fails only the runs it held; the pool is rebuilt for the rest. Ctrl-C kills
the workers at once; the runs already recorded stay.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from steadytune.config.execution import Execution
from steadytune.sweeps.worker import (
    DoneFn,
    Job,
    Outcome,
    StartFn,
    crashed,
    execute_task,
)

PR_SET_PDEATHSIG = 1
RUNS_PER_GPU = 16
"""Concurrent runs per GPU chosen by ``workers=0`` (auto): the best of 1/4/8/16 measured on
an H200 (docs/performance.md); capped by the CPU cores."""


def uses_gpu(executions: list[Execution]) -> bool:
    """Whether any of the runs will train on a GPU (``cuda*``, or ``auto`` with CUDA present)."""
    wants = [e.device.startswith("cuda") or e.device == "auto" for e in executions]
    return any(wants) and torch.cuda.is_available()


def auto_workers(executions: list[Execution], cpus: int | None = None) -> int:
    """Local worker count for ``workers=0``: 1 on CPU; packed runs when they go to GPUs.

    A small encoder keeps a GPU busy only a fraction of each step (the Python side of
    the step dominates), so ``RUNS_PER_GPU`` concurrent runs per GPU, capped by the CPU
    cores and the number of runs, finish many times sooner than one at a time.
    """
    if not executions or not uses_gpu(executions):
        return 1
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(RUNS_PER_GPU * torch.cuda.device_count(), cpus, len(executions)))


def _init_worker(driver_pid: int, threads: int, counter: Any = None) -> None:
    """Pool-worker setup: die with the driver; use ``threads`` intra-op threads; the
    n-th worker started makes GPU ``n mod count`` its current device (when there are GPUs)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != driver_pid:  # the driver died before prctl took effect
            os._exit(1)
    torch.set_num_threads(max(1, threads))
    if counter is not None and torch.cuda.is_available():
        with counter.get_lock():
            index = counter.value
            counter.value += 1
        torch.cuda.set_device(index % torch.cuda.device_count())


def run_local(tasks: list[list[Job]], on_start: StartFn, on_done: DoneFn, *, workers: int = 1,
              ray_address: str | None = None) -> None:
    """Run ``tasks`` (each one run, or a group of runs) here (``workers=1``) or in a spawn process pool.

    A worker that dies (segfault, out of memory) fails only the runs it held: they are
    recorded as errors and the pool is rebuilt for the rest.
    """
    del ray_address  # the local executor has no cluster
    if workers <= 1:
        for task in tasks:
            claimed = [job for job in task if on_start(job.run_id)]
            if claimed:
                for outcome in execute_task(claimed):
                    on_done(outcome)
        return
    queue = deque(tasks)
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    counter = context.Value("i", 0) if uses_gpu([job.execution for task in tasks for job in task]) else None
    while queue:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                   initargs=(os.getpid(), threads, counter))
        try:
            _drain(pool, queue, workers, on_start, on_done)
        except KeyboardInterrupt:  # Ctrl-C / SIGINT: stop the workers now; finished runs are stored
            _kill(pool)
            raise
        pool.shutdown(wait=True, cancel_futures=True)


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers now and let its manager thread wind down."""
    manager = getattr(pool, "_executor_manager_thread", None)
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    # Let the pool's manager thread notice the killed workers and close its wake-up
    # pipe before the interpreter exits: if it closes the pipe while the exit hook
    # writes to it, Python 3.11 prints an OSError traceback (EBADF) at shutdown.
    if manager is not None:
        manager.join(timeout=15)


def _drain(pool: ProcessPoolExecutor, queue: deque[list[Job]], workers: int, on_start: StartFn,
           on_done: DoneFn) -> None:
    """Keep ``workers`` tasks in flight until the queue is empty or the pool breaks."""
    inflight: dict[Future[list[Outcome]], list[Job]] = {}
    is_broken = False
    while (queue and not is_broken) or inflight:
        while queue and not is_broken and len(inflight) < workers:
            claimed = [job for job in queue.popleft() if on_start(job.run_id)]
            if claimed:
                inflight[pool.submit(execute_task, claimed)] = claimed
        if not inflight:
            break
        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
        for future in done:
            task = inflight.pop(future)
            try:
                outcomes = future.result()
            except BrokenProcessPool as exc:
                is_broken = True
                outcomes = [crashed(job, exc) for job in task]
            except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
                outcomes = [crashed(job, exc) for job in task]
            for outcome in outcomes:
                on_done(outcome)


__all__ = ["RUNS_PER_GPU", "auto_workers", "run_local", "uses_gpu"]
