"""Single source of the ``transinit`` version (read by hatchling and by both packages)."""

__version__ = "0.1.0.dev0"
