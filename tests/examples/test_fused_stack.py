"""The fusion stack in one autograd Function (``fused_stack``) against autograd on the layers."""

from __future__ import annotations

import itertools
import warnings
from typing import Any
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

import examples.voc_joint.models.fused_conv_stack as fcs
import sparse_ops
from examples.voc_joint.models.fused_stack import fused_stack

SLOPES = {"relu": 0.0, "leaky_relu": 0.2, None: None}
needs_onednn = pytest.mark.skipif(
    not fcs.conv_products_available(torch.device("cpu"), torch.float32), reason="oneDNN is not available"
)


def _params(
    widths: list[int], bias: list[bool], dtype: torch.dtype, device: torch.device, seed: int = 0
) -> tuple[list[Tensor], list[Tensor | None]]:
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(o, i, generator=g, dtype=dtype).to(device) for i, o in itertools.pairwise(widths)]
    bs = [
        torch.randn(o, generator=g, dtype=dtype).to(device) if b else None
        for o, b in zip(widths[1:], bias, strict=True)
    ]
    return [w.requires_grad_() for w in ws], [None if b is None else b.requires_grad_() for b in bs]


def _reference(s: Tensor, u: Tensor, ws: list[Tensor], bs: list[Tensor | None], act: str | None) -> Tensor:
    """The obvious form: 1x1 convolutions on ``cat([S, U])`` with the activation between layers."""
    z = torch.cat([s, u], dim=1)
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        z = F.conv2d(z, w[:, :, None, None], b)
        if i < len(ws) - 1 and act is not None:
            z = F.relu(z) if act == "relu" else F.leaky_relu(z, SLOPES[act])
    return z


def _grads(out: Tensor, inputs: list[Tensor], g: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("chunk", [None, 7, 30, 1000])
@pytest.mark.parametrize("memory_format", ["nchw", "channels_last"])
@pytest.mark.parametrize("recompute", [False, True])
def test_matches_autograd_through_the_layers(
    act: str | None, chunk: int | None, memory_format: str, recompute: bool, device: torch.device
) -> None:
    """Output and every gradient equal the 1x1-conv form, for chunks that split images unevenly (7), that
    hold one image (None, 1000), both memory formats, with and without recomputation."""
    ws, bs = _params([6, 10, 8, 3], [True, False, True], torch.float64, device)
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64).to(device)
    u = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64).to(device)
    if memory_format == "channels_last":
        s, u = (t.contiguous(memory_format=torch.channels_last) for t in (s, u))
    s.requires_grad_(), u.requires_grad_()
    grad = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64).to(device)
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    out = fused_stack(s, u, ws, bs, SLOPES[act], chunk=chunk, recompute=recompute)
    ref = _reference(s, u, ws, bs, act)
    assert out.is_contiguous() and out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    for got, want in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad), strict=True):
        torch.testing.assert_close(got, want)


def test_gradcheck() -> None:
    ws, bs = _params([4, 6, 6, 2], [True, True, False], torch.float64, torch.device("cpu"))
    s = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    u = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    for recompute in (False, True):

        def fn(s: Tensor, u: Tensor, *p: Tensor, recompute: bool = recompute) -> Tensor:
            return fused_stack(s, u, list(p[:3]), [p[3], p[4], None], 0.1, chunk=5, recompute=recompute)

        assert torch.autograd.gradcheck(fn, (s, u, *ws, bs[0], bs[1]))


def _saved(fn) -> dict[int, int]:  # type: ignore[no-untyped-def]
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return seen


@pytest.mark.parametrize("products", ["mm", pytest.param("conv", marks=needs_onednn)])
def test_recompute_keeps_only_the_inputs(products: str) -> None:
    """Without recomputation the hidden activations are kept; with it only S and U (and the parameters);
    with ``u_of`` not even U, which is rebuilt from S in backward, and U's own graph still gets its gradient;
    in both forms of the products.
    """
    ws, bs = _params([6, 16, 16, 3], [True, True, True], torch.float32, torch.device("cpu"))
    ids = torch.arange(40).view(1, 5, 8).div(4, rounding_mode="floor").expand(2, 5, 8).contiguous()
    enc = sparse_ops.SuperpixelAssignment(ids, 10)
    s = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    params = sum(p.numel() * 4 for p in [*ws, *bs] if p is not None)
    data = s.numel() * 4
    runs = {}
    for name, kwargs in {
        "kept": {},
        "recompute": {"recompute": True},
        "u_of": {"recompute": True, "u_of": enc.uniformize},
    }.items():
        out: list[Tensor] = []

        def forward(kwargs: dict = kwargs, out: list[Tensor] = out) -> None:
            out.append(fused_stack(s, enc.uniformize(s), ws, bs, 0.0, products=products, **kwargs))  # type: ignore[arg-type]

        saved = _saved(forward)
        runs[name] = (sum(saved.values()), torch.autograd.grad(out[0].square().sum(), [s, *ws]))
    graph_u = enc_bytes(enc, s)
    hidden = 2 * 16 * 80 * 4  # two 16-wide hidden layers over 2 x 40 pixels
    assert runs["kept"][0] == params + 2 * data + hidden + graph_u
    assert runs["recompute"][0] == params + 2 * data + graph_u
    assert runs["u_of"][0] == params + data + graph_u
    for name in ("recompute", "u_of"):
        for got, want in zip(runs[name][1], runs["kept"][1], strict=True):
            torch.testing.assert_close(got, want)


def enc_bytes(enc: sparse_ops.SuperpixelAssignment, s: Tensor) -> int:
    """What U's own graph node saves (the assignment's index tensors): the same in every run."""
    return sum(_saved(lambda: enc.uniformize(s)).values())


def test_expanded_gradient() -> None:
    """A stride-0 incoming gradient (``out.sum()``) is read like a dense one."""
    ws, bs = _params([4, 6, 2], [True, True], torch.float64, torch.device("cpu"))
    s = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    u = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(fused_stack(s, u, ws, bs, 0.0, chunk=4).sum(), [s, u, *ws])
    want = torch.autograd.grad(_reference(s, u, ws, bs, "relu").sum(), [s, u, *ws])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_needs_two_layers_and_a_bias_per_weight() -> None:
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    s = u = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="at least 2 layers and one bias"):
        fused_stack(s, u, ws[:1], bs[:1], 0.0)
    with pytest.raises(ValueError, match="got 2 weights and 1 biases"):
        fused_stack(s, u, ws, bs[:1], 0.0)


def test_rejects_mismatched_shapes_and_a_negative_slope() -> None:
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    s = torch.randn(2, 2, 3, 3)
    for u in (torch.randn(2, 2, 4, 3), torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3, 1)):
        with pytest.raises(
            ValueError, match=r"s and u must have the same shape \[B, C, H, W\], got \(2, 2, 3, 3\)"
        ):
            fused_stack(s, u, ws, bs, 0.0)
    with pytest.raises(
        ValueError, match=r"u of shape \(2, 2, 9\) is read as U per superpixel .* got pool=None"
    ):
        fused_stack(s, torch.randn(2, 2, 9), ws, bs, 0.0)
    pool = (torch.zeros(2, 9, dtype=torch.long), torch.ones(2, 4))
    for u in (torch.randn(2, 5, 2), torch.randn(2, 4, 3), torch.randn(1, 4, 2)):
        with pytest.raises(
            ValueError, match=r"u per superpixel must have shape \[B, N_s, C\] = \[2, 4, 2\] \(N_s of pool\)"
        ):
            fused_stack(s, u, ws, bs, 0.0, pool=pool)
    with pytest.raises(ValueError, match=r"layer 0: weight must be \(out, 6\) .* got weight \(6, 4\)"):
        fused_stack(torch.randn(2, 3, 3, 3), torch.randn(2, 3, 3, 3), ws, bs, 0.0)
    with pytest.raises(
        ValueError, match=r"layer 1: weight must be \(out, 6\) and bias \(out,\) or None, got .* bias \(3,\)"
    ):
        fused_stack(s, s, ws, [bs[0], torch.zeros(3)], 0.0)
    with pytest.raises(ValueError, match=r"slope must be None, 0\.0 .* got -0\.1"):
        fused_stack(s, s, ws, bs, -0.1)
    for chunk in (0, -5, True, 2.0):  # before: 0 and -5 ran as one pixel (or row) per chunk, silently slow
        with pytest.raises(ValueError, match=rf"chunk must be None or an int >= 1 .* got {chunk!r}"):
            fused_stack(s, s, ws, bs, 0.0, chunk=chunk)  # type: ignore[arg-type]  # the bad value is the point


def test_s_and_u_of_another_rank_are_refused_even_when_alike() -> None:
    """``S`` and ``U`` of one shape but not ``[B, C, H, W]`` (5-d here): the ValueError that names the
    expected shape and the ones given (not Python's "too many values to unpack")."""
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    s = torch.randn(2, 2, 3, 3, 1)
    with pytest.raises(
        ValueError, match=r"s and u must have the same shape \[B, C, H, W\], got \(2, 2, 3, 3, 1\) and"
    ):
        fused_stack(s, s, ws, bs, 0.0)


def test_a_nan_slope_is_refused() -> None:
    """A NaN slope is no LeakyReLU slope: refused like a negative one, naming it (a check ``slope < 0`` lets
    it through, and every activation would be NaN)."""
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    s = torch.randn(2, 2, 3, 3)
    with pytest.raises(
        ValueError, match=r"slope must be None, 0\.0 \(ReLU\) or a LeakyReLU slope > 0, got nan"
    ):
        fused_stack(s, s, ws, bs, float("nan"))


@pytest.mark.parametrize("recompute", [False, True])
def test_a_chunk_larger_than_the_images_takes_buffers_of_the_images(recompute: bool) -> None:
    """``chunk`` is an upper bound: chunks of up to 2**40 pixels over 3 x 4 images run with buffers of 12
    rows (sized by ``chunk``, the hidden and gradient buffers could not be allocated), with the reference's
    output and gradients."""
    ws, bs = _params([4, 6, 6, 2], [True, True, True], torch.float64, torch.device("cpu"))
    g = torch.Generator().manual_seed(22)
    s, u = (torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    out = fused_stack(s, u, ws, bs, 0.0, chunk=2**40, recompute=recompute, products="mm")
    ref = _reference(s, u, ws, bs, "relu")
    torch.testing.assert_close(out, ref)
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    for got, want in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_nchw_and_channels_last_inputs_are_kept_without_a_copy(memory_format: torch.memory_format) -> None:
    """``S`` and ``U`` in NCHW or channels_last are read in place (every image a column- or row-major pixel
    matrix): what the matrix-product form keeps for backward is their own storage, not a copy of them."""
    ws, bs = _params([6, 8, 3], [True, True], torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(23)
    s, u = (
        torch.randn(2, 3, 5, 6, generator=g).contiguous(memory_format=memory_format).requires_grad_()
        for _ in range(2)
    )
    saved = _saved(lambda: fused_stack(s, u, ws, bs, 0.0, recompute=True, products="mm"))
    assert s.untyped_storage().data_ptr() in saved and u.untyped_storage().data_ptr() in saved


@pytest.mark.parametrize("recompute", [False, True])
def test_a_last_chunk_shorter_than_the_others_is_written_in_its_own_rows(recompute: bool) -> None:
    """Chunks of 7 over images of 30 pixels end with a chunk of 2: every product writes into exactly its
    chunk's rows of the shared buffers, with no resizing of an ``out=`` view (whose warning, an error under
    ``-W error``, said so) and the reference's values."""
    ws, bs = _params([6, 10, 8, 3], [True, False, True], torch.float64, torch.device("cpu"))
    g = torch.Generator().manual_seed(24)
    s, u = (torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2))
    grad = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = fused_stack(s, u, ws, bs, 0.0, chunk=7, recompute=recompute, products="mm")
        got = _grads(out, inputs, grad)
    ref = _reference(s, u, ws, bs, "relu")
    torch.testing.assert_close(out, ref)
    for a, b in zip(got, _grads(ref, inputs, grad), strict=True):
        torch.testing.assert_close(a, b)


def test_empty_batch() -> None:
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    assert fused_stack(torch.randn(0, 2, 3, 3), torch.randn(0, 2, 3, 3), ws, bs, 0.0).shape == (0, 2, 3, 3)


@pytest.mark.parametrize("products", ["auto", "mm"])
@pytest.mark.parametrize("size", [(0, 3), (3, 0)])
@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("chunk", [4, None])
def test_empty_images(products: str, size: tuple[int, int], pooled: bool, chunk: int | None) -> None:
    """Images without pixels (H or W = 0), like an empty batch: an empty output, or with ``pool`` every
    superpixel empty (0), and zero gradients, in every form (the conv form divided by zero rows with
    ``pool`` and refused a zero-width convolution), also with one chunk per image (``chunk=None``: chunks of
    0 pixels would be a zero step)."""
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    s = torch.randn(2, 2, *size, requires_grad=True)
    pool = (torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 3)) if pooled else None
    out = fused_stack(s, s, ws, bs, 0.0, chunk=chunk, products=products, pool=pool)  # type: ignore[arg-type]
    assert torch.equal(out, torch.zeros((2, 3, 2) if pooled else (2, 2, *size)))
    for g in torch.autograd.grad(out.sum(), [s, *ws, *bs]):  # type: ignore[list-item]
        assert not g.any()


def test_inference_keeps_no_activations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without autograd every chunk's activations go through one set of buffers (the memory of evaluation
    does not grow with the image), with the same values (matrix products; the convolutions' form below)."""
    import examples.voc_joint.models.fused_stack as fs

    calls: list[bool] = []
    hidden = fs._hidden
    monkeypatch.setattr(fs, "_hidden", lambda *a: calls.append(a[-1] is not None) or hidden(*a))
    ws, bs = _params([6, 8, 3], [True, True], torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(4)
    s, u = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 5, 6, generator=g)
    with torch.no_grad():
        out = fused_stack(s, u, ws, bs, 0.0, chunk=7, products="mm")
    assert calls == [True] * 10  # 2 images x 5 chunks, all into the shared buffers
    torch.testing.assert_close(out, _reference(s, u, ws, bs, "relu").detach())
    calls.clear()
    fused_stack(s, u, ws, bs, 0.0, chunk=7, products="mm")  # with autograd: each chunk's own, kept
    assert calls == [False] * 10


def test_runs_in_the_parameters_dtype_under_autocast() -> None:
    """bfloat16 inputs under CPU autocast: the stack runs in float32, its weights' dtype, like on float32
    inputs (autocast would run the products in bfloat16)."""
    ws, bs = _params([6, 8, 3], [True, True], torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(2)
    s, u = (torch.randn(2, 3, 4, 5, generator=g).bfloat16() for _ in range(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_stack(s, u, ws, bs, 0.0, chunk=7)
    assert out.dtype == torch.float32
    # float32 rounding (the default tolerances: summation order differs from the convolutions); products in
    # bfloat16 would be off by ~1e-2
    torch.testing.assert_close(out, _reference(s.float(), u.float(), ws, bs, "relu"))


class _Products(TorchDispatchMode):
    """Records ``(rows, columns, inner size)`` of every matrix product (``mm``, ``addmm``, ``addmm_``) run
    under it."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, int, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            a = args[0] if func.overloadpacket is torch.ops.aten.mm else args[1]
            self.shapes.append((out.shape[0], out.shape[1], a.shape[1]))
        return out


@pytest.mark.parametrize("trained", ["inputs", "last", "middle", "first_bias"])
@pytest.mark.parametrize("recompute", [False, True])
def test_frozen_parameters_cost_no_products(trained: str, recompute: bool) -> None:
    """Only the gradients asked for are computed: no weight-gradient product for a frozen weight, and the
    backward stops at the lowest layer that needs a gradient; those gradients are still the reference's."""
    ws, bs = _params([6, 10, 8, 3], [True, False, True], torch.float64, torch.device("cpu"))
    for t in (*ws, *[b for b in bs if b is not None]):
        t.requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    s, u, grad = (torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64) for _ in range(3))
    wanted = {"inputs": [s, u], "last": [ws[2]], "middle": [ws[1]], "first_bias": [bs[0]]}[trained]
    for t in wanted:
        assert t is not None
        t.requires_grad_(True)
    out = fused_stack(s, u, ws, bs, 0.2, chunk=7, recompute=recompute)
    with _Products() as products:
        got = torch.autograd.grad(out, wanted, grad)
    want = torch.autograd.grad(_reference(s, u, ws, bs, "leaky_relu"), wanted, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # weight-gradient products have the weights' shapes and the chunk's rows inside (no other product
    # does: chunks are 7 or 2 rows); the first layer's comes as two halves (S and U)
    weight_grads = {(o, i) for o, i, k in products.shapes if k in (7, 2)}
    assert (
        weight_grads == {"inputs": set(), "last": {(3, 8)}, "middle": {(8, 10)}, "first_bias": set()}[trained]
    )
    # the backward going down: the gradient times a weight, (rows, 8) inside 3 below the last layer,
    # (rows, 10) inside 8 below the middle one (recomputed activations are (rows, 10) inside 3 and (rows, 8)
    # inside 10); none below the lowest layer asked for
    down = {(i, k) for r, i, k in products.shapes if r in (7, 2) and (i, k) in {(8, 3), (10, 8)}}
    assert (
        down
        == {
            "inputs": {(8, 3), (10, 8)},
            "last": set(),
            "middle": {(8, 3)},
            "first_bias": {(8, 3), (10, 8)},
        }[trained]
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_parameters_sum_their_chunks_in_float32(dtype: torch.dtype) -> None:
    """Half-precision parameters: every chunk's weight and bias gradient is added in float32 and the total
    rounded once, so one-pixel chunks (900 of them) stay within a few roundings of the float64 sum; added
    in the half type, the running sums would drift by several per cent."""
    ws, bs = _params([4, 6, 2], [True, True], dtype, torch.device("cpu"))
    g = torch.Generator().manual_seed(4)
    s, u, grad = (torch.randn(1, 2, 30, 30, generator=g).to(dtype) for _ in range(3))
    params = [ws[0], ws[1], bs[0], bs[1]]
    out = fused_stack(s, u, ws, bs, None, chunk=1, recompute=True)  # linear: no activation mask to flip
    got = torch.autograd.grad(out, params, grad)
    exact = [p.detach().double().requires_grad_() for p in params]
    ref = _reference(s.double(), u.double(), exact[:2], exact[2:], None)
    want = torch.autograd.grad(ref, exact, grad.double())
    for a, b in zip(got, want, strict=True):
        assert a.dtype == dtype
        # measured: at most 2.4e-3 of the largest gradient (bfloat16), 6e-4 (float16); with the chunks added
        # in the half type, 4.2e-2 (bfloat16) and 7.1e-3 (float16)
        tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * float(b.abs().max()))


def test_half_bias_gradient_sums_each_chunk_in_float32() -> None:
    """A bfloat16 bias's gradient: every chunk's row sum is taken in float32, not rounded to bfloat16 before
    the chunks are added. Chunks of 2 pixels with last-layer gradients ``[1, 2**-8]`` and ``[2**-8, 0]``: the
    float32 sum ``1 + 2**-7`` is a bfloat16 value; the first chunk's sum rounded to bfloat16 (``1``) would
    give ``1 + 2**-8``, which rounds to ``1``."""
    ws, bs = _params([2, 2, 1], [True, True], torch.bfloat16, torch.device("cpu"))
    s = u = torch.zeros(1, 1, 1, 4, dtype=torch.bfloat16)
    out = fused_stack(s, u, ws, bs, None, chunk=2)
    grad = torch.tensor([1.0, 2**-8, 2**-8, 0.0], dtype=torch.bfloat16).view(1, 1, 1, 4)
    bias = bs[1]
    assert bias is not None
    (gb,) = torch.autograd.grad(out, [bias], grad)
    assert gb.dtype == torch.bfloat16 and gb.item() == 1 + 2**-7


@pytest.mark.parametrize("products", ["mm", pytest.param("conv", marks=needs_onednn)])
def test_u_of_is_ignored_for_s_not_in_the_parameters_dtype(products: str) -> None:
    """``S`` in another dtype than the parameters (bfloat16 logits of a network under autocast, float32
    stack): ``U`` is kept and ``u_of`` ignored (as documented), since ``u_of`` would see ``S`` cast to
    float32 and give float32 means, not the bfloat16 ``U`` given: the gradients are those without ``u_of``."""
    ids = torch.arange(40).view(1, 5, 8).div(4, rounding_mode="floor").expand(2, 5, 8).contiguous()
    enc = sparse_ops.SuperpixelAssignment(ids, 10)
    g = torch.Generator().manual_seed(18)
    s = torch.randn(2, 3, 5, 8, generator=g).bfloat16()
    u = enc.uniformize(s)
    assert not torch.equal(u.float(), enc.uniformize(s.float()))  # what u_of would rebuild is not U
    ws, bs = _params([6, 10, 3], [True, True], torch.float32, torch.device("cpu"))
    grad = torch.randn(2, 3, 5, 8, generator=g)
    results = []
    for u_of in (None, enc.uniformize):
        out = fused_stack(s, u, ws, bs, 0.0, recompute=True, u_of=u_of, products=products)  # type: ignore[arg-type]
        results.append(torch.autograd.grad(out, [*ws, *[b for b in bs if b is not None]], grad))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("recompute", [False, True])
def test_gradient_of_u_alone_through_frozen_layers(recompute: bool) -> None:
    """Only ``U`` asks for a gradient (``S`` and every layer frozen): the backward still goes down to the
    first layer; without activation and biases, dU = W_2 W_1U = 5 x 3 at every pixel."""
    s = torch.randn(1, 1, 2, 3, dtype=torch.float64)
    u = torch.randn(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
    ws = [torch.tensor([[2.0, 3.0]], dtype=torch.float64), torch.tensor([[5.0]], dtype=torch.float64)]
    out = fused_stack(s, u, ws, [None, None], None, chunk=4, recompute=recompute)
    torch.testing.assert_close(out, 5 * (2 * s + 3 * u), rtol=0, atol=1e-12)
    (gu,) = torch.autograd.grad(out, [u], torch.ones_like(out))
    assert torch.equal(gu, torch.full_like(u, 15.0))


# ------------------------------------------------------------------ products as oneDNN 1x1 convolutions (CPU)


@needs_onednn
@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("chunk", [None, 7, 12, 13, 1000])
@pytest.mark.parametrize("memory_format", ["nchw", "channels_last"])
@pytest.mark.parametrize("recompute", [False, True])
def test_conv_products_match_float64(
    act: str | None, chunk: int | None, memory_format: str, recompute: bool
) -> None:
    """``products="conv"`` in float32: output and every gradient within float32 rounding of the float64
    reference, for chunks of one image row (7 over rows of 6 pixels), of two rows that split the image
    unevenly (12, 13: 2 + 2 + 1 rows), of whole images (None, 1000), both memory formats, with and without
    recomputation; the matrix products are held to the same tolerance."""
    ws, bs = _params([6, 10, 8, 3], [True, False, True], torch.float64, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    s, u, grad = (torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64) for _ in range(3))
    if memory_format == "channels_last":
        s, u = (t.contiguous(memory_format=torch.channels_last) for t in (s, u))
    exact = [t.detach().requires_grad_() for t in (s, u, *ws, bs[0], bs[2])]
    single = [t.detach().float().requires_grad_() for t in exact]
    results = {}
    for products in ("conv", "mm"):
        s32, u32, w0, w1, w2, b0, b2 = single
        out = fused_stack(
            s32,
            u32,
            [w0, w1, w2],
            [b0, None, b2],
            SLOPES[act],
            chunk=chunk,
            recompute=recompute,
            products=products,
        )
        results[products] = (out, *_grads(out, single, grad.float()))
    s64, u64, w0, w1, w2, b0, b2 = exact
    ref = _reference(s64, u64, [w0, w1, w2], [b0, None, b2], act)
    want = (ref, *_grads(ref, exact, grad))
    assert results["conv"][0].is_contiguous() and results["conv"][0].dtype == torch.float32
    for products, got in results.items():  # both forms within the same float32 rounding of float64
        for a, w in zip(got, want, strict=True):
            torch.testing.assert_close(
                a.double(), w, rtol=1e-5, atol=1e-5 * float(w.detach().abs().max()), msg=products
            )


@needs_onednn
def test_conv_products_are_the_float32_cpu_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``products="auto"`` runs the convolutions for float32 on the CPU (without autograd: recomputing, so
    nothing is kept), the matrix products for float64 and half types; ``"mm"`` never the convolutions."""
    calls: list[bool] = []
    conv_stack = fcs.fused_conv_stack
    import examples.voc_joint.models.fused_stack as fs

    def spy(*args: Any, recompute: bool, **kwargs: Any) -> Tensor:
        calls.append(recompute)
        return conv_stack(*args, recompute=recompute, **kwargs)

    monkeypatch.setattr(fs, "fused_conv_stack", spy)
    for dtype, products, expected in (
        (torch.float32, "auto", [False]),
        (torch.float64, "auto", []),
        (torch.bfloat16, "auto", []),
        (torch.float32, "mm", []),
        (torch.float32, "conv", [False]),
    ):
        ws, bs = _params([4, 6, 2], [True, True], dtype, torch.device("cpu"))
        s = torch.randn(1, 2, 3, 3, dtype=dtype)
        calls.clear()
        fused_stack(s, s, ws, bs, 0.0, products=products)
        assert calls == expected, (dtype, products)
    calls.clear()
    with torch.no_grad():
        fused_stack(s.float(), s.float(), [w.float() for w in ws], [b.float() for b in bs], 0.0)
    assert calls == [True]


@needs_onednn
def test_conv_products_follow_the_parameters_dtype_not_the_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack runs in its parameters' dtype, so they choose the products: bfloat16 ``S`` and ``U`` (from
    networks under autocast) with float32 parameters run the convolutions; float32 inputs with float64
    parameters cannot (``products="conv"`` refused, naming float64)."""
    import examples.voc_joint.models.fused_stack as fs

    calls: list[bool] = []
    conv_stack = fcs.fused_conv_stack

    def spy(*args: Any, **kwargs: Any) -> Tensor:
        calls.append(True)
        return conv_stack(*args, **kwargs)

    monkeypatch.setattr(fs, "fused_conv_stack", spy)
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    s = torch.randn(1, 2, 3, 3, dtype=torch.bfloat16)
    assert fused_stack(s, s, ws, bs, 0.0).dtype == torch.float32 and calls == [True]
    ws64, bs64 = _params([4, 6, 2], [True, True], torch.float64, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"products='conv' needs float32 parameters .* got torch.float64"):
        fused_stack(s.float(), s.float(), ws64, bs64, 0.0, products="conv")


def test_conv_products_refused_where_they_cannot_run() -> None:
    """``products="conv"`` in float64 (oneDNN has no float64 convolution) or an unknown value: a ValueError
    naming the argument, what it needs and what it got."""
    ws, bs = _params([4, 6, 2], [True, True], torch.float64, torch.device("cpu"))
    s = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(
        ValueError, match=r"products='conv' needs float32 parameters on the CPU .* got torch.float64 on cpu"
    ):
        fused_stack(s, s, ws, bs, 0.0, products="conv")
    with pytest.raises(ValueError, match=r"products must be one of \('auto', 'mm', 'conv'\), got 'bmm'"):
        fused_stack(s, s, ws, bs, 0.0, products="bmm")  # type: ignore[arg-type]


def test_conv_products_refused_and_not_chosen_with_onednn_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """With oneDNN switched off (``torch.backends.mkldnn.flags(enabled=False)``) the convolutions do not run:
    ``conv_products_available`` is False, ``products="conv"`` is a ValueError that says so, and ``"auto"``
    runs the matrix products."""
    import examples.voc_joint.models.fused_stack as fs

    calls: list[bool] = []
    monkeypatch.setattr(fs, "fused_conv_stack", lambda *a, **k: calls.append(True))
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    s = torch.randn(1, 2, 3, 3)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # restored after the test
    assert not fcs.conv_products_available(torch.device("cpu"), torch.float32)
    with pytest.raises(
        ValueError, match=r"products='conv' needs .* got torch.float32 on cpu .*enabled: False"
    ):
        fused_stack(s, s, ws, bs, 0.0, products="conv")
    out = fused_stack(s, s, ws, bs, 0.0)
    assert calls == [] and out.shape == (1, 2, 3, 3)


@needs_onednn
def test_conv_products_chunk_is_whole_rows_of_the_image_width() -> None:
    """``chunk`` pixels are rounded down to whole rows of the image's width: ``chunk=7`` over 8 x 3 images is
    2 rows (6 pixels), 4 chunks per image, one ``convolution_backward`` each for the one trained layer;
    the gradient is the reference's."""
    ws, bs = _params([6, 10, 3], [True, True], torch.float32, torch.device("cpu"))
    for t in (*ws, *[b for b in bs if b is not None]):
        t.requires_grad_(False)
    ws[1].requires_grad_(True)
    g = torch.Generator().manual_seed(4)
    s, u, grad = (torch.randn(2, 3, 8, 3, generator=g) for _ in range(3))
    out = fused_stack(s, u, ws, bs, 0.0, chunk=7, products="conv")
    with _ConvBackwards() as backwards:
        (got,) = torch.autograd.grad(out, [ws[1]], grad)
    (want,) = torch.autograd.grad(_reference(s, u, ws, bs, "relu"), [ws[1]], grad)
    torch.testing.assert_close(got, want)
    assert len(backwards.calls) == 2 * 4


@pytest.mark.parametrize("products", ["mm", pytest.param("conv", marks=needs_onednn)])
def test_u_of_is_ignored_without_recompute(products: str) -> None:
    """Without ``recompute`` the stack keeps ``U`` and ignores ``u_of`` (as documented): a ``u_of`` that does
    not rebuild ``U`` changes no gradient."""
    ws, bs = _params([6, 10, 3], [True, True], torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(5)
    s, u, grad = (torch.randn(2, 3, 4, 5, generator=g) for _ in range(3))
    results = []
    for u_of in (None, torch.zeros_like):
        out = fused_stack(s, u, ws, bs, 0.0, chunk=10, u_of=u_of, products=products)  # type: ignore[arg-type]
        results.append(torch.autograd.grad(out, [*ws, *[b for b in bs if b is not None]], grad))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


class _ConvBackwards(TorchDispatchMode):
    """Records ``(weight shape, output_mask)`` of every ``convolution_backward`` run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], tuple[bool, ...]]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.overloadpacket is torch.ops.aten.convolution_backward:
            self.calls.append((tuple(args[2].shape[:2]), tuple(args[-1])))
        return func(*args, **(kwargs or {}))


@needs_onednn
@pytest.mark.parametrize("trained", ["inputs", "u", "last", "middle", "first_bias"])
@pytest.mark.parametrize("recompute", [False, True])
def test_conv_products_compute_only_the_gradients_asked_for(trained: str, recompute: bool) -> None:
    """Each layer's ``convolution_backward`` asks only for what is needed: a frozen weight's or bias's
    gradient is not computed, no input gradient below the lowest layer asked for, none of the first layer's
    unless S or U wants one; the gradients are still the reference's."""
    ws, bs = _params([6, 10, 8, 3], [True, False, True], torch.float32, torch.device("cpu"))
    for t in (*ws, *[b for b in bs if b is not None]):
        t.requires_grad_(False)
    g = torch.Generator().manual_seed(3)
    s, u, grad = (torch.randn(2, 3, 5, 6, generator=g) for _ in range(3))
    wanted = {"inputs": [s, u], "u": [u], "last": [ws[2]], "middle": [ws[1]], "first_bias": [bs[0]]}[trained]
    for t in wanted:
        assert t is not None
        t.requires_grad_(True)
    out = fused_stack(s, u, ws, bs, 0.2, chunk=12, recompute=recompute, products="conv")
    with _ConvBackwards() as backwards:
        got = torch.autograd.grad(out, wanted, grad)
    want = torch.autograd.grad(_reference(s, u, ws, bs, "leaky_relu"), wanted, grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    # (input, weight, bias) per layer, from the last (a bias's gradient never from it): 3 chunks of 2 + 2 + 1
    # rows in each of 2 images
    every_input = [
        ((3, 8), (True, False, False)),
        ((8, 10), (True, False, False)),
        ((10, 6), (True, False, False)),
    ]
    masks = {
        "inputs": every_input,
        "u": every_input,
        "last": [((3, 8), (False, True, False))],
        "middle": [((3, 8), (True, False, False)), ((8, 10), (False, True, False))],
        # a bias's gradient is the sum of the chunk's g, no convolution_backward: none for the first layer
        "first_bias": [((3, 8), (True, False, False)), ((8, 10), (True, False, False))],
    }[trained]
    assert backwards.calls == masks * 6


@needs_onednn
def test_conv_products_bias_gradients_are_within_5e_7_of_float64() -> None:
    """A bias's gradient sums a chunk's output gradient over its pixels (16384 at 128 px): as a reduction of
    the gradient's pixel rows it is within 5e-7 of float64 (relative to its largest value; measured 1.2-2.1e-7
    on the Intel Xeon VM), where ``convolution_backward``'s bias output, computed with the weight's, gave
    1.7-3.5e-6 on 2 threads (on 1, the sum's figures: oneDNN splits the pixels over the threads).
    (``_one_thread`` gives the next test 1 thread again.)"""
    torch.set_num_threads(2)  # what training on the 2-core CPU runs
    g = torch.Generator().manual_seed(0)
    ws = [
        torch.randn(128, 42, generator=g) * 0.2,
        torch.randn(128, 128, generator=g) * 0.1,
        torch.randn(21, 128, generator=g) * 0.1,
    ]
    bs = [torch.randn(w.shape[0], generator=g) * 0.1 for w in ws]
    s, u, grad = (torch.randn(2, 21, 128, 128, generator=g) for _ in range(3))

    def bias_grads(dtype: torch.dtype, products: str) -> tuple[Tensor, ...]:
        biases = [b.to(dtype).requires_grad_() for b in bs]
        weights = [w.to(dtype).requires_grad_() for w in ws]  # (as in training: with the weights')
        out = fused_stack(
            s.to(dtype),
            u.to(dtype),
            weights,
            biases,
            0.0,
            chunk=16384,
            products=products,  # type: ignore[arg-type]
        )
        return torch.autograd.grad(out, [*biases, *weights], grad.to(dtype))[: len(biases)]

    for got, ref in zip(bias_grads(torch.float32, "conv"), bias_grads(torch.float64, "mm"), strict=True):
        assert (got.double() - ref).abs().max() <= 5e-7 * ref.abs().max()


# ---------------------------------------------------------------- the last layer on superpixel means


def _pool(ids: Tensor, num_superpixels: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``fused_stack``'s ``pool``: flat ids and ``1 / count`` (0 for an empty superpixel)."""
    counts = torch.stack([torch.bincount(i.flatten(), minlength=num_superpixels) for i in ids]).to(dtype)
    return ids.flatten(1), torch.where(counts > 0, counts.reciprocal(), 0.0)


def _pooled_case(dtype: torch.dtype, seed: int = 5) -> tuple[Tensor, Tensor, Tensor, int]:
    """``S``, ``U`` and ids ``(2, 5, 6)`` over 9 slots, two of them empty (ids 7 and 8 unused)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 7, (2, 5, 6), generator=g)
    ids[:, 0, :2] = torch.tensor([0, 6])  # every used id present in both images
    s = torch.randn(2, 3, 5, 6, generator=g, dtype=dtype)
    u = torch.randn(2, 3, 5, 6, generator=g, dtype=dtype)
    return s.requires_grad_(), u.requires_grad_(), ids, 9


@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("chunk", [None, 7, 13])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("form", ["mm", "conv"])
def test_pooled_output_is_the_superpixel_mean_of_the_stack(
    act: str | None, chunk: int | None, recompute: bool, form: str
) -> None:
    """With ``pool`` the stack returns the mean of its per-pixel output over every superpixel (0 for an
    empty one, as ``SuperpixelAssignment.encode``), gradients too: the last layer runs on the means of the
    last hidden layer, whose sign alone is kept for backward (float64; the conv form called directly, as
    ``fused_stack`` hands it float32 only; chunks of whole rows (7, 13) and whole images)."""
    s, u, ids, n_s = _pooled_case(torch.float64)
    ws, bs = _params([6, 10, 8, 3], [True, False, True], torch.float64, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float64)
    if form == "conv":
        out = fcs.fused_conv_stack(s, u, ws, bs, SLOPES[act], chunk=chunk, recompute=recompute, pool=pool)
    else:
        out = fused_stack(
            s, u, ws, bs, SLOPES[act], chunk=chunk, recompute=recompute, products="mm", pool=pool
        )
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u, ws, bs, act))
    assert out.shape == (2, n_s, 3)
    torch.testing.assert_close(out, ref)
    assert torch.equal(out[:, 7:], torch.zeros(2, 2, 3, dtype=torch.float64))  # empty superpixels
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    for got, want in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("u_given", ["per_pixel", "per_superpixel"])
def test_pooled_gradcheck(u_given: str) -> None:
    """float64 gradcheck of the conv form with ``pool``, with and without recomputation, LeakyReLU so that
    the packed signs scale the negative side; ``U`` per pixel and per superpixel."""
    if u_given == "per_pixel":
        s, u, ids, n_s = _pooled_case(torch.float64, seed=7)
    else:
        s, u, _, ids, n_s = _per_cell_u(torch.float64, seed=13)
    ws, bs = _params([6, 4, 4, 2], [True, True, True], torch.float64, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float64)
    for recompute in (False, True):

        def fn(s: Tensor, u: Tensor, *p: Tensor, recompute: bool = recompute) -> Tensor:
            return fcs.fused_conv_stack(
                s, u, list(p[:3]), list(p[3:]), 0.1, chunk=12, recompute=recompute, pool=pool
            )

        assert torch.autograd.gradcheck(fn, (s, u, *ws, *bs))


@pytest.mark.parametrize("trained", ["last", "middle", "input"])
@pytest.mark.parametrize("recompute", [False, True])
def test_pooled_gradients_asked_for(trained: str, recompute: bool) -> None:
    """Only some tensors want a gradient (frozen layers, no input gradient): those are right, the others are
    not computed (float32, the form ``fused_stack`` picks on the CPU)."""
    s, u, ids, n_s = _pooled_case(torch.float32, seed=8)
    s, u = s.detach().requires_grad_(trained == "input"), u.detach()
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float32, torch.device("cpu"))
    wanted = {"last": [ws[2], bs[2]], "middle": [ws[1]], "input": [s]}[trained]
    for p in [*ws, *bs]:
        assert p is not None
        p.requires_grad_(any(p is w for w in wanted))
    out = fused_stack(s, u, ws, bs, 0.0, chunk=12, recompute=recompute, pool=_pool(ids, n_s, torch.float32))
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u, ws, bs, "relu"))
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(9))
    for got, want in zip(_grads(out, wanted, grad), _grads(ref, wanted, grad), strict=True):
        torch.testing.assert_close(got, want)


def test_pooled_keeps_the_last_hidden_layer_as_sign_bits() -> None:
    """With ``pool`` and recomputation the stack keeps ``S`` (``U`` rebuilt by ``u_of``), the sign of its last
    hidden layer packed 8 per byte, the superpixel means of that layer, the ids and ``1 / count``: exactly,
    and 1/32 of the 16-wide float32 layer it replaces."""
    ws, bs = _params([6, 16, 16, 3], [True, True, True], torch.float32, torch.device("cpu"))
    with torch.no_grad():  # values of order 1: float32 gradients within the default tolerance
        for w in ws:
            w.div_(w.shape[1] ** 0.5)
    ids = torch.arange(40).view(1, 5, 8).div(4, rounding_mode="floor").expand(2, 5, 8).contiguous()
    enc = sparse_ops.SuperpixelAssignment(ids, 10)
    s = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    pool = _pool(ids, 10, torch.float32)
    out: list[Tensor] = []
    saved = _saved(
        lambda: out.append(
            fused_stack(s, enc.uniformize(s), ws, bs, 0.0, recompute=True, u_of=enc.uniformize, pool=pool)
        )
    )
    params = sum(p.numel() * 4 for p in [*ws, *bs] if p is not None)
    signs = 2 * 40 * 16 // 8  # one chunk per image: 40 pixels x 16 units, one bit each (whole 8-byte words)
    means = 2 * 10 * 16 * 4
    assert (
        sum(saved.values())
        == params + s.numel() * 4 + enc_bytes(enc, s) + signs + means + 2 * 40 * 8 + 2 * 10 * 4
    )
    (g,) = torch.autograd.grad(out[0].square().sum(), [s])
    ref = enc.encode(_reference(s, enc.uniformize(s), ws, bs, "relu"))
    (want,) = torch.autograd.grad(ref.square().sum(), [s])
    torch.testing.assert_close(g, want)


@pytest.mark.parametrize(
    ("slope", "grad_mode", "packed"), [(0.0, True, 6), (0.2, True, 6), (None, True, 0), (0.0, False, 0)]
)
def test_pooled_packs_signs_only_for_a_backward_through_an_activation(
    monkeypatch: pytest.MonkeyPatch, slope: float | None, grad_mode: bool, packed: int
) -> None:
    """The last hidden layer's signs are packed (one call per chunk: 3 chunks in each of 2 images) only where
    a backward will read them: not without autograd (inference keeps nothing) and not without an activation
    (nothing to scale), NaN counted as positive for ReLU only; the output is the same either way."""
    calls: list[tuple[int, bool]] = []
    ops = fcs._ops  # the stack calls its operators through this namespace (looked up at every call)

    class Spy:
        def __getattr__(self, name: str) -> Any:
            return getattr(ops(), name)

        def pack_signs_(self, signs: Tensor, chunk: int, h: Tensor, nan_positive: bool) -> None:
            calls.append((chunk, nan_positive))
            ops().pack_signs_(signs, chunk, h, nan_positive)

    monkeypatch.setattr(fcs, "_ops", Spy)
    s, u, ids, n_s = _pooled_case(torch.float32, seed=19)
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float32, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float32)
    with torch.set_grad_enabled(grad_mode):
        out = fcs.fused_conv_stack(s, u, ws, bs, slope, chunk=12, pool=pool)
    assert calls == [(chunk, slope == 0.0) for chunk in range(packed)]
    act = {0.0: "relu", 0.2: "leaky_relu", None: None}[slope]
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u, ws, bs, act))
    torch.testing.assert_close(out, ref)


class _FlatBuffers(TorchDispatchMode):
    """Records the size of every one-dimensional ``new_empty`` run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[list[int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.ops.aten.new_empty.default and len(args[1]) == 1:
            self.sizes.append(list(args[1]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("slope", [0.0, 0.2, None])
def test_pooled_backward_makes_the_sign_buffer_only_with_an_activation(slope: float | None) -> None:
    """The float buffer the packed signs are unpacked into, one chunk of the last hidden layer (2 rows of 6
    pixels x 8 units), is made in backward only where there are signs: not without an activation (no sign
    kept, nothing to scale); the gradients are the reference's either way."""
    s, u, ids, n_s = _pooled_case(torch.float32, seed=25)
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float32, torch.device("cpu"))
    out = fcs.fused_conv_stack(s, u, ws, bs, slope, chunk=12, pool=_pool(ids, n_s, torch.float32))
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(26))
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    with _FlatBuffers() as buffers:
        got = _grads(out, inputs, grad)
    assert buffers.sizes == ([] if slope is None else [[2 * 6 * 8]])
    act = {0.0: "relu", 0.2: "leaky_relu", None: None}[slope]
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u, ws, bs, act))
    for a, b in zip(got, _grads(ref, inputs, grad), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("layers", [2, 3])
def test_pooled_backward_runs_no_chunk_it_does_not_need(monkeypatch: pytest.MonkeyPatch, layers: int) -> None:
    """With ``pool`` and recomputation the backward recomputes no chunk when only the last layer (run on the
    superpixel means) wants a gradient, and with ``U`` per superpixel and one hidden layer (the top layer run
    chunk by chunk is the first, never recomputed) it makes no rows of ``T``; the gradients are the
    reference's."""
    s, u_cells, u_pixels, ids, n_s = _per_cell_u(torch.float32, seed=20)
    widths = [6, 8, 8, 3] if layers == 3 else [6, 8, 3]
    ws, bs = _params(widths, [True] * (len(widths) - 1), torch.float32, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float32)
    calls: list[str] = []

    def spy(name: str) -> Any:
        fn = getattr(fcs, name)

        def counted(*args: Any) -> Any:
            calls.append(name)
            return fn(*args)

        return counted

    for name in ("_hidden", "_table_rows"):
        monkeypatch.setattr(fcs, name, spy(name))
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u_pixels, ws, bs, "relu"))
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(21))
    biases = [b for b in bs if b is not None]  # (every layer has one)
    cases = {"last": [ws[-1], biases[-1]], "all": [s, u_cells, *ws, *biases]}
    if layers == 3:
        cases.pop("all")
    for case, wanted in cases.items():
        for t in [s, u_cells, *ws, *biases]:
            t.requires_grad_(any(t is w for w in wanted))
        out = fcs.fused_conv_stack(s, u_cells, ws, bs, 0.0, chunk=12, recompute=True, pool=pool)
        calls.clear()
        got = torch.autograd.grad(out, wanted, grad)
        # "all" with one hidden layer: no recomputed layer, so no T (_hidden runs on no layer at all)
        assert calls == ([] if case == "last" else ["_hidden"] * 6), case
        for a, b in zip(got, torch.autograd.grad(ref, wanted, grad, retain_graph=True), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("nan_positive", [False, True])
@pytest.mark.parametrize("numel", [1, 7, 8, 63, 64, 65, 1000])
def test_sign_bits_round_trip(numel: int, nan_positive: bool) -> None:
    """``pack_positive_`` / ``unpack_positive`` give back ``h > 0`` (``not h <= 0`` with ``nan_positive``:
    NaN set) for every length, the padding to whole 8-byte words 0, for random signs, all set, none set,
    ``-0.0`` and NaN among positive and among negative values; the CPU's numpy bits and the shifts of other
    devices (run here on the CPU) are the same bytes, and each unpacks the other's."""
    from examples.voc_joint.models import _stack_backward as sb
    from examples.voc_joint.models._stack_backward import pack_positive_, packed_size, unpack_positive

    g = torch.Generator().manual_seed(numel)
    cases = [
        torch.randn(numel, generator=g),
        torch.ones(numel),
        -torch.ones(numel),
        torch.full((numel,), -0.0),
        torch.where(torch.rand(numel, generator=g) < 0.5, float("nan"), 1.0),
        torch.where(torch.rand(numel, generator=g) < 0.5, float("nan"), -1.0),
    ]
    for h in cases:
        packed = torch.empty(packed_size(numel), dtype=torch.uint8)
        assert packed.numel() % 8 == 0 and packed.numel() * 8 >= numel > packed.numel() * 8 - 64
        pack_positive_(h, packed, nan_positive=nan_positive)
        back = unpack_positive(packed, torch.empty(numel))
        assert torch.equal(back, (~(h <= 0) if nan_positive else h > 0).float())
        assert not unpack_positive(packed, torch.empty(packed.numel() * 8))[numel:].any()
        shifted = torch.full_like(packed, 0xFF)  # (stale bytes: the padding must be written too)
        with mock.patch.object(sb, "_numpy_bits", return_value=False):
            pack_positive_(h, shifted, nan_positive=nan_positive)
            assert torch.equal(unpack_positive(packed, torch.full((numel,), 7.0)), back)
        assert torch.equal(shifted, packed)


def test_pool_of_the_wrong_shape_is_refused() -> None:
    ws, bs = _params([4, 6, 2], [True, True], torch.float32, torch.device("cpu"))
    s = torch.randn(2, 2, 3, 3)
    ids = torch.zeros(2, 9, dtype=torch.long)
    for pool in ((ids[:, :8], torch.ones(2, 4)), (ids, torch.ones(1, 4)), (ids, torch.ones(2, 4, 1))):
        with pytest.raises(ValueError, match=r"pool must be \(ids \[B, H\*W\] = \[2, 9\], inv \[B, N_s\]"):
            fused_stack(s, s, ws, bs, 0.0, pool=pool)


# ---------------------------------------------------------------- U given per superpixel


def _broadcast(u_cells: Tensor, ids: Tensor) -> Tensor:
    """``U`` per superpixel ``(B, N_s, C)`` broadcast to the pixels of ``ids`` ``(B, H, W)`` through
    ``gather``, ``(B, C, H, W)``: autograd carries its gradient back to the superpixels."""
    batch, _, c = u_cells.shape
    flat = ids.flatten(1)
    u_pixels = torch.gather(u_cells, 1, flat.unsqueeze(2).expand(batch, flat.shape[1], c))
    return u_pixels.transpose(1, 2).reshape(batch, c, *ids.shape[1:])


def _per_cell_u(dtype: torch.dtype, seed: int = 11) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """``S``, ``U`` per superpixel ``(2, 9, 3)`` (rows 7 and 8: empty superpixels), the same ``U`` broadcast
    to the pixels (:func:`_broadcast`) and the ids."""
    s, _, ids, n_s = _pooled_case(dtype, seed)
    u_cells = torch.randn(2, n_s, 3, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    u_cells.requires_grad_()
    return s, u_cells, _broadcast(u_cells, ids), ids, n_s


@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("chunk", [None, 7, 13])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("form", ["mm", "conv"])
@pytest.mark.parametrize("layers", [2, 3])
def test_u_per_superpixel_is_u_broadcast_to_its_pixels(
    act: str | None, chunk: int | None, recompute: bool, form: str, layers: int
) -> None:
    """``U`` given per superpixel ``[B, N_s, C]`` (with ``pool``) gives what the same ``U`` broadcast to every
    pixel gives, output and every gradient (``U``'s per superpixel): the conv form runs the first layer's
    ``U`` half and bias per superpixel, the mm form broadcasts (float64; chunks of whole rows and whole
    images; one hidden layer, whose first layer is never recomputed, and two)."""
    s, u_cells, u_pixels, ids, n_s = _per_cell_u(torch.float64)
    widths = [6, 10, 8, 3] if layers == 3 else [6, 10, 3]
    ws, bs = _params(widths, [True] * (len(widths) - 2) + [False], torch.float64, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float64)

    def run(u: Tensor) -> Tensor:
        if form == "conv":
            return fcs.fused_conv_stack(
                s, u, ws, bs, SLOPES[act], chunk=chunk, recompute=recompute, pool=pool
            )
        return fused_stack(
            s, u, ws, bs, SLOPES[act], chunk=chunk, recompute=recompute, products="mm", pool=pool
        )

    out, ref = run(u_cells), run(u_pixels)
    torch.testing.assert_close(out, ref)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    inputs = [s, u_cells, *ws, *[b for b in bs if b is not None]]
    for got, want in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("trained", ["u", "s", "first", "first_bias", "middle"])
@pytest.mark.parametrize("recompute", [False, True])
def test_u_per_superpixel_gradients_asked_for(trained: str, recompute: bool) -> None:
    """Only some tensors want a gradient: those are right (float32, the form ``fused_stack`` picks on the
    CPU), including ``U`` or the first layer alone, whose gradients come from ``T``'s, and ``S`` alone, whose
    gradient skips ``T``'s."""
    s, u_cells, u_pixels, ids, n_s = _per_cell_u(torch.float32, seed=14)
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float32, torch.device("cpu"))
    wanted = {
        "u": [u_cells],
        "s": [s],
        "first": [ws[0]],
        "first_bias": [bs[0]],
        "middle": [ws[1]],
    }[trained]
    for t in [s, u_cells, *ws, *bs]:  # (U too: a U that wants a gradient makes T's for the first layer)
        assert t is not None
        t.requires_grad_(any(t is w for w in wanted))
    pool = _pool(ids, n_s, torch.float32)
    out = fused_stack(s, u_cells, ws, bs, 0.0, chunk=12, recompute=recompute, pool=pool)
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u_pixels, ws, bs, "relu"))
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(15))
    for got, want in zip(_grads(out, wanted, grad), _grads(ref, wanted, grad), strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("products", ["mm", pytest.param("conv", marks=needs_onednn)])
def test_u_of_is_ignored_for_u_per_superpixel(products: str) -> None:
    """``U`` per superpixel is kept, and ``u_of`` ignored, also with ``recompute`` (as documented): a
    ``u_of`` that does not rebuild the (broadcast) ``U`` changes no gradient. The mm form broadcast ``U``
    to the pixels and then rebuilt it in backward as ``u_of(s)``."""
    s, u_cells, _, ids, n_s = _per_cell_u(torch.float32, seed=16)
    ws, bs = _params([6, 10, 3], [True, True], torch.float32, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float32)
    grad = torch.randn(2, n_s, 3, generator=torch.Generator().manual_seed(17))
    inputs = [s, u_cells, *ws, *[b for b in bs if b is not None]]
    results = []
    for u_of in (None, torch.zeros_like):
        out = fused_stack(s, u_cells, ws, bs, 0.0, recompute=True, u_of=u_of, products=products, pool=pool)  # type: ignore[arg-type]
        results.append(torch.autograd.grad(out, inputs, grad))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_u_per_superpixel_keeps_no_per_pixel_u() -> None:
    """With ``U`` per superpixel and recomputation the stack keeps ``S``, ``U`` per superpixel (1/4 of ``S``'s
    bytes here: 10 superpixels of 4 pixels), the packed signs, the means, the ids and ``1 / count``: exactly,
    and nothing of the size of a per-pixel ``U``."""
    ws, bs = _params([6, 16, 16, 3], [True, True, True], torch.float32, torch.device("cpu"))
    with torch.no_grad():
        for w in ws:
            w.div_(w.shape[1] ** 0.5)
    ids = torch.arange(40).view(1, 5, 8).div(4, rounding_mode="floor").expand(2, 5, 8).contiguous()
    s = torch.randn(2, 3, 5, 8, generator=torch.Generator().manual_seed(3), requires_grad=True)
    u = torch.randn(2, 10, 3, generator=torch.Generator().manual_seed(4), requires_grad=True)
    pool = _pool(ids, 10, torch.float32)
    out: list[Tensor] = []
    saved = _saved(lambda: out.append(fused_stack(s, u, ws, bs, 0.0, recompute=True, pool=pool)))
    params = sum(p.numel() * 4 for p in [*ws, *bs] if p is not None)
    signs = 2 * 40 * 16 // 8
    means = 2 * 10 * 16 * 4
    assert (
        sum(saved.values())
        == params + s.numel() * 4 + u.numel() * 4 + signs + means + 2 * 40 * 8 + 2 * 10 * 4
    )
    ref = sparse_ops.SuperpixelAssignment(ids, 10).encode(_reference(s, _broadcast(u, ids), ws, bs, "relu"))
    for got, want in zip(
        torch.autograd.grad(out[0].square().sum(), [s, u]),
        torch.autograd.grad(ref.square().sum(), [s, u]),
        strict=True,
    ):
        torch.testing.assert_close(got, want)


def test_table_rows_buffer_is_allocated_only_where_it_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunk buffer for the rows of ``T`` is made only where :func:`_table_rows` writes into it: not
    without ``T``, nor where ``T`` requires grad, nor under the compiler (it makes new tensors there); the
    rows are the same either way."""
    s = torch.zeros(2, 3, 4, 5)
    table = torch.randn(2, 6, 7)
    ids = torch.randint(0, 6, (2, 20))
    assert fcs._table_buffer(s, None, 2, 5).numel() == 0
    buf = fcs._table_buffer(s, table, 2, 5)
    assert buf.shape == (10, 7)
    want = table[1][ids[1, 5:15]]
    got = fcs._table_rows(table, ids, 1, slice(1, 3), 5, buf)
    assert got.data_ptr() == buf.data_ptr()
    assert torch.equal(got, want)
    assert fcs._table_buffer(s, table.clone().requires_grad_(), 2, 5).numel() == 0
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    empty = fcs._table_buffer(s, table, 2, 5)
    assert empty.numel() == 0
    assert torch.equal(fcs._table_rows(table, ids, 1, slice(1, 3), 5, empty), want)


@needs_onednn
@pytest.mark.parametrize("trained", ["u", "s", "first", "first_bias"])
def test_u_per_superpixel_runs_the_first_convolution_only_for_s_or_its_weight(trained: str) -> None:
    """With ``U`` per superpixel the first layer's convolution covers ``S`` alone (a ``(10, 3)`` filter) and
    runs backward only for ``S``'s gradient or its weight's; ``U``'s and the first bias's come from ``T``'s
    (no convolution of that layer at all); the gradients are still the reference's."""
    s, u_cells, u_pixels, ids, n_s = _per_cell_u(torch.float32, seed=16)
    ws, bs = _params([6, 10, 3], [True, True], torch.float32, torch.device("cpu"))
    wanted = {"u": [u_cells], "s": [s], "first": [ws[0]], "first_bias": [bs[0]]}[trained]
    for t in [s, u_cells, *ws, *bs]:
        assert t is not None
        t.requires_grad_(any(t is w for w in wanted))
    pool = _pool(ids, n_s, torch.float32)
    out = fused_stack(s, u_cells, ws, bs, 0.0, chunk=12, recompute=True, pool=pool, products="conv")
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(17))
    with _ConvBackwards() as backwards:
        got = torch.autograd.grad(out, wanted, grad)
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u_pixels, ws, bs, "relu"))
    for a, b in zip(got, torch.autograd.grad(ref, wanted, grad), strict=True):
        torch.testing.assert_close(a, b)
    mask = {"s": (True, False, False), "first": (False, True, False)}.get(trained)
    # 3 chunks of 2 + 2 + 1 rows in each of 2 images
    assert backwards.calls == ([((10, 3), mask)] * 6 if mask else [])


def test_conv_stack_refuses_u_per_superpixel_without_pool() -> None:
    """Called directly, the conv form refuses ``U`` per superpixel ``[B, N_s, C]`` without ``pool`` with a
    ValueError naming ``u``'s shape (its forward would stop on an assertion)."""
    s, u_cells, _, _, _ = _per_cell_u(torch.float32, seed=27)
    ws, bs = _params([6, 8, 3], [True, True], torch.float32, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"u per superpixel \[B, N_s, C\] needs pool .*got u \(2, 9, 3\)"):
        fcs.fused_conv_stack(s, u_cells, ws, bs, 0.0)


@needs_onednn
@pytest.mark.parametrize("compiling", [False, True])
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
def test_first_layer_is_written_into_the_rows_of_t(
    monkeypatch: pytest.MonkeyPatch, slope: float | None, compiling: bool
) -> None:
    """:func:`_conv_add_` returns ``act(conv(x, w) + first)`` in ``first``'s memory (a channels-last view of
    it): oneDNN's sum post-op on float32, up to float rounding (it adds ``first`` inside its accumulation:
    1 ulp apart here), and the plain form, to the last bit, under the compiler and in float64."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(1, 5, 3, 7, generator=g, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(6, 5, 1, 1, generator=g, dtype=dtype)
        first = torch.randn(21, 6, generator=g, dtype=dtype)
        conv = F.conv2d(x, w)
        want = conv + first.view(1, 3, 7, 6).permute(0, 3, 1, 2)
        want = want if slope is None else F.leaky_relu(want, slope)
        got = fcs._conv_add_(first, x, w, slope)
        assert got.data_ptr() == first.data_ptr() and got.is_contiguous(memory_format=torch.channels_last)
        if compiling or dtype == torch.float64:
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want)


@needs_onednn
def test_first_layer_falls_back_to_the_plain_form_where_onednn_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A build of torch without oneDNN's fused operator (an internal one, which raises) gets the plain form,
    the same sum to the last bit, then and in every later call, without trying the operator again."""
    calls: list[int] = []

    def refuse(*args: Any) -> None:
        calls.append(1)
        raise RuntimeError("mkldnn_convolution_pointwise_binary_: not in this build")

    class Ops:  # torch.ops.mkldnn without a working _convolution_pointwise_
        _convolution_pointwise_ = type("Op", (), {"binary": staticmethod(refuse)})

    monkeypatch.setitem(fcs._ONEDNN_SUM, "usable", True)
    monkeypatch.setattr(torch.ops, "mkldnn", Ops())
    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 5, 3, 7, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 5, 1, 1, generator=g)
    for _ in range(2):
        first = torch.randn(21, 6, generator=g)
        want = (F.conv2d(x, w) + first.view(1, 3, 7, 6).permute(0, 3, 1, 2)).relu()
        got = fcs._conv_add_(first, x, w, 0.0)
        assert got.data_ptr() == first.data_ptr() and torch.equal(got, want)
    assert calls == [1] and fcs._ONEDNN_SUM["usable"] is False


@needs_onednn
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("init", ["transparent", "zero_residual"])
def test_a_nan_in_s_reaches_the_output_as_in_the_plain_stack(activation: str | None, init: str) -> None:
    """The CPU fused form (the first layer one oneDNN convolution added into ``T``'s rows) used oneDNN's ReLU
    post-op, which maps NaN to 0: one NaN logit of ``S`` on a single superpixel gave no NaN at all (48 of 48
    values with the plain stack), so the joint model returned finite logits over NaN gradients. Every value
    that the plain stack makes NaN is NaN in the fused form too, and the others agree."""
    from examples.voc_joint.models.joint import FusionStack

    fuse = FusionStack(3, [6], activation, init, generator=0)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 4, 4, generator=g)
    s[0, 0, 1, 1] = float("nan")
    ids = torch.randint(0, 3, (2, 4, 4), generator=g)
    enc = sparse_ops.SuperpixelAssignment(ids, 3)
    assert fuse.folds_uniformization(s.device)
    fused = fuse(s, None, uniformize=(ids, enc))
    plain = enc.uniformize(fuse.layers(torch.cat([s, enc.uniformize(s)], 1)))
    if init == "zero_residual":
        plain = enc.uniformize(plain + enc.uniformize(s))
    assert plain.isnan().any()
    assert torch.equal(fused.isnan(), plain.isnan())
    torch.testing.assert_close(fused.nan_to_num(0.0), plain.nan_to_num(0.0), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not fcs.conv_products_available(torch.device("cpu"), torch.float32), reason="no oneDNN")
def test_the_pooled_stack_calls_its_operators_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stack reaches its three operators through ``torch.ops.transinit_examples`` at every call, not
    through this module's ``CustomOpDef`` objects: a second copy of the module (``benchmarks/ab_fusion.py``
    loads a previous checkout's) re-registers the names, which destroys the first registration and leaves
    those objects with handles to removed operators (random failures later in the process: "Tried to access
    the schema for  which doesn't have a schema registered yet", ``std::bad_alloc``). With the objects made
    unusable, the pooled stack's forward and backward still run and match the stack without pooling."""

    def gone(*args: object, **kwargs: object) -> None:
        raise AssertionError("called through the module's CustomOpDef object")

    for name in ("_add_rows_", "_pack_signs_", "_unpack_signs_"):
        monkeypatch.setattr(fcs, name, gone)
    gen = torch.Generator().manual_seed(0)
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float32, torch.device("cpu"))
    s = torch.randn(2, 3, 5, 7, generator=gen, requires_grad=True)
    ids = torch.randint(0, 4, (2, 35), generator=gen)
    counts = torch.stack([torch.bincount(row, minlength=4) for row in ids]).float()
    inv = torch.where(counts > 0, 1 / counts, 0.0)
    u = torch.randn(2, 4, 3, generator=gen)
    pooled = fused_stack(s, u, ws, bs, 0.0, recompute=True, pool=(ids, inv), products="conv")
    pooled.sum().backward()
    assert s.grad is not None and bool(torch.isfinite(s.grad).all())
    per_pixel = fused_stack(s.detach(), u, ws, bs, 0.0, pool=(ids, inv), products="mm")
    torch.testing.assert_close(pooled.detach(), per_pixel, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("products", ["mm", pytest.param("conv", marks=needs_onednn)])
def test_every_gradient_is_contiguous_like_its_tensor(products: str) -> None:
    """``torch.autograd.grad`` through the stack hands back every gradient (``S``, ``U``, each weight, each
    bias) contiguous, as autograd through the layers does: a caller that ``view``s a weight's gradient (a
    flattening optimizer, a gradient bucket) must not meet a transposed first-layer gradient."""
    ws, bs = _params([6, 8, 3], [True, True], torch.float32, torch.device("cpu"))
    g = torch.Generator().manual_seed(21)
    s = torch.randn(2, 3, 4, 5, generator=g).requires_grad_()
    u = torch.randn(2, 3, 4, 5, generator=g).requires_grad_()
    out = fused_stack(s, u, ws, bs, 0.0, chunk=7, products=products)  # type: ignore[arg-type]
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    grads = torch.autograd.grad(out, inputs, torch.randn(out.shape, generator=g))
    for x, gx in zip(inputs, grads, strict=True):
        assert gx.shape == x.shape and gx.is_contiguous()


@needs_onednn
def test_a_float64_first_layer_leaves_onednn_fused_form_to_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """A float64 chunk (the gradchecks' dtype, which oneDNN's fused operator refuses) takes the plain form
    without asking the operator, so it does not switch the fused form off for the float32 calls after it:
    those still run through oneDNN's sum post-op (the default CPU stack's speed after any float64 use)."""
    real = torch.ops.mkldnn._convolution_pointwise_.binary
    calls: list[torch.dtype] = []

    def spy(*args: Any) -> Any:
        calls.append(args[1].dtype)
        return real(*args)

    class Ops:  # torch.ops.mkldnn, its fused operator counted
        _convolution_pointwise_ = type("Op", (), {"binary": staticmethod(spy)})

    monkeypatch.setitem(fcs._ONEDNN_SUM, "usable", True)
    monkeypatch.setattr(torch.ops, "mkldnn", Ops())
    g = torch.Generator().manual_seed(5)
    for dtype in (torch.float64, torch.float32, torch.float32):
        x = torch.randn(1, 5, 3, 7, generator=g, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(6, 5, 1, 1, generator=g, dtype=dtype)
        first = torch.randn(21, 6, generator=g, dtype=dtype)
        want = (F.conv2d(x, w) + first.view(1, 3, 7, 6).permute(0, 3, 1, 2)).relu()
        torch.testing.assert_close(fcs._conv_add_(first, x, w, 0.0), want)
    assert calls == [torch.float32, torch.float32]


@pytest.mark.parametrize("products", ["mm", pytest.param("auto", marks=needs_onednn)])
def test_pooled_output_is_contiguous_in_every_form(products: str) -> None:
    """With ``pool`` the output ``[B, N_s, C_out]`` is a contiguous tensor in both forms (as the unpooled
    ``[B, C_out, H, W]`` is), so a caller can ``view`` it (e.g. to flatten the superpixels)."""
    s, u, ids, n_s = _pooled_case(torch.float32)
    ws, bs = _params([6, 10, 3], [True, True], torch.float32, torch.device("cpu"))
    out = fused_stack(s, u, ws, bs, 0.0, chunk=7, products=products, pool=_pool(ids, n_s, torch.float32))  # type: ignore[arg-type]
    assert out.shape == (2, n_s, 3) and out.is_contiguous()
    assert out.view(-1, 3).shape == (2 * n_s, 3)


@pytest.mark.parametrize("products", ["mm", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("pooled", [False, True])
def test_backward_inside_autocast_gives_the_same_gradients(
    products: str, dtype: torch.dtype, pooled: bool
) -> None:
    """``backward()`` called inside a CPU autocast region (CPU autograd runs it on the caller's thread) gives
    every gradient bit for bit as outside it: the backward, like the forward, runs in the parameters' dtype.
    (Autocast reached the backward's products: float32 pooled stacks raised a dtype error in ``index_select``
    and half parameters' weight gradients came out of bfloat16 products, about 10x the error.)"""
    ws, bs = _params([6, 8, 3], [True, True], dtype, torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    s, u = (torch.randn(2, 3, 4, 5, generator=g, dtype=dtype).requires_grad_() for _ in range(2))
    pool = _pool(torch.randint(0, 5, (2, 20), generator=g), 5, dtype) if pooled else None
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]

    def grads() -> tuple[Tensor, ...]:
        out = fused_stack(s, u, ws, bs, 0.0, chunk=7, pool=pool, products=products)  # type: ignore[arg-type]
        return _grads(
            out, inputs, torch.randn(out.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
        )

    plain = grads()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = grads()
    for name, a, b in zip(["s", "u", "w1", "w2", "b1", "b2"], plain, under, strict=True):
        assert b.dtype == a.dtype and torch.equal(a, b), name


@needs_onednn
def test_conv_products_available_under_the_compiler_whatever_the_mkldnn_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under ``torch.compile`` the conv form runs wherever oneDNN is built in (the compiler reads no
    ``torch.backends`` switch), as ``conv_products_available`` documents; outside it, the switch decides."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # restored after the test
    assert not fcs.conv_products_available(torch.device("cpu"), torch.float32)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert fcs.conv_products_available(torch.device("cpu"), torch.float32)
    assert not fcs.conv_products_available(torch.device("cpu"), torch.float64)


class _Convolutions(TorchDispatchMode):
    """Counts the forward convolutions (``aten.convolution``) run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func.overloadpacket is torch.ops.aten.convolution:
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_pooled_recompute_never_recomputes_the_last_hidden_layer() -> None:
    """With ``pool`` and ``recompute`` the backward recomputes the hidden layers below the last one only: the
    last hidden layer is needed only through its sign, kept as packed bits, "never recomputed" (3 layers:
    one forward convolution per chunk, 3 chunks of 2 + 2 + 1 rows in each of 2 images); the gradients are
    the reference's (float64, the conv form called directly)."""
    s, u, ids, n_s = _pooled_case(torch.float64, seed=31)
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float64, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float64)
    out = fcs.fused_conv_stack(s, u, ws, bs, 0.2, chunk=12, recompute=True, pool=pool)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    with _Convolutions() as convs:
        got = _grads(out, inputs, grad)
    assert convs.count == 6
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u, ws, bs, "leaky_relu"))
    for a, b in zip(got, _grads(ref, inputs, grad), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("products", ["mm", pytest.param("conv", marks=needs_onednn)])
@pytest.mark.parametrize("recompute", [False, True])
def test_a_nan_in_s_gives_the_gradients_of_the_layers(products: str, recompute: bool) -> None:
    """A NaN in ``S`` (ReLU stack): every gradient is autograd's through the layers, NaN where it is NaN; in
    particular ``S``'s and ``U``'s gradient at the NaN pixel is finite (ReLU's derivative at a NaN output
    passes the gradient, as ``threshold_backward`` does), not 0."""
    dtype = torch.float32 if products == "conv" else torch.float64
    ws, bs = _params([6, 8, 8, 3], [True, False, True], dtype, torch.device("cpu"), seed=33)
    g = torch.Generator().manual_seed(34)
    s, u, grad = (torch.randn(2, 3, 4, 5, generator=g, dtype=dtype) for _ in range(3))
    s[1, 2, 3, 1] = float("nan")
    s.requires_grad_(), u.requires_grad_()
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    out = fused_stack(s, u, ws, bs, 0.0, chunk=10, recompute=recompute, products=products)  # type: ignore[arg-type]
    ref = _reference(s, u, ws, bs, "relu")
    got, want = _grads(out, inputs, grad), _grads(ref, inputs, grad)
    assert want[0][1, :, 3, 1].isfinite().all() and want[1][1, :, 3, 1].isfinite().all()
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("form", ["mm", "conv"])
def test_a_nan_in_s_gives_the_pooled_stack_the_gradients_of_the_layers(
    act: str, recompute: bool, form: str
) -> None:
    """A NaN in ``S`` with ``pool``: every gradient is autograd's through the layers and the superpixel
    means, NaN where it is NaN. The last hidden layer is kept as packed sign bits, which stored NaN as "not
    positive": ReLU's backward then zeroed the gradient at the NaN pixel (``S``'s gradient there 0 against
    autograd's finite values, 6 of 8 gradient tensors different), where ``threshold_backward`` passes it;
    LeakyReLU's takes the slope there, as ``leaky_relu_backward`` does."""
    s, u, ids, n_s = _pooled_case(torch.float64, seed=31)
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float64, torch.device("cpu"))
    with torch.no_grad():
        s[0, 1, 2, 2] = float("nan")
    pool = _pool(ids, n_s, torch.float64)
    if form == "conv":
        out = fcs.fused_conv_stack(s, u, ws, bs, SLOPES[act], chunk=12, recompute=recompute, pool=pool)
    else:
        out = fused_stack(s, u, ws, bs, SLOPES[act], chunk=12, recompute=recompute, products="mm", pool=pool)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u, ws, bs, act))
    got, want = _grads(out, inputs, grad), _grads(ref, inputs, grad)
    assert want[0][0, :, 2, 2].isfinite().all() and want[1][0, :, 2, 2].isfinite().all()
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("form", ["mm", "conv"])
@pytest.mark.parametrize("recompute", [False, True])
def test_an_empty_superpixel_pools_to_zero_without_a_last_bias(form: str, recompute: bool) -> None:
    """Without a last bias, an empty superpixel (ids 7 and 8) still pools to 0 (as
    ``SuperpixelAssignment.encode``) whatever the last layer's weights, and its output gradient reaches no
    parameter: the conv form masked the empty superpixels only in the bias branch, so a NaN last weight
    made their output ``0 @ W^T`` NaN, and a NaN output gradient there made the last weight's gradient
    ``grad^T @ means`` NaN everywhere; the mm form and autograd through the layers give 0 and finite
    values."""
    s, u, ids, n_s = _pooled_case(torch.float64, seed=31)
    ws, bs = _params([6, 8, 8, 3], [True, True, False], torch.float64, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float64)

    def run() -> Tensor:
        if form == "conv":
            return fcs.fused_conv_stack(s, u, ws, bs, 0.0, chunk=12, recompute=recompute, pool=pool)
        return fused_stack(s, u, ws, bs, 0.0, chunk=12, recompute=recompute, products="mm", pool=pool)

    with torch.no_grad():
        w_last = ws[2].clone()
        ws[2][1, 3] = float("nan")
    out = run()
    assert torch.equal(out[:, 7:], torch.zeros(2, 2, 3, dtype=torch.float64))
    with torch.no_grad():
        ws[2].copy_(w_last)
    out = run()
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    grad[:, 7:] = float("nan")  # the gradient of outputs that are 0 whatever the parameters
    inputs = [s, u, *ws, *[b for b in bs if b is not None]]
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u, ws, bs, "relu"))
    for a, b in zip(_grads(out, inputs, grad), _grads(ref, inputs, grad), strict=True):
        assert b.isfinite().all()
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("form", ["mm", "conv"])
@pytest.mark.parametrize("recompute", [False, True])
def test_u_rows_of_empty_superpixels_reach_no_gradient(form: str, recompute: bool) -> None:
    """``U`` per superpixel: the rows of empty superpixels (7 and 8) are read by no pixel, so a NaN there
    changes no gradient, and their own gradient is 0 whatever the weights, as with ``U`` broadcast to the
    pixels. The conv form's first-layer weight gradient ``g_T^T U`` multiplied their zero rows of ``g_T`` by
    the NaN (every ``U``-half weight gradient NaN), and ``U``'s gradient ``g_T W_U`` gave them NaN for a NaN
    weight of ``W_U``."""
    s, u_cells, _, ids, n_s = _per_cell_u(torch.float64, seed=13)
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float64, torch.device("cpu"))
    pool = _pool(ids, n_s, torch.float64)

    def grads(u: Tensor) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        if form == "conv":
            out = fcs.fused_conv_stack(s, u, ws, bs, 0.0, chunk=12, recompute=recompute, pool=pool)
        else:
            out = fused_stack(s, u, ws, bs, 0.0, chunk=12, recompute=recompute, products="mm", pool=pool)
        ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(
            _reference(s, _broadcast(u, ids), ws, bs, "relu")
        )
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
        inputs = [s, u, *ws, *bs]
        return _grads(out, inputs, grad), _grads(ref, inputs, grad)

    with torch.no_grad():
        u_cells[:, 7:] = float("nan")  # unused rows
    got, want = grads(u_cells)
    for a, b in zip(got, want, strict=True):
        assert b.isfinite().all()
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        u_cells[:, 7:] = 0.0
        ws[0][2, 4] = float("nan")  # a weight of the U half
    got, want = grads(u_cells)
    assert torch.equal(want[1][:, 7:], torch.zeros(2, 2, 3, dtype=torch.float64))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)


def _nonfinite_pooled(form: str, where: str, value: float) -> tuple[list[Tensor], list[Tensor]]:
    """Output and every gradient of the pooled stack (``U`` per pixel, or per superpixel for ``"u_cell"``)
    and of autograd through the per-pixel layers and the superpixel means, one value set to ``value``."""
    u_cells = where == "u_cell"
    if u_cells:
        s, u, u_pixels, ids, n_s = _per_cell_u(torch.float64, seed=13)
    else:
        s, u, ids, n_s = _pooled_case(torch.float64, seed=31)
        u_pixels = u
    ws, bs = _params([6, 8, 8, 3], [True, True, True], torch.float64, torch.device("cpu"))
    grad = torch.randn(2, n_s, 3, generator=torch.Generator().manual_seed(32), dtype=torch.float64)
    with torch.no_grad():
        if where == "last_weight":
            ws[2][1, 3] = value
        elif where == "output_gradient":
            grad[0, 2, 1] = value
        else:  # a pixel of S and its superpixel's U (the joint model's U: the superpixel means of S)
            s[0, 1, 2, 2] = value
            u[0, int(ids[0, 2, 2]), 1] = value
    if u_cells:
        u_pixels = _broadcast(u, ids)
    pool = _pool(ids, n_s, torch.float64)
    if form == "conv":
        out = fcs.fused_conv_stack(s, u, ws, bs, 0.0, chunk=12, pool=pool)
    else:
        out = fused_stack(s, u, ws, bs, 0.0, chunk=12, products="mm", pool=pool)
    ref = sparse_ops.SuperpixelAssignment(ids, n_s).encode(_reference(s, u_pixels, ws, bs, "relu"))
    inputs = [s, u, *ws, *bs]
    got = [out.detach(), *_grads(out, inputs, grad)]
    want = [ref.detach(), *_grads(ref, inputs, grad)]
    return got, want


@pytest.mark.parametrize("form", ["mm", "conv"])
@pytest.mark.parametrize("where", ["last_weight", "output_gradient", "u_cell"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_an_infinity_gives_the_pooled_stack_non_finite_values_where_the_layers_do(
    form: str, where: str, value: float
) -> None:
    """An infinite last-layer weight, output gradient or value of ``S`` (and its superpixel's ``U``): the
    output and every gradient of the pooled stack are non-finite exactly where autograd's through the
    per-pixel layers and the superpixel means are, and equal elsewhere. The ``"mm"`` form gives NaN in the
    same places too; the conv form, as documented, can give ``+-inf`` where the layers give NaN (the output,
    the last weight's gradient, the first weight's ``U`` half): it runs the last layer on the superpixel
    means and the first layer's ``U`` half on the superpixel rows, so it never forms a pixel's ``0 * inf``
    (a ReLU unit at 0 times the infinite weight or gradient), but never NaN where they are not."""
    got, want = _nonfinite_pooled(form, where, value)
    assert any(w.isnan().any() for w in want)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a.isfinite(), b.isfinite())
        if form == "mm":
            assert torch.equal(a.isnan(), b.isnan())
        assert not (a.isnan() & ~b.isnan()).any()
        torch.testing.assert_close(a[b.isfinite()], b[b.isfinite()])
