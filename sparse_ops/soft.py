r"""Soft superpixel pooling and unpooling over a 9-neighbour grid association (SpixelFCN, Yang et al. 2020).

A pixel ``p`` in grid cell ``g(p)`` has a soft membership ``q_k(p)`` in the 9 cells ``g(p) + d_k``,
``d_k = (dy, dx)`` in the documented neighbour order (see :mod:`sparse_ops.grid`). Pooling forms the
superpixel centres as association-weighted means, unpooling reconstructs every pixel from the centres
of its 9 candidates:

.. math::

    c_s = \frac{\sum_{p:\, s \in N(p)} \hat q_s(p)\, f(p)}{\sum_{p:\, s \in N(p)} \hat q_s(p)}, \qquad
    f'(p) = \sum_{s \in N(p)} \hat q_s(p)\, c_s .

**Argument order.** The soft ops follow the convention of the hard ones, ``op(data, superpixels,
num_superpixels, *, mask, <options>, validate)`` (the data named ``logits`` or ``features``), with the
association ``assoc`` in the place of the label map and ``cell_size`` (which fixes the grid, hence the number
of superpixels) in the place of ``num_superpixels``.

**Border convention.** Candidates outside the image (around the border, including next to partial border
cells) get zero weight. By default (``renormalize=True``) the remaining weights of each pixel are rescaled to
sum to 1, :math:`\hat q_k(p) = m_k(p) q_k(p) / \sum_j m_j(p) q_j(p)` with the validity mask ``m``, so that
``soft_superpixel_unpool(soft_superpixel_pool(ones))`` is ``ones`` up to rounding (a few units of roundoff,
not bit for bit) for any non-negative association that gives every pixel some valid mass (and
:func:`~sparse_ops.soft_uniformize` is a convex combination). With ``renormalize=False`` the invalid mass is
simply dropped (the behaviour of the public SpixelFCN code, whose shifts pad with zeros); ones then round-trip
when every row of ``assoc`` sums to 1 over its valid candidates. A pixel whose valid mass is 0 contributes
nothing and is reconstructed as 0 (whatever the features); a cell that receives no mass has centre 0. A
``mask`` leaves pixels out of the pooling (their weights count as 0 there); they are still reconstructed. The
products multiply every feature by all 9 weights of its pixel, so an infinite feature also reaches the cells
its pixel has weight 0 for, as NaN (IEEE :math:`0 \cdot \infty`); mask such pixels out to keep the other cells
finite. A NaN weight (``validate=False``) makes the centres it weighs on NaN (not "no mass": never hidden).

**Implementation.** Exact dense block formulation: the image is cut into its ``n_h x n_w`` cells (one block of
the whole image side when the cell is larger than it; partial border cells are zero-padded to whole ones,
so the blocks hold at most about 4 times the image's pixels for any ``cell_size``), and for every
cell small matrix products ``[C, P] x [P, 9]`` (pool) or ``[C, 9] x [9, P]`` (unpool) are batched over the
grid; the 9 per-direction cell sums are then shifted onto their target cells. Each product accumulates at most
:data:`CHUNK` pixels; the chunk sums of a cell are added in float32 when there are at most 4 of them
(``FLOAT32_CHUNK_SUMS``) and in float64 beyond, and the mass (the denominator) alike, so every centre is
within about :math:`2 \cdot 74\, u \max|f|` of the exact one (:math:`\approx 9 \cdot 10^{-6} \max|f|` in
float32; the derivation is in :doc:`/concepts/uniformization`) where its weights are normal floats (a centre
whose weights are all subnormal, below ``torch.finfo(torch.float32).tiny``, has its products rounded to the
subnormal grid: errors of 5e-4 to 1.2e-3 of ``max|f|`` were seen; nor with TF32 products on CUDA, see
:doc:`/concepts/soft_association`). float16/bfloat16 inputs are computed in float32 and rounded once, also
under ``torch.autocast``. That holds for the backward when ``backward()`` is called outside the autocast
region, as PyTorch advises; called inside it, autograd runs the backward's products in the autocast dtype
(bfloat16: gradients 5e-3 to 8e-3 off, relative, against 2e-7).
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, NamedTuple, SupportsIndex

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_ops import _checks, _float64
from sparse_ops.grid import grid_shape, neighbour_validity

__all__ = [
    "CHUNK",
    "SoftUniformize",
    "normalize_assoc",
    "soft_superpixel_pool",
    "soft_superpixel_unpool",
    "soft_uniformize",
]

#: Most pixels one float32 matrix-product accumulation of :func:`~sparse_ops.soft_superpixel_pool` adds up.
CHUNK = 64
#: Up to this many chunk sums of a cell are added in float32 (a short chain); more are added in float64.
FLOAT32_CHUNK_SUMS = 4


def normalize_assoc(
    assoc: Tensor, cell_size: SupportsIndex, *, renormalize: bool = True, validate: bool = True
) -> Tensor:
    r"""Apply the border convention to an association map.

    Out-of-image candidates get zero weight; with ``renormalize`` the valid weights of each pixel are rescaled
    to sum to 1 (pixels with no valid mass keep all-zero weights). The rescaling does not depend on the scale
    of a pixel's weights: weights near the largest finite value (scaled by a power of two before their sum,
    which would overflow) or subnormal ones give the weights of the same row scaled by a power of two (bit for
    bit; a weight that the scale takes among the subnormal numbers, under about ``2**-126`` of its row's
    largest in float32, loses its last bits there and can come out one subnormal step off the plain quotient).

    Args:
        assoc (Tensor[B, 9, H, W]): non-negative, finite association (e.g. a softmax over dim 1).
        cell_size (int): grid cell side in pixels.
        renormalize (bool): rescale the valid weights to sum to 1.
        validate (bool): check that ``assoc`` is non-negative and finite (a host-device synchronisation);
            types, shapes and devices are always checked.

    Returns:
        Tensor[B, 9, H, W]: the effective weights :math:`\hat q` used by pooling and unpooling.

    Example:
        >>> q = normalize_assoc(torch.full((1, 9, 2, 2), 1 / 9), 2)
        >>> q[0, :, 0, 0]  # a single cell: only the centre candidate exists
        tensor([0., 0., 0., 0., 1., 0., 0., 0., 0.])
    """
    validate = _checks.check_bool(validate, "validate")
    _checks.check_assoc(assoc)
    cell_size = _checks.check_int(cell_size, "cell_size", 1)
    if validate:
        _checks.check_assoc_values(assoc)
    dtype, compute = _compute_dtype(assoc)
    return _normalized(assoc.to(compute), cell_size, renormalize).to(dtype)


def _normalized(assoc: Tensor, cell_size: int, renormalize: bool) -> Tensor:
    renormalize = _checks.check_bool(renormalize, "renormalize")  # every op that takes it comes here once
    height, width = assoc.shape[-2:]
    valid = neighbour_validity(height, width, cell_size, device=assoc.device)
    # a where, not a product: an out-of-image NaN (validate=False) gets zero weight too (0 * NaN is NaN)
    q = torch.where(valid.to(torch.bool), assoc, 0.0)
    if renormalize:
        q = q * _weight_scale(q)
        total = q.sum(dim=1, keepdim=True)
        # only a row without mass (0) is divided by 1: a NaN weight makes the whole row NaN, as the formula
        # says (a "total > 0" test took NaN for no mass and left the other 8 weights unnormalized)
        q = q / torch.where(total == 0, torch.ones_like(total), total)
    return q


def _weight_scale(q: Tensor) -> Tensor:
    """``[B, 1, H, W]`` powers of two for the pixels of ``q[B, 9, H, W]`` whose sum of weights could overflow
    (a largest weight from ``2**(e - 3)`` on, with ``2**e`` the dtype's largest power of two: ``2**124`` in
    float32), bringing it near 1 (:func:`_power_of_two_scale`); 1 for every other pixel.

    Renormalization divides by the sum of the 9 weights, which overflowed to ``inf`` for weights near the
    largest finite value (every weight then became 0: the pixel was silently left out). A power of two scales
    exactly, except where it makes a subnormal: a scale below 1 on a row that cannot overflow rounded its tiny
    weights twice (one subnormal step off the plain quotient), so such rows keep the plain quotient, bit for
    bit. Nine weights below ``2**(e - 3)`` sum below ``1.125 * 2**e``, a finite value: no overflow.
    """
    largest = q.detach().amax(dim=1, keepdim=True)  # no graph: nothing saved for it
    return torch.where(largest >= 2.0 ** (_max_exponent(q.dtype) - 3), _power_of_two_scale(largest), 1.0)


def _max_exponent(dtype: torch.dtype) -> int:
    """``e`` of the dtype's largest power of two ``2**e`` (127 in float32); ``2**-e`` is finite too."""
    return math.frexp(torch.finfo(dtype).max)[1] - 1


def _power_of_two_scale(largest: Tensor) -> Tensor:
    """Powers of two ``2**-e`` that bring the non-negative ``largest`` into ``[2**-0.5, 2**0.5]``, ``e``
    clamped so that both ``2**e`` and ``2**-e`` are finite in the dtype; 1 where ``largest`` is 0 or NaN.

    Not differentiated: a scale that cancels (a quotient, a norm divided by it again) changes no value.
    """
    with torch.no_grad():
        limit = _max_exponent(largest.dtype)
        exponent = torch.where(largest > 0, largest, torch.ones_like(largest)).log2().round()
        return torch.exp2(-exponent.clamp(-limit, limit))


class _Blocks(NamedTuple):
    """Cells as blocks of ``bh x bw`` pixels, zero-padded to ``ph x pw`` and cut into chunks of ``rh x cw``.

    The padding (``ph - bh < rh`` rows and ``pw - bw < cw`` columns per block, weight 0) is there only for
    sides without a divisor of a useful size (a prime cell side such as 67 would otherwise give one-pixel
    chunks: 9 ``C`` products and partial sums per pixel instead of per 64 pixels).
    """

    n_h: int
    n_w: int
    bh: int
    bw: int
    rh: int
    cw: int
    ph: int
    pw: int

    @property
    def chunks(self) -> int:
        return (self.ph // self.rh) * (self.pw // self.cw)


def _largest_divisor(n: int, limit: int) -> int:
    return next(d for d in range(min(n, limit), 0, -1) if n % d == 0)


def _chunk_side(n: int, limit: int) -> int:
    """The chunk side along a block side of ``n`` pixels, at most ``limit``: the largest divisor of ``n``
    when it is at least a quarter of the limit (no padding), else the most even split of ``n`` into the
    fewest pieces of at most ``limit`` (the block is then padded to a multiple of it; a side ``n <= limit``
    is one piece, ``n`` itself)."""
    divisor = _largest_divisor(n, limit)
    if 4 * divisor >= limit:
        return divisor
    pieces = -(-n // limit)
    return -(-n // pieces)


def _blocks(height: int, width: int, cell_size: int) -> _Blocks:
    """The blocks and chunks of a grid.

    A block is a cell, or the whole image side when one cell covers it (so a block never exceeds the image:
    with the zero-padding of partial border cells, the blocks hold at most about 4 times the image's pixels,
    4.05 times in the worst case of the square images up to 700 pixels); a chunk is a run of whole rows (or
    of a row) of a block with <= :data:`CHUNK` pixels, of at least
    a quarter of that where the block allows it (see :func:`_chunk_side`).
    """
    n_h, n_w = grid_shape(height, width, cell_size)
    bh, bw = cell_size if n_h > 1 else height, cell_size if n_w > 1 else width
    cw = _chunk_side(bw, CHUNK)
    rh = _chunk_side(bh, max(1, CHUNK // cw))
    return _Blocks(n_h, n_w, bh, bw, rh, cw, -(-bh // rh) * rh, -(-bw // cw) * cw)


def _pixel_chunks(blocks: _Blocks, height: int, width: int, device: torch.device) -> Tensor:
    """The chunk of every pixel, ``[H, W]``: ``cell * blocks.chunks + k`` (cell id row-major, ``k`` the
    chunk within the cell in :func:`_to_blocks` order), so ``chunk // blocks.chunks`` is the pixel's cell.
    """
    _, n_w, bh, bw, rh, cw, _, pw = blocks
    per_row = pw // cw
    y = torch.arange(height, device=device)
    x = torch.arange(width, device=device)
    rows = (y // bh) * (n_w * blocks.chunks) + ((y % bh) // rh) * per_row
    cols = (x // bw) * blocks.chunks + (x % bw) // cw
    return rows[:, None] + cols[None, :]


def _to_blocks(x: Tensor, blocks: _Blocks) -> Tensor:
    """[B, C, H, W] -> [B, n_h, n_w, K, C, P] (K chunks of P pixels per cell; zero-padded to whole cells, and
    every cell to whole chunks where ``blocks`` pads them)."""
    n_h, n_w, bh, bw, rh, cw, ph, pw = blocks
    b, c, height, width = x.shape
    pad_h, pad_w = n_h * bh - height, n_w * bw - width
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    if (ph, pw) != (bh, bw):  # pad every block to whole chunks
        x = F.pad(x.reshape(b, c, n_h, bh, n_w, bw), (0, pw - bw, 0, 0, 0, ph - bh))
    x = x.reshape(b, c, n_h, ph // rh, rh, n_w, pw // cw, cw).permute(0, 2, 5, 3, 6, 1, 4, 7)
    return x.reshape(b, n_h, n_w, blocks.chunks, c, rh * cw)


def _from_blocks(x: Tensor, blocks: _Blocks, height: int, width: int) -> Tensor:
    """[B, n_h, n_w, K, C, P] -> [B, C, H, W] (cropping the padding)."""
    n_h, n_w, bh, bw, rh, cw, ph, pw = blocks
    b, c = x.shape[0], x.shape[4]
    x = x.reshape(b, n_h, n_w, ph // rh, pw // cw, c, rh, cw).permute(0, 5, 1, 3, 6, 2, 4, 7)
    if (ph, pw) != (bh, bw):
        x = x.reshape(b, c, n_h, ph, n_w, pw)[:, :, :, :bh, :, :bw]
    return x.reshape(b, c, n_h * bh, n_w * bw)[:, :, :height, :width]


def _shift_to_targets(per_dir: Tensor) -> Tensor:
    """[B, C, 9, n_h, n_w] sums of cell (i, j) for direction k -> [B, C, n_h, n_w] totals of cell (i+dy,
    j+dx).

    This is exactly ``F.fold`` with a 3 x 3 kernel and padding 1 (contributions leaving the grid are dropped).
    """
    b, c, _, n_h, n_w = per_dir.shape
    if c == 0:  # F.fold refuses zero channels: the empty result, still in the autograd graph
        return per_dir.sum(dim=2)
    return F.fold(per_dir.reshape(b, c * 9, n_h * n_w), (n_h, n_w), kernel_size=3, padding=1)


def _gather_from_neighbours(centres: Tensor) -> Tensor:
    """[B, C, n_h, n_w] -> [B, n_h, n_w, C, 9]: the centre of cell (i+dy, j+dx) (0 outside), ``F.unfold``."""
    b, c, n_h, n_w = centres.shape
    if c == 0:  # F.unfold refuses zero channels: the empty result, still in the autograd graph
        return centres.unsqueeze(-1).expand(b, c, n_h, n_w, 9).permute(0, 2, 3, 1, 4)
    neighbours = F.unfold(centres, kernel_size=3, padding=1).reshape(b, c, 9, n_h, n_w)
    return neighbours.permute(0, 3, 4, 1, 2)


def _pool_blocks(fb: Tensor, qb: Tensor, dtype: torch.dtype) -> Tensor:
    """Feature and weight chunks ``[B, n_h, n_w, K, C | 9, P]`` -> centres ``[B, C, n_h, n_w]`` in ``dtype``.

    Every product sums one chunk (at most :data:`CHUNK` pixels); the K chunk sums are added in float32 when
    ``K <= FLOAT32_CHUNK_SUMS``, else in float64 (on the host for a device without float64, with the steps
    after them: the shift onto the target cells and the division).
    """
    num = torch.matmul(fb, qb.transpose(-1, -2))  # [B, n_h, n_w, K, C, 9]
    mass = qb.sum(dim=-1).unsqueeze(-2)  # [B, n_h, n_w, K, 1, 9]
    chunks = num.shape[3]
    device = num.device
    on_host = chunks > FLOAT32_CHUNK_SUMS and not _float64.has_float64(device)
    if on_host:  # no float64 on the device: the float64 steps below run on the host (9 values per chunk)
        num, mass = _float64.to_host(num), _float64.to_host(mass)
    if chunks > FLOAT32_CHUNK_SUMS:  # a long chain: add the chunk sums in float64
        num, mass = num.double(), mass.double()
    if chunks > 1:
        num, mass = num.sum(dim=3), mass.sum(dim=3)
    else:
        num, mass = num[:, :, :, 0], mass[:, :, :, 0]
    num = _shift_to_targets(num.permute(0, 3, 4, 1, 2))
    mass = _shift_to_targets(mass.permute(0, 3, 4, 1, 2))
    centres = _centres(num, mass).to(dtype)
    return _float64.to_device(centres, device) if on_host else centres


def _centres(num: Tensor, mass: Tensor) -> Tensor:
    """``num / mass`` (broadcast), 0 for a cell without mass (``mass <= 0``); a NaN mass (a NaN weight,
    unvalidated) is not "no mass": a NaN centre, never hidden."""
    empty = mass <= 0
    safe = torch.where(empty, torch.ones_like(mass), mass)
    return torch.where(empty, torch.zeros_like(num), num / safe)


def _unpool_blocks(centres: Tensor, qb: Tensor, blocks: _Blocks, size: tuple[int, int]) -> Tensor:
    neighbours = _gather_from_neighbours(centres).unsqueeze(3)  # [B, n_h, n_w, 1, C, 9]
    return _from_blocks(torch.matmul(neighbours, qb), blocks, *size)


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Autocast disabled on ``device`` (the accumulation dtype is chosen explicitly); nothing on the meta
    device, which has no autocast (``torch.autocast`` raises there) and nothing to disable. (A device-type
    test, not ``torch.amp.is_autocast_available``: torch 2.11's compiler cannot trace that call.)"""
    if device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def _compute_dtype(*tensors: Tensor) -> tuple[torch.dtype, torch.dtype]:
    """(output dtype, accumulation dtype): the promoted dtype, computed in float32 if it is a half type."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype, torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_pool_inputs(
    features: Tensor, name: str, assoc: Tensor, cell_size: object, mask: Tensor | None, values: bool
) -> tuple[int, Tensor | None]:
    """The checked ``cell_size`` and ``mask`` (``[B, H, W]``); ``values``: also the association's values."""
    _checks.check_floating(features, name, "[B, C, H, W]")
    _checks.check_assoc(assoc)
    cell = _checks.check_int(cell_size, "cell_size", 1)
    if features.shape[0] != assoc.shape[0] or features.shape[-2:] != assoc.shape[-2:]:
        raise ValueError(
            f"{name} and assoc must agree in batch size and spatial size: {name} has shape "
            f"{tuple(features.shape)}, assoc has shape {tuple(assoc.shape)}"
        )
    _checks.check_same_device(features, name, assoc, "assoc")
    if mask is not None:
        mask = _checks.check_mask(mask, assoc[:, 0], "assoc")
    if values:
        _checks.check_assoc_values(assoc)
    return cell, mask


def _pool(features: Tensor, q: Tensor, cell_size: int, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """(centres, weight blocks) from features and normalized weights, both in the accumulation dtype."""
    blocks = _blocks(q.shape[-2], q.shape[-1], cell_size)
    qb = _to_blocks(q, blocks)
    if mask is None:
        return _pool_blocks(_to_blocks(features, blocks), qb, features.dtype), qb
    # left out exactly: a NaN at an uncounted pixel does not reach any centre
    counted = _checks.savable(mask, features, q)[:, None]
    pool_q = _to_blocks(torch.where(counted, q, 0.0), blocks)
    fb = _to_blocks(torch.where(counted, features, 0.0), blocks)
    return _pool_blocks(fb, pool_q, features.dtype), qb


def soft_superpixel_pool(
    features: Tensor,
    assoc: Tensor,
    cell_size: SupportsIndex,
    *,
    mask: Tensor | None = None,
    renormalize: bool = True,
    validate: bool = True,
) -> Tensor:
    """Soft superpixel centres: association-weighted means of the features (SpixelFCN's pooling).

    Args:
        features (Tensor[B, C, H, W]): per-pixel features.
        assoc (Tensor[B, 9, H, W]): non-negative, finite association of every pixel with its 9 candidate cells
            (neighbour order TL, T, TR, L, C, R, BL, B, BR).
        cell_size (int): grid cell side ``S`` in pixels; ``H`` and ``W`` need not be multiples of it.
        mask (BoolTensor[B, H, W] | None): pixels that take part (``True``); ``None``: all.
        renormalize (bool): border convention (see the module docstring).
        validate (bool): check that ``assoc`` is non-negative and finite (a host-device synchronisation);
            types, shapes and devices are always checked.

    Returns:
        Tensor[B, C, n_h, n_w]: centre features, ``n_h = ceil(H / S)``, ``n_w = ceil(W / S)``; 0 for a cell
        that receives no association mass. The dtype promoted from ``features`` and ``assoc``.

    Example:
        >>> f = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> hard = torch.zeros(1, 9, 4, 4); hard[:, 4] = 1  # every pixel fully in its own cell
        >>> soft_superpixel_pool(f, hard, 2)
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """
    validate = _checks.check_bool(validate, "validate")
    cell_size, mask = _check_pool_inputs(features, "features", assoc, cell_size, mask, validate)
    dtype, compute = _compute_dtype(features, assoc)
    with _no_autocast(features.device):
        q = _normalized(assoc.to(compute), cell_size, renormalize)
        centres, _ = _pool(features.to(compute), q, cell_size, mask)
    return centres.to(dtype)


def soft_superpixel_unpool(
    centres: Tensor,
    assoc: Tensor,
    cell_size: SupportsIndex,
    *,
    renormalize: bool = True,
    validate: bool = True,
) -> Tensor:
    r"""Reconstruct every pixel's features from the centres of its 9 candidate cells (SpixelFCN's unpooling).

    Like :func:`superpixel_unpool`, it has no ``mask``: every pixel is reconstructed.

    Args:
        centres (Tensor[B, C, n_h, n_w]): superpixel features on the grid of ``assoc``.
        assoc (Tensor[B, 9, H, W]): non-negative, finite association (neighbour order TL, T, TR, L, C, R,
            BL, B, BR).
        cell_size (int): grid cell side in pixels.
        renormalize (bool): border convention (see the module docstring).
        validate (bool): check that ``assoc`` is non-negative and finite (a host-device synchronisation);
            types, shapes and devices are always checked.

    Returns:
        Tensor[B, C, H, W]: :math:`f'(p) = \sum_k \hat q_k(p)\, c_{g(p) + d_k}`, in the dtype promoted from
        ``centres`` and ``assoc``.

    Example:
        >>> c = torch.tensor([[[[1.0, 2.0]]]])  # a 1 x 2 grid
        >>> q = torch.zeros(1, 9, 2, 4); q[:, 4] = 0.5; q[:, 5] = 0.5  # half own cell, half right neighbour
        >>> soft_superpixel_unpool(c, q, 2)  # the right column has no right neighbour: renormalized to C
        tensor([[[[1.5000, 1.5000, 2.0000, 2.0000],
                  [1.5000, 1.5000, 2.0000, 2.0000]]]])
    """
    validate = _checks.check_bool(validate, "validate")
    _checks.check_floating(centres, "centres", "[B, C, n_h, n_w]")
    _checks.check_assoc(assoc)
    cell_size = _checks.check_int(cell_size, "cell_size", 1)
    n_h, n_w = grid_shape(assoc.shape[-2], assoc.shape[-1], cell_size)
    b = assoc.shape[0]
    if centres.shape[0] != b or tuple(centres.shape[-2:]) != (n_h, n_w):
        raise ValueError(
            f"centres must have shape [B={b}, C, n_h={n_h}, n_w={n_w}] for assoc of shape "
            f"{tuple(assoc.shape)} and cell_size={cell_size}, got shape {tuple(centres.shape)}"
        )
    _checks.check_same_device(centres, "centres", assoc, "assoc")
    if validate:
        _checks.check_assoc_values(assoc)
    height, width = assoc.shape[-2:]
    dtype, compute = _compute_dtype(centres, assoc)
    with _no_autocast(centres.device):
        q = _normalized(assoc.to(compute), cell_size, renormalize)
        blocks = _blocks(height, width, cell_size)
        out = _unpool_blocks(centres.to(compute), _to_blocks(q, blocks), blocks, (height, width))
    return out.to(dtype)


def soft_uniformize(
    logits: Tensor,
    assoc: Tensor,
    cell_size: SupportsIndex,
    *,
    mask: Tensor | None = None,
    renormalize: bool = True,
    validate: bool = True,
) -> Tensor:
    """Differentiable soft counterpart of hard uniformization: ``unpool(pool(logits))``.

    Gradients reach both ``logits`` and ``assoc``, so a segmentation loss on the result can train the
    superpixel network end to end. Memory is proportional to the pixels for every ``cell_size``.

    Args:
        logits (Tensor[B, C, H, W]): per-pixel scores (or any features).
        assoc (Tensor[B, 9, H, W]): non-negative, finite association (neighbour order TL, T, TR, L, C, R,
            BL, B, BR).
        cell_size (int): grid cell side in pixels.
        mask (BoolTensor[B, H, W] | None): pixels that count in the centres; all pixels are reconstructed.
        renormalize (bool): border convention (see the module docstring).
        validate (bool): check that ``assoc`` is non-negative and finite (a host-device synchronisation);
            types, shapes and devices are always checked.

    Returns:
        Tensor[B, C, H, W]: the smoothed logits, in the dtype promoted from ``logits`` and ``assoc``
        (float32 for bfloat16 logits with a float32 association, as softmax under autocast gives it; the
        hard :func:`~sparse_ops.uniformize` keeps its ``x``'s dtype).

    Example:
        >>> x = torch.randn(2, 3, 5, 7)
        >>> q = torch.softmax(torch.randn(2, 9, 5, 7), dim=1)
        >>> torch.allclose(soft_uniformize(torch.ones(2, 1, 5, 7), q, 3), torch.ones(2, 1, 5, 7))
        True
        >>> soft_uniformize(x, q, 3).shape
        torch.Size([2, 3, 5, 7])
    """
    validate = _checks.check_bool(validate, "validate")
    cell_size, mask = _check_pool_inputs(logits, "logits", assoc, cell_size, mask, validate)
    height, width = logits.shape[-2:]
    dtype, compute = _compute_dtype(logits, assoc)
    with _no_autocast(logits.device):
        q = _normalized(assoc.to(compute), cell_size, renormalize)
        centres, qb = _pool(logits.to(compute), q, cell_size, mask)
        out = _unpool_blocks(centres, qb, _blocks(height, width, cell_size), (height, width))
    return out.to(dtype)


class SoftUniformize(nn.Module):
    """Module form of :func:`soft_uniformize` (``cell_size`` fixes the grid, so it is a construction option).

    Args:
        cell_size (int): grid cell side in pixels.
        renormalize (bool): border convention (see :mod:`sparse_ops.soft`).
        validate (bool): the association check of every call; types, shapes and devices are always checked.

    Shape:
        - logits: :math:`(B, C, H, W)`
        - assoc: :math:`(B, 9, H, W)`
        - mask: :math:`(B, H, W)`, bool, optional
        - output: :math:`(B, C, H, W)`, in the dtype promoted from ``logits`` and ``assoc``

    Example:
        >>> m = SoftUniformize(cell_size=4)
        >>> q = torch.softmax(torch.randn(1, 9, 8, 8), dim=1)
        >>> m(torch.randn(1, 21, 8, 8), q).shape
        torch.Size([1, 21, 8, 8])
    """

    def __init__(self, cell_size: SupportsIndex, *, renormalize: bool = True, validate: bool = True) -> None:
        super().__init__()
        self.cell_size = _checks.check_int(cell_size, "cell_size", 1)
        self.renormalize = _checks.check_bool(renormalize, "renormalize")
        self.validate = _checks.check_bool(validate, "validate")

    def forward(self, logits: Tensor, assoc: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """See :func:`soft_uniformize`."""
        return soft_uniformize(
            logits, assoc, self.cell_size, mask=mask, renormalize=self.renormalize, validate=self.validate
        )

    if TYPE_CHECKING:  # nn.Module.__call__ is typed (*args, **kwargs) -> Any: give callers forward's
        # signature (tests/test_typing_user.py checks that the two agree)

        def __call__(self, logits: Tensor, assoc: Tensor, *, mask: Tensor | None = None) -> Tensor: ...

    def extra_repr(self) -> str:
        s = f"cell_size={self.cell_size}, renormalize={self.renormalize}"
        return s if self.validate else s + ", validate=False"
