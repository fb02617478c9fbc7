"""The study file format: SQLite schema, version, and how a study file is recognised.

:mod:`steadytune.store.study` reads and writes studies through these; nothing here writes to a
file that is not already a steadytune study (a foreign file is inspected read-only and
refused untouched).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

APP = "steadytune"
SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "finished", "diverged", "error")
_SQLITE_MAGIC = b"SQLite format 3\x00"

# Added after schema version 1 shipped; older studies get it on their first checkpoint
# write (CREATE IF NOT EXISTS), and readers treat a missing table as "no checkpoints".
CHECKPOINTS_TABLE = """
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id) ON DELETE CASCADE,
    path TEXT NOT NULL, failed INTEGER NOT NULL, created_at TEXT NOT NULL);
"""

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, task TEXT NOT NULL, model TEXT NOT NULL, recipe TEXT NOT NULL,
    grid TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL, config_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {STATUSES!r}),
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT, metric TEXT, final REAL, best REAL,
    baseline REAL, failed INTEGER, failed_best INTEGER, result_json TEXT, wall_seconds REAL,
    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT);
CREATE TABLE IF NOT EXISTS curves (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL, epoch REAL, split TEXT NOT NULL, name TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS curves_run ON curves(run_id);
CREATE TABLE IF NOT EXISTS diagnostics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    step INTEGER NOT NULL, "group" TEXT, name TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS diagnostics_run ON diagnostics(run_id);
CREATE TABLE IF NOT EXISTS logs (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL, text TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_run ON logs(run_id);
""" + CHECKPOINTS_TABLE


class StoreError(RuntimeError):
    """A study file that is missing, not SQLite, not ours, or from a newer schema."""


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds (the format of every ``*_at`` column)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


_SIDECARS = ("-wal", "-shm", "-journal")


def _uri(path: Path, **params: str) -> str:
    return f"{path.resolve().as_uri()}?" + "&".join(f"{k}={v}" for k, v in params.items())


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A connection that never writes ``path`` (``mode=ro``).

    A WAL-mode study needs its ``-shm`` file, which SQLite cannot create in a read-only
    folder (a shared data set, a read-only mount); there the file is opened
    ``immutable`` instead, which is exact as long as no committed data waits in a
    ``-wal`` file beside it (a cleanly closed study has none).

    Raises:
        StoreError: a read-only folder with a non-empty ``-wal`` file (reading the study
            without it would silently miss its last runs).
    """
    def connect(**params: str) -> sqlite3.Connection:
        return sqlite3.connect(_uri(path, **params), uri=True, timeout=30, isolation_level=None,
                               check_same_thread=False)

    conn = connect(mode="ro")
    try:
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if "unable to open" not in str(exc) or os.access(path.resolve().parent, os.W_OK):
            raise
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(f"{path} is in a read-only folder and has a non-empty {wal.name} file that "
                         "SQLite cannot read there; copy the study (with that file) to a writable folder")
    return connect(immutable="1")


def _new_sidecars(path: Path, before: set[str]) -> None:
    """Remove the ``-wal``/``-shm``/``-journal`` files that inspecting ``path`` created."""
    for suffix in _SIDECARS:
        side = Path(f"{path}{suffix}")
        if suffix not in before:
            with contextlib.suppress(FileNotFoundError):
                side.unlink()


def inspect_file(path: Path) -> bool:
    """Whether ``path`` is an existing study (False: missing, empty, or no tables yet).

    Reads only, so a foreign file is never modified; when it is refused, any ``-wal`` or
    ``-shm`` file SQLite made beside it while looking is removed again.

    Raises:
        StoreError: a directory, not SQLite, SQLite without our ``meta``, or a newer schema.
    """
    if not path.exists():
        return False
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a steadytune study file")
    with open(path, "rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if not head:
        return False  # zero bytes: a study killed before its first commit
    if head != _SQLITE_MAGIC:
        raise StoreError(f"{path} is not a steadytune study: not an SQLite database "
                         "(the file was left untouched)")
    before = {s for s in _SIDECARS if Path(f"{path}{s}").exists()}
    try:
        tables, meta = _read_meta(path)
        if tables and meta.get("app") != APP:
            raise StoreError(f"{path} is an SQLite database but not a steadytune study (no "
                             f"'{APP}' entry in a meta table); the file was left untouched")
    except StoreError:
        _new_sidecars(path, before)
        raise
    if not tables:
        return False  # created but killed before the schema was committed
    if int(meta.get("schema_version", "0")) > SCHEMA_VERSION:
        raise StoreError(f"{path} has study schema version {meta['schema_version']}; this "
                         f"steadytune reads version <= {SCHEMA_VERSION}; upgrade steadytune")
    return True


def _read_meta(path: Path) -> tuple[set[str], dict[str, str]]:
    """The table names and the ``meta`` entries of the SQLite file ``path``."""
    try:
        with contextlib.closing(connect_readonly(path)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable steadytune study ({exc}); "
                         "the file was left untouched") from None
    return tables, meta


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables and the ``meta`` entries of a new study, inside the caller's transaction.

    Args:
        conn: a connection in a write transaction; existing tables and entries are kept.
    """
    # executescript() would COMMIT on its own; one statement at a time keeps one transaction.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                     [("app", APP), ("schema_version", str(SCHEMA_VERSION)), ("created_at", utc_now())])
