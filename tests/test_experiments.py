"""Paper experiment presets, checkpoint retention for sweeps, and Fig. 8 in the report."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from steadytune.cli.app import app
from steadytune.config.run import ConfigError, RunConfig, config_hash
from steadytune.store.checkpoints import list_checkpoints
from steadytune.store.study import Study
from steadytune.sweeps.checkpoints import (
    checkpoint_root,
    prune_checkpoints,
    select_kept,
)
from steadytune.sweeps.driver import plan_runs, run_sweep
from steadytune.sweeps.experiments import EXPERIMENTS, experiment_specs, full_data_steps
from steadytune.sweeps.spec import (
    SweepSpec,
    expand,
    parse_grid,
    parse_seeds,
    spec_execution,
)
from steadytune.sweeps.worker import execute_run

SEEDS25 = parse_seeds("1-25")


def _runs(specs: list[SweepSpec]) -> list:
    return [run for spec in specs for run in expand(spec)]


# ------------------------------------------------------------------ presets


def test_presets_expand_to_the_paper_grids(tiny_bert, tiny_glue):
    common = dict(seeds=SEEDS25, model=str(tiny_bert), data_dir=str(tiny_glue))
    assert set(EXPERIMENTS) == {"table1", "downsampling", "bias_correction", "ablation"}

    ablation = _runs(experiment_specs("ablation", **common))
    assert len(ablation) == 450 == len({r.run_id for r in ablation})
    assert len({r.grid for r in ablation}) == 18 and {r.cfg.recipe for r in ablation} == {"devlin2019"}

    bc = _runs(experiment_specs("bias_correction", **common))
    assert len(bc) == 150 == len({r.run_id for r in bc})
    assert {(r.cfg.recipe, r.grid, r.cfg.correct_bias, r.cfg.epochs) for r in bc if r.cfg.seed == 1} == {
        (rec, f"lr={lr}", rec.endswith("+bc"), 3.0)
        for rec in ("devlin2019", "devlin2019+bc") for lr in ("1e-05", "2e-05", "3e-05")}

    table1 = _runs(experiment_specs("table1", **common))
    assert len(table1) == 225 and {r.grid for r in table1} == {""}
    assert Counter((r.cfg.task, r.cfg.recipe) for r in table1) == {
        (t, rec): 25 for t in ("rte", "mrpc", "cola") for rec in ("devlin2019", "mixout2020", "mosbach2021")}

    down = _runs(experiment_specs("downsampling", **common))
    assert len(down) == 225 == len({r.run_id for r in down})
    steps = 3 * -(-48 // 16)  # tiny_glue has 48 training examples
    labels = {"max_steps=0,train_limit=0", "max_steps=0,train_limit=1000", f"max_steps={steps},train_limit=1000"}
    assert {(r.cfg.task, r.grid) for r in down} == {(t, g) for t in ("rte", "mrpc", "cola") for g in labels}
    # the full-data setting IS the plain Devlin run: same id as in table1
    full = {r.run_id for r in down if r.grid == "max_steps=0,train_limit=0"}
    assert full == {r.run_id for r in table1 if r.cfg.recipe == "devlin2019"}

    small = experiment_specs("table1", seeds=(1,), model=str(tiny_bert), data_dir=str(tiny_glue),
                             tasks=["rte"], overrides={"threads": "1"}, train_limit=20)
    assert [(r.cfg.task, r.cfg.train_limit) for r in _runs(small)] == [("rte", 20)] * 3
    assert {spec_execution(s).threads for s in small} == {1}


def test_preset_errors(tiny_bert, tiny_glue):
    common = dict(seeds=(1,), model=str(tiny_bert), data_dir=str(tiny_glue))
    with pytest.raises(ConfigError, match="unknown experiment 'fig3'.*ablation"):
        experiment_specs("fig3", **common)
    with pytest.raises(ConfigError, match="sets train_limit itself"):
        experiment_specs("downsampling", train_limit=100, **common)
    with pytest.raises(ConfigError, match="both set"):  # --set of a swept key
        _runs(experiment_specs("ablation", overrides={"lr": "1e-5"}, **common))


def test_downsampling_steps_come_from_the_real_files(real_glue, tiny_bert):
    assert [full_data_steps(t, str(real_glue)) for t in ("rte", "mrpc", "cola")] == [468, 690, 1605]
    assert full_data_steps("rte", str(real_glue), {"batch_size": "32"}) == 3 * 78
    specs = experiment_specs("downsampling", seeds=(1,), model=str(tiny_bert), data_dir=str(real_glue),
                             tasks=["rte"])
    assert [r.grid for r in _runs(specs)] == ["max_steps=0,train_limit=0", "max_steps=0,train_limit=1000",
                                              "max_steps=468,train_limit=1000"]


def test_cli_lists_and_plans_experiments(tiny_bert, tiny_glue, tmp_path):
    runner = CliRunner()
    for args in (["experiments"], ["experiment", "--list"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0 and all(name in res.stdout for name in EXPERIMENTS), res.output
    store = tmp_path / "ablation.db"
    base = ["experiment", "ablation", "--store", str(store), "--model", str(tiny_bert),
            "--data-dir", str(tiny_glue)]
    res = runner.invoke(app, [*base, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "450 runs planned, 0 already done, 450 to run" in res.stdout
    res = runner.invoke(app, ["experiment", "downsampling", "--store", str(store), "--seeds", "1-2", "--model",
                              str(tiny_bert), "--data-dir", str(tiny_glue), "--dry-run"])
    assert res.exit_code == 0 and "18 runs planned" in res.stdout and "max_steps=9,train_limit=1000" in res.stdout
    assert runner.invoke(app, [*base, "--set", "lr=1e-5"]).exit_code == 2
    assert runner.invoke(app, ["experiment", "ablation"]).exit_code == 2  # no --store
    assert not store.exists()


# ------------------------------------------------------------------ checkpoint retention

# lr 1e-3 for 40 steps on the tiny model: seed 1 fails, seeds 2-4 succeed (checked below);
# lr 1e-5 never leaves the majority class: every run fails.
KEEP_ARGS = ["--tasks", "rte", "--recipes", "devlin2019", "--seeds", "1-4", "--grid", "lr=1e-3,1e-5",
             "--max-steps", "40", "--set", "threads=1", "--set", "evals_per_epoch=1"]


def keep_spec(model: Path, glue: Path, seeds: tuple[int, ...] = (1, 2, 3, 4), lrs: str = "1e-3,1e-5") -> SweepSpec:
    return SweepSpec(tasks=("rte",), models=(str(model),), recipes=("devlin2019",), seeds=seeds, max_steps=40,
                     data_dir=str(glue), overrides={"threads": "1", "evals_per_epoch": "1"},
                     grid=parse_grid([f"lr={lrs}"]))


@pytest.fixture(scope="module")
def kept_study(tiny_bert, tiny_glue, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("keep") / "study.db"
    res = CliRunner().invoke(app, ["sweep", *KEEP_ARGS, "--store", str(store), "--model", str(tiny_bert),
                                   "--data-dir", str(tiny_glue), "--keep-checkpoints", "1"])
    assert res.exit_code == 0, res.output
    assert "checkpoints kept: 3" in res.output
    return store


def test_keep_checkpoints_keeps_one_of_each_kind_per_group(kept_study, tiny_bert, tiny_glue):
    from transformers import AutoModelForSequenceClassification

    with Study.open(kept_study, readonly=True) as study:
        runs = study.runs_table()
        kept = list_checkpoints(study)
        results = {r: json.loads(study._conn.execute("SELECT result_json FROM runs WHERE run_id=?", (r,))
                                 .fetchone()[0]) for r in runs["run_id"]}
    outcome = {(g, s): bool(f) for g, s, f in zip(runs["grid"], runs["seed"], runs["failed"])}
    assert [outcome["lr=0.001", s] for s in (1, 2, 3, 4)] == [True, False, False, False], "tiny-model outcomes moved"
    assert all(outcome["lr=1e-05", s] for s in (1, 2, 3, 4))
    # the rule: per group and verdict, the lowest seed
    assert sorted(zip(kept["grid"], kept["failed"], kept["seed"])) == [
        ("lr=0.001", False, 2), ("lr=0.001", True, 1), ("lr=1e-05", True, 1)]
    root = checkpoint_root(kept_study)
    assert sorted(p.name for p in root.iterdir()) == sorted(kept["run_id"])  # the others are deleted
    for path, run_id, failed in zip(kept["path"], kept["run_id"], kept["failed"]):
        assert Path(path) == root.resolve() / run_id / "final"
        model = AutoModelForSequenceClassification.from_pretrained(path)
        assert model.num_labels == 2
        assert json.loads((Path(path).parent / "result.json").read_text())["failed"] == failed
    # run ids and records are those of a sweep without --keep-checkpoints
    plain = {r.run_id: r for r in plan_runs(keep_spec(tiny_bert, tiny_glue), kept_study)}
    assert sorted(runs["run_id"]) == sorted(plain)
    for run_id, result in results.items():
        assert result["config"]["save_checkpoints"] == "none"
        assert config_hash(RunConfig(**result["config"])) == run_id
    run_id = kept["run_id"].iloc[0]
    again = execute_run(run_id, plain[run_id].cfg)  # no checkpoint: the same numbers
    assert again.result["metrics"] == results[run_id]["metrics"]


def test_kills_around_the_checkpoint_leave_nothing_that_breaks(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    import steadytune.store.study as store_mod
    import steadytune.sweeps.checkpoints as ckpt
    import steadytune.sweeps.driver as driver  # where the driver looks prune_checkpoints up

    store = tmp_path / "study.db"
    root = checkpoint_root(store).resolve()
    spec = keep_spec(tiny_bert, tiny_glue, seeds=(1, 2, 3), lrs="1e-3")
    real_record, real_prune = store_mod.Study.record_result, ckpt.prune_checkpoints

    # 1. killed after seed 2 saved its model, before its result was recorded
    def record_then_die(self, run_id, *args, **kwargs):
        if self._conn.execute("SELECT seed FROM runs WHERE run_id=?", (run_id,)).fetchone()[0] == 2:
            raise SystemExit("kill -9")
        return real_record(self, run_id, *args, **kwargs)

    monkeypatch.setattr(store_mod.Study, "record_result", record_then_die)
    with pytest.raises(SystemExit):
        run_sweep(spec, store, keep_checkpoints=1)
    monkeypatch.setattr(store_mod.Study, "record_result", real_record)
    with Study.open(store, readonly=True) as study:
        table = study.runs_table(all_statuses=True).set_index("seed")
    orphan = table.loc[2, "run_id"]
    assert table.loc[2, "status"] == "running" and (root / orphan / "final").is_dir()

    # 2. resumed: seed 2 is redone (its folder replaced), then killed between seed 3's record and prune
    calls = []

    def prune_or_die(study, keep, groups=None, root=None):
        calls.append(groups)
        if len(calls) == 3:  # start-up prune, seed 2's, then seed 3's
            raise SystemExit("kill -9")
        return real_prune(study, keep, groups, root)

    monkeypatch.setattr(driver, "prune_checkpoints", prune_or_die)
    with pytest.raises(SystemExit):
        run_sweep(spec, store, keep_checkpoints=1)
    monkeypatch.setattr(driver, "prune_checkpoints", real_prune)
    with Study.open(store, readonly=True) as study:
        table = study.runs_table(all_statuses=True).set_index("seed")
        assert set(table["status"]) == {"finished"}
        assert study._conn.execute("SELECT attempts FROM runs WHERE run_id=?", (orphan,)).fetchone()[0] == 2
    assert (root / table.loc[3, "run_id"]).is_dir()  # recorded, not yet judged

    # 3. the next sweep has nothing to run; its start-up prune judges seed 3's folder
    out = run_sweep(spec, store, keep_checkpoints=1)
    assert (out["to_run"], out["checkpoints"]) == (0, 2)
    with Study.open(store, readonly=True) as study:
        kept = list_checkpoints(study)
    assert sorted(zip(kept["seed"], kept["failed"])) == [(1, True), (2, False)]
    assert sorted(p.name for p in root.iterdir()) == sorted(kept["run_id"])

    # 4. the leftover folder of a run that errored goes at the next prune; kept ones stay
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE runs SET status='error' WHERE seed=3")
    (root / table.loc[3, "run_id"] / "final").mkdir(parents=True)
    with Study.open(store) as study:
        assert sorted(prune_checkpoints(study, 1)) == sorted(kept["run_id"])
    assert sorted(p.name for p in root.iterdir()) == sorted(kept["run_id"])


def test_select_kept_and_old_studies(tmp_path):
    runs = pd.DataFrame({"run_id": list("abcdef"), "task": "rte", "model": "m", "recipe": "r",
                         "grid": ["x", "x", "x", "x", "y", "y"], "seed": [4, 2, 3, 1, 9, 8],
                         "failed": [False, False, True, True, True, True]})
    assert sorted(select_kept(runs, 1)["run_id"]) == ["b", "d", "f"]
    assert sorted(select_kept(runs, 2)["run_id"]) == list("abcdef")
    assert select_kept(runs, 0).empty
    store = tmp_path / "old.db"
    Study.open(store).close()
    with sqlite3.connect(store) as conn:
        conn.execute("DROP TABLE checkpoints")  # a study written before the table existed
    with Study.open(store, readonly=True) as study:
        assert list_checkpoints(study).empty
    with Study.open(store) as study:
        assert prune_checkpoints(study, 1) == [] and list_checkpoints(study).empty
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        run_sweep(SweepSpec(tasks=("rte",), recipes=("devlin2019",), seeds=(1,)), store, keep_checkpoints=-1)


# ------------------------------------------------------------------ report


def test_report_has_the_generalisation_section(kept_study, tmp_path):
    from steadytune.report.html import write_report

    page = write_report(kept_study, tmp_path / "report").read_text()
    assert "Generalisation (Fig. 8a): rte, dev acc over training of 3 successful runs" in page
    assert "Generalisation (Fig. 8b): rte, final dev metric vs final training loss (8 runs)" in page
