"""Input validation with messages that teach (shared by the hard superpixel ops).

Every check raises :class:`TypeError` (wrong kind of object or dtype) or :class:`ValueError` (wrong shape,
range or device) naming the argument and showing the expected and the actual value. Checks that need the
*values* of a tensor (id ranges) synchronise with the device; all of them are skipped with ``validate=False``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "check_backend",
    "check_floating",
    "check_id_range",
    "check_mask",
    "check_num_superpixels",
    "check_same_device",
    "check_spatial_match",
    "check_superpixels",
]

BACKENDS = ("auto", "scatter", "sparse")


def check_floating(x: object, name: str, ndim: int, layout: str) -> None:
    """Require a floating tensor with ``ndim`` dimensions (``layout`` names them, e.g. ``"[B, C, H, W]"``)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got dtype {x.dtype}; "
            f"convert it with {name}.float()"
        )
    if x.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dimensions), got shape {tuple(x.shape)}")


def check_superpixels(superpixels: object, name: str = "superpixels") -> Tensor:
    """Require an integer label map ``[B, H, W]`` or ``[B, 1, H, W]``; return it as ``[B, H, W]``."""
    if not isinstance(superpixels, Tensor):
        raise TypeError(
            f"{name} must be an integer torch.Tensor of shape [B, H, W], got {type(superpixels).__name__}"
        )
    if superpixels.is_floating_point() or superpixels.is_complex() or superpixels.dtype == torch.bool:
        raise TypeError(
            f"{name} must have an integer dtype (e.g. torch.int64), got {superpixels.dtype}; superpixel ids "
            f"are labels, not values: convert with {name}.long() (after rounding if they were resized)"
        )
    if superpixels.dim() == 4:
        if superpixels.shape[1] != 1:
            raise ValueError(
                f"{name} must have shape [B, H, W] or [B, 1, H, W], got shape {tuple(superpixels.shape)}"
            )
        superpixels = superpixels[:, 0]
    elif superpixels.dim() != 3:
        raise ValueError(
            f"{name} must have shape [B, H, W] or [B, 1, H, W], got shape {tuple(superpixels.shape)}"
        )
    return superpixels


def check_same_device(reference: Tensor, ref_name: str, other: Tensor, name: str) -> None:
    """Require ``other`` to live on the device of ``reference``."""
    if other.device != reference.device:
        raise ValueError(
            f"{name} must be on the same device as {ref_name} ({reference.device}), got {other.device}; "
            f"move it with {name}.to({ref_name}.device)"
        )


def check_spatial_match(x: Tensor, x_name: str, superpixels: Tensor, name: str = "superpixels") -> None:
    """Require ``x[B, C, H, W]`` and ``superpixels[B, H, W]`` to agree on ``B``, ``H`` and ``W``."""
    expected = (x.shape[0], x.shape[2], x.shape[3])
    actual = tuple(superpixels.shape)
    if actual != expected:
        hint = ""
        if actual[0] == expected[0]:
            hint = (
                f"; resize the label map with nearest interpolation, e.g. "
                f"F.interpolate({name}[:, None].float(), size={tuple(expected[1:])}, mode='nearest')"
                f"[:, 0].long()"
            )
        raise ValueError(
            f"{name} must have shape [B, H, W] = {list(expected)} to match {x_name} of shape "
            f"{tuple(x.shape)}, got {list(actual)}{hint}"
        )


def check_num_superpixels(num_superpixels: object, batch_size: int, device: torch.device) -> None:
    """Require ``None``, a non-negative ``int`` or an integer ``Tensor[B]`` of non-negative counts."""
    if num_superpixels is None:
        return
    if isinstance(num_superpixels, bool):
        raise TypeError(f"num_superpixels must be an int, a Tensor[B] or None, got bool {num_superpixels}")
    if isinstance(num_superpixels, int):
        if num_superpixels < 0:
            raise ValueError(f"num_superpixels must be >= 0, got {num_superpixels}")
        return
    if isinstance(num_superpixels, Tensor):
        if (
            num_superpixels.is_floating_point()
            or num_superpixels.is_complex()
            or num_superpixels.dtype == torch.bool
        ):
            raise TypeError(f"num_superpixels must have an integer dtype, got {num_superpixels.dtype}")
        if tuple(num_superpixels.shape) != (batch_size,):
            raise ValueError(
                f"num_superpixels must be an int or a Tensor of shape [B] = [{batch_size}], "
                f"got shape {tuple(num_superpixels.shape)}"
            )
        if num_superpixels.numel() and bool((num_superpixels < 0).any()):
            raise ValueError(f"num_superpixels must be >= 0, got {num_superpixels.tolist()}")
        return
    raise TypeError(
        f"num_superpixels must be an int, a Tensor[B] or None, got {type(num_superpixels).__name__}"
    )


def check_id_range(
    index: Tensor, num_superpixels: int, per_image: Tensor | None, name: str = "superpixels"
) -> None:
    """Require every id of ``index[B, N_p]`` in ``[0, num_superpixels)`` (per image when ``per_image``)."""
    if index.numel() == 0:
        return
    low = int(index.min())
    if low < 0:
        raise ValueError(
            f"{name} ids must be >= 0, got the id {low}; shift or relabel them (relabel_contiguous)"
        )
    if per_image is None:
        high = int(index.max())
        if high >= num_superpixels:
            raise ValueError(
                f"{name} ids must be < num_superpixels = {num_superpixels}, got the id {high}; pass a larger "
                f"num_superpixels (max id + 1 = {high + 1}) or relabel with relabel_contiguous"
            )
        return
    highs = index.amax(dim=1)
    bad = (highs >= per_image.to(highs.device)).nonzero()
    if bad.numel():
        b = int(bad[0, 0])
        raise ValueError(
            f"{name} ids of image {b} must be < num_superpixels[{b}] = {int(per_image[b])}, "
            f"got the id {int(highs[b])}"
        )


def check_mask(mask: object, superpixels: Tensor) -> Tensor:
    """Require a boolean ``mask[B, H, W]`` (or ``[B, 1, H, W]``) matching ``superpixels``; return ``[B, H, W]``."""
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"mask must be a bool torch.Tensor of shape [B, H, W] or None, got {type(mask).__name__}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(
            f"mask must have dtype torch.bool (True = pixel counts in the means), got {mask.dtype}"
        )
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if tuple(mask.shape) != tuple(superpixels.shape):
        raise ValueError(
            f"mask must have shape [B, H, W] = {list(superpixels.shape)} like superpixels, got {list(mask.shape)}"
        )
    check_same_device(superpixels, "superpixels", mask, "mask")
    return mask


def check_backend(backend: object) -> None:
    """Require one of the known backend names."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
