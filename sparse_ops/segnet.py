"""SegNet-style max pooling with recorded indices, and a deterministic scatter-based max unpooling.

The encoder pools with :func:`~sparse_ops.max_pool2d_with_indices`, which returns the pooled values, the flat
position (``y * W + x`` within each ``H x W`` plane) of every maximum, and the input size. The decoder calls
:func:`~sparse_ops.max_unpool2d`, which writes values back at those positions of a zero map of the recorded
size:

.. math::

    \\mathrm{out}_{b,c}[\\,i_{b,c,u}\\,] = v_{b,c,u}, \\qquad \\text{0 elsewhere.}

Unlike ``nn.MaxUnpool2d``, which raises under ``torch.use_deterministic_algorithms(True)``, the unpool is a
single ``Tensor.scatter``, which runs in that mode on CPU and CUDA. When overlapping windows (stride < kernel)
select the same input position twice, the pooled values write the same value there twice; with other decoder
features of the same shape the copies differ, and the position gets one of them: which one PyTorch leaves
unspecified (as for ``nn.MaxUnpool2d``, which may pick another), on CUDA run to run unless
``torch.use_deterministic_algorithms(True)`` is set.
Carrying the input size means odd sizes round-trip without passing ``output_size``.

With overlapping windows (stride < kernel) one input position can be selected by several windows; the
backward, like ``nn.MaxUnpool2d``'s, then hands the output gradient to every copy (a gather).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, SupportsIndex, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sparse_ops import _checks

__all__ = ["MaxPoolWithIndices", "MaxUnpool", "PooledWithIndices", "max_pool2d_with_indices", "max_unpool2d"]


class PooledWithIndices(NamedTuple):
    """Output of :func:`max_pool2d_with_indices`.

    Attributes:
        values (Tensor[B, C, h, w]): pooled maxima.
        indices (LongTensor[B, C, h, w]): flat position ``y * W + x`` of each maximum in its input plane.
        input_size (tuple[int, int]): ``(H, W)`` of the pooled input.
    """

    values: Tensor
    indices: Tensor
    input_size: tuple[int, int]


def max_pool2d_with_indices(
    x: Tensor,
    kernel_size: SupportsIndex | tuple[SupportsIndex, SupportsIndex] | list[SupportsIndex] = 2,
    stride: SupportsIndex | tuple[SupportsIndex, SupportsIndex] | list[SupportsIndex] | None = None,
    padding: SupportsIndex | tuple[SupportsIndex, SupportsIndex] | list[SupportsIndex] = 0,
    *,
    dilation: SupportsIndex | tuple[SupportsIndex, SupportsIndex] | list[SupportsIndex] = 1,
    ceil_mode: bool = False,
    validate: bool = True,
) -> PooledWithIndices:
    """2-D max pooling that also returns the argmax positions and the input size.

    Args:
        x (Tensor[B, C, H, W] | Tensor[C, H, W]): input.
        kernel_size (int | tuple[int, int] | list[int]): pooling window.
        stride (int | tuple[int, int] | list[int] | None): defaults to ``kernel_size``.
        padding (int | tuple[int, int] | list[int]): implicit ``-inf`` padding (at most half the kernel).
        dilation (int | tuple[int, int] | list[int]): window dilation. With ``dilation > 1`` a window may lie
            entirely in the padding (e.g. a 1 x 1 input, kernel 2, padding 1, dilation 2): as in PyTorch, its
            value is ``-inf`` and its index lies outside the input, which :func:`max_unpool2d` refuses.
        ceil_mode (bool): use ``ceil`` for the output size.
        validate (bool): kept for the common signature: there is no value to check (types, shapes and devices
            are always checked).

    Returns:
        PooledWithIndices: ``(values, indices, input_size)``.

    Raises:
        TypeError: ``x`` not a floating tensor, or an argument of the wrong type.
        ValueError: ``x`` not 3-D or 4-D or with an empty ``C``, ``H`` or ``W`` (the batch may be empty), a
            negative padding or one above half the kernel, a ``kernel_size``, ``stride``, ``padding`` or
            ``dilation`` above ``2**31 - 1`` (PyTorch's pooling takes 32-bit sizes), or windows
            (``dilation * (kernel_size - 1) + 1``) that do not fit the padded input (an empty output).

    Example:
        >>> x = torch.tensor([[[[1., 2., 0.], [4., 3., 5.], [7., 8., 9.]]]])
        >>> p = max_pool2d_with_indices(x)
        >>> p.values, p.indices, p.input_size
        (tensor([[[[4.]]]]), tensor([[[[3]]]]), (3, 3))
    """
    validate = _checks.check_bool(validate, "validate")
    if not isinstance(x, Tensor):
        raise TypeError(
            f"x must be a Tensor of shape [B, C, H, W] or [C, H, W], got {type(x).__name__}"
            f"{_checks._numpy_hint(x, 'x')}"
        )
    _checks.check_dense(x, "x")  # PyTorch's errors for a sparse or nested x name no argument
    if x.dim() not in (3, 4):
        raise ValueError(f"x must have shape [B, C, H, W] or [C, H, W], got shape {tuple(x.shape)}")
    if x.dtype not in _checks.FLOAT_DTYPES:  # float8 too: no kernels
        raise TypeError(
            f"x must be a floating tensor (float16/bfloat16/float32/float64), got dtype {x.dtype}"
        )
    k, s, p, d = _pool_options(kernel_size, stride, padding, dilation)
    ceil_mode = _checks.check_bool(ceil_mode, "ceil_mode")
    if any(n == 0 for n in x.shape[-3:]):  # PyTorch refuses them with a RuntimeError
        raise ValueError(
            f"x must have C, H, W >= 1 (only the batch may be empty), got shape {tuple(x.shape)}"
        )
    size = tuple(
        _pooled_side(int(n), kk, ss, pp, dd, ceil_mode)
        for n, kk, ss, pp, dd in zip(x.shape[-2:], k, s, p, d, strict=True)
    )
    if min(size) < 1:  # PyTorch's rule; checked here to name the arguments (PyTorch raises a RuntimeError)
        window = tuple(dd * (kk - 1) + 1 for kk, dd in zip(k, d, strict=True))
        raise ValueError(
            f"kernel_size {k} with dilation {d} spans windows of {window} pixels, which must fit the input "
            f"padded by {p}: x of shape {tuple(x.shape)} would give an empty output of size {size}"
        )
    values, indices = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil_mode, return_indices=True)
    return PooledWithIndices(values, indices, (int(x.shape[-2]), int(x.shape[-1])))


#: The largest kernel size, stride, padding or dilation, as PyTorch's pooling kernels take them as 32-bit ints
#: (a larger one raised "value cannot be converted to type int without overflow", from 2**63 on an overflow
#: TypeError, neither naming the argument).
_MAX_POOL_OPTION = 2**31 - 1

_Pair = tuple[int, int]


def _pool_options(
    kernel_size: object, stride: object, padding: object, dilation: object
) -> tuple[_Pair, _Pair, _Pair, _Pair]:
    """The checked ``(kernel_size, stride, padding, dilation)`` of a max pooling, each as a pair of ints in
    PyTorch's range (``stride=None``: the kernel size), the padding at most half the kernel."""
    k = _pool_pair(kernel_size, "kernel_size", 1)
    s = k if stride is None else _pool_pair(stride, "stride", 1)
    p = _pool_pair(padding, "padding", 0)
    d = _pool_pair(dilation, "dilation", 1)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:  # PyTorch's rule (whatever the dilation)
        raise ValueError(
            f"padding must be at most half of kernel_size {k}: at most {(k[0] // 2, k[1] // 2)}, got {p}"
        )
    return k, s, p, d


def _pool_pair(value: object, name: str, minimum: int) -> _Pair:
    """An int or a pair of ints as a pair (:func:`~sparse_ops._checks.check_pair`), each at most 2**31 - 1."""
    pair = _checks.check_pair(value, name, minimum)
    if max(pair) > _MAX_POOL_OPTION:
        raise ValueError(
            f"{name} must be at most 2**31 - 1 = {_MAX_POOL_OPTION} (PyTorch's pooling takes 32-bit sizes), "
            f"got {value!r}"
        )
    return pair


def _pooled_side(n: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of a max pooling along a side of ``n`` pixels (PyTorch's ``pooling_output_shape``)."""
    span = n + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= n + padding:  # the last window must start inside the input
        out -= 1
    return out


#: The dtypes of ``values`` that :func:`max_unpool2d` takes: those PyTorch's scatter has kernels for (not
#: float8 or complex32), the wide unsigned integers included.
_SCATTER_DTYPES = (*_checks.KERNEL_DTYPES, *_checks._WIDE_UNSIGNED)


def max_unpool2d(
    values: Tensor,
    indices: Tensor,
    output_size: Sequence[SupportsIndex],
    *,
    validate: bool = True,
) -> Tensor:
    """Deterministic max unpooling: scatter ``values`` to ``indices`` of a zero map of ``output_size``.

    Equal to ``nn.MaxUnpool2d`` (with matching kernel, stride and padding) where that runs; also runs under
    ``torch.use_deterministic_algorithms(True)``. Differentiable w.r.t. ``values`` (the gradient is gathered
    back from ``indices``).

    Args:
        values (Tensor[B, C, h, w] | Tensor[C, h, w]): pooled values (or decoder features of the same shape).
        indices (LongTensor[B, C, h, w] | LongTensor[C, h, w]): flat positions from
            :func:`max_pool2d_with_indices`.
        output_size (Sequence[int]): ``(H, W)`` of the map to fill (a tuple, a list, a ``torch.Size``); a
            longer size (e.g. ``x.shape``) is accepted and its last two entries are used.
        validate (bool): check that indices lie in ``[0, H * W)`` (a host-device synchronisation on
            CUDA); types, shapes and devices are always checked.

    Returns:
        Tensor[B, C, H, W] | Tensor[C, H, W]: the unpooled map.

    Raises:
        TypeError: ``values`` or ``indices`` not a dense (strided) tensor, ``values`` of a dtype PyTorch
            cannot scatter (float8, complex32), ``indices`` not int64, ``output_size`` not a sequence of
            ints, or ``validate`` not a bool.
        ValueError: ``values`` not 3-D or 4-D, ``indices`` of another shape or device, ``output_size`` not
            ending with a positive ``(H, W)`` or giving a map no tensor can hold (its size in bytes or its
            strides above ``2**63 - 1``; a size a tensor can hold but the memory cannot gets PyTorch's
            out-of-memory error, as ``torch.zeros`` does), or, with ``validate=True``, indices outside
            ``[0, H * W)`` or a call that ``torch.export`` traces (the check reads the indices).

    Example:
        >>> v = torch.tensor([[[[4., 9.]]]]); i = torch.tensor([[[[3, 8]]]])
        >>> max_unpool2d(v, i, (3, 3))
        tensor([[[[0., 0., 0.],
                  [4., 0., 0.],
                  [0., 0., 9.]]]])
    """
    validate = _checks.check_bool(validate, "validate")
    if not isinstance(values, Tensor):
        raise TypeError(
            f"values must be a Tensor of shape [B, C, h, w] or [C, h, w], got {type(values).__name__}"
            f"{_checks._numpy_hint(values, 'values')}"
        )
    if not isinstance(indices, Tensor):
        raise TypeError(
            f"indices must be a Tensor of shape [B, C, h, w] or [C, h, w], got {type(indices).__name__}"
            f"{_checks._numpy_hint(indices, 'indices')}"
        )
    _checks.check_dense(values, "values")  # PyTorch's errors for sparse or nested ones name no argument
    _checks.check_dense(indices, "indices")
    if values.dim() not in (3, 4):
        raise ValueError(f"values must have shape [B, C, h, w] or [C, h, w], got shape {tuple(values.shape)}")
    if indices.shape != values.shape:
        raise ValueError(
            f"indices must have the shape of values {tuple(values.shape)}, got shape {tuple(indices.shape)}"
        )
    # (float8, complex32: PyTorch's NotImplementedError named no argument)
    if values.dtype not in _SCATTER_DTYPES:
        raise TypeError(
            "values must be a floating (float16/bfloat16/float32/float64), integer, bool or complex64/128 "
            f"tensor, got dtype {values.dtype}"
        )
    if indices.dtype != torch.long:
        swapped = values.dtype == torch.long and indices.is_floating_point()
        hint = " (the values come first, then the indices)" if swapped else ""
        raise TypeError(f"indices must be a LongTensor (torch.int64), got dtype {indices.dtype}{hint}")
    if indices.device != values.device:
        raise ValueError(f"indices must be on the device of values ({values.device}), got {indices.device}")
    try:
        size = tuple(_checks.check_int(v, "output_size") for v in output_size)[-2:]
    except TypeError:
        raise TypeError(f"output_size must be a sequence of ints (H, W), got {output_size!r}") from None
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"output_size must end with a positive (H, W), got {tuple(output_size)}")
    H, W = size
    # before the map is allocated: PyTorch refused a size no tensor can hold with errors naming no argument
    _checks.check_tensor_size(
        f"output_size {tuple(output_size)} is too large for values of shape {tuple(values.shape)}",
        (*values.shape[:-2], H, W),
        values.dtype,
    )
    if validate and indices.numel() and not indices.is_meta:  # meta: shapes only, no index to check
        _checks.check_validate_reads(indices, "validate=True checks the range of indices")
        lo, hi = torch.stack(torch.aminmax(indices)).tolist()  # one pass, one read (not two of each)
        if lo < 0 or hi >= H * W:
            raise ValueError(
                f"indices must lie in [0, H * W) = [0, {H * W}) for output_size {(H, W)}, got range [{lo}, "
                f"{hi}] "
                "(indices from an input of another size, or of a pooling window that lies entirely in the "
                "padding?)"
            )
    lead = values.shape[:-2]
    flat_v = values.flatten(-2)
    flat_i = _checks.savable(indices, values).flatten(-2)  # saved by the scatter: indices of an eval pass
    out = values.new_zeros(*lead, H * W).scatter_(-1, flat_i, flat_v)  # in place on a fresh map: one pass
    return out.reshape(*lead, H, W)


class MaxPoolWithIndices(nn.Module):
    """Encoder stage of a SegNet: max pooling that returns :class:`PooledWithIndices`.

    Args:
        kernel_size (int | tuple[int, int] | list[int]): pooling window (default 2).
        stride (int | tuple[int, int] | list[int] | None): defaults to ``kernel_size``.
        padding (int | tuple[int, int] | list[int]): implicit ``-inf`` padding (at most half the kernel).
        dilation (int | tuple[int, int] | list[int]): window dilation.
        ceil_mode (bool): use ``ceil`` for the output size.
        validate (bool): kept for the common signature: there is no value to check (types, shapes and devices
            are always checked).

    Shape:
        - input: :math:`(B, C, H, W)` or :math:`(C, H, W)`
        - output: ``PooledWithIndices(values (B, C, h, w), indices (B, C, h, w), input_size (H, W))`` (without
          ``B`` for an unbatched input)

    Raises:
        TypeError: an argument of the wrong type (when the module is built).
        ValueError: a negative padding or one above half the kernel, or a ``kernel_size``, ``stride``,
            ``padding`` or ``dilation`` above ``2**31 - 1`` (when the module is built, as
            :func:`max_pool2d_with_indices` refuses them).

    Example:
        >>> pool, unpool = MaxPoolWithIndices(2), MaxUnpool()
        >>> x = torch.randn(1, 3, 7, 5)
        >>> p = pool(x)
        >>> unpool(p).shape  # odd sizes round-trip
        torch.Size([1, 3, 7, 5])
    """

    def __init__(
        self,
        kernel_size: SupportsIndex | tuple[SupportsIndex, SupportsIndex] | list[SupportsIndex] = 2,
        stride: SupportsIndex | tuple[SupportsIndex, SupportsIndex] | list[SupportsIndex] | None = None,
        padding: SupportsIndex | tuple[SupportsIndex, SupportsIndex] | list[SupportsIndex] = 0,
        *,
        dilation: SupportsIndex | tuple[SupportsIndex, SupportsIndex] | list[SupportsIndex] = 1,
        ceil_mode: bool = False,
        validate: bool = True,
    ) -> None:
        super().__init__()
        # checked here, as in the function: a bad option is refused where the module is built
        self.kernel_size, self.stride, self.padding, self.dilation = _pool_options(
            kernel_size, stride, padding, dilation
        )
        self.ceil_mode = _checks.check_bool(ceil_mode, "ceil_mode")
        self.validate = _checks.check_bool(validate, "validate")

    def forward(self, x: Tensor) -> PooledWithIndices:
        """See :func:`max_pool2d_with_indices`."""
        return max_pool2d_with_indices(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            validate=self.validate,
        )

    if TYPE_CHECKING:  # nn.Module.__call__ is typed (*args, **kwargs) -> Any: give callers forward's
        # signature (tests/test_typing_user.py checks that the two agree)

        def __call__(self, x: Tensor) -> PooledWithIndices: ...

    def extra_repr(self) -> str:  # validate only when off, as every other module of the package prints it
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
            + ("" if self.validate else ", validate=False")
        )


class MaxUnpool(nn.Module):
    """Decoder stage of a SegNet: deterministic max unpooling (:func:`max_unpool2d`).

    Call it with the :class:`PooledWithIndices` of the paired :class:`MaxPoolWithIndices`, or with decoder
    features of the pooled shape plus ``indices`` and ``output_size`` (or the pooled record as ``indices``).

    Args:
        validate (bool): check the index range (see :func:`max_unpool2d`); types, shapes and devices are
            always checked.

    Shape:
        - input: :math:`(B, C, h, w)` or :math:`(C, h, w)` values and indices
        - output: :math:`(B, C, H, W)` or :math:`(C, H, W)` with ``(H, W)`` the recorded input size

    Example:
        >>> pool, unpool = MaxPoolWithIndices(), MaxUnpool()
        >>> p = pool(torch.arange(16.0).reshape(1, 1, 4, 4))
        >>> unpool(p.values * 10, p)  # decoder features + the pooling record
        tensor([[[[  0.,   0.,   0.,   0.],
                  [  0.,  50.,   0.,  70.],
                  [  0.,   0.,   0.,   0.],
                  [  0., 130.,   0., 150.]]]])
    """

    def __init__(self, *, validate: bool = True) -> None:
        super().__init__()
        self.validate = _checks.check_bool(validate, "validate")

    @overload
    def forward(
        self,
        values: PooledWithIndices,
        indices: None = None,
        output_size: Sequence[SupportsIndex] | None = None,
    ) -> Tensor: ...

    @overload
    def forward(
        self,
        values: Tensor,
        indices: PooledWithIndices,
        output_size: Sequence[SupportsIndex] | None = None,
    ) -> Tensor: ...

    @overload
    def forward(self, values: Tensor, indices: Tensor, output_size: Sequence[SupportsIndex]) -> Tensor: ...

    def forward(
        self,
        values: Tensor | PooledWithIndices,
        indices: Tensor | PooledWithIndices | None = None,
        output_size: Sequence[SupportsIndex] | None = None,
    ) -> Tensor:
        """See :func:`max_unpool2d`; ``values`` or ``indices`` may be the pooling record."""
        if isinstance(values, PooledWithIndices):
            if indices is not None:
                raise TypeError(
                    "indices must be None when values is a PooledWithIndices record (the record holds them), "
                    f"got {_checks._describe(indices)}"
                )
            values, indices, recorded = values
            output_size = recorded if output_size is None else output_size
        elif isinstance(indices, PooledWithIndices):
            output_size = indices.input_size if output_size is None else output_size
            indices = indices.indices
        if indices is None or output_size is None:
            missing = " and ".join(
                f"{name}=None"
                for name, v in (("indices", indices), ("output_size", output_size))
                if v is None
            )
            raise TypeError(
                "MaxUnpool needs indices and output_size: pass the PooledWithIndices record of the paired "
                f"pool (as values or as indices), or both, got {missing}"
            )
        return max_unpool2d(values, indices, output_size, validate=self.validate)

    if TYPE_CHECKING:  # nn.Module.__call__ is typed (*args, **kwargs) -> Any: give callers forward's
        # signature (tests/test_typing_user.py checks that the two agree)

        @overload
        def __call__(
            self,
            values: PooledWithIndices,
            indices: None = None,
            output_size: Sequence[SupportsIndex] | None = None,
        ) -> Tensor: ...

        @overload
        def __call__(
            self,
            values: Tensor,
            indices: PooledWithIndices,
            output_size: Sequence[SupportsIndex] | None = None,
        ) -> Tensor: ...

        @overload
        def __call__(
            self,
            values: Tensor,
            indices: Tensor,
            output_size: Sequence[SupportsIndex],
        ) -> Tensor: ...

        def __call__(
            self,
            values: Tensor | PooledWithIndices,
            indices: Tensor | PooledWithIndices | None = None,
            output_size: Sequence[SupportsIndex] | None = None,
        ) -> Tensor: ...

    def extra_repr(self) -> str:  # validate only when off, as every other module of the package prints it
        return "" if self.validate else "validate=False"
