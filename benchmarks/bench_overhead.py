"""Benchmark: the per-call overhead of every public op, counted rather than timed.

Wall-clock time on the shared 2-core VM drifts by 20-40 % between runs, and at small sizes a call's time is
mostly overhead: Python, dispatch, small allocations and, on CUDA, host-device synchronisations, each of which
stalls the host until the queued work is done. These can be counted exactly, and the counts are the same run
after run (``benchmarks/_counting.py``); the peaks of live memory are not always (the backward of
``spixel_loss`` at the tiny size peaked at 9.0, 10.5 or 11.25 KiB in repeated runs: the order of the frees
varies). For every public op of ``sparse_ops`` and for a transparent stack, at a tiny size (B=1, C=3, 8x8,
4 superpixels, cell 4) and a typical one (B=2, C=21, 128x128, 225 superpixels, cell 9), with
``validate=True`` and ``validate=False``, the script reports:

* the aten ops one forward call dispatches, and one backward (``torch.autograd.backward`` of the outputs
  with a given gradient, so that no loss op is counted);
* the host-device synchronisations of the forward and of the backward (a value read on the host:
  ``.item()``, ``int(t)``, ``bool(t)``, ``.tolist()``; an output sized by the values: ``nonzero``, ``unique``,
  boolean indexing; see ``_counting.py``); they cost nothing on the CPU and a stall each on CUDA;
* the allocations of the forward and of the backward (``torch.profiler`` with ``profile_memory=True``): how
  many, their total KiB, and the peak of the KiB live at once.

Every call runs once untimed first (lazy initialisation). Integer arguments such as ``num_superpixels`` and
``num_classes`` are passed, as the docs advise in training loops (inferring them reads the ids: one sync).

Usage::

    python benchmarks/bench_overhead.py           # writes results/overhead_<device>_<UTC date-time>.json
    python benchmarks/bench_overhead.py --quick   # the tiny size only (no JSON unless --out)
    python benchmarks/bench_overhead.py --ops uniformize,spixel_loss --sizes typical
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# imports after the path set-up: noqa E402
import torch  # noqa: E402
from _atomic import RESULTS, result_path, stamped_result, write_json  # noqa: E402
from _counting import OpCounter, allocations  # noqa: E402
from _harness import check_counts, check_lists, check_output, cli_device, environment, run_script  # noqa: E402

import sparse_ops as so  # noqa: E402
from sparse_ops._layout import BUILD_BLOCK_PIXELS  # noqa: E402
from transparent_init import TransparentConv1x1  # noqa: E402

#: The two sizes: batch, channels, height, width, grid cell side (the superpixels are its cells).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"b": 1, "c": 3, "h": 8, "w": 8, "cell": 4},
    "typical": {"b": 2, "c": 21, "h": 128, "w": 128, "cell": 9},
}

Outputs = Any
#: A case: given the inputs and ``validate``, a forward call (``None`` for an op without ``validate``
#: when ``validate`` is False: the row would repeat the other one).
Forward = Callable[[], Outputs]


@dataclass
class Inputs:
    """The seeded inputs of one size (``n_s`` superpixels: the grid cells; ``k`` classes)."""

    x: torch.Tensor
    sp: torch.Tensor
    n_s: int
    assoc: torch.Tensor
    target: torch.Tensor
    k: int
    cell: int
    pooled: torch.Tensor
    centres: torch.Tensor
    assignment: so.SuperpixelAssignment
    #: tensors whose gradient a backward fills (cleared before each: every backward counted starts from none)
    leaves: list[torch.Tensor]


def make_inputs(size: dict[str, int], device: torch.device) -> Inputs:
    b, c, h, w, cell = (size[key] for key in ("b", "c", "h", "w", "cell"))
    g = torch.Generator().manual_seed(0)
    n_h, n_w = so.grid_shape(h, w, cell)
    n_s = n_h * n_w
    sp = so.grid_cell_ids(h, w, cell, batch_size=b).to(device)
    k = max(c, 3)

    def leaf(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device).requires_grad_()

    x, pooled, centres = leaf(b, c, h, w), leaf(b, n_s, c), leaf(b, c, n_h, n_w)
    assoc = torch.softmax(torch.randn(b, 9, h, w, generator=g), dim=1).to(device).requires_grad_()
    return Inputs(
        x=x,
        sp=sp,
        n_s=n_s,
        assoc=assoc,
        target=torch.randint(0, k, (b, h, w), generator=g).to(device),
        k=k,
        cell=cell,
        pooled=pooled,
        centres=centres,
        assignment=so.SuperpixelAssignment(sp, n_s),
        leaves=[x, pooled, centres, assoc],
    )


def _segnet_unpool(i: Inputs, validate: bool) -> Outputs:
    with torch.no_grad():
        pooled = so.max_pool2d_with_indices(i.x, 2)
    values = pooled.values.detach().requires_grad_()
    i.leaves.append(values)
    return lambda: so.max_unpool2d(values, pooled.indices, pooled.input_size, validate=validate)


#: op name -> (whether it takes ``validate``, a factory of its forward call from the inputs and ``validate``)
CASES: dict[str, tuple[bool, Callable[[Inputs, bool], Forward]]] = {
    "uniformize": (True, lambda i, v: lambda: so.uniformize(i.x, i.sp, i.n_s, validate=v)),
    "superpixel_pool sum": (
        True,
        lambda i, v: lambda: so.superpixel_pool(i.x, i.sp, i.n_s, reduce="sum", validate=v),
    ),
    "superpixel_pool mean": (True, lambda i, v: lambda: so.superpixel_pool(i.x, i.sp, i.n_s, validate=v)),
    "superpixel_pool max": (
        True,
        lambda i, v: lambda: so.superpixel_pool(i.x, i.sp, i.n_s, reduce="max", validate=v),
    ),
    "superpixel_unpool": (True, lambda i, v: lambda: so.superpixel_unpool(i.pooled, i.sp, validate=v)),
    "SuperpixelAssignment()": (True, lambda i, v: lambda: so.SuperpixelAssignment(i.sp, i.n_s, validate=v)),
    "assignment.encode": (False, lambda i, v: lambda: i.assignment.encode(i.x)),
    "assignment.decode": (False, lambda i, v: lambda: i.assignment.decode(i.pooled)),
    "assignment.uniformize": (False, lambda i, v: lambda: i.assignment.uniformize(i.x)),
    "soft_superpixel_pool": (
        True,
        lambda i, v: lambda: so.soft_superpixel_pool(i.x, i.assoc, i.cell, validate=v),
    ),
    "soft_superpixel_unpool": (
        True,
        lambda i, v: lambda: so.soft_superpixel_unpool(i.centres, i.assoc, i.cell, validate=v),
    ),
    "soft_uniformize": (True, lambda i, v: lambda: so.soft_uniformize(i.x, i.assoc, i.cell, validate=v)),
    "normalize_assoc": (True, lambda i, v: lambda: so.normalize_assoc(i.assoc, i.cell, validate=v)),
    "hard_superpixels": (True, lambda i, v: lambda: so.hard_superpixels(i.assoc, i.cell, validate=v)),
    "hard_superpixels connectivity": (
        True,
        lambda i, v: lambda: so.hard_superpixels(i.assoc, i.cell, connectivity=True, validate=v),
    ),
    "relabel_contiguous": (True, lambda i, v: lambda: so.relabel_contiguous(i.sp, validate=v)),
    "spixel_loss": (
        True,
        lambda i, v: lambda: so.spixel_loss(i.assoc, i.target, i.cell, num_classes=i.k, validate=v).total,
    ),
    "max_pool2d_with_indices": (True, lambda i, v: lambda: so.max_pool2d_with_indices(i.x, 2, validate=v)),
    "max_unpool2d": (True, _segnet_unpool),
    "grid_cell_ids": (
        False,
        lambda i, v: (
            lambda: so.grid_cell_ids(
                i.sp.shape[1], i.sp.shape[2], i.cell, batch_size=i.sp.shape[0], device=i.sp.device
            )
        ),
    ),
    "TransparentConv1x1()": (
        False,
        lambda i, v: (
            lambda: TransparentConv1x1(i.x.shape[1], [2 * i.x.shape[1]], generator=0, device=i.x.device)
        ),
    ),
    "TransparentConv1x1 forward": (False, lambda i, v: _stack_forward(i)),
}


def _stack_forward(i: Inputs) -> Forward:
    stack = TransparentConv1x1(i.x.shape[1], [2 * i.x.shape[1]], generator=0, device=i.x.device)
    i.leaves.extend(stack.parameters())
    return lambda: stack(i.x)


def _differentiable(out: Outputs) -> list[torch.Tensor]:
    """The outputs that carry a gradient (a tuple's tensors, e.g. the values of max_pool2d_with_indices)."""
    items = out if isinstance(out, tuple) else (out,)
    return [t for t in items if isinstance(t, torch.Tensor) and t.requires_grad]


def measure(forward: Forward, leaves: list[torch.Tensor]) -> dict[str, Any]:
    """The counts of one forward call and of the backward of its outputs (see the module docstring);
    ``leaves``: the tensors whose ``.grad`` the backward fills (cleared before each backward)."""

    def backward(tensors: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for t in leaves:
            t.grad = None
        torch.autograd.backward(tensors, grads)

    _run_backward(forward())  # warm-up: lazy initialisation is not the call's cost
    with OpCounter().active() as fwd:
        out = forward()
    row: dict[str, Any] = {
        "fwd_ops": fwd.ops,
        "fwd_syncs": fwd.syncs,
        "fwd_sync_names": dict(fwd.sync_names),
        "fwd_from_host": fwd.from_host,
    }
    fwd_alloc = allocations(forward)
    row.update(
        fwd_allocs=fwd_alloc.count,
        fwd_kib=fwd_alloc.total_bytes / 1024,
        fwd_peak_kib=fwd_alloc.peak_bytes / 1024,
    )
    tensors = _differentiable(out)
    if not tensors:
        return row
    grads = [torch.ones_like(t) for t in tensors]
    with OpCounter().active() as bwd:
        backward(tensors, grads)
    row.update(bwd_ops=bwd.ops, bwd_syncs=bwd.syncs, bwd_sync_names=dict(bwd.sync_names))
    tensors = _differentiable(forward())
    bwd_alloc = allocations(lambda: backward(tensors, grads))
    row.update(
        bwd_allocs=bwd_alloc.count,
        bwd_kib=bwd_alloc.total_bytes / 1024,
        bwd_peak_kib=bwd_alloc.peak_bytes / 1024,
    )
    return row


def _run_backward(out: Outputs) -> None:
    tensors = _differentiable(out)
    if tensors:
        torch.autograd.backward(tensors, [torch.ones_like(t) for t in tensors])


def loops(inputs: Inputs) -> list[dict[str, Any]]:
    """The Python loops of the ops whose trip count grows with the data, with their trips at these inputs
    (every other loop of the ops has a fixed count: the 8 neighbours of a pixel, the 4 index sets of the
    sparse backend, the layers of a stack)."""
    b, _, h, w = inputs.x.shape
    block = max(1, torch.get_num_threads(), BUILD_BLOCK_PIXELS // (h * w))
    return [
        {
            "where": "sparse_ops/_layout.py build_layout",
            "loop": "blocks of images whose layout is built at once (the whole batch on CUDA)",
            "trips": -(-b // block) if inputs.x.device.type == "cpu" else 1,
            "grows_with": "B * H * W beyond 2**22 pixels per block (CPU)",
        },
        {
            "where": "sparse_ops/_kernels.py sums, read",
            "loop": "images of a channels-last CPU input (index_add_ / index_select per image)",
            "trips": b,
            "grows_with": "B (channels-last CPU inputs only; the NCHW inputs measured here take none)",
        },
        {
            "where": "sparse_ops/hard.py _connectivity, _components",
            "loop": "images (one scipy connected_components graph of each)",
            "trips": b,
            "grows_with": "B (hard_superpixels(connectivity=True), enforce_connectivity; numpy)",
        },
        {
            "where": "sparse_ops/hard.py _merge_small",
            "loop": "pieces smaller than min_size, smallest first",
            "trips": "the number of small pieces (data-dependent)",
            "grows_with": "pieces below min_size",
        },
    ]


COLUMNS = (
    ("fwd_ops", "fwd ops", "d"),
    ("bwd_ops", "bwd ops", "d"),
    ("fwd_syncs", "fwd syncs", "d"),
    ("bwd_syncs", "bwd syncs", "d"),
    ("fwd_allocs", "fwd allocs", "d"),
    ("fwd_kib", "fwd KiB", ".1f"),
    ("fwd_peak_kib", "fwd peak KiB", ".1f"),
    ("bwd_allocs", "bwd allocs", "d"),
    ("bwd_kib", "bwd KiB", ".1f"),
)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table (``-`` where a figure does not apply)."""
    head = f"{'op':<31}{'size':<9}{'validate':<9}" + "".join(f"{label:>13}" for _, label, _ in COLUMNS)
    lines = [head]
    for row in rows:
        cells = "".join(
            f"{format(row[key], spec):>13}" if key in row else f"{'-':>13}" for key, _, spec in COLUMNS
        )
        lines.append(f"{row['op']:<31}{row['size']:<9}{row['validate']:<9}{cells}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``python benchmarks/bench_overhead.py --help``)."""
    ap = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="the tiny size only (smoke test; no JSON unless --out)"
    )
    ap.add_argument(
        "--sizes", default=None, help=f"comma-separated subset of {','.join(SIZES)} (default: all)"
    )
    ap.add_argument("--ops", default=None, help=f"comma-separated subset of {','.join(CASES)} (default: all)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON path (default: benchmarks/results/overhead_<device>_<UTC date-time>.json, never a "
        "committed file; --quick writes none unless given)",
    )
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make (``ap.error`` on failure): known op and size names, a thread count."""
    check_lists(ap, args, ["ops", "sizes"])
    for option, chosen, known in (("--ops", args.ops, CASES), ("--sizes", args.sizes, SIZES)):
        unknown = sorted(set(chosen.split(",")) - set(known)) if chosen else []
        if unknown:
            ap.error(f"{option}: unknown {unknown}; choose from {','.join(known)}")
    check_counts(ap, args, {"threads": 1})
    check_output(ap, "--out", args.out, default_in=None if args.quick else RESULTS)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    names = args.ops.split(",") if args.ops else list(CASES)
    sizes = args.sizes.split(",") if args.sizes else (["tiny"] if args.quick else list(SIZES))
    device = cli_device(ap, args.device)
    torch.set_num_threads(args.threads)
    meta = environment(device, args.threads)
    meta.update(sizes={name: SIZES[name] for name in sizes}, quick=args.quick)
    rows: list[dict[str, Any]] = []
    data_loops: dict[str, list[dict[str, Any]]] = {}
    for size in sizes:
        inputs = make_inputs(SIZES[size], device)
        data_loops[size] = loops(inputs)
        for name in names:
            takes_validate, factory = CASES[name]
            for validate in (True, False) if takes_validate else (None,):
                forward = factory(inputs, bool(validate) if validate is not None else True)
                row = {"op": name, "size": size, "validate": "-" if validate is None else str(validate)}
                row.update(measure(forward, inputs.leaves))
                rows.append(row)
    print(
        f"torch {torch.__version__}, device {device}, {meta['cpu_model']}, {args.threads} threads; "
        "counts per call (the same every run)\n"
    )
    print(format_table(rows))
    print("\nPython loops whose trip count grows with the data (trips at each size):")
    for size, found in data_loops.items():
        for loop in found:
            print(f"  {size:<8} {loop['where']}: {loop['loop']}: {loop['trips']} ({loop['grows_with']})")
    data = {"meta": meta, "rows": rows, "loops": data_loops}
    out = result_path(args.out, stamped_result(f"overhead_{device.type}"), args.quick)
    if out is not None:
        write_json(out, data)
        print(f"\nwrote {out}")
    return data


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback
    raise SystemExit(run_script(main, "bench_overhead.py"))
