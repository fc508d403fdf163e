"""Superpixel pooling (sum / mean / max per superpixel) and unpooling (broadcast back to pixels)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, SupportsIndex, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_ops import _checks
from sparse_ops._kernels import read
from sparse_ops.assignment import (
    BACKENDS,
    REDUCTIONS,
    Backend,
    Reduce,
    SuperpixelAssignment,
    _as_compute,
    validate_ids,
    validate_labels,
)

__all__ = ["SuperpixelPool", "Upsample", "superpixel_pool", "superpixel_unpool"]

#: The ``upsample`` option (``None`` aside) of the pooling ops (exported as ``sparse_ops.Upsample``).
Upsample = Literal["bilinear", "nearest", "bicubic", "area"]
UPSAMPLE_MODES: tuple[str, ...] = get_args(Upsample)


def resize_to(
    features: Tensor, size: tuple[int, int], upsample: Upsample | None, name: str = "features"
) -> Tensor:
    """Resize ``features[B, C, h, w]`` to ``size`` with ``upsample`` (``None``: the sizes must match).

    float16/bfloat16 features are interpolated in float32 and returned in float32 (the pooling accumulates in
    float32 anyway): interpolating in their own dtype would round every resized pixel once before the pooling
    rounds its result again.
    """
    if tuple(features.shape[-2:]) == size:
        return features
    if upsample is None:
        fix = "pass upsample='bilinear' (or another mode) to resize it"
        if features.dim() == 4 and tuple(features.shape[1:3]) == size:  # maybe [B, H, W, C]
            fix = f"{_checks.dimension_order_hint(name)}; otherwise {fix}"
        got = tuple(features.shape[-2:])
        raise ValueError(f"{name} must have the spatial size of superpixels {size}, got {got}; {fix}")
    if 0 in features.shape[-2:] and 0 not in size:  # PyTorch's interpolation raises a RuntimeError
        raise ValueError(
            f"{name} must have h, w >= 1 to be resized to the spatial size of superpixels {size} with "
            f"upsample={upsample!r}, got shape {tuple(features.shape)}"
        )
    if features.numel() == 0 or 0 in size:  # nothing to interpolate (PyTorch refuses empty tensors)
        # the empty result, still in the autograd graph (a sum over no pixel gives the [B, C, 1, 1] to expand)
        corner = _as_compute(features).sum(dim=(-2, -1), keepdim=True)
        return corner.expand(features.shape[0], features.shape[1], *size)
    align = {"align_corners": False} if upsample in ("bilinear", "bicubic") else {}
    return F.interpolate(_as_compute(features), size=size, mode=upsample, **align)


def superpixel_pool(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None = None,
    *,
    mask: Tensor | None = None,
    reduce: Reduce = "mean",
    upsample: Upsample | None = None,
    backend: Backend = "auto",
    validate: bool = True,
) -> Tensor:
    r"""Pool features over superpixels: one vector per superpixel.

    .. math::

        p_{b,s,c} = \operatorname{reduce}_{q:\ s_{b,q} = s,\ m_{b,q}} x_{b,c,q}

    In float32 means are within :math:`133\,u \max|x|` and sums within :math:`131\,u \sum|x|` of the exact
    value for any superpixel size (:math:`u = 2^{-24}`); float16/bfloat16 features get that float32 result
    rounded once to their dtype (one more error of up to :math:`2^{-11}` / :math:`2^{-8}` of it); in float64
    the bounds of superpixels of more than :math:`P K` pixels grow with :math:`\lceil n_s / K \rceil` (see
    :doc:`/concepts/uniformization`). The pixel counts are ``counts`` of
    :class:`~sparse_ops.SuperpixelAssignment`.

    Args:
        features (Tensor[B, C, h, w]): floating features (float16/bfloat16 accumulate in float32).
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel ids, any integer dtype.
        num_superpixels (int | LongTensor[B] | None): ``N_s``; an int for all images, the maximum of a
            per-image tensor, or inferred as ``max id + 1`` (a host-device synchronisation) when ``None``.
            Above ``max(2**16, 16 * H * W)`` it raises (relabel with :func:`relabel_contiguous`).
        mask (BoolTensor[B, H, W] | None): pixels that take part (``True``); ``None``: all.
        reduce (str): ``"mean"``, ``"sum"`` or ``"max"``. An empty superpixel (no counted pixel) pools to 0.
        upsample (str | None): interpolation mode (``"bilinear"``, ``"nearest"``, ``"bicubic"``, ``"area"``)
            that resizes ``features`` to the superpixel map first, as superpixel pooling networks do with
            coarse feature maps; ``None``: ``h, w`` must equal ``H, W``.
        backend (str): ``"auto"``, ``"scatter"`` or ``"sparse"`` (``"max"`` always scatters).
        validate (bool): check the id range (a host-device synchronisation, which breaks ``torch.compile``
            graphs); types, shapes and devices are always checked.

    Returns:
        Tensor[B, N_s, C]: pooled features in ``features``' dtype, contiguous.

    .. note::
        The gradient of ``"max"`` is shared evenly among tied maxima: each of the ``k`` counted pixels that
        hold a superpixel's maximum gets ``1/k`` of it (as with ``torch.amax``), also for a maximum of 0 or
        ``-inf``.

    Example:
        >>> import torch
        >>> x = torch.tensor([[[[1., 2.], [3., 6.]]]])
        >>> sp = torch.tensor([[[0, 0], [1, 1]]])
        >>> superpixel_pool(x, sp, reduce="max")
        tensor([[[2.],
                 [6.]]])
        >>> superpixel_pool(x, sp, 3)[..., 0]
        tensor([[1.5000, 4.5000, 0.0000]])
    """
    validate = _checks.check_bool(validate, "validate")
    _checks.check_option(reduce, "reduce", REDUCTIONS)
    resized, assignment = features_and_assignment(
        features, superpixels, num_superpixels, mask, upsample, backend, validate
    )
    return assignment.pool(resized, reduce).to(features.dtype)  # half features were resized in float32


def features_and_assignment(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None,
    mask: Tensor | None,
    upsample: Upsample | None,
    backend: Backend,
    validate: bool,
    *,
    features_checked: bool = False,
    compact: bool = False,
) -> tuple[Tensor, SuperpixelAssignment]:
    """The checked inputs of a pooling op: ``features`` resized to the label map (in float32 for half features
    that needed resizing, see :func:`resize_to`), and its assignment.

    ``features_checked``: the caller has checked the type and shape of ``features`` already (once per call).
    ``compact``: an assignment whose slots are the distinct ids of each image (see
    ``SuperpixelAssignment._unchecked``), for an op whose result does not depend on the id values: its memory
    is then proportional to the pixels, and no slot limit applies.
    """
    if not features_checked:
        _checks.check_floating(features, "features", "[B, C, h, w]", before_labels=True)
    _checks.check_option(upsample, "upsample", (*UPSAMPLE_MODES, None))
    _checks.check_option(backend, "backend", BACKENDS)
    labels, num_superpixels, mask = validate_labels(superpixels, num_superpixels, mask)
    _checks.check_batch_match(features, "features", labels, "superpixels", given=superpixels)
    _checks.check_same_device(features, "features", labels, "superpixels")
    if validate:
        validate_ids(labels, num_superpixels)
    # the batch and the device are checked above; resize_to gives the label map's size or raises
    features = resize_to(features, (labels.shape[1], labels.shape[2]), upsample)
    assignment = SuperpixelAssignment._unchecked(labels, num_superpixels, mask, backend, compact=compact)
    return features, assignment


def superpixel_unpool(pooled: Tensor, superpixels: Tensor, *, validate: bool = True) -> Tensor:
    """Broadcast one vector per superpixel back to its pixels (the decoder; inverse layout of pooling).

    ``superpixel_unpool`` has no ``num_superpixels`` (it is ``pooled.shape[1]``) and no ``mask`` (every pixel
    reads its superpixel). Its backward sums the gradient of every superpixel's pixels as accurately as
    :func:`superpixel_pool` does.

    Args:
        pooled (Tensor[B, N_s, C]): a vector per superpixel.
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): ids in ``[0, N_s)``, any integer dtype.
        validate (bool): check the id range (a host-device synchronisation, which breaks ``torch.compile``
            graphs); types, shapes and devices are always checked.

    Returns:
        Tensor[B, C, H, W]: ``out[b, :, i, j] = pooled[b, superpixels[b, i, j]]``, ``pooled``'s dtype.

    Example:
        >>> import torch
        >>> pooled = torch.tensor([[[1., 10.], [2., 20.]]])
        >>> sp = torch.tensor([[[0, 1, 1]]])
        >>> superpixel_unpool(pooled, sp)
        tensor([[[[ 1.,  2.,  2.]],
        <BLANKLINE>
                 [[10., 20., 20.]]]])
    """
    validate = _checks.check_bool(validate, "validate")
    _checks.check_floating(pooled, "pooled", "[B, N_s, C]", before_labels=True)
    labels, _, _ = validate_labels(superpixels, pooled.shape[1], None)
    _checks.check_batch_match(pooled, "pooled", labels, "superpixels", given=superpixels)
    _checks.check_same_device(pooled, "pooled", labels, "superpixels")
    if validate:
        validate_ids(  # the likely mistake behind a too large id: a [B, C, N_s] tensor
            labels,
            pooled.shape[1],
            bound_name="N_s = pooled.shape[1]",
            advice=": pooled must be [B, N_s, C] with one row per superpixel, as superpixel_pool returns "
            f"it, got shape {tuple(pooled.shape)} (a [B, C, N_s] tensor: pooled.transpose(1, 2))",
        )
    if not torch.is_grad_enabled() or not pooled.requires_grad:  # no backward: a plain gather suffices
        b, h, w = labels.shape
        index = labels.reshape(b, 1, h * w).long()
        z = pooled.transpose(1, 2)
        return read(z, index, h * w).view(b, z.shape[1], h, w)
    b, h, w = labels.shape
    if pooled.shape[1] <= h * w:
        return SuperpixelAssignment._unchecked(labels, pooled.shape[1], limit_slots=False).decode(pooled)
    # more slots than pixels: the layout of the distinct ids of each image (memory of the pixels, not of N_s,
    # where a layout of every slot took about 60 bytes a slot), decoding their rows of pooled
    assignment = SuperpixelAssignment._unchecked(labels, pooled.shape[1], compact=True)
    ids = assignment._slot_ids(labels).unsqueeze(2).expand(-1, -1, pooled.shape[2])
    return assignment.decode(torch.gather(pooled, 1, ids))


class SuperpixelPool(nn.Module):
    """Module form of :func:`superpixel_pool`, e.g. the superpixel pooling layer of SPN-style networks.

    Args:
        reduce (str): ``"mean"``, ``"sum"`` or ``"max"``.
        upsample (str | None): resize coarser feature maps to the superpixel map first (``"bilinear"``,
            ``"nearest"``, ``"bicubic"``, ``"area"``; SPN uses ``"bilinear"``); ``None``: sizes must match.
        backend (str): ``"auto"``, ``"scatter"`` or ``"sparse"``.
        validate (bool): the id range check of every call; types, shapes and devices are always checked.

    Shape:
        - features: :math:`(B, C, h, w)`
        - superpixels: :math:`(B, H, W)` or :math:`(B, 1, H, W)`, integer
        - mask: :math:`(B, H, W)`, bool, optional
        - output: :math:`(B, N_s, C)`

    Example:
        >>> import torch
        >>> pool = SuperpixelPool("max")
        >>> pool(torch.randn(2, 16, 8, 8), torch.randint(0, 5, (2, 8, 8)), 5).shape
        torch.Size([2, 5, 16])
        >>> spn = SuperpixelPool(upsample="bilinear")  # 4 x 4 features on an 8 x 8 superpixel map
        >>> spn(torch.randn(2, 16, 4, 4), torch.randint(0, 5, (2, 8, 8)), 5).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        reduce: Reduce = "mean",
        *,
        upsample: Upsample | None = None,
        backend: Backend = "auto",
        validate: bool = True,
    ) -> None:
        super().__init__()
        _checks.check_option(reduce, "reduce", REDUCTIONS)
        _checks.check_option(upsample, "upsample", (*UPSAMPLE_MODES, None))
        _checks.check_option(backend, "backend", BACKENDS)
        self.reduce: Reduce = reduce
        self.upsample: Upsample | None = upsample
        self.backend: Backend = backend
        self.validate = _checks.check_bool(validate, "validate")

    def forward(
        self,
        features: Tensor,
        superpixels: Tensor,
        num_superpixels: SupportsIndex | Tensor | None = None,
        *,
        mask: Tensor | None = None,
    ) -> Tensor:
        """See :func:`superpixel_pool`."""
        return superpixel_pool(
            features,
            superpixels,
            num_superpixels,
            mask=mask,
            reduce=self.reduce,
            upsample=self.upsample,
            backend=self.backend,
            validate=self.validate,
        )

    if TYPE_CHECKING:  # nn.Module.__call__ is typed (*args, **kwargs) -> Any: give callers forward's
        # signature (tests/test_typing_user.py checks that the two agree)

        def __call__(
            self,
            features: Tensor,
            superpixels: Tensor,
            num_superpixels: SupportsIndex | Tensor | None = None,
            *,
            mask: Tensor | None = None,
        ) -> Tensor: ...

    def extra_repr(self) -> str:
        s = f"reduce={self.reduce!r}, upsample={self.upsample!r}, backend={self.backend!r}"
        return s if self.validate else s + ", validate=False"
