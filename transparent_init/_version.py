"""The one place the ``transinit`` version is written: hatchling reads it at build time (``pyproject.toml``,
``[tool.hatch.version]``). At run time ``transparent_init.__version__`` and ``sparse_ops.__version__`` come
from the installed metadata (``importlib.metadata.version("transinit")``) and fall back to this value only in
a checkout that was never installed (``sparse_ops`` reads this file as text, as hatchling does).
"""

__version__ = "0.1.0.dev0"
