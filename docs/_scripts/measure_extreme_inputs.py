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
from transparent_init import TransparentLinear

WIDTH, HIDDEN, ROWS = 42, [64, 64], 256


def directions(seed: int) -> torch.Tensor:
    """The ``u`` of ``seed``: 256 x 42 entries uniform in [-1, 1] (float32)."""
    return torch.empty(ROWS, WIDTH).uniform_(-1, 1, generator=torch.Generator().manual_seed(seed))


def stack(seed: int, dtype: torch.dtype = torch.float32, **kwargs: object) -> TransparentLinear:
    """The measured stack of ``seed`` (``kwargs``: ``bias``, ``activation``, ``negative_slope``, targets)."""
    return TransparentLinear(WIDTH, HIDDEN, generator=seed, dtype=dtype, **kwargs)  # type: ignore[arg-type]


@torch.no_grad()
def max_error(layer: TransparentLinear, x: torch.Tensor, relative: bool = False) -> float:
    """``max |layer(x) - x|`` in float64 (over ``max |x|`` with ``relative``)."""
    err = (layer(x).double() - x.double()).abs().max().item()
    return err / x.double().abs().max().item() if relative else err


@torch.no_grad()
def first_non_finite(layer: TransparentLinear, u: torch.Tensor, lo: float, hi: float) -> float:
    """The smallest ``r`` in ``[lo, hi]`` (to 0.1 %) whose output ``layer(r u)`` is not all finite."""
    dtype = next(layer.parameters()).dtype

    def finite(r: float) -> bool:
        return bool(torch.isfinite(layer((u.double() * r).to(dtype))).all())

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


def overflow(seed: int, dtype: torch.dtype, lo: float, hi: float, **kwargs: object) -> float:
    """:func:`first_non_finite` of the seed's stack in ``dtype`` (``kwargs``: its activation)."""
    return first_non_finite(stack(seed, dtype, **kwargs), directions(seed), lo, hi)


#: One figure: its section, its label, the value of one seed, and how to print it.
Figure = tuple[str, str, Callable[[int], float], str]


def figures() -> list[Figure]:
    """Every figure of the page's list, in its order."""
    out: list[Figure] = []
    tiny = "tiny inputs: max |f(x) - x|, float32, with bias"
    for r in (1.0, 1e-4, 1e-10, 1e-20, 1e-30):
        out.append((tiny, f"r = {r:g}", lambda s, r=r: max_error(stack(s), directions(s) * r), "{:.2g}"))
    half = "half precision: max |f(x) - x| / max |x|, with bias"
    for dtype in (torch.float16, torch.bfloat16):
        for r in (1.0, 10.0, 100.0, 1000.0):

            def rounded(s: int, r: float = r, dtype: torch.dtype = dtype) -> float:
                return max_error(stack(s, dtype), (directions(s) * r).to(dtype), relative=True)

            out.append((half, f"{str(dtype).removeprefix('torch.')}, r = {r:g}", rounded, "{:.2g}"))
    relative = "tiny and huge inputs: max |f(x) - x| / max |x|, bias=False"
    for r in (1e-40, 1e-38, 1e-30, 1.0, 1e20, 1e38):

        def f32(s: int, r: float = r) -> float:  # r u in float64 first: 1e-40 u keeps its subnormal digits
            return max_error(stack(s, bias=False), directions(s).double().mul(r).float(), relative=True)

        out.append((relative, f"float32, r = {r:g}", f32, "{:.2g}"))
    for r in (1e-38, 1e-30, 1.0, 1e30):

        def bf16(s: int, r: float = r) -> float:
            return max_error(
                stack(s, torch.bfloat16, bias=False), (directions(s) * r).bfloat16(), relative=True
            )

        out.append((relative, f"bfloat16, r = {r:g}", bf16, "{:.2g}"))
    huge = "huge inputs: the first r whose output is not all finite"
    out.append((huge, "largest hidden pre-activation / max |x|", hidden_ratio, "{:.2g}"))
    out.append((huge, "float16", lambda s: overflow(s, torch.float16, 1e3, 1e5), "{:.3g}"))
    out.append((huge, "float32", lambda s: overflow(s, torch.float32, 1e37, 3.3e38), "{:.3g}"))
    out.append((huge, "bfloat16", lambda s: overflow(s, torch.bfloat16, 1e37, 3.3e38), "{:.3g}"))
    for a in (4.0, 100.0):

        def leaky(s: int, a: float = a) -> float:
            return overflow(s, torch.float32, 1e33, 3.3e38, activation="leaky_relu", negative_slope=a)

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
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 to N-1 (default 5)")
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
