"""Sphinx configuration for transinit (built with ``-W``: warnings are errors)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from transparent_init import __version__  # noqa: E402

project = "transinit"
author = "transinit developers"
copyright = "2026, transinit developers"
release = __version__
version = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

autosummary_generate = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_custom_sections = [("Shape", "params_style")]

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "torch": ("https://docs.pytorch.org/docs/stable", None),
    "numpy": ("https://numpy.org/doc/stable", None),
}
# No network at build time: intersphinx inventories that cannot be fetched must not fail a -W build.
intersphinx_timeout = 2
suppress_warnings = ["intersphinx.external"]
intersphinx_disabled_reftypes = ["*"]

nitpicky = False
templates_path = []
exclude_patterns = ["_build"]
html_theme = "furo"
html_static_path = ["_static"]
html_title = f"transinit {version}"
