"""Sparse superpixel ops: logit uniformization, superpixel pooling/unpooling and friends.

See :doc:`/concepts/uniformization` for the math.
"""

from transparent_init._version import __version__

from sparse_ops.assignment import SuperpixelAssignment
from sparse_ops.pooling import SuperpixelPool, superpixel_pool, superpixel_unpool
from sparse_ops.relabel import relabel_contiguous
from sparse_ops.uniformize import SuperpixelUniformize, uniformize

# soft association / SegNet / SPN (helper "soft")
from sparse_ops import grid as _grid, hard as _hard, losses as _losses  # noqa: I001
from sparse_ops import segnet as _segnet, soft as _soft, spn as _spn
from sparse_ops.grid import *  # noqa: F401,F403
from sparse_ops.soft import *  # noqa: F401,F403
from sparse_ops.hard import *  # noqa: F401,F403
from sparse_ops.losses import *  # noqa: F401,F403
from sparse_ops.segnet import *  # noqa: F401,F403
from sparse_ops.spn import *  # noqa: F401,F403

__all__ = [
    "__version__",
    "SuperpixelAssignment",
    "SuperpixelPool",
    "superpixel_pool",
    "superpixel_unpool",
    "relabel_contiguous",
    "SuperpixelUniformize",
    "uniformize",
]
__all__ += _grid.__all__ + _soft.__all__ + _hard.__all__ + _losses.__all__  # helper "soft"
__all__ += _segnet.__all__ + _spn.__all__  # helper "soft"
