"""Training-step cost of the joint model against DeepLabV3+ alone (the overhead of the method, as a ratio).

Variants, all with the same DeepLabV3+, the same batch and the same memory format:

* ``deeplab``            DeepLabV3+ alone, cross-entropy;
* ``joint_hard_noti``    + SpixelFCN + hard uniformization (no fusion stack) + spixel_loss;
* ``joint_hard_ti``      + the transparent fusion stack (42 -> 128 -> 128 -> 21; the paper's hidden widths,
  and 21 outputs where the authors' code has 42 and keeps the even ones) -- the paper's model;
  ``--fusion-hidden`` sets its logical hidden widths (default the training CLI's, ``64 64``: doubled by
  the ReLU to 128; ``--fusion-hidden 64`` is one hidden layer, 42 -> 128 -> 21);
* ``joint_soft_ti``      soft uniformization (segmentation loss reaches SpixelFCN) + transparent stack.

One step is what the joint stage of ``examples/voc_joint/train.py`` does with its defaults: forward, loss
(cross-entropy summed over the labelled pixels / their count, + ``spixel_loss`` for the joint variants),
backward, SGD step (momentum 0.9, weight decay 5e-4), DeepLabV3+ BatchNorm frozen (``--freeze-bn``),
float16 autocast + gradient scaling with ``--amp`` on CUDA (ignored on CPU, as in the training CLI). Medians
over rounds that alternate the variants. Memory: the bytes of activations autograd saves for backward
(distinct storages, exact, any device) and, on CUDA, the ``torch.cuda.max_memory_allocated`` peak of one step.
Arithmetic: the FLOPs of one step's convolutions and matrix products, forward + backward (``flops``, counted
by ``torch.utils.flop_counter``), and their ratio to DeepLabV3+'s: the time ratio a variant would have if
every FLOP ran at DeepLabV3+'s rate and nothing else cost anything.

The script also prints a **breakdown** of one ``joint_hard_ti`` step (DeepLabV3+, SpixelFCN, superpixel ids,
uniformization, fusion, loss: forward + backward time and saved memory of each part, timed in isolation), the
fusion's arithmetic against the rate ``torch.mm`` reaches on its widest layer in the same run (what the step
would cost with the fusion at that rate: how far any faster fusion code could take the ratio) and,
with ``--levers``, the **lever study**: the same pair (DeepLabV3+ alone, ``joint_hard_ti``) under cumulative
implementation choices, from the plain implementation (fusion on ``torch.cat([S, U])`` in NCHW, superpixel ids
validated every step) to the stack in one autograd Function, activation recomputation, channels-last and
``torch.compile``; with ``--formats``,
the **memory-format study**: DeepLabV3+ and SpixelFCN, each trained alone, in NCHW and in channels_last (the
evidence for the per-network default memory format, ``DEFAULT_CHANNELS_LAST``).

Usage::

    python benchmarks/bench_joint.py                      # CPU, B=2, 128x128, ResNet-18
    python benchmarks/bench_joint.py --backbone resnet101 --size 256 --levers
    python benchmarks/bench_joint.py --variants deeplab --no-breakdown --formats --rounds 15
    python benchmarks/bench_joint.py --variants deeplab joint_hard_ti --fusion-hidden 64   # a shallower stack
    python benchmarks/bench_joint.py --device cuda --amp --backbone resnet101 --batch-size 8 --size 512

Writes ``benchmarks/results/joint.json`` (or ``--out``), one entry per device/backbone/batch/size/amp and per
option that changes what is measured, where it is off its default (``..._fusion64`` for
``--fusion-hidden 64``, ``..._threads1``, ``..._variants-deeplab``: ``KEY_OPTIONS``); a run replaces only its
own key's entry, and says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

resource: ModuleType | None
try:  # the page-fault count of every step (minor_faults); POSIX only
    import resource
except ImportError:  # Windows
    resource = None

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402  # after the sys.path set-up, so the checkout's packages win
import torch.nn.functional as F  # noqa: E402  # after the sys.path set-up
from _atomic import write_json  # noqa: E402
from _harness import (  # noqa: E402
    check_counts,
    check_output,
    cli_device,
    cpu_model,
    load_average,
    options_of,
    run_script,
)  # the script's folder: run as a file or with it on sys.path
from torch import Tensor, nn  # noqa: E402  # same reason

VARIANTS = ("deeplab", "joint_hard_noti", "joint_hard_ti", "joint_soft_ti")
#: The classes of every variant (PASCAL VOC's 21): the fusion stack's input is 2 x 21 channels.
NUM_CLASSES = 21
#: The networks of the memory-format study (``--formats``), each trained alone.
FORMAT_NETWORKS = ("deeplab", "spixelfcn")
# The training CLI's loss (cross-entropy summed over the labelled pixels / their count), one source.
from examples.voc_joint.cli import (  # noqa: E402  # after the sys.path set-up
    DefaultsHelpFormatter,
    add_fusion_hidden,
    fusion_hidden_error,
)
from examples.voc_joint.engine import cross_entropy  # noqa: E402  # after the sys.path set-up
from examples.voc_joint.models.build import MAX_CELL  # noqa: E402  # same reason: SpixelFCN's bound
from examples.voc_joint.models.deeplabv3plus import BACKBONES  # noqa: E402  # same reason

# Memory format of every variant by default: the training CLI's (where channels_last wins), one source.
from examples.voc_joint.models.joint import (  # noqa: E402  # after the sys.path set-up
    DEFAULT_CHANNELS_LAST,
    ChannelsLast,
    FusionStack,
    network_channels_last,
)
from sparse_ops import num_grid_cells  # noqa: E402  # after the sys.path set-up

# (name, options) of the lever study, cumulative ("impl" and "validate": JointModel/FusionStack bench knobs).
# Memory-format independent levers first, then channels_last and torch.compile.
LEVERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("plain: cat([S, U]), NCHW, ids validated", {"impl": "concat", "validate": True}),
    ("+ no host-device sync (ids not validated)", {"impl": "concat"}),
    ("+ first layer split over S and U", {"impl": "split"}),
    ("+ fusion as NHWC matrix products", {"impl": "nhwc", "chunk_rows": None}),
    ("+ NHWC rows in chunks (CPU: 8192 rows)", {"impl": "nhwc"}),
    ("+ SpixelFCN in channels_last", {"impl": "nhwc", "channels_last": "spixelfcn"}),
    (
        "+ the stack in one autograd Function",
        {"impl": "fused", "channels_last": "spixelfcn", "products": "mm"},
    ),
    (
        "+ recompute the fusion in backward",
        {"impl": "fused", "channels_last": "spixelfcn", "recompute": True, "products": "mm"},
    ),
    (
        "+ its products as oneDNN 1x1 convolutions",
        {"impl": "fused", "channels_last": "spixelfcn", "recompute": True, "pool_last": False},
    ),
    (
        "+ its last layer on superpixel means",
        {"impl": "fused", "channels_last": "spixelfcn", "recompute": True, "u_cells": False},
    ),
    (
        "+ its first layer's U half per superpixel",
        {"impl": "fused", "channels_last": "spixelfcn", "recompute": True},
    ),
    (
        "+ recompute spixel_loss in backward",
        {"impl": "fused", "channels_last": "spixelfcn", "recompute": True, "recompute_loss": True},
    ),
    (
        "+ channels_last end to end",
        {"impl": "fused", "recompute": True, "recompute_loss": True, "channels_last": True},
    ),
    (
        "+ torch.compile of refine",
        {"impl": "fused", "recompute": True, "recompute_loss": True, "channels_last": True, "compile": True},
    ),
)


def cli_defaults() -> dict[str, Any]:
    """The runtime options' defaults of the training CLI (one source: ``train.py --help``)."""
    from examples.voc_joint.train_options import build_parser

    d = build_parser().parse_args([])
    return {
        "recompute": d.recompute_fusion,
        "recompute_loss": d.recompute_loss,
        "compile": d.compile,
    }


def default_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of the main table: the training CLI's defaults, or what the command line asks for."""
    return {
        "impl": "fused",
        "channels_last": args.channels_last,
        "recompute": args.recompute,
        "recompute_loss": args.recompute_loss,
        "compile": args.compile,
    }


def build_model(
    variant: str, args: argparse.Namespace, device: torch.device, opts: dict[str, Any]
) -> nn.Module:
    """The model of ``variant`` with the lever options ``opts``, on ``device``, in training mode."""
    from examples.voc_joint.models import DeepLabV3Plus, JointModel, SpixelFCN

    torch.manual_seed(0)
    if variant == "spixelfcn":  # the superpixel network alone (the memory-format study)
        net = SpixelFCN(args.cell_size)
        if network_channels_last(opts.get("channels_last", False), "spixelfcn"):
            net.to(memory_format=torch.channels_last)
        return net.to(device).train()
    deeplab = DeepLabV3Plus(NUM_CLASSES, args.backbone, 16)
    model: nn.Module
    if variant == "deeplab":
        model = deeplab
        if network_channels_last(opts.get("channels_last", False), "deeplab"):
            model.to(memory_format=torch.channels_last)
    else:
        mode = "soft" if variant.startswith("joint_soft") else "hard"
        joint = JointModel(
            deeplab,
            SpixelFCN(args.cell_size),
            NUM_CLASSES,
            mode=mode,
            fusion=variant.endswith("_ti"),
            fusion_hidden=tuple(args.fusion_hidden),
            channels_last=opts.get("channels_last", False),
            recompute_fusion=bool(opts.get("recompute")),
            compile_refine=bool(opts.get("compile")),
        )
        joint._validate = bool(opts.get("validate"))  # bench knob: the pre-issue-11 validated assignment
        joint._u_cells = opts.get("u_cells", True)  # bench knob: the hard fusion's U per superpixel
        if joint.fusion is not None:
            joint.fusion._impl = opts.get("impl", "fused")  # bench knob: concat / split / nhwc / fused
            joint.fusion._products = opts.get("products", "auto")  # bench knob: the fused form's products
            # bench knob: the final uniformization folded into the stack (its last layer on superpixel means)
            joint.fusion._pool_last = opts.get("pool_last", True)
            if "chunk_rows" in opts:  # bench knob: the NHWC form in one piece (None) or in other chunks
                joint.fusion.cpu_chunk_rows = opts["chunk_rows"]
        model = joint
    model.to(device).train()
    if args.freeze_bn:  # the joint stage's default: DeepLabV3+ BatchNorm statistics frozen
        for m in deeplab.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    return model


def make_batch(
    args: argparse.Namespace, device: torch.device, channels_last: ChannelsLast
) -> tuple[Tensor, Tensor]:
    """Images and labels; the images in channels_last when DeepLabV3+ runs so (the joint model converts the
    SpixelFCN input itself)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.size, args.size, generator=g)
    y = torch.randint(0, NUM_CLASSES, (args.batch_size, args.size, args.size), generator=g)
    if network_channels_last(channels_last, "deeplab"):
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device), y.to(device)


def _autocast(device: torch.device, amp: bool) -> AbstractContextManager[Any]:
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return nullcontext()


def spixel_loss_of(assoc: Tensor, y: Tensor, args: argparse.Namespace, opts: dict[str, Any]) -> Tensor:
    """The training CLI's superpixel loss (:func:`examples.voc_joint.engine.superpixel_loss`)."""
    from examples.voc_joint.engine import superpixel_loss

    return superpixel_loss(
        assoc,
        y,
        args.cell_size,
        pos_weight=0.003,
        num_classes=NUM_CLASSES,
        recompute=bool(opts.get("recompute_loss")),
    )


def loss_of(
    variant: str, model: nn.Module, x: Tensor, y: Tensor, args: argparse.Namespace, opts: dict[str, Any]
) -> Tensor:
    if variant == "deeplab":
        return cross_entropy(model(x), y)
    if variant == "spixelfcn":  # its input converted in the step, as JointModel.forward does
        if network_channels_last(opts.get("channels_last", False), "spixelfcn"):
            x = x.contiguous(memory_format=torch.channels_last)
        return spixel_loss_of(model(x), y, args, opts)
    out = model(x, x)
    return cross_entropy(out["logits"], y) + spixel_loss_of(out["assoc"], y, args, opts)


def make_step(
    variant: str, args: argparse.Namespace, device: torch.device, opts: dict[str, Any]
) -> tuple[nn.Module, Callable[[], None]]:
    """``(model, step)``: the model and a closure doing one full training step on a fixed batch."""
    model = build_model(variant, args, device, opts)
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9, weight_decay=5e-4)
    amp = args.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp) if device.type == "cuda" else None
    x, y = make_batch(args, device, opts.get("channels_last", False))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with _autocast(device, args.amp):
            loss = loss_of(variant, model, x, y, args, opts)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    return model, step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    steps: dict[str, Callable[[], None]],
    args: argparse.Namespace,
    device: torch.device,
    rounds: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Median / min seconds of every step, over rounds that alternate them (after warm-up steps).

    ``"samples_s"`` keeps every round's time, so that ratios can be paired round by round;
    ``"minor_faults"`` is the median number of the process's minor page faults during one step (``None``
    where the platform does not count them): the host pages the step's allocations touch for the first time,
    a cost on the CPU that the FLOP count does not show (see :func:`minor_faults`).
    """
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    _sync(device)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    samples: dict[str, list[float]] = {k: [] for k in steps}
    faults: dict[str, list[int]] = {k: [] for k in steps}
    for _ in range(args.rounds if rounds is None else rounds):
        for k, fn in steps.items():
            _sync(device)
            f0 = minor_faults()
            t0 = clock()
            fn()
            _sync(device)
            samples[k].append(clock() - t0)
            f1 = minor_faults()
            if f0 is not None and f1 is not None:
                faults[k].append(f1 - f0)
    return {
        k: {
            "median_s": statistics.median(s),
            "min_s": min(s),
            "samples": len(s),
            "samples_s": s,
            "minor_faults": statistics.median(faults[k]) if faults[k] else None,
        }
        for k, s in samples.items()
    }


def minor_faults() -> int | None:
    """The process's minor page faults so far (``getrusage``), or ``None`` where there is no such count.

    With glibc's default malloc, a large tensor freed at the end of a step can go back to the kernel and the
    next step's tensor of that size then faults its pages in again (zero-filled). On the 2-core AMD EPYC VM
    (2026-12-04) that was about 8 650 faults (34 MiB) per step for every variant alike, and removing them with
    glibc's ``MALLOC_*`` options did not make the steps faster (benchmarks page, 2026-12-04 paragraph).
    """
    if resource is None:  # Windows
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def paired_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Median over rounds of ``a / b`` within each round (robust to load that drifts between rounds)."""
    return statistics.median(x / y for x, y in zip(a["samples_s"], b["samples_s"], strict=True))


class SavedBytes:
    """Context manager: bytes of the distinct storages autograd saves for backward, parameters excluded.

    Under autocast (``--amp``) the low-precision copies of the weights that autograd saves count too: they are
    new storages held for backward like any activation.
    """

    def __init__(self, exclude: nn.Module | None = None) -> None:
        self.seen: dict[int, int] = {}
        self.params = (
            set() if exclude is None else {p.untyped_storage().data_ptr() for p in exclude.parameters()}
        )
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: Tensor) -> Tensor:
        st = t.untyped_storage()
        self.seen[st.data_ptr()] = st.nbytes()
        return t

    def __enter__(self) -> SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def total(self) -> int:
        return int(sum(n for ptr, n in self.seen.items() if ptr not in self.params))


def saved_activation_bytes(
    variant: str, args: argparse.Namespace, device: torch.device, opts: dict[str, Any]
) -> int:
    """Bytes of the distinct tensor storages autograd saves for backward in one forward (+ loss) pass.

    This is the activation memory of a training step (the dominant term that grows with B x H x W), measured
    exactly and deterministically, on any device.
    """
    model = build_model(variant, args, device, opts)
    x, y = make_batch(args, device, opts.get("channels_last", False))
    with SavedBytes(model) as saved, _autocast(device, args.amp):
        loss_of(variant, model, x, y, args, opts)
    return saved.total


def peak_memory_cuda(
    variant: str, args: argparse.Namespace, device: torch.device, opts: dict[str, Any]
) -> int:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    model, step = make_step(variant, args, device, opts)
    step()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del model, step
    return int(peak)


# ------------------------------------------------------------------------------------------------ breakdown
BREAKDOWN_PARTS = ("DeepLabV3+", "SpixelFCN", "superpixel ids", "uniformization", "fusion", "loss")


def breakdown(
    args: argparse.Namespace, device: torch.device, opts: dict[str, Any], model: nn.Module
) -> dict[str, dict[str, float]]:
    """Forward + backward time and saved bytes of each part of one step of ``model`` (``joint_hard_ti`` of
    :func:`build_model` with ``opts``), in isolation.

    Each part runs on detached copies of its real inputs (leaf tensors that require grad where the step
    back-propagates into them). Timed alone, the parts add up to more than the step (each pays its own
    allocations and cold caches): use their shares, not their sum.
    """
    from torch.utils.checkpoint import checkpoint

    x, y = make_batch(args, device, opts.get("channels_last", False))
    x_spixel = (  # the SpixelFCN input in the network's memory format, as JointModel.forward makes it
        x.contiguous(memory_format=torch.channels_last)
        if network_channels_last(opts.get("channels_last", False), "spixelfcn")
        else x
    )
    with torch.no_grad(), _autocast(device, args.amp):
        s0 = model.deeplab(x).float()
        q0 = model.spixelfcn(x_spixel).float()
    ids0 = model.superpixels(q0)
    enc0 = model.assignment(ids0)
    u0 = enc0.uniformize(s0)
    # the parts' inputs, made once here without a graph: the loss part made final0 in its timed runs (one more
    # uniformization of the fusion's output, its time and saved bytes charged to the loss)
    with torch.no_grad():
        f0 = model.fusion(s0, u0)
        final0 = enc0.uniformize(f0)
    g_s, g_q = torch.randn_like(s0), torch.randn_like(q0)

    def leaf(t: Tensor) -> Tensor:
        return t.detach().clone().requires_grad_(True)

    def p_deeplab() -> Callable[[], None]:
        with _autocast(device, args.amp):
            out = model.deeplab(x)
        return lambda: out.float().backward(g_s)

    def p_spixel() -> Callable[[], None]:
        with _autocast(device, args.amp):
            out = model.spixelfcn(x_spixel)
        return lambda: out.float().backward(g_q)

    def p_ids() -> Callable[[], None]:
        model.assignment(model.superpixels(q0))
        return lambda: None

    # the hard fusion returns its output uniformized: where it folds that uniformization into its last layer
    # (the CPU), the final decode belongs to the fusion's part, elsewhere the final uniformization to this one
    folded = model.fusion.folds_uniformization(device)
    pool = (ids0, enc0)

    # and where it folds it, it also makes U itself, on the superpixel means of S (JointModel._u_cells)
    u_inside = folded and model._u_cells

    def p_uniformize() -> Callable[[], None]:  # the uniformizations of the step outside the fusion
        if u_inside:  # none: the fusion makes U and uniformizes its own output
            return lambda: None
        s, f = leaf(s0), leaf(f0)
        outs = [enc0.uniformize(s)] if folded else [enc0.uniformize(s), enc0.uniformize(f)]
        return lambda: torch.autograd.backward(outs, [g_s] * len(outs))

    def p_fusion() -> Callable[[], None]:
        s, u = leaf(s0), leaf(u0)
        kept = {"uniformize": pool} if folded else {}
        if u_inside:  # (a folding stack is the fused form) as JointModel.refine does it
            out = model.fusion(s, None, recompute=model.recompute_fusion, **kept)
        elif model.recompute_fusion and model.fusion._impl == "fused":  # as JointModel.refine does it
            out = model.fusion(s, u, recompute=True, u_of=enc0.uniformize, **kept)
        elif model.recompute_fusion:
            out = checkpoint(model.fusion, s, u, use_reentrant=False, preserve_rng_state=False, **kept)
        else:
            out = model.fusion(s, u, **kept)
        return lambda: out.backward(g_s)

    def p_loss() -> Callable[[], None]:
        final, q = leaf(final0), leaf(q0)
        loss = cross_entropy(final, y) + spixel_loss_of(q, y, args, opts)
        return loss.backward

    parts = dict(
        zip(BREAKDOWN_PARTS, (p_deeplab, p_spixel, p_ids, p_uniformize, p_fusion, p_loss), strict=True)
    )
    saved = {}
    for name, part in parts.items():
        with SavedBytes(model) as sb:
            backward = part()
        backward()
        saved[name] = sb.total
        model.zero_grad(set_to_none=True)

    def timed(part: Callable[[], Callable[[], None]]) -> Callable[[], None]:
        def run() -> None:
            part()()
            model.zero_grad(set_to_none=True)

        return run

    times = time_steps({k: timed(p) for k, p in parts.items()}, args, device)
    return {k: {"median_s": times[k]["median_s"], "saved_bytes": saved[k]} for k in parts}


def fusion_flops(model: nn.Module, pixels: int, device: torch.device, superpixels: int | None) -> int:
    """Floating-point operations of the matrix products of one forward + backward of ``model``'s fusion stack
    over ``pixels`` pixels (2 per multiply-add): every layer's forward, weight gradient and input gradient,
    and, when the stack recomputes (``recompute_fusion``), every hidden layer's forward once more.

    ``superpixels`` (over the batch): the stack returns its output uniformized (the hard joint model). Where
    it folds that uniformization into its last layer (:meth:`FusionStack.folds_uniformization`), that layer's
    three products run once per superpixel instead of once per pixel, and only the hidden layers below the
    last one are recomputed; when the stack also makes ``U`` itself (``model._u_cells``, the joint model's
    default), the first layer's ``U`` half runs per superpixel too (its products, and its forward once more
    where the first layer is recomputed). ``None``: the stack alone, per pixel."""
    fusion = model.fusion
    assert isinstance(fusion, FusionStack)
    macs = [m.weight.shape[0] * m.weight.shape[1] for m in fusion.convs]
    recompute = bool(model.recompute_fusion)
    if superpixels is not None and fusion.folds_uniformization(device):
        per_cell = 3 * macs[-1]
        if getattr(model, "_u_cells", False):
            half = macs[0] // 2  # the first layer's U half, on the superpixels
            per_cell += 3 * half + (half if recompute and len(macs) > 2 else 0)
            macs[0] -= half
        per_pixel = 3 * sum(macs[:-1]) + (sum(macs[:-2]) if recompute else 0)
        return 2 * (pixels * per_pixel + superpixels * per_cell)
    per_pixel = 3 * sum(macs) + (sum(macs[:-1]) if model.recompute_fusion else 0)
    return 2 * pixels * per_pixel


def fusion_floor(
    args: argparse.Namespace, device: torch.device, model: nn.Module, fusion_s: float
) -> dict[str, Any]:
    """The arithmetic of ``model``'s fusion stack (the breakdown's ``joint_hard_ti``: only its layer shapes,
    its CPU chunk and whether it recomputes are read) against the faster of two product rates on its widest
    layer, in this run.

    ``matmul_gflops`` is ``torch.mm`` of one chunk of rows (the CPU chunk, at most one image, or every pixel
    on other devices) by the widest hidden layer's square weight; ``conv_gflops`` the same product as a 1x1
    convolution over the chunk in channels_last (``(1, width, chunk / size, size)``: the oneDNN form the stack
    runs on the CPU); each timed over ``args.rounds``. ``floor_s`` is the fusion's arithmetic at the faster
    rate: an estimate of the least the stack could take with these products, not a bound on every
    implementation."""
    pixels = args.batch_size * args.size * args.size
    superpixels = args.batch_size * num_grid_cells(args.size, args.size, args.cell_size)
    flops = fusion_flops(model, pixels, device, superpixels if model.mode == "hard" else None)
    fusion = model.fusion
    assert isinstance(fusion, FusionStack)
    width = max(m.weight.shape[0] for m in fusion.convs)
    chunk = fusion.cpu_chunk_rows if device.type == "cpu" else None
    # a CPU chunk never spans two images (the stack runs image by image)
    rows = min(chunk, args.size * args.size) if chunk else pixels
    image_rows = max(1, rows // args.size)  # the convolution's chunk: whole rows of an image
    g = torch.Generator(device="cpu").manual_seed(2)
    a = torch.randn(rows, width, generator=g).to(device)
    w = torch.randn(width, width, generator=g).to(device)
    out = torch.empty(rows, width, device=device)
    x = torch.randn(1, width, image_rows, args.size, generator=g).to(
        device, memory_format=torch.channels_last
    )
    filters = w[:, :, None, None]

    def product() -> None:
        torch.mm(a, w.t(), out=out)

    def convolution() -> None:
        F.conv2d(x, filters)

    times = time_steps({"mm": product, "conv": convolution}, args, device)
    matmul_gflops = 2 * rows * width * width / times["mm"]["median_s"] / 1e9
    conv_gflops = 2 * image_rows * args.size * width * width / times["conv"]["median_s"] / 1e9
    return {
        "flops": flops,
        "gflops": flops / fusion_s / 1e9,
        "matmul_shape": [rows, width, width],
        "matmul_gflops": matmul_gflops,
        "conv_shape": [1, width, image_rows, args.size],
        "conv_gflops": conv_gflops,
        "floor_s": flops / (max(matmul_gflops, conv_gflops) * 1e9),
    }


def _addmm_inplace_flops(
    self_shape: Any, a: Any, b: Any, *rest: Any, out_shape: Any = None, **kw: Any
) -> int:
    """FLOPs of ``x.addmm_(a, b)``, which torch's FLOP counter does not count by default."""
    return 2 * a[0] * a[1] * b[1]


def _conv_add_inplace_flops(
    other_shape: Any, x: Any, w: Any, *rest: Any, out_shape: Any = None, **kw: Any
) -> int:
    """FLOPs of oneDNN's ``other += conv(x, w)`` (``torch.ops.mkldnn._convolution_pointwise_``, the fused
    stack's first layer on the CPU), which torch's FLOP counter does not count: 2 per weight per output."""
    return 2 * math.prod(other_shape) * math.prod(w[1:])  # w[1:]: (C_in / groups) x kernel


def step_flops(step: Callable[[], None], opts: dict[str, Any]) -> int | None:
    """FLOPs of the convolutions and matrix products of one call of ``step`` (a training step of
    :func:`make_step`: forward + backward), counted by ``torch.utils.flop_counter`` (the fused stack's
    in-place ``addmm_`` and oneDNN convolutions with a sum post-op included; elementwise work, the optimizer
    and the superpixel ops are not counted). ``None`` with ``compile``."""
    if opts.get("compile"):
        return None
    from torch.utils.flop_counter import FlopCounterMode

    mapping: dict[Any, Callable[..., int]] = {torch.ops.aten.addmm_: _addmm_inplace_flops}
    if torch.backends.mkldnn.is_available():
        mapping[torch.ops.mkldnn._convolution_pointwise_] = _conv_add_inplace_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        step()
    flops: int = counter.get_total_flops()
    return flops


# ---------------------------------------------------------------------------------------------------- main
def measure_pair_set(
    variants: list[str], args: argparse.Namespace, device: torch.device, opts: dict[str, Any]
) -> list[dict[str, Any]]:
    """Time and memory rows of ``variants`` measured together (same run, same options), ratios to deeplab."""
    steps = {v: make_step(v, args, device, opts)[1] for v in variants}
    times = time_steps(steps, args, device)
    flops = {v: step_flops(step, opts) for v, step in steps.items()}  # one more step each, not timed
    del steps
    mems: dict[str, dict[str, int]] = {}
    for v in variants:
        mems[v] = {"saved_activations": saved_activation_bytes(v, args, device, opts)}
        if device.type == "cuda":
            mems[v]["cuda_peak_allocated"] = peak_memory_cuda(v, args, device, opts)
    key = "cuda_peak_allocated" if device.type == "cuda" else "saved_activations"
    base_f = flops.get("deeplab")
    base_t = times["deeplab"]["median_s"] if "deeplab" in times else None
    base_m = mems["deeplab"][key] if "deeplab" in mems else None
    rows = []
    for v in variants:
        t, m, f = times[v]["median_s"], mems[v][key], flops[v]
        rows.append(
            {
                "variant": v,
                **times[v],
                "memory_bytes": mems[v],
                "time_ratio": t / base_t if base_t else None,
                "time_ratio_paired": paired_ratio(times[v], times["deeplab"]) if "deeplab" in times else None,
                "memory_ratio": m / base_m if base_m else None,
                "saved_ratio": mems[v]["saved_activations"] / mems["deeplab"]["saved_activations"]
                if "deeplab" in mems
                else None,
                "flops": f,
                "flop_ratio": f / base_f if f is not None and base_f else None,
            }
        )
    return rows


def refine_step(
    model: nn.Module, args: argparse.Namespace, device: torch.device, cl: ChannelsLast
) -> Callable[[], None]:
    """Forward + backward of ``JointModel.refine`` (all after the two networks) on fixed ``S``, ``Q``."""
    g = torch.Generator().manual_seed(2)
    shape = (args.batch_size, NUM_CLASSES, args.size, args.size)
    s0 = (4 * torch.randn(shape, generator=g)).to(device)
    q0 = torch.softmax(torch.randn(args.batch_size, 9, args.size, args.size, generator=g), 1).to(device)
    # what the networks return in channels_last
    if network_channels_last(cl, "deeplab"):
        s0 = s0.contiguous(memory_format=torch.channels_last)
    if network_channels_last(cl, "spixelfcn"):
        q0 = q0.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(shape, generator=g).to(device)

    def run() -> None:
        s = s0.detach().requires_grad_(True)
        out, _ = model.refine(s, q0)
        out.backward(grad)
        model.zero_grad(set_to_none=True)

    return run


def lever_study(args: argparse.Namespace, device: torch.device, head: str) -> list[dict[str, Any]]:
    """Every lever configuration of ``joint_hard_ti`` and DeepLabV3+ alone in both memory formats, timed in
    the same rounds (all steps alternate), so that a shared machine's load hits every configuration alike.

    Step ratios use the DeepLabV3+ step of the same memory format, as the ratio of the medians and as the
    median of the round-by-round ratios (``paired``, the more robust one on a loaded machine). ``refine ms``
    times what most levers change, everything after the two networks (superpixel ids, assignment, both
    uniformizations, fusion; forward + backward), alone over ``3 x --rounds`` alternating rounds.
    """
    specs: dict[str, tuple[str, dict[str, Any]]] = {
        "deeplab NCHW": ("deeplab", {}),
        "deeplab channels_last": ("deeplab", {"channels_last": True}),
    }
    failed: dict[str, str] = {}
    steps: dict[str, Callable[[], None]] = {}
    refines: dict[str, Callable[[], None]] = {}
    for name, lever in LEVERS:
        specs[name] = ("joint_hard_ti", lever)
    for name, (variant, lever) in specs.items():
        try:
            model, step = make_step(variant, args, device, lever)
            step()  # compiles here with "compile": a failure (e.g. no C++ compiler) is reported, not fatal
            steps[name] = step
            if variant != "deeplab":
                refines[name] = refine_step(model, args, device, lever.get("channels_last", False))
                refines[name]()
        except Exception as exc:  # noqa: BLE001  # report any failure of one configuration and go on
            failed[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            steps.pop(name, None)
            refines.pop(name, None)
    times = time_steps(steps, args, device)
    refine_times = time_steps(refines, args, device, rounds=3 * args.rounds)
    print(f"\nlever study (cumulative; all configurations alternate in the same rounds), {head}")
    print(
        f"{'configuration':<44} {'joint ms':>9} {'x deeplab':>10} {'paired':>7} {'refine ms':>10} "
        f"{'saved x':>8}"
    )
    rows: list[dict[str, Any]] = []
    base_saved = {
        cl: saved_activation_bytes("deeplab", args, device, {"channels_last": cl}) for cl in (False, True)
    }
    for name, lever in LEVERS:
        if name in failed or name not in times:
            print(f"{name:<44} failed: {failed.get(name)}")
            rows.append({"lever": name, "options": lever, "error": failed.get(name)})
            continue
        cl = network_channels_last(lever.get("channels_last", False), "deeplab")
        base = times["deeplab channels_last" if cl else "deeplab NCHW"]
        t = times[name]
        saved = saved_activation_bytes("joint_hard_ti", args, device, lever)
        row = {
            "lever": name,
            "options": lever,
            "joint_s": t["median_s"],
            "joint_min_s": t["min_s"],
            "deeplab_s": base["median_s"],
            "deeplab_min_s": base["min_s"],
            "time_ratio": t["median_s"] / base["median_s"],
            "time_ratio_paired": paired_ratio(t, base),
            "refine_s": refine_times[name]["median_s"],
            "refine_min_s": refine_times[name]["min_s"],
            "saved_bytes": saved,
            "saved_ratio": saved / base_saved[cl],
        }
        rows.append(row)
        print(
            f"{name:<44} {1e3 * t['median_s']:>9.1f} {row['time_ratio']:>10.2f} "
            f"{row['time_ratio_paired']:>7.2f} {1e3 * row['refine_s']:>10.1f} {row['saved_ratio']:>8.2f}"
        )
    for cl in (False, True):
        name = "deeplab channels_last" if cl else "deeplab NCHW"
        if name in times:
            print(
                f"{name:<44} {1e3 * times[name]['median_s']:>9.1f} (saved {base_saved[cl] / 2**20:.1f} MiB)"
            )
            rows.append(
                {"lever": name, "deeplab_s": times[name]["median_s"], "deeplab_min_s": times[name]["min_s"]}
            )
    return rows


def format_study(args: argparse.Namespace, device: torch.device, head: str) -> list[dict[str, Any]]:
    """Each network's training step alone in NCHW and in channels_last, all four alternating in the same
    rounds: the evidence for :data:`DEFAULT_CHANNELS_LAST` (a network runs channels_last by default where it
    wins).

    DeepLabV3+ as in the ``deeplab`` variant (cross-entropy, BatchNorm frozen with ``--freeze-bn``), SpixelFCN
    with the training CLI's ``spixel_loss`` (its input converted in the step, as ``JointModel`` does); both
    with an SGD step. ``time_ratio_paired`` is channels_last over NCHW, the median of the round-by-round
    ratios (below 1: channels_last is faster).
    """
    steps: dict[str, Callable[[], None]] = {}
    for network in FORMAT_NETWORKS:
        for cl in (False, True):
            name = f"{network} {_format_name(cl)}"
            _, steps[name] = make_step(network, args, device, {"channels_last": cl})
    times = time_steps(steps, args, device)
    default = DEFAULT_CHANNELS_LAST.get(device.type, False)
    print(f"\nmemory format study (each network alone, all four steps alternate), {head}")
    print(f"{'network':<10} {'NCHW ms':>9} {'ch.last ms':>11} {'ratio':>7} {'paired':>7}  default here")
    rows: list[dict[str, Any]] = []
    for network in FORMAT_NETWORKS:
        nchw, cl = times[f"{network} NCHW"], times[f"{network} channels_last"]
        row = {
            "network": network,
            "nchw_s": nchw["median_s"],
            "channels_last_s": cl["median_s"],
            "time_ratio": cl["median_s"] / nchw["median_s"],
            "time_ratio_paired": paired_ratio(cl, nchw),
            "default_channels_last": network_channels_last(default, network),
            "samples_nchw_s": nchw["samples_s"],
            "samples_channels_last_s": cl["samples_s"],
        }
        rows.append(row)
        print(
            f"{network:<10} {1e3 * row['nchw_s']:>9.1f} {1e3 * row['channels_last_s']:>11.1f} "
            f"{row['time_ratio']:>7.3f} {row['time_ratio_paired']:>7.3f}  "
            f"{_format_name(row['default_channels_last'])}"
        )
    return rows


def _format_name(channels_last: bool) -> str:
    return "channels_last" if channels_last else "NCHW"


def _mem_name(device: torch.device) -> str:
    return "CUDA peak" if device.type == "cuda" else "saved act."


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line (``python benchmarks/bench_joint.py --help``)."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--backbone", default="resnet18", choices=BACKBONES, help="DeepLabV3+ backbone")
    p.add_argument("--batch-size", type=int, default=2, help="batch size")
    p.add_argument("--size", type=int, default=128, help="square input size")
    p.add_argument("--cell-size", type=int, default=16, help="superpixel cell size")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (each runs every variant once)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or the process's CPU time (CPU only; with --threads 1 a load-robust proxy on a "
        "shared machine)",
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="what to run")
    p.add_argument(
        "--amp", action="store_true", help="float16 autocast + grad scaling (CUDA; ignored on CPU)"
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format for both networks of every variant, or for neither (default: where "
        "it wins, per network: DEFAULT_CHANNELS_LAST)",
    )
    defaults = cli_defaults()
    p.add_argument(
        "--recompute-fusion",
        dest="recompute",  # the result files' key
        action=argparse.BooleanOptionalAction,
        default=defaults["recompute"],
        help="recompute the fusion stack in backward (default: the training CLI's --recompute-fusion)",
    )
    p.add_argument(
        "--recompute-loss",
        action=argparse.BooleanOptionalAction,
        default=defaults["recompute_loss"],
        help="recompute spixel_loss in backward (default: the training CLI's --recompute-loss)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=defaults["compile"],
        help="torch.compile the joint model's refine step (default: the training CLI's --compile)",
    )
    p.add_argument(
        "--freeze-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="DeepLabV3+ BatchNorm in eval mode, as in the joint stage of the training CLI",
    )
    add_fusion_hidden(p)
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-part breakdown")
    p.add_argument(
        "--levers", action="store_true", help="also run the lever study (deeplab vs joint_hard_ti)"
    )
    p.add_argument(
        "--formats",
        action="store_true",
        help="also run the memory-format study (DeepLabV3+ and SpixelFCN alone, NCHW vs channels_last)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "joint.json",
        help="JSON path; the entries of other configurations there are kept "
        "(default: benchmarks/results/joint.json)",
    )
    return p


def existing_entries(out: Path) -> dict[str, Any]:
    """The entries of the result file ``out`` that a run keeps (every key but its own): ``{}`` where there is
    no file or an empty one.

    Raises:
        ValueError: ``out`` holds no JSON object (a merge conflict, a hand edit gone wrong): writing over it
            would drop every other entry (those of other machines), so it is refused, naming the file.
    """
    keep = "mend it or pass another --out (writing over it would drop the entries of the other runs)"
    try:
        text = out.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--out {str(out)!r} cannot be read ({exc}): {keep}") from None
    if not text.strip():
        return {}
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--out {str(out)!r} holds no JSON ({exc}): {keep}") from None
    if not isinstance(entries, dict):
        raise ValueError(f"--out {str(out)!r} holds a JSON {type(entries).__name__}, not an object: {keep}")
    return entries


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks that involve several options or more than a type (``p.error``: exit status 2)."""
    if args.batch_size < 2:
        p.error(
            f"--batch-size must be >= 2 (the ASPP image-pooling BatchNorm sees one value per channel per "
            f"image in training mode), got {args.batch_size}"
        )
    check_counts(
        p, args, {"batch_size": 2, "size": 1, "cell_size": 1, "rounds": 1, "warmup": 0, "threads": 1}
    )
    check_output(p, "--out", args.out)
    try:  # before the run, not after it: the file's other entries are kept, so they must be readable
        existing_entries(args.out)
    except ValueError as exc:
        p.error(str(exc))
    if args.cell_size > MAX_CELL:  # SpixelFCN's (and a checkpoint's) bound
        p.error(f"--cell-size must be <= {MAX_CELL} (SpixelFCN's bound), got {args.cell_size}")
    if args.cell_size > args.size:  # one superpixel for the whole image: nothing to measure
        p.error(f"--cell-size {args.cell_size} is larger than --size {args.size}")
    error = fusion_hidden_error(args.fusion_hidden, NUM_CLASSES)
    if error:
        p.error(error)
    if args.clock == "cpu" and cli_device(p, args.device).type != "cpu":
        p.error(f"--clock cpu measures CPU time and needs --device cpu, got --device {args.device}")


def main(argv: list[str] | None = None) -> dict:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    torch.set_num_threads(args.threads)
    device = cli_device(p, args.device)
    amp_used = args.amp and device.type == "cuda"
    result_key = entry_key(p, args, device, amp_used)  # before the defaults are filled in
    if args.channels_last is None:
        args.channels_last = DEFAULT_CHANNELS_LAST.get(device.type, False)
    if args.amp and not amp_used:
        print("note: --amp is ignored on CPU (as in the training CLI)")
    load0 = load_average()  # before this run: is the machine shared right now? (None: unknown, Windows)
    load_text = "n/a" if load0 is None else f"{load0:.2f}"
    opts = default_options(args)
    variants = list(args.variants)
    rows = measure_pair_set(variants, args, device, opts)
    head = (
        f"B={args.batch_size}, {args.size}x{args.size}, {args.backbone}, {device}, amp={amp_used}, "
        f"channels_last={args.channels_last}, recompute={args.recompute}, "
        f"recompute_loss={args.recompute_loss}, compile={args.compile}, "
        f"fusion_hidden={' '.join(map(str, args.fusion_hidden))}, "
        f"{args.threads} thread(s), {args.clock} clock, torch {torch.__version__}, load {load_text}"
    )
    cpu = cpu_model()
    print(f"\n{cpu}, {os.cpu_count()} CPUs")
    print(f"training step (median of {args.rounds}), {head}")
    mem_name = _mem_name(device)
    print(
        f"{'variant':<18} {'step ms':>9} {'x deeplab':>10} {'paired':>7} {mem_name + ' MiB':>15} "
        f"{'x deeplab':>10} {'GFLOP':>7} {'x deeplab':>10} {'faults':>7}"
    )
    key = "cuda_peak_allocated" if device.type == "cuda" else "saved_activations"
    for r in rows:
        m = r["memory_bytes"][key]
        gflop = "-" if r.get("flops") is None else f"{r['flops'] / 1e9:.1f}"
        faults = "-" if r.get("minor_faults") is None else f"{r['minor_faults']:.0f}"
        print(
            f"{r['variant']:<18} {1e3 * r['median_s']:>9.1f} {_fmt(r['time_ratio']):>10} "
            f"{_fmt(r['time_ratio_paired']):>7} {m / 2**20:>15.1f} {_fmt(r['memory_ratio']):>10} "
            f"{gflop:>7} {_fmt(r.get('flop_ratio')):>10} {faults:>7}"
        )
    print("GFLOP: convolutions and matrix products of one step, forward + backward (torch's FLOP counter)")
    print("faults: the process's minor page faults during one step (median), the allocator's fresh pages")

    result: dict[str, Any] = {
        "benchmark": "joint training step vs DeepLabV3+ alone",
        "config": options_of(args),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_at_start": load0,
            "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),  # the table's timings done
            # glibc's malloc options (they change the page faults of every step: see minor_faults)
            "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")},
        },
        "rows": rows,
    }

    if not args.no_breakdown:
        model = build_model("joint_hard_ti", args, device, opts)  # the parts and the floor: one model
        parts = breakdown(args, device, opts, model)
        base = next((r for r in rows if r["variant"] == "deeplab"), None)
        total_t = sum(v["median_s"] for v in parts.values())
        print(f"\nbreakdown of one joint_hard_ti step (parts timed in isolation, forward + backward), {head}")
        print(f"{'part':<16} {'ms':>8} {'% parts':>8} {'saved MiB':>10}")
        for name, v in parts.items():
            print(
                f"{name:<16} {1e3 * v['median_s']:>8.1f} {100 * v['median_s'] / total_t:>7.1f}% "
                f"{v['saved_bytes'] / 2**20:>10.1f}"
            )
        full = next((r for r in rows if r["variant"] == "joint_hard_ti"), None)
        if full is not None:
            print(
                f"{'sum of parts':<16} {1e3 * total_t:>8.1f}    (full step {1e3 * full['median_s']:.1f} ms)"
            )
        floor = fusion_floor(args, device, model, parts["fusion"]["median_s"])
        del model
        rows_, width = floor["matmul_shape"][:2]
        print(
            f"fusion: {floor['flops'] / 1e9:.2f} GFLOP of products per step, {floor['gflops']:.0f} GFLOP/s; "
            f"in this run torch.mm ({rows_} x {width}) @ ({width} x {width}) {floor['matmul_gflops']:.0f} "
            f"GFLOP/s, a 1x1 convolution of {tuple(floor['conv_shape'])} in channels_last "
            f"{floor['conv_gflops']:.0f} GFLOP/s, so >= {1e3 * floor['floor_s']:.1f} ms at the faster rate"
        )
        noti = next((r for r in rows if r["variant"] == "joint_hard_noti"), None)
        floor["step_ratio_floor"] = None
        if noti is not None and base is not None:  # the step with the fusion's products at the faster rate
            floor["step_ratio_floor"] = (noti["median_s"] + floor["floor_s"]) / base["median_s"]
            print(
                f"joint_hard_noti + the fusion at the faster rate: {floor['step_ratio_floor']:.2f}x deeplab "
                f"(joint_hard_ti measured {_fmt(full['time_ratio'] if full else None)}x)"
            )
        result["breakdown"] = {
            "parts": parts,
            "sum_of_parts_s": total_t,
            "deeplab_step_s": base["median_s"] if base else None,
            "fusion_floor": floor,
        }

    if args.levers:
        result["levers"] = lever_study(args, device, head)

    if args.formats:
        result["formats"] = format_study(args, device, head)

    existing = existing_entries(args.out)  # read again: another run may have added its entry meanwhile
    existing.pop(device.type, None)  # layout of an older version of this script
    earlier = existing.get(result_key)
    existing[result_key] = result
    write_json(args.out, existing)
    print(f"written to {args.out} (key {result_key!r})")
    if isinstance(earlier, dict):
        dropped = [
            part for part in ("breakdown", "levers", "formats") if part in earlier and part not in result
        ]
        when = earlier.get("machine", {}).get("time", "an earlier run")
        print(
            f"it replaces the entry of {when}"
            + (f", which also held: {', '.join(dropped)} (this run has none)" if dropped else "")
        )
    return result


# The options that change what a run measures, beyond the key's device, backbone, batch, size and AMP: a run
# with any of them off its default is written beside the default run's entry, named after them, not over it.
KEY_OPTIONS = (
    "fusion_hidden",
    "variants",
    "cell_size",
    "threads",
    "clock",
    "channels_last",
    "recompute",
    "recompute_loss",
    "compile",
    "freeze_bn",
)


def entry_key(p: argparse.ArgumentParser, args: argparse.Namespace, device: torch.device, amp: bool) -> str:
    """The run's key in the result file: ``<device>_<backbone>_b<batch>_<size>[_amp]``, then one part for each
    of ``KEY_OPTIONS`` off its default, in the command line's words (``_fusion64`` for ``--fusion-hidden 64``,
    ``_threads1``, ``_no-recompute-fusion``, ``_variants-deeplab``, ...).

    Before, only the fusion widths were in the key: a run of the docs' own ``--variants deeplab
    --no-breakdown --formats`` replaced the default run's whole entry (every variant, the breakdown and the
    lever study) with its one row, without a word.
    """
    key = f"{device.type}_{args.backbone}_b{args.batch_size}_{args.size}" + ("_amp" if amp else "")
    for dest in KEY_OPTIONS:
        value, default = getattr(args, dest), p.get_default(dest)
        if value == default or (isinstance(value, list) and list(value) == list(default)):
            continue
        if dest == "fusion_hidden":
            key += "_fusion" + "-".join(map(str, value))
        elif dest == "variants":
            key += "_variants-" + "+".join(value)
        elif isinstance(value, bool):
            flag = {"recompute": "recompute-fusion"}.get(dest, dest.replace("_", "-"))
            key += f"_{flag}" if value else f"_no-{flag}"
        else:
            key += f"_{dest.replace('_', '-')}{'-' if isinstance(value, str) else ''}{value}"  # _clock-cpu
    return key


def _fmt(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback
    raise SystemExit(run_script(main, "bench_joint.py"))
