"""SegNet pooling with indices and the deterministic unpooling: loops, nn.MaxUnpool2d, determinism."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sparse_ops import MaxPoolWithIndices, MaxUnpool, PooledWithIndices, max_pool2d_with_indices, max_unpool2d
from tests.hypothesis_budget import budget
from tests.op_tester import Case, OpTester


def ref_max_pool(x: torch.Tensor, k: int, s: int, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loops over windows (no dilation, floor mode): the maxima and their flat positions ``y * W + x``."""
    b, c, h, w = x.shape
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    values = torch.empty(b, c, oh, ow, dtype=torch.float64)
    indices = torch.empty(b, c, oh, ow, dtype=torch.long)
    for n in range(b):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    best, where = -math.inf, -1
                    for y in range(i * s - p, i * s - p + k):
                        for xx in range(j * s - p, j * s - p + k):
                            if 0 <= y < h and 0 <= xx < w and float(x[n, ch, y, xx]) > best:
                                best, where = float(x[n, ch, y, xx]), y * w + xx
                    values[n, ch, i, j], indices[n, ch, i, j] = best, where
    return values, indices


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


class TestMaxPoolWithIndices(OpTester):
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({0: lambda x: x[0, 0]}, ValueError, "x must have shape"),
        ({0: lambda x: x.long()}, TypeError, "x must be a floating tensor"),
        ({0: [1.0]}, TypeError, "x must be a Tensor"),
        ({1: 0}, ValueError, "kernel_size must be >= 1"),
        ({2: (1, 2, 3)}, TypeError, "stride must be an int or a pair of ints"),
        ({3: -1}, ValueError, "padding must be >= 0"),
        (
            {1: 3, 3: 2},
            ValueError,
            r"padding must be at most half of kernel_size \(3, 3\): at most \(1, 1\), got",
        ),
        (  # the width's padding is checked too (PyTorch raised a RuntimeError for it)
            {1: (3, 5), 3: (1, 3)},
            ValueError,
            r"padding must be at most half of kernel_size \(3, 5\): at most \(1, 2\), got \(1, 3\)",
        ),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        out = max_pool2d_with_indices(*args, **kwargs)
        return out.values, out.indices

    def reference(self, x: torch.Tensor, k: int, s: int, p: int, **_: Any) -> Any:
        return ref_max_pool(x, k, s, p)

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        k, s = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
        p = data.draw(st.integers(0, k // 2))
        h, w = data.draw(st.integers(k, 9)), data.draw(st.integers(k, 9))
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 1000)))
        return Case((torch.randn(2, 2, h, w, generator=g, dtype=torch.float64).to(dtype), k, s, p))

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        x = torch.randn(3, 2, 7, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)
        return Case((x, 3, 2, 1)).map(lambda t: t.to(device))


class TestMaxUnpool(OpTester):
    gradgrad = True
    errors = [  # noqa: RUF012  (a table read by the base class)
        (
            {1: lambda i: i.reshape(3, 2, 6)},
            ValueError,
            r"indices must have the shape of values \(3, 2, 3, 2\)",
        ),
        ({2: (2, 2)}, ValueError, r"indices must lie in \[0, H \* W\) = \[0, 4\)"),
        ({1: lambda i: i - 100}, ValueError, "indices must lie in"),
        ({1: lambda i: i.int()}, TypeError, "indices must be a LongTensor"),
        ({0: None}, TypeError, "values must be a Tensor"),
        ({1: None}, TypeError, "indices must be a Tensor"),
        ({2: 5}, TypeError, "output_size must be a sequence of ints"),
        ({2: (0, 5)}, ValueError, "output_size must end with a positive"),
        # (PyTorch's scatter has no kernel for these: its NotImplementedError named no argument)
        (
            {0: lambda v: v.to(torch.float8_e4m3fn)},
            TypeError,
            r"^values must be a floating \(float16/bfloat16/float32/float64\), integer, bool or "
            r"complex64/128 tensor, got dtype torch.float8_e4m3fn$",
        ),
        (
            {0: lambda v: v.to(torch.float8_e5m2)},
            TypeError,
            "values must be a floating .* got dtype torch.float8_e5m2$",
        ),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return max_unpool2d(*args, **kwargs)

    def reference(self, values: torch.Tensor, indices: torch.Tensor, size: tuple[int, int], **_: Any) -> Any:
        return ref_unpool(values.double(), indices, *size)

    def _case(self, x: torch.Tensor, k: int, s: int, p: int) -> Case:
        pooled = max_pool2d_with_indices(x, k, s, p)
        return Case((pooled.values, pooled.indices, pooled.input_size))

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        return self._case(*TestMaxPoolWithIndices().draw_case(data, dtype).args)

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        # non-overlapping windows: with repeated indices the unpool's last write wins while its gradient, like
        # nn.MaxUnpool2d's, reaches every copy (test_gradient_equals_nn_maxunpool_with_overlapping_windows)
        x = TestMaxPoolWithIndices().small_case(dtype).args[0]
        return self._case(x, 2, 2, 0).map(lambda t: t.to(device))


def test_the_first_index_past_the_plane_is_refused() -> None:
    """The upper bound is exclusive: H * W - 1 is the last position of an H x W plane, H * W is refused (a
    ValueError naming the range, not an out-of-bounds error from the scatter)."""
    values = torch.tensor([[[[1.0, 2.0]]]])
    out = max_unpool2d(values, torch.tensor([[[[0, 8]]]]), (3, 3))
    assert out[0, 0, 2, 2] == 2
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H \* W\) = \[0, 9\).*got range \[0, 9\]"):
        max_unpool2d(values, torch.tensor([[[[0, 9]]]]), (3, 3))


@given(
    H=st.integers(2, 13),
    W=st.integers(2, 13),
    k=st.integers(1, 3),
    s=st.integers(1, 3),
    pad=st.integers(0, 1),
    seed=st.integers(0, 1000),
    ceil=st.booleans(),
)
@settings(max_examples=budget(40))
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


def test_decoder_features_with_overlapping_windows_write_one_of_the_copies():
    """The module docstring's claim: with decoder features (not the pooled values) the copies of a repeated
    index differ, and the position gets one of them (which one PyTorch leaves unspecified; nn.MaxUnpool2d
    picked another one than ours on this CPU); every other position is exact."""
    torch.manual_seed(0)
    p = max_pool2d_with_indices(torch.randn(1, 1, 5, 5), 3, 1, 1)
    dec = torch.randn_like(p.values)
    flat_i, flat_v = p.indices.flatten(), dec.flatten()
    repeated = [int(i) for i in flat_i.unique() if int((flat_i == i).sum()) > 1]
    assert repeated and any(flat_v[flat_i == i].unique().numel() > 1 for i in repeated)
    ours = max_unpool2d(dec, p.indices, p.input_size).flatten()
    for i in repeated:
        assert bool((flat_v[flat_i == i] == ours[i]).any())
    single = [int(i) for i in flat_i.unique() if int((flat_i == i).sum()) == 1]
    for i in single:
        assert ours[i] == flat_v[flat_i == i][0]
    written = torch.zeros(25, dtype=torch.bool)
    written[flat_i] = True
    assert bool((ours[~written] == 0).all())


def test_unbatched_and_dilation():
    x = torch.randn(3, 9, 8)
    p = max_pool2d_with_indices(x, 2, 2, dilation=2)
    v, i = nn.functional.max_pool2d(x, 2, 2, dilation=2, return_indices=True)
    assert torch.equal(p.values, v)
    assert torch.equal(max_unpool2d(p.values, p.indices, x.shape), ref_unpool(v, i, 9, 8))
    # the module pools with its dilation (along both sides: a kernel of 2 makes it matter)
    x = torch.randn(2, 3, 8, 9)
    p = MaxPoolWithIndices(2, 1, dilation=(2, 3))(x)
    v, i = nn.functional.max_pool2d(x, 2, 1, 0, (2, 3), return_indices=True)
    assert p.values.shape == (2, 3, 6, 6) and torch.equal(p.values, v) and torch.equal(p.indices, i)


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
    # validate only when off, as the package's other modules print it (MaxUnpool printed validate=True)
    assert repr(MaxUnpool()) == "MaxUnpool()"
    assert repr(MaxUnpool(validate=False)) == "MaxUnpool(validate=False)"
    assert isinstance(MaxPoolWithIndices()(torch.randn(1, 1, 4, 4)), PooledWithIndices)


def test_module_record_forms() -> None:
    p = max_pool2d_with_indices(torch.randn(1, 2, 5, 5))
    with pytest.raises(TypeError, match="indices must be None when values is a PooledWithIndices"):
        MaxUnpool()(p, p.indices)
    with pytest.raises(TypeError, match="MaxUnpool needs indices and output_size"):
        MaxUnpool()(p.values, p.indices)


def test_module_record_errors_show_what_was_given() -> None:
    """The two record-form errors of ``MaxUnpool`` name what was passed (the argument, the expected and the
    actual value), as every other error of the package does: they named no value at all."""
    p = max_pool2d_with_indices(torch.randn(1, 2, 5, 5))
    with pytest.raises(
        TypeError,
        match=r"^indices must be None when values is a PooledWithIndices record \(the record holds them\), "
        r"got Tensor of shape \(1, 2, 2, 2\) and dtype torch.int64$",
    ):
        MaxUnpool()(p, p.indices)
    with pytest.raises(TypeError, match=r", or both, got output_size=None$"):
        MaxUnpool()(p.values, p.indices)
    with pytest.raises(TypeError, match=r", or both, got indices=None and output_size=None$"):
        MaxUnpool()(p.values)
    with pytest.raises(TypeError, match=r", or both, got indices=None$"):
        MaxUnpool()(p.values, None, (5, 5))
    assert max_pool2d_with_indices(torch.randn(1, 1, 4, 4), np.int64(2)).values.shape == (1, 1, 2, 2)
    # an explicit output_size overrides the recorded one in both record forms (here: crop the unused row 4)
    cropped = max_unpool2d(p.values, p.indices, (4, 5))
    assert cropped.shape == (1, 2, 4, 5)
    assert torch.equal(MaxUnpool()(p, output_size=(4, 5)), cropped)
    assert torch.equal(MaxUnpool()(p.values, p, (4, 5)), cropped)


@pytest.mark.cuda
def test_cuda_device_mismatch_error():
    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    p = max_pool2d_with_indices(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match="indices must be on the device of values"):
        max_unpool2d(p.values.cuda(), p.indices, p.input_size)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 3, 2), (1, 2, 5, 4), (2, 1, 3)])
def test_a_window_larger_than_the_padded_input_is_a_value_error(
    shape: tuple[int, ...], ceil_mode: bool
) -> None:
    """Where PyTorch's max pooling refuses the sizes (a RuntimeError, "Output size is too small"), the op
    raises a ValueError naming kernel_size, dilation and padding; where PyTorch accepts them, so does the
    op."""
    x = torch.randn(shape)
    for k, s, p, d in [(2, 2, 0, 1), (3, 1, 1, 1), (3, 2, 0, 3), (4, 3, 2, 2), (5, 1, 0, 1), (2, 3, 1, 2)]:
        try:
            expected = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil_mode, return_indices=True)
        except RuntimeError:
            with pytest.raises(
                ValueError, match=r"kernel_size \(\d+, \d+\) with dilation .* must fit the input"
            ):
                max_pool2d_with_indices(x, k, s, p, dilation=d, ceil_mode=ceil_mode)
            continue
        out = max_pool2d_with_indices(x, k, s, p, dilation=d, ceil_mode=ceil_mode)
        assert torch.equal(out.values, expected[0]) and torch.equal(out.indices, expected[1])


@pytest.mark.parametrize("shape", [(1, 0, 4, 4), (1, 2, 0, 4), (0, 4, 4), (2, 3, 4, 0)])
def test_empty_channel_or_spatial_dimension_is_a_value_error(shape: tuple[int, ...]) -> None:
    """PyTorch refuses an empty C, H or W with a RuntimeError; the op names x and its shape."""
    with pytest.raises(ValueError, match=r"x must have C, H, W >= 1 \(only the batch may be empty\)"):
        max_pool2d_with_indices(torch.randn(shape))
    assert max_pool2d_with_indices(torch.randn(0, 2, 4, 4)).values.shape == (0, 2, 2, 2)


def test_a_window_entirely_in_the_padding_is_named_by_the_unpool() -> None:
    """With dilation a window may cover only padding: PyTorch gives -inf and an index outside the input (the
    pooling follows it); the unpool's error names that cause besides an input of another size."""
    p = max_pool2d_with_indices(torch.randn(1, 1, 1, 1), 2, None, 1, dilation=2)
    expected = F.max_pool2d(torch.randn(1, 1, 1, 1), 2, None, 1, 2, return_indices=True)
    assert p.values.item() == float("-inf") and torch.equal(p.indices, expected[1]) and p.indices.item() == 2
    with pytest.raises(
        ValueError, match=r"got range \[2, 2\] .*a pooling window that lies entirely in the padding"
    ):
        max_unpool2d(*p)


def test_indices_made_in_inference_mode_serve_a_training_step() -> None:
    """Indices from an encoder run under ``torch.inference_mode()`` (inference tensors, which autograd refuses
    to save) unpool decoder features that require grad, with the gradient of normal indices."""
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pooled = max_pool2d_with_indices(x)
    grads = []
    for indices in (pooled.indices.clone(), pooled.indices):
        values = pooled.values.clone().requires_grad_()
        max_unpool2d(values, indices, pooled.input_size).square().sum().backward()
        assert values.grad is not None
        grads.append(values.grad)
    assert pooled.indices.is_inference()
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)


def test_a_numpy_array_is_refused_with_the_shape_and_the_conversion() -> None:
    # as every other op of the library: the expected shape and torch.from_numpy, not only "must be a Tensor"
    x = np.zeros((1, 2, 4, 4), dtype=np.float32)
    with pytest.raises(
        TypeError, match=r"x must be a Tensor of shape \[B, C, H, W\] .*torch\.from_numpy\(x\)"
    ):
        max_pool2d_with_indices(x)  # type: ignore[arg-type]
    p = max_pool2d_with_indices(torch.from_numpy(x))
    with pytest.raises(
        TypeError, match=r"values must be a Tensor of shape \[B, C, h, w\] .*torch\.from_numpy\(values\)"
    ):
        max_unpool2d(p.values.numpy(), p.indices, p.input_size)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"indices must be a Tensor of shape \[B, C, h, w\] .*torch\.from_numpy\(indices\)"
    ):
        max_unpool2d(p.values, p.indices.numpy(), p.input_size)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got list$"):  # no conversion hint for what is not an array
        max_pool2d_with_indices([1.0])  # type: ignore[arg-type]


@pytest.mark.parametrize(("kernel", "stride"), [(2, 2), (3, 3)])
def test_the_empty_output_error_gives_pytorchs_size_of_the_other_side(kernel: int, stride: int) -> None:
    """The error of windows that do not fit reports the output size PyTorch gives along each side: with
    ceil_mode, a last window that would start in the right padding is dropped (W = 3, kernel 2, stride 2,
    padding 1: 2 columns, not 3), one that starts on the padding's first column is kept (kernel 3, stride 3:
    the second window starts at 3 = W, inside the padded input), here next to an empty height."""
    assert F.max_pool2d(torch.zeros(1, 1, 3, 3), kernel, stride, 1, ceil_mode=True).shape[-1] == 2
    with pytest.raises(ValueError, match=r"would give an empty output of size \(0, 2\)$"):
        max_pool2d_with_indices(torch.zeros(1, 1, 1, 3), (3, kernel), (2, stride), (0, 1), ceil_mode=True)


def test_device_mismatch_is_refused_on_the_meta_device() -> None:
    """The device check runs without a GPU too: a meta tensor beside a CPU one is named either way round."""
    p = max_pool2d_with_indices(torch.randn(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"indices must be on the device of values \(meta\), got cpu"):
        max_unpool2d(p.values.to("meta"), p.indices, p.input_size)
    with pytest.raises(ValueError, match=r"indices must be on the device of values \(cpu\), got meta"):
        max_unpool2d(p.values, p.indices.to("meta"), p.input_size)


def test_the_swapped_argument_hint_only_for_long_values_and_floating_indices() -> None:
    """``max_unpool2d(indices, values, ...)`` (long values, floating indices) names the order; floating
    indices with floating values are a wrong dtype only: no hint that the arguments were swapped."""
    pooled = max_pool2d_with_indices(torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0)))
    swapped = (
        r"^indices must be a LongTensor \(torch.int64\), got dtype torch.float32 \(the values come first"
    )
    with pytest.raises(TypeError, match=swapped):
        max_unpool2d(pooled.indices, pooled.values, pooled.input_size)
    with pytest.raises(
        TypeError, match=r"^indices must be a LongTensor \(torch.int64\), got dtype torch.float32$"
    ):
        max_unpool2d(pooled.values, pooled.indices.float(), pooled.input_size)


def test_the_pooling_module_repr_shows_every_option() -> None:
    """The repr names all the pooling options, dilation and ceil_mode included (a dilated pool printed as an
    undilated one)."""
    assert repr(MaxPoolWithIndices((3, 2), 1, (1, 0), dilation=(2, 1), ceil_mode=True)) == (
        "MaxPoolWithIndices(kernel_size=(3, 2), stride=(1, 1), padding=(1, 0), dilation=(2, 1), "
        "ceil_mode=True)"
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((2, 2**31), {}, r"^stride must be at most 2\*\*31 - 1 = 2147483647 .*, got 2147483648$"),
        ((2, 2**70), {}, r"^stride must be at most 2\*\*31 - 1 = 2147483647 .*, got 1180591620717411303424$"),
        (
            (2**40,),
            {"padding": 2**39},
            r"^kernel_size must be at most 2\*\*31 - 1 = 2147483647 .*, got 1099511627776$",
        ),
        (((2, 2**31),), {}, r"^kernel_size must be at most 2\*\*31 - 1 .*, got \(2, 2147483648\)$"),
        ((2**32, 1, 2**31), {}, r"^kernel_size must be at most 2\*\*31 - 1"),
    ],
)
def test_pooling_options_beyond_pytorchs_32_bit_range_are_value_errors(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    """PyTorch's pooling takes its kernel size, stride, padding and dilation as 32-bit ints: beyond, it raised
    "value cannot be converted to type int without overflow" (a RuntimeError) or an overflow TypeError, naming
    no argument. The function and the module (when it is built) name the argument and its value."""
    x = torch.randn(1, 1, 7, 5)
    with pytest.raises(ValueError, match=message):
        max_pool2d_with_indices(x, *args, **kwargs)
    with pytest.raises(ValueError, match=message):
        MaxPoolWithIndices(*args, **kwargs)


def test_the_largest_32_bit_stride_and_dilation_still_pool_like_pytorch() -> None:
    x = torch.randn(1, 2, 7, 5, generator=torch.Generator().manual_seed(0))
    for k, s, d in [(2, 2**31 - 1, 1), (1, 1, 2**31 - 1), ((2, 1), (2**31 - 1, 2), (1, 2**31 - 1))]:
        got = max_pool2d_with_indices(x, k, s, dilation=d)
        expected = F.max_pool2d(x, k, s, 0, d, return_indices=True)
        assert torch.equal(got.values, expected[0]) and torch.equal(got.indices, expected[1])
        assert torch.equal(MaxPoolWithIndices(k, s, dilation=d)(x).indices, expected[1])


def test_the_pooling_module_refuses_a_padding_above_half_the_kernel_when_built() -> None:
    """As the function does (PyTorch's rule), now where the module is built, not at its first call."""
    with pytest.raises(ValueError, match=r"^padding must be at most half of kernel_size \(3, 3\): at most"):
        MaxPoolWithIndices(3, 1, 2)
    with pytest.raises(
        ValueError, match=r"^dilation must be at most 2\*\*31 - 1 = 2147483647 .*, got 2147483648$"
    ):
        MaxPoolWithIndices(2, dilation=2**31)


@pytest.mark.parametrize(
    ("batch", "output_size", "shown"),
    [
        (1, (2**35, 2**35), r"\(34359738368, 34359738368\)"),
        (1, (2**70, 4), r"\(1180591620717411303424, 4\)"),
        (1, (1, 1, 2**31, 2**31), r"\(1, 1, 2147483648, 2147483648\)"),  # a longer size: its last two
        (0, (2**40, 2**40), r"\(1099511627776, 1099511627776\)"),  # an empty batch: strides overflow
    ],
)
def test_an_output_size_no_tensor_can_hold_is_a_value_error(
    batch: int, output_size: tuple[int, ...], shown: str
) -> None:
    """An output_size whose map no tensor can hold (its size in bytes or its strides above 2**63 - 1) is
    refused before the map is allocated: PyTorch raised an overflow TypeError ("failed to unpack ...
    Overflow") or "Storage size calculation overflowed", naming no argument."""
    values, indices, _ = max_pool2d_with_indices(torch.randn(batch, 1, 4, 4))
    message = (
        rf"^output_size {shown} is too large for values of shape \({batch}, 1, 2, 2\): it gives a tensor of "
        r"shape \[.*\] and dtype torch.float32, .* more than a tensor can hold"
    )
    with pytest.raises(ValueError, match=message):
        max_unpool2d(values, indices, output_size)
    with pytest.raises(ValueError, match=message):
        MaxUnpool()(values, indices, output_size)


def test_a_huge_output_size_a_tensor_can_hold_unpools_on_meta() -> None:
    """Only sizes no tensor can hold are refused: the function is given no kernel, stride or padding to bound
    output_size with (a global pooling unpools a 1 x 1 map to any size), so a huge map still has its shape on
    the meta device."""
    pooled = max_pool2d_with_indices(torch.randn(1, 1, 4, 4, device="meta"))
    out = max_unpool2d(pooled.values, pooled.indices, (2**20, 2**20))
    assert out.is_meta and out.shape == (1, 1, 2**20, 2**20)
