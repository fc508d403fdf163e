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


def _failing(exc: BaseException):  # type: ignore[no-untyped-def]
    def build(*args: object, **kwargs: object) -> object:
        raise exc

    return build


def test_a_stop_is_one_line_with_exit_status_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C was a traceback; it is one line and exit status 130 now, as in the pipeline's scripts
    (``signals.run_stoppable``: SIGTERM and SIGHUP likewise, 143 and 129)."""
    monkeypatch.setattr(transparent_identity, "TransparentConv1x1", _failing(KeyboardInterrupt()))
    assert transparent_identity.main(["--channels", "4", "--hidden", "4"]) == 130
    err = capsys.readouterr().err
    prog = "python examples/transparent_identity.py"
    assert err == f"{prog}: stopped by SIGINT (exit status 130); it writes nothing: run it again\n", err


def test_stacks_too_large_for_the_machine_are_one_line_with_exit_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--channels 4096 --hidden 4096 4096 ...`` within the bounds but beyond the machine's memory was the
    allocator's traceback; it is one "out of memory" line with exit status 1, as in the pipeline's scripts;
    any other error stays a traceback."""
    failed = RuntimeError(
        "DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes"
    )
    monkeypatch.setattr(transparent_identity, "TransparentConv1x1", _failing(failed))
    assert transparent_identity.main(["--channels", "4", "--hidden", "4"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("python examples/transparent_identity.py: error: out of memory")
        and err.count("\n") == 1
    )
    monkeypatch.setattr(transparent_identity, "TransparentConv1x1", _failing(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        transparent_identity.main(["--channels", "4", "--hidden", "4"])
