"""One model that trains K runs at once: :class:`GroupedModel`, built from K loaded classifiers.

The K classifiers (same checkpoint and settings, each with its own head initialisation,
re-initialisation and, later, data order and dropout stream) are merged into one copy of
the model whose linear, embedding and layer-norm modules hold all K weight sets
(:mod:`steadytune.training.grouped.modules`) under the original parameter names. The
optimiser, the lr schedule, the parameter groups and the gradient-norm index work on it
unchanged: every parameter simply has a leading dimension of size K, and everything the
optimiser does is elementwise.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import torch
from torch import nn

from steadytune.training.grouped.modules import (
    GroupedDropout,
    GroupedEmbedding,
    GroupedLayerNorm,
    GroupedLinear,
    GroupLayout,
    MemberStreams,
    grouped_attention,
)
from steadytune.training.mixout import MixLinear

ATTENTION = "steadytune_grouped"
"""The attention implementation name a grouped model's config carries (registered once)."""
SOLO_ATTENTION = ("sdpa", "eager")
"""The attention implementations a grouped model can reproduce per run."""


class NotGroupable(ValueError):
    """A model (or setting) that cannot be trained as a group; train its runs one at a time."""


def _dispatch(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    return module.steadytune_attention(module, *args, **kwargs)  # type: ignore[operator]


def _register() -> None:
    from transformers import AttentionInterface  # heavy: only a grouped model needs it
    from transformers.masking_utils import (  # the same package
        AttentionMaskInterface,
        sdpa_mask,
    )

    AttentionInterface.register(ATTENTION, _dispatch)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def _solo_attention(model: nn.Module, implementation: str) -> Any:
    """The attention function a run trained alone uses (transformers' sdpa, or the model's eager)."""
    if implementation == "sdpa":
        from transformers.integrations.sdpa_attention import (
            sdpa_attention_forward,  # heavy: only a grouped model needs it
        )

        return sdpa_attention_forward
    owner = sys.modules[type(model).__module__]
    if not hasattr(owner, "eager_attention_forward"):
        raise NotGroupable(f"{type(model).__name__} has no eager_attention_forward to reproduce")
    return owner.eager_attention_forward


def _is_layer_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) and module.elementwise_affine and module.bias is not None


class GroupedModel(nn.Module):
    """K runs of one classifier as one model (see the module docstring).

    Args:
        members: the K loaded classifiers, in train mode, on CPU or one device (not changed).
        dropout_seeds: each run's dropout seed (the stream its masks come from).
        device: where the grouped model trains.

    Raises:
        NotGroupable: Mixout layers, an attention implementation other than sdpa/eager, or
            a parameter in a module this module does not know how to stack.
    """

    def __init__(self, members: list[nn.Module], dropout_seeds: list[int], device: torch.device) -> None:
        super().__init__()
        if len(members) != len(dropout_seeds) or not members:
            raise ValueError(f"{len(members)} models for {len(dropout_seeds)} dropout seeds")
        self.k = len(members)
        implementation = getattr(members[0].config, "_attn_implementation", None)
        if implementation not in SOLO_ATTENTION:
            raise NotGroupable(f"attention implementation {implementation!r}; grouping needs one of {SOLO_ATTENTION}")
        self.layout = GroupLayout(self.k)
        self.streams = MemberStreams(dropout_seeds, device)
        inner = copy.deepcopy(members[0])
        self._stack(inner, members)
        attend = grouped_attention(_solo_attention(members[0], implementation), self.layout, lambda: self.streams,
                                   implementation)
        for module in inner.modules():
            module.steadytune_attention = attend  # type: ignore[assignment]
        _register()
        inner.config._attn_implementation_internal = ATTENTION
        self.inner = inner.to(device)
        self._check(members[0])

    def _stack(self, inner: nn.Module, members: list[nn.Module]) -> None:
        for name, module in list(inner.named_modules()):
            if not name:
                continue
            if isinstance(module, MixLinear):
                raise NotGroupable("Mixout layers draw from the global stream per call; train Mixout runs alone")
            same = [m.get_submodule(name) for m in members]
            if isinstance(module, nn.Linear):
                replacement: nn.Module = GroupedLinear(same)  # type: ignore[arg-type]
            elif isinstance(module, nn.Embedding):
                replacement = GroupedEmbedding(same, self.layout)  # type: ignore[arg-type]
            elif _is_layer_norm(module):
                replacement = GroupedLayerNorm(same)
            elif isinstance(module, nn.Dropout):
                replacement = GroupedDropout(module.p, self.layout, lambda: self.streams)
            else:
                continue
            parent, _, leaf = name.rpartition(".")
            setattr(inner.get_submodule(parent) if parent else inner, leaf, replacement)

    def _check(self, solo: nn.Module) -> None:
        shapes = {n: tuple(p.shape) for n, p in solo.named_parameters()}
        grouped = dict(self.inner.named_parameters())
        if set(grouped) != set(shapes):
            raise NotGroupable(f"parameters differ after stacking: {sorted(set(grouped) ^ set(shapes))[:3]}")
        for name, param in grouped.items():
            if tuple(param.shape) != (self.k, *shapes[name]):
                raise NotGroupable(f"cannot stack parameter {name} (a {type(param).__name__} of shape "
                                   f"{tuple(param.shape)} in a module this grouping does not know)")

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """Logits ``(K * rows, labels)`` of a group batch laid out as :attr:`layout` says.

        ``attention_mask`` is not passed to the model: each run's mask is rebuilt per run
        from the layout (the model's own mask would cover all K runs' padding at once).
        """
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "token_type_ids")}
        return self.inner(**inputs).logits

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Run ``k``'s weights under the names of the model trained alone (buffers included)."""
        grouped = {n for n, _ in self.inner.named_parameters()}
        return {name: (value[k] if name in grouped else value) for name, value in self.inner.state_dict().items()}


__all__ = ["ATTENTION", "GroupedModel", "NotGroupable", "SOLO_ATTENTION"]
