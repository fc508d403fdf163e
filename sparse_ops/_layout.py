"""The accumulator layout of superpixel sums: which float32 accumulator every pixel is added to.

A ``scatter_add_`` of all pixels of a superpixel into one accumulator adds them one after the other; the
rounding error of such a chain grows with its length (4 Mpixel of ``1000 + U(0, 1)`` come out 1 % off in
float32). The layout bounds the chain of every accumulator by :data:`MAX_CHAIN_LENGTH`, for *any* label
layout:

* a stable sort of each image's ids gives every pixel its rank ``r`` among the pixels of its superpixel
  (in raster order);
* superpixel ``s`` with ``n_s`` pixels gets ``m_s = max(P, ceil(n_s / K))`` accumulators: ``P`` adjacent
  *lanes* ``s * P + j`` (``P`` in {1, 2, 4}, chosen from the shapes like an interleave: independent dependency
  chains make the scatter faster) and ``m_s - P`` *extra* slots for superpixels of more than ``P K`` pixels
  (packed after the lanes and the trash slot, at most ``N_p // K`` in all);
* pixel ``p`` goes to accumulator ``r mod m_s`` of its superpixel, so consecutive pixels of a superpixel go to
  different accumulators and each accumulator receives at most ``K`` pixels;
* the ``P`` lanes of a superpixel are added in float32 (``P - 1`` roundings), its extra slots then in float64,
  and the total is rounded once.

The same sort compacts the ids (``compact=True``): the slots then index the distinct ids of each image, so
memory does not depend on the id values. Everything has a size known from the shapes alone (no host
synchronisation), so building a layout compiles with ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "MAX_CHAIN_LENGTH",
    "POSITION_LIMIT",
    "Layout",
    "build_layout",
    "compact_ids",
    "lanes_for",
    "position_dtype",
]

#: Longest chain of additions into one accumulator (``K``) for any layout; means are within ``(K + P + 1) u``.
MAX_CHAIN_LENGTH = 128
#: Most lanes per superpixel (``P``), and the most lane slots per image row (their buffer stays small).
MAX_LANES, MAX_LANE_SLOTS = 4, 8192
#: Pixels whose layout is built at once on the CPU (temporaries of about 16 bytes per pixel: 64 MB).
BUILD_BLOCK_PIXELS = 2**22
#: Superpixels smaller than this on average get one lane (their chains are short anyway).
MIN_MEAN_SIZE_FOR_LANES = 32
#: Positions and slot numbers are built in int32 while they all stay below this (``2**31``), else in int64.
POSITION_LIMIT = 2**31


def _known_below(value: int | torch.SymInt, limit: int) -> bool:
    """``value < limit``; for a symbolic size, only if it holds for every value of its range.

    A symbolic size (a dynamic batch under ``torch.compile`` or ``torch.export``) is never guarded on: a guard
    would constrain the batch (an export with an unbounded ``Dim`` fails), so unknown means "no". (Dynamo
    sees a symbolic size as an ``int``: the test is whether a graph is being traced.)
    """
    if not torch.compiler.is_compiling():
        return bool(value < limit)
    # (loaded already wherever a graph is traced: the import costs nothing there, and nothing in eager mode)
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return statically_known_true(value < limit)


def position_dtype(
    rows: int | torch.SymInt, num_space: int, num_pixels: int | torch.SymInt, lanes: int, chain: int
) -> torch.dtype:
    """The dtype of the positions and slots of ``R = rows`` images built at once: int32 if exact, else int64.

    The values are flat positions into the ``[R, S]`` tables (below ``R * S``), ranks and positions in an
    image (at most ``N``; a superpixel's size plus ``K - 1`` in its count of accumulators) and slot numbers
    (below ``S * P + 1 + N // K``; the ids of a non-compact layout are below ``S``). int32 (faster cumsums and
    gathers) is used when ``R * S``, ``S * P + 1 + N // K`` and ``N + K - 1`` are all below
    :data:`POSITION_LIMIT`; int64 otherwise, and also when that is not known for every value of a symbolic
    size (nothing is guarded on).
    """
    limit = POSITION_LIMIT
    fits = (
        _known_below(rows * num_space, limit)
        and _known_below(num_space * lanes + 1 + num_pixels // chain, limit)
        and _known_below(num_pixels + chain - 1, limit)
    )
    return torch.int32 if fits else torch.int64


def lanes_for(num_pixels: int, num_space: int) -> int:
    """``P``: 1 below 32 pixels per superpixel on average, else 4 (or 2, 1) while ``N_s * P <= 8192``.

    Small superpixels give short dependency chains anyway, and one lane keeps the buffer at one slot per
    superpixel when ``N_s`` is large (at ``N_s = 4096`` on 512 x 512, 2 lanes instead of 4 kept the peak extra
    memory near the ``x * 1`` floor at the same speed).
    """
    if num_pixels < MIN_MEAN_SIZE_FOR_LANES * max(num_space, 1):
        return 1
    lanes = MAX_LANES
    while lanes > 1 and num_space * lanes > MAX_LANE_SLOTS:
        lanes //= 2
    return lanes


class Layout(NamedTuple):
    """Index tensors of one label map (``N = H * W``, ``S = num_space``, ``P = lanes``).

    Attributes:
        space (LongTensor[B, 1, N]): every pixel's superpixel slot in ``[0, S)`` (its id, or its compact id).
        slot (LongTensor[B, 1, N]): every pixel's accumulator: a lane ``s * P + j``, or an extra slot
            ``S * P + 1 + e`` (``S * P`` is the trash slot of masked pixels).
        extra_group (LongTensor[B, 1, E]): the group of every extra slot (unused extra slots: group 0; they
            stay 0).
        group_owner (LongTensor[B, 1, G]): the superpixel of every group; distinct within an image.
        sizes (LongTensor[B, S]): pixels per superpixel (all pixels, masked ones included).
        lanes (int): ``P``.
    """

    space: Tensor
    slot: Tensor
    extra_group: Tensor
    group_owner: Tensor
    sizes: Tensor
    lanes: int


#: The fewest keys a 1-D integer ``torch.sort`` on the CPU hands to PyTorch's radix sort (its
#: ``at::internal::GRAIN_SIZE``; below, and for a 2-D tensor sorted along dim 1, a comparison sort runs).
RADIX_SORT_MIN = 32768


def _functorch_transforms_active() -> bool:
    """Whether a ``torch.func`` transform (vmap, grad, jvp, ...) runs (a private API, read defensively)."""
    active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active()) if active is not None else False


def sort_rows(keys: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.sort(keys, dim=1, stable=True)`` of integer ``keys[R, N]``: the same values and order, faster
    on the CPU.

    PyTorch sorts a 1-D integer tensor of at least :data:`RADIX_SORT_MIN` keys on the CPU with a stable,
    multithreaded radix sort, but a 2-D one along dim 1 with a comparison sort per row: on the 2-core AMD EPYC
    VM of family 26 (2 threads), ``[4, 262144]`` int32 keys took 26.7 ms along dim 1 and 5.5 ms row by row
    (``[1, 262144]``: 13.4 against 0.66 ms). So rows of at least that many keys are sorted one by one, and a
    batch of shorter rows with that many keys in all (two images of 128 x 128 pixels) in two stable passes
    over the flat batch, by key and then by row, which compares the keys only (exact for any value). Elsewhere
    (another device, floating keys, fewer keys, under ``torch.compile`` or a ``torch.func`` transform) it is
    the 2-D sort itself.
    """
    # (the tracing tests first: a test of a symbolic size would guard on it, and constrain a dynamic batch)
    if torch.compiler.is_compiling() or torch.compiler.is_exporting() or _functorch_transforms_active():
        return torch.sort(keys, dim=1, stable=True)
    rows, n = keys.shape
    if (
        keys.device.type != "cpu"
        or keys.is_floating_point()
        or keys.dtype == torch.bool
        or rows * n < RADIX_SORT_MIN
        or rows * n > 2**31 - 1  # (the radix sort's own bound)
    ):
        return torch.sort(keys, dim=1, stable=True)
    if n >= RADIX_SORT_MIN:
        values = torch.empty_like(keys)
        order = torch.empty(rows, n, dtype=torch.long, device=keys.device)
        for r in range(rows):
            torch.sort(keys[r], stable=True, out=(values[r], order[r]))
        return values, order
    flat_values, flat_order = torch.sort(keys.reshape(-1), stable=True)
    _, by_row = torch.sort(torch.div(flat_order, n, rounding_mode="floor"), stable=True)
    first = torch.arange(0, rows * n, n, device=keys.device).view(rows, 1)  # each row's first flat index
    return flat_values[by_row].view(rows, n), flat_order[by_row].view(rows, n) - first


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
    values, order = sort_rows(index)
    ranks_sorted = torch.cumsum(_segment_starts(values), dim=1) - 1
    ranks = torch.empty_like(index).scatter_(1, order, ranks_sorted)
    return ranks, ranks_sorted[:, -1] + 1


def _accumulators(sizes: Tensor, chain: int, lanes: int) -> Tensor:
    """``m_s = max(P, ceil(n_s / K))`` accumulators per superpixel (0 for an empty one)."""
    needed = torch.div(sizes + (chain - 1), chain, rounding_mode="floor")
    return torch.where(sizes > 0, needed.clamp_min(lanes), 0)


def _rows_slots(
    index: Tensor,
    space: Tensor,
    slot: Tensor,
    sizes: Tensor,
    *,
    compact: bool,
    chain: int,
    lanes: int,
    narrow: bool,
) -> None:
    """Fill ``space``, ``slot`` and ``sizes`` (``[R, N]``, ``[R, N]``, ``[R, S]``) of ``R`` images in place.

    ``narrow``: the ids fit in int32 (32-bit keys sort faster). The positions and slots are computed in the
    dtype of ``sizes`` (:func:`position_dtype`: int32 only where every value fits).
    """
    rows, n = index.shape
    num_space = sizes.shape[1]
    dtype = sizes.dtype
    # flat positions into the [R, S] per-superpixel tables (int32 only where R * S fits: position_dtype)
    row_offset = (torch.arange(rows, dtype=dtype, device=index.device) * num_space).view(rows, 1)
    keys = index.to(torch.int32) if narrow else index
    values, order = sort_rows(keys)
    del keys
    if compact:
        space_sorted = torch.cumsum(_segment_starts(values), dim=1, dtype=dtype).sub_(1)
        space.copy_(torch.empty_like(space_sorted).scatter_(1, order, space_sorted))
    else:
        space_sorted = values.to(dtype)
    del values
    sizes.scatter_add_(1, space, torch.ones(1, 1, dtype=dtype, device=index.device).expand(rows, n))
    accumulators = _accumulators(sizes, chain, lanes)
    extras = (accumulators - lanes).clamp_min(0)
    flat = (space_sorted + row_offset).view(-1)
    # the rank of every (sorted) pixel among its superpixel's pixels, raster order: position - first position
    rank = (torch.cumsum(sizes, dim=1, dtype=dtype) - sizes).view(-1).index_select(0, flat).neg_()
    rank += torch.arange(n, dtype=dtype, device=index.device).repeat(rows)
    lane = rank.remainder_(accumulators.view(-1).index_select(0, flat))  # in place: the pixel's accumulator
    # the extra slot S * P + 1 + e of the pixels with lane >= P, the lane s * P + lane of the others
    slot_sorted = (torch.cumsum(extras, dim=1, dtype=dtype) - extras).view(-1).index_select(0, flat)
    slot_sorted.add_(lane).add_(num_space * lanes + 1 - lanes)
    torch.where(lane < lanes, space_sorted.view(-1) * lanes + lane, slot_sorted, out=slot_sorted)
    del lane, rank, space_sorted, flat
    slot_sorted = slot_sorted.view(rows, n)
    slot.copy_(torch.empty_like(slot_sorted).scatter_(1, order, slot_sorted))


def build_layout(
    index: Tensor, num_ids: int, *, compact: bool, chain: int | None = None, lanes: int | None = None
) -> tuple[Layout, int]:
    """The accumulator layout of ``index[B, N]`` (ids in ``[0, num_ids)``) and its superpixel count ``S``.

    With ``compact`` the superpixels are the distinct ids of each image, in order (``S = min(num_ids, N)``);
    otherwise superpixel ``s`` is id ``s`` (``S = num_ids``) and ``index`` itself becomes ``Layout.space``.
    """
    b, n = index.shape
    device = index.device
    num_space = min(num_ids, n) if compact else num_ids
    chain = MAX_CHAIN_LENGTH if chain is None else chain
    lanes = lanes_for(n, num_space) if lanes is None else lanes
    if n == 0 or b == 0:
        empty = index.new_zeros(b, 1, 0)
        flat = index.view(b, 1, n)
        return Layout(flat, flat * lanes, empty, empty, index.new_zeros(b, num_space), lanes), num_space
    num_extra = n // chain  # sum of (m_s - P) over superpixels of more than P K pixels: at most N // K
    num_groups = min(num_space, n // (lanes * chain + 1))  # superpixels with extras have more than P K pixels
    if num_groups == 0:
        num_extra = 0
    slot = torch.empty_like(index)
    space = torch.empty_like(index) if compact else index
    # a block of images at a time: the sort runs in parallel over the block's rows and fewer, larger kernels
    # run (4 images at once took 0.41x the time of one at a time on 2 CPU threads); the temporaries, about
    # 16 bytes per pixel of a block, stay bounded by BUILD_BLOCK_PIXELS (the whole batch on an accelerator or
    # under torch.compile, where get_num_threads() does not trace)
    # (a single block is not sliced: slicing would specialize a symbolic batch size under torch.export)
    if device.type != "cpu" or torch.compiler.is_compiling():
        rows, block_rows = [slice(None)], b
    else:
        block = max(1, torch.get_num_threads(), BUILD_BLOCK_PIXELS // max(n, 1))
        rows, block_rows = [slice(start, start + block) for start in range(0, b, block)], min(block, b)
    dtype = position_dtype(block_rows, num_space, n, lanes, chain)
    sizes = torch.zeros(b, num_space, dtype=dtype, device=device)
    for row in rows:
        _rows_slots(
            index[row],
            space[row],
            slot[row],
            sizes[row],
            compact=compact,
            chain=chain,
            lanes=lanes,
            narrow=num_ids < 2**31,
        )
    extras = (_accumulators(sizes, chain, lanes) - lanes).clamp_min(0)
    extras_end = torch.cumsum(extras, dim=1, dtype=dtype)

    # groups: the superpixels with extras first (group = their rank), then the others, so that the owners of
    # unused groups are distinct superpixels whose extra sum is 0 (adding it changes nothing)
    has_extras = extras > 0
    big_rank = torch.cumsum(has_extras, dim=1) - 1
    position = torch.where(has_extras, big_rank, big_rank[:, -1:] + torch.cumsum(~has_extras, dim=1))
    owners = torch.arange(num_space, device=device).expand(b, num_space)
    group_owner = torch.empty_like(owners).scatter_(1, position, owners)[:, :num_groups]
    group_of = torch.cat([big_rank.clamp_min(0), big_rank.new_zeros(b, 1)], dim=1)  # unused extras -> group 0
    extra_position = torch.arange(num_extra, dtype=dtype, device=device).expand(b, num_extra)
    extra_owner = torch.searchsorted(extras_end, extra_position.contiguous(), right=True)
    extra_group = torch.gather(group_of, 1, extra_owner)
    layout = Layout(
        space.view(b, 1, n),
        slot.view(b, 1, n),
        extra_group.view(b, 1, num_extra),
        group_owner.reshape(b, 1, num_groups),
        sizes.long(),
        lanes,
    )
    return layout, num_space
