"""steadytune's diagnostics inside a Hugging Face ``Trainer``, and its recipes as ``Trainer`` settings.

    >>> recipe = trainer_recipe(cfg, model, n_train=len(train), output_dir="out")
    >>> diag = DiagnosticsCallback(every=10, out="out/steadytune")
    >>> trainer = Trainer(model=model, args=recipe.args, optimizers=recipe.optimizers,
    ...                   train_dataset=train, eval_dataset=dev, callbacks=[diag])
    >>> trainer.train()
    >>> diag.diagnostics()      # step, group, name, value: as steadytune's own runs

:class:`DiagnosticsCallback` records, with :class:`~steadytune.training.diagnostics.Recorder`,
what steadytune's loop records (per-layer / per-kind gradient norms *before* clipping,
lr, bias-correction factor, effective lr, pooler saturation, classifier entropy and
prediction collapse), plus the Trainer's logged losses and evaluations as curves, and can
feed steadytune's doomed-run detector (:class:`~steadytune.training.guard.Guard`). It
changes nothing in the run (unless a stopping guard ends it): it only reads gradients,
logits and the optimiser's groups.

``Trainer`` clips the gradients before any callback runs, so the callback keeps each
parameter's gradient norm as the gradient lands (a post-accumulate-grad hook, armed only
on diagnostic steps) and hands those pre-clip norms to the recorder before the optimiser
step. :func:`trainer_recipe` turns a resolved :class:`~steadytune.config.run.RunConfig`
into ``TrainingArguments`` plus steadytune's optimiser and schedule
(:class:`~steadytune.training.optim.AdamW`: the transformers-2.5.1 AdamW, with or without
bias correction, which transformers 5 no longer has). The model-side parts of a recipe
(dropout, Mixout, re-initialisation, head init) come from building the model with
:func:`steadytune.training.classifier.load_model`.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.optim.lr_scheduler import LambdaLR
from transformers import TrainerCallback

from steadytune.config.errors import ConfigError
from steadytune.config.run import RunConfig
from steadytune.integrations.trackers import MetricLogger
from steadytune.integrations.trainerrun import TrainerRunInfo, store_trainer_run
from steadytune.training.diagnostics import Recorder, param_grad_norms
from steadytune.training.guard import Guard
from steadytune.training.optim import AdamW, build_optimizer, linear_warmup_decay
from steadytune.training.precision import choose_precision
from steadytune.training.results import CurveRow, DiagRow, curves_frame
from steadytune.training.schedule import Schedule

_NOT_METRICS = ("runtime", "per_second", "epoch", "steps_per_second", "samples_per_second")


@dataclass
class TrainerRecipe:
    """A steadytune recipe as ``Trainer`` settings: ``Trainer(args=r.args, optimizers=r.optimizers)``."""

    args: Any
    """``transformers.TrainingArguments``."""
    optimizer: AdamW
    """steadytune's AdamW over :func:`~steadytune.training.optim.param_groups` of the model."""
    scheduler: LambdaLR
    """Linear warmup then linear decay to 0 over the run's steps."""
    total_steps: int
    """Optimiser steps the schedule spans."""

    @property
    def optimizers(self) -> tuple[AdamW, LambdaLR]:
        """``(optimizer, scheduler)``, as ``Trainer(optimizers=...)`` takes them."""
        return self.optimizer, self.scheduler


def trainer_recipe(cfg: RunConfig, model: torch.nn.Module, n_train: int, output_dir: str | Path,
                   **arguments: Any) -> TrainerRecipe:
    """``TrainingArguments`` plus optimiser and schedule that train as ``cfg`` says.

    Steps: ``ceil(n_train / batch_size)`` per epoch, ``max_steps`` or ``epochs`` of them, as
    steadytune counts them (one process, no gradient accumulation); warmup
    ``int(warmup_ratio * total)``; clipping ``max_grad_norm``; the mean training loss logged
    every ``log_every`` steps; bf16 when ``precision`` is ``bf16`` (``auto``: as steadytune
    decides it for the device the Trainer will use); nothing reported to
    trackers, nothing saved (``report_to="none"``, ``save_strategy="no"``) unless
    ``arguments`` say otherwise.

    Args:
        cfg: the resolved configuration (e.g. ``resolve_config(task=..., recipe="mosbach2021")``).
        model: the model to train (its trainable parameters are optimised).
        n_train: training examples.
        output_dir: the Trainer's output folder.
        **arguments: any other ``TrainingArguments`` (they win over the recipe's).

    Returns:
        The :class:`TrainerRecipe`.

    Raises:
        ConfigError: ``accelerate`` (the ``trainer`` extra), which ``Trainer`` needs, is missing.
    """
    if importlib.util.find_spec("accelerate") is None:
        raise ConfigError("the Trainer needs accelerate: pip install 'steadytune[trainer]'")
    from transformers import (
        TrainingArguments,  # only the Trainer helpers need it (and accelerate)
    )

    schedule = Schedule.of(cfg, n_train)
    device = torch.device("cuda" if torch.cuda.is_available() and not arguments.get("use_cpu") else "cpu")
    precision = choose_precision(cfg.precision, device).used  # "auto" as steadytune's own run decides it
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size, learning_rate=cfg.lr, num_train_epochs=cfg.epochs,
        max_steps=schedule.total, warmup_steps=schedule.warmup, weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_eps,
        max_grad_norm=cfg.max_grad_norm, logging_steps=cfg.log_every, seed=cfg.seed,
        bf16=precision == "bf16", report_to="none", save_strategy="no", disable_tqdm=True)
    settings.update(arguments)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                eps=cfg.adam_eps, correct_bias=cfg.correct_bias, layer_lr_decay=cfg.layer_lr_decay)
    scheduler = linear_warmup_decay(optimizer, schedule.warmup, schedule.total)
    return TrainerRecipe(TrainingArguments(**settings), optimizer, scheduler, schedule.total)


class DiagnosticsCallback(TrainerCallback):
    """Records steadytune's diagnostics and curves inside a ``Trainer`` run (see the module docstring).

    Args:
        every: record at steps 0, every, 2*every, ... (as ``diag_every``).
        out: write ``curves.csv`` and ``diagnostics.csv`` there at the end (None: keep in memory).
        logger: also log each diagnostic step and every log/evaluation to this tracker.
        guard: steadytune's doomed-run detector (:class:`~steadytune.training.guard.Guard`),
            fed as steadytune's loop feeds it (logged losses, evaluations of ``metric``,
            each diagnostic step); with a stopping policy (``stop``) a doomed verdict ends
            the Trainer's run. Its record is :attr:`guard_record` (and the stored run's ``guard``).
        metric: the evaluation metric the guard and a stored run read (``compute_metrics``
            key without ``eval_``; default ``run.metric``).
        study: also store the run in this study, so ``summary`` and ``report`` include it;
            needs ``run``.
        run: what the stored run is (:class:`~steadytune.integrations.trainerrun.TrainerRunInfo`).
        trainer: the ``Trainer``, when it builds its own optimiser (callbacks are not given
            that one): the bias-correction rows need it. :func:`add_diagnostics` sets it.
    """

    def __init__(self, every: int = 10, out: str | Path | None = None, logger: MetricLogger | None = None,
                 guard: Guard | None = None, metric: str | None = None, study: str | Path | None = None,
                 run: TrainerRunInfo | None = None, trainer: Any = None) -> None:
        if every <= 0:
            raise ConfigError(f"every must be > 0, got {every}")
        if study is not None and run is None:
            raise ConfigError("storing a Trainer run in a study needs run=TrainerRunInfo(config, metric, baseline)")
        self.every, self.out, self.logger, self.guard = every, out, logger, guard
        self.metric = metric or (run.metric if run is not None else None)
        self.study, self.run, self.trainer = study, run, trainer
        self.recorder: Recorder | None = None
        self.curve_rows: list[CurveRow] = []
        self.stopped = False
        self.evaluations: list[tuple[int, dict[str, float]]] = []
        self._handles: list[Any] = []
        self._norms: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None
        self._start = 0.0

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: Any, state: Any, control: Any, model: torch.nn.Module | None = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        optimizer = optimizer if optimizer is not None else getattr(self.trainer, "optimizer", None)
        self.recorder = Recorder(model, optimizer, self.every, max_grad_norm=args.max_grad_norm)
        for i, param in enumerate(self.recorder.params):
            self._handles.append(param.register_post_accumulate_grad_hook(self._grad_hook(i)))
        self._handles.append(model.register_forward_hook(self._keep_logits))
        self._start = time.perf_counter()

    def _grad_hook(self, i: int) -> Callable[[torch.Tensor], None]:
        def keep(param: torch.Tensor) -> None:
            if self._norms is not None:  # armed: a diagnostic step; the last micro-batch's value stays
                self._norms[i] = param_grad_norms([param])[0]
        return keep

    def _keep_logits(self, module: torch.nn.Module, inputs: Any, output: Any) -> None:
        logits = getattr(output, "logits", None)
        if module.training and self._norms is not None and isinstance(logits, torch.Tensor):
            self._logits = logits.detach()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.recorder is not None and self.recorder.due(state.global_step):
            first = self.recorder.params[0]
            self._norms = torch.zeros(len(self.recorder.params), device=first.device, dtype=torch.float32)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.recorder is None or self._norms is None:
            return None
        before = len(self.recorder.rows)
        self.recorder.record(state.global_step, self._logits, param_norms=self._norms)
        self._norms, self._logits = None, None
        if self.logger is not None:
            rows = self.recorder.rows[before:]
            self.logger.log_dict({f"{r.group}/{r.name}": r.value for r in rows}, state.global_step)
        if self.guard is not None and not self.stopped:
            verdict = self.guard.check(state.global_step, self.recorder.last)
            if verdict.doomed and self.guard.stops:  # this update still happens; training ends after it
                self.stopped = control.should_training_stop = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kwargs: Any) -> None:
        values = {("lr" if k == "learning_rate" else k): float(v) for k, v in (logs or {}).items()
                  if k in ("loss", "learning_rate", "grad_norm")}
        if self.guard is not None and "loss" in values:
            self.guard.note_loss(values["loss"])
        self._add(state, "train", values)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        values = {k.removeprefix("eval_"): float(v) for k, v in (metrics or {}).items()
                  if isinstance(v, (int, float)) and not any(t in k for t in _NOT_METRICS)}
        self.evaluations.append((state.global_step, values))
        if self.guard is not None and self.metric is not None:
            self.guard.note_eval(int(state.global_step), values.get(self.metric))
        self._add(state, "dev", values)

    def _add(self, state: Any, split: str, values: dict[str, float]) -> None:
        step, epoch = int(state.global_step), float(state.epoch or 0.0)
        self.curve_rows.extend(CurveRow(step, epoch, split, k, v) for k, v in values.items())
        if self.logger is not None and values:
            self.logger.log_dict({f"{split}/{k}": v for k, v in values.items()}, step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self.recorder is not None:
            self.recorder.close()
        if self.out is not None:
            folder = Path(self.out)
            folder.mkdir(parents=True, exist_ok=True)
            self.curves().to_csv(folder / "curves.csv", index=False)
            self.diagnostics().to_csv(folder / "diagnostics.csv", index=False)
        if self.study is not None and self.run is not None:
            store_trainer_run(self.study, self.run, self.curves(), self.diagnostics(), self.evaluations,
                              steps=int(state.global_step), total_steps=int(state.max_steps),
                              wall=time.perf_counter() - self._start, guard=self.guard_record(state.global_step))

    # ------------------------------------------------------------------ tables
    def curves(self) -> pd.DataFrame:
        """The Trainer's logged losses/lr (``train``) and evaluations (``dev``) as a curves table."""
        return curves_frame(self.curve_rows)

    def diagnostics(self) -> pd.DataFrame:
        """The recorded diagnostics as a ``step, group, name, value`` table."""
        rows = list(self.recorder.rows if self.recorder is not None else [])
        return pd.DataFrame(rows, columns=list(DiagRow._fields)).astype({"step": "int64", "value": "float64"})

    def guard_record(self, steps: int) -> dict[str, Any]:
        """The guard's record after ``steps`` updates (``RunResult.guard``); empty without a guard."""
        return {} if self.guard is None else self.guard.record(int(steps), stopped=self.stopped)


def add_diagnostics(trainer: Any, **options: Any) -> DiagnosticsCallback:
    """Add a :class:`DiagnosticsCallback` to ``trainer`` (which may build its own optimiser); return it."""
    callback = DiagnosticsCallback(trainer=trainer, **options)
    trainer.add_callback(callback)
    return callback


__all__ = ["DiagnosticsCallback", "TrainerRecipe", "add_diagnostics", "trainer_recipe"]
