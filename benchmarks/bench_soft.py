"""Benchmark: soft superpixel pool + unpool (forward + backward), and SegNet unpooling.

Soft association (B=4, 512x512, cell 16, C in {2, 21, 23}), three exact implementations of
``unpool(pool(x))`` differentiated w.r.t. the features and the association:

* ``block`` -- the library (:func:`sparse_ops.soft_uniformize`, dense per-cell matrix products);
* ``nine_shift`` -- a straightforward 9-shift implementation written here after the public SpixelFCN
  recipe (per direction: multiply by the association channel, average-pool by the cell size, shift to the
  neighbour cell; unpool: shift back, nearest-upsample, weight, sum);
* ``scatter`` -- the "sparse machinery" formulation: 9 non-zeros per pixel, ``index_add`` over flattened
  global cell ids and ``index_select`` back.

All three use the same border convention (``renormalize=False`` in the library) and are checked to agree
(outputs and both gradients, float64, on the benchmark's device) before timing. SegNet:
:func:`sparse_ops.max_unpool2d` vs ``nn.MaxUnpool2d`` (forward + backward), checked first to give the same
output and gradient, exactly.

Memory: on the CPU the table's figure is the peak of the tensor bytes live at once during one run
(``peak_tensor_mib``, PyTorch's CPU allocator, ``_harness.tensor_peak_mib``: the same in every process); on
CUDA ``torch.cuda.max_memory_allocated`` above the inputs. Every configuration runs in a fresh subprocess, so
that the JSON also keeps its peak resident memory (the growth of the peak resident set size above the
resident size when the measurement starts, ``peak_rss_growth_mib``; it moves by 10-40 MiB with the process's
history; ``--in-process``: all in this process, as the GPU check does, and no such figure). Medians over
repeats after one warm-up run (three on CUDA), timed with ``time.perf_counter`` on the CPU and CUDA events
on CUDA (``benchmarks/_harness.py``); ``torch.set_num_threads(2)`` (``--threads``). The SegNet unpoolings
take a few milliseconds, so they run 50 times each, and a further measurement alternates the two and
reports the median of the per-round ratios (robust to the drift of a shared machine).

Usage::

    python benchmarks/bench_soft.py            # full run, writes benchmarks/results/soft_<UTC date-time>.json
    python benchmarks/bench_soft.py --quick    # smoke run on small shapes (no JSON unless --out)
    python benchmarks/bench_soft.py --device cuda --batch-size 8 --in-process --out soft_cuda.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# imports after the path set-up: noqa E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _atomic import RESULTS, result_path, stamped_result, write_json  # noqa: E402
from _harness import (  # noqa: E402
    PeakMemory,
    cell,
    check_counts,
    check_output,
    cli_device,
    environment,
    memory_fields,
    nan_max,
    paired_times,
    peak_mib,
    run_script,
    time_ms,
    warmup_runs,
)
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
    return soft_uniformize(x, assoc, S, renormalize=False, validate=False)  # the op alone, no value checks


SOFT_IMPLS = {"block": block_uniformize, "nine_shift": nine_shift_uniformize, "scatter": scatter_uniformize}


# ------------------------------------------------------------------------------------------- workers
def worker_soft(
    impl: str,
    B: int,
    C: int,
    H: int,
    W: int,
    S: int,
    repeats: int,
    device: str = "cpu",
    fresh_process: bool = True,
) -> dict:
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g).to(dev).requires_grad_()
    logits = torch.randn(B, 9, H, W, generator=g).to(dev)
    assoc = normalize_assoc(torch.softmax(logits, 1), S).requires_grad_()
    grad = torch.randn(B, C, H, W, generator=g).to(dev)
    fn = SOFT_IMPLS[impl]
    memory = PeakMemory(dev)

    def step():
        x.grad = assoc.grad = None
        out = fn(x, assoc, S)
        out.backward(grad)

    times = time_ms(step, repeats, warmup=warmup_runs(dev), device=dev)
    return {
        "impl": impl,
        "C": C,
        "median_ms": statistics.median(times),
        "times_ms": times,
        **memory_fields(memory, fresh_process, step),
    }


def _unpool_steps(B: int, C: int, H: int, W: int, device: torch.device) -> dict[str, Callable[[], None]]:
    """One forward+backward closure per SegNet unpooling, on the same pooled values, indices and gradient."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, C, H, W, generator=g).to(device)
    v, i = F.max_pool2d(x, 2, return_indices=True)
    v.requires_grad_()
    grad = torch.randn(B, C, H, W, generator=g).to(device)
    mod = nn.MaxUnpool2d(2)

    def ours():
        v.grad = None
        max_unpool2d(v, i, (H, W)).backward(grad)

    def theirs():
        v.grad = None
        mod(v, i, output_size=(H, W)).backward(grad)

    return {"max_unpool2d": ours, "nn.MaxUnpool2d": theirs}


def worker_unpool(
    impl: str, B: int, C: int, H: int, W: int, repeats: int, device: str = "cpu", fresh_process: bool = True
) -> dict:
    dev = torch.device(device)
    step = _unpool_steps(B, C, H, W, dev)[impl]
    memory = PeakMemory(dev)
    times = time_ms(step, repeats, warmup=warmup_runs(dev), device=dev)
    return {
        "impl": impl,
        "C": C,
        "median_ms": statistics.median(times),
        "times_ms": times,
        **memory_fields(memory, fresh_process, step),
    }


def worker_unpool_paired(B: int, C: int, H: int, W: int, repeats: int, device: str = "cpu") -> dict:
    """Both unpoolings alternated in one process: the median of the per-round time ratios (drift-robust)."""
    dev = torch.device(device)
    steps = _unpool_steps(B, C, H, W, dev)
    ours, theirs = steps["max_unpool2d"], steps["nn.MaxUnpool2d"]
    for _ in range(warmup_runs(dev)):  # warm-up each, then every round times one run of each
        ours()
        theirs()
    t_ours, t_theirs = paired_times(ours, theirs, repeats, device=dev)
    ratios = [o / t for o, t in zip(t_ours, t_theirs, strict=True)]
    return {"paired_ratio_to_nn": statistics.median(ratios), "repeats": repeats}


def check_agreement(S: int = 4, device: str = "cpu") -> float:
    """Max ``|impl - block|`` over the three implementations' outputs and their gradients w.r.t. the features
    and the association (what is timed), in float64; NaN where any of them is NaN."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 20, generator=g, dtype=torch.float64).to(device).requires_grad_()
    logits = torch.randn(2, 9, 16, 20, generator=g, dtype=torch.float64).to(device)
    a = normalize_assoc(torch.softmax(logits, 1), S).requires_grad_()
    grad = torch.randn(2, 3, 16, 20, generator=g, dtype=torch.float64).to(device)
    outs = []
    for f in SOFT_IMPLS.values():
        out = f(x, a, S)
        grad_x, grad_a = torch.autograd.grad(out, (x, a), grad)
        outs.append(torch.cat([out.detach().flatten(), grad_x.flatten(), grad_a.flatten()]))
    return nan_max([float((o - outs[0]).abs().max()) for o in outs])  # (the first difference is 0.0)


def check_unpool_agreement(device: str = "cpu") -> bool:
    """Whether ``max_unpool2d`` and ``nn.MaxUnpool2d`` give the same output and the same gradient w.r.t. the
    values, exactly (both scatter the same values to the same places), on small seeded inputs."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 16, 20, generator=g).to(device)
    values, indices = F.max_pool2d(x, 2, return_indices=True)
    grad = torch.randn(2, 3, 16, 20, generator=g).to(device)
    unpools = (
        lambda v: max_unpool2d(v, indices, (16, 20)),
        lambda v: nn.MaxUnpool2d(2)(v, indices, output_size=(16, 20)),
    )
    results = []
    for unpool in unpools:
        leaf = values.detach().requires_grad_()
        out = unpool(leaf)
        (grad_v,) = torch.autograd.grad(out, leaf, grad)
        results.append((out.detach(), grad_v))
    (out_a, grad_a), (out_b, grad_b) = results
    return torch.equal(out_a, out_b) and torch.equal(grad_a, grad_b)


WORKERS: dict[str, Callable[..., dict]] = {
    "soft": worker_soft,
    "unpool": worker_unpool,
    "unpool_paired": worker_unpool_paired,
}
_CASTS: dict[str, tuple[type, ...]] = {  # argument types of each worker after its kind, from the command line
    "soft": (str, int, int, int, int, int, int),
    "unpool": (str, int, int, int, int, int),
    "unpool_paired": (int, int, int, int, int),
}


# ------------------------------------------------------------------------------------------- driver
def _run_worker(args: argparse.Namespace, params: list[Any]) -> dict:
    """Run one worker (``params = [kind, *arguments]``) in this process or in a fresh subprocess."""
    kind, *rest = params
    if args.in_process:
        try:
            extra = {} if kind == "unpool_paired" else {"fresh_process": False}
            return WORKERS[kind](*rest, device=args.device, **extra)
        finally:
            gc.collect()
            if torch.device(args.device).type == "cuda":
                torch.cuda.empty_cache()
    cmd = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads)]
    cmd += ["--worker", *map(str, params)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:  # the worker's own error, not a CalledProcessError without its stderr
        last = res.stderr.strip().splitlines()[-1:] or ["no message"]
        raise SystemExit(
            f"bench_soft.py: the worker {' '.join(map(str, params))} failed "
            f"(exit status {res.returncode}): {last[0]}"
        )
    return json.loads(res.stdout.strip().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``python benchmarks/bench_soft.py --help``)."""
    ap = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats (smoke test)")
    ap.add_argument(
        "--repeats", type=int, default=None, help="timed runs per implementation (default: 5; quick 2)"
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ap.add_argument("--batch-size", type=int, default=None, help="B (default: 4; quick 1)")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch.set_num_threads (here and in every worker; default 2)"
    )
    ap.add_argument(
        "--in-process",
        action="store_true",
        help="measure everything in this process (no fresh subprocess each; no CPU memory figure)",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: benchmarks/results/soft_<UTC date-time>.json, never a committed file)",
    )
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make (``ap.error`` on failure): positive counts, a writable ``--out``."""
    check_counts(ap, args, dict.fromkeys(("repeats", "batch_size", "threads"), 1))
    check_output(ap, "--out", args.out, default_in=None if args.quick or args.worker else RESULTS)


def main(argv: list[str] | None = None) -> dict:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    torch.set_num_threads(args.threads)
    device = cli_device(ap, args.device)

    if args.worker:
        kind, *rest = args.worker
        values = [cast(v) for cast, v in zip(_CASTS[kind], rest, strict=True)]
        print(json.dumps(WORKERS[kind](*values, device=args.device)))
        return {}

    if args.quick:
        B, H, W, S, Cs, repeats = 1, 64, 64, 16, (2, 21), 2
    else:
        B, H, W, S, Cs, repeats = 4, 512, 512, 16, (2, 21, 23), 5
    if args.repeats is not None:  # given: also with --quick (it was ignored there)
        repeats = args.repeats
    if args.batch_size is not None:
        B = args.batch_size
    env = environment(device, torch.get_num_threads())  # load average before this run: is the machine shared?
    max_diff = check_agreement(device=args.device)
    print(f"agreement of the three soft implementations (float64): max |diff| = {max_diff:.2e}")
    if not max_diff < 1e-10:
        raise SystemExit(f"the three soft implementations disagree: max |diff| = {max_diff:.3e} >= 1e-10")
    if not check_unpool_agreement(args.device):
        raise SystemExit("max_unpool2d and nn.MaxUnpool2d disagree (output or gradient): not timed")
    print("max_unpool2d and nn.MaxUnpool2d: the same output and gradient (exact)")

    mem_name = "CUDA MiB" if device.type == "cuda" else "peak MiB"
    soft_rows = []
    print(
        f"\nsoft pool+unpool fwd+bwd, B={B}, {H}x{W}, cell {S}, {args.device}, medians of {repeats} (ms), "
        f"peak {'CUDA memory above the inputs' if device.type == 'cuda' else 'tensor bytes live at once'} "
        "(MiB)"
    )
    print(f"{'C':>3} {'impl':>11} {'median ms':>10} {'vs block':>9} {mem_name:>9}", flush=True)
    for C in Cs:
        rows = {impl: _run_worker(args, ["soft", impl, B, C, H, W, S, repeats]) for impl in SOFT_IMPLS}
        for impl, r in rows.items():
            r["ratio_to_block"] = r["median_ms"] / rows["block"]["median_ms"]
            soft_rows.append(r)
            print(
                f"{C:>3} {impl:>11} {r['median_ms']:>10.1f} {r['ratio_to_block']:>8.2f}x "
                f"{cell(peak_mib(r), '>9.0f')}",
                flush=True,
            )

    uC = 21 if not args.quick else 4
    uH = 256 if not args.quick else 32
    u_repeats = 3 if args.quick else 50  # a few ms each: many runs are cheap and steady the medians
    print(f"\nSegNet unpool fwd+bwd, B={B}, C={uC}, {uH}x{uH}, kernel 2, medians of {u_repeats}")
    unpool_rows = {
        impl: _run_worker(args, ["unpool", impl, B, uC, uH, uH, u_repeats])
        for impl in ("max_unpool2d", "nn.MaxUnpool2d")
    }
    for impl, r in unpool_rows.items():
        r["ratio_to_nn"] = r["median_ms"] / unpool_rows["nn.MaxUnpool2d"]["median_ms"]
        print(
            f"{impl:>15} {r['median_ms']:>8.2f} ms {r['ratio_to_nn']:>6.2f}x {cell(peak_mib(r), '>6.0f')} MiB"
        )
    paired = _run_worker(args, ["unpool_paired", B, uC, uH, uH, u_repeats])
    print(
        f"paired (both alternated in one process): max_unpool2d / nn.MaxUnpool2d = "
        f"{paired['paired_ratio_to_nn']:.2f}x"
    )

    machine = f"{env['cpu_model']}, {env['cpus']} cores, {env['threads']} threads"
    if device.type == "cuda":
        machine = f"{env['cuda_device']} (CUDA {env['cuda_runtime']}); {machine}"
    result = {
        "machine": machine,
        "device": args.device,
        "in_process": args.in_process,
        "load_average_at_start": env["load_average_at_start"],
        "torch": torch.__version__,
        "python": env["python"],
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
    out = result_path(args.out, stamped_result("soft"), args.quick)
    if out is not None:
        write_json(out, result)
        print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback,
    # the measuring child killed
    raise SystemExit(run_script(main, "bench_soft.py"))
