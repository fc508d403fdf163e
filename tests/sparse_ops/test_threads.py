"""The thread count does not change any result: every op, forward and backward, gives the same bits under
``torch.set_num_threads(1)`` and ``(2)`` (both backends, channels-last inputs, large superpixels with extra
accumulators). Only :func:`spixel_loss`'s scalar values may differ in the last bits: PyTorch splits a sum of
over 32768 elements into per-thread parts (its gradient does not depend on the thread count). And the
gradient of :func:`superpixel_cam`'s classifier weight: a matrix product over the ``B x N_s`` superpixels
(``F.linear``'s backward, the BLAS's), which MKL splits among the threads on some CPUs (an AMD EPYC with
AVX-512: 0.027 apart where the entries reach 2e5; equal on an Intel Xeon); its output and the features'
gradient do not depend on the thread count.

The inputs exceed PyTorch's parallel grain (32768 elements), so a second thread takes part where it can.
Python threads calling at once (sharing one assignment) get the results of the same calls made in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import Tensor

import sparse_ops as so

G = torch.Generator().manual_seed(0)
B, C, H, W, CELL = 2, 16, 128, 128, 8
SP = torch.randint(0, 64, (B, H, W), generator=G)
BIG = torch.randint(0, 2, (B, 256, 256), generator=G)  # two superpixels of ~32k pixels: extra accumulators
MASK = torch.rand(B, H, W, generator=G) > 0.2
ASSOC = torch.rand(B, 9, H, W, generator=G).softmax(1)
LABELS = torch.randint(0, 21, (B, H, W), generator=G)
X = torch.randn(B, C, H, W, generator=G) * 100 + 1000  # an offset: every rounding shows
XB = torch.randn(B, C, 256, 256, generator=G) + 1000
POOLED = torch.randn(B, 64, C, generator=G)
WEIGHT = torch.randn(5, C, generator=G)
# one image of one channel, every pixel its own superpixel: the sum over 65536 superpixel means has a single
# output, a reduction PyTorch splits among the threads (seed 2: the split sums differ in the last bit)
ONE = torch.randn(1, 1, 256, 256, generator=torch.Generator().manual_seed(2)) * 100 + 1000
EACH = torch.arange(256 * 256).view(1, 256, 256)


def _cases() -> Iterator[tuple[str, Callable[..., Tensor], tuple[Tensor, ...]]]:
    for backend in ("scatter", "sparse"):
        yield (
            f"uniformize-{backend}",
            lambda x, b=backend: so.uniformize(x, SP, 64, mask=MASK, backend=b),
            (X,),
        )
        yield f"uniformize-large-{backend}", lambda x, b=backend: so.uniformize(x, BIG, 2, backend=b), (XB,)
        yield (
            f"pool-mean-{backend}",
            lambda x, b=backend: so.superpixel_pool(x, SP, 64, mask=MASK, backend=b),
            (X,),
        )
        yield (
            f"pool-sum-large-{backend}",
            lambda x, b=backend: so.superpixel_pool(x, BIG, 2, reduce="sum", backend=b),
            (XB,),
        )
    yield "pool-max", lambda x: so.superpixel_pool(x, SP, 64, mask=MASK, reduce="max"), (X,)
    yield "unpool", lambda p: so.superpixel_unpool(p, SP), (POOLED,)
    yield "unpool-large", lambda p: so.superpixel_unpool(p, BIG), (POOLED[:, :2],)
    yield "soft-uniformize", lambda x, a: so.soft_uniformize(x, a, CELL, mask=MASK), (X, ASSOC)
    yield "soft-pool", lambda x, a: so.soft_superpixel_pool(x, a, CELL), (X, ASSOC)
    yield "soft-unpool", lambda c, a: so.soft_superpixel_unpool(c, a, CELL), (X[..., ::CELL, ::CELL], ASSOC)
    yield "normalize-assoc", lambda a: so.normalize_assoc(a, CELL), (ASSOC,)
    yield "segnet", lambda x: so.max_unpool2d(*so.max_pool2d_with_indices(x)), (X,)
    yield "global-average", lambda x: so.superpixel_global_average(x, SP, 64), (X[..., ::2, ::2],)
    yield "global-average-one-channel", lambda x: so.superpixel_global_average(x, EACH, upsample=None), (ONE,)
    yield "cam", lambda x, w: so.superpixel_cam(x, SP, 64, weight=w), (X, WEIGHT)


CASES = list(_cases())


def _run(
    op: Callable[..., Tensor], inputs: tuple[Tensor, ...], threads: int, channels_last: bool
) -> list[Tensor]:
    """The output and every input's gradient of ``op`` under ``threads`` threads (restored afterwards)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        leaves = [
            (t.contiguous(memory_format=torch.channels_last) if channels_last and t.dim() == 4 else t.clone())
            .detach()
            .requires_grad_()
            for t in inputs
        ]
        out = op(*leaves)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(1)))
        grads = [t.grad for t in leaves if t.grad is not None]
        assert len(grads) == len(leaves), "every input must get a gradient"
        return [out.detach(), *grads]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize(("name", "op", "inputs"), CASES, ids=[c[0] for c in CASES])
def test_results_do_not_depend_on_the_thread_count(
    name: str, op: Callable[..., Tensor], inputs: tuple[Tensor, ...], channels_last: bool
) -> None:
    one = _run(op, inputs, 1, channels_last)
    two = _run(op, inputs, 2, channels_last)
    if name == "cam":  # the weight's gradient is the BLAS's matrix product (see the module docstring)
        a, b = one.pop(), two.pop()
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * a.abs().max().item())
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b), f"{name}: {(a - b).abs().max().item()} apart"


@pytest.mark.parametrize("target", ["labels", "features"])
def test_spixel_loss_gradient_does_not_depend_on_the_thread_count(target: str) -> None:
    t = LABELS if target == "labels" else X[:, :3]

    def total(assoc: Tensor) -> Tensor:
        return so.spixel_loss(assoc, t, CELL).total

    assert torch.equal(_run(total, (ASSOC,), 1, False)[1], _run(total, (ASSOC,), 2, False)[1])


def test_the_integer_ops_do_not_depend_on_the_thread_count() -> None:
    """``hard_superpixels`` (with its connectivity step) and ``relabel_contiguous``: the same ids, counts."""

    def ids(threads: int) -> list[Tensor]:
        before = torch.get_num_threads()
        try:
            torch.set_num_threads(threads)
            hard, counts = so.hard_superpixels(ASSOC, CELL, connectivity=True, return_counts=True)
            return [hard, counts, *so.relabel_contiguous(SP * 7 - 100)]
        finally:
            torch.set_num_threads(before)

    for a, b in zip(ids(1), ids(2), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_python_threads_sharing_an_assignment_get_the_serial_results(backend: str) -> None:
    """Four Python threads at once (an inference server's request threads) using one new assignment, half of
    them under ``torch.inference_mode()`` and half with a backward, get the bits of the same calls made one
    after the other: no state shared between calls but the assignment's own matrices (the sparse backend
    builds them on first use, one set per mode, from any thread)."""
    small_sp, small_mask = SP[:, :32, :32], MASK[:, :32, :32]
    xs = [X[:, :4, :32, :32] + i for i in range(8)]

    def call(a: so.SuperpixelAssignment, i: int) -> list[Tensor]:
        x = xs[i % 8].clone().requires_grad_(i % 2 == 0)
        if i % 2:
            with torch.inference_mode():
                return [t.clone() for t in (a.uniformize(x), a.pool(x), a.decode(a.pool(x)))]
        out = [a.uniformize(x), a.pool(x), a.decode(a.pool(x))]
        (grad,) = torch.autograd.grad(sum(t.square().sum() for t in out), x)
        return [*(t.detach() for t in out), grad]

    def assignment() -> so.SuperpixelAssignment:
        return so.SuperpixelAssignment(small_sp, 64, mask=small_mask, backend=backend)

    serial = assignment()
    expected = [call(serial, i) for i in range(16)]
    shared = assignment()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: call(shared, i), range(16)))
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert all(torch.equal(a, b) for a, b in zip(g, e, strict=True)), f"call {i}"
