"""Training CLI: --help, a 2-step run of every stage, CLI errors, optimizer settings, the demo."""

from __future__ import annotations

import argparse
import csv
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("torchvision")

from PIL import Image

from examples.voc_joint import resume_notes, sources, train, train_data, train_options
from examples.voc_joint.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_from_checkpoint,
    payload_sha256,
    save_checkpoint,
)
from examples.voc_joint.cli import UsageError, error_text
from examples.voc_joint.distributed import DistInfo
from examples.voc_joint.models import DeepLabV3Plus, JointModel
from examples.voc_joint.resume import option_changes

from .helpers import (
    ROOT,
    conv_layout,
    fail_atomic_write,
    run_tiny_demo,
    script_env,
    train_args,
    untrained_checkpoints,
)


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _run_script(*argv: str, timeout: float = 180) -> tuple[int | None, str]:
    """Run train.py in its own session; ``(exit status, stderr)``, status None when it outlived ``timeout``
    (then its whole process group, DataLoader workers included, is killed)."""
    proc = subprocess.Popen(
        [sys.executable, "examples/voc_joint/train.py", *argv],
        cwd=ROOT,
        env=script_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return None, err


def _damaged_copy(root: Path, dest: Path, stem: str) -> Path:
    """A copy of the data set ``root`` whose training image ``stem``.jpg is no image (found when it is read
    with ``--no-check-files``: the header pass names it before the run starts, as a missing file)."""
    shutil.copytree(root, dest)
    (dest / "JPEGImages" / f"{stem}.jpg").write_bytes(b"not a JPEG")
    return dest


@pytest.mark.parametrize("how", ["file", "module"])
def test_help_documents_every_option(how: str) -> None:
    cmd = (
        [sys.executable, "examples/voc_joint/train.py", "--help"]
        if how == "file"
        else [sys.executable, "-m", "examples.voc_joint.train", "--help"]
    )
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    parser = train_options.build_parser()
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in res.stdout, opt
        assert action.help, action.dest  # every option has a help text


def _documented_parser(name: str) -> argparse.ArgumentParser:
    """The parser of the example script ``name`` (``train``, ``demo``, ``ablation``), whose ``--help``
    docs/examples/<name>_help.txt records."""
    from examples.voc_joint import ablation, demo

    builders = {
        "train": train_options.build_parser,
        "demo": demo.build_parser,
        "ablation": ablation.build_parser,
    }
    return builders[name]()


@pytest.mark.parametrize("name", ["train", "demo", "ablation"])
def test_docs_help_listings_are_current(name: str) -> None:
    """docs/examples/<name>_help.txt (shown on the pipeline page) lists every option of the parser."""
    parser = _documented_parser(name)
    text = (ROOT / "docs" / "examples" / f"{name}_help.txt").read_text()
    missing = [opt for action in parser._actions for opt in action.option_strings if opt not in text]
    assert not missing, f"regenerate docs/examples/{name}_help.txt (see pipeline.rst); missing {missing}"


@pytest.mark.skipif(
    sys.version_info[:2] not in ((3, 11), (3, 12)),
    reason="the transcripts are argparse's layout of Python 3.11 and 3.12 (3.13 changed how it wraps usage)",
)
@pytest.mark.parametrize("name", ["train", "demo", "ablation"])
def test_docs_help_transcripts_are_the_help(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/examples/<name>_help.txt is, line for line, what ``COLUMNS=110 python examples/voc_joint/<name>.py
    --help`` prints: a changed help text, metavar or default reaches the pages (the option-list check above
    passes a transcript whose texts are stale)."""
    monkeypatch.setenv("COLUMNS", "110")  # argparse's width, as in the regeneration command
    shown = _documented_parser(name).format_help()
    path = ROOT / "docs" / "examples" / f"{name}_help.txt"
    recorded = path.read_text(encoding="utf-8")
    diff = "".join(
        difflib.unified_diff(
            recorded.splitlines(keepends=True), shown.splitlines(keepends=True), str(path), "--help now"
        )
    )
    assert not diff, (
        f"regenerate it: COLUMNS=110 python examples/voc_joint/{name}.py --help "
        f"> docs/examples/{name}_help.txt\n{diff}"
    )


def test_all_stages_two_steps(tiny_voc, tmp_path) -> None:
    out = train.main(
        train_args(
            tiny_voc,
            tmp_path,
            "--stage",
            "all",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--mode",
            "soft",
            "--eval",
        )
    )
    assert set(out) == {"seg", "spixel", "joint"}
    for stage in ("seg", "joint"):  # --eval: evaluate.evaluate() on the val split, JSON + panels
        res = json.loads((out[stage].parent / "eval.json").read_text())
        assert 0 <= res["miou"] <= 1 and list((out[stage].parent / "panels").glob("*.png"))
    assert not (out["spixel"].parent / "eval.json").exists()
    for stage, path in out.items():
        ck = load_checkpoint(path)
        assert ck["stage"] == stage and ck["step"] == 2 and ck["complete"]
        rows = _rows(path.parent / "log.csv")
        assert rows and rows[-1]["step"] == "2" and float(rows[-1]["loss"]) > 0
    # --stage all --resume of the finished run: every stage is checked up front against its own folder
    # (the joint stage with the seg / spixel checkpoints that 'all' gave it) and nothing is redone
    argv = ["--stage", "all", "--epochs", "1", "--max-steps", "2", "--mode", "soft", "--eval", "--resume"]
    again = train.main(train_args(tiny_voc, tmp_path, *argv))
    assert again == out and all(load_checkpoint(p)["step"] == 2 for p in again.values())
    joint_ck = load_checkpoint(out["joint"])
    assert joint_ck["config"]["args"]["seg_checkpoint"] == str(out["seg"])
    model, config = load_model_from_checkpoint(out["joint"])
    assert isinstance(model, JointModel) and model.mode == "soft" and config["stage"] == "joint"
    rows = _rows(out["joint"].parent / "log.csv")
    assert rows[-1]["ce"] and rows[-1]["spixel"]
    # the joint stage started from the pretrained networks: untouched BN statistics of DeepLabV3+ (frozen)
    seg = load_checkpoint(out["seg"])["model"]
    assert torch.equal(
        joint_ck["model"]["deeplab.backbone.bn1.running_mean"], seg["backbone.bn1.running_mean"]
    )


def test_data_error_in_a_worker_exits_promptly(tiny_voc, tmp_path) -> None:
    """A data error raised in a DataLoader worker (which ignores SIGTERM, so that only the main process
    handles signals) ends the run with the clean error line and status 1 instead of hanging at exit."""
    stem = (tiny_voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    root = _damaged_copy(tiny_voc, tmp_path / "data", stem)
    argv = train_args(root, tmp_path / "out", "--stage", "seg", "--epochs", "1", "--threads", "1")
    argv += ["--no-check-files"]  # else the header pass finds the file before any worker starts
    argv[argv.index("--workers") + 1] = "1"
    code, err = _run_script(*argv, timeout=120)
    assert code == 1, f"exit status {code} (None: still running after 120 s)\n{err[-3000:]}"
    assert "[train] error:" in err and f"cannot read image file '{root / 'JPEGImages' / stem}.jpg'" in err


@pytest.mark.parametrize("context", ["fork", "forkserver", "spawn"])
def test_train_loader_same_batches_under_every_worker_start_method(tiny_voc, context) -> None:
    """Workers started by fork (Linux up to Python 3.13), forkserver (Linux from 3.14) or spawn (macOS,
    Windows) give the batches of ``--workers 0``: the dataset, its transforms and the worker hook pickle,
    and each sample's augmentation depends on (seed, epoch, index) only."""
    from examples.voc_joint.distributed import DistInfo

    def batches(workers: int, ctx: str | None) -> list[dict]:
        argv = ["--stage", "seg", "--workers", str(workers), "--crop-size", "32", "--batch-size", "2"]
        args = train_options.resolve_stage_options("seg", train_options.build_parser().parse_args(argv))
        loader, sampler = train_data.build_train_loader(args, DistInfo(), tiny_voc)
        if ctx is not None:
            loader.multiprocessing_context = ctx
        sampler.set_epoch(1)
        return list(loader)

    ref, got = batches(0, None), batches(2, context)
    assert len(ref) == len(got) == 2
    for a, b in zip(ref, got, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_optimizer_groups_paper_defaults_and_weight_decay() -> None:
    args = train_options.resolve_stage_options(
        "joint",
        train_options.build_parser().parse_args(
            ["--backbone", "resnet18", "--aspp-channels", "8", "--spixel-width", "4"]
        ),
    )
    model = train.build_stage_model("joint", args)
    opt = train.build_optimizer("joint", model, args)
    assert isinstance(opt, torch.optim.SGD)
    groups = {g["name"]: g for g in opt.param_groups}
    assert {k: g["lr"] for k, g in groups.items()} == {"deeplab": 1e-6, "spixelfcn": 1e-6, "fusion": 1e-7}
    assert all(g["weight_decay"] == 5e-4 and g["momentum"] == 0.9 for g in groups.values())
    n = sum(len(g["params"]) for g in opt.param_groups)
    assert n == len(list(model.parameters()))
    sched = train.build_scheduler(opt, args, 100)
    assert args.schedule == "fixed"
    for _ in range(10):
        opt.step(), sched.step()
    assert opt.param_groups[0]["lr"] == 1e-6
    seg_args = train_options.resolve_stage_options("seg", args)
    assert (seg_args.schedule, seg_args.optimizer, seg_args.weight_decay) == (
        "fixed",
        "sgd",
        5e-4,
    )  # inherited
    fresh = train_options.resolve_stage_options("seg", train_options.build_parser().parse_args([]))
    assert (fresh.schedule, fresh.optimizer) == ("poly", "sgd")
    spx = train_options.resolve_stage_options("spixel", train_options.build_parser().parse_args([]))
    assert (spx.optimizer, spx.weight_decay) == ("adam", 4e-4)
    # the resolved options name their stage (checkpoints and logs of --stage all record the stage run)
    assert (fresh.stage, spx.stage) == ("seg", "spixel")


def test_joint_loss_normalization_is_the_documented_one() -> None:
    """The joint loss is ``CE + w * spixel_loss``: CE a mean over the non-ignored pixels of the batch (not
    divided again by the batch size, as the authors' main.py did) and spixel_loss's semantic term a mean over
    the valid pixels (not over pixel x class entries, as their loss.py did). docs/examples/pipeline.rst states
    the difference and what it means for the paper's learning rates; this pins what it states."""
    import sparse_ops
    from examples.voc_joint import engine

    small = ["--backbone", "resnet18", "--aspp-channels", "8", "--spixel-width", "4", "--cell-size", "8"]
    args = train_options.resolve_stage_options(
        "joint", train_options.build_parser().parse_args([*small, "--spixel-loss-weight", "0.5"])
    )
    model = train.build_stage_model("joint", args).eval()  # eval: no dropout, the same output per image
    gen = torch.Generator().manual_seed(0)
    seg, spx = torch.randn(1, 3, 32, 32, generator=gen), torch.randn(1, 3, 32, 32, generator=gen)
    target = torch.randint(0, 21, (1, 32, 32), generator=gen)
    target[:, :4] = 255

    def loss(copies: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = {"seg_input": seg.repeat(copies, 1, 1, 1), "spixel_input": spx.repeat(copies, 1, 1, 1)}
        with torch.no_grad():
            return engine.stage_loss(
                "joint", model, {**batch, "target": target.repeat(copies, 1, 1)}, args, "cpu"
            )

    one, parts = loss(1)
    four, _ = loss(4)
    torch.testing.assert_close(four, one, rtol=1e-5, atol=0)  # not divided by the batch size
    with torch.no_grad():
        out = model(seg, spx)
        sl = sparse_ops.spixel_loss(out["assoc"], target, 8, pos_weight=args.pos_weight, num_classes=21)
    ce = torch.nn.functional.cross_entropy(out["logits"], target, ignore_index=255)  # mean over valid pixels
    torch.testing.assert_close(parts["ce"], ce)
    torch.testing.assert_close(parts["spixel"], sl.total)
    torch.testing.assert_close(sl.total, sl.semantic + args.pos_weight / 8 * sl.position)
    torch.testing.assert_close(one, ce + 0.5 * sl.total)


@pytest.mark.parametrize("stage, key", [("seg", "seg_input"), ("spixel", "spixel_input")])
def test_each_pretraining_stage_feeds_its_network_its_own_normalization(stage: str, key: str) -> None:
    """DeepLabV3+ is trained on the ImageNet-normalized ``seg_input``, SpixelFCN on ``spixel_input`` (x minus
    SPIXEL_MEAN, no division): the inputs the joint model gives each network, so its pretrained weights
    see at the joint stage what they were trained on."""
    from examples.voc_joint import engine

    seen: list[torch.Tensor] = []

    class Recorder(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return torch.full((1, 9, 8, 8), 1 / 9) if stage == "spixel" else torch.zeros(1, 2, 8, 8)

    gen = torch.Generator().manual_seed(0)
    batch = {
        "seg_input": torch.randn(1, 3, 8, 8, generator=gen),
        "spixel_input": torch.randn(1, 3, 8, 8, generator=gen),
        "target": torch.zeros(1, 8, 8, dtype=torch.long),
    }
    args = argparse.Namespace(cell_size=4, pos_weight=0.003, num_classes=2)
    engine.stage_loss(stage, Recorder(), batch, args, torch.device("cpu"))
    assert len(seen) == 1 and torch.equal(seen[0], batch[key])


def test_spixel_stage_biases_get_no_weight_decay() -> None:
    """As in SpixelFCN's main.py (bias_decay 0, weight_decay 4e-4 on every 'weight', BatchNorm scales
    included): a bias with a zero gradient stays where it is, a weight shrinks."""
    args = train_options.resolve_stage_options(
        "spixel", train_options.build_parser().parse_args(["--spixel-width", "4"])
    )
    model = train.build_stage_model("spixel", args)
    opt = train.build_optimizer("spixel", model, args)
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    assert {k: g["weight_decay"] for k, g in groups.items()} == {"spixelfcn": 4e-4, "spixelfcn_biases": 0.0}
    assert all(names[id(p)].endswith("bias") for p in groups["spixelfcn_biases"]["params"])
    decayed = {names[id(p)] for p in groups["spixelfcn"]["params"]}
    bn_scales = {
        f"{n}.weight"
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
    }
    assert not any(n.endswith("bias") for n in decayed) and bn_scales and bn_scales <= decayed
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
            p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        assert torch.all(p == 1.0) if n.endswith("bias") else torch.all(p < 1.0), n


def test_spixel_checkpoint_with_one_optimizer_group_resumes(tiny_voc, tmp_path, capsys) -> None:
    """A spixel checkpoint written before the bias exemption (one optimizer group) resumes: each parameter
    keeps its Adam state, the biases get no weight decay from the next step, and the run says so."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "1", "--max-steps", "1")
    ckpt_path = train.main(argv)["spixel"]
    ckpt = load_checkpoint(ckpt_path)
    model = train.build_stage_model(
        "spixel", train_options.resolve_stage_options("spixel", train_options.build_parser().parse_args(argv))
    )
    opt = ckpt["optimizer"]
    index = {id(p): i for i, p in enumerate(model.parameters())}
    layout = train.build_optimizer(
        "spixel",
        model,
        train_options.resolve_stage_options("spixel", train_options.build_parser().parse_args(argv)),
    )
    new_to_old = {
        k: index[id(p)]
        for g, saved in zip(layout.param_groups, opt["param_groups"], strict=True)
        for k, p in zip(saved["params"], g["params"], strict=True)
    }
    moments = {old: opt["state"][new]["exp_avg"].clone() for new, old in new_to_old.items()}
    old_group = {k: v for k, v in opt["param_groups"][0].items() if k != "params"}
    old_group["weight_decay"] = 4e-4  # the old recipe: one group, every parameter decayed
    ckpt["optimizer"] = {
        "state": {old: opt["state"][new] for new, old in new_to_old.items()},
        "param_groups": [{**old_group, "params": list(range(len(index)))}],
    }
    save_checkpoint(ckpt_path, ckpt)
    capsys.readouterr()
    train.main([*argv[: argv.index("--max-steps")], "--max-steps", "2", "--resume"])
    assert "its biases get none" in capsys.readouterr().out
    after = load_checkpoint(ckpt_path)
    assert int(after["step"]) == 2
    groups = after["optimizer"]["param_groups"]
    assert [(g["name"], g["weight_decay"]) for g in groups] == [
        ("spixelfcn", 4e-4),
        ("spixelfcn_biases", 0.0),
    ]
    # the state moved with its parameter: regrouping alone (no step) gives back each parameter's moments
    fresh = train.build_optimizer(
        "spixel",
        model,
        train_options.resolve_stage_options("spixel", train_options.build_parser().parse_args(argv)),
    )
    regrouped, done = train._regroup_optimizer_state(fresh, ckpt["optimizer"], model)
    assert done
    fresh.load_state_dict(regrouped)
    for g in fresh.param_groups:
        for p in g["params"]:
            torch.testing.assert_close(fresh.state[p]["exp_avg"], moments[index[id(p)]], rtol=0, atol=0)


def test_a_checkpoint_with_the_module_prefix_resumes_as_the_plain_one(tiny_voc, tmp_path, capsys) -> None:
    """A checkpoint whose weights carry a DistributedDataParallel wrapper's ``module.`` prefix resumes (every
    other loader of these checkpoints takes it; ``--resume`` refused it with a missing-keys list): the same
    weights after the next step as the plain checkpoint's resume."""
    argv = train_args(tiny_voc, tmp_path / "src", "--stage", "spixel", "--epochs", "1", "--max-steps", "1")
    plain = load_checkpoint(train.main(argv)["spixel"])
    prefixed = {**plain, "model": {f"module.{k}": v for k, v in plain["model"].items()}}
    after = {}
    for name, ckpt in (("plain", plain), ("prefixed", prefixed)):
        source = save_checkpoint(tmp_path / f"{name}.pt", ckpt)
        out = tmp_path / name
        resumed = [*train_args(tiny_voc, out, "--stage", "spixel", "--epochs", "1", "--max-steps", "2")]
        train.main([*resumed, "--resume", str(source)])
        after[name] = load_checkpoint(out / "spixel" / "checkpoint.pt")
    assert int(after["prefixed"]["step"]) == 2
    assert after["prefixed"]["model"].keys() == plain["model"].keys()  # written without the prefix
    for key, value in after["plain"]["model"].items():
        assert torch.equal(after["prefixed"]["model"][key], value), key
    # a key with and without the prefix: refused, both named, the message whole (it was cut at 300 characters)
    both = {**plain, "model": {**plain["model"], "module.pred.bias": plain["model"]["pred.bias"]}}
    source = save_checkpoint(tmp_path / "both.pt", both)
    resumed = train_args(
        tiny_voc, tmp_path / "both", "--stage", "spixel", "--epochs", "1", "--max-steps", "2"
    )
    with pytest.raises(SystemExit) as info:
        train.main([*resumed, "--resume", str(source)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "cannot be restored" not in err, err  # its own message, not wrapped
    assert (
        f"checkpoint {source}: the keys 'pred.bias' and 'module.pred.bias' of its model are both 'pred.bias' "
        "once the prefix 'module.' is removed; keep one of them" in " ".join(err.split())
    ), err


def test_a_cuda_resume_that_cannot_restore_the_gpu_rng_states_says_so(monkeypatch) -> None:
    """set_rng_state skips the CUDA states when another number of GPUs is visible: the GPU's dropout then
    continues from other states, which the resume said nothing about."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a CUDA machine, as the device says
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    state = {"cuda": [torch.zeros(16, dtype=torch.uint8)] * 2}
    assert resume_notes.cuda_rng_note("seg", state, cuda) is None
    assert resume_notes.cuda_rng_note("seg", state, torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    note = resume_notes.cuda_rng_note("joint", state, cuda)
    assert note is not None and note.startswith(
        "[joint] the checkpoint holds the CUDA RNG states of 2 GPUs, this process sees 1: they are not "
        "restored"
    )
    assert note.endswith("make the same GPUs visible (CUDA_VISIBLE_DEVICES) to continue it bit for bit")
    assert "holds no CUDA RNG state (a run without CUDA), this process sees 1" in str(
        resume_notes.cuda_rng_note("seg", {"cuda": []}, cuda)
    )


def test_resume_with_another_thread_count_says_it_is_not_bit_identical(tiny_voc, tmp_path, capsys) -> None:
    """A checkpoint records the torch thread count; a CPU resume with another count says that the result will
    not be bit-identical to an uninterrupted run (PyTorch's CPU kernels round differently; a 6-step seg run
    on 1 and on 2 threads ends with other weights) and names the --threads to pass; the same count says
    nothing."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "2", "--max-steps", "1")
    assert argv[argv.index("--threads") + 1] == "2"
    threads = torch.get_num_threads()
    try:
        ckpt_path = train.main(argv)["spixel"]
        assert load_checkpoint(ckpt_path)["cpu_threads"] == 2
        resume = [*argv[: argv.index("--max-steps")], "--resume", "--max-steps"]
        capsys.readouterr()
        train.main([*resume, "2"])
        assert "CPU threads" not in capsys.readouterr().out
        one = [*resume, "3"]
        one[one.index("--threads") + 1] = "1"
        train.main(one)
        out = capsys.readouterr().out
        assert "[spixel] the run used 2 CPU threads, this process 1" in out, out
        assert "not be bit-identical" in out and "pass --threads 2" in out, out
        assert load_checkpoint(ckpt_path)["cpu_threads"] == 1  # the count of the steps since
    finally:
        torch.set_num_threads(threads)


def test_resume_with_another_memory_format_says_it_is_not_bit_identical(tiny_voc, tmp_path, capsys) -> None:
    """A checkpoint records the memory format its networks ran in (``--channels-last`` resolved: unset is the
    device's default); a resume that changes it for a network of the stage says that the result will not be
    bit-identical (the convolutions take other kernels: 16 seg steps in channels_last ended up to 0.019 away
    from the default's weights) and names what to pass; a change that leaves the stage's networks alone, or
    none, says nothing. Before, such a resume was accepted without a word."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "2", "--max-steps", "1")
    threads = torch.get_num_threads()
    try:
        ckpt_path = train.main(argv)["spixel"]
        assert load_checkpoint(ckpt_path)["channels_last"] == "spixelfcn"  # the CPU default, resolved
        resume = [*argv[: argv.index("--max-steps")], "--resume", "--max-steps"]
        capsys.readouterr()
        train.main([*resume, "2", "--channels-last"])  # SpixelFCN in channels_last, as before
        assert "memory format" not in capsys.readouterr().out
        assert load_checkpoint(ckpt_path)["channels_last"] is True
        train.main([*resume, "3", "--no-channels-last"])
        out = capsys.readouterr().out
        said = "[spixel] this resume changes the memory format (channels_last True then, False now)"
        assert said in out, out
        assert "not be bit-identical" in out and "pass --channels-last to continue it bit for bit" in out, out
        assert load_checkpoint(ckpt_path)["channels_last"] is False  # the format of the steps since
    finally:
        torch.set_num_threads(threads)


def test_numerics_note_names_compile_for_the_joint_stage_only() -> None:
    """``--compile`` changes the joint stage's arithmetic (16 steps: momentum buffers up to 4e-7 apart), so a
    joint resume that turns it on or off says so; a checkpoint without a recorded memory format (written
    before 2026-12-02) gets no memory-format note."""
    cpu = torch.device("cpu")
    ckpt = {"config": {"args": {"compile": False}}}
    on = argparse.Namespace(channels_last=None, compile=True)
    note = resume_notes.numerics_note("joint", ckpt, on, cpu)
    assert note is not None and "--compile (off then, on now)" in note and "pass --no-compile" in note, note
    assert "memory format" not in note
    assert resume_notes.numerics_note("joint", {"config": {"args": {"compile": True}}}, on, cpu) is None
    assert (
        resume_notes.numerics_note("seg", ckpt, on, cpu) is None
    )  # the networks alone: compile changes nothing
    assert resume_notes.numerics_note("spixel", ckpt, on, cpu) is None
    mixed = {"channels_last": "spixelfcn", "config": {"args": {"compile": True}}}
    note = resume_notes.numerics_note(
        "joint", mixed, argparse.Namespace(channels_last=False, compile=True), cpu
    )
    assert note is not None and "leave out --channels-last and --no-channels-last on the CPU" in note, note


def test_resume_with_another_torch_version_says_it_may_not_be_bit_identical(
    tiny_voc, tmp_path, capsys, monkeypatch
) -> None:
    """A checkpoint records the torch version that trained it; a resume under another version (an upgrade
    between an interrupt and the resume, another install) says that PyTorch does not promise the same bits
    across releases and names the version to resume with; the same version says nothing. The other install is
    simulated: the first run records a patched ``torch.__version__``."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "2", "--max-steps", "1")
    current = str(torch.__version__)
    other = "2.11.0+cpu" if current != "2.11.0+cpu" else "2.14.1+cpu"
    threads = torch.get_num_threads()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(torch, "__version__", other)
            ckpt_path = train.main(argv)["spixel"]
        assert load_checkpoint(ckpt_path)["torch_version"] == other
        resume = [*argv[: argv.index("--max-steps")], "--resume", "--max-steps"]
        capsys.readouterr()
        train.main([*resume, "2"])
        out = capsys.readouterr().out
        said = f"[spixel] the run was trained with torch {other}, this process runs torch {current}"
        assert said in out, out
        assert "may not be bit-identical" in out and f"resume with torch {other}" in out, out
        assert load_checkpoint(ckpt_path)["torch_version"] == current  # the version of the steps since
        train.main([*resume, "3"])
        assert "this process runs torch" not in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)


def test_resume_on_another_device_type_says_it_is_not_bit_identical(
    tiny_voc, tmp_path, capsys, monkeypatch
) -> None:
    """A checkpoint records the device type that trained it; a resume on another one (a run trained on a GPU
    continued on the CPU) printed no note, though another device rounds differently and draws other random
    numbers. It now says so and names the ``--device`` to pass; the same device says nothing, and a
    checkpoint written before the type was recorded gets no note. The GPU run is simulated: the first run's
    model reports the device ``cuda``."""
    from examples.voc_joint import train as train_module

    argv = train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "2", "--max-steps", "1")
    threads = torch.get_num_threads()
    try:
        with monkeypatch.context() as patch:  # the record reads the device of the model's parameters
            patch.setattr(train_module, "_model_device", lambda model: torch.device("cuda"))
            ckpt_path = train.main(argv)["spixel"]
        assert load_checkpoint(ckpt_path)["device_type"] == "cuda"
        resume = [*argv[: argv.index("--max-steps")], "--resume", "--max-steps"]
        capsys.readouterr()
        other_threads = [*resume, "2"]  # no thread note: the GPU run's CPU thread count shaped nothing, and
        other_threads[other_threads.index("--threads") + 1] = "1"  # (was: "pass --threads 2 ... bit for bit")
        train.main(other_threads)
        out = capsys.readouterr().out
        assert "[spixel] the run was trained on cuda, this process runs on cpu" in out, out
        assert "not be bit-identical" in out and "pass --device cuda" in out and "CPU threads" not in out, out
        assert load_checkpoint(ckpt_path)["device_type"] == "cpu"  # the device of the steps since
        train.main([*resume, "3"])
        assert "the run was trained on" not in capsys.readouterr().out
    finally:
        torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    assert (
        resume_notes.device_note("seg", {}, cpu) is None
        and resume_notes.device_note("seg", {"device_type": None}, cpu) is None
    )


def test_a_checkpoint_without_a_recorded_torch_version_gets_no_version_note() -> None:
    """Checkpoints written before the version was recorded (2026-12-02) hold none: nothing is known to
    differ, so their resume prints no note (not "trained with torch None")."""
    assert resume_notes.torch_version_note("seg", {}) is None
    assert resume_notes.torch_version_note("seg", {"torch_version": None}) is None
    assert resume_notes.torch_version_note("seg", {"torch_version": "0.0.1"}) is not None


def test_joint_step_modes_and_transparency_in_training_mode() -> None:
    """The joint stage's first step as train_one_epoch runs it (--freeze-bn): DeepLabV3+'s BatchNorm in eval
    mode (statistics kept) but its dropout on, SpixelFCN's BatchNorm in training mode (statistics follow the
    batch, as in the authors' code), and the fusion stack transparent in that mode too: the loss of step 1 is
    taken on U(S) of the same forward pass (docs/examples/pipeline.rst, joint stage)."""
    import sparse_ops
    from examples.voc_joint import engine
    from examples.voc_joint.distributed import DistInfo

    small = ["--backbone", "resnet18", "--aspp-channels", "8", "--spixel-width", "4", "--cell-size", "8"]
    zero = ["--lr", "0", "--spixel-lr", "0", "--fusion-lr", "0", "--weight-decay", "0"]
    args = train_options.resolve_stage_options(
        "joint", train_options.build_parser().parse_args([*small, *zero, "--max-steps", "1", "--no-progress"])
    )
    state, _ = train.build_train_state("joint", args, DistInfo(), None, steps_per_epoch=1)
    model = state.model
    assert isinstance(model, JointModel)
    with torch.no_grad():  # logits of a trained network's size, so the float32 bound means something
        model.deeplab.classifier.weight.mul_(20)
    bns = {
        net: [
            m for m in getattr(model, net).modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        ]
        for net in ("deeplab", "spixelfcn")
    }
    before = {net: [m.running_mean.clone() for m in ms] for net, ms in bns.items()}
    seen: list[dict] = []

    def hook(module, inputs, out) -> None:
        seen.append(
            {
                "out": {k: v.detach() for k, v in out.items()},
                "deeplab_bn": {m.training for m in bns["deeplab"]},
                "spixel_bn": {m.training for m in bns["spixelfcn"]},
                "dropout": {m.training for m in model.deeplab.modules() if isinstance(m, torch.nn.Dropout)},
            }
        )

    model.register_forward_hook(hook)
    gen = torch.Generator().manual_seed(0)
    batch = {
        "seg_input": torch.randn(2, 3, 32, 32, generator=gen),
        "spixel_input": torch.randn(2, 3, 32, 32, generator=gen),
        "target": torch.randint(0, 21, (2, 32, 32), generator=gen),
    }
    reason = engine.train_one_epoch(state, [batch], args, DistInfo(), steps_per_epoch=1, global_batch=2)
    assert reason == "max_steps" and len(seen) == 1
    (step,) = seen
    assert step["deeplab_bn"] == {False} and step["spixel_bn"] == {True} and step["dropout"] == {True}
    out = step["out"]
    u = sparse_ops.uniformize(out["seg_logits"], out["superpixels"], sparse_ops.num_grid_cells(32, 32, 8))
    scale = float(out["seg_logits"].abs().max())
    assert scale > 10 and (out["logits"] - u).abs().max().item() <= 1e-4 * max(1.0, scale / 10)
    assert all(torch.equal(a, m.running_mean) for a, m in zip(before["deeplab"], bns["deeplab"], strict=True))
    assert not all(
        torch.equal(a, m.running_mean) for a, m in zip(before["spixelfcn"], bns["spixelfcn"], strict=True)
    )  # learning rate 0, yet the eval-mode superpixels of the next evaluation differ


def test_fusion_init_and_runtime_options_reach_the_model() -> None:
    argv = ["--backbone", "resnet18", "--aspp-channels", "8", "--spixel-width", "4", "--fusion-init"]
    parser = train_options.build_parser()
    args = train_options.resolve_stage_options("joint", parser.parse_args([*argv, "zero_residual"]))
    assert (args.channels_last, args.recompute_fusion, args.compile) == (None, True, False)
    model = train.build_stage_model("joint", args)
    assert isinstance(model, JointModel) and model.config["fusion_init"] == "zero_residual"
    assert model.recompute_fusion and not (model.channels_last or model.compile_refine)
    args = train_options.resolve_stage_options(
        "joint",
        parser.parse_args([*argv, "xavier", "--channels-last", "--no-recompute-fusion", "--compile"]),
    )
    model = train.build_stage_model("joint", args)
    assert model.config["fusion_init"] == "xavier"
    assert model.channels_last and not model.recompute_fusion
    assert model.compile_refine  # compiles on first use
    assert conv_layout(model.deeplab) == "channels_last"
    # unset --channels-last resolves per device type (DEFAULT_CHANNELS_LAST)
    unset = parser.parse_args([])
    assert (
        train_options.runtime_options(unset, torch.device("cuda"))["channels_last"] == "spixelfcn"
    )  # H200 figures
    assert train_options.runtime_options(unset, torch.device("cpu"))["channels_last"] == "spixelfcn"
    assert train_options.runtime_options(unset)["channels_last"] is False  # no device: neither
    # the CPU default: SpixelFCN in channels_last, DeepLabV3+ not, in the joint model and in single stages
    unset.channels_last = "spixelfcn"
    cl, plain = "channels_last", "contiguous"
    for stage, layouts in (("joint", (plain, cl)), ("seg", (plain,)), ("spixel", (cl,))):
        net = train.build_stage_model(stage, train_options.resolve_stage_options(stage, unset))
        nets = (net.deeplab, net.spixelfcn) if isinstance(net, JointModel) else (net,)
        assert tuple(conv_layout(n) for n in nets) == layouts, stage


def test_poly_schedule() -> None:
    args = train_options.resolve_stage_options("seg", train_options.build_parser().parse_args([]))
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = train.build_scheduler(opt, args, 10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step(), sched.step()
    expect = [(1 - t / 10) ** 0.9 for t in range(10)]
    assert lrs == pytest.approx(expect)


def test_poly_schedule_stays_at_0_past_its_horizon_and_takes_a_horizon_of_0() -> None:
    """The poly factor is clamped at 0 after ``T`` steps (a negative base to a fractional power is a complex
    number, which ``float`` refuses), and a horizon of 0 counts as 1 (the factor divides by it)."""
    args = train_options.resolve_stage_options("seg", train_options.build_parser().parse_args([]))
    for total, expect in ((2, [1.0, 0.5**0.9, 0.0, 0.0, 0.0]), (0, [1.0, 0.0, 0.0])):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        sched = train.build_scheduler(opt, args, total)
        lrs = []
        for _ in expect:
            lrs.append(opt.param_groups[0]["lr"])
            opt.step(), sched.step()
        assert lrs == pytest.approx(expect), total


def test_cli_errors(tiny_voc, tmp_path, capsys) -> None:
    cases = [
        (["--resume", str(tmp_path / "x.pt")], "--resume checkpoint not found"),
        (["--batch-size", "1"], "--batch-size: must be an integer >= 2"),
        (["--batch-size", "8"], "fewer than one batch"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as info:
            train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", *extra))
        assert info.value.code == 2 and message in capsys.readouterr().err


def test_no_fusion_refuses_a_fusion_init(tiny_voc, tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(
            train_args(tiny_voc, tmp_path, "--stage", "joint", "--no-fusion", "--fusion-init", "xavier")
        )
    assert not tmp_path.joinpath("joint").exists()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--no-fusion with --fusion-init xavier" in err


def test_no_fusion_refuses_a_fusion_init_given_with_its_default_value(tmp_path, capsys) -> None:
    """``--no-fusion --fusion-init transparent`` (the default, given) initialized nothing without a word,
    where any other ``--fusion-init`` and the other fusion options given with their default were refused:
    whether it was given now comes from the command line, not from a comparison with the default."""
    parser = train_options.build_parser()
    default = parser.get_default("fusion_init")
    argv = ["--output-dir", str(tmp_path), "--stage", "joint", "--from-scratch", "--no-fusion"]
    train_options.check_args(parser, parser.parse_args(argv), argv)  # left out: fine
    argv += ["--fusion-init", default]
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args(argv), argv)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert (
        f"--no-fusion with --fusion-init {default}: without the fusion stack there is nothing to initialize"
        in err
    )


@pytest.mark.parametrize(
    ("given", "what"),
    [
        (["--fusion-lr", "0.5"], "train"),
        (["--fusion-lr", "1e-07"], "train"),  # its default, given: refused all the same
        (["--recompute-fusion"], "recompute"),
        (["--no-recompute-fusion"], "recompute"),
    ],
)
def test_no_fusion_refuses_the_options_of_the_fusion_stack(tiny_voc, tmp_path, capsys, given, what) -> None:
    """``--no-fusion --fusion-lr 0.5`` trained without a word about the learning rate that nothing used (no
    fusion parameter group), as ``--recompute-fusion`` recomputed nothing: refused as ``--fusion-hidden``."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "all", "--max-steps", "1", "--no-fusion", *given)
    at = argv.index("--fusion-hidden")
    del argv[at : at + 2]  # refused with --no-fusion too
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    assert not tmp_path.joinpath("seg").exists()
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert f"--no-fusion with {' '.join(given)}: without the fusion stack there is nothing to {what}" in err


@pytest.mark.parametrize(
    "given",
    [["--pos-weight", "0.01"], ["--pos-weight", "0.003"], ["--recompute-loss"], ["--no-recompute-loss"]],
)
def test_joint_stage_without_spixel_loss_refuses_the_options_of_that_loss(
    tiny_voc, tmp_path, capsys, given
) -> None:
    """``--stage joint --spixel-loss-weight 0`` computes no spixel_loss: its ``--pos-weight`` and
    ``--recompute-loss`` did nothing without a word (as ``--momentum`` without SGD, refused)."""
    argv = ["--stage", "joint", "--from-scratch", "--max-steps", "1", "--spixel-loss-weight", "0", *given]
    with pytest.raises(SystemExit) as info:
        train.main(train_args(tiny_voc, tmp_path, *argv))
    assert not tmp_path.joinpath("joint").exists()
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert f"{' '.join(given)} applies to spixel_loss, which --stage joint with --spixel-loss-weight 0" in err
    # with the loss they apply
    assert train.main(train_args(tiny_voc, tmp_path / "ok", *argv[: -(len(given) + 2)], *given))


@pytest.mark.parametrize(("mode", "stage"), [("hard", "joint"), ("none", "joint"), ("hard", "all")])
def test_spixel_lr_is_refused_where_spixelfcn_gets_no_gradient(mode, stage) -> None:
    """``--mode hard`` (or ``none``) with ``--spixel-loss-weight 0`` sends SpixelFCN no gradient: an audit's
    two runs with ``--spixel-lr 0`` and ``10`` ended with the same SpixelFCN weights, and the start line
    echoed the rate as if it mattered. Refused (exit status 2, naming why and the fix); accepted with
    ``--mode soft`` or with the loss, and not given it is not refused."""
    parser = train_options.build_parser()
    scratch = ["--from-scratch"] if stage == "joint" else []  # (all pretrains both networks itself)
    base = ["--stage", stage, *scratch, "--mode", mode, "--spixel-loss-weight", "0"]
    argv = [*base, "--spixel-lr", "1e-6"]  # the default value, given
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args(argv), argv)
    assert info.value.code == 2
    train_options.check_args(parser, parser.parse_args(base), base)
    for fix in (["--mode", "soft"], ["--spixel-loss-weight", "0.5"]):
        fixed = [*argv, *fix]
        train_options.check_args(parser, parser.parse_args(fixed), fixed)


def test_spixel_lr_refusal_names_the_reason(tiny_voc, tmp_path, capsys) -> None:
    """The refusal as the CLI prints it: before anything runs, naming the option, the mode, the weight and
    the ways out."""
    argv = ["--stage", "joint", "--from-scratch", "--max-steps", "1", "--spixel-loss-weight", "0"]
    with pytest.raises(SystemExit) as info:
        train.main(train_args(tiny_voc, tmp_path, *argv, "--spixel-lr", "0.5"))
    assert info.value.code == 2
    assert not tmp_path.joinpath("joint").exists()
    err = capsys.readouterr().err
    assert (
        "error: --spixel-lr 0.5 does nothing with --mode hard and --spixel-loss-weight 0: the joint stage "
        "then sends no gradient into SpixelFCN (its weights stay as loaded): drop it, or give --mode soft or "
        "a --spixel-loss-weight above 0"
    ) in err


def test_stage_all_refuses_a_resume_path(tiny_voc, tmp_path, capsys) -> None:
    """``--stage all --resume PATH`` would ignore PATH: a usage error that says how ``all`` resumes."""
    ckpt = train.main(
        train_args(tiny_voc, tmp_path / "ref", "--stage", "seg", "--epochs", "1", "--max-steps", "1")
    )
    with pytest.raises(SystemExit) as info:
        train.main(train_args(tiny_voc, tmp_path / "all", "--stage", "all", "--resume", str(ckpt["seg"])))
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "'all' resumes each stage from its own folder" in err and "--resume auto" in err
    assert not (tmp_path / "all").exists()  # refused before anything was created


@pytest.mark.slow
def test_demo_smoke(tiny_voc, tmp_path, capsys) -> None:
    """The demo's every step on tiny data (1 step per stage): transparency passes, the table is printed."""
    res = run_tiny_demo(tiny_voc, tmp_path)
    text = capsys.readouterr().out
    assert res["transparency"]["max_abs_diff"] <= 1e-4 and res["transparency"]["consistency"] == 1.0
    assert (
        "Table 4 format" in text and "+ superpixel + transparent init (fine-tuned)" in text and "PASS" in text
    )
    assert "+ superpixel + Xavier init, step 0" in text and "One seed" in text and "ablation.py" in text
    table = res["table"]
    assert len(table) == 7 and res["seeds"] == 1
    assert all(v["consistency"] == 1.0 for k, v in table.items() if k.startswith("+"))
    assert (tmp_path / "results.json").is_file() and list((tmp_path / "panels").glob("*.png"))


def test_joint_stage_on_every_device_with_amp(tiny_voc, tmp_path, device) -> None:
    """One joint step with --amp (mixed precision on CUDA, ignored with a notice on CPU)."""
    args = train_args(
        tiny_voc, tmp_path, "--stage", "joint", "--epochs", "1", "--max-steps", "1", "--amp", "--from-scratch"
    )
    args[args.index("--device") + 1] = device.type
    out = train.main(args)["joint"]
    ck = load_checkpoint(out)
    assert ck["step"] == 1 and ck["config"]["args"]["amp"] is True
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def _saved_bytes(fn):
    """(result of fn(), bytes of the distinct storages autograd saved while it ran)."""
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def test_superpixel_loss_recompute_same_values_and_gradients_less_memory() -> None:
    from examples.voc_joint.engine import superpixel_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 24, 20, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (2, 24, 20), generator=g)
    target[0, :3] = 255
    results = {}
    for recompute in (False, True):

        def run(recompute: bool = recompute) -> torch.Tensor:
            q = logits.softmax(1)
            loss = superpixel_loss(q, target, 4, pos_weight=0.003, num_classes=5, recompute=recompute)
            return loss

        loss, saved = _saved_bytes(run)
        (grad,) = torch.autograd.grad(loss, logits)
        results[recompute] = (loss.detach(), grad, saved)
    (l0, g0, m0), (l1, g1, m1) = results[False], results[True]
    assert torch.equal(l0, l1) and torch.equal(g0, g1)
    q_bytes = 2 * 9 * 24 * 20 * 4  # what the softmax saves anyway
    assert m1 <= q_bytes + target.numel() * 8 < m0 / 3, (m0, m1)
    with torch.no_grad():  # nothing to recompute without autograd
        assert torch.equal(
            superpixel_loss(logits.softmax(1), target, 4, pos_weight=0.003, num_classes=5, recompute=True), l0
        )


@pytest.mark.parametrize("recompute", [False, True])
def test_superpixel_loss_reads_no_value_on_the_host(recompute: bool) -> None:
    """Forward and backward of the training loss never read a tensor value on the host (a host-device
    synchronisation per step on CUDA): the value checks of ``spixel_loss`` are off in training."""
    from examples.voc_joint.engine import superpixel_loss
    from tests.sparse_ops.test_uniformize import _Recorder  # records every read of a value on the host

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 24, 20, generator=g, requires_grad=True)
    target = torch.randint(0, 5, (2, 24, 20), generator=g)
    target[0, :3] = 255
    with _Recorder() as mode:
        loss = superpixel_loss(
            logits.softmax(1), target, 4, pos_weight=0.003, num_classes=5, recompute=recompute
        )
        loss.backward()
    assert mode.host_reads == []
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


def _toy_state(model: torch.nn.Module | None = None, **position: int) -> Any:
    """A seg-stage ``TrainState`` of ``model`` (default: a seeded 1x1 conv, 3 -> 21 channels) with plain SGD
    (lr 0.1), a constant schedule and no AMP scaler; ``position``: ``step``, ``samples_in_epoch``, ..."""
    from examples.voc_joint import engine

    if model is None:
        torch.manual_seed(0)
        model = torch.nn.Conv2d(3, 21, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return engine.TrainState("seg", model, model, opt, sched, scaler, **position)


def _toy_args(**epoch: Any) -> argparse.Namespace:
    """The options a toy step reads (seg stage, no superpixel loss); ``epoch``: those an epoch also reads
    (``log_every``, ``max_steps``), which add the others it reads at their quiet defaults."""
    args = argparse.Namespace(cell_size=4, pos_weight=0.003, num_classes=21, spixel_loss_weight=0.0)
    if epoch:
        vars(args).update({"no_progress": True, "epochs": 1, "max_steps": None, "freeze_bn": False, **epoch})
    return args


def _toy_batches(n: int) -> list[dict[str, torch.Tensor]]:
    """``n`` batches of 2 random 8x8 images with labels of the 21 classes."""
    return [
        {"seg_input": torch.randn(2, 3, 8, 8), "target": torch.randint(0, 21, (2, 8, 8))} for _ in range(n)
    ]


def _logged_epoch(
    folder: Path,
    state: Any,
    args: argparse.Namespace,
    batches: list,
    resume_step: int | None = None,
    **kw: Any,
) -> tuple[str, list[dict[str, str]]]:
    """``train_one_epoch`` over ``batches`` (global batch 2; ``kw``: ``steps_per_epoch``, ``t0``, ...) with a
    ``CsvLogger`` in ``folder``: the reason it returned and the rows of log.csv."""
    from examples.voc_joint import engine
    from examples.voc_joint.distributed import DistInfo

    logger = engine.CsvLogger(folder, True, False, resume_step)
    try:
        reason = engine.train_one_epoch(state, batches, args, DistInfo(), global_batch=2, logger=logger, **kw)
    finally:
        logger.close()
    with open(folder / "log.csv", newline="", encoding="utf-8") as fh:
        return reason, list(csv.DictReader(fh))


@pytest.mark.parametrize("stop_requested", [False, True])
def test_a_training_step_makes_no_tensor_from_host_data(stop_requested: bool) -> None:
    """A step synchronises with the device once, in the ``tolist`` of its loss and flags: it reads no value on
    the host before that and builds no tensor from Python data (on CUDA such a tensor is a host-to-device copy
    that waits for the stream, i.e. for the whole backward: a second synchronisation per step)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from examples.voc_joint import engine
    from examples.voc_joint.distributed import DistInfo

    seen: list[str] = []

    class FromHost(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            if func in (
                torch.ops.aten.lift_fresh.default,  # torch.tensor(python data)
                torch.ops.aten._local_scalar_dense.default,
                torch.ops.aten.is_nonzero.default,
            ):
                seen.append(str(func))
            return func(*args, **(kwargs or {}))

    state, args, (batch,) = _toy_state(), _toy_args(), _toy_batches(1)
    guard = argparse.Namespace(requested=signal.SIGTERM if stop_requested else None)
    with FromHost():
        values, stop = engine.train_step(state, batch, args, DistInfo(), guard, False)  # type: ignore[arg-type]
    assert seen == []
    assert stop is stop_requested and set(values) == {"loss", "ce", "lr"} and state.step == 1


@pytest.mark.parametrize("what", ["gradients", "weights"])
def test_an_infinite_gradient_or_weight_stops_the_step_as_a_nan_does(what: str) -> None:
    """The step's checks catch inf, not only NaN (the fault injection writes NaN only): a weight the forward
    does not read set to inf (the loss stays finite), or every gradient made inf by a hook."""
    from examples.voc_joint import engine
    from examples.voc_joint.distributed import DistInfo

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 21, 1)
    model.register_parameter("unused", torch.nn.Parameter(torch.zeros(2)))
    if what == "weights":
        with torch.no_grad():
            model.unused[1] = float("inf")
    else:
        model.weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    state, args, (batch,) = _toy_state(model), _toy_args(), _toy_batches(1)
    before = model.weight.detach().clone()
    with pytest.raises(engine.NonFiniteError, match=f"non-finite {what} at step 1 "):
        engine.train_step(state, batch, args, DistInfo(), None, False)
    assert state.step == 0 and torch.equal(model.weight.detach(), before)


def test_a_running_statistic_made_non_finite_by_the_forward_stops_the_step() -> None:
    """A BatchNorm running variance that overflows in a training-mode forward leaves the loss finite (the
    forward normalizes by the batch's statistics, not the running ones): training went on with it until the
    checkpoint's write refused it, at the end of the epoch, naming no step. The step's check finds it, with
    the advice of a run without ``--amp``."""
    from examples.voc_joint import engine
    from examples.voc_joint.distributed import DistInfo

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 21, 1), torch.nn.BatchNorm2d(21))

    def overflow(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        module.running_var.data[0] = float("inf")  # (.data: the backward saved the buffer's version)

    model[1].register_forward_hook(overflow)
    state, args, (batch,) = _toy_state(model), _toy_args(), _toy_batches(1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(engine.NonFiniteError, match="non-finite running statistics at step 1 ") as stop:
        engine.train_step(state, batch, args, DistInfo(), None, False)
    assert state.step == 0 and all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert stop.value.stopped == "before the update" and "--amp" not in str(stop.value)


@pytest.mark.parametrize("max_steps, step", [(None, 3), (2, 2)])
def test_an_update_that_makes_the_weights_non_finite_stops_the_epoch(
    tmp_path: Path, max_steps: int | None, step: int
) -> None:
    """The step checks the weights before its update, so the last update before the caller saves (the end of
    the epoch, ``--max-steps``) was never checked: the checkpoint's write refused it naming neither the step
    nor the last good checkpoint. ``train_one_epoch`` checks the state it returns; finite values whose norm
    overflows still train on."""
    from examples.voc_joint import engine

    state = _toy_state()
    big = 1e19  # finite; 84 weights of it overflow the float32 sum of squares
    assert not bool(torch.isfinite(torch.full((84,), big).norm()))
    value = {"now": big}

    def corrupt(optimizer: torch.optim.Optimizer, *_: Any) -> None:
        if state.step + 1 == step:  # the step's update, before state.step counts it
            with torch.no_grad():
                state.model.weight.fill_(value["now"])

    state.optimizer.register_step_post_hook(corrupt)
    args = _toy_args(max_steps=max_steps, log_every=1)
    (tmp_path / "finite").mkdir()
    (tmp_path / "nan").mkdir()
    reason, _ = _logged_epoch(tmp_path / "finite", state, args, _toy_batches(3), steps_per_epoch=3)
    assert reason == ("epoch" if max_steps is None else "max_steps") and state.step == step
    state, value["now"] = _toy_state(), float("nan")
    state.optimizer.register_step_post_hook(corrupt)
    with pytest.raises(engine.NonFiniteError) as stop:
        _logged_epoch(tmp_path / "nan", state, args, _toy_batches(3), steps_per_epoch=3)
    assert stop.value.finding == f"non-finite weights after the update of step {step} (epoch 1)"
    assert stop.value.stopped == "after the update" and "training stopped after the update" in str(stop.value)


@pytest.mark.parametrize("what", ["gradients", "weights"])
def test_finite_values_whose_norm_overflows_are_not_called_non_finite(what: str) -> None:
    """The step's check is one float32 L2 norm, whose sum of squares overflows for finite values from about
    sqrt(3.4e38 / n): 1000 weights of 1e18 stopped the training as "non-finite weights". Such a set is checked
    element by element: finite values train on, and a NaN among them is still found and named."""
    from examples.voc_joint import engine
    from examples.voc_joint.distributed import DistInfo

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 21, 1)
    model.register_parameter("unused", torch.nn.Parameter(torch.zeros(1000)))
    large = torch.full((1000,), 1e18)
    assert bool(torch.isfinite(large).all()) and not bool(torch.isfinite(large.norm()))
    if what == "weights":
        with torch.no_grad():
            model.unused.copy_(large)
    else:
        model.unused.register_hook(lambda grad: large.clone())
    state, args, batches = _toy_state(model), _toy_args(), _toy_batches(2)
    state.model.unused.requires_grad_(True)
    if what == "gradients":  # (a parameter the forward does not read gets no gradient: give it one)
        loss_of = engine.stage_loss

        def with_unused(*a, **kw):
            loss, parts = loss_of(*a, **kw)
            return loss + 0.0 * state.model.unused.sum(), parts

        engine_stage_loss = with_unused
    else:
        engine_stage_loss = engine.stage_loss
    with pytest.MonkeyPatch.context() as m:
        m.setattr(engine, "stage_loss", engine_stage_loss)
        engine.train_step(state, batches[0], args, DistInfo(), None, False)
        assert state.step == 1  # trained: nothing was NaN or infinite
        if what == "weights":
            with torch.no_grad():
                model.unused[3] = float("nan")
        else:
            model.unused.register_hook(lambda grad: grad.index_fill(0, torch.tensor([3]), float("nan")))
        with pytest.raises(engine.NonFiniteError, match=f"non-finite {what} at step 2 "):
            engine.train_step(state, batches[1], args, DistInfo(), None, False)
    assert state.step == 1


def test_the_last_step_of_an_epoch_is_logged_whatever_log_every_says(tmp_path: Path) -> None:
    """``--log-every 2`` over an epoch of 3 steps logs steps 2 and 3: an epoch's last step always has its row
    (the end of each epoch can be read from log.csv)."""
    state = _toy_state()
    reason, rows = _logged_epoch(tmp_path, state, _toy_args(log_every=2), _toy_batches(3), steps_per_epoch=3)
    assert reason == "epoch" and (state.epoch, state.step, state.samples_in_epoch) == (1, 3, 0)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "2"), ("1", "3")], rows


def test_the_last_step_of_an_epoch_resumed_off_grid_is_logged(tmp_path: Path) -> None:
    """A run resumed mid-epoch at another batch size (1 sample done, now 2 per step: 3 batches left of an
    epoch of 4 steps) ends its epoch when the loader runs out, before ``in_epoch`` reaches
    ``steps_per_epoch``: that last step had no row (with ``--log-every 10``, the epoch left none), though
    log.csv keeps one at each epoch end. It is logged now."""
    state = _toy_state(step=1, samples_in_epoch=1)
    args = _toy_args(log_every=10)
    reason, rows = _logged_epoch(tmp_path, state, args, _toy_batches(3), resume_step=1, steps_per_epoch=4)
    assert reason == "epoch" and (state.epoch, state.step, state.samples_in_epoch) == (1, 4, 0)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "4")], rows


def test_log_elapsed_time_counts_from_the_given_start(tmp_path: Path) -> None:
    """``elapsed_s`` in log.csv counts from ``t0`` (the run's start less the training time of the checkpoint
    it resumed from), not from the start of the epoch or of this call: it continues across resumes."""
    import time

    state, args, batches = _toy_state(), _toy_args(log_every=1), _toy_batches(2)
    start = time.perf_counter()
    # 1000 s of training before this run
    _, rows = _logged_epoch(tmp_path, state, args, batches, steps_per_epoch=2, t0=start - 1000.0)
    took = time.perf_counter() - start
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert len(elapsed) == 2 and all(1000.0 <= e <= 1000.0 + took + 0.01 for e in elapsed), (elapsed, took)


@pytest.mark.parametrize("max_steps", [None, 1])
def test_a_signal_stops_the_epoch_as_interrupt_also_at_the_step_cap(max_steps: int | None) -> None:
    """A signal recorded during a step ends the epoch after that step with ``"interrupt"``, also when that
    step reaches ``--max-steps`` (the caller must not take it for a plain end at the cap)."""
    from examples.voc_joint import engine
    from examples.voc_joint.distributed import DistInfo

    state, args, batches = _toy_state(), _toy_args(max_steps=max_steps, log_every=1), _toy_batches(3)
    guard = argparse.Namespace(requested=signal.SIGINT)  # recorded before the first step ends
    reason = engine.train_one_epoch(
        state,
        batches,
        args,
        DistInfo(),
        steps_per_epoch=3,
        global_batch=2,
        guard=guard,  # type: ignore[arg-type]
    )
    assert reason == "interrupt" and (state.epoch, state.step, state.samples_in_epoch) == (0, 1, 2)


def test_cross_entropy_is_a_mean_over_labelled_pixels_and_0_without_any() -> None:
    from examples.voc_joint.engine import cross_entropy

    logits = torch.zeros(1, 2, 1, 2, requires_grad=True)
    one = cross_entropy(logits, torch.tensor([[[0, 255]]])).detach()
    assert float(one) == pytest.approx(float(torch.tensor(2.0).log()))  # log 2 on the one labelled pixel
    loss = cross_entropy(logits, torch.full((1, 1, 2), 255))  # a crop of void pixels only
    assert float(loss.detach()) == 0.0  # not NaN, which would stop the training as a non-finite loss
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


class _FixedJoint(torch.nn.Module):
    """A joint model's contract with fixed outputs: zero logits over 2 classes, the uniform association."""

    cell_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))

    def forward(self, seg_input: torch.Tensor, spixel_input: torch.Tensor) -> dict:
        logits = torch.zeros(1, 2, 8, 8) + self.bias
        return {"logits": logits, "assoc": torch.full((1, 9, 8, 8), 1 / 9) + self.bias}


def test_joint_stage_loss_weighs_the_superpixel_term() -> None:
    """Joint loss = ce + --spixel-loss-weight x spixel; weight 0 leaves the superpixel term out."""
    from examples.voc_joint.engine import stage_loss

    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :, 4:] = 1
    batch = {"seg_input": torch.zeros(1, 3, 8, 8), "spixel_input": torch.zeros(1, 3, 8, 8), "target": target}
    losses = {}
    for weight in (0.0, 0.5, 1.0):
        args = argparse.Namespace(spixel_loss_weight=weight, pos_weight=0.003, num_classes=2)
        losses[weight] = stage_loss("joint", _FixedJoint(), batch, args, torch.device("cpu"))
    (loss0, parts0), (half, parts), (full, _) = losses[0.0], losses[0.5], losses[1.0]
    assert float(parts0["ce"]) == pytest.approx(float(torch.tensor(2.0).log()))  # zero logits: log 2
    assert set(parts0) == {"ce"} and torch.equal(loss0.detach(), parts0["ce"])
    spixel = float(parts["spixel"])
    assert spixel > 0.01
    assert float(half.detach()) == pytest.approx(float(parts["ce"]) + 0.5 * spixel)
    assert float(full.detach()) - float(half.detach()) == pytest.approx(0.5 * spixel)


@pytest.mark.parametrize("stage", ["Seg", "all", ""])
def test_stage_loss_refuses_an_unknown_stage_by_name(stage: str) -> None:
    """Any stage but seg and spixel ran the joint forward: a DeepLabV3+ then failed with "forward() takes 2
    positional arguments but 3 were given", naming no stage; a joint model trained as the joint stage."""
    from examples.voc_joint.engine import stage_loss

    batch = {"seg_input": torch.zeros(1, 3, 8, 8), "spixel_input": torch.zeros(1, 3, 8, 8)}
    batch["target"] = torch.zeros(1, 8, 8, dtype=torch.long)
    args = argparse.Namespace(spixel_loss_weight=0.0, pos_weight=0.003, num_classes=2)
    with pytest.raises(ValueError, match=f"stage must be 'seg', 'spixel' or 'joint', got '{stage}'"):
        stage_loss(stage, _FixedJoint(), batch, args, torch.device("cpu"))


def _fake_tensorboard(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """Stand in for ``torch.utils.tensorboard``; returns the list that gets every writer's ``purge_step``."""
    import types

    purges: list[int | None] = []

    class Writer:
        def __init__(self, logdir: str, purge_step: int | None = None) -> None:
            purges.append(purge_step)

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    return purges


@pytest.mark.parametrize("own_command", [True, False])
def test_a_stop_is_said_by_the_stage_only_in_its_own_command(
    tiny_voc, tmp_path, capsys, monkeypatch, own_command
) -> None:
    """demo.py runs the stages with ``own_command=False`` and says a stop in its own line (it has no
    --resume): the stage's "interrupted: ..." line, which advises --resume, is train.py's alone."""
    from examples.voc_joint.signals import Interrupted

    calls = []

    def agreed(guard: object, info: object) -> int:  # none at the set-up's check, then one before step 1
        calls.append(1)
        return 0 if len(calls) == 1 else int(signal.SIGINT)

    monkeypatch.setattr(train, "_agreed_signal", agreed)
    args = train_options.build_parser().parse_args(
        train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1")
    )
    with pytest.raises(Interrupted):
        train.run_stage("seg", args, own_command=own_command)
    err = capsys.readouterr().err
    assert ("[seg] interrupted: before the first step (nothing to save)" in err) == own_command, err
    monkeypatch.setattr(train, "_agreed_signal", lambda guard, info: int(signal.SIGINT))  # in the set-up
    with pytest.raises(Interrupted):
        train.run_stage("seg", args, own_command=own_command)
    err = capsys.readouterr().err
    assert ("[seg] interrupted during the set-up: nothing was trained" in err) == own_command, err


def _signal_during_the_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process agrees on a SIGINT from now on (as one received during the set-up)."""
    monkeypatch.setattr(train, "_agreed_signal", lambda guard, info: int(signal.SIGINT))


def test_a_signal_during_the_set_up_of_an_overwrite_keeps_the_old_run(
    tiny_voc, tmp_path, monkeypatch
) -> None:
    """Ctrl-C while an ``--overwrite`` run checked its data and built its loaders was recorded, and the old
    run was deleted all the same before the stop ("nothing to save"): its checkpoint and log were lost. The
    command stops before it deletes anything now; so does ``--stage all --overwrite`` before it clears the
    three stages."""
    from examples.voc_joint.signals import Interrupted

    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1")
    train.main(argv)
    ckpt, log = tmp_path / "seg" / "checkpoint.pt", tmp_path / "seg" / "log.csv"
    before = ckpt.read_bytes(), log.read_bytes()
    _signal_during_the_set_up(monkeypatch)
    with pytest.raises(Interrupted) as info:
        train.main([*argv, "--overwrite"])
    assert info.value.signum == signal.SIGINT and (ckpt.read_bytes(), log.read_bytes()) == before
    monkeypatch.setattr(train, "_clear_stages", lambda *a: pytest.fail("the old run was deleted"))
    with pytest.raises(Interrupted):
        train.main([*train_args(tiny_voc, tmp_path, "--stage", "all", "--max-steps", "1"), "--overwrite"])
    assert (ckpt.read_bytes(), log.read_bytes()) == before


def test_a_signal_during_the_set_up_of_a_finished_stage_stops_the_command(
    tiny_voc, tmp_path, monkeypatch, capsys
) -> None:
    """A finished stage is skipped, or evaluated with ``--eval``: a signal during the set-up was ignored there
    (the evaluation ran, exit status 0). It stops the command before either now (128 + the signal)."""
    from examples.voc_joint.signals import Interrupted

    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1")
    train.main(argv)
    _signal_during_the_set_up(monkeypatch)
    monkeypatch.setattr(train, "_evaluate", lambda *a, **k: pytest.fail("evaluated after the signal"))
    capsys.readouterr()
    for extra in (["--resume"], ["--resume", "--eval"]):
        with pytest.raises(Interrupted) as info:
            train.main([*argv, *extra])
        assert info.value.exit_code == 130
        err = capsys.readouterr().err
        assert "[seg] interrupted during the set-up" in err, err


def test_a_second_signal_during_the_checkpoint_write_says_the_checkpoint_was_written(
    tiny_voc, tmp_path, monkeypatch, capsys
) -> None:
    """A second Ctrl-C during the checkpoint write acts when the write is done: the stop said "no new
    checkpoint (the last one on disk is intact)" though the new one was on disk, and gave no ``--resume``
    hint. It now names the checkpoint written and the way on."""
    from examples.voc_joint.signals import Interrupted

    real_save = train.save_checkpoint

    def interrupted_twice(path: Path, checkpoint: dict) -> None:
        signal.raise_signal(signal.SIGINT)  # the first: stop at the next safe point
        signal.raise_signal(signal.SIGINT)  # the second, inside the write: deferred to its end
        real_save(path, checkpoint)

    monkeypatch.setattr(train, "save_checkpoint", interrupted_twice)
    with pytest.raises(Interrupted) as info:
        train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "2", "--epochs", "1"))
    assert info.value.forced and info.value.saved
    ckpt = tmp_path / "seg" / "checkpoint.pt"
    assert torch.load(ckpt, weights_only=False)["step"] >= 1
    err = capsys.readouterr().err
    assert "stopped by a second SIGINT after its checkpoint of step" in err and "--resume" in err, err


def test_a_resume_from_another_folder_logs_that_runs_history_not_this_folders_rows(
    tiny_voc, tmp_path
) -> None:
    """``--resume PATH`` of another folder's checkpoint kept the rows up to its step from this folder's own
    ``log.csv``, which held another run's (one lost before its first checkpoint): the two runs' rows
    interleaved. The new log starts with PATH's run's rows up to the checkpoint's step now."""
    source_out, out = tmp_path / "source", tmp_path / "here"
    train.main(train_args(tiny_voc, source_out, "--stage", "seg", "--max-steps", "2", "--seed", "3"))
    source_rows = _log_rows(source_out / "seg" / "log.csv")
    (out / "seg").mkdir(parents=True)
    foreign = "stage,epoch,step,loss,ce,spixel,lr,images_per_s,elapsed_s\nseg,0,1,999.0,999.0,,0.01,1.0,1.0\n"
    (out / "seg" / "log.csv").write_text(foreign)
    train.main(
        train_args(
            tiny_voc,
            out,
            "--stage",
            "seg",
            "--max-steps",
            "3",
            "--seed",
            "3",
            "--resume",
            str(source_out / "seg" / "checkpoint.pt"),
        )
    )
    rows = _log_rows(out / "seg" / "log.csv")
    assert source_rows and rows[: len(source_rows)] == source_rows  # the resumed run's history, up to step 2
    assert [int(r["step"]) for r in rows[len(source_rows) :]] == [3]  # then this run's
    assert "999.0" not in [r["loss"] for r in rows]


def test_an_unreadable_log_on_resume_is_one_line_naming_it(tiny_voc, tmp_path, capsys) -> None:
    """A ``log.csv`` that is not UTF-8 made ``--resume`` end in a UnicodeDecodeError traceback naming no file;
    a one-line usage error (exit status 2) names it and the way out now."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1")
    train.main(argv)
    with open(tmp_path / "seg" / "log.csv", "ab") as fh:
        fh.write(b"\xff\xfe\x80\n")
    with pytest.raises(SystemExit) as exc:
        train.main([*train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "2"), "--resume"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"cannot read the training log {tmp_path / 'seg' / 'log.csv'}" in err, err
    assert "move it away" in err and "Traceback" not in err
    # the unreadable log of a --resume PATH's folder, with --overwrite: refused before this folder's run is
    # deleted (it was deleted first)
    other = tmp_path / "other"
    train.main(train_args(tiny_voc, other, "--stage", "seg", "--max-steps", "1"))
    kept = (other / "seg" / "checkpoint.pt").read_bytes()
    with pytest.raises(SystemExit) as exc:
        train.main(
            [
                *train_args(tiny_voc, other, "--stage", "seg", "--max-steps", "2"),
                "--resume",
                str(tmp_path / "seg" / "checkpoint.pt"),
                "--overwrite",
            ]
        )
    assert exc.value.code == 2 and (other / "seg" / "checkpoint.pt").read_bytes() == kept


def test_a_refused_resume_path_creates_no_folder(tiny_voc, tmp_path, capsys) -> None:
    """``--resume PATH`` of another stage's checkpoint (or of a file that is no checkpoint) was refused only
    after the stage's folder and its lock file were made: a refused command leaves no folder now."""
    train.main(train_args(tiny_voc, tmp_path / "made", "--stage", "spixel", "--max-steps", "1"))
    not_a_checkpoint = tmp_path / "trunc.pt"
    not_a_checkpoint.write_bytes(b"PK\x03\x04")
    weights_only, _ = untrained_checkpoints(tmp_path / "weights")  # the right stage, nothing to continue
    for path in (tmp_path / "made" / "spixel" / "checkpoint.pt", not_a_checkpoint, weights_only):
        out = tmp_path / f"out_{path.stem}"
        with pytest.raises(SystemExit) as exc:
            train.main(
                [*train_args(tiny_voc, out, "--stage", "seg", "--max-steps", "1"), "--resume", str(path)]
            )
        assert exc.value.code == 2 and not out.exists(), (path, sorted(out.rglob("*")))
    assert capsys.readouterr().err.count("error:") == 3


def test_a_resume_on_another_training_list_is_refused_or_recorded(tiny_voc, tmp_path, capsys) -> None:
    """The checkpoint recorded the data folder's path, not its training list: a set regenerated with other
    images under the same path resumed with no message, on another epoch length and sample order. The list
    (its length and the SHA-256 of its names) is recorded now and compared on ``--resume``: refused naming
    both, or, with ``--allow-option-changes``, recorded as a change."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    argv = train_args(root, tmp_path / "out", "--stage", "seg", "--max-steps", "1")
    train.main(argv)
    ckpt = torch.load(tmp_path / "out" / "seg" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["train_data"]["images"] == 4
    train_list = root / "ImageSets" / "Segmentation" / "train.txt"
    names = train_list.read_text().split()
    train_list.write_text("".join(f"{name}\n" for name in names[:3]))  # one image fewer
    elsewhere = tmp_path / "elsewhere"  # --resume PATH into a new folder: refused before it is made
    with pytest.raises(SystemExit) as exc:
        train.main(
            [
                *train_args(root, elsewhere, "--stage", "seg", "--max-steps", "2"),
                "--resume",
                str(tmp_path / "out" / "seg" / "checkpoint.pt"),
            ]
        )
    assert exc.value.code == 2 and "lists 3 images" in capsys.readouterr().err and not elsewhere.exists()
    train.main(  # the early check of --resume PATH lets the change through too
        [
            *train_args(root, elsewhere, "--stage", "seg", "--max-steps", "2"),
            "--resume",
            str(tmp_path / "out" / "seg" / "checkpoint.pt"),
            "--allow-option-changes",
        ]
    )
    ckpt = torch.load(elsewhere / "seg" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["config"]["train_data"]["images"] == 3
    assert "training list" in [c["option"] for c in ckpt["config"]["changes"]]
    resume = train_args(root, tmp_path / "out", "--stage", "seg", "--max-steps", "2")
    with pytest.raises(SystemExit) as exc:
        train.main([*resume, "--resume"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "lists 3 images" in err and "trained on 4" in err, err
    train.main([*resume, "--resume", "--allow-option-changes"])
    ckpt = torch.load(tmp_path / "out" / "seg" / "checkpoint.pt", weights_only=False)
    assert ckpt["config"]["train_data"]["images"] == 3
    assert "training list" in [c["option"] for c in ckpt["config"]["changes"]]


def _log_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_csv_log_of_a_resumed_run_keeps_the_rows_up_to_the_checkpoint_step(tmp_path, monkeypatch) -> None:
    """Rows up to the resume step (included) stay, later ones (written after that checkpoint) go; TensorBoard
    purges the events from the step after it; a new log starts empty."""
    from examples.voc_joint.engine import CsvLogger

    purges = _fake_tensorboard(monkeypatch)
    log = CsvLogger(tmp_path, True, True, None)
    for step in range(1, 6):
        log.row(stage="seg", epoch=1, step=step, loss=f"{step}.0")
    log.close()
    log = CsvLogger(tmp_path, True, True, resume_step=3)
    log.row(stage="seg", epoch=1, step=4, loss="0.5")
    log.close()
    assert [(r["step"], r["loss"]) for r in _rows(tmp_path / "log.csv")] == [
        ("1", "1.0"),
        ("2", "2.0"),
        ("3", "3.0"),
        ("4", "0.5"),
    ]
    assert purges == [None, 4]
    CsvLogger(tmp_path, True, False, None).close()
    assert _rows(tmp_path / "log.csv") == []


@pytest.mark.parametrize("step", ["row", "sync", "close"])
def test_a_log_row_that_cannot_be_written_names_log_csv(tmp_path, monkeypatch, step) -> None:
    """A full disk found when a row is flushed, when the rows are fsynced before a checkpoint or when the log
    is closed raised "[Errno 28] No space left on device" naming no file: ``train.py`` printed "[train] error:
    [Errno 28] No space left on device" and nothing said which of the run's files failed. The error names
    log.csv now, with the cause; its class and errno stay."""
    import errno

    from examples.voc_joint import engine

    log = engine.CsvLogger(tmp_path, True, False, None)
    real = log.fh

    class FullDisk:
        def write(self, text: str) -> int:
            return real.write(text)

        def flush(self) -> None:
            if step in ("row", "sync"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real.flush()

        def fileno(self) -> int:
            return real.fileno()

        def close(self) -> None:
            real.close()
            if step == "close":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    log.fh = FullDisk()  # type: ignore[assignment]
    log.csv = csv.DictWriter(log.fh, fieldnames=log.FIELDS)
    with pytest.raises(OSError) as info:
        if step == "row":
            log.row(stage="seg", epoch=1, step=1, loss="1.0")
        elif step == "sync":
            log.sync()
        else:
            log.close()
    real.close()
    text = str(info.value)
    assert text == f"cannot write {tmp_path / 'log.csv'}: No space left on device (ENOSPC)", text
    assert info.value.errno == errno.ENOSPC


def test_resume_eval_evaluates_a_finished_stage_once(tiny_voc, tmp_path, capsys, monkeypatch) -> None:
    """An evaluation lost to an interrupt (or never asked for) is made by ``--resume --eval``; an up-to-date
    one is not redone."""
    from examples.voc_joint import engine
    from examples.voc_joint.signals import Interrupted

    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "1", "--max-steps", "2")
    folder = tmp_path / "seg"

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGINT)

    with monkeypatch.context() as m:
        m.setattr(engine, "evaluate_checkpoint", interrupted)
        with pytest.raises(Interrupted):
            train.main([*argv, "--eval"])
    err = capsys.readouterr().err
    assert f"[seg] evaluation interrupted: the checkpoint {folder / 'checkpoint.pt'} is complete" in err
    assert load_checkpoint(folder / "checkpoint.pt")["complete"] and not (folder / "eval.json").exists()
    train.main([*argv, "--resume", "--eval"])
    out = capsys.readouterr().out
    assert "evaluating it (no eval.json of this checkpoint with this --val-split" in out and "[eval]" in out
    res = json.loads((folder / "eval.json").read_text())
    assert res["checkpoint_step"] == 2 and 0 <= res["miou"] <= 1
    assert res["torch"] == res["checkpoint_torch_version"] == str(torch.__version__)
    before = (folder / "eval.json").read_bytes()
    train.main([*argv, "--resume", "--eval"])
    out = capsys.readouterr().out
    assert "skipping the stage" in out and "[eval]" not in out
    assert (folder / "eval.json").read_bytes() == before


def test_resume_eval_of_another_folders_finished_checkpoint_names_evaluate_py(
    tiny_voc, tmp_path, capsys
) -> None:
    """``--resume PATH --eval`` of a finished stage of another folder skips the stage without evaluating (this
    run has no checkpoint of its own) and says to evaluate PATH with evaluate.py; a finished stage of the
    run's own folder is evaluated here, without that line."""
    argv = ("--stage", "seg", "--epochs", "1", "--max-steps", "1")
    ckpt = train.main(train_args(tiny_voc, tmp_path / "a", *argv))["seg"]
    capsys.readouterr()
    out = train.main(train_args(tiny_voc, tmp_path / "b", *argv, "--resume", str(ckpt), "--eval"))["seg"]
    text = capsys.readouterr().out
    assert out.resolve() == ckpt.resolve()
    assert "already reached epoch 1, step 1 (1 step of the epoch done); skipping the stage\n" in text, text
    assert f"[seg] --eval: evaluate {out} with evaluate.py (not this run's)\n" in text, text
    assert "[eval]" not in text and not list(tmp_path.rglob("eval.json")), text
    train.main(train_args(tiny_voc, tmp_path / "a", *argv, "--resume", "--eval"))
    text = capsys.readouterr().out
    assert "evaluating it" in text and "[eval]" in text and "with evaluate.py" not in text, text
    assert (ckpt.parent / "eval.json").is_file()


def _evaluated_seg_run(tiny_voc: Path, tmp_path: Path) -> tuple[list[str], Path]:
    """``(argv, stage folder)`` of a finished 2-step seg stage with ``--eval``, on a copy of ``tiny_voc`` with
    a one-image split ``val1`` beside ``val``: the run the ``--resume --eval`` tests evaluate again."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    lists = root / "ImageSets" / "Segmentation"
    (lists / "val1.txt").write_text((lists / "val.txt").read_text().split()[0] + "\n")
    argv = train_args(root, tmp_path / "out", "--stage", "seg", "--epochs", "1", "--max-steps", "2", "--eval")
    train.main(argv)
    return argv, tmp_path / "out" / "seg"


def test_resume_eval_of_other_weights_at_the_same_step_evaluates_again(tiny_voc, tmp_path, capsys) -> None:
    """``eval.json`` was taken as current by the checkpoint's step alone: a checkpoint of other weights at the
    same step and with the same options (retrained, copied in) kept the old one's scores. It records the
    checkpoint's content SHA-256, and is current only for that checkpoint."""
    from examples.voc_joint.checkpoint import load_checkpoint_with_sha256

    argv, folder = _evaluated_seg_run(tiny_voc, tmp_path)
    ckpt_path, eval_json = folder / "checkpoint.pt", folder / "eval.json"
    ckpt, sha256 = load_checkpoint_with_sha256(ckpt_path)
    assert json.loads(eval_json.read_text())["checkpoint_sha256"] == sha256
    train.main([*argv, "--resume"])
    assert "skipping the stage" in capsys.readouterr().out  # the same checkpoint: not redone
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point() and v.dim() == 4)
    ckpt["model"][name] = -ckpt["model"][name]
    save_checkpoint(ckpt_path, ckpt)
    other = load_checkpoint_with_sha256(ckpt_path)[1]
    assert other != sha256 and load_checkpoint(ckpt_path)["step"] == ckpt["step"]
    train.main([*argv, "--resume"])
    out = capsys.readouterr().out
    assert "evaluating it (no eval.json of this checkpoint" in out and "[eval]" in out, out
    assert json.loads(eval_json.read_text())["checkpoint_sha256"] == other


def test_resume_eval_with_another_split_or_crop_evaluates_again(tiny_voc, tmp_path, capsys) -> None:
    """``--resume --eval`` with another --val-split or --eval-crop skipped the finished stage and kept the
    evaluation of the old split (eval.json did not say what it scored): eval.json records the split, sbd and
    resolution as evaluate.py's metrics.json, and is current only when all match."""
    argv, folder = _evaluated_seg_run(tiny_voc, tmp_path)
    eval_json = folder / "eval.json"
    res = json.loads(eval_json.read_text())
    assert (res["split"], res["sbd"], res["resolution"], res["num_images"]) == ("val", False, "full", 2)
    for extra, expected in (
        (["--val-split", "val1"], ("val1", False, "full", 1)),
        (["--val-split", "val1", "--eval-crop", "16"], ("val1", False, 16, 1)),
    ):
        capsys.readouterr()
        train.main([*argv, "--resume", *extra])
        out = capsys.readouterr().out
        assert "evaluating it" in out and "skipping the stage" not in out, out
        res = json.loads(eval_json.read_text())
        assert (res["split"], res["sbd"], res["resolution"], res["num_images"]) == expected
    train.main([*argv, "--resume", "--val-split", "val1", "--eval-crop", "16"])
    assert "skipping the stage" in capsys.readouterr().out  # the same evaluation: not redone


def test_eval_replaces_the_panel_set_with_eval_json(tiny_voc, tmp_path, capsys, monkeypatch) -> None:
    """``train.py --eval`` wrote its panels straight into <stage>/panels: an earlier evaluation's panels
    stayed beside the new ones (eval.json listing only the new), and an interrupted evaluation left a mix. As
    evaluate.py, it now stages them and replaces the set together with eval.json."""
    from examples.voc_joint import evaluate
    from examples.voc_joint.signals import Interrupted

    argv, folder = _evaluated_seg_run(tiny_voc, tmp_path)

    def saved() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted((folder / "panels").iterdir())}

    assert len(saved()) == 2
    before, eval_before = saved(), (folder / "eval.json").read_bytes()
    calls = []
    real_save_panel = evaluate.save_panel

    def save_then_stop(*args, **kwargs):
        calls.append(real_save_panel(*args, **kwargs))
        raise Interrupted(signal.SIGINT)  # after the first panel of the new evaluation was written

    with monkeypatch.context() as m:
        m.setattr(evaluate, "save_panel", save_then_stop)
        with pytest.raises(Interrupted):
            train.main([*argv, "--resume", "--eval-crop", "16"])
    assert len(calls) == 1 and saved() == before and (folder / "eval.json").read_bytes() == eval_before
    assert not list(folder.glob(".panels.*"))  # the staging folder went
    killed = folder / ".panels.killed_1"  # that of an evaluation killed by SIGKILL: no process holds it
    killed.mkdir()
    (killed / "0001.png").write_bytes(b"partial")
    capsys.readouterr()
    train.main([*argv, "--resume", "--val-split", "val1"])
    res = json.loads((folder / "eval.json").read_text())
    assert res["split"] == "val1" and len(res["panels"]) == 1
    assert sorted(map(str, (folder / "panels").iterdir())) == res["panels"]  # the old set went
    assert not list(folder.glob(".panels.*"))  # the killed evaluation's staging folder went too


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES"])
def test_eval_failed_eval_json_write_leaves_the_earlier_panels(tiny_voc, tmp_path, capsys, monkeypatch, code):
    """``train.py --eval`` replaced panels/ before it wrote eval.json: a full disk at that write left the new
    panels next to the earlier eval.json (which lists the earlier panels). As evaluate.py, panels/ is now
    replaced only once the new eval.json is written; a failed write leaves both as they were."""
    argv, folder = _evaluated_seg_run(tiny_voc, tmp_path)
    before = {p.name: p.read_bytes() for p in sorted((folder / "panels").iterdir())}
    eval_before = (folder / "eval.json").read_bytes()
    assert len(before) == 2
    fail_atomic_write(monkeypatch, "eval.json", code)
    with pytest.raises(OSError, match=re.escape(f"cannot write {folder / 'eval.json'}")):
        train.main([*argv, "--resume", "--val-split", "val1"])  # one image: one panel
    assert "evaluation failed" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in sorted((folder / "panels").iterdir())}
    assert after == before and (folder / "eval.json").read_bytes() == eval_before
    assert not list(folder.glob(".panels.*")) and not list(folder.glob(".eval.json.*"))


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="no signal masks")
def test_eval_signal_while_the_results_are_replaced_acts_after_them(tiny_voc, tmp_path, monkeypatch) -> None:
    """A signal while ``train.py --eval`` replaces panels/ and eval.json waits for both, then stops the run
    (it is not lost: the command does not go on as if none came)."""
    from examples.voc_joint import evaluate
    from examples.voc_joint.signals import Interrupted

    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "1", "--max-steps", "1", "--eval")
    real_replace = evaluate._replace_panels

    def replace(new, panels_dir):  # SIGINT once the panels are replaced, before eval.json is
        moved = real_replace(new, panels_dir)
        os.kill(os.getpid(), signal.SIGINT)
        return moved

    monkeypatch.setattr(evaluate, "_replace_panels", replace)
    with pytest.raises(Interrupted):
        train.main(argv)
    res = json.loads((tmp_path / "seg" / "eval.json").read_text())
    assert res["checkpoint_step"] == 1
    assert sorted(res["panels"]) == sorted(str(p) for p in (tmp_path / "seg" / "panels").glob("*.png"))


def test_eval_checks_the_validation_split_before_training(tiny_voc, tmp_path) -> None:
    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "1", "--max-steps", "1", "--eval")
    with pytest.raises(FileNotFoundError, match=r"split list file not found: .*nosuch\.txt"):
        train.main([*argv, "--val-split", "nosuch"])
    assert not (tmp_path / "seg" / "checkpoint.pt").exists()  # nothing was trained


def test_sbd_eval_reads_the_sbd_layout(tiny_voc, tmp_path) -> None:
    """``--sbd --eval`` checks and evaluates the SBD val split (on a tree without the VOC2012 layout)."""
    root = tmp_path / "sbd"
    shutil.copytree(tiny_voc, root)
    shutil.rmtree(root / "SegmentationClass")
    shutil.rmtree(root / "ImageSets" / "Segmentation")
    out = train.main(
        train_args(
            root, tmp_path / "out", "--stage", "seg", "--epochs", "1", "--max-steps", "1", "--sbd", "--eval"
        )
    )
    res = json.loads((out["seg"].parent / "eval.json").read_text())
    assert res["checkpoint_step"] == 1 and 0 <= res["miou"] <= 1


def test_resume_compares_path_options_as_absolute_paths(tiny_voc, tmp_path, monkeypatch, capsys) -> None:
    """The same data folder spelled differently (from another working folder) resumes; the same relative
    spelling naming another folder is a changed option."""
    shutil.copytree(tiny_voc, tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "data").symlink_to(tiny_voc)  # another folder behind the same relative path
    out = tmp_path / "out"

    def run(root: str, steps: int) -> list[str]:
        return train_args(Path(root), out, "--stage", "seg", "--epochs", "3", "--max-steps", str(steps))

    monkeypatch.chdir(tmp_path)
    train.main(run("data", 1))
    recorded = load_checkpoint(out / "seg" / "checkpoint.pt")["config"]["args"]["data_root"]
    assert recorded == str(tmp_path.resolve() / "data")  # recorded absolute
    monkeypatch.chdir(tmp_path / "elsewhere")
    train.main([*run("../elsewhere/../data/", 2), "--resume"])  # the same folder, spelled differently
    assert load_checkpoint(out / "seg" / "checkpoint.pt")["step"] == 2
    # step 1 (the --max-steps cap, mid-epoch, not a multiple of --log-every 10) has its row, kept on resume
    assert [r["step"] for r in _rows(out / "seg" / "log.csv")] == ["1", "2"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        train.main([*run("data", 3), "--resume"])  # "data" is another folder from here
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"--data-root: {recorded!r} (checkpoint) -> " in err
    assert f"-> {str(tiny_voc.resolve())!r} (now)" in err  # absolute, symbolic links resolved
    assert load_checkpoint(out / "seg" / "checkpoint.pt")["step"] == 2


def test_option_changes_rules(tmp_path, monkeypatch) -> None:
    """The resume rules of ``option_changes`` one by one: legacy relative paths, ``--max-steps`` growth, fixed
    options under ``--allow-option-changes``, options the rules do not classify."""
    from examples.voc_joint.cli import UsageError
    from examples.voc_joint.resume import option_changes

    def changes(recorded: dict, current: dict, allow: bool = False) -> list:
        return option_changes("seg", recorded, current, allow=allow, source=tmp_path / "c.pt", step=3)

    monkeypatch.chdir(tmp_path)
    # a checkpoint written before paths were recorded absolute: its relative path is read from here
    assert changes({"data_root": "data"}, {"data_root": str(tmp_path.resolve() / "data")}) == []
    with pytest.raises(UsageError, match=r"--data-root: 'data' \(checkpoint\) -> "):
        changes({"data_root": "data"}, {"data_root": str(tmp_path.resolve() / "other")})
    # --max-steps grows to None (no cap) or a larger cap; a cap on an uncapped run is not growth
    grown = {"step": 3, "option": "--max-steps", "old": 5, "new": None}
    assert changes({"max_steps": 5}, {"max_steps": None}) == [grown]
    with pytest.raises(UsageError, match=r"--max-steps: None \(checkpoint\) -> 5 \(now\)\n"):
        changes({"max_steps": None}, {"max_steps": 5})
    # fixed options never change, even when changes are allowed
    with pytest.raises(UsageError, match=r"--backbone: .* \[never changes on resume\]"):
        changes({"backbone": "resnet18"}, {"backbone": "resnet34"}, allow=True)
    # an option the rules do not classify is a training option: refused unless allowed
    with pytest.raises(UsageError, match=r"--brand-new: 1 \(checkpoint\) -> 2 \(now\)"):
        changes({"brand_new": 1}, {"brand_new": 2})
    assert changes({"brand_new": 1}, {"brand_new": 2}, allow=True) == [
        {"step": 3, "option": "--brand-new", "old": 1, "new": 2}
    ]


def test_option_changes_epochs_only_grow_and_unrecorded_options_are_not_compared(tmp_path) -> None:
    """More ``--epochs`` extend a run (an accepted change, recorded); fewer are refused without
    ``--allow-option-changes``. An option that the checkpoint's version did not record, or that the current
    options lack, is not compared (no ``KeyError``)."""
    from examples.voc_joint.cli import UsageError
    from examples.voc_joint.resume import option_changes

    def changes(recorded: dict, current: dict) -> list:
        return option_changes("seg", recorded, current, allow=False, source=tmp_path / "c.pt", step=3)

    assert changes({"epochs": 2}, {"epochs": 3}) == [{"step": 3, "option": "--epochs", "old": 2, "new": 3}]
    with pytest.raises(UsageError, match=r"--epochs: 3 \(checkpoint\) -> 2 \(now\)"):
        changes({"epochs": 3}, {"epochs": 2})
    assert changes({}, {"seg_lr": 0.1}) == [] and changes({"seg_lr": 0.1}, {}) == []


@pytest.mark.parametrize(
    ("name", "old", "new", "flag"),
    [("epochs", "1", 2, "--epochs"), ("epochs", None, 2, "--epochs"), ("max_steps", "5", 6, "--max-steps")],
)
def test_option_changes_of_a_recorded_count_that_is_no_number_are_listed(
    tmp_path, name, old, new, flag
) -> None:
    """A checkpoint whose record holds ``epochs`` or ``max_steps`` of another type (edited by hand, hash
    recomputed) ended ``--resume`` in a bare ``TypeError`` from ``new >= old``; it is a change like any other:
    refused naming both values, accepted and recorded with ``--allow-option-changes``."""
    from examples.voc_joint.cli import UsageError
    from examples.voc_joint.resume import option_changes

    def changes(allow: bool) -> list:
        return option_changes("seg", {name: old}, {name: new}, allow=allow, source=tmp_path / "c.pt", step=3)

    with pytest.raises(UsageError, match=rf"{flag}: {re.escape(repr(old))} \(checkpoint\) -> {new} \(now\)"):
        changes(False)
    assert changes(True) == [{"step": 3, "option": flag, "old": old, "new": new}]


@pytest.mark.parametrize("stage", ["seg", "spixel", "joint"])
def test_the_optimizer_type_never_changes_on_resume(stage, tmp_path) -> None:
    """The optimizer type defines the optimizer state in the checkpoint: every stage refuses a change, even
    with ``--allow-option-changes`` (an option of some stages only is not compared for the others)."""
    from examples.voc_joint.cli import UsageError
    from examples.voc_joint.resume import option_changes

    with pytest.raises(UsageError, match=r"--optimizer: 'sgd' \(checkpoint\) -> 'adam' \(now\)  \[never"):
        option_changes(
            stage, {"optimizer": "sgd"}, {"optimizer": "adam"}, allow=True, source=tmp_path / "c.pt", step=3
        )


@pytest.mark.parametrize("workers", ["0", "1"])
def test_data_errors_end_in_one_error_line(tiny_voc, tmp_path, monkeypatch, capsys, workers) -> None:
    """A ValueError-type data error (here labels out of --num-classes, then an empty list) ends like a missing
    file: one ``[train] error:`` line naming the file and status 1, also when read in a DataLoader worker."""
    root = tmp_path / "data"
    shutil.copytree(tiny_voc, root)
    argv = [
        "train.py",
        *train_args(root, tmp_path / "a", "--stage", "seg", "--epochs", "1", "--num-classes", "5"),
    ]
    argv[argv.index("--workers") + 1] = workers
    monkeypatch.setattr(sys, "argv", argv)
    assert train._cli() == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("[train] error: mask file '"), err
    assert "has label values outside {0..4, 255}: " in err
    assert ("(DataLoader worker 0)" in err) == (workers == "1")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n")
    monkeypatch.setattr(sys, "argv", ["train.py", *train_args(root, tmp_path / "b", "--stage", "seg")])
    assert train._cli() == 1
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"[train] error: split list file '{root / 'ImageSets' / 'Segmentation' / 'train.txt'}' is empty"
    )


def test_log_lr_is_the_learning_rate_of_the_step(tiny_voc, tmp_path) -> None:
    """log.csv's lr column: the rate each step ran at (step 1 of a poly run: the base rate), not the next."""
    out = train.main(
        train_args(
            tiny_voc, tmp_path, "--stage", "seg", "--epochs", "2", "--log-every", "1", "--seg-lr", "0.01"
        )
    )["seg"]
    lrs = [float(r["lr"]) for r in _rows(out.parent / "log.csv")]
    total = 4  # 2 epochs x 2 steps
    assert lrs == pytest.approx([0.01 * (1 - t / total) ** 0.9 for t in range(total)], rel=1e-5)


def test_poly_schedule_after_a_batch_size_change_ends_at_the_last_step(tiny_voc, tmp_path, capsys) -> None:
    """``--resume --allow-option-changes --batch-size`` mid-run: the horizon counts the steps left at the new
    size, so no step runs at learning rate 0 (it used to be recomputed as epochs x new steps per epoch)."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "3", "--log-every", "1")
    train.main([*argv, "--max-steps", "3"])  # batch 2: 2 steps per epoch, stopped in epoch 2
    argv[argv.index("--batch-size") + 1] = "4"  # 1 step per epoch; epoch 2 has no full batch left
    out = train.main([*argv, "--resume", "--allow-option-changes"])["seg"]
    assert "option change: --batch-size 2 -> 4" in capsys.readouterr().out
    rows = _rows(out.parent / "log.csv")
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[3] == pytest.approx(0.007 * (1 - 3 / 4) ** 0.9, rel=1e-5) and all(lr > 0 for lr in lrs)


def test_overwrite_clears_evaluate_py_outputs(tmp_path) -> None:
    """``evaluate.py``'s default output folder ``eval_<split>`` belongs to the run: a new run refuses the
    folder and ``--overwrite`` deletes it (no stale metrics next to a new checkpoint)."""
    from examples.voc_joint.resume import check_new_run, clear_run, run_files

    folder = tmp_path / "seg"
    (folder / "eval_val" / "panels").mkdir(parents=True)
    (folder / "eval_val" / "metrics.json").write_text("{}")
    (folder / "notes.txt").write_text("mine")
    assert run_files(folder) == [folder / "eval_val"]
    with pytest.raises(train.UsageError, match=r"holds a run \(eval_val\)"):
        check_new_run(folder, argparse.Namespace(overwrite=False))
    clear_run(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_run_files_count_symbolic_links_and_clear_run_removes_only_the_links(tmp_path) -> None:
    """A run file that is a symbolic link belongs to the run even when its target is gone, and ``--overwrite``
    removes the link, never the folder it points to (``shutil.rmtree`` refuses a link to a folder)."""
    from examples.voc_joint.resume import check_new_run, clear_run, run_files

    folder, elsewhere = tmp_path / "seg", tmp_path / "kept"
    folder.mkdir()
    elsewhere.mkdir()
    (elsewhere / "p.png").write_bytes(b"png")
    (folder / "panels").symlink_to(elsewhere, target_is_directory=True)
    (folder / "eval.json").symlink_to(tmp_path / "gone.json")  # dangling
    assert run_files(folder) == [folder / "eval.json", folder / "panels"]
    with pytest.raises(train.UsageError, match=r"holds a run \(eval\.json, panels\)"):
        check_new_run(folder, argparse.Namespace(overwrite=False))
    clear_run(folder)
    assert list(folder.iterdir()) == [] and (elsewhere / "p.png").read_bytes() == b"png"


def test_a_log_that_cannot_be_read_makes_a_folder_hold_a_run(tmp_path) -> None:
    """Only a log known to hold no row is no run: one that is not UTF-8 text is kept (refused without
    ``--overwrite``), not silently replaced."""
    from examples.voc_joint.resume import check_new_run

    folder = tmp_path / "seg"
    folder.mkdir()
    (folder / "log.csv").write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(train.UsageError, match=r"holds a run \(log\.csv\)"):
        check_new_run(folder, argparse.Namespace(overwrite=False))
    check_new_run(folder, argparse.Namespace(overwrite=True))


def test_path_options_expand_the_home_folder(tmp_path, monkeypatch) -> None:
    """``~`` in a path option is the home folder, as documented by ``absolute_path``: a recorded ``~/data``
    and the same folder spelled in full are the same option on resume."""
    from examples.voc_joint.resume import absolute_path, option_changes

    monkeypatch.setenv("HOME", str(tmp_path))
    assert absolute_path("~/data") == (tmp_path / "data").resolve()
    current = {"data_root": str((tmp_path / "data").resolve())}
    recorded = {"data_root": "~/data"}
    assert option_changes("seg", recorded, current, allow=False, source=Path("c"), step=1) == []


def test_pipeline_docs_quote_the_demos_step0_error() -> None:
    """Each "about <error> for logits up to <size>" of pipeline.rst is the figure of demo_output.txt."""
    import re

    demo = (ROOT / "docs" / "examples" / "demo_output.txt").read_text()
    error, size = re.search(r"uniformize\(S\)\| = (\S+)\s+\(\|S\| up to (\S+);", demo).groups()
    docs = " ".join((ROOT / "docs" / "examples" / "pipeline.rst").read_text().split())
    quoted = re.findall(r"about (\S+) for logits up to (~?[\d.]+)", docs)
    assert len(quoted) >= 2, quoted
    for q_error, q_size in quoted:
        assert float(q_error) == float(f"{float(error):.0e}") and q_size == f"{float(size):g}", (
            q_error,
            q_size,
        )


def test_an_empty_scaler_state_resumes_into_an_enabled_scaler() -> None:
    """A run without an enabled scaler saves ``{}``; resuming it with AMP on CUDA must not fail on that."""
    enabled = torch.amp.GradScaler("cpu", enabled=True, init_scale=2.0**10)
    with pytest.raises(RuntimeError, match="state dict is empty"):  # what torch does with it
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict({})
    train.load_scaler_state(enabled, {})
    assert enabled.get_scale() == 2.0**10
    saved = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0).state_dict()
    train.load_scaler_state(enabled, saved)
    assert enabled.get_scale() == 8.0


def test_optimizer_options_reach_every_group() -> None:
    """Each learning rate goes to its own group; --momentum and --weight-decay reach SGD and Adam."""
    parser = train_options.build_parser()
    small = ["--backbone", "resnet18", "--aspp-channels", "8", "--spixel-width", "4"]
    lrs = ["--lr", "1e-3", "--spixel-lr", "2e-4", "--fusion-lr", "3e-5", "--momentum", "0.5"]
    args = train_options.resolve_stage_options(
        "joint", parser.parse_args([*small, *lrs, "--weight-decay", "1e-5"])
    )
    opt = train.build_optimizer("joint", train.build_stage_model("joint", args), args)
    groups = {g["name"]: g for g in opt.param_groups}
    assert {k: g["lr"] for k, g in groups.items()} == {"deeplab": 1e-3, "spixelfcn": 2e-4, "fusion": 3e-5}
    assert all(g["momentum"] == 0.5 and g["weight_decay"] == 1e-5 for g in groups.values())
    seg = train_options.resolve_stage_options(
        "seg", parser.parse_args([*small, "--seg-lr", "0.01", "--head-lr-mult", "4"])
    )
    opt = train.build_optimizer("seg", train.build_stage_model("seg", seg), seg)
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"backbone": 0.01, "head": pytest.approx(0.04)}
    spx = train_options.resolve_stage_options(
        "spixel", parser.parse_args([*small, "--spixel-pretrain-lr", "1e-3"])
    )
    opt = train.build_optimizer("spixel", train.build_stage_model("spixel", spx), spx)
    assert isinstance(opt, torch.optim.Adam)
    # the stage default, biases exempt (SpixelFCN's bias_decay 0)
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(1e-3, 4e-4), (1e-3, 0.0)]


def test_model_options_reach_the_joint_model() -> None:
    """--fusion-activation none builds a stack without activation; --seed sets the fusion layers' draws."""
    parser = train_options.build_parser()
    small = ["--backbone", "resnet18", "--aspp-channels", "8", "--spixel-width", "4", "--fusion-hidden", "42"]

    def fusion_weights(*extra: str) -> tuple[list[torch.Tensor], JointModel]:
        args = train_options.resolve_stage_options("joint", parser.parse_args([*small, *extra]))
        model = train.build_stage_model("joint", args)
        assert isinstance(model, JointModel) and model.fusion is not None
        return [c.weight for c in model.fusion.convs], model

    _, linear = fusion_weights("--fusion-activation", "none")
    assert linear.config["fusion_activation"] is None
    assert not any(isinstance(m, (torch.nn.ReLU, torch.nn.LeakyReLU)) for m in linear.fusion.layers)
    a, _ = fusion_weights("--fusion-init", "xavier", "--seed", "3")
    b, _ = fusion_weights("--fusion-init", "xavier", "--seed", "3")
    c, _ = fusion_weights("--fusion-init", "xavier", "--seed", "4")
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_stage_all_joins_given_checkpoints_or_the_earlier_stages(tmp_path) -> None:
    """``--stage all``: the joint stage starts from --seg-checkpoint / --spixel-checkpoint when given, else
    from the seg / spixel stages' checkpoints in the output folder; a joint stage alone gets no default."""
    given = tmp_path / "seg.pt"
    given.touch()
    parser = train_options.build_parser()
    args = parser.parse_args(["--output-dir", str(tmp_path / "out"), "--seg-checkpoint", str(given)])
    joint = train._stage_paths("joint", args)  # before resolve_stage_options (which reads the checkpoints)
    assert Path(joint.seg_checkpoint).resolve() == given.resolve()
    assert (
        Path(joint.spixel_checkpoint).resolve() == (tmp_path / "out" / "spixel" / "checkpoint.pt").resolve()
    )
    alone = train._stage_args("joint", parser.parse_args(["--output-dir", str(tmp_path), "--stage", "joint"]))
    assert alone.seg_checkpoint is None and alone.spixel_checkpoint is None


def test_equal_scale_bounds_are_accepted(tmp_path) -> None:
    parser = train_options.build_parser()
    args = parser.parse_args(["--output-dir", str(tmp_path), "--scale-min", "1", "--scale-max", "1"])
    train_options.check_args(parser, args)  # no random scaling: fine


def test_resume_after_a_batch_size_change_counts_the_skipped_batches_at_the_new_size(
    tmp_path, capsys
) -> None:
    """2 steps of batch 2 done (4 of 8 images), resumed at batch 4: the 4 samples done are 1 batch of the new
    size, the count the line names (not the checkpoint's 2 batches of 2); the epoch's step count, which
    changed, is left out."""
    from examples.voc_joint.synthetic import generate_synthetic_voc

    root = generate_synthetic_voc(tmp_path / "voc8", num_train=8, num_val=2, image_size=(36, 44), seed=1)
    argv = train_args(root, tmp_path / "out", "--stage", "spixel", "--epochs", "1")
    train.main([*argv, "--max-steps", "2"])  # batch 2: 4 steps per epoch, 2 done
    argv[argv.index("--batch-size") + 1] = "4"
    capsys.readouterr()
    out = train.main([*argv, "--resume", "--allow-option-changes"])["spixel"]
    text = capsys.readouterr().out
    assert ": epoch 1, step 2 (2 steps of the epoch done), skipping 1 done batch\n" in text, text
    assert load_checkpoint(out)["step"] == 3  # 1 step of 2 left in the epoch


def test_overwrite_and_resume_of_a_stage_that_reached_max_steps(tiny_voc, tmp_path, capsys) -> None:
    ckpt = train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "1", "--max-steps", "1"))[
        "seg"
    ]
    before = ckpt.read_bytes()
    with pytest.raises(SystemExit) as info:
        train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", "--resume", str(ckpt), "--overwrite"))
    assert info.value.code == 2
    assert "--overwrite would delete the checkpoint that --resume" in capsys.readouterr().err
    assert ckpt.read_bytes() == before
    # the stage reached --max-steps: a --resume with the same cap skips it; epochs count from 1, as in log.csv
    # (it said "epoch 0 / step 1", as if nothing was done)
    train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", "--resume", "--max-steps", "1"))
    out = capsys.readouterr().out
    assert "already reached epoch 1, step 1 (1 step of the epoch done); skipping the stage" in out, out
    assert ckpt.read_bytes() == before
    # resumed mid-epoch: the step of the epoch, out of its steps
    train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", "--resume", "--max-steps", "3"))
    out = capsys.readouterr().out
    assert "resumed from " in out and ": epoch 1, step 1 (1 of 2 steps of the epoch done)\n" in out, out
    assert load_checkpoint(ckpt)["step"] == 3


def test_overwrite_with_resume_of_another_folders_finished_checkpoint_clears_the_folder(
    tiny_voc, tmp_path, capsys
) -> None:
    """``--overwrite --resume PATH`` of a finished stage of another folder: PATH is the stage's result, and
    the output folder's earlier run is deleted as --overwrite says (not left beside it)."""
    argv = ("--stage", "seg", "--epochs", "1", "--max-steps", "1")
    ckpt = train.main(train_args(tiny_voc, tmp_path / "a", *argv))["seg"]
    old = train.main(train_args(tiny_voc, tmp_path / "b", *argv))["seg"]
    before = ckpt.read_bytes()
    capsys.readouterr()
    out = train.main(train_args(tiny_voc, tmp_path / "b", *argv, "--resume", str(ckpt), "--overwrite"))["seg"]
    assert "skipping the stage" in capsys.readouterr().out
    assert out.resolve() == ckpt.resolve() and ckpt.read_bytes() == before
    assert not old.exists() and not (old.parent / "log.csv").exists()


def test_option_types_include_their_closed_bounds(tmp_path, monkeypatch) -> None:
    import argparse

    from examples.voc_joint.cli import (
        existing_dir,
        existing_file,
        float_range,
        int_range,
        output_path,
        resume_arg,
    )

    assert int_range(1, 3)("3") == 3 and int_range(1, 3)("1") == 1
    with pytest.raises(argparse.ArgumentTypeError, match=r"must be an integer in \[1, 3\], got 4"):
        int_range(1, 3)("4")
    assert float_range(0.0, 1.0)("1") == 1.0 and float_range(0.0, 1.0)("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number > 0"):
        float_range(0.0, low_open=True)("0")
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected a file, got the folder '.*'"):
        existing_file(str(tmp_path))  # a folder is not a file (it exists: not "file not found")
    with pytest.raises(argparse.ArgumentTypeError, match="file not found"):
        existing_file(str(tmp_path / "nothing.pt"))
    with pytest.raises(argparse.ArgumentTypeError, match="--resume expects a checkpoint file, got the fold"):
        resume_arg(str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "c.pt").touch()
    assert resume_arg("~/c.pt") == str(tmp_path / "c.pt") and resume_arg("auto") == "auto"
    # an output path expands '~' as the input paths do (--output-dir=~/runs: no shell expands it), and a
    # '~user' of no user is an argument error, not Path.expanduser's RuntimeError (a traceback)
    assert output_path("~/runs") == tmp_path / "runs" and output_path("runs") == Path("runs")
    for parse in (existing_file, existing_dir, resume_arg, output_path):
        with pytest.raises(argparse.ArgumentTypeError, match="its '~' names no home folder"):
            parse("~no_such_user_of_transinit/x.pt")


def test_schedule_horizon_counts_only_the_full_batches_left() -> None:
    """The poly schedule's step count: a resume after a batch-size increase may find more samples done in the
    epoch than the new size has full batches (nothing left in it, not a negative count); a finished run
    keeps a horizon of at least 1 (the poly factor divides by it)."""
    # batch 4 -> 16 after 6 steps of 4 (24 samples): 1 step per epoch at 16, none left in epoch 0
    assert train.schedule_horizon(2, 1, 16, step=6, epoch=0, samples_in_epoch=24) == 6 + 0 + 1
    assert train.schedule_horizon(2, 3, 4, step=5, epoch=1, samples_in_epoch=8) == 5 + 1
    assert train.schedule_horizon(2, 3, 4, step=6, epoch=2) == 6
    assert train.schedule_horizon(2, 3, 4, step=0, epoch=2) == 1


def test_position_of_a_version_1_checkpoint_counts_samples_at_its_own_batch() -> None:
    """Version-1 checkpoints record batches only: samples = batches x the recorded batch size x the recorded
    number of processes (not the batch size of the resuming command)."""
    args = argparse.Namespace(batch_size=8)
    v1 = {"step": 5, "epoch": 1, "batch_in_epoch": 3, "world_size": 2, "config": {"args": {"batch_size": 4}}}
    assert train._position(v1, args) == (5, 1, 3 * 4 * 2)
    assert train._position({**v1, "samples_in_epoch": 20}, args) == (5, 1, 20)


def test_a_run_is_finished_at_its_last_epoch_or_its_step_cap() -> None:
    def finished(epoch: int, step: int, epochs: int = 2, max_steps: int | None = None) -> bool:
        return train._finished(
            {"epoch": epoch, "step": step}, argparse.Namespace(epochs=epochs, max_steps=max_steps)
        )

    assert finished(2, 10) and not finished(1, 10)
    assert finished(1, 10, max_steps=10) and not finished(1, 9, max_steps=10)


def test_exit_status_and_message_of_each_way_to_stop(monkeypatch, capsys) -> None:
    """The script's exit status: 130 / 143 for SIGINT / SIGTERM (with a line when a second signal forced the
    stop), 1 and one ``[train] error:`` line for diverged training (NonFiniteError), 0 otherwise."""
    from examples.voc_joint.engine import NonFiniteError
    from examples.voc_joint.signals import Interrupted

    def stops_with(exc: BaseException | None) -> None:
        def main() -> dict:
            if exc is not None:
                raise exc
            return {}

        monkeypatch.setattr(train, "main", main)

    stops_with(Interrupted(signal.SIGTERM))
    assert train._cli() == 143 and capsys.readouterr().err == ""
    stops_with(Interrupted(signal.SIGINT, forced=True))
    assert train._cli() == 130
    assert "stopped by a second SIGINT: no new checkpoint" in capsys.readouterr().err
    stops_with(NonFiniteError("non-finite loss at step 3"))
    assert train._cli() == 1
    assert capsys.readouterr().err == "[train] error: non-finite loss at step 3\n"
    stops_with(KeyboardInterrupt())
    assert train._cli() == 130
    # an allocation that fails (--crop-size 16384 on a CPU machine) was the allocator's traceback
    stops_with(
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 3221225472 bytes")
    )
    assert train._cli() == 1
    err = capsys.readouterr().err
    assert err.startswith("[train] error: out of memory (a smaller --crop-size") and err.count("\n") == 1, err
    stops_with(MemoryError())
    assert train._cli() == 1 and "error: out of memory (" in capsys.readouterr().err
    stops_with(RuntimeError("shape mismatch"))  # any other error still propagates
    with pytest.raises(RuntimeError, match="shape mismatch"):
        train._cli()
    stops_with(None)
    assert train._cli() == 0


def test_exit_status_of_a_lost_process_is_1_with_one_error_line(monkeypatch, capsys) -> None:
    """A process whose peer was lost (ProcessLostError) exits with status 1 and one ``[train] error:`` line,
    as other failures do, not 2 (a command refused before it ran)."""
    from examples.voc_joint.distributed import ProcessLostError

    def main() -> dict:
        raise ProcessLostError("another of the 2 processes was lost")

    monkeypatch.setattr(train, "main", main)
    assert train._cli() == 1
    assert capsys.readouterr().err == "[train] error: another of the 2 processes was lost\n"


def test_error_text_of_an_error_raised_in_a_dataloader_worker() -> None:
    """A worker's error carries its whole traceback: the one-line message is its last line without the
    exception's qualified name, and the worker's number."""
    text = (
        "Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
        '  File "data.py", line 1, in load\n    raise DataError(msg)\n'
        "examples.voc_joint.data.DataError: mask file 'a.png' is bad: x: y\n\n"
    )
    assert error_text(ValueError(text)) == "mask file 'a.png' is bad: x: y (DataLoader worker 3)"
    assert error_text(OSError("disk full")) == "disk full"


def test_check_run_of_a_resume_against_the_checkpoint_on_disk(tmp_path, monkeypatch) -> None:
    """``_check_run`` (the checkpoint itself is faked): a relative --resume path to the folder's own
    checkpoint is that checkpoint (--overwrite would delete it); another run's checkpoint may replace the
    folder's with --overwrite only; the recorded option changes are kept; a new number of processes is one."""
    from examples.voc_joint.resume import plain

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "out" / "seg"
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").touch()
    (tmp_path / "other.pt").touch()
    parser = train_options.build_parser()

    def check(*extra: str, world_size: int = 1):
        args = train_options.resolve_stage_options(
            "seg", parser.parse_args(["--output-dir", str(tmp_path / "out"), "--stage", "seg", *extra])
        )
        recorded = {
            k: plain(v)
            for k, v in vars(args).items()
            if k not in ("resume", "overwrite", "allow_option_changes")
        }
        old = {"step": 1, "option": "--seg-lr", "old": 0.1, "new": 0.01}
        ckpt = {"step": 3, "epoch": 0, "world_size": 2, "config": {"args": recorded, "changes": [old]}}
        source = Path(args.resume)
        monkeypatch.setattr(train, "_resume_checkpoint", lambda stage, args, path: (ckpt, source))
        return train._check_run("seg", args, Path(args.output_dir) / "seg", world_size)

    with pytest.raises(train.UsageError, match="--overwrite would delete the checkpoint"):
        check("--resume", "out/seg/checkpoint.pt", "--overwrite")
    with pytest.raises(train.UsageError, match="holds another run's checkpoint"):
        check("--resume", "other.pt")
    _, source, changes = check("--resume", "other.pt", "--overwrite", "--allow-option-changes")
    assert source == Path("other.pt")
    assert changes[0] == {"step": 1, "option": "--seg-lr", "old": 0.1, "new": 0.01}  # the earlier change
    assert [(c["old"], c["new"]) for c in changes[1:]] == [(2, 1)]  # 2 processes -> 1, at step 3
    with pytest.raises(train.UsageError, match="options differ"):
        check("--resume", "other.pt", "--overwrite")  # a new world size without --allow-option-changes


def test_a_resume_under_another_number_of_processes_names_torchruns_options() -> None:
    """train.py has no ``--world-size``: the refusal said "--world-size: 2 (checkpoint) -> 1 (now)" and asked
    for "the checkpoint's values", which no option of train.py takes. It names torchrun's options now."""
    from examples.voc_joint.cli import UsageError
    from examples.voc_joint.resume import option_changes

    def changes(allow: bool) -> list[dict]:
        recorded, current = {"world_size": 2, "seg_lr": 0.1}, {"world_size": 1, "seg_lr": 0.1}
        return option_changes("seg", recorded, current, allow=allow, source=Path("c.pt"), step=3)

    with pytest.raises(UsageError) as refused:
        changes(allow=False)
    (line,) = [x for x in str(refused.value).splitlines() if "(checkpoint)" in x]
    assert line == "  processes (torchrun --nproc-per-node x --nnodes): 2 (checkpoint) -> 1 (now)"
    assert changes(allow=True) == [
        {"step": 3, "option": "processes (torchrun --nproc-per-node x --nnodes)", "old": 2, "new": 1}
    ]
    assert "--world-size" not in train_options.build_parser().format_help()


def test_every_rng_is_seeded_with_the_seed_plus_the_rank(tiny_voc, tmp_path, monkeypatch) -> None:
    """Each process draws its own dropout masks: the Python, NumPy and torch RNGs start from --seed + rank.
    (The test seeded Python's and NumPy's RNGs itself before checking them: only torch's was checked.)"""
    import random

    import numpy as np

    from examples.voc_joint.distributed import DistInfo

    args = train_options.resolve_stage_options(
        "seg", train_options.build_parser().parse_args(train_args(tiny_voc, tmp_path))
    )
    args.seed = 5
    train._seed_everything(0)
    seeds: dict[str, list[object]] = {"python": [], "numpy": []}

    def spy(name: str, seed_with):  # records the seed, then seeds
        return lambda *a, **k: (seeds[name].append(a[0]), seed_with(*a, **k))[1]

    monkeypatch.setattr(random, "seed", spy("python", random.seed))
    monkeypatch.setattr(np.random, "seed", spy("numpy", np.random.seed))
    train.build_train_state("seg", args, DistInfo(rank=2, world_size=1), None, 1)
    assert torch.initial_seed() == 7
    assert seeds == {"python": [7], "numpy": [7]}, seeds


def test_stage_all_checks_every_stage_folder_before_the_first_stage(tiny_voc, tmp_path, capsys) -> None:
    """``--stage all`` into an output folder whose joint stage holds a run: refused before seg trains."""
    (tmp_path / "joint").mkdir()
    (tmp_path / "joint" / "checkpoint.pt").write_bytes(b"a run")
    with pytest.raises(SystemExit) as info:
        train.main(train_args(tiny_voc, tmp_path, "--stage", "all", "--epochs", "1", "--max-steps", "1"))
    assert (
        info.value.code == 2 and f"output folder {tmp_path / 'joint'} holds a run" in capsys.readouterr().err
    )
    assert not (tmp_path / "seg" / "checkpoint.pt").exists()


# ------------------------------------------------------------------- joint stage: the checkpoints' networks
def _joint_argv(root: Path, out: Path, seg: Path, spx: Path, *extra: str) -> list[str]:
    """A tiny CPU joint run from ``seg`` / ``spx``, without model options (those of the checkpoints)."""
    return [
        "--data-root", str(root), "--output-dir", str(out), "--stage", "joint", "--seg-checkpoint", str(seg),
        "--spixel-checkpoint", str(spx), "--crop-size", "32", "--batch-size", "2", "--workers", "0",
        "--device", "cpu", "--no-progress", "--threads", "2", "--fusion-hidden", "42", "--epochs", "2",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            ["--backbone", "resnet50", "--cell-size", "32", "--spixel-width", "32", "--output-stride", "8"],
            [
                "--backbone 'resnet50' (given) vs 'resnet18' (--seg-checkpoint {seg})",
                "--output-stride 8 (given) vs 16 (--seg-checkpoint {seg})",
                "--cell-size 32 (given) vs 8 (--spixel-checkpoint {spx})",
                "--spixel-width 32 (given) vs 4 (--spixel-checkpoint {spx})",
            ],
        ),
        (["--num-classes", "5"], ["--num-classes 5 (given) vs 21 (--seg-checkpoint {seg})"]),
        (["--aspp-channels", "16"], ["--aspp-channels 16 (given) vs 8 (--seg-checkpoint {seg})"]),
        (
            ["--spixel-centre-bias", "1.5"],
            ["--spixel-centre-bias 1.5 (given) vs 0.0 (--spixel-checkpoint {spx})"],
        ),
    ],
)
def test_joint_refuses_model_options_that_contradict_the_checkpoints(
    tiny_voc,
    tmp_path,
    capsys,
    given,
    expected,
) -> None:
    """A model option given on the command line that the pretrained checkpoint contradicts: exit status 2 with
    one line naming the option, both values and the checkpoint, before anything is trained."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    with pytest.raises(SystemExit) as info:
        train.main(_joint_argv(tiny_voc, tmp_path / "out", seg, spx, "--max-steps", "1", *given))
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.startswith(
        "python examples/voc_joint/train.py: error: model options contradict the pretrained"
    )
    assert err.count("\n") == 1, err  # one line
    for part in expected:
        assert part.format(seg=seg.resolve(), spx=spx.resolve()) in err, err
    assert "leave these options out (they are then taken from the checkpoints)" in err
    assert not (tmp_path / "out" / "joint" / "checkpoint.pt").exists()


def test_joint_takes_model_options_from_the_checkpoints_and_resumes_with_or_without_them(
    tiny_voc,
    tmp_path,
    capsys,
) -> None:
    """Model options left out are the checkpoints' (one line says which, from which file) and recorded as
    built; the run resumes without them, or with the true values, and refuses other values."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    out = tmp_path / "out"
    ckpt = train.main(_joint_argv(tiny_voc, out, seg, spx, "--max-steps", "1"))["joint"]
    lines = [line for line in capsys.readouterr().out.splitlines() if "taken from the checkpoints" in line]
    assert lines == [
        "[joint] model options taken from the checkpoints: from --seg-checkpoint "
        f"{seg.resolve()}: --backbone resnet18, --output-stride 16, --num-classes 21, --aspp-channels 8; "
        "from --spixel-checkpoint "
        f"{spx.resolve()}: --cell-size 8, --spixel-width 4, --spixel-centre-bias 0.0"
    ]
    recorded = load_checkpoint(ckpt)["config"]["args"]
    built = {"backbone": "resnet18", "output_stride": 16, "num_classes": 21, "aspp_channels": 8}
    built |= {"cell_size": 8, "spixel_width": 4, "spixel_centre_bias": 0.0}
    assert {k: recorded[k] for k in built} == built
    assert load_checkpoint(ckpt)["config"]["model"]["deeplab"]["backbone"] == "resnet18"
    # resume without the options, then with the true ones
    train.main(_joint_argv(tiny_voc, out, seg, spx, "--max-steps", "2", "--resume"))
    true = ["--backbone", "resnet18", "--cell-size", "8", "--spixel-width", "4", "--num-classes", "21"]
    train.main(_joint_argv(tiny_voc, out, seg, spx, "--max-steps", "3", "--resume", *true))
    assert load_checkpoint(ckpt)["step"] == 3 and load_checkpoint(ckpt)["config"]["changes"] == [
        {"step": 1, "option": "--max-steps", "old": 1, "new": 2},
        {"step": 2, "option": "--max-steps", "old": 2, "new": 3},
    ]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # another value: the checkpoint's network contradicts it
        train.main(
            _joint_argv(tiny_voc, out, seg, spx, "--max-steps", "4", "--resume", "--backbone", "resnet34")
        )
    assert info.value.code == 2
    assert "--backbone 'resnet34' (given) vs 'resnet18' (--seg-checkpoint" in capsys.readouterr().err
    assert load_checkpoint(ckpt)["step"] == 3


def test_stage_all_checks_fusion_widths_against_a_given_seg_checkpoints_classes(
    tiny_voc, tmp_path, capsys
) -> None:
    """With --stage all and --seg-checkpoint, the joint stage fine-tunes that checkpoint: --fusion-hidden is
    checked against its classes (was: against the default 21, so 16 widths for a 5-class checkpoint were
    refused, "below 2 x --num-classes = 42", where --stage joint took them), still before any stage trains."""

    def options(seg: Path, spx: Path) -> list[str]:
        return ["--stage", "all", "--seg-checkpoint", str(seg), "--spixel-checkpoint", str(spx)]

    argv = [*options(*untrained_checkpoints(tmp_path / "five", num_classes=5)), "--fusion-hidden", "16"]
    parser = train_options.build_parser()
    args = parser.parse_args(argv)
    train_options.check_args(parser, args, argv)
    assert train._stage_args("joint", args).num_classes == 5
    seg, spx = untrained_checkpoints(tmp_path / "21")  # 21 classes: 16 widths are too few, and refused
    out = tmp_path / "out"
    tiny = train_args(tiny_voc, out, "--aspp-channels", "8")  # (the checkpoints' ASPP width)
    with pytest.raises(SystemExit) as info:
        train.main([*tiny, *options(seg, spx), "--fusion-hidden", "16"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--fusion-hidden [16] below 2 x --num-classes = 42" in err, err
    assert f"(--num-classes 21 of --seg-checkpoint {seg}" in err and not (out / "seg").exists(), err


def test_fusion_widths_are_checked_against_the_checkpoints_classes(tmp_path) -> None:
    """--fusion-hidden below twice the classes of --seg-checkpoint (21 here; --num-classes left out)."""
    seg, spx = untrained_checkpoints(tmp_path)
    argv = ["--stage", "joint", "--seg-checkpoint", str(seg), "--spixel-checkpoint", str(spx)]
    parser = train_options.build_parser()
    args = parser.parse_args([*argv, "--fusion-hidden", "8"])
    train_options.check_args(parser, args)  # the classes are the checkpoint's: not known when parsing
    with pytest.raises(train.UsageError, match=r"--fusion-hidden \[8\] below 2 x --num-classes = 42"):
        train_options.resolve_stage_options("joint", args)
    assert (
        train_options.resolve_stage_options(
            "joint", parser.parse_args([*argv, "--fusion-hidden", "42"])
        ).num_classes
        == 21
    )


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ([], "give --seg-checkpoint and --spixel-checkpoint (the checkpoints"),
        (["--seg-checkpoint", "{seg}"], "give --spixel-checkpoint (the checkpoints"),
        (["--spixel-checkpoint", "{spx}"], "give --seg-checkpoint (the checkpoints"),
    ],
)
def test_joint_without_checkpoints_is_refused_unless_from_scratch(
    tiny_voc,
    tmp_path,
    capsys,
    given,
    missing,
) -> None:
    """The joint stage fine-tunes pretrained networks: without their checkpoints it is refused (exit status 2,
    pointing to --stage all) unless --from-scratch asks for random networks."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    given = [g.format(seg=seg, spx=spx) for g in given]
    argv = train_args(
        tiny_voc, tmp_path / "out", "--stage", "joint", "--epochs", "1", "--max-steps", "1", *given
    )
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("usage: ")  # argparse's usage, then one error line
    (line,) = [line for line in err.splitlines() if "error:" in line]
    assert "error: --stage joint fine-tunes pretrained networks: " + missing in line
    assert "use --stage all to pretrain both and then join them" in line and "--from-scratch" in line
    assert not (tmp_path / "out" / "joint").exists()
    parser = train_options.build_parser()
    train_options.check_args(parser, parser.parse_args([*argv, "--from-scratch"]))  # the opt-in is accepted


@pytest.mark.parametrize("stage", ["seg", "spixel", "all"])
def test_from_scratch_only_applies_to_the_joint_stage(stage, capsys) -> None:
    parser = train_options.build_parser()
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args(["--stage", stage, "--from-scratch"]))
    assert info.value.code == 2
    assert f"--from-scratch only applies to --stage joint (--stage {stage} pretrains itself)" in (
        capsys.readouterr().err
    )


def test_from_scratch_with_both_checkpoints_is_refused_not_ignored(tmp_path, capsys) -> None:
    """``--stage joint --seg-checkpoint A --spixel-checkpoint B --from-scratch`` fine-tuned both checkpoints
    without a word (no network is left to start from random weights), and its checkpoint recorded
    ``from_scratch``, a fixed option, which a resume without it then refused. It is a usage error now; with
    one checkpoint, the other network starts from scratch (accepted)."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    parser = train_options.build_parser()
    both = ["--stage", "joint", "--seg-checkpoint", str(seg), "--spixel-checkpoint", str(spx)]
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args([*both, "--from-scratch"]))
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "error: --from-scratch with --seg-checkpoint and --spixel-checkpoint: both networks start" in err
    train_options.check_args(parser, parser.parse_args(both))
    for one in (both[:4], [*both[:2], *both[4:]]):
        train_options.check_args(parser, parser.parse_args([*one, "--from-scratch"]))


#: A value other than the default for each option of ``train_options.STAGE_ONLY_OPTIONS`` (``FILE``: an
#: existing file).
_NOT_DEFAULT = {
    "seg_lr": ["--seg-lr", "0.5"],
    "head_lr_mult": ["--head-lr-mult", "2.5"],
    "spixel_pretrain_lr": ["--spixel-pretrain-lr", "0.5"],
    "pos_weight": ["--pos-weight", "0.5"],
    "recompute_loss": ["--recompute-loss"],
    "lr": ["--lr", "0.5"],
    "spixel_lr": ["--spixel-lr", "0.5"],
    "fusion_lr": ["--fusion-lr", "0.5"],
    "spixel_loss_weight": ["--spixel-loss-weight", "0.5"],
    "freeze_bn": ["--no-freeze-bn"],
    "recompute_fusion": ["--no-recompute-fusion"],
    "compile": ["--compile"],
    "seg_checkpoint": ["--seg-checkpoint", "FILE"],
    "spixel_checkpoint": ["--spixel-checkpoint", "FILE"],
    "backbone_weights": ["--backbone-weights", "FILE"],
    "eval": ["--eval"],
}


#: The stages that use each option of ``train_options.STAGE_ONLY_OPTIONS``, written out (read from the table
#: itself, an entry dropped or widened there passed the test below).
_USED_BY = {
    "seg_lr": ("seg",),
    "head_lr_mult": ("seg",),
    "spixel_pretrain_lr": ("spixel",),
    "pos_weight": ("spixel", "joint"),
    "recompute_loss": ("spixel", "joint"),
    "lr": ("joint",),
    "spixel_lr": ("joint",),
    "fusion_lr": ("joint",),
    "spixel_loss_weight": ("joint",),
    "freeze_bn": ("joint",),
    "recompute_fusion": ("joint",),
    "compile": ("joint",),
    "seg_checkpoint": ("joint",),
    "spixel_checkpoint": ("joint",),
    "backbone_weights": ("seg", "joint"),
    "eval": ("seg", "joint"),  # the spixel stage has no segmentation to evaluate
}

#: Each stage's learning-rate options, as its refusal of another stage's names them.
_OWN_LEARNING_RATES = {
    "seg": "--seg-lr, --head-lr-mult",
    "spixel": "--spixel-pretrain-lr",
    "joint": "--lr, --spixel-lr, --fusion-lr",
}


@pytest.mark.parametrize("name", sorted(train_options.STAGE_ONLY_OPTIONS))
def test_an_option_of_other_stages_is_refused_not_ignored(name, tmp_path, capsys, monkeypatch) -> None:
    """``--stage seg --lr 0.01`` trained at ``--seg-lr`` without a word: an option that the stage run does not
    use is refused (exit status 2, naming it, the stages that use it and, for a learning rate, the stage's
    own); the stages that use it, and ``all``, accept it."""
    monkeypatch.setattr(train_options, "backbone_weights_error", lambda *args: None)  # "x" is no weights file
    file = tmp_path / "f.pt"
    file.write_bytes(b"x")
    given = [str(file) if a == "FILE" else a for a in _NOT_DEFAULT[name]]
    parser = train_options.build_parser()
    assert getattr(parser.parse_args(given), name) != parser.get_default(name)
    assert sorted(_USED_BY) == sorted(train_options.STAGE_ONLY_OPTIONS)  # a new option is written out too
    users = _USED_BY[name]
    for stage in (*train_options.STAGES, "all"):
        argv = ["--stage", stage, *given]
        if stage == "joint":
            argv.append("--from-scratch")
        if stage == "all" or stage in users:
            train_options.check_args(parser, parser.parse_args(argv), argv)
            continue
        with pytest.raises(SystemExit) as info:
            train_options.check_args(parser, parser.parse_args(argv), argv)
        err = capsys.readouterr().err
        assert info.value.code == 2, (stage, err)
        assert f"error: {' '.join(given)} does not apply to --stage {stage} (it is an option of the " in err
        assert " and ".join(users) + (" stages)" if len(users) > 1 else " stage)") in err
        if "_lr" in name or name == "lr":
            assert f"the learning rates of --stage {stage} are {_OWN_LEARNING_RATES[stage]}\n" in err


def test_stage_all_keeps_the_options_of_spixel_loss_without_the_joint_stages_loss(tmp_path) -> None:
    """``--stage all --spixel-loss-weight 0 --pos-weight 0.01``: the spixel stage trains on spixel_loss with
    that position weight, so the joint stage's lack of the loss does not make the option useless (only
    ``--stage joint`` alone refuses it)."""
    parser = train_options.build_parser()
    for given in (["--pos-weight", "0.01"], ["--recompute-loss"]):
        argv = ["--output-dir", str(tmp_path), "--stage", "all", "--spixel-loss-weight", "0", *given]
        train_options.check_args(parser, parser.parse_args(argv), argv)  # accepted


def test_a_file_where_the_stage_folder_goes_is_refused_up_front(tmp_path, capsys) -> None:
    """``<output-dir>/<stage>`` is what a stage writes to: a file there is refused by check_args (exit status
    2, naming it) though ``--output-dir`` itself is a usable folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "seg").write_text("not a folder\n")
    argv = ["--output-dir", str(out), "--stage", "seg"]
    parser = train_options.build_parser()
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args(argv), argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "error: --output-dir: " in err and str(out / "seg") in err, err


def test_the_stage_only_options_are_those_the_resume_rules_give_to_some_stages() -> None:
    """Every optimization option recorded for only some stages (``resume.STAGE_OPTIONS``) is in
    ``STAGE_ONLY_OPTIONS``, with the same stages: a new such option cannot be silently ignored elsewhere."""
    from examples.voc_joint.resume import STAGE_OPTIONS

    users: dict[str, set[str]] = {}
    for stage, groups in STAGE_OPTIONS.items():
        for name in (*groups["fixed"], *groups["train"]):
            users.setdefault(name, set()).add(stage)
    trained = {n for groups in STAGE_OPTIONS.values() for n in groups["train"]}
    partial = {n for n in trained if users[n] != set(train_options.STAGES)}
    assert partial and partial <= set(train_options.STAGE_ONLY_OPTIONS)
    for name, stages in train_options.STAGE_ONLY_OPTIONS.items():
        if name in users:
            assert users[name] == set(stages), name


def test_an_option_given_with_its_default_value_counts_as_given(capsys) -> None:
    """``--stage seg --lr 1e-06`` (the joint stage's default) is as ignored as any other ``--lr``: the
    command line tells which options were given, not a comparison with the defaults."""
    parser = train_options.build_parser()
    argv = ["--stage", "seg", "--lr", str(parser.get_default("lr"))]
    with pytest.raises(SystemExit):
        train_options.check_args(parser, parser.parse_args(argv), argv)
    assert "--lr 1e-06 does not apply to --stage seg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main([*argv, "--output-dir", "/nonexistent/never-created"])
    assert "--lr 1e-06 does not apply to --stage seg" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, error",
    [
        (
            ["--stage", "spixel", "--momentum", "0.5"],
            "--momentum 0.5 applies to --optimizer sgd, which no stage",
        ),
        (
            ["--stage", "all", "--optimizer", "adam", "--momentum", "0.5"],
            "(seg: adam, spixel: adam, joint: adam)",
        ),
        (
            ["--stage", "seg", "--schedule", "fixed", "--poly-power", "2"],
            "--poly-power 2.0 applies to --schedule",
        ),
        (["--stage", "spixel", "--poly-power", "2"], "(spixel: fixed): drop it, or give --schedule poly"),
        (["--stage", "spixel", "--optimizer", "sgd", "--momentum", "0.5"], None),
        (["--stage", "all", "--momentum", "0.5", "--poly-power", "2"], None),  # seg uses both
        (["--stage", "joint", "--from-scratch", "--schedule", "poly", "--poly-power", "2"], None),
    ],
)
def test_optimizer_options_need_an_optimizer_that_reads_them(argv, error, capsys) -> None:
    """``--momentum`` is SGD's and ``--poly-power`` the poly schedule's: given to a run where no stage uses
    them (the spixel stage's Adam and fixed schedule, or ``--optimizer adam``), they were silently dropped."""
    parser = train_options.build_parser()
    if error is None:
        train_options.check_args(parser, parser.parse_args(argv), argv)
        return
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args(argv), argv)
    assert info.value.code == 2 and error in capsys.readouterr().err


@pytest.mark.parametrize("given", [["--eval-crop", "64"], ["--val-split", "train"]])
def test_evaluation_options_need_eval(given, capsys) -> None:
    parser = train_options.build_parser()
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args(["--stage", "seg", *given]))
    assert info.value.code == 2
    assert f"error: {' '.join(given)} only applies with --eval" in capsys.readouterr().err
    train_options.check_args(parser, parser.parse_args(["--stage", "seg", "--eval", *given]))


def test_joint_refuses_backbone_weights_that_its_checkpoint_would_replace(
    tmp_path, capsys, monkeypatch
) -> None:
    """--backbone-weights initializes a new DeepLabV3+; the joint stage's --seg-checkpoint brings its own."""
    monkeypatch.setattr(train_options, "backbone_weights_error", lambda *args: None)  # "w" is no weights file
    weights, seg = tmp_path / "resnet.pt", tmp_path / "seg.pt"
    weights.write_bytes(b"w")
    seg.write_bytes(b"c")
    parser = train_options.build_parser()
    joint = ["--stage", "joint", "--seg-checkpoint", str(seg), "--spixel-checkpoint", str(seg)]
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args([*joint, "--backbone-weights", str(weights)]))
    assert info.value.code == 2
    assert "--backbone-weights with --seg-checkpoint: " in capsys.readouterr().err
    for ok in (["--stage", "all"], ["--stage", "seg"], ["--stage", "joint", "--from-scratch"]):
        train_options.check_args(
            parser, parser.parse_args([*ok, "--backbone-weights", str(weights)])
        )  # used there


def test_a_run_that_failed_before_its_first_step_does_not_block_the_next(tiny_voc, tmp_path) -> None:
    """A data error before step 1 leaves a header-only ``log.csv``: nothing to resume, so the same command
    runs again once the data is fixed (it was refused: "holds a run (log.csv); continue it with --resume")."""
    stems = (tiny_voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    root = _damaged_copy(tiny_voc, tmp_path / "data", stems[0])
    for stem in stems[1:]:  # no readable training image: the first batch fails, whatever the order
        (root / "JPEGImages" / f"{stem}.jpg").write_bytes(b"not a JPEG")
    argv = train_args(root, tmp_path / "out", "--stage", "seg", "--max-steps", "1", "--threads", "1")
    argv += ["--no-check-files"]  # the header pass would refuse the data before the stage folder exists
    with pytest.raises(train.DataError, match="cannot read image file"):  # in the first batch
        train.main(argv)
    log = tmp_path / "out" / "seg" / "log.csv"
    assert not (tmp_path / "out" / "seg" / "checkpoint.pt").exists()
    assert len(log.read_text().splitlines()) == 1  # the header
    for stem in stems:
        shutil.copy(tiny_voc / "JPEGImages" / f"{stem}.jpg", root / "JPEGImages")
    ckpt = train.main(argv)["seg"]
    assert load_checkpoint(ckpt)["step"] == 1 and [r["step"] for r in _rows(ckpt.parent / "log.csv")] == ["1"]


def test_only_a_log_with_rows_makes_a_folder_hold_a_run(tmp_path) -> None:
    from examples.voc_joint.resume import check_new_run

    new = argparse.Namespace(overwrite=False)
    folder = tmp_path / "seg"
    folder.mkdir()
    header = "stage,epoch,step,loss,ce,spixel,lr,images_per_s,elapsed_s\n"
    (folder / "log.csv").write_text(header)
    check_new_run(folder, new)  # header only: no step was logged
    (folder / "tensorboard").mkdir()
    check_new_run(folder, new)  # and the event folder of --tensorboard
    (folder / "log.csv").write_text("")
    check_new_run(folder, new)  # empty
    (folder / "log.csv").write_text(header + "seg,0,1,0.5,0.5,,0.01,3.0,1.0\n")
    with pytest.raises(train.UsageError, match=r"holds a run \(log\.csv, tensorboard\)"):
        check_new_run(folder, new)
    (folder / "log.csv").write_text(header)
    (folder / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(train.UsageError, match=r"holds a run \(checkpoint\.pt, log\.csv, tensorboard\)"):
        check_new_run(folder, new)


@pytest.mark.parametrize("name", ["train", "demo", "ablation"])
def test_help_states_each_default_once(name: str, monkeypatch) -> None:
    """No "(default: None)" and no option whose help says its default twice (argparse's "(default: X)" after
    a help text that already states it)."""
    import re

    monkeypatch.setenv("COLUMNS", "2000")  # one line per option
    text = _documented_parser(name).format_help()
    assert "(default: None)" not in text
    entries = re.split(r"\n  (?=-)", text)
    twice = [e.split()[0] for e in entries if len(re.findall(r"\bdefault\b", e, flags=re.IGNORECASE)) > 1]
    assert not twice, twice


# ---------------------------------------------- --overwrite, --backbone-weights, --stage all and its sources
def _seg_run(root: Path, out: Path, *extra: str) -> Path:
    """A finished one-step seg run in ``out``; its checkpoint."""
    return train.main(train_args(root, out, "--stage", "seg", "--epochs", "1", "--max-steps", "1", *extra))[
        "seg"
    ]


@pytest.mark.parametrize(
    "bad",
    [
        ["--train-split", "tran"],
        ["--eval", "--val-split", "vall"],
        ["--data-root", "."],  # no VOC layout
    ],
)
def test_overwrite_keeps_the_old_run_when_the_data_is_wrong(tiny_voc, tmp_path, bad) -> None:
    """A typo in a split or the data folder with --overwrite failed after the old run was deleted (only
    ``.lock`` was left); the data is now checked first: the old run stays, byte for byte."""
    ckpt = _seg_run(tiny_voc, tmp_path)
    before = {p.name: p.read_bytes() for p in ckpt.parent.iterdir() if p.is_file()}
    argv = train_args(
        tiny_voc, tmp_path, "--stage", "seg", "--epochs", "1", "--max-steps", "1", "--overwrite"
    )
    argv += bad
    with pytest.raises((FileNotFoundError, train.DataError)):
        train.main(argv)
    assert {p.name: p.read_bytes() for p in ckpt.parent.iterdir() if p.is_file()} == before


def test_a_command_refused_before_it_starts_creates_no_output_folder(tiny_voc, tmp_path, capsys) -> None:
    """Data errors and wrong checkpoints are found before the stage folders are locked (created)."""
    with pytest.raises(FileNotFoundError, match="tran"):
        train.main(train_args(tiny_voc, tmp_path / "a", "--stage", "all", "--train-split", "tran"))
    seg, _ = untrained_checkpoints(tmp_path / "pre")
    joint = ["--stage", "joint", "--seg-checkpoint", str(seg), "--spixel-checkpoint", str(seg)]
    with pytest.raises(SystemExit) as info:  # a seg checkpoint as the spixel one
        train.main(train_args(tiny_voc, tmp_path / "b", *joint, "--fusion-hidden", "42"))
    assert info.value.code == 2 and "--spixel-checkpoint: " in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_batch_larger_than_the_training_split_is_refused_before_the_folder_is_made(
    tiny_voc, tmp_path, capsys
) -> None:
    """Found by fuzzing: the check ran after the stage folder was locked, leaving ``<stage>/.lock`` behind."""
    with pytest.raises(SystemExit) as info:
        train.main(train_args(tiny_voc, tmp_path / "a", "--stage", "seg", "--batch-size", "1000"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "fewer than one batch (--batch-size 1000 x 1 process)" in err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "size, world_size, counts",
    [
        (1, 1, "has 1 image, fewer than one batch (--batch-size 2 x 1 process)"),
        (3, 2, "has 3 images, fewer than one batch (--batch-size 2 x 2 processes)"),
    ],
)
def test_the_one_batch_check_counts_images_and_processes_in_words(size, world_size, counts) -> None:
    """``1 image`` and ``1 process``, not ``1 images`` and ``1 processes``."""
    from examples.voc_joint.cli import UsageError
    from examples.voc_joint.distributed import DistInfo

    args = argparse.Namespace(batch_size=2, train_split="train")
    with pytest.raises(UsageError) as info:
        train_data._check_batches(size, args, DistInfo(world_size=world_size), Path("voc"))
    assert str(info.value) == f"training split 'train' of voc {counts}", info.value


@pytest.mark.parametrize("option", ["--seg-lr", "--head-lr-mult", "--weight-decay", "--poly-power"])
def test_factors_beyond_float32_are_refused_when_parsed(option, capsys) -> None:
    """Found by fuzzing: ``--seg-lr 1e308`` parsed, then the optimizer's step raised a RuntimeError (float32
    overflow) after the run had started."""
    with pytest.raises(SystemExit) as info:
        train_options.build_parser().parse_args(["--stage", "seg", option, "1e308"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {option}: must be a finite number >= 0 and <= 1e+06" in err


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torchvision

    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def test_bad_backbone_weights_are_refused_before_anything_is_touched(
    tiny_voc, tmp_path, resnet18_weights, capsys
) -> None:
    """Missing keys, another ResNet's weights, a damaged file and pickled objects: exit status 2 naming
    --backbone-weights (it was a traceback and status 1, after the folder was locked and, with --overwrite,
    after the old run was deleted); a damaged file is called damaged, not "pickled objects"."""
    import argparse

    state = torch.load(resnet18_weights, weights_only=True)
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}, missing)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(resnet18_weights.read_bytes()[:50_000])
    pickled = tmp_path / "pickled.pth"
    torch.save({**state, "args": argparse.Namespace(lr=1)}, pickled)
    whole = tmp_path / "deeplab.pth"  # a whole DeepLabV3+ in the public code's layout: not a ResNet's weights
    deeplab = DeepLabV3Plus(21, "resnet18", aspp_channels=8).state_dict()
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in deeplab.items()}}, whole)
    joint = tmp_path / "joint.pth"  # this pipeline's joint checkpoint: its DeepLabV3+ under "deeplab."
    torch.save({"model": {f"deeplab.{k}": v for k, v in deeplab.items()}}, joint)
    ckpt = _seg_run(tiny_voc, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in ckpt.parent.iterdir()}
    cases = [
        (missing, "resnet18", r"do not match the backbone: missing keys \['layer1\.0\.conv1\.weight'\]"),
        (
            resnet18_weights,
            "resnet34",
            r"missing keys .*layer1\.2\..*--backbone resnet34: weights of another",
        ),
        (
            whole,
            "resnet18",
            r"unexpected keys \['aspp\..*'aspp\.[^']*' is a segmentation head's key: a whole segmentation "
            r"model's checkpoint\? backbone weights are an ImageNet ResNet's state dict$",
        ),
        (
            joint,
            "resnet18",
            r"'deeplab\.aspp\.[^']*' is a segmentation head's key: a whole segmentation model's checkpoint\?",
        ),
        (truncated, "resnet18", r"refusing backbone weights file .*truncated\.pth: the file is damaged"),
        (
            pickled,
            "resnet18",
            r"holds pickled Python objects \(first: argparse\.Namespace\).*torch\.save its state dict",
        ),
    ]
    for path, backbone, message in cases:
        for out, extra in ((tmp_path / "run", ["--overwrite"]), (tmp_path / "new", [])):
            argv = train_args(tiny_voc, out, "--stage", "seg", "--max-steps", "1", *extra)
            argv += ["--backbone", backbone, "--backbone-weights", str(path)]
            with pytest.raises(SystemExit) as info:
                train.main(argv)
            err = capsys.readouterr().err
            assert info.value.code == 2 and "error: --backbone-weights: " in err, err
            assert re.search(message, err, re.MULTILINE), err
            assert "weights_only=False" not in err
    assert {p.name: p.read_bytes() for p in ckpt.parent.iterdir()} == before  # no lock taken, nothing deleted
    assert not (tmp_path / "new").exists()
    # good weights pass the check (and train)
    argv = train_args(tiny_voc, tmp_path / "good", "--stage", "seg", "--max-steps", "1", "--epochs", "1")
    assert train.main([*argv, "--backbone-weights", str(resnet18_weights)])["seg"].is_file()


def test_resume_without_a_checkpoint_says_it_starts_a_new_run(tiny_voc, tmp_path, capsys) -> None:
    ckpt = train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1", "--resume"))["seg"]
    out = capsys.readouterr().out
    assert f"[seg] --resume: no checkpoint in {tmp_path / 'seg'}; starting a new run\n" in out, out
    assert load_checkpoint(ckpt)["step"] == 1


@pytest.mark.parametrize("kind", ["folder", "dangling link"])
def test_resume_refuses_a_checkpoint_path_that_is_not_a_file(tiny_voc, tmp_path, capsys, kind) -> None:
    """``--resume`` took a ``checkpoint.pt`` that is no file (a link to a checkpoint on a disk that is not
    mounted, a folder) for no checkpoint: "starting a new run", which trained from step 0 and then replaced
    the link with its own checkpoint (or failed to write onto the folder, its epoch lost). It is refused now,
    before anything runs."""
    ckpt = tmp_path / "seg" / "checkpoint.pt"
    ckpt.parent.mkdir()
    if kind == "folder":
        ckpt.mkdir()
    else:
        ckpt.symlink_to(tmp_path / "unmounted" / "checkpoint.pt")
    with pytest.raises(SystemExit) as info:
        train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1", "--resume"))
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    expected = "a folder" if kind == "folder" else "a symbolic link to "
    assert f"error: --resume: {ckpt} is {expected}" in captured.err, captured.err
    assert "not a checkpoint" in captured.err and "starting a new run" not in captured.out
    assert not (tmp_path / "seg" / "log.csv").exists()
    assert ckpt.is_dir() if kind == "folder" else ckpt.is_symlink()


def test_resume_of_a_checkpoint_removed_after_the_options_were_read_is_refused(tiny_voc, tmp_path) -> None:
    """``--resume PATH`` is checked when the options are read and again when the stage starts: a file gone in
    between is refused, not taken for "no checkpoint" (which started a new run from step 0)."""
    gone = tmp_path / "gone.pt"
    gone.write_bytes(b"")
    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1", "--resume", str(gone))
    args = train_options.build_parser().parse_args(argv)
    gone.unlink()
    with pytest.raises(train.UsageError, match=re.escape(f"--resume checkpoint not found: {gone}")):
        train.run_stage("seg", args)
    assert not (tmp_path / "seg" / "checkpoint.pt").exists() and not (tmp_path / "seg" / "log.csv").exists()


def test_resume_without_a_checkpoint_purges_the_tensorboard_events_of_the_lost_run(
    tiny_voc, tmp_path, monkeypatch
) -> None:
    """A run killed before its first checkpoint (SIGKILL, a crash in the first epoch) leaves log.csv rows and
    TensorBoard events; the refused new run's message says to continue it with --resume, which starts at
    step 0: log.csv drops every row, and the events were kept (purge_step None), so TensorBoard showed each
    step twice. They are purged from step 1 now, as after any resume."""
    purges = _fake_tensorboard(monkeypatch)
    folder = tmp_path / "seg"
    folder.mkdir()
    (folder / "log.csv").write_text("stage,epoch,step,loss\nseg,1,1,3.0\nseg,1,2,2.5\n")
    (folder / "tensorboard").mkdir()  # the lost run's events, steps 1 and 2
    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--max-steps", "1", "--tensorboard")
    with pytest.raises(train.UsageError, match=r"holds a run \(log\.csv, tensorboard\); continue it with"):
        train.run_stage("seg", train_options.build_parser().parse_args(argv))
    train.main([*argv, "--resume"])
    assert [r["step"] for r in _rows(folder / "log.csv")] == ["1"]
    assert purges == [1]


_ALL = ("--stage", "all", "--epochs", "1", "--max-steps", "1")


def test_stage_all_overwrite_clears_every_stage_before_the_first(tiny_voc, tmp_path, monkeypatch) -> None:
    """``--stage all --overwrite`` stopped in its seg stage, then ``--resume``: the old run's spixel and
    joint checkpoints were skipped as finished, so the joint model came from a seg model that was gone. Every
    stage folder is now cleared before the first stage starts."""
    first = train.main(train_args(tiny_voc, tmp_path, *_ALL))
    old_joint = load_checkpoint(first["joint"])
    monkeypatch.setenv("TRANSINIT_FAULT", "crash@step:1")
    with pytest.raises(RuntimeError, match="injected crash"):
        train.main(train_args(tiny_voc, tmp_path, *_ALL, "--overwrite", "--seg-lr", "0.001"))
    assert not [p.name for s in ("spixel", "joint") for p in (tmp_path / s).iterdir() if p.name != ".lock"]
    monkeypatch.delenv("TRANSINIT_FAULT")
    out = train.main(train_args(tiny_voc, tmp_path, *_ALL, "--resume", "--seg-lr", "0.001"))
    joint = load_checkpoint(out["joint"])
    seg = load_checkpoint(out["seg"])
    assert joint["config"]["sources"]["seg_checkpoint"]["sha256"] == payload_sha256(seg)
    assert not torch.equal(
        joint["model"]["deeplab.classifier.weight"], old_joint["model"]["deeplab.classifier.weight"]
    )


def test_stage_all_overwrite_may_change_the_model_options(tiny_voc, tmp_path) -> None:
    """``--stage all --overwrite`` starts a new pipeline: the old run's seg / spixel checkpoints, about to be
    deleted, are not the joint stage's sources, so a model option that differs from them is no conflict (it
    was refused as contradicting them)."""
    train.main(train_args(tiny_voc, tmp_path, *_ALL))
    out = train.main(train_args(tiny_voc, tmp_path, *_ALL, "--overwrite", "--aspp-channels", "8"))
    for stage in ("seg", "joint"):
        assert load_checkpoint(out[stage])["config"]["model"]["deeplab"]["aspp_channels"] == 8


def test_joint_run_whose_source_checkpoint_changed_is_not_resumed_or_skipped(
    tiny_voc, tmp_path, capsys
) -> None:
    """The joint checkpoint records the SHA-256 of its seg / spixel checkpoints; a resume that would keep a
    joint run whose source changed (or is gone) is refused, naming the stage, the source and the change."""
    out = train.main(train_args(tiny_voc, tmp_path, *_ALL))
    joint = load_checkpoint(out["joint"])
    sources = joint["config"]["sources"]
    for stage in ("seg", "spixel"):
        assert sources[f"{stage}_checkpoint"] == {
            "path": str(out[stage]),
            "sha256": payload_sha256(load_checkpoint(out[stage])),
        }
    joint_bytes = out["joint"].read_bytes()
    # a new seg stage replaces the seg checkpoint
    seg_argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "1", "--max-steps", "1")
    train.main([*seg_argv, "--overwrite", "--seg-lr", "0.001"])
    capsys.readouterr()
    standalone = train_args(
        tiny_voc, tmp_path, "--stage", "joint", "--epochs", "1", "--max-steps", "2", "--resume",
        "--seg-checkpoint", str(out["seg"]), "--spixel-checkpoint", str(out["spixel"]),
    )  # fmt: skip
    for argv in (train_args(tiny_voc, tmp_path, *_ALL, "--resume", "--seg-lr", "0.001"), standalone):
        with pytest.raises(SystemExit) as info:
            train.main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2, err
        assert (
            f"joint stage: the joint run in {out['joint']} was fine-tuned from --seg-checkpoint {out['seg']}"
            in err
        )
        assert f"(SHA-256 {sources['seg_checkpoint']['sha256'][:16]}), which has changed since" in err, err
    assert out["joint"].read_bytes() == joint_bytes
    # the seg checkpoint gone: refused as well, before any stage trains
    shutil.rmtree(tmp_path / "seg")
    with pytest.raises(SystemExit) as info:
        train.main(train_args(tiny_voc, tmp_path, *_ALL, "--resume"))
    assert info.value.code == 2 and "which no longer exists" in capsys.readouterr().err
    assert not (tmp_path / "seg" / "checkpoint.pt").exists() and out["joint"].read_bytes() == joint_bytes


def test_joint_resume_from_another_source_path_is_an_option_change(tiny_voc, tmp_path, capsys) -> None:
    """A resume naming another spixel checkpoint file (other weights; the recorded one intact) is refused as
    a changed option, with both paths; the source check does not claim that the recorded file changed (it
    said so, naming the new path as the one the run came from)."""
    out = train.main(train_args(tiny_voc, tmp_path, *_ALL))
    other = load_checkpoint(out["spixel"])
    name = next(iter(other["model"]))
    other["model"][name] = other["model"][name] + 1.0
    copy = save_checkpoint(tmp_path / "other" / "spixel.pt", other)
    capsys.readouterr()
    argv = train_args(
        tiny_voc, tmp_path, "--stage", "joint", "--epochs", "1", "--max-steps", "2", "--resume",
        "--seg-checkpoint", str(out["seg"]), "--spixel-checkpoint", str(copy),
    )  # fmt: skip
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and "has changed since" not in err, err
    assert "--spixel-checkpoint" in err and str(copy) in err and str(out["spixel"]) in err, err


def test_stage_all_refuses_up_front_to_train_a_source_of_a_joint_run_further(
    tiny_voc, tmp_path, capsys
) -> None:
    train.main(train_args(tiny_voc, tmp_path, *_ALL))
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # seg and spixel would go on to step 2, under the joint run
        train.main(
            train_args(tiny_voc, tmp_path, "--stage", "all", "--epochs", "1", "--max-steps", "2", "--resume")
        )
    err = capsys.readouterr().err
    assert info.value.code == 2 and "first trains the seg and spixel stage" in err, err
    assert load_checkpoint(tmp_path / "seg" / "checkpoint.pt")["step"] == 1


def test_a_training_split_holding_validation_images_is_refused(tiny_voc, tmp_path, capsys) -> None:
    """SBD's train and val sets hold many VOC 2012 val images: a trainaug list made as SBD train + val +
    VOC train without taking VOC val out trains on the images it is scored on. A training split that shares
    images with VOC's val list or with --val-split is refused before anything is written, naming the images
    and the lists; --allow-val-overlap trains on them on purpose (a trainval model for the test server)."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    lists = root / "ImageSets"
    val = (lists / "Segmentation" / "val.txt").read_text().split()
    aug = (lists / "SegmentationAug" / "train.txt").read_text().split()
    (lists / "SegmentationAug" / "leaky.txt").write_text("\n".join([*aug, val[1]]) + "\n")
    seg = ["--stage", "seg", "--epochs", "1", "--max-steps", "1"]
    leaky = train_args(root, tmp_path / "a", *seg, "--sbd", "--train-split", "leaky")
    (lists / "SegmentationAug" / "val.txt").write_text(val[0] + "\n")
    with pytest.raises(SystemExit) as info:  # VOC's val list counts even when the SBD val list misses one
        train.main(leaky)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "1 image of the validation lists" in err and repr(val[1]) in err, err
    assert str(lists / "Segmentation" / "val.txt") in err and "--allow-val-overlap" in err, err
    assert not (tmp_path / "a").exists()
    # VOC's trainval holds every val image
    with pytest.raises(SystemExit) as info:
        train.main(train_args(root, tmp_path / "b", *seg, "--train-split", "trainval"))
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"{len(val)} images of the validation lists" in err, err
    # the standard lists pass, and so does an overlap asked for
    assert train.main(train_args(root, tmp_path / "c", *seg, "--sbd"))["seg"].is_file()
    assert train.main([*leaky, "--allow-val-overlap"])["seg"].is_file()


def test_listed_files_that_do_not_exist_are_found_before_the_run_starts(tiny_voc, tmp_path) -> None:
    """A listed image or mask that is missing (an incomplete extraction, a list of another release) was only
    found when the sampler reached it, after the run had started (and at the same place on every resume);
    every listed file of the training and --eval splits is now checked first, and all are named at once."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    train_names = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    val_names = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    (root / "SegmentationClass" / f"{train_names[2]}.png").unlink()
    image = root / "JPEGImages" / f"{val_names[0]}.jpg"
    with Image.open(image) as im:  # own PNG image: only <name>.jpg is read; named as the near miss
        im.save(image.with_suffix(".png"))
    image.unlink()
    seg = ["--stage", "seg", "--epochs", "1", "--max-steps", "1", "--eval"]
    with pytest.raises(FileNotFoundError) as info:
        train.main(train_args(root, tmp_path / "a", *seg))
    text = str(info.value)
    assert "2 files listed" in text, text
    assert f"{train_names[2]}.png" in text and f"{val_names[0]}.jpg" in text, text
    assert f"{val_names[0]}.jpg (found '{val_names[0]}.png' in its folder: images are read as" in text, text
    assert not (tmp_path / "a").exists()


def test_the_missing_file_list_counts_the_files_it_leaves_out(tiny_voc, tmp_path) -> None:
    """The list of missing files showed 10, then '...' without a count; it shows the first 20 and counts the
    rest, as the header pass does (``headers.shown_problems``)."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    train_list = root / "ImageSets" / "Segmentation" / "train.txt"
    train_list.write_text(train_list.read_text() + "".join(f"gone_{i:02d}\n" for i in range(12)))
    with pytest.raises(FileNotFoundError) as info:
        train.main(train_args(root, tmp_path / "a", "--stage", "seg", "--max-steps", "1"))
    lines = str(info.value).splitlines()
    assert lines[0].startswith("24 files listed in ") and len(lines) == 22, lines
    assert lines[1].endswith("gone_00.jpg") and lines[-1] == "  ... and 4 more", lines


def test_one_missing_file_is_counted_in_the_singular(tiny_voc, tmp_path) -> None:
    """One missing file was reported as "1 files ... do not exist"; with --eval the validation list is named
    by its option."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    name = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    (root / "JPEGImages" / f"{name}.jpg").unlink()
    with pytest.raises(FileNotFoundError) as info:
        train.main(train_args(root, tmp_path / "a", "--stage", "seg", "--max-steps", "1", "--eval"))
    first = str(info.value).splitlines()[0]
    assert first.startswith("1 file listed in "), first
    assert first.endswith(
        " or in the --val-split 'val' list does not exist (an incomplete extraction, or a list "
        "of another data set?):"
    ), first


def test_the_near_misses_of_the_shown_missing_files_only_are_looked_for(tiny_voc, tmp_path, monkeypatch):
    """The near miss of every missing file was looked for (a listing of its folder: 30 ms in a folder of
    VOC's 17125 JPEGs), though 20 are shown: a trainaug list of another data set (21164 files) would take
    about 10 minutes to be refused."""
    root = tmp_path / "voc"
    shutil.copytree(tiny_voc, root)
    train_list = root / "ImageSets" / "Segmentation" / "train.txt"
    train_list.write_text(train_list.read_text() + "".join(f"gone_{i:02d}\n" for i in range(30)))
    hint, looked_for = train_data.missing_file_hint, []
    monkeypatch.setattr(train_data, "missing_file_hint", lambda p: looked_for.append(p) or hint(p))
    with pytest.raises(FileNotFoundError) as info:
        train.main(train_args(root, tmp_path / "a", "--stage", "seg", "--max-steps", "1"))
    lines = str(info.value).splitlines()
    assert lines[0].startswith("60 files listed in ") and lines[-1] == "  ... and 40 more", lines
    assert len(looked_for) == 20, looked_for


def test_a_joint_stage_from_a_network_trained_on_validation_images_is_refused(
    tiny_voc, tmp_path, capsys
) -> None:
    """The refusal above held for the stage's own split only: a joint stage on 'train' from a DeepLabV3+
    pretrained on 'trainval' (--allow-val-overlap) ran without the flag, and its val scores counted images its
    network was trained on. Its --seg-checkpoint's recorded training split is checked too."""
    seg = ["--epochs", "1", "--max-steps", "1"]
    assert train.main(
        train_args(
            tiny_voc,
            tmp_path / "tv",
            "--stage",
            "seg",
            *seg,
            "--train-split",
            "trainval",
            "--allow-val-overlap",
        )
    )["seg"].is_file()
    assert train.main(train_args(tiny_voc, tmp_path / "ok", "--stage", "spixel", *seg))["spixel"].is_file()
    sources = ["--seg-checkpoint", str(tmp_path / "tv" / "seg" / "checkpoint.pt")]
    sources += ["--spixel-checkpoint", str(tmp_path / "ok" / "spixel" / "checkpoint.pt")]
    joint = train_args(tiny_voc, tmp_path / "joint", "--stage", "joint", *seg, *sources)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        train.main(joint)
    err = capsys.readouterr().err
    val = (tiny_voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert (
        info.value.code == 2 and f"--seg-checkpoint {sources[1]} was trained on {len(val)} images" in err
    ), err
    assert (
        "of the validation lists" in err
        and "--allow-val-overlap" in err
        and not (tmp_path / "joint").exists()
    )
    assert train.main([*joint, "--allow-val-overlap"])["joint"].is_file()


def test_eval_of_a_run_on_validation_images_says_it_is_not_held_out(tiny_voc, tmp_path, capsys) -> None:
    """--allow-val-overlap --eval scored val images the run trained on with a plain '[eval] ... mIoU' line
    and an eval.json without the count that evaluate.py's metrics.json records: both say it now."""
    val = (tiny_voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    seg = ["--stage", "seg", "--epochs", "1", "--max-steps", "1", "--eval"]
    out = train.main(
        train_args(tiny_voc, tmp_path / "tv", *seg, "--train-split", "trainval", "--allow-val-overlap")
    )
    res = json.loads((out["seg"].parent / "eval.json").read_text())
    assert res["trained_on_evaluated_images"] == len(val)
    assert (
        f"(trained on {len(val)} of the {len(val)} images evaluated: not a held-out score)"
        in capsys.readouterr().out
    )
    out = train.main(train_args(tiny_voc, tmp_path / "held_out", *seg))
    assert json.loads((out["seg"].parent / "eval.json").read_text())["trained_on_evaluated_images"] == 0
    assert "not a held-out score" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        # found by fuzzing the command lines: each of these parsed, then failed with a traceback once the run
        # had started (torch's size arithmetic, torch.set_num_threads, the random-scale resize)
        ("train", ["--threads", "2147483648"], "--threads: must be an integer in [1, 1024], got 2147483648"),
        ("train", ["--crop-size", "99999999999999999999"], "--crop-size: must be an integer in [1, 16384]"),
        ("train", ["--eval", "--eval-crop", "20000"], "--eval-crop: must be an integer in [1, 16384]"),
        ("train", ["--scale-max", "1e308"], "--scale-max: must be a finite number > 0 and <= 16, got 1e308"),
        ("demo", ["--threads", "2147483648"], "--threads: must be an integer in [1, 1024], got 2147483648"),
        ("demo", ["--crop-size", "20000"], "--crop-size: must be an integer in [1, 16384], got 20000"),
        ("demo", ["--joint-lr", "1e308"], "--joint-lr: must be a finite number >= 0 and <= 1e+06, got 1e308"),
        ("ablation", ["--fusion-lr", "1e39"], "--fusion-lr: must be a finite number >= 0 and <= 1e+06"),
        ("ablation", ["--threads", "2147483648"], "--threads: must be an integer in [1, 1024]"),
        ("ablation", ["--crop-size", "20000"], "--crop-size: must be an integer in [1, 16384], got 20000"),
        ("evaluate", ["--crop-size", "20000"], "--crop-size: must be an integer in [1, 16384], got 20000"),
        ("evaluate", ["--pad-to-multiple", "20000"], "--pad-to-multiple: must be an integer in [1, 16384]"),
        ("evaluate", ["--boundary-widths", "1", "20000"], "--boundary-widths: must be an integer in [1,"),
        ("synthetic", ["--height", "20000"], "--height: must be an integer in [16, 16384], got 20000"),
        ("synthetic", ["--width", "20000"], "--width: must be an integer in [16, 16384], got 20000"),
        ("synthetic", ["--band-radius", "20000"], "--band-radius: must be an integer in [0, 16384]"),
        # an empty value (an unset shell variable) is refused, not taken as the current folder / the default
        ("train", ["--output-dir", ""], "--output-dir: expected a path, got ''"),
        ("train", ["--data-root", ""], "--data-root: expected a folder, got ''"),
        ("train", ["--device", ""], "--device: expected cpu, cuda or cuda:N, got ''"),
        ("demo", ["--output-dir", ""], "--output-dir: expected a path, got ''"),
        ("ablation", ["--output-dir", ""], "--output-dir: expected a path, got ''"),
        ("ablation", ["--seg-checkpoint", ""], "--seg-checkpoint: expected a file, got ''"),
        ("evaluate", ["--output-dir", ""], "--output-dir: expected a path, got ''"),
        ("synthetic", ["--output-dir", ""], "--output-dir: expected a path, got ''"),
    ],
)
def test_values_a_run_cannot_use_are_refused_when_parsed(script, argv, message, capsys) -> None:
    """One argparse error naming the option, the range and the value (exit status 2), before anything runs."""
    import importlib

    module = importlib.import_module(f"examples.voc_joint.{script}")
    required = {"evaluate": ["--checkpoint", __file__], "synthetic": ["--output-dir", "unused"]}.get(
        script, []
    )
    with pytest.raises(SystemExit) as exc:
        module.build_parser().parse_args([*required, *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {message}" in err and "Traceback" not in err


def test_the_largest_accepted_sizes_and_thread_count_parse() -> None:
    from examples.voc_joint.cli import SCALE_MAX, SIDE_MAX, THREADS_MAX

    args = train_options.build_parser().parse_args(
        ["--threads", str(THREADS_MAX), "--crop-size", str(SIDE_MAX), "--scale-max", str(SCALE_MAX)]
    )
    assert (args.threads, args.crop_size, args.scale_max) == (THREADS_MAX, SIDE_MAX, SCALE_MAX)


def test_log_rows_are_made_durable_before_each_checkpoint(tiny_voc, tmp_path, monkeypatch) -> None:
    """log.csv was flushed, never fsynced: after a power loss a durable checkpoint could stand for log rows
    that were gone. Now its fsync comes before each checkpoint's."""
    synced: list[str] = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("no /proc/self/fd to name a file descriptor's file")
    monkeypatch.setattr(os, "fsync", recording)
    train.main(train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "2"))
    files = [f for f in synced if f == "log.csv" or "checkpoint.pt" in f]  # (written as .checkpoint.pt.*.tmp)
    checkpoints = [i for i, f in enumerate(files) if f != "log.csv"]
    assert len(checkpoints) == 2, synced  # one per epoch
    assert all(i > 0 and files[i - 1] == "log.csv" for i in checkpoints), files


def _counting_hashes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the ``stage`` of every checkpoint that ``payload_sha256`` hashes, wherever it is called from."""
    from examples.voc_joint import checkpoint

    hashed: list[str] = []
    original = checkpoint.payload_sha256

    def counting(ckpt):
        hashed.append(ckpt.get("stage"))
        return original(ckpt)

    monkeypatch.setattr(checkpoint, "payload_sha256", counting)
    for module in (train, sources):
        if hasattr(module, "payload_sha256"):  # a copy imported by name
            monkeypatch.setattr(module, "payload_sha256", counting)
    return hashed


def test_the_joint_stage_hashes_each_source_checkpoint_once_when_reading_its_facts(
    tmp_path, monkeypatch
) -> None:
    """``_source_facts`` hashed each source checkpoint twice: ``load_checkpoint`` verified the recorded
    SHA-256, then ``payload_sha256`` hashed the same content again for the record (0.12 s per stage for
    ResNet-101's DeepLabV3+ on 1 thread). The verified hash is now the one recorded, computed once, and it
    is the file's hash."""
    seg, spixel = untrained_checkpoints(tmp_path)
    monkeypatch.setattr(sources, "_CACHE", {})
    hashed = _counting_hashes(monkeypatch)
    facts = [
        sources.source_facts(seg, "deeplab", "--seg-checkpoint"),
        sources.source_facts(spixel, "spixel", "--spixel-checkpoint"),
    ]
    assert hashed == ["seg", "spixel"]
    for (_config, sha), path in zip(facts, (seg, spixel), strict=True):
        raw = torch.load(path, weights_only=True)
        assert sha == raw["sha256"] == payload_sha256({k: v for k, v in raw.items() if k != "sha256"})


def test_a_corrupted_source_checkpoint_is_still_refused_with_a_single_hash(tmp_path, monkeypatch) -> None:
    """Hashing once kept the check: a source checkpoint whose content no longer matches its recorded SHA-256
    is refused, naming the option."""
    seg, _ = untrained_checkpoints(tmp_path)
    ckpt = torch.load(seg, weights_only=True)
    ckpt["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    torch.save(ckpt, seg)  # the old sha256 with other weights
    monkeypatch.setattr(sources, "_CACHE", {})
    with pytest.raises(CheckpointError, match=r"--seg-checkpoint: checkpoint .* is corrupt or was modified"):
        sources.source_facts(seg, "deeplab", "--seg-checkpoint")


def test_a_version_1_source_checkpoint_without_a_recorded_hash_is_hashed_once(tmp_path, monkeypatch) -> None:
    """A version-1 checkpoint records no SHA-256: its content is hashed, once, for the joint stage's
    record."""
    seg, _ = untrained_checkpoints(tmp_path)
    ckpt = torch.load(seg, weights_only=True)
    recorded = ckpt.pop("sha256")
    torch.save({**ckpt, "version": 1}, seg)
    monkeypatch.setattr(sources, "_CACHE", {})
    hashed = _counting_hashes(monkeypatch)
    _, sha = sources.source_facts(seg, "deeplab", "--seg-checkpoint")
    assert hashed == ["seg"]
    assert sha == recorded  # the content is that of the file written with a recorded hash


def test_the_source_checkpoint_cache_keeps_a_bounded_number_of_file_versions(tmp_path, monkeypatch) -> None:
    """The joint stage reads each source checkpoint once per file version (path, mtime, size) into a module
    cache that was never emptied: one entry more for every version a process read (a loop of pretrain +
    fine-tune rounds in one process, a checkpoint rewritten between rounds). It now keeps the newest few."""
    loads = []

    def fake_load(path, expect_stage=None):
        loads.append(Path(path))
        return {"config": {"model": {"deeplab": {"backbone": "resnet18"}}}}, "0" * 64

    monkeypatch.setattr(sources, "load_checkpoint_with_sha256", fake_load)
    monkeypatch.setattr(sources, "_CACHE", {})
    path = tmp_path / "seg.pt"
    for version in range(40):  # 40 versions of one file, as rewritten by 40 pretraining rounds
        path.write_bytes(b"x" * (version + 1))
        for _ in range(3):  # read three times per stage set-up: loaded once
            assert sources.source_facts(path, "deeplab", "--seg-checkpoint")[1] == "0" * 64
        assert len(loads) == version + 1
    assert len(sources._CACHE) <= 8, len(sources._CACHE)


def test_dataloader_workers_ignore_every_stop_signal() -> None:
    """A DataLoader worker ignores SIGINT, SIGTERM and SIGHUP (a shell that loses its terminal sends SIGHUP to
    the whole job), leaving them to the main process, which stops after the current step."""
    from examples.voc_joint.signals import STOP_SIGNALS

    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        init = train_data.worker_init_fn(2)  # the worker_init_fn of its DataLoaders with worker processes
        assert init is not None and train_data.worker_init_fn(0) is None
        init(0)
        assert {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} == dict.fromkeys(
            STOP_SIGNALS, signal.SIG_IGN
        )
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_model_device_is_the_parameters_device() -> None:
    """The checkpoint records the memory format resolved for the model's device (the CPU's default is not
    CUDA's): the device of the parameters, the CPU for a model without any."""
    assert train._model_device(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert train._model_device(torch.nn.ReLU()) == torch.device("cpu")


@pytest.mark.parametrize(
    "option, section, key, largest",
    [
        ("--spixel-width", "spixel", "width", "MAX_SPIXEL_WIDTH"),
        ("--cell-size", "spixel", "cell_size", "MAX_CELL"),
        ("--aspp-channels", "deeplab", "aspp_channels", "MAX_WIDTH"),
    ],
)
def test_the_model_options_take_what_a_checkpoint_config_may_hold(option, section, key, largest, capsys):
    """A model the training CLI builds must load again from its checkpoint: ``--spixel-width`` took up to
    1024 where the config schema allows 256, so a wider SpixelFCN trained and its checkpoint was then refused
    (``invalid model config: spixel.width must be an int in [1, 256]``). The bounds are the schema's now."""
    from examples.voc_joint.models import build

    bound = getattr(build, largest)
    parser = train_options.build_parser()
    dest = "spixel_width" if key == "width" else key
    assert getattr(parser.parse_args([option, str(bound)]), dest) == bound
    with pytest.raises(SystemExit):
        parser.parse_args([option, str(bound + 1)])
    assert option in capsys.readouterr().err
    deeplab = {"num_classes": 21, "backbone": "resnet18"}
    base = deeplab if section == "deeplab" else {"cell_size": 16, "width": 16}
    arch = "deeplabv3plus" if section == "deeplab" else "spixelfcn"
    build.validate_model_config({"arch": arch, section: {**base, key: bound}})


class _OtherRankHasNaNGradients(DistInfo):
    """A process whose peer found a NaN gradient: its flags and its exact check come back with that flag."""

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        if flags.numel() == 5:  # (loss, gradients, weights, running statistics, stop): the peer's gradient
            # norm is NaN
            flags[1] = 1.0
        elif flags.numel() == 3:  # (gradients, weights, running statistics) checked element by element: the
            # peer's NaN
            flags[0] = 1.0
        return flags


class _OtherRankWasSignalled(DistInfo):
    """A process whose peer recorded a SIGTERM: the step's stop flag comes back as its signal number."""

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        if flags.numel() == 5:  # (loss, gradients, weights, running statistics, stop): the maximum over the
            # processes
            flags[4] = max(float(flags[4]), float(signal.SIGTERM))
        return flags


@pytest.mark.parametrize("own", [None, int(signal.SIGINT), 1])  # 1: SIGHUP (a name Windows lacks)
def test_a_stop_agreed_on_another_processs_signal_is_kept_on_the_guard(own: int | None) -> None:
    """The step's flags agree on the largest signal number: the guard keeps it (``agreed``), so that a process
    without a signal of its own, whose peer is then lost, stops on that signal instead of naming a crash."""
    from examples.voc_joint import engine
    from examples.voc_joint.signals import InterruptGuard

    state, args, (batch,) = _toy_state(), _toy_args(), _toy_batches(1)
    guard = InterruptGuard()
    guard.requested = own
    _, stop = engine.train_step(state, batch, args, _OtherRankWasSignalled(), guard, False)
    assert stop is True and guard.requested == own and guard.agreed == signal.SIGTERM
    state, args, (batch,) = _toy_state(), _toy_args(), _toy_batches(1)
    guard = InterruptGuard()
    guard.requested = own
    _, stop = engine.train_step(state, batch, args, DistInfo(), guard, False)
    assert stop is (own is not None) and guard.agreed == own


def test_the_exact_recheck_is_agreed_by_every_process() -> None:
    """This process's gradients overflow the norm but are finite; another process holds a NaN gradient: every
    process stops: the recheck of the flagged set is agreed too (this one alone would update)."""
    from examples.voc_joint import engine

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 21, 1)
    model.weight.register_hook(lambda grad: torch.full_like(grad, 1e19))  # finite, norm overflows
    state, args, (batch,) = _toy_state(model), _toy_args(), _toy_batches(1)
    before = model.weight.detach().clone()
    with pytest.raises(engine.NonFiniteError, match="non-finite gradients at step 1 "):
        engine.train_step(state, batch, args, _OtherRankHasNaNGradients(), None, False)
    assert state.step == 0 and torch.equal(model.weight.detach(), before)


@pytest.mark.parametrize(("name", "flag"), [("epochs", "--epochs"), ("max_steps", "--max-steps")])
def test_a_recorded_count_that_is_a_bool_did_not_grow(tmp_path, name, flag) -> None:
    """``True`` is an ``int`` to Python but no count: a record edited by hand to ``epochs: true`` (hash
    recomputed) and ``--epochs 2`` now is a change like any other (refused without
    ``--allow-option-changes``), not a growth accepted silently because ``2 >= True``."""
    with pytest.raises(UsageError, match=rf"{flag}: True \(checkpoint\) -> 2 \(now\)"):
        option_changes("seg", {name: True}, {name: 2}, allow=False, source=tmp_path / "c.pt", step=3)


@pytest.mark.parametrize(("old", "new"), [(None, "weights.pth"), ("weights.pth", None)])
def test_a_path_option_set_or_unset_on_resume_is_a_change_not_a_type_error(tmp_path, old, new) -> None:
    """A path option compared with ``None`` (``--backbone-weights`` given now, not when the run started, or
    the other way round) is an ordinary refused change naming both values; the path comparison is only for
    two strings (``Path(None)`` raised a bare ``TypeError``)."""
    old = str(tmp_path / old) if old else old
    new = str(tmp_path / new) if new else new
    recorded, current = {"backbone_weights": old}, {"backbone_weights": new}
    with pytest.raises(UsageError, match=r"--backbone-weights: .* \(checkpoint\) -> .* \(now\)  \[never"):
        option_changes("seg", recorded, current, allow=True, source=tmp_path / "c.pt", step=3)


def test_each_step_updates_with_its_own_batchs_gradient_only() -> None:
    """A step's update uses the gradient of its own batch: the gradients of the step before are cleared, not
    accumulated into it (plain SGD, lr 0.1: ``w2 = w1 - 0.1 * grad(batch 2 at w1)``)."""
    import copy

    from examples.voc_joint import engine

    state, args, batches = _toy_state(), _toy_args(), _toy_batches(2)
    engine.train_step(state, batches[0], args, DistInfo(), None, False)
    reference = copy.deepcopy(state.model)
    reference.zero_grad(set_to_none=True)
    engine.cross_entropy(reference(batches[1]["seg_input"]), batches[1]["target"]).backward()
    expected = [(p - 0.1 * p.grad).detach() for p in reference.parameters()]
    engine.train_step(state, batches[1], args, DistInfo(), None, False)
    for p, e in zip(state.model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e)


def test_a_steps_lr_is_the_first_groups_rate_before_the_scheduler_steps(tmp_path: Path) -> None:
    """``train_step`` reports (and log.csv records) the learning rate its own update used: that of the first
    parameter group, read before the scheduler's step; and the scheduler does step once per step (a
    schedule that halves each step: 0.1, 0.05, 0.025 for the first group, ten times that for the second)."""
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 21, 1)
    state = _toy_state(model)
    state.optimizer = torch.optim.SGD(
        [{"params": [model.weight], "lr": 0.1}, {"params": [model.bias], "lr": 1.0}], lr=0.1
    )
    state.scheduler = torch.optim.lr_scheduler.LambdaLR(state.optimizer, lambda t: 0.5**t)
    _, rows = _logged_epoch(tmp_path, state, _toy_args(log_every=1), _toy_batches(3), steps_per_epoch=3)
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.1, 0.05, 0.025]), rows
    assert [g["lr"] for g in state.optimizer.param_groups] == pytest.approx([0.0125, 0.125])


def test_an_amp_step_updates_with_unscaled_gradients_in_autocast() -> None:
    """With AMP (an enabled GradScaler, scale 1024) the forward runs under float16 autocast and the update is
    the plain SGD one: the loss is scaled for the backward and the gradients unscaled before the update."""
    import copy

    from examples.voc_joint import engine

    state, args, (batch,) = _toy_state(), _toy_args(), _toy_batches(1)
    state.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)
    reference = copy.deepcopy(state.model)
    engine.cross_entropy(reference(batch["seg_input"]), batch["target"]).backward()
    expected = [(p - 0.1 * p.grad).detach() for p in reference.parameters()]
    dtypes: list[torch.dtype] = []
    state.model.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    engine.train_step(state, batch, args, DistInfo(), None, True)
    assert dtypes == [torch.float16] and state.step == 1
    for p, e in zip(state.model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=0.02, atol=2e-3)


@pytest.mark.filterwarnings("error")
def test_an_amp_step_whose_gradients_overflow_is_skipped_and_lowers_the_scale() -> None:
    """With AMP, infinite gradients are the scaler's business, not an error: the step completes without an
    update (weights unchanged, ``state.step`` counted) and the scaler halves its scale for the next step,
    without PyTorch's warning that the scheduler stepped before the optimizer (the skipped step counts)."""
    from examples.voc_joint import engine

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 21, 1)
    model.weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))
    state, args, (batch,) = _toy_state(model), _toy_args(), _toy_batches(1)
    state.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)
    before = [p.detach().clone() for p in model.parameters()]
    engine.train_step(state, batch, args, DistInfo(), None, True)
    assert state.step == 1 and state.scaler.get_scale() == 512.0
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before, strict=True))


def test_an_epoch_trains_a_model_left_in_eval_mode() -> None:
    """``train_one_epoch`` puts the model in training mode (a model evaluated before, or loaded in eval mode,
    is not trained with frozen BatchNorm statistics): its running statistics take the epoch's batches."""
    from examples.voc_joint import engine

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 21, 1), torch.nn.BatchNorm2d(21)).eval()
    state = _toy_state(model)
    engine.train_one_epoch(
        state, _toy_batches(1), _toy_args(log_every=1), DistInfo(), steps_per_epoch=1, global_batch=2
    )
    assert model.training and not torch.equal(model[1].running_mean, torch.zeros(21))


class _BnJoint(torch.nn.Module):
    """A joint model's contract with a BatchNorm in each network: ``deeplab`` gives the logits (2 classes),
    ``spixelfcn`` the association."""

    cell_size = 4

    def __init__(self) -> None:
        super().__init__()
        self.deeplab = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.BatchNorm2d(2))
        self.spixelfcn = torch.nn.Sequential(torch.nn.Conv2d(3, 9, 1), torch.nn.BatchNorm2d(9))

    def forward(self, seg_input: torch.Tensor, spixel_input: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.deeplab(seg_input), "assoc": self.spixelfcn(spixel_input).softmax(1)}


@pytest.mark.parametrize("freeze_bn", [False, True])
def test_freeze_bn_freezes_the_deeplab_statistics_only(freeze_bn: bool) -> None:
    """``--freeze-bn`` (joint stage) keeps DeepLabV3+'s BatchNorm running statistics as they were; SpixelFCN's
    still take the batches, and without the option both do."""
    from examples.voc_joint import engine

    torch.manual_seed(0)
    model = _BnJoint()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    state = engine.TrainState("joint", model, model, opt, sched, torch.amp.GradScaler("cuda", enabled=False))
    batch = {
        "seg_input": torch.randn(2, 3, 8, 8),
        "spixel_input": torch.randn(2, 3, 8, 8),
        "target": torch.randint(0, 2, (2, 8, 8)),
    }
    args = _toy_args(log_every=1, freeze_bn=freeze_bn)
    args.num_classes = 2
    engine.train_one_epoch(state, [batch], args, DistInfo(), steps_per_epoch=1, global_batch=2)
    frozen = torch.equal(model.deeplab[1].running_mean, torch.zeros(2))
    assert frozen is freeze_bn and model.deeplab[1].training is not freeze_bn
    assert not torch.equal(model.spixelfcn[1].running_mean, torch.zeros(9)) and model.spixelfcn[1].training


def test_set_bn_eval_also_freezes_sync_batchnorm() -> None:
    """``--freeze-bn`` with ``--sync-bn``: the model's BatchNorm layers are SyncBatchNorm then, which
    ``set_bn_eval`` puts in eval mode as plain BatchNorm (every ``_BatchNorm``, not only ``BatchNorm2d``)."""
    from examples.voc_joint.engine import set_bn_eval

    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm1d(4))
    ).train()
    assert isinstance(model[1], torch.nn.SyncBatchNorm)
    set_bn_eval(model)
    assert model.training and model[0].training
    assert not model[1].training and not model[2].training


def test_evaluation_current_needs_the_same_step_weights_and_options(tmp_path: Path) -> None:
    """``eval.json`` is current only when its checkpoint step, checkpoint SHA-256, split, ``--sbd`` and
    resolution are all those asked for; any one of them differing makes it stale (re-evaluated)."""
    from examples.voc_joint import engine

    ckpt = tmp_path / "last.pt"
    args = argparse.Namespace(val_split="val", sbd=False, eval_crop=321)
    assert engine.evaluation_options(args) == {"split": "val", "sbd": False, "resolution": 321}
    recorded = {"checkpoint_step": 7, "checkpoint_sha256": "ab" * 32, **engine.evaluation_options(args)}
    (tmp_path / "eval.json").write_text(json.dumps({**recorded, "miou": 0.5}), encoding="utf-8")
    assert engine.evaluation_current(ckpt, 7, args, "ab" * 32)
    assert not engine.evaluation_current(ckpt, 8, args, "ab" * 32)
    assert not engine.evaluation_current(ckpt, 7, args, "cd" * 32)
    for other in ({"val_split": "train"}, {"sbd": True}, {"eval_crop": None}):
        assert not engine.evaluation_current(
            ckpt, 7, argparse.Namespace(**{**vars(args), **other}), "ab" * 32
        )


def test_close_loader_iterator_kills_the_workers_that_outlive_the_shutdown() -> None:
    """A worker still alive after the DataLoader's own shutdown (stuck in a read) is killed and joined; one
    that exited is left alone; an iterator without workers is a no-op."""
    import types

    from examples.voc_joint import engine

    calls: list[str] = []

    class Worker:
        def __init__(self, name: str, alive: bool) -> None:
            self.name, self.alive = name, alive

        def is_alive(self) -> bool:
            return self.alive

        def kill(self) -> None:
            calls.append(f"kill {self.name}")

        def join(self, timeout: float | None = None) -> None:
            calls.append(f"join {self.name}")

    batches = types.SimpleNamespace(
        _shutdown_workers=lambda: calls.append("shutdown"), _workers=[Worker("a", True), Worker("b", False)]
    )
    engine.close_loader_iterator(batches)
    assert calls == ["shutdown", "kill a", "join a"]
    engine.close_loader_iterator(iter([1, 2]))  # a plain iterator (no workers): nothing to do


def test_cross_entropy_of_float16_logits_is_a_float32_mean_that_does_not_overflow() -> None:
    """AMP logits come in float16: the loss is summed in float32 (a float16 sum over 40 000 pixels of loss 12
    is inf, which stopped the training as a non-finite loss) and returned in float32."""
    from examples.voc_joint.engine import cross_entropy

    logits = torch.zeros(1, 2, 200, 200, dtype=torch.float16)
    logits[:, 0] = 12.0  # every pixel is class 1: a loss of about 12 each
    loss = cross_entropy(logits, torch.ones(1, 200, 200, dtype=torch.long))
    assert loss.dtype == torch.float32 and float(loss) == pytest.approx(12.0, rel=1e-3)


def test_superpixel_loss_of_a_float16_association_is_computed_in_float32() -> None:
    """``superpixel_loss`` computes in float32 whatever the association's dtype (AMP): the float16 association
    gives a float32 loss, the float32 loss of that same association."""
    from examples.voc_joint.engine import superpixel_loss

    gen = torch.Generator().manual_seed(0)
    assoc = torch.randn(1, 9, 16, 16, generator=gen).softmax(1).half()
    target = torch.randint(0, 3, (1, 16, 16), generator=gen)
    half = superpixel_loss(assoc, target, 4, pos_weight=0.003, num_classes=3)
    full = superpixel_loss(assoc.float(), target, 4, pos_weight=0.003, num_classes=3)
    assert half.dtype == torch.float32 and torch.equal(half, full)


@pytest.mark.parametrize("pos_weight", [0.003, 10.0])
def test_spixel_stage_loss_is_the_superpixel_loss_with_the_given_options(pos_weight: float) -> None:
    """The spixel stage's loss is ``sparse_ops.spixel_loss(...).total`` of SpixelFCN's association with
    ``--cell-size`` and ``--pos-weight`` as given (the position term weighed, not dropped), and its one part
    ``spixel`` is that loss."""
    import sparse_ops
    from examples.voc_joint.engine import stage_loss

    gen = torch.Generator().manual_seed(0)
    assoc = torch.randn(1, 9, 16, 16, generator=gen).softmax(1)
    target = torch.randint(0, 3, (1, 16, 16), generator=gen)

    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return assoc

    batch = {"spixel_input": torch.zeros(1, 3, 16, 16), "target": target}
    args = argparse.Namespace(cell_size=4, pos_weight=pos_weight, num_classes=3)
    loss, parts = stage_loss("spixel", Fixed(), batch, args, torch.device("cpu"))
    expected = sparse_ops.spixel_loss(assoc, target, 4, pos_weight=pos_weight, num_classes=3).total
    torch.testing.assert_close(loss, expected)
    assert set(parts) == {"spixel"} and torch.equal(parts["spixel"], loss)


def test_a_nan_input_is_found_as_loss_and_gradients_at_the_step_and_epoch_it_trains() -> None:
    """A NaN pixel makes the loss and the gradients non-finite (the weights stay finite): the finding names
    both, joined by "and", with the step it would have completed and its epoch (counted from 1), and the
    update is not applied."""
    from examples.voc_joint import engine

    state, args, (batch,) = _toy_state(epoch=1, step=4), _toy_args(), _toy_batches(1)
    batch["seg_input"][0, 0, 0, 0] = float("nan")
    before = state.model.weight.detach().clone()
    with pytest.raises(engine.NonFiniteError) as stop:
        engine.train_step(state, batch, args, DistInfo(), None, False)
    assert stop.value.finding == "non-finite loss and gradients at step 5 (epoch 2; loss nan)"
    assert state.step == 4 and torch.equal(state.model.weight.detach(), before)


def test_a_seg_steps_values_are_its_loss_and_ce_which_are_equal() -> None:
    """``train_step`` returns the step's loss and its parts as floats: for the seg stage the loss is the
    cross-entropy, so ``loss`` and ``ce`` are the same positive value (log 21 near a random init)."""
    from examples.voc_joint import engine

    state, args, (batch,) = _toy_state(), _toy_args(), _toy_batches(1)
    values, _ = engine.train_step(state, batch, args, DistInfo(), None, False)
    assert values["ce"] == values["loss"] and 1.0 < values["loss"] < 10.0


def test_an_epoch_logs_no_step_before_its_last_with_a_large_log_every(tmp_path: Path) -> None:
    """With ``--log-every 10`` an epoch of 3 steps logs its last step only (not also the one before it)."""
    state = _toy_state()
    _, rows = _logged_epoch(tmp_path, state, _toy_args(log_every=10), _toy_batches(3), steps_per_epoch=3)
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "3")], rows


def _seg_state_after_steps(steps: int, horizon: int, *extra: str) -> tuple[Any, argparse.Namespace]:
    """A seg-stage TrainState (tiny DeepLabV3+, SGD, poly schedule over ``horizon`` steps) after ``steps``
    scheduler steps, and its resolved options."""
    from examples.voc_joint import engine

    args = train_options.resolve_stage_options(
        "seg",
        train_options.build_parser().parse_args(["--backbone", "resnet18", "--aspp-channels", "8", *extra]),
    )
    model = train.build_stage_model("seg", args)
    opt = train.build_optimizer("seg", model, args)
    sched = train.build_scheduler(opt, args, horizon)
    for _ in range(steps):
        opt.step()
        sched.step()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    return engine.TrainState("seg", model, model, opt, sched, scaler), args


def test_options_changed_on_resume_reach_every_group_at_the_scheduled_rate() -> None:
    """``_apply_optimizer_options`` (an --allow-option-changes resume): the new momentum and weight decay
    reach every group, and the new learning rates take the schedule's factor at the resumed step, now and
    at the next scheduler step."""
    state, args = _seg_state_after_steps(5, 10, "--seg-lr", "0.01", "--momentum", "0.9")
    assert args.schedule == "poly"
    changed = argparse.Namespace(**{**vars(args), "seg_lr": 0.02, "momentum": 0.5, "weight_decay": 1e-3})
    train._apply_optimizer_options(state, changed)
    groups = state.optimizer.param_groups
    assert [g["momentum"] for g in groups] == [0.5, 0.5], "the new --momentum did not reach every group"
    assert [g["weight_decay"] for g in groups] == [1e-3, 1e-3], "the new --weight-decay did not reach them"
    bases = [0.02, 0.02 * args.head_lr_mult]
    factor = (1 - 5 / 10) ** args.poly_power
    assert [g["lr"] for g in groups] == pytest.approx([b * factor for b in bases]), "lr of the resumed step"
    assert state.scheduler.get_last_lr() == pytest.approx([b * factor for b in bases])
    state.optimizer.step()
    state.scheduler.step()
    factor = (1 - 6 / 10) ** args.poly_power
    assert [g["lr"] for g in groups] == pytest.approx([b * factor for b in bases]), "lr of the next step"


def test_a_checkpoint_records_every_processs_rng_states_and_whether_it_is_complete() -> None:
    """``_checkpoint_dict``: the RNG states given (one per rank, gathered by the epoch loop) and the
    ``complete`` flag given are what the checkpoint holds."""
    state, args = _seg_state_after_steps(1, 10)
    rng = [{"rank": 0}, {"rank": 1}]
    ckpt = train._checkpoint_dict(state, args, 4, 2, False, rng)
    assert ckpt["rng"] == rng, "the checkpoint must hold every process's RNG states, by rank"
    assert ckpt["complete"] is False, "an unfinished stage's checkpoint was marked complete"
    assert train._checkpoint_dict(state, args, 4, 2, True, rng)["complete"] is True


def test_a_checkpoint_written_before_the_last_epoch_is_not_complete(tiny_voc, tmp_path, monkeypatch) -> None:
    """The checkpoint at the end of epoch 1 of 2 is a training state to resume, not a finished stage."""

    class Stop(Exception):
        pass

    def stop_after_the_first_epoch(point: str, n: int | None = None) -> None:
        if point == "epoch-end":
            raise Stop

    monkeypatch.setattr(train.faults, "hit", stop_after_the_first_epoch)
    with pytest.raises(Stop):
        train.main(train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "2"))
    ckpt = load_checkpoint(tmp_path / "spixel" / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["complete"] is False, (ckpt["epoch"], ckpt["complete"])


def test_a_resume_continues_the_training_clock_of_its_checkpoint(tiny_voc, tmp_path) -> None:
    """``elapsed_s`` (checkpoint and log.csv) counts the training time over every resume: a resumed run
    continues from its checkpoint's time, not from 0."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "1", "--max-steps", "1")
    ckpt_path = train.main(argv)["spixel"]
    ckpt = load_checkpoint(ckpt_path)
    ckpt["elapsed_s"] = 1000.0  # a long first session
    save_checkpoint(ckpt_path, ckpt)
    train.main([*argv[: argv.index("--max-steps")], "--max-steps", "2", "--resume"])
    assert load_checkpoint(ckpt_path)["elapsed_s"] >= 1000.0, "the resumed run restarted the clock at 0"
    row = _rows(ckpt_path.parent / "log.csv")[-1]
    assert row["step"] == "2" and float(row["elapsed_s"]) >= 1000.0, row


def test_running_out_of_memory_while_restoring_a_checkpoint_is_not_called_a_bad_checkpoint(
    monkeypatch,
) -> None:
    """An out-of-memory error while the checkpoint's state is loaded is raised as it is (the script reports it
    as such, exit status 1), not turned into "the checkpoint's weights cannot be restored"."""
    state, _ = _seg_state_after_steps(0, 10)
    ckpt = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": {},
    }

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(state.model, "load_state_dict", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        train._restore_training_state(state, ckpt, Path("c.pt"))


def test_regrouping_a_one_group_optimizer_state_leaves_a_parameter_without_state_without_one() -> None:
    """A one-group spixel optimizer state (written before the bias exemption) in which a parameter has no
    state yet (no gradient so far) is regrouped with the others' states, not refused with a KeyError."""
    args = train_options.resolve_stage_options(
        "spixel", train_options.build_parser().parse_args(["--spixel-width", "4"])
    )
    model = train.build_stage_model("spixel", args)
    opt = train.build_optimizer("spixel", model, args)
    params = list(model.parameters())
    one_group = {k: v for k, v in opt.state_dict()["param_groups"][0].items() if k != "params"}
    saved = {
        "state": {
            i: {"step": torch.tensor(1.0), "exp_avg": torch.ones_like(p), "exp_avg_sq": torch.ones_like(p)}
            for i, p in enumerate(params)
            if i != 0
        },
        "param_groups": [{**one_group, "params": list(range(len(params)))}],
    }
    regrouped, done = train._regroup_optimizer_state(opt, saved, model)
    assert done and len(regrouped["state"]) == len(params) - 1
    opt.load_state_dict(regrouped)
    assert params[0] not in opt.state
    assert all(torch.equal(opt.state[p]["exp_avg"], torch.ones_like(p)) for p in params[1:])


def test_schedule_horizon_leaves_out_a_partial_batch_left_in_the_resumed_epoch() -> None:
    """After a batch-size change mid-epoch the samples left in the epoch need not fill whole batches; the
    sampler drops the last partial one (drop_last), so the schedule counts only the full ones."""
    # batch 4 -> 8 after 1 step (4 samples) of an epoch of 2 steps of 8: 12 samples left, 1 full batch
    assert train.schedule_horizon(2, 2, 8, step=1, epoch=0, samples_in_epoch=4) == 1 + 1 + 2


def test_run_stage_checks_the_validation_split_before_training(tiny_voc, tmp_path) -> None:
    """``run_stage`` (as demo.py and ablation.py call it, without train.main's up-front data checks): a
    missing ``--val-split`` with ``--eval`` fails before the stage trains, not after it."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "1", "--max-steps", "1", "--eval")
    args = train_options.build_parser().parse_args([*argv, "--val-split", "nosuch"])
    with pytest.raises(FileNotFoundError, match=r"split list file not found: .*nosuch\.txt"):
        train.run_stage("seg", args, DistInfo())
    assert not (tmp_path / "seg" / "checkpoint.pt").exists(), "the stage trained before the check"


def test_a_stage_run_with_overwrite_deletes_the_old_runs_files(tiny_voc, tmp_path) -> None:
    """One stage with ``--overwrite``: the old run's results (an eval.json of other weights) are deleted
    before the new run starts, not left beside its checkpoint."""
    argv = train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "1", "--max-steps", "1")
    folder = train.main(argv)["spixel"].parent
    (folder / "eval.json").write_text('{"miou": 0.5}')  # a result of the old run
    train.main([*argv, "--overwrite"])
    assert not (folder / "eval.json").exists(), "--overwrite left the old run's eval.json"


def test_a_stage_deletes_the_temporaries_of_interrupted_checkpoint_writes(tiny_voc, tmp_path) -> None:
    """A checkpoint write killed half-way (SIGKILL, power loss) leaves ``.checkpoint.pt.<id>.tmp``; the next
    run of the stage deletes it (it holds the folder lock)."""
    folder = tmp_path / "spixel"
    folder.mkdir()
    stale = folder / ".checkpoint.pt.12345.tmp"
    stale.write_bytes(b"half a checkpoint")
    train.main(train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "1", "--max-steps", "1"))
    assert not stale.exists(), "the stale temporary of an interrupted write was left behind"


def test_thread_count_note_is_for_cpu_runs_with_a_recorded_count_only() -> None:
    """A checkpoint written before the thread count was recorded, and a resume on another device than the
    CPU (only PyTorch's CPU kernels round by thread count), get no thread-count note."""
    cpu, n = torch.device("cpu"), torch.get_num_threads()
    assert resume_notes.thread_count_note("seg", {}, cpu) is None, (
        "no recorded count: nothing known to differ"
    )
    assert resume_notes.thread_count_note("seg", {"cpu_threads": None}, cpu) is None
    for kind in ("cuda", "mps"):
        note = resume_notes.thread_count_note("seg", {"cpu_threads": n + 1}, torch.device(kind))
        assert note is None, f"a {kind} resume got a CPU thread-count note: {note}"


def test_numerics_note_without_a_recorded_compile_says_nothing() -> None:
    """A joint checkpoint that records no ``--compile`` (no config, no args, or ``None``) gets no compile
    note, whatever this resume's ``--compile``: nothing is known to differ."""
    cpu = torch.device("cpu")
    for compile_now in (True, False):
        now = argparse.Namespace(channels_last=None, compile=compile_now)
        for ckpt in ({}, {"config": {}}, {"config": {"args": {}}}, {"config": {"args": {"compile": None}}}):
            note = resume_notes.numerics_note("joint", ckpt, now, cpu)
            assert note is None, f"{ckpt} with --compile {compile_now}: {note}"


def test_numerics_note_names_every_change_and_every_advice() -> None:
    """A joint resume that changes both the memory format and ``--compile`` names both changes and both
    options to pass, joined with "and"."""
    ckpt = {"channels_last": True, "config": {"args": {"compile": False}}}
    now = argparse.Namespace(channels_last=False, compile=True)
    note = resume_notes.numerics_note("joint", ckpt, now, torch.device("cpu"))
    assert note is not None and (
        "this resume changes the memory format (channels_last True then, False now) and --compile "
        "(off then, on now): the arithmetic differs" in note
    ), note
    assert note.endswith("; pass --channels-last and pass --no-compile to continue it bit for bit"), note


def test_cuda_rng_note_counts_one_gpu_and_reads_a_state_without_cuda_states(monkeypatch) -> None:
    """One saved GPU state is "1 GPU" (not "1 GPUs"); an RNG state without a ``"cuda"`` key (accepted by the
    checkpoint's RNG check, which defaults it to ``[]``) is a run without CUDA, not a TypeError."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    note = resume_notes.cuda_rng_note("seg", {"cuda": [torch.zeros(16, dtype=torch.uint8)]}, cuda)
    assert note is not None and "holds the CUDA RNG states of 1 GPU, this process sees 2:" in note, note
    note = resume_notes.cuda_rng_note("seg", {}, cuda)
    assert (
        note is not None and "holds no CUDA RNG state (a run without CUDA), this process sees 2:" in note
    ), note


def test_a_stage_that_ends_at_its_last_epoch_writes_a_complete_checkpoint(tiny_voc, tmp_path) -> None:
    """A stage that stops because its --epochs are done (no --max-steps) has finished: its last checkpoint is
    marked complete. The other completeness tests stop at --max-steps or before the last epoch."""
    out = train.main(train_args(tiny_voc, tmp_path, "--stage", "spixel", "--epochs", "1"))["spixel"]
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 1 and ckpt["complete"] is True, (
        f"epoch {ckpt['epoch']} of --epochs 1 done, complete={ckpt['complete']!r}: the finished stage's "
        "checkpoint must be complete"
    )


def test_option_changes_compare_backbone_weights_as_an_absolute_path(tmp_path, monkeypatch) -> None:
    """Every path option (``PATH_OPTIONS``: ``--backbone-weights`` too) is compared as an absolute path: a
    legacy record spelled relative to the working folder is the same file as its absolute spelling."""
    monkeypatch.chdir(tmp_path)
    current = {"backbone_weights": str(tmp_path.resolve() / "w.pth")}
    assert (
        option_changes(
            "seg", {"backbone_weights": "w.pth"}, current, allow=False, source=tmp_path / "c.pt", step=3
        )
        == []
    )


def test_option_changes_from_scratch_never_changes_even_when_allowed(tmp_path) -> None:
    """``--from-scratch`` decides the joint stage's initial weights: a fixed option, refused on resume even
    with ``--allow-option-changes``."""
    with pytest.raises(
        UsageError, match=r"--from-scratch: False \(checkpoint\) -> True \(now\)  \[never changes"
    ):
        option_changes(
            "joint",
            {"from_scratch": False},
            {"from_scratch": True},
            allow=True,
            source=tmp_path / "c.pt",
            step=3,
        )


def test_option_changes_message_names_the_checkpoint_and_its_step(tmp_path) -> None:
    """The refusal names the checkpoint and its step: ``--resume <path> (step <n>): options differ``."""
    source = tmp_path / "c.pt"
    with pytest.raises(UsageError, match=rf"^--resume {re.escape(str(source))} \(step 7\): options differ"):
        option_changes("seg", {"seg_lr": 0.1}, {"seg_lr": 0.2}, allow=False, source=source, step=7)


def test_run_files_list_the_matches_of_a_pattern_sorted(tmp_path, monkeypatch) -> None:
    """The files matching one glob pattern of ``RUN_FILES`` (``eval_*``) come sorted, whatever order the
    folder lists them in (the refusal names them in that order)."""
    from examples.voc_joint import resume

    folder = tmp_path / "seg"
    for name in ("eval_val", "eval_train", "eval_b"):
        (folder / name).mkdir(parents=True)
    real_glob = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: sorted(real_glob(self, pattern), reverse=True))
    assert resume.run_files(folder) == [folder / "eval_b", folder / "eval_train", folder / "eval_val"]
