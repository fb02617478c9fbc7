"""steadytune's diagnostics in a plain PyTorch training loop: one ``Recorder``, one call per step.

    python examples/plain_loop.py [--model minilm|PATH] [--steps 20]

With no ``--model`` it builds a tiny random BERT (seconds on a CPU); ``--model minilm`` uses
the packaged pre-trained MiniLM. The data are random token sequences with a learnable
label (whether token 7 occurs): the point is where the Recorder goes in *your* loop.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import AutoModelForSequenceClassification

from steadytune.testing.tiny import make_tiny_model
from steadytune.training.diagnostics import Recorder
from steadytune.training.models import resolve_model_path
from steadytune.training.optim import build_optimizer, linear_warmup_decay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="minilm or a checkpoint folder (default: a tiny random BERT)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    path = resolve_model_path(args.model) if args.model else str(make_tiny_model(tempfile.mkdtemp(), "bert"))
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    vocab = model.config.vocab_size

    optimizer = build_optimizer(model, lr=1e-4, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-6, correct_bias=False)
    scheduler = linear_warmup_decay(optimizer, warmup_steps=2, total_steps=args.steps)
    recorder = Recorder(model, optimizer, every=5, max_grad_norm=1.0)  # after the optimiser exists

    model.train()
    for step in range(args.steps):
        input_ids = torch.randint(8, vocab, (16, 24))
        input_ids[::2, 3] = 7
        labels = (input_ids == 7).any(-1).long()
        out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
        out.loss.backward()
        recorder.record(step, out.logits)  # after backward, BEFORE clipping; a no-op off the cadence
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

    table = recorder.frame()  # step, group, name, value (and the forward hook is removed)
    print(table.query("group == 'grad_norm_layer'").pivot(index="step", columns="name", values="value")
          .to_string(float_format="%.3g"))
    print(table.query("group in ('optim', 'head')").pivot(index="step", columns="name", values="value")
          .to_string(float_format="%.3g"))


if __name__ == "__main__":
    main()
