"""The accumulator layout of superpixel sums: which float32 accumulator every pixel is added to.

A ``scatter_add_`` of all pixels of a superpixel into one accumulator adds them one after the other; the
rounding error of such a chain grows with its length (4 Mpixel of ``1000 + U(0, 1)`` come out 1 % off in
float32). The layout bounds the chain of every accumulator by :data:`MAX_CHAIN_LENGTH`, for *any* label
layout:

* a stable sort of each image's ids gives every pixel its rank ``r`` among the pixels of its superpixel
  (in raster order);
* superpixel ``s`` with ``n_s`` pixels gets ``m_s = ceil(n_s / K)`` accumulators: its *primary* slot ``s`` and
  ``m_s - 1`` *extra* slots (packed after all primary slots, at most ``(N_p - 1) // K`` in all);
* pixel ``p`` goes to accumulator ``r mod m_s`` of its superpixel, so consecutive pixels of a superpixel go to
  different accumulators (independent dependency chains) and each accumulator receives at most ``K`` pixels;
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

#: Longest chain of additions into one accumulator (``K``) for any layout; means are within ``(K + 2) u``.
MAX_CHAIN_LENGTH = 128
#: Chain length for large superpixels: more accumulators, more independent chains (faster on CPU).
SHORT_CHAIN_LENGTH = 32
#: Mean superpixel size from which the short chains are used (then there are few superpixels to combine).
SHORT_CHAIN_MIN_MEAN_SIZE = 128


def chain_length(num_pixels: int, num_space: int) -> int:
    """``K`` for images of ``num_pixels`` pixels and ``num_space`` superpixel slots (shapes only).

    Short chains give large superpixels more independent accumulators; long ones keep the float64 combination
    small (its size is about ``N_p / K`` extra slots plus at most ``min(N_s, N_p / (K + 1))`` groups) when
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


def _per_pixel(table: Tensor, flat: Tensor) -> Tensor:
    """``table[b, s]`` for every sorted pixel's superpixel ``s``.

    An ``index_select`` with the flat int32 index ``flat[B, N] = b * S + s`` (``gather`` needs int64 indices).
    """
    return table.flatten().index_select(0, flat.view(-1)).view(flat.shape)


def _image_slots(
    index: Tensor, space: Tensor, slot: Tensor, sizes: Tensor, *, compact: bool, chain: int, narrow: bool
) -> None:
    """Fill ``space``, ``slot`` and ``sizes`` (``[1, N]``, ``[1, N]``, ``[1, S]``) of one image in place.

    ``narrow``: the ids fit in int32 (32-bit keys sort faster).
    """
    n = index.shape[1]
    num_space = sizes.shape[1]
    keys = index.to(torch.int32) if narrow else index
    values, order = torch.sort(keys, dim=1, stable=True)
    del keys
    if compact:
        space_sorted = torch.cumsum(_segment_starts(values), dim=1, dtype=torch.int32).sub_(1)
        space.copy_(torch.empty_like(space_sorted).scatter_(1, order, space_sorted))
    else:
        space_sorted = values
    del values
    sizes.scatter_add_(1, space, torch.ones(1, 1, dtype=torch.int32, device=index.device).expand(1, n))
    accumulators = torch.div(sizes + (chain - 1), chain, rounding_mode="floor")  # m_s (0 when empty)
    extras = (accumulators - 1).clamp_min(0)
    flat = space_sorted.view(-1)
    # the rank of every (sorted) pixel among its superpixel's pixels, raster order: position - first position
    rank = (torch.cumsum(sizes, dim=1, dtype=torch.int32) - sizes).view(-1).index_select(0, flat).neg_()
    rank += torch.arange(n, dtype=torch.int32, device=index.device)
    lane = rank.remainder_(accumulators.view(-1).index_select(0, flat))  # in place: the pixel's accumulator
    # the extra slot S + 1 + e of the pixels with lane >= 1, the primary slot s of the others
    slot_sorted = (torch.cumsum(extras, dim=1, dtype=torch.int32) - extras).view(-1).index_select(0, flat)
    slot_sorted = slot_sorted.add_(lane).add_(num_space).view(1, n)
    torch.where(lane.view(1, n) == 0, space_sorted, slot_sorted, out=slot_sorted)
    del lane, rank, space_sorted
    slot.copy_(torch.empty_like(slot_sorted).scatter_(1, order, slot_sorted))


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
    num_extra = (n - 1) // chain  # sum of (m_s - 1) <= sum of (n_s - 1) // K <= (N - 1) // K
    num_groups = min(num_space, n // (chain + 1))  # superpixels with extras have more than K pixels
    if num_groups == 0:
        num_extra = 0
    slot = torch.empty_like(index)
    space = torch.empty_like(index) if compact else index
    sizes = torch.zeros(b, num_space, dtype=torch.int32, device=device)
    for i in range(
        b
    ):  # one image at a time: the temporaries stay small (about 16 bytes per pixel of one image)
        row = slice(i, i + 1)
        _image_slots(
            index[row],
            space[row],
            slot[row],
            sizes[row],
            compact=compact,
            chain=chain,
            narrow=num_ids < 2**31,
        )
    accumulators = torch.div(sizes + (chain - 1), chain, rounding_mode="floor")
    extras = (accumulators - 1).clamp_min(0)
    extras_end = torch.cumsum(extras, dim=1, dtype=torch.int32)

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
