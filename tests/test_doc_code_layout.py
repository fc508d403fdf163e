"""The pipeline page's "Code layout" names every file of ``examples/voc_joint/``, and no file that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "examples" / "pipeline.rst"
PACKAGE = ROOT / "examples" / "voc_joint"


def _layout_section(text: str) -> str:
    start = text.index("Code layout\n~~~~")
    end = re.compile(r"^\S.*\n[-~=^]{4,}$", re.M).search(text, start + len("Code layout\n~~~~"))
    assert end is not None, "the Code layout section has no next heading"
    return text[start : end.start()]


def _named(section: str) -> set[str]:
    return set(re.findall(r"``([\w/]+(?:\.py|/))``", section))


def test_code_layout_names_every_file() -> None:
    named = _named(_layout_section(PAGE.read_text(encoding="utf-8")))
    files = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    folders = {f"{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert sorted((files | folders) - named) == [], "files of examples/voc_joint the page does not name"
    assert sorted(named - files - folders) == [], "the Code layout names files that do not exist"


def test_the_checks_see_a_missing_and_a_stale_name() -> None:
    section = _layout_section(
        "Code layout\n~~~~~~~~~~~\n\n* ``train.py`` the stages;\n* ``gone.py`` old;\n\nNext\n----\n``x.py``"
    )
    assert _named(section) == {"train.py", "gone.py"}  # stops at the next heading
