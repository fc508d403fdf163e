"""Graceful interrupts: SIGINT (Ctrl-C) and SIGTERM are recorded, acted upon at safe points, exit 130 / 143.

:class:`InterruptGuard` is a context manager. Inside it, the first SIGINT or SIGTERM only sets a flag; the
training loop polls :attr:`InterruptGuard.requested` after every completed optimizer step, saves a checkpoint
of that state and raises :class:`Interrupted`, which the command line turns into the exit status ``128 +
signal`` (130 for SIGINT, 143 for SIGTERM). A second signal outside a critical section raises
:class:`Interrupted` at once (no new checkpoint: the last one on disk stays valid, as checkpoint writes are
atomic). Inside :meth:`InterruptGuard.critical` (a checkpoint write) every signal is deferred to the end of
the section.

Only the main thread can install signal handlers; elsewhere the guard is inert (the flag is never set).
A signal the process was started with set to be ignored stays ignored (a job started with ``&`` by a shell
script without job control ignores SIGINT, so that a Ctrl-C meant for the script leaves it running): the guard
neither records nor acts on it.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

__all__ = ["InterruptGuard", "Interrupted", "exit_status", "run_stoppable"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The conventional shell exit status of a process stopped by signal ``signum`` (``128 + signum``).

    Example:
        >>> exit_status(signal.SIGINT), exit_status(signal.SIGTERM)
        (130, 143)
    """
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal (after writing its checkpoint unless ``forced``).

    Attributes:
        signum: the signal number (``signal.SIGINT`` or ``signal.SIGTERM``).
        forced: True when a second signal stopped the process without a new checkpoint.
    """

    def __init__(self, signum: int, forced: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.forced = forced

    @property
    def exit_code(self) -> int:
        """``128 + signum``: 130 for SIGINT, 143 for SIGTERM."""
        return exit_status(self.signum)


class InterruptGuard:
    """Record SIGINT/SIGTERM instead of dying; restore the previous handlers on exit.

    Example:
        >>> with InterruptGuard() as guard:
        ...     guard.requested is None  # no signal so far; a SIGTERM here would set it to 15
        True
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}
        self._depth = 0
        self._critical = 0
        self._pending_force: int | None = None

    def __enter__(self) -> InterruptGuard:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                if self._previous[sig] is not signal.SIG_IGN:
                    signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._depth -= 1
        if self._depth == 0:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signum
            return
        if self._critical:
            self._pending_force = signum
            return
        raise Interrupted(signum, forced=True)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A section no signal interrupts (a checkpoint write); a second signal inside it acts at its end."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if not self._critical and self._pending_force is not None:
            signum, self._pending_force = self._pending_force, None
            raise Interrupted(signum, forced=True)

    @contextmanager
    def released(self) -> Iterator[None]:
        """Default signal behaviour inside (for work with nothing to save, e.g. a final evaluation)."""
        if threading.current_thread() is not threading.main_thread() or not self._previous:
            yield
            return
        watched = [sig for sig in _SIGNALS if self._previous.get(sig) is not signal.SIG_IGN]
        for sig in watched:
            signal.signal(sig, _raise_interrupted)
        try:
            yield
        finally:
            for sig in watched:
                signal.signal(sig, self._handle)

    def check(self) -> None:
        """Raise :class:`Interrupted` if a signal was recorded (for places with nothing new to save)."""
        if self.requested is not None:
            raise Interrupted(self.requested)


def run_stoppable(main: Callable[[], int], prog: str, note: str) -> int:
    """Run ``main()`` (a command with nothing to save on the way) with SIGINT and SIGTERM stopping it at once
    as Ctrl-C does (its ``finally`` blocks run), and turn a stop into one line on stderr, ``<prog>: stopped by
    SIGTERM (exit status 143); <note>``, instead of a traceback (SIGINT) or a silent end (SIGTERM).

    Returns:
        int: what ``main()`` returned, or the exit status ``128 + signal`` when a signal stopped it.

    Example:
        >>> run_stoppable(lambda: 0, "demo", "nothing written")
        0
    """
    with InterruptGuard() as guard, guard.released():
        try:
            return main()
        except KeyboardInterrupt as exc:  # Interrupted; or a KeyboardInterrupt raised by code: SIGINT's
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            stopped = f"stopped by {signal.Signals(signum).name} (exit status {exit_status(signum)})"
            print(f"{prog}: {stopped}; {note}", file=sys.stderr, flush=True)
            return exit_status(signum)


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)
