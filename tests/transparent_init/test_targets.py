"""``selection_weight``: the selection matrix, its use as a transparent stack's target, and its errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from transparent_init import TransparentConv1x1, TransparentLinear, selection_weight


@given(
    st.integers(1, 12).flatmap(lambda n: st.tuples(st.just(n), st.lists(st.integers(0, n - 1), min_size=1)))
)
def test_selects_the_given_channels(case: tuple[int, list[int]]) -> None:
    n, idx = case
    x = torch.randn(5, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    t = selection_weight(n, idx, dtype=torch.float64)
    assert t.shape == (len(idx), n)
    assert torch.equal(x @ t.T, x[:, idx])  # exact: one 1 per row


def test_forms_of_indices_agree() -> None:
    ref = selection_weight(6, [3, 4, 5])
    forms = (range(3, 6), slice(3, None), torch.tensor([3, 4, 5]), (3, 4, 5), np.array([3, 4, 5], np.uint8))
    for form in forms:
        assert torch.equal(selection_weight(6, form), ref)
    assert torch.equal(selection_weight(4, slice(None, None, 2)), torch.eye(4)[[0, 2]])


def test_dtype_and_device(device: torch.device) -> None:
    t = selection_weight(3, [1], dtype=torch.float64, device=device)
    assert t.dtype == torch.float64 and t.device.type == device.type
    assert selection_weight(3, [1]).dtype == torch.get_default_dtype()


@pytest.mark.parametrize("activation", ["relu", None])
def test_transparent_fusion_starts_as_take_second_half(activation: str | None) -> None:
    """The paper's fusion: ``[S, U] -> U`` exactly at initialization (up to float32 rounding)."""
    c = 5
    fuse = TransparentConv1x1(
        2 * c,
        [2 * c],
        c,
        activation=activation,
        target_weight=selection_weight(2 * c, range(c, 2 * c)),
        generator=0,
    )
    x = torch.randn(2, 2 * c, 4, 3) * 10
    with torch.no_grad():
        assert (fuse(x) - x[:, c:]).abs().max() < 1e-4
    lin = TransparentLinear(4, [4], 2, target_weight=selection_weight(4, [0, 0]), generator=1)
    z = torch.randn(7, 4)
    with torch.no_grad():
        assert (lin(z) - z[:, [0, 0]]).abs().max() < 1e-5


def test_errors() -> None:
    with pytest.raises(TypeError, match="in_features must be an int"):
        selection_weight(2.0, [0])  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(ValueError, match=r"in_features must be .*>= 1, got 0"):
        selection_weight(0, [0])
    with pytest.raises(ValueError, match=r"\[-3, 3\), got \[3\]"):
        selection_weight(3, [0, 3])
    with pytest.raises(ValueError, match=r"\[-3, 3\), got \[-4\]"):
        selection_weight(3, [-4])
    with pytest.raises(ValueError, match="indices must lie in int64, got 18446744073709551615"):
        selection_weight(3, np.array([2**64 - 1], dtype=np.uint64))  # would wrap to -1: the last channel
    with pytest.raises(ValueError, match="at least one"):
        selection_weight(3, slice(3, None))
    with pytest.raises(TypeError, match=r"indices\[1\] must be an int"):
        selection_weight(3, [0, 1.0])  # type: ignore[list-item]  # the wrong type is the point
    with pytest.raises(TypeError, match=r"indices\[0\] must be an int"):
        selection_weight(3, [True])
    with pytest.raises(TypeError, match="1-D integer tensor"):
        selection_weight(3, torch.tensor([0.0]))
    with pytest.raises(TypeError, match="1-D integer array, got dtype float64"):
        selection_weight(3, np.array([0.0]))
    # the array the user passed is named, not the tensor it was converted to ("tensor, got dtype torch.int64")
    with pytest.raises(
        TypeError, match=r"indices must be a 1-D integer array, got dtype int64 and shape \[1, 2\]"
    ):
        selection_weight(3, np.array([[0, 1]], dtype=np.int64))
    with pytest.raises(
        TypeError, match=r"indices must be a 1-D integer array, got dtype uint8 and shape \[\]"
    ):
        selection_weight(3, np.array(1, dtype=np.uint8))
    with pytest.raises(TypeError, match="sequence of ints"):
        selection_weight(3, "01")  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(TypeError, match="sequence of ints"):
        selection_weight(3, 1)  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(TypeError, match=r"floating torch\.dtype"):
        selection_weight(3, [0], dtype=torch.int64)


def test_zero_dim_integer_tensors_are_indices_and_slice_errors_name_indices() -> None:
    """Found by fuzzing the API: a list of 0-d integer tensors (``[t.argmax()]``) was refused although every
    other integer argument takes them, and a bad slice raised Python's bare "slice step cannot be zero" /
    "slice indices must be integers" without naming ``indices``."""
    tensor_ints = [torch.tensor(2), np.int64(0)]
    assert torch.equal(selection_weight(3, tensor_ints), selection_weight(3, [2, 0]))  # type: ignore[arg-type]
    for bad in ([torch.tensor(True)], [torch.tensor([1])], [torch.tensor(1.0)]):
        with pytest.raises(TypeError, match=r"indices\[0\] must be an int, got Tensor"):
            selection_weight(3, bad)  # type: ignore[arg-type]  # the wrong type is the point
    with pytest.raises(ValueError, match=r"indices must be a slice of ints with a non-zero step, got slice"):
        selection_weight(3, slice(None, None, 0))
    with pytest.raises(TypeError, match=r"indices must be a slice of ints .*, got slice\(0\.5, 2, None\)"):
        selection_weight(3, slice(0.5, 2))


def test_index_tensors_on_meta_are_named() -> None:
    """Found by fuzzing the API: under ``with torch.device("meta")`` an index tensor holds no values and
    reached PyTorch's "Cannot copy out of meta tensor" (a 1-D tensor) or "Tensor.item() cannot be called on
    meta tensors" (a list of 0-d tensors), naming no argument; a list of ints still works there."""
    with torch.device("meta"):
        with pytest.raises(
            ValueError,
            match=r"indices must be a 1-D integer tensor, got a tensor on the meta device \(shape \[2\], "
            r"no values; .* or pass a list of ints",
        ):
            selection_weight(4, torch.tensor([2, 3]))
        with pytest.raises(ValueError, match=r"indices\[0\] must be an int, got a tensor on the meta device"):
            selection_weight(4, [torch.tensor(2)])  # type: ignore[list-item]  # 0-d tensors are ints
        assert selection_weight(4, [2, 3]).is_meta


def test_a_range_is_checked_before_it_is_expanded() -> None:
    """A range was expanded to a list before the bounds check: ``range(3 * 10**6)`` took 1 s and 150 MB to be
    refused, ``range(10**9)`` minutes and gigabytes; its ends are checked first now."""
    # the first one is cheap to expand: the unfixed code fails there (its message names a list), not slowly
    for big in (range(3 * 10**6), range(10**9), range(10**30), range(-(10**9), 0), range(3, -(10**9), -1)):
        with pytest.raises(
            ValueError, match=r"indices must lie in \[-in_features, in_features\) = \[-4, 4\), got range"
        ):
            selection_weight(4, big)
    assert torch.equal(selection_weight(4, range(-1, -5, -1)), selection_weight(4, [3, 2, 1, 0]))
    assert torch.equal(selection_weight(4, range(-4, 4, 3)), selection_weight(4, [0, 3, 2]))
    with pytest.raises(ValueError, match="at least one"):
        selection_weight(4, range(2, 2))


def test_raises_section_states_the_accepted_range() -> None:
    """The Raises section said ``[0, in_features)``; negative indices count from the end (Args, code)."""
    doc = " ".join((selection_weight.__doc__ or "").split())
    assert "an index outside ``[-in_features, in_features)``" in doc and "[0, in_features)" not in doc


def test_negative_indices_count_from_the_end() -> None:
    """``y = x[..., indices]``: -1 is the last channel, as in indexing (lists, tensors and arrays alike)."""
    x = torch.randn(5, 4)
    for idx in ([-1, 0, -4], torch.tensor([-1, 0, -4]), np.array([-1, 0, -4])):
        t = selection_weight(4, idx)
        assert torch.equal(x @ t.T, x[..., [-1, 0, -4]])


def test_an_index_tensor_is_checked_as_a_tensor() -> None:
    """An index tensor (or array) was turned into a list of Python ints before its bounds check: ten million
    indices took about 2 s and hundreds of megabytes to be refused. It is checked as a tensor now: refusing a
    million indices makes no Python int (the list took about 36 MB; what is traced now is numpy's int64 copy
    of an int32 array, 8 MB)."""
    import tracemalloc

    arrays = ((torch.arange(10**6) + 1000, 1000), (np.arange(10**6, dtype=np.int32) - 10**7, -(10**7)))
    for big, first in arrays:
        tracemalloc.start()
        try:
            with pytest.raises(ValueError, match=rf"\[-4, 4\), got \[{first}, {first + 1}, {first + 2}, "):
                selection_weight(4, big)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 12 * 2**20, f"{peak} bytes on the Python heap"
    # uint64 above the int64 range: named as the array's is, not wrapped to a negative (valid) index
    with pytest.raises(ValueError, match="indices must lie in int64, got 18446744073709551615"):
        selection_weight(3, torch.tensor([0, 2**64 - 1], dtype=torch.uint64))
    for small, same in (([2, 0], [2, 0]), ([-1, 1], [2, 1])):  # small dtypes, negative ones from the end
        dtype = torch.uint64 if min(small) >= 0 else torch.int8
        assert torch.equal(selection_weight(3, torch.tensor(small, dtype=dtype)), selection_weight(3, same))


@pytest.mark.parametrize(
    "form",
    [list, tuple, torch.tensor, np.array, lambda idx: range(idx[0], idx[-1] + 1)],
    ids=["list", "tuple", "tensor", "array", "range"],
)
def test_the_first_index_past_either_end_is_refused_in_every_form(form) -> None:  # type: ignore[no-untyped-def]
    """``[-in_features, in_features)`` exactly, for every form of ``indices``: the ends are selected, the
    first index past either end is refused (an index tensor or array equal to ``in_features`` selected
    column 0 through the ``% in_features`` of negative indices; a range ending at it was expanded before the
    refusal)."""
    assert torch.equal(selection_weight(4, form([-4, -3, -2, -1, 0, 1, 2, 3])), torch.eye(4).repeat(2, 1))
    for past, bad in (([3, 4], 4), ([-5, -4], -5)):
        named = r"range\(" if isinstance(form(past), range) else re.escape(f"[{bad}]")
        with pytest.raises(ValueError, match=r"\[-4, 4\), got " + named):
            selection_weight(4, form(past))


def test_numpy_index_arrays_at_the_edges_of_their_checks() -> None:
    """Mutation pass: 2**63 is the first uint64 value that would wrap (named as passed), and a numpy bool
    array is not an index array (it would select channels 0 / 1)."""
    with pytest.raises(ValueError, match="indices must lie in int64, got 9223372036854775808"):
        selection_weight(3, np.array([2**63], dtype=np.uint64))
    # the largest uint64 that fits int64 does not wrap: refused by the bounds check, as itself
    with pytest.raises(ValueError, match=r"\[-3, 3\), got \[9223372036854775807\]"):
        selection_weight(3, np.array([2**63 - 1], dtype=np.uint64))
    with pytest.raises(TypeError, match="indices must be a 1-D integer array, got dtype bool"):
        selection_weight(3, np.array([True, False]))


def test_a_bool_index_tensor_is_not_an_index_tensor() -> None:
    """Mutation pass: a 1-D bool tensor is a mask, not indices (converted to int64 it would select channels
    0 / 1), refused as the numpy bool array is."""
    with pytest.raises(
        TypeError, match=r"indices must be a 1-D integer tensor, got dtype torch.bool and shape \[2\]"
    ):
        selection_weight(3, torch.tensor([True, False]))


def test_selection_weight_takes_the_dtypes_a_stack_takes() -> None:
    """float8 made a selection matrix where ``TransparentLinear(..., dtype=float8)`` and ``pixel_xy`` refuse
    it: the dtypes are those a stack takes, with the same message."""
    f8 = torch.float8_e4m3fn
    said = r"dtype must be None or a floating torch.dtype in \(torch.float16"
    with pytest.raises(TypeError, match=said) as info:
        selection_weight(3, [1], dtype=f8)
    with pytest.raises(TypeError) as stack:
        TransparentLinear(2, [2], dtype=f8)
    assert str(info.value) == str(stack.value)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert selection_weight(3, [1], dtype=dtype).dtype == dtype
    before = torch.get_default_dtype()
    try:  # no dtype: the default one
        torch.set_default_dtype(torch.float64)
        assert selection_weight(3, [1]).dtype == torch.float64
    finally:
        torch.set_default_dtype(before)
    with pytest.raises(TypeError, match=r"got dtype \(torch\.int64\)"):
        selection_weight(3, [1], dtype=torch.int64)


def test_a_matrix_of_just_over_int64_bytes_is_named() -> None:
    """``check_matrix_size`` refuses any size in bytes above ``2**63 - 1``, also just above it (1 x 2**61
    float32 entries: 2**63 bytes), with the named ValueError instead of PyTorch's own error (mutant: the
    bound doubled let that size through to ``torch.zeros``)."""
    with pytest.raises(ValueError, match=r"would be a 1 x 2305843009213693952 matrix of torch\.float32"):
        selection_weight(2**61, [0], dtype=torch.float32)


def test_a_zero_dim_index_tensor_is_not_an_index_tensor() -> None:
    """Kills X08: ``indices`` as a tensor must be 1-D (the docstring: ``LongTensor[out]``); a bare 0-d
    tensor is refused with the named TypeError, not PyTorch's ``len() of a 0-d tensor``."""
    match = r"indices must be a 1-D integer tensor, got dtype torch.int64 and shape \[\]"
    with pytest.raises(TypeError, match=match):
        selection_weight(3, torch.tensor(2))
