"""Same-session A/B of the fusion stack between two checkouts: this one and ``--previous`` (another commit).

A change to ``examples/voc_joint/models/fused_stack.py`` (the joint model's fusion stack in one autograd
Function) is judged by alternating the two versions on the same machine in the same session. Both modules are
loaded by path into this one process, each with the helper modules of its own ``models`` folder (its relative
imports; what it imports absolutely, ``sparse_ops``, comes from this checkout), and run on the same float32
weights: a transparent ``FusionStack`` of this checkout (its
layer shapes and its CPU chunk, ``cpu_chunk_rows`` pixels) plus ``0.01 * randn`` so that it is not the
identity. For every image size, with ``recompute`` off and on, one forward + backward per side first checks
that the output and every gradient (weights, biases, ``S``, ``U``) are bit-identical (``torch.equal``; else
the largest absolute difference), then rounds of forward + backward alternate which side runs first; after 2
warm-up rounds it reports each side's median in ms and the paired ratio current / previous (the median of the
per-round ratios). CPU only: the chunks are the CPU path.

    git worktree add /tmp/previous <commit>
    python benchmarks/ab_fusion.py --previous /tmp/previous --out /tmp/ab_fusion.json
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _atomic import write_json
from _harness import (
    SHAPE_MAX,
    check_counts,
    check_output,
    checkout_type,
    environment,
    options_of,
    run_script,
)  # the script's folder: run as a file or with it on sys.path

if TYPE_CHECKING:  # imported in main, from this checkout
    from examples.voc_joint.models.joint import FusionStack

ROOT = Path(__file__).resolve().parents[1]
#: The module compared, relative to a checkout's root.
MODULE = Path("examples/voc_joint/models/fused_stack.py")
#: Untimed rounds before the timed ones (alternating too).
WARMUP_ROUNDS = 2
#: Largest ``--hidden`` width: a transparent 8192 x 8192 layer takes about 70 s to initialize (train.py).
HIDDEN_MAX = 2**13
SIDES = ("previous", "current")


checkout_dir = checkout_type(MODULE)


def build_parser() -> argparse.ArgumentParser:
    """The command line (``python benchmarks/ab_fusion.py --help``)."""
    ap = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--previous", type=checkout_dir, required=True, help="root of the other checkout")
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[128, 256],
        help="image sides H = W, pixels (default: 128 256)",
    )
    ap.add_argument("--batch-size", type=int, default=2, help="batch size B (default: 2)")
    ap.add_argument("--channels", type=int, default=21, help="channels C of S and U (default: 21)")
    ap.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=[64, 64],
        help="logical hidden widths, as FusionStack takes them, each >= 2 C (default: 64 64)",
    )
    ap.add_argument(
        "--activation",
        choices=("relu", "leaky_relu", "none"),
        default="relu",
        help="activation between the layers (default: relu)",
    )
    ap.add_argument(
        "--rounds", type=int, default=31, help="timed rounds, after 2 warm-up rounds (default: 31)"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default: 2)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default: print only)")
    return ap


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse values the run cannot use, naming the option."""
    check_counts(ap, args, dict.fromkeys(("batch_size", "channels", "rounds", "threads"), 1))
    check_output(ap, "--out", args.out)
    top = SHAPE_MAX["size"]
    if any(not 1 <= n <= top for n in args.sizes) or len(set(args.sizes)) < len(args.sizes):
        ap.error(f"--sizes must be distinct sides in [1, {top}], got {args.sizes}")
    low = 2 * args.channels  # a transparent stack's hidden width is at least its input's, [S, U]
    if any(not low <= h <= HIDDEN_MAX for h in args.hidden):
        ap.error(f"--hidden widths must be in [2 x --channels = {low}, {HIDDEN_MAX}], got {args.hidden}")


def load_fused_stack(ap: argparse.ArgumentParser, root: Path, label: str) -> Callable[..., Tensor]:
    """``fused_stack`` of the checkout ``root``, loaded as ``_ab_fusion_<label>.fused_stack``: a stand-in
    package over the checkout's ``models`` folder, so that the module's relative imports (its helper modules)
    come from the same checkout, without running the folder's ``__init__`` (which imports every model). A
    module that does not load or has no callable ``fused_stack`` is a usage error naming ``label`` (the
    option).

    The checkout's ``fused_conv_stack.py`` registers this checkout's operators again (the same names):
    torch.library replaces them, and this checkout's stack reaches them by name at every call
    (``fused_conv_stack._ops``), so both sides run the operators registered last, the loaded checkout's."""
    path = root / MODULE
    package = f"_ab_fusion_{label.strip('-')}"
    for name in [n for n in sys.modules if n == package or n.startswith(f"{package}.")]:
        del sys.modules[name]  # a checkout loaded before under this label (several runs in one process)
    stand_in = types.ModuleType(package)
    stand_in.__path__ = [str(path.parent)]
    sys.modules[package] = stand_in
    try:
        module = importlib.import_module(f"{package}.{path.stem}")
    except (ImportError, AttributeError, NameError, SyntaxError) as exc:  # e.g. a name this checkout lacks
        ap.error(f"{label}: cannot load {path}: {type(exc).__name__}: {exc}")
    fn = getattr(module, "fused_stack", None)
    if not callable(fn):
        ap.error(f"{label}: {path} must define a callable fused_stack, got {type(fn).__name__}")
    return fn


def make_params(stack: FusionStack) -> tuple[list[Tensor], list[Tensor | None]]:
    """The float32 weights ``(out, in)`` and biases of ``stack``'s 1x1 layers plus ``0.01 * randn`` (seed
    0), so that the stack is not the identity; each requires grad."""
    gen = torch.Generator().manual_seed(0)

    def perturbed(p: Tensor) -> Tensor:
        return (p.detach().float() + 0.01 * torch.randn(p.shape, generator=gen)).requires_grad_()

    convs = stack.convs
    return [perturbed(m.weight.flatten(1)) for m in convs], [
        None if m.bias is None else perturbed(m.bias) for m in convs
    ]


def paired_rounds(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """``WARMUP_ROUNDS`` untimed then ``rounds`` timed rounds of both sides, alternating which runs first
    (previous in even rounds); each side's median ms and the median of the per-round current / previous."""
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for r in range(WARMUP_ROUNDS + rounds):
        for side in SIDES if r % 2 == 0 else SIDES[::-1]:
            t0 = time.perf_counter()
            sides[side]()
            if r >= WARMUP_ROUNDS:
                times[side].append(1e3 * (time.perf_counter() - t0))
    ratios = [c / p for p, c in zip(times["previous"], times["current"], strict=True)]
    medians = {f"{side}_ms": statistics.median(times[side]) for side in SIDES}
    return {**medians, "paired_ratio": statistics.median(ratios)}


def compare(
    fns: dict[str, Callable[..., Tensor]],
    params: tuple[list[Tensor], list[Tensor | None]],
    stack: FusionStack,
    size: int,
    recompute: bool,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One row: both sides' output and gradients compared bit for bit, then their paired times."""
    ws, bs = params
    gen = torch.Generator().manual_seed(size)
    s, u, grad = (torch.randn(args.batch_size, args.channels, size, size, generator=gen) for _ in range(3))
    leaves = [*ws, *[b for b in bs if b is not None], s.requires_grad_(), u.requires_grad_()]
    names = ["output", *[f"weight {i}" for i in range(len(ws))]]
    names += [f"bias {i}" for i, b in enumerate(bs) if b is not None] + ["S", "U"]

    def step(side: str) -> list[Tensor]:
        out = fns[side](s, u, ws, bs, stack._slope, chunk=stack.cpu_chunk_rows, recompute=recompute)
        return [out.detach(), *torch.autograd.grad(out, leaves, grad)]

    prev, cur = step("previous"), step("current")
    differ = [n for n, p, c in zip(names, prev, cur, strict=True) if not torch.equal(p, c)]
    diff = max(float((p - c).abs().max()) for p, c in zip(prev, cur, strict=True))
    del prev, cur
    timed = paired_rounds({side: functools.partial(step, side) for side in SIDES}, args.rounds)
    return {"size": size, "recompute": recompute, **timed, "bit_identical": not differ,
            "not_identical": differ, "max_abs_diff": diff}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    if str(ROOT) not in sys.path:  # this checkout's examples and sparse_ops
        sys.path.insert(0, str(ROOT))
    from examples.voc_joint.models.joint import FusionStack

    fns = {
        "previous": load_fused_stack(ap, args.previous.resolve(), "--previous"),
        "current": load_fused_stack(ap, ROOT, "current"),
    }
    torch.set_num_threads(args.threads)
    meta = environment("cpu", args.threads)  # before the runs: its load average is the one at the start
    activation = None if args.activation == "none" else args.activation
    stack = FusionStack(args.channels, args.hidden, activation, "transparent", generator=0)
    params = make_params(stack)
    rows = []
    for size in args.sizes:
        for recompute in (False, True):
            rows.append(compare(fns, params, stack, size, recompute, args))
            print(f"size {size} recompute {recompute}: paired {rows[-1]['paired_ratio']:.3f}", flush=True)
    print(f"\n{'size':>5} {'recompute':>9} {'previous ms':>12} {'current ms':>11} {'paired ratio':>13} "
          f"{'bit-identical':>14} {'max diff':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['size']:>5} {r['recompute']!s:>9} {r['previous_ms']:>12.2f} {r['current_ms']:>11.2f} "
              f"{r['paired_ratio']:>13.3f} {r['bit_identical']!s:>14} {r['max_abs_diff']:>9.2g}")  # fmt: skip
    result = {
        "benchmark": "fused_stack fwd+bwd, same-session A/B of two checkouts in one process (paired)",
        "config": options_of(args),
        "meta": {**meta, "chunk": stack.cpu_chunk_rows},
        "rows": rows,
    }
    if args.out is not None:
        write_json(args.out, result)
        print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback
    raise SystemExit(run_script(main, "ab_fusion.py"))
