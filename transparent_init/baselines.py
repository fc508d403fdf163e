"""Baseline initializers of the paper's Table 2: random uniform, Xavier, Net2Net identity.

Each takes a module (typically the ``.layers`` of a transparent stack, or a user's ``nn.Sequential``) and
re-initializes every ``nn.Linear`` / ``nn.Conv2d`` inside it in place, so the same stack can be compared under
each scheme with :mod:`transparent_init.metrics`.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ._checks import as_generator

__all__ = ["net2net_identity_init_", "random_uniform_init_", "xavier_init_"]


def _affine_layers(module: nn.Module) -> list[nn.Linear | nn.Conv2d]:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise ValueError(f"module has no nn.Linear or nn.Conv2d layer: {type(module).__name__}")
    return layers


@torch.no_grad()
def random_uniform_init_(
    module: nn.Module, *, bound: float | None = None, generator: torch.Generator | int | None = None
) -> nn.Module:
    """Weights and biases ``~ U(-a, a)`` with ``a = bound`` or ``1 / sqrt(fan_in)`` per layer ("random").

    Example:
        >>> from torch import nn
        >>> net = random_uniform_init_(nn.Sequential(nn.Linear(4, 4)), bound=0.5, generator=0)
        >>> bool(net[0].weight.abs().max() <= 0.5)
        True
    """
    if bound is not None and (
        isinstance(bound, bool) or not isinstance(bound, numbers.Real) or not bound > 0
    ):
        raise ValueError(f"bound must be a real > 0 or None, got {bound!r}")
    gen = as_generator(generator)
    for m in _affine_layers(module):
        fan_in = m.weight[0].numel()
        a = float(bound) if bound is not None else 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(m.weight, -a, a, generator=gen)
        if m.bias is not None:
            nn.init.uniform_(m.bias, -a, a, generator=gen)
    return module


@torch.no_grad()
def xavier_init_(module: nn.Module, *, generator: torch.Generator | int | None = None) -> nn.Module:
    """Xavier (Glorot) normal weights, zero biases ("Xavier").

    Example:
        >>> from torch import nn
        >>> net = xavier_init_(nn.Sequential(nn.Linear(4, 4)), generator=0)
        >>> float(net[0].bias.detach().abs().sum())
        0.0
    """
    gen = as_generator(generator)
    for m in _affine_layers(module):
        nn.init.xavier_normal_(m.weight, generator=gen)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


@torch.no_grad()
def net2net_identity_init_(module: nn.Module) -> nn.Module:
    """(Rectangular) identity weights and zero biases, as Net2Net's identity layers ("Net2Net").

    A stack of such layers is the identity when every width is ``>= in`` and there is no activation; with ReLU
    it computes ``relu(x)`` and drops negative inputs; most weights are exactly zero.

    Example:
        >>> from torch import nn
        >>> net = net2net_identity_init_(nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2)))
        >>> x = torch.randn(4, 2)
        >>> bool(torch.equal(net(x), x))
        True
    """
    for m in _affine_layers(module):
        w = m.weight.view(m.weight.shape[0], m.weight.shape[1], -1)
        w.zero_()
        centre = w.shape[2] // 2
        n = min(w.shape[0], w.shape[1])
        idx = torch.arange(n, device=w.device)
        w[idx, idx, centre] = 1.0
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module
