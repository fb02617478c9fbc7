"""Export a study to Parquet or CSV: runs (every status, with config and error), curves,
diagnostics; one file each, written atomically.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd

from steadytune.store.file import StoreError
from steadytune.store.study import Study
from steadytune.store.tables import read_curves, read_diagnostics, read_runs

_BOOKKEEPING = ("SELECT run_id, failed_best, attempts, error, config_json, created_at, started_at, "
                "finished_at FROM runs")


def export_study(study: Study, path: str | Path) -> list[Path]:
    """Write the runs (every status, with config and error) to ``path`` (.parquet/.csv).

    Curves go to ``<stem>.curves<suffix>`` beside it, and diagnostics (if any) to
    ``<stem>.diagnostics<suffix>``. The tables are read in one snapshot of the study, and
    each file is written atomically (a temporary file, then a rename).

    Args:
        study: an open study (read-only is enough).
        path: the runs file, ``.parquet`` or ``.csv``; its folder is created if needed.

    Returns:
        The files written: runs, curves, then diagnostics if there are any.

    Raises:
        StoreError: an unsupported suffix, or ``.parquet`` without pyarrow (the
            ``parquet`` extra); nothing is written then.
    """
    out = Path(path)
    if out.suffix not in (".parquet", ".csv"):
        raise StoreError(f"export to .parquet or .csv, not {out.name!r}")
    if out.suffix == ".parquet" and not parquet_available():
        raise StoreError(f"{out.name}: Parquet export needs pyarrow: pip install 'steadytune[parquet]' "
                         "(or export to .csv)")
    tables = study.transaction(_read_tables, write=False)
    return [_write_table(df, out.with_name(f"{out.stem}{tag}{out.suffix}")) for tag, df in tables.items()]


def parquet_available() -> bool:
    """Whether pyarrow, which pandas writes Parquet with, can be imported."""
    try:
        import pyarrow  # noqa: F401 - optional extra ('parquet'): only Parquet export needs it
    except ImportError:
        return False
    return True


def _read_tables(conn: sqlite3.Connection) -> dict[str, pd.DataFrame]:
    """File tag -> table: runs with their bookkeeping columns, curves, diagnostics if any."""
    runs = read_runs(conn, all_statuses=True)
    extra = pd.read_sql_query(_BOOKKEEPING, conn)
    tables = {"": runs.merge(extra, on="run_id", how="left"), ".curves": read_curves(conn)}
    diags = read_diagnostics(conn)
    if len(diags):
        tables[".diagnostics"] = diags
    return tables


def _write_table(df: pd.DataFrame, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if target.suffix == ".parquet":
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    tmp.replace(target)
    return target


__all__ = ["export_study", "parquet_available"]
