"""Grid helpers against loops; the neighbour order is the contract of every association map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_ops.grid
from sparse_ops import (
    NEIGHBOUR_OFFSETS,
    grid_cell_ids,
    grid_shape,
    neighbour_cell_ids,
    neighbour_validity,
    num_grid_cells,
    pixel_xy,
)
from tests.hypothesis_budget import budget

sizes = st.integers(1, 23)
cells = st.integers(1, 9)


def test_neighbour_order_is_the_contract():
    assert NEIGHBOUR_OFFSETS == ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1), (1, -1), (1, 0), (1, 1))
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        assert k == (dy + 1) * 3 + (dx + 1)


@given(H=sizes, W=sizes, S=cells)
def test_grid_shape_partial_cells(H, W, S):
    n_h, n_w = grid_shape(H, W, S)
    assert (n_h, n_w) == (math.ceil(H / S), math.ceil(W / S))
    assert num_grid_cells(H, W, S) == n_h * n_w


@given(H=sizes, W=sizes, S=cells)
@settings(max_examples=budget(25))
def test_grid_cell_ids_and_neighbours_match_loops(H, W, S):
    n_h, n_w = grid_shape(H, W, S)
    ids = grid_cell_ids(H, W, S)
    nids, valid = neighbour_cell_ids(H, W, S)
    assert ids.dtype == torch.long and ids.shape == (H, W)
    assert torch.equal(valid, neighbour_validity(H, W, S))
    for y in range(H):
        for x in range(W):
            assert ids[y, x] == (y // S) * n_w + x // S
            for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
                i, j = y // S + dy, x // S + dx
                ok = 0 <= i < n_h and 0 <= j < n_w
                assert bool(valid[k, y, x]) == ok
                if ok:
                    assert nids[k, y, x] == i * n_w + j
                assert 0 <= nids[k, y, x] < n_h * n_w
    assert torch.equal(nids[4], ids)
    assert valid[4].all()


def test_grid_cell_ids_batched(device):
    ids = grid_cell_ids(5, 7, 3, batch_size=2, device=device)
    assert ids.shape == (2, 5, 7) and ids.device.type == device.type
    assert torch.equal(ids[0], ids[1])
    assert ids.max() == num_grid_cells(5, 7, 3) - 1


def test_pixel_xy(device, dtype):
    xy = pixel_xy(3, 4, batch_size=2, dtype=dtype, device=device)
    assert xy.shape == (2, 2, 3, 4) and xy.dtype == dtype and xy.device.type == device.type
    assert xy[1, 0, 2, 3] == 3 and xy[1, 1, 2, 3] == 2
    assert torch.equal(xy[0, 0, 0], torch.arange(4, dtype=dtype, device=device))


def test_numpy_ints_accepted():
    assert grid_shape(np.int64(10), 10, np.int32(3)) == (4, 4)


@pytest.mark.parametrize(
    "args, exc, msg",
    [
        ((0, 5, 2), ValueError, "height must be >= 1"),
        ((5, 0, 2), ValueError, "width must be >= 1"),
        ((5, 5, 0), ValueError, "cell_size must be >= 1, got 0"),
        ((5.0, 5, 2), TypeError, "height must be an int, got float"),
        ((5, 5, True), TypeError, "cell_size must be an int, got bool True"),
    ],
)
def test_grid_errors(args, exc, msg):
    with pytest.raises(exc, match=msg):
        grid_shape(*args)


def test_pixel_xy_errors():
    with pytest.raises(TypeError, match="floating dtype"):
        pixel_xy(2, 2, dtype=torch.long)
    with pytest.raises(
        TypeError, match=r"dtype must be a floating dtype \(float16/bfloat16/float32/float64\), got 'float32'"
    ):
        pixel_xy(2, 2, dtype="float32")  # an AttributeError before
    with pytest.raises(ValueError, match="batch_size must be >= 0"):
        pixel_xy(2, 2, batch_size=-1)
    with pytest.raises(ValueError, match=r"bfloat16 holds integers exactly only up to 256, .* reach 257"):
        pixel_xy(2, 258, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match=r"float16 holds integers exactly only up to 2048, .* reach 2049"):
        pixel_xy(2050, 2, dtype=torch.float16)


def test_the_pixel_xy_precision_error_names_dtype() -> None:
    """The error of a dtype too narrow for the coordinates names the argument (it began with the dtype's
    value alone, ``torch.float16 holds ...``), the sizes and the fix."""
    with pytest.raises(
        ValueError,
        match=r"^dtype=torch\.float16 holds integers exactly only up to 2048, but the coordinates of a "
        r"height x width = 3 x 3000 image reach 2999: use dtype=torch\.float32 \(or wider\)$",
    ):
        pixel_xy(3, 3000, dtype=torch.float16)


@pytest.mark.parametrize(("dtype", "side"), [(torch.bfloat16, 257), (torch.float16, 2049)])
def test_pixel_xy_is_exact_up_to_the_dtype_limit(dtype: torch.dtype, side: int) -> None:
    xy = pixel_xy(side, side, dtype=dtype)
    expected = torch.arange(side, dtype=torch.float64)
    assert torch.equal(xy[0, 0, 0].double(), expected)
    assert torch.equal(xy[0, 1, :, 0].double(), expected)


@pytest.mark.parametrize("cell_size", [2**63 - 1, 2**63, 2**64 + 1, 10**40])
def test_a_cell_beyond_the_int64_range_is_one_cell(cell_size: int) -> None:
    """Any cell at least as large as the image is the single cell 0. A cell size from 2**63 on wrapped in the
    tensor division of the pixel coordinates (2**63 became -2**63: ids -1 and -2, every neighbour out of the
    image) or raised an OverflowError that named no argument (from 2**64)."""
    ids, valid = neighbour_cell_ids(3, 4, cell_size)
    assert grid_cell_ids(3, 4, cell_size).eq(0).all()
    torch.testing.assert_close(ids, torch.zeros(9, 3, 4, dtype=torch.long))
    torch.testing.assert_close(valid, neighbour_validity(3, 4, 4))
    torch.testing.assert_close(neighbour_validity(3, 4, cell_size), neighbour_validity(3, 4, 4))


def test_batch_of_zero_gives_empty_maps() -> None:
    assert pixel_xy(3, 4, batch_size=0).shape == (0, 2, 3, 4)
    assert grid_cell_ids(3, 4, 2, batch_size=0).shape == (0, 3, 4)
    with pytest.raises(ValueError, match="batch_size must be >= 0"):
        grid_cell_ids(2, 2, 1, batch_size=-1)


@pytest.mark.parametrize(("batch_size", "exc"), [(-1, ValueError), (2.0, TypeError)])
def test_grid_cell_ids_checks_batch_size_before_allocating_the_map(
    monkeypatch: pytest.MonkeyPatch, batch_size: object, exc: type[Exception]
) -> None:
    # a bad batch_size of a large image was refused only after the H x W map was built (grid_cell_ids(2**31,
    # 2, 2, batch_size=-1) allocated 16 GiB first, a RuntimeError where that failed): no map may be built
    def refuse(*args: object) -> None:
        raise AssertionError("the H x W map was built before batch_size was checked")

    monkeypatch.setattr(sparse_ops.grid, "_pixel_cells", refuse)
    with pytest.raises(exc, match="batch_size must be"):
        grid_cell_ids(2**31, 2, 2, batch_size=batch_size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dtype", "autocast"), [(torch.float16, torch.bfloat16), (torch.bfloat16, torch.float16)]
)
def test_pixel_xy_of_a_half_type_under_autocast_of_the_other(
    dtype: torch.dtype, autocast: torch.dtype
) -> None:
    """The coordinates keep ``dtype`` under any autocast: a stack of half tensors under the other half type's
    autocast raised ("Unexpected floating ScalarType in at::autocast::prioritize")."""
    expected = pixel_xy(3, 4, batch_size=2, dtype=dtype)
    with torch.autocast("cpu", dtype=autocast):
        got = pixel_xy(3, 4, batch_size=2, dtype=dtype)
    assert got.dtype == dtype and torch.equal(got, expected)
    assert pixel_xy(3, 4, batch_size=0, dtype=dtype).shape == (0, 2, 3, 4)


def test_batched_grid_cell_ids_are_one_map_per_image() -> None:
    """The batched map owns one contiguous map per image (not an expanded view of one): an image's ids can be
    changed in place, e.g. by a relabelling, without touching the others."""
    ids = grid_cell_ids(3, 4, 2, batch_size=2)
    assert ids.is_contiguous()
    ids[0] += 10
    assert torch.equal(ids[1], grid_cell_ids(3, 4, 2)) and torch.equal(ids[0], grid_cell_ids(3, 4, 2) + 10)
