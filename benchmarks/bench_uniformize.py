"""Benchmark superpixel uniformization (paper Eq. 12-13): our backends against the alternatives, same run.

Op: ``y[b, :, p] = mean of x[b, :, q] over the pixels q of p's superpixel``, forward and forward+backward
w.r.t. ``x``, at B=4, C=21, 512x512 for N_s in {256, 1024, 4096, 16384} (square cells) and an irregular
SLIC-like label map (Voronoi cells of jittered grid seeds, N_s=1024). Variants:

* ``floor``: ``y = x * 1`` through autograd -- not the op, the cost of allocating and writing ``y`` and
  ``grad_x``;
* ``copy``: device-to-device copies of the same bytes into buffers allocated beforehand, without autograd
  (forward: ``x`` into ``y``; forward+backward: also ``grad_y`` into ``grad_x``) -- the bandwidth limit;
* ``scatter`` (our default, ``backend="auto"`` resolves to it on every device) and ``sparse`` (CSR matrices):
  :class:`sparse_ops.SuperpixelAssignment` built once from the labels ("setup"), then ``.uniformize(x)``;
* ``sparse_coo``: the same batched sparse-matmul formulation with COO matrices from
  ``SuperpixelAssignment.to_sparse``: ``y = M^T (E x)``, two ``torch.sparse.mm`` (matrices built in setup);
* ``paper_coo``: the paper's approach as its authors coded it: per image, a COO ``torch.sparse.mm`` encoder
  (divided by the counts) and decoder, the matrices rebuilt on every call (so its setup is inside fwd);
* ``dense_bmm``: a one-hot ``[B, N_s, N_p]`` float mask and two ``bmm``; skipped above ``--dense-max-gb``;
* ``torch_scatter``: ``scatter_mean`` + ``gather`` when the package is importable (no wheel exists for recent
  torch releases; ``pip install --no-build-isolation torch-scatter`` builds it from source in about 5 minutes
  on 2 cores).

The CPU default runs ``floor, scatter, sparse, paper_coo, dense_bmm, torch_scatter``; the CUDA default runs
every variant. Every (config, variant) runs in a fresh subprocess (``--in-process``: all in this process,
as the GPU check does; CPU memory figures are then not reported). Times are medians of ``--repeats`` runs
(half as many, at least 3, for the slow sparse, paper and dense variants) after warm-up (one run on the CPU,
three on CUDA), timed with ``time.perf_counter`` on the CPU and CUDA events on CUDA
(``benchmarks/_harness.py``).
Because the machine may be shared, the ``scatter`` measurement also runs ``--repeats`` pairs of one
forward+backward of the floor and one of the op (in alternating order) and reports the median of the
per-pair ratios ("paired x floor", the samples under ``paired_ratios``), which is robust to load that comes
and goes. Peak extra memory (``peak_extra_mb``, in MiB): on Linux the peak resident set size above the
resident size right after the inputs (x, grad_y, labels) are allocated, the peak reset there, up to the end of
the timed runs (setup included; ``memory_method`` says how it was measured, see ``benchmarks/_harness.py``);
on CUDA ``torch.cuda.max_memory_allocated()`` minus the memory allocated after the inputs. On the CPU also
``peak_tensor_mib`` ("tensors MiB"): the peak of the tensor bytes live at once during one setup and forward +
backward (PyTorch's CPU allocator, ``_harness.tensor_peak_mib``), the same in every process, where the
resident-set growth moves by 10-40 MiB with the process's history. Compare ratios within one run. After its
timing, each variant but ``floor`` and ``copy`` is compared with the float64 result
of the op, its output and its input gradient ("max err": the larger of ``max_abs_err`` and
``max_abs_err_grad``); one above ``ERROR_TOLERANCE`` (1e-5) or NaN ends the run with an error naming it.

Usage::

    python benchmarks/bench_uniformize.py            # full table, CPU, 5-10 minutes on a shared 2-core VM
    python benchmarks/bench_uniformize.py --threads 1 --variants floor,scatter   # less load-sensitive ratio
    python benchmarks/bench_uniformize.py --quick    # small smoke configuration (no JSON unless --out)
    python benchmarks/bench_uniformize.py --device cuda --in-process --batch-size 8 \\
        --num-superpixels 1024,4096,16384 --no-voronoi                       # the GPU check's table

After the per-variant table, a last measurement runs the default backend at every configuration in one
process, round-robin (``run_sweep``): that is the figure for "time flat in ``N_s``", since it is not moved by
the drifts of a shared machine between subprocesses started minutes apart (``--no-sweep`` skips it).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _atomic import RESULTS, result_path, stamped_result, write_json  # noqa: E402
from _harness import (  # noqa: E402 (after the path set-up)
    PeakMemory,
    cell,
    check_counts,
    check_lists,
    check_output,
    cli_device,
    environment,
    median,
    nan_max,
    run_script,
    tensor_peak_mib,
    time_ms,
)

VARIANTS = ["floor", "copy", "scatter", "sparse", "sparse_coo", "paper_coo", "dense_bmm", "torch_scatter"]
DEFAULT_VARIANTS = {
    "cpu": ["floor", "scatter", "sparse", "paper_coo", "dense_bmm", "torch_scatter"],
    "cuda": VARIANTS,
}
SLOW = ("sparse", "sparse_coo", "paper_coo", "dense_bmm")  # 3-40x slower on the CPU: fewer runs
NOT_THE_OP = ("floor", "copy")  # reference costs: no setup, no correctness check
#: Largest max |float32 output - float64 reference| a variant may show (they measure about 2e-7): above it (or
#: NaN) the run names the variant and ends with an error after its table, so that a wrong op is not a result.
ERROR_TOLERANCE = 1e-5


def make_labels(kind: str, b: int, h: int, w: int, n_s: int, seed: int = 0):
    """Square cells (``grid``) or Voronoi cells of jittered grid seeds (``voronoi``), ids in [0, n_s)."""
    import numpy as np
    import torch

    side = round(n_s**0.5)
    if kind == "grid":
        ch, cw = -(-h // side), -(-w // side)
        ids = (np.arange(h)[:, None] // ch) * side + np.arange(w)[None, :] // cw
        return torch.from_numpy(np.broadcast_to(ids, (b, h, w)).copy())
    from scipy.spatial import cKDTree

    g = np.random.default_rng(seed)
    out = []
    for _ in range(b):
        gy, gx = np.meshgrid(
            (np.arange(side) + 0.5) * h / side, (np.arange(side) + 0.5) * w / side, indexing="ij"
        )
        seeds = np.stack([gy.ravel(), gx.ravel()], 1) + g.uniform(-0.4, 0.4, (side * side, 2)) * [
            h / side,
            w / side,
        ]
        py, px = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        _, ids = cKDTree(seeds).query(np.stack([py.ravel(), px.ravel()], 1))
        out.append(ids.reshape(h, w))
    return torch.from_numpy(np.stack(out).astype(np.int64))


def run_one(
    cfg: dict,
    variant: str,
    device: str,
    repeats: int,
    dense_max_gb: float,
    paired: bool = True,
    fresh_process: bool = True,
) -> dict:
    """Measure one variant (in a fresh process unless ``fresh_process=False``: no CPU memory figure then)."""
    import torch

    torch.set_num_threads(cfg.get("threads", 2))
    from sparse_ops import SuperpixelAssignment

    b, c, h, w, n_s = cfg["B"], cfg["C"], cfg["H"], cfg["W"], cfg["N_s"]
    n_p = h * w
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "dense_bmm":
        need = b * n_s * n_p * 4 / 1e9
        if need > dense_max_gb:
            return {"skipped": f"needs {need:.1f} GB > budget {dense_max_gb:g} GB (--dense-max-gb)"}
    if variant == "torch_scatter":
        try:
            import torch_scatter  # noqa: F401 (availability check)
        except ImportError:
            return {"skipped": "not installed"}

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    warmup = (
        3 if cuda else 1
    )  # CUDA: cuSPARSE / cuBLAS handles, allocator and caches settle in the first runs
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen).to(dev).requires_grad_()
    gy = torch.randn(b, c, h, w, generator=gen).to(dev)
    sp = make_labels(cfg["labels"], b, h, w, n_s).to(dev)
    memory = PeakMemory(dev)

    def setup():
        if variant in ("scatter", "sparse"):
            a = SuperpixelAssignment(sp, n_s, backend=variant, validate=False)
            build = getattr(a, "_build_sparse", None)  # CSR matrices are lazy: build them in the setup
            if variant == "sparse" and build is not None:
                build(torch.float32)
            return a
        if variant == "sparse_coo":
            a = SuperpixelAssignment(sp, n_s, validate=False)
            encoder = a.to_sparse(torch.sparse_coo, normalized=True).coalesce()
            decoder = a.to_sparse(torch.sparse_coo).t().coalesce()
            return encoder, decoder
        if variant == "dense_bmm":
            onehot = torch.zeros(b, n_s, n_p, device=dev)
            onehot.scatter_(1, sp.view(b, 1, n_p), 1.0)
            counts = onehot.sum(2)
            inv = torch.where(counts > 0, 1 / counts, 0.0).view(b, 1, n_s)
            return onehot, inv
        if variant == "copy":
            return torch.empty_like(x, requires_grad=False), torch.empty_like(gy)
        return None

    def op(state):
        if variant == "floor":
            return x * 1
        if variant in ("scatter", "sparse"):
            return state.uniformize(x)
        if variant == "sparse_coo":
            encoder, decoder = state
            rows = x.permute(0, 2, 3, 1).reshape(b * n_p, c)
            out_rows = torch.sparse.mm(decoder, torch.sparse.mm(encoder, rows))
            return out_rows.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        if variant == "paper_coo":
            outs = []
            cols = torch.arange(n_p, device=dev)
            for i in range(b):
                m = torch.sparse_coo_tensor(
                    torch.stack([sp[i].reshape(-1), cols]), torch.ones(n_p, device=dev), (n_s, n_p)
                )
                counts = torch.sparse.sum(m, 1).to_dense().clamp_min(1).view(n_s, 1)
                rows = x[i].reshape(c, n_p).t()
                enc = torch.sparse.mm(m, rows) / counts
                dec = torch.sparse.mm(m.t(), enc)
                outs.append(dec.t().reshape(c, h, w))
            return torch.stack(outs)
        if variant == "dense_bmm":
            onehot, inv = state
            sums = torch.bmm(x.view(b, c, n_p), onehot.transpose(1, 2))
            return torch.bmm(sums * inv, onehot).view(b, c, h, w)
        if variant == "torch_scatter":
            import torch_scatter

            idx = sp.view(b, 1, n_p).expand(b, c, n_p)
            means = torch_scatter.scatter_mean(x.view(b, c, n_p), idx, dim=2, dim_size=n_s)
            return torch.gather(means, 2, idx).view(b, c, h, w)
        raise AssertionError(variant)

    def timed(fn, n, warm=True):
        return median(time_ms(fn, n, warmup=warmup if warm else 0, device=dev))

    timed_setup = variant in ("scatter", "sparse", "sparse_coo", "dense_bmm")
    setup_ms = timed(setup, max(3, repeats // 2)) if timed_setup else 0.0
    state = setup()
    xd = x.detach()

    def fwd():
        if variant == "copy":
            state[0].copy_(xd)
        else:
            op(state)

    def fwd_bwd(s=state):  # (s: another setup's state, for the tensor peak below)
        if variant == "copy":
            s[0].copy_(xd)
            s[1].copy_(gy)
            return
        y = op(s)
        y.backward(gy)
        x.grad = None

    if variant in SLOW:
        repeats = max(3, repeats // 2)
    fwd_ms = timed(fwd, repeats)
    fb_ms = timed(fwd_bwd, repeats)
    out = {"setup_ms": setup_ms, "fwd_ms": fwd_ms, "fwd_bwd_ms": fb_ms}
    out["peak_extra_mb"] = (
        memory.extra_mib() if cuda or fresh_process else None
    )  # MiB (the key keeps its name)
    out["memory_method"] = memory.method
    if not cuda:  # the tensors of a setup and a forward + backward with it (what the reading above spans)
        out["peak_tensor_mib"] = tensor_peak_mib(lambda: fwd_bwd(setup()))
    # Paired ratio: alternate floor and variant fwd+bwd runs in this process, so that load from other
    # processes on a shared machine hits both alike (after the memory reading, which these runs disturb).
    if variant == "scatter" and paired:

        def floor_fb():
            y = x * 1
            y.backward(gy)
            x.grad = None

        tf, tv = [], []
        floor_fb()
        for i in range(repeats):  # alternate which runs first: neither always finds a warmer machine
            if i % 2:
                tv.append(timed(fwd_bwd, 1, warm=False))
                tf.append(timed(floor_fb, 1, warm=False))
            else:
                tf.append(timed(floor_fb, 1, warm=False))
                tv.append(timed(fwd_bwd, 1, warm=False))
        ratios = [v / f for v, f in zip(tv, tf, strict=True)]
        out["paired_floor_ms"] = median(tf)
        out["paired_x_floor"] = median(ratios)  # the median of the per-pair ratios
        out["paired_ratios"] = ratios
    # correctness against the float64 result of the same op (after the memory reading), forward and gradient:
    # the uniformization is a symmetric averaging (self-adjoint), so x's gradient is grad_y uniformized
    if variant not in NOT_THE_OP:
        reference = SuperpixelAssignment(sp, n_s, validate=False)
        with torch.no_grad():
            out["max_abs_err"] = (op(state).double() - reference.uniformize(xd.double())).abs().max().item()
        x.grad = None
        op(state).backward(gy)
        assert x.grad is not None
        grad_err = (x.grad.double() - reference.uniformize(gy.double())).abs().max().item()
        out["max_abs_err_grad"] = grad_err
        x.grad = None
    return out


def worst_error(result: dict) -> float | None:
    """The larger of a variant's forward and gradient errors against float64 (NaN when either is NaN; None
    for a variant that is not the op)."""
    errors = [result[k] for k in ("max_abs_err", "max_abs_err_grad") if k in result]
    return nan_max(errors) if errors else None


def run_sweep(cfgs: list[dict], device: str, repeats: int) -> dict:
    """Flatness in ``N_s``: the default backend's forward+backward at every configuration, in one process.

    All configurations share one ``x`` and one ``grad_y``; their assignments are built once. Every round
    runs, for each configuration in turn, one forward+backward of the floor and one of the op, so that slow
    drifts of a shared or virtualised machine (which move the per-subprocess medians by 20-40 % between runs)
    hit every ``N_s`` alike. Reports the median per configuration after one warm-up round.
    """
    import torch

    torch.set_num_threads(cfgs[0].get("threads", 2))
    from sparse_ops import SuperpixelAssignment

    dev = torch.device(device)
    b, c, h, w = (cfgs[0][key] for key in ("B", "C", "H", "W"))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen).to(dev).requires_grad_()
    gy = torch.randn(b, c, h, w, generator=gen).to(dev)
    assignments = [
        SuperpixelAssignment(
            make_labels(cfg["labels"], b, h, w, cfg["N_s"]).to(dev), cfg["N_s"], validate=False
        )
        for cfg in cfgs
    ]

    def fwd_bwd(fn):
        def run():
            fn(x).backward(gy)
            x.grad = None

        return time_ms(run, 1, warmup=0, device=dev)[0]

    floor_ms: list[list[float]] = [[] for _ in cfgs]
    op_ms: list[list[float]] = [[] for _ in cfgs]
    for r in range(repeats + 1):
        for i, a in enumerate(assignments):
            tf = fwd_bwd(lambda v: v * 1)
            to = fwd_bwd(a.uniformize)
            if r:  # round 0 is the warm-up
                floor_ms[i].append(tf)
                op_ms[i].append(to)

    rows = []
    for cfg, tf, to in zip(cfgs, floor_ms, op_ms, strict=True):
        rows.append(
            {
                "name": cfg_name(cfg),
                "N_s": cfg["N_s"],
                "labels": cfg["labels"],
                "floor_fwd_bwd_ms": median(tf),
                "fwd_bwd_ms": median(to),
                "x_floor": median([o / f for o, f in zip(to, tf, strict=True)]),
            }
        )
    grid = [r["fwd_bwd_ms"] for r in rows if r["labels"] == "grid"]
    return {"repeats": repeats, "rows": rows, "grid_max_over_min": max(grid) / min(grid) if grid else None}


def configs(
    quick: bool,
    batch_size: int | None = None,
    num_superpixels: list[int] | None = None,
    voronoi: bool = True,
) -> list[dict]:
    """The benchmark's configurations (``batch_size``, ``num_superpixels``, ``voronoi`` override defaults).

    Defaults: B=4, C=21, 512x512, grid N_s 256 / 1024 / 4096 / 16384 and Voronoi N_s=1024 (``quick``: B=1,
    128x128, grid N_s 64 / 256 and Voronoi N_s=64). The Voronoi configuration uses the first grid N_s.
    """
    if quick:
        base = {"B": 1, "C": 21, "H": 128, "W": 128}
        sizes = [64, 256]
    else:
        base = {"B": 4, "C": 21, "H": 512, "W": 512}
        sizes = [256, 1024, 4096, 16384]
    if batch_size is not None:
        base["B"] = batch_size
    voronoi_n_s = sizes[0] if quick else 1024
    if num_superpixels:
        sizes = list(num_superpixels)
        voronoi_n_s = sizes[0]
    out = [dict(base, N_s=n, labels="grid") for n in sizes]
    if voronoi:
        out.append(dict(base, N_s=voronoi_n_s, labels="voronoi"))
    return out


def cfg_name(cfg: dict) -> str:
    return f"B{cfg['B']}_C{cfg['C']}_{cfg['H']}x{cfg['W']}_Ns{cfg['N_s']}_{cfg['labels']}"


def _last_line_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _failure(proc: subprocess.CompletedProcess) -> dict:
    return {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}


def _measure(args: argparse.Namespace, cfg: dict, variant: str) -> dict:
    """One (config, variant): in this process (``--in-process``) or in a fresh subprocess."""
    if args.in_process:
        try:
            return run_one(cfg, variant, args.device, args.repeats, args.dense_max_gb, fresh_process=False)
        except Exception as exc:  # noqa: BLE001 (record any failure of one variant, go on with the next)
            return {"skipped": f"failed: {type(exc).__name__}: {exc}"[:500]}
        finally:
            _release(args.device)
    cmd = [
        sys.executable,
        __file__,
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--dense-max-gb",
        str(args.dense_max_gb),
        "--_child",
        json.dumps([cfg, variant]),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return _failure(proc) if proc.returncode != 0 else _last_line_json(proc.stdout)


def _release(device: str) -> None:
    """Free what the last measurement left (CUDA: return cached blocks, so the next peak starts clean)."""
    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _sweep(args: argparse.Namespace, cfgs: list[dict]) -> dict:
    if args.in_process:
        try:
            return run_sweep(cfgs, args.device, args.repeats)
        except Exception as exc:  # noqa: BLE001 (a failed sweep is reported, the table is kept)
            return {"skipped": f"failed: {type(exc).__name__}: {exc}"[:500]}
        finally:
            _release(args.device)
    cmd = [
        sys.executable,
        __file__,
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--_sweep",
        json.dumps(cfgs),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return _failure(proc) if proc.returncode != 0 else _last_line_json(proc.stdout)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``python benchmarks/bench_uniformize.py --help``)."""
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--quick", action="store_true", help="small smoke configuration")
    p.add_argument(
        "--repeats", type=int, default=7, help="timed runs per variant and configuration (default: 7)"
    )
    p.add_argument(
        "--dense-max-gb",
        type=float,
        default=3.0,
        help="skip dense_bmm when its mask needs more than this many GB, 1e9 bytes (default: 3.0)",
    )
    p.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated subset of {','.join(VARIANTS)} (default: per device, see the docstring)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every child (default: 2)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="B of every configuration (default: 4; quick 1)"
    )
    p.add_argument(
        "--num-superpixels",
        default=None,
        help="comma-separated grid N_s values (default: 256,1024,4096,16384; quick 64,256)",
    )
    p.add_argument("--no-voronoi", action="store_true", help="skip the irregular (Voronoi) label map")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="measure every variant in this process (no fresh subprocess each; no CPU memory figure)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="JSON path (default: benchmarks/results/bench_uniformize_<device>_<UTC date-time>.json, with "
        "_<N>thread after <device> for --threads N other than 2; --quick writes none unless given)",
    )
    p.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the one-process round-robin sweep over N_s (flatness) of the default backend",
    )
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_sweep", default=None, help=argparse.SUPPRESS)
    return p


def parse_sizes(value: str | None) -> list[int] | None:
    """The N_s values of ``--num-superpixels`` (``None``: the defaults); ``ValueError`` for a non-integer.

    Example:
        >>> parse_sizes("64,256"), parse_sizes(None)
        ([64, 256], None)
    """
    return [int(n) for n in value.split(",")] if value else None


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make (``p.error`` on failure): counts, a writable ``--out``, known
    ``--variants``, positive ``--num-superpixels``."""
    check_counts(p, args, {"repeats": 1, "threads": 1, "batch_size": 1, "dense_max_gb": 0})
    check_lists(p, args, ["variants", "num_superpixels"])
    worker = args._child or args._sweep  # the parent writes
    check_output(p, "--out", args.out, default_in=None if args.quick or worker else RESULTS)
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS)) if args.variants else []
    if unknown:
        p.error(f"--variants: unknown {unknown}; choose from {VARIANTS}")
    if args.num_superpixels:
        try:
            sizes = parse_sizes(args.num_superpixels) or [0]
        except ValueError:
            sizes = [0]
        if min(sizes) < 1:
            p.error(f"--num-superpixels must be positive integers, got {args.num_superpixels!r}")
        base = configs(args.quick)[0]
        pixels = base["H"] * base["W"]
        bad = [n for n in sizes if math.isqrt(n) ** 2 != n or n > pixels]
        if bad:  # the grid has round(sqrt(N_s)) ** 2 cells (7: ids up to 8); more cells than pixels: ops fail
            size = f"{base['H']}x{base['W']}"
            p.error(f"--num-superpixels must be squares <= {pixels} (grid labels of {size} images): {bad}")


def main(argv: list[str] | None = None) -> dict:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)

    if args._sweep:
        print(json.dumps(run_sweep(json.loads(args._sweep), args.device, args.repeats)))
        return {}

    if args._child:
        cfg, variant = json.loads(args._child)
        print(json.dumps(run_one(cfg, variant, args.device, args.repeats, args.dense_max_gb)))
        return {}

    import torch

    device = cli_device(p, args.device)
    variants = args.variants.split(",") if args.variants else DEFAULT_VARIANTS.get(device.type, VARIANTS)
    sizes = parse_sizes(args.num_superpixels)
    meta = environment(device, args.threads)  # load average before this run: is the machine shared now?
    meta["repeats"] = args.repeats
    meta["in_process"] = args.in_process
    from sparse_ops import SuperpixelAssignment

    probe = torch.zeros(1, 1, 1, dtype=torch.long, device=device)
    meta["auto_backend"] = SuperpixelAssignment(probe, 1).backend  # what backend="auto" picks on this device
    results = []
    wrong: list[str] = []
    mode = "all in this process" if args.in_process else "one subprocess per variant"
    print(
        f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs, {meta['cpu_model']}, "
        f"{args.threads} threads, {args.repeats} repeats (median), {mode}\n",
        flush=True,
    )
    for cfg in configs(args.quick, args.batch_size, sizes, voronoi=not args.no_voronoi):
        cfg_t = dict(cfg, threads=args.threads)
        rows = {variant: _measure(args, cfg_t, variant) for variant in variants}
        floor = rows.get("floor", {}).get("fwd_bwd_ms")
        copy = rows.get("copy", {}).get("fwd_bwd_ms")
        paper = rows.get("paper_coo", {})
        paper_total = paper.get("fwd_bwd_ms", 0) + paper.get("setup_ms", 0) if "fwd_bwd_ms" in paper else None
        print(f"== {cfg_name(cfg_t)}")
        print(
            f"{'variant':<14}{'setup ms':>10}{'fwd ms':>10}{'fwd+bwd ms':>12}{'x floor':>9}"
            + (f"{'x copy':>8}" if copy else "")
            + f"{'paper/this':>12}{'peak +MiB':>10}{'tensors MiB':>12}{'max err':>10}{'paired x floor':>16}"
        )
        for variant, r in rows.items():
            if "skipped" in r:
                print(f"{variant:<14}  {r['skipped']}")
                continue
            total = r["fwd_bwd_ms"] + r["setup_ms"]
            r["x_floor"] = r["fwd_bwd_ms"] / floor if floor else None
            if copy:
                r["x_copy"] = r["fwd_bwd_ms"] / copy
            r["paper_over_this"] = paper_total / total if paper_total else None
            err = worst_error(r)
            print(
                f"{variant:<14}{r['setup_ms']:>10.2f}{r['fwd_ms']:>10.2f}{r['fwd_bwd_ms']:>12.2f}"
                f"{cell(r['x_floor'], '>9.2f')}"
                + (cell(r["x_copy"], ">8.2f") if copy else "")
                + f"{cell(r['paper_over_this'], '>12.2f')}{cell(r['peak_extra_mb'], '>10.0f')}"
                f"{cell(r.get('peak_tensor_mib'), '>12.0f')}"
                f"{float('nan') if err is None else err:>10.1e}"
                f"{r.get('paired_x_floor', float('nan')):>16.2f}"
            )
            if err is not None and not err <= ERROR_TOLERANCE:  # NaN fails too
                wrong.append(f"{variant} at {cfg_name(cfg_t)} (max err {err:.1e})")
                print(f"{'':<14}  WRONG: max err above {ERROR_TOLERANCE:g}: its times are not a result")
        print(flush=True)
        results.append({"config": cfg_t, "name": cfg_name(cfg_t), "results": rows})

    sweep = None
    if not args.no_sweep:
        sweep = _sweep(args, [r["config"] for r in results])
        if "skipped" in sweep:
            print(f"sweep {sweep['skipped']}")
        else:
            print(
                f"== flatness in N_s: default backend, one process, configurations in round-robin, "
                f"median of {args.repeats} rounds"
            )
            print(f"{'config':<34}{'floor fwd+bwd ms':>18}{'fwd+bwd ms':>12}{'x floor':>9}")
            for r in sweep["rows"]:
                print(
                    f"{r['name']:<34}{r['floor_fwd_bwd_ms']:>18.2f}{r['fwd_bwd_ms']:>12.2f}"
                    f"{r['x_floor']:>9.2f}"
                )
            if sweep["grid_max_over_min"]:
                print(f"grid labels, max / min fwd+bwd over N_s: {sweep['grid_max_over_min']:.3f}")
            print()

    data = {"meta": meta, "configs": results, "sweep": sweep}
    threads = "" if args.threads == 2 else f"_{args.threads}thread"
    default = stamped_result(f"bench_uniformize_{args.device}{threads}")
    out = result_path(None if args.out is None else Path(args.out), default, args.quick)
    if out is not None:
        write_json(out, data)
        print(f"wrote {out}")
    if wrong:
        raise SystemExit(f"max err above {ERROR_TOLERANCE:g} (a wrong result): {'; '.join(wrong)}")
    return data


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback,
    # the measuring child killed
    raise SystemExit(run_script(main, "bench_uniformize.py"))
