"""Relabel superpixel ids to contiguous ``0..K_b-1`` per image."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from sparse_ops import _checks
from sparse_ops._layout import compact_ids

__all__ = ["SuperpixelIds", "relabel_contiguous"]


class SuperpixelIds(NamedTuple):
    """Superpixel ids numbered ``0..K_b - 1`` in every image, and ``K_b``: the output of
    :func:`relabel_contiguous`, :func:`~sparse_ops.enforce_connectivity` and
    :func:`~sparse_ops.hard_superpixels` (``return_counts=True``). A tuple: ``ids, k = ...`` unpacks it.

    Attributes:
        ids (LongTensor[B, H, W] | LongTensor[B, 1, H, W] | LongTensor[H, W]): the ids, in the layout of the
            op's input.
        num_superpixels (LongTensor[B] | LongTensor[]): ``K_b`` per image (0-dim for an ``[H, W]`` input),
            the bound every op's ``num_superpixels`` takes: ``superpixel_pool(x, *relabel_contiguous(sp))``
            for a batch ``[B, H, W]`` (one image's ``[H, W]`` ids take a batch dim, ``ids[None]``: the ops
            take batches).
    """

    ids: Tensor
    num_superpixels: Tensor


def relabel_contiguous(superpixels: Tensor, *, validate: bool = True) -> SuperpixelIds:
    """Map each image's ids to ``0..K_b-1`` keeping their order (``K_b`` = number of distinct ids of image
    ``b``).

    Useful for label maps from other tools: skimage's ``slic`` starts at 1 (``start_label=1``), some methods
    leave gaps, negative ids or huge ids. Relabelling removes empty superpixels, so ``N_s = K.max()`` slots
    suffice. Exact for every int64 value, negative ones included, and every uint64 value: the ids are only
    sorted and compared, never shifted.

    Args:
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W] | IntTensor[H, W]): ids, any integer dtype
            (negative allowed); ``[H, W]`` is one image, as scikit-image's ``slic`` returns it.
        validate (bool): kept for the common signature: there is no value to check (types, shapes and devices
            are always checked).

    Returns:
        SuperpixelIds: ``(ids, num_superpixels)``, the new ids and ``K_b`` per image, in the input's layout
        (as :func:`~sparse_ops.enforce_connectivity`): ``[B, 1, H, W]`` keeps its channel dim, and ``[H, W]``
        gives ``[H, W]`` ids and a 0-dim ``K``.

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
        >>> relabel_contiguous(torch.tensor([[[-(2**62), 2**62, 7]]]))[0]
        tensor([[[0, 2, 1]]])
        >>> relabel_contiguous(torch.tensor([[1, 1, 4], [4, 9, 9]]))  # one [H, W] image (skimage's slic)
        SuperpixelIds(ids=tensor([[0, 0, 1],
                [1, 2, 2]]), num_superpixels=tensor(3))
    """
    validate = _checks.check_bool(validate, "validate")
    labels = _checks.check_label_map(superpixels, unbatched=True)
    b, h, w = labels.shape
    flat = labels.reshape(b, h * w)
    if flat.dtype == torch.uint64:  # the int64 keys of the same order: flip the sign bit
        keys = flat.view(torch.int64) ^ torch.iinfo(torch.int64).min
    else:
        keys = flat.to(torch.long)
    ids, counts = compact_ids(keys)
    return SuperpixelIds(*_checks.restore_id_layout(ids.view(b, h, w), counts, superpixels))
