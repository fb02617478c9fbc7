"""Reading a study's tidy tables: runs, curves and diagnostics, over an open connection.

:class:`steadytune.store.study.Study` answers ``runs_table()``, ``curves_table()`` and
``diagnostics_table()`` with these functions; functions that read several tables in one
snapshot (:mod:`steadytune.store.export`, :mod:`steadytune.store.records`) call them
inside ``Study.transaction(fn, write=False)``. Nothing here writes.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

import pandas as pd

from steadytune.config.run import format_value, identity
from steadytune.store.file import DONE_STATUSES

RUN_COLUMNS = ["run_id", "task", "model", "recipe", "grid", "seed", "metric", "final", "best",
               "baseline", "status", "failed", "wall_seconds"]
"""Columns of :meth:`Study.runs_table`: what :mod:`steadytune.analyses.stats` needs, plus bookkeeping."""
CURVE_COLUMNS = ["run_id", "step", "epoch", "split", "name", "value"]
"""Columns of :meth:`Study.curves_table`."""
DIAG_COLUMNS = ["run_id", "step", "group", "name", "value"]
"""Columns of :meth:`Study.diagnostics_table`."""

# Each run's seed streams as the seed they come from (a stream seed that is not set is the
# run seed: derive_seeds), its repeat index and its attempt (the guard's restarts); configs
# stored before these keys lack them.
_STREAM_COLUMNS = ("head_seed", "data_seed", "dropout_seed")
WITHIN_COLUMNS = [*_STREAM_COLUMNS, "repeat", "attempt"]
"""Columns of :meth:`Study.runs_table` after ``seed`` that tell apart runs of one group and seed."""
_RUN_EXTRAS = ("".join(f"COALESCE(json_extract(config_json, '$.{k}'), seed) AS {k}, " for k in _STREAM_COLUMNS)
               + "COALESCE(json_extract(config_json, '$.repeat'), 0) AS repeat, "
               "COALESCE(json_extract(config_json, '$.attempt'), 1) AS attempt, "
               "json_extract(result_json, '$.data.label_entropy') AS label_entropy, "
               "json_extract(result_json, '$.best_step') AS best_step, "
               "json_extract(result_json, '$.steps') AS steps, "
               "json_extract(result_json, '$.total_steps') AS total_steps, "
               "(SELECT c.value FROM curves c WHERE c.run_id = runs.run_id AND c.split = 'train' "
               "AND c.name = 'loss' ORDER BY c.step DESC LIMIT 1) AS train_loss")
_NUMERIC = ("final", "best", "baseline", "wall_seconds", "train_loss", "label_entropy", "best_step", "steps",
            "total_steps")
_CHUNK = 500  # run ids per `IN (...)` query, well under SQLite's bound-parameter limit


def read_runs(conn: sqlite3.Connection, all_statuses: bool = False) -> pd.DataFrame:
    """One row per run: ``RUN_COLUMNS`` plus ``head_seed, data_seed, dropout_seed, repeat, attempt``
    (:data:`WITHIN_COLUMNS`), ``label_entropy``, ``best_step``, ``steps``, ``total_steps``,
    ``train_loss`` and ``guard``.

    See :meth:`steadytune.store.study.Study.runs_table` for the meaning of the columns.

    Args:
        conn: a connection to a study.
        all_statuses: also include pending/running/error rows.

    Returns:
        The runs, sorted by task, model, recipe, grid (the group label), seed, then the
        stream seeds and the repeat index.
    """
    where = "" if all_statuses else f"WHERE status IN {DONE_STATUSES!r}"
    df = pd.read_sql_query(f"SELECT {', '.join(RUN_COLUMNS)}, {_RUN_EXTRAS}, config_json FROM runs "
                           f"{where} ORDER BY task, model, recipe, grid, seed, {', '.join(WITHIN_COLUMNS)}", conn)
    configs = [json.loads(c) for c in df.pop("config_json")]
    df["grid"] = group_labels(df, configs)
    df["guard"] = pd.Series([str(c.get("guard", "flag")) for c in configs], dtype=object)
    df = df.sort_values(["task", "model", "recipe", "grid", "seed", *WITHIN_COLUMNS], kind="stable",
                        ignore_index=True)
    for col in WITHIN_COLUMNS:
        df[col] = df[col].astype("int64")
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    df["failed"] = df["failed"].astype("boolean")
    return df


def read_curves(conn: sqlite3.Connection, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
    """Tidy curves (``CURVE_COLUMNS``) of ``run_ids`` (None: every run), in insertion order.

    Args:
        conn: a connection to a study.
        run_ids: the runs to read; unknown ids give no rows.

    Returns:
        One row per curve point; ``value`` is float64 (NaN where none was stored).
    """
    return _children(conn, "curves", CURVE_COLUMNS, run_ids)


def read_diagnostics(conn: sqlite3.Connection, run_ids: Iterable[str] | None = None,
                     names: Iterable[tuple[str, str]] | None = None) -> pd.DataFrame:
    """Tidy diagnostics (``DIAG_COLUMNS``) of ``run_ids`` (None: every run), in insertion order.

    Args:
        conn: a connection to a study.
        run_ids: the runs to read; unknown ids give no rows.
        names: only these ``(group, name)`` diagnostics (None: all).

    Returns:
        One row per diagnostic value; ``value`` is float64 (NaN where none was stored).
    """
    where, params = "", []
    if names is not None:
        pairs = list(names)
        where = " AND (" + " OR ".join('("group"=? AND name=?)' for _ in pairs) + ")" if pairs else " AND 0"
        params = [v for pair in pairs for v in pair]
    return _children(conn, "diagnostics", DIAG_COLUMNS, run_ids, where, params)


def _children(conn: sqlite3.Connection, table: str, columns: list[str], run_ids: Iterable[str] | None,
              where: str = "", params: list[str] | None = None) -> pd.DataFrame:
    cols = ", ".join(f'"{c}"' for c in columns)
    sql = f"SELECT {cols} FROM {table} WHERE 1{where}"
    extra = list(params or [])
    if run_ids is None:
        parts = [pd.read_sql_query(f"{sql} ORDER BY rowid", conn, params=extra)]
    else:
        parts = [pd.read_sql_query(f"{sql} AND run_id IN ({','.join('?' * len(c))}) ORDER BY rowid",
                                   conn, params=[*extra, *c]) for c in chunks(list(run_ids))]
    parts = [p for p in parts if len(p)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    return df


def chunks(items: list[str]) -> list[list[str]]:
    """``items`` in slices short enough for one ``IN (?, ...)`` query each.

    Args:
        items: run ids (or any query parameters).

    Returns:
        Consecutive slices of at most 500 items (none for an empty list).
    """
    return [items[i:i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def group_labels(runs: pd.DataFrame, configs: list[dict[str, Any]]) -> list[str]:
    """The ``grid`` label of each run, made unique per distinct config identity.

    Within each (task, model, recipe, grid) group, runs whose :func:`~steadytune.config.run.identity`
    (the resolved config without seed and execution keys) differs get the keys that
    differ, ``key=value``, added to their label; a group of one identity keeps its label.

    Args:
        runs: rows with ``task, model, recipe, grid``.
        configs: the stored resolved config of each row, in order.

    Returns:
        One label per row of ``runs``, in order.
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


__all__ = [
    "CURVE_COLUMNS",
    "DIAG_COLUMNS",
    "RUN_COLUMNS",
    "WITHIN_COLUMNS",
    "chunks",
    "group_labels",
    "read_curves",
    "read_diagnostics",
    "read_runs",
]
