"""Where and how a run executes: device, CPU threads, an extra model save for a sweep.

None of this is part of what a run computes (:class:`~steadytune.config.run.RunConfig`)
or of its identity (:func:`~steadytune.config.run.config_hash`): the same run on another
device or with another thread count is the same run. It is recorded in every result
under ``execution``, next to the resolved ``config``.

``device`` and ``threads`` are set like any key (``--set threads=1``, a study file, a
``steadytune.run(threads=1)`` keyword): :func:`split_execution` takes them out of a set of
overrides before the run config is resolved.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from steadytune.config.errors import ConfigError


@dataclass(frozen=True)
class Execution:
    """How one run executes; inert data, validated on construction."""

    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    threads: int = 0
    """Intra-op CPU threads (0 = leave PyTorch's setting: all cores)."""
    save_final: bool = False
    """Also save the final model into ``<workdir>/final`` (a sweep keeping checkpoints)."""
    precision_note: str = ""
    """Why a sweep's ``precision=auto`` became the precision in the run's config (set by the
    sweep driver, which chooses once per study); empty: the run resolves ``auto`` itself."""
    runs_per_gpu: int = 0
    """Ray executor: runs sharing one GPU (each asks for 1/N of it; 0 = automatic, 16)."""

    def __post_init__(self) -> None:
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r} is invalid; use auto, cpu, cuda or cuda:N")
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads!r}")
        if self.runs_per_gpu < 0:
            raise ConfigError(f"runs_per_gpu must be >= 0 (0 = automatic), got {self.runs_per_gpu!r}")

    def replace(self, **changes: Any) -> "Execution":
        """A copy with ``changes`` applied (keys checked, values coerced)."""
        return dataclasses.replace(self, **{k: coerce_execution(k, v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain JSON-able dict."""
        return dataclasses.asdict(self)


EXECUTION_KEYS = ("device", "threads", "runs_per_gpu")
"""The execution settings a user sets as ``key=value`` overrides."""


def coerce_execution(name: str, value: Any) -> Any:
    """Convert ``value`` (often a CLI string) to the type of execution key ``name``.

    Raises:
        ConfigError: an unknown key or a value of the wrong type.
    """
    if name == "device":
        return str(value)
    if name in ("threads", "runs_per_gpu"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key {name!r} expects int, got {value!r}") from None
    if name == "save_final":
        return bool(value)
    if name == "precision_note":
        return str(value)
    raise ConfigError(f"unknown execution key {name!r}; valid: {', '.join(EXECUTION_KEYS)}")


def split_execution(overrides: Mapping[str, Any] | None,
                    base: Execution | None = None) -> tuple[dict[str, Any], Execution]:
    """Separate the execution keys from ``overrides``.

    Returns:
        ``(run overrides, execution)``: the overrides without the execution keys, and
        ``base`` (default :class:`Execution`) with those applied.

    Raises:
        ConfigError: an invalid device or thread count.
    """
    run = dict(overrides or {})
    picked = {k: run.pop(k) for k in EXECUTION_KEYS if k in run}
    return run, (base or Execution()).replace(**picked)


__all__ = ["EXECUTION_KEYS", "Execution", "coerce_execution", "split_execution"]
