"""CLI smoke tests: the whole output folder of `steadytune run` on tiny random models."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
def test_run_writes_the_output_folder(tiny_models, tiny_glue, tmp_path, family):
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--task", "rte", "--recipe", "mosbach2021", "--seed", "3", "--out", str(out),
                              "--model", str(tiny_models[family]), "--data-dir", str(tiny_glue),
                              "--set", "threads=1", "--set", "lr=1e-4", "--max-steps", "4", "--train-limit", "32"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["curves.csv", "diagnostics.csv", "result.json"] or \
        sorted(p.name for p in out.iterdir()) == ["curves.csv", "result.json"]
    payload = json.loads((out / "result.json").read_text())
    assert payload["task"] == "rte" and payload["recipe"] == "mosbach2021" and payload["seed"] == 3
    assert payload["config"]["correct_bias"] is True and payload["config"]["lr"] == 1e-4
    assert payload["steps"] == 4 and payload["data"]["n_train"] == 32
    assert payload["model_info"]["model_type"] == family
    assert not pd.read_csv(out / "curves.csv").empty


@pytest.mark.parametrize("args,message", [
    (["--set", "learning_rate=1"], "unknown config key 'learning_rate'; valid keys"),
    (["--recipe", "bogus"], "unknown recipe 'bogus'"),
    (["--task", "nosuch"], "nosuch"),
    (["--set", "batching=weird"], "batching"),
])
def test_bad_input_is_a_clear_error(tiny_bert, tiny_glue, tmp_path, args, message):
    res = runner.invoke(app, ["run", "--model", str(tiny_bert), "--data-dir", str(tiny_glue),
                              "--out", str(tmp_path / "x"), *args])
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output
    assert not (tmp_path / "x" / "result.json").exists()


def test_missing_data_and_model(tiny_bert, tmp_path):
    res = runner.invoke(app, ["run", "--model", str(tiny_bert), "--data-dir", str(tmp_path / "nope"),
                              "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(app, ["run", "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "no-model" in " ".join(res.output.split())


def test_recipes_and_keys_listings():
    res = runner.invoke(app, ["recipes"])
    assert res.exit_code == 0 and "devlin2019" in res.output and "mosbach2021" in res.output
    res = runner.invoke(app, ["recipes", "--json"])
    assert json.loads(res.output)["recipes"]["mosbach2021"]["epochs"] == 20.0
    res = runner.invoke(app, ["keys"])
    assert res.exit_code == 0 and "correct_bias" in res.output


def test_run_line_says_when_the_best_is_the_untrained_model(tiny_bert, tiny_glue, tmp_path):
    # lr 1e-30 moves no float32 weight: no evaluation beats step 0, which stays the best (the paper's rule)
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--task", "rte", "--out", str(out), "--model", str(tiny_bert), "--data-dir",
                              str(tiny_glue), "--set", "threads=1", "--set", "lr=1e-30", "--max-steps", "3"])
    assert res.exit_code == 0, res.output
    payload = json.loads((out / "result.json").read_text())
    assert payload["best_step"] == 0
    acc, best, base = (payload["metrics"]["final"]["acc"], payload["metrics"]["best"]["acc"],
                       payload["majority_baseline"])
    verdict = "FAILED" if payload["failed"] else "ok"
    assert (f"finished: acc final {acc:.4f}, best {best:.4f} (step 0: the untrained model, no later evaluation "
            f"beat it); majority baseline {base:.4f}; {verdict}; 3 steps in {payload['wall_seconds']:.1f}s"
            ) in res.output.splitlines()
    assert "None" not in res.output


def test_python_dash_m_steadytune_is_the_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "steadytune", "recipes", "--json"], capture_output=True,
                         text=True, check=True)
    assert '"mosbach2021"' in out.stdout
    bad = subprocess.run([sys.executable, "-m", "steadytune", "nosuchcommand"], capture_output=True, text=True)
    assert bad.returncode == 2 and "No such command" in bad.stderr


def test_bare_cli_finds_glue_through_steadytune_data(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    """The README's STEADYTUNE_DATA: no --data-dir, no GLUE_DIR, the data folder holding glue/."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "glue").symlink_to(tiny_glue, target_is_directory=True)
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.setenv("STEADYTUNE_DATA", str(data))
    res = CliRunner().invoke(app, ["run", "--task", "rte", "--model", str(tiny_bert), "--max-steps", "1",
                                   "--set", "threads=1", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "result.json").read_text())["data"]["n_train"] == 48
