"""The SpixelFCN training loss: reconstruct targets and pixel positions through the soft association.

Per-pixel target features ``t(p)`` (a one-hot of the class labels, or dense features such as colours) and the
pixel coordinates ``xy(p)`` are pooled to the superpixel centres and unpooled back
(:func:`~sparse_ops.soft_superpixel_pool`, :func:`~sparse_ops.soft_superpixel_unpool`), giving
reconstructions ``t'(p)`` and ``xy'(p)``. Over the set ``V`` of valid pixels:

.. math::

    L = \\underbrace{\\frac{1}{|V|}\\sum_{p \\in V} d(t(p), t'(p))}_{\\text{semantic}}
      + \\frac{m}{S}\\underbrace{\\frac{1}{|V|}\\sum_{p \\in V} \\lVert xy(p) - xy'(p)
      \\rVert_2}_{\\text{position}}

with ``d`` the cross-entropy ``-sum_c t_c log(t'_c + eps)`` for label maps and the Euclidean distance
``||t - t'||_2`` for dense targets, ``m = pos_weight`` and ``S = cell_size``.

**Normalization.** The public SpixelFCN code *sums* both terms over pixels (divided by the batch size) and
scales the total by 0.005; we take **means over the valid pixels** of the whole batch instead, so the value
does not grow with the image size and no extra factor is needed. The ratio between the two terms (``m / S``)
is the same, so the gradients differ only by a positive constant per batch.

**Ignored pixels** (``target == ignore_index``, or ``mask == False``) are excluded from both terms *and* from
the pooling (the ``mask`` of :func:`~sparse_ops.soft_superpixel_pool`), so they do not dilute the centres;
they are still reconstructed (unpooled) but not scored. If no pixel is valid the loss is 0 (with a gradient of
0).

**Host synchronisation.** With ``num_classes`` given and ``validate=False`` the loss reads no tensor value on
the host. ``num_classes=None`` reads the largest label (and refuses one above
:data:`~sparse_ops._checks.MAX_INFERRED_CLASSES` - 1, a stray label, before allocating the one-hot);
``validate=True`` checks the label range and the association values.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from sparse_ops import _checks
from sparse_ops.grid import pixel_xy
from sparse_ops.soft import soft_superpixel_pool, soft_superpixel_unpool

__all__ = ["SpixelLoss", "SpixelLossOutput", "spixel_loss"]


class SpixelLossOutput(NamedTuple):
    """:func:`spixel_loss`'s scalar tensors: ``total = semantic + pos_weight / cell_size * position``."""

    total: Tensor
    semantic: Tensor
    position: Tensor


def _safe_norm(diff: Tensor) -> Tensor:
    """Euclidean norm over dim 1 with a zero (not NaN) gradient where the difference is exactly 0."""
    sq = diff.square().sum(dim=1)
    nz = sq > 0
    return torch.where(nz, torch.where(nz, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def _label_targets(
    target: Tensor, ignore_index: int, num_classes: int | None, dtype: torch.dtype, validate: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """One-hot ``[B, K, H, W]`` of a label map (0 at ignored pixels), the valid pixels ``[B, H, W]`` and the
    labels ``[B, H, W]`` (0 at ignored pixels; outside ``[0, K)`` only when not validated: no one-hot entry).
    """
    valid = target != ignore_index
    labels = torch.where(valid, target, torch.zeros_like(target)).long()
    if validate and labels.numel() and bool((labels < 0).any()):
        raise ValueError(
            f"target labels must be >= 0 (or ignore_index={ignore_index}), got {int(labels.min())}"
        )
    if num_classes is None:
        largest = int(labels.max()) if labels.numel() else 0
        if largest >= _checks.MAX_INFERRED_CLASSES:
            raise ValueError(
                f"the largest label of target is {largest}, so num_classes would be inferred as "
                f"{largest + 1} "
                f"(at most {_checks.MAX_INFERRED_CLASSES} are inferred: a one-hot of that many classes per "
                "pixel "
                f"is probably a stray label); pass num_classes, or set ignore_index to that label"
            )
        num_classes = largest + 1
    elif validate and labels.numel():
        largest = int(labels.max())
        if largest >= num_classes:
            raise ValueError(f"target labels must be < num_classes={num_classes}, got label {largest}")
    classes = torch.arange(num_classes, device=target.device).view(1, num_classes, 1, 1)
    onehot = (labels.unsqueeze(1) == classes) & valid.unsqueeze(1)  # no one_hot: it checks values on the host
    return onehot.to(dtype), valid, labels


def spixel_loss(
    assoc: Tensor,
    target: Tensor,
    cell_size: int,
    *,
    mask: Tensor | None = None,
    pos_weight: float = 0.003,
    ignore_index: int = 255,
    num_classes: int | None = None,
    eps: float = 1e-8,
    renormalize: bool = True,
    validate: bool = True,
) -> SpixelLossOutput:
    """SpixelFCN loss of an association map (semantic reconstruction + weighted position reconstruction).

    The soft-op argument order: the association, the per-pixel data (the target), ``cell_size``, then
    keyword-only ``mask``, the options and ``validate``.

    Args:
        assoc (Tensor[B, 9, H, W]): association probabilities (softmax over the 9 candidates).
        target (LongTensor[B, H, W] | LongTensor[B, 1, H, W] | Tensor[B, C, H, W]): an integer label map
            (one-hot encoded internally; ``ignore_index`` pixels excluded) or floating dense features (e.g.
            CIELAB colours), compared with the Euclidean distance.
        cell_size (int): grid cell side ``S`` in pixels.
        mask (BoolTensor[B, H, W] | None): additionally restrict both terms (and the pooling) to these pixels.
        pos_weight (float): ``m``; the position term is weighted by ``m / S``.
        ignore_index (int): label of ignored pixels (integer targets only).
        num_classes (int | None): number of classes of an integer target; inferred as ``max label + 1`` if
            ``None`` (a host synchronisation, and at most 4096 classes: pass it in training loops).
        eps (float): added inside the logarithm of the cross-entropy.
        renormalize (bool): border convention of the soft pooling (see :mod:`sparse_ops.soft`).
        validate (bool): check the inputs (label range and association values synchronise with the device).

    Returns:
        SpixelLossOutput: ``(total, semantic, position)`` scalar tensors, means over valid pixels.

    Example:
        >>> assoc = torch.zeros(1, 9, 4, 4); assoc[:, 4] = 1  # the regular grid
        >>> target = torch.tensor([[[0, 0, 1, 1]] * 4])       # one class per 2 x 2 cell
        >>> out = spixel_loss(assoc, target, cell_size=2)
        >>> round(out.semantic.item(), 6), round(out.position.item(), 4)
        (0.0, 0.7071)
    """
    if validate:
        _checks.check_assoc(assoc)
        cell_size = _checks.check_int(cell_size, "cell_size", 1)
        pos_weight = _checks.check_number(pos_weight, "pos_weight", 0.0)
        eps = _checks.check_number(eps, "eps", 0.0)
        ignore_index = _checks.check_int(ignore_index, "ignore_index")
        if num_classes is not None:
            num_classes = _checks.check_int(num_classes, "num_classes", 1)
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a Tensor, got {type(target).__name__}")
        if target.shape[0] != assoc.shape[0] or target.shape[-2:] != assoc.shape[-2:]:
            raise ValueError(
                f"target must have batch size {assoc.shape[0]} and spatial size {tuple(assoc.shape[-2:])} "
                "like "
                f"assoc, got shape {tuple(target.shape)}"
            )
        _checks.check_same_device(assoc, "assoc", target, "target")
        if target.dtype == torch.bool or target.is_complex():
            raise TypeError(
                f"target must be an integer label map or floating features, got dtype {target.dtype}"
            )
        if target.is_floating_point():
            _checks.check_floating(target, "target", "[B, C, H, W]")
        elif target.dim() != 3 and not (target.dim() == 4 and target.shape[1] == 1):
            raise ValueError(
                f"an integer target must have shape [B, H, W] or [B, 1, H, W], got {tuple(target.shape)}"
            )
        if mask is not None:
            mask = _checks.check_mask(mask, assoc[:, 0], "assoc")
        _checks.check_assoc_values(assoc)
    b, _, height, width = assoc.shape
    out_dtype = assoc.dtype
    dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    assoc = assoc.to(dtype)
    if target.is_floating_point():
        feats = target.to(dtype)
        valid = torch.ones(b, height, width, dtype=torch.bool, device=assoc.device)
        is_labels = False
    else:
        feats, valid, labels = _label_targets(
            _checks.drop_channel_dim(target), ignore_index, num_classes, dtype, validate
        )
        is_labels = True
    if mask is not None:
        valid = valid & _checks.drop_channel_dim(mask)
    channels = feats.shape[1]
    xy = pixel_xy(height, width, batch_size=b, dtype=dtype, device=assoc.device)
    both = torch.cat([feats, xy], dim=1)
    centres = soft_superpixel_pool(
        both, assoc, cell_size, mask=valid, renormalize=renormalize, validate=False
    )
    recon = soft_superpixel_unpool(centres, assoc, cell_size, renormalize=renormalize, validate=False)
    weight = valid.to(dtype)
    n_valid = valid.sum().clamp_min(1).to(dtype)  # an integer count: exact for any number of pixels
    if is_labels:
        # -sum_k onehot_k log(r_k + eps) is -log(r_label + eps): read one channel, not K (the same value; the
        # log and its backward touch one channel per pixel). Advanced indexing, not gather: its backward keeps
        # only the indices, where gather's keeps all of recon
        rows = torch.arange(b, device=assoc.device).view(b, 1, 1)
        ys = torch.arange(height, device=assoc.device).view(1, height, 1)
        xs = torch.arange(width, device=assoc.device).view(1, 1, width)
        picked = recon[rows, labels.clamp(0, channels - 1), ys, xs]
        per_pixel = -torch.log(picked + eps)
        if not validate:  # a label outside [0, K) has no one-hot entry: it adds nothing, as before
            per_pixel = per_pixel * ((labels >= 0) & (labels < channels)).to(dtype)
    else:
        per_pixel = _safe_norm(recon[:, :channels] - feats)
    pos_pix = _safe_norm(recon[:, channels:] - xy)
    semantic = (per_pixel * weight).sum() / n_valid
    position = (pos_pix * weight).sum() / n_valid
    total = semantic + (pos_weight / cell_size) * position
    return SpixelLossOutput(total.to(out_dtype), semantic.to(out_dtype), position.to(out_dtype))


class SpixelLoss(nn.Module):
    """Module form of :func:`spixel_loss` (its options are construction options).

    Args:
        cell_size (int): grid cell side in pixels.
        pos_weight (float): weight ``m`` of the position term (scaled by ``1 / cell_size``).
        ignore_index (int): ignored label.
        num_classes (int | None): number of classes of integer targets (inferred if ``None``).
        eps (float): added inside the logarithm of the cross-entropy.
        renormalize (bool): border convention of the soft pooling.
        validate (bool): check the inputs of every call.

    Shape:
        - assoc: :math:`(B, 9, H, W)`
        - target: :math:`(B, H, W)` integer labels or :math:`(B, C, H, W)` floating features
        - mask: :math:`(B, H, W)`, bool, optional
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
        *,
        pos_weight: float = 0.003,
        ignore_index: int = 255,
        num_classes: int | None = None,
        eps: float = 1e-8,
        renormalize: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.cell_size = _checks.check_int(cell_size, "cell_size", 1)
        self.pos_weight = _checks.check_number(pos_weight, "pos_weight", 0.0)
        self.ignore_index = _checks.check_int(ignore_index, "ignore_index")
        self.num_classes = None if num_classes is None else _checks.check_int(num_classes, "num_classes", 1)
        self.eps = _checks.check_number(eps, "eps", 0.0)
        self.renormalize = bool(renormalize)
        self.validate = validate

    def forward(self, assoc: Tensor, target: Tensor, *, mask: Tensor | None = None) -> SpixelLossOutput:
        """See :func:`spixel_loss`."""
        return spixel_loss(
            assoc,
            target,
            self.cell_size,
            mask=mask,
            pos_weight=self.pos_weight,
            ignore_index=self.ignore_index,
            num_classes=self.num_classes,
            eps=self.eps,
            renormalize=self.renormalize,
            validate=self.validate,
        )

    def extra_repr(self) -> str:
        return (
            f"cell_size={self.cell_size}, pos_weight={self.pos_weight}, ignore_index={self.ignore_index}, "
            f"num_classes={self.num_classes}"
        )
