"""transparent_init_ on user-owned stacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transparent_init import transparent_init_
from transparent_init.inplace import parse_stack

from ._reference import check, uniform


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
    ids=["relu", "leaky-then-relu", "mixed-activations", "no-first-bias", "no-last-bias"],
)
def test_user_linear_stacks_become_identity(make) -> None:
    seq = make()
    out = transparent_init_(seq, generator=0)
    assert out is seq
    check(seq, uniform((256, 4), 10.0, 0))


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
    check(seq, uniform((2, 6, 5, 5), 100.0, 0, torch.float64), t_w, t_b)


def test_parse_stack_layout() -> None:
    seq = nn.Sequential(nn.Linear(3, 8), nn.LeakyReLU(0.5), nn.Linear(8, 3), nn.Linear(3, 2, bias=False))
    lay = parse_stack(seq)
    assert lay.linear_indices == (0, 2, 3)
    assert lay.hidden == (4, 3) and lay.in_features == 3 and lay.out_features == 2
    assert lay.activations == ("leaky_relu", None) and lay.negative_slopes == (0.5, 0.0)
    assert lay.biases == (True, True, False) and not lay.conv


def test_inplace_keeps_dtype_device_and_grad(device: torch.device) -> None:
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)).to(device)
    ids = [id(p) for p in seq.parameters()]
    transparent_init_(seq, generator=0)
    assert [id(p) for p in seq.parameters()] == ids  # written in place: optimizers keep their references
    assert all(p.device.type == device.type and p.requires_grad for p in seq.parameters())
    check(seq, uniform((4, 3), 10.0, 0, device=device))
