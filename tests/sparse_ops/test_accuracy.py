"""Accurate sums: bounded chains for any layout; float32 within 1e-5 max|x| of float64 at 2048 x 2048."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_ops._layout as layout_module
from sparse_ops import (
    SuperpixelAssignment,
    soft_superpixel_pool,
    soft_uniformize,
    superpixel_pool,
    superpixel_unpool,
    uniformize,
)
from sparse_ops._layout import MAX_LANE_SLOTS, MAX_LANES, build_layout, lanes_for
from tests.hypothesis_budget import budget
from tests.sparse_ops._reference import label_maps, ref_pool, ref_uniformize

SIDE = 2048
CHAIN = layout_module.MAX_CHAIN_LENGTH


def _adversarial(kind: str, b: int, h: int, w: int, n_s: int, rng: np.random.Generator) -> torch.Tensor:
    if kind == "columns":  # every column a superpixel: pixels p and p + W are in the same one
        ids = np.broadcast_to(np.arange(w) % n_s, (b, h, w))
    elif kind == "single":
        ids = np.zeros((b, h, w), dtype=np.int64)
    elif kind == "stripes":  # every k-th pixel in raster order: adversarial for an interleave p % k
        ids = (np.arange(h * w).reshape(h, w) % max(n_s, 1))[None].repeat(b, 0)
    else:
        ids = rng.integers(0, n_s, (b, h, w))
    return torch.from_numpy(np.array(ids, dtype=np.int64, order="C"))  # a writable, contiguous copy


@settings(max_examples=budget(30))
@given(
    kind=st.sampled_from(["columns", "single", "stripes", "random"]),
    b=st.integers(1, 2),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    n_s=st.integers(1, 9),
    chain=st.integers(1, 6),
    lanes=st.sampled_from([1, 2, 4]),
    compact=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_accumulator_sums_at_most_chain_pixels_of_one_superpixel(
    kind: str, b: int, h: int, w: int, n_s: int, chain: int, lanes: int, compact: bool, seed: int
) -> None:
    ids = _adversarial(kind, b, h, w, n_s, np.random.default_rng(seed)).view(b, h * w)
    layout, num_space = build_layout(ids.clone(), n_s, compact=compact, chain=chain, lanes=lanes)
    slot, space = layout.slot.view(b, -1), layout.space.view(b, -1)
    width = num_space * lanes + 1 + layout.extra_group.shape[-1]
    for i in range(b):
        sizes = np.bincount(space[i].numpy(), minlength=num_space)
        np.testing.assert_array_equal(layout.sizes[i].numpy(), sizes)
        assert int(slot[i].min()) >= 0 and int(slot[i].max()) < width
        assert not (slot[i] == num_space * lanes).any()  # the trash slot is for masked pixels only
        for s in np.unique(slot[i].numpy()):
            members = space[i][slot[i] == s]
            assert members.numel() <= chain  # the chain bound, for any layout
            assert (members == members[0]).all()  # an accumulator serves one superpixel
            if s < num_space * lanes:
                assert int(members[0]) == s // lanes  # the lanes of superpixel s are s * P + j
        for s in range(num_space):  # max(P, ceil(n_s / K)) accumulators, consecutive pixels on different ones
            own = slot[i][space[i] == s]
            accumulators = max(lanes, -(-int(sizes[s]) // chain))
            assert len(set(own.tolist())) == min(int(sizes[s]), accumulators)
            if len(own) > 1 and accumulators > 1:
                assert (own[1:] != own[:-1]).all()


@contextmanager
def short_chains(chain: int, lanes: int = 1) -> Iterator[None]:
    """Force tiny chains: small images then exercise the extra accumulators and their float64 combination."""
    with (
        mock.patch.object(layout_module, "MAX_CHAIN_LENGTH", chain),
        mock.patch.object(layout_module, "lanes_for", lambda num_pixels, num_space: lanes),
    ):
        yield


@settings(max_examples=budget(20))
@given(
    data=label_maps(),
    chain=st.integers(1, 3),
    lanes=st.sampled_from([1, 2]),
    masked=st.booleans(),
    backend=st.sampled_from(["scatter", "sparse"]),
    seed=st.integers(0, 99),
)
def test_ops_with_short_chains_match_the_references(
    data: tuple[torch.Tensor, int], chain: int, lanes: int, masked: bool, backend: str, seed: int
) -> None:
    sp, n_s = data
    b, h, w = sp.shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 2, h, w, generator=g, dtype=torch.float64)
    mask = torch.rand(b, h, w, generator=g) > 0.4 if masked else None
    m = None if mask is None else mask.numpy()
    expected = torch.from_numpy(ref_uniformize(x.numpy(), sp.numpy(), m))
    with short_chains(chain, lanes):
        y = uniformize(x, sp, n_s, mask=mask, backend=backend)  # type: ignore[arg-type]  # the two literals
        pooled = superpixel_pool(x, sp, n_s, mask=mask, reduce="sum", backend=backend)  # type: ignore[arg-type]
    torch.testing.assert_close(y, expected)
    torch.testing.assert_close(pooled, torch.from_numpy(ref_pool(x.numpy(), sp.numpy(), n_s, "sum", m)[0]))


@pytest.mark.parametrize("chain, lanes", [(1, 1), (2, 2)])
def test_gradients_with_short_chains(chain: int, lanes: int) -> None:
    g = torch.Generator().manual_seed(0)
    sp = torch.randint(0, 3, (2, 3, 4), generator=g)
    mask = torch.rand(2, 3, 4, generator=g) > 0.3
    x = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.randn(2, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    with short_chains(chain, lanes):
        assert torch.autograd.gradgradcheck(lambda t: uniformize(t, sp, 3, mask=mask), (x,))
        assert torch.autograd.gradgradcheck(lambda t: superpixel_pool(t, sp, 3, mask=mask), (x,))
        assert torch.autograd.gradgradcheck(lambda t: superpixel_unpool(t, sp), (p,))


def test_lane_policy_bounds_the_lane_buffer() -> None:
    for n_p in (1, 100, 512 * 512, SIDE * SIDE):
        for n_s in (0, 1, 256, 4096, 16384, n_p):
            lanes = lanes_for(n_p, n_s)
            assert 1 <= lanes <= MAX_LANES and (lanes == 1 or n_s * lanes <= MAX_LANE_SLOTS)
    assert (lanes_for(512 * 512, 1024), lanes_for(512 * 512, 4096), lanes_for(512 * 512, 16384)) == (4, 2, 1)
    # one lane *below* 32 pixels per superpixel on average, lanes from exactly 32 on
    assert (lanes_for(32 * 10 - 1, 10), lanes_for(32 * 10, 10)) == (1, 4)
    assert (lanes_for(31, 0), lanes_for(32, 0)) == (1, 4)


@pytest.mark.parametrize(
    "chain, lanes, rows, cols",
    [(2, 1, 1, 3), (3, 1, 2, 4), (2, 2, 3, 5), (CHAIN, MAX_LANES, 1, MAX_LANES * CHAIN + 1)],
)
def test_superpixels_just_above_the_lane_capacity_are_summed_whole(
    chain: int, lanes: int, rows: int, cols: int
) -> None:
    """Every row a superpixel of ``P K + 1`` or ``K + 1`` pixels: the extra slots (at most ``N // K``) and
    the groups (at most ``N // (P K + 1)``) are sized exactly for these, the tight cases of both bounds."""
    sp = torch.arange(rows).view(1, rows, 1).expand(1, rows, cols).contiguous()
    x = torch.randn(1, 2, rows, cols, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with short_chains(chain, lanes):
        for compact in (False, True):
            layout, _ = build_layout(sp.view(1, -1).clone(), rows, compact=compact)
            extras = sum(max(lanes, -(-cols // chain)) - lanes for _ in range(rows))
            assert int((layout.slot > rows * lanes).sum()) > 0 and layout.extra_group.shape[-1] >= extras
        y = uniformize(x, sp, rows)
        pooled = superpixel_pool(x, sp, rows, reduce="sum")
    torch.testing.assert_close(y, torch.from_numpy(ref_uniformize(x.numpy(), sp.numpy(), None)))
    expected, _ = ref_pool(x.numpy(), sp.numpy(), rows, "sum", None)
    torch.testing.assert_close(pooled, torch.from_numpy(expected))


# ------------------------------------------------------------------------------------------- 2048 x 2048
@pytest.fixture(scope="module")
def offset_image() -> torch.Tensor:
    """``1000 + U(0, 1)`` on 2048 x 2048 in float64 (the float32 input is its rounding)."""
    g = torch.Generator().manual_seed(0)
    return 1000 + torch.rand(1, 1, SIDE, SIDE, generator=g, dtype=torch.float64)


def _within_bound(got: torch.Tensor, exact: torch.Tensor, scale: float) -> None:
    err = (got.double() - exact).abs().max().item()
    assert err <= 1e-5 * scale, f"max error {err:.3g} > 1e-5 * {scale:.6g}"


@pytest.mark.parametrize("kind", ["single", "columns"])
def test_2048_uniformize_pool_unpool_are_accurate(offset_image: torch.Tensor, kind: str) -> None:
    x64 = offset_image
    x = x64.float()
    x_exact = x.double()  # the float32 input, exactly
    sp = _adversarial(kind, 1, SIDE, SIDE, SIDE, np.random.default_rng(0))
    n_s = 1 if kind == "single" else SIDE
    a = SuperpixelAssignment(sp, n_s, validate=False)
    sums = (
        x_exact.view(1, -1).sum(1, keepdim=True) if kind == "single" else x_exact.view(1, SIDE, SIDE).sum(1)
    )  # float64 sums per superpixel: [1, N_s]
    means = sums / (SIDE * SIDE // n_s)
    scale = x.abs().max().item()
    leaf = x.clone().requires_grad_()
    y = a.uniformize(leaf)
    expected = means.view(1, 1, 1, n_s) if kind == "columns" else means.view(1, 1, 1, 1)
    _within_bound(y.detach(), expected, scale)
    y.backward(x)  # the backward is a mean too
    _within_bound(leaf.grad, expected, scale)
    _within_bound(a.encode(x)[..., 0], means, scale)
    _within_bound(a.pool(x, "sum")[..., 0], sums, sums.abs().max().item())
    pooled = torch.zeros(1, n_s, 1, requires_grad=True)  # unpool's backward sums every superpixel's pixels
    superpixel_unpool(pooled, sp, validate=False).backward(x)
    _within_bound(pooled.grad[..., 0], sums, sums.abs().max().item())
    if kind == "single":  # half precision on the largest superpixel: the float32 result rounded once
        for half in (torch.float16, torch.bfloat16):
            xh = x.to(half)
            assert torch.equal(a.uniformize(xh), a.uniformize(xh.float()).to(half))


def test_2048_sum_is_within_1e5_of_sum_abs_not_of_max_abs(offset_image: torch.Tensor) -> None:
    """The float32 *sum* of one 2048 x 2048 superpixel of ``1000 + U(0, 1)`` (4.2e9, where the float32 spacing
    is 256) is within ``(K + P - 1) u sum|x|`` of the exact one, but not within ``1e-5 max|x|`` (0.01): the
    uniformization page stated ``1e-5 max|x|`` for every float32 result, sums included."""
    x = offset_image.float()
    a = SuperpixelAssignment(torch.zeros(1, SIDE, SIDE, dtype=torch.long), 1, validate=False)
    exact = x.double().sum().item()  # exact: multiples of 2**-14 below 2**32 (46 bits)
    err = abs(a.pool(x, "sum").item() - exact)
    lanes = lanes_for(SIDE * SIDE, 1)
    assert err <= (CHAIN + lanes - 1) * 2.0**-24 * x.double().abs().sum().item()
    assert err > 1e-5 * x.abs().max().item()  # the sum's own rounding alone can be 128
    doc = Path(__file__).resolve().parents[2] / "docs" / "concepts" / "uniformization.rst"
    text = " ".join(doc.read_text(encoding="utf-8").split())
    stated = re.findall(r"float32 (?:means|results|within)[^.]*?\\max\|x\|[^.]*", text)
    assert stated, "the float32 precision statements were not found"
    for statement in stated:  # each gives the sums their own bound
        assert "sums within :math:`10^{-5} \\sum|x|`" in statement, statement


@pytest.mark.parametrize("dtype, half_u", [(torch.float16, 2.0**-11), (torch.bfloat16, 2.0**-8)])
def test_half_precision_means_are_the_float32_bound_plus_one_rounding(
    dtype: torch.dtype, half_u: float
) -> None:
    """``uniformize`` and ``superpixel_pool`` said "In float32 (half precision accumulates in it) every mean
    is within 133 u max|x|": the float32 mean is, but half input gets it rounded once to its dtype. The
    mean of ``1`` and the next value of the dtype lies halfway between the two: off by the dtype's ``u``
    (62x the float32 bound for float16, 489x for bfloat16)."""
    x = torch.ones(1, 1, 1, 2, dtype=dtype)
    x[0, 0, 0, 1] = torch.nextafter(x[0, 0, 0, 1], torch.tensor(2.0, dtype=dtype))
    sp = torch.zeros(1, 1, 2, dtype=torch.long)
    exact = x.double().mean().item()
    float32_bound = (CHAIN + MAX_LANES + 1) * 2.0**-24 * x.double().abs().max().item()
    for got in (uniformize(x, sp, 1), superpixel_pool(x, sp, 1)):
        assert got.dtype == dtype
        err = (got.double() - exact).abs().max().item()
        assert float32_bound < err <= float32_bound + half_u * abs(exact)
    for op in (uniformize, superpixel_pool):
        doc = " ".join((op.__doc__ or "").split())
        assert "half precision accumulates in it" not in doc, op.__name__
        assert "float16/bfloat16" in doc and "rounded once to their dtype" in doc, op.__name__


def test_2048_soft_ops_are_accurate(offset_image: torch.Tensor) -> None:
    x = offset_image.float()
    assoc = torch.zeros(1, 9, SIDE, SIDE)
    assoc[:, 4] = 1  # every pixel in its own cell: the centres are the cell means
    exact = x.double().mean().view(1, 1, 1, 1)  # one cell: the image mean
    _within_bound(soft_superpixel_pool(x, assoc, SIDE, validate=False), exact, x.abs().max().item())
    _within_bound(soft_uniformize(x, assoc, SIDE, validate=False), exact, x.abs().max().item())


def test_2048_one_accumulator_chain_is_as_far_off_as_the_docs_say(offset_image: torch.Tensor) -> None:
    """The example that motivates the bounded chains on docs/concepts/uniformization.rst: a
    ``scatter_add_`` of one 2048 x 2048 superpixel of ``1000 + U(0, 1)`` into one float32 accumulator comes
    out 2 % too large, into 4 interleaved ones 1 % (the page said 1 % for one accumulator, where the sum would
    reach a float32 spacing of 512; it ends at 4.2e9, below 2**32, where the spacing is 256)."""
    doc = Path(__file__).resolve().parents[2] / "docs" / "concepts" / "uniformization.rst"
    text = " ".join(doc.read_text(encoding="utf-8").split())
    one_shown = re.search(r"superpixel of :math:`1000 \+ U\(0, 1\)` comes out (\d+) % too large", text)
    four_shown = re.search(r"spread over 4 interleaved accumulators, still (\d+) %", text)
    assert one_shown is not None and four_shown is not None, "the example's figures were not found"
    x = offset_image.float().flatten()
    exact = x.double().sum()
    one = torch.zeros(1).scatter_add_(0, torch.zeros(x.numel(), dtype=torch.long), x)
    four = torch.zeros(4).scatter_add_(0, torch.arange(x.numel()) % 4, x)
    one_err, four_err = (100 * (acc.double().sum() / exact - 1).item() for acc in (one, four))
    assert one_err > 0 and four_err > 0  # too large: the added values round up to 1024
    assert (round(one_err), round(four_err)) == (int(one_shown.group(1)), int(four_shown.group(1))), (
        f"one accumulator {one_err:.2f} %, four {four_err:.2f} %"
    )


def test_float64_bound_grows_with_the_extra_accumulators_added_in_float64() -> None:
    """float64 input: its extra accumulators are added in float64 as well, one after the other, so the bound
    of a superpixel with extras is ``(K + m_s - 2) u sum|x|`` for the sum and ``(K + m_s) u max|x|`` for the
    mean, not the ``(K + P - 1) u`` and ``(K + P + 1) u`` of float32 (there that step is exact to
    ``2**-29 u``).

    Every value is ``1000 + 2**-31``: each accumulator's sum of ``K`` values ends in ``2**-24``, which the
    running total of one 1024 x 1024 superpixel rounds away at every addition from ``2**29`` on (a tie, to the
    even whole number): 2046 u, where 131 u and 133 u were documented.
    """
    side = 1024
    value = 1000 + 2.0**-31
    x = torch.full((1, 1, side, side), value, dtype=torch.float64)
    sp = torch.zeros(1, side, side, dtype=torch.long)
    a = SuperpixelAssignment(sp, 1)
    u, n = 2.0**-53, side * side
    accumulators = -(-n // CHAIN)  # m_s
    exact_sum = n * value  # exact: n is a power of two
    pooled = torch.zeros(1, 1, 1, dtype=torch.float64, requires_grad=True)
    superpixel_unpool(pooled, sp).backward(x)  # unpooling's backward sums the superpixel's pixels too
    assert pooled.grad is not None
    sum_errors = [abs(got - exact_sum) / exact_sum for got in (a.pool(x, "sum").item(), pooled.grad.item())]
    mean_errors = [(got - value).abs().max().item() / value for got in (a.uniformize(x), a.encode(x))]
    assert max(sum_errors) <= (CHAIN + accumulators - 2) * u, f"{max(sum_errors) / u:.0f} u"
    assert max(mean_errors) <= (CHAIN + accumulators) * u, f"{max(mean_errors) / u:.0f} u"
    # float32 (the fold in float64 is exact to far below its u): the bound of any size holds
    x32 = x.float()
    err32 = (a.uniformize(x32).double() - x32.double().mean()).abs().max().item()
    assert err32 <= (CHAIN + lanes_for(n, 1) + 1) * 2.0**-24 * x32.abs().max().item()


@pytest.mark.parametrize("block_images", [1, 2])
@pytest.mark.parametrize("compact", [False, True])
def test_layout_built_in_blocks_of_images_equals_the_whole_batch(compact: bool, block_images: int) -> None:
    # the CPU build works on blocks of images (BUILD_BLOCK_PIXELS): blocks of one image, and blocks of two
    # (5 images: two full blocks and a partial last one), give the layout of the whole batch at once
    ids = _adversarial("random", 5, 9, 7, 6, np.random.default_rng(3)).view(5, 63)
    whole, _ = build_layout(ids.clone(), 6, compact=compact, chain=3, lanes=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with mock.patch.object(layout_module, "BUILD_BLOCK_PIXELS", block_images * 63):
            blocks, _ = build_layout(ids.clone(), 6, compact=compact, chain=3, lanes=2)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(whole, blocks, strict=True):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:
            assert a == b


@settings(max_examples=budget(40))
@given(
    kind=st.sampled_from(["columns", "single", "stripes", "random"]),
    b=st.integers(1, 2),
    h=st.integers(1, 48),
    w=st.integers(1, 48),
    n_s=st.integers(1, 9),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    backend=st.sampled_from(["scatter", "sparse"]),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_uniformize_applied_twice_is_exact_in_half_precision_and_within_the_bound_above(
    kind: str,
    b: int,
    h: int,
    w: int,
    n_s: int,
    dtype: torch.dtype,
    backend: str,
    masked: bool,
    seed: int,
) -> None:
    """``U`` is a projection. A map constant on every superpixel (``uniformize``'s own output) comes back bit
    for bit in float16 and bfloat16 (the float32 mean is within 133 float32 u of the value, far inside half a
    unit of the half-precision one) and within the documented bound of its mean in float32 and float64, not
    bit for bit (the concept page says so)."""
    rng = np.random.default_rng(seed)
    ids = _adversarial(kind, b, h, w, n_s, rng)
    scale = 10.0 ** rng.integers(-3, 4)  # values of any magnitude: the bound is relative to them
    x = torch.from_numpy(rng.standard_normal((b, 3, h, w)) * scale).to(dtype)
    mask = torch.from_numpy(rng.random((b, h, w)) > 0.3) if masked else None
    once = uniformize(x, ids, n_s, mask=mask, backend=backend)
    twice = uniformize(once, ids, n_s, mask=mask, backend=backend)
    if dtype in (torch.float16, torch.bfloat16):
        assert torch.equal(twice, once)
        return
    u = 2.0**-24 if dtype == torch.float32 else 2.0**-53
    k = CHAIN + MAX_LANES + 1  # the float32 bound; float64 adds extra accumulators one after the other
    if dtype == torch.float64:
        k = max(k, CHAIN + -(-h * w // CHAIN))
    err = (twice.double() - once.double()).abs().amax().item()
    assert err <= k * u * once.double().abs().amax().item()


def test_a_constant_map_moves_in_float32_as_the_concept_page_says() -> None:
    """The figure of the concept page: a 64 x 64 map of 3 channels, each constant on the 7 superpixels
    (random float32 values), comes back within the bound but not bit for bit."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (1, 64, 64), generator=g)
    x = torch.randn(1, 3, 7, generator=g).gather(2, ids.view(1, 1, -1).expand(1, 3, -1)).view(1, 3, 64, 64)
    out = uniformize(x, ids, 7)
    moved = int((out != x).sum())
    worst = ((out.double() - x.double()).abs().amax() / x.double().abs().amax()).item()
    page = " ".join((Path(__file__).parents[2] / "docs/concepts/uniformization.rst").read_text().split())
    assert f"{moved:,} of {x.numel():,}".replace(",", " ") in page, moved
    assert f"{worst:.1e}".replace("e-0", "e-") in page and f"{worst / 2.0**-24:.0f} u" in page, worst
    assert 0 < worst <= (CHAIN + MAX_LANES + 1) * 2.0**-24
