"""Long runs: repeated calls keep nothing alive. After warm-up calls, more forward+backward calls of every op
(a fresh assignment per call, or one reused) leave the number of live tensors and the sparse backend's cached
matrices unchanged, and free their autograd graphs by reference counting alone (no reference cycle waits for a
``gc`` pass). Counts, not memory figures: a leak of one tensor per call shows."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Iterator

import pytest
import torch

import sparse_ops as so
import transparent_init as ti

G = torch.Generator().manual_seed(0)
B, C, H, W, CELL = 2, 3, 16, 16, 4
SP = torch.randint(0, 20, (B, H, W), generator=G)
MASK = torch.rand(B, H, W, generator=G) > 0.2
ASSOC = torch.rand(B, 9, H, W, generator=G).softmax(1)
LABELS = torch.randint(0, 4, (B, H, W), generator=G)
REUSED = so.SuperpixelAssignment(SP, 20, mask=MASK, backend="sparse")
STACK = ti.TransparentConv1x1(C, hidden_channels=[8], activation="leaky_relu", generator=0)


def _x() -> torch.Tensor:
    return torch.randn(B, C, H, W, requires_grad=True)


def _spixel_loss_step() -> None:
    so.spixel_loss(ASSOC.clone().requires_grad_(), LABELS, CELL).total.backward()


def _cases() -> Iterator[tuple[str, Callable[[], object]]]:
    for backend in ("scatter", "sparse"):
        yield (
            f"uniformize-{backend}",
            lambda b=backend: so.uniformize(_x(), SP, 20, mask=MASK, backend=b).sum().backward(),
        )
        yield (
            f"pool-{backend}",
            lambda b=backend: so.superpixel_pool(_x(), SP, 20, mask=MASK, backend=b).sum().backward(),
        )
    yield (
        "uniformize-channels-last",
        lambda: so.uniformize(_x().contiguous(memory_format=torch.channels_last), SP, 20).sum().backward(),
    )
    yield "pool-max", lambda: so.superpixel_pool(_x(), SP, 20, reduce="max", mask=MASK).sum().backward()
    yield (
        "unpool",
        lambda: so.superpixel_unpool(torch.randn(B, 20, C, requires_grad=True), SP).sum().backward(),
    )
    yield "reused-assignment", lambda: REUSED.decode(REUSED.encode(_x())).sum().backward()
    yield "reused-uniformize", lambda: REUSED.uniformize(_x().double()).sum().backward()
    yield (
        "soft-uniformize",
        lambda: so.soft_uniformize(_x(), ASSOC.clone().requires_grad_(), CELL, mask=MASK).sum().backward(),
    )
    yield "spixel-loss", _spixel_loss_step
    yield "segnet", lambda: so.max_unpool2d(*so.max_pool2d_with_indices(_x())).sum().backward()
    yield (
        "cam",
        lambda: so.superpixel_cam(_x()[..., ::2, ::2], SP, 20, weight=torch.randn(5, C)).sum().backward(),
    )
    yield "transparent-stack", lambda: STACK(_x()).sum().backward()


CASES = list(_cases())


def _live_tensors() -> int:
    with warnings.catch_warnings():  # reading some lazily imported torch attributes warns of deprecation
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize(("name", "call"), CASES, ids=[c[0] for c in CASES])
def test_repeated_calls_keep_no_tensor_alive(name: str, call: Callable[[], object]) -> None:
    for _ in range(5):  # warm-up: the reused assignment builds its matrices on first use
        call()
    gc.collect()
    before, cached = _live_tensors(), len(REUSED._csr_cache)
    was = gc.isenabled()
    gc.disable()  # a graph kept alive by a reference cycle would stay until a gc pass: counted here
    try:
        for _ in range(20):
            call()
        after = _live_tensors()
    finally:
        if was:
            gc.enable()
    assert after == before, f"{name}: {after - before} more live tensors after 20 calls"
    assert len(REUSED._csr_cache) == cached


def _new_map_call(i: int) -> None:
    """One training-loop step of every hard and soft op on a new label map of a new size (``i`` picks it)."""
    g = torch.Generator().manual_seed(i)
    b, h, w, k = 1 + i % 2, 9 + i % 7, 11 + i // 7, 3 + i % 11  # a size never seen before
    sp = torch.randint(0, k, (b, h, w), generator=g)
    x = torch.randn(b, C, h, w, generator=g, requires_grad=True)
    assoc = torch.rand(b, 9, h, w, generator=g).softmax(1).requires_grad_()
    backend = ("scatter", "sparse")[i % 2]
    total = so.uniformize(x, sp, k, backend=backend).sum()
    total = total + so.superpixel_pool(x, sp, k, reduce="max", upsample="bilinear").sum()
    total = total + so.soft_uniformize(x, assoc, CELL).sum()
    total = total + so.spixel_loss(assoc, sp % 4, CELL).total
    total.backward()


def _counts() -> tuple[int, int]:
    gc.collect()
    return _live_tensors(), len(gc.get_objects())


def test_calls_on_a_new_label_map_of_a_new_size_every_time_keep_nothing_alive() -> None:
    """As a training loop calls them: every call on a new map, size and superpixel count leaves no live tensor
    and no Python object behind (no cache keyed by shape or map; 2000 to 20000 such calls were measured flat
    in RSS too, see the uniformization page)."""
    # warm-up: lazily built state of torch, of the first sparse build and of the first scans of every object
    # (isinstance reaches some lazy module attributes; a first count differs from the next by a few objects)
    for i in range(40):
        _new_map_call(i)
    _counts()
    for i in range(40, 80):
        _new_map_call(i)
    tensors, objects = _counts()
    for i in range(80, 120):
        _new_map_call(i)
    after_tensors, after_objects = _counts()
    assert after_tensors == tensors, f"{after_tensors - tensors} more live tensors after 40 calls"
    # a cache keyed by shape or map grows by at least one object per call (an injected one: 40); a few objects
    # come and go with the rest of the process (the count was 1 lower once, under pytest-xdist in CI)
    assert abs(after_objects - objects) < 10, f"{after_objects - objects} more Python objects after 40 calls"
