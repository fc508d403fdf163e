"""Regular superpixel grid helpers (SpixelFCN-style soft association).

An image of ``H x W`` pixels is cut into cells of ``cell_size x cell_size`` pixels, row-major. The last row
and
column of cells may be partial when ``cell_size`` does not divide ``H`` or ``W``:

.. math::

    n_h = \\lceil H / S \\rceil, \\qquad n_w = \\lceil W / S \\rceil, \\qquad
    \\mathrm{id}(i, j) = i\\, n_w + j .

Every pixel ``(y, x)`` lies in cell ``(y // S, x // S)`` and may be associated with that cell and its eight
neighbours. The nine candidates are ordered row-major over ``(dy, dx)`` in ``{-1, 0, 1}^2``:
``k = (dy + 1) * 3 + (dx + 1)``, i.e. ``0 TL, 1 T, 2 TR, 3 L, 4 C, 5 R, 6 BL, 7 B, 8 BR``.
"""

from __future__ import annotations

import operator
from typing import NamedTuple, SupportsIndex

import torch
from torch import Tensor

from sparse_ops._checks import FLOAT_DTYPES, check_device, check_int, check_tensor_size

__all__ = [
    "NEIGHBOUR_OFFSETS",
    "NeighbourCells",
    "grid_cell_ids",
    "grid_shape",
    "neighbour_cell_ids",
    "neighbour_validity",
    "num_grid_cells",
    "pixel_xy",
]

#: ``(dy, dx)`` of the 9 association channels, in channel order (TL, T, TR, L, C, R, BL, B, BR).
NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


class NeighbourCells(NamedTuple):
    """Output of :func:`neighbour_cell_ids`: the 9 candidate cells of every pixel. A tuple: ``ids, valid =
    ...`` unpacks it.

    Attributes:
        ids (LongTensor[9, H, W]): global id of candidate ``k`` (:data:`NEIGHBOUR_OFFSETS` order) of pixel
            ``(y, x)``, clamped to the nearest real cell where the candidate lies outside the image.
        valid (BoolTensor[9, H, W]): ``True`` where candidate ``k`` is a real cell
            (:func:`neighbour_validity`).
    """

    ids: Tensor
    valid: Tensor


def grid_shape(height: SupportsIndex, width: SupportsIndex, cell_size: SupportsIndex) -> tuple[int, int]:
    """Number of grid cells along each axis, counting partial border cells.

    Args:
        height (int): image height ``H`` in pixels (>= 1).
        width (int): image width ``W`` in pixels (>= 1).
        cell_size (int): side of a cell in pixels (>= 1).

    Returns:
        tuple[int, int]: ``(n_h, n_w) = (ceil(H / cell_size), ceil(W / cell_size))``.

    Example:
        >>> grid_shape(512, 512, 16)
        (32, 32)
        >>> grid_shape(100, 37, 16)
        (7, 3)
    """
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    cell_size = check_int(cell_size, "cell_size", 1)
    return -(-height // cell_size), -(-width // cell_size)


def num_grid_cells(height: SupportsIndex, width: SupportsIndex, cell_size: SupportsIndex) -> int:
    """Total number of grid cells (superpixels), ``n_h * n_w``: the ``num_superpixels`` of grid ids.

    Args:
        height (int): image height ``H`` in pixels (>= 1).
        width (int): image width ``W`` in pixels (>= 1).
        cell_size (int): side of a cell in pixels (>= 1).

    Returns:
        int: ``ceil(H / cell_size) * ceil(W / cell_size)`` (see :func:`grid_shape`).

    Raises:
        TypeError: an argument is not an integer.
        ValueError: an argument is below 1.

    Example:
        >>> num_grid_cells(100, 37, 16)
        21
    """
    n_h, n_w = grid_shape(height, width, cell_size)
    return n_h * n_w


def _pixel_cells(
    height: int, width: int, cell_size: int, device: torch.device | str | int | None
) -> tuple[Tensor, Tensor]:
    # a cell at least as large as the image is one cell whatever its size: a cell side from 2**63 on wrapped
    # in the tensor division (2**63 became -2**63) or raised an OverflowError
    cell_size = min(cell_size, max(height, width))
    rows = torch.arange(height, device=device) // cell_size
    cols = torch.arange(width, device=device) // cell_size
    return rows, cols


def grid_cell_ids(
    height: SupportsIndex,
    width: SupportsIndex,
    cell_size: SupportsIndex,
    *,
    batch_size: SupportsIndex | None = None,
    device: torch.device | str | int | None = None,
) -> Tensor:
    """Initial cell id of every pixel (the regular grid as a superpixel map).

    Args:
        height (int): image height ``H``.
        width (int): image width ``W``.
        cell_size (int): cell side in pixels.
        batch_size (int | None): if given, the map is expanded to ``[batch_size, H, W]``; ``None`` (the
            default) gives one image's ``[H, W]`` map, which the hard ops (``uniformize``, pooling) take
            only with a batch dim: pass ``batch_size=B`` or index it ``[None]`` (unlike :func:`pixel_xy`,
            whose ``batch_size`` defaults to 1).
        device (torch.device | str | int | None): device of the result (``None``: the default device).

    Returns:
        LongTensor[H, W] | LongTensor[B, H, W]: ``(y // S) * n_w + x // S``.

    Raises:
        TypeError: a size that is not an int, or ``device`` not a device (a ``torch.device``, a string or an
            int index).
        ValueError: ``height``, ``width`` or ``cell_size`` below 1, ``batch_size`` below 0, a map no
            tensor can hold (its size in bytes or its strides above ``2**63 - 1``; one a tensor can hold but
            the memory cannot gets PyTorch's out-of-memory error, as ``torch.zeros`` does), or a ``device``
            string or index that names no device.

    Example:
        >>> grid_cell_ids(3, 5, 2)
        tensor([[0, 0, 1, 1, 2],
                [0, 0, 1, 1, 2],
                [3, 3, 4, 4, 5]])
    """
    _n_h, n_w = grid_shape(height, width, cell_size)
    # checked by grid_shape: Python ints from here on
    height, width, cell_size = operator.index(height), operator.index(width), operator.index(cell_size)
    if batch_size is not None:  # checked before the map of H x W ids is allocated
        batch_size = check_int(batch_size, "batch_size", 0)
    # the map of one image is made first (also for an empty batch), then the batch of them
    check_tensor_size(f"height x width = {height} x {width} is too large", (height, width), torch.long)
    if batch_size is not None:
        check_tensor_size(
            f"batch_size={batch_size} is too large for height x width = {height} x {width}",
            (batch_size, height, width),
            torch.long,
        )
    device = check_device(device)
    rows, cols = _pixel_cells(height, width, cell_size, device)
    ids = rows[:, None] * n_w + cols[None, :]
    if batch_size is not None:
        ids = ids.expand(batch_size, height, width).contiguous()
    return ids


def neighbour_validity(
    height: SupportsIndex,
    width: SupportsIndex,
    cell_size: SupportsIndex,
    *,
    device: torch.device | str | int | None = None,
) -> Tensor:
    """Which of the 9 candidate cells of every pixel lie inside the image.

    Args:
        height (int): image height ``H``.
        width (int): image width ``W``.
        cell_size (int): cell side in pixels.
        device (torch.device | str | int | None): device of the result (``None``: the default device).

    Returns:
        BoolTensor[9, H, W]: ``True`` where candidate ``k`` of pixel ``(y, x)`` is a real cell.

    Raises:
        TypeError: a size that is not an int, or ``device`` not a device (a ``torch.device``, a string or an
            int index).
        ValueError: a size below 1, a map no tensor can hold (see :func:`grid_cell_ids`), or a ``device``
            string or index that names no device.

    Example:
        >>> v = neighbour_validity(4, 4, 2)
        >>> v[:, 0, 0].tolist()  # top-left pixel: only C, R, B, BR exist
        [False, False, False, False, True, True, False, True, True]
    """
    n_h, n_w = grid_shape(height, width, cell_size)
    # checked by grid_shape: Python ints from here on
    height, width, cell_size = operator.index(height), operator.index(width), operator.index(cell_size)
    check_tensor_size(f"height x width = {height} x {width} is too large", (9, height, width), torch.bool)
    device = check_device(device)
    rows, cols = _pixel_cells(height, width, cell_size, device)
    # NEIGHBOUR_OFFSETS in index form (dy outer, dx inner), made on the device: no host-to-device copy
    three = torch.arange(3, device=device) - 1
    dy, dx = three.repeat_interleave(3), three.repeat(3)
    r = rows[None, :] + dy[:, None]  # [9, H]
    c = cols[None, :] + dx[:, None]  # [9, W]
    row_ok = (r >= 0) & (r < n_h)
    col_ok = (c >= 0) & (c < n_w)
    out = row_ok[:, :, None] & col_ok[:, None, :]
    return out


def neighbour_cell_ids(
    height: SupportsIndex,
    width: SupportsIndex,
    cell_size: SupportsIndex,
    *,
    device: torch.device | str | int | None = None,
) -> NeighbourCells:
    """Global ids of the 9 candidate cells of every pixel, with a validity mask.

    Out-of-image candidates (around the border) are reported with ``valid == False``; their id is clamped to
    the nearest real cell (edge padding, as in SpixelFCN) so that it is always a legal index, but it must not
    be used as an association target.

    Args:
        height (int): image height ``H``.
        width (int): image width ``W``.
        cell_size (int): cell side in pixels.
        device (torch.device | str | int | None): device of the results (``None``: the default device).

    Returns:
        NeighbourCells: ``(ids, valid)``, candidate ids ``LongTensor[9, H, W]`` and their validity
        ``BoolTensor[9, H, W]``.

    Raises:
        TypeError: a size that is not an int, or ``device`` not a device (a ``torch.device``, a string or an
            int index).
        ValueError: a size below 1, maps no tensor can hold (see :func:`grid_cell_ids`), or a ``device``
            string or index that names no device.

    Example:
        >>> ids, valid = neighbour_cell_ids(4, 4, 2)
        >>> ids[:, 3, 3].tolist()  # bottom-right pixel lives in cell 3
        [0, 1, 1, 2, 3, 3, 2, 3, 3]
        >>> valid[:, 3, 3].tolist()
        [True, True, False, True, True, False, False, False, False]
    """
    n_h, n_w = grid_shape(height, width, cell_size)
    # checked by grid_shape: Python ints from here on
    height, width, cell_size = operator.index(height), operator.index(width), operator.index(cell_size)
    check_tensor_size(f"height x width = {height} x {width} is too large", (9, height, width), torch.long)
    device = check_device(device)
    rows, cols = _pixel_cells(height, width, cell_size, device)
    ids = torch.empty(9, height, width, dtype=torch.long, device=device)
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        r = (rows + dy).clamp(0, n_h - 1)
        c = (cols + dx).clamp(0, n_w - 1)
        ids[k] = r[:, None] * n_w + c[None, :]
    return NeighbourCells(ids, neighbour_validity(height, width, cell_size, device=device))


def pixel_xy(
    height: SupportsIndex,
    width: SupportsIndex,
    *,
    batch_size: SupportsIndex = 1,
    dtype: torch.dtype | None = None,
    device: torch.device | str | int | None = None,
) -> Tensor:
    """Pixel coordinate features: channel 0 is ``x`` (column), channel 1 is ``y`` (row), in pixels.

    Args:
        height (int): image height ``H``.
        width (int): image width ``W``.
        batch_size (int): leading batch dimension ``B`` (always present: 1 by default, unlike
            :func:`grid_cell_ids`, whose default is one image's unbatched map).
        dtype: floating dtype of the result (``None``: the default dtype, ``torch.get_default_dtype()``, as
            PyTorch's factory functions and the ``transparent_init`` layers take it; float32 unless set).
        device (torch.device | str | int | None): device of the result (``None``: the default device).

    Returns:
        Tensor[B, 2, H, W]: ``out[b, 0, y, x] = x`` and ``out[b, 1, y, x] = y``, exactly.

    Raises:
        TypeError: if ``dtype`` is not a floating ``torch.dtype``, a size is not an int, or ``device`` is not
            a device (a ``torch.device``, a string or an int index).
        ValueError: if ``dtype`` cannot hold every coordinate exactly (``float16`` holds integers up to
            2048, ``bfloat16`` up to 256, ``float32`` up to ``2**24``, ``float64`` up to ``2**53``: beyond,
            no dtype does), ``height``, ``width`` < 1 or ``batch_size`` < 0, the sizes give an output no
            tensor can hold (see :func:`grid_cell_ids`), or a ``device`` string or index names no device.

    Example:
        >>> pixel_xy(2, 3)[0]
        tensor([[[0., 1., 2.],
                 [0., 1., 2.]],
        <BLANKLINE>
                [[0., 0., 0.],
                 [1., 1., 1.]]])
    """
    height = check_int(height, "height", 1)
    width = check_int(width, "width", 1)
    batch_size = check_int(batch_size, "batch_size", 0)
    if dtype is None:  # (was float32 whatever the default dtype)
        dtype = torch.get_default_dtype()
    if dtype not in FLOAT_DTYPES:  # float8: no arange kernel
        raise TypeError(f"dtype must be a floating dtype (float16/bfloat16/float32/float64), got {dtype!r}")
    reach = max(height, width) - 1
    exact_up_to = _exact_up_to(dtype)
    if reach > exact_up_to:
        # the advice names the narrowest wider dtype that holds the coordinates (float32, then float64)
        wider = [t for t in (torch.float32, torch.float64) if reach <= _exact_up_to(t)]
        if not wider:
            largest = _exact_up_to(torch.float64)
            fix = (
                f"no floating dtype holds them exactly (torch.float64 only up to {largest}): the image is "
                "too large"
            )
        else:
            fix = f"use dtype={wider[0]}" + (" (or wider)" if wider[0] != torch.float64 else "")
        raise ValueError(
            f"dtype={dtype} holds integers exactly only up to {exact_up_to}, but the coordinates of a "
            f"height x width = {height} x {width} image reach {reach}: {fix}"
        )
    check_tensor_size(
        f"height x width = {height} x {width} with batch_size={batch_size} is too large",
        (batch_size, 2, height, width),
        dtype,
    )
    device = check_device(device)
    # filled by copies, not torch.stack: autocast promotes the inputs of a stack and refuses a half type other
    # than its own (float16 under a bfloat16 autocast raised "Unexpected floating ScalarType in
    # at::autocast::prioritize"); a copy keeps ``dtype`` under any autocast
    xy = torch.empty(batch_size, 2, height, width, dtype=dtype, device=device)
    xy[:, 0] = torch.arange(width, dtype=dtype, device=device)
    xy[:, 1] = torch.arange(height, dtype=dtype, device=device)[:, None]
    return xy


def _exact_up_to(dtype: torch.dtype) -> int:
    """The largest integer up to which ``dtype`` holds every integer exactly: 2 ** (mantissa bits + 1)."""
    return int(2 / torch.finfo(dtype).eps)
