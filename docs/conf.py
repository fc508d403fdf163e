"""Sphinx configuration for transinit (built with ``-W``: warnings are errors)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

sys.path.insert(0, os.path.abspath(".."))

from transparent_init import __version__

if TYPE_CHECKING:
    from docutils.nodes import Element
    from sphinx.addnodes import pending_xref
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

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
    "sphinx-mathjax-offline",  # MathJax from the docs' own _static/: the math renders without internet
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

# Every cross-reference must resolve (with -W an unresolved one fails the build), except the parts of the
# shape pseudo-types of our docstrings: in ``x (Tensor[B, C, H, W])`` or ``Tensor[B, 9, H, W]`` the Python
# domain makes a class reference of each dimension, which names no object. Only such dimensions are listed:
# one or two letters with an optional subscript, a number, ``*``, ``in``/``out``, and the products
# ``B*N_s``/``B*N_p``.
nitpicky = True
nitpick_ignore_regex = [("py:class", r"[A-Za-z]{1,2}(_[a-z]+)?|[0-9]+|\*|in|out|B\*N_[a-z]")]

# Names that our docstrings and autodoc's type hints spell otherwise than the documented name of the object:
# ``Tensor``, ``nn.Module``, ``Path`` or ``Sequence`` as our modules import them (``LongTensor[B, H, W]`` and
# the like are tensors of that dtype: they link to ``torch.Tensor``), and the defining module that autodoc
# writes for a re-exported class. The reference is renamed before intersphinx looks it up; its text stays as
# written.
XREF_ALIASES = {
    # as our modules import them
    "Tensor": "torch.Tensor",
    "LongTensor": "torch.Tensor",
    "IntTensor": "torch.Tensor",
    "BoolTensor": "torch.Tensor",
    "nn.Module": "torch.nn.Module",
    "nn.Sequential": "torch.nn.Sequential",
    "Dataset": "torch.utils.data.Dataset",
    "ndarray": "numpy.ndarray",
    "Path": "pathlib.Path",
    "Any": "typing.Any",
    "SupportsIndex": "typing.SupportsIndex",
    "SupportsFloat": "typing.SupportsFloat",
    "Sequence": "collections.abc.Sequence",
    "Callable": "collections.abc.Callable",
    "Iterable": "collections.abc.Iterable",
    # the defining module that autodoc writes for a re-exported class
    "torch.nn.modules.module.Module": "torch.nn.Module",
    "torch.nn.modules.container.Sequential": "torch.nn.Sequential",
    "torch._C.Generator": "torch.Generator",
    "torch.utils.data.dataset.Dataset": "torch.utils.data.Dataset",
    "torch.utils.data.sampler.Sampler": "torch.utils.data.Sampler",
    "torchvision.transforms.v2._container.Compose": "torchvision.transforms.v2.Compose",
}

templates_path = []
exclude_patterns = ["_build", "_intersphinx"]
html_theme = "furo"
html_static_path = ["_static"]
html_title = f"transinit {version}"


def _rename_alias(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element) -> None:
    """``missing-reference`` handler: rename a Python reference listed in ``XREF_ALIASES`` (resolves none)."""
    if node.get("refdomain") == "py" and node.get("reftarget") in XREF_ALIASES:
        node["reftarget"] = XREF_ALIASES[node["reftarget"]]


def _type_alias(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element) -> Element | None:
    """``missing-reference`` handler: a docstring type naming one of our type aliases (``Activation``,
    documented as data) falls back to data, then attributes, as Sphinx 9 does itself (7.2 looks for classes
    only)."""
    if node.get("refdomain") != "py" or node.get("reftype") != "class":
        return None
    domain = env.get_domain("py")
    for role in ("data", "attr"):
        found = domain.resolve_xref(env, node["refdoc"], app.builder, role, node["reftarget"], node, contnode)
        if found is not None:
            return found
    return None


def setup(app: Sphinx) -> None:
    """Run both handlers before intersphinx (priority 500) resolves the reference."""
    app.connect("missing-reference", _rename_alias, priority=400)
    app.connect("missing-reference", _type_alias, priority=450)
