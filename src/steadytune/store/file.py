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
SCHEMA_VERSION = 2
"""2 added the ``stopped`` status (a run the doomed-run guard ended); :func:`upgrade` brings a
version-1 study there when it is opened for writing."""
STATUSES = ("pending", "running", "finished", "diverged", "error", "stopped")
DONE_STATUSES = ("finished", "diverged", "stopped")
"""Statuses of a run with a result: a resumed sweep skips it."""
_SQLITE_MAGIC = b"SQLite format 3\x00"

# Added after schema version 1 shipped; older studies get it on their first checkpoint
# write (CREATE IF NOT EXISTS), and readers treat a missing table as "no checkpoints".
CHECKPOINTS_TABLE = """
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT PRIMARY KEY REFERENCES runs(run_id) ON DELETE CASCADE,
    path TEXT NOT NULL, failed INTEGER NOT NULL, created_at TEXT NOT NULL);
"""

_RUNS_COLUMNS = f"""(
    run_id TEXT PRIMARY KEY, task TEXT NOT NULL, model TEXT NOT NULL, recipe TEXT NOT NULL,
    grid TEXT NOT NULL DEFAULT '', seed INTEGER NOT NULL, config_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {STATUSES!r}),
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT, metric TEXT, final REAL, best REAL,
    baseline REAL, failed INTEGER, failed_best INTEGER, result_json TEXT, wall_seconds REAL,
    created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT)"""
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs {_RUNS_COLUMNS};
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


def schema_version(conn: sqlite3.Connection) -> int:
    """The study's schema version (its ``meta`` entry)."""
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def upgrade(conn: sqlite3.Connection) -> bool:
    """Bring a version-1 study to :data:`SCHEMA_VERSION` in one transaction; a no-op when current.

    Version 2 only widens the ``runs.status`` CHECK constraint by ``stopped``. SQLite cannot
    alter a constraint, so the ``runs`` table is rebuilt as SQLite's documentation
    prescribes: foreign keys off (else dropping ``runs`` would cascade into the curves,
    diagnostics and logs), a new table with the new constraint, every row copied column by
    column, the old table dropped, the new one renamed, the foreign keys checked, then the
    version written, all in one ``BEGIN IMMEDIATE`` transaction: a kill leaves version 1
    untouched. No stored row changes; readers of both versions read the same tables.

    Args:
        conn: a writable connection outside a transaction (``isolation_level=None``).

    Returns:
        Whether the file was upgraded (False: already current, or another process did it).

    Raises:
        StoreError: the rebuilt table fails the foreign-key check (nothing is written).
    """
    if schema_version(conn) >= SCHEMA_VERSION:
        return False
    conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: set it before BEGIN
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = _rebuild_runs(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
    return done


def _rebuild_runs(conn: sqlite3.Connection) -> bool:
    """The table rebuild of :func:`upgrade`, inside its transaction."""
    if schema_version(conn) >= SCHEMA_VERSION:  # another driver upgraded it while we waited
        return False
    columns = ", ".join(f'"{r[1]}"' for r in conn.execute("PRAGMA table_info(runs)"))
    conn.execute(f"CREATE TABLE runs_v{SCHEMA_VERSION} {_RUNS_COLUMNS}")
    conn.execute(f"INSERT INTO runs_v{SCHEMA_VERSION} ({columns}) SELECT {columns} FROM runs ORDER BY rowid")
    conn.execute("DROP TABLE runs")
    conn.execute(f"ALTER TABLE runs_v{SCHEMA_VERSION} RENAME TO runs")
    broken = conn.execute("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise StoreError(f"upgrading the study would orphan {len(broken)} rows; nothing was changed")
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('upgraded_at', ?)", (utc_now(),))
    return True
