"""Offline validation of the doomed-run detector over stored studies (``steadytune triage``).

Every stored run has its curves and diagnostics, so the detector of
:mod:`steadytune.training.guard` can be replayed over it exactly as it would have run
inside the training loop: :func:`replay` feeds the same :class:`~steadytune.training.guard.Guard`
the logged training losses, the dev evaluations and the diagnostics of each diagnostics
step in the loop's order, and reports the step of its first doomed verdict. Against the
run's final labels — **failed** (final dev metric at or below the majority baseline) and
**stuck** (final training loss still >= 80% of the label-prior entropy,
:func:`steadytune.analyses.stats.stuck_mask`) — :func:`score` gives precision and recall
of the verdicts reached by a fraction of training, and the compute a ``stop`` policy
would have saved. :func:`fit_thresholds` chooses the thresholds on named training
studies; :func:`triage` reports them on the others. :func:`vanishing_by_regime` counts,
per regime, the stuck runs with and without vanishing lower-layer gradients.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from steadytune.analyses.stats import stuck_mask
from steadytune.store.records import read_configs
from steadytune.store.study import Study
from steadytune.training.guard import (
    HEAD_ENTROPY,
    LOWER,
    MAJORITY,
    TOP,
    Guard,
    Thresholds,
    Verdict,
)

FRACTIONS = (0.1, 0.25, 0.5, 1.0)
"""Points of training at which the verdicts are scored (1.0: by the end)."""
VANISHING = 1e-2
"""Vanishing lower-layer gradients: the embeddings' gradient norm below this times the classifier's."""
GRID: dict[str, tuple[Any, ...]] = {
    "vanish_ratio": (3e-3, 1e-2, 3e-2), "vanish_steps": (1, 2), "prior_fraction": (0.8, 0.9),
    "plateau_after": (0.5, 0.6, 0.7, 0.8, math.inf), "collapse_steps": (0, 2)}
"""The thresholds :func:`fit_thresholds` tries (every combination)."""
SCORE_COLUMNS = ["fraction", "n", "failed", "stuck", "flagged", "precision_failed", "recall_failed",
                 "precision_stuck", "recall_stuck", "successes_flagged", "steps_saved"]
"""The columns of :func:`score` (after its ``by`` columns)."""


@dataclass(frozen=True)
class StoredRun:
    """One stored run: its labels and, in step order, what the detector would have seen."""

    study: str
    run_id: str
    task: str
    regime: str
    """``lr 2e-05, no BC, 3 ep, 1000 ex`` (+ ``, Mixout``): see :func:`regime_of`."""
    seed: int
    total_steps: int
    label_entropy: float | None
    baseline: float
    failed: bool
    stuck: bool
    losses: tuple[tuple[int, float], ...]
    """``(step, mean training loss)`` at every logging step."""
    evals: tuple[tuple[int, float], ...]
    """``(step, metric)`` at every dev evaluation."""
    diags: tuple[tuple[int, dict[tuple[str, str], float]], ...]
    """``(step, {(group, name): value})`` of the detector's diagnostics at every diagnostics step."""

    @property
    def min_ratio(self) -> float:
        """The lowest embeddings / classifier gradient-norm ratio over the run (NaN: none)."""
        ratios = [d[LOWER] / d[TOP] for _, d in self.diags if d.get(LOWER) is not None and d.get(TOP)]
        return min(ratios) if ratios else math.nan


def regime_of(config: Mapping[str, Any]) -> str:
    """A run's regime: lr, bias correction, epochs (or steps), data size and Mixout, from its config."""
    length = f"{config['max_steps']} steps" if config.get("max_steps") else f"{config.get('epochs', 3.0):g} ep"
    data = f"{config['train_limit']} ex" if config.get("train_limit") else "full data"
    mixout = ", Mixout" if config.get("mixout") else ""
    bc = "BC" if config.get("correct_bias") else "no BC"
    return f"lr {config.get('lr', 2e-5):g}, {bc}, {length}, {data}{mixout}"


def load_runs(path: str | Path, label_entropy: Mapping[str, float] | None = None) -> list[StoredRun]:
    """The finished, diverged and stopped runs of a study, ready to replay.

    Args:
        path: the study file (opened read-only).
        label_entropy: per task, the label-prior entropy for runs recorded before runs
            stored their own (None: such runs are an error).

    Returns:
        One :class:`StoredRun` per run, in the runs table's order.

    Raises:
        StoreError: not a study. ValueError: a run without a label entropy (none stored,
            none given for its task).
    """
    name = Path(path).stem
    with Study.open(path, readonly=True) as study:
        runs = study.runs_table()
        ids = runs["run_id"].tolist()
        curves = study.curves_table(ids)
        diags = study.diagnostics_table(ids, names=[LOWER, TOP, HEAD_ENTROPY, MAJORITY])
        configs = read_configs(study, ids)
    entropy = runs["label_entropy"].fillna(runs["task"].map(dict(label_entropy or {})))
    missing = runs.loc[entropy.isna() & runs["metric"].ne("pearson"), "run_id"].tolist()
    if missing:
        task = runs.loc[runs["run_id"] == missing[0], "task"].iloc[0]
        raise ValueError(f"run {missing[0]} of {path} stored no label entropy (recorded before runs did); "
                         f"give it for task {task!r} (CLI: --label-entropy {task}=VALUE)")
    stuck = (stuck_mask(runs["train_loss"], entropy) == 1) | (runs["status"] == "stopped").to_numpy()
    losses = _series(curves[(curves["split"] == "train") & (curves["name"] == "loss")])
    metric = curves["run_id"].map(dict(zip(runs["run_id"], runs["metric"])))
    evals = _series(curves[(curves["split"] == "dev") & (curves["name"] == metric)])
    by_run = {r: d for r, d in diags.groupby("run_id", sort=False)}
    return [StoredRun(name, row.run_id, row.task, regime_of(configs[row.run_id]), int(row.seed),
                      int(row.total_steps), None if pd.isna(h) else float(h), float(row.baseline), bool(row.failed),
                      bool(is_stuck), losses.get(row.run_id, ()), evals.get(row.run_id, ()),
                      _diag_steps(by_run.get(row.run_id)))
            for row, is_stuck, h in zip(runs.itertuples(index=False), stuck, entropy)]


def _series(rows: pd.DataFrame) -> dict[str, tuple[tuple[int, float], ...]]:
    return {r: tuple(zip(g["step"].astype(int), g["value"].astype(float))) for r, g in rows.groupby("run_id")}


def _diag_steps(rows: pd.DataFrame | None) -> tuple[tuple[int, dict[tuple[str, str], float]], ...]:
    if rows is None:
        return ()
    steps: dict[int, dict[tuple[str, str], float]] = {}
    for step, group, name, value in zip(rows["step"], rows["group"], rows["name"], rows["value"]):
        if math.isfinite(value):
            steps.setdefault(int(step), {})[(group, name)] = float(value)
    return tuple(sorted(steps.items()))


def replay(run: StoredRun, thresholds: Thresholds | None = None) -> Verdict:
    """The detector's first doomed verdict over a stored run, fed as the training loop feeds it.

    At diagnostics step s the loop has logged the training losses and evaluated the dev
    set at steps <= s (the step-0 evaluation is not used), so the replay feeds those, then
    checks s.

    Args:
        run: the stored run.
        thresholds: the detector's thresholds (default :class:`~steadytune.training.guard.Thresholds`).

    Returns:
        The first doomed verdict, or the ``ok`` verdict.
    """
    guard = Guard("flag", run.total_steps, run.label_entropy, run.baseline, thresholds)
    losses, evals = list(run.losses), list(run.evals)
    li = ei = 0
    for step, diagnostics in run.diags:
        while li < len(losses) and losses[li][0] <= step:
            guard.note_loss(losses[li][1])
            li += 1
        while ei < len(evals) and evals[ei][0] <= step:
            guard.note_eval(*evals[ei])
            ei += 1
        verdict = guard.check(step, diagnostics)
        if verdict.doomed:
            return verdict
    return guard.verdict


def replay_table(runs: Sequence[StoredRun], thresholds: Thresholds | None = None) -> pd.DataFrame:
    """One row per run: ``study, run_id, task, regime, seed, total_steps, failed, stuck,
    doomed_step`` (NaN: never doomed) and ``rule``."""
    rows = []
    for run in runs:
        v = replay(run, thresholds)
        rows.append({"study": run.study, "run_id": run.run_id, "task": run.task, "regime": run.regime,
                     "seed": run.seed, "total_steps": run.total_steps, "failed": run.failed, "stuck": run.stuck,
                     "doomed_step": float(v.step) if v.doomed else math.nan, "rule": v.rule})
    return pd.DataFrame(rows, columns=["study", "run_id", "task", "regime", "seed", "total_steps", "failed",
                                       "stuck", "doomed_step", "rule"])


def score(table: pd.DataFrame, fractions: Sequence[float] = FRACTIONS, by: Sequence[str] = ()) -> pd.DataFrame:
    """Precision and recall of the verdicts reached by each fraction of training.

    A run is *flagged* by fraction f when its first doomed verdict came at a diagnostics
    step <= f x its steps. Precision is the share of flagged runs with the label (NaN when
    none is flagged), recall the share of labelled runs flagged (NaN when none has it).

    Args:
        table: :func:`replay_table` rows.
        fractions: points of training (fractions of each run's steps).
        by: columns to score separately (e.g. ``["study", "task"]``).

    Returns:
        ``by`` columns, then :data:`SCORE_COLUMNS`: counts, precision and recall against
        ``failed`` and ``stuck``, ``successes_flagged`` (flagged runs that did not fail) and
        ``steps_saved``: the share of all the runs' steps a ``stop`` policy would have saved
        by stopping at the verdict (the step after it), whatever the fraction.
    """
    groups = table.groupby(list(by), sort=False, dropna=False) if by else [((), table)]
    rows = []
    for keys, g in groups:
        keys = keys if isinstance(keys, tuple) else (keys,)
        total = g["total_steps"].to_numpy(float)
        doomed = g["doomed_step"].to_numpy(float)
        saved = np.where(np.isnan(doomed), 0.0, total - (doomed + 1)).sum() / total.sum()
        failed, stuck = g["failed"].to_numpy(bool), g["stuck"].to_numpy(bool)
        for f in fractions:
            with np.errstate(invalid="ignore"):
                flagged = ~np.isnan(doomed) & (doomed <= f * total)
            rows.append({**dict(zip(by, keys)), "fraction": f, "n": len(g), "failed": int(failed.sum()),
                         "stuck": int(stuck.sum()), "flagged": int(flagged.sum()),
                         "precision_failed": _share(flagged & failed, flagged),
                         "recall_failed": _share(flagged & failed, failed),
                         "precision_stuck": _share(flagged & stuck, flagged),
                         "recall_stuck": _share(flagged & stuck, stuck),
                         "successes_flagged": int((flagged & ~failed).sum()), "steps_saved": float(saved)})
    return pd.DataFrame(rows, columns=[*by, *SCORE_COLUMNS])


def _share(hits: np.ndarray, of: np.ndarray) -> float:
    return float(hits.sum() / of.sum()) if of.sum() else math.nan


def fit_thresholds(runs: Sequence[StoredRun], fractions: Sequence[float] = (0.25, 0.5, 1.0),
                   min_precision: float = 0.95, grid: Mapping[str, Sequence[Any]] = GRID) -> Thresholds:
    """The thresholds of ``grid`` with the highest recall against ``failed``, by the earliest
    fraction first, among those whose precision against ``failed`` is >= ``min_precision`` at
    every fraction (a fraction where nothing is flagged passes).

    Args:
        runs: the training studies' runs.
        fractions: where recall is compared, in order of priority.
        min_precision: the precision every fraction must keep.
        grid: key -> values to try (keys of :class:`~steadytune.training.guard.Thresholds`).

    Returns:
        The best thresholds (the first in grid order among equals).

    Raises:
        ValueError: an unknown grid key, no runs, or no grid point reaches ``min_precision``.
    """
    unknown = sorted(set(grid) - {f.name for f in fields(Thresholds)})
    if unknown or not runs:
        raise ValueError(f"unknown threshold keys {unknown}" if unknown else "no runs to fit thresholds on")
    best: tuple[tuple[float, ...], Thresholds] | None = None
    for values in itertools.product(*grid.values()):
        th = replace(Thresholds(), **dict(zip(grid, values)))
        s = score(replay_table(runs, th), fractions)
        if (s["precision_failed"].fillna(1.0) < min_precision).any():
            continue
        key = tuple(s["recall_failed"].fillna(0.0))
        if best is None or key > best[0]:
            best = (key, th)
    if best is None:
        raise ValueError(f"no thresholds of the grid reach precision {min_precision} on the training runs")
    return best[1]


@dataclass(frozen=True)
class TriageResult:
    """What :func:`triage` found."""

    thresholds: Thresholds
    """The thresholds scored (fitted on ``train``, or the detector's defaults)."""
    train: tuple[str, ...]
    """The studies the thresholds were fitted on (empty: the defaults were used)."""
    runs: pd.DataFrame
    """:func:`replay_table` of every run, with a ``split`` column (``train``, ``held-out``, ``all``)."""
    scores: pd.DataFrame
    """:func:`score` by ``split``."""
    by_study: pd.DataFrame
    """:func:`score` by ``split, study, task``."""
    by_regime: pd.DataFrame
    """:func:`score` by ``split, study, task, regime``."""


def triage(studies: Iterable[str | Path], train: Iterable[str] = (), fractions: Sequence[float] = FRACTIONS,
           label_entropy: Mapping[str, float] | None = None, min_precision: float = 0.95) -> TriageResult:
    """Replay the detector over stored studies and score it; fit its thresholds on ``train`` first.

    Args:
        studies: study files.
        train: names (file stems) of the studies to choose the thresholds on
            (:func:`fit_thresholds`); the others are held out. Empty: score the detector's
            default thresholds on every study (split ``all``).
        fractions: points of training to score.
        label_entropy: per task, the label-prior entropy of runs that did not store it.
        min_precision: the precision the fitted thresholds keep on ``train``.

    Returns:
        The :class:`TriageResult`.

    Raises:
        ValueError: a ``train`` name that is not one of ``studies``, or as :func:`load_runs`
            and :func:`fit_thresholds`.
    """
    paths = list(studies)
    names = [Path(p).stem for p in paths]
    train = tuple(train)
    unknown = sorted(set(train) - set(names))
    if unknown:
        raise ValueError(f"training studies {unknown} are not among the studies ({', '.join(names)})")
    runs = [r for p in paths for r in load_runs(p, label_entropy)]
    fitted = fit_thresholds([r for r in runs if r.study in train], min_precision=min_precision) if train else None
    thresholds = fitted or Thresholds()
    table = replay_table(runs, thresholds)
    table.insert(0, "split", np.where(table["study"].isin(train), "train", "held-out") if train else "all")
    return TriageResult(thresholds, train, table, score(table, fractions, ["split"]),
                        score(table, fractions, ["split", "study", "task"]),
                        score(table, fractions, ["split", "study", "task", "regime"]))


def vanishing_by_regime(runs: Sequence[StoredRun], ratio: float = VANISHING) -> pd.DataFrame:
    """Per regime: how many stuck runs show vanishing lower-layer gradients, and how many do not.

    Args:
        runs: stored runs (:func:`load_runs`), of any studies.
        ratio: vanishing = the embeddings' gradient norm below ``ratio`` times the
            classifier's at some diagnostics step.

    Returns:
        ``regime, runs, stuck, stuck_vanishing, stuck_not_vanishing, other_vanishing``
        (runs that are not stuck but show it), ``median_ratio_stuck`` and
        ``median_ratio_other`` (median over runs of each run's lowest ratio), sorted by regime.
    """
    df = pd.DataFrame({"regime": [r.regime for r in runs], "stuck": [r.stuck for r in runs],
                       "min_ratio": [r.min_ratio for r in runs]})
    df["vanishing"] = df["min_ratio"] < ratio
    rows = []
    for regime, g in df.groupby("regime", sort=True):
        stuck, other = g[g["stuck"]], g[~g["stuck"]]
        rows.append({"regime": regime, "runs": len(g), "stuck": len(stuck),
                     "stuck_vanishing": int(stuck["vanishing"].sum()),
                     "stuck_not_vanishing": int((~stuck["vanishing"]).sum()),
                     "other_vanishing": int(other["vanishing"].sum()),
                     "median_ratio_stuck": float(stuck["min_ratio"].median()) if len(stuck) else math.nan,
                     "median_ratio_other": float(other["min_ratio"].median()) if len(other) else math.nan})
    return pd.DataFrame(rows)


__all__ = ["FRACTIONS", "GRID", "SCORE_COLUMNS", "VANISHING", "StoredRun", "TriageResult", "fit_thresholds",
           "load_runs", "regime_of", "replay", "replay_table", "score", "triage", "vanishing_by_regime"]
