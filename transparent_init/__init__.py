"""Transparent initialization: layer stacks that start as an exact affine map (identity by default).

See :doc:`/concepts/transparent_init` for the math.
"""

from ._version import __version__
from .baselines import net2net_identity_init_, random_uniform_init_, xavier_init_
from .inplace import transparent_init_
from .metrics import init_rate, max_abs_error, recovery_rate
from .stack import TransparentConv1x1, TransparentLinear, build_transparent_stack

__all__ = [
    "__version__",
    "TransparentLinear",
    "TransparentConv1x1",
    "build_transparent_stack",
    "transparent_init_",
    "random_uniform_init_",
    "xavier_init_",
    "net2net_identity_init_",
    "init_rate",
    "recovery_rate",
    "max_abs_error",
]
