"""The stack's activation and its derivative, in place (shared by both forms of the fused stack)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["act_", "act_backward_"]


def act_(z: Tensor, slope: float | None) -> Tensor:
    """The activation in place: ``None`` none, ``0.0`` ReLU, ``> 0`` LeakyReLU."""
    if slope is None:
        return z
    return torch.relu_(z) if slope == 0.0 else F.leaky_relu_(z, slope)


def act_backward_(g: Tensor, h: Tensor, slope: float | None) -> Tensor:
    """``g act'(z)`` in place, read off the activation's output ``h``: ``h > 0`` iff ``z > 0``."""
    if slope is None:
        return g
    if slope == 0.0:
        return torch.ops.aten.threshold_backward.grad_input(g, h, 0.0, grad_input=g)
    return torch.ops.aten.leaky_relu_backward.grad_input(g, h, slope, True, grad_input=g)
