"""Benchmark superpixel uniformization (paper Eq. 12-13): our backends against the alternatives, same run.

Op: ``y[b, :, p] = mean of x[b, :, q] over the pixels q of p's superpixel``, forward and forward+backward w.r.t.
``x``, at B=4, C=21, 512x512 for N_s in {256, 1024, 4096, 16384} (square cells) and an irregular SLIC-like
label map (Voronoi cells of jittered grid seeds, N_s=1024). Variants:

* ``floor``: ``y = x * 1`` through autograd -- not the op, the cost of allocating and writing ``y`` and ``grad_x``;
* ``scatter`` (our default, ``backend="auto"`` resolves to it on every device) and ``sparse`` (CSR matrices):
  :class:`sparse_ops.SuperpixelAssignment` built once from the labels ("setup"), then ``.uniformize(x)``;
* ``paper_coo``: the paper's approach as its authors coded it: per image, a COO ``torch.sparse.mm`` encoder
  (divided by the counts) and decoder, the matrices rebuilt on every call (so its setup is inside fwd);
* ``dense_bmm``: a one-hot ``[B, N_s, N_p]`` float mask and two ``bmm``; skipped above ``--dense-max-gb``;
* ``torch_scatter``: ``scatter_mean`` + ``gather`` when the package is importable (no wheel exists for recent
  torch releases; ``pip install --no-build-isolation torch-scatter`` builds it from source in about 5 minutes on
  2 cores).

Every (config, variant) runs in a fresh subprocess. Times are medians of ``--repeats`` runs (half as many, at
least 3, for the slow sparse, paper and dense variants) after one warm-up (``time.perf_counter``, CUDA
synchronised). Because the machine may be shared, the ``scatter`` child also alternates ``--repeats``
forward+backward runs of the floor and of the op and reports the median ratio of these paired runs
("paired x floor"), which is robust to load that comes and goes. Peak extra memory: on CPU the growth of
``ru_maxrss`` from right after the inputs (x, grad_y, labels) are allocated to the end of the timed runs (setup
included); on CUDA ``torch.cuda.max_memory_allocated()`` minus the memory allocated after the inputs. Compare
ratios within one run.

Usage::

    python benchmarks/bench_uniformize.py            # full table, CPU, 5-10 minutes on a shared 2-core VM
    python benchmarks/bench_uniformize.py --threads 1 --variants floor,scatter   # less load-sensitive ratio
    python benchmarks/bench_uniformize.py --quick    # small smoke configuration
    python benchmarks/bench_uniformize.py --device cuda

After the per-variant table, a last subprocess measures the default backend at every configuration in one
process, round-robin (``run_sweep``): that is the figure for "time flat in ``N_s``", since it is not moved by the
drifts of a shared machine between subprocesses started minutes apart (``--no-sweep`` skips it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = ["floor", "scatter", "sparse", "paper_coo", "dense_bmm", "torch_scatter"]


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


def _median(values: list[float]) -> float:
    """The middle element (the upper one of the two for an even count)."""
    values = sorted(values)
    return values[len(values) // 2]


def run_one(
    cfg: dict, variant: str, device: str, repeats: int, dense_max_gb: float, paired: bool = True
) -> dict:
    """Measure one variant in this (fresh) process."""
    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(cfg.get("threads", 2))
    from sparse_ops import SuperpixelAssignment

    b, c, h, w, n_s = cfg["B"], cfg["C"], cfg["H"], cfg["W"], cfg["N_s"]
    n_p = h * w
    if variant == "dense_bmm":
        need = b * n_s * n_p * 4 / 1e9
        if need > dense_max_gb:
            return {"skipped": f"needs {need:.1f} GB > budget {dense_max_gb:g} GB (--dense-max-gb)"}
    if variant == "torch_scatter":
        try:
            import torch_scatter  # noqa: F401
        except ImportError:
            return {"skipped": "not installed"}

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(b, c, h, w, generator=gen).to(dev).requires_grad_()
    gy = torch.randn(b, c, h, w, generator=gen).to(dev)
    sp = make_labels(cfg["labels"], b, h, w, n_s).to(dev)
    sync()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()

    def setup():
        if variant in ("scatter", "sparse"):
            a = SuperpixelAssignment(sp, n_s, backend=variant, validate=False)
            if variant == "sparse":
                a._build_sparse(torch.float32)
            return a
        if variant == "dense_bmm":
            onehot = torch.zeros(b, n_s, n_p, device=dev)
            onehot.scatter_(1, sp.view(b, 1, n_p), 1.0)
            counts = onehot.sum(2)
            inv = torch.where(counts > 0, 1 / counts, 0.0).view(b, 1, n_s)
            return onehot, inv
        return None

    def op(state):
        if variant == "floor":
            return x * 1
        if variant in ("scatter", "sparse"):
            return state.uniformize(x)
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
        raise ValueError(variant)

    def timed(fn, n, warmup=True):
        if warmup:
            fn()
        ts = []
        for _ in range(n):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
        return _median(ts) * 1e3

    setup_ms = (
        timed(setup, max(3, repeats // 2)) if variant not in ("floor", "paper_coo", "torch_scatter") else 0.0
    )
    state = setup()

    def fwd():
        op(state)

    def fwd_bwd():
        y = op(state)
        y.backward(gy)
        x.grad = None

    if variant in ("sparse", "paper_coo", "dense_bmm"):  # 3-40x slower: fewer runs keep the benchmark short
        repeats = max(3, repeats // 2)
    fwd_ms = timed(fwd, repeats)
    fb_ms = timed(fwd_bwd, repeats)
    out = {"setup_ms": setup_ms, "fwd_ms": fwd_ms, "fwd_bwd_ms": fb_ms}
    if cuda:
        out["peak_extra_mb"] = (torch.cuda.max_memory_allocated() - mem0) / 2**20
    else:
        out["peak_extra_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    # Paired ratio: alternate floor and variant fwd+bwd runs in this process, so that load from other processes
    # on a shared machine hits both alike (after the memory reading, which these runs would disturb).
    if variant == "scatter" and paired:

        def floor_fb():
            y = x * 1
            y.backward(gy)
            x.grad = None

        tf, tv = [], []
        floor_fb()
        for _ in range(repeats):
            tf.append(timed(floor_fb, 1, warmup=False))
            tv.append(timed(fwd_bwd, 1, warmup=False))
        out["paired_floor_ms"] = _median(tf)
        out["paired_x_floor"] = _median(tv) / _median(tf)
    # correctness against the float64 result of the same op (after the memory reading)
    if variant != "floor":
        ref = SuperpixelAssignment(sp, n_s, validate=False).uniformize(x.detach().double())
        out["max_abs_err"] = (op(state).detach().double() - ref).abs().max().item()
    return out


def run_sweep(cfgs: list[dict], device: str, repeats: int) -> dict:
    """Flatness in ``N_s``: the default backend's forward+backward at every configuration, in one process.

    All configurations share one ``x`` and one ``grad_y``; their assignments are built once. Every round runs,
    for each configuration in turn, one forward+backward of the floor and one of the op, so that slow drifts of a
    shared or virtualised machine (which move the per-subprocess medians by 20-40 % between runs) hit every
    ``N_s`` alike. Reports the median per configuration after one warm-up round.
    """
    import torch

    warnings.simplefilter("ignore")
    torch.set_num_threads(cfgs[0].get("threads", 2))
    from sparse_ops import SuperpixelAssignment

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
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
        sync()
        t = time.perf_counter()
        fn(x).backward(gy)
        x.grad = None
        sync()
        return (time.perf_counter() - t) * 1e3

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
                "floor_fwd_bwd_ms": _median(tf),
                "fwd_bwd_ms": _median(to),
                "x_floor": _median([o / f for o, f in zip(to, tf, strict=True)]),
            }
        )
    grid = [r["fwd_bwd_ms"] for r in rows if r["labels"] == "grid"]
    return {"repeats": repeats, "rows": rows, "grid_max_over_min": max(grid) / min(grid) if grid else None}


def configs(quick: bool) -> list[dict]:
    if quick:
        base = {"B": 1, "C": 21, "H": 128, "W": 128}
        return [
            dict(base, N_s=64, labels="grid"),
            dict(base, N_s=256, labels="grid"),
            dict(base, N_s=64, labels="voronoi"),
        ]
    base = {"B": 4, "C": 21, "H": 512, "W": 512}
    return [dict(base, N_s=n, labels="grid") for n in (256, 1024, 4096, 16384)] + [
        dict(base, N_s=1024, labels="voronoi")
    ]


def cfg_name(cfg: dict) -> str:
    return f"B{cfg['B']}_C{cfg['C']}_{cfg['H']}x{cfg['W']}_Ns{cfg['N_s']}_{cfg['labels']}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="small smoke configuration")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dense-max-gb", type=float, default=3.0, help="skip dense_bmm when its mask needs more")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every child")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument(
        "--no-sweep",
        action="store_true",
        help="skip the one-process round-robin sweep over N_s (flatness) of the default backend",
    )
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_sweep", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._sweep:
        print(json.dumps(run_sweep(json.loads(args._sweep), args.device, args.repeats)))
        return

    if args._child:
        cfg, variant = json.loads(args._child)
        print(json.dumps(run_one(cfg, variant, args.device, args.repeats, args.dense_max_gb)))
        return

    import torch

    load0 = os.getloadavg()[0]  # the 1-minute load average before this run: is the machine shared right now?
    results = []
    variants = args.variants.split(",")
    print(
        f"torch {torch.__version__}, device {args.device}, {os.cpu_count()} CPUs, {platform.machine()}, "
        f"{args.threads} threads, {args.repeats} repeats (median), one subprocess per variant\n"
    )
    for cfg in configs(args.quick):
        cfg = dict(cfg, threads=args.threads)
        rows = {}
        for variant in variants:
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
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                rows[variant] = {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
            else:
                rows[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        floor = rows.get("floor", {}).get("fwd_bwd_ms")
        paper = rows.get("paper_coo", {})
        paper_total = paper.get("fwd_bwd_ms", 0) + paper.get("setup_ms", 0) if "fwd_bwd_ms" in paper else None
        print(f"== {cfg_name(cfg)}")
        print(
            f"{'variant':<14}{'setup ms':>10}{'fwd ms':>10}{'fwd+bwd ms':>12}{'x floor':>9}"
            f"{'paper/this':>12}{'peak +MB':>10}{'max err':>10}{'paired x floor':>16}"
        )
        for variant, r in rows.items():
            if "skipped" in r:
                print(f"{variant:<14}  {r['skipped']}")
                continue
            total = r["fwd_bwd_ms"] + r["setup_ms"]
            r["x_floor"] = r["fwd_bwd_ms"] / floor if floor else None
            r["paper_over_this"] = paper_total / total if paper_total else None
            print(
                f"{variant:<14}{r['setup_ms']:>10.2f}{r['fwd_ms']:>10.2f}{r['fwd_bwd_ms']:>12.2f}"
                f"{r['x_floor'] or float('nan'):>9.2f}{r['paper_over_this'] or float('nan'):>12.2f}"
                f"{r['peak_extra_mb']:>10.0f}{r.get('max_abs_err', float('nan')):>10.1e}"
                f"{r.get('paired_x_floor', float('nan')):>16.2f}"
            )
        print()
        results.append({"config": cfg, "name": cfg_name(cfg), "results": rows})

    sweep = None
    if not args.no_sweep:
        cfgs = [r["config"] for r in results]
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
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sweep = {"skipped": f"failed: {proc.stderr.strip().splitlines()[-1:]}"}
            print(f"sweep {sweep['skipped']}")
        else:
            sweep = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"== flatness in N_s: default backend, one process, configurations in round-robin, "
                f"median of {args.repeats} rounds"
            )
            print(f"{'config':<34}{'floor fwd+bwd ms':>18}{'fwd+bwd ms':>12}{'x floor':>9}")
            for r in sweep["rows"]:
                print(
                    f"{r['name']:<34}{r['floor_fwd_bwd_ms']:>18.2f}{r['fwd_bwd_ms']:>12.2f}{r['x_floor']:>9.2f}"
                )
            if sweep["grid_max_over_min"]:
                print(f"grid labels, max / min fwd+bwd over N_s: {sweep['grid_max_over_min']:.3f}")
            print()

    meta = {
        "torch": torch.__version__,
        "device": args.device,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "repeats": args.repeats,
        "load_average_at_start": load0,
        "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    suffix = f"{'_quick' if args.quick else ''}_{args.device}{'' if args.threads == 2 else f'_{args.threads}thread'}"
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"bench_uniformize{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "configs": results, "sweep": sweep}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
