"""spixel_loss / SpixelLoss against a loop reference; ignored pixels, stray labels, host synchronisation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_ops import SpixelLoss, spixel_loss
from sparse_ops import soft as soft_module
from sparse_ops._checks import MAX_INFERRED_CLASSES
from sparse_ops.losses import _own_label_reconstruction
from tests.hypothesis_budget import budget
from tests.op_tester import Case, OpTester
from tests.sparse_ops._soft_reference import ref_pool, ref_unpool
from tests.sparse_ops.test_uniformize import _Recorder


def ref_loss(assoc, target, S, m=0.003, ignore=255, num_classes=None, eps=1e-8):
    """Loop reference: one-hot / features + xy, pooled with ignored pixels zeroed, means over valid pixels."""
    B, _, H, W = assoc.shape
    a = assoc.double()
    if target.is_floating_point():
        feats = target.double()
        valid = torch.ones(B, H, W, dtype=torch.bool)
    else:
        valid = target != ignore
        K = num_classes or int(target[valid].max()) + 1
        feats = torch.zeros(B, K, H, W, dtype=torch.float64)
        for b in range(B):
            for y in range(H):
                for x in range(W):
                    if valid[b, y, x] and 0 <= target[b, y, x] < K:  # else (unvalidated): no one-hot entry
                        feats[b, target[b, y, x], y, x] = 1
    C = feats.shape[1]
    xy = torch.zeros(B, 2, H, W, dtype=torch.float64)
    for y in range(H):
        for x in range(W):
            xy[:, 0, y, x] = x
            xy[:, 1, y, x] = y
    both = torch.cat([feats, xy], 1)
    rec = ref_unpool(ref_pool(both, a * valid[:, None], S), a, S)
    sem = pos = 0.0
    n = 0
    for b in range(B):
        for y in range(H):
            for x in range(W):
                if not valid[b, y, x]:
                    continue
                n += 1
                if target.is_floating_point():
                    sem += math.sqrt(sum((rec[b, c, y, x] - feats[b, c, y, x]) ** 2 for c in range(C)))
                else:
                    sem += -sum(feats[b, c, y, x] * math.log(rec[b, c, y, x] + eps) for c in range(C))
                pos += math.sqrt((rec[b, C, y, x] - x) ** 2 + (rec[b, C + 1, y, x] - y) ** 2)
    n = max(n, 1)
    sem, pos = float(sem) / n, float(pos) / n
    return sem + m / S * pos, sem, pos


class TestSpixelLoss(OpTester):
    dense = False
    fast_gradcheck = True  # a scalar of 9 x H x W association entries
    compile_kwargs = {"validate": False, "num_classes": 4}  # noqa: RUF012  (no host synchronisation then)
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({1: [0]}, TypeError, "target must be a Tensor"),
        ({1: lambda t: t[:1]}, ValueError, "target must have batch size 3 and spatial size"),
        ({1: lambda t: t[:, None].repeat(1, 2, 1, 1)}, ValueError, "an integer target must have shape"),
        ({1: lambda t: t.float()}, ValueError, r"floating target is read as features.*\(target.long\(\)\)"),
        ({1: lambda t: t.float()[:, None, None]}, ValueError, r"target must have shape \[B, C, H, W\]"),
        ({1: lambda t: t.bool()}, TypeError, "target must be an integer label map or floating features"),
        ({1: lambda t: t - 1}, ValueError, "target labels must be >= 0"),
        (
            {1: lambda t: t + 3, "num_classes": 2},
            ValueError,
            "target labels must be < num_classes=2, got label",
        ),
        ({1: lambda t: t + 10**9}, ValueError, "the largest label of target is 1000000255.*pass num_classes"),
        ({"pos_weight": -1.0}, ValueError, "pos_weight must be a number >= 0.0, got -1.0"),
        ({"pos_weight": "0.5"}, TypeError, "pos_weight must be a real number, got str '0.5'"),
        (  # a learnable weight would be cut from the graph by float(): no gradient, silently
            {"pos_weight": torch.tensor(0.5, requires_grad=True)},
            TypeError,
            r"pos_weight must be a real number, got a Tensor that requires grad: no gradient would reach it",
        ),
        ({"eps": "1e-3"}, TypeError, "eps must be a real number, got str '1e-3'"),
        (  # an OverflowError from the comparison with the label map before
            {"ignore_index": 2**70},
            ValueError,
            r"ignore_index must be an int64 label \(in \[-2\*\*63, 2\*\*63\)\), got 1180591620717411303424",
        ),
        ({"mask": torch.ones(3, 5, 6)}, TypeError, "mask must have dtype torch.bool"),
        (
            {"mask": torch.ones(5, 6, dtype=torch.bool)},
            ValueError,
            r"mask must have shape \[B, H, W\] = \[3, 5, 6\] like assoc, got \[5, 6\]",
        ),
        ({0: lambda a: a[:, :3]}, ValueError, "assoc must have 9 channels"),
        ({0: lambda a: a - 1}, ValueError, "assoc must be non-negative and finite"),
        ({2: 0}, ValueError, "cell_size must be >= 1"),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return spixel_loss(*args, **kwargs)

    def reference(self, assoc: torch.Tensor, target: torch.Tensor, s: int, **kw: Any) -> Any:
        total, sem, pos = ref_loss(assoc, target, s, m=kw.get("pos_weight", 0.003))
        return tuple(torch.tensor(v, dtype=torch.float64) for v in (total, sem, pos))

    def _target(self, g: torch.Generator, b: int, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        if self.dense:
            return torch.rand(b, 3, h, w, generator=g, dtype=torch.float64).to(dtype)
        t = torch.randint(0, 4, (b, h, w), generator=g)
        t[torch.rand(b, h, w, generator=g) < 0.2] = 255
        t[:, 0, 0] = 1  # at least one valid pixel per image
        return t

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        h, w, s = data.draw(st.integers(2, 9)), data.draw(st.integers(2, 9)), data.draw(st.integers(2, 4))
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
        assoc = torch.softmax(torch.randn(2, 9, h, w, generator=g, dtype=torch.float64), 1).to(dtype)
        return Case((assoc, self._target(g, 2, h, w, dtype), s), {"pos_weight": 0.3})

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        g = torch.Generator().manual_seed(0)
        assoc = torch.softmax(torch.randn(3, 9, 5, 6, generator=g, dtype=torch.float64), 1).to(dtype)
        return Case((assoc, self._target(g, 3, 5, 6, dtype), 3), {"pos_weight": 0.3}).map(
            lambda t: t.to(device)
        )


class TestSpixelLossDense(TestSpixelLoss):
    dense = True
    compile_kwargs = None  # compiled once, for label targets
    errors = []  # noqa: RUF012  (covered by TestSpixelLoss)


def test_target_with_channel_dim_and_num_classes():
    assoc = torch.softmax(torch.randn(1, 9, 6, 5), 1)
    t = torch.randint(0, 3, (1, 6, 5))
    a = spixel_loss(assoc, t, 3)
    b = spixel_loss(assoc, t[:, None], 3, num_classes=7)  # extra empty classes change nothing
    torch.testing.assert_close(a.total, b.total)


def test_ignored_pixels_do_not_matter():
    g = torch.Generator().manual_seed(3)
    assoc = torch.softmax(torch.randn(1, 9, 8, 8, generator=g), 1)
    t = torch.randint(0, 3, (1, 8, 8), generator=g)
    t[:, :2] = 255
    t2 = t.clone()
    base = spixel_loss(assoc, t, 4)
    assoc2 = assoc.clone()
    assoc2[:, :, :2] = torch.softmax(torch.randn(1, 9, 2, 8, generator=g), 1)
    # pixels in ignored rows change their association: they are neither pooled nor scored, but they are
    # unpooled only for themselves, so nothing changes
    torch.testing.assert_close(spixel_loss(assoc2, t2, 4).total, base.total)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    mask[:, :2] = False
    t3 = t.clone()
    t3[:, :2] = 0
    torch.testing.assert_close(spixel_loss(assoc, t3, 4, mask=mask).total, base.total)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_feature_at_a_masked_pixel_reaches_neither_loss_nor_gradient(bad: float) -> None:
    g = torch.Generator().manual_seed(5)
    assoc = torch.softmax(torch.randn(2, 9, 6, 8, dtype=torch.float64, generator=g), 1)
    target = torch.rand(2, 3, 6, 8, dtype=torch.float64, generator=g)
    mask = torch.rand(2, 6, 8, generator=g) > 0.3
    mask[0, 0, 0] = False
    results = []
    for value in (0.0, bad):
        t = target.clone()
        t[0, :, 0, 0] = value
        a = assoc.clone().requires_grad_()
        out = spixel_loss(a, t, 3, mask=mask)
        out.total.backward()
        results.append((out.total.detach(), a.grad))
    (clean, clean_grad), (got, got_grad) = results
    assert torch.isfinite(clean_grad).all()
    torch.testing.assert_close(got, clean, rtol=0, atol=0)
    torch.testing.assert_close(got_grad, clean_grad, rtol=0, atol=0)


@pytest.mark.parametrize("where", ["target", "assoc"])
def test_a_nan_at_a_counted_pixel_reaches_the_loss(where: str) -> None:
    """NaN is never hidden: a NaN feature at a counted pixel (or, unvalidated, a NaN association) makes the
    terms it reaches NaN. The distances used to map a NaN squared norm to 0 (``sq > 0`` is False for NaN): a
    NaN feature gave a finite, even zero, semantic term."""
    g = torch.Generator().manual_seed(3)
    assoc = torch.softmax(torch.randn(1, 9, 6, 6, dtype=torch.float64, generator=g), 1)
    target = torch.rand(1, 3, 6, 6, dtype=torch.float64, generator=g)
    if where == "target":
        target[0, 1, 2, 2] = float("nan")
    else:
        assoc[0, 4, 1, 1] = float("nan")
    out = spixel_loss(assoc, target, 3, validate=False)
    assert out.semantic.isnan() and out.total.isnan()
    if where == "assoc":  # the positions are reconstructed with the same association
        assert out.position.isnan()


def test_all_ignored_gives_zero():
    assoc = torch.softmax(torch.randn(1, 9, 4, 4), 1).requires_grad_()
    out = spixel_loss(assoc, torch.full((1, 4, 4), 255), 2, num_classes=21)
    assert out.total == 0
    out.total.backward()
    assert torch.equal(assoc.grad, torch.zeros_like(assoc))


def test_perfect_grid_labels():
    assoc = torch.zeros(1, 9, 4, 6)
    assoc[:, 4] = 1
    t = torch.tensor([[0, 0, 1, 1, 2, 2]] * 4)[None]
    out = spixel_loss(assoc, t, 2, pos_weight=0.5)
    assert abs(out.semantic.item()) < 1e-6
    torch.testing.assert_close(out.position, torch.tensor(math.sqrt(0.5)))
    torch.testing.assert_close(out.total, out.semantic + 0.25 * out.position)


def test_eps_is_the_constant_inside_the_logarithm() -> None:
    g = torch.Generator().manual_seed(3)
    assoc = torch.softmax(torch.randn(2, 9, 5, 6, generator=g, dtype=torch.float64), 1)
    t = torch.randint(0, 3, (2, 5, 6), generator=g)
    out = spixel_loss(assoc, t, 3, eps=0.5)
    _, sem, _ = ref_loss(assoc, t, 3, eps=0.5)  # -log(r + 0.5), far from the default 1e-8
    torch.testing.assert_close(out.semantic, torch.tensor(sem, dtype=torch.float64))
    assert torch.equal(SpixelLoss(3, eps=0.5)(assoc, t).semantic, out.semantic)


@pytest.mark.parametrize("dense", [False, True])
def test_an_association_near_the_largest_float_gives_the_loss_of_its_normalized_rows(dense: bool) -> None:
    # 9 weights of 2**126 summed to inf in the renormalization: every weight became 0 and the loss was that of
    # pixels without mass (reconstructed as 0), a finite, wrong value
    g = torch.Generator().manual_seed(4)
    assoc = torch.rand(2, 9, 5, 6, generator=g) + 0.5
    t = torch.randn(2, 3, 5, 6, generator=g) if dense else torch.randint(0, 3, (2, 5, 6), generator=g)
    huge = assoc * 2.0**126
    assert huge.isfinite().all()
    for got, expected in zip(spixel_loss(huge, t, 3), spixel_loss(assoc, t, 3), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("power", [70, -70])
def test_dense_targets_far_from_one_give_the_scaled_loss_and_gradient(power: int) -> None:
    # the Euclidean distance squared the difference: entries of 2**70 (1.2e21) in float32 gave an infinite
    # semantic term and entries of 2**-70 one 4e-5 off (squares on the subnormal grid), while every other step
    # scales exactly by the power of two
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 9, 5, 6, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 5, 6, generator=g)
    grads = []
    semantics = []
    for target in (t, torch.ldexp(t, torch.tensor(power))):
        out = spixel_loss(torch.softmax(logits, 1), target, 3)
        (grad,) = torch.autograd.grad(out.semantic, logits)
        semantics.append(out.semantic)
        grads.append(grad)
    scale = torch.tensor(2.0**power)
    torch.testing.assert_close(semantics[1], semantics[0] * scale, rtol=1e-6, atol=0)
    atol = 1e-6 * grads[0].abs().max() * scale
    torch.testing.assert_close(grads[1], grads[0] * scale, rtol=1e-5, atol=atol)


def test_module_options_and_forward() -> None:
    crit = SpixelLoss(4, pos_weight=0.5, num_classes=3)
    assert repr(crit) == (
        "SpixelLoss(cell_size=4, pos_weight=0.5, ignore_index=255, num_classes=3, eps=1e-08, "
        "renormalize=True)"
    )
    # options that change the value show in the repr
    assert repr(SpixelLoss(4, eps=0.5, renormalize=False)) != repr(SpixelLoss(4))
    assert repr(SpixelLoss(4, eps=0.5, renormalize=False)).endswith("eps=0.5, renormalize=False)")
    assoc = torch.softmax(torch.randn(2, 9, 8, 8, dtype=torch.float64), dim=1)
    t = torch.randint(0, 3, (2, 8, 8))
    mask = torch.rand(2, 8, 8) > 0.3
    out = crit(assoc, t, mask=mask)
    t_masked = torch.where(mask, t, 255)  # masking equals ignoring
    total, _, _ = ref_loss(assoc, t_masked, 4, m=0.5)
    torch.testing.assert_close(out.total, torch.tensor(total, dtype=torch.float64))
    # every option reaches spixel_loss; renormalize=False (the public code's border rule) changes the value
    options = {"pos_weight": 0.4, "ignore_index": 2, "num_classes": 3, "eps": 1e-3}
    plain = spixel_loss(assoc, t, 4, **options, renormalize=False)
    for got, want in zip(SpixelLoss(4, **options, renormalize=False)(assoc, t), plain, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.equal(plain.total, SpixelLoss(4, **options)(assoc, t).total)
    with pytest.raises(ValueError, match=r"ignore_index must be an int64 label"):
        SpixelLoss(4, ignore_index=-(2**63) - 1)  # the module refuses it when built


def test_the_docstring_names_the_loss_order_not_the_soft_ops_order() -> None:
    """``spixel_loss`` takes the association first (a loss's prediction before its target), while the soft ops
    take the per-pixel data first and the association second; its docstring called its own order "the
    soft-op argument order", which the soft ops do not follow."""
    import inspect

    from sparse_ops import soft_superpixel_pool, soft_superpixel_unpool, soft_uniformize

    for op in (soft_superpixel_pool, soft_superpixel_unpool, soft_uniformize):
        assert list(inspect.signature(op).parameters)[1:3] == ["assoc", "cell_size"], op.__name__
    assert list(inspect.signature(spixel_loss).parameters)[:3] == ["assoc", "target", "cell_size"]
    doc = inspect.getdoc(spixel_loss) or ""
    assert "soft-op argument order" not in doc
    # the API page's convention ("every op takes (x, superpixels, ...)") names the loss's order as its own
    api = (Path(__file__).resolve().parents[2] / "docs" / "api" / "index.rst").read_text(encoding="utf-8")
    assert "``spixel_loss(assoc, target, cell_size, *, mask=None, <options>, validate=True)``" in api
    assert (
        "PyTorch's loss order, the prediction before the target: the association, the per-pixel target"
        in (" ".join(doc.split()))
    )


def test_stray_label_is_refused_before_allocating_and_num_classes_avoids_host_reads() -> None:
    assoc = torch.softmax(torch.randn(1, 9, 4, 4), 1)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 2**40
    with pytest.raises(ValueError, match="the largest label of target is 1099511627776"):
        spixel_loss(assoc, target, 2)
    target[0, 0, 0] = 2
    with _Recorder() as mode:
        spixel_loss(assoc, target, 2, num_classes=3, validate=False)
    assert mode.host_reads == []
    with _Recorder() as mode:
        spixel_loss(assoc, target, 2)  # infers num_classes: reads the largest label
    assert mode.host_reads


@pytest.mark.parametrize(("side", "cell"), [(4, 4), (3, 3), (6, 3), (16, 4)])
def test_at_most_max_inferred_classes_are_inferred(side: int, cell: int) -> None:
    """The bound of the inferred class count, on both sides: a largest label of MAX_INFERRED_CLASSES - 1
    infers MAX_INFERRED_CLASSES classes; one more is refused as a stray label (9 or more image pixels per
    cell)."""
    assoc = torch.softmax(torch.randn(1, 9, side, side, generator=torch.Generator().manual_seed(0)), 1)
    target = torch.zeros(1, side, side, dtype=torch.long)
    target[0, 0, 0] = MAX_INFERRED_CLASSES - 1
    inferred = spixel_loss(assoc, target, cell)
    torch.testing.assert_close(inferred, spixel_loss(assoc, target, cell, num_classes=MAX_INFERRED_CLASSES))
    target[0, 0, 0] = MAX_INFERRED_CLASSES
    bound = rf"at most {MAX_INFERRED_CLASSES} are inferred: a one-hot of that many classes per pixel;"
    with pytest.raises(ValueError, match=f"the largest label of target is {MAX_INFERRED_CLASSES}, .*{bound}"):
        spixel_loss(assoc, target, cell)


@pytest.mark.parametrize(
    ("side", "cell", "most"),
    [
        (2, 2, 1819),
        (8, 2, 1819),
        (8, 1, 454),
        (5, 2, 1263),
        (10, 3, 2844),
        ((1, 2), 1, 454),
        ((5, 14), 13, 3185),
    ],
)
def test_fewer_classes_are_inferred_with_under_9_image_pixels_per_cell(
    side: int | tuple[int, int], cell: int, most: int
) -> None:
    """The loss's table keeps 9 (K + 1) class masses per cell: for cells of 1 or 4 pixels that is 9 or 2.25
    times a one-hot of K classes, and one stray label of 4095 in a 128 x 128 map with cells of 2 pixels took
    3.6 GB (0.5 GB without it; with cells of 1 pixel a bare allocator error). K is inferred only while the
    table holds at most MAX_INFERRED_CLASSES + 1 values per pixel (the grid padded to whole cells: a 10 x 10
    map with cells of 3 has 16 cells, 6.25 image pixels each); more classes are taken when given."""
    height, width = (
        side if isinstance(side, tuple) else (side, side)
    )  # (5 x 14, cells of 13: chunks of 13 x 5)
    assoc = torch.softmax(torch.randn(1, 9, height, width, generator=torch.Generator().manual_seed(1)), 1)
    target = torch.zeros(1, height, width, dtype=torch.long)
    target[0, 0, 0] = most - 1
    torch.testing.assert_close(
        spixel_loss(assoc, target, cell), spixel_loss(assoc, target, cell, num_classes=most)
    )
    target[0, 0, 0] = most
    with pytest.raises(ValueError, match=rf"inferred as {most + 1} \(at most {most} are inferred with "):
        spixel_loss(assoc, target, cell)
    spixel_loss(assoc, target, cell, num_classes=most + 1)  # given: the caller's choice


def test_unvalidated_labels_outside_the_classes_add_no_cross_entropy() -> None:
    """validate=False: a label outside [0, K) has an all-zero one-hot row (no CE term; it still counts)."""
    assoc = torch.softmax(torch.randn(2, 9, 5, 6, dtype=torch.float64), 1)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 1, 2], target[1, 4, 5], target[1, 0, 0] = 7, -3, 255
    target[0, 3, 3] = 3  # K itself: the first label outside [0, K)
    out = spixel_loss(assoc, target, 2, num_classes=3, validate=False)
    total, sem, pos = ref_loss(assoc, target, 2, num_classes=3)
    torch.testing.assert_close(out.semantic.item(), sem)
    torch.testing.assert_close(out.position.item(), pos)
    torch.testing.assert_close(out.total.item(), total)


def test_unvalidated_labels_all_below_zero_infer_one_class() -> None:
    """num_classes=None, validate=False: the inferred class count is at least 1. Labels that are all below 0
    (none ignored) inferred largest + 1 classes (-4 for -5: a RuntimeError creating the table with a negative
    dimension); none of them is a class, so they add no cross-entropy and still count in the pooling."""
    assoc = torch.softmax(torch.randn(2, 9, 5, 6, dtype=torch.float64), 1)
    target = torch.full((2, 5, 6), -5)
    target[1, 2, 3] = -3
    out = spixel_loss(assoc, target, 2, validate=False)
    torch.testing.assert_close(out, spixel_loss(assoc, target, 2, num_classes=1, validate=False))
    assert out.semantic.item() == 0
    torch.testing.assert_close(out.position.item(), ref_loss(assoc, target, 2, num_classes=1)[2])


def test_huge_cell_size_is_one_cell() -> None:
    assoc = torch.softmax(torch.randn(1, 9, 4, 4, dtype=torch.float64), 1)
    target = torch.randint(0, 3, (1, 4, 4))
    torch.testing.assert_close(
        spixel_loss(assoc, target, 10**12).semantic, spixel_loss(assoc, target, 4).semantic
    )
    for cell_size in (2**63, 2**64 + 1):  # beyond int64: the grid wrapped (or raised an OverflowError)
        out = spixel_loss(assoc, target, cell_size)
        torch.testing.assert_close(out.semantic, spixel_loss(assoc, target, 4).semantic)
        torch.testing.assert_close(out.position, spixel_loss(assoc, target, 4).position)


@settings(max_examples=budget(15), deadline=None)
@given(chunk=st.integers(1, 5), seed=st.integers(0, 1000), masked=st.booleans())
def test_label_path_over_chunked_cells_gives_the_reference(chunk: int, seed: int, masked: bool) -> None:
    """Tiny chunks make small cells take the chunked path of large ones (several table rows per cell, added
    in float64), with partial border cells, a mask and unvalidated labels outside [0, K)."""
    g = torch.Generator().manual_seed(seed)
    assoc = torch.softmax(torch.randn(2, 9, 7, 9, generator=g, dtype=torch.float64), 1)
    target = torch.randint(0, 3, (2, 7, 9), generator=g)
    target[0, 1, 2], target[1, 3, 5], target[1, 0, 0] = 7, -3, 255
    mask = torch.rand(2, 7, 9, generator=g) > 0.3 if masked else None
    with mock.patch.object(soft_module, "CHUNK", chunk):
        out = spixel_loss(assoc, target, 4, mask=mask, num_classes=3, validate=False)
    reference_target = target if mask is None else torch.where(mask, target, 255)
    total, sem, pos = ref_loss(assoc, reference_target, 4, num_classes=3)
    torch.testing.assert_close(out.semantic.item(), sem)
    torch.testing.assert_close(out.position.item(), pos)
    torch.testing.assert_close(out.total.item(), total)


def test_an_unvalidated_nan_association_reaches_the_pooled_classes_it_weighs_on() -> None:
    """As in the soft pool: a NaN weight (validate=False) makes the mass of the cells it weighs on NaN, and
    their pooled classes NaN, so every pixel reconstructed from them is NaN (a ``mass > 0`` test made them 0:
    the other pixels of those cells were reconstructed finite)."""
    q = torch.softmax(torch.randn(1, 9, 8, 8, generator=torch.Generator().manual_seed(0)), 1)
    q = soft_module._normalized(q, 2, True)
    q[0, :, 0, 0] = float("nan")  # weighs on cells (0, 0), (0, 1), (1, 0), (1, 1)
    labels = torch.randint(0, 3, (1, 8, 8), generator=torch.Generator().manual_seed(1))
    every = torch.ones(1, 8, 8, dtype=torch.bool)
    own = _own_label_reconstruction(q, every, labels, every, 3, soft_module._blocks(8, 8, 2))
    assert own[0, :2, :2].isnan().all()  # cell (0, 0): every candidate of its pixels is a reached cell
    assert own[0, 6:, 6:].isfinite().all()  # cell (3, 3): no candidate is


def test_label_table_adds_the_chunks_of_a_large_cell_in_float64() -> None:
    """float32 weights with 17 fraction bits: every (chunk, class) entry of the table is exact, the cell sums
    (26 bits) are not. Both classes get the same weights, the second in the reverse chunk order, so their
    masses are equal exactly: added in float64, every pooled class is 0.5 and every pixel reconstructs
    exactly 0.5 times its weight (a float32 addition of the chunk entries rounds the two sums differently)."""
    b, side = 8, 32  # one cell of 1024 pixels per image: 16 chunks
    blocks = soft_module._blocks(side, side, side)
    assert blocks.chunks > soft_module.FLOAT32_CHUNK_SUMS
    g = torch.Generator().manual_seed(0)
    half = torch.randint(1, 2**17, (b, side, side // 2), generator=g).float() / 2**17
    weight = torch.cat([half, half.flip(1)], dim=2)  # the right half: the left half's rows reversed
    q = torch.zeros(b, 9, side, side)
    q[:, 4] = weight  # the centre candidate only (the others are outside the image)
    labels = torch.zeros(b, side, side, dtype=torch.long)
    labels[..., side // 2 :] = 1
    every = torch.ones(b, side, side, dtype=torch.bool)
    own = _own_label_reconstruction(q, every, labels, every, 2, blocks)
    torch.testing.assert_close(own, 0.5 * weight, rtol=0, atol=0)


@pytest.mark.parametrize("excluded", ["mask", "ignore_index", "unknown label"])
def test_eps_zero_is_finite_where_a_pixel_is_not_scored(excluded: str) -> None:
    """eps=0: the only pixel of class 0 is masked, ignored or (unvalidated) outside the classes, so its own
    reconstruction is 0; it is excluded before the logarithm (whose argument there is a harmless 1), so
    neither the value nor the gradient is NaN, and no NaN is made and discarded on the way (anomaly mode)."""
    g = torch.Generator().manual_seed(7)
    assoc = torch.softmax(torch.randn(2, 9, 5, 6, generator=g, dtype=torch.float64), 1)
    target = torch.randint(1, 3, (2, 5, 6), generator=g)
    target[0, 2, 3] = 0
    mask, kwargs, reference_target = None, {}, target.clone()
    if excluded == "mask":
        mask = torch.ones(2, 5, 6, dtype=torch.bool)
        mask[0, 2, 3] = False
        reference_target[0, 2, 3] = 255
    elif excluded == "ignore_index":
        target[0, 2, 3] = reference_target[0, 2, 3] = 255
    else:
        target[0, 2, 3] = reference_target[0, 2, 3] = 9
        kwargs = {"num_classes": 3, "validate": False}
    a = assoc.clone().requires_grad_()
    with torch.autograd.set_detect_anomaly(True):  # no step of the backward makes a NaN (0 / 0) either
        out = spixel_loss(a, target, 3, mask=mask, eps=0.0, **kwargs)
        out.total.backward()
    assert torch.isfinite(a.grad).all()
    # the reference over the counted pixels (a tiny eps only keeps its log(0) of the zero one-hot entries
    # finite: every counted pixel reconstructs its own class with a mass far above it)
    total, sem, pos = ref_loss(assoc, reference_target, 3, num_classes=3, eps=1e-300)
    torch.testing.assert_close(out.semantic.item(), sem)
    torch.testing.assert_close(out.position.item(), pos)
    torch.testing.assert_close(out.total.item(), total)
    assert torch.autograd.gradcheck(
        lambda q: spixel_loss(q, target, 3, mask=mask, eps=0.0, num_classes=3, validate=False).total, (a,)
    )


def test_empty_images_are_refused_naming_assoc() -> None:
    with pytest.raises(ValueError, match=r"assoc must have H, W >= 1.*got shape \(1, 9, 0, 4\)"):
        spixel_loss(torch.rand(1, 9, 0, 4), torch.zeros(1, 0, 4, dtype=torch.long), 2, num_classes=2)


@pytest.mark.parametrize("dense", [False, True])
def test_meta_tensors_give_scalars_without_validation(dense: bool) -> None:
    assoc = torch.rand(2, 9, 5, 6, device="meta")
    target = (
        torch.rand(2, 3, 5, 6, device="meta")
        if dense
        else torch.zeros(2, 5, 6, dtype=torch.long, device="meta")
    )
    out = spixel_loss(assoc, target, 3, num_classes=4, validate=False)
    assert all(t.shape == () and t.device.type == "meta" for t in out)


@pytest.mark.parametrize(("side", "cell"), [(67, 67), (26, 11)])
def test_padded_chunks_of_a_cell_without_a_useful_divisor_give_the_reference(side: int, cell: int) -> None:
    """Cells whose side has no divisor near ``CHUNK`` are padded to whole chunks (see
    ``soft._blocks``); the label table of the loss indexes those chunks and still gives the reference."""
    g = torch.Generator().manual_seed(side)
    assoc = torch.softmax(torch.randn(2, 9, side, side, generator=g, dtype=torch.float64), 1)
    target = torch.randint(0, 4, (2, side, side), generator=g)
    target[0, :3] = 255
    total, sem, pos = ref_loss(assoc, target, cell)
    out = spixel_loss(assoc, target, cell)
    for value, expected in zip(out, (total, sem, pos), strict=True):
        torch.testing.assert_close(value, torch.tensor(expected, dtype=torch.float64))


INTEGER_DTYPES = [
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint16,
    torch.uint32,
    torch.uint64,
]


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("ignore_index", [255, 256, -1, -129, 2**40])
def test_ignore_index_is_compared_as_int64_for_every_label_dtype(
    dtype: torch.dtype, ignore_index: int
) -> None:
    """The labels equal to ``ignore_index`` as int64 are ignored, whatever the label map's dtype: compared in
    that dtype ``ignore_index`` wrapped (256 is 0 in uint8: every label 0 was ignored; 2**40 is 0 in the
    32-bit and smaller types)."""
    g = torch.Generator().manual_seed(4)
    assoc = torch.softmax(torch.randn(2, 9, 4, 6, generator=g, dtype=torch.float64), 1)
    target = torch.randint(0, 3, (2, 4, 6), generator=g)
    target[0, 0] = 127  # an ignored label that fits every dtype: ignore_index names another value
    expected = spixel_loss(assoc, target, 2, ignore_index=ignore_index, num_classes=128)
    got = spixel_loss(assoc, target.to(dtype), 2, ignore_index=ignore_index, num_classes=128)
    assert torch.equal(got.semantic, expected.semantic) and torch.equal(got.position, expected.position)
    if torch.iinfo(dtype).min <= ignore_index <= torch.iinfo(dtype).max:  # ... and one that it names
        target[0, 0] = ignore_index
        expected = spixel_loss(assoc, target, 2, ignore_index=ignore_index, num_classes=3)
        got = spixel_loss(assoc, target.to(dtype), 2, ignore_index=ignore_index, num_classes=3)
        assert torch.equal(got.semantic, expected.semantic) and torch.equal(got.position, expected.position)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64])
def test_a_negative_label_is_refused_for_every_signed_dtype(dtype: torch.dtype) -> None:
    """Label -1 with the default ``ignore_index=255``: int8 read 255 as -1 and ignored the label silently."""
    assoc = torch.softmax(torch.randn(1, 9, 2, 2), 1)
    target = torch.tensor([[[0, 1], [-1, 1]]], dtype=dtype)
    with pytest.raises(ValueError, match=r"target labels must be >= 0 \(or ignore_index=255\), got -1"):
        spixel_loss(assoc, target, 2)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_a_label_equal_to_num_classes_is_refused_and_the_one_below_it_accepted(num_classes: int) -> None:
    """The label range is ``[0, num_classes)``: validated, the first label outside it (``num_classes``
    itself) is refused, the last one inside it is a class."""
    assoc = torch.softmax(torch.randn(1, 9, 2, 2, dtype=torch.float64), 1)
    target = torch.tensor([[[0, 0], [num_classes - 1, 255]]])
    spixel_loss(assoc, target, 2, num_classes=num_classes)  # no error
    target[0, 1, 1] = num_classes
    match = rf"target labels must be < num_classes={num_classes}, got label {num_classes}$"
    with pytest.raises(ValueError, match=match):
        spixel_loss(assoc, target, 2, num_classes=num_classes)
    with pytest.raises(ValueError, match=match):
        SpixelLoss(2, num_classes=num_classes)(assoc, target)


def test_a_uint64_label_above_the_int64_range_is_neither_ignored_nor_a_class() -> None:
    """2**64 - 1 reads as -1 in int64: with ``ignore_index=-1`` it is not ignored; validated, it is
    refused."""
    assoc = torch.softmax(torch.randn(1, 9, 2, 2, dtype=torch.float64), 1)
    target = torch.tensor([[[0, 1], [1, 2**64 - 1]]], dtype=torch.uint64)
    with pytest.raises(ValueError, match="got the uint64 label 18446744073709551615"):
        spixel_loss(assoc, target, 2, ignore_index=-1)
    out = spixel_loss(assoc, target, 2, ignore_index=-1, num_classes=2, validate=False)
    as_stray = torch.tensor([[[0, 1], [1, 7]]])  # a label outside the classes: pooled, scored, no class
    assert torch.equal(
        out.total, spixel_loss(assoc, as_stray, 2, ignore_index=-1, num_classes=2, validate=False).total
    )


@pytest.mark.parametrize(
    ("half", "autocast"), [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16)]
)
@pytest.mark.parametrize("dense", [False, True])
def test_half_association_under_autocast_of_the_other_half_type(
    half: torch.dtype, autocast: torch.dtype, dense: bool
) -> None:
    """The validated loss of a half association runs under the other half type's autocast too: the value
    check of ``assoc`` stacked two half scalars, which autocast refused."""
    g = torch.Generator().manual_seed(5)
    assoc = torch.softmax(torch.randn(2, 9, 6, 5, generator=g), 1).to(half)
    target = (
        torch.randn(2, 3, 6, 5, generator=g).to(half)
        if dense
        else torch.randint(0, 3, (2, 6, 5), generator=g)
    )
    expected = spixel_loss(assoc, target, 3)
    with torch.autocast("cpu", dtype=autocast):
        got = spixel_loss(assoc, target, 3)
    for g_, e in zip(got, expected, strict=True):
        assert g_.dtype == e.dtype == half and torch.equal(g_, e)


@pytest.mark.parametrize("masked", [False, True])
def test_a_dense_target_without_channels_has_a_semantic_term_of_zero(masked: bool) -> None:
    """``C = 0`` (empty feature vectors, which the soft ops take): the distance between empty vectors is 0, so
    the loss and its gradient are those of the position term, as for a constant zero target (reconstructed
    exactly); the largest entry that scales the norm does not exist (amax raised an IndexError)."""
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 9, 5, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 5, 6, generator=g) > 0.3 if masked else None
    grads = []
    for channels in (0, 1):
        leaf = logits.clone().requires_grad_(True)
        out = spixel_loss(
            torch.softmax(leaf, 1), torch.zeros(2, channels, 5, 6, dtype=torch.float64), 3, mask=mask
        )
        if channels == 0:
            assert out.semantic == 0 and out.semantic.dtype == torch.float64
            empty = out
        out.total.backward()
        grads.append(leaf.grad)
    assert torch.equal(empty.position, out.position) and torch.equal(empty.total, out.total)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_a_numpy_target_is_refused_with_the_shapes_and_the_conversion() -> None:
    # as the association (and every other op's data): the expected shapes and torch.from_numpy
    assoc = torch.full((1, 9, 4, 4), 1 / 9)
    with pytest.raises(
        TypeError,
        match=r"target must be a Tensor of shape \[B, H, W\] \(labels\) or \[B, C, H, W\] \(features\), got "
        r"ndarray; convert it with torch\.from_numpy\(target\)",
    ):
        spixel_loss(assoc, np.zeros((1, 4, 4), dtype=np.int64), 2)  # type: ignore[arg-type]


def test_ignore_index_is_refused_from_2_to_the_63_on() -> None:
    """The int64 range is half-open: ``2**63`` is the first value refused (naming it), the bounds ``-2**63``
    and ``2**63 - 1`` are labels like any other."""
    assoc = torch.softmax(torch.randn(1, 9, 4, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"ignore_index must be an int64 label .*got 9223372036854775808$"):
        spixel_loss(assoc, target, 2, ignore_index=2**63)
    expected = spixel_loss(assoc, target, 2)
    for value in (2**63 - 1, -(2**63)):
        assert torch.equal(spixel_loss(assoc, target, 2, ignore_index=value).total, expected.total)


def test_the_semantic_term_without_channels_stays_in_the_graph() -> None:
    """``C = 0``: the semantic term is 0 with a zero gradient of its own (it can be differentiated alone,
    e.g. to log each term's gradient), not a constant outside the graph."""
    leaf = torch.randn(1, 9, 4, 4, dtype=torch.float64, requires_grad=True)
    out = spixel_loss(torch.softmax(leaf, 1), torch.zeros(1, 0, 4, 4, dtype=torch.float64), 2)
    (grad,) = torch.autograd.grad(out.semantic, leaf)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_module_repr_shows_validate_false() -> None:
    assert repr(SpixelLoss(4, validate=False)).endswith("renormalize=True, validate=False)")
    assert "validate" not in repr(SpixelLoss(4))


def test_subnormal_dense_differences_give_their_exact_distance() -> None:
    """Differences far below ``sqrt(tiny)`` are scaled up by a power of two that float32 holds (2**127 at
    most: 2**141 is inf, and the norm NaN): values 0 and 2**-140 in every 2 x 2 cell reconstruct as their mean
    2**-141, which is every pixel's distance."""
    assoc = torch.zeros(1, 9, 4, 4)
    assoc[:, 4] = 1  # the regular grid
    target = torch.zeros(1, 1, 4, 4)
    target[..., ::2] = 2.0**-140
    assert spixel_loss(assoc, target, 2).semantic.item() == 2.0**-141


def test_num_classes_is_inferred_from_the_largest_label_also_without_validation() -> None:
    """``num_classes=None`` reads the largest label whatever ``validate`` says: with ``validate=False`` the
    count is inferred as well (not taken as 1, which made every label from 1 on "outside the classes", with
    no cross-entropy)."""
    g = torch.Generator().manual_seed(5)
    assoc = torch.softmax(torch.randn(2, 9, 5, 6, generator=g, dtype=torch.float64), 1)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, 0, 0] = 3  # the largest label: 4 classes
    out = spixel_loss(assoc, target, 2, validate=False)
    torch.testing.assert_close(out, spixel_loss(assoc, target, 2, num_classes=4, validate=False))
    total, sem, _ = ref_loss(assoc, target, 2, num_classes=4)
    torch.testing.assert_close(out.semantic.item(), sem)
    torch.testing.assert_close(out.total.item(), total)


def test_num_classes_beyond_the_bound_is_refused_before_allocating() -> None:
    """The loss's table grows with ``num_classes``: ``2**40`` tried to allocate 316 TB for an 8 x 8 image and
    ``2**70`` raised a bare OverflowError; both are refused naming the argument, in the function and the
    module, and the bound itself is accepted."""
    from sparse_ops._checks import MAX_CLASSES

    assoc = torch.softmax(torch.randn(2, 9, 8, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    target = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    for value in (MAX_CLASSES + 1, 2**40, 2**70):
        match = rf"num_classes must be at most {MAX_CLASSES} .*got {value}$"
        for validate in (True, False):
            with pytest.raises(ValueError, match=match):
                spixel_loss(assoc, target, 4, num_classes=value, validate=validate)
        with pytest.raises(ValueError, match=match):
            SpixelLoss(4, num_classes=value)
    bounded = spixel_loss(assoc, target, 4, num_classes=MAX_CLASSES)
    torch.testing.assert_close(bounded.total, spixel_loss(assoc, target, 4, num_classes=3).total)


@pytest.mark.parametrize("name", ["eps", "pos_weight"])
@pytest.mark.parametrize("value", [math.inf, pytest.param(10**400, id="10**400")])
def test_an_infinite_eps_or_pos_weight_is_refused(name: str, value: float) -> None:
    """``eps=inf`` gave a loss of -inf and ``pos_weight=inf`` (or ``10**400``, beyond the float range) +inf,
    silently; NaN was already refused."""
    assoc = torch.full((1, 9, 4, 4), 1 / 9)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    shown = "inf" if value == math.inf else f"{value}, beyond the float range"
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0.0, got {shown}"):
        spixel_loss(assoc, target, 2, **{name: value})
    with pytest.raises(ValueError, match=rf"{name} must be a finite number >= 0.0, got {shown}"):
        SpixelLoss(2, **{name: value})


def test_a_sparse_or_zero_dim_target_is_refused_naming_target() -> None:
    """A sparse label map failed in PyTorch ("Could not run 'aten::ne.Scalar' with arguments from the
    'SparseCPU' backend") and a 0-d target with an IndexError; a floating sparse target was already
    refused."""
    assoc = torch.full((2, 9, 4, 4), 1 / 9)
    labels = torch.randint(0, 3, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    with pytest.raises(TypeError, match=r"target must be a dense tensor, got layout torch.sparse_coo"):
        spixel_loss(assoc, labels.to_sparse(), 2)
    for scalar in (torch.tensor(3), torch.tensor(1.0)):
        with pytest.raises(ValueError, match=r"target must have shape \[B, H, W\] .*got shape \(\)"):
            spixel_loss(assoc, scalar, 2)


def _public_code_loss(q: torch.Tensor, onehot: torch.Tensor, s: int, m: float) -> torch.Tensor:
    """The loss of the public SpixelFCN code as its training script computes it, written here from its
    description: the 9 shifted cells pad with zeros (a border pixel's weight on a cell outside the image is
    lost, not rescaled), centres are association-weighted means (``+ 1e-8`` under the mass, of S x S
    averages), reconstructions the association-weighted sums of the 9 centres, and the loss
    ``0.005 (sem + m/S pos)`` with both terms summed over the pixels and divided by the batch size."""
    b, _, h, w = q.shape
    xs = torch.arange(w, dtype=q.dtype).expand(h, w)
    ys = torch.arange(h, dtype=q.dtype)[:, None].expand(h, w)
    feat = torch.cat(
        [onehot, torch.stack([xs, ys]).expand(b, 2, h, w), torch.ones(b, 1, h, w, dtype=q.dtype)], 1
    )
    nh, nw = h // s, w // s
    offsets = [(k // 3 - 1, k % 3 - 1) for k in range(9)]

    def shifted(cells: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        """``out[g] = cells[g + (dy, dx)]``, zero outside the grid."""
        padded = torch.nn.functional.pad(cells, (1, 1, 1, 1))
        return padded[..., 1 + dy : 1 + dy + nh, 1 + dx : 1 + dx + nw]

    sums = torch.zeros(b, feat.shape[1], nh, nw, dtype=q.dtype)
    for k, (dy, dx) in enumerate(offsets):  # what the pixels of cell g give to their candidate g + d_k
        sums += shifted(torch.nn.functional.avg_pool2d(feat * q[:, k : k + 1], s), -dy, -dx)
    centres = sums[:, :-1] / (sums[:, -1:] + 1e-8)
    rebuilt = torch.zeros(b, feat.shape[1] - 1, h, w, dtype=q.dtype)
    for k, (dy, dx) in enumerate(offsets):
        rebuilt += q[:, k : k + 1] * torch.repeat_interleave(
            torch.repeat_interleave(shifted(centres, dy, dx), s, dim=2), s, dim=3
        )
    classes = onehot.shape[1]
    sem = -(torch.log(rebuilt[:, :classes] + 1e-8) * onehot).sum() / b
    pos = torch.linalg.vector_norm(rebuilt[:, classes:] - feat[:, classes:-1], dim=1).sum() / b * m / s
    return 0.005 * (sem + pos)


@pytest.mark.parametrize("renormalize", [False, True])
def test_the_public_codes_loss_is_ours_times_a_constant_with_its_border_rule(renormalize: bool) -> None:
    """With ``renormalize=False`` (the public code's zero padding at the border) the loss is the public
    SpixelFCN code's divided by ``0.005 |V| / B`` (means over the valid pixels instead of sums over them per
    image), so its gradients are the public code's times that positive constant; the default
    ``renormalize=True`` rescales the border pixels' in-image weights and differs beyond it (as the module's
    docstring says: an audit found the docstring claiming the constant for the default)."""
    g = torch.Generator().manual_seed(12)
    b, h, w, s, m, classes = 2, 32, 32, 8, 0.003, 3
    q = torch.softmax(torch.randn(b, 9, h, w, generator=g, dtype=torch.float64), 1).requires_grad_(True)
    target = torch.randint(0, classes, (b, h, w), generator=g)
    onehot = torch.nn.functional.one_hot(target, classes).permute(0, 3, 1, 2).double()
    public = _public_code_loss(q, onehot, s, m)
    ours = spixel_loss(q, target, s, pos_weight=m, num_classes=classes, renormalize=renormalize).total
    scale = 0.005 * h * w  # 0.005 |V| / B: every pixel valid
    if renormalize:
        assert abs(float((ours * scale / public).detach()) - 1) > 1e-2
        return
    torch.testing.assert_close(ours * scale, public, rtol=1e-7, atol=0)
    (g_ours,) = torch.autograd.grad(ours * scale, q)
    (g_public,) = torch.autograd.grad(public, q)
    torch.testing.assert_close(g_ours, g_public, rtol=1e-6, atol=1e-12)
