"""Console output that cannot fail on an encoding: the command lines call :func:`tolerant_output` first.

Python writes ``sys.stdout`` redirected to a file or a pipe in the locale's encoding: a legacy code page
such as cp1252 on most Windows machines (a Windows console itself takes every character), ASCII under a POSIX
``C`` locale without UTF-8 mode. A character it cannot represent there (the ``Иван`` of a path such as
``C:\\Users\\Иван\\voc`` in cp1252; under ASCII also the ``±`` of the ablation table) raises
``UnicodeEncodeError`` in the ``print`` and stops the command, possibly after hours of training.
``sys.stderr`` already escapes such characters (``backslashreplace``); :func:`tolerant_output` makes
``sys.stdout`` do the same. Files the pipeline writes are UTF-8 whatever the console (``encoding="utf-8"``).
"""

from __future__ import annotations

import codecs
import io
import sys

__all__ = ["ESCAPE", "tolerant_output"]

#: The error handler :func:`tolerant_output` gives ``sys.stdout``: the bytes of a file name Python decoded
#: with ``surrogateescape`` are written back as they were, every other character is escaped (``\xb1``).
ESCAPE = "transinit-escape"


def _is_byte(char: str) -> bool:
    """``char`` stands for an undecodable byte (``surrogateescape``)."""
    return 0xDC80 <= ord(char) <= 0xDCFF


def _escape(exc: UnicodeError) -> tuple[str | bytes, int]:
    """The undecodable bytes at the start of the failed run as bytes, else the run up to the next such byte
    escaped; the encoder resumes after what is returned (a run can hold both)."""
    if not isinstance(exc, UnicodeEncodeError):
        return codecs.backslashreplace_errors(exc)
    chunk = exc.object[exc.start : exc.end]
    n = next((i for i, c in enumerate(chunk) if not _is_byte(c)), len(chunk))
    if n:
        return bytes(ord(c) - 0xDC00 for c in chunk[:n]), exc.start + n
    n = next((i for i, c in enumerate(chunk) if _is_byte(c)), len(chunk))
    head = UnicodeEncodeError(exc.encoding, exc.object, exc.start, exc.start + n, exc.reason)
    return codecs.backslashreplace_errors(head)


codecs.register_error(ESCAPE, _escape)


def tolerant_output() -> None:
    """Make ``sys.stdout`` escape the characters its encoding cannot represent instead of raising
    ``UnicodeEncodeError`` (a no-op for a stream that is not a text file, or whose error handler already
    replaces or drops such characters).

    Example:
        >>> tolerant_output()  # then print("\\u00b1") writes \\xb1 to an ASCII console instead of failing
        >>> "\\u00b1 \\udcff".encode("ascii", errors=ESCAPE)
        b'\\\\xb1 \\xff'
    """
    stream = sys.stdout
    if isinstance(stream, io.TextIOWrapper) and stream.errors in ("strict", "surrogateescape"):
        stream.reconfigure(errors=ESCAPE)
