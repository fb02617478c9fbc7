"""The record of one run: ``RunResult``, its curve and diagnostic rows, seeds and versions.

**Rows.** A run produces two tidy tables, each row one value:

* curves, :class:`CurveRow` ``(step, epoch, split, name, value)``: the training loss and
  lr (``split="train"``) at every logging step and the dev metrics (``split="dev"``) at
  every evaluation;
* diagnostics, :class:`DiagRow` ``(step, group, name, value)``: gradient norms,
  optimiser scalars and head statistics (:mod:`steadytune.training.diagnostics`).

The training loop and the diagnostics recorder produce these rows; a :class:`RunResult`
holds them as DataFrames with exactly :data:`CURVE_COLUMNS` / :data:`DIAG_COLUMNS`
(:func:`curves_frame`, :func:`diagnostics_frame`) and :func:`curve_rows` /
:func:`diag_rows` turn such a frame back into rows, so every sink (a run folder, a study,
a worker's message) carries the same records.

This module imports neither torch nor transformers at import time: the store and the
report read results without them.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import pandas as pd

RESULT_FILE = "result.json"
CURVES_FILE = "curves.csv"
DIAGNOSTICS_FILE = "diagnostics.csv"


class CurveRow(NamedTuple):
    """One point of a run's curves (a row of ``curves.csv``)."""

    step: int
    """Updates taken so far (0: before the first one)."""
    epoch: float
    """Fractional epoch at ``step`` (e.g. 1.5: half-way through the second epoch)."""
    split: str
    """``train`` (``loss``, ``lr``) or ``dev`` (the task's metrics and ``loss``)."""
    name: str
    """What ``value`` is: ``loss``, ``lr``, ``acc``, ``f1``, ``mcc``, ``pearson`` ..."""
    value: float
    """The value (NaN/inf kept as they are)."""


class DiagRow(NamedTuple):
    """One training-time diagnostic (a row of ``diagnostics.csv``)."""

    step: int
    """Updates taken before it was recorded (0 holds the first update's gradients)."""
    group: str
    """``grad_norm_layer``, ``grad_norm_kind``, ``grad_norm_layer_kind``, ``optim`` or ``head``."""
    name: str
    """Within the group, e.g. ``layer.3``, ``query``, ``layer.3/query``, ``lr``, ``entropy``."""
    value: float
    """The value."""


CURVE_COLUMNS: list[str] = list(CurveRow._fields)
"""``["step", "epoch", "split", "name", "value"]``: the columns of ``RunResult.curves``."""
DIAG_COLUMNS: list[str] = list(DiagRow._fields)
"""``["step", "group", "name", "value"]``: the columns of ``RunResult.diagnostics``."""


def curves_frame(rows: Iterable[CurveRow]) -> pd.DataFrame:
    """The curves table of ``rows``: one row each, columns :data:`CURVE_COLUMNS`, in order.

    Args:
        rows: :class:`CurveRow` values (or plain tuples in that field order).

    Returns:
        A DataFrame with exactly :data:`CURVE_COLUMNS` (pandas infers the dtypes:
        int64, float64, object, object, float64 for non-empty rows).
    """
    return pd.DataFrame(list(rows), columns=CURVE_COLUMNS)


def diagnostics_frame(rows: Iterable[DiagRow]) -> pd.DataFrame:
    """The diagnostics table of ``rows``: columns :data:`DIAG_COLUMNS`, ``step`` int64 and
    ``value`` float64 even when there are no rows.

    Args:
        rows: :class:`DiagRow` values (or plain tuples in that field order).

    Returns:
        A DataFrame with exactly :data:`DIAG_COLUMNS`.
    """
    return pd.DataFrame(list(rows), columns=DIAG_COLUMNS).astype({"step": "int64", "value": "float64"})


def curve_rows(frame: pd.DataFrame | None) -> list[CurveRow]:
    """The rows of a curves table (e.g. ``RunResult.curves``), in table order.

    Args:
        frame: a DataFrame with (at least) :data:`CURVE_COLUMNS`; None or an empty frame
            (even one without columns, as a result loaded without ``curves.csv``) has none.

    Returns:
        One :class:`CurveRow` per row, with Python scalars.

    Raises:
        KeyError: a non-empty ``frame`` lacks one of the columns.
    """
    return [CurveRow._make(r) for r in _records(frame, CURVE_COLUMNS)]


def diag_rows(frame: pd.DataFrame | None) -> list[DiagRow]:
    """The rows of a diagnostics table (e.g. ``RunResult.diagnostics``), in table order.

    Args:
        frame: a DataFrame with (at least) :data:`DIAG_COLUMNS`; None or empty: no rows.

    Returns:
        One :class:`DiagRow` per row, with Python scalars.

    Raises:
        KeyError: a non-empty ``frame`` lacks one of the columns.
    """
    return [DiagRow._make(r) for r in _records(frame, DIAG_COLUMNS)]


def _records(frame: pd.DataFrame | None, columns: list[str]) -> Iterable[tuple]:
    if frame is None or frame.empty:
        return []
    return zip(*(frame[c].tolist() for c in columns))  # tolist: Python scalars, and fast


STREAMS = {"head_seed": "head_init", "data_seed": "data_order", "dropout_seed": "dropout"}
"""Config key that sets a stream -> the stream's name in a result's ``seeds``."""


def derive_seeds(seed: int, *, head_seed: int | None = None, data_seed: int | None = None,
                 dropout_seed: int | None = None, attempt: int = 1) -> dict[str, int]:
    """Separate, recorded seeds for head initialisation, data order and dropout.

    Derived with ``numpy.random.SeedSequence`` so the three streams are independent
    and a different run seed changes all of them. A stream seed that is set replaces
    that stream alone by the one run seed ``k`` would derive: ``head_seed=k`` gives run
    seed k's head initialisation, and the other streams stay those of ``seed``. A later
    attempt of the seed (the guard's ``restart`` / ``switch``) draws every stream from
    ``(its seed, attempt)``: new streams, the same for the same attempt; attempt 1 keeps
    the streams of the seeds alone.

    Args:
        seed: the run seed (>= 0).
        head_seed, data_seed, dropout_seed: a stream's own seed (>= 0), None = from ``seed``.
        attempt: which attempt of the seed (1, 2, ...).

    Returns:
        ``{"run": seed, "head_init": ..., "data_order": ..., "dropout": ...}`` plus, for each
        stream seed that was set, its key and value (e.g. ``"head_seed": 3``): the record
        says which streams were set; and ``"attempt"`` for an attempt after the first.
    """
    out = {"run": int(seed), **_streams(seed, attempt)}
    for key, own in (("head_seed", head_seed), ("data_seed", data_seed), ("dropout_seed", dropout_seed)):
        if own is not None:
            out[STREAMS[key]] = _streams(own, attempt)[STREAMS[key]]
            out[key] = int(own)
    return out if attempt == 1 else {**out, "attempt": int(attempt)}


def _streams(seed: int, attempt: int = 1) -> dict[str, int]:
    entropy = int(seed) if attempt == 1 else [int(seed), int(attempt)]
    head, data, dropout = (int(x) for x in np.random.SeedSequence(entropy).generate_state(3))
    return {"head_init": head, "data_order": data, "dropout": dropout}


def _own_version() -> str:
    """steadytune's installed version; ``<version>+src`` when it runs from a source tree
    (``PYTHONPATH=src``, as on a GPU machine that gets only the repository)."""
    try:
        return metadata.version("steadytune")
    except metadata.PackageNotFoundError:
        import tomllib  # stdlib; only for a source tree

        pyproject = Path(__file__).resolve().parents[3] / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"] + "+src"
        except (OSError, KeyError, ValueError):
            return "unknown"


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries a result depends on."""
    import torch  # heavy: loaded only when a result is built (the package imports light)
    import transformers  # heavy too, and only a built result needs its version

    return {
        "steadytune": _own_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "cuda": str(torch.version.cuda) if torch.cuda.is_available() else "none",
    }


def label_entropy(labels: Any, regression: bool = False) -> float | None:
    """Entropy (nats) of the empirical label distribution: the training loss of a classifier
    that predicts the label prior for every example.

    Args:
        labels: class ids (any array-like).
        regression: the labels are scores.

    Returns:
        The entropy; None for regression.
    """
    if regression:
        return None
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class RunResult:
    """Everything one run produced, with what is needed to reproduce it."""

    task: str
    recipe: str
    seed: int
    model: str
    config: dict[str, Any]
    metric: str
    metrics: dict[str, dict[str, float]]
    """``final`` (last checkpoint) and ``best`` (strictly best dev evaluation, step 0 included)."""
    best_step: int
    """Step of the ``best`` evaluation; 0 is the untrained model (see :attr:`best_is_untrained`)."""
    majority_baseline: float
    failed: bool
    failed_best: bool
    status: str
    error: str | None
    steps: int
    total_steps: int
    warmup_steps: int
    steps_per_epoch: int
    wall_seconds: float
    seeds: dict[str, int]
    versions: dict[str, str]
    data: dict[str, Any]
    model_info: dict[str, Any]
    execution: dict[str, Any] = field(default_factory=dict)
    """Where it ran: the resolved ``device``, ``threads`` (not part of the run's identity;
    empty for results stored before it was recorded, whose ``config`` held them)."""
    guard: dict[str, Any] = field(default_factory=dict)
    """The doomed-run detector's record (:meth:`steadytune.training.guard.Guard.record`):
    ``policy``, ``attempt``, ``verdict`` (``ok``, ``doomed`` or ``unknown`` without
    diagnostics), ``rule``, ``step``, ``reason``, ``stopped``, ``steps_saved`` and, for a
    switched attempt, ``switched``; empty with ``guard=off`` and for older results."""
    curves: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    """Tidy :data:`CURVE_COLUMNS` table of :class:`CurveRow` records (see :func:`curves_frame`)."""
    diagnostics: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    """Tidy :data:`DIAG_COLUMNS` table of :class:`DiagRow` records from
    :mod:`steadytune.training.diagnostics` (may be empty; see :func:`diagnostics_frame`)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``result.json``); curves and diagnostics are stored separately."""
        out = asdict(self)
        out.pop("curves")
        out.pop("diagnostics")
        return _clean(out)

    @property
    def best_is_untrained(self) -> bool:
        """Whether the best dev evaluation is the step-0 one, before any update.

        The paper's rule (:mod:`steadytune.training.loop`) lets the untrained model be the best
        checkpoint when no later evaluation beats it; its ``best`` metrics (and
        ``failed_best``) then describe the initialisation, not training.
        """
        return self.best_step == 0

    @property
    def final(self) -> float:
        """The final-checkpoint value of the run's metric (NaN if diverged)."""
        value = self.metrics["final"].get(self.metric)
        return float("nan") if value is None else float(value)

    def save(self, workdir: str | Path) -> Path:
        """Write ``result.json``, ``curves.csv`` and ``diagnostics.csv`` (if any) into ``workdir``.

        Returns the JSON path. An empty diagnostics table removes a stale ``diagnostics.csv``.
        """
        out = Path(workdir)
        out.mkdir(parents=True, exist_ok=True)
        self.curves.to_csv(out / CURVES_FILE, index=False)
        if len(self.diagnostics):
            self.diagnostics.to_csv(out / DIAGNOSTICS_FILE, index=False)
        else:
            (out / DIAGNOSTICS_FILE).unlink(missing_ok=True)
        path = out / RESULT_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))
        tmp.replace(path)  # atomic: a reader never sees half a result
        return path

    @classmethod
    def from_dict(cls, payload: dict[str, Any], curves: pd.DataFrame | None = None,
                  diagnostics: pd.DataFrame | None = None) -> RunResult:
        """Rebuild a result from its JSON form.

        Args:
            payload: :meth:`to_dict` output (unknown keys are ignored, so newer files load).
            curves: the curves table (None: empty).
            diagnostics: the diagnostics table (None: empty).
        """
        tables = ("curves", "diagnostics")
        known = {k: payload[k] for k in cls.__dataclass_fields__ if k in payload and k not in tables}
        return cls(**known, curves=curves if curves is not None else pd.DataFrame(),
                   diagnostics=diagnostics if diagnostics is not None else pd.DataFrame())

    @classmethod
    def load(cls, workdir: str | Path) -> RunResult:
        """Read a result written by :meth:`save` (a missing ``diagnostics.csv``: no diagnostics).

        Raises:
            FileNotFoundError: ``workdir`` has no ``result.json``.
        """
        out = Path(workdir)
        payload = json.loads((out / RESULT_FILE).read_text())
        return cls.from_dict(payload, _read_table(out / CURVES_FILE), _read_table(out / DIAGNOSTICS_FILE))


def _read_table(path: Path) -> pd.DataFrame | None:
    """A CSV written by :meth:`RunResult.save`; None if absent, empty frame if it has no rows."""
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:  # an empty frame is written as a bare newline
        return pd.DataFrame()


__all__ = [
    "CURVES_FILE",
    "CURVE_COLUMNS",
    "DIAGNOSTICS_FILE",
    "DIAG_COLUMNS",
    "RESULT_FILE",
    "CurveRow",
    "DiagRow",
    "RunResult",
    "curve_rows",
    "curves_frame",
    "STREAMS",
    "derive_seeds",
    "diag_rows",
    "diagnostics_frame",
    "label_entropy",
    "versions",
]
