"""Same-session A/B of uniformization between two checkouts: this one and ``--previous`` (another commit).

A VM's speed drifts by tens of per cent within minutes and its CPU can change from one day to the next, so a
change to :func:`sparse_ops.uniformize` is judged here by alternating the two implementations on the same
machine in the same session. For every ``N_s`` (grid labels) and every repeat, one fresh process per
checkout (in alternating order) imports that checkout's ``sparse_ops``, builds the assignment once and then
alternates, round after round, the floor ``y = x * 1`` and the op (forward + backward w.r.t. ``x`` each); it
reports the median over rounds of the op / floor ratio ("paired x floor") and both medians in ms.

    git worktree add /tmp/previous <commit>
    python benchmarks/ab_uniformize.py --previous /tmp/previous --out /tmp/ab_uniformize.json

Both checkouts must have ``SuperpixelAssignment(superpixels, num_superpixels).uniformize(x)`` (every version
of this library has).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _atomic import write_json
from _harness import (
    check_counts,
    check_output,
    checkout_type,
    environment,
    options_of,
    run_script,
)  # the script's folder: run as a file or with it on sys.path
from bench_uniformize import make_labels  # the grid labels of bench_uniformize's configurations

ROOT = Path(__file__).resolve().parents[1]


checkout_dir = checkout_type("sparse_ops/__init__.py")


def build_parser() -> argparse.ArgumentParser:
    """The command line (``python benchmarks/ab_uniformize.py --help``)."""
    ap = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--previous", type=checkout_dir, required=True, help="root of the other checkout")
    ap.add_argument(
        "--num-superpixels",
        type=int,
        nargs="+",
        default=[256, 1024, 4096, 16384],
        help="superpixel counts N_s (default: 256 1024 4096 16384)",
    )
    ap.add_argument("--batch-size", type=int, default=4, help="batch size B (default: 4)")
    ap.add_argument("--channels", type=int, default=21, help="channels C (default: 21)")
    ap.add_argument("--size", type=int, default=512, help="image size H = W in pixels (default: 512)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="timed rounds per process, after 2 warm-up rounds (default: 15)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="processes per checkout and N_s (default: 2)")
    ap.add_argument(
        "--threads", type=int, default=2, help="torch.set_num_threads in every process (default: 2)"
    )
    ap.add_argument(
        "--channels-last", action="store_true", help="x and its gradient in channels_last (default: NCHW)"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: print only)")
    ap.add_argument("--worker", nargs=2, metavar=("ROOT", "N_S"), help=argparse.SUPPRESS)
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse values the run cannot use, naming the option."""
    if args.worker is not None:  # a worker of a checked run
        return
    check_counts(
        ap, args, dict.fromkeys(("batch_size", "channels", "size", "rounds", "repeats", "threads"), 1)
    )
    check_output(ap, "--out", args.out)
    side = [math.isqrt(max(n, 0)) for n in args.num_superpixels]
    bad = [n for n, s in zip(args.num_superpixels, side, strict=True) if n < 1 or s * s != n or s > args.size]
    if bad:
        ap.error(f"--num-superpixels must be positive squares of at most --size ** 2 (grid labels): {bad}")
    # a repeated N_s was measured again and printed as two rows, each with the runs of both
    if len(set(args.num_superpixels)) < len(args.num_superpixels):
        ap.error(f"--num-superpixels must be distinct, got {args.num_superpixels}")


def worker(root: Path, num_superpixels: int, args: argparse.Namespace) -> dict[str, Any]:
    """Time floor and op, alternating, in this process with ``root``'s ``sparse_ops``."""
    sys.path.insert(0, str(root))
    import torch

    import sparse_ops  # after the path set-up: the checkout's own package

    assert Path(sparse_ops.__file__).resolve().is_relative_to(root.resolve()), sparse_ops.__file__
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    b, c, n = args.batch_size, args.channels, args.size
    ids = make_labels("grid", b, n, n, num_superpixels)
    assignment = sparse_ops.SuperpixelAssignment(ids, num_superpixels)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(b, c, n, n).contiguous(memory_format=fmt).requires_grad_()
    grad = torch.randn(b, c, n, n).contiguous(memory_format=fmt)

    def floor() -> None:
        (x * 1).backward(grad)
        x.grad = None

    def op() -> None:
        assignment.uniformize(x).backward(grad)
        x.grad = None

    times: dict[str, list[float]] = {"floor": [], "op": []}
    ratios = []
    for r in range(args.rounds + 2):
        t = {}
        for name, fn in (("floor", floor), ("op", op)) if r % 2 else (("op", op), ("floor", floor)):
            t0 = time.perf_counter()
            fn()
            t[name] = 1e3 * (time.perf_counter() - t0)
        if r >= 2:
            times["floor"].append(t["floor"])
            times["op"].append(t["op"])
            ratios.append(t["op"] / t["floor"])
    return {
        "floor_ms": statistics.median(times["floor"]),
        "op_ms": statistics.median(times["op"]),
        "paired_x_floor": statistics.median(ratios),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    if args.worker is not None:
        out = worker(Path(args.worker[0]), int(args.worker[1]), args)
        print(json.dumps(out))
        return out
    checkouts = {"previous": args.previous.resolve(), "current": ROOT}
    common = [
        f"--{k}={v}" for k, v in (("batch-size", args.batch_size), ("channels", args.channels),
                                  ("size", args.size), ("rounds", args.rounds), ("threads", args.threads))
    ] + (["--channels-last"] if args.channels_last else [])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # each worker picks its checkout
    meta = environment("cpu", args.threads)  # before the runs: its load average is the one at the start
    runs = []
    for repeat in range(args.repeats):
        for i, n_s in enumerate(args.num_superpixels):
            order = ("previous", "current") if (repeat + i) % 2 == 0 else ("current", "previous")
            for code in order:
                cmd = [sys.executable, __file__, "--previous", str(args.previous), *common]
                cmd += ["--worker", str(checkouts[code]), str(n_s)]
                done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
                if done.returncode:
                    raise SystemExit(f"the {code} worker failed (N_s={n_s}):\n{done.stderr}")
                measured = json.loads(done.stdout.splitlines()[-1])
                runs.append({"code": code, "N_s": n_s, "repeat": repeat, **measured})
                print(f"N_s={n_s:>6} {code:<9} paired x floor {runs[-1]['paired_x_floor']:.3f}", flush=True)
    print(f"\n{'N_s':>6} {'previous x floor':>17} {'current x floor':>16}  (paired, each repeat)")
    for n_s in args.num_superpixels:
        cells = []
        for code in ("previous", "current"):
            values = [r["paired_x_floor"] for r in runs if r["N_s"] == n_s and r["code"] == code]
            cells.append(", ".join(f"{v:.2f}" for v in values))
        print(f"{n_s:>6} {cells[0]:>17} {cells[1]:>16}")
    result = {
        "benchmark": "uniformize fwd+bwd, same-session A/B of two checkouts (paired x the x*1 floor)",
        "config": options_of(args, leave_out=["worker"]),
        "meta": meta,
        "runs": runs,
    }
    if args.out is not None:
        write_json(args.out, result)
        print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback,
    # the running worker killed
    raise SystemExit(run_script(main, "ab_uniformize.py"))
