"""``torch.export`` of the transparent stacks: the exported program gives the eager outputs bitwise, with a
dynamic batch (and spatial size for the 1x1 convolutions), in every parameter dtype, and still starts as the
target map (the transparency survives deployment)."""

from __future__ import annotations

import io

import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim

from transparent_init import TransparentConv1x1, TransparentLinear, build_transparent_stack

C_IN, HIDDEN, C_OUT = 6, [8, 7], 6
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ACTIVATIONS = [None, "relu", "leaky_relu"]


def _stack(kind: str, activation: str | None, dtype: torch.dtype) -> nn.Module:
    if kind == "linear":
        module: nn.Module = TransparentLinear(C_IN, HIDDEN, C_OUT, activation=activation, generator=0)
    elif kind == "conv1x1":
        module = TransparentConv1x1(C_IN, HIDDEN, C_OUT, activation=activation, generator=0)
    else:  # the plain layers alone
        module = build_transparent_stack(C_IN, HIDDEN, C_OUT, activation=activation, generator=0)
    return module.to(dtype).eval()  # as users convert a trained model: .half() / .to(torch.bfloat16)


def _input(kind: str, batch: int, size: int, dtype: torch.dtype) -> Tensor:
    g = torch.Generator().manual_seed(batch * 100 + size)
    shape = (batch, C_IN, size, size) if kind == "conv1x1" else (batch, size, C_IN)
    return torch.randn(shape, generator=g).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("kind", ["linear", "conv1x1", "sequential"])
def test_export_with_dynamic_shapes_matches_eager(
    kind: str, activation: str | None, dtype: torch.dtype
) -> None:
    module = _stack(kind, activation, dtype)
    x = _input(kind, 2, 5, dtype)
    batch, size = Dim("batch", min=1, max=64), Dim("size", min=1, max=512)
    dims = {0: batch, 2: size, 3: size} if kind == "conv1x1" else {0: batch, 1: size}
    program = torch.export.export(module, (x,), dynamic_shapes=(dims,))
    for b, s in ((2, 5), (1, 3), (4, 9)):
        y = _input(kind, b, s, dtype)
        got, expected = program.module()(y), module(y)
        assert got.dtype == expected.dtype == dtype
        assert torch.equal(got, expected)


@pytest.mark.parametrize("kind", ["linear", "conv1x1"])
def test_exported_stack_is_still_the_identity_and_survives_save_load(kind: str) -> None:
    module = _stack(kind, "relu", torch.float32)
    x = _input(kind, 2, 5, torch.float32)
    with torch.no_grad():
        program = torch.export.export(module, (x,), strict=True)
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    torch.testing.assert_close(loaded(x), x, atol=1e-5, rtol=0)  # the stack's documented start: the identity
    assert torch.equal(loaded(x), module(x))
    again = torch.export.export(loaded, (x,))
    assert torch.equal(again.module()(x), module(x))
