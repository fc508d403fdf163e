"""Graceful interrupts: SIGINT (Ctrl-C), SIGTERM and SIGHUP are recorded, acted upon at safe points, exit
130 / 143 / 129.

:class:`InterruptGuard` is a context manager. Inside it, the first SIGINT, SIGTERM or SIGHUP (a closed
terminal, a dropped SSH session; POSIX only) only sets a flag; the training loop polls
:attr:`InterruptGuard.requested` after every completed optimizer step, saves a checkpoint of that state and
raises :class:`Interrupted`, which the command line turns into the exit status ``128 + signal`` (130 for
SIGINT, 143 for SIGTERM, 129 for SIGHUP). A second signal outside a critical section raises
:class:`Interrupted` at once (no new checkpoint: the last one on disk stays valid, as checkpoint writes are
atomic). Inside :meth:`InterruptGuard.critical` (a checkpoint write) every signal is deferred to the end of
the section.

A stop raised by a handler where Python cannot pass an exception on (an at-fork hook, e.g. logging's lock
release while a DataLoader starts its workers; a ``__del__`` method; a weakref or garbage-collector callback:
Python prints "Exception ignored in ..." and goes on) is not lost: inside the guard such a dropped
:class:`Interrupted` is delivered again a moment later, until it reaches code that passes it on.

Only the main thread can install signal handlers; elsewhere the guard is inert (the flag is never set).
A signal the process was started with set to be ignored stays ignored (a job started with ``&`` by a shell
script without job control ignores SIGINT, so that a Ctrl-C meant for the script leaves it running;
``nohup`` starts its command with SIGHUP ignored, so that it outlives the terminal): the guard neither records
nor acts on it.

After a SIGHUP the terminal may be gone: every write to it fails (``EIO``), so the progress bar, the line
that names the checkpoint or the one-line stop message would end the command with an ``OSError`` (exit status
1) instead of 129. :func:`detach_hung_up_output` points the standard output and error that write to a hung-up
terminal at the null device (output redirected to a file, or a terminal still there, is left alone).
"""

from __future__ import annotations

import _thread
import errno
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import Any

__all__ = [
    "STOP_SIGNALS",
    "InterruptGuard",
    "Interrupted",
    "detach_hung_up_output",
    "exit_status",
    "ignore_stop_signals",
    "run_stoppable",
    "worker_init_fn",
]

#: The signals that stop a script, SIGINT, SIGTERM and SIGHUP (SIGHUP only where the platform has it, not on
#: Windows). The guard and :func:`run_stoppable` handle them; DataLoader workers ignore them, and
#: ``gpu_check.py`` handles them too.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: Seconds after which a stop that Python dropped is delivered again (:class:`InterruptGuard`): long enough
#: for the code that dropped it (an at-fork hook, a ``__del__``) to have ended, at most 20 tries a second.
REDELIVERY_DELAY_S = 0.05


def detach_hung_up_output(fds: tuple[int, ...] = (1, 2)) -> list[int]:
    """Point each of the file descriptors ``fds`` (standard output and error) that writes to a hung-up
    terminal (a zero-byte write fails with ``EIO``: the terminal was closed) at the null device, so that the
    writes after a SIGHUP succeed, unseen, instead of raising ``OSError``. A file, a pipe or a terminal that
    is still there is left alone.

    Returns:
        list[int]: the descriptors that were redirected.

    Example:
        >>> detach_hung_up_output(())  # no descriptor to look at
        []
    """
    detached = []
    for fd in filter(_hung_up, fds):
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        detached.append(fd)
    return detached


def _hung_up(fd: int) -> bool:
    """Whether writing to ``fd`` fails with ``EIO``, as it does on a terminal that was hung up."""
    try:
        os.write(fd, b"")
    except OSError as exc:
        return exc.errno == errno.EIO
    return False


def exit_status(signum: int) -> int:
    """The conventional shell exit status of a process stopped by signal ``signum`` (``128 + signum``).

    Example:
        >>> exit_status(signal.SIGINT), exit_status(signal.SIGTERM), exit_status(1)  # 1: SIGHUP
        (130, 143, 129)
    """
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """Training stopped on a signal (after writing its checkpoint unless ``forced``).

    Attributes:
        signum: the signal number (``signal.SIGINT``, ``signal.SIGTERM`` or ``signal.SIGHUP``).
        forced: True when a second signal stopped the process at once (not at the next safe point).
        saved: True when that second signal came during a checkpoint write, which completed first (the stop
            then has its new checkpoint after all; its stop line says where).
    """

    def __init__(self, signum: int, forced: bool = False, saved: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.forced = forced
        self.saved = saved

    @property
    def exit_code(self) -> int:
        """``128 + signum``: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
        return exit_status(self.signum)


class InterruptGuard:
    """Record SIGINT / SIGTERM / SIGHUP instead of dying; restore the previous handlers on exit.

    Example:
        >>> with InterruptGuard() as guard:
        ...     guard.requested is None  # no signal so far; a SIGTERM here would set it to 15
        True
    """

    def __init__(self) -> None:
        self.requested: int | None = None
        #: The signal every process agreed to stop on (set by the training loop; another process's signal
        #: where this one had none): a process then lost stopped on it, it did not crash.
        self.agreed: int | None = None
        self._previous: dict[int, Any] = {}
        self._depth = 0
        self._critical = 0
        self._pending_force: int | None = None
        self._unraisablehook: Callable[[Any], object] | None = None

    def __enter__(self) -> InterruptGuard:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.getsignal(sig)
                if self._previous[sig] is not signal.SIG_IGN:
                    signal.signal(sig, self._handle)
            self._unraisablehook = sys.unraisablehook
            sys.unraisablehook = self._redeliver_dropped
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._depth -= 1
        if self._depth == 0:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()
            if self._unraisablehook is not None:
                sys.unraisablehook, self._unraisablehook = self._unraisablehook, None

    def _redeliver_dropped(self, unraisable: Any) -> None:
        """``sys.unraisablehook`` inside the guard: an :class:`Interrupted` that Python dropped (raised by a
        handler in an at-fork hook, a ``__del__``, a callback) is delivered again, as its signal, from another
        thread after :data:`REDELIVERY_DELAY_S` (the handler then runs in the main thread, in the code that
        follows; dropped again, it comes back again); anything else goes to the previous hook. A guard that
        has ended by then delivers nothing (the work it guarded is over)."""
        exc = unraisable.exc_value
        if isinstance(exc, Interrupted):
            timer = threading.Timer(REDELIVERY_DELAY_S, self._redeliver, (exc.signum,))
            timer.daemon = True
            timer.start()
        elif self._unraisablehook is not None:
            self._unraisablehook(unraisable)

    def _redeliver(self, signum: int) -> None:
        """Deliver ``signum`` to the main thread's handler again, if the guard is still on."""
        if self._depth:
            _thread.interrupt_main(signal.Signals(signum))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        _after_hangup(signum)
        if self.requested is None:
            self.requested = signum
            return
        if self._critical:
            self._pending_force = signum
            return
        raise Interrupted(signum, forced=True)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A section no signal interrupts (a checkpoint write); a second signal inside it acts at its end.

        A section that ends by an error passes the error on, and the deferred signal goes with it: the first
        signal stays recorded (:meth:`check` still stops), but a later section does not raise a stop that
        belonged to this one.
        """
        self._critical += 1
        try:
            yield
        except BaseException:
            self._critical -= 1
            if not self._critical:
                self._pending_force = None
            raise
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
        watched = [sig for sig in STOP_SIGNALS if self._previous.get(sig) is not signal.SIG_IGN]
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


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn`` of a ``DataLoader``: its worker processes ignore :data:`STOP_SIGNALS` and leave them
    to the main process (a shell that loses its terminal, or ``kill -TERM -<group>``, signals the whole
    process group: workers included). A worker that died of the SIGTERM first made the main process's stop a
    ``DataLoader worker ... is killed by signal`` traceback."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def worker_init_fn(workers: int) -> Callable[[int], None] | None:
    """The ``worker_init_fn`` of a ``DataLoader`` with ``workers`` worker processes:
    :func:`ignore_stop_signals` (the main process stops, and stops its workers), or ``None`` without worker
    processes (the loading runs in the main process, whose signal handling must stay as it is).

    Example:
        >>> worker_init_fn(0) is None, worker_init_fn(2) is ignore_stop_signals
        (True, True)
    """
    return ignore_stop_signals if workers > 0 else None


def run_stoppable(main: Callable[[], int], prog: str, note: str | Callable[[], str]) -> int:
    """Run ``main()`` (a command with nothing to save on the way) with SIGINT, SIGTERM and SIGHUP stopping it
    at once as Ctrl-C does (its ``finally`` blocks run), and turn a stop into one line on stderr, ``<prog>:
    stopped by SIGTERM (exit status 143); <note>``, instead of a traceback (SIGINT) or a silent end (SIGTERM,
    SIGHUP). A callable ``note`` is called at the stop (what the stop leaves may depend on when it came).

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
            text = note() if callable(note) else note  # (a callable: what the stop leaves, read now)
            print(f"{prog}: {stopped}; {text}", file=sys.stderr, flush=True)
            return exit_status(signum)


def _after_hangup(signum: int) -> None:
    """On SIGHUP: :func:`detach_hung_up_output` (the terminal may be gone)."""
    if signum == getattr(signal, "SIGHUP", None):
        detach_hung_up_output()


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    _after_hangup(signum)
    raise Interrupted(signum)
