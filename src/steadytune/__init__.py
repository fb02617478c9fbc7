"""steadytune: stable, diagnosable fine-tuning of BERT-family encoders.

    >>> import steadytune
    >>> result = steadytune.run(task="rte", recipe="mosbach2021", seed=1, train_limit=256)
    >>> result.metrics["final"]["acc"], result.failed

The names below are the public API; each is imported from its layer on first use, so
``import steadytune`` (and ``steadytune --help``) stays fast. docs/architecture.md says
where each lives.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

PUBLIC: dict[str, str] = {
    # config
    "RunConfig": "steadytune.config.run",
    "ConfigError": "steadytune.config.errors",
    "Execution": "steadytune.config.execution",
    "RECIPES": "steadytune.config.recipes",
    "resolve_config": "steadytune.config.recipes",
    # data
    "DataError": "steadytune.data.tasks",
    "load_split": "steadytune.data.loading",
    # training
    "run": "steadytune.training.runner",
    "train_and_evaluate": "steadytune.training.loop",
    "RunResult": "steadytune.training.results",
    "Recorder": "steadytune.training.diagnostics",
    "Guard": "steadytune.training.guard",
    "Thresholds": "steadytune.training.guard",
    "run_attempts": "steadytune.training.runner",
    "ModelError": "steadytune.training.models",
    # store
    "Study": "steadytune.store.study",
    "StoreError": "steadytune.store.file",
    # sweeps
    "SweepSpec": "steadytune.sweeps.spec",
    "expand": "steadytune.sweeps.spec",
    "run_sweep": "steadytune.sweeps.driver",
    "run_sweeps": "steadytune.sweeps.driver",
    "SweepTotals": "steadytune.sweeps.driver",
    "experiment_specs": "steadytune.sweeps.experiments",
    "export_experiment": "steadytune.sweeps.experiments",
    "load_study_file": "steadytune.sweeps.studyfile",
    "StudyFile": "steadytune.sweeps.studyfile",
    # analyses
    "summarize": "steadytune.analyses.stats",
    "compare_recipes": "steadytune.analyses.stats",
    "expected_max_curve": "steadytune.analyses.stats",
    "variance_components": "steadytune.analyses.variance",
    "plan_seeds": "steadytune.analyses.planning",
    "plan_study": "steadytune.analyses.planning",
    "precision_table": "steadytune.analyses.planning",
    "robust_summary": "steadytune.analyses.robust",
    "improvement_table": "steadytune.analyses.robust",
    "iqm": "steadytune.analyses.robust",
    "stratified_bootstrap_ci": "steadytune.analyses.robust",
    "probability_of_improvement": "steadytune.analyses.robust",
    "kept_runs": "steadytune.analyses.attempts",
    "compare_guards": "steadytune.analyses.attempts",
    "triage": "steadytune.analyses.triage",
    "forgetting_probe": "steadytune.analyses.forgetting",
    "surface_probe": "steadytune.analyses.surface",
    "generalisation_probe": "steadytune.analyses.generalisation",
    # integrations
    "DiagnosticsCallback": "steadytune.integrations.transformers",
    "add_diagnostics": "steadytune.integrations.transformers",
    "trainer_recipe": "steadytune.integrations.transformers",
    "TrainerRunInfo": "steadytune.integrations.trainerrun",
    "MetricLogger": "steadytune.integrations.trackers",
    "JsonlLogger": "steadytune.integrations.trackers",
    "open_tracker": "steadytune.integrations.trackers",
    "SweepTracker": "steadytune.integrations.tracking",
    # report
    "write_report": "steadytune.report.html",
}
"""Public name -> the module that defines it (a literal table, no import-time registry)."""

__all__ = ["__version__", *PUBLIC]


def __getattr__(name: str) -> Any:
    if name in PUBLIC:
        return getattr(importlib.import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'steadytune' has no attribute {name!r}")
