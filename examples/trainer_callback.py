"""steadytune's stability diagnostics inside your own Hugging Face ``Trainer`` run.

Fine-tunes the packaged pre-trained MiniLM on a small stratified slice of real RTE with the
``devlin2019`` recipe (transformers-2.5.1 AdamW without bias correction, 10% warmup, lr
2e-5), with your own ``Trainer``; steadytune's callback records its diagnostics and stores
the run in a study, so ``steadytune summary`` / ``report`` read it like any sweep::

    python examples/trainer_callback.py [--out runs/trainer-example] [--train 128] [--epochs 2]
    steadytune summary runs/trainer-example/study.db

The GLUE files come from ``--data-dir``, ``$GLUE_DIR`` or ``$STEADYTUNE_DATA``
(``make`` sets them to ``../shared/data``). About 1-2 minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
)

from steadytune.config.recipes import resolve_config
from steadytune.data.loading import load_split
from steadytune.data.splits import downsample
from steadytune.integrations.trainerrun import TrainerRunInfo
from steadytune.integrations.transformers import DiagnosticsCallback, trainer_recipe
from steadytune.training.metrics import accuracy, majority_baseline
from steadytune.training.models import resolve_model_path
from steadytune.training.results import label_entropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/trainer-example"))
    parser.add_argument("--data-dir", default=None, help="GLUE folder (default $GLUE_DIR / $STEADYTUNE_DATA)")
    parser.add_argument("--train", type=int, default=128, help="training examples (stratified slice)")
    parser.add_argument("--dev", type=int, default=64, help="dev examples (stratified slice)")
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    # 1. The recipe, as steadytune resolves it (the same config a steadytune sweep would store).
    cfg = resolve_config(task="rte", recipe="devlin2019", seed=args.seed, model="minilm", model_type="bert",
                         overrides={"epochs": args.epochs, "train_limit": args.train, "dev_limit": args.dev,
                                    "data_dir": args.data_dir, "diag_every": 5, "log_every": 5})

    # 2. Your data and model, your way (here: a seeded, stratified slice of real RTE).
    train = downsample(load_split(cfg, "train"), args.train, seed=0)
    dev = downsample(load_split(cfg, "dev"), args.dev, seed=0)
    path = resolve_model_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)

    def encode(split):
        enc = tokenizer(split.texts_a, split.texts_b, truncation=True, max_length=cfg.max_length)
        return [{**{k: v[i] for k, v in enc.items()}, "labels": int(split.labels[i])} for i in range(len(split))]

    def metrics(prediction):
        return {"acc": accuracy(np.argmax(prediction.predictions, -1), prediction.label_ids)}

    # 3. steadytune's recipe as Trainer settings, and the callback.
    recipe = trainer_recipe(cfg, model, n_train=len(train), output_dir=args.out / "trainer",
                            eval_strategy="epoch", use_cpu=True)
    run = TrainerRunInfo(cfg, metric="acc", baseline=majority_baseline(train.labels, dev.labels, "acc"),
                         label_entropy=label_entropy(train.labels))
    diagnostics = DiagnosticsCallback(every=5, out=args.out / "tables", study=args.out / "study.db", run=run)
    trainer = Trainer(model=model, args=recipe.args, optimizers=recipe.optimizers, train_dataset=encode(train),
                      eval_dataset=encode(dev), data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=metrics, callbacks=[diagnostics])
    trainer.train()

    # 4. What the callback recorded.
    table = diagnostics.diagnostics()
    layers = table.query("group == 'grad_norm_layer'").pivot(index="step", columns="name", values="value")
    optim = table.query("group == 'optim'").pivot(index="step", columns="name", values="value")
    head = table.query("group == 'head'").pivot(index="step", columns="name", values="value")
    final = diagnostics.evaluations[-1][1]["acc"]
    print(f"\n{recipe.total_steps} steps; dev acc {final:.4f} (majority baseline {run.baseline:.4f}: "
          f"{'FAILED' if final <= run.baseline else 'ok'})")
    print("\npre-clip gradient norm per layer (rows: step):")
    print(layers[["embeddings", "layer.0", "layer.3", "layer.5", "pooler", "classifier"]].to_string(float_format="%.3g"))
    print("\noptimiser (devlin2019 has no bias correction: effective_lr = lr):")
    print(optim[["lr", "bias_correction_factor", "effective_lr", "total_grad_norm"]].to_string(float_format="%.3g"))
    print("\nhead (majority_fraction 1.0 = every prediction the same class):")
    print(head.to_string(float_format="%.3g"))
    print(f"\ntables: {args.out / 'tables'}; stored run: {args.out / 'study.db'} "
          f"(steadytune summary {args.out / 'study.db'})")


if __name__ == "__main__":
    main()
