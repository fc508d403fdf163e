"""superpixel_pool / superpixel_unpool / SuperpixelPool: the shared op checks and their own semantics."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_ops import (
    SuperpixelPool,
    superpixel_cam,
    superpixel_global_average,
    superpixel_pool,
    superpixel_unpool,
)
from tests.hypothesis_budget import budget
from tests.op_tester import Case, OpTester
from tests.sparse_ops._reference import label_maps, ref_pool, ref_unpool

X = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(0))
SP = torch.randint(0, 6, (3, 4, 5), generator=torch.Generator().manual_seed(1))
MASK = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(2)) > 0.3


class TestPool(OpTester):
    reduce = "mean"
    masked = False
    backend = "scatter"
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({"reduce": "median"}, ValueError, r"reduce must be one of \('mean', 'sum', 'max'\), got 'median'"),
        ({"upsample": "linear"}, ValueError, "upsample must be one of"),
        ({0: lambda x: x.int()}, TypeError, "features must be a floating tensor"),
        (
            {0: lambda x: x[:, :, :2]},
            ValueError,
            r"features must have the spatial size of superpixels \(4, 5\).*pass upsample='bilinear'",
        ),
        (  # [B, H, W, C] features: permute them (resizing them would be wrong)
            {0: lambda x: x.permute(0, 2, 3, 1)},
            ValueError,
            r"if features is \[B, H, W, C\] .*, pass features.permute\(0, 3, 1, 2\) .*; otherwise pass "
            r"upsample='bilinear'",
        ),
        ({1: lambda s: s[:2]}, ValueError, r"superpixels must have the batch size of features \(3\)"),
        (
            {1: lambda s: s + 10**12, 2: None},
            ValueError,
            r"largest id of superpixels is 1000000000005.*relabel_contiguous",
        ),
        ({2: 10**12}, ValueError, r"num_superpixels = 1000000000000.*at most .*65536.*relabel_contiguous"),
        ({2: 4}, ValueError, "< num_superpixels = 4, got the id 5"),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return superpixel_pool(*args, **kwargs)

    def reference(
        self, x: torch.Tensor, sp: torch.Tensor, n_s: int, *, mask: Any = None, reduce: str, **_: Any
    ):
        m = None if mask is None else mask.cpu().numpy()
        return torch.from_numpy(ref_pool(x.double().cpu().numpy(), sp.cpu().numpy(), n_s, reduce, m)[0])

    def _case(self, x: torch.Tensor, sp: torch.Tensor, n_s: int, mask: torch.Tensor | None) -> Case:
        return Case(
            (x, sp, n_s),
            {"mask": mask if self.masked else None, "reduce": self.reduce, "backend": self.backend},
        )

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        sp, n_s = data.draw(label_maps())
        b, h, w = sp.shape
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
        x = torch.randn(b, data.draw(st.integers(1, 3)), h, w, generator=g, dtype=torch.float64).to(dtype)
        return self._case(x, sp, n_s, torch.rand(b, h, w, generator=g) > 0.4)

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        case = self._case(X.to(dtype), SP.clone(), 7, MASK.clone())  # id 6 is empty
        return case.map_all(lambda t: t.to(device))


class TestPoolSumMasked(TestPool):
    reduce = "sum"
    masked = True
    errors = []  # noqa: RUF012  (covered by TestPool)


class TestPoolMaxMasked(TestPool):
    reduce = "max"
    masked = True
    errors = []  # noqa: RUF012  (covered by TestPool)


class TestPoolSparse(TestPool):
    masked = True
    backend = "sparse"
    compile_kwargs = None  # sparse tensors are refused by fullgraph=True
    fast_gradcheck = True
    errors = []  # noqa: RUF012  (covered by TestPool)

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        """Every path of the sparse backend against the reference: with and without a mask, mean and sum
        (``"max"`` always scatters)."""
        case = super().draw_case(data, dtype)
        mask = case.kwargs["mask"] if data.draw(st.booleans(), label="masked") else None
        reduce = data.draw(st.sampled_from(["mean", "sum"]), label="reduce")
        return replace(case, kwargs={**case.kwargs, "mask": mask, "reduce": reduce})


class TestUnpool(OpTester):
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({0: lambda p: p[..., 0]}, ValueError, r"pooled must have shape \[B, N_s, C\]"),
        ({0: None}, TypeError, "pooled must be a torch.Tensor"),
        ({0: lambda p: p[:2]}, ValueError, r"superpixels must have the batch size of pooled \(2\)"),
        ({0: lambda p: p[:, :4]}, ValueError, r"< N_s = pooled.shape\[1\] = 4, got the id 5"),
        ({1: lambda s: s.float()}, TypeError, "superpixels must have an integer dtype"),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return superpixel_unpool(*args, **kwargs)

    def reference(self, pooled: torch.Tensor, sp: torch.Tensor, **_: Any) -> torch.Tensor:
        return torch.from_numpy(ref_unpool(pooled.double().cpu().numpy(), sp.cpu().numpy()))

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        sp, n_s = data.draw(label_maps())
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31 - 1)))
        pooled = torch.randn(sp.shape[0], n_s, data.draw(st.integers(1, 3)), generator=g, dtype=torch.float64)
        return Case((pooled.to(dtype), sp))

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        pooled = torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(3), dtype=dtype)
        return Case((pooled, SP.clone())).map(lambda t: t.to(device))


# ---------------------------------------------------------------------------------------------- semantics
def test_empty_superpixels_pool_to_zero() -> None:
    x = -torch.rand(1, 2, 2, 2) - 1  # all negative: an empty max must still be 0, not -inf
    sp = torch.tensor([[[0, 0], [3, 3]]])
    for reduce in ("mean", "sum", "max"):
        out = superpixel_pool(x, sp, 5, reduce=reduce)  # type: ignore[arg-type]  # the three literals
        assert torch.equal(out[0, 1], torch.zeros(2)) and torch.equal(out[0, 4], torch.zeros(2))


def test_masked_nan_stays_out_of_every_reduction() -> None:
    x = torch.tensor([[[[1.0, float("nan")], [3.0, 5.0]]]])
    sp = torch.zeros(1, 2, 2, dtype=torch.long)
    mask = torch.tensor([[[True, False], [True, True]]])
    for backend in ("scatter", "sparse"):
        for reduce, value in (("mean", 3.0), ("sum", 9.0), ("max", 5.0)):
            out = superpixel_pool(x, sp, mask=mask, reduce=reduce, backend=backend)  # type: ignore[arg-type]
            assert out.item() == value, (backend, reduce)


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_masked_nan_stays_out_of_every_gradient(reduce: str, backend: str) -> None:
    """The backward honours the mask as the forward does: a masked-out pixel gets a zero gradient even when it
    holds a NaN (with ``"max"`` it got NaN: the masked pixels' maximum, NaN, matched none of them), so
    ``torch.autograd.set_detect_anomaly(True)`` has nothing to report."""
    x = torch.tensor([[[[1.0, float("nan")], [3.0, 5.0]], [[2.0, -1.0], [float("nan"), 0.0]]]])
    sp = torch.tensor([[[0, 0], [1, 1]]])
    mask = torch.tensor([[[True, False], [False, True]]])
    x.requires_grad_(True)
    with torch.autograd.set_detect_anomaly(True):
        out = superpixel_pool(x, sp, 2, mask=mask, reduce=reduce, backend=backend)  # type: ignore[arg-type]
        out.sum().backward()
    assert out.isfinite().all()
    assert x.grad is not None
    assert torch.equal(x.grad[..., ~mask[0]], torch.zeros(1, 2, 2))
    expected = {"mean": 1.0, "sum": 1.0, "max": 1.0}[reduce]  # one counted pixel per superpixel and channel
    assert torch.equal(x.grad[..., mask[0]], torch.full((1, 2, 2), expected))


@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_max_pool_splits_the_gradient_among_the_tied_maxima_only(backend: str) -> None:
    """The gradient of a superpixel's maximum is shared by its pixels that hold it, 1/k each: a maximum of 0
    also counted the scatter's start value as a tie (1/(k+1) each); an empty superpixel still pools to 0."""
    x = torch.tensor([[[[0.0, 0.0, 3.0, -1.0], [-2.0, 0.0, 3.0, -1.0]]]], requires_grad=True)
    sp = torch.tensor([[[0, 0, 1, 2], [3, 0, 1, 2]]])  # id 4 is empty
    out = superpixel_pool(x, sp, 5, reduce="max", backend=backend)  # type: ignore[arg-type]
    assert out[0, :, 0].tolist() == [0.0, 3.0, -1.0, -2.0, 0.0]
    out.sum().backward()
    assert x.grad is not None
    expected = torch.tensor([[[[1 / 3, 1 / 3, 0.5, 0.5], [1.0, 1 / 3, 0.5, 0.5]]]])
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=1e-7)
    y = torch.full((1, 1, 2, 2), float("-inf"))
    assert superpixel_pool(y, torch.tensor([[[0, 0], [0, 1]]]), 3, reduce="max")[0, :, 0].tolist() == [
        float("-inf"),
        float("-inf"),
        0.0,
    ]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_max_pool_gradient_of_an_infinite_maximum_sums_to_one(backend: str, masked: bool) -> None:
    """A superpixel whose maximum is -inf (e.g. log-probabilities of 0) shares its gradient among its k tied
    pixels, 1/k each, as ``torch.amax`` does: the scatter's start value -inf was counted as a tie (1/(k+1)
    each, summing to k/(k+1)); a maximum of +inf and masked-out pixels (left out, even when -inf) alike."""
    inf = float("inf")
    x = torch.tensor([[[[-inf, -inf, -inf, inf], [-inf, 1.0, inf, -inf]]]], requires_grad=True)
    sp = torch.tensor([[[0, 0, 0, 1], [2, 2, 1, 3]]])  # 0: three -inf; 1: two +inf; 2: -inf and 1; 3: -inf
    mask = torch.tensor([[[True, True, True, True], [True, True, True, False]]]) if masked else None
    out = superpixel_pool(x, sp, 4, mask=mask, reduce="max", backend=backend)  # type: ignore[arg-type]
    expected_out = [-inf, inf, 1.0, 0.0 if masked else -inf]  # id 3 has no counted pixel when masked
    assert out[0, :, 0].tolist() == expected_out
    out.sum().backward()
    assert x.grad is not None
    expected = torch.zeros_like(x)
    counted = torch.ones_like(sp, dtype=torch.bool) if mask is None else mask
    for s in range(4):  # torch.amax of every superpixel's counted pixels, one at a time
        leaf = x.detach().clone().requires_grad_(True)
        chosen = (sp == s) & counted
        if chosen.any():
            leaf[0, 0][chosen[0]].amax().backward()
            assert leaf.grad is not None
            expected += leaf.grad
    assert torch.equal(x.grad, expected)
    assert torch.equal(x.grad[0, 0, 0, :3], torch.full((3,), 1 / 3)) and x.grad[0, 0, 1, 0] == 0.0


@settings(max_examples=budget(15))
@given(
    data=label_maps(),
    levels=st.integers(1, 3),
    masked=st.booleans(),
    backend=st.sampled_from(["scatter", "sparse"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_max_pool_gradient_matches_the_tie_sharing_reference(
    data: tuple[torch.Tensor, int], levels: int, masked: bool, backend: str, seed: int
) -> None:
    """The tie rule of ``reduce="max"`` over drawn layouts, masks and many ties (values from 1-3 levels,
    0 among them): each superpixel's upstream gradient is shared 1/k among the k counted pixels that hold
    its maximum, and nothing reaches the others (a loop over superpixels and channels)."""
    sp, n_s = data
    b, h, w = sp.shape
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, levels, (b, 2, h, w), generator=g) - 1).double().requires_grad_(True)
    mask = torch.rand(b, h, w, generator=g) > 0.4 if masked else None
    upstream = torch.randn(b, n_s, 2, generator=g, dtype=torch.float64)
    out = superpixel_pool(x, sp, n_s, mask=mask, reduce="max", backend=backend)  # type: ignore[arg-type]
    (out * upstream).sum().backward()
    values, ids = x.detach().numpy(), sp.numpy()
    counted = np.ones((b, h, w), dtype=bool) if mask is None else mask.numpy()
    expected = np.zeros_like(values)
    for i in range(b):
        for s in range(n_s):
            members = (ids[i] == s) & counted[i]
            if not members.any():
                continue
            for c in range(2):
                holders = members & (values[i, c] == values[i, c][members].max())
                expected[i, c][holders] = upstream[i, s, c].item() / holders.sum()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.from_numpy(expected))


def test_upsample_resizes_coarse_features_first() -> None:
    f = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    sp = torch.randint(0, 6, (2, 12, 16))
    for mode in ("bilinear", "nearest"):
        kw = {"align_corners": False} if mode == "bilinear" else {}
        up = F.interpolate(f, size=(12, 16), mode=mode, **kw)
        expected = torch.from_numpy(ref_pool(up.numpy(), sp.numpy(), 6, "mean")[0])
        torch.testing.assert_close(superpixel_pool(f, sp, 6, upsample=mode), expected)  # type: ignore[arg-type]
        pool = SuperpixelPool(upsample=mode)  # type: ignore[arg-type]  # the two literals
        torch.testing.assert_close(pool(f, sp, 6), expected)


def test_an_unknown_upsample_mode_is_refused_also_when_no_resize_is_needed() -> None:
    """The mode is checked at every call, not only when the sizes differ (a typo would pass silently until the
    first coarse feature map), and by ``SuperpixelPool`` at construction."""
    f, sp = torch.randn(2, 3, 4, 4), torch.randint(0, 5, (2, 4, 4))
    for op in (
        lambda mode: superpixel_pool(f, sp, 5, upsample=mode),
        lambda mode: superpixel_global_average(f, sp, 5, upsample=mode),
        lambda mode: superpixel_cam(f, sp, 5, weight=torch.randn(2, 3), upsample=mode),
    ):
        op("bilinear")  # the valid call runs
        with pytest.raises(ValueError, match=r"upsample must be one of .*, got 'linear'"):
            op("linear")
    with pytest.raises(ValueError, match=r"upsample must be one of .*, got 'linear'"):
        SuperpixelPool(upsample="linear")  # type: ignore[arg-type]  # at construction, not at the first call


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic", "area"])
def test_upsample_of_empty_features_or_to_an_empty_map(mode: str) -> None:
    # PyTorch's interpolation refuses empty tensors: C = 0 features, or a label map with H or W = 0, raised
    # its RuntimeError ("Non-empty 4D data tensor expected"); features without pixels cannot be resized
    sp = torch.zeros(2, 4, 4, dtype=torch.long)
    f = torch.randn(2, 0, 2, 2, requires_grad=True)
    assert superpixel_pool(f, sp, 3, upsample=mode).shape == (2, 3, 0)  # type: ignore[arg-type]
    assert superpixel_global_average(f, sp, 3, upsample=mode).shape == (2, 0)  # type: ignore[arg-type]
    cam = superpixel_cam(f, sp, 3, weight=torch.randn(4, 0), bias=torch.ones(4), upsample=mode)  # type: ignore[arg-type]
    assert torch.equal(cam, torch.ones(2, 4, 4, 4))
    g = torch.randn(2, 3, 2, 2, requires_grad=True)
    for empty in (torch.zeros(2, 0, 4, dtype=torch.long), torch.zeros(2, 4, 0, dtype=torch.long)):
        pooled = superpixel_pool(g, empty, 1, upsample=mode)  # type: ignore[arg-type]
        assert torch.equal(pooled, torch.zeros(2, 1, 3))
        (grad,) = torch.autograd.grad(pooled.sum(), g, allow_unused=True)
        assert grad is not None and torch.equal(grad, torch.zeros_like(g))
    no_pixels = torch.randn(2, 3, 0, 0, requires_grad=True)  # to an empty map of another size: empty too
    for empty in (sp[:, :0], sp[:, :, :0]):
        assert superpixel_pool(no_pixels, empty, 1, upsample=mode).shape == (2, 1, 3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=r"features must have h, w >= 1 to be resized .* got shape \(2, 3, 0, 2\)"
    ):
        superpixel_pool(torch.randn(2, 3, 0, 2), sp, 3, upsample=mode)  # type: ignore[arg-type]


def test_module_options_and_forward_order() -> None:
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    sp = torch.randint(0, 5, (2, 4, 4))
    mask = torch.rand(2, 4, 4) > 0.3
    pool = SuperpixelPool("max", backend="sparse")
    expected = ref_pool(x.numpy(), sp.numpy(), 6, "max", mask.numpy())[0]
    np.testing.assert_allclose(pool(x, sp, 6, mask=mask).numpy(), expected)
    assert repr(pool) == "SuperpixelPool(reduce='max', upsample=None, backend='sparse')"
    assert repr(SuperpixelPool(validate=False)) == (
        "SuperpixelPool(reduce='mean', upsample=None, backend='auto', validate=False)"
    )
    with pytest.raises(ValueError, match="reduce must be one of"):
        SuperpixelPool("min")  # type: ignore[arg-type]  # the error under test


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_sums_accumulate_in_float32(dtype: torch.dtype) -> None:
    x = torch.full((1, 1, 50, 100), 20.0, dtype=dtype)  # 5000 x 20: a half sum would overflow or stagnate
    sp = torch.zeros(1, 50, 100, dtype=torch.long)
    assert superpixel_pool(x, sp, 1).item() == 20.0
    assert superpixel_pool(x.float(), sp, 1, reduce="sum").item() == 100000.0


def test_batch_zero() -> None:
    sp = torch.zeros(0, 4, 4, dtype=torch.long)
    assert superpixel_pool(torch.randn(0, 3, 4, 4), sp, 5).shape == (0, 5, 3)
    assert superpixel_unpool(torch.zeros(0, 5, 3), sp).shape == (0, 3, 4, 4)


def test_unpool_of_a_channels_first_pooled_tensor_names_the_layout() -> None:
    """``[B, C, N_s]`` (the uniformize layout) instead of ``[B, N_s, C]``: the error says how to fix it."""
    sp = torch.randint(0, 40, (2, 8, 8))
    sp[0, 0, 0], sp[1, 0, 0] = 39, 0  # the largest id, and an id 0 (so that sp - 1 holds -1)
    pooled = superpixel_pool(torch.randn(2, 21, 8, 8), sp, 40).transpose(1, 2)  # [2, 21, 40]
    layout = r"pooled.shape\[1\] = 21, got the id 39.*\[B, N_s, C\].*\(2, 21, 40\).*pooled\.transpose\(1, 2\)"
    with pytest.raises(ValueError, match=layout):
        superpixel_unpool(pooled, sp)
    with pytest.raises(ValueError, match="must be >= 0, got the id -1"):  # a negative id: its own message
        superpixel_unpool(pooled.transpose(1, 2), sp - 1)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_unpool_of_a_wide_pooled_tensor_does_not_depend_on_requires_grad(requires_grad: bool) -> None:
    """The slot limit guards allocations sized by an id; ``pooled`` is that wide already (limit: 2**16)."""
    sp = torch.tensor([[[0, 1], [2**16, 2**16 + 3]]])
    pooled = torch.randn(1, 2**16 + 4, 2, requires_grad=requires_grad)
    out = superpixel_unpool(pooled, sp)
    expected = pooled.detach()[0, sp[0]].permute(2, 0, 1)[None]
    assert torch.equal(out.detach(), expected)
    if requires_grad:
        out.sum().backward()
        counts = torch.zeros(2**16 + 4).index_add_(0, sp.flatten(), torch.ones(4))
        assert torch.equal(pooled.grad[0], counts[:, None].expand(-1, 2))


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_pooled_features_are_contiguous(reduce: str, backend: str) -> None:
    """``[B, N_s, C]`` dense: it was a transposed view of the accumulators (``pooled.view(B, -1)`` failed)."""
    x, sp = torch.randn(2, 3, 4, 5), torch.randint(0, 6, (2, 4, 5))
    pooled = superpixel_pool(x, sp, 6, reduce=reduce, backend=backend)
    assert pooled.shape == (2, 6, 3) and pooled.is_contiguous()
    assert torch.equal(pooled.view(2, -1), pooled.reshape(2, -1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("upsample", ["bilinear", "bicubic"])
def test_half_features_are_resized_in_float32_and_rounded_once(dtype: torch.dtype, upsample: str) -> None:
    """Half features that need resizing give the float32 result rounded once: interpolating in their own dtype
    rounded every resized pixel before the pooling rounded again (36-50 % of the means 1 ulp off)."""
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(2, 8, 16, 16, generator=g)).to(dtype)
    sp = torch.randint(0, 64, (2, 64, 64), generator=g)
    for reduce in ("mean", "sum", "max"):
        out = superpixel_pool(x, sp, 64, reduce=reduce, upsample=upsample)
        assert out.dtype == dtype
        expected = superpixel_pool(x.float(), sp, 64, reduce=reduce, upsample=upsample).to(dtype)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    average = superpixel_global_average(x, sp, 64, upsample=upsample)
    expected = superpixel_global_average(x.float(), sp, 64, upsample=upsample).to(dtype)
    torch.testing.assert_close(average, expected, rtol=0, atol=0)
    w = torch.randn(3, 8, generator=g).to(dtype)
    cam = superpixel_cam(x, sp, 64, weight=w, upsample=upsample)
    means = superpixel_pool(x.float(), sp, 64, upsample=upsample).to(dtype)  # the means, rounded once
    torch.testing.assert_close(cam, superpixel_unpool(F.linear(means, w), sp), rtol=0, atol=0)


class _AllocatedBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """The bytes of every strided tensor an op makes (forward and backward), summed."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for t in outs:
            if isinstance(t, torch.Tensor) and t.layout == torch.strided and t._base is None:
                self.total += t.untyped_storage().nbytes()
        return out


@pytest.mark.parametrize("expanded", [False, True])
def test_unpool_with_more_slots_than_pixels_allocates_the_gradient_not_a_layout_of_every_slot(
    expanded: bool,
) -> None:
    """A 4x4 map and ``pooled[1, N_s, 1]`` with many more slots than pixels: the backward built its layout
    over all ``N_s`` slots, about 60 bytes a slot (1962 MB at N_s = 2**25, 15x the gradient's 128 MB, also
    from a zero-stride ``pooled`` of 4 bytes). It now lays out the distinct ids of each image (memory of the
    pixels) and allocates little more than the gradient; the values and the gradient are the reference's."""
    n_s = 2**18
    sp = torch.tensor([[[0, 5, 5, 7], [2**18 - 1, 7, 7, 0], [9, 9, 9, 9], [0, 0, 5, 2**17]]])
    g = torch.Generator().manual_seed(0)
    pooled = torch.randn(1, 1 if expanded else n_s, 1, dtype=torch.float64, generator=g).requires_grad_(True)
    source = pooled.expand(1, n_s, 1)  # expanded: one stored value for every slot
    grad = torch.randn(1, 1, 4, 4, dtype=torch.float64, generator=g)
    with _AllocatedBytes() as mode:
        out = superpixel_unpool(source, sp)
        (pooled_grad,) = torch.autograd.grad(out, pooled, grad)
    assert torch.equal(out.detach(), torch.from_numpy(ref_unpool(source.detach().numpy(), sp.numpy())))
    reference = torch.zeros(n_s, dtype=torch.float64).index_add_(0, sp.flatten(), grad.flatten())
    torch.testing.assert_close(
        pooled_grad.flatten(), reference.sum(0, keepdim=True) if expanded else reference
    )
    assert mode.total <= 2 * 8 * n_s + 64 * 1024  # the gradient (with its zeros) and the pixels' work
    for dtype in (torch.uint8, torch.int16, torch.int32):  # narrow ids read the rows of pooled as int64 ones
        narrow = superpixel_unpool(source, sp.clamp_max(255).to(dtype))
        assert torch.equal(narrow, superpixel_unpool(source, sp.clamp_max(255)))
    small = torch.randn(1, 40, 2, dtype=torch.float64, requires_grad=True)  # 40 slots, 16 pixels
    assert torch.autograd.gradcheck(lambda p: superpixel_unpool(p, sp % 40), (small,))
    assert torch.autograd.gradgradcheck(lambda p: superpixel_unpool(p, sp % 40), (small,))


def test_pool_refuses_superpixels_on_another_device_than_the_features() -> None:
    """Types, shapes and devices are always checked: a label map on another device than the features is
    refused naming both (as uniformize does), also with validate=False."""
    for validate in (True, False):
        with pytest.raises(ValueError, match=r"superpixels must be on the same device as features \(cpu\)"):
            superpixel_pool(X, SP.to("meta"), 7, validate=validate)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("backend", ["scatter", "sparse"])
def test_max_pool_of_a_counted_nan_is_nan_with_torch_amax_gradient(backend: str, masked: bool) -> None:
    """A NaN at a counted pixel makes its superpixel's ``"max"`` NaN (never hidden, the uniformization page's
    "Extreme values"; the scatter starts from NaN, which an empty superpixel keeps until it is set to 0, so
    mapping the NaN results to 0 would hide it), the other superpixels and an empty one are unaffected, and
    the gradient is ``torch.amax``'s of every superpixel's counted pixels: NaN for every counted pixel of the
    NaN superpixel, the others untouched (a masked pixel of it gets 0)."""
    nan = float("nan")
    x = torch.tensor(
        [[[[1.0, nan, 4.0, 4.0], [2.0, 7.0, -1.0, 3.0]]]], dtype=torch.float64, requires_grad=True
    )
    sp = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 2]]])  # id 3 is empty
    mask = torch.tensor([[[True, True, True, True], [True, False, True, True]]]) if masked else None
    out = superpixel_pool(x, sp, 4, mask=mask, reduce="max", backend=backend)  # type: ignore[arg-type]
    assert out[0, 0, 0].isnan() and out[0, 1:, 0].tolist() == [4.0, 3.0, 0.0]
    out.sum().backward()
    assert x.grad is not None
    counted = torch.ones_like(sp, dtype=torch.bool) if mask is None else mask
    expected = torch.zeros_like(x)
    for s in range(3):  # torch.amax of every non-empty superpixel's counted pixels
        leaf = x.detach().clone().requires_grad_(True)
        leaf[0, 0][((sp == s) & counted)[0]].amax().backward()
        assert leaf.grad is not None
        expected += leaf.grad
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0, equal_nan=True)
    assert x.grad[0, 0, 0, :2].isnan().all() and x.grad[0, 0, 0, 2:].tolist() == [0.5, 0.5]
    assert x.grad[0, 0, 1, 1].isnan() != masked  # the masked pixel of the NaN superpixel: 0
