"""The study store: one embedded SQLite file per study, safe against ``kill -9``.

A *study* is a set of runs (usually one or more seed sweeps). Each run is one row of
``runs``, keyed by the content hash of its resolved configuration; its curves, gradient
diagnostics and log live in ``curves``, ``diagnostics`` and ``logs``.

Why SQLite: a finished run is written in ONE transaction (result, curves, diagnostics
and status together), so killing the process at any moment leaves either the old state
or the new one, never half a run. WAL journaling lets readers (``summary``, reports) run
while a sweep writes; every write is a short ``BEGIN IMMEDIATE`` transaction retried
when another writer holds the lock.

Sweeps run with ``--keep-checkpoints`` also list the model checkpoints they kept in
``checkpoints`` (see :mod:`steadytune.checkpoints`). The file format (schema, version,
how a foreign file is refused) is :mod:`steadytune.storefile`.

Run statuses: ``pending`` (planned), ``running`` (handed to an executor), ``finished``,
``diverged`` (NaN loss; a result, counted as failed), ``error`` (the run raised; it is
retried on resume). ``running`` rows found on resume were in flight when the study
died and are redone too.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, TypeVar

import pandas as pd

from steadytune.config.run import format_value, identity
from steadytune.store.file import (
    CHECKPOINTS_TABLE,
    STATUSES,
    StoreError,
    connect_readonly,
    create_schema,
    inspect_file,
    utc_now,
)
from steadytune.store.leases import Owner, claim, release
from steadytune.training.results import RunResult

DONE = ("finished", "diverged")
"""Statuses that count as done: a resumed sweep skips these runs."""
_RUN_EXTRAS = ("json_extract(result_json, '$.data.label_entropy') AS label_entropy, "
               "json_extract(result_json, '$.best_step') AS best_step, "
               "(SELECT c.value FROM curves c WHERE c.run_id = runs.run_id AND c.split = 'train' "
               "AND c.name = 'loss' ORDER BY c.step DESC LIMIT 1) AS train_loss")
RUN_COLUMNS = ["run_id", "task", "model", "recipe", "grid", "seed", "metric", "final", "best",
               "baseline", "status", "failed", "wall_seconds"]
"""Columns of :meth:`Study.runs_table`: what :mod:`steadytune.stats` needs, plus bookkeeping."""
CURVE_COLUMNS = ["run_id", "step", "epoch", "split", "name", "value"]
DIAG_COLUMNS = ["run_id", "step", "group", "name", "value"]
_RETRIES = 60
_CHUNK = 500

CHECKPOINT_COLUMNS = ["run_id", "path", "failed", "task", "model", "recipe", "grid", "seed"]
"""Columns of :meth:`Study.checkpoints`."""
T = TypeVar("T")


class Planned(Protocol):
    """What :meth:`Study.add_planned` needs of a planned run (see ``sweep.PlannedRun``)."""

    run_id: str
    grid: str

    @property
    def cfg(self) -> Any: ...


def _finite(value: Any) -> float | None:
    """A float, or None for missing/NaN/inf (SQLite has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


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

        Raises:
            StoreError: missing (and not ``create``), not SQLite, not a steadytune study
                or from a newer schema; foreign files are never modified.
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
            study._write(create_schema)
        return study

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one short write transaction, retrying while the file is locked."""
        if self.readonly:
            raise StoreError(f"study {self.path} was opened read-only")
        for attempt in range(_RETRIES):
            try:
                self._conn.execute("BEGIN IMMEDIATE")
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

        Returns:
            The number of new rows.
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

        return self._write(insert)

    def mark_running(self, run_id: str) -> None:
        """Mark a run as handed to an executor (one more attempt)."""
        self._write(lambda conn: _mark_running(conn, run_id))

    def claim(self, run_id: str, owner: Owner) -> str | None:
        """Lease ``run_id`` to ``owner`` and mark it running, in one transaction.

        Returns:
            None when claimed; else why not (``"done"``, or ``"leased by HOST pid PID"``
            while another living driver trains it), and nothing is written.
        """
        def write(conn: sqlite3.Connection) -> str | None:
            why = claim(conn, run_id, owner)
            if why is None:
                _mark_running(conn, run_id)
            return why

        return self._write(write)

    def release(self, owner: Owner) -> None:
        """Drop every lease ``owner`` still holds (a driver that stops early)."""
        self._write(lambda conn: release(conn, None, owner))

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
        """
        if isinstance(result, RunResult):
            curves = result.curves if curves is None else curves
            diagnostics = getattr(result, "diagnostics", None) if diagnostics is None else diagnostics
            result = result.to_dict()
        curve_rows = _rows(curves, ["step", "epoch", "split", "name", "value"])
        diag_rows = _rows(diagnostics, ["step", "group", "name", "value"])
        metric = result["metric"]
        fields = (result["status"], result.get("error"), metric,
                  _finite(result["metrics"]["final"].get(metric)),
                  _finite(result["metrics"]["best"].get(metric)), _finite(result["majority_baseline"]),
                  int(bool(result["failed"])), int(bool(result["failed_best"])),
                  json.dumps(result, sort_keys=True), _finite(result.get("wall_seconds")), utc_now())

        def write(conn: sqlite3.Connection) -> bool:
            if _is_done(conn, run_id):
                return False
            conn.execute("UPDATE runs SET status=?, error=?, metric=?, final=?, best=?, baseline=?, "
                         "failed=?, failed_best=?, result_json=?, wall_seconds=?, finished_at=? "
                         "WHERE run_id=?", (*fields, run_id))
            _replace_children(conn, run_id, curve_rows, diag_rows)
            _add_log(conn, run_id, log)
            release(conn, run_id)
            return True

        return self._write(write)

    def record_error(self, run_id: str, message: str, log: str | None = None) -> None:
        """Mark a run as ``error`` with ``message`` (it is retried on resume)."""
        def write(conn: sqlite3.Connection) -> None:
            if _is_done(conn, run_id):
                return
            conn.execute("UPDATE runs SET status='error', error=?, finished_at=? WHERE run_id=?",
                         (message, utc_now(), run_id))
            _add_log(conn, run_id, log)
            release(conn, run_id)

        self._write(write)

    def set_checkpoints(self, scope: Iterable[str], kept: dict[str, tuple[str, bool]]) -> None:
        """Make ``kept`` the checkpoints listed for the runs in ``scope`` (one transaction).

        Args:
            scope: run ids whose rows are replaced; rows of other runs are left alone.
            kept: ``run_id -> (path, failed)``; a relative path is relative to the
                folder of the study file.
        """
        drop = [(r,) for r in set(scope) - set(kept)]
        rows = [(r, str(path), int(bool(failed)), utc_now()) for r, (path, failed) in kept.items()]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(CHECKPOINTS_TABLE)
            conn.executemany("DELETE FROM checkpoints WHERE run_id=?", drop)
            conn.executemany("INSERT INTO checkpoints (run_id, path, failed, created_at) VALUES (?, ?, ?, ?) "
                             "ON CONFLICT(run_id) DO UPDATE SET path=excluded.path, failed=excluded.failed",
                             rows)

        self._write(write)

    # ------------------------------------------------------------------ reads
    def statuses(self, run_ids: Iterable[str] | None = None) -> dict[str, str]:
        """``run_id -> status`` for ``run_ids`` (None: every run); unknown ids are left out."""
        if run_ids is None:
            return dict(self._conn.execute("SELECT run_id, status FROM runs"))
        out: dict[str, str] = {}
        for chunk in _chunks(list(run_ids)):
            marks = ",".join("?" * len(chunk))
            out.update(self._conn.execute(
                f"SELECT run_id, status FROM runs WHERE run_id IN ({marks})", chunk))
        return out

    def pending(self, run_ids: Iterable[str] | None = None) -> list[str]:
        """Runs still to do (status not finished/diverged), in the order of ``run_ids``."""
        ids = None if run_ids is None else list(run_ids)
        status = self.statuses(ids)
        order = list(status) if ids is None else [r for r in ids if r in status]
        return [r for r in order if status[r] not in DONE]

    def runs_table(self, all_statuses: bool = False) -> pd.DataFrame:
        """One row per run, in the :mod:`steadytune.stats` format (``RUN_COLUMNS``), plus
        ``train_loss`` (the last logged training loss) and ``label_entropy`` (of the
        training labels; NaN for runs recorded before it was stored, and for regression)
        and ``best_step`` (the step of the best dev evaluation; 0 = the untrained model).

        ``grid`` is the statistics group's label within (task, model, recipe): the
        sweep's grid point, extended by every other config key whose value differs
        between runs that would otherwise share it (:func:`group_labels`), so runs with
        different settings are never pooled.

        Args:
            all_statuses: also include pending/running/error rows (not valid input to
                the stats functions).
        """
        where = "" if all_statuses else "WHERE status IN ('finished', 'diverged')"
        df = pd.read_sql_query(f"SELECT {', '.join(RUN_COLUMNS)}, {_RUN_EXTRAS}, config_json FROM runs "
                               f"{where} ORDER BY task, model, recipe, grid, seed", self._conn)
        df["grid"] = group_labels(df, [json.loads(c) for c in df.pop("config_json")])
        df = df.sort_values(["task", "model", "recipe", "grid", "seed"], kind="stable", ignore_index=True)
        for col in ("final", "best", "baseline", "wall_seconds", "train_loss", "label_entropy", "best_step"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        df["failed"] = df["failed"].astype("boolean")
        return df

    def curves_table(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Tidy curves (``CURVE_COLUMNS``) of ``run_ids`` (None: every run)."""
        return self._children("curves", CURVE_COLUMNS, run_ids)

    def diagnostics_table(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Tidy diagnostics (``DIAG_COLUMNS``) of ``run_ids`` (None: every run)."""
        return self._children("diagnostics", DIAG_COLUMNS, run_ids)

    def _children(self, table: str, columns: list[str], run_ids: Iterable[str] | None) -> pd.DataFrame:
        cols = ", ".join(f'"{c}"' for c in columns)
        sql = f"SELECT {cols} FROM {table}"
        if run_ids is None:
            parts = [pd.read_sql_query(f"{sql} ORDER BY rowid", self._conn)]
        else:
            parts = [pd.read_sql_query(f"{sql} WHERE run_id IN ({','.join('?' * len(c))}) ORDER BY rowid",
                                       self._conn, params=c) for c in _chunks(list(run_ids))]
        parts = [p for p in parts if len(p)]
        df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
        df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
        return df

    def checkpoints(self) -> pd.DataFrame:
        """The model checkpoints a sweep kept (``--keep-checkpoints``), one row per run.

        Returns:
            ``CHECKPOINT_COLUMNS``: ``path`` is the absolute ``save_pretrained`` folder
            (loadable with ``AutoModelForSequenceClassification.from_pretrained``),
            ``failed`` the run's verdict; sorted by task, model, recipe, grid, failed, seed.
            Empty for a study without checkpoints.
        """
        has = self._conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='checkpoints'")
        if has.fetchone() is None:
            return pd.DataFrame(columns=CHECKPOINT_COLUMNS)
        df = pd.read_sql_query(
            "SELECT c.run_id, c.path, c.failed, r.task, r.model, r.recipe, r.grid, r.seed FROM checkpoints c "
            "JOIN runs r USING (run_id) ORDER BY r.task, r.model, r.recipe, r.grid, c.failed, r.seed",
            self._conn)
        base = self.path.resolve().parent
        df["path"] = [str(base / p) for p in df["path"]]  # absolute paths stay as they are
        df["failed"] = df["failed"].astype(bool)
        return df

    def logs(self, run_id: str) -> list[str]:
        """The logs of every attempt of ``run_id``, oldest first."""
        rows = self._conn.execute("SELECT text FROM logs WHERE run_id=? ORDER BY rowid", (run_id,))
        return [r[0] for r in rows]

    def result(self, run_id: str) -> RunResult:
        """The stored :class:`RunResult` of a done run, with its curves.

        Raises:
            KeyError: unknown run, or no result stored yet.
        """
        row = self._conn.execute("SELECT result_json FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None or row[0] is None:
            raise KeyError(f"no stored result for run {run_id!r} in {self.path}")
        curves = self.curves_table([run_id]).drop(columns="run_id")
        diags = self.diagnostics_table([run_id]).drop(columns="run_id")
        return RunResult.from_dict(json.loads(row[0]), curves, diags)

    def export(self, path: str | Path) -> list[Path]:
        """Write the runs (every status, with config and error) to ``path`` (.parquet/.csv).

        Curves go to ``<stem>.curves<suffix>`` beside it, and diagnostics (if any) to
        ``<stem>.diagnostics<suffix>``. Each file is written atomically.

        Returns:
            The files written.

        Raises:
            StoreError: an unsupported suffix.
        """
        out = Path(path)
        if out.suffix not in (".parquet", ".csv"):
            raise StoreError(f"export to .parquet or .csv, not {out.name!r}")
        runs = self.runs_table(all_statuses=True)
        extra = pd.read_sql_query("SELECT run_id, failed_best, attempts, error, config_json, created_at, "
                                  "started_at, finished_at FROM runs", self._conn)
        tables = {"": runs.merge(extra, on="run_id", how="left"), ".curves": self.curves_table()}
        diags = self.diagnostics_table()
        if len(diags):
            tables[".diagnostics"] = diags
        written = []
        for tag, df in tables.items():
            target = out.with_name(f"{out.stem}{tag}{out.suffix}")
            written.append(_write_table(df, target))
        return written


def group_labels(runs: pd.DataFrame, configs: list[dict[str, Any]]) -> list[str]:
    """The ``grid`` label of each run, made unique per distinct config identity.

    Within each (task, model, recipe, grid) group, runs whose :func:`~steadytune.config.identity`
    (the resolved config without seed and execution keys) differs get the keys that
    differ, ``key=value``, added to their label; a group of one identity keeps its label.

    Args:
        runs: rows with ``task, model, recipe, grid``.
        configs: the stored resolved config of each row, in order.
    """
    idents = [identity(c) for c in configs]
    labels = list(runs["grid"])
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(runs["task"], runs["model"], runs["recipe"], runs["grid"])):
        groups.setdefault(key, []).append(i)
    for rows in groups.values():
        dumped = [json.dumps(idents[i], sort_keys=True, default=str) for i in rows]
        if len(set(dumped)) < 2:
            continue
        keys = set().union(*(idents[i] for i in rows))
        varying = sorted(k for k in keys if len({json.dumps(idents[i].get(k), default=str)
                                                            for i in rows}) > 1)
        for i in rows:
            parts = dict(p.split("=", 1) for p in labels[i].split(",") if p)
            parts.update({k: format_value(idents[i].get(k)) for k in varying})
            labels[i] = ",".join(f"{k}={parts[k]}" for k in sorted(parts))
    return labels


def _mark_running(conn: sqlite3.Connection, run_id: str) -> None:
    conn.execute("UPDATE runs SET status='running', attempts=attempts+1, started_at=? "
                 "WHERE run_id=? AND status NOT IN ('finished', 'diverged')", (utc_now(), run_id))


def _is_done(conn: sqlite3.Connection, run_id: str) -> bool:
    row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
    if row is None:
        raise StoreError(f"run {run_id!r} is not in the study; add it with add_planned first")
    return row[0] in DONE


def _replace_children(conn: sqlite3.Connection, run_id: str, curves: list[tuple],
                      diags: list[tuple]) -> None:
    conn.execute("DELETE FROM curves WHERE run_id=?", (run_id,))
    conn.execute("DELETE FROM diagnostics WHERE run_id=?", (run_id,))
    conn.executemany("INSERT INTO curves (run_id, step, epoch, split, name, value) VALUES (?, ?, ?, ?, ?, ?)",
                     [(run_id, int(s), _finite(e), str(sp), str(n), _finite(v)) for s, e, sp, n, v in curves])
    conn.executemany('INSERT INTO diagnostics (run_id, step, "group", name, value) VALUES (?, ?, ?, ?, ?)',
                     [(run_id, int(s), None if g is None else str(g), str(n), _finite(v))
                      for s, g, n, v in diags])


def _add_log(conn: sqlite3.Connection, run_id: str, log: str | None) -> None:
    if log:
        attempt = conn.execute("SELECT attempts FROM runs WHERE run_id=?", (run_id,)).fetchone()[0]
        conn.execute("INSERT INTO logs (run_id, attempt, text, created_at) VALUES (?, ?, ?, ?)",
                     (run_id, attempt, log, utc_now()))


def _rows(table: pd.DataFrame | list[tuple] | None, columns: list[str]) -> list[tuple]:
    """Records of a DataFrame (in ``columns`` order) or a list of tuples as given."""
    if table is None:
        return []
    if isinstance(table, pd.DataFrame):
        if table.empty:
            return []
        return list(zip(*(table[c].tolist() for c in columns)))  # 10x faster than itertuples
    return [tuple(r) for r in table]


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _write_table(df: pd.DataFrame, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if target.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(target)
    return target


__all__ = ["Study", "StoreError", "DONE", "STATUSES", "RUN_COLUMNS", "CURVE_COLUMNS", "DIAG_COLUMNS",
           "CHECKPOINT_COLUMNS"]
