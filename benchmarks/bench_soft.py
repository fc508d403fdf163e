"""Benchmark: soft superpixel pool + unpool (forward + backward), and SegNet unpooling.

Soft association (B=4, 512x512, cell 16, C in {2, 21, 23}), three exact implementations of
``unpool(pool(x))`` differentiated w.r.t. the features and the association:

* ``block`` -- the library (:func:`sparse_ops.soft_uniformize`, dense per-cell matrix products);
* ``nine_shift`` -- a straightforward 9-shift implementation written here after the public SpixelFCN recipe
  (per direction: multiply by the association channel, average-pool by the cell size, shift to the neighbour
  cell; unpool: shift back, nearest-upsample, weight, sum);
* ``scatter`` -- the "sparse machinery" formulation: 9 non-zeros per pixel, ``index_add`` over flattened global
  cell ids and ``index_select`` back.

All three use the same border convention (``renormalize=False`` in the library) and are checked to agree before
timing. SegNet: :func:`sparse_ops.max_unpool2d` vs ``nn.MaxUnpool2d`` (forward + backward).

Every configuration runs in a fresh subprocess so that its peak resident memory (``ru_maxrss`` growth) can be
reported. Medians over repeats; ``torch.set_num_threads(2)``. The SegNet unpoolings take a few milliseconds, so
they run 50 times each, and a further process alternates the two and reports the median of the per-round ratios
(robust to the drift of a shared machine).

Usage::

    python benchmarks/bench_soft.py            # full run, writes benchmarks/results/soft.json
    python benchmarks/bench_soft.py --quick    # smoke run on small shapes (no JSON unless --out)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from sparse_ops import max_unpool2d, neighbour_cell_ids, normalize_assoc, soft_uniformize  # noqa: E402
from sparse_ops.grid import NEIGHBOUR_OFFSETS  # noqa: E402


# ------------------------------------------------------------------------------------------- alternatives
def nine_shift_uniformize(x: torch.Tensor, assoc: torch.Tensor, S: int) -> torch.Tensor:
    """Baseline: 9 x (weight, avg-pool, shift) then 9 x (shift, upsample, weight). H, W multiples of S."""
    B, C, H, W = x.shape
    n_h, n_w = H // S, W // S
    xo = torch.cat([x, x.new_ones(B, 1, H, W)], 1)
    acc = None
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        pooled = F.avg_pool2d(xo * assoc[:, k : k + 1], S)
        shifted = F.pad(pooled, (1 + dx, 1 - dx, 1 + dy, 1 - dy))
        acc = shifted if acc is None else acc + shifted
    acc = acc[:, :, 1 : 1 + n_h, 1 : 1 + n_w]
    mass = acc[:, C:]
    centres = torch.where(mass > 0, acc[:, :C] / torch.where(mass > 0, mass, torch.ones_like(mass)), 0.0)
    padded = F.pad(centres, (1, 1, 1, 1))
    out = None
    for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS):
        neigh = padded[:, :, 1 + dy : 1 + dy + n_h, 1 + dx : 1 + dx + n_w]
        term = F.interpolate(neigh, scale_factor=S, mode="nearest") * assoc[:, k : k + 1]
        out = term if out is None else out + term
    return out


def scatter_uniformize(x: torch.Tensor, assoc: torch.Tensor, S: int) -> torch.Tensor:
    """9 non-zeros per pixel: index_add over flattened global cell ids, index_select back (per image, to keep
    the ``[9, H W, C]`` temporaries under the memory budget)."""
    return torch.cat([_scatter_uniformize(x[b : b + 1], assoc[b : b + 1], S) for b in range(x.shape[0])])


def _scatter_uniformize(x: torch.Tensor, assoc: torch.Tensor, S: int) -> torch.Tensor:
    B, C, H, W = x.shape
    ids, valid = neighbour_cell_ids(H, W, S, device=x.device)
    n = int(ids.max()) + 1
    w = assoc * valid.to(assoc.dtype)  # [B, 9, H, W]
    gid = (ids.reshape(1, 9, H * W) + n * torch.arange(B, device=x.device).view(B, 1, 1)).reshape(-1)
    contrib = (x.reshape(B, 1, C, H * W) * w.reshape(B, 9, 1, H * W)).permute(0, 1, 3, 2).reshape(-1, C)
    num = x.new_zeros(B * n, C).index_add(0, gid, contrib)
    mass = x.new_zeros(B * n).index_add(0, gid, w.reshape(-1))
    centres = torch.where(mass[:, None] > 0, num / torch.where(mass > 0, mass, 1.0)[:, None], 0.0)
    picked = centres.index_select(0, gid).reshape(B, 9, H * W, C)
    out = (picked * w.reshape(B, 9, H * W, 1)).sum(1)
    return out.permute(0, 2, 1).reshape(B, C, H, W)


def block_uniformize(x: torch.Tensor, assoc: torch.Tensor, S: int) -> torch.Tensor:
    return soft_uniformize(x, assoc, S, renormalize=False)


SOFT_IMPLS = {"block": block_uniformize, "nine_shift": nine_shift_uniformize, "scatter": scatter_uniformize}


# ------------------------------------------------------------------------------------------- workers
def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _time(fn, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def worker_soft(impl: str, B: int, C: int, H: int, W: int, S: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g).requires_grad_()
    logits = torch.randn(B, 9, H, W, generator=g)
    assoc = normalize_assoc(torch.softmax(logits, 1), S).requires_grad_()
    grad = torch.randn(B, C, H, W, generator=g)
    fn = SOFT_IMPLS[impl]
    base = _peak_mib()

    def step():
        x.grad = assoc.grad = None
        out = fn(x, assoc, S)
        out.backward(grad)

    times = _time(step, repeats)
    return {
        "impl": impl,
        "C": C,
        "median_ms": 1e3 * statistics.median(times),
        "times_ms": [1e3 * t for t in times],
        "peak_rss_growth_mib": _peak_mib() - base,
    }


def _unpool_steps(B: int, C: int, H: int, W: int) -> dict:
    """One forward+backward closure per SegNet unpooling, on the same pooled values, indices and gradient."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g)
    v, i = F.max_pool2d(x, 2, return_indices=True)
    v.requires_grad_()
    grad = torch.randn(B, C, H, W, generator=g)
    mod = nn.MaxUnpool2d(2)

    def ours():
        v.grad = None
        max_unpool2d(v, i, (H, W)).backward(grad)

    def theirs():
        v.grad = None
        mod(v, i, output_size=(H, W)).backward(grad)

    return {"max_unpool2d": ours, "nn.MaxUnpool2d": theirs}


def worker_unpool(impl: str, B: int, C: int, H: int, W: int, repeats: int) -> dict:
    step = _unpool_steps(B, C, H, W)[impl]
    base = _peak_mib()
    times = _time(step, repeats)
    return {
        "impl": impl,
        "C": C,
        "median_ms": 1e3 * statistics.median(times),
        "times_ms": [1e3 * t for t in times],
        "peak_rss_growth_mib": _peak_mib() - base,
    }


def worker_unpool_paired(B: int, C: int, H: int, W: int, repeats: int) -> dict:
    """Both unpoolings alternated in one process: the median of the per-round time ratios (robust to drift)."""
    steps = _unpool_steps(B, C, H, W)
    ours, theirs = steps["max_unpool2d"], steps["nn.MaxUnpool2d"]
    ours()  # one warm-up each, then every round times one run of each
    theirs()
    ratios = [_time(ours, 1, warmup=0)[0] / _time(theirs, 1, warmup=0)[0] for _ in range(repeats)]
    return {"paired_ratio_to_nn": statistics.median(ratios), "repeats": repeats}


def check_agreement(S: int = 4) -> float:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 20, generator=g, dtype=torch.float64)
    a = normalize_assoc(torch.softmax(torch.randn(2, 9, 16, 20, generator=g, dtype=torch.float64), 1), S)
    outs = [f(x, a, S) for f in SOFT_IMPLS.values()]
    return max(float((o - outs[0]).abs().max()) for o in outs)


# ------------------------------------------------------------------------------------------- driver
def _run_worker(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke test)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON path (default: benchmarks/results/soft.json)"
    )
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(2)

    if args.worker:
        kind, *rest = args.worker
        if kind == "soft":
            impl, B, C, H, W, S, r = rest
            out = worker_soft(impl, int(B), int(C), int(H), int(W), int(S), int(r))
        elif kind == "unpool":
            impl, B, C, H, W, r = rest
            out = worker_unpool(impl, int(B), int(C), int(H), int(W), int(r))
        else:
            B, C, H, W, r = rest
            out = worker_unpool_paired(int(B), int(C), int(H), int(W), int(r))
        print(json.dumps(out))
        return

    if args.quick:
        B, H, W, S, Cs, repeats = 1, 64, 64, 16, (2, 21), 2
    else:
        B, H, W, S, Cs, repeats = 4, 512, 512, 16, (2, 21, 23), args.repeats
    load0 = os.getloadavg()[0]  # the 1-minute load average before this run: is the machine shared right now?
    max_diff = check_agreement()
    print(f"agreement of the three soft implementations (float64): max |diff| = {max_diff:.2e}")
    assert max_diff < 1e-10, max_diff

    soft_rows = []
    print(
        f"\nsoft pool+unpool fwd+bwd, B={B}, {H}x{W}, cell {S}, medians of {repeats} (ms), peak RSS growth (MiB)"
    )
    print(f"{'C':>3} {'impl':>11} {'median ms':>10} {'vs block':>9} {'peak MiB':>9}")
    for C in Cs:
        rows = {
            impl: _run_worker(["soft", impl, str(B), str(C), str(H), str(W), str(S), str(repeats)])
            for impl in SOFT_IMPLS
        }
        for impl, r in rows.items():
            r["ratio_to_block"] = r["median_ms"] / rows["block"]["median_ms"]
            soft_rows.append(r)
            print(
                f"{C:>3} {impl:>11} {r['median_ms']:>10.1f} {r['ratio_to_block']:>8.2f}x "
                f"{r['peak_rss_growth_mib']:>9.0f}"
            )

    uC = 21 if not args.quick else 4
    uH = 256 if not args.quick else 32
    u_repeats = 3 if args.quick else 50  # a few ms each: many runs are cheap and steady the medians
    print(f"\nSegNet unpool fwd+bwd, B={B}, C={uC}, {uH}x{uH}, kernel 2, medians of {u_repeats}")
    unpool_rows = {
        impl: _run_worker(["unpool", impl, str(B), str(uC), str(uH), str(uH), str(u_repeats)])
        for impl in ("max_unpool2d", "nn.MaxUnpool2d")
    }
    for impl, r in unpool_rows.items():
        r["ratio_to_nn"] = r["median_ms"] / unpool_rows["nn.MaxUnpool2d"]["median_ms"]
        print(
            f"{impl:>15} {r['median_ms']:>8.2f} ms {r['ratio_to_nn']:>6.2f}x {r['peak_rss_growth_mib']:>6.0f} MiB"
        )
    paired = _run_worker(["unpool_paired", str(B), str(uC), str(uH), str(uH), str(u_repeats)])
    print(
        f"paired (both alternated in one process): max_unpool2d / nn.MaxUnpool2d = "
        f"{paired['paired_ratio_to_nn']:.2f}x"
    )

    result = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
        "load_average_at_start": load0,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "soft": {
            "B": B,
            "H": H,
            "W": W,
            "cell_size": S,
            "repeats": repeats,
            "max_abs_diff_f64": max_diff,
            "rows": soft_rows,
        },
        "segnet_unpool": {
            "B": B,
            "C": uC,
            "H": uH,
            "W": uH,
            "rows": list(unpool_rows.values()),
            "paired_ratio_to_nn": paired["paired_ratio_to_nn"],
        },
    }
    out = args.out or (None if args.quick else ROOT / "benchmarks" / "results" / "soft.json")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
