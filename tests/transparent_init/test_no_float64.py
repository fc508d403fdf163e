"""Devices without float64 (Apple's MPS), simulated on the CPU.

transparent_init computes every weight in float64 on the CPU and writes it to the layers in their own dtype,
so a layer on MPS never receives float64. Three places touch the user's device and are tested here with
``has_float64`` answering ``False``: the draws of a generator on that device, the copy of a target made there
to the CPU, and the recovery rate of a module's output there.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from sparse_ops import _float64
from tests.sparse_ops._no_float64 import without_float64
from transparent_init import TransparentLinear, _affine, _checks, metrics, recovery_rate


@pytest.mark.parametrize("device", ["cpu", "cuda", "meta", "mps", "xpu"])
def test_has_float64_is_the_sparse_ops_test(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    class Properties:
        has_fp64 = False

    monkeypatch.setattr(torch.xpu, "get_device_properties", lambda device: Properties())
    d = torch.device(device)
    assert _checks.has_float64(d) is _float64.has_float64(d)
    assert _checks.has_float64(d) is (device not in ("mps", "xpu"))


class _RandomDtypes(TorchDispatchMode):
    """Records the dtype of every random draw."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.randn, torch.ops.aten.normal_):
            self.dtypes.append(out.dtype)
        return out


def test_a_generator_without_float64_draws_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator on MPS cannot draw float64: it draws float32 there, widened to float64 on the CPU."""
    monkeypatch.setattr(_affine, "has_float64", lambda device: False)
    with _RandomDtypes() as mode:
        got = _affine._randn((5, 3), torch.Generator().manual_seed(1))
    assert mode.dtypes == [torch.float32]
    assert got.dtype == torch.float64 and got.device.type == "cpu"
    assert torch.equal(got, torch.randn(5, 3, generator=torch.Generator().manual_seed(1)).double())


def test_the_generator_of_a_device_with_float64_draws_float64() -> None:
    with _RandomDtypes() as mode:
        got = _affine._randn((5, 3), torch.Generator().manual_seed(1))
    assert mode.dtypes == [torch.float64]
    expected = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(got, expected)


class _NoWideningMove(TorchFunctionMode):
    """Fails on one ``Tensor.to`` call that moves to another device and converts to float64 (from MPS, PyTorch
    runs no such conversion: the copy into a float64 CPU tensor raises)."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            values = [*args[1:], *kwargs.values()]
            moves = any(isinstance(v, (str, torch.device)) for v in values)
            assert not (moves and torch.float64 in values), f"Tensor.to{values}: a move and a float64 cast"
        return func(*args, **kwargs)


def test_a_target_is_moved_to_the_cpu_before_its_float64_cast() -> None:
    target = torch.randn(4, 4)
    with _NoWideningMove():
        out = _checks.check_target(target, (4, 4), "target_weight")
        TransparentLinear(4, [8], target_weight=target, generator=0)
    assert out.dtype == torch.float64 and torch.equal(out, target.double())


def test_recovery_rate_makes_no_float64_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    lin = nn.Linear(3, 3)
    x = torch.randn(50, 3)
    expected = float((lin(x) - x).abs().lt(0.3).double().mean())
    with without_float64(monkeypatch):
        got = recovery_rate(lin, x, eps=0.3)
    assert got == expected and 0 < got < 1


class _Halve(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x // 2 * 2


def test_an_integer_output_is_compared_in_float64_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """An integer output and target are compared in float64: on a device without it, on the host. (A float64
    target takes the same branch, but cannot be simulated: it cannot exist on such a device, and the guard
    counts every tensor of the simulation as on the device.)"""
    x = torch.tensor([[0, 1, -2], [3, 4, 5]])
    with without_float64(monkeypatch) as guard:
        monkeypatch.setattr(metrics, "has_float64", lambda device: False)
        monkeypatch.setattr(metrics, "_to_host", _float64.to_host)  # the simulated copy (patched above)
        got = recovery_rate(_Halve(), x, eps=0.3)
    assert guard.to_host_calls == 2  # the output and the target
    assert got == 3 / 6  # 0, -2 and 4 are even


def test_a_complex128_target_is_compared_on_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """complex128, float64's complex dtype, exists on such a device no more than float64 does: a complex64
    output against a complex128 target is compared on the host too (it was widened on the device)."""
    x = torch.tensor([1 + 1j, 2 - 1j, 3 + 0j], dtype=torch.complex64)
    target = x.to(torch.complex128) + torch.tensor([0, 0.5, 0], dtype=torch.complex128)
    with without_float64(monkeypatch) as guard:
        monkeypatch.setattr(metrics, "has_float64", lambda device: False)
        monkeypatch.setattr(metrics, "_to_host", _float64.to_host)  # the simulated copy (patched above)
        got = recovery_rate(nn.Identity(), x, eps=0.3, target=target)
    assert guard.to_host_calls == 2  # the output and the target
    assert got == 2 / 3
