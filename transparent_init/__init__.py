"""Transparent initialization: layer stacks that start as an exact affine map (identity by default).

See :doc:`/concepts/transparent_init` for the math.
"""

from ._version import __version__

__all__ = ["__version__"]
