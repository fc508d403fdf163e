"""uniformize / SuperpixelUniformize: equality with a numpy loop, gradients, modes, edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sparse_ops import (
    SuperpixelAssignment,
    SuperpixelUniformize,
    superpixel_pool,
    superpixel_unpool,
    uniformize,
)
from tests.sparse_ops._reference import label_maps, ref_uniformize

BACKENDS = ["scatter", "sparse", "auto"]


TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25)
@given(
    data=label_maps(),
    channels=st.integers(1, 4),
    masked=st.booleans(),
    seed=st.integers(0, 1000),
    dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16]),
)
def test_matches_reference(backend, data, channels, masked, seed, dtype):
    sp, n_s = data
    b, h, w = sp.shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, channels, h, w, generator=g, dtype=torch.float64).to(dtype)
    mask = torch.rand(b, h, w, generator=g) > 0.4 if masked else None
    y = uniformize(x, sp, n_s, mask, backend=backend)
    expected = ref_uniformize(x.double().numpy(), sp.numpy(), None if mask is None else mask.numpy())
    assert y.shape == x.shape and y.dtype == x.dtype
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(y.double().numpy(), expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_close_to_float64(backend, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 9, 11, generator=g, dtype=torch.float64)
    sp = torch.randint(0, 17, (2, 9, 11), generator=g)
    expected = ref_uniformize(x.numpy(), sp.numpy())
    y = uniformize(x.float().to(device), sp.to(device), 17, backend=backend)
    np.testing.assert_allclose(y.cpu().double().numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_and_gradgradcheck(backend, masked, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    sp = torch.randint(0, 6, (2, 4, 5), generator=g).to(device)
    sp[1, 0, :] = 5  # make sure a masked-out superpixel exists
    mask = None
    if masked:
        mask = (torch.rand(2, 4, 5, generator=g) > 0.3).to(device)
        mask[1, 0, :] = False
    f = lambda t: uniformize(t, sp, 7, mask, backend=backend)  # noqa: E731  (id 6 is empty)
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_backward_is_the_same_map_without_mask():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    sp = torch.randint(0, 9, (2, 6, 6), generator=g)
    gy = torch.randn(2, 4, 6, 6, generator=g)
    uniformize(x, sp, 9).backward(gy)
    torch.testing.assert_close(x.grad, uniformize(gy, sp, 9))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_superpixels_zero_grad_no_nan(backend):
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    sp = torch.tensor([[[0, 0, 4], [0, 4, 4], [9, 9, 9]]])  # ids 1-3 and 5-8 empty
    y = uniformize(x, sp, 10, backend=backend)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # column sums of a mean operator are 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_pixel_and_single_superpixel(backend):
    x = torch.randn(2, 3, 4, 4)
    sp = torch.arange(16).view(1, 4, 4).repeat(2, 1, 1)  # one pixel each: identity
    torch.testing.assert_close(uniformize(x, sp, backend=backend), x)
    one = torch.zeros(2, 4, 4, dtype=torch.long)  # a single superpixel: the image mean
    expected = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    torch.testing.assert_close(uniformize(x, one, backend=backend), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_of_size_zero(backend):
    x = torch.randn(0, 3, 4, 5, requires_grad=True)
    sp = torch.zeros(0, 4, 5, dtype=torch.long)
    y = uniformize(x, sp, backend=backend)
    assert y.shape == (0, 3, 4, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape
    assert uniformize(x, sp, 7, backend=backend).shape == (0, 3, 4, 5)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64])
def test_any_integer_label_dtype_and_channel_dim(dtype):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 5, generator=g)
    sp = torch.randint(0, 7, (2, 5, 5), generator=g)
    expected = uniformize(x, sp, 7)
    torch.testing.assert_close(uniformize(x, sp.to(dtype), 7), expected)
    torch.testing.assert_close(uniformize(x, sp.to(dtype)[:, None], 7), expected)


def test_start_label_one_and_non_contiguous_ids():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 6, 6, generator=g, dtype=torch.float64)
    sp = torch.randint(0, 4, (1, 6, 6), generator=g) * 10 + 1  # ids 1, 11, 21, 31
    y = uniformize(x, sp)  # inferred N_s = 32
    np.testing.assert_allclose(y.numpy(), ref_uniformize(x.numpy(), sp.numpy()), atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_per_image_num_superpixels(backend):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 2, 5, 6, generator=g, dtype=torch.float64)
    ks = torch.tensor([2, 7, 4])
    sp = torch.stack([torch.randint(0, int(k), (5, 6), generator=g) for k in ks])
    y = uniformize(x, sp, ks, backend=backend)
    np.testing.assert_allclose(y.numpy(), ref_uniformize(x.numpy(), sp.numpy()), atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_semantics(backend):
    x = torch.tensor([[[[1.0, 3.0, 100.0], [5.0, 7.0, 9.0]]]])
    sp = torch.tensor([[[0, 0, 0], [1, 1, 2]]])
    mask = torch.tensor([[[True, True, False], [False, False, True]]])
    y = uniformize(x, sp, mask=mask, backend=backend)
    # superpixel 0: mean of the counted 1 and 3, also given to the masked pixel (100 excluded)
    # superpixel 1: no counted pixel -> unchanged; superpixel 2: itself
    expected = torch.tensor([[[[2.0, 2.0, 2.0], [5.0, 7.0, 9.0]]]])
    torch.testing.assert_close(y, expected)
    all_true = uniformize(x, sp, mask=torch.ones_like(mask), backend=backend)
    torch.testing.assert_close(all_true, uniformize(x, sp, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(backend, dtype):
    # 5000 pixels of 20: a float16 count saturates at 2048 and a float16 sum overflows to inf
    x = torch.full((1, 2, 50, 100), 20.0, dtype=dtype, requires_grad=True)
    sp = torch.zeros(1, 50, 100, dtype=torch.long)
    y = uniformize(x, sp, 1, backend=backend)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), torch.full((1, 2, 50, 100), 20.0))
    y.float().sum().backward()
    assert x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.float(), torch.ones(1, 2, 50, 100))


def test_deterministic_mode(device):
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 8, 32, 32, generator=g).to(device).requires_grad_()
    sp = torch.randint(0, 50, (2, 32, 32), generator=g).to(device)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            x.grad = None
            y = uniformize(x, sp, 50)
            y.pow(2).sum().backward()
            runs.append((y.detach().clone(), x.grad.clone()))
    finally:
        torch.use_deterministic_algorithms(was)
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_sparse_backend_falls_back_on_cuda_in_deterministic_mode():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    x = torch.randn(1, 2, 4, 4, device="cuda")
    sp = torch.randint(0, 3, (1, 4, 4), device="cuda")
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.warns(UserWarning, match="deterministic"):
            y = uniformize(x, sp, 3, backend="sparse")
    finally:
        torch.use_deterministic_algorithms(was)
    torch.testing.assert_close(y, uniformize(x, sp, 3, backend="scatter"))


def test_module_equals_functional():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 6, 6, generator=g)
    sp = torch.randint(0, 9, (2, 6, 6), generator=g)
    mask = torch.rand(2, 6, 6, generator=g) > 0.5
    op = SuperpixelUniformize(num_superpixels=9)
    torch.testing.assert_close(op(x, sp, mask), uniformize(x, sp, 9, mask))
    torch.testing.assert_close(SuperpixelUniformize(backend="sparse")(x, sp), uniformize(x, sp))
    assert "num_superpixels=9" in repr(op)


def test_assignment_reuse_equals_functional():
    g = torch.Generator().manual_seed(8)
    sp = torch.randint(0, 9, (2, 6, 6), generator=g)
    a = SuperpixelAssignment(sp, 9)
    for _ in range(2):
        x = torch.randn(2, 3, 6, 6, generator=g)
        torch.testing.assert_close(a.uniformize(x), uniformize(x, sp, 9))


def test_huge_num_superpixels_on_small_image():
    # N_s * N_p = 1e6 * 64 = 6.4e7 elements would be 256 MB in float32: the op only allocates O(N_s * C + N_p * C)
    n_s = 1_000_000
    sp = torch.randint(0, n_s, (1, 8, 8))
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    a = SuperpixelAssignment(sp, n_s)
    assert a.counts.numel() == n_s
    y = a.uniformize(x)
    y.sum().backward()
    ref = ref_uniformize(x.detach().double().numpy(), sp.numpy())
    np.testing.assert_allclose(y.detach().numpy(), ref, atol=1e-6)
    # the sparse backend stores one entry per pixel
    decoder, encoder_t = SuperpixelAssignment(sp, n_s, backend="sparse")._sparse(torch.float32)
    assert decoder._nnz() == 64 and encoder_t._nnz() == 64
    torch.testing.assert_close(uniformize(x, sp, n_s, backend="sparse"), y)


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor produced by an aten op while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("masked", [False, True])
def test_no_tensor_of_size_ns_times_np(masked):
    n_s, b, c, h, w = 1_000_000, 2, 3, 8, 8
    sp = torch.randint(0, n_s, (b, h, w))
    mask = torch.rand(b, h, w) > 0.5 if masked else None
    x = torch.randn(b, c, h, w, requires_grad=True)
    with _LargestTensor() as mode:
        y = uniformize(x, sp, n_s, mask)
        y.backward(torch.ones_like(y))
    # the biggest buffer is one slot per superpixel and channel, never N_s x N_p (= 6.4e7 per image)
    assert mode.largest <= b * c * (n_s + 1)  # k = 1 slot: superpixels average < 1 pixel here
    assert mode.largest < n_s * h * w


def test_validate_false_skips_checks():
    x = torch.randn(1, 2, 3, 3)
    sp = torch.randint(0, 4, (1, 3, 3))
    torch.testing.assert_close(uniformize(x, sp, 4, validate=False), uniformize(x, sp, 4))
    with pytest.raises(ValueError, match="num_superpixels"):
        uniformize(x, sp, 2)
    uniformize(x, torch.zeros_like(sp), 1, validate=False)


@pytest.mark.slow
@pytest.mark.parametrize("compiler, masked", [("aot_eager", False), ("aot_eager", True), ("inductor", False)])
def test_compile_fullgraph_scatter_backend(compiler, masked):
    g = torch.Generator().manual_seed(9)
    mask = torch.rand(2, 5, 5, generator=g) > 0.3 if masked else None

    def f(x, sp):
        return uniformize(x, sp, 6, mask, backend="scatter", validate=False)

    compiled = torch.compile(f, fullgraph=True, backend=compiler)
    x = torch.randn(2, 3, 5, 5, generator=g, requires_grad=True)
    sp = torch.randint(0, 6, (2, 5, 5), generator=g)
    y = compiled(x, sp)
    y.pow(2).sum().backward()
    grad = x.grad.clone()
    x.grad = None
    f(x, sp).pow(2).sum().backward()
    torch.testing.assert_close(y, f(x, sp))
    torch.testing.assert_close(grad, x.grad)


@pytest.mark.slow
def test_compile_fullgraph_pool_unpool():
    def f(x, sp):
        pooled = superpixel_pool(x, sp, 6, "max", validate=False)
        return superpixel_unpool(pooled * 2, sp, validate=False)

    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 3, 5, 5, generator=g)
    sp = torch.randint(0, 6, (2, 5, 5), generator=g)
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(x, sp), f(x, sp))
