"""Superpixel pooling network (SPN) parts: superpixel pooling, a global average over superpixels, SP-CAM.

After Kwak, Hong, Han, "Weakly Supervised Semantic Segmentation using Superpixel Pooling Network" (AAAI 2017).
A feature map (resized to the superpixel map if its size differs) is average-pooled over every superpixel,
giving one feature vector per superpixel. For image-level classification the superpixel vectors are averaged
(every non-empty superpixel counts once, whatever its size), and the superpixel-pooled class activation map
(SP-CAM) scores every superpixel with the classifier and broadcasts the score back to its pixels:

.. math::

    z_s = \\frac{1}{|s|} \\sum_{p \\in s} f(p), \\qquad
    g = \\frac{1}{|\\{s : |s| > 0\\}|} \\sum_{s : |s| > 0} z_s, \\qquad
    \\mathrm{CAM}_k(p) = w_k^\\top z_{s(p)} + b_k .

All pooling and broadcasting goes through :func:`~sparse_ops.superpixel_pool` (whose ``upsample`` option
resizes coarse feature maps; its module :class:`~sparse_ops.SuperpixelPool` is SPN's superpixel pooling layer)
and :func:`~sparse_ops.superpixel_unpool`; this module only adds the averaging over superpixels and the
classifier.

**Memory.** The superpixels are pooled on the distinct ids of each image (compact slots, as
:func:`~sparse_ops.uniformize` does), not on ``N_s = max id + 1`` slots: the image features, the CAM and
the classifier head's logits take memory proportional to the pixels whatever the id values, and no slot limit
applies to them (``num_superpixels`` still bounds the ids when validated). Only the per-superpixel scores
of :func:`~sparse_ops.superpixel_cam` (``return_superpixel_scores=True``) are indexed by id, ``[B, N_s,
K]``: that output alone is ``N_s`` wide, and refused above ``max(2**16, 16 * H * W)`` slots like
:func:`~sparse_ops.superpixel_pool`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple, SupportsIndex, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_ops import _checks
from sparse_ops.assignment import SuperpixelAssignment
from sparse_ops.pooling import UPSAMPLE_MODES, Upsample, features_and_assignment

__all__ = ["SuperpixelCam", "SuperpixelClassifier", "superpixel_cam", "superpixel_global_average"]


class SuperpixelCam(NamedTuple):
    """Output of :func:`superpixel_cam` and :meth:`SuperpixelClassifier.cam` with
    ``return_superpixel_scores=True``. A tuple: ``cam, scores = ...`` unpacks it.

    Attributes:
        cam (Tensor[B, K, H, W]): the SP-CAM, every pixel scored as its superpixel.
        superpixel_scores (Tensor[B, N_s, K]): the score of every superpixel, row ``s`` for id ``s`` (an
            empty or absent superpixel scores the classifier's bias, or 0).
    """

    cam: Tensor
    superpixel_scores: Tensor


def _superpixel_means(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None,
    mask: Tensor | None,
    upsample: Upsample | None,
    validate: bool,
    *,
    features_checked: bool = False,
) -> tuple[Tensor, SuperpixelAssignment]:
    """Validated ``([B, S, C] superpixel means, assignment)`` of (resized) features over the compact slots
    (the distinct ids of each image, in id order; ``S <= H * W``, see the module's *Memory*), means in float32
    for half-precision features (the callers round once at the end). ``features_checked``: the caller has
    checked ``features`` (each input is checked once per call)."""
    features, assignment = features_and_assignment(
        features,
        superpixels,
        num_superpixels,
        mask,
        upsample,
        "auto",
        validate,
        features_checked=features_checked,
        compact=True,
    )
    accumulation = torch.float32 if features.dtype in (torch.float16, torch.bfloat16) else features.dtype
    return assignment.pool(features.to(accumulation), "mean"), assignment


def superpixel_global_average(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None = None,
    *,
    mask: Tensor | None = None,
    upsample: Upsample | None = "bilinear",
    validate: bool = True,
) -> Tensor:
    """Image-level feature: the mean of the superpixel means over the non-empty superpixels.

    Args:
        features (Tensor[B, C, h, w]): feature map; resized to the superpixel map when its size differs
            (coarser maps are upsampled, finer ones downsampled).
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel ids.
        num_superpixels (int | LongTensor[B] | None): the bound of the ids, as in
            :func:`~sparse_ops.superpixel_pool`, but without its slot limit: the superpixels are pooled on the
            distinct ids of each image, so memory is proportional to the pixels whatever the id values.
        mask (BoolTensor[B, H, W] | None): pixels that take part.
        upsample (str | None): interpolation mode for features of another size; default ``"bilinear"``
            (SPN pools a CNN's coarser feature maps; :func:`~sparse_ops.superpixel_pool`'s default is
            ``None``). ``None``: sizes must match, which also catches a ``[B, H, W, C]`` tensor that resizing
            silently accepts (with the default it is read as ``C = H`` channels, resized).
        validate (bool): check the id range (a host-device synchronisation, which breaks ``torch.compile``
            graphs); types, shapes and devices are always checked.

    Returns:
        Tensor[B, C]: per-image features (0 for an image without any counted pixel).

    Example:
        >>> f = torch.tensor([[[[1., 1., 1., 5.]]]])
        >>> sp = torch.tensor([[[0, 0, 0, 1]]])
        >>> superpixel_global_average(f, sp)  # (1 + 5) / 2, not the pixel mean 2
        tensor([[3.]])
    """
    validate = _checks.check_bool(validate, "validate")
    pooled, assignment = _superpixel_means(features, superpixels, num_superpixels, mask, upsample, validate)
    return _mean_over_present(pooled, assignment, features.dtype)


def _mean_over_present(pooled: Tensor, assignment: SuperpixelAssignment, dtype: torch.dtype) -> Tensor:
    """``[B, C]``: the mean of the superpixel means ``pooled[B, S, C]`` over the non-empty superpixels."""
    present = assignment.counts > 0  # [B, S]
    kept = torch.where(present.unsqueeze(-1), pooled, 0.0)  # [B, S, C]
    b, s, c = kept.shape
    # the sum over S onto a doubled output [B, C, 2] (a stride-0 view: no copy), whose two columns are equal:
    # PyTorch splits a reduction to a single element (B = C = 1) among the threads from 32768 elements on,
    # and the partial sums then depend on the thread count; with two outputs or more it splits the outputs,
    # each summed whole by one thread (the same bits for any torch.set_num_threads)
    total = kept.unsqueeze(-1).expand(b, s, c, 2).sum(dim=1)[..., 0]  # a reduction: not downcast by autocast
    return (total / present.sum(dim=1, keepdim=True).clamp_min(1)).to(dtype)


def _scores_by_id(
    scores: Tensor, empty: Tensor, assignment: SuperpixelAssignment, superpixels: Tensor, inferred: bool
) -> Tensor:
    """The scores of the compact slots placed at their superpixel ids: ``[B, N_s, K]``, contiguous.

    Args:
        scores (Tensor[B, S, K]): the score of every compact slot of ``assignment`` (in id order).
        empty (Tensor[1, 1, K]): the score of an empty superpixel (the classifier applied to a zero mean).
        assignment (SuperpixelAssignment): the compact assignment of ``superpixels``.
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): the checked label map.
        inferred (bool): ``N_s`` was inferred as ``max id + 1`` (for the error of a too large ``N_s``).

    Raises:
        ValueError: if ``N_s`` is above ``max(2**16, 16 * H * W)``, before anything ``N_s`` wide exists.
    """
    b, num_slots, k = scores.shape
    num_ids = assignment._num_ids
    num_pixels = assignment.height * assignment.width
    _checks.check_slot_count(num_ids, num_pixels, inferred)
    owner = assignment._slot_ids(superpixels)  # the pixels of a slot share its id: any of them writes it
    # slots without pixels (an image with fewer distinct ids than S) go to an extra row, cut off below
    target = torch.where(assignment._layout.sizes > 0, owner, num_ids)
    by_id = empty.expand(b, num_ids + 1, k).scatter(1, target.unsqueeze(-1).expand(b, num_slots, k), scores)
    return by_id[:, :num_ids].contiguous()


def _check_classifier_dtype(
    features: Tensor, weight: Tensor, bias: Tensor | None, fix: str = "cast it with {name}.to(features.dtype)"
) -> None:
    """Refuse classifier parameters of another dtype than ``features`` where ``F.linear`` would raise a
    ``RuntimeError`` naming no argument: outside autocast, and under it where one of the two is float64
    (autocast casts every floating tensor but a float64 one) or the parameter is not floating (an integer,
    bool or complex one, which autocast casts neither); ``fix`` is the advice, ``{name}`` the parameter's
    name."""
    # the meta device has no autocast (torch.is_autocast_enabled raises there)
    autocast = not features.is_meta and torch.is_autocast_enabled(features.device.type)
    for name, param in (("weight", weight), ("bias", bias)):
        if param is None or param.dtype == features.dtype:
            continue
        if not param.is_floating_point():  # autocast or not: no cast makes F.linear take it
            raise TypeError(
                f"{name} must be a floating tensor of the dtype of features ({features.dtype}), got "
                f"{param.dtype}; {fix.format(name=name)}"
            )
        float64 = torch.float64 in (param.dtype, features.dtype)
        if autocast and not float64:
            continue  # autocast casts both to its own dtype
        advice = fix.format(name=name)
        if float64:
            advice += " (torch.autocast casts no float64 tensor)"
        else:
            advice += " or run under torch.autocast"
        raise TypeError(
            f"{name} must have the dtype of features ({features.dtype}), got {param.dtype}; {advice}"
        )


@overload
def superpixel_cam(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None = ...,
    *,
    weight: Tensor,
    bias: Tensor | None = ...,
    mask: Tensor | None = ...,
    upsample: Upsample | None = ...,
    return_superpixel_scores: Literal[False] = ...,
    validate: bool = ...,
) -> Tensor: ...


@overload
def superpixel_cam(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None = ...,
    *,
    weight: Tensor,
    bias: Tensor | None = ...,
    mask: Tensor | None = ...,
    upsample: Upsample | None = ...,
    return_superpixel_scores: Literal[True],
    validate: bool = ...,
) -> SuperpixelCam: ...


@overload
def superpixel_cam(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None = ...,
    *,
    weight: Tensor,
    bias: Tensor | None = ...,
    mask: Tensor | None = ...,
    upsample: Upsample | None = ...,
    return_superpixel_scores: bool,
    validate: bool = ...,
) -> Tensor | SuperpixelCam: ...


def superpixel_cam(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None = None,
    *,
    weight: Tensor,
    bias: Tensor | None = None,
    mask: Tensor | None = None,
    upsample: Upsample | None = "bilinear",
    return_superpixel_scores: bool = False,
    validate: bool = True,
) -> Tensor | SuperpixelCam:
    """Superpixel-pooled class activation map (SP-CAM).

    Every superpixel is scored by the linear classifier on its mean feature, and the score is broadcast to
    its pixels. Because the classifier is linear, this equals the superpixel average of the pixel CAM.

    Args:
        features (Tensor[B, C, h, w]): feature map; resized to the superpixel map when its size differs
            (coarser maps are upsampled, finer ones downsampled).
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel ids.
        num_superpixels (int | LongTensor[B] | None): the bound of the ids, as in
            :func:`~sparse_ops.superpixel_pool` (``N_s``, the rows of the superpixel scores); the superpixels
            are pooled on the distinct ids of each image, so only the scores are ``N_s`` wide (and refused
            above ``max(2**16, 16 * H * W)``), the CAM's memory is proportional to the pixels.
        weight (Tensor[K, C]): classifier weights (e.g. ``nn.Linear(C, K).weight``).
        bias (Tensor[K] | None): classifier bias.
        mask (BoolTensor[B, H, W] | None): pixels that take part in the pooling (others still receive the
            score of their superpixel).
        upsample (str | None): interpolation mode for features of another size; default ``"bilinear"``, as
            :func:`superpixel_global_average` (``None``: sizes must match).
        return_superpixel_scores (bool): also return the per-superpixel scores.
        validate (bool): check the id range (a host-device synchronisation, which breaks ``torch.compile``
            graphs); types, shapes and devices are always checked.

    Returns:
        Tensor[B, K, H, W] | SuperpixelCam: the SP-CAM; with ``return_superpixel_scores`` a
        :class:`SuperpixelCam` ``(cam, superpixel_scores)``, the scores ``Tensor[B, N_s, K]`` row ``s`` for
        id ``s`` (an empty or absent superpixel scores ``bias``, or 0).

    Example:
        >>> f = torch.tensor([[[[1., 3., 10.]], [[0., 2., 4.]]]])  # C = 2, H = 1, W = 3
        >>> sp = torch.tensor([[[0, 0, 1]]])
        >>> w = torch.tensor([[1., 0.], [0., 1.]])                 # K = 2 classes: copy the channels
        >>> superpixel_cam(f, sp, weight=w)
        tensor([[[[ 2.,  2., 10.]],
        <BLANKLINE>
                 [[ 1.,  1.,  4.]]]])
    """
    validate = _checks.check_bool(validate, "validate")
    return_superpixel_scores = _checks.check_bool(return_superpixel_scores, "return_superpixel_scores")
    # the features first: a label map passed first gets the swapped-arguments hint, not a weight error
    _checks.check_floating(features, "features", "[B, C, h, w]", before_labels=True)
    _checks.check_classifier(weight, bias, features)
    _check_classifier_dtype(features, weight, bias)
    pooled, assignment = _superpixel_means(
        features, superpixels, num_superpixels, mask, upsample, validate, features_checked=True
    )
    scores = F.linear(pooled.to(features.dtype), weight, bias)  # [B, S, K]; a linear layer, autocast applies
    cam = assignment.decode(scores)
    if not return_superpixel_scores:
        return cam
    # an empty superpixel's mean is 0: its score is the classifier's at 0 (in the dtype autocast gives)
    empty = F.linear(pooled.new_zeros(1, 1, pooled.shape[-1], dtype=features.dtype), weight, bias)
    return SuperpixelCam(cam, _scores_by_id(scores, empty, assignment, superpixels, num_superpixels is None))


class SuperpixelClassifier(nn.Module):
    """SPN-style image classifier head with an SP-CAM readout.

    A linear classifier on the global superpixel average gives image-level logits (train it with a
    multi-label loss); :meth:`cam` gives the SP-CAM of the same classifier.

    Args:
        in_channels (int): feature channels ``C``.
        num_classes (int): classes ``K``.
        bias (bool): learn a bias.
        upsample (str | None): interpolation mode for feature maps of another size; default
            ``"bilinear"``, as :func:`superpixel_global_average` (``None``: sizes must match).
        validate (bool): the id range check of every call; types, shapes and devices are always checked.

    Shape:
        - features: :math:`(B, C, h, w)`
        - superpixels: :math:`(B, H, W)` or :math:`(B, 1, H, W)`, integer
        - mask: :math:`(B, H, W)`, bool, optional
        - output: :math:`(B, K)`; :meth:`cam`: :math:`(B, K, H, W)` (with ``return_superpixel_scores=True``
          also the scores, :math:`(B, N_s, K)`)

    Raises:
        TypeError: ``in_channels`` or ``num_classes`` not an int, ``bias`` or ``validate`` not a bool, or
            ``upsample`` not a string or ``None`` (when the module is built).
        ValueError: ``in_channels`` or ``num_classes`` below 1, an ``upsample`` mode that does not exist, or
            a classifier weight ``[num_classes, in_channels]`` no tensor can hold (its size in bytes above
            ``2**63 - 1``; one the memory cannot hold gets ``nn.Linear``'s out-of-memory error).

    Example:
        >>> head = SuperpixelClassifier(8, 3)
        >>> f, sp = torch.randn(2, 8, 4, 4), torch.randint(0, 5, (2, 8, 8))
        >>> head(f, sp).shape, head.cam(f, sp).shape
        (torch.Size([2, 3]), torch.Size([2, 3, 8, 8]))
    """

    def __init__(
        self,
        in_channels: SupportsIndex,
        num_classes: SupportsIndex,
        *,
        bias: bool = True,
        upsample: Upsample | None = "bilinear",
        validate: bool = True,
    ) -> None:
        super().__init__()
        _checks.check_option(upsample, "upsample", (*UPSAMPLE_MODES, None))
        channels = _checks.check_int(in_channels, "in_channels", 1)
        classes = _checks.check_int(num_classes, "num_classes", 1)
        bias = _checks.check_bool(bias, "bias")
        # the weight [K, C] in the default dtype: one no tensor can hold raised PyTorch's overflow errors,
        # which named no argument (one the memory cannot hold gets nn.Linear's out-of-memory error)
        _checks.check_tensor_size(
            f"in_channels x num_classes = {channels} x {classes} is too large for the classifier",
            (classes, channels),
            torch.get_default_dtype(),
        )
        self.classifier = nn.Linear(channels, classes, bias=bias)
        self.upsample: Upsample | None = upsample
        self.validate = _checks.check_bool(validate, "validate")

    def forward(
        self,
        features: Tensor,
        superpixels: Tensor,
        num_superpixels: SupportsIndex | Tensor | None = None,
        *,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Image logits ``[B, K]`` of the global superpixel average (:func:`superpixel_global_average`)."""
        # the features first (the swapped-arguments hint), then the classifier's in_channels
        _checks.check_floating(features, "features", "[B, C, h, w]", before_labels=True)
        self._check_channels(features)
        self._check_parameters(features)
        _checks.check_classifier(self.classifier.weight, self.classifier.bias, features)  # the shapes
        means, assignment = _superpixel_means(
            features, superpixels, num_superpixels, mask, self.upsample, self.validate, features_checked=True
        )
        out: Tensor = self.classifier(_mean_over_present(means, assignment, features.dtype))
        return out

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

    @overload
    def cam(
        self,
        features: Tensor,
        superpixels: Tensor,
        num_superpixels: SupportsIndex | Tensor | None = ...,
        *,
        mask: Tensor | None = ...,
        return_superpixel_scores: Literal[False] = ...,
    ) -> Tensor: ...

    @overload
    def cam(
        self,
        features: Tensor,
        superpixels: Tensor,
        num_superpixels: SupportsIndex | Tensor | None = ...,
        *,
        mask: Tensor | None = ...,
        return_superpixel_scores: Literal[True],
    ) -> SuperpixelCam: ...

    @overload
    def cam(
        self,
        features: Tensor,
        superpixels: Tensor,
        num_superpixels: SupportsIndex | Tensor | None = ...,
        *,
        mask: Tensor | None = ...,
        return_superpixel_scores: bool,
    ) -> Tensor | SuperpixelCam: ...

    def cam(
        self,
        features: Tensor,
        superpixels: Tensor,
        num_superpixels: SupportsIndex | Tensor | None = None,
        *,
        mask: Tensor | None = None,
        return_superpixel_scores: bool = False,
    ) -> Tensor | SuperpixelCam:
        """SP-CAM of this classifier, ``Tensor[B, K, H, W]``; with ``return_superpixel_scores`` a
        :class:`SuperpixelCam` with the per-superpixel scores ``Tensor[B, N_s, K]`` too (see
        :func:`superpixel_cam`)."""
        if isinstance(features, Tensor) and features.is_floating_point():  # else superpixel_cam says why
            self._check_channels(features)
            if features.dtype in _checks.FLOAT_DTYPES and features.dim() == 4:  # else superpixel_cam says why
                self._check_parameters(features)
        return superpixel_cam(
            features,
            superpixels,
            num_superpixels,
            weight=self.classifier.weight,
            bias=self.classifier.bias,
            mask=mask,
            upsample=self.upsample,
            return_superpixel_scores=return_superpixel_scores,
            validate=self.validate,
        )

    def _check_parameters(self, features: Tensor) -> None:
        """Refuse classifier parameters on another device or (outside autocast) of another dtype than
        ``features``, with the module's fix: ``superpixel_cam``'s advice (``weight.to(...)``) does not move or
        cast the parameters of a module."""
        for name, param in (("weight", self.classifier.weight), ("bias", self.classifier.bias)):
            if param is not None and param.device != features.device:
                where = repr(str(features.device))
                fix = (
                    f"materialize the module with .to_empty(device={where}) (the classifier's {name}) and "
                    "initialize it, e.g. with module.classifier.reset_parameters()"
                    if param.is_meta
                    else f"move the module with .to({where}) (the classifier's {name})"
                )
                raise ValueError(
                    f"{name} must be on the same device as features ({features.device}), got {param.device}; "
                    + fix
                )
        _check_classifier_dtype(
            features,
            self.classifier.weight,
            self.classifier.bias,
            f"cast the module with .to({features.dtype}) (the classifier's {{name}})",
        )

    def _check_channels(self, features: Tensor) -> None:
        """Refuse features whose channels differ from the classifier's ``in_channels`` (naming both)."""
        if features.dim() == 4 and features.shape[1] != self.classifier.in_features:
            raise ValueError(
                f"features have C={features.shape[1]} channels, but this SuperpixelClassifier was built with "
                f"in_channels={self.classifier.in_features}, got features of shape {tuple(features.shape)}"
            )

    def extra_repr(self) -> str:
        return f"upsample={self.upsample!r}" + ("" if self.validate else ", validate=False")
