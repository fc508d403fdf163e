"""DeepLabV3+ and SpixelFCN: shapes at odd sizes, output stride, ASPP rates, local weights, errors."""

from __future__ import annotations

import argparse
import re

import numpy as np
import pytest
import torch

from examples.voc_joint.models import DeepLabV3Plus, SpixelFCN
from examples.voc_joint.models.deeplabv3plus import ASPP, build_resnet_backbone, load_backbone_weights


def _feature_sizes(net: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    b = net
    y = b.maxpool(b.relu(b.bn1(b.conv1(x))))
    low = b.layer1(y)
    return low.shape[-1], b.layer4(b.layer3(b.layer2(low))).shape[-1]


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_backbone_output_stride(name: str, output_stride: int) -> None:
    net, low_c, high_c = build_resnet_backbone(name, output_stride)
    net.eval()
    with torch.no_grad():
        low, high = _feature_sizes(net, torch.randn(1, 3, 64, 64))
    assert (low, high) == (16, 64 // output_stride)
    assert (low_c, high_c) == ((64, 512) if name in ("resnet18", "resnet34") else (256, 2048))
    assert isinstance(net.fc, torch.nn.Identity) and isinstance(net.avgpool, torch.nn.Identity)  # documented


@pytest.mark.parametrize("output_stride,rates", [(16, (6, 12, 18)), (8, (12, 24, 36))])
def test_aspp_rates_and_low_level_projection(output_stride: int, rates: tuple[int, int, int]) -> None:
    net = DeepLabV3Plus(21, "resnet18", output_stride, aspp_channels=16)
    dil = [branch[0].dilation[0] for branch in net.aspp.branches]
    assert dil == [1, *rates]
    assert net.low_level[0].out_channels == 48
    assert net.config == {
        "num_classes": 21,
        "backbone": "resnet18",
        "output_stride": output_stride,
        "aspp_channels": 16,
        "low_level_channels": 48,
    }


@pytest.mark.parametrize(
    "backbone,output_stride,size",
    [
        ("resnet18", 16, (33, 47)),
        ("resnet18", 8, (17, 19)),
        ("resnet50", 8, (29, 31)),
        ("resnet18", 16, (1, 1)),
    ],
)
def test_deeplab_odd_sizes(backbone: str, output_stride: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    net = DeepLabV3Plus(5, backbone, output_stride, aspp_channels=16).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)
    assert torch.isfinite(out).all()


def test_deeplab_trains_and_groups_cover_all_parameters() -> None:
    torch.manual_seed(0)
    net = DeepLabV3Plus(3, "resnet18", aspp_channels=8)
    out = net(torch.randn(2, 3, 21, 27))
    out.sum().backward()
    groups = net.backbone_parameters() + net.head_parameters()
    assert len(groups) == len(list(net.parameters()))
    assert {id(p) for p in groups} == {id(p) for p in net.parameters()}
    assert all(p.grad is not None for p in net.parameters())


def test_deeplab_errors() -> None:
    with pytest.raises(ValueError, match="backbone must be one of"):
        DeepLabV3Plus(21, "vgg16")
    with pytest.raises(ValueError, match="output_stride must be 8 or 16, got 32"):
        DeepLabV3Plus(21, "resnet18", 32)
    with pytest.raises(ValueError, match="num_classes"):
        DeepLabV3Plus(0, "resnet18")
    net = DeepLabV3Plus(21, "resnet18", aspp_channels=8)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\).*got \(1, 4, 8, 8\)"):
        net(torch.zeros(1, 4, 8, 8))


def test_deeplab_stores_plain_option_values() -> None:
    """A numpy string is stored in the config as the plain str (a numpy scalar there made every checkpoint of
    the model unreadable: weights-only loading refuses it); a numpy integer, a float or a tensor stride is
    refused, as for the widths."""
    net = DeepLabV3Plus(3, np.str_("resnet18"), 8, aspp_channels=8)
    assert type(net.config["backbone"]) is str and type(net.config["output_stride"]) is int
    for stride in (np.int64(16), 16.0, torch.tensor(16), True):
        with pytest.raises(ValueError, match=re.escape(f"output_stride must be 8 or 16, got {stride!r}")):
            DeepLabV3Plus(3, "resnet18", stride, aspp_channels=8)
    with pytest.raises(ValueError, match=r"backbone must be one of \('resnet18', .*\), got b'resnet18'"):
        DeepLabV3Plus(3, b"resnet18", aspp_channels=8)  # type: ignore[arg-type]


def test_backbone_weights_from_local_file(tmp_path) -> None:
    torch.manual_seed(0)
    src, _, _ = build_resnet_backbone("resnet18", 16)
    state = {f"module.{k}": v for k, v in src.state_dict().items()}  # prefixes are stripped
    state["fc.weight"] = torch.zeros(1000, 512)  # classifier keys are ignored
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": state}, path)
    net = DeepLabV3Plus(21, "resnet18", backbone_weights=path, aspp_channels=8)
    for k, v in src.state_dict().items():
        assert torch.equal(net.backbone.state_dict()[k], v), k


def test_backbone_weights_errors(tmp_path) -> None:
    net, _, _ = build_resnet_backbone("resnet18", 16)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_backbone_weights(net, tmp_path / "missing.pth")
    with pytest.raises(IsADirectoryError, match="backbone weights: expected a file, got the folder"):
        load_backbone_weights(net, tmp_path)
    bad = tmp_path / "pickled.pth"
    torch.save({"conv1.weight": argparse.Namespace(a=1)}, bad)  # an arbitrary object: refused by weights_only
    with pytest.raises(ValueError, match="weights_only=True"):
        load_backbone_weights(net, bad)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="do not match the backbone: missing keys"):
        load_backbone_weights(net, wrong)


@pytest.mark.parametrize(
    "backbone,got",
    [
        (None, "NoneType (None)"),
        ({"conv1.weight": torch.zeros(3)}, "dict ({'conv1.weight'"),
        ("resnet18", "str"),
    ],
)
def test_backbone_weights_backbone_not_a_module(tmp_path, backbone: object, got: str) -> None:
    path = tmp_path / "w.pth"  # an existing file: before, None reached backbone.state_dict() (AttributeError)
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(TypeError, match=re.escape(f"backbone must be an nn.Module, got {got}")):
        load_backbone_weights(backbone, path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "args,kwargs,out_channels,dilations",
    [
        ((4,), {}, 256, [1, 6, 12, 18]),  # the defaults
        ((4, 8), {}, 8, [1, 6, 12, 18]),
        ((4, 8), {"rates": (6, 12, 18)}, 8, [1, 6, 12, 18]),
        ((4, 8), {"rates": [12, 24, 36], "dropout": 0.1}, 8, [1, 12, 24, 36]),
        ((4, 8), {"rates": (1,), "dropout": 0}, 8, [1, 1]),  # one rate, an int dropout
        ((1, 1), {"rates": range(1, 9), "dropout": 0.99}, 1, [1, *range(1, 9)]),  # the bounds
    ],
)
def test_aspp_valid_arguments_build_and_run(
    args: tuple[int, ...], kwargs: dict[str, object], out_channels: int, dilations: list[int]
) -> None:
    torch.manual_seed(0)
    aspp = ASPP(*args, **kwargs)  # type: ignore[arg-type]
    assert [branch[0].dilation[0] for branch in aspp.branches] == dilations
    y = aspp(torch.randn(2, args[0], 9, 7))  # training mode: the pooling branch's BatchNorm needs B >= 2
    assert y.shape == (2, out_channels, 9, 7) and bool(torch.isfinite(y).all())


_WIDTH = r"must be an int in \[1, 4096\], got "
_RATES = r"rates must be 1 to 8 ints in \[1, 1024\], got "
_DROPOUT = r"dropout must be a finite number in \[0, 1\), got "


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        ((-1,), {}, ValueError, "in_channels " + _WIDTH + "-1$"),  # was a raw "negative dimension" error
        ((0, 8), {}, ValueError, "in_channels " + _WIDTH + "0$"),  # was accepted
        ((4097, 8), {}, ValueError, "in_channels " + _WIDTH + "4097$"),
        ((4.0, 8), {}, ValueError, "in_channels " + _WIDTH + r"4\.0$"),
        ((True, 8), {}, ValueError, "in_channels " + _WIDTH + "True$"),
        ((4, 8.5), {}, ValueError, "out_channels " + _WIDTH + r"8\.5$"),  # was "divisible by groups"
        ((4, 0), {}, ValueError, "out_channels " + _WIDTH + "0$"),
        ((4, -1), {}, ValueError, "out_channels " + _WIDTH + "-1$"),
        ((4, "8"), {}, ValueError, "out_channels " + _WIDTH + "'8'$"),
        ((4, 8), {"rates": 6}, TypeError, r"rates must be a sequence of ints, got int \(6\)"),  # not iterable
        ((4, 8), {"rates": "6"}, TypeError, r"rates must be a sequence of ints, got str \('6'\)"),
        ((4, 8), {"rates": b"\x06"}, TypeError, r"rates must be a sequence of ints, got bytes"),
        ((4, 8), {"rates": {6, 12, 18}}, TypeError, r"rates must be a sequence of ints, got set"),
        ((4, 8), {"rates": (0, 12, 18)}, ValueError, _RATES + r"\(0, 12, 18\)"),  # was accepted
        ((4, 8), {"rates": (6.5, 12, 18)}, ValueError, _RATES + r"\(6\.5, 12, 18\)"),  # was accepted
        ((4, 8), {"rates": (-6, 12, 18)}, ValueError, _RATES + r"\(-6, 12, 18\)"),
        ((4, 8), {"rates": (True, 12, 18)}, ValueError, _RATES + r"\(True, 12, 18\)"),
        ((4, 8), {"rates": (6, 12, 1025)}, ValueError, _RATES + r"\(6, 12, 1025\)"),
        ((4, 8), {"rates": [np.int64(6), 12, 18]}, ValueError, _RATES),
        ((4, 8), {"rates": ()}, ValueError, _RATES + r"\(\)"),
        ((4, 8), {"rates": (1,) * 9}, ValueError, _RATES + r"\(1, 1, 1"),
        ((4, 8), {"dropout": float("nan")}, ValueError, _DROPOUT + "nan$"),  # was accepted
        ((4, 8), {"dropout": float("inf")}, ValueError, _DROPOUT + "inf$"),
        ((4, 8), {"dropout": 1.0}, ValueError, _DROPOUT + r"1\.0$"),
        ((4, 8), {"dropout": -0.1}, ValueError, _DROPOUT + r"-0\.1$"),
        ((4, 8), {"dropout": True}, ValueError, _DROPOUT + "True$"),
        ((4, 8), {"dropout": "0.5"}, ValueError, _DROPOUT + "'0.5'$"),
    ],
)
def test_aspp_argument_errors(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ASPP(*args, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(21, 30), (16, 16), (1, 1), (37, 5)])
@pytest.mark.parametrize("cell_size", [4, 16])
def test_spixelfcn_odd_sizes(size: tuple[int, int], cell_size: int) -> None:
    torch.manual_seed(0)
    net = SpixelFCN(cell_size=cell_size, width=4).eval()
    with torch.no_grad():
        q = net(torch.randn(2, 3, *size))
    assert q.shape == (2, 9, *size)
    assert (q >= 0).all()
    torch.testing.assert_close(q.sum(1), torch.ones(2, *size))
    assert net.cell_size == cell_size and net.config == {"cell_size": cell_size, "width": 4}


def test_spixelfcn_architecture_and_errors() -> None:
    net = SpixelFCN()
    assert [m.out_channels for m in (net.enc0[0][0], net.enc4[0][0], net.pred)] == [16, 256, 9]
    assert isinstance(net.enc0[0][2], torch.nn.LeakyReLU) and net.enc0[0][2].negative_slope == 0.1
    with pytest.raises(ValueError, match=r"cell_size must be an int in \[1, 1024\], got 0"):
        SpixelFCN(cell_size=0)
    with pytest.raises(ValueError, match="width"):
        SpixelFCN(width=-1)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        net(torch.zeros(1, 1, 8, 8))


def test_spixelfcn_crop_matches_padded_input() -> None:
    """The output at an odd size is the top-left crop of the output on the edge-padded input."""
    torch.manual_seed(0)
    net = SpixelFCN(width=4).eval()
    x = torch.randn(1, 3, 20, 27)
    padded = torch.nn.functional.pad(x, (0, 5, 0, 12), mode="replicate")
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(padded)[:, :, :20, :27])


def test_spixelfcn_centre_bias_starts_near_the_grid() -> None:
    import sparse_ops

    torch.manual_seed(0)
    net = SpixelFCN(cell_size=4, width=4, centre_bias=20.0).eval()
    assert net.config == {"cell_size": 4, "width": 4, "centre_bias": 20.0}
    with torch.no_grad():
        ids = sparse_ops.hard_superpixels(net(torch.randn(1, 3, 16, 20)), 4)
    expect = (torch.arange(16)[:, None] // 4) * 5 + torch.arange(20)[None, :] // 4  # the pixel's own cell
    assert torch.equal(sparse_ops.grid_cell_ids(16, 20, 4).long(), expect)
    assert (ids[0] == expect).float().mean() > 0.99
    with torch.no_grad():
        plain = sparse_ops.hard_superpixels(
            SpixelFCN(cell_size=4, width=4).eval()(torch.randn(1, 3, 16, 20)), 4
        )
    assert (plain[0] == expect).float().mean() < 0.9  # without the bias: no grid at step 0


@pytest.mark.parametrize("name", ["resnet18", "resnet34"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_basic_block_dilations_follow_torchvision_rule(name: str, output_stride: int) -> None:
    """ResNet-18/34 get the dilations torchvision gives a bottleneck ResNet (its 3x3 convs): the first
    block of a dilated stage keeps the previous dilation, the later blocks use the new one."""
    net, _, _ = build_resnet_backbone(name, output_stride)
    ref, _, _ = build_resnet_backbone("resnet50", output_stride)
    for stage in ("layer2", "layer3", "layer4"):
        ours, theirs = getattr(net, stage), getattr(ref, stage)
        new = theirs[1].conv2.dilation  # the stage's own dilation
        assert ours[0].conv1.dilation == theirs[0].conv2.dilation, (stage, 0)
        for i, block in enumerate(ours):
            assert block.conv2.dilation == new, (stage, i)
            if i:
                assert block.conv1.dilation == new, (stage, i)


def test_backbone_weights_accept_the_documented_wrappers_and_prefixes(tmp_path) -> None:
    """A state dict under "model" (or "state_dict") with "backbone." (or "module.") prefixed keys loads."""
    torch.manual_seed(0)
    src, _, _ = build_resnet_backbone("resnet18", 16)
    path = tmp_path / "r18.pth"
    torch.save({"model": {f"backbone.{k}": v for k, v in src.state_dict().items()}}, path)
    net, _, _ = build_resnet_backbone("resnet18", 16)
    load_backbone_weights(net, path)
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_backbone_weights_of_the_wrong_shape_are_named(tmp_path) -> None:
    src, _, _ = build_resnet_backbone("resnet18", 16)
    state = dict(src.state_dict())
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)  # a 3x3 stem instead of 7x7
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"shape mismatches \['conv1\.weight'\]"):
        load_backbone_weights(src, path)


def test_backbone_weights_of_the_wrong_shape_give_both_shapes(tmp_path) -> None:
    """The message named the keys of other shapes but neither shape; and it cut the list at five keys without
    the "..." of the other two lists."""
    src, _, _ = build_resnet_backbone("resnet18", 16)
    state = dict(src.state_dict())
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)  # a 3x3 stem instead of 7x7
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=r"shape mismatches \['conv1\.weight'\]; conv1\.weight: file \(64, 3, 3, 3\), backbone "
        r"\(64, 3, 7, 7\)$",
    ):
        load_backbone_weights(src, path)
    wide = {
        k: torch.zeros(2 * v.shape[0], *v.shape[1:]) if v.dim() else v for k, v in src.state_dict().items()
    }
    torch.save(wide, path)
    with pytest.raises(
        ValueError,
        match=r"shape mismatches \[(?:'[^']+', ){4}'[^']+'\]\.\.\.; conv1\.weight: file \(128, 3, 7, 7\)",
    ):
        load_backbone_weights(src, path)


def test_backbone_weights_without_num_batches_tracked_load(tmp_path, monkeypatch) -> None:
    """ResNet weights saved before torch 0.4.1 added ``num_batches_tracked`` (torchvision's original ImageNet
    files, Caffe conversions) have no such keys: torch's own BatchNorm loading accepts them, and so does
    ``--backbone-weights``; the counters start at 0."""
    torch.manual_seed(0)
    src, _, _ = build_resnet_backbone("resnet18", 16)
    for m in src.modules():  # non-trivial statistics, to see that they are the ones loaded
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    state = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    path = tmp_path / "resnet18-5c106cde.pth"
    torch.save(state, path)
    net, _, _ = build_resnet_backbone("resnet18", 16)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.num_batches_tracked.fill_(7)
    load_backbone_weights(net, path)
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            assert int(v) == 0, k
        else:
            assert torch.equal(v, src.state_dict()[k]), k
    import warnings

    from examples.voc_joint import train_options  # imports torchvision: not at the top of this file
    from examples.voc_joint.models import deeplabv3plus

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "copying ... to a meta parameter is a no-op" is filtered out
        assert train_options.backbone_weights_error(path, "resnet18", 16) is None
    original = deeplabv3plus.load_backbone_weights

    def load_and_warn(net: torch.nn.Module, file: object) -> None:
        warnings.warn("another warning of the load", UserWarning, stacklevel=1)
        original(net, file)

    monkeypatch.setattr(deeplabv3plus, "load_backbone_weights", load_and_warn)
    with pytest.warns(UserWarning, match="another warning of the load"):  # only that one is hidden
        assert train_options.backbone_weights_error(path, "resnet18", 16) is None
    monkeypatch.undo()
    # a key other than the counters still has to be there
    del state["bn1.running_mean"]
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing keys \['bn1\.running_mean'\]"):
        load_backbone_weights(net, path)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: DeepLabV3Plus(True, "resnet18"), r"num_classes must be an int in \[1, 1024\], got True"),
        (
            lambda: DeepLabV3Plus(3, "resnet18", aspp_channels=-1),
            r"aspp_channels must be an int in \[1, 4096\], got -1",
        ),
        (
            lambda: DeepLabV3Plus(3, "resnet18", low_level_channels=2.0),
            r"low_level_channels must be an int in \[1, 4096\], got 2.0",
        ),
        (lambda: SpixelFCN(True), r"cell_size must be an int in \[1, 1024\], got True"),
        (
            lambda: SpixelFCN(8, centre_bias=float("nan")),
            r"centre_bias must be a finite number in \[-100, 100\], got nan",
        ),
        (
            lambda: SpixelFCN(8, centre_bias=None),
            r"centre_bias must be a finite number in \[-100, 100\], got None",
        ),
        (  # a bool is no number (its config would have held 1.0)
            lambda: SpixelFCN(8, centre_bias=True),
            r"centre_bias must be a finite number in \[-100, 100\], got True",
        ),
        # above the bounds of a checkpoint's config: built before, then the checkpoint was refused on load
        (lambda: DeepLabV3Plus(1025, "resnet18"), r"num_classes must be an int in \[1, 1024\], got 1025"),
        (
            lambda: DeepLabV3Plus(3, "resnet18", aspp_channels=4097),
            r"aspp_channels must be an int in \[1, 4096\], got 4097",
        ),
        (
            lambda: DeepLabV3Plus(3, "resnet18", low_level_channels=4097),
            r"low_level_channels must be an int in \[1, 4096\], got 4097",
        ),
        (lambda: SpixelFCN(1025), r"cell_size must be an int in \[1, 1024\], got 1025"),
        (lambda: SpixelFCN(8, 257), r"width must be an int in \[1, 256\], got 257"),
        (  # before: math.isfinite's OverflowError
            lambda: SpixelFCN(8, centre_bias=10**400),
            r"centre_bias must be a finite number in \[-100, 100\], got 1000000",
        ),
        (
            lambda: SpixelFCN(8, centre_bias=100.5),
            r"centre_bias must be a finite number in \[-100, 100\], got 100.5",
        ),
    ],
)
def test_network_sizes_are_named(build, match: str) -> None:
    """Before: PyTorch's RuntimeError/TypeError from a layer's allocation, or a bool/NaN accepted."""
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "build", [lambda: DeepLabV3Plus(3, "resnet18", aspp_channels=4), lambda: SpixelFCN(8, 2)]
)
def test_networks_name_integer_or_empty_images(build) -> None:
    """Raw uint8 images and 0-pixel images: named, not a convolution's RuntimeError. (Built in the test, not
    at collection: without torchvision the module must import so that its tests are skipped.)"""
    net = build()
    with pytest.raises(
        TypeError, match=r"x must be a floating-point tensor of normalized images, got torch\.uint8"
    ):
        net(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(  # not "got float32": the dtype of an array is fine, its type is not
        TypeError, match=r"x must be a floating-point tensor of normalized images, got numpy\.ndarray$"
    ):
        net(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(
        ValueError, match=r"x must have shape \(B, 3, H, W\) with H, W >= 1, got \(1, 3, 0, 8\)"
    ):
        net(torch.zeros(1, 3, 0, 8))


@pytest.mark.parametrize(
    "build", [lambda: DeepLabV3Plus(3, "resnet18", aspp_channels=4), lambda: SpixelFCN(8, 2)]
)
def test_networks_name_images_of_another_dtype_or_device(build) -> None:
    """Before: "expected scalar type Float but found Double" (SpixelFCN) or "Input type (torch.FloatTensor)
    and weight type (torch.DoubleTensor) should be the same or input should be a MKLDNN tensor ..."
    (DeepLabV3+); the weights' dtype is read from ``input_weight``, and under ``torch.autocast`` another dtype
    is the autocast's to convert."""
    net = build().eval()
    assert net.input_weight is next(net.parameters())  # the first layer the images meet
    x = torch.randn(2, 3, 16, 16)
    for weights, images, want, got in (
        (torch.float64, x, "float64", "float32"),
        (torch.float32, x.double(), "float32", "float64"),
        (torch.float32, x.half(), "float32", "float16"),
    ):
        model = net.to(weights)  # (in place: the same module)
        with pytest.raises(
            TypeError,
            match=rf"x must have the dtype of the network's weights, torch\.{want} \(convert it with "
            rf"\.to\(torch\.{want}\), or run under torch\.autocast\), got torch\.{got}$",
        ):
            model(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(net.float()(x.bfloat16())).all()
    with pytest.raises(
        ValueError, match=r"x must be on the network's device meta \(move it with \.to\('meta'\)\), got cpu$"
    ):
        net.to("meta")(x)
    assert net(x.to("meta")).device.type == "meta"  # (shapes only: the check passes on the network's device)
    with pytest.raises(TypeError, match=r"x must have the dtype .* got torch\.float64$"):  # (was autocast's
        net(x.to("meta", torch.float64))  # RuntimeError "unknown device type for autocast")


def test_deeplab_names_a_single_image_in_training_mode() -> None:
    """Before: PyTorch's BatchNorm error about an input of size (1, 4, 1, 1), naming no layer; frozen
    BatchNorm (the joint stage's ``--freeze-bn``) or eval mode take one image."""
    from examples.voc_joint.engine import set_bn_eval

    torch.manual_seed(0)
    net = DeepLabV3Plus(3, "resnet18", aspp_channels=4, low_level_channels=4).train()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"x must hold at least 2 images in training mode.*\(1, 3, 16, 16\)"):
        net(x)
    set_bn_eval(net)
    assert net.training and net(x).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("size", [(1, 1), (16, 16), (9, 13)])
def test_spixelfcn_names_one_small_image_in_training_mode(size: tuple[int, int]) -> None:
    """One image padded to 16 x 16 leaves one value per channel at the 1/16 stage (PyTorch's BatchNorm error
    before); a larger image, a second image or eval mode run."""
    torch.manual_seed(0)
    net = SpixelFCN(8, 2).train()
    with pytest.raises(
        ValueError, match=r"x must not be a single image of at most 16 x 16 pixels in training"
    ):
        net(torch.randn(1, 3, *size))
    assert net(torch.randn(2, 3, *size)).shape == (2, 9, *size)
    assert net(torch.randn(1, 3, 17, 3)).shape == (1, 9, 17, 3)
    assert net.eval()(torch.randn(1, 3, *size)).shape == (1, 9, *size)


@pytest.mark.parametrize(
    "build, x",
    [
        (lambda: DeepLabV3Plus(3, "resnet18", aspp_channels=4, low_level_channels=4), (1, 3, 16, 16)),
        (lambda: SpixelFCN(8, 2), (1, 3, 16, 16)),
    ],
)
def test_single_image_check_leaves_sync_batchnorm_to_pytorch(build, x: tuple[int, ...]) -> None:
    """Under ``--sync-bn`` one image per process is a valid batch (SyncBatchNorm counts every process's
    values), so the networks' own single-image refusal must not fire there: without a process group PyTorch's
    own BatchNorm error is what remains (the networks' message before)."""
    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(build()).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        net(torch.randn(*x))


@pytest.mark.parametrize(
    "state,match",
    [
        ({0: torch.zeros(1)}, r"got the key 0 \(int\) -> Tensor"),  # AttributeError: 'int' ... 'startswith'
        ({"conv1.weight": torch.zeros(1), "epoch": 3}, r"got the key 'epoch' \(str\) -> int"),  # "got dict"
        ([torch.zeros(1)], r"got list"),
    ],
)
def test_backbone_weights_that_are_no_state_dict_name_the_key(tmp_path, state, match: str) -> None:
    """A dict with a non-str key crashed with an AttributeError, one with a non-tensor value said only "got
    dict": the first key that is no str or holds no tensor is named, with the file."""
    net, _, _ = build_resnet_backbone("resnet18", 16)
    for key, value in net.state_dict().items():
        if isinstance(state, dict) and key != "conv1.weight":
            state[key] = value
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=rf"backbone weights .*r18\.pth must be a state dict \(str keys, tensor values\), {match}",
    ):
        load_backbone_weights(net, path)


def test_backbone_weights_with_two_keys_for_one_parameter_are_refused(tmp_path) -> None:
    """A file holding ``conv1.weight`` and ``module.conv1.weight`` loaded whichever came later, silently: the
    two keys are named."""
    net, _, _ = build_resnet_backbone("resnet18", 16)
    state = dict(net.state_dict())
    state["module.conv1.weight"] = torch.zeros_like(state["conv1.weight"])
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(
        ValueError,
        match=r"backbone weights .*r18\.pth: the keys 'conv1\.weight' and 'module\.conv1\.weight' are both "
        r"'conv1\.weight' once the prefixes 'module\.' and 'backbone\.' are removed; keep one of them",
    ):
        load_backbone_weights(net, path)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("layer1.0.conv1.weight", float("nan"), r"layer1\.0\.conv1\.weight holds NaN or infinite values"),
        ("bn1.running_var", float("inf"), r"bn1\.running_var holds NaN or infinite values"),
        ("conv1.weight", torch.int64, r"conv1\.weight must be floating-point, got torch\.int64"),
        ("conv1.weight", torch.complex64, r"conv1\.weight must be floating-point, got torch\.complex64"),
    ],
)
def test_backbone_weights_that_are_no_weights_are_named(tmp_path, key: str, value, match: str) -> None:
    """Non-finite weights (a diverged run's file) loaded silently and showed only as a non-finite loss once
    training ran; integer weights were cast silently, complex ones lost their imaginary part with a warning.
    The file and the key are named; the check also runs for ``--backbone-weights`` (meta backbone)."""
    from examples.voc_joint import train_options

    net, _, _ = build_resnet_backbone("resnet18", 16)
    state = dict(net.state_dict())
    if isinstance(value, float):
        state[key] = state[key].clone()
        state[key].view(-1)[0] = value
    else:
        state[key] = state[key].to(value)
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=rf"backbone weights .*r18\.pth: {match}"):
        load_backbone_weights(net, path)
    assert re.search(match, train_options.backbone_weights_error(path, "resnet18", 16) or "")
    state = {k: v.double() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    torch.save(state, path)  # another floating-point dtype is fine (cast as before)
    load_backbone_weights(net, path)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float8_e4m3fn])
def test_backbone_weights_are_checked_in_the_backbones_dtype(tmp_path, dtype) -> None:
    """The finiteness check ran in the file's dtype: a float64 value beyond float32's range passed it and
    loaded as inf, and a float8_e4m3fn file (no isfinite in torch) raised a bare NotImplementedError, a
    traceback of train.py. Checked as the backbone will hold the weights: the first refused naming the key and
    the conversion, the second loaded as any other floating-point dtype."""
    from examples.voc_joint import train_options

    net, _, _ = build_resnet_backbone("resnet18", 16)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    path = tmp_path / "r18.pth"
    if dtype == torch.float64:
        state["conv1.weight"].view(-1)[0] = 1e39
        torch.save(state, path)
        match = r"conv1\.weight holds NaN or infinite values once converted to the backbone's torch\.float32"
        with pytest.raises(ValueError, match=rf"backbone weights .*r18\.pth: {match}"):
            load_backbone_weights(net, path)
        assert re.search(match, train_options.backbone_weights_error(path, "resnet18", 16) or "")
        return
    torch.save(state, path)
    load_backbone_weights(net, path)
    assert train_options.backbone_weights_error(path, "resnet18", 16) is None
    assert torch.equal(net.conv1.weight, state["conv1.weight"].float())


@pytest.mark.parametrize(
    "to,match",
    [
        (lambda t: t.to("meta"), r"must be a dense tensor with data, got a meta tensor \(no data\)"),
        (lambda t: t.to_sparse(), r"must be a dense tensor with data, got a torch\.sparse_coo tensor"),
    ],
)
@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants:UserWarning")  # torch.load's, sparse
def test_backbone_weights_without_dense_data_are_named(tmp_path, to, match: str) -> None:
    """A file saved from a model on the meta device (no data) failed with "Tensor.item() cannot be called on
    meta tensors" (before: "Cannot copy out of meta tensor"), a sparse tensor with a NotImplementedError of
    the sparse backend; neither named the file nor the key."""
    net, _, _ = build_resnet_backbone("resnet18", 16)
    state = dict(net.state_dict())
    state["conv1.weight"] = to(state["conv1.weight"])
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=rf"backbone weights .*r18\.pth: conv1\.weight {match}"):
        load_backbone_weights(net, path)


def test_deeplab_layers_are_the_documented_ones() -> None:
    """The module docstring's architecture: ASPP on the 1/16 feature with a global image-pooling branch and
    dropout 0.5, a 1x1 projection of the stride-4 ``layer1`` feature, a decoder of two 3x3 blocks with dropout
    0.5 / 0.1. (A 2x2 pooling, a 3x3 low-level projection, a skipped max-pool or swapped dropouts kept every
    shape and passed.)"""
    torch.manual_seed(0)
    net = DeepLabV3Plus(3, "resnet18", aspp_channels=8, low_level_channels=4).eval()
    seen: dict[str, tuple[int, ...]] = {}
    for name, module in [("aspp", net.aspp), ("low_level", net.low_level), ("pool", net.aspp.pool)]:
        module.register_forward_hook(
            lambda m, args, out, name=name: seen.update(
                {name: tuple(args[0].shape), f"{name}_out": tuple(out.shape)}
            )
        )
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 96)).shape == (2, 3, 64, 96)
    assert seen["aspp"] == (2, 512, 4, 6) and seen["low_level"] == (2, 64, 16, 24)
    assert seen["pool_out"] == (2, 8, 1, 1)  # image pooling: one value per channel
    assert net.low_level[0].kernel_size == (1, 1)
    assert [net.decoder[i][0].kernel_size for i in (0, 2)] == [(3, 3), (3, 3)]
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5, 0.1]
    assert isinstance(net.aspp.project[1], torch.nn.Dropout) and net.aspp.project[1].p == 0.5


def test_backbone_weights_of_a_data_parallel_model_s_backbone_load(tmp_path) -> None:
    """``module.backbone.`` keys (the backbone of a model saved from its DistributedDataParallel wrapper,
    which puts ``module.`` outermost) load: both prefixes are stripped, in that order."""
    torch.manual_seed(0)
    src, _, _ = build_resnet_backbone("resnet18", 16)
    path = tmp_path / "r18.pth"
    torch.save({f"module.backbone.{k}": v for k, v in src.state_dict().items()}, path)
    net, _, _ = build_resnet_backbone("resnet18", 16)
    load_backbone_weights(net, path)
    for k, v in src.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_deeplab_forward_is_the_documented_composition() -> None:
    """Backbone (stem with max-pool, layer1 as the low-level feature), ASPP, ASPP output bilinearly upsampled
    (``align_corners=False``) to the low-level size and concatenated before it, decoder, classifier, logits
    bilinearly upsampled to the input size; the head starts from Kaiming-normal (ReLU gain) weights and a zero
    classifier bias."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    net = DeepLabV3Plus(3, "resnet18", aspp_channels=8, low_level_channels=4).eval()
    x = torch.randn(2, 3, 45, 61)
    b = net.backbone
    with torch.no_grad():
        low = b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x)))))
        high = net.aspp(b.layer4(b.layer3(b.layer2(low))))
        low = net.low_level(low)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = net.classifier(net.decoder(torch.cat([high, low], dim=1)))
        expected = F.interpolate(logits, size=(45, 61), mode="bilinear", align_corners=False)
        torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
    assert torch.equal(net.classifier.bias, torch.zeros(3))
    wide = DeepLabV3Plus(3, "resnet18", aspp_channels=256)
    w = wide.decoder[0][0].weight.detach()  # 256 x (256 + 48) x 3 x 3: ~700k draws
    fan_in = w.shape[1] * 9
    assert abs(float(w.std()) * (fan_in / 2) ** 0.5 - 1) < 0.02  # PyTorch's default init: about 0.41


def test_spixelfcn_forward_is_the_documented_composition() -> None:
    """Four stride-2 encoder stages; each decoder stage a 4x4 stride-2 deconvolution concatenated with the
    encoder feature of its resolution; a 3x3 conv to 9 logits and a softmax over them; LeakyReLU(0.1) in every
    conv and deconv; Kaiming-normal (``a=0.1``) weights. (A dropped skip, a softmax temperature, another slope
    or PyTorch's default init kept every shape and the sum-to-one, and passed.)"""
    torch.manual_seed(0)
    net = SpixelFCN(width=4).eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        e = [net.enc0(x)]
        for enc in (net.enc1, net.enc2, net.enc3, net.enc4):
            e.append(enc(e[-1]))
        d = e[4]
        for up, dec, skip in zip(
            (net.up3, net.up2, net.up1, net.up0),
            (net.dec3, net.dec2, net.dec1, net.dec0),
            e[3::-1],
            strict=True,
        ):
            d = dec(torch.cat([up(d), skip], dim=1))
        torch.testing.assert_close(net(x), torch.softmax(net.pred(d), dim=1), rtol=0, atol=0)
    assert {m.negative_slope for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)} == {0.1}
    w = SpixelFCN(width=16).enc4[1][0].weight.detach()  # 256 x 256 x 3 x 3: ~600k draws
    gain = (2 / (1 + 0.1**2)) ** 0.5
    assert abs(float(w.std()) * (w.shape[1] * 9) ** 0.5 / gain - 1) < 0.02  # PyTorch's default: about 0.41


def test_spixelfcn_takes_one_small_image_when_the_1_16_batchnorm_is_frozen() -> None:
    """The single-image refusal is about the BatchNorm layers of the 1/16 stage (one value per channel):
    frozen there (the documented remedy), one 16 x 16 image runs in training mode; frozen everywhere else
    only, it is still refused."""
    from examples.voc_joint.engine import set_bn_eval

    torch.manual_seed(0)
    net = SpixelFCN(8, 2).train()
    set_bn_eval(net.enc4)
    assert net.training and net(torch.randn(1, 3, 16, 16)).shape == (1, 9, 16, 16)
    net = SpixelFCN(8, 2).train()
    for stage in (net.enc0, net.enc1, net.enc2, net.enc3):
        set_bn_eval(stage)
    with pytest.raises(ValueError, match="x must not be a single image of at most 16 x 16 pixels"):
        net(torch.randn(1, 3, 16, 16))


def test_spixelfcn_stores_centre_bias_as_a_plain_float() -> None:
    """A numpy float (a float subclass, which weights-only checkpoint loading refuses) or an int centre_bias
    is stored in the config as a plain float."""
    for bias in (np.float64(2.5), 3):
        value = SpixelFCN(8, 2, centre_bias=bias).config["centre_bias"]
        assert type(value) is float and value == float(bias)


def test_backbone_weights_keep_the_file_s_batchnorm_counters(tmp_path) -> None:
    """Only the ``num_batches_tracked`` counters a file lacks start at 0: those it holds are loaded.
    (Resetting every counter passed: the other tests' files come from untrained backbones, counters 0.)"""
    src, _, _ = build_resnet_backbone("resnet18", 16)
    counters = [m.num_batches_tracked for m in src.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for i, counter in enumerate(counters):
        counter.fill_(i + 1)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    net, _, _ = build_resnet_backbone("resnet18", 16)
    load_backbone_weights(net, path)
    loaded = [m.num_batches_tracked for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [int(c) for c in loaded] == list(range(1, len(counters) + 1))


def test_deeplab_image_pooling_is_a_global_average() -> None:
    """ASPP's image-pooling branch averages the feature over its whole extent (a global max pooling kept
    every shape and passed)."""
    torch.manual_seed(0)
    net = DeepLabV3Plus(3, "resnet18", aspp_channels=8, low_level_channels=4).eval()
    feature = torch.randn(2, 512, 3, 5)
    with torch.no_grad():
        torch.testing.assert_close(
            net.aspp.pool(feature), net.aspp.pool[1:](feature.mean(dim=(2, 3), keepdim=True))
        )


def test_deeplab_single_image_check_follows_the_image_pooling_batchnorm() -> None:
    """The single-image refusal is about the BatchNorm of ASPP's image-pooling branch (one value per
    channel): frozen there, one image runs with every other BatchNorm training; training there, one image is
    refused even with every other BatchNorm frozen."""
    from examples.voc_joint.engine import set_bn_eval

    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)  # 4 x 4 at the 1/16 stage: only the image pooling sees one value
    net = DeepLabV3Plus(3, "resnet18", aspp_channels=4, low_level_channels=4).train()
    net.aspp.pool[2].eval()
    assert net.training and net(x).shape == (1, 3, 64, 64)
    net = DeepLabV3Plus(3, "resnet18", aspp_channels=4, low_level_channels=4).train()
    set_bn_eval(net)
    net.aspp.pool[2].train()
    with pytest.raises(ValueError, match="x must hold at least 2 images in training mode"):
        net(x)


def test_spixelfcn_weights_have_the_leaky_relu_gain() -> None:
    """Every convolution starts Kaiming-normal for LeakyReLU(0.1) (``a=0.1``): the gain of ReLU's (``a=0``,
    0.5 % larger) passed the 2 % tolerance of one layer's std. Over all 1.6 M weights of the paper's width the
    sampled std is within 0.1 % of the target; ReLU's gain is 0.5 % off."""
    torch.manual_seed(0)
    net = SpixelFCN(width=16)
    convs = [m.weight.detach() for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    unit = torch.cat([(w * (w.shape[1] * 9) ** 0.5).flatten() for w in convs])  # fan_in = C_in x 3 x 3
    gain = (2 / (1 + 0.1**2)) ** 0.5
    assert abs(float(unit.pow(2).mean().sqrt()) / gain - 1) < 0.0025


def test_spixelfcn_biases_start_at_zero_but_the_centre_logit_s() -> None:
    """The prediction's biases start at 0 except the centre cell's (``centre_bias``), the deconvolutions' at
    0 (PyTorch's default uniform biases passed every other test)."""
    net = SpixelFCN(8, 2, centre_bias=3.0)
    assert torch.equal(net.pred.bias.detach(), torch.tensor([0, 0, 0, 0, 3.0, 0, 0, 0, 0]))
    for up in (net.up3, net.up2, net.up1, net.up0):
        assert torch.equal(up[0].bias.detach(), torch.zeros_like(up[0].bias))


class _FsPath:
    """An ``os.PathLike`` whose ``__fspath__`` returns ``value`` (a str, or bytes, which Path refuses)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __fspath__(self) -> object:
        return self.value

    def __repr__(self) -> str:
        return f"_FsPath({self.value!r})"


@pytest.mark.parametrize(
    ("weights", "got"),
    [
        (5, "int (5)"),
        (b"/tmp/x", "bytes (b'/tmp/x')"),
        (1.5, "float (1.5)"),
        (_FsPath(b"/tmp/x"), "_FsPath whose __fspath__() returns bytes (_FsPath(b'/tmp/x'))"),
    ],
)
def test_deeplab_names_backbone_weights_of_the_wrong_type_first(weights, got: str, monkeypatch) -> None:
    """``backbone_weights`` that is no str or str path (5, bytes) failed only after the backbone was built,
    with Path()'s raw error naming no argument: it is refused first, naming it (no torchvision model is
    built)."""
    import torchvision

    def no_backbone(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backbone was built before backbone_weights was checked")

    monkeypatch.setattr(torchvision.models, "resnet18", no_backbone)
    expected = "backbone_weights must be None, a str or an os.PathLike returning str"
    with pytest.raises(TypeError, match=re.escape(expected) + ".*" + re.escape(f"got {got}")):
        DeepLabV3Plus(3, "resnet18", backbone_weights=weights, aspp_channels=8, low_level_channels=4)


def test_load_backbone_weights_names_a_path_of_the_wrong_type(tmp_path) -> None:
    """The same check in :func:`load_backbone_weights` (called directly, e.g. by the training options): a str
    path-like still reaches the file checks."""
    with pytest.raises(TypeError, match=re.escape("path must be a str or an os.PathLike returning str")):
        load_backbone_weights(torch.nn.Identity(), b"/tmp/x")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_backbone_weights(torch.nn.Identity(), _FsPath(str(tmp_path / "missing.pth")))  # type: ignore[arg-type]


@pytest.mark.parametrize("runtime", ["abc", 5, "", 0, [], [("channels_last", True)]])
def test_build_model_names_a_runtime_that_is_no_dict(runtime: object) -> None:
    """``runtime="abc"`` or ``5`` reached ``dict()`` (a raw "dictionary update sequence" ValueError, "'int'
    object is not iterable"), a falsy one ("", 0, []) passed as no options and a list of pairs as a dict: each
    is refused, naming ``runtime``, its type and value."""
    from examples.voc_joint.models.build import build_model, model_config

    cfg = model_config(SpixelFCN(cell_size=8, width=4))
    got = re.escape(f"got {type(runtime).__name__} ({runtime!r})")
    with pytest.raises(TypeError, match=re.escape("runtime must be a dict (or None)") + ".*" + got):
        build_model(cfg, runtime=runtime)  # type: ignore[arg-type]


def test_build_model_takes_any_runtime_mapping_and_names_unknown_keys_of_any_type() -> None:
    """A read-only mapping is a dict of options; unknown keys of several types (1 and "x") are named (sorting
    them raised a raw "'<' not supported" TypeError)."""
    from types import MappingProxyType

    from examples.voc_joint.models.build import build_model, model_config

    cfg = model_config(SpixelFCN(cell_size=8, width=4))
    net = build_model(cfg, runtime=MappingProxyType({"channels_last": True}))
    assert net.pred.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(build_model(cfg, runtime=None), SpixelFCN)
    with pytest.raises(ValueError, match=re.escape("unknown runtime options [1, 'x'] (known: ['channels_")):
        build_model(cfg, runtime={1: True, "x": 1})


@pytest.mark.parametrize("which", ["deeplab", "spixelfcn"])
def test_model_config_of_a_joint_model_of_other_networks_is_a_type_error(which: str) -> None:
    """JointModel takes any two networks, but a config names only the pipeline's: ``model_config`` of one
    built on an ``nn.Identity`` raised a bare AttributeError from ``nn.Module`` (when its checkpoint was
    written); a TypeError naming the network, as for any other model it cannot describe."""
    from torch import nn

    from examples.voc_joint.models import JointModel
    from examples.voc_joint.models.build import model_config

    nets = {"deeplab": nn.Identity(), "spixelfcn": SpixelFCN(cell_size=4, width=4)}
    if which == "spixelfcn":
        nets = {"deeplab": DeepLabV3Plus(3, "resnet18", aspp_channels=8), "spixelfcn": nn.Identity()}
    model = JointModel(nets["deeplab"], nets["spixelfcn"], 3, cell_size=4, fusion_hidden=[6])
    kind = "DeepLabV3Plus" if which == "deeplab" else "SpixelFCN"
    with pytest.raises(TypeError, match=rf"JointModel whose {which} is a Identity, not a {kind}"):
        model_config(model)


def test_backbone_weights_beyond_float16_are_refused_for_a_half_backbone(tmp_path) -> None:
    """A float32 file value of 1e5 is finite in float32 but inf in a float16 backbone: the check runs in the
    backbone's dtype, and the message names the conversion."""
    net, _, _ = build_resnet_backbone("resnet18", 16)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["conv1.weight"].view(-1)[0] = 1e5
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    net = net.half()
    with pytest.raises(
        ValueError,
        match=r"conv1\.weight holds NaN or infinite values once converted to the backbone's torch\.float16 "
        r"\(from torch\.float32\)",
    ):
        load_backbone_weights(net, path)


def test_aspp_applies_the_dropout_it_is_given() -> None:
    """ASPP's ``dropout`` is the probability applied after the projection: with ``dropout=0`` a training
    forward is deterministic (no units dropped), with ``0.9`` about nine units in ten are zeroed and the
    rest scaled by 10."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 7)
    plain = ASPP(4, 8, dropout=0.0).train()
    torch.testing.assert_close(plain(x), plain(x), rtol=0, atol=0)
    dense = plain(x)
    heavy = ASPP(4, 8, dropout=0.9).train()
    heavy.load_state_dict(plain.state_dict())
    y = heavy(x)
    kept = y != 0
    assert 0.05 < kept.float().mean().item() * (dense != 0).float().mean().reciprocal().item() < 0.2
    torch.testing.assert_close(y[kept], 10 * dense[kept], rtol=1e-5, atol=1e-5)


def test_aspp_takes_the_largest_rate_of_its_bounds() -> None:
    """The bound of ASPP's rates is inclusive: a rate of 1024 (MAX_ASPP_RATE) builds a branch of that
    dilation and runs (1025 is refused: ``test_aspp_argument_errors``)."""
    torch.manual_seed(0)
    aspp = ASPP(2, 2, rates=(1, 1024), dropout=0.0).eval()
    assert [branch[0].dilation[0] for branch in aspp.branches] == [1, 1, 1024]
    assert aspp(torch.randn(1, 2, 5, 3)).shape == (1, 2, 5, 3)


def test_load_backbone_weights_names_a_missing_path() -> None:
    """``None`` is a valid ``backbone_weights`` of :class:`DeepLabV3Plus` (no file), but not a ``path`` of
    :func:`load_backbone_weights`: refused naming the argument, not with ``Path()``'s raw error."""
    with pytest.raises(
        TypeError,
        match=re.escape("path must be a str or an os.PathLike returning str (the path of a local file), got ")
        + r"NoneType \(None\)$",
    ):
        load_backbone_weights(torch.nn.Identity(), None)  # type: ignore[arg-type]
