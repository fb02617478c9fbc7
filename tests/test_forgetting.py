"""Forgetting probe: masking, layer swaps, heads; tiny random models, no downloads."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from steadytune.analyses.forgetting import (
    forgetting_curve,
    mlm_perplexity,
    plot_forgetting,
    swapped_params,
)
from steadytune.analyses.mlmhead import (
    FittedMLMHead,
    fit_mlm_head,
    load_pretrained_mlm_head,
)
from steadytune.analyses.mlmtext import make_blocks, mask_blocks, wikitext_path
from steadytune.testing.tiny import WORDS

SEQ = 16


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS[:-3], size=int(rng.integers(5, 15)))) + " .\n" for _ in range(150)]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert))


@pytest.fixture(scope="module")
def pair(tiny_bert):
    """(pre-trained encoder, 'fine-tuned' classifier whose every weight has moved)."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    pretrained = AutoModel.from_pretrained(str(tiny_bert))
    finetuned = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in finetuned.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    finetuned.train()  # analyses must put it in eval mode and restore this
    return pretrained, finetuned


@pytest.fixture(scope="module")
def head(pair) -> FittedMLMHead:
    """An untrained head tied to the pre-trained embeddings (random dense layer)."""
    torch.manual_seed(0)
    return FittedMLMHead(pair[0].get_input_embeddings().weight).eval()


def snapshot(*modules: nn.Module) -> list[tuple[str, torch.Tensor, bool]]:
    out = []
    for m in modules:
        out += [(n, t.detach().clone(), getattr(t, "requires_grad", False))
                for n, t in [*m.named_parameters(), *m.named_buffers()]]
        out += [(f"training:{n}", torch.tensor(sub.training), False) for n, sub in m.named_modules()]
    return out


def assert_unchanged(before, *modules: nn.Module) -> None:
    after = snapshot(*modules)
    assert [n for n, _, _ in before] == [n for n, _, _ in after]
    for (name, a, ga), (_, b, gb) in zip(before, after):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.numpy().tobytes() == b.numpy().tobytes(), f"{name} changed"
        assert ga == gb, f"requires_grad of {name} changed"


def test_blocks_have_special_tokens_and_drop_the_tail(tokenizer, texts):
    blocks = make_blocks(tokenizer, texts, SEQ)
    ids = tokenizer("".join(texts), add_special_tokens=False)["input_ids"]
    assert blocks.shape == (len(ids) // (SEQ - 2), SEQ)
    assert (blocks[:, 0] == tokenizer.cls_token_id).all() and (blocks[:, -1] == tokenizer.sep_token_id).all()
    assert blocks[:, 1:-1].ravel().tolist() == ids[: blocks.shape[0] * (SEQ - 2)]
    assert len(make_blocks(tokenizer, texts, SEQ, max_tokens=3 * (SEQ - 2) + 5)) == 3


def test_masking_is_seeded_and_follows_80_10_10(tokenizer, texts):
    blocks = make_blocks(tokenizer, texts * 20, SEQ)
    inputs, labels = mask_blocks(blocks, tokenizer, 0.15, seed=3)
    again_inputs, again_labels = mask_blocks(blocks, tokenizer, 0.15, seed=3)
    other_inputs, other_labels = mask_blocks(blocks, tokenizer, 0.15, seed=4)
    assert np.array_equal(inputs, again_inputs) and np.array_equal(labels, again_labels)
    assert not np.array_equal(labels, other_labels) and not np.array_equal(inputs, other_inputs)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # [CLS]/[SEP] never masked
    assert np.array_equal(labels[chosen], blocks[chosen])
    assert np.array_equal(inputs[~chosen], blocks[~chosen])
    assert abs(chosen.mean() / (1 - 2 / SEQ) - 0.15) < 0.01
    masked = (inputs == tokenizer.mask_token_id) & chosen
    kept = (inputs == blocks) & chosen
    n = chosen.sum()
    assert abs(masked.sum() / n - 0.8) < 0.02
    assert abs(kept.sum() / n - 0.1) < 0.02  # (random draws of the same token add ~1%)
    assert not np.isin(inputs[chosen & ~masked], tokenizer.all_special_ids).any()
    # A block's mask does not depend on how many blocks follow it.
    prefix_inputs, prefix_labels = mask_blocks(blocks[:10], tokenizer, 0.15, seed=3)
    assert np.array_equal(prefix_inputs, inputs[:10]) and np.array_equal(prefix_labels, labels[:10])


def test_perplexity_of_uniform_head_is_vocab_size(pair, tokenizer, texts):
    class Uniform(nn.Module):
        def forward(self, hidden):
            return torch.zeros(*hidden.shape[:-1], 99)

    assert mlm_perplexity(pair[1], Uniform(), tokenizer, texts, seq_len=SEQ) == pytest.approx(99, rel=1e-9)


def test_perplexity_matches_hand_computed_cross_entropy(pair, tokenizer, texts, head):
    pretrained = pair[0]
    blocks = make_blocks(tokenizer, texts, SEQ)
    inputs, labels = mask_blocks(blocks, tokenizer, 0.15, seed=0)
    with torch.no_grad():
        hidden = pretrained.eval()(input_ids=torch.from_numpy(inputs)).last_hidden_state
        logp = torch.log_softmax(head(hidden), -1)
    sel = torch.from_numpy(labels != -100)
    nll = -logp[sel].gather(1, torch.from_numpy(labels)[sel][:, None]).mean()
    got = mlm_perplexity(pretrained, head, tokenizer, texts, seq_len=SEQ, batch_size=7)
    assert got == pytest.approx(math.exp(float(nll)), rel=1e-5)


def test_forgetting_curve_endpoints_are_exact_and_models_untouched(pair, tokenizer, texts, head):
    pretrained, finetuned = pair
    before = snapshot(pretrained, finetuned, head)
    df = forgetting_curve(finetuned, pretrained, head, tokenizer, texts, seq_len=SEQ, batch_size=8)
    assert_unchanged(before, pretrained, finetuned, head)
    assert list(df.columns) == ["k", "embeddings", "perplexity", "n_tokens", "masked_tokens", "n_layers", "mlm_head"]
    assert df["k"].tolist() == [0, 1, 2, 2] and df["embeddings"].tolist()[-1] == "pretrained"
    assert df["masked_tokens"].nunique() == 1 and df["mlm_head"].iloc[0] == "fitted"
    kw = dict(seq_len=SEQ, batch_size=8)
    assert df["perplexity"].iloc[0] == mlm_perplexity(finetuned, head, tokenizer, texts, **kw)
    assert df["perplexity"].iloc[-1] == mlm_perplexity(pretrained, head, tokenizer, texts, **kw)  # exactly
    assert df["perplexity"].iloc[0] != df["perplexity"].iloc[-1]


def test_swapped_rows_equal_explicitly_rebuilt_models(pair, tokenizer, texts, head):
    """Row k equals a deep copy of the fine-tuned model with its top k layers loaded by hand."""
    import copy

    pretrained, finetuned = pair
    df = forgetting_curve(finetuned, pretrained, head, tokenizer, texts, ks=[1, 2], swap_embeddings=False,
                          seq_len=SEQ)
    for k, ppl in zip(df["k"], df["perplexity"]):
        rebuilt = copy.deepcopy(finetuned)
        for i in range(2 - k, 2):
            rebuilt.bert.encoder.layer[i].load_state_dict(pretrained.encoder.layer[i].state_dict())
        assert ppl == pytest.approx(mlm_perplexity(rebuilt, head, tokenizer, texts, seq_len=SEQ), rel=1e-6)


def test_all_layers_swapped_equals_pretrained_when_embeddings_untouched(tiny_bert, pair, tokenizer, texts, head):
    from transformers import AutoModelForSequenceClassification

    pretrained = pair[0]
    finetuned = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    with torch.no_grad():
        for layer in finetuned.bert.encoder.layer:
            for p in layer.parameters():
                p.mul_(1.1)
    df = forgetting_curve(finetuned, pretrained, head, tokenizer, texts, swap_embeddings=False, seq_len=SEQ)
    assert df["perplexity"].iloc[-1] == mlm_perplexity(pretrained, head, tokenizer, texts, seq_len=SEQ)


def test_swapped_params_checks_k(pair):
    with pytest.raises(ValueError, match="outside 0..2"):
        swapped_params(pair[1], pair[0], 3)
    params = swapped_params(pair[1], pair[0], 1)
    assert params["encoder.layer.1.output.dense.weight"] is pair[0].encoder.layer[1].output.dense.weight
    assert params["encoder.layer.0.output.dense.weight"] is pair[1].bert.encoder.layer[0].output.dense.weight


def test_fit_mlm_head_learns_and_caches(pair, tokenizer, texts, head, tmp_path, monkeypatch):
    pretrained = pair[0]
    before = snapshot(pretrained)
    fitted = fit_mlm_head(pretrained, tokenizer, texts, steps=60, seed=0, cache_dir=tmp_path, seq_len=SEQ,
                          batch_size=64, lr=1e-2, text_name="toy")
    assert_unchanged(before, pretrained)
    assert fitted.source == "fitted on frozen encoder (toy, 60 steps)"
    assert not any(p.requires_grad for p in fitted.parameters())
    kw = dict(seq_len=SEQ, seed=1)
    assert mlm_perplexity(pretrained, fitted, tokenizer, texts, **kw) < mlm_perplexity(pretrained, head, tokenizer,
                                                                                        texts, **kw)
    stats = fitted.fit_stats
    assert stats["train_positions"] > 4 * stats["heldout_positions"] > 0
    # (random words: nothing beats the unigram start on held-out text; just check it is recorded)
    assert all(1 < stats[k] < 99 * 2 for k in ("heldout_perplexity", "heldout_perplexity_start"))
    files = list((tmp_path / "mlm-heads").glob("*.pt"))
    assert len(files) == 1

    import steadytune.analyses.mlmhead as fg

    monkeypatch.setattr(fg, "_frozen_features", lambda *a, **k: pytest.fail("cache was not used"))
    cached = fit_mlm_head(pretrained, tokenizer, texts, steps=60, seed=0, cache_dir=tmp_path, seq_len=SEQ,
                          batch_size=64, lr=1e-2, text_name="toy")
    for (name, a), (_, b) in zip(fitted.state_dict().items(), cached.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(cached.decoder, pretrained.get_input_embeddings().weight)
    assert cached.fit_stats == stats


def test_pretrained_mlm_head_is_found_only_when_complete(tiny_bert, tmp_path):
    from transformers import AutoModelForMaskedLM

    from steadytune.testing.tiny import tiny_config

    assert load_pretrained_mlm_head(str(tiny_bert)) is None  # bare encoder: no head weights
    torch.manual_seed(0)
    mlm = AutoModelForMaskedLM.from_config(tiny_config("bert"))
    mlm.save_pretrained(str(tmp_path / "mlm"))
    found = load_pretrained_mlm_head(str(tmp_path / "mlm"))
    assert found is not None and found.source == "pretrained"
    hidden = torch.randn(3, 32)
    with torch.no_grad():
        assert torch.allclose(found(hidden), mlm.eval().cls(hidden), atol=1e-6)


def test_plot_and_wikitext_path(tmp_path, monkeypatch):
    df = pd.DataFrame({"k": [0, 1, 2, 2], "embeddings": ["finetuned"] * 3 + ["pretrained"],
                       "perplexity": [30.0, 20.0, 10.0, 9.0], "model": ["a"] * 4})
    fig = plot_forgetting(df, reference=9.0)
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "test.txt").write_text(" = A = \n")
    monkeypatch.setenv("STEADYTUNE_DATA", str(tmp_path))
    assert wikitext_path("test") == tmp_path / "wikitext-2" / "test.txt"
    with pytest.raises(FileNotFoundError, match="valid.txt"):
        wikitext_path("valid")


def saved_run(tiny_bert, texts, tmp_path):
    """A WikiText-like data folder and a failed run folder holding a checkpoint (RUN/final)."""
    import json

    from transformers import AutoModelForSequenceClassification

    data = tmp_path / "data" / "wikitext-2"
    data.mkdir(parents=True)
    (data / "test.txt").write_text("".join(texts))
    (data / "valid.txt").write_text("".join(texts[::-1]))
    run = tmp_path / "run"
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight.mul_(3.0)
    model.save_pretrained(str(run / "final"))
    (run / "result.json").write_text(json.dumps({"metric": "acc", "failed": True, "metrics": {"final": {"acc": 0.5}}}))
    return tmp_path / "data", run


def test_forgetting_probe_returns_the_table_and_writes_the_files(tiny_bert, texts, tmp_path, monkeypatch):
    import json

    from steadytune.analyses.forgetting import ForgettingSettings, forgetting_probe

    data, run = saved_run(tiny_bert, texts, tmp_path)
    monkeypatch.setenv("STEADYTUNE_CACHE", str(tmp_path / "default-cache"))  # never the user's cache
    seen = []
    out = tmp_path / "out"
    result = forgetting_probe([run / "final"], str(tiny_bert), out, ForgettingSettings(seq_len=SEQ, head_steps=3),
                              data_dir=data, cache_dir=tmp_path / "cache", device="cpu",
                              progress=lambda *args: seen.append(args))
    assert result.files == [out / "forgetting.csv", out / "forgetting.png", out / "forgetting.json"]
    assert sorted(p.name for p in out.iterdir()) == ["forgetting.csv", "forgetting.json", "forgetting.png"]
    table = result.table
    assert list(result.tables) == ["forgetting"]
    assert list(table.columns) == ["k", "embeddings", "perplexity", "n_tokens", "masked_tokens", "n_layers",
                                   "mlm_head", "checkpoint", "model", "failed"]
    assert table["k"].tolist() == [0, 1, 2, 2] and table["checkpoint"].eq(str(run / "final")).all()
    pd.testing.assert_frame_equal(pd.read_csv(out / "forgetting.csv"), table)
    record = json.loads((out / "forgetting.json").read_text())
    assert {k: v for k, v in record.items() if k != "versions"} == json.loads(json.dumps(result.settings))
    assert record["seq_len"] == SEQ and record["mlm_head"] == table["mlm_head"].iloc[0] and "torch" in record["versions"]
    assert set(record["mlm_head_fit"]) == {"train_positions", "heldout_positions", "heldout_perplexity_start",
                                           "heldout_perplexity"}
    assert seen[0][1:] == (0, None) and (str(run / "final"), 4, 4) in seen  # the head, then the checkpoint
    assert list((tmp_path / "cache" / "mlm-heads").glob("*.pt")) and not (tmp_path / "default-cache").exists()


def test_forgetting_probe_checks_its_inputs_first(tiny_bert, tmp_path):
    from steadytune.analyses.forgetting import ForgettingSettings, forgetting_probe

    with pytest.raises(ValueError, match="seq_len must be >= 3"):
        ForgettingSettings(seq_len=2)
    with pytest.raises(ValueError, match="ks must be"):
        ForgettingSettings(ks=(0, -1))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        forgetting_probe([tmp_path / "missing"], str(tiny_bert), tmp_path / "out", data_dir=tmp_path)
    with pytest.raises(ValueError, match="no fine-tuned checkpoint"):
        forgetting_probe([], str(tiny_bert), tmp_path / "out", data_dir=tmp_path)
    assert not (tmp_path / "out").exists()


def test_cli_writes_table_figure_and_settings(tiny_bert, texts, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from steadytune.cli import analyses as cli_analyses

    saved_run(tiny_bert, texts, tmp_path)
    run = tmp_path / "run"
    monkeypatch.setenv("STEADYTUNE_CACHE", str(tmp_path / "default-cache"))  # never the user's cache
    app = typer.Typer()
    app.command()(cli_analyses.forgetting)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["--finetuned", str(run / "final"), "--pretrained", str(tiny_bert),
                                      "--out", str(out), "--data-dir", str(tmp_path / "data"), "--seq-len", "16",
                                      "--head-steps", "3", "--cache-dir", str(tmp_path / "cache"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["forgetting.csv", "forgetting.json", "forgetting.png"]
    df = pd.read_csv(out / "forgetting.csv")
    assert df["k"].tolist() == [0, 1, 2, 2] and df["failed"].all()
    assert df["model"].iloc[0] == "run (failed, acc 0.500)"
    assert df["mlm_head"].iloc[0] == "fitted on frozen encoder (wikitext-2 valid, 3 steps)"
    assert str(out / "forgetting.csv") in result.stdout
    bad = CliRunner().invoke(app, ["--finetuned", str(tmp_path / "missing"), "--pretrained", str(tiny_bert),
                                   "--data-dir", str(tmp_path / "data")])
    assert bad.exit_code == 2 and "does not exist" in " ".join(bad.output.split()), bad.output
