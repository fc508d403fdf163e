"""Relabel superpixel ids to contiguous ``0..K_b-1`` per image."""

from __future__ import annotations

import torch
from torch import Tensor

from sparse_ops import _checks

__all__ = ["relabel_contiguous"]


def relabel_contiguous(superpixels: Tensor) -> tuple[Tensor, Tensor]:
    """Map each image's ids to ``0..K_b-1`` keeping their order (``K_b`` = number of distinct ids of image ``b``).

    Useful for label maps from other tools: skimage's ``slic`` starts at 1 (``start_label=1``), some methods
    leave gaps or negative ids. Relabelling removes empty superpixels, so ``N_s = K.max()`` slots suffice.

    Args:
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): ids, any integer dtype (negative allowed).

    Returns:
        tuple[LongTensor[B, H, W], LongTensor[B]]: the new ids and ``K_b`` per image.

    Example:
        >>> import torch
        >>> sp = torch.tensor([[[5, 5, 9], [1, 9, 9]], [[3, 3, 3], [3, 3, 3]]])
        >>> ids, k = relabel_contiguous(sp)
        >>> ids
        tensor([[[1, 1, 2],
                 [0, 2, 2]],
        <BLANKLINE>
                [[0, 0, 0],
                 [0, 0, 0]]])
        >>> k
        tensor([3, 1])
    """
    sp = _checks.check_superpixels(superpixels).long()
    b = sp.shape[0]
    if sp.numel() == 0:
        return sp.clone(), torch.zeros(b, dtype=torch.long, device=sp.device)
    low = sp.min()
    span = sp.max() - low + 1
    keys = (sp - low) + torch.arange(b, device=sp.device).view(b, 1, 1) * span
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    per_image = torch.zeros(b, dtype=torch.long, device=sp.device)
    per_image.scatter_add_(0, torch.div(unique, span, rounding_mode="floor"), torch.ones_like(unique))
    starts = torch.cumsum(per_image, 0) - per_image
    return inverse - starts.view(b, 1, 1), per_image
