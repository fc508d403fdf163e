"""Packaging: one version from the installed metadata, light imports, an explicit public surface."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import transparent_init

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import json, sys
import importlib.metadata as md
if sys.argv[1] == "uninstalled":
    def missing(name):
        raise md.PackageNotFoundError(name)
    md.version = missing
import transparent_init
print(json.dumps({"version": transparent_init.__version__, "modules": sorted(sys.modules)}))
"""


def _probe(mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout)


def test_version_is_the_distribution_version() -> None:
    try:
        expected = importlib.metadata.version("transinit")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("transinit is not installed in this environment")
    assert transparent_init.__version__ == expected


def test_import_is_light_and_independent() -> None:
    """``import transparent_init`` loads neither scipy nor sparse_ops; uninstalled, it reports the version
    written in the one place hatchling reads it (``_version.py``)."""
    out = _probe("uninstalled")
    heavy = [m for m in out["modules"] if m.split(".")[0] in ("scipy", "sparse_ops", "torchvision")]
    assert heavy == []
    from transparent_init._version import __version__ as written

    assert out["version"] == written


def test_public_surface() -> None:
    assert sorted(transparent_init.__all__) == transparent_init.__all__
    for name in transparent_init.__all__:
        assert getattr(transparent_init, name) is not None
    assert not [n for n in transparent_init.__all__ if n.startswith("_") and n != "__version__"]


def test_no_public_name_outside_all() -> None:
    """``dir(transparent_init)`` shows ``__all__`` and the submodules, nothing else (``version`` and
    ``PackageNotFoundError`` of ``importlib.metadata`` were public attributes)."""
    stray = [n for n in dir(transparent_init) if not n.startswith("_") and n not in transparent_init.__all__]
    assert [n for n in stray if not inspect.ismodule(getattr(transparent_init, n))] == []


@pytest.mark.parametrize(
    "name", [n for n in transparent_init.__all__ if inspect.isfunction(getattr(transparent_init, n))]
)
def test_every_public_function_documents_args_returns_and_an_example(name: str) -> None:
    """Every exported function's docstring has an ``Args:`` section, a ``Returns:`` section and a ``>>>``
    example (run by the doctests), as sparse_ops' do: the baselines did not say that they return the module,
    the metrics had no ``Returns:``, and ``build_transparent_stack`` no ``Args:`` (its ``conv`` was described
    nowhere else)."""
    doc = inspect.getdoc(getattr(transparent_init, name)) or ""
    for section in ("\nArgs:\n", "\nReturns:\n", "\n    >>> "):
        assert section in doc, f"{name}: no {section.strip()!r}"
