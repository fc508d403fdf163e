"""Train the VOC joint pipeline: ``seg`` (DeepLabV3+), ``spixel`` (SpixelFCN), ``joint`` (fine-tune all), ``all``.

Run ``python examples/voc_joint/train.py --help`` (or ``python -m examples.voc_joint.train --help``) for every
option. Multi-GPU / multi-machine: launch the same command through ``torchrun``; the script then initializes
``torch.distributed`` from the environment (``env://``), uses a ``DistributedSampler`` and
``DistributedDataParallel`` (``nccl`` on CUDA, ``gloo`` on CPU). Without ``WORLD_SIZE`` it runs in one process.

Outputs, per stage, under ``<output-dir>/<stage>/``: ``checkpoint.pt`` (written atomically after every epoch and
on Ctrl-C / SIGTERM), ``log.csv`` (and TensorBoard events with ``--tensorboard``), ``eval.json`` with ``--eval``.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from examples.voc_joint.checkpoint import (
    FORMAT,
    VERSION,
    get_rng_state,
    load_checkpoint,
    load_weights_into,
    save_checkpoint,
    set_rng_state,
)
from examples.voc_joint.models import DeepLabV3Plus, JointModel, SpixelFCN, model_config
from examples.voc_joint.models.deeplabv3plus import BACKBONES
from examples.voc_joint.models.joint import MODES

__all__ = ["STAGES", "STAGE_DEFAULTS", "build_parser", "main", "resolve_stage_options", "run_stage"]

STAGES = ("seg", "spixel", "joint")
IGNORE_INDEX = 255

#: Per-stage defaults of the options left at ``None`` on the command line.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "seg": {"optimizer": "sgd", "schedule": "poly", "weight_decay": 5e-4},
    "spixel": {"optimizer": "adam", "schedule": "fixed", "weight_decay": 4e-4},
    "joint": {"optimizer": "sgd", "schedule": "fixed", "weight_decay": 5e-4},
}


class _Terminated(KeyboardInterrupt):
    """Raised from the SIGTERM handler so that SIGTERM is handled like Ctrl-C (checkpoint, then exit)."""


# --------------------------------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every option documented in ``--help``)."""
    p = argparse.ArgumentParser(
        prog="python examples/voc_joint/train.py",
        description=(
            "Train DeepLabV3+ + SpixelFCN joined by superpixel uniformization and transparent layers. Stages: seg "
            "(pretrain DeepLabV3+, cross-entropy with ignore 255), spixel (pretrain SpixelFCN with spixel_loss), "
            "joint (fine-tune everything: SGD momentum 0.9, the paper's learning rates), all (the three in order, "
            "each stage starting from the previous ones). Without --data-root a synthetic VOC-format set is "
            "generated into the cache. Run through torchrun for multi-GPU / multi-machine DDP."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("stage and data")
    g.add_argument("--stage", choices=(*STAGES, "all"), default="all", help="what to train")
    g.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="VOC2012 folder (JPEGImages, SegmentationClass, ImageSets/...); default: the synthetic set "
        "in $TRANSINIT_CACHE (generated if missing)",
    )
    g.add_argument(
        "--sbd",
        action="store_true",
        help="train on the SBD-augmented set (SegmentationClassAug + ImageSets/SegmentationAug)",
    )
    g.add_argument("--train-split", default="train", help="list file name of the training split")
    g.add_argument("--val-split", default="val", help="list file name of the validation split (--eval)")
    g.add_argument("--crop-size", type=int, default=512, help="training crop (after random scale 0.5-2)")
    g.add_argument("--scale-min", type=float, default=0.5, help="smallest random scale")
    g.add_argument("--scale-max", type=float, default=2.0, help="largest random scale")
    g.add_argument("--batch-size", type=int, default=8, help="images per process and step (>= 2: BatchNorm)")
    g.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    g.add_argument(
        "--output-dir",
        type=Path,
        default=Path("runs/voc_joint"),
        help="checkpoints and logs go to <output-dir>/<stage>/",
    )

    g = p.add_argument_group("models")
    g.add_argument("--num-classes", type=int, default=21, help="segmentation classes")
    g.add_argument("--backbone", choices=BACKBONES, default="resnet101", help="DeepLabV3+ ResNet backbone")
    g.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16),
        default=16,
        help="DeepLabV3+ output stride (ASPP rates 6/12/18 at 16, 12/24/36 at 8)",
    )
    g.add_argument("--aspp-channels", type=int, default=256, help="ASPP / decoder width")
    g.add_argument(
        "--backbone-weights",
        type=Path,
        default=None,
        help="LOCAL ResNet state dict (torch.load weights_only=True); nothing is downloaded",
    )
    g.add_argument("--cell-size", type=int, default=16, help="superpixel grid cell size in pixels")
    g.add_argument("--spixel-width", type=int, default=16, help="SpixelFCN first-stage width")
    g.add_argument(
        "--spixel-centre-bias",
        type=float,
        default=0.0,
        help="initial bias of SpixelFCN's centre-cell logit (>0 starts near the regular grid)",
    )
    g.add_argument(
        "--mode",
        choices=MODES,
        default="hard",
        help="uniformization: hard (argmax ids), soft (association; the segmentation loss reaches "
        "SpixelFCN) or none",
    )
    g.add_argument(
        "--fusion",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="transparent fusion stack [S, U(S)] -> hidden -> C, starting as 'take U(S)'",
    )
    g.add_argument(
        "--fusion-hidden",
        type=int,
        nargs="+",
        default=[64, 64],
        help="logical hidden widths of the fusion stack (each >= 2 x classes)",
    )
    g.add_argument(
        "--fusion-activation",
        choices=("relu", "leaky_relu", "none"),
        default="relu",
        help="activation between the fusion layers",
    )
    g.add_argument(
        "--seg-checkpoint",
        type=Path,
        default=None,
        help="joint stage: DeepLabV3+ weights (seg or joint checkpoint); 'all' uses the seg stage's",
    )
    g.add_argument(
        "--spixel-checkpoint",
        type=Path,
        default=None,
        help="joint stage: SpixelFCN weights (spixel or joint checkpoint); 'all' uses the spixel stage's",
    )

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=int, default=20, help="epochs per stage")
    g.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop a stage after this many optimizer steps (smoke tests, demos)",
    )
    g.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default=None,
        help="default per stage: sgd (seg, joint), adam (spixel, as in SpixelFCN)",
    )
    g.add_argument("--seg-lr", type=float, default=0.007, help="seg stage: backbone learning rate")
    g.add_argument("--head-lr-mult", type=float, default=10.0, help="seg stage: ASPP/decoder lr multiplier")
    g.add_argument("--spixel-pretrain-lr", type=float, default=5e-5, help="spixel stage learning rate")
    g.add_argument(
        "--lr", type=float, default=1e-6, help="joint stage: DeepLabV3+ learning rate (paper 1e-6)"
    )
    g.add_argument(
        "--spixel-lr", type=float, default=1e-6, help="joint stage: SpixelFCN learning rate (paper 1e-6)"
    )
    g.add_argument(
        "--fusion-lr",
        type=float,
        default=1e-7,
        help="joint stage: transparent layers' learning rate (paper 1e-7)",
    )
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    g.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="applied by the optimizer (default 5e-4 seg/joint, 4e-4 spixel)",
    )
    g.add_argument(
        "--schedule",
        choices=("poly", "fixed"),
        default=None,
        help="lr schedule per iteration: poly (1 - t/T)^power or fixed (default poly for seg, fixed "
        "for spixel and joint as in the paper)",
    )
    g.add_argument("--poly-power", type=float, default=0.9, help="poly schedule power")
    g.add_argument("--spixel-loss-weight", type=float, default=1.0, help="joint stage: weight of spixel_loss")
    g.add_argument("--pos-weight", type=float, default=0.003, help="spixel_loss position weight m")
    g.add_argument(
        "--freeze-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="joint stage: keep DeepLabV3+ BatchNorm statistics frozen (eval mode), as in the paper",
    )

    g = p.add_argument_group("runtime")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    g.add_argument("--amp", action="store_true", help="mixed precision (CUDA only; ignored on CPU)")
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA only)")
    g.add_argument("--seed", type=int, default=0, help="seed of every RNG")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue exactly from <output-dir>/<stage>/checkpoint.pt ('auto') or from a given "
        "checkpoint; finished stages are skipped",
    )
    g.add_argument(
        "--eval", action="store_true", help="evaluate on --val-split after the seg and joint stages"
    )
    g.add_argument(
        "--eval-crop", type=int, default=None, help="evaluation centre crop (default: full images)"
    )
    g.add_argument("--log-every", type=int, default=10, help="CSV / TensorBoard row every N steps")
    g.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (if it imports)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def resolve_stage_options(stage: str, args: argparse.Namespace) -> argparse.Namespace:
    """A copy of ``args`` with the per-stage defaults (:data:`STAGE_DEFAULTS`) filled in."""
    out = argparse.Namespace(**vars(args))
    for key, value in STAGE_DEFAULTS[stage].items():
        if getattr(out, key) is None:
            setattr(out, key, value)
    out.stage = stage
    return out


def _plain(value: Any) -> Any:
    """Options as weights-only-loadable plain values (Path -> str)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------ distributed
class DistInfo:
    """Process-group facts: ``rank``, ``world_size``, ``local_rank``, ``device``, ``enabled``."""

    def __init__(self, device: str | None) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.enabled = self.world_size > 1
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {want!r} requested but CUDA is not available")
        if want.startswith("cuda"):
            self.device = torch.device(
                "cuda", self.local_rank if self.enabled else torch.device(want).index or 0
            )
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, init_method="env://")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size


# ------------------------------------------------------------------------------------------------------ data
def _data_root(args: argparse.Namespace) -> Path:
    from examples.voc_joint import data

    if args.data_root is not None:
        return Path(args.data_root)
    return data.ensure_synthetic_voc()


def build_train_loader(args: argparse.Namespace, info: DistInfo, generator: torch.Generator):
    """Training DataLoader (shuffled, drop_last) with a DistributedSampler under DDP."""
    from examples.voc_joint import data

    root = _data_root(args)
    ds = data.VOCSegmentation(
        root,
        args.train_split,
        sbd=args.sbd,
        transform=data.train_transform(args.crop_size, scale=(args.scale_min, args.scale_max)),
    )
    if len(ds) < args.batch_size * info.world_size:
        raise ValueError(
            f"training split {args.train_split!r} of {root} has {len(ds)} images, fewer than one batch "
            f"(--batch-size {args.batch_size} x {info.world_size} processes)"
        )
    sampler = None
    if info.enabled:
        sampler = torch.utils.data.DistributedSampler(
            ds, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=args.seed, drop_last=True
        )
    return torch.utils.data.DataLoader(
        ds,
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=args.workers,
        drop_last=True,
        generator=generator,
        pin_memory=info.device.type == "cuda",
        persistent_workers=False,
    )


# ---------------------------------------------------------------------------------------------------- models
def _deeplab_from(args: argparse.Namespace) -> DeepLabV3Plus:
    return DeepLabV3Plus(
        args.num_classes,
        args.backbone,
        args.output_stride,
        args.backbone_weights,
        aspp_channels=args.aspp_channels,
    )


def build_stage_model(stage: str, args: argparse.Namespace) -> nn.Module:
    """The model a stage trains (joint: built from the stage checkpoints' configs when given)."""
    if stage == "seg":
        return _deeplab_from(args)
    if stage == "spixel":
        return SpixelFCN(args.cell_size, args.spixel_width, centre_bias=args.spixel_centre_bias)
    if args.seg_checkpoint is not None:
        cfg = load_checkpoint(args.seg_checkpoint)["config"]["model"]["deeplab"]
        deeplab = DeepLabV3Plus(**cfg)
        load_weights_into(deeplab, args.seg_checkpoint, part="deeplab")
    else:
        deeplab = _deeplab_from(args)
    if args.spixel_checkpoint is not None:
        cfg = load_checkpoint(args.spixel_checkpoint)["config"]["model"]["spixel"]
        spixel = SpixelFCN(**cfg)
        load_weights_into(spixel, args.spixel_checkpoint, part="spixel")
    else:
        spixel = SpixelFCN(args.cell_size, args.spixel_width, centre_bias=args.spixel_centre_bias)
    return JointModel(
        deeplab,
        spixel,
        deeplab.config["num_classes"],
        cell_size=spixel.cell_size,
        mode=args.mode,
        fusion=args.fusion,
        fusion_hidden=args.fusion_hidden,
        fusion_activation=None if args.fusion_activation == "none" else args.fusion_activation,
        generator=args.seed,
    )


def param_groups(stage: str, model: nn.Module, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Optimizer parameter groups with their learning rates (named by ``"name"``)."""
    if stage == "seg":
        return [
            {"name": "backbone", "params": model.backbone_parameters(), "lr": args.seg_lr},
            {"name": "head", "params": model.head_parameters(), "lr": args.seg_lr * args.head_lr_mult},
        ]
    if stage == "spixel":
        return [{"name": "spixelfcn", "params": list(model.parameters()), "lr": args.spixel_pretrain_lr}]
    groups = [
        {"name": "deeplab", "params": list(model.deeplab.parameters()), "lr": args.lr},
        {"name": "spixelfcn", "params": list(model.spixelfcn.parameters()), "lr": args.spixel_lr},
    ]
    if model.fusion is not None:
        groups.append({"name": "fusion", "params": list(model.fusion.parameters()), "lr": args.fusion_lr})
    return groups


def build_optimizer(stage: str, model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay really passed) or Adam over :func:`param_groups`."""
    groups = param_groups(stage, model, args)
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=groups[0]["lr"], momentum=args.momentum, weight_decay=args.weight_decay
        )
    return torch.optim.Adam(groups, lr=groups[0]["lr"], betas=(0.9, 0.999), weight_decay=args.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, total_steps: int):
    """Per-iteration LambdaLR: poly ``(1 - t / T) ** power`` or fixed."""
    if args.schedule == "poly":
        power, total = args.poly_power, max(1, total_steps)

        def factor(t: int) -> float:
            return max(0.0, 1.0 - t / total) ** power
    else:

        def factor(t: int) -> float:
            return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _set_bn_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


# ------------------------------------------------------------------------------------------------------ loss
def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over the non-ignored pixels (0 when every pixel is ignored)."""
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp_min(1)


def stage_loss(
    stage: str, model: nn.Module, batch: dict, args: argparse.Namespace, device: torch.device
) -> tuple[Tensor, dict[str, float]]:
    """Forward one batch and return ``(loss, parts)``."""
    import sparse_ops

    target = batch["target"].to(device, non_blocking=True)
    if stage == "seg":
        loss = cross_entropy(model(batch["seg_input"].to(device, non_blocking=True)), target)
        return loss, {"ce": float(loss.detach())}
    if stage == "spixel":
        assoc = model(batch["spixel_input"].to(device, non_blocking=True))
        sl = sparse_ops.spixel_loss(
            assoc.float(), target, args.cell_size, pos_weight=args.pos_weight, num_classes=args.num_classes
        )
        return sl.total, {"spixel": float(sl.total.detach())}
    out = model(
        batch["seg_input"].to(device, non_blocking=True), batch["spixel_input"].to(device, non_blocking=True)
    )
    ce = cross_entropy(out["logits"], target)
    loss, parts = ce, {"ce": float(ce.detach())}
    if args.spixel_loss_weight:
        inner = getattr(model, "module", model)
        sl = sparse_ops.spixel_loss(
            out["assoc"].float(),
            target,
            inner.cell_size,
            pos_weight=args.pos_weight,
            num_classes=args.num_classes,
        )
        loss = loss + args.spixel_loss_weight * sl.total
        parts["spixel"] = float(sl.total.detach())
    return loss, parts


# --------------------------------------------------------------------------------------------------- logging
class _Logger:
    """CSV rows (and TensorBoard scalars) on the main process."""

    FIELDS = ("stage", "epoch", "step", "loss", "ce", "spixel", "lr", "images_per_s", "elapsed_s")

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool, append: bool) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.path = folder / "log.csv"
        new = not (append and self.path.exists())
        self.fh = open(self.path, "w" if new else "a", newline="")
        self.csv = csv.DictWriter(self.fh, fieldnames=self.FIELDS)
        if new:
            self.csv.writeheader()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(folder / "tensorboard"))
            except Exception as exc:  # tensorboard not installed
                print(f"[train] TensorBoard disabled ({type(exc).__name__}: {exc}); CSV log only", flush=True)

    def row(self, **values: Any) -> None:
        if not self.enabled:
            return
        self.csv.writerow({k: values.get(k, "") for k in self.FIELDS})
        self.fh.flush()
        if self.writer is not None:
            for k in ("loss", "ce", "spixel", "lr", "images_per_s"):
                if values.get(k, "") != "":
                    self.writer.add_scalar(f"{values['stage']}/{k}", float(values[k]), int(values["step"]))

    def close(self) -> None:
        if self.enabled:
            self.fh.close()
            if self.writer is not None:
                self.writer.close()


# ----------------------------------------------------------------------------------------------------- stage
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _checkpoint(
    stage: str,
    model: nn.Module,
    optimizer,
    scheduler,
    scaler,
    args,
    epoch: int,
    step: int,
    batch_in_epoch: int,
    loader_gen: torch.Generator,
    complete: bool,
) -> dict[str, Any]:
    inner = getattr(model, "module", model)
    return {
        "format": FORMAT,
        "version": VERSION,
        "stage": stage,
        "config": {"model": model_config(inner), "args": {k: _plain(v) for k, v in vars(args).items()}},
        "model": inner.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "step": step,
        "batch_in_epoch": batch_in_epoch,
        "complete": complete,
        "rng": get_rng_state(loader_gen),
    }


def run_stage(stage: str, args: argparse.Namespace, info: DistInfo | None = None) -> Path:
    """Train one stage and return the path of its final checkpoint.

    Args:
        stage: ``"seg"``, ``"spixel"`` or ``"joint"``.
        args: parsed options (see :func:`build_parser`); per-stage defaults are filled in here.
        info: distributed facts (built from the environment when ``None``).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    info = info or DistInfo(args.device)
    args = resolve_stage_options(stage, args)
    device = info.device
    folder = Path(args.output_dir) / stage
    ckpt_path = folder / "checkpoint.pt"
    if info.main:
        folder.mkdir(parents=True, exist_ok=True)

    resume_from: Path | None = None
    if args.resume is not None:
        cand = ckpt_path if args.resume == "auto" else Path(args.resume)
        if args.resume != "auto" and not cand.is_file():
            raise FileNotFoundError(f"--resume checkpoint not found: {cand}")
        if cand.is_file():
            resume_from = cand
    ckpt = load_checkpoint(resume_from) if resume_from is not None else None
    if ckpt is not None and ckpt["stage"] != stage:
        if args.resume != "auto":
            raise ValueError(f"--resume {resume_from} is a {ckpt['stage']!r} checkpoint, not {stage!r}")
        ckpt = None
    if ckpt is not None and (
        ckpt["epoch"] >= args.epochs or (args.max_steps is not None and ckpt["step"] >= args.max_steps)
    ):
        if info.main:
            print(
                f"[{stage}] {resume_from} already reached epoch {ckpt['epoch']} / step {ckpt['step']}; "
                "skipping the stage",
                flush=True,
            )
        return resume_from

    _seed_everything(args.seed + info.rank)
    if ckpt is not None:  # same architecture as when the run started
        from examples.voc_joint.models import build_model

        model = build_model(ckpt["config"]["model"])
    else:
        model = build_stage_model(stage, args)
    model.to(device)
    use_amp = bool(args.amp and device.type == "cuda")
    if args.amp and not use_amp and info.main:
        print(f"[{stage}] --amp ignored on {device.type} (CUDA only)", flush=True)
    if info.enabled and args.sync_bn:
        if device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA (SyncBatchNorm has no CPU/gloo implementation)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(stage, model, args)

    loader_gen = torch.Generator()
    loader = build_train_loader(args, info, loader_gen)
    steps_per_epoch = len(loader)
    total_steps = args.epochs * steps_per_epoch  # the poly horizon ignores --max-steps (resume stays exact)
    scheduler = build_scheduler(optimizer, args, total_steps)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, step, skip = 0, 0, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step, skip = int(ckpt["epoch"]), int(ckpt["step"]), int(ckpt.get("batch_in_epoch", 0))
        set_rng_state(ckpt["rng"])
        if info.main:
            print(
                f"[{stage}] resumed from {resume_from}: epoch {start_epoch}, step {step}"
                + (f", skipping {skip} done batches" if skip else ""),
                flush=True,
            )
        del ckpt

    train_model: nn.Module = model
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=stage == "joint"
        )

    logger = _Logger(folder, info.main, args.tensorboard, append=resume_from is not None)
    if info.main:
        lrs = ", ".join(f"{g['name']}={g['lr']:.3g}" for g in optimizer.param_groups)
        print(
            f"[{stage}] {type(model).__name__} on {device} x{info.world_size}, {steps_per_epoch} steps/epoch, "
            f"{args.optimizer} ({lrs}, wd {args.weight_decay}, {args.schedule}), amp={use_amp}",
            flush=True,
        )

    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        raise _Terminated()

    in_main_thread = True
    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not in the main thread
        in_main_thread = False

    t0 = time.perf_counter()
    epoch, in_epoch = start_epoch, skip
    done = args.max_steps is not None and step >= args.max_steps
    try:
        for epoch in range(start_epoch, args.epochs):
            if done:
                break
            loader_gen.manual_seed(args.seed * 1000003 + epoch)  # sample order / worker seeds of this epoch
            if isinstance(loader.sampler, torch.utils.data.DistributedSampler):
                loader.sampler.set_epoch(epoch)
            train_model.train()
            if stage == "joint" and args.freeze_bn:
                _set_bn_eval(model.deeplab)
            bar = None
            if info.main and not args.no_progress:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=steps_per_epoch,
                    initial=in_epoch,
                    desc=f"{stage} {epoch + 1}/{args.epochs}",
                    unit="step",
                    dynamic_ncols=True,
                    leave=True,
                )
            t_epoch, n_img = time.perf_counter(), 0
            for batch_idx, batch in enumerate(loader):
                if batch_idx < in_epoch:  # mid-epoch resume: these batches were done before the interrupt
                    continue
                loss, parts = _train_step(stage, train_model, batch, args, device, optimizer, scaler, use_amp)
                scheduler.step()
                step += 1
                in_epoch += 1
                n_img += batch["target"].shape[0] * info.world_size
                ips = n_img / max(time.perf_counter() - t_epoch, 1e-9)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{ips:.1f}")
                    bar.update(1)
                reached = args.max_steps is not None and step >= args.max_steps
                if step % args.log_every == 0 or in_epoch == steps_per_epoch or reached:
                    logger.row(
                        stage=stage,
                        epoch=epoch + 1,
                        step=step,
                        loss=f"{info.mean(loss):.6f}",
                        ce=f"{parts['ce']:.6f}" if "ce" in parts else "",
                        spixel=f"{parts['spixel']:.6f}" if "spixel" in parts else "",
                        lr=f"{optimizer.param_groups[0]['lr']:.6g}",
                        images_per_s=f"{ips:.2f}",
                        elapsed_s=f"{time.perf_counter() - t0:.1f}",
                    )
                if reached:
                    done = True
                    break
            if bar is not None:
                bar.close()
            finished_epoch = in_epoch >= steps_per_epoch
            ep_done = epoch + 1 if finished_epoch else epoch
            if info.main:
                complete = done or ep_done >= args.epochs
                save_checkpoint(
                    ckpt_path,
                    _checkpoint(
                        stage,
                        model,
                        optimizer,
                        scheduler,
                        scaler,
                        args,
                        ep_done,
                        step,
                        0 if finished_epoch else in_epoch,
                        loader_gen,
                        complete,
                    ),
                )
            in_epoch = 0
            info.barrier()
    except KeyboardInterrupt:
        if info.main:
            save_checkpoint(
                ckpt_path,
                _checkpoint(
                    stage, model, optimizer, scheduler, scaler, args, epoch, step, in_epoch, loader_gen, False
                ),
            )
            print(
                f"\n[{stage}] interrupted: checkpoint saved to {ckpt_path} (resume with --resume)", flush=True
            )
        logger.close()
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    logger.close()
    if info.main:
        print(
            f"[{stage}] done: {step} steps in {time.perf_counter() - t0:.1f} s; checkpoint {ckpt_path}",
            flush=True,
        )
    if args.eval and stage in ("seg", "joint") and info.main:
        evaluate_checkpoint(ckpt_path, args, device)
    info.barrier()
    return ckpt_path


def _train_step(
    stage, model, batch, args, device, optimizer, scaler, use_amp
) -> tuple[float, dict[str, float]]:
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        loss, parts = stage_loss(stage, model, batch, args, device)
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"[{stage}] non-finite loss {float(loss)}: lower the learning rate or check data"
        )
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), parts


def evaluate_checkpoint(ckpt_path: Path, args: argparse.Namespace, device: torch.device) -> dict:
    """Evaluate a seg/joint checkpoint on ``--val-split`` with exdata's ``evaluate`` and write ``eval.json``."""
    import json

    from examples.voc_joint import data
    from examples.voc_joint.checkpoint import load_model_from_checkpoint
    from examples.voc_joint.evaluate import evaluate

    model, _ = load_model_from_checkpoint(ckpt_path, map_location=device)
    ds = data.build_dataset(
        _data_root(args), args.val_split, sbd=False, crop_size=args.eval_crop, train=False
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=1, shuffle=False, num_workers=args.workers)
    res = evaluate(
        model,
        loader,
        device=device,
        num_classes=args.num_classes,
        panels_dir=ckpt_path.parent / "panels",
        progress=not args.no_progress,
    )
    (ckpt_path.parent / "eval.json").write_text(json.dumps(res, indent=2, default=float))
    print(f"[eval] {ckpt_path}: mIoU {100 * res['miou']:.2f} %; details in {ckpt_path.parent / 'eval.json'}")
    return res


# ------------------------------------------------------------------------------------------------------ main
def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Parse ``argv`` and run the requested stage(s); returns ``{stage: checkpoint path}``."""
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.batch_size < 2:
        raise SystemExit("--batch-size must be >= 2 (BatchNorm in training mode needs more than one value)")
    info = DistInfo(args.device)
    stages = STAGES if args.stage == "all" else (args.stage,)
    out: dict[str, Path] = {}
    try:
        for stage in stages:
            stage_args = argparse.Namespace(**vars(args))
            if stage == "joint" and args.stage == "all":
                stage_args.seg_checkpoint = stage_args.seg_checkpoint or out["seg"]
                stage_args.spixel_checkpoint = stage_args.spixel_checkpoint or out["spixel"]
            if args.stage == "all" and args.resume not in (None, "auto"):
                stage_args.resume = "auto"
            out[stage] = run_stage(stage, stage_args, info)
    finally:
        if info.enabled and dist.is_initialized():
            dist.destroy_process_group()
    return out


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
