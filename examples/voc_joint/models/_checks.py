"""Argument checks shared by the networks of the pipeline (DeepLabV3+, SpixelFCN, the joint model)."""

from __future__ import annotations

import itertools
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")

__all__ = [
    "FUSION_LAYER_MAX",
    "FUSION_WEIGHTS_MAX",
    "MAX_CELL",
    "MAX_CENTRE_BIAS",
    "MAX_CLASSES",
    "MAX_FUSION_DEPTH",
    "MAX_FUSION_WIDTH",
    "MAX_SPIXEL_WIDTH",
    "MAX_WIDTH",
    "bounded_int",
    "check_images",
    "finite_number",
    "fusion_weights",
    "fusion_weights_problem",
    "fusion_widths_problem",
    "is_number_within",
    "one_of",
    "type_name",
]

# The bounds of the networks' constructors and of the config schema of checkpoints (models.build.SCHEMAS):
# one place, so that every model that can be built can be saved and loaded again.
#: Bounds of classes, DeepLabV3+'s widths and the superpixel cell: far above any real model, far below an
#: allocation that cannot succeed.
MAX_CLASSES, MAX_WIDTH, MAX_CELL = 1024, 4096, 1024
#: SpixelFCN's first-stage width (its deepest stage is 16x wider: 4096 channels, 600 MB of 3x3 weights).
MAX_SPIXEL_WIDTH = 256
#: SpixelFCN's ``centre_bias`` (a logit: 100 already makes the centre cell's weight 1 - e**-100).
MAX_CENTRE_BIAS = 100.0
#: Largest logical fusion width, and largest product of two consecutive ones (a hidden layer's weights before
#: the activation doubles both widths): the initialization of 8192 x 8192 takes about 70 s and 4 GB on one CPU
#: thread (time grows about as width**2.6, memory as width**2); 65536 x 65536 would be a 64 GiB layer. The
#: training CLI's ``--fusion-hidden`` has the same bounds.
MAX_FUSION_WIDTH, FUSION_LAYER_MAX = 65536, 2**26
#: Most hidden layers of the fusion stack.
MAX_FUSION_DEPTH = 16
#: Most weights of the whole fusion stack, counted as :data:`FUSION_LAYER_MAX` counts (logical widths, before
#: the activation doubles the hidden ones): ``2C x h_1 + h_1 x h_2 + ... + h_L x C`` (:func:`fusion_weights`).
#: Four of the largest layers: 4 GiB of float32 weights once doubled, about 5 minutes to initialize; far above
#: any real stack (the paper's (64, 64) with 21 classes: 8 k; 16 widths of 2048 with 1024 classes: 69 M).
#: The layer bound alone let 16 widths of 8192 pass: 1e9 logical weights (15 GiB, 17 minutes).
FUSION_WEIGHTS_MAX = 4 * FUSION_LAYER_MAX


def bounded_int(value: object, name: str, high: int) -> int:
    """``value`` if it is a Python int in ``[1, high]`` (not a bool), else a ``ValueError`` naming ``name``.

    Example:
        >>> bounded_int(300, "width", 256)
        Traceback (most recent call last):
        ...
        ValueError: width must be an int in [1, 256], got 300
    """
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
        raise ValueError(f"{name} must be an int in [1, {high}], got {value!r}")
    return value


def one_of(value: object, name: str, options: tuple[T, ...], expected: str | None = None) -> T:
    """The option of ``options`` equal to ``value``, else a ``ValueError`` naming ``name`` (and ``expected``,
    default ``"one of <options>"``).

    ``value`` is compared only with the options of its own kind: a ``str`` subclass (e.g. ``numpy.str_``)
    matches its plain ``str``, but a bool, a float, a numpy integer or a tensor never matches an int. The
    plain option is returned, for the ``config`` of a model: a checkpoint is read weights-only, which refuses
    a file holding a numpy scalar.

    Example:
        >>> one_of(16.0, "output_stride", (8, 16))
        Traceback (most recent call last):
        ...
        ValueError: output_stride must be one of (8, 16), got 16.0
    """
    for option in options:
        if isinstance(value, type(option)) and not isinstance(value, bool) and value == option:
            return option
    raise ValueError(f"{name} must be {expected or f'one of {options}'}, got {value!r}")


def fusion_widths_problem(widths: object) -> str | None:
    """``None`` if ``widths`` are valid logical hidden widths of the fusion stack, else what was expected.

    Valid: a list or tuple of 1 to :data:`MAX_FUSION_DEPTH` ints in ``[1, MAX_FUSION_WIDTH]``, each two
    consecutive ones with a product of at most :data:`FUSION_LAYER_MAX`.

    Example:
        >>> fusion_widths_problem([64, 64]) is None
        True
    """
    ok = (
        isinstance(widths, (list, tuple))
        and 1 <= len(widths) <= MAX_FUSION_DEPTH
        and all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_FUSION_WIDTH for h in widths)
        and all(a * b <= FUSION_LAYER_MAX for a, b in itertools.pairwise(widths))
    )
    if ok:
        return None
    return (
        f"a list of 1 to {MAX_FUSION_DEPTH} ints in [1, {MAX_FUSION_WIDTH}], each two consecutive ones with "
        f"a product of at most {FUSION_LAYER_MAX}"
    )


def fusion_weights(widths: list[int] | tuple[int, ...], num_classes: int) -> int:
    """The logical weights of a fusion stack of hidden ``widths`` for ``num_classes`` classes: ``2C x h_1 +
    h_1 x h_2 + ... + h_L x C`` (counted before the activation doubles the hidden widths, as
    :data:`FUSION_LAYER_MAX`).

    Example:
        >>> fusion_weights([64, 64], 21)
        8128
    """
    widths = list(widths)
    return (
        2 * num_classes * widths[0]
        + sum(a * b for a, b in itertools.pairwise(widths))
        + widths[-1] * num_classes
    )


def fusion_weights_problem(widths: list[int] | tuple[int, ...], num_classes: int) -> str | None:
    """``None`` if the stack of valid hidden ``widths`` (:func:`fusion_widths_problem`) for ``num_classes``
    has at most :data:`FUSION_WEIGHTS_MAX` weights, else what it has and may have.

    Example:
        >>> fusion_weights_problem([8192] * 16, 21)[:42]
        'makes 1007149056 fusion weights with 21 cl'
    """
    total = fusion_weights(widths, num_classes)
    if total <= FUSION_WEIGHTS_MAX:
        return None
    return (
        f"makes {total} fusion weights with {num_classes} classes (2C x h_1 + h_1 x h_2 + ... + h_L x C, "
        f"before the activation doubles the hidden widths), at most {FUSION_WEIGHTS_MAX}"
    )


def is_number_within(value: object, bound: float) -> bool:
    """Whether ``value`` is an int or float (not a bool) in ``[-bound, bound]``: False for NaN and infinities,
    exact for any int (``math.isfinite`` raised ``OverflowError`` on ``10**400``).

    Example:
        >>> is_number_within(10**400, 100.0), is_number_within(float("nan"), 100.0)
        (False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= bound


def finite_number(value: object, name: str, bound: float) -> float:
    """``value`` if it is a finite int or float in ``[-bound, bound]`` (not a bool), else a ``ValueError``.

    Example:
        >>> finite_number(0.5, "centre_bias", 100.0)
        0.5
    """
    if not is_number_within(value, bound):
        raise ValueError(f"{name} must be a finite number in [-{bound:g}, {bound:g}], got {value!r}")
    return value  # type: ignore[return-value]


def type_name(value: object) -> str:
    """The name of ``value``'s type for an error message, with its module unless it is a builtin: numpy's
    ``float32`` array and ``bool`` scalar read as Python's types without it.

    Example:
        >>> import numpy as np
        >>> type_name(True), type_name(np.bool_(True)), type_name(np.zeros(1))
        ('bool', 'numpy.bool', 'numpy.ndarray')
    """
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def check_images(x: Tensor, name: str = "x", weight: Tensor | None = None) -> None:
    """The input contract of both networks: floating-point images ``(B, 3, H, W)``, ``H, W >= 1``, on the
    device of ``weight`` (the first weight the images meet) and, outside ``torch.autocast`` for that device,
    of its dtype; the errors call the input ``name``. (PyTorch's own errors for the last two named neither
    the input nor the remedy: "expected scalar type Float but found Double".)"""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        # a tensor's dtype, else the type with its module: a numpy float32 array read "got float32"
        got = str(x.dtype) if isinstance(x, Tensor) else type_name(x)
        raise TypeError(f"{name} must be a floating-point tensor of normalized images, got {got}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have shape (B, 3, H, W) with H, W >= 1, got {tuple(x.shape)}")
    if weight is None:
        return
    if x.device != weight.device:
        raise ValueError(
            f"{name} must be on the network's device {weight.device} (move it with "
            f".to({str(weight.device)!r})), got {x.device}"
        )
    # (the meta device has no autocast: torch.is_autocast_enabled raises there, as sparse_ops.spn notes)
    if x.dtype != weight.dtype and (x.is_meta or not torch.is_autocast_enabled(x.device.type)):
        raise TypeError(
            f"{name} must have the dtype of the network's weights, {weight.dtype} (convert it with "
            f".to({weight.dtype}), or run under torch.autocast), got {x.dtype}"
        )
