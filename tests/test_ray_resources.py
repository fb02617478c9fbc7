"""How the Ray executor sizes its tasks (no Ray needed): fractional GPUs and CPUs."""

from __future__ import annotations

import pytest

from steadytune.config.errors import ConfigError
from steadytune.config.execution import Execution, split_execution
from steadytune.config.run import RunConfig
from steadytune.sweeps.local import RUNS_PER_GPU
from steadytune.sweeps.ray import task_resources
from steadytune.sweeps.worker import Job


def _job(**execution) -> Job:
    return Job("r", RunConfig(), execution=Execution(**execution))


def test_several_runs_share_a_gpu():
    gpus = {"CPU": 16.0, "GPU": 2.0}
    assert task_resources([_job(threads=1, runs_per_gpu=4)], gpus) == {"num_cpus": 1, "num_gpus": 0.25}
    assert task_resources([_job(threads=2)], gpus) == {"num_cpus": 2, "num_gpus": 1 / RUNS_PER_GPU}
    assert task_resources([_job(threads=1, runs_per_gpu=1)], gpus)["num_gpus"] == 1.0
    assert task_resources([_job(threads=1, device="cpu", runs_per_gpu=4)], gpus)["num_gpus"] == 0.0
    assert task_resources([_job(threads=64)], {"CPU": 8.0}) == {"num_cpus": 8, "num_gpus": 0.0}
    assert task_resources([_job(threads=0)], {"CPU": 8.0})["num_cpus"] == 1


def test_runs_per_gpu_is_an_execution_setting():
    run, execution = split_execution({"runs_per_gpu": "8", "lr": "1e-5"})
    assert run == {"lr": "1e-5"} and execution.runs_per_gpu == 8
    with pytest.raises(ConfigError, match=r"runs_per_gpu must be >= 0 \(0 = automatic\), got -1"):
        Execution(runs_per_gpu=-1)
    with pytest.raises(ConfigError, match="config key 'runs_per_gpu' expects int, got 'x'"):
        split_execution({"runs_per_gpu": "x"})
