"""Every Python code block of the README and the Sphinx pages runs, and its ``assert`` lines hold.

The docstrings' ``>>>`` examples run as doctests (``--doctest-modules``); the code blocks of the prose pages
(```` ```python ```` in Markdown, ``.. code-block:: python`` in reST) are the first thing a new user copies,
so they are executed here, each in a fresh namespace.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str, name: str) -> list[tuple[str, str]]:
    """``(where, code)`` of every Python code block in one Markdown or reST text."""
    out = []
    if name.endswith(".md"):
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
            out.append((f"{name}:{text.count(chr(10), 0, m.start()) + 2}", m.group(1)))
        return out
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip() not in (".. code-block:: python", ".. code-block:: python3"):
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for nxt in lines[i + 1 :]:  # the block: blank lines and lines indented deeper than the directive
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt)
        while body and not body[0].strip():  # options such as ":caption:" would come first: none are used
            body.pop(0)
        out.append((f"{name}:{i + 1}", textwrap.dedent("\n".join(body))))
    return out


def _blocks() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.rst"))]
    found = []
    for path in files:
        if "_build" not in path.parts:
            found += python_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return found


BLOCKS = _blocks()


@pytest.mark.parametrize(("where", "code"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_code_block_runs(where: str, code: str) -> None:
    torch.manual_seed(0)
    exec(compile(code, where, "exec"), {"__name__": "__doc_snippet__"})


def test_the_blocks_are_found() -> None:
    """The README's example and the concept pages' blocks (none found would make the test above vacuous)."""
    names = {w.split(":")[0] for w, _ in BLOCKS}
    assert "README.md" in names
    assert len(BLOCKS) >= 5


def test_a_failing_block_fails() -> None:
    """The extraction keeps the whole block, so an ``assert`` at its end is executed."""
    text = "Text::\n\n.. code-block:: python\n\n   x = 1\n\n   assert x == 2\n\nAfter.\n"
    ((where, code),) = python_blocks(text, "x.rst")
    assert where == "x.rst:3"
    with pytest.raises(AssertionError):
        test_code_block_runs(where, code)


def blocks_without_language(text: str, name: str) -> list[str]:
    """Where one Markdown or reST text shows code without naming its language: a ```` ``` ```` fence without
    one, a reST ``::`` literal block (highlighted as Python whatever it holds, so shell lines come out in
    Python's colours) or a ``.. code-block::`` without one."""
    lines = text.split("\n")
    out = []
    if name.endswith(".md"):
        fences = [i for i, line in enumerate(lines) if line.startswith("```")]
        return [f"{name}:{i + 1}" for i in fences[::2] if lines[i].strip() == "```"]  # opening fences only
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped in (".. code-block::", ".. code::", ".. sourcecode::"):
            out.append(f"{name}:{i + 1}")
        elif (
            stripped.endswith("::")
            and not stripped.startswith(".. ")
            and not "".join(lines[i + 1 : i + 2]).strip()
        ):
            out.append(f"{name}:{i + 1}")  # "text::" and a blank line: an expanded literal block follows
    return out


def test_every_code_block_names_its_language() -> None:
    """Each code block of the README and the Sphinx pages says what it holds (``bash``, ``python``, ``text``
    for a file tree or output), for the highlighting and for whoever reads it."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.rst"))]
    missing = [
        w
        for p in files
        for w in blocks_without_language(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    ]
    assert not missing, missing
    bad = "Run::\n\n    pip install x\n\n.. code-block::\n\n   y\n\n.. code-block:: bash\n\n   z\n"
    assert blocks_without_language(bad, "a.rst") == ["a.rst:1", "a.rst:5"]
    assert blocks_without_language("```\nx\n```\n```bash\ny\n```\n", "b.md") == ["b.md:1"]
