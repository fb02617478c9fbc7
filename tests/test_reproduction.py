"""docs/reproduction.md against the committed studies: every table regenerates exactly."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "results" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_of_the_document_regenerates_from_the_stored_studies(reproduce):
    text = reproduce.DOC.read_text()
    blocks = [m.group("name") for m in reproduce.BLOCK.finditer(text)]
    assert sorted(blocks) == sorted(reproduce.TABLES), "each table appears exactly once"
    assert all((m["body"] or "").strip() for m in reproduce.BLOCK.finditer(text)), "no empty table"
    assert reproduce.check(text) == []


def test_a_changed_number_or_study_is_caught(reproduce, monkeypatch):
    text = reproduce.DOC.read_text()
    match = next(m for m in reproduce.BLOCK.finditer(text) if m.group("name") == "table1")
    body = match.group("body")
    number = re.search(r"\| (\d+\.\d) \|", body)
    bumped = body[:number.start(1)] + f"{float(number.group(1)) + 0.1:.1f}" + body[number.end(1):]
    assert reproduce.check(text.replace(body, bumped)) == ["table1"]
    # The numbers come from the study file: a study with one run fewer gives other tables.
    original = reproduce.load
    runs, curves = original("regime-gpu")
    monkeypatch.setattr(reproduce, "load", lambda name: (runs.iloc[1:], curves) if name == "regime-gpu"
                        else original(name))
    assert "regime-gpu" in reproduce.check(text)


@pytest.mark.parametrize("study,tasks", [("table1-gpu", ("rte", "mrpc", "cola")),
                                         ("table1-cola1k-cpu", ("cola",)),
                                         ("table1-rte1k-cpu", ("rte",)),
                                         ("table1-mrpc1k-cpu", ("mrpc",))])
def test_table1_counts_match_the_study_summary(reproduce, study, tasks):
    """The page's failed counts are the CLI summary's (``steadytune summary results/<study>.db``)."""
    from steadytune.analyses.stats import summarize
    from steadytune.store.study import Study

    with Study.open(ROOT / "results" / f"{study}.db", readonly=True) as st:
        summary = summarize(st.runs_table())
    assert set(summary["task"]) == set(tasks)
    table = reproduce.table_table1(study, tasks)
    for row in summary.itertuples():
        task = {"rte": "RTE", "mrpc": "MRPC", "cola": "CoLA"}[row.task]
        assert f"| {task} | {row.recipe} | {row.n} | {row.n_failed} |" in table
