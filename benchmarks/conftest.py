"""Collection of the benchmarks' doctests (``testpaths``): without the ``examples`` extra (torchvision),
``bench_joint.py``, which times the example's models, cannot be imported, so its doctests are not collected
(those of the harness and the other scripts still run)."""

from __future__ import annotations

try:
    import torchvision  # noqa: F401
except ModuleNotFoundError:
    collect_ignore = ["bench_joint.py"]
