"""Sphinx configuration for transinit (built with ``-W``: warnings are errors)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from transparent_init import __version__

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
# PyTorch's "Shape:" section, a list of "- name: shape" bullets: a heading and the list as written (read as
# parameters, the bullets became fields named "- input", "- output").
napoleon_custom_sections = ["Shape"]

# The build machines have no internet: read the small offline inventories in _intersphinx/ first (regenerate
# them with _intersphinx/make_inventories.py), and the projects' online objects.inv only if those are missing.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", ("_intersphinx/python.inv", None)),
    "torch": ("https://docs.pytorch.org/docs/stable", ("_intersphinx/torch.inv", None)),
    "numpy": ("https://numpy.org/doc/stable", ("_intersphinx/numpy.inv", None)),
    "torchvision": ("https://docs.pytorch.org/vision/stable", ("_intersphinx/torchvision.inv", None)),
    "pillow": ("https://pillow.readthedocs.io/en/stable", ("_intersphinx/pillow.inv", None)),
}
intersphinx_timeout = 5

nitpicky = False
templates_path = []
exclude_patterns = ["_build", "_intersphinx"]
html_theme = "furo"
html_static_path = ["_static"]
html_title = f"transinit {version}"
