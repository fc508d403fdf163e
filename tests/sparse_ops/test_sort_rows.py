"""``sparse_ops._layout.sort_rows``: the stable row sort of the id layouts (``SuperpixelAssignment``, its
setup, and ``relabel_contiguous``) gives exactly ``torch.sort(keys, dim=1, stable=True)``, through each of its
paths: rows of at least ``RADIX_SORT_MIN`` keys one by one, a batch of shorter rows in two passes over the
flat batch, and the 2-D sort itself below that size."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_ops._layout as layout
from sparse_ops import SuperpixelAssignment, relabel_contiguous
from sparse_ops._layout import RADIX_SORT_MIN, sort_rows

INTEGER_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]

#: (rows, n): each path of sort_rows, and the edges between them
SHAPES = [
    (1, RADIX_SORT_MIN),  # one row long enough: sorted alone
    (3, RADIX_SORT_MIN + 1),  # rows one by one
    (2, RADIX_SORT_MIN // 2),  # exactly RADIX_SORT_MIN keys in all: the two flat passes
    (5, 7001),  # the flat passes, rows not a power of two long
    (1, RADIX_SORT_MIN - 1),  # one key too few: the 2-D sort
    (64, 100),  # many short rows: the flat passes
    (0, 5),
    (4, 0),
]


def _keys(rows: int, n: int, dtype: torch.dtype, distinct: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    info = torch.iinfo(dtype)
    if distinct >= 2**62:  # the whole range of the dtype, its extremes included
        keys = torch.randint(info.min, info.max, (rows, n), generator=g, dtype=torch.int64)
        if keys.numel():
            keys.view(-1)[: min(4, keys.numel())] = torch.tensor([info.min, info.max, info.min, info.max])[
                : min(4, keys.numel())
            ]
        return keys.to(dtype)
    low = max(info.min, -distinct // 2)
    return torch.randint(low, low + distinct, (rows, n), generator=g, dtype=torch.int64).to(dtype)


@pytest.mark.parametrize(("rows", "n"), SHAPES)
@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
@pytest.mark.parametrize("distinct", [1, 3, 200, 2**62])
def test_sort_rows_is_the_stable_2d_sort(rows: int, n: int, dtype: torch.dtype, distinct: int) -> None:
    """The same values and the same order, ties in their original order, for every integer dtype, few or
    many distinct keys, the dtype's extremes (int64: -2**63 and 2**63 - 1), and empty shapes."""
    if distinct >= 2**62 and dtype == torch.uint8:
        distinct = 256
    keys = _keys(rows, n, dtype, distinct, seed=rows * 1000 + n)
    want_values, want_order = torch.sort(keys, dim=1, stable=True)
    values, order = sort_rows(keys)
    assert values.dtype == keys.dtype and order.dtype == torch.long
    assert torch.equal(values, want_values) and torch.equal(order, want_order)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6),
    n=st.integers(1, 3 * RADIX_SORT_MIN // 2),
    distinct=st.integers(1, 10**6),
    seed=st.integers(0, 2**31 - 1),
)
def test_sort_rows_property(rows: int, n: int, distinct: int, seed: int) -> None:
    keys = _keys(rows, n, torch.int64, distinct, seed)
    want_values, want_order = torch.sort(keys, dim=1, stable=True)
    values, order = sort_rows(keys)
    assert torch.equal(values, want_values) and torch.equal(order, want_order)


def test_a_non_contiguous_batch_sorts_as_its_copy() -> None:
    keys = _keys(3, 2 * RADIX_SORT_MIN, torch.int64, 50, seed=3)[:, ::2]
    assert not keys.is_contiguous()
    want = torch.sort(keys, dim=1, stable=True)
    values, order = sort_rows(keys)
    assert torch.equal(values, want.values) and torch.equal(order, want.indices)


@pytest.mark.parametrize(
    ("rows", "n", "one_d_sorts"), [(4, RADIX_SORT_MIN, 4), (2, RADIX_SORT_MIN // 2, 2), (2, 100, 0)]
)
def test_each_path_runs_1d_sorts_where_it_should(rows: int, n: int, one_d_sorts: int) -> None:
    """Rows of at least RADIX_SORT_MIN keys: one 1-D sort each; a batch of shorter rows with that many keys in
    all: two 1-D sorts (by key, then by row); fewer keys: the 2-D sort alone (no 1-D sort)."""
    real = torch.sort
    dims: list[int] = []

    def counted(x: torch.Tensor, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        dims.append(x.dim())
        return real(x, *args, **kwargs)

    keys = _keys(rows, n, torch.int64, 100, seed=1)
    with mock.patch.object(layout.torch, "sort", counted):
        sort_rows(keys)
    assert dims.count(1) == one_d_sorts and dims.count(2) == (0 if one_d_sorts else 1)


def test_the_layouts_are_those_of_the_2d_sort() -> None:
    """An assignment and a relabelling built with the 2-D sort (the code before) are the same."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (3, 160, 170), generator=g)
    with mock.patch.object(layout, "sort_rows", lambda keys: torch.sort(keys, dim=1, stable=True)):
        before = SuperpixelAssignment(ids, 300)
        relabelled_before = relabel_contiguous(ids * 7 - 5)
    after = SuperpixelAssignment(ids, 300)
    relabelled_after = relabel_contiguous(ids * 7 - 5)
    x = torch.randn(3, 4, 160, 170, generator=g)
    assert torch.equal(before.uniformize(x), after.uniformize(x))
    assert torch.equal(before.counts, after.counts)
    assert all(torch.equal(a, b) for a, b in zip(relabelled_before, relabelled_after, strict=True))
