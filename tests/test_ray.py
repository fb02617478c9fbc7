"""The Ray executor on a real local Ray instance gives the same runs as the local one."""

from __future__ import annotations

import pandas as pd
import pytest

from steadytune.store.records import read_logs
from steadytune.store.study import Study
from steadytune.sweeps.driver import run_sweep
from steadytune.sweeps.events import FinishEvent
from steadytune.sweeps.spec import SweepSpec

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'steadytune[ray]')")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _tables(store) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    with Study.open(store, readonly=True) as study:
        runs = study.runs_table().drop(columns="wall_seconds").sort_values("run_id", ignore_index=True)
        curves = study.curves_table().sort_values(["run_id", "step", "split", "name"], ignore_index=True)
        diags = study.diagnostics_table().sort_values(["run_id", "step", "group", "name"], ignore_index=True)
    return runs, curves, diags


def test_ray_and_local_executors_give_identical_runs(local_ray, tiny_bert, tiny_glue, tmp_path):
    spec = SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019", "mosbach2021"),
                     seeds=(1, 2), overrides={"threads": "1", "evals_per_epoch": "1"}, max_steps=4,
                     data_dir=str(tiny_glue))
    events = []
    by_ray = run_sweep(spec, tmp_path / "ray.db", executor="ray", on_event=events.append)
    assert by_ray["finished"] + by_ray["diverged"] == 4 and by_ray["error"] == 0
    assert sum(isinstance(e, FinishEvent) for e in events) == 4
    by_local = run_sweep(spec, tmp_path / "local.db", executor="local")
    assert by_local["finished"] + by_local["diverged"] == 4
    ray_tables, local_tables = _tables(tmp_path / "ray.db"), _tables(tmp_path / "local.db")
    for mine, theirs in zip(ray_tables, local_tables):
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True)  # same seeds, same threads
    assert len(ray_tables[1]) > 0
    with Study.open(tmp_path / "ray.db", readonly=True) as study:
        run_id = ray_tables[0]["run_id"].iloc[0]
        assert "start run" in read_logs(study, run_id)[0]
    again = run_sweep(spec, tmp_path / "ray.db", executor="ray")  # resume: nothing left to run
    assert again["to_run"] == 0
