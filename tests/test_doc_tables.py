"""Every table of the Sphinx pages has a header row: a screen reader announces each cell with its column's
header, and a reader skimming the page sees what the columns hold."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: A border line of a reST simple table: runs of ``=`` separated by spaces.
_BORDER = re.compile(r"^ *=+(?: +=+)+ *$")


def tables_without_header(text: str, name: str) -> list[str]:
    """Where one reST text has a table without a header row: a simple table with only its top and bottom
    borders (a header adds a third, under it), a ``csv-table`` without ``:header:`` or ``:header-rows:``, a
    ``list-table`` without ``:header-rows:``."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _BORDER.match(line):
            borders, j = 1, i + 1
            while j < len(lines):
                if _BORDER.match(lines[j]):
                    borders += 1
                    if (
                        j + 1 == len(lines) or not lines[j + 1].strip()
                    ):  # a border before a blank line: the end
                        break
                j += 1
            if borders < 3:
                out.append(f"{name}:{i + 1}")
            i = j + 1
            continue
        m = re.match(r"^( *)\.\. (csv-table|list-table)::", line)
        if m is not None:
            options = []
            for nxt in lines[i + 1 :]:
                if not nxt.strip().startswith(":"):
                    break
                options.append(nxt.strip())
            keys = {o.split(":")[1] for o in options}
            wanted = {"header-rows"} if m.group(2) == "list-table" else {"header", "header-rows"}
            if not keys & wanted:
                out.append(f"{name}:{i + 1}")
        i += 1
    return out


def test_the_check_itself() -> None:
    text = """
=====  =====
a      b
=====  =====

=====  =====
name   value
=====  =====
a      b
=====  =====

.. csv-table:: no header
   :widths: 1, 1

   a, b

.. csv-table:: a header
   :header: x, y

   a, b

.. list-table::
   :widths: 1 1

   * - a
     - b
"""
    assert tables_without_header(text, "t.rst") == ["t.rst:2", "t.rst:12", "t.rst:22"]


def test_every_table_of_the_docs_has_a_header_row() -> None:
    pages = sorted((ROOT / "docs").rglob("*.rst"))
    missing = [
        w
        for p in pages
        for w in tables_without_header(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    ]
    assert not missing, "tables without a header row: " + ", ".join(missing)
