"""The record of one run: ``RunResult``, its JSON form, seeds and versions."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RESULT_FILE = "result.json"
CURVES_FILE = "curves.csv"
DIAGNOSTICS_FILE = "diagnostics.csv"


def derive_seeds(seed: int) -> dict[str, int]:
    """Separate, recorded seeds for head initialisation, data order and dropout.

    Derived with ``numpy.random.SeedSequence`` so the three streams are independent
    and a different run seed changes all of them.
    """
    head, data, dropout = (int(x) for x in np.random.SeedSequence(int(seed)).generate_state(3))
    return {"run": int(seed), "head_init": head, "data_order": data, "dropout": dropout}


def versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries a result depends on."""
    import torch  # heavy: loaded only when a result is built (the package imports light)
    import transformers

    return {
        "steadytune": metadata.version("steadytune"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "cuda": str(torch.version.cuda) if torch.cuda.is_available() else "none",
    }


def label_entropy(labels: Any, regression: bool = False) -> float | None:
    """Entropy (nats) of the empirical label distribution: the training loss of a classifier
    that predicts the label prior for every example. None for regression."""
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
    curves: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    diagnostics: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    """Tidy ``step, group, name, value`` table from :mod:`steadytune.diagnostics` (may be empty)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``result.json``); curves and diagnostics are stored separately."""
        out = asdict(self)
        out.pop("curves")
        out.pop("diagnostics")
        return _clean(out)

    @property
    def best_is_untrained(self) -> bool:
        """Whether the best dev evaluation is the step-0 one, before any update.

        The paper's rule (:mod:`steadytune.train`) lets the untrained model be the best
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
                  diagnostics: pd.DataFrame | None = None) -> "RunResult":
        """Rebuild a result from its JSON form."""
        tables = ("curves", "diagnostics")
        known = {k: payload[k] for k in cls.__dataclass_fields__ if k in payload and k not in tables}
        return cls(**known, curves=curves if curves is not None else pd.DataFrame(),
                   diagnostics=diagnostics if diagnostics is not None else pd.DataFrame())

    @classmethod
    def load(cls, workdir: str | Path) -> "RunResult":
        """Read a result written by :meth:`save`."""
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


def build_result(cfg: Any, data: Any, tracker: Any, model_info: dict[str, Any], seeds: dict[str, int],
                 status: str, error: str | None, steps: int, total: int, warmup: int,
                 steps_per_epoch: int, wall: float, diagnostics: pd.DataFrame | None = None,
                 execution: dict[str, Any] | None = None) -> RunResult:
    """Assemble a :class:`RunResult` from the training loop's state."""
    from steadytune.training.metrics import is_failed

    final = dict(tracker.final or {})
    best = dict(tracker.best or {})
    final_value = final.get(data.metric, float("nan"))
    best_value = best.get(data.metric, float("nan"))
    return RunResult(
        task=cfg.task,
        recipe=cfg.recipe,
        seed=cfg.seed,
        model=cfg.model,
        config=cfg.to_dict(),
        metric=data.metric,
        metrics={"final": final, "best": best},
        best_step=tracker.best_step,
        majority_baseline=data.baseline,
        failed=status != "finished" or is_failed(final_value, data.baseline),
        failed_best=is_failed(best_value, data.baseline),
        status=status,
        error=error,
        steps=steps,
        total_steps=total,
        warmup_steps=warmup,
        steps_per_epoch=steps_per_epoch,
        wall_seconds=round(wall, 3),
        seeds=seeds,
        versions=versions(),
        data={
            "n_train": len(data.train),
            "n_dev": len(data.dev),
            "train_source": data.train.source,
            "dev_source": data.dev.source,
            "label_names": list(data.train.label_names) if data.train.label_names else None,
            "label_entropy": label_entropy(data.train.labels, data.regression),
        },
        model_info=model_info,
        execution=dict(execution or {}),
        curves=tracker.curves(),
        diagnostics=diagnostics if diagnostics is not None else pd.DataFrame(),
    )
