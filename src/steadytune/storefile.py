"""The study file format: SQLite schema, version, and how a study file is recognised.

:mod:`steadytune.store` reads and writes studies through these; nothing here writes to a
file that is not already a steadytune study (a foreign file is inspected read-only and
refused untouched).
"""

from __future__ import annotations

import contextlib
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
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def connect_readonly(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                           isolation_level=None, check_same_thread=False)


def inspect_file(path: Path) -> bool:
    """Whether ``path`` is an existing study (False: missing, empty, or no tables yet).

    Reads only, so a foreign file is never modified.

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
    try:
        with contextlib.closing(connect_readonly(path)) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable steadytune study ({exc}); "
                         "the file was left untouched") from None
    if not tables:
        return False  # created but killed before the schema was committed
    if meta.get("app") != APP:
        raise StoreError(f"{path} is an SQLite database but not a steadytune study (no "
                         f"'{APP}' entry in a meta table); the file was left untouched")
    if int(meta.get("schema_version", "0")) > SCHEMA_VERSION:
        raise StoreError(f"{path} has study schema version {meta['schema_version']}; this "
                         f"steadytune reads version <= {SCHEMA_VERSION}; upgrade steadytune")
    return True


def create_schema(conn: sqlite3.Connection) -> None:
    # executescript() would COMMIT on its own; one statement at a time keeps one transaction.
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                     [("app", APP), ("schema_version", str(SCHEMA_VERSION)), ("created_at", utc_now())])
