"""The layers of a grouped model: K runs' weights stacked along a leading dimension.

A grouped model is a Hugging Face classifier whose batch holds K runs' batches one after
another (``K * B`` rows) and whose weighted layers hold K sets of weights:

* :class:`GroupedLinear` multiplies run k's rows by run k's weights in one batched matrix
  product (``baddbmm``), the work that dominates a step;
* :class:`GroupedEmbedding`, :class:`GroupedLayerNorm`: the same for lookups and norms;
* :class:`GroupedDropout` and :func:`grouped_attention` apply dropout and attention to
  each run's own rows and own sequence length, drawing from each run's own random stream
  (:class:`MemberStreams`), so that each run gets exactly the dropout masks it would get
  trained alone.

Everything else (embeddings' position ids, residuals, activations, the pooler and the
head's wiring) is the model's own code, which sees one batch of ``K * B`` rows. Every
module reads the group's current layout (each run's batch size and sequence length) from
one shared :class:`GroupLayout`, set before each forward pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GroupLayout:
    """Where each run's rows and tokens are in the current (padded) group batch.

    The group batch has ``K * rows`` rows of ``width`` tokens; run k owns rows
    ``k * rows ... k * rows + sizes[k] - 1`` and, in each of them, tokens ``0 ... lengths[k] - 1``.
    """

    k: int
    """Runs in the group."""
    rows: int = 0
    """Rows per run in the padded batch (the largest run batch)."""
    width: int = 0
    """Tokens per row in the padded batch (the longest example of any run)."""
    sizes: list[int] = field(default_factory=list)
    """Each run's own batch size."""
    lengths: list[int] = field(default_factory=list)
    """Each run's own padded length (its longest example)."""
    padded: list[bool] = field(default_factory=list)
    """Whether run k's own batch has padding (a shorter example), i.e. needs an attention mask."""
    masks: list[torch.Tensor | None] = field(default_factory=list)
    """Each run's own 2D attention mask ``(sizes[k], lengths[k])`` (1 = real token)."""

    def set(self, sizes: list[int], lengths: list[int], padded: list[bool],
            masks: list[torch.Tensor | None]) -> None:
        """Describe the next batch (one entry per run)."""
        self.sizes, self.lengths, self.padded, self.masks = sizes, lengths, padded, masks
        self.rows, self.width = max(sizes), max(lengths)

    def same_for_all(self, mask: torch.Tensor, padded: bool) -> None:
        """An evaluation batch: every run sees the same rows (2D ``mask``), without dropout."""
        rows, width = mask.shape
        self.set([rows] * self.k, [width] * self.k, [padded] * self.k, [mask] * self.k)


class MemberStreams:
    """The global random stream of each run, swapped in while that run's dropout is drawn.

    A run trained alone seeds the global generator (CPU, and CUDA when it runs there) with
    its dropout seed and draws every dropout mask from it in forward order. Here run k's
    stream is kept apart and made the global one while run k's masks are drawn, so each
    run consumes exactly the draws it would consume alone, whichever runs share its group.
    """

    def __init__(self, seeds: list[int], device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        saved = self._get()
        try:
            self.states: list[Any] = []
            for seed in seeds:
                torch.manual_seed(seed)  # as the solo run: torch.manual_seed, then cuda.manual_seed_all
                if self.cuda:
                    torch.cuda.manual_seed_all(seed)
                self.states.append(self._get())
        finally:
            self._set(saved)

    def _get(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cuda = torch.cuda.get_rng_state(self.device) if self.cuda else None
        return torch.get_rng_state(), cuda

    def _set(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if self.cuda and state[1] is not None:
            torch.cuda.set_rng_state(state[1], self.device)

    @contextlib.contextmanager
    def member(self, k: int) -> Iterator[None]:
        """Make run ``k``'s stream the global one inside the block (and keep where it got to)."""
        saved = self._get()
        self._set(self.states[k])
        try:
            yield
        finally:
            self.states[k] = self._get()
            self._set(saved)


def _per_run(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.reshape(k, -1, *x.shape[1:])


class GroupedLinear(nn.Module):
    """K linear layers: run k's rows times run k's weight, as one ``baddbmm``.

    Parameters ``weight`` ``(K, out, in)`` and ``bias`` ``(K, out)`` keep the names of
    the layer they replace, so parameter groups and diagnostics find them as before.
    """

    def __init__(self, layers: list[nn.Linear]) -> None:
        super().__init__()
        self.k = len(layers)
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = None
        if layers[0].bias is not None:
            self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))  # type: ignore[misc]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(self.k, -1, x.shape[-1])  # (K, rows * tokens, in)
        weight = self.weight.transpose(1, 2)
        out = torch.bmm(flat, weight) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), flat, weight)
        return out.reshape(*lead, out.shape[-1])


class GroupedEmbedding(nn.Module):
    """K embedding tables ``weight`` ``(K, rows, dim)``; run k's ids look up table k.

    A padding row (``padding_idx``) gets no gradient, as in ``nn.Embedding``. Ids with a
    batch of one (BERT's position ids, broadcast over the batch) are looked up in every
    table and broadcast over each run's rows.
    """

    def __init__(self, layers: list[nn.Embedding], layout: GroupLayout) -> None:
        super().__init__()
        self.layout = layout
        self.k, self.rows = len(layers), layers[0].num_embeddings
        self.padding_idx = layers[0].padding_idx
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        if self.padding_idx is not None:
            pad = self.padding_idx
            self.weight.register_hook(lambda grad: grad.index_fill(1, torch.tensor([pad], device=grad.device), 0.0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(self.k, device=ids.device) * self.rows
        table = self.weight.reshape(self.k * self.rows, -1)
        if ids.shape[0] == 1 and self.layout.rows * self.k != 1:  # shared ids: one lookup per run
            per_run = F.embedding(ids + offsets.view(self.k, *([1] * (ids.dim() - 1))), table)  # (K, ..., dim)
            wide = per_run.unsqueeze(1).expand(self.k, self.layout.rows, *per_run.shape[1:])
            return wide.reshape(self.k * self.layout.rows, *per_run.shape[1:])
        shifted = _per_run(ids, self.k) + offsets.view(self.k, *([1] * ids.dim()))
        return F.embedding(shifted.reshape(ids.shape), table)


class GroupedLayerNorm(nn.Module):
    """K layer norms: the normalisation of every row, then run k's scale and shift."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        first = layers[0]
        self.k, self.eps = len(layers), float(first.eps)  # type: ignore[arg-type]
        self.shape = tuple(first.normalized_shape)  # type: ignore[arg-type]
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))  # type: ignore[union-attr]
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x, self.shape, None, None, self.eps)
        per_run = _per_run(normed, self.k)
        view = (self.k,) + (1,) * (per_run.dim() - 2) + (-1,)
        return (per_run * self.weight.view(view) + self.bias.view(view)).reshape(x.shape)


class GroupedDropout(nn.Module):
    """Dropout of each run's own rows and tokens, from that run's own stream.

    Run k's slice ``(sizes[k], lengths[k], ...)`` is dropped with ``F.dropout`` while its
    stream is the global one, so its mask is the one the run would draw alone (same shape,
    same draws); padding rows and tokens pass unchanged (no run reads them).
    """

    def __init__(self, p: float, layout: GroupLayout, streams: Callable[[], MemberStreams]) -> None:
        super().__init__()
        self.p, self.layout, self.streams = p, layout, streams

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        layout, streams = self.layout, self.streams()
        out = x.clone()
        runs, per_run = _per_run(x, layout.k), _per_run(out, layout.k)
        for k in range(layout.k):
            index = (k, slice(0, layout.sizes[k])) + ((slice(0, layout.lengths[k]),) if x.dim() == 3 else ())
            with streams.member(k):
                per_run[index] = F.dropout(runs[index].contiguous(), self.p, training=True)
        return out


def member_mask(mask: torch.Tensor | None, implementation: str, dtype: torch.dtype) -> torch.Tensor | None:
    """The 4D attention mask a model trained alone builds from its 2D ``mask`` (None: no padding).

    As transformers' ``create_bidirectional_mask``: for ``sdpa`` a boolean
    ``(B, 1, L, L)`` mask (True = attend) or None when nothing is padded; for ``eager`` the
    additive float mask (0 or the dtype's lowest value).
    """
    if mask is None:
        return None
    rows, length = mask.shape
    allowed = mask.bool()[:, None, None, :].expand(rows, 1, length, length)
    if implementation == "sdpa":
        return allowed
    low = torch.finfo(dtype).min
    return torch.where(allowed, torch.zeros((), dtype=dtype, device=mask.device),
                       torch.full((), low, dtype=dtype, device=mask.device))


def grouped_attention(solo: Callable[..., tuple[torch.Tensor, Any]], layout: GroupLayout,
                      streams: Callable[[], MemberStreams], implementation: str) -> Callable[..., tuple[Any, None]]:
    """An attention function (transformers' attention interface) that runs ``solo`` per run.

    Run k's queries, keys and values are cut to its own rows and length, its own mask is
    rebuilt as a model trained alone would build it (:func:`member_mask`), and ``solo``
    (transformers' ``sdpa`` or ``eager`` attention) runs with run k's stream as the global
    one (attention dropout). Outputs beyond a run's rows and length are zero. In
    evaluation (no dropout, every run the same batch) one call covers all runs.
    """

    def attend(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        dropout = float(kwargs.get("dropout", 0.0))
        if not module.training:
            shared = layout.masks[0] if layout.padded[0] else None
            mask = member_mask(None if shared is None else shared.repeat(layout.k, 1), implementation, query.dtype)
            return solo(module, query, key, value, mask, **kwargs)[0], None
        heads, width, dim = query.shape[1], query.shape[2], value.shape[-1]
        out = query.new_zeros(layout.k, layout.rows, width, heads, dim)
        q, k_, v = (_per_run(t, layout.k) for t in (query, key, value))
        streams_now = streams()
        for k in range(layout.k):
            cut = (k, slice(0, layout.sizes[k]), slice(None), slice(0, layout.lengths[k]))
            mask = member_mask(layout.masks[k] if layout.padded[k] else None, implementation, query.dtype)
            with streams_now.member(k) if dropout > 0 else contextlib.nullcontext():
                result, _ = solo(module, q[cut], k_[cut], v[cut], mask, **kwargs)
            out[k, : layout.sizes[k], : layout.lengths[k]] = result
        return out.reshape(layout.k * layout.rows, width, heads, dim), None

    return attend


__all__ = ["GroupLayout", "GroupedDropout", "GroupedEmbedding", "GroupedLayerNorm", "GroupedLinear",
           "MemberStreams", "grouped_attention", "member_mask"]
