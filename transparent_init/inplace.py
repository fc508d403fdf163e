"""Transparent initialization of a user's own ``nn.Sequential`` of Linear / pointwise conv layers in place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import SupportsIndex

import torch
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin

from ._affine import restored_on_error, transparent_parameters
from ._checks import (
    as_generator,
    check_layer_dtype,
    check_own_parameters,
    check_slope,
    check_writable,
    resolve_target,
    zero_width,
)

__all__ = ["StackLayout", "parse_stack", "transparent_init_"]


@dataclass(frozen=True)
class StackLayout:
    """What :func:`parse_stack` reads off a stack.

    Attributes:
        linear_indices: index in the ``nn.Sequential`` of each affine layer (``k`` of them).
        in_features: input width of the first layer.
        hidden: logical hidden widths (real widths halved after an activation), length ``k - 1``.
        out_features: output width of the last layer.
        activations: activation after each hidden layer (``None``, ``"relu"``, ``"leaky_relu"``).
        negative_slopes: LeakyReLU slope after each hidden layer (0.0 where unused).
        biases: whether each affine layer has a bias.
        conv: whether the affine layers are pointwise convolutions (``nn.Conv1d`` / ``2d`` / ``3d``).
    """

    linear_indices: tuple[int, ...]
    in_features: int
    hidden: tuple[int, ...]
    out_features: int
    activations: tuple[str | None, ...]
    negative_slopes: tuple[float, ...]
    biases: tuple[bool, ...]
    conv: bool


#: The pointwise convolutions (kernel 1 in every dimension) a stack may be made of, besides ``nn.Linear``.
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Modules that are the identity in eval mode and hold no parameters: skipped like ``nn.Identity``.
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)

#: The module classes a stack is read from (``nn.Identity`` aside: only the class itself is skipped).
_SUPPORTED = (nn.Linear, *_CONVS, nn.ReLU, nn.LeakyReLU, *_DROPOUTS)


def _overridden(m: nn.Module) -> tuple[type[nn.Module], str] | None:
    """For an instance of a subclass of a :data:`_SUPPORTED` class, that class and the first of its methods
    ``forward`` / ``_conv_forward`` (convs) that the subclass or the instance replaces, else ``None``: such a
    module may compute something else (a clamp, fake quantization, a fused ReLU or batch norm)."""
    base = next((c for c in type(m).__mro__ if c in _SUPPORTED), None)
    if base is None:
        return None
    for attr in ("forward", "_conv_forward"):
        expected = getattr(base, attr, None)
        if expected is not None and getattr(getattr(m, attr), "__func__", None) is not expected:
            return base, attr
    return None


def _conv_problem(m: nn.Conv1d | nn.Conv2d | nn.Conv3d) -> str | None:
    ones = (1,) * len(m.kernel_size)
    if tuple(m.kernel_size) != ones:
        return f"kernel_size {tuple(m.kernel_size)} (only kernel size 1, a pointwise map, is supported)"
    if m.groups != 1:
        return f"groups={m.groups} (only groups=1 is supported)"
    # dilation spaces out the taps of a kernel: with kernel size 1 (checked above) it has no effect
    if tuple(m.stride) != ones:
        return f"stride {tuple(m.stride)} (only stride 1 is supported)"
    pad = m.padding if isinstance(m.padding, str) else tuple(m.padding)
    if pad not in ((0,) * len(ones), "valid", "same"):
        return f"padding {pad} (padding would add non-input border pixels)"
    return None


def _shape_problem(m: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d) -> str | None:
    """Which of ``weight`` / ``bias`` has another shape than the layer's width attributes give (a parameter
    replaced by one of another shape: the widths the stack is read from would be stale), else ``None``."""
    if isinstance(m, nn.Linear):
        n_in, n_out, names = m.in_features, m.out_features, ("in_features", "out_features")
        kernel: tuple[int, ...] = ()
    else:
        n_in, n_out, names = m.in_channels // m.groups, m.out_channels, ("in_channels", "out_channels")
        kernel = tuple(m.kernel_size)
    widths = f"{names[1]} = {n_out}, {names[0]} = {n_in}"
    for attr, expected in (("weight", (n_out, n_in, *kernel)), ("bias", (n_out,))):
        p = getattr(m, attr)
        if p is not None and tuple(p.shape) != expected:
            return f"a {attr} of shape {list(p.shape)}, expected {list(expected)} ({widths})"
    return None


def _affine_module(sequential: nn.Sequential, index: int) -> nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d:
    m = sequential[index]
    # parse_stack checked the types: this narrows them for the type checker
    if not isinstance(m, (nn.Linear, *_CONVS)):
        raise TypeError(f"layer {index} is {type(m).__name__}, expected nn.Linear or a pointwise nn.ConvNd")
    return m


def _memory_span(p: Tensor) -> tuple[torch.device, int, int] | None:
    """The bytes ``p`` can touch, ``(device, first, end)``; ``None`` on meta or when empty (no memory)."""
    if p.is_meta or p.numel() == 0:
        return None
    first = p.untyped_storage().data_ptr() + int(p.storage_offset()) * p.element_size()
    reach = sum((int(size) - 1) * int(stride) for size, stride in zip(p.shape, p.stride(), strict=True))
    return p.device, first, first + (reach + 1) * p.element_size()


#: The largest span, in elements, over which :func:`_shares_elements` marks the elements two tensors touch
#: (a bool each); wider overlapping spans count as shared.
_MARK_MAX = 2**26


def _shares_elements(a: Tensor, b: Tensor) -> bool:
    """Whether two tensors whose byte spans overlap (:func:`_memory_span`) touch a common element: strided
    views of one storage may interleave without sharing one (disjoint column blocks of a buffer). Marked
    element by element where both are views of one storage with one element size and the span is at most
    :data:`_MARK_MAX` elements; anything else counts as shared."""
    same_storage = a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    if not same_storage or a.element_size() != b.element_size():
        return True
    reach = [sum((int(n) - 1) * int(s) for n, s in zip(t.shape, t.stride(), strict=True)) for t in (a, b)]
    spans = [(int(t.storage_offset()), r) for t, r in zip((a, b), reach, strict=True)]
    lo = min(start for start, _ in spans)
    end = max(start + reach + 1 for start, reach in spans)
    if end - lo > _MARK_MAX or any(int(s) < 0 for t in (a, b) for s in t.stride()):
        return True
    mark = torch.zeros(end - lo, dtype=torch.bool)
    mark.as_strided(tuple(a.shape), tuple(a.stride()), spans[0][0] - lo).fill_(True)
    return bool(mark.as_strided(tuple(b.shape), tuple(b.stride()), spans[1][0] - lo).any())


def _record_unshared(
    m: nn.Module,
    index: int,
    seen: dict[int, tuple[int, str]],
    spans: list[tuple[torch.device, int, int, int, str, Tensor]],
) -> None:
    """Refuse a module, or a ``weight`` / ``bias`` Parameter, met at an earlier affine position (``seen``:
    ``id`` -> (layer index, what it was there)), or a ``weight`` / ``bias`` whose memory overlaps one recorded
    before (``spans``: (device, first byte, end, layer index, what, tensor); tied weights that are separate
    Parameter objects over one storage, such as ``nn.Parameter(other.weight)`` or a transposed view: a common
    element, :func:`_shares_elements`); then record this layer's."""
    kind = type(m).__name__
    first = seen.get(id(m))
    if first is not None:
        raise ValueError(
            f"layers {first[0]} and {index} are the same module ({kind}): its parameters would be written "
            "once per position and the last write would win, so the stack would not compute the target map; "
            "a transparent init needs independent layers (use a separate module at each position)"
        )
    seen[id(m)] = (index, "module")
    for attr in ("weight", "bias"):
        p = getattr(m, attr)
        if p is None:
            continue
        first = seen.get(id(p))
        if first is not None:
            raise ValueError(
                f"layer {index} ({kind}) shares its {attr} with layer {first[0]} (its {first[1]}): the same "
                "Parameter would be written once per layer and the last write would win, so the stack would "
                "not compute the target map; a transparent init needs independent layers (untie them, e.g. "
                f"layer.{attr} = nn.Parameter(layer.{attr}.detach().clone()))"
            )
        seen[id(p)] = (index, attr)
        span = _memory_span(p)
        if span is None:
            continue
        device, lo, hi = span
        for other_device, other_lo, other_hi, other_index, other_attr, other in spans:
            if other_device == device and lo < other_hi and other_lo < hi and _shares_elements(p, other):
                raise ValueError(
                    f"layer {index} ({kind}) shares the memory of its {attr} with layer {other_index} (its "
                    f"{other_attr}): separate Parameters over one storage (tied weights, e.g. "
                    "nn.Parameter(other.weight) or a transposed view) would be written once per layer and "
                    "the last write would win, so the stack would not compute the target map; a transparent "
                    f"init needs independent layers (untie them, e.g. layer.{attr} = "
                    f"nn.Parameter(layer.{attr}.detach().clone()))"
                )
        spans.append((device, lo, hi, index, attr, p))


def parse_stack(sequential: nn.Sequential) -> StackLayout:
    """Read the layout of ``Linear|Conv1x1 (act Linear|Conv1x1)*`` stacks; raise a teaching error otherwise.

    Raises:
        TypeError: if ``sequential`` is not an ``nn.Sequential`` or holds an unsupported module (a
            subclass of a supported one that overrides ``forward``, or ``_conv_forward`` for a conv, in its
            class or on the instance, included: it may compute something else).
        ValueError: for kxk / grouped / strided / padded convs, mixed kinds of layers, mismatched or odd
            widths, negative or non-finite slopes, an activation before the first or after the last affine
            layer or two in a row, a lazy layer without weights yet, a stack without a hidden layer (fewer
            than 2 affine layers), a hidden layer narrower than the input, a layer whose weight or bias has
            another shape than its width attributes give, or is computed at each forward (parametrized,
            weight-normed, pruned) or cannot be written in place (an inference tensor outside inference
            mode, an expanded tensor), the same module or Parameter at two affine positions (shared layers,
            tied weights), weights or biases that share an element (separate Parameters over one storage), a
            layer whose dtype is not float16, bfloat16, float32 or float64 (float8, complex), some layers on
            the meta device and others not, or a zero-width layer (``nn.Linear(0, n)``,
            ``nn.Linear(n, 0)``).
    """
    if not isinstance(sequential, nn.Sequential):
        raise TypeError(f"sequential must be an nn.Sequential, got {type(sequential).__name__}")
    mods = list(sequential)
    lin_idx: list[int] = []
    acts: list[str | None] = []
    slopes: list[float] = []
    pending: tuple[str, float, int] | None = None
    kind: type | None = None
    seen: dict[int, tuple[int, str]] = {}  # id of each affine module / parameter -> (layer, what)
    spans: list[tuple[torch.device, int, int, int, str, Tensor]] = []  # each weight / bias (_memory_span)
    placed: tuple[int, str, torch.device] | None = None  # the first weight / bias: (layer, what, device)
    for i, m in enumerate(mods):
        if isinstance(m, LazyModuleMixin) and m.has_uninitialized_params():
            raise ValueError(
                f"layer {i} ({type(m).__name__}) has no weights yet: run one forward pass through the stack "
                f"(or give the layer its {'in_features' if isinstance(m, nn.Linear) else 'in_channels'}) "
                "before initializing it"
            )
        replaced = _overridden(m)
        if replaced is not None:
            owner, attr = replaced
            cls = type(m).__name__
            if cls == owner.__name__ and type(m) is not owner:  # torch.ao.nn.qat.Linear: say which Linear
                cls = f"{type(m).__module__}.{type(m).__qualname__}"
            raise TypeError(
                f"layer {i} is {cls}, "
                + (
                    f"a subclass of nn.{owner.__name__} that overrides {attr}"
                    if type(m) is not owner
                    else f"an nn.{owner.__name__} whose {attr} is replaced on the instance"
                )
                + f": a module that overrides {attr} may compute something else, so the stack would not be "
                f"the target map; use nn.{owner.__name__} itself (a subclass that keeps its forward is "
                "accepted)"
            )
        if isinstance(m, (nn.Linear, *_CONVS)):  # subclasses included: only the base kind counts
            check_own_parameters(m, f"layer {i} ({type(m).__name__})")
            check_writable(m, f"layer {i} ({type(m).__name__})")
            _record_unshared(m, i, seen, spans)
            empty = zero_width(m)
            if empty is not None:
                raise ValueError(
                    f"layer {i} ({type(m).__name__}) has {empty}: every affine layer needs a width >= 1 "
                    "(a layer without inputs or outputs passes nothing on)"
                )
            check_layer_dtype(m, f"layer {i} ({type(m).__name__})")
            base: type[nn.Module] = next((c for c in _CONVS if isinstance(m, c)), nn.Linear)
            if isinstance(m, _CONVS):
                problem = _conv_problem(m)
                if problem is not None:
                    raise ValueError(f"layer {i} ({base.__name__}) is not supported: {problem}")
            for attr in ("weight", "bias"):
                p = getattr(m, attr)
                if p is None:
                    continue
                if placed is None:
                    placed = (i, attr, p.device)
                elif p.is_meta != (placed[2].type == "meta"):
                    raise ValueError(
                        f"layer {i} ({type(m).__name__}) has its {attr} on device {p.device} but layer "
                        f"{placed[0]} has its {placed[1]} on {placed[2]}: the affine layers must be all on "
                        "the meta device (initialized by shape) or all hold values; materialize the meta "
                        "ones first (e.g. stack.to_empty(device=...))"
                    )
            mismatch = _shape_problem(m)
            if mismatch is not None:
                raise ValueError(
                    f"layer {i} ({type(m).__name__}) has {mismatch}: its parameter no longer matches its "
                    "width attributes (replaced by one of another shape?); give it a parameter of the "
                    "expected shape, or a new layer of the widths it should have"
                )
            if kind is not None and base is not kind:
                raise ValueError(
                    f"layer {i} is {type(m).__name__} (an nn.{base.__name__}) but earlier layers are "
                    f"nn.{kind.__name__}: do not mix"
                )
            kind = base
            if lin_idx:
                acts.append(pending[0] if pending else None)
                slopes.append(pending[1] if pending else 0.0)
            elif pending is not None:
                raise ValueError(f"layer {pending[2]} is an activation before the first affine layer")
            pending = None
            lin_idx.append(i)
        elif type(m) is nn.Identity or isinstance(m, _DROPOUTS):  # no map (dropout: none in eval mode)
            continue
        elif isinstance(m, (nn.ReLU, nn.LeakyReLU)):
            if pending is not None:
                raise ValueError(f"layer {i}: two activations in a row (layers {pending[2]} and {i})")
            if isinstance(m, nn.LeakyReLU):
                # the constructors' check: a finite real >= 0 (inf / nan made the solve fail with NaNs)
                slope = check_slope(m.negative_slope, f"layer {i} (LeakyReLU) negative_slope")
                pending = ("leaky_relu", slope, i)
            else:
                pending = ("relu", 0.0, i)
        else:
            raise TypeError(
                f"layer {i} is {type(m).__name__}: "
                "only nn.Linear, pointwise 1x1 nn.Conv1d / nn.Conv2d / nn.Conv3d, nn.ReLU, nn.LeakyReLU, "
                "the dropout modules and nn.Identity itself (not a subclass) are supported"
            )
    if pending is not None:
        raise ValueError(
            f"layer {pending[2]} is an activation after the last affine layer (nothing reads it back)"
        )
    if len(lin_idx) < 2:
        raise ValueError(f"the stack needs at least 2 affine layers (one hidden), got {len(lin_idx)}")

    def width(m: nn.Module, attr: str) -> int:
        return int(getattr(m, attr + ("_features" if isinstance(m, nn.Linear) else "_channels")))

    first = mods[lin_idx[0]]
    in_features = width(first, "in")
    in_name = "in_features" if kind is nn.Linear else "in_channels"
    hidden: list[int] = []
    for j, idx in enumerate(lin_idx[:-1]):
        real = width(mods[idx], "out")
        nxt = width(mods[lin_idx[j + 1]], "in")
        if nxt != real:
            raise ValueError(f"layer {lin_idx[j + 1]} takes {nxt} inputs but layer {idx} gives {real}")
        if acts[j] is not None:
            if real % 2:
                raise ValueError(
                    f"layer {idx} has odd width {real}: a layer followed by {acts[j]} "
                    "must hold an even number of "
                    f"units ([z, -z] doubling)"
                )
            real //= 2
        if real < in_features:
            raise ValueError(
                f"layer {idx} has logical width {real} < {in_name} = {in_features}: "
                f"every hidden width must be >= {in_name} for an exact right inverse"
                + (" (real width halved by the doubling)" if acts[j] else "")
            )
        hidden.append(real)
    return StackLayout(
        linear_indices=tuple(lin_idx),
        in_features=in_features,
        hidden=tuple(hidden),
        out_features=width(mods[lin_idx[-1]], "out"),
        activations=tuple(acts),
        negative_slopes=tuple(slopes),
        biases=tuple(mods[i].bias is not None for i in lin_idx),
        conv=kind is not nn.Linear,
    )


def transparent_init_(
    sequential: nn.Sequential,
    *,
    target_weight: Tensor | None = None,
    target_bias: Tensor | None = None,
    generator: torch.Generator | SupportsIndex | None = None,
) -> nn.Sequential:
    """Initialize a user's stack so that it computes ``x W^T + b`` (identity by default) exactly, in place.

    The stack is ``L_1, act, L_2, act, ..., L_k`` with every ``L`` an ``nn.Linear`` or a pointwise (1x1)
    ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` (all the same kind) and each ``act`` an ``nn.ReLU``, an
    ``nn.LeakyReLU`` (slope >= 0) or absent. ``nn.Identity`` placeholders and dropout modules (``nn.Dropout``,
    ``nn.Dropout1d/2d/3d``, ``nn.AlphaDropout``, ``nn.FeatureAlphaDropout``) anywhere are skipped: the stack
    is exact in eval mode (``stack.eval()``); in training mode dropout drops units as usual. A layer followed
    by an activation holds ``2 h`` real units for a logical width ``h`` (``[z, -z]`` doubling), so its width
    must be even, and every logical hidden width must be ``>= in_features``. Every weight and bias is redrawn
    (hidden layers: dense random semi-orthogonal draws; last layer: float64 least-squares solve, then cast to
    the layer's dtype).

    Every parameter is computed and checked before the first one is written, so on any error the stack is
    left unchanged. In a low-precision dtype (float16, bfloat16) the target must be representable: a last
    layer whose exact solution overflows the dtype, or underflows so far that the stored stack would miss the
    target by more than rounding allows, raises ``ValueError`` naming the layer, the parameter, the dtype and
    the magnitude, instead of leaving ``inf`` / ``NaN`` (or silently zero) weights; so does a stack whose
    finite weights would still overflow in a layer's sums (or a LeakyReLU's outputs, for a slope above 1) for
    some input with ``max |x| <= 1`` where the target map's outputs are finite.

    Args:
        sequential: the stack to initialize (modified in place, also returned).
        target_weight (Tensor[out, in] | None): the map's weight; ``None`` is the identity
            (needs ``out == in``).
        target_bias (Tensor[out] | None): the map's bias; ``None`` is zero.
        generator: ``torch.Generator`` or int seed for reproducible draws; ``None`` uses the global RNG.

    A target on the ``meta`` device (one made under ``with torch.device("meta")``) holds no values: it is
    accepted only when every layer is on meta too, and then checked by shape only. Layers all on meta are
    initialized by shape whatever the target: nothing is computed (no draw, no solve).

    Returns:
        nn.Sequential: ``sequential`` itself.

    Raises:
        TypeError: wrong argument types or unsupported modules (a subclass of a supported module that
            overrides ``forward``, or ``_conv_forward`` for a conv, included: it may compute something else,
            e.g. a clamped ReLU or a fake-quantized ``torch.ao`` QAT layer).
        ValueError: every stack :func:`~transparent_init.inplace.parse_stack` refuses: kxk / grouped /
            strided / padded convs, odd or too narrow hidden widths (naming the layer index), mismatched
            widths, mixed kinds of layers, misplaced activations, a LeakyReLU slope that is negative or not
            finite, a lazy layer without weights, fewer than 2 affine layers, a zero-width layer, a layer
            whose weight or bias has another shape than its widths give, or is computed at each forward (a
            parametrization, weight_norm, spectral_norm, pruning: the values written would be lost) or
            cannot be written in place (an inference tensor outside inference mode, an expanded tensor), the
            same module or Parameter at two positions (shared layers, tied weights: naming both layers) or
            weights / biases that share an element (separate Parameters over one storage), layers of another
            dtype than float16, bfloat16, float32 or float64 (float8, complex), some layers on the meta
            device and others not (naming both); and wrong target shapes, non-finite targets, no
            ``target_weight`` when ``out != in``, a non-zero ``target_bias`` for a last layer without bias, a
            last layer without bias when some hidden layer has a bias but none with a bias is wider than the
            input with every hidden layer after it wider too (no exact solution: the message names the rule),
            a target not representable in the layers' dtype (or so close to the float64 maximum that the
            solve overflows, or whose stack would overflow the dtype in its sums or LeakyReLU outputs for
            inputs with ``max |x| <= 1``), a target on the meta device for layers that are not, a seed
            outside the int64 / uint64 range. A call that raises writes nothing and leaves the generator (or
            the global RNG) as it was.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> _ = transparent_init_(net, generator=0)
        >>> x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(net(x), x, atol=1e-5))
        True
    """
    layout = parse_stack(sequential)
    gen = as_generator(generator)
    on_meta = all(
        p.is_meta for i in layout.linear_indices for p in _affine_module(sequential, i).parameters()
    )
    t_w, t_b = resolve_target(
        layout.in_features,
        layout.out_features,
        target_weight,
        target_bias,
        layout.biases[-1],
        in_name="in_channels" if layout.conv else "in_features",
        out_name="out_channels" if layout.conv else "out_features",
        allow_meta=on_meta,
    )
    return _initialize(sequential, layout, t_w, t_b, gen)


def _initialize(
    sequential: nn.Sequential,
    layout: StackLayout,
    target_weight: Tensor,
    target_bias: Tensor | None,
    generator: torch.Generator | None,
) -> nn.Sequential:
    """:func:`transparent_init_` on validated arguments (``layout`` from :func:`parse_stack`, float64 targets
    from :func:`~transparent_init._checks.resolve_target`): draw, solve, check, then write.

    A stack whose layers are all on the meta device holds no values, nor does a target on meta (accepted
    only then): the stack is initialized by shape only, and nothing is computed (for a target on the CPU too,
    as the identity default is: the float64 draws and solve would be thrown away)."""
    mods = [_affine_module(sequential, i) for i in layout.linear_indices]
    if all(p.is_meta for m in mods for p in m.parameters()):
        return sequential
    with restored_on_error(generator):  # a call that raises leaves the generator as it was
        params = transparent_parameters(
            layout.in_features,
            layout.hidden,
            layout.activations,
            layout.negative_slopes,
            layout.biases,
            target_weight,
            target_bias,
            [m.weight.dtype for m in mods],
            generator,
            [f"layer {i} ({type(m).__name__})" for i, m in zip(layout.linear_indices, mods, strict=True)],
        )
    with torch.no_grad():
        for m, (w, b) in zip(mods, params, strict=True):
            m.weight.copy_(w.view(m.weight.shape))
            if b is not None and m.bias is not None:
                m.bias.copy_(b)
    return sequential
