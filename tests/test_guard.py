"""The doomed-run detector and its policies: rules by hand, the loop's calls, stop, attempts, switch."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from steadytune.config.recipes import resolve_config
from steadytune.config.run import (
    ConfigError,
    RunConfig,
    config_hash,
    identity,
    trained_config,
)
from steadytune.training.guard import Guard, Memory, Signals, Thresholds, judge
from steadytune.training.loop import train_and_evaluate
from steadytune.training.results import derive_seeds
from steadytune.training.runner import run_attempts

H = math.log(2)  # a balanced binary label prior
TH = Thresholds(vanish_ratio=1e-2, vanish_steps=2, prior_fraction=0.9, plateau_after=0.5, collapse_steps=0)


def sig(step=10, total=100, loss=H, lower=0.1, top=1.0, entropy=H, majority=1.0, dev=None, baseline=0.5):
    return Signals(step, total, loss, H, lower, top, entropy, majority, dev, baseline)


def test_vanishing_needs_consecutive_steps_at_the_prior():
    v, m = judge(sig(step=10, lower=0.005), Memory(), TH)  # ratio 5e-3 < 1e-2: one step
    assert not v.doomed and m.vanishing == 1
    v, m2 = judge(sig(step=20, lower=0.005), m, TH)  # two in a row
    assert v.doomed and (v.rule, v.step) == ("vanishing", 20) and "5.0e-03" in v.reason
    # the count restarts when the ratio recovers or the loss leaves the prior (0.9 * ln 2 = 0.624)
    _, reset = judge(sig(step=20, lower=0.02), m, TH)
    assert reset.vanishing == 0
    v, reset = judge(sig(step=20, lower=0.005, loss=0.6), m, TH)
    assert not v.doomed and reset.vanishing == 0
    assert judge(sig(step=10, lower=0.01), m, TH)[1].vanishing == 0  # exactly 1e-2 is not below


def test_plateau_fires_from_its_fraction_on_only_if_the_loss_never_left_the_prior():
    th = TH
    assert not judge(sig(step=49), Memory(), th)[0].doomed  # 49 < 0.5 * 100
    v, _ = judge(sig(step=50), Memory(), th)
    assert v.doomed and v.rule == "plateau" and "0.624" in v.reason
    left = Memory(min_loss=0.5)  # once below 0.9 ln 2, a later return to the prior does not count
    assert not judge(sig(step=60), left, th)[0].doomed
    assert judge(sig(step=60, loss=0.6239), Memory(), th)[1].min_loss == pytest.approx(0.6239)
    assert not judge(sig(step=60, loss=0.6237), Memory(), th)[0].doomed  # 0.9 * ln 2 = 0.62383
    assert judge(sig(step=60, loss=0.6239), Memory(), th)[0].doomed


def test_plateau_is_vetoed_by_a_dev_score_above_the_majority_and_can_need_collapse():
    assert not judge(sig(step=60, dev=0.51, baseline=0.5), Memory(), TH)[0].doomed
    assert judge(sig(step=60, dev=0.5, baseline=0.5), Memory(), TH)[0].doomed  # at the baseline: failed
    collapse = Thresholds(plateau_after=0.5, collapse_steps=2)
    v, m = judge(sig(step=60), Memory(), collapse)
    assert not v.doomed and m.collapsed == 1
    assert judge(sig(step=70), m, collapse)[0].doomed
    assert judge(sig(step=70, majority=0.9), m, collapse)[1].collapsed == 0  # mixed predictions
    assert judge(sig(step=70, entropy=0.3), m, collapse)[1].collapsed == 0  # confident, not the prior


def test_regression_or_missing_signals_are_never_doomed():
    none = Signals(90, 100, None, None, 1e-9, 1.0, None, None, None, 0.0)
    assert not judge(none, Memory(vanishing=5), TH)[0].doomed
    no_loss = sig(step=90, loss=None, lower=1e-9)
    assert not judge(no_loss, Memory(vanishing=5), TH)[0].doomed
    assert not judge(sig(step=90, loss=float("nan")), Memory(), TH)[0].doomed
    assert not judge(sig(step=10, lower=1e-9, top=0.0), Memory(vanishing=5), TH)[0].doomed  # no ratio


def test_guard_keeps_the_first_doomed_verdict_and_ignores_the_step0_evaluation():
    g = Guard("stop", 100, H, 0.5, TH)
    diag = {("grad_norm_layer", "embeddings"): 1e-4, ("grad_norm_layer", "classifier"): 1.0}
    g.note_eval(0, 0.9)  # the untrained model's score does not veto anything
    g.note_loss(0.7)
    assert not g.check(10, diag).doomed
    first = g.check(20, diag)
    assert first.doomed and first.step == 20 and g.stops
    g.note_loss(0.01)
    assert g.check(30, {}) == first
    assert g.record(21, stopped=True) == {"policy": "stop", "attempt": 1, "verdict": "doomed", "rule": "vanishing",
                                          "step": 20, "reason": first.reason, "stopped": True, "steps_saved": 79}
    assert Guard("flag", 10, H, 0.5).record(10, False)["verdict"] == "unknown"  # never checked


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize("changes,words", [
    ({"guard": "pause"}, "guard='pause' is invalid; choose one of off, flag, stop, restart, switch"),
    ({"guard_attempts": "0"}, "guard_attempts must be >= 1, got 0"),
    ({"guard_attempts": "-2"}, "guard_attempts must be >= 1, got -2"),
    ({"guard": "stop", "diag_every": "0"}, "guard=stop needs diagnostics"),
    ({"guard": "restart", "diag_every": "0"}, "guard=restart needs diagnostics"),
    ({"guard": "switch", "guard_switch": "lr"}, "guard_switch='lr': 'lr' is not key=value"),
    ({"guard": "switch", "guard_switch": "learning_rate=1"}, "unknown config key 'learning_rate'"),
    ({"guard": "switch", "guard_switch": "seed=3"}, "guard_switch='seed=3': seed cannot be switched"),
    ({"guard": "switch", "guard_switch": "correct_bias=false"}, "guard_switch='correct_bias=false' changes nothing"),
    ({"guard": "switch", "guard_switch": "lr=-1"}, None),  # invalid once applied: at training time
    ({"attempt": "0"}, "attempt must be >= 1"),
])
def test_bad_guard_settings_are_one_line_errors_naming_the_key(changes, words):
    if words is None:
        cfg = resolve_config(model_type="bert", overrides={**changes, "attempt": "2"})
        with pytest.raises(ConfigError, match="lr must be > 0"):
            trained_config(cfg)
        return
    with pytest.raises(ConfigError) as err:
        resolve_config(model_type="bert", overrides=changes)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_flag_is_the_default_and_new_keys_keep_every_old_run_id():
    base = RunConfig()
    assert (base.guard, base.guard_attempts, base.attempt) == ("flag", 3, 1)
    stop = base.replace(guard="stop")
    assert config_hash(stop) != config_hash(base)
    assert config_hash(base.replace(guard="restart", attempt=2)) != config_hash(base.replace(guard="restart"))
    assert identity(base.replace(guard="restart", attempt=2).to_dict()) == identity(base.replace(guard="restart").to_dict())


def test_attempts_draw_new_seed_streams_from_seed_and_attempt():
    first, second, third = derive_seeds(7), derive_seeds(7, attempt=2), derive_seeds(7, attempt=3)
    assert first == derive_seeds(7, attempt=1) and "attempt" not in first  # attempt 1: the streams of old runs
    assert second == derive_seeds(7, attempt=2) and second["attempt"] == 2 and second["run"] == 7
    streams = ("head_init", "data_order", "dropout")
    values = {s: {d[s] for d in (first, second, third, derive_seeds(8), derive_seeds(8, attempt=2))} for s in streams}
    assert all(len(v) == 5 for v in values.values())
    expected = np.random.SeedSequence([7, 2]).generate_state(3).tolist()  # by hand
    assert [second[s] for s in streams] == expected
    # a stream seed that is set is drawn again too: from (its seed, attempt)
    own = derive_seeds(7, head_seed=3, attempt=2)
    assert own["head_init"] == int(np.random.SeedSequence([3, 2]).generate_state(3)[0]) != derive_seeds(3)["head_init"]
    assert (own["data_order"], own["head_seed"], own["attempt"]) == (second["data_order"], 3, 2)


def test_switch_trains_with_the_change_from_the_second_attempt_on():
    cfg = resolve_config(model_type="bert", overrides={"guard": "switch", "guard_switch": "correct_bias=true,lr=1e-5"})
    assert trained_config(cfg) == cfg
    later = cfg.replace(attempt=2)
    trained = trained_config(later)
    assert (trained.correct_bias, trained.lr, trained.attempt) == (True, 1e-5, 2)
    assert (later.correct_bias, later.lr) == (False, 2e-5)  # the run's identity stays the planned one
    assert trained_config(cfg.replace(guard="restart", attempt=2)).correct_bias is False


# ------------------------------------------------------------------------------ the loop

# lr 1e-9 keeps the tiny model's training loss at ln 2 (the label prior of the balanced
# tiny RTE): the plateau rule then fires at step 7 of 10, whatever the machine.
STUCK = {"max_steps": 10, "log_every": 1, "diag_every": 1, "evals_per_epoch": 0, "lr": 1e-9}


def tiny_cfg(tiny_bert, tiny_glue, **overrides):
    return resolve_config(task="rte", model=str(tiny_bert), model_type="bert",
                          overrides={"data_dir": str(tiny_glue), **STUCK, **overrides})


def test_flag_changes_nothing_and_stop_ends_the_run_at_the_verdict(tiny_bert, tiny_glue, tmp_path):
    off = train_and_evaluate(tiny_cfg(tiny_bert, tiny_glue, guard="off"))
    flag = train_and_evaluate(tiny_cfg(tiny_bert, tiny_glue))
    stop = train_and_evaluate(tiny_cfg(tiny_bert, tiny_glue, guard="stop"), tmp_path / "stop")
    assert off.guard == {}
    pd.testing.assert_frame_equal(off.curves, flag.curves)  # bit for bit
    pd.testing.assert_frame_equal(off.diagnostics, flag.diagnostics)
    assert off.metrics == flag.metrics and off.status == flag.status == "finished"
    assert flag.guard["verdict"] == "doomed" and flag.guard["rule"] == "plateau" and flag.guard["step"] == 7
    assert flag.guard["stopped"] is False and flag.guard["steps_saved"] == 0
    assert (stop.status, stop.steps, stop.failed, stop.total_steps) == ("stopped", 8, True, 10)
    assert stop.guard["stopped"] and stop.guard["steps_saved"] == 2 and stop.guard["step"] == 7
    assert stop.error.startswith("doomed (plateau) at step 7") and math.isnan(stop.final)
    same = stop.curves[stop.curves["split"] == "train"]
    pd.testing.assert_frame_equal(same.reset_index(drop=True),
                                  flag.curves[(flag.curves["split"] == "train") & (flag.curves["step"] <= 7)]
                                  .reset_index(drop=True))  # the same run up to the verdict
    assert stop.diagnostics["step"].max() == 7
    assert (tmp_path / "stop" / "result.json").exists() and not (tmp_path / "stop" / "final").exists()


def test_restart_and_switch_attempts_in_one_run_call(tiny_bert, tiny_glue, tmp_path):
    cfg = tiny_cfg(tiny_bert, tiny_glue, guard="restart", guard_attempts=3)
    last = run_attempts(cfg, tmp_path / "r")
    assert (last.status, last.guard["attempt"], last.seeds["attempt"]) == ("stopped", 3, 3)
    assert sorted(p.name for p in (tmp_path / "r" / "attempts").iterdir()) == ["1", "2", "3"]
    assert (tmp_path / "r" / "result.json").read_text() == (tmp_path / "r" / "attempts" / "3" / "result.json").read_text()
    # switch: attempt 2 trains with log_every=50, so no loss is logged before the last check
    # and the plateau rule cannot fire: the seed is kept at attempt 2.
    sw = run_attempts(cfg.replace(guard="switch", guard_switch="log_every=50"), tmp_path / "s")
    assert (sw.status, sw.guard["attempt"], sw.guard["switched"]) == ("finished", 2, {"log_every": 50})
    assert sw.config["log_every"] == 1 and sw.config["attempt"] == 2
    assert sw.guard["verdict"] == "ok"


def test_grouped_runs_are_guarded_as_they_are_alone(tiny_bert, tiny_glue):
    """Several seeds trained as one grouped model (issue 14): each run's guard sees what it
    sees alone, and a stopped run ends alone at the same step with the same record."""
    from steadytune.config.execution import Execution
    from steadytune.training.grouped.loop import group_key, train_group
    from steadytune.training.runner import process_state_kept

    cpu = Execution(device="cpu", threads=1)
    for guard in ("flag", "stop"):
        cfgs = [tiny_cfg(tiny_bert, tiny_glue, guard=guard, precision="fp32").replace(seed=s) for s in (1, 2, 3)]
        with process_state_kept():
            alone = [train_and_evaluate(c, execution=cpu) for c in cfgs]
        with process_state_kept():
            grouped = train_group(cfgs, execution=cpu)
        for a, g in zip(alone, grouped):
            assert (g.status, g.steps, g.error, g.guard) == (a.status, a.steps, a.error, a.guard)
            assert g.guard["verdict"] == "doomed" and g.guard["step"] == 7
            assert g.curves[["step", "split", "name"]].equals(a.curves[["step", "split", "name"]])
            assert g.diagnostics["step"].max() == a.diagnostics["step"].max()
    switch = tiny_cfg(tiny_bert, tiny_glue, guard="switch", guard_switch="lr=1e-8", precision="fp32")
    assert group_key(switch.replace(attempt=2)) != group_key(switch)  # trains with another lr
    assert group_key(switch.replace(attempt=2, seed=5)) == group_key(switch.replace(attempt=3))
    with process_state_kept():
        second = train_group([switch.replace(attempt=2, seed=s) for s in (1, 2)], execution=cpu)
    assert [r.guard["switched"] for r in second] == [{"lr": 1e-8}] * 2
    assert [r.config["lr"] for r in second] == [1e-9, 1e-9] and [r.seeds["attempt"] for r in second] == [2, 2]
