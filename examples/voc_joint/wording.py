"""How the pipeline's messages count things: ``"1 image"`` and ``"3 images"``, never ``"1 images"``.

Example:
    >>> counted(1, "image"), counted(3, "image"), counted(1, "process", "processes")
    ('1 image', '3 images', '1 process')
"""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in the number that ``n`` asks for: the singular for exactly one, else ``plural``
    (default: ``noun + "s"``).

    Args:
        n: how many.
        noun: the singular (``"file"``).
        plural: the plural where it is not ``noun + "s"`` (``"processes"``).

    Example:
        >>> counted(1, "file"), counted(0, "file"), counted(2, "process", "processes")
        ('1 file', '0 files', '2 processes')
    """
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
