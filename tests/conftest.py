"""Shared fixtures: tiny random models built from configs, tiny and real GLUE data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# precision=auto (the default) probes the CPU and may choose bf16: the tests' numbers must
# not depend on the machine they run on, so auto means fp32 here (subprocesses inherit it);
# tests of auto itself remove the variable (tests/test_precision.py).
os.environ["STEADYTUNE_AUTO_PRECISION"] = "fp32"


def shared_data() -> Path:
    """Real evaluation data: $STEADYTUNE_DATA or ../shared/data beside the repo."""
    return Path(os.environ.get("STEADYTUNE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def real_glue() -> Path:
    glue = shared_data() / "glue"
    if not (glue / "RTE" / "train.tsv").exists():
        pytest.skip(f"real GLUE files not found under {glue} (set STEADYTUNE_DATA)")
    return glue


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from steadytune.testing.tiny import make_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {fam: make_tiny_model(root / fam, fam) for fam in ("bert", "roberta", "albert")}


@pytest.fixture(scope="session")
def tiny_bert(tiny_models) -> Path:
    return tiny_models["bert"]


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory) -> Path:
    from steadytune.testing.tiny import make_tiny_glue

    return make_tiny_glue(tmp_path_factory.mktemp("tiny-glue"), n_train=48, n_dev=24)


@pytest.fixture(autouse=True, scope="session")
def _threads():
    import torch

    torch.set_num_threads(1)  # tests are small; one thread is faster and deterministic
    yield
