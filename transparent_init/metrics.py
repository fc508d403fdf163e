"""The paper's metrics of transparency (Table 2/3): init rate, recovery rate, max abs error."""

from __future__ import annotations

import math
from typing import SupportsFloat

import torch
from torch import Tensor, nn

from ._checks import check_dense, check_module, check_real, has_float64

__all__ = ["INIT_RATE_THRESHOLD", "RECOVERY_EPS", "init_rate", "max_abs_error", "recovery_rate"]

#: The paper's threshold for a parameter to count as initialized (``|w| > 1e-4``, Table 2).
INIT_RATE_THRESHOLD = 1e-4
#: The paper's tolerance for an output to count as recovered (``|y - x| < 1e-4``, Table 2).
RECOVERY_EPS = 1e-4


def _in_dtype(threshold: float, dtype: torch.dtype) -> float:
    """``threshold`` rounded to ``dtype`` (one of its two neighbours there; inf beyond the range), as a Python
    float that ``dtype`` holds exactly: compared with it, a tensor of ``dtype`` is compared exactly, and no
    float64 tensor is made (a device may have none)."""
    return float(torch.tensor(threshold, dtype=dtype))


def _above(size: Tensor, threshold: float) -> Tensor:
    """``size > threshold`` exactly, whatever the floating dtype of ``size``: compared in that dtype,
    ``threshold`` was rounded to it first (``1e-4`` is ``1.0001659e-4`` in float16), so a value counted or not
    by dtype. Exact without a float64 copy: with ``t`` the threshold rounded to the dtype
    (:func:`_in_dtype`), no value of the dtype lies strictly between ``t`` and ``threshold``."""
    if size.dtype == torch.float64:  # a Python float is a float64: compared as it is
        return size > threshold
    t = _in_dtype(threshold, size.dtype)
    return size >= t if t > threshold else size > t


def _int_above(values: Tensor, threshold: float) -> Tensor:
    """``|values| > threshold`` exactly for an integer (or bool) tensor: ``values >= k`` or ``values <= -k``
    with ``k = floor(threshold) + 1``, compared as integers. ``abs`` wraps the most negative value onto itself
    (``-128`` in int8) and a comparison with a float rounds both to float32 (``16777217 > 16777216.5`` read
    False), so neither is used."""
    if values.dtype == torch.bool:
        values = values.to(torch.uint8)
    k = math.floor(threshold) + 1
    if values.dtype in (torch.uint16, torch.uint32):  # no comparison kernels: as int64, which holds them
        values = values.long()
    elif values.dtype == torch.uint64:  # as int64 too, where a value above 2**63 - 1 reads 2**64 less
        signed = values.view(torch.int64)
        if k < 2**63:
            return (signed >= k) | (signed < 0)
        return (
            (signed < 0) & (signed >= k - 2**64) if k < 2**64 else torch.zeros_like(signed, dtype=torch.bool)
        )
    info = torch.iinfo(values.dtype)
    above = values >= k if k <= info.max else torch.zeros_like(values, dtype=torch.bool)
    return above | (values <= -k) if -k >= info.min else above


def _below(size: Tensor, threshold: float) -> Tensor:
    """``size < threshold`` exactly for a floating ``size``, as :func:`_above`: compared in the dtype of
    ``size``, ``threshold`` was rounded to it first (``1e-4`` is ``9.9999997e-5`` in float32, so an error of
    exactly that value was not counted as below ``1e-4``). NaN is never below."""
    if size.dtype == torch.float64:
        return size < threshold
    t = _in_dtype(threshold, size.dtype)
    return size <= t if t < threshold else size < t


def init_rate(module: nn.Module, threshold: SupportsFloat = INIT_RATE_THRESHOLD) -> float:
    """Share of all parameter entries (weights and biases) with ``|w| > threshold``, in ``[0, 1]``.

    NaN when an entry is NaN (neither above nor below the threshold: counting it as not initialized would hide
    it); infinite entries count as above.

    The paper's "init rate" (its Table 2 reports it in percent): how much of the stack starts non-negligible.

    Args:
        module: any module; every entry of ``module.parameters()`` counts once.
        threshold: magnitude a parameter must exceed (>= 0), compared exactly (not rounded to a
            parameter's dtype first: the same value counts alike in every dtype).

    Returns:
        float: the share in ``[0, 1]``, or NaN when an entry is NaN.

    Raises:
        TypeError: ``module`` not an ``nn.Module``, ``threshold`` not a real.
        ValueError: ``threshold`` negative or not finite, ``module`` without any parameter entry (no
            parameter, or only empty ones), or a parameter on the ``meta`` device (no values).

    Example:
        >>> from torch import nn
        >>> lin = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.eye(2)); _ = lin.bias.zero_()
        >>> init_rate(lin)  # 2 of 6 entries are non-zero
        0.3333333333333333
    """
    mod = check_module(module)
    thr = check_real(threshold, "threshold", strict=False)
    total = 0
    big = 0
    nan = False
    for name, p in mod.named_parameters():
        if p.is_meta:
            raise ValueError(f"module parameter {name!r} is on the meta device (no values to count)")
        total += p.numel()
        if not (p.is_floating_point() or p.is_complex()):  # integer parameters: compared as integers
            big += int(_int_above(p.detach(), thr).sum())
            continue
        # float8 has no comparison kernels: in float32, which holds each of its values exactly
        size = (p.detach().float() if _is_float8(p.dtype) else p.detach()).abs()
        big += int(_above(size, thr).sum())
        nan = nan or bool(size.isnan().any())
    if total == 0:  # nothing to count: no parameter, or only empty ones (nn.Linear(0, 0))
        shapes = [list(p.shape) for p in mod.parameters()]
        if not shapes:
            raise ValueError(
                f"module has no parameters, got {type(mod).__name__} without any: no entry to count"
            )
        raise ValueError(
            f"module has no parameter entries, got {type(mod).__name__} whose {len(shapes)} parameters are "
            f"all empty (shapes {shapes}): no entry to count"
        )
    return math.nan if nan else big / total


def _errors(module: nn.Module, x: Tensor, target: Tensor | None) -> Tensor:
    mod = check_module(module)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    check_dense(x, "x")
    if x.numel() == 0:
        raise ValueError(f"x must not be empty, got shape {list(x.shape)}")
    ref = x if target is None else target
    if not isinstance(ref, Tensor):
        raise TypeError(f"target must be a torch.Tensor or None, got {type(ref).__name__}")
    check_dense(ref, "target")
    for name, t in (("x", x), ("target", ref)):
        if t.is_meta:  # shapes only: no difference can be measured
            raise ValueError(
                f"{name} must hold values, got a tensor on the meta device (shape {list(t.shape)})"
            )
    with torch.no_grad():
        # on a copy: an in-place module (nn.ReLU(inplace=True)) would change the caller's x, which is also
        # the default reference (the error then read 0)
        y = mod(x.detach().clone())
    if not isinstance(y, Tensor):  # e.g. an nn.LSTM's (output, state) tuple
        raise TypeError(f"module must return a torch.Tensor, got {type(y).__name__}")
    if y.shape != ref.shape:
        raise ValueError(
            f"module output shape {list(y.shape)} != "
            f"{'x' if target is None else 'target'} shape {list(ref.shape)}"
            + ("; pass target= for a non-identity map" if target is None else "")
        )
    if y.numel() == 0:  # a zero-width layer (nn.Linear(n, 0)) with an empty target: no entry to measure
        raise ValueError(f"module output must not be empty, got shape {list(y.shape)}")
    # in the promoted dtype, at least float32 (float64 when the output or the target is an integer / bool
    # tensor): casting the target to a float16 or integer output's dtype would round it before the
    # difference and under-report the error, and so would float32 for an integer beyond 2**24 (an int32
    # output 16777217 against a float32 target 16777216 read as an error of 0)
    # float8 takes part in no promotion (RuntimeError "Promotion for Float8 Types is not supported"): read
    # as float32, which holds each of its values exactly
    dt = torch.promote_types(*(torch.float32 if _is_float8(t.dtype) else t.dtype for t in (y, ref)))
    exact = all(t.dtype.is_floating_point or t.dtype.is_complex for t in (y, ref))
    dt = torch.promote_types(dt, torch.float32 if exact else torch.float64)
    # no float64 (nor complex128) on the device (MPS): the difference on the host
    if dt in (torch.float64, torch.complex128) and not has_float64(y.device):
        y, ref = _to_host(y), _to_host(ref)
    # a measurement: no graph (nn.Identity returns x itself)
    y, ref = y.detach(), ref.detach().to(y.device)
    if (
        dt == torch.float64 and not exact
    ):  # an integer output or target: no integer rounded before the difference
        return _difference_of_integers(y, ref).abs()
    return (y.to(dt) - ref.to(dt)).abs()


def _parts(t: Tensor) -> tuple[Tensor, Tensor | None]:
    """``(hi * 2**32, lo)`` in float64, both exact, of an integer or bool tensor: ``t = hi * 2**32 + lo`` with
    ``hi * 2**32`` the multiple of ``2**32`` nearest ``t`` (``-2**31 <= lo < 2**31``: an integer below
    ``2**31`` in size is all ``lo``; a uint64 value above ``2**63 - 1`` as held); ``(t, None)`` of a floating
    one."""
    if t.is_floating_point():
        return t.to(torch.float64), None
    i = t.view(torch.int64) if t.dtype == torch.uint64 else t.to(torch.int64)
    hi = torch.bitwise_right_shift(i, 32)
    if t.dtype == torch.uint64:  # the bits of a value from 2**63 on read as a negative int64: 2**32 more
        hi = hi + (i < 0).to(torch.int64) * 2**32
    lo = torch.bitwise_and(i, 2**32 - 1)
    upper = lo >= 2**31  # rounded to the nearer multiple: a float near t is then near hi * 2**32 too
    hi, lo = hi + upper.to(torch.int64), lo - upper.to(torch.int64) * 2**32
    return hi.to(torch.float64) * 2.0**32, lo.to(torch.float64)


def _difference_of_integers(y: Tensor, ref: Tensor) -> Tensor:
    """``y - ref`` in float64 where one or both are integer tensors.

    Cast to float64 first, an int64 beyond ``2**53`` was rounded before the difference: ``2**53 + 1``
    against ``2**53`` read an error of 0 (and counted as recovered). Each integer is split into two parts
    that float64 holds exactly (:func:`_parts`); the high parts and the low parts are subtracted apart, then
    added once. Between two integers that is the correctly rounded difference; against a float, the high
    parts' difference is exact where the float is near the integer (the small errors a metric must not
    lose), so the result is the correctly rounded one there too, and off by at most a rounding elsewhere.
    """
    y_hi, y_lo = _parts(y)
    ref_hi, ref_lo = _parts(ref)
    # (no zero tensor made for a missing part: a factory would make float64 on a device without it)
    if y_lo is None:
        assert ref_lo is not None  # (one of the two is an integer tensor)
        low = -ref_lo
    else:
        low = y_lo if ref_lo is None else y_lo - ref_lo
    return (y_hi - ref_hi) + low


def _is_float8(dtype: torch.dtype) -> bool:
    """A one-byte floating dtype (float8_e4m3fn, float8_e5m2, ...): no comparison kernels, no promotion."""
    return dtype.is_floating_point and dtype.itemsize == 1


def _to_host(t: Tensor) -> Tensor:
    """``t`` on the CPU, in its own dtype (from MPS a move and a float64 cast in one copy would raise)."""
    return t.cpu()


def recovery_rate(
    module: nn.Module, x: Tensor, eps: SupportsFloat = RECOVERY_EPS, *, target: Tensor | None = None
) -> float:
    """Share of output entries within ``eps`` of the target (the input by default), in ``[0, 1]``.

    The paper's "recovery" (Table 2, percent): ``mean(|module(x) - target| < eps)``, the difference taken in
    the promoted dtype of output and target, at least float32 (float64 when the output or the target is an
    integer or bool tensor, split so that an integer beyond ``2**53`` is not rounded before the difference):
    the target is never rounded to a float16 or integer output's dtype first, nor
    ``eps`` to the difference's dtype (an error of ``9.9999997e-5``, float32's nearest value to ``1e-4``, is
    below the default ``eps``); a NaN entry is not recovered.

    Args:
        module: the stack (evaluated under ``torch.no_grad``, in its current train / eval mode: call
            ``module.eval()`` first if it holds dropout or batch norm, whose training mode is not the map).
        x (Tensor[*]): input batch; ``module`` runs on a copy of it, so an in-place module
            (``nn.ReLU(inplace=True)``) changes neither ``x`` nor the reference.
        eps: tolerance (> 0).
        target (Tensor[*] | None): expected output; ``None`` means ``x`` (identity).

    Returns:
        float: the share of recovered output entries, in ``[0, 1]``.

    Raises:
        TypeError: ``module`` not an ``nn.Module``, ``x`` or ``target`` not a dense tensor (sparse, nested),
            ``eps`` not a real, or a module output that is not a tensor (a tuple, as ``nn.LSTM`` returns).
        ValueError: ``eps`` not a finite real > 0, an empty ``x`` or output, ``x`` or ``target`` on the
            ``meta`` device (no values), or an output whose shape differs from the target's (``x``'s by
            default: pass ``target=`` for a non-identity map).

    Example:
        >>> from torch import nn
        >>> recovery_rate(nn.Identity(), torch.randn(4, 3))
        1.0
        >>> recovery_rate(nn.ReLU(), torch.tensor([-1.0, 2.0, -3.0, 4.0]))
        0.5
    """
    tol = check_real(eps, "eps")
    err = _errors(module, x, target)
    # an exact count (no float64 on the device: MPS has none)
    return int(_below(err, tol).sum()) / err.numel()


def max_abs_error(module: nn.Module, x: Tensor, *, target: Tensor | None = None) -> float:
    """``max |module(x) - target|`` (target defaults to ``x``), the paper's Table 3 figure.

    The difference is taken in the promoted dtype of output and target, at least float32 (float64 when the
    output or the target is an integer or bool tensor), as in :func:`recovery_rate`; ``module`` is run as
    there (``torch.no_grad``, its current train / eval mode, on a copy of ``x``: an in-place module changes
    neither ``x`` nor the reference).

    Args:
        module: the stack.
        x (Tensor[*]): input batch.
        target (Tensor[*] | None): expected output; ``None`` means ``x`` (identity).

    Returns:
        float: the largest absolute difference (NaN if a difference is NaN).

    Raises:
        TypeError: ``module`` not an ``nn.Module``, ``x`` or ``target`` not a dense tensor (sparse,
            nested), or a module output that is not a tensor.
        ValueError: an empty ``x`` or output, ``x`` or ``target`` on the ``meta`` device, or an output whose
            shape differs from the target's.

    Example:
        >>> from torch import nn
        >>> max_abs_error(nn.ReLU(), torch.tensor([-1.0, 2.0, -3.0]))
        3.0
    """
    return float(_errors(module, x, target).max())
