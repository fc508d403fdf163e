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


def test_pixel_xy_takes_the_default_dtype_as_factory_functions_do() -> None:
    """``dtype=None`` (the default) is ``torch.get_default_dtype()``: it was float32 whatever the default,
    where PyTorch's factories and the ``transparent_init`` layers follow it."""
    assert pixel_xy(2, 3).dtype == torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert pixel_xy(2, 3).dtype == torch.float64
        assert pixel_xy(2, 3, dtype=torch.float32).dtype == torch.float32
    finally:
        torch.set_default_dtype(previous)


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


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: grid_cell_ids(2**70, 4, 2), r"^height x width = 1180591620717411303424 x 4 is too large: "),
        (
            lambda: grid_cell_ids(4, 4, 2, batch_size=2**70),
            r"^batch_size=1180591620717411303424 is too large for height x width = 4 x 4: ",
        ),
        (
            lambda: neighbour_cell_ids(2**70, 4, 2),
            r"^height x width = 1180591620717411303424 x 4 is too large: ",
        ),
        (
            lambda: neighbour_validity(4, 2**70, 2),
            r"^height x width = 4 x 1180591620717411303424 is too large: ",
        ),
        (
            lambda: pixel_xy(4, 4, batch_size=2**70),
            r"^height x width = 4 x 4 with batch_size=1180591620717411303424 is too large: ",
        ),
        (  # an empty batch of maps whose strides do not fit int64
            lambda: pixel_xy(2**31, 2**31, batch_size=0, dtype=torch.float64),
            r"^height x width = 2147483648 x 2147483648 with batch_size=0 is too large: .* a stride of ",
        ),
    ],
)
def test_sizes_no_tensor_can_hold_are_value_errors(call, message: str) -> None:
    """Sizes whose output no tensor can hold (its size in bytes or its strides above 2**63 - 1) are refused
    naming the arguments and their values: PyTorch raised an OverflowError ("int too big to convert"), an
    overflow TypeError or "Stride calculation overflowed", naming none."""
    with pytest.raises(ValueError, match=message + r".*more than a tensor can hold"):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: grid_cell_ids(2**62, 2, 1),
        lambda: grid_cell_ids(4, 4, 2, batch_size=2**62),
        lambda: neighbour_validity(2**62, 2, 1),
        lambda: neighbour_cell_ids(2**62, 2, 1),
    ],
)
def test_the_size_check_runs_before_anything_is_allocated(monkeypatch: pytest.MonkeyPatch, call) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the pixel cells were built before the sizes were checked")

    monkeypatch.setattr(sparse_ops.grid, "_pixel_cells", refuse)
    with pytest.raises(ValueError, match="more than a tensor can hold"):
        call()


def test_huge_maps_a_tensor_can_hold_keep_their_shape_on_meta() -> None:
    """Only sizes no tensor can hold are refused (no cap on the image size: the sizes are the output's
    shape, as for torch.zeros): shape inference of a huge map still runs on the meta device."""
    assert grid_cell_ids(2**20, 2**20, 1, batch_size=2**10, device="meta").shape == (2**10, 2**20, 2**20)
    assert neighbour_cell_ids(2**20, 2**20, 1, device="meta").ids.shape == (9, 2**20, 2**20)
    assert pixel_xy(2**20, 2**20, batch_size=2**10, device="meta").shape == (2**10, 2, 2**20, 2**20)
    # the bytes counted are those of the map's own dtype: bool validity (2**62.2 bytes; as int64 2**65), and
    # float32 coordinates where float64 ones (2**63 bytes) are more than a tensor can hold
    validity = neighbour_validity(2**30, 2**29, 1, device="meta")
    assert validity.dtype == torch.bool and validity.shape == (9, 2**30, 2**29)
    xy = pixel_xy(2**20, 2**20, batch_size=2**19, dtype=torch.float32, device="meta")
    assert xy.dtype == torch.float32 and xy.shape == (2**19, 2, 2**20, 2**20)
    with pytest.raises(
        ValueError, match=r"dtype torch\.float64, 9223372036854775808 bytes, more than a tensor"
    ):
        pixel_xy(2**20, 2**20, batch_size=2**19, dtype=torch.float64, device="meta")


_GRID_CALLS = {
    "grid_cell_ids": lambda device: grid_cell_ids(4, 4, 2, device=device),
    "neighbour_validity": lambda device: neighbour_validity(4, 4, 2, device=device),
    "neighbour_cell_ids": lambda device: neighbour_cell_ids(4, 4, 2, device=device),
    "pixel_xy": lambda device: pixel_xy(4, 4, device=device),
}


@pytest.mark.parametrize("name", sorted(_GRID_CALLS))
@pytest.mark.parametrize(
    ("device", "exc", "message"),
    [
        ("foo", ValueError, r"^device must name a device, such as 'cpu' or 'cuda:0', got 'foo' \(.*foo\)$"),
        ("cuda:-1", ValueError, r"^device must name a device, such as 'cpu' or 'cuda:0', got 'cuda:-1' \("),
        (-1, ValueError, r"^device must name a device, such as 'cpu' or 'cuda:0', got -1 \("),
        (3.0, TypeError, r"^device must be a torch\.device, a device string .* or None, got float 3\.0$"),
        (True, TypeError, r"^device must be a torch\.device, a device string .* or None, got bool True$"),
    ],
)
def test_a_bad_device_is_refused_naming_device(name: str, device: object, exc: type, message: str) -> None:
    """PyTorch's own errors (from the first tensor made there) named neither the argument nor the value: a
    RuntimeError "Expected one of cpu, cuda, ..." for a string, a TypeError of arange's signatures for a
    float."""
    with pytest.raises(exc, match=message):
        _GRID_CALLS[name](device)


def _tensors(out: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The tensors of a grid helper's output (``neighbour_cell_ids`` gives two)."""
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("name", sorted(_GRID_CALLS))
def test_devices_as_strings_and_torch_devices_are_accepted(name: str) -> None:
    expected = _tensors(_GRID_CALLS[name](None))
    for device in ("cpu", torch.device("cpu"), "cpu:0"):
        for got, exp in zip(_tensors(_GRID_CALLS[name](device)), expected, strict=True):
            assert got.device.type == "cpu" and torch.equal(got, exp)
    assert all(t.is_meta for t in _tensors(_GRID_CALLS[name]("meta")))


@pytest.mark.parametrize(
    ("dtype", "height", "fix"),
    [
        (torch.float32, 2**24 + 2, r"use dtype=torch\.float64$"),
        (torch.float16, 2**24 + 2, r"use dtype=torch\.float64$"),  # float32 would not do either
        (torch.bfloat16, 2**11 + 2, r"use dtype=torch\.float32 \(or wider\)$"),
        (
            torch.float64,
            2**53 + 2,
            r"no floating dtype holds them exactly \(torch\.float64 only up to 9007199254740992\): the "
            r"image is too large$",
        ),
        (torch.float32, 2**53 + 2, r"no floating dtype holds them exactly"),
    ],
)
def test_the_pixel_xy_precision_error_advises_a_dtype_that_holds_the_coordinates(
    dtype: torch.dtype, height: int, fix: str
) -> None:
    """The advice named float32 whatever the dtype: for float32 itself (use float32), and for float64 and
    sizes no dtype holds exactly. It names the narrowest wider dtype that holds the coordinates, or says the
    image is too large."""
    with pytest.raises(
        ValueError,
        match=rf"^dtype={dtype} holds integers exactly only up to \d+, but the coordinates .*: {fix}",
    ):
        pixel_xy(height, 1, dtype=dtype)


def test_the_pixel_xy_precision_advice_names_float32_exactly_at_its_limit() -> None:
    """Coordinates reaching exactly 2**24 are held by float32 (integers up to 2**24): the advice for a half
    type is float32, not float64."""
    with pytest.raises(ValueError, match=r"reach 16777216: use dtype=torch\.float32 \(or wider\)$"):
        pixel_xy(2**24 + 1, 1, dtype=torch.float16)
    assert pixel_xy(2**11 + 1, 1, dtype=torch.float16, device="meta").shape == (1, 2, 2**11 + 1, 1)


def test_the_validity_size_check_counts_all_nine_candidates() -> None:
    """``[9, H, W]`` bool is more than a tensor can hold although ``[H, W]`` would fit: a ValueError naming
    the sizes, not PyTorch's error from the meta tensor."""
    match = r"^height x width = 2147483648 x 1073741824 is too large: .*more than"
    with pytest.raises(ValueError, match=match):
        neighbour_validity(2**31, 2**30, 1, device="meta")


def test_the_neighbour_ids_size_check_counts_int64_bytes() -> None:
    """``[9, 2**30, 2**29]`` fits as bool (the validity) but not as int64 (the ids): the ids are refused."""
    assert neighbour_validity(2**30, 2**29, 1, device="meta").shape == (9, 2**30, 2**29)
    with pytest.raises(ValueError, match=r"dtype torch\.int64, \d+ bytes, more than a tensor can hold"):
        neighbour_cell_ids(2**30, 2**29, 1, device="meta")
