"""Where the float64 steps of the sums run: on the input's device, or on the host if it has no float64.

A few steps widen small intermediate results to float64 so that the documented error bound holds at any size
(see :doc:`/concepts/uniformization`): the extra accumulators of large superpixels (``_kernels.sums``), the
chunk sums of a large soft-pooling cell (``soft._pool_blocks``), the per-direction tables of
:func:`~sparse_ops.spixel_loss`, and ``1 / count`` of a :class:`~sparse_ops.SuperpixelAssignment`. Apple's
MPS has no float64 (creating such a tensor there raises), so on a device for which :func:`has_float64` is
``False`` those steps copy their operands to the host with :func:`to_host`, run the same float64 arithmetic
there and copy the rounded float32 result back with :func:`to_device`. The operands are small next to the
input (at most two values per 128 pixels and channel for the sums: a total per group and the extra sums;
about one per 7 pixels and channel for the soft pool), the copies are differentiable, and the results are
those of the same float64 arithmetic on a device that has it.

The tests simulate such a device on the CPU (``tests/sparse_ops/_no_float64.py``): they replace the three
functions of this module and fail if a float64 tensor is made anywhere but downstream of :func:`to_host`.
So every copy to or from the host goes through these two functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["has_float64", "to_device", "to_host"]


def has_float64(device: torch.device) -> bool:
    """Whether tensors of dtype float64 can be made on ``device``: not on ``mps``, nor on an ``xpu`` device
    whose properties say it has no fp64; every other device (the CPU, CUDA, meta) has float64."""
    if device.type == "mps":
        return False
    if device.type == "xpu":  # Intel GPUs without fp64 (a tensor on such a device exists, so torch.xpu works)
        return bool(getattr(torch.xpu.get_device_properties(device), "has_fp64", True))
    return True


def to_host(t: Tensor) -> Tensor:
    """A copy of ``t`` on the CPU (differentiable: the gradient goes back to ``t``'s device)."""
    return t.to("cpu", copy=True)


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """A copy of the host tensor ``t`` (never float64) on ``device`` (differentiable)."""
    return t.to(device, copy=True)
