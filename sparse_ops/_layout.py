"""The accumulator layout of superpixel sums: which float32 accumulator every pixel is added to.

A ``scatter_add_`` of all pixels of a superpixel into one accumulator adds them one after the other; the
rounding error of such a chain grows with its length (4 Mpixel of ``1000 + U(0, 1)`` come out 1 % off in
float32). The layout bounds the chain of every accumulator by :data:`CHAIN_LENGTH`, for *any* label layout:

* a stable sort of each image's ids gives every pixel its rank ``r`` among the pixels of its superpixel
  (in raster order);
* superpixel ``s`` with ``n_s`` pixels gets ``m_s = ceil(n_s / L)`` accumulators: its *primary* slot ``s`` and
  ``m_s - 1`` *extra* slots (packed after all primary slots, at most ``(N_p - 1) // L`` in all);
* pixel ``p`` goes to accumulator ``r mod m_s`` of its superpixel, so consecutive pixels of a superpixel go to
  different accumulators (independent dependency chains) and each accumulator receives at most ``L`` pixels;
* the extra slots of a superpixel are added to its primary slot in float64 and the total is rounded once.

The same sort compacts the ids (``compact=True``): the slots then index the distinct ids of each image, so
memory does not depend on the id values. Everything has a size known from the shapes alone (no host
synchronisation), so building a layout compiles with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["CHAIN_LENGTH", "Layout", "build_layout", "compact_ids"]

#: Longest chain of float32 additions into one accumulator (``L``); the error bound is ``(L + 2) u max|x|``.
CHAIN_LENGTH = 32


class Layout(NamedTuple):
    """Index tensors of one label map (``N = H * W``, ``S = num_space``, trash slot ``S``).

    Attributes:
        space (LongTensor[B, 1, N]): slot of every pixel's superpixel in ``[0, S)`` (its id, or compact id).
        slot (LongTensor[B, 1, N]): accumulator of every pixel: ``space`` or an extra slot ``S + 1 + e``.
        extra_group (LongTensor[B, 1, E]): group of every extra slot (unused extra slots: group 0, they stay
        0). group_owner (LongTensor[B, 1, G]): primary slot of every group; distinct within an image.
        sizes (LongTensor[B, S]): pixels per superpixel slot (all pixels, masked ones included).
    """

    space: Tensor
    slot: Tensor
    extra_group: Tensor
    group_owner: Tensor
    sizes: Tensor


def _sorted_segments(index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stable per-row sort of ``index[B, N]``: ``(sorted values, permutation, segment-start flags)``."""
    values, order = torch.sort(index, dim=1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    return values, order, starts


def compact_ids(index: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row ranks of the distinct values of ``index[B, N]`` (order kept) and their count ``K[B]``.

    Exact for any int64 values (only comparisons, no arithmetic on the ids).
    """
    b, n = index.shape
    if n == 0:
        return index.clone(), index.new_zeros(b)
    _, order, starts = _sorted_segments(index)
    ranks_sorted = torch.cumsum(starts, dim=1) - 1
    ranks = torch.empty_like(index).scatter_(1, order, ranks_sorted)
    return ranks, ranks_sorted[:, -1] + 1


def build_layout(
    index: Tensor, num_ids: int, *, compact: bool, chain: int = CHAIN_LENGTH
) -> tuple[Layout, int]:
    """The accumulator layout of ``index[B, N]`` (ids in ``[0, num_ids)``) and its number of slots ``S``.

    With ``compact`` the slots are the distinct ids of each image in increasing order (``S = min(num_ids,
    N)``); otherwise slot ``s`` is id ``s`` (``S = num_ids``).
    """
    b, n = index.shape
    device = index.device
    num_space = min(num_ids, n) if compact else num_ids
    if n == 0 or b == 0:
        empty = index.new_zeros(b, 1, 0)
        return Layout(
            index.view(b, 1, n), index.view(b, 1, n), empty, empty, index.new_zeros(b, num_space)
        ), num_space
    values, order, starts = _sorted_segments(index)
    position = torch.arange(n, device=device).expand(b, n)
    segment_start = torch.cummax(torch.where(starts, position, 0), dim=1).values
    rank = position - segment_start  # rank of the pixel among its superpixel's pixels, raster order
    space_sorted = torch.cumsum(starts, dim=1) - 1 if compact else values
    space = torch.empty_like(index).scatter_(1, order, space_sorted)
    ones = torch.ones(1, 1, dtype=torch.long, device=device).expand(b, n)
    sizes = torch.zeros(b, num_space, dtype=torch.long, device=device).scatter_add_(1, space, ones)

    accumulators = torch.div(sizes + (chain - 1), chain, rounding_mode="floor")  # m_s (0 when empty)
    extras = (accumulators - 1).clamp_min(0)
    extras_end = torch.cumsum(extras, dim=1)
    num_extra = (n - 1) // chain  # sum of (m_s - 1) <= sum of (n_s - 1) // L <= (N - 1) // L
    num_groups = min(num_space, n // (chain + 1))  # superpixels with extras have more than L pixels
    if num_groups == 0:
        num_extra = 0
    lane = rank % torch.gather(accumulators, 1, space_sorted)
    extra_slot = torch.gather(extras_end - extras, 1, space_sorted) + lane - 1
    slot_sorted = torch.where(lane == 0, space_sorted, num_space + 1 + extra_slot)
    slot = torch.empty_like(index).scatter_(1, order, slot_sorted)

    has_extras = extras > 0
    group_owner = torch.argsort((~has_extras).to(torch.uint8), dim=1, stable=True)[:, :num_groups]
    group_of = torch.cumsum(has_extras, dim=1) - 1
    group_of = torch.cat([group_of.clamp_min(0), group_of.new_zeros(b, 1)], dim=1)  # unused extra slots -> 0
    extra_position = torch.arange(num_extra, device=device).expand(b, num_extra)
    extra_owner = torch.searchsorted(extras_end, extra_position.contiguous(), right=True)
    extra_group = torch.gather(group_of, 1, extra_owner)
    layout = Layout(
        space.view(b, 1, n),
        slot.view(b, 1, n),
        extra_group.view(b, 1, num_extra),
        group_owner.reshape(b, 1, num_groups),
        sizes,
    )
    return layout, num_space
