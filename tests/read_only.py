"""A folder that this user may not write in, as the code under test sees it: the tests run as root in the
container, where a real read-only folder would still be writable, so ``os.access`` is made to say no."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

__all__ = ["deny_writes"]


def deny_writes(monkeypatch: pytest.MonkeyPatch, folder: Path | None) -> None:
    """``os.access`` says that ``folder`` cannot be written (None: change nothing); every other question goes
    to the real ``os.access``."""
    if folder is None:
        return
    real = os.access

    def access(path: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
