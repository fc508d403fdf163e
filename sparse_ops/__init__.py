"""Superpixel ops: logit uniformization, superpixel pooling/unpooling, soft association, SegNet and SPN parts.

Every op follows one argument convention, ``op(data, superpixels, num_superpixels=None, *, mask=None,
<options>, validate=True)``, its data argument named for what it is (``logits``, ``features``; see
:doc:`/api/index`). See :doc:`/concepts/uniformization` for the math.
"""

import importlib.metadata as _metadata
import re as _re
from pathlib import Path as _Path

from sparse_ops.assignment import AUTO_BACKEND, Backend, Reduce, SuperpixelAssignment
from sparse_ops.grid import (
    NEIGHBOUR_OFFSETS,
    NeighbourCells,
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
from sparse_ops.relabel import SuperpixelIds, relabel_contiguous
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
from sparse_ops.spn import SuperpixelCam, SuperpixelClassifier, superpixel_cam, superpixel_global_average
from sparse_ops.uniformize import SuperpixelUniformize, uniformize


def _source_version() -> str:
    """The version a source checkout never installed would install as: the one written in
    ``transparent_init/_version.py`` (the one place hatchling reads it), read as text so that
    ``import sparse_ops`` does not import ``transparent_init``; ``"0+unknown"`` without that file."""
    path = _Path(__file__).resolve().parent.parent / "transparent_init" / "_version.py"
    found = _re.search(r'^__version__ = "([^"]+)"$', path.read_text(), _re.M) if path.is_file() else None
    return found.group(1) if found else "0+unknown"


try:
    __version__ = _metadata.version("transinit")
except _metadata.PackageNotFoundError:  # a source checkout never installed: the version it would install as
    __version__ = _source_version()

__all__ = [
    "AUTO_BACKEND",
    "NEIGHBOUR_OFFSETS",
    "Backend",
    "MaxPoolWithIndices",
    "MaxUnpool",
    "NeighbourCells",
    "PooledWithIndices",
    "Reduce",
    "SoftUniformize",
    "SpixelLoss",
    "SpixelLossOutput",
    "SuperpixelAssignment",
    "SuperpixelCam",
    "SuperpixelClassifier",
    "SuperpixelIds",
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
