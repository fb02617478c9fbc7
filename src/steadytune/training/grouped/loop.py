"""K runs that differ only in their seed, trained as one grouped model: ``train_group(cfgs) -> [RunResult]``.

Each run keeps everything it has alone: its head initialisation (its own model load), its
data order (its own batch order per epoch), its dropout stream, its optimiser state (its
slice of every stacked moment), its gradient clipping (its own global norm), its curves,
evaluations, best checkpoint, diagnostics and result. Only the arithmetic is shared: the
runs' batches are padded to a common shape and go through the model's matrix products
together. So a run's result does not depend on which runs share its group, beyond
floating-point rounding (the tests bound it), and a run that diverges ends alone while the
others go on. Each run has its own doomed-run guard (:mod:`steadytune.training.guard`),
fed and checked as alone: one the guard stops ends alone too, at the step it would alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from steadytune.config.execution import Execution
from steadytune.config.run import WITHIN_GROUP_KEYS, RunConfig, trained_config
from steadytune.data.batching import batch_order, collate, eval_batches
from steadytune.training.assemble import build_result
from steadytune.training.classifier import load_model
from steadytune.training.evaluation import Tracker
from steadytune.training.grouped.diagnostics import GroupRecorder, member_grad_norms
from steadytune.training.grouped.model import GroupedModel, NotGroupable
from steadytune.training.guard import Guard
from steadytune.training.inputs import RunData, prepare_data
from steadytune.training.loop import ProgressFn, resolve_precision, save_checkpoints
from steadytune.training.metrics import compute_metrics
from steadytune.training.models import (
    check_max_length,
    load_config,
    load_tokenizer,
    uses_token_types,
)
from steadytune.training.optim import build_optimizer, linear_warmup_decay
from steadytune.training.precision import PrecisionChoice
from steadytune.training.results import RunResult, derive_seeds, label_entropy
from steadytune.training.schedule import Schedule


def group_key(cfg: RunConfig) -> tuple:
    """Runs with equal keys can share a group: they differ only in their seeds (the run seed,
    the stream seeds, the repeat index, the attempt: :data:`~steadytune.config.run.WITHIN_GROUP_KEYS`)
    in what they train with (a switched attempt trains with ``guard_switch`` applied)."""
    return tuple(sorted((k, v) for k, v in trained_config(cfg).to_dict().items() if k not in WITHIN_GROUP_KEYS))


def check_groupable(cfgs: list[RunConfig]) -> None:
    """Raise :class:`NotGroupable` unless ``cfgs`` can train as one group."""
    if len({group_key(c) for c in cfgs}) != 1:
        raise NotGroupable("a group's runs must differ only in their seeds")
    if cfgs[0].mixout > 0:
        raise NotGroupable("Mixout draws its masks from the global stream per layer call; Mixout runs train alone")


@dataclass
class _Member:
    """One run of the group: its config, seeds, solo model (kept for saving), tracker and state."""

    cfg: RunConfig
    """What it trains with (:func:`~steadytune.config.run.trained_config` of ``planned``)."""
    seeds: dict[str, int]
    solo: torch.nn.Module
    info: dict[str, Any]
    tracker: Tracker
    planned: RunConfig | None = None
    """Its planned configuration (its identity, stored in the result); None: ``cfg``."""
    guard: Guard | None = None
    status: str = "finished"
    error: str | None = None
    steps: int = 0
    diagnostics: pd.DataFrame | None = None


class _MemberView:
    """What :meth:`Tracker.record_eval` needs of a model: run k's ``state_dict``."""

    def __init__(self, model: GroupedModel, k: int) -> None:
        self.model, self.k = model, k

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.member_state_dict(self.k)


def _load_members(cfgs: list[RunConfig], num_labels: int, metric: str) -> list[_Member]:
    members = []
    for cfg in cfgs:
        seeds = derive_seeds(cfg.seed, head_seed=cfg.head_seed, data_seed=cfg.data_seed, dropout_seed=cfg.dropout_seed,
                             attempt=cfg.attempt)
        torch.manual_seed(seeds["head_init"])  # as a run alone: any init transformers does is seeded too
        model, info = load_model(cfg, num_labels, seeds["head_init"])
        tracker = Tracker(metric, keep_best_state=cfg.save_checkpoints in ("best", "both"))
        members.append(_Member(cfg, seeds, model.train(), info, tracker))
    return members


def _group_batch(data: RunData, batches: list[np.ndarray], model: GroupedModel,
                 device: torch.device) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The runs' batches padded into one ``(K * rows, width)`` batch; the layout is set on ``model``.

    Returns:
        The inputs, the labels ``(K, rows)`` and the valid-row mask ``(K, rows)``.
    """
    solo = [collate(data.train_enc, idx, data.pad_id) for idx in batches]
    sizes = [len(idx) for idx in batches]
    lengths = [int(b["input_ids"].shape[1]) for b in solo]
    padded = [bool((data.train_enc.lengths[idx] < width).any()) for idx, width in zip(batches, lengths)]
    rows, width = max(sizes), max(lengths)
    inputs: dict[str, torch.Tensor] = {}
    for key in ("input_ids", "token_type_ids"):
        if key in solo[0]:
            fill = data.pad_id if key == "input_ids" else 0
            full = torch.full((len(solo), rows, width), fill, dtype=torch.long)
            for k, b in enumerate(solo):
                full[k, : sizes[k], : lengths[k]] = b[key]
            inputs[key] = full.reshape(len(solo) * rows, width).to(device, non_blocking=True)
    labels = torch.zeros((len(solo), rows), dtype=solo[0]["labels"].dtype)
    valid = torch.zeros((len(solo), rows), dtype=torch.bool)
    for k, b in enumerate(solo):
        labels[k, : sizes[k]], valid[k, : sizes[k]] = b["labels"], True
    masks = [b["attention_mask"].to(device, non_blocking=True) if p else None for b, p in zip(solo, padded)]
    model.layout.set(sizes, lengths, padded, masks)
    return inputs, labels.to(device), valid.to(device)


def _losses(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, regression: bool) -> torch.Tensor:
    """Each run's mean loss over its own rows ``(K,)`` (cross-entropy, or MSE for regression)."""
    k, rows = labels.shape
    if regression:
        each = F.mse_loss(logits.float().reshape(k, rows), labels.float(), reduction="none")
    else:
        each = F.cross_entropy(logits.float().reshape(k * rows, -1), labels.reshape(-1), reduction="none")
        each = each.reshape(k, rows)
    return (each * valid).sum(1) / valid.sum(1)


def clip_members(model: GroupedModel, max_norm: float) -> None:
    """Clip each run's gradients to global L2 norm ``max_norm``, as ``clip_grad_norm_`` does alone."""
    params = [p for p in model.inner.parameters() if p.grad is not None]
    total = torch.linalg.vector_norm(member_grad_norms(params, model.k), dim=0)  # (K,)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_([p.grad for p in params], [coef.view(-1, *([1] * (p.dim() - 1))) for p in params])


@torch.inference_mode()
def evaluate_group(model: GroupedModel, data: RunData, cfg: RunConfig, device: torch.device) -> list[dict[str, float]]:
    """Each run's dev metrics and mean dev loss (as :func:`~steadytune.training.evaluation.evaluate`)."""
    model.eval()
    k = model.k
    preds, losses, order = [], [], []
    for idx in eval_batches(data.dev_enc.lengths, cfg.eval_batch_size):
        batch = collate(data.dev_enc, idx, data.pad_id)
        mask = batch["attention_mask"].to(device)
        model.layout.same_for_all(mask, bool((data.dev_enc.lengths[idx] < mask.shape[1]).any()))
        inputs = {n: batch[n].to(device).repeat(k, 1) for n in ("input_ids", "token_type_ids") if n in batch}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = model(**inputs)
        labels = batch["labels"].to(device).repeat(k, 1)
        losses.append(_losses(logits, labels, torch.ones_like(labels, dtype=torch.bool), data.regression) * len(idx))
        per_run = logits.float().reshape(k, len(idx), -1)
        preds.append(per_run.squeeze(-1) if data.regression else per_run.argmax(-1))
        order.append(idx)
    model.train()
    every = np.concatenate(order)
    values = torch.cat(preds, 1).cpu().numpy()
    total = torch.stack(losses).sum(0).cpu().numpy()
    out = []
    for run in range(k):
        pred = np.empty_like(values[run])
        pred[every] = values[run]
        metrics = compute_metrics(data.metric_kind, pred, data.dev_enc.labels)
        metrics["loss"] = float(total[run] / len(every))
        out.append(metrics)
    return out


def _record_eval(model: GroupedModel, members: list[_Member], data: RunData, cfg: RunConfig,
                 device: torch.device, step: int, epoch: float) -> None:
    for k, metrics in enumerate(evaluate_group(model, data, cfg, device)):
        if members[k].status == "finished":
            members[k].tracker.record_eval(metrics, step, epoch, _MemberView(model, k))
            if members[k].guard is not None:
                members[k].guard.note_eval(step, metrics.get(data.metric))


def check_members(members: list[_Member], diag: GroupRecorder, step: int) -> None:
    """Each live run's guard at diagnostics step ``step``; a doomed run of a stopping policy ends
    as ``stopped`` after ``step + 1`` updates, as it would alone."""
    if not diag.due(step):
        return
    for member, last in zip(members, diag.last):
        if member.status != "finished" or member.guard is None:
            continue
        verdict = member.guard.check(step, last)
        if verdict.doomed and member.guard.stops:
            member.status, member.steps = "stopped", step + 1
            member.error = f"doomed ({verdict.rule}) at step {step}: {verdict.reason}"
            member.tracker.mark_diverged()


def _train(model: GroupedModel, members: list[_Member], data: RunData, cfg: RunConfig, device: torch.device,
           plan: Schedule, progress: ProgressFn | None) -> None:
    optimizer = build_optimizer(model.inner, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                                correct_bias=cfg.correct_bias, layer_lr_decay=cfg.layer_lr_decay)
    scheduler = linear_warmup_decay(optimizer, plan.warmup, plan.total)
    diag = GroupRecorder(model, optimizer, every=cfg.diag_every, max_grad_norm=cfg.max_grad_norm)
    step, epoch = 0, 0
    loss_sum = torch.zeros(model.k, device=device)
    while step < plan.total:
        orders = [batch_order(data.train_enc.lengths, cfg.batch_size, m.seeds["data_order"], epoch, cfg.batching)
                  for m in members]
        for batches in zip(*orders):
            inputs, labels, valid = _group_batch(data, list(batches), model, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                logits = model(**inputs)
            losses = _losses(logits, labels, valid, data.regression)
            losses.sum().backward()
            diag.record(step, logits)
            check_members(members, diag, step)
            if cfg.max_grad_norm > 0:
                clip_members(model, cfg.max_grad_norm)
            lr = optimizer.param_groups[-1]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum += losses.detach()
            step += 1
            epoch_pos = plan.epoch_at(epoch, step)
            if progress is not None:
                progress(step, plan.total, {"epoch": epoch_pos})
            if n := plan.losses_to_log(step):
                log_member_losses(members, (loss_sum / n).tolist(), step, epoch_pos, lr)  # the one host sync per logging step
                loss_sum.zero_()
            if step in plan.eval_at:
                _record_eval(model, members, data, cfg, device, step, epoch_pos)
            if step >= plan.total or all(m.status != "finished" for m in members):
                break
        if all(m.status != "finished" for m in members):
            break
        epoch += 1
    for member, frame in zip(members, diag.frames()):
        if member.status == "finished":
            member.steps, member.diagnostics = step, frame
        else:  # what it recorded before it ended, as alone
            member.diagnostics = frame[frame["step"] < member.steps].reset_index(drop=True)


def log_member_losses(members: list[_Member], means: list[float], step: int, epoch: float, lr: float) -> None:
    """Each live run's logged mean loss; a non-finite one ends that run as diverged."""
    for member, mean in zip(members, means):
        if member.status != "finished":
            continue
        member.tracker.add(step, epoch, "train", {"loss": mean, "lr": lr})
        if member.guard is not None:
            member.guard.note_loss(mean)
        if not math.isfinite(mean):
            member.status, member.steps = "diverged", step
            member.error = f"non-finite training loss ({mean}) by step {step}"
            member.tracker.mark_diverged()


def train_group(cfgs: list[RunConfig], workdirs: list[str | None] | None = None, progress: ProgressFn | None = None,
                execution: Execution | None = None) -> list[RunResult]:
    """Train the runs ``cfgs`` (equal but for their seeds) as one grouped model.

    Args:
        cfgs: the runs' resolved configurations; they may differ only in ``seed``.
        workdirs: per run, where its result files and checkpoints go (None: nowhere).
        progress: ``progress(step, total, info)`` after every group step.
        execution: device and threads (as for a run alone).

    Returns:
        One :class:`~steadytune.training.results.RunResult` per run, in order, each as the
        run would have alone (up to rounding; ``execution["group"]`` says it was grouped).

    Raises:
        NotGroupable: the runs differ in more than their seed, use Mixout, or the model
            cannot be stacked (train them one by one instead).
        ConfigError, DataError, ModelError: as for one run.
    """
    start = time.perf_counter()
    execution = execution or Execution()
    if execution.threads:
        torch.set_num_threads(execution.threads)
    resolved = [resolve_precision(c, execution) for c in cfgs]
    planned, precision = [c for c, _ in resolved], resolved[0][1]
    cfgs = [trained_config(c) for c in planned]  # a switched attempt trains with guard_switch applied
    check_groupable(cfgs)
    cfg = cfgs[0]
    device = torch.device("cuda" if execution.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if execution.device == "auto" else execution.device))
    tokenizer, model_config = load_tokenizer(cfg.model), load_config(cfg.model)
    check_max_length(cfg.max_length, cfg.model, model_config)
    data = prepare_data(cfg, tokenizer, uses_token_types(model_config))
    members = _load_members(cfgs, data.num_labels, data.metric)
    model = GroupedModel([m.solo for m in members], [m.seeds["dropout"] for m in members], device)
    plan = Schedule.of(cfg, len(data.train))
    entropy = label_entropy(data.train.labels, data.regression)
    for member, own in zip(members, planned):
        member.planned = own
        member.guard = None if own.guard == "off" else Guard(own.guard, plan.total, entropy, data.baseline)
    _record_eval(model, members, data, cfg, device, 0, 0.0)
    _train(model, members, data, cfg, device, plan, progress)
    return _results(model, members, data, plan, precision, execution, device, workdirs, time.perf_counter() - start)


def _results(model: GroupedModel, members: list[_Member], data: RunData, plan: Schedule, precision: PrecisionChoice,
             execution: Execution, device: torch.device, workdirs: list[str | None] | None,
             wall: float) -> list[RunResult]:
    out = []
    for k, m in enumerate(members):
        where = {"device": str(device), "threads": torch.get_num_threads(), "precision": precision.to_dict(),
                 "group": {"size": model.k, "index": k}}
        planned = m.planned or m.cfg
        switched = {key: v for key, v in m.cfg.to_dict().items() if v != getattr(planned, key)}
        guard = {} if m.guard is None else m.guard.record(m.steps, m.status == "stopped", planned.attempt, switched)
        result = build_result(planned, data, m.tracker, plan, status=m.status, error=m.error, steps=m.steps,
                              model_info=m.info, seeds=m.seeds, wall=wall, diagnostics=m.diagnostics, execution=where,
                              guard=guard)
        workdir = (workdirs or [None] * len(members))[k]
        if workdir is not None:
            m.solo.load_state_dict(model.member_state_dict(k))
            result.save(workdir)
            save_checkpoints(m.cfg, m.solo, load_tokenizer(m.cfg.model), m.tracker, Path(workdir), m.status,
                             execution.save_final)
        out.append(result)
    return out


__all__ = ["check_groupable", "check_members", "clip_members", "evaluate_group", "group_key", "log_member_losses", "train_group"]
