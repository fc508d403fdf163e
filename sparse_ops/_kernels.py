"""The scatter/gather kernel of superpixel averaging and its self-adjoint autograd Function.

The averaging map is linear, ``y = G diag(1/count) S x`` with ``S`` a scatter-sum of pixels into superpixel slots
and ``G`` a gather of slots back to pixels. Its adjoint is ``S^T diag(1/count) G^T``; ``S^T`` is a gather with
the *scatter* index and ``G^T`` a scatter-sum with the *gather* index, so the backward pass is the very same
kernel with the two indices swapped (without a mask they are the same tensor: the map is symmetric). The
backward calls the Function itself, so double backward (and any order) works.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["average_kernel", "AverageScatter"]


def average_kernel(
    x: Tensor, scatter_index: Tensor, gather_index: Tensor, inv_counts: Tensor, keep: Tensor | None
) -> Tensor:
    """``y = where(keep, x, gather(inv_counts * scatter_add(x, scatter_index), gather_index))``.

    Args:
        x (Tensor[B, C, N]): values (the accumulation dtype).
        scatter_index (LongTensor[B, 1, N]): slot of every pixel for the sums (stride-0 over ``C``).
        gather_index (LongTensor[B, 1, N]): slot every pixel reads its result from.
        inv_counts (Tensor[B, 1, S]): ``1 / count`` per slot, 0 for slots that must yield 0.
        keep (BoolTensor[B, 1, N] | None): pixels that pass through unchanged.

    Returns:
        Tensor[B, C, N]: a new tensor.
    """
    b, c, n = x.shape
    sums = x.new_zeros(b, c, inv_counts.shape[-1])
    sums.scatter_add_(2, scatter_index.expand(b, c, n), x)
    sums.mul_(inv_counts)
    y = torch.gather(sums, 2, gather_index.expand(b, c, n))
    if keep is not None:
        y = torch.where(keep, x, y)
    return y


class AverageScatter(torch.autograd.Function):
    """Autograd wrapper of :func:`average_kernel`: backward = the same kernel with the indices swapped.

    Nothing is saved but the indices, ``1/count`` and ``keep``; no intermediate of size ``[B, C, N]``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        x: Tensor, scatter_index: Tensor, gather_index: Tensor, inv_counts: Tensor, keep: Tensor | None
    ) -> Tensor:
        return average_kernel(x, scatter_index, gather_index, inv_counts, keep)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        _, scatter_index, gather_index, inv_counts, keep = inputs
        ctx.save_for_backward(scatter_index, gather_index, inv_counts, keep)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        scatter_index, gather_index, inv_counts, keep = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        grad_x = AverageScatter.apply(grad, gather_index, scatter_index, inv_counts, keep)
        return grad_x, None, None, None, None
