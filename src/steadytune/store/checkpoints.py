"""The model checkpoints a sweep kept (``--keep-checkpoints``), as listed in its study.

The retention rule and the folders themselves are :mod:`steadytune.sweeps.checkpoints`;
this module reads and writes the study's ``checkpoints`` table (one row per kept run).
Studies written before the table existed have none: reading gives an empty list, and
the first write creates it.
"""

from __future__ import annotations

import sqlite3
from typing import Iterable

import pandas as pd

from steadytune.store.file import CHECKPOINTS_TABLE, utc_now
from steadytune.store.study import Study

CHECKPOINT_COLUMNS = ["run_id", "path", "failed", "task", "model", "recipe", "grid", "seed"]
"""Columns of :func:`list_checkpoints`."""


def list_checkpoints(study: Study) -> pd.DataFrame:
    """The model checkpoints a sweep kept, one row per run.

    Args:
        study: an open study (read-only is enough).

    Returns:
        ``CHECKPOINT_COLUMNS``: ``path`` is the absolute ``save_pretrained`` folder
        (loadable with ``AutoModelForSequenceClassification.from_pretrained``),
        ``failed`` the run's verdict; sorted by task, model, recipe, grid, failed, seed.
        Empty for a study without checkpoints.
    """
    def read(conn: sqlite3.Connection) -> pd.DataFrame | None:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='checkpoints'")
        if has.fetchone() is None:
            return None
        return pd.read_sql_query(
            "SELECT c.run_id, c.path, c.failed, r.task, r.model, r.recipe, r.grid, r.seed FROM checkpoints c "
            "JOIN runs r USING (run_id) ORDER BY r.task, r.model, r.recipe, r.grid, c.failed, r.seed", conn)

    df = study.transaction(read, write=False)
    if df is None:
        return pd.DataFrame(columns=CHECKPOINT_COLUMNS)
    base = study.path.resolve().parent
    df["path"] = [str(base / p) for p in df["path"]]  # absolute paths stay as they are
    df["failed"] = df["failed"].astype(bool)
    return df


def set_checkpoints(study: Study, scope: Iterable[str], kept: dict[str, tuple[str, bool]]) -> None:
    """Make ``kept`` the checkpoints listed for the runs in ``scope`` (one transaction).

    Args:
        study: an open, writable study.
        scope: run ids whose rows are replaced; rows of other runs are left alone.
        kept: ``run_id -> (path, failed)``; a relative path is relative to the
            folder of the study file.

    Raises:
        StoreError: the study was opened read-only.
    """
    drop = [(r,) for r in set(scope) - set(kept)]
    rows = [(r, str(path), int(bool(failed)), utc_now()) for r, (path, failed) in kept.items()]

    def write(conn: sqlite3.Connection) -> None:
        conn.execute(CHECKPOINTS_TABLE)
        conn.executemany("DELETE FROM checkpoints WHERE run_id=?", drop)
        conn.executemany("INSERT INTO checkpoints (run_id, path, failed, created_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT(run_id) DO UPDATE SET path=excluded.path, failed=excluded.failed",
                         rows)

    study.transaction(write)


__all__ = ["CHECKPOINT_COLUMNS", "list_checkpoints", "set_checkpoints"]
