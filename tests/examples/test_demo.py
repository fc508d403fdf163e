"""The demo on VOC-format data whose images differ in size (as real PASCAL VOC's do), and its wording."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchvision")

import numpy as np
from PIL import Image

from examples.voc_joint import demo
from examples.voc_joint.data import build_dataset
from examples.voc_joint.synthetic import generate_synthetic_voc
from examples.voc_joint.visualize import make_panel

from .helpers import assert_data_root_is_checked, run_example, run_tiny_demo, untrained_checkpoints

# (height, width) of the resized images: the first two val images share a size, the others differ
VAL_SIZES = [(40, 48), (40, 48), (44, 56), (36, 52)]
TRAIN_SIZES = [(40, 48), (44, 56), (36, 52), (48, 40)]


#: A batch the tiny data sets hold (4 or 5 training images; the demo's default is 8, refused up front).
SMALL_BATCH = ("--batch-size", "2")


@pytest.fixture(scope="module")
def varied_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic VOC set (4 train / 4 val) whose images and masks are resized to different sizes."""
    root = generate_synthetic_voc(
        tmp_path_factory.mktemp("varied_voc"), num_train=4, num_val=4, image_size=(40, 48), seed=2, sbd=False
    )
    for split, sizes in (("train", TRAIN_SIZES), ("val", VAL_SIZES)):
        names = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        for name, (h, w) in zip(names, sizes, strict=True):
            jpg, png = root / "JPEGImages" / f"{name}.jpg", root / "SegmentationClass" / f"{name}.png"
            with Image.open(jpg) as im:
                im.resize((w, h), Image.Resampling.BILINEAR).save(jpg, quality=92)
            with Image.open(png) as im:
                im.resize((w, h), Image.Resampling.NEAREST).save(png)  # "P" mode: palette kept
    return root


def test_same_size_batches_groups_by_size(varied_voc: Path) -> None:
    val = build_dataset(varied_voc, "val")
    samples = [val[i] for i in range(len(val))]
    batches = demo.same_size_batches(samples)
    assert [tuple(b["seg_input"].shape) for b in batches] == [
        (2, 3, 40, 48),
        (1, 3, 44, 56),
        (1, 3, 36, 52),
    ]
    assert list(batches[0]["name"]) == [val.names[0], val.names[1]]
    # one size: a single batch, equal to the DataLoader's batch of the same images
    same = demo.same_size_batches(samples[:2])
    loaded = next(iter(torch.utils.data.DataLoader(val, batch_size=2)))
    assert len(same) == 1 and all(torch.equal(same[0][k], loaded[k]) for k in ("seg_input", "target"))


def test_transparency_check_on_images_of_different_sizes(varied_voc: Path, tmp_path: Path) -> None:
    seg, spx = untrained_checkpoints(tmp_path)
    val = build_dataset(varied_voc, "val")
    samples = [val[i] for i in range(len(val))]
    check = demo.transparency_check(seg, spx, demo.same_size_batches(samples))
    assert check["max_abs_diff"] <= 1e-4 and check["consistency"] == 1.0
    # the maxima over several batches are those of the batches taken one by one
    each = [demo.transparency_check(seg, spx, b) for b in demo.same_size_batches(samples)]
    assert check["max_abs_logit"] == max(c["max_abs_logit"] for c in each)
    assert check["max_abs_diff"] == max(c["max_abs_diff"] for c in each)


@pytest.mark.slow
def test_demo_runs_on_images_of_different_sizes(varied_voc: Path, tmp_path: Path, capsys) -> None:
    """``demo.py --data-root`` on images of different sizes (it stacked the first 4 val images: crash)."""
    res = run_tiny_demo(varied_voc, tmp_path)
    check = res["transparency"]
    # one pretraining step leaves logits of several hundred here: float32 rounding of the transparent stack
    # is relative to them, and so is the demo's bar (the paper's 1e-4 for inputs in [-10, 10], scaled)
    assert check["max_abs_diff"] <= 1e-6 * max(1.0, check["max_abs_logit"]) and check["consistency"] == 1.0
    text = capsys.readouterr().out
    assert "requirement <= 1e-4 x max(1, |S| / 10) = " in text and ": PASS)" in text
    assert len(res["table"]) == 7 and "max |joint - uniformize(S)|" in text
    # the learning rates as used (SpixelFCN a tenth) and the panel columns as drawn
    assert "demo learning rates: DeepLabV3+ 0.002, SpixelFCN 0.0002, fusion layers 0.0002" in text
    assert f"panels ({' | '.join(demo.PANEL_TITLES)})" in text
    assert len(list((tmp_path / "panels").glob("*.png"))) == 4


@pytest.mark.slow
def test_the_table_title_names_a_users_data(tiny_voc: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """With ``--data-root`` the table's title names that folder's validation split, not the synthetic set (it
    said "synthetic VOC val ... on synthetic data" whatever the data). The results go through
    :func:`demo.write_results` (whole or not at all)."""
    written: list[Path] = []
    write = demo.write_results
    monkeypatch.setattr(demo, "write_results", lambda out, *a: (written.append(out), write(out, *a)))
    run_tiny_demo(tiny_voc, tmp_path)
    assert written == [tmp_path]
    assert (tmp_path / "results.json").is_file() and (tmp_path / "table.txt").is_file()
    text = capsys.readouterr().out
    assert f"Table 4 format (val split of {tiny_voc}, full images, ResNet-18 DeepLabV3+" in text
    assert "synthetic" not in text.split("Table 4 format")[1], text


def test_results_are_written_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    """results.json and table.txt were written with ``Path.write_text`` (truncate, then write): a demo stopped
    in between left an empty or cut file in place of the earlier run's. A failed write now leaves the earlier
    files byte for byte and no temporary file."""
    import json
    import os

    from examples.voc_joint import atomic

    demo.write_results(tmp_path, {"seeds": 1}, "old table")
    assert json.loads((tmp_path / "results.json").read_text()) == {"seeds": 1}
    assert (tmp_path / "table.txt").read_text() == "old table\n"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        demo.write_results(tmp_path, {"seeds": 2}, "new table")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_help_says_spixelfcn_gets_a_tenth() -> None:
    help_text = next(a.help for a in demo.build_parser()._actions if "--joint-lr" in a.option_strings)
    assert "DeepLabV3+" in help_text and "SpixelFCN gets a tenth" in help_text and "both" not in help_text


class _Constant(torch.nn.Module):
    """A model-contract stub predicting class ``label`` everywhere."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label

    def forward(self, seg_input, spixel_input):
        logits = torch.zeros(seg_input.shape[0], 21, *seg_input.shape[-2:])
        logits[:, self.label] = 1.0
        return {"logits": logits, "seg_logits": logits, "superpixels": None, "assoc": None}


def test_panels_show_the_pretrained_baseline_next_to_the_joint_model(
    varied_voc: Path, tmp_path: Path
) -> None:
    """The "baseline" tile is the baseline model's prediction (the table's pretrained row), not the joint
    model's own seg_logits; superpixels and the joint tile come from the joint model."""
    seg, spx = untrained_checkpoints(tmp_path)
    joint = demo.join_pretrained(seg, spx, fusion=True)
    loader = demo.val_loader(varied_voc)
    paths = demo.write_panels(_Constant(15), joint, loader, tmp_path / "panels", max_panels=3)
    assert [p.name for p in paths] == [f"{n}.png" for n in loader.dataset.dataset.names[:3]]
    batch = next(iter(loader))
    with torch.no_grad():
        out = joint(batch["seg_input"], batch["spixel_input"])
    pred = out["logits"].argmax(1)[0]
    base = torch.full_like(pred, 15)
    expected = make_panel(
        batch["image"][0], batch["target"][0], base, pred, out["superpixels"][0], titles=demo.PANEL_TITLES
    )
    with Image.open(paths[0]) as im:
        assert np.array_equal(np.asarray(im), np.asarray(expected))
    assert not torch.equal(out["seg_logits"].argmax(1)[0], base)  # the joint model's own network differs


def test_same_size_batches_compare_the_whole_size() -> None:
    """Images of equal width but different height (or the reverse) go to different batches."""

    def sample(h: int, w: int) -> dict:
        return {"seg_input": torch.zeros(3, h, w), "target": torch.zeros(h, w, dtype=torch.long)}

    batches = demo.same_size_batches([sample(40, 48), sample(36, 48), sample(40, 52), sample(40, 48)])
    assert [tuple(b["seg_input"].shape) for b in batches] == [(2, 3, 40, 48), (1, 3, 36, 48), (1, 3, 40, 52)]


def test_transparency_check_detects_a_stack_that_is_not_transparent(
    varied_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check compares the fusion model with the model without fusion (U(S)): a stack built to give 2 U
    instead of U is reported with a difference of max |U|."""
    from examples.voc_joint.models import joint as joint_mod

    seg, spx = untrained_checkpoints(tmp_path)
    val = build_dataset(varied_voc, "val")
    batch = demo.same_size_batches([val[0], val[1]])[0]
    plain = demo.join_pretrained(seg, spx, fusion=False)
    with torch.no_grad():
        u = plain(batch["seg_input"], batch["spixel_input"])["logits"]
    target = joint_mod.fusion_target_weight
    monkeypatch.setattr(joint_mod, "fusion_target_weight", lambda c: 2 * target(c))
    check = demo.transparency_check(seg, spx, batch)
    assert check["max_abs_diff"] == pytest.approx(float(u.abs().max()), rel=1e-3)
    assert check["max_abs_diff"] > 1e-2
    # several batches: the largest difference of any of them, wherever it is
    flat = {**batch, "seg_input": torch.zeros_like(batch["seg_input"])}
    flat["spixel_input"] = torch.zeros_like(batch["spixel_input"])
    small = demo.transparency_check(seg, spx, flat)["max_abs_diff"]
    assert small < check["max_abs_diff"]
    assert demo.transparency_check(seg, spx, [batch, flat])["max_abs_diff"] == check["max_abs_diff"]


@pytest.mark.parametrize("nan_in", ["logits", "seg_logits"])
def test_transparency_check_reports_nan_outputs_as_nan_not_as_zero(
    varied_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nan_in: str
) -> None:
    """A NaN in the joint model's output was read as a difference of 0 (``max(0.0, nan)`` is 0.0), and the
    demo printed PASS for a broken stack; a NaN S was "|S| up to 0.0". Both are NaN now, in the first batch
    or a later one."""
    seg, spx = untrained_checkpoints(tmp_path)
    val = build_dataset(varied_voc, "val")
    batch = demo.same_size_batches([val[0], val[1]])[0]
    flat = {**batch, "seg_input": torch.zeros_like(batch["seg_input"])}
    join = demo.join_pretrained

    class NaNOnFlat(torch.nn.Module):
        """The joint model with fusion, its ``nan_in`` output NaN at one pixel of the all-zero batch."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model, self.num_classes = model, model.num_classes

        def forward(self, seg_input, spixel_input):
            out = dict(self.model(seg_input, spixel_input))
            if not seg_input.any():
                out[nan_in] = out[nan_in].clone()
                out[nan_in][0, 0, 0, 0] = float("nan")
            return out

    def joined(*args, fusion: bool, **kwargs):
        model = join(*args, fusion=fusion, **kwargs)
        return NaNOnFlat(model) if fusion else model

    monkeypatch.setattr(demo, "join_pretrained", joined)
    finite = demo.transparency_check(seg, spx, batch)
    assert finite["max_abs_diff"] < 1e-3 and finite["max_abs_logit"] > 0  # as before without NaN
    for batches in ([flat], [batch, flat]):
        check = demo.transparency_check(seg, spx, batches)
        key = "max_abs_diff" if nan_in == "logits" else "max_abs_logit"
        assert np.isnan(check[key]), (batches, check)  # a NaN difference fails the demo's PASS test (<=)


def test_transparency_check_scales_by_the_largest_deeplab_logit_not_the_joint_output(
    varied_voc: Path, tmp_path: Path
) -> None:
    """``max_abs_logit`` is max |S| (the demo prints it as "|S| up to" and scales the 1e-4 bar with it), not
    max of the joint output U(S), whose superpixel means are smaller: that would tighten the bar."""
    seg, spx = untrained_checkpoints(tmp_path)
    val = build_dataset(varied_voc, "val")
    batch = demo.same_size_batches([val[0], val[1]])[0]
    with torch.no_grad():
        out = demo.join_pretrained(seg, spx, fusion=False)(batch["seg_input"], batch["spixel_input"])
    s_max, u_max = float(out["seg_logits"].abs().max()), float(out["logits"].abs().max())
    assert u_max < s_max  # the two candidates differ on this batch
    assert demo.transparency_check(seg, spx, batch)["max_abs_logit"] == s_max


def test_join_pretrained_builds_the_fusion_stack_asked_for_with_the_given_seed(tmp_path: Path) -> None:
    seg, spx = untrained_checkpoints(tmp_path)
    assert demo.join_pretrained(seg, spx, fusion=False).fusion is None

    def weights(seed: int) -> list[torch.Tensor]:
        model = demo.join_pretrained(seg, spx, fusion=True, seed=seed, fusion_init="xavier")
        assert model.fusion is not None
        return [p.detach().clone() for p in model.fusion.parameters()]

    w0, w1 = weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(w0, weights(0), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(w0, w1, strict=True))


def test_transparency_check_consistency_pools_the_superpixels_of_every_batch(
    varied_voc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.voc_joint import metrics

    seg, spx = untrained_checkpoints(tmp_path)
    val = build_dataset(varied_voc, "val")
    batches = demo.same_size_batches([val[0], val[2]])
    scores = iter(
        [{"pure_superpixels": 1.0, "superpixels": 4.0}, {"pure_superpixels": 3.0, "superpixels": 4.0}]
    )
    monkeypatch.setattr(metrics, "superpixel_scores", lambda *args, **kwargs: next(scores))
    assert demo.transparency_check(seg, spx, batches)["consistency"] == 0.5  # 4 / 8, not the last batch's


def test_val_loader_takes_at_most_the_images_there_are(varied_voc: Path) -> None:
    assert len(demo.val_loader(varied_voc, 2).dataset) == 2
    assert len(demo.val_loader(varied_voc, 100).dataset) == 4
    assert len(list(demo.val_loader(varied_voc, 100))) == 4


def _stale_demo_run(out: Path) -> list[Path]:
    """The files of an earlier demo run in ``out`` (fake content), and a file of the user's."""
    files = [
        out / "results.json",
        out / "table.txt",
        out / "panels" / "a.png",
        out / "pretrain" / "seg" / "checkpoint.pt",
        out / "pretrain" / "spixel" / "log.csv",
        out / "superpixel_ti" / "joint" / "checkpoint.pt",
        out / "superpixel_xavier" / "joint" / "checkpoint.pt",
    ]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("old")
    (out / "notes.txt").write_text("mine")
    return files


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_refuses_a_folder_holding_a_demo_run(tmp_path: Path, capsys) -> None:
    """A rerun into the same folder is refused at once (one line, status 2, nothing touched): the demo
    used to pass --overwrite to every stage and silently replace the earlier run."""
    out = tmp_path / "demo"
    _stale_demo_run(out)
    before = _snapshot(out)
    with pytest.raises(SystemExit) as info:
        demo.main(["--output-dir", str(out), "--data-root", str(tmp_path), "--no-progress"])
    captured = capsys.readouterr()
    assert info.value.code == 2 and captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("python examples/voc_joint/demo.py: error: ")
    assert f"output folder {out} holds a demo run" in err
    assert "--overwrite" in err and "another --output-dir" in err
    assert _snapshot(out) == before
    # a single leftover output counts, so does a bare stage folder of an interrupted run
    for leftover in ("results.json", "pretrain"):
        folder = tmp_path / f"only_{leftover}"
        folder.mkdir()
        if leftover == "pretrain":
            (folder / leftover).mkdir()
        else:
            (folder / leftover).write_text("{}")
        with pytest.raises(SystemExit):
            demo.main(["--output-dir", str(folder), "--data-root", str(tmp_path)])
        assert leftover in capsys.readouterr().err


def _overwrite_until_pretraining(out: Path, data_root: Path, monkeypatch) -> dict[str, object]:
    """Run the demo with ``--overwrite`` into ``out``, stopped where pretraining starts; what the output
    folder held then (``files``) and the options the stages got (``common``)."""
    seen: dict[str, object] = {}

    def stop(opts, common, folder, info, **kw):
        seen["files"] = _snapshot(out)
        seen["common"] = common
        raise RuntimeError("stopped")

    monkeypatch.setattr(demo, "pretrain", stop)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            demo.main(["--output-dir", str(out), "--data-root", str(data_root), "--overwrite", *SMALL_BATCH])
    finally:
        torch.set_num_threads(threads)
    return seen


def test_demo_overwrite_clears_the_previous_run_before_training(
    tmp_path: Path, tiny_voc: Path, monkeypatch
) -> None:
    """With --overwrite nothing of the earlier run survives a rerun that stops early (it used to leave the
    old results.json, table.txt, panels and joint checkpoints next to new pretraining); other files stay."""
    out = tmp_path / "demo"
    stale = _stale_demo_run(out)
    seen = _overwrite_until_pretraining(out, tiny_voc, monkeypatch)
    assert not any(p.exists() for p in stale)
    assert {p.name for p in out.iterdir()} - {".lock"} == {"notes.txt"}  # the lock file may stay
    files = dict(seen["files"])  # type: ignore[call-overload]
    files.pop(".lock", None)
    assert files == {"notes.txt": "mine"}  # cleared before the first stage started
    assert "--overwrite" not in seen["common"]  # type: ignore[operator]  # the stages start in empty folders


def test_demo_overwrite_deletes_the_run_folders_whole_as_documented(
    tmp_path: Path, tiny_voc: Path, monkeypatch
) -> None:
    """--overwrite keeps files of your own at the top level of --output-dir only: a file put into a run
    folder goes with it (pipeline.rst said "files of your own there stay", without that limit)."""
    out = tmp_path / "demo"
    _stale_demo_run(out)
    (out / "superpixel_ti" / "mine.txt").write_text("mine")
    (out / "pretrain" / "seg" / "notes").mkdir()
    _overwrite_until_pretraining(out, tiny_voc, monkeypatch)
    assert {p.name for p in out.iterdir()} - {".lock"} == {"notes.txt"}
    doc = " ".join((Path(__file__).parents[2] / "docs" / "examples" / "pipeline.rst").read_text().split())
    assert "deleted whole, with any file you put into them" in doc
    assert "files of your own at the top level of ``--output-dir`` stay" in doc


def test_demo_table_footer_names_no_option_the_demo_lacks() -> None:
    """The footer said "One seed (--seed 0)", but the demo has no --seed option."""
    text = demo.table_footer(16)
    assert text.startswith("One seed (0, fixed) and 16 validation images")
    options = {s for a in demo.build_parser()._actions for s in a.option_strings}
    assert set(re.findall(r"--[a-z][a-z-]*", text)) <= options
    output = (Path(__file__).parents[2] / "docs" / "examples" / "demo_output.txt").read_text()
    assert text.splitlines()[0] in output  # the recorded output is the current one


def test_demo_overwrite_in_a_new_folder(tmp_path: Path, tiny_voc: Path, monkeypatch) -> None:
    """--overwrite where there is nothing to replace is no error."""

    def stop(*args, **kwargs):
        raise RuntimeError("stopped")

    monkeypatch.setattr(demo, "pretrain", stop)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            argv = [
                "--output-dir",
                str(tmp_path / "new"),
                "--data-root",
                str(tiny_voc),
                "--overwrite",
                *SMALL_BATCH,
            ]
            demo.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_a_users_data_gets_the_training_clis_checks_before_overwrite_deletes(
    tmp_path: Path, tiny_voc: Path, capsys
) -> None:
    """With --data-root, listed files that do not exist are named (exit 1) and a training split holding
    validation images is refused (exit 2) before --overwrite deletes the earlier run: train.py's checks."""
    import shutil

    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    out = tmp_path / "demo"
    stale = _stale_demo_run(out)
    argv = ["--output-dir", str(out), "--data-root", str(root), "--overwrite", "--no-progress", *SMALL_BATCH]
    assert_data_root_is_checked(lambda: demo.main(argv), root, capsys)
    assert all(p.exists() for p in stale)  # nothing of the earlier run was deleted


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_demo_output_folder_that_cannot_be_made_is_one_error_line(tmp_path: Path, where: str, capsys) -> None:
    """An --output-dir that is a file (or lies below one): one error line (the demo ended with a
    FileExistsError / NotADirectoryError traceback, then exit status 1), exit status 2 with argparse's usage
    before anything runs, as every script's unusable output folder (``test_cli_output_dir.py``)."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "demo"
    with pytest.raises(SystemExit) as info:
        demo.main(["--output-dir", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.count("error:") == 1, err
    last = err.splitlines()[-1]
    assert (
        last.startswith("python examples/voc_joint/demo.py: error: --output-dir: ") and str(blocker) in last
    )
    assert blocker.read_text() == "x"


def test_a_signal_is_one_line_with_exit_status_143(tiny_voc: Path, tmp_path: Path) -> None:
    """SIGTERM during a stage of the demo wrote the stage's checkpoint and ended with exit status 143 but no
    word on what to do (SIGINT outside a stage: 130 and no word either). One line now names the signal and
    how to run the demo again."""
    argv = ["--output-dir", str(tmp_path / "demo"), "--data-root", str(tiny_voc), "--max-steps", "2"]
    argv += ["--threads", "1", "--no-progress", *SMALL_BATCH]
    res = run_example("demo.py", argv, fault="sigterm@step:1")
    assert res.returncode == 143, res.stderr
    assert "stopped by SIGTERM (exit status 143); a demo does not continue" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


class _Tagged(torch.nn.Module):
    """A stand-in model that says where it came from (``tag``); the fake evaluation scores it by its tag."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag


def _fake_demo_run(out: Path, data_root: Path, monkeypatch, check: dict, *extra: str) -> tuple[dict, dict]:
    """``demo.main`` with every training stage, checkpoint load, model join, evaluation and panel replaced by
    fakes that record what they get: the demo's wiring of stages, models, table rows and printed verdict
    without training. Returns the results and what the fakes saw (``stages``: stage folder name -> the
    training CLI's options; ``scored``: tags in evaluation order; ``panels``: the two panel models' tags)."""
    from examples.voc_joint import checkpoint, evaluate

    seen: dict = {"stages": {}, "scored": [], "panels": None}

    def run_stage(stage: str, argv: list[str], info) -> Path:
        args = demo._train_args(argv)
        folder = Path(args.output_dir)
        seen["stages"][folder.name] = args
        return folder / stage / "checkpoint.pt"

    def load(path, *, expect_stage=None, **kwargs):
        return _Tagged(f"{expect_stage}:{Path(path).parent.parent.name}"), {}

    def join(
        seg_ckpt, spixel_ckpt, *, fusion: bool, seed: int = 0, mode: str = "hard", fusion_init="transparent"
    ):
        return _Tagged(f"join:{fusion_init if fusion else 'no fusion'}:{mode}:{seed}")

    def fake_evaluate(model, loader, **kwargs) -> dict:
        seen["scored"].append(model.tag)
        m = len(seen["scored"]) / 10
        return {"miou": m, "boundary_miou": {"1": m / 2, "3": m / 4, "5": m / 8}, "consistency": m / 2}

    def pretrain(opts, common, folder: Path, info, **kwargs) -> tuple[Path, Path]:
        paths = (folder / "seg" / "checkpoint.pt", folder / "spixel" / "checkpoint.pt")
        for path in paths:  # the training CLI checks that the files exist
            path.parent.mkdir(parents=True)
            path.touch()
        return paths

    monkeypatch.setattr(demo, "pretrain", pretrain)
    monkeypatch.setattr(demo, "transparency_check", lambda *args, **kwargs: dict(check))
    monkeypatch.setattr(demo, "_run_stage", run_stage)
    monkeypatch.setattr(demo, "join_pretrained", join)
    monkeypatch.setattr(checkpoint, "load_model_from_checkpoint", load)
    monkeypatch.setattr(evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr(
        demo, "write_panels", lambda base, joint, *a, **k: seen.update(panels=(base.tag, joint.tag))
    )
    threads = torch.get_num_threads()
    argv = ["--output-dir", str(out), "--data-root", str(data_root), "--no-progress", *SMALL_BATCH, *extra]
    try:
        results = demo.main(argv)
    finally:
        torch.set_num_threads(threads)
    return results, seen


def test_each_table_row_scores_the_model_it_names(
    tmp_path: Path, tiny_voc: Path, monkeypatch, capsys
) -> None:
    """The seven rows of the demo's table (results.json, table.txt) are the evaluations of the models their
    names say, the four fine-tuning runs get the options their names say with the printed learning rates
    (SpixelFCN a tenth), and the panels show the pretrained DeepLabV3+ next to the transparent-init run. The
    slow end-to-end runs check only that there are seven rows."""
    results, seen = _fake_demo_run(
        tmp_path / "demo",
        tiny_voc,
        monkeypatch,
        {"max_abs_diff": 0.0, "max_abs_logit": 1.0, "consistency": 1.0},
        "--joint-lr",
        "0.05",
        "--fusion-lr",
        "0.003",
        "--joint-epochs",
        "3",
    )
    capsys.readouterr()
    stages = seen["stages"]
    assert sorted(stages) == ["baseline_finetuned", "superpixel", "superpixel_ti", "superpixel_xavier"]
    pretrain = tmp_path / "demo" / "pretrain"
    for args in stages.values():
        assert (args.lr, args.spixel_lr, args.fusion_lr, args.epochs) == (0.05, 0.005, 0.003, 3)
        assert (Path(args.seg_checkpoint), Path(args.spixel_checkpoint)) == (
            pretrain / "seg" / "checkpoint.pt",
            pretrain / "spixel" / "checkpoint.pt",
        )
    got = {name: (a.mode, a.fusion, a.fusion_init if a.fusion else None) for name, a in stages.items()}
    assert got == {
        "baseline_finetuned": ("none", False, None),
        "superpixel": ("hard", False, None),
        "superpixel_ti": ("hard", True, "transparent"),
        "superpixel_xavier": ("hard", True, "xavier"),
    }
    expected = {
        "DeepLabV3+ (baseline, pretrained)": "seg:pretrain",
        "DeepLabV3+ fine-tuned alike (no superpixels)": "joint:baseline_finetuned",
        "+ superpixel, step 0 (= transparent init at step 0)": "join:no fusion:hard:0",
        "+ superpixel (fine-tuned)": "joint:superpixel",
        "+ superpixel + transparent init (fine-tuned)": "joint:superpixel_ti",
        "+ superpixel + Xavier init, step 0": "join:xavier:hard:0",
        "+ superpixel + Xavier init (fine-tuned)": "joint:superpixel_xavier",
    }
    scores = {tag: (k + 1) / 10 for k, tag in enumerate(seen["scored"])}
    assert sorted(seen["scored"]) == sorted(expected.values())
    table = results["table"]
    assert list(table) == list(expected)
    for name, tag in expected.items():
        m = scores[tag]
        consistency = None if name.endswith("(baseline, pretrained)") else m / 2
        assert table[name] == {
            "miou": m,
            "boundary_miou": {"1": m / 2, "3": m / 4, "5": m / 8},
            "consistency": consistency,
        }
    assert seen["panels"] == ("seg:pretrain", "joint:superpixel_ti")
    assert results["learning_rates"] == {"networks": 0.05, "spixelfcn": 0.005, "fusion": 0.003}
    assert results["seeds"] == 1
    saved = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert saved["table"] == json.loads(json.dumps(table))


@pytest.mark.parametrize(
    ("diff", "logit", "bar", "verdict"),
    [(5e-4, 100.0, "1.0e-03", "PASS"), (2e-3, 100.0, "1.0e-03", "FAIL"), (5e-4, 3.0, "1.0e-04", "FAIL")],
)
def test_the_transparency_verdict_scales_the_bar_with_the_largest_logit(
    tmp_path: Path, tiny_voc: Path, monkeypatch, capsys, diff: float, logit: float, bar: str, verdict: str
) -> None:
    """The step-0 check passes when max |joint - U(S)| is within 1e-4 x max(1, |S| / 10), the bar it prints;
    the end-to-end runs only ever PASS, so a wrong bar went unseen."""
    _fake_demo_run(
        tmp_path / "demo",
        tiny_voc,
        monkeypatch,
        {"max_abs_diff": diff, "max_abs_logit": logit, "consistency": 0.5},
    )
    text = capsys.readouterr().out
    assert f"requirement <= 1e-4 x max(1, |S| / 10) = {bar}: {verdict}), consistency 50.0 %" in text, text


def test_demo_table_footer_points_to_the_ablation_script_that_exists() -> None:
    """The footer's pointer to mean +- std over seeds names the ablation's command and docs page, and both
    exist in the repository."""
    text = demo.table_footer(16)
    root = Path(__file__).parents[2]
    assert "python examples/voc_joint/ablation.py" in text and "docs/examples/ablation.rst" in text
    assert (root / "examples" / "voc_joint" / "ablation.py").is_file()
    assert (root / "docs" / "examples" / "ablation.rst").is_file()


def test_the_transparency_verdict_passes_at_the_bar_itself(
    tmp_path: Path, tiny_voc: Path, monkeypatch, capsys
) -> None:
    """The printed requirement is ``<= bar``: a difference equal to the bar (1e-4 for logits up to 10)
    passes."""
    _fake_demo_run(
        tmp_path / "demo",
        tiny_voc,
        monkeypatch,
        {"max_abs_diff": 1e-4, "max_abs_logit": 1.0, "consistency": 1.0},
    )
    text = capsys.readouterr().out
    assert "requirement <= 1e-4 x max(1, |S| / 10) = 1.0e-04: PASS)" in text, text


def test_every_demo_stage_runs_with_seed_0_and_the_step_cap(tmp_path: Path) -> None:
    """The options every stage shares give the seed the footer names ("One seed (0, fixed)") and pass
    ``--max-steps`` on to the training CLI (absent without it)."""
    parse = demo.build_parser().parse_args
    args = demo._train_args(demo.common_args(parse(["--max-steps", "3"]), tmp_path))
    assert (args.seed, args.max_steps) == (0, 3)
    args = demo._train_args(demo.common_args(parse([]), tmp_path, model=False))
    assert (args.seed, args.max_steps) == (0, None)
    assert demo.table_footer(4).startswith("One seed (0, fixed)")


def test_the_table_footer_counts_every_validation_image_scored(
    tmp_path: Path, tiny_voc: Path, monkeypatch, capsys
) -> None:
    """The footer says how many validation images the table rests on: all those evaluated (six here), not the
    four that the step-0 transparency check looks at."""
    samples = [{"seg_input": torch.zeros(3, 4, 4), "name": f"v{i}"} for i in range(6)]
    loader = torch.utils.data.DataLoader(samples, batch_size=1)
    monkeypatch.setattr(demo, "val_loader", lambda root, max_images=None: loader)
    _fake_demo_run(
        tmp_path / "demo",
        tiny_voc,
        monkeypatch,
        {"max_abs_diff": 0.0, "max_abs_logit": 1.0, "consistency": 1.0},
    )
    text = capsys.readouterr().out
    assert "One seed (0, fixed) and 6 validation images" in text, text
