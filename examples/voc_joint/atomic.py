"""Files written whole or not at all, with the leftovers of killed writers removed (standard library only).

``Path.write_text`` truncates the file, then writes: a run stopped in between (SIGKILL, a full disk) leaves an
empty or cut file in place of the earlier one. :func:`write_text_atomic` writes a temporary file
``.<name>.<writer>.<pid>.<random>.tmp`` next to the target (:func:`temporary_path`) and renames it onto the
target with ``os.replace``: readers see the earlier file or the whole new one. A writer killed between the two
steps leaves its temporary file; the next write of the same file removes it when its process is gone
(:func:`remove_dead_writers_files`). ``<writer>`` names the host and the process-id namespace, so only the
files of writers whose process ids mean this machine's processes are probed (a folder shared with another
machine or a container holds files of processes this one cannot see), and ``<random>`` keeps two writers with
the same pid apart.

The one implementation for the example's outputs (``metrics.json``, ``eval.json``, ``ablation.json``,
``log.csv``, the data set lists; :func:`write_bytes_atomic`: ``ablation.png`` and the panels) and the
benchmarks' results (``benchmarks/_atomic.py`` re-exports it): it imports no torch, as
``benchmarks/gpu_check.py`` must not. :func:`os_error_reason` and :func:`os_error_saying` word the errors of
failed writes here and in the modules that write checkpoints, logs, locks and staging folders.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import socket
from collections.abc import Callable
from glob import escape as glob_escape
from pathlib import Path

__all__ = [
    "os_error_reason",
    "os_error_saying",
    "remove_dead_writers_files",
    "temporary_path",
    "write_bytes_atomic",
    "write_text_atomic",
]


def write_text_atomic(
    path: Path | str, text: str, newline: str | None = None, *, before: Callable[[], object] | None = None
) -> None:
    """Write ``text`` (UTF-8; ``newline`` as ``open``'s) to ``path`` through a temporary file in its folder
    (:func:`temporary_path`), renamed into place. The temporary file is removed when the write fails or is
    interrupted, and the temporary files of earlier writes of ``path`` whose process is gone are removed
    first.

    ``before`` runs once the temporary file is written and before it is renamed: a change that must come with
    the new file (``evaluate.py`` replaces ``panels/`` there) is made only when the file's own write has
    succeeded. If ``before`` raises, its error propagates unchanged and ``path`` is not replaced.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_text_atomic(Path(tmp) / "r.json", "{}\\n")
        ...     print(sorted(p.name for p in Path(tmp).iterdir()), (Path(tmp) / "r.json").read_text())
        ['r.json'] {}
        <BLANKLINE>
    """
    _write_atomic(Path(path), text, "w", encoding="utf-8", newline=newline, before=before)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` as :func:`write_text_atomic` writes text: the PNG figures and panels
    (``ablation.png``, ``panels/``), which ``savefig`` and PIL's ``save`` wrote in place (a full disk or an
    interrupt left a cut PNG instead of the earlier one)."""
    _write_atomic(Path(path), data, "wb")


def _write_atomic(
    path: Path,
    data: str | bytes,
    mode: str,
    encoding: str | None = None,
    newline: str | None = None,
    before: Callable[[], object] | None = None,
) -> None:
    """Write ``data`` into a temporary file next to ``path`` (:func:`temporary_path`; ``open``'s ``mode``,
    ``encoding`` and ``newline``), run ``before`` (if any), then rename the file onto ``path``."""
    remove_dead_writers_files(path)
    tmp = temporary_path(path)
    in_before = False
    try:
        with open(tmp, mode, encoding=encoding, newline=newline) as fh:
            fh.write(data)
        if before is not None:
            in_before = True
            before()
            in_before = False
        os.replace(tmp, path)
    except BaseException as exc:  # a full disk, an interrupt: no temporary file left, the earlier file intact
        with contextlib.suppress(OSError):  # a read-only folder refuses even this: the error is the write's
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not in_before:  # (before's errors are its own: not the write's)
            raise _write_error(path, exc) from exc
        raise


def _write_error(path: Path, exc: OSError) -> OSError:
    """The error of a failed write of ``path``: the class and ``errno`` of ``exc``, a message that names
    ``path`` (a full disk found by ``write`` or ``close`` names no file, and ``open`` or ``os.replace`` name
    the temporary one) and says that the file was not replaced."""
    return os_error_saying(
        exc,
        f"cannot write {path}: {os_error_reason(exc)}; the file was not replaced (an earlier one there is "
        "unchanged)",
    )


def os_error_reason(exc: OSError) -> str:
    """The cause of ``exc`` in words, with its errno's name: ``"No space left on device (ENOSPC)"`` (its text
    where it has no known errno).

    Example:
        >>> os_error_reason(OSError(errno.ENOSPC, "No space left on device"))
        'No space left on device (ENOSPC)'
    """
    name = errno.errorcode.get(exc.errno, "") if exc.errno is not None else ""
    return f"{exc.strerror or exc} ({name})" if name else str(exc)


def os_error_saying(exc: OSError, message: str, *, same_class: bool = True) -> OSError:
    """A new error saying ``message`` (which names the file, unlike an error of ``write``, ``flush``,
    ``fsync`` or ``flock``) with the ``errno`` of ``exc`` and, with ``same_class``, its class where that is
    a built-in one (a ``PermissionError`` stays one); else an ``OSError``.

    Example:
        >>> err = os_error_saying(PermissionError(errno.EACCES, "Permission denied"), "cannot write r.json")
        >>> type(err).__name__, err.errno, str(err)
        ('PermissionError', 13, 'cannot write r.json')
    """
    cls = type(exc) if same_class and type(exc).__module__ == "builtins" else OSError
    err = cls(message)
    err.errno = exc.errno
    return err


#: The longest file name, in bytes, of the usual file systems (ext4, XFS, btrfs, tmpfs, APFS).
NAME_MAX = 255

#: The bytes a temporary name adds to its target's (truncated) name at most: ``.`` before the name and
#: ``.<8 hex>.<pid, up to 10 digits>.<8 hex>.tmp`` after it.
_ADDED = 1 + 1 + 8 + 1 + 10 + 1 + 8 + 4


def _writer_tag() -> str:
    """8 hex digits naming this host and this process's pid namespace (Linux: ``/proc/self/ns/pid``).

    Process ids are probed only in temporary files with this tag: on another machine sharing the folder, or
    in a container with its own process ids, a running writer's pid names no process here (or another one).
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # e.g. 'pid:[4026531836]'
    except OSError:  # no procfs (macOS, Windows): the host alone
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}\0{namespace}".encode()).hexdigest()[:8]


def _stem(name: str) -> str:
    """``name`` cut (at a character) to the longest start whose temporary names fit in :data:`NAME_MAX`
    bytes; ``name`` itself when they fit. The same for every writer of one target."""
    stem = name[: NAME_MAX - _ADDED]
    while len(os.fsencode(stem)) > NAME_MAX - _ADDED:
        stem = stem[:-1]
    return stem


def temporary_path(path: Path | str) -> Path:
    """A new temporary file's path for a write of ``path``: ``.<name>.<writer>.<pid>.<random>.tmp`` in its
    folder, at most :data:`NAME_MAX` bytes long (a long ``<name>`` is cut; a name of 250 bytes is written as
    any other).

    ``<writer>`` names this host and pid namespace (:func:`remove_dead_writers_files` probes only the pids
    of its own namespace), ``<random>`` 32 random bits: two writers that share a pid (in two containers) or
    a process that writes one file from two threads never share a temporary file.

    Example:
        >>> name = temporary_path(Path("runs") / "metrics.json").name
        >>> name.startswith(".metrics.json.") and name.endswith(".tmp"), len(name.split("."))
        (True, 7)
    """
    path = Path(path)
    return path.with_name(f".{_stem(path.name)}.{_writer_tag()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_dead_writers_files(path: Path) -> None:
    """Remove the temporary files of earlier writes of ``path`` (:func:`temporary_path`) whose process is
    gone (a SIGKILL during a write left them; nothing else ever removes them).

    Only files of this host and pid namespace are probed: another machine's or container's stay, as does a
    running writer's, one whose process id was reused meanwhile, and any name that is not a temporary
    file's; where ``os.kill`` cannot probe a process (Windows) nothing is removed.
    """
    if os.name == "nt" or not path.parent.is_dir():
        return
    prefix = f".{_stem(path.name)}.{_writer_tag()}."
    for tmp in path.parent.glob(f"{glob_escape(prefix)}*.tmp"):
        pid, dot, random = tmp.name[len(prefix) : -len(".tmp")].partition(".")
        if not (dot and pid.isdigit() and len(random) == 8) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # gone: its file is abandoned
            tmp.unlink(missing_ok=True)
        except OSError:  # alive (another user's: PermissionError)
            continue
        except OverflowError:  # digits beyond any process id (a C int): not a writer's file, kept
            continue
