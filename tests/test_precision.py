"""precision=auto: the choice per device, the cached CPU probe, one choice per study, fp32 diagnostics."""

import json
import sqlite3

import numpy as np
import pytest
import torch

from steadytune.config.errors import ConfigError
from steadytune.config.execution import Execution
from steadytune.store.settings import PREFIX
from steadytune.sweeps.driver import plan_runs, run_sweep
from steadytune.sweeps.precision import SETTING
from steadytune.sweeps.spec import SweepSpec
from steadytune.training import precision as precision_module
from steadytune.training.diagnostics import GradNormIndex, grad_norms
from steadytune.training.loop import resolve_precision, set_up, train_step
from steadytune.training.models import resolve_for_model
from steadytune.training.precision import (
    CPU_BF16_MIN_SPEEDUP,
    FORCE_ENV,
    choose_precision,
    probe_cpu,
)

CPU = torch.device("cpu")
FAST_BF16 = {"machine": "x", "fp32_gflops": 400.0, "bf16_gflops": 2737.0}  # Xeon with AMX (measured)
SLOW_BF16 = {"machine": "y", "fp32_gflops": 249.0, "bf16_gflops": 51.0}  # AMD EPYC (measured)


@pytest.fixture
def auto(monkeypatch, tmp_path):
    """auto as a user gets it: no forcing variable, a private probe cache."""
    monkeypatch.delenv(FORCE_ENV, raising=False)
    monkeypatch.setenv("STEADYTUNE_CACHE", str(tmp_path / "cache"))


def test_explicit_precision_is_used_as_given(auto):
    for p in ("fp32", "bf16"):
        assert choose_precision(p, CPU).used == p and choose_precision(p, CPU).reason == "set explicitly"


def test_cpu_choice_follows_the_measured_bf16_speedup(auto):
    fast = choose_precision("auto", CPU, probe=FAST_BF16)
    assert fast.used == "bf16" and fast.reason == "CPU bf16 matmul 6.8x fp32 (>= 2x)" and fast.probe == FAST_BF16
    slow = choose_precision("auto", CPU, probe=SLOW_BF16)
    assert slow.used == "fp32" and slow.reason == "CPU bf16 matmul 0.2x fp32 (< 2x)"
    edge = {"fp32_gflops": 100.0, "bf16_gflops": 100.0 * CPU_BF16_MIN_SPEEDUP}
    assert choose_precision("auto", CPU, probe=edge).used == "bf16"
    below = {"fp32_gflops": 100.0, "bf16_gflops": 100.0 * CPU_BF16_MIN_SPEEDUP - 1}
    assert choose_precision("auto", CPU, probe=below).used == "fp32"


def test_cuda_choice_follows_bf16_support(auto, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert choose_precision("auto", torch.device("cuda")).used == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    choice = choose_precision("auto", torch.device("cuda"))
    assert choice.used == "fp32" and choice.reason == "CUDA device NVIDIA H200 lacks bf16"


def test_the_environment_fixes_auto_and_a_bad_value_is_one_clear_error(auto, monkeypatch):
    monkeypatch.setenv(FORCE_ENV, "bf16")
    assert choose_precision("auto", CPU, probe=SLOW_BF16).used == "bf16"
    monkeypatch.setenv(FORCE_ENV, "fp16")
    with pytest.raises(ConfigError, match=r"^STEADYTUNE_AUTO_PRECISION='fp16' is invalid; use fp32 or bf16"):
        choose_precision("auto", CPU)


def test_the_probe_measures_once_per_machine_and_survives_a_corrupt_cache(auto, monkeypatch, tmp_path):
    calls = []

    def fake(repeats=3, rounds=5):
        calls.append(1)
        return {"fp32": 100.0, "bf16": 700.0}

    monkeypatch.setattr(precision_module, "_matmul_rates", fake)
    first = probe_cpu()
    assert (first["fp32_gflops"], first["bf16_gflops"]) == (100.0, 700.0) and len(calls) == 1
    assert probe_cpu() == first and len(calls) == 1  # cached
    cache = tmp_path / "cache" / "precision-probe.json"
    assert json.loads(cache.read_text())[first["machine"]] == first
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads != 1 else 2)  # another thread count is another measurement
        probe_cpu()
        assert len(calls) == 2
    finally:
        torch.set_num_threads(threads)
    cache.write_text("{not json")
    assert probe_cpu() == {**first, "measured_at": probe_cpu()["measured_at"]} and len(calls) == 3
    assert json.loads(cache.read_text())  # replaced by a good file


def test_real_probe_returns_positive_rates(auto):
    probe = probe_cpu(use_cache=False)
    assert probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0


def _spec(tiny_bert, tiny_glue, **over) -> SweepSpec:
    overrides = {"threads": "1", "evals_per_epoch": "0", "diag_every": "0", **over}
    return SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019",), seeds=(1, 2),
                     max_steps=2, data_dir=str(tiny_glue), overrides=overrides)


def _setting(store):
    conn = sqlite3.connect(store)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (PREFIX + SETTING,)).fetchone()
    finally:
        conn.close()
    return None if row is None else json.loads(row[0])


def test_a_study_chooses_once_and_keeps_its_choice_on_another_machine(auto, monkeypatch, tiny_bert, tiny_glue,
                                                                      tmp_path):
    store = tmp_path / "study.db"
    monkeypatch.setattr(precision_module, "probe_cpu", lambda use_cache=True: FAST_BF16)
    spec = _spec(tiny_bert, tiny_glue)
    dry = run_sweep(spec, store, dry_run=True)
    assert dry["to_run"] == 2 and not store.exists()  # a dry run chooses but writes nothing
    out = run_sweep(spec, store)
    assert out["finished"] == 2
    assert _setting(store)["used"] == "bf16"
    planned = plan_runs(spec, store)
    assert {r.cfg.precision for r in planned} == {"bf16"}
    with sqlite3.connect(store) as conn:
        results = [json.loads(r[0]) for r in conn.execute("SELECT result_json FROM runs")]
    for result in results:
        assert result["config"]["precision"] == "bf16"
        assert result["execution"]["precision"] == {"requested": "auto", "used": "bf16", "probe": None,
                                                    "reason": "CPU bf16 matmul 6.8x fp32 (>= 2x)"}
    # The same command on a machine whose bf16 is slow resumes the same (bf16) runs: nothing to do.
    monkeypatch.setattr(precision_module, "probe_cpu", lambda use_cache=True: SLOW_BF16)
    again = run_sweep(spec, store)
    assert again["done_before"] == 2 and again["to_run"] == 0


def test_a_study_from_before_auto_keeps_fp32_so_its_command_still_resumes_it(auto, monkeypatch, tiny_bert,
                                                                             tiny_glue, tmp_path):
    store = tmp_path / "old.db"
    old = run_sweep(_spec(tiny_bert, tiny_glue, precision="fp32"), store)  # as every stored study was made
    assert old["finished"] == 2 and _setting(store) is None
    monkeypatch.setattr(precision_module, "probe_cpu", lambda use_cache=True: FAST_BF16)
    resumed = run_sweep(_spec(tiny_bert, tiny_glue), store)  # the original command, precision now auto
    assert resumed["done_before"] == 2 and resumed["to_run"] == 0
    assert _setting(store)["used"] == "fp32"


def test_bf16_autocast_keeps_fp32_gradients_for_the_diagnostics(tiny_bert, tiny_glue):
    cfg = resolve_for_model(task="rte", model=str(tiny_bert), overrides={
        "data_dir": str(tiny_glue), "max_steps": 2, "precision": "bf16", "diag_every": 1})
    execution = Execution(device="cpu", threads=1)
    cfg, choice = resolve_precision(cfg, execution)
    assert choice.used == "bf16"
    run = set_up(cfg, execution)
    captured = {}
    record = run.diag.record

    def keep(step, logits=None):  # the grads the recorder sees, before clipping and the update
        captured["grads"] = [p.grad.detach().clone() for p in run.diag.params]
        record(step, logits)

    run.diag.record = keep
    train_step(run, cfg, np.arange(4), 0)
    assert all(g.dtype == torch.float32 for g in captured["grads"])
    recorded = {(r.group, r.name): r.value for r in run.diag.rows}
    per_tensor_fp32 = torch.stack([g.norm().double() for g in captured["grads"]]).square().sum().sqrt().item()
    assert recorded["optim", "total_grad_norm"] == pytest.approx(per_tensor_fp32, rel=1e-12)
    exact = torch.stack([g.double().norm() for g in captured["grads"]]).square().sum().sqrt().item()
    assert recorded["optim", "total_grad_norm"] == pytest.approx(exact, rel=1e-6)  # fp32 accuracy
    index = GradNormIndex.from_names(run.diag.index.names)
    assert grad_norms(run.diag.params, index).dtype == torch.float64


def test_set_up_refuses_an_unresolved_precision(tiny_bert, tiny_glue):
    cfg = resolve_for_model(task="rte", model=str(tiny_bert), overrides={"data_dir": str(tiny_glue), "max_steps": 1})
    assert cfg.precision == "auto"
    with pytest.raises(ValueError, match="resolved precision"):
        set_up(cfg, Execution(device="cpu"))
