"""Obvious float64 references for transparent stacks, independent of the library's construction.

The claim a transparent stack makes is checked from the outside: evaluate the *stored* layers in float64, and
bound what the layers' own arithmetic in their dtype may add with the textbook rounding analysis (Higham,
*Accuracy and Stability of Numerical Algorithms*, 2nd ed., Lemma 3.1 / Eq. 3.13: a length-``n`` inner product
in a format with unit roundoff ``u`` is off by at most ``gamma_n |w|^T |x|``, ``gamma_n = n u / (1 - n u)``,
in any summation order). That model holds in the normal range; where values fall below the smallest normal
number (float16: 6.1e-5), every rounded product or sum may also be off by up to half the smallest subnormal
``eta`` in absolute terms (Higham, Eq. 2.8), so a layer adds ``(n + 1) eta`` per output. Nothing here reads
the library's intermediate values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Slack for the float64 solve of the last layer, relative to the largest entry of the target's column
#: ``[T_j; t_j]`` times ``sum |x| + 1``: a backward-stable least-squares solve (QR) is exact for a target off
#: by a few epsilons of that column's size, an error the input then multiplies (for the well-conditioned
#: chains the library draws: measured worst over the property tests 3e-14 of the target's scale). It was
#: relative to ``|x| |T|^T + 1 + |t|`` row by row, which a zero target weight with a bias leaves without the
#: input's part: float64 stacks of ``y = t`` exceeded it 11x at ``|x| = 1e4`` (an audit, 2026-12-06). Only
#: the float64 stacks notice it; it is 1e-5 of float32's unit roundoff.
SOLVE_SLACK = 1e3 * torch.finfo(torch.float64).eps


def uniform(
    shape: tuple[int, ...],
    magnitude: float,
    seed: int,
    dtype: torch.dtype = torch.float32,
    *,
    offset: float = 0.0,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``offset + U(-magnitude, magnitude)`` drawn in float64 from ``seed``, then cast to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * magnitude + offset
    return x.to(device=device, dtype=dtype)


def _gamma(n: int, u: float) -> float:
    assert n * u < 1, f"no rounding bound for length {n} at unit roundoff {u}"
    return n * u / (1 - n * u)


@dataclass
class Bound:
    """Entrywise, for rows ``x [N, in]``: the target ``x T^T + t`` and a bound on ``|stack(x) - target|``."""

    target: Tensor
    forward: Tensor  # the layers' arithmetic in their dtype (and the float64 reference's own)
    last_rounding: Tensor  # the last layer rounded from its float64 solution to its dtype
    solve: Tensor  # the float64 solve's residual

    @property
    def total(self) -> Tensor:
        return self.forward + self.last_rounding + self.solve


def _affine(m: nn.Module) -> tuple[Tensor, Tensor | None]:
    w = m.weight.detach().to(device="cpu", dtype=torch.float64)
    b = None if m.bias is None else m.bias.detach().to(device="cpu", dtype=torch.float64)
    return w.reshape(w.shape[0], -1), b


def bound(
    layers: nn.Sequential, x: Tensor, target_weight: Tensor | None = None, target_bias: Tensor | None = None
) -> Bound:
    """The float64 target of rows ``x`` (as stored, i.e. already cast) and the error bound of ``layers(x)``.

    ``layers`` holds ``nn.Linear`` or 1x1 ``nn.Conv2d`` (all in one dtype), ``nn.ReLU`` and ``nn.LeakyReLU``;
    for convolutions pass the pixels as rows (``x.movedim(1, -1).reshape(-1, C)``).
    """
    dtype = next(iter(layers.parameters())).dtype
    u = torch.finfo(dtype).eps / 2
    eta = torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps / 2  # half the smallest subnormal
    u64 = torch.finfo(torch.float64).eps / 2
    a = x.detach().to(device="cpu", dtype=torch.float64)
    x64 = a
    e = torch.zeros_like(a)  # bound on |computed - exact| of the current activations, in dtype
    e64 = torch.zeros_like(a)  # the same for a float64 evaluation (the reference is exact, not computed)
    last_in = a
    last = None
    for m in layers:
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w, b = _affine(m)
            wa = w.abs().T
            babs = 0 if b is None else b.abs()
            n = w.shape[1] + (b is not None)
            e = e @ wa + _gamma(n, u) * ((a.abs() + e) @ wa + babs) + (n + 1) * eta
            e64 = e64 @ wa + _gamma(n, u64) * ((a.abs() + e64) @ wa + babs)
            last_in, last = a, (w, b)
            a = a @ w.T + (0 if b is None else b)
        elif isinstance(m, nn.LeakyReLU):
            s = float(m.negative_slope)
            a = F.leaky_relu(a, s)
            e = max(1.0, s) * e * (1 + u) + u * a.abs() + eta
            e64 = max(1.0, s) * e64 * (1 + u64) + u64 * a.abs()
        elif isinstance(m, nn.ReLU):
            a = torch.relu(a)  # exact, 1-Lipschitz
        else:
            raise TypeError(f"unexpected layer {type(m).__name__}")
    assert last is not None
    w, b = last
    out = w.shape[0]
    t_w = torch.eye(out, x64.shape[1], dtype=torch.float64) if target_weight is None else target_weight
    t_w = t_w.detach().to(device="cpu", dtype=torch.float64)
    target = x64 @ t_w.T
    if target_bias is not None:
        target = target + target_bias.detach().to(device="cpu", dtype=torch.float64)
    u_last = u / (1 - u)  # |exact - stored| <= u |exact| <= u / (1 - u) |stored|
    rounding = u_last * (last_in.abs() @ w.abs().T + (0 if b is None else b.abs()))
    column = t_w.abs().amax(dim=1)  # the largest entry of each output's [T_j; t_j]
    if target_bias is not None:
        column = torch.maximum(column, target_bias.detach().abs().to(device="cpu", dtype=torch.float64))
    scale = (x64.abs().sum(dim=1, keepdim=True) + 1.0) * column
    return Bound(target, e + e64, rounding, SOLVE_SLACK * scale)


def rows(y: Tensor, conv: bool) -> Tensor:
    """Channels last and flattened to ``[N, C]`` for convolution outputs; as is for linear ones."""
    return y.movedim(1, -1).reshape(-1, y.shape[1]) if conv else y.reshape(-1, y.shape[-1])


def check(
    stack: nn.Module, x: Tensor, target_weight: Tensor | None = None, target_bias: Tensor | None = None
) -> float:
    """Assert ``stack(x)`` is within :func:`bound` of the target; return the largest error / bound ratio.

    ``stack`` is a transparent module (its ``.layers``) or an ``nn.Sequential``; 4-D inputs are images for
    1x1 convolutions.
    """
    layers = stack.layers if hasattr(stack, "layers") else stack
    conv = x.dim() == 4
    with torch.no_grad():
        y = stack(x)
    out = layers[-1].weight.shape[0]
    assert y.dtype == x.dtype and y.device == x.device
    assert y.shape == ((x.shape[0], out, *x.shape[2:]) if conv else (*x.shape[:-1], out))
    b = bound(layers, rows(x, conv), target_weight, target_bias)
    err = (rows(y, conv).double().cpu() - b.target).abs()
    total = b.total
    worst = int(torch.argmax(err - total))
    assert bool((err <= total).all()), (
        f"error {err.flatten()[worst]:.3g} > bound {total.flatten()[worst]:.3g} (forward "
        f"{b.forward.flatten()[worst]:.3g}, last-layer rounding {b.last_rounding.flatten()[worst]:.3g})"
    )
    return float((err / total).max())


def reported_magnitude(message: str) -> float:
    """The magnitude an underflow error of the construction reports: ``... (up to X in magnitude) ...``."""
    return float(message.split("(up to ")[1].split(" in magnitude")[0])
