"""The one place the ``transinit`` version is written: hatchling reads it at build time (``pyproject.toml``,
``[tool.hatch.version]``). At run time ``transparent_init.__version__`` comes from the installed metadata
(``importlib.metadata.version("transinit")``) and falls back to this value only in a checkout that was never
installed.
"""

__version__ = "0.1.0.dev0"
