"""Diagnostics figures and the report built end to end from a real (tiny) study."""

import pandas as pd

from steadytune.report.diagplots import diagnostic_sections, pick_failed_and_successful


def _runs():
    return pd.DataFrame({
        "run_id": ["a", "b", "c", "d", "e"], "task": ["rte"] * 5, "model": ["m"] * 5,
        "recipe": ["r1", "r1", "r1", "r2", "r2"], "grid": [""] * 5, "seed": [1, 2, 3, 1, 2],
        "metric": ["acc"] * 5, "final": [0.40, 0.70, 0.65, 0.60, float("nan")],
        "best": [0.5] * 5, "baseline": [0.527] * 5,
        "status": ["finished", "finished", "finished", "finished", "diverged"],
    })


def test_pick_failed_and_successful():
    picks = pick_failed_and_successful(_runs())
    assert picks == {("rte", "r1"): {"failed": "a", "successful": "b"}}  # r2 has no finished failed run


def test_sections_from_diagnostics():
    rows = []
    for run in "abcd":
        for step in range(0, 50, 10):
            for layer in ("embeddings", "layer.0", "layer.1", "classifier"):
                rows.append((run, step, "grad_norm_layer", layer, 0.1 * (step + 1)))
            rows.append((run, step, "optim", "bias_correction_factor", 0.3))
            rows.append((run, step, "optim", "effective_lr", 1e-5))
    diag = pd.DataFrame(rows, columns=["run_id", "step", "group", "name", "value"])
    sections = diagnostic_sections(_runs(), diag)
    assert [title for title, _ in sections] == [
        "Gradient norms per layer: rte r1, failed vs successful run",
        "Bias-correction factor and effective learning rate"]
    fig = sections[0][1]
    assert len(fig.axes[0].lines) == 4 and fig.axes[0].get_yscale() == "log"
    assert diagnostic_sections(_runs(), pd.DataFrame(columns=diag.columns)) == []


def test_report_from_a_real_tiny_study(tiny_bert, tiny_glue, tmp_path):
    from steadytune.report.html import write_report
    from steadytune.sweeps.driver import run_sweep
    from steadytune.sweeps.spec import SweepSpec

    spec = SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019", "mosbach2021"),
                     seeds=(1, 2, 3), overrides={"threads": "1", "lr": "3e-3", "evals_per_epoch": "1",
                                                 "diag_every": "2"},
                     max_steps=6, data_dir=str(tiny_glue))
    out = run_sweep(spec, tmp_path / "s.db")
    assert out["finished"] + out["diverged"] == 6
    html = write_report(tmp_path / "s.db", tmp_path / "report").read_text()
    assert "Table 1" in html and "Bias-correction factor" in html and "data:image/png;base64," in html


def test_analysis_sections_from_stored_tables(tmp_path):
    import pytest

    from steadytune.report.sections import analysis_sections

    folder = tmp_path / "probe"
    folder.mkdir()
    rows = [(k, "finetuned", 500.0 - 15 * k, "run-a") for k in range(7)] + [(6, "pretrained", 411.0, "run-a")]
    pd.DataFrame(rows, columns=["k", "embeddings", "perplexity", "model"]).to_csv(folder / "forgetting.csv", index=False)
    grid = [(a, b, 0.69 + 0.01 * (a - b) ** 2, 0.5) for a in (-0.5, 0.0, 0.5, 1.0, 1.5) for b in (-0.5, 0.0, 0.5, 1.0, 1.5)]
    pd.DataFrame(grid, columns=["alpha", "beta", "loss", "acc"]).to_csv(folder / "surface.csv", index=False)
    titles = [title for title, _ in analysis_sections([folder])]
    assert titles[0].startswith("Forgetting probe") and titles[1].startswith("Loss surface")
    with pytest.raises(FileNotFoundError, match="neither"):
        analysis_sections([tmp_path])
