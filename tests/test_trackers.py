"""Trackers: what a sweep logs to JSON lines, TensorBoard and MLflow is read back and compared
with the study it came from. TensorBoard and MLflow are optional extras: their tests are skipped
(with the reason) when the extra is missing; `make test` installs both."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.analyses.stats import summarize
from steadytune.cli.app import app
from steadytune.config.errors import ConfigError
from steadytune.integrations import trackers as T
from steadytune.integrations.tracking import SweepTracker, rows_by_step, summary_metrics
from steadytune.store.records import read_result
from steadytune.store.study import Study
from steadytune.sweeps.driver import run_sweeps
from steadytune.sweeps.spec import SweepSpec

needs_tensorboard = pytest.mark.skipif(not T.tracker_available("tensorboard"),
                                       reason="the 'tensorboard' extra is not installed")
needs_mlflow = pytest.mark.skipif(not T.tracker_available("mlflow"), reason="the 'mlflow' extra is not installed")


def _read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_logger_writes_one_object_per_call(tmp_path):
    log = T.JsonlLogger(tmp_path / "m.jsonl", "run-a", {"lr": 2e-5})
    log.log("train/loss", 0.5, 3)
    log.log_dict({"dev/acc": 0.75, "train/loss": float("nan")}, 4)
    log.close()
    log.close()  # idempotent
    assert _read_jsonl(tmp_path / "m.jsonl") == [
        {"run": "run-a", "params": {"lr": 2e-5}},
        {"run": "run-a", "step": 3, "train/loss": 0.5},
        {"run": "run-a", "step": 4, "dev/acc": 0.75, "train/loss": None},
    ]


@needs_tensorboard
def test_tensorboard_logger_is_read_back_by_the_event_reader(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = T.open_tracker(f"tensorboard:{tmp_path}")("rte-seed1", {"lr": 2e-5})
    log.log_dict({"train/loss": 0.625, "grad_norm_layer/layer.0": 1.5e-6}, 10)
    log.log("train/loss", 0.5, 20)
    log.close()
    events = EventAccumulator(str(tmp_path / "rte-seed1"))
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert loss == [(10, 0.625), (20, 0.5)]
    assert events.Scalars("grad_norm_layer/layer.0")[0].value == pytest.approx(1.5e-6, rel=1e-6)  # float32
    assert "params" in " ".join(events.Tags()["tensors"])


@needs_mlflow
def test_mlflow_logger_is_read_back_by_the_client(tmp_path):
    from mlflow.tracking import MlflowClient

    log = T.open_tracker(f"mlflow:{tmp_path / 'ml'}")("rte-lr=1e-05,epochs=3-seed1", {"lr": 1e-5, "task": "rte"})
    log.log_dict({"train/loss": 0.625, "grad_norm_layer_kind/layer.0/query": 2.0}, 10)
    log.log("train/loss", 0.5, 20)
    log.close()
    uri = T.mlflow_uri(tmp_path / "ml")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name("steadytune").experiment_id])
    assert run.info.run_name == "rte-lr=1e-05,epochs=3-seed1" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "1e-05", "task": "rte"}
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train/loss"))
    assert history == [(10, 0.625), (20, 0.5)]
    assert run.data.metrics["grad_norm_layer_kind/layer.0/query"] == 2.0


def test_open_tracker_errors_are_one_line(monkeypatch):
    with pytest.raises(ConfigError, match=r"tracker 'wandb:x' must be KIND:ROOT with KIND one of jsonl, "
                                          r"tensorboard, mlflow \(e\.g\. tensorboard:runs/tb\)$"):
        T.open_tracker("wandb:x")
    with pytest.raises(ConfigError, match="must be KIND:ROOT"):
        T.open_tracker("tensorboard")
    monkeypatch.setattr(T, "tracker_available", lambda kind: kind == "jsonl")
    with pytest.raises(ConfigError, match=r"^tracker 'mlflow' needs MLflow: pip install 'steadytune\[mlflow\]'$"):
        T.open_tracker("mlflow:x")


@pytest.fixture(scope="module")
def tracked_sweep(tiny_bert, tiny_glue, tmp_path_factory):
    """A tiny two-run sweep logged to every tracker that is installed."""
    root = tmp_path_factory.mktemp("tracked")
    kinds = [k for k in T.TRACKERS if T.tracker_available(k)]
    store = root / "study.db"
    sink = SweepTracker([T.open_tracker(f"{k}:{root / k}") for k in kinds], store)
    spec = SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019",), seeds=(1, 2),
                     overrides={"threads": "1", "evals_per_epoch": "1", "diag_every": "2", "log_every": "2"},
                     max_steps=4, data_dir=str(tiny_glue))
    run_sweeps([spec], store, on_event=sink)
    with Study.open(store, readonly=True) as study:
        runs = study.runs_table()
        results = {r: read_result(study, r) for r in runs["run_id"]}
    return root, kinds, sink, runs, results


def test_a_sweep_logs_exactly_the_stored_tables_to_jsonl(tracked_sweep):
    root, _, sink, runs, results = tracked_sweep
    assert sorted(sink.logged) == sorted(runs["run_id"]) and sink._summary is None  # closed by the last event
    records = _read_jsonl(root / "jsonl" / "metrics.jsonl")
    for run_id, result in results.items():
        (name,) = {r["run"] for r in records if "params" in r and r["params"].get("run_id") == run_id}
        assert name.startswith(f"rte-devlin2019-seed{result.seed}-{run_id[:8]}")
        logged = {r["step"]: {k: v for k, v in r.items() if k not in ("run", "step")}
                  for r in records if r["run"] == name and "step" in r}
        stored = rows_by_step(result.curves, result.diagnostics)
        assert logged.keys() == stored.keys() and len(stored) >= 3
        for step, values in stored.items():
            assert logged[step] == pytest.approx({k: (None if not math.isfinite(v) else v) for k, v in values.items()})
        assert "grad_norm_layer/embeddings" in logged[0] and "optim/bias_correction_factor" in logged[2]
    summary = [r for r in records if r["run"] == "summary" and "step" in r]
    assert [r["step"] for r in summary] == [1, 2]  # after each recorded run: runs recorded so far
    want = summary_metrics(summarize(runs))
    assert {k: v for k, v in summary[-1].items() if k not in ("run", "step")} == pytest.approx(want)
    key = next(k for k in want if k.endswith("/n"))
    assert summary[-1][key] == 2 and summary[0][key] == 1


@needs_tensorboard
def test_a_sweep_logs_to_tensorboard(tracked_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, kinds, _, runs, results = tracked_sweep
    run_id, result = next(iter(results.items()))
    (folder,) = [p for p in (root / "tensorboard").iterdir() if run_id[:8] in p.name]
    events = EventAccumulator(str(folder))
    events.Reload()
    stored = result.diagnostics.query("group == 'grad_norm_layer' and name == 'layer.1'")
    logged = [(e.step, e.value) for e in events.Scalars("grad_norm_layer/layer.1")]
    assert logged == [(s, pytest.approx(v, rel=1e-6)) for s, v in zip(stored["step"], stored["value"])]


@needs_mlflow
def test_a_sweep_logs_to_mlflow(tracked_sweep):
    from mlflow.tracking import MlflowClient

    root, _, _, runs, results = tracked_sweep
    uri = T.mlflow_uri(root / "mlflow")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    found = client.search_runs([client.get_experiment_by_name("steadytune").experiment_id])
    assert sorted(r.info.run_name for r in found if r.info.run_name != "summary") == sorted(
        f"rte-devlin2019-seed{res.seed}-{rid[:8]}" for rid, res in results.items())
    run_id, result = next(iter(results.items()))
    (mine,) = [r for r in found if run_id[:8] in r.info.run_name]
    assert mine.data.params["run_id"] == run_id and mine.data.params["lr"] == str(result.config["lr"])
    loss = result.curves.query("split == 'train' and name == 'loss'")
    history = sorted((m.step, m.value) for m in client.get_metric_history(mine.info.run_id, "train/loss"))
    assert history == list(zip(loss["step"], loss["value"]))


def test_cli_sweep_with_a_jsonl_tracker(tiny_bert, tiny_glue, tmp_path):
    res = CliRunner().invoke(app, [
        "sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", "1", "--model", str(tiny_bert),
        "--data-dir", str(tiny_glue), "--max-steps", "2", "--set", "threads=1", "--store", str(tmp_path / "s.db"),
        "--tracker", f"jsonl:{tmp_path / 'log'}"])
    assert res.exit_code == 0, res.output
    records = _read_jsonl(tmp_path / "log" / "metrics.jsonl")
    assert {r["run"] for r in records} == {records[0]["run"], "summary"}
    bad = CliRunner().invoke(app, ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", "1",
                                   "--store", str(tmp_path / "t.db"), "--tracker", "nope:x"])
    assert bad.exit_code == 2 and "error: tracker 'nope:x' must be KIND:ROOT" in bad.output
    assert not (tmp_path / "t.db").exists()


def test_rows_by_step_orders_steps_and_names():
    curves = pd.DataFrame([(2, 0.5, "train", "loss", 0.7), (0, 0.0, "dev", "acc", 0.5)],
                          columns=["step", "epoch", "split", "name", "value"])
    diags = pd.DataFrame([(0, "optim", "lr", 0.0)], columns=["step", "group", "name", "value"])
    assert rows_by_step(curves, diags) == {0: {"dev/acc": 0.5, "optim/lr": 0.0}, 2: {"train/loss": 0.7}}
