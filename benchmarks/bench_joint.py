"""Training-step cost of the joint model against DeepLabV3+ alone (the overhead of the method, as a ratio).

Variants, all with the same DeepLabV3+ and the same batch:

* ``deeplab``            DeepLabV3+ alone, cross-entropy;
* ``joint_hard_noti``    + SpixelFCN + hard uniformization (no transparent layers) + spixel_loss;
* ``joint_hard_ti``      + the transparent fusion stack (42 -> 128 -> 128 -> 21) -- the paper's model;
* ``joint_soft_ti``      soft uniformization (segmentation loss reaches SpixelFCN) + transparent stack.

One step = forward, loss, backward, SGD step. Medians over rounds that alternate the variants. Memory: the
bytes of activations autograd saves for backward (distinct storages, exact, any device) and, on CUDA, the
``torch.cuda.max_memory_allocated`` peak of one step.

Usage::

    python benchmarks/bench_joint.py                      # CPU, B=2, 128x128, ResNet-18
    python benchmarks/bench_joint.py --device cuda --batch-size 8 --size 512 --backbone resnet101

Writes ``benchmarks/results/joint.json`` (or ``--output``), one entry per device / backbone / batch / size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

VARIANTS = ("deeplab", "joint_hard_noti", "joint_hard_ti", "joint_soft_ti")


def build(variant: str, args: argparse.Namespace, device: torch.device):
    """``(model, step)``: the model and a closure doing one full training step on a fixed batch."""
    import sparse_ops
    from examples.voc_joint.models import DeepLabV3Plus, JointModel, SpixelFCN

    torch.manual_seed(0)
    deeplab = DeepLabV3Plus(21, args.backbone, 16)
    if variant == "deeplab":
        model = deeplab
    else:
        mode = "soft" if variant.startswith("joint_soft") else "hard"
        model = JointModel(deeplab, SpixelFCN(args.cell_size), 21, mode=mode, fusion=variant.endswith("_ti"))
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.size, args.size, generator=g).to(device)
    y = torch.randint(0, 21, (args.batch_size, args.size, args.size), generator=g).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        if variant == "deeplab":
            loss = torch.nn.functional.cross_entropy(model(x), y, ignore_index=255)
        else:
            out = model(x, x)
            loss = torch.nn.functional.cross_entropy(out["logits"], y, ignore_index=255)
            loss = loss + sparse_ops.spixel_loss(out["assoc"], y, args.cell_size).total
        loss.backward()
        opt.step()

    return model, step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variants(args: argparse.Namespace, device: torch.device) -> dict[str, dict]:
    steps = {v: build(v, args, device)[1] for v in args.variants}
    for v in args.variants:  # warm-up
        for _ in range(args.warmup):
            steps[v]()
    _sync(device)
    samples: dict[str, list[float]] = {v: [] for v in args.variants}
    for _ in range(args.rounds):
        for v in args.variants:
            _sync(device)
            t0 = time.perf_counter()
            steps[v]()
            _sync(device)
            samples[v].append(time.perf_counter() - t0)
    return {
        v: {"median_s": statistics.median(s), "min_s": min(s), "samples": len(s)} for v, s in samples.items()
    }


def peak_memory_cuda(variant: str, args: argparse.Namespace, device: torch.device) -> int:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    model, step = build(variant, args, device)
    step()
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del model, step
    return int(peak)


def saved_activation_bytes(variant: str, args: argparse.Namespace, device: torch.device) -> int:
    """Bytes of the distinct tensor storages autograd saves for backward in one forward (+ loss) pass.

    This is the activation memory of a training step (the dominant term that grows with B x H x W), measured
    exactly and deterministically, on any device.
    """
    import sparse_ops

    model, _ = build(variant, args, device)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.size, args.size, generator=g).to(device)
    y = torch.randint(0, 21, (args.batch_size, args.size, args.size), generator=g).to(device)
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if variant == "deeplab":
            loss = torch.nn.functional.cross_entropy(model(x), y)
        else:
            out = model(x, x)
            loss = torch.nn.functional.cross_entropy(out["logits"], y)
            loss = loss + sparse_ops.spixel_loss(out["assoc"], y, args.cell_size).total
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return int(sum(n for ptr, n in seen.items() if ptr not in params))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--backbone", default="resnet18", help="DeepLabV3+ backbone")
    p.add_argument("--batch-size", type=int, default=2, help="batch size")
    p.add_argument("--size", type=int, default=128, help="square input size")
    p.add_argument("--cell-size", type=int, default=16, help="superpixel cell size")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds (each runs every variant once)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="what to run")
    p.add_argument(
        "--output", type=Path, default=ROOT / "benchmarks" / "results" / "joint.json", help="JSON output"
    )
    args = p.parse_args(argv)
    if args.batch_size < 2:
        p.error(
            f"--batch-size must be >= 2 (the ASPP image-pooling BatchNorm sees one value per channel per image "
            f"in training mode), got {args.batch_size}"
        )
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    load0 = os.getloadavg()[0]  # the 1-minute load average before this run: is the machine shared right now?
    times = time_variants(args, device)
    mems = {}
    for v in args.variants:
        mems[v] = {"saved_activations": saved_activation_bytes(v, args, device)}
        if device.type == "cuda":
            mems[v]["cuda_peak_allocated"] = peak_memory_cuda(v, args, device)
    base_t = times.get("deeplab", {}).get("median_s")
    key = "cuda_peak_allocated" if device.type == "cuda" else "saved_activations"
    base_m = mems["deeplab"][key] if "deeplab" in mems else None
    rows = []
    print(
        f"\ntraining step, B={args.batch_size}, {args.size}x{args.size}, {args.backbone}, {device} "
        f"(median of {args.rounds}), torch {torch.__version__}"
    )
    mem_name = "CUDA peak" if device.type == "cuda" else "saved act."
    print(f"{'variant':<18} {'step ms':>9} {'x deeplab':>10} {mem_name + ' MiB':>15} {'x deeplab':>10}")
    for v in args.variants:
        t, m = times[v]["median_s"], mems[v][key]
        rt = t / base_t if base_t else float("nan")
        rm = m / base_m if base_m else float("nan")
        rows.append({"variant": v, **times[v], "memory_bytes": mems[v], "time_ratio": rt, "memory_ratio": rm})
        print(f"{v:<18} {1e3 * t:>9.1f} {rt:>10.2f} {m / 2**20:>15.1f} {rm:>10.2f}")
    result = {
        "benchmark": "joint training step vs DeepLabV3+ alone",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_at_start": load0,
        },
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    existing = {}
    if args.output.exists():
        try:
            existing = json.loads(args.output.read_text())
        except json.JSONDecodeError:
            existing = {}
    key = f"{device.type}_{args.backbone}_b{args.batch_size}_{args.size}"
    existing.pop(device.type, None)  # layout of an older version of this script
    existing[key] = result
    args.output.write_text(json.dumps(existing, indent=2))
    print(f"written to {args.output} (key {key!r})")
    return result


if __name__ == "__main__":
    main()
