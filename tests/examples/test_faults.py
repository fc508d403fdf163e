"""Fault injection on the training CLI: interrupt anywhere, ``--resume``: bit-identical to no interrupt.

Every run is a subprocess on tiny synthetic data (CPU, one thread). Interrupt points are hit exactly through
the ``TRANSINIT_FAULT`` hook (:mod:`examples.voc_joint.faults`) instead of timers.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("torchvision")

from examples.voc_joint import train as train_cli
from examples.voc_joint import train_options
from examples.voc_joint.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_from_checkpoint,
    load_network,
    load_weights_into,
    payload_sha256,
    save_checkpoint,
)
from examples.voc_joint.engine import NonFiniteError
from examples.voc_joint.models import DeepLabV3Plus, SpixelFCN

# the runs are stopped with POSIX signals sent to process groups, and share data under flock (not on Windows)
fcntl = pytest.importorskip("fcntl", reason="needs fcntl, POSIX signals and process groups (not on Windows)")

from .helpers import ROOT, script_env  # noqa: E402  # after the skips above

#: 6 training images, batch 2: 3 steps per epoch; 3 epochs = 9 steps. BatchNorm in training mode everywhere
#: (--no-freeze-bn), dropout, soft uniformization, poly schedule and lrs large enough to move every weight.
RUN = [
    "--stage", "joint", "--epochs", "3", "--log-every", "1", "--backbone", "resnet18",
    "--aspp-channels", "16", "--cell-size", "8", "--spixel-width", "4", "--fusion-hidden", "42",
    "--crop-size", "32", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-progress",
    "--no-freeze-bn", "--schedule", "poly", "--mode", "soft", "--lr", "0.01", "--spixel-lr", "0.001",
    "--fusion-lr", "0.001", "--from-scratch",
]  # fmt: skip


def _shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder shared by the pytest-xdist workers of this session (the per-worker base's parent)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return base / name


@contextmanager
def _once(folder: Path) -> Iterator[bool]:
    """Yield True to the first process to build ``folder`` (the others wait on a lock, then get False)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        done = folder / ".done"
        build = not done.exists()
        yield build
        if build:
            done.touch()


@pytest.fixture(scope="session")
def voc6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 train / 2 val synthetic images of 36x44 (shared by the xdist workers)."""
    from examples.voc_joint.synthetic import generate_synthetic_voc

    root = _shared_dir(tmp_path_factory, "faults-voc6")
    return generate_synthetic_voc(root, num_train=6, num_val=2, image_size=(36, 44), seed=1)


def train(out: Path, root: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run train.py in its own session (a group signal reaches only it and its DataLoader workers)."""
    cmd = [sys.executable, "examples/voc_joint/train.py", "--data-root", str(root), "--output-dir", str(out)]
    return subprocess.run(
        [*cmd, *RUN, *extra],
        cwd=ROOT,
        env=script_env(fault),
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


def _differences(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}/{i}")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def assert_same_training_state(a: Path, b: Path) -> None:
    """Weights, BatchNorm buffers, optimizer, scheduler, scaler, position and RNG states: bit for bit."""
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    keys = (
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "step",
        "samples_in_epoch",
        "rng",
        "complete",
    )
    diffs = [d for k in keys for d in _differences(ca[k], cb[k], k)]
    assert not diffs, f"{len(diffs)} differences, e.g. {diffs[:5]}"


def _log(folder: Path) -> list[dict[str, str]]:
    with open(folder / "log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_same_log(a: Path, b: Path) -> None:
    """The same steps, once each, with the same loss values (timings aside), and ``b``'s clock
    (``elapsed_s``) never runs back: it continues across resumes."""
    ra, rb = _log(a), _log(b)
    steps = [r["step"] for r in rb]
    assert len(steps) == len(set(steps)), f"duplicate steps in {b}: {steps}"
    elapsed = [float(r["elapsed_s"]) for r in rb]
    assert elapsed == sorted(elapsed), f"elapsed_s runs back in {b}: {elapsed}"
    cols = ("epoch", "step", "loss", "ce", "spixel", "lr")
    assert [[r[c] for c in cols] for r in ra] == [[r[c] for c in cols] for r in rb]


def _reference_run(voc6: Path, tmp_path_factory: pytest.TempPathFactory, name: str, *extra: str) -> Path:
    """The uninterrupted 9-step run with ``extra`` options, computed once per session (shared by the xdist
    workers); returns its stage folder."""
    out = _shared_dir(tmp_path_factory, name)
    with _once(out) as build:
        if build:
            shutil.rmtree(out, ignore_errors=True)
            res = train(out, voc6, *extra)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out / "joint"


@pytest.fixture(scope="session")
def reference(voc6: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 9-step run (workers 0)."""
    return _reference_run(voc6, tmp_path_factory, "faults-reference", "--workers", "0")


def _expect(res: subprocess.CompletedProcess[str], code: int, step: int, ckpt: Path) -> None:
    assert res.returncode == code, (
        f"exit {res.returncode}, expected {code}\n{res.stdout[-2000:]}{res.stderr[-3000:]}"
    )
    assert load_checkpoint(ckpt)["step"] == step


def test_interrupts_everywhere_workers0_resume_bit_exact(voc6: Path, reference: Path, tmp_path: Path) -> None:
    """Interrupts at every kind of point, each resumed with the same command: the end state is bit-identical.

    A --max-steps cap, SIGINT mid-step, SIGTERM during a checkpoint write, SIGINT at the epoch-end barrier and
    SIGKILL during a write, in one chain of six runs.
    """
    ckpt = tmp_path / "joint" / "checkpoint.pt"
    w0 = ("--workers", "0")
    _expect(train(tmp_path, voc6, *w0, "--max-steps", "1"), 0, 1, ckpt)
    assert load_checkpoint(ckpt)["complete"] and load_checkpoint(ckpt)["batch_in_epoch"] == 1
    res = train(tmp_path, voc6, *w0, "--resume", fault="sigint@step:2")
    _expect(res, 130, 2, ckpt)
    # the stop is a status line on stderr, with train.py's other stop and error lines (stdout: the run's log)
    assert f"[joint] interrupted: checkpoint of step 2 in {ckpt}" in res.stderr, res.stderr[-2000:]
    assert "[joint] interrupted" not in res.stdout
    _expect(train(tmp_path, voc6, *w0, "--resume", fault="sigterm@save:1"), 143, 3, ckpt)
    _expect(train(tmp_path, voc6, *w0, "--resume", fault="sigint@epoch-end:2"), 130, 6, ckpt)
    res = train(tmp_path, voc6, *w0, "--resume", fault="sigkill@save:1")  # killed while writing step 9
    _expect(res, -9, 6, ckpt)
    assert list(ckpt.parent.glob(".checkpoint.pt.*.tmp")), "the killed write leaves its temporary file"
    _expect(train(tmp_path, voc6, *w0, "--resume"), 0, 9, ckpt)
    assert not list(ckpt.parent.glob(".checkpoint.pt.*.tmp")), "stale temporary files are removed on start"
    assert_same_training_state(reference / "checkpoint.pt", ckpt)
    assert_same_log(reference, ckpt.parent)


def test_a_signal_at_the_step_reaching_max_steps_finishes_the_stage(voc6: Path, tmp_path: Path) -> None:
    """SIGINT at the step that reaches --max-steps wrote the checkpoint with ``complete: False`` and said
    "continue with --resume", while the same state without the signal is complete. Completeness now comes from
    the position: the checkpoint is complete and the stop line says the stage finished. The exit status stays
    130, as for any stop by a signal after finished work (evaluate.py's after its results are written; a
    signal at the end of the last epoch): what the command would do next (--eval, the next stage of
    --stage all) did not run. --resume then skips the stage."""
    ckpt = tmp_path / "joint" / "checkpoint.pt"
    cap = ("--workers", "0", "--max-steps", "2")
    res = train(tmp_path, voc6, *cap, fault="sigint@step:2")
    _expect(res, 130, 2, ckpt)
    assert load_checkpoint(ckpt)["complete"], "the state of step 2 is the finished stage"
    assert (
        f"[joint] interrupted: the stage finished: its checkpoint of step 2 in {ckpt} is complete"
        in res.stderr
    )
    assert "continue with --resume" not in res.stderr, res.stderr[-2000:]
    res = train(tmp_path, voc6, *cap, "--resume")
    _expect(res, 0, 2, ckpt)
    assert "skipping the stage" in res.stdout, res.stdout[-2000:]


def test_resume_from_a_checkpoint_without_elapsed_time(voc6: Path, tmp_path: Path) -> None:
    """A checkpoint written before checkpoints recorded ``elapsed_s`` resumes (its training time read as 0);
    the checkpoints written from then on record the time again."""
    ckpt = tmp_path / "joint" / "checkpoint.pt"
    w0 = ("--workers", "0")
    _expect(train(tmp_path, voc6, *w0, "--max-steps", "2"), 0, 2, ckpt)
    old = load_checkpoint(ckpt)
    assert old["elapsed_s"] > 0
    del old["elapsed_s"]
    save_checkpoint(ckpt, old)  # re-hashed: a valid checkpoint of the older layout
    assert "elapsed_s" not in load_checkpoint(ckpt)
    _expect(train(tmp_path, voc6, *w0, "--resume", "--max-steps", "4"), 0, 4, ckpt)
    assert load_checkpoint(ckpt)["elapsed_s"] > 0
    assert [r["step"] for r in _log(ckpt.parent)] == ["1", "2", "3", "4"]


def test_interrupts_workers2_resume_bit_exact(voc6: Path, reference: Path, tmp_path: Path) -> None:
    """With 2 DataLoader workers: Ctrl-C to the whole process group mid-epoch, then SIGTERM mid-step; the end
    state equals the uninterrupted run with 0 workers (augmentation depends on (seed, epoch, index) only)."""
    ckpt = tmp_path / "joint" / "checkpoint.pt"
    w2 = ("--workers", "2")
    _expect(train(tmp_path, voc6, *w2, fault="group-sigint@step:5"), 130, 5, ckpt)
    _expect(train(tmp_path, voc6, *w2, "--resume", fault="sigterm@step:8"), 143, 8, ckpt)
    _expect(train(tmp_path, voc6, *w2, "--resume"), 0, 9, ckpt)
    assert_same_training_state(reference / "checkpoint.pt", ckpt)
    assert_same_log(reference, ckpt.parent)


def test_sighup_interrupts_resume_bit_exact(voc6: Path, reference: Path, tmp_path: Path) -> None:
    """SIGHUP (a closed terminal: the shell sends it to the whole job) is SIGTERM's stop, exit status 129:
    to the process group with 2 DataLoader workers mid-epoch (the workers ignore it; before, it killed every
    process with no checkpoint), then during a checkpoint write of the resumed run (the end of epoch 2, step
    6: deferred to its end); the end state equals the uninterrupted run's."""
    ckpt = tmp_path / "joint" / "checkpoint.pt"
    w2 = ("--workers", "2")
    _expect(train(tmp_path, voc6, *w2, fault="group-sighup@step:5"), 129, 5, ckpt)
    _expect(train(tmp_path, voc6, *w2, "--resume", fault="sighup@save:1"), 129, 6, ckpt)
    _expect(train(tmp_path, voc6, *w2, "--resume"), 0, 9, ckpt)
    assert_same_training_state(reference / "checkpoint.pt", ckpt)
    assert_same_log(reference, ckpt.parent)


def test_a_closed_terminal_stops_training_with_a_checkpoint_and_exit_129(voc6: Path, tmp_path: Path) -> None:
    """train.py with a terminal (a pty) as its controlling terminal and its output, the terminal closed after
    the first step: the kernel's SIGHUP, then every write to the terminal fails (EIO). The run stops after the
    step in flight with a checkpoint and exit status 129. Before: killed by SIGHUP with no checkpoint; with
    SIGHUP only recorded, the progress bar's or the stop line's write raised EIO: exit status 1."""
    import fcntl as fcntl_  # the module's fcntl is the skip's: the same module
    import select
    import signal
    import struct
    import termios

    master, slave = os.openpty()
    fcntl_.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a bar to draw

    def own_terminal() -> None:  # a session of its own, the pty its controlling terminal (as a login shell's)
        os.setsid()
        fcntl_.ioctl(0, termios.TIOCSCTTY, 0)

    cmd = [
        sys.executable,
        "examples/voc_joint/train.py",
        "--data-root",
        str(voc6),
        "--output-dir",
        str(tmp_path),
    ]
    run = [a for a in RUN if a != "--no-progress"]  # the bar: output to the terminal during every step
    proc = subprocess.Popen(
        [*cmd, *run, "--epochs", "30", "--workers", "0"],
        cwd=ROOT,
        env=script_env(),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        preexec_fn=own_terminal,  # noqa: PLW1509  # setsid, then the pty as the controlling terminal
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 240
        while b"1/3 [" not in seen and time.monotonic() < deadline:  # the bar after the first step
            if select.select([master], [], [], 1)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:  # the process ended and the terminal with it
                    break
        assert b"1/3 [" in seen, seen[-2000:].decode(errors="replace")
        os.close(master)  # the terminal is gone: hangup
        master = -1
        status = proc.wait(timeout=120)
    finally:
        if master >= 0:
            os.close(master)
        proc.kill()
    assert status == 128 + signal.SIGHUP, f"exit status {status} (-1: killed by SIGHUP)"
    saved = load_checkpoint(tmp_path / "joint" / "checkpoint.pt")
    assert 1 <= saved["step"] < 90 and not saved["complete"]


#: The hard mode with the fusion's recomputation (the training CLI's defaults): its backward rebuilds U from
#: S with the superpixel assignment inside the fusion Function, not through activation checkpointing.
HARD = ("--mode", "hard", "--recompute-fusion", "--workers", "0")


@pytest.fixture(scope="session")
def reference_hard(voc6: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 9-step run in the hard mode."""
    return _reference_run(voc6, tmp_path_factory, "faults-reference-hard", *HARD)


def test_hard_mode_interrupts_resume_bit_exact(voc6: Path, reference_hard: Path, tmp_path: Path) -> None:
    """The default hard mode, whose fusion recomputes inside its Function: SIGINT mid-step, then SIGTERM
    during the second checkpoint write of the resumed run (the end of epoch 2), then ``--resume`` with the
    recomputation switched off (it trains to the same bits: a checkpoint of either setting resumes under the
    other); the end state is the uninterrupted run's."""
    ckpt = tmp_path / "joint" / "checkpoint.pt"
    _expect(train(tmp_path, voc6, *HARD, fault="sigint@step:2"), 130, 2, ckpt)
    _expect(train(tmp_path, voc6, *HARD, "--resume", fault="sigterm@save:2"), 143, 6, ckpt)
    _expect(train(tmp_path, voc6, *HARD, "--resume", "--no-recompute-fusion"), 0, 9, ckpt)
    assert_same_training_state(reference_hard / "checkpoint.pt", ckpt)
    assert_same_log(reference_hard, ckpt.parent)


# --------------------------------------------------------------------------------------- non-finite values
def test_nan_loss_stops_with_exit_1_and_keeps_the_last_good_checkpoint(
    voc6: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRANSINIT_FAULT", "nan-loss@step:5")
    argv = ["train.py", "--data-root", str(voc6), "--output-dir", str(tmp_path), *RUN, "--workers", "0"]
    monkeypatch.setattr(sys, "argv", argv)
    assert train_cli._cli() == 1  # the script's exit status
    err = capsys.readouterr().err
    assert "non-finite loss and gradients at step 5" in err
    assert f"the checkpoint of step 3 in {tmp_path / 'joint' / 'checkpoint.pt'} is the last good state" in err
    ck = load_checkpoint(tmp_path / "joint" / "checkpoint.pt")  # the end of epoch 1, untouched
    assert (ck["step"], ck["epoch"], ck["complete"]) == (3, 1, False)
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert [r["step"] for r in _log(tmp_path / "joint")] == ["1", "2", "3", "4"]


@pytest.mark.parametrize("fault, what", [("nan-grad@step:2", "gradients"), ("nan-weight@step:2", "weights")])
def test_nan_gradient_or_weight_stops_before_any_save(
    voc6: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str, what: str
) -> None:
    monkeypatch.setenv("TRANSINIT_FAULT", fault)
    with pytest.raises(NonFiniteError, match=f"non-finite {what} at step 2"):
        train_cli.main(_argv(voc6, tmp_path, "--workers", "0"))
    assert not (tmp_path / "joint" / "checkpoint.pt").exists()


def test_the_last_update_of_an_epoch_made_non_finite_names_the_last_good_checkpoint(
    voc6: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update that made the weights non-finite at the last step of an epoch had no next step to find it:
    the checkpoint's write refused it with a message naming no step and no last good checkpoint. The stop
    names both, says training stopped after the update and leaves the checkpoint of the epoch before; the
    advice does not name ``--amp``, which the run does not use."""
    from examples.voc_joint import engine

    step_of = engine.train_step

    def nan_after_step_6(state: Any, *args: Any, **kw: Any) -> Any:
        out = step_of(state, *args, **kw)
        if state.step == 6:
            with torch.no_grad():
                next(state.model.parameters()).view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(engine, "train_step", nan_after_step_6)
    with pytest.raises(NonFiniteError) as info:
        train_cli.main(_argv(voc6, tmp_path, "--workers", "0", "--epochs", "2"))
    ckpt = tmp_path / "joint" / "checkpoint.pt"
    message = str(info.value)
    finding = "non-finite weights after the update of step 6 (epoch 2)"
    assert f"{finding}: training stopped after the update" in message
    assert f"the checkpoint of step 3 in {ckpt} is the last good state" in message and "--amp" not in message
    assert load_checkpoint(ckpt)["step"] == 3


def test_a_nan_before_the_first_checkpoint_says_there_is_none(
    voc6: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop before the stage wrote its first checkpoint said "the last checkpoint on disk is the last good
    state", and ``--resume`` then found none: it says that none was written."""
    monkeypatch.setenv("TRANSINIT_FAULT", "nan-loss@step:2")
    with pytest.raises(NonFiniteError) as info:
        train_cli.main(_argv(voc6, tmp_path, "--workers", "0"))
    message = str(info.value)
    assert "non-finite loss and gradients at step 2" in message
    assert "no checkpoint was written yet" in message and "is the last good state" not in message
    assert not (tmp_path / "joint" / "checkpoint.pt").exists()


def test_a_nan_after_resuming_another_folders_checkpoint_names_that_checkpoint(
    voc6: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed with ``--resume PATH`` from another folder, the last good state until the run writes its own
    checkpoint is PATH: the stop named the new folder's checkpoint.pt, which did not exist."""
    first = train_cli.main(_argv(voc6, tmp_path / "a", "--workers", "0"))["joint"]
    monkeypatch.setenv("TRANSINIT_FAULT", "nan-loss@step:5")
    with pytest.raises(NonFiniteError) as info:
        train_cli.main(
            [*_argv(voc6, tmp_path / "b", "--workers", "0"), "--epochs", "2", "--resume", str(first)]
        )
    assert f"the checkpoint of step 3 in {first} is the last good state" in str(info.value)
    assert not (tmp_path / "b" / "joint" / "checkpoint.pt").exists()


@pytest.mark.parametrize("fault", ["nan-grad@step:1", "nan-weight@step:1"])
def test_nan_injection_reaches_a_channels_last_network(fault: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spixel stage's network is channels_last by default: its weights and gradients have no flat view."""
    from examples.voc_joint import faults

    monkeypatch.setenv(faults.ENV, fault)
    net = SpixelFCN(width=2).to(memory_format=torch.channels_last)
    first = next(net.parameters())
    first.grad = torch.zeros_like(first)  # channels_last as the weight's
    assert not first.is_contiguous() and not first.grad.is_contiguous()
    faults.corrupt_model(1, net)
    hit = first.grad if fault.startswith("nan-grad") else first.detach()
    assert torch.isnan(hit).sum() == 1 and torch.isnan(hit[0, 0, 0, 0])


def test_save_refuses_non_finite_states(tmp_path: Path) -> None:
    net = SpixelFCN(width=2)
    ck = _stage_ckpt(net, "spixel")
    ck["model"]["pred.bias"] = ck["model"]["pred.bias"].clone().fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"refusing to write .*model\.pred\.bias holds NaN"):
        save_checkpoint(tmp_path / "c.pt", ck)
    opt = {"state": {0: {"momentum_buffer": torch.tensor([float("nan")])}}, "param_groups": []}
    with pytest.raises(FloatingPointError, match=r"optimizer\.state\.0\.momentum_buffer"):
        save_checkpoint(tmp_path / "c.pt", {**_stage_ckpt(net, "spixel"), "optimizer": opt})
    assert not list(tmp_path.iterdir())  # nothing written, no temporary left


# ------------------------------------------------------------------------------- options, folders, locks
def _argv(root: Path, out: Path, *extra: str) -> list[str]:
    return ["--data-root", str(root), "--output-dir", str(out), *RUN, "--epochs", "1", *extra]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """The run's files (the lock file, which names the current holder, aside)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.fixture
def one_epoch(voc6: Path, tmp_path: Path) -> Path:
    """A finished 1-epoch run (3 steps) in ``tmp_path`` (in-process)."""
    train_cli.main(_argv(voc6, tmp_path, "--workers", "0"))
    return tmp_path


def test_resume_with_changed_options(voc6: Path, one_epoch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = one_epoch / "joint"
    before = _snapshot(folder)
    with pytest.raises(SystemExit) as info:
        train_cli.main(
            _argv(
                voc6, one_epoch, "--resume", "--lr", "0.02", "--backbone", "resnet34", "--epochs", "2",
                "--fusion-init", "xavier",
            )
        )  # fmt: skip
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "--lr: 0.01 (checkpoint) -> 0.02 (now)" in err
    assert "--backbone: 'resnet18' (checkpoint) -> 'resnet34' (now)  [never changes on resume]" in err
    assert "--fusion-init: 'transparent' (checkpoint) -> 'xavier' (now)  [never changes on resume]" in err
    assert "--epochs" not in err  # growing is allowed
    assert _snapshot(folder) == before  # refused: nothing touched
    with pytest.raises(SystemExit):  # architecture options never change, even when changes are allowed
        train_cli.main(_argv(voc6, one_epoch, "--resume", "--allow-option-changes", "--backbone", "resnet34"))
    assert "[never changes on resume]" in capsys.readouterr().err
    out = train_cli.main(  # runtime options (memory format, recomputation) may differ freely
        _argv(
            voc6, one_epoch, "--resume", "--allow-option-changes", "--lr", "0.02", "--epochs", "2",
            "--channels-last", "--no-recompute-fusion",
        )
    )["joint"]  # fmt: skip
    ck = load_checkpoint(out)
    assert ck["step"] == 6 and ck["config"]["args"]["lr"] == 0.02 and ck["config"]["args"]["epochs"] == 2
    assert ck["config"]["changes"] == [
        {"step": 3, "option": "--lr", "old": 0.01, "new": 0.02},
        {"step": 3, "option": "--epochs", "old": 1, "new": 2},
    ]
    group = next(g for g in ck["optimizer"]["param_groups"] if g["name"] == "deeplab")
    assert group["initial_lr"] == 0.02  # the changed learning rate took effect
    assert "option change: --lr 0.01 -> 0.02" in capsys.readouterr().out


def test_new_run_refused_in_a_folder_holding_one(
    voc6: Path, one_epoch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = one_epoch / "joint"
    before = _snapshot(folder)
    with pytest.raises(SystemExit) as info:
        train_cli.main(_argv(voc6, one_epoch, "--workers", "0"))
    assert info.value.code == 2 and "holds a run (checkpoint.pt, log.csv)" in capsys.readouterr().err
    assert _snapshot(folder) == before
    train_cli.main(_argv(voc6, one_epoch, "--workers", "0", "--overwrite", "--max-steps", "1"))
    assert [r["step"] for r in _log(folder)] == ["1"] and load_checkpoint(folder / "checkpoint.pt")[
        "step"
    ] == 1


def test_lock_refuses_a_second_run_and_names_the_holder(
    voc6: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.voc_joint.locking import FolderLock

    with FolderLock(tmp_path / "joint"):
        with pytest.raises(SystemExit) as info:
            train_cli.main(_argv(voc6, tmp_path, "--max-steps", "1"))
        err = capsys.readouterr().err
        assert info.value.code == 2 and f"in use by pid {os.getpid()} on host" in err
        assert not (tmp_path / "joint" / "checkpoint.pt").exists()
    train_cli.main(_argv(voc6, tmp_path, "--max-steps", "1"))  # released: the next run proceeds


# -------------------------------------------------------------------------------------- checkpoint files
_WRITER = """
import sys, torch
from examples.voc_joint.checkpoint import save_checkpoint
path, who = sys.argv[1], int(sys.argv[2])
for i in range(12):
    save_checkpoint(path, {"format": "transinit-voc-joint", "version": 2, "stage": "spixel",
        "config": {"model": {"arch": "spixelfcn", "spixel": {"cell_size": 8, "width": 2}}},
        "model": {"w": torch.full((100_000,), float(who * 1000 + i))}, "writer": who, "i": i})
"""


def test_concurrent_writers_never_leave_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(w)], cwd=ROOT, env=script_env())
        for w in (1, 2)
    ]
    seen = set()
    while any(w.poll() is None for w in writers):
        if path.exists():
            ck = load_checkpoint(path)  # verifies the SHA-256 of the content
            assert bool((ck["model"]["w"] == ck["writer"] * 1000 + ck["i"]).all())
            seen.add((ck["writer"], ck["i"]))
        time.sleep(0.005)
    assert [w.returncode for w in writers] == [0, 0]
    assert load_checkpoint(path)["i"] == 11 and not list(tmp_path.glob(".c.pt.*.tmp"))
    assert len(seen) > 1


def _stage_ckpt(model: torch.nn.Module, stage: str) -> dict:
    from examples.voc_joint.models import model_config

    return {
        "format": "transinit-voc-joint",
        "version": 2,
        "stage": stage,
        "config": {"model": model_config(model), "args": {}},
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "epoch": 1,
        "step": 3,
    }


def _tamper(path: Path, edit: Callable[[dict], None]) -> None:
    """Rewrite a checkpoint with ``edit`` applied, keeping its (now wrong) recorded hash."""
    ck = torch.load(path, weights_only=True)
    edit(ck)
    torch.save(ck, path)


@pytest.fixture(scope="module")
def stage_ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    seg = DeepLabV3Plus(21, "resnet18", aspp_channels=8)
    spx = SpixelFCN(cell_size=8, width=2)
    return {
        "seg": save_checkpoint(folder / "seg.pt", _stage_ckpt(seg, "seg")),
        "spixel": save_checkpoint(folder / "spixel.pt", _stage_ckpt(spx, "spixel")),
    }


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c["model"]["pred.bias"].add_(1e-3), "corrupt or was modified: the SHA-256"),
        (lambda c: c.update(step=4), "corrupt or was modified"),
        (lambda c: c.pop("sha256"), "has no 'sha256' content hash"),
        (lambda c: c.update(version=1, sha256=None) or c.pop("sha256"), None),  # version 1: no hash, accepted
        (lambda c: c.update(stage="warmup"), "corrupt or was modified"),
    ],
)
def test_checkpoint_content_hash(stage_ckpts: dict[str, Path], tmp_path: Path, edit, match) -> None:
    path = tmp_path / "c.pt"
    shutil.copy(stage_ckpts["spixel"], path)
    _tamper(path, edit)
    if match is None:
        assert load_checkpoint(path)["version"] == 1
    else:
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path)


@pytest.mark.parametrize(
    "config, match",
    [
        ({"arch": "resnet9000", "spixel": {}}, r"config\['arch'\] must be one of"),
        (
            {"arch": "spixelfcn", "spixel": {"cell_size": 8, "width": 10**6}},
            r"spixel\.width must be an int in",
        ),
        ({"arch": "spixelfcn", "spixel": {"cell_size": 8, "width": 2, "evil": 1}}, "unknown keys"),
        (
            {"arch": "spixelfcn", "spixel": {"cell_size": "8", "width": 2}},
            r"spixel\.cell_size must be an int",
        ),
        ({"arch": "spixelfcn"}, "section 'spixel' must be a dict"),
        (
            {
                "arch": "deeplabv3plus",
                "deeplab": {"num_classes": 21, "backbone": "resnet18", "aspp_channels": 10**7},
            },
            r"deeplab\.aspp_channels must be an int in \[1, 4096\]",
        ),
        (
            {"arch": "deeplabv3plus", "deeplab": {"num_classes": 21, "backbone": "vgg16"}},
            r"deeplab\.backbone must be one of",
        ),
        (
            {"arch": "spixelfcn", "spixel": {"cell_size": 8, "width": 2, "centre_bias": float("nan")}},
            "centre_bias must be a finite number",
        ),
        (  # before: math.isfinite's OverflowError, not a CheckpointError
            {"arch": "spixelfcn", "spixel": {"cell_size": 8, "width": 2, "centre_bias": 10**400}},
            "centre_bias must be a finite number",
        ),
    ],
)
def test_bad_model_configs_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict, match: str
) -> None:
    from examples.voc_joint.models import build as build_mod

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a layer was built from an invalid config")

    ck = _stage_ckpt(SpixelFCN(width=2), "spixel")
    ck["config"]["model"] = config
    path = save_checkpoint(tmp_path / "c.pt", ck)
    monkeypatch.setattr(build_mod, "DeepLabV3Plus", no_build)
    monkeypatch.setattr(build_mod, "SpixelFCN", no_build)
    for load in (load_checkpoint, load_model_from_checkpoint):
        with pytest.raises(CheckpointError, match=match):
            load(path)


def test_a_crafted_checkpoint_of_a_huge_fusion_stack_is_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 fusion widths of 8192 (each layer within the bound) in a tiny file: the model was built before its
    weights were compared, 4e9 parameters (15 GiB) and about 17 minutes of initialization."""
    from examples.voc_joint.models import JointModel, model_config
    from examples.voc_joint.models import joint as joint_mod

    def no_stack(*args: object, **kwargs: object) -> None:
        raise AssertionError("a fusion stack was built from an invalid config")

    torch.manual_seed(0)
    joint = JointModel(DeepLabV3Plus(21, "resnet18", aspp_channels=8), SpixelFCN(8, 2), fusion=False)
    ck = {**_stage_ckpt(joint, "joint"), "model": {}}
    ck["config"]["model"] = model_config(joint)
    ck["config"]["model"]["joint"].update(fusion=True, fusion_hidden=[8192] * 16)
    path = save_checkpoint(tmp_path / "huge.pt", ck)
    monkeypatch.setattr(joint_mod, "FusionStack", no_stack)
    for load in (load_checkpoint, load_model_from_checkpoint):
        with pytest.raises(
            CheckpointError, match=r"joint\.fusion_hidden \[8192, .*\] makes 1007149056 fusion weights"
        ):
            load(path)


def test_weights_of_other_shapes_than_the_config_are_refused_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny file whose config asks for a large fusion stack (3 x 8192: within the bounds, 2 GiB and minutes
    to build) is compared with the shapes of a model built on the meta device (nothing allocated) first."""
    from examples.voc_joint import models
    from examples.voc_joint.models import JointModel

    built_on: list[torch.device] = []

    def spy(*args: Any, **kwargs: Any) -> torch.nn.Module:
        built_on.append(torch.get_default_device())
        return build(*args, **kwargs)

    build = models.build_model
    monkeypatch.setattr(models, "build_model", spy)
    joint = JointModel(DeepLabV3Plus(21, "resnet18", aspp_channels=8), SpixelFCN(8, 2), fusion_hidden=[64])
    ck = _stage_ckpt(joint, "joint")
    ck["config"]["model"]["joint"]["fusion_hidden"] = [8192] * 3
    path = save_checkpoint(tmp_path / "c.pt", ck)
    with pytest.raises(
        CheckpointError,
        match=r"c\.pt does not match its own model config: missing keys \['fusion\.layers\.4\.bias', .*\], "
        r"unexpected keys \[\], other shapes \['fusion\.layers\.0\.weight \(128, 42, 1, 1\) \(config: "
        r"\(16384, 42, 1, 1\)\)'",
    ):
        load_model_from_checkpoint(path)
    assert built_on == [torch.device("meta")]


@pytest.mark.parametrize(
    "network, edit, match",
    [
        ("spixel", lambda c: c.update(model=[1, 2]), r"got list"),
        ("spixel", lambda c: c.update(model=torch.zeros(3)), r"got Tensor"),
        ("spixel", lambda c: c.update(model={0: torch.zeros(1)}), r"got the key 0 \(int\) -> Tensor"),
        (
            "spixel",
            lambda c: c["model"].update({"pred.bias": 0.5}),
            r"got the key 'pred\.bias' \(str\) -> float",
        ),
        (  # before: RuntimeError "Boolean value of Tensor with more than one value is ambiguous"
            "deeplab",
            lambda c: c["config"]["model"]["deeplab"].update(output_stride=torch.tensor([8, 16])),
            r"deeplab\.output_stride must be one of \(8, 16\), got tensor\(\[ 8, 16\]\)",
        ),
        (  # before: accepted by the config check (tensor(16) in (8, 16)), then a plain ValueError
            "deeplab",
            lambda c: c["config"]["model"]["deeplab"].update(output_stride=torch.tensor(16)),
            r"deeplab\.output_stride must be one of \(8, 16\), got tensor\(16\)",
        ),
        (  # before: a bare SpixelFCN from load_model_from_checkpoint(path, expect_stage="seg")
            "spixel",
            lambda c: c.update(stage="seg"),
            r"is a 'seg' checkpoint, whose model must have arch 'deeplabv3plus', got 'spixelfcn'",
        ),
        ("deeplab", lambda c: c.update(stage="joint"), r"arch 'joint', got 'deeplabv3plus'"),
        (  # before: loaded (save_checkpoint never writes one), evaluated to garbage or trained on to NaN
            "spixel",
            lambda c: c["model"]["pred.bias"].fill_(float("nan")),
            r"c\.pt: model\.pred\.bias holds NaN or infinite values",
        ),
        (
            "spixel",
            lambda c: c.update(optimizer={"state": {0: {"exp_avg": torch.full((2,), -float("inf"))}}}),
            r"c\.pt: optimizer\.state\.0\.exp_avg holds NaN or infinite values",
        ),
    ],
)
def test_crafted_checkpoints_with_a_valid_hash_are_refused(
    tmp_path: Path, network: str, edit, match: str
) -> None:
    """A malformed checkpoint whose content hash matches (anyone can compute one) is a CheckpointError for
    every reader, never an AttributeError, a RuntimeError or a model of another stage."""
    make = {
        "deeplab": lambda: DeepLabV3Plus(21, "resnet18", aspp_channels=8),
        "spixel": lambda: SpixelFCN(8, 2),
    }
    ck = _stage_ckpt(make[network](), "seg" if network == "deeplab" else "spixel")
    edit(ck)
    path = tmp_path / "c.pt"
    torch.save({**ck, "sha256": payload_sha256(ck)}, path)
    readers: list[Callable[[Path], object]] = [
        load_checkpoint,
        load_model_from_checkpoint,
        lambda p: load_model_from_checkpoint(p, expect_stage=ck["stage"]),
        lambda p: load_weights_into(make[network](), p),
        lambda p: load_network(p, network),
    ]
    for read in readers:
        with pytest.raises(CheckpointError, match=match):
            read(path)


@pytest.mark.parametrize("dtype", [torch.int32, torch.float16, torch.complex64])
@pytest.mark.parametrize("network", ["deeplab", "spixel"])
def test_weights_of_another_dtype_are_refused_not_converted(tmp_path: Path, network: str, dtype) -> None:
    """``load_state_dict`` copies a weight of another dtype into the model, converted: a file of integer
    weights (conv weights truncated to zeros), half-precision or complex ones (the imaginary part dropped,
    with a warning) gave a model of other weights, silently; now every reader of weights names the entry."""
    make = {
        "deeplab": lambda: DeepLabV3Plus(21, "resnet18", aspp_channels=8),
        "spixel": lambda: SpixelFCN(8, 2),
    }
    net = make[network]()
    ck = _stage_ckpt(net, "seg" if network == "deeplab" else "spixel")
    key = next(iter(ck["model"]))
    ck["model"][key] = ck["model"][key].to(dtype)
    path = save_checkpoint(tmp_path / "c.pt", ck)
    other = rf"other dtypes \['{re.escape(key)} {re.escape(str(dtype))} \(%s: torch\.float32\)'\]"
    with pytest.raises(
        CheckpointError, match=r"c\.pt does not match its own model config: .*" + other % "config"
    ):
        load_model_from_checkpoint(path)
    with pytest.raises(
        CheckpointError, match=r"c\.pt does not match its own model config: .*" + other % "config"
    ):
        load_network(path, network)
    with pytest.raises(CheckpointError, match=r"c\.pt does not match the model: " + other % "model"):
        load_weights_into(make[network](), path)


@pytest.fixture(scope="module")
def seg_run(tiny_voc: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seg stage of 1 step (of 2 epochs of 2 steps: unfinished) on the tiny set; its checkpoint."""
    from .helpers import train_args

    out = tmp_path_factory.mktemp("seg_run")
    argv = train_args(tiny_voc, out, "--stage", "seg", "--epochs", "2", "--max-steps", "1")
    return train_cli.main(argv)["seg"]


def _optimizer(c: dict[str, Any], **edits: Any) -> None:
    c["optimizer"] = {**c["optimizer"], **edits}


def _first_group_without_its_last_parameter(c: dict[str, Any]) -> None:
    groups = [dict(g) for g in c["optimizer"]["param_groups"]]
    groups[0]["params"] = groups[0]["params"][:-1]
    _optimizer(c, param_groups=groups)


@pytest.mark.parametrize(
    "edit, match",
    [
        (  # a checkpoint of weights only, e.g. one written for --seg-checkpoint
            lambda c: [c.pop(k) for k in ("step", "epoch", "optimizer", "scheduler", "scaler", "rng")],
            r"holds no training state to resume \(missing keys \['epoch', 'step', 'optimizer', 'scheduler', "
            r"'scaler', 'rng'\]\): a checkpoint of weights only can start a joint stage",
        ),
        (lambda c: c.pop("rng"), r"missing keys \['rng'\]"),  # was: KeyError: 'rng'
        (lambda c: c.update(epoch=-5), r"cannot be resumed: epoch must be an int >= 0, got -5"),  # trained
        (lambda c: c.update(step="1"), r"step must be an int >= 0, got '1'"),  # was: resumed
        (lambda c: c["config"].update(args=[1]), r"config\['args'\] must be a dict, got list"),  # TypeError
        (lambda c: c.update(optimizer={}), r"optimizer must be an optimizer state dict"),  # KeyError in torch
        (lambda c: c.update(scheduler=[1]), r"scheduler must be a state dict, got list"),  # TypeError
        (  # was: RuntimeError from torch.set_rng_state
            lambda c: c["rng"][0].update(torch=torch.zeros(3, dtype=torch.uint8)),
            r"rng\[0\] is not an RNG state that can be restored \(RuntimeError: Expected a "
            r"CPUGeneratorImplState",
        ),
        (  # was: ValueError from inside Optimizer.load_state_dict
            _first_group_without_its_last_parameter,
            r"the checkpoint's optimizer state cannot be restored into the seg model of its config "
            r"\(ValueError: loaded state dict contains a parameter group that doesn't match",
        ),
        (  # was: accepted, then a RuntimeError inside the first optimizer step
            lambda c: _optimizer(
                c, state={**c["optimizer"]["state"], 0: {"momentum_buffer": torch.zeros(1)}}
            ),
            r"optimizer state cannot be restored .*'momentum_buffer' of shape \(1,\) for a parameter of "
            r"shape \(64, 3, 7, 7\)",
        ),
        (  # was: accepted (only states with dimensions were compared), then the same RuntimeError
            lambda c: _optimizer(
                c, state={**c["optimizer"]["state"], 0: {"momentum_buffer": torch.zeros(())}}
            ),
            r"optimizer state cannot be restored .*'momentum_buffer' of shape \(\) for a parameter of "
            r"shape \(64, 3, 7, 7\)",
        ),
        (  # a step count (Adam's) is one value
            lambda c: _optimizer(
                c, state={**c["optimizer"]["state"], 0: {"momentum_buffer": None, "step": torch.zeros(2)}}
            ),
            r"optimizer state cannot be restored .*'step' of shape \(2,\) for a parameter of shape "
            r"\(64, 3, 7, 7\) \(expected one value, of shape \(\)\)",
        ),
        (  # was: resumed with the weights converted (this one truncated to zeros)
            lambda c: c["model"].update({"backbone.conv1.weight": c["model"]["backbone.conv1.weight"].int()}),
            r"the checkpoint's weights cannot be restored .*\(ValueError: other dtypes "
            r"\['backbone\.conv1\.weight torch\.int32 \(model: torch\.float32\)'\]\)",
        ),
        (  # was: RuntimeError from load_state_dict
            lambda c: c.update(model={k: v for k, v in c["model"].items() if k != "backbone.conv1.weight"}),
            r"the checkpoint's weights cannot be restored .*Missing key\(s\) in state_dict: "
            r'"backbone\.conv1\.weight"',
        ),
        (  # was: resumed with that BatchNorm's step counter set to 0 (the module versions were dropped with
            # the "module." prefix, and torch takes a module without one as saved before the counters)
            lambda c: c["model"].pop("backbone.bn1.num_batches_tracked"),
            r"the checkpoint's weights cannot be restored .*Missing key\(s\) in state_dict: "
            r'"backbone\.bn1\.num_batches_tracked"',
        ),
    ],
)
def test_resuming_a_checkpoint_without_a_well_formed_training_state_is_refused(
    seg_run: Path, tiny_voc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], edit, match: str
) -> None:
    """A checkpoint's hash proves nothing about who wrote it, and a checkpoint of weights only has no training
    state: --resume gave a KeyError, a TypeError or an error from inside torch's RNG or optimizer code (or
    trained on from a negative epoch); it is a usage error now (exit status 2) naming the part, and nothing is
    changed."""
    from .helpers import train_args

    ck = load_checkpoint(seg_run)
    ck["config"] = dict(ck["config"])
    ck["rng"] = [dict(ck["rng"][0])]
    edit(ck)
    path = tmp_path / "seg" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save({**ck, "sha256": payload_sha256(ck)}, path)
    before = path.read_bytes()
    argv = train_args(tiny_voc, tmp_path, "--stage", "seg", "--epochs", "2", "--max-steps", "2", "--resume")
    with pytest.raises(SystemExit) as info:
        train_cli.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and re.search(match, err), err
    assert path.read_bytes() == before and not (path.parent / "log.csv").exists()


def test_joint_config_consistency_checked(tmp_path: Path) -> None:
    from examples.voc_joint.models import JointModel, model_config

    joint = JointModel(DeepLabV3Plus(3, "resnet18", aspp_channels=8), SpixelFCN(cell_size=8, width=2), 3)
    config = model_config(joint)
    config["joint"]["num_classes"] = 4
    ck = {**_stage_ckpt(SpixelFCN(width=2), "joint"), "config": {"model": config, "args": {}}}
    with pytest.raises(CheckpointError, match=r"joint\.num_classes 4 differs from deeplab\.num_classes 3"):
        load_checkpoint(save_checkpoint(tmp_path / "j.pt", ck))


def test_truncated_and_garbage_files(stage_ckpts: dict[str, Path], tmp_path: Path) -> None:
    data = stage_ckpts["spixel"].read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"half\.pt.*cannot be read"):
        load_checkpoint(tmp_path / "half.pt")


def test_wrong_stage_checkpoints_in_train_evaluate_demo(
    voc6: Path, stage_ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.voc_joint import demo, evaluate

    spx, seg = stage_ckpts["spixel"], stage_ckpts["seg"]
    expect = "is a 'spixel' checkpoint (SpixelFCN); expected a 'seg' checkpoint"
    with pytest.raises(SystemExit) as info:
        train_cli.main(
            ["--data-root", str(voc6), "--output-dir", str(tmp_path), "--stage", "seg", "--resume", str(spx)]
        )
    assert info.value.code == 2 and expect in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        # without RUN's --from-scratch: with both checkpoints it is refused first (it would be ignored)
        argv = _argv(voc6, tmp_path, "--seg-checkpoint", str(spx), "--spixel-checkpoint", str(spx))
        train_cli.main([a for a in argv if a != "--from-scratch"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "--seg-checkpoint: checkpoint" in err and "expected a 'seg' or 'joint' checkpoint" in err
    with pytest.raises(SystemExit) as info:
        evaluate.main(["--checkpoint", str(spx), "--data-root", str(voc6), "--no-progress"])
    assert info.value.code == 2
    assert (
        "is a 'spixel' checkpoint (SpixelFCN); expected a 'seg' or 'joint' checkpoint"
        in capsys.readouterr().err
    )
    with pytest.raises(CheckpointError, match=r"is a 'seg' checkpoint .*expected a 'spixel' or 'joint'"):
        demo.join_pretrained(seg, seg, fusion=True)


# ----------------------------------------------------------------------------------------- bad CLI values
_BAD_TRAIN = [
    (["--log-every", "0"], "--log-every: must be an integer >= 1, got 0"),
    (["--epochs", "0"], "--epochs: must be an integer >= 1"),
    (["--max-steps", "0"], "--max-steps: must be an integer >= 1"),
    (["--batch-size", "1"], "--batch-size: must be an integer >= 2"),
    (["--workers", "-1"], "--workers: must be an integer in [0, 256]"),
    (["--threads", "0"], "--threads: must be an integer in [1, 1024]"),
    (["--crop-size", "0"], "--crop-size: must be an integer in [1, 16384]"),
    (["--eval-crop", "-3"], "--eval-crop: must be an integer in [1, 16384]"),
    (["--num-classes", "0"], "--num-classes: must be an integer in [1, 255]"),
    (["--num-classes", "256"], "--num-classes: must be an integer in [1, 255]"),
    (["--aspp-channels", "0"], "--aspp-channels: must be an integer in [1, 4096]"),
    (["--cell-size", "0"], "--cell-size: must be an integer in [1, 1024]"),
    (["--spixel-width", "0"], "--spixel-width: must be an integer in [1, 256]"),
    (["--fusion-hidden", "64", "0"], "--fusion-hidden: must be an integer in [1, 65536]"),
    (["--fusion-hidden", "32"], "--fusion-hidden [32] below 2 x --num-classes = 42"),
    # a 68.7 GB allocation attempt (a traceback) when the stack was built; 8192 8192 takes 70 s and 4 GB
    (["--fusion-hidden", "64", "65536", "65536"], "widths 65536 and 65536 has 4294967296 weights, at most"),
    (["--fusion-hidden", *["64"] * 17], "--fusion-hidden takes at most 16 widths (hidden layers), got 17"),
    # each layer within the bound, 1e9 weights in all: 15 GiB and 17 minutes to build
    (["--fusion-hidden", *["8192"] * 16], "8192 makes 1007149056 fusion weights with 21 classes"),
    (["--max-image-pixels", "0"], "--max-image-pixels: must be an integer >= 1"),
    (["--seed", "-1"], "--seed: must be an integer in [0, 9223372036854775807]"),
    (["--epochs", "two"], "--epochs: expected an integer >= 1, got 'two'"),
    (["--momentum", "-0.1"], "--momentum: must be a finite number >= 0 and < 1"),
    (["--momentum", "1"], "--momentum: must be a finite number >= 0 and < 1"),
    (["--pos-weight", "nan"], "--pos-weight: must be a finite number >= 0 and <= 1e+06, got nan"),
    (["--poly-power", "nan"], "--poly-power: must be a finite number >= 0"),
    (["--seg-lr", "inf"], "--seg-lr: must be a finite number >= 0"),
    (["--lr=-1e-6"], "--lr: must be a finite number >= 0"),
    (["--spixel-lr", "nan"], "--spixel-lr: must be a finite number >= 0"),
    (["--fusion-lr", "x"], "--fusion-lr: expected a finite number >= 0 and <= 1e+06, got 'x'"),
    (["--spixel-pretrain-lr", "-1"], "--spixel-pretrain-lr: must be a finite number >= 0"),
    (["--head-lr-mult", "nan"], "--head-lr-mult: must be a finite number >= 0"),
    (["--weight-decay", "-1"], "--weight-decay: must be a finite number >= 0"),
    (["--spixel-loss-weight", "inf"], "--spixel-loss-weight: must be a finite number >= 0"),
    (["--spixel-centre-bias", "nan"], "--spixel-centre-bias: must be a finite number >= -100 and <= 100"),
    (["--scale-min", "0"], "--scale-min: must be a finite number > 0"),
    (["--scale-max", "inf"], "--scale-max: must be a finite number > 0"),
    (["--scale-min", "1.5", "--scale-max", "1.2"], "--scale-min 1.5 is larger than --scale-max 1.2"),
    (["--device", "tpu"], "--device: unknown device 'tpu': use cpu or cuda[:N]\n"),
    (["--device", "gpu"], "--device: unknown device 'gpu': use cpu or cuda[:N]\n"),  # not torch's list of 20
    (["--data-root", "/nonexistent/VOCtrainval_11-May-2012.tar"], "--data-root: folder not found"),
    # a device no machine has: "CUDA is not available" here, "this machine has N CUDA devices" on a GPU
    (["--device", "cuda:4096"], "--device: device 'cuda:4096' requested but "),
    (["--device", "meta"], "--device: device 'meta' is not supported by this pipeline"),
    (["--train-split", "../../etc/passwd"], "--train-split: must be a list name"),
    (["--val-split", ""], "--val-split: must be a list name"),
    (["--data-root", "/nonexistent/voc"], "--data-root: folder not found"),
    (["--data-root", __file__], "--data-root: expected a folder, got the file"),
    (["--seg-checkpoint", "/"], "--seg-checkpoint: expected a file, got the folder '/'"),
    (["--backbone-weights", "/nonexistent.pth"], "--backbone-weights: file not found"),
    (["--seg-checkpoint", "/nonexistent.pt"], "--seg-checkpoint: file not found"),
    (["--spixel-checkpoint", "/nonexistent.pt"], "--spixel-checkpoint: file not found"),
    (["--resume", "/nonexistent.pt"], "--resume checkpoint not found"),
    (["--resume", "--overwrite"], "--overwrite with --resume (auto) contradicts itself"),
    (["--allow-option-changes"], "--allow-option-changes only applies with --resume"),
    (["--backbone", "resnet9"], "--backbone: invalid choice"),
    (["--fusion-init", "glorot"], "--fusion-init: invalid choice: 'glorot'"),
    (["--no-fusion", "--fusion-hidden", "128"], "--no-fusion with --fusion-hidden 128: without the fusion"),
    (["--no-fusion", "--fusion-activation", "none"], "--no-fusion with --fusion-activation none: without"),
    (["--no-fusion", "--fusion-lr", "0.5"], "--no-fusion with --fusion-lr 0.5: without the fusion stack"),
    (["--no-fusion", "--no-recompute-fusion"], "--no-fusion with --no-recompute-fusion: without"),
    (["--channels-last=no"], "--channels-last/--no-channels-last: ignored explicit argument 'no'"),
    (["--recompute-fusion=1"], "--recompute-fusion/--no-recompute-fusion: ignored explicit argument '1'"),
    (["--compile=yes"], "--compile/--no-compile: ignored explicit argument 'yes'"),
    (["--recompute-loss=on"], "--recompute-loss/--no-recompute-loss: ignored explicit argument 'on'"),
]
_BAD_EVALUATE = [
    (["--crop-size", "0"], "--crop-size: must be an integer in [1, 16384]"),
    (["--pad-to-multiple", "0"], "--pad-to-multiple: must be an integer in [1, 16384]"),
    (["--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    (["--workers", "-1"], "--workers: must be an integer in [0, 256]"),
    (["--max-panels", "-1"], "--max-panels: must be an integer >= 0"),
    (["--boundary-widths", "1", "0"], "--boundary-widths: must be an integer in [1, 16384]"),
    (["--boundary-tolerance", "-1"], "--boundary-tolerance: must be an integer in [0, 16384]"),
    (["--max-image-pixels", "0"], "--max-image-pixels: must be an integer >= 1"),
    (["--device", "tpu"], "--device: unknown device 'tpu': use cpu or cuda[:N]\n"),
    (["--split", "a/b"], "--split: must be a list name"),
    (["--data-root", "/nonexistent"], "--data-root: folder not found"),
]
_BAD_DEMO = [
    (["--seg-epochs", "0"], "--seg-epochs: must be an integer >= 1"),
    (["--spixel-epochs", "0"], "--spixel-epochs: must be an integer >= 1"),
    (["--joint-epochs", "-2"], "--joint-epochs: must be an integer >= 1"),
    (["--max-steps", "0"], "--max-steps: must be an integer >= 1"),
    (["--crop-size", "0"], "--crop-size: must be an integer in [1, 16384]"),
    (["--batch-size", "1"], "--batch-size: must be an integer >= 2"),
    (["--cell-size", "0"], "--cell-size: must be an integer in [1, 1024]"),
    (["--joint-lr", "nan"], "--joint-lr: must be a finite number >= 0"),
    (["--fusion-lr", "-1"], "--fusion-lr: must be a finite number >= 0"),
    (["--max-val-images", "0"], "--max-val-images: must be an integer >= 1"),
    (["--threads", "0"], "--threads: must be an integer in [1, 1024]"),
    (["--data-root", "/nonexistent"], "--data-root: folder not found"),
]
_BAD_ABLATION = [
    (["--seeds", "0"], "--seeds: must be an integer in [1, 100]"),
    (["--seeds", "101"], "--seeds: must be an integer in [1, 100]"),
    (["--steps", "0"], "--steps: must be an integer >= 1"),
    (["--eval-every", "-1"], "--eval-every: must be an integer >= 1"),
    (["--max-steps", "0"], "--max-steps: must be an integer >= 1"),
    (["--seg-epochs", "0"], "--seg-epochs: must be an integer >= 1"),
    (["--batch-size", "1"], "--batch-size: must be an integer >= 2"),
    (["--joint-lr", "nan"], "--joint-lr: must be a finite number >= 0"),
    (["--fusion-lr", "inf"], "--fusion-lr: must be a finite number >= 0"),
    (["--max-val-images", "0"], "--max-val-images: must be an integer >= 1"),
    (["--threads", "0"], "--threads: must be an integer in [1, 1024]"),
    (["--variants", "glorot"], "--variants: invalid choice: 'glorot'"),
    (["--variants", "xavier", "xavier"], "--variants lists a variant twice"),
    (["--data-root", "/nonexistent"], "--data-root: folder not found"),
    (["--seg-checkpoint", "/nonexistent.pt"], "--seg-checkpoint: file not found"),
    (["--spixel-checkpoint", __file__], "--seg-checkpoint and --spixel-checkpoint go together"),
]
_BAD_SYNTHETIC = [
    (["--num-train", "0"], "--num-train: must be an integer in [1, 1000000]"),
    (["--num-val", "0"], "--num-val: must be an integer in [1, 1000000]"),
    (["--height", "8"], "--height: must be an integer in [16, 16384]"),
    (["--width", "-1"], "--width: must be an integer in [16, 16384]"),
    (["--seed", "-5"], "--seed: must be an integer in [0, 9223372036854775807]"),
    (["--num-sbd-extra", "-1"], "--num-sbd-extra: must be an integer in [0, 1000000]"),
    (["--band-radius", "-1"], "--band-radius: must be an integer in [0, 16384]"),
]


def _cli_cases() -> list[object]:
    cases = []
    tables = (
        ("train", _BAD_TRAIN),
        ("evaluate", _BAD_EVALUATE),
        ("demo", _BAD_DEMO),
        ("ablation", _BAD_ABLATION),
    )
    for tool, table in tables:
        cases += [pytest.param(tool, argv, msg, id=f"{tool}{' '.join(argv)}") for argv, msg in table]
    cases += [
        pytest.param("synthetic", argv, msg, id=f"synthetic{' '.join(argv)}") for argv, msg in _BAD_SYNTHETIC
    ]
    return cases


@pytest.mark.parametrize("tool, argv, message", _cli_cases())
def test_every_bad_cli_value_exits_2_at_parse_time(
    tool: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples.voc_joint import ablation, demo, evaluate, synthetic

    run: Callable[[list[str]], object]
    if tool == "train":

        def run(a: list[str]) -> object:
            parser = train_options.build_parser()
            args = parser.parse_args(a)
            train_options.check_args(parser, args)
            return args

        base = ["--output-dir", str(tmp_path)]
    elif tool == "evaluate":
        (tmp_path / "c.pt").touch()
        run, base = evaluate.main, ["--checkpoint", str(tmp_path / "c.pt")]
    elif tool == "demo":
        run, base = demo.build_parser().parse_args, []
    elif tool == "ablation":
        run, base = ablation.main, ["--output-dir", str(tmp_path / "abl")]
    else:
        run, base = synthetic.main, ["--output-dir", str(tmp_path / "syn")]
    with pytest.raises(SystemExit) as info:
        run([*base, *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err[-600:]
    assert not list(tmp_path.glob("*/checkpoint.pt")) and not (tmp_path / "syn").exists()
    assert not (tmp_path / "abl").exists()


# ------------------------------------------------------------------------------------ torchrun + data set
def test_torchrun_two_ranks_generate_the_synthetic_set_and_train(tmp_path: Path) -> None:
    """2 processes (gloo) start with an empty cache: one generates the default synthetic set, the other waits;
    both train one DDP step of the joint model on it."""
    cache = tmp_path / "cache"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "examples/voc_joint/train.py", "--output-dir", str(tmp_path / "run"), *RUN, "--max-steps", "1",
        "--workers", "0",
    ]  # fmt: skip
    env = {**_torchrun_env(tmp_path), "TRANSINIT_CACHE": str(cache)}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "x2" in res.stdout  # rank 0 reports a world size of 2
    root = cache / "synthetic_voc"
    assert (root / "synthetic_voc.json").is_file() and len(list((root / "JPEGImages").glob("*.jpg"))) == 112
    assert not [p.name for p in cache.iterdir() if p.name.endswith((".tmp", ".old"))]  # no half-written set
    ck = load_checkpoint(tmp_path / "run" / "joint" / "checkpoint.pt")
    assert (ck["step"], ck["world_size"], ck["complete"]) == (1, 2, True)
    assert not any(k.startswith("module.") for k in ck["model"])


def _torchrun(
    out: Path, root: Path, *extra: str, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    """train.py in 2 processes (gloo) on ``root``, writing to ``out``."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "examples/voc_joint/train.py", "--data-root", str(root), "--output-dir", str(out), *RUN,
        "--workers", "0", *extra,
    ]  # fmt: skip
    return subprocess.run(
        cmd, cwd=ROOT, env=_torchrun_env(out.parent, fault), capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def _torchrun_env(tmp_path: Path, fault: str | None = None) -> dict[str, str]:
    """``_env`` with a temporary folder in ``tmp_path``: torchrun makes a ``torchelastic_*`` log folder in the
    temporary folder when no ``--log-dir`` is given and never removes it (one stayed in /tmp per run)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {**script_env(fault), "TMPDIR": str(tmp)}


@pytest.mark.slow
def test_torchrun_two_ranks_interrupted_and_resumed_bit_exact(voc6: Path, tmp_path: Path) -> None:
    """2 processes, SIGINT in step 2 (in both), then --resume: bit-identical to the uninterrupted 2-process
    run. Every process draws its own dropout masks from its own RNG: the checkpoint holds each rank's RNG
    states and each rank restores its own (all ranks restored rank 0's, so the resumed run differed)."""
    ref = _torchrun(tmp_path / "ref", voc6)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    res = _torchrun(tmp_path / "cut", voc6, fault="sigint@step:2")
    assert res.returncode != 0 and load_checkpoint(tmp_path / "cut" / "joint" / "checkpoint.pt")["step"] == 2
    res = _torchrun(tmp_path / "cut", voc6, "--resume")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    a, b = tmp_path / "ref" / "joint", tmp_path / "cut" / "joint"
    assert_same_training_state(a / "checkpoint.pt", b / "checkpoint.pt")
    assert len(load_checkpoint(a / "checkpoint.pt")["rng"]) == 2  # one RNG state per rank
    assert_same_log(a, b)
    for row in _log(b):  # the logged parts are the processes' means, as the loss
        assert float(row["loss"]) == pytest.approx(float(row["ce"]) + float(row["spixel"]), abs=2e-6), row


def test_a_process_waiting_for_the_others_to_join_stops_on_sigterm(voc6: Path, tmp_path: Path) -> None:
    """Rank 0 of 2 whose peer never joins (it failed at start: no data on its machine) waits in
    ``init_process_group``; torchrun then stops it with SIGTERM. It ignored that SIGTERM: the signal guard,
    installed before the process group, recorded it for a safe point that the wait never reaches, and torchrun
    killed it with SIGKILL 30 s later ("Unable to shutdown process ... via 15"); without torchrun it waited
    for the group's 30-minute timeout. The guard starts after the group is formed now."""
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**script_env(), "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(port)
    cmd = [sys.executable, "examples/voc_joint/train.py", "--data-root", str(voc6), "--output-dir"]
    proc = subprocess.Popen(
        [*cmd, str(tmp_path / "run"), *RUN, "--workers", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        while True:  # rank 0 serves the group's store on MASTER_PORT once it waits in init_process_group
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("rank 0 ignored SIGTERM while waiting for the other process to join")
        assert proc.returncode == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert not (tmp_path / "run").exists()  # stopped before any output folder


_LONG_EVALUATION = """
import datetime, sys, time
from pathlib import Path
import torch.distributed as dist
from examples.voc_joint import distributed, engine, train
from examples.voc_joint.signals import InterruptGuard

dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=2))  # a short group timeout
info = distributed.init_distributed("cpu")
engine.evaluate_checkpoint = lambda *args: time.sleep(6)  # rank 0's evaluation outlasts it
train._evaluate("seg", Path("checkpoint.pt"), None, info, InterruptGuard(), Path("."))
print("evaluated", info.rank, flush=True)
distributed.cleanup_distributed()
"""


def _ranks(
    cmd: list[str], cwd: Path, faults: tuple[str | None, str | None], timeout: float
) -> list[tuple[int, str]]:
    """``cmd`` as ranks 0 and 1 of a gloo group (torchrun's environment, without torchrun: each rank gets its
    own fault and its own exit status, in its own session): ``[(exit status, stdout + stderr)]`` by rank."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank, fault in enumerate(faults):
        env = {**script_env(fault), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return [(p.returncode, o) for p, o in zip(procs, outs, strict=True)]


def test_the_other_processes_wait_for_an_evaluation_longer_than_the_groups_timeout(tmp_path: Path) -> None:
    """--eval runs on rank 0 while the others wait; they waited at a barrier of the process group, under its
    timeout (torch's default: 30 minutes with gloo, 10 with NCCL), so a longer evaluation ended the run with a
    timeout error. Here the group's timeout is 2 s and the evaluation takes 6 s: both processes finish."""
    script = tmp_path / "long_evaluation.py"
    script.write_text(_LONG_EVALUATION)
    results = _ranks([sys.executable, str(script)], tmp_path, (None, None), timeout=120)
    for rank, (rc, out) in enumerate(results):
        assert rc == 0 and f"evaluated {rank}" in out, out[-3000:]


def _two_processes(out: Path, root: Path, faults: tuple[str | None, str | None]) -> list[tuple[int, str]]:
    """train.py as ranks 0 and 1 (:func:`_ranks`) on ``root`` writing to ``out``, each rank with its fault."""
    cmd = [sys.executable, "examples/voc_joint/train.py", "--data-root", str(root), "--output-dir", str(out)]
    return _ranks([*cmd, *RUN, "--workers", "0"], ROOT, faults, timeout=240)


def test_a_signal_to_one_process_gives_every_process_its_exit_status(voc6: Path, tmp_path: Path) -> None:
    """SIGTERM (a scheduler's) to rank 1 only, in step 2: both processes stop after that step, and both exit
    143. Rank 0 exited 130, Ctrl-C's status, as the processes shared a stop flag, not the signal's number."""
    (rc0, out0), (rc1, out1) = _two_processes(tmp_path / "run", voc6, (None, "sigterm@step:2"))
    assert (rc0, rc1) == (143, 143), out0[-3000:] + out1[-3000:]
    assert "[joint] interrupted: checkpoint of step 2" in out0
    assert load_checkpoint(tmp_path / "run" / "joint" / "checkpoint.pt")["step"] == 2


def test_a_process_lost_to_sigkill_leaves_the_other_one_line(voc6: Path, tmp_path: Path) -> None:
    """Rank 1 killed (SIGKILL) in step 2 of 3 (1 step per epoch): rank 0's next collective fails, and it
    printed gloo's "Connection closed by peer" / "reset by peer" traceback. Now: one line naming the lost
    process and the checkpoint to resume from (epoch 1's end), exit status 1."""
    (rc0, out0), (rc1, _) = _two_processes(tmp_path / "run", voc6, (None, "sigkill@step:2"))
    ckpt = tmp_path / "run" / "joint" / "checkpoint.pt"
    assert (rc0, rc1) == (1, -9), out0[-3000:]
    assert "Traceback" not in out0, out0[-3000:]
    line = (
        "[train] error: another of the 2 processes was lost (killed or crashed: its own output or the "
        f"launcher's report says why); the last checkpoint of the joint stage, {ckpt}, is intact: continue "
        "with --resume\n"
    )
    assert out0.endswith(line), out0[-3000:]
    assert load_checkpoint(ckpt)["step"] == 1


# ------------------------------------------------------------------- locks, signal guard, fault specs


def test_folder_lock_is_reentrant_reports_held_and_names_its_current_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.voc_joint.locking import FolderLock, FolderLockedError

    monkeypatch.setattr(sys, "argv", ["train.py", *["--a-long-option"] * 20])
    lock = FolderLock(tmp_path / "run")
    assert not lock.held
    with lock:
        assert lock.acquire() is lock and lock.held  # taking a held lock again is a no-op
    assert not lock.held
    monkeypatch.setattr(sys, "argv", ["short.py"])  # a shorter holder than the previous one
    holder = rf"in use by pid {os.getpid()} .*\(command: short\.py\)"
    with FolderLock(tmp_path / "run"), pytest.raises(FolderLockedError, match=holder):
        FolderLock(tmp_path / "run").acquire()
    assert (tmp_path / "run" / ".lock").read_text().count("\n") == 1  # the last holder only


def test_interrupt_guard_defers_a_second_signal_inside_a_critical_section() -> None:
    import signal
    import threading

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    assert threading.current_thread() is threading.main_thread()  # handlers can be installed here
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    reached = False
    with InterruptGuard() as guard:
        with guard:  # nested use of the same guard
            os.kill(os.getpid(), signal.SIGTERM)  # the first signal is only recorded
            assert guard.requested == signal.SIGTERM
        with pytest.raises(Interrupted) as info, guard.critical():
            os.kill(os.getpid(), signal.SIGINT)  # the second one waits for the end of the section
            reached = True
        assert reached and info.value.forced and info.value.signum == signal.SIGINT
    assert {s: signal.getsignal(s) for s in before} == before  # the previous handlers are back


def test_interrupt_guard_released_section_restores_the_guard() -> None:
    import signal

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    with InterruptGuard() as guard:
        with guard.released(), pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)  # default behaviour inside: stop at once
        try:
            os.kill(os.getpid(), signal.SIGINT)  # after it: recorded again
        except Interrupted:
            pytest.fail("after released(), a signal must be recorded by the guard, not raised")
        assert guard.requested == signal.SIGINT


def test_interrupt_guard_stops_at_once_on_a_second_signal_outside_a_critical_section() -> None:
    """A second Ctrl-C outside a checkpoint write stops at once (forced: no new checkpoint)."""
    import signal

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    with InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)
        assert info.value.forced and info.value.signum == signal.SIGINT and info.value.exit_code == 130
        assert guard.requested == signal.SIGTERM  # the first signal stays the one recorded


def test_interrupt_guard_check_raises_the_recorded_signal_unforced() -> None:
    import signal

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    guard = InterruptGuard()
    guard.check()  # nothing recorded: no-op
    guard.requested = signal.SIGTERM
    with pytest.raises(Interrupted) as info:
        guard.check()
    assert not info.value.forced and info.value.exit_code == 143
    assert str(info.value) == "SIGTERM"  # the signal's name in a traceback, not an empty message


def test_interrupt_guard_released_outside_the_guard_leaves_the_handlers_alone() -> None:
    import signal

    from examples.voc_joint.signals import InterruptGuard

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with InterruptGuard().released():  # the guard was never entered: nothing to release
            assert {s: signal.getsignal(s) for s in before} == before
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_interrupt_guard_defers_a_second_signal_to_the_end_of_the_outermost_critical_section() -> None:
    """Critical sections nest: a second signal inside the inner one acts at the end of the outer one (the
    checkpoint write as a whole), once; a later section raises nothing more."""
    import signal

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    reached = []
    with InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded
        with pytest.raises(Interrupted) as info, guard.critical():
            with guard.critical():
                os.kill(os.getpid(), signal.SIGINT)  # deferred
            reached.append("inner end")  # still inside the outer section: nothing raised yet
        assert reached == ["inner end"] and info.value.forced and info.value.signum == signal.SIGINT
        try:
            with guard.critical():  # the deferred signal acted: it does not act again
                reached.append("next section")
        except Interrupted:
            pytest.fail("a signal deferred by a critical section acted again at the end of the next one")
    assert reached == ["inner end", "next section"]


def test_interrupt_guard_section_that_fails_does_not_leave_its_deferred_signal_to_the_next() -> None:
    """A second signal deferred by a critical section that then failed (a full disk during the checkpoint
    write) stayed pending: the error went on, and the next section that ended cleanly raised that stale
    forced stop. The error goes on alone now; the first signal stays recorded."""
    import errno
    import signal

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    with InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGTERM)  # recorded
        with pytest.raises(OSError, match="No space"), guard.critical():
            os.kill(os.getpid(), signal.SIGINT)  # deferred
            raise OSError(errno.ENOSPC, "No space left on device")
        try:
            with guard.critical():
                pass
        except Interrupted:
            pytest.fail("the stop deferred by a failed section was raised by the next one")
        with pytest.raises(Interrupted) as info:
            guard.check()
        assert info.value.signum == signal.SIGTERM and not info.value.forced


def test_interrupt_guard_that_has_ended_releases_nothing() -> None:
    """``released()`` of a guard that was entered and has ended leaves the handlers alone, as that of a guard
    never entered (it installed the guard's handler, which then outlived the guard)."""
    import signal

    from examples.voc_joint.signals import InterruptGuard

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    guard = InterruptGuard()
    with guard:
        pass
    try:
        with guard.released():
            assert {s: signal.getsignal(s) for s in before} == before
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_run_stoppable_gives_a_keyboard_interrupt_raised_by_code_sigints_line_and_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A plain ``KeyboardInterrupt`` (raised by code, not by the guard's handler, which raises
    ``Interrupted``) is SIGINT's stop too: one line and 130, not a traceback."""
    from examples.voc_joint.signals import run_stoppable

    def main() -> int:
        raise KeyboardInterrupt

    try:
        status = run_stoppable(main, "prog", "nothing was written")
    except KeyboardInterrupt:  # escaped: it would be a traceback
        pytest.fail("run_stoppable let a KeyboardInterrupt through")
    assert status == 130
    assert capsys.readouterr().err == "prog: stopped by SIGINT (exit status 130); nothing was written\n"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("explode@step:1", "actions are"),
        ("sigint@nowhere:1", "points are"),
        ("sigint-step-1", "cannot parse"),
        ("nan-loss@save:1", "nan-loss acts at step points only"),  # was accepted, and never acted
        ("nan-weight@epoch-end:2", "nan-weight acts at step points only"),
        ("sigint@step:0", "counts from 1, got 0"),  # steps, saves and epochs count from 1: never hit
    ],
)
def test_fault_specs_are_checked(spec: str, match: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from examples.voc_joint import faults

    monkeypatch.setenv(faults.ENV, spec)
    with pytest.raises(ValueError, match=match):
        faults.hit("step", 1)


def test_fault_hooks_send_the_named_signal_at_exactly_the_given_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trailing comma is allowed; ``sigterm@step:2`` sends SIGTERM at step 2 only."""
    import signal

    from examples.voc_joint import faults

    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setenv(faults.ENV, "sigterm@step:2,")
    for step in (1, 2, 3):
        faults.hit("step", step)
    assert sent == [(os.getpid(), signal.SIGTERM)]


def test_a_fault_acts_at_its_own_point_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``crash@save:2`` crashes the second save, not global step 2 nor the end of epoch 2."""
    from examples.voc_joint import faults

    monkeypatch.setenv(faults.ENV, "crash@save:2")
    faults.hit("step", 2)
    faults.hit("epoch-end", 2)
    with pytest.raises(RuntimeError, match=r"injected crash at save:2$"):
        faults.hit("save", 2)


def test_interrupt_guard_leaves_an_ignored_signal_ignored() -> None:
    """A signal ignored when the guard starts (SIGINT of a job a shell script starts with ``&``) stays
    ignored, in the guard and in its released sections; the other signal is still recorded."""
    import signal

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with InterruptGuard() as guard:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert guard.requested is None
            with guard.released():
                assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
                os.kill(os.getpid(), signal.SIGINT)  # would raise Interrupted if it were watched
                with pytest.raises(Interrupted):
                    os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.requested == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_interrupt_guard_records_sighup_as_sigterm_with_exit_status_129() -> None:
    """SIGHUP (a closed terminal) is recorded and acted upon as SIGTERM; a SIGHUP the process was started to
    ignore (``nohup``) stays ignored."""
    import signal

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    with InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGHUP)
        assert guard.requested == signal.SIGHUP
        with pytest.raises(Interrupted) as info:
            guard.check()
        assert info.value.exit_code == 129 and not info.value.forced
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with InterruptGuard() as guard:
            os.kill(os.getpid(), signal.SIGHUP)
            with guard.released():
                os.kill(os.getpid(), signal.SIGHUP)  # would raise Interrupted if it were watched
            assert guard.requested is None
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_detach_hung_up_output_points_a_hung_up_terminal_at_the_null_device() -> None:
    """A pty whose other end was closed (a closed terminal) fails every write with EIO: it is pointed at the
    null device, a pipe is left alone."""
    from examples.voc_joint.signals import detach_hung_up_output

    master, slave = os.openpty()
    read_end, write_end = os.pipe()
    try:
        assert detach_hung_up_output((slave, write_end)) == []  # a terminal still there, a pipe
        os.close(master)
        with pytest.raises(OSError, match="Input/output error"):
            os.write(slave, b"x")
        assert detach_hung_up_output((slave, write_end)) == [slave]
        assert os.write(slave, b"x") == 1  # to the null device
        assert os.write(write_end, b"y") == 1 and os.read(read_end, 1) == b"y"
    finally:
        for fd in (slave, read_end, write_end):
            os.close(fd)


def test_detach_hung_up_output_leaves_a_descriptor_failing_otherwise_alone(tmp_path: Path) -> None:
    """Only ``EIO`` is a hung-up terminal: a descriptor whose writes fail otherwise (``EBADF``: a standard
    output closed with ``>&-``) is not pointed at the null device (it stays closed)."""
    import contextlib
    import errno

    from examples.voc_joint.signals import detach_hung_up_output

    fd = os.open(tmp_path / "closed", os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    try:
        assert detach_hung_up_output((fd,)) == []
        with pytest.raises(OSError) as err:
            os.write(fd, b"")
        assert err.value.errno == errno.EBADF
    finally:
        with contextlib.suppress(OSError):  # closed, unless it was pointed at the null device
            os.close(fd)


def _stoppable_job(main_body: str, **popen: Any) -> subprocess.Popen[str]:
    """A ``python -c`` process in :data:`ROOT` whose ``main()`` (``main_body``, indented) runs under
    ``run_stoppable``, as every script without a checkpoint to save; stdout and stderr piped (unless
    ``popen`` gives them), text."""
    code = (
        "import sys, time\n"
        "from examples.voc_joint.signals import run_stoppable\n"
        f"def main():\n{main_body}"
        "sys.exit(run_stoppable(main, 'job', 'nothing written'))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=script_env(),
        text=True,
        **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen},
    )


def test_run_stoppable_stops_with_129_after_its_terminal_is_gone() -> None:
    """A command of ``run_stoppable`` writing to a terminal that was closed (every write fails with EIO) and
    then sent SIGHUP: its stop line goes to the null device and it exits 129, not 1 with an ``OSError``
    raised by the stop line itself."""
    import select
    import signal

    master, slave = os.openpty()
    proc = _stoppable_job(
        "    print('ready', flush=True)\n    time.sleep(60)\n    return 0\n", stdout=slave, stderr=slave
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"ready" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                seen += os.read(master, 1024)
        assert b"ready" in seen, seen
        os.close(master)  # the terminal is gone: its writes fail with EIO
        master = -1
        proc.send_signal(signal.SIGHUP)
        status = proc.wait(timeout=60)
    finally:
        if master >= 0:
            os.close(master)
        proc.kill()
    assert status == 129, f"exit status {status}"


def test_run_stoppable_stops_on_sighup_with_one_line_and_exit_status_129() -> None:
    """SIGHUP stops a command of ``run_stoppable`` at once, its ``finally`` blocks run, with one line and exit
    status 129 (before: killed by the signal, no line, no clean-up)."""
    import signal

    proc = _stoppable_job(
        "    try:\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        print('cleaned up', flush=True)\n"
        "    return 0\n"
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 129, err
    assert out == "cleaned up\n"
    assert err == "job: stopped by SIGHUP (exit status 129); nothing written\n"


@pytest.mark.parametrize("name", ["SIGINT", "SIGHUP"])
def test_a_command_started_with_a_signal_ignored_runs_on_after_it(name: str) -> None:
    """``run_stoppable`` (every script without a checkpoint to save) in a process started with SIGINT ignored,
    as ``cmd &`` in a shell script starts it, or SIGHUP ignored, as ``nohup cmd`` does: that signal leaves it
    running, SIGTERM still stops it (143)."""
    import signal
    import subprocess

    if not hasattr(signal, name):
        pytest.skip(f"no {name} on this platform")
    number = getattr(signal, name)
    proc = _stoppable_job(
        "    print('ready', flush=True)\n"
        "    sys.stdin.readline()  # the test's go-ahead after its signal\n"
        "    print('still running', flush=True)\n"
        "    time.sleep(60)\n"
        "    return 0\n",
        stdin=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(number, signal.SIG_IGN),
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(number)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "still running\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err


class _SignalledWhileFinalized:
    """An object whose ``__del__`` signals its own process and goes on running Python code: the signal handler
    runs inside ``__del__``, where Python prints an exception it raises ("Exception ignored in ...") and drops
    it, as in an at-fork hook (a DataLoader starting its workers: logging's lock release) or a DataLoader
    iterator's shutdown."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __del__(self) -> None:
        os.kill(os.getpid(), self.signum)
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:  # the handler runs in here (a signal is handled between bytecodes)
            pass


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_run_stoppable_stops_on_a_signal_that_arrived_where_python_drops_exceptions(
    signame: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stop signal whose handler raised inside a ``__del__`` (an at-fork hook, a weakref callback: places
    where Python drops exceptions) still stops the command, with one line and ``128 + signal``: it was lost
    (the work ran to its end, exit status 0, under an "Exception ignored" traceback; seen with SIGTERM while
    ``evaluate.py``'s DataLoader workers started)."""
    import signal

    from examples.voc_joint.signals import exit_status, run_stoppable

    signum = getattr(signal, signame)
    ended = []

    def main() -> int:
        _SignalledWhileFinalized(signum)  # collected at once: its __del__ runs here
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # the stop must come back while the work goes on
            time.sleep(0.005)
        ended.append(True)
        return 0

    status = run_stoppable(main, "prog", "nothing written")
    err = capsys.readouterr().err
    assert (status, ended) == (exit_status(signum), []), err
    assert err == f"prog: stopped by {signame} (exit status {exit_status(signum)}); nothing written\n"


def test_a_dropped_stop_is_not_delivered_after_its_guard_has_ended() -> None:
    """The redelivery of a stop that Python dropped comes from another thread a moment later: once the guard
    has ended (the work it guarded is over) it delivers nothing, rather than a KeyboardInterrupt wherever the
    main thread is by then (SIGINT's handler is Python's default one again)."""
    import signal

    from examples.voc_joint.signals import REDELIVERY_DELAY_S, InterruptGuard

    with InterruptGuard() as guard, guard.released():
        _SignalledWhileFinalized(signal.SIGINT)  # dropped inside __del__; redelivery due after the delay
    try:
        time.sleep(10 * REDELIVERY_DELAY_S)  # past the delay, outside the guard
    except KeyboardInterrupt:
        pytest.fail("a stop dropped inside the guard was delivered after it ended")


def test_the_guard_leaves_other_dropped_exceptions_to_the_previous_hook() -> None:
    """Inside the guard, ``sys.unraisablehook`` takes only the stops it raised; any other exception Python
    drops goes to the hook that was there before (pytest's, the default one), and that hook is back after."""
    import sys

    from examples.voc_joint.signals import InterruptGuard

    seen: list[BaseException] = []
    before = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: seen.append(unraisable.exc_value)
    try:
        previous = sys.unraisablehook
        with InterruptGuard():
            assert sys.unraisablehook is not previous

            class Failing:
                def __del__(self) -> None:
                    raise ValueError("dropped")

            Failing()
        assert sys.unraisablehook is previous
    finally:
        sys.unraisablehook = before
    assert [type(e) for e in seen] == [ValueError]


def test_an_injected_crash_at_a_counted_point_names_its_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """``crash@save:2`` says ``save:2``: the number the hook counted, not the ``None`` it was called with."""
    from examples.voc_joint import faults

    monkeypatch.setattr(faults, "_counts", faults.Counter())
    monkeypatch.setenv(faults.ENV, "crash@save:2")
    faults.hit("save")
    with pytest.raises(RuntimeError, match=r"injected crash at save:2$"):
        faults.hit("save")


def test_a_nan_after_the_resumed_run_wrote_its_own_checkpoint_names_it(
    voc6: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resumed from another folder's checkpoint (step 3), the run writes its own at step 6; a NaN at step 8
    names that one, not the resumed file, and the error's finding is the finding alone (ablation.py and
    demo.py build their own messages from it)."""
    first = train_cli.main(_argv(voc6, tmp_path / "a", "--workers", "0"))["joint"]
    monkeypatch.setenv("TRANSINIT_FAULT", "nan-loss@step:8")
    own = tmp_path / "b" / "joint" / "checkpoint.pt"
    with pytest.raises(NonFiniteError) as info:
        train_cli.main(
            [*_argv(voc6, tmp_path / "b", "--workers", "0"), "--epochs", "3", "--resume", str(first)]
        )
    assert f"the checkpoint of step 6 in {own} is the last good state" in str(info.value), str(info.value)
    assert info.value.finding.startswith("non-finite loss and gradients at step 8 (epoch 3; loss ")
    assert "training stopped" not in info.value.finding
    assert own.exists()


def test_an_interrupt_before_the_first_resumed_step_names_the_resumed_checkpoint(
    voc6: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resumed from another folder's checkpoint and stopped before any step (nothing new written): the stop
    line names the resumed checkpoint, the last good state, not this folder's unwritten checkpoint.pt."""
    first = train_cli.main(_argv(voc6, tmp_path / "a", "--workers", "0"))["joint"]
    capsys.readouterr()
    from examples.voc_joint import engine
    from examples.voc_joint.signals import Interrupted

    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **kw: "interrupt")  # a signal before step 4
    with pytest.raises(Interrupted):
        train_cli.main(
            [*_argv(voc6, tmp_path / "b", "--workers", "0"), "--epochs", "2", "--resume", str(first)]
        )
    err = capsys.readouterr().err
    assert f"[joint] interrupted: checkpoint of step 3 in {first} (continue with --resume)" in err, err
    assert not (tmp_path / "b" / "joint" / "checkpoint.pt").exists()


def test_interrupt_guard_section_that_fails_ends_the_section() -> None:
    """A critical section that ends by an error (a full disk during the checkpoint write) is over: a second
    signal afterwards, outside any section, stops at once (forced), as outside any other section. A failed
    section that stayed counted as open deferred every later second signal for good: Ctrl-C twice no longer
    stopped the run."""
    import errno
    import signal

    from examples.voc_joint.signals import Interrupted, InterruptGuard

    with InterruptGuard() as guard:
        with pytest.raises(OSError, match="No space"), guard.critical():
            raise OSError(errno.ENOSPC, "No space left on device")
        os.kill(os.getpid(), signal.SIGTERM)  # recorded
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGINT)  # outside any section: at once
        assert info.value.forced and info.value.signum == signal.SIGINT


def test_fault_specs_allow_spaces_around_their_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """``TRANSINIT_FAULT=" sigint@step:9 , crash@save:2 "`` is two entries: spaces around an entry are
    ignored, not parsed into the action or the number."""
    from examples.voc_joint import faults

    monkeypatch.setenv(faults.ENV, " sigint@step:9 , crash@save:2 ")
    faults.hit("save", 1)
    with pytest.raises(RuntimeError, match=r"injected crash at save:2$"):
        faults.hit("save", 2)


def test_every_signal_action_sends_its_own_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """``sigint``, ``sigterm``, ``sighup`` and ``sigkill`` go to this process, each as its own signal;
    ``group-sigint`` and ``group-sighup`` go to its process group (``os.killpg``: DataLoader workers get them
    too), not to this process alone."""
    import signal

    from examples.voc_joint import faults

    sent: list[tuple[str, int, int]] = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: sent.append(("kill", pid, sig)))
    monkeypatch.setattr(faults.os, "killpg", lambda pgid, sig: sent.append(("killpg", pgid, sig)))
    actions = ("sigint", "sigterm", "sighup", "sigkill", "group-sigint", "group-sighup")
    monkeypatch.setenv(faults.ENV, ",".join(f"{a}@step:{i}" for i, a in enumerate(actions, 1)))
    for step in range(1, len(actions) + 1):
        faults.hit("step", step)
    pid, group = os.getpid(), os.getpgid(0)
    assert sent == [
        ("kill", pid, signal.SIGINT),
        ("kill", pid, signal.SIGTERM),
        ("kill", pid, signal.SIGHUP),
        ("kill", pid, signal.SIGKILL),
        ("killpg", group, signal.SIGINT),
        ("killpg", group, signal.SIGHUP),
    ], sent


def test_nan_loss_makes_only_the_registered_steps_loss_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    """``nan-loss@step:2`` leaves step 1's loss as it is and makes step 2's NaN (not another non-finite
    value)."""
    from examples.voc_joint import faults

    monkeypatch.setenv(faults.ENV, "nan-loss@step:2")
    loss = torch.tensor(1.5)
    assert faults.corrupt_loss(1, loss) is loss
    corrupted = faults.corrupt_loss(2, loss)
    assert torch.isnan(corrupted), f"nan-loss gave {corrupted}, not NaN"


def test_nan_injection_skips_frozen_weights_and_weights_without_a_gradient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``nan-weight`` corrupts the first trainable weight (a frozen one, as ``--freeze-bn`` leaves, is not
    updated, so a NaN there tests nothing) and ``nan-grad`` the first gradient there is (a parameter that took
    no part in the step has none)."""
    from torch import nn

    from examples.voc_joint import faults

    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    net[0].weight.requires_grad_(False)
    monkeypatch.setenv(faults.ENV, "nan-weight@step:1,nan-grad@step:2")
    faults.corrupt_model(1, net)
    assert not torch.isnan(net[0].weight).any(), "the frozen weight was corrupted"
    assert torch.isnan(net[0].bias).sum() == 1 and torch.isnan(net[0].bias[0]), net[0].bias
    net[1].weight.grad = torch.zeros(2, 2)  # net[0].bias, the first trainable parameter, has no gradient
    faults.corrupt_model(2, net)
    assert torch.isnan(net[1].weight.grad).sum() == 1 and torch.isnan(net[1].weight.grad[0, 0])
