"""transparent_init_ on user-owned stacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transparent_init import max_abs_error, transparent_init_
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


class _ClampedReLU(nn.ReLU):  # a ReLU6
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, 6)


class _ScaledDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x


class _ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class _ScaledConv(nn.Conv2d):
    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return super()._conv_forward(x, 2 * weight, bias)


def _relu_replaced_on_the_instance() -> nn.ReLU:
    relu = nn.ReLU()
    relu.forward = lambda x: x.clamp(0, 6)  # type: ignore[method-assign]
    return relu


def _qat_linear() -> nn.Linear:
    """A fake-quantized ``torch.ao`` QAT layer (an ``nn.Linear`` subclass; its forward quantizes weights)."""
    qat = pytest.importorskip("torch.ao.nn.qat")
    from torch.ao.quantization import get_default_qat_qconfig

    layer: nn.Linear = qat.Linear(4, 8, qconfig=get_default_qat_qconfig())
    return layer


@pytest.mark.parametrize(
    "make,match",
    [
        (
            lambda: nn.Sequential(nn.Linear(4, 8), _ClampedReLU(), nn.Linear(8, 4)),
            r"layer 1 is _ClampedReLU, a subclass of nn.ReLU that overrides forward: a module that overrides "
            r"forward may compute something else",
        ),
        (
            lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), _ScaledDropout(), nn.Linear(8, 4)),
            r"layer 2 is _ScaledDropout, a subclass of nn.Dropout that overrides forward",
        ),
        (
            lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), _ScaledLinear(8, 4)),
            r"layer 2 is _ScaledLinear, a subclass of nn.Linear that overrides forward",
        ),
        (
            lambda: nn.Sequential(_ScaledConv(4, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1)),
            r"layer 0 is _ScaledConv, a subclass of nn.Conv2d that overrides _conv_forward",
        ),
        (
            lambda: nn.Sequential(nn.Linear(4, 8), _relu_replaced_on_the_instance(), nn.Linear(8, 4)),
            r"layer 1 is ReLU, an nn.ReLU whose forward is replaced on the instance",
        ),
        (
            lambda: nn.Sequential(_qat_linear(), nn.ReLU(), nn.Linear(8, 4)),
            r"layer 0 is torch\.ao\.nn\.qat\..*Linear, a subclass of nn.Linear that overrides forward",
        ),
    ],
    ids=["relu", "dropout", "linear", "conv", "relu-instance", "ao-qat-linear"],
)
def test_a_subclass_that_overrides_forward_is_refused(make, match: str) -> None:  # type: ignore[no-untyped-def]
    """Any subclass of a supported module was accepted by ``isinstance``: a ReLU6 (``nn.ReLU`` with a
    clamping forward) left the stack 7.75 off the identity, silently; so did fake-quantized QAT layers. As for
    ``nn.Identity``, a module whose forward is not its base class's is refused, naming the layer, before any
    write."""
    seq = make()
    before = {k: v.clone() for k, v in seq.state_dict().items()}
    with pytest.raises(TypeError, match=match + ".*use nn\\.[A-Za-z0-9]+ itself"):
        transparent_init_(seq, generator=0)
    for key, value in seq.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_subclass_that_keeps_forward_is_accepted_and_exact() -> None:
    """Subclasses that add nothing to the computation (a name, an attribute) are the base modules: accepted,
    and the stack is exact (in eval mode, for the dropout)."""

    class MyLinear(nn.Linear):
        pass

    class MyReLU(nn.ReLU):
        tag = "mine"

    class MyDropout(nn.Dropout):
        pass

    class MyLeaky(nn.LeakyReLU):
        pass

    seq = nn.Sequential(MyLinear(4, 8), MyReLU(), MyLinear(8, 10), MyLeaky(0.2), nn.Linear(10, 4))
    transparent_init_(seq, generator=0)
    check(seq, uniform((256, 4), 10.0, 0))
    dropped = nn.Sequential(MyLinear(4, 8), MyReLU(), MyDropout(0.5), nn.Linear(8, 4))
    transparent_init_(dropped, generator=0).eval()
    assert max_abs_error(dropped, uniform((256, 4), 10.0, 2)) <= 1e-5

    class MyConv(nn.Conv2d):
        pass

    conv = nn.Sequential(MyConv(3, 6, 1), MyReLU(), MyConv(6, 3, 1))
    transparent_init_(conv, generator=0)
    check(conv, uniform((2, 3, 4, 4), 10.0, 1))


def test_a_meta_target_is_refused_when_a_layer_holds_a_parameter_with_values() -> None:
    """Kills X95: a target on meta is accepted only when every layer parameter is on meta too; a Linear
    subclass (forward kept) whose extra Parameter holds values is not on meta, so the meta target is refused
    with the documented ValueError (not PyTorch's NotImplementedError from a solve on meta tensors)."""

    class WithExtra(nn.Linear):
        def __init__(self, n_in: int, n_out: int, device: str) -> None:
            super().__init__(n_in, n_out, device=device)
            self.extra = nn.Parameter(torch.zeros(1))  # on the CPU

    seq = nn.Sequential(WithExtra(4, 8, device="meta"), nn.ReLU(), nn.Linear(8, 4, device="meta"))
    match = r"target_weight is on the meta device .* the layers are not on meta"
    with pytest.raises(ValueError, match=match):
        transparent_init_(seq, target_weight=torch.eye(4, device="meta"), generator=0)
