"""Grouped seeds on a GPU: does a run trained in a group equal the same run trained alone there?

    python bench/gpu_check.py [--model M] [--data-dir GLUE] [--device cuda] [--steps 12]

On CUDA, dropout (inside and outside attention) draws from the CUDA generator, which the
group swaps per run; this checks that, and the per-run attention, on the device. For tiny
BERT (fp32, bf16), RoBERTa and ALBERT (bf16 autocast) and for the given model on an RTE
slice (bf16, fp32),
K=3 runs alone and as one group; prints the largest curve and metric differences, and one
last line ``grouped_check=ok`` or ``grouped_check=FAILED``. Curves of runs trained alone
on a GPU are not bit-reproducible either (atomic adds in the backward of embeddings and
attention), so the same run alone is also trained twice: the group's difference is judged
against that floor.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def _curves_diff(a, b) -> float:
    if len(a.curves) != len(b.curves):
        return float("inf")
    return float(np.max(np.abs(a.curves["value"].to_numpy() - b.curves["value"].to_numpy())))


def _compare(model: str, glue: str, device: str, precision: str, steps: int, limit: int) -> tuple[float, float]:
    from steadytune.config.execution import Execution
    from steadytune.training.grouped.loop import train_group
    from steadytune.training.loop import train_and_evaluate
    from steadytune.training.models import resolve_for_model
    from steadytune.training.runner import process_state_kept

    def cfg(seed: int):
        return resolve_for_model(task="rte", recipe="mosbach2021", seed=seed, model=model, overrides=dict(
            data_dir=glue, max_steps=steps, evals_per_epoch=2, log_every=1, diag_every=2, train_limit=limit,
            dev_limit=64, precision=precision, lr=1e-4))

    execution = Execution(device=device)
    with process_state_kept():
        alone = [train_and_evaluate(cfg(s), execution=execution) for s in (1, 2, 3)]
    with process_state_kept():
        again = train_and_evaluate(cfg(1), execution=execution)
    with process_state_kept():
        grouped = train_group([cfg(s) for s in (1, 2, 3)], execution=execution)
    floor = _curves_diff(alone[0], again)
    diff = max(_curves_diff(a, g) for a, g in zip(alone, grouped))
    apart = _curves_diff(alone[0], alone[1])
    print(f"{Path(model).name:14s} {precision:4s} group-vs-alone {diff:.2e}  alone-vs-alone {floor:.2e}  "
          f"seed1-vs-seed2 {apart:.2e}", flush=True)
    return diff, max(floor, 1e-6), apart


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a real model (e.g. the bundle's MiniLM)")
    p.add_argument("--data-dir", default=None, help="GLUE folder for --model (default: tiny data)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=12)
    args = p.parse_args()
    from steadytune.testing.tiny import make_tiny_glue, make_tiny_model

    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        glue = str(make_tiny_glue(Path(tmp) / "glue"))
        tiny = {f: str(make_tiny_model(Path(tmp) / f, f)) for f in ("bert", "roberta", "albert")}
        cases = [(tiny["bert"], glue, 0, "fp32"), (tiny["bert"], glue, 0, "bf16"), (tiny["roberta"], glue, 0, "bf16"),
                 (tiny["albert"], glue, 0, "bf16")]
        if args.model:
            cases += [(args.model, args.data_dir or glue, 256, "bf16"), (args.model, args.data_dir or glue, 256, "fp32")]
        for model, data, limit, precision in cases:
            diff, floor, apart = _compare(model, data, args.device, precision, args.steps, limit)
            # The group must be far closer to the run alone than another seed is, and within
            # a few times the device's own run-to-run floor.
            ok &= diff <= max(10 * floor, 1e-4) and diff < 0.1 * apart
    print(f"grouped_check={'ok' if ok else 'FAILED'}")


if __name__ == "__main__":
    main()
