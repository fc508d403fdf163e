"""Show that a transparent stack recovers its input at initialization (no torchvision needed).

Run: ``python examples/transparent_identity.py`` (or ``python -m examples.transparent_identity``).

For each activation (none, ReLU, LeakyReLU) it builds the paper's default fusion stack, 42 -> [64, 64] -> 42
1x1 convolutions, feeds float32 inputs uniform in [-10, 10] and prints the max abs error, the recovery rate
(share of outputs within 1e-4 of the input; for ``--range`` above 10, within ``1e-5 * range``, as float32
resolves an input of magnitude 1000 only to 6e-5) and the init rate (share of parameters with |w| > 1e-4);
then it shows a non-square target map (42 channels averaged pairwise into 21).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

if __package__ in (None, ""):  # run as a file: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from examples.voc_joint.cli import (  # the standard library only
    SEED_MAX,
    DefaultsHelpFormatter,
    float_range,
    int_range,
    out_of_memory_error,
)
from examples.voc_joint.signals import run_stoppable  # the standard library only
from transparent_init import TransparentConv1x1, init_rate, max_abs_error, recovery_rate

__all__ = ["build_parser", "check_args", "main"]

#: Largest ``--channels`` / ``--hidden`` width (the input alone is 4 x 4096 x 64 x 64 floats, 256 MiB).
WIDTH_MAX = 4096


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python examples/transparent_identity.py",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--channels",
        type=int_range(1, WIDTH_MAX),
        default=42,
        help="input and output channels of the stack (default: %(default)s)",
    )
    parser.add_argument(
        "--hidden",
        type=int_range(1, WIDTH_MAX),
        nargs="+",
        default=[64, 64],
        help="hidden widths of the stack, each >= --channels (default: 64 64)",
    )
    parser.add_argument(
        "--range",
        type=float_range(0.0, 1e6, low_open=True),
        default=10.0,
        help="inputs are uniform in [-range, range]; recovery counts outputs within 1e-4 of them, within "
        "1e-5 * range above 10 (float32's resolution) (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int_range(0, SEED_MAX),
        default=0,
        help="seed of the inputs and of the stacks' weights (default: %(default)s)",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` (exit status 2) for a hidden width below ``--channels``: such a stack has no exact
    right inverse (the library's ``ValueError`` was a traceback)."""
    narrow = [w for w in args.hidden if w < args.channels]
    if narrow:
        parser.error(f"--hidden: every width must be >= --channels {args.channels}, got {args.hidden}")


def main(argv: Sequence[str] | None = None) -> int:
    """Build the stacks, print the table; exit status 0 when every stack is transparent, 1 otherwise or when
    the stacks do not fit in memory (one line), 2 for a bad option, 130 / 143 / 129 when stopped by SIGINT /
    SIGTERM / SIGHUP (one line), as the pipeline's scripts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    return run_stoppable(lambda: _main(parser, args), parser.prog, "it writes nothing: run it again")


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """:func:`main` after the options were parsed and checked."""
    try:
        return _run(args)
    except (MemoryError, RuntimeError) as exc:  # --channels / --hidden too wide for the machine
        message = out_of_memory_error(exc)
        if message is None:
            raise
        print(f"{parser.prog}: error: {message}", file=sys.stderr, flush=True)
        return 1


def _run(args: argparse.Namespace) -> int:
    """Build the stacks and print the table (:func:`main`)."""
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = (torch.rand(4, args.channels, 64, 64, generator=gen) * 2 - 1) * args.range
    print(
        f"transparent stack {args.channels} -> {args.hidden} -> {args.channels}, 1x1 convs, float32, "
        f"inputs U[-{args.range:g}, {args.range:g}] of shape {list(x.shape)}"
    )
    print(f"{'activation':<12}{'real widths':<22}{'max |y - x|':>13}{'recovery':>11}{'init rate':>11}")
    # 1e-4 for inputs in [-10, 10], relative above: with --range 1000 every stack was "NOT transparent"
    # (max error 3e-4, a few float32 steps of 6e-5), as float32 cannot meet an absolute 1e-4 there
    eps = 1e-4 * max(1.0, args.range / 10)
    ok = True
    for act in (None, "relu", "leaky_relu"):
        stack = TransparentConv1x1(args.channels, args.hidden, activation=act, generator=args.seed)
        widths = [stack.layers[0].in_channels] + [
            m.out_channels for m in stack.layers if hasattr(m, "out_channels")
        ]
        err, rec, rate = max_abs_error(stack, x), recovery_rate(stack, x, eps), init_rate(stack)
        ok &= rec == 1.0
        print(f"{act or 'none':<12}{'-'.join(map(str, widths)):<22}{err:>13.2e}{rec:>10.2%}{rate:>11.3%}")

    if args.channels % 2 == 0:
        half = args.channels // 2
        avg = torch.zeros(half, args.channels)
        avg[torch.arange(half), 2 * torch.arange(half)] = 0.5
        avg[torch.arange(half), 2 * torch.arange(half) + 1] = 0.5
        fuse = TransparentConv1x1(args.channels, args.hidden, half, target_weight=avg, generator=args.seed)
        target = 0.5 * (x[:, 0::2] + x[:, 1::2])
        err = max_abs_error(fuse, x, target=target)
        print(
            f"target map {args.channels} -> {half} (pairwise mean), ReLU: max error {err:.2e}, "
            f"recovery {recovery_rate(fuse, x, eps, target=target):.2%}"
        )
    within = "1e-4" if eps == 1e-4 else f"{eps:g}"
    print(f"transparent: every output within {within} of its input" if ok else "NOT transparent")
    return 0 if ok else 1


if __name__ == "__main__":
    from examples.voc_joint.console import tolerant_output

    tolerant_output()  # a character the console cannot encode is escaped, not fatal
    raise SystemExit(main())
