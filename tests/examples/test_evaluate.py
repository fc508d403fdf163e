"""evaluate() with a tiny stub model obeying the model contract, and the evaluate CLI."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torchvision")

from PIL import Image
from torch.utils.data import DataLoader

from examples.voc_joint import evaluate as evaluate_mod
from examples.voc_joint import train_options
from examples.voc_joint.data import build_dataset
from examples.voc_joint.evaluate import evaluate, split_results
from examples.voc_joint.metrics import SegmentationMetrics
from examples.voc_joint.synthetic import generate_synthetic_voc

from .helpers import ROOT, dead_pid, fail_atomic_write, flock_held, script_env

SIZE = (30, 44)  # not multiples of the cell size: partial border cells


class StubJoint(nn.Module):
    """A 1x1 conv "segmentation network", grid superpixels of ``cell`` px, logits averaged per superpixel."""

    def __init__(self, cell: int = 6, superpixels: bool = True, baseline: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.head = nn.Conv2d(3, 21, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(21, 3, 1, 1, generator=g))
            self.head.bias.copy_(torch.randn(21, generator=g) * 0.1)
        self.cell, self.superpixels, self.baseline = cell, superpixels, baseline

    def forward(self, seg_input, spixel_input):
        seg = self.head(seg_input)
        b, c, h, w = seg.shape
        n_w = -(-w // self.cell)
        ar_h, ar_w = torch.arange(h, device=seg.device), torch.arange(w, device=seg.device)
        ids = ((ar_h[:, None] // self.cell) * n_w + ar_w[None] // self.cell).reshape(-1)
        k = int(ids.max()) + 1
        sums = torch.zeros(b, c, k, device=seg.device).index_add_(2, ids, seg.flatten(2))
        means = sums / torch.bincount(ids, minlength=k)
        logits = means[:, :, ids].view(b, c, h, w)
        return {
            "logits": logits if self.superpixels else seg,
            "seg_logits": seg if self.baseline else None,
            "superpixels": ids.view(1, h, w).expand(b, h, w).clone() if self.superpixels else None,
            "assoc": None,
        }


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return generate_synthetic_voc(
        tmp_path_factory.mktemp("evalvoc"), num_train=2, num_val=3, image_size=SIZE, seed=4, sbd=False
    )


def test_evaluate_full_size(voc, tmp_path):
    ds = build_dataset(voc, "val")
    loader = DataLoader(ds, batch_size=1)
    model = StubJoint().train()
    res = evaluate(model, loader, device="cpu", panels_dir=tmp_path / "panels", max_panels=2, progress=False)
    assert model.training  # mode restored
    extra = {"baseline", "panels", "seconds", "images_per_second"}
    assert set(res) == set(SegmentationMetrics().compute()) | extra
    joint, base = split_results(res)["joint"], res["baseline"]
    assert set(joint) == set(base) == set(SegmentationMetrics().compute())
    assert joint["num_images"] == base["num_images"] == 3
    valid = sum(int((ds[i]["target"] != 255).sum()) for i in range(3))
    assert joint["num_pixels"] == base["num_pixels"] == valid
    assert joint["consistency"] == 1.0 and joint["consistency_pixels"] == 1.0
    assert base["consistency"] < 1.0
    assert joint["asa"] == base["asa"] and 0 < joint["asa"] <= 1
    n_cells = math.ceil(SIZE[0] / 6) * math.ceil(SIZE[1] / 6)
    assert joint["num_superpixels"] == n_cells
    assert set(joint["boundary_miou"]) == {"1", "3", "5"} and len(joint["per_class_iou"]) == 21
    assert [p.split("/")[-1] for p in res["panels"]] == [f"{ds.names[0]}.png", f"{ds.names[1]}.png"]
    with Image.open(res["panels"][0]) as im:
        assert im.format == "PNG" and im.width > 4 * SIZE[1]


def test_panels_name_the_classes_as_the_metrics_do(voc, tmp_path, monkeypatch):
    """The panels' legend takes the metrics' class names (VOC's for 21 classes, the numbers otherwise)."""
    calls: list[dict] = []
    monkeypatch.setattr(evaluate_mod, "save_panel", lambda path, *a, **k: (calls.append(k), path)[1])
    loader = DataLoader(build_dataset(voc, "val"), batch_size=1)
    names = ("bg", *(f"c{i}" for i in range(1, 21)))
    evaluate(StubJoint(), loader, device="cpu", panels_dir=tmp_path, max_panels=1, progress=False)
    monkeypatch.setattr(
        evaluate_mod, "SegmentationMetrics", lambda **kw: SegmentationMetrics(**kw, class_names=names)
    )
    evaluate(StubJoint(), loader, device="cpu", panels_dir=tmp_path, max_panels=1, progress=False)
    assert [c["class_names"] for c in calls] == [SegmentationMetrics().class_names, names]


def test_eval_mode_is_restored_and_panels_stop_at_max_panels_inside_a_batch(voc, tmp_path):
    loader = DataLoader(build_dataset(voc, "val"), batch_size=2)  # val: 3 images of one size
    model = StubJoint().eval()
    res = evaluate(model, loader, device="cpu", panels_dir=tmp_path, max_panels=1, progress=False)
    assert not model.training  # restored to eval, not switched to training
    assert len(res["panels"]) == 1 and len(list(tmp_path.glob("*.png"))) == 1


def test_the_panels_of_a_batch_are_named_after_each_of_its_images(voc, tmp_path):
    """Each image of a batch gets its own panel, under its own name (the sweep's batches of 1 only ever
    drew image 0 of a batch)."""
    ds = build_dataset(voc, "val")
    res = evaluate(
        StubJoint(), DataLoader(ds, batch_size=3), device="cpu", panels_dir=tmp_path, progress=False
    )
    assert [Path(p).name for p in res["panels"]] == [f"{name}.png" for name in ds.names]
    assert len(set(ds.names)) == 3


@pytest.mark.parametrize("void", [-1, 200])
def test_panels_draw_another_ignore_index_as_void(voc, tmp_path, void):
    """With ``ignore_index`` other than 255, the panels draw the void pixels as void (the VOC palette's 255,
    left out of the legend), byte for byte the panel of the same void labelled 255, and the scores agree too:
    -1 was refused by the palette on the first panel, 200 drawn as a class and named in the legend."""
    batch = next(iter(DataLoader(build_dataset(voc, "val"), batch_size=1)))
    assert bool((batch["target"] == 255).any())  # the synthetic set has void pixels

    def run(ignore_index: int) -> dict:
        relabelled = {**batch, "target": batch["target"].masked_fill(batch["target"] == 255, ignore_index)}
        out = tmp_path / str(ignore_index)
        return evaluate(
            StubJoint(), [relabelled], device="cpu", ignore_index=ignore_index, panels_dir=out, progress=False
        )

    ours, voc_void = run(void), run(255)
    assert Path(ours["panels"][0]).read_bytes() == Path(voc_void["panels"][0]).read_bytes()
    assert ours["miou"] == voc_void["miou"] and ours["num_pixels"] == voc_void["num_pixels"]


def test_evaluation_restores_the_mode_of_every_module(voc):
    """A model in the joint stage's training mode (--freeze-bn: a BatchNorm in eval mode inside a model in
    training mode) comes back in that mode: ``model.train(True)`` after the evaluation switched the frozen
    BatchNorm back to training, and its running statistics followed the next training batches."""
    loader = DataLoader(build_dataset(voc, "val"), batch_size=1)
    model = StubJoint()
    model.norm = nn.BatchNorm2d(3)  # not called by forward: only its mode matters here
    model.train()
    model.norm.eval()
    evaluate(model, loader, device="cpu", progress=False)
    assert model.training and model.head.training  # the model and its other modules: training again
    assert not model.norm.training  # the frozen BatchNorm: still frozen


def test_panels_show_the_baseline_then_the_joint_prediction(voc, tmp_path, monkeypatch):
    """The panel columns: image + superpixels | ground truth | baseline (``seg_logits``) | joint
    (``logits``), each from its own logits."""
    calls: list[tuple] = []
    monkeypatch.setattr(evaluate_mod, "save_panel", lambda path, *a, **k: (calls.append(a), path)[1])
    ds = build_dataset(voc, "val")
    model = StubJoint()
    evaluate(
        model, DataLoader(ds, batch_size=1), device="cpu", panels_dir=tmp_path, max_panels=1, progress=False
    )
    (args,) = calls
    sample = ds[0]
    with torch.no_grad():
        out = model(sample["seg_input"][None], sample["spixel_input"][None])
    base, joint = out["seg_logits"].argmax(1)[0], out["logits"].argmax(1)[0]
    assert not torch.equal(base, joint)  # the two columns differ on this image
    image, target, shown_base, shown_joint, superpixels = args
    assert torch.equal(image, sample["image"]) and torch.equal(target, sample["target"])
    assert torch.equal(shown_base, base) and torch.equal(shown_joint, joint)
    assert torch.equal(superpixels, out["superpixels"][0])


def test_evaluate_equals_manual_accumulation(voc):
    ds = build_dataset(voc, "val", crop_size=(16, 20))
    model = StubJoint()
    res = evaluate(
        model, DataLoader(ds, batch_size=2), device=torch.device("cpu"), progress=True, boundary_widths=(2,)
    )
    joint, base = SegmentationMetrics(boundary_widths=(2,)), SegmentationMetrics(boundary_widths=(2,))
    with torch.no_grad():
        for s in DataLoader(ds, batch_size=3):
            out = model(s["seg_input"], s["spixel_input"])
            joint.update(out["logits"].argmax(1), s["target"], out["superpixels"])
            base.update(out["seg_logits"].argmax(1), s["target"], out["superpixels"])
    assert _same(split_results(res)["joint"], joint.compute())
    assert _same(res["baseline"], base.compute())


def _same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_padding_changes_no_score_of_predictions_it_does_not_change(voc):
    """Evaluation padded to a multiple, or in crops larger than the images (batches of 2), scores the
    baseline, a per-pixel prediction on grid superpixels that padding does not move, exactly as the full
    images: padding is labelled 255 like VOC's void band, but the samples' ``region`` keeps it out of every
    metric. Before, its border counted as a label edge (40 % more width-1 band pixels here) and its pixels and
    superpixels in the superpixel statistics (1.6x the superpixels per image, consistency 21 % -> 48 %)."""
    results = []
    for kwargs, batch_size in (({}, 1), ({"pad_to_multiple": 32}, 1), ({"crop_size": 48}, 2)):
        loader = DataLoader(build_dataset(voc, "val", **kwargs), batch_size=batch_size)
        results.append(evaluate(StubJoint(), loader, device="cpu", progress=False)["baseline"])
    assert results[0]["boundary_pixels"]["1"] > 0 and results[0]["num_superpixels"] > 1
    assert _same(results[0], results[1]) and _same(results[0], results[2])


def test_model_without_superpixels_or_baseline(voc):
    loader = DataLoader(build_dataset(voc, "val"), batch_size=1)
    res = evaluate(StubJoint(superpixels=False, baseline=False), loader, device="cpu", progress=False)
    assert res["baseline"] is None and res["panels"] == []
    assert math.isnan(res["asa"]) and math.isnan(res["consistency"])
    assert 0 <= res["miou"] <= 1 and list(split_results(res)) == ["joint"]


def test_evaluate_without_tqdm_when_progress_is_off(voc, monkeypatch):
    """tqdm (examples extra) is imported only for a progress bar: machines without it can evaluate."""
    monkeypatch.setitem(sys.modules, "tqdm", None)  # None in sys.modules: the import raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError):
        import tqdm.auto  # noqa: F401  # the patch works
    loader = DataLoader(build_dataset(voc, "val"), batch_size=1)
    res = evaluate(StubJoint(), loader, device="cpu", progress=False)
    assert res["num_images"] == 3 and 0 <= res["miou"] <= 1
    with pytest.raises(ImportError):
        evaluate(StubJoint(), loader, device="cpu", progress=True)


class _BadModel(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, seg_input, spixel_input):
        return self.out(seg_input)


@pytest.mark.parametrize(
    "out, exc, match",
    [
        (lambda x: x, TypeError, "dict with 'logits'"),
        (lambda x: {"logits": x[:, :3]}, ValueError, "'logits' has shape"),
        (lambda x: {"logits": torch.zeros(x.shape[0], 21, 5, 5)}, ValueError, "'logits' has shape"),
        (
            lambda x: {"logits": torch.zeros(x.shape[0], 21, *x.shape[-2:]), "seg_logits": x[:, 0]},
            ValueError,
            "'seg_logits' must be",
        ),
    ],
)
def test_contract_violations(voc, out, exc, match):
    loader = DataLoader(build_dataset(voc, "val"), batch_size=1)
    with pytest.raises(exc, match=match):
        evaluate(_BadModel(out), loader, device="cpu", progress=False)


@pytest.mark.parametrize("shape", [(1, 16, 20), (2, 2, 16, 20), (2, 16, 19), (2 * 16 * 20,)])
def test_superpixels_need_one_map_per_image(voc, shape):
    """One map shared by a batch of 2 (or of another size) is refused with the contract's shapes (before: a
    bare ``reshape`` error, or for a flat map of the right count, silently read as one map per image)."""

    def out(x):
        logits = torch.zeros(x.shape[0], 21, *x.shape[-2:])
        return {"logits": logits, "superpixels": torch.zeros(shape, dtype=torch.long)}

    loader = DataLoader(build_dataset(voc, "val", crop_size=(16, 20)), batch_size=2)
    match = r"'superpixels' must be a Tensor\[B, H, W\] \(or \[B, 1, H, W\]\) .* \(2, 16, 20\) here"
    with pytest.raises(ValueError, match=match):
        evaluate(_BadModel(out), loader, device="cpu", progress=False)


def test_superpixels_with_a_channel_axis_score_as_without(voc):
    """The contract's other superpixel shape, ``[B, 1, H, W]``, is accepted and scored as ``[B, H, W]``."""

    class ChannelSuperpixels(StubJoint):
        def forward(self, seg_input, spixel_input):
            out = super().forward(seg_input, spixel_input)
            return {**out, "superpixels": out["superpixels"].unsqueeze(1)}

    loader = DataLoader(build_dataset(voc, "val", crop_size=(16, 20)), batch_size=2)
    plain = evaluate(StubJoint(), loader, device="cpu", progress=False)
    with_channel = evaluate(ChannelSuperpixels(), loader, device="cpu", progress=False)
    assert plain["num_superpixels"] > 1
    for key in ("seconds", "images_per_second"):
        plain.pop(key), with_channel.pop(key)
    assert _same(plain, with_channel)


@pytest.mark.parametrize("size_args", [["--full-size"], ["--crop-size", "16", "--batch-size", "2"]])
def test_cli(voc, tmp_path, monkeypatch, capsys, size_args):
    calls = {}

    def load_model_from_checkpoint(path, *, map_location="cpu", expect_stage=None):
        calls["path"], calls["map_location"], calls["expect"] = path, map_location, expect_stage
        model = {"arch": "joint", "deeplab": {"num_classes": 21}}
        return StubJoint().eval(), {"model": model, "stage": "joint", "root": tmp_path, "sha256": "5" * 64}

    fake = types.ModuleType("examples.voc_joint.checkpoint")
    fake.load_model_from_checkpoint = load_model_from_checkpoint
    fake.CheckpointError = ValueError
    (tmp_path / "ckpt.pt").touch()  # --checkpoint must name an existing file
    monkeypatch.setitem(sys.modules, "examples.voc_joint.checkpoint", fake)
    out = tmp_path / "eval"
    rc = evaluate_mod.main(
        [
            "--checkpoint",
            str(tmp_path / "ckpt.pt"),
            "--data-root",
            str(voc),
            "--split",
            "val",
            *size_args,
            "--output-dir",
            str(out),
            "--max-panels",
            "2",
            "--no-progress",
            "--boundary-widths",
            "1",
            "4",
        ]
    )
    assert rc == 0 and calls == {
        "path": tmp_path / "ckpt.pt",
        "map_location": "cpu",
        "expect": ("seg", "joint"),
    }
    text = capsys.readouterr().out
    assert "baseline" in text and "joint" in text and "aeroplane" in text
    assert "boundary mIoU, 4 px (%)" in text
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["split"] == "val" and payload["config"]["stage"] == "joint"
    # which weights, and the options that change the scores (the weights' hash once, not in config too)
    assert payload["checkpoint_sha256"] == "5" * 64 and "sha256" not in payload["config"]
    options = {"pad_to_multiple": None, "boundary_tolerance": 2, "device": "cpu", "amp": False}
    assert payload["options"] == options
    assert payload["joint"]["consistency"] == 1.0 and payload["joint"]["num_images"] == 3
    assert payload["resolution"] == ("full" if size_args == ["--full-size"] else 16)
    assert len(list((out / "panels").glob("*.png"))) == 2


def test_cli_full_size_reads_one_image_per_batch(voc, tmp_path, monkeypatch):
    """Full images of different sizes (as in VOC) are read one at a time, whatever the default --batch-size
    (it is for crops) says."""
    root = tmp_path / "mixed"
    shutil.copytree(voc, root)
    other = generate_synthetic_voc(tmp_path / "other", num_train=1, num_val=1, image_size=(20, 36), sbd=False)
    name = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[1]
    shutil.copy(other / "JPEGImages" / "synth_000001.jpg", root / "JPEGImages" / f"{name}.jpg")
    shutil.copy(other / "SegmentationClass" / "synth_000001.png", root / "SegmentationClass" / f"{name}.png")
    fake = types.ModuleType("examples.voc_joint.checkpoint")
    fake.CheckpointError = ValueError
    fake.load_model_from_checkpoint = lambda path, **kw: (
        StubJoint().eval(),
        {"model": {"arch": "joint", "deeplab": {"num_classes": 21}}, "sha256": "5" * 64},
    )
    monkeypatch.setitem(sys.modules, "examples.voc_joint.checkpoint", fake)
    (tmp_path / "ckpt.pt").touch()
    argv = [
        "--checkpoint",
        str(tmp_path / "ckpt.pt"),
        "--data-root",
        str(root),
        "--output-dir",
        str(tmp_path / "ev"),
    ]
    assert evaluate_mod.main([*argv, "--max-panels", "0", "--no-progress"]) == 0
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert payload["resolution"] == "full" and payload["joint"]["num_images"] == 3


def test_cli_threads_sets_torchs_cpu_threads(tmp_path, monkeypatch):
    """``--threads`` as in train.py, demo.py, ablation.py and the benchmarks (evaluate.py had none: on a
    shared CPU machine it took every core)."""
    calls: list[int] = []
    monkeypatch.setattr(evaluate_mod.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(evaluate_mod, "_main", lambda parser, args: 0)
    (tmp_path / "ckpt.pt").touch()
    assert evaluate_mod.main(["--checkpoint", str(tmp_path / "ckpt.pt"), "--threads", "3"]) == 0
    assert evaluate_mod.main(["--checkpoint", str(tmp_path / "ckpt.pt")]) == 0  # torch's choice: untouched
    assert calls == [3]


@pytest.mark.parametrize("size_args", [[], ["--full-size"]])
def test_cli_refuses_a_batch_size_for_full_images(size_args, capsys):
    """Full images go one at a time: a --batch-size given for them was ignored silently; it is refused."""
    parser = evaluate_mod.build_parser()
    argv = ["--checkpoint", __file__, *size_args, "--batch-size", "4"]
    with pytest.raises(SystemExit) as info:
        evaluate_mod.check_args(parser, parser.parse_args(argv))
    assert info.value.code == 2
    assert "error: --batch-size 4 applies to --crop-size: full images" in capsys.readouterr().err
    evaluate_mod.check_args(parser, parser.parse_args([*argv[:2], "--crop-size", "16", "--batch-size", "4"]))
    one = [*argv[:-1], "1"]  # what full images use anyway
    evaluate_mod.check_args(parser, parser.parse_args(one), one)
    default = [*argv[:-1], str(parser.get_default("batch_size"))]  # given, so refused, default value or not
    with pytest.raises(SystemExit):
        evaluate_mod.check_args(parser, parser.parse_args(default), default)


@pytest.mark.parametrize("kind", ["file", "dangling link"])
def test_cli_refuses_a_panels_entry_that_is_no_folder_before_evaluating(kind, tmp_path, capsys):
    """A file (or a link to nothing) named ``panels`` in the output folder made the evaluation fail once it
    was over, where the panels folder is made ("File exists"), and its results were lost. It is refused
    with the command line, unless no panels are drawn."""
    parser = evaluate_mod.build_parser()
    out = tmp_path / "ev"
    out.mkdir()
    if kind == "file":
        (out / "panels").write_text("")
    else:
        (out / "panels").symlink_to(tmp_path / "nowhere")
    argv = ["--checkpoint", __file__, "--output-dir", str(out)]
    with pytest.raises(SystemExit) as info:
        evaluate_mod.check_args(parser, parser.parse_args(argv), argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"the output folder {out} holds 'panels', which is no folder, where the panels go" in err, err
    evaluate_mod.check_args(
        parser, parser.parse_args([*argv, "--max-panels", "0"]), [*argv, "--max-panels", "0"]
    )
    (out / "panels").unlink()
    (out / "panels").mkdir()
    evaluate_mod.check_args(parser, parser.parse_args(argv), argv)


def test_cli_refuses_pad_to_multiple_with_crop_size(voc, tmp_path, capsys):
    """--pad-to-multiple pads full images; with --crop-size it used to be ignored silently."""
    (tmp_path / "ckpt.pt").touch()
    argv = ["--checkpoint", str(tmp_path / "ckpt.pt"), "--data-root", str(voc), "--crop-size", "16"]
    with pytest.raises(SystemExit) as info:
        evaluate_mod.main([*argv, "--pad-to-multiple", "8"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--pad-to-multiple" in err and "--crop-size" in err


def _fold_labels(src, dst, num_classes):
    """A copy of the VOC set ``src`` with every label folded into 0..num_classes-1 (255 kept)."""
    shutil.copytree(src, dst)
    for path in (dst / "SegmentationClass").glob("*.png"):
        with Image.open(path) as im:
            palette, lab = im.getpalette(), np.asarray(im)
        folded = Image.fromarray(np.where(lab == 255, lab, lab % num_classes).astype(np.uint8), mode="P")
        folded.putpalette(palette)
        folded.save(path)
    return dst


def _seg_checkpoint(tmp_path, num_classes):
    """A seg-stage checkpoint of a small DeepLabV3+ with ``num_classes`` classes, recorded in its config."""
    from examples.voc_joint.checkpoint import FORMAT, save_checkpoint
    from examples.voc_joint.models import DeepLabV3Plus, model_config

    torch.manual_seed(0)
    net = DeepLabV3Plus(num_classes, "resnet18", aspp_channels=8).eval()
    config = {"model": model_config(net), "args": {"num_classes": num_classes}}
    ckpt = {"format": FORMAT, "version": 1, "stage": "seg", "config": config, "model": net.state_dict()}
    return save_checkpoint(tmp_path / "seg" / "checkpoint.pt", ckpt)


def _evaluate(path, root, out):
    """evaluate.py's exit status for the checkpoint ``path`` on the data set ``root``, results in ``out``."""
    argv = ["--checkpoint", str(path), "--data-root", str(root), "--output-dir", str(out), "--no-progress"]
    return evaluate_mod.main(argv)


def test_cli_takes_the_class_count_from_the_checkpoint(voc, tmp_path, capsys):
    """A seg checkpoint trained with --num-classes 5 evaluates with 5 classes (not VOC's default 21)."""
    path = _seg_checkpoint(tmp_path, 5)
    root = _fold_labels(voc, tmp_path / "voc5", 5)
    assert _evaluate(path, root, tmp_path / "ev") == 0
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert list(payload["joint"]["per_class_iou"]) == ["0", "1", "2", "3", "4"]
    assert payload["joint"]["num_images"] == 3 and "per-class IoU" in capsys.readouterr().out
    # the masks are read against the checkpoint's 5 classes: an unfolded label is a data error naming its file
    assert _evaluate(path, voc, tmp_path / "e2") == 1
    err = capsys.readouterr().err
    assert re.search(r"error: mask file .*\.png. has label values outside \{0\.\.4, 255\}", err), err


def test_more_classes_than_the_palette_has_colours_are_refused_before_any_image_with_panels(
    voc, tmp_path, capsys
):
    """A 300-class model (the models take up to 1024) with panels: refused at the start (the panels' colorize
    refused class 256 and above in the middle of the evaluation). On the command line no VOC-format mask holds
    such classes (8-bit, 255 ignored), which is what evaluate.py says first; the API names the panels' limit
    and the way out."""
    path = _seg_checkpoint(tmp_path, 300)
    out = tmp_path / "ev"
    with pytest.raises(SystemExit) as info:  # before any image is read
        _evaluate(path, voc, out)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: the checkpoint's model has 300 classes, and VOC-format masks (8-bit, 255 ignored)" in err
    assert not out.exists()
    with pytest.raises(ValueError, match=r"has 300 classes.*evaluate it with max_panels=0"):
        evaluate_mod.evaluate(
            torch.nn.Identity(), [], device="cpu", num_classes=300, panels_dir=tmp_path / "p", max_panels=1
        )
    # without panels, or with 255 classes, nothing is refused; 256 classes would draw class 255 as void
    assert evaluate_mod.evaluate(torch.nn.Identity(), [], device="cpu", num_classes=300, max_panels=0)
    assert evaluate_mod.evaluate(
        torch.nn.Identity(), [], device="cpu", num_classes=255, panels_dir=tmp_path / "p", max_panels=1
    )
    with pytest.raises(
        ValueError, match=r"has 256 classes.*in 255 of the VOC palette's 256 colours \(index 255"
    ):
        evaluate_mod.evaluate(
            torch.nn.Identity(), [], device="cpu", num_classes=256, panels_dir=tmp_path / "q", max_panels=1
        )


def test_more_classes_than_voc_masks_can_hold_are_refused_before_any_image_without_panels(
    voc, tmp_path, capsys
):
    """A 300-class model with --max-panels 0: VOC-format masks (8-bit, 255 ignored) hold classes 0..254 only.
    The data set's own check raised a ValueError that evaluate.py did not catch (a traceback); it is refused
    at the start now, with exit status 2, naming the class count and the masks' limit."""
    path = _seg_checkpoint(tmp_path, 300)
    out = tmp_path / "ev"
    argv = ["--checkpoint", str(path), "--data-root", str(voc), "--output-dir", str(out), "--no-progress"]
    with pytest.raises(SystemExit) as info:
        evaluate_mod.main([*argv, "--max-panels", "0"])
    assert info.value.code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert "error: the checkpoint's model has 300 classes, and VOC-format masks (8-bit, 255 ignored) " in err
    assert "hold classes 0..254 only" in err


def test_cli_reads_labels_beyond_voc_for_a_checkpoint_with_more_classes(voc, tmp_path):
    """A 30-class checkpoint evaluates masks with labels 21..29 (read against VOC's 21 classes, they were
    refused)."""
    path = _seg_checkpoint(tmp_path, 30)
    root = shutil.copytree(voc, tmp_path / "voc30")
    for mask in (root / "SegmentationClass").glob("*.png"):
        with Image.open(mask) as im:
            palette, lab = im.getpalette(), np.asarray(im).copy()
        lab[lab == 1] = 25
        lab[0, 0] = 25
        shifted = Image.fromarray(lab.astype(np.uint8), mode="P")
        shifted.putpalette(palette)
        shifted.save(mask)
    assert _evaluate(path, root, tmp_path / "ev") == 0
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert len(payload["joint"]["per_class_iou"]) == 30 and payload["joint"]["num_images"] == 3


def test_evaluate_on_device_matches_cpu(voc, device):
    loader = DataLoader(build_dataset(voc, "val"), batch_size=1)
    cpu = evaluate(StubJoint(), loader, device="cpu", progress=False)
    dev = evaluate(StubJoint().to(device), loader, device=device, progress=False)
    assert dev["consistency"] == 1.0
    assert dev["num_pixels"] == cpu["num_pixels"]
    assert abs(dev["miou"] - cpu["miou"]) < 0.02


# ------------------------------------------------------------------ CLI: data errors, reruns, seg checkpoints
PROG = "python examples/voc_joint/evaluate.py"


def _fake_checkpoint(
    monkeypatch, tmp_path, stage: str = "joint", model: nn.Module | None = None, args: dict | None = None
):
    """--checkpoint: an existing file that loads as ``model`` (a StubJoint) of ``stage`` (with the recorded
    options ``args``, if given)."""
    fake = types.ModuleType("examples.voc_joint.checkpoint")
    fake.CheckpointError = ValueError
    config = {"model": {"arch": stage, "deeplab": {"num_classes": 21}}, "stage": stage, "sha256": "5" * 64}
    if args is not None:
        config["args"] = args
    fake.load_model_from_checkpoint = lambda path, **kw: ((model or StubJoint()).eval(), config)
    monkeypatch.setitem(sys.modules, "examples.voc_joint.checkpoint", fake)
    (tmp_path / "ckpt.pt").touch()
    return ["--checkpoint", str(tmp_path / "ckpt.pt"), "--no-progress"]


def _cli_argv(monkeypatch, tmp_path, root) -> list[str]:
    """evaluate.py's options for a fake checkpoint (:func:`_fake_checkpoint`) on the data set ``root``, into
    ``tmp_path / "ev"``."""
    return [
        *_fake_checkpoint(monkeypatch, tmp_path),
        "--data-root",
        str(root),
        "--output-dir",
        str(tmp_path / "ev"),
    ]


def test_without_data_root_the_checkpoints_own_data_is_scored(voc, tmp_path, monkeypatch, capsys) -> None:
    """Without ``--data-root`` a checkpoint trained on a user's data was scored on the synthetic set, without
    a word (the header named no folder; metrics.json's ``data_root`` differed from its ``config``'s). It is
    scored on the folder its run trained on, named on the console; a recorded folder that is not here is
    refused (exit status 2), naming it; a checkpoint that used the synthetic set gets the synthetic set."""
    own = tmp_path / "own_voc"
    shutil.copytree(voc, own)
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, args={"data_root": str(own)}), "--output-dir"]
    assert evaluate_mod.main([*argv, str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert f"[evaluate] data: {own} (the data the checkpoint's run trained on; --data-root to change)" in out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["data_root"] == str(own)
    # --data-root wins, and says where its folder comes from
    assert evaluate_mod.main([*argv, str(tmp_path / "ev2"), "--data-root", str(voc)]) == 0
    assert f"[evaluate] data: {voc} (--data-root)" in capsys.readouterr().out
    shutil.rmtree(own)
    with pytest.raises(SystemExit) as stop:
        evaluate_mod.main([*argv, str(tmp_path / "ev3")])
    err = capsys.readouterr().err
    assert (
        stop.value.code == 2 and f"the checkpoint's run trained on the data in '{own}', which is no " in err
    )
    assert not (tmp_path / "ev3").exists()
    # a recorded path this machine cannot even look at (too long here): the same refusal, not a traceback
    long = tmp_path / ("a" * 300) / "voc"
    argv_long = [*_fake_checkpoint(monkeypatch, tmp_path, args={"data_root": str(long)}), "--output-dir"]
    with pytest.raises(SystemExit) as stop:
        evaluate_mod.main([*argv_long, str(tmp_path / "ev5")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "voc', which is unreadable here (File name too long): pass " in err, err
    synthetic = []
    monkeypatch.setattr(evaluate_mod, "ensure_synthetic_voc", lambda: synthetic.append(1) or voc)
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, args={"data_root": None}), "--output-dir"]
    assert evaluate_mod.main([*argv, str(tmp_path / "ev4")]) == 0 and synthetic == [1]
    assert f"[evaluate] data: {voc} (the data the checkpoint's run trained on; " in capsys.readouterr().out


def test_a_second_evaluation_into_the_same_folder_is_refused_while_one_runs(
    voc, tmp_path, monkeypatch, capsys
) -> None:
    """Two evaluations into one folder (two --boundary-widths of one checkpoint, its default eval_val folder)
    each replaced metrics.json and panels/ when done, so the folder could end with one run's metrics and the
    other's panels. The folder is locked for the run: a second evaluation is refused (exit status 2) naming
    the holder, and writes nothing; once the first is done the folder is free again."""
    from examples.voc_joint.locking import FolderLock

    argv = _cli_argv(monkeypatch, tmp_path, voc)
    out = tmp_path / "ev"
    with FolderLock(out):  # another evaluation (or run) holds the folder
        with pytest.raises(SystemExit) as stop:
            evaluate_mod.main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"in use by pid {os.getpid()} on host" in err, err
        assert not (out / "metrics.json").exists() and not (out / "panels").exists()
    assert evaluate_mod.main(argv) == 0 and (out / "metrics.json").is_file()
    assert evaluate_mod.main(argv) == 0  # the lock was released at the end of the run


def _results(folder: Path) -> dict[Path, bytes]:
    """The files of an evaluation folder but its lock file (which each run rewrites with its holder)."""
    from examples.voc_joint.locking import LOCK_NAME

    return {
        p.relative_to(folder): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.name != LOCK_NAME
    }


def _staged(folder: Path) -> list[str]:
    """The hidden entries of an evaluation folder but its lock file: staging folders left behind."""
    from examples.voc_joint.locking import LOCK_NAME

    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME)


def _bad_mask_voc(voc, tmp_path):
    root = tmp_path / "badmask"
    shutil.copytree(voc, root)
    name = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[1]  # the second image
    Image.fromarray(np.full(SIZE, 30, np.uint8), mode="L").save(root / "SegmentationClass" / f"{name}.png")
    return root, name


@pytest.mark.parametrize("case", ["split", "root", "mask", "mask_in_worker"])
def test_cli_data_errors_are_one_line_with_exit_status_1(voc, tmp_path, monkeypatch, capsys, case):
    """A missing split, a folder that is no VOC root or a bad mask: one line naming the problem, exit 1 (as
    train.py), never a traceback."""
    argv = [*_fake_checkpoint(monkeypatch, tmp_path), "--output-dir", str(tmp_path / "ev"), "--data-root"]
    if case == "split":
        argv += [str(voc), "--split", "trainx"]
        expected = "trainx"
    elif case == "root":
        (tmp_path / "empty").mkdir()
        argv += [str(tmp_path / "empty")]
        expected = str(tmp_path / "empty")
    else:
        root, name = _bad_mask_voc(voc, tmp_path)
        argv += [str(root), *(["--workers", "1"] if case == "mask_in_worker" else [])]
        expected = f"{name}.png"
    assert evaluate_mod.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: ") and err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in err
    if case == "mask_in_worker":
        assert err.rstrip().endswith("(DataLoader worker 0)")


def test_a_data_error_in_a_worker_stops_the_workers_before_the_error_returns(voc, tmp_path, monkeypatch):
    """The loader's workers are stopped when a data error re-raised from one of them ends the evaluation, not
    left to the garbage collector (the traceback keeps the iterator): collected later, its queues were
    finalized first and the shutdown waited 5 s or more (20 s a test in the suite)."""
    import gc

    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

    root, _ = _bad_mask_voc(voc, tmp_path)
    argv = [*_fake_checkpoint(monkeypatch, tmp_path), "--output-dir", str(tmp_path / "ev")]
    gc.collect()
    gc.disable()  # what the error leaves alive, before any collection
    try:
        assert evaluate_mod.main([*argv, "--data-root", str(root), "--workers", "2"]) == 1
        live = [
            w
            for obj in gc.get_objects()
            if type(obj) is _MultiProcessingDataLoaderIter  # (isinstance reads deprecated objects)
            for w in obj._workers
            if w.is_alive()
        ]
        assert live == []
    finally:
        gc.enable()


def test_cli_names_every_missing_listed_file_before_it_evaluates(voc, tmp_path, monkeypatch, capsys):
    """A listed image or mask that does not exist stopped the evaluation when the loader reached it, naming
    only that file, after the images before it had been run through the model; every listed file is checked
    first and all missing ones are named at once (with a near miss), before the output folder is made."""
    root = tmp_path / "voc"
    shutil.copytree(voc, root)
    names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    image = root / "JPEGImages" / f"{names[-1]}.jpg"
    image.rename(image.with_suffix(".JPG"))
    (root / "SegmentationClass" / f"{names[0]}.png").unlink()
    argv = _cli_argv(monkeypatch, tmp_path, root)
    assert evaluate_mod.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: 2 files listed in ") and err.count("\n") == 1, err
    assert f"{names[0]}.png'" in err, err
    assert f"{names[-1]}.jpg' (found '{names[-1]}.JPG' in its folder" in err, err
    assert not (tmp_path / "ev").exists()


def test_cli_counts_one_missing_file_in_the_singular(voc, tmp_path, monkeypatch, capsys):
    """One missing listed file was reported as "1 files ... do not exist"."""
    root = tmp_path / "voc"
    shutil.copytree(voc, root)
    name = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    (root / "SegmentationClass" / f"{name}.png").unlink()
    assert evaluate_mod.main(_cli_argv(monkeypatch, tmp_path, root)) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: 1 file listed in ") and " does not exist: '" in err, err


def test_cli_missing_file_list_counts_the_files_it_leaves_out(voc, tmp_path, monkeypatch, capsys):
    """The one-line list of missing files showed 5, then '...' without a count; it shows the first 20 and
    counts the rest, as the header pass does (``headers.shown_problems``)."""
    root = tmp_path / "voc"
    shutil.copytree(voc, root)
    val_list = root / "ImageSets" / "Segmentation" / "val.txt"
    val_list.write_text(val_list.read_text() + "".join(f"gone_{i:02d}\n" for i in range(11)))
    argv = _cli_argv(monkeypatch, tmp_path, root)
    assert evaluate_mod.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: 22 files listed in ") and err.count("\n") == 1, err
    assert err.count("gone_") == 20 and err.rstrip().endswith("; ... and 2 more"), err


def test_cli_looks_for_the_near_misses_of_the_shown_missing_files_only(voc, tmp_path, monkeypatch, capsys):
    """The near miss of every missing file was looked for (a listing of its folder: 30 ms in a folder of
    VOC's 17125 JPEGs), though 20 are shown: a val list of 1449 names of another data set took 41 s to be
    refused instead of 2."""
    root = tmp_path / "voc"
    shutil.copytree(voc, root)
    val_list = root / "ImageSets" / "Segmentation" / "val.txt"
    val_list.write_text("".join(f"gone_{i:02d}\n" for i in range(30)))
    hint, looked_for = evaluate_mod.missing_file_hint, []
    monkeypatch.setattr(evaluate_mod, "missing_file_hint", lambda p: looked_for.append(p) or hint(p))
    argv = _cli_argv(monkeypatch, tmp_path, root)
    assert evaluate_mod.main(argv) == 1
    err = capsys.readouterr().err
    assert "error: 60 files listed in " in err and err.rstrip().endswith("; ... and 40 more"), err
    assert len(looked_for) == 20, looked_for


def test_cli_names_every_bad_header_in_one_line_before_it_evaluates(voc, tmp_path, monkeypatch, capsys):
    """Files that exist but that the reader refuses (here a mask of another size and a JPEG mask) stopped the
    evaluation one at a time, when the loader reached them; the header pass names both first, on one line,
    before the model runs or the output folder is made. --no-check-files leaves them to the reader."""
    root = tmp_path / "voc"
    shutil.copytree(voc, root)
    names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    small, jpeg = (root / "SegmentationClass" / f"{n}.png" for n in (names[1], names[2]))
    Image.new("L", (5, 4)).save(small)
    Image.new("L", SIZE[::-1]).save(jpeg, format="JPEG")
    model = StubJoint()
    model.forward = lambda *a: pytest.fail("the model ran")  # type: ignore[method-assign]
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, model=model), "--data-root", str(root)]
    assert evaluate_mod.main([*argv, "--output-dir", str(tmp_path / "ev")]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"{PROG}: error: 2 problems in the headers of the 6 listed") and err.count("\n") == 1
    )
    assert f"'{small}' is 4x5 (HxW)" in err and f"'{jpeg}' is a JPEG file" in err, err
    assert not (tmp_path / "ev").exists()
    model.forward = StubJoint().forward  # type: ignore[method-assign]
    assert evaluate_mod.main([*argv, "--output-dir", str(tmp_path / "ev2"), "--no-check-files"]) == 1
    err = capsys.readouterr().err
    assert "problems in the headers" not in err and f"'{small}' is 4x5 (HxW)" in err and str(jpeg) not in err


def test_the_panel_file_names_of_different_entries_never_collide() -> None:
    """An entry that spells an escape itself (``a%2F0001``) keeps a file of its own, beside ``a/0001``."""
    entries = ["a/0001", "a%2F0001", "a%252F0001", "a\\0001", "a%5C0001", "0001"]
    files = [evaluate_mod._panel_file_name(e) for e in entries]
    assert len(set(files)) == len(entries) and all("/" not in f and "\\" not in f for f in files), files
    assert files[0] == "a%2F0001.png" and files[1] == "a%252F0001.png"


def test_a_panel_file_name_too_long_for_the_system_is_shortened_and_stays_unique(tmp_path) -> None:
    """A deep list entry (each part a valid file name) or one of many escapes made a panel name over 255
    bytes: its write failed with "File name too long" and stopped the evaluation. Such a name keeps its first
    bytes and ends in ``~`` and 16 hex digits of the full name's hash; ``~`` in a name is escaped, so a
    shortened name never equals another entry's."""
    entries = ["d" * 200 + "/" + "e" * 60, "d" * 200 + "/" + "e" * 59 + "f", "%" * 250, "é" * 200, "a~b"]
    files = [evaluate_mod._panel_file_name(e) for e in entries]
    assert len(set(files)) == len(entries)
    assert all(len(f.encode()) <= evaluate_mod.PANEL_STEM_MAX + 4 for f in files)
    assert files[0].startswith("d" * 200 + "%2F") and re.search(r"~[0-9a-f]{16}\.png$", files[0])
    assert files[4] == "a%7Eb.png"
    digest = hashlib.sha256(entries[0].encode()).hexdigest()[:16]  # of the name, not of its escaped form
    assert files[0].endswith(f"~{digest}.png")
    most = evaluate_mod.PANEL_STEM_MAX
    assert most == 240 and evaluate_mod._panel_file_name("a" * most) == "a" * most + ".png"  # kept whole
    assert re.fullmatch(
        rf"a{{{most - 17}}}~[0-9a-f]{{16}}\.png", evaluate_mod._panel_file_name("a" * (most + 1))
    )
    for f in files:  # each can be written
        (tmp_path / f).write_bytes(b"")


def test_a_seg_checkpoints_panel_shows_its_one_prediction_as_seg(tmp_path, monkeypatch) -> None:
    """A seg checkpoint's model (``SegmentationOnly``: no superpixels, ``seg_logits`` is ``logits``) got the
    joint titles: "image + superpixels" with none drawn, and the same prediction twice as "baseline" and
    "joint". Its panel now titles the image "image" and shows the prediction once, as "seg" (the tables'
    single column); a model with superpixels keeps the four titles."""
    from examples.voc_joint.models.joint import SegmentationOnly

    calls: list[tuple] = []

    def record(path, image, target, baseline, joint, superpixels=None, **kwargs):
        calls.append((baseline, joint, superpixels, kwargs["titles"]))
        return Path(path)

    monkeypatch.setattr(evaluate_mod, "save_panel", record)
    torch.manual_seed(0)
    model = SegmentationOnly(torch.nn.Conv2d(3, 21, 1))
    batch = {
        "seg_input": torch.randn(1, 3, 8, 8),
        "spixel_input": torch.zeros(1, 3, 8, 8),
        "target": torch.zeros(1, 8, 8, dtype=torch.long),
        "image": torch.rand(1, 3, 8, 8),
        "name": ["s"],
    }
    evaluate_mod.evaluate(model, [batch], device="cpu", panels_dir=tmp_path, progress=False)
    ((baseline, joint, superpixels, titles),) = calls
    assert titles == ("image", "ground truth", "seg", "") and joint is None and superpixels is None
    assert torch.equal(baseline, model(batch["seg_input"])["logits"].argmax(1)[0])

    class Joint(torch.nn.Module):  # the contract of a joint model: its own logits, seg_logits, superpixels
        def forward(self, seg_input, spixel_input):
            s = model(seg_input)["logits"]
            ids = torch.arange(64).view(1, 8, 8) // 16
            return {"logits": s.flip(1), "seg_logits": s, "superpixels": ids}

    calls.clear()
    evaluate_mod.evaluate(Joint(), [batch], device="cpu", panels_dir=tmp_path / "j", progress=False)
    ((baseline, joint, superpixels, titles),) = calls
    assert titles == ("image + superpixels", "ground truth", "baseline", "joint") and superpixels is not None
    assert baseline is not None and joint is not None and not torch.equal(baseline, joint)

    class TwoPredictions(torch.nn.Module):  # no superpixels, but logits of its own: baseline and joint
        def forward(self, seg_input, spixel_input):
            s = model(seg_input)["logits"]
            return {"logits": s.flip(1), "seg_logits": s}

    calls.clear()
    evaluate_mod.evaluate(TwoPredictions(), [batch], device="cpu", panels_dir=tmp_path / "t", progress=False)
    ((baseline, joint, superpixels, titles),) = calls
    assert titles == ("image", "ground truth", "baseline", "joint") and None not in (baseline, joint)
    # the "no superpixels" control (mode "none", no stack) returns its seg_logits as its logits, and its
    # superpixels: a joint model's panel, as its tables' two columns
    from examples.voc_joint.models import DeepLabV3Plus, JointModel, SpixelFCN

    deeplab, spixel = DeepLabV3Plus(21, "resnet18", aspp_channels=8), SpixelFCN(cell_size=4, width=4)
    control = JointModel(deeplab, spixel, mode="none", fusion=False)
    calls.clear()
    evaluate_mod.evaluate(control, [batch], device="cpu", panels_dir=tmp_path / "c", progress=False)
    ((baseline, joint, superpixels, titles),) = calls
    assert titles[2:] == ("baseline", "joint") and baseline is not None and joint is not None


def test_cli_panels_of_images_in_subfolders_of_the_same_file_name_are_all_kept(
    voc, tmp_path, monkeypatch, capsys
):
    """List entries may name images in subfolders ('site_a/0001', 'site_b/0001'); their panels were moved into
    panels/ by file name alone, so the second overwrote the first ('3 PNG' printed, 2 files, metrics.json
    listing one path twice). A panel's file name now holds the whole entry."""
    root = tmp_path / "voc"
    shutil.copytree(voc, root)
    names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    entries = ["site_a/0001", "site_b/0001", names[0]]
    for entry, name in zip(entries[:2], names[1:3], strict=True):
        for folder, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
            (root / folder / entry).parent.mkdir(exist_ok=True)
            (root / folder / f"{name}.{ext}").rename(root / folder / f"{entry}.{ext}")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(entries) + "\n")
    argv = _cli_argv(monkeypatch, tmp_path, root)
    assert evaluate_mod.main(argv) == 0
    panels = json.loads((tmp_path / "ev" / "metrics.json").read_text())["panels"]
    assert len(set(panels)) == 3 and all(Path(p).is_file() for p in panels), panels
    assert sorted(p.name for p in (tmp_path / "ev" / "panels").iterdir()) == sorted(
        Path(p).name for p in panels
    )
    assert Path(panels[0]).name == "site_a%2F0001.png"


def test_cli_rerun_replaces_the_panels_and_writes_metrics_atomically(voc, tmp_path, monkeypatch, capsys):
    """A second evaluation into the same --output-dir leaves only its own panels (files of your own in panels/
    stay), writes metrics.json through a rename, and a failed one leaves the earlier results as they were."""
    base = _cli_argv(monkeypatch, tmp_path, voc)
    panels = tmp_path / "ev" / "panels"

    def run(n: int, argv: list[str] = base) -> dict:
        assert evaluate_mod.main([*argv, "--max-panels", str(n)]) == 0
        payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
        assert sorted(payload["panels"]) == sorted(str(p) for p in panels.glob("*.png"))
        assert _staged(tmp_path / "ev") == []  # no staging
        return payload

    assert len(run(3)["panels"]) == 3
    (panels / "notes.txt").write_text("mine")
    assert len(run(1)["panels"]) == 1
    assert (panels / "notes.txt").read_text() == "mine"
    assert run(0)["panels"] == [] and [p.name for p in panels.iterdir()] == ["notes.txt"]
    (panels / "notes.txt").unlink()
    assert run(0)["panels"] == [] and not panels.exists()  # no empty folder left
    before = run(2)
    snapshot = {p.name: p.read_bytes() for p in panels.iterdir()}
    metrics = (tmp_path / "ev" / "metrics.json").read_bytes()
    root, _ = _bad_mask_voc(voc, tmp_path)  # fails at its second image, after its first panel
    argv = [*base[:-4], "--data-root", str(root), "--output-dir", str(tmp_path / "ev"), "--max-panels", "3"]
    assert evaluate_mod.main(argv) == 1
    assert {p.name: p.read_bytes() for p in panels.iterdir()} == snapshot and len(before["panels"]) == 2
    assert (tmp_path / "ev" / "metrics.json").read_bytes() == metrics
    assert _staged(tmp_path / "ev") == []
    written = []
    monkeypatch.setattr(
        evaluate_mod, "write_text_atomic", lambda path, text, before: (before(), written.append(path))
    )
    assert evaluate_mod.main([*base, "--max-panels", "0"]) == 0
    assert written == [tmp_path / "ev" / "metrics.json"]
    capsys.readouterr()


def test_cli_seg_checkpoint_prints_one_column(voc, tmp_path, monkeypatch, capsys):
    """A seg checkpoint has no superpixels: its "baseline" and "joint" were two identical columns; the tables
    show one, named "seg" (metrics.json keeps both keys)."""
    argv = _fake_checkpoint(monkeypatch, tmp_path, stage="seg", model=StubJoint(superpixels=False))
    assert evaluate_mod.main([*argv, "--data-root", str(voc), "--output-dir", str(tmp_path / "ev")]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "seg"] and "seg checkpoint" in text
    assert "baseline" not in text and "joint" not in text
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())  # the documented keys, as before
    assert payload["joint"] == payload["baseline"] and payload["joint"]["num_images"] == 3


def test_cli_metrics_record_the_torch_versions(voc, tmp_path, monkeypatch, capsys):
    """metrics.json says which torch evaluated (``torch``) and, in its ``config``, which trained the
    checkpoint (``torch_version``): results may differ between releases."""
    argv = _fake_checkpoint(monkeypatch, tmp_path)
    assert evaluate_mod.main([*argv, "--data-root", str(voc), "--output-dir", str(tmp_path / "ev")]) == 0
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert payload["torch"] == str(torch.__version__)
    capsys.readouterr()


@pytest.mark.parametrize("device", ["cpu:3", "cpu:0"])
def test_a_cpu_device_with_an_index_is_refused(device, capsys):
    """``--device cpu:3`` was accepted (and ran on the one CPU): the shared ``--device`` type of train.py and
    evaluate.py refuses it at parse time."""
    from examples.voc_joint.cli import device_arg

    for parser in (evaluate_mod.build_parser(), train_options.build_parser()):
        action = next(a for a in parser._actions if a.dest == "device")
        assert action.type is device_arg
    with pytest.raises(SystemExit) as info:
        evaluate_mod.build_parser().parse_args(["--checkpoint", __file__, "--device", device])
    assert info.value.code == 2
    assert f"argument --device: device '{device}': the CPU is one device" in capsys.readouterr().err
    assert device_arg("cpu") == "cpu"


def test_training_overlap_reads_the_checkpoints_training_list(voc, tmp_path):
    """The evaluated images that the checkpoint's training split lists; None when that list cannot be read."""
    from examples.voc_joint.evaluate import training_overlap

    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    train = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    args = {"data_root": str(voc), "sbd": False, "train_split": "train"}
    assert training_overlap({"args": args}, val) == []
    assert training_overlap({"args": {**args, "train_split": "trainval"}}, val) == val
    assert training_overlap({"args": args}, [val[0], train[1], train[0]]) == [train[1], train[0]]
    assert training_overlap({"args": {**args, "data_root": str(tmp_path / "gone")}}, val) is None
    assert training_overlap({"args": {**args, "train_split": "nosuch"}}, val) is None
    assert training_overlap({"model": {}}, val) is None  # no training options recorded


@pytest.mark.parametrize("root", [5, ["a"], {"b": 1}])
def test_training_overlap_of_a_data_root_that_is_no_path_is_unknown(voc, root):
    """A checkpoint's recorded ``data_root`` that is no str (a crafted or edited record) raised TypeError
    ("expected str, bytes or os.PathLike object") after the whole evaluation, which was lost."""
    from examples.voc_joint.evaluate import training_overlap

    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert training_overlap({"args": {"data_root": root, "sbd": False, "train_split": "train"}}, val) is None


@pytest.mark.parametrize("field", ["data_root", "train_split"])
def test_training_overlap_of_a_recorded_path_with_a_nul_is_unknown(voc, field):
    """A NUL in the recorded ``data_root`` or ``train_split`` (a crafted record) raised ``ValueError:
    embedded null byte`` after the whole evaluation, and ``metrics.json`` was never written."""
    from examples.voc_joint.evaluate import training_overlap

    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    args = {"data_root": str(voc), "sbd": False, "train_split": "train"}
    args[field] = args[field][:2] + "\x00" + args[field][2:]
    assert training_overlap({"args": args}, val) is None


def test_training_overlap_follows_the_checkpoints_a_joint_model_was_fine_tuned_from(voc, tmp_path):
    """A joint stage on ``train`` from a DeepLabV3+ pretrained on ``trainval`` (--allow-val-overlap) has seen
    the val images: counted through ``config["sources"]`` (it read 0 before); a source that is gone or was
    replaced since (another SHA-256) makes the count unknown."""
    from examples.voc_joint.evaluate import training_overlap

    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    args = {"data_root": str(voc), "sbd": False, "train_split": "train"}
    seg = tmp_path / "seg.pt"
    torch.save({"config": {"args": {**args, "train_split": "trainval"}}, "sha256": "a" * 64}, seg)
    spixel = tmp_path / "spixel.pt"
    torch.save({"config": {"args": args}, "sha256": "b" * 64}, spixel)
    sources = {
        "seg_checkpoint": {"path": str(seg), "sha256": "a" * 64},
        "spixel_checkpoint": {"path": str(spixel), "sha256": "b" * 64},
    }
    assert training_overlap({"args": args, "sources": sources}, val) == val
    assert (
        training_overlap({"args": args, "sources": {"spixel_checkpoint": sources["spixel_checkpoint"]}}, val)
        == []
    )
    replaced = {**sources, "seg_checkpoint": {"path": str(seg), "sha256": "c" * 64}}
    assert training_overlap({"args": args, "sources": replaced}, val) is None
    seg.unlink()
    assert training_overlap({"args": args, "sources": sources}, val) is None


def test_the_other_folder_note_counts_the_folders_of_the_source_checkpoints(tmp_path):
    """The overlap warning's note ("the names are compared ... held out after all") compared the evaluated
    folder with the joint checkpoint's own folder only: images of the folder a source (seg) checkpoint trained
    on were called possibly held out, though that checkpoint trained on those very images. The note names
    every folder whose list was read, and is left out when the evaluated folder is one of them."""
    from examples.voc_joint.evaluate import _other_folder_note, training_overlap

    def voc_folder(name: str, train: list[str]) -> Path:
        root = tmp_path / name
        (root / "JPEGImages").mkdir(parents=True)
        (root / "ImageSets" / "Segmentation").mkdir(parents=True)
        (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(train) + "\n")
        return root

    joint_root, seg_root = voc_folder("A", ["a1"]), voc_folder("B", ["2008_000001"])
    other = voc_folder("C", [])
    torch.save({"config": {"args": {"data_root": str(seg_root), "train_split": "train"}}}, tmp_path / "s.pt")
    config = {
        "args": {"data_root": str(joint_root), "train_split": "train"},
        "sources": {"seg_checkpoint": {"path": str(tmp_path / "s.pt")}},
    }
    folders: list[Path] = []
    assert training_overlap(config, ["2008_000001"], folders) == ["2008_000001"]
    assert _other_folder_note(folders, seg_root) == ""
    assert _other_folder_note(folders, joint_root) == ""
    note = _other_folder_note(folders, other)
    assert f"the checkpoint trained on {joint_root}, {seg_root}, these images are read from {other};" in note


def test_training_overlap_reads_each_source_checkpoint_once_even_in_a_cycle(voc, tmp_path):
    """Sources that name each other (a crafted record, or a checkpoint written over a file it was made from)
    are each read once: no endless recursion, the lists of both counted."""
    from examples.voc_joint.evaluate import training_overlap

    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    args = {"data_root": str(voc), "sbd": False, "train_split": "train"}
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    torch.save(
        {"config": {"args": {**args, "train_split": "val"}, "sources": {"s": {"path": str(second)}}}}, first
    )
    torch.save({"config": {"args": args, "sources": {"s": {"path": str(first)}}}}, second)
    assert training_overlap({"args": args, "sources": {"s": {"path": str(first)}}}, val) == val


@pytest.mark.parametrize(
    "train_split, elsewhere", [("train", False), ("trainval", False), ("trainval", True)]
)
def test_cli_warns_when_the_checkpoint_was_trained_on_the_evaluated_images(
    voc, tmp_path, monkeypatch, capsys, train_split, elsewhere
):
    """A checkpoint trained on a split holding the evaluated images (``--allow-val-overlap``, or a trainval
    model evaluated on val) scores images it has seen: evaluate.py says so on stderr and in metrics.json. The
    names are compared (VOC's are global): images read from another folder that reuses them (every generated
    set names its images ``synth_<n>``) were called trained on without a word; the warning names both
    folders then."""

    def load_model_from_checkpoint(path, *, map_location="cpu", expect_stage=None):
        model = {"arch": "joint", "deeplab": {"num_classes": 21}}
        args = {"data_root": str(voc), "sbd": False, "train_split": train_split}
        return StubJoint().eval(), {"model": model, "stage": "joint", "args": args, "sha256": "5" * 64}

    fake = types.ModuleType("examples.voc_joint.checkpoint")
    fake.load_model_from_checkpoint = load_model_from_checkpoint
    fake.CheckpointError = ValueError
    (tmp_path / "ckpt.pt").touch()
    monkeypatch.setitem(sys.modules, "examples.voc_joint.checkpoint", fake)
    out = tmp_path / "eval"
    evaluated = shutil.copytree(voc, tmp_path / "other") if elsewhere else voc
    argv = ["--checkpoint", str(tmp_path / "ckpt.pt"), "--data-root", str(evaluated), "--split", "val"]
    assert evaluate_mod.main([*argv, "--full-size", "--output-dir", str(out), "--no-progress"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    payload = json.loads((out / "metrics.json").read_text())
    if train_split == "trainval":
        assert "trained on 3 of the 3 images evaluated" in err and "not a held-out score" in err, err
        other = f"The names are compared: the checkpoint trained on {voc}, these images are read from "
        other += f"{evaluated};"
        assert (other in err) is elsewhere, err
        assert payload["trained_on_evaluated_images"] == 3
    else:
        assert "trained on" not in err, err
        assert payload["trained_on_evaluated_images"] == 0


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_write_text_atomic_leaves_no_temporary_file_when_it_fails(tmp_path, monkeypatch, error) -> None:
    """A failing rename (a full disk, an interrupt) keeps the old file and removes the temporary one."""
    import os

    from examples.voc_joint.atomic import write_text_atomic

    target = tmp_path / "metrics.json"
    write_text_atomic(target, "old")

    def refuse(src, dst):
        raise error

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(type(error)):
        write_text_atomic(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES", "EROFS"])
@pytest.mark.parametrize("step", ["open", "write", "close", "replace"])
def test_write_text_atomic_names_the_file_whatever_step_fails(tmp_path, monkeypatch, step, code) -> None:
    """A full disk found by the write or the close raised ``[Errno 28] No space left on device`` naming no
    file (``evaluate.py: error: [Errno 28] ...``: which of its outputs?), and a failing open or rename named
    the temporary file. Every step's error now names the file written and its cause, keeps its class and
    errno, and leaves the earlier file and no temporary one (a read-only folder refuses even the clean-up)."""
    import errno
    import os

    from examples.voc_joint import atomic

    number = getattr(errno, code)
    folder = tmp_path / "out \u00e9t\u00e9"
    folder.mkdir()
    target = folder / "metrics.json"
    atomic.write_text_atomic(target, "old")
    real_open, real_replace, real_unlink = open, os.replace, Path.unlink

    class Failing:
        def __init__(self, fh) -> None:
            self.fh = fh

        def write(self, text: str) -> int:
            if step == "write":
                raise OSError(number, os.strerror(number))
            return self.fh.write(text)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.fh.close()
            if step == "close":  # the buffered text reaches the disk at the close
                raise OSError(number, os.strerror(number))

    def fake_open(file, *args, **kwargs):
        if step == "open":
            raise OSError(number, os.strerror(number), str(file))
        return Failing(real_open(file, *args, **kwargs))

    def fake_replace(src, dst) -> None:
        if step == "replace":
            raise OSError(number, os.strerror(number), str(src), None, str(dst))
        real_replace(src, dst)

    def fake_unlink(self, missing_ok=False) -> None:
        if code == "EROFS" and not self.exists():  # Linux checks the mount before the name
            raise OSError(number, os.strerror(number), str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    monkeypatch.setattr(atomic.os, "replace", fake_replace)
    monkeypatch.setattr(Path, "unlink", fake_unlink)
    with pytest.raises(OSError) as info:
        atomic.write_text_atomic(target, "new")
    monkeypatch.undo()
    text = str(info.value)
    assert text.startswith(f"cannot write {target}: {os.strerror(number)} ({code});"), text
    assert ".tmp" not in text and "not replaced" in text, text
    assert info.value.errno == number and type(info.value) is type(OSError(number, "x"))
    assert target.read_text() == "old" and sorted(p.name for p in folder.iterdir()) == ["metrics.json"]


def test_cli_removes_the_staging_folders_of_killed_runs_not_of_running_ones(voc, tmp_path, monkeypatch):
    """An evaluation stopped by SIGTERM, SIGKILL or a power cut left its ``.panels.*`` staging folder (with
    its panels) in --output-dir, and no later run removed it: one more folder per killed evaluation (4 after 4
    kills of ``evaluate.py --workers 2``). A later run now removes those that no process holds (each
    evaluation holds an flock on its own while it runs) and leaves a running evaluation's alone."""
    fcntl = pytest.importorskip("fcntl")
    import os

    out = tmp_path / "ev"
    argv = _cli_argv(monkeypatch, tmp_path, voc)  # into out
    killed, running = out / ".panels.killed_1", out / ".panels.running1"
    for folder in (killed, running):
        folder.mkdir(parents=True)
        (folder / "0001.png").write_bytes(b"partial")
    held = os.open(running, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    locked_while_running = []
    real_save_panel = evaluate_mod.save_panel

    def save_panel(path, *args, **kwargs):  # is this run's staging folder locked against the other runs?
        locked_while_running.append(flock_held(Path(path).parent))
        return real_save_panel(path, *args, **kwargs)

    monkeypatch.setattr(evaluate_mod, "save_panel", save_panel)
    try:
        assert evaluate_mod.main([*argv, "--max-panels", "2"]) == 0
        assert _staged(out) == [".panels.running1"]
        assert (running / "0001.png").read_bytes() == b"partial"
        assert locked_while_running == [True, True]
    finally:
        os.close(held)
    assert evaluate_mod.main([*argv, "--max-panels", "0"]) == 0  # its holder gone: removed too
    assert _staged(out) == []


class _NoMemory(nn.Module):
    """A model whose forward fails as the CPU allocator does for a --crop-size too large for the machine."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def forward(self, seg_input, spixel_input):
        raise RuntimeError(self.message)


def test_cli_out_of_memory_is_one_line_with_exit_status_1(voc, tmp_path, monkeypatch, capsys):
    """An allocation that fails (``--crop-size 16384 --batch-size 8`` on a CPU machine: 3 GB refused) was the
    allocator's RuntimeError traceback; any other RuntimeError still propagates."""
    oom = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 3221225472 bytes"
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, model=_NoMemory(oom)), "--data-root", str(voc)]
    assert evaluate_mod.main([*argv, "--output-dir", str(tmp_path / "ev")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: out of memory (") and err.count("\n") == 1 and oom in err, err
    argv = [
        *_fake_checkpoint(monkeypatch, tmp_path, model=_NoMemory("shape mismatch")),
        "--data-root",
        str(voc),
    ]
    with pytest.raises(RuntimeError, match="shape mismatch"):
        evaluate_mod.main([*argv, "--output-dir", str(tmp_path / "ev2")])


class _NaNLogits(StubJoint):
    """StubJoint whose ``output`` logits hold NaN at one pixel of the batch's ``image``-th image."""

    def __init__(self, output: str, image: int = 0) -> None:
        super().__init__()
        self.output, self.image = output, image

    def forward(self, seg_input, spixel_input):
        out = super().forward(seg_input, spixel_input)
        out[self.output] = out[self.output].clone()
        out[self.output][self.image, 3, 1, 2] = float("nan")
        return out


@pytest.mark.parametrize("output", ["logits", "seg_logits"])
def test_nan_logits_are_refused_naming_the_output_and_the_image(voc, output):
    """NaN logits were scored silently: argmax takes a NaN for the largest value, so each such pixel was
    "predicted" as the class of its first NaN. Now a FloatingPointError names the output, the count and the
    image; finite logits score as before."""
    names = build_dataset(voc, "val", crop_size=(16, 20)).names
    loader = DataLoader(build_dataset(voc, "val", crop_size=(16, 20)), batch_size=2)
    match = rf"model output '{output}' holds 1 NaN value: .* {names[1]} \(1\)$"
    with pytest.raises(FloatingPointError, match=match):
        evaluate(_NaNLogits(output, image=1), loader, device="cpu", progress=False)
    with pytest.raises(FloatingPointError) as info:  # only the image that holds NaN is named
        evaluate(_NaNLogits(output, image=1), loader, device="cpu", progress=False)
    assert names[0] not in str(info.value) and "(0)" not in str(info.value), info.value
    res = evaluate(StubJoint(), loader, device="cpu", progress=False)
    assert res["num_images"] == 3 and 0 <= res["miou"] <= 1


@pytest.mark.parametrize("amp", [False, True])
def test_nan_logits_advise_evaluating_without_amp_only_under_amp(amp):
    """The float16 advice is given when the logits came from autocast (CUDA only), never otherwise."""
    logits = torch.zeros(2, 3, 4, 5)
    logits[1, 0, 2, 3] = float("nan")
    with pytest.raises(FloatingPointError) as info:
        evaluate_mod._refuse_nan("logits", logits, {"name": ["img_a", "img_b"]}, amp)
    message = str(info.value)
    assert ("(amp: float16 can overflow; evaluate without it)" in message) is amp, message
    assert message.endswith("img_b (1)") and "img_a" not in message, message


def test_amp_on_the_cpu_runs_without_autocast_and_gives_no_float16_advice(voc):
    """``amp`` autocasts to float16 on CUDA only: on the CPU the model runs without autocast (the scores of
    ``amp=False``), and NaN logits there are not blamed on float16."""
    seen: list[bool] = []

    class Recording(_NaNLogits):
        def forward(self, seg_input, spixel_input):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().forward(seg_input, spixel_input)

    loader = DataLoader(build_dataset(voc, "val", crop_size=(16, 20)), batch_size=2)
    with pytest.raises(FloatingPointError) as info:
        evaluate(Recording("logits"), loader, device="cpu", progress=False, amp=True)
    assert "amp" not in str(info.value) and seen == [False], (seen, str(info.value))


def test_cli_nan_logits_are_one_line_with_exit_status_1_and_leave_the_earlier_results(
    voc, tmp_path, monkeypatch, capsys
):
    """The CLI says the NaN logits in one line (exit status 1, as train.py for non-finite values) and writes
    no metrics.json: an earlier evaluation's results stay."""
    argv = _cli_argv(monkeypatch, tmp_path, voc)
    assert evaluate_mod.main(argv) == 0
    metrics = (tmp_path / "ev" / "metrics.json").read_bytes()
    capsys.readouterr()
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, model=_NaNLogits("logits")), *argv[3:]]
    assert evaluate_mod.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: model output 'logits' holds 1 NaN value: "), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (tmp_path / "ev" / "metrics.json").read_bytes() == metrics


class _Stopped(Exception):
    """What this test's own SIGTERM handler raises: the signal reached no handler of evaluate.py's."""


@pytest.fixture
def sigterm_raises_stopped():
    """SIGTERM raises :class:`_Stopped` outside evaluate.py's handling (its default would end pytest)."""
    import signal

    def stopped(signum, frame):
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, stopped)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM / SIGHUP: not deliverable to oneself on Windows")
@pytest.mark.parametrize(("name", "status"), [("SIGTERM", 143), ("SIGHUP", 129)])
def test_cli_stop_signal_is_one_line_with_its_exit_status_and_leaves_the_earlier_results(
    voc, tmp_path, monkeypatch, capsys, name, status
):
    """SIGTERM (or SIGINT) during an evaluation ended it at once with no message (SIGINT: a traceback) and
    left its ``.panels.*`` staging folder until the next run; SIGHUP (a closed terminal) did the same. Each
    now ends it with one line naming the signal, exit status 143 (130, 129), no staging folder, and the
    earlier evaluation's metrics.json and panels as they were."""
    import os
    import signal

    number = getattr(signal, name)

    def stopped(signum, frame):  # where evaluate.py does not handle the signal (its default would end pytest)
        raise _Stopped

    base = _cli_argv(monkeypatch, tmp_path, voc)
    assert evaluate_mod.main([*base, "--max-panels", "2"]) == 0
    before = _results(tmp_path / "ev")
    real_save_panel = evaluate_mod.save_panel
    saved = []

    def save_panel(path, *args, **kwargs):  # the signal once this run's first panel is in its staging folder
        real_save_panel(path, *args, **kwargs)
        saved.append(path)
        os.kill(os.getpid(), number)

    monkeypatch.setattr(evaluate_mod, "save_panel", save_panel)
    capsys.readouterr()
    previous = signal.signal(number, stopped)
    try:
        assert evaluate_mod.main([*base, "--max-panels", "3"]) == status
    finally:
        signal.signal(number, previous)
    err = capsys.readouterr().err
    assert len(saved) == 1 and f"stopped by {name} (exit status {status})" in err
    assert len(err.splitlines()) == 1
    after = _results(tmp_path / "ev")
    assert after == before  # no staging folder, the earlier panels and metrics.json untouched


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES"])
def test_cli_failed_metrics_write_leaves_the_earlier_panels(voc, tmp_path, monkeypatch, capsys, code):
    """panels/ was replaced before metrics.json was written: a full disk at that write left the new panels
    next to the earlier metrics.json (which lists the earlier panels). panels/ is now replaced only once the
    new metrics.json is written; a failed write leaves both as they were, and no staging folder."""
    base = _cli_argv(monkeypatch, tmp_path, voc)
    assert evaluate_mod.main([*base, "--max-panels", "1"]) == 0
    ev = tmp_path / "ev"
    before = _results(ev)
    fail_atomic_write(monkeypatch, "metrics.json", code)
    assert evaluate_mod.main([*base, "--max-panels", "3"]) == 1
    assert f"cannot write {ev / 'metrics.json'}" in capsys.readouterr().err
    after = _results(ev)
    assert after == before  # one panel, the earlier metrics.json, nothing else


def test_write_text_atomic_before_runs_between_the_write_and_the_rename(tmp_path) -> None:
    """``before`` sees the temporary file written and the target not yet replaced; its error propagates
    unchanged (not worded as a failed write) and leaves the target and no temporary file."""
    from examples.voc_joint.atomic import write_text_atomic

    target = tmp_path / "m.json"
    write_text_atomic(target, "old")
    seen = []
    write_text_atomic(target, "new", before=lambda: seen.append(sorted(p.name for p in tmp_path.iterdir())))
    assert target.read_text() == "new" and len(seen[0]) == 2 and seen[0][1] == "m.json"
    assert seen[0][0].startswith(".m.json.") and seen[0][0].endswith(".tmp")

    def fail() -> None:
        raise PermissionError(13, "Permission denied", "panels/a.png")

    with pytest.raises(PermissionError) as info:
        write_text_atomic(target, "newer", before=fail)
    assert str(info.value) == "[Errno 13] Permission denied: 'panels/a.png'"
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_write_text_atomic_names_the_file_when_the_rename_after_before_fails(tmp_path, monkeypatch) -> None:
    """Only ``before``'s own error propagates unchanged: a rename that fails once ``before`` has succeeded is
    a failed write of the file, worded as one (its class and errno kept) and raised from the original error
    (``__cause__``: a traceback still shows the step that failed and the temporary file it named), and leaves
    the earlier file and no temporary one."""
    import errno
    import os

    from examples.voc_joint import atomic

    target = tmp_path / "m.json"
    atomic.write_text_atomic(target, "old")

    def replace(src, dst) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    ran: list[bool] = []
    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError) as info:
        atomic.write_text_atomic(target, "new", before=lambda: ran.append(True))
    monkeypatch.undo()
    text = str(info.value)
    assert ran == [True], ran
    assert text.startswith(f"cannot write {target}: No space left on device (ENOSPC);"), text
    assert info.value.errno == errno.ENOSPC and type(info.value) is OSError
    cause = info.value.__cause__
    assert isinstance(cause, OSError) and cause.errno == errno.ENOSPC and ".tmp" in str(cause)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_os_error_saying_keeps_the_class_of_a_built_in_error_only() -> None:
    """A built-in class (``PermissionError``) is kept, and with ``same_class=False`` it is an ``OSError``; an
    ``OSError`` subclass of another module (whose constructor may take other arguments) gives an
    ``OSError``. The errno is kept and the message is the one given."""
    import errno

    from examples.voc_joint.atomic import os_error_saying

    class LibraryError(OSError):
        pass

    err = os_error_saying(LibraryError(errno.EIO, "Input/output error"), "cannot write r.json")
    assert type(err) is OSError and err.errno == errno.EIO and str(err) == "cannot write r.json"
    denied = PermissionError(errno.EACCES, "Permission denied")
    assert type(os_error_saying(denied, "m")) is PermissionError
    same = os_error_saying(denied, "m", same_class=False)
    assert type(same) is OSError and same.errno == errno.EACCES


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="no signal masks")
@pytest.mark.parametrize("signals", [1, 2])
def test_cli_signal_while_the_results_are_replaced_waits_for_the_end(
    voc, tmp_path, monkeypatch, capsys, sigterm_raises_stopped, signals
):
    """A signal between the replacement of panels/ and that of metrics.json left the new panels next to the
    earlier metrics.json (which lists the earlier panels). Both are now replaced before the signal acts, and
    before a second one does (which outside such a section stops at once)."""
    import os
    import signal

    base = _cli_argv(monkeypatch, tmp_path, voc)
    assert evaluate_mod.main([*base, "--max-panels", "1"]) == 0
    real_replace = evaluate_mod._replace_panels

    def replace(new, panels_dir):  # SIGTERM once the panels are replaced, before metrics.json is
        moved = real_replace(new, panels_dir)
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)
        return moved

    monkeypatch.setattr(evaluate_mod, "_replace_panels", replace)
    assert evaluate_mod.main([*base, "--max-panels", "3"]) == 143
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert sorted(payload["panels"]) == sorted(str(p) for p in (tmp_path / "ev" / "panels").glob("*.png"))
    assert len(payload["panels"]) == 3
    assert _staged(tmp_path / "ev") == []
    capsys.readouterr()


def _writer_file(folder: Path, name: str, pid: int, *, tag: str | None = None) -> Path:
    """The temporary file that writer ``pid`` of this host (or of the writer ``tag``) made for ``name``."""
    from examples.voc_joint import atomic

    stem = atomic._stem(name)
    return folder / f".{stem}.{atomic._writer_tag() if tag is None else tag}.{pid}.0badc0de.tmp"


#: A writer killed while its temporary file was half-written (``sys.argv[1]``: the folder).
_KILLED_WRITER = (
    "import os, signal, sys; from pathlib import Path; "
    "from examples.voc_joint.atomic import temporary_path; "
    "open(temporary_path(Path(sys.argv[1]) / 'metrics.json'), 'w').write('{\"mi'); "
    "os.kill(os.getpid(), signal.SIGKILL)"
)


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGKILL, and no process probe: nothing is removed")
def test_write_text_atomic_removes_the_temporary_files_of_killed_writers(tmp_path) -> None:
    """A SIGKILL while metrics.json (eval.json, ablation.json, log.csv, ...) was written left its temporary
    file behind, and no later run removed it. The next write of the file removes those whose process is
    gone; a running writer's stays."""
    import os

    from examples.voc_joint.atomic import write_text_atomic

    target = tmp_path / "metrics.json"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], check=False, env=script_env()
    )
    assert killed.returncode == -9 and len(list(tmp_path.iterdir())) == 1
    killed_pid = int(next(tmp_path.iterdir()).name.split(".")[4])
    running = _writer_file(tmp_path, "metrics.json", os.getppid())  # pytest's parent process: alive
    running.write_text("{")
    write_text_atomic(target, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", running.name])
    # log.csv, rewritten when a stage starts: the same
    from examples.voc_joint.engine import CsvLogger

    dead_log = _writer_file(tmp_path, "log.csv", killed_pid)
    dead_log.write_text("stage,epo")
    CsvLogger(tmp_path, True, False, None).close()
    assert not dead_log.exists() and (tmp_path / "log.csv").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no process probe: nothing is removed")
def test_write_text_atomic_keeps_the_files_of_writers_of_another_host_or_pid_namespace(tmp_path) -> None:
    """Temporary files were named ``.<name>.<pid>.tmp`` and any whose pid named no process here was removed:
    in a folder shared with another machine, or with a container that has its own process ids, a running
    writer's file was deleted under it (its rename then failed with ENOENT), and two containers whose
    writers were both pid 1 wrote one temporary file. Only this host's and pid namespace's files are probed
    now, and every temporary name has 32 random bits."""
    from examples.voc_joint import atomic

    gone = dead_pid()
    own_tag = atomic._writer_tag()
    other_tag = f"{(int(own_tag, 16) + 1) % 16**8:08x}"
    others = _writer_file(tmp_path, "metrics.json", gone, tag=other_tag)
    ours = _writer_file(tmp_path, "metrics.json", gone)
    for path in (others, ours):
        path.write_text("{")
    atomic.write_text_atomic(tmp_path / "metrics.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", others.name])
    names = {atomic.temporary_path(tmp_path / "metrics.json").name for _ in range(8)}
    assert len(names) == 8 and all(f".{own_tag}.{os.getpid()}." in name for name in names), names


def test_the_writer_tag_names_the_host_and_the_pid_namespace(monkeypatch) -> None:
    """Two writers differ in their tag when their hosts differ or their pid namespaces do (either alone
    made the process ids of another machine or container probed here)."""
    import socket

    from examples.voc_joint import atomic

    tags = set()
    for host, namespace in [("hostA", "pid:[1]"), ("hostB", "pid:[1]"), ("hostA", "pid:[2]")]:
        monkeypatch.setattr(socket, "gethostname", lambda host=host: host)
        monkeypatch.setattr(os, "readlink", lambda path, namespace=namespace: namespace)
        tags.add(atomic._writer_tag())
    assert len(tags) == 3 and all(len(t) == 8 and int(t, 16) >= 0 for t in tags), tags


@pytest.mark.skipif(sys.platform == "win32", reason="no process probe: nothing is removed")
def test_write_text_atomic_keeps_a_name_of_another_form_whose_pid_is_gone(tmp_path) -> None:
    """Only a temporary file's form (a pid and 8 random hex digits) is removed:
    ``.<name>.<tag>.<pid>.abc.tmp`` of a dead pid is some other file, and stays."""
    from examples.voc_joint import atomic

    gone = dead_pid()
    other = tmp_path / f".r.json.{atomic._writer_tag()}.{gone}.abc.tmp"
    other.write_text("{")
    atomic.write_text_atomic(tmp_path / "r.json", "new")
    assert other.exists()


def test_a_name_whose_temporary_names_fit_is_not_cut() -> None:
    """``_stem`` keeps a name whose temporary names fit in 255 bytes whole, and cuts one byte more."""
    from examples.voc_joint import atomic

    room = atomic.NAME_MAX - atomic._ADDED
    assert atomic._stem("y" * room) == "y" * room and atomic._stem("y" * (room + 1)) == "y" * room


def test_a_temporary_name_fits_with_a_pid_of_ten_digits(monkeypatch) -> None:
    """The room left for the name counts 10 pid digits (a C int's): with a pid of 2147483647 the temporary
    name of a 255-byte target still fits in 255 bytes."""
    from examples.voc_joint import atomic

    monkeypatch.setattr(os, "getpid", lambda: 2**31 - 1)
    name = atomic.temporary_path(Path("out") / ("x" * 255)).name
    assert len(os.fsencode(name)) == atomic.NAME_MAX and f".{2**31 - 1}." in name


@pytest.mark.skipif(sys.platform == "win32", reason="names of 250 bytes: the test's file system limit")
@pytest.mark.parametrize("name", ["r" * 245 + ".json", "é" * 122 + ".json"])
def test_write_text_atomic_writes_a_file_whose_name_is_near_the_longest(tmp_path, name: str) -> None:
    """The temporary name added ``.<pid>.tmp`` and a dot to the target's: a name a plain ``open`` takes, of
    up to 255 bytes, failed with ENAMETOOLONG when it was within about 13 bytes of that (an evaluation panel
    named after a long list entry, after the whole evaluation). The temporary name cuts a long name now, the
    same way for every writer, so a dead writer's file is still found."""
    from examples.voc_joint import atomic

    assert len(os.fsencode(name)) > atomic.NAME_MAX - 13
    gone = dead_pid()
    left = _writer_file(tmp_path, name, gone)
    left.write_text("{")
    assert len(os.fsencode(atomic.temporary_path(tmp_path / name).name)) <= atomic.NAME_MAX
    atomic.write_text_atomic(tmp_path / name, "new")
    atomic.write_bytes_atomic(tmp_path / name, b"newer")
    assert [p.name for p in tmp_path.iterdir()] == [name] and (tmp_path / name).read_bytes() == b"newer"


def test_log_csv_rewrite_that_fails_leaves_no_temporary_file(tmp_path, monkeypatch) -> None:
    """``log.csv`` is rewritten when a stage starts (the rows up to the resumed step kept); its own copy of
    the atomic write left ``.log.csv.<pid>.tmp`` behind when the rename failed (a full disk, a read-only
    folder). It goes through the one atomic writer now: the error reaches the caller, the old log stays, and
    nothing is left."""
    import errno
    import os

    from examples.voc_joint.engine import CsvLogger

    (tmp_path / "log.csv").write_text("stage,epoch,step\nseg,0,1\n")

    def replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        CsvLogger(tmp_path, True, False, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]
    assert (tmp_path / "log.csv").read_text() == "stage,epoch,step\nseg,0,1\n"


@pytest.mark.skipif(sys.platform == "win32", reason="no process probe: nothing is removed")
def test_write_text_atomic_keeps_temporary_files_it_cannot_tell_abandoned(tmp_path, monkeypatch) -> None:
    """Only a temporary file of a process that is gone is removed: a name whose pid is not a number, or
    that lacks the random part, is not such a file (and was an uncaught ValueError had it been read as
    one), and a process of another user (``os.kill`` raises PermissionError) is alive."""
    import os

    from examples.voc_joint import atomic

    other_pid = os.getpid() + 1  # not this process (whose own file is never probed)
    other_users = _writer_file(tmp_path, "metrics.json", other_pid)
    tag = atomic._writer_tag()
    not_a_pid = tmp_path / f".metrics.json.{tag}.backup.0badc0de.tmp"
    no_random = tmp_path / f".metrics.json.{tag}.{other_pid}.tmp"
    for path in (other_users, not_a_pid, no_random):
        path.write_text("{")
    probed = []

    def kill(pid, signum):
        probed.append(pid)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", kill)
    atomic.write_text_atomic(tmp_path / "metrics.json", "new")
    assert probed == [other_pid] and other_users.exists() and not_a_pid.exists() and no_random.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="no process probe: nothing is removed")
def test_write_text_atomic_keeps_a_file_whose_pid_is_beyond_any_process_id(tmp_path) -> None:
    """A pid of digits beyond a C int made ``os.kill`` raise ``OverflowError``, which escaped: every later
    write of ``metrics.json`` failed. It is not a writer's file and stays."""
    from examples.voc_joint.atomic import write_text_atomic

    odd = _writer_file(tmp_path, "metrics.json", 2**64)
    odd.write_text("{")
    write_text_atomic(tmp_path / "metrics.json", "new")
    assert (tmp_path / "metrics.json").read_text() == "new" and odd.read_text() == "{"


@pytest.mark.skipif(sys.platform == "win32", reason="no process probe: nothing is removed")
def test_write_text_atomic_removes_a_dead_writers_file_of_a_name_with_glob_characters(
    tmp_path, monkeypatch
) -> None:
    """A file name with ``[``, ``]`` (``run[1].json``) is matched literally when the dead writers' files are
    looked for: its own temporary file goes, the one of ``run1.json`` (which ``[1]`` would match as a
    pattern) stays."""
    import os

    from examples.voc_joint.atomic import write_text_atomic

    own, other = _writer_file(tmp_path, "run[1].json", 4242), _writer_file(tmp_path, "run1.json", 4242)
    for path in (own, other):
        path.write_text("{")

    def kill(pid, signum):
        raise ProcessLookupError(3, "No such process")  # every probed writer is gone

    monkeypatch.setattr(os, "kill", kill)
    write_text_atomic(tmp_path / "run[1].json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, "run[1].json"])


def test_cli_closes_the_descriptor_that_locks_its_staging_folder(voc, tmp_path, monkeypatch) -> None:
    """The descriptor holding the staging folder's flock is closed when the evaluation ends: left open, each
    call of ``main`` in one process (a notebook, a script evaluating several checkpoints) kept one more."""
    import os

    held, closed = [], []
    real_new_staging, real_close = evaluate_mod.new_staging, os.close

    def new_staging(*args, **kwargs):
        folder, fd = real_new_staging(*args, **kwargs)
        held.append(fd)
        return folder, fd

    def close(fd):
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(evaluate_mod, "new_staging", new_staging)
    argv = _cli_argv(monkeypatch, tmp_path, voc)
    monkeypatch.setattr(os, "close", close)
    assert evaluate_mod.main([*argv, "--max-panels", "1"]) == 0
    monkeypatch.undo()
    assert len(held) == 1 and (held[0] is None or held[0] in closed)


def test_workers_default_as_in_train_and_ignore_the_stop_signals(voc, tmp_path, monkeypatch):
    """``evaluate.py --workers`` defaulted to 0 and ``train.py --workers`` (whose ``--eval`` evaluates the
    same way) to 2, for no stated reason; 2 workers evaluated 12 synthetic 375x500 images in 18.2 s against
    23.5 s (medians of 3 paired runs on the 2-core VM). Its workers now also leave SIGINT / SIGTERM / SIGHUP
    to the main process, as train.py's do: a ``kill -TERM`` of the process group ended the evaluation with a
    ``DataLoader worker ... is killed by signal: Terminated`` traceback."""
    from examples.voc_joint.signals import ignore_stop_signals

    assert evaluate_mod.build_parser().get_default("workers") == train_options.build_parser().get_default(
        "workers"
    )
    made = []

    class Recording(DataLoader):  # type: ignore[type-arg]
        def __init__(self, *args, **kwargs):
            made.append(kwargs)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Recording)
    path = _seg_checkpoint(tmp_path, 21)
    assert _evaluate(path, voc, tmp_path / "ev") == 0
    assert [(k["num_workers"], k.get("worker_init_fn")) for k in made] == [(2, ignore_stop_signals)]


@pytest.mark.skipif(sys.platform == "win32", reason="a signal sent to oneself ends the process on Windows")
def test_a_worker_ignores_the_stop_signals() -> None:
    """``ignore_stop_signals`` (a worker's ``worker_init_fn``): SIGINT, SIGTERM and SIGHUP sent to the worker
    leave it running."""
    code = (
        "import os\n"
        "from examples.voc_joint.signals import STOP_SIGNALS, ignore_stop_signals\n"
        "ignore_stop_signals(0)\n"
        "for sig in STOP_SIGNALS: os.kill(os.getpid(), sig)\n"
        "print('alive')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout == "alive\n", (proc.returncode, proc.stderr)


def test_amp_on_the_cpu_is_said_to_be_ignored_as_in_train(voc, tmp_path, capsys):
    """``train.py --amp`` on the CPU says ``[seg] --amp ignored on cpu (CUDA only)``; ``evaluate.py --amp``
    ignored it without a word."""
    path = _seg_checkpoint(tmp_path, 21)
    argv = ["--checkpoint", str(path), "--data-root", str(voc), "--output-dir", str(tmp_path / "ev")]
    assert evaluate_mod.main([*argv, "--no-progress", "--device", "cpu", "--amp", "--workers", "0"]) == 0
    assert "[evaluate] --amp ignored on cpu (CUDA only)\n" in capsys.readouterr().out


def test_the_workers_of_train_eval_ignore_the_stop_signals(voc, tmp_path, monkeypatch):
    """``train.py --eval`` evaluates with ``--workers`` (2 by default) worker processes that took SIGTERM /
    SIGHUP themselves: a signal to the process group during the evaluation could end it with the
    ``DataLoader worker ... is killed by signal`` traceback instead of the stop (as ``evaluate.py``'s did)."""
    from examples.voc_joint import engine
    from examples.voc_joint.signals import ignore_stop_signals

    class Made(Exception):
        pass

    made = []

    def recording(*args, **kwargs):
        made.append(kwargs)
        raise Made

    monkeypatch.setattr(torch.utils.data, "DataLoader", recording)
    args = train_options.build_parser().parse_args(["--workers", "2"])
    args.num_classes = 21
    with pytest.raises(Made):
        engine.evaluate_checkpoint(_seg_checkpoint(tmp_path, 21), args, torch.device("cpu"), voc)
    assert [(k["num_workers"], k.get("worker_init_fn")) for k in made] == [(2, ignore_stop_signals)]


def test_results_go_next_to_the_checkpoint_unless_output_dir_is_given(tmp_path) -> None:
    """Without ``--output-dir`` the results go to ``eval_<split>`` next to the checkpoint (one folder per
    split: a val and a train evaluation do not replace each other's); with it, there."""
    import argparse

    from examples.voc_joint import evaluate as ev

    args = argparse.Namespace(output_dir=None, checkpoint=tmp_path / "joint" / "checkpoint.pt", split="train")
    assert ev._output_dir(args) == tmp_path / "joint" / "eval_train"
    args.output_dir = tmp_path / "elsewhere"
    assert ev._output_dir(args) == tmp_path / "elsewhere"


def test_help_names_the_default_output_folder_the_code_uses() -> None:
    """``--help`` said the results go "next to the checkpoint": they go to ``eval_<split>`` there (the
    folder :func:`_output_dir` makes), as the docs' option table says."""
    help_text = " ".join(evaluate_mod.build_parser().format_help().split())
    assert "(default: eval_<split> next to the checkpoint)" in help_text


def _options_of_run(voc, tmp_path, monkeypatch, extra):
    """metrics.json's ``options`` of an evaluation of a fake joint checkpoint (:func:`_fake_checkpoint`)."""
    out = tmp_path / "eval"
    argv = [*_fake_checkpoint(monkeypatch, tmp_path), "--data-root", str(voc), "--split", "val"]
    argv += ["--full-size", "--output-dir", str(out), "--max-panels", "0", *extra]
    assert evaluate_mod.main(argv) == 0
    return json.loads((out / "metrics.json").read_text())["options"]


def test_the_options_record_the_given_values_and_amp_as_applied(voc, tmp_path, monkeypatch) -> None:
    """metrics.json's ``options`` are the values given (``--pad-to-multiple``, ``--boundary-tolerance``) and
    ``amp`` as applied: asked for on the CPU, it is not."""
    options = _options_of_run(
        voc, tmp_path, monkeypatch, ["--pad-to-multiple", "8", "--boundary-tolerance", "3", "--amp"]
    )
    assert options == {"pad_to_multiple": 8, "boundary_tolerance": 3, "device": "cpu", "amp": False}


def test_the_options_record_the_device_used(voc, tmp_path, monkeypatch) -> None:
    """``options.device`` is the device the evaluation ran on (faked as ``cpu:0``: no GPU here)."""
    from examples.voc_joint import distributed

    monkeypatch.setattr(distributed, "resolve_device", lambda d: torch.device("cpu", 0))
    assert _options_of_run(voc, tmp_path, monkeypatch, [])["device"] == "cpu:0"


def test_a_recorded_data_root_that_is_no_folder_name_means_no_folder(voc, tmp_path, monkeypatch, capsys):
    """``checkpoint_data_root`` reads a folder only from a ``config["args"]`` dict holding a non-empty str: an
    ``args`` of another type (a crafted or foreign record) or an empty ``data_root`` is "no folder recorded"
    (the default data, said so), not an AttributeError or the current directory scored as a data set."""
    assert evaluate_mod.checkpoint_data_root({"args": ["/data/VOCdevkit"]}) is None
    assert evaluate_mod.checkpoint_data_root({"args": {"data_root": ""}}) is None
    monkeypatch.setattr(evaluate_mod, "ensure_synthetic_voc", lambda: voc)
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, args=["--data-root", "x"]), "--output-dir"]
    assert evaluate_mod.main([*argv, str(tmp_path / "ev"), "--max-panels", "0"]) == 0
    out = capsys.readouterr().out
    assert f"[evaluate] data: {voc} (the default: the checkpoint records no data folder)" in out


def test_metrics_record_an_unknown_training_overlap_as_null(voc, tmp_path, monkeypatch, capsys):
    """A checkpoint whose training list cannot be read (here: it records no options) has an unknown overlap
    with the evaluated images: ``trained_on_evaluated_images`` is null, not 0 (which claims a held-out score),
    and no warning is printed."""
    assert evaluate_mod.main([*_cli_argv(monkeypatch, tmp_path, voc), "--max-panels", "0"]) == 0
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert payload["trained_on_evaluated_images"] is None
    assert "trained on" not in capsys.readouterr().err


def test_the_summary_counts_the_panels_written_and_names_none_without_them(
    voc, tmp_path, monkeypatch, capsys
):
    """The closing lines name metrics.json and, only when panels were drawn, panels/ with their count;
    the table's title counts the evaluated images."""
    argv = _cli_argv(monkeypatch, tmp_path, voc)
    assert evaluate_mod.main([*argv, "--max-panels", "2"]) == 0
    out = capsys.readouterr().out
    assert f"panels:  {tmp_path / 'ev' / 'panels'} (2 PNG)" in out, out
    assert "val (3 images, full images) -- " in out
    assert evaluate_mod.main([*argv, "--max-panels", "0"]) == 0
    out = capsys.readouterr().out
    assert f"metrics: {tmp_path / 'ev' / 'metrics.json'}" in out and "panels:" not in out, out


def test_cli_crops_are_read_in_batches_of_batch_size(voc, tmp_path, monkeypatch):
    """``--crop-size`` with ``--batch-size 2`` reads two crops per batch (full images, one at a time)."""
    made = []

    class Recording(DataLoader):  # type: ignore[type-arg]
        def __init__(self, *args, **kwargs):
            made.append(kwargs["batch_size"])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(torch.utils.data, "DataLoader", Recording)
    argv = [*_cli_argv(monkeypatch, tmp_path, voc), "--max-panels", "0", "--workers", "0"]
    assert evaluate_mod.main([*argv, "--crop-size", "16", "--batch-size", "2"]) == 0
    assert evaluate_mod.main(argv) == 0
    assert made == [2, 1]


def test_a_checkpoint_of_255_classes_is_scored(voc, tmp_path):
    """VOC-format masks hold classes 0..254 (255 is ignored): a 255-class model is the largest evaluate.py
    scores, panels included (the palette draws 255 classes); 256 and more are refused at the start."""
    path = _seg_checkpoint(tmp_path, 255)
    assert _evaluate(path, voc, tmp_path / "ev") == 0
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert len(payload["joint"]["per_class_iou"]) == 255 and len(payload["panels"]) == 3


def test_training_overlap_reads_the_sbd_list_of_an_sbd_run(voc):
    """A run with ``--sbd`` trained on ``ImageSets/SegmentationAug``'s list, not ``Segmentation``'s: where
    that list is not there (this set has no SBD lists) the overlap is unknown, not read from the
    other list."""
    from examples.voc_joint.evaluate import training_overlap

    val = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    args = {"data_root": str(voc), "sbd": False, "train_split": "trainval"}
    assert training_overlap({"args": args}, val) == val
    assert training_overlap({"args": {**args, "sbd": True}}, val) is None


def test_cli_releases_the_folder_lock_when_the_evaluation_ends(voc, tmp_path, monkeypatch, capsys):
    """The output folder's lock is released by the run itself, when it succeeds and when it fails (a NaN
    error here), not left to the garbage collector: a caller that keeps the lock object (or a traceback
    holding it) alive kept the folder locked against the next evaluation in the same process."""
    from examples.voc_joint.locking import FolderLock

    from .test_evaluate import _NaNLogits

    made = []

    class Kept(FolderLock):
        def acquire(self):
            made.append(self)  # kept alive: only release() frees the folder
            return super().acquire()

    monkeypatch.setattr(evaluate_mod, "FolderLock", Kept)
    argv = _cli_argv(monkeypatch, tmp_path, voc)
    assert evaluate_mod.main([*argv, "--max-panels", "1"]) == 0
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, model=_NaNLogits("logits")), *argv[3:]]
    assert evaluate_mod.main(argv) == 1
    assert len(made) == 2 and not any(lock.held for lock in made)
    capsys.readouterr()


def test_metrics_record_the_folder_read_the_lists_and_the_time(tmp_path, monkeypatch, capsys):
    """metrics.json's ``data_root`` is the VOC2012 folder actually read (``--data-root`` may name the folder
    above it), ``sbd`` the lists read, and ``seconds`` / ``images_per_second`` the evaluation's own time."""
    from examples.voc_joint.synthetic import generate_synthetic_voc

    from .test_evaluate import SIZE

    top = tmp_path / "top"
    voc2012 = generate_synthetic_voc(
        top / "VOC2012", num_train=1, num_val=2, image_size=SIZE, seed=1, sbd=True
    )
    assert evaluate_mod.main([*_cli_argv(monkeypatch, tmp_path, top), "--sbd", "--max-panels", "0"]) == 0
    payload = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert payload["data_root"] == str(voc2012) and payload["sbd"] is True
    assert payload["seconds"] > 0
    assert payload["images_per_second"] == payload["joint"]["num_images"] / payload["seconds"]
    capsys.readouterr()


def test_a_temporary_name_is_at_most_255_bytes_whatever_the_module_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The limit is the file systems' 255 bytes, not the module's own constant: with a pid of 10 digits the
    temporary name of a 255-byte target is 255 bytes at most (a limit of 256 made it 256: ENAMETOOLONG)."""
    from examples.voc_joint import atomic

    monkeypatch.setattr(os, "getpid", lambda: 2**31 - 1)
    for name in ("x" * 255, "\u00e9" * 127):
        assert len(os.fsencode(atomic.temporary_path(Path("out") / name).name)) <= 255, name


def test_write_text_atomic_newline_translates_line_ends_as_open_does(tmp_path: Path) -> None:
    """``newline`` is ``open``'s on every platform: ``"\\r\\n"`` writes CRLF line ends, ``""`` writes the
    text's own, and the default writes the platform's."""
    from examples.voc_joint.atomic import write_text_atomic

    target = tmp_path / "log.csv"
    write_text_atomic(target, "a\nb\n", newline="\r\n")
    assert target.read_bytes() == b"a\r\nb\r\n"
    write_text_atomic(target, "a\r\nb\n", newline="")
    assert target.read_bytes() == b"a\r\nb\n"
    write_text_atomic(target, "a\n")
    assert target.read_bytes() == ("a" + os.linesep).encode()


@pytest.mark.skipif(sys.platform == "win32", reason="no process probe: nothing is removed")
def test_write_text_atomic_keeps_a_dead_pids_file_that_does_not_end_in_tmp(tmp_path: Path) -> None:
    """Only temporary files (``.tmp``) are removed: a user's ``.metrics.json.<tag>.<pid>.<8 hex>.bak`` of a
    gone pid is not a writer's file and stays."""
    gone = dead_pid()
    tmp_file = _writer_file(tmp_path, "metrics.json", gone)
    backup = tmp_file.with_name(tmp_file.name[: -len(".tmp")] + ".bak")
    for path in (tmp_file, backup):
        path.write_text("{")
    from examples.voc_joint.atomic import write_text_atomic

    write_text_atomic(tmp_path / "metrics.json", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", backup.name])


def test_os_error_reason_of_an_error_without_a_known_errno_is_its_text() -> None:
    """Without an errno (or with one that names no known error) the reason is the error's own text, never
    ``None`` or a bare number."""
    from examples.voc_joint.atomic import os_error_reason

    assert os_error_reason(OSError("disk went away")) == "disk went away"
    assert os_error_reason(OSError(99999, "odd failure")) == "[Errno 99999] odd failure"


def test_logits_of_another_batch_size_are_refused_with_the_expected_shape(voc):
    """The logits must have the target's batch size too (the contract's Tensor[B, C, H, W]): a model that
    returns one map for a batch of 2 is refused naming both shapes."""
    loader = DataLoader(build_dataset(voc, "val", crop_size=(16, 20)), batch_size=2)

    def out(x):
        return {"logits": torch.zeros(1, 21, *x.shape[-2:])}

    with pytest.raises(ValueError, match=r"'logits' has shape \(1, 21, 16, 20\); expected \(2, 21, 16, 20\)"):
        evaluate(_BadModel(out), loader, device="cpu", progress=False)


def test_nan_refusal_counts_the_nan_values_not_the_images():
    """The message counts the NaN values (all of them), and gives each named image its own count."""
    logits = torch.zeros(2, 3, 4, 5)
    logits[1, 0, :3, 0] = float("nan")
    with pytest.raises(FloatingPointError) as info:
        evaluate_mod._refuse_nan("logits", logits, {"name": ["img_a", "img_b"]}, False)
    message = str(info.value)
    assert "'logits' holds 3 NaN values:" in message and message.endswith("img_b (3)"), message


def test_more_classes_than_the_palette_has_colours_are_scored_when_no_panel_is_drawn(voc, tmp_path):
    """The palette limit applies only with panels to draw: ``max_panels=0`` scores a model of 300 classes
    even with a ``panels_dir``, and writes no panel."""
    loader = DataLoader(build_dataset(voc, "val"), batch_size=1)  # labels 0..20: some of the 300 classes

    def out(x):
        return {"logits": torch.zeros(x.shape[0], 300, *x.shape[-2:])}

    res = evaluate(
        _BadModel(out),
        loader,
        device="cpu",
        num_classes=300,
        panels_dir=tmp_path,
        max_panels=0,
        progress=False,
    )
    assert res["num_images"] == 3 and res["panels"] == [] and list(tmp_path.iterdir()) == []


def test_padding_changes_no_joint_score_of_predictions_it_does_not_change(voc):
    """The ``region`` keeps padding out of the joint metrics too (not only the baseline's): per-pixel
    predictions score the same on full images and padded ones."""
    results = []
    for kwargs in ({}, {"pad_to_multiple": 32}):
        loader = DataLoader(build_dataset(voc, "val", **kwargs), batch_size=1)
        res = evaluate(StubJoint(superpixels=False, baseline=False), loader, device="cpu", progress=False)
        results.append(split_results(res)["joint"])
    assert results[0]["boundary_pixels"]["1"] > 0 and _same(results[0], results[1])


def test_panels_of_unnamed_images_are_one_file_per_image_across_batches(voc, tmp_path):
    """Images without a ``name`` get panels named ``sample_<n>``, numbered over the whole evaluation: the
    first ``max_panels`` images each keep their own panel, also across batches."""
    batches = [
        {k: v for k, v in batch.items() if k != "name"}
        for batch in DataLoader(build_dataset(voc, "val", crop_size=(16, 20)), batch_size=2)
    ]
    res = evaluate(StubJoint(), batches, device="cpu", panels_dir=tmp_path, max_panels=8, progress=False)
    assert [Path(p).name for p in res["panels"]] == ["sample_0000.png", "sample_0001.png", "sample_0002.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sample_0000.png",
        "sample_0001.png",
        "sample_0002.png",
    ]


def test_cli_overlap_warning_counts_the_trained_images_of_those_evaluated(voc, tmp_path, monkeypatch, capsys):
    """The warning says how many of the evaluated images the checkpoint was trained on (here 1 of 3), as
    metrics.json's ``trained_on_evaluated_images``."""
    root = shutil.copytree(voc, tmp_path / "voc")
    lists = root / "ImageSets" / "Segmentation"
    val = (lists / "val.txt").read_text().split()
    (lists / "mixed.txt").write_text("\n".join([*(lists / "train.txt").read_text().split(), val[1]]) + "\n")

    args = {"data_root": str(root), "sbd": False, "train_split": "mixed"}
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, args=args), "--data-root", str(root), "--split", "val"]
    out = tmp_path / "eval"
    assert evaluate_mod.main([*argv, "--output-dir", str(out), "--max-panels", "0"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "trained on 1 of the 3 images evaluated" in err and repr(val[1]) in err, err
    assert json.loads((out / "metrics.json").read_text())["trained_on_evaluated_images"] == 1


@pytest.mark.parametrize("args", [None, {"seed": 0}])
def test_without_data_root_a_checkpoint_recording_no_folder_says_it_uses_the_default(
    voc, tmp_path, monkeypatch, capsys, args
):
    """A checkpoint that records no ``data_root`` (written without its options, or without that one) is scored
    on the default data, and the data line says so instead of claiming the run's own data."""
    monkeypatch.setattr(evaluate_mod, "ensure_synthetic_voc", lambda: voc)
    argv = [*_fake_checkpoint(monkeypatch, tmp_path, args=args), "--output-dir", str(tmp_path / "ev")]
    assert evaluate_mod.main([*argv, "--max-panels", "0"]) == 0
    out = capsys.readouterr().out
    assert f"[evaluate] data: {voc} (the default: the checkpoint records no data folder)" in out, out
