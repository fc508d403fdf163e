"""The docs' ``conf.py`` fails the build on a cross-reference that leads nowhere, and links our spellings.

``python -m sphinx -W`` (``.ci/run``'s docs stage) reads ``nitpicky = True`` from ``docs/conf.py``, so a name
in a role or a docstring type that has no target fails the build instead of reaching readers as plain text.
These tests build a one-page project with the docs' own ``conf.py`` and offline inventories (no autodoc, about
a second): an unresolved reference must fail it, and the spellings our docstrings use (``Tensor[B, 9, H, W]``,
``nn.Module``, the defining modules autodoc writes for torch's re-exported classes) must link to the right
pages.
"""

from __future__ import annotations

import re
import runpy
import shutil
from pathlib import Path

import pytest

pytest.importorskip("sphinx.cmd.build", reason="the docs extra (sphinx) is not installed")
pytest.importorskip("furo", reason="the docs extra (furo) is not installed")
from sphinx.cmd.build import build_main

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _build(tmp_path: Path, body: str) -> tuple[int, str, str]:
    """Build ``body`` as the index page of a project configured by ``docs/conf.py``: (exit status, stderr-like
    warnings, the page's HTML)."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shutil.copy(DOCS / "conf.py", src / "conf.py")
    shutil.copytree(DOCS / "_intersphinx", src / "_intersphinx")
    (src / "_static").mkdir()
    (src / "index.rst").write_text(f"Test\n====\n\n{body}\n", encoding="utf-8")
    warnings = tmp_path / "warnings.txt"
    status = build_main(["-W", "--keep-going", "-q", "-b", "html", "-w", str(warnings), str(src), str(out)])
    page = out / "index.html"
    return status, warnings.read_text(), page.read_text(encoding="utf-8") if page.exists() else ""


def test_conf_is_nitpicky() -> None:
    assert runpy.run_path(str(DOCS / "conf.py"))["nitpicky"] is True


def test_unresolved_reference_fails_the_build(tmp_path: Path) -> None:
    status, warnings, _ = _build(tmp_path, "See :func:`sparse_ops.no_such_op`.")
    assert status != 0
    assert "reference target not found: sparse_ops.no_such_op" in warnings


def test_unresolved_docstring_type_fails_the_build(tmp_path: Path) -> None:
    body = ".. py:function:: f(x)\n\n   :param x: input.\n   :type x: Tensor[B, C, H, W] | NoSuchType\n"
    status, warnings, _ = _build(tmp_path, body)
    assert status != 0
    assert "reference target not found: NoSuchType" in warnings
    assert "target not found: Tensor" not in warnings and "target not found: B " not in warnings


def test_our_spellings_link_to_their_documentation(tmp_path: Path) -> None:
    types = (
        "Tensor[B, 9, H, W] | LongTensor[B*N_s] | nn.Module | torch.nn.modules.module.Module | "
        "torch._C.Generator | Path | PIL.Image.Image | Sequence[int]"
    )
    body = f".. py:function:: f(x)\n\n   :param x: input.\n   :type x: {types}\n"
    status, warnings, page = _build(tmp_path, body)
    assert status == 0, warnings
    links = set(re.findall(r'href="(https://[^"]+)"', page))
    for address in (
        "https://docs.pytorch.org/docs/stable/tensors.html#torch.Tensor",
        "https://docs.pytorch.org/docs/stable/generated/torch.nn.Module.html#torch.nn.Module",
        "https://docs.pytorch.org/docs/stable/generated/torch.Generator.html#torch.Generator",
        "https://docs.python.org/3/library/pathlib.html#pathlib.Path",
        "https://pillow.readthedocs.io/en/stable/reference/Image.html#PIL.Image.Image",
        "https://docs.python.org/3/library/collections.abc.html#collections.abc.Sequence",
    ):
        assert address in links, (address, sorted(links))
    assert ">LongTensor<" in page and ">nn.Module<" in page  # the text stays as the docstring wrote it


def test_a_type_alias_in_a_docstring_type_links(tmp_path: Path) -> None:
    """``activation (Activation | None)``: ``Activation`` is documented as data (Sphinx 7.2 needs conf.py's
    fallback, the lowest declared version)."""
    body = (
        ".. py:data:: Kind\n\n   A type alias.\n\n"
        ".. py:function:: f(x)\n\n   :param x: input.\n   :type x: Kind | None\n"
    )
    status, warnings, page = _build(tmp_path, body)
    assert status == 0, warnings
    assert 'href="#Kind"' in page


@pytest.mark.parametrize("name", ["B", "C", "h", "N_s", "n_h", "K", "9", "*", "in", "out", "B*N_s"])
def test_shape_dimensions_are_ignored(name: str) -> None:
    conf = runpy.run_path(str(DOCS / "conf.py"))
    assert any(re.fullmatch(t, "py:class") and re.fullmatch(p, name) for t, p in conf["nitpick_ignore_regex"])


@pytest.mark.parametrize(
    "name", ["Tensor", "Foo", "Dataset", "torch.Tensor", "SuperpixelAssignment", "nn.Module", "sparse_ops"]
)
def test_names_are_not_ignored(name: str) -> None:
    conf = runpy.run_path(str(DOCS / "conf.py"))
    for role in ("py:class", "py:func", "py:mod", "py:data", "py:meth", "py:obj", "py:exc"):
        assert not any(
            re.fullmatch(t, role) and re.fullmatch(p, name) for t, p in conf["nitpick_ignore_regex"]
        )
