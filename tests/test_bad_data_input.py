"""Bad data files meet the user as one-line DataErrors naming file and line, before anything is written.

Three defects a bad-input probe found: bytes that are not UTF-8, a column named twice in a
header, and a header repeated mid-file (two files concatenated). Each is checked in custom
CSV/TSV/JSONL files and GLUE TSV files, through the loaders and through ``steadytune run``
and ``steadytune sweep`` (exit 2, the message on one line, no run folder, no study file).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadytune.cli.app import app
from steadytune.data.files import read_text
from steadytune.data.glue import load_glue
from steadytune.data.tasks import DataError
from steadytune.data.userdata import load_custom

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"  # 32 bytes
RTE_ROWS = "0\tA man sleeps.\tA person sleeps.\tentailment\n1\tA dog runs.\tA cat sleeps.\tnot_entailment\n"
GOOD = {"csv": "text,label\ngood,a\nfine,b\n", "tsv": "text\tlabel\ngood\ta\nfine\tb\n",
        "jsonl": '{"text": "good", "label": "a"}\n{"text": "fine", "label": "b"}\n'}
UTF8 = "not valid UTF-8 at byte offset {} (0x{}); re-save the file as UTF-8"
REPEAT = "repeats the header row (concatenated files?); delete that line"

# (file, contents of dev, 1-based line, problem). Byte offsets are counted by hand:
# "text,label\n" is 11 bytes, "good,a\n" 7, "caf" 3 -> the 0xe9 of "café" in Latin-1 is byte 21.
CUSTOM_CASES = {
    "csv-latin1": ("dev.csv", b"text,label\ngood,a\ncaf\xe9,b\n", 3, UTF8.format(21, "e9")),
    "csv-bom-latin1": ("dev.csv", b"\xef\xbb\xbftext,label\ngood,a\ncaf\xe9,b\n", 3, UTF8.format(24, "e9")),
    "csv-cut-utf8": ("dev.csv", b"text,label\ngood,a\ncaf\xc3", 3, UTF8.format(21, "c3")),
    "tsv-latin1": ("dev.tsv", b"text\tlabel\ngood\ta\ncaf\xe9\tb\n", 3, UTF8.format(21, "e9")),
    # '{"text": "good", "label": "a"}\n' is 31 bytes, '{"text": "caf' 13 more.
    "jsonl-latin1": ("dev.jsonl", b'{"text": "good", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n', 2,
                     UTF8.format(44, "e9")),
    "csv-duplicate-column": ("dev.csv", b"text,label,text\ngood,a,other\n", 1,
                             "duplicate column 'text' in the header"),
    "tsv-duplicate-column": ("dev.tsv", b"label\ttext\tlabel\na\tgood\tb\n", 1,
                             "duplicate column 'label' in the header"),
    "jsonl-duplicate-key": ("dev.jsonl", b'{"text": "good", "label": "a"}\n{"text": "x", "label": "b", "text": "y"}\n',
                            2, "duplicate key 'text'"),
    "jsonl-list-label": ("dev.jsonl", b'{"text": "good", "label": ["a", "b"]}\n', 1,
                         "label ['a', 'b'] must be a string, number or boolean"),
    "csv-repeated-header": ("dev.csv", b"text,label\ngood,a\ntext,label\nfine,b\n", 3, REPEAT),
    "csv-repeated-bom-header": ("dev.csv", b"\xef\xbb\xbftext,label\ngood,a\n\xef\xbb\xbftext,label\nfine,b\n",
                                3, REPEAT),
    "tsv-repeated-header": ("dev.tsv", b"text\tlabel\ngood\ta\n\ntext\tlabel\nfine\tb\n", 4, REPEAT),
}
GLUE_CASES = {
    "glue-latin1": (RTE_HEADER.encode() + b"0\tcaf\xe9\tb\tentailment\n", 2, UTF8.format(37, "e9")),
    "glue-duplicate-column": (b"index\tsentence1\tsentence2\tlabel\tlabel\n0\ta\tb\tentailment\tx\n", 1,
                              "duplicate column 'label' in the header"),
    "glue-repeated-header": ((RTE_HEADER + RTE_ROWS + RTE_HEADER + RTE_ROWS).encode(), 4, REPEAT),
}


def _custom(root: Path, name: str, dev: bytes) -> Path:
    """A custom data folder: a good train file and ``name`` (dev) holding ``dev``."""
    root.mkdir()
    ext = name.rsplit(".", 1)[1]
    (root / f"train.{ext}").write_text(GOOD[ext], encoding="utf-8")
    (root / name).write_bytes(dev)
    return root


def _rte(root: Path, dev: bytes) -> Path:
    """A GLUE folder whose RTE/train.tsv is good and whose RTE/dev.tsv holds ``dev``."""
    (root / "RTE").mkdir(parents=True)
    (root / "RTE" / "train.tsv").write_text(RTE_HEADER + RTE_ROWS, encoding="utf-8")
    (root / "RTE" / "dev.tsv").write_bytes(dev)
    return root


def _one_line_error(res, message: str) -> None:
    """Exit 2 with ``error: <message>`` as one line of output, and no traceback."""
    assert res.exit_code == 2, res.output
    assert f"error: {message}" in res.output.splitlines(), res.output
    assert "Traceback" not in res.output


# ------------------------------------------------------------------ loaders


@pytest.mark.parametrize("case", CUSTOM_CASES)
def test_custom_file_problem_is_one_exact_message(tmp_path, case):
    name, dev, line, problem = CUSTOM_CASES[case]
    data = _custom(tmp_path / "data", name, dev)
    with pytest.raises(DataError) as err:
        load_custom(str(data), "dev")
    assert str(err.value) == f"{data / name}, line {line}: {problem}"


@pytest.mark.parametrize("case", GLUE_CASES)
def test_glue_file_problem_is_one_exact_message(tmp_path, case):
    dev, line, problem = GLUE_CASES[case]
    glue = _rte(tmp_path / "glue", dev)
    with pytest.raises(DataError) as err:
        load_glue("rte", "dev", str(glue))
    assert str(err.value) == f"{glue / 'RTE' / 'dev.tsv'}, line {line}: {problem}"


def test_read_text_drops_only_a_leading_bom(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"\xef\xbb\xbftext\n\xef\xbb\xbfx\xe2\x80\xa8y\n")
    assert read_text(path) == "text\n\ufeffx\u2028y\n"


def test_unused_duplicate_empty_columns_and_header_like_text_are_accepted(tmp_path):
    # Two unnamed trailing columns are not ambiguous; a row equal to the header in one
    # column only is data.
    data = _custom(tmp_path / "data", "dev.csv", b"text,label,,\ntext,a,,\nfine,label,,\n")
    assert load_custom(str(data), "train").texts_a == ["good", "fine"]
    dev = load_custom(str(data), "dev", label_names=("a", "label"))
    assert dev.texts_a == ["text", "fine"] and dev.labels.tolist() == [0, 1]


# ------------------------------------------------------------------ CLI: run and sweep

RUNNER = CliRunner()
WIDE = {"COLUMNS": "2000"}  # rich wraps at the terminal width; the message itself is one line


def _cli_cases() -> list:
    picked = ("csv-latin1", "jsonl-latin1", "csv-duplicate-column", "tsv-repeated-header")
    return [pytest.param("custom", *CUSTOM_CASES[c], id=c) for c in picked] + [
        pytest.param("rte", "dev.tsv", *GLUE_CASES[c], id=c) for c in ("glue-latin1", "glue-repeated-header")]


def _data_args(tmp_path: Path, task: str, name: str, dev: bytes) -> tuple[list[str], Path]:
    """CLI arguments naming the bad data set, and the bad file."""
    if task == "custom":
        data = _custom(tmp_path / "data", name, dev)
        return ["--set", f"data_file={data}"], data / name
    glue = _rte(tmp_path / "data", dev)
    return ["--data-dir", str(glue)], glue / "RTE" / "dev.tsv"


@pytest.mark.parametrize("task, name, dev, line, problem", _cli_cases())
def test_run_on_a_bad_file_exits_2_with_one_line_and_writes_nothing(tiny_bert, tmp_path, task, name, dev,
                                                                    line, problem):
    args, bad = _data_args(tmp_path, task, name, dev)
    out = tmp_path / "run"
    res = RUNNER.invoke(app, ["run", "--task", task, "--model", str(tiny_bert), "--out", str(out),
                              "--max-steps", "1", "--set", "threads=1", *args], env=WIDE)
    _one_line_error(res, f"{bad}, line {line}: {problem}")
    assert not out.exists()


@pytest.mark.parametrize("task, name, dev, line, problem", _cli_cases())
def test_sweep_on_a_bad_file_fails_before_the_study_is_created(tiny_bert, tmp_path, task, name, dev,
                                                               line, problem):
    args, bad = _data_args(tmp_path, task, name, dev)
    store = tmp_path / "study.db"
    res = RUNNER.invoke(app, ["sweep", "--tasks", task, "--recipes", "devlin2019", "--seeds", "1-2",
                              "--store", str(store), "--model", str(tiny_bert), "--max-steps", "1",
                              "--set", "threads=1", *args], env=WIDE)
    _one_line_error(res, f"{bad}, line {line}: {problem}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no study, no checkpoints
