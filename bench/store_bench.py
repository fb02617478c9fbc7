"""Benchmark of the study store: write overhead per run, and `summary` over a big study.

    python bench/store_bench.py [--write-runs 200] [--summary-runs 10000] [--curve-rows 200]

Targets (issue "Seed sweeps that survive anything"): recording a finished run (result,
curves, diagnostics, log, status: one transaction) costs <= 1 s; `summary` over 10,000
stored runs with curves takes <= 2 s. Results are fake but shaped like real ones.
Not a test; prints the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from steadytune.analyses.stats import compare_recipes, summarize
from steadytune.config.recipes import resolve_config
from steadytune.config.run import config_hash
from steadytune.store.study import Study
from steadytune.sweeps.spec import PlannedRun
from steadytune.training.results import RunResult

TASKS = ("rte", "mrpc", "cola", "stsb")
RECIPES = ("devlin2019", "mosbach2021", "mixout2020", "zhang2021")
GRID = [{"lr": lr, "epochs": ep} for lr, ep in itertools.product(
    ("1e-5", "2e-5", "3e-5", "4e-5", "5e-5"), ("3", "5", "10", "15", "20"))]


def plan(n: int) -> list[PlannedRun]:
    """``n`` planned runs: tasks x recipes x 25 grid points x seeds (seed-major)."""
    runs = []
    for seed in itertools.count(1):
        for task, recipe, point in itertools.product(TASKS, RECIPES, GRID):
            cfg = resolve_config(task=task, recipe=recipe, seed=seed, model="tiny", model_type="bert",
                                 overrides=point)
            label = f"epochs={cfg.epochs:g},lr={cfg.lr!r}"
            runs.append(PlannedRun(config_hash(cfg), cfg, label))
            if len(runs) == n:
                return runs
    raise AssertionError("unreachable")


def fake_result(run: PlannedRun, curve_rows: int, diag_rows: int) -> RunResult:
    """A finished (or 5% diverged) run with ``curve_rows`` curve and ``diag_rows`` diagnostic rows."""
    rng = np.random.default_rng(int(run.run_id, 16) % 2**32)
    diverged = rng.random() < 0.05
    acc = float("nan") if diverged else float(rng.uniform(0.45, 0.75))
    steps = np.arange(curve_rows // 4)
    curves = pd.DataFrame({"step": np.repeat(steps, 4), "epoch": np.repeat(steps / 25.0, 4),
                           "split": ["train", "train", "dev", "dev"] * len(steps),
                           "name": ["loss", "lr", "acc", "loss"] * len(steps), "value": rng.random(4 * len(steps))})
    diags = pd.DataFrame({"step": np.arange(diag_rows) // 10, "group": "grad_norm_layer",
                          "name": [f"layer.{i % 10}" for i in range(diag_rows)], "value": rng.random(diag_rows)})
    return RunResult(
        task=run.cfg.task, recipe=run.cfg.recipe, seed=run.cfg.seed, model=run.cfg.model,
        config=run.cfg.to_dict(), metric="acc", metrics={"final": {"acc": acc, "loss": 0.6}, "best": {"acc": 0.76}},
        best_step=40, majority_baseline=0.527, failed=diverged or acc <= 0.527, failed_best=False,
        status="diverged" if diverged else "finished", error="non-finite training loss" if diverged else None,
        steps=470, total_steps=470, warmup_steps=47, steps_per_epoch=157, wall_seconds=312.5,
        seeds={"run": run.cfg.seed}, versions={"torch": "x"}, data={"n_train": 2490}, model_info={},
        curves=curves, diagnostics=diags)


def fill(path: Path, runs: list[PlannedRun], curve_rows: int, diag_rows: int) -> list[float]:
    """Plan and record ``runs`` as a sweep driver does; returns seconds per recorded run."""
    results = [fake_result(r, curve_rows, diag_rows) for r in runs]
    times = []
    with Study.open(path) as study:
        study.add_planned(runs)
        for run, result in zip(runs, results):
            start = time.perf_counter()
            study.claim(run.run_id)
            study.record_result(run.run_id, result, log="start run ...\nend run ...\n" * 20)
            times.append(time.perf_counter() - start)
    return times


def bench_summary(path: Path) -> dict[str, float]:
    """Seconds for the pieces of `steadytune summary`, in-process and as a command."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    with Study.open(path, readonly=True) as study:
        runs = study.runs_table()
    out["runs_table"] = time.perf_counter() - start
    start = time.perf_counter()
    summarize(runs)
    out["summarize"] = time.perf_counter() - start
    start = time.perf_counter()
    compare_recipes(runs)
    out["compare_recipes"] = time.perf_counter() - start
    for fmt in ("json", "table"):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "steadytune", "summary", str(path), "--format", fmt],
                       check=True, capture_output=True)
        out[f"cli_{fmt}"] = time.perf_counter() - start
    return out


def _vectorised_bootstrap_ci(values, statistic=np.mean, n_resamples=2000, confidence=0.95, random_state=0):
    """``stats.bootstrap_ci`` with the resamples reduced in one NumPy call (the same draws)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    idx = np.random.default_rng(random_state).integers(0, v.size, size=(n_resamples, v.size))
    boot = statistic(v[idx], axis=1)
    alpha = 1.0 - confidence
    low, high = np.percentile(boot, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return (float(low), float(high))


def bench_vectorised_summary(path: Path) -> tuple[float, bool]:
    """`summarize` with a vectorised bootstrap (a proposed stats.py change): seconds, same table?"""
    from steadytune.analyses import stats

    with Study.open(path, readonly=True) as study:
        runs = study.runs_table()
    reference = summarize(runs)
    original = stats.bootstrap_ci
    stats.bootstrap_ci = _vectorised_bootstrap_ci
    try:
        start = time.perf_counter()
        fast = summarize(runs)
        seconds = time.perf_counter() - start
    finally:
        stats.bootstrap_ci = original
    same = bool(np.allclose(fast.select_dtypes("number"), reference.select_dtypes("number"),
                            rtol=1e-12, atol=0, equal_nan=True))
    return seconds, same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-runs", type=int, default=200)
    parser.add_argument("--summary-runs", type=int, default=10_000)
    parser.add_argument("--curve-rows", type=int, default=200)
    parser.add_argument("--diag-rows", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times = fill(Path(tmp) / "write.db", plan(args.write_runs), args.curve_rows, args.diag_rows)
        ms = 1000 * np.array(times)
        print(f"record one run ({args.curve_rows} curve + {args.diag_rows} diagnostic rows, one transaction): "
              f"median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms "
              f"over {len(ms)} runs (target <= 1000 ms)")
        big = Path(tmp) / "big.db"
        start = time.perf_counter()
        fill(big, plan(args.summary_runs), args.curve_rows, args.diag_rows)
        size = big.stat().st_size / 2**20
        print(f"filled a study of {args.summary_runs} runs in {time.perf_counter() - start:.1f} s ({size:.0f} MiB)")
        parts = bench_summary(big)
        print(f"summary over {args.summary_runs} runs: runs_table {parts['runs_table']:.2f} s, summarize "
              f"{parts['summarize']:.2f} s, compare_recipes {parts['compare_recipes']:.2f} s; "
              f"`steadytune summary` command (with Python start-up): json {parts['cli_json']:.2f} s, "
              f"table {parts['cli_table']:.2f} s (target <= 2 s)")
        seconds, same = bench_vectorised_summary(big)
        print(f"summarize with a vectorised bootstrap_ci (proposed stats.py change): {seconds:.2f} s "
              f"({'identical' if same else 'DIFFERENT'} table)")


if __name__ == "__main__":
    main()
