"""What CI runs is what the README says, and it installs what the tests need, so no test skips there unseen.

``.ci/run`` runs the README's test command (between its "keep in sync" lines). A test module that calls
``pytest.importorskip`` on a package of an extra that this command does not install skips in every CI run:
the 120 tests that read the docstrings with sphinx's napoleon did, until the command installed the ``docs``
extra, and a docstring broke their rule unseen. The suite also writes checkpoints and demo runs into
``tmp_path``: a passed test's folder must go when the test ends (kept, a run's came to about 8 GB, enough to
fill a CI machine's disk).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
if not (ROOT / ".ci" / "run").is_file():  # an unpacked sdist: CI's script lives in the repository only
    pytest.skip("no .ci/run (an sdist): CI's script is in the repository", allow_module_level=True)
CI_RUN = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
#: Import names whose distribution is spelled otherwise.
DISTRIBUTIONS = {"skimage": "scikit-image"}
OWN_PACKAGES = {"transparent_init", "sparse_ops", "examples"}


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"Run the tests,.*?```bash\n(.*?)\n```", readme, re.S)
    assert found, "README.md has no 'Run the tests' block"
    return found.group(1).strip()


def _ci_test_command() -> str:
    found = re.search(r"# --- keep in sync with README\.md.*?\n(.*?)\n\s*# -{5,}", CI_RUN, re.S)
    assert found, ".ci/run has no block kept in sync with the README"
    return found.group(1).strip()


def _extras(command: str) -> set[str]:
    return {name for group in re.findall(r"\.\[([\w,-]+)\]", command) for name in group.split(",")}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _distributions(extras: set[str]) -> set[str]:
    optional = PYPROJECT["project"]["optional-dependencies"]
    names = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    return names | {_name(r) for extra in extras for r in optional[extra]}


def _importorskips(source: str) -> list[str]:
    """The module names that ``pytest.importorskip`` is called with (a literal first argument)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "importorskip"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(node.args[0].value)
    return found


def test_ci_runs_the_readme_test_command() -> None:
    assert _ci_test_command() == _readme_test_command()


def test_the_ci_install_covers_every_package_a_test_skips_without() -> None:
    install = CI_RUN[CI_RUN.index("install() {") : CI_RUN.index("readme_tests() {")]
    available = _distributions(_extras(_ci_test_command()) | _extras(install))
    calls = [
        (module, str(path.relative_to(ROOT)))
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for module in _importorskips(path.read_text(encoding="utf-8"))
    ]
    assert {"sphinx", "fcntl"} <= {module.split(".")[0] for module, _ in calls}  # the scan sees the calls
    missing = [
        (module, path)
        for module, path in calls
        if (top := module.split(".")[0]) not in sys.stdlib_module_names
        and top not in OWN_PACKAGES
        and _name(DISTRIBUTIONS.get(top, top)) not in available
    ]
    assert not missing, f"CI does not install these packages, so these tests skip there: {missing}"


def test_the_scan_finds_a_package_that_no_extra_holds() -> None:
    assert _importorskips('import pytest\nnp = pytest.importorskip("nonexistent_pkg", reason="x")\n') == [
        "nonexistent_pkg"
    ]
    assert "nonexistent-pkg" not in _distributions(set(PYPROJECT["project"]["optional-dependencies"]))
    assert "sphinx" not in _distributions({"test", "examples"})  # the command before the docs extra
    assert "sphinx" in _distributions({"docs"})


def test_a_passed_tests_tmp_path_is_removed_when_it_ends() -> None:
    assert PYPROJECT["tool"]["pytest"]["ini_options"]["tmp_path_retention_policy"] == "failed"


#: Calls whose behaviour changes between torch releases (tracing, export, functional transforms).
VERSION_SENSITIVE_CALL = re.compile(r"^(torch\.(compile|export|func|_dynamo)\b|.*\bvmap$)")


def _floor_selection() -> list[str]:
    found = re.search(r'^FLOOR_TESTS="([^"]+)"$', CI_RUN, re.M)
    assert found, ".ci/run has no FLOOR_TESTS selection"
    return found.group(1).split(" or ")


def _version_sensitive_tests() -> list[tuple[str, str]]:
    """``(file, test)`` of every test function under ``tests/`` that calls ``torch.compile``,
    ``torch.export``, ``torch.func``, ``torch._dynamo`` or a ``vmap``."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test")):
                continue
            calls = (ast.unparse(c.func) for c in ast.walk(node) if isinstance(c, ast.Call))
            if any(VERSION_SENSITIVE_CALL.match(call) for call in calls):
                found.append((path.name, node.name))
    return found


def test_the_torch_floor_stage_selects_every_version_sensitive_test() -> None:
    """CI runs the tests of torch.compile, torch.export and torch.func again on the oldest supported torch
    (``torch_floor`` in ``.ci/run``, by ``pytest -k``, which matches a test's file and function names). On
    torch 2.11 a compiled joint model trained with zero fusion gradients while 2.14, which CI ran, was right:
    a test that calls those and that the selection misses runs on 2.14 only."""
    words = _floor_selection()
    tests = _version_sensitive_tests()
    assert len(tests) >= 20, tests  # the scan finds them (26 test functions at the time of writing)
    missed = [
        f"{file}::{test}" for file, test in tests if not any(w in f"{file}::{test}".lower() for w in words)
    ]
    assert not missed, (
        f"add a word of FLOOR_TESTS in .ci/run to these tests' names, or one to FLOOR_TESTS: {missed}"
    )
    assert re.search(r'torch==2\.11\.0" "torchvision==0\.26\.0"', CI_RUN), (
        "the floor stage installs torch 2.11"
    )
    floor = re.search(r'"torch>=([\d.]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert floor and floor.group(1) == "2.11", (
        "pyproject's torch floor moved: move the CI floor stage with it"
    )
    assert 'stage "torch 2.11 floor' in CI_RUN


def test_the_development_page_states_ruffs_line_length_and_cis_torch_pair() -> None:
    """The development page's "the N-column limit in pyproject.toml" is ruff's ``line-length``, and the
    torch / torchvision pair it says ``.ci/run`` installs first is the one ``.ci/run`` installs."""
    page = " ".join((ROOT / "docs" / "development.rst").read_text(encoding="utf-8").split())
    assert f"the {PYPROJECT['tool']['ruff']['line-length']}-column limit in ``pyproject.toml``" in page
    pair = re.search(r'pip install -q "torch==([\d.]+)" "torchvision==([\d.]+)"', CI_RUN)
    assert pair is not None
    assert f"``torch=={pair.group(1)} torchvision=={pair.group(2)}`` is the pair" in page
