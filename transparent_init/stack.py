"""``TransparentLinear`` / ``TransparentConv1x1``: plain layer stacks that start as an exact affine map."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import skip_init

from ._checks import as_generator, check_activation, check_hidden, check_positive_int, check_slope
from .inplace import resolve_target, transparent_init_

__all__ = ["TransparentConv1x1", "TransparentLinear", "build_transparent_stack"]


def build_transparent_stack(
    in_features: int,
    hidden_features: Sequence[int],
    out_features: int | None = None,
    activation: str | None = "relu",
    negative_slope: float = 0.01,
    bias: bool = True,
    *,
    conv: bool = False,
    target_weight: Tensor | None = None,
    target_bias: Tensor | None = None,
    generator: torch.Generator | int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Sequential:
    """Build the real layers ``L_1, act, ..., L_k`` of a transparent stack, initialized (see the classes).

    Returns:
        nn.Sequential: ``nn.Linear`` (or 1x1 ``nn.Conv2d`` when ``conv``) layers with activations between.

    Example:
        >>> seq = build_transparent_stack(4, [6], activation="relu", generator=0)
        >>> [tuple(m.weight.shape) for m in seq if hasattr(m, "weight")]
        [(12, 4), (4, 12)]
    """
    name = "channels" if conv else "features"
    in_f = check_positive_int(in_features, f"in_{name}")
    hidden = check_hidden(hidden_features, in_f, f"hidden_{name}", f"in_{name}")
    if target_weight is not None and out_features is None and isinstance(target_weight, Tensor):
        out_features = int(target_weight.shape[0]) if target_weight.dim() == 2 else None
    out_f = in_f if out_features is None else check_positive_int(out_features, f"out_{name}")
    act = check_activation(activation)
    slope = check_slope(negative_slope)
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be a bool, got {type(bias).__name__} ({bias!r})")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    resolve_target(in_f, out_f, target_weight, target_bias, bias)  # validate before allocating
    as_generator(generator)
    # skip_init builds on "meta" then materializes on `device`: spare the default init we overwrite anyway
    factory = {"device": device if device is not None else torch.empty(0).device, "dtype": dtype}
    mult = 1 if act is None else 2
    widths = [in_f] + [mult * h for h in hidden] + [out_f]
    mods: list[nn.Module] = []
    for i in range(len(widths) - 1):
        if conv:
            mods.append(skip_init(nn.Conv2d, widths[i], widths[i + 1], 1, bias=bias, **factory))
        else:
            mods.append(skip_init(nn.Linear, widths[i], widths[i + 1], bias=bias, **factory))
        if act is not None and i < len(widths) - 2:
            mods.append(nn.ReLU() if act == "relu" else nn.LeakyReLU(slope))
    seq = nn.Sequential(*mods)
    return transparent_init_(seq, target_weight=target_weight, target_bias=target_bias, generator=generator)


class _TransparentStack(nn.Module):
    """Shared builder of :class:`TransparentLinear` and :class:`TransparentConv1x1`."""

    _conv: bool = False
    # plain-Python properties: keep them out of TorchScript compilation
    __jit_unused_properties__ = [
        "in_features",
        "hidden_features",
        "out_features",
        "in_channels",
        "hidden_channels",
        "out_channels",
    ]

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int],
        out_features: int | None = None,
        activation: str | None = "relu",
        negative_slope: float = 0.01,
        bias: bool = True,
        *,
        target_weight: Tensor | None = None,
        target_bias: Tensor | None = None,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.layers = build_transparent_stack(
            in_features,
            hidden_features,
            out_features,
            activation,
            negative_slope,
            bias,
            conv=self._conv,
            target_weight=target_weight,
            target_bias=target_bias,
            generator=generator,
            device=device,
            dtype=dtype,
        )
        first, last = self.layers[0], self.layers[-1]
        self._in = int(first.weight.shape[1])
        self._out = int(last.weight.shape[0])
        self._hidden = tuple(int(h) for h in hidden_features)
        self.activation = activation
        self.negative_slope = float(negative_slope)
        self._bias = bias
        # kept (not saved in state_dict) so reset_parameters() redraws towards the same map
        self._target_weight = None if target_weight is None else target_weight.detach().clone()
        self._target_bias = None if target_bias is None else target_bias.detach().clone()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the real layers: ``self.layers(x)`` (no other work)."""
        return self.layers(x)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | int | None = None) -> None:
        """Redraw every parameter (still transparent, towards the same target map).

        Args:
            generator: ``torch.Generator`` or int seed; ``None`` uses the global RNG.
        """
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
        hidden_features: logical hidden widths (length >= 1, each ``>= in_features``); depth is ``len + 1``.
        out_features: output width; default ``in_features`` (needs ``target_weight`` when different).
        activation: ``None``, ``"relu"`` or ``"leaky_relu"``.
        negative_slope: LeakyReLU slope (> 0).
        bias: whether every layer has a bias.
        target_weight (Tensor[out, in] | None): the map's weight; ``None`` is the identity.
        target_bias (Tensor[out] | None): the map's bias; ``None`` is zero.
        generator: ``torch.Generator`` or int seed for reproducible draws; ``None`` uses the global RNG.
        device: factory keyword argument.
        dtype: factory keyword argument (floating).

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
        in_features: int,
        hidden_features: Sequence[int],
        out_features: int | None = None,
        activation: str | None = "relu",
        negative_slope: float = 0.01,
        bias: bool = True,
        *,
        target_weight: Tensor | None = None,
        target_bias: Tensor | None = None,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
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
        hidden_channels: logical hidden widths (length >= 1, each ``>= in_channels``).
        out_channels: output channels; default ``in_channels`` (needs ``target_weight`` when different).
        activation: ``None``, ``"relu"`` or ``"leaky_relu"``.
        negative_slope: LeakyReLU slope (> 0).
        bias: whether every layer has a bias.
        target_weight (Tensor[out, in] | None): the per-pixel map's weight; ``None`` is the identity.
        target_bias (Tensor[out] | None): its bias; ``None`` is zero.
        generator: ``torch.Generator`` or int seed; ``None`` uses the global RNG.
        device: factory keyword argument.
        dtype: factory keyword argument (floating).

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
        in_channels: int,
        hidden_channels: Sequence[int],
        out_channels: int | None = None,
        activation: str | None = "relu",
        negative_slope: float = 0.01,
        bias: bool = True,
        *,
        target_weight: Tensor | None = None,
        target_bias: Tensor | None = None,
        generator: torch.Generator | int | None = None,
        device: torch.device | str | None = None,
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
