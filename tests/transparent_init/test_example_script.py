"""The README's main command, ``python examples/transparent_identity.py``, on a small configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from examples import transparent_identity

ROOT = Path(__file__).resolve().parents[2]


def test_main_reports_transparency(capsys: pytest.CaptureFixture[str]) -> None:
    assert transparent_identity.main(["--channels", "6", "--hidden", "8", "8"]) == 0
    out = capsys.readouterr().out
    assert "relu" in out and "leaky_relu" in out and "100.00%" in out
    assert "target map 6 -> 3 (pairwise mean)" in out
    assert "transparent: every output within 1e-4 of its input" in out


def test_runs_as_a_file() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "transparent_identity.py"),
            "--channels",
            "4",
            "--hidden",
            "4",
        ],
        capture_output=True,
        check=False,
        text=True,
        cwd=ROOT.parent,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "transparent: every output" in proc.stdout
