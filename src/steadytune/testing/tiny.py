"""Tiny random models and a tiny GLUE-layout data set, for tests, examples and benchmarks.

Nothing here downloads: models are built from configs (vocab 99, hidden 32, 2 layers,
4 heads, intermediate 37) with a 99-token WordPiece vocabulary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers as tf
from transformers import AutoModel, BertTokenizer

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "a", "cat", "dog", "man", "woman", "car", "house", "tree", "book", "city", "river",
    "sun", "moon", "red", "blue", "green", "big", "small", "old", "new", "good", "bad", "happy",
    "sad", "fast", "slow", "is", "was", "has", "had", "not", "no", "yes", "and", "or", "but",
    "in", "on", "at", "to", "from", "with", "of", "by", "he", "she", "it", "they", "we",
    "runs", "eats", "sees", "likes", "reads", "walks", "sleeps", "talks", "plays", "works",
    "very", "never", "always", "today", "night", "day", "water", "food", "king", "queen",
    "boy", "girl", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "up", "down", "left", "right", "hot", "cold", "dark", "light", ".", ",", "?",
]
VOCAB = (SPECIAL + WORDS)[:99]
FAMILIES = ("bert", "roberta", "albert", "electra", "deberta-v2")


def _write_tokenizer(out: Path) -> None:

    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(str(vocab_file), do_lower_case=True).save_pretrained(str(out))


def tiny_config(family: str = "bert"):
    """A tiny ``transformers`` config of ``family`` (bert, roberta, albert, electra, deberta-v2)."""

    common = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=160, pad_token_id=0, type_vocab_size=2)
    if family == "bert":
        return tf.BertConfig(**common)
    if family == "roberta":
        # RoBERTa has no segment embeddings; positions are offset by pad_token_id + 1.
        return tf.RobertaConfig(**{**common, "type_vocab_size": 1, "bos_token_id": 2, "eos_token_id": 3})
    if family == "albert":
        return tf.AlbertConfig(**{**common, "embedding_size": 16})
    if family == "electra":
        return tf.ElectraConfig(**{**common, "embedding_size": 16})
    if family == "deberta-v2":
        return tf.DebertaV2Config(**common)
    raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")


def make_tiny_model(out_dir: str | Path, family: str = "bert", seed: int = 0) -> Path:
    """Write a tiny randomly initialised encoder checkpoint and tokenizer to ``out_dir``.

    The checkpoint is a bare encoder (``AutoModel``), like a pre-trained one: the
    classification head is created when the run loads it.
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModel.from_config(tiny_config(family))
    model.save_pretrained(str(out))
    _write_tokenizer(out)
    return out


def _sentence(rng: np.random.Generator, length: int) -> str:
    return " ".join(rng.choice(WORDS[:-3], size=length))


def make_tiny_glue(out_dir: str | Path, n_train: int = 64, n_dev: int = 32, seed: int = 0) -> Path:
    """Write a tiny, learnable GLUE-layout directory with RTE, MRPC, CoLA and STS-B files.

    Labels follow simple rules a small model can pick up (a word that flips the label),
    so tests can check that training moves the metric.
    """
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    for split, n in (("train", n_train), ("dev", n_dev)):
        rows = []
        for i in range(n):
            a, b = _sentence(rng, int(rng.integers(4, 12))), _sentence(rng, int(rng.integers(3, 9)))
            rows.append((i, a, b, int(rng.integers(0, 2))))
        _write(out / "RTE" / f"{split}.tsv", ["index\tsentence1\tsentence2\tlabel"],
               [f"{i}\t{a}\t{'not ' + b if y else b}\t{'not_entailment' if y else 'entailment'}"
                for i, a, b, y in rows])
        _write(out / "MRPC" / f"{split}.tsv", ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"],
               [f"{y}\t{i}\t{i + 1000}\t{a}\t{a if y else b}" for i, a, b, y in rows])
        _write(out / "CoLA" / f"{split}.tsv", [],
               [f"src\t{y}\t{'' if y else '*'}\t{a if y else a + ' ?'}" for i, a, b, y in rows])
        _write(out / "STS-B" / f"{split}.tsv",
               ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"],
               [f"{i}\tmain\tf\t2012\t{i}\tnone\tnone\t{a}\t{a if y else b}\t{5.0 * y:.3f}"
                for i, a, b, y in rows])
    return out


def _write(path: Path, header: list[str], rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header + rows) + "\n", encoding="utf-8")
