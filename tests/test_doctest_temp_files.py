"""The docstring examples that make temporary files remove them: running the doctests (``--doctest-modules``,
on every test run) leaves nothing in the temporary folder.

The examples of ``FolderLock`` and ``generate_synthetic_voc`` made their folders with ``tempfile.mkdtemp()``
and left them behind: a lock file, and a synthetic set with a lock file beside it, at every run of the suite.
"""

from __future__ import annotations

import doctest
import importlib
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_whose_examples_use_tempfile() -> list[pytest.param]:
    """Every module of the packages and the example whose source mentions ``tempfile`` in a ``>>>`` line."""
    params = []
    for package in ("sparse_ops", "transparent_init", "examples"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if not any(">>>" in line and "tempfile" in line for line in path.read_text("utf-8").splitlines()):
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            marks = [pytest.mark.examples] if package == "examples" else []
            params.append(pytest.param(name, id=name, marks=marks))
    return params


MODULES = _modules_whose_examples_use_tempfile()


def test_the_search_finds_the_examples_that_make_temporary_files() -> None:
    names = {p.values[0] for p in MODULES}
    assert {"examples.voc_joint.locking", "examples.voc_joint.synthetic"} <= names


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_leave_no_temporary_files(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module(name)
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    for test in tests:
        runner.run(test, out=report.append)
    assert tests and runner.failures == 0, "".join(report)[-3000:]
    assert sorted(p.name for p in private.iterdir()) == []
