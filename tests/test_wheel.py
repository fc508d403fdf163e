"""What a user installs: the wheel's files and metadata, and the installed packages outside the source tree.

The wheel is built offline with the project's build backend (``hatchling``, in the ``test`` extra); without
it, or with one older than the build-system floor (an offline GPU image's), these tests skip.
"""

from __future__ import annotations

import email.message
import email.parser
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("hatchling")

from packaging.requirements import Requirement  # a dependency of pytest and of hatchling
from packaging.utils import canonicalize_name
from packaging.version import Version

#: pyproject.toml's build-system floor: an older hatchling (an offline image's) cannot write core metadata 2.4
if Version(importlib.metadata.version("hatchling")) < Version("1.27"):
    pytest.skip(
        f"the build needs hatchling >= 1.27, found {importlib.metadata.version('hatchling')}",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sparse_ops", "transparent_init")
#: The lowest declared versions, pinned (docs/development.rst, "The lowest declared versions").
LOWEST = ROOT / ".ci" / "lowest-constraints.txt"


def _version() -> str:
    """The version of the source tree (``transparent_init/_version.py``), read without importing it."""
    scope: dict[str, object] = {}
    exec((ROOT / "transparent_init" / "_version.py").read_text(), scope)
    return str(scope["__version__"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q"]
    res = subprocess.run([*cmd, "-w", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (path,) = out.glob("transinit-*.whl")
    return path


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    cmd = [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (path,) = out.glob("transinit-*.tar.gz")
    return path


def _metadata(wheel: Path) -> email.message.Message:
    """The wheel's ``METADATA``: what a package index shows and pip resolves."""
    with zipfile.ZipFile(wheel) as zf:
        return email.parser.Parser().parsestr(zf.read(f"transinit-{_version()}.dist-info/METADATA").decode())


def test_wheel_holds_the_two_packages_their_type_markers_and_the_license(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).glob("*.py")}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    markers = {f"{pkg}/py.typed" for pkg in PACKAGES}
    assert markers <= names  # PEP 561: users' type checkers read the hints
    # Nothing else in the packages: an untracked file the .gitignore does not name (an editor's backup, a
    # stray output) in a package folder would be installed on every user's machine.
    stray = {n for n in names if n.split("/")[0] in PACKAGES} - sources - markers
    assert not stray, f"not a source file of the packages: {sorted(stray)}"
    dist_info = f"transinit-{_version()}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    tops = {n.split("/")[0] for n in names}
    assert tops == {*PACKAGES, dist_info}, f"unexpected top-level entries: {sorted(tops)}"


def test_wheel_metadata_names_only_the_core_dependencies(wheel: Path) -> None:
    meta = _metadata(wheel)
    assert (meta["Name"], meta["Version"], meta["License-Expression"]) == ("transinit", _version(), "MIT")
    # PEP 639: the SPDX expression replaces the free-text License field and the License classifiers.
    assert meta["License"] is None
    assert [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")] == []
    core = sorted(r.split(">")[0].split("=")[0] for r in meta.get_all("Requires-Dist") if "extra ==" not in r)
    assert core == ["numpy", "scipy", "torch"]
    assert {"test", "docs", "examples", "dev"} <= set(meta.get_all("Provides-Extra"))


def test_python_classifiers_start_at_requires_python(wheel: Path) -> None:
    """The Python versions a package index shows (the ``Programming Language :: Python :: 3.X`` classifiers)
    run without a gap from the ``Requires-Python`` floor, which is also ruff's ``target-version`` and mypy's
    ``python_version``: raising one of them without the others fails here."""
    meta = _metadata(wheel)
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    listed = (re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c) for c in classifiers)
    minors = sorted(int(m.group(1)) for m in listed if m is not None)
    floor = re.fullmatch(r">=3\.(\d+)", meta["Requires-Python"])
    assert floor is not None, meta["Requires-Python"]
    lowest = int(floor.group(1))
    assert minors and minors == list(range(lowest, lowest + len(minors))), (meta["Requires-Python"], minors)
    config = (ROOT / "pyproject.toml").read_text()
    assert f'target-version = "py3{lowest}"' in config and f'python_version = "3.{lowest}"' in config


def test_core_metadata_version_is_one_every_uploader_reads(wheel: Path, sdist: Path) -> None:
    """Both archives carry core metadata 2.4 (``core-metadata-version`` in ``pyproject.toml``): the version
    that has ``License-File``, which PyPI refuses in older versions (hatchling before 1.27 wrote it in 2.1),
    and that twine and the upload actions read (hatchling 1.32+ writes 2.5 by default, which twine with
    packaging before 26.2 refuses: "'2.5' is not a valid metadata version")."""
    with tarfile.open(sdist) as tf:
        (member,) = [m for m in tf.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")]
        extracted = tf.extractfile(member)
        assert extracted is not None
        pkg_info = email.parser.Parser().parsestr(extracted.read().decode())
    for meta in (_metadata(wheel), pkg_info):
        assert meta["Metadata-Version"] == "2.4"
        assert meta.get_all("License-File") == ["LICENSE"]


def test_lowest_constraints_pin_every_declared_floor(wheel: Path) -> None:
    """``.ci/lowest-constraints.txt`` pins exactly the lowest versions the wheel declares, core and extras,
    and the build backend's (docs/development.rst, "The lowest declared versions"): a floor raised without
    its pin would leave that run testing a stack the project no longer allows. Every dependency has a floor
    (``>=``) or an exact pin (``==``, the dev tools, left out of the file), and a package named in two
    extras has one floor."""
    if not (ROOT / ".ci").is_dir():
        pytest.skip("no .ci folder (an sdist): the pins live in the repository")
    meta = _metadata(wheel)
    build = re.search(
        r"^\[build-system\]\s*requires = \[([^\]]*)\]", (ROOT / "pyproject.toml").read_text(), re.M
    )
    assert build is not None
    declared = [*meta.get_all("Requires-Dist"), *re.findall(r'"([^"]+)"', build.group(1))]
    floors: dict[str, set[Version]] = {}
    for line in declared:
        req = Requirement(line)
        ops = {spec.operator: Version(spec.version) for spec in req.specifier}
        assert ">=" in ops or set(ops) == {"=="}, f"no floor nor pin: {line!r}"
        if ">=" in ops:
            floors.setdefault(canonicalize_name(req.name), set()).add(ops[">="])
    assert all(len(v) == 1 for v in floors.values()), {k: sorted(map(str, v)) for k, v in floors.items()}
    lines = LOWEST.read_text().splitlines() if LOWEST.exists() else []
    pins: dict[str, Version] = {}
    for line in (ln.strip() for ln in lines):
        if line and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = Version(spec.version)
    assert pins == {name: v for name, (v,) in floors.items()}, (
        f"{LOWEST.name} pins {sorted(f'{k}=={v}' for k, v in pins.items())}, "
        f"pyproject.toml's floors are {sorted(f'{k}>={next(iter(v))}' for k, v in floors.items())}"
    )


def test_installed_wheel_works_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    """Installed from the wheel into a folder put first on the path, run from outside the source tree (an
    editable install may still list the checkout later on the path): both packages import from the install,
    report the distribution's version, work, and load neither scipy nor the examples."""
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target)]
    res = subprocess.run([*cmd, str(wheel)], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    code = f"""
import importlib.metadata, sys
import torch
import sparse_ops, transparent_init
from sparse_ops import uniformize
from transparent_init import TransparentLinear
for pkg in (sparse_ops, transparent_init):
    assert pkg.__file__.startswith({str(target)!r}), pkg.__file__
    assert pkg.__version__ == importlib.metadata.version("transinit") == {_version()!r}, pkg.__version__
x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
ids = torch.arange(16).reshape(1, 4, 4).div(8, rounding_mode="floor").expand(2, 4, 4)
y = uniformize(x, ids)
assert torch.allclose(y[..., :2, :], x[..., :2, :].mean(dim=(-2, -1), keepdim=True).expand(2, 3, 2, 4))
layer = TransparentLinear(5, [12, 12], activation="relu", dtype=torch.float64, generator=0)
z = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
assert torch.allclose(layer(z), z, atol=1e-9)
assert "scipy" not in sys.modules and "examples" not in sys.modules
print("ok")
"""
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout[-2000:] + res.stderr[-3000:]


def test_sdist_holds_the_license_and_what_the_tests_need(sdist: Path) -> None:
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
        sizes = {m.name.split("/", 1)[1]: m.size for m in tf.getmembers() if m.isfile()}
    tops = {n.split("/")[0] for n in names}
    expected = {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", *PACKAGES}
    assert expected | {"tests", "examples", "benchmarks", "docs"} <= tops
    assert "tests/conftest.py" in names and "examples/voc_joint/train.py" in names
    # What .gitignore keeps out of a working tree's sdist: caches, builds, virtual environments, run outputs.
    junk = {"__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache", "_build", ".venv"}
    shipped_junk = [n for n in names if junk & set(n.split("/")) or n.endswith((".pyc", ".pt", ".egg-info"))]
    assert not shipped_junk, shipped_junk
    # The largest file is about 400 kB (an ablation's JSON); a data set or a checkpoint would be far larger.
    large = {n: size for n, size in sizes.items() if size > 1_000_000}
    assert not large, large


def test_sdist_builds_the_same_wheel(wheel: Path, sdist: Path, tmp_path: Path) -> None:
    """A wheel built from the unpacked sdist (as ``python -m build`` and pip do) holds the same files, byte
    for byte, as the one built from the source tree: the sdist is missing nothing the wheel needs."""
    with tarfile.open(sdist) as tf:
        # The "data" filter (Python 3.10.12+ and 3.11.4+) refuses links and paths outside the folder.
        tf.extractall(tmp_path / "src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (src,) = (tmp_path / "src").iterdir()
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q"]
    cmd += ["-w", str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (rebuilt,) = tmp_path.glob("transinit-*.whl")

    def contents(path: Path) -> dict[str, bytes]:
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in zf.namelist()}

    direct, from_sdist = contents(wheel), contents(rebuilt)
    assert sorted(direct) == sorted(from_sdist)
    assert [n for n in direct if direct[n] != from_sdist[n]] == []


def test_the_sdist_tests_collect_without_the_repository_files(sdist: Path, tmp_path: Path) -> None:
    """The README names the unpacked sdist as the way to the tests, and the sdist has no ``.ci/`` folder (CI's
    script and pins live in the repository): every test module collects there without an import error, and
    those that read ``.ci/`` skip with the reason (``tests/test_ci_command.py`` read ``.ci/run`` at import
    and stopped the whole run with a ``FileNotFoundError``)."""
    with tarfile.open(sdist) as tf:
        tf.extractall(tmp_path / "src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (src,) = (tmp_path / "src").iterdir()
    assert not (src / ".ci").exists()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(src / "benchmarks")])}
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-rs", "-p", "no:cacheprovider", "tests"]
    res = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "error" not in out.strip().splitlines()[-1], out[-3000:]
    assert "tests/test_ci_command.py:" in out and "no .ci/run (an sdist)" in out, out[-3000:]
