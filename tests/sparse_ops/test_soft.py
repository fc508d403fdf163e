from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

from sparse_ops import (
    SoftUniformize,
    grid_shape,
    normalize_assoc,
    soft_superpixel_pool,
    soft_superpixel_unpool,
    soft_uniformize,
)

from ._soft_reference import ref_pool, ref_unpool


@st.composite
def problems(draw, max_hw: int = 11):
    B = draw(st.integers(1, 2))
    C = draw(st.integers(1, 3))
    H = draw(st.integers(1, max_hw))
    W = draw(st.integers(1, max_hw))
    S = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    sparse = draw(st.booleans())  # exercise exact zeros (cells without mass, pixels without valid mass)
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    a = torch.rand(B, 9, H, W, generator=g, dtype=torch.float64)
    if sparse:
        a = a * (torch.rand(B, 9, H, W, generator=g, dtype=torch.float64) < 0.3)
    return f, a, S


@given(problems(), st.booleans())
@settings(max_examples=30)
def test_pool_matches_loop_reference(problem, renormalize):
    f, a, S = problem
    out = soft_superpixel_pool(f, a, S, renormalize=renormalize)
    assert out.shape == (f.shape[0], f.shape[1], *grid_shape(*f.shape[-2:], S))
    torch.testing.assert_close(out, ref_pool(f, a, S, renormalize))


@given(problems(), st.booleans())
@settings(max_examples=30)
def test_unpool_matches_loop_reference(problem, renormalize):
    f, a, S = problem
    n_h, n_w = grid_shape(*f.shape[-2:], S)
    c = torch.randn(f.shape[0], f.shape[1], n_h, n_w, dtype=torch.float64)
    out = soft_superpixel_unpool(c, a, S, renormalize=renormalize)
    torch.testing.assert_close(out, ref_unpool(c, a, S, renormalize))


@given(problems())
@settings(max_examples=20)
def test_uniformize_is_unpool_of_pool(problem):
    f, a, S = problem
    expected = soft_superpixel_unpool(soft_superpixel_pool(f, a, S), a, S)
    torch.testing.assert_close(soft_uniformize(f, a, S), expected)
    torch.testing.assert_close(SoftUniformize(S)(f, a), expected)


@given(H=st.integers(1, 20), W=st.integers(1, 20), S=st.integers(2, 7), seed=st.integers(0, 1000))
@settings(max_examples=30)
def test_ones_round_trip_softmax_assoc(H, W, S, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.softmax(3 * torch.randn(2, 9, H, W, generator=g), dim=1)
    ones = torch.ones(2, 1, H, W)
    out = soft_superpixel_unpool(soft_superpixel_pool(ones, a, S), a, S)
    torch.testing.assert_close(out, ones)


def test_ones_round_trip_without_renormalize_when_valid_rows_sum_to_one():
    H, W, S = 9, 10, 4
    a = normalize_assoc(torch.softmax(torch.randn(2, 9, H, W), dim=1), S)  # no invalid mass, rows sum to 1
    ones = torch.ones(2, 3, H, W)
    out = soft_uniformize(ones, a, S, renormalize=False)
    torch.testing.assert_close(out, ones)
    # whereas raw softmax rows lose their out-of-image mass at the border
    raw = torch.softmax(torch.randn(2, 9, H, W), dim=1)
    assert soft_uniformize(ones, raw, S, renormalize=False)[..., 0, 0].max() < 1


def test_normalize_assoc_rows(device):
    a = torch.rand(2, 9, 7, 6, device=device)
    q = normalize_assoc(a, 3)
    torch.testing.assert_close(q.sum(1), torch.ones(2, 7, 6, device=device))
    assert (q[:, :3, :3] == 0).all()  # top row of cells has no upper neighbours
    z = normalize_assoc(torch.zeros(1, 9, 3, 3), 2)
    assert torch.equal(z, torch.zeros(1, 9, 3, 3))


def test_hard_one_hot_assoc_is_plain_cell_average():
    f = torch.arange(30.0).reshape(1, 1, 5, 6)
    a = torch.zeros(1, 9, 5, 6)
    a[:, 4] = 1
    c = soft_superpixel_pool(f, a, 4)
    # cell (0,0): rows 0-3, cols 0-3 ; cell (1,1): rows 4, cols 4-5 (partial)
    assert c[0, 0, 0, 0] == f[0, 0, :4, :4].mean()
    assert c[0, 0, 1, 1] == f[0, 0, 4:, 4:].mean()
    out = soft_superpixel_unpool(c, a, 4)
    assert out[0, 0, 4, 5] == f[0, 0, 4:, 4:].mean()


def test_empty_cell_centre_is_zero():
    a = torch.zeros(1, 9, 4, 4)
    a[:, 4] = 1
    a[:, 4, :2, 2:] = 0  # pixels of cell 1 send everything to their left neighbour (cell 0)
    a[:, 3, :2, 2:] = 1
    c = soft_superpixel_pool(torch.ones(1, 2, 4, 4), a, 2)
    assert torch.equal(c[0, :, 0, 1], torch.zeros(2))
    assert torch.equal(c[0, :, 0, 0], torch.ones(2))


def test_device_and_dtype(device, dtype):
    f = torch.randn(2, 3, 9, 7, device=device, dtype=dtype)
    a = torch.softmax(torch.randn(2, 9, 9, 7, device=device, dtype=dtype), dim=1)
    out = soft_uniformize(f, a, 4)
    assert out.dtype == dtype and out.device.type == device.type
    ref = ref_unpool(ref_pool(f, a, 4), a, 4)
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-4, atol=1e-5)


def test_mixed_dtypes_promote():
    f = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    a = torch.softmax(torch.randn(1, 9, 4, 4), dim=1)
    assert soft_superpixel_pool(f, a, 2).dtype == torch.float64


@pytest.mark.parametrize("renormalize", [True, False])
def test_gradcheck_features_and_assoc(renormalize):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    a = (torch.rand(1, 9, 4, 5, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    n_h, n_w = grid_shape(4, 5, 3)  # partial border cells
    c = torch.randn(1, 2, n_h, n_w, generator=g, dtype=torch.float64, requires_grad=True)
    kw = {"renormalize": renormalize}
    assert gradcheck(lambda f, a: soft_superpixel_pool(f, a, 3, **kw), (f, a))
    assert gradcheck(lambda c, a: soft_superpixel_unpool(c, a, 3, **kw), (c, a))
    assert gradcheck(lambda f, a: soft_uniformize(f, a, 3, **kw), (f, a))
    assert gradgradcheck(lambda f, a: soft_uniformize(f, a, 3, **kw), (f, a), fast_mode=True)


def test_gradient_reaches_assoc_through_softmax():
    logits = torch.randn(1, 9, 8, 8, requires_grad=True)
    x = torch.randn(1, 3, 8, 8)
    soft_uniformize(x, torch.softmax(logits, 1), 4).square().sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_module_repr_and_errors():
    assert "cell_size=4" in repr(SoftUniformize(4))
    with pytest.raises(ValueError, match="cell_size must be >= 1"):
        SoftUniformize(0)


@pytest.mark.parametrize(
    "f_shape, a_shape, exc, msg",
    [
        ((2, 3, 4), (2, 9, 4, 4), ValueError, "features must have shape"),
        ((2, 3, 4, 4), (2, 8, 4, 4), ValueError, "assoc must have 9 channels"),
        ((2, 3, 4, 4), (1, 9, 4, 4), ValueError, "must agree in batch size and spatial size"),
        ((2, 3, 4, 5), (2, 9, 4, 4), ValueError, "must agree in batch size and spatial size"),
        ((2, 3, 4, 4), (2, 9, 4), ValueError, "assoc must have shape"),
    ],
)
def test_pool_shape_errors(f_shape, a_shape, exc, msg):
    with pytest.raises(exc, match=msg):
        soft_superpixel_pool(torch.zeros(f_shape), torch.zeros(a_shape), 2)


def test_type_errors():
    a = torch.zeros(1, 9, 4, 4)
    with pytest.raises(TypeError, match="features must be a Tensor, got list"):
        soft_superpixel_pool([1.0], a, 2)
    with pytest.raises(TypeError, match="features must be a floating tensor, got dtype torch.int64"):
        soft_superpixel_pool(torch.zeros(1, 1, 4, 4, dtype=torch.long), a, 2)
    with pytest.raises(TypeError, match="assoc must be a floating tensor"):
        soft_uniformize(torch.zeros(1, 1, 4, 4), a.long(), 2)
    with pytest.raises(TypeError, match="cell_size must be an int, got float"):
        soft_uniformize(torch.zeros(1, 1, 4, 4), a, 2.0)
    with pytest.raises(TypeError, match="centres must be a Tensor"):
        soft_superpixel_unpool(None, a, 2)


def test_unpool_centre_shape_error():
    a = torch.zeros(1, 9, 5, 5)
    with pytest.raises(ValueError, match=r"centres must have shape \[B=1, C, n_h=3, n_w=3\]"):
        soft_superpixel_unpool(torch.zeros(1, 2, 2, 2), a, 2)
    with pytest.raises(ValueError, match="centres must have shape"):
        soft_superpixel_unpool(torch.zeros(2, 2, 3, 3), a, 2)


def test_runs_and_repeats_under_deterministic_mode(device):
    g = torch.Generator().manual_seed(5)
    f = torch.randn(2, 3, 11, 9, generator=g).to(device).requires_grad_()
    a = torch.softmax(torch.randn(2, 9, 11, 9, generator=g), 1).to(device).requires_grad_()
    prev = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        grads = []
        for _ in range(2):
            f.grad = a.grad = None
            soft_uniformize(f, a, 4).square().sum().backward()
            grads.append((f.grad.clone(), a.grad.clone()))
    finally:
        torch.use_deterministic_algorithms(prev)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
