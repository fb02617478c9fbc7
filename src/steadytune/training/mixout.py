"""Mixout (Lee, Cho & Kang, ICLR 2020): stochastically mix weights with their pre-trained values.

For a linear layer with weight ``w`` and target (pre-trained) weight ``u``, training uses

    w_mix = ((1 - M) * u + M * w - p * u) / (1 - p),   M_j ~ Bernoulli(1 - p)

with one mask entry per *input* neuron ``j``, shared by every output row, as in the
official implementation (``bloodwass/mixout``, ``mixout.py``). Evaluation uses ``w``.

One deliberate difference: autograd gives d w_mix / d w = M / (1 - p); the official
backward returns ``grad * M`` without the 1 / (1 - p) factor. Adam is almost invariant
to a constant gradient scale, so this matters only through epsilon and clipping; we
keep the mathematically consistent gradient and document it (docs/recipes.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MixLinear(nn.Linear):
    """A ``nn.Linear`` whose weight is mixed out towards a fixed target while training.

    Subclassing ``nn.Linear`` keeps parameter names and checkpoints identical to the
    wrapped layer; the target is a non-persistent buffer, so saved weights load into
    the stock model class.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.0) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"mixout probability must be in [0, 1), got {p}")
        self.p = p
        self.register_buffer("mixout_target", torch.empty(0), persistent=False)

    @classmethod
    def from_linear(cls, layer: nn.Linear, p: float) -> MixLinear:
        """Wrap ``layer`` (sharing its Parameter objects); its current weight is the target."""
        mixed = cls.__new__(cls)
        nn.Module.__init__(mixed)
        mixed.in_features, mixed.out_features = layer.in_features, layer.out_features
        mixed.weight = layer.weight
        mixed.bias = layer.bias
        if not 0.0 <= p < 1.0:
            raise ValueError(f"mixout probability must be in [0, 1), got {p}")
        mixed.p = p
        mixed.register_buffer("mixout_target", layer.weight.detach().clone(), persistent=False)
        return mixed

    def mixed_weight(self) -> torch.Tensor:
        """The weight used in this forward pass (mixed when training, ``w`` otherwise)."""
        if not self.training or self.p == 0.0:
            return self.weight
        target = self.mixout_target
        keep = torch.empty(self.in_features, device=self.weight.device, dtype=self.weight.dtype)
        keep.bernoulli_(1.0 - self.p)
        mask = keep.expand_as(self.weight)
        return ((1.0 - mask) * target + mask * self.weight - self.p * target) / (1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.mixed_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mixout={self.p}"


def apply_mixout(model: nn.Module, p: float) -> list[str]:
    """Replace every ``nn.Linear`` in ``model`` by a :class:`MixLinear` with probability ``p``.

    The target of each layer is its weight at the time of the call: the pre-trained
    weight for encoder layers, the fresh initialisation for a new classifier head (as
    the official Hugging Face example does).

    Returns:
        The qualified names of the replaced modules.
    """
    replaced: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                setattr(parent, child_name, MixLinear.from_linear(child, p))
                replaced.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return replaced
