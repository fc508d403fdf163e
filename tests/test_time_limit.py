"""The suite's per-test time limit (tests/time_limit.py) turns a hang into a failure that names the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.time_limit import DEFAULT_LIMIT_S, limit_test_call

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="the limit needs SIGALRM (POSIX)")
def test_a_hanging_test_fails_with_a_timeout_and_the_others_still_run(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_call  # noqa: F401\n")
    (tmp_path / "test_hang.py").write_text(
        "def test_hangs():\n    while True:\n        pass\n\n\ndef test_after_it():\n    assert True\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRANSINIT_TEST_TIME_LIMIT": "2"}
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "test_hang.py::test_hangs ran past the suite's time limit of 2 s per test" in out, out
    assert time.perf_counter() - t0 < 60


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="the limit needs SIGALRM (POSIX)")
def test_the_limit_is_armed_for_the_call_only_and_the_previous_handler_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def sentinel(signum: int, frame: object) -> None:
        raise AssertionError("the sentinel handler ran")

    monkeypatch.setenv("TRANSINIT_TEST_TIME_LIMIT", "50")
    outer = signal.signal(signal.SIGALRM, sentinel)
    remaining = signal.alarm(0)  # this test's own limit, restored below
    try:
        wrapper = limit_test_call("some::test")
        next(wrapper)  # armed: the test body would run now
        assert signal.getsignal(signal.SIGALRM) is not sentinel
        assert 45 <= signal.alarm(50) <= 50
        with pytest.raises(StopIteration):
            next(wrapper)  # the body finished
        assert signal.alarm(0) == 0 and signal.getsignal(signal.SIGALRM) is sentinel
        monkeypatch.setenv("TRANSINIT_TEST_TIME_LIMIT", "0")  # off: nothing armed, nothing replaced
        wrapper = limit_test_call("some::test")
        next(wrapper)
        assert signal.alarm(0) == 0 and signal.getsignal(signal.SIGALRM) is sentinel
    finally:
        signal.signal(signal.SIGALRM, outer)
        signal.alarm(remaining)


def test_the_development_page_states_the_default_time_limit() -> None:
    """The development page's "runs under a time limit of N s" and the conftest docstring's "(N s)" are
    ``tests/time_limit.py``'s ``DEFAULT_LIMIT_S``."""
    page = " ".join((ROOT / "docs" / "development.rst").read_text(encoding="utf-8").split())
    assert f"runs under a time limit of {DEFAULT_LIMIT_S} s" in page
    conftest = " ".join((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8").split())
    assert f"limit ({DEFAULT_LIMIT_S} s)" in conftest
