"""Train the VOC joint pipeline: ``seg`` (DeepLabV3+), ``spixel`` (SpixelFCN), ``joint`` (all), ``all``.

Run ``python examples/voc_joint/train.py --help`` (or ``python -m examples.voc_joint.train --help``) for every
option. Multi-GPU / multi-machine: launch the same command through ``torchrun``; the script then initializes
``torch.distributed`` from the environment (``env://``, see :mod:`examples.voc_joint.distributed`), shards the
data over the processes and uses ``DistributedDataParallel`` (``nccl`` on CUDA, ``gloo`` on CPU). Without
``WORLD_SIZE`` it runs in one process.

This file holds the command line and the stage sequencing (build, resume, train, checkpoint, evaluate); the
epoch loop and the evaluation are in :mod:`examples.voc_joint.engine`, signal handling in
:mod:`examples.voc_joint.signals`.

Outputs, per stage, under ``<output-dir>/<stage>/``: ``checkpoint.pt`` (written atomically after every epoch
and on Ctrl-C / SIGTERM / SIGHUP), ``log.csv`` (and TensorBoard events with ``--tensorboard``),
and with ``--eval`` ``eval.json`` and ``panels/`` after the seg and joint stages (the SpixelFCN stage has no
segmentation to score).
"""

from __future__ import annotations

import argparse
import itertools
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np
import torch
from torch import Tensor, nn

from examples.voc_joint import data, engine, faults
from examples.voc_joint.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    check_resumable,
    cuda_states_restorable,
    get_rng_state,
    load_checkpoint,
    load_checkpoint_with_sha256,
    load_network,
    other_dtypes,
    remove_stale_temporaries,
    save_checkpoint,
    set_rng_state,
)
from examples.voc_joint.cli import (
    AMP_HELP,
    DATA_ROOT_HELP,
    DEVICE_HELP,
    FACTOR_MAX,
    SCALE_MAX,
    SEED_MAX,
    SIDE_MAX,
    THREADS_MAX,
    WORKERS_MAX,
    DefaultsHelpFormatter,
    UsageError,
    add_fusion_hidden,
    check_output_dir,
    device_arg,
    error_text,
    existing_dir,
    existing_file,
    flag,
    float_range,
    int_range,
    option_given,
    out_of_memory_error,
    output_path,
    resume_arg,
    spelled,
    split_name,
)
from examples.voc_joint.data import DEFAULT_MAX_PIXELS, DataError, VOCSegmentation, missing_file_hint
from examples.voc_joint.distributed import (
    DistInfo,
    ProcessLostError,
    cleanup_distributed,
    init_distributed,
    peer_lost,
)
from examples.voc_joint.headers import check_headers, shown_problems
from examples.voc_joint.locking import FolderLock
from examples.voc_joint.models import DeepLabV3Plus, JointModel, SpixelFCN, build_model, model_config
from examples.voc_joint.models._checks import fusion_weights_problem
from examples.voc_joint.models.build import (  # the config schema's bounds: a model trained here must load
    FUSION_LAYER_MAX,
    MAX_CELL,
    MAX_FUSION_DEPTH,
    MAX_SPIXEL_WIDTH,
    MAX_WIDTH,
)
from examples.voc_joint.models.deeplabv3plus import BACKBONES
from examples.voc_joint.models.joint import (
    DEFAULT_CHANNELS_LAST,
    FUSION_INITS,
    MODES,
    ChannelsLast,
    network_channels_last,
)
from examples.voc_joint.resume import (
    PATH_OPTIONS,
    absolute_path,
    check_new_run,
    clear_run,
    option_changes,
    plain,
)
from examples.voc_joint.sampling import EpochSampler, SeededDataset, begin_epoch, derive_seed
from examples.voc_joint.signals import Interrupted, InterruptGuard, worker_init_fn
from examples.voc_joint.wording import counted
from examples.voc_joint.workers import worker_tmpdir_error

__all__ = [
    "CHECKPOINT_MODEL_OPTIONS",
    "EVAL_STAGES",
    "NO_DECAY_SUFFIX",
    "STAGES",
    "STAGE_DEFAULTS",
    "STAGE_LEARNING_RATES",
    "STAGE_ONLY_OPTIONS",
    "CheckpointModelOption",
    "UsageError",
    "backbone_weights_error",
    "build_optimizer",
    "build_parser",
    "build_scheduler",
    "build_stage_model",
    "build_train_loader",
    "build_train_state",
    "check_args",
    "check_val_data",
    "cuda_rng_note",
    "load_scaler_state",
    "main",
    "numerics_note",
    "param_groups",
    "resolve_stage_options",
    "run_stage",
    "runtime_options",
    "schedule_horizon",
    "thread_count_note",
    "torch_version_note",
]

STAGES = ("seg", "spixel", "joint")
#: The stages ``--eval`` evaluates.
EVAL_STAGES = ("seg", "joint")
POS = int_range(1)
#: A random training scale.
SCALE = float_range(0.0, SCALE_MAX, low_open=True)
#: A crop in pixels.
CROP = int_range(1, SIDE_MAX)
NONNEG = float_range(0.0, FACTOR_MAX)

#: Per-stage defaults of the options left at ``None`` on the command line.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "seg": {"optimizer": "sgd", "schedule": "poly", "weight_decay": 5e-4},
    "spixel": {"optimizer": "adam", "schedule": "fixed", "weight_decay": 4e-4},
    "joint": {"optimizer": "sgd", "schedule": "fixed", "weight_decay": 5e-4},
}


class CheckpointModelOption(NamedTuple):
    """Where the joint stage takes a model option from: ``config[key]`` of the ``network`` (``"deeplab"`` /
    ``"spixel"``) of the checkpoint that option ``checkpoint`` names; ``default`` without that checkpoint."""

    checkpoint: str
    network: str
    key: str
    default: Any


#: The model options the pretrained networks fix in the joint stage. Left at ``None`` on the command line, an
#: option is the checkpoint's (joint stage with that checkpoint) or the default; given, it must match.
CHECKPOINT_MODEL_OPTIONS: dict[str, CheckpointModelOption] = {
    "backbone": CheckpointModelOption("seg_checkpoint", "deeplab", "backbone", "resnet101"),
    "output_stride": CheckpointModelOption("seg_checkpoint", "deeplab", "output_stride", 16),
    "num_classes": CheckpointModelOption("seg_checkpoint", "deeplab", "num_classes", 21),
    "aspp_channels": CheckpointModelOption("seg_checkpoint", "deeplab", "aspp_channels", 256),
    "cell_size": CheckpointModelOption("spixel_checkpoint", "spixel", "cell_size", 16),
    "spixel_width": CheckpointModelOption("spixel_checkpoint", "spixel", "width", 16),
    "spixel_centre_bias": CheckpointModelOption("spixel_checkpoint", "spixel", "centre_bias", 0.0),
}
_FROM_CKPT = "; joint stage: that of --{}"
#: The options that only some stages use, with those stages. Given to another stage alone (not ``all``), an
#: option here is refused (:func:`check_args`) instead of silently doing nothing: ``--stage seg --lr 0.01``
#: would otherwise train at ``--seg-lr``. The model options are not here: they describe the whole pipeline,
#: so one set of them may be given to every stage, and each stage builds its networks from its own.
STAGE_ONLY_OPTIONS: dict[str, tuple[str, ...]] = {
    "seg_lr": ("seg",),
    "head_lr_mult": ("seg",),
    "spixel_pretrain_lr": ("spixel",),
    "pos_weight": ("spixel", "joint"),
    "recompute_loss": ("spixel", "joint"),
    "lr": ("joint",),
    "spixel_lr": ("joint",),
    "fusion_lr": ("joint",),
    "spixel_loss_weight": ("joint",),
    "freeze_bn": ("joint",),
    "recompute_fusion": ("joint",),
    "compile": ("joint",),
    "seg_checkpoint": ("joint",),
    "spixel_checkpoint": ("joint",),
    "backbone_weights": ("seg", "joint"),
    "eval": EVAL_STAGES,
}
#: Each stage's learning-rate options (named when another stage's is given to it).
STAGE_LEARNING_RATES: dict[str, tuple[str, ...]] = {
    "seg": ("--seg-lr", "--head-lr-mult"),
    "spixel": ("--spixel-pretrain-lr",),
    "joint": ("--lr", "--spixel-lr", "--fusion-lr"),
}


def _model_help(text: str, option: str) -> str:
    """Help of a model option of :data:`CHECKPOINT_MODEL_OPTIONS`: its default, or the checkpoint's value."""
    source = CHECKPOINT_MODEL_OPTIONS[option]
    return (
        f"{text} (default: {source.default}{_FROM_CKPT.format(source.checkpoint.replace('_', '-'))}, which a "
        "value given here must match)"
    )


# --------------------------------------------------------------------------------------------------- options
def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (every option documented in ``--help``)."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python examples/voc_joint/train.py",
        description=(
            "Train DeepLabV3+ + SpixelFCN joined by superpixel uniformization and transparent layers. "
            "Stages: seg (pretrain DeepLabV3+, cross-entropy with ignore 255), spixel (pretrain SpixelFCN "
            "with spixel_loss), joint (fine-tune everything: SGD momentum 0.9, the paper's learning rates), "
            "all (the three in order, each stage starting from the previous ones). Without --data-root a "
            "synthetic VOC-format set is generated into the cache. Run through torchrun for multi-GPU / "
            "multi-machine DDP."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    g = p.add_argument_group("stage and data")
    g.add_argument("--stage", choices=(*STAGES, "all"), default="all", help="what to train")
    g.add_argument(
        "--data-root",
        type=existing_dir,
        default=None,
        help=DATA_ROOT_HELP,
    )
    g.add_argument(
        "--sbd",
        action="store_true",
        help="train on the SBD-augmented set (SegmentationClassAug + ImageSets/SegmentationAug)",
    )
    g.add_argument(
        "--train-split", type=split_name, default="train", help="list file name of the training split"
    )
    g.add_argument(
        "--val-split",
        type=split_name,
        default="val",
        help="list file name of the validation split (--eval; with --sbd, in the SBD lists)",
    )
    g.add_argument("--crop-size", type=CROP, default=512, help="training crop (after random scale 0.5-2)")
    g.add_argument("--scale-min", type=SCALE, default=0.5, help="smallest random scale")
    g.add_argument("--scale-max", type=SCALE, default=2.0, help="largest random scale")
    g.add_argument(
        "--batch-size", type=int_range(2), default=8, help="images per process and step (>= 2: BatchNorm)"
    )
    g.add_argument("--workers", type=int_range(0, WORKERS_MAX), default=2, help="DataLoader worker processes")
    g.add_argument(
        "--max-image-pixels",
        type=POS,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images and masks with more pixels than this (decompression-bomb guard)",
    )
    g.add_argument(
        "--check-files",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="before the first step, read the header of every listed image and mask (training split and, "
        "with --eval, --val-split; no pixel decoded) and name every file the reader would refuse mid-run "
        "(default on: about 3 s for VOC trainaug + val, 24062 files, from a warm disk cache)",
    )
    g.add_argument(
        "--output-dir",
        type=output_path,
        default=Path("runs/voc_joint"),
        help="checkpoints and logs go to <output-dir>/<stage>/",
    )

    g = p.add_argument_group("models")
    g.add_argument(
        "--num-classes",
        type=int_range(1, 255),
        default=None,
        help=_model_help("segmentation classes (label 255 is ignored)", "num_classes"),
    )
    g.add_argument(
        "--backbone",
        choices=BACKBONES,
        default=None,
        help=_model_help("DeepLabV3+ ResNet backbone", "backbone"),
    )
    g.add_argument(
        "--output-stride",
        type=int,
        choices=(8, 16),
        default=None,
        help=_model_help(
            "DeepLabV3+ output stride (ASPP rates 6/12/18 at 16, 12/24/36 at 8)", "output_stride"
        ),
    )
    g.add_argument(
        "--aspp-channels",
        type=int_range(1, MAX_WIDTH),
        default=None,
        help=_model_help("ASPP / decoder width", "aspp_channels"),
    )
    g.add_argument(
        "--backbone-weights",
        type=existing_file,
        default=None,
        help="LOCAL ResNet state dict (torch.load weights_only=True); nothing is downloaded",
    )
    g.add_argument(
        "--cell-size",
        type=int_range(1, MAX_CELL),
        default=None,
        help=_model_help("superpixel grid cell size in pixels", "cell_size"),
    )
    g.add_argument(
        "--spixel-width",
        type=int_range(1, MAX_SPIXEL_WIDTH),
        default=None,
        help=_model_help("SpixelFCN first-stage width", "spixel_width"),
    )
    g.add_argument(
        "--spixel-centre-bias",
        type=float_range(-100.0, 100.0),
        default=None,
        help=_model_help(
            "initial bias of SpixelFCN's centre-cell logit (>0 starts near the regular grid)",
            "spixel_centre_bias",
        ),
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
    add_fusion_hidden(g)
    g.add_argument(
        "--fusion-activation",
        choices=("relu", "leaky_relu", "none"),
        default="relu",
        help="activation between the fusion layers",
    )
    g.add_argument(
        "--fusion-init",
        choices=FUSION_INITS,
        default="transparent",
        help="joint stage: initialization of the fusion stack (not with --no-fusion): transparent is the "
        "paper's (exactly 'take U(S)' at step 0); the others are what one would pick instead, for comparison "
        "(one line each: docs/examples/pipeline.rst, 'Fusion initializations'; "
        "examples/voc_joint/ablation.py compares them)",
    )
    g.add_argument(
        "--seg-checkpoint",
        type=existing_file,
        default=None,
        help="joint stage: DeepLabV3+ weights (seg or joint checkpoint); 'all' uses the seg stage's",
    )
    g.add_argument(
        "--spixel-checkpoint",
        type=existing_file,
        default=None,
        help="joint stage: SpixelFCN weights (spixel or joint checkpoint); 'all' uses the spixel stage's",
    )
    g.add_argument(
        "--from-scratch",
        action="store_true",
        help="joint stage: let a network without --seg-checkpoint / --spixel-checkpoint start from random "
        "weights (tests, benchmarks; the joint stage fine-tunes pretrained networks: --stage all pretrains "
        "them)",
    )

    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=POS, default=20, help="epochs per stage")
    g.add_argument(
        "--max-steps",
        type=POS,
        default=None,
        help="stop a stage after this many optimizer steps (smoke tests, demos)",
    )
    g.add_argument(
        "--optimizer",
        choices=("sgd", "adam"),
        default=None,
        help="default per stage: sgd (seg, joint), adam (spixel, as in SpixelFCN)",
    )
    g.add_argument("--seg-lr", type=NONNEG, default=0.007, help="seg stage: backbone learning rate")
    g.add_argument("--head-lr-mult", type=NONNEG, default=10.0, help="seg stage: ASPP/decoder lr multiplier")
    g.add_argument("--spixel-pretrain-lr", type=NONNEG, default=5e-5, help="spixel stage learning rate")
    g.add_argument(
        "--lr", type=NONNEG, default=1e-6, help="joint stage: DeepLabV3+ learning rate (paper 1e-6)"
    )
    g.add_argument(
        "--spixel-lr", type=NONNEG, default=1e-6, help="joint stage: SpixelFCN learning rate (paper 1e-6)"
    )
    g.add_argument(
        "--fusion-lr",
        type=NONNEG,
        default=1e-7,
        help="joint stage: transparent layers' learning rate (paper 1e-7)",
    )
    g.add_argument(
        "--momentum", type=float_range(0.0, 1.0, high_open=True), default=0.9, help="SGD momentum, in [0, 1)"
    )
    g.add_argument(
        "--weight-decay",
        type=NONNEG,
        default=None,
        help="applied by the optimizer (default 5e-4 seg/joint, 4e-4 spixel; spixel: biases exempt, as in "
        "SpixelFCN)",
    )
    g.add_argument(
        "--schedule",
        choices=("poly", "fixed"),
        default=None,
        help="lr schedule per iteration: poly (1 - t/T)^power or fixed (default poly for seg, fixed "
        "for spixel and joint as in the paper)",
    )
    g.add_argument("--poly-power", type=NONNEG, default=0.9, help="poly schedule power")
    g.add_argument(
        "--spixel-loss-weight", type=NONNEG, default=1.0, help="joint stage: weight of spixel_loss"
    )
    g.add_argument("--pos-weight", type=NONNEG, default=0.003, help="spixel_loss position weight m")
    g.add_argument(
        "--freeze-bn",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="joint stage: keep DeepLabV3+ BatchNorm statistics frozen (eval mode), as in the paper",
    )

    g = p.add_argument_group("runtime")
    g.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    g.add_argument("--amp", action="store_true", help=AMP_HELP)
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last (NHWC) memory format for both networks and their inputs, or for neither "
        "(default: where it wins, per network: "
        + ", ".join(
            f"{'both' if v is True else 'SpixelFCN only' if v else 'neither'} on {k}"
            for k, v in DEFAULT_CHANNELS_LAST.items()
        )
        + ")",
    )
    g.add_argument(
        "--recompute-fusion",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="joint stage: keep only S for the fusion stack's backward and recompute its activations (and "
        "the first uniformization) there, chunk by chunk (default on: 29 %% less saved activation memory at "
        "ResNet-18 / 128 px, 18 %% at ResNet-101 / 256 px, for a step 2-5 %% slower; see "
        "docs/benchmarks.rst)",
    )
    g.add_argument(
        "--recompute-loss",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="spixel and joint stages: recompute spixel_loss in backward instead of keeping its "
        "full-resolution activations (less memory, one more forward of the loss)",
    )
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="joint stage: torch.compile everything after the two networks (ids, uniformization, fusion); "
        "compiles on the first step",
    )
    g.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm under DDP (CUDA only)")
    g.add_argument("--seed", type=int_range(0, SEED_MAX), default=0, help="seed of every RNG")
    g.add_argument(
        "--threads",
        type=int_range(1, THREADS_MAX),
        default=None,
        help="torch CPU threads per process (default: torch's choice)",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        type=resume_arg,
        help="continue exactly from <output-dir>/<stage>/checkpoint.pt ('auto') or from a given "
        "checkpoint (not with --stage all, which resumes each stage from its folder); finished stages are "
        "skipped; options must match the checkpoint's (see "
        "--allow-option-changes), except that --epochs and --max-steps may grow",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an output folder that holds one (its checkpoint, log and evaluation are "
        "deleted); without it such a folder is refused",
    )
    g.add_argument(
        "--allow-option-changes",
        action="store_true",
        help="with --resume: accept changed optimization and data options (learning rates, schedule, losses, "
        "batch size, data, seed, ...) and record each change in the checkpoint; model options never change",
    )
    g.add_argument(
        "--eval",
        action="store_true",
        help="evaluate on --val-split after the seg and joint stages (the split is checked before training; "
        "with --resume, a finished stage without an evaluation of its checkpoint with this --val-split, "
        "--eval-crop and --sbd is evaluated)",
    )
    g.add_argument(
        "--eval-crop", type=CROP, default=None, help="evaluation centre crop (default: full images)"
    )
    g.add_argument(
        "--allow-val-overlap",
        action="store_true",
        help="train on images of the validation lists anyway (VOC's ImageSets/Segmentation/val.txt, the "
        "layout's val.txt and, with --eval, --val-split), e.g. a trainval model for the test server; "
        "without it such a training split is refused, and so is a joint stage from a --seg-checkpoint / "
        "--spixel-checkpoint trained on such images",
    )
    g.add_argument("--log-every", type=POS, default=10, help="CSV / TensorBoard row every N steps")
    g.add_argument("--tensorboard", action="store_true", help="also log to TensorBoard (if it imports)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def resolve_stage_options(stage: str, args: argparse.Namespace) -> argparse.Namespace:
    """A copy of ``args`` with the per-stage defaults (:data:`STAGE_DEFAULTS`) filled in, the path options
    (:data:`~examples.voc_joint.resume.PATH_OPTIONS`) made absolute and the model options resolved
    (:data:`CHECKPOINT_MODEL_OPTIONS`: those the joint stage's checkpoints fix are the checkpoints', the
    others left unset get their default).

    Raises:
        UsageError: a model option given contradicts the checkpoint of the joint stage (the message names the
            option, both values and the checkpoint).
        CheckpointError: an unreadable, corrupt or wrong-stage ``--seg-checkpoint`` / ``--spixel-checkpoint``.
    """
    return _resolve(stage, args)[0]


def _resolve(stage: str, args: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, list[str]]]:
    """:func:`resolve_stage_options`, and the options taken from each checkpoint
    (``{"--seg-checkpoint PATH": ["--backbone resnet18", ...]}``)."""
    out = argparse.Namespace(**vars(args))
    for key, value in STAGE_DEFAULTS[stage].items():
        if getattr(out, key) is None:
            setattr(out, key, value)
    for key in PATH_OPTIONS:  # recorded and compared on resume as absolute paths
        if getattr(out, key, None) is not None:
            setattr(out, key, absolute_path(getattr(out, key)))
    out.stage = stage
    configs: dict[str, tuple[Path, dict[str, Any]]] = {}
    if stage == "joint":
        networks = {o.checkpoint: o.network for o in CHECKPOINT_MODEL_OPTIONS.values()}
        for option, part in networks.items():
            path = getattr(out, option, None)
            if path is not None and Path(path).is_file():  # 'all' checks before its checkpoints exist
                configs[option] = (
                    Path(path),
                    _network_config(Path(path), part, flag(option)),
                )
    conflicts: list[str] = []
    taken: dict[str, list[str]] = {}
    for name, (option, _, key, default) in CHECKPOINT_MODEL_OPTIONS.items():
        given = getattr(out, name, None)
        if option not in configs:
            setattr(out, name, default if given is None else given)
            continue
        path, config = configs[option]
        value = config.get(key, default)  # SpixelFCN records its centre bias when it is not 0
        spelling = flag(name)
        if given is None:
            setattr(out, name, value)
            taken.setdefault(f"{flag(option)} {path}", []).append(f"{spelling} {value}")
        elif given != value:
            conflicts.append(f"{spelling} {given!r} (given) vs {value!r} ({flag(option)} {path})")
    if conflicts:
        raise UsageError(
            "model options contradict the pretrained checkpoints: "
            + ", ".join(conflicts)
            + "; the joint stage fine-tunes the checkpoints' networks: leave these options out (they are "
            "then taken from the checkpoints) or give the checkpoints' values"
        )
    if "seg_checkpoint" in configs and getattr(out, "fusion", False):
        error = _fusion_width_error(out.fusion_hidden, out.num_classes)
        if error:
            raise UsageError(
                f"{error} (--num-classes {out.num_classes} of --seg-checkpoint {out.seg_checkpoint})"
            )
    return out, taken


#: :func:`_source_facts` of the last :data:`_SOURCE_CACHE_SIZE` file versions read (a stage reads two files).
_SOURCE_CACHE: dict[tuple[str, int, int, str], tuple[dict[str, Any], str]] = {}
_SOURCE_CACHE_SIZE = 8
#: The joint stage's source checkpoints: option, network and the stages whose checkpoints hold that network.
_SOURCES = {
    "seg_checkpoint": ("deeplab", ("seg", "joint")),
    "spixel_checkpoint": ("spixel", ("spixel", "joint")),
}


def _source_facts(path: Path, part: str, option: str) -> tuple[dict[str, Any], str]:
    """The model config of the ``part`` network (``"deeplab"`` / ``"spixel"``) of a seg, spixel or joint
    checkpoint and the checkpoint's SHA-256 (:func:`~examples.voc_joint.checkpoint.payload_sha256`, the hash
    it records, verified on reading and not computed again: ``load_checkpoint_with_sha256``); read once per
    file version (of the last few)."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, part)
    if key not in _SOURCE_CACHE:
        stages = next(s for p, s in _SOURCES.values() if p == part)
        try:
            ckpt, sha = load_checkpoint_with_sha256(path, expect_stage=stages)  # hashed once, verified
        except CheckpointError as exc:
            raise CheckpointError(f"{option}: {exc}") from exc
        _SOURCE_CACHE[key] = (dict(ckpt["config"]["model"][part]), sha)
        while len(_SOURCE_CACHE) > _SOURCE_CACHE_SIZE:  # the oldest first: no growth over rounds in a process
            del _SOURCE_CACHE[next(iter(_SOURCE_CACHE))]
    config, sha = _SOURCE_CACHE[key]
    return dict(config), sha


def _network_config(path: Path, part: str, option: str) -> dict[str, Any]:
    """The model config of the ``part`` network of a seg, spixel or joint checkpoint."""
    return _source_facts(path, part, option)[0]


def _sources(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """What the joint stage starts from: ``{"seg_checkpoint": {"path": ..., "sha256": ...}, ...}`` (recorded
    in its checkpoints' ``config["sources"]``; empty for networks started from scratch)."""
    out = {}
    for option, (part, _) in _SOURCES.items():
        path = getattr(args, option, None)
        if path is not None:
            try:
                sha = _source_facts(Path(path), part, flag(option))[1]
            except OSError as exc:  # gone since it was checked: an error every process raises (see _agree)
                raise CheckpointError(f"{flag(option)}: cannot read {path}: {exc}") from exc
            out[option] = {"path": str(path), "sha256": sha}
    return out


def _check_sources(ckpt: dict[str, Any], args: argparse.Namespace, source: Path) -> None:
    """Refuse to resume or skip a joint run whose seg / spixel source checkpoint changed since it started
    (its recorded SHA-256 differs, or the file is gone): its weights came from a network that no longer
    exists (e.g. ``--stage all --resume`` after a new seg stage). Checkpoints without a record pass."""
    recorded = ckpt["config"].get("sources") or {}
    for option, (part, _) in _SOURCES.items():
        path, before = getattr(args, option, None), recorded.get(option)
        if path is None or not before:
            continue
        spelling = flag(option)
        if Path(path).resolve() != Path(before["path"]).resolve():
            continue  # another file given: a changed option, refused by the resume rules with both values
        was = (
            f"the joint run in {source} was fine-tuned from {spelling} {before['path']} "
            f"(SHA-256 {before['sha256'][:16]})"
        )
        advice = (
            f"resuming or skipping it would keep a joint model trained from a {part} network that no longer "
            f"exists: start the joint stage anew (--overwrite) or restore that {spelling}"
        )
        if not Path(path).is_file():
            raise UsageError(f"joint stage: {was}, which no longer exists; {advice}")
        now = _source_facts(Path(path), part, spelling)[1]
        if now != before["sha256"]:
            raise UsageError(
                f"joint stage: {was}, which has changed since (SHA-256 now {now[:16]}: other weights); "
                + advice
            )


# ------------------------------------------------------------------------------------------------------ data
def data_root(args: argparse.Namespace, info: DistInfo) -> Path:
    """``--data-root``, or the synthetic set in the cache: generated by local rank 0 while the others wait."""
    if args.data_root is not None:
        return Path(args.data_root)
    root = data.DEFAULT_CACHE / "synthetic_voc"
    if info.local_rank == 0:
        data.ensure_synthetic_voc(root)
    info.barrier()
    if info.local_rank != 0:
        data.ensure_synthetic_voc(root)  # a no-op check (another node's cache may differ)
    return root


def _train_dataset(args: argparse.Namespace, root: Path) -> VOCSegmentation:
    """The training split of ``root`` (``VOCSegmentation`` with the training transform)."""
    return VOCSegmentation(
        root,
        args.train_split,
        sbd=args.sbd,
        transform=data.train_transform(args.crop_size, scale=(args.scale_min, args.scale_max)),
        max_pixels=args.max_image_pixels,
        num_classes=args.num_classes,
    )


def _check_batches(size: int, args: argparse.Namespace, info: DistInfo, root: Path) -> None:
    if size < args.batch_size * info.world_size:
        raise UsageError(
            f"training split {args.train_split!r} of {root} has {counted(size, 'image')}, "
            "fewer than one batch "
            f"(--batch-size {args.batch_size} x {counted(info.world_size, 'process', 'processes')})"
        )


def check_data(args: argparse.Namespace, info: DistInfo, *, val: bool, own_command: bool = True) -> Path:
    """Check the data a run reads before it changes anything: the training split (the data folder, its list
    file and entries, that every listed image and mask exists, that it holds no validation image) and, when
    ``val``, ``--val-split``; returns the data root. Whether the split holds one global batch is checked
    here for a new run (before any output folder exists) and, with the run's checkpoint, by
    :func:`build_train_loader`.

    Raises:
        FileNotFoundError, DataError: as :func:`check_val_data`; listed files that do not exist (all named);
            with ``--check-files`` (the default), every listed file whose header the reader refuses (all
            named: :func:`~examples.voc_joint.headers.check_headers`, run by rank 0 only).
        UsageError: the training split holds validation images (:func:`val_overlap_error`) and
            ``--allow-val-overlap`` is not given, or (a new run) fewer images than one global batch.

    ``own_command=False``: the checks of another command (``demo.py``, ``ablation.py``), which has no
    ``--allow-val-overlap`` to advise.
    """
    root = data_root(args, info)
    ds = _train_dataset(args, root)
    if args.resume is None:  # a new run: its batch size is this one (a resumed run's: with its checkpoint)
        _check_batches(len(ds), args, info, root)
    if not args.allow_val_overlap:
        error = val_overlap_error(ds.names, ds.root, ds.list_file, args, own_command=own_command)
        error = error or source_overlap_error(ds.root, args, own_command=own_command)
        if error:
            raise UsageError(error)
    val_ds = check_val_data(args, root) if val else None
    missing = ds.missing_files() + (val_ds.missing_files() if val_ds is not None else [])
    if missing:
        # other commands (demo.py, ablation.py) have no --val-split option: their validation list by name
        val_list = (
            f"the --val-split {args.val_split!r} list" if own_command else f"the {args.val_split!r} list"
        )
        verb = "does" if len(missing) == 1 else "do"
        raise FileNotFoundError(
            f"{counted(len(missing), 'file')} listed in {ds.list_file}"
            + (f" or in {val_list}" if val else "")
            + f" {verb} not exist (an incomplete extraction, or a list of another data set?):"
            + shown_problems(missing, describe=lambda p: f"{p}{missing_file_hint(p)}")
        )
    if args.check_files:
        _check_headers([ds] if val_ds is None else [ds, val_ds], args, info)
    return root


def _check_headers(datasets: Sequence[VOCSegmentation], args: argparse.Namespace, info: DistInfo) -> None:
    """The header pass (:func:`~examples.voc_joint.headers.check_headers`) on rank 0 only (the other
    processes wait, then raise its error too): one process reads the headers, not one per GPU."""
    error = None
    if info.main:
        try:
            check_headers(datasets, progress=not args.no_progress)
        except DataError as exc:
            error = str(exc)
    error = info.from_main(error)
    if error is not None:
        raise DataError(error)


def val_overlap_error(
    names: Sequence[str],
    voc_root: Path,
    list_file: Path,
    args: argparse.Namespace,
    *,
    own_command: bool = True,
) -> str | None:
    """Why the training split ``names`` (read from ``list_file``) must not be trained on: it holds images of
    a validation list (None: it holds none).

    The validation lists are VOC's ``ImageSets/Segmentation/val.txt``, the ``val.txt`` of the layout read
    (``ImageSets/SegmentationAug`` with ``--sbd``) and, with ``--eval``, ``--val-split``, where they exist.
    SBD's train and val sets hold many VOC 2012 val images: the standard 10582-image trainaug list
    leaves them out, a union of SBD train + val + VOC train made by hand does not. ``own_command=False``: the
    message of a command without ``--allow-val-overlap`` (``demo.py``, ``ablation.py``) points to train.py's.
    """
    found, lists = _val_images(names, voc_root, args)
    if not found:
        return None
    return (
        f"training split {args.train_split!r} ({list_file}) holds {counted(len(found), 'image')} "
        "of the validation lists "
        f"{[str(f) for f in lists]}: {data.shown_names(found)}. Every validation score of the run would "
        "count images it was trained on (SBD's train and val sets contain VOC 2012 val images: the standard "
        "trainaug list of 10582 images leaves them out). Remove them from the training list, or "
        + _override_advice(own_command)
    )


def source_overlap_error(voc_root: Path, args: argparse.Namespace, *, own_command: bool = True) -> str | None:
    """Why the joint stage must not start from ``--seg-checkpoint`` / ``--spixel-checkpoint``: the training
    lists they record (theirs and those of the checkpoints they were fine-tuned from) hold images of the
    validation lists of :func:`val_overlap_error` (None: they hold none, or the lists cannot be read)."""
    from examples.voc_joint.evaluate import checkpoint_training_names

    for option in _SOURCES:
        path = getattr(args, option, None)
        trained = None if path is None else checkpoint_training_names(path)
        if not trained:
            continue
        found, lists = _val_images(sorted(trained), voc_root, args)
        if found:
            return (
                f"{flag(option)} {path} was trained on {counted(len(found), 'image')} "
                "of the validation lists "
                f"{[str(f) for f in lists]}: {data.shown_names(found)} (its recorded training split, e.g. a "
                "trainval run with --allow-val-overlap): every validation score of the joint model would "
                "count images its network was trained on. Start from a network trained without them, or "
                + _override_advice(own_command)
            )
    return None


def _val_images(
    names: Sequence[str], voc_root: Path, args: argparse.Namespace
) -> tuple[list[str], list[Path]]:
    """The names of ``names`` that a validation list holds (in list order) and the validation lists read."""
    layout = data._list_dir(voc_root, args.sbd)
    candidates = [data._list_dir(voc_root, False) / "val.txt", layout / "val.txt"]
    if args.eval:
        candidates.append(layout / f"{args.val_split}.txt")
    lists = [f for f in dict.fromkeys(candidates) if f.is_file()]
    held = set(names)
    found: dict[str, None] = {}
    for f in lists:
        for name in data.read_list(f):
            if name in held:
                found[name] = None
    return list(found), lists


def _override_advice(own_command: bool) -> str:
    if own_command:
        return (
            "pass --allow-val-overlap to train on them on purpose (e.g. a trainval model for the test server)"
        )
    return "train on them on purpose with train.py --allow-val-overlap (not an option of this command)"


def build_train_loader(
    args: argparse.Namespace, info: DistInfo, root: Path
) -> tuple[torch.utils.data.DataLoader[Any], EpochSampler]:
    """Training DataLoader over an :class:`~examples.voc_joint.sampling.EpochSampler` (resumable order).

    The sample order of an epoch and each sample's augmentation are functions of ``(--seed, epoch, index)``.
    """
    ds = _train_dataset(args, root)
    sampler = EpochSampler(
        len(ds), batch_size=args.batch_size, seed=args.seed, num_replicas=info.world_size, rank=info.rank
    )
    _check_batches(len(ds), args, info, root)
    loader = torch.utils.data.DataLoader(
        SeededDataset(ds),
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        generator=torch.Generator().manual_seed(derive_seed(args.seed)),
        pin_memory=info.device.type == "cuda",
        worker_init_fn=worker_init_fn(args.workers),
        persistent_workers=False,
    )
    return loader, sampler


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


def runtime_options(args: argparse.Namespace, device: torch.device | None = None) -> dict[str, Any]:
    """The model's runtime options (``--channels-last``, ``--recompute-fusion``, ``--compile``).

    ``--channels-last`` left unset resolves to :data:`DEFAULT_CHANNELS_LAST` of ``device`` (``True``,
    ``"spixelfcn"`` or ``False``; ``False`` when no device is given); :func:`build_train_state` resolves it
    before building.
    """
    channels_last: ChannelsLast | None = getattr(args, "channels_last", None)
    if channels_last is None:
        channels_last = DEFAULT_CHANNELS_LAST.get(device.type, False) if device is not None else False
    return {
        "channels_last": channels_last,
        "recompute_fusion": bool(getattr(args, "recompute_fusion", True)),
        "compile_refine": bool(getattr(args, "compile", False)),
    }


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
    return {
        "format": FORMAT,
        "version": VERSION,
        "stage": state.stage,
        "config": {
            "model": model_config(state.model),
            "args": options,
            "changes": state.option_changes,
            **({"sources": state.sources} if state.stage == "joint" else {}),
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
        "channels_last": runtime_options(args, _model_device(state.model))["channels_last"],
        "torch_version": str(torch.__version__),  # kernels may change between releases (torch_version_note)
    }


def thread_count_note(stage: str, ckpt: dict[str, Any], device: torch.device) -> str | None:
    """The note a CPU resume prints when the checkpoint's run used another torch thread count (``None``: the
    same count, a CUDA run, or a checkpoint written before the count was recorded).

    PyTorch's CPU convolutions and sums round differently with another number of threads, so the continuation
    is not bit-identical to an uninterrupted run; the default of ``--threads`` follows the machine's cores.

    Example:
        >>> n = torch.get_num_threads()
        >>> thread_count_note("seg", {"cpu_threads": n}, torch.device("cpu")) is None
        True
        >>> thread_count_note("seg", {"cpu_threads": n + 1}, torch.device("cpu")).endswith(
        ...     f"pass --threads {n + 1} to continue it bit for bit"
        ... )
        True
    """
    recorded, current = ckpt.get("cpu_threads"), torch.get_num_threads()
    if device.type != "cpu" or recorded is None or int(recorded) == current:
        return None
    return (
        f"[{stage}] the run used {int(recorded)} CPU threads, this process {current}: PyTorch rounds "
        "differently with another thread count, so the result will not be bit-identical to an uninterrupted "
        f"run; pass --threads {int(recorded)} to continue it bit for bit"
    )


def _model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


#: The networks of each stage whose memory format shapes its results.
_STAGE_NETWORKS: dict[str, tuple[Literal["deeplab", "spixelfcn"], ...]] = {
    "seg": ("deeplab",),
    "spixel": ("spixelfcn",),
    "joint": ("deeplab", "spixelfcn"),
}


def _memory_format_advice(channels_last: ChannelsLast, stage: str) -> str:
    """What to pass to give the stage's networks the memory formats of ``channels_last``."""
    formats = {network_channels_last(channels_last, n) for n in _STAGE_NETWORKS[stage]}
    if formats == {True}:
        return "pass --channels-last"
    if formats == {False}:
        return "pass --no-channels-last"
    return "leave out --channels-last and --no-channels-last on the CPU"  # "spixelfcn": the CPU default


def numerics_note(
    stage: str, ckpt: dict[str, Any], args: argparse.Namespace, device: torch.device
) -> str | None:
    """The note a resume prints when a runtime option that changes the arithmetic differs from the run's
    (``None``: nothing known to differ, or a checkpoint written before the memory format was recorded).

    Two runtime options may differ on ``--resume`` but change the bits of the continuation (measured on the
    CPU, 16 steps, ResNet-18, 32 px crops): the memory format of the stage's networks (``--channels-last``;
    its convolutions take other kernels, which round differently: seg weights up to 0.019 apart) and
    ``--compile`` (joint stage; the compiled uniformization and fusion stack round differently: momentum
    buffers up to 4e-7 apart). ``--recompute-fusion`` and ``--recompute-loss`` give the same bits and are not
    named.

    Example:
        >>> args = argparse.Namespace(channels_last=None, compile=False)
        >>> ckpt = {"channels_last": "spixelfcn", "config": {"args": {"compile": False}}}
        >>> numerics_note("seg", ckpt, args, torch.device("cpu")) is None
        True
        >>> args.channels_last = True  # DeepLabV3+ in channels_last now: another arithmetic
        >>> numerics_note("seg", ckpt, args, torch.device("cpu")).endswith(
        ...     "pass --no-channels-last to continue it bit for bit"
        ... )
        True
        >>> numerics_note("spixel", ckpt, args, torch.device("cpu")) is None  # SpixelFCN's format is the same
        True
    """
    changed: list[str] = []
    advice: list[str] = []
    recorded = ckpt.get("channels_last")
    if recorded is not None:
        current = runtime_options(args, device)["channels_last"]
        if any(
            network_channels_last(recorded, n) != network_channels_last(current, n)
            for n in _STAGE_NETWORKS[stage]
        ):
            changed.append(f"the memory format (channels_last {recorded!r} then, {current!r} now)")
            advice.append(_memory_format_advice(recorded, stage))
    compiled = ckpt.get("config", {}).get("args", {}).get("compile")
    if stage == "joint" and compiled is not None and bool(compiled) != bool(getattr(args, "compile", False)):
        changed.append(f"--compile ({'on' if compiled else 'off'} then, {'off' if compiled else 'on'} now)")
        advice.append("pass --compile" if compiled else "pass --no-compile")
    if not changed:
        return None
    return (
        f"[{stage}] this resume changes {' and '.join(changed)}: the arithmetic differs, so the result will "
        f"not be bit-identical to an uninterrupted run; {' and '.join(advice)} to continue it bit for bit"
    )


def torch_version_note(stage: str, ckpt: dict[str, Any]) -> str | None:
    """The note a resume prints when the checkpoint's run used another torch version (``None``: the same
    version, or a checkpoint written before the version was recorded).

    PyTorch does not promise the same bits across releases (its kernels and the libraries it bundles change),
    so the continuation may not be bit-identical to an uninterrupted run. Measured on a CPU: torch 2.11.0 and
    2.14.1 gave the same bits for the three stages, resumed across both ways; another machine, device or
    release may not.

    Example:
        >>> v = str(torch.__version__)
        >>> torch_version_note("seg", {"torch_version": v}) is None
        True
        >>> note = torch_version_note("seg", {"torch_version": "2.0.0"})
        >>> note.endswith("resume with torch 2.0.0 to be sure")
        True
    """
    recorded, current = ckpt.get("torch_version"), str(torch.__version__)
    if recorded is None or str(recorded) == current:
        return None
    return (
        f"[{stage}] the run was trained with torch {recorded}, this process runs torch {current}: PyTorch "
        "does not promise the same bits across releases, so the result may not be bit-identical to an "
        f"uninterrupted run; resume with torch {recorded} to be sure"
    )


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
            _check_sources(ckpt, args, source)
        recorded = {"world_size": ckpt.get("world_size", 1), **ckpt["config"].get("args", {})}
        current = {**vars(args), "world_size": world_size}
        new = option_changes(
            stage, recorded, current, allow=args.allow_option_changes, source=source, step=int(ckpt["step"])
        )
        changes = [*ckpt["config"].get("changes", []), *new]
    return ckpt, source, changes


#: Set on the copy of rank 0's error that :func:`_agree` raises on the other processes (main prints none).
_RANK_0_PRINTS = "printed_by_rank_0"


def _agree(info: DistInfo, work: Callable[[], Any]) -> Any:
    """Run ``work()`` on rank 0; every process gets its (picklable) result or raises its error (same type)."""
    result, error = None, None
    if info.main:
        try:
            result = work()
        except (UsageError, CheckpointError) as exc:
            error = (type(exc).__name__, str(exc))
    result, error = info.from_main((result, error))
    if error is not None:
        refusal = (CheckpointError if error[0] == "CheckpointError" else UsageError)(error[1])
        setattr(refusal, _RANK_0_PRINTS, not info.main)  # every process has it: main prints it on rank 0 only
        raise refusal
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
    try:
        dtypes = other_dtypes(state.model.state_dict(), ckpt["model"], "model")
        if dtypes:  # load_state_dict converts them: an integer or complex file became other weights
            raise ValueError(f"other dtypes {dtypes[:5]}")
        state.model.load_state_dict(ckpt["model"])
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


def cuda_rng_note(stage: str, state: dict[str, Any], device: torch.device) -> str | None:
    """The note a CUDA resume prints when the RNG states of the checkpoint's GPUs cannot be restored
    (``None``: they can, or the run is not on CUDA).

    :func:`~examples.voc_joint.checkpoint.set_rng_state` restores the CUDA generators only when this process
    sees as many GPUs as the one that wrote ``state`` (one state per visible GPU,
    :func:`~examples.voc_joint.checkpoint.cuda_states_restorable`); otherwise the GPU's random draws
    (dropout) continue from other states, and the continuation is not bit-identical.

    Example:
        >>> cuda_rng_note("seg", {"cuda": []}, torch.device("cpu")) is None  # CPU draws only
        True
    """
    if device.type != "cuda" or cuda_states_restorable(state):
        return None
    saved, visible = len(state.get("cuda") or []), torch.cuda.device_count()
    held = "no CUDA RNG state (a run without CUDA)"
    if saved:
        held = f"the CUDA RNG states of {counted(saved, 'GPU')}"
    return (
        f"[{stage}] the checkpoint holds {held}, this process sees {visible}: they are not restored, so the "
        "GPU's random draws (dropout) differ and the result will not be bit-identical to an uninterrupted "
        "run; make the same GPUs visible (CUDA_VISIBLE_DEVICES) to continue it bit for bit"
    )


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
        args: parsed options (see :func:`build_parser`); per-stage defaults are filled in here.
        info: distributed facts (from :func:`~examples.voc_joint.distributed.init_distributed` when ``None``).
        guard: the signal guard of the whole run (a new one around this stage when ``None``).
        locked: the caller already holds the lock of ``<output-dir>/<stage>`` (else it is taken here).
        own_command: ``train.py`` runs the stage: a stop prints where its checkpoint is and that ``--resume``
            continues it (on stderr). ``False`` for another command (``demo.py``, ``ablation.py``), whose
            own stop line says what to do: it has no ``--resume``.

    Raises:
        Interrupted: SIGINT / SIGTERM / SIGHUP; the checkpoint of the last completed step was written first.
        NonFiniteError: non-finite loss, gradients or weights; the last good checkpoint stays.
        UsageError: the command cannot run as given (folder in use or holding a run, changed options, ...).
        CheckpointError: an unreadable, corrupt or wrong-stage checkpoint.
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    info = info or init_distributed(args.device)
    args, taken = _resolve(stage, args)
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
    ckpt = load_checkpoint(source, expect_stage=stage) if source is not None else None
    if args.resume == "auto" and source is None and info.main:
        print(f"[{stage}] --resume: no checkpoint in {folder}; starting a new run", flush=True)
    evaluates = bool(args.eval) and stage in EVAL_STAGES
    if ckpt is not None and source is not None and _finished(ckpt, args):
        own = Path(source).resolve() == ckpt_path.resolve()
        step = int(ckpt["step"])
        if args.overwrite:  # --overwrite --resume PATH of another folder: PATH is the stage's result
            _agree(info, lambda: _clear(folder, ckpt_path, overwrite=True))
        pending = (
            evaluates and own and not _agree(info, lambda: engine.evaluation_current(ckpt_path, step, args))
        )
        if info.main:
            print(
                f"[{stage}] {source} already reached {_where(ckpt)}; "
                + (
                    "evaluating it (no eval.json of this step with this --val-split, --eval-crop and --sbd "
                    "yet)"
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
    new_changes = changes[len(ckpt["config"].get("changes", [])) :] if ckpt is not None else []
    state, use_amp = build_train_state(
        stage, args, info, ckpt, sampler.steps_per_epoch, new_changes, source=source
    )
    state.option_changes = list(changes)
    if stage == "joint":  # what it fine-tunes (a resume keeps the record it was checked against)
        recorded = None if ckpt is None else dict(ckpt["config"].get("sources") or {})
        sources = _agree(info, lambda: _sources(args) if recorded is None else recorded)
        if info.main:
            state.sources = sources
    _agree(info, lambda: _clear(folder, ckpt_path, overwrite=bool(args.overwrite)))
    resume_step = None if ckpt is None else state.step
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
        ):
            if note is not None:
                print(note, flush=True)
    del ckpt
    # --resume without a checkpoint continues a run lost before its first checkpoint (a new run is refused
    # there) from step 0: its log.csv rows and its TensorBoard events go alike
    logged_to = 0 if args.resume is not None and resume_step is None else resume_step
    logger = engine.CsvLogger(folder, info.main, args.tensorboard, logged_to)
    try:
        _train(
            state, loader, sampler, args, info, guard, logger, ckpt_path, use_amp, resume_step, own_command
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


def check_val_data(args: argparse.Namespace, root: Path) -> VOCSegmentation:
    """Check that ``--val-split`` of ``root`` exists and lists images (before training, for ``--eval``);
    returns its ``VOCSegmentation``.

    Raises:
        FileNotFoundError: missing data folder, mask folder or list file (the message names it).
        DataError: an empty list file, one that is not UTF-8 text or names an image more than once, or an
            entry that leaves the data folders.
    """
    return VOCSegmentation(
        root, args.val_split, sbd=args.sbd, max_pixels=args.max_image_pixels, num_classes=args.num_classes
    )


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
) -> None:
    """The epoch loop: train, checkpoint after every epoch / at the step cap / on a signal, then stop (with
    ``own_command``, a stop says where the checkpoint is)."""
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
    reason = "epoch"
    # the signal every process stops on: the largest number any of them recorded (0: none), so that every
    # process exits with the same status (128 + it), not Ctrl-C's where only another process was signalled
    agreed = _agreed_signal(guard, info)
    if agreed:
        reason = "interrupt"  # a signal during the set-up: nothing new to save
    while state.epoch < args.epochs and reason not in ("max_steps", "interrupt"):
        begin_epoch(sampler, loader.generator, args.seed, state.epoch, state.samples_in_epoch)
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
                with guard.critical():
                    logger.sync()  # the log rows up to this checkpoint, durable before it is
                    save_checkpoint(ckpt_path, checkpoint)
            saved = position
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
                    f"the stage finished: its checkpoint of step {state.step} in {ckpt_path} is complete "
                    "(--resume skips it and goes on with what follows)"
                )
            elif saved is not None:
                where = f"checkpoint of step {state.step} in {ckpt_path} (continue with --resume)"
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
    """The largest signal number recorded by any process (0: none), the same on every process."""
    recorded = torch.tensor([float(guard.requested or 0)], device=info.device)
    return int(info.any(recorded).item())


# ------------------------------------------------------------------------------------------------------ main
def check_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None = None
) -> None:
    """Checks that involve several options (each option alone was checked by its ``type=``).

    ``argv``: the command line ``args`` was parsed from, to tell which options were given (also with their
    default value); without it, an option counts as given when its value is not the default.
    """
    is_given = option_given(parser, args, argv)
    if args.scale_min > args.scale_max:
        parser.error(f"--scale-min {args.scale_min} is larger than --scale-max {args.scale_max}")
    classes = args.num_classes
    if classes is None and (args.stage == "all" or args.seg_checkpoint is None):
        classes = CHECKPOINT_MODEL_OPTIONS["num_classes"].default
    hidden = args.fusion_hidden
    if args.fusion and len(hidden) > MAX_FUSION_DEPTH:
        parser.error(
            f"--fusion-hidden takes at most {MAX_FUSION_DEPTH} widths (hidden layers), got {len(hidden)}"
        )
    wide = [(a, b) for a, b in itertools.pairwise(hidden) if a * b > FUSION_LAYER_MAX]
    if args.fusion and wide:
        (a, b), given = wide[0], " ".join(map(str, hidden))
        parser.error(
            f"--fusion-hidden {given}: the layer between widths {a} and {b} has {a * b} weights, at most "
            f"{FUSION_LAYER_MAX} (8192 x 8192 takes about 70 s and 4 GB to initialize)"
        )
    if args.fusion and args.stage in ("joint", "all") and classes is not None:  # else: the checkpoint's
        error = _fusion_width_error(hidden, classes)
        if error:
            parser.error(error)
    if not args.fusion and is_given("fusion_init"):
        parser.error(
            f"--no-fusion with --fusion-init {args.fusion_init}: without the fusion stack there is nothing "
            "to initialize; drop one of the two"
        )
    # were ignored without a word: the stack's shape, its learning rate, its recomputation
    for name, what in (
        ("fusion_hidden", "shape"),
        ("fusion_activation", "shape"),
        ("fusion_lr", "train"),
        ("recompute_fusion", "recompute"),
    ):
        if not args.fusion and is_given(name):
            parser.error(
                f"--no-fusion with {spelled(name, getattr(args, name))}: without the fusion stack there is "
                f"nothing to {what}; drop one of the two"
            )
    if args.allow_option_changes and args.resume is None:
        parser.error("--allow-option-changes only applies with --resume")
    if args.stage == "all" and args.resume not in (None, "auto"):
        parser.error(
            f"--stage all --resume {args.resume}: 'all' resumes each stage from its own folder "
            "(<output-dir>/<stage>/checkpoint.pt): use --resume (or --resume auto); to continue one stage "
            "from a given checkpoint, run that stage alone (--stage seg|spixel|joint --resume PATH)"
        )
    if args.overwrite and args.resume == "auto":
        parser.error("--overwrite with --resume (auto) contradicts itself: continue the run or replace it")
    missing = [o for o in ("seg_checkpoint", "spixel_checkpoint") if getattr(args, o) is None]
    if args.stage == "joint" and missing and not args.from_scratch:
        parser.error(
            "--stage joint fine-tunes pretrained networks: give "
            + " and ".join(flag(o) for o in missing)
            + " (the checkpoints of the seg and spixel stages), or use --stage all to pretrain both and then "
            "join them (--from-scratch starts the joint stage from random networks instead)"
        )
    if args.stage == "joint" and args.seg_checkpoint is not None and args.backbone_weights is not None:
        parser.error(
            "--backbone-weights with --seg-checkpoint: the joint stage takes DeepLabV3+, backbone included, "
            "from the checkpoint, so the backbone weights would be ignored; drop one of the two"
        )
    if args.from_scratch and args.stage != "joint":
        parser.error(f"--from-scratch only applies to --stage joint (--stage {args.stage} pretrains itself)")
    if args.from_scratch and not missing:  # was ignored without a word: both networks are the checkpoints'
        parser.error(
            "--from-scratch with --seg-checkpoint and --spixel-checkpoint: both networks start from their "
            "checkpoints, none from random weights; drop --from-scratch, or the checkpoint of the network "
            "to start from scratch"
        )
    for name, stages in STAGE_ONLY_OPTIONS.items():
        value = getattr(args, name)
        if args.stage == "all" or args.stage in stages or not is_given(name):
            continue
        used = " and ".join(stages)
        advice = "drop it"
        if name == "lr" or name.endswith(("_lr", "_lr_mult")):
            advice = f"the learning rates of --stage {args.stage} are " + ", ".join(
                STAGE_LEARNING_RATES[args.stage]
            )
        elif name.endswith("_checkpoint"):
            advice = "a stage continues from its own checkpoint with --resume PATH"
        parser.error(
            f"{spelled(name, value)} does not apply to --stage {args.stage} (it is an option of the {used} "
            f"stage{'s' if len(stages) > 1 else ''}): {advice}"
        )
    for name in ("eval_crop", "val_split"):
        if not args.eval and is_given(name):
            parser.error(f"{spelled(name, getattr(args, name))} only applies with --eval")
    run = STAGES if args.stage == "all" else (args.stage,)
    for name, setting, used_with in (("momentum", "optimizer", "sgd"), ("poly_power", "schedule", "poly")):
        resolved = {s: getattr(args, setting) or STAGE_DEFAULTS[s][setting] for s in run}
        if is_given(name) and used_with not in resolved.values():
            uses = ", ".join(f"{s}: {v}" for s, v in resolved.items())
            parser.error(
                f"{spelled(name, getattr(args, name))} applies to --{setting} {used_with}, which no stage "
                f"of this run uses ({uses}): drop it, or give --{setting} {used_with}"
            )
    if args.stage == "joint" and not args.spixel_loss_weight:  # the joint stage computes no spixel_loss
        for name in ("pos_weight", "recompute_loss"):
            if is_given(name):
                parser.error(
                    f"{spelled(name, getattr(args, name))} applies to spixel_loss, which --stage joint with "
                    f"--spixel-loss-weight {args.spixel_loss_weight:g} does not compute: drop it, or give a "
                    "--spixel-loss-weight above 0"
                )
    error = worker_tmpdir_error(args.workers, "--workers")
    if error:
        parser.error(error)
    for stage in run:  # <output-dir>/<stage>/: a file, below a file, no write permission
        check_output_dir(parser, Path(args.output_dir) / stage, given=is_given("output_dir"))
    if args.backbone_weights is not None:  # before anything is locked or deleted
        error = backbone_weights_error(
            Path(args.backbone_weights),
            args.backbone or CHECKPOINT_MODEL_OPTIONS["backbone"].default,
            args.output_stride or CHECKPOINT_MODEL_OPTIONS["output_stride"].default,
        )
        if error:
            parser.error(f"--backbone-weights: {error}")


def backbone_weights_error(path: Path, backbone: str, output_stride: int) -> str | None:
    """Why the ``--backbone-weights`` file ``path`` cannot initialize the ResNet ``backbone`` (None: it can).

    The file is loaded as the model will load it, by
    :func:`~examples.voc_joint.models.deeplabv3plus.load_backbone_weights`, into the backbone built on the
    meta device (no memory, no computation): a damaged or pickled file, missing or unexpected keys and wrong
    shapes (weights of another ResNet) are found before the run starts.
    """
    import warnings

    from examples.voc_joint.models.deeplabv3plus import build_resnet_backbone, load_backbone_weights

    with torch.device("meta"):
        net, _, _ = build_resnet_backbone(backbone, output_stride)
    try:
        with warnings.catch_warnings():
            # torch's "copying from a non-meta parameter ... to a meta parameter ..., which is a no-op" is the
            # point here; any other warning of the load is shown
            warnings.filterwarnings(
                "ignore", r".* to a meta parameter in the current model, which is a no-op"
            )
            load_backbone_weights(net, path)
    except ValueError as exc:
        hint = f" (--backbone {backbone}: weights of another ResNet?)" if "do not match" in str(exc) else ""
        return f"{exc}{hint}"
    return None


def _fusion_width_error(hidden: Sequence[int], classes: int) -> str | None:
    """The error of ``--fusion-hidden`` widths below twice the number of classes, or of a stack of more than
    ``FUSION_WEIGHTS_MAX`` weights for them (None: they are fine)."""
    small = [h for h in hidden if h < 2 * classes]
    if small:
        return (
            f"--fusion-hidden {small} below 2 x --num-classes = {2 * classes}: every hidden width of a "
            "transparent stack must be at least its input width, here the 2 x --num-classes channels of "
            "[S, U(S)]"
        )
    too_big = fusion_weights_problem(list(hidden), classes)
    if too_big:
        return f"--fusion-hidden {' '.join(map(str, hidden))} {too_big}"
    return None


def _stage_paths(
    stage: str, args: argparse.Namespace, *, before_clearing: bool = False
) -> argparse.Namespace:
    """The options of one stage of ``args.stage`` before :func:`resolve_stage_options` (``all``: the joint
    stage starts from the two others' checkpoints in the output folder). ``before_clearing``: the checks that
    run before ``--overwrite`` deletes the old run, whose checkpoints there are not the sources (ignored then,
    as in a fresh folder)."""
    out = argparse.Namespace(**vars(args))
    if args.stage == "all" and stage == "joint":
        old_run = before_clearing and args.overwrite
        for option, part in (("seg_checkpoint", "seg"), ("spixel_checkpoint", "spixel")):
            default = None if old_run else Path(args.output_dir) / part / "checkpoint.pt"
            setattr(out, option, getattr(args, option) or default)
    return out


def _stage_args(stage: str, args: argparse.Namespace, *, before_clearing: bool = False) -> argparse.Namespace:
    """The options of one stage of ``args.stage``, resolved (:func:`resolve_stage_options`)."""
    return resolve_stage_options(stage, _stage_paths(stage, args, before_clearing=before_clearing))


def _check_stages(stages: Sequence[str], args: argparse.Namespace, world_size: int) -> None:
    """Every stage's checks (:func:`_check_run`) before the first one starts.

    With ``all``, a joint run to resume or skip must not depend on a seg / spixel stage that will train
    further first: its source checkpoints would change under it (refused here, before any training, rather
    than by :func:`_check_sources` once those stages are done).
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
    """Resolve every stage's options (:func:`resolve_stage_options`): refuses unreadable or wrong-stage
    checkpoints and model options that contradict them, without touching any output folder."""
    for stage in stages:
        _stage_args(stage, args, before_clearing=True)


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
    except UsageError as exc:  # a hostile WORLD_SIZE, RANK, LOCAL_RANK or MASTER_PORT: named, exit status 2
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    with InterruptGuard() as guard:
        try:
            # what needs no output folder first: a refused command leaves no lock file or folder behind
            _agree(info, lambda: _check_sync_bn(args, info))  # not once --overwrite cleared the old run
            _agree(info, lambda: _resolve_stages(stages, args))
            check_data(_stage_args(stages[0], args), info, val=bool(args.eval))
            if info.main:
                locks = [FolderLock(Path(args.output_dir) / stage) for stage in stages]
            _agree(info, lambda: _acquire(locks))
            _agree(info, lambda: _check_stages(stages, args, info.world_size))
            if args.overwrite and len(stages) > 1:  # a new pipeline: no stage may keep the old run's results
                _agree(info, lambda: _clear_stages(stages, args))
            for stage in stages:
                out[stage] = run_stage(stage, _stage_paths(stage, args), info, guard, locked=True)
        except (UsageError, CheckpointError) as exc:
            # rank 0's refusal reaches every process: one copy, not one per process
            parser.exit(2, None if getattr(exc, _RANK_0_PRINTS, False) else f"{parser.prog}: error: {exc}\n")
        except RuntimeError as exc:
            if not (info.enabled and peer_lost(exc)):
                raise
            if guard.requested is not None:
                # this process was stopped too (Ctrl-C, a scheduler's SIGTERM to every process): the other one
                # stopped on it first, as rank 0 does in its evaluation (default handlers), and said so
                raise Interrupted(guard.requested) from exc
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
        if exc.forced:
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
