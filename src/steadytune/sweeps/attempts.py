"""The attempts of a seed under ``guard=restart`` / ``switch``: each a planned run of its own.

A sweep plans attempt 1 of every seed. When the doomed-run guard stops attempt k (status
``stopped``) and the policy restarts, the driver plans attempt k + 1: the same
configuration with ``attempt=k+1`` (so its own run id, seed streams drawn from
``(seed, k+1)`` and, under ``switch``, ``guard_switch`` applied when it trains), in the
same grid group. Each attempt is a normal leased, resumable run, so the same command gives
the same attempts, and a resumed sweep finds a seed's chain in the study and continues it
where it stopped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from steadytune.config.run import RESTARTS, config_hash
from steadytune.sweeps.spec import PlannedRun
from steadytune.sweeps.worker import Job


def next_attempt(run: PlannedRun) -> PlannedRun | None:
    """The attempt after ``run`` when its policy restarts a stopped seed and attempts are left.

    Args:
        run: a planned attempt.

    Returns:
        The next attempt (same grid label), or None (no restart policy, or the last attempt).
    """
    cfg = run.cfg
    if cfg.guard not in RESTARTS or cfg.attempt >= cfg.guard_attempts:
        return None
    nxt = cfg.replace(attempt=cfg.attempt + 1)
    return dataclasses.replace(run, run_id=config_hash(nxt), cfg=nxt)  # same grid label, same precision note


def next_job(job: Job) -> Job | None:
    """The job of the attempt after ``job``'s run (see :func:`next_attempt`): the same execution,
    its checkpoint folder beside ``job``'s; None when the seed gets no other attempt."""
    nxt = next_attempt(PlannedRun(job.run_id, job.cfg, job.grid))
    if nxt is None:
        return None
    folder = None if job.checkpoint_dir is None else str(Path(job.checkpoint_dir).parent / nxt.run_id)
    return dataclasses.replace(job, run_id=nxt.run_id, cfg=nxt.cfg, checkpoint_dir=folder)


def current_attempts(planned: Iterable[PlannedRun],
                     statuses: Callable[[list[str]], dict[str, str]]) -> list[PlannedRun]:
    """For each planned seed, the attempt that is its latest: follow stopped attempts to the next.

    Args:
        planned: first attempts (what :func:`steadytune.sweeps.spec.expand` plans).
        statuses: ``run_ids -> {run_id: status}`` of the study (unknown ids left out).

    Returns:
        One attempt per planned run, in order: the first one that is not ``stopped`` or has
        no next attempt (it may be done, to do, or not in the study yet).
    """
    current = list(planned)
    while True:
        status = statuses([r.run_id for r in current])
        moved = [next_attempt(r) if status.get(r.run_id) == "stopped" else None for r in current]
        if not any(moved):
            return current
        current = [m or r for r, m in zip(current, moved)]


__all__ = ["current_attempts", "next_attempt", "next_job"]
