"""Overhead of training-time diagnostics (``diag_every``) on a real run.

Fine-tunes the packaged MiniLM on a slice of real RTE with ``diag_every`` = 0, 10 and 1,
alternating the settings (rotated each repetition, so slow drift of a shared machine
does not favour one setting), and prints the diagnostics' overhead as a percentage of
the step time, measured two ways:

* end to end: mean step time of the setting vs. ``diag_every=0`` (noisy on a shared box);
* in-run: time spent inside ``Recorder.record`` over the same steps' total time.

Step times come from the ``progress`` callback. Only iterations ``[10, 10 * k)`` are
used: a whole number of ``diag_every=10`` periods, after warm-up, and without the final
evaluation. Targets: <= 3 % at 10, <= 10 % at 1.

    python bench/diagnostics_overhead.py [--reps 3] [--max-steps 31] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def glue_dir() -> Path:
    env = os.environ.get("GLUE_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data" / "glue"


def timed_run(every: int, args: argparse.Namespace) -> tuple[float, float]:
    """One run; returns (mean step time, mean time inside Recorder.record) over the window, in s."""
    # steadytune (torch, transformers) is imported only when a run is timed: `--help` stays fast.
    from steadytune.config.execution import Execution
    from steadytune.config.recipes import resolve_config
    from steadytune.training import diagnostics
    from steadytune.training.loop import train_and_evaluate

    cfg = resolve_config(task="rte", recipe="devlin2019", model="minilm", overrides={
        "data_dir": str(glue_dir()), "train_limit": args.train_limit, "max_steps": args.max_steps,
        "evals_per_epoch": 0, "diag_every": every, "seed": 1})
    execution = Execution(device="cpu", threads=args.threads)  # where it runs is not part of the config
    ends: dict[int, float] = {}
    inside: dict[int, float] = {}
    original = diagnostics.Recorder.record

    def record(self, step, logits=None):
        t0 = time.perf_counter()
        original(self, step, logits)
        inside[step] = time.perf_counter() - t0

    diagnostics.Recorder.record = record
    try:
        train_and_evaluate(cfg, progress=lambda step, total, info: ends.__setitem__(step, time.perf_counter()),
                           execution=execution)
    finally:
        diagnostics.Recorder.record = original
    # Iteration s (0-based) ends at progress(s + 1); its time is ends[s + 1] - ends[s].
    stop = 10 * ((args.max_steps - 1) // 10)
    window = range(10, stop)
    steps = [ends[s + 1] - ends[s] for s in window]
    return statistics.fmean(steps), statistics.fmean(inside.get(s, 0.0) for s in window)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=31)
    parser.add_argument("--train-limit", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.max_steps < 21:
        parser.error("--max-steps must be >= 21 (one full diag_every=10 period after warm-up)")

    import torch  # heavy: after argument parsing

    torch.set_num_threads(args.threads)
    settings = [0, 10, 1]
    step_times: dict[int, list[float]] = {s: [] for s in settings}
    record_times: dict[int, list[float]] = {s: [] for s in settings}
    for rep in range(args.reps):
        order = settings[rep % 3:] + settings[:rep % 3]
        for every in order:
            step, inside = timed_run(every, args)
            step_times[every].append(step)
            record_times[every].append(inside)
            print(f"rep {rep} diag_every={every:<2d} step {1e3 * step:7.1f} ms  "
                  f"inside Recorder.record {1e3 * inside:6.2f} ms", flush=True)

    base = statistics.median(step_times[0])
    print(f"\nMiniLM, RTE train_limit={args.train_limit}, {args.threads} threads, CPU, "
          f"{args.reps} reps; iterations [10, {10 * ((args.max_steps - 1) // 10)}) of each run")
    print(f"diag_every=0: median step {1e3 * base:.1f} ms")
    for every, target in ((10, 3.0), (1, 10.0)):
        end_to_end = 100.0 * (statistics.median(step_times[every]) - base) / base
        in_run = 100.0 * statistics.median(r / s for r, s in zip(record_times[every], step_times[every]))
        print(f"diag_every={every:<2d}: end-to-end {end_to_end:+6.2f} %   in-run {in_run:5.2f} %   "
              f"(target <= {target:g} %)")


if __name__ == "__main__":
    main()
