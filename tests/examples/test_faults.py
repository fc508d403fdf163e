"""Fault injection on the training CLI: interrupt anywhere, ``--resume``: bit-identical to no interrupt.

Every run is a subprocess on tiny synthetic data (CPU, one thread). Interrupt points are hit exactly through
the ``TRANSINIT_FAULT`` hook (:mod:`examples.voc_joint.faults`) instead of timers.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from examples.voc_joint.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]

#: 6 training images, batch 2: 3 steps per epoch; 3 epochs = 9 steps. BatchNorm in training mode everywhere
#: (--no-freeze-bn), dropout, soft uniformization, poly schedule and lrs large enough to move every weight.
RUN = [
    "--stage", "joint", "--epochs", "3", "--log-every", "1", "--backbone", "resnet18",
    "--aspp-channels", "16", "--cell-size", "8", "--spixel-width", "4", "--fusion-hidden", "42",
    "--crop-size", "32", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--no-progress",
    "--no-freeze-bn", "--schedule", "poly", "--mode", "soft", "--lr", "0.01", "--spixel-lr", "0.001",
    "--fusion-lr", "0.001",
]  # fmt: skip


@pytest.fixture(scope="module")
def voc6(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from examples.voc_joint.synthetic import generate_synthetic_voc

    root = tmp_path_factory.mktemp("voc6")
    return generate_synthetic_voc(root, num_train=6, num_val=2, image_size=(36, 44), seed=1)


def _env(fault: str | None = None) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    env.pop("TRANSINIT_FAULT", None)
    if fault:
        env["TRANSINIT_FAULT"] = fault
    return env


def train(out: Path, root: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run train.py in its own session (a group signal reaches only it and its DataLoader workers)."""
    cmd = [sys.executable, "examples/voc_joint/train.py", "--data-root", str(root), "--output-dir", str(out)]
    return subprocess.run(
        [*cmd, *RUN, *extra],
        cwd=ROOT,
        env=_env(fault),
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
    """The same steps, once each, with the same loss values (timings aside)."""
    ra, rb = _log(a), _log(b)
    steps = [r["step"] for r in rb]
    assert len(steps) == len(set(steps)), f"duplicate steps in {b}: {steps}"
    cols = ("epoch", "step", "loss", "ce", "spixel", "lr")
    assert [[r[c] for c in cols] for r in ra] == [[r[c] for c in cols] for r in rb]


@pytest.fixture(scope="module")
def reference(voc6: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 9-step run (workers 0)."""
    out = tmp_path_factory.mktemp("reference")
    res = train(out, voc6, "--workers", "0")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return out / "joint"


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
    _expect(train(tmp_path, voc6, *w0, "--resume", fault="sigint@step:2"), 130, 2, ckpt)
    _expect(train(tmp_path, voc6, *w0, "--resume", fault="sigterm@save:1"), 143, 3, ckpt)
    _expect(train(tmp_path, voc6, *w0, "--resume", fault="sigint@epoch-end:2"), 130, 6, ckpt)
    res = train(tmp_path, voc6, *w0, "--resume", fault="sigkill@save:1")  # killed while writing step 9
    _expect(res, -9, 6, ckpt)
    assert list(ckpt.parent.glob(".checkpoint.pt.*.tmp")), "the killed write leaves its temporary file"
    _expect(train(tmp_path, voc6, *w0, "--resume"), 0, 9, ckpt)
    assert not list(ckpt.parent.glob(".checkpoint.pt.*.tmp")), "stale temporary files are removed on start"
    assert_same_training_state(reference / "checkpoint.pt", ckpt)
    assert_same_log(reference, ckpt.parent)


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
