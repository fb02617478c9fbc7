"""What a user sees when a run cannot start or goes wrong, through the CLI.

A run that cannot start (missing data, missing model, pickle weights) exits 2 with one
``error:`` line and no progress bar; a run whose loss turns non-finite ends as
``diverged`` (exit 0, result.json written), and in a sweep it is a recorded diverged run.
"""

import json
import shutil
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from steadytune.cli.app import app

runner = CliRunner()
DIVERGE = ["--set", "lr=1e30", "--set", "max_grad_norm=0", "--set", "adam_eps=1e-30", "--set", "log_every=2",
           "--set", "threads=1", "--max-steps", "40"]
"""Settings under which the tiny model's training loss is non-finite within a few steps."""


def _run(*args: str):
    return runner.invoke(app, ["run", "--task", "rte", "--recipe", "devlin2019", "--seed", "1", *args])


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


def _assert_one_error_line(res, message: str) -> None:
    assert res.exit_code == 2, res.output
    assert "None steps" not in res.output and "Traceback" not in res.output
    assert _lines(res.output) == [f"error: {message}"]


def test_missing_data_dir_is_one_line_and_no_progress_bar(tiny_bert, tmp_path):
    res = _run("--out", str(tmp_path / "x"), "--model", str(tiny_bert), "--data-dir", "/nonexistent")
    _assert_one_error_line(res, "GLUE directory /nonexistent does not exist; pass --data-dir or set GLUE_DIR "
                                "to the folder holding RTE/, MRPC/, CoLA/ ...")
    assert not (tmp_path / "x").exists()


def test_missing_model_is_one_line_and_no_progress_bar(tiny_glue, tmp_path):
    missing = tmp_path / "no-model"
    res = _run("--out", str(tmp_path / "x"), "--model", str(missing), "--data-dir", str(tiny_glue))
    _assert_one_error_line(res, f"model path '{missing}' does not exist")


def test_pickle_only_model_is_refused_in_one_line(tiny_bert, tiny_glue, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    res = _run("--out", str(tmp_path / "x"), "--model", str(folder), "--data-dir", str(tiny_glue))
    command = ('python -c "import sys, transformers as t; p = sys.argv[1]; '
               'a = t.AutoConfig.from_pretrained(p).architectures[0]; '
               f'getattr(t, a).from_pretrained(p).save_pretrained(p)" {folder}')
    _assert_one_error_line(res, f"{folder} has only pytorch_model.bin (a pickle); steadytune loads safetensors "
                                f"only: convert it with `{command}` in an environment you trust")
    assert not (tmp_path / "x" / "result.json").exists()


def test_diverging_run_ends_diverged_with_one_clear_line(tiny_bert, tiny_glue, tmp_path):
    out = tmp_path / "run"
    res = _run("--out", str(out), "--model", str(tiny_bert), "--data-dir", str(tiny_glue), *DIVERGE)
    assert res.exit_code == 0, res.output  # the run ended and wrote its result; its status says how
    payload = json.loads((out / "result.json").read_text())
    steps = payload["steps"]
    assert payload["status"] == "diverged" and payload["failed"] and steps < 40
    assert payload["error"] == f"non-finite training loss (nan) by step {steps}"
    assert payload["metrics"]["final"]["acc"] is None
    best = payload["metrics"]["best"]["acc"]
    untrained = ": the untrained model, no later evaluation beat it" if payload["best_step"] == 0 else ""
    expected = (f"diverged: non-finite training loss (nan) by step {steps}; acc final nan, best {best:.4f} "
                f"(step {payload['best_step']}{untrained}); majority baseline {payload['majority_baseline']:.4f}; "
                f"FAILED; {steps} steps in {payload['wall_seconds']:.1f}s")
    lines = _lines(res.output)
    assert lines[-2:] == [expected, str(out / "result.json")]
    assert "None" not in res.output and "Traceback" not in res.output


def test_diverging_runs_in_a_sweep_are_recorded_not_a_crash(tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "study.db"
    res = runner.invoke(app, ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", "1-2",
                              "--store", str(store), "--model", str(tiny_bert), "--data-dir", str(tiny_glue),
                              *DIVERGE])
    assert res.exit_code == 0, res.output
    assert "done: 0 finished, 2 diverged, 0 errors (0 were already done)" in res.output
    assert "Traceback" not in res.output
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT seed, status, failed, error, result_json FROM runs ORDER BY seed").fetchall()
    assert [(seed, status, failed) for seed, status, failed, _, _ in rows] == [(1, "diverged", 1), (2, "diverged", 1)]
    for _, _, _, error, result_json in rows:
        steps = json.loads(result_json)["steps"]
        assert error == f"non-finite training loss (nan) by step {steps}"


def test_max_length_beyond_the_position_embeddings_is_a_config_error_before_training(
        tiny_models, tiny_glue, tmp_path):
    from steadytune.training.models import load_config, position_limit

    assert position_limit(load_config(str(tiny_models["bert"]))) == 160  # max_position_embeddings
    assert position_limit(load_config(str(tiny_models["roberta"]))) == 159  # ids start after pad id 0
    model = str(tiny_models["bert"])
    message = (f"max_length=100000 is longer than model {model} allows: max_length must be in [1, 160] "
               "(its position embeddings)")
    res = _run("--out", str(tmp_path / "x"), "--model", model, "--data-dir", str(tiny_glue),
               "--set", "max_length=100000")
    _assert_one_error_line(res, message)
    assert not (tmp_path / "x").exists()
    store = tmp_path / "s.db"
    res = runner.invoke(app, ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", "1-2", "--store",
                              str(store), "--model", model, "--data-dir", str(tiny_glue), "--set",
                              "max_length=100000"])
    _assert_one_error_line(res, message)
    assert not store.exists()
    ok = _run("--out", str(tmp_path / "y"), "--model", model, "--data-dir", str(tiny_glue), "--set", "max_length=160",
              "--max-steps", "1", "--set", "threads=1")
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("setting,message", [
    ("lr=-1", "lr must be > 0, got -1.0"),
    ("warmup_ratio=1.5", "warmup_ratio must be in [0, 1), got 1.5"),
    ("batching=weird", "batching='weird' is invalid; choose one of length_grouped, random"),
    ("epochs=three", "config key 'epochs' expects float, got 'three'"),
])
def test_invalid_config_value_is_one_exact_line_and_writes_nothing(tiny_bert, tiny_glue, tmp_path, setting, message):
    """The config class of bad input: the key and its valid range, in one line, before anything is written."""
    out = tmp_path / "run"
    res = _run("--model", str(tiny_bert), "--data-dir", str(tiny_glue), "--out", str(out), "--set", setting)
    _assert_one_error_line(res, message)
    assert not out.exists()
    store = tmp_path / "study.db"
    res = runner.invoke(app, ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", "1-2", "--model",
                              str(tiny_bert), "--data-dir", str(tiny_glue), "--store", str(store), "--set", setting])
    _assert_one_error_line(res, message)
    assert not store.exists() and list(tmp_path.iterdir()) == []
