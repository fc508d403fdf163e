"""superpixel_pool / superpixel_unpool / SuperpixelPool against numpy loops; gradients; edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_ops import SuperpixelPool, superpixel_pool, superpixel_unpool
from tests.sparse_ops._reference import label_maps, ref_pool

BACKENDS = ["scatter", "sparse", "auto"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
@settings(max_examples=15)
@given(
    data=label_maps(),
    channels=st.integers(1, 3),
    masked=st.booleans(),
    seed=st.integers(0, 1000),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16]),
)
def test_pool_matches_reference(backend, reduce, data, channels, masked, seed, dtype):
    sp, n_s = data
    b, h, w = sp.shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, channels, h, w, generator=g, dtype=torch.float64).to(dtype)
    mask = torch.rand(b, h, w, generator=g) > 0.4 if masked else None
    pooled, counts = superpixel_pool(x, sp, n_s, reduce, mask=mask, return_counts=True, backend=backend)
    exp, exp_counts = ref_pool(
        x.double().numpy(), sp.numpy(), n_s, reduce, None if mask is None else mask.numpy()
    )
    assert pooled.shape == (b, n_s, channels) and pooled.dtype == x.dtype
    assert counts.dtype == torch.float32
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]
    np.testing.assert_allclose(pooled.double().numpy(), exp, rtol=tol, atol=tol * max(1, h * w))
    np.testing.assert_allclose(counts.numpy(), exp_counts)


@settings(max_examples=20)
@given(data=label_maps(), channels=st.integers(1, 3), seed=st.integers(0, 1000))
def test_unpool_matches_indexing(data, channels, seed):
    sp, n_s = data
    b = sp.shape[0]
    pooled = torch.randn(b, n_s, channels, generator=torch.Generator().manual_seed(seed))
    out = superpixel_unpool(pooled, sp)
    if b:
        expected = np.stack([pooled[i].numpy()[sp[i].numpy()] for i in range(b)])
    else:
        expected = np.zeros((0, *tuple(sp.shape[1:]), channels))
    np.testing.assert_array_equal(out.permute(0, 2, 3, 1).numpy(), expected)


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_pool_gradcheck(reduce, backend, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).to(device).requires_grad_()
    sp = torch.randint(0, 5, (2, 4, 4), generator=g).to(device)
    mask = (torch.rand(2, 4, 4, generator=g) > 0.3).to(device)
    f = lambda t: superpixel_pool(t, sp, 6, reduce, mask=mask, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    if reduce != "max":
        assert torch.autograd.gradgradcheck(f, (x,))


def test_unpool_gradcheck(device):
    g = torch.Generator().manual_seed(1)
    p = torch.randn(2, 5, 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    sp = torch.randint(0, 5, (2, 4, 4), generator=g).to(device)
    assert torch.autograd.gradcheck(lambda t: superpixel_unpool(t, sp), (p,))
    assert torch.autograd.gradgradcheck(lambda t: superpixel_unpool(t, sp), (p,))


def test_unpool_of_pool_is_uniformize():
    from sparse_ops import uniformize

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 6, 7, generator=g)
    sp = torch.randint(0, 10, (2, 6, 7), generator=g)
    torch.testing.assert_close(superpixel_unpool(superpixel_pool(x, sp, 10), sp), uniformize(x, sp, 10))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_sum_and_mean_accumulate_in_float32(dtype):
    x = torch.full((1, 1, 50, 100), 20.0, dtype=dtype)
    sp = torch.zeros(1, 50, 100, dtype=torch.long)
    mean, counts = superpixel_pool(x, sp, 1, return_counts=True)
    assert mean.dtype == dtype and counts.item() == 5000
    assert mean.item() == 20.0
    assert superpixel_pool(x.float(), sp, 1, "sum").item() == 100000.0


def test_empty_superpixels_pool_to_zero():
    x = -torch.rand(1, 2, 2, 2) - 1  # all negative: an empty max must still be 0, not -inf
    sp = torch.tensor([[[0, 0], [3, 3]]])
    for reduce in ("mean", "sum", "max"):
        out = superpixel_pool(x, sp, 5, reduce)
        assert torch.equal(out[0, 1], torch.zeros(2)) and torch.equal(out[0, 4], torch.zeros(2))
        assert torch.isfinite(out).all()


def test_module_equals_functional():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 5, generator=g)
    sp = torch.randint(0, 7, (2, 5, 5), generator=g)
    for reduce in ("mean", "sum", "max"):
        m = SuperpixelPool(7, reduce)
        torch.testing.assert_close(m(x, sp), superpixel_pool(x, sp, 7, reduce))
        assert reduce in repr(m)


def test_batch_zero():
    x = torch.randn(0, 3, 4, 4)
    sp = torch.zeros(0, 4, 4, dtype=torch.long)
    assert superpixel_pool(x, sp, 5).shape == (0, 5, 3)
    assert superpixel_unpool(torch.zeros(0, 5, 3), sp).shape == (0, 3, 4, 4)
