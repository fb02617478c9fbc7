"""steadytune against Hugging Face ``Trainer``: speed per step, seeds per hour, accuracy after equal work.

    make bench                                          # installs the bench extra, then runs this
    python bench/trainer_compare.py                     # RTE, MiniLM, 40 steps x 2 rounds, every method
    python bench/trainer_compare.py --accuracy-seeds 2  # + dev accuracy after the same work (SST-2 1k slice)

Every method runs in its own subprocess (so peak RSS is its own), in alternating order
over ``--rounds`` rounds, on the same model (the packaged MiniLM unless ``--model``), data
(the GLUE ``--task`` training set), batch size 16, max length 128, lr 2e-5 with 10%
warmup and linear decay, weight decay 0.01, and number of steps:

- ``trainer_run_glue``: ``Trainer`` as ``run_glue.py`` runs it by default (every example
  padded to 128, random batches, fp32);
- ``trainer_best``: ``Trainer`` at its best on CPU (dynamic padding, length-grouped
  sampling, fused AdamW), fp32;
- ``trainer_best_bf16``: the same with Trainer's own ``bf16=True``;
- ``steadytune_fp32``: ``steadytune.run`` with ``precision=fp32``;
- ``steadytune``: ``steadytune.run`` with its defaults (``precision=auto``: what this
  machine's measured bf16 speed makes it choose; diagnostics every 10 steps);
- ``steadytune_group4`` / ``steadytune_group8``: 4 / 8 seeds trained as one grouped model
  (the defaults otherwise); its time per step is divided by the group size.

Printed per method: seconds per (run-)step (mean after ``--skip`` warm-up steps,
evaluation excluded), useful (non-padding) tokens per second, peak RSS, the precision
used, the achieved fraction of this CPU's *measured* matmul peak in that precision (6 x
non-embedding parameters x useful tokens), seconds per dev evaluation, and **seeds per
hour** of one realistic study cell: mosbach2021 on a 1,000-example RTE slice, 20 epochs
(1,260 steps) with the recipe's dev evaluations (61 passes over RTE dev), extrapolated from
the measured step and evaluation times (Trainer evaluating on the same schedule). The last
two lines are ``ratio_vs_trainer_best=X`` (steadytune's default s/step against Trainer in
its faster precision on this machine) and ``seed_throughput_vs_trainer=Y`` (steadytune's
seeds per hour, at its default or, if faster, its best group size, against Trainer run
seed by seed in its faster precision).
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

METHODS = ("trainer_run_glue", "trainer_best", "trainer_best_bf16", "steadytune_fp32", "steadytune",
           "steadytune_group4", "steadytune_group8")
REPO = Path(__file__).resolve().parents[1]
CELL_STEPS = 20 * 63
"""Updates of the study cell: 20 epochs of ceil(1000 / 16) = 63 batches."""
CELL_EVALS = 61
"""Dev evaluations of the cell: step 0, every 21 updates (evals_per_epoch=3) and each epoch end."""


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


def _trainer(args: argparse.Namespace, method: str, seed: int, steps: int) -> dict:
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

    best = method != "trainer_run_glue"
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

    labels = len(set(train.labels.tolist()))
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=labels)
    targs = TrainingArguments(
        output_dir=str(Path(args.tmp) / f"{method}-{seed}"), per_device_train_batch_size=16,
        per_device_eval_batch_size=128, learning_rate=2e-5, weight_decay=0.01, warmup_steps=0.1,
        max_steps=steps, seed=seed, adam_epsilon=1e-6, logging_strategy="no", save_strategy="no",
        report_to="none", disable_tqdm=True, use_cpu=True, bf16=method.endswith("bf16"),
        train_sampling_strategy="group_by_length" if best else "random",
    )
    collator = DataCollatorWithPadding(tok) if best else default_data_collator
    trainer = Trainer(model=model, args=targs, train_dataset=features(train), data_collator=collator,
                      callbacks=[Clock()])
    trainer.train()
    out = {"s_per_step": _intervals(stamps, args.skip), "precision": "bf16" if method.endswith("bf16") else "fp32"}
    dev_features = features(dev)
    if args.evaluate:
        pred = trainer.predict(dev_features)
        # Against the labels predict() returns, not dev.labels: with group_by_length sampling,
        # transformers 5.25 returns the predictions in another order than the dataset's.
        out["dev_acc"] = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    else:
        out["eval_s"] = _best_of(2, lambda: trainer.evaluate(dev_features))
    out["n_params_non_embedding"] = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    return out


def _best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _cfg(args: argparse.Namespace, seed: int, steps: int, precision: str):
    from steadytune.training.models import resolve_for_model

    return resolve_for_model(task=args.task, recipe="mosbach2021", seed=seed, model=args.model, overrides={
        "data_dir": _glue_dir(), "train_limit": args.train_limit, "max_steps": steps, "epochs": 3,
        "precision": precision, "evals_per_epoch": 0})


def _steadytune(args: argparse.Namespace, method: str, seed: int, steps: int) -> dict:
    import torch

    from steadytune.config.execution import Execution
    from steadytune.training.evaluation import evaluate
    from steadytune.training.grouped.loop import evaluate_group, train_group
    from steadytune.training.grouped.model import GroupedModel
    from steadytune.training.loop import resolve_precision, set_up, train_and_evaluate
    from steadytune.training.runner import process_state_kept

    group = int(method.removeprefix("steadytune_group")) if "group" in method else 1
    precision = "fp32" if method == "steadytune_fp32" else "auto"
    execution = Execution(device="cpu", threads=args.threads)
    stamps: list[float] = []

    def progress(step: int, total: int, info: dict) -> None:
        stamps.append(time.perf_counter())

    cfgs = [_cfg(args, seed + i, steps, precision) for i in range(group)]
    with process_state_kept():
        if group == 1:
            result = train_and_evaluate(cfgs[0], progress=progress, execution=execution)
        else:
            result = train_group(cfgs, progress=progress, execution=execution)[0]
    used = result.execution["precision"]["used"]
    out = {"s_per_step": _intervals(stamps, args.skip) / group, "precision": used,
           "dev_acc": result.metrics["final"].get("acc"),
           "n_params_non_embedding": result.model_info["num_parameters"] - _embedding_params(args.model)}
    if not args.evaluate:  # one evaluation pass, timed on a fresh set-up (the same code as in a run)
        cfg, _ = resolve_precision(cfgs[0], execution)
        run = set_up(cfg, execution)
        if group == 1:
            out["eval_s"] = _best_of(2, lambda: evaluate(run.model, run.data, cfg, torch.device("cpu")))
        else:
            model = GroupedModel([run.model] * group, [1] * group, torch.device("cpu"))
            out["eval_s"] = _best_of(2, lambda: evaluate_group(model, run.data, cfg, torch.device("cpu"))) / group
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
        out = _trainer(args, args.worker, args.seed, args.steps)
    else:
        out = _steadytune(args, args.worker, args.seed, args.steps)
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


def _spawn(args: argparse.Namespace, method: str, seed: int, steps: int, evaluate: bool,
           task: str | None = None, train_limit: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--seed", str(seed), "--steps", str(steps),
           "--task", task or args.task, "--model", args.model,
           "--train-limit", str(args.train_limit if train_limit is None else train_limit),
           "--threads", str(args.threads), "--skip", str(args.skip), "--tmp", args.tmp]
    if evaluate:
        cmd.append("--evaluate")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _seeds_per_hour(step_s: float, eval_s: float) -> float:
    return 3600.0 / (CELL_STEPS * step_s + CELL_EVALS * eval_s)


def _print_table(args, methods, runs, peaks, mean_len) -> dict[str, dict]:
    print(f"\n{'method':18s} {'prec':>5s} {'s/step':>7s} {'tokens/s':>9s} {'peak RSS':>9s} {'% peak':>7s} "
          f"{'eval s':>7s} {'seeds/h':>8s}")
    table = {}
    for m in methods:
        sps = float(np.mean([x["s_per_step"] for x in runs[m]]))
        evs = float(np.mean([x["eval_s"] for x in runs[m]]))
        precision = runs[m][0]["precision"]
        tokens = 16 * mean_len / sps
        flops = 6 * runs[m][0]["n_params_non_embedding"] * tokens / 1e9
        rss = max(x["peak_rss_mib"] for x in runs[m])
        table[m] = {"s_per_step": sps, "eval_s": evs, "seeds_per_hour": _seeds_per_hour(sps, evs)}
        print(f"{m:18s} {precision:>5s} {sps:7.3f} {tokens:9.0f} {rss:7.0f}Mi {100 * flops / peaks[precision]:6.1f}% "
              f"{evs:7.2f} {table[m]['seeds_per_hour']:8.2f}")
    return table


def _accuracy(args: argparse.Namespace, methods: list[str]) -> None:
    task, limit = args.accuracy_task, 1000
    steps = 3 * int(np.ceil(limit / 16))
    print(f"\n# dev accuracy after the same work: 3 epochs ({steps} steps) on a {limit}-example {task} slice, "
          f"seeds 1..{args.accuracy_seeds}")
    for m in [m for m in methods if m in ("trainer_best", "trainer_best_bf16", "steadytune_fp32", "steadytune")]:
        accs = [_spawn(args, m, s, steps, evaluate=True, task=task, train_limit=limit)["dev_acc"]
                for s in range(1, args.accuracy_seeds + 1)]
        spread = np.std(accs, ddof=1) if len(accs) > 1 else 0.0
        print(f"{m:18s} dev acc {np.mean(accs):.3f} ± {spread:.3f}  {[round(a, 4) for a in accs]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="rte")
    p.add_argument("--model", default="minilm")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="warm-up steps left out of the timing")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--accuracy-seeds", type=int, default=0, help="also train 3 epochs on a 1k slice per seed")
    p.add_argument("--accuracy-task", default="sst2", help="a task MiniLM learns in 3 epochs of 1k examples "
                                                          "(default sst2; MRPC stays at the majority there)")
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
    table = _print_table(args, methods, runs, peaks, mean_len) if args.rounds else {}
    if args.accuracy_seeds:
        _accuracy(args, methods)
    trainers = [m for m in ("trainer_best", "trainer_best_bf16") if m in table]
    if trainers and "steadytune" in table:
        trainer = min(trainers, key=lambda m: table[m]["s_per_step"])
        ours = max((m for m in table if m.startswith("steadytune") and m != "steadytune_fp32"),
                   key=lambda m: table[m]["seeds_per_hour"])
        print(f"\n# Trainer at its best here: {trainer}; steadytune's most seeds per hour: {ours}")
        print(f"ratio_vs_trainer_best={table[trainer]['s_per_step'] / table['steadytune']['s_per_step']:.2f}")
        print(f"seed_throughput_vs_trainer={table[ours]['seeds_per_hour'] / table[trainer]['seeds_per_hour']:.2f}")


if __name__ == "__main__":
    main()
