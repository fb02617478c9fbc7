"""One run's stored record: its :class:`~steadytune.training.results.RunResult` and its logs.

    >>> with Study.open("rte.db", readonly=True) as study:
    ...     result = read_result(study, run_id)
    ...     last_log = read_logs(study, run_id)[-1]
"""

from __future__ import annotations

import json
import sqlite3

from steadytune.store.study import Study
from steadytune.store.tables import read_curves, read_diagnostics
from steadytune.training.results import RunResult


def read_result(study: Study, run_id: str) -> RunResult:
    """The stored result of a done run, with its curves and diagnostics.

    Args:
        study: an open study (read-only is enough).
        run_id: the run.

    Returns:
        The :class:`RunResult` as recorded, read in one snapshot.

    Raises:
        KeyError: unknown run, or no result stored yet.
    """
    def read(conn: sqlite3.Connection) -> RunResult:
        row = conn.execute("SELECT result_json FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None or row[0] is None:
            raise KeyError(f"no stored result for run {run_id!r} in {study.path}")
        curves = read_curves(conn, [run_id]).drop(columns="run_id")
        diags = read_diagnostics(conn, [run_id]).drop(columns="run_id")
        return RunResult.from_dict(json.loads(row[0]), curves, diags)

    return study.transaction(read, write=False)


def read_configs(study: Study, run_ids: list[str] | None = None) -> dict[str, dict]:
    """The stored resolved configuration of each run (as planned: ``config_json``).

    Args:
        study: an open study (read-only is enough).
        run_ids: the runs (None: every run); unknown ids are left out.

    Returns:
        ``run_id -> config dict``.
    """
    def read(conn: sqlite3.Connection) -> dict[str, dict]:
        rows = conn.execute("SELECT run_id, config_json FROM runs")
        wanted = None if run_ids is None else set(run_ids)
        return {r: json.loads(c) for r, c in rows if wanted is None or r in wanted}

    return study.transaction(read, write=False)


def read_logs(study: Study, run_id: str) -> list[str]:
    """The captured logs of every attempt of ``run_id`` that left one, oldest first.

    Args:
        study: an open study (read-only is enough).
        run_id: the run; an unknown run has no logs.

    Returns:
        One string per logged attempt.
    """
    def read(conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute("SELECT text FROM logs WHERE run_id=? ORDER BY rowid", (run_id,))
        return [r[0] for r in rows]

    return study.transaction(read, write=False)


__all__ = ["read_configs", "read_logs", "read_result"]
