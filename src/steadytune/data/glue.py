"""GLUE files in the official TSV layout: where they are and how they are read.
"""

from __future__ import annotations

import os
from pathlib import Path

from steadytune.data.files import (
    check_header,
    check_not_header,
    check_split,
    fail,
    make_split,
    read_text,
)
from steadytune.data.splits import Split
from steadytune.data.tasks import TASKS, DataError, get_task


def glue_dir(data_dir: str | None) -> Path:
    """The GLUE folder: ``data_dir`` if given, else ``$GLUE_DIR``, else ``$STEADYTUNE_DATA``.

    Either the GLUE folder itself (holding ``RTE/``, ``MRPC/`` ...) or a parent that
    contains ``glue/`` is accepted (so ``STEADYTUNE_DATA`` may name the data folder that
    holds ``glue/``).

    Raises:
        DataError: none is set, or the folder does not exist.
    """
    given = data_dir or os.environ.get("GLUE_DIR") or os.environ.get("STEADYTUNE_DATA")
    if not given:
        raise DataError("no GLUE directory given: pass --data-dir (config key data_dir) "
                        "or set the GLUE_DIR (or STEADYTUNE_DATA) environment variable")
    path = Path(given).expanduser()
    if not path.is_dir():
        raise DataError(f"GLUE directory {path} does not exist; pass --data-dir or set "
                        "GLUE_DIR to the folder holding RTE/, MRPC/, CoLA/ ...")
    has_tasks = any((path / spec.glue_name).is_dir() for spec in TASKS.values())
    if not has_tasks and (path / "glue").is_dir():
        return path / "glue"
    return path


def load_glue(task: str, split: str, data_dir: str | None = None) -> Split:
    """Read ``<glue>/<TASK>/<split>.tsv`` in the official GLUE format.

    Lines are split on tabs without quote handling (MRPC, QNLI, RTE and STS-B contain
    unbalanced ``"``), exactly like the GLUE processors.

    Args:
        task: task name (see :data:`TASKS`).
        split: ``train`` or ``dev``.
        data_dir: GLUE folder or its parent; default ``$GLUE_DIR``.

    Returns:
        The split, labels as GLUE class ids (float32 scores for STS-B).

    Raises:
        DataError: missing file, not UTF-8, empty file, missing or duplicate header column,
            the header repeated mid-file, wrong column count, unknown label, empty text or
            non-numeric score.
    """
    spec = get_task(task)
    check_split(split)
    task_dir = glue_dir(data_dir) / spec.glue_name
    path = task_dir / f"{split}.tsv"
    if not path.is_file():
        where = "file" if task_dir.is_dir() else f"task directory {task_dir} (and file)"
        raise DataError(f"{where} {path} not found; the GLUE folder must hold "
                        f"{spec.glue_name}/{{train,dev}}.tsv as written by download_glue_data.py "
                        "(pass --data-dir or set GLUE_DIR)")
    # Split lines on LF only, so a stray CR or U+2028 inside text stays text. Blank lines
    # are skipped (a trailing empty line is common in hand-edited copies). read_text drops
    # the UTF-8 BOM that MRPC starts with.
    lines = [(n, line.rstrip("\r")) for n, line in enumerate(read_text(path).split("\n"), start=1)
             if line.strip()]
    if not lines:
        raise DataError(f"{path}: file is empty")
    rows = [(n, line.split("\t")) for n, line in lines]
    header = spec.headerless_columns is None
    if header:
        columns, rows = rows[0][1], rows[1:]
        check_header(path, lines[0][0], columns)
        if not rows:
            raise DataError(f"{path}: file has a header but no rows")
    else:
        columns = list(spec.headerless_columns)
    wanted = [*spec.text_columns, spec.label_column]
    for name in wanted:
        if name not in columns:
            raise fail(path, lines[0][0], f"header lacks column {name!r} "
                        f"(found: {', '.join(columns)})")
    pos = [columns.index(name) for name in wanted]
    records = []
    for n, fields in rows:
        if header:
            check_not_header(path, n, fields, columns)
        if len(fields) != len(columns):
            raise fail(path, n, f"expected {len(columns)} tab-separated columns, found {len(fields)}")
        records.append((n, [fields[p] for p in pos[:-1]], fields[pos[-1]]))
    return make_split(path, records, spec.labels, regression=spec.is_regression)

