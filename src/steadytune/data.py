"""Task specifications, data loading (GLUE, custom files, hub) and seeded down-sampling.

Every loader returns a :class:`Split`: parallel lists of texts plus a NumPy label array.
Every problem with an input file raises :class:`DataError` whose message names the
file, the 1-based line number and what is wrong, so a user can fix the file directly.
Custom files and hub data sets are read by :mod:`steadytune.userdata`; tokenisation and
batching live in :mod:`steadytune.batching` (re-exported here).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from steadytune.config import RunConfig


class DataError(ValueError):
    """A missing or malformed data file; the message names file, line and problem."""


@dataclass(frozen=True)
class TaskSpec:
    """How to read one GLUE task and how to score it."""

    name: str
    """Short name used in configs, e.g. ``rte``."""
    glue_name: str
    """Directory name inside the GLUE folder, e.g. ``RTE``."""
    text_columns: tuple[str, ...]
    """One or two column names holding the text(s)."""
    label_column: str
    """Column name holding the label (or the regression score)."""
    labels: tuple[str, ...] | None
    """Label strings in class-id order (GLUE/HF convention); None for regression."""
    metric: str
    """Default metric: the one that decides 'best' and 'failed'."""
    metrics: tuple[str, ...]
    """All metrics reported for the task."""
    headerless_columns: tuple[str, ...] | None = None
    """Column names for files without a header line (CoLA train/dev); None = header."""

    @property
    def is_regression(self) -> bool:
        """True for score-valued tasks (STS-B)."""
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output size of the classifier head (1 for regression)."""
        return 1 if self.labels is None else len(self.labels)


_NLI = ("entailment", "not_entailment")
_BINARY = ("0", "1")

TASKS: dict[str, TaskSpec] = {
    "rte": TaskSpec("rte", "RTE", ("sentence1", "sentence2"), "label", _NLI, "acc", ("acc",)),
    "mrpc": TaskSpec("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", _BINARY, "f1",
                     ("acc", "f1", "acc_and_f1")),
    # CoLA train/dev have no header: source, label, original acceptability mark, sentence.
    "cola": TaskSpec("cola", "CoLA", ("sentence",), "label", _BINARY, "mcc", ("mcc", "acc"),
                     headerless_columns=("source", "label", "mark", "sentence")),
    "sst2": TaskSpec("sst2", "SST-2", ("sentence",), "label", _BINARY, "acc", ("acc",)),
    "stsb": TaskSpec("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, "pearson",
                     ("pearson", "spearmanr", "corr")),
    "qnli": TaskSpec("qnli", "QNLI", ("question", "sentence"), "label", _NLI, "acc", ("acc",)),
}

SPLITS = ("train", "dev")


def get_task(name: str) -> TaskSpec:
    """Look up a GLUE task by name, case-insensitively (``SST-2`` and ``sts-b`` work too).

    Raises:
        DataError: unknown task; the message lists the valid names.
    """
    key = name.strip().lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)} (or 'custom')")
    return TASKS[key]


@dataclass
class Split:
    """One split of a data set: texts, labels and where they came from."""

    texts_a: list[str]
    texts_b: list[str] | None
    labels: np.ndarray
    """int64 class ids, or float32 scores for regression."""
    source: str
    """The file (or hub id) the split was read from, for messages and provenance."""
    label_names: tuple[str, ...] | None
    """Label strings in class-id order; None for regression."""

    def __post_init__(self) -> None:
        other = self.texts_a if self.texts_b is None else self.texts_b
        sizes = {len(self.texts_a), len(self.labels), len(other)}
        if len(sizes) != 1:
            raise ValueError(f"inconsistent split sizes {sorted(sizes)} for {self.source}")

    def __len__(self) -> int:
        return len(self.texts_a)

    @property
    def is_regression(self) -> bool:
        """True when the labels are float scores."""
        return self.label_names is None

    def subset(self, idx: np.ndarray) -> Split:
        """A new split holding the examples at positions ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        pick = idx.tolist()
        texts_b = None if self.texts_b is None else [self.texts_b[i] for i in pick]
        return Split([self.texts_a[i] for i in pick], texts_b, self.labels[idx], self.source,
                     self.label_names)


def _fail(path: Path | str, line: int, problem: str) -> DataError:
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
        raise _fail(path, line, f"not valid UTF-8 at byte offset {e.start} (0x{raw[e.start]:02x}); "
                    "re-save the file as UTF-8") from None
    return text.removeprefix("\ufeff")


def _check_header(path: Path | str, line: int, header: list[str]) -> None:
    """Refuse a column name given twice: a reader would silently use the first one."""
    seen: set[str] = set()
    for name in header:
        if name.strip() and name in seen:
            raise _fail(path, line, f"duplicate column {name!r} in the header")
        seen.add(name)


def _check_not_header(path: Path | str, line: int, fields: list[str], header: list[str]) -> None:
    """Refuse a data row that repeats the header (files concatenated, BOM and all)."""
    if [f.replace("\ufeff", "").strip() for f in fields] == [h.strip() for h in header]:
        raise _fail(path, line, "repeats the header row (concatenated files?); delete that line")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")


# ----------------------------------------------------------------------------- GLUE


def glue_dir(data_dir: str | None) -> Path:
    """The GLUE folder: ``data_dir`` if given, else ``$GLUE_DIR``.

    Either the GLUE folder itself (holding ``RTE/``, ``MRPC/`` ...) or a parent that
    contains ``glue/`` is accepted.

    Raises:
        DataError: neither is set, or the folder does not exist.
    """
    given = data_dir or os.environ.get("GLUE_DIR")
    if not given:
        raise DataError("no GLUE directory given: pass --data-dir (config key data_dir) "
                        "or set the GLUE_DIR environment variable")
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
    _check_split(split)
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
        _check_header(path, lines[0][0], columns)
        if not rows:
            raise DataError(f"{path}: file has a header but no rows")
    else:
        columns = list(spec.headerless_columns)
    wanted = [*spec.text_columns, spec.label_column]
    for name in wanted:
        if name not in columns:
            raise _fail(path, lines[0][0], f"header lacks column {name!r} "
                        f"(found: {', '.join(columns)})")
    pos = [columns.index(name) for name in wanted]
    records = []
    for n, fields in rows:
        if header:
            _check_not_header(path, n, fields, columns)
        if len(fields) != len(columns):
            raise _fail(path, n, f"expected {len(columns)} tab-separated columns, found {len(fields)}")
        records.append((n, [fields[p] for p in pos[:-1]], fields[pos[-1]]))
    return _make_split(path, records, spec.labels, regression=spec.is_regression)


def _make_split(path: Path | str, records: list[tuple[int, list[str], Any]],
                label_names: tuple[str, ...] | None, regression: bool = False) -> Split:
    """Check texts and labels of ``(line, texts, raw_label)`` records and build a Split."""
    n_texts = len(records[0][1])
    texts: list[list[str]] = [[] for _ in range(n_texts)]
    labels: list[float] = []
    label_ids = {} if label_names is None else {name: i for i, name in enumerate(label_names)}
    for line, row_texts, raw in records:
        for column, text in enumerate(row_texts):
            if not isinstance(text, str) or not text.strip():
                raise _fail(path, line, f"empty or non-string text in text column {column + 1}")
            texts[column].append(text)
        if regression:
            try:
                score = float(raw)
            except (TypeError, ValueError):
                raise _fail(path, line, f"score {raw!r} is not a number") from None
            if not math.isfinite(score):
                raise _fail(path, line, f"score {raw!r} is not finite")
            labels.append(score)
        else:
            key = _label_key(raw)
            if key not in label_ids:
                raise _fail(path, line, f"unknown label {key!r}; expected one of "
                            f"{', '.join(map(repr, label_ids))}")
            labels.append(label_ids[key])
    return Split(texts[0], texts[1] if n_texts == 2 else None,
                 np.asarray(labels, dtype=np.float32 if regression else np.int64), str(path),
                 None if regression else label_names)


def _label_key(raw: Any) -> str:
    # JSON labels may be numbers or booleans; compare them as the strings users write.
    if isinstance(raw, bool):
        return str(raw).lower()
    return "" if raw is None else str(raw).strip()


def load_split(cfg: RunConfig, split: str) -> Split:
    """Load ``split`` of the data set a run configuration names.

    ``cfg.task`` is a GLUE task (read from ``cfg.data_dir``), ``custom`` (read from
    ``cfg.data_file`` with ``cfg.text_columns`` / ``cfg.label_column``) or
    ``hub:<name>[:<config>]`` (needs ``datasets``). No down-sampling is applied here.

    Raises:
        DataError: see :func:`load_glue` and :mod:`steadytune.userdata`.
    """
    # userdata builds on this module, so it is imported here rather than at the top.
    from steadytune.userdata import load_custom, load_hub

    if cfg.task == "custom":
        if not cfg.data_file:
            raise DataError("task=custom needs data_file=<directory, file or {split} pattern>")
        return load_custom(cfg.data_file, split, cfg.text_columns, cfg.label_column)
    if cfg.task.startswith("hub:"):
        name, _, config = cfg.task[len("hub:"):].partition(":")
        return load_hub(name, split, cfg.text_columns, cfg.label_column, config or None)
    return load_glue(cfg.task, split, cfg.data_dir)


def validate_data(cfg: RunConfig) -> None:
    """Read the train and dev splits ``cfg`` names, exactly as each run will, and discard them.

    A sweep calls this once per data set before it writes anything, so a missing or
    non-UTF-8 file, a duplicated or repeated header or a bad row stops the whole sweep with
    one message naming file and line, instead of failing every run. Hub data sets are not
    read here (that needs the network); their runs report their own errors.

    Raises:
        DataError: see :func:`load_split`.
    """
    if cfg.task.startswith("hub:"):
        return
    for split in SPLITS:
        load_split(cfg, split)


# ----------------------------------------------------------------------------- sampling


def downsample(split: Split, n: int, seed: int, stratify: bool = True) -> Split:
    """A seeded random subset of ``n`` examples, in their original order.

    Stratified sampling gives every class ``n * count / total`` examples, rounded by
    largest remainder so the sizes sum to exactly ``n``. Regression splits are never
    stratified.

    Args:
        split: the full split.
        n: subset size; ``n >= len(split)`` returns ``split`` itself.
        seed: seed of ``numpy.random.default_rng``; same seed, same subset.
        stratify: keep the label proportions (classification only).

    Raises:
        ValueError: ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"downsample size must be >= 1, got {n}")
    total = len(split)
    if n >= total:
        return split
    rng = np.random.default_rng(seed)
    if not stratify or split.is_regression:
        return split.subset(np.sort(rng.choice(total, size=n, replace=False)))
    classes, counts = np.unique(split.labels, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    # Largest remainder; ties go to the lower class id (stable sort) for determinism.
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[: n - int(quota.sum())]] += 1
    chosen = [rng.choice(np.flatnonzero(split.labels == c), size=int(k), replace=False)
              for c, k in zip(classes, quota)]
    return split.subset(np.sort(np.concatenate(chosen)))


from steadytune.batching import Encoded, batch_order, collate, encode, eval_batches  # noqa: E402

__all__ = [
    "DataError", "TaskSpec", "TASKS", "SPLITS", "get_task", "Split", "glue_dir", "load_glue",
    "load_split", "validate_data", "read_text", "downsample",
    "Encoded", "encode", "batch_order", "collate", "eval_batches",
]
