"""Superpixel ops: logit uniformization, superpixel pooling/unpooling, soft association, SegNet and SPN parts.

Every op follows one argument convention, ``op(x, superpixels, num_superpixels=None, *, mask=None, <options>,
validate=True)`` (see :doc:`/api/index`). See :doc:`/concepts/uniformization` for the math.
"""

import importlib.metadata as _metadata

from sparse_ops.assignment import AUTO_BACKEND, Backend, Reduce, SuperpixelAssignment
from sparse_ops.grid import (
    NEIGHBOUR_OFFSETS,
    grid_cell_ids,
    grid_shape,
    neighbour_cell_ids,
    neighbour_validity,
    num_grid_cells,
    pixel_xy,
)
from sparse_ops.hard import enforce_connectivity, hard_superpixels
from sparse_ops.losses import SpixelLoss, SpixelLossOutput, spixel_loss
from sparse_ops.pooling import SuperpixelPool, Upsample, superpixel_pool, superpixel_unpool
from sparse_ops.relabel import relabel_contiguous
from sparse_ops.segnet import (
    MaxPoolWithIndices,
    MaxUnpool,
    PooledWithIndices,
    max_pool2d_with_indices,
    max_unpool2d,
)
from sparse_ops.soft import (
    SoftUniformize,
    normalize_assoc,
    soft_superpixel_pool,
    soft_superpixel_unpool,
    soft_uniformize,
)
from sparse_ops.spn import SuperpixelClassifier, superpixel_cam, superpixel_global_average
from sparse_ops.uniformize import SuperpixelUniformize, uniformize

try:
    __version__ = _metadata.version("transinit")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AUTO_BACKEND",
    "NEIGHBOUR_OFFSETS",
    "Backend",
    "MaxPoolWithIndices",
    "MaxUnpool",
    "PooledWithIndices",
    "Reduce",
    "SoftUniformize",
    "SpixelLoss",
    "SpixelLossOutput",
    "SuperpixelAssignment",
    "SuperpixelClassifier",
    "SuperpixelPool",
    "SuperpixelUniformize",
    "Upsample",
    "__version__",
    "enforce_connectivity",
    "grid_cell_ids",
    "grid_shape",
    "hard_superpixels",
    "max_pool2d_with_indices",
    "max_unpool2d",
    "neighbour_cell_ids",
    "neighbour_validity",
    "normalize_assoc",
    "num_grid_cells",
    "pixel_xy",
    "relabel_contiguous",
    "soft_superpixel_pool",
    "soft_superpixel_unpool",
    "soft_uniformize",
    "spixel_loss",
    "superpixel_cam",
    "superpixel_global_average",
    "superpixel_pool",
    "superpixel_unpool",
    "uniformize",
]
