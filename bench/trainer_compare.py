"""steadytune's training step against Hugging Face ``Trainer``, same machine, same run.

    python bench/trainer_compare.py                     # speed: RTE, MiniLM, 60 steps x 2 rounds
    python bench/trainer_compare.py --accuracy-seeds 3  # + dev accuracy after the same work

Every method runs in its own subprocess (so peak RSS is its own), in alternating order
over ``--rounds`` rounds, on the same model (the packaged MiniLM unless ``--model``),
data (GLUE ``--task`` train set), batch size 16, max length 128, lr 2e-5 with 10% warmup
and linear decay, weight decay 0.01, and number of steps:

- ``trainer_run_glue``: ``Trainer`` as ``run_glue.py`` runs it by default (every example
  padded to 128, random batches);
- ``trainer_best``: ``Trainer`` at its best on CPU (dynamic padding, length-grouped
  sampling, fused AdamW);
- ``steadytune``: ``steadytune.run`` with the defaults (fp32, length-grouped batches,
  diagnostics every 10 steps);
- ``steadytune_bf16``: the same with ``precision=bf16``.

Printed per method: seconds per step (mean over steps after ``--skip`` warm-up steps,
excluding evaluation), useful (non-padding) tokens per second, peak RSS, and the
achieved fraction of this CPU's measured matmul peak (6 x non-embedding parameters x
useful tokens). The last line is ``ratio_vs_trainer_best=X`` (fp32 steadytune vs
``trainer_best``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METHODS = ("trainer_run_glue", "trainer_best", "steadytune", "steadytune_bf16")
REPO = Path(__file__).resolve().parents[1]


def _glue_dir() -> str:
    data = os.environ.get("STEADYTUNE_DATA", str(REPO.parent / "shared" / "data"))
    return os.environ.get("GLUE_DIR", str(Path(data) / "glue"))


def _split(task: str, split: str, limit: int, seed: int = 0):
    from steadytune.data.glue import load_glue
    from steadytune.data.splits import downsample

    data = load_glue(task, split, _glue_dir())
    return downsample(data, limit, seed) if limit and split == "train" else data


def _intervals(stamps: list[float], skip: int) -> float:
    """Mean step time from per-step end timestamps, without warm-up and the last step."""
    diffs = np.diff(np.asarray(stamps))
    body = diffs[skip:-1] if len(diffs) > skip + 1 else diffs
    return float(body.mean())


def _trainer(args: argparse.Namespace, best: bool, seed: int, steps: int) -> dict:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from steadytune.training.models import resolve_model_path

    path = resolve_model_path(args.model)
    tok = AutoTokenizer.from_pretrained(path)
    train, dev = _split(args.task, "train", args.train_limit), _split(args.task, "dev", 0)

    def features(split):
        enc = tok(split.texts_a, split.texts_b, truncation=True, max_length=128,
                  padding=False if best else "max_length")
        return [dict({k: enc[k][i] for k in enc}, labels=int(split.labels[i])) for i in range(len(split))]

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    targs = TrainingArguments(
        output_dir=str(Path(args.tmp) / f"trainer-{best}-{seed}"), per_device_train_batch_size=16,
        per_device_eval_batch_size=128, learning_rate=2e-5, weight_decay=0.01, warmup_steps=0.1,
        max_steps=steps, seed=seed, adam_epsilon=1e-6, logging_strategy="no", save_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True,
        train_sampling_strategy="group_by_length" if best else "random",
    )
    collator = DataCollatorWithPadding(tok) if best else default_data_collator
    trainer = Trainer(model=model, args=targs, train_dataset=features(train), data_collator=collator,
                      callbacks=[Clock()])
    trainer.train()
    out = {"s_per_step": _intervals(stamps, args.skip)}
    if args.evaluate:
        pred = trainer.predict(features(dev))
        out["dev_acc"] = float((pred.predictions.argmax(-1) == dev.labels).mean())
    out["n_params_non_embedding"] = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    torch.set_num_threads(torch.get_num_threads())
    return out


def _steadytune(args: argparse.Namespace, precision: str, seed: int, steps: int) -> dict:
    import steadytune

    stamps: list[float] = []
    result = steadytune.run(
        task=args.task, recipe="mosbach2021", seed=seed, model=args.model, data_dir=_glue_dir(),
        train_limit=args.train_limit, max_steps=steps, epochs=3, precision=precision,
        evals_per_epoch=0, progress=lambda step, total, info: stamps.append(time.perf_counter()),
    )
    out = {"s_per_step": _intervals(stamps, args.skip), "dev_acc": result.metrics["final"].get("acc")}
    out["n_params_non_embedding"] = result.model_info["num_parameters"] - _embedding_params(args.model)
    return out


def _embedding_params(model: str) -> int:
    from steadytune.training.models import load_config

    c = load_config(model)
    return (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * c.hidden_size


def worker(args: argparse.Namespace) -> None:
    """Run one method once (in this process) and print a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    if args.worker.startswith("trainer"):
        out = _trainer(args, args.worker == "trainer_best", args.seed, args.steps)
    else:
        out = _steadytune(args, "bf16" if args.worker.endswith("bf16") else "fp32", args.seed, args.steps)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


def matmul_peak_gflops(dtype_name: str, threads: int) -> float:
    """Measured peak of this CPU: a 2048^3 matmul loop (the best of a few runs)."""
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(3):
            a @ b
        best = min(best, (time.perf_counter() - t) / 3)
    return 2 * 2048**3 / best / 1e9


def _spawn(args: argparse.Namespace, method: str, seed: int, steps: int, evaluate: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--seed", str(seed), "--steps", str(steps),
           "--task", args.task, "--model", args.model, "--train-limit", str(args.train_limit),
           "--threads", str(args.threads), "--skip", str(args.skip), "--tmp", args.tmp]
    if evaluate:
        cmd.append("--evaluate")
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="rte")
    p.add_argument("--model", default="minilm")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the timing")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--accuracy-seeds", type=int, default=0, help="also train 3 epochs on a 1k slice per seed")
    p.add_argument("--tmp", default="/tmp/steadytune-bench")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    methods = args.methods.split(",")
    train = _split(args.task, "train", args.train_limit)
    from steadytune.training.models import load_tokenizer

    tok = load_tokenizer(args.model)
    lengths = [len(x) for x in tok(train.texts_a, train.texts_b, truncation=True, max_length=128)["input_ids"]]
    mean_len = float(np.mean(lengths))
    peaks = {"fp32": matmul_peak_gflops("float32", args.threads), "bf16": matmul_peak_gflops("bfloat16", args.threads)}
    print(f"# task={args.task} model={args.model} steps={args.steps} rounds={args.rounds} threads={args.threads} "
          f"mean_tokens_per_example={mean_len:.1f} matmul_peak_gflops fp32={peaks['fp32']:.0f} bf16={peaks['bf16']:.0f}")
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for r in range(args.rounds):
        order = methods if r % 2 == 0 else methods[::-1]  # alternate to spread machine drift
        for m in order:
            runs[m].append(_spawn(args, m, 1, args.steps, evaluate=False))
            print(f"  round {r + 1} {m:18s} {runs[m][-1]['s_per_step']:.3f} s/step", flush=True)

    print(f"\n{'method':18s} {'s/step':>8s} {'tokens/s':>9s} {'peak RSS':>9s} {'% peak':>7s} {'speed-up vs best':>17s} {'vs run_glue':>12s}")
    table = {m: float(np.mean([x["s_per_step"] for x in runs[m]])) for m in methods}
    for m in methods:
        sps = table[m]
        tokens = 16 * mean_len / sps
        flops = 6 * runs[m][0]["n_params_non_embedding"] * tokens / 1e9
        peak = peaks["bf16" if m.endswith("bf16") else "fp32"]
        rss = max(x["peak_rss_mib"] for x in runs[m])
        vs_best = table["trainer_best"] / sps if "trainer_best" in table else float("nan")
        vs_glue = table["trainer_run_glue"] / sps if "trainer_run_glue" in table else float("nan")
        print(f"{m:18s} {sps:8.3f} {tokens:9.0f} {rss:7.0f}Mi {100 * flops / peak:6.1f}% {vs_best:16.2f}x {vs_glue:11.2f}x")

    if args.accuracy_seeds:
        print(f"\n# dev accuracy after the same work: 3 epochs on a 1000-example {args.task} slice, seeds 1..{args.accuracy_seeds}")
        acc_args = argparse.Namespace(**{**vars(args), "train_limit": 1000})
        steps = 3 * int(np.ceil(1000 / 16))
        # run_glue padding and bf16 (slow on CPUs without fast bf16 matmuls) are left out here
        for m in [m for m in methods if m in ("trainer_best", "steadytune")]:
            accs = [_spawn(acc_args, m, s, steps, evaluate=True)["dev_acc"] for s in range(1, args.accuracy_seeds + 1)]
            print(f"{m:18s} dev acc {np.mean(accs):.3f} ± {np.std(accs, ddof=1) if len(accs) > 1 else 0:.3f}  {accs}")
    if "trainer_best" in table and "steadytune" in table:
        print(f"ratio_vs_trainer_best={table['trainer_best'] / table['steadytune']:.2f}")


if __name__ == "__main__":
    main()
