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
:attr:`~steadytune.training.results.RunResult.best_is_untrained` is true when the best is the
step-0 model, and ``steadytune run`` prints that.

Every ``diag_every`` steps, before clipping, :class:`~steadytune.training.diagnostics.Recorder`
records gradient norms and head statistics (one host sync; training is unchanged), and the
doomed-run detector (:class:`~steadytune.training.guard.Guard`) judges the run from those
host values, the latest logged training loss and dev metric. ``guard=flag`` (the default)
records its verdict; ``stop``, ``restart`` and ``switch`` end a doomed run with status
``stopped`` (the sweep driver plans the next attempt of a restarted seed).

The run is three parts: :func:`set_up` (data, model, optimiser, schedule, in the order
that fixes the random streams), :func:`train_step` (one update) repeated by the epoch
loop, and the evaluation and tracking of :mod:`steadytune.training.evaluation`; the
result is assembled by :func:`~steadytune.training.assemble.build_result`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from steadytune.config.execution import Execution
from steadytune.config.run import RunConfig, trained_config
from steadytune.data.batching import batch_order, collate
from steadytune.training.assemble import build_result
from steadytune.training.classifier import load_model
from steadytune.training.diagnostics import Recorder
from steadytune.training.evaluation import Tracker, evaluate
from steadytune.training.guard import Guard
from steadytune.training.inputs import RunData, prepare_data
from steadytune.training.models import (
    check_max_length,
    load_config,
    load_tokenizer,
    uses_token_types,
)
from steadytune.training.optim import AdamW, build_optimizer, linear_warmup_decay
from steadytune.training.precision import PrecisionChoice, choose_precision
from steadytune.training.results import RunResult, derive_seeds, label_entropy
from steadytune.training.schedule import Schedule

ProgressFn = Callable[[int, int, dict[str, Any]], None]
"""``progress(step, total_steps, info)``, called after every update; ``info["epoch"]`` is
the fractional epoch."""


def _device(execution: Execution) -> torch.device:
    if execution.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(execution.device)


@dataclass
class RunSetup:
    """What one run trains with, as :func:`set_up` built it."""

    device: torch.device
    seeds: dict[str, int]
    """The run's seed streams (:func:`~steadytune.training.results.derive_seeds`)."""
    tokenizer: Any
    data: RunData
    model: torch.nn.Module
    """In train mode, on ``device``."""
    model_info: dict[str, Any]
    """What :func:`~steadytune.training.classifier.load_model` initialised."""
    optimizer: AdamW
    scheduler: LambdaLR
    schedule: Schedule
    diag: Recorder
    guard: Guard | None
    """The doomed-run detector (None with ``guard=off``)."""


def resolve_precision(cfg: RunConfig, execution: Execution) -> tuple[RunConfig, PrecisionChoice]:
    """``cfg`` with ``precision=auto`` resolved for the run's device, and the choice with its reason.

    A sweep resolves ``auto`` once per study before it plans the runs (their ids hash the
    precision used); it passes the reason in ``execution.precision_note``, which is then
    recorded as the reason of the config's (explicit) precision.
    """
    if execution.precision_note and cfg.precision != "auto":
        return cfg, PrecisionChoice("auto", cfg.precision, execution.precision_note)
    choice = choose_precision(cfg.precision, _device(execution))
    return (cfg if cfg.precision == choice.used else cfg.replace(precision=choice.used)), choice


def set_up(cfg: RunConfig, execution: Execution) -> RunSetup:
    """Threads, device, data, model, optimiser, lr schedule and diagnostics of one run.

    The order fixes the random streams: the head is initialised after seeding the global
    generator with the ``head_init`` seed, and the global generators are then seeded
    with the ``dropout`` seed (dropout and mixout masks draw from them); data order has
    its own seed.

    Args:
        cfg: the fully resolved configuration.
        execution: device and intra-op threads (set here, for the whole process).

    Returns:
        The :class:`RunSetup`.

    Raises:
        ConfigError, DataError, ModelError: invalid configuration, data or model.
    """
    if cfg.precision == "auto":
        raise ValueError("set_up needs a resolved precision: call resolve_precision first")
    if execution.threads:
        torch.set_num_threads(execution.threads)
    device = _device(execution)
    seeds = derive_seeds(cfg.seed, head_seed=cfg.head_seed, data_seed=cfg.data_seed, dropout_seed=cfg.dropout_seed,
                         attempt=cfg.attempt)
    tokenizer = load_tokenizer(cfg.model)
    model_config = load_config(cfg.model)
    check_max_length(cfg.max_length, cfg.model, model_config)
    data = prepare_data(cfg, tokenizer, uses_token_types(model_config))
    model, model_info = _seeded_model(cfg, data.num_labels, seeds, device)
    schedule = Schedule.of(cfg, len(data.train))
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                correct_bias=cfg.correct_bias, layer_lr_decay=cfg.layer_lr_decay)
    scheduler = linear_warmup_decay(optimizer, schedule.warmup, schedule.total)
    diag = Recorder(model, optimizer, every=cfg.diag_every, max_grad_norm=cfg.max_grad_norm)
    guard = None if cfg.guard == "off" else Guard(cfg.guard, schedule.total, label_entropy(
        data.train.labels, data.regression), data.baseline)
    return RunSetup(device, seeds, tokenizer, data, model, model_info, optimizer, scheduler, schedule, diag, guard)


def _seeded_model(cfg: RunConfig, num_labels: int, seeds: dict[str, int],
                  device: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model, its head initialised from the ``head_init`` stream, then the dropout stream seeded."""
    torch.manual_seed(seeds["head_init"])  # any init transformers does itself is seeded too
    model, model_info = load_model(cfg, num_labels, seeds["head_init"])
    model.to(device).train()
    torch.manual_seed(seeds["dropout"])  # dropout / mixout masks come from the global stream
    if device.type == "cuda":
        torch.cuda.manual_seed_all(seeds["dropout"])
    return model, model_info


def train_step(run: RunSetup, cfg: RunConfig, idx: np.ndarray, step: int) -> tuple[torch.Tensor, float]:
    """One update on the training examples ``idx``.

    Forward (bf16 autocast if ``cfg.precision`` says so), backward, diagnostics (before
    clipping; a no-op unless ``step`` is a diagnostic step), global-norm clipping, then
    the optimiser step and the scheduler step (so the first update has lr 0).

    Args:
        run: the run's model, optimiser, scheduler and recorder (updated in place).
        cfg: gives ``max_grad_norm`` and ``precision``.
        idx: positions in ``run.data.train_enc`` of the batch.
        step: updates taken before this one.

    Returns:
        The batch loss (0-dim float32 on the device: no host sync) and the lr of the update.
    """
    data = run.data
    batch = {k: v.to(run.device, non_blocking=True) for k, v in collate(data.train_enc, idx, data.pad_id).items()}
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        out = run.model(**batch)
    out.loss.backward()
    run.diag.record(step, out.logits)
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.max_grad_norm)
    lr = run.optimizer.param_groups[-1]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return out.loss.detach().float(), lr


def _train(run: RunSetup, cfg: RunConfig, tracker: Tracker,
           progress: ProgressFn | None) -> tuple[str, str | None, int]:
    """The epochs: updates, loss logging, evaluations; ``(status, error, steps taken)``.

    A non-finite mean training loss at a logging step stops the run as ``diverged``; a
    doomed verdict of a stopping guard at a diagnostics step stops it as ``stopped``.
    """
    plan, data, guard = run.schedule, run.data, run.guard
    step, epoch = 0, 0
    loss_sum = torch.zeros((), device=run.device)
    while step < plan.total:
        for idx in batch_order(data.train_enc.lengths, cfg.batch_size, run.seeds["data_order"], epoch, cfg.batching):
            loss, lr = train_step(run, cfg, idx, step)
            loss_sum += loss
            if guard is not None and run.diag.due(step):  # host values the recorder already has
                verdict = guard.check(step, run.diag.last)
                if verdict.doomed and guard.stops:
                    return "stopped", f"doomed ({verdict.rule}) at step {step}: {verdict.reason}", step + 1
            step += 1
            epoch_pos = plan.epoch_at(epoch, step)
            if progress is not None:  # before the divergence check: the bar shows the step it ends at
                progress(step, plan.total, {"epoch": epoch_pos})
            if n := plan.losses_to_log(step):
                mean_loss = loss_sum.item() / n  # the one host sync per logging step
                loss_sum.zero_()
                tracker.add(step, epoch_pos, "train", {"loss": mean_loss, "lr": lr})
                if guard is not None:
                    guard.note_loss(mean_loss)
                if not math.isfinite(mean_loss):
                    return "diverged", f"non-finite training loss ({mean_loss}) by step {step}", step
            if step in plan.eval_at:
                tracker.record_eval(evaluate(run.model, data, cfg, run.device), step, epoch_pos, run.model)
                if guard is not None:
                    guard.note_eval(step, tracker.final.get(data.metric))
            if step >= plan.total:
                break
        epoch += 1
    return "finished", None, step


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
        The run's :class:`~steadytune.training.results.RunResult`. Its ``best`` metrics are
        the strictly best dev evaluation, the step-0 (untrained) one included as in the
        paper's code; ``best_step`` says which (0: the untrained model). A NaN/inf
        training loss ends the run early with ``status="diverged"``, ``failed=True`` and
        ``error="non-finite training loss (nan) by step N"`` (or ``inf``), not an exception;
        a doomed verdict under ``guard=stop/restart/switch`` with ``status="stopped"``,
        ``failed=True`` and the verdict in ``error`` and ``guard``. Under ``guard=switch``
        a later attempt trains with ``guard_switch`` applied (``guard["switched"]``); the
        result's ``config`` stays the planned one (its identity).

    Raises:
        ConfigError, DataError, ModelError: invalid configuration, data or model.
    """
    start = time.perf_counter()
    execution = execution or Execution()
    if execution.threads:  # before the precision probe: it measures at the run's thread count
        torch.set_num_threads(execution.threads)
    cfg, precision = resolve_precision(cfg, execution)
    trained = trained_config(cfg)  # cfg with guard_switch applied to a later attempt under guard=switch
    run = set_up(trained, execution)
    tracker = Tracker(run.data.metric, keep_best_state=cfg.save_checkpoints in ("best", "both"))
    tracker.record_eval(evaluate(run.model, run.data, trained, run.device), 0, 0.0, run.model)
    status, error, steps = _train(run, trained, tracker, progress)
    if status != "finished":
        tracker.mark_diverged()
    switched = {k: v for k, v in trained.to_dict().items() if v != getattr(cfg, k)}
    result = build_result(cfg, run.data, tracker, run.schedule, status=status, error=error, steps=steps,
                          model_info=run.model_info, seeds=run.seeds, wall=time.perf_counter() - start,
                          diagnostics=run.diag.frame(),
                          execution={"device": str(run.device), "threads": torch.get_num_threads(),
                                     "precision": precision.to_dict()},
                          guard={} if run.guard is None else run.guard.record(
                              steps, status == "stopped", cfg.attempt, switched))
    if workdir is not None:
        result.save(workdir)
        save_checkpoints(cfg, run.model, run.tokenizer, tracker, Path(workdir), status, execution.save_final)
    return result


def save_checkpoints(cfg: RunConfig, model: torch.nn.Module, tokenizer: Any, tracker: Tracker,
                     workdir: Path, status: str, save_final: bool = False) -> None:
    """Save the final and/or best model (``save_pretrained``) into ``workdir/final`` / ``workdir/best``.

    Args:
        cfg: ``save_checkpoints`` (``none``, ``final``, ``best``, ``both``) says which.
        model: the trained model; it holds its final weights again afterwards.
        tokenizer: saved beside each model.
        tracker: holds the best weights (when it was asked to keep them).
        workdir: the run folder.
        status: the final model is saved only for a ``finished`` run.
        save_final: save the final model whatever ``cfg.save_checkpoints`` says.
    """
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


__all__ = ["ProgressFn", "RunSetup", "resolve_precision", "save_checkpoints", "set_up", "train_and_evaluate",
           "train_step"]
