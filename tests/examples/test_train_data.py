"""examples/voc_joint/train_data.py: the training list's fingerprint, the options that reach the training
loader (scale range, image size limit) and the validation lists an overlap is checked against."""

from __future__ import annotations

import argparse
import hashlib
import shutil

import pytest
import torch

pytest.importorskip("torchvision")

from examples.voc_joint import train_options
from examples.voc_joint.train_data import train_list_fingerprint_of


def test_the_training_list_fingerprint_hashes_one_name_per_line(tiny_voc, tmp_path):
    """The fingerprint is the SHA-256 of the names one per line (as documented): two lists whose names join
    to the same text ('ab', 'c' and 'a', 'bc') are two lists, and a resume on the other is noticed."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    lists = root / "ImageSets" / "Segmentation"
    (lists / "one.txt").write_text("ab\nc\n")
    (lists / "two.txt").write_text("a\nbc\n")
    parser = train_options.build_parser()
    prints = {}
    for split in ("one", "two"):
        argv = ["--output-dir", str(tmp_path / "out"), "--train-split", split, "--num-classes", "21"]
        prints[split] = train_list_fingerprint_of(parser.parse_args(argv), root)
    assert prints["one"] == {"images": 2, "names_sha256": hashlib.sha256(b"ab\nc\n").hexdigest()}
    assert prints["one"] != prints["two"]


def _seg_args(root, out, *extra):
    from tests.examples.helpers import train_args

    argv = train_args(root, out, "--stage", "seg", "--max-steps", "1", *extra)
    return train_options.resolve_stage_options("seg", train_options.build_parser().parse_args(argv))


def test_the_training_loader_scales_by_scale_min_and_scale_max(tiny_voc, tmp_path):
    """--scale-min / --scale-max reach the training transform: at x0.25 the 36x44 images are 9x11, padded
    (label 255, image 0) to the 32x32 crop, so that rows 9 and below of every sample are padding (the default
    range 0.5..2 keeps at least 18 rows of the image)."""
    from examples.voc_joint.distributed import DistInfo
    from examples.voc_joint.train_data import build_train_loader

    args = _seg_args(tiny_voc, tmp_path / "out", "--scale-min", "0.25", "--scale-max", "0.25")
    loader, _sampler = build_train_loader(args, DistInfo(), tiny_voc)
    batch = next(iter(loader))
    assert batch["target"].shape[-2:] == (32, 32)
    assert torch.all(batch["target"][:, 9:] == 255) and torch.all(batch["image"][:, :, 9:] == 0)


def test_the_training_loader_applies_max_image_pixels(tiny_voc, tmp_path):
    """--max-image-pixels reaches the training data set: a 36x44 image (1584 pixels) is refused under a
    limit of 1000, naming the limit."""
    from examples.voc_joint.data import DataError
    from examples.voc_joint.distributed import DistInfo
    from examples.voc_joint.train_data import build_train_loader

    args = _seg_args(tiny_voc, tmp_path / "out", "--max-image-pixels", "1000")
    loader, _sampler = build_train_loader(args, DistInfo(), tiny_voc)
    with pytest.raises(DataError, match=r"is 44x36 = 1584 pixels, more than the limit of 1000"):
        next(iter(loader))


def test_the_val_split_counts_as_a_validation_list_with_eval_only(tiny_voc, tmp_path):
    """With --eval, the --val-split list is a validation list too (a training image in it is an overlap);
    without --eval it is not read."""
    from examples.voc_joint.data import read_list
    from examples.voc_joint.train_data import val_overlap_error

    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    lists = root / "ImageSets" / "Segmentation"
    train = read_list(lists / "train.txt")
    (lists / "held.txt").write_text(train[2] + "\n")
    for evaluates, overlaps in ((True, True), (False, False)):
        args = argparse.Namespace(sbd=False, eval=evaluates, val_split="held", train_split="train")
        error = val_overlap_error(train, root, lists / "train.txt", args)
        assert (error is not None) == overlaps, error
        if overlaps:
            assert "holds 1 image of the validation lists" in error and repr(train[2]) in error, error
            assert str(lists / "held.txt") in error, error
