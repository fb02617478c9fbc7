"""When a run does what: its number of updates, warmup, logging and evaluation steps.

As in the paper's code (``run_glue`` of transformers 2.5.1): ``ceil(n_train / batch_size)``
updates per epoch, ``max_steps`` or ``ceil(epochs * steps_per_epoch)`` updates in all,
``int(warmup_ratio * total)`` of them warmup; the mean training loss is logged every
``log_every`` updates and at the last one; the dev set is evaluated at step 0, about
``evals_per_epoch`` times per epoch, at each epoch end and at the last update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from steadytune.config.run import RunConfig


def eval_steps(steps_per_epoch: int, total: int, evals_per_epoch: int) -> frozenset[int]:
    """The steps (updates taken) after which the dev set is evaluated.

    Args:
        steps_per_epoch: updates per epoch.
        total: updates in the run.
        evals_per_epoch: evaluations per epoch (every ``steps_per_epoch // evals_per_epoch``
            updates, at least every update, plus each epoch end); 0: only at 0 and ``total``.

    Returns:
        The steps, 0 and ``total`` always included, none above ``total``.
    """
    steps = {0, total}
    if evals_per_epoch > 0:
        interval = max(1, steps_per_epoch // evals_per_epoch)
        steps |= set(range(interval, total + 1, interval))
        steps |= set(range(steps_per_epoch, total + 1, steps_per_epoch))
    return frozenset(s for s in steps if s <= total)


@dataclass(frozen=True)
class Schedule:
    """The step plan of one run (see the module docstring)."""

    steps_per_epoch: int
    """Updates per epoch."""
    total: int
    """Updates in the run."""
    warmup: int
    """Updates of linear lr warmup."""
    log_every: int
    """Updates between two logged training-loss means."""
    eval_at: frozenset[int]
    """Steps after which the dev set is evaluated (:func:`eval_steps`)."""

    @classmethod
    def of(cls, cfg: RunConfig, n_train: int) -> Schedule:
        """The plan of ``cfg`` for a training split of ``n_train`` examples.

        Args:
            cfg: gives ``batch_size``, ``max_steps`` (0: use ``epochs``), ``epochs``,
                ``warmup_ratio``, ``log_every`` and ``evals_per_epoch``.
            n_train: training examples.
        """
        steps_per_epoch = math.ceil(n_train / cfg.batch_size)
        total = cfg.max_steps or math.ceil(steps_per_epoch * cfg.epochs)
        return cls(steps_per_epoch, total, int(cfg.warmup_ratio * total), cfg.log_every,
                   eval_steps(steps_per_epoch, total, cfg.evals_per_epoch))

    def epoch_at(self, epoch: int, step: int) -> float:
        """The fractional epoch after ``step`` updates, ``epoch`` being the current (0-based) one.

        Args:
            epoch: the epoch the update belongs to.
            step: updates taken (including it).
        """
        return epoch + (step - epoch * self.steps_per_epoch) / self.steps_per_epoch

    def losses_to_log(self, step: int) -> int:
        """How many training losses the mean logged at ``step`` covers; 0 if ``step`` logs none.

        ``log_every`` at every multiple of it; at the last update, the losses since the
        previous logging step.
        """
        if step % self.log_every == 0:
            return self.log_every
        return step % self.log_every if step == self.total else 0


__all__ = ["Schedule", "eval_steps"]
