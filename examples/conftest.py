"""Collection of the examples' doctests: without the ``examples`` extra (torchvision), the pipeline's modules
cannot be imported, so their doctests are not collected (the library's tests still run)."""

from __future__ import annotations

try:
    import torchvision  # noqa: F401
except ModuleNotFoundError:
    collect_ignore_glob = ["voc_joint/*.py", "voc_joint/**/*.py"]
