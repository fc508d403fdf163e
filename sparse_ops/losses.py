"""The SpixelFCN training loss: reconstruct targets and pixel positions through the soft association.

Per-pixel target features ``t(p)`` (a one-hot of the class labels, or dense features such as colours) and the
pixel coordinates ``xy(p)`` are pooled to the superpixel centres and unpooled back
(:func:`~sparse_ops.soft_superpixel_pool`, :func:`~sparse_ops.soft_superpixel_unpool`), giving
reconstructions ``t'(p)`` and ``xy'(p)``. Over the set ``V`` of valid pixels:

.. math::

    L = \\underbrace{\\frac{1}{|V|}\\sum_{p \\in V} d(t(p), t'(p))}_{\\text{semantic}}
      + \\frac{m}{S}\\underbrace{\\frac{1}{|V|}\\sum_{p \\in V} \\lVert xy(p) - xy'(p) \\rVert_2}_{\\text{position}}

with ``d`` the cross-entropy ``-sum_c t_c log(t'_c + eps)`` for label maps and the Euclidean distance
``||t - t'||_2`` for dense targets, ``m = pos_weight`` and ``S = cell_size``.

**Normalization.** The public SpixelFCN code *sums* both terms over pixels (divided by the batch size) and
scales the total by 0.005; we take **means over the valid pixels** of the whole batch instead, so the value
does not grow with the image size and no extra factor is needed. The ratio between the two terms (``m / S``)
is the same, so the gradients differ only by a positive constant per batch.

**Ignored pixels** (``target == ignore_index``, or ``mask == False``) are excluded from both terms *and* from
the pooling (their association weights are zeroed before pooling), so they do not dilute the centres; they are
still reconstructed (unpooled) but not scored. If no pixel is valid the loss is 0 (with a gradient of 0).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grid import _check_size, pixel_xy
from .soft import _check_assoc, soft_superpixel_pool, soft_superpixel_unpool

__all__ = ["SpixelLoss", "SpixelLossOutput", "spixel_loss"]


class SpixelLossOutput(NamedTuple):
    """Result of :func:`spixel_loss`: scalar tensors ``total = semantic + pos_weight / cell_size * position``."""

    total: Tensor
    semantic: Tensor
    position: Tensor


def _safe_norm(diff: Tensor) -> Tensor:
    """Euclidean norm over dim 1 with a zero (not NaN) gradient where the difference is exactly 0."""
    sq = diff.square().sum(dim=1)
    nz = sq > 0
    return torch.where(nz, torch.where(nz, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def _label_targets(
    target: Tensor, ignore_index: int, num_classes: int | None, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    if target.dim() == 4:
        if target.shape[1] != 1:
            raise ValueError(
                f"an integer target must have shape [B, H, W] or [B, 1, H, W], got {tuple(target.shape)}"
            )
        target = target[:, 0]
    if target.dim() != 3:
        raise ValueError(
            f"an integer target must have shape [B, H, W] or [B, 1, H, W], got {tuple(target.shape)}"
        )
    valid = target != ignore_index
    labels = torch.where(valid, target, torch.zeros_like(target)).long()
    if bool((labels < 0).any()):
        raise ValueError(
            f"target labels must be >= 0 (or ignore_index={ignore_index}), got {int(labels.min())}"
        )
    max_label = int(labels.max()) if labels.numel() else 0
    if num_classes is None:
        num_classes = max_label + 1
    else:
        num_classes = _check_size("num_classes", num_classes, 1)
        if max_label >= num_classes:
            raise ValueError(f"target labels must be < num_classes={num_classes}, got label {max_label}")
    onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).to(dtype)
    return onehot * valid.unsqueeze(1).to(dtype), valid


def spixel_loss(
    assoc: Tensor,
    target: Tensor,
    cell_size: int,
    pos_weight: float = 0.003,
    ignore_index: int = 255,
    *,
    num_classes: int | None = None,
    mask: Tensor | None = None,
    eps: float = 1e-8,
    renormalize: bool = True,
) -> SpixelLossOutput:
    """SpixelFCN loss of an association map (semantic reconstruction + weighted position reconstruction).

    Args:
        assoc (Tensor[B, 9, H, W]): association probabilities (softmax over the 9 candidates).
        target (LongTensor[B, H, W] | LongTensor[B, 1, H, W] | Tensor[B, C, H, W]): an integer label map
            (one-hot encoded internally; ``ignore_index`` pixels excluded) or floating dense features (e.g.
            CIELAB colours), compared with the Euclidean distance.
        cell_size (int): grid cell side ``S`` in pixels.
        pos_weight (float): ``m``; the position term is weighted by ``m / S``.
        ignore_index (int): label of ignored pixels (integer targets only).
        num_classes (int | None): number of classes of an integer target; inferred as ``max label + 1`` if
            ``None`` (a device synchronisation; pass it in training loops).
        mask (BoolTensor[B, H, W] | None): additionally restrict both terms to these pixels.
        eps (float): added inside the logarithm of the cross-entropy.
        renormalize (bool): border convention of the soft pooling (see :mod:`sparse_ops.soft`).

    Returns:
        SpixelLossOutput: ``(total, semantic, position)`` scalar tensors, means over valid pixels.

    Example:
        >>> assoc = torch.zeros(1, 9, 4, 4); assoc[:, 4] = 1  # the regular grid
        >>> target = torch.tensor([[[0, 0, 1, 1]] * 4])       # one class per 2 x 2 cell
        >>> out = spixel_loss(assoc, target, cell_size=2)
        >>> round(out.semantic.item(), 6), round(out.position.item(), 4)
        (0.0, 0.7071)
    """
    assoc = _check_assoc(assoc)
    cell_size = _check_size("cell_size", cell_size, 1)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a Tensor, got {type(target).__name__}")
    B, _, H, W = assoc.shape
    if target.shape[0] != B or target.shape[-2:] != assoc.shape[-2:]:
        raise ValueError(
            f"target must have batch size {B} and spatial size {(H, W)} like assoc, got shape {tuple(target.shape)}"
        )
    if isinstance(pos_weight, bool) or not isinstance(pos_weight, (int, float)) or pos_weight < 0:
        raise ValueError(f"pos_weight must be a non-negative number, got {pos_weight!r}")
    dtype = assoc.dtype
    if target.is_floating_point():
        if target.dim() != 4:
            raise ValueError(f"a floating target must have shape [B, C, H, W], got {tuple(target.shape)}")
        feats = target.to(dtype)
        valid = torch.ones(B, H, W, dtype=torch.bool, device=assoc.device)
        labels = False
    elif target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must be an integer label map or floating features, got dtype {target.dtype}")
    else:
        feats, valid = _label_targets(target, ignore_index, num_classes, dtype)
        labels = True
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool Tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
        if mask.shape != (B, H, W):
            raise ValueError(f"mask must have shape {(B, H, W)}, got {tuple(mask.shape)}")
        valid = valid & mask
    C = feats.shape[1]
    xy = pixel_xy(H, W, batch_size=B, dtype=dtype, device=assoc.device)
    vmask = valid.unsqueeze(1).to(dtype)
    both = torch.cat([feats, xy], dim=1)
    centres = soft_superpixel_pool(both, assoc * vmask, cell_size, renormalize=renormalize)
    recon = soft_superpixel_unpool(centres, assoc, cell_size, renormalize=renormalize)
    n_valid = vmask.sum().clamp_min(1)
    if labels:
        per_pixel = -(feats * torch.log(recon[:, :C] + eps)).sum(dim=1)
    else:
        per_pixel = _safe_norm(recon[:, :C] - feats)
    pos_pix = _safe_norm(recon[:, C:] - xy)
    semantic = (per_pixel * vmask[:, 0]).sum() / n_valid
    position = (pos_pix * vmask[:, 0]).sum() / n_valid
    total = semantic + (pos_weight / cell_size) * position
    return SpixelLossOutput(total, semantic, position)


class SpixelLoss(nn.Module):
    """Module form of :func:`spixel_loss`.

    Args:
        cell_size (int): grid cell side in pixels.
        pos_weight (float): weight ``m`` of the position term (scaled by ``1 / cell_size``).
        ignore_index (int): ignored label.
        num_classes (int | None): number of classes of integer targets (inferred if ``None``).

    Shape:
        - assoc: :math:`(B, 9, H, W)`
        - target: :math:`(B, H, W)` integer labels or :math:`(B, C, H, W)` floating features
        - output: :class:`SpixelLossOutput` of scalars

    Example:
        >>> crit = SpixelLoss(cell_size=4, num_classes=3)
        >>> assoc = torch.softmax(torch.randn(2, 9, 8, 8), dim=1)
        >>> out = crit(assoc, torch.randint(0, 3, (2, 8, 8)))
        >>> out.total.shape
        torch.Size([])
    """

    def __init__(
        self,
        cell_size: int,
        pos_weight: float = 0.003,
        ignore_index: int = 255,
        *,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.cell_size = _check_size("cell_size", cell_size, 1)
        self.pos_weight = pos_weight
        self.ignore_index = ignore_index
        self.num_classes = num_classes

    def forward(self, assoc: Tensor, target: Tensor, mask: Tensor | None = None) -> SpixelLossOutput:
        return spixel_loss(
            assoc,
            target,
            self.cell_size,
            self.pos_weight,
            self.ignore_index,
            num_classes=self.num_classes,
            mask=mask,
        )

    def extra_repr(self) -> str:
        return f"cell_size={self.cell_size}, pos_weight={self.pos_weight}, ignore_index={self.ignore_index}"
