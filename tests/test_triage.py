"""Offline validation of the doomed-run detector: replay, scores, threshold fitting, the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import precision_score, recall_score
from typer.testing import CliRunner

from steadytune.analyses.triage import (
    StoredRun,
    fit_thresholds,
    load_runs,
    regime_of,
    replay,
    replay_table,
    score,
    triage,
    vanishing_by_regime,
)
from steadytune.cli.app import app
from steadytune.store.records import read_result
from steadytune.store.study import Study
from steadytune.sweeps.driver import run_sweep
from steadytune.sweeps.spec import SweepSpec
from steadytune.training.guard import LOWER, TOP, Thresholds

ROOT = Path(__file__).resolve().parents[1]
PRIOR = {"rte": 0.6931, "cola": 0.6069, "mrpc": 0.6312}  # as results/reproduce.py, for runs that did not store it
TRAIN = ("regime-gpu", "table1-cola1k-cpu", "ablation-cola1k-cpu")


def test_precision_and_recall_match_scikit_learn_at_every_fraction():
    rng = np.random.default_rng(0)
    n = 200
    total = rng.integers(40, 400, n).astype(float)
    doomed = np.where(rng.random(n) < 0.5, np.floor(rng.random(n) * total), np.nan)
    table = pd.DataFrame({"total_steps": total, "doomed_step": doomed, "failed": rng.random(n) < 0.6,
                          "stuck": rng.random(n) < 0.5})
    scores = score(table, (0.1, 0.25, 0.5, 1.0))
    for row in scores.itertuples():
        flagged = ~np.isnan(doomed) & (doomed <= row.fraction * total)
        for label in ("failed", "stuck"):
            y = table[label].to_numpy()
            assert getattr(row, f"precision_{label}") == pytest.approx(precision_score(y, flagged))
            assert getattr(row, f"recall_{label}") == pytest.approx(recall_score(y, flagged))
        assert row.successes_flagged == int((flagged & ~table["failed"]).sum())
    saved = np.nansum(total - (doomed + 1)) / total.sum()  # stop at the step after the verdict
    assert scores["steps_saved"].tolist() == pytest.approx([saved] * 4)
    none = score(table.assign(doomed_step=np.nan), (0.5,)).iloc[0]
    assert math.isnan(none["precision_failed"]) and none["recall_failed"] == 0.0


def _stored(name: str, losses, diags, total=100, failed=True, stuck=True, evals=(), regime="r") -> StoredRun:
    return StoredRun("s", name, "rte", regime, 1, total, math.log(2), 0.5, failed, stuck, tuple(losses),
                     tuple(evals), tuple(diags))


def _grads(ratio: float) -> dict:
    return {LOWER: ratio, TOP: 1.0}


def test_replay_feeds_losses_and_evaluations_up_to_each_diagnostics_step():
    # the loss logged at step 20 leaves the prior: a replay that fed it one step late would
    # still see ln 2 at diagnostics step 20 and call the vanishing rule there.
    losses = [(10, 0.70), (20, 0.30), (30, 0.70)]
    run = _stored("a", losses, [(10, _grads(0.5)), (20, _grads(1e-4)), (30, _grads(1e-4))])
    v = replay(run, Thresholds(vanish_steps=1, plateau_after=math.inf))
    assert v.doomed and v.step == 30 and v.rule == "vanishing"
    vetoed = _stored("b", [(10, 0.7)], [(10, {}), (60, {}), (70, {})], evals=[(0, 0.2), (50, 0.6)])
    assert not replay(vetoed, Thresholds(plateau_after=0.6)).doomed  # dev 0.6 > majority 0.5 at step 50
    untrained = _stored("c", [(10, 0.7)], [(10, {}), (60, {})], evals=[(0, 0.9)])
    assert replay(untrained, Thresholds(plateau_after=0.6)).step == 60  # the step-0 score is not used


def test_fitting_keeps_the_precision_on_the_training_runs_and_maximises_early_recall():
    at_prior = [(s, 0.7) for s in range(10, 101, 10)]
    ticks = [(s, {}) for s in range(10, 101, 10)]
    runs = [_stored("doomed", at_prior, ticks), _stored("slow", at_prior[:7] + [(80, 0.1)], ticks, failed=False)]
    # plateau_after 0.5 also stops the slow run (precision 0.5); 0.8 only the doomed one
    th = fit_thresholds(runs, fractions=(0.5, 1.0), grid={"plateau_after": (0.5, 0.8, 0.9)})
    assert th.plateau_after == 0.8
    with pytest.raises(ValueError, match="no thresholds of the grid reach precision 0.95"):
        fit_thresholds(runs, grid={"plateau_after": (0.5,)})
    with pytest.raises(ValueError, match="unknown threshold keys"):
        fit_thresholds(runs, grid={"patience": (1,)})


def test_the_detectors_defaults_are_the_thresholds_fitted_on_the_training_studies():
    runs = [r for name in TRAIN for r in load_runs(ROOT / "results" / f"{name}.db", PRIOR)]
    assert len(runs) == 164
    assert fit_thresholds(runs) == Thresholds()


def test_vanishing_by_regime_counts_by_hand():
    runs = [_stored("a", [], [(0, _grads(0.2)), (10, _grads(1e-3))], regime="hot"),
            _stored("b", [], [(0, _grads(0.2)), (10, _grads(0.3))], regime="hot"),
            _stored("c", [], [(0, _grads(0.005))], stuck=False, regime="hot"),
            _stored("d", [], [(0, _grads(0.4))], stuck=False, regime="cool")]
    table = vanishing_by_regime(runs).set_index("regime")
    assert table.loc["hot"].tolist() == [3, 2, 1, 1, 1, pytest.approx(np.median([1e-3, 0.2])), 0.005]
    assert table.loc["cool", "stuck"] == 0 and math.isnan(table.loc["cool", "median_ratio_stuck"])


def test_regime_labels():
    assert regime_of({"lr": 2e-4, "correct_bias": False, "epochs": 3.0, "train_limit": 1000}) == \
        "lr 0.0002, no BC, 3 ep, 1000 ex"
    assert regime_of({"lr": 2e-5, "correct_bias": True, "epochs": 20.0, "mixout": 0.9, "max_steps": 0}) == \
        "lr 2e-05, BC, 20 ep, full data, Mixout"


STUCK = {"threads": "1", "log_every": "1", "diag_every": "1", "evals_per_epoch": "0", "lr": "1e-9"}


@pytest.fixture(scope="module")
def flagged_study(tiny_bert, tiny_glue, tmp_path_factory) -> Path:
    """Two tiny runs at the label prior: one under ``flag`` (runs on), one under ``stop``."""
    store = tmp_path_factory.mktemp("triage") / "tiny.db"
    for guard in ("flag", "stop"):
        run_sweep(SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019",), seeds=(1,),
                            max_steps=10, data_dir=str(tiny_glue), overrides={**STUCK, "guard": guard}), store)
    return store


def test_replaying_a_stored_run_gives_the_verdict_the_loop_reached(flagged_study):
    with Study.open(flagged_study, readonly=True) as study:
        runs = study.runs_table()
        recorded = {r: read_result(study, r).guard for r in runs["run_id"]}
    table = replay_table(load_runs(flagged_study)).set_index("run_id")
    for run_id, guard in recorded.items():
        assert table.loc[run_id, "doomed_step"] == guard["step"] == 7
        assert table.loc[run_id, "rule"] == guard["rule"] == "plateau"
    stopped = runs.loc[runs["status"] == "stopped", "run_id"].item()
    assert table.loc[stopped, "stuck"]  # a stopped run counts as stuck


def test_triage_cli_and_its_errors(flagged_study, tmp_path):
    runner = CliRunner()
    shown = runner.invoke(app, ["triage", str(flagged_study), "--fractions", "0.5,1"])
    assert shown.exit_code == 0, shown.output
    assert "by split" in shown.stdout and "the detector's defaults" in shown.stdout
    csv = runner.invoke(app, ["triage", str(flagged_study), "--format", "csv"])
    assert csv.stdout.splitlines()[0].startswith("split,study,task,regime,fraction,n,failed")
    bad = runner.invoke(app, ["triage", str(flagged_study), "--train", "nope"])
    assert bad.exit_code == 2 and "training studies ['nope'] are not among the studies (tiny)" in bad.output
    bad = runner.invoke(app, ["triage", str(flagged_study), "--label-entropy", "rte"])
    assert bad.exit_code == 2 and "--label-entropy 'rte' is not TASK=NUMBER" in bad.output
    old = ROOT / "results" / "regime-rte-cpu.db"
    bad = runner.invoke(app, ["triage", str(old)])
    assert bad.exit_code == 2 and "stored no label entropy" in bad.output and "--label-entropy rte=VALUE" in bad.output
    result = triage([old], label_entropy=PRIOR)
    assert set(result.runs["split"]) == {"all"} and result.train == () and len(result.runs) == 50


def test_the_online_validation_section_renders_from_a_study(flagged_study, tmp_path):
    """docs/reproduction.md § 5 shows the study once it exists (results/reproduce_guard.py)."""
    import importlib.util
    import shutil

    modules = {}
    for name in ("reproduce", "reproduce_guard"):
        spec = importlib.util.spec_from_file_location(name, ROOT / "results" / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    tables = modules["reproduce_guard"].tables(modules["reproduce"].markdown, PRIOR, tmp_path)
    assert tables["guard-online"]().startswith("Not run yet")
    shutil.copy(flagged_study, tmp_path / "guard-1k-cpu.db")
    shown = tables["guard-online"]()
    assert "| guard-1k-cpu | rte | 1e-09 | devlin2019 | flag | 1 | 1 | 1 | 0 | 1.0 |" in shown
    assert "| guard-1k-cpu | rte | 1e-09 | devlin2019 | stop | 1 | 1 | 1 | 1 | 1.0 |" in shown
