"""``steadytune.run``: one run from names and ``key=value`` settings, leaving the process as it was.

The training loop sets the intra-op thread count and seeds the global RNGs (PyTorch,
CUDA) for dropout. :func:`process_state_kept` saves both before and restores them
after, so a notebook that calls ``steadytune.run`` keeps its own thread count and random
streams.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

from steadytune.config.execution import Execution, split_execution
from steadytune.config.run import DEFAULT_MODEL, RESTARTS, RunConfig
from steadytune.training.loop import ProgressFn, train_and_evaluate
from steadytune.training.models import resolve_for_model
from steadytune.training.results import RunResult


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """Restore PyTorch's thread count and global RNG states (CPU and CUDA) on exit."""
    threads = torch.get_num_threads()
    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def run(task: str = "rte", recipe: str = "devlin2019", seed: int = 1, model: str = DEFAULT_MODEL,
        out: str | Path | None = None, progress: ProgressFn | None = None, **overrides: Any) -> RunResult:
    """Fine-tune one model on one task with one recipe and seed (``steadytune run``).

    Args:
        task: GLUE task name, ``custom`` or ``hub:NAME``.
        recipe: recipe name(s), ``+``-joined (see ``steadytune.config.recipes.RECIPES``).
        seed: run seed.
        model: hub id, local checkpoint directory or ``minilm``.
        out: directory for ``result.json``, ``curves.csv`` and ``diagnostics.csv`` (None:
            keep in memory only).
        progress: optional ``progress(step, total, info)`` callback.
        **overrides: any configuration key, e.g. ``lr=1e-5``, ``epochs=10``,
            ``data_dir=...``, and the execution keys ``device`` and ``threads``.

    Returns:
        The :class:`~steadytune.training.results.RunResult` (of the seed's last attempt
        under ``guard=restart`` / ``switch``, see :func:`run_attempts`). The caller's thread
        count and global RNG states are the same afterwards as before.

    Raises:
        ConfigError, DataError, ModelError: invalid configuration, data or model.
    """
    run_overrides, execution = split_execution(overrides)
    cfg = resolve_for_model(task=task, recipe=recipe, seed=seed, model=model, overrides=run_overrides)
    with process_state_kept():
        return run_attempts(cfg, out, progress=progress, execution=execution)


def run_attempts(cfg: RunConfig, out: str | Path | None = None, progress: ProgressFn | None = None,
                 execution: Execution | None = None) -> RunResult:
    """Train ``cfg``; under ``guard=restart`` / ``switch``, train the seed's next attempt while the
    guard stops one, up to ``guard_attempts`` (a sweep plans each attempt as its own run instead).

    Args:
        cfg: the first attempt's resolved configuration.
        out: run folder (None: nowhere). Under restart/switch attempt K goes to
            ``out/attempts/K/`` and the last one is also written to ``out`` itself.
        progress: as for :func:`~steadytune.training.loop.train_and_evaluate`.
        execution: device and threads.

    Returns:
        The last attempt's result (its ``guard["attempt"]`` says which).
    """
    while True:
        last = cfg.guard not in RESTARTS or cfg.attempt >= cfg.guard_attempts
        workdir = out if out is None or cfg.guard not in RESTARTS else Path(out) / "attempts" / str(cfg.attempt)
        result = train_and_evaluate(cfg, workdir, progress=progress, execution=execution)
        if result.status != "stopped" or last:
            if workdir != out and out is not None:
                result.save(out)
            return result
        cfg = cfg.replace(attempt=cfg.attempt + 1)


__all__ = ["process_state_kept", "run", "run_attempts"]
