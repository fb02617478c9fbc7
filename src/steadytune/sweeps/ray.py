"""The ``ray`` executor: Ray tasks on one machine or a cluster; results come back to the (only writing) driver.

Ray is an optional extra (``pip install 'steadytune[ray]'``): it is imported only when this
executor runs or is checked. A task runs :func:`steadytune.sweeps.worker.execute_task` (one
run, or a group of runs that differ only in their seed, trained as one grouped model), so a
run gives the same numbers here as under the local executor (at the same thread count).

**Resources** (:func:`task_resources`). A task asks for ``execution.threads`` CPUs (capped by
the cluster's CPUs) and, when the cluster has GPUs and the run is not pinned to the CPU,
``1 / runs_per_gpu`` of a GPU (``runs_per_gpu``: an execution setting, ``--set
runs_per_gpu=8``; 0 = automatic, :data:`~steadytune.sweeps.local.RUNS_PER_GPU`), so Ray packs
several tasks onto each GPU of every node, as the local executor packs worker processes.

**Nodes.** A task's log ends with the Ray node that ran it and the resources it got
(``ray node <id> resources {"CPU": 1.0, "GPU": 0.25}``). When a node dies, Ray retries its
tasks elsewhere (twice); a run that still fails is recorded as an error and the next
``sweep`` (resume) trains it again: nothing recorded is lost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from steadytune.sweeps.local import RUNS_PER_GPU
from steadytune.sweeps.worker import (
    DoneFn,
    Job,
    Outcome,
    StartFn,
    crashed,
    execute_task,
)

RAY_MISSING = "executor 'ray' needs Ray: pip install 'steadytune[ray]'"
"""The message when Ray is not installed."""


def ray_installed() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401 - optional extra: imported only to see whether it is there
    except ImportError:
        return False
    return True


def task_resources(task: Sequence[Job], cluster: dict[str, float]) -> dict[str, float]:
    """``num_cpus`` and ``num_gpus`` of the Ray task that runs ``task`` on a cluster with ``cluster`` resources.

    CPUs: the task's ``threads`` (at least 1), capped by the cluster's CPUs. GPUs: none when
    the cluster has none or the runs are pinned to the CPU; else ``1 / runs_per_gpu``
    (0: :data:`RUNS_PER_GPU`) of one GPU.
    """
    execution = task[0].execution
    max_cpus = max(1, int(cluster.get("CPU", 1)))
    wants_gpu = cluster.get("GPU", 0) > 0 and execution.device != "cpu"
    per_gpu = execution.runs_per_gpu or RUNS_PER_GPU
    return {"num_cpus": min(max(1, execution.threads), max_cpus), "num_gpus": 1.0 / per_gpu if wants_gpu else 0.0}


def execute_on_node(jobs: list[Job]) -> list[Outcome]:
    """:func:`~steadytune.sweeps.worker.execute_task` in a Ray worker; each outcome's log ends
    with the node that ran it and the resources Ray gave the task."""
    import ray  # optional extra: this runs inside a Ray worker

    context = ray.get_runtime_context()
    where = f"ray node {context.get_node_id()} resources {json.dumps(context.get_assigned_resources(), sort_keys=True)}"
    outcomes = execute_task(jobs)
    for outcome in outcomes:
        outcome.log += where + "\n"
    return outcomes


def run_ray(tasks: list[list[Job]], on_start: StartFn, on_done: DoneFn, *, workers: int = 1,
            ray_address: str | None = None) -> None:
    """Run each task (one run, or a group of runs) as a Ray task; results come back to this process.

    Uses the Ray already initialised in this process if any; else connects to
    ``ray_address``, or starts a local Ray on every core (shut down afterwards). Ray
    retries a task twice if its worker or node dies; a task that still fails gives each
    of its runs an error outcome (retried by the next resume).

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
    cluster = ray.cluster_resources()
    remote = ray.remote(max_retries=2)(execute_on_node)
    pending: dict[Any, list[Job]] = {}
    for task in tasks:
        claimed = [job for job in task if on_start(job.run_id)]
        if claimed:
            pending[remote.options(**task_resources(claimed, cluster)).remote(claimed)] = claimed
    return pending


__all__ = ["RAY_MISSING", "execute_on_node", "ray_installed", "run_ray", "task_resources"]
