"""The Ray executor on a real local Ray instance gives the same runs as the local one."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from steadytune.store.records import read_logs
from steadytune.store.study import Study
from steadytune.sweeps.driver import run_sweep
from steadytune.sweeps.events import FinishEvent
from steadytune.sweeps.spec import SweepSpec

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'steadytune[ray]')")


@pytest.fixture
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


# ----------------------------------------------------------------------------- a real two-node cluster


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Node:
    """One `ray start --block` node in its own process group, stopped with everything it started."""

    def __init__(self, args: list[str], env: dict[str, str], log) -> None:
        import subprocess

        ray_cli = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        self.proc = subprocess.Popen([ray_cli, "start", "--block", "--disable-usage-stats", *args], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL the node: its raylet, object store and workers (everything it started)."""
        import psutil

        try:
            family = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for process in family:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(timeout=30)


@pytest.fixture
def two_nodes(tmp_path, monkeypatch):
    """A head and a second node started with `ray start` on this machine, each with 1 CPU and 1
    declared GPU (there is none: a resource count), and its own custom resource; stopped at the end."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_health_check_period_ms": "500",
           "RAY_health_check_failure_threshold": "4", "RAY_health_check_initial_delay_ms": "0"}
    for key in ("RAY_AUTH_MODE", "RAY_health_check_period_ms"):
        monkeypatch.setenv(key, env[key])
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=1"]
    nodes: list[_Node] = []
    logs = [open(tmp_path / f"ray-node-{i}.log", "w") for i in range(2)]
    short = tempfile.mkdtemp(prefix="st-ray-", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    try:
        nodes.append(_Node(["--head", f"--port={port}", f"--ray-client-server-port={_free_port()}",
                            "--include-dashboard=false", f"--temp-dir={short}", '--resources={"node_a": 1}',
                            *common], env, logs[0]))
        _wait_started(nodes[0], tmp_path / "ray-node-0.log")
        nodes.append(_Node([f"--address={address}", '--resources={"node_b": 1}', *common], env, logs[1]))
        _wait_started(nodes[1], tmp_path / "ray-node-1.log")
        yield address, nodes
    finally:
        for node in reversed(nodes):
            node.kill()
        for log in logs:
            log.close()
        shutil.rmtree(short, ignore_errors=True)


def _wait_started(node: _Node, log: Path, timeout: float = 180) -> None:
    """Until `ray start` says the node runs (it prints that once the node has joined the cluster)."""
    import time

    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        assert node.proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def _nodes_of(store) -> dict[str, str]:
    """run_id -> the Ray node (and resources) its last attempt's log names."""
    out = {}
    with Study.open(store, readonly=True) as study:
        for run_id in study.runs_table()["run_id"]:
            line = [ln for ln in read_logs(study, run_id)[-1].splitlines() if ln.startswith("ray node ")]
            out[run_id] = line[-1] if line else ""
    return out


def test_two_node_cluster_runs_on_both_nodes_survives_a_node_kill_and_equals_local(
        two_nodes, tiny_bert, tiny_glue, tmp_path):
    address, nodes = two_nodes
    spec = SweepSpec(tasks=("rte",), models=(str(tiny_bert),), recipes=("devlin2019", "mosbach2021"),
                     seeds=(1, 2, 3, 4), overrides={"threads": "1", "evals_per_epoch": "1", "runs_per_gpu": "2"},
                     max_steps=4, data_dir=str(tiny_glue))
    store = tmp_path / "cluster.db"
    killed: list[str] = []
    ray_nodes: dict[str, str] = {}

    def kill_node_b_after_its_first_run(event) -> None:
        if not isinstance(event, FinishEvent) or killed or event.status == "error":
            return
        with Study.open(store, readonly=True) as study:
            log = read_logs(study, event.run_id)[-1]
        if not ray_nodes:
            import ray

            ray_nodes.update({n["NodeID"]: ("node_b" if "node_b" in n["Resources"] else "node_a")
                              for n in ray.nodes()})
        node = next(ln for ln in log.splitlines() if ln.startswith("ray node ")).split()[2]
        if ray_nodes.get(node) == "node_b":
            nodes[1].kill()  # mid-sweep: runs are still pending or in flight
            killed.append(event.run_id)

    first = run_sweep(spec, store, executor="ray", ray_address=address, on_event=kill_node_b_after_its_first_run)
    assert killed, "node_b finished no run before the others were done"
    assert first["finished"] + first["diverged"] + first["error"] == first["to_run"] == 8
    resumed = run_sweep(spec, store, executor="ray", ray_address=address)  # finishes whatever the kill cost
    assert resumed["to_run"] == first["error"] and resumed["error"] == 0
    where = _nodes_of(store)
    assert {ray_nodes[line.split()[2]] for line in where.values()} == {"node_a", "node_b"}
    assert all('"GPU": 0.5' in line and '"CPU": 1.0' in line for line in where.values())  # 2 runs per GPU
    by_local = run_sweep(spec, tmp_path / "local.db", executor="local")
    assert by_local["error"] == 0
    for mine, theirs in zip(_tables(store), _tables(tmp_path / "local.db")):
        pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
