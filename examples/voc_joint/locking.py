"""Output-folder locks: one training run per folder, and a refusal that names the run holding it.

:class:`FolderLock` takes an exclusive ``flock`` on ``<folder>/.lock`` and writes its holder (host, pid, start
time, command line) into that file. The operating system releases the lock when the process ends, however it
ends (``SIGKILL`` included), so a lock is never stale. A ``flock`` belongs to the open file, which a child
created by ``fork`` (a DataLoader worker, a ``multiprocessing`` process) would share and keep after its parent
was killed; so every child closes its copy of the lock file at once (``os.register_at_fork``), and the lock
lives exactly as long as the process that took it. A second run gets :class:`FolderLockedError` at once,
with the holder's description. Advisory ``flock`` locks work between processes of one machine and on most
network file systems that support them (NFSv4, Lustre with ``flock``); where ``fcntl`` does not exist
(Windows) locking is skipped with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
import warnings
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO

from examples.voc_joint.atomic import os_error_reason, os_error_saying
from examples.voc_joint.cli import UsageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]  # no advisory locks there: FolderLock becomes a no-op

__all__ = ["LOCK_NAME", "FolderLock", "FolderLockedError"]

LOCK_NAME = ".lock"


class FolderLockedError(UsageError):
    """Another run holds the output folder."""


#: The locks this process holds (a forked child closes its copies of their files).
_HELD: weakref.WeakSet[FolderLock] = weakref.WeakSet()


def _close_in_child() -> None:
    """After ``fork``, in the child: close the inherited lock files without unlocking them (``LOCK_UN`` would
    release the parent's lock: parent and child share one open file), so that only the parent holds them."""
    for lock in list(_HELD):
        lock._forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


class FolderLock:
    """An exclusive lock on ``folder`` (created if needed) for the lifetime of a run.

    Args:
        folder: the folder to lock.

    While it is held, ``FolderLock(folder).acquire()`` in any process raises :class:`FolderLockedError`
    naming the holder (where ``fcntl`` exists; on Windows nothing is locked, with a warning).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = Path(tmp)
        ...     with FolderLock(folder) as lock:
        ...         print(lock.held, (folder / LOCK_NAME).is_file())
        ...     print(lock.held)
        True True
        False
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fh: IO[str] | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderLockedError` naming the holder (an ``OSError`` naming the
        folder where its file system gives no lock at all)."""
        if self._fh is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # warned before the file is open: a warning made an error leaks no open file
            warnings.warn(
                f"output folder {self.folder} is not locked: {sys.platform} has no fcntl (flock), so a "
                "second run writing to it at the same time is not refused; run one at a time per folder",
                stacklevel=2,
            )
        # the holder's line is ready before the lock is taken: the refusal of a second run that reads the file
        # between the lock and the write names the previous holder (see _holder)
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        # held open as long as the lock; a foreign file's bytes that are not UTF-8 are read as U+FFFD (the
        # holder is then "not readable"), not raised as a UnicodeDecodeError from the refusal
        fh = open(self.path, "a+", encoding="utf-8", errors="replace")  # noqa: SIM115
        if fcntl is None:
            self._fh = fh
            return self
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in _HELD_ERRNOS:  # no lock to be had here (ENOLCK: an NFS without its lock
                # service), not one that another process holds
                fh.close()
                raise _lock_error(self.path, exc, f"flock on {self.path} failed", _NO_LOCKS) from exc
            holder, alive = _holder(fh)
            fh.close()
            advice = (
                "wait for that run to end, stop it, or use another --output-dir"
                if alive
                else "that process is no longer running, and the lock is held by a run that is starting in "
                "this folder and has not recorded itself yet, or by a process the ended run left behind; "
                "retry in a few seconds"
            )
            raise FolderLockedError(f"output folder {self.folder} is in use by {holder}; {advice}") from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(info) + "\n")
            fh.flush()
        except OSError as exc:  # a full disk: "[Errno 28] No space left on device" names no file
            with contextlib.suppress(OSError):
                fh.close()  # the lock goes with it
            raise _lock_error(self.path, exc, f"writing its holder into {self.path} failed") from exc
        self._fh = fh
        _HELD.add(self)
        return self

    def release(self) -> None:
        """Release the lock (the lock file stays; it is empty of meaning without a holder)."""
        if self._fh is None:
            return
        _HELD.discard(self)
        if fcntl is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None

    def _forget(self) -> None:
        """Close this process's copy of the lock file, leaving the lock to the other processes sharing it."""
        _HELD.discard(self)
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()  # flushed when written: closing writes nothing
            self._fh = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fh is not None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


#: The errors of a non-blocking ``flock`` that mean another process holds the lock (``EWOULDBLOCK``;
#: ``EAGAIN`` and ``EACCES`` where ``flock`` is built on ``fcntl`` locks).
_HELD_ERRNOS = frozenset({errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES})


#: The advice of an ``flock`` that failed for another reason than a holder.
_NO_LOCKS = (
    "; its file system may not support locks (on NFS, the lock service must run): use an output folder on a "
    "local disk"
)


def _lock_error(path: Path, exc: OSError, what: str, advice: str = "") -> OSError:
    """The error of the lock file ``path`` that could not be locked (for another reason than a holder) or
    written (``what`` failed, naming the file): the ``errno`` of ``exc``, a message that names the folder
    and the cause, and ``advice``."""
    message = f"cannot lock the output folder {path.parent}: {what}: {os_error_reason(exc)}{advice}"
    return os_error_saying(exc, message, same_class=False)


#: How long a refused run waits for the holder's line when the file names none that runs (seconds).
HOLDER_WAIT_S = 0.5


def _holder(fh: IO[str]) -> tuple[str, bool]:
    """The holder recorded in the open lock file ``fh``, and whether it may be running.

    A run that has just taken the lock writes its line a moment later: until then the file is empty or names
    the previous holder, an ended process. Such a file is read again for up to :data:`HOLDER_WAIT_S`, so a
    refusal in that moment names the run that holds the lock, not the one before it.
    """
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        fh.seek(0)
        holder, alive, readable = _describe(fh.read())
        if (alive and readable) or time.monotonic() >= deadline:
            return holder, alive
        time.sleep(0.02)


def _describe(text: str) -> tuple[str, bool, bool]:
    """The holder recorded in the lock file, whether it may be running (False: a process of this host that
    no longer exists) and whether the file names one at all."""
    try:
        info = json.loads(text.strip().splitlines()[-1])
        holder = (
            f"pid {info['pid']} on host {info['host']} since {info['started']} (command: {info['command']})"
        )
    except (json.JSONDecodeError, IndexError, KeyError, TypeError):
        return "another process (its description is not readable yet)", True, False
    return holder, info["host"] != socket.gethostname() or _alive(info["pid"]), True


def _alive(pid: object) -> bool:
    """Whether process ``pid`` of this host exists (True when that cannot be told)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True
