"""The offline intersphinx inventories of the docs (``docs/_intersphinx/*.inv``) give working addresses.

The docs build has no internet, so every link to Python, PyTorch, NumPy, torchvision or Pillow comes from
these small files, written by ``docs/_intersphinx/make_inventories.py``. Each committed file must be what the
script writes now (a name added to the script but not regenerated is a missing link), each must be read by
``conf.py``, and each address must be complete as Sphinx reads it: Sphinx expands only a final ``$`` of an
inventory's address to the object's name, so an address such as ``generated/$.html#$`` used to reach readers
as ``.../generated/$.html#torch.Generator``, a dead link.
"""

from __future__ import annotations

import importlib.util
import posixpath
import re
import zlib
from pathlib import Path
from types import ModuleType

import pytest

inventory = pytest.importorskip("sphinx.util.inventory", reason="the docs extra (sphinx) is not installed")

DOCS = Path(__file__).resolve().parents[1] / "docs"
INVENTORIES = DOCS / "_intersphinx"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_inventories", INVENTORIES / "make_inventories.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = _load_script()
KEYS = sorted(SCRIPT.ENTRIES)


def _read(path: Path) -> dict[tuple[str, str], str]:
    """``{(role, name): address}`` of one inventory, as Sphinx's intersphinx reads it."""
    with path.open("rb") as stream:
        data = inventory.InventoryFile.load(stream, "https://example.org/base", posixpath.join)
    return {  # Sphinx 7.2 reads (project, version, address, title) tuples, Sphinx 9 items with an ``uri``
        (role, name): item.uri if hasattr(item, "uri") else item[2]
        for role, items in data.items()
        for name, item in items.items()
    }


def test_expand_uri_keeps_only_the_final_dollar() -> None:
    assert SCRIPT.expand_uri("torch.nn.Module", "generated/$.html#$") == "generated/torch.nn.Module.html#$"
    assert SCRIPT.expand_uri("multiprocessing", "library/multiprocessing.html#module-$") == (
        "library/multiprocessing.html#module-$"
    )
    assert SCRIPT.expand_uri("x", "page.html#anchor") == "page.html#anchor"


@pytest.mark.parametrize("key", KEYS)
def test_inventory_is_what_the_script_writes(key: str) -> None:
    project, entries = SCRIPT.ENTRIES[key]
    committed = (INVENTORIES / f"{key}.inv").read_bytes()
    *header, body = committed.split(b"\n", 4)  # four header lines, then the zlib-compressed entries
    assert header[1] == f"# Project: {project}".encode(), f"{key}.inv: regenerate it with make_inventories.py"
    expected = "".join(f"{name} {role} 1 {SCRIPT.expand_uri(name, uri)} -\n" for name, role, uri in entries)
    assert zlib.decompress(body).decode() == expected, f"{key}.inv: regenerate it with make_inventories.py"


@pytest.mark.parametrize("key", KEYS)
def test_every_address_is_complete(key: str) -> None:
    read = _read(INVENTORIES / f"{key}.inv")
    for (role, name), address in read.items():
        assert "$" not in address, f"{key}.inv: {role} {name} links to {address}"
        page, _, anchor = address.partition("#")
        assert page.startswith("https://example.org/base/") and page.endswith(".html"), (role, name, address)
        assert re.fullmatch(r"[\w.-]+", anchor), (role, name, address)
    assert sorted(name for _, name in read) == sorted(name for name, _, _ in SCRIPT.ENTRIES[key][1])


def test_conf_reads_every_inventory() -> None:
    conf = (DOCS / "conf.py").read_text(encoding="utf-8")
    for key in KEYS:
        assert f'("_intersphinx/{key}.inv", None)' in conf, f"conf.py does not read _intersphinx/{key}.inv"
    assert sorted(p.stem for p in INVENTORIES.glob("*.inv")) == KEYS
