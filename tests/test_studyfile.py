"""Study files: `steadytune sweep --config study.toml`, the shipped experiment presets, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadytune.cli.app import app
from steadytune.config.errors import ConfigError
from steadytune.config.run import coerce
from steadytune.store.study import Study
from steadytune.sweeps.experiments import (
    EXPERIMENTS,
    experiment_specs,
    export_experiment,
)
from steadytune.sweeps.spec import SweepSpec, expand
from steadytune.sweeps.studyfile import load_study_file, study_file_text

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "examples" / "studies"


def _normal(spec: SweepSpec) -> tuple:
    """A spec with every value coerced to its key's type (``"1e-5"`` and ``1e-05`` agree)."""
    return (spec.tasks, spec.models, spec.recipes, spec.seeds, spec.train_limit, spec.max_steps, spec.data_dir,
            spec.repeats,
            {k: coerce(k, v) for k, v in spec.overrides.items()},
            {k: [coerce(k, v) for v in vs] for k, vs in spec.grid.items()})


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_shipped_preset_parses_to_its_experiment(name, real_glue, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(real_glue))  # downsampling counts the full-data steps
    path = SHIPPED / f"{name}.toml"
    plan = load_study_file(path)
    want = experiment_specs(name, seeds=range(1, 26), model="minilm")
    assert [_normal(s) for s in plan.specs] == [_normal(s) for s in want]
    assert plan.store == f"{name}.db"
    header = path.read_text().splitlines()[:2]
    assert header[1] == f"#   steadytune sweep --config examples/studies/{name}.toml"
    # and the shipped file is exactly what `steadytune experiment NAME --export` writes today
    out = Path("examples/studies") / f"{name}.toml"
    monkeypatch.chdir(path.parents[2])
    text = path.read_text()
    assert export_experiment(name, out, store=f"{name}.db", seeds=range(1, 26)).read_text() == text


def test_round_trip_of_every_key(tmp_path):
    spec = SweepSpec(tasks=("rte", "mrpc"), models=("minilm", "/x/m"), recipes=("devlin2019", "mosbach2021+llrd"),
                     seeds=(1, 2, 3, 7), overrides={"dev_limit": "128", "correct_bias": "true", "threads": "1"},
                     grid={"lr": ["1e-5", "2e-5"], "segment_ids": ["correct", "zeros"]}, train_limit=100,
                     max_steps=5, data_dir="/data/glue", repeats=3)
    path = tmp_path / "s.toml"
    path.write_text(study_file_text([spec], "s.toml", store="s.db"))
    plan = load_study_file(path)
    assert [_normal(s) for s in plan.specs] == [_normal(spec)] and plan.store == "s.db"
    assert 'seeds = "1-3,7"' in path.read_text()


def test_top_level_keys_and_flag_spellings(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text('tasks = "rte,mrpc"\nrecipes = ["devlin2019"]\nseeds = [3, 1]\nmodel = "minilm"\n'
                    'train_limit = 64\nmax-steps = 4\nstore = "x.db"\nworkers = 2\nkeep-checkpoints = 1\n'
                    'group-size = 4\n'
                    'tracker = ["jsonl:runs/log", "tensorboard:runs/tb"]\n'
                    '[set]\nevals_per_epoch = 1\nlr = 1e-5\n[grid]\nepochs = [3, 10]\n')
    plan = load_study_file(path)
    (spec,) = plan.specs
    assert spec.tasks == ("rte", "mrpc") and spec.seeds == (1, 3) and spec.train_limit == 64 and spec.max_steps == 4
    assert spec.overrides == {"evals_per_epoch": "1", "lr": "1e-05"} and spec.grid == {"epochs": ["3", "10"]}
    assert (plan.store, plan.workers, plan.keep_checkpoints, plan.executor) == ("x.db", 2, 1, "local")
    assert plan.group_size == 4
    assert plan.trackers == ("jsonl:runs/log", "tensorboard:runs/tb")


@pytest.mark.parametrize("text, message", [
    ('tasks = ["rte"]\nrecipes = ["devlin2019"]\nseeds = "1-2"\n\n[set]\nlr = "fast"\n',
     r"s\.toml, line 6: key 'set\.lr': config key 'lr' expects float, got 'fast'$"),
    ('tasks = ["rte"]\nrecipes = ["devlin2019"]\nseeds = "1-2"\n[grid]\nlrr = [1, 2]\n',
     r"s\.toml, line 5: key 'grid\.lrr': unknown config key 'lrr'; valid keys: task, "),
    ('tasks = ["rte"]\nrecipes = ["devlin2019"]\nseeds = "5-1"\n',
     r"s\.toml, line 3: key 'seeds': bad seed range '5-1' in '5-1': the end is below the start$"),
    ('tasks = ["rte"]\nrecipes = ["devlin2019"]\nseeds = "1"\nepochs = 3\n',
     r"s\.toml, line 4: key 'epochs': unknown key; a sweep's keys are tasks, recipes, seeds, model, "),
    ('store = "a.db"\n\n[[sweep]]\ntasks = ["rte"]\nseeds = "1"\n',
     r"s\.toml, line 3: key 'sweep': a sweep needs recipes$"),
    ('tasks = ["rte"]\nrecipes = ["devlin2019"]\nseeds = "1"\nworkers = -1\n',
     r"s\.toml, line 4: key 'workers': expects an integer >= 0, got -1$"),
    ('tasks = ["rte"\nrecipes = 1\n', r"s\.toml: invalid TOML: .*\(at line 2, column 1\)$"),
    ('[[sweep]]\ntasks = ["rte"]\nrecipes = ["devlin2019"]\nseeds = "1"\n[sweep.grid]\nlr = [1e-5, 1e-5]\n',
     r"s\.toml, line 6: key 'sweep\.grid\.lr': grid item 'lr=1e-05,1e-05' repeats a value$"),
])
def test_a_bad_file_is_one_line_naming_line_and_key(tmp_path, text, message):
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_study_file(path)


def test_cli_sweep_from_a_study_file_equals_the_flags(tiny_bert, tiny_glue, tmp_path):
    runner = CliRunner()
    common = ["--set", "threads=1", "--set", "evals_per_epoch=1"]
    flags = ["sweep", "--tasks", "rte", "--recipes", "devlin2019", "--seeds", "1-2", "--model", str(tiny_bert),
             "--data-dir", str(tiny_glue), "--max-steps", "2", *common, "--store", str(tmp_path / "flags.db")]
    assert runner.invoke(app, flags).exit_code == 0
    study = tmp_path / "study.toml"
    study.write_text(f'store = "{tmp_path / "file.db"}"\ntasks = ["rte"]\nrecipes = ["devlin2019"]\nseeds = "1-2"\n'
                     f'model = ["{tiny_bert}"]\ndata-dir = "{tiny_glue}"\nmax-steps = 2\n'
                     '[set]\nthreads = 1\nevals_per_epoch = 1\n')
    res = runner.invoke(app, ["sweep", "--config", str(study)])
    assert res.exit_code == 0, res.output
    with Study.open(tmp_path / "flags.db", readonly=True) as a, Study.open(tmp_path / "file.db", readonly=True) as b:
        runs_a, runs_b = a.runs_table(), b.runs_table()
    assert sorted(runs_a["run_id"]) == sorted(runs_b["run_id"]) and len(runs_a) == 2
    assert sorted(runs_a["final"]) == sorted(runs_b["final"])
    mixed = runner.invoke(app, ["sweep", "--config", str(study), "--seeds", "1-3"])
    assert mixed.exit_code == 2 and "--seeds cannot be combined with --config" in mixed.output


def test_cli_experiment_export_writes_a_runnable_file(tmp_path, real_glue, monkeypatch):
    monkeypatch.setenv("GLUE_DIR", str(real_glue))
    res = CliRunner().invoke(app, ["experiment", "ablation", "--seeds", "1-3", "--export", str(tmp_path / "a.toml")])
    assert res.exit_code == 0, res.output
    plan = load_study_file(tmp_path / "a.toml")
    assert plan.store is None and plan.specs[0].seeds == (1, 2, 3)
    assert f"#   steadytune sweep --config {tmp_path / 'a.toml'} --store STUDY.db" in (tmp_path / "a.toml").read_text()
    assert len(expand(plan.specs[0])) == 3 * 18
