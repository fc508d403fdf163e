"""No inline literal inside bold text on the Sphinx pages.

reST does not nest inline markup: in ``**fusion chunks from ``split``**`` the literal is not one, and readers
of the benchmarks page saw the backticks. Close the bold before the literal, or write the name without them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.rst") if "_build" not in p.parts)


def nested_literals(text: str) -> list[str]:
    """The bold spans (``**...**``) of a reST text that hold an inline literal (````...````)."""
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        literals = [m.span() for m in re.finditer(r"``.+?``", paragraph, re.S)]
        stars = [
            m.start()
            for m in re.finditer(r"\*\*", paragraph)
            if not any(a <= m.start() < b for a, b in literals)
        ]
        for start, end in zip(stars[::2], stars[1::2], strict=False):
            if any(start < a < end for a, _ in literals):
                found.append(paragraph[start : end + 2])
    return found


def test_nested_literals_finds_only_nesting() -> None:
    assert nested_literals("**fusion chunks from ``split``, A/B runs**") == [
        "**fusion chunks from ``split``, A/B runs**"
    ]
    assert nested_literals("**Recomputation** (``--recompute``, **on by default**) and ``2**e``") == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(DOCS)) for p in PAGES])
def test_no_literal_inside_bold(page: Path) -> None:
    assert nested_literals(page.read_text(encoding="utf-8")) == []
