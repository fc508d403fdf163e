"""The linear maps of superpixel ops as autograd Functions: sums into accumulators, gathers back to pixels.

Three maps cover every hard op. With the accumulator layout of :mod:`sparse_ops._layout`, ``sums(x, slot)``
adds every pixel into its accumulator (a ``scatter_add_``, or a CSR product for the ``"sparse"`` backend) and
folds the extra accumulators of large superpixels into their primary slot in float64 (on the host for a
device without float64, see :mod:`sparse_ops._float64`); ``read(z, space)`` gives every pixel its
superpixel's value (a ``gather``, or a CSR product). A mask sends the uncounted pixels to a trash slot that
nobody reads (``slot_counted``) or makes them read the trash slot, which holds 0 (``space_counted``).

* ``_Average`` (uniformization): ``y = where(keep, x, read(inv * sums(x, slot_counted), space))``; its
  adjoint swaps the roles: ``read(inv * sums(g, slot), space_counted)``. Without a mask the map is symmetric.
* ``_Pool`` (pool ``"sum"``/``"mean"``, encode): ``scale * sums(x, slot_counted)``; adjoint
  ``read(scale * g, space_counted)``, a ``_Decode``.
* ``_Decode`` (unpool, decode): ``read(z, space)``; adjoint ``sums(g, slot)`` over all pixels, a ``_Pool``.

On the CPU a channels-last input (``x[B, C, N]`` with channels innermost) keeps its layout: ``sums`` adds
whole pixel rows with ``index_add_`` and ``read`` writes rows with ``index_select`` (see ``_is_rows``).

Every backward applies a Function again, so gradients of any order stay accurate; every map is linear, so its
forward-mode derivative (``jvp``) is the map applied to the tangent, and a ``vmap`` over ``x`` folds the
mapped dimension into the channels (the maps act on every channel alike). No Function returns a view of a
tensor made in its forward (``read`` allocates its result, ``_Pool`` copies a slice of the sums): autograd
refuses to change such a view in place ("This view was created inside a custom Function"), so
``torch.relu_(out)`` on an op's result failed. Dynamo does not trace Functions that define ``jvp``: under
``torch.compile`` the same maps run from twin classes without it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from sparse_ops import _float64
from sparse_ops._checks import VMAP_FEATURES_ONLY

__all__ = ["apply_average", "apply_decode", "apply_pool", "quiet_sparse_beta", "read", "sums"]

#: Serialises :func:`quiet_sparse_beta`: ``warnings.catch_warnings`` saves and restores the process-wide
#: filter list, so two threads inside it at once can restore each other's temporary filter and leave it
#: installed for good (every later ``UserWarning`` of the process silenced).
_WARNINGS_LOCK = threading.Lock()


def _new_lock_in_child() -> None:
    """After ``fork`` the child runs one thread: a :data:`_WARNINGS_LOCK` held by another thread of the parent
    at that moment would stay held for good, and the child's first sparse build would wait forever."""
    global _WARNINGS_LOCK  # noqa: PLW0603  # rebinding the module's lock is the point: no thread holds it here
    _WARNINGS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_new_lock_in_child)

#: Whether a block of :func:`quiet_sparse_beta` has run to its end: PyTorch gives its sparse warnings once per
#: process, so later blocks change no filter.
_quieted = threading.Event()

#: The beginnings of the sparse-matrix ``UserWarning`` messages that :func:`quiet_sparse_beta` ignores.
_SPARSE_WARNINGS = ("Sparse CSR tensor support is in beta", "Sparse invariant checks are implicitly")


@contextlib.contextmanager
def quiet_sparse_beta() -> Iterator[None]:
    """Ignore PyTorch's sparse-matrix ``UserWarning`` in the block: "Sparse CSR tensor support is in beta" and
    (torch 2.11) "Sparse invariant checks are implicitly disabled", although the matrices, valid by
    construction, are built with ``check_invariants=False``; no other warning. One thread at a time
    (:data:`_WARNINGS_LOCK`).

    Only until a block has run to its end: PyTorch gives each of these warnings once per process, and the
    first block spends both (:func:`_spend_sparse_warnings`) whatever it builds itself. The filter list is
    process-wide, so a block overlapping another thread's ``warnings.catch_warnings`` (which no lock of ours
    can serialise) could leave that thread's temporary filter installed for good, or ours. A block that waited
    for the lock while the first one ran looks again, and installs nothing once that one has ended.
    """
    if not _quieted.is_set():
        with _WARNINGS_LOCK:
            if not _quieted.is_set():  # not when a first block ended while this one waited for the lock
                with warnings.catch_warnings():
                    for message in _SPARSE_WARNINGS:
                        warnings.filterwarnings("ignore", message=message, category=UserWarning)
                    _spend_sparse_warnings()
                    yield
                    _quieted.set()
                return
    yield


def _spend_sparse_warnings() -> None:
    """Build a 1 x 1 COO (without invariant checks) and a CSR matrix on the CPU: each warning PyTorch gives
    once per process for them is then given, inside a :func:`quiet_sparse_beta` block (a block that built only
    a COO matrix left the CSR warning to the next build, outside any filter). The device is named in every
    call: under another default device (``torch.device("meta")``, ``torch.set_default_device``) the meta
    device has no CSR conversion, and a CUDA default would start CUDA for a CPU op."""
    cpu = torch.device("cpu")
    index = torch.zeros(2, 1, dtype=torch.long, device=cpu)
    one = torch.ones(1, dtype=torch.float32, device=cpu)
    coo = torch.sparse_coo_tensor(index, one, (1, 1), device=cpu, check_invariants=False)
    coo.coalesce().to_sparse_csr()
    rows, cols = torch.tensor([0, 1], device=cpu), torch.tensor([0], device=cpu)
    torch.sparse_csr_tensor(rows, cols, one, size=(1, 1), device=cpu)


def sums(
    x: Tensor, slot: Tensor, extra_group: Tensor, group_owner: Tensor, num_space: int, lanes: int
) -> Tensor:
    """Per-superpixel sums ``[B, C, S + 1]`` of ``x[B, C, N]`` (entry ``S``: the trash).

    ``slot`` is the ``[B, 1, N]`` accumulator index (lanes ``s * P + j``, the trash ``S * P``, extra slots
    after it), or for the sparse backend its CSR matrix ``[B*N, B*(S*P+1+E)]`` with one entry per pixel row
    (the transpose of the partial-sum matrix, which has at most ``K`` entries per row).
    """
    b, c, n = x.shape
    num_extra = extra_group.shape[-1]
    width = num_space * lanes + 1 + num_extra
    if slot.is_floating_point():  # the CSR matrix of the sparse backend (not an index)
        rows = x.transpose(1, 2).reshape(b * n, c)
        with torch.autocast(device_type=x.device.type, enabled=False):
            partial = (slot.t() @ rows).view(b, width, c).transpose(1, 2)
    elif _is_rows(x):  # channels innermost (a channels-last input): add whole pixel rows [C] at a time
        rows = x.transpose(1, 2)
        partial_rows = x.new_zeros(b, width, c)
        for i in range(b):
            partial_rows[i].index_add_(0, slot[i, 0], rows[i])
        partial = partial_rows.transpose(1, 2)
    else:
        partial = x.new_zeros(b, c, width).scatter_add_(2, slot.expand(b, c, n), x)
    if lanes > 1:  # the lanes of every superpixel, added in float32 (P - 1 roundings), then the trash
        lane_sums = partial[..., : num_space * lanes].reshape(b, c, num_space, lanes).sum(dim=-1)
        trash = num_space * lanes
        primary = torch.cat([lane_sums, partial[..., trash : trash + 1]], dim=-1)
    elif partial.shape[-1] == num_space + 1:  # no extra slots: the sums themselves (a slice of every column
        primary = partial  # is an alias, which the batched backward of is_grads_batched=True cannot run)
    else:
        primary = partial[..., : num_space + 1]
    groups = group_owner.shape[-1]
    if num_extra and groups:  # the superpixels with extra accumulators: add those in float64
        owner = group_owner.expand(b, c, groups)
        total = torch.gather(primary, 2, owner)
        extras = partial[..., num_space * lanes + 1 :]
        if _float64.has_float64(x.device):
            primary.scatter_(2, owner, _fold_extras(total, extras, extra_group).to(x.dtype))
        else:  # on the host ([B, C, G + E]: at most two values per K pixels and channel)
            host = _float64.to_host
            folded = _fold_extras(host(total), host(extras), host(extra_group))
            primary.scatter_(2, owner, _float64.to_device(folded.to(x.dtype), x.device))
    return primary


def _fold_extras(total: Tensor, extras: Tensor, extra_group: Tensor) -> Tensor:
    """``total[B, C, G]`` plus the extra sums ``extras[B, C, E]`` of every group (``extra_group[B, 1, E]``),
    added in float64 (on the device of the three)."""
    total = total.double()
    b, c, num_extra = extras.shape
    return total.scatter_add_(2, extra_group.expand(b, c, num_extra), extras.double())


def read(z: Tensor, space: Tensor, num_pixels: int, rows: bool = False) -> Tensor:
    """Every pixel's row of ``z[B, C, S + 1]``: ``[B, C, N]`` (``space``: a ``[B, 1, N]`` index or CSR);
    ``rows``: the result has channels innermost (strides ``(N C, 1, C)``), as a channels-last input."""
    b, c, width = z.shape
    if space.is_floating_point():  # the CSR matrix of the sparse backend (not an index)
        with torch.autocast(device_type=z.device.type, enabled=False):
            out = space @ z.transpose(1, 2).reshape(b * width, c)
        rows_out = out.view(b, num_pixels, c).transpose(1, 2)  # the product's rows are pixels
        # a copy in either layout, never the view (contiguous() returns it when C = 1)
        return rows_out.clone(memory_format=torch.preserve_format if rows else torch.contiguous_format)
    if rows:
        table = z.transpose(1, 2).contiguous()  # [B, S + 1, C]
        # allocated channels innermost, not as a transposed view
        out = torch.empty_strided((b, c, num_pixels), (num_pixels * c, 1, c), dtype=z.dtype, device=z.device)
        pixel_rows = out.transpose(1, 2)  # [B, N, C], contiguous per image
        for i in range(b):
            torch.index_select(table[i], 0, space[i, 0], out=pixel_rows[i])
        return out
    return torch.gather(z, 2, space.expand(b, c, num_pixels))


def _is_rows(x: Tensor) -> bool:
    """``x[B, C, N]`` on the CPU has channels innermost (a channels-last input, ``C, N > 1``).

    Such inputs are summed with ``index_add_`` over whole pixel rows and read back with ``index_select``,
    in pixel order like the ``scatter_add_`` / ``gather`` of the ``[B, C, N]`` path (bit-identical
    results); the strided ``[B, C, N]`` path would touch every cache line of ``x`` once per channel. Not on
    CUDA, where this path is unmeasured. Nor in the batched backward of ``is_grads_batched=True`` (a legacy
    batched tensor), which cannot run their per-image ``out=`` / in-place writes. Nor under ``torch.export``,
    which refuses its ``out=`` writes inside a Function and would specialize its loop over the batch (the
    other path gives the same values).
    """
    return (
        x.device.type == "cpu"
        and not torch.compiler.is_exporting()
        and x.shape[1] > 1
        and x.shape[2] > 1
        and x.transpose(1, 2).is_contiguous()
        and not x.is_contiguous()
        and not _legacy_batched(x)
    )


def _legacy_batched(x: Tensor) -> bool:
    """Whether ``x`` is a legacy batched tensor (``torch.autograd.grad(is_grads_batched=True)``, the batched
    checks of ``gradcheck``); a private API, read defensively. Never while compiling: Dynamo cannot trace the
    test (a graph break, an error under ``fullgraph=True``), and a traced tensor is no legacy batched one."""
    if torch.compiler.is_compiling():
        return False
    is_legacy = getattr(torch._C._functorch, "is_legacy_batchedtensor", None)
    return bool(is_legacy(x)) if is_legacy is not None else False


def _dense(t: Tensor) -> Tensor:
    """``t[B, C, N]`` dense in either layout (channels innermost kept), else a contiguous copy."""
    return t if t.is_contiguous() or t.transpose(1, 2).is_contiguous() else t.contiguous()


def _save(ctx: Any, *tensors: Tensor | None) -> None:
    """``save_for_backward`` and ``save_for_forward`` of ``tensors``, a CSR matrix (sparse backend) as its
    three dense parts, rebuilt by :func:`_saved`.

    Saved-tensor hooks then see dense tensors only: ``torch.autograd.graph.save_on_cpu(pin_memory=True)``
    copies what it packs into an empty tensor of the same layout, which fails for a CSR matrix ("only sparse
    compressed tensors with the same number of specified elements are supported").
    """
    flat: list[Tensor | None] = []
    shapes: list[tuple[int, ...] | None] = []
    for t in tensors:
        if t is not None and t.layout == torch.sparse_csr:
            flat += [t.crow_indices(), t.col_indices(), t.values()]
            shapes.append(tuple(t.shape))
        else:
            flat.append(t)
            shapes.append(None)
    ctx.save_for_backward(*flat)
    ctx.save_for_forward(*flat)
    ctx.csr_shapes = shapes


def _saved(ctx: Any) -> list[Any]:
    """The tensors given to :func:`_save`, CSR matrices rebuilt from their parts (no copy)."""
    parts = iter(ctx.saved_tensors)
    out: list[Any] = []
    for shape in ctx.csr_shapes:
        if shape is None:
            out.append(next(parts))
            continue
        crow, col, values = next(parts), next(parts), next(parts)
        with quiet_sparse_beta():
            out.append(torch.sparse_csr_tensor(crow, col, values, size=shape, check_invariants=False))
    return out


def _fold(in_dims: tuple[int | None, ...], x: Tensor) -> tuple[Tensor, int]:
    """vmap over ``x`` only: move the mapped dim into the channels, ``[V, B, C, N] -> [B, V*C, N]``."""
    if any(d is not None for d in in_dims[1:]):
        # unreachable through the public ops, which refuse a mapped label map or mask first
        raise NotImplementedError(f"{VMAP_FEATURES_ONLY}; build one op per label map")
    assert in_dims[0] is not None  # vmap calls the rule only when an input is mapped
    x = x.movedim(in_dims[0], 0)
    v, b, c, n = x.shape
    return x.transpose(0, 1).reshape(b, v * c, n), v


def _unfold(y: Tensor, v: int) -> tuple[Tensor, int]:
    b, vc, n = y.shape
    return y.view(b, v, vc // v, n).transpose(0, 1), 0


# ---------------------------------------------------------------------------------------------- Average
class _Average(torch.autograd.Function):
    """``where(keep, x, read(inv * sums(x, slot_fwd), space_fwd))``; the adjoint uses the ``_bwd`` pair."""

    @staticmethod
    def forward(
        x: Tensor,
        slot_fwd: Tensor,
        space_fwd: Tensor,
        slot_bwd: Tensor | None,
        space_bwd: Tensor | None,
        inv: Tensor,
        keep: Tensor | None,
        extra_group: Tensor,
        group_owner: Tensor,
        lanes: int,
    ) -> Tensor:
        means = sums(x, slot_fwd, extra_group, group_owner, inv.shape[-1] - 1, lanes).mul_(inv)
        rows = _is_rows(x)
        y = read(means, space_fwd, x.shape[-1], rows)
        if keep is None:
            return y
        out = torch.where(keep, x, y)  # follows x's strides: a permuted x's too, a layout read never gives
        if out.stride() == y.stride():
            return out
        return out.transpose(1, 2).contiguous().transpose(1, 2) if rows else out.contiguous()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        _save(ctx, *inputs[1:-1])
        ctx.lanes = inputs[-1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        slot_fwd, space_fwd, slot_bwd, space_bwd, inv, keep, extra_group, group_owner = _saved(ctx)
        grad_x = None
        if ctx.needs_input_grad[0]:
            if slot_bwd is None:  # symmetric (no mask): the backward is the forward map
                args = (slot_fwd, space_fwd, None, None)
            else:  # the adjoint: swap the roles of the two index pairs
                args = (slot_bwd, space_bwd, slot_fwd, space_fwd)
            grad_x = apply_average(_dense(grad), *args, inv, keep, extra_group, group_owner, ctx.lanes)
        return grad_x, None, None, None, None, None, None, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], x: Tensor, *rest: Any) -> tuple[Tensor, int]:
        folded, v = _fold(in_dims, x)
        return _unfold(apply_average(folded, *rest), v)


class _AverageForwardAD(_Average):
    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, *_: Any) -> Tensor:
        return apply_average(_dense(tangent), *_saved(ctx), ctx.lanes)


def apply_average(x: Tensor, *args: Any) -> Tensor:
    """:class:`_Average` (see the module docstring) on ``x[B, C, N]``; ``args`` as in its ``forward``."""
    fn = _Average if torch.compiler.is_compiling() else _AverageForwardAD
    out: Tensor = fn.apply(x, *args)
    return out


# ------------------------------------------------------------------------------------------ Pool / Decode
class _Pool(torch.autograd.Function):
    """``scale * sums(x, slot)`` ``[B, C, S + 1]``; adjoint ``read(scale * g, space_adjoint)``."""

    @staticmethod
    def forward(
        x: Tensor,
        slot: Tensor,
        space_adjoint: Tensor,
        scale: Tensor | None,
        extra_group: Tensor,
        group_owner: Tensor,
        num_space: int,
        lanes: int,
    ) -> Tensor:
        out = sums(x, slot, extra_group, group_owner, num_space, lanes)
        # out * scale not in place: torch 2.11's AOT autograd then got the backward of a compiled mean pool
        # wrong (every gradient; 2.13 and 2.14 were right)
        return out.clone() if scale is None else out * scale  # sums may be a view (a slice, a transpose)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, slot, space_adjoint, scale, extra_group, group_owner, num_space, lanes = inputs
        _save(ctx, slot, space_adjoint, scale, extra_group, group_owner)
        ctx.num_space, ctx.lanes = num_space, lanes
        ctx.num_pixels = x.shape[-1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        slot, space_adjoint, scale, extra_group, group_owner = _saved(ctx)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad = grad if scale is None else grad * scale
            grad_x = apply_decode(
                grad.contiguous(), space_adjoint, slot, extra_group, group_owner, ctx.num_pixels, ctx.lanes
            )
        return grad_x, None, None, None, None, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], x: Tensor, *rest: Any) -> tuple[Tensor, int]:
        folded, v = _fold(in_dims, x)
        return _unfold(apply_pool(folded, *rest), v)


class _PoolForwardAD(_Pool):
    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, *_: Any) -> Tensor:
        slot, space_adjoint, scale, extra_group, group_owner = _saved(ctx)
        return apply_pool(
            tangent.contiguous(),
            slot,
            space_adjoint,
            scale,
            extra_group,
            group_owner,
            ctx.num_space,
            ctx.lanes,
        )


def apply_pool(
    x: Tensor,
    slot: Tensor,
    space_adjoint: Tensor,
    scale: Tensor | None,
    extra_group: Tensor,
    group_owner: Tensor,
    num_space: int,
    lanes: int,
) -> Tensor:
    """``scale * sums(x, slot)``: ``[B, C, num_space + 1]`` from ``x[B, C, N]``."""
    fn = _Pool if torch.compiler.is_compiling() else _PoolForwardAD
    out: Tensor = fn.apply(x, slot, space_adjoint, scale, extra_group, group_owner, num_space, lanes)
    return out


class _Decode(torch.autograd.Function):
    """``read(z, space)`` ``[B, C, N]``; adjoint ``sums(g, slot_adjoint)``."""

    @staticmethod
    def forward(
        z: Tensor,
        space: Tensor,
        slot_adjoint: Tensor,
        extra_group: Tensor,
        group_owner: Tensor,
        num_pixels: int,
        lanes: int,
    ) -> Tensor:
        return read(z, space, num_pixels)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        z, space, slot_adjoint, extra_group, group_owner, num_pixels, lanes = inputs
        _save(ctx, space, slot_adjoint, extra_group, group_owner)
        ctx.num_space = z.shape[-1] - 1
        ctx.num_pixels, ctx.lanes = num_pixels, lanes

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        space, slot_adjoint, extra_group, group_owner = _saved(ctx)
        grad_z = None
        if ctx.needs_input_grad[0]:
            grad_z = apply_pool(
                grad.contiguous(),
                slot_adjoint,
                space,
                None,
                extra_group,
                group_owner,
                ctx.num_space,
                ctx.lanes,
            )
        return grad_z, None, None, None, None, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple[int | None, ...], z: Tensor, *rest: Any) -> tuple[Tensor, int]:
        folded, v = _fold(in_dims, z)
        return _unfold(apply_decode(folded, *rest), v)


class _DecodeForwardAD(_Decode):
    @staticmethod
    def jvp(ctx: Any, tangent: Tensor, *_: Any) -> Tensor:
        space, slot_adjoint, extra_group, group_owner = _saved(ctx)
        return apply_decode(
            tangent.contiguous(), space, slot_adjoint, extra_group, group_owner, ctx.num_pixels, ctx.lanes
        )


def apply_decode(
    z: Tensor,
    space: Tensor,
    slot_adjoint: Tensor,
    extra_group: Tensor,
    group_owner: Tensor,
    num_pixels: int,
    lanes: int,
) -> Tensor:
    """``read(z, space)``: ``[B, C, N]`` from ``z[B, C, S + 1]``."""
    fn = _Decode if torch.compiler.is_compiling() else _DecodeForwardAD
    out: Tensor = fn.apply(z, space, slot_adjoint, extra_group, group_owner, num_pixels, lanes)
    return out
