"""Experiment trackers behind one small logger protocol (after torchtune's ``MetricLoggerInterface``).

A :class:`MetricLogger` takes scalars of ONE run: ``log(name, value, step)``,
``log_dict({name: value}, step)``, ``close()``. Three are here, all local and offline:

==============  =============================================  =======================================
kind            writes                                         needs
==============  =============================================  =======================================
``jsonl``       ``ROOT/metrics.jsonl``: one JSON object a       nothing (built in)
                call, ``{"run", "step", name: value ...}``
``tensorboard`` event files in ``ROOT/<run>/``                 the ``tensorboard`` extra
``mlflow``      one MLflow run per run, in the tracking store   the ``mlflow`` extra
                ``ROOT`` (a folder: ``sqlite:///ROOT/mlflow.db``;
                or any tracking URI)
==============  =============================================  =======================================

:func:`open_tracker` (``"tensorboard:runs/tb"``) returns an :data:`OpenRun`: a function
``(run_name, params) -> MetricLogger`` that a sweep (:mod:`steadytune.integrations.tracking`)
or the Trainer callback calls once per run. Metric names are ``<table>/<name>``:
``train/loss``, ``dev/acc``, ``grad_norm_layer/layer.3``, ``optim/bias_correction_factor``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from steadytune.config.errors import ConfigError


class MetricLogger(Protocol):
    """Where the scalars of one run go."""

    def log(self, name: str, data: float, step: int) -> None:
        """Record ``data`` as metric ``name`` at ``step``."""

    def log_dict(self, payload: Mapping[str, float], step: int) -> None:
        """Record every ``name: value`` of ``payload`` at ``step``."""

    def close(self) -> None:
        """Flush and release the sink (idempotent)."""


OpenRun = Callable[[str, Mapping[str, Any]], MetricLogger]
"""``open_run(run_name, params) -> MetricLogger``: a tracker, one logger per run."""


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


class JsonlLogger:
    """Appends one JSON object per call to a ``.jsonl`` file (NaN/inf written as null).

    The first line of a run holds its ``params``; then ``{"run", "step", name: value ...}``.
    """

    def __init__(self, path: str | Path, run: str, params: Mapping[str, Any] | None = None) -> None:
        self.path, self.run = Path(path), run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: Any = self.path.open("a", encoding="utf-8")
        self._write({"run": run, "params": dict(params or {})})

    def _write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True, default=str) + "\n")

    def log(self, name: str, data: float, step: int) -> None:
        self.log_dict({name: data}, step)

    def log_dict(self, payload: Mapping[str, float], step: int) -> None:
        self._write({"run": self.run, "step": int(step), **{k: _finite(v) for k, v in payload.items()}})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorBoardLogger:
    """Scalars in TensorBoard event files under ``log_dir`` (the params as a text summary)."""

    def __init__(self, log_dir: str | Path, params: Mapping[str, Any] | None = None) -> None:
        try:
            from torch.utils.tensorboard import (
                SummaryWriter,  # optional extra ('tensorboard')
            )
        except ImportError:
            raise ConfigError(MISSING["tensorboard"]) from None
        self._writer: Any = SummaryWriter(log_dir=str(log_dir))
        if params:
            self._writer.add_text("params", json.dumps(dict(params), sort_keys=True, default=str, indent=1), 0)

    def log(self, name: str, data: float, step: int) -> None:
        self._writer.add_scalar(name, float(data), int(step))

    def log_dict(self, payload: Mapping[str, float], step: int) -> None:
        for name, value in payload.items():
            self.log(name, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


_MLFLOW_NAME = re.compile(r"[^\w.\- /:]")


def mlflow_uri(root: str | Path) -> str:
    """A tracking URI: ``root`` itself if it has a scheme, else a SQLite store in that folder."""
    text = str(root)
    if "://" in text or text.startswith("sqlite:"):
        return text
    folder = Path(text).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


class MlflowLogger:
    """One MLflow run in a local tracking store; metric names keep MLflow's characters."""

    def __init__(self, root: str | Path, run: str, params: Mapping[str, Any] | None = None,
                 experiment: str = "steadytune") -> None:
        try:
            from mlflow.entities import Metric, Param  # optional extra ('mlflow')
            from mlflow.tracking import MlflowClient  # optional extra ('mlflow')
        except ImportError:
            raise ConfigError(MISSING["mlflow"]) from None
        uri = mlflow_uri(root)
        self._metric = Metric
        self._client: Any = MlflowClient(tracking_uri=uri, registry_uri=uri)
        found = self._client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self._client.create_experiment(experiment)
        self.run_id = self._client.create_run(experiment_id, run_name=run).info.run_id
        items = [Param(k[:250], str(v)[:6000]) for k, v in sorted((params or {}).items())]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self._client.log_batch(self.run_id, params=items[start:start + 100])

    def log(self, name: str, data: float, step: int) -> None:
        self.log_dict({name: data}, step)

    def log_dict(self, payload: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [self._metric(_MLFLOW_NAME.sub("_", k), float(v), now, int(step)) for k, v in payload.items()]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            self._client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def close(self) -> None:
        if self._client is not None:
            self._client.set_terminated(self.run_id)
            self._client = None


MISSING = {
    "tensorboard": "tracker 'tensorboard' needs TensorBoard: pip install 'steadytune[tensorboard]'",
    "mlflow": "tracker 'mlflow' needs MLflow: pip install 'steadytune[mlflow]'",
}
"""The one-line error when a tracker's extra is not installed."""

TRACKERS: dict[str, Callable[[Path, str, Mapping[str, Any]], MetricLogger]] = {
    "jsonl": lambda root, run, params: JsonlLogger(root / "metrics.jsonl", run, params),
    "tensorboard": lambda root, run, params: TensorBoardLogger(root / _safe(run), params),
    "mlflow": lambda root, run, params: MlflowLogger(root, run, params),
}
"""Tracker kind -> ``(root, run_name, params) -> MetricLogger``."""


def _safe(run: str) -> str:
    return re.sub(r"[^\w.\-=,+]", "_", run)


def tracker_available(kind: str) -> bool:
    """Whether the extra that tracker ``kind`` needs is installed (``jsonl``: always)."""
    module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}.get(kind)
    return module is None or importlib.util.find_spec(module) is not None


def open_tracker(spec: str) -> OpenRun:
    """``"KIND:ROOT"`` (``jsonl:runs/log``, ``tensorboard:runs/tb``, ``mlflow:runs/mlflow``) -> a tracker.

    Raises:
        ConfigError: not ``KIND:ROOT``, an unknown kind, or its extra is not installed.
    """
    kind, sep, root = spec.partition(":")
    if not sep or not root or kind not in TRACKERS:
        raise ConfigError(f"tracker {spec!r} must be KIND:ROOT with KIND one of {', '.join(TRACKERS)} "
                          "(e.g. tensorboard:runs/tb)")
    if not tracker_available(kind):
        raise ConfigError(MISSING[kind])
    make = TRACKERS[kind]
    return lambda run, params: make(Path(root).expanduser(), run, params)


__all__ = ["MISSING", "TRACKERS", "JsonlLogger", "MetricLogger", "MlflowLogger", "OpenRun", "TensorBoardLogger",
           "mlflow_uri", "open_tracker", "tracker_available"]
