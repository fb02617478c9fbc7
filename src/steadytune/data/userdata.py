"""User data sets: custom CSV/TSV/JSONL files (``task=custom``) and Hugging Face hub data sets.

Both build a :class:`steadytune.data.Split` through the same checks as the GLUE reader, so
every problem raises :class:`steadytune.data.DataError` naming file (or hub split), 1-based
line (row) and what is wrong. Re-exported by :mod:`steadytune.data`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from steadytune.data.files import (
    check_header,
    check_not_header,
    check_split,
    fail,
    label_key,
    make_split,
    read_text,
)
from steadytune.data.splits import Split
from steadytune.data.tasks import DataError

# ----------------------------------------------------------------------------- custom

CUSTOM_SUFFIXES = (".csv", ".tsv", ".jsonl")


def parse_text_columns(text_columns: str) -> tuple[str, ...]:
    """``"a"`` -> ``("a",)``, ``"a,b"`` -> ``("a", "b")``.

    Raises:
        DataError: not one or two non-empty names.
    """
    names = tuple(part.strip() for part in text_columns.split(","))
    if not 1 <= len(names) <= 2 or not all(names):
        raise DataError(f"text_columns={text_columns!r} must be one column name or two "
                        "joined by a comma (e.g. 'premise,hypothesis')")
    return names


def is_single_file(path: str) -> bool:
    """Whether ``data_file`` names one file (not a directory, not a ``{split}`` pattern).

    A single file holds both splits: the run carves a seeded dev split out of it
    (:func:`steadytune.data.loading.single_file_split`).
    """
    return "{split}" not in path and Path(path).expanduser().is_file()


def custom_file(path: str, split: str) -> Path:
    """Resolve the file of ``split`` for ``task=custom``.

    ``path`` is one of
      * a directory holding ``train.<ext>`` and ``dev.<ext>`` (ext csv, tsv or jsonl);
      * a pattern with ``{split}``, e.g. ``data/{split}.jsonl``;
      * a single file: its rows (asking for ``dev`` here is an error, because evaluating
        on the training data would be silently wrong; a run carves a dev split out of
        it instead, see :func:`steadytune.data.loading.single_file_split`).

    Raises:
        DataError: missing, ambiguous or unsupported file; the message says how to fix it.
    """
    check_split(split)
    hint = ("give a directory with train.csv/.tsv/.jsonl and dev.<ext>, or a pattern such "
            "as data/{split}.csv (config key data_file)")
    if "{split}" in path:
        file = Path(path.replace("{split}", split)).expanduser()
    elif Path(path).expanduser().is_dir():
        folder = Path(path).expanduser()
        found = [folder / f"{split}{ext}" for ext in CUSTOM_SUFFIXES
                 if (folder / f"{split}{ext}").is_file()]
        if not found:
            raise DataError(f"no {split}.csv, {split}.tsv or {split}.jsonl in {folder}; {hint}")
        if len(found) > 1:
            raise DataError(f"several {split} files in {folder}: "
                            f"{', '.join(f.name for f in found)}; keep one")
        file = found[0]
    else:
        file = Path(path).expanduser()
        if file.is_file() and split != "train":
            raise DataError(f"data_file {file} is a single file: load it as 'train' and carve a "
                            f"{split} split out of it (steadytune.data.loading.single_file_split), "
                            f"or {hint}")
    if not file.is_file():
        raise DataError(f"data file {file} not found; {hint}")
    if file.suffix.lower() not in CUSTOM_SUFFIXES:
        raise DataError(f"{file}: unsupported file type {file.suffix!r}; use .csv, .tsv or .jsonl")
    return file


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys silently; a repeated key is a broken line.
    row: dict[str, Any] = {}
    for key, value in pairs:
        if key in row:
            raise DataError(f"duplicate key {key!r}")
        row[key] = value
    return row


def _jsonl_records(file: Path, columns: tuple[str, ...],
                   label_column: str) -> list[tuple[int, list[Any], Any]]:
    """``(line, texts, raw_label)`` of each non-blank line of a JSONL file."""
    records = []
    # Lines end at LF only (as GLUE): a raw U+2028 inside a JSON string stays text.
    for n, line in enumerate(read_text(file).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            raise fail(file, n, f"invalid JSON ({e.msg})") from None
        except DataError as e:
            raise fail(file, n, str(e)) from None
        if not isinstance(row, dict):
            raise fail(file, n, "each JSONL line must be a JSON object")
        for name in (*columns, label_column):
            if name not in row:
                raise fail(file, n, f"missing key {name!r} (found: {', '.join(row)})")
        label = row[label_column]
        if isinstance(label, (list, dict)):  # would become a class named "[1, 2]"
            raise fail(file, n, f"label {label!r} must be a string, number or boolean")
        records.append((n, [row[c] for c in columns], label))
    return records


def _table_records(file: Path, columns: tuple[str, ...],
                   label_column: str) -> list[tuple[int, list[Any], Any]]:
    """``(line, texts, raw_label)`` of each non-blank row of a CSV or TSV file with a header."""
    wanted, records = (*columns, label_column), []
    # TSV: quoting off, like GLUE (unbalanced quotes are common); CSV: standard quoting.
    tsv = file.suffix.lower() == ".tsv"
    reader = csv.reader(io.StringIO(read_text(file), newline=""), delimiter="\t" if tsv else ",",
                        quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
    header = next(reader, [])
    if not any(h.strip() for h in header):
        raise DataError(f"{file}: file is empty (no header line)")
    check_header(file, 1, header)
    for name in wanted:
        if name not in header:
            raise fail(file, 1, f"header lacks column {name!r} (found: {', '.join(header)})")
    pos = [header.index(name) for name in wanted]
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue
        # reader.line_num is the physical line where this record ended.
        check_not_header(file, reader.line_num, fields, header)
        if len(fields) != len(header):
            raise fail(file, reader.line_num, f"expected {len(header)} columns, found {len(fields)}")
        records.append((reader.line_num, [fields[p] for p in pos[:-1]], fields[pos[-1]]))
    return records


def _custom_records(file: Path, columns: tuple[str, ...],
                    label_column: str) -> list[tuple[int, list[Any], Any]]:
    """``(line, texts, raw_label)`` of a CSV/TSV (header required) or JSONL file."""
    if file.suffix.lower() == ".jsonl":
        records = _jsonl_records(file, columns, label_column)
    else:
        records = _table_records(file, columns, label_column)
    if not records:
        raise DataError(f"{file}: file is empty (no data rows)")
    return records


def _sorted_labels(raw: list[Any]) -> tuple[str, ...]:
    # Integer-like labels sort numerically ("2" before "10"); others alphabetically.
    keys = {label_key(value) for value in raw} - {""}
    try:
        return tuple(sorted(keys, key=int))
    except ValueError:
        return tuple(sorted(keys))


def load_custom(path: str, split: str, text_columns: str = "text", label_column: str = "label",
                label_names: tuple[str, ...] | None = None) -> Split:
    """Read a user data set from CSV, TSV (quoting off) or JSONL.

    Args:
        path: directory, ``{split}`` pattern or single train file (see :func:`custom_file`).
        split: ``train`` or ``dev``.
        text_columns: ``"a"`` or ``"a,b"`` (sentence pairs).
        label_column: column holding the label strings.
        label_names: labels in class-id order. When None, the ids are the sorted label
            set of the **train** file (numeric order for integer labels), so train and
            dev always agree even if dev lacks a class.

    Returns:
        The split with int64 class ids.

    Raises:
        DataError: missing file, not UTF-8, empty file, missing or duplicate column (or
            JSON key), the header repeated mid-file, wrong column count, empty text, a
            list or object as label, or a label outside ``label_names`` / the train labels.
    """
    columns = parse_text_columns(text_columns)
    file = custom_file(path, split)
    records = _custom_records(file, columns, label_column)
    if label_names is None:
        train = records if split == "train" else _custom_records(
            custom_file(path, "train"), columns, label_column)
        label_names = _sorted_labels([raw for _, _, raw in train])
    return make_split(file, records, tuple(label_names))


# ----------------------------------------------------------------------------- hub


def load_hub(name: str, split: str, text_columns: str = "text", label_column: str = "label",
             config: str | None = None) -> Split:
    """Load a Hugging Face hub data set (optional ``datasets`` package; needs network or cache).

    Args:
        name: hub id, e.g. ``nyu-mll/glue``; ``config``: its subset, e.g. ``rte``.
        split: ``train`` or ``dev`` (read as the hub's ``validation`` split).
        text_columns, label_column: as in :func:`load_custom`. ``ClassLabel`` names are
            kept, float labels mean regression, other labels are sorted per split.

    Raises:
        DataError: ``datasets`` missing, data set unreachable, missing column, bad row.
    """
    check_split(split)
    try:
        import datasets  # optional extra ('hub'): only hub tasks need it
    except ImportError:
        raise DataError(f"hub:{name} needs the optional 'datasets' package: "
                        "pip install 'steadytune[hub]'") from None
    hub_split = "validation" if split == "dev" else split
    source = f"hub:{name}" + (f":{config}" if config else "") + f"[{hub_split}]"
    try:
        ds = datasets.load_dataset(name, config, split=hub_split)
    except Exception as e:  # network, auth and missing-split errors all look different
        raise DataError(f"could not load {source}: {e}. Offline? Set HF_DATASETS_OFFLINE=1 with "
                        "a filled cache, or export the data to CSV/JSONL and use task=custom") from e
    columns = parse_text_columns(text_columns)
    missing = [c for c in (*columns, label_column) if c not in ds.column_names]
    if missing or len(ds) == 0:
        raise DataError(f"{source}: empty or lacks columns {missing} (found: {ds.column_names})")
    raw, feature = ds[label_column], ds.features[label_column]
    regression, label_names = False, None
    if isinstance(feature, datasets.ClassLabel):  # -1 marks unlabelled test rows
        label_names = tuple(feature.names)
        raw = [feature.names[i] if i >= 0 else "<unlabelled>" for i in raw]
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        regression = True
    else:
        label_names = _sorted_labels(raw)
    texts = [ds[c] for c in columns]
    # "Line numbers" in messages are 1-based row numbers of the hub split.
    records = [(i + 1, [t[i] for t in texts], raw[i]) for i in range(len(raw))]
    return make_split(source, records, label_names, regression=regression)
