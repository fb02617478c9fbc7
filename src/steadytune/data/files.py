"""Reading text files safely: UTF-8 with the byte offset of a bad byte, header checks, and
building a :class:`~steadytune.data.splits.Split` from parsed records.

Shared by the GLUE reader (:mod:`steadytune.data.glue`) and the user-data readers
(:mod:`steadytune.data.userdata`); every problem is a :class:`DataError` naming file and line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from steadytune.data.splits import Split
from steadytune.data.tasks import SPLITS, DataError


def fail(path: Path | str, line: int, problem: str) -> DataError:
    return DataError(f"{path}, line {line}: {problem}")


def read_text(path: Path | str) -> str:
    """The text of a data file decoded as UTF-8, a leading byte-order mark dropped.

    Raises:
        DataError: the file is not valid UTF-8; the message names the 1-based line and the
            0-based byte offset of the first bad byte, and says to re-save the file as UTF-8.
    """
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")  # not utf-8-sig: its error offsets would skip the BOM
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise fail(path, line, f"not valid UTF-8 at byte offset {e.start} (0x{raw[e.start]:02x}); "
                    "re-save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def check_header(path: Path | str, line: int, header: list[str]) -> None:
    """Refuse a column name given twice: a reader would silently use the first one."""
    seen: set[str] = set()
    for name in header:
        if name.strip() and name in seen:
            raise fail(path, line, f"duplicate column {name!r} in the header")
        seen.add(name)


def check_not_header(path: Path | str, line: int, fields: list[str], header: list[str]) -> None:
    """Refuse a data row that repeats the header (files concatenated, BOM and all)."""
    if [f.replace("\ufeff", "").strip() for f in fields] == [h.strip() for h in header]:
        raise fail(path, line, "repeats the header row (concatenated files?); delete that line")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


def make_split(path: Path | str, records: list[tuple[int, list[str], Any]],
                label_names: tuple[str, ...] | None, regression: bool = False) -> Split:
    """Check texts and labels of ``(line, texts, raw_label)`` records and build a Split."""
    n_texts = len(records[0][1])
    texts: list[list[str]] = [[] for _ in range(n_texts)]
    labels: list[float] = []
    label_ids = {} if label_names is None else {name: i for i, name in enumerate(label_names)}
    for line, row_texts, raw in records:
        for column, text in enumerate(row_texts):
            if not isinstance(text, str) or not text.strip():
                raise fail(path, line, f"empty or non-string text in text column {column + 1}")
            texts[column].append(text)
        if regression:
            try:
                score = float(raw)
            except (TypeError, ValueError):
                raise fail(path, line, f"score {raw!r} is not a number") from None
            if not math.isfinite(score):
                raise fail(path, line, f"score {raw!r} is not finite")
            labels.append(score)
        else:
            key = label_key(raw)
            if key not in label_ids:
                raise fail(path, line, f"unknown label {key!r}; expected one of "
                            f"{', '.join(map(repr, label_ids))}")
            labels.append(label_ids[key])
    return Split(texts[0], texts[1] if n_texts == 2 else None,
                 np.asarray(labels, dtype=np.float32 if regression else np.int64), str(path),
                 None if regression else label_names)


def label_key(raw: Any) -> str:
    # JSON labels may be numbers or booleans; compare them as the strings users write.
    if isinstance(raw, bool):
        return str(raw).lower()
    return "" if raw is None else str(raw).strip()

