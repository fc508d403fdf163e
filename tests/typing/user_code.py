"""Calls of the public API as a strictly typed user writes them (checked by ``tests/test_typing_user.py``).

``mypy --strict`` must accept every line, and ``assert_type`` states what the user gets back. The test also
runs :func:`user_code`, so every call here is one the runtime accepts too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from typing_extensions import assert_type

import sparse_ops
import transparent_init
from sparse_ops import (
    Backend,
    MaxPoolWithIndices,
    MaxUnpool,
    NeighbourCells,
    PooledWithIndices,
    Reduce,
    SoftUniformize,
    SpixelLoss,
    SpixelLossOutput,
    SuperpixelAssignment,
    SuperpixelCam,
    SuperpixelClassifier,
    SuperpixelIds,
    SuperpixelPool,
    SuperpixelUniformize,
    Upsample,
    enforce_connectivity,
    grid_cell_ids,
    grid_shape,
    hard_superpixels,
    max_pool2d_with_indices,
    max_unpool2d,
    neighbour_cell_ids,
    neighbour_validity,
    normalize_assoc,
    num_grid_cells,
    pixel_xy,
    relabel_contiguous,
    soft_superpixel_pool,
    soft_superpixel_unpool,
    soft_uniformize,
    spixel_loss,
    superpixel_cam,
    superpixel_global_average,
    superpixel_pool,
    uniformize,
)
from transparent_init import (
    Activation,
    TransparentConv1x1,
    TransparentLinear,
    build_transparent_stack,
    init_rate,
    random_uniform_init_,
    recovery_rate,
    selection_weight,
    transparent_init_,
    xavier_init_,
)

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

    # integers: Python ints, numpy integers and 0-d integer tensors alike (what operator.index accepts)
    n, n32, zero_d = np.int64(4), np.int32(4), torch.tensor(4)
    q = torch.rand(2, 9, 8, 8).softmax(1)
    assert_type(uniformize(x, sp, n), Tensor)
    assert_type(superpixel_pool(x, sp, zero_d), Tensor)
    assert_type(superpixel_global_average(x, sp, n32), Tensor)
    assert_type(superpixel_cam(x, sp, n, weight=torch.randn(5, 3)), Tensor)
    assert_type(SuperpixelAssignment(sp, n).counts, Tensor)
    assert_type(soft_uniformize(x, q, n), Tensor)
    assert_type(soft_superpixel_pool(x, q, zero_d), Tensor)
    assert_type(soft_superpixel_unpool(torch.randn(2, 3, 2, 2), q, n), Tensor)
    assert_type(normalize_assoc(q, n32), Tensor)
    assert_type(hard_superpixels(q, n, connectivity=True, min_size=n), Tensor)
    assert_type(enforce_connectivity(sp, min_size=n), SuperpixelIds)
    relabelled = relabel_contiguous(sp)
    assert_type(relabelled, SuperpixelIds)
    assert_type(uniformize(x, *relabelled), Tensor)  # ids and their bound, as every op takes them
    assert_type(superpixel_pool(x, relabelled.ids, relabelled.num_superpixels), Tensor)
    assert_type(spixel_loss(q, sp, n, ignore_index=n, num_classes=n), SpixelLossOutput)
    assert_type(grid_cell_ids(np.int64(8), np.int64(8), n, batch_size=n), Tensor)
    assert_type(grid_shape(8, 8, zero_d), tuple[int, int])
    assert_type(num_grid_cells(8, 8, n), int)
    assert_type(neighbour_cell_ids(8, 8, n), NeighbourCells)
    assert_type(neighbour_cell_ids(8, 8, n).valid, Tensor)
    assert_type(neighbour_validity(8, 8, n), Tensor)
    assert_type(pixel_xy(8, 8, batch_size=n), Tensor)
    pooled = max_pool2d_with_indices(x, np.int64(2), (n32, 2), np.int64(0), dilation=zero_d // 4)
    assert_type(pooled, PooledWithIndices)
    assert_type(max_unpool2d(pooled.values, pooled.indices, (n * 2, n32 * 2)), Tensor)
    assert_type(max_unpool2d(pooled.values, pooled.indices, x.shape[-2:]), Tensor)
    # any sequence of ints, as the code and torch's F.max_unpool2d take it: a list, a whole shape
    assert_type(max_unpool2d(pooled.values, pooled.indices, [8, 8]), Tensor)
    assert_type(max_unpool2d(pooled.values, pooled.indices, (2, 3, 8, 8)), Tensor)
    assert_type(max_pool2d_with_indices(x, [2, 2], [2, n32], [0, 0], dilation=[1, 1]).values, Tensor)
    assert_type(TransparentLinear(n, [n, n32], n, generator=n).hidden_features, tuple[int, ...])
    assert_type(TransparentConv1x1(3, np.array([4, 6]), generator=zero_d).out_channels, int)
    assert_type(TransparentLinear(3, torch.tensor([4]), 3).in_features, int)
    assert_type(build_transparent_stack(3, range(4, 6), 3, "relu", conv=True, generator=n), nn.Sequential)
    stack = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
    assert_type(transparent_init_(stack, generator=n32), nn.Sequential)
    assert_type(xavier_init_(stack, generator=n), nn.Module)
    assert_type(random_uniform_init_(stack, generator=zero_d), nn.Module)
    assert_type(selection_weight(n, [n - 1, 2, zero_d - 4]), Tensor)
    assert_type(selection_weight(4, np.array([0, 2])), Tensor)
    assert_type(selection_weight(4, slice(0, 2)), Tensor)

    # modules called as module(x, ...): forward's parameters and return type
    mask = torch.ones(2, 8, 8, dtype=torch.bool)
    assert_type(SuperpixelUniformize(backend="scatter")(x, sp, n, mask=mask), Tensor)
    assert_type(SuperpixelPool("max", upsample="nearest")(x, sp, 4), Tensor)
    assert_type(SoftUniformize(n)(x, q, mask=mask), Tensor)
    loss = SpixelLoss(4, num_classes=n)(q, sp)
    assert_type(loss, SpixelLossOutput)
    assert_type(loss.total, Tensor)
    pooled = MaxPoolWithIndices(2)(x)
    assert_type(pooled, PooledWithIndices)
    assert_type(MaxUnpool()(pooled), Tensor)
    assert_type(MaxUnpool()(pooled.values, pooled.indices, x.shape[-2:]), Tensor)
    assert_type(MaxUnpool()(pooled.values * 2, pooled), Tensor)
    assert_type(MaxUnpool()(pooled.values, pooled.indices, (8, n * 2)), Tensor)
    assert_type(MaxUnpool()(pooled.values, pooled.indices, [8, 8]), Tensor)
    assert_type(MaxPoolWithIndices([2, 2], stride=[2, 2])(x).values, Tensor)
    classifier = SuperpixelClassifier(3, 5)
    assert_type(classifier(x, sp, zero_d), Tensor)
    assert_type(classifier.cam(x, sp, 4), Tensor)
    assert_type(TransparentLinear(3, [4])(torch.randn(2, 3)), Tensor)
    assert_type(TransparentConv1x1(3, [4])(x), Tensor)

    # flags that change the return type: a literal picks the overload, a bool variable gets the union
    assert_type(hard_superpixels(q, 4, return_counts=True), SuperpixelIds)
    assert_type(hard_superpixels(q, 4, return_counts=True).num_superpixels, Tensor)
    scored = superpixel_cam(x, sp, weight=torch.randn(5, 3), return_superpixel_scores=True)
    assert_type(scored, SuperpixelCam)
    assert_type(scored.superpixel_scores, Tensor)
    flag = bool(torch.rand(()) < 0.5)
    assert_type(hard_superpixels(q, 4, return_counts=flag), Tensor | SuperpixelIds)
    cam = superpixel_cam(x, sp, weight=torch.randn(5, 3), return_superpixel_scores=flag)
    assert_type(cam, Tensor | SuperpixelCam)
    assert_type(classifier.cam(x, sp, 4, return_superpixel_scores=True), SuperpixelCam)
    assert_type(classifier.cam(x, sp, return_superpixel_scores=flag), Tensor | SuperpixelCam)

    # reals: Python floats and ints, numpy floats and 0-d tensors alike
    f32, real_0d = np.float32(0.01), torch.tensor(0.01)
    assert_type(spixel_loss(q, sp, 4, pos_weight=f32, eps=real_0d), SpixelLossOutput)
    assert_type(SpixelLoss(4, pos_weight=real_0d, eps=np.float16(1e-3))(q, sp), SpixelLossOutput)
    leaky = TransparentLinear(3, [4], activation="leaky_relu", negative_slope=f32)
    # a stack's own attributes rebuild it (its activation is the Literal the constructor takes)
    TransparentLinear(leaky.in_features, leaky.hidden_features, leaky.out_features, leaky.activation)
    assert_type(TransparentConv1x1(3, [4], 3, "leaky_relu", real_0d).hidden_channels, tuple[int, ...])
    assert_type(build_transparent_stack(3, [4], activation="leaky_relu", negative_slope=0), nn.Sequential)
    assert_type(init_rate(leaky, f32), float)
    assert_type(recovery_rate(leaky, torch.randn(4, 3), real_0d), float)
    assert_type(random_uniform_init_(stack, bound=f32), nn.Module)
