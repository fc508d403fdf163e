"""The accumulator layout of superpixel sums: which float32 accumulator every pixel is added to.

A ``scatter_add_`` of all pixels of a superpixel into one accumulator adds them one after the other; the
rounding error of such a chain grows with its length (4 Mpixel of ``1000 + U(0, 1)`` come out 1 % off in
float32). The layout bounds the chain of every accumulator by :data:`MAX_CHAIN_LENGTH`, for *any* label
layout:

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

__all__ = ["MAX_CHAIN_LENGTH", "Layout", "build_layout", "chain_length", "compact_ids"]

#: Longest chain of additions into one accumulator (``L``) for any layout; the error bound is ``(L + 2) u``.
MAX_CHAIN_LENGTH = 128
#: Chain length for large superpixels: more accumulators per superpixel, more independent chains (faster on
# CPU).
SHORT_CHAIN_LENGTH = 32
#: Mean superpixel size from which the short chains are used (then there are few superpixels to combine).
SHORT_CHAIN_MIN_MEAN_SIZE = 128


def chain_length(num_pixels: int, num_space: int) -> int:
    """``L`` for images of ``num_pixels`` pixels and ``num_space`` superpixel slots (shapes only).

    Short chains give large superpixels more independent accumulators; long ones keep the float64 combination
    small (its size is about ``N_p / L`` extra slots plus at most ``min(N_s, N_p / (L + 1))`` groups) when
    there are many superpixels, which are small anyway.
    """
    if num_pixels >= SHORT_CHAIN_MIN_MEAN_SIZE * max(num_space, 1):
        return SHORT_CHAIN_LENGTH
    return MAX_CHAIN_LENGTH


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


def _segment_starts(values: Tensor) -> Tensor:
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    return starts


def compact_ids(index: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row ranks of the distinct values of ``index[B, N]`` (order kept) and their count ``K[B]``.

    Exact for any int64 values (only comparisons, no arithmetic on the ids).
    """
    b, n = index.shape
    if n == 0:
        return index.clone(), index.new_zeros(b)
    values, order = torch.sort(index, dim=1, stable=True)
    ranks_sorted = torch.cumsum(_segment_starts(values), dim=1) - 1
    ranks = torch.empty_like(index).scatter_(1, order, ranks_sorted)
    return ranks, ranks_sorted[:, -1] + 1


def build_layout(
    index: Tensor, num_ids: int, *, compact: bool, chain: int | None = None
) -> tuple[Layout, int]:
    """The accumulator layout of ``index[B, N]`` (ids in ``[0, num_ids)``) and its number of slots ``S``.

    With ``compact`` the slots are the distinct ids of each image, in order (``S = min(num_ids, N)``);
    otherwise slot ``s`` is id ``s`` (``S = num_ids``) and ``index`` itself becomes ``Layout.space``.
    """
    b, n = index.shape
    device = index.device
    num_space = min(num_ids, n) if compact else num_ids
    chain = chain_length(n, num_space) if chain is None else chain
    if n == 0 or b == 0:
        empty = index.new_zeros(b, 1, 0)
        flat = index.view(b, 1, n)
        return Layout(flat, flat, empty, empty, index.new_zeros(b, num_space)), num_space
    if num_ids <= 2**31 - 1:  # ids fit: sort 32-bit keys (faster)
        values, order = torch.sort(index.to(torch.int32), dim=1, stable=True)
    else:
        values, order = torch.sort(index, dim=1, stable=True)
    if compact:
        space_sorted = torch.cumsum(_segment_starts(values), dim=1) - 1
        space = torch.empty_like(index).scatter_(1, order, space_sorted)
    else:
        space_sorted, space = values.long(), index
    ones = torch.ones(1, 1, dtype=torch.int32, device=device).expand(b, n)
    sizes = torch.zeros(b, num_space, dtype=torch.int32, device=device).scatter_add_(1, space, ones)
    # rank of every (sorted) pixel among its superpixel's pixels, raster order: position - first position
    first = torch.cumsum(sizes, dim=1, dtype=torch.int32) - sizes
    rank = torch.arange(n, dtype=torch.int32, device=device) - torch.gather(first, 1, space_sorted)

    accumulators = torch.div(sizes + (chain - 1), chain, rounding_mode="floor")  # m_s (0 when empty)
    extras = (accumulators - 1).clamp_min(0)
    extras_end = torch.cumsum(extras, dim=1, dtype=torch.int32)
    num_extra = (n - 1) // chain  # sum of (m_s - 1) <= sum of (n_s - 1) // L <= (N - 1) // L
    num_groups = min(num_space, n // (chain + 1))  # superpixels with extras have more than L pixels
    if num_groups == 0:
        num_extra = 0
    lane = rank % torch.gather(accumulators, 1, space_sorted)
    extra_slot = torch.gather(extras_end - extras, 1, space_sorted) + lane + num_space  # lane >= 1: S + 1 + e
    slot_sorted = torch.where(lane == 0, space_sorted, extra_slot.long())
    slot = torch.empty_like(index).scatter_(1, order, slot_sorted)

    # groups: the superpixels with extras first (group = their rank), then the others, so that the owners of
    # unused groups are distinct superpixels whose extra sum is 0 (adding it changes nothing)
    has_extras = extras > 0
    big_rank = torch.cumsum(has_extras, dim=1) - 1
    position = torch.where(has_extras, big_rank, big_rank[:, -1:] + torch.cumsum(~has_extras, dim=1))
    owners = torch.arange(num_space, device=device).expand(b, num_space)
    group_owner = torch.empty_like(owners).scatter_(1, position, owners)[:, :num_groups]
    group_of = torch.cat([big_rank.clamp_min(0), big_rank.new_zeros(b, 1)], dim=1)  # unused extras -> group 0
    extra_position = torch.arange(num_extra, dtype=torch.int32, device=device).expand(b, num_extra)
    extra_owner = torch.searchsorted(extras_end, extra_position.contiguous(), right=True)
    extra_group = torch.gather(group_of, 1, extra_owner)
    layout = Layout(
        space.view(b, 1, n),
        slot.view(b, 1, n),
        extra_group.view(b, 1, num_extra),
        group_owner.reshape(b, 1, num_groups),
        sizes.long(),
    )
    return layout, num_space
