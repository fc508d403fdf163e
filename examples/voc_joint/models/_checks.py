"""Argument checks shared by the networks of the pipeline (DeepLabV3+, SpixelFCN, the joint model)."""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_images", "positive_int"]


def positive_int(value: object, name: str) -> int:
    """``value`` if it is a Python int >= 1 (not a bool), else a ``ValueError`` naming ``name``.

    Example:
        >>> positive_int(3, "num_classes")
        3
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_images(x: Tensor, name: str = "x") -> None:
    """The input contract of both networks: floating-point images ``(B, 3, H, W)``, ``H, W >= 1``; the errors
    call the input ``name``."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = getattr(x, "dtype", type(x).__name__)
        raise TypeError(f"{name} must be a floating-point tensor of normalized images, got {got}")
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have shape (B, 3, H, W) with H, W >= 1, got {tuple(x.shape)}")
