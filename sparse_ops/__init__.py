"""Sparse superpixel ops: logit uniformization, superpixel pooling/unpooling and friends.

See :doc:`/concepts/uniformization` for the math.
"""

from transparent_init._version import __version__

from . import grid as _grid, hard as _hard, losses as _losses, soft as _soft  # noqa: I001  (helper "soft")
from .grid import *  # noqa: F401,F403
from .soft import *  # noqa: F401,F403
from .hard import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403

__all__ = ["__version__"]
__all__ += _grid.__all__ + _soft.__all__ + _hard.__all__ + _losses.__all__  # helper "soft"
