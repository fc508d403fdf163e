"""Evaluate a joint (or plain) segmentation model on VOC-format data: metrics tables, JSON and PNG panels.

:func:`evaluate` runs a model that obeys the model contract (``model(seg_input, spixel_input)`` returns a dict
with ``"logits"``, ``"seg_logits"``, ``"superpixels"``, ``"assoc"``) over a loader of
:class:`~examples.voc_joint.data.VOCSegmentation` samples and scores both the final logits (``joint``) and the
plain segmentation logits (``baseline``) with :class:`~examples.voc_joint.metrics.SegmentationMetrics`. The
loader decides the resolution: crops (any batch size) or full images (batch size 1).

Command line::

    python examples/voc_joint/evaluate.py --checkpoint runs/voc/joint/checkpoint.pt \\
        --data-root VOCdevkit/VOC2012 --split val --full-size --output-dir runs/voc/joint/eval
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import sys
import time
from collections.abc import Iterable, Sequence, Sized
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.voc_joint.atomic import write_text_atomic
from examples.voc_joint.cli import (
    AMP_HELP,
    DEVICE_HELP,
    EVAL_DATA_ROOT_HELP,
    SIDE_MAX,
    THREADS_MAX,
    WORKERS_MAX,
    DefaultsHelpFormatter,
    check_one_process,
    check_output_dir,
    device_arg,
    error_text,
    existing_dir,
    existing_file,
    int_range,
    option_given,
    out_of_memory_error,
    output_path,
    split_name,
)
from examples.voc_joint.data import (
    DEFAULT_MAX_PIXELS,
    IGNORE_INDEX,
    NUM_CLASSES,
    DataError,
    build_dataset,
    ensure_synthetic_voc,
    missing_file_hint,
)
from examples.voc_joint.engine import close_loader_iterator
from examples.voc_joint.headers import check_headers, shown_problems
from examples.voc_joint.locking import FolderLock, FolderLockedError
from examples.voc_joint.metrics import (
    SegmentationMetrics,
    format_per_class_table,
    format_table,
    iou_from_confusion,
    to_jsonable,
)
from examples.voc_joint.signals import InterruptGuard, run_stoppable, worker_init_fn
from examples.voc_joint.staging import new_staging, remove_abandoned_staging
from examples.voc_joint.visualize import PANEL_CLASSES_MAX, save_panel
from examples.voc_joint.wording import counted
from examples.voc_joint.workers import worker_tmpdir_error

__all__ = [
    "build_parser",
    "check_args",
    "checkpoint_data_root",
    "checkpoint_num_classes",
    "evaluate",
    "main",
    "split_results",
]


def _check_logits(name: str, logits: Tensor, target: Tensor, num_classes: int) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 4:
        raise ValueError(
            f"model output '{name}' must be a Tensor[B, {num_classes}, H, W], got "
            f"{type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
        )
    expected = (target.shape[0], num_classes, *target.shape[-2:])
    if tuple(logits.shape) != expected:
        raise ValueError(
            f"model output '{name}' has shape {tuple(logits.shape)}; expected {expected} "
            "(batch, classes, target size)"
        )


def _refuse_nan(name: str, logits: Tensor, batch: dict[str, Any], amp: bool) -> None:
    """A FloatingPointError naming the images whose ``logits`` hold NaN: their argmax, the predicted
    class, would be arbitrary (torch takes a NaN for the largest value), the scores of those pixels
    meaningless."""
    per_image = torch.isnan(logits).flatten(1).sum(1).tolist()  # one read on the host
    if not any(per_image):
        return
    names = batch.get("name")
    bad = [
        f"{names[i]!s} ({n})" if names is not None else f"image {i} of the batch ({n})"
        for i, n in enumerate(per_image)
        if n
    ]
    raise FloatingPointError(
        f"model output '{name}' holds {counted(sum(per_image), 'NaN value')}: the predicted classes of those "
        "pixels would be arbitrary, so nothing is scored"
        + (" (amp: float16 can overflow; evaluate without it)" if amp else "")
        + "; NaN values by image:"
        + shown_problems(bad, one_line=True)
    )


def panel_classes_error(num_classes: int, way_out: str) -> str:
    """Why panels cannot be drawn for a model of ``num_classes`` classes (above
    :data:`~examples.voc_joint.visualize.PANEL_CLASSES_MAX`)."""
    return (
        f"the checkpoint's model has {num_classes} classes, and panels draw classes in {PANEL_CLASSES_MAX} "
        f"of the VOC palette's 256 colours (index 255 is the void colour): evaluate it with {way_out} (no "
        "panels)"
    )


def _check_superpixels(superpixels: Tensor, target: Tensor) -> None:
    """One superpixel map per image: ``[B, H, W]`` or ``[B, 1, H, W]`` of the target's batch and size."""
    shape = tuple(getattr(superpixels, "shape", ()))
    b, h, w = target.shape
    if not isinstance(superpixels, Tensor) or shape not in ((b, h, w), (b, 1, h, w)):
        raise ValueError(
            f"model output 'superpixels' must be a Tensor[B, H, W] (or [B, 1, H, W]) with one map per image, "
            f"{(b, h, w)} here (batch, target size); got {type(superpixels).__name__} {shape}"
        )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    *,
    device: torch.device | str,
    num_classes: int = NUM_CLASSES,
    boundary_widths: Sequence[int] = (1, 3, 5),
    panels_dir: str | Path | None = None,
    max_panels: int = 8,
    progress: bool = True,
    boundary_tolerance: int = 2,
    ignore_index: int = IGNORE_INDEX,
    amp: bool = False,
) -> dict[str, Any]:
    """Score ``model`` on every batch of ``loader``.

    Args:
        model (nn.Module): obeys the model contract; evaluated in eval mode (each of its modules gets its own
            mode back afterwards).
        loader (Iterable[dict]): batches with ``seg_input``, ``spixel_input`` (Tensor[B, 3, H, W]), ``target``
            (LongTensor[B, H, W]), and optionally ``region`` (BoolTensor[B, H, W], the images' own pixels:
            padding outside it counts in no metric), ``image`` and ``name`` (used by the panels). A
            DataLoader's worker processes are stopped when the evaluation ends, also when it ends by an error.
        device (torch.device | str): where the model runs.
        num_classes (int): C.
        boundary_widths (Sequence[int]): trimap widths (pixels on each side of a ground-truth edge).
        panels_dir (str | Path | None): write PNG panels (image + superpixels | ground truth | baseline |
            joint) of the first ``max_panels`` images here.
        max_panels (int): number of panels.
        progress (bool): show a tqdm progress bar with the running mIoU (tqdm is imported only then).
        boundary_tolerance (int): superpixel boundary-recall tolerance in pixels.
        ignore_index (int): ignored ground-truth label (drawn in the panels as void, whatever its value).
        amp (bool): autocast to float16 on CUDA.

    Returns:
        dict: the metrics of the final ``out["logits"]`` (every key of
        :meth:`~examples.voc_joint.metrics.SegmentationMetrics.compute`: ``res["miou"]``,
        ``res["boundary_miou"]["3"]``, ...) plus ``"baseline"`` (the same metrics of
        ``out["seg_logits"]``, or None when the model gives none), ``"panels"`` (list of PNG paths),
        ``"seconds"`` and ``"images_per_second"``. Superpixel metrics of both use ``out["superpixels"]`` (NaN
        when it is None).

    Raises:
        FloatingPointError: ``out["logits"]`` or ``out["seg_logits"]`` hold NaN (their argmax would be
            arbitrary; the count and the batch's image names are given).
        TypeError: a model output that breaks the model contract (not a dict with ``"logits"``, ...).
        ValueError: a model output that is not a tensor of the expected shape; ``num_classes`` above 255
            (:data:`~examples.voc_joint.visualize.PANEL_CLASSES_MAX`) with panels to draw (255 of the VOC
            palette's 256 colours: index 255 is the void colour).
    """
    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    if panels_dir is not None and max_panels > 0 and num_classes > PANEL_CLASSES_MAX:
        raise ValueError(panel_classes_error(num_classes, "max_panels=0"))
    kw: dict[str, Any] = {
        "num_classes": num_classes,
        "ignore_index": ignore_index,
        "boundary_widths": boundary_widths,
        "boundary_tolerance": boundary_tolerance,
    }
    joint_m, base_m = SegmentationMetrics(**kw), SegmentationMetrics(**kw)
    has_baseline = False
    panels: list[str] = []
    # every module's own mode, not the model's flag alone: the joint stage trains with DeepLabV3+'s BatchNorm
    # in eval mode (--freeze-bn), which model.train(True) afterwards would switch back to training mode
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    start = time.perf_counter()
    # the iterator is closed in the finally: one left to the garbage collector (kept by the traceback of a
    # data error re-raised from a worker) stalled there 5 s or more, its queues finalized before it
    batches = iter(loader)
    try:
        bar: Any = batches
        if progress:  # tqdm (the examples extra) only when a bar is wanted: progress=False runs without it
            from tqdm.auto import tqdm

            total = len(loader) if isinstance(loader, Sized) else None
            bar = tqdm(batches, total=total, desc="evaluate", unit="batch", dynamic_ncols=True)
        for batch in bar:
            target = batch["target"].to(device)
            region = batch.get("region")  # the images' own pixels: padding counts in no metric
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                out = model(batch["seg_input"].to(device), batch["spixel_input"].to(device))
            if not isinstance(out, dict) or "logits" not in out:
                raise TypeError(
                    "the model must return a dict with 'logits' (see the model contract), got "
                    f"{type(out).__name__}"
                )
            _check_logits("logits", out["logits"], target, num_classes)
            _refuse_nan("logits", out["logits"], batch, use_amp)
            pred = out["logits"].argmax(1)
            superpixels = out.get("superpixels")
            if superpixels is not None:
                _check_superpixels(superpixels, target)
                superpixels = superpixels.reshape(target.shape).to(device)
            joint_m.update(pred, target, superpixels, region)
            base_pred = None
            if out.get("seg_logits") is not None:
                _check_logits("seg_logits", out["seg_logits"], target, num_classes)
                _refuse_nan("seg_logits", out["seg_logits"], batch, use_amp)
                base_pred = out["seg_logits"].argmax(1)
                base_m.update(base_pred, target, superpixels, region)
                has_baseline = True
            if panels_dir is not None and len(panels) < max_panels:
                images = batch.get("image")
                names = batch.get("name")
                for i in range(target.shape[0]):
                    if len(panels) >= max_panels:
                        break
                    image = images[i] if images is not None else torch.zeros(3, *target.shape[-2:])
                    name = str(names[i]) if names is not None else f"sample_{len(panels):04d}"
                    # the panels draw void as the VOC palette's 255 (and leave it out of the legend):
                    # another ignore_index was drawn as a class, or (a negative one) refused by the palette
                    drawn = target[i]
                    if ignore_index != IGNORE_INDEX:
                        drawn = drawn.masked_fill(drawn == ignore_index, IGNORE_INDEX)
                    # a seg checkpoint's one prediction is one tile, "seg" (the tables' single column); an
                    # image without superpixels is titled without them
                    # (a joint model returns its superpixels, also one of mode "none" without a stack, whose
                    # logits are its seg_logits: its panel keeps the baseline and joint tiles of its tables)
                    seg_only = superpixels is None and out.get("seg_logits") is out["logits"]
                    first = "image" if superpixels is None else "image + superpixels"
                    if seg_only:
                        predictions = (pred[i], None)
                        titles = (first, "ground truth", "seg", "")
                    else:
                        predictions = (None if base_pred is None else base_pred[i], pred[i])
                        titles = (first, "ground truth", "baseline", "joint")
                    path = save_panel(
                        Path(panels_dir) / _panel_file_name(name),
                        image,
                        drawn,
                        *predictions,
                        None if superpixels is None else superpixels[i],
                        titles=titles,
                        class_names=joint_m.class_names,
                    )
                    panels.append(str(path))
            if progress:
                iou = iou_from_confusion(joint_m.confusion)
                iou = iou[~iou.isnan()]
                bar.set_postfix(mIoU=f"{100 * float(iou.mean()) if iou.numel() else 0.0:.1f}")
    finally:
        for module, training in modes:
            module.training = training
        close_loader_iterator(batches)
    seconds = time.perf_counter() - start
    joint = joint_m.compute()
    return {
        **joint,
        "baseline": base_m.compute() if has_baseline else None,
        "panels": panels,
        "seconds": seconds,
        "images_per_second": joint["num_images"] / seconds if seconds > 0 else float("nan"),
    }


def checkpoint_num_classes(config: dict[str, Any]) -> int:
    """The class count C of a seg or joint checkpoint: ``config["model"]["deeplab"]["num_classes"]`` of the
    config returned by :func:`~examples.voc_joint.checkpoint.load_model_from_checkpoint`, i.e. the width of
    the logits its model produces (``--num-classes`` of the training run)."""
    return int(config["model"]["deeplab"]["num_classes"])


_EXTRA_KEYS = ("baseline", "panels", "seconds", "images_per_second")


def split_results(results: dict[str, Any]) -> dict[str, Any]:
    """``{"baseline": ..., "joint": ...}`` (baseline left out when absent) from an :func:`evaluate` result,
    ready for :func:`~examples.voc_joint.metrics.format_table`."""
    joint = {k: v for k, v in results.items() if k not in _EXTRA_KEYS}
    return {"baseline": results["baseline"], "joint": joint} if results.get("baseline") else {"joint": joint}


def build_parser() -> argparse.ArgumentParser:
    """The evaluation's command line (``python examples/voc_joint/evaluate.py --help``)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python examples/voc_joint/evaluate.py",
        description="Evaluate a checkpoint: mIoU, per-class IoU, boundary (trimap) mIoU, superpixel "
        "ASA / boundary recall / count and consistency for the joint and the baseline "
        "predictions; prints tables, writes metrics.json and PNG panels.",
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", required=True, type=existing_file, help="seg or joint checkpoint written by train.py"
    )
    parser.add_argument(
        "--data-root",
        type=existing_dir,
        default=None,
        help=EVAL_DATA_ROOT_HELP,
    )
    parser.add_argument(
        "--split", type=split_name, default="val", help="list name in ImageSets (default: val)"
    )
    parser.add_argument(
        "--sbd", action="store_true", help="read SegmentationClassAug + ImageSets/SegmentationAug"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--full-size",
        action="store_true",
        help="evaluate whole images with batch size 1 (the default without --crop-size)",
    )
    size.add_argument(
        "--crop-size",
        type=int_range(1, SIDE_MAX),
        default=None,
        help="evaluate centre crops of this size instead",
    )
    parser.add_argument(
        "--pad-to-multiple",
        type=int_range(1, SIDE_MAX),
        default=None,
        help="pad full images bottom/right to a multiple (never scored, but the joint model's "
        "superpixel means include it); not with --crop-size",
    )
    parser.add_argument(
        "--batch-size", type=int_range(1), default=8, help="batch size for --crop-size (full size uses 1)"
    )
    parser.add_argument(
        "--workers",
        type=int_range(0, WORKERS_MAX),
        default=2,
        help="DataLoader worker processes, as train.py's --workers (default: 2; 0: load in this process)",
    )
    parser.add_argument("--device", type=device_arg, default=None, help=DEVICE_HELP)
    parser.add_argument("--amp", action="store_true", help=AMP_HELP)
    parser.add_argument(
        "--output-dir",
        type=output_path,
        default=None,
        help="output folder for metrics.json and panels/ (default: eval_<split> next to the checkpoint)",
    )
    parser.add_argument("--max-panels", type=int_range(0), default=8, help="number of PNG panels (0: none)")
    parser.add_argument(
        "--boundary-widths",
        type=int_range(1, SIDE_MAX),
        nargs="+",
        default=[1, 3, 5],
        help="trimap band widths in pixels (default: 1 3 5)",
    )
    parser.add_argument(
        "--boundary-tolerance",
        type=int_range(0, SIDE_MAX),
        default=2,
        help="superpixel boundary-recall tolerance in pixels (default: 2)",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int_range(1),
        default=DEFAULT_MAX_PIXELS,
        help="refuse images and masks with more pixels than this (decompression-bomb guard)",
    )
    parser.add_argument(
        "--check-files",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="before evaluating, read the header of every listed image and mask (no pixel decoded) and name "
        "every file the reader would refuse (default: on)",
    )
    parser.add_argument(
        "--threads",
        type=int_range(1, THREADS_MAX),
        default=None,
        help="torch CPU threads (default: torch's choice), as train.py's --threads",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def check_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None = None
) -> None:
    """Checks that involve several options (each option alone was checked by its ``type=``).

    ``argv``: the command line ``args`` was parsed from, to tell which options were given; without it, an
    option counts as given when its value is not the default.
    """
    check_one_process(parser, "evaluate.py")
    if args.pad_to_multiple is not None and args.crop_size is not None:
        parser.error("--pad-to-multiple pads full images: it cannot be combined with --crop-size")
    if args.crop_size is None and option_given(parser, args, argv)("batch_size") and args.batch_size != 1:
        parser.error(
            f"--batch-size {args.batch_size} applies to --crop-size: full images (the default) are evaluated "
            "one at a time"
        )
    error = worker_tmpdir_error(args.workers, "--workers")
    if error:
        parser.error(error)
    check_output_dir(parser, _output_dir(args), given=args.output_dir is not None)
    panels = _output_dir(args) / "panels"
    if args.max_panels > 0 and (panels.is_symlink() or panels.exists()) and not panels.is_dir():
        # the folder is made only when the results are written: it failed there, after the whole evaluation
        parser.error(
            f"the output folder {_output_dir(args)} holds {panels.name!r}, which is no folder, where the "
            "panels go: remove or rename it, choose another --output-dir, or pass --max-panels 0"
        )


def _output_dir(args: argparse.Namespace) -> Path:
    """Where the results go: ``--output-dir``, or ``eval_<split>`` next to the checkpoint."""
    return args.output_dir if args.output_dir is not None else args.checkpoint.parent / f"eval_{args.split}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python examples/voc_joint/evaluate.py --help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args, sys.argv[1:] if argv is None else argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = _output_dir(args)
    # SIGINT, SIGTERM and SIGHUP stop the evaluation at once (its staging folder removed) with one line,
    # exit status 130 / 143 / 129
    return run_stoppable(
        lambda: _main(parser, args),
        parser.prog,
        f"{out / 'metrics.json'} and panels/ are only written by a finished evaluation",
    )


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """:func:`main` after the options were parsed and checked."""
    from examples.voc_joint.checkpoint import CheckpointError, load_model_from_checkpoint
    from examples.voc_joint.distributed import resolve_device

    device = resolve_device(args.device)
    if args.amp and device.type != "cuda":  # as train.py says it
        print(f"[evaluate] --amp ignored on {device.type} (CUDA only)", flush=True)
    try:
        model, config = load_model_from_checkpoint(
            args.checkpoint, map_location="cpu", expect_stage=("seg", "joint")
        )
    except CheckpointError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    source = "--data-root"
    if args.data_root is None:  # the checkpoint's own data (the synthetic set scored a user's model silently)
        recorded = checkpoint_data_root(config)
        try:  # (is_dir raises where the path cannot be read: EACCES, ENAMETOOLONG)
            missing = "no folder here" if recorded is not None and not recorded.is_dir() else None
        except OSError as exc:
            missing = f"unreadable here ({exc.strerror})"
        if missing is not None:
            parser.exit(
                2,
                f"{parser.prog}: error: the checkpoint's run trained on the data in '{recorded}', which is "
                f"{missing}: pass --data-root (the folder it moved to, or another data set)\n",
            )
        args.data_root = recorded
        source = (
            "the data the checkpoint's run trained on; --data-root to change"
            if isinstance(config.get("args"), dict) and "data_root" in config["args"]
            else "the default: the checkpoint records no data folder"
        )
    classes = checkpoint_num_classes(config)
    # before any image is read (the models take up to 1024 classes; the data set's check raised ValueError,
    # and the panels' limit, PANEL_CLASSES_MAX = 255, is the same)
    if classes > IGNORE_INDEX:
        parser.exit(
            2,
            f"{parser.prog}: error: the checkpoint's model has {classes} classes, and VOC-format masks "
            f"(8-bit, {IGNORE_INDEX} ignored) hold classes 0..{IGNORE_INDEX - 1} only: evaluate.py cannot "
            "score it\n",
        )
    model.to(device)
    try:
        return _run(args, model, config, device, source)
    except FolderLockedError as exc:  # another evaluation writes into the same folder
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except (OSError, DataError, FloatingPointError) as exc:  # a missing split or file, a wrong data root, a
        # bad mask, a full disk, NaN logits
        print(f"{parser.prog}: error: {error_text(exc)}", file=sys.stderr, flush=True)
        return 1
    except (MemoryError, RuntimeError) as exc:  # a --crop-size or --batch-size too large for the machine
        message = out_of_memory_error(exc)
        if message is None:
            raise
        print(f"{parser.prog}: error: {message}", file=sys.stderr, flush=True)
        return 1


def _run(
    args: argparse.Namespace, model: nn.Module, config: dict[str, Any], device: torch.device, source: str
) -> int:
    """Evaluate the loaded checkpoint as ``args`` say; print the tables, write metrics.json and panels/.
    ``source``: where the data folder comes from, printed with it."""
    root = args.data_root if args.data_root is not None else ensure_synthetic_voc()
    print(f"[evaluate] data: {root} ({source})", flush=True)
    full_size = args.crop_size is None
    num_classes = checkpoint_num_classes(config)
    dataset = build_dataset(  # masks are checked against the checkpoint's classes, as in training
        root,
        args.split,
        sbd=args.sbd,
        crop_size=args.crop_size,
        pad_to_multiple=args.pad_to_multiple,
        max_pixels=args.max_image_pixels,
        num_classes=num_classes,
    )
    missing = dataset.missing_files()  # all at once, before the model runs on the images listed before them
    if missing:
        named = shown_problems(missing, one_line=True, describe=lambda p: f"'{p}'{missing_file_hint(p)}")
        verb = "does" if len(missing) == 1 else "do"
        raise FileNotFoundError(
            f"{counted(len(missing), 'file')} listed in {dataset.list_file} {verb} not exist:{named}"
        )
    if args.check_files:  # every bad header at once, before the model runs on the files listed before it
        check_headers([dataset], progress=not args.no_progress, prefix="evaluate", one_line=True)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=1 if full_size else args.batch_size,
        shuffle=False,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init_fn(args.workers),
    )
    out_dir = _output_dir(args)
    # one evaluation at a time per folder (made here): a second one writing the same metrics.json and panels/
    # is refused, naming the holder, until this one ends
    lock = FolderLock(out_dir).acquire()
    staging: Path | None = None
    held: int | None = None
    try:
        # the panels go to a temporary folder first: an earlier evaluation's panels stay until this one is
        # done, and are then replaced, never mixed with the new ones
        # (the folders of evaluations killed before their end are removed here: see staging.py)
        remove_abandoned_staging(out_dir, ".panels.")
        if args.max_panels > 0:
            staging, held = new_staging(out_dir, ".panels.")
        results = evaluate(
            model,
            loader,
            device=device,
            num_classes=num_classes,
            boundary_widths=args.boundary_widths,
            panels_dir=staging,
            max_panels=args.max_panels,
            progress=not args.no_progress,
            boundary_tolerance=args.boundary_tolerance,
            amp=args.amp,
        )
        # the panels' paths once moved into place: metrics.json and panels/ are replaced together below
        panels = [str(out_dir / "panels" / Path(p).name) for p in results["panels"]]
        folders: list[Path] = []  # the folders whose training lists were read
        trained_on = training_overlap(config, dataset.names, folders)
        if trained_on:
            print(
                f"[evaluate] warning: the checkpoint was trained on {len(trained_on)} of the {len(dataset)} "
                f"images evaluated (its training split, or that of a checkpoint it was fine-tuned from, "
                f"lists them, e.g. {trained_on[0]!r}): not a held-out score"
                f"{_other_folder_note(folders, root)}",
                file=sys.stderr,
                flush=True,
            )
        mode = "full images" if full_size else f"{args.crop_size}x{args.crop_size} centre crops"
        title = f"{args.split} ({counted(len(dataset), 'image')}, {mode}) -- {args.checkpoint}"
        by_model = split_results(results)
        shown = by_model
        if config.get("stage") == "seg":  # DeepLabV3+ alone: its "baseline" and "joint" are the same logits
            shown = {"seg": by_model["joint"]}
            title += " (seg checkpoint: DeepLabV3+ alone, no superpixels)"
        print(format_table(shown, title=title))
        print()
        print(format_per_class_table(shown, title="per-class IoU (%)"))
        payload = {
            "checkpoint": str(args.checkpoint),
            # which weights were scored: a checkpoint retrained (or replaced) at the same path and step, with
            # the same config, has other weights
            "checkpoint_sha256": config["sha256"],
            "data_root": str(dataset.root),
            "split": args.split,
            "sbd": args.sbd,
            "resolution": "full" if full_size else args.crop_size,
            # the other options that change the scores (the boundary widths are the keys of the results)
            "options": {
                "pad_to_multiple": args.pad_to_multiple,
                "boundary_tolerance": args.boundary_tolerance,
                "device": str(device),
                "amp": bool(args.amp and device.type == "cuda"),  # as applied (CUDA only)
            },
            "config": {k: v for k, v in config.items() if k != "sha256"},
            "trained_on_evaluated_images": None if trained_on is None else len(trained_on),
            **by_model,
            "panels": panels,
            "seconds": results["seconds"],
            "images_per_second": results["images_per_second"],
            # the evaluating torch; config["torch_version"]: the training one
            "torch": str(torch.__version__),
        }
        text = json.dumps(to_jsonable(payload), indent=2, allow_nan=False, default=str)
        # the old panels and metrics.json go and the new ones come in one step: a signal waits for its end;
        # panels/ is replaced only once the new metrics.json is written (a full disk there leaves both as
        # they were), then that file is renamed into place
        with InterruptGuard() as deferred, deferred.critical():
            write_text_atomic(
                out_dir / "metrics.json",
                text + "\n",
                before=lambda: _replace_panels(results["panels"], out_dir / "panels"),
            )
        deferred.check()
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if held is not None:
            os.close(held)
        lock.release()
    print(f"\nmetrics: {out_dir / 'metrics.json'}")
    if panels:
        print(f"panels:  {out_dir / 'panels'} ({len(panels)} PNG)")
    return 0


def checkpoint_data_root(config: dict[str, Any]) -> Path | None:
    """The data folder the checkpoint's run trained on: its recorded ``--data-root`` (``config["args"]``),
    None where it used the synthetic set (or records no folder: a checkpoint written without its options).

    Example:
        >>> checkpoint_data_root({"args": {"data_root": "/data/VOCdevkit"}}).name
        'VOCdevkit'
        >>> checkpoint_data_root({"args": {"data_root": None}}) is None
        True
    """
    options = config.get("args")
    root = options.get("data_root") if isinstance(options, dict) else None
    return Path(root) if isinstance(root, str) and root else None


def training_overlap(
    config: dict[str, Any], names: Sequence[str], folders: list[Path] | None = None
) -> list[str] | None:
    """The images of ``names`` that the checkpoint was trained on (in the order of ``names``), or None when
    that cannot be read (a checkpoint without the options, its data folder or a source checkpoint not here).

    The lists are the one the checkpoint's last stage trained on: ``config["args"]``'s ``data_root`` (None:
    the generated set in the cache), ``sbd`` and ``train_split``; and, for a joint checkpoint, those of the
    seg and spixel checkpoints it was fine-tuned from (``config["sources"]``, followed when the file there
    still has the recorded SHA-256): a DeepLabV3+ pretrained on ``trainval`` has seen the val images, whatever
    split the joint stage used. VOC names are global (``2008_000123``), so the names are compared, wherever
    the evaluated folder lies. ``folders``, if given, receives the VOC folder of each list read.
    """
    trained = _trained_names(config, set(), folders)
    if trained is None:
        return None
    return [name for name in names if name in trained]


def _other_folder_note(folders: Sequence[Path], root: Path) -> str:
    """What the overlap warning adds when the evaluated folder ``root`` is none of the ``folders`` whose
    training lists the overlap was read from (:func:`training_overlap`: the checkpoint's and those of the
    checkpoints it was fine-tuned from): the lists are compared by name (VOC's names are global), and another
    set may reuse names (every generated set names its images ``synth_<n>``)."""
    from examples.voc_joint.data import _resolve_root

    try:  # each as its VOC2012 folder: a root given as VOCdevkit's parent is the same folder
        here = _resolve_root(Path(root)).resolve()
        if any(folder.resolve() == here for folder in folders):
            return ""
    except (OSError, RuntimeError):  # gone since, or a loop of links: not known to be the same
        pass
    named = ", ".join(dict.fromkeys(str(folder) for folder in folders))
    return (
        f". The names are compared: the checkpoint trained on {named}, these images are read from {root}; "
        "if they are other images under the same names, the score is held out after all"
    )


def checkpoint_training_names(path: str | Path) -> set[str] | None:
    """The names of the images the checkpoint at ``path`` was trained on, those of the checkpoints it was
    fine-tuned from included (as :func:`training_overlap`); None when that cannot be read."""
    config = _source_config(Path(path), None)
    return None if config is None else _trained_names(config, {str(path)})


def _trained_names(
    config: dict[str, Any], seen: set[str], folders: list[Path] | None = None
) -> set[str] | None:
    """The names of the training list of ``config`` and of its recorded source checkpoints (None: unknown);
    ``folders``, if given, receives the VOC folder of each list read."""
    from examples.voc_joint.data import DEFAULT_CACHE, _list_dir, _resolve_root, read_list

    options = config.get("args")
    if not isinstance(options, dict) or not isinstance(options.get("train_split"), str):
        return None
    root = options.get("data_root")
    if root is not None and not isinstance(root, str):  # a crafted record: Path(5) raised TypeError once the
        return None  # whole evaluation was done, and its results were lost
    try:
        voc = _resolve_root(Path(root) if root is not None else DEFAULT_CACHE / "synthetic_voc")
        trained = set(read_list(_list_dir(voc, bool(options.get("sbd"))) / f"{options['train_split']}.txt"))
        if folders is not None:
            folders.append(voc)
    except (OSError, ValueError, DataError):  # moved, not on this machine, unreadable, a NUL in a recorded
        return None  # path (ValueError: "embedded null byte", after the whole evaluation): unknown
    sources = config.get("sources") or {}
    for source in sources.values() if isinstance(sources, dict) else ():
        path = source.get("path") if isinstance(source, dict) else None
        if not isinstance(path, str) or path in seen:
            continue
        seen.add(path)
        source_config = _source_config(Path(path), source.get("sha256"))
        more = None if source_config is None else _trained_names(source_config, seen, folders)
        if more is None:
            return None
        trained |= more
    return trained


def _source_config(path: Path, sha256: object) -> dict[str, Any] | None:
    """The config of the checkpoint at ``path`` if it is still the recorded one (its SHA-256), else None.
    Read memory-mapped: the weights are not loaded."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError):  # gone, unreadable: unknown
        return None
    if not isinstance(ckpt, dict) or (sha256 is not None and ckpt.get("sha256") != sha256):
        return None  # replaced since the joint stage read it (e.g. a new seg stage): another network
    config = ckpt.get("config")
    return config if isinstance(config, dict) else None


#: The longest panel file stem in bytes (file names hold 255, NAME_MAX, less ``.png``, with room to spare).
PANEL_STEM_MAX = 240


def _panel_file_name(name: str) -> str:
    """The panel file of sample ``name``, one file name for a list entry in a subfolder too (``a/0001``:
    ``a%2F0001.png``; ``%`` itself is ``%25`` and ``~`` is ``%7E``, so two entries never share a file).

    An escaped name longer than :data:`PANEL_STEM_MAX` bytes (a deep list entry, each part of it a valid
    file name, or many escapes: the panel's write failed with "File name too long" and stopped the
    evaluation) keeps its first bytes and ends in ``~`` and 16 hex digits of the full name's SHA-256.
    """
    escaped = name.replace("%", "%25").replace("~", "%7E").replace("/", "%2F").replace("\\", "%5C")
    raw = escaped.encode("utf-8", "surrogateescape")
    if len(raw) > PANEL_STEM_MAX:
        digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        head = raw[: PANEL_STEM_MAX - 17].decode("utf-8", "ignore")  # whole characters only
        escaped = head + "~" + digest
    return escaped + ".png"


def _replace_panels(new: Sequence[str], panels_dir: Path) -> list[str]:
    """Replace the PNG panels in ``panels_dir`` (an earlier evaluation's) with the files ``new``, moved
    there; other files there stay. Returns the new panels' paths, in the order of ``new``."""
    for old in panels_dir.glob("*.png") if panels_dir.is_dir() else []:
        old.unlink()
    if new:
        panels_dir.mkdir(exist_ok=True)
    elif panels_dir.is_dir() and not any(panels_dir.iterdir()):
        panels_dir.rmdir()  # no panels this time: no empty folder either
    moved = []
    for path in map(Path, new):
        os.replace(path, panels_dir / path.name)
        moved.append(str(panels_dir / path.name))
    return moved


if __name__ == "__main__":
    from examples.voc_joint.console import tolerant_output

    tolerant_output()  # a path or a character the console cannot encode is escaped, not fatal
    raise SystemExit(main())
