"""transparent_init_ on user-owned stacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transparent_init import TransparentLinear, transparent_init_
from transparent_init.inplace import parse_stack


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 4)),
        lambda: nn.Sequential(
            nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4)
        ),
        lambda: nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 4)),  # mixed gaps
        lambda: nn.Sequential(nn.Linear(4, 10, bias=False), nn.ReLU(), nn.Linear(10, 4)),
        # no last bias: the hidden offset is absorbed by the extra hidden width
        lambda: nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 4, bias=False)),
    ],
)
def test_user_linear_stacks_become_identity(make) -> None:
    seq = make()
    out = transparent_init_(seq, generator=0)
    assert out is seq
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0)) * 10
    torch.testing.assert_close(seq(x), x, atol=2e-5, rtol=0)


def test_user_conv_stack_float64_target_map() -> None:
    seq = nn.Sequential(
        nn.Conv2d(6, 16, 1),
        nn.LeakyReLU(0.1),
        nn.Conv2d(16, 12, 1, padding="same"),
        nn.ReLU(),
        nn.Conv2d(12, 3, 1),
    ).double()
    t_w = torch.randn(3, 6, dtype=torch.float64)
    t_b = torch.randn(3, dtype=torch.float64)
    transparent_init_(seq, target_weight=t_w, target_bias=t_b, generator=1)
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    ref = torch.einsum("oc,bchw->bohw", t_w, x) + t_b[:, None, None]
    torch.testing.assert_close(seq(x), ref, atol=1e-12, rtol=0)


def test_inplace_matches_the_module_draws() -> None:
    """The module is a thin wrapper: same generator, same parameters."""
    layer = TransparentLinear(3, [4, 5], activation="leaky_relu", negative_slope=0.3, generator=7)
    seq = nn.Sequential(
        nn.Linear(3, 8), nn.LeakyReLU(0.3), nn.Linear(8, 10), nn.LeakyReLU(0.3), nn.Linear(10, 3)
    )
    transparent_init_(seq, generator=7)
    for p, q in zip(layer.layers.parameters(), seq.parameters(), strict=True):
        assert torch.equal(p, q)


def test_parse_stack_layout() -> None:
    seq = nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.5), nn.Linear(8, 3), nn.Linear(3, 2, bias=False))
    lay = parse_stack(seq)
    assert lay.linear_indices == (0, 2, 3)
    assert lay.hidden == (4, 3) and lay.in_features == 3 and lay.out_features == 2
    assert lay.activations == ("leaky_relu", None) and lay.negative_slopes == (0.5, 0.0)
    assert lay.biases == (True, True, False) and not lay.conv


def test_inplace_keeps_dtype_device_and_grad(device: torch.device) -> None:
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)).to(device)
    transparent_init_(seq, generator=0)
    assert all(p.device.type == device.type and p.requires_grad for p in seq.parameters())
    x = torch.randn(4, 3, device=device)
    torch.testing.assert_close(seq(x), x, atol=1e-5, rtol=0)
