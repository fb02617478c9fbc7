"""Loss surface and 1-D interpolation on tiny random models; corners must equal the models."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from steadytune.analyses.surface import (
    anchor_params,
    evaluate_params,
    interpolate_1d,
    loss_surface,
    plot_surface,
)


@pytest.fixture(scope="module")
def models(tiny_bert):
    """(pre-trained encoder, 'failed' and 'successful' classifiers with different heads)."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    pretrained = AutoModel.from_pretrained(str(tiny_bert))
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=generator) * 0.1)
        model.train()
        out.append(model)
    return pretrained, out[0], out[1]


@pytest.fixture(scope="module")
def batches(tiny_bert, tiny_glue):
    from transformers import AutoTokenizer

    from steadytune.data.batching import collate, encode, eval_batches
    from steadytune.data.glue import load_glue

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    enc = encode(load_glue("rte", "dev", str(tiny_glue)), tokenizer)
    return [collate(enc, idx, 0) for idx in eval_batches(enc.lengths, 10)]


def plain(model: nn.Module, batches) -> tuple[float, float]:
    """Loss and accuracy by ordinary forward passes (the independent reference)."""
    model.eval()
    losses, correct, n = [], 0, 0
    with torch.no_grad():
        for batch in batches:
            out = model(**batch)
            losses.append(out.loss.item() * len(batch["labels"]))
            correct += int((out.logits.argmax(-1) == batch["labels"]).sum())
            n += len(batch["labels"])
    model.train()
    return sum(losses) / n, correct / n


def state(*modules: nn.Module) -> list[tuple[str, bytes, bool]]:
    return [(n, t.detach().numpy().tobytes(), m.training) for m in modules
            for n, t in [*m.named_parameters(), *m.named_buffers()]]


@pytest.mark.parametrize("head", ["zero", "mean", "init"])
def test_surface_corners_equal_the_models(models, batches, head):
    pretrained, failed, successful = models
    before = state(pretrained, failed, successful)
    seen = []
    df = loss_surface(pretrained, failed, successful, batches, alphas=[0.0, 0.5, 1.0], betas=[0.0, 1.0],
                      head=head, progress=lambda i, n, row: seen.append((i, n)))
    assert state(pretrained, failed, successful) == before  # byte-identical, flags restored
    assert seen[-1] == (6, 6) and len(df) == 6
    assert list(df.columns) == ["alpha", "beta", "loss", "acc", "n_examples", "head"]
    at = df.set_index(["alpha", "beta"])
    for model, corner in ((failed, (1.0, 0.0)), (successful, (0.0, 1.0))):
        loss, acc = plain(model, batches)
        assert at.loc[corner, "loss"] == pytest.approx(loss, abs=1e-6)
        assert at.loc[corner, "acc"] == pytest.approx(acc, abs=1e-6)
    # θp: a classifier on the pre-trained encoder whose head follows the convention.
    theta_p = anchor_params(pretrained, failed, successful, head)[0]
    reference = type(failed)(failed.config)
    reference.load_state_dict({**reference.state_dict(), **theta_p})
    loss, acc = plain(reference, batches)
    assert at.loc[(0.0, 0.0), "loss"] == pytest.approx(loss, abs=1e-6)
    assert at.loc[(0.0, 0.0), "acc"] == pytest.approx(acc, abs=1e-6)
    if head == "zero":
        assert at.loc[(0.0, 0.0), "loss"] == pytest.approx(np.log(2), abs=1e-6)  # uniform prediction


def test_anchor_params_convention(models):
    pretrained, failed, successful = models
    zero, f, s = anchor_params(pretrained, failed, successful, "zero")
    assert torch.equal(zero["bert.encoder.layer.1.output.dense.weight"], pretrained.encoder.layer[1].output.dense.weight)
    assert torch.equal(zero["bert.pooler.dense.weight"], pretrained.pooler.dense.weight)
    assert not zero["classifier.weight"].any() and f["classifier.weight"] is failed.classifier.weight
    mean = anchor_params(pretrained, failed, successful, "mean")[0]
    assert torch.allclose(mean["classifier.weight"], (failed.classifier.weight + successful.classifier.weight) / 2)
    init_a = anchor_params(pretrained, failed, successful, "init", head_seed=5)[0]
    init_b = anchor_params(pretrained, failed, successful, "init", head_seed=5)[0]
    assert torch.equal(init_a["classifier.weight"], init_b["classifier.weight"])
    assert not init_a["classifier.bias"].any() and 0.01 < init_a["classifier.weight"].std() < 0.04
    with pytest.raises(ValueError, match="head="):
        anchor_params(pretrained, failed, successful, "random")


def test_plane_is_linear_in_parameters(models):
    pretrained, failed, successful = models
    from steadytune.analyses.surface import _combine

    p, f, s = anchor_params(pretrained, failed, successful)
    point = _combine((p, f, s), (1 - 0.3 - 0.4, 0.3, 0.4))
    name = "bert.encoder.layer.0.attention.self.query.weight"
    expected = p[name] + 0.3 * (f[name] - p[name]) + 0.4 * (s[name] - p[name])
    assert torch.allclose(point[name], expected, atol=1e-6)


def test_interpolation_endpoints_and_untouched(models, batches):
    _, failed, successful = models
    before = state(failed, successful)
    df = interpolate_1d(failed, successful, batches, [0.0, 0.5, 1.0])
    assert state(failed, successful) == before
    assert df["t"].tolist() == [0.0, 0.5, 1.0]
    for t, model in ((0.0, failed), (1.0, successful)):
        loss, acc = plain(model, batches)
        row = df[df["t"] == t].iloc[0]
        assert row["loss"] == pytest.approx(loss, abs=1e-6) and row["acc"] == pytest.approx(acc, abs=1e-6)


def test_mismatched_models_are_rejected(models, batches, tiny_models):
    from transformers import AutoModelForSequenceClassification

    other = AutoModelForSequenceClassification.from_pretrained(str(tiny_models["bert"]), num_labels=3)
    with pytest.raises(ValueError, match="different parameters"):
        interpolate_1d(models[1], other, batches, [0.0])
    with pytest.raises(ValueError, match="empty"):
        evaluate_params(models[1], None, [])


def test_plot_surface_marks_the_three_models(tmp_path):
    grid = [(a, b) for a in np.linspace(-0.5, 1.5, 5) for b in np.linspace(-0.5, 1.5, 5)]
    df = pd.DataFrame([{"alpha": a, "beta": b, "loss": 0.5 + (a - 1) ** 2 + b ** 2, "acc": 0.5} for a, b in grid])
    fig = plot_surface(df)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert {"pre-trained", "failed", "successful"} <= set(labels)
    fig.savefig(tmp_path / "s.png")


def test_cli_writes_surface_and_line(models, tiny_bert, tiny_glue, tmp_path):
    import typer
    from typer.testing import CliRunner

    from steadytune.cli import analyses as cli_analyses

    _, failed, successful = models
    failed.save_pretrained(str(tmp_path / "failed"))
    successful.save_pretrained(str(tmp_path / "successful"))
    app = typer.Typer()
    app.command()(cli_analyses.surface)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["--failed", str(tmp_path / "failed"), "--successful", str(tmp_path / "successful"),
                                      "--pretrained", str(tiny_bert), "--data-dir", str(tiny_glue), "--resolution", "3",
                                      "--alpha-min", "-1", "--alpha-max", "2", "--max-examples", "16",
                                      "--interpolate", "3", "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["interpolation.csv", "interpolation.json", "interpolation.png",
                     "surface.csv", "surface.json", "surface.png", "surface_acc.png"]
    df = pd.read_csv(out / "surface.csv")
    assert sorted(df["alpha"].unique()) == [-1.0, 0.0, 0.5, 1.0, 2.0]  # 0 and 1 always on the grid
    assert sorted(df["beta"].unique()) == [-0.5, 0.0, 0.5, 1.0, 1.5]
    assert (df["n_examples"] == 16).all()


def test_surface_probe_returns_the_tables_and_writes_the_files(models, tiny_bert, tiny_glue, tmp_path):
    import json

    from steadytune.analyses.surface import SurfaceSettings, surface_probe

    pretrained, failed, successful = models
    failed.save_pretrained(str(tmp_path / "failed"))
    successful.save_pretrained(str(tmp_path / "successful"))
    before = state(pretrained, failed, successful)
    seen = []
    settings = SurfaceSettings(alpha_range=(-1.0, 2.0), resolution=3, max_examples=16, interpolate=3)
    out = tmp_path / "out"
    result = surface_probe(tmp_path / "failed", tmp_path / "successful", str(tiny_bert), out, settings,
                           data_dir=tiny_glue, device="cpu", progress=lambda *args: seen.append(args))
    assert state(pretrained, failed, successful) == before
    assert [p.name for p in result.files] == ["surface.csv", "surface.png", "surface.json", "surface_acc.png",
                                              "interpolation.csv", "interpolation.png", "interpolation.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in result.files)
    assert list(result.tables) == ["surface", "interpolation"] and result.table is result.tables["surface"]
    table = result.table
    assert list(table.columns) == ["alpha", "beta", "loss", "acc", "n_examples", "head"]
    assert sorted(table["alpha"].unique()) == settings.alphas == [-1.0, 0.0, 0.5, 1.0, 2.0]
    assert settings.betas == [-0.5, 0.0, 0.5, 1.0, 1.5] and len(table) == 25 and (table["n_examples"] == 16).all()
    assert table.set_index(["alpha", "beta"]).loc[(0.0, 0.0), "loss"] == pytest.approx(np.log(2), abs=1e-6)
    line = result.tables["interpolation"]
    assert line["t"].tolist() == [0.0, 0.5, 1.0]
    at = table.set_index(["alpha", "beta"])  # the line's ends are the plane's corners (1, 0) and (0, 1)
    assert line["loss"].iloc[0] == pytest.approx(at.loc[(1.0, 0.0), "loss"], abs=1e-6)
    assert line["loss"].iloc[-1] == pytest.approx(at.loc[(0.0, 1.0), "loss"], abs=1e-6)
    pd.testing.assert_frame_equal(pd.read_csv(out / "surface.csv"), table)
    record = json.loads((out / "surface.json").read_text())
    assert record["n_examples"] == 16 and record["head"] == "zero" and record["alphas"] == settings.alphas
    assert (seen[-1][0], seen[-1][1:]) == ("line", (3, 3)) and ("grid", 25, 25) in seen


def test_surface_settings_are_checked():
    from steadytune.analyses.surface import SurfaceSettings

    with pytest.raises(ValueError, match="head="):
        SurfaceSettings(head="random")
    with pytest.raises(ValueError, match="batch_size"):
        SurfaceSettings(batch_size=0)


def test_cli_reports_bad_input_in_one_line(tiny_bert, tiny_glue, tmp_path):
    import typer
    from typer.testing import CliRunner

    from steadytune.cli import analyses as cli_analyses

    app = typer.Typer()
    app.command()(cli_analyses.surface)
    common = ["--pretrained", str(tiny_bert), "--data-dir", str(tiny_glue), "--out", str(tmp_path / "out")]
    missing = CliRunner().invoke(app, ["--failed", str(tmp_path / "none"), "--successful", str(tmp_path / "none"),
                                       *common])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split()), missing.output
    head = CliRunner().invoke(app, ["--failed", "x", "--successful", "y", "--head", "random", *common])
    assert head.exit_code == 2 and "head='random'" in head.output, head.output
    assert not (tmp_path / "out").exists()
