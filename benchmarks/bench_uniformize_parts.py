"""Benchmark: where the time of ``uniformize`` goes, against the PyTorch primitives it could be built from.

The GPU check measures ``uniformize`` forward+backward at 5-7x the ``x * 1`` floor on an H200 (B=8, C=21,
512x512), against a target of 1.5x. This script asks whether any formulation in PyTorch's own kernels could
meet that target: it times, in one process and on the same input, each primitive a superpixel mean needs
(one pass to sum every superpixel, one to read its mean back to the pixels) beside the library op:

* ``floor``: ``x * 1`` (forward; forward+backward) and a copy: one read and one write of ``x``;
* sums: ``scatter_add_`` over ``[B, C, N]`` (the NCHW layout), ``index_add_`` over pixel rows ``[B N, C]``
  (a channels-last input), and ``segment_reduce`` over pixel rows sorted by superpixel (the sort is set-up,
  shared by every channel; the gather that sorts the rows is timed on its own);
* reads: ``gather`` over ``[B, C, N]`` and ``index_select`` of pixel rows;
* ``plain``: the plain mean (``scatter_add_``, multiply, ``gather``; no bound on the rounding error of long
  sums, which the library's accumulator layout adds), eager and under ``torch.compile``;
* the library: ``SuperpixelAssignment.uniformize`` forward, forward+backward, and forward on a channels-last
  input.

Two grids: 16 px cells (N_s = 1024 at 512x512: 256 pixels per superpixel, the most contention on one
accumulator) and 8 px cells (N_s = 4096). Medians of ``--repeats`` runs after warm-up, CUDA events on CUDA
(``benchmarks/_harness.py``). On the CPU it runs at B=1, C=3, 64x64 (a smoke run: the figures that matter
are the GPU's).

Usage::

    python benchmarks/bench_uniformize_parts.py --device cuda --out parts.json
    python benchmarks/bench_uniformize_parts.py --quick          # CPU smoke run, no JSON unless --out
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# imports after the path set-up: noqa E402
import torch  # noqa: E402
from _atomic import RESULTS, result_path, stamped_result, write_json  # noqa: E402
from _harness import (  # noqa: E402
    check_counts,
    check_output,
    cli_device,
    environment,
    run_script,
    time_ms,
    warmup_runs,
)

from sparse_ops import SuperpixelAssignment  # noqa: E402
from sparse_ops.grid import grid_cell_ids, num_grid_cells  # noqa: E402

__all__ = ["build_parser", "check_args", "main", "measure_parts"]


def measure_parts(
    device: torch.device,
    shape: tuple[int, int, int, int],
    cells: tuple[int, ...],
    repeats: int,
    compile_: bool,
) -> dict[str, Any]:
    """Median milliseconds of every part per grid cell size: ``{"cell16": {"N_s": 1024, "ms": {...}}}``."""
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(*shape, device=device, generator=gen)
    grad = torch.randn(*shape, device=device, generator=gen)
    return {f"cell{px}": _one_grid(x, grad, px, repeats, compile_) for px in cells}


def _one_grid(
    x: torch.Tensor, grad: torch.Tensor, cell_px: int, repeats: int, compile_: bool
) -> dict[str, Any]:
    device = x.device
    b, c, h, w = x.shape
    n = h * w
    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], object]) -> None:
        times[name] = statistics.median(time_ms(fn, repeats, warmup=warmup_runs(device), device=device))
        print(f"  {name:<46} {times[name]:9.3f} ms", flush=True)

    labels = grid_cell_ids(h, w, cell_px, batch_size=b, device=device)
    n_s = num_grid_cells(h, w, cell_px)
    print(f"\n{cell_px} px cells: N_s = {n_s}, B={b}, C={c}, {h}x{w}, {device}", flush=True)
    ids = labels.reshape(b, 1, n).expand(b, c, n)
    flat = x.view(b, c, n)
    leaf = x.detach().requires_grad_()

    def floor_fwd_bwd() -> None:
        (leaf * 1).backward(grad)
        leaf.grad = None

    timed("floor x * 1, forward", lambda: x * 1)
    timed("floor x * 1, forward+backward", floor_fwd_bwd)
    timed("copy", x.clone)
    timed("sums: scatter_add_ [B, C, N]", lambda: x.new_zeros(b, c, n_s).scatter_add_(2, ids, flat))
    sums = x.new_zeros(b, c, n_s).scatter_add_(2, ids, flat)
    timed("read: gather [B, C, N]", lambda: torch.gather(sums, 2, ids))
    global_ids = (labels.reshape(b, n) + torch.arange(b, device=device).view(b, 1) * n_s).reshape(-1)
    rows = x.permute(0, 2, 3, 1).reshape(b * n, c).contiguous()
    timed(
        "sums: index_add_ of pixel rows [B N, C]",
        lambda: x.new_zeros(b * n_s, c).index_add_(0, global_ids, rows),
    )
    table = x.new_zeros(b * n_s, c).index_add_(0, global_ids, rows)
    timed("read: index_select of pixel rows", lambda: table.index_select(0, global_ids))
    timed("NCHW -> channels_last copy", lambda: x.contiguous(memory_format=torch.channels_last))
    order = torch.argsort(global_ids, stable=True)
    counts = torch.bincount(global_ids, minlength=b * n_s)
    timed("sort the pixel rows (index_select)", lambda: rows.index_select(0, order))
    ordered = rows.index_select(0, order)
    timed("sums: segment_reduce of sorted rows", lambda: torch.segment_reduce(ordered, "sum", lengths=counts))
    inv = (1.0 / counts.view(b, n_s).clamp(min=1).to(x.dtype)).unsqueeze(1)

    def plain() -> torch.Tensor:
        return torch.gather(x.new_zeros(b, c, n_s).scatter_add_(2, ids, flat) * inv, 2, ids)

    timed("plain mean (scatter, multiply, gather)", plain)
    if compile_:
        t0 = time.perf_counter()
        compiled = torch.compile(plain, fullgraph=True)
        compiled()
        print(f"  (compiled in {time.perf_counter() - t0:.1f} s)", flush=True)
        timed("plain mean under torch.compile", compiled)
    assignment = SuperpixelAssignment(labels)

    def library_fwd_bwd() -> None:
        assignment.uniformize(leaf).backward(grad)
        leaf.grad = None

    timed("library uniformize, forward", lambda: assignment.uniformize(x))
    timed("library uniformize, forward+backward", library_fwd_bwd)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    timed("library uniformize, forward, channels_last x", lambda: assignment.uniformize(nhwc))
    return {"N_s": n_s, "ms": times}


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``python benchmarks/bench_uniformize_parts.py --help``)."""
    ap = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per part (default: 30; quick 3)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 3 repeats unless --repeats, no compile, no JSON unless --out",
    )
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: benchmarks/results/uniformize_parts_<UTC date-time>.json, never a "
        "committed file)",
    )
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make (``ap.error`` on failure): a positive count, a writable ``--out``."""
    check_counts(ap, args, {"repeats": 1})
    check_output(ap, "--out", args.out, default_in=None if args.quick else RESULTS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    device = cli_device(ap, args.device)
    shape = (8, 21, 512, 512) if device.type == "cuda" else (1, 3, 64, 64)
    default_repeats = 3 if args.quick else 30
    repeats = args.repeats if args.repeats is not None else default_repeats  # given: with --quick too
    parts = measure_parts(device, shape, (16, 8), repeats, compile_=not (args.quick or args.no_compile))
    result = {"machine": environment(device), "shape": list(shape), "repeats": repeats, "parts": parts}
    path = result_path(args.out, stamped_result("uniformize_parts"), args.quick)
    if path is not None:
        write_json(path, result)
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    raise SystemExit(run_script(main, "bench_uniformize_parts.py"))
