"""Argument validation with messages that name the argument, the expected and the actual value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "ACTIVATIONS",
    "as_generator",
    "check_activation",
    "check_hidden",
    "check_positive_int",
    "check_slope",
    "check_target",
]

ACTIVATIONS = (None, "relu", "leaky_relu")


def check_positive_int(value: object, name: str) -> int:
    """``value`` as an ``int >= 1`` (bools and floats are rejected with ``TypeError``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def check_hidden(
    hidden: object, in_features: int, name: str = "hidden_features", in_name: str = "in_features"
) -> tuple[int, ...]:
    """Logical hidden widths: a non-empty sequence of ints, each ``>= in_features`` (right inverse)."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"{name} must be a sequence of ints, got {type(hidden).__name__} ({hidden!r})")
    widths = tuple(check_positive_int(h, f"{name}[{i}]") for i, h in enumerate(list(hidden)))
    if not widths:
        raise ValueError(f"{name} must hold at least one width (depth >= 2), got an empty sequence")
    for i, h in enumerate(widths):
        if h < in_features:
            raise ValueError(
                f"{name}[{i}] (hidden layer {i}) has width {h} < {in_name} = {in_features}: "
                "every hidden width must "
                f"be >= {in_name} for the stack to have an exact right inverse"
            )
    return widths


def check_activation(activation: object) -> str | None:
    """One of ``None``, ``"relu"``, ``"leaky_relu"``."""
    if activation is not None and not isinstance(activation, str):
        raise TypeError(
            f"activation must be None or a str in {ACTIVATIONS}, "
            f"got {type(activation).__name__} ({activation!r})"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def check_slope(negative_slope: object, name: str = "negative_slope") -> float:
    """A finite real ``> 0``."""
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(negative_slope).__name__} ({negative_slope!r})")
    slope = float(negative_slope)
    if not (math.isfinite(slope) and slope > 0):
        raise ValueError(f"{name} must be a finite float > 0, got {negative_slope!r}")
    return slope


def check_target(value: object, shape: tuple[int, ...], name: str) -> Tensor:
    """A finite real tensor of exactly ``shape``, returned as float64 on CPU."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {list(shape)}, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(value.shape)}")
    out = value.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(out)).sum())} non-finite entries")
    return out


def as_generator(generator: object) -> torch.Generator | None:
    """``None``, a ``torch.Generator`` (used as is) or an int seed (a fresh CPU generator seeded with it)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, bool) or not isinstance(generator, numbers.Integral):
        raise TypeError(
            f"generator must be None, a torch.Generator or an int seed, "
            f"got {type(generator).__name__} ({generator!r})"
        )
    g = torch.Generator()
    g.manual_seed(int(generator))
    return g
