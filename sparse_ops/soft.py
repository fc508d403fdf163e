"""Soft superpixel pooling and unpooling over a 9-neighbour grid association (SpixelFCN, Eq. 1-2).

A pixel ``p`` in grid cell ``g(p)`` has a soft membership ``q_k(p)`` in the 9 cells ``g(p) + d_k``,
``d_k = (dy, dx)`` in the documented neighbour order (see :mod:`sparse_ops.grid`). Pooling (Eq. 2a) forms the
superpixel centres as association-weighted means, unpooling (Eq. 2b) reconstructs every pixel from the centres
of its 9 candidates:

.. math::

    c_s = \\frac{\\sum_{p:\\, s \\in N(p)} \\hat q_s(p)\\, f(p)}{\\sum_{p:\\, s \\in N(p)} \\hat q_s(p)}, \\qquad
    f'(p) = \\sum_{s \\in N(p)} \\hat q_s(p)\\, c_s .

**Border convention.** Candidates outside the image (around the border, including next to partial border
cells) get zero weight. By default (``renormalize=True``) the remaining weights of each pixel are rescaled to
sum to 1, :math:`\\hat q_k(p) = m_k(p) q_k(p) / \\sum_j m_j(p) q_j(p)` with the validity mask ``m``, so that
``soft_superpixel_unpool(soft_superpixel_pool(ones)) == ones`` for *any* non-negative association (and
:func:`soft_uniformize` is a convex combination). With ``renormalize=False`` the invalid mass is simply dropped
(the behaviour of the public SpixelFCN code, whose shifts pad with zeros); ones then round-trip when every row
of ``assoc`` sums to 1 over its valid candidates. A pixel whose valid mass is 0 contributes nothing and is
reconstructed as 0; a cell that receives no mass has centre 0.

**Implementation.** Exact dense block formulation: the (zero-padded) image is cut into its
``n_h x n_w`` cells of ``S^2`` pixels, and for every cell one small matrix product
``[C, S^2] x [S^2, 9]`` (pool) or ``[C, 9] x [9, S^2]`` (unpool) is batched over the grid; the 9 per-direction
cell sums are then shifted onto their target cells. This touches every pixel once instead of 9 times (compare
``benchmarks/bench_soft.py``) and is differentiable in the features and the association through autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grid import _check_size, grid_shape, neighbour_validity

__all__ = [
    "SoftUniformize",
    "normalize_assoc",
    "soft_superpixel_pool",
    "soft_superpixel_unpool",
    "soft_uniformize",
]


# ----------------------------------------------------------------------------------------------- checks
def _check_tensor4(name: str, x: object, channels: int | None = None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must have shape [B, C, H, W] (4 dims), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have {channels} channels (dim 1), got shape {tuple(x.shape)}")
    return x


def _check_assoc(assoc: object) -> Tensor:
    return _check_tensor4("assoc", assoc, channels=9)


def _common_dtype(a: Tensor, b: Tensor) -> torch.dtype:
    return torch.promote_types(a.dtype, b.dtype)


# ----------------------------------------------------------------------------------------------- core
def normalize_assoc(assoc: Tensor, cell_size: int, *, renormalize: bool = True) -> Tensor:
    """Apply the border convention to an association map.

    Out-of-image candidates get zero weight; with ``renormalize`` the valid weights of each pixel are rescaled
    to sum to 1 (pixels with no valid mass keep all-zero weights).

    Args:
        assoc (Tensor[B, 9, H, W]): non-negative association (e.g. a softmax over dim 1).
        cell_size (int): grid cell side in pixels.
        renormalize (bool): rescale the valid weights to sum to 1.

    Returns:
        Tensor[B, 9, H, W]: the effective weights :math:`\\hat q` used by pooling and unpooling.

    Example:
        >>> q = normalize_assoc(torch.full((1, 9, 2, 2), 1 / 9), 2)
        >>> q[0, :, 0, 0]  # a single cell: only the centre candidate exists
        tensor([0., 0., 0., 0., 1., 0., 0., 0., 0.])
    """
    assoc = _check_assoc(assoc)
    cell_size = _check_size("cell_size", cell_size, 1)
    H, W = assoc.shape[-2:]
    valid = neighbour_validity(H, W, cell_size, device=assoc.device)
    q = assoc * valid.to(assoc.dtype)
    if renormalize:
        s = q.sum(dim=1, keepdim=True)
        q = q / torch.where(s > 0, s, torch.ones_like(s))
    return q


def _to_blocks(x: Tensor, cell_size: int, n_h: int, n_w: int) -> Tensor:
    """[B, C, H, W] -> [B, n_h, n_w, C, S*S] (zero-padded to whole cells)."""
    B, C, H, W = x.shape
    S = cell_size
    pad_h, pad_w = n_h * S - H, n_w * S - W
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    x = x.reshape(B, C, n_h, S, n_w, S).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, n_h, n_w, C, S * S)


def _from_blocks(x: Tensor, cell_size: int, H: int, W: int) -> Tensor:
    """[B, n_h, n_w, C, S*S] -> [B, C, H, W] (cropping the padding)."""
    B, n_h, n_w, C, _ = x.shape
    S = cell_size
    x = x.reshape(B, n_h, n_w, C, S, S).permute(0, 3, 1, 4, 2, 5).reshape(B, C, n_h * S, n_w * S)
    return x[:, :, :H, :W]


def _shift_to_targets(per_dir: Tensor) -> Tensor:
    """[B, C, 9, n_h, n_w] sums of cell (i, j) for direction k -> [B, C, n_h, n_w] totals of cell (i+dy, j+dx).

    This is exactly ``F.fold`` with a 3 x 3 kernel and padding 1 (contributions leaving the grid are dropped).
    """
    B, C, _, n_h, n_w = per_dir.shape
    return F.fold(per_dir.reshape(B, C * 9, n_h * n_w), (n_h, n_w), kernel_size=3, padding=1)


def _gather_from_neighbours(centres: Tensor) -> Tensor:
    """[B, C, n_h, n_w] -> [B, n_h, n_w, C, 9] holding the centre of cell (i+dy, j+dx) (0 outside): ``F.unfold``."""
    B, C, n_h, n_w = centres.shape
    neigh = F.unfold(centres, kernel_size=3, padding=1).reshape(B, C, 9, n_h, n_w)
    return neigh.permute(0, 3, 4, 1, 2)


def _pool_blocks(fb: Tensor, qb: Tensor) -> Tensor:
    """Feature blocks [B,n_h,n_w,C,SS] and weight blocks [B,n_h,n_w,9,SS] -> centres [B, C, n_h, n_w]."""
    num = torch.matmul(fb, qb.transpose(-1, -2))  # [B, n_h, n_w, C, 9]
    mass = qb.sum(dim=-1).unsqueeze(-2)  # [B, n_h, n_w, 1, 9]
    both = _shift_to_targets(torch.cat([num, mass], dim=-2).permute(0, 3, 4, 1, 2))
    num, mass = both[:, :-1], both[:, -1:]
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    return torch.where(mass > 0, num / safe, torch.zeros_like(num))


def _unpool_blocks(centres: Tensor, qb: Tensor, cell_size: int, H: int, W: int) -> Tensor:
    neigh = _gather_from_neighbours(centres)  # [B, n_h, n_w, C, 9]
    return _from_blocks(torch.matmul(neigh, qb), cell_size, H, W)


def _prepare(features: Tensor, assoc: Tensor, cell_size: int, renormalize: bool, fname: str):
    features = _check_tensor4(fname, features)
    assoc = _check_assoc(assoc)
    cell_size = _check_size("cell_size", cell_size, 1)
    if features.shape[0] != assoc.shape[0] or features.shape[-2:] != assoc.shape[-2:]:
        raise ValueError(
            f"{fname} and assoc must agree in batch size and spatial size: {fname} has shape "
            f"{tuple(features.shape)}, assoc has shape {tuple(assoc.shape)}"
        )
    dtype = _common_dtype(features, assoc)
    features, assoc = features.to(dtype), assoc.to(dtype)
    H, W = assoc.shape[-2:]
    n_h, n_w = grid_shape(H, W, cell_size)
    q = normalize_assoc(assoc, cell_size, renormalize=renormalize)
    qb = _to_blocks(q, cell_size, n_h, n_w)
    return features, qb, cell_size, n_h, n_w


# ----------------------------------------------------------------------------------------------- public
def soft_superpixel_pool(
    features: Tensor, assoc: Tensor, cell_size: int, *, renormalize: bool = True
) -> Tensor:
    """Soft superpixel centres: association-weighted means of the features (SpixelFCN Eq. 2a).

    Args:
        features (Tensor[B, C, H, W]): per-pixel features.
        assoc (Tensor[B, 9, H, W]): non-negative association of every pixel with its 9 candidate cells
            (neighbour order TL, T, TR, L, C, R, BL, B, BR).
        cell_size (int): grid cell side ``S`` in pixels; ``H`` and ``W`` need not be multiples of it.
        renormalize (bool): border convention (see the module docstring).

    Returns:
        Tensor[B, C, n_h, n_w]: centre features, ``n_h = ceil(H / S)``, ``n_w = ceil(W / S)``; 0 for a cell
        that receives no association mass.

    Example:
        >>> f = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> hard = torch.zeros(1, 9, 4, 4); hard[:, 4] = 1  # every pixel fully in its own cell
        >>> soft_superpixel_pool(f, hard, 2)
        tensor([[[[ 2.5000,  4.5000],
                  [10.5000, 12.5000]]]])
    """
    features, qb, cell_size, n_h, n_w = _prepare(features, assoc, cell_size, renormalize, "features")
    fb = _to_blocks(features, cell_size, n_h, n_w)
    return _pool_blocks(fb, qb)


def soft_superpixel_unpool(
    centres: Tensor, assoc: Tensor, cell_size: int, *, renormalize: bool = True
) -> Tensor:
    """Reconstruct per-pixel features from the centres of their 9 candidate cells (SpixelFCN Eq. 2b).

    Args:
        centres (Tensor[B, C, n_h, n_w]): superpixel features on the grid of ``assoc``.
        assoc (Tensor[B, 9, H, W]): association (neighbour order TL, T, TR, L, C, R, BL, B, BR).
        cell_size (int): grid cell side in pixels.
        renormalize (bool): border convention (see the module docstring).

    Returns:
        Tensor[B, C, H, W]: :math:`f'(p) = \\sum_k \\hat q_k(p)\\, c_{g(p) + d_k}`.

    Example:
        >>> c = torch.tensor([[[[1.0, 2.0]]]])  # a 1 x 2 grid
        >>> q = torch.zeros(1, 9, 2, 4); q[:, 4] = 0.5; q[:, 5] = 0.5  # half own cell, half right neighbour
        >>> soft_superpixel_unpool(c, q, 2)  # the right column has no right neighbour: renormalized to C
        tensor([[[[1.5000, 1.5000, 2.0000, 2.0000],
                  [1.5000, 1.5000, 2.0000, 2.0000]]]])
    """
    centres = _check_tensor4("centres", centres)
    assoc = _check_assoc(assoc)
    cell_size = _check_size("cell_size", cell_size, 1)
    H, W = assoc.shape[-2:]
    n_h, n_w = grid_shape(H, W, cell_size)
    B = assoc.shape[0]
    if centres.shape[0] != B or tuple(centres.shape[-2:]) != (n_h, n_w):
        raise ValueError(
            f"centres must have shape [B={B}, C, n_h={n_h}, n_w={n_w}] for assoc of shape {tuple(assoc.shape)} "
            f"and cell_size={cell_size}, got shape {tuple(centres.shape)}"
        )
    dtype = _common_dtype(centres, assoc)
    centres, assoc = centres.to(dtype), assoc.to(dtype)
    q = normalize_assoc(assoc, cell_size, renormalize=renormalize)
    qb = _to_blocks(q, cell_size, n_h, n_w)
    return _unpool_blocks(centres, qb, cell_size, H, W)


def soft_uniformize(logits: Tensor, assoc: Tensor, cell_size: int, *, renormalize: bool = True) -> Tensor:
    """Differentiable soft counterpart of hard uniformization: ``unpool(pool(logits))``.

    Gradients reach both ``logits`` and ``assoc``, so a segmentation loss on the result can train the
    superpixel network end to end.

    Args:
        logits (Tensor[B, C, H, W]): per-pixel scores (or any features).
        assoc (Tensor[B, 9, H, W]): association (neighbour order TL, T, TR, L, C, R, BL, B, BR).
        cell_size (int): grid cell side in pixels.
        renormalize (bool): border convention (see the module docstring).

    Returns:
        Tensor[B, C, H, W]: the smoothed logits.

    Example:
        >>> x = torch.randn(2, 3, 5, 7)
        >>> q = torch.softmax(torch.randn(2, 9, 5, 7), dim=1)
        >>> torch.allclose(soft_uniformize(torch.ones(2, 1, 5, 7), q, 3), torch.ones(2, 1, 5, 7))
        True
        >>> soft_uniformize(x, q, 3).shape
        torch.Size([2, 3, 5, 7])
    """
    logits, qb, cell_size, n_h, n_w = _prepare(logits, assoc, cell_size, renormalize, "logits")
    H, W = logits.shape[-2:]
    centres = _pool_blocks(_to_blocks(logits, cell_size, n_h, n_w), qb)
    return _unpool_blocks(centres, qb, cell_size, H, W)


class SoftUniformize(nn.Module):
    """Module form of :func:`soft_uniformize`.

    Args:
        cell_size (int): grid cell side in pixels.
        renormalize (bool): border convention (see :mod:`sparse_ops.soft`).

    Shape:
        - logits: :math:`(B, C, H, W)`
        - assoc: :math:`(B, 9, H, W)`
        - output: :math:`(B, C, H, W)`

    Example:
        >>> m = SoftUniformize(cell_size=4)
        >>> q = torch.softmax(torch.randn(1, 9, 8, 8), dim=1)
        >>> m(torch.randn(1, 21, 8, 8), q).shape
        torch.Size([1, 21, 8, 8])
    """

    def __init__(self, cell_size: int, *, renormalize: bool = True) -> None:
        super().__init__()
        self.cell_size = _check_size("cell_size", cell_size, 1)
        self.renormalize = bool(renormalize)

    def forward(self, logits: Tensor, assoc: Tensor) -> Tensor:
        return soft_uniformize(logits, assoc, self.cell_size, renormalize=self.renormalize)

    def extra_repr(self) -> str:
        return f"cell_size={self.cell_size}, renormalize={self.renormalize}"
