"""Staging folders that a later run can tell apart from a running one's, and removes once abandoned.

A command that builds its output in a temporary folder next to it (``evaluate.py``'s panels, ``sbd.py``'s
masks) removes that folder in a ``finally`` block, which SIGTERM, SIGKILL or a power cut never reach: the
folder stayed, one more per killed run. :func:`new_staging` makes the folder and holds an ``flock`` on it
for as long as the process (or a child it forked, such as a DataLoader worker) keeps the returned descriptor
open; :func:`remove_abandoned_staging` removes the folders of the same name pattern that no process holds. The
operating system releases the lock however the process ends. Where ``fcntl`` does not exist (Windows) folders
are made unlocked and nothing is removed: a running run's folder could not be told apart.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

from examples.voc_joint.atomic import os_error_reason, os_error_saying

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]  # no flock: abandoned folders are not removed

__all__ = ["new_staging", "remove_abandoned_staging", "unique_folder"]

#: The random part of a staging folder's name (8 hexadecimal digits; ``[a-z0-9_]`` also matches the names
#: ``tempfile.mkdtemp`` gave before).
_RANDOM = "[a-z0-9_]{8}"


def unique_folder(parent: Path, prefix: str, suffix: str = "") -> Path:
    """Make a new folder ``<parent>/<prefix><8 random hexadecimal digits><suffix>`` with the mode ``mkdir``
    gives (``0o777`` less the umask; ``tempfile.mkdtemp`` makes private ``0o700`` folders, and reading the
    umask takes ``os.umask``, which changes it for every thread of the process for an instant).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = unique_folder(Path(tmp), ".set.", ".tmp")
        ...     print(folder.is_dir(), folder.name.startswith(".set."), folder.name.endswith(".tmp"))
        True True True
    """
    for _ in range(100):
        folder = parent / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise FileExistsError(f"no free name for a new folder '{prefix}<random>{suffix}' in '{parent}'")


def new_staging(parent: Path, prefix: str, suffix: str = "") -> tuple[Path, int | None]:
    """Make the folder ``<parent>/<prefix><8 random characters><suffix>`` (the umask's mode, as ``mkdir``'s:
    the folder may become an output) and return it with an open descriptor that holds an ``flock`` on it
    until it is closed (``None`` without ``fcntl``). The folder gets its name only once locked, so that a run
    starting meanwhile never takes it for an abandoned one.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder, held = new_staging(Path(tmp), ".panels.")
        ...     print(folder.name.startswith(".panels."), remove_abandoned_staging(Path(tmp), ".panels."))
        ...     if held is not None:
        ...         os.close(held)  # abandoned now: the next remove_abandoned_staging removes it
        True []
    """
    private = unique_folder(parent, f"{prefix}unlocked-", suffix)
    random = private.name[len(prefix) + len("unlocked-") :][:8]
    folder = parent / f"{prefix}{random}{suffix}"
    held = None
    try:
        if fcntl is not None:
            held = os.open(private, os.O_RDONLY)
            fcntl.flock(held, fcntl.LOCK_EX)
        os.rename(private, folder)  # the lock stays: it belongs to the folder, not to its name
    except BaseException as exc:  # no later run removes a folder of the unlocked name: this one does
        if held is not None:
            os.close(held)
        with contextlib.suppress(OSError):
            private.rmdir()
        if isinstance(exc, OSError):
            raise _staging_error(folder, exc) from exc
        raise
    return folder, held


def _staging_error(folder: Path, exc: OSError) -> OSError:
    """The error of a staging folder that could not be locked or named: the class and ``errno`` of ``exc``,
    a message that names ``folder`` and the cause (``flock``'s error names no file)."""
    return os_error_saying(exc, f"cannot make the staging folder {folder}: {os_error_reason(exc)}")


def remove_abandoned_staging(parent: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the folders ``<parent>/<prefix><8 random characters><suffix>`` that no process holds (those of
    runs that ended without removing theirs); the folders of running runs stay. Nothing is removed without
    ``fcntl``. Returns the folders removed (one whose removal failed, a file of it busy on NFS, stays, raises
    nothing and is not returned)."""
    removed: list[Path] = []
    if fcntl is None or not parent.is_dir():
        return removed
    pattern = re.compile(re.escape(prefix) + _RANDOM + re.escape(suffix))
    for folder in sorted(p for p in parent.iterdir() if pattern.fullmatch(p.name)):
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # not a folder (or a link to one), or removed meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a running run's (or its DataLoader workers', for seconds after it died)
                continue
            shutil.rmtree(folder, ignore_errors=True)  # housekeeping: what cannot go stays, unreported
            if not folder.exists():
                removed.append(folder)
        finally:
            os.close(fd)
    return removed
