"""The Python entry points behind the CLI commands, importable as ``steadytune.<name>``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steadytune.config.recipes import resolve_config
from steadytune.config.run import DEFAULT_MODEL
from steadytune.training.results import RunResult


def run(task: str = "rte", recipe: str = "devlin2019", seed: int = 1, model: str = DEFAULT_MODEL,
        out: str | Path | None = None, progress: Any = None, **overrides: Any) -> RunResult:
    """Fine-tune one model on one task with one recipe and seed (``steadytune run``).

    Args:
        task: GLUE task name or ``custom``.
        recipe: recipe name(s), ``+``-joined (see ``steadytune.config.RECIPES``).
        seed: run seed.
        model: hub id, local checkpoint directory or ``minilm``.
        out: directory for ``result.json`` and ``curves.csv`` (None: keep in memory only).
        progress: optional ``progress(step, total, info)`` callback.
        **overrides: any configuration key, e.g. ``lr=1e-5``, ``epochs=10``, ``data_dir=...``.

    Returns:
        The :class:`~steadytune.results.RunResult`.

    Raises:
        ConfigError, DataError, ModelError: invalid configuration, data or model.
    """
    from steadytune.training.loop import train_and_evaluate

    cfg = resolve_config(task=task, recipe=recipe, seed=seed, model=model, overrides=overrides)
    return train_and_evaluate(cfg, out, progress=progress)
