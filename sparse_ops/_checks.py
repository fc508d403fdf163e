"""Input validation shared by every ``sparse_ops`` op (hard label-map ops and soft association ops alike).

Each check raises :class:`TypeError` (wrong kind of object or dtype) or :class:`ValueError` (wrong shape,
range, device or value) naming the argument and showing the expected and the actual value. Checks that read
tensor *values* (id ranges, finiteness) synchronise with the device; every public op runs them only with
``validate=True`` and runs each check once per call. Integers are accepted wherever :func:`operator.index`
accepts them (Python and numpy integers, 0-dim integer tensors), never ``bool``.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "EXPORT_VALIDATE_FIX",
    "KERNEL_DTYPES",
    "MAX_CLASSES",
    "MAX_INFERRED_CLASSES",
    "MAX_SLOTS_PER_PIXEL",
    "MAX_TENSOR_SPAN",
    "MIN_SLOT_LIMIT",
    "NUM_SUPERPIXELS_EXPORT_FIX",
    "SYNCHRONISATION",
    "check_assoc",
    "check_assoc_values",
    "check_batch_match",
    "check_bool",
    "check_classifier",
    "check_dense",
    "check_device",
    "check_floating",
    "check_floating_dtype",
    "check_id_range",
    "check_int",
    "check_label_map",
    "check_mask",
    "check_not_exporting",
    "check_not_vmapped",
    "check_num_superpixels",
    "check_number",
    "check_option",
    "check_pair",
    "check_same_device",
    "check_slot_count",
    "check_spatial_match",
    "check_tensor_size",
    "check_validate_reads",
    "check_values_readable",
    "dimension_order_hint",
    "drop_channel_dim",
    "restore_id_layout",
    "savable",
    "slot_limit",
]

#: Up to this many superpixel slots are always allowed, whatever the image size.
MIN_SLOT_LIMIT = 2**16
#: Above :data:`MIN_SLOT_LIMIT`, at most this many slots per pixel of one image are allowed.
MAX_SLOTS_PER_PIXEL = 16
#: Largest class count :func:`~sparse_ops.spixel_loss` infers from a label map (beyond: pass ``num_classes``).
MAX_INFERRED_CLASSES = 2**12
#: Largest ``num_classes`` :func:`~sparse_ops.spixel_loss` takes: its table grows with the class count (a
#: value such as 2**40 tried to allocate hundreds of terabytes for an 8 x 8 image); 65536 is far above any
#: segmentation data set's (21 in PASCAL VOC, 150 in ADE20K, 1203 in LVIS).
MAX_CLASSES = 2**16


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        meta = " on the meta device" if value.is_meta else ""
        return f"Tensor of shape {tuple(value.shape)} and dtype {value.dtype}{meta}"
    return f"{type(value).__name__} {value!r}"


def _numpy_hint(value: object, name: str) -> str:
    """``"; convert it with torch.from_numpy(name)"`` for a numpy array, else ``""``."""
    is_array = type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"
    return f"; convert it with torch.from_numpy({name})" if is_array else ""


def check_int(value: object, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int`` (anything :func:`operator.index` accepts but a ``bool``, a bool tensor or a
    tensor that is not 0-d), ``>= minimum``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool {value}")
    # operator.index also takes torch.tensor(True) as 1 and a one-element tensor of any shape ([[3]]) as 3
    if _is_unscalar_tensor(value):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    if isinstance(value, Tensor) and value.is_meta:  # no value to read (.item() raises deep inside)
        raise TypeError(f"{name} must be an int, got {_describe(value)} (it holds no value)")
    try:
        # an int is taken as it is: under torch.compile a size of a dynamic shape is traced as an int, and
        # operator.index would specialize it (a recompilation for every new image size or num_superpixels)
        result = value if type(value) is int else operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int, got {_describe(value)}") from None
    except RuntimeError:  # a uint64 tensor above 2**63 - 1 ("cannot be converted to type int64_t")
        if not (isinstance(value, Tensor) and value.dtype == torch.uint64):
            raise
        raise ValueError(f"{name} must fit int64 (at most 2**63 - 1), got uint64 {value.item()}") from None
    if minimum is not None and result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result}")
    return result


def check_bool(value: object, name: str) -> bool:
    """``value`` as a Python ``bool``: a ``bool`` or a numpy bool. Anything else is refused rather than read
    by its truth value (``bool("False")`` is ``True``)."""
    if _is_bool(value):
        return bool(value)  # a bool or a numpy bool
    raise TypeError(f"{name} must be a bool, got {_describe(value)}")


def _is_bool(value: object) -> bool:
    """Whether ``value`` is a ``bool`` or a numpy bool."""
    return isinstance(value, bool) or (
        type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")
    )


def _is_unscalar_tensor(value: object) -> bool:
    """Whether ``value`` is a tensor that Python would read as a number although it is none: a bool tensor or
    one that is not 0-d (``operator.index`` and ``float()`` read any one-element tensor)."""
    return isinstance(value, Tensor) and (value.dim() != 0 or value.dtype == torch.bool)


def check_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    """Return an int or a pair of ints as a pair, each ``>= minimum`` (torch's ``_pair`` convention)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    try:
        first, second = (check_int(item, name) for item in items)
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if first < minimum or second < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return first, second


def check_number(value: object, name: str, minimum: float, *, finite: bool = False) -> float:
    """Return a real number (not a ``bool`` of any kind, not a string, not a complex, not a tensor that is not
    0-d or holds no value) ``>= minimum`` as a ``float`` (``inf`` for an int beyond the float range); with
    ``finite``, refuse an infinite one (``inf``, or an int beyond the float range)."""
    if isinstance(value, (str, bytes, bytearray)):  # float("0.5") would parse it: a string is not a number
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    if _is_bool(value):  # float(True) is 1.0: refused, as check_int refuses it
        raise TypeError(f"{name} must be a real number, got bool {value}")
    if type(value).__module__ == "numpy" and getattr(getattr(value, "dtype", None), "kind", None) == "b":
        # a 0-d bool array (np.array(True)), which float() reads as 1.0 as it reads True
        raise TypeError(f"{name} must be a real number, got a numpy bool array {value!r}")
    if _is_unscalar_tensor(value):  # float() reads [0.5]
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    # a complex tensor or numpy complex (a subclass of complex): float() dropped the imaginary part (numpy,
    # with a ComplexWarning only) or raised a RuntimeError that named no argument (a tensor)
    if (isinstance(value, Tensor) and value.is_complex()) or (
        type(value).__module__ == "numpy" and getattr(getattr(value, "dtype", None), "kind", None) == "c"
    ):
        raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    if isinstance(value, Tensor) and value.is_meta:  # no value to read (.item() raises deep inside)
        raise TypeError(f"{name} must be a real number, got {_describe(value)} (it holds no value)")
    if isinstance(value, Tensor) and value.requires_grad:  # float() would cut it from the graph, silently
        raise TypeError(
            f"{name} must be a real number, got a Tensor that requires grad: no gradient would reach it "
            f"(it is used as a constant); pass {name}.item()"
        )
    if not isinstance(value, (int, float)):
        try:
            value = float(value)  # type: ignore[arg-type]  # numpy scalars; anything else: TypeError
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a real number, got {_describe(value)}") from None
    if not value >= minimum:  # also rejects NaN
        raise ValueError(f"{name} must be a number >= {minimum}, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range (10**400): inf, as a float overflow rounds
        number = float("inf")
    if finite and number == float("inf"):
        shown = f"{value!r}" if isinstance(value, float) else f"{value!r}, beyond the float range"
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {shown}")
    return number


def check_option(value: object, name: str, choices: Sequence[object]) -> None:
    """Require one of ``choices`` (the values of a ``Literal`` option); where those are strings (and
    ``None``), a value of another type is a ``TypeError``: a numpy array or a tensor compared with ``in``
    raised numpy's "truth value of an array is ambiguous" or passed as a one-element array."""
    if (
        value is not None
        and not isinstance(value, str)
        and all(c is None or isinstance(c, str) for c in choices)
    ):
        raise TypeError(f"{name} must be one of {tuple(choices)}, got {_describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_dense(value: Tensor, name: str) -> None:
    """Refuse a sparse (COO, CSR, ...) or nested tensor: the ops reshape, sort and gather strided tensors
    (PyTorch's own errors there, "reshape is not implemented for sparse tensors", name no argument)."""
    if value.is_nested:
        raise TypeError(f"{name} must be a dense tensor, got a nested tensor")
    if value.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {value.layout}: pass {name}.to_dense()")


#: The floating dtypes the ops compute in (PyTorch has no scatter, gather or arithmetic kernels for float8).
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: The dtypes PyTorch's CPU kernels broadly support (its sparse ``coalesce`` / ``to_dense``, its scatter):
#: bool, the integers but uint16/32/64, :data:`FLOAT_DTYPES`, complex64 and complex128 (not float8 or
#: complex32, which raise deep inside).
KERNEL_DTYPES = (
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    *FLOAT_DTYPES,
    torch.complex64,
    torch.complex128,
)


def check_floating(x: object, name: str, layout: str, *, before_labels: bool = False) -> Tensor:
    """Require a floating tensor whose dimensions ``layout`` names, e.g. ``"[B, C, H, W]"``.

    ``before_labels``: the op's next argument is a label map, so an integer ``x`` may be one passed first (the
    error says so).
    """
    ndim = layout.count(",") + 1
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape {layout}, got {type(x).__name__}{_numpy_hint(x, name)}"
        )
    check_dense(x, name)
    if not x.is_floating_point():
        swapped = ""
        if before_labels and not x.is_complex() and x.dtype != torch.bool:
            swapped = (
                " if it holds values (an integer tensor here is often a label map passed first: the features "
                "come first, then the superpixels)"
            )
        raise TypeError(
            f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got dtype {x.dtype}; "
            f"convert it with {name}.float(){swapped}"
        )
    if x.dtype not in FLOAT_DTYPES:  # float8: no kernels (an obscure NotImplementedError deep inside)
        raise TypeError(
            f"{name} must be a floating tensor (float16/bfloat16/float32/float64), got dtype {x.dtype}; "
            f"convert it with {name}.float()"
        )
    if x.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dimensions), got shape {tuple(x.shape)}")
    return x


def check_classifier(weight: object, bias: object, features: Tensor) -> tuple[Tensor, Tensor | None]:
    """Require the parameters of a linear classifier on the channels of ``features[B, C, h, w]``:
    ``weight[K, C]`` and ``bias[K]`` or ``None``, on the features' device; return them."""
    channels = features.shape[1]
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"weight must be a Tensor of shape [K, C], got {type(weight).__name__}"
            f"{_numpy_hint(weight, 'weight')}"
        )
    if weight.dim() != 2:
        raise ValueError(f"weight must be a Tensor of shape [K, C], got shape {tuple(weight.shape)}")
    if weight.shape[1] != channels:
        raise ValueError(
            f"weight must have C={channels} columns like features, got shape {tuple(weight.shape)}"
        )
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(
            f"bias must be a Tensor of shape [{weight.shape[0]}] or None, got {type(bias).__name__}"
            f"{_numpy_hint(bias, 'bias')}"
        )
    if bias is not None:  # a sparse weight works in F.linear; a sparse bias failed in its broadcast addition
        check_dense(bias, "bias")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must be a Tensor of shape [{weight.shape[0]}], got shape {tuple(bias.shape)}")
    # on the meta device F.linear gives an uninitialised tensor on the features' device, silently
    check_same_device(features, "features", weight, "weight")
    if bias is not None:
        check_same_device(features, "features", bias, "bias")
    return weight, bias


def check_floating_dtype(dtype: object, name: str, reason: str) -> torch.dtype:
    """Require a floating ``torch.dtype`` (``reason``: what needs it, e.g. ``"with normalized=True"``)."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be a floating dtype {reason} (float16/bfloat16/float32/float64), got {dtype!r}; "
            f"pass {name}=torch.float32 or torch.float64"
        )
    return dtype


def drop_channel_dim(labels: Tensor) -> Tensor:
    """``[B, 1, H, W]`` -> ``[B, H, W]`` (a view); any other shape is returned as is."""
    return labels[:, 0] if labels.dim() == 4 else labels


def check_label_map(labels: object, name: str = "superpixels", *, unbatched: bool = False) -> Tensor:
    """Require an integer label map ``[B, H, W]`` or ``[B, 1, H, W]`` (or ``[H, W]`` with ``unbatched``, for
    the maps from ids to ids); return it as ``[B, H, W]`` (``[1, H, W]`` for ``[H, W]``)."""
    shapes = "[B, H, W], [B, 1, H, W] or [H, W]" if unbatched else "[B, H, W] or [B, 1, H, W]"
    if not isinstance(labels, Tensor):
        raise TypeError(
            f"{name} must be an integer torch.Tensor of shape {shapes}, got {type(labels).__name__}"
            f"{_numpy_hint(labels, name)}"
        )
    check_dense(labels, name)
    if labels.is_floating_point() and labels.dim() == 4 and labels.shape[1] > 1:  # features, not labels
        raise TypeError(
            f"{name} must be an integer label map [B, H, W], got a floating tensor of shape "
            f"{tuple(labels.shape)} (features or logits [B, C, H, W]?): pass the label map here"
        )
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(
            f"{name} must have an integer dtype (e.g. torch.int64), got {labels.dtype}; ids are labels, not "
            f"values: convert with {name}.long() (after rounding if they were resized)"
        )
    if unbatched and labels.dim() == 2:
        return labels[None]
    if labels.dim() not in (3, 4) or (labels.dim() == 4 and labels.shape[1] != 1):
        # (one image's [H, W] map, as scikit-image's slic, relabel_contiguous and grid_cell_ids give it: the
        # error said only which shapes it takes)
        hint = f": one image's [H, W] map takes a batch dim, {name}[None]" if labels.dim() == 2 else ""
        raise ValueError(f"{name} must have shape {shapes}, got shape {tuple(labels.shape)}{hint}")
    return drop_channel_dim(labels)


def restore_id_layout(ids: Tensor, counts: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(ids, counts)`` of a map from ids to ids, computed as ``[B, H, W]`` and ``[B]``, in the layout of
    its input ``like``: ``[B, 1, H, W]`` keeps its channel dim; ``[H, W]`` gives ``[H, W]`` and a 0-dim
    count."""
    if like.dim() == 2:
        return ids[0], counts[0]
    if like.dim() == 4:
        return ids[:, None], counts
    return ids, counts


#: Why a label map or a mask cannot be mapped over by ``torch.func.vmap``.
VMAP_FEATURES_ONLY = "sparse_ops supports torch.func.vmap over the features only"


def savable(t: Tensor, *data: Tensor) -> Tensor:
    """``t`` (a mask or an index) as autograd can save it: a copy if it is an inference tensor (made under
    ``torch.inference_mode()``) and the op records a graph (outside inference mode, grad mode on, a tensor of
    ``data`` requiring grad), else ``t`` itself.

    Autograd refuses to save an inference tensor ("Inference tensors cannot be saved for backward"); the hard
    ops keep copies of their label map and mask anyway (:class:`~sparse_ops.SuperpixelAssignment`), so a mask
    from an evaluation pass serves a training step there, and with this in the ops that use theirs directly.
    Not while compiling or exporting (traced tensors are no inference tensors).
    """
    if (
        torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.is_inference_mode_enabled()
        or not torch.is_grad_enabled()
        or not any(d.requires_grad for d in data)
        or not t.is_inference()
    ):
        return t
    return t.clone()


def check_not_vmapped(t: Tensor | None, name: str, *, why: str | None = None, fix: str | None = None) -> None:
    """Refuse a label map or mask that ``torch.func.vmap`` maps over (raises :class:`NotImplementedError`).

    The accumulator layout is built from concrete ids; without this check such a call fails inside PyTorch
    (``.item()`` or ``scatter_add_`` under vmap). Not a value check: no synchronisation, and skipped while
    ``torch.compile`` traces (it never traces a vmapped label map into a layout either). ``why`` and ``fix``
    replace the message's reason and advice for a step that reads ``t`` on the host for another purpose.
    """
    if t is None or torch.compiler.is_compiling():
        return
    if _mapped_by_vmap(t):
        if why is None:
            why = f"{VMAP_FEATURES_ONLY}, not over {name}"
        if fix is None:
            fix = f"loop over the label maps, or map over features that share one {name}"
        raise NotImplementedError(f"{why}: {fix}")


def _mapped_by_vmap(t: Tensor) -> bool:
    """Whether ``t`` is, or wraps (inside ``torch.func.grad`` under ``vmap``), a tensor that
    ``torch.func.vmap`` maps over: such a tensor has no values to read on the host."""
    functorch = getattr(torch._C, "_functorch", None)  # a private API: read defensively
    is_batched = getattr(functorch, "is_batchedtensor", None)
    is_wrapped = getattr(functorch, "is_functorch_wrapped_tensor", None)
    unwrap = getattr(functorch, "get_unwrapped", None)
    if is_batched is None:
        return False
    for _ in range(64):  # (one level per nested transform)
        if is_batched(t):
            return True
        if is_wrapped is None or unwrap is None or not is_wrapped(t):
            return False
        t = unwrap(t)
    return False


def check_values_readable(t: Tensor, what: str, fix: str = "pass validate=False") -> None:
    """Refuse a step that reads ``t``'s values on the host (``what``: a value check, a size inferred from
    the labels) where ``torch.func.vmap`` maps over ``t``: PyTorch's error named nothing ("Cannot access data
    pointer of Tensor that doesn't have storage"). Raises :class:`NotImplementedError` naming ``what`` and
    ``fix``; skipped while ``torch.compile`` traces."""
    if not torch.compiler.is_compiling() and _mapped_by_vmap(t):
        raise NotImplementedError(
            f"{what}, which torch.func.vmap cannot do for a tensor it maps over (no values to read): {fix}"
        )


#: How a refused value check says why it reads values.
SYNCHRONISATION = " (a host-device synchronisation)"
#: The fix for a value check (``validate=True``) that ``torch.export`` meets.
EXPORT_VALIDATE_FIX = (
    "export with validate=False (build the module with validate=False, or set module.validate = False on "
    "every sparse_ops module of the model first) and check the inputs before calling the exported program"
)


#: The fix for a slot count ``N_s`` that ``torch.export`` would read from tensor values.
NUM_SUPERPIXELS_EXPORT_FIX = (
    "pass an int num_superpixels, an upper bound of the ids (for grid or hard_superpixels ids: "
    "sparse_ops.num_grid_cells(H, W, cell_size))"
)


def check_not_exporting(what: str, fix: str = EXPORT_VALIDATE_FIX) -> None:
    """Refuse, while ``torch.export`` traces, a step that reads tensor values on the host (``what``).

    Such a step (a value check, a size inferred from the ids, a numpy post-process) has no graph form: without
    this check ``torch.export`` fails deep inside PyTorch (a data-dependent guard). Raises
    :class:`ValueError` naming ``what`` and ``fix``; ``torch.compile`` (which breaks the graph there instead)
    is not affected.
    """
    if torch.compiler.is_exporting():
        raise ValueError(f"{what}, which torch.export cannot trace: {fix}")


def check_validate_reads(t: Tensor, what: str) -> None:
    """Before a ``validate=True`` check that reads ``t``'s values on the host (``what``: ``"validate=True
    checks ..."``): refused while ``torch.export`` traces (:func:`check_not_exporting`, a synchronisation) and
    under a ``torch.func.vmap`` over ``t`` (:func:`check_values_readable`)."""
    check_not_exporting(f"{what}{SYNCHRONISATION}")
    check_values_readable(t, f"{what} on the host")


def check_same_device(reference: Tensor, ref_name: str, other: Tensor, name: str) -> None:
    """Require ``other`` on the device of ``reference``."""
    if other.device != reference.device:
        raise ValueError(
            f"{name} must be on the same device as {ref_name} ({reference.device}), got {other.device}; "
            f"move it with {name}.to({ref_name}.device)"
        )


def check_batch_match(x: Tensor, x_name: str, other: Tensor, name: str, given: Tensor | None = None) -> None:
    """Require the same batch size (dimension 0); ``given``: the argument ``other`` was made from (a label
    map ``[B, 1, H, W]`` before its channel dim was dropped), whose shape the message shows."""
    if other.shape[0] != x.shape[0]:
        shape = tuple((other if given is None else given).shape)
        raise ValueError(f"{name} must have the batch size of {x_name} ({x.shape[0]}), got shape {shape}")


def dimension_order_hint(name: str) -> str:
    """The fix for a feature map ``name`` whose shape fits ``[B, H, W, C]`` (which it may not be)."""
    return (
        f"if {name} is [B, H, W, C] (channels last in dimension order), pass {name}.permute(0, 3, 1, 2) (a "
        "torch.channels_last tensor keeps the [B, C, H, W] order)"
    )


def check_spatial_match(
    x: Tensor, x_name: str, labels: Tensor, name: str = "superpixels", given: Tensor | None = None
) -> None:
    """Require ``x[B, C, H, W]`` and ``labels[B, H, W]`` to agree on ``B``, ``H``, ``W`` and the device.

    ``given``: the argument ``labels`` was made from (``[B, 1, H, W]`` before its channel dim was dropped):
    the message shows its shape, and a fix that works on it.
    """
    expected = (x.shape[0], x.shape[2], x.shape[3])
    actual = tuple(labels.shape)
    if actual != expected:
        channel = given is not None and given.dim() == 4
        hint = ""
        if actual[0] == expected[0]:
            # in float64, exact for every id below 2**53 (float32 rounds ids above 2**24: merged superpixels)
            resized = (
                f"F.interpolate({name}.double(), size={tuple(expected[1:])}, mode='nearest').long()"
                if channel
                else f"F.interpolate({name}[:, None].double(), size={tuple(expected[1:])}, mode='nearest')"
                "[:, 0].long()"
            )
            hint = f"; resize the label map with nearest interpolation, e.g. {resized}"
        if actual == (x.shape[0], x.shape[1], x.shape[2]):  # x may be [B, H, W, C]
            hint = f"; {dimension_order_hint(x_name)}{hint.replace('; ', '; otherwise ', 1)}"
        shape = list((labels if given is None else given).shape)
        wanted = "[B, H, W]" if not channel else "[B, 1, H, W]"
        expected_shape = list(expected) if not channel else [expected[0], 1, *expected[1:]]
        raise ValueError(
            f"{name} must have shape {wanted} = {expected_shape} to match {x_name} of shape "
            f"{tuple(x.shape)}, got {shape}{hint}"
        )
    check_same_device(x, x_name, labels, name)


def check_mask(mask: object, labels: Tensor, labels_name: str = "superpixels") -> Tensor:
    """Require a bool ``mask[B, H, W]`` (or ``[B, 1, H, W]``) shaped like ``labels``; return ``[B, H, W]``."""
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"mask must be a bool torch.Tensor of shape [B, H, W] or None, got {type(mask).__name__}"
            f"{_numpy_hint(mask, 'mask')}"
        )
    check_dense(mask, "mask")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must have dtype torch.bool (True = the pixel counts), got {mask.dtype}")
    given = list(mask.shape)
    if mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if tuple(mask.shape) != tuple(labels.shape):
        raise ValueError(
            f"mask must have shape [B, H, W] = {list(labels.shape)} like {labels_name}, got {given}"
        )
    check_same_device(labels, labels_name, mask, "mask")
    return mask


def check_num_superpixels(num_superpixels: object, batch_size: int) -> int | Tensor | None:
    """Require ``None``, a non-negative int or an integer ``Tensor[B]``; return it.

    A tensor is checked for shape and dtype only: its values are read by :func:`check_id_range` (validated
    calls) and by building the assignment, which refuses a negative count either way. A uint16/uint32/uint64
    tensor (PyTorch has few kernels for them) is returned as int64; for uint64 this reads the values (one
    host-device synchronisation) to refuse counts above ``2**63 - 1``, which int64 cannot hold.
    """
    if num_superpixels is None:
        return None
    if isinstance(num_superpixels, Tensor):
        check_dense(num_superpixels, "num_superpixels")
    if isinstance(num_superpixels, Tensor) and num_superpixels.dim() == 1:
        if (
            num_superpixels.is_floating_point()
            or num_superpixels.is_complex()
            or num_superpixels.dtype == torch.bool
        ):
            raise TypeError(f"num_superpixels must have an integer dtype, got {num_superpixels.dtype}")
        if tuple(num_superpixels.shape) != (batch_size,):
            raise ValueError(
                f"num_superpixels must be an int or a Tensor of shape [B] = [{batch_size}], "
                f"got shape {tuple(num_superpixels.shape)}"
            )
        if num_superpixels.dtype == torch.uint64:  # the read below: refused first while exporting
            check_not_exporting(
                "num_superpixels=a Tensor (N_s = its maximum) reads a size from tensor values",
                NUM_SUPERPIXELS_EXPORT_FIX,
            )
        if num_superpixels.dtype == torch.uint64 and bool((num_superpixels.view(torch.int64) < 0).any()):
            raise ValueError(
                f"num_superpixels holds uint64 counts above 2**63 - 1, which do not fit int64, got "
                f"{num_superpixels.tolist()}; pass the number of superpixel slots of each image (at most its "
                "largest id + 1)"
            )
        if num_superpixels.dtype in _WIDE_UNSIGNED:  # no comparison / min / max kernels for these
            return num_superpixels.long()
        return num_superpixels
    if isinstance(num_superpixels, Tensor) and num_superpixels.dim() > 1:  # a shape error, as for [B + 1]
        raise ValueError(
            f"num_superpixels must be an int or a Tensor of shape [B] = [{batch_size}], "
            f"got shape {tuple(num_superpixels.shape)}"
        )
    if isinstance(num_superpixels, Tensor):  # a 0-dim tensor: its value is read by operator.index
        check_not_exporting(
            "num_superpixels=a 0-dim Tensor reads a size from its value", NUM_SUPERPIXELS_EXPORT_FIX
        )
    try:
        return check_int(num_superpixels, "num_superpixels", 0)
    except TypeError:
        raise TypeError(
            f"num_superpixels must be an int, a Tensor[B] or None, got {_describe(num_superpixels)}"
        ) from None


def slot_limit(num_pixels: int) -> int:
    """Most superpixel slots allowed for images of ``num_pixels`` pixels: ``max(2**16, 16 * num_pixels)``."""
    return max(MIN_SLOT_LIMIT, MAX_SLOTS_PER_PIXEL * num_pixels)


def check_slot_count(
    num_superpixels: int, num_pixels: int, inferred: bool, name: str = "superpixels"
) -> None:
    """Refuse ``N_s`` slots (outputs ``N_s`` wide) that are absurd for images of ``num_pixels`` pixels.

    Runs before anything of size ``N_s`` is allocated, so a stray id cannot allocate memory by its value.
    """
    limit = slot_limit(num_pixels)
    if num_superpixels > limit:
        source = (
            f"the largest id of {name} is {num_superpixels - 1}"
            if inferred
            else f"num_superpixels = {num_superpixels}"
        )
        raise ValueError(
            f"{source}, so the output would have {num_superpixels} superpixel slots for images of "
            f"{num_pixels} pixels (at most max(2**16, 16 * pixels) = {limit} are allowed); relabel the ids "
            "to 0..K-1 with "
            f"sparse_ops.relabel_contiguous({name}) and pass its counts as num_superpixels"
        )


#: unsigned integer dtypes wider than uint8 (PyTorch has few kernels for them; ids are compared as int64)
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def check_id_range(
    index: Tensor,
    num_superpixels: int | None,
    per_image: Tensor | None,
    name: str,
    *,
    bound_name: str = "num_superpixels",
    advice: str | None = None,
) -> None:
    """Require every id of ``index[B, N]`` in ``[0, num_superpixels)`` (per image with ``per_image``).

    ``num_superpixels=None`` checks the lower bound only. Synchronises with the device. An id above an int
    bound is reported against ``bound_name``, followed by ``advice`` (default: pass a larger bound, or
    relabel).
    """
    if index.is_meta or (per_image is not None and per_image.is_meta):  # shapes only: no values to check
        return
    check_not_exporting(f"validate=True checks the ids of {name} by reading them{SYNCHRONISATION}")
    negative_counts = "num_superpixels must be >= 0, got {}"
    if index.numel() == 0 or index.dtype in _WIDE_UNSIGNED:  # the counts first: no ids, or ids checked below
        if per_image is not None and per_image.numel() and bool((per_image < 0).any()):
            raise ValueError(negative_counts.format(per_image.tolist()))
        if index.numel() == 0:
            return
    if index.dtype in _WIDE_UNSIGNED:  # no min / max kernels for these: compare as int64
        if index.dtype == torch.uint64 and bool((index.view(torch.int64) < 0).any()):
            signed = index.view(torch.int64)
            largest = int(signed[signed < 0].max()) + 2**64  # the largest as int64 is the largest as uint64
            raise ValueError(
                f"{name} holds uint64 ids above 2**63 - 1, which do not fit int64 (the largest: {largest}); "
                f"relabel them to 0..K-1 with relabel_contiguous({name}) first"
            )
        index = index.long()
    if per_image is not None:
        # one pass over the ids, and one read for the three answers (three reads were three synchronisations)
        lows, highs = torch.aminmax(index, dim=1)
        counts = per_image.to(highs.device)
        over = highs >= counts
        answers = [(counts < 0).any().long(), lows.min().long(), over.any().long()]
        negative, low, any_over = torch.stack(answers).tolist()
        if negative:
            raise ValueError(negative_counts.format(per_image.tolist()))
    else:  # one pass over the ids and one read for both bounds (two reads were two synchronisations)
        low, high = torch.stack(torch.aminmax(index)).tolist()
    if low < 0:
        raise ValueError(
            f"{name} ids must be >= 0, got the id {low}; shift or relabel them (relabel_contiguous)"
        )
    if per_image is not None:
        if any_over:
            b = int(over.nonzero()[0, 0])
            raise ValueError(
                f"{name} ids of image {b} must be < num_superpixels[{b}] = {int(per_image[b])}, "
                f"got the id {int(highs[b])}"
            )
    elif num_superpixels is not None and high >= num_superpixels:
        if advice is None:
            advice = (
                f"; pass a larger num_superpixels (max id + 1 = {high + 1}) or relabel with "
                "relabel_contiguous"
            )
        raise ValueError(f"{name} ids must be < {bound_name} = {num_superpixels}, got the id {high}{advice}")


def check_assoc(assoc: object, name: str = "assoc") -> Tensor:
    """Require a floating association ``Tensor[B, 9, H, W]``, ``H, W >= 1`` (type and shape only)."""
    assoc = check_floating(assoc, name, "[B, 9, H, W]")
    if assoc.shape[1] != 9:
        hint = ""
        if assoc.shape[-1] == 9:  # as for features: say how to pass a channels-last (dimension order) tensor
            hint = (
                f"; if {name} is [B, H, W, 9] (channels last in dimension order), pass "
                f"{name}.permute(0, 3, 1, 2) (a torch.channels_last tensor keeps the [B, 9, H, W] order)"
            )
        raise ValueError(
            f"{name} must have 9 channels (dim 1), one per candidate cell, got shape {tuple(assoc.shape)}"
            + hint
        )
    if assoc.shape[2] == 0 or assoc.shape[3] == 0:
        raise ValueError(
            f"{name} must have H, W >= 1 (an image without pixels has no grid of cells), got shape "
            f"{tuple(assoc.shape)}; leave empty images out of the batch"
        )
    return assoc


def check_assoc_values(assoc: Tensor, name: str = "assoc") -> None:
    """Require a non-negative, finite association (one synchronisation; nothing to check on meta).

    One reduction (``aminmax``, which propagates NaN) decides; only a refused association is scanned again
    for the index of its first bad entry (the mask of bad entries took seven temporaries of the
    association's size on every call). On the detached values: for an ``assoc`` that requires grad, autograd
    recorded the reduction and saved the association for a backward that never runs (under
    ``save_on_cpu``, a copy of it to the host).
    """
    if assoc.numel() == 0 or assoc.is_meta:
        return
    check_validate_reads(assoc, f"validate=True checks the values of {name}")
    assoc = assoc.detach()
    # the two scalars in float32 (or float64) before the stack: autocast promotes the inputs of torch.stack,
    # and refuses a half type other than its own (float16 scalars under a bfloat16 autocast raised "Unexpected
    # floating ScalarType in at::autocast::prioritize"); widening is exact, so the test below is unchanged
    wide = torch.promote_types(assoc.dtype, torch.float32)
    low, high = torch.stack([bound.to(wide) for bound in torch.aminmax(assoc)]).tolist()
    if low >= 0 and high < float("inf"):  # False for NaN
        return
    bad = ~torch.isfinite(assoc) | (assoc < 0)
    if bool(bad.any()):
        where = [int(i) for i in bad.nonzero()[0]]
        raise ValueError(
            f"{name} must be non-negative and finite (e.g. a softmax over dim 1), "
            f"got {assoc[tuple(where)].item()} at index {where}"
        )


#: The largest size in bytes, and the largest stride in elements, of a PyTorch tensor (both are int64).
MAX_TENSOR_SPAN = 2**63 - 1


def check_tensor_size(what: str, shape: Sequence[int], dtype: torch.dtype) -> None:
    """Refuse, before anything is allocated, an output of ``shape`` and ``dtype`` that no tensor can hold.

    PyTorch's limits: the size in bytes and every stride of a contiguous tensor fit int64 (the largest stride
    is the product of the sizes after the first, an empty one counted as 1). Beyond them ``torch.empty``
    raised "Storage size calculation overflowed" or "Stride calculation overflowed", and a size from 2**63
    on an ``OverflowError`` or a ``TypeError``, none naming an argument. Sizes that are not Python ints (a
    traced size under ``torch.compile``, from a tensor that exists) are not checked. ``what`` names the
    arguments that give the shape and their values, e.g. ``"height x width = 4 x 5 is too large"``; raises
    :class:`ValueError`.
    """
    if not all(type(n) is int for n in shape):
        return
    numel, stride = 1, 1
    for i, n in enumerate(shape):
        numel *= n
        if i:
            stride *= max(n, 1)
    if numel * dtype.itemsize > MAX_TENSOR_SPAN:
        span = f"{numel * dtype.itemsize} bytes"
    elif stride > MAX_TENSOR_SPAN:
        span = f"a stride of {stride} elements along dimension 0"
    else:
        return
    raise ValueError(
        f"{what}: it gives a tensor of shape {list(shape)} and dtype {dtype}, {span}, more than a tensor can "
        "hold (its size in bytes and its strides are int64: at most 2**63 - 1)"
    )


def check_device(device: object, name: str = "device") -> torch.device | None:
    """``device`` as a :class:`torch.device`, or ``None`` (the default device); a device string (``"cpu"``,
    ``"cuda:0"``) or an int index is converted with :class:`torch.device`.

    Raises :class:`TypeError` for another kind of object (a float, a bool, a tensor) and :class:`ValueError`
    for a string or an index that names no device (``"foo"``, ``"cuda:-1"``, ``-1``), both naming ``name`` and
    the value: PyTorch's own errors (from the first tensor made there) named neither. Whether the device
    exists on this machine is not checked (PyTorch says so when a tensor is made there).
    """
    if device is None or isinstance(device, torch.device):
        return device
    kinds = "a torch.device, a device string such as 'cpu' or 'cuda:0', an int device index or None"
    if _is_bool(device):  # no device index: a flag passed to the wrong argument
        raise TypeError(f"{name} must be {kinds}, got {_describe(device)}")
    try:
        converted: torch.device = torch.device(device)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} must be {kinds}, got {_describe(device)}") from None
    except (RuntimeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"{name} must name a device, such as 'cpu' or 'cuda:0', got {device!r} ({reason})"
        ) from None
    return converted
