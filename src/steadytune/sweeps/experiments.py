"""The paper's seed-sweep experiments as presets: a name gives the list of sweeps to run.

``EXPERIMENTS`` is a plain dict from name to a builder function; each builder returns
the :class:`~steadytune.sweeps.spec.SweepSpec` list of one figure or table of Mosbach et al.
(ICLR 2021), to be run into ONE study (``steadytune experiment NAME --store STUDY.db``).
The first line of a builder's docstring is its one-line description.

Give each experiment its own study: a run that two experiments share (same resolved
config) is stored once, under the grid label of the experiment that planned it first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from steadytune.config.recipes import resolve_config
from steadytune.config.run import DEFAULT_MODEL, ConfigError
from steadytune.data.glue import load_glue
from steadytune.sweeps.spec import SweepSpec
from steadytune.sweeps.studyfile import study_file_text

DOWNSAMPLE_SIZE = 1000
"""Training examples of the down-sampled settings (paper §4(c))."""


def full_data_steps(task: str, data_dir: str | None, overrides: Mapping[str, Any] | None = None) -> int:
    """Optimiser steps of the Devlin recipe on the full training set: epochs × ceil(N / batch).

    N is counted from the real ``train.tsv`` (:func:`steadytune.data.glue.load_glue`); epochs
    and batch size are those of ``devlin2019`` after ``overrides`` (3 and 16 by default:
    RTE 2,490 -> 468, MRPC 3,668 -> 690, CoLA 8,551 -> 1,605 steps).

    Raises:
        DataError: the task's train file is missing or malformed.
    """
    n_train = len(load_glue(task, "train", data_dir))
    # Family presets set neither key, so any model_type gives the same two numbers.
    cfg = resolve_config(task=task, recipe="devlin2019", model_type="bert",
                         overrides={k: v for k, v in (overrides or {}).items() if k in ("epochs", "batch_size")})
    return math.ceil(cfg.epochs * math.ceil(n_train / cfg.batch_size))


def _downsampling(seeds: tuple[int, ...], models: tuple[str, ...], data_dir: str | None,
                  tasks: tuple[str, ...] | None, overrides: dict[str, str]) -> list[SweepSpec]:
    """Fig. 3: full data vs 1,000 examples for 3 epochs vs 1,000 examples for the full-data steps (Devlin)."""
    specs = []
    for task in tasks or ("rte", "mrpc", "cola"):
        steps = full_data_steps(task, data_dir, overrides)
        base = SweepSpec(tasks=(task,), models=models, recipes=("devlin2019",), seeds=seeds, data_dir=data_dir,
                         overrides=overrides)
        # Both keys in every label, so the three settings line up in `summary`; 0 is each
        # key's default (all data; steps from epochs), so the full-data runs are the very
        # runs a plain devlin2019 sweep would make.
        for limit, max_steps in ((0, 0), (DOWNSAMPLE_SIZE, 0), (DOWNSAMPLE_SIZE, steps)):
            specs.append(replace(base, grid={"train_limit": [str(limit)], "max_steps": [str(max_steps)]}))
    return specs


def _bias_correction(seeds: tuple[int, ...], models: tuple[str, ...], data_dir: str | None,
                     tasks: tuple[str, ...] | None, overrides: dict[str, str]) -> list[SweepSpec]:
    """Fig. 5: RTE, Devlin with vs without bias correction, lr 1e-5/2e-5/3e-5, 3 epochs."""
    return [SweepSpec(tasks=tasks or ("rte",), models=models, recipes=("devlin2019", "devlin2019+bc"),
                      seeds=seeds, data_dir=data_dir, overrides=overrides,
                      grid={"lr": ["1e-5", "2e-5", "3e-5"]})]


def _ablation(seeds: tuple[int, ...], models: tuple[str, ...], data_dir: str | None,
              tasks: tuple[str, ...] | None, overrides: dict[str, str]) -> list[SweepSpec]:
    """Fig. 9 / 8b: RTE, Devlin, lr 1e-5/2e-5/3e-5 × epochs 3/10/20 × bias correction (450 runs at 25 seeds)."""
    return [SweepSpec(tasks=tasks or ("rte",), models=models, recipes=("devlin2019",), seeds=seeds,
                      data_dir=data_dir, overrides=overrides,
                      grid={"lr": ["1e-5", "2e-5", "3e-5"], "epochs": ["3", "10", "20"],
                            "correct_bias": ["true", "false"]})]


def _table1(seeds: tuple[int, ...], models: tuple[str, ...], data_dir: str | None,
            tasks: tuple[str, ...] | None, overrides: dict[str, str]) -> list[SweepSpec]:
    """Fig. 1 / Table 1: RTE, MRPC, CoLA × Devlin, Mixout, Mosbach."""
    return [SweepSpec(tasks=tasks or ("rte", "mrpc", "cola"), models=models,
                      recipes=("devlin2019", "mixout2020", "mosbach2021"), seeds=seeds, data_dir=data_dir,
                      overrides=overrides)]


Builder = Callable[[tuple[int, ...], tuple[str, ...], str | None, tuple[str, ...] | None, dict[str, str]],
                   list[SweepSpec]]
EXPERIMENTS: dict[str, Builder] = {
    "table1": _table1,
    "downsampling": _downsampling,
    "bias_correction": _bias_correction,
    "ablation": _ablation,
}
"""Experiment name -> builder ``(seeds, models, data_dir, tasks, overrides) -> [SweepSpec]``."""


def describe(name: str) -> str:
    """The one-line description of experiment ``name`` (its builder's docstring)."""
    return (EXPERIMENTS[name].__doc__ or "").strip().splitlines()[0]


def experiment_specs(name: str, *, seeds: Sequence[int], model: str | Sequence[str] = DEFAULT_MODEL,
                     data_dir: str | None = None, tasks: Sequence[str] | None = None,
                     overrides: Mapping[str, str] | None = None,
                     train_limit: int | None = None) -> list[SweepSpec]:
    """The sweeps of one paper experiment, to run into one study.

    Args:
        name: a key of :data:`EXPERIMENTS` (``table1``, ``downsampling``,
            ``bias_correction``, ``ablation``).
        seeds: run seeds (the paper: 1-25).
        model: a model id or path, or several (each gets the whole experiment).
        data_dir: the GLUE folder (None: ``$GLUE_DIR``).
        tasks: replace the preset's tasks (None: the paper's).
        overrides: ``key=value`` applied to every run; a key the preset sweeps is an error.
        train_limit: down-sample every run (a cheaper version of the experiment); not
            allowed for ``downsampling``, which sets it itself.

    Returns:
        The sweep specs, in the order they should run.

    Raises:
        ConfigError: unknown name, or ``train_limit`` for ``downsampling``.
        DataError: ``downsampling`` cannot read a task's training file.
    """
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    if train_limit is not None and name == "downsampling":
        raise ConfigError("the downsampling experiment sets train_limit itself; drop --train-limit")
    models = (model,) if isinstance(model, str) else tuple(model)
    specs = EXPERIMENTS[name](tuple(seeds), models, data_dir, tuple(tasks) if tasks else None,
                              dict(overrides or {}))
    return [replace(s, train_limit=train_limit) for s in specs] if train_limit is not None else specs


def export_experiment(name: str, path: str | Path, *, store: str | None = None, **options: Any) -> Path:
    """Write experiment ``name`` as a study file (``steadytune sweep --config PATH`` runs it).

    Args:
        name: a key of :data:`EXPERIMENTS`.
        path: the ``.toml`` file to write (its folder is created); the header's command names
            it as given (relative to where the command is meant to run).
        store: the study file it names (None: the reproducing command asks for ``--store``).
        **options: as for :func:`experiment_specs` (``seeds`` required).

    Returns:
        ``path``.

    Raises:
        The errors of :func:`experiment_specs`.
    """
    path = Path(path)
    specs = experiment_specs(name, **options)
    title = f"experiment {name}: {describe(name).rstrip('.')}"
    text = study_file_text(specs, str(path), store=store, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


__all__ = ["DOWNSAMPLE_SIZE", "EXPERIMENTS", "describe", "experiment_specs", "export_experiment",
           "full_data_steps"]
