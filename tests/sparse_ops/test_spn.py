"""SPN parts: global superpixel average, SP-CAM and the classifier head against loops."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from sparse_ops import SuperpixelClassifier, superpixel_cam, superpixel_global_average, uniformize
from tests.op_tester import Case, OpTester


def ref_means(f: torch.Tensor, sp: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loops: the mean feature of every superpixel ``[B, n, C]`` and its pixel count ``[B, n]``."""
    b, c = f.shape[:2]
    out = torch.zeros(b, n, c, dtype=torch.float64)
    cnt = torch.zeros(b, n, dtype=torch.float64)
    for i in range(b):
        for y in range(sp.shape[1]):
            for x in range(sp.shape[2]):
                out[i, sp[i, y, x]] += f[i, :, y, x].double()
                cnt[i, sp[i, y, x]] += 1
    return out / cnt.clamp_min(1)[..., None], cnt


def _draw(data: st.DataObject, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, int]:
    h, w, n = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 8)), data.draw(st.integers(1, 6))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
    f = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64).to(dtype)
    return f, torch.randint(0, n, (2, h, w), generator=g), n


F0 = torch.randn(3, 3, 4, 5, generator=torch.Generator().manual_seed(0))
SP0 = torch.randint(0, 6, (3, 4, 5), generator=torch.Generator().manual_seed(1))
W0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
B0 = torch.randn(4, generator=torch.Generator().manual_seed(3))


class TestGlobalAverage(OpTester):
    def op(self, *args: Any, **kwargs: Any) -> Any:
        return superpixel_global_average(*args, **kwargs)

    def reference(self, f: torch.Tensor, sp: torch.Tensor, n: int, **_: Any) -> torch.Tensor:
        means, cnt = ref_means(f, sp, n)
        present = (cnt > 0).double()
        return (means * present[..., None]).sum(1) / present.sum(1, keepdim=True)

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        return Case(_draw(data, dtype))

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        return Case((F0.to(dtype), SP0, 7)).map(lambda t: t.to(device))


class TestCam(OpTester):
    half_precision = False  # the classifier is a linear layer in the dtype of the features
    autocast = False  # ... which autocast runs in low precision, as it does nn.Linear
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({"weight": torch.ones(2)}, ValueError, r"weight must be a Tensor of shape \[K, C\]"),
        ({"weight": torch.ones(1, 4)}, ValueError, "weight must have C=3 columns"),
        ({"bias": torch.ones(2)}, ValueError, r"bias must be a Tensor of shape \[4\]"),
        ({"weight": None}, TypeError, r"weight must be a Tensor of shape \[K, C\], got NoneType"),
        ({"weight": [[1.0] * 3] * 4}, TypeError, r"weight must be a Tensor of shape \[K, C\], got list"),
        ({"bias": [0.0] * 4}, TypeError, r"bias must be a Tensor of shape \[4\] or None, got list"),
        (
            {"weight": torch.ones(4, 3, dtype=torch.float64)},
            TypeError,
            r"weight must have the dtype of features \(torch.float32\), got torch.float64; cast",
        ),
        ({"bias": torch.ones(4, dtype=torch.float16)}, TypeError, "bias must have the dtype of features"),
        ({1: [0]}, TypeError, "superpixels must be an integer torch.Tensor"),
        ({1: lambda s: s[0]}, ValueError, "superpixels must have shape"),
        ({"upsample": "cubic"}, ValueError, "upsample must be one of"),
        (
            {0: lambda f: f[..., :2], "upsample": None},
            ValueError,
            r"features must have the spatial size of superp",
        ),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return superpixel_cam(*args, **kwargs, return_superpixel_scores=True)

    def reference(
        self, f: torch.Tensor, sp: torch.Tensor, n: int, *, weight: Any, bias: Any, **_: Any
    ) -> Any:
        means, _ = ref_means(f, sp, n)
        scores = means @ weight.double().T + bias.double()
        cam = torch.stack([scores[i][sp[i]].permute(2, 0, 1) for i in range(f.shape[0])])
        return cam, scores

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        f, sp, n = _draw(data, dtype)
        return Case((f, sp, n), {"weight": W0.to(dtype), "bias": B0.to(dtype), "upsample": None})

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        case = Case(
            (F0.to(dtype), SP0, 7), {"weight": W0.to(dtype, copy=True), "bias": B0.to(dtype, copy=True)}
        )
        case.kwargs = {k: v.to(device) for k, v in case.kwargs.items()}
        return case.map(lambda t: t.to(device))


def test_sp_cam_hand_made_example() -> None:
    # 2 x 4 image, two superpixels: the left 2 x 2 block (id 0) and the right one (id 1)
    f = torch.tensor([[[[1.0, 3, 0, 0], [1, 3, 4, 8]]]])  # C = 1
    sp = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])
    w = torch.tensor([[2.0], [-1.0]])  # K = 2
    b = torch.tensor([0.5, 0.0])
    cam, scores = superpixel_cam(f, sp, weight=w, bias=b, return_superpixel_scores=True)
    assert scores.tolist() == [[[4.5, -2.0], [6.5, -3.0]]]  # means 2 and 3
    assert cam[0, 0].tolist() == [[4.5, 4.5, 6.5, 6.5]] * 2
    # a linear classifier: SP-CAM == the superpixel average of the pixel CAM
    pixel_cam = torch.einsum("kc,bchw->bkhw", w, f) + b[:, None, None]
    torch.testing.assert_close(uniformize(pixel_cam, sp), cam)
    assert superpixel_global_average(f, sp).tolist() == [[2.5]]


def test_empty_superpixels_and_mask() -> None:
    f = torch.tensor([[[[1.0, 2.0, 9.0]]]])
    sp = torch.tensor([[[0, 0, 2]]])
    assert superpixel_global_average(f, sp, 4).tolist() == [[(1.5 + 9) / 2]]  # ids 1, 3 empty: skipped
    mask = torch.tensor([[[True, True, False]]])
    assert superpixel_global_average(f, sp, 4, mask=mask).tolist() == [[1.5]]
    _, scores = superpixel_cam(
        f, sp, 4, weight=torch.ones(1, 1), bias=torch.tensor([7.0]), return_superpixel_scores=True
    )
    assert scores[0, 1, 0] == 7.0  # an empty superpixel scores the bias
    assert superpixel_global_average(f, sp, 4, mask=torch.zeros(1, 1, 3, dtype=torch.bool)).tolist() == [
        [0.0]
    ]


def test_coarse_features_are_upsampled() -> None:
    f = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    sp = torch.randint(0, 6, (2, 12, 16))
    up = F.interpolate(f, size=(12, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(
        superpixel_global_average(f, sp, 6), superpixel_global_average(up, sp, 6, upsample=None)
    )
    with pytest.raises(ValueError, match="pass upsample='bilinear'"):
        superpixel_global_average(f, sp, upsample=None)


def test_classifier_head(device: torch.device) -> None:
    torch.manual_seed(0)
    head = SuperpixelClassifier(4, 3).to(device)
    f = torch.randn(2, 4, 6, 6, device=device)
    sp = torch.randint(0, 5, (2, 6, 6), device=device)
    mask = torch.rand(2, 6, 6, device=device) > 0.2
    logits = head(f, sp, 5, mask=mask)
    # the image logits are the average of the superpixel scores over the non-empty superpixels (linearity)
    _, scores = superpixel_cam(
        f,
        sp,
        5,
        weight=head.classifier.weight,
        bias=head.classifier.bias,
        mask=mask,
        return_superpixel_scores=True,
    )
    counts = torch.stack([torch.bincount(sp[b][mask[b]], minlength=5) for b in range(2)])
    present = (counts > 0).float()
    torch.testing.assert_close(logits, (scores * present[..., None]).sum(1) / present.sum(1, keepdim=True))
    assert head.cam(f, sp, 5, mask=mask).shape == (2, 3, 6, 6)
    assert repr(head).startswith("SuperpixelClassifier(\n  upsample='bilinear'")


def test_cam_under_autocast_takes_float32_parameters_with_low_precision_features() -> None:
    features = torch.randn(2, 3, 4, 4).to(torch.bfloat16)
    sp = torch.randint(0, 5, (2, 4, 4))
    linear = torch.nn.Linear(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cam = superpixel_cam(features, sp, 5, weight=linear.weight, bias=linear.bias)
    assert cam.dtype == torch.bfloat16 and cam.shape == (2, 4, 4, 4)


def test_cam_with_swapped_arguments_says_so() -> None:
    """The features are checked first: a label map passed first gets the swapped-arguments hint of the other
    ops, not a weight error against the label map's height."""
    f, sp = torch.randn(2, 4, 3, 4), torch.randint(0, 6, (2, 6, 8))
    with pytest.raises(TypeError, match=r"features must be a floating tensor.*label map passed first"):
        superpixel_cam(sp, f, 6, weight=torch.randn(3, 4))


def test_classifier_forward_and_cam_check_in_channels() -> None:
    """Features of another width than the head's in_channels: both calls name in_channels (not a weight the
    caller never passed)."""
    head = SuperpixelClassifier(5, 3)
    f, sp = torch.randn(2, 4, 3, 4), torch.randint(0, 6, (2, 6, 8))
    match = r"features have C=4 channels, but this SuperpixelClassifier was built with in_channels=5"
    for call in (head, head.cam):
        with pytest.raises(ValueError, match=match):
            call(f, sp, 6)
    with pytest.raises(TypeError, match=r"features must be a floating tensor.*label map passed first"):
        head(sp, f, 6)


def test_cam_gives_the_shapes_on_meta_without_validation() -> None:
    """Shape inference on meta tensors (validate=False reads no value), as the other ops allow: the dtype
    check under autocast is skipped on the meta device, which has no autocast (it raised "unknown device type
    for autocast")."""
    with torch.device("meta"):
        head = SuperpixelClassifier(3, 4, validate=False)
        f, sp = torch.empty(2, 3, 4, 4), torch.zeros(2, 8, 8, dtype=torch.long)
        cam, scores = superpixel_cam(
            f, sp, 5, weight=head.classifier.weight, return_superpixel_scores=True, validate=False
        )
        assert cam.is_meta and cam.shape == (2, 4, 8, 8) and scores.shape == (2, 5, 4)
        assert head.cam(f, sp, 5).shape == (2, 4, 8, 8)
        assert head(f, sp, 5).shape == (2, 4)


def test_classifier_forward_checks_the_dtype_like_cam() -> None:
    """Features of another dtype than the head's parameters: forward raised F.linear's RuntimeError ("mat1
    and mat2 must have the same dtype") where cam names the parameter; under autocast both run."""
    head = SuperpixelClassifier(3, 2)
    f, sp = torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.randint(0, 5, (2, 4, 4))
    match = r"weight must have the dtype of features \(torch.float64\), got torch.float32"
    with pytest.raises(TypeError, match=match + r"; cast the module with .to\(torch.float64\)"):
        head(f, sp, 5)
    with pytest.raises(TypeError, match=match):
        head.cam(f, sp, 5)
    assert head.to(torch.float64)(f, sp, 5).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = SuperpixelClassifier(3, 2)(f.to(torch.bfloat16), sp, 5)
    assert logits.dtype == torch.bfloat16
