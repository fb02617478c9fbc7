"""Checkpoint retention for sweeps: at most K failed and K successful models per group.

The forgetting probe (Fig. 2) and the loss surface (Fig. 7) need the weights of failed
and of successful runs, but keeping every model of a 25-seed BERT-large sweep costs
1.3 GB a run. With ``keep_checkpoints=K`` (``--keep-checkpoints K``) each run of a sweep
saves its final model into ``<study>.checkpoints/<run_id>/`` beside the study file
(``final/``, a ``save_pretrained`` folder, plus the run's ``result.json`` and
``curves.csv``), and after each recorded run the driver prunes.

**The rule.** Per group (task, model, recipe, grid point) and verdict (failed or
successful, as stored for the run), among the finished runs whose checkpoint is on disk,
keep the K with the lowest seeds (ties: run id) and delete the others. The lowest seeds,
not the first to finish, so the kept set does not depend on the executor: one worker
or eight, resumed or not, a sweep ends with the same checkpoints. Diverged runs have
no checkpoint (their weights are NaN). A run that finished in a sweep without
``--keep-checkpoints`` has none either and is not counted.

The kept checkpoints are listed in the study (:func:`steadytune.store.checkpoints.list_checkpoints`).
The list is written before any folder is deleted, and folders are found through the
list, so a kill at any moment leaves at worst a folder nobody lists:

* killed between a worker's save and the record: the run is still ``running``, so the
  next sweep redoes it and the new save replaces the folder;
* killed between the record and the prune: every sweep prunes when it starts, and the
  folder is judged like any other;
* folders of runs that errored (or are pending) are deleted by the next prune.

Folders of ``running`` runs are never touched (the run may be in flight in this driver
or in another one on the same study), and neither are folders whose name is not a run
of the study.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from steadytune.store.checkpoints import set_checkpoints

GROUP = ["task", "model", "recipe", "grid"]
"""The columns that define a group; retention counts per group and verdict."""
FOLDER = "final"
"""The ``save_pretrained`` folder inside a run's checkpoint directory."""


def checkpoint_root(study_path: str | Path) -> Path:
    """Where a study's checkpoints go: ``study.db`` -> ``study.checkpoints/`` beside it."""
    path = Path(study_path)
    return path.with_name(path.stem + ".checkpoints")


def select_kept(runs: pd.DataFrame, keep: int) -> pd.DataFrame:
    """The retention rule, as a pure function: the rows of ``runs`` to keep.

    Args:
        runs: candidate runs with ``run_id, task, model, recipe, grid, seed, failed``.
        keep: K, the most checkpoints kept per group and verdict.

    Returns:
        Per (task, model, recipe, grid, failed), the ``keep`` rows with the lowest
        seed (ties broken by run id), in seed order.
    """
    if keep <= 0 or runs.empty:
        return runs.iloc[:0]
    ordered = runs.assign(failed=runs["failed"].astype(bool)).sort_values(["seed", "run_id"], kind="stable")
    return ordered.groupby([*GROUP, "failed"], sort=False, dropna=False).head(keep)


def prune_checkpoints(study: Any, keep: int, groups: Iterable[tuple[str, str, str, str]] | None = None,
                      root: str | Path | None = None) -> list[str]:
    """Apply the retention rule to ``groups`` of ``study``; list what is kept; delete the rest.

    Args:
        study: an open, writable :class:`steadytune.store.study.Study`.
        keep: K (>= 1).
        groups: ``(task, model, recipe, grid)`` tuples to prune (None: every group).
            Checkpoints of other groups are left as they are.
        root: the checkpoint folder (default :func:`checkpoint_root` of the study).

    Returns:
        The run ids whose checkpoints are kept in ``groups``.
    """
    root = Path(root) if root is not None else checkpoint_root(study.path)
    runs = study.runs_table(all_statuses=True)
    if groups is not None:
        wanted = set(map(tuple, groups))
        in_scope = runs[pd.Series([k in wanted for k in runs[GROUP].itertuples(index=False, name=None)],
                                  index=runs.index, dtype=bool)]
    else:
        in_scope = runs
    on_disk = in_scope["run_id"].map(lambda r: (root / r / FOLDER).is_dir()).astype(bool)
    saved = in_scope[(in_scope["status"] == "finished") & on_disk]
    kept = select_kept(saved, keep)
    base = study.path.resolve().parent
    listed = {r: (os.path.relpath(root.resolve() / r / FOLDER, base), bool(f))
              for r, f in zip(kept["run_id"], kept["failed"])}
    set_checkpoints(study, in_scope["run_id"], listed)  # the list first, then the deletions
    status = dict(zip(runs["run_id"], runs["status"]))
    scope = set(in_scope["run_id"])
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        state = status.get(folder.name)
        if not folder.is_dir() or state is None or state == "running" or folder.name in listed:
            continue
        if folder.name in scope or state in ("pending", "error"):
            shutil.rmtree(folder, ignore_errors=True)  # a leftover is retried at the next prune
    return list(listed)


__all__ = ["FOLDER", "GROUP", "checkpoint_root", "prune_checkpoints", "select_kept"]
