"""Which runs of a sweep train together as one grouped model (several seeds per process).

Runs that differ only in their seed, execute the same way and use no Mixout are cut into
groups of at most ``size`` (in the sweep's order, so a study cut short stays balanced);
every other run is a group of one. Each group is one task for an executor
(:func:`steadytune.sweeps.worker.execute_task`).

Whether grouping pays is a property of the hardware and of this implementation, so
``size=0`` (auto) groups only where it was measured to pay, and so far that is nowhere
(docs/performance.md): each run of a group keeps its own dropout stream and sequence length
through a loop over the group's runs in every dropout and attention call, so the group's
per-step work outside the matrix products grows with its size. On a CPU a MiniLM batch
already keeps the matrix units busy; on one H200 the step is launch-bound and a group of 16
took about 18x the step of one run (the same ratio as on a CPU with a tiny model). Grouping
is there for whoever measures that it pays on their hardware (``--group-size K``).
"""

from __future__ import annotations

from steadytune.config.execution import Execution
from steadytune.config.run import ConfigError
from steadytune.sweeps.local import uses_gpu
from steadytune.sweeps.worker import Job
from steadytune.training.grouped.loop import group_key

AUTO_GROUP = {"cpu": 1, "gpu": 1}
"""Runs per group chosen by ``group_size=0`` (auto) per device kind: where grouping was measured
to pay (nowhere yet, see the module docstring); change it with a measurement in docs/performance.md."""


def auto_group_size(executions: list[Execution]) -> int:
    """``group_size=0``: :data:`AUTO_GROUP` of the device the runs train on."""
    return AUTO_GROUP["gpu" if executions and uses_gpu(executions) else "cpu"]


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


__all__ = ["AUTO_GROUP", "auto_group_size", "check_group_size", "group_tasks"]
