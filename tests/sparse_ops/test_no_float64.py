"""Devices without float64 (Apple's MPS): every op, simulated on the CPU (``_no_float64.py``).

Under the simulation a float64 tensor made anywhere but on the host fails the test, so each op below runs its
float64 steps on the host (``sparse_ops._float64``). The same float64 arithmetic then runs on the same
float32 partial sums, so values and gradients are bit-identical to those of the normal path, which the
accuracy tests hold to the documented bound; the cases are large enough to take the float64 steps (checked
with the guard's count of copies to the host).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import sparse_ops
from sparse_ops import (
    SuperpixelAssignment,
    SuperpixelUniformize,
    _float64,
    relabel_contiguous,
    soft_superpixel_pool,
    soft_superpixel_unpool,
    soft_uniformize,
    spixel_loss,
    superpixel_pool,
    superpixel_unpool,
    uniformize,
)
from sparse_ops.assignment import _reciprocals
from tests.sparse_ops._no_float64 import without_float64

#: 2 images of 48 x 48: a superpixel of 40 columns (1920 pixels, more than 4 lanes x 128: extra accumulators)
#: and a strip of 8 columns; in the second image a third id in a corner.
H = W = 48


def _labels() -> Tensor:
    sp = torch.zeros(2, H, W, dtype=torch.long)
    sp[:, :, 40:] = 1
    sp[1, :4, :4] = 2
    return sp


def _grads(out: Tensor | tuple[Tensor, ...], inputs: list[Tensor]) -> tuple[Tensor, ...]:
    """Gradients of a fixed, non-uniform function of the outputs (every output entry weighs differently)."""
    outs = out if isinstance(out, tuple) else (out,)
    loss = torch.stack([(o * torch.linspace(-1, 2, o.numel()).view_as(o)).sum() for o in outs]).sum()
    return torch.autograd.grad(loss, inputs)


def _same_without_float64(
    monkeypatch: pytest.MonkeyPatch, fn: Callable[[], Tensor | tuple[Tensor, ...]], inputs: list[Tensor]
) -> int:
    """``fn()`` and its gradients under the simulation are bit-identical to the normal path; returns the
    number of copies to the host it made."""
    expected = fn()
    expected_grads = _grads(expected, inputs)
    with without_float64(monkeypatch) as guard:
        got = fn()
        got_grads = _grads(got, inputs)
    for g, e in zip(
        (*(got if isinstance(got, tuple) else (got,)), *got_grads),
        (*(expected if isinstance(expected, tuple) else (expected,)), *expected_grads),
        strict=True,
    ):
        assert g.dtype == e.dtype and g.device == e.device
        assert torch.equal(g, e)
    return guard.to_host_calls


def test_has_float64() -> None:
    assert _float64.has_float64(torch.device("cpu"))
    assert _float64.has_float64(torch.device("cuda"))
    assert _float64.has_float64(torch.device("meta"))
    assert not _float64.has_float64(torch.device("mps"))


@pytest.mark.parametrize("fp64", [True, False])
def test_has_float64_reads_the_xpu_properties(monkeypatch: pytest.MonkeyPatch, fp64: bool) -> None:
    class Properties:
        has_fp64 = fp64

    monkeypatch.setattr(torch.xpu, "get_device_properties", lambda device: Properties())
    assert _float64.has_float64(torch.device("xpu")) is fp64


def test_the_simulation_fails_on_float64_made_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard can fail: float64 made from a device tensor, by a factory, or copied back; a host tensor
    mixed with a device tensor. A float64 tensor made on the host and sent back as float32 passes."""
    x = torch.randn(3, 4)
    for bad in (
        x.double,
        lambda: torch.zeros(2, dtype=torch.float64),
        lambda: _float64.to_device(_float64.to_host(x).double(), x.device),
        lambda: _float64.to_host(x) + x,
    ):
        with pytest.raises(AssertionError), without_float64(monkeypatch):
            bad()
    with without_float64(monkeypatch) as guard:
        back = _float64.to_device(_float64.to_host(x).double().sum(0).float(), x.device)
    assert guard.to_host_calls == 1
    assert torch.equal(back, x.double().sum(0).float())


@pytest.mark.parametrize("masked", [False, True])
def test_uniformize(monkeypatch: pytest.MonkeyPatch, masked: bool) -> None:
    x = torch.randn(2, 3, H, W, requires_grad=True)
    mask = torch.rand(2, H, W) > 0.3 if masked else None
    copies = _same_without_float64(monkeypatch, lambda: uniformize(x, _labels(), 3, mask=mask), [x])
    assert copies >= 7  # 1 / count, then the extra sums (3 copies) forward and backward


def test_the_host_copies_of_the_sums_are_at_most_two_values_per_128_pixels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The float values the sums copy to the host: a total per group and the extra sums, ``[B, C, G + E]``,
    up to two per 128 pixels and channel with one lane (the module said at most one): 64 x 64 pixels in
    256 superpixels give 31 groups and 32 extra slots, 126 values for 2 channels (one per 128 pixels: 64)."""
    side, c, n_s = 64, 2, 256
    sp = (torch.arange(side * side) % n_s).view(1, side, side)
    sp[0, :48] = 0  # one superpixel of 3072 pixels: its extra slots are used, and the layout has 31 groups
    x = torch.randn(1, c, side, side, generator=torch.Generator().manual_seed(0))
    copied: list[int] = []
    with without_float64(monkeypatch), monkeypatch.context() as patch:
        to_host = _float64.to_host

        def counting(t: Tensor) -> Tensor:
            if t.is_floating_point():
                copied.append(t.numel())
            return to_host(t)

        patch.setattr(_float64, "to_host", counting)
        superpixel_pool(x, sp, n_s, reduce="sum")
    pixels = side * side
    assert pixels // 128 * c < sum(copied) <= 2 * pixels // 128 * c
    doc = " ".join((_float64.__doc__ or "").split())
    assert "at most two values per 128 pixels and channel for the sums" in doc


def test_channels_last_uniformize(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 3, H, W).to(memory_format=torch.channels_last).requires_grad_()
    assert _same_without_float64(monkeypatch, lambda: uniformize(x, _labels(), 3), [x]) >= 7


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_pool_and_unpool(monkeypatch: pytest.MonkeyPatch, reduce: str) -> None:
    x = torch.randn(2, 3, H, W, requires_grad=True)
    mask = torch.rand(2, H, W) > 0.3

    def run() -> Tensor:
        pooled = superpixel_pool(x, _labels(), 3, mask=mask, reduce=reduce)  # type: ignore[arg-type]
        return superpixel_unpool(pooled, _labels())

    copies = _same_without_float64(monkeypatch, run, [x])
    assert copies >= (1 if reduce == "max" else 7)


def test_assignment_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 4, H, W, requires_grad=True)
    pooled = torch.randn(2, 3, 4, requires_grad=True)
    half = torch.randn(2, 4, H, W).to(torch.bfloat16).requires_grad_()
    mask = torch.arange(H * W).view(H, W).remainder(5).ne(0).expand(2, -1, -1)  # every 5th pixel left out

    def run() -> tuple[Tensor, ...]:
        a = SuperpixelAssignment(_labels(), 3, mask=mask)
        assert a._layout.extra_group.shape[-1] > 0  # the extra accumulators are in use
        return a.encode(x), a.decode(pooled), a.uniformize(x), a.pool(x, "sum"), a.pool(half, "mean")

    assert _same_without_float64(monkeypatch, run, [x, pooled, half]) >= 13


def test_second_order_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 3, H, W, requires_grad=True)

    def run() -> Tensor:
        (g,) = torch.autograd.grad(uniformize(x, _labels(), 3).square().sum(), x, create_graph=True)
        return g

    assert _same_without_float64(monkeypatch, run, [x]) > 0


# torch loads its forward-AD decompositions with torch.jit.script on the first dual tensor, which warns on
# torch >= 2.14 (as in test_functorch.py); not our code
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torch_func_transforms(monkeypatch: pytest.MonkeyPatch) -> None:
    """vmap over the features, jvp and grad (the host copies inside the maps' Functions)."""
    x = torch.randn(3, 2, 2, H, W)
    tangent = torch.randn(2, 2, H, W)

    def run() -> tuple[Tensor, ...]:
        def op(t: Tensor) -> Tensor:
            return uniformize(t, _labels(), 3)

        mapped = torch.func.vmap(op)(x)
        value_and_derivative = torch.func.jvp(op, (x[0],), (tangent,))
        grad = torch.func.grad(lambda t: op(t).square().sum())(x[1])
        return mapped, *value_and_derivative, grad

    expected = run()
    with without_float64(monkeypatch) as guard:
        got = run()
    assert guard.to_host_calls > 0
    for g, e in zip(got, expected, strict=True):
        assert torch.equal(g, e)


def test_to_sparse(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = SuperpixelAssignment(_labels(), 3).to_sparse(dtype=torch.float16, normalized=True)
    with without_float64(monkeypatch):
        a = SuperpixelAssignment(_labels(), 3)
        got = a.to_sparse(dtype=torch.float16, normalized=True)
        with pytest.raises(TypeError, match=r"half type on cpu, which has no float64, got torch.float64"):
            a.to_sparse(dtype=torch.float64, normalized=True)
    assert torch.equal(got.to_dense(), expected.to_dense())


def test_csr_matrix_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """``to_sparse(layout=torch.sparse_csr)`` names the device and the way out (PyTorch has no CSR tensors on
    MPS: ``_to_sparse_csr`` has no kernel there, ``benchmarks/op_coverage.py``); COO is still built."""
    expected = SuperpixelAssignment(_labels(), 3).to_sparse().to_dense()
    with without_float64(monkeypatch):
        a = SuperpixelAssignment(_labels(), 3)
        with pytest.raises(ValueError, match=r"layout=torch.sparse_csr is not supported on cpu, a device"):
            a.to_sparse(torch.sparse_csr)
        got = a.to_sparse(torch.sparse_coo)
    assert torch.equal(got.to_dense(), expected)


def test_half_reciprocals_from_float32_are_those_from_float64() -> None:
    """Without float64 an assignment keeps ``1 / count`` in float32 only; float16 / bfloat16 values rounded
    from it are those rounded from float64, for every count up to 2**24 (H * W of a 4096 x 4096 image)."""
    counts = torch.arange(2**24 + 1).view(1, -1)
    wide = _reciprocals(counts)
    for dtype in (torch.float16, torch.bfloat16):
        assert torch.equal(wide.float().to(dtype), wide.to(dtype))


def test_sparse_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(1, 2, 4, 4)
    sp = torch.zeros(1, 4, 4, dtype=torch.long)
    with without_float64(monkeypatch):
        with pytest.raises(ValueError, match=r"backend='sparse' is not supported on cpu, a device without"):
            uniformize(x, sp, backend="sparse")
        with pytest.raises(ValueError, match=r"backend='sparse' is not supported on cpu, a device without"):
            SuperpixelUniformize(backend="sparse")(x, sp)  # the module's backend reaches the call
        with pytest.raises(ValueError, match=r"backend='sparse' is not supported on cpu"):
            SuperpixelAssignment(sp, backend="sparse")
        assert SuperpixelAssignment(sp).backend == "scatter"  # what "auto" picks


@pytest.mark.parametrize("masked", [False, True])
def test_soft_ops(monkeypatch: pytest.MonkeyPatch, masked: bool) -> None:
    """Cells of 32 pixels: 16 chunk sums per cell, added in float64 (on the host here)."""
    f = torch.randn(2, 3, 64, 40, requires_grad=True)
    assoc = torch.softmax(torch.randn(2, 9, 64, 40), dim=1).requires_grad_()
    centres = torch.randn(2, 3, 2, 2, requires_grad=True)
    mask = torch.rand(2, 64, 40) > 0.3 if masked else None

    def run() -> tuple[Tensor, ...]:
        return (
            soft_superpixel_pool(f, assoc, 32, mask=mask),
            soft_superpixel_unpool(centres, assoc, 32),
            soft_uniformize(f, assoc, 32, mask=mask),
        )

    assert _same_without_float64(monkeypatch, run, [f, assoc, centres]) >= 6  # 2 pools: 2 forward, 1 back


@pytest.mark.parametrize("labels", [True, False])
def test_spixel_loss(monkeypatch: pytest.MonkeyPatch, labels: bool) -> None:
    assoc = torch.softmax(torch.randn(2, 9, 64, 40), dim=1).requires_grad_()
    target = torch.randint(0, 4, (2, 64, 40)) if labels else torch.randn(2, 3, 64, 40)
    copies = _same_without_float64(
        monkeypatch, lambda: tuple(spixel_loss(assoc, target, 32, num_classes=4 if labels else None)), [assoc]
    )
    assert copies >= 2


def test_small_cells_stay_on_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells of at most 4 chunks add their chunk sums in float32: nothing goes to the host."""
    f = torch.randn(1, 3, 16, 16, requires_grad=True)
    assoc = torch.softmax(torch.randn(1, 9, 16, 16), dim=1)
    assert _same_without_float64(monkeypatch, lambda: soft_uniformize(f, assoc, 8), [f]) == 0


def test_ops_without_float_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """relabel, hard superpixels, the SPN parts (which pool through an assignment), pooling of resized
    features and the SegNet parts."""
    x = torch.randn(2, 3, H, W, requires_grad=True)
    small = torch.randn(2, 3, H // 2, W // 2, requires_grad=True)
    weight = torch.randn(2, 3)
    assoc = torch.softmax(torch.randn(2, 9, H, W), dim=1)

    def run() -> tuple[Tensor, ...]:
        relabelled, counts = relabel_contiguous(_labels() * 7)
        hard, hard_counts = sparse_ops.hard_superpixels(assoc, 16, connectivity=True, return_counts=True)
        pooled = sparse_ops.max_pool2d_with_indices(x, 2)
        return (
            relabelled.float(),
            counts.float(),
            hard.float(),
            hard_counts.float(),
            sparse_ops.normalize_assoc(assoc, 16),
            sparse_ops.superpixel_cam(x, relabelled, 3, weight=weight),
            sparse_ops.superpixel_global_average(small, relabelled, 3),
            superpixel_pool(small, relabelled, 3, upsample="bilinear"),
            sparse_ops.max_unpool2d(pooled.values, pooled.indices, (H, W)),
        )

    _same_without_float64(monkeypatch, run, [x, small])
