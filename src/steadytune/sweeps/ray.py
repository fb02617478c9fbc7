"""The ``ray`` executor: one Ray task per run; results come back to the (only writing) driver.

Ray is an optional extra (``pip install 'steadytune[ray]'``): it is imported only when this
executor runs or is checked. A task runs :func:`steadytune.sweeps.worker.execute_task` (one run,
or a group of runs), so a run gives the same numbers here as under the local executor (at
the same thread count).
"""

from __future__ import annotations

import os
from typing import Any

from steadytune.sweeps.worker import DoneFn, Job, StartFn, crashed, execute_task

RAY_MISSING = "executor 'ray' needs Ray: pip install 'steadytune[ray]'"
"""The message when Ray is not installed."""


def ray_installed() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401 - optional extra: imported only to see whether it is there
    except ImportError:
        return False
    return True


def run_ray(tasks: list[list[Job]], on_start: StartFn, on_done: DoneFn, *, workers: int = 1,
            ray_address: str | None = None) -> None:
    """Run each task (one run, or a group of runs) as a Ray task; results come back to this process.

    Uses the Ray already initialised in this process if any; else connects to
    ``ray_address``, or starts a local Ray on every core (shut down afterwards). A task
    asks for ``execution.threads`` CPUs (capped by the largest node) and one GPU when the
    cluster has GPUs and the run is not pinned to the CPU; Ray retries a task twice
    if its worker dies.

    Raises:
        ImportError: Ray is not installed (the driver checks first, see
            :func:`steadytune.sweeps.executors.check_executor`).
    """
    del workers  # Ray schedules by resources, not a worker count
    try:
        import ray  # optional extra: only the ray executor needs it
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    started = not ray.is_initialized()
    if started and ray_address:
        ray.init(address=ray_address, log_to_driver=False)
    elif started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        pending = _submit(ray, tasks, on_start)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready[0])
            try:
                outcomes = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a task that died after its retries
                outcomes = [crashed(job, exc) for job in task]
            for outcome in outcomes:
                on_done(outcome)
    finally:
        if started:
            ray.shutdown()


def _submit(ray: Any, tasks: list[list[Job]], on_start: StartFn) -> dict[Any, list[Job]]:
    """Hand every task (its runs that ``on_start`` accepts) to Ray; return ``object ref -> jobs``."""
    resources = ray.cluster_resources()
    max_cpus = max(1, int(resources.get("CPU", 1)))
    has_gpu = resources.get("GPU", 0) >= 1
    remote = ray.remote(max_retries=2)(execute_task)
    pending: dict[Any, list[Job]] = {}
    for task in tasks:
        claimed = [job for job in task if on_start(job.run_id)]
        if not claimed:
            continue
        execution = claimed[0].execution
        gpus = 1 if has_gpu and execution.device != "cpu" else 0
        ref = remote.options(num_cpus=min(max(1, execution.threads), max_cpus), num_gpus=gpus).remote(claimed)
        pending[ref] = claimed
    return pending


__all__ = ["RAY_MISSING", "ray_installed", "run_ray"]
