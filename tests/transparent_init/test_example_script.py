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


@pytest.mark.parametrize("value, eps", [("1000", "0.01"), ("1e6", "10"), ("0.5", "1e-4"), ("10", "1e-4")])
def test_a_wide_input_range_is_judged_at_float32_resolution(capsys, value, eps) -> None:
    """With --range 1000 (accepted up to 1e6) every stack was "NOT transparent", exit status 1: its max error
    3e-4 is a few float32 steps at 1000 (6e-5), beyond the absolute 1e-4. Above 10 the tolerance is now
    1e-5 * range; a stack that is not transparent still fails."""
    argv = ["--channels", "4", "--hidden", "8", "--range", value]
    assert transparent_identity.main(argv) == 0
    assert f"transparent: every output within {eps} of its input" in capsys.readouterr().out


def test_a_stack_that_is_not_transparent_still_fails_at_a_wide_range(monkeypatch, capsys) -> None:
    import torch
    from torch import nn

    real = transparent_identity.TransparentConv1x1

    def scaled(*args: object, **kwargs: object) -> nn.Module:
        stack = real(*args, **kwargs)
        with torch.no_grad():  # off by 0.1 %: 1 at an input of 1000, far beyond float32's rounding
            [m for m in stack.modules() if isinstance(m, nn.Conv2d)][-1].weight.mul_(1.001)
        return stack

    monkeypatch.setattr(transparent_identity, "TransparentConv1x1", scaled)
    assert transparent_identity.main(["--channels", "4", "--hidden", "8", "--range", "1000"]) == 1
    assert "NOT transparent" in capsys.readouterr().out


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
