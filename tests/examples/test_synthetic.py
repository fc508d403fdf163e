"""Synthetic VOC generator: layout, determinism, idempotence, label content, CLI."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import numpy as np
import pytest

pytest.importorskip("torchvision")

from PIL import Image

from examples.voc_joint import synthetic
from examples.voc_joint.data import NUM_CLASSES, voc_palette
from examples.voc_joint.synthetic import generate_synthetic_voc, render_sample

SIZE = (32, 48)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return generate_synthetic_voc(root, num_train=4, num_val=2, image_size=SIZE, seed=3)


def test_layout_and_lists(voc):
    lists = voc / "ImageSets" / "Segmentation"
    train = lists.joinpath("train.txt").read_text().split()
    val = lists.joinpath("val.txt").read_text().split()
    assert len(train) == 4 and len(val) == 2 and not set(train) & set(val)
    assert lists.joinpath("trainval.txt").read_text().split() == train + val
    aug = voc / "ImageSets" / "SegmentationAug"
    aug_train = aug.joinpath("train.txt").read_text().split()
    assert aug_train[:4] == train and len(aug_train) == 4 + 2  # num_train // 2 extra SBD-only images
    assert aug.joinpath("val.txt").read_text().split() == val
    for name in train + val:
        assert (voc / "JPEGImages" / f"{name}.jpg").is_file()
        assert (voc / "SegmentationClass" / f"{name}.png").is_file()
    for name in aug_train:
        assert (voc / "SegmentationClassAug" / f"{name}.png").is_file()
        assert (voc / "JPEGImages" / f"{name}.jpg").is_file()
    for name in aug_train[4:]:  # SBD-only images are not in the VOC masks
        assert not (voc / "SegmentationClass" / f"{name}.png").exists()


def test_masks_are_voc_palette_pngs_with_band(voc):
    name = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    with Image.open(voc / "SegmentationClass" / f"{name}.png") as im:
        assert im.mode == "P" and im.size == (SIZE[1], SIZE[0])
        assert im.getpalette()[: 3 * 256] == voc_palette()
        mask = np.asarray(im)
    values = set(np.unique(mask).tolist())
    assert values <= set(range(NUM_CLASSES)) | {255}
    assert 255 in values and values - {0, 255}, "objects and a boundary band are expected"
    with Image.open(voc / "JPEGImages" / f"{name}.jpg") as im:
        assert im.mode == "RGB" and im.size == (SIZE[1], SIZE[0])
    with Image.open(voc / "SegmentationClassAug" / f"{name}.png") as im:
        assert im.mode == "L"
        assert np.array_equal(np.asarray(im), mask)


def test_band_separates_every_pair_of_classes():
    for index in range(6):
        _, label = render_sample(1, index, SIZE, band_radius=1)
        # no two horizontally/vertically adjacent pixels carry two different real classes
        for a, b in ((label[:, 1:], label[:, :-1]), (label[1:], label[:-1])):
            differ = (a != b) & (a != 255) & (b != 255)
            assert not differ.any()
        _, raw = render_sample(1, index, SIZE, band_radius=0)
        assert 255 not in raw
        # the band only replaces pixels next to a boundary
        keep = label != 255
        assert np.array_equal(label[keep], raw[keep])


def test_band_width_follows_radius():
    _, narrow = render_sample(0, 0, (64, 64), band_radius=1)
    _, wide = render_sample(0, 0, (64, 64), band_radius=3)
    assert (wide == 255).sum() > (narrow == 255).sum() > 0
    assert np.all(wide[narrow == 255] == 255)


def test_deterministic_and_seed_dependent(tmp_path):
    a = generate_synthetic_voc(tmp_path / "a", num_train=2, num_val=1, image_size=SIZE, seed=5)
    b = generate_synthetic_voc(tmp_path / "b", num_train=2, num_val=1, image_size=SIZE, seed=5)
    c = generate_synthetic_voc(tmp_path / "c", num_train=2, num_val=1, image_size=SIZE, seed=6)
    assert _digest(a) == _digest(b) != _digest(c)
    # an image does not depend on how many others are generated
    _img1, lab1 = render_sample(5, 1, SIZE)
    with Image.open(a / "SegmentationClass" / "synth_000001.png") as im:
        assert np.array_equal(np.asarray(im), lab1)


def test_the_seed_reaches_the_images_not_only_the_marker(tmp_path):
    """The digests of two seeds differ through synthetic_voc.json alone: compare the images themselves."""
    a = generate_synthetic_voc(tmp_path / "a", num_train=2, num_val=1, image_size=SIZE, seed=5, sbd=False)
    b = generate_synthetic_voc(tmp_path / "b", num_train=2, num_val=1, image_size=SIZE, seed=6, sbd=False)
    for name in ("synth_000000", "synth_000001", "synth_000002"):
        assert (
            a.joinpath("JPEGImages", f"{name}.jpg").read_bytes()
            != b.joinpath("JPEGImages", f"{name}.jpg").read_bytes()
        )
    assert render_sample(5, 0, SIZE)[0].tobytes() != render_sample(6, 0, SIZE)[0].tobytes()


def test_band_covers_both_sides_of_a_boundary_and_nothing_farther():
    """band_radius=1: both pixels of every differing 4-neighbour pair are 255; a pixel whose 5x5
    neighbourhood holds one class only keeps its label."""
    from scipy import ndimage

    for index in range(4):
        _, raw = render_sample(2, index, SIZE, band_radius=0)
        _, label = render_sample(2, index, SIZE, band_radius=1)
        for a, b, sa, sb in (
            (raw[:, 1:], raw[:, :-1], label[:, 1:], label[:, :-1]),
            (raw[1:], raw[:-1], label[1:], label[:-1]),
        ):
            edge = a != b
            assert (sa[edge] == 255).all() and (sb[edge] == 255).all()
        far = ndimage.maximum_filter(raw, size=5) == ndimage.minimum_filter(raw, size=5)
        assert np.array_equal(label[far], raw[far])


def test_list_files_end_every_name_with_a_newline(voc):
    for path in (voc / "ImageSets").rglob("*.txt"):
        text = path.read_text()
        assert text.endswith("\n") and text == "".join(f"{n}\n" for n in text.split()), path


def test_the_set_and_a_checkpoint_take_the_umask_without_changing_it(tmp_path, monkeypatch):
    """Their modes follow the umask (0o027 here: 0o750 and 0o640), read by the kernel when the folder and the
    file are made; ``os.umask``, which sets the umask of every thread for an instant, is never called."""
    from examples.voc_joint.checkpoint import save_checkpoint

    old = os.umask(0o027)
    try:

        def no_umask(mask: int) -> int:
            raise AssertionError("os.umask called")

        monkeypatch.setattr(os, "umask", no_umask)
        root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, sbd=False)
        ckpt = save_checkpoint(tmp_path / "run" / "checkpoint.pt", {"format": "test"})
        monkeypatch.undo()
    finally:
        os.umask(old)
    assert root.stat().st_mode & 0o777 == 0o750
    assert ckpt.stat().st_mode & 0o777 == 0o640


def test_the_set_has_the_usual_folder_mode_not_mkdtemps_private_one(tmp_path):
    root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, sbd=False)
    umask = os.umask(0)
    os.umask(umask)
    assert root.stat().st_mode & 0o777 == 0o777 & ~umask


def test_idempotent_and_regenerates_on_new_arguments(tmp_path):
    root = generate_synthetic_voc(tmp_path, num_train=2, num_val=1, image_size=SIZE, sbd=False)
    jpg = root / "JPEGImages" / "synth_000000.jpg"
    jpg.write_bytes(b"sentinel")  # not rewritten when arguments match
    generate_synthetic_voc(tmp_path, num_train=2, num_val=1, image_size=SIZE, sbd=False)
    assert jpg.read_bytes() == b"sentinel"
    generate_synthetic_voc(tmp_path, num_train=3, num_val=1, image_size=SIZE, sbd=False)
    assert jpg.read_bytes() != b"sentinel"
    assert json.loads((root / "synthetic_voc.json").read_text())["num_train"] == 3
    assert not (root / "SegmentationClassAug").exists()


def test_a_new_seed_or_jpeg_quality_regenerates_and_sbd_extras_carry_no_band(tmp_path):
    kw = {"num_train": 2, "num_val": 1, "image_size": SIZE, "num_sbd_extra": 2}
    root = generate_synthetic_voc(tmp_path, seed=5, **kw)
    first = _digest(root)
    assert _digest(generate_synthetic_voc(tmp_path, seed=6, **kw)) != first  # not reused for another seed
    assert json.loads((root / "synthetic_voc.json").read_text())["seed"] == 6
    jpg = root / "JPEGImages" / "synth_000000.jpg"
    size = jpg.stat().st_size
    generate_synthetic_voc(tmp_path, seed=6, jpeg_quality=30, **kw)
    assert jpg.stat().st_size < size  # the quality reaches the JPEG encoder
    for index in (3, 4):  # the SBD-only images: no 255 band, like SBD's annotations
        with Image.open(root / "SegmentationClassAug" / f"synth_{index:06d}.png") as im:
            mask = np.asarray(im)
        assert 255 not in mask and np.array_equal(mask, render_sample(6, index, SIZE, band_radius=0)[1])
    # every image has its own random stream (seed, index)
    assert len({render_sample(6, i, SIZE)[0].tobytes() for i in range(5)}) == 5


def test_classes_have_distinct_styles():
    styles = synthetic.CLASS_STYLES
    assert len(styles) == NUM_CLASSES
    keys = {(s["texture"], tuple(np.round(s["primary"], 2))) for s in styles[1:]}
    assert len(keys) == NUM_CLASSES - 1
    # fixed, whatever the seed or the process: every process of a run sees the same classes
    again = synthetic._make_class_styles()
    assert all(
        a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        for a, b in zip(styles, again, strict=True)
    )


def test_the_docs_state_the_texture_period_the_classes_have():
    """Every class draws its texture with a period of 4 pixels (``4 + (c * 7) % 7`` is 4 for every c), where
    the module docstring and data_and_metrics.rst said each class had its own period."""
    from pathlib import Path

    assert {s["period"] for s in synthetic.CLASS_STYLES[1:]} == {4.0}
    page = (Path(__file__).resolve().parents[2] / "docs" / "examples" / "data_and_metrics.rst").read_text()
    for text in (synthetic.__doc__, page):
        flat = " ".join(text.split())
        assert "The texture period is 4 pixels for every class" in flat and "texture period and" not in flat


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_train": 0}, "num_train"),
        ({"num_val": -1}, "num_val"),
        ({"image_size": (8, 48)}, "image_size"),
        ({"band_radius": -1}, "band_radius"),
        ({"num_sbd_extra": -2}, "num_sbd_extra"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic_voc(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"num_train": 2.7}, TypeError, "num_train must be an int in [1, 1000000], got 2.7"),
        ({"num_val": True}, TypeError, "num_val must be an int in [1, 1000000], got True"),
        ({"num_train": 10**7}, ValueError, "num_train must be an int in [1, 1000000], got 10000000"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0, got -1"),
        ({"seed": 1.5}, TypeError, "seed must be an int >= 0, got 1.5"),
        ({"jpeg_quality": 101}, ValueError, "jpeg_quality must be an int in [0, 100], got 101"),
        ({"jpeg_quality": -5}, ValueError, "jpeg_quality must be an int in [0, 100], got -5"),
        ({"band_radius": 1.5}, TypeError, "band_radius must be an int in [0, 16384], got 1.5"),
        (
            {"image_size": (32, 48, 3)},
            ValueError,
            "image_size must be a pair (H, W) of ints in [16, 16384], got (32, 48, 3)",
        ),
        (
            {"image_size": (32.5, 48)},
            TypeError,
            "image_size must be a pair (H, W) of ints in [16, 16384], got (32.5, 48)",
        ),
        ({"image_size": 32}, TypeError, "image_size must be a pair (H, W) of ints in [16, 16384], got 32"),
        (
            {"sbd": False, "num_sbd_extra": -3},
            ValueError,
            "num_sbd_extra must be an int in [0, 1000000], got -3",
        ),
        ({"sbd": "False"}, TypeError, "sbd must be a bool, got 'False'"),
        ({"sbd": 0}, TypeError, "sbd must be a bool, got 0"),
    ],
)
def test_bad_arguments_are_named_with_their_range_and_value(tmp_path, kwargs, error, message):
    """A float count or seed was truncated (``num_train=2.7`` wrote 2 images), a JPEG quality out of
    Pillow's 0..100 was written into the marker and clamped by libjpeg, a negative seed was numpy's "expected
    non-negative integer", an ``image_size`` of three values "too many values to unpack": each is now a
    TypeError (not an int) or ValueError (out of range) naming the argument, its range and the value, before
    anything is written."""
    with pytest.raises(error) as info:
        generate_synthetic_voc(tmp_path / "voc", **{"num_train": 1, "num_val": 1, **kwargs})
    assert str(info.value) == message
    assert not (tmp_path / "voc").exists()


def test_numpy_integers_are_accepted_and_stored_as_ints(tmp_path):
    root = generate_synthetic_voc(
        tmp_path / "voc", num_train=np.int64(1), num_val=1, image_size=np.array([16, 20]), seed=np.uint32(4)
    )
    params = json.loads((root / "synthetic_voc.json").read_text())
    assert params["num_train"] == 1 and params["image_size"] == [16, 20] and params["seed"] == 4


def test_cli(tmp_path, capsys):
    assert (
        synthetic.main(
            [
                "--output-dir",
                str(tmp_path),
                "--num-train",
                "2",
                "--num-val",
                "1",
                "--height",
                "32",
                "--width",
                "40",
                "--no-sbd",
                "--seed",
                "2",
            ]
        )
        == 0
    )
    assert "synthetic VOC data set: 3 images of 32x40" in capsys.readouterr().out
    with Image.open(tmp_path / "JPEGImages" / "synth_000002.jpg") as im:
        assert im.size == (40, 32)


def test_cli_refuses_sbd_extra_images_without_the_sbd_layout(tmp_path, capsys):
    """--num-sbd-extra with --no-sbd was accepted and ignored (no layout holds the extra images): refused now,
    before anything is written."""
    out = tmp_path / "voc"
    with pytest.raises(SystemExit) as info:
        synthetic.main(["--output-dir", str(out), "--num-train", "1", "--no-sbd", "--num-sbd-extra", "5"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "error: --num-sbd-extra 5 with --no-sbd" in err and not out.exists()


@pytest.mark.parametrize("where", ["below_a_file", "name_too_long"])
def test_cli_output_folder_that_cannot_be_used_is_a_usage_error_naming_it(tmp_path, capsys, where):
    """A name too long for the system was an OSError traceback; a path below a file "File exists" with exit
    status 1, then (as every script's unusable output folder: ``cli.check_output_dir``) argparse's usage and
    one error line naming the option and the path, exit status 2 before anything is written, as the
    generator's own refusals of a folder it must not write into."""
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "voc" if where == "below_a_file" else tmp_path / ("a" * 300)
    with pytest.raises(SystemExit) as info:
        synthetic.main(
            [
                "--output-dir",
                str(out),
                "--num-train",
                "1",
                "--num-val",
                "1",
                "--height",
                "16",
                "--width",
                "16",
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert err.count("python examples/voc_joint/synthetic.py: error: --output-dir: ") == 1, err
    assert (str(tmp_path / "file") if where == "below_a_file" else "a" * 300) in err
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # nothing left behind


def test_incomplete_set_is_regenerated(tmp_path):
    root = generate_synthetic_voc(tmp_path, num_train=2, num_val=1, image_size=SIZE)
    (root / "JPEGImages" / "synth_000001.jpg").unlink()
    generate_synthetic_voc(tmp_path, num_train=2, num_val=1, image_size=SIZE)
    assert (root / "JPEGImages" / "synth_000001.jpg").is_file()


@pytest.mark.parametrize(
    "damage",
    [
        ("Segmentation", "val.txt", None),
        ("Segmentation", "train.txt", "synth_000000\n"),
        ("SegmentationAug", "train.txt", ""),
    ],
)
def test_a_missing_or_cut_list_file_is_regenerated(tmp_path, damage):
    """The completeness check read only the marker and the images: a deleted or cut list file was taken for a
    complete set, nothing was rewritten, and the reader then failed ("split list file not found")."""
    root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE)
    before = _digest(root)
    folder, name, text = damage
    path = root / "ImageSets" / folder / name
    path.unlink() if text is None else path.write_text(text)
    generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE)
    assert _digest(root) == before


def test_refuses_a_folder_holding_other_data(tmp_path, capsys):
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    lists = tmp_path / "ImageSets" / "Segmentation" / "train.txt"
    lists.write_text("2007_000032\n")
    with pytest.raises(FileExistsError, match="holds files that the generator did not write"):
        generate_synthetic_voc(tmp_path, num_train=2, num_val=1, image_size=SIZE)
    assert lists.read_text() == "2007_000032\n" and sorted(p.name for p in tmp_path.iterdir()) == [
        "ImageSets"
    ]
    with pytest.raises(SystemExit) as info:
        synthetic.main(["--output-dir", str(tmp_path), "--num-train", "2", "--num-val", "1"])
    assert info.value.code == 2 and "did not write" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        "runs/best.pt",
        "JPEGImages/2007_000032.jpg",
        "ImageSets/Segmentation/mine.txt",
        "notes.txt",
        "JPEGImages/synth_1.jpg",  # not the generator's synth_<6 digits>
        "SegmentationClass/synth_photo1.png",
    ],
)
def test_other_files_beside_a_set_to_replace_are_refused_not_deleted(tmp_path, capsys, extra):
    """A set of other arguments was replaced by removing its whole folder: a checkpoint or a real VOC image
    put into it went with it. Now refused (FileExistsError, exit status 2), nothing touched; a complete set
    of the same arguments is still reused as it is."""
    root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE)
    (root / extra).parent.mkdir(parents=True, exist_ok=True)
    (root / extra).write_text("not the generator's")
    before = _digest(root)
    assert generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE) == root
    with pytest.raises(FileExistsError, match=r"it also holds 1 file or folder that the generator did"):
        generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, seed=1)
    assert _digest(root) == before
    argv = [
        "--output-dir",
        str(root),
        "--num-train",
        "2",
        "--num-val",
        "1",
        "--height",
        "32",
        "--width",
        "48",
    ]
    with pytest.raises(SystemExit) as info:
        synthetic.main([*argv, "--seed", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and str(root / extra.split("/")[0]) in err, err
    assert _digest(root) == before


def test_a_set_of_other_arguments_alone_is_still_replaced(tmp_path):
    root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, sbd=False)
    for junk in (".DS_Store", "JPEGImages/._synth_000000.jpg", "ImageSets/Thumbs.db"):  # a file manager's
        (root / junk).write_text("")
    generate_synthetic_voc(tmp_path / "voc", num_train=1, num_val=1, image_size=SIZE, seed=2)
    assert json.loads((root / "synthetic_voc.json").read_text())["seed"] == 2
    assert sorted(p.name for p in (root / "JPEGImages").iterdir()) == ["synth_000000.jpg", "synth_000001.jpg"]


def test_generation_is_atomic(tmp_path, monkeypatch):
    """A failure half-way leaves no partial set (and no temporary folder); the previous set stays."""
    root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE)
    before = _digest(root)
    calls = []

    def failing(seed, index, *args, **kwargs):
        calls.append(index)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return render_sample(seed, index, *args, **kwargs)

    monkeypatch.setattr(synthetic, "render_sample", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic_voc(tmp_path / "voc", num_train=3, num_val=1, image_size=SIZE)
    assert _digest(root) == before and sorted(p.name for p in tmp_path.iterdir()) == [".voc.lock", "voc"]
    with pytest.raises(RuntimeError, match="disk full"):
        calls.clear()
        generate_synthetic_voc(tmp_path / "new", num_train=3, num_val=1, image_size=SIZE)
    assert not (tmp_path / "new").exists()


def test_an_interrupt_between_the_two_renames_puts_the_older_set_back(tmp_path, monkeypatch):
    """Regenerating swaps the older set out, then the new one in: Ctrl-C between the two renames deleted the
    new set and left the older one in its ``.old`` folder, which the next generation removed; no set was left
    at the root. The older set now goes back to the root, unchanged, and nothing is left beside it."""
    root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE)
    before = _digest(root)
    real_replace, calls = os.replace, []

    def interrupted(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new set's rename to the root
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_voc(tmp_path / "voc", num_train=3, num_val=1, image_size=SIZE)
    monkeypatch.undo()
    assert calls[1] == root  # (the window this test is about)
    assert _digest(root) == before and sorted(p.name for p in tmp_path.iterdir()) == [".voc.lock", "voc"]


@pytest.mark.parametrize("relative", [".", "./", "../voc", ".."])
def test_the_current_folder_or_one_above_it_is_refused_as_the_root(tmp_path, monkeypatch, capsys, relative):
    """``--output-dir .``: its parent was ``.`` itself, so the lock file went into the set's folder, which was
    then refused as holding a file the generator did not write (and kept that file); with the path made
    absolute, the finished set replaced the folder the process and the shell stood in (a deleted folder, the
    new set unseen there). Refused now, naming the folder, before anything is written, in the function and
    on the command line; a relative path below the current folder works."""
    cwd = tmp_path / "voc"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(ValueError, match=r"is the current folder.*pass a path outside it"):
        generate_synthetic_voc(relative, num_train=2, num_val=1, image_size=SIZE, sbd=False)
    with pytest.raises(SystemExit) as exc:
        synthetic.main(["--output-dir", relative, "--num-train", "2", "--num-val", "1"])
    assert exc.value.code == 2 and "--output-dir '" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["voc"] and not any(cwd.iterdir())
    root = generate_synthetic_voc("sub", num_train=2, num_val=1, image_size=SIZE, sbd=False)
    assert root == cwd / "sub" and (root / "synthetic_voc.json").is_file() and os.getcwd() == str(cwd)


def test_a_generation_removes_what_killed_generations_of_its_folder_left(tmp_path):
    """A generation stopped by SIGTERM or SIGKILL left its temporary folder (``.voc.<random>.tmp``, 3.5 MB
    after 1 s of a 5000-image set) or the swapped-out older set (``.voc.<random>.old``) next to the set, and
    no later generation removed them: one more per killed run. Under the generation lock no other generator
    of the folder runs, so the next one (or the next check of a complete set) removes them; a sibling set's
    temporary folder stays."""
    pytest.importorskip("fcntl")  # without flock a running generator's folder could not be told apart
    left = [tmp_path / ".voc.k1ll3d_a.tmp", tmp_path / ".voc.k1ll3d_b.old"]
    sibling = tmp_path / ".voc.x.abcd1234.tmp"  # the set "voc.x" being generated now, under its own lock
    for folder in (*left, sibling):
        (folder / "JPEGImages").mkdir(parents=True)
    generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".voc.lock", ".voc.x.abcd1234.tmp", "voc"]
    left[0].mkdir()  # killed while regenerating with other arguments; the complete set is found as it is
    generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE)
    assert not left[0].exists() and sibling.is_dir()


@pytest.mark.skipif(not hasattr(os, "kill") or os.name == "nt", reason="SIGTERM to oneself: POSIX")
def test_cli_sigterm_is_one_line_with_exit_status_143_and_no_temporary_folder(tmp_path, monkeypatch, capsys):
    """``synthetic.py`` stopped by SIGTERM ended silently (SIGINT: a traceback) and left its
    ``.voc.<random>.tmp`` folder until the next generation. It now prints one line naming the signal, exits
    143 and removes the folder; the earlier set stays as it was."""
    import signal

    class Stopped(Exception):
        pass

    def stopped(signum, frame):  # where synthetic.py handles no SIGTERM (its default would end pytest)
        raise Stopped

    argv = ["--output-dir", str(tmp_path / "voc"), "--num-train", "3", "--num-val", "2", "--height", "32"]
    assert synthetic.main([*argv, "--width", "48"]) == 0
    before = _digest(tmp_path / "voc")
    real = synthetic.render_sample

    def render(*args, **kwargs):  # SIGTERM during the second image of a new set (another width)
        if render.calls == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        render.calls += 1
        return real(*args, **kwargs)

    render.calls = 0
    monkeypatch.setattr(synthetic, "render_sample", render)
    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        capsys.readouterr()
        assert synthetic.main([*argv, "--width", "40"]) == 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert "stopped by SIGTERM (exit status 143)" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".voc.lock", "voc"]
    assert _digest(tmp_path / "voc") == before


@pytest.mark.parametrize("size", [(16, 1024), (1024, 16), (16, 600)])
def test_long_thin_images_keep_their_shapes(size):
    """Shapes are sized by min(H, W) but were dropped below 0.5 % of H * W: on 16 x 1024 images 178 of 200
    showed no object at all. Now nearly every image shows one."""
    empty = sum(not (render_sample(0, i, size, band_radius=0)[1] > 0).any() for i in range(40))
    assert empty <= 1, empty


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((-1, 0), {}, ValueError, "seed must be an int >= 0, got -1"),
        ((0.5, 0), {}, TypeError, "seed must be an int >= 0, got 0.5"),
        ((0, -1), {}, ValueError, "index must be an int >= 0, got -1"),
        ((0, 0, (0, 5)), {}, ValueError, "image_size must be a pair (H, W) of ints >= 1, got (0, 5)"),
        ((0, 0, (16,)), {}, ValueError, "image_size must be a pair (H, W) of ints >= 1, got (16,)"),
        ((0, 0), {"band_radius": -2}, ValueError, "band_radius must be an int >= 0, got -2"),
        ((0, 0), {"band_radius": 1.5}, TypeError, "band_radius must be an int >= 0, got 1.5"),
        # three values: a length error, also where the third is no int
        (
            (0, 0, (16, 16, 2.5)),
            {},
            ValueError,
            "image_size must be a pair (H, W) of ints >= 1, got (16, 16, 2.5)",
        ),
    ],
)
def test_render_sample_names_a_bad_argument(args, kwargs, error, message):
    """A negative seed or index was numpy's "expected non-negative integer", seed 0.5 drew seed 0, a negative
    band radius no band, an empty size an empty image."""
    with pytest.raises(error) as info:
        render_sample(*args, **kwargs)
    assert str(info.value) == message


def test_a_band_radius_beyond_the_image_costs_no_more_than_the_image():
    """A radius of max(H, W) - 1 reaches every pixel: a larger one draws the same band, without filter
    buffers that grow with the radius (2**40 was a MemoryError, 2**27 took 49 s and 2 GB on 16 x 16)."""
    size = (16, 20)
    widest = render_sample(4, 2, size, band_radius=19)[1]
    for radius in (20, 2**40, 10**20):
        assert np.array_equal(render_sample(4, 2, size, band_radius=radius)[1], widest)
    _, raw = render_sample(4, 2, size, band_radius=0)
    assert len(np.unique(raw)) > 1 and np.all(widest == 255)  # two classes: every pixel sees both


def test_hsv_to_rgb_is_the_standard_conversion():
    """The class colours come from ``_hsv_to_rgb``: it agrees with ``colorsys`` on every sextant of hue."""
    import colorsys

    for h in np.linspace(0.0, 0.99, 23):
        for s, v in ((0.75, 0.9), (0.5, 0.3), (1.0, 1.0)):
            np.testing.assert_allclose(
                synthetic._hsv_to_rgb(h, s, v), colorsys.hsv_to_rgb(h, s, v), atol=1e-6
            )


def test_an_image_shows_one_to_three_objects_of_the_20_classes():
    """One to three shapes per image of the 20 object classes (the module docstring): among 40 images of
    64 x 64 (no band) every count from 1 to 3 occurs, none above, and the labels are exactly 0..20."""
    labels = [set(np.unique(render_sample(0, i, (64, 64), band_radius=0)[1]).tolist()) for i in range(40)]
    assert {len(found - {0}) for found in labels} == {1, 2, 3}
    assert set().union(*labels) == set(range(NUM_CLASSES))


@pytest.mark.parametrize("size, least", [((100, 100), 50), ((16, 1024), 6)])
def test_a_shape_is_kept_from_half_a_percent_of_the_image(monkeypatch, size, least):
    """A shape is left out below 0.5 % of H * W (at most of 4 min(H, W)^2): 100 x 100 keeps shapes of 50
    pixels, drops those of 49; 16 x 1024 keeps 6 (5.12 is the limit), drops 5."""
    for pixels, kept in ((least - 1, False), (least, True)):

        def shape(rng, kind, h, w, yy, xx, pixels=pixels):
            mask = np.zeros((h, w), bool)
            mask.flat[:pixels] = True
            return mask

        monkeypatch.setattr(synthetic, "_shape_mask", shape)
        label = render_sample(0, 0, size, band_radius=0)[1]
        assert (label > 0).any() == kept and (label > 0).sum() in (0, pixels), (pixels, kept)


def test_the_band_is_every_pixel_within_the_radius_of_another_class():
    """``band_radius`` r: a pixel is 255 exactly when a pixel of another class lies within Chebyshev distance
    r, for radii beyond the shorter side of a long image too (which the band must not stop at)."""
    from scipy import ndimage

    for index in range(3):
        _, raw = render_sample(1, index, (16, 64), band_radius=0)
        assert len(np.unique(raw)) > 1
        for radius in (1, 3, 20, 40):
            size = 2 * radius + 1
            edge = ndimage.maximum_filter(raw, size=size, mode="nearest") != ndimage.minimum_filter(
                raw, size=size, mode="nearest"
            )
            want = np.where(edge, 255, raw)
            assert np.array_equal(render_sample(1, index, (16, 64), band_radius=radius)[1], want), radius


def test_the_upper_bounds_of_the_arguments_are_accepted(tmp_path):
    """The ranges are inclusive: ``jpeg_quality=100`` and ``band_radius=SIDE_MAX`` are accepted and stored."""
    from examples.voc_joint.cli import SIDE_MAX

    root = generate_synthetic_voc(
        tmp_path / "voc", num_train=1, num_val=1, image_size=(16, 16), jpeg_quality=100, band_radius=SIDE_MAX
    )
    params = json.loads((root / "synthetic_voc.json").read_text())
    assert params["jpeg_quality"] == 100 and params["band_radius"] == SIDE_MAX
    assert synthetic._int_arg(10**6, "num_train", 1, synthetic.IMAGES_MAX) == 10**6


@pytest.mark.parametrize(
    "lost", ["SegmentationClass/synth_000001.png", "SegmentationClassAug/synth_000003.png"]
)
def test_a_missing_mask_is_regenerated(tmp_path, lost):
    """The completeness check covers every mask: a VOC mask, and the SBD mask of an SBD-only image."""
    root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, num_sbd_extra=1)
    before = _digest(root)
    (root / lost).unlink()
    generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, num_sbd_extra=1)
    assert (root / lost).is_file() and _digest(root) == before


SIZE = (32, 48)


def test_the_class_textures_and_shapes_are_pinned():
    """The classes define the data set (and every cached set made with ``_FORMAT_VERSION``): class c has the
    texture ``_TEXTURES[(c - 1) % 5]`` and the preferred shape below."""
    textures = ["stripes", "checker", "dots", "rings", "noise"] * 4
    shapes = ["polygon", "blob", "ellipse", "polygon", "blob"] * 4
    assert [s["texture"] for s in synthetic.CLASS_STYLES[1:]] == textures
    assert [s["shape"] for s in synthetic.CLASS_STYLES[1:]] == shapes


@pytest.mark.parametrize("lost", ["SegmentationClass/synth_000002.png", "JPEGImages/synth_000003.jpg"])
def test_a_missing_val_mask_or_image_of_any_list_is_regenerated(tmp_path, lost):
    """The completeness check covers the masks of the val images and the images of the SBD-only names."""
    kw = {"num_train": 2, "num_val": 1, "image_size": SIZE, "num_sbd_extra": 1}
    root = generate_synthetic_voc(tmp_path / "voc", **kw)
    (root / lost).unlink()
    generate_synthetic_voc(tmp_path / "voc", **kw)
    assert (root / lost).is_file()


def test_regenerating_leaves_no_swapped_out_set_beside_the_new_one(tmp_path):
    generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, sbd=False)
    root = generate_synthetic_voc(tmp_path / "voc", num_train=3, num_val=1, image_size=SIZE, sbd=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".voc.lock", "voc"]
    assert len(list((root / "JPEGImages").iterdir())) == 4


def test_a_folder_two_levels_above_the_current_one_is_refused(tmp_path, monkeypatch):
    cwd = tmp_path / "a" / "b"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    for root in ("../..", tmp_path):
        with pytest.raises(ValueError, match=r"is the current folder or holds it"):
            generate_synthetic_voc(root, num_train=1, num_val=1, image_size=SIZE, sbd=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"] and not any(cwd.iterdir())


def test_cli_refuses_zero_sbd_extra_images_without_the_sbd_layout(tmp_path, capsys):
    out = tmp_path / "voc"
    with pytest.raises(SystemExit) as info:
        synthetic.main(["--output-dir", str(out), "--num-train", "1", "--no-sbd", "--num-sbd-extra", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "error: --num-sbd-extra 0 with --no-sbd" in err and not out.exists()


def test_the_generation_lock_is_exclusive(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    real, ops = fcntl.flock, []

    def flock(fd, op):
        ops.append(op)
        return real(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    generate_synthetic_voc(tmp_path / "voc", num_train=1, num_val=1, image_size=(16, 16), sbd=False)
    assert ops and ops[0] == fcntl.LOCK_EX, ops


def test_the_temporary_folder_of_a_killed_generation_is_removed_by_the_next(tmp_path, monkeypatch):
    """A generation killed (no cleanup: ``shutil.rmtree`` does nothing here) leaves its temporary folder; the
    next generation of the folder recognises it as abandoned and removes it."""
    pytest.importorskip("fcntl")
    real, calls = render_sample, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_sample", failing)
    monkeypatch.setattr(synthetic.shutil, "rmtree", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="killed"):
        generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, sbd=False)
    monkeypatch.undo()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".voc.") and p.is_dir()]) == 1
    generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=SIZE, sbd=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".voc.lock", "voc"]


def test_the_default_jpeg_quality_is_92(tmp_path):
    root = generate_synthetic_voc(tmp_path / "voc", num_train=1, num_val=1, image_size=SIZE, sbd=False)
    import io

    buf = io.BytesIO()
    Image.fromarray(render_sample(0, 0, SIZE)[0]).save(buf, format="JPEG", quality=92)
    assert (root / "JPEGImages" / "synth_000000.jpg").read_bytes() == buf.getvalue()


def test_the_cli_defaults_are_the_generators(tmp_path):
    import inspect

    args = synthetic.build_parser().parse_args(["--output-dir", str(tmp_path / "voc")])
    defaults = {k: p.default for k, p in inspect.signature(generate_synthetic_voc).parameters.items()}
    assert (args.num_train, args.num_val, args.seed) == (
        defaults["num_train"],
        defaults["num_val"],
        defaults["seed"],
    )
    assert (args.height, args.width) == defaults["image_size"]
    assert args.band_radius == defaults["band_radius"] and args.num_sbd_extra == defaults["num_sbd_extra"]
    assert (not args.no_sbd) == defaults["sbd"]


def test_an_os_file_exists_error_while_writing_is_exit_status_1(tmp_path, monkeypatch, capsys):
    """Only the generator's own refusals (FileExistsError without an errno) are exit status 2; an OS error
    that happens to be EEXIST while writing is a write failure, exit status 1."""

    def fails(*args, **kwargs):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(tmp_path / "voc" / "x"))

    monkeypatch.setattr(synthetic, "generate_synthetic_voc", fails)
    with pytest.raises(SystemExit) as info:
        synthetic.main(["--output-dir", str(tmp_path / "voc"), "--num-train", "1", "--num-val", "1"])
    assert info.value.code == 1 and "File exists" in capsys.readouterr().err
