"""A slice of the project under Python's strictest runtime modes: ``python -X dev -W error`` (every warning an
error, unclosed files and sockets reported as ``ResourceWarning``), as users run it in CI.

The tests of one op and one tiny run of the training CLI (``slow``), each in a subprocess with a temporary
folder of its own: they must pass, print no ``ResourceWarning`` or "Exception ignored" (an unclosed file found
by the garbage collector does not change the exit status), and leave nothing in the temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STRICT = [sys.executable, "-X", "dev", "-W", "error"]


def _run(args: list[str], tmp: Path) -> str:
    """Run ``args`` under the strict modes in the repository root with ``tmp`` as the temporary folder."""
    tmp.mkdir(exist_ok=True)
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(paths)}
    for name in ("PYTHONWARNINGS", "TRANSINIT_FAULT"):
        env.pop(name, None)
    try:
        proc = subprocess.run(
            [*STRICT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
        )
    except subprocess.TimeoutExpired as exc:  # a hang: show what the process printed, stderr in full
        printed = [
            b.decode(errors="replace") if isinstance(b, bytes) else b or "" for b in (exc.stdout, exc.stderr)
        ]
        pytest.fail(
            f"{args[0]} did not finish in 300 s; it printed:\n{printed[0][-2000:]}\n{printed[1][-6000:]}"
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "ResourceWarning" not in out and "Exception ignored" not in out, out[-3000:]
    return out


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A private temporary folder with a short path: a DataLoader worker shares each batch through a Unix
    socket that ``multiprocessing`` binds in ``$TMPDIR/pymp-*/listener-*``, whose path must fit in 107 bytes
    (Linux). Under pytest-xdist, ``tmp_path`` (``.../pytest-<n>/popen-gw<k>/<test name>_0``) made it too long:
    the worker failed to send its first batch ("AF_UNIX path too long") and the run waited for it for ever."""
    parent = "/tmp" if os.path.isdir("/tmp") else None
    folder = Path(tempfile.mkdtemp(prefix="strict-", dir=parent))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _left(tmp: Path) -> list[str]:
    """What is left in ``tmp``, but torch's compile cache (``torchinductor_<user>``), kept on purpose."""
    return sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_"))


def test_an_op_test_file_passes_with_every_warning_an_error(tmp_path: Path, short_tmp: Path) -> None:
    tmp = short_tmp
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-o", "filterwarnings="]
    args += ["-W", "error::pytest.PytestUnraisableExceptionWarning", "--basetemp", str(tmp_path / "base")]
    targets = ["tests/sparse_ops/test_pooling.py::TestPool", "sparse_ops/pooling.py", "-k", "not compile"]
    out = _run([*args, *targets], tmp)  # reference, gradcheck, saved-tensor hooks, errors, doctests
    assert " passed" in out.strip().splitlines()[-1], out[-3000:]
    assert _left(tmp) == []


@pytest.mark.slow
@pytest.mark.examples
def test_a_tiny_training_run_with_every_warning_an_error(tmp_path: Path, short_tmp: Path) -> None:
    """A synthetic set, then one step of the segmentation stage with two DataLoader workers."""
    tmp, voc, out = short_tmp, tmp_path / "voc", tmp_path / "run"
    _run(
        ["examples/voc_joint/synthetic.py", "--output-dir", str(voc), "--num-train", "4", "--num-val", "2"],
        tmp,
    )
    args = ["--data-root", str(voc), "--output-dir", str(out), "--stage", "seg", "--max-steps", "1"]
    args += ["--backbone", "resnet18", "--aspp-channels", "16", "--crop-size", "32", "--batch-size", "2"]
    args += ["--workers", "2", "--device", "cpu", "--no-progress", "--threads", "1"]
    _run(["examples/voc_joint/train.py", *args], tmp)
    assert (out / "seg" / "checkpoint.pt").is_file()
    assert _left(tmp) == []
