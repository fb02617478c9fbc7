"""Study-wide settings: decisions taken once for a whole study and kept in its ``meta`` table.

A study resumed on another day, by another driver or on another machine must plan the
same runs. Some defaults depend on the machine (``precision=auto``); the first driver
that plans the study records what it chose, and every later one reads it back
(:func:`setting_once`: the first writer wins, so two drivers starting together agree).
"""

from __future__ import annotations

import sqlite3

from steadytune.store.study import Study

PREFIX = "setting:"
"""Key prefix of study settings in ``meta`` (apart from the file-format entries)."""


def read_setting(study: Study, name: str) -> str | None:
    """The value of setting ``name`` in ``study``, or None if it was never recorded."""

    def read(conn: sqlite3.Connection) -> str | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (PREFIX + name,)).fetchone()
        return None if row is None else str(row[0])

    return study.transaction(read, write=False)


def setting_once(study: Study, name: str, value: str) -> str:
    """Record ``value`` for setting ``name`` unless the study has one already; return the stored value.

    Raises:
        StoreError: the study was opened read-only.
    """

    def write(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (PREFIX + name, value))
        return str(conn.execute("SELECT value FROM meta WHERE key = ?", (PREFIX + name,)).fetchone()[0])

    return study.transaction(write)


def has_runs(study: Study) -> bool:
    """Whether any run was ever planned in ``study``."""
    return study.transaction(lambda conn: conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None,
                             write=False)


__all__ = ["PREFIX", "has_runs", "read_setting", "setting_once"]
