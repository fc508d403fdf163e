"""``TransparentLinear`` / ``TransparentConv1x1``: plain layer stacks that start as an exact affine map."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, SupportsFloat, SupportsIndex

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from ._checks import (
    Activation,
    as_generator,
    check_activation,
    check_bool,
    check_dense,
    check_device,
    check_dtype,
    check_hidden,
    check_matrix_size,
    check_slope,
    check_width,
    resolve_target,
)
from .inplace import _initialize, parse_stack, transparent_init_

__all__ = ["TransparentConv1x1", "TransparentLinear", "build_transparent_stack"]

DEFAULT_NEGATIVE_SLOPE = 0.01  # the LeakyReLU slope when none is given (nn.LeakyReLU's default)


class _Config(NamedTuple):
    """Validated construction arguments of a transparent stack."""

    in_features: int
    hidden: tuple[int, ...]
    out_features: int
    activation: Activation | None
    negative_slope: float
    bias: bool
    target_weight: Tensor | None  # float64 CPU copies (None: identity / zero)
    target_bias: Tensor | None


def _validate(
    in_features: object,
    hidden_features: object,
    out_features: object,
    activation: object,
    negative_slope: object,
    bias: object,
    target_weight: object,
    target_bias: object,
    generator: object,
    dtype: object,
    conv: bool,
    device: torch.device | str | int | None,
) -> _Config:
    name = "channels" if conv else "features"
    in_f = check_width(in_features, f"in_{name}")
    hidden = check_hidden(hidden_features, in_f, f"hidden_{name}", f"in_{name}")
    if isinstance(target_weight, Tensor):
        check_dense(target_weight, "target_weight")  # before its shape (a nested tensor has none)
    if out_features is None and isinstance(target_weight, Tensor):  # the user passed no out_{name}
        if target_weight.dim() != 2:  # any row count would do: name the shape it may have
            raise ValueError(
                f"target_weight must have shape [out_{name}, {in_f}] (2-D; out_{name} defaults to its row "
                f"count), got shape {list(target_weight.shape)}"
            )
        if target_weight.shape[0] < 1:  # name what they passed
            raise ValueError(
                f"target_weight must have at least one row (out_{name} defaults to target_weight.shape[0]), "
                f"got shape {list(target_weight.shape)}"
            )
        out_features = int(target_weight.shape[0])
    out_f = in_f if out_features is None else check_width(out_features, f"out_{name}")
    act = check_activation(activation)
    # the slope of the activation for negative inputs: ReLU 0, the identity 1 (what the property gives back)
    own = {"leaky_relu": DEFAULT_NEGATIVE_SLOPE, "relu": 0.0, None: 1.0}[act]
    if negative_slope is None:
        slope = own
    else:
        slope = check_slope(negative_slope)
        # (a stack's own activation and negative_slope rebuild it: 0.0 with a ReLU, 1.0 without an activation)
        if act != "leaky_relu" and slope != own:
            raise ValueError(
                f"negative_slope is the slope of activation='leaky_relu', got negative_slope={slope} with "
                f"activation={act!r} (whose slope is {own}): drop negative_slope or use "
                "activation='leaky_relu'"
            )
    has_bias = check_bool(bias, "bias")
    layer_dtype = check_dtype(dtype) or torch.get_default_dtype()
    real = [in_f, *((h if act is None else 2 * h) for h in hidden), out_f]
    for i, (a, b) in enumerate(itertools.pairwise(real)):
        given = f"in_{name}" if i == 0 else f"hidden_{name}[{i - 1}]"
        given += f" and out_{name}" if i == len(real) - 2 else f" and hidden_{name}[{i}]"
        check_matrix_size(b, a, layer_dtype, f"the weight of layer {i} ({given})")
    as_generator(generator)  # validated here, drawn from in _build
    device = check_device(device)
    on_meta = torch.empty(0, device=device).is_meta  # the layers' device (None: the default device)
    t_w, t_b = resolve_target(
        in_f,
        out_f,
        target_weight,
        target_bias,
        has_bias,
        in_name=f"in_{name}",
        out_name=f"out_{name}",
        allow_meta=on_meta,
    )
    return _Config(
        in_f,
        hidden,
        out_f,
        act,
        slope,
        has_bias,
        None if target_weight is None else t_w.clone(),
        None if t_b is None else t_b.clone(),
    )


def _build(
    cfg: _Config,
    conv: bool,
    generator: torch.Generator | SupportsIndex | None,
    device: torch.device | str | int | None,
    dtype: torch.dtype | None,
) -> nn.Sequential:
    mult = 1 if cfg.activation is None else 2
    widths = [cfg.in_features] + [mult * h for h in cfg.hidden] + [cfg.out_features]
    mods: list[nn.Module] = []
    target = torch.empty(0, device=device).device  # resolves None to the default device
    meta: dict[str, Any] = {"device": "meta", "dtype": dtype}
    for i in range(len(widths) - 1):
        # built on "meta" and materialized uninitialized: spares the default init that is overwritten anyway
        if conv:
            layer: nn.Module = nn.Conv2d(widths[i], widths[i + 1], 1, bias=cfg.bias, **meta)
        else:
            layer = nn.Linear(widths[i], widths[i + 1], bias=cfg.bias, **meta)
        mods.append(layer.to_empty(device=target))
        if cfg.activation is not None and i < len(widths) - 2:
            mods.append(nn.ReLU() if cfg.activation == "relu" else nn.LeakyReLU(cfg.negative_slope))
    seq = nn.Sequential(*mods)
    if target.type == "meta":  # shapes only: nothing to compute (see _initialize)
        return seq
    t_w = (
        torch.eye(cfg.in_features, dtype=torch.float64, device="cpu")
        if cfg.target_weight is None
        else cfg.target_weight
    )
    return _initialize(seq, parse_stack(seq), t_w, cfg.target_bias, as_generator(generator))


def build_transparent_stack(
    in_features: SupportsIndex,
    hidden_features: Sequence[SupportsIndex] | Tensor | npt.NDArray[np.integer[Any]],
    out_features: SupportsIndex | None = None,
    activation: Activation | None = "relu",
    negative_slope: SupportsFloat | None = None,
    bias: bool = True,
    *,
    conv: bool = False,
    target_weight: Tensor | None = None,
    target_bias: Tensor | None = None,
    generator: torch.Generator | SupportsIndex | None = None,
    device: torch.device | str | int | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Sequential:
    """Build the real layers ``L_1, act, ..., L_k`` of a transparent stack, initialized (see the classes).

    The arguments are those of :class:`TransparentLinear` (``conv=False``) or :class:`TransparentConv1x1`
    (``conv=True``; the names in error messages then say ``channels``).

    Args:
        in_features (int): input width (channels with ``conv``).
        hidden_features (Sequence[int] | Tensor | ndarray): logical hidden widths (length >= 1, each
            ``>= in_features`` and ``<= 2**62 - 1``; a sequence or a 1-D tensor or array, not an iterator).
        out_features (int | None): output width; default ``target_weight.shape[0]`` if ``target_weight`` is
            given, else ``in_features``.
        activation (str | None): ``None``, ``"relu"`` or ``"leaky_relu"``.
        negative_slope (float | None): LeakyReLU slope, only with ``activation="leaky_relu"`` (or the
            activation's own: 0.0 with ``"relu"``, 1.0 with ``None``); ``None``: 0.01.
        bias (bool): whether every layer has a bias.
        conv (bool): 1x1 ``nn.Conv2d`` layers instead of ``nn.Linear``.
        target_weight (Tensor[out, in] | None): the map's weight; ``None`` is the identity.
        target_bias (Tensor[out] | None): the map's bias; ``None`` is zero.
        generator: ``torch.Generator`` or int seed; ``None`` uses the global RNG.
        device: factory keyword argument: a ``torch.device``, a device string or an int index.
        dtype: factory keyword argument: float16, bfloat16, float32 or float64.

    Returns:
        nn.Sequential: ``nn.Linear`` (or 1x1 ``nn.Conv2d`` when ``conv``) layers with activations between.

    Example:
        >>> seq = build_transparent_stack(4, [6], activation="relu", generator=0)
        >>> [tuple(m.weight.shape) for m in seq if hasattr(m, "weight")]
        [(12, 4), (4, 12)]
    """
    is_conv = check_bool(conv, "conv")
    cfg = _validate(
        in_features,
        hidden_features,
        out_features,
        activation,
        negative_slope,
        bias,
        target_weight,
        target_bias,
        generator,
        dtype,
        is_conv,
        device,
    )
    return _build(cfg, is_conv, generator, device, dtype)


def _compact(target: Tensor | None) -> Tensor | None:
    """The float64 ``target`` in float32 if that dtype holds every entry exactly and in its normal range (the
    solve converts it back to the same float64 values; a subnormal would read as 0 under
    ``torch.set_flush_denormal(True)``), else as is."""
    if target is None or target.is_meta:  # a meta target holds no values to compare
        return target
    single = target.float()
    size = single.abs()
    normal = bool(((size == 0) | (size >= torch.finfo(torch.float32).tiny)).all())
    return single if normal and torch.equal(single.double(), target) else target


class _TransparentStack(nn.Module):
    """Shared builder of :class:`TransparentLinear` and :class:`TransparentConv1x1`."""

    _conv: bool = False
    # plain-Python properties: keep them out of TorchScript compilation
    __jit_unused_properties__: ClassVar[list[str]] = [
        "in_features",
        "hidden_features",
        "out_features",
        "in_channels",
        "hidden_channels",
        "out_channels",
        "target_weight",
        "target_bias",
    ]

    def __init__(
        self,
        in_features: SupportsIndex,
        hidden_features: Sequence[SupportsIndex] | Tensor | npt.NDArray[np.integer[Any]],
        out_features: SupportsIndex | None = None,
        activation: Activation | None = "relu",
        negative_slope: SupportsFloat | None = None,
        bias: bool = True,
        *,
        target_weight: Tensor | None = None,
        target_bias: Tensor | None = None,
        generator: torch.Generator | SupportsIndex | None = None,
        device: torch.device | str | int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        cfg = _validate(
            in_features,
            hidden_features,
            out_features,
            activation,
            negative_slope,
            bias,
            target_weight,
            target_bias,
            generator,
            dtype,
            self._conv,
            device,
        )
        self.layers = _build(cfg, self._conv, generator, device, dtype)
        self._in = cfg.in_features
        self._out = cfg.out_features
        self._hidden = cfg.hidden
        self._activation = cfg.activation
        self._negative_slope = cfg.negative_slope
        self._bias = cfg.bias
        # kept (not saved in state_dict) so reset_parameters() redraws towards the same map; in float32 when
        # that holds it exactly (selection matrices, float32 targets): half the size in a pickled module
        self._target_weight = _compact(cfg.target_weight)
        self._target_bias = _compact(cfg.target_bias)

    @property
    def target_weight(self) -> Tensor:
        """The weight ``T [out, in]`` of the map the stack was initialized to (and :meth:`reset_parameters`
        redraws towards): a float64 copy, the identity where none was given (read-only)."""
        weight = self._target_weight
        return torch.eye(self._in, dtype=torch.float64) if weight is None else weight.double().clone()

    @property
    def target_bias(self) -> Tensor | None:
        """The bias ``t [out]`` of that map (a float64 copy), ``None`` where none was given (read-only)."""
        bias = self._target_bias
        return None if bias is None else bias.double().clone()

    if TYPE_CHECKING:  # the Literal for type checkers (a stack's own activation rebuilds it); the docs and
        # every run read the property below

        @property
        def activation(self) -> Activation | None: ...

    else:

        @property
        def activation(self) -> str | None:  # str for TorchScript, which compiles properties (no Literal)
            """The activation between the layers (``"relu"``, ``"leaky_relu"`` or ``None``); read-only: the
            layers were built for it (build a new stack for another)."""
            return self._activation

    @property
    def negative_slope(self) -> float:
        """The slope of the activation the layers were built for on negative inputs (read-only, as
        :attr:`activation`): the LeakyReLU's slope, 0.0 for a ReLU and 1.0 without an activation (the
        identity). The constructor takes it back with its activation: ``TransparentLinear(m.in_features,
        m.hidden_features, m.out_features, m.activation, m.negative_slope)`` rebuilds ``m``'s
        configuration."""
        return self._negative_slope

    def forward(self, x: Tensor) -> Tensor:
        """Apply the real layers: ``self.layers(x)`` (no other work)."""
        out: Tensor = self.layers(x)
        return out

    if TYPE_CHECKING:  # nn.Module.__call__ is typed (*args, **kwargs) -> Any: give callers forward's
        # signature (tests/test_typing_user.py checks that the two agree)

        def __call__(self, x: Tensor) -> Tensor: ...

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | SupportsIndex | None = None) -> None:
        """Redraw every parameter (still transparent, towards the same target map).

        Args:
            generator: ``torch.Generator`` or int seed; ``None`` uses the global RNG.

        Raises:
            ValueError: if the stack was built on the meta device with a target on meta (no values) and its
                layers now hold values (after ``to_empty``): there is no map to redraw towards (build it
                with a target made outside the meta context, e.g. with ``device="cpu"``: that one is kept);
                otherwise as :func:`~transparent_init.transparent_init_` for the layers as they are now (a
                pruned layer, a parametrization, ...).
        """
        for name, kept in (("target_weight", self._target_weight), ("target_bias", self._target_bias)):
            if kept is not None and kept.is_meta and not any(p.is_meta for p in self.layers.parameters()):
                device = next(self.layers.parameters()).device
                raise ValueError(
                    f"{type(self).__name__} was built with {name} on the meta device (shapes only, no "
                    f"values) and its layers now hold values (device {device}), so reset_parameters has no "
                    f"map to redraw towards: build it with {name} made outside the meta context (e.g. "
                    f"selection_weight(..., device='cpu'), or torch.tensor(..., device='cpu') inside "
                    "`with torch.device('meta')`); a target with values is kept and reset_parameters works "
                    "after to_empty"
                )
        transparent_init_(
            self.layers, target_weight=self._target_weight, target_bias=self._target_bias, generator=generator
        )

    def extra_repr(self) -> str:
        name = "channels" if self._conv else "features"
        s = f"in_{name}={self._in}, hidden_{name}={list(self._hidden)}, out_{name}={self._out}"
        s += f", activation={self.activation!r}"
        if self.activation == "leaky_relu":
            s += f", negative_slope={self.negative_slope}"
        if not self._bias:
            s += ", bias=False"
        if self._target_weight is not None or self._target_bias is not None:  # a target was given: two stacks
            # of one shape towards different maps print differently (kept targets only: no new attribute,
            # so a module pickled before reads the same)
            s += ", target=custom"
        return s


class TransparentLinear(_TransparentStack):
    """Fully-connected stack that computes exactly ``x W^T + b`` (identity by default) at initialization.

    The real layers (``.layers``, an ``nn.Sequential`` of ``nn.Linear`` and activations) are ordinary layers:
    the forward pass is ``self.layers(x)``, with no overhead. Hidden layers are dense random semi-orthogonal
    draws; the last layer is the float64 least-squares solution that makes the whole stack equal the target
    map, cast to ``dtype``. With an activation, hidden layer ``l`` of logical width ``h_l`` holds ``2 h_l``
    real units (``[z, -z]``), since

    .. math::

        \\mathrm{relu}(z) - \\mathrm{relu}(-z) = z, \\qquad
        \\mathrm{leaky}_a(z) - \\mathrm{leaky}_a(-z) = (1 + a)\\, z .

    Args:
        in_features: input width ``C_in``.
        hidden_features (Sequence[int] | Tensor | ndarray): logical hidden widths (length >= 1, each
            ``>= in_features`` and ``<= 2**62 - 1``; a sequence or a 1-D tensor or array, not an iterator);
            depth is ``len + 1``.
        out_features: output width; default ``target_weight.shape[0]`` if ``target_weight`` is given, else
            ``in_features`` (the identity).
        activation: ``None``, ``"relu"`` or ``"leaky_relu"``.
        negative_slope: LeakyReLU slope (>= 0; 0 is a ReLU), only with ``activation="leaky_relu"``;
            ``None``: 0.01. (The activation's own slope, 0.0 with ``"relu"`` and 1.0 with ``None``, as
            the ``negative_slope`` property gives it, is accepted too.)
        bias: whether every layer has a bias.
        target_weight (Tensor[out, in] | None): the map's weight; ``None`` is the identity (on the meta
            device only when ``device`` is meta: the stack is then built by shape, and
            ``reset_parameters()`` after ``to_empty`` needs a target with values, e.g. one made with
            ``device="cpu"``).
        target_bias (Tensor[out] | None): the map's bias; ``None`` is zero.
        generator: ``torch.Generator`` or int seed for reproducible draws; ``None`` uses the global RNG.
        device: factory keyword argument: a ``torch.device``, a device string or an int index.
        dtype: factory keyword argument: float16, bfloat16, float32 or float64 (float16 / bfloat16 need a
            target representable in them).

    Raises:
        TypeError: an argument of the wrong type (integers: Python and numpy ints, 0-d integer tensors;
            hidden widths: a sequence or a 1-D tensor or array, not an iterator or a generator; targets:
            dense real tensors).
        ValueError: a bad value, naming the argument, the expected and the actual value (a width beyond
            int64, a hidden one beyond ``2**62 - 1``: an activation doubles it; a layer whose weight would
            exceed ``2**63 - 1`` bytes); a hidden width
            below the input width; a target map the dtype cannot represent (overflow or underflow of the
            last layer, naming the layer, the parameter, the dtype and the magnitude), or one whose stack
            would overflow the dtype in its sums (or in a LeakyReLU's outputs, for a slope above 1) for
            inputs with ``max |x| <= 1`` where the map does not (naming the layer and the bound); a
            ``device`` string or index that names no device (``"cpux"``, ``-1``).

    Shape:
        - Input: ``(*, C_in)``.
        - Output: ``(*, C_out)``.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> layer = TransparentLinear(42, [64, 64], generator=0)
        >>> layer.layers[0]
        Linear(in_features=42, out_features=128, bias=True)
        >>> x = torch.empty(8, 42).uniform_(-10, 10)
        >>> bool((layer(x) - x).abs().max() < 3e-5)
        True
    """

    _conv = False

    def __init__(
        self,
        in_features: SupportsIndex,
        hidden_features: Sequence[SupportsIndex] | Tensor | npt.NDArray[np.integer[Any]],
        out_features: SupportsIndex | None = None,
        activation: Activation | None = "relu",
        negative_slope: SupportsFloat | None = None,
        bias: bool = True,
        *,
        target_weight: Tensor | None = None,
        target_bias: Tensor | None = None,
        generator: torch.Generator | SupportsIndex | None = None,
        device: torch.device | str | int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_features,
            hidden_features,
            out_features,
            activation,
            negative_slope,
            bias,
            target_weight=target_weight,
            target_bias=target_bias,
            generator=generator,
            device=device,
            dtype=dtype,
        )

    @property
    def in_features(self) -> int:
        """Input width."""
        return self._in

    @property
    def hidden_features(self) -> tuple[int, ...]:
        """Logical hidden widths (real widths are doubled with an activation)."""
        return self._hidden

    @property
    def out_features(self) -> int:
        """Output width."""
        return self._out


class TransparentConv1x1(_TransparentStack):
    """1x1-convolution stack computing exactly ``W x + b`` per pixel (identity by default) at initialization.

    The same construction as :class:`TransparentLinear`, acting on the channel dimension with ``nn.Conv2d``
    layers of kernel size 1 (``.layers``).

    Args:
        in_channels: input channels ``C_in``.
        hidden_channels (Sequence[int] | Tensor | ndarray): logical hidden widths (length >= 1, each
            ``>= in_channels`` and ``<= 2**62 - 1``; a sequence or a 1-D tensor or array, not an iterator).
        out_channels: output channels; default ``target_weight.shape[0]`` if ``target_weight`` is given, else
            ``in_channels`` (the identity).
        activation: ``None``, ``"relu"`` or ``"leaky_relu"``.
        negative_slope: LeakyReLU slope (>= 0; 0 is a ReLU), only with ``activation="leaky_relu"``;
            ``None``: 0.01. (The activation's own slope, 0.0 with ``"relu"`` and 1.0 with ``None``, as
            the ``negative_slope`` property gives it, is accepted too.)
        bias: whether every layer has a bias.
        target_weight (Tensor[out, in] | None): the per-pixel map's weight; ``None`` is the identity (on the
            meta device only when ``device`` is meta: the stack is then built by shape, and
            ``reset_parameters()`` after ``to_empty`` needs a target with values, e.g. one made with
            ``device="cpu"``).
        target_bias (Tensor[out] | None): its bias; ``None`` is zero.
        generator: ``torch.Generator`` or int seed; ``None`` uses the global RNG.
        device: factory keyword argument: a ``torch.device``, a device string or an int index.
        dtype: factory keyword argument: float16, bfloat16, float32 or float64 (float16 / bfloat16 need a
            target representable in them).

    Raises:
        TypeError: an argument of the wrong type (integers: Python and numpy ints, 0-d integer tensors;
            hidden widths: a sequence or a 1-D tensor or array, not an iterator or a generator; targets:
            dense real tensors).
        ValueError: a bad value, naming the argument, the expected and the actual value (a width beyond
            int64, a hidden one beyond ``2**62 - 1``: an activation doubles it; a layer whose weight would
            exceed ``2**63 - 1`` bytes); a hidden width
            below the input width; a target map the dtype cannot represent (overflow or underflow of the
            last layer, naming the layer, the parameter, the dtype and the magnitude), or one whose stack
            would overflow the dtype in its sums (or in a LeakyReLU's outputs, for a slope above 1) for
            inputs with ``max |x| <= 1`` where the map does not (naming the layer and the bound); a
            ``device`` string or index that names no device (``"cpux"``, ``-1``).

    Shape:
        - Input: ``(N, C_in, H, W)``.
        - Output: ``(N, C_out, H, W)``.

    Example:
        >>> import torch
        >>> avg = torch.zeros(2, 4)
        >>> avg[0, :2] = 0.5; avg[1, 2:] = 0.5  # average channel pairs: 4 -> 2
        >>> fuse = TransparentConv1x1(4, [8], out_channels=2, target_weight=avg, generator=0)
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(1, 4, 3, 3)
        >>> bool(torch.allclose(fuse(x), torch.stack([x[:, :2].mean(1), x[:, 2:].mean(1)], 1), atol=1e-5))
        True
    """

    _conv = True

    def __init__(
        self,
        in_channels: SupportsIndex,
        hidden_channels: Sequence[SupportsIndex] | Tensor | npt.NDArray[np.integer[Any]],
        out_channels: SupportsIndex | None = None,
        activation: Activation | None = "relu",
        negative_slope: SupportsFloat | None = None,
        bias: bool = True,
        *,
        target_weight: Tensor | None = None,
        target_bias: Tensor | None = None,
        generator: torch.Generator | SupportsIndex | None = None,
        device: torch.device | str | int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            hidden_channels,
            out_channels,
            activation,
            negative_slope,
            bias,
            target_weight=target_weight,
            target_bias=target_bias,
            generator=generator,
            device=device,
            dtype=dtype,
        )

    @property
    def in_channels(self) -> int:
        """Input channels."""
        return self._in

    @property
    def hidden_channels(self) -> tuple[int, ...]:
        """Logical hidden widths (real widths are doubled with an activation)."""
        return self._hidden

    @property
    def out_channels(self) -> int:
        """Output channels."""
        return self._out
