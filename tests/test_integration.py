"""Integration: the packaged pre-trained MiniLM on real GLUE slices (small, but real)."""

import math

import pytest

from steadytune.config.recipes import resolve_config
from steadytune.training.loop import train_and_evaluate

pytestmark = pytest.mark.integration


def test_minilm_on_a_real_rte_slice(real_glue, tmp_path):
    cfg = resolve_config(task="rte", recipe="mosbach2021", seed=1, model="minilm",
                         overrides={"data_dir": str(real_glue), "train_limit": 64, "max_steps": 8,
                                    "evals_per_epoch": 1})
    res = train_and_evaluate(cfg, tmp_path)
    assert res.status == "finished"
    assert res.model_info["model_type"] == "bert" and res.model_info["new_parameters"] == ["classifier.bias", "classifier.weight"]
    assert res.data["n_train"] == 64 and res.data["n_dev"] == 277
    assert res.majority_baseline == pytest.approx(146 / 277)
    assert 0.3 < res.final < 0.75 and math.isfinite(res.metrics["final"]["loss"])
    # the pre-trained encoder gives a sensible starting loss for a 2-class head
    dev = res.curves[(res.curves.split == "dev") & (res.curves.name == "loss")]
    assert 0.6 < dev.value.iloc[0] < 0.8


def test_minilm_same_seed_is_reproducible(real_glue):
    cfg = resolve_config(task="mrpc", recipe="devlin2019", seed=5, model="minilm",
                         overrides={"data_dir": str(real_glue), "train_limit": 32, "max_steps": 3,
                                    "evals_per_epoch": 0})
    a, b = train_and_evaluate(cfg), train_and_evaluate(cfg)
    assert a.metrics == b.metrics
    assert a.curves.equals(b.curves)
    assert a.majority_baseline == pytest.approx(2 * 279 / (2 * 279 + 129))  # F1 of always "1"
