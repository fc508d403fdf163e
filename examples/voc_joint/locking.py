"""Output-folder locks: one training run per folder, and a refusal that names the run holding it.

:class:`FolderLock` takes an exclusive ``flock`` on ``<folder>/.lock`` and writes its holder (host, pid, start
time, command line) into that file. The operating system releases the lock when the process ends, however it
ends (``SIGKILL`` included), so a lock is never stale. A second run gets :class:`FolderLockedError` at once,
with the holder's description. Advisory ``flock`` locks work between processes of one machine and on most
network file systems that support them (NFSv4, Lustre with ``flock``); where ``fcntl`` does not exist
(Windows) locking is skipped with a warning.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import IO

from examples.voc_joint.cli import UsageError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]  # no advisory locks there: FolderLock becomes a no-op

__all__ = ["LOCK_NAME", "FolderLock", "FolderLockedError"]

LOCK_NAME = ".lock"


class FolderLockedError(UsageError):
    """Another run holds the output folder."""


class FolderLock:
    """An exclusive lock on ``folder`` (created if needed) for the lifetime of a run.

    Args:
        folder: the folder to lock.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with FolderLock(folder):
        ...     try:
        ...         FolderLock(folder).acquire()
        ...     except FolderLockedError as exc:
        ...         print("refused:", "in use by pid" in str(exc))
        refused: True
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fh: IO[str] | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`FolderLockedError` naming the holder."""
        if self._fh is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")  # noqa: SIM115  # held open as long as the lock
        if fcntl is None:
            warnings.warn("no fcntl on this platform: output folders are not locked", stacklevel=2)
            self._fh = fh
            return self
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _describe(fh.read())
            fh.close()
            raise FolderLockedError(
                f"output folder {self.folder} is in use by {holder}; wait for that run to end, stop it, or "
                "use another --output-dir"
            ) from None
        fh.seek(0)
        fh.truncate()
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv),
        }
        fh.write(json.dumps(info) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        """Release the lock (the lock file stays; it is empty of meaning without a holder)."""
        if self._fh is None:
            return
        if fcntl is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
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


def _describe(text: str) -> str:
    try:
        info = json.loads(text.strip().splitlines()[-1])
        return (
            f"pid {info['pid']} on host {info['host']} since {info['started']} (command: {info['command']})"
        )
    except (json.JSONDecodeError, IndexError, KeyError, TypeError):
        return "another process (its description is not readable yet)"
