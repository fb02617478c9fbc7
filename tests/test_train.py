"""The training loop on tiny random models: outputs, reproducibility, divergence, schedule."""

import json
import math

import pandas as pd
import pytest

from steadytune.training.loop import train_and_evaluate
from steadytune.training.models import resolve_for_model
from steadytune.training.results import RunResult, derive_seeds


def _cfg(model, glue, **over):
    base = {"data_dir": str(glue), "max_steps": 6, "evals_per_epoch": 1}
    base.update(over)
    return resolve_for_model(task=base.pop("task", "rte"), recipe=base.pop("recipe", "devlin2019"),
                          seed=base.pop("seed", 1), model=str(model), overrides=base)


def test_result_files_and_keys(tiny_bert, tiny_glue, tmp_path):
    res = train_and_evaluate(_cfg(tiny_bert, tiny_glue), tmp_path)
    payload = json.loads((tmp_path / "result.json").read_text())
    for key in ("task", "recipe", "seed", "model", "config", "metrics", "majority_baseline", "failed",
                "status", "steps", "wall_seconds", "seeds", "versions"):
        assert key in payload
    assert payload["config"]["lr"] == 2e-5 and payload["config"]["correct_bias"] is False
    assert set(payload["metrics"]) == {"final", "best"}
    assert 0.0 <= payload["metrics"]["final"]["acc"] <= 1.0
    assert payload["status"] == "finished" and payload["steps"] == 6
    assert payload["seeds"] == derive_seeds(1)
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert {"step", "epoch", "split", "name", "value"} <= set(curves.columns)
    assert curves[(curves.split == "dev") & (curves.step == 0)].shape[0] > 0  # evaluated at step 0
    loaded = RunResult.load(tmp_path)
    assert loaded.metrics == res.to_dict()["metrics"]


def test_same_seed_same_numbers_different_seed_different(tiny_bert, tiny_glue, tmp_path):
    a = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3), tmp_path / "a")
    b = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3), tmp_path / "b")
    c = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3, seed=2), tmp_path / "c")
    assert a.metrics == b.metrics
    pd.testing.assert_frame_equal(a.curves, b.curves)
    assert (tmp_path / "a" / "curves.csv").read_bytes() == (tmp_path / "b" / "curves.csv").read_bytes()
    assert not a.curves.equals(c.curves)


def test_eval_cadence_and_best_tracking(tiny_bert, tiny_glue):
    # 48 examples / batch 16 = 3 steps per epoch; 3 evals per epoch -> every step
    res = train_and_evaluate(_cfg(tiny_bert, tiny_glue, max_steps=0, epochs=2, evals_per_epoch=3, lr=1e-3), None)
    dev_steps = sorted(res.curves[res.curves.split == "dev"].step.unique())
    assert dev_steps == list(range(0, 7))
    acc = res.curves[(res.curves.split == "dev") & (res.curves.name == "acc")].set_index("step").value
    assert res.metrics["best"]["acc"] == acc.max()
    assert res.best_step == int(acc[acc == acc.max()].index.min())  # strictly better: first max wins
    assert res.metrics["final"]["acc"] == acc.loc[6]


def test_first_update_has_zero_lr(tiny_bert, tiny_glue):
    res = train_and_evaluate(_cfg(tiny_bert, tiny_glue, max_steps=20, log_every=1), None)
    lr = res.curves[(res.curves.split == "train") & (res.curves.name == "lr")].set_index("step").value
    assert lr.loc[1] == 0.0  # warmup 2 steps: lr of updates 1, 2, 3 = 0, 1e-5, 2e-5
    assert lr.loc[2] == pytest.approx(1e-5) and lr.loc[3] == pytest.approx(2e-5)
    assert lr.loc[20] == pytest.approx(2e-5 * 1 / 18)
    assert res.warmup_steps == 2 and res.total_steps == 20


def test_nan_loss_is_a_diverged_run_not_a_crash(tiny_bert, tiny_glue, tmp_path):
    res = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e30, max_steps=40, log_every=2,
                                  max_grad_norm=0.0, adam_eps=1e-30), tmp_path)
    assert res.status == "diverged" and res.failed
    assert "non-finite" in res.error
    assert res.steps < 40
    payload = json.loads((tmp_path / "result.json").read_text())
    assert payload["status"] == "diverged" and payload["metrics"]["final"]["acc"] is None


@pytest.mark.parametrize("family", ["bert", "roberta", "albert"])
@pytest.mark.parametrize("recipe", ["devlin2019", "mosbach2021", "mixout2020"])
def test_recipes_run_on_each_family(tiny_models, tiny_glue, family, recipe):
    res = train_and_evaluate(_cfg(tiny_models[family], tiny_glue, recipe=recipe, max_steps=3), None)
    assert res.status == "finished" and math.isfinite(res.final)
    if family == "roberta":
        assert res.config["weight_decay"] == 0.1 and res.config["max_grad_norm"] == 0.0


@pytest.mark.parametrize("task,metric", [("mrpc", "f1"), ("cola", "mcc"), ("stsb", "pearson")])
def test_task_metrics_and_baselines(tiny_bert, tiny_glue, task, metric):
    res = train_and_evaluate(_cfg(tiny_bert, tiny_glue, task=task, max_steps=3), None)
    assert res.metric == metric
    if task == "cola":
        assert res.majority_baseline == 0.0
    if task == "stsb":
        assert set(res.metrics["final"]) >= {"pearson", "spearmanr"}


def test_train_limit_and_checkpoints(tiny_bert, tiny_glue, tmp_path):
    res = train_and_evaluate(_cfg(tiny_bert, tiny_glue, train_limit=20, dev_limit=10, save_checkpoints="both",
                                  max_steps=4), tmp_path)
    assert res.data["n_train"] == 20 and res.data["n_dev"] == 10
    from transformers import AutoModelForSequenceClassification

    for name in ("final", "best"):
        assert (tmp_path / name / "model.safetensors").exists()
        AutoModelForSequenceClassification.from_pretrained(str(tmp_path / name))


def test_llrd_and_reinit_options_run(tiny_bert, tiny_glue):
    res = train_and_evaluate(_cfg(tiny_bert, tiny_glue, recipe="mosbach2021+llrd+reinit", reinit_layers=1, max_steps=3), None)
    assert res.model_info["reinitialised"] == ["layer.1", "pooler"]
    assert res.config["layer_lr_decay"] == 0.95


def test_zero_segment_ids_mode_changes_pairs_only(tiny_bert, tiny_glue):
    a = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3), None)
    b = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3, segment_ids="zeros"), None)
    assert not a.curves.equals(b.curves)
    c = train_and_evaluate(_cfg(tiny_bert, tiny_glue, task="cola", lr=1e-3), None)
    d = train_and_evaluate(_cfg(tiny_bert, tiny_glue, task="cola", lr=1e-3, segment_ids="zeros"), None)
    pd.testing.assert_frame_equal(c.curves, d.curves)


def test_step0_evaluation_is_a_best_candidate_and_flagged(tiny_bert, tiny_glue):
    # The paper's code starts early stopping from the step-0 metric; lr 1e-30 moves no float32
    # weight, so every later evaluation ties with step 0 and none is strictly better.
    res = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-30, max_steps=6, evals_per_epoch=3), None)
    acc = res.curves[(res.curves.split == "dev") & (res.curves.name == "acc")].set_index("step").value
    assert list(acc.index) == list(range(7)) and acc.nunique() == 1  # step 0 is still in the curves
    assert res.best_step == 0 and res.best_is_untrained
    assert res.metrics["best"]["acc"] == acc.loc[0]
    trained = train_and_evaluate(_cfg(tiny_bert, tiny_glue, lr=1e-3, max_steps=6, evals_per_epoch=3), None)
    assert trained.best_is_untrained == (trained.best_step == 0)


def test_steadytune_run_leaves_threads_and_global_rng_as_they_were(tiny_bert, tiny_glue, tmp_path):
    import torch

    import steadytune

    torch.set_num_threads(1)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    res = steadytune.run(task="rte", model=str(tiny_bert), data_dir=str(tiny_glue), max_steps=2, threads=2,
                         evals_per_epoch=0)
    assert res.execution == {"device": "cpu", "threads": 2}  # what the run used, recorded
    assert "threads" not in res.config and "device" not in res.config
    assert torch.get_num_threads() == 1
    assert torch.equal(torch.random.get_rng_state(), before)
