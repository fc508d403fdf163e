"""A time limit for every test body, so that a hang fails the test instead of stalling the suite.

No test of the suite took more than 73 s on the 2-core CI machine (2026-12-07); a regression that makes a loop
run forever (for example a training epoch that never ends after a resume) would otherwise hang CI until its
own limit. :func:`limit_test_call` arms ``SIGALRM`` around the test's call and raises :class:`TimeoutError`
in it when the limit passes. POSIX main thread only (elsewhere, e.g. on Windows, tests run without a limit);
a test blocked inside a C call that never returns to the interpreter is not interrupted.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Generator
from typing import Any

__all__ = ["DEFAULT_LIMIT_S", "limit_test_call"]

#: Seconds a test body may run; ``TRANSINIT_TEST_TIME_LIMIT`` overrides it (0 turns the limit off).
DEFAULT_LIMIT_S = 600


def limit_test_call(nodeid: str) -> Generator[None, Any, None]:
    """Body of a ``pytest_runtest_call`` hook wrapper: run the test under the time limit."""
    limit = int(os.environ.get("TRANSINIT_TEST_TIME_LIMIT", DEFAULT_LIMIT_S))
    main_thread = threading.current_thread() is threading.main_thread()
    if limit <= 0 or not hasattr(signal, "SIGALRM") or not main_thread:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(
            f"{nodeid} ran past the suite's time limit of {limit} s per test (a hang?); "
            "set TRANSINIT_TEST_TIME_LIMIT to change it"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
