"""The fused stack with its products as oneDNN 1x1 convolutions over channels-last chunks (CPU, float32).

:func:`~examples.voc_joint.models.fused_stack.fused_stack` computes the stack's layers as matrix products,
which PyTorch runs with its BLAS (MKL) on the CPU; a convolution runs with oneDNN instead. On the AMD EPYC VM
(2 threads, 2026-12-02) MKL reached 175-194 GFLOP/s on the stack's shapes and oneDNN's 1x1 convolutions in
channels_last 220-446 GFLOP/s forward and 250-390 GFLOP/s for the input and weight gradients together.
This Function does the same arithmetic as the matrix-product form, with every layer one 1x1 convolution
forward and one ``convolution_backward`` (input and weight gradients at once; a bias's is the sum of the
output gradient's pixel rows) backward:

* a chunk is whole rows of one image (about ``chunk`` pixels), held in channels_last: ``[S, U]`` copied into
  one ``2C``-channel buffer (the first layer is one convolution), then each hidden layer's output, its
  activation applied in place;
* the output and the input gradients are written into NCHW tensors, as the matrix-product form writes them;
* ``recompute=True`` saves only ``S`` (and ``U``, unless ``u_of`` rebuilds it) and recomputes a chunk's
  hidden activations just before its backward;
* no gradient is computed for a tensor that does not require one (a frozen layer's weight, nothing below the
  lowest layer that needs one);
* ``pool`` (the joint model's hard uniformization of the stack's output): the last layer runs on the
  superpixel means of the last hidden layer (the mean of an affine map is the map of the mean), so its
  per-pixel products, forward and backward, are replaced by one ``index_add_`` of the last hidden layer per
  chunk and one ``index_select`` of its gradient; that layer is needed in backward only through its sign,
  kept as packed bits (1/32 of the float32 layer) instead of being recomputed;
* ``U`` given per superpixel (``[B, N_s, C]``, with ``pool``: the joint model's hard ``U`` is constant on
  every superpixel): the first layer's ``U`` half and bias run once per superpixel, ``T = U W_U^T + b_1``,
  and every pixel adds its superpixel's row of ``T`` to ``W_S S``; the chunks hold ``S`` only, no per-pixel
  ``U`` is made or kept, and ``U``'s gradient is ``T``'s (one ``index_add_`` per chunk) times ``W_U``.

Float32 on the CPU only (:func:`conv_products_available`); the values equal the matrix-product form's up to
float rounding (other kernels, other summation orders), checked by ``tests/examples/test_fused_stack.py``.
With ``pool`` and an infinite weight, input or output gradient, the non-finite values fall in the same places
but can be ``+-inf`` where the matrix-product form's are NaN: the folded products never form a pixel's
``0 * inf`` (a ReLU unit at 0 times an infinite weight or gradient).
First-order only (``once_differentiable``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._stack_backward import (
    act_,
    act_backward_,
    grad_tracked,
    gradients_asked,
    pack_positive_,
    packed_size,
    unpack_positive,
    unpack_saved,
    without_autocast,
)

__all__ = ["conv_products_available", "fused_conv_stack"]

_CL = torch.channels_last
_ONEDNN = torch.backends.mkldnn.is_available()  # read once: the compiler does not trace torch.backends


def conv_products_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether :func:`fused_conv_stack` runs: float32 on the CPU, with oneDNN built in and enabled (under
    ``torch.compile``, built in: the compiler reads no ``torch.backends`` switch)."""
    if device.type != "cpu" or dtype != torch.float32 or not _ONEDNN:
        return False
    return torch.compiler.is_compiling() or bool(torch.backends.mkldnn.enabled)


def _cl_buffer(like: Tensor, channels: int, rows: int, width: int) -> Tensor:
    """An uninitialised channels-last ``(1, channels, rows, width)`` tensor of ``like``'s dtype and device."""
    return torch.empty(1, channels, rows, width, dtype=like.dtype, device=like.device, memory_format=_CL)


def _row_chunks(batch: int, height: int, rows: int) -> Iterator[tuple[int, slice]]:
    """``(image, row slice)`` of every chunk, image by image."""
    for b in range(batch):
        for h0 in range(0, height, rows):
            yield b, slice(h0, min(h0 + rows, height))


def _inputs(buf: Tensor, s: Tensor, u: Tensor | None, b: int, rows: slice) -> Tensor:
    """``[S, U]`` of one chunk (``S`` alone when ``u`` is ``None``: ``U`` per superpixel), copied into the
    channels-last buffer ``buf`` (1, 2C or C, rows, W)."""
    c = s.shape[1]
    x = buf[:, :, : rows.stop - rows.start]
    x[:, :c].copy_(s[b : b + 1, :, rows])
    if u is not None:
        x[:, c:].copy_(u[b : b + 1, :, rows])
    return x


def _rows_view(x: Tensor) -> Tensor:
    """A channels-last ``(1, C, rows, W)`` chunk as the ``(rows W, C)`` matrix of its pixels (a view)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _conv_add_(first: Tensor, x: Tensor, w: Tensor, slope: float | None) -> Tensor:
    """``act(conv(x, w) + first)`` written into ``first`` (``(rows W, h_1)``; returned as the channels-last
    ``(1, h_1, rows, W)`` view of it): oneDNN adds the convolution to ``first`` in its output pass (a sum
    post-op), where a plain convolution writes a new tensor that an ``add_`` then reads and writes again. The
    activation runs after it, in place (PyTorch's, not oneDNN's fused ReLU post-op, which turned NaN into 0:
    a NaN in ``S`` came out of the joint model as finite logits, with NaN gradients behind them). The
    convolution's own output was a fresh 4 MB block a chunk, whose
    pages the allocator had to fault in again at every call: the stack's forward + backward ran 0.84-0.88x
    the time of that form at B=2, 128 px (paired, the 2-core VM, 2026-12-05). Under the compiler (which has
    its own fusions) and in float64 (which oneDNN's fused form refuses; the tests' gradchecks), the plain
    form. The two agree up to float rounding (the post-op adds ``first`` inside oneDNN's accumulation)."""
    _, _, rows, width = x.shape
    z = first.view(1, rows, width, first.shape[-1]).permute(0, 3, 1, 2)  # channels-last, no copy
    if _ONEDNN_SUM["usable"] and x.dtype == torch.float32 and not torch.compiler.is_compiling():
        try:
            torch.ops.mkldnn._convolution_pointwise_.binary(
                z, x, w, None, [0, 0], [1, 1], [1, 1], 1, "add", 1.0, None, [], None
            )
            return act_(z, slope)
        except (AttributeError, NotImplementedError, RuntimeError):  # (it checks its inputs before writing)
            _ONEDNN_SUM["usable"] = False  # a torch build without the fused operator: the plain form now on
    z.add_(F.conv2d(x, w))
    return act_(z, slope)


#: whether :func:`_conv_add_` uses oneDNN's fused operator (an internal one of torch, which a build may lack)
_ONEDNN_SUM = {"usable": True}


def _hidden(
    x: Tensor,
    filters: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    slope: float | None,
    first: Tensor | None = None,
) -> list[Tensor]:
    """The hidden activations of one chunk: ``act(conv(x))`` through every layer but the last; ``first``
    (``(rows W, h_1)``, the chunk's rows of ``T``) is added to the first layer's output before its activation
    (the first filter and bias then cover ``S`` only: ``W_S S`` and no bias), in place: the first hidden
    activation is ``first``'s memory (:func:`_conv_add_`)."""
    hs = []
    for w, b in zip(filters[:-1], biases[:-1], strict=True):
        if first is not None:
            assert b is None  # (T holds the first bias)
            x = _conv_add_(first, x, w, slope)
            first = None
        else:
            x = act_(F.conv2d(x, w, b), slope)
        hs.append(x)
    return hs


def _layers(
    ws: Sequence[Tensor], bs: Sequence[Tensor | None], u: Tensor | None, table: bool = True
) -> tuple[list[Tensor], list[Tensor | None], Tensor | None]:
    """``(filters, conv_biases, T)``: the 1x1 filters and the biases their convolutions add; with ``U`` per
    superpixel (``u`` ``[B, N_s, C]``) the first filter covers ``S`` only, and ``T = U W_U^T + b_1``
    (``[B, N_s, h_1]``) takes ``U``'s half and the first bias (``None`` without ``table``: not needed)."""
    filters = [w[:, :, None, None] for w in ws]
    if u is None or u.dim() != 3:
        return filters, list(bs), None
    w1 = ws[0]
    c = w1.shape[1] // 2
    filters[0] = w1[:, :c].contiguous()[:, :, None, None]
    if not table:
        return filters, [None, *bs[1:]], None
    t = torch.matmul(u, w1[:, c:].t())
    if bs[0] is not None:
        t.add_(bs[0])
    return filters, [None, *bs[1:]], t


@torch.library.custom_op("transinit_examples::add_rows_", mutates_args=("out",))
def _add_rows_(out: Tensor, image: int, index: Tensor, rows: Tensor) -> None:
    """``out[image].index_add_(0, index, rows)``: the rows of one chunk added into their superpixels' rows
    (``out`` ``[B, N_s, K]``). An opaque operator for the compiler: Inductor's own code for this scatter (an
    atomic add per element, fused with its neighbours) ran 6.6 ms a chunk of 8192 x 128 values on the 2-core
    VM, where the ATen kernel takes about 0.3 ms."""
    out[image].index_add_(0, index, rows)


@_add_rows_.register_fake
def _(out: Tensor, image: int, index: Tensor, rows: Tensor) -> None:
    return None


@torch.library.custom_op("transinit_examples::pack_signs_", mutates_args=("signs",))
def _pack_signs_(signs: Tensor, chunk: int, h: Tensor, nan_positive: bool) -> None:
    """The signs of chunk ``chunk``'s last hidden layer ``h`` (flat) packed into row ``chunk`` of ``signs``
    (:func:`~examples.voc_joint.models._stack_backward.pack_positive_`; ``nan_positive`` for ReLU). Opaque
    to the compiler, like :func:`_add_rows_`: Inductor fused the bits' shifts with the activation into one
    kernel of about 6 ms a chunk, against 0.7 ms for the tensor operations."""
    pack_positive_(h, signs[chunk, : packed_size(h.numel())], nan_positive=nan_positive)


@_pack_signs_.register_fake
def _(signs: Tensor, chunk: int, h: Tensor, nan_positive: bool) -> None:
    return None


@torch.library.custom_op("transinit_examples::unpack_signs_", mutates_args=("out",))
def _unpack_signs_(out: Tensor, signs: Tensor, chunk: int) -> None:
    """:func:`~examples.voc_joint.models._stack_backward.unpack_positive` of row ``chunk`` of ``signs`` into
    ``out`` (flat), opaque to the compiler (see :func:`_pack_signs_`)."""
    unpack_positive(signs[chunk, : packed_size(out.numel())], out)


@_unpack_signs_.register_fake
def _(out: Tensor, signs: Tensor, chunk: int) -> None:
    return None


def _ops() -> Any:
    """The namespace of the three operators above as registered now, ``torch.ops.transinit_examples``: the
    stack calls them through it, looked up at every call, not through the ``CustomOpDef`` objects above.

    A second copy of this module in the process (``benchmarks/ab_fusion.py`` loads a previous checkout's
    next to this one, as do its tests) registers the same names again; torch.library then destroys the first
    registration, and the first copy's objects keep handles to the operators it removed. Calls through them
    failed at random, later in the process: "Tried to access the schema for  which doesn't have a schema
    registered yet" or ``MemoryError: std::bad_alloc`` (a CI worker, 2026-12-06). torch clears its
    ``torch.ops`` cache when it removes an operator, so a lookup by name reaches the live registration (of
    either copy: the same operators)."""
    return torch.ops.transinit_examples


def _table_buffer(s: Tensor, table: Tensor | None, chunk_rows: int, width: int) -> Tensor:
    """The buffer :func:`_table_rows` writes every chunk's rows of ``T`` into, ``(chunk_rows W, h_1)``; empty
    (new tensors instead) without ``T``, under the compiler, or where ``T`` requires grad (an ``out=`` is
    refused where autograd records, as when ``torch.export`` traces the Function)."""
    if table is None or table.requires_grad or torch.compiler.is_compiling():
        return s.new_empty(0, 0)
    return s.new_empty(chunk_rows * width, table.shape[-1])


def _table_rows(table: Tensor, ids: Tensor, b: int, rows: slice, width: int, out: Tensor) -> Tensor:
    """The rows of ``T`` (``[B, N_s, h_1]``) of the pixels of one chunk, ``(rows W, h_1)``, into ``out`` (a
    buffer reused by every chunk, :func:`_table_buffer`), or a new tensor where that buffer is empty."""
    chunk_ids = ids[b, rows.start * width : rows.stop * width]
    if out.numel() == 0:
        return table[b].index_select(0, chunk_ids)
    return torch.index_select(table[b], 0, chunk_ids, out=out[: chunk_ids.numel()])


class _FusedConvStack(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        s: Tensor,
        u: Tensor,
        slope: float | None,
        rows: int,
        recompute: bool,
        u_of: Callable[[Tensor], Tensor] | None,
        num_layers: int,
        pool_ids: Tensor | None,
        pool_inv: Tensor | None,
        tracked: bool,
        *params: Tensor | None,
    ) -> Tensor:
        ws = [w for w in params[0::2] if w is not None]
        bs = list(params[1::2])
        filters, conv_bs, table = _layers(ws, bs, u)
        batch, c, height, width = s.shape
        chunk_rows = min(rows, height)
        buf = _cl_buffer(s, c if table is not None else 2 * c, chunk_rows, width)
        # (the first hidden activation is written into T's rows: one buffer for every chunk only where the
        # activations are not kept for backward)
        t_rows = _table_buffer(s, table if recompute else None, chunk_rows, width)
        hidden: list[Tensor] = []
        if pool_ids is not None:
            assert pool_inv is not None
            width_in = ws[-1].shape[1]  # the last hidden layer's width
            sums = s.new_zeros(batch, pool_inv.shape[1], width_in)
            # the last hidden layer is needed in backward only through its sign (its weight's gradient takes
            # the superpixel means): kept as packed bits, never recomputed
            chunks = batch * -(-height // chunk_rows)
            keep_sign = tracked and slope is not None
            signs = s.new_empty(
                chunks if keep_sign else 0, packed_size(chunk_rows * width * width_in), dtype=torch.uint8
            )
        else:
            out = s.new_empty(batch, ws[-1].shape[0], height, width)
        for i, (b, r) in enumerate(_row_chunks(batch, height, rows)):
            first = None
            if table is not None:  # (U per superpixel comes with pool)
                assert pool_ids is not None
                first = _table_rows(table, pool_ids, b, r, width, t_rows)
            hs = _hidden(
                _inputs(buf, s, None if table is not None else u, b, r), filters, conv_bs, slope, first
            )
            if pool_ids is not None:
                last = _rows_view(hs.pop())
                _ops().add_rows_(sums, b, pool_ids[b, r.start * width : r.stop * width], last)
                if keep_sign:
                    _ops().pack_signs_(signs, i, last.view(-1), slope == 0.0)
            else:
                out[b : b + 1, :, r].copy_(F.conv2d(hs[-1], filters[-1], bs[-1]))
            if not recompute:
                hidden.extend(hs)
        extra: list[Tensor | None] = [None, None, None, None]
        if pool_ids is not None:
            assert pool_inv is not None
            means = sums.mul_(pool_inv.unsqueeze(2))
            out = torch.matmul(means, ws[-1].t())
            if bs[-1] is not None:
                out = out + bs[-1]
            # an empty superpixel pools to 0 whatever the last layer (a NaN weight too), as in
            # SuperpixelAssignment.encode; not in place on the product: torch 2.11's AOT autograd then gave a
            # compiled stack (--compile) zero gradients everywhere (2.13 and 2.14 were right)
            out = out.masked_fill(pool_inv.unsqueeze(2) == 0, 0.0)
            extra = [means, signs if keep_sign else None, pool_ids, pool_inv]
        # with u_of (recompute only), U is rebuilt from S in backward; U per superpixel is always kept (small)
        keep_u = u if u_of is None or table is not None else None
        ctx.save_for_backward(s, keep_u, *ws, *[b for b in bs if b is not None], *hidden, *extra)
        ctx.layout = (
            slope,
            rows,
            recompute,
            u_of,
            num_layers,
            [b is not None for b in bs],
            pool_ids is not None,
        )
        return out

    @staticmethod
    @once_differentiable
    @without_autocast
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        slope, rows, recompute, u_of, num_layers, has_bias, pooled = ctx.layout
        saved = ctx.saved_tensors
        means, signs, pool_ids, pool_inv = saved[-4:]
        s, u, ws, bs, hidden = unpack_saved(saved[:-4], num_layers, has_bias)
        if u is None:
            with torch.no_grad():
                u = u_of(s)
        needs = ctx.needs_input_grad  # inputs: s, u, 8 options, then (weight, bias) per layer
        need_w, need_b, lowest = gradients_asked(needs, 10, num_layers)
        need_x = needs[0] or needs[1]
        top = num_layers - 2 if pooled else num_layers - 1  # the highest layer run backward chunk by chunk
        # U per superpixel (u [B, N_s, C]): the first convolution's input is S alone, and T is needed only to
        # recompute the first layer below the top one; the first layer's U half and bias take their gradients
        # from T's, whose rows add up the pixels' gradients of the first layer's output
        u_cells = u.dim() == 3
        filters, conv_bs, table = _layers(ws, bs, u, table=recompute and top > 0)
        g_table = (
            s.new_zeros(u.shape[0], u.shape[1], ws[0].shape[0])
            if u_cells and lowest == 0 and (needs[1] or need_w[0] or need_b[0])
            else None
        )
        conv_need_x = needs[0] if u_cells else need_x
        gws = [w.new_zeros(w.shape) if need else None for w, need in zip(ws, need_w, strict=True)]
        gbs = [
            b.new_zeros(b.shape) if b is not None and need else None
            for b, need in zip(bs, need_b, strict=True)
        ]
        gs = s.new_empty(s.shape) if needs[0] else None
        gu = u.new_empty(u.shape) if needs[1] else None
        batch, c, height, width = s.shape
        chunk_rows = min(rows, height)
        buf = _cl_buffer(s, c if u_cells else 2 * c, chunk_rows, width)
        t_rows = _table_buffer(s, table, chunk_rows, width)
        empty = pool_inv.unsqueeze(2) == 0 if pooled else None  # the superpixels without pixels
        if empty is not None:  # pooled
            # the last layer on the superpixel means: its gradients at once, then the gradient of each pixel's
            # last hidden activation is its superpixel's, divided by the pixel count
            last = num_layers - 1
            # the output of an empty superpixel is 0 whatever the parameters: its gradient reaches none
            grad = grad.masked_fill(empty, 0.0)
            if gws[last] is not None:
                gws[last] += torch.mm(grad.flatten(0, 1).t(), means.flatten(0, 1))
            if gbs[last] is not None:
                gbs[last] += grad.sum((0, 1))
            per_pixel = torch.matmul(grad, ws[last]).mul_(pool_inv.unsqueeze(2))
            width_in = ws[last].shape[1]
            gbuf = _cl_buffer(s, width_in, chunk_rows, width)
            sign_buf = s.new_empty(chunk_rows * width * width_in) if signs is not None else None
        else:
            gbuf = _cl_buffer(s, ws[-1].shape[0], chunk_rows, width)
        per_chunk = top  # hidden activations kept per chunk (without recomputation)
        # (no chunk to run when only the last layer, on the superpixel means, wanted a gradient)
        chunks = _row_chunks(batch, height, rows) if top >= lowest else iter(())
        for i, (b, r) in enumerate(chunks):
            x = _inputs(buf, s, None if u_cells else u, b, r)
            first = None if table is None else _table_rows(table, pool_ids, b, r, width, t_rows)
            hs = (
                _hidden(x, filters[: top + 1], conv_bs[: top + 1], slope, first)
                if recompute
                else hidden[i * per_chunk : (i + 1) * per_chunk]
            )
            layer_inputs = [x, *hs]
            g = gbuf[:, :, : r.stop - r.start]
            if pooled:
                g_rows = _rows_view(g)
                torch.index_select(per_pixel[b], 0, pool_ids[b, r.start * width : r.stop * width], out=g_rows)
                if signs is not None:
                    assert sign_buf is not None
                    n = g_rows.numel()
                    sign = sign_buf[:n]
                    _ops().unpack_signs_(sign, signs, i)
                    act_backward_(g_rows, sign.view(g_rows.shape), slope)
            else:
                g.copy_(grad[b : b + 1, :, r])  # the gradient of the last layer's output, in channels_last
            for layer in range(top, lowest - 1, -1):
                want_input = layer > lowest or conv_need_x
                if layer == 0 and g_table is not None:
                    _ops().add_rows_(g_table, b, pool_ids[b, r.start * width : r.stop * width], _rows_view(g))
                # the bias's gradient, the sum of g over the chunk's pixels: a reduction of g's pixel matrix,
                # not convolution_backward's (whose bias output took 0.5 ms more a chunk of 8192 x 128 on the
                # 2-core Intel Xeon VM: 2.03 -> 2.52 ms; T holds the first bias with U per superpixel)
                total_b = gbs[layer]
                if total_b is not None and conv_bs[layer] is not None:
                    total_b.add_(_rows_view(g).sum(0))
                if not (want_input or need_w[layer]):
                    continue  # (the first layer with U per superpixel: only T wanted a gradient)
                gi, gw, _ = torch.ops.aten.convolution_backward(
                    g,
                    layer_inputs[layer],
                    filters[layer],
                    None,
                    [1, 1],
                    [0, 0],
                    [1, 1],
                    False,
                    [0, 0],
                    1,
                    [want_input, need_w[layer], False],
                )
                total = gws[layer]
                if total is not None:
                    gw = gw.reshape(filters[layer].shape[:2])
                    (total[:, :c] if layer == 0 and u_cells else total).add_(gw)
                if layer > lowest:
                    g = act_backward_(gi, hs[layer - 1], slope)
                elif layer == 0 and conv_need_x:
                    if gs is not None:
                        gs[b : b + 1, :, r].copy_(gi[:, :c])
                    if gu is not None and not u_cells:
                        gu[b : b + 1, :, r].copy_(gi[:, c:])
        if g_table is not None:  # T = U W_U^T + b_1
            # no pixel reads the rows of empty superpixels: their U (a NaN there too) reaches no gradient
            # and their gradient is 0 (a NaN weight of W_U too), as with U broadcast to the pixels
            assert empty is not None  # (U per superpixel comes with pool)
            if gws[0] is not None:
                used = u.masked_fill(empty, 0.0)
                gws[0][:, c:] += torch.mm(g_table.flatten(0, 1).t(), used.flatten(0, 1))
            if gbs[0] is not None:
                gbs[0] += g_table.sum((0, 1))
            if gu is not None:
                torch.matmul(g_table, ws[0][:, c:], out=gu).masked_fill_(empty, 0.0)
        params: list[Tensor | None] = []
        for gw, gb in zip(gws, gbs, strict=True):
            params += [gw, gb]
        return (gs, gu, None, None, None, None, None, None, None, None, *params)


def fused_conv_stack(
    s: Tensor,
    u: Tensor,
    weights: Sequence[Tensor],
    biases: Sequence[Tensor | None],
    slope: float | None,
    *,
    chunk: int | None = None,
    recompute: bool = False,
    u_of: Callable[[Tensor], Tensor] | None = None,
    pool: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The fusion stack ``[S, U] -> C_out`` per pixel with oneDNN 1x1 convolutions, chunk by chunk.

    The arguments are :func:`~examples.voc_joint.models.fused_stack.fused_stack`'s, already checked there
    (which calls this function for float32 on the CPU); ``chunk`` is rounded to whole image rows (at least
    one).

    Args:
        s (Tensor[B, C, H, W]): ``S``, float32, any memory format.
        u (Tensor[B, C, H, W] | Tensor[B, N_s, C]): ``U``, the same shape, or its value on every superpixel
            of ``pool`` (``U`` constant on each): the first layer's ``U`` half then runs per superpixel.
        weights: the layers' weights ``(out, in)``, float32; the first over ``[S, U]``.
        biases: the layers' biases ``(out,)`` or ``None``, one per weight.
        slope: ``None`` (no activation), ``0.0`` (ReLU) or the LeakyReLU slope.
        chunk: about this many pixels per chunk (``None``: one chunk per image).
        recompute: save only ``S`` and ``U`` and recompute the hidden activations in backward.
        u_of: with ``recompute``, the map that rebuilds a per-pixel ``U`` from ``S`` in backward (``U`` per
            superpixel is kept: it is small).
        pool: ``(ids, inv)``: superpixel ids ``[B, H W]`` (long, in ``[0, N_s)``) and ``1 / count`` per
            superpixel ``[B, N_s]`` (0 for an empty one, the parameters' dtype): return the stack's output
            averaged over every superpixel instead.

    Returns:
        Tensor[B, C_out, H, W], contiguous (NCHW); with ``pool``, Tensor[B, N_s, C_out].
    """
    if u.dim() == 3 and pool is None:
        raise ValueError(f"u per superpixel [B, N_s, C] needs pool (the pixels' ids), got u {tuple(u.shape)}")
    height, width = s.shape[-2:]
    rows = height if chunk is None else max(1, min(height, chunk // max(width, 1)))
    params: list[Tensor | None] = []
    for w, b in zip(weights, biases, strict=True):
        params += [w, b]
    ids, inv = (None, None) if pool is None else pool
    out: Tensor = _FusedConvStack.apply(
        s,
        u,
        slope,
        max(rows, 1),
        recompute,
        u_of if recompute else None,
        len(weights),
        ids,
        inv,
        grad_tracked(s, u, *weights, *biases),
        *params,
    )
    return out
