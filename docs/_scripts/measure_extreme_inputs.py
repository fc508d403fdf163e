"""Measure the "Extreme inputs" figures of docs/concepts/transparent_init.rst: how close a transparent stack
stays to the identity in half precision and for tiny and huge inputs, where it overflows, and how targets of
any scale come out.

Run from the repository root: ``python docs/_scripts/measure_extreme_inputs.py`` (a few seconds on a CPU;
``--seeds 1`` for one seed). Prints one line per figure, each the range over the seeds.

The draw, for every seed ``s`` (the page's recipe): the stack ``TransparentLinear(42, [64, 64],
generator=s)`` (ReLU, 42 -> 128 -> 128 -> 42) in the dtype measured, and 256 rows ``x = r * u`` with ``u``
uniform in [-1, 1] from ``torch.Generator().manual_seed(s)``, drawn in float32 and rounded to the dtype. The
same ``u`` at every ``r``: the first ``r`` whose output is not finite is found by bisection (to 0.1 %).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.voc_joint.cli import int_range
from transparent_init import TransparentLinear

WIDTH, HIDDEN, ROWS = 42, [64, 64], 256


def directions(seed: int) -> torch.Tensor:
    """The ``u`` of ``seed``: 256 x 42 entries uniform in [-1, 1] (float32)."""
    return torch.empty(ROWS, WIDTH).uniform_(-1, 1, generator=torch.Generator().manual_seed(seed))


def inputs(seed: int, r: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``r u`` of ``seed`` in ``dtype``, the product taken in float64 (``1e-40 u`` keeps its subnormal
    digits)."""
    return directions(seed).double().mul(r).to(dtype)


def stack(seed: int, dtype: torch.dtype = torch.float32, **kwargs: object) -> TransparentLinear:
    """The measured stack of ``seed`` (``kwargs``: ``bias``, ``activation``, ``negative_slope``, targets)."""
    return TransparentLinear(WIDTH, HIDDEN, generator=seed, dtype=dtype, **kwargs)  # type: ignore[arg-type]


@torch.no_grad()
def max_error(layer: TransparentLinear, x: torch.Tensor, relative: bool = False) -> float:
    """``max |layer(x) - x|`` in float64 (over ``max |x|`` with ``relative``)."""
    err = (layer(x).double() - x.double()).abs().max().item()
    return err / x.double().abs().max().item() if relative else err


@torch.no_grad()
def first_non_finite(seed: int, dtype: torch.dtype, lo: float, hi: float, **kwargs: object) -> float:
    """The smallest ``r`` in ``[lo, hi]`` (to 0.1 %) whose output of the seed's stack in ``dtype``
    (``kwargs``: its activation) for :func:`inputs` ``r u`` is not all finite."""
    layer = stack(seed, dtype, **kwargs)

    def finite(r: float) -> bool:
        return bool(torch.isfinite(layer(inputs(seed, r, dtype))).all())

    if not finite(lo) or finite(hi):
        raise SystemExit(
            f"the stack is not finite at r = {lo:g} and non-finite at r = {hi:g}: widen the bracket"
        )
    while hi / lo > 1.001:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if finite(mid) else (lo, mid)
    return hi


def span(values: Sequence[float], fmt: str = "{:.2g}") -> str:
    """``"a-b"`` of the smallest and largest value (one value when they print the same)."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}-{high}"


def target_error(seed: int, scale: float = 1.0, bias: float = 0.0) -> float:
    """``max |f(x) - (s x + b)| / max |s x + b|`` of ``TransparentLinear(8, [16, 16])`` built for the target
    ``s I``, ``b`` (float32; ``x``: the first 8 columns of the seed's ``u``)."""
    layer = TransparentLinear(
        8, [16, 16], generator=seed, target_weight=scale * torch.eye(8), target_bias=torch.full((8,), bias)
    )
    x = directions(seed)[:, :8]
    with torch.no_grad():
        want = x.double() * scale + bias
        return ((layer(x).double() - want).abs().max() / want.abs().max()).item()


@torch.no_grad()
def hidden_ratio(seed: int) -> float:
    """The largest first-layer pre-activation over ``max |x|``."""
    u = directions(seed)
    return (stack(seed).layers[0](u).abs().max() / u.abs().max()).item()


#: One figure: its section, its label, the value of one seed, and how to print it.
Figure = tuple[str, str, Callable[[int], float], str]


def identity_error(
    title: str,
    dtypes: Sequence[torch.dtype],
    radii: Sequence[float],
    *,
    bias: bool = True,
    relative: bool = True,
) -> list[Figure]:
    """The figures of ``max |f(x) - x|`` (over ``max |x|`` with ``relative``) of the seeds' stacks in each of
    ``dtypes`` for :func:`inputs` at each of ``radii``."""
    out: list[Figure] = []
    for dtype in dtypes:
        for r in radii:

            def error(s: int, dtype: torch.dtype = dtype, r: float = r) -> float:
                return max_error(stack(s, dtype, bias=bias), inputs(s, r, dtype), relative=relative)

            out.append((title, f"{str(dtype).removeprefix('torch.')}, r = {r:g}", error, "{:.2g}"))
    return out


def figures() -> list[Figure]:
    """Every figure of the page's list, in its order."""
    f32, f16, bf16 = torch.float32, torch.float16, torch.bfloat16
    tiny = "tiny inputs: max |f(x) - x|, with bias"
    out = identity_error(tiny, [f32], [1.0, 1e-4, 1e-10, 1e-20, 1e-30], relative=False)
    half = "half precision: max |f(x) - x| / max |x|, with bias"
    out += identity_error(half, [f16, bf16], [1.0, 10.0, 100.0, 1000.0])
    relative = "tiny and huge inputs: max |f(x) - x| / max |x|, bias=False"
    out += identity_error(relative, [f32], [1e-40, 1e-38, 1e-30, 1.0, 1e20, 1e38], bias=False)
    out += identity_error(relative, [bf16], [1e-38, 1e-30, 1.0, 1e30], bias=False)
    huge = "huge inputs: the first r whose output is not all finite"
    out.append((huge, "largest hidden pre-activation / max |x|", hidden_ratio, "{:.2g}"))
    out.append((huge, "float16", lambda s: first_non_finite(s, f16, 1e3, 1e5), "{:.3g}"))
    out.append((huge, "float32", lambda s: first_non_finite(s, f32, 1e37, 3.3e38), "{:.3g}"))
    out.append((huge, "bfloat16", lambda s: first_non_finite(s, bf16, 1e37, 3.3e38), "{:.3g}"))
    for a in (4.0, 100.0):

        def leaky(s: int, a: float = a) -> float:
            return first_non_finite(s, f32, 1e33, 3.3e38, activation="leaky_relu", negative_slope=a)

        out.append((huge, f"float32, LeakyReLU slope {a:g}", leaky, "{:.3g}"))
    targets = "targets: max |f(x) - target| / max |target|, float32, TransparentLinear(8, [16, 16])"
    for scale in (1e-38, 1e-36, 1e-10, 1.0, 1e10, 1e36):
        out.append(
            (targets, f"target_weight = {scale:g} * I", lambda s, c=scale: target_error(s, c), "{:.2g}")
        )
    out.append((targets, "target_bias = 1e30", lambda s: target_error(s, bias=1e30), "{:.2g}"))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int_range(1), default=5, help="seeds 0 to N-1 (default 5)")
    seeds = range(parser.parse_args(argv).seeds)
    print(f"torch {torch.__version__}; seeds 0-{seeds[-1]}; each figure's range over the seeds")
    section = ""
    for title, label, value, fmt in figures():
        if title != section:
            print(f"-- {title}")
            section = title
        print(f"{label:<44} {span([value(s) for s in seeds], fmt)}")


if __name__ == "__main__":
    main()
