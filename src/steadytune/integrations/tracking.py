"""A sweep's runs and its study's summary, sent to trackers while the sweep runs.

:class:`SweepTracker` is an ``on_event`` sink for :func:`steadytune.sweeps.driver.run_sweeps`
(the CLI's ``--tracker KIND:ROOT``). For every recorded run (a
:class:`~steadytune.sweeps.events.FinishEvent` that is not an error) it reads the run's
curves and diagnostics back from the study (so the tracker holds exactly what is stored)
and logs them to a logger of their own, one ``log_dict`` per step, named
``<task>-<recipe>[-<grid>]-seed<seed>-<run_id[:8]>`` with the resolved config as params.
After each such run it logs the study's :func:`~steadytune.analyses.stats.summarize` table
to the ``summary`` logger, at step = runs recorded so far, so the failed count, mean and
spread per group are watched as they form (metric ``<task>/<model>/<recipe>[/<grid>]/<stat>``).
The driver process is the only one that writes to a tracker, as it is the only one that
writes the study.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from steadytune.analyses.stats import summarize
from steadytune.integrations.trackers import MetricLogger, OpenRun
from steadytune.store.records import read_result
from steadytune.store.study import Study
from steadytune.sweeps.events import FinishEvent, SweepEvent, SweepsDoneEvent
from steadytune.training.results import curve_rows, diag_rows

SUMMARY_STATS = ("n", "n_failed", "n_stuck", "mean", "std", "median", "max")
"""The :func:`~steadytune.analyses.stats.summarize` columns logged per group."""


def rows_by_step(curves: pd.DataFrame | None, diagnostics: pd.DataFrame | None) -> dict[int, dict[str, float]]:
    """A run's tidy tables as ``step -> {"<split or group>/<name>": value}`` (curves, then diagnostics)."""
    out: dict[int, dict[str, float]] = defaultdict(dict)
    for step, _, split, name, value in curve_rows(curves):
        out[int(step)][f"{split}/{name}"] = value
    for step, group, name, value in diag_rows(diagnostics):
        out[int(step)][f"{group}/{name}"] = value
    return dict(sorted(out.items()))


def log_rows(logger: MetricLogger, by_step: Mapping[int, Mapping[str, float]]) -> None:
    """One ``log_dict`` per step."""
    for step, payload in by_step.items():
        logger.log_dict(payload, step)


def summary_metrics(summary: pd.DataFrame, stats: Iterable[str] = SUMMARY_STATS) -> dict[str, float]:
    """``summarize``'s table as ``"<task>/<model>/<recipe>[/<grid>]/<stat>" -> value`` (NaN left out)."""
    out = {}
    for row in summary.to_dict("records"):
        group = "/".join([row["task"], Path(row["model"]).name, row["recipe"], *([row["grid"]] if row["grid"] else [])])
        out.update({f"{group}/{stat}": float(row[stat]) for stat in stats if pd.notna(row[stat])})
    return out


def run_name(event: FinishEvent) -> str:
    """``rte-devlin2019-lr=1e-05-seed3-1a2b3c4d``: readable and unique in a study."""
    grid = f"-{event.grid}" if event.grid else ""
    return f"{event.task}-{event.recipe}{grid}-seed{event.seed}-{event.run_id[:8]}"


class SweepTracker:
    """``on_event`` sink that logs each recorded run and the study's summary to trackers.

    Args:
        trackers: from :func:`~steadytune.integrations.trackers.open_tracker`.
        store: the study the sweep writes.
        which: the checkpoint the summary describes (``final`` or ``best``).
    """

    def __init__(self, trackers: Sequence[OpenRun], store: str | Path, which: str = "final") -> None:
        self.trackers, self.store, self.which = list(trackers), Path(store), which
        self._summary: list[MetricLogger] | None = None
        self.logged: list[str] = []
        """Run ids logged so far."""

    def __call__(self, event: SweepEvent) -> None:
        if isinstance(event, FinishEvent) and event.status != "error":
            self._log_run(event)
        elif isinstance(event, SweepsDoneEvent):
            self.close()

    def _log_run(self, event: FinishEvent) -> None:
        with Study.open(self.store, readonly=True) as study:
            result = read_result(study, event.run_id)
            runs = study.runs_table()
        params: dict[str, Any] = {**result.config, "run_id": event.run_id, "grid": event.grid,
                                  "status": result.status, "failed": result.failed}
        by_step = rows_by_step(result.curves, result.diagnostics)
        for open_run in self.trackers:
            logger = open_run(run_name(event), params)
            try:
                log_rows(logger, by_step)
            finally:
                logger.close()
        self.logged.append(event.run_id)
        if self._summary is None:
            self._summary = [open_run("summary", {"store": str(self.store), "which": self.which})
                             for open_run in self.trackers]
        metrics = summary_metrics(summarize(runs, which=self.which))
        for logger in self._summary:
            logger.log_dict(metrics, len(runs))

    def close(self) -> None:
        """Close the summary loggers (idempotent; the sweep's last event does it too)."""
        for logger in self._summary or []:
            logger.close()
        self._summary = None


__all__ = ["SUMMARY_STATS", "SweepTracker", "log_rows", "rows_by_step", "run_name", "summary_metrics"]
