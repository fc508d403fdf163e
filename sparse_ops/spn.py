"""Superpixel pooling network (SPN) parts: superpixel pooling, a global average over superpixels, SP-CAM.

After Kwak, Hong, Han, "Weakly Supervised Semantic Segmentation using Superpixel Pooling Network" (AAAI 2017).
A feature map (upsampled to the superpixel map if it is coarser) is average-pooled over every superpixel,
giving one feature vector per superpixel. For image-level classification the superpixel vectors are averaged
(every non-empty superpixel counts once, whatever its size), and the superpixel-pooled class activation map
(SP-CAM) scores every superpixel with the classifier and broadcasts the score back to its pixels:

.. math::

    z_s = \\frac{1}{|s|} \\sum_{p \\in s} f(p), \\qquad
    g = \\frac{1}{|\\{s : |s| > 0\\}|} \\sum_{s : |s| > 0} z_s, \\qquad
    \\mathrm{CAM}_k(p) = w_k^\\top z_{s(p)} + b_k .

All pooling and broadcasting goes through :func:`~sparse_ops.superpixel_pool` and
:func:`~sparse_ops.superpixel_unpool`; this module only adds the upsampling, the averaging over superpixels
and the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_ops.pooling import superpixel_pool, superpixel_unpool

__all__ = ["SuperpixelClassifier", "SuperpixelPooling", "superpixel_cam", "superpixel_global_average"]

_MODES = ("bilinear", "nearest", "bicubic", "area")


def _spatial(superpixels: object) -> tuple[int, int]:
    if not isinstance(superpixels, Tensor):
        raise TypeError(f"superpixels must be a Tensor, got {type(superpixels).__name__}")
    if superpixels.dim() not in (3, 4):
        raise ValueError(
            f"superpixels must have shape [B, H, W] or [B, 1, H, W], got shape {tuple(superpixels.shape)}"
        )
    return int(superpixels.shape[-2]), int(superpixels.shape[-1])


def _match_size(features: object, superpixels: Tensor, upsample: str | None) -> Tensor:
    """Resize ``features`` to the superpixel map (SPN pools upsampled feature maps)."""
    if not isinstance(features, Tensor):
        raise TypeError(f"features must be a Tensor, got {type(features).__name__}")
    if features.dim() != 4:
        raise ValueError(f"features must have shape [B, C, h, w], got shape {tuple(features.shape)}")
    size = _spatial(superpixels)
    if tuple(features.shape[-2:]) == size:
        return features
    if upsample is None:
        raise ValueError(
            f"features have spatial size {tuple(features.shape[-2:])} but superpixels {size}; pass "
            f"upsample='bilinear' (or another mode) to resize them"
        )
    if upsample not in _MODES:
        raise ValueError(f"upsample must be one of {_MODES} or None, got {upsample!r}")
    kw = {"align_corners": False} if upsample in ("bilinear", "bicubic") else {}
    return F.interpolate(features, size=size, mode=upsample, **kw)


def superpixel_global_average(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: int | Tensor | None = None,
    *,
    mask: Tensor | None = None,
    upsample: str | None = "bilinear",
) -> Tensor:
    """Image-level feature: the mean of the superpixel means over the non-empty superpixels.

    Args:
        features (Tensor[B, C, h, w]): feature map; resized to the superpixel map if coarser.
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel ids.
        num_superpixels (int | LongTensor[B] | None): as in :func:`~sparse_ops.superpixel_pool`.
        mask (BoolTensor[B, H, W] | None): pixels that take part.
        upsample (str | None): interpolation mode for coarser features (``None``: sizes must match).

    Returns:
        Tensor[B, C]: per-image features (0 for an image without any counted pixel).

    Example:
        >>> f = torch.tensor([[[[1., 1., 1., 5.]]]])
        >>> sp = torch.tensor([[[0, 0, 0, 1]]])
        >>> superpixel_global_average(f, sp)  # (1 + 5) / 2, not the pixel mean 2
        tensor([[3.]])
    """
    features = _match_size(features, superpixels, upsample)
    pooled, counts = superpixel_pool(features, superpixels, num_superpixels, mask=mask, return_counts=True)
    present = (counts > 0).to(pooled.dtype)  # [B, N_s]
    total = torch.einsum("bsc,bs->bc", pooled, present)
    return total / present.sum(dim=1, keepdim=True).clamp_min(1)


def superpixel_cam(
    features: Tensor,
    superpixels: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    num_superpixels: int | Tensor | None = None,
    *,
    mask: Tensor | None = None,
    upsample: str | None = "bilinear",
    return_superpixel_scores: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Superpixel-pooled class activation map (SP-CAM).

    Every superpixel is scored by the linear classifier on its mean feature, and the score is broadcast to
    its pixels. Because the classifier is linear, this equals the superpixel average of the pixel CAM.

    Args:
        features (Tensor[B, C, h, w]): feature map; resized to the superpixel map if coarser.
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel ids.
        weight (Tensor[K, C]): classifier weights (e.g. ``nn.Linear(C, K).weight``).
        bias (Tensor[K] | None): classifier bias.
        num_superpixels (int | LongTensor[B] | None): as in :func:`~sparse_ops.superpixel_pool`.
        mask (BoolTensor[B, H, W] | None): pixels that take part in the pooling (others still receive the
            score of their superpixel).
        upsample (str | None): interpolation mode for coarser features.
        return_superpixel_scores (bool): also return the per-superpixel scores.

    Returns:
        Tensor[B, K, H, W] | tuple[Tensor[B, K, H, W], Tensor[B, N_s, K]]: the SP-CAM (and the superpixel
        scores; an empty superpixel scores ``bias``, or 0).

    Example:
        >>> f = torch.tensor([[[[1., 3., 10.]], [[0., 2., 4.]]]])  # C = 2, H = 1, W = 3
        >>> sp = torch.tensor([[[0, 0, 1]]])
        >>> w = torch.tensor([[1., 0.], [0., 1.]])                 # K = 2 classes: copy the channels
        >>> superpixel_cam(f, sp, w)
        tensor([[[[ 2.,  2., 10.]],
        <BLANKLINE>
                 [[ 1.,  1.,  4.]]]])
    """
    features = _match_size(features, superpixels, upsample)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be a Tensor of shape [K, C], got {getattr(weight, 'shape', weight)!r}")
    if weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"weight must have C={features.shape[1]} columns like features, got shape {tuple(weight.shape)}"
        )
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(
            f"bias must be a Tensor of shape [{weight.shape[0]}], got {getattr(bias, 'shape', bias)!r}"
        )
    pooled = superpixel_pool(features, superpixels, num_superpixels, mask=mask)
    assert isinstance(pooled, Tensor)
    scores = F.linear(pooled, weight, bias)  # [B, N_s, K]
    cam = superpixel_unpool(scores, superpixels)
    return (cam, scores) if return_superpixel_scores else cam


class SuperpixelPooling(nn.Module):
    """SPN superpixel pooling layer: (upsample and) average features over superpixels.

    Args:
        reduce (str): ``"mean"`` (SPN), ``"sum"`` or ``"max"``.
        upsample (str | None): interpolation mode applied to feature maps coarser than the superpixel map
            (``None``: sizes must match).

    Shape:
        - features: :math:`(B, C, h, w)`
        - superpixels: :math:`(B, H, W)` or :math:`(B, 1, H, W)`, integer
        - output: :math:`(B, N_s, C)`

    Example:
        >>> pool = SuperpixelPooling()
        >>> sp = torch.arange(4).repeat_interleave(4).reshape(1, 4, 4)  # one superpixel per row
        >>> pool(torch.randn(1, 8, 2, 2), sp).shape  # 2 x 2 features upsampled to 4 x 4
        torch.Size([1, 4, 8])
    """

    def __init__(self, reduce: str = "mean", *, upsample: str | None = "bilinear") -> None:
        super().__init__()
        if reduce not in ("mean", "sum", "max"):
            raise ValueError(f"reduce must be one of ('mean', 'sum', 'max'), got {reduce!r}")
        if upsample is not None and upsample not in _MODES:
            raise ValueError(f"upsample must be one of {_MODES} or None, got {upsample!r}")
        self.reduce = reduce
        self.upsample = upsample

    def forward(
        self,
        features: Tensor,
        superpixels: Tensor,
        num_superpixels: int | Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        features = _match_size(features, superpixels, self.upsample)
        out = superpixel_pool(features, superpixels, num_superpixels, self.reduce, mask=mask)
        assert isinstance(out, Tensor)
        return out

    def extra_repr(self) -> str:
        return f"reduce={self.reduce!r}, upsample={self.upsample!r}"


class SuperpixelClassifier(nn.Module):
    """SPN-style image classifier head with an SP-CAM readout.

    A linear classifier on the global superpixel average gives image-level logits (train it with a
    multi-label loss); :meth:`cam` gives the SP-CAM of the same classifier.

    Args:
        in_channels (int): feature channels ``C``.
        num_classes (int): classes ``K``.
        bias (bool): learn a bias.
        upsample (str | None): interpolation mode for coarser feature maps.

    Shape:
        - features: :math:`(B, C, h, w)`, superpixels: :math:`(B, H, W)`
        - output: :math:`(B, K)`; :meth:`cam`: :math:`(B, K, H, W)`

    Example:
        >>> head = SuperpixelClassifier(8, 3)
        >>> f, sp = torch.randn(2, 8, 4, 4), torch.randint(0, 5, (2, 8, 8))
        >>> head(f, sp).shape, head.cam(f, sp).shape
        (torch.Size([2, 3]), torch.Size([2, 3, 8, 8]))
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, bias: bool = True, upsample: str | None = "bilinear"
    ):
        super().__init__()
        self.classifier = nn.Linear(in_channels, num_classes, bias=bias)
        self.upsample = upsample

    def forward(
        self, features: Tensor, superpixels: Tensor, num_superpixels: int | Tensor | None = None, mask=None
    ) -> Tensor:
        g = superpixel_global_average(
            features, superpixels, num_superpixels, mask=mask, upsample=self.upsample
        )
        return self.classifier(g)

    def cam(
        self, features: Tensor, superpixels: Tensor, num_superpixels: int | Tensor | None = None, mask=None
    ) -> Tensor:
        """SP-CAM of this classifier, ``Tensor[B, K, H, W]``."""
        out = superpixel_cam(
            features,
            superpixels,
            self.classifier.weight,
            self.classifier.bias,
            num_superpixels,
            mask=mask,
            upsample=self.upsample,
        )
        assert isinstance(out, Tensor)
        return out
