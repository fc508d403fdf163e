"""The front page lists every page its tables of contents promise, to the depth they ask for.

A toctree's entries sit one level below the section that holds the toctree directive: ``docs/api/index.rst``
had its list of API pages at the end of its "One argument convention" section, so they were at depth 3 of the
front page's "API reference" toctree (``:maxdepth: 2``), and the front page listed that section but none of
the five API pages. Each page listed by a front-page toctree must place its own toctrees so that their entries
fall within that ``:maxdepth``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def toctrees(text: str) -> list[tuple[int, int | None, list[str]]]:
    """``(section nesting, maxdepth, entries)`` of each toctree of a reST page (0: right under the title)."""
    lines = text.split("\n")
    styles: list[str] = []  # heading underline characters, in order of first use (the title's first)
    level = -1
    found = []
    for i, line in enumerate(lines):
        under = lines[i + 1] if i + 1 < len(lines) else ""
        heading = re.fullmatch(r"([=\-~^\"'`#*+])\1{2,}", under) and len(under) >= len(line.rstrip())
        if line.strip() and heading:
            if under[0] not in styles:
                styles.append(under[0])
            level = styles.index(under[0])
        if line.startswith(".. toctree::"):
            body = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and not nxt.startswith(" "):
                    break
                body.append(nxt.strip())
            depth = next((int(b.split()[1]) for b in body if b.startswith(":maxdepth:")), None)
            entries = [b for b in body if b and not b.startswith(":")]
            found.append((max(level, 0), depth, entries))
    return found


def test_toctrees_reads_nesting() -> None:
    text = "Title\n=====\n\n.. toctree::\n   :maxdepth: 2\n\n   a\n\n"
    text += "Section\n-------\n\n.. toctree::\n\n   b\n"
    assert toctrees(text) == [(0, 2, ["a"]), (1, None, ["b"])]


FRONT = [
    (maxdepth, entry)
    for _, maxdepth, entries in toctrees((DOCS / "index.rst").read_text(encoding="utf-8"))
    for entry in entries
    if maxdepth is not None and maxdepth >= 2 and "*" not in entry
]


@pytest.mark.parametrize(("maxdepth", "entry"), FRONT, ids=[entry for _, entry in FRONT])
def test_subpages_within_the_front_page_depth(maxdepth: int, entry: str) -> None:
    page = DOCS / f"{entry}.rst"
    for nesting, _, entries in toctrees(page.read_text(encoding="utf-8")):
        depth = 1 + nesting + 1  # the page, the sections around the toctree, then its entries
        assert depth <= maxdepth, (
            f"{entry}.rst: the toctree of {entries} sits {nesting} section(s) deep, so the front page "
            f"(maxdepth {maxdepth}) does not list them: move it above the first section"
        )
