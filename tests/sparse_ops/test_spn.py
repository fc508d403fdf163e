from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck

from sparse_ops import (
    SuperpixelClassifier,
    SuperpixelPooling,
    superpixel_cam,
    superpixel_global_average,
)


def ref_means(f, sp, n):
    B, C = f.shape[:2]
    out = torch.zeros(B, n, C, dtype=torch.float64)
    cnt = torch.zeros(B, n, dtype=torch.float64)
    for b in range(B):
        for y in range(sp.shape[1]):
            for x in range(sp.shape[2]):
                out[b, sp[b, y, x]] += f[b, :, y, x].double()
                cnt[b, sp[b, y, x]] += 1
    return out / cnt.clamp_min(1)[..., None], cnt


@given(H=st.integers(1, 8), W=st.integers(1, 8), n=st.integers(1, 6), seed=st.integers(0, 1000))
@settings(max_examples=25)
def test_against_loops(H, W, n, seed):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(2, 3, H, W, generator=g, dtype=torch.float64)
    sp = torch.randint(0, n, (2, H, W), generator=g)
    means, cnt = ref_means(f, sp, n)
    torch.testing.assert_close(SuperpixelPooling()(f, sp, n), means)
    ga = superpixel_global_average(f, sp, n)
    for b in range(2):
        present = cnt[b] > 0
        torch.testing.assert_close(ga[b], means[b][present].mean(0))
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    cam, scores = superpixel_cam(f, sp, w, bias, n, return_superpixel_scores=True)
    torch.testing.assert_close(scores, means @ w.T + bias)
    for b in range(2):
        for y in range(H):
            for x in range(W):
                torch.testing.assert_close(cam[b, :, y, x], scores[b, sp[b, y, x]])


def test_sp_cam_hand_made_example(device):
    # 2 x 4 image, two superpixels: left 2 x 2 block (id 0) and right 2 x 2 block (id 1)
    f = torch.tensor([[[[1.0, 3, 0, 0], [1, 3, 4, 8]]]], device=device)  # C = 1
    sp = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]], device=device)
    w = torch.tensor([[2.0], [-1.0]], device=device)  # K = 2
    b = torch.tensor([0.5, 0.0], device=device)
    cam, scores = superpixel_cam(f, sp, w, b, return_superpixel_scores=True)
    # means: sp0 = 2, sp1 = 3 -> class 0: 4.5, 6.5 ; class 1: -2, -3
    assert scores.tolist() == [[[4.5, -2.0], [6.5, -3.0]]]
    assert cam.shape == (1, 2, 2, 4) and cam.device.type == device.type
    assert cam[0, 0].tolist() == [[4.5, 4.5, 6.5, 6.5]] * 2
    assert cam[0, 1].tolist() == [[-2.0, -2.0, -3.0, -3.0]] * 2
    # linear classifier: SP-CAM == superpixel average of the pixel CAM
    pixel_cam = torch.einsum("kc,bchw->bkhw", w, f) + b[:, None, None]
    from sparse_ops import uniformize

    torch.testing.assert_close(uniformize(pixel_cam, sp), cam)
    # global average: (2 + 3) / 2
    assert superpixel_global_average(f, sp).tolist() == [[2.5]]


def test_empty_superpixels_and_mask():
    f = torch.tensor([[[[1.0, 2.0, 9.0]]]])
    sp = torch.tensor([[[0, 0, 2]]])
    assert superpixel_global_average(f, sp, 4).tolist() == [[(1.5 + 9) / 2]]  # ids 1, 3 empty: skipped
    mask = torch.tensor([[[True, True, False]]])
    assert superpixel_global_average(f, sp, 4, mask=mask).tolist() == [[1.5]]
    _cam, scores = superpixel_cam(
        f, sp, torch.ones(1, 1), torch.tensor([7.0]), 4, return_superpixel_scores=True
    )
    assert scores[0, 1, 0] == 7.0  # empty superpixel scores the bias
    assert superpixel_global_average(f, sp, 4, mask=torch.zeros(1, 1, 3, dtype=torch.bool)).tolist() == [
        [0.0]
    ]


def test_upsampling_coarse_features():
    f = torch.randn(2, 5, 3, 4)
    sp = torch.randint(0, 6, (2, 12, 16))
    up = F.interpolate(f, size=(12, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(SuperpixelPooling()(f, sp, 6), SuperpixelPooling()(up, sp, 6))
    torch.testing.assert_close(
        SuperpixelPooling(upsample="nearest")(f, sp, 6),
        SuperpixelPooling()(F.interpolate(f, size=(12, 16), mode="nearest"), sp, 6),
    )
    with pytest.raises(ValueError, match="pass upsample='bilinear'"):
        SuperpixelPooling(upsample=None)(f, sp)


def test_classifier_head(device):
    torch.manual_seed(0)
    head = SuperpixelClassifier(4, 3).to(device)
    f = torch.randn(2, 4, 6, 6, device=device)
    sp = torch.randint(0, 5, (2, 6, 6), device=device)
    logits = head(f, sp)
    expected = head.classifier(superpixel_global_average(f, sp))
    torch.testing.assert_close(logits, expected)
    cam = head.cam(f, sp)
    assert cam.shape == (2, 3, 6, 6)
    # the image logits are the average over superpixels of the SP-CAM scores (linearity)
    _, scores = superpixel_cam(
        f, sp, head.classifier.weight, head.classifier.bias, return_superpixel_scores=True
    )
    counts = torch.stack([torch.bincount(sp[b].flatten(), minlength=scores.shape[1]) for b in range(2)])
    present = (counts > 0).float()
    avg = (scores * present[..., None]).sum(1) / present.sum(1, keepdim=True)
    torch.testing.assert_close(logits, avg)


def test_gradcheck():
    f = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    sp = torch.tensor([[[0, 0, 1, 1], [0, 2, 1, 1], [2, 2, 2, 1]]])
    assert gradcheck(lambda f, w: superpixel_cam(f, sp, w), (f, w))
    assert gradcheck(lambda f: superpixel_global_average(f, sp), (f,))
    fc = torch.randn(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda f: SuperpixelPooling()(f, sp), (fc,))


def test_errors():
    f, sp = torch.randn(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="reduce must be one of"):
        SuperpixelPooling("median")
    with pytest.raises(ValueError, match="upsample must be one of"):
        SuperpixelPooling(upsample="linear")
    with pytest.raises(ValueError, match="upsample must be one of"):
        superpixel_global_average(torch.randn(1, 2, 2, 2), sp, upsample="cubic")
    with pytest.raises(TypeError, match="features must be a Tensor"):
        superpixel_global_average(None, sp)
    with pytest.raises(ValueError, match=r"features must have shape \[B, C, h, w\]"):
        superpixel_global_average(torch.randn(2, 4, 4), sp)
    with pytest.raises(TypeError, match="superpixels must be a Tensor"):
        superpixel_cam(f, [0], torch.ones(1, 2))
    with pytest.raises(ValueError, match="superpixels must have shape"):
        superpixel_cam(f, torch.zeros(4, dtype=torch.long), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"weight must be a Tensor of shape \[K, C\]"):
        superpixel_cam(f, sp, torch.ones(2))
    with pytest.raises(ValueError, match="weight must have C=2 columns"):
        superpixel_cam(f, sp, torch.ones(1, 3))
    with pytest.raises(ValueError, match=r"bias must be a Tensor of shape \[1\]"):
        superpixel_cam(f, sp, torch.ones(1, 2), torch.ones(2))
