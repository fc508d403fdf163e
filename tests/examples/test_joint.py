"""The joint model: step-0 transparency, one label per superpixel, where gradients go, the model contract."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

import sparse_ops
from examples.voc_joint.models import (
    DeepLabV3Plus,
    JointModel,
    SegmentationOnly,
    SpixelFCN,
    build_model,
    model_config,
)
from examples.voc_joint.models.joint import fusion_target_weight

H, W, CS = 29, 35, 8  # odd size, partial border cells


@functools.lru_cache(maxsize=2)
def _built(num_classes: int) -> tuple[DeepLabV3Plus, SpixelFCN]:
    torch.manual_seed(0)
    return DeepLabV3Plus(num_classes, "resnet18", aspp_channels=16), SpixelFCN(cell_size=CS, width=4)


def _nets(num_classes: int = 21) -> tuple[DeepLabV3Plus, SpixelFCN]:
    """Fresh copies of two small untrained networks (built once per session)."""
    return copy.deepcopy(_built(num_classes))


def _inputs(b: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, H, W, generator=g), torch.randn(b, 3, H, W, generator=g)


def _scale_logits(deeplab: DeepLabV3Plus, factor: float = 5.0) -> None:
    """Make the untrained logits as large as a trained network's (|S| up to ~10-20)."""
    with torch.no_grad():
        deeplab.classifier.weight.mul_(factor)


@pytest.mark.parametrize(
    "mode,activation",
    [
        ("hard", "relu"),
        ("hard", "leaky_relu"),
        ("hard", None),
        ("soft", "relu"),
        ("none", "leaky_relu"),
    ],
)
def test_step0_transparency(mode: str, activation: str | None) -> None:
    """With the fusion on, the untrained joint output equals the output without it (uniformized S)."""
    deeplab, spixel = _nets()
    _scale_logits(deeplab)
    joint = JointModel(deeplab, spixel, mode=mode, fusion=True, fusion_activation=activation).eval()
    plain = JointModel(deeplab, spixel, mode=mode, fusion=False).eval()
    x, y = _inputs()
    with torch.no_grad():
        out, ref = joint(x, y), plain(x, y)
    assert out["seg_logits"].abs().max() > 5  # a meaningful scale for the float32 error
    assert (out["logits"] - ref["logits"]).abs().max().item() <= 1e-4
    if mode == "hard":  # reference written out: U(S) with the hard ids
        n = sparse_ops.num_grid_cells(H, W, CS)
        expect = sparse_ops.uniformize(out["seg_logits"], out["superpixels"], n)
        assert (out["logits"] - expect).abs().max().item() <= 1e-4
    if mode == "none":
        assert (out["logits"] - out["seg_logits"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("mode", ["hard", "soft"])
@pytest.mark.parametrize("fusion", [True, False])
def test_consistency_one_label_per_superpixel(mode: str, fusion: bool) -> None:
    deeplab, spixel = _nets()
    joint = JointModel(deeplab, spixel, mode=mode, fusion=fusion).eval()
    x, y = _inputs()
    with torch.no_grad():
        out = joint(x, y)
    ids, logits = out["superpixels"], out["logits"]
    assert ids.dtype == torch.long and ids.shape == (2, H, W)
    assert int(ids.min()) >= 0 and int(ids.max()) < sparse_ops.num_grid_cells(H, W, CS)
    pred = logits.argmax(1)
    checked = 0
    for b in range(2):
        for s in ids[b].unique():
            where = ids[b] == s
            vals = logits[b][:, where]  # (C, n): every pixel of a superpixel has the same logits
            torch.testing.assert_close(vals, vals[:, :1].expand_as(vals), rtol=0, atol=1e-5)
            assert pred[b][where].unique().numel() == 1
            checked += 1
    assert checked > 4


def test_mode_none_is_not_uniformized() -> None:
    deeplab, spixel = _nets()
    joint = JointModel(deeplab, spixel, mode="none", fusion=False).eval()
    x, y = _inputs()
    with torch.no_grad():
        out = joint(x, y)
    torch.testing.assert_close(out["logits"], out["seg_logits"])


def _grads_after_ce(mode: str, fusion: bool) -> tuple[float, float]:
    deeplab, spixel = _nets()
    joint = JointModel(deeplab, spixel, mode=mode, fusion=fusion).train()
    x, y = _inputs()
    target = torch.randint(0, 21, (2, H, W), generator=torch.Generator().manual_seed(2))
    out = joint(x, y)
    torch.nn.functional.cross_entropy(out["logits"], target).backward()
    sp = sum(float(p.grad.abs().sum()) for p in spixel.parameters() if p.grad is not None)
    dl = sum(float(p.grad.abs().sum()) for p in deeplab.parameters() if p.grad is not None)
    return sp, dl


@pytest.mark.parametrize("fusion", [True, False])
def test_soft_mode_segmentation_loss_reaches_spixelfcn(fusion: bool) -> None:
    sp, dl = _grads_after_ce("soft", fusion)
    assert sp > 0 and dl > 0


@pytest.mark.parametrize("mode", ["hard", "none"])
def test_hard_mode_segmentation_loss_does_not_reach_spixelfcn(mode: str) -> None:
    sp, dl = _grads_after_ce(mode, True)
    assert sp == 0 and dl > 0


def test_fusion_stack_shapes_and_target() -> None:
    deeplab, spixel = _nets()
    joint = JointModel(deeplab, spixel, fusion_hidden=(64, 64))
    convs = [m for m in joint.fusion.layers if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(42, 128), (128, 128), (128, 21)]
    t = fusion_target_weight(3)
    assert (
        t.shape == (3, 6) and torch.equal(t[:, :3], torch.zeros(3, 3)) and torch.equal(t[:, 3:], torch.eye(3))
    )
    # the fusion's effective map at step 0 is "take the second half": check on random inputs
    z = torch.randn(4, 42, 3, 5) * 10
    with torch.no_grad():
        assert (joint.fusion(z) - z[:, 21:]).abs().max() < 1e-4


def test_contract_and_wrapper() -> None:
    deeplab, spixel = _nets(num_classes=4)
    joint = JointModel(deeplab, spixel, 4).eval()
    x, y = _inputs(1)
    with torch.no_grad():
        out = joint(x, y)
        seg = SegmentationOnly(deeplab).eval()(x, y)
    assert set(out) == {"logits", "seg_logits", "superpixels", "assoc"}
    assert out["logits"].shape == (1, 4, H, W) and out["assoc"].shape == (1, 9, H, W)
    assert seg["superpixels"] is None and seg["assoc"] is None
    torch.testing.assert_close(seg["logits"], out["seg_logits"])
    torch.testing.assert_close(seg["logits"], seg["seg_logits"])


def test_errors() -> None:
    deeplab, spixel = _nets()
    with pytest.raises(ValueError, match="mode must be one of"):
        JointModel(deeplab, spixel, mode="median")
    with pytest.raises(TypeError, match="fusion must be a bool"):
        JointModel(deeplab, spixel, fusion=1)
    joint = JointModel(deeplab, spixel).eval()
    with pytest.raises(ValueError, match="same size"):
        joint(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 17))


def test_config_round_trip() -> None:
    deeplab, spixel = _nets()
    joint = JointModel(deeplab, spixel, mode="soft", fusion_hidden=(50,), fusion_activation="leaky_relu")
    cfg = model_config(joint)
    again = build_model(cfg)
    assert isinstance(again, JointModel) and model_config(again) == cfg
    again.load_state_dict(joint.state_dict())
    assert model_config(SegmentationOnly(deeplab)) == {"arch": "deeplabv3plus", "deeplab": deeplab.config}
    with pytest.raises(ValueError, match="config\\['arch'\\] must be one of"):
        build_model({"arch": "unet"})
    with pytest.raises(ValueError, match="invalid model config"):
        build_model({"arch": "spixelfcn", "spixel": {"cells": 3}})
    with pytest.raises(TypeError, match="model must be"):
        model_config(torch.nn.Linear(1, 1))


def test_joint_on_every_device(device: torch.device) -> None:
    """Transparency, consistency and the soft-mode gradient on each available device (CUDA skipped without one)."""
    deeplab, spixel = _nets()
    _scale_logits(deeplab)
    joint = JointModel(deeplab, spixel, mode="soft").to(device).eval()
    plain = JointModel(deeplab, spixel, mode="soft", fusion=False).to(device).eval()
    x, y = (t.to(device) for t in _inputs())
    with torch.no_grad():
        out, ref = joint(x, y), plain(x, y)
    assert out["logits"].device.type == device.type and out["superpixels"].device.type == device.type
    assert (out["logits"] - ref["logits"]).abs().max().item() <= 1e-4
    ids = out["superpixels"][0]
    for s in ids.unique()[:8]:
        assert out["logits"].argmax(1)[0][ids == s].unique().numel() == 1
    joint.train()
    joint(x, y)["logits"].logsumexp(1).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in spixel.parameters())
