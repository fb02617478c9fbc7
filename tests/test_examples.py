"""The runnable examples run (on small settings) and print what docs/integrations.md describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from steadytune.store.study import Study

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_plain_loop_example_records_every_fifth_step():
    out = subprocess.run([sys.executable, str(REPO / "examples" / "plain_loop.py"), "--steps", "6"],
                         capture_output=True, text=True, check=True, timeout=600)
    assert "bias_correction_factor" in out.stdout and "layer.1" in out.stdout
    assert [line.split()[0] for line in out.stdout.splitlines() if line[:1].isdigit()] == ["0", "5", "0", "5"]


def test_trainer_callback_example_on_minilm_and_real_rte(real_glue, tmp_path):
    pytest.importorskip("accelerate", reason="the 'trainer' extra (accelerate) is not installed")
    out = subprocess.run([sys.executable, str(REPO / "examples" / "trainer_callback.py"), "--out", str(tmp_path),
                          "--data-dir", str(real_glue), "--train", "32", "--dev", "16", "--epochs", "1"],
                         capture_output=True, text=True, check=True, timeout=900)
    assert "2 steps; dev acc" in out.stdout and "pre-clip gradient norm per layer" in out.stdout
    diagnostics = pd.read_csv(tmp_path / "tables" / "diagnostics.csv")
    assert set(diagnostics["group"]) >= {"grad_norm_layer", "optim", "head"} and set(diagnostics["step"]) == {0}
    with Study.open(tmp_path / "study.db", readonly=True) as study:
        (run,) = study.runs_table().to_dict("records")
    assert (run["task"], run["recipe"], run["grid"]) == ("rte", "devlin2019", "trainer")
