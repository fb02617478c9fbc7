"""Seed sweeps: a spec, its expansion into resolved runs, and the resumable driver.

A :class:`SweepSpec` names tasks × models × recipes × grid points × seeds. :func:`expand`
resolves every run's configuration up front, so a typo fails before anything is
written. :func:`run_sweep` adds the plan to a study (:mod:`steadytune.store`), runs what
is not done yet on an executor (:mod:`steadytune.executors`) and records each result as
it arrives. Running the same sweep again resumes it: finished and diverged runs are
skipped, runs that errored or were in flight when the driver died are redone. With
``keep_checkpoints=K`` the driver also keeps at most K failed and K successful models
per group (:mod:`steadytune.checkpoints`).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from steadytune.config import (
    DEFAULT_MODEL, ConfigError, RunConfig, coerce, config_hash, format_value, resolve_config,
)

EventFn = Callable[[dict[str, Any]], None]
NOT_GRIDDABLE = {"task": "--tasks", "model": "--model", "recipe": "--recipes", "seed": "--seeds"}
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

    def __post_init__(self) -> None:
        for name in ("tasks", "models", "recipes", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its content address, resolved config and grid label."""

    run_id: str
    """``config_hash(cfg)``: the same config (seed included) is the same run."""
    cfg: RunConfig
    """The fully resolved configuration."""
    grid: str
    """Grid point, e.g. ``epochs=3,lr=1e-05`` (sorted keys); ``""`` without a grid."""


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
    own = sorted(set(spec.overrides) & set(NOT_GRIDDABLE))
    if own:
        raise ConfigError(f"set {own[0]} with {NOT_GRIDDABLE[own[0]]}, not as an override")
    base: dict[str, Any] = dict(spec.overrides)
    for key in ("train_limit", "max_steps", "data_dir"):
        if getattr(spec, key) is not None:
            base[key] = getattr(spec, key)
    return base


def check_data(cfg: RunConfig) -> None:
    """Read the train and dev data of ``cfg`` once, so bad data fails before a sweep writes.

    Raises:
        DataError: unknown task; missing, non-UTF-8 or malformed file (the message names
            file and line; see :func:`steadytune.data.validate_data`).
    """
    from steadytune.data import validate_data

    validate_data(cfg)


def expand(spec: SweepSpec) -> list[PlannedRun]:
    """Resolve every run of ``spec``: seeds × tasks × models × recipes × grid points.

    Seeds are the outer loop, so a study cut short holds balanced partial results.
    Identical configurations collapse into one run.

    Raises:
        ConfigError: empty lists, unknown recipe or key, an invalid value, a
            ``max_length`` longer than the model's position embeddings.
        DataError: unknown task, or missing, non-UTF-8 or malformed data files.
        ModelError: a model that cannot be found.
    """
    from steadytune.models import check_max_length, model_type_of

    for name in ("tasks", "models", "recipes", "seeds"):
        if not getattr(spec, name):
            raise ConfigError(f"the sweep has no {name}")
    parse_grid([f"{k}={','.join(map(str, v))}" for k, v in spec.grid.items()])  # same checks as the CLI
    base = _base_overrides(spec)
    points = _grid_points(spec.grid)
    families = {m: model_type_of(m) for m in spec.models}
    runs: dict[str, PlannedRun] = {}
    for seed, task, model, recipe, point in itertools.product(
            spec.seeds, spec.tasks, spec.models, spec.recipes, points):
        cfg = resolve_config(task=task, recipe=recipe, seed=seed, model=model,
                             model_type=families[model], overrides={**base, **point})
        label = ",".join(f"{k}={format_value(getattr(cfg, k))}" for k in sorted(point))
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


def _dry_run(planned: list[PlannedRun], store_path: Path) -> dict[str, Any]:
    """The plan and what of it is done, read without writing (no file is created)."""
    from steadytune.store import DONE, Study

    statuses: dict[str, str] = {}
    if store_path.exists():
        with Study.open(store_path, readonly=True) as study:
            statuses = study.statuses([r.run_id for r in planned])
    groups: dict[tuple[str, str, str, str], Counter[str]] = {}
    for run in planned:
        tally = groups.setdefault((run.cfg.task, run.cfg.model, run.cfg.recipe, run.grid), Counter())
        tally["runs"] += 1
        tally["done"] += statuses.get(run.run_id) in DONE
    rows = [{"task": t, "model": m, "recipe": r, "grid": g, "runs": c["runs"], "done": c["done"]}
            for (t, m, r, g), c in groups.items()]
    done = sum(row["done"] for row in rows)
    return {"planned": len(planned), "done_before": done, "to_run": len(planned) - done,
            "store": str(store_path), "dry_run": True, "groups": rows}


def default_threads(executor: str, workers: int) -> int:
    """Per-run CPU threads when the config leaves ``threads`` at 0.

    Local: the cores shared by the workers (two PyTorch processes that each use every
    core slow each other down several times). Ray: 1 per task; set ``threads`` to ask
    for more. Results on CPU depend on the thread count, so set ``threads`` explicitly
    to get the same numbers under every executor.
    """
    if executor == "ray":
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_sweep(spec: SweepSpec, store_path: str | Path, executor: str = "local", workers: int = 0,
              ray_address: str | None = None, dry_run: bool = False,
              on_event: EventFn | None = None, keep_checkpoints: int = 0) -> dict[str, Any]:
    """Run (or resume) a sweep into the study at ``store_path``.

    Args:
        spec: the sweep.
        store_path: the study file; created if missing (not by a dry run).
        executor: ``local`` (in-process, or a process pool when ``workers > 1``) or ``ray``.
        workers: parallel local processes; 0 = automatic (1 on CPU, several runs per
            GPU when the runs go to GPUs, see :func:`steadytune.executors.auto_workers`).
        ray_address: an existing Ray cluster (None: start a local Ray for this sweep).
        dry_run: only plan and count what is done; write nothing.
        on_event: called with ``{"kind": ..., ...}`` dicts: ``plan``, ``start``, ``finish``;
            ``wait`` (runs another driver on the same study is training: this one waits
            for them, and takes them over if that driver dies) and ``done_elsewhere``
            (a run that driver finished).
        keep_checkpoints: K > 0: every run saves its final model under
            ``<study>.checkpoints/<run_id>/`` and, after each recorded run, at most K
            failed and K successful checkpoints per (task, model, recipe, grid) are kept,
            those of the lowest seeds (:mod:`steadytune.checkpoints`); they are listed
            by ``Study.checkpoints()``. 0 (default): save none, touch none. The run ids
            and results are the same either way.

    Returns:
        Counts: ``planned``, ``done_before``, ``to_run``, and for a real run
        ``finished``, ``diverged``, ``error`` (and ``checkpoints``, the number kept for
        the sweep's groups, when ``keep_checkpoints`` > 0); plus ``store`` and (dry run)
        ``groups``.

    Raises:
        ConfigError, DataError, ModelError: a bad spec, before anything is written.
        ExecutorError: ``ray`` without Ray installed, before anything is written.
        StoreError: ``store_path`` is not a steadytune study.
    """
    from steadytune.checkpoints import checkpoint_root, prune_checkpoints
    from steadytune.executors import EXECUTORS, Job, check_executor
    from steadytune.leases import Heartbeat, Owner
    from steadytune.store import Study

    check_executor(executor)
    if workers < 0:
        raise ConfigError(f"workers must be >= 0 (0 = automatic), got {workers}")
    if keep_checkpoints < 0:
        raise ConfigError(f"keep_checkpoints must be >= 0, got {keep_checkpoints}")
    emit = on_event or (lambda event: None)
    planned = expand(spec)
    ids = [r.run_id for r in planned]
    if dry_run:
        return _dry_run(planned, Path(store_path))
    if workers == 0:
        from steadytune.executors import auto_workers

        workers = auto_workers([r.cfg for r in planned]) if executor == "local" else 1
    root = checkpoint_root(store_path).resolve() if keep_checkpoints else None
    with Study.open(store_path, create=True) as study:
        study.add_planned(planned)
        group_of = _groups_of(study, ids) if root is not None else {}
        groups = set(group_of.values())
        if root is not None:  # first clean up after a sweep that was killed
            prune_checkpoints(study, keep_checkpoints, groups, root)
        todo = set(study.pending(ids))
        threads = default_threads(executor, workers)
        jobs = [Job(r.run_id, r.cfg if r.cfg.threads else r.cfg.replace(threads=threads), r.grid,
                    checkpoint_dir=None if root is None else str(root / r.run_id))
                for r in planned if r.run_id in todo]
        counts: dict[str, Any] = {"planned": len(planned), "done_before": len(planned) - len(jobs),
                                  "to_run": len(jobs), "workers": workers, "store": str(store_path)}
        emit({"kind": "plan", **counts})
        tally: Counter[str] = Counter({"finished": 0, "diverged": 0, "error": 0})
        by_id = {job.run_id: job for job in jobs}
        owner, held_elsewhere = Owner.current(), {}

        def on_start(run_id: str) -> bool:
            why = study.claim(run_id, owner)
            if why == "done":  # finished meanwhile by another driver on this study
                held_elsewhere.pop(run_id, None)
                tally["done_elsewhere"] += 1
                emit({"kind": "done_elsewhere", "run_id": run_id})
            elif why is not None:
                held_elsewhere[run_id] = why
            else:
                held_elsewhere.pop(run_id, None)
                emit({"kind": "start", "run_id": run_id})
            return why is None

        def on_done(outcome: Any) -> None:
            job = by_id[outcome.run_id]
            event = _record(study, outcome, job)
            if root is not None:  # after the record: a kill in between leaves a folder the next prune judges
                prune_checkpoints(study, keep_checkpoints, [group_of[job.run_id]], root)
            tally[event["status"]] += 1
            emit(event)

        def execute(batch: list[Any]) -> None:
            EXECUTORS[executor](batch, on_start, on_done, workers=workers, ray_address=ray_address)

        with Heartbeat(study.path, owner):
            try:
                _run_and_wait(study, jobs, execute, held_elsewhere, emit)
            finally:
                study.release(owner)
        if root is not None:
            counts["checkpoints"] = len(prune_checkpoints(study, keep_checkpoints, groups, root))
    return {**counts, **tally}


def _groups_of(study: Any, run_ids: list[str]) -> dict[str, tuple[str, str, str, str]]:
    """``run_id -> (task, model, recipe, grid)`` with the study's group labels (``runs_table``)."""
    runs = study.runs_table(all_statuses=True)
    keys = zip(runs["task"], runs["model"], runs["recipe"], runs["grid"])
    wanted = set(run_ids)
    return {r: k for r, k in zip(runs["run_id"], keys) if r in wanted}


WAIT_POLL_SECONDS = 2.0
"""How often a driver looks again at runs that another driver is training."""


def _run_and_wait(study: Any, jobs: list[Any], execute: Callable[[list[Any]], None],
                  held_elsewhere: dict[str, str], emit: EventFn) -> None:
    """Execute ``jobs``; then keep retrying the runs another driver held until each is done.

    A run that another living driver is training is skipped (``execute``'s ``on_start``
    puts it in ``held_elsewhere``). The driver then waits for it: when the other driver
    records it, it is done; when the other driver dies, its lease is taken over and the
    run is trained here. So a sweep returns only when each of its runs is done or errored.
    """
    by_id = {job.run_id: job for job in jobs}
    batch, announced = jobs, None
    while batch:
        execute(batch)
        left = study.pending(list(held_elsewhere))
        for run_id in set(held_elsewhere) - set(left):
            held_elsewhere.pop(run_id)
        batch = [by_id[r] for r in left]
        if batch:
            waiting = sorted(set(held_elsewhere.values()))
            if waiting != announced:
                emit({"kind": "wait", "runs": len(batch), "holders": waiting})
                announced = waiting
            time.sleep(WAIT_POLL_SECONDS)


def _record(study: Any, outcome: Any, job: Any) -> dict[str, Any]:
    """Write one outcome to the study; return the ``finish`` event describing it."""
    cfg = job.cfg
    event: dict[str, Any] = {"kind": "finish", "run_id": outcome.run_id, "task": cfg.task,
                             "model": cfg.model, "recipe": cfg.recipe, "grid": job.grid,
                             "seed": cfg.seed, "seconds": outcome.seconds, "error": outcome.error}
    if outcome.result is None:
        study.record_error(outcome.run_id, outcome.error or "unknown error", outcome.log)
        return {**event, "status": "error", "metric": None, "value": None, "failed": True}
    study.record_result(outcome.run_id, outcome.result, outcome.curves, outcome.diagnostics, outcome.log)
    result = outcome.result
    value = result["metrics"]["final"].get(result["metric"])
    return {**event, "status": result["status"], "metric": result["metric"], "value": value,
            "failed": bool(result["failed"])}


__all__ = ["SweepSpec", "PlannedRun", "parse_seeds", "parse_grid", "expand", "check_data",
           "default_threads", "run_sweep"]
