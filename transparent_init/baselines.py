"""Baseline initializers of the paper's Table 2: random uniform, Xavier, Net2Net identity.

Each takes a module (typically the ``.layers`` of a transparent stack, or a user's ``nn.Sequential``) and
re-initializes every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` inside it in place, so the
same stack can be compared under each scheme with :mod:`transparent_init.metrics`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import SupportsFloat, SupportsIndex

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin

from ._checks import (
    as_generator,
    check_layer_dtype,
    check_module,
    check_own_parameters,
    check_real,
    check_writable,
    zero_width,
)
from .inplace import _CONVS

__all__ = ["net2net_identity_init_", "random_uniform_init_", "xavier_init_"]


def _affine_layers(module: object) -> list[tuple[str, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d]]:
    mod = check_module(module)
    layers = [(n or "module", m) for n, m in mod.named_modules() if isinstance(m, (nn.Linear, *_CONVS))]
    if not layers:
        raise ValueError(f"module has no nn.Linear or nn.Conv1d/2d/3d layer: {type(module).__name__}")
    for name, m in layers:  # checked before any layer is written: nothing changes on an error
        if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():  # its widths read 0 until then
            raise ValueError(
                f"layer {name} ({type(m).__name__}) has no weights yet: run one forward pass through the "
                "module before initializing it"
            )
        check_own_parameters(m, f"layer {name} ({type(m).__name__})")
        check_writable(m, f"layer {name} ({type(m).__name__})")
        check_layer_dtype(m, f"layer {name} ({type(m).__name__})")
        empty = zero_width(m)
        if empty is not None:
            raise ValueError(
                f"layer {name} ({type(m).__name__}) has {empty}: the baselines need every width >= 1 "
                "(a layer without inputs has no fan-in, one without outputs no weights)"
            )
    return layers


def _fill(param: Tensor, gen: torch.Generator | None, init: Callable[[Tensor], object]) -> None:
    """Apply the in-place ``init`` to ``param``, drawing on the generator's device (an int seed makes a CPU
    generator, which cannot draw into CUDA tensors) and copying: the same values on every device."""
    if gen is None or gen.device == param.device:
        init(param)
    else:
        drawn = torch.empty(param.shape, dtype=param.dtype, device=gen.device)
        init(drawn)
        param.copy_(drawn)


@torch.no_grad()
def random_uniform_init_(
    module: nn.Module,
    *,
    bound: SupportsFloat | None = None,
    generator: torch.Generator | SupportsIndex | None = None,
) -> nn.Module:
    """Weights and biases ``~ U(-a, a)`` with ``a = bound`` or ``1 / sqrt(fan_in)`` per layer ("random").

    Args:
        module: every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` in it is re-initialized.
        bound: ``a`` for every layer (a finite real > 0); ``None``: ``1 / sqrt(fan_in)`` per layer.
        generator: ``torch.Generator`` or int seed; ``None`` uses the global RNG.

    Raises:
        TypeError: ``module`` not an ``nn.Module``, ``bound`` not a real, ``generator`` neither ``None``, a
            ``torch.Generator`` nor an int seed.
        ValueError: if ``bound`` is not a finite real > 0, ``2 * bound`` is not representable in a layer's
            dtype (e.g. ``bound = 4e4`` for float16), ``module`` holds no ``nn.Linear`` / ``nn.ConvNd``, a
            layer has zero width (``nn.Linear(0, n)``, ``nn.Linear(n, 0)``: no fan-in or no weights), is a
            lazy layer without weights yet or computes its weight at each forward (a parametrization,
            weight_norm, spectral_norm, pruning) or cannot be written in place (an inference tensor outside
            inference mode, an expanded tensor) or has another dtype than float16, bfloat16, float32 or
            float64 (float8, complex), or a seed lies outside the int64 / uint64 range; nothing is written
            then.

    Returns:
        nn.Module: ``module`` itself, re-initialized in place.

    Example:
        >>> from torch import nn
        >>> net = random_uniform_init_(nn.Sequential(nn.Linear(4, 4)), bound=0.5, generator=0)
        >>> bool(net[0].weight.abs().max() <= 0.5)
        True
    """
    a_fixed = None if bound is None else check_real(bound, "bound")
    gen = as_generator(generator)
    layers = _affine_layers(module)
    for name, m in layers:
        limit = torch.finfo(m.weight.dtype).max
        if a_fixed is not None and 2 * a_fixed > limit:  # uniform_ needs the interval's width representable
            raise ValueError(
                f"bound = {a_fixed:.3g} is too large for {m.weight.dtype} (layer {name!r}): U(-bound, bound) "
                f"needs 2 * bound <= {limit:.3g}, the largest finite {m.weight.dtype}; pass a smaller bound"
            )
    for _, m in layers:
        a = a_fixed if a_fixed is not None else 1.0 / math.sqrt(m.weight[0].numel())
        uniform = functools.partial(nn.init.uniform_, a=-a, b=a, generator=gen)
        _fill(m.weight, gen, uniform)
        if m.bias is not None:
            _fill(m.bias, gen, uniform)
    return module


@torch.no_grad()
def xavier_init_(module: nn.Module, *, generator: torch.Generator | SupportsIndex | None = None) -> nn.Module:
    """Xavier (Glorot) normal weights, zero biases ("Xavier").

    Args:
        module: every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` in it is re-initialized.
        generator: ``torch.Generator`` or int seed; ``None`` uses the global RNG.

    Raises:
        TypeError: ``module`` not an ``nn.Module``, or a bad ``generator`` (as in
            :func:`random_uniform_init_`).
        ValueError: if ``module`` holds no ``nn.Linear`` / ``nn.ConvNd``, or a layer has zero width
            (``nn.Linear(0, n)``, ``nn.Linear(n, 0)``), is a lazy layer without weights yet or computes its
            weight at each forward (a parametrization, weight_norm, spectral_norm, pruning) or cannot be
            written in place (an inference tensor outside inference mode, an expanded tensor) or has another
            dtype than float16, bfloat16, float32 or float64 (float8, complex); nothing is written then.

    Returns:
        nn.Module: ``module`` itself, re-initialized in place.

    Example:
        >>> from torch import nn
        >>> net = xavier_init_(nn.Sequential(nn.Linear(4, 4)), generator=0)
        >>> float(net[0].bias.detach().abs().sum())
        0.0
    """
    gen = as_generator(generator)
    for _, m in _affine_layers(module):
        _fill(m.weight, gen, functools.partial(nn.init.xavier_normal_, generator=gen))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


@torch.no_grad()
def net2net_identity_init_(module: nn.Module) -> nn.Module:
    """(Rectangular) identity weights and zero biases, as Net2Net's identity layers ("Net2Net").

    A stack of such layers is the identity when every width is ``>= in`` and there is no activation; with ReLU
    it computes ``relu(x)`` and drops negative inputs; most weights are exactly zero. An ``nn.Conv1d`` /
    ``nn.Conv2d`` / ``nn.Conv3d`` gets a 1 at the centre tap of its kernel (odd sizes, ``groups=1``; with
    ``padding="same"`` it passes its input on).

    Args:
        module: every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` in it is re-initialized.

    Raises:
        TypeError: ``module`` not an ``nn.Module``.
        ValueError: for a grouped ``nn.ConvNd`` (1d, 2d or 3d) or one with an even kernel size (no centre
            tap), a ``module`` without any ``nn.Linear`` / ``nn.ConvNd``, a layer of zero width
            (``nn.Linear(0, n)``, ``nn.Linear(n, 0)``), a lazy layer without weights yet or one that computes
            its weight at each forward (a parametrization, weight_norm, spectral_norm, pruning) or cannot be
            written in place (an inference tensor outside inference mode, an expanded tensor) or has another
            dtype than float16, bfloat16, float32 or float64 (float8, complex); nothing is written then.

    Returns:
        nn.Module: ``module`` itself, re-initialized in place.

    Example:
        >>> from torch import nn
        >>> net = net2net_identity_init_(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2)))
        >>> x = torch.randn(4, 2)
        >>> bool(torch.equal(net(x), x))
        True
    """
    layers = _affine_layers(module)
    for name, m in layers:  # check all before writing: nothing changes on an error
        if isinstance(m, _CONVS) and (m.groups != 1 or any(k % 2 == 0 for k in m.kernel_size)):
            raise ValueError(
                f"layer {name} ({type(m).__name__}) needs groups=1 and odd kernel sizes for an identity (one "
                f"centre tap per channel), got groups={m.groups}, kernel_size={tuple(m.kernel_size)}"
            )
    for _, m in layers:
        # indexed in place, whatever the weight's strides (a view (out, in, -1) raised on a kernel whose
        # dimensions are not mergeable, e.g. a transposed one, after the layers before it were written)
        w = m.weight
        w.zero_()
        n = min(w.shape[0], w.shape[1])
        idx = torch.arange(n, device=w.device)
        where: tuple[Tensor | int, ...] = (idx, idx, *(k // 2 for k in w.shape[2:]))  # the centre tap
        w[where] = 1.0
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module
