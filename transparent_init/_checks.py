"""The one validation module of :mod:`transparent_init`.

Every check names the argument, the expected and the actual value. Integers go through :func:`operator.index`
(Python and numpy integers, integer 0-d tensors; never ``bool`` or ``float``), reals through
:class:`numbers.Real` (Python and numpy floats, and real 0-d tensors), booleans are ``bool`` or numpy bools.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterator, Sequence
from typing import Literal, get_args

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "MAX_HIDDEN_WIDTH",
    "MAX_WIDTH",
    "SEED_RANGE",
    "SUPPORTED_DTYPES",
    "Activation",
    "as_generator",
    "cast_representable",
    "check_activation",
    "check_bool",
    "check_dense",
    "check_dtype",
    "check_hidden",
    "check_int",
    "check_layer_dtype",
    "check_matrix_size",
    "check_module",
    "check_not_meta",
    "check_own_parameters",
    "check_real",
    "check_slope",
    "check_target",
    "check_width",
    "check_writable",
    "has_float64",
    "resolve_target",
    "zero_width",
]

#: The activations a transparent stack can read back (``None`` means no activation); exported as
#: ``transparent_init.Activation``, to annotate one's own wrappers.
Activation = Literal["relu", "leaky_relu"]
ACTIVATIONS: tuple[Activation | None, ...] = (None, *get_args(Activation))


#: The dtypes a stack may have: the construction rounds to them and checks the result (``torch.finfo``,
#: ``isfinite``); float8 and complex dtypes have neither.
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


#: Seeds ``torch.Generator.manual_seed`` accepts (int64 and uint64 values).
SEED_RANGE = (-(2**63), 2**64 - 1)

#: The largest width of a layer, the largest int64 (PyTorch's size type), for ``in`` / ``out`` widths.
MAX_WIDTH = 2**63 - 1

#: The largest logical hidden width, half of :data:`MAX_WIDTH`, as an activation doubles it (``[z, -z]``)
#: and the real width must still be an int64. One bound whatever the activation (a width of 2**62 units is
#: far beyond any memory anyway).
MAX_HIDDEN_WIDTH = MAX_WIDTH // 2


def _show(value: object) -> str:
    return f"{type(value).__name__} ({value!r})"


def check_not_meta(value: object, name: str, expected: str, instead: str = "a Python number") -> None:
    """Refuse a tensor on the ``meta`` device where a value is read (PyTorch's own errors, "Tensor.item()
    cannot be called on meta tensors" / "Cannot copy out of meta tensor", name no argument)."""
    if isinstance(value, Tensor) and value.is_meta:
        raise ValueError(
            f"{name} must be {expected}, got a tensor on the meta device (shape {list(value.shape)}, no "
            f"values; made under `with torch.device('meta')`?): create it with device='cpu', or pass "
            f"{instead}"
        )


def check_int(value: object, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as a Python int in ``[minimum, maximum]`` (what :func:`operator.index` takes, but a
    ``bool``, a bool tensor or a tensor that is not 0-d; a tensor on the meta device, which holds no value,
    is a ``ValueError``)."""
    expected = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    # operator.index also takes a bool tensor and a one-element tensor of any shape: only 0-d integer ones
    if isinstance(value, bool) or (
        isinstance(value, Tensor) and (value.dim() != 0 or value.dtype == torch.bool)
    ):
        raise TypeError(f"{name} must be {expected}, got {_show(value)}")
    check_not_meta(value, name, expected)
    try:
        out = operator.index(value)  # type: ignore[arg-type]  # any object: the TypeError is the check
    except TypeError:
        raise TypeError(f"{name} must be {expected}, got {_show(value)}") from None
    if out < minimum or (maximum is not None and out > maximum):
        raise ValueError(f"{name} must be {expected}, got {out}")
    return out


def check_width(value: object, name: str, *, doubled: bool = False) -> int:
    """A layer width: :func:`check_int` (``>= 1``), at most :data:`MAX_WIDTH`, or :data:`MAX_HIDDEN_WIDTH`
    for a hidden width that an activation doubles (PyTorch's own errors beyond, "Overflow when unpacking long
    long", name no argument)."""
    out = check_int(value, name)
    maximum = MAX_HIDDEN_WIDTH if doubled else MAX_WIDTH
    if out > maximum:
        why = "2**62 - 1: an activation doubles a hidden width, and" if doubled else "2**63 - 1:"
        raise ValueError(
            f"{name} must be an int <= {maximum} ({why} a width is a PyTorch size, an int64), got {out}"
        )
    return out


def check_matrix_size(rows: int, cols: int, dtype: torch.dtype, what: str) -> None:
    """Refuse a ``rows x cols`` matrix of ``dtype`` whose size in bytes does not fit int64 (PyTorch's
    "Storage size calculation overflowed", which names no argument); ``what`` names the matrix and the
    arguments that give its shape."""
    size = rows * cols * dtype.itemsize
    if size > MAX_WIDTH:
        raise ValueError(
            f"{what} would be a {rows} x {cols} matrix of {dtype}, {size} bytes: more than a tensor can hold "
            "(its size in bytes is an int64, at most 2**63 - 1)"
        )


def check_bool(value: object, name: str) -> bool:
    """``value`` as a Python ``bool``: a ``bool`` or a numpy bool (ints such as 0 / 1 are rejected: they often
    mean a width)."""
    if isinstance(value, bool):
        return value
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {_show(value)}")


def check_real(value: object, name: str, *, minimum: float = 0.0, strict: bool = True) -> float:
    """A finite real ``> minimum`` (``>= minimum`` when not ``strict``), as a Python float (a 0-d tensor on
    the meta device, which holds no value, is a ``ValueError``)."""
    expected = f"a finite real {'>' if strict else '>='} {minimum:g}"
    if (
        isinstance(value, Tensor)
        and value.dim() == 0
        and not (value.is_complex() or value.dtype == torch.bool)
    ):
        check_not_meta(value, name, expected)
        value = value.item()  # a 0-d tensor, as integer arguments accept
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {expected}, got {_show(value)}")
    try:
        out = float(value)
    except OverflowError:  # an int beyond the float range (10**400)
        out = math.inf
    if not (math.isfinite(out) and (out > minimum if strict else out >= minimum)):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return out


def check_slope(negative_slope: object, name: str = "negative_slope") -> float:
    """A LeakyReLU slope: a finite real ``>= 0`` (0 is a ReLU: ``act(z) - act(-z) = (1 + slope) z`` holds for
    every slope, and a negative one, which makes the activation non-monotone, is refused)."""
    return check_real(negative_slope, name, strict=False)


def check_hidden(
    hidden: object, in_features: int, name: str = "hidden_features", in_name: str = "in_features"
) -> tuple[int, ...]:
    """Logical hidden widths: a non-empty sequence (list, tuple, range, 1-D tensor or array) of ints in
    ``[in, MAX_HIDDEN_WIDTH]``, each checked as it is read (the first bad one is refused at once, however
    long the sequence); an iterator or a generator is refused (it may be endless and is used up once read)."""
    if (
        isinstance(hidden, (str, bytes))
        or not isinstance(hidden, (Sequence, Tensor, np.ndarray))  # a set has no order, a dict no widths
        or getattr(hidden, "ndim", 1) != 1  # a 0-d or 2-d tensor or array
    ):
        hint = ""
        if isinstance(hidden, Iterator):  # a generator too
            hint = " (an iterator or generator may be endless and is used up once read: pass a list or tuple)"
        raise TypeError(f"{name} must be a sequence of ints, got {_show(hidden)}{hint}")
    widths = []
    for i, h in enumerate(hidden):
        width = check_width(h, f"{name}[{i}]", doubled=True)
        if width < in_features:
            raise ValueError(
                f"{name}[{i}] (hidden layer {i}) has width {width} < {in_name} = {in_features}: every hidden "
                f"width must be >= {in_name} for the stack to have an exact right inverse"
            )
        widths.append(width)
    if not widths:
        raise ValueError(f"{name} must hold at least one width (depth >= 2), got an empty sequence")
    return tuple(widths)


def check_activation(activation: object, name: str = "activation") -> Activation | None:
    """One of ``None``, ``"relu"``, ``"leaky_relu"``."""
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"{name} must be None or a str in {ACTIVATIONS}, got {_show(activation)}")
    if activation == "relu":
        return "relu"
    if activation == "leaky_relu":
        return "leaky_relu"
    if activation is None:
        return None
    raise ValueError(f"{name} must be one of {ACTIVATIONS}, got {activation!r}")


def check_dtype(dtype: object, name: str = "dtype") -> torch.dtype | None:
    """``None`` or one of the floating dtypes a stack supports (:data:`SUPPORTED_DTYPES`; not float8)."""
    if dtype is not None and (not isinstance(dtype, torch.dtype) or dtype not in SUPPORTED_DTYPES):
        raise TypeError(
            f"{name} must be None or a floating torch.dtype in ({', '.join(map(str, SUPPORTED_DTYPES))}), "
            f"got {_show(dtype)}"
        )
    return dtype


def check_device(device: object, name: str = "device") -> torch.device | None:
    """``device`` as a :class:`torch.device`, or ``None`` (the default device); a device string (``"cpu"``,
    ``"cuda:0"``) or an int index is converted with :class:`torch.device`.

    A :class:`TypeError` for another kind of object (a float, a bool, a tensor) and a :class:`ValueError` for
    a string or an index that names no device (``"cpux"``, ``"cuda:-1"``, ``-1``), both naming ``name`` and
    the value, as :func:`check_dtype` does for the dtype: PyTorch's own errors (from the first tensor made
    there, e.g. "empty(): argument 'device' must be torch.device, not float") named neither. Whether the
    device exists on this machine is not checked (PyTorch says so when the layers are made there). The
    contract and the messages of ``sparse_ops._checks.check_device``, written again: the two packages import
    nothing from each other (as :func:`has_float64`).
    """
    if device is None or isinstance(device, torch.device):
        return device
    kinds = "a torch.device, a device string such as 'cpu' or 'cuda:0', an int device index or None"
    if isinstance(device, bool) or (
        type(device).__module__ == "numpy" and type(device).__name__ in ("bool", "bool_")
    ):
        raise TypeError(f"{name} must be {kinds}, got {_show(device)}")  # a flag passed to the wrong argument
    try:
        converted: torch.device = torch.device(device)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} must be {kinds}, got {_show(device)}") from None
    except (RuntimeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{name} must name a device, such as 'cpu' or 'cuda:0', got {device!r} ({reason})"
        ) from None
    return converted


def check_module(module: object, name: str = "module") -> nn.Module:
    """An ``nn.Module``."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
    return module


def check_own_parameters(module: nn.Module, name: str) -> None:
    """Refuse a layer whose ``weight`` or ``bias`` is computed from other tensors at each forward (a
    parametrization, ``weight_norm``, ``spectral_norm``, pruning): a value written into it would be lost.

    Reads no parameter (computing a spectral norm's weight would advance its power iteration).
    """
    for attr in ("weight", "bias"):
        parametrized = torch.nn.utils.parametrize.is_parametrized(module, attr)
        # weight_norm / pruning hooks move the parameter away and set a plain tensor in its place
        if parametrized or (attr not in module._parameters and module.__dict__.get(attr) is not None):
            raise ValueError(
                f"{name} computes its {attr} from other tensors at each forward (a parametrization, "
                "weight_norm, spectral_norm or pruning), so an initialization written into it would be lost: "
                "initialize before applying it, or remove it first "
                "(torch.nn.utils.parametrize.remove_parametrizations, torch.nn.utils.remove_weight_norm, "
                "torch.nn.utils.remove_spectral_norm, torch.nn.utils.prune.remove)"
            )


def check_writable(module: nn.Module, name: str) -> None:
    """Refuse a layer whose ``weight`` or ``bias`` cannot be written in place, so that the initializers fail
    before their first write (PyTorch's ``RuntimeError`` came after the layers before it had been written):
    an inference tensor outside inference mode, or an expanded one (stride 0: entries share memory)."""
    for attr in ("weight", "bias"):
        p = module._parameters.get(attr)
        if p is None:
            continue
        if p.is_inference() and not torch.is_inference_mode_enabled():
            raise ValueError(
                f"{name} {attr} is an inference tensor (made under torch.inference_mode()), which cannot be "
                "written outside inference mode: create the layer outside inference mode, or initialize it "
                f"inside it (or give it a normal tensor: layer.{attr} = nn.Parameter(layer.{attr}.clone()))"
            )
        if any(stride == 0 and size > 1 for stride, size in zip(p.stride(), p.shape, strict=True)):
            raise ValueError(
                f"{name} {attr} is an expanded tensor (stride {tuple(p.stride())}: entries share one memory "
                f"location), which cannot hold independent values: give the layer a {attr} of its own "
                f"(layer.{attr} = nn.Parameter(layer.{attr}.detach().clone()))"
            )


def check_layer_dtype(module: nn.Module, name: str) -> None:
    """Refuse a layer whose ``weight`` or ``bias`` has a dtype outside :data:`SUPPORTED_DTYPES` (float8,
    complex), before any layer is written (PyTorch's ``NotImplementedError`` for a float8 draw came after
    the layers before it had been written)."""
    for attr in ("weight", "bias"):
        p = module._parameters.get(attr)
        if p is not None and p.dtype not in SUPPORTED_DTYPES:
            names = ", ".join(map(str, SUPPORTED_DTYPES[:-1])) + f" and {SUPPORTED_DTYPES[-1]}"
            raise ValueError(
                f"{name} has a {attr} of dtype {p.dtype}: only {names} are supported (convert the layers to "
                "one of them first, e.g. with .float())"
            )


def zero_width(module: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d) -> str | None:
    """``"out_features = 0"`` (or ``in_`` / ``_channels``) for an affine layer with no input or no output
    (legal in PyTorch: ``nn.Linear(0, n)``), else ``None``."""
    suffix = "_features" if isinstance(module, nn.Linear) else "_channels"
    for side in ("in", "out"):
        if int(getattr(module, side + suffix)) < 1:
            return f"{side}{suffix} = {getattr(module, side + suffix)}"
    return None


def check_dense(value: Tensor, name: str) -> None:
    """Refuse a sparse (COO, CSR, ...) or nested tensor: elementwise checks and products need a strided one
    (PyTorch's own errors there, ``NotImplementedError`` / ``RuntimeError``, name no argument)."""
    if value.is_nested:
        raise TypeError(f"{name} must be a dense tensor, got a nested tensor")
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {value.layout}: pass {name}.to_dense()")


def check_target(value: object, shape: tuple[int, ...], name: str, *, allow_meta: bool = False) -> Tensor:
    """A finite real tensor of exactly ``shape``, returned as float64 on CPU.

    A tensor on the ``meta`` device holds no values: with ``allow_meta`` (every layer is on meta too, so no
    value is computed) it is checked by shape and returned as float64 on meta; otherwise it is refused.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {list(shape)}, got {type(value).__name__}")
    check_dense(value, name)
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(value.shape)}")
    if value.is_meta:
        if allow_meta:
            return value.detach().to(dtype=torch.float64)
        raise ValueError(
            f"{name} is on the meta device (shapes only, no values), got device {value.device}, but the "
            f"layers are not on meta and their values are computed from it: create {name} outside the meta "
            f"context (e.g. with device='cpu'), or build the stack on meta as well"
        )
    # to the CPU first, then to float64 there: MPS has no float64, and PyTorch refuses one copy from MPS into
    # a float64 CPU tensor (the conversion would run on the device)
    out = value.detach().to("cpu").to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(out)).sum())} non-finite entries")
    return out


def has_float64(device: torch.device) -> bool:
    """Whether tensors of dtype float64 can be made on ``device``: not on ``mps``, nor on an ``xpu`` device
    whose properties say it has no fp64 (the same test as ``sparse_ops._float64.has_float64``)."""
    if device.type == "mps":
        return False
    if device.type == "xpu":
        return bool(getattr(torch.xpu.get_device_properties(device), "has_fp64", True))
    return True


def resolve_target(
    in_features: int,
    out_features: int,
    target_weight: object,
    target_bias: object,
    has_bias: bool,
    *,
    in_name: str = "in_features",
    out_name: str = "out_features",
    allow_meta: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Validated float64 target ``(T [out, in], t [out] | None)``; identity if ``target_weight`` is None.

    ``allow_meta``: the layers are all on the meta device, so targets on meta are accepted (by shape only,
    see :func:`check_target`).
    """
    if target_weight is None:
        if out_features != in_features:
            raise ValueError(
                f"{out_name} = {out_features} != {in_name} = {in_features}: pass target_weight of shape "
                f"[{out_features}, {in_features}] (identity is only the default when they are equal)"
            )
        t_w = (  # layers on meta are initialized by shape, without values (a wide float64 identity is large)
            torch.empty(in_features, in_features, dtype=torch.float64, device="meta")
            if allow_meta
            else torch.eye(in_features, dtype=torch.float64, device="cpu")
        )
    else:
        t_w = check_target(target_weight, (out_features, in_features), "target_weight", allow_meta=allow_meta)
    t_b = (
        None
        if target_bias is None
        else check_target(target_bias, (out_features,), "target_bias", allow_meta=allow_meta)
    )
    if t_b is not None and not t_b.is_meta and not has_bias and bool((t_b != 0).any()):
        raise ValueError(
            "target_bias must be zero (or None) when the last layer has no bias (bias=False), "
            f"got max |target_bias| = {float(t_b.abs().max()):.3g}"
        )
    return t_w, t_b


def cast_representable(value: Tensor, dtype: torch.dtype, name: str, hint: str = "") -> Tensor:
    """``value`` (float64) cast to ``dtype``; ``ValueError`` naming ``name`` if an entry does not fit.

    A finite float64 entry beyond the largest finite value of ``dtype`` would be stored as ``inf`` (and turn
    every output it touches into ``inf``/``NaN``), so it is refused here, before anything is written.
    """
    out = value.to(dtype)
    if bool(torch.isfinite(out).all()):
        return out
    finite = torch.isfinite(value)
    big = float(value[finite].abs().max()) if bool(finite.any()) else math.inf
    if not bool(finite.all()):
        raise ValueError(f"{name} came out non-finite from the float64 solve{hint}")
    raise ValueError(
        f"{name} cannot be stored in {dtype}: it needs entries up to {big:.3g} in magnitude, above the "
        f"largest finite {dtype} ({torch.finfo(dtype).max:.3g}){hint}"
    )


def as_generator(generator: object, name: str = "generator") -> torch.Generator | None:
    """``None``, a ``torch.Generator`` (used as is) or an int seed (a fresh CPU generator seeded with it)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    try:
        seed = check_int(generator, name, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1])
    except TypeError:
        raise TypeError(
            f"{name} must be None, a torch.Generator or an int seed, got {_show(generator)}"
        ) from None
    g = torch.Generator()
    g.manual_seed(seed)
    return g
