"""One fine-tuning run: ``train_and_evaluate(cfg, workdir) -> RunResult``.

The loop follows the paper's code (``run_finetuning.py`` of uds-lsv/bert-stable-fine-tuning,
a fork of transformers 2.5.1 ``run_glue``): evaluation at step 0, about ``evals_per_epoch``
times per epoch and at each epoch end; optimiser step then scheduler step (so the first
update has lr 0); global-norm clipping before the step. It keeps both the final-checkpoint
and the best-dev-checkpoint metrics.

**Which evaluation is "best".** The strictly best dev value of the run's metric (the first
of equal values wins; NaN never does), over every evaluation *including the step-0
evaluation of the untrained model*: the paper's code starts its early stopping from the
step-0 metric (``best_step = 0``; with early stopping it saves the untrained model as the
first best checkpoint) and replaces it only when a later evaluation is strictly better.
Stored studies were computed with this rule and run ids do not record it, so it is the
only rule. It is never silent: the result records ``best_step``,
:attr:`~steadytune.results.RunResult.best_is_untrained` is true when the best is the
step-0 model, and ``steadytune run`` prints that.

Every ``diag_every`` steps, before clipping, :class:`steadytune.diagnostics.Recorder`
records gradient norms and head statistics (one host sync; training is unchanged).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from steadytune.config.execution import Execution
from steadytune.config.run import RunConfig
from steadytune.training.results import RunResult, derive_seeds, versions

ProgressFn = Callable[[int, int, dict[str, Any]], None]


@dataclass
class _Data:
    task: Any
    train: Any
    dev: Any
    train_enc: Any
    dev_enc: Any
    regression: bool
    metric: str
    metric_kind: str
    baseline: float
    pad_id: int


def _device(execution: Execution) -> torch.device:
    if execution.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(execution.device)


def prepare_data(cfg: RunConfig, tokenizer: Any, use_token_types: bool) -> _Data:
    """Load, down-sample and tokenise the train and dev splits of ``cfg.task``."""
    from steadytune.data.batching import encode
    from steadytune.data.loading import load_split
    from steadytune.data.splits import downsample
    from steadytune.data.tasks import get_task
    from steadytune.training.metrics import majority_baseline, metric_kind

    train, dev = load_split(cfg, "train"), load_split(cfg, "dev")
    regression = train.is_regression
    if cfg.train_limit:
        train = downsample(train, cfg.train_limit, cfg.train_limit_seed, stratify=cfg.stratify and not regression)
    if cfg.dev_limit:  # quick studies: a fixed subset, the same for every run seed
        dev = downsample(dev, cfg.dev_limit, cfg.train_limit_seed, stratify=cfg.stratify and not regression)
    task = get_task(cfg.task) if cfg.task != "custom" else None
    metric = cfg.metric or (task.metric if task else ("pearson" if regression else "acc"))
    kind = metric_kind(metric)
    baseline = majority_baseline(train.labels, dev.labels, metric, regression=regression)
    enc_args = dict(max_length=cfg.max_length, segment_ids=cfg.segment_ids, use_token_types=use_token_types)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return _Data(task, train, dev, encode(train, tokenizer, **enc_args), encode(dev, tokenizer, **enc_args),
                 regression, metric, kind, float(baseline), int(pad_id))


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: _Data, cfg: RunConfig, device: torch.device) -> dict[str, float]:
    """Dev metrics (and mean dev loss) of ``model`` in eval mode, in length-sorted batches."""
    from steadytune.data.batching import collate, eval_batches
    from steadytune.training.metrics import compute_metrics

    was_training = model.training
    model.eval()
    preds, losses = [], []
    amp = cfg.precision == "bf16"
    for idx in eval_batches(data.dev_enc.lengths, cfg.eval_batch_size):
        batch = {k: v.to(device) for k, v in collate(data.dev_enc, idx, data.pad_id).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(**batch)
        logits = out.logits.float()
        losses.append(out.loss.float() * len(idx))
        preds.append((logits.squeeze(-1) if data.regression else logits.argmax(-1), idx))
    model.train(was_training)
    order = np.concatenate([i for _, i in preds])
    values = torch.cat([p for p, _ in preds]).cpu().numpy()
    pred = np.empty_like(values)
    pred[order] = values
    metrics = compute_metrics(data.metric_kind, pred, data.dev_enc.labels)
    metrics["loss"] = float(torch.stack(losses).sum().item() / len(order))
    return metrics


def _eval_steps(steps_per_epoch: int, total: int, evals_per_epoch: int) -> set[int]:
    steps = {0, total}
    if evals_per_epoch > 0:
        interval = max(1, steps_per_epoch // evals_per_epoch)
        steps |= set(range(interval, total + 1, interval))
        steps |= set(range(steps_per_epoch, total + 1, steps_per_epoch))
    return {s for s in steps if s <= total}


@dataclass
class _Tracker:
    """Curves, the best evaluation so far, and the divergence flag."""

    metric: str
    rows: list[tuple[int, float, str, str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    best_step: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    final: dict[str, float] | None = None

    def add(self, step: int, epoch: float, split: str, values: dict[str, float]) -> None:
        self.rows.extend((step, epoch, split, name, float(v)) for name, v in values.items())

    def curves(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["step", "epoch", "split", "name", "value"])


def _record_eval(tracker: _Tracker, metrics: dict[str, float], step: int, epoch: float,
                 model: torch.nn.Module, keep_state: bool) -> None:
    """Record one dev evaluation; it becomes the best if strictly better (step 0 included)."""
    tracker.add(step, epoch, "dev", metrics)
    tracker.final = metrics
    value = metrics.get(tracker.metric, float("nan"))
    best = tracker.best[tracker.metric] if tracker.best else -math.inf
    if math.isfinite(value) and value > best:  # strictly better, as the paper's code
        tracker.best, tracker.best_step = metrics, step
        if keep_state:
            tracker.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_and_evaluate(cfg: RunConfig, workdir: str | Path | None = None,
                       progress: ProgressFn | None = None, execution: Execution | None = None) -> RunResult:
    """Fine-tune ``cfg.model`` on ``cfg.task`` and evaluate it on the dev set.

    Args:
        cfg: the fully resolved configuration (see :func:`steadytune.config.resolve_config`).
        workdir: where ``result.json``, ``curves.csv``, ``diagnostics.csv`` and checkpoints
            go (None: nowhere).
        progress: called as ``progress(step, total_steps, info)`` after every step.
        execution: device, CPU threads and whether to also save the final model into
            ``workdir/final`` (default :class:`~steadytune.config.execution.Execution`:
            ``auto`` device, PyTorch's thread count, no extra save).

    Returns:
        The run's :class:`~steadytune.results.RunResult`. Its ``best`` metrics are the
        strictly best dev evaluation, the step-0 (untrained) one included as in the
        paper's code; ``best_step`` says which (0: the untrained model). A NaN/inf
        training loss ends the run early with ``status="diverged"``, ``failed=True`` and
        ``error="non-finite training loss (nan) by step N"`` (or ``inf``), not an exception.

    Raises:
        ConfigError, DataError, ModelError: invalid configuration, data or model.
    """
    from steadytune.data.batching import batch_order, collate
    from steadytune.training.diagnostics import Recorder
    from steadytune.training.models import (
        check_max_length,
        load_config,
        load_model,
        load_tokenizer,
        uses_token_types,
    )
    from steadytune.training.optim import build_optimizer, linear_warmup_decay

    start = time.perf_counter()
    execution = execution or Execution()
    if execution.threads:
        torch.set_num_threads(execution.threads)
    device = _device(execution)
    seeds = derive_seeds(cfg.seed)
    tokenizer = load_tokenizer(cfg.model)
    model_config = load_config(cfg.model)
    check_max_length(cfg.max_length, cfg.model, model_config)
    data = prepare_data(cfg, tokenizer, uses_token_types(model_config))
    num_labels = 1 if data.regression else len(data.train.label_names or np.unique(data.train.labels))
    torch.manual_seed(seeds["head_init"])  # any init transformers does itself is seeded too
    model, model_info = load_model(cfg, num_labels, seeds["head_init"])
    model.to(device).train()
    torch.manual_seed(seeds["dropout"])  # dropout / mixout masks come from the global stream
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seeds["dropout"])

    n_train = len(data.train)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
    warmup = int(cfg.warmup_ratio * total)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                correct_bias=cfg.correct_bias, layer_lr_decay=cfg.layer_lr_decay)
    scheduler = linear_warmup_decay(optimizer, warmup, total)
    diag = Recorder(model, optimizer, every=cfg.diag_every, max_grad_norm=cfg.max_grad_norm)
    eval_at = _eval_steps(steps_per_epoch, total, cfg.evals_per_epoch)
    keep_best = cfg.save_checkpoints in ("best", "both")
    tracker = _Tracker(data.metric)
    _record_eval(tracker, evaluate(model, data, cfg, device), 0, 0.0, model, keep_best)

    step, status, error = 0, "finished", None
    loss_sum = torch.zeros((), device=device)
    amp = cfg.precision == "bf16"
    epoch = 0
    while step < total and status == "finished":
        for idx in batch_order(data.train_enc.lengths, cfg.batch_size, seeds["data_order"], epoch, cfg.batching):
            batch = {k: v.to(device, non_blocking=True) for k, v in collate(data.train_enc, idx, data.pad_id).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = model(**batch)
            loss = out.loss
            loss.backward()
            diag.record(step, out.logits)  # pre-clip; a no-op unless step % diag_every == 0
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            lr_now = optimizer.param_groups[-1]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float()
            step += 1
            epoch_pos = epoch + (step - epoch * steps_per_epoch) / steps_per_epoch
            if progress is not None:  # before the divergence check: the bar shows the step it ends at
                progress(step, total, {"epoch": epoch_pos})
            if step % cfg.log_every == 0 or step == total:
                n = cfg.log_every if step % cfg.log_every == 0 else step % cfg.log_every
                mean_loss = loss_sum.item() / n  # the one host sync per logging step
                loss_sum.zero_()
                tracker.add(step, epoch_pos, "train", {"loss": mean_loss, "lr": lr_now})
                if not math.isfinite(mean_loss):
                    status, error = "diverged", f"non-finite training loss ({mean_loss}) by step {step}"
                    break
            if step in eval_at:
                _record_eval(tracker, evaluate(model, data, cfg, device), step, epoch_pos, model, keep_best)
            if step >= total:
                break
        epoch += 1

    if status == "diverged":
        tracker.final = {k: float("nan") for k in (tracker.final or {data.metric: 0.0})}
    from steadytune.training.results import build_result

    result = build_result(cfg, data, tracker, model_info, seeds, status, error, step, total,
                          warmup, steps_per_epoch, time.perf_counter() - start, diag.frame(),
                          execution={"device": str(device), "threads": torch.get_num_threads()})
    if workdir is not None:
        result.save(workdir)
        _save_checkpoints(cfg, model, tokenizer, tracker, Path(workdir), status, execution.save_final)
    return result


def _save_checkpoints(cfg: RunConfig, model: torch.nn.Module, tokenizer: Any, tracker: _Tracker,
                      workdir: Path, status: str, save_final: bool = False) -> None:
    if (save_final or cfg.save_checkpoints in ("final", "both")) and status == "finished":
        model.save_pretrained(str(workdir / "final"))
        tokenizer.save_pretrained(str(workdir / "final"))
    if cfg.save_checkpoints in ("best", "both") and tracker.best_state is not None:
        current = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        model.load_state_dict(tracker.best_state)
        try:
            model.save_pretrained(str(workdir / "best"))
            tokenizer.save_pretrained(str(workdir / "best"))
        finally:
            model.load_state_dict(current)


__all__ = ["train_and_evaluate", "evaluate", "prepare_data", "versions"]
