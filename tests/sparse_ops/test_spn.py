"""SPN parts: global superpixel average, SP-CAM and the classifier head against loops."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from sparse_ops import SuperpixelClassifier, spn, superpixel_cam, superpixel_global_average, uniformize
from tests.op_tester import Case, OpTester
from tests.sparse_ops.test_uniformize import _Recorder


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
        return case.map_all(lambda t: t.to(device))


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


def test_classifier_cam_returns_the_superpixel_scores_like_superpixel_cam() -> None:
    """``SuperpixelClassifier.cam`` offers ``superpixel_cam``'s ``return_superpixel_scores`` (the module
    form had no way to ask for the ``[B, N_s, K]`` scores: ``cam(..., return_superpixel_scores=True)`` raised
    a ``TypeError``), with the same values as the function on the module's classifier."""
    g = torch.Generator().manual_seed(0)
    head = SuperpixelClassifier(4, 3, upsample=None)
    f = torch.randn(2, 4, 6, 6, generator=g)
    sp = torch.randint(0, 5, (2, 6, 6), generator=g)
    mask = torch.rand(2, 6, 6, generator=g) > 0.3
    cam, scores = head.cam(f, sp, 7, mask=mask, return_superpixel_scores=True)
    want_cam, want_scores = superpixel_cam(
        f,
        sp,
        7,
        weight=head.classifier.weight,
        bias=head.classifier.bias,
        mask=mask,
        upsample=None,
        return_superpixel_scores=True,
    )
    assert scores.shape == (2, 7, 3)
    assert torch.equal(cam, want_cam) and torch.equal(scores, want_scores)
    assert torch.equal(head.cam(f, sp, 7, mask=mask, return_superpixel_scores=False), want_cam)
    # and with the module's upsample mode: coarse features under a finer label map
    coarse = torch.randn(2, 4, 3, 3, generator=g)
    with pytest.raises(ValueError, match="pass upsample='bilinear'"):
        head.cam(coarse, sp, 7)
    nearest_head = SuperpixelClassifier(4, 3, upsample="nearest")
    nearest_head.load_state_dict(head.state_dict())
    params = {"weight": head.classifier.weight, "bias": head.classifier.bias}
    nearest = superpixel_cam(coarse, sp, 7, **params, upsample="nearest")
    assert torch.equal(nearest_head.cam(coarse, sp, 7), nearest)
    assert not torch.equal(nearest, superpixel_cam(coarse, sp, 7, **params))  # bilinear: the mode matters


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


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
@pytest.mark.parametrize("which", ["weight", "bias"])
def test_a_non_floating_parameter_is_refused_naming_it_with_or_without_autocast(
    dtype: torch.dtype, which: str
) -> None:
    """Autocast casts floating tensors only: an integer, bool or complex ``weight`` / ``bias`` was let through
    under it to ``F.linear``'s RuntimeError ("expected m1 and m2 to have the same dtype"), which names
    nothing, and refused outside it with the advice to run under autocast, which then failed so."""
    g = torch.Generator().manual_seed(3)
    f = torch.randn(2, 3, 4, 4, generator=g)
    sp = torch.randint(0, 5, (2, 4, 4), generator=g)
    weight, bias = torch.randn(2, 3, generator=g), torch.randn(2, generator=g)
    params = {"weight": weight, "bias": bias}
    params[which] = params[which].to(dtype)
    match = rf"^{which} must be a floating tensor of the dtype of features \(torch\.float32\), got {dtype}; "
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), pytest.raises(TypeError) as info:
            superpixel_cam(f, sp, 5, **params)
        assert re.match(match, str(info.value)) and "autocast" not in str(info.value), info.value


@pytest.mark.parametrize(
    ("features_dtype", "weight_dtype"),
    [(torch.float64, torch.float32), (torch.float32, torch.float64), (torch.float64, torch.bfloat16)],
)
def test_a_float64_mix_under_autocast_is_refused_naming_the_parameter(
    features_dtype: torch.dtype, weight_dtype: torch.dtype
) -> None:
    """Under autocast the dtype check was skipped ("autocast casts them itself"), but autocast casts no
    float64 tensor: a float64 side met the other one in ``F.linear``, whose RuntimeError ("expected m1 and m2
    to have the same dtype") named nothing; the error outside autocast advised running under it, which gave
    that RuntimeError. Now a TypeError naming ``weight`` in both, without that advice; a mix without float64
    still runs under autocast and is refused outside it with the advice."""
    g = torch.Generator().manual_seed(3)
    f = torch.randn(2, 3, 4, 4, generator=g).to(features_dtype)
    sp = torch.randint(0, 5, (2, 4, 4), generator=g)
    weight = torch.randn(2, 3, generator=g).to(weight_dtype)
    head = SuperpixelClassifier(3, 2).to(weight_dtype)
    match = (
        rf"^weight must have the dtype of features \({features_dtype}\), got {weight_dtype}; "
        r".*\(torch\.autocast casts no float64 tensor\)$"
    )
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for call in (
                lambda: superpixel_cam(f, sp, 5, weight=weight),
                lambda: head(f, sp, 5),
                lambda: head.cam(f, sp, 5),
            ):
                with pytest.raises(TypeError, match=match):
                    call()
    half = torch.randn(2, 3, generator=g).to(torch.float16)  # no float64: autocast casts both
    with pytest.raises(
        TypeError, match=r"weight must have the dtype of features .* or run under torch\.autocast$"
    ):
        superpixel_cam(f.float(), sp, 5, weight=half)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert superpixel_cam(f.float(), sp, 5, weight=half).dtype == torch.bfloat16


def test_classifier_errors_give_the_module_fix_not_the_functions() -> None:
    """Parameters of another dtype (``cam``) or device (forward and ``cam``) than the features: the module's
    errors advised ``cast it with weight.to(features.dtype)`` / ``move it with weight.to(features.device)``,
    the fix for ``superpixel_cam``'s own arguments, which leaves a module's parameters as they were."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    sp = torch.randint(0, 5, (2, 4, 4), generator=g)
    head = SuperpixelClassifier(3, 2)
    dtype_fix = (  # (not "or run under torch.autocast", which casts no float64 tensor: the same error then)
        r"; cast the module with .to\(torch.float64\) \(the classifier's weight\) \(torch.autocast casts no "
        r"float64 tensor\)$"
    )
    for call in (head, head.cam):
        with pytest.raises(TypeError, match=r"weight must have the dtype of features .*" + dtype_fix):
            call(f, sp, 5)
    meta_f, meta_sp = f.to("meta"), sp.to("meta")
    same_device = r"^weight must be on the same device as features "
    move_fix = r"\(meta\), got cpu; move the module with .to\('meta'\) \(the classifier's weight\)$"
    for call in (head, head.cam):
        with pytest.raises(ValueError, match=same_device + move_fix):
            call(meta_f.float(), meta_sp, 5)
    with torch.device("meta"):
        deferred = SuperpixelClassifier(3, 2)
    materialize = r"\(cpu\), got meta; materialize the module with .to_empty\(device='cpu'\)"
    for call in (deferred, deferred.cam):
        with pytest.raises(ValueError, match=same_device + materialize):
            call(f.float(), sp, 5)
    deferred.to_empty(device="cpu").load_state_dict(head.state_dict())
    assert torch.equal(deferred(f.float(), sp, 5), head(f.float(), sp, 5))


def _spn_outputs(
    f: torch.Tensor, sp: torch.Tensor, mask: torch.Tensor | None, cam: bool
) -> list[torch.Tensor]:
    """Image features and head logits (``cam``: the SP-CAM instead) of ``sp`` with the gradients of the
    features and the classifier (ids bounded by inference)."""
    torch.manual_seed(0)
    head = SuperpixelClassifier(f.shape[1], 3, upsample=None)
    leaf = f.detach().clone().requires_grad_(True)
    if cam:
        outs = [head.cam(leaf, sp, mask=mask)]
    else:
        outs = [superpixel_global_average(leaf, sp, mask=mask, upsample=None), head(leaf, sp, mask=mask)]
    sum(o.sum() for o in outs).backward()  # type: ignore[union-attr]
    assert leaf.grad is not None and head.classifier.weight.grad is not None
    return [o.detach() for o in outs] + [leaf.grad, head.classifier.weight.grad]


@pytest.mark.parametrize("masked", [False, True])
def test_results_do_not_depend_on_the_id_values(masked: bool) -> None:
    """The same partition with ids shifted and scaled (order kept) gives the same features, logits and
    gradients, bit for bit: the superpixels are pooled on the distinct ids of each image, not on ``max id +
    1`` slots (whose accumulator layout, too, depended on that count). The SP-CAM scores the compact slots
    with one ``F.linear``, whose rows follow the ids' bound (``min(N_s, H W)``); a BLAS may round a row
    differently in a product of more rows (MKL on the Intel Xeon VM: 1 ulp, 6e-8 of 0.7): the CAM and its
    gradients are equal to float rounding, and bit for bit to the same ``F.linear`` over the rows of the
    distinct ids alone."""
    g = torch.Generator().manual_seed(8)
    f = torch.randn(2, 4, 6, 7, generator=g)
    sp = torch.randint(0, 5, (2, 6, 7), generator=g)
    mask = torch.rand(2, 6, 7, generator=g) > 0.3 if masked else None
    expected = _spn_outputs(f, sp, mask, cam=False)
    expected_cam = _spn_outputs(f, sp, mask, cam=True)
    for renumbered in (sp * 12000 + 7, sp + 2**40):
        for got, exp in zip(_spn_outputs(f, renumbered, mask, cam=False), expected, strict=True):
            assert torch.equal(got, exp)
        for got, exp in zip(_spn_outputs(f, renumbered, mask, cam=True), expected_cam, strict=True):
            torch.testing.assert_close(got, exp)
    # the pooled rows themselves do not depend on the ids, bit for bit: the CAM of the renumbered map, scored
    # on its first 5 slots (the distinct ids, in order) by the same product as the original's, is the original
    torch.manual_seed(0)
    head = SuperpixelClassifier(f.shape[1], 3, upsample=None)
    for renumbered in (sp, sp * 12000 + 7, sp + 2**40):
        pooled, assignment = spn._superpixel_means(f, renumbered, None, mask, None, True)
        scores = F.linear(pooled[:, :5], head.classifier.weight, head.classifier.bias)
        scores = torch.cat(
            [scores, scores.new_zeros(2, pooled.shape[1] - 5, 3)], dim=1
        )  # (no pixel reads them)
        with torch.no_grad():
            assert torch.equal(assignment.decode(scores), expected_cam[0])


def test_superpixel_scores_stay_indexed_by_id() -> None:
    """``return_superpixel_scores`` keeps its ``[B, N_s, K]`` contract over compact pooling: row ``s`` is the
    score of id ``s`` (an absent id scores the bias), and its gradient reaches the features and the
    classifier as that of the dense formulation (a linear layer on the id-indexed means) does."""
    g = torch.Generator().manual_seed(9)
    f = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    sp = torch.randint(0, 4, (2, 4, 5), generator=g) * 3 + 2  # ids 2, 5, 8, 11; the others absent
    sp[1, :2] = 20  # another id in image 1 only
    weight = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    leaf = f.clone().requires_grad_(True)
    cam, scores = superpixel_cam(leaf, sp, 22, weight=weight, bias=bias, return_superpixel_scores=True)
    means, cnt = ref_means(f, sp, 22)
    expected = means @ weight.detach().T + bias.detach()  # an absent id: a zero mean, the bias
    assert scores.shape == (2, 22, 4) and scores.is_contiguous()
    torch.testing.assert_close(scores.detach(), expected)
    assert torch.equal(scores.detach()[cnt == 0], bias.detach().expand(int((cnt == 0).sum()), 4))
    upstream = torch.randn(2, 22, 4, generator=g, dtype=torch.float64)
    (scores * upstream).sum().backward()
    dense_leaf, dense_weight, dense_bias = (
        t.detach().clone().requires_grad_(True) for t in (f, weight, bias)
    )
    members = F.one_hot(sp.flatten(1), 22).double().transpose(1, 2)  # [B, N_s, pixels]
    dense_means = members @ dense_leaf.flatten(2).transpose(1, 2) / cnt.clamp_min(1)[..., None]
    (F.linear(dense_means, dense_weight, dense_bias) * upstream).sum().backward()
    for got, exp in ((leaf, dense_leaf), (weight, dense_weight), (bias, dense_bias)):
        assert got.grad is not None and exp.grad is not None
        torch.testing.assert_close(got.grad, exp.grad)
    cam2 = superpixel_cam(f, sp, 22, weight=weight.detach(), bias=bias.detach())
    assert torch.equal(cam.detach(), cam2)


def test_memory_does_not_depend_on_id_values() -> None:
    """A stray id of 2**40 (``N_s`` inferred as 2**40 + 1): features, logits and CAM allocate in proportion to
    the pixels (the dense pooling was ``N_s`` wide: refused above ``max(2**16, 16 H W)`` slots, and below it
    memory grew with the largest id); only the id-indexed scores, ``N_s`` wide by contract, are refused."""
    b, c, h, w = 2, 3, 8, 8
    g = torch.Generator().manual_seed(10)
    f = torch.randn(b, c, h, w, generator=g, requires_grad=True)
    sp = torch.randint(0, 5, (b, h, w), generator=g)
    sp[0, 0, 0] = 2**40  # its low 32 bits are 0: a truncating key would merge it with id 0
    head = SuperpixelClassifier(c, 4, upsample=None)
    relabelled = torch.where(sp == 2**40, 5, sp)  # the same partition with small ids
    for ids in (relabelled, relabelled * 12000):  # ids up to 60000: under the slot limit, which grew memory
        with _Recorder() as mode:
            head.cam(f, ids).sum().backward()
        assert mode.largest <= 2 * b * 4 * h * w
    with _Recorder() as mode:
        outs = [superpixel_global_average(f, sp), head(f, sp), head.cam(f, sp), head.cam(f, sp, 2**41)]
        sum(o.sum() for o in outs).backward()  # type: ignore[union-attr]
    assert mode.largest <= 2 * b * 4 * h * w  # proportional to the pixels (K = 4 CAM channels)
    for got, exp in zip(outs, [superpixel_global_average(f, relabelled), head(f, relabelled)], strict=False):
        assert torch.equal(got, exp)
    with pytest.raises(
        ValueError, match=r"the largest id of superpixels is 1099511627776.*relabel_contiguous"
    ):
        superpixel_cam(f, sp, weight=head.classifier.weight, return_superpixel_scores=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_head_and_cam_outside_autocast(dtype: torch.dtype) -> None:
    """A head cast to a half type takes features of that type without autocast: the superpixel means,
    accumulated in float32, go to the classifier in the features' dtype (a float32 input to half parameters
    raised F.linear's "mat1 and mat2 must have the same dtype"), close to the float32 head."""
    g = torch.Generator().manual_seed(3)
    f, sp = torch.randn(2, 3, 4, 4, generator=g), torch.randint(0, 5, (2, 4, 4), generator=g)
    head = SuperpixelClassifier(3, 2)
    half = SuperpixelClassifier(3, 2).to(dtype)
    half.load_state_dict({k: v.to(dtype) for k, v in head.state_dict().items()})
    logits, cam = half(f.to(dtype), sp), half.cam(f.to(dtype), sp)
    assert logits.dtype == dtype and cam.dtype == dtype
    torch.testing.assert_close(logits.float(), head(f.to(dtype).float(), sp), rtol=0.05, atol=0.05)
    torch.testing.assert_close(cam.float(), head.cam(f.to(dtype).float(), sp), rtol=0.05, atol=0.05)


def test_classifier_keeps_its_construction_options() -> None:
    """``upsample`` and ``validate`` are the head's own: ``upsample=None`` refuses a coarse map, another mode
    resizes with that mode, an unknown one is refused at construction, and ``validate=False`` shows in the
    repr."""
    g = torch.Generator().manual_seed(4)
    coarse, sp = torch.randn(1, 3, 2, 2, generator=g), torch.randint(0, 5, (1, 4, 4), generator=g)
    with pytest.raises(ValueError, match="pass upsample='bilinear'"):
        SuperpixelClassifier(3, 2, upsample=None)(coarse, sp)
    head = SuperpixelClassifier(3, 2, upsample="nearest")
    expected = head.classifier(superpixel_global_average(coarse, sp, upsample="nearest"))
    torch.testing.assert_close(head(coarse, sp), expected)
    with pytest.raises(ValueError, match="upsample must be one of"):
        SuperpixelClassifier(3, 2, upsample="cubic")  # type: ignore[arg-type]
    assert "validate=False" in repr(SuperpixelClassifier(3, 2, validate=False))
    assert "validate" not in repr(SuperpixelClassifier(3, 2))


def test_classifier_validate_false_reaches_forward_and_cam() -> None:
    """``SuperpixelClassifier(validate=False)`` skips the id range check in ``forward`` and in ``cam`` (the
    pooling compacts the ids, so an id out of range still gets its superpixel's mean); the default checks."""
    g = torch.Generator().manual_seed(5)
    f, sp = torch.randn(1, 3, 4, 4, generator=g), torch.randint(0, 4, (1, 4, 4), generator=g)
    head = SuperpixelClassifier(3, 2, validate=False)
    torch.testing.assert_close(head(f, sp + 4, 4), head(f, sp))
    torch.testing.assert_close(head.cam(f, sp + 4, 4), head.cam(f, sp))
    checked = SuperpixelClassifier(3, 2)
    for call in (checked, checked.cam):
        with pytest.raises(ValueError, match="ids must be < num_superpixels"):
            call(f, sp + 4, 4)


@pytest.mark.parametrize(
    ("in_channels", "num_classes", "shown"),
    [(2**70, 3, "1180591620717411303424 x 3"), (3, 2**70, "3 x 1180591620717411303424")],
)
def test_a_classifier_no_tensor_can_hold_is_a_value_error(
    in_channels: int, num_classes: int, shown: str
) -> None:
    """A weight ``[num_classes, in_channels]`` above 2**63 - 1 bytes is refused naming both arguments:
    nn.Linear raised an overflow TypeError ("empty(): argument 'size' failed to unpack ...")."""
    with pytest.raises(
        ValueError,
        match=rf"^in_channels x num_classes = {shown} is too large for the classifier: it gives a tensor "
        r"of shape \[",
    ):
        SuperpixelClassifier(in_channels, num_classes)


def test_the_classifier_size_check_counts_bytes_on_meta_too() -> None:
    """On the meta device (shape inference) a huge head a tensor can hold is built; one whose weight is above
    2**63 - 1 bytes raised "Storage size calculation overflowed" (a RuntimeError naming no argument)."""
    with torch.device("meta"):
        assert SuperpixelClassifier(2**40, 3).classifier.weight.shape == (3, 2**40)
        with pytest.raises(
            ValueError, match=r"^in_channels x num_classes = 4611686018427387904 x 1 is too large"
        ):
            SuperpixelClassifier(2**62, 1)
