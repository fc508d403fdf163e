"""Sparse superpixel ops: logit uniformization, superpixel pooling/unpooling and friends.

See :doc:`/concepts/uniformization` for the math.
"""

# soft association / SegNet / SPN (helper "soft")
from sparse_ops import grid as _grid
from sparse_ops import hard as _hard
from sparse_ops import losses as _losses
from sparse_ops import segnet as _segnet
from sparse_ops import soft as _soft
from sparse_ops import spn as _spn
from sparse_ops.assignment import SuperpixelAssignment
from sparse_ops.grid import *  # noqa: F403
from sparse_ops.hard import *  # noqa: F403
from sparse_ops.losses import *  # noqa: F403
from sparse_ops.pooling import SuperpixelPool, superpixel_pool, superpixel_unpool
from sparse_ops.relabel import relabel_contiguous
from sparse_ops.segnet import *  # noqa: F403
from sparse_ops.soft import *  # noqa: F403
from sparse_ops.spn import *  # noqa: F403
from sparse_ops.uniformize import SuperpixelUniformize, uniformize
from transparent_init._version import __version__

__all__ = [
    "SuperpixelAssignment",
    "SuperpixelPool",
    "SuperpixelUniformize",
    "__version__",
    "relabel_contiguous",
    "superpixel_pool",
    "superpixel_unpool",
    "uniformize",
]
__all__ += _grid.__all__ + _soft.__all__ + _hard.__all__ + _losses.__all__  # helper "soft"
__all__ += _segnet.__all__ + _spn.__all__  # helper "soft"
