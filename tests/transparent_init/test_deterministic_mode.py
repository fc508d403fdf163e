"""The builders run under ``torch.use_deterministic_algorithms(True)`` on the CPU, without a warning, and a
``generator`` seed repeats their parameters bit for bit there (docs/concepts/transparent_init.rst).

PyTorch raises or warns (``warn_only``) for kernels that have no deterministic implementation; a builder that
started to use one (a new draw, factorization or scatter) fails here. Float64 stacks may differ between
thread counts (LAPACK / BLAS): the repetition is checked at one count.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

import transparent_init as ti


def _parameters() -> list[torch.Tensor]:
    """The parameters of every builder with a generator (both dtypes, each activation, a target map)."""
    out: list[torch.Tensor] = []
    for dtype in (torch.float32, torch.float64):
        for activation in ("relu", "leaky_relu", None):
            target = ti.selection_weight(12, range(6, 12), dtype=dtype)
            stack = ti.build_transparent_stack(
                12, [24, 16], 6, activation=activation, target_weight=target, generator=0, dtype=dtype
            )
            out += [p.detach().clone() for p in stack.parameters()]
    out += [p.detach().clone() for p in ti.TransparentConv1x1(8, [16, 16], generator=1).parameters()]
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 10))
    for init in (ti.xavier_init_, ti.random_uniform_init_, ti.transparent_init_):
        init(net, generator=3)
        out += [p.detach().clone() for p in net.parameters()]
    return out


def test_builders_run_without_warning_and_repeat_in_deterministic_mode(deterministic: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first, second = _parameters(), _parameters()
    assert len(first) == len(second) > 0
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
