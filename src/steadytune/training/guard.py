"""The doomed-run detector: a verdict from the signals a run already has at a diagnostics step.

Mosbach et al. (2021) explain failed fine-tuning runs as an optimisation failure seen
early: the training loss stays at the entropy of the label prior and the lower layers'
gradients vanish. :func:`judge` turns what the training loop holds on the host at a
diagnostics step into a verdict, with two rules (thresholds in :class:`Thresholds`):

* ``vanishing`` — the embeddings' gradient norm is below ``vanish_ratio`` times the
  classifier's at ``vanish_steps`` consecutive diagnostic steps while the logged training
  loss is still at the label prior (>= ``prior_fraction`` of its entropy);
* ``plateau`` — from ``plateau_after`` of training on, the logged training loss has never
  gone below ``prior_fraction`` of the label entropy, the latest dev evaluation after
  step 0 (if any) is not above the majority baseline and, with ``collapse_steps`` > 0, the
  classifier has predicted one class (``majority_fraction`` 1, entropy at the prior) at
  that many consecutive diagnostic steps.

The defaults were chosen on three stored studies and are reported on the others by
``steadytune triage`` (:mod:`steadytune.analyses.triage`; docs/reproduction.md).
Everything here is pure Python on floats the loop already has: no tensor, no host sync.
:class:`Guard` is the detector inside one run; the training loop feeds it, and the offline
replay over stored curves and diagnostics feeds the same class in the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

STOPPING = ("stop", "restart", "switch")
"""Guard policies that end a doomed run (``flag`` only records the verdict)."""
LOWER, TOP = ("grad_norm_layer", "embeddings"), ("grad_norm_layer", "classifier")
"""The diagnostics whose ratio is the vanishing-gradient signal."""
HEAD_ENTROPY, MAJORITY = ("head", "entropy"), ("head", "majority_fraction")


@dataclass(frozen=True)
class Thresholds:
    """The detector's thresholds (defaults chosen by ``steadytune triage``, see the module docstring)."""

    vanish_ratio: float = 1e-2
    """Vanishing: the embeddings' gradient norm is below this times the classifier's ..."""
    vanish_steps: int = 1
    """... at this many consecutive diagnostic steps (while the loss is at the prior)."""
    prior_fraction: float = 0.9
    """'At the label prior': the logged mean training loss is >= this fraction of the label entropy."""
    plateau_after: float = 0.7
    """Plateau: from this fraction of the run's steps on (> 1: never)."""
    collapse_steps: int = 0
    """Plateau also needs this many consecutive diagnostic steps of collapsed predictions (0: not needed)."""


class Signals(NamedTuple):
    """What the detector sees at one diagnostics step (None: not known)."""

    step: int
    """Updates taken (the diagnostics are the gradients of the next one)."""
    total_steps: int
    loss: float | None
    """The latest logged mean training loss (logged at a step <= ``step``)."""
    label_entropy: float | None
    """Entropy (nats) of the training label prior; None for regression."""
    lower_grad: float | None
    """Gradient L2 norm of the embeddings."""
    top_grad: float | None
    """Gradient L2 norm of the classifier."""
    head_entropy: float | None
    """Mean softmax entropy of the classifier on the batch."""
    majority_fraction: float | None
    """Fraction of the batch predicted as its most predicted class."""
    dev: float | None
    """The run's metric at the latest dev evaluation after step 0."""
    baseline: float | None
    """The metric's majority baseline."""


class Memory(NamedTuple):
    """What the detector carries from one diagnostics step to the next."""

    vanishing: int = 0
    """Consecutive diagnostic steps with vanishing lower-layer gradients at the prior."""
    collapsed: int = 0
    """Consecutive diagnostic steps with collapsed predictions."""
    min_loss: float = math.inf
    """Lowest logged training loss so far."""


class Verdict(NamedTuple):
    """The detector's judgement of a run."""

    doomed: bool
    rule: str | None = None
    """``vanishing`` or ``plateau`` (None: not doomed)."""
    step: int | None = None
    """The diagnostics step at which it was reached."""
    reason: str = ""


OK = Verdict(False)


def _ratio(s: Signals) -> float | None:
    if s.lower_grad is None or not s.top_grad:
        return None
    return s.lower_grad / s.top_grad


def judge(s: Signals, memory: Memory, th: Thresholds) -> tuple[Verdict, Memory]:
    """The verdict at one diagnostics step, and the memory for the next.

    Args:
        s: the signals at this step.
        memory: what the previous steps left (``Memory()`` at the first).
        th: the thresholds.

    Returns:
        ``(verdict, memory)``; the verdict names the rule that fired (vanishing first).
    """
    prior = None if s.label_entropy is None else th.prior_fraction * s.label_entropy
    loss = s.loss if s.loss is not None and math.isfinite(s.loss) else None
    at_prior = prior is not None and loss is not None and loss >= prior
    min_loss = min(memory.min_loss, loss) if loss is not None else memory.min_loss
    ratio = _ratio(s)
    vanishing = memory.vanishing + 1 if at_prior and ratio is not None and ratio < th.vanish_ratio else 0
    collapsed = (memory.collapsed + 1 if prior is not None and s.majority_fraction is not None
                 and s.head_entropy is not None and s.majority_fraction >= 1.0 and s.head_entropy >= prior else 0)
    memory = Memory(vanishing, collapsed, min_loss)
    if vanishing >= th.vanish_steps:
        return Verdict(True, "vanishing", s.step, f"embeddings' gradient norm {ratio:.1e} of the classifier's "
                       f"with the training loss at the label prior ({loss:.3f} >= {prior:.3f})"), memory
    late = s.step >= th.plateau_after * s.total_steps
    never_left = prior is not None and loss is not None and min_loss >= prior
    dev_low = s.dev is None or s.baseline is None or s.dev <= s.baseline
    if late and never_left and dev_low and collapsed >= th.collapse_steps:
        dev = "" if s.dev is None else f", dev {s.dev:.4f} <= majority {s.baseline:.4f}"
        return Verdict(True, "plateau", s.step, f"training loss never below {prior:.3f} (the label prior) by "
                       f"step {s.step} of {s.total_steps}{dev}"), memory
    return OK, memory


class Guard:
    """The detector inside one run: its policy, the run's constants, the latest loss and dev value.

    The training loop calls :meth:`note_loss` at every logging step, :meth:`note_eval` at
    every evaluation and :meth:`check` at every diagnostics step (after the diagnostics
    are on the host); :mod:`steadytune.analyses.triage` replays stored runs through the
    same calls. Only the first doomed verdict counts.

    Args:
        policy: the run's ``guard`` (``flag``, ``stop``, ``restart``, ``switch``).
        total_steps: updates in the run.
        label_entropy: entropy of the training label prior (None: regression).
        baseline: the metric's majority baseline.
        thresholds: the detector's thresholds (default :class:`Thresholds`).
    """

    def __init__(self, policy: str, total_steps: int, label_entropy: float | None, baseline: float | None,
                 thresholds: Thresholds | None = None) -> None:
        self.policy, self.total_steps = policy, int(total_steps)
        self.label_entropy, self.baseline = label_entropy, baseline
        self.thresholds = thresholds or Thresholds()
        self.memory = Memory()
        self.verdict: Verdict = OK
        self.checked = 0
        self._loss: float | None = None
        self._dev: float | None = None

    @property
    def stops(self) -> bool:
        """Whether a doomed verdict ends the run (``stop``, ``restart``, ``switch``)."""
        return self.policy in STOPPING

    def note_loss(self, value: float) -> None:
        """The mean training loss logged now."""
        self._loss = float(value)

    def note_eval(self, step: int, value: float | None) -> None:
        """The run's metric at a dev evaluation after ``step`` updates (step 0 is not used)."""
        if step > 0:
            self._dev = None if value is None or not math.isfinite(value) else float(value)

    def check(self, step: int, diagnostics: Mapping[tuple[str, str], float]) -> Verdict:
        """Judge the run at diagnostics step ``step``; the first doomed verdict, once reached, stays.

        Args:
            step: updates taken.
            diagnostics: ``(group, name) -> value`` of this step
                (:attr:`steadytune.training.diagnostics.Recorder.last`).

        Returns:
            The run's verdict so far.
        """
        if self.verdict.doomed:
            return self.verdict
        signals = Signals(step, self.total_steps, self._loss, self.label_entropy, diagnostics.get(LOWER),
                          diagnostics.get(TOP), diagnostics.get(HEAD_ENTROPY), diagnostics.get(MAJORITY),
                          self._dev, self.baseline)
        self.verdict, self.memory = judge(signals, self.memory, self.thresholds)
        self.checked += 1
        return self.verdict

    def record(self, steps: int, stopped: bool, attempt: int = 1,
               switched: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The run's ``guard`` record (``RunResult.guard``).

        Args:
            steps: updates the run took.
            stopped: whether the guard ended it.
            attempt: which attempt of its seed the run was.
            switched: the ``guard_switch`` changes it trained with (None: none).
        """
        v = self.verdict
        out: dict[str, Any] = {"policy": self.policy, "attempt": attempt,
                               "verdict": "doomed" if v.doomed else ("ok" if self.checked else "unknown"),
                               "rule": v.rule, "step": v.step, "reason": v.reason or None, "stopped": stopped,
                               "steps_saved": self.total_steps - steps if stopped else 0}
        if switched:
            out["switched"] = dict(switched)
        return out


__all__ = ["OK", "STOPPING", "Guard", "Memory", "Signals", "Thresholds", "Verdict", "judge"]
