"""Repeats and factorial sweeps: distinct stored runs, exact resume, n counts seed units, the floor."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.analyses.repeats import first_repeats, repeat_spread, with_units
from steadytune.analyses.stats import summarize
from steadytune.cli.app import app
from steadytune.config.run import ConfigError, config_hash
from steadytune.report.html import write_report
from steadytune.store.study import Study
from steadytune.sweeps.spec import SweepSpec, expand, parse_grid


def _sweep(store: Path, model: Path, glue: Path, *extra: str):
    args = ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--store", str(store), "--model", str(model),
            "--data-dir", str(glue), "--max-steps", "3", "--set", "threads=1", "--set", "evals_per_epoch=1",
            "--set", "lr=1e-3", *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res


def test_repeat_spread_by_hand():
    units = pd.DataFrame({"seed": [1, 1, 2, 2, 3, 4, 4, 4], "head_seed": [1, 1, 2, 2, 3, 4, 4, 4],
                          "data_seed": [1, 1, 2, 2, 3, 4, 4, 4], "dropout_seed": [1, 1, 2, 2, 3, 4, 4, 4]})
    # unit 1: 0.50, 0.70 (SS 0.02, diff 0.2); unit 2: equal; unit 3: alone; unit 4: 1, 2, NaN (SS 0.5)
    values = np.array([0.5, 0.7, 0.3, 0.3, 0.9, 1.0, 2.0, np.nan])
    out = repeat_spread(values, units)
    assert out["n_repeated"] == 3
    assert out["repeat_std"] == pytest.approx(math.sqrt((0.02 + 0.0 + 0.5) / (1 + 1 + 1)))
    assert out["repeat_max_diff"] == pytest.approx(1.0)
    same = repeat_spread(np.array([0.1, 0.1, 0.1, 0.7]), units.iloc[[0, 1, 0, 4]])  # 3 x 0.1: mean != 0.1
    assert same == {"n_repeated": 1, "repeat_std": 0.0, "repeat_max_diff": 0.0}
    alone = repeat_spread(np.array([0.1, 0.2]), units.iloc[[0, 2]])
    assert alone["n_repeated"] == 0 and math.isnan(alone["repeat_std"]) and math.isnan(alone["repeat_max_diff"])


def _table(values_by_seed: dict[int, list[float]]) -> pd.DataFrame:
    rows = [{"task": "rte", "model": "m", "recipe": "r", "grid": "", "seed": seed, "repeat": rep, "metric": "acc",
             "final": v, "best": v, "baseline": 0.5, "status": "finished"}
            for seed, values in values_by_seed.items() for rep, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_summary_counts_seeds_not_repeats_and_reports_the_floor_beside_the_spread():
    with_reps = _table({1: [0.6, 0.62], 2: [0.7, 0.7], 3: [0.4, 0.45], 4: [0.8]})
    without = with_reps[with_reps["repeat"] == 0]
    a, b = summarize(with_reps).iloc[0], summarize(without).iloc[0]
    same = ["n", "n_failed", "std", "mean", "median", "max", "mean_ci_low", "mean_ci_high", "failed_ci_high"]
    assert a[same].tolist() == b[same].tolist() and a["n"] == 4 and a["n_failed"] == 1
    assert (a["n_runs"], a["n_repeated"], b["n_runs"], b["n_repeated"]) == (7, 3, 4, 0)
    ss = (0.02 ** 2) / 2 + 0 + (0.05 ** 2) / 2
    assert a["repeat_std"] == pytest.approx(100 * math.sqrt(ss / 3))
    assert a["repeat_max_diff"] == pytest.approx(5.0) and math.isnan(b["repeat_std"])
    # The first repeat stands for the seed even when it is not repeat 0.
    assert first_repeats(with_units(with_reps[with_reps["repeat"] == 1]), ["task"])["seed"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="duplicate runs"):
        summarize(pd.concat([with_reps, with_reps.iloc[:1]]))


def test_grid_parser_takes_ranges_for_stream_seeds_only():
    assert parse_grid(["head_seed=1-3,7", "data_seed=2"]) == {"head_seed": ["1", "2", "3", "7"], "data_seed": ["2"]}
    assert parse_grid(["dropout_seed=none,4"]) == {"dropout_seed": ["none", "4"]}
    for bad, words in ((["head_seed=1-3,2"], "repeats a value"), (["lr=1-3"], "expects float"),
                       (["repeat=1,2"], "--repeats"), (["head_seed=x"], "expects int")):
        with pytest.raises(ConfigError, match=words):
            parse_grid(bad)
    with pytest.raises(ConfigError, match="repeats must be an integer >= 1, got 0"):
        SweepSpec(tasks=("rte",), recipes=("devlin2019",), seeds=(1,), repeats=0)


def test_repeats_are_distinct_runs_repeat_0_is_the_plain_run_and_grid_labels_leave_seeds_out(tiny_bert, tiny_glue):
    base = dict(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019",), seeds=(1, 2),
                data_dir=str(tiny_glue), max_steps=3)
    plain = expand(SweepSpec(**base))
    repeated = expand(SweepSpec(**base, repeats=3, grid=parse_grid(["head_seed=1-2", "lr=1e-3,2e-3"])))
    assert len(repeated) == 2 * 2 * 2 * 3 == len({r.run_id for r in repeated})
    assert {r.grid for r in repeated} == {"lr=0.001", "lr=0.002"}  # stream seeds are within a group
    assert all(r.run_id == config_hash(r.cfg) for r in repeated)
    again = expand(SweepSpec(**base, repeats=2))
    assert {r.run_id for r in again if r.cfg.repeat == 0} == {r.run_id for r in plain}


def test_cpu_repeats_are_bit_identical_and_resume_is_exact(tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "floor.db"
    _sweep(store, tiny_bert, tiny_glue, "--seeds", "1-2")
    res = _sweep(store, tiny_bert, tiny_glue, "--seeds", "1-2", "--repeats", "3")
    assert "done: 4 finished, 0 diverged, 0 errors (2 were already done)" in res.output
    assert "seed 1 repeat=2" in res.output
    again = _sweep(store, tiny_bert, tiny_glue, "--seeds", "1-2", "--repeats", "3")
    assert "(6 were already done)" in again.output
    with Study.open(store, readonly=True) as study:
        runs = study.runs_table()
        curves = study.curves_table()
    assert sorted(runs["repeat"].tolist()) == [0, 0, 1, 1, 2, 2] and runs["run_id"].is_unique
    for _, unit in runs.groupby("seed"):  # every repeat has the same numbers, bit for bit
        assert unit["final"].nunique() == 1 and unit["best"].nunique() == 1
        per_run = [curves[curves["run_id"] == r].drop(columns="run_id").reset_index(drop=True)
                   for r in unit["run_id"]]
        for other in per_run[1:]:
            pd.testing.assert_frame_equal(per_run[0], other, check_exact=True)
    row = summarize(runs).iloc[0]
    assert (row["n"], row["n_runs"], row["n_repeated"]) == (2, 6, 2)
    assert row["repeat_std"] == 0.0 and row["repeat_max_diff"] == 0.0
    shown = CliRunner().invoke(app, ["summary", str(store)])
    assert shown.exit_code == 0 and "repeat std" in shown.stdout
    assert shown.stdout.split("repeat std")[1].split("\n")[2].rstrip(" │").endswith("6 │       0.00")


def test_a_factorial_sweep_is_one_group_of_head_x_data_units(tiny_bert, tiny_glue, tmp_path):
    store = tmp_path / "factorial.db"
    _sweep(store, tiny_bert, tiny_glue, "--seeds", "1", "--grid", "head_seed=1-3", "--grid", "data_seed=1-2")
    with Study.open(store, readonly=True) as study:
        runs = study.runs_table()
    assert set(runs["grid"]) == {""} and len(runs) == 6
    assert sorted(zip(runs["head_seed"], runs["data_seed"])) == [(h, d) for h in (1, 2, 3) for d in (1, 2)]
    assert set(runs["dropout_seed"]) == {1}
    row = summarize(runs).iloc[0]
    assert (row["n"], row["n_runs"]) == (6, 6)
    res = CliRunner().invoke(app, ["summary", str(store), "--variance", "--format", "json"])
    assert res.exit_code == 0, res.output
    table = pd.read_json(io.StringIO(res.stdout))
    assert list(table["component"]) == ["head_init", "data_order", "residual", "total"]
    assert set(table["design"]) == {"head_init 3 × data_order 2, 1 run per cell"}
    shown = CliRunner().invoke(app, ["summary", str(store), "--variance"])
    assert shown.exit_code == 0 and "head_init" in shown.stdout and "which seed stream" in shown.stdout
    both = CliRunner().invoke(app, ["summary", str(store), "--variance", "--robust"])
    assert both.exit_code == 2 and "choose one of --variance, --robust, --improvement" in both.output
    page = write_report(store, tmp_path / "report").read_text()
    for title in ("What more seeds would buy", "Robust aggregates", "Which seed stream causes the spread"):
        assert f"<h2>{title}</h2>" in page
    assert "head_init×data_order" not in page and "head_init 3 × data_order 2, 1 run per cell" in page
    assert (tmp_path / "report" / "figures" / "what_more_seeds_buy.png").exists()
