"""The accumulator layout is exact at every size: positions and slots in int32 only where they fit.

``sparse_ops._layout.position_dtype`` decides from the sizes (``R * S``, ``S * P + 1 + N // K`` and ``N``
against ``POSITION_LIMIT = 2**31``); patching the limit small takes the int64 path at small sizes, which must
give the int32 path's layout exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim

import sparse_ops._layout as layout_module
from sparse_ops import SuperpixelAssignment, superpixel_pool, uniformize
from sparse_ops._layout import MAX_CHAIN_LENGTH, Layout, build_layout, lanes_for, position_dtype
from tests.sparse_ops._reference import ref_pool, ref_uniformize


@contextmanager
def position_limit(limit: int) -> Iterator[list[torch.dtype]]:
    """Patch ``POSITION_LIMIT``; yields the dtypes that ``build_layout`` then picks, in order."""
    picked: list[torch.dtype] = []
    decide = layout_module.position_dtype

    def recording(*args: object) -> torch.dtype:
        dtype = decide(*args)  # type: ignore[arg-type]  # the arguments of build_layout's call
        picked.append(dtype)
        return dtype

    with (
        mock.patch.object(layout_module, "POSITION_LIMIT", limit),
        mock.patch.object(layout_module, "position_dtype", recording),
    ):
        yield picked


def _labels(kind: str, b: int, h: int, w: int, rng: np.random.Generator) -> tuple[Tensor, int]:
    """Label maps ``[B, H * W]`` and their ``num_ids``, most with superpixels of more than ``P K`` pixels."""
    if kind == "few":  # 3 superpixels of about 530 pixels on 40 x 40: several extra accumulators each
        return torch.from_numpy(rng.integers(0, 3, (b, h * w))), 3
    if kind == "gaps":  # non-compact ids up to 5000 with few of them used: empty superpixels between
        used = np.array([7, 1234, 4999])
        return torch.from_numpy(used[rng.integers(0, 3, (b, h * w))]), 5000
    if kind == "blocks":  # 2 x 2 blocks of raster-order pixels and a large superpixel 0
        ids = np.where(rng.random((b, h, w)) < 0.5, 0, (np.arange(h)[:, None] // 2) * w + np.arange(w) // 2)
        return torch.from_numpy(np.ascontiguousarray(ids.reshape(b, h * w))), h * w
    # "huge": ids beyond int32 (compact layouts only: the distinct ids of each image)
    used = np.array([3, 2**33, 2**40 + 5])
    return torch.from_numpy(used[rng.integers(0, 3, (b, h * w))]), 2**41


def _assert_same(a: Layout, c: Layout) -> None:
    for name in ("space", "slot", "extra_group", "group_owner", "sizes"):
        x, y = getattr(a, name), getattr(c, name)
        assert x.dtype == y.dtype == torch.long, name
        assert torch.equal(x, y), name
    assert a.lanes == c.lanes


CASES = [("few", False), ("gaps", False), ("blocks", False), ("few", True), ("blocks", True), ("huge", True)]


@pytest.mark.parametrize("kind, compact", CASES)
@pytest.mark.parametrize("b", [1, 3, 5])
def test_int64_positions_give_the_int32_layout(kind: str, compact: bool, b: int) -> None:
    rng = np.random.default_rng(b)
    ids, num_ids = _labels(kind, b, 40, 40, rng)
    narrow, num_space = build_layout(ids.clone(), num_ids, compact=compact)
    if kind in ("few", "huge"):
        assert narrow.extra_group.shape[-1] > 0 and (narrow.slot > num_space * narrow.lanes).any()
    with position_limit(1) as picked:
        wide, wide_space = build_layout(ids.clone(), num_ids, compact=compact)
    assert picked == [torch.int64] and wide_space == num_space
    _assert_same(narrow, wide)


@pytest.mark.parametrize("compact", [False, True])
def test_int64_positions_in_blocks_of_images(compact: bool) -> None:
    """The CPU build in blocks of images (each block's positions start at 0) also agrees with int32."""
    ids, num_ids = _labels("few", 5, 40, 40, np.random.default_rng(7))
    whole, _ = build_layout(ids.clone(), num_ids, compact=compact)
    threads = torch.get_num_threads()  # the block is at least one image per thread: 1 thread, blocks of 2
    rows_slots = mock.Mock(wraps=layout_module._rows_slots)
    try:
        torch.set_num_threads(1)
        with (
            mock.patch.object(layout_module, "BUILD_BLOCK_PIXELS", 2 * 1600),
            mock.patch.object(layout_module, "_rows_slots", rows_slots),
            position_limit(2) as picked,
        ):
            blocks, _ = build_layout(ids.clone(), num_ids, compact=compact)
    finally:
        torch.set_num_threads(threads)
    assert picked == [torch.int64]  # blocks of 2 rows: 2 * 3 >= 2
    assert [c.args[0].shape[0] for c in rows_slots.call_args_list] == [2, 2, 1]  # 3 blocks
    _assert_same(whole, blocks)


def test_position_dtype_picks_int64_exactly_at_the_limit() -> None:
    n, lanes, chain = 1000, 2, 10  # slots: S * 2 + 1 + 100
    with mock.patch.object(layout_module, "POSITION_LIMIT", 2000):
        # R * S
        assert position_dtype(4, 499, n, lanes, chain) == torch.int32  # 1996
        assert position_dtype(4, 500, n, lanes, chain) == torch.int64  # 2000
        assert position_dtype(3, 667, n, lanes, chain) == torch.int64  # 2001
        # the slot count S * P + 1 + N // K, R = 1
        assert position_dtype(1, 949, n, lanes, chain) == torch.int32  # 1898 + 1 + 100 = 1999
        assert position_dtype(1, 950, n, lanes, chain) == torch.int64  # 2001
        assert position_dtype(1, 900, 1989, lanes, chain) == torch.int32  # 1800 + 1 + 198 = 1999
        assert position_dtype(1, 900, 1990, lanes, chain) == torch.int64  # 1800 + 1 + 199 = 2000
        # N + K - 1 (ranks and positions in an image; a superpixel's size + K - 1 in its accumulator count)
        assert position_dtype(1, 1, 1990, 1, chain) == torch.int32  # 1990 + 9 = 1999
        assert position_dtype(1, 1, 1991, 1, chain) == torch.int64  # 2000


def test_position_dtype_at_the_real_2_31_boundary() -> None:
    """Real sizes, no patching: what a batch of large images on an accelerator (one block) meets."""
    assert layout_module.POSITION_LIMIT == 2**31
    k = MAX_CHAIN_LENGTH
    # R * S: e.g. B = 2048 images of 1024 x 1024 with num_superpixels = N (allowed: up to 16 N)
    n = 1024 * 1024
    assert position_dtype(2047, n, n, 1, k) == torch.int32  # 2047 * 2**20 < 2**31
    assert position_dtype(2048, n, n, 1, k) == torch.int64  # 2**31
    assert position_dtype(2**31 - 1, 1, 1, 1, k) == torch.int32
    assert position_dtype(2**31, 1, 1, 1, k) == torch.int64
    # S * P + 1 + N // K (R = 1)
    assert position_dtype(1, 2**29 - 1, 2 * k, 4, k) == torch.int32  # 2**31 - 4 + 1 + 2
    assert position_dtype(1, 2**29 - 1, 3 * k, 4, k) == torch.int64  # 2**31
    # N + K - 1 (a single image of about 2**31 pixels: one superpixel's size + K - 1 must not wrap)
    assert position_dtype(1, 1, 2**31 - k, 1, k) == torch.int32
    assert position_dtype(1, 1, 2**31 - k + 1, 1, k) == torch.int64
    # the default lanes of the common case stay int32 on a large batch
    assert position_dtype(64, 256, 512 * 512, lanes_for(512 * 512, 256), k) == torch.int32


def test_slots_beyond_int32_are_exact() -> None:
    """Fails with int32 slots: ``P = 2**20`` lanes per superpixel put lane ``s * P + j`` of ids ``s >= 2048``
    beyond ``2**31`` (wrapped to negative slots before); the layout is small (``S = 4096``, ``N = 256``)."""
    lanes, num_ids = 2**20, 4096
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(num_ids - 6, num_ids, (2, 256), generator=g)
    ids[:, :3] = torch.tensor([0, 2047, 2048])
    for compact in (False, True):
        layout, num_space = build_layout(ids.clone(), num_ids, compact=compact, lanes=lanes)
        space, slot = layout.space.view(2, -1), layout.slot.view(2, -1)
        # every superpixel has fewer than P pixels: pixel of rank r goes to lane r of its superpixel
        rank = torch.zeros_like(ids)
        for i in range(2):
            for s in space[i].unique():
                own = (space[i] == s).nonzero().view(-1)
                rank[i, own] = torch.arange(own.numel())
        assert torch.equal(slot, space * lanes + rank), compact
        assert int(slot.max()) >= 2**31 if not compact else int(slot.min()) >= 0
        assert layout.extra_group.shape[-1] == 0 and num_space == (num_ids if not compact else 256)


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_uniformize_with_int64_positions_matches_float64_means(compact: bool, masked: bool) -> None:
    """The public ops on the int64 path: the float64 means of every superpixel, and the int32 path bitwise."""
    g = torch.Generator().manual_seed(int(compact) + 2 * int(masked))
    b, h, w, n_s = 3, 48, 40, 5
    sp = torch.randint(0, n_s, (b, h, w), generator=g)
    sp[1] = torch.where(sp[1] > 0, sp[1], 4)  # an image without superpixel 0
    x = torch.rand(b, 2, h, w, generator=g) + 1000  # an offset: the long chains would round visibly
    mask = torch.rand(b, h, w, generator=g) > 0.3 if masked else None
    m = None if mask is None else mask.numpy()
    with position_limit(1) as picked:
        if compact:
            y = SuperpixelAssignment._unchecked(sp, n_s, mask=mask, compact=True).uniformize(x)
        else:
            a = SuperpixelAssignment(sp, n_s, mask=mask)
            y = a.uniformize(x)
            pooled = superpixel_pool(x, sp, n_s, mask=mask, reduce="mean")
            assert torch.equal(
                a.counts, torch.from_numpy(ref_pool(x.numpy(), sp.numpy(), n_s, "mean", m)[1]).long()
            )
    assert picked and set(picked) == {torch.int64}
    expected = torch.from_numpy(ref_uniformize(x.numpy(), sp.numpy(), m))
    tolerance = (MAX_CHAIN_LENGTH + 5) * 2**-24  # the bound of the layout's module docstring, and a rounding
    torch.testing.assert_close(y.double(), expected, rtol=tolerance, atol=0)
    if compact:
        assert torch.equal(y, SuperpixelAssignment._unchecked(sp, n_s, mask=mask, compact=True).uniformize(x))
    else:
        means = torch.from_numpy(ref_pool(x.numpy(), sp.numpy(), n_s, "mean", m)[0])
        torch.testing.assert_close(pooled.double(), means, rtol=tolerance, atol=0)
        assert torch.equal(y, uniformize(x, sp, n_s, mask=mask))
        assert torch.equal(pooled, superpixel_pool(x, sp, n_s, mask=mask, reduce="mean"))


class _Uniformize(nn.Module):
    def forward(self, x: Tensor, sp: Tensor) -> Tensor:
        return SuperpixelAssignment(sp, 5, validate=False).uniformize(x)


def _position_dtypes(code: str) -> set[str]:
    """The int32 / int64 dtypes of the cumsums of a traced graph (the ranks and slots: position dtype)."""
    return {
        d
        for line in code.splitlines()
        if "cumsum" in line
        for d in ("int32", "int64")
        if f"torch.{d}" in line
    }


@pytest.mark.parametrize(
    "max_batch, strict", [(64, False), (None, False), (None, True)], ids=["bounded", "unbounded", "strict"]
)
def test_export_with_a_dynamic_batch_decides_without_a_guard(max_batch: int | None, strict: bool) -> None:
    """A bounded dynamic batch is known to fit (int32); an unbounded one is not, and takes int64 without a
    guard on the batch (a guard would fail the export: also strict, where Dynamo sees the batch as an int)."""
    g = torch.Generator().manual_seed(0)
    x, sp = torch.rand(2, 2, 16, 16, generator=g) + 1000, torch.randint(0, 5, (2, 16, 16), generator=g)
    batch = Dim("batch", min=1) if max_batch is None else Dim("batch", min=1, max=max_batch)
    program = torch.export.export(
        _Uniformize(), (x, sp), dynamic_shapes=({0: batch}, {0: batch}), strict=strict
    )
    assert ("int32" in _position_dtypes(program.graph_module.code)) == (max_batch is not None)
    for b in (1, 2, 3):
        xb, spb = torch.rand(b, 2, 16, 16, generator=g) + 1000, torch.randint(0, 5, (b, 16, 16), generator=g)
        assert torch.equal(program.module()(xb, spb), uniformize(xb, spb, 5))


def test_compile_with_a_dynamic_batch_takes_int64_without_a_guard() -> None:
    """``torch.compile``: int32 for a static batch; the dynamic batch of a recompile is not bounded (int64),
    and the graph is not guarded on it (one graph serves every later batch size, e.g. 1000)."""
    graphs: list[str] = []

    def backend(gm: torch.fx.GraphModule, inputs: list[Tensor]) -> Callable[..., object]:
        graphs.append(gm.code)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(
        lambda x, sp: uniformize(x, sp, 5, validate=False), backend=backend, fullgraph=True
    )
    g = torch.Generator().manual_seed(0)
    for b in (2, 3, 4, 1000):
        x, sp = torch.rand(b, 2, 8, 8, generator=g) + 1000, torch.randint(0, 5, (b, 8, 8), generator=g)
        assert torch.equal(compiled(x, sp), uniformize(x, sp, 5))
    assert [_position_dtypes(code) for code in graphs] == [{"int32"}, {"int64"}]


def test_ids_that_agree_modulo_2_32_stay_distinct_superpixels() -> None:
    """The ids are sorted as int32 keys only where they all fit: ids 0 and 2**32 (equal in their low 32 bits)
    are two superpixels, also with the bound inferred from the ids (``num_superpixels = 2**32 + 1``)."""
    x = torch.tensor([[[[1.0, 3.0], [5.0, 7.0]]]])
    sp = torch.tensor([[[0, 2**32], [0, 2**32]]])
    expected = torch.tensor([[[[3.0, 5.0], [3.0, 5.0]]]])
    assert torch.equal(uniformize(x, sp), expected)
    assert torch.equal(uniformize(x, sp, 2**33), expected)
