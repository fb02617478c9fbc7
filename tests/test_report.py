"""The HTML stability report and its figures, on synthetic runs/curves tables (no training)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from steadytune.analyses.stats import summarize
from steadytune.report.html import build_report, write_report
from steadytune.report.plots import (
    plot_boxplots,
    plot_expected_max,
    plot_learning_curves,
)

EVIL = "<script>alert(1)</script>"
MODEL = "/models/bert-large&uncased"
TASKS = {"rte": ("acc", 146 / 277), "cola": ("mcc", 0.0)}
RECIPES = ["devlin2019", "mosbach2021", EVIL]


def make_tables(seeds: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    """2 tasks × 3 recipes × ``seeds`` runs: failed runs, one diverged, one error, one pending."""
    rng = np.random.default_rng(0)
    runs, curves = [], []
    for task, (metric, base) in TASKS.items():
        for r, recipe in enumerate(RECIPES):
            for seed in range(1, seeds + 1):
                failed = (r == 0 and seed % 2 == 0) or (r == 2 and seed == 1)
                good = base + 0.15 + (0.05 if r == 1 else 0.0) + rng.normal(0, 0.04 if r != 1 else 0.008)
                final = base - (0.05 if task == "rte" and seed % 4 == 0 else 0.0) if failed else good
                status = "diverged" if (task == "rte" and r == 2 and seed == 3) else "finished"
                run_id = f"{task}-{r}-{seed}"
                runs.append(dict(run_id=run_id, task=task, model=MODEL, recipe=recipe, grid=None, seed=seed,
                                 metric=metric, final=np.nan if status == "diverged" else final,
                                 best=max(final, good - 0.01) if status == "finished" else np.nan,
                                 baseline=base, status=status, wall_seconds=60.0 + seed))
                steps = np.arange(0, 101, 10)
                dev = final if failed else base + (final - base) * (1 - np.exp(-steps / 25))
                curves += [(run_id, int(s), s / 50, "dev", metric, float(v))
                           for s, v in zip(steps, np.broadcast_to(dev, steps.shape))]
                loss = np.full(100, 0.69) if failed else 0.69 * np.exp(-np.arange(1, 101) / 20) + 1e-3
                last = 30 if status == "diverged" else 100
                curves += [(run_id, s, s / 50, "train", "loss", float(v))
                           for s, v in zip(range(1, last + 1), loss[:last])]
                curves += [(run_id, s, s / 50, "train", "lr", 2e-5) for s in range(1, last + 1, 10)]
    for status, seed, err in (("error", 7, "<b>CUDA OOM</b> & co"), ("pending", 8, None)):
        runs.append(dict(run_id=f"x-{seed}", task="rte", model=MODEL, recipe="devlin2019", grid=None,
                         seed=seed, metric="acc", final=np.nan, best=np.nan, baseline=146 / 277,
                         status=status, wall_seconds=np.nan, error=err))
    curves_df = pd.DataFrame(curves, columns=["run_id", "step", "epoch", "split", "name", "value"])
    return pd.DataFrame(runs), curves_df


@pytest.fixture(scope="module")
def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_tables()


@pytest.fixture(scope="module")
def report(tables, tmp_path_factory) -> Path:
    runs, curves = tables
    return build_report(runs, curves, tmp_path_factory.mktemp("report"), study_name="synthetic & co.db")


def _rows(page: str, table_id: str) -> dict[str, list[str]]:
    """Row header text -> cell texts of one table."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', page, re.S).group(1)
    body = table.split("<tbody>")[1]
    out = {}
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
        head = re.search(r'<th scope="row">(.*?)</th>', tr).group(1)
        out[html.unescape(head)] = re.findall(r"<td[^>]*>(.*?)</td>", tr)
    return out


def test_table1_matches_summarize(tables, report):
    runs, _ = tables
    scored = runs[runs["status"].isin(["finished", "diverged"])]
    page = report.read_text()
    for i, task in enumerate(TASKS):
        rows = _rows(page, f"table1-{i}")
        assert list(rows) == RECIPES  # order of first appearance, not alphabetical
        for which, offset in (("final", 0), ("best", 7)):
            s = summarize(scored, which).set_index(["task", "recipe"])
            for recipe in RECIPES:
                row = s.loc[(task, recipe)]
                cells = rows[recipe][offset:offset + 7]
                assert cells[:4] == [f"{row[c]:.1f}" for c in ("std", "mean", "median", "max")]
                lo, hi = 100 * row["failed_ci_low"], 100 * row["failed_ci_high"]
                assert cells[4] == f"{row['n_failed']}/{row['n']} ({lo:.0f}–{hi:.0f}%)"
                ok = [f"{row[c]:.1f}" if row["n_ok"] > 1 else "—" for c in ("mean_ok", "std_ok")]
                assert cells[5:] == ok
    # the diverged RTE run is in n and counts as failed (1 failed finished + 1 diverged of 6)
    assert _rows(page, "table1-0")[EVIL][4].startswith("2/6 ")


def test_page_is_self_contained_and_escaped(report):
    page = report.read_text()
    assert page.count("data:image/png;base64,") >= 4  # box plots ×2, curves, expected max
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert html.escape(EVIL) in page
    assert "<b>CUDA" not in page and "&lt;b&gt;CUDA OOM&lt;/b&gt; &amp; co" in page
    assert "bert-large&amp;uncased" in page and "bert-large&uncased" not in page
    assert "synthetic &amp; co.db" in page
    assert "finished: 35" in page and "diverged: 1" in page and "error: 1" in page and "pending: 1" in page
    assert "id='comparison'" in page and "Levene p" in page
    assert f"All runs ({len(make_tables()[0])})" in page


def test_figures_are_png_and_svg(report):
    figdir = report.parent / "figures"
    names = {"boxplots_final", "boxplots_best", "learning_curves", "expected_max"}
    for name in names:
        png, svg = figdir / f"{name}.png", figdir / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        assert "<svg" in svg.read_text()[:2000] and svg.stat().st_size > 10_000


def test_plots_return_figures_without_pyplot_state(tables):
    import matplotlib.pyplot as plt

    runs, curves = tables
    before = plt.get_fignums()
    figs = [plot_boxplots(runs, "best"), plot_learning_curves(runs, curves), plot_expected_max(runs, ["final"])]
    assert all(isinstance(f, Figure) for f in figs) and plt.get_fignums() == before
    box = plot_boxplots(runs)
    ticks = [t.get_text() for ax in box.axes for t in ax.get_xticklabels()]
    assert "devlin2019\n3/6 failed" in ticks and f"{EVIL}\n2/6 failed\n1 diverged" in ticks
    assert len(plot_learning_curves(runs, curves).axes) == 4 * 3  # (dev, loss) × 2 tasks, 3 recipes
    with pytest.raises(ValueError, match="which"):
        plot_boxplots(runs, "last")


def test_extra_sections(tables, tmp_path):
    import matplotlib.pyplot as plt

    runs, curves = tables
    runs = runs[runs["status"] == "pending"]  # no statistics to draw: only the extra sections
    fig, ax = plt.subplots()  # a pyplot figure: the report must close it
    ax.plot([1, 2], [3, 4])
    extra = [("Gradient norms", fig), ("Forgetting <table>", pd.DataFrame({"layer": [EVIL], "x": [1.5]})),
             ("Note", "<p id=mine>trusted html</p>")]
    page = build_report(runs, curves, tmp_path, extra_sections=extra).read_text()
    assert fig.number not in plt.get_fignums()
    assert (tmp_path / "figures" / "extra-1.svg").exists()
    assert "Forgetting &lt;table&gt;" in page and html.escape(EVIL) in page and "<p id=mine>" in page
    assert "<script" not in page.lower()
    with pytest.raises(TypeError, match="content"):
        build_report(runs, curves, tmp_path, extra_sections=[("bad", 3)])


def test_empty_study(tables, tmp_path):
    runs, curves = tables
    pending = runs[runs["status"] == "pending"]
    page = build_report(pending, curves.iloc[:0], tmp_path / "a").read_text()
    assert "no finished runs" in page and "pending: 1" in page and "table1-0" not in page
    empty = build_report(pd.DataFrame(columns=runs.columns), curves.iloc[:0], tmp_path / "b").read_text()
    assert "no finished runs" in empty and "finished: 0" in empty


def test_write_report_reads_the_store(tables, tmp_path, monkeypatch):
    runs, curves = tables
    runs = runs[(runs["task"] == "cola") & (runs["seed"] <= 3) | (runs["status"] == "error")]
    calls = {}

    class FakeStudy:
        @classmethod
        def open(cls, path, create=False, readonly=False):
            calls["open"] = (Path(path), create, readonly)
            return cls()

        def runs_table(self, all_statuses=False):
            calls["all_statuses"] = all_statuses
            return runs

        def curves_table(self, run_ids=None):
            calls["ids"] = run_ids
            return curves[curves["run_id"].isin(run_ids)]

        def diagnostics_table(self, run_ids=None):
            return pd.DataFrame(columns=["run_id", "step", "group", "name", "value"])

        def close(self):
            calls["closed"] = True

    monkeypatch.setattr("steadytune.report.html.Study", FakeStudy)
    db = tmp_path / "study.db"
    db.write_bytes(b"")
    page = write_report(db, tmp_path / "out").read_text()
    assert calls["open"] == (db, False, True) and calls["closed"] and "x-7" not in calls["ids"]
    assert calls["all_statuses"]  # pending/error runs are counted on the page
    assert "study.db" in page and "data:image/png;base64," in page
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing.db", tmp_path / "out2")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(_chromium() is None, reason="no chromium/chromium-browser binary on PATH")
def test_renders_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={shot}", "--window-size=1280,2400", report.resolve().as_uri()]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    assert shot.stat().st_size > 20_000
    pixels = imread(shot)[..., :3].reshape(-1, 3)
    colours = np.unique((pixels * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50  # text, tables and plots, not a blank page


def test_generalisation_sections(tables):
    from steadytune.report.sections import generalisation_sections

    runs, curves = tables  # no `failed` column: it is derived from final and baseline
    sections = generalisation_sections(runs, curves)
    assert [t.split(":")[0] for t, _ in sections] == ["Generalisation (Fig. 8a)", "Generalisation (Fig. 8b)"] * 2
    assert all(isinstance(fig, Figure) for _, fig in sections)
    # equal training lengths: the first setting; its successful runs are the odd seeds
    assert "rte, dev acc over training of 3 successful runs (bert-large&uncased devlin2019)" in sections[0][0]
    assert "cola, final dev metric vs final training loss (18 runs)" in sections[3][0]
    assert generalisation_sections(runs[runs["status"] == "pending"], curves) == []
