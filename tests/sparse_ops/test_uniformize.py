"""uniformize / SuperpixelUniformize: the shared op checks, mask and id semantics, memory, host reads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from sparse_ops import (
    SuperpixelUniformize,
    max_pool2d_with_indices,
    max_unpool2d,
    superpixel_pool,
    superpixel_unpool,
    uniformize,
)
from tests.op_tester import Case, OpTester
from tests.sparse_ops._reference import label_maps, ref_uniformize

X = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(0))
SP = torch.randint(0, 6, (3, 4, 5), generator=torch.Generator().manual_seed(1))
TOP1 = int(SP[1].max())  # the largest id of image 1


class TestUniformize(OpTester):
    backend = "scatter"
    masked = False
    errors = [  # noqa: RUF012  (a table read by the base class)
        (
            {0: lambda x: x.long()},
            TypeError,
            r"logits must be a floating tensor.*torch.int64; convert it with logits.float\(\) if it holds "
            r"values \(an integer tensor here is often a label map passed first",
        ),
        (  # [B, H, W, C] logits: permute them (resizing the label map would be wrong)
            {0: lambda x: x.permute(0, 2, 3, 1)},
            ValueError,
            r"if logits is \[B, H, W, C\] .*, pass logits.permute\(0, 3, 1, 2\) .*; otherwise resize the "
            r"label map",
        ),
        ({0: [1.0]}, TypeError, "logits must be a torch.Tensor"),
        ({0: lambda x: x[0]}, ValueError, r"logits must have shape \[B, C, H, W\].*got shape \(2, 4, 5\)"),
        ({1: lambda s: s.float()}, TypeError, "superpixels must have an integer dtype.*torch.float32"),
        ({1: lambda s: s.bool()}, TypeError, "superpixels must have an integer dtype.*torch.bool"),
        (
            {1: lambda s: s[:, None].repeat(1, 2, 1, 1)},
            ValueError,
            r"superpixels must have shape \[B, H, W\]",
        ),
        ({1: lambda s: s[0]}, ValueError, r"superpixels must have shape \[B, H, W\]"),
        ({1: lambda s: s[:, :3]}, ValueError, r"\[3, 4, 5\] to match logits.*got \[3, 3, 5\].*nearest"),
        ({1: lambda s: s[:1]}, ValueError, r"superpixels must have shape \[B, H, W\] = \[3, 4, 5\]"),
        ({1: lambda s: s - 1}, ValueError, "ids must be >= 0, got the id -1"),
        ({1: lambda s: s.to("meta")}, ValueError, "superpixels must be on the same device as logits"),
        ({2: 3}, ValueError, r"< num_superpixels = 3, got the id 6"),
        ({2: -1}, ValueError, "num_superpixels must be >= 0, got -1"),
        ({2: 2.5}, TypeError, "num_superpixels must be an int.*float"),
        ({2: True}, TypeError, "num_superpixels must be an int.*got bool True"),
        ({2: torch.tensor([7.0, 7.0, 7.0])}, TypeError, "num_superpixels must have an integer dtype"),
        ({2: torch.tensor([7, 7])}, ValueError, r"shape \[B\] = \[3\], got shape \(2,\)"),
        ({2: torch.tensor([7, 2, 7])}, ValueError, r"image 1 must be < num_superpixels\[1\] = 2"),
        (  # the per-image bound is exclusive: an id equal to it is out of range
            {2: torch.tensor([7, TOP1, 7])},
            ValueError,
            rf"image 1 must be < num_superpixels\[1\] = {TOP1}, got the id {TOP1}",
        ),
        ({2: torch.tensor([7, -1, 7])}, ValueError, r"num_superpixels must be >= 0, got \[7, -1, 7\]"),
        ({"mask": (SP > 2).float()}, TypeError, "mask must have dtype torch.bool.*torch.float32"),
        ({"mask": (SP > 2)[:, :2]}, ValueError, r"mask must have shape \[B, H, W\] = \[3, 4, 5\]"),
        (  # a channel dim of 1 is dropped, of 2 refused (not read as its first channel)
            {"mask": (SP > 2)[:, None].repeat(1, 2, 1, 1)},
            ValueError,
            r"mask must have shape \[B, H, W\] = \[3, 4, 5\]",
        ),
        ({"mask": 1}, TypeError, "mask must be a bool torch.Tensor"),
        (
            {"backend": "dense"},
            ValueError,
            r"backend must be one of \('auto', 'scatter', 'sparse'\), got 'dense'",
        ),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return uniformize(*args, **kwargs)

    def reference(
        self, logits: torch.Tensor, superpixels: torch.Tensor, *_: Any, mask: Any = None, **__: Any
    ):
        m = None if mask is None else mask.cpu().numpy()
        return torch.from_numpy(ref_uniformize(logits.double().cpu().numpy(), superpixels.cpu().numpy(), m))

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        sp, n_s = data.draw(label_maps())
        b, h, w = sp.shape
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
        x = torch.randn(b, data.draw(st.integers(1, 4)), h, w, generator=g, dtype=torch.float64).to(dtype)
        mask = torch.rand(b, h, w, generator=g) > 0.4 if self.masked else None
        return Case((x, sp, n_s), {"mask": mask, "backend": self.backend})

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        x = X.to(dtype)
        sp = SP.clone()
        sp[2, 0] = 6  # id 6 in one image only, ids 7 never (an empty slot)
        mask = None
        if self.masked:
            mask = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(2)) > 0.3
            mask[2, 0] = False  # superpixel 6 of image 2 has no counted pixel: its pixels pass through
        case = Case((x, sp, 8), {"mask": mask, "backend": self.backend})
        return case.map_all(lambda t: t.to(device))


class TestUniformizeMasked(TestUniformize):
    masked = True
    errors = []  # noqa: RUF012  (covered by TestUniformize)


class TestUniformizeSparse(TestUniformize):
    backend = "sparse"
    masked = True
    compile_kwargs = None  # sparse tensors are refused by fullgraph=True
    fast_gradcheck = True
    errors = []  # noqa: RUF012  (covered by TestUniformize)

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        """Both paths of the sparse backend against the reference: with and without a mask."""
        case = super().draw_case(data, dtype)
        mask = case.kwargs["mask"] if data.draw(st.booleans(), label="masked") else None
        return replace(case, kwargs={**case.kwargs, "mask": mask})


# ---------------------------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_mask_semantics(backend: str) -> None:
    x = torch.tensor([[[[1.0, 3.0, 100.0], [5.0, 7.0, 9.0]]]])
    sp = torch.tensor([[[0, 0, 0], [1, 1, 2]]])
    mask = torch.tensor([[[True, True, False], [False, False, True]]])
    # superpixel 0: mean of the counted 1 and 3, also given to the masked pixel (100 excluded);
    # superpixel 1: no counted pixel -> unchanged; superpixel 2: itself
    expected = torch.tensor([[[[2.0, 2.0, 2.0], [5.0, 7.0, 9.0]]]])
    torch.testing.assert_close(uniformize(x, sp, mask=mask, backend=backend), expected)
    x[0, 0, 0, 2] = float("nan")  # a NaN at a masked pixel reaches no mean, whatever the backend
    expected[0, 0, 0, 2] = 2.0
    torch.testing.assert_close(uniformize(x, sp, mask=mask, backend=backend), expected)


@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_empty_superpixels_give_zero_grad_and_no_nan(backend: str) -> None:
    x = torch.randn(1, 2, 3, 3, requires_grad=True)
    sp = torch.tensor([[[0, 0, 4], [0, 4, 4], [9, 9, 9]]])  # ids 1-3 and 5-8 empty
    y = uniformize(x, sp, 10, backend=backend)
    y.sum().backward()
    assert torch.isfinite(y).all()
    torch.testing.assert_close(x.grad, torch.ones_like(x))  # column sums of a mean operator are 1


_EXTREME = {  # one 2 x 4 superpixel's values (the other superpixel holds ones), the dtype
    "nan": ([float("nan")] + [0.0] * 7, torch.float32),
    "inf": ([float("inf")] + [0.0] * 7, torch.float32),
    "inf and -inf": ([float("inf"), float("-inf")] + [0.0] * 6, torch.float32),
    "float32 sum beyond the range": ([3e38] * 8, torch.float32),
    "float16 near its largest": ([60000.0] * 8, torch.float16),
    "bfloat16 sum beyond the float32 range": ([3e38] * 8, torch.bfloat16),
    "subnormal": ([1e-40] * 8, torch.float32),
    "negative zero": ([-0.0] * 8, torch.float32),
}


@pytest.mark.parametrize("backend", ["scatter", "sparse"])
@pytest.mark.parametrize("case", list(_EXTREME))
def test_extreme_values_give_what_torch_mean_gives(backend: str, case: str) -> None:
    # the "Extreme values" list of the uniformization page: float32 accumulation (half types too) and no
    # flushing, NaN never hidden, the other superpixel untouched
    values, dtype = _EXTREME[case]
    x = torch.ones(1, 1, 4, 4, dtype=dtype)
    x[0, 0, :2] = torch.tensor(values, dtype=dtype).view(2, 4)
    sp = torch.tensor([[[0] * 4] * 2 + [[1] * 4] * 2])
    expected = torch.stack([x[0, 0, :2].float().mean(), x.new_ones(()).float()]).to(dtype)
    pooled = superpixel_pool(x, sp, 2, backend=backend)[0, :, 0]
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(pooled.signbit(), expected.signbit())
    out = uniformize(x, sp, 2, backend=backend)
    broadcast = expected.repeat_interleave(8).view(1, 1, 4, 4)
    torch.testing.assert_close(out, broadcast, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_a_partial_sum_overflows_though_the_superpixel_sum_is_in_range(backend: str) -> None:
    """The "Overflow" item of the uniformization page: an 8 x 8 superpixel whose upper half is 3e38 and lower
    half -3e38 sums to 0, but every accumulator adds 3e38 several times first: the mean and the sum are inf
    (the page said a mean overflows where the superpixel's sum leaves the float32 range)."""
    x = torch.full((1, 1, 8, 8), 3e38)
    x[0, 0, 4:] = -3e38
    sp = torch.zeros(1, 8, 8, dtype=torch.long)
    assert x.double().sum().item() == 0.0
    for reduce in ("mean", "sum"):
        assert superpixel_pool(x, sp, 1, reduce=reduce, backend=backend).item() == float("inf")
    assert (uniformize(x, sp, 1, backend=backend) == float("inf")).all()
    doc = Path(__file__).resolve().parents[2] / "docs" / "concepts" / "uniformization.rst"
    text = " ".join(doc.read_text(encoding="utf-8").split())
    assert "It also overflows where a *partial* sum does, even if the superpixel's sum is in range" in text


def test_the_advised_resize_of_a_label_map_keeps_every_id() -> None:
    """A label map of another size is refused with a resize to follow; in float32 (the advice was
    ``.float()``) ids above 2**24 round, so distinct superpixels merged and ids changed: float64 keeps
    them."""
    import re

    import torch.nn.functional as F  # the name the advice uses

    superpixels = torch.tensor([[[2**24 + 1, 2**24 + 2], [2**24 + 3, 2**40 + 5]]])
    with pytest.raises(ValueError, match="resize the label map with nearest interpolation") as info:
        uniformize(torch.randn(1, 1, 4, 4), superpixels)
    advice = re.search(r"e\.g\. (F\.interpolate\(.*\.long\(\))", str(info.value))
    assert advice is not None, str(info.value)
    resized = eval(advice.group(1), {"F": F, "superpixels": superpixels})  # our own message
    expected = superpixels.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    assert torch.equal(resized, expected)


def test_a_label_map_with_a_channel_dim_is_named_by_its_own_shape_and_its_advised_resize_works() -> None:
    """A ``[B, 1, H, W]`` map (a documented layout) of another size or batch: the messages showed the shape
    without its channel dim (``got [2, 4, 5]`` for a ``[2, 1, 4, 5]`` argument), and the advised resize
    (``superpixels[:, None]``) made a 5-d input that ``F.interpolate`` refused; a ``[B, 1, H, W]`` mask of
    another size was shown as ``[B, H, W]`` too."""
    import re

    import torch.nn.functional as F  # the name the advice uses

    superpixels = torch.tensor([[[[3, 4, 5], [6, 7, 2**40]]]])  # [1, 1, 2, 3]
    with pytest.raises(ValueError, match="resize the label map") as info:
        uniformize(torch.randn(1, 2, 4, 6), superpixels)
    message = str(info.value)
    assert "must have shape [B, 1, H, W] = [1, 1, 4, 6]" in message and "got [1, 1, 2, 3]" in message
    advice = re.search(r"e\.g\. (F\.interpolate\(.*\.long\(\))", message)
    assert advice is not None, message
    resized = eval(advice.group(1), {"F": F, "superpixels": superpixels})  # our own message
    assert torch.equal(resized, superpixels.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    uniformize(torch.randn(1, 2, 4, 6), resized)  # the advice is accepted
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=re.escape("got shape (3, 1, 4, 5)")):
        superpixel_pool(x, torch.zeros(3, 1, 4, 5, dtype=torch.long), 4)
    with pytest.raises(ValueError, match=re.escape("got shape (3, 1, 4, 5)")):
        superpixel_unpool(torch.randn(2, 4, 3), torch.zeros(3, 1, 4, 5, dtype=torch.long))
    mask = torch.ones(2, 1, 5, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=re.escape("= [2, 4, 5] like superpixels, got [2, 1, 5, 4]")):
        superpixel_pool(x, torch.zeros(2, 1, 4, 5, dtype=torch.long), 4, mask=mask)


def test_one_pixel_and_single_superpixel() -> None:
    x = torch.randn(2, 3, 4, 4)
    sp = torch.arange(16).view(1, 4, 4).repeat(2, 1, 1)  # one pixel each: the identity
    torch.testing.assert_close(uniformize(x, sp), x)
    one = torch.zeros(2, 4, 4, dtype=torch.long)  # a single superpixel: the image mean
    torch.testing.assert_close(uniformize(x, one), x.mean(dim=(2, 3), keepdim=True).expand_as(x))


def test_batch_of_size_zero() -> None:
    x = torch.randn(0, 3, 4, 5, requires_grad=True)
    y = uniformize(x, torch.zeros(0, 4, 5, dtype=torch.long))
    assert y.shape == (0, 3, 4, 5)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32])
def test_any_integer_label_dtype_and_channel_dim(dtype: torch.dtype) -> None:
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    sp = torch.randint(0, 7, (2, 5, 5))
    expected = torch.from_numpy(ref_uniformize(x.numpy(), sp.numpy()))
    torch.testing.assert_close(uniformize(x, sp.to(dtype)[:, None], 7), expected)


def test_gaps_and_per_image_num_superpixels() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 2, 6, 6, generator=g, dtype=torch.float64)
    sp = torch.randint(0, 4, (3, 6, 6), generator=g) * 10 + 1  # ids 1, 11, 21, 31: start at 1, with gaps
    expected = torch.from_numpy(ref_uniformize(x.numpy(), sp.numpy()))
    torch.testing.assert_close(uniformize(x, sp), expected)
    torch.testing.assert_close(uniformize(x, sp, torch.tensor([32, 40, 35])), expected)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("big", [False, True], ids=["small", "lanes"])
def test_channels_last_input_keeps_its_layout_and_the_exact_values(masked: bool, dtype, big: bool) -> None:
    """On the CPU a channels-last input takes the row path (index_add_ / index_select over [N, C] rows): the
    output and the gradient stay channels-last, and both equal the contiguous input's bit for bit (same
    summation order), also for superpixels large enough for several accumulators per superpixel."""
    g = torch.Generator().manual_seed(8)
    h, w, n_s = (96, 128, 3) if big else (9, 11, 7)
    sp = torch.randint(0, n_s, (2, h, w), generator=g)
    if big:
        sp[:, : h // 2] = 0  # 6144 pixels in superpixel 0 of each image
    mask = torch.rand(2, h, w, generator=g) > 0.25 if masked else None
    x = (torch.randn(2, 5, h, w, generator=g) * 3 + 1000).to(dtype)
    grad = torch.randn(2, 5, h, w, generator=g).to(dtype)
    fmt = torch.channels_last
    x_nchw, x_nhwc = x.clone().requires_grad_(), x.contiguous(memory_format=fmt).requires_grad_()
    y_nchw = uniformize(x_nchw, sp, n_s, mask=mask)
    y_nhwc = uniformize(x_nhwc, sp, n_s, mask=mask)
    y_nchw.backward(grad)
    y_nhwc.backward(grad.contiguous(memory_format=fmt))
    assert y_nhwc.is_contiguous(memory_format=fmt) and x_nhwc.grad.is_contiguous(memory_format=fmt)
    assert y_nchw.is_contiguous() and x_nchw.grad.is_contiguous()
    assert torch.equal(y_nhwc, y_nchw) and torch.equal(x_nhwc.grad, x_nchw.grad)


@pytest.mark.parametrize("backend", ["scatter", "sparse"])
@pytest.mark.parametrize("masked", [False, True])
def test_an_nchw_input_gives_an_nchw_contiguous_result(backend: str, masked: bool) -> None:
    """As documented, with both backends: the sparse backend's product has pixels as rows and gave a
    channels-last result (``y.view(B, -1)`` failed), but only without a mask."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    sp = torch.randint(0, 5, (2, 8, 8), generator=g)
    mask = torch.rand(2, 8, 8, generator=g) > 0.3 if masked else None
    y = uniformize(x, sp, 5, mask=mask, backend=backend)
    y.backward(torch.randn(y.shape, generator=g))
    assert y.is_contiguous() and x.grad is not None and x.grad.is_contiguous()
    expected = uniformize(x.detach(), sp, 5, mask=mask, backend="scatter")
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("layout", ["batch and channels swapped", "H and W swapped", "channels_last"])
def test_a_masked_result_has_a_documented_layout_whatever_the_inputs(layout: str) -> None:
    """With a mask the result took the strides of a permuted input (``torch.where`` follows its first value),
    a layout the docstring rules out: NCHW-contiguous, or channels-last for a channels-last input."""
    g = torch.Generator().manual_seed(4)
    x = {
        "batch and channels swapped": torch.randn(3, 2, 4, 5, generator=g).transpose(0, 1),
        "H and W swapped": torch.randn(2, 3, 5, 4, generator=g).transpose(2, 3),
        "channels_last": torch.randn(2, 3, 4, 5, generator=g).contiguous(memory_format=torch.channels_last),
    }[layout].requires_grad_()
    sp, mask = torch.randint(0, 3, (2, 4, 5), generator=g), torch.rand(2, 4, 5, generator=g) > 0.3
    y = uniformize(x, sp, mask=mask)
    rows = layout == "channels_last"
    assert y.is_contiguous(memory_format=torch.channels_last if rows else torch.contiguous_format)
    assert torch.equal(y, uniformize(x.detach().contiguous(), sp, mask=mask))


def test_channels_last_with_one_channel_or_pixel_is_plain_contiguous() -> None:
    """With C = 1 or H = W = 1 both layouts are the same strides: the [B, C, N] path, unchanged results."""
    for shape in ((2, 1, 4, 5), (2, 3, 1, 1)):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        sp = torch.randint(0, 3, (shape[0], *shape[2:]))
        expected = torch.from_numpy(ref_uniformize(x.double().numpy(), sp.numpy())).float()
        torch.testing.assert_close(uniformize(x, sp), expected)


def test_numpy_integers_are_accepted() -> None:
    x, sp = torch.randn(1, 2, 3, 3), torch.randint(0, 4, (1, 3, 3))
    torch.testing.assert_close(uniformize(x, sp, np.int64(4)), uniformize(x, sp, 4))


def test_deterministic_mode(device: torch.device) -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 8, 32, 32, generator=g).to(device).requires_grad_()
    sp = torch.randint(0, 50, (2, 32, 32), generator=g).to(device)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            x.grad = None
            uniformize(x, sp, 50).pow(2).sum().backward()
            runs.append(x.grad.clone())
    finally:
        torch.use_deterministic_algorithms(was)
    assert torch.equal(runs[0], runs[1])


@pytest.mark.cuda
def test_sparse_backend_falls_back_on_cuda_in_deterministic_mode() -> None:
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


def test_module_forward_takes_the_functional_arguments_in_order() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sp = torch.randint(0, 5, (2, 4, 4))
    mask = torch.rand(2, 4, 4) > 0.3
    op = SuperpixelUniformize(backend="sparse")
    expected = torch.from_numpy(ref_uniformize(x.numpy(), sp.numpy(), mask.numpy()))
    torch.testing.assert_close(op(x, sp, 5, mask=mask), expected)
    assert repr(op) == "SuperpixelUniformize(backend='sparse')"
    with pytest.raises(ValueError, match="backend must be one of"):
        SuperpixelUniformize(backend="x")  # type: ignore[arg-type]  # the error under test


def test_module_validate_false_reaches_the_call_and_shows_in_the_repr() -> None:
    """``SuperpixelUniformize(validate=False)`` skips the id range check of every call, as the functional
    ``validate=False`` does (an id out of range still gets its superpixel's mean), and says so in its repr."""
    x, sp = torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randint(0, 4, (1, 3, 3))
    op = SuperpixelUniformize(validate=False)
    assert repr(op) == "SuperpixelUniformize(backend='auto', validate=False)"
    torch.testing.assert_close(op(x, sp + 4, 4), uniformize(x, sp))
    with pytest.raises(ValueError, match="ids must be < num_superpixels"):
        SuperpixelUniformize()(x, sp + 4, 4)


# ----------------------------------------------------------------------------- memory and synchronisation
class _Recorder(TorchDispatchMode):
    """Records the largest strided tensor produced and whether any op read a value on the host
    (``Tensor.tolist`` too, which dispatches no op on the CPU and copies to the host on CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.host_reads: list[str] = []
        self._tolist = torch.Tensor.tolist

    def __enter__(self):  # type: ignore[no-untyped-def]
        original, reads = self._tolist, self.host_reads

        def tolist(t: torch.Tensor) -> Any:
            reads.append("Tensor.tolist")
            return original(t)

        torch.Tensor.tolist = tolist  # type: ignore[method-assign]  # restored on exit
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        torch.Tensor.tolist = self._tolist  # type: ignore[method-assign]
        super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default):
            self.host_reads.append(str(func))
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("num_superpixels", [2**41, None])
def test_memory_does_not_depend_on_id_values(masked: bool, num_superpixels: int | None) -> None:
    b, c, h, w = 2, 3, 8, 8
    g = torch.Generator().manual_seed(7)
    sp = torch.randint(0, 5, (b, h, w), generator=g)
    sp[0, 0, 0] = 2**40  # a stray id (its low 32 bits are 0: a truncating key would merge it with id 0)
    mask = torch.rand(b, h, w, generator=g) > 0.5 if masked else None
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    with _Recorder() as mode:
        y = uniformize(x, sp, num_superpixels, mask=mask)
        y.backward(torch.ones_like(y))
    assert mode.largest <= 2 * b * c * h * w  # memory proportional to the pixels
    m = None if mask is None else mask.numpy()
    torch.testing.assert_close(
        y.detach(), torch.from_numpy(ref_uniformize(x.detach().numpy(), sp.numpy(), m))
    )


def test_validate_false_reads_nothing_on_the_host() -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    sp = torch.randint(0, 9, (2, 8, 8))
    mask = torch.rand(2, 8, 8) > 0.2
    with _Recorder() as mode:
        uniformize(x, sp, 9, mask=mask, validate=False).sum().backward()
    assert mode.host_reads == []
    with _Recorder() as mode:  # the id range check does read the ids (the test can fail)
        uniformize(x, sp, 9, mask=mask)
    assert mode.host_reads


#: Mistakes that a check of types and shapes alone catches: ``(name, transform of (x, sp, mask), message)``.
#: Without the checks each gave a wrong result (a broadcast or re-read label map, truncated ids).
_SHAPE_MISTAKES = [
    (
        "one label map for the batch",
        lambda x, sp, m: (x, sp[:1], None),
        r"superpixels must have shape \[B, H, W\]",
    ),
    ("[B, W, H] label map", lambda x, sp, m: (x, sp.reshape(2, 8, 6), None), r"superpixels must have shape"),
    ("mask of another shape", lambda x, sp, m: (x, sp, m.reshape(2, 8, 6)), r"mask must have shape"),
    ("float ids", lambda x, sp, m: (x, sp.float() + 0.7, m), r"superpixels must have an integer dtype"),
    ("integer mask", lambda x, sp, m: (x, sp, m.long()), r"mask must have dtype torch.bool"),
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("mistake", _SHAPE_MISTAKES, ids=[m[0] for m in _SHAPE_MISTAKES])
def test_validate_false_still_checks_types_and_shapes_eager_and_compiled(mistake, compiled: bool) -> None:
    """``validate=False`` (what ``torch.compile(fullgraph=True)`` needs) skips only the value checks that read
    the tensors; the type and shape checks read nothing and still run, in eager mode and compiled (where
    Dynamo reports the error, message included, as an exception of its own)."""
    _, transform, message = mistake
    g = torch.Generator().manual_seed(5)
    x, sp, mask = torch.randn(2, 3, 6, 8, generator=g), torch.randint(0, 5, (2, 6, 8), generator=g), None
    mask = torch.rand(2, 6, 8, generator=g) > 0.3

    def op(a: torch.Tensor, s: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        return uniformize(a, s, 5, mask=m, validate=False)

    fn = torch.compile(op, fullgraph=True, backend="eager") if compiled else op
    fn(x, sp, mask)  # the valid call runs
    if compiled:  # Dynamo re-raises; torch 2.11 shows a formatted message in pieces
        message = message.split(" ", 1)[1]
    with pytest.raises(Exception if compiled else (TypeError, ValueError), match=message):
        fn(*transform(x, sp, mask))


def test_validate_decides_only_the_id_range() -> None:
    """The id range is only found by reading the ids: checked with ``validate=True``, not read with
    ``validate=False`` (uniformization compacts the ids, so an id out of range still gets its superpixel's
    mean). A negative per-image count is refused either way: the op reads the counts anyway (one read for
    their bounds), so the clear error costs nothing (it was an error from inside the layout code)."""
    x, sp = torch.randn(1, 2, 3, 3), torch.randint(0, 4, (1, 3, 3))
    with pytest.raises(ValueError, match="ids must be < num_superpixels"):
        uniformize(x, sp + 4, 4)
    torch.testing.assert_close(uniformize(x, sp + 4, 4, validate=False), uniformize(x, sp))
    for validate in (True, False):
        with pytest.raises(ValueError, match=r"num_superpixels must be >= 0, got \[-1\]"):
            uniformize(x, sp, torch.tensor([-1]), validate=validate)


def test_compile_with_a_second_batch_size_serves_every_later_one() -> None:
    """A second batch size compiles once more, with a dynamic batch that serves the later sizes (the layout is
    built for the whole batch while tracing; sliced into blocks it specialized every batch size)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(lambda x, sp: uniformize(x, sp, 10, validate=False), backend=counter)
    for b in (2, 3, 4, 5):
        x, sp = torch.randn(b, 3, 16, 16), torch.randint(0, 10, (b, 16, 16))
        assert torch.equal(compiled(x, sp), uniformize(x, sp, 10))
    assert counter.frame_count == 2


@pytest.mark.slow
def test_compile_serves_new_image_sizes_and_slot_counts_without_recompiling() -> None:
    """A dynamic size used as ``num_superpixels`` (``num_grid_cells`` of the input's shape, as the
    deployment recipe computes it) or ``height`` / ``width`` was specialized by ``operator.index`` in the int
    check: every new image size recompiled (8 graphs for 8 sizes, then ``recompile_limit``: eager, or under
    ``fullgraph=True`` a ``FailOnRecompileLimitHit``), and so did every new int ``N_s`` under
    ``dynamic=True``."""
    from torch._dynamo.testing import CompileCounter

    from sparse_ops import SuperpixelAssignment, hard_superpixels, num_grid_cells

    def refine(x: torch.Tensor, assoc: torch.Tensor) -> torch.Tensor:
        ids = hard_superpixels(assoc, 4, validate=False)
        n = num_grid_cells(x.shape[-2], x.shape[-1], 4)
        return SuperpixelAssignment(ids, n, validate=False).uniformize(x)

    g = torch.Generator().manual_seed(0)
    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(refine, backend=counter, fullgraph=True)
    for size in (16, 20, 24, 28, 32, 36):  # 256 pixels or more: one lane regime after the first size
        x, assoc = torch.randn(2, 3, size, size, generator=g), torch.rand(2, 9, size, size, generator=g)
        assert torch.equal(compiled(x, assoc), refine(x, assoc))
    assert counter.frame_count == 2  # the first size, then one graph with a dynamic size for the others

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(
        lambda x, sp, n: uniformize(x, sp, n, validate=False), backend=counter, dynamic=True
    )
    for n in (9, 11, 13, 15):  # one lane each (256 pixels)
        x, sp = torch.randn(2, 3, 16, 16, generator=g), torch.randint(0, n, (2, 16, 16), generator=g)
        assert torch.equal(compiled(x, sp, n), uniformize(x, sp, n))
    assert counter.frame_count == 1


_INFERENCE_INPUTS: dict[str, Any] = {  # (op of x and the inference tensor, make that tensor from a generator)
    "mask": (
        lambda x, m: uniformize(x, torch.zeros(2, 8, 8, dtype=torch.long), 1, mask=m, validate=False),
        lambda g: torch.rand(2, 8, 8, generator=g) > 0.3,
    ),
    "pool label map": (
        lambda x, sp: superpixel_pool(x, sp, 4, validate=False),
        lambda g: torch.randint(0, 4, (2, 8, 8), generator=g),
    ),
    "SegNet indices": (
        lambda x, i: max_unpool2d(x[:, :, :4, :4], i, (8, 8), validate=False),
        lambda g: max_pool2d_with_indices(torch.randn(2, 3, 8, 8, generator=g)).indices,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_INFERENCE_INPUTS))
def test_inference_tensors_serve_an_eager_training_step_not_a_compiled_one(name: str) -> None:
    """The documented limitation ("Precision, determinism, compile"): a mask, label map or indices made under
    ``torch.inference_mode()`` serve an eager training step (copied), but PyTorch refuses them in a compiled
    one whose graph saves them; a clone serves both. If the compiled call starts passing, the doc can go."""
    op, make = _INFERENCE_INPUTS[name]
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        t = make(g)
    x = torch.randn(2, 3, 8, 8, generator=g)

    def step(fn: Any, tensor: torch.Tensor) -> torch.Tensor:
        xr = x.clone().requires_grad_()
        fn(xr, tensor).square().sum().backward()
        assert xr.grad is not None
        return xr.grad

    expected = step(op, t)  # eager: copied where the graph saves it
    torch._dynamo.reset()
    compiled = torch.compile(op, backend="aot_eager", fullgraph=True)
    assert torch.equal(step(compiled, t.clone()), expected)
    with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
        step(compiled, t)
