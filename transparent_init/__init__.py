"""Transparent initialization: layer stacks that start as an exact affine map (identity by default).

See :doc:`/concepts/transparent_init` for the math.
"""

import importlib.metadata as _metadata

from ._checks import Activation
from .baselines import net2net_identity_init_, random_uniform_init_, xavier_init_
from .inplace import transparent_init_
from .metrics import init_rate, max_abs_error, recovery_rate
from .stack import TransparentConv1x1, TransparentLinear, build_transparent_stack
from .targets import selection_weight

try:
    __version__ = _metadata.version("transinit")
except _metadata.PackageNotFoundError:  # a source checkout never installed: the version it would install as
    from ._version import __version__

__all__ = [
    "Activation",
    "TransparentConv1x1",
    "TransparentLinear",
    "__version__",
    "build_transparent_stack",
    "init_rate",
    "max_abs_error",
    "net2net_identity_init_",
    "random_uniform_init_",
    "recovery_rate",
    "selection_weight",
    "transparent_init_",
    "xavier_init_",
]
