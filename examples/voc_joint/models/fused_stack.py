"""Forward and backward of the fusion stack in one ``autograd.Function``, chunk by chunk of pixels.

The stack is ``z_1 = W_S S + W_U U + b_1``, then ``z_{l+1} = W_{l+1} act(z_l) + b_{l+1}``: 1x1 layers, so
matrix products on the pixels of every image. Autograd would record each product, bias and activation, and
its backward allocates a gradient per node; this Function does the same arithmetic in fewer passes:

* every chunk is up to ``chunk`` pixels of one image, read in place from ``S`` and ``U`` in either memory
  format (a chunk of an NCHW map is a column-major ``(pixels, C)`` matrix, of a channels-last one a row-major
  one: the matrix products take both without a copy); the last layer writes straight into an NCHW output;
* forward: each layer is one ``addmm`` into its own buffer, the activation applied in place;
* backward, per chunk: the weight gradients accumulate with ``addmm_`` (in float32 for half-precision
  parameters, rounded once at the end), the activation's derivative is read off its saved *output*
  (``h > 0``) in place, and the input gradients are written into NCHW ``dS``, ``dU``; no gradient is computed
  for a tensor that does not require one (no product for a frozen weight, nothing below the lowest layer
  that needs one);
* ``recompute=True`` saves only ``S`` and ``U`` and recomputes a chunk's hidden activations just before its
  backward, so the activations of the whole stack are never held at once (a chunk's at a time).
* ``pool=(ids, inv)`` returns the stack's output averaged over every superpixel (the joint model's hard
  uniformization folded in): the conv form below runs the last layer on the superpixel means of the last
  hidden layer; this form computes the per-pixel output and averages it.
* ``u`` may be given per superpixel (``[B, N_s, C]``, with ``pool``; a ``U`` constant on every superpixel):
  the conv form runs the first layer's ``U`` half and bias once per superpixel; this form broadcasts ``U``
  to the pixels.

With float32 parameters on the CPU, :func:`fused_stack` hands the same work to
:func:`~examples.voc_joint.models.fused_conv_stack.fused_conv_stack`, which runs every product as a oneDNN 1x1
convolution over channels-last chunks (``products="auto"``; ``"mm"`` keeps the matrix products): on the
2-core AMD EPYC VM oneDNN ran the widest layer's product 2.2-2.4x as fast as MKL's matrix product, and the
whole stack with recomputation took 0.55-0.73x the time.

The same values as the module form up to float rounding (the same products; the weight gradients are summed
chunk by chunk). ``tests/examples/test_fused_stack.py`` checks it against autograd through the layers and with
``torch.autograd.gradcheck`` in float64. First-order only (``once_differentiable``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sparse_ops.soft import _no_autocast

from ._stack_backward import (
    act_,
    act_backward_,
    grad_tracked,
    gradients_asked,
    unpack_saved,
    without_autocast,
)
from .fused_conv_stack import conv_products_available, fused_conv_stack

__all__ = ["PRODUCTS", "Products", "fused_stack"]

Products = Literal["auto", "mm", "conv"]
#: The ways the stack's products can run (:func:`fused_stack`'s ``products``).
PRODUCTS: tuple[Products, ...] = ("auto", "mm", "conv")


def _chunks(batch: int, pixels: int, chunk: int) -> Iterator[tuple[int, slice]]:
    """``(image, pixel slice)`` of every chunk, image by image."""
    for b in range(batch):
        for p0 in range(0, pixels, chunk):
            yield b, slice(p0, min(p0 + chunk, pixels))


def _product_into(out: Tensor, a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``out = a b (+ bias)``, written in place by the matrix product; a strided ``out`` (a chunk of an NCHW
    map) under ``torch.compile``, which refuses a non-contiguous ``out=``, is computed and copied in (one
    graph either way), and so is every product under ``torch.export``, which refuses ``out=`` inside a
    Function whose inputs require grad (the model's parameters). Returns ``out``."""
    if torch.compiler.is_exporting() or (torch.compiler.is_compiling() and not out.is_contiguous()):
        return out.copy_(a @ b if bias is None else torch.addmm(bias, a, b))
    if bias is None:
        return torch.mm(a, b, out=out)
    return torch.addmm(bias, a, b, out=out)


def _hidden(
    s: Tensor,
    u: Tensor,
    ws: Sequence[Tensor],
    bs: Sequence[Tensor | None],
    slope: float | None,
    bufs: Sequence[Tensor] | None,
) -> list[Tensor]:
    """The hidden activations ``(m, h_l)`` of one chunk (``s``, ``u``: ``(m, C)``), into ``bufs`` or new
    tensors: ``act(W_S s + W_U u + b_1)``, then every layer but the last."""
    c = s.shape[1]
    outs = list(bufs) if bufs is not None else [s.new_empty(s.shape[0], w.shape[0]) for w in ws[:-1]]
    w1 = ws[0]
    z = _product_into(outs[0], s, w1[:, :c].t(), bs[0])
    hs = [act_(z.addmm_(u, w1[:, c:].t()), slope)]
    for w, b, out in zip(ws[1:-1], bs[1:-1], outs[1:], strict=True):
        hs.append(act_(_product_into(out, hs[-1], w.t(), b), slope))
    return hs


def _accumulate_(total: Tensor | None, g: Tensor, x: Tensor | None = None) -> None:
    """Add one chunk's weight gradient ``g^T x`` into ``total`` (its bias gradient ``sum_rows(g)`` without
    ``x``); nothing if ``total`` is ``None`` (not asked for). A float32 ``total`` of half-precision chunks
    takes every chunk's product rounded once: the chunks are added in float32."""
    if total is None:
        return
    if x is None:
        total += g.sum(0, dtype=total.dtype)
    elif total.dtype == g.dtype:
        total.addmm_(g.t(), x)
    else:
        total += torch.mm(g.t(), x)


class _FusedStack(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        s: Tensor,
        u: Tensor,
        slope: float | None,
        chunk: int,
        recompute: bool,
        u_of: Callable[[Tensor], Tensor] | None,
        spatial: tuple[int, int],
        num_layers: int,
        *params: Tensor | None,
    ) -> Tensor:
        ws = [w for w in params[0::2] if w is not None]
        bs = list(params[1::2])
        batch, _, pixels = s.shape
        m = min(chunk, pixels)
        out = s.new_empty(batch, ws[-1].shape[0], pixels)
        scratch = [s.new_empty(m, w.shape[0]) for w in ws[:-1]] if recompute else None
        hidden: list[Tensor] = []
        last_bias = None if bs[-1] is None else bs[-1].unsqueeze(1)  # a column: the output is (C_out, pixels)
        for b, p in _chunks(batch, pixels, chunk):
            n = p.stop - p.start
            bufs = None if scratch is None else [buf[:n] for buf in scratch]
            hs = _hidden(s[b, :, p].t(), u[b, :, p].t(), ws, bs, slope, bufs)
            if not recompute:
                hidden.extend(hs)
            # the last layer into the NCHW output: out[b, :, p] = W h^T + b
            _product_into(out[b, :, p], ws[-1], hs[-1].t(), last_bias)
        # with u_of (recompute only), U is rebuilt from S in backward instead of being kept
        keep_u = u if u_of is None else None
        ctx.save_for_backward(s, keep_u, *ws, *[b for b in bs if b is not None], *hidden)
        ctx.layout = (slope, chunk, recompute, u_of, spatial, num_layers, [b is not None for b in bs])
        return out

    @staticmethod
    @once_differentiable
    @without_autocast
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        slope, chunk, recompute, u_of, spatial, num_layers, has_bias = ctx.layout
        grad = _pixel_matrix(grad)
        s, u, ws, bs, hidden = unpack_saved(ctx.saved_tensors, num_layers, has_bias)
        if u is None:
            with torch.no_grad():
                u = _pixel_matrix(u_of(s.unflatten(2, spatial)))
        c = s.shape[1]
        w1s, w1u = ws[0][:, :c], ws[0][:, c:]
        needs = ctx.needs_input_grad  # inputs: s, u, 6 options, then (weight, bias) per layer
        need_w, need_b, lowest = gradients_asked(needs, 8, num_layers)
        # half-precision parameters: their gradients are summed over the chunks in float32, rounded once
        acc = torch.float32 if ws[0].dtype in (torch.float16, torch.bfloat16) else ws[0].dtype
        gws: list[Tensor | None] = [None]  # the first layer's: gw1t below
        gws += [w.new_zeros(w.shape, dtype=acc) if need_w[i] else None for i, w in enumerate(ws) if i > 0]
        # the first layer's weight gradient is summed transposed, as (2C, h_1) = [S; U] g: with the narrow
        # side first the product ran 1.7x faster on the 2-core CPU (0.36 against 0.61 ms per (8192 x 21)
        # chunk), 4 % of the stack's forward + backward; the same sums, so the same values
        gw1t = ws[0].new_zeros(ws[0].shape[::-1], dtype=acc) if need_w[0] else None
        gbs = [
            b.new_zeros(b.shape, dtype=acc) if b is not None and need else None
            for b, need in zip(bs, need_b, strict=True)
        ]
        gs = s.new_empty(s.shape) if needs[0] else None
        gu = u.new_empty(u.shape) if needs[1] else None
        batch, _, pixels = s.shape
        m = min(chunk, pixels)
        # one buffer per hidden layer's gradient (and activation, when recomputing), reused by every chunk:
        # on the CPU fresh large allocations cost page faults comparable to the arithmetic
        gbuf = [s.new_empty(m, w.shape[1]) for w in ws[1:]]
        scratch = [s.new_empty(m, w.shape[0]) for w in ws[:-1]] if recompute else None
        for i, (b, p) in enumerate(_chunks(batch, pixels, chunk)):
            n = p.stop - p.start
            rows_s, rows_u = s[b, :, p].t(), u[b, :, p].t()
            if scratch is not None:
                hs = _hidden(rows_s, rows_u, ws, bs, slope, [buf[:n] for buf in scratch])
            else:
                hs = hidden[i * (num_layers - 1) : (i + 1) * (num_layers - 1)]
            g = grad[b, :, p].t()  # (n, C_out): the gradient of layer ``layer``'s pre-activation
            for layer in range(num_layers - 1, lowest - 1, -1):
                if layer == 0:
                    if gw1t is not None:  # W^T's gradient [S; U] g, part by part
                        _accumulate_(gw1t[:c], rows_s, g)
                        _accumulate_(gw1t[c:], rows_u, g)
                    _accumulate_(gbs[0], g)
                    break
                _accumulate_(gws[layer], g, hs[layer - 1])
                _accumulate_(gbs[layer], g)
                if layer > lowest:
                    g = act_backward_(torch.mm(g, ws[layer], out=gbuf[layer - 1][:n]), hs[layer - 1], slope)
            if lowest == 0:
                if gs is not None:  # dS[b, :, p] = W_S^T g^T
                    _product_into(gs[b, :, p], w1s.t(), g.t())
                if gu is not None:
                    _product_into(gu[b, :, p], w1u.t(), g.t())
        if gw1t is not None:
            gws[0] = gw1t.t().contiguous()
        params: list[Tensor | None] = []
        for w, gw, gb in zip(ws, gws, gbs, strict=True):  # rounded once to the parameters' dtype
            params += [None if gw is None else gw.to(w.dtype), None if gb is None else gb.to(w.dtype)]
        return (gs, gu, None, None, None, None, None, None, *params)


def fused_stack(
    s: Tensor,
    u: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    slope: float | None,
    *,
    chunk: int | None = None,
    recompute: bool = False,
    u_of: Callable[[Tensor], Tensor] | None = None,
    products: Products = "auto",
    pool: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The fusion stack ``[S, U] -> C_out`` per pixel, forward and backward chunk by chunk.

    Args:
        s (Tensor[B, C, H, W]): ``S``, NCHW or channels-last.
        u (Tensor[B, C, H, W] | Tensor[B, N_s, C]): ``U``, the same shape, or, with ``pool``, its value on
            every superpixel (a ``U`` constant on each, such as the hard uniformization of ``S``:
            ``SuperpixelAssignment.encode(s)``): the ``"conv"`` form then runs the first layer's ``U`` half
            and bias once per superpixel and adds its superpixel's row to every pixel (no per-pixel ``U`` made
            or kept); the ``"mm"`` form broadcasts ``U`` to the pixels.
        weights: the layers' weights ``(out, in)`` (1x1 convolution weights flattened); the first is
            ``(h_1, 2C)``, over ``[S, U]``.
        biases: the layers' biases ``(out,)`` or ``None``, one per weight.
        slope: the activation between layers: ``None`` (none), ``0.0`` (ReLU) or the LeakyReLU slope (> 0).
        chunk: most pixels per chunk (``None``: one chunk per image).
        recompute: save only ``S`` and ``U`` for backward and recompute the hidden activations chunk by chunk.
        u_of: with ``recompute``, the map that made a per-pixel ``U`` from ``S`` (e.g. the hard
            uniformization): ``U`` is not kept either but rebuilt in backward as ``u_of(s)``. It must
            reproduce ``U`` exactly from ``S`` in the parameters' dtype (deterministically: a scatter that
            adds in another order on CUDA changes the last bits of the gradients); it is not checked. ``U``'s
            gradient still flows through ``u``'s own graph. Ignored without ``recompute``, for a ``U`` per
            superpixel (kept: it is small) and for an ``s`` not in the parameters' dtype (``U`` is kept:
            ``u_of`` would see ``S`` cast, e.g. the float32 ``S`` of a converted model, and give another
            ``U``).
        products: how the layers' products run: ``"mm"`` matrix products (PyTorch's BLAS: MKL on the CPU,
            cuBLAS on CUDA), ``"conv"`` oneDNN 1x1 convolutions over channels-last chunks of whole image rows
            (:func:`~examples.voc_joint.models.fused_conv_stack.fused_conv_stack`; float32 on the CPU only),
            ``"auto"`` (default) ``"conv"`` where it runs, else ``"mm"``. Same values up to float rounding
            (with ``pool`` and an infinite weight, input or gradient, ``"conv"`` can give ``+-inf`` where
            ``"mm"`` gives NaN, in the same places: it never forms a pixel's ``0 * inf``).
            Images without pixels (H or W = 0) take the ``"mm"`` form: there is no product to run.
        pool: ``(ids, inv)``: superpixel ids ``[B, H W]`` (long, in ``[0, N_s)``; not checked) and
            ``1 / count`` per superpixel ``[B, N_s]`` (0 for an empty superpixel): return the mean of the
            stack's output over every superpixel. The output is affine in the last hidden layer, so its mean
            is the last layer applied to the mean of that layer: one product per superpixel instead of per
            pixel, and the last hidden layer is needed in backward only through its sign (kept as packed bits
            in the ``"conv"`` form, never recomputed; the ``"mm"`` form computes the per-pixel output and
            averages it). ``inv`` in the parameters' dtype.

    Returns:
        Tensor[B, C_out, H, W], contiguous (NCHW); with ``pool``, Tensor[B, N_s, C_out].

    Raises:
        ValueError: ``s`` and ``u`` of different shapes (``u`` per superpixel: not ``[B, N_s, C]`` of
            ``pool``, or without ``pool``), layer shapes that do not chain from ``2C``, a bias of the wrong
            shape, a negative slope, a ``chunk`` below 1, an unknown ``products``, ``products="conv"`` where
            it cannot run (not float32 on the CPU, or oneDNN missing or disabled).

    First-order only: the backward is not differentiable again (``create_graph=True`` gives no second
    derivative through this op). Under ``torch.compile`` the loop over images and chunks is unrolled into the
    graph, so compile time grows with the batch and the image size.
    """
    if len(weights) != len(biases) or len(weights) < 2:
        raise ValueError(
            f"need at least 2 layers and one bias (or None) per weight, got {len(weights)} weights and "
            f"{len(biases)} biases"
        )
    per_superpixel = u.dim() == 3
    if s.dim() != 4 or (u.shape != s.shape and not per_superpixel):
        raise ValueError(
            f"s and u must have the same shape [B, C, H, W], got {tuple(s.shape)} and {tuple(u.shape)}"
        )
    batch, c, height, width = s.shape
    fan_in = 2 * c
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        if w.dim() != 2 or w.shape[1] != fan_in or (b is not None and b.shape != (w.shape[0],)):
            raise ValueError(
                f"layer {i}: weight must be (out, {fan_in}) and bias (out,) or None, got weight "
                f"{tuple(w.shape)} and bias {None if b is None else tuple(b.shape)}"
            )
        fan_in = w.shape[0]
    if slope is not None and not slope >= 0:
        raise ValueError(f"slope must be None, 0.0 (ReLU) or a LeakyReLU slope > 0, got {slope}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be None or an int >= 1 (pixels per chunk), got {chunk!r}")
    if products not in PRODUCTS:
        raise ValueError(f"products must be one of {PRODUCTS}, got {products!r}")
    dtype = weights[0].dtype  # the stack runs in its parameters' dtype, never under autocast
    conv = conv_products_available(s.device, dtype)
    if products == "conv" and not conv:
        raise ValueError(
            f"products='conv' needs float32 parameters on the CPU with oneDNN enabled, got {dtype} on "
            f"{s.device.type} (oneDNN built in: {torch.backends.mkldnn.is_available()}, enabled: "
            f"{torch.backends.mkldnn.enabled})"
        )
    pixels = height * width
    if s.dtype != dtype:  # backward would rebuild U from S cast to the parameters' dtype: not U (U is kept)
        u_of = None
    # nothing to differentiate (inference): the activations go through one chunk's buffers, never kept
    recompute = recompute or not grad_tracked(s, u, *weights, *biases)
    if pool is not None:
        ids, inv = pool
        if ids.shape != (batch, pixels) or inv.dim() != 2 or inv.shape[0] != batch:
            raise ValueError(
                f"pool must be (ids [B, H*W] = [{batch}, {pixels}], inv [B, N_s] = [{batch}, N_s]), got "
                f"{tuple(ids.shape)} and {tuple(inv.shape)}"
            )
    if per_superpixel:
        if pool is None:
            raise ValueError(
                f"u of shape {tuple(u.shape)} is read as U per superpixel [B, N_s, C], which needs pool (the "
                "pixels' superpixel ids), got pool=None"
            )
        n_s = pool[1].shape[1]
        if u.shape != (batch, n_s, c):
            raise ValueError(
                f"u per superpixel must have shape [B, N_s, C] = [{batch}, {n_s}, {c}] (N_s of pool), got "
                f"{tuple(u.shape)}"
            )
    # images without pixels have no product to run (and the convolutions refuse a zero width): the mm form
    if conv and products != "mm" and pixels > 0:
        with _no_autocast(s.device):
            return fused_conv_stack(
                s.to(dtype),
                u.to(dtype),
                weights,
                biases,
                slope,
                chunk=chunk,
                recompute=recompute,
                u_of=u_of,
                pool=pool,
            )
    if per_superpixel:  # every pixel gets its superpixel's U: [B, C, H W], column-major images
        assert pool is not None
        u = torch.gather(u, 1, pool[0].unsqueeze(2).expand(batch, pixels, c)).transpose(1, 2)
    params: list[Tensor | None] = []
    for w, b in zip(weights, biases, strict=True):
        params += [w, b]
    with _no_autocast(s.device):
        out: Tensor = _FusedStack.apply(
            _pixel_matrix(s.to(dtype)),
            _pixel_matrix(u.to(dtype)),
            slope,
            max(1, chunk or pixels),
            recompute,
            u_of if recompute and not per_superpixel else None,  # U per superpixel is kept (broadcast)
            (height, width),
            len(weights),
            *params,
        )
    if pool is None:
        return out.view(batch, weights[-1].shape[0], height, width)
    ids, inv = pool  # the mean over every superpixel of the per-pixel output (B, C_out, pixels)
    sums = out.new_zeros(batch, out.shape[1], inv.shape[1])
    sums.scatter_add_(2, ids.unsqueeze(1).expand(out.shape), out)
    return (sums * inv.unsqueeze(1)).transpose(1, 2).contiguous()


def _pixel_matrix(x: Tensor) -> Tensor:
    """``x[B, C, H, W]`` (or ``[B, C, N]``) as ``[B, C, N]`` whose every image is a row- or column-major
    matrix: no copy for NCHW or channels-last, one contiguous copy otherwise (e.g. a stride-0 gradient, which
    the products would otherwise copy per chunk)."""
    flat = x.flatten(2)
    return flat if flat.is_contiguous() or flat.transpose(1, 2).is_contiguous() else flat.contiguous()
