"""relabel_contiguous against a per-image numpy.unique loop, over the whole int64 range."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sparse_ops import relabel_contiguous, uniformize
from tests.hypothesis_budget import budget
from tests.op_tester import Case, OpTester

INT64 = st.integers(-(2**63), 2**63 - 1)


class TestRelabelContiguous(OpTester):
    dtypes = ()  # integer data only
    differentiable = False
    half_precision = False
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({0: lambda s: s.float()}, TypeError, "superpixels must have an integer dtype"),
        (
            {0: lambda s: s[0, 0]},
            ValueError,
            r"superpixels must have shape \[B, H, W\], \[B, 1, H, W\] or \[H, W\], got shape \(3,\)",
        ),
        ({0: lambda s: s[:, None].expand(-1, 2, -1, -1)}, ValueError, r"got shape \(3, 2, 2, 3\)"),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return relabel_contiguous(*args, **kwargs)

    def reference(self, sp: torch.Tensor, **_: Any) -> Any:
        arr = sp.cpu().numpy().reshape(sp.shape[0], -1)
        ids, counts = [], []
        for row in arr:
            uniq, inverse = np.unique(row, return_inverse=True)
            ids.append(inverse.reshape(sp.shape[1:]))
            counts.append(len(uniq))
        return torch.from_numpy(np.stack(ids).astype(np.int64)).view(sp.shape), torch.tensor(counts)

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        raise NotImplementedError  # drawn by test_matches_numpy_unique below (no floating data)

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        sp = torch.tensor([[[5, 5, 9], [1, 9, 9]], [[3, 3, 3], [-(2**62), 2**62, 3]], [[0, 1, 2], [2, 1, 0]]])
        return Case((sp.to(device),))


@settings(max_examples=budget(40))
@given(
    b=st.integers(1, 3),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    values=st.lists(INT64, min_size=1, max_size=5),
    seed=st.integers(0, 10_000),
)
def test_matches_numpy_unique_over_the_int64_range(
    b: int, h: int, w: int, values: list[int], seed: int
) -> None:
    pool = np.array(values, dtype=np.int64)
    sp = torch.from_numpy(pool[np.random.default_rng(seed).integers(0, len(pool), size=(b, h, w))])
    ids, k = relabel_contiguous(sp)
    expected_ids, expected_k = TestRelabelContiguous().reference(sp)
    assert ids.dtype == torch.long and torch.equal(ids, expected_ids) and torch.equal(k, expected_k)


def test_slic_start_label_one_and_channel_dim(device: torch.device) -> None:
    sp = torch.tensor([[[1, 1, 2], [4, 4, 2]]], dtype=torch.int32, device=device)[:, None]
    ids, k = relabel_contiguous(sp)
    assert ids.tolist() == [[[[0, 0, 1], [2, 2, 1]]]] and k.tolist() == [3]  # the channel dim kept
    x = torch.randn(1, 2, 2, 3, device=device)
    torch.testing.assert_close(uniformize(x, ids, k), uniformize(x, sp))


@pytest.mark.parametrize("layout", ["B,H,W", "B,1,H,W", "H,W"])
def test_the_result_keeps_the_layout_of_the_input_as_enforce_connectivity(layout: str) -> None:
    """The two maps from ids to ids take and give the same layouts (one image ``[H, W]``, as skimage's
    ``slic`` returns it, gives ``[H, W]`` ids and a 0-dim count)."""
    from sparse_ops import enforce_connectivity

    sp = torch.tensor([[[7, 7, 3], [3, 3, 3]], [[2, 5, 5], [2, 2, 5]]])  # connected ids, in first-pixel order
    x = {"B,H,W": sp, "B,1,H,W": sp[:, None], "H,W": sp[1]}[layout]
    ids, k = relabel_contiguous(x)
    assert ids.shape == x.shape and k.shape == (() if layout == "H,W" else (2,))
    expected_ids, expected_k = TestRelabelContiguous().reference(x.reshape(-1, *x.shape[-2:]))
    assert torch.equal(ids, expected_ids.view(x.shape)) and torch.equal(k, expected_k.view(k.shape))
    c_ids, c_k = enforce_connectivity(x)
    assert c_ids.shape == ids.shape and c_k.shape == k.shape and torch.equal(c_k, k)


def test_batch_zero_and_empty_images() -> None:
    ids, k = relabel_contiguous(torch.zeros(2, 0, 3, dtype=torch.long))
    assert ids.shape == (2, 0, 3) and k.tolist() == [0, 0]
    with pytest.raises(TypeError, match=r"superpixels must be an integer torch\.Tensor"):
        relabel_contiguous([[1]])  # type: ignore[arg-type]  # the error under test


@settings(max_examples=budget(30))
@given(
    values=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=5),
    seed=st.integers(0, 10_000),
)
@example(values=[2**63 + 5, 1, 7], seed=0)  # above 2**63 (negative as int64) with small ids, every run
def test_uint64_ids_keep_their_order_over_the_whole_range(values: list[int], seed: int) -> None:
    pool = np.array(values, dtype=np.uint64)
    labels = pool[np.random.default_rng(seed).integers(0, len(pool), size=(2, 3, 4))]
    ids, k = relabel_contiguous(torch.from_numpy(labels.astype(np.int64, copy=True)).view(torch.uint64))
    for b in range(2):
        distinct, expected = np.unique(labels[b], return_inverse=True)  # np.unique sorts uint64 as unsigned
        assert ids[b].flatten().tolist() == expected.ravel().tolist()
        assert int(k[b]) == len(distinct)
