"""``precision=auto`` in a sweep: one choice per study, made when the study is first planned.

A run's id hashes the precision it computes in, so ``auto`` must be resolved before a
sweep plans its runs, and the same way every time the study is resumed, or a study
started on a CPU with a fast bf16 path and resumed on one without would silently mix two
kinds of run. So the first driver chooses (:func:`~steadytune.training.precision.choose_precision`
for the sweep's device) and records the choice in the study (:mod:`steadytune.store.settings`);
later drivers read it back. A study that already had runs before ``auto`` existed keeps
fp32, the precision its runs were computed in, so its original command still resumes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steadytune.config.execution import Execution
from steadytune.store.file import inspect_file
from steadytune.store.settings import has_runs, read_setting, setting_once
from steadytune.store.study import Study
from steadytune.sweeps.spec import PlannedRun
from steadytune.training.precision import PrecisionChoice, choose_precision

SETTING = "precision_auto"
"""The study setting holding the JSON of the :class:`PrecisionChoice` that ``auto`` became."""

LEGACY = PrecisionChoice("auto", "fp32", "the study had fp32 runs before precision=auto existed")


def _device(execution: Execution) -> torch.device:
    if execution.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(execution.device)


def _load(text: str) -> PrecisionChoice:
    return PrecisionChoice(**json.loads(text))


def study_precision(store_path: str | Path, execution: Execution, planned: list[PlannedRun],
                    record: bool) -> PrecisionChoice | None:
    """What ``precision=auto`` means for the study at ``store_path``.

    Args:
        store_path: the study file (it may not exist yet).
        execution: where the sweep's runs execute (its device decides a new choice).
        planned: the sweep's runs as expanded; nothing is chosen if none asks for ``auto``.
        record: write a new choice into the study (False for a dry run: nothing is written).

    Returns:
        The choice, or None when no run asks for ``auto``.

    Raises:
        StoreError: ``store_path`` is not a steadytune study.
    """
    if not any(run.cfg.precision == "auto" for run in planned):
        return None
    path = Path(store_path)
    if inspect_file(path):
        with Study.open(path, readonly=True) as study:
            stored = read_setting(study, SETTING)
            if stored is not None:
                return _load(stored)
            if has_runs(study):
                choice = LEGACY
            else:
                choice = choose_precision("auto", _device(execution))
    else:
        choice = choose_precision("auto", _device(execution))
    if not record:
        return choice
    with Study.open(path, create=True) as study:
        return _load(setting_once(study, SETTING, json.dumps(choice.to_dict(), sort_keys=True)))


__all__ = ["LEGACY", "SETTING", "study_precision"]
