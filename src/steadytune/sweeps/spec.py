"""What a sweep runs: a spec, its parsing and its expansion into resolved, checked runs.

A :class:`SweepSpec` names tasks × models × recipes × grid points × seeds. :func:`expand`
resolves every run's configuration up front and checks the data files and the model, so
a typo fails before anything is written.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from steadytune.config.execution import EXECUTION_KEYS, Execution, split_execution
from steadytune.config.recipes import resolve_config
from steadytune.config.run import (
    DEFAULT_MODEL,
    SEED_STREAM_KEYS,
    WITHIN_GROUP_KEYS,
    ConfigError,
    RunConfig,
    coerce,
    config_hash,
    format_value,
)
from steadytune.data.loading import validate_data
from steadytune.training.models import check_max_length, model_type_of

NOT_GRIDDABLE = {"task": "--tasks", "model": "--model", "recipe": "--recipes", "seed": "--seeds",
                 "repeat": "--repeats",
                 "attempt": "guard=restart or guard=switch (the driver plans a seed's later attempts)",
                 "device": "--set device=... (an execution setting)",
                 "threads": "--set threads=... (an execution setting)",
                 "runs_per_gpu": "--set runs_per_gpu=... (an execution setting)"}


_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """What to run: every combination of the lists below. Inert data; see :func:`expand`."""

    tasks: tuple[str, ...]
    """Task names (``rte``, ``mrpc`` ...)."""
    models: tuple[str, ...] = (DEFAULT_MODEL,)
    """Model ids or checkpoint directories."""
    recipes: tuple[str, ...]
    """Recipe names (``+``-joined compositions allowed)."""
    seeds: tuple[int, ...]
    """Run seeds (see :func:`parse_seeds`)."""
    overrides: dict[str, str] = field(default_factory=dict)
    """``key=value`` overrides applied to every run (after the recipe)."""
    grid: dict[str, list[str]] = field(default_factory=dict)
    """Key -> values; every combination is a grid point (overrides the recipe)."""
    train_limit: int | None = None
    """Shortcut for the ``train_limit`` override."""
    max_steps: int | None = None
    """Shortcut for the ``max_steps`` override."""
    data_dir: str | None = None
    """Shortcut for the ``data_dir`` override (GLUE folder)."""
    repeats: int = 1
    """Run each (config, seed) this many times as distinct stored runs (``repeat`` 0..N-1)."""

    def __post_init__(self) -> None:
        for name in ("tasks", "models", "recipes", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.repeats, int) or isinstance(self.repeats, bool) or self.repeats < 1:
            raise ConfigError(f"repeats must be an integer >= 1, got {self.repeats!r}")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its content address, resolved config and grid label."""

    run_id: str
    """``config_hash(cfg)``: the same config (seed included) is the same run."""
    cfg: RunConfig
    """The fully resolved configuration."""
    grid: str
    """Grid point, e.g. ``epochs=3,lr=1e-05`` (sorted keys); ``""`` without a grid. Keys that vary
    within a statistics group (stream seeds, :data:`~steadytune.config.run.WITHIN_GROUP_KEYS`) are
    left out: they are in ``cfg``."""
    precision_note: str = ""
    """Why ``precision=auto`` became ``cfg.precision`` (set by :func:`with_precision`)."""


def parse_seeds(text: str) -> tuple[int, ...]:
    """Parse ``"1-25"``, ``"1,3,5"`` or ``"1-5,10"`` into sorted unique seeds.

    Raises:
        ConfigError: empty, malformed or reversed ranges.
    """
    seeds: set[int] = set()
    for part in (text or "").split(","):
        match = _RANGE.match(part.strip())
        if not match:
            raise ConfigError(f"bad seed list {text!r}: use ranges and numbers such as 1-25 or 1-5,10")
        low, high = int(match[1]), int(match[2] or match[1])
        if high < low:
            raise ConfigError(f"bad seed range {part.strip()!r} in {text!r}: the end is below the start")
        seeds.update(range(low, high + 1))
    return tuple(sorted(seeds))


def parse_grid(items: list[str] | None) -> dict[str, list[str]]:
    """Parse ``["lr=1e-5,2e-5", "epochs=3,10"]`` into ``{"lr": [...], "epochs": [...]}``.

    The seed-stream keys (``head_seed``, ``data_seed``, ``dropout_seed``) also take ranges as
    ``--seeds`` does: ``head_seed=1-5`` is ``head_seed=1,2,3,4,5``.

    Raises:
        ConfigError: malformed item, unknown key (the message names the valid keys), a
            value of the wrong type, an empty or repeated value, a key given twice, or a
            key with its own option (task, model, recipe, seed).
    """
    grid: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"grid item {item!r} is not of the form key=value1,value2")
        if key in NOT_GRIDDABLE:
            raise ConfigError(f"{key} cannot be a grid key; use {NOT_GRIDDABLE[key]}")
        if key in grid:
            raise ConfigError(f"grid key {key!r} is given twice; list all its values in one --grid")
        parts = [v.strip() for v in values.split(",")]
        if not all(parts):
            raise ConfigError(f"grid item {item!r} has an empty value")
        if key in SEED_STREAM_KEYS and all(_RANGE.match(v) for v in parts):
            if len(parse_seeds(values)) != sum(len(parse_seeds(v)) for v in parts):
                raise ConfigError(f"grid item {item!r} repeats a value")
            parts = [str(v) for v in parse_seeds(values)]
        coerced = [coerce(key, v) for v in parts]  # unknown key -> names the valid ones
        if len(set(coerced)) != len(coerced):
            raise ConfigError(f"grid item {item!r} repeats a value")
        grid[key] = parts
    return grid


def _grid_points(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = sorted(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _base_overrides(spec: SweepSpec) -> dict[str, Any]:
    clash = sorted(set(spec.overrides) & set(spec.grid))
    if clash:
        raise ConfigError(f"keys {clash} are both set (--set) and swept (--grid); pick one")
    own = sorted((set(spec.overrides) & set(NOT_GRIDDABLE)) - set(EXECUTION_KEYS))
    if own:
        raise ConfigError(f"set {own[0]} with {NOT_GRIDDABLE[own[0]]}, not as an override")
    base: dict[str, Any] = dict(spec.overrides)
    for key in ("train_limit", "max_steps", "data_dir"):
        if getattr(spec, key) is not None:
            base[key] = getattr(spec, key)
    return base


def with_precision(planned: list[PlannedRun], used: str, reason: str) -> list[PlannedRun]:
    """``planned`` with every ``precision=auto`` run resolved to ``used`` (and its id rehashed).

    Args:
        planned: runs from :func:`expand`.
        used: ``fp32`` or ``bf16`` (what ``auto`` means for this study).
        reason: why; kept in each resolved run's ``precision_note``.
    """
    out: list[PlannedRun] = []
    for run in planned:
        if run.cfg.precision == "auto":
            cfg = run.cfg.replace(precision=used)
            run = PlannedRun(config_hash(cfg), cfg, run.grid, reason)
        out.append(run)
    return list({run.run_id: run for run in out}.values())


def check_data(cfg: RunConfig) -> None:
    """Read the train and dev data of ``cfg`` once, so bad data fails before a sweep writes.

    Raises:
        DataError: unknown task; missing, non-UTF-8 or malformed file (the message names
            file and line; see :func:`steadytune.data.loading.validate_data`).
    """
    validate_data(cfg)


def spec_execution(spec: SweepSpec) -> Execution:
    """How ``spec``'s runs execute: its ``device``/``threads`` overrides (0 threads = automatic).

    Raises:
        ConfigError: an invalid device or thread count.
    """
    return split_execution(spec.overrides)[1]


def expand(spec: SweepSpec) -> list[PlannedRun]:
    """Resolve every run of ``spec``: seeds × tasks × models × recipes × grid points × repeats.

    Seeds are the outer loop, so a study cut short holds balanced partial results.
    Identical configurations collapse into one run; repeat ``r`` > 0 of a run is its own
    run (``repeat`` enters the run id only when > 0, so repeat 0 is the run without repeats).

    Raises:
        ConfigError: empty lists, unknown recipe or key, an invalid value, a
            ``max_length`` longer than the model's position embeddings.
        DataError: unknown task, or missing, non-UTF-8 or malformed data files.
        ModelError: a model that cannot be found.
    """
    for name in ("tasks", "models", "recipes", "seeds"):
        if not getattr(spec, name):
            raise ConfigError(f"the sweep has no {name}")
    grid = parse_grid([f"{k}={','.join(map(str, v))}" for k, v in spec.grid.items()])  # same checks as the CLI
    base, _ = split_execution(_base_overrides(spec))
    points = _grid_points(grid)
    families = {m: model_type_of(m) for m in spec.models}
    runs: dict[str, PlannedRun] = {}
    for seed, task, model, recipe, point, repeat in itertools.product(
            spec.seeds, spec.tasks, spec.models, spec.recipes, points, range(spec.repeats)):
        cfg = resolve_config(task=task, recipe=recipe, seed=seed, model=model,
                             model_type=families[model], overrides={**base, **point, "repeat": repeat})
        label = ",".join(f"{k}={format_value(getattr(cfg, k))}" for k in sorted(point) if k not in WITHIN_GROUP_KEYS)
        run = PlannedRun(config_hash(cfg), cfg, label)
        runs.setdefault(run.run_id, run)
    for model, max_length in sorted({(r.cfg.model, r.cfg.max_length) for r in runs.values()}):
        check_max_length(max_length, model)
    checked: set[tuple[str, str | None, str | None]] = set()
    for run in runs.values():
        key = (run.cfg.task, run.cfg.data_dir, run.cfg.data_file)
        if key not in checked:
            check_data(run.cfg)
            checked.add(key)
    return list(runs.values())

