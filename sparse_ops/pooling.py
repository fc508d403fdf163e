"""Superpixel pooling (sum / mean / max per superpixel) and unpooling (broadcast back to pixels)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sparse_ops import _checks
from sparse_ops.assignment import SuperpixelAssignment

__all__ = ["SuperpixelPool", "superpixel_pool", "superpixel_unpool"]


def superpixel_pool(
    features: Tensor,
    superpixels: Tensor,
    num_superpixels: int | Tensor | None = None,
    reduce: str = "mean",
    *,
    mask: Tensor | None = None,
    return_counts: bool = False,
    backend: str = "auto",
    validate: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Pool features over superpixels: one vector per superpixel.

    .. math::

        p_{b,s,c} = \operatorname{reduce}_{q:\ s_{b,q} = s,\ m_{b,q}} x_{b,c,q}

    Args:
        features (Tensor[B, C, H, W]): floating features (float16/bfloat16 accumulate in float32).
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel ids, any integer dtype.
        num_superpixels (int | LongTensor[B] | None): ``N_s``; an int for all images, the maximum of a per-image
            tensor, or inferred as ``max id + 1`` (a host-device synchronisation) when ``None``.
        reduce (str): ``"mean"``, ``"sum"`` or ``"max"``. An empty superpixel (no counted pixel) pools to 0.
        mask (BoolTensor[B, H, W] | None): pixels that take part (``True``); ``None``: all.
        return_counts (bool): also return the number of counted pixels per superpixel.
        backend (str): ``"auto"``, ``"scatter"`` or ``"sparse"`` (``"max"`` always uses scatter).
        validate (bool): check the inputs.

    Returns:
        Tensor[B, N_s, C] | tuple[Tensor[B, N_s, C], FloatTensor[B, N_s]]: pooled features in ``features``'
        dtype, and the float32 pixel counts when ``return_counts``.

    .. note::
        The gradient of ``"max"`` is shared evenly among tied maxima (``scatter_reduce`` semantics).

    Example:
        >>> import torch
        >>> x = torch.tensor([[[[1., 2.], [3., 6.]]]])
        >>> sp = torch.tensor([[[0, 0], [1, 1]]])
        >>> superpixel_pool(x, sp, reduce="max")
        tensor([[[2.],
                 [6.]]])
        >>> pooled, counts = superpixel_pool(x, sp, 3, return_counts=True)
        >>> pooled[..., 0], counts
        (tensor([[1.5000, 4.5000, 0.0000]]), tensor([[2., 2., 0.]]))
    """
    if validate:
        _checks.check_floating(features, "features", 4, "[B, C, H, W]")
        if isinstance(superpixels, Tensor):
            _checks.check_same_device(features, "features", superpixels, "superpixels")
            _checks.check_spatial_match(features, "features", _checks.check_superpixels(superpixels))
    assignment = SuperpixelAssignment(superpixels, num_superpixels, mask, backend=backend, validate=validate)
    pooled = assignment.pool(features, reduce)
    if return_counts:
        return pooled, assignment.counts
    return pooled


def superpixel_unpool(pooled: Tensor, superpixels: Tensor, *, validate: bool = True) -> Tensor:
    """Broadcast one vector per superpixel back to its pixels (the decoder; inverse layout of pooling).

    Args:
        pooled (Tensor[B, N_s, C]): a vector per superpixel.
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): ids in ``[0, N_s)``, any integer dtype.
        validate (bool): check the inputs (the id range check synchronises with the device).

    Returns:
        Tensor[B, C, H, W]: ``out[b, :, i, j] = pooled[b, superpixels[b, i, j]]``, ``pooled``'s dtype.

    Example:
        >>> import torch
        >>> pooled = torch.tensor([[[1., 10.], [2., 20.]]])
        >>> sp = torch.tensor([[[0, 1, 1]]])
        >>> superpixel_unpool(pooled, sp)
        tensor([[[[ 1.,  2.,  2.]],
        <BLANKLINE>
                 [[10., 20., 20.]]]])
    """
    if validate:
        if not isinstance(pooled, Tensor):
            raise TypeError(
                f"pooled must be a torch.Tensor of shape [B, N_s, C], got {type(pooled).__name__}"
            )
        if pooled.dim() != 3:
            raise ValueError(
                f"pooled must have shape [B, N_s, C] (3 dimensions), got shape {tuple(pooled.shape)}"
            )
        sp = _checks.check_superpixels(superpixels)
        _checks.check_same_device(pooled, "pooled", sp, "superpixels")
        if sp.shape[0] != pooled.shape[0]:
            raise ValueError(
                f"superpixels must have the batch size of pooled ({pooled.shape[0]}), got {sp.shape[0]}"
            )
    else:
        sp = superpixels[:, 0] if superpixels.dim() == 4 else superpixels
    b, h, w = sp.shape
    index = sp.reshape(b, 1, h * w).long()
    if validate:
        _checks.check_id_range(index.view(b, h * w), pooled.shape[1], None)
    c = pooled.shape[2]
    return torch.gather(pooled.transpose(1, 2), 2, index.expand(b, c, h * w)).view(b, c, h, w)


class SuperpixelPool(nn.Module):
    """Module form of :func:`superpixel_pool` (e.g. the superpixel pooling layer of SPN-style networks).

    Args:
        num_superpixels (int | None): ``N_s`` for every call (``None``: per call, or inferred).
        reduce (str): ``"mean"``, ``"sum"`` or ``"max"``.
        backend (str): ``"auto"``, ``"scatter"`` or ``"sparse"``.
        validate (bool): check the inputs.

    Shape:
        - features: :math:`(B, C, H, W)`
        - superpixels: :math:`(B, H, W)` or :math:`(B, 1, H, W)`, integer
        - mask: :math:`(B, H, W)`, bool, optional
        - output: :math:`(B, N_s, C)`

    Example:
        >>> import torch
        >>> pool = SuperpixelPool(num_superpixels=5, reduce="max")
        >>> pool(torch.randn(2, 16, 8, 8), torch.randint(0, 5, (2, 8, 8))).shape
        torch.Size([2, 5, 16])
    """

    def __init__(
        self,
        num_superpixels: int | None = None,
        reduce: str = "mean",
        *,
        backend: str = "auto",
        validate: bool = True,
    ) -> None:
        super().__init__()
        if validate:
            _checks.check_backend(backend)
            if reduce not in ("mean", "sum", "max"):
                raise ValueError(f"reduce must be one of ('mean', 'sum', 'max'), got {reduce!r}")
            if isinstance(num_superpixels, Tensor):
                raise TypeError(
                    "num_superpixels of SuperpixelPool must be an int or None; pass per-image "
                    "tensors to forward()"
                )
            _checks.check_num_superpixels(num_superpixels, 0, torch.device("cpu"))
        self.num_superpixels = num_superpixels
        self.reduce = reduce
        self.backend = backend
        self.validate = validate

    def forward(
        self,
        features: Tensor,
        superpixels: Tensor,
        mask: Tensor | None = None,
        num_superpixels: int | Tensor | None = None,
    ) -> Tensor:
        """Pool ``features`` over ``superpixels`` (``num_superpixels`` overrides the module's)."""
        n = self.num_superpixels if num_superpixels is None else num_superpixels
        out = superpixel_pool(
            features, superpixels, n, self.reduce, mask=mask, backend=self.backend, validate=self.validate
        )
        assert isinstance(out, Tensor)
        return out

    def extra_repr(self) -> str:
        return f"num_superpixels={self.num_superpixels}, reduce={self.reduce!r}, backend={self.backend!r}"
