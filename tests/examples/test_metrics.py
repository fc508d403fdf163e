"""Metrics against hand-computed confusion matrices, hand-made boundary/superpixel cases, loop references."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

pytest.importorskip("torchvision")

from examples.voc_joint import metrics
from examples.voc_joint.metrics import (
    SegmentationMetrics,
    boundary_band,
    confusion_matrix,
    format_per_class_table,
    format_table,
    iou_from_confusion,
    label_edges,
    superpixel_scores,
    to_jsonable,
)
from tests.hypothesis_budget import budget


def T(rows):
    return torch.tensor(rows, dtype=torch.long)


def test_confusion_matrix_by_hand():
    target = T([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    pred = T([[[0, 1, 1, 1], [2, 0, 2, 0]]])
    cm = confusion_matrix(pred, target, num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]
    iou = iou_from_confusion(cm)
    # class 0: 1 / (2 + 3 - 1); class 1: 2 / (3 + 3 - 2); class 2: 1 / (2 + 1 - 1)
    torch.testing.assert_close(iou, torch.tensor([1 / 4, 2 / 4, 1 / 2], dtype=torch.float64))
    m = SegmentationMetrics(num_classes=3, boundary_widths=(1,))
    m.update(pred, target)
    r = m.compute()
    assert r["miou"] == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert r["pixel_accuracy"] == pytest.approx(4 / 7)
    assert r["mean_class_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert r["confusion_matrix"] == cm.tolist() and r["num_pixels"] == 7 and r["num_images"] == 1
    assert r["per_class_iou"] == {"0": 0.25, "1": 0.5, "2": 0.5}


def test_absent_classes_are_nan_and_skipped_false_positives_count():
    target = T([[[0, 0, 0, 0]]])
    pred = T([[[0, 0, 1, 1]]])
    m = SegmentationMetrics(num_classes=3)
    m.update(pred, target)
    r = m.compute()
    # class 0: 2/4; class 1 predicted but absent: IoU 0; class 2 absent and unpredicted: NaN (skipped)
    assert r["per_class_iou"]["1"] == 0.0 and math.isnan(r["per_class_iou"]["2"])
    assert r["miou"] == pytest.approx(0.25)


def test_accumulates_over_the_whole_set_not_per_image():
    m = SegmentationMetrics(num_classes=2, boundary_widths=(1,))
    m.update(T([[[0, 0, 0, 0]]]), T([[[0, 0, 0, 1]]]))
    m.update(T([[[1, 1, 1, 1]]]), T([[[1, 1, 1, 1]]]))
    assert m.compute()["confusion_matrix"] == [[3, 0], [1, 4]]
    # pooled: IoU0 = 3 / 4, IoU1 = 4 / 5; the mean of per-image mIoUs would be ((3/4 + 0) / 2 + 1) / 2 instead
    assert m.compute()["miou"] == pytest.approx((3 / 4 + 4 / 5) / 2)
    m.reset()
    assert m.compute()["num_images"] == 0 and math.isnan(m.compute()["miou"])


@settings(max_examples=budget(15))
@given(st.integers(0, 10_000), st.integers(2, 3), st.integers(2, 6), st.integers(2, 7))
def test_one_update_per_image_gives_the_metrics_of_one_batched_update(seed, b, h, w):
    """Every accumulator (confusion, boundary bands, superpixel sums, image count) adds up over batches."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, 3, (b, h, w), generator=g)
    target = torch.randint(0, 3, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < 0.2] = 255
    sp = torch.randint(0, 4, (b, h, w), generator=g)
    whole, split = (SegmentationMetrics(num_classes=3, boundary_widths=(1, 2)) for _ in range(2))
    whole.update(pred, target, sp)
    for i in range(b):
        split.update(pred[i : i + 1], target[i : i + 1], sp[i : i + 1])
    assert json.dumps(split.compute(), sort_keys=True) == json.dumps(whole.compute(), sort_keys=True)


def _loop_confusion(pred, target, c, ignore):
    cm = np.zeros((c, c), np.int64)
    for p, t in zip(pred.reshape(-1).tolist(), target.reshape(-1).tolist(), strict=True):
        if t != ignore:
            cm[t, p] += 1
    return cm


@settings(max_examples=budget(25))
@given(st.integers(0, 10_000), st.integers(1, 3), st.integers(1, 6), st.integers(1, 7), st.integers(2, 5))
def test_confusion_matches_loop(seed, b, h, w, c):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, c, (b, h, w), generator=g)
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < 0.2] = 255
    assert np.array_equal(confusion_matrix(pred, target, c).numpy(), _loop_confusion(pred, target, c, 255))


# ---------------------------------------------------------------- boundary


def test_band_of_a_step_edge():
    target = torch.zeros(1, 6, 10, dtype=torch.long)
    target[..., 5:] = 1
    cols = lambda band: sorted(set(torch.nonzero(band[0])[:, 1].tolist()))  # noqa: E731
    assert cols(label_edges(target)) == [4, 5]
    assert cols(boundary_band(target, 1)) == [4, 5]
    assert cols(boundary_band(target, 3)) == [2, 3, 4, 5, 6, 7]
    assert boundary_band(target, 3)[0].all(0).tolist() == [c in range(2, 8) for c in range(10)]
    assert not boundary_band(torch.zeros(1, 4, 4, dtype=torch.long), 5).any()


def _loop_band(target, width):
    b, h, w = target.shape
    out = np.zeros((b, h, w), bool)
    t = target.numpy()
    edge = np.zeros_like(out)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and t[i, yy, xx] != t[i, y, x]:
                        edge[i, y, x] = True
    for i in range(b):
        ys, xs = np.nonzero(edge[i])
        for y in range(h):
            for x in range(w):
                if ys.size and np.min(np.maximum(abs(ys - y), abs(xs - x))) <= width - 1:
                    out[i, y, x] = True
    return out


@settings(max_examples=budget(15))
@given(st.integers(0, 10_000), st.integers(1, 4))
def test_band_matches_loop(seed, width):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 3, (2, 7, 9), generator=g)
    target[torch.rand(2, 7, 9, generator=g) < 0.1] = 255
    assert np.array_equal(boundary_band(target, width).numpy(), _loop_band(target, width))


def _max_pool_dilate(mask, radius):
    """The dilation as it was computed before: a stride-1 max-pool of a (2r+1)^2 window (the reference)."""
    if radius <= 0 or mask.numel() == 0:
        return mask
    out = torch.nn.functional.max_pool2d(mask[:, None].float(), 2 * radius + 1, stride=1, padding=radius)
    return out[:, 0] > 0


@settings(max_examples=budget(25))
@given(st.integers(0, 10_000), st.integers(1, 13), st.integers(1, 13), st.integers(0, 16), st.floats(0, 0.3))
def test_dilation_equals_the_max_pool_it_replaced(seed, h, w, radius, density):
    """The shifted-OR dilation gives the pixels of the max-pool, radii wider than the image included."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, h, w, generator=g) < density
    assert torch.equal(metrics._dilate(mask, radius), _max_pool_dilate(mask, radius))


def test_a_huge_width_or_tolerance_allocates_by_the_image_not_by_its_value():
    """A band width or tolerance wider than the image is the whole image: the dilation padded every row and
    column by the radius itself, so ``boundary_band(target, 2**33)`` of a 2 x 4 map allocated 16 GB (and was
    killed), 2**62 raised "can't allocate memory". Now the radius is cut to the image's side first."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 5, 7), generator=g)
    pred = torch.randint(0, 3, (2, 5, 7), generator=g)
    sp = torch.randint(0, 4, (2, 5, 7), generator=g)
    huge = 2**62  # the old padding of [B, H, W + huge] overflows any allocator at once: nothing is touched
    assert torch.equal(boundary_band(target, huge), boundary_band(target, 7))
    assert torch.equal(metrics._dilate(target == 0, huge), _max_pool_dilate(target == 0, 6))
    near = superpixel_scores(pred, target, sp, 3, tolerance=6)
    assert superpixel_scores(pred, target, sp, 3, tolerance=huge) == near
    m = SegmentationMetrics(num_classes=3, boundary_widths=(1, huge), boundary_tolerance=huge)
    m.update(pred, target, sp)
    whole = confusion_matrix(pred, target, 3, mask=boundary_band(target, 7))
    assert torch.equal(m.band_confusion[huge], whole)


@settings(max_examples=budget(15))
@given(
    st.integers(0, 10_000),
    st.lists(st.integers(1, 9), min_size=1, max_size=4, unique=True),
    st.sampled_from([torch.long, torch.int32, torch.uint8]),
)
@example(0, [5, 1, 3], torch.long)  # unsorted, and a third band grown from the second
def test_update_scores_each_band_as_confusion_of_its_band(seed, widths, dtype):
    """Bands built from one another (in any order of the widths) count the pixels that ``confusion_matrix``
    counts with each band of ``boundary_band`` alone, as the update did before (one band per width)."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, 4, (2, 11, 13), generator=g).to(dtype)
    target = torch.randint(0, 4, (2, 11, 13), generator=g)
    target[torch.rand(2, 11, 13, generator=g) < 0.2] = 255
    target = target.to(dtype)
    m = SegmentationMetrics(num_classes=4, boundary_widths=widths)
    m.update(pred, target)
    assert torch.equal(m.confusion, confusion_matrix(pred, target, 4))
    for width in widths:
        expected = confusion_matrix(pred, target, 4, mask=boundary_band(target, width))
        assert torch.equal(m.band_confusion[width], expected), width


@pytest.mark.parametrize("widths", [(1, 3, 5), (5, 1, 3)])
def test_update_bands_of_a_step_edge_for_widths_in_any_order(widths):
    """The bands the update grows from one another have the widths asked for, in any order: for a vertical
    step edge between columns 9 and 10 of 3 x 30 maps, 2, 6 and 10 columns. (Random labels, where nearly
    every pixel is an edge, fill every band and cannot tell one width from another.)"""
    target = torch.zeros(1, 3, 30, dtype=torch.long)
    target[..., 10:] = 1
    m = SegmentationMetrics(num_classes=2, boundary_widths=widths)
    m.update(target.clone(), target)
    assert m.compute()["boundary_pixels"] == {str(w): 3 * 2 * w for w in widths}


def test_a_repeated_boundary_width_counts_its_band_once():
    """``boundary_widths=(1, 1)`` (``evaluate.py --boundary-widths 1 1``) scores the band of width 1 once.
    Before: each repeat added the band's pixels again to the same matrix (``boundary_pixels`` doubled)."""
    target = torch.zeros(1, 4, 6, dtype=torch.long)
    target[..., 3:] = 1
    once, twice = (
        SegmentationMetrics(num_classes=2, boundary_widths=(1,)),
        SegmentationMetrics(num_classes=2, boundary_widths=(1, 1)),
    )
    once.update(target.clone(), target)
    twice.update(target.clone(), target)
    assert twice.compute()["boundary_pixels"] == once.compute()["boundary_pixels"] == {"1": 8}


def test_update_checks_the_maps_and_finds_the_edges_once(monkeypatch):
    """One update reads the label ranges of ``pred`` and ``target`` once and finds the label edges of
    ``target`` once, whatever the number of boundary widths (before: once per width, and again for the
    superpixel scores: 5 checks and 5 edge maps a batch with the default three widths)."""
    calls = {"check": 0, "edges": 0}
    check, edges = metrics._check_maps, metrics.label_edges

    def counted_check(*args, **kwargs):
        calls["check"] += 1
        return check(*args, **kwargs)

    def counted_edges(labels, region=None):
        calls["edges"] += 1
        return edges(labels, region)

    monkeypatch.setattr(metrics, "_check_maps", counted_check)
    monkeypatch.setattr(metrics, "label_edges", counted_edges)
    pred = torch.zeros(1, 6, 6, dtype=torch.long)
    target = pred.clone()
    target[:, :, 3:] = 1
    SegmentationMetrics(num_classes=2, boundary_widths=(1, 3, 5)).update(pred, target, target.clone())
    assert calls == {"check": 1, "edges": 2}  # the edges of the target and of the superpixels


def test_boundary_miou_penalises_edge_errors_only_near_edges():
    target = torch.zeros(1, 8, 16, dtype=torch.long)
    target[..., 8:] = 1
    shifted = torch.zeros_like(target)
    shifted[..., 9:] = 1  # edge off by one pixel
    m = SegmentationMetrics(num_classes=2, boundary_widths=(1, 3))
    m.update(shifted, target)
    r = m.compute()
    # band w=1: gt col 7 (class 0, pred 0), col 8 (class 1, pred 0): cm = [[8, 0], [8, 0]]
    assert r["boundary_miou"]["1"] == pytest.approx((8 / 16 + 0 / 8) / 2)
    # band w=3: cols 5..10: class 0 cols 5,6,7 -> pred 0; class 1 cols 8 -> pred 0, 9,10 -> pred 1
    # cm = [[24, 0], [8, 16]]: IoU0 = 24/32, IoU1 = 16/24
    assert r["boundary_miou"]["3"] == pytest.approx((24 / 32 + 16 / 24) / 2)
    assert r["boundary_pixels"] == {"1": 16, "3": 48}
    assert r["miou"] == pytest.approx((64 / 72 + 56 / 64) / 2)


def test_voc_void_band_gives_a_trimap_on_both_sides():
    target = torch.zeros(1, 4, 9, dtype=torch.long)
    target[..., 4] = 255
    target[..., 5:] = 3
    band = boundary_band(target, 2)
    assert sorted(set(torch.nonzero(band[0])[:, 1].tolist())) == [2, 3, 4, 5, 6]


def test_a_custom_ignore_index_reaches_every_accumulator():
    """``SegmentationMetrics(ignore_index=9)`` skips label 9 in the confusion matrix, in the boundary bands
    and in the superpixel scores alike (not only the default 255).

    target 0 0 9 1   pred 0 1 1 1   superpixels 0 0 1 1
           0 0 9 1        0 0 1 1                 0 0 1 1
    """
    target = T([[[0, 0, 9, 1], [0, 0, 9, 1]]])
    pred = T([[[0, 1, 1, 1], [0, 0, 1, 1]]])
    sp = T([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    m = SegmentationMetrics(num_classes=2, ignore_index=9, boundary_widths=(1,), boundary_tolerance=0)
    m.update(pred, target, sp)
    r = m.compute()
    # valid: columns 0, 1 (class 0: predicted 0, 1, 0, 0) and 3 (class 1: predicted 1, 1)
    assert r["confusion_matrix"] == [[3, 1], [0, 2]] and r["num_pixels"] == 6
    assert r["miou"] == pytest.approx((3 / 4 + 2 / 3) / 2)  # IoU0 = 3 / (4 + 3 - 3), IoU1 = 2 / (2 + 3 - 2)
    assert r["pixel_accuracy"] == pytest.approx(5 / 6)
    # label edges (9 counts as a label): columns 1, 2, 3; valid in the band: column 1 (class 0, predicted 1
    # and 0) and column 3 (class 1, predicted 1, 1): cm = [[1, 1], [0, 2]]
    assert r["boundary_pixels"] == {"1": 4}
    assert r["boundary_miou"]["1"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # ASA over the 6 valid pixels: superpixel 0 holds 4 class-0 pixels, superpixel 1 two class-1 ones (and the
    # two ignored pixels of column 2); ground-truth edge pixels off label 9: columns 1 and 3 (4 pixels), of
    # which column 1 lies on a superpixel edge (columns 1 | 2)
    assert r["asa"] == 1.0 and r["boundary_recall"] == 0.5
    # consistency counts every pixel: superpixel 0 predicts 0, 1, 0, 0 (not pure), superpixel 1 all 1
    assert r["consistency"] == 0.5 and r["consistency_pixels"] == 7 / 8


# ---------------------------------------------------------------- superpixels


def test_asa_boundary_recall_and_count_by_hand():
    target = torch.zeros(1, 4, 10, dtype=torch.long)
    target[..., 5:] = 1
    sp = torch.zeros(1, 4, 10, dtype=torch.long)
    sp[..., 7:] = 42  # superpixel edge at columns 6|7, two pixels from the gt edge at 4|5
    pred = target.clone()
    m = SegmentationMetrics(num_classes=2, boundary_tolerance=2)
    m.update(pred, target, sp)
    r = m.compute()
    # superpixel 0 holds 20 class-0 and 8 class-1 pixels; superpixel 42 holds 12 class-1 pixels
    assert r["asa"] == pytest.approx((20 + 12) / 40)
    assert r["boundary_recall"] == pytest.approx(1.0)  # cols 4, 5 lie within 2 px of cols 6, 7
    assert r["num_superpixels"] == 2
    m1 = SegmentationMetrics(num_classes=2, boundary_tolerance=1)
    m1.update(pred, target, sp)
    assert m1.compute()["boundary_recall"] == pytest.approx(0.5)  # only col 5 is within 1 px
    # consistency: superpixel 0 mixes predictions 0 and 1 -> 1 of 2 superpixels pure; 32 of 40 pixels agree
    assert r["consistency"] == pytest.approx(0.5)
    assert r["consistency_pixels"] == pytest.approx(32 / 40)


def test_consistency_is_one_for_uniform_predictions_and_ignores_nothing():
    g = torch.Generator().manual_seed(0)
    sp = torch.randint(0, 5, (2, 6, 7), generator=g) * 3 + 7  # arbitrary ids
    table = torch.randint(0, 4, (2, 30), generator=g)
    pred = torch.stack([table[b][sp[b]] for b in range(2)])
    target = torch.full_like(pred, 255)
    m = SegmentationMetrics(num_classes=4)
    m.update(pred, target, sp)
    r = m.compute()
    assert r["consistency"] == 1.0 and r["consistency_pixels"] == 1.0
    assert math.isnan(r["asa"]) and math.isnan(r["miou"])
    assert r["num_superpixels"] == pytest.approx(sum(len(sp[b].unique()) for b in range(2)) / 2)
    pred[0, 0, 0] = (pred[0, 0, 0] + 1) % 4
    m.reset()
    m.update(pred, target, sp)
    assert m.compute()["consistency"] < 1.0


def _loop_superpixel(pred, target, sp, c, tol):
    asa_hits = asa_pix = pure = k_all = maj = pix = 0
    for b in range(pred.shape[0]):
        ids = sorted(set(sp[b].reshape(-1).tolist()))
        for s in ids:
            sel = sp[b] == s
            pv = pred[b][sel].tolist()
            counts = [pv.count(v) for v in range(c)]
            pure += max(counts) == len(pv)
            maj += max(counts)
            pix += len(pv)
            tv = [v for v in target[b][sel].tolist() if v != 255]
            asa_hits += max([tv.count(v) for v in range(c)]) if tv else 0
            asa_pix += len(tv)
        k_all += len(ids)
    gt_edge = _loop_band(target, 1) & (target != 255).numpy()
    sp_near = _loop_band(sp, tol + 1)
    br_hits, br_edges = int((gt_edge & sp_near).sum()), int(gt_edge.sum())
    return {
        "asa_hits": asa_hits,
        "asa_pixels": asa_pix,
        "br_hits": br_hits,
        "br_edges": br_edges,
        "pure_superpixels": pure,
        "superpixels": k_all,
        "majority_pixels": maj,
        "pixels": pix,
        "images": pred.shape[0],
    }


@settings(max_examples=budget(12))
@given(st.integers(0, 10_000), st.integers(0, 3))
def test_superpixel_scores_match_loop(seed, tol):
    g = torch.Generator().manual_seed(seed)
    c = 3
    pred = torch.randint(0, c, (2, 6, 8), generator=g)
    target = torch.randint(0, c, (2, 6, 8), generator=g)
    target[torch.rand(2, 6, 8, generator=g) < 0.15] = 255
    sp = torch.randint(0, 4, (2, 3, 4), generator=g).repeat_interleave(2, 1).repeat_interleave(2, 2)
    got = superpixel_scores(pred, target, sp, c, tolerance=tol)
    assert got == pytest.approx(_loop_superpixel(pred, target, sp, c, tol))


class _HostReads(TorchFunctionMode):
    """Counts the reads of tensor values on the host (each a synchronisation on an accelerator)."""

    READS = frozenset({"__bool__", "__float__", "__index__", "__int__", "cpu", "item", "tolist"})

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


def test_superpixel_scores_read_the_host_a_fixed_number_of_times_per_batch():
    """The superpixel sums of a batch are read on the host at once, whatever the batch size (before: six
    reads per image: 10 for one image, 40 for a batch of 6; now 4); the sums are those of the images alone."""
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (6, 8, 8), generator=g)
    target = torch.randint(0, 3, (6, 8, 8), generator=g)
    sp = torch.randint(0, 5, (6, 8, 8), generator=g)
    reads = []
    for b in (1, 6):
        with _HostReads() as mode:
            superpixel_scores(pred[:b], target[:b], sp[:b], 3)
        reads.append(mode.count)
    assert reads[0] == reads[1] <= 4, reads
    each = [superpixel_scores(pred[i : i + 1], target[i : i + 1], sp[i : i + 1], 3) for i in range(6)]
    assert superpixel_scores(pred, target, sp, 3) == {k: sum(s[k] for s in each) for k in each[0]}


def test_superpixels_with_channel_dim_accepted():
    pred = torch.zeros(1, 3, 3, dtype=torch.long)
    m = SegmentationMetrics(num_classes=2)
    m.update(pred, pred.clone(), torch.zeros(1, 1, 3, 3, dtype=torch.long))
    assert m.compute()["num_superpixels"] == 1


@pytest.mark.parametrize(
    "sp, got",
    [
        ([[[0, 1]]], "list"),
        (np.zeros((1, 1, 2), np.int64), "ndarray"),
        (torch.zeros(1, 2, 1), "Tensor torch.float32"),
    ],
)
def test_superpixels_that_are_not_an_integer_tensor_are_named(sp, got):
    """Superpixels that are no tensor were an ``AttributeError`` ('list' object has no attribute 'dim' /
    'to'); now the ``TypeError`` of a float tensor, naming the argument, what it takes and what it got (a
    float tensor of another shape too: its type is checked first)."""
    maps = T([[[0, 1]]]), T([[[0, 1]]])
    for call in (
        lambda: superpixel_scores(*maps, sp, num_classes=2),
        lambda: SegmentationMetrics(num_classes=2).update(*maps, sp),
    ):
        with pytest.raises(TypeError, match=rf"superpixels must be an integer tensor \[B, H, W\], got {got}"):
            call()


# ---------------------------------------------------------------- errors, tables, JSON


@pytest.mark.parametrize(
    "pred, target, sp, exc, match",
    [
        (torch.zeros(1, 2, 2), T([[[0, 0], [0, 0]]]), None, TypeError, "pred must be an integer"),
        (T([[[[0, 0]]]]), T([[[[0, 0]]]]), None, ValueError, "pred must have shape"),
        (T([[[0, 0]]]), T([[[0, 0, 0]]]), None, ValueError, "same shape"),
        (T([[[0, 5]]]), T([[[0, 0]]]), None, ValueError, r"pred values must lie in \[0, 3\)"),
        (T([[[0, 0]]]), T([[[0, 7]]]), None, ValueError, r"target values .* got \[7\]"),
        (T([[[0, 0]]]), T([[[0, -1]]]), None, ValueError, r"target values .* or be 255, got \[-1\]"),
        (T([[[0, 0]]]), T([[[0, 0]]]), T([[[0, -1]]]), ValueError, "superpixel ids must be >= 0"),
        (T([[[0, 0]]]), T([[[0, 0]]]), T([[[0, 0, 0]]]), ValueError, "superpixels must have shape"),
        (T([[[0, 0]]]), T([[[0, 0]]]), torch.zeros(1, 1, 2), TypeError, "superpixels must be an integer"),
    ],
)
def test_update_errors(pred, target, sp, exc, match):
    with pytest.raises(exc, match=match):
        SegmentationMetrics(num_classes=3).update(pred, target, sp)


@pytest.mark.parametrize(
    "args, exc, message",
    [
        (([[0, 1]], [[0, 1]]), TypeError, "pred must be an integer tensor [B, H, W], got list "),
        ((T([[0, 1]]), [[0, 1]]), TypeError, "target must be an integer tensor [B, H, W], got list "),
        (
            (T([[0, 1]]), T([[0, 1]]), T([[[0, 1]], [[1, 1]]])),
            ValueError,
            "superpixels must have shape (1, 1, 2) (like target), got (2, 1, 2)",
        ),
        (
            (T([[0, 1]]), T([[0, 1]]), None, torch.ones(2, 1, 2, dtype=torch.bool)),
            ValueError,
            "region must have the shape of target (1, 1, 2), got (2, 1, 2)",
        ),
        (
            (T([[0, 1]]), T([[0, 1]]), None, [[True, True]]),
            TypeError,
            "region must be a boolean tensor [B, H, W], got list ",
        ),
    ],
)
def test_update_of_one_image_names_what_it_refuses(args, exc, message):
    """An ``[H, W]`` prediction is one image; the maps passed with it that are not one image of its size were
    a ``RuntimeError`` "shape '[1, 1, 2]' is invalid for input of size 4" (superpixels or region of two
    images), or an ``AttributeError`` ("'list' object has no attribute 'dim'") for a map that is no tensor.
    Now the error of the batched maps, naming the argument, the shape expected and the one passed."""
    with pytest.raises(exc) as info:
        SegmentationMetrics(num_classes=2).update(*args)
    assert str(info.value).startswith(message)
    one = SegmentationMetrics(num_classes=2, boundary_widths=(1,))  # one image: as its batch of one
    one.update(T([[0, 1]]), T([[0, 1]]), T([[[[0, 1]]]]), torch.ones(1, 2, dtype=torch.bool))
    batch = SegmentationMetrics(num_classes=2, boundary_widths=(1,))
    batch.update(T([[[0, 1]]]), T([[[0, 1]]]), T([[[0, 1]]]), torch.ones(1, 1, 2, dtype=torch.bool))
    assert one.compute() == batch.compute()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"boundary_widths": (0,)}, "boundary_widths"),
        ({"boundary_tolerance": -1}, "boundary_tolerance"),
        ({"num_classes": 2, "class_names": ["a"]}, "class_names"),
        ({"num_classes": 2, "class_names": ["a", "b", "c"]}, "class_names must have 2 entries, got 3"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegmentationMetrics(**kwargs)
    with pytest.raises(ValueError, match="width"):
        boundary_band(torch.zeros(1, 2, 2, dtype=torch.long), 0)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: SegmentationMetrics(boundary_widths=(1, 2.5)),
            "boundary_widths must be an integer >= 1, got (1, 2.5)",
        ),
        (
            lambda: SegmentationMetrics(boundary_tolerance=1.5),
            "boundary_tolerance must be an integer >= 0, got 1.5",
        ),
        (lambda: SegmentationMetrics(num_classes=2.5), "num_classes must be an integer >= 1, got 2.5"),
        (
            lambda: SegmentationMetrics(boundary_widths=(True,)),
            "boundary_widths must be an integer >= 1, got (True,)",
        ),
        (lambda: boundary_band(T([[[0, 1]]]), 2.5), "width must be an integer >= 1, got 2.5"),
        (
            lambda: superpixel_scores(T([[[0, 1]]]), T([[[0, 1]]]), T([[[0, 0]]]), 2, tolerance=0.5),
            "tolerance must be an integer >= 0, got 0.5",
        ),
    ],
)
def test_a_width_tolerance_or_class_count_that_is_not_an_integer_is_refused(call, message):
    """Before, ``int()`` truncated them: ``boundary_widths=(2.5,)`` scored (and labelled) a 2 px band,
    ``boundary_tolerance=1.5`` and ``tolerance=0.5`` a 1 px and a 0 px tolerance; ``num_classes=2.5`` failed
    with "'float' object cannot be interpreted as an integer"."""
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value) == message


def test_a_class_count_or_ignore_label_that_is_not_an_integer_is_refused_by_every_function():
    """``SegmentationMetrics(ignore_index=2.5)`` truncated it with ``int()`` and skipped the pixels of class 2
    (silently: a confusion matrix without them); ``confusion_matrix`` and ``superpixel_scores`` checked
    neither argument: ``num_classes=3.0`` failed in ``bincount`` ("argument 'minlength' must be int, not
    float") and ``num_classes=0`` was named as a range of ``pred`` values. The constructor's messages."""
    p = T([[[0, 1, 2]]])
    calls = {
        "class": SegmentationMetrics,
        "confusion": lambda **kw: confusion_matrix(p, p, **kw),
        "superpixels": lambda **kw: superpixel_scores(p, p, p, **kw),
    }
    for name, call in calls.items():
        for kwargs, exc, message in [
            ({"num_classes": 3, "ignore_index": 2.5}, TypeError, "ignore_index must be an integer, got 2.5"),
            (
                {"num_classes": 3, "ignore_index": None},
                TypeError,
                "ignore_index must be an integer, got None",
            ),
            ({"num_classes": 3.0}, TypeError, "num_classes must be an integer >= 1, got 3.0"),
            ({"num_classes": 0}, ValueError, "num_classes must be >= 1, got 0"),
        ]:
            with pytest.raises(exc) as info:
                call(**kwargs)
            assert str(info.value) == message, name
        assert call(num_classes=np.int64(3), ignore_index=torch.tensor(-1)) is not None, name


def test_integer_like_widths_and_generators_of_widths_are_taken():
    """NumPy and 0-d tensor integers are integers; a generator of widths is read once."""
    m = SegmentationMetrics(
        num_classes=np.int64(2),
        boundary_widths=(w for w in (np.int32(3), torch.tensor(1))),
        boundary_tolerance=np.int64(0),
    )
    assert (m.num_classes, m.boundary_widths, m.boundary_tolerance) == (2, (3, 1), 0)
    assert type(m.num_classes) is int and all(type(w) is int for w in m.boundary_widths)


def test_voc_names_tables_and_json():
    m = SegmentationMetrics()
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[:, 2:6, 2:6] = 15
    m.update(target.clone(), target, torch.arange(64).view(1, 8, 8) // 16)
    r = m.compute()
    assert r["per_class_iou"]["person"] == 1.0 and math.isnan(r["per_class_iou"]["cat"])
    text = format_table({"baseline": r, "joint": r}, title="val")
    assert text.splitlines()[0] == "val" and "baseline" in text and "joint" in text
    assert "mIoU (%)" in text and "100.00" in text and "boundary mIoU, 5 px (%)" in text
    assert "superpixels per image" in text and " 4.0" in text
    per = format_per_class_table(r)
    assert "person" in per and "cat" in per and per.splitlines()[-1].split()[-1] == "100.00"
    assert format_table(SegmentationMetrics(num_classes=2).compute()).count(" -") >= 3
    payload = json.loads(metrics.dumps(r))
    assert payload["per_class_iou"]["cat"] is None and payload["miou"] == 1.0
    assert to_jsonable({"a": [float("nan"), 1.0, torch.tensor([2.0])]}) == {"a": [None, 1.0, [2.0]]}


def test_device_inputs_match_cpu(accelerator):
    """Metrics of inputs on an accelerator equal those on the CPU (a ``cpu`` case compared the CPU with
    itself, which cannot fail)."""
    device = accelerator
    g = torch.Generator().manual_seed(1)
    pred = torch.randint(0, 4, (2, 9, 11), generator=g)
    target = torch.randint(0, 4, (2, 9, 11), generator=g)
    target[:, 0] = 255
    sp = torch.randint(0, 3, (2, 9, 11), generator=g)
    cpu, dev = SegmentationMetrics(num_classes=4), SegmentationMetrics(num_classes=4)
    cpu.update(pred, target, sp)
    dev.update(pred.to(device), target.to(device), sp.to(device))
    a, b = cpu.compute(), dev.compute()
    assert a == b


@pytest.mark.parametrize(
    "pred, target, match",
    [
        (T([[[2, 0]]]), T([[[0, 0]]]), r"pred values must lie in \[0, 2\)"),
        (T([[[0, 0]]]), T([[[2, 0]]]), r"target values must lie in \[0, 2\) or be 255, got \[2\]"),
    ],
)
def test_superpixel_scores_refuse_labels_out_of_range(pred, target, match):
    """Before: label 2 of superpixel 0 was counted in superpixel 1's bin of class 0 (silently: both
    superpixels pure, ASA 1)."""
    with pytest.raises(ValueError, match=match):
        superpixel_scores(pred, target, T([[[0, 1]]]), num_classes=2)
    with pytest.raises(ValueError, match="tolerance must be >= 0, got -1"):
        superpixel_scores(T([[[0, 0]]]), T([[[0, 0]]]), T([[[0, 1]]]), num_classes=2, tolerance=-1)


def test_out_of_range_target_labels_are_shown_ten_at_most_smallest_first():
    """The error lists the distinct bad labels, sorted, the first ten of them (not every one of a map)."""
    target = torch.arange(13, 1, -1).view(1, 1, 12)
    with pytest.raises(ValueError, match=r"or be 255, got \[2, 3, 4, 5, 6, 7, 8, 9, 10, 11\]$"):
        confusion_matrix(torch.zeros_like(target), target, num_classes=2)


@pytest.mark.parametrize("shape", [(2, 1, 2, 2), (3, 2, 2)])
def test_confusion_matrix_names_a_mask_of_another_shape(shape):
    p = torch.zeros(2, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=r"mask must have the shape of target \(2, 2, 2\), got"):
        confusion_matrix(p, p, 2, mask=torch.ones(shape, dtype=torch.bool))


@pytest.mark.parametrize(
    "mask, got",
    [
        (torch.tensor([[[0.2, 0.0]]]), "Tensor torch.float32"),  # before: cast, both pixels counted
        (torch.tensor([[[1, 0]]]), "Tensor torch.int64"),
        ([[[True, False]]], "list"),  # before: AttributeError: 'list' object has no attribute 'shape'
    ],
)
def test_confusion_matrix_refuses_a_mask_that_is_not_boolean(mask, got):
    """``mask`` is a BoolTensor, as ``region``: a float mask (weights, probabilities) was cast to bool, so
    that every non-zero pixel counted, whatever its value."""
    p = T([[[0, 1]]])
    with pytest.raises(TypeError, match=rf"mask must be a boolean tensor \[B, H, W\], got {got}"):
        confusion_matrix(p, p, 2, mask=mask)
    assert confusion_matrix(p, p, 2, mask=torch.tensor([[[True, False]]])).tolist() == [[1, 0], [0, 0]]


@pytest.mark.parametrize("shape", [(3,), (2, 3)])
def test_iou_needs_a_square_matrix(shape):
    with pytest.raises(ValueError, match=r"cm must be a square matrix \[C, C\], got shape"):
        iou_from_confusion(torch.zeros(shape, dtype=torch.long))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: label_edges([[[0, 1]]]), "labels must be a tensor [B, H, W], got list"),
        (
            lambda: boundary_band(np.zeros((1, 2, 2), np.int64), 1),
            "target must be a tensor [B, H, W], got ndarray",
        ),
        (lambda: iou_from_confusion(np.eye(2, dtype=np.int64)), "cm must be a tensor [C, C], got ndarray"),
    ],
)
def test_a_map_or_matrix_that_is_no_tensor_is_named(call, message):
    """Before: ``AttributeError: 'list' object has no attribute 'dim'`` (and so for a NumPy array)."""
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value) == message


def test_images_without_pixels_add_nothing():
    """Before: the boundary band's max-pool refused a 0-row image (``RuntimeError``)."""
    m = SegmentationMetrics(num_classes=2, boundary_widths=(1, 3))
    empty = torch.zeros(1, 0, 4, dtype=torch.long)
    m.update(empty, empty, empty)
    r = m.compute()
    assert r["num_pixels"] == 0 and math.isnan(r["miou"]) and r["boundary_pixels"] == {"1": 0, "3": 0}
    assert math.isnan(r["pixel_accuracy"]) and math.isnan(r["mean_class_accuracy"])  # undefined, not 0 %


def test_a_negative_ignore_index_reaches_every_accumulator():
    """``ignore_index=-100`` (``torch.nn.CrossEntropyLoss``'s default) gives the metrics of the same maps with
    255: its pixels, in the boundary bands too, never reach a confusion-matrix bin (a negative one)."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 9, 10), generator=g)
    target[:, :, 4:6] = 255  # a void band between labels: ignored pixels inside every boundary band
    pred = torch.randint(0, 3, (2, 9, 10), generator=g)
    sp = torch.arange(90).view(1, 9, 10).div(15, rounding_mode="floor").expand(2, 9, 10)
    results = []
    for ignore in (255, -100):
        m = SegmentationMetrics(num_classes=3, ignore_index=ignore, boundary_widths=(1, 2))
        m.update(pred, torch.where(target == 255, ignore, target), sp)
        results.append(m.compute())
    assert results[0]["boundary_pixels"]["1"] > 0
    assert json.dumps(to_jsonable(results[0])) == json.dumps(to_jsonable(results[1]))


def test_confusion_matrix_skips_a_negative_ignore_index_with_and_without_a_mask():
    """``confusion_matrix`` leaves ``ignore_index`` pixels out itself: -100 (``CrossEntropyLoss``'s default)
    would otherwise make a negative bin; with a ``mask``, its ignored pixels are left out too."""
    pred, target = T([[[0, 1, 1], [1, 0, 0]]]), T([[[0, -100, 1], [1, -100, 0]]])
    assert confusion_matrix(pred, target, num_classes=2, ignore_index=-100).tolist() == [[2, 0], [0, 2]]
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    assert confusion_matrix(pred, target, 2, -100, mask).tolist() == [[2, 0], [0, 1]]


@pytest.mark.parametrize("table", [format_table, format_per_class_table])
def test_tables_of_no_result_set_are_refused_by_name(table):
    """Before: a bare ``StopIteration`` (the first result set read with ``next``)."""
    with pytest.raises(ValueError, match=r"results must hold a result set .*, got \{\}"):
        table({})


def test_tables_of_result_sets_with_other_widths_or_classes_show_every_row():
    """Result sets scored with other boundary widths (``--boundary-widths``) or other classes: the rows were
    the first set's, so a width only the second had was dropped silently, and one only the first had raised
    ``KeyError: '1'``. Now every width and class, with "-" in the columns of the sets without it."""
    t = torch.zeros(1, 2, 4, dtype=torch.long)
    t[..., 2:] = 1
    a, b = (
        SegmentationMetrics(num_classes=2, boundary_widths=(1, 3)),
        SegmentationMetrics(3, boundary_widths=(3,)),
    )
    a.update(t, t)
    b.update(t, t)
    rows = {
        r.split("  ")[0]: r.split()[-2:]
        for r in format_table({"a": a.compute(), "b": b.compute()}).split("\n")
    }
    assert rows["boundary mIoU, 1 px (%)"] == ["100.00", "-"]
    assert rows["boundary mIoU, 3 px (%)"] == ["100.00", "100.00"]
    rows = {
        r.split("  ")[0]: r.split()[-2:]
        for r in format_table({"b": b.compute(), "a": a.compute()}).split("\n")
    }
    assert rows["boundary mIoU, 1 px (%)"] == ["-", "100.00"]
    per = format_per_class_table({"a": a.compute(), "b": b.compute()}).splitlines()
    assert [r.split() for r in per[2:]] == [
        ["0", "100.00", "100.00"],
        ["1", "100.00", "100.00"],
        ["2", "-", "-"],
        ["mean", "100.00", "100.00"],
    ]
    per = format_per_class_table({"b": b.compute(), "a": a.compute()}).splitlines()
    assert per[-2].split() == ["2", "-", "-"]


def test_a_transposed_table_gives_each_result_set_its_own_values():
    """One row per result set: each row holds that set's values, not the first set's."""
    a = {"miou": 0.5, "boundary_miou": {"3": 0.25}}
    b = {"miou": 0.75, "boundary_miou": {"3": 0.125}}
    cols = ("mIoU (%)", "boundary mIoU, 3 px (%)")
    rows = format_table({"a": a, "b": b}, metrics=cols, transpose=True).splitlines()
    assert [r.split() for r in rows[2:]] == [["a", "50.00", "25.00"], ["b", "75.00", "12.50"]]


def test_to_jsonable_replaces_infinities_and_reaches_into_tuples():
    """Strict JSON: +-inf are None like NaN, also inside tuples; ``dumps`` of them does not raise."""
    value = {"a": (float("nan"), float("inf")), "b": [float("-inf"), (1.0, 2)]}
    assert to_jsonable(value) == {"a": [None, None], "b": [None, [1.0, 2]]}
    assert json.loads(metrics.dumps(value)) == {"a": [None, None], "b": [None, [1.0, 2]]}


def test_per_class_table_ends_with_the_miou():
    """The per-class table's last row, ``mean``, is the mIoU (58.33 %), not another average (pixel accuracy
    here 75 %)."""
    m = SegmentationMetrics(num_classes=2, boundary_widths=(1,))
    m.update(T([[[0, 1], [1, 1]]]), T([[[0, 0], [1, 1]]]))
    r = m.compute()
    assert r["pixel_accuracy"] == 0.75
    assert format_per_class_table(r).splitlines()[-1].split() == ["mean", "58.33"]
    two = format_per_class_table({"a": r, "b": r}).splitlines()
    assert two[0].split() == ["class", "a", "b"] and two[-1].split() == ["mean", "58.33", "58.33"]


# ---------------------------------------------------------------- padding (region) and narrow label dtypes


@settings(max_examples=budget(20))
@given(st.integers(0, 10_000), st.tuples(*[st.integers(0, 3)] * 4), st.booleans())
def test_padding_outside_the_region_changes_no_metric(seed, pads, batched):
    """Images padded on any side with 255, any predictions and superpixel ids in the padding (ids the image
    uses too, and others): with ``region`` marking the images' pixels every metric is that of the images
    alone. Before, the padding's border was a label edge (boundary bands, boundary recall) and the superpixel
    statistics counted its pixels and its superpixels."""
    top, bottom, left, right = pads
    g = torch.Generator().manual_seed(seed)
    b, h, w, c = 2, 6, 7, 3
    pred = torch.randint(0, c, (b, h, w), generator=g)
    target = torch.randint(0, c, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < 0.15] = 255
    sp = (
        torch.randint(0, 4, (b, 3, 4), generator=g).repeat_interleave(2, 1).repeat_interleave(2, 2)[:, :h, :w]
    )
    size = (b, h + top + bottom, w + left + right)
    inside = (slice(None), slice(top, top + h), slice(left, left + w))
    padded_pred, padded_sp = torch.randint(0, c, size, generator=g), torch.randint(0, 7, size, generator=g)
    padded_target, region = torch.full(size, 255), torch.zeros(size, dtype=torch.bool)
    for padded, image in ((padded_pred, pred), (padded_target, target), (padded_sp, sp), (region, True)):
        padded[inside] = image

    def scores(*maps):
        m = SegmentationMetrics(num_classes=c, boundary_widths=(1, 2, 4), boundary_tolerance=1)
        for i in range(b) if not batched else [slice(None)]:
            m.update(*(t[i] for t in maps))
        return json.dumps(to_jsonable(m.compute()))

    assert scores(padded_pred, padded_target, padded_sp, region) == scores(pred, target, sp)
    assert torch.equal(boundary_band(padded_target, 3, region)[inside], boundary_band(target, 3))
    assert torch.equal(label_edges(padded_sp, region)[inside], label_edges(sp))
    got = superpixel_scores(padded_pred, padded_target, padded_sp, c, tolerance=2, region=region)
    assert got == superpixel_scores(pred, target, sp, c, tolerance=2)


def test_pixels_outside_the_region_count_in_no_metric_whatever_their_label():
    """Padding is excluded by ``region`` itself, not only by its usual ``ignore_index`` label: a padded
    pixel labelled 0 (and mispredicted) adds nothing to the confusion matrix or the bands."""
    m = SegmentationMetrics(num_classes=2, boundary_widths=(1,))
    m.update(T([[[0, 1, 1]]]), T([[[0, 1, 0]]]), region=torch.tensor([[[True, True, False]]]))
    r = m.compute()
    assert r["confusion_matrix"] == [[1, 0], [0, 1]] and r["num_pixels"] == 2
    assert r["boundary_pixels"] == {"1": 2} and r["miou"] == 1.0


def test_a_region_of_every_pixel_changes_nothing():
    g = torch.Generator().manual_seed(3)
    pred, target = torch.randint(0, 3, (2, 5, 6), generator=g), torch.randint(0, 3, (2, 5, 6), generator=g)
    target[:, 2] = 255
    sp = torch.randint(0, 5, (2, 5, 6), generator=g)
    results = []
    for region in (None, torch.ones(2, 5, 6, dtype=torch.bool)):
        m = SegmentationMetrics(num_classes=3)
        m.update(pred, target, sp, region)
        results.append(json.dumps(to_jsonable(m.compute())))
    assert results[0] == results[1]


@pytest.mark.parametrize(
    "region, exc, match",
    [
        (
            torch.ones(1, 1, 2, dtype=torch.uint8),
            TypeError,
            r"region must be a boolean tensor \[B, H, W\], got",
        ),
        ([[[True, True]]], TypeError, "region must be a boolean tensor .* got list"),
        (
            torch.ones(1, 1, 3, dtype=torch.bool),
            ValueError,
            r"region must have the shape of target \(1, 1, 2\)",
        ),
    ],
)
def test_a_bad_region_is_refused_by_every_function_that_takes_one(region, exc, match):
    maps = T([[[0, 1]]]), T([[[0, 255]]])
    calls = [
        lambda: SegmentationMetrics(num_classes=3).update(*maps, None, region),
        lambda: superpixel_scores(*maps, T([[[0, 0]]]), 3, region=region),
        lambda: label_edges(maps[1], region),
        lambda: boundary_band(maps[1], 1, region),
    ]
    for call in calls:
        with pytest.raises(exc, match=match):
            call()


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_wide_unsigned_maps_are_scored_and_their_values_shown_as_held(dtype):
    """uint16/32/64 maps (16-bit PNG superpixels, say) pass the "integer tensor" check, but PyTorch has no
    min / aminmax kernel for them: superpixels, and pred, raised NotImplementedError "min_all" / "aminmax_cpu"
    not implemented for 'UInt16'. They are scored as their int64 copies now, and a uint64 value above
    2**63 - 1 is shown as held, not wrapped to a negative int64 (the target error showed
    -9223372036854775803)."""
    pred, target = T([[[0, 1, 1], [1, 0, 1]]]), T([[[0, 1, 255], [1, 1, 0]]])
    sp = T([[[7, 7, 9], [4, 9, 9]]])
    expected = superpixel_scores(pred, target, sp, 2)
    assert superpixel_scores(pred.to(dtype), target.to(dtype), sp.to(dtype), 2) == expected
    m = SegmentationMetrics(num_classes=2, boundary_widths=(1,))
    m.update(pred.to(dtype), target, sp.to(dtype))
    assert m.superpixel_sums == expected
    assert torch.equal(m.confusion, confusion_matrix(pred, target, 2))
    top = torch.iinfo(dtype).max if dtype != torch.uint64 else 2**64 - 1
    with pytest.raises(ValueError, match=rf"pred values must lie in \[0, 2\), got range \[0, {top}\]"):
        confusion_matrix(torch.tensor([[[0, top]]], dtype=dtype), T([[[0, 1]]]), 2)
    with pytest.raises(ValueError, match=rf"or be 255, got \[{top}\]"):
        confusion_matrix(T([[[0, 1]]]), torch.tensor([[[0, top]]], dtype=dtype), 2)
    if dtype == torch.uint64:  # every value above 2**63 - 1: the smallest of them is the low end
        with pytest.raises(ValueError, match=rf"got range \[{2**63}, {top}\]"):
            confusion_matrix(torch.tensor([[[2**63, top]]], dtype=dtype), T([[[0, 1]]]), 2)


def test_a_narrow_target_dtype_does_not_wrap_the_ignore_label():
    """Labels compared with ``ignore_index`` in the target's own dtype wrapped around: with a uint8 target,
    ``ignore_index=-1`` skipped the 255 pixels (out of range, refused with an int64 target) and 256 skipped
    class 0; with an int8 target, -1 pixels were skipped as 255."""
    pred, target = T([[[0, 1, 1]]]), T([[[0, 1, 255]]])
    with pytest.raises(ValueError, match=r"or be -1, got \[255\]"):
        confusion_matrix(pred, target.to(torch.uint8), num_classes=2, ignore_index=-1)
    with pytest.raises(ValueError, match=r"or be 255, got \[-1\]"):
        SegmentationMetrics(num_classes=2).update(pred, T([[[0, 1, -1]]]).to(torch.int8))
    with pytest.raises(ValueError, match=r"or be 255, got \[-1\]"):
        superpixel_scores(pred, T([[[0, 1, -1]]]).to(torch.int8), T([[[0, 0, 0]]]), 2)
    assert confusion_matrix(pred, target.to(torch.uint8), 2).tolist() == [[1, 0], [0, 1]]
    m = SegmentationMetrics(num_classes=2, ignore_index=256)
    m.update(pred, T([[[0, 1, 0]]]).to(torch.uint8))
    assert m.confusion.tolist() == [[1, 1], [0, 1]]  # class 0 counted: 256 is no uint8 label


def _rows(text: str) -> dict[str, list[str]]:
    """{row label: its value cells} of a format_table text (label and cells separated by 2+ spaces)."""
    out = {}
    for line in text.splitlines()[2:]:
        label, *cells = re.split(r"\s{2,}", line.strip())
        out[label] = cells
    return out


def test_superpixels_with_several_channels_are_refused_not_cut_to_the_first():
    """Only a channel dim of 1 ([B, 1, H, W]) is dropped: [B, 2, H, W] superpixels were scored by their first
    channel, silently (mutant: ``superpixels.dim() == 4`` alone)."""
    pred, target = T([[[0, 1]]]), T([[[0, 1]]])
    sp = T([[[[0, 1]], [[1, 1]]]])  # (1, 2, 1, 2)
    message = r"superpixels must have shape \(1, 1, 2\) \(like target\), got \(1, 2, 1, 2\)"
    with pytest.raises(ValueError, match=message):
        superpixel_scores(pred, target, sp, num_classes=2)
    with pytest.raises(ValueError, match=message):
        SegmentationMetrics(num_classes=2).update(pred, target, sp)


def test_format_table_refuses_unknown_metric_rows_by_name():
    r = SegmentationMetrics(num_classes=2).compute()
    with pytest.raises(ValueError, match=r"unknown metrics \['mIoU'\]; known: \['mIoU \(%\)'"):
        format_table(r, metrics=("mIoU (%)", "mIoU"))


def test_boundary_recall_row_names_the_tolerance_of_the_results():
    m = SegmentationMetrics(num_classes=2, boundary_widths=(1,), boundary_tolerance=1)
    m.update(T([[[0, 1]]]), T([[[0, 1]]]), T([[[0, 1]]]))
    text = format_table(m.compute())
    assert "boundary recall, 1 px (%)" in text, text
    assert "boundary recall, ? px (%)" in format_table({"miou": 0.5, "boundary_miou": {}})


def test_mean_class_accuracy_row_shows_mean_class_accuracy():
    """pixel accuracy 4/7 = 57.14 %, mean class accuracy (1/2 + 2/3 + 1/2) / 3 = 55.56 %."""
    target = T([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    pred = T([[[0, 1, 1, 1], [2, 0, 2, 0]]])
    m = SegmentationMetrics(num_classes=3, boundary_widths=(1,))
    m.update(pred, target)
    rows = _rows(format_table(m.compute()))
    assert rows["pixel accuracy (%)"] == ["57.14"]
    assert rows["mean class accuracy (%)"] == ["55.56"]


def test_images_row_gives_each_result_set_its_own_count():
    one, two = (SegmentationMetrics(num_classes=2, boundary_widths=(1,)) for _ in range(2))
    one.update(T([[[0, 1]]]), T([[[0, 1]]]))
    two.update(T([[[0, 1]], [[1, 0]]]), T([[[0, 1]], [[1, 0]]]))
    assert _rows(format_table({"one": one.compute(), "two": two.compute()}))["images"] == ["1", "2"]


def test_boundary_recall_of_sets_scored_at_other_tolerances_gets_a_row_each():
    """Sets scored with another tolerance are not listed under the first set's (a 3 px recall sat in the
    1 px row): one row per tolerance, "-" for the sets of another."""
    a = {"miou": 0.5, "boundary_miou": {}, "boundary_recall": 0.9, "boundary_tolerance": 1}
    b = {"miou": 0.5, "boundary_miou": {}, "boundary_recall": 0.4, "boundary_tolerance": 3}
    rows = _rows(format_table({"a": a, "b": b, "c": dict(a)}))
    assert rows["boundary recall, 1 px (%)"] == ["90.00", "-", "90.00"]
    assert rows["boundary recall, 3 px (%)"] == ["-", "40.00", "-"]
    assert [label for label in rows if label.startswith("boundary recall")] == [
        "boundary recall, 1 px (%)",
        "boundary recall, 3 px (%)",
    ]
