"""Transparent initialization: the paper's Tables 2 and 3, and the run-time cost of a transparent stack.

Run: ``python benchmarks/bench_transparent_init.py`` (10 seeds; ``--seeds N``) or ``python
benchmarks/bench_transparent_init.py --quick`` (3 seeds, 16x smaller inputs, a smoke test). Writes
``benchmarks/results/transparent_init.json`` (``--quick``: nothing unless ``--out`` is given).

* Table 2: init rate (share of parameters with |w| > 1e-4, on the ReLU stack 42-128-128-42), recovery
  (share of outputs within 1e-4 of the input, float32 inputs U[-10, 10]) without / with ReLU, and a
  non-square target (42 -> 21 pairwise channel mean, with ReLU), for random uniform, Xavier, Net2Net identity
  and ours.
* Table 3: max |y - x| of ours for inputs U[-r, r], r = 1, 10, 100, 1000 (median and worst over seeds),
  beside the same construction with the authors' recipe (Gaussian N(0, 1/h) hidden draws, float32
  pseudo-inverse) measured in this run, and beside the paper's figures; plus depths 2-5.
* Widths: the same error for ``TransparentLinear(w, [w, w])`` at w = 42, 256, 1024 (ReLU; 1024 also without an
  activation and with LeakyReLU 0.01), 2048 input vectors, beside the float32 matrix-product floor (three
  chained random orthogonal products).
* Cost: forward time of a ``TransparentConv1x1`` against the same plain ``nn.Sequential`` (ratio ~1.0), the
  time to build (initialize) each, and memory (parameters; the outputs of every layer of one forward, which
  is more than a backward keeps: the outputs of the convolutions that a ReLU follows are not kept).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from _atomic import RESULTS, result_path, write_json
from _harness import check_counts, check_output, cpu_model, load_average, run_script
from torch import nn

from transparent_init import (
    TransparentConv1x1,
    TransparentLinear,
    _affine,
    init_rate,
    max_abs_error,
    net2net_identity_init_,
    random_uniform_init_,
    recovery_rate,
    transparent_init_,
    xavier_init_,
)

DEFAULT_OUT = RESULTS / "transparent_init.json"  # the result file of a full run without --out
C, HIDDEN = 42, [64, 64]
PAPER_T2 = {"ours": {"init_rate": 99.9, "recovery_no_relu": 100.0, "recovery_relu": 100.0}}
PAPER_T3 = {1: 6.8e-6, 10: 6.6e-5, 100: 6.5e-4, 1000: 6.6e-3}


def plain_stack(act: bool, out: int = C, hidden: list[int] = HIDDEN) -> nn.Sequential:
    """The same real layers as ``TransparentConv1x1(C, hidden, out, activation='relu' | None)``."""
    m = 2 if act else 1
    widths = [C] + [m * h for h in hidden] + [out]
    mods: list[nn.Module] = []
    for i in range(len(widths) - 1):
        mods.append(nn.Conv2d(widths[i], widths[i + 1], 1))
        if act and i < len(widths) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def inputs(r: float, seed: int, shape: tuple[int, ...] = (4, C, 64, 64)) -> torch.Tensor:
    g = torch.Generator().manual_seed(10_000 + seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul(r).float()


def pair_mean() -> torch.Tensor:
    w = torch.zeros(C // 2, C)
    idx = torch.arange(C // 2)
    w[idx, 2 * idx] = 0.5
    w[idx, 2 * idx + 1] = 0.5
    return w


def init_with(
    method: str, seq: nn.Sequential, seed: int, target: torch.Tensor | None = None
) -> nn.Sequential:
    if method == "random":
        return random_uniform_init_(seq, generator=seed)
    if method == "xavier":
        return xavier_init_(seq, generator=seed)
    if method == "net2net":
        return net2net_identity_init_(seq)
    return transparent_init_(seq, target_weight=target, generator=seed)


@torch.no_grad()
def reference_recipe_(seq: nn.Sequential, seed: int) -> nn.Sequential:
    """The authors' recipe (per the notes): hidden A, b ~ N(0, 1/h); chain and pseudo-inverse in float32."""
    g = torch.Generator().manual_seed(seed)
    convs = [m for m in seq if isinstance(m, nn.Conv2d)]
    prev, p = C, torch.eye(C + 1)
    for i, conv in enumerate(convs[:-1]):
        h = conv.out_channels // 2
        a = torch.randn(h, prev, generator=g) / h**0.5
        b = torch.randn(h, generator=g) / h**0.5
        w = a if i == 0 else torch.cat([a, -a], 1)
        conv.weight.copy_(torch.cat([w, -w], 0)[:, :, None, None])
        conv.bias.copy_(torch.cat([b, -b]))
        p = p @ _affine.homogeneous(a, b)
        prev = h
    sol = torch.linalg.pinv(p)  # float32, as the authors' module
    w_last, c_last = sol[:prev, :C].T, sol[prev, :C]
    convs[-1].weight.copy_(torch.cat([w_last, -w_last], 1)[:, :, None, None])
    convs[-1].bias.copy_(c_last)
    return seq


INPUT_SHAPE = (4, C, 64, 64)  # the inputs of Tables 2 and 3
QUICK_INPUT_SHAPE = (1, C, 32, 32)  # --quick: 16x fewer values (a smoke test of the same code)


def table2(seeds: int, shape: tuple[int, ...] = INPUT_SHAPE) -> dict:
    rows = {}
    x = [inputs(10.0, s, shape) for s in range(seeds)]
    target = pair_mean()
    for method in ("random", "xavier", "net2net", "ours"):
        rate, rec0, rec1, recns = [], [], [], []
        for s in range(seeds):
            relu = init_with(method, plain_stack(True), s)
            rate.append(100 * init_rate(relu))
            rec1.append(100 * recovery_rate(relu, x[s]))
            rec0.append(100 * recovery_rate(init_with(method, plain_stack(False), s), x[s]))
            ns = init_with(
                method, plain_stack(True, out=C // 2), s, target=target if method == "ours" else None
            )
            tgt = torch.einsum("oc,bchw->bohw", target, x[s])
            recns.append(100 * recovery_rate(ns, x[s], target=tgt))
        rows[method] = {
            "init_rate": statistics.median(rate),
            "init_rate_min": min(rate),
            "recovery_no_relu": statistics.median(rec0),
            "recovery_relu": statistics.median(rec1),
            "recovery_relu_min": min(rec1),
            "non_square_recovery": statistics.median(recns),
        }
    return rows


def table3(seeds: int, shape: tuple[int, ...] = INPUT_SHAPE) -> dict:
    out: dict = {}
    cases = {
        "ours_relu": lambda s: TransparentConv1x1(C, HIDDEN, activation="relu", generator=s),
        "ours_none": lambda s: TransparentConv1x1(C, HIDDEN, activation=None, generator=s),
        "ours_leaky_relu": lambda s: TransparentConv1x1(C, HIDDEN, activation="leaky_relu", generator=s),
        "authors_recipe_relu": lambda s: reference_recipe_(plain_stack(True), s),
    }
    for name, make in cases.items():
        stacks = [make(s) for s in range(seeds)]
        row = {"init_rate_median": statistics.median(100 * init_rate(m) for m in stacks)}
        for r in (1, 10, 100, 1000):
            errs = [max_abs_error(m, inputs(float(r), s, shape)) for s, m in enumerate(stacks)]
            recs = [100 * recovery_rate(m, inputs(float(r), s, shape)) for s, m in enumerate(stacks)]
            row[str(r)] = {
                "median": statistics.median(errs),
                "worst": max(errs),
                "recovery_median": statistics.median(recs),
            }
        out[name] = row
    depth = {}
    for k in (2, 3, 4, 5):
        errs, rates = [], []
        for s in range(seeds):
            m = TransparentConv1x1(C, [64] * (k - 1), activation="relu", generator=s)
            errs.append(max_abs_error(m, inputs(10.0, s, shape)))
            rates.append(100 * init_rate(m))
        depth[str(k)] = {"median": statistics.median(errs), "worst": max(errs), "init_rate_min": min(rates)}
    out["depth_relu_range10"] = depth
    return out


WIDTH_CASES = (  # (name, width, activation, negative_slope) of the width table
    ("42 relu", 42, "relu", None),
    ("256 relu", 256, "relu", None),
    ("1024 relu", 1024, "relu", None),
    ("1024 none", 1024, None, None),
    ("1024 leaky_relu 0.01", 1024, "leaky_relu", 0.01),
)
RANGES = (1, 10, 100, 1000)


def _orthogonal(n: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q


def widths(seeds: int, rows: int = 2048, max_width: int = 1024) -> dict:
    """Max ``|y - x|`` of ``TransparentLinear(w, [w, w])`` in float32 for inputs ``U[-r, r]`` of ``rows``
    vectors, median and worst over seeds, per width (up to ``max_width``) and activation; beside it the floor
    of float32 matrix products: three chained random orthogonal ``w x w`` products of the same inputs against
    float64."""
    out: dict = {}
    for name, width, act, slope in WIDTH_CASES:
        if width > max_width:
            continue
        stacks = [
            TransparentLinear(width, [width, width], activation=act, negative_slope=slope, generator=s)
            for s in range(seeds)
        ]
        row = {}
        for r in RANGES:
            errs = [max_abs_error(m, inputs(float(r), s, (rows, width))) for s, m in enumerate(stacks)]
            row[str(r)] = {"median": statistics.median(errs), "worst": max(errs)}
        out[name] = row
    floor: dict = {}
    for width in (w for w in (42, 256, 1024) if w <= max_width):
        errs = []
        for s in range(seeds):
            g = torch.Generator().manual_seed(20_000 + s)
            qs = [_orthogonal(width, g) for _ in range(3)]
            x = inputs(1.0, s, (rows, width))
            y32, y64 = x, x.double()
            for q in qs:
                y32, y64 = y32 @ q.float().t(), y64 @ q.t()
            errs.append(float((y32.double() - y64).abs().max()))
        floor[str(width)] = {"median": statistics.median(errs), "worst": max(errs)}
    out["matmul_floor_r1"] = floor
    return out


def _time_once(fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def cost(rounds: int, shape: tuple[int, ...] = (8, C, 128, 128)) -> dict:
    x = inputs(10.0, 0, shape)
    ours = TransparentConv1x1(C, HIDDEN, activation="relu", generator=0)
    plain = plain_stack(True)
    res: dict = {"input_shape": list(x.shape), "rounds": rounds}
    with torch.no_grad():
        for _ in range(2):  # warm-up
            ours(x), plain(x)
        # alternate the two, round by round, so both share the shared machine's noise; the ratio is the median
        # of the per-round ratios
        t_ours, t_plain = [], []
        for i in range(rounds):
            pair = [("ours", ours), ("plain", plain)] if i % 2 == 0 else [("plain", plain), ("ours", ours)]
            for name, m in pair:
                (t_ours if name == "ours" else t_plain).append(_time_once(lambda m=m: m(x), 2))
    res["forward_ms"] = {
        "transparent": 1e3 * statistics.median(t_ours),
        "plain_sequential": 1e3 * statistics.median(t_plain),
    }
    res["forward_ratio"] = statistics.median(a / b for a, b in zip(t_ours, t_plain, strict=True))
    build = []
    for _ in range(5):
        t0 = time.perf_counter()
        TransparentConv1x1(C, HIDDEN, activation="relu", generator=0)
        build.append(time.perf_counter() - t0)
    build_plain = []
    for _ in range(5):
        t0 = time.perf_counter()
        plain_stack(True)
        build_plain.append(time.perf_counter() - t0)
    res["build_ms"] = {
        "transparent": 1e3 * statistics.median(build),
        "plain_sequential": 1e3 * statistics.median(build_plain),
    }
    acts: list[int] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o: acts.append(o.numel() * o.element_size()))
        for m in ours.layers
    ]
    with torch.no_grad():
        ours(x)
    for h in hooks:
        h.remove()
    res["memory_mib"] = {
        "parameters_transparent": sum(p.numel() * p.element_size() for p in ours.parameters()) / 2**20,
        "parameters_plain": sum(p.numel() * p.element_size() for p in plain.parameters()) / 2**20,
        "activations_per_forward": sum(acts) / 2**20,
        "num_parameters": sum(p.numel() for p in ours.parameters()),
    }
    return res


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``python benchmarks/bench_transparent_init.py --help``)."""
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=None, help="seeds of every table (default: 10; quick 3)")
    ap.add_argument(
        "--quick", action="store_true", help="3 seeds, small inputs and short timings (smoke test)"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: benchmarks/results/transparent_init.json; --quick writes none unless "
        "given)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make (``ap.error`` on failure): positive counts, a writable ``--out``."""
    check_counts(ap, args, {"seeds": 1, "threads": 1})
    check_output(ap, "--out", args.out, default_in=None if args.quick else DEFAULT_OUT.parent)


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    torch.set_num_threads(args.threads)
    seeds = args.seeds if args.seeds is not None else (3 if args.quick else 10)  # given: with --quick too
    load0 = load_average()  # before this run: is the machine shared right now? (None: unknown, Windows)
    t0 = time.perf_counter()
    shape = QUICK_INPUT_SHAPE if args.quick else INPUT_SHAPE
    t2, t3 = table2(seeds, shape), table3(seeds, shape)
    tw = widths(seeds, 256, 256) if args.quick else widths(seeds)
    c = cost(3, (2, C, 64, 64)) if args.quick else cost(25)
    machine = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_at_start": load0,
    }

    print(
        f"== transparent init (torch {torch.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} threads, "
        f"{seeds} seeds) =="
    )
    print("\nTable 2 (42-[64,64]-42 stacks, inputs U[-10,10], recovery = % within 1e-4; medians over seeds)")
    print(f"{'method':<10}{'init rate %':>13}{'rec. no ReLU %':>16}{'rec. ReLU %':>13}{'non-square %':>14}")
    for m, r in t2.items():
        print(
            f"{m:<10}{r['init_rate']:>13.3f}{r['recovery_no_relu']:>16.2f}{r['recovery_relu']:>13.2f}"
            f"{r['non_square_recovery']:>14.2f}"
        )
    print(f"{'paper ours':<10}{99.9:>13.3f}{100.0:>16.2f}{100.0:>13.2f}{'yes':>14}")

    print(
        f"\nTable 3 (max |y - x|, float32, inputs U[-r, r] of shape {list(shape)}: median [worst] over seeds)"
    )
    print(f"{'case':<22}" + "".join(f"{'r=' + str(r):>22}" for r in (1, 10, 100, 1000)))
    for name in ("ours_relu", "ours_none", "ours_leaky_relu", "authors_recipe_relu"):
        row = t3[name]
        print(
            f"{name:<22}"
            + "".join(
                f"{row[str(r)]['median']:>12.2e} [{row[str(r)]['worst']:.1e}]" for r in (1, 10, 100, 1000)
            )
        )
    print(f"{'paper':<22}" + "".join(f"{PAPER_T3[r]:>12.1e}{'':>10}" for r in (1, 10, 100, 1000)))
    print(
        "depth (ReLU, r=10): "
        + ", ".join(
            f"k={k}: {v['median']:.2e} [{v['worst']:.1e}], init >= {v['init_rate_min']:.3f} %"
            for k, v in t3["depth_relu_range10"].items()
        )
    )

    print("\nWidths (TransparentLinear(w, [w, w]), float32, inputs U[-r, r]: median [worst] over seeds)")
    print(f"{'case':<22}" + "".join(f"{'r=' + str(r):>22}" for r in RANGES))
    for name in (name for name, *_ in WIDTH_CASES if name in tw):
        print(
            f"{name:<22}"
            + "".join(
                f"{tw[name][str(r)]['median']:>12.2e} [{tw[name][str(r)]['worst']:.1e}]" for r in RANGES
            )
        )
    print(
        "float32 matmul floor (3 chained orthogonal products, r=1): "
        + ", ".join(f"w={w}: {v['median']:.2e} [{v['worst']:.1e}]" for w, v in tw["matmul_floor_r1"].items())
    )
    print(f"\nCost (input {c['input_shape']}, no_grad forward, median)")
    print(
        f"  forward: transparent {c['forward_ms']['transparent']:.2f} ms, plain nn.Sequential "
        f"{c['forward_ms']['plain_sequential']:.2f} ms, ratio {c['forward_ratio']:.3f}"
    )
    print(
        f"  build:   transparent {c['build_ms']['transparent']:.2f} ms, "
        f"plain {c['build_ms']['plain_sequential']:.2f} ms"
    )
    mem = c["memory_mib"]
    print(
        f"  memory:  parameters {mem['parameters_transparent']:.3f} MiB "
        f"(plain {mem['parameters_plain']:.3f} MiB, "
        f"{mem['num_parameters']} params), activations per forward {mem['activations_per_forward']:.1f} MiB"
    )
    result = {
        "machine": machine,
        "seeds": seeds,
        "input_shape": list(shape),
        "table2": t2,
        "paper_table2": PAPER_T2,
        "table3": t3,
        "widths": tw,
        "paper_table3": {str(k): v for k, v in PAPER_T3.items()},
        "cost": c,
        "seconds": time.perf_counter() - t0,
    }
    print(f"\nmeasured in {result['seconds']:.0f} s")
    out = result_path(args.out, DEFAULT_OUT, args.quick)
    if out is None:
        return 0
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback
    raise SystemExit(run_script(main, "bench_transparent_init.py"))
