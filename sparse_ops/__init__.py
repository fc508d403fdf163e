"""Sparse superpixel ops: logit uniformization, superpixel pooling/unpooling and friends.

See :doc:`/concepts/uniformization` for the math.
"""

from transparent_init._version import __version__

from sparse_ops.assignment import SuperpixelAssignment
from sparse_ops.pooling import SuperpixelPool, superpixel_pool, superpixel_unpool
from sparse_ops.relabel import relabel_contiguous
from sparse_ops.uniformize import SuperpixelUniformize, uniformize

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
