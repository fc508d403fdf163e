"""The test suite on a platform without the POSIX-only names (Windows), simulated on Linux with
``-p tests.windows_like``: it collects, and what needs them is skipped with a reason instead of erroring.

Also without ``SIGALRM`` the suite runs, without its per-test time limit (``tests/time_limit.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pytest(*argv: str) -> subprocess.CompletedProcess[str]:
    """``pytest -p tests.windows_like ARGV`` in a subprocess in the repository root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:xdist",
        "-p",
        "tests.windows_like",
        *argv,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_suite_collects_and_skips_what_needs_posix() -> None:
    """Every test module imports: before, test_faults.py (``import fcntl``) and test_gpu_check.py (the
    benchmark harness's ``import resource``) were collection errors, which stop a whole pytest run."""
    pytest.importorskip("torchvision")  # the examples' modules are collected only with it
    res = _pytest("--collect-only", "-rs", "tests", "examples")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for path in (
        "tests/examples/test_faults.py",
        "tests/examples/test_locking.py",
        "tests/test_gpu_check.py",
    ):
        assert f"SKIPPED [2] {path}" in out, out[-3000:]


def test_the_pipelines_doctests_pass_without_fcntl() -> None:
    """FolderLock's example holds on every platform (before, it showed a refusal that Windows never gives)."""
    pytest.importorskip("torchvision")
    res = _pytest("examples/voc_joint/locking.py")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert f"is not locked: {sys.platform} has no fcntl (flock)" in res.stdout, res.stdout[-3000:]
