"""DataLoader worker processes need a short temporary folder: found before any worker starts.

A ``DataLoader`` worker hands each batch to the main process by sending the file descriptors of the batch's
shared memory over a Unix socket, which :mod:`multiprocessing` binds at
``<temporary folder>/pymp-XXXXXXXX/listener-XXXXXXXX`` (the temporary folder is ``$TMPDIR``, else ``$TEMP``,
``$TMP``, ``/tmp``). A socket path holds at most 107 bytes on Linux (103 on macOS and the BSDs): with a
temporary folder longer than 75 bytes (71) the bind fails in a background thread of the worker, the batch
never arrives and the main process waits for it forever, without a message (the ``DataLoader`` has no timeout
by default). Cluster jobs are where this happens: schedulers set ``TMPDIR`` to a per-job folder with a long
path. :func:`worker_tmpdir_error` names the problem before the run starts. Windows passes handles, not Unix
sockets, and has no limit here.

Newer Pythons (3.14, and the 3.13 releases with the backport of CPython issue 132124) name the socket
``sock-XXXXXXXX`` and, when the temporary folder is too long for it, make their ``pymp-*`` folder in a system
folder (``/tmp``) instead: there the check reads the folder that ``multiprocessing`` will use
(:func:`socket_base_dir`), and a long ``$TMPDIR`` passes.

Example:
    >>> worker_tmpdir_error(0, "--workers") is None  # no worker process: no socket
    True
"""

from __future__ import annotations

import multiprocessing.util
import os
import sys
import tempfile
from collections.abc import Callable
from types import ModuleType

__all__ = [
    "max_tmpdir_bytes",
    "socket_base_dir",
    "socket_path_limit",
    "worker_socket_path",
    "worker_tmpdir_error",
]


def _fallback() -> Callable[[ModuleType], object] | None:
    """The private function with which this Python's ``multiprocessing`` falls back to a system folder from a
    temporary folder too long for its sockets (CPython issue 132124; the same change renamed the socket
    ``sock-``), or ``None`` where there is no fallback."""
    return getattr(multiprocessing.util, "_get_base_temp_dir", None)


def _has_fallback() -> bool:
    """Whether this Python's ``multiprocessing`` has the fallback (:func:`_fallback`)."""
    return _fallback() is not None


def _socket_suffix() -> str:
    """What ``multiprocessing`` appends to its base folder for the socket: two names of 8 random
    characters."""
    return os.path.join("pymp-" + "x" * 8, ("sock-" if _has_fallback() else "listener-") + "x" * 8)


def socket_base_dir() -> str:
    """The folder ``multiprocessing`` makes its ``pymp-*`` folder in: :func:`tempfile.gettempdir`, or on a
    Python with the fallback (see the module's docstring) the folder it falls back to (a private function of
    ``multiprocessing.util``, read only where it exists; the temporary folder if it fails)."""
    fallback = _fallback()
    if fallback is not None:
        try:
            base = fallback(tempfile)
        except Exception:  # noqa: BLE001  # private: its signature or its errors may change
            base = None
        if isinstance(base, str):
            return base
    return tempfile.gettempdir()


def socket_path_limit(platform: str = sys.platform) -> int | None:
    """The longest Unix socket path, in bytes, on ``platform`` (``sun_path`` less its final NUL byte); None
    where ``DataLoader`` workers use no Unix socket (Windows)."""
    if platform.startswith("win"):
        return None
    return 107 if platform.startswith("linux") else 103


def worker_socket_path(tmpdir: str | None = None) -> str:
    """The path of the socket a worker binds, of the length it will have (its random names as ``x``).

    ``tmpdir``: the folder ``multiprocessing`` makes its ``pymp-*`` folder in (default
    :func:`socket_base_dir`).
    """
    return os.path.join(tmpdir if tmpdir is not None else socket_base_dir(), _socket_suffix())


def max_tmpdir_bytes(platform: str = sys.platform) -> int | None:
    """The longest temporary folder, in bytes, with which ``DataLoader`` workers can run (None: no limit):
    75 on Linux and 71 on macOS, 4 more on a Python whose sockets are named ``sock-`` (where a longer folder
    is left for a system folder anyway, :func:`socket_base_dir`).

    Example:
        >>> max_tmpdir_bytes("win32") is None  # handles, no Unix socket
        True
    """
    limit = socket_path_limit(platform)
    return None if limit is None else limit - len(os.fsencode(os.sep + _socket_suffix()))


def worker_tmpdir_error(workers: int, option: str, *, platform: str = sys.platform) -> str | None:
    """Why ``workers`` DataLoader worker processes would hang under this temporary folder (None: they won't).

    Args:
        workers (int): the number of worker processes (0: loading in the main process, never a problem).
        option (str): the command-line option that set ``workers`` (``--workers``), named in the message.
        platform (str): as :data:`sys.platform` (for tests).

    Returns:
        str | None: the message, naming the folder, the variable it came from, its length, the longest that
        works, and the two ways out (a shorter folder, or ``option 0``).
    """
    limit = socket_path_limit(platform)
    if workers == 0 or limit is None:
        return None
    size = len(os.fsencode(worker_socket_path()))
    if size <= limit:
        return None
    tmpdir = tempfile.gettempdir()
    named = [
        f"${v}"
        for v in ("TMPDIR", "TEMP", "TMP")
        if os.environ.get(v) and os.path.abspath(os.environ[v]) == tmpdir
    ]
    source = named[0] if named else "tempfile.gettempdir()"
    longest = max_tmpdir_bytes(platform)
    return (
        f"{option} {workers}: the temporary folder {tmpdir!r} (from {source}) is {len(os.fsencode(tmpdir))} "
        "bytes long, and DataLoader workers cannot run under it: they hand each batch over through a Unix "
        f"socket in it, whose path would be {size} bytes, above the {limit} this system allows, and the run "
        f"would wait forever for the first batch. Set TMPDIR to a folder of at most {longest} bytes "
        f"(TMPDIR=/tmp), or load in the main process with {option} 0"
    )
