"""What a sweep reports while it runs: one frozen record per event, passed to ``on_event``.

:func:`steadytune.sweeps.driver.run_sweep` and :func:`~steadytune.sweeps.driver.run_sweeps`
call ``on_event(event)`` in the driver process, in this order:

* :class:`SweepsPlanEvent` — once per :func:`run_sweeps` call, after every spec is
  planned (read-only) and before anything is written: the totals to expect;
* :class:`PlanEvent` — once per spec, when its plan is in the study: what is left to run;
* :class:`StartEvent` — a run is handed to a worker (its lease is taken);
* :class:`FinishEvent` — a run's outcome is recorded (finished, diverged, stopped or error;
  a stopped run whose policy restarts is followed by its seed's next attempt);
* :class:`AttemptEvent` — a stopped seed's next attempt is planned (``guard=restart`` /
  ``switch``); it runs in the next round;
* :class:`DoneElsewhereEvent` — a run another driver on the same study finished meanwhile;
* :class:`WaitEvent` — runs another living driver is training: this one waits for them
  (and takes them over if that driver dies); sent again when the holders change;
* :class:`SweepsDoneEvent` — once per :func:`run_sweeps` call that ran (not a dry run),
  after its last spec: the sinks that keep something open (a tracker) may close it.

Match on the type (``isinstance`` or ``match event: case FinishEvent(): ...``). The
records are plain data; printing them is the caller's business (the CLI prints a bar).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class SweepsPlanEvent:
    """Every spec of a :func:`run_sweeps` call is planned; nothing is written yet."""

    specs: int
    """Number of sweep specs."""
    planned: int
    """Runs planned, over all specs."""
    done_before: int
    """Of those, already finished or diverged in the study."""
    to_run: int
    """Runs left to run (``planned - done_before``)."""
    store: str
    """The study file."""


@dataclass(frozen=True)
class PlanEvent:
    """One spec's plan is in the study; its runs are about to execute."""

    planned: int
    """Runs of the spec."""
    done_before: int
    """Of those, already done (or held by another driver) when the spec started."""
    to_run: int
    """Runs this driver will try."""
    workers: int
    """Parallel workers (``workers=0`` resolved)."""
    store: str
    """The study file."""


@dataclass(frozen=True)
class StartEvent:
    """A run is handed to a worker."""

    run_id: str


@dataclass(frozen=True)
class FinishEvent:
    """A run's outcome is recorded in the study."""

    run_id: str
    task: str
    model: str
    recipe: str
    grid: str
    """Grid label (``""`` without a grid)."""
    seed: int
    seconds: float
    """Wall time of the run in its worker."""
    status: str
    """``finished``, ``diverged``, ``stopped`` (by the doomed-run guard) or ``error``."""
    error: str | None
    """Why an errored run raised, or why a diverged run stopped; None otherwise."""
    metric: str | None
    """The task's main dev metric (None for an error)."""
    value: float | None
    """Its final value (None for an error; NaN possible for a diverged run)."""
    failed: bool
    """The run's verdict: failed (at or below the majority baseline, diverged, stopped, or error)."""
    streams: str = ""
    """The stream seeds and repeat index the run sets, ``head_seed=3,repeat=1`` (``""``: none)."""
    attempt: int = 1
    """Which attempt of its seed the run was (> 1 after the guard restarted the seed)."""


@dataclass(frozen=True)
class AttemptEvent:
    """The guard stopped a seed's run and its policy restarts it: the next attempt is planned."""

    run_id: str
    """The new attempt's run id."""
    after: str
    """The stopped run's id."""
    seed: int
    attempt: int
    """The new attempt's number (2, 3, ...)."""


@dataclass(frozen=True)
class DoneElsewhereEvent:
    """A run of this sweep that another driver on the same study finished meanwhile."""

    run_id: str


@dataclass(frozen=True)
class WaitEvent:
    """This driver waits for runs another living driver is training."""

    runs: int
    """How many runs it waits for."""
    holders: tuple[str, ...]
    """Why each is held elsewhere (``leased by HOST pid PID``), sorted, without repeats."""


@dataclass(frozen=True)
class SweepsDoneEvent:
    """Every spec of a :func:`run_sweeps` call has run; its totals are about to be returned."""

    store: str
    """The study file."""
    finished: int
    diverged: int
    error: int


SweepEvent = (SweepsPlanEvent | PlanEvent | StartEvent | FinishEvent | AttemptEvent | DoneElsewhereEvent | WaitEvent
              | SweepsDoneEvent)
"""Any of the records above."""
EventFn = Callable[[SweepEvent], None]
"""The ``on_event`` callback of a sweep."""

__all__ = ["AttemptEvent", "DoneElsewhereEvent", "EventFn", "FinishEvent", "PlanEvent", "StartEvent", "SweepEvent",
           "SweepsDoneEvent", "SweepsPlanEvent", "WaitEvent"]
