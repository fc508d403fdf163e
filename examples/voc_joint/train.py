"""Train the VOC joint pipeline: ``seg`` (DeepLabV3+), ``spixel`` (SpixelFCN), ``joint`` (all), ``all``.

Run ``python examples/voc_joint/train.py --help`` (or ``python -m examples.voc_joint.train --help``) for every
option. Multi-GPU / multi-machine: launch the same command through ``torchrun``; the script then initializes
``torch.distributed`` from the environment (``env://``, see :mod:`examples.voc_joint.distributed`), shards the
data over the processes and uses ``DistributedDataParallel`` (``nccl`` on CUDA, ``gloo`` on CPU). Without
``WORLD_SIZE`` it runs in one process.

This file holds the stage sequencing (build, resume, train, checkpoint, evaluate) and the entry point. The
command line (parser, checks across options, per-stage options) is in :mod:`examples.voc_joint.train_options`,
the data checks and the training loader in :mod:`examples.voc_joint.train_data`, the joint stage's source
checkpoints in :mod:`examples.voc_joint.sources`, the notes of a resume that will not be bit-identical in
:mod:`examples.voc_joint.resume_notes`, the epoch loop and the evaluation in :mod:`examples.voc_joint.engine`,
signal handling in :mod:`examples.voc_joint.signals`.

Outputs, per stage, under ``<output-dir>/<stage>/``: ``checkpoint.pt`` (written atomically after every epoch
and on Ctrl-C / SIGTERM / SIGHUP), ``log.csv`` (and TensorBoard events with ``--tensorboard``),
and with ``--eval`` ``eval.json`` and ``panels/`` after the seg and joint stages (the SpixelFCN stage has no
segmentation to score).
"""

from __future__ import annotations

import argparse
import builtins
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch
from torch import Tensor, nn

from examples.voc_joint import engine, faults
from examples.voc_joint.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    check_resumable,
    get_rng_state,
    load_checkpoint,
    load_checkpoint_with_sha256,
    load_network,
    other_dtypes,
    remove_stale_temporaries,
    save_checkpoint,
    set_rng_state,
    strip_module_prefix,
)
from examples.voc_joint.cli import UsageError, error_text, out_of_memory_error
from examples.voc_joint.data import DataError
from examples.voc_joint.distributed import (
    PRINTED_BY_RANK_0,
    DistInfo,
    ProcessLostError,
    cleanup_distributed,
    init_distributed,
    mark_printed_by_rank_0,
    peer_lost,
)
from examples.voc_joint.locking import FolderLock
from examples.voc_joint.models import DeepLabV3Plus, JointModel, SpixelFCN, build_model, model_config
from examples.voc_joint.models.joint import network_channels_last
from examples.voc_joint.resume import check_new_run, clear_run, option_changes, plain
from examples.voc_joint.resume_notes import (
    cuda_rng_note,
    device_note,
    numerics_note,
    thread_count_note,
    torch_version_note,
)
from examples.voc_joint.sampling import EpochSampler, begin_epoch, derive_seed
from examples.voc_joint.signals import Interrupted, InterruptGuard
from examples.voc_joint.sources import check_sources, joint_sources
from examples.voc_joint.train_data import (
    build_train_loader,
    check_data,
    check_val_data,
    data_root,
    train_list_fingerprint,
    train_list_fingerprint_of,
)
from examples.voc_joint.train_options import (
    EVAL_STAGES,
    STAGES,
    build_parser,
    check_args,
    resolve_stage_options,
    resolve_with_origins,
    runtime_options,
)
from examples.voc_joint.wording import counted

__all__ = [
    "NO_DECAY_SUFFIX",
    "UsageError",
    "build_optimizer",
    "build_scheduler",
    "build_stage_model",
    "build_train_state",
    "load_scaler_state",
    "main",
    "param_groups",
    "run_stage",
    "schedule_horizon",
]


# ---------------------------------------------------------------------------------------------------- models
def _deeplab_from(args: argparse.Namespace) -> DeepLabV3Plus:
    return DeepLabV3Plus(
        args.num_classes,
        args.backbone,
        args.output_stride,
        args.backbone_weights,
        aspp_channels=args.aspp_channels,
    )


def _pretrained(path: Path, part: str, option: str) -> nn.Module:
    """The ``part`` ("deeplab" / "spixel") network of a stage checkpoint, with its weights."""
    try:
        return load_network(path, part)
    except CheckpointError as exc:
        raise CheckpointError(f"{option}: {exc}") from exc


def build_stage_model(stage: str, args: argparse.Namespace) -> nn.Module:
    """The model a stage starts from.

    The joint stage joins the networks of ``--seg-checkpoint`` / ``--spixel-checkpoint`` when given, freshly
    initialized ones otherwise.
    """
    if stage in ("seg", "spixel"):
        net: nn.Module = (
            _deeplab_from(args)
            if stage == "seg"
            else SpixelFCN(args.cell_size, args.spixel_width, centre_bias=args.spixel_centre_bias)
        )
        if network_channels_last(
            runtime_options(args)["channels_last"], "deeplab" if stage == "seg" else "spixelfcn"
        ):
            net.to(memory_format=torch.channels_last)
        return net
    deeplab = (
        _pretrained(args.seg_checkpoint, "deeplab", "--seg-checkpoint")
        if args.seg_checkpoint is not None
        else _deeplab_from(args)
    )
    spixel = (
        _pretrained(args.spixel_checkpoint, "spixel", "--spixel-checkpoint")
        if args.spixel_checkpoint is not None
        else SpixelFCN(args.cell_size, args.spixel_width, centre_bias=args.spixel_centre_bias)
    )
    return JointModel(
        deeplab,
        spixel,
        int(cast(DeepLabV3Plus, deeplab).config["num_classes"]),
        cell_size=int(cast(SpixelFCN, spixel).cell_size),
        mode=args.mode,
        fusion=args.fusion,
        fusion_hidden=args.fusion_hidden,
        fusion_activation=None if args.fusion_activation == "none" else args.fusion_activation,
        fusion_init=args.fusion_init,
        generator=args.seed,
        **runtime_options(args),
    )


#: Name suffix of a parameter group exempt from weight decay (its ``"weight_decay"`` is 0).
NO_DECAY_SUFFIX = "_biases"


def param_groups(stage: str, model: nn.Module, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Optimizer parameter groups with their learning rates (named by ``"name"``).

    The spixel stage follows SpixelFCN's ``main.py``: weight decay on the weights (BatchNorm scales included),
    none on the biases (its ``bias_decay`` of 0): a second group, ``"spixelfcn_biases"``, with
    ``"weight_decay"`` 0. The other groups take ``--weight-decay``.
    """
    if stage == "seg":
        seg = cast(DeepLabV3Plus, model)
        return [
            {"name": "backbone", "params": seg.backbone_parameters(), "lr": args.seg_lr},
            {"name": "head", "params": seg.head_parameters(), "lr": args.seg_lr * args.head_lr_mult},
        ]
    if stage == "spixel":
        named = list(model.named_parameters())
        lr = args.spixel_pretrain_lr
        return [
            {"name": "spixelfcn", "params": [p for n, p in named if not n.endswith("bias")], "lr": lr},
            {
                "name": "spixelfcn" + NO_DECAY_SUFFIX,
                "params": [p for n, p in named if n.endswith("bias")],
                "lr": lr,
                "weight_decay": 0.0,
            },
        ]
    joint = cast(JointModel, model)
    groups = [
        {"name": "deeplab", "params": list(joint.deeplab.parameters()), "lr": args.lr},
        {"name": "spixelfcn", "params": list(joint.spixelfcn.parameters()), "lr": args.spixel_lr},
    ]
    if joint.fusion is not None:
        groups.append({"name": "fusion", "params": list(joint.fusion.parameters()), "lr": args.fusion_lr})
    return groups


def build_optimizer(stage: str, model: nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay really passed) or Adam over :func:`param_groups`."""
    groups = param_groups(stage, model, args)
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=groups[0]["lr"], momentum=args.momentum, weight_decay=args.weight_decay
        )
    return torch.optim.Adam(groups, lr=groups[0]["lr"], betas=(0.9, 0.999), weight_decay=args.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, args: argparse.Namespace, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration LambdaLR: poly ``(1 - t / T) ** power`` or fixed."""
    if args.schedule == "poly":
        power, total = args.poly_power, max(1, total_steps)

        def factor(t: int) -> float:
            return float(max(0.0, 1.0 - t / total) ** power)
    else:

        def factor(t: int) -> float:
            return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------------------------------- stage
def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _checkpoint_dict(
    state: engine.TrainState,
    args: argparse.Namespace,
    global_batch: int,
    world_size: int,
    complete: bool,
    rng: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The checkpoint of ``state``; ``rng``: every process's RNG states by rank (default: this process's)."""
    options = {k: plain(v) for k, v in vars(args).items()}
    options["world_size"] = world_size
    device = _model_device(state.model)
    return {
        "format": FORMAT,
        "version": VERSION,
        "stage": state.stage,
        "config": {
            "model": model_config(state.model),
            "args": options,
            "changes": state.option_changes,
            **({"sources": state.sources} if state.stage == "joint" else {}),
            **({"train_data": state.train_data} if state.train_data else {}),
        },
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "batch_in_epoch": state.samples_in_epoch // global_batch,
        "samples_in_epoch": state.samples_in_epoch,
        "world_size": world_size,
        "complete": complete,
        "rng": rng if rng is not None else [get_rng_state()],
        "elapsed_s": state.elapsed_s,
        "cpu_threads": torch.get_num_threads(),  # results depend on it on the CPU (see thread_count_note)
        # the memory format, resolved (unset: the device's default); results depend on it (numerics_note)
        "channels_last": runtime_options(args, device)["channels_last"],
        "torch_version": str(torch.__version__),  # kernels may change between releases (torch_version_note)
        "device_type": device.type,  # another device rounds differently (device_note)
    }


def _model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _resume_checkpoint(
    stage: str, args: argparse.Namespace, ckpt_path: Path
) -> tuple[dict[str, Any] | None, Path | None]:
    """The checkpoint ``--resume`` continues from (None: start a new run)."""
    if args.resume is None:
        return None, None
    source = ckpt_path if args.resume == "auto" else Path(args.resume)
    if not source.is_file():
        if args.resume != "auto":
            raise UsageError(f"--resume checkpoint not found: {source}")
        if source.is_symlink() or source.exists():  # no checkpoint there, yet not "no run" either
            kind = (
                f"a symbolic link to {source.readlink()}, which does not exist"
                if source.is_symlink() and not source.exists()
                else "a folder"
                if source.is_dir()
                else "not a regular file"
            )
            raise UsageError(
                f"--resume: {source} is {kind}, not a checkpoint (a new run would replace it after its "
                "first epoch): restore the checkpoint, or move it away to start a new run"
            )
        return None, None
    ckpt = load_checkpoint(source, expect_stage=stage)
    check_resumable(ckpt, source)  # a training state, well formed: before anything is compared or built
    return ckpt, source


def _finished(ckpt: dict[str, Any], args: argparse.Namespace) -> bool:
    done_steps = args.max_steps is not None and int(ckpt["step"]) >= args.max_steps
    return int(ckpt["epoch"]) >= args.epochs or done_steps


def _check_run(
    stage: str, args: argparse.Namespace, folder: Path, world_size: int
) -> tuple[dict[str, Any] | None, Path | None, list[dict[str, Any]]]:
    """Decide how the stage starts, without changing anything: ``(checkpoint, its path, option changes)``.

    Raises:
        UsageError: a new run into a folder holding one (without ``--overwrite``), a ``--resume`` whose
            options differ from the checkpoint's record (see :mod:`examples.voc_joint.resume`), ...
        CheckpointError: an unreadable, corrupt or wrong-stage checkpoint.
    """
    ckpt_path = folder / "checkpoint.pt"
    ckpt, source = _resume_checkpoint(stage, args, ckpt_path)
    own = ckpt_path.is_file() and source is not None and source.resolve() == ckpt_path.resolve()
    if args.resume is None:
        check_new_run(folder, args)
    elif source is not None and not own and ckpt_path.is_file() and not args.overwrite:
        raise UsageError(
            f"output folder {folder} holds another run's checkpoint; --resume {source} would replace it: add "
            "--overwrite to do so, or choose another --output-dir"
        )
    elif own and args.overwrite:
        raise UsageError(f"--overwrite would delete the checkpoint that --resume {source} continues from")
    changes: list[dict[str, Any]] = []
    if ckpt is not None and source is not None:
        if stage == "joint":  # first: no option can make up for other source weights
            check_sources(ckpt, args, source)
        recorded = {"world_size": ckpt.get("world_size", 1), **ckpt["config"].get("args", {})}
        current = {**vars(args), "world_size": world_size}
        new = option_changes(
            stage, recorded, current, allow=args.allow_option_changes, source=source, step=int(ckpt["step"])
        )
        changes = [*ckpt["config"].get("changes", []), *new]
    return ckpt, source, changes


def _agree(info: DistInfo, work: Callable[[], Any]) -> Any:
    """Run ``work()`` on rank 0; every process gets its (picklable) result or raises its error (same type).

    The errors passed on: a refusal (``UsageError``, ``CheckpointError``: ``(class name, message)``) and an
    ``OSError`` (the lock, a folder that cannot be cleared: ``(class name, message, errno)``, raised on the
    other ranks as the same built-in class with that errno). Rank 0 raises its own error; the other ranks'
    copies carry ``printed_by_rank_0``, so that one message is printed, not one per process. (An ``OSError``
    that left rank 0 before the broadcast made the others fail in the collective, reported as a lost process.)
    """
    result: Any = None
    error: tuple[Any, ...] | None = None
    own: OSError | None = None
    if info.main:
        try:
            result = work()
        except (UsageError, CheckpointError) as exc:
            error = (type(exc).__name__, str(exc))
        except OSError as exc:
            error, own = (type(exc).__name__, str(exc), exc.errno), exc
    result, error = info.from_main((result, error))
    if own is not None:
        raise own
    if error is not None:
        refusal: Exception
        if len(error) == 3:
            cls = getattr(builtins, error[0], OSError)
            refusal = (cls if isinstance(cls, type) and issubclass(cls, OSError) else OSError)(error[1])
            refusal.errno = error[2]
        else:
            refusal = (CheckpointError if error[0] == "CheckpointError" else UsageError)(error[1])
        raise mark_printed_by_rank_0(refusal, info)  # every process has it: main prints it on rank 0 only
    return result


def _acquire(locks: Sequence[FolderLock]) -> None:
    for lock in locks:
        lock.acquire()


def _apply_optimizer_options(state: engine.TrainState, args: argparse.Namespace) -> None:
    """After restoring a checkpoint: the learning rates, momentum, weight decay and schedule of ``args``.

    The optimizer and scheduler states carry the values they were created with; an option changed on resume
    (``--allow-option-changes``, or a longer poly schedule) takes effect from the next step.
    """
    groups = state.optimizer.param_groups
    wanted = param_groups(state.stage, state.model, args)
    sched = state.scheduler
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)  # built by build_scheduler
    for group, new in zip(groups, wanted, strict=True):
        group["initial_lr"] = new["lr"]
        group["weight_decay"] = new.get("weight_decay", args.weight_decay)
        if "momentum" in group:
            group["momentum"] = args.momentum
    sched.base_lrs = [new["lr"] for new in wanted]
    for group, base, factor in zip(groups, sched.base_lrs, sched.lr_lambdas, strict=True):
        group["lr"] = base * factor(sched.last_epoch)
    sched._last_lr = [group["lr"] for group in groups]  # what get_last_lr() reports


def build_train_state(
    stage: str,
    args: argparse.Namespace,
    info: DistInfo,
    ckpt: dict[str, Any] | None,
    steps_per_epoch: int,
    changes: Sequence[dict[str, Any]] = (),
    source: Path | None = None,
) -> tuple[engine.TrainState, bool]:
    """Model, optimizer, scheduler and scaler (restored from ``ckpt``, the file ``source``, when resuming);
    ``(state, use_amp)``.

    Every RNG is seeded with ``--seed`` (plus the rank) first, so a new run's random draws (fusion layers,
    dropout) are a function of the seed.

    Raises:
        CheckpointError: the checkpoint's weights, optimizer, scheduler or scaler state do not fit its model.
    """
    _seed_everything(args.seed + info.rank)
    device = info.device
    args = argparse.Namespace(**vars(args))
    args.channels_last = runtime_options(args, device)["channels_last"]  # unset: the device's default
    model = (
        build_model(ckpt["config"]["model"], runtime=runtime_options(args))
        if ckpt is not None
        else build_stage_model(stage, args)
    )
    model.to(device)
    use_amp = bool(args.amp and device.type == "cuda")
    if args.amp and not use_amp and info.main:
        print(f"[{stage}] --amp ignored on {device.type} (CUDA only)", flush=True)
    if args.sync_bn and not info.enabled and info.main:
        print(f"[{stage}] --sync-bn ignored in one process (DDP only)", flush=True)
    if info.enabled and args.sync_bn:
        _check_sync_bn(args, info)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call, unused-ignore]  # untyped in torch (strict)
    optimizer = build_optimizer(stage, model, args)
    position = (0, 0, 0) if ckpt is None else _position(ckpt, args)
    scheduler = build_scheduler(
        optimizer,
        args,
        schedule_horizon(args.epochs, steps_per_epoch, args.batch_size * info.world_size, *position),
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    state = engine.TrainState(stage, model, model, optimizer, scheduler, scaler)
    if ckpt is not None:
        regrouped = _restore_training_state(state, ckpt, source)
        state.step, state.epoch, state.samples_in_epoch = position
        state.elapsed_s = float(ckpt.get("elapsed_s", 0.0))  # absent before 2026-12-01: counted from 0
        if changes or regrouped:
            _apply_optimizer_options(state, args)
        if regrouped and info.main:
            print(
                f"[{stage}] the checkpoint's optimizer has one parameter group (written before biases were "
                "exempt from weight decay, as in SpixelFCN): from the next step its biases get none",
                flush=True,
            )
        _restore_rng(ckpt, args, info, stage)  # last: building the model drew from the RNG
    if info.enabled:
        ids = [device.index] if device.type == "cuda" else None
        state.train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=ids, find_unused_parameters=stage == "joint"
        )
    return state, use_amp


def _check_sync_bn(args: argparse.Namespace, info: DistInfo) -> None:
    """Refuse ``--sync-bn`` in a process group that does not train on CUDA.

    Raises:
        UsageError: ``--sync-bn`` under DDP on the CPU (SyncBatchNorm has no CPU/gloo implementation).
    """
    if args.sync_bn and info.enabled and info.device.type != "cuda":
        raise UsageError(
            "--sync-bn needs CUDA (SyncBatchNorm has no CPU/gloo implementation), and this run trains on "
            f"{info.device.type}: drop --sync-bn"
        )


def _restore_training_state(state: engine.TrainState, ckpt: dict[str, Any], source: Path | None) -> bool:
    """Load the checkpoint's weights, optimizer, scheduler and scaler states into ``state``; returns whether
    the optimizer state was regrouped (:func:`_regroup_optimizer_state`).

    Raises:
        CheckpointError: a state that does not fit the model built from the checkpoint's config (other keys,
            shapes or dtypes, other parameter groups, optimizer states of other shapes than their parameters,
            which only the first step would have found), named with the error.
    """
    part = "weights"
    # (a "module." prefix, as every other loader of these checkpoints takes it: a missing-keys list here; a
    # key with and without it is refused with its own message, whole)
    weights = strip_module_prefix(ckpt["model"], "" if source is None else source)
    try:
        dtypes = other_dtypes(state.model.state_dict(), weights, "model")
        if dtypes:  # load_state_dict converts them: an integer or complex file became other weights
            raise ValueError(f"other dtypes {dtypes[:5]}")
        state.model.load_state_dict(weights)
        part = "optimizer state"
        saved, regrouped = _regroup_optimizer_state(state.optimizer, ckpt["optimizer"], state.model)
        state.optimizer.load_state_dict(saved)
        for param, values in state.optimizer.state.items():
            for key, value in values.items():
                # Adam's step count is one value; every other state (momentum, moments) one per weight: a
                # 0-dim one (passed here when only states with dimensions were compared) broadcast in the
                # first step's in-place update ("output with shape [] doesn't match the broadcast shape")
                shape = () if key == "step" else param.shape
                if isinstance(value, Tensor) and value.shape != shape:
                    raise ValueError(
                        f"{key!r} of shape {tuple(value.shape)} for a parameter of shape {tuple(param.shape)}"
                        + (" (expected one value, of shape ())" if key == "step" else "")
                    )
        part = "scheduler state"
        state.scheduler.load_state_dict(ckpt["scheduler"])
        part = "scaler state"
        load_scaler_state(state.scaler, ckpt["scaler"])
    except torch.OutOfMemoryError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        text = " ".join(str(exc).split())  # load_state_dict lists the keys on the lines after the first
        reason = f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
        raise CheckpointError(
            f"--resume {source}: the checkpoint's {part} cannot be restored into the {state.stage} model of "
            f"its config ({reason})"
        ) from exc
    return regrouped


def _regroup_optimizer_state(
    optimizer: torch.optim.Optimizer, saved: dict[str, Any], model: nn.Module
) -> tuple[dict[str, Any], bool]:
    """``(state to load, whether it was regrouped)``: a saved optimizer state with the current group layout.

    A spixel checkpoint written before its biases were exempt from weight decay holds one group over
    ``model.parameters()``; its per-parameter state (Adam's moments, SGD's momentum) is moved to the same
    parameters in the current groups, and each group keeps the saved hyper-parameters except its own
    ``params``, ``name`` and ``weight_decay``. Any other layout is returned as it is (``load_state_dict``
    then checks it).
    """
    current = optimizer.state_dict()
    old_groups, new_groups = saved["param_groups"], current["param_groups"]
    count = len(list(model.parameters()))
    if not (
        len(old_groups) == 1
        and len(new_groups) > 1
        and list(old_groups[0]["params"]) == list(range(count))
        and sum(len(g["params"]) for g in new_groups) == count
    ):
        return saved, False
    position = {id(p): i for i, p in enumerate(model.parameters())}  # the old group's order
    new_to_old: dict[int, int] = {}
    for group, indices in zip(optimizer.param_groups, new_groups, strict=True):
        for p, index in zip(group["params"], indices["params"], strict=True):
            new_to_old[index] = position[id(p)]
    state = {new: saved["state"][old] for new, old in new_to_old.items() if old in saved["state"]}
    keep = ("params", "name", "weight_decay")
    groups = [
        {**{k: v for k, v in old_groups[0].items() if k not in keep}, **{k: g[k] for k in keep if k in g}}
        for g in new_groups
    ]
    return {"state": state, "param_groups": groups}, True


def _restore_rng(ckpt: dict[str, Any], args: argparse.Namespace, info: DistInfo, stage: str) -> None:
    """Give each process the RNG states it had when ``ckpt`` was written (``ckpt["rng"]``: a list by rank;
    one dict, rank 0's, before checkpoint version 3, read as a run of one process).

    With another number of processes (``--allow-option-changes``) there is no such state: each process
    reseeds from ``(--seed, rank, step)`` instead, so the run stays a function of its options, and rank 0
    says so.
    """
    states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
    if len(states) == info.world_size:
        set_rng_state(states[info.rank])
        note = cuda_rng_note(stage, states[info.rank], info.device)
        if note is not None and info.main:
            print(note, flush=True)
        return
    step = int(ckpt["step"])
    _seed_everything(derive_seed(args.seed, info.rank, step))
    if info.main:
        print(
            f"[{stage}] the checkpoint holds the RNG states of "
            f"{counted(len(states), 'process', 'processes')}, this run has {info.world_size}: every process "
            f"reseeds from (--seed {args.seed}, its rank, step {step})",
            flush=True,
        )


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Restore a checkpoint's gradient-scaler state.

    An empty state (the run had no enabled scaler: no ``--amp``, or ``--amp`` on the CPU) leaves ``scaler`` as
    built, where an enabled scaler would refuse it (resuming such a run with AMP on CUDA).
    """
    if state:
        scaler.load_state_dict(state)


def _position(ckpt: dict[str, Any], args: argparse.Namespace) -> tuple[int, int, int]:
    """``(step, epoch, samples_in_epoch)`` of a checkpoint."""
    recorded = ckpt["config"].get("args", {})
    global_batch = int(recorded.get("batch_size", args.batch_size)) * int(ckpt.get("world_size", 1))
    # version-1 checkpoints count batches only
    samples = int(ckpt.get("samples_in_epoch", int(ckpt.get("batch_in_epoch", 0)) * global_batch))
    return int(ckpt["step"]), int(ckpt["epoch"]), samples


def schedule_horizon(
    epochs: int,
    steps_per_epoch: int,
    global_batch: int,
    step: int = 0,
    epoch: int = 0,
    samples_in_epoch: int = 0,
) -> int:
    """The step count ``T`` of the poly schedule: the steps done plus those left until ``epochs`` end.

    ``--epochs`` x steps per epoch for a new run or an unchanged resume (not ``--max-steps``: capped runs
    resume exactly); after a change of the batch size or of the number of processes on resume (a new number
    of steps per epoch), the remaining steps are counted at the new size, so the schedule still ends at the
    last step instead of reaching 0 before it.

    Example:
        >>> schedule_horizon(3, 2, 2), schedule_horizon(3, 2, 2, step=3, epoch=1, samples_in_epoch=2)
        (6, 6)
        >>> schedule_horizon(3, 1, 4, step=3, epoch=1, samples_in_epoch=2)  # batch 2 -> 4 after 3 steps
        4
    """
    if epoch >= epochs:
        return max(step, 1)
    left_in_epoch = max(0, (steps_per_epoch * global_batch - samples_in_epoch) // global_batch)
    return step + left_in_epoch + (epochs - epoch - 1) * steps_per_epoch


def run_stage(
    stage: str,
    args: argparse.Namespace,
    info: DistInfo | None = None,
    guard: InterruptGuard | None = None,
    *,
    locked: bool = False,
    own_command: bool = True,
) -> Path:
    """Train one stage and return the path of its final checkpoint.

    Args:
        stage: ``"seg"``, ``"spixel"`` or ``"joint"``.
        args: parsed options (see :func:`~examples.voc_joint.train_options.build_parser`); per-stage defaults
            are filled in here.
        info: distributed facts (from :func:`~examples.voc_joint.distributed.init_distributed` when ``None``).
        guard: the signal guard of the whole run (a new one around this stage when ``None``).
        locked: the caller already holds the lock of ``<output-dir>/<stage>`` (else it is taken here).
        own_command: ``train.py`` runs the stage: a stop prints where its checkpoint is and that ``--resume``
            continues it (on stderr). ``False`` for another command (``demo.py``, ``ablation.py``), whose
            own stop line says what to do: it has no ``--resume``.

    Raises:
        Interrupted: SIGINT / SIGTERM / SIGHUP; the checkpoint of the last completed step was written first.
        NonFiniteError: non-finite loss, gradients, weights or running statistics; the last good
            checkpoint stays.
        UsageError: the command cannot run as given (folder in use or holding a run, changed options, ...).
        CheckpointError: an unreadable, corrupt or wrong-stage checkpoint.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    info = info or init_distributed(args.device)
    args, taken = resolve_with_origins(stage, args)
    if taken and info.main:
        print(
            f"[{stage}] model options taken from the checkpoints: "
            + "; ".join(f"from {where}: {', '.join(opts)}" for where, opts in taken.items()),
            flush=True,
        )
    folder = Path(args.output_dir) / stage
    ckpt_path = folder / "checkpoint.pt"
    lock = FolderLock(folder) if info.main and not locked else None
    with nullcontext(guard) if guard is not None else InterruptGuard() as active:
        _agree(info, lambda: _acquire([lock] if lock is not None else []))
        try:
            return _run_locked(stage, args, info, active, folder, ckpt_path, own_command)
        finally:
            if lock is not None:
                lock.release()


def _run_locked(
    stage: str,
    args: argparse.Namespace,
    info: DistInfo,
    guard: InterruptGuard,
    folder: Path,
    ckpt_path: Path,
    own_command: bool,
) -> Path:
    source, changes = _agree(info, lambda: _check_run(stage, args, folder, info.world_size)[1:])
    ckpt, sha256 = (
        load_checkpoint_with_sha256(source, expect_stage=stage) if source is not None else (None, "")
    )
    if args.resume == "auto" and source is None and info.main:
        print(f"[{stage}] --resume: no checkpoint in {folder}; starting a new run", flush=True)
    evaluates = bool(args.eval) and stage in EVAL_STAGES
    if ckpt is not None and source is not None and _finished(ckpt, args):
        own = Path(source).resolve() == ckpt_path.resolve()
        step = int(ckpt["step"])
        # a signal during the set-up stops the command here too (exit status 128 + it), not after a skip
        # or an evaluation it asked to stop
        _stop_if_signalled(stage, guard, info, own_command)
        if args.overwrite:  # --overwrite --resume PATH of another folder: PATH is the stage's result
            _agree(info, lambda: _clear(folder, ckpt_path, overwrite=True))
        pending = (
            evaluates
            and own
            and not _agree(info, lambda: engine.evaluation_current(ckpt_path, step, args, sha256))
        )
        if info.main:
            print(
                f"[{stage}] {source} already reached {_where(ckpt)}; "
                + (
                    "evaluating it (no eval.json of this checkpoint with this --val-split, --eval-crop and "
                    "--sbd yet)"
                    if pending
                    else "skipping the stage"
                ),
                flush=True,
            )
            if evaluates and not own:
                print(f"[{stage}] --eval: evaluate {source} with evaluate.py (not this run's)", flush=True)
        if pending:
            _evaluate(stage, ckpt_path, args, info, guard, data_root(args, info))
        return Path(source)
    # everything the run reads is checked and built before --overwrite deletes the old run: a typo in a
    # split, a data folder or a weights file leaves that run intact
    root = data_root(args, info)
    if evaluates:  # a missing or empty validation split fails now, not after the training
        check_val_data(args, root)
    loader, sampler = build_train_loader(args, info, root)
    train_list = train_list_fingerprint(loader)
    recorded_list = None if ckpt is None else ckpt["config"].get("train_data")
    if ckpt is not None and recorded_list is not None and recorded_list != train_list:  # (none before 12-06)
        if not args.allow_option_changes:
            raise UsageError(_train_list_error(args, root, recorded_list, train_list))
        changes = [
            *changes,
            {"step": int(ckpt["step"]), "option": "training list", "old": recorded_list, "new": train_list},
        ]
    new_changes = changes[len(ckpt["config"].get("changes", [])) :] if ckpt is not None else []
    state, use_amp = build_train_state(
        stage, args, info, ckpt, sampler.steps_per_epoch, new_changes, source=source
    )
    state.option_changes = list(changes)
    state.train_data = train_list
    if stage == "joint":  # what it fine-tunes (a resume keeps the record it was checked against)
        recorded = None if ckpt is None else dict(ckpt["config"].get("sources") or {})
        sources = _agree(info, lambda: joint_sources(args) if recorded is None else recorded)
        if info.main:
            state.sources = sources
    resume_step = None if ckpt is None else state.step
    # the rows the new log starts with, read (and an unreadable log refused, on every process) before
    # --overwrite deletes anything: of the resumed checkpoint's folder where it is another one (this
    # folder's rows, of a run lost before its first checkpoint, were kept and interleaved with its history)
    elsewhere = source is not None and Path(source).resolve() != ckpt_path.resolve()
    history = Path(source).parent / "log.csv" if elsewhere else folder / "log.csv"
    kept_rows = (
        _agree(info, lambda: engine.read_log_rows(history, resume_step)) if resume_step is not None else None
    )
    # a signal during the set-up (the data checks, the loaders, the model) stops the command before
    # --overwrite deletes the old run: it was deleted all the same, and the stop said "nothing to save"
    _stop_if_signalled(stage, guard, info, own_command)
    _agree(info, lambda: _clear(folder, ckpt_path, overwrite=bool(args.overwrite)))
    if ckpt is not None and info.main:
        skip = state.samples_in_epoch // sampler.global_batch
        same_batches = skip * sampler.global_batch == state.samples_in_epoch and skip == int(
            ckpt.get("batch_in_epoch", 0) or 0
        )  # the checkpoint's epoch has the same steps (else it says how many batches are skipped)
        where = _where(ckpt, sampler.steps_per_epoch if same_batches else None)
        if skip and not same_batches:
            where += f", skipping {counted(skip, 'done batch', 'done batches')}"
        print(
            f"[{stage}] resumed from {source}: {where}"
            + "".join(
                f"\n[{stage}] option change: {c['option']} {c['old']!r} -> {c['new']!r}" for c in changes
            ),
            flush=True,
        )
        for note in (
            thread_count_note(stage, ckpt, info.device),
            numerics_note(stage, ckpt, args, info.device),
            torch_version_note(stage, ckpt),
            device_note(stage, ckpt, info.device),
        ):
            if note is not None:
                print(note, flush=True)
    del ckpt
    # --resume without a checkpoint continues a run lost before its first checkpoint (a new run is refused
    # there) from step 0: its log.csv rows and its TensorBoard events go alike
    logged_to = 0 if args.resume is not None and resume_step is None else resume_step
    logger = engine.CsvLogger(folder, info.main, args.tensorboard, logged_to, kept_rows or [])
    try:
        _train(
            state,
            loader,
            sampler,
            args,
            info,
            guard,
            logger,
            ckpt_path,
            use_amp,
            resume_step,
            own_command,
            None if source is None else Path(source),
        )
    finally:
        logger.close()
    if evaluates:
        _evaluate(stage, ckpt_path, args, info, guard, root)
    else:
        info.barrier()
    return ckpt_path


def _clear(folder: Path, ckpt_path: Path, *, overwrite: bool) -> None:
    """Just before a stage starts: ``--overwrite`` deletes the folder's run; stale temporaries go."""
    if overwrite:
        clear_run(folder)
    remove_stale_temporaries(ckpt_path)


def _where(ckpt: dict[str, Any], steps_per_epoch: int | None = None) -> str:
    """Where a checkpoint stands, counting epochs from 1 as log.csv and the progress bar do: "the end of
    epoch 2 (step 6)", or mid-epoch "epoch 3, step 7 (1 of 3 steps of the epoch done)"."""
    step, epoch, done = int(ckpt["step"]), int(ckpt["epoch"]), int(ckpt.get("batch_in_epoch", 0) or 0)
    if not done:
        return f"the end of epoch {epoch} (step {step})"
    steps = f"{done} of {counted(steps_per_epoch, 'step')}" if steps_per_epoch else counted(done, "step")
    return f"epoch {epoch + 1}, step {step} ({steps} of the epoch done)"


def _evaluate(
    stage: str, ckpt_path: Path, args: argparse.Namespace, info: DistInfo, guard: InterruptGuard, root: Path
) -> None:
    """``--eval`` of a finished stage (on the main process, the others wait); says how to redo a failure."""
    if info.main:
        try:
            with guard.released():
                engine.evaluate_checkpoint(ckpt_path, args, info.device, root)
        except BaseException as exc:
            what = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            print(
                f"\n[{stage}] evaluation {what}: the checkpoint {ckpt_path} is complete; evaluate it with "
                "the same command and --resume (or with evaluate.py)",
                file=sys.stderr,
                flush=True,
            )
            raise
    info.wait_for_main()  # not under the process group's timeout, which a long evaluation outlasts


def _train(
    state: engine.TrainState,
    loader: torch.utils.data.DataLoader[Any],
    sampler: EpochSampler,
    args: argparse.Namespace,
    info: DistInfo,
    guard: InterruptGuard,
    logger: engine.CsvLogger,
    ckpt_path: Path,
    use_amp: bool,
    saved_step: int | None,
    own_command: bool,
    resumed_from: Path | None = None,
) -> None:
    """The epoch loop: train, checkpoint after every epoch / at the step cap / on a signal, then stop (with
    ``own_command``, a stop says where the checkpoint is). ``resumed_from``: the checkpoint of step
    ``saved_step`` the run resumed from (``--resume PATH`` may name another folder's), the last good state
    until this run writes ``ckpt_path``."""
    # the clock of log.csv's elapsed_s: continues from the checkpoint's training time on --resume
    stage, t0 = state.stage, time.perf_counter() - state.elapsed_s
    if info.main:
        groups = state.optimizer.param_groups
        lrs = ", ".join(
            f"{g['name']}={g['lr']:.3g}" for g in groups if not g["name"].endswith(NO_DECAY_SUFFIX)
        )
        exempt = args.weight_decay and any(g["name"].endswith(NO_DECAY_SUFFIX) for g in groups)
        wd = f"wd {args.weight_decay}" + (" (biases 0)" if exempt else "")
        print(
            f"[{stage}] {type(state.model).__name__} on {info.device} x{info.world_size}, "
            f"{sampler.steps_per_epoch} steps/epoch, {args.optimizer} ({lrs}, {wd}, "
            f"{args.schedule}), amp={use_amp}",
            flush=True,
        )
    saved = None if saved_step is None else (state.step, state.epoch, state.samples_in_epoch)
    on_disk = resumed_from or ckpt_path  # the file of the last good state (once there is one: saved)
    reason = "epoch"
    # the signal every process stops on: the largest number any of them recorded (0: none), so that every
    # process exits with the same status (128 + it), not Ctrl-C's where only another process was signalled
    agreed = _agreed_signal(guard, info)
    if agreed:
        reason = "interrupt"  # a signal during the set-up: nothing new to save
    while state.epoch < args.epochs and reason not in ("max_steps", "interrupt"):
        begin_epoch(sampler, loader.generator, args.seed, state.epoch, state.samples_in_epoch)
        try:
            reason = engine.train_one_epoch(
                state,
                loader,
                args,
                info,
                steps_per_epoch=sampler.steps_per_epoch,
                global_batch=sampler.global_batch,
                guard=guard,
                logger=logger,
                use_amp=use_amp,
                t0=t0,
            )
        except engine.NonFiniteError as exc:  # which checkpoint is the last good state, if one was written
            last = (
                f"the checkpoint of step {saved[0]} in {on_disk} is the last good state"
                if saved is not None
                else "no checkpoint was written yet (the first is written at the end of the first epoch or "
                "at --max-steps): there is nothing to resume"
            )
            # every process stops here with this message (they agreed on the finding): rank 0 prints it
            error = engine.NonFiniteError(
                f"[{stage}] {exc.finding}: training stopped {exc.stopped}; {last}. "
                f"{engine.divergence_advice(use_amp)}",
                exc.finding,
                stopped=exc.stopped,
            )
            raise mark_printed_by_rank_0(error, info) from None
        position = (state.step, state.epoch, state.samples_in_epoch)
        if position != saved:  # never rewrite (or replace by an older state) what is on disk
            rng = info.gather(get_rng_state())  # every process's RNG states (each draws its own dropout)
            state.elapsed_s = time.perf_counter() - t0
            if info.main:
                # from the position, not from why the epoch loop stopped: a signal at the step that
                # reaches --max-steps stops it as "interrupt", the stage finished all the same
                complete = _done(state, args)
                checkpoint = _checkpoint_dict(
                    state, args, sampler.global_batch, info.world_size, complete, rng
                )
                try:
                    with guard.critical():
                        logger.sync()  # the log rows up to this checkpoint, durable before it is
                        save_checkpoint(ckpt_path, checkpoint)
                except Interrupted as exc:  # a second signal during the write, which completed first
                    if own_command:
                        print(
                            f"\n[{stage}] stopped by a second {signal.Signals(exc.signum).name} after its "
                            f"checkpoint of step {state.step} in {ckpt_path} was written (continue with "
                            "--resume)",
                            file=sys.stderr,
                            flush=True,
                        )
                    raise Interrupted(exc.signum, forced=True, saved=True) from None
            saved, on_disk = position, ckpt_path
        if reason == "epoch":
            faults.hit("epoch-end", state.epoch)
        # every process leaves together: a signal seen by any of them during the save or the wait stops all
        agreed = _agreed_signal(guard, info)
        if agreed and reason != "interrupt":
            reason = "interrupt"
    if reason == "interrupt":
        # exit status 128 + signal even when the stage has just finished (as evaluate.py's after its results
        # are written): what the command would do next (--eval, the next stage of --stage all) did not run
        if info.main and own_command:
            if saved is not None and _done(state, args):
                where = (
                    f"the stage finished: its checkpoint of step {state.step} in {on_disk} is "
                    "complete (--resume skips it and goes on with what follows)"
                )
            elif saved is not None:
                where = f"checkpoint of step {state.step} in {on_disk} (continue with --resume)"
            else:
                where = "before the first step (nothing to save)"
            print(f"\n[{stage}] interrupted: {where}", file=sys.stderr, flush=True)
        raise Interrupted(agreed or guard.requested or signal.SIGINT)
    if info.main:
        print(
            f"[{stage}] done: {counted(state.step, 'step')} in {time.perf_counter() - t0:.1f} s; "
            f"checkpoint {ckpt_path}",
            flush=True,
        )


def _done(state: engine.TrainState, args: argparse.Namespace) -> bool:
    """Whether the training state has finished the stage: ``--epochs`` done or ``--max-steps`` reached (as
    :func:`_finished` of a checkpoint)."""
    return state.epoch >= args.epochs or (args.max_steps is not None and state.step >= args.max_steps)


def _agreed_signal(guard: InterruptGuard, info: DistInfo) -> int:
    """The largest signal number recorded by any process (0: none), the same on every process; a signal is
    also kept as ``guard.agreed``."""
    recorded = torch.tensor([float(guard.requested or 0)], device=info.device)
    agreed = int(info.any(recorded).item())
    if agreed:
        guard.agreed = agreed
    return agreed


def _train_list_error(
    args: argparse.Namespace, root: Path, recorded: dict[str, Any], current: dict[str, Any]
) -> str:
    """The refusal of a ``--resume`` whose training list differs from the checkpoint's run's."""
    return (
        f"the training split {args.train_split!r} of {root} lists {counted(current['images'], 'image')} "
        f"(names sha256 {current['names_sha256'][:12]}), the checkpoint's run trained on "
        f"{recorded.get('images')} (sha256 {str(recorded.get('names_sha256'))[:12]}): the data changed "
        "since, and the sample order with it; restore it, or pass --allow-option-changes to continue on this "
        "list"
    )


def _stop_if_signalled(stage: str, guard: InterruptGuard, info: DistInfo, own_command: bool) -> None:
    """Raise :class:`Interrupted` where a signal came during the set-up, before the stage changes anything
    (deletes an old run for ``--overwrite``, trains, evaluates), saying so on the main process."""
    agreed = _agreed_signal(guard, info)
    if not agreed:
        return
    if info.main and own_command:
        print(
            f"\n[{stage}] interrupted during the set-up: nothing was trained, saved or deleted",
            file=sys.stderr,
            flush=True,
        )
    raise Interrupted(agreed)


# ------------------------------------------------------------------------------------------------------ main


def _stage_paths(
    stage: str, args: argparse.Namespace, *, before_clearing: bool = False
) -> argparse.Namespace:
    """The options of one stage of ``args.stage`` before
    :func:`~examples.voc_joint.train_options.resolve_stage_options` (``all``: the joint stage starts from the
    two others' checkpoints in the output folder). ``before_clearing``: the checks that run before
    ``--overwrite`` deletes the old run, whose checkpoints there are not the sources (ignored then, as in a
    fresh folder)."""
    out = argparse.Namespace(**vars(args))
    if args.stage == "all" and stage == "joint":
        old_run = before_clearing and args.overwrite
        for option, part in (("seg_checkpoint", "seg"), ("spixel_checkpoint", "spixel")):
            default = None if old_run else Path(args.output_dir) / part / "checkpoint.pt"
            setattr(out, option, getattr(args, option) or default)
    return out


def _stage_args(stage: str, args: argparse.Namespace, *, before_clearing: bool = False) -> argparse.Namespace:
    """The options of one stage of ``args.stage``, resolved
    (:func:`~examples.voc_joint.train_options.resolve_stage_options`)."""
    return resolve_stage_options(stage, _stage_paths(stage, args, before_clearing=before_clearing))


def _check_stages(stages: Sequence[str], args: argparse.Namespace, world_size: int) -> None:
    """Every stage's checks (:func:`_check_run`) before the first one starts.

    With ``all``, a joint run to resume or skip must not depend on a seg / spixel stage that will train
    further first: its source checkpoints would change under it (refused here, before any training, rather
    than by :func:`~examples.voc_joint.sources.check_sources` once those stages are done).
    """
    training = []
    for stage in stages:
        stage_args = _stage_args(stage, args, before_clearing=True)
        ckpt, source, _ = _check_run(stage, stage_args, Path(args.output_dir) / stage, world_size)
        if stage != "joint" and (ckpt is None or not _finished(ckpt, stage_args)):
            training.append(stage)
        elif stage == "joint" and ckpt is not None and training and ckpt["config"].get("sources"):
            raise UsageError(
                f"joint stage: the joint run in {source} was fine-tuned from the current checkpoints of the "
                f"earlier stages, but this command first trains the {' and '.join(training)} stage (not at "
                "its --epochs / --max-steps yet), which would replace the checkpoint the joint run came "
                "from: retrain the pipeline with --stage all --overwrite, or resume the joint stage alone"
            )


def _resolve_stages(stages: Sequence[str], args: argparse.Namespace) -> None:
    """Resolve every stage's options (:func:`~examples.voc_joint.train_options.resolve_stage_options`):
    refuses unreadable or wrong-stage checkpoints and model options that contradict them, without touching any
    output folder."""
    for stage in stages:
        _stage_args(stage, args, before_clearing=True)


def _check_resume_path(stage: str, args: argparse.Namespace, root: Path) -> None:
    """An explicit ``--resume PATH`` (one stage: ``check_args``) that cannot continue here, refused before any
    folder is locked (it created the stage's folder and its lock file first): no valid checkpoint of the
    stage, no training state (:func:`~examples.voc_joint.checkpoint.check_resumable`), or another training
    list than the data's in ``root`` (without ``--allow-option-changes``). Read again for the run (the file
    may be large: read twice for an explicit path only). Runs on rank 0 alone (``_agree``): no collective
    in it (``data_root``'s barrier is the caller's)."""
    if args.resume in (None, "auto") or not Path(args.resume).is_file():
        return
    ckpt = load_checkpoint(args.resume, expect_stage=stage)
    check_resumable(ckpt, args.resume)
    recorded = ckpt["config"].get("train_data")
    if recorded is None or args.allow_option_changes:
        return
    current = train_list_fingerprint_of(args, root)
    if current != recorded:
        raise UsageError(_train_list_error(args, root, recorded, current))


def _clear_stages(stages: Sequence[str], args: argparse.Namespace) -> None:
    """``--stage all --overwrite``: delete every stage's old run before the first stage starts, so that a
    later stage of the old run (finished, hence skipped by a ``--resume``) cannot outlive an interrupted new
    one and be kept as if it came from the new stages."""
    for stage in stages:
        clear_run(Path(args.output_dir) / stage)


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    """Parse ``argv`` and run the requested stage(s); returns ``{stage: checkpoint path}``.

    Every stage's folder is locked and checked (new run, resume rules) before the first one starts.

    Raises:
        SystemExit: status 2 for a command that cannot run (bad option, folder in use or holding a run,
            changed options on resume, wrong or corrupt checkpoint).
        Interrupted: SIGINT / SIGTERM / SIGHUP after the checkpoint was written (exit status 130 / 143 / 129
            as a script).
        NonFiniteError: training diverged (exit status 1 as a script).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args, sys.argv[1:] if argv is None else argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    stages = STAGES if args.stage == "all" else (args.stage,)
    out: dict[str, Path] = {}
    locks = []
    # the process group first, under the default signal handlers: a process waiting here for one that failed
    # at start stops on torchrun's SIGTERM (the guard would defer it to a safe point this wait never reaches)
    try:
        info = init_distributed(args.device)
    except UsageError as exc:  # a hostile WORLD_SIZE, RANK, LOCAL_RANK or MASTER_PORT, or a device refused
        # under it (cuda:N, a LOCAL_RANK without a GPU): named, exit status 2
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    with InterruptGuard() as guard:
        try:
            # what needs no output folder first: a refused command leaves no lock file or folder behind
            _agree(info, lambda: _check_sync_bn(args, info))  # not once --overwrite cleared the old run
            _agree(info, lambda: _resolve_stages(stages, args))
            check_data(_stage_args(stages[0], args), info, val=bool(args.eval))
            first = _stage_args(stages[0], args)
            root = data_root(first, info)  # (every process: the synthetic set's barrier)
            _agree(info, lambda: _check_resume_path(stages[0], first, root))
            if info.main:
                locks = [FolderLock(Path(args.output_dir) / stage) for stage in stages]
            _agree(info, lambda: _acquire(locks))
            _agree(info, lambda: _check_stages(stages, args, info.world_size))
            if args.overwrite and len(stages) > 1:  # a new pipeline: no stage may keep the old run's results
                _stop_if_signalled("train", guard, info, True)  # (before the old run is deleted)
                _agree(info, lambda: _clear_stages(stages, args))
            for stage in stages:
                out[stage] = run_stage(stage, _stage_paths(stage, args), info, guard, locked=True)
        except (UsageError, CheckpointError) as exc:
            # rank 0's refusal reaches every process: one copy, not one per process
            parser.exit(
                2, None if getattr(exc, PRINTED_BY_RANK_0, False) else f"{parser.prog}: error: {exc}\n"
            )
        except RuntimeError as exc:
            if not (info.enabled and peer_lost(exc)):
                raise
            signum = guard.requested or guard.agreed
            if signum is not None:
                # this process was stopped too (Ctrl-C, a scheduler's SIGTERM to every process), or all of
                # them had agreed to stop on another's signal: the other one stopped on it first (as rank 0
                # does in its evaluation, with the default handlers, or at a second signal during its
                # checkpoint write), and said so
                raise Interrupted(signum) from exc
            running = stages[min(len(out), len(stages) - 1)]  # the stage that was running
            raise ProcessLostError(_lost_text(info, Path(args.output_dir) / running)) from exc
        finally:
            for lock in locks:
                lock.release()
            cleanup_distributed()
    return out


def _lost_text(info: DistInfo, folder: Path) -> str:
    """The one-line error of a process whose collective failed because another process is gone."""
    ckpt = folder / "checkpoint.pt"
    kept = (
        f"the last checkpoint of the {folder.name} stage, {ckpt}, is intact: continue with --resume"
        if ckpt.is_file()
        else f"no checkpoint of the {folder.name} stage was written yet: run the command again"
    )
    return (
        f"another of the {info.world_size} processes was lost (killed or crashed: its own output or the "
        f"launcher's report says why); {kept}"
    )


def _cli() -> int:
    try:
        main()
    except Interrupted as exc:
        if exc.forced and not exc.saved:  # (a saved one said where its checkpoint is)
            print(
                f"\n[train] stopped by a second {signal.Signals(exc.signum).name}: no new checkpoint (the "
                "last one on disk is intact)",
                file=sys.stderr,
                flush=True,
            )
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except ProcessLostError as exc:
        print(f"[train] error: {exc}", file=sys.stderr, flush=True)
        return 1
    except (FloatingPointError, OSError, DataError) as exc:  # NonFiniteError, a refused save, a failing
        # disk, a missing or unusable data file
        if not getattr(exc, PRINTED_BY_RANK_0, False):  # (rank 0's error on another rank: rank 0 prints it)
            print(f"[train] error: {error_text(exc)}", file=sys.stderr, flush=True)
        return 1
    except (MemoryError, RuntimeError) as exc:
        message = out_of_memory_error(exc)
        if message is None:
            raise
        print(f"[train] error: {message} (the checkpoints on disk are intact)", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    from examples.voc_joint.console import tolerant_output

    tolerant_output()  # a path or a character the console cannot encode is escaped, not fatal
    sys.exit(_cli())
