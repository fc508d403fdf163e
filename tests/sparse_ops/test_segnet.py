from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd import gradcheck

from sparse_ops import MaxPoolWithIndices, MaxUnpool, PooledWithIndices, max_pool2d_with_indices, max_unpool2d


def ref_unpool(values, indices, H, W):
    out = torch.zeros(*values.shape[:-2], H, W, dtype=values.dtype)
    v, i = (
        values.reshape(-1, values.shape[-2] * values.shape[-1]),
        indices.reshape(-1, indices.shape[-2] * indices.shape[-1]),
    )
    o = out.reshape(-1, H * W)
    for r in range(v.shape[0]):
        for u in range(v.shape[1]):
            o[r, i[r, u]] = v[r, u]
    return out


@given(
    H=st.integers(2, 13),
    W=st.integers(2, 13),
    k=st.integers(1, 3),
    s=st.integers(1, 3),
    pad=st.integers(0, 1),
    seed=st.integers(0, 1000),
    ceil=st.booleans(),
)
@settings(max_examples=40)
def test_matches_nn_maxunpool_and_reference(H, W, k, s, pad, seed, ceil):
    pad = min(pad, k // 2)
    if (H + 2 * pad) < k or (W + 2 * pad) < k:
        return
    x = torch.randn(2, 3, H, W, generator=torch.Generator().manual_seed(seed))
    p = max_pool2d_with_indices(x, k, s, pad, ceil_mode=ceil)
    ref_v, ref_i = nn.MaxPool2d(k, s, pad, ceil_mode=ceil, return_indices=True)(x)
    assert torch.equal(p.values, ref_v) and torch.equal(p.indices, ref_i) and p.input_size == (H, W)
    ours = max_unpool2d(p.values, p.indices, p.input_size)
    assert ours.shape == x.shape
    assert torch.equal(ours, ref_unpool(p.values, p.indices, H, W))
    if not ceil:  # nn.MaxUnpool2d's own size check is stricter with ceil_mode; compare with output_size
        expected = nn.MaxUnpool2d(k, s, pad)(p.values, p.indices, output_size=x.shape)
        assert torch.equal(ours, expected)


@pytest.mark.parametrize("H, W", [(7, 5), (9, 9), (4, 4), (3, 8)])
def test_odd_sizes_round_trip_modules(H, W, device):
    x = torch.randn(2, 4, H, W, device=device)
    pool, unpool = MaxPoolWithIndices(), MaxUnpool()
    p = pool(x)
    y = unpool(p)
    assert y.shape == x.shape and y.device.type == device.type
    # every kept maximum is at its original place, everything else is zero
    kept = y != 0
    assert torch.equal(y[kept], x[kept])
    assert int(kept.sum()) == p.values.numel() or (p.values == 0).any()
    torch.testing.assert_close(unpool(p.values, p.indices, p.input_size), y)
    torch.testing.assert_close(unpool(p.values, p), y)


def test_deterministic_mode():
    x = torch.randn(1, 2, 6, 5)
    p = max_pool2d_with_indices(x, 3, 1, 1)  # overlapping windows: repeated indices
    prev = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(RuntimeError, match="deterministic"):
            nn.MaxUnpool2d(3, 1, 1)(p.values, p.indices, output_size=x.shape)
        ours = max_unpool2d(p.values, p.indices, p.input_size)
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(ours, nn.MaxUnpool2d(3, 1, 1)(p.values, p.indices, output_size=x.shape))


def test_unbatched_and_dilation():
    x = torch.randn(3, 9, 8)
    p = max_pool2d_with_indices(x, 2, 2, dilation=2)
    v, i = nn.functional.max_pool2d(x, 2, 2, dilation=2, return_indices=True)
    assert torch.equal(p.values, v)
    assert torch.equal(max_unpool2d(p.values, p.indices, x.shape), ref_unpool(v, i, 9, 8))


def test_gradcheck_values():
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    p = max_pool2d_with_indices(x, 2)
    v = p.values.clone().requires_grad_()
    assert gradcheck(lambda v: max_unpool2d(v, p.indices, p.input_size), (v,))
    xx = x.clone().requires_grad_()
    assert gradcheck(lambda xx: MaxUnpool()(MaxPoolWithIndices(2)(xx)), (xx,))


def test_gradient_equals_nn_maxunpool_with_overlapping_windows():
    x = torch.randn(1, 2, 6, 5)
    p = max_pool2d_with_indices(x, 3, 1, 1)  # repeated indices: each copy gets the gradient (gather)
    g = torch.randn(1, 2, 6, 5)
    v1 = p.values.clone().requires_grad_()
    v2 = p.values.clone().requires_grad_()
    (max_unpool2d(v1, p.indices, p.input_size) * g).sum().backward()
    (nn.MaxUnpool2d(3, 1, 1)(v2, p.indices, output_size=x.shape) * g).sum().backward()
    assert torch.equal(v1.grad, v2.grad)


def test_worked_4x4_example(device):
    x = torch.tensor([[[[1.0, 5, 2, 0], [3, 4, 8, 1], [0, 2, 1, 1], [6, 1, 3, 7]]]], device=device)
    p = max_pool2d_with_indices(x)
    assert p.values.tolist() == [[[[5.0, 8], [6, 7]]]]
    assert p.indices.tolist() == [[[[1, 6], [12, 15]]]]
    y = max_unpool2d(p.values, p.indices, p.input_size)
    assert y.tolist() == [[[[0.0, 5, 0, 0], [0, 0, 8, 0], [0, 0, 0, 0], [6, 0, 0, 7]]]]
    assert torch.equal(y, nn.MaxUnpool2d(2)(p.values, p.indices))


def test_module_reprs():
    assert "kernel_size=(3, 3), stride=(1, 1)" in repr(MaxPoolWithIndices(3, 1, 1))
    assert "validate=True" in repr(MaxUnpool())
    assert isinstance(MaxPoolWithIndices()(torch.randn(1, 1, 4, 4)), PooledWithIndices)


def test_errors():
    x = torch.randn(1, 2, 5, 5)
    p = max_pool2d_with_indices(x)
    with pytest.raises(
        ValueError, match=r"indices must have the shape of values \(1, 2, 2, 2\), got shape \(1, 2, 4\)"
    ):
        max_unpool2d(p.values, p.indices.reshape(1, 2, 4), p.input_size)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H \* W\) = \[0, 4\)"):
        max_unpool2d(p.values, p.indices, (2, 2))
    with pytest.raises(ValueError, match="indices must lie in"):
        max_unpool2d(p.values, p.indices - 100, p.input_size)
    with pytest.raises(TypeError, match="indices must be a LongTensor"):
        max_unpool2d(p.values, p.indices.int(), p.input_size)
    with pytest.raises(TypeError, match="values must be a Tensor"):
        max_unpool2d(None, p.indices, p.input_size)
    with pytest.raises(TypeError, match="indices must be a Tensor"):
        max_unpool2d(p.values, None, p.input_size)
    with pytest.raises(ValueError, match="values must have shape"):
        max_unpool2d(p.values[0, 0], p.indices[0, 0], p.input_size)
    with pytest.raises(TypeError, match="output_size must be a sequence of ints"):
        max_unpool2d(p.values, p.indices, 5)
    with pytest.raises(ValueError, match="output_size must end with a positive"):
        max_unpool2d(p.values, p.indices, (0, 5))
    with pytest.raises(ValueError, match="x must have shape"):
        max_pool2d_with_indices(torch.randn(5, 5))
    with pytest.raises(TypeError, match="x must be a floating tensor"):
        max_pool2d_with_indices(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="x must be a Tensor"):
        max_pool2d_with_indices([1.0])
    with pytest.raises(ValueError, match="kernel_size must be >= 1"):
        MaxPoolWithIndices(0)
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints"):
        MaxPoolWithIndices(2, stride=(1, 2, 3))
    with pytest.raises(ValueError, match="padding must be >= 0"):
        max_pool2d_with_indices(x, 2, padding=-1)
    with pytest.raises(TypeError, match="indices must be None when x is a PooledWithIndices"):
        MaxUnpool()(p, p.indices)
    with pytest.raises(TypeError, match="MaxUnpool needs indices and output_size"):
        MaxUnpool()(p.values, p.indices)


def test_cuda_device_mismatch_error():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    p = max_pool2d_with_indices(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match="indices must be on the device of values"):
        max_unpool2d(p.values.cuda(), p.indices, p.input_size)
