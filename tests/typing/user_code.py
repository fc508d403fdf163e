"""Calls of the public API as a strictly typed user writes them (checked by ``tests/test_typing_user.py``).

``mypy --strict`` must accept every line, and ``assert_type`` states what the user gets back. The test also
runs :func:`user_code`, so every call here is one the runtime accepts too.
"""

from __future__ import annotations

import torch
from torch import Tensor
from typing_extensions import assert_type

import sparse_ops
import transparent_init
from sparse_ops import Backend, Reduce, Upsample, superpixel_pool
from transparent_init import Activation, TransparentLinear

__all__ = ["user_code"]


def my_pool(
    x: Tensor, sp: Tensor, reduce: Reduce = "mean", backend: Backend = "auto", up: Upsample | None = None
) -> Tensor:
    """A user's wrapper that passes the options on, annotated with the exported ``Literal`` types."""
    return superpixel_pool(x, sp, reduce=reduce, backend=backend, upsample=up)


def my_stack(activation: Activation | None) -> TransparentLinear:
    return TransparentLinear(3, [4], activation=activation)


def user_code() -> None:
    x = torch.randn(2, 3, 8, 8)
    sp = torch.randint(0, 4, (2, 8, 8))

    # the option types, exported for wrappers
    assert_type(my_pool(x, sp, "max", "sparse", "bilinear"), Tensor)
    assert_type(my_stack("leaky_relu"), TransparentLinear)
    assert_type(sparse_ops.__version__, str)
    assert_type(transparent_init.__version__, str)
