"""Executors: where the runs of a sweep execute. The driver stays the only store writer.

``EXECUTORS`` is a literal table from name to function
``(tasks, on_start, on_done, *, workers, ray_address) -> None``, a task being one job or a
group of jobs trained together (:mod:`steadytune.sweeps.grouping`); the contract (jobs,
tasks, outcomes, callbacks) is :mod:`steadytune.sweeps.worker`.

* ``local`` (:mod:`steadytune.sweeps.local`) — in-process one run after another
  (``workers=1``), or a spawn-context process pool, several runs per GPU.
* ``ray`` (:mod:`steadytune.sweeps.ray`) — one Ray task per run or group, on an existing cluster
  (``ray_address``) or on a local Ray started and shut down for the sweep. Ray is an
  optional extra.

A new executor is one module with such a function and one line here.
"""

from __future__ import annotations

from collections.abc import Callable

from steadytune.config.run import ConfigError
from steadytune.sweeps.local import run_local
from steadytune.sweeps.ray import RAY_MISSING, ray_installed, run_ray


class ExecutorError(RuntimeError):
    """An executor that cannot start (e.g. Ray is not installed)."""


EXECUTORS: dict[str, Callable[..., None]] = {"local": run_local, "ray": run_ray}
"""Executor name -> function ``(tasks, on_start, on_done, *, workers, ray_address)``."""


def check_executor(name: str) -> None:
    """Fail early (before a study is written) for an unknown or unusable executor.

    Raises:
        ConfigError: unknown name.
        ExecutorError: ``ray`` without Ray installed.
    """
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    if name == "ray" and not ray_installed():
        raise ExecutorError(RAY_MISSING)


__all__ = ["EXECUTORS", "ExecutorError", "check_executor"]
