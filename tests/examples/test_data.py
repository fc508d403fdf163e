"""VOC readers (VOC2012 and SBD-augmented layouts), joint transforms, documented errors."""

from __future__ import annotations

import argparse
import io
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torchvision")

import PIL
from PIL import Image, ImageFile
from torch.utils.data import DataLoader
from torchvision import tv_tensors

from examples.voc_joint import data
from examples.voc_joint.data import (
    IGNORE_INDEX,
    NUM_CLASSES,
    VOC_CLASSES,
    DataError,
    VOCSegmentation,
    build_dataset,
    ensure_synthetic_voc,
    eval_transform,
    normalize_seg,
    normalize_spixel,
    train_transform,
    voc_palette,
)
from examples.voc_joint.synthetic import generate_synthetic_voc
from tests.hypothesis_budget import budget

SIZE = (32, 48)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    return generate_synthetic_voc(root, num_train=4, num_val=2, image_size=SIZE, seed=1)


@pytest.fixture
def voc_copy(voc, tmp_path):
    dst = tmp_path / "VOC2012"
    shutil.copytree(voc, dst)
    return dst


def test_constants_and_palette():
    assert NUM_CLASSES == 21 == len(VOC_CLASSES) and IGNORE_INDEX == 255
    assert VOC_CLASSES[0] == "background" and VOC_CLASSES[15] == "person" and VOC_CLASSES[20] == "tvmonitor"
    pal = voc_palette()
    assert len(pal) == 768
    rgb = [tuple(pal[3 * i : 3 * i + 3]) for i in range(256)]
    assert rgb[0] == (0, 0, 0) and rgb[1] == (128, 0, 0) and rgb[2] == (0, 128, 0) and rgb[3] == (128, 128, 0)
    assert rgb[15] == (192, 128, 128) and rgb[20] == (0, 64, 128) and rgb[255] == (224, 224, 192)
    assert len(set(rgb[:21])) == 21


def test_normalization():
    x = torch.rand(2, 3, 4, 5)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(normalize_seg(x), (x - mean) / std)
    torch.testing.assert_close(normalize_spixel(x), x - torch.tensor([0.411, 0.432, 0.45]).view(3, 1, 1))


@pytest.mark.parametrize("sbd", [False, True])
def test_round_trip_through_loader(voc, sbd):
    ds = VOCSegmentation(voc, "train", sbd=sbd)
    list_dir = voc / "ImageSets" / ("SegmentationAug" if sbd else "Segmentation")
    listed = (list_dir / "train.txt").read_text().split()
    assert ds.names == listed and len(ds) == (6 if sbd else 4)
    for i in range(len(ds)):
        s = ds[i]
        assert set(s) == {"image", "seg_input", "spixel_input", "target", "name"}
        assert s["name"] == listed[i]
        assert s["image"].shape == (3, *SIZE) and s["image"].dtype == torch.float32
        assert s["target"].shape == SIZE and s["target"].dtype == torch.int64
        with Image.open(voc / "JPEGImages" / f"{listed[i]}.jpg") as im:
            expected = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(s["image"], expected)
        folder = "SegmentationClassAug" if sbd else "SegmentationClass"
        with Image.open(voc / folder / f"{listed[i]}.png") as im:
            assert torch.equal(s["target"], torch.from_numpy(np.asarray(im).astype(np.int64)))
        torch.testing.assert_close(s["seg_input"], normalize_seg(s["image"]))
        torch.testing.assert_close(s["spixel_input"], normalize_spixel(s["image"]))
    if sbd:  # SBD-only images have no ignore band, VOC ones do
        assert (ds[5]["target"] == 255).sum() == 0 and (ds[0]["target"] == 255).sum() > 0


def test_root_may_be_the_devkit_parent(voc, tmp_path):
    (tmp_path / "VOCdevkit").mkdir()
    shutil.copytree(voc, tmp_path / "VOCdevkit" / "VOC2012")
    ds = VOCSegmentation(tmp_path, "val")
    assert ds.root == tmp_path / "VOCdevkit" / "VOC2012" and len(ds) == 2


def test_dataloader_collates(voc):
    ds = build_dataset(voc, "train", crop_size=(24, 20), train=True)
    torch.manual_seed(0)
    batch = next(iter(DataLoader(ds, batch_size=3, shuffle=False, num_workers=0)))
    assert batch["seg_input"].shape == (3, 3, 24, 20) and batch["target"].shape == (3, 24, 20)
    assert batch["name"] == ds.names[:3]
    values = set(batch["target"].unique().tolist())
    assert values <= set(range(NUM_CLASSES)) | {255}


# ---------------------------------------------------------------- transforms (torchvision.transforms.v2)


def _coded_pair(h=5, w=7):
    """An image whose red channel encodes the target, so image and target stay aligned through transforms."""
    target = torch.randint(0, NUM_CLASSES, (h, w))
    image = torch.stack([target.float() / 255, torch.rand(h, w), torch.rand(h, w)])
    return tv_tensors.Image(image), tv_tensors.Mask(target)


def test_pad_fills_label_255_and_image_0():
    image = tv_tensors.Image(torch.ones(3, 4, 5))
    target = tv_tensors.Mask(torch.zeros(4, 5, dtype=torch.long))
    out_img, out_tgt = data.PadIfSmaller((7, 9))(image, target)
    assert isinstance(out_tgt, tv_tensors.Mask) and isinstance(out_img, tv_tensors.Image)
    assert out_img.shape == (3, 7, 9) and out_tgt.shape == (7, 9)
    assert torch.all(out_tgt[4:] == 255) and torch.all(out_tgt[:, 5:] == 255)
    assert torch.all(out_tgt[:4, :5] == 0)
    assert torch.all(out_img[:, 4:] == 0) and torch.all(out_img[:, :, 5:] == 0)
    assert torch.all(out_img[:, :4, :5] == 1)
    same = data.PadIfSmaller(3)(image, target)  # already large enough: untouched
    assert torch.equal(same[1], target)


def test_train_transform_pads_with_ignore_never_background():
    image = tv_tensors.Image(torch.ones(3, 4, 4))
    target = tv_tensors.Mask(torch.full((4, 4), 7, dtype=torch.uint8))
    t = train_transform(16, scale=(1.0, 1.0), hflip=False)
    torch.manual_seed(0)
    out_img, out_tgt = t(image, target)
    assert out_tgt.shape == (16, 16) and out_tgt.dtype == torch.uint8
    assert set(out_tgt.unique().tolist()) == {7, 255}
    assert (out_tgt == 7).sum() == 16
    assert torch.all(out_img[:, out_tgt == 255] == 0)


@pytest.mark.parametrize("seed", range(4))
def test_train_transform_keeps_image_and_target_aligned(seed):
    torch.manual_seed(100 + seed)
    image, target = _coded_pair(9, 11)
    t = train_transform((6, 8), scale=(1.0, 1.0))
    for _ in range(6):
        out_img, out_tgt = t(image, target)
        assert out_img.shape == (3, 6, 8) and out_tgt.shape == (6, 8)
        torch.testing.assert_close((out_img[0] * 255).round().long(), out_tgt.as_subclass(torch.Tensor))
        # the crop (possibly flipped) is a window of the input
        found = False
        for flip in (False, True):
            src = target.flip(-1) if flip else target
            for top in range(9 - 6 + 1):
                for left in range(11 - 8 + 1):
                    if torch.equal(src[top : top + 6, left : left + 8], out_tgt):
                        found = True
        assert found


def test_train_transform_crops_at_random_positions():
    """The training crop is a random window (``v2.RandomCrop``), not always the centre one: with scale 1 and
    no flip, 32 draws of a 6x8 crop of a 9x11 image under seed 0 start at several rows and columns, the
    corners of the 4x4 grid of offsets included."""
    image, target = _coded_pair(9, 11)
    t = train_transform((6, 8), scale=(1.0, 1.0), hflip=False)
    torch.manual_seed(0)
    offsets = set()
    for _ in range(32):
        _, out = t(image, target)
        offsets |= {
            (top, left)
            for top in range(4)
            for left in range(4)
            if torch.equal(target[top : top + 6, left : left + 8], out)
        }
    assert {top for top, _ in offsets} == {0, 1, 2, 3} and {left for _, left in offsets} == {0, 1, 2, 3}


def test_train_transform_flips_image_and_target_together_or_not_at_all():
    """Crop as large as the image and scale 1: every output is the input or its mirror image, image and
    target alike; ``hflip=True`` gives both over 16 draws (6 mirrored under seed 0), ``hflip=False`` none, and
    ``hflip`` left out is True (the documented default, which ``build_dataset(train=True)`` relies on)."""
    target = tv_tensors.Mask(torch.arange(20, dtype=torch.uint8).view(4, 5))
    image = tv_tensors.Image(torch.stack([target.float() / 255, torch.rand(4, 5), torch.rand(4, 5)]))
    for hflip, mirrored in ((True, 6), (False, 0), (None, 6)):  # None: the default, which build_dataset takes
        t = train_transform((4, 5), scale=(1.0, 1.0), **({} if hflip is None else {"hflip": hflip}))
        torch.manual_seed(0)
        flips = 0
        for _ in range(16):
            out_img, out_tgt = t(image, target)
            flipped = torch.equal(out_tgt, target.flip(-1))
            assert flipped or torch.equal(out_tgt, target)
            assert torch.equal(out_img, image.flip(-1) if flipped else image)
            flips += flipped
        assert flips == mirrored


def test_pad_to_multiple_leaves_a_multiple_alone_and_nearest_resize_uses_row_centres():
    image, target = _coded_pair(8, 12)
    out_img, out_tgt = eval_transform(None, pad_to_multiple=4)(image, target)
    assert torch.equal(out_tgt, target) and torch.equal(out_img, image)
    # x1.5 of rows [a, b] is [a, b, b] (pixel centres 1/3, 1, 5/3), as for columns
    mask = tv_tensors.Mask(torch.tensor([[1], [2]], dtype=torch.uint8).repeat(1, 2))
    _, out = data.RandomScale((1.5, 1.5))(tv_tensors.Image(torch.zeros(3, 2, 2)), mask)
    assert out[:, 0].tolist() == [1, 2, 2]


def test_nearest_resize_is_the_pixel_centre_formula_in_exact_arithmetic():
    # src = floor((dst + 0.5) * in / out), exact: a centre on the boundary of two source pixels takes the
    # lower-right one (float64 took row 0 for row 24 of 2 -> 49, where 24.5 * 2 / 49 is exactly 1)
    from fractions import Fraction

    for src, dst in [(2, 49), (3, 7), (7, 3), (5, 5), (1, 4), (49, 2), (6, 9)]:
        labels = torch.arange(src).view(src, 1).expand(src, 2)
        out = data._resize_nearest_exact(labels, (dst, 2))
        want = [int((Fraction(2 * d + 1, 2) * Fraction(src, dst)) // 1) for d in range(dst)]
        assert out[:, 0].tolist() == want, (src, dst)
        assert max(want) <= src - 1


def test_random_scale_range_and_nearest_labels():
    image, target = _coded_pair(10, 12)
    for s in (0.5, 2.0):
        out_img, out_tgt = data.RandomScale((s, s))(image, target)
        assert out_tgt.shape == (round(10 * s), round(12 * s)) and out_img.shape[-2:] == out_tgt.shape
        assert set(out_tgt.unique().tolist()) <= set(target.unique().tolist())
        assert out_img.min() >= 0 and out_img.max() <= 1
        # still an Image (the clamp returned a plain Tensor, which later Image-only steps would skip)
        assert type(out_img) is tv_tensors.Image and type(out_tgt) is type(target)
    _up_img, up_tgt = data.RandomScale((2.0, 2.0))(image, target)
    assert torch.equal(up_tgt, target.repeat_interleave(2, 0).repeat_interleave(2, 1))
    # nearest-exact (pixel centres), on uint8 masks too: x1.5 of [a, b] is [a, a, b] then [.., b]
    mask = tv_tensors.Mask(torch.tensor([[1, 2]], dtype=torch.uint8).repeat(2, 1))
    _, out = data.RandomScale((1.5, 1.5))(tv_tensors.Image(torch.zeros(3, 2, 2)), mask)
    assert out.dtype == torch.uint8 and out[0].tolist() == [1, 2, 2]
    torch.manual_seed(0)
    sizes = {data.RandomScale()(image, target)[1].shape[0] for _ in range(30)}
    assert min(sizes) >= 5 and max(sizes) <= 20 and len(sizes) > 3


def test_transforms_deterministic_under_manual_seed():
    image, target = _coded_pair(12, 14)
    t = train_transform(8)
    torch.manual_seed(7)
    a = [t(image, target) for _ in range(5)]
    torch.manual_seed(7)
    b = [t(image, target) for _ in range(5)]
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(ta, tb)
    torch.manual_seed(8)
    c = [t(image, target) for _ in range(5)]
    assert any(not torch.equal(ta, tc) for (_, ta), (_, tc) in zip(a, c, strict=True))


def test_dataset_transforms_are_reproducible(voc):
    ds = build_dataset(voc, "train", crop_size=16, train=True)
    torch.manual_seed(0)
    a = ds[1]
    torch.manual_seed(0)
    b = ds[1]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])


def test_eval_transforms():
    image, target = _coded_pair(5, 7)
    out = eval_transform(None)(image, target)
    assert torch.equal(out[0], image) and torch.equal(out[1], target)
    _img, tgt = eval_transform((3, 9))(image, target)  # crop rows, pad columns
    assert tgt.shape == (3, 9)
    assert torch.equal(tgt[:, :7], target[1:4]) and torch.all(tgt[:, 7:] == 255)
    _img, tgt = eval_transform(None, pad_to_multiple=4)(image, target)
    assert tgt.shape == (8, 8) and torch.equal(tgt[:5, :7], target)
    assert torch.all(tgt[5:] == 255) and torch.all(tgt[:, 7:] == 255)
    _ds_img, ds_tgt = eval_transform(4)(
        image, target
    )  # v2.CenterCrop rounds the offsets (0.5, 1.5) half-even
    assert torch.equal(ds_tgt, target[0:4, 2:6])


def test_full_size_eval_dataset(voc):
    ds = build_dataset(voc, "val")
    assert ds[0]["target"].shape == SIZE
    ds = build_dataset(voc, "val", crop_size=24)
    assert ds[0]["target"].shape == (24, 24)


@pytest.mark.parametrize(
    "kwargs, rows, cols",
    [
        ({}, slice(0, 32), slice(0, 48)),  # the full image: no padding
        ({"pad_to_multiple": 20}, slice(0, 32), slice(0, 48)),  # padded to 40 x 60
        ({"crop_size": (40, 40)}, slice(0, 32), slice(0, 40)),  # rows padded, columns cropped (centre: 4..44)
    ],
)
def test_eval_samples_mark_the_images_own_pixels(voc, kwargs, rows, cols):
    """Evaluation samples carry ``region``: True on the image's pixels, False on the padding (whose label is
    255, like VOC's void band, which the metrics must tell apart); training samples carry none."""
    sample = build_dataset(voc, "val", **kwargs)[0]
    region, target = sample["region"], sample["target"]
    assert region.dtype == torch.bool and region.shape == target.shape
    expected = torch.zeros_like(region)
    expected[rows, cols] = True
    assert torch.equal(region, expected)
    assert torch.all(target[~region] == IGNORE_INDEX)
    full = build_dataset(voc, "val")[0]["target"]
    assert torch.equal(
        target[region].view(rows.stop - rows.start, -1), full[:, 4:44] if "crop_size" in kwargs else full
    )
    assert "region" not in build_dataset(voc, "train", crop_size=40, train=True)[0]


def test_a_region_needs_a_transform_that_moves_every_mask(voc):
    with pytest.raises(
        TypeError, match=r"with_region needs a torchvision\.transforms\.v2 transform.* got transform function"
    ):
        VOCSegmentation(voc, "val", transform=lambda image, target: (image, target), with_region=True)
    sample = VOCSegmentation(voc, "val", with_region=True)[0]  # no transform: every pixel is the image's
    assert sample["region"].all() and sample["region"].shape == SIZE


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: data.RandomScale((0.0, 1.0)), ValueError, "scale"),
        (lambda: data.RandomScale((2.0, 1.0)), ValueError, "scale"),
        (lambda: data.RandomScale((1.0, float("inf"))), ValueError, "scale"),
        # not a pair of numbers: Python's unpacking and float() errors named no argument (before)
        (lambda: data.RandomScale((0.5, 1.0, 2.0)), ValueError, r"pair .* got \(0\.5, 1\.0, 2"),
        (lambda: data.RandomScale((0.5,)), ValueError, r"scale must be a pair .* got \(0\.5,\)"),
        (lambda: data.RandomScale(2.0), ValueError, "scale must be a pair .* got 2.0"),
        (lambda: data.RandomScale(None), ValueError, "scale must be a pair .* got None"),
        (lambda: data.RandomScale("12"), ValueError, "scale must be a pair .* got '12'"),
        (lambda: data.RandomScale((0.5, "x")), ValueError, r"scale must be a pair .* got \(0\.5, 'x'\)"),
        (lambda: data.RandomScale((True, 2.0)), ValueError, r"scale must be a pair .* got \(True, 2\.0\)"),
        (lambda: train_transform(8, scale=(1, 2, 3)), ValueError, r"scale must be a pair .* got \(1, 2, 3\)"),
        (lambda: data.PadIfSmaller(0), ValueError, "size"),
        (lambda: data.PadIfSmaller((3, 4, 5)), ValueError, "size"),
        (lambda: data.PadToMultiple(0), ValueError, "multiple"),
        (lambda: data.PadToMultiple(True), ValueError, "multiple must be an int >= 1, got True"),
        (lambda: train_transform((3, 0)), ValueError, "crop_size"),
        (lambda: train_transform(True), ValueError, "crop_size must be a positive int .* got True"),
        (lambda: eval_transform((2, 2.0)), ValueError, r"crop_size must be .* got \(2, 2.0\)"),
        (lambda: eval_transform("ab"), ValueError, "crop_size must be .* got 'ab'"),
        # the caller's argument, not PadToMultiple's "multiple"
        (
            lambda: eval_transform(pad_to_multiple=0),
            ValueError,
            "^pad_to_multiple must be an int >= 1, got 0$",
        ),
    ],
)
def test_bad_transform_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_sizes_of_any_integer_type():
    """A NumPy integer is a size (before: ``TypeError: 'numpy.int64' object is not iterable``); a bool is not
    (before: ``True`` was a crop of 1 pixel)."""
    image, target = _coded_pair(5, 7)
    for size in (np.int64(4), (np.int32(4), 4)):
        assert eval_transform(size)(image, target)[1].shape == (4, 4)


def test_build_dataset_train_needs_crop(voc):
    with pytest.raises(ValueError, match="crop_size"):
        build_dataset(voc, "train", train=True)


def test_build_dataset_refuses_an_eval_only_padding_when_training(voc):
    """``pad_to_multiple`` is applied by the eval transform only: with ``train=True`` it was dropped silently
    (crops of 15 x 15 came out where 16 x 16 was asked for)."""
    with pytest.raises(ValueError, match=r"train=True\) got pad_to_multiple=16: it applies to evaluation"):
        build_dataset(voc, "train", crop_size=15, train=True, pad_to_multiple=16)
    assert build_dataset(voc, "val", crop_size=15, pad_to_multiple=16)[0]["target"].shape == (16, 16)


def test_ensure_synthetic_voc(tmp_path, monkeypatch):
    root = ensure_synthetic_voc(tmp_path / "x", num_train=2, num_val=1, image_size=SIZE)
    assert len(VOCSegmentation(root, "train")) == 2
    monkeypatch.setattr(data, "DEFAULT_CACHE", tmp_path / "cache")
    root = ensure_synthetic_voc(num_train=2, num_val=1, image_size=SIZE, sbd=False)
    assert root == tmp_path / "cache" / "synthetic_voc" and (root / "JPEGImages").is_dir()


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_or_unset_cache_variable_is_the_default_cache_not_the_current_folder(tmp_path, value):
    """``TRANSINIT_CACHE=`` (e.g. set from an unset shell variable) made the cache ``Path("")``, the current
    folder: the demo wrote ``synthetic_voc/`` and ``demo/`` wherever it was started."""
    import subprocess
    import sys

    from tests.examples.helpers import ROOT, script_env

    env = {**script_env(), "HOME": str(tmp_path)}
    env.pop("TRANSINIT_CACHE", None)
    if value is not None:
        env["TRANSINIT_CACHE"] = value
    code = "from examples.voc_joint import data; print(data.DEFAULT_CACHE)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(tmp_path / ".cache" / "transinit")


# ---------------------------------------------------------------- documented errors name the file


def test_missing_root_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="JPEGImages") as info:
        VOCSegmentation(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_missing_mask_folder(voc_copy):
    shutil.rmtree(voc_copy / "SegmentationClass")
    with pytest.raises(FileNotFoundError, match="SegmentationClass") as info:
        VOCSegmentation(voc_copy, "train")
    assert str(voc_copy / "SegmentationClass") in str(info.value)
    shutil.rmtree(voc_copy / "SegmentationClassAug")
    with pytest.raises(FileNotFoundError, match="SegmentationClassAug") as info:
        VOCSegmentation(voc_copy, "train", sbd=True)
    assert "python examples/voc_joint/sbd.py --voc-root" in str(info.value)  # how to build it
    with pytest.raises(FileNotFoundError) as info:
        VOCSegmentation(voc_copy, "train", sbd=True, mask_dir="MyMasks")
    assert "sbd.py" not in str(info.value)  # a folder of the user's naming: sbd.py does not write it


def test_missing_list_file(voc_copy):
    with pytest.raises(FileNotFoundError, match="available splits: \\['train', 'trainval', 'val'\\]") as info:
        VOCSegmentation(voc_copy, "test")
    assert str(voc_copy / "ImageSets" / "Segmentation" / "test.txt") in str(info.value)
    shutil.rmtree(voc_copy / "ImageSets" / "SegmentationAug")
    with pytest.raises(FileNotFoundError, match="SegmentationAug") as info:
        VOCSegmentation(voc_copy, "train", sbd=True)
    assert "examples/voc_joint/sbd.py writes ImageSets/SegmentationAug" in str(info.value)


def test_empty_list_file(voc_copy):
    (voc_copy / "ImageSets" / "Segmentation" / "train.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="is empty") as info:
        VOCSegmentation(voc_copy, "train")
    assert "train.txt" in str(info.value)


def test_missing_image_and_mask_files(voc_copy):
    ds = VOCSegmentation(voc_copy, "train")
    ds.image_path(0).unlink()
    with pytest.raises(FileNotFoundError, match="image file not found") as info:
        ds[0]
    assert str(ds.image_path(0)) in str(info.value)
    ds.mask_path(1).unlink()
    with pytest.raises(FileNotFoundError, match="mask file not found") as info:
        ds[1]
    assert str(ds.mask_path(1)) in str(info.value)


def test_unreadable_image_and_mask(voc_copy):
    ds = VOCSegmentation(voc_copy, "train")
    ds.image_path(0).write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="cannot read image file") as info:
        ds[0]
    assert str(ds.image_path(0)) in str(info.value)
    ds.mask_path(1).write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="cannot read mask file") as info:
        ds[1]
    assert str(ds.mask_path(1)) in str(info.value)


def _damaged_palette_bmp(shape: tuple[int, int]) -> bytes:
    """A palette BMP whose header claims 407 colours: PIL opens it, and raises ValueError decoding it."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros(shape, np.uint8)).save(buffer, format="BMP")
    data = bytearray(buffer.getvalue())
    data[46:50] = (407).to_bytes(4, "little")  # biClrUsed
    return bytes(data)


def test_a_damaged_file_that_pil_fails_on_with_a_value_error_names_the_file(voc_copy):
    """PIL raises ValueError (and TypeError, struct.error, ...) on some damaged files, opening a PGM whose
    size is no number, decoding a BMP of too many palette colours: they escaped as themselves, without the
    file's name, from the header pass (a traceback of train.py or evaluate.py) or from a DataLoader worker."""
    ds = VOCSegmentation(voc_copy, "train")
    ds.image_path(0).write_bytes(b"P5\nx2 24\n255\n" + bytes(48))  # PIL: invalid literal for int()
    problems = ds.header_problems(0)
    assert len(problems) == 1, problems
    assert f"cannot read image file '{ds.image_path(0)}': invalid literal" in problems[0], problems
    with pytest.raises(DataError, match=r"cannot read image file .*: invalid literal for int\(\)") as info:
        ds[0]
    assert str(ds.image_path(0)) in str(info.value)
    ds.mask_path(1).write_bytes(_damaged_palette_bmp(SIZE))  # a palette BMP: its header passes
    assert ds.header_problems(1) == []
    with pytest.raises(DataError, match=r"cannot read mask file .*: invalid palette size") as info:
        ds[1]
    assert str(ds.mask_path(1)) in str(info.value)


def test_rgb_mask_is_rejected(voc_copy):
    ds = VOCSegmentation(voc_copy, "train")
    Image.new("RGB", (SIZE[1], SIZE[0])).save(ds.mask_path(0))
    with pytest.raises(ValueError, match="mode 'RGB'") as info:
        ds[0]
    assert str(ds.mask_path(0)) in str(info.value)


def test_mask_size_differs_from_image(voc_copy):
    ds = VOCSegmentation(voc_copy, "train")
    m = Image.fromarray(np.zeros((SIZE[0], SIZE[1] + 1), np.uint8))
    m.putpalette(voc_palette())
    m.save(ds.mask_path(2))
    with pytest.raises(ValueError, match=r"32x49 .* is 32x48") as info:
        ds[2]
    assert str(ds.mask_path(2)) in str(info.value) and str(ds.image_path(2)) in str(info.value)


@pytest.mark.parametrize("sbd", [False, True])
def test_label_values_outside_range(voc_copy, sbd):
    ds = VOCSegmentation(voc_copy, "train", sbd=sbd)
    arr = np.zeros(SIZE, np.uint8)
    arr[0, :3] = [21, 77, 254]
    arr[1, 0] = 255
    m = Image.fromarray(arr)
    if not sbd:
        m.putpalette(voc_palette())
    m.save(ds.mask_path(0))
    with pytest.raises(ValueError, match=r"outside \{0\.\.20, 255\}: 21, 77, 254 \(3 pixels\)") as info:
        ds[0]
    assert str(ds.mask_path(0)) in str(info.value)


def test_label_check_follows_num_classes(voc_copy):
    """Labels are checked against ``num_classes`` (``--num-classes``), also through build_dataset; 1..255."""
    ds = build_dataset(voc_copy, "train", num_classes=5)
    arr = np.zeros(SIZE, np.uint8)
    arr[0, :3] = [4, 5, 255]
    m = Image.fromarray(arr)
    m.putpalette(voc_palette())
    m.save(ds.mask_path(0))
    with pytest.raises(ValueError, match=r"outside \{0\.\.4, 255\}: 5 \(1 pixel\)"):
        ds[0]
    assert set(build_dataset(voc_copy, "train", num_classes=6)[0]["target"].unique().tolist()) == {
        0,
        4,
        5,
        255,
    }
    assert VOCSegmentation(voc_copy, "train", num_classes=255)[0]["target"].shape == SIZE
    for bad in (0, 256):
        with pytest.raises(ValueError, match=r"num_classes must be in 1\.\.255"):
            VOCSegmentation(voc_copy, "train", num_classes=bad)


def test_seeded_dataloader_workers_are_reproducible(voc):
    ds = build_dataset(voc, "train", crop_size=16, train=True)

    def run(seed):
        loader = DataLoader(
            ds, batch_size=2, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(seed)
        )
        return [(b["name"], b["target"]) for b in loader]

    a, b, c = run(0), run(0), run(1)
    assert all(na == nb and torch.equal(ta, tb) for (na, ta), (nb, tb) in zip(a, b, strict=True))
    assert any(na != nc or not torch.equal(ta, tc) for (na, ta), (nc, tc) in zip(a, c, strict=True))


@settings(max_examples=budget(30))
@given(
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(1, 10),
    st.integers(1, 10),
    st.floats(0.5, 2.0),
    st.integers(0, 2**31 - 1),
)
def test_train_transform_properties(h, w, ch, cw, s, seed):
    torch.manual_seed(seed)
    target = tv_tensors.Mask(torch.randint(0, NUM_CLASSES, (h, w), dtype=torch.uint8))
    image = tv_tensors.Image(torch.rand(3, h, w))
    img, tgt = train_transform((ch, cw), scale=(s, s))(image, target)
    assert img.shape == (3, ch, cw) and tgt.shape == (ch, cw) and tgt.dtype == torch.uint8
    assert set(tgt.unique().tolist()) <= set(target.unique().tolist()) | {255}
    assert torch.all(img[:, tgt == 255] == 0)  # only padding is 255 here, and padding is black
    assert img.min() >= 0 and img.max() <= 1


# ---------------------------------------------------------------- untrusted input: paths and sizes


@pytest.mark.parametrize("entry", ["../../etc/passwd", "/etc/passwd", "sub/../../x", "..", "sub/a\0b"])
def test_list_entries_must_stay_inside_the_data_root(voc_copy, entry):
    lst = voc_copy / "ImageSets" / "Segmentation" / "train.txt"
    lst.write_text(f"synth_000000\n{entry}\n")
    with pytest.raises(ValueError, match=r"train\.txt' line 2: entry .* points outside the data folders"):
        VOCSegmentation(voc_copy, "train")


def test_entries_in_subfolders_inside_the_root_are_fine(voc_copy):
    (voc_copy / "JPEGImages" / "sub").mkdir()
    (voc_copy / "SegmentationClass" / "sub").mkdir()
    shutil.copy(voc_copy / "JPEGImages" / "synth_000000.jpg", voc_copy / "JPEGImages" / "sub" / "a.jpg")
    shutil.copy(
        voc_copy / "SegmentationClass" / "synth_000000.png", voc_copy / "SegmentationClass" / "sub" / "a.png"
    )
    (voc_copy / "ImageSets" / "Segmentation" / "train.txt").write_text("sub/a\n")
    assert VOCSegmentation(voc_copy, "train")[0]["target"].shape == SIZE


def test_list_entries_are_the_first_word_of_each_non_empty_line(voc_copy):
    """As in VOC's ImageSets/Main lists (``name  1``): extra columns and blank lines are ignored."""
    (voc_copy / "ImageSets" / "Segmentation" / "train.txt").write_text(
        "synth_000001  1\n\n  \nsynth_000000 -1\n"
    )
    ds = VOCSegmentation(voc_copy, "train")
    assert ds.names == ["synth_000001", "synth_000000"] and ds[0]["name"] == "synth_000001"


def test_pixel_limit_refuses_large_images_and_masks_before_decoding(voc_copy, monkeypatch):
    limit = SIZE[0] * SIZE[1] - 1
    ds = VOCSegmentation(voc_copy, "train", max_pixels=limit)
    big = Image.fromarray(np.zeros((40, 64), np.uint8))  # mask larger than the limit (and than its image)
    big.save(ds.mask_path(1))

    refused = {ds.image_path(0), ds.mask_path(1)}
    load = ImageFile.ImageFile.load

    def guarded_load(im):  # PIL decodes in load(), lazily
        if Path(im.filename) in refused:
            raise AssertionError(f"decoded {im.filename}, which is above the limit")
        return load(im)

    monkeypatch.setattr(ImageFile.ImageFile, "load", guarded_load)
    with pytest.raises(
        ValueError, match=r"image file '.*synth_000000\.jpg' is 48x32 = 1536 pixels, more than"
    ) as e:
        ds[0]
    assert "decompression-bomb guard" in str(e.value)
    ds = VOCSegmentation(voc_copy, "train", max_pixels=40 * 64 - 1)
    with pytest.raises(ValueError, match=r"mask file '.*synth_000001\.png' is 64x40 = 2560 pixels"):
        ds[1]
    monkeypatch.undo()
    assert VOCSegmentation(voc_copy, "train", max_pixels=SIZE[0] * SIZE[1])[0]["image"].shape[-2:] == SIZE
    with pytest.raises(ValueError, match="max_pixels must be >= 1"):
        VOCSegmentation(voc_copy, "train", max_pixels=0)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_read_image_gives_contiguous_rgb_of_any_pil_mode(tmp_path, mode):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    path = tmp_path / "x.png"  # lossless: the decoded pixels are PIL's conversion to RGB
    im.save(path)
    out = data._read_image(path)
    assert out.dtype == torch.uint8 and out.shape == (3, 5, 7) and out.is_contiguous()
    assert torch.equal(out, torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))


def test_pil_decompression_bomb_error_names_the_file(voc_copy, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses > 2x this on open
    ds = VOCSegmentation(voc_copy, "train")
    with pytest.raises(ValueError, match=r"image file '.*synth_000000\.jpg' refused as a decompression bomb"):
        ds[0]


def test_list_entries_in_the_path_form_of_the_trainaug_lists(voc_copy):
    """The trainaug lists most often distributed with SegmentationClassAug (DeepLab ports) have two paths per
    line, ``/JPEGImages/<name>.jpg /SegmentationClassAug/<name>.png``: the name is taken from the image path
    (it was refused as an absolute path); paths that leave the data folders are still refused."""
    lst = voc_copy / "ImageSets" / "Segmentation" / "train.txt"
    lst.write_text(
        "/JPEGImages/synth_000001.jpg /SegmentationClassAug/synth_000001.png\n"
        "JPEGImages/synth_000000.jpg SegmentationClassAug/synth_000000.png\n"
    )
    ds = VOCSegmentation(voc_copy, "train")
    assert ds.names == ["synth_000001", "synth_000000"] and ds[0]["name"] == "synth_000001"
    lst.write_text("/JPEGImages/../../x.jpg /SegmentationClassAug/x.png\n")
    with pytest.raises(ValueError, match=r"train\.txt' line 1: entry .* points outside the data folders"):
        VOCSegmentation(voc_copy, "train")


def test_list_files_with_a_byte_order_mark_and_crlf_lines(voc_copy):
    """A list saved by a Windows editor starts with a UTF-8 byte order mark and ends its lines with CRLF: the
    mark was read as part of the first name ('image file not found: .../\\ufeffsynth_000001.jpg', with an
    invisible character in the path). A list that is no UTF-8 text is an error naming the file."""
    (voc_copy / "ImageSets" / "Segmentation" / "train.txt").write_bytes(
        b"\xef\xbb\xbfsynth_000001\r\nsynth_000000\r\n\r\n"
    )
    ds = VOCSegmentation(voc_copy, "train")
    assert ds.names == ["synth_000001", "synth_000000"] and ds[0]["name"] == "synth_000001"
    (voc_copy / "ImageSets" / "Segmentation" / "train.txt").write_bytes(b"synth_\xff000001\n")
    with pytest.raises(ValueError, match=r"train\.txt' is not UTF-8 text"):
        VOCSegmentation(voc_copy, "train")


def test_a_byte_order_mark_inside_a_list_is_no_part_of_a_name(voc_copy):
    """Two lists saved with a byte order mark and joined with ``cat``: the second mark was read as part of a
    name, and the error showed a path that exists ('.../\ufeffsynth_000000.jpg', the character invisible)."""
    (voc_copy / "ImageSets" / "Segmentation" / "train.txt").write_bytes(
        b"\xef\xbb\xbfsynth_000001\r\n\xef\xbb\xbfsynth_000000\r\n"
    )
    ds = VOCSegmentation(voc_copy, "train")
    assert ds.names == ["synth_000001", "synth_000000"] and ds[1]["name"] == "synth_000000"


def test_a_list_naming_an_image_twice_is_refused(voc_copy):
    """A list that names an image twice (lists concatenated by hand) would train on it twice per epoch or
    count it twice in a score: refused, naming the file and the repeated names."""
    lst = voc_copy / "ImageSets" / "Segmentation" / "train.txt"
    names = lst.read_text().split()
    lst.write_text("\n".join([*names, names[1], names[0], names[1]]) + "\n")
    repeated = rf"train\.txt' names 2 images more than once: '{names[0]}', '{names[1]}'"
    with pytest.raises(data.DataError, match=repeated):
        VOCSegmentation(voc_copy, "train")


def test_a_list_entry_written_with_dot_slash_is_the_same_image(voc_copy, monkeypatch):
    """``./name`` (a list made from ``find .``) opens the image ``name`` opens, but was kept as written: the
    repeat check let ``name`` and ``./name`` in one list through (the image sampled twice per epoch), and a
    validation image listed as ``./name`` in the training list passed the overlap check. Names are read in
    their plain form now."""
    from examples.voc_joint.train_data import val_overlap_error

    lst = voc_copy / "ImageSets" / "Segmentation" / "train.txt"
    names = lst.read_text().split()
    lst.write_text(f"./{names[0]}\n/JPEGImages/./{names[1]}.jpg\n{names[2]}\n")
    assert data.read_list(lst) == names[:3]
    lst.write_text(f"{names[0]}\n./{names[0]}\n")
    with pytest.raises(data.DataError, match=rf"names 1 image more than once: '{names[0]}'"):
        VOCSegmentation(voc_copy, "train")
    val = (voc_copy / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    lst.write_text(f"{names[0]}\n./{val[0]}\n")
    args = argparse.Namespace(sbd=False, eval=False, val_split="val", train_split="train")
    error = val_overlap_error(data.read_list(lst), voc_copy, lst, args)
    assert error is not None and "holds 1 image of the validation lists" in error, error
    from pathlib import PureWindowsPath

    monkeypatch.setattr(data, "PurePath", PureWindowsPath)  # the paths of Windows: "\\" separates too
    lst.write_text(f".\\{names[0]}\nsub\\.\\{names[1]}\n")
    assert data.read_list(lst) == [names[0], f"sub/{names[1]}"]


def test_16_bit_grayscale_images_are_scaled_to_8_bits(tmp_path):
    """A 16-bit grayscale PNG (PIL mode 'I;16') was converted to RGB by clipping at 255, so nearly every pixel
    of a real 16-bit image came out white; it is scaled to 8 bits (value / 257, rounded) like a 16-bit RGB
    PNG, which PIL reduces to 8 bits itself."""
    values = np.array([[0, 128, 129, 257, 1000], [32767, 40000, 65278, 65279, 65535]], np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    # Pillow 10.3 opens a 16-bit grayscale PNG as 'I;16', older releases (the floor, 10.0) as 'I': the file
    # takes the path of the Pillow installed, the synthetic image below the 'I' one on every release
    pillow = tuple(int(part) for part in PIL.__version__.split(".")[:2])
    with Image.open(path) as im:
        assert im.mode == ("I;16" if pillow >= (10, 3) else "I"), (PIL.__version__, im.mode)
    out = data._read_image(path)
    expected = np.round(values / 257.0).astype(np.uint8)
    assert out.dtype == torch.uint8 and out.shape == (3, 2, 5)
    assert all(np.array_equal(out[c].numpy(), expected) for c in range(3)), out[0].tolist()
    older = Image.fromarray(values.astype(np.int32))  # mode 'I': how older Pillow versions open such a PNG
    older.format = "PNG"
    assert np.array_equal(data._to_rgb(older, path), np.repeat(expected[:, :, None], 3, axis=2))


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_images_of_unknown_range_are_refused(tmp_path, mode):
    """PIL's 32-bit modes have no fixed range (convert('RGB') clipped them at 255): refused, naming the file
    and the mode, instead of a white image."""
    path = tmp_path / "x.tif"
    Image.fromarray(np.full((3, 4), 1000, np.int32)).convert(mode).save(path)
    with pytest.raises(data.DataError, match=rf"image file '.*x\.tif' has PIL mode '{mode}'"):
        data._read_image(path)


def test_list_lines_starting_with_a_hash_are_comments(voc_copy):
    """A user's own split list often opens with a comment: '# my split' was read as an image named '#' and
    failed as 'image file not found: .../#.jpg'. Lines whose first word starts with '#' are skipped."""
    lst = voc_copy / "ImageSets" / "Segmentation" / "train.txt"
    lst.write_text("# my own split: two images\nsynth_000001\n  #synth_000002 (left out)\nsynth_000000  \n")
    ds = VOCSegmentation(voc_copy, "train")
    assert ds.names == ["synth_000001", "synth_000000"] and ds.missing_files() == []
    lst.write_text("# nothing but a comment\n")
    with pytest.raises(data.DataError, match=r"train\.txt' is empty"):
        VOCSegmentation(voc_copy, "train")


def test_a_missing_file_names_the_near_miss_in_its_folder(voc_copy):
    """Own data rarely has exactly VOC's names: PNG (or '.JPG', '.jpeg') images, a list giving the extension,
    names with spaces (only the first word of a line is read). The error said only 'image file not found:
    .../my.jpg'; it names the file found in its place and why it is not read, in the reader's error and in
    the list of missing files that train.py prints before a run."""
    lst = voc_copy / "ImageSets" / "Segmentation" / "train.txt"
    images, masks = voc_copy / "JPEGImages", voc_copy / "SegmentationClass"
    (images / "synth_000000.jpg").rename(images / "own_png.png")
    (images / "synth_000001.jpg").rename(images / "CAMERA.JPG")
    (images / "synth_000002.jpg").rename(images / "my image 01.jpg")
    (masks / "synth_000003.png").rename(masks / "synth_000003.PNG")
    lst.write_text("own_png\nCAMERA\nmy image 01\nsynth_000003\nsynth_000004.jpg\n")
    Image.new("RGB", (2, 2)).save(images / "synth_000004.jpg.png")  # a second near miss: one hint only
    ds = VOCSegmentation(voc_copy, "train")
    expected = {
        "own_png.jpg": r"found 'own_png\.png' in its folder: images are read as '<name>\.jpg'",
        "CAMERA.jpg": r"found 'CAMERA\.JPG' in its folder: images are read as '<name>\.jpg'",
        "my.jpg": r"found 'my image 01\.jpg' in its folder: a list entry is the first word of its line",
        "synth_000003.png": r"found 'synth_000003\.PNG' in its folder: masks are read as '<name>\.png'",
        "synth_000004.jpg.jpg": r"found 'synth_000004\.jpg' in its folder: list the names without '\.jpg'",
    }
    for index, (file, hint) in enumerate(expected.items()):
        with pytest.raises(FileNotFoundError, match=rf"file not found: '.*{file}' \({hint}") as info:
            ds.load(index)
        assert str(info.value).count("found '") == 1, info.value
    assert [p.name for p in ds.missing_files()] == [
        "own_png.jpg", "own_png.png", "CAMERA.jpg", "CAMERA.png", "my.jpg", "my.png", "synth_000003.png",
        "synth_000004.jpg.jpg", "synth_000004.jpg.png",
    ]  # fmt: skip
    assert data.missing_file_hint(masks / "own_png.png") == ""  # nothing near it
    nfd = unicodedata.normalize("NFD", "café")  # as macOS writes the name; typed lists hold the NFC form
    shutil.copy(images / "synth_000005.jpg", images / f"{nfd}.jpg")
    with pytest.raises(
        FileNotFoundError,
        match=r"found 'cafe\u0301\.jpg' in its folder: the same name in "
        r"another Unicode normal form \(NFD\)",
    ):
        data._read_image(images / f"{unicodedata.normalize('NFC', 'café')}.jpg")
    (images / "linked.jpg").symlink_to(voc_copy / "moved" / "linked.jpg")  # a link whose target has moved
    hint = r"\(a broken link to '.*moved/linked\.jpg'\)$"
    with pytest.raises(FileNotFoundError, match=rf"image file not found: '.*linked\.jpg' {hint}"):
        data._read_image(images / "linked.jpg")


def test_a_mask_folder_extracted_one_level_too_deep_is_named(voc_copy):
    """A pre-built SegmentationClassAug archive unzipped inside a folder of its own name puts every mask in
    SegmentationClassAug/SegmentationClassAug/: each was 'not found', with no hint."""
    masks = voc_copy / "SegmentationClass"
    (voc_copy / "nested").mkdir()
    masks.rename(voc_copy / "nested" / "SegmentationClass")
    (voc_copy / "nested").rename(masks)
    ds = VOCSegmentation(voc_copy, "train")
    with pytest.raises(FileNotFoundError) as info:
        ds.load(0)
    assert (
        f"(found 'SegmentationClass/{ds.names[0]}.png' in its folder: the files lie one level too deep"
        in (str(info.value))
    ), info.value
    assert f"move them up into '{masks}'" in str(info.value), info.value


def test_a_mask_drawn_on_the_exif_rotated_view_is_refused_naming_the_orientation(voc_copy):
    """The reader takes an image's pixels as stored and ignores its EXIF orientation (VOC's JPEGs carry none;
    masks align with the stored pixels). A photo tagged 'rotate 90' whose mask was drawn on the rotated view
    (as most viewers and annotation tools show it) has the transposed size: the size error says why."""
    ds = VOCSegmentation(voc_copy, "train")
    with Image.open(ds.image_path(0)) as im:
        rgb = im.convert("RGB")
    exif = rgb.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    rgb.save(ds.image_path(0), exif=exif.tobytes())
    with Image.open(ds.image_path(0)) as im:  # the stored pixels, not turned
        assert torch.equal(ds.load(0)[0], torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1))
    mask = Image.fromarray(np.zeros((SIZE[1], SIZE[0]), np.uint8))
    mask.save(ds.mask_path(0))
    with pytest.raises(
        data.DataError,
        match=r"is 48x32 \(HxW\) but its image .* is 32x48: the image has EXIF "
        r"orientation 6 \(shown rotated by 90 degrees\)",
    ) as info:
        ds[0]
    assert "PIL.ImageOps.exif_transpose" in str(info.value)
    exif[0x0112] = 1  # upright: the plain size error
    rgb.save(ds.image_path(0), exif=exif.tobytes())
    with pytest.raises(data.DataError, match=r"is 32x48$"):
        ds[0]


def test_a_jpeg_mask_under_a_png_name_is_refused(voc_copy):
    """A mask saved as JPEG and renamed '.png' (PIL reads by content) is a grayscale image whose labels the
    lossy compression changed along every edge: it was read as labels (here 15 next to 0 became 1..14, all
    valid classes, silently). Refused, naming the file and the format."""
    ds = VOCSegmentation(voc_copy, "train")
    labels = np.zeros(SIZE, np.uint8)
    labels[9:27, 10:40] = 15
    labels[17:22, 19:29] = 7
    Image.fromarray(labels).save(ds.mask_path(0), format="JPEG", quality=90)
    with Image.open(ds.mask_path(0)) as im:  # what was read as labels: wrong, and all valid classes
        read = np.asarray(im)
        assert im.mode == "L" and (read != labels).sum() > 100 and read.max() <= 20
    with pytest.raises(data.DataError, match=r"mask file '.*synth_000000\.png' is a JPEG file \(lossy"):
        ds[0]


def test_a_pixel_limit_above_pils_own_says_that_pil_refuses_first(voc_copy, monkeypatch):
    """PIL refuses, on opening, images above twice its ``Image.MAX_IMAGE_PIXELS`` (178956970 by default),
    whatever ``max_pixels`` (``--max-image-pixels``) allows: a 15000x12000 aerial tile under
    ``--max-image-pixels 200000000`` was refused as 'a decompression bomb' with PIL's limit only. The message
    says where that limit comes from; within ``max_pixels`` of PIL's own, the plain message stays."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses > 200 pixels on open; the image: 1536
    ds = VOCSegmentation(voc_copy, "train", max_pixels=10_000)
    with pytest.raises(
        data.DataError,
        match=r"refused as a decompression bomb: .*PIL refuses more than 200 "
        r"pixels on its own \(twice PIL\.Image\.MAX_IMAGE_PIXELS\), whatever max_pixels",
    ):
        ds[0]
    with pytest.raises(data.DataError, match=r"refused as a decompression bomb: [^;]*$"):
        VOCSegmentation(voc_copy, "train", max_pixels=200)[0]


def test_an_rgb_mask_in_voc_colours_says_so(voc_copy):
    """A VOC palette mask written back as RGB (OpenCV reads palette PNGs as colour images) is refused; when
    all its colours are VOC palette colours the message says so and how to map them back, else it asks for
    the colour-to-id mapping of a colour-coded mask."""
    ds = VOCSegmentation(voc_copy, "train")
    with Image.open(ds.mask_path(0)) as im:
        im.convert("RGB").save(ds.mask_path(0))
        colours = len(np.unique(np.asarray(im)))
    voc_colours = rf"its {colours} colours are all colours of the VOC palette \(a palette mask saved as RGB"
    with pytest.raises(data.DataError, match=rf"has PIL mode 'RGB': .*; {voc_colours}"):
        ds[0]
    Image.new("RGB", (SIZE[1], SIZE[0]), (10, 200, 30)).save(ds.mask_path(0))
    with pytest.raises(
        data.DataError, match=r"mode 'RGB': .*; its 1 colour is not in the VOC palette: a colour"
    ):
        ds[0]
    Image.new("RGB", (SIZE[1], SIZE[0]), (0, 0, 0)).save(ds.mask_path(0))  # all background, saved as RGB
    with pytest.raises(
        data.DataError, match=r"; its 1 colour is a colour of the VOC palette \(a palette mask"
    ):
        ds[0]


def test_an_empty_image_or_mask_file_says_it_is_empty(voc_copy):
    """A 0-byte file (an interrupted copy or download) was 'cannot identify image file': it says so."""
    ds = VOCSegmentation(voc_copy, "train")
    ds.image_path(0).write_bytes(b"")
    with pytest.raises(data.DataError, match=r"image file '.*synth_000000\.jpg' is empty \(0 bytes"):
        ds[0]
    ds.mask_path(1).write_bytes(b"")
    with pytest.raises(data.DataError, match=r"mask file '.*synth_000001\.png' is empty \(0 bytes"):
        ds[1]


def test_a_scale_pair_of_any_number_type_is_accepted():
    """The check of ``scale`` refuses text and bools, not NumPy numbers or arrays (float() of each)."""
    for scale in (np.array([0.5, 2.0]), (np.float32(0.5), 2), [1, 1]):
        assert data.RandomScale(scale).scale == (float(scale[0]), float(scale[1]))


def test_random_scale_rounds_each_side_to_the_nearest_pixel_and_keeps_one():
    """The new size is ``round(side * factor)`` (not truncated), at least 1: x1.9 of 3 x 5 is 6 x 10 (5.7 and
    9.5, which rounds half-even); x0.5 of 1 x 1 stays 1 x 1 (round gives 0)."""
    for (h, w), s, want in (((3, 5), 1.9, (6, 10)), ((1, 1), 0.5, (1, 1)), ((7, 3), 0.3, (2, 1))):
        image = tv_tensors.Image(torch.zeros(3, h, w))
        mask = tv_tensors.Mask(torch.zeros(h, w, dtype=torch.uint8))
        out_img, out_mask = data.RandomScale((s, s))(image, mask)
        assert tuple(out_img.shape) == (3, *want) and tuple(out_mask.shape) == want, (h, w, s)


def test_random_scale_resizes_images_bilinear_antialiased_and_clamped():
    """The image is resized as documented (bilinear, antialiased) and clamped to [0, 1]: the antialiased
    filter's float sums take a white image a little above 1 (1.0000001 on 13 x 17 at x0.5), out of the
    documented range of ``image``."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    gen = torch.Generator().manual_seed(0)
    image = tv_tensors.Image(torch.rand(3, 13, 17, generator=gen))
    mask = tv_tensors.Mask(torch.zeros(13, 17, dtype=torch.uint8))
    for s in (0.5, 1.5):
        out, _ = data.RandomScale((s, s))(image, mask)
        want = TF.resize(
            image, list(out.shape[-2:]), interpolation=InterpolationMode.BILINEAR, antialias=True
        )
        torch.testing.assert_close(out.as_subclass(torch.Tensor), want.as_subclass(torch.Tensor).clamp(0, 1))
    for h, w in ((13, 17), (31, 29), (7, 9)):
        white = tv_tensors.Image(torch.ones(3, h, w))
        for s in (0.5, 0.6, 0.75, 0.8, 0.9):
            out, _ = data.RandomScale((s, s))(white, tv_tensors.Mask(torch.zeros(h, w, dtype=torch.uint8)))
            assert out.max() <= 1 and out.min() >= 0, (h, w, s, out.max().item())


def test_pad_to_multiple_pads_each_side_to_its_own_multiple():
    """Rows and columns each go up to their own multiple: 5 x 9 with multiple 4 is 8 x 12 (the width padded
    from 9 to 12, not left at 9 by a target taken from the height)."""
    image, target = _coded_pair(5, 9)
    out_img, out_tgt = data.PadToMultiple(4)(image, target)
    assert out_img.shape == (3, 8, 12) and out_tgt.shape == (8, 12)
    assert torch.equal(out_tgt[:5, :9], target) and torch.all(out_tgt[5:] == 255)
    assert torch.all(out_tgt[:, 9:] == 255) and torch.all(out_img[:, :, 9:] == 0)
    _, tall = data.PadToMultiple(4)(*_coded_pair(9, 5))
    assert tall.shape == (12, 8)


def test_the_colour_note_of_an_rgb_mask_counts_every_colour_and_needs_all_in_the_palette(voc_copy):
    """The note on a refused RGB mask counts its distinct colours (VOC's (128, 0, 0) and (0, 128, 0) are two)
    and calls them VOC colours only when every one is: one colour outside the palette asks for the
    colour-to-id mapping of a colour-coded mask."""
    ds = VOCSegmentation(voc_copy, "train")
    rgb = np.zeros((*SIZE, 3), np.uint8)
    rgb[:, : SIZE[1] // 2] = (128, 0, 0)  # aeroplane
    rgb[:, SIZE[1] // 2 :] = (0, 128, 0)  # bicycle
    Image.fromarray(rgb).save(ds.mask_path(0))
    with pytest.raises(data.DataError, match=r"; its 2 colours are all colours of the VOC palette"):
        ds[0]
    rgb[0, 0] = (10, 200, 30)  # one pixel of no VOC colour
    Image.fromarray(rgb).save(ds.mask_path(0))
    with pytest.raises(data.DataError, match=r"; its 3 colours are not all in the VOC palette"):
        ds[0]


@pytest.mark.parametrize(
    "count, shown",
    [
        (1, "21"),
        (10, "21, 22, 23, 24, 25, 26, 27, 28, 29, 30"),
        (11, "21, 22, 23, 24, 25, 26, 27, 28, 29, 30, ..."),
    ],
)
def test_a_mask_error_shows_the_first_ten_bad_values(voc_copy, count, shown):
    """The message lists up to ten of the label values out of range, then ``...`` when there are more, and
    counts the bad pixels (``1 pixel``, ``10 pixels``)."""
    ds = VOCSegmentation(voc_copy, "train", sbd=True)
    arr = np.zeros(SIZE, np.uint8)
    arr[0, :count] = np.arange(21, 21 + count)
    Image.fromarray(arr).save(ds.mask_path(0))
    with pytest.raises(data.DataError) as info:
        ds[0]
    pixels = "1 pixel" if count == 1 else f"{count} pixels"
    assert str(info.value).endswith(f"outside {{0..20, 255}}: {shown} ({pixels})"), info.value


@pytest.mark.parametrize("orientation, hinted", [(5, True), (6, True), (7, True), (8, True), (3, False)])
def test_the_exif_note_needs_a_quarter_turn_and_the_transposed_size(voc_copy, orientation, hinted):
    """Orientations 5 to 8 turn the view by 90 degrees (3: by 180, the size stays): only they explain a
    transposed mask, and a mask of any other wrong size gets the plain size error, whatever the tag."""
    ds = VOCSegmentation(voc_copy, "train")
    with Image.open(ds.image_path(0)) as im:
        rgb = im.convert("RGB")
    exif = rgb.getexif()
    exif[0x0112] = orientation
    rgb.save(ds.image_path(0), exif=exif.tobytes())
    Image.fromarray(np.zeros((SIZE[1], SIZE[0]), np.uint8)).save(ds.mask_path(0))  # transposed
    with pytest.raises(data.DataError) as info:
        ds[0]
    assert (f"EXIF orientation {orientation}" in str(info.value)) == hinted, info.value
    Image.fromarray(np.zeros((SIZE[0] + 1, SIZE[1]), np.uint8)).save(ds.mask_path(0))  # another size
    with pytest.raises(data.DataError, match=r"is 33x48 \(HxW\) but its image .* is 32x48$"):
        ds[0]


def test_a_first_word_that_only_starts_like_an_image_path_is_a_name(voc_copy):
    """Only a whole first word ``[/]JPEGImages/<name>.jpg`` gives ``<name>``: ``JPEGImages/x.jpg.bak`` is a
    name of its own (read as a prefix, it was taken for ``x``)."""
    lst = voc_copy / "ImageSets" / "Segmentation" / "train.txt"
    lst.write_text("JPEGImages/synth_000001.jpg.bak\nJPEGImages/synth_000000.jpg\n")
    assert data.read_list(lst) == ["JPEGImages/synth_000001.jpg.bak", "synth_000000"]


def test_a_name_listed_with_an_upper_case_extension_is_named_as_the_near_miss(tmp_path):
    """A list giving the names with an upper-case extension (``IMG_01.JPG``, as cameras write them) reads
    ``IMG_01.JPG.jpg``: the hint names ``IMG_01.jpg`` and the extension to leave out, as for ``.jpg``."""
    (tmp_path / "IMG_01.jpg").write_bytes(b"x")
    hint = data.missing_file_hint(tmp_path / "IMG_01.JPG.jpg")
    assert hint == " (found 'IMG_01.jpg' in its folder: list the names without '.JPG')", hint


def _packed_rows(labels: np.ndarray, depth: int) -> list[bytes]:
    """Every row of ``labels`` packed at ``depth`` bits per sample, the first sample in the high bits of its
    byte and each row padded to whole bytes (as PNG and TIFF store them)."""
    per = 8 // depth
    rows = []
    for line in labels.tolist():
        row = line + [0] * (-len(line) % per)
        packed = []
        for k in range(0, len(row), per):
            byte = 0
            for v in row[k : k + per]:
                byte = (byte << depth) | v
            packed.append(byte)
        rows.append(bytes(packed))
    return rows


def _tiff(path: Path, entries: list[tuple[int, int, int]], pixels: bytes) -> None:
    """A one-strip little-endian TIFF of ``pixels`` with the tags ``(tag, type, value)`` of ``entries`` (type
    3: SHORT, 4: LONG), written by hand; the strip's offset (tag 273) and byte count (tag 279) are added."""
    import struct

    entries = sorted([*entries, (273, 4, 0), (279, 4, len(pixels))])
    offset = 8 + 2 + len(entries) * 12 + 4
    out = b"II*\0" + struct.pack("<IH", 8, len(entries))
    for tag, kind, entry in entries:
        value = offset if tag == 273 else entry
        packed_value = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + packed_value
    path.write_bytes(out + struct.pack("<I", 0) + pixels)


def _gray_png(path: Path, labels: np.ndarray, depth: int) -> None:
    """A grayscale PNG of ``depth`` bits per sample whose samples are ``labels`` (written by hand: no
    writer's scaling between the labels and the file)."""
    import struct
    import zlib

    raw = b"".join(b"\0" + row for row in _packed_rows(labels, depth))  # (filter type 0 before each row)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    h, w = labels.shape
    header = struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)  # colour type 0: grayscale
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.mark.parametrize("depth", [2, 4, 8])
def test_a_low_bit_grayscale_mask_is_read_as_its_stored_labels(voc_copy, depth):
    """PIL reads a grayscale PNG of 2 or 4 bits per sample as 8-bit intensities: a 4-bit mask's class 1 was
    read as 17 (sheep) and a 2-bit one's class 3 as 255 (ignored), with no error. The labels are the stored
    samples at every depth, for the data set and for sbd.py (which reads masks the same way)."""
    ds = VOCSegmentation(voc_copy, "train")
    top = min(2**depth - 1, 20)
    labels = (np.arange(SIZE[0] * SIZE[1]) % (top + 1)).reshape(SIZE).astype(np.uint8)
    _gray_png(ds.mask_path(0), labels, depth)
    with Image.open(ds.mask_path(0)) as im:
        # PIL's scaling below 8 bits
        assert im.mode == "L" and (np.asarray(im) == labels).all() == (depth == 8)
    assert ds.header_problems(0) == []
    np.testing.assert_array_equal(ds[0]["target"].numpy(), labels)
    np.testing.assert_array_equal(data._read_mask(ds.mask_path(0)), labels)


def _gray_tiff(
    path: Path, labels: np.ndarray, depth: int, min_is_white: bool, reversed_bits: bool = False
) -> None:
    """A grayscale TIFF of ``depth`` bits per sample whose samples are ``labels`` (written by hand),
    photometric MinIsWhite (0 shown as white) or MinIsBlack, the bits of each byte in reversed order
    (FillOrder 2) or not."""
    h, w = labels.shape
    pixels = b"".join(_packed_rows(labels, depth))
    if reversed_bits:
        pixels = bytes(int(f"{b:08b}"[::-1], 2) for b in pixels)
    entries = [(256, 3, w), (257, 3, h), (258, 3, depth), (259, 3, 1), (262, 3, 0 if min_is_white else 1),
               (266, 3, 2 if reversed_bits else 1), (277, 3, 1), (278, 3, h)]  # fmt: skip
    _tiff(path, entries, pixels)


@pytest.mark.parametrize("reversed_bits", [False, True])
@pytest.mark.parametrize("min_is_white", [False, True])
@pytest.mark.parametrize("depth", [2, 4, 8])
def test_a_grayscale_tiff_mask_is_read_as_its_stored_labels(tmp_path, depth, min_is_white, reversed_bits):
    """PIL reads by content: a TIFF under a ``.png`` name is read as its mask. Its low-bit samples came out
    scaled (class 1 as 17, sheep) and, stored with 0 as white (MinIsWhite), inverted (class 0 as 255,
    ignored), with the bits of each byte reversed (FillOrder 2) too: the labels are the stored samples. The
    one such TIFF PIL cannot decode (8 bits, MinIsWhite, FillOrder 2) is refused naming the file."""
    top = min(2**depth - 1, 20)
    labels = (np.arange(6 * 8) % (top + 1)).reshape(6, 8).astype(np.uint8)
    _gray_tiff(tmp_path / "m.png", labels, depth, min_is_white, reversed_bits)
    with Image.open(tmp_path / "m.png") as im:
        assert im.format == "TIFF" and im.mode == "L"
    if depth == 8 and min_is_white and reversed_bits:
        with pytest.raises(
            data.DataError, match=r"mask file '.*m\.png' stores its grayscale samples in PIL's raw"
        ):
            data._read_mask(tmp_path / "m.png")
        return
    np.testing.assert_array_equal(data._read_mask(tmp_path / "m.png"), labels)


@pytest.mark.parametrize("maxval", [15, 255])
def test_a_pgm_mask_of_another_maximum_than_255_is_refused(tmp_path, maxval) -> None:
    """A PGM under a ``.png`` name with a maximum value of 15 was rescaled by PIL (class 1 read as 17, sheep)
    with no error: it is refused, naming the file and the maximum, by the header's rules (the header pass
    finds it too); one of maximum 255 is read as stored."""
    labels = np.array([[0, 1, 15, 15], [1, 1, 0, 0]], np.uint8)
    (tmp_path / "m.png").write_bytes(b"P5\n4 2\n%d\n" % maxval + labels.tobytes())
    if maxval == 255:
        np.testing.assert_array_equal(data._read_mask(tmp_path / "m.png"), labels)
        return
    refused = r"mask file '.*m\.png' is a PGM file of maximum value 15"
    with pytest.raises(data.DataError, match=refused):
        data._read_mask(tmp_path / "m.png")
    with Image.open(tmp_path / "m.png") as im, pytest.raises(data.DataError, match=refused):
        data._check_mask_header(tmp_path / "m.png", im, notes=False)  # the header pass's rule too


def test_an_8_bit_tiff_mask_with_an_extra_sample_is_read_as_its_stored_labels(tmp_path: Path) -> None:
    """A grayscale TIFF of 2 samples per pixel (gray + ExtraSamples) is decoded by PIL in raw mode "LX", the
    extra sample dropped: its labels are the stored gray samples, not refused."""
    labels = (np.arange(48) % 21).reshape(6, 8).astype(np.uint8)
    h, w = labels.shape
    pixels = np.stack([labels, np.full_like(labels, 200)], -1).tobytes()
    entries = [(256, 3, w), (257, 3, h), (258, 3, 8), (259, 3, 1), (262, 3, 1), (277, 3, 2), (278, 3, h),
               (338, 3, 0)]  # fmt: skip
    path = tmp_path / "m.png"
    _tiff(path, entries, pixels)
    with Image.open(path) as im:
        assert im.format == "TIFF" and im.mode == "L" and im.tile[0][3][0] == "LX"
    np.testing.assert_array_equal(data._read_mask(path), labels)


def test_a_plain_pgm_mask_of_another_maximum_than_255_is_refused(tmp_path: Path) -> None:
    """As the binary (P5) PGM: PIL rescales a plain (ASCII, P2) PGM of maximum 15 to 0..255 (class 1 read as
    17, sheep); its decoder has another name ("ppm_plain"), and it was read with no error."""
    (tmp_path / "m.png").write_bytes(b"P2\n4 2\n15\n0 1 15 15 1 1 0 0\n")
    with pytest.raises(data.DataError, match=r"mask file '.*m\.png' is a PGM file of maximum value 15"):
        data._read_mask(tmp_path / "m.png")


# mutation-pass kill tests (data.py): defaults and options that reach the transforms, a lossy mask format
_TINY = (36, 44)


def test_build_dataset_applies_its_scale_range_when_training(tiny_voc):
    """``build_dataset(train=True, scale=...)`` scales by that range, not the default 0.5..2: at x0.25 a
    36x44 image is 9x11, padded (label 255, image 0) to the 36x44 crop, so rows 9 and below are padding."""
    ds = build_dataset(tiny_voc, "train", crop_size=_TINY, train=True, scale=(0.25, 0.25))
    for index in range(len(ds)):
        torch.manual_seed(index)
        sample = ds[index]
        assert sample["target"].shape == _TINY
        assert torch.all(sample["target"][9:] == 255)
        assert torch.all(sample["image"][:, 9:] == 0)
        assert not torch.all(sample["target"][:9] == 255)  # the scaled image itself


def test_an_mpo_mask_under_a_png_name_is_refused(tiny_voc, tmp_path):
    """A mask saved as MPO (a multi-picture JPEG, what some cameras and phones write; PIL reads it by
    content) is as lossy as a JPEG one: refused, naming the format, not read as labels."""
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    ds = VOCSegmentation(root, "train")
    labels = np.zeros(_TINY, np.uint8)
    labels[9:27, 10:40] = 15
    mpo = Image.fromarray(labels)
    mpo.save(ds.mask_path(0), format="MPO", save_all=True, append_images=[mpo])
    with Image.open(ds.mask_path(0)) as im:
        assert im.format == "MPO" and im.mode == "L"
    with pytest.raises(data.DataError, match=r"mask file '.*\.png' is a MPO file \(lossy"):
        ds[0]
    assert any("is a MPO file" in p for p in ds.header_problems(0))
