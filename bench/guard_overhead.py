"""Overhead of the doomed-run detector (``guard``) on a real run: target <= 1% of step time.

Fine-tunes the packaged MiniLM on a slice of real RTE with ``guard=off`` and ``guard=flag``
(the default), diagnostics every step (``diag_every=1``, the worst case: the detector runs
at every diagnostics step), alternating the settings each repetition, and prints:

* in-run: time spent inside ``Guard.check`` (and the loss/eval notes) over the same
  iterations' total time — the detector's own cost, independent of machine noise;
* end to end: mean step time with the detector vs. without (noisy on a shared machine);
* per call: the mean time of one ``Guard.check``.

Step times come from the ``progress`` callback; iterations ``[5, max_steps - 1)`` are used
(after warm-up, without the final evaluation).

    python bench/guard_overhead.py [--reps 3] [--max-steps 31] [--threads 2]
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


def timed_run(guard: str, args: argparse.Namespace) -> tuple[float, float, int]:
    """One run; (mean step time, mean time inside the guard per step, guard calls) over the window."""
    # steadytune (torch, transformers) is imported only when a run is timed: `--help` stays fast.
    from steadytune.config.execution import Execution
    from steadytune.config.recipes import resolve_config
    from steadytune.training import guard as guard_module
    from steadytune.training.loop import train_and_evaluate

    cfg = resolve_config(task="rte", recipe="devlin2019", model="minilm", overrides={
        "data_dir": str(glue_dir()), "train_limit": args.train_limit, "max_steps": args.max_steps,
        "evals_per_epoch": 0, "diag_every": 1, "log_every": 1, "guard": guard, "seed": 1})
    execution = Execution(device="cpu", threads=args.threads)
    ends: dict[int, float] = {}
    inside: dict[int, float] = {}
    original = guard_module.Guard.check

    def check(self, step, diagnostics):
        t0 = time.perf_counter()
        out = original(self, step, diagnostics)
        inside[step] = time.perf_counter() - t0
        return out

    guard_module.Guard.check = check
    try:
        train_and_evaluate(cfg, progress=lambda step, total, info: ends.__setitem__(step, time.perf_counter()),
                           execution=execution)
    finally:
        guard_module.Guard.check = original
    window = range(5, args.max_steps - 1)  # iteration s ends at progress(s + 1)
    steps = [ends[s + 1] - ends[s] for s in window]
    return statistics.fmean(steps), statistics.fmean(inside.get(s, 0.0) for s in window), len(inside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=31)
    parser.add_argument("--train-limit", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.max_steps < 10:
        parser.error("--max-steps must be >= 10")

    import torch  # heavy: after argument parsing

    torch.set_num_threads(args.threads)
    step_times: dict[str, list[float]] = {"off": [], "flag": []}
    guard_times: list[float] = []
    for rep in range(args.reps):
        for guard in (("off", "flag") if rep % 2 == 0 else ("flag", "off")):
            step, inside, calls = timed_run(guard, args)
            step_times[guard].append(step)
            if guard == "flag":
                guard_times.append(inside)
            print(f"rep {rep} guard={guard:<4s} step {1e3 * step:7.1f} ms  inside Guard.check "
                  f"{1e6 * inside:7.1f} us ({calls} calls)", flush=True)
    off, flag = statistics.median(step_times["off"]), statistics.median(step_times["flag"])
    in_run = 100.0 * statistics.median(g / s for g, s in zip(guard_times, step_times["flag"]))
    print(f"\nMiniLM, RTE train_limit={args.train_limit}, {args.threads} threads, CPU, {args.reps} reps, "
          f"diag_every=1; iterations [5, {args.max_steps - 1}) of each run")
    print(f"guard=off: median step {1e3 * off:.1f} ms; guard=flag: {1e3 * flag:.1f} ms "
          f"(end to end {100.0 * (flag - off) / off:+.2f} %, machine noise included)")
    print(f"inside the detector: {1e6 * statistics.median(guard_times):.1f} us per step = {in_run:.4f} % of the "
          "step at diag_every=1 (target <= 1 %); at the default diag_every=10, a tenth of that")


if __name__ == "__main__":
    main()
