"""relabel_contiguous against a per-image numpy.unique loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_ops import relabel_contiguous, uniformize


@settings(max_examples=30)
@given(
    b=st.integers(0, 3),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    low=st.integers(-50, 50),
    span=st.integers(1, 1000),
    seed=st.integers(0, 10_000),
)
def test_matches_numpy_unique(b, h, w, low, span, seed):
    g = np.random.default_rng(seed)
    sp = g.integers(low, low + span, size=(b, h, w))
    ids, k = relabel_contiguous(torch.from_numpy(sp))
    assert ids.dtype == torch.long and k.dtype == torch.long and ids.shape == (b, h, w)
    for i in range(b):
        uniq, inv = np.unique(sp[i], return_inverse=True)
        np.testing.assert_array_equal(ids[i].numpy(), inv.reshape(h, w))
        assert k[i] == len(uniq)


def test_slic_start_label_one_and_channel_dim(device):
    sp = torch.tensor([[[1, 1, 2], [4, 4, 2]]], dtype=torch.int32, device=device)[:, None]
    ids, k = relabel_contiguous(sp)
    assert ids.tolist() == [[[0, 0, 1], [2, 2, 1]]] and k.tolist() == [3]
    x = torch.randn(1, 2, 2, 3, device=device)
    torch.testing.assert_close(uniformize(x, ids, k), uniformize(x, sp))


def test_errors():
    with pytest.raises(TypeError, match="integer dtype"):
        relabel_contiguous(torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"shape \[B, H, W\]"):
        relabel_contiguous(torch.zeros(2, 2, dtype=torch.long))
