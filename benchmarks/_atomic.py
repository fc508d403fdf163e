"""Result files written whole or not at all (standard library only: ``gpu_check.py`` imports no torch).

``Path.write_text`` truncates the file, then writes: a run stopped in between (SIGKILL, a full disk) left an
empty or cut file in place of the earlier result, and a merged file (``bench_joint.py``'s entries of other
machines) lost every entry. :func:`write_text_atomic` writes a temporary file next to the target and renames
it onto the target with ``os.replace``: readers see the earlier file or the whole new one.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_text_atomic"]


def write_text_atomic(path: Path | str, text: str, newline: str | None = None) -> None:
    """Write ``text`` (UTF-8; ``newline`` as ``open``'s) to ``path`` through ``.<name>.<pid>.tmp`` in its
    folder, renamed into place; the temporary file is removed when the write fails or is interrupted.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     write_text_atomic(Path(tmp) / "r.json", "{}\\n")
        ...     print(sorted(p.name for p in Path(tmp).iterdir()), (Path(tmp) / "r.json").read_text())
        ['r.json'] {}
        <BLANKLINE>
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline=newline) as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:  # a full disk, an interrupt: no temporary file left, the earlier file intact
        tmp.unlink(missing_ok=True)
        raise
