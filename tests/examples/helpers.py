"""Shared helpers of the example tests: a script's environment, tiny training options, a tiny demo run,
untrained checkpoints, a layout probe, the data checks of a command on a user's ``--data-root``, a failing
atomic write (the tiny synthetic VOC set is the ``tiny_voc`` fixture of ``conftest.py``)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

TINY_MODEL = [
    "--backbone",
    "resnet18",
    "--aspp-channels",
    "16",
    "--cell-size",
    "8",
    "--spixel-width",
    "4",
    "--fusion-hidden",
    "42",
    "--crop-size",
    "32",
    "--batch-size",
    "2",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--no-progress",
    "--threads",
    "2",
]


ROOT = Path(__file__).resolve().parents[2]


def dead_pid() -> int:
    """The pid of a process that has ended (a short child, waited for): no process of this host has it, until
    the system reuses it."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    return int(out.stdout)


def script_env(fault: str | None = None) -> dict[str, str]:
    """The environment of an example script that a test runs as a subprocess in :data:`ROOT`: this one
    with one OpenMP thread, the repository first on ``PYTHONPATH``, and ``TRANSINIT_FAULT`` only as
    ``fault``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.pop("TRANSINIT_FAULT", None)
    if fault:
        env["TRANSINIT_FAULT"] = fault
    return env


def run_example(
    script: str, argv: Sequence[str], fault: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/voc_joint/<script>`` with ``argv`` as a subprocess (:func:`script_env` with ``fault``);
    the completed process, output captured as text."""
    return subprocess.run(
        [sys.executable, f"examples/voc_joint/{script}", *argv],
        cwd=ROOT,
        env=script_env(fault),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def flock_held(path: str | os.PathLike[str]) -> bool:
    """Whether another open file description holds an exclusive ``flock`` on ``path`` (a file or a folder):
    a probe of our own cannot take it at once (POSIX only)."""
    import fcntl

    probe = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(probe)


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    """Command-line options of a tiny CPU run on ``root`` writing to ``out``."""
    return ["--data-root", str(root), "--output-dir", str(out), *TINY_MODEL, *extra]


def run_tiny_demo(root: Path, out: Path) -> dict:
    """``demo.main`` on ``root`` writing to ``out`` with one step per stage, 32 px crops and one thread (tiny
    tensors: a second thread only contends on a loaded machine); the torch thread count is restored."""
    from examples.voc_joint import demo

    threads = torch.get_num_threads()
    argv = ["--data-root", str(root), "--output-dir", str(out), "--max-steps", "1", "--crop-size", "32"]
    argv += ["--seg-epochs", "1", "--spixel-epochs", "1", "--joint-epochs", "1", "--batch-size", "2"]
    try:
        return demo.main([*argv, "--no-progress", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)


def conv_layout(net: torch.nn.Module) -> str:
    """Memory layout of the first k x k conv weight of ``net`` (k > 1: a 1x1 weight is both layouts):
    ``"contiguous"``, ``"channels_last"`` or ``"other"``."""
    weight = next(m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    if weight.is_contiguous():
        return "contiguous"
    return "channels_last" if weight.is_contiguous(memory_format=torch.channels_last) else "other"


def untrained_checkpoints(folder: Path, cell_size: int = 8, *, num_classes: int = 21) -> tuple[Path, Path]:
    """Untrained tiny seg and spixel checkpoints (``num_classes``, ``cell_size``) in the training script's
    format."""
    from examples.voc_joint.checkpoint import FORMAT, save_checkpoint
    from examples.voc_joint.models import DeepLabV3Plus, SpixelFCN, model_config

    torch.manual_seed(0)
    deeplab = DeepLabV3Plus(num_classes, "resnet18", aspp_channels=8)
    spixel = SpixelFCN(cell_size=cell_size, width=4)
    paths = []
    for net, stage in ((deeplab, "seg"), (spixel, "spixel")):
        ckpt = {
            "format": FORMAT,
            "version": 1,
            "stage": stage,
            "config": {"model": model_config(net), "args": {}},
            "model": net.state_dict(),
        }
        paths.append(save_checkpoint(folder / stage / "checkpoint.pt", ckpt))
    return paths[0], paths[1]


def assert_data_root_is_checked(
    run: Callable[[], object], root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run()`` (a command on ``--data-root root``, a copy of the tiny set) refuses a training list holding a
    validation image (exit 2, pointing to ``train.py --allow-val-overlap``: the command has no such option),
    then, the list restored, a listed validation image that does not exist (exit 1, the file named in the
    singular, its list by name: not by ``--val-split``, an option of ``train.py`` only)."""
    lists = root / "ImageSets" / "Segmentation"
    train_list = (lists / "train.txt").read_text()
    val_names = (lists / "val.txt").read_text().split()
    (lists / "train.txt").write_text(train_list + val_names[0] + "\n")
    with pytest.raises(SystemExit) as info:
        run()
    err = capsys.readouterr().err
    assert info.value.code == 2 and "1 image of the validation lists" in err and val_names[0] in err, err
    assert "pass --allow-val-overlap" not in err and "train.py --allow-val-overlap" in err, err
    (lists / "train.txt").write_text(train_list)
    (root / "JPEGImages" / f"{val_names[1]}.jpg").unlink()
    with pytest.raises(SystemExit) as info:
        run()
    err = capsys.readouterr().err
    assert info.value.code == 1 and f"{val_names[1]}.jpg" in err and "1 file listed in " in err, err
    assert " or in the 'val' list does not exist " in err and "--val-split" not in err, err


def fail_atomic_write(monkeypatch: pytest.MonkeyPatch, name: str, code: str) -> None:
    """Make every atomic write of a file called ``name`` (``examples.voc_joint.atomic``) fail as it opens its
    temporary file, with the ``OSError`` of errno ``code`` (``"ENOSPC"``: a full disk); other files open."""
    from examples.voc_joint import atomic

    number = getattr(errno, code)
    real_open = open

    def failing_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(file).name.startswith(f".{name}."):
            raise OSError(number, os.strerror(number))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", failing_open, raising=False)
