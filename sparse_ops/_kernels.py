"""The scatter/gather kernel of superpixel averaging and its self-adjoint autograd Function.

The averaging map is linear, ``y = G diag(1/count) S x`` with ``S`` a scatter-sum of pixels into superpixel slots
and ``G`` a gather of slots back to pixels. Its adjoint is ``S^T diag(1/count) G^T``; ``S^T`` is a gather with
the *scatter* index and ``G^T`` a scatter-sum with the *gather* index, so the backward pass is the very same
kernel with the two indices swapped (without a mask they are the same tensor, passed once: the map is symmetric). The
backward calls the Function itself, so double backward (and any order) works.

Interleaved slots: neighbouring pixels mostly share a superpixel, so a plain ``scatter_add_`` adds them into the
same accumulator one after the other and waits on each load-add-store (a serial dependency chain). Giving every
superpixel ``k`` slots and sending pixel ``p`` to slot ``s_p * k + p % k`` splits the chain into ``k``
independent ones (about 2x faster on CPU for superpixels of >= 32 pixels); the ``k`` partial sums are then added,
scaled by ``1/count`` and written back to all ``k`` slots so that the gather can use the same index.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AverageScatter", "average_kernel", "choose_interleave"]


def choose_interleave(num_pixels: int, num_superpixels: int) -> int:
    """Slots per superpixel ``k``: 1 below 32 pixels per superpixel on average, else 4 while the ``N_s * k`` slot
    row stays within 8192 entries, else 2.

    Small superpixels give short dependency chains anyway, and k = 1 keeps the buffer at one slot per superpixel
    when ``N_s`` is large; capping the slot row keeps the sums buffer small (at ``N_s = 4096`` on 512x512, k = 2
    instead of 4 cut the peak extra memory from 1.32x to 1.16x the ``x * 1`` floor at the same speed).
    """
    mean_size = num_pixels / max(num_superpixels, 1)
    if mean_size < 32:
        return 1
    return 4 if num_superpixels * 4 <= 8192 else 2


def average_kernel(
    x: Tensor,
    scatter_index: Tensor,
    gather_index: Tensor | None,
    inv_counts: Tensor,
    keep: Tensor | None,
    k: int,
) -> Tensor:
    """``y = where(keep, x, gather(inv_counts * scatter_add(x, scatter_index), gather_index))``.

    Args:
        x (Tensor[B, C, N]): values (the accumulation dtype).
        scatter_index (LongTensor[B, 1, N]): interleaved slot ``s * k + j`` of every pixel for the sums.
        gather_index (LongTensor[B, 1, N] | None): interleaved slot every pixel reads its result from
            (``None``: the scatter index, the symmetric case).
        inv_counts (Tensor[B, 1, S]): ``1 / count`` per superpixel slot, 0 for slots that must yield 0.
        keep (BoolTensor[B, 1, N] | None): pixels that pass through unchanged.
        k (int): slots per superpixel.

    Returns:
        Tensor[B, C, N]: a new tensor.
    """
    b, c, n = x.shape
    s = inv_counts.shape[-1]
    sums = x.new_zeros(b, c, s * k)
    sums.scatter_add_(2, scatter_index.expand(b, c, n), x)
    if k > 1:
        parts = sums.view(b, c, s, k)
        means = parts.sum(dim=3, keepdim=True).mul_(inv_counts.unsqueeze(-1))
        parts.copy_(means.expand(b, c, s, k))
    else:
        sums.mul_(inv_counts)
    if gather_index is None:
        gather_index = scatter_index
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
        x: Tensor,
        scatter_index: Tensor,
        gather_index: Tensor | None,
        inv_counts: Tensor,
        keep: Tensor | None,
        k: int,
    ) -> Tensor:
        return average_kernel(x, scatter_index, gather_index, inv_counts, keep, k)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        _, scatter_index, gather_index, inv_counts, keep, k = inputs
        ctx.save_for_backward(scatter_index, gather_index, inv_counts, keep)
        ctx.k = k

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        scatter_index, gather_index, inv_counts, keep = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            if gather_index is None:  # symmetric: the backward is the forward map
                grad_x = AverageScatter.apply(grad, scatter_index, None, inv_counts, keep, ctx.k)
            else:  # the adjoint: swap the roles of the two indices
                grad_x = AverageScatter.apply(grad, gather_index, scatter_index, inv_counts, keep, ctx.k)
        return grad_x, None, None, None, None, None
