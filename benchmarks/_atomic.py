"""Result files written whole or not at all: the example's :mod:`examples.voc_joint.atomic` (standard library
only: ``gpu_check.py`` imports no torch), found from the checkout this folder lies in.

``Path.write_text`` truncated the file, then wrote: a run stopped in between (SIGKILL, a full disk) left an
empty or cut file in place of the earlier result, and a merged file (``bench_joint.py``'s entries of other
machines) lost every entry. ``write_text_atomic`` writes a temporary file next to the target, renames it onto
the target, and removes the temporary files that killed runs left.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:  # run as ``python benchmarks/<script>.py``: the checkout's examples package
    sys.path.append(_ROOT)

from examples.voc_joint.atomic import remove_dead_writers_files, write_text_atomic  # noqa: E402

__all__ = ["remove_dead_writers_files", "write_text_atomic"]
