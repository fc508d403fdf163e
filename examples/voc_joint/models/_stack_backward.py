"""What both forms of the fused stack share: the activation and its derivative in place, the unpacking of
the tensors their forward saves, which gradients their backward must compute, and their backward's
autocast state."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sparse_ops.soft import _no_autocast

__all__ = [
    "act_",
    "act_backward_",
    "grad_tracked",
    "gradients_asked",
    "pack_positive_",
    "packed_size",
    "unpack_positive",
    "unpack_saved",
    "without_autocast",
]


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


def without_autocast(
    backward: Callable[[Any, Tensor], tuple[Tensor | None, ...]],
) -> Callable[[Any, Tensor], tuple[Tensor | None, ...]]:
    """``backward`` run with autocast off on its gradient's device, as the forward runs: a ``backward()``
    called inside an autocast region (CPU autograd runs it on the caller's thread) would otherwise run the
    products in the autocast dtype, which gave float32 parameters' pooled stack a dtype error and half
    parameters' weight gradients about 10x the rounding error of the same call outside autocast."""

    @functools.wraps(backward)
    def run(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        with _no_autocast(grad.device):
            return backward(ctx, grad)

    return run


def unpack_saved(
    saved: Sequence[Tensor | None], num_layers: int, has_bias: Sequence[bool]
) -> tuple[Tensor, Tensor | None, list[Tensor], list[Tensor | None], list[Tensor]]:
    """``(s, u, weights, biases, hidden)`` from what the forward saved: ``s``, ``u`` (``None`` when it is
    rebuilt from ``s``), the weights, the biases that exist, then the hidden activations (none when
    recomputing)."""
    s, u = saved[0], saved[1]
    assert s is not None
    ws = list(saved[2 : 2 + num_layers])
    stored = iter(saved[2 + num_layers : 2 + num_layers + sum(has_bias)])
    bs = [next(stored) if flag else None for flag in has_bias]
    hidden = list(saved[2 + num_layers + sum(has_bias) :])
    return s, u, ws, bs, hidden  # type: ignore[return-value]  # weights and hidden are never None


def gradients_asked(
    needs: Sequence[bool], first_param: int, num_layers: int
) -> tuple[list[bool], list[bool], int]:
    """``(need_w, need_b, lowest)`` from ``ctx.needs_input_grad`` (``s``, ``u``, options, then ``(weight,
    bias)`` per layer from index ``first_param``): a frozen layer's weight gradient is not computed, and the
    gradient stops at the lowest layer that still needs it (0 when ``s`` or ``u`` wants one)."""
    need_w = [needs[first_param + 2 * i] for i in range(num_layers)]
    need_b = [needs[first_param + 1 + 2 * i] for i in range(num_layers)]
    lowest = 0 if needs[0] or needs[1] else min(i for i in range(num_layers) if need_w[i] or need_b[i])
    return need_w, need_b, lowest


def grad_tracked(*tensors: Tensor | None) -> bool:
    """Whether autograd records an op on ``tensors``: grad mode on and one of them requires a gradient."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors if t is not None)


def packed_size(numel: int) -> int:
    """Bytes that hold ``numel`` bits packed by :func:`pack_positive_` (whole 8-byte words)."""
    return -(-numel // 64) * 8


def _numpy_bits(h: Tensor) -> bool:
    """Whether the sign bits of ``h`` (:func:`pack_positive_`, :func:`unpack_positive`) go through numpy: a
    float32 or float64 CPU tensor."""
    return h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64)


def pack_positive_(h: Tensor, out: Tensor, *, nan_positive: bool = False) -> Tensor:
    """The bits ``h > 0`` of a flat ``h`` (in its memory order) packed 8 per byte into ``out`` (uint8,
    :func:`packed_size` bytes): the activation's derivative where only its sign is needed, at 1/32 of a
    float32 copy. With ``nan_positive`` the bits are ``not h <= 0``: NaN is set too, as ReLU's backward
    (``threshold_backward``) passes the gradient at a NaN output, where LeakyReLU's takes the slope (NaN is
    not ``> 0``). Element ``8 k + j`` is bit ``j`` of byte ``k``; the padding bits are 0. On the CPU (float32
    and float64) numpy's ``packbits`` makes the bytes in one pass (0.10 ms for 2**20 values on the 2-core VM,
    where the shifts take 0.36-0.52 ms; ``nan_positive``'s negation of the bools added 0.2 ms to 1.2 ms for
    2**22 values, the last hidden layer of a ResNet-18 / B=2 / 128 px joint step); elsewhere shifts and ORs
    on 8-byte words (no multiplication that could overflow) make the same bytes. Returns ``out``."""
    n = h.numel()
    if _numpy_bits(h):
        a = h.detach().numpy()
        if nan_positive:
            is_set = a <= 0
            np.logical_not(is_set, out=is_set)
        else:
            is_set = a > 0
        bits = torch.from_numpy(np.packbits(is_set, bitorder="little"))
        out[: bits.numel()].copy_(bits)
        out[bits.numel() :].zero_()
        return out
    mask = torch.zeros(out.numel() * 8, dtype=torch.bool, device=h.device)
    if nan_positive:
        torch.le(h, 0, out=mask[:n])
        mask[:n].logical_not_()
    else:
        torch.gt(h, 0, out=mask[:n])
    x = mask.view(torch.uint8).view(torch.int64)  # word k: the 0/1 bytes of elements 8k .. 8k + 7
    x |= x >> 7
    x |= x >> 14
    x |= x >> 28  # the low byte of every word now holds its 8 bits
    return out.copy_(x)  # to uint8: the low byte


def unpack_positive(packed: Tensor, out: Tensor) -> Tensor:
    """The inverse of :func:`pack_positive_`: ``out`` (flat, float, the ``h`` it was packed from in memory
    order) gets 1 where the bit is set (``h > 0``, or ``not h <= 0`` with ``nan_positive``) and 0 elsewhere
    (numpy's ``unpackbits`` on the CPU). Returns ``out``."""
    if _numpy_bits(out):
        bits = np.unpackbits(packed.numpy(), count=out.numel(), bitorder="little")
        return out.copy_(torch.from_numpy(bits))
    y = packed.to(torch.int64)
    y = (y | (y << 28)) & 0x0000000F0000000F  # bits 4-7 to the upper half
    y = (y | (y << 14)) & 0x0003000300030003
    y = (y | (y << 7)) & 0x0101010101010101  # bit k of the byte in byte k of the word
    return out.copy_(y.view(torch.uint8)[: out.numel()])
