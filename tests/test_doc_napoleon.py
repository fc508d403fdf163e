"""Napoleon reads the docstrings that the docs render the way they were meant.

Three Google-style forms read as something else once rendered, with no warning: an attribute comment (``#:``)
whose first line holds a colon becomes ``Type: <the words before it>`` followed by the rest (the API page
showed ``DEFAULT_MAX_PIXELS`` with the type "Default largest image (and mask) in pixels"); two exceptions run
together on one ``Raises:`` line become one entry, the second one's words turned into exception names; and a
``Shape:`` section, a PyTorch-style list of ``- name: shape`` bullets, read as parameters, had entries named
"- input" and "- output" (it must stay a list under a ``Shape`` heading). The docstrings are parsed here with
``sphinx.ext.napoleon`` and the docs' own napoleon settings.
"""

from __future__ import annotations

import ast
import re
import runpy
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("sphinx.ext.napoleon", reason="the docs extra (sphinx) is not installed")
from sphinx.ext.napoleon import Config
from sphinx.ext.napoleon.docstring import GoogleDocstring

ROOT = Path(__file__).resolve().parents[1]
CONF = runpy.run_path(str(ROOT / "docs" / "conf.py"))
CONFIG = Config(**{key: value for key, value in CONF.items() if key.startswith("napoleon_")})


def _rendered_files() -> list[Path]:
    """The two packages' public modules, and the example modules that a docs page documents with autodoc."""
    files = [
        path
        for package in ("sparse_ops", "transparent_init")
        for path in (ROOT / package).rglob("*.py")
        if not path.name.startswith("_") or path.name == "__init__.py"
    ]
    for page in sorted((ROOT / "docs").rglob("*.rst")):
        for name in re.findall(r"^\.\. auto\w+:: (examples\.[\w.]+)", page.read_text(encoding="utf-8"), re.M):
            parts = name.split(".")
            while parts:  # the longest prefix of the name that is a module
                path = ROOT.joinpath(*parts)
                found = next(
                    (p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()), None
                )
                if found is not None:
                    files.append(found)
                    break
                parts.pop()
    return sorted(set(files))


FILES = _rendered_files()
IDS = [str(p.relative_to(ROOT)) for p in FILES]


def _attribute_comments(text: str) -> list[tuple[int, list[str]]]:
    """``(line, lines)`` of each ``#:`` comment block (autodoc's attribute documentation) of a public name."""
    blocks: list[tuple[int, list[str]]] = []
    previous = False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#:"):
            text_line = stripped[2:].removeprefix(" ")
            if previous:
                blocks[-1][1].append(text_line)
            else:
                blocks.append((number, [text_line]))
        elif previous and re.match(r"(self\.)?_\w*\s*[:=]", stripped):  # a private name: autodoc skips it
            blocks.pop()
        previous = stripped.startswith("#:")
    return blocks


def test_the_files_include_the_examples_pages() -> None:
    assert ROOT / "examples" / "voc_joint" / "data.py" in FILES
    assert ROOT / "examples" / "voc_joint" / "checkpoint.py" in FILES


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_attribute_comment_is_not_read_as_a_type(path: Path) -> None:
    for number, lines in _attribute_comments(path.read_text(encoding="utf-8")):
        rendered = GoogleDocstring(lines, CONFIG, what="attribute", name="X").lines()
        typed = [line for line in rendered if line.startswith(":type:")]
        assert not typed, f"{path.name}:{number}: napoleon reads {typed[0]!r} from {lines[0]!r}"


def _docstrings_with(path: Path, section: str) -> Iterator[tuple[str, str]]:
    """``(name, docstring)`` of every function and class of ``path`` whose docstring holds ``section``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            doc = ast.get_docstring(node)
            if doc and section in doc:
                yield node.name, doc


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_raises_entries_name_one_exception(path: Path) -> None:
    for name, doc in _docstrings_with(path, "Raises:"):
        rendered = GoogleDocstring(doc, CONFIG, what="function", name=name).lines()
        for line in rendered:
            found = re.match(r":raises (.*?):", line)
            assert found is None or re.fullmatch(r"[A-Za-z_][\w.]*", found.group(1)), (
                f"{path.name}: {name}: napoleon reads the exception {found.group(1)!r}"
            )


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_shape_section_is_a_list_under_a_heading(path: Path) -> None:
    for name, doc in _docstrings_with(path, "\nShape:"):
        rendered = GoogleDocstring(doc, CONFIG, what="class", name=name).lines()
        assert ".. rubric:: Shape" in rendered, f"{path.name}: {name}: no Shape heading"
        items = [line for line in rendered if line.startswith("- ")]
        assert items, f"{path.name}: {name}: the Shape bullets are gone"
        named = [line for line in rendered if re.match(r":\w+ -", line)]
        assert not named, f"{path.name}: {name}: napoleon names a field {named[0]!r}"
