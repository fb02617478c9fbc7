"""Which runs of a sweep train together as one grouped model (several seeds per process).

Runs that differ only in their seed, execute the same way and use no Mixout are cut into
groups of at most ``size`` (in the sweep's order, so a study cut short stays balanced);
every other run is a group of one. Each group is one task for an executor
(:func:`steadytune.sweeps.worker.execute_task`).

Whether grouping pays is a property of the hardware, so ``size=0`` (auto) groups only
where it was measured to pay: on a GPU, where one small encoder leaves the device
mostly idle, not on a CPU, whose matrix units a MiniLM batch already fills
(docs/performance.md).
"""

from __future__ import annotations

from steadytune.config.execution import Execution
from steadytune.config.run import ConfigError
from steadytune.sweeps.local import uses_gpu
from steadytune.sweeps.worker import Job
from steadytune.training.grouped.loop import group_key

GROUP_PER_GPU = 8
"""Runs per group chosen by ``group_size=0`` (auto) when the runs go to a GPU (docs/performance.md)."""


def auto_group_size(executions: list[Execution]) -> int:
    """``group_size=0``: :data:`GROUP_PER_GPU` when the runs train on a GPU, else 1 (no grouping)."""
    return GROUP_PER_GPU if executions and uses_gpu(executions) else 1


def check_group_size(size: int) -> None:
    """Raise :class:`ConfigError` for a negative group size."""
    if size < 0:
        raise ConfigError(f"group_size must be >= 0 (0 = automatic, 1 = no grouping), got {size}")


def group_tasks(jobs: list[Job], size: int) -> list[list[Job]]:
    """Cut ``jobs`` into tasks: groups of at most ``size`` runs that may train together.

    Args:
        jobs: the sweep's jobs, in order.
        size: the largest group (1: every run alone).

    Returns:
        The tasks, each a non-empty list of jobs, ordered by their first job.
    """
    if size <= 1:
        return [[job] for job in jobs]
    open_groups: dict[tuple, list[Job]] = {}
    tasks: list[list[Job]] = []
    for job in jobs:
        if job.cfg.mixout > 0:
            tasks.append([job])
            continue
        key = (group_key(job.cfg), job.execution)
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            tasks.append(group)
        group.append(job)
    return tasks


__all__ = ["GROUP_PER_GPU", "auto_group_size", "check_group_size", "group_tasks"]
