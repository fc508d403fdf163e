"""Sparse superpixel ops: logit uniformization, superpixel pooling/unpooling and friends.

See :doc:`/concepts/uniformization` for the math.
"""

from transparent_init._version import __version__

__all__ = ["__version__"]
