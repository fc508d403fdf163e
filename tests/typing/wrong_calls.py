"""Wrong calls of the public API that ``mypy --strict`` must reject (checked by tests/test_typing_user.py).

Every line that ends in ``# error: <code>`` must get a mypy error with that code, and no other line an error.
The function is never run: each call would raise.
"""

from __future__ import annotations

from torch import Tensor

from sparse_ops import (
    MaxPoolWithIndices,
    MaxUnpool,
    Reduce,
    SoftUniformize,
    SuperpixelPool,
    grid_shape,
    spixel_loss,
    superpixel_pool,
)
from transparent_init import Activation, TransparentConv1x1, TransparentLinear

__all__ = ["wrong_calls"]


def my_pool(x: Tensor, sp: Tensor, reduce: Reduce) -> Tensor:
    return superpixel_pool(x, sp, reduce=reduce)


def wrong_calls(x: Tensor, sp: Tensor) -> None:
    my_pool(x, sp, "avg")  # error: arg-type
    relu: Activation = "gelu"  # error: assignment
    del relu
    grid_shape(8.0, 8, 4)  # error: arg-type
    TransparentLinear(3, {4, 6})  # error: arg-type
    TransparentLinear(3, "46")  # error: arg-type
    SuperpixelPool()(x)  # error: call-arg
    SoftUniformize(4)(x, sp, mask=3)  # error: arg-type
    assert MaxPoolWithIndices(2)(x).output_size  # error: attr-defined
    TransparentConv1x1(3, [4])(x, sp)  # error: call-arg
    spixel_loss(x, sp, 4, pos_weight="0.003")  # error: arg-type
    TransparentLinear(3, [4], activation="leaky_relu", negative_slope=1j)  # error: arg-type
    pooled = MaxPoolWithIndices(2)(x)
    MaxUnpool()(x)  # error: call-overload
    MaxUnpool()(pooled.values, pooled.indices)  # error: call-overload
    MaxUnpool()(pooled, pooled.indices)  # error: call-overload
