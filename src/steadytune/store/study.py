"""The study store: one embedded SQLite file per study, safe against ``kill -9``.

A *study* is a set of runs (usually one or more seed sweeps). Each run is one row of
``runs``, keyed by the content hash of its resolved configuration; its curves, gradient
diagnostics and log live in ``curves``, ``diagnostics`` and ``logs``.

Why SQLite: a finished run is written in ONE transaction (result, curves, diagnostics
and status together), so killing the process at any moment leaves either the old state
or the new one, never half a run. WAL journaling lets readers (``summary``, reports) run
while a sweep writes; every write is a short ``BEGIN IMMEDIATE`` transaction retried
when another writer holds the lock.

:class:`Study` is the open file and the run lifecycle (plan, claim, record, read the
tables); the other modules of :mod:`steadytune.store` go through :meth:`Study.transaction`.

Run statuses: ``pending`` (planned), ``running`` (handed to an executor), ``finished``,
``diverged`` (NaN loss; a result, counted as failed), ``stopped`` (ended by the doomed-run
guard; a result, counted as failed and stuck), ``error`` (the run raised; it is
retried on resume). ``running`` rows found on resume were in flight when the study
died and are redone too.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, TypeVar

import pandas as pd

from steadytune.store.file import (
    DONE_STATUSES,
    StoreError,
    connect_readonly,
    create_schema,
    inspect_file,
    upgrade,
    utc_now,
)
from steadytune.store.leases import Owner, claim, release
from steadytune.store.rows import (
    CURVE_FIELDS,
    DIAG_FIELDS,
    records,
    replace_children,
    result_columns,
)
from steadytune.store.tables import chunks, read_curves, read_diagnostics, read_runs
from steadytune.training.results import RunResult

DONE = DONE_STATUSES
"""Statuses that count as done (finished, diverged, stopped): a resumed sweep skips these runs."""
_RETRIES = 60
T = TypeVar("T")


class Planned(Protocol):
    """What :meth:`Study.add_planned` needs of a planned run (see ``sweeps.spec.PlannedRun``)."""

    run_id: str
    grid: str

    @property
    def cfg(self) -> Any: ...


class Study:
    """An open study file. Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._conn = conn

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, path: str | Path, create: bool = True, readonly: bool = False) -> "Study":
        """Open (and with ``create``, create) the study at ``path``.

        Args:
            path: the study file, e.g. ``rte.db``.
            create: create the file and schema if missing; else a missing file is an error.
            readonly: open without any write (for summaries, reports and dry runs).

        Returns:
            The open study.

        Raises:
            StoreError: missing (and not ``create``), not SQLite, not a steadytune study
                or from a newer schema; foreign files are never modified. A study of an
                older schema is upgraded when opened for writing
                (:func:`steadytune.store.file.upgrade`), never when opened read-only.
        """
        path = Path(path)
        exists = inspect_file(path)
        if not exists and (readonly or not create):
            raise StoreError(f"no steadytune study at {path}")
        if readonly:
            return cls(path, connect_readonly(path), readonly=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        for pragma in ("busy_timeout = 30000", "journal_mode = WAL", "synchronous = NORMAL",
                       "foreign_keys = ON"):
            conn.execute(f"PRAGMA {pragma}")
        study = cls(path, conn, readonly=False)
        if not exists:
            study.transaction(create_schema)
        else:
            upgrade(conn)  # a version-1 study learns the 'stopped' status (one transaction)
        return study

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self, fn: Callable[[sqlite3.Connection], T], write: bool = True) -> T:
        """Run ``fn(connection)`` in one transaction and return what it returns.

        A write transaction (``BEGIN IMMEDIATE``) is retried, with backoff, while another
        writer holds the file; a read transaction (``write=False``) gives ``fn`` one
        consistent snapshot of the study, even while a sweep writes. If ``fn`` raises,
        nothing it wrote is kept.

        Args:
            fn: the work; it gets the study's connection and must not commit itself.
            write: whether ``fn`` writes.

        Returns:
            ``fn``'s return value.

        Raises:
            StoreError: a write to a study opened read-only.
            sqlite3.OperationalError: still locked after about a minute of retries.
        """
        if write and self.readonly:
            raise StoreError(f"study {self.path} was opened read-only")
        begin = "BEGIN IMMEDIATE" if write else "BEGIN"
        for attempt in range(_RETRIES):
            try:
                self._conn.execute(begin)
                out = fn(self._conn)
                self._conn.execute("COMMIT")
                return out
            except sqlite3.OperationalError as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if not _locked(exc) or attempt == _RETRIES - 1:
                    raise
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ writes
    def add_planned(self, runs: Iterable[Planned]) -> int:
        """Insert planned runs as ``pending``; existing rows (of any status) are kept.

        Args:
            runs: the planned runs (``run_id``, ``grid`` and a resolved ``cfg`` each).

        Returns:
            The number of new rows.

        Raises:
            StoreError: the study was opened read-only.
        """
        now = utc_now()
        rows = [(r.run_id, r.cfg.task, r.cfg.model, r.cfg.recipe, r.grid, int(r.cfg.seed),
                 json.dumps(r.cfg.to_dict(), sort_keys=True), now) for r in runs]

        def insert(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO runs (run_id, task, model, recipe, grid, seed, config_json, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            return conn.total_changes - before

        return self.transaction(insert)

    def claim(self, run_id: str, owner: Owner | None = None) -> str | None:
        """Mark ``run_id`` running (one more attempt), leased to ``owner``, in one transaction.

        Args:
            run_id: a planned run.
            owner: the driver that will train it; its lease keeps a second driver on the
                same study from training the run too. None: no lease (one driver only,
                e.g. a test or a benchmark that records results itself).

        Returns:
            None when claimed; else why not (``"done"``, or ``"leased by HOST pid PID"``
            while another living driver trains it), and nothing is written.

        Raises:
            StoreError: the study was opened read-only.
        """
        def write(conn: sqlite3.Connection) -> str | None:
            if owner is None:
                why = "done" if _status(conn, run_id) in DONE else None
            else:
                why = claim(conn, run_id, owner)
            if why is None:
                _mark_running(conn, run_id)
            return why

        return self.transaction(write)

    def release(self, owner: Owner) -> None:
        """Drop every lease ``owner`` still holds (a driver that stops early).

        Raises:
            StoreError: the study was opened read-only.
        """
        self.transaction(lambda conn: release(conn, None, owner))

    def record_result(self, run_id: str, result: RunResult | dict[str, Any],
                      curves: pd.DataFrame | list[tuple] | None = None,
                      diagnostics: pd.DataFrame | list[tuple] | None = None,
                      log: str | None = None) -> bool:
        """Write a run's result, curves, diagnostics, log and status in ONE transaction.

        Args:
            run_id: the planned run.
            result: a :class:`RunResult` (its curves/diagnostics are used when the
                arguments are None) or its :meth:`RunResult.to_dict` form.
            curves: rows ``(step, epoch, split, name, value)``.
            diagnostics: rows ``(step, group, name, value)``.
            log: the run's captured log.

        Returns:
            False (and nothing written) if the run was already done, e.g. by a second
            driver on the same study: the first result stays, byte for byte.

        Raises:
            StoreError: an unknown run, or the study was opened read-only.
        """
        if isinstance(result, RunResult):
            curves = result.curves if curves is None else curves
            diagnostics = getattr(result, "diagnostics", None) if diagnostics is None else diagnostics
            result = result.to_dict()
        curve_rows, diag_rows = records(curves, CURVE_FIELDS), records(diagnostics, DIAG_FIELDS)
        fields = result_columns(result)

        def write(conn: sqlite3.Connection) -> bool:
            if _is_done(conn, run_id):
                return False
            conn.execute("UPDATE runs SET status=?, error=?, metric=?, final=?, best=?, baseline=?, "
                         "failed=?, failed_best=?, result_json=?, wall_seconds=?, finished_at=? "
                         "WHERE run_id=?", (*fields, run_id))
            replace_children(conn, run_id, curve_rows, diag_rows)
            _add_log(conn, run_id, log)
            release(conn, run_id)
            return True

        return self.transaction(write)

    def record_error(self, run_id: str, message: str, log: str | None = None) -> None:
        """Mark a run as ``error`` with ``message`` (it is retried on resume); a done run is kept.

        Args:
            run_id: the planned run.
            message: what went wrong (shown in summaries and reports).
            log: the attempt's captured log.

        Raises:
            StoreError: an unknown run, or the study was opened read-only.
        """
        def write(conn: sqlite3.Connection) -> None:
            if _is_done(conn, run_id):
                return
            conn.execute("UPDATE runs SET status='error', error=?, finished_at=? WHERE run_id=?",
                         (message, utc_now(), run_id))
            _add_log(conn, run_id, log)
            release(conn, run_id)

        self.transaction(write)

    # ------------------------------------------------------------------ reads
    def statuses(self, run_ids: Iterable[str] | None = None) -> dict[str, str]:
        """The status of each run.

        Args:
            run_ids: the runs to look up (None: every run); unknown ids are left out.

        Returns:
            ``run_id -> status`` (one of ``steadytune.store.file.STATUSES``).
        """
        if run_ids is None:
            return dict(self._conn.execute("SELECT run_id, status FROM runs"))
        out: dict[str, str] = {}
        for chunk in chunks(list(run_ids)):
            marks = ",".join("?" * len(chunk))
            out.update(self._conn.execute(
                f"SELECT run_id, status FROM runs WHERE run_id IN ({marks})", chunk))
        return out

    def pending(self, run_ids: Iterable[str] | None = None) -> list[str]:
        """Runs still to do: pending, running (in flight when a study died) or error.

        Args:
            run_ids: the runs to consider (None: every run); unknown ids are left out.

        Returns:
            Their ids, in the order of ``run_ids`` (None: the table's order).
        """
        ids = None if run_ids is None else list(run_ids)
        status = self.statuses(ids)
        order = list(status) if ids is None else [r for r in ids if r in status]
        return [r for r in order if status[r] not in DONE]

    def runs_table(self, all_statuses: bool = False) -> pd.DataFrame:
        """One row per run, in the :mod:`steadytune.analyses.stats` format (``RUN_COLUMNS``), plus
        ``train_loss`` (the last logged training loss) and ``label_entropy`` (of the
        training labels; NaN for runs recorded before it was stored, and for regression),
        ``best_step`` (the step of the best dev evaluation; 0 = the untrained model),
        ``head_seed, data_seed, dropout_seed`` (the seed each stream comes from: the run
        seed unless the config sets it), ``repeat`` (the repeat index, 0 by default),
        ``steps`` / ``total_steps`` (updates taken / planned), ``attempt`` (which attempt of
        its seed the run is: 1 unless the guard restarted the seed) and ``guard`` (the
        run's guard policy). Every attempt of a seed is a row of its own.

        ``grid`` is the statistics group's label within (task, model, recipe): the
        sweep's grid point, extended by every other config key whose value differs
        between runs that would otherwise share it (:func:`steadytune.store.tables.group_labels`),
        so runs with different settings are never pooled.

        Args:
            all_statuses: also include pending/running/error rows (not valid input to
                the stats functions); without it, the runs with a result (finished,
                diverged, stopped).

        Returns:
            The runs, sorted by task, model, recipe, grid, seed, stream seeds, repeat.
        """
        return read_runs(self._conn, all_statuses)

    def curves_table(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Tidy curves of runs (:func:`steadytune.store.tables.read_curves`).

        Args:
            run_ids: the runs (None: every run).

        Returns:
            ``CURVE_COLUMNS`` rows, in the order they were recorded.
        """
        return read_curves(self._conn, run_ids)

    def diagnostics_table(self, run_ids: Iterable[str] | None = None,
                          names: Iterable[tuple[str, str]] | None = None) -> pd.DataFrame:
        """Tidy diagnostics of runs (:func:`steadytune.store.tables.read_diagnostics`).

        Args:
            run_ids: the runs (None: every run).
            names: only these ``(group, name)`` diagnostics (None: all).

        Returns:
            ``DIAG_COLUMNS`` rows, in the order they were recorded.
        """
        return read_diagnostics(self._conn, run_ids, names)


def _locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _mark_running(conn: sqlite3.Connection, run_id: str) -> None:
    marks = ", ".join("?" * len(DONE))
    conn.execute("UPDATE runs SET status='running', attempts=attempts+1, started_at=? "
                 f"WHERE run_id=? AND status NOT IN ({marks})", (utc_now(), run_id, *DONE))


def _status(conn: sqlite3.Connection, run_id: str) -> str | None:
    row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
    return None if row is None else row[0]


def _is_done(conn: sqlite3.Connection, run_id: str) -> bool:
    status = _status(conn, run_id)
    if status is None:
        raise StoreError(f"run {run_id!r} is not in the study; add it with add_planned first")
    return status in DONE


def _add_log(conn: sqlite3.Connection, run_id: str, log: str | None) -> None:
    if log:
        attempt = conn.execute("SELECT attempts FROM runs WHERE run_id=?", (run_id,)).fetchone()[0]
        conn.execute("INSERT INTO logs (run_id, attempt, text, created_at) VALUES (?, ?, ?, ?)",
                     (run_id, attempt, log, utc_now()))


__all__ = ["DONE", "Planned", "Study"]
