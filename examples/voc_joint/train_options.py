"""The command line of ``train.py``: its parser, the checks across options, and each stage's options resolved.

Every option alone is checked by its ``type=`` (:mod:`examples.voc_joint.cli`); :func:`check_args` checks the
options together, before anything is read or written; :func:`resolve_stage_options` fills in one stage's
defaults and, for the joint stage, the model options its pretrained checkpoints fix.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

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
    existing_dir,
    existing_file,
    flag,
    float_range,
    int_range,
    option_given,
    output_path,
    resume_arg,
    spelled,
    split_name,
)
from examples.voc_joint.data import DEFAULT_MAX_PIXELS
from examples.voc_joint.models._checks import fusion_weights_problem
from examples.voc_joint.models.build import (  # the config schema's bounds: a model trained here must load
    FUSION_LAYER_MAX,
    MAX_CELL,
    MAX_FUSION_DEPTH,
    MAX_SPIXEL_WIDTH,
    MAX_WIDTH,
)
from examples.voc_joint.models.deeplabv3plus import BACKBONES
from examples.voc_joint.models.joint import DEFAULT_CHANNELS_LAST, FUSION_INITS, MODES, ChannelsLast
from examples.voc_joint.resume import PATH_OPTIONS, absolute_path
from examples.voc_joint.sources import network_config
from examples.voc_joint.workers import worker_tmpdir_error

__all__ = [
    "CHECKPOINT_MODEL_OPTIONS",
    "EVAL_STAGES",
    "STAGES",
    "STAGE_DEFAULTS",
    "STAGE_LEARNING_RATES",
    "STAGE_ONLY_OPTIONS",
    "CheckpointModelOption",
    "backbone_weights_error",
    "build_parser",
    "check_args",
    "resolve_stage_options",
    "resolve_with_origins",
    "runtime_options",
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
        "(default: on; about 3 s for VOC trainaug + val, 24062 files, from a warm disk cache)",
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
        help="applied by the optimizer (default: 5e-4 seg/joint, 4e-4 spixel; spixel: biases exempt, as in "
        "SpixelFCN)",
    )
    g.add_argument(
        "--schedule",
        choices=("poly", "fixed"),
        default=None,
        help="lr schedule per iteration: poly (1 - t/T)^power or fixed (default: poly for seg, fixed "
        "for spixel and joint; the authors' joint stage is fixed, the public SpixelFCN code halves its rate "
        "once, at 200k of its 300k iterations)",
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
        "the first uniformization) there, chunk by chunk (default: on; 29 %% less saved activation memory at "
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
    return resolve_with_origins(stage, args)[0]


def resolve_with_origins(
    stage: str, args: argparse.Namespace
) -> tuple[argparse.Namespace, dict[str, list[str]]]:
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
                    network_config(Path(path), part, flag(option)),
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


def runtime_options(args: argparse.Namespace, device: torch.device | None = None) -> dict[str, Any]:
    """The model's runtime options (``--channels-last``, ``--recompute-fusion``, ``--compile``).

    ``--channels-last`` left unset resolves to
    :data:`~examples.voc_joint.models.joint.DEFAULT_CHANNELS_LAST` of ``device`` (``True``, ``"spixelfcn"`` or
    ``False``; ``False`` when no device is given);
    :func:`~examples.voc_joint.train.build_train_state` resolves it before building.
    """
    channels_last: ChannelsLast | None = getattr(args, "channels_last", None)
    if channels_last is None:
        channels_last = DEFAULT_CHANNELS_LAST.get(device.type, False) if device is not None else False
    return {
        "channels_last": channels_last,
        "recompute_fusion": bool(getattr(args, "recompute_fusion", True)),
        "compile_refine": bool(getattr(args, "compile", False)),
    }


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
    if classes is None and args.seg_checkpoint is None:  # else the checkpoint's (also for the joint stage of
        # --stage all): resolve_stage_options checks the widths against them
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
    if "joint" in run and args.mode != "soft" and not args.spixel_loss_weight and is_given("spixel_lr"):
        # (both runs of an audit, --spixel-lr 0 and 10, ended with the same SpixelFCN weights: no gradient)
        parser.error(
            f"{spelled('spixel_lr', args.spixel_lr)} does nothing with --mode {args.mode} and "
            f"--spixel-loss-weight {args.spixel_loss_weight:g}: the joint stage then sends no gradient into "
            "SpixelFCN (its weights stay as loaded): drop it, or give --mode soft or a --spixel-loss-weight "
            "above 0"
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
        # (a whole segmentation model's file is named as such by the message itself)
        another = "do not match" in str(exc) and "segmentation head's key" not in str(exc)
        hint = f" (--backbone {backbone}: weights of another ResNet?)" if another else ""
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
