"""Soft association ops: the shared op checks against loops, the border convention, masks, memory."""

from __future__ import annotations

import math
from typing import Any
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_ops.soft as soft_module
from sparse_ops import (
    SoftUniformize,
    grid_shape,
    neighbour_validity,
    normalize_assoc,
    soft_superpixel_pool,
    soft_superpixel_unpool,
    soft_uniformize,
)
from tests.hypothesis_budget import budget
from tests.op_tester import Case, OpTester
from tests.sparse_ops._soft_reference import ref_pool, ref_unpool
from tests.sparse_ops.test_uniformize import _Recorder

G = torch.Generator().manual_seed(0)
F = torch.randn(3, 2, 5, 7, generator=G)
A = torch.rand(3, 9, 5, 7, generator=G) + 0.05
MASK = torch.rand(3, 5, 7, generator=G) > 0.3
S = 3  # partial border cells: 5 x 7 pixels make a 2 x 3 grid


def _draw(data: st.DataObject, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
    b, c = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 3))
    h, w, s = data.draw(st.integers(1, 11)), data.draw(st.integers(1, 11)), data.draw(st.integers(1, 5))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
    f = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    a = torch.rand(b, 9, h, w, generator=g, dtype=torch.float64)
    if data.draw(st.booleans()):  # exact zeros: cells without mass, pixels without valid mass
        a = a * (torch.rand(b, 9, h, w, generator=g, dtype=torch.float64) < 0.3)
    return f.to(dtype), a.to(dtype), s, torch.rand(b, h, w, generator=g) > 0.3


class TestSoftPool(OpTester):
    masked = False
    fast_gradcheck = True  # 9 association channels make a full Jacobian slow
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({0: lambda f: f[0]}, ValueError, r"features must have shape \[B, C, H, W\]"),
        ({0: [1.0]}, TypeError, "features must be a torch.Tensor"),
        ({0: lambda f: f.long()}, TypeError, "features must be a floating tensor.*torch.int64"),
        ({1: lambda a: a[:, :8]}, ValueError, "assoc must have 9 channels"),
        ({1: lambda a: a[:2]}, ValueError, "must agree in batch size and spatial size"),
        ({1: lambda a: a[..., :4]}, ValueError, "must agree in batch size and spatial size"),
        ({1: lambda a: a - 1}, ValueError, r"assoc must be non-negative and finite.*at index \[0, 0, 0, 0\]"),
        (
            {1: lambda a: a.index_fill(1, torch.tensor([3]), float("nan"))},
            ValueError,
            r"non-negative and finite",
        ),
        ({2: 0}, ValueError, "cell_size must be >= 1, got 0"),
        ({2: 2.0}, TypeError, "cell_size must be an int, got float"),
        ({"mask": MASK.float()}, TypeError, "mask must have dtype torch.bool"),
        (
            {"mask": MASK[:2]},
            ValueError,
            r"mask must have shape \[B, H, W\] = \[3, 5, 7\] like assoc, got \[2, 5, 7\]",
        ),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return soft_superpixel_pool(*args, **kwargs)

    def reference(self, f: torch.Tensor, a: torch.Tensor, s: int, *, mask: Any = None, **kw: Any) -> Any:
        weights = a if mask is None else a * mask[:, None]
        return ref_pool(f, weights, s, kw.get("renormalize", True))

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        f, a, s, mask = _draw(data, dtype)
        renormalize = data.draw(st.booleans())
        return Case(
            (f, a, s), {"mask": mask if self.masked else None, "renormalize": renormalize}, data=(0, 1)
        )

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        mask = MASK if self.masked else None
        case = Case((F.to(dtype), A.to(dtype), S), {"mask": mask}, data=(0, 1))
        return case.map_all(lambda t: t.to(device))


class TestSoftPoolMasked(TestSoftPool):
    masked = True
    errors = []  # noqa: RUF012  (covered by TestSoftPool)


class TestSoftUnpool(OpTester):
    fast_gradcheck = True
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({0: lambda c: c[:, :, :1]}, ValueError, r"centres must have shape \[B=3, C, n_h=2, n_w=3\]"),
        (  # one image of centres for three associations: refused, not broadcast over the batch
            {0: lambda c: c[:1]},
            ValueError,
            r"centres must have shape \[B=3, C, n_h=2, n_w=3\] .*, got shape \(1, 2, 2, 3\)",
        ),
        ({0: None}, TypeError, "centres must be a torch.Tensor"),
        ({1: lambda a: -a}, ValueError, "assoc must be non-negative and finite"),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return soft_superpixel_unpool(*args, **kwargs)

    def reference(self, c: torch.Tensor, a: torch.Tensor, s: int, **kw: Any) -> Any:
        return ref_unpool(c, a, s, kw.get("renormalize", True))

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        f, a, s, _ = _draw(data, dtype)
        n_h, n_w = grid_shape(f.shape[2], f.shape[3], s)
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
        c = torch.randn(f.shape[0], f.shape[1], n_h, n_w, generator=g, dtype=torch.float64).to(dtype)
        return Case((c, a, s), {"renormalize": data.draw(st.booleans())}, data=(0, 1))

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        c = torch.randn(3, 2, 2, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
        return Case((c, A.to(dtype), S), data=(0, 1)).map(lambda t: t.to(device))


class TestSoftUniformize(TestSoftPool):
    masked = True
    errors = []  # noqa: RUF012  (shared with TestSoftPool)

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return soft_uniformize(*args, **kwargs)

    def reference(self, f: torch.Tensor, a: torch.Tensor, s: int, *, mask: Any = None, **kw: Any) -> Any:
        renormalize = kw.get("renormalize", True)
        return ref_unpool(super().reference(f, a, s, mask=mask, **kw), a, s, renormalize)


class TestNormalizeAssoc(OpTester):
    fast_gradcheck = True

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return normalize_assoc(*args, **kwargs)

    def reference(self, a: torch.Tensor, s: int, **kw: Any) -> torch.Tensor:
        b, _, h, w = a.shape
        out = torch.zeros(b, 9, h, w, dtype=torch.float64)
        n_h, n_w = grid_shape(h, w, s)
        for k, (dy, dx) in enumerate((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
            for y in range(h):
                for x in range(w):
                    if 0 <= y // s + dy < n_h and 0 <= x // s + dx < n_w:
                        out[:, k, y, x] = a[:, k, y, x].double()
        if kw.get("renormalize", True):
            total = out.sum(1, keepdim=True)
            out = torch.where(total > 0, out / torch.where(total > 0, total, 1.0), 0.0)
        return out

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        _, a, s, _ = _draw(data, dtype)
        return Case((a, s), {"renormalize": data.draw(st.booleans())})

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        return Case((A.to(dtype), S)).map(lambda t: t.to(device))


# ---------------------------------------------------------------------------------------------- semantics
def test_ones_round_trip_for_any_non_negative_assoc() -> None:
    a = torch.softmax(3 * torch.randn(2, 9, 13, 11, generator=torch.Generator().manual_seed(2)), dim=1)
    ones = torch.ones(2, 1, 13, 11)
    for s in (2, 5, 64):
        torch.testing.assert_close(soft_superpixel_unpool(soft_superpixel_pool(ones, a, s), a, s), ones)


def test_without_renormalize_only_rows_summing_to_one_round_trip() -> None:
    a = normalize_assoc(torch.softmax(torch.randn(2, 9, 9, 10), dim=1), 4)  # valid rows sum to 1
    ones = torch.ones(2, 3, 9, 10)
    torch.testing.assert_close(soft_uniformize(ones, a, 4, renormalize=False), ones)
    raw = torch.softmax(torch.randn(2, 9, 9, 10), dim=1)  # loses its out-of-image mass at the border
    assert soft_uniformize(ones, raw, 4, renormalize=False)[..., 0, 0].max() < 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("exponent", ["largest", "subnormal"])
def test_renormalization_is_scale_free_up_to_the_largest_and_down_to_subnormal_weights(
    dtype: torch.dtype, exponent: str
) -> None:
    # the valid weights of a pixel are divided by their sum: weights near the largest finite value overflowed
    # that sum (9 x 2**126 in float32, also for bfloat16, computed in float32), and every weight became
    # w / inf = 0: the pixel was silently left out (reconstructed as 0). Scaled by a power of two first, they
    # give the weights of the unscaled association; subnormal weights do as well (the plain quotient of exact
    # subnormals is scale-free: that case passed before too, and guards the scale against rounding them)
    info = torch.finfo(dtype)
    top, tiny = math.frexp(info.max)[1] - 1, math.frexp(info.tiny)[1] - 1
    power = top - 1 if exponent == "largest" else tiny - 2
    base = torch.rand(3, 9, 5, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
    if exponent == "subnormal":  # weights that stay exact on the subnormal grid (multiples of 2**-2)
        base = (base * 4).round() / 4
    base = base.to(dtype)
    scaled = torch.ldexp(base, torch.tensor(power))
    assert scaled.isfinite().all() and (torch.ldexp(scaled, torch.tensor(-power)) == base).all()
    torch.testing.assert_close(normalize_assoc(scaled, S), normalize_assoc(base, S), rtol=0, atol=0)
    f = F.to(dtype)
    torch.testing.assert_close(soft_uniformize(f, scaled, S), soft_uniformize(f, base, S), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_renormalization_scales_from_an_eighth_of_the_largest_power_of_two(dtype: torch.dtype) -> None:
    # nine weights from 2**(e - 3) on (2**124 in float32) can overflow their sum: 9 x 1.9 x 2**124 > 2**128;
    # a pixel with all nine candidates in the image (the centre of 3 x 3 cells) keeps weights of 1/9, as
    # the same weights scaled down by 2**-(e - 3) do, bit for bit
    top = math.frexp(torch.finfo(dtype).max)[1] - 1
    base = torch.full((1, 9, 3, 3), 1.9, dtype=dtype)
    scaled = torch.ldexp(base, torch.tensor(top - 3))
    assert scaled.isfinite().all() and scaled.sum(dim=1).isinf().all()
    q = normalize_assoc(scaled, 1)
    torch.testing.assert_close(q, normalize_assoc(base, 1), rtol=0, atol=0)
    torch.testing.assert_close(q[0, :, 1, 1], torch.full((9,), 1 / 9, dtype=dtype))


@pytest.mark.parametrize(("largest", "small"), [(6.0, 11 * 2.0**-149), (1.5 * 2.0**123, 11 * 2.0**-28)])
def test_renormalization_of_a_row_whose_sum_cannot_overflow_is_the_plain_quotient(
    largest: float, small: float
) -> None:
    # the power-of-two scale is exact only where it makes no subnormal: a row of largest weight 6 scaled by
    # 2**-3 turned a weight of 11 * 2**-149 into 11/8 * 2**-149, rounded to 2**-149 on the subnormal grid
    # (then divided by 6/8: 2**-149), where the plain quotient 11/6 * 2**-149 rounds to 2 * 2**-149. The
    # same just under the threshold of the scaled path, 2**(e - 3): a largest weight of 1.5 * 2**123 scaled
    # by 2**-124 would round 11 * 2**-28 to 2**-149 (11/1.5 * 2**-151 rounds to 2 * 2**-149)
    assoc = torch.zeros(2, 9, 5, 7)
    assoc[:, 4] = largest  # the own cell: always inside the image
    assoc[:, 0] = small  # the upper left cell, where it exists
    assoc[1] = torch.rand(9, 5, 7, generator=torch.Generator().manual_seed(0)).mul(40).sub(20).exp()  # wide
    q = assoc * neighbour_validity(5, 7, S)
    expected = q / q.sum(dim=1, keepdim=True)
    assert expected[0, 0, -1, -1] == 2 * 2.0**-149
    torch.testing.assert_close(normalize_assoc(assoc, S), expected, rtol=0, atol=0)


def test_one_hot_assoc_gives_plain_cell_averages_and_empty_cells_give_zero() -> None:
    f = torch.arange(30.0).reshape(1, 1, 5, 6)
    a = torch.zeros(1, 9, 5, 6)
    a[:, 4] = 1
    c = soft_superpixel_pool(f, a, 4)
    assert c[0, 0, 0, 0] == f[0, 0, :4, :4].mean() and c[0, 0, 1, 1] == f[0, 0, 4:, 4:].mean()
    a[:, 4, :4, 4:] = 0  # pixels of cell (0, 1) send everything to their left neighbour
    a[:, 3, :4, 4:] = 1
    assert soft_superpixel_pool(f, a, 4)[0, 0, 0, 1] == 0


def test_masked_pixels_are_left_out_exactly() -> None:
    f = F.clone()
    f[0, 0, 0, 0] = float("nan")  # a NaN at a masked pixel reaches no centre
    mask = torch.ones(3, 5, 7, dtype=torch.bool)
    mask[0, 0, 0] = False
    out = soft_uniformize(f, A, S, mask=mask)
    assert torch.isfinite(out[0, :, 1:, 1:]).all()
    expected = ref_unpool(ref_pool(torch.nan_to_num(f), A * mask[:, None], S), A, S)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("renormalize", [True, False])
def test_an_unvalidated_nan_association_reaches_the_centres_it_weighs_on(renormalize: bool) -> None:
    """validate=False skips the value check: a NaN weight (a softmax of NaN logits) makes the mass of every
    cell it weighs on NaN, and such a centre is NaN, as for a NaN feature. A ``mass > 0`` test read it as a
    cell without mass: centre 0, a finite pooling (all zeros for an all-NaN association) and no gradient."""
    f = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    assoc = torch.softmax(torch.randn(2, 9, 6, 6, generator=torch.Generator().manual_seed(1)), 1)
    assoc[0, :, 0, 0] = float("nan")  # candidates inside the image: cells (0, 0), (0, 1), (1, 0), (1, 1)
    out = soft_superpixel_pool(f, assoc, 2, renormalize=renormalize, validate=False)
    reached = torch.zeros(2, 3, 3, 3, dtype=torch.bool)
    reached[0, :, :2, :2] = True
    assert out[reached].isnan().all()
    mask = torch.ones(2, 6, 6, dtype=torch.bool)
    mask[0, 0, 0] = False
    without = soft_superpixel_pool(f, assoc, 2, mask=mask, renormalize=renormalize, validate=False)
    assert torch.equal(out[~reached], without[~reached])
    assert soft_superpixel_pool(f, torch.full_like(assoc, math.nan), 2, validate=False).isnan().all()


def test_one_nan_weight_makes_its_row_nan_and_an_out_of_image_nan_gets_no_weight() -> None:
    """``renormalize`` divides a pixel's weights by their sum: a NaN weight makes that sum NaN, and a
    ``total > 0`` test took it for a row without mass, dividing by 1, so the other 8 weights stayed raw (8 of
    the 9 centres finite and wrong). Out-of-image weights were zeroed by a product, and 0 * NaN is NaN: a NaN
    there stayed, and the valid weights were not renormalized. Now the row of a NaN weight is NaN (every
    centre it weighs on is NaN), and an out-of-image NaN gets zero weight like any other value there."""
    assoc = torch.softmax(
        torch.randn(1, 9, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), 1
    )
    inside = assoc.clone()
    inside[0, 4, 3, 3] = math.nan  # the centre candidate of an inner pixel, cell (1, 1)
    assert normalize_assoc(inside, 2, validate=False)[0, :, 3, 3].isnan().all()
    f = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    assert (
        soft_superpixel_pool(f, inside, 2, validate=False)[0, 0].isnan().all()
    )  # its 9 cells: the whole grid
    outside = assoc.clone()
    outside[0, 0, 0, 0] = math.nan  # the top-left candidate of the top-left pixel: outside the image
    row = normalize_assoc(outside, 2, validate=False)[0, :, 0, 0]
    expected = normalize_assoc(assoc, 2)[0, :, 0, 0]
    torch.testing.assert_close(row, expected, rtol=0, atol=0)
    assert row[0] == 0 and not soft_superpixel_pool(f, outside, 2, validate=False).isnan().any()
    kept = normalize_assoc(outside, 2, renormalize=False, validate=False)[0, :, 0, 0]
    inside_image = neighbour_validity(6, 6, 2)[:, 0, 0]  # centre, right, below, below-right
    assert torch.equal(kept, torch.where(inside_image, assoc[0, :, 0, 0], 0.0))


def test_mixed_dtypes_promote() -> None:
    assert soft_superpixel_pool(F.double(), A, 2).dtype == torch.float64
    assert soft_uniformize(F.half(), A, 2).dtype == torch.float32


def test_gradient_reaches_assoc_through_softmax() -> None:
    logits = torch.randn(1, 9, 8, 8, requires_grad=True)
    soft_uniformize(torch.randn(1, 3, 8, 8), torch.softmax(logits, 1), 4).square().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_deterministic_mode(device: torch.device) -> None:
    # copies: on the CPU .to() returns the module's F and A, which requires_grad_() changed for later tests
    f = F.to(device, copy=True).requires_grad_()
    a = A.to(device, copy=True).requires_grad_()
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            f.grad = a.grad = None
            soft_uniformize(f, a, S).square().sum().backward()
            grads.append((f.grad.clone(), a.grad.clone()))
    finally:
        torch.use_deterministic_algorithms(was)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_memory_does_not_grow_with_a_cell_larger_than_the_image() -> None:
    f, a = torch.randn(1, 2, 4, 4), torch.softmax(torch.randn(1, 9, 4, 4), 1)
    with _Recorder() as mode:
        out = soft_uniformize(f, a, 10**12)
    assert mode.largest <= 9 * 16 * 4  # a few times the pixels, however large the cell
    torch.testing.assert_close(out, f.mean(dim=(2, 3), keepdim=True).expand_as(f))


def test_the_blocks_hold_at_most_about_four_times_the_images_pixels() -> None:
    """The docs' memory claim: partial border cells are padded to whole ones (and blocks to whole chunks), so
    the blocks hold up to about 4x the image's pixels, 4.05x in the worst case of the square images up to
    700 pixels (a cell one pixel smaller than the image), never more than 4.1x for any side and cell."""
    worst = 0.0
    for side in [*range(1, 140), *range(140, 700, 7), 661, 662, 1100, 2049]:
        for cell in {*range(1, min(side, 70) + 2), *range(max(1, side - 70), side + 2), 10**12}:
            b = soft_module._blocks(side, side, cell)
            worst = max(worst, b.n_h * b.ph * b.n_w * b.pw / side**2)
    assert 4.0 < worst <= 4.1


@pytest.mark.parametrize(("height", "width", "cell"), [(67, 67, 67), (71, 70, 67), (26, 25, 11)])
def test_a_cell_side_without_a_useful_divisor_keeps_chunks_large(height: int, width: int, cell: int) -> None:
    """A prime cell side (or image side under one cell) has no divisor near :data:`CHUNK`: the blocks are
    zero-padded to whole chunks instead of cut into one-pixel chunks, whose ``[C, 9]`` partial sums per pixel
    took 8x the memory and 9x the time at 509 x 509 (one cell). The padding changes no value."""
    g = torch.Generator().manual_seed(cell)
    f = torch.randn(2, 3, height, width, generator=g, dtype=torch.float64)
    a = torch.softmax(torch.randn(2, 9, height, width, generator=g, dtype=torch.float64), 1)
    mask = torch.rand(2, height, width, generator=g) > 0.3
    blocks = soft_module._blocks(height, width, cell)
    assert blocks.rh * blocks.cw >= min(soft_module.CHUNK // 4, blocks.bh * blocks.bw)
    with _Recorder() as mode:
        out = soft_uniformize(f, a, cell, mask=mask)
    padded = 2 * 9 * blocks.n_h * blocks.ph * blocks.n_w * blocks.pw  # the association in whole blocks
    assert mode.largest <= 2 * padded  # no [C, 9] partial sums per pixel
    expected = ref_pool(f, a * mask[:, None], cell)
    torch.testing.assert_close(soft_superpixel_pool(f, a, cell, mask=mask), expected)
    torch.testing.assert_close(out, ref_unpool(expected, a, cell))


def test_module_takes_cell_size_at_construction_and_the_data_in_order() -> None:
    for renormalize in (True, False):
        out = SoftUniformize(S, renormalize=renormalize)(F.double(), A.double(), mask=MASK)
        expected = ref_unpool(ref_pool(F, A * MASK[:, None], S, renormalize), A, S, renormalize)
        torch.testing.assert_close(out, expected)


def test_module_repr_and_errors() -> None:
    assert repr(SoftUniformize(4)) == "SoftUniformize(cell_size=4, renormalize=True)"
    with pytest.raises(ValueError, match="cell_size must be >= 1"):
        SoftUniformize(0)


@settings(max_examples=budget(20))
@given(data=st.data(), chunk=st.integers(1, 5))
def test_small_chunks_give_the_reference(data: st.DataObject, chunk: int) -> None:
    """Tiny chunks make small images take the chunked float64 path of large cells."""
    f, a, s, mask = _draw(data, torch.float64)
    with mock.patch.object(soft_module, "CHUNK", chunk):
        centres = soft_superpixel_pool(f, a, s, mask=mask)
        out = soft_uniformize(f, a, s, mask=mask)
    expected = ref_pool(f, a * mask[:, None], s)
    torch.testing.assert_close(centres, expected)
    torch.testing.assert_close(out, ref_unpool(expected, a, s))


@pytest.mark.parametrize("seed", [0, 1])
def test_chunk_sums_of_a_large_cell_are_added_in_float64(seed: int) -> None:
    """float32 integer features whose 64-pixel chunk sums are exact (< 2**24) but whose cell sums are not: the
    chunk sums are added in float64, so every centre is the exact mean rounded once (a float32 addition of
    the chunk sums would round the cell sum, and differ)."""
    side = 32  # a cell of 1024 pixels: 16 chunks, more than FLOAT32_CHUNK_SUMS
    assert soft_module._blocks(2 * side, 2 * side, side).chunks > soft_module.FLOAT32_CHUNK_SUMS
    f = torch.randint(0, 2**17, (2, 3, 2 * side, 2 * side), generator=torch.Generator().manual_seed(seed))
    a = torch.zeros(2, 9, 2 * side, 2 * side)
    a[:, 4] = 1  # every pixel fully in its own cell: the centres are the plain cell means
    centres = soft_superpixel_pool(f.float(), a, side)
    sums = f.view(2, 3, 2, side, 2, side).sum(dim=(3, 5))  # exact, in int64 (up to 2**27)
    assert sums.max() > 2**24  # not exact in float32
    torch.testing.assert_close(centres, (sums.double() / side**2).float(), rtol=0, atol=0)


@pytest.mark.parametrize("masked", [False, True])
def test_zero_channels_give_empty_results_like_the_hard_ops(masked: bool) -> None:
    f = torch.zeros(3, 0, 5, 7, dtype=torch.float64, requires_grad=True)
    a = A.detach().double().requires_grad_()
    mask = MASK if masked else None
    pooled = soft_superpixel_pool(f, a, S, mask=mask)
    smoothed = soft_uniformize(f, a, S, mask=mask)
    c = torch.zeros(3, 0, 2, 3, dtype=torch.float64, requires_grad=True)
    unpooled = soft_superpixel_unpool(c, a, S)
    assert pooled.shape == (3, 0, 2, 3) and smoothed.shape == unpooled.shape == (3, 0, 5, 7)
    for out in (pooled, smoothed, unpooled):
        assert out.dtype == torch.float64 and out.requires_grad
        out.sum().backward()  # the results stay in the graph, like those of the hard ops
    assert f.grad is not None and f.grad.shape == f.shape and c.grad is not None and c.grad.shape == c.shape
    assert a.grad is None or not a.grad.any()


@pytest.mark.parametrize("size", [(0, 7), (5, 0)])
def test_empty_images_are_refused_naming_assoc(size: tuple[int, int]) -> None:
    a = torch.rand(3, 9, *size)
    match = rf"assoc must have H, W >= 1.*got shape \(3, 9, {size[0]}, {size[1]}\)"
    for call in (
        lambda: normalize_assoc(a, S),
        lambda: soft_superpixel_pool(torch.zeros(3, 2, *size), a, S),
        lambda: soft_uniformize(torch.zeros(3, 2, *size), a, S, validate=False),
        lambda: soft_superpixel_unpool(torch.zeros(3, 2, 0, 0), a, S),
    ):
        with pytest.raises(ValueError, match=match):
            call()


def test_tensors_on_two_devices_are_refused_naming_both() -> None:
    f, a = F, A
    for call in (
        lambda: soft_superpixel_pool(f, a.to("meta"), S, validate=False),
        lambda: soft_superpixel_pool(f.to("meta"), a, S, validate=False),
        lambda: soft_uniformize(f.to("meta"), a, S, validate=False),
    ):
        with pytest.raises(ValueError, match="assoc must be on the same device as"):
            call()
    with pytest.raises(ValueError, match=r"assoc must be on the same device as centres \(meta\), got cpu"):
        soft_superpixel_unpool(torch.zeros(3, 2, 2, 3, device="meta"), a, S, validate=False)


def test_meta_tensors_give_the_shapes_without_validation() -> None:
    """Shape inference on meta tensors (validate=False reads no value), as the hard ops allow: the autocast
    guard is skipped on a device type without autocast."""
    f, a = F.to("meta"), A.to("meta")
    assert soft_superpixel_pool(f, a, S, mask=MASK.to("meta"), validate=False).shape == (3, 2, 2, 3)
    assert (
        soft_superpixel_unpool(torch.zeros(3, 2, 2, 3, device="meta"), a, S, validate=False).shape == F.shape
    )
    out = soft_uniformize(f.half(), a, S, validate=False)
    assert out.shape == F.shape and out.dtype == torch.float32 and out.device.type == "meta"


@pytest.mark.parametrize("op", [soft_uniformize, soft_superpixel_pool], ids=["uniformize", "pool"])
def test_a_mask_made_in_inference_mode_serves_a_training_step(op: Any) -> None:
    """A mask from an evaluation pass under ``torch.inference_mode()`` (an inference tensor, which autograd
    refuses to save) gives the gradients of a normal mask, as it does for the hard ops."""
    with torch.inference_mode():
        evaluation_mask = MASK.clone()
    grads = []
    for mask in (MASK, evaluation_mask):
        f, a = F.detach().clone().requires_grad_(), A.detach().clone().requires_grad_()
        op(f, a, 4, mask=mask).square().sum().backward()
        assert f.grad is not None and a.grad is not None
        grads.append((f.grad, a.grad))
    assert evaluation_mask.is_inference()
    for got, expected in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


HALF_UNDER_OTHER_AUTOCAST = [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16)]


@pytest.mark.parametrize(("half", "autocast"), HALF_UNDER_OTHER_AUTOCAST, ids=["f16-in-bf16", "bf16-in-f16"])
def test_half_inputs_under_autocast_of_the_other_half_type(half: torch.dtype, autocast: torch.dtype) -> None:
    """Half inputs give their results also under an autocast of the other half type, validated or not: the
    value check stacked two half scalars, which autocast refused ("Unexpected floating ScalarType in
    at::autocast::prioritize")."""
    cells = torch.randn(3, 2, 2, 3, generator=torch.Generator().manual_seed(0))
    f, a, c, mask = F.to(half), A.to(half), cells.to(half), MASK
    calls = {
        "pool": lambda v: soft_superpixel_pool(f, a, S, mask=mask, validate=v),
        "unpool": lambda v: soft_superpixel_unpool(c, a, S, validate=v),
        "uniformize": lambda v: soft_uniformize(f, a, S, mask=mask, validate=v),
        "normalize_assoc": lambda v: normalize_assoc(a, S, validate=v),
    }
    for name, call in calls.items():
        for validate in (True, False):
            expected = call(validate)
            with torch.autocast("cpu", dtype=autocast):
                got = call(validate)
            assert got.dtype == expected.dtype == half, name
            assert torch.equal(got, expected), name


def test_normalize_assoc_checks_the_values_unless_told_not_to() -> None:
    bad = torch.full((1, 9, 2, 2), -1.0)
    with pytest.raises(ValueError, match="assoc must be non-negative and finite"):
        normalize_assoc(bad, 2)
    assert normalize_assoc(bad, 2, validate=False).shape == bad.shape
    assert repr(SoftUniformize(4, validate=False)) == (
        "SoftUniformize(cell_size=4, renormalize=True, validate=False)"
    )


def test_one_more_chunk_sum_than_float32_takes_is_added_in_float64() -> None:
    """The float64 addition starts right above :data:`FLOAT32_CHUNK_SUMS`: a 5 x 128 image under cells of 64
    is two blocks of 5 x 64 pixels, 5 chunks of 64 each. Integer features whose chunk sums are exact in
    float32 (< 2**23) but whose cell sums are not (> 2**24) give the exact mean rounded once."""
    blocks = soft_module._blocks(5, 128, 64)
    assert blocks.chunks == soft_module.FLOAT32_CHUNK_SUMS + 1 and blocks.rh * blocks.cw == soft_module.CHUNK
    f = torch.randint(2**16, 2**17, (2, 3, 5, 128), generator=torch.Generator().manual_seed(0))
    a = torch.zeros(2, 9, 5, 128)
    a[:, 4] = 1  # every pixel fully in its own cell: the centres are the plain cell means
    centres = soft_superpixel_pool(f.float(), a, 64)
    sums = f.view(2, 3, 1, 5, 2, 64).sum(dim=(3, 5))  # exact, in int64
    assert sums.min() > 2**24  # not exact in float32
    torch.testing.assert_close(centres, (sums.double() / 320).float(), rtol=0, atol=0)


def test_a_chunk_never_holds_more_than_chunk_pixels() -> None:
    """Each product adds at most :data:`CHUNK` pixels (the chain length of the documented error bound), for
    every cell side, and image sides under one cell."""
    for side in range(1, 140):
        for height, width, cell in ((side, side, side), (2 * side, 3 * side, side), (5, side, side + 1)):
            blocks = soft_module._blocks(height, width, cell)
            assert blocks.rh * blocks.cw <= soft_module.CHUNK, (height, width, cell, blocks)


@pytest.mark.parametrize(
    ("height", "width", "cell"), [(5, 200, 150), (130, 140, 67), (200, 9, 150), (11, 13, 4)]
)
def test_pixel_chunks_number_every_pixel_by_its_chunk_in_to_blocks(
    height: int, width: int, cell: int
) -> None:
    """``_pixel_chunks`` (the chunk table of ``spixel_loss``) gives each pixel the chunk :func:`_to_blocks`
    puts it in: at most :data:`CHUNK` pixels a chunk, and several chunks along a row of a block wider than
    :data:`CHUNK` (a table that merged them gave the loss longer sums)."""
    blocks = soft_module._blocks(height, width, cell)
    chunk = soft_module._pixel_chunks(blocks, height, width, torch.device("cpu"))
    ids = torch.arange(1, height * width + 1, dtype=torch.float64).view(1, 1, height, width)
    placed = soft_module._to_blocks(ids, blocks).reshape(blocks.n_h * blocks.n_w * blocks.chunks, -1)
    expected = torch.zeros(height * width, dtype=torch.long)
    for k, row in enumerate(placed):
        expected[row[row > 0].long() - 1] = k
    assert torch.equal(chunk.reshape(-1), expected)
    assert torch.bincount(chunk.reshape(-1)).max() <= soft_module.CHUNK


def test_a_cell_without_mass_is_zero_next_to_an_infinite_feature() -> None:
    """A cell that receives no mass has centre 0, also where an infinite feature weighs 0 on it (its sum of
    weighted features is ``0 * inf = NaN``); a cell with mass that the pixel weighs 0 on is NaN (IEEE)."""
    f = torch.zeros(1, 1, 4, 12)
    f[0, 0, 1, 5] = float("inf")  # a pixel of cell 1
    a = torch.zeros(1, 9, 4, 12)
    a[:, 4] = 1.0
    a[:, 4, :, 4:8] = 0.0  # the pixels of cell 1 send everything to their left neighbour, cell 0
    a[:, 3, :, 4:8] = 1.0
    centres = soft_superpixel_pool(f, a, 4)[0, 0, 0]
    assert centres[0] == float("inf") and centres[1] == 0 and centres[2].isnan()


def test_forward_under_autocast_then_backward_outside_gives_float32_gradients() -> None:
    """The usual AMP pattern (the forward under ``torch.autocast``, ``backward()`` outside it, as PyTorch
    advises): every gradient of the soft ops equals, bit for bit, the one without autocast, because the
    forward records no autocast cast and no half-precision product for the backward to replay."""
    cells = torch.randn(3, 2, 2, 3, generator=torch.Generator().manual_seed(1))
    calls = {
        "pool": lambda f, a, c: soft_superpixel_pool(f, a, S, mask=MASK),
        "unpool": lambda f, a, c: soft_superpixel_unpool(c, a, S),
        "uniformize": lambda f, a, c: soft_uniformize(f, a, S, mask=MASK),
        "normalize_assoc": lambda f, a, c: normalize_assoc(a, S),
    }
    for name, call in calls.items():
        grads = []
        for autocast in (False, True):
            f, a, c = (t.clone().requires_grad_() for t in (F, A, cells))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = call(f, a, c)
            assert out.dtype == torch.float32, name
            weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
            grads.append(torch.autograd.grad(out, (f, a, c), weights, allow_unused=True))
        for plain, amp in zip(*grads, strict=True):
            assert (plain is None) == (amp is None), name
            assert plain is None or torch.equal(plain, amp), name
