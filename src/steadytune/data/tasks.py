"""The GLUE tasks steadytune knows: their files, columns, labels and metrics.

:class:`TaskSpec` is inert data; :data:`TASKS` is the literal table from task name to
spec (a new GLUE-format task is one more entry). :class:`DataError` is the one error type
of the data layer: its message names the file, the 1-based line and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass


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



def is_glue_task(name: str) -> bool:
    """Whether ``name`` names a GLUE task rather than ``custom`` or ``hub:<name>`` data."""
    return name != "custom" and not name.startswith("hub:")
