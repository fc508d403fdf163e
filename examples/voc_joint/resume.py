"""Rules for continuing or replacing a run: options that may differ on ``--resume``, folders holding a run.

The options of the training CLI fall into four groups per stage:

* **runtime** options (:data:`RUNTIME_OPTIONS`: device, workers, threads, logging, evaluation, memory format,
  recomputation, compilation, ...) change how a run executes, not what it trains: they may differ freely on
  ``--resume`` (the thread count, the memory format and compilation change the rounding, so a resume that
  changes them says that it is not bit-identical: :mod:`examples.voc_joint.resume_notes`);
* **growing** options (``--epochs``, ``--max-steps``) may grow, which extends a run;
* **fixed** options (:data:`STAGE_OPTIONS` ``[stage]["fixed"]``: the architecture, the initial weights and the
  optimizer type) define the weights and the optimizer state in the checkpoint: they never change on resume;
* every other option that matters to the stage (learning rates, schedule, loss weights, data, batch size,
  seed, ...) must be the checkpoint's unless ``--allow-option-changes`` is given; then each change is recorded
  in the new checkpoints (``config["changes"]``), next to the options in use (``config["args"]``).

Path options (:data:`PATH_OPTIONS`) are compared as absolute paths (:func:`absolute_path`), as the training
CLI records them. Options that a stage does not use (e.g. ``--lr`` for the ``seg`` stage) are not compared. An
option this file does not classify counts as a training option of every stage (refused unless allowed): new
options default to the safe side.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from examples.voc_joint.cli import UsageError, flag

__all__ = [
    "GROWING_OPTIONS",
    "PATH_OPTIONS",
    "RUNTIME_OPTIONS",
    "RUN_FILES",
    "STAGE_OPTIONS",
    "absolute_path",
    "check_new_run",
    "clear_run",
    "option_changes",
    "plain",
    "run_files",
]

#: Options that never affect what is trained.
RUNTIME_OPTIONS = frozenset(
    {
        "stage",
        "output_dir",
        "device",
        "workers",
        "threads",
        "resume",
        "overwrite",
        "allow_option_changes",
        "allow_val_overlap",
        "eval",
        "eval_crop",
        "val_split",
        "log_every",
        "tensorboard",
        "no_progress",
        "max_image_pixels",
        "check_files",
        "channels_last",
        "recompute_fusion",
        "recompute_loss",
        "compile",
    }
)
#: Options that may grow on resume (a longer run).
GROWING_OPTIONS = ("epochs", "max_steps")
#: Options naming files or folders: recorded as absolute paths (symbolic links resolved) and compared as such,
#: so the same file spelled differently is the same option, and the same relative spelling from another
#: working folder is not.
PATH_OPTIONS = ("data_root", "backbone_weights", "seg_checkpoint", "spixel_checkpoint")

_DATA = ("data_root", "sbd", "train_split", "crop_size", "scale_min", "scale_max", "batch_size", "seed")
_EXEC = ("amp", "sync_bn", "world_size")
_SCHEDULE = ("momentum", "weight_decay", "schedule", "poly_power")
_DEEPLAB = ("num_classes", "backbone", "output_stride", "aspp_channels", "backbone_weights")
_SPIXEL = ("cell_size", "spixel_width", "spixel_centre_bias")

#: Per stage: ``fixed`` options (never change on resume) and ``train`` options (change with the opt-in flag).
STAGE_OPTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "seg": {
        "fixed": (*_DEEPLAB, "optimizer"),
        "train": (*_DATA, *_EXEC, *_SCHEDULE, "seg_lr", "head_lr_mult"),
    },
    "spixel": {
        "fixed": ("num_classes", *_SPIXEL, "optimizer"),
        "train": (*_DATA, *_EXEC, *_SCHEDULE, "spixel_pretrain_lr", "pos_weight"),
    },
    "joint": {
        "fixed": (
            *_DEEPLAB,
            *_SPIXEL,
            "mode",
            "fusion",
            "fusion_hidden",
            "fusion_activation",
            "fusion_init",
            "seg_checkpoint",
            "spixel_checkpoint",
            "from_scratch",
            "optimizer",
        ),
        "train": (
            *_DATA,
            *_EXEC,
            *_SCHEDULE,
            "lr",
            "spixel_lr",
            "fusion_lr",
            "spixel_loss_weight",
            "pos_weight",
            "freeze_bn",
        ),
    },
}
_CLASSIFIED = (
    RUNTIME_OPTIONS
    | set(GROWING_OPTIONS)
    | {o for s in STAGE_OPTIONS.values() for g in s.values() for o in g}
)

#: What a run writes into its stage folder (``--overwrite`` deletes these; glob patterns allowed):
#: ``eval_<split>`` is ``evaluate.py``'s default output folder, next to the checkpoint it evaluated.
RUN_FILES = ("checkpoint.pt", "log.csv", "eval.json", "panels", "tensorboard", "eval_*")


def plain(value: Any) -> Any:
    """An option value as stored in checkpoints (weights-only loadable: ``Path`` -> ``str``, tuple -> list).

    Example:
        >>> plain((Path("a"), 1))
        ['a', 1]
    """
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def absolute_path(value: str | Path) -> Path:
    """``value`` as an absolute path, ``~`` expanded, symbolic links resolved (how path options are recorded).

    A relative path is taken relative to the current working folder.
    """
    return Path(value).expanduser().resolve()


def _same(name: str, old: Any, new: Any) -> bool:
    """Whether a recorded option value and the current one are the same (path options: the same path)."""
    if old == new:
        return True
    if name in PATH_OPTIONS and isinstance(old, str) and isinstance(new, str):
        # checkpoints written before paths were recorded absolute hold them as typed: relative to the current
        # working folder is the best guess
        return str(absolute_path(old)) == str(absolute_path(new))
    return False


def _grew(name: str, old: Any, new: Any) -> bool:
    """Whether a growing option grew: ``--epochs`` to a larger count, ``--max-steps`` to a larger one or to
    none. A recorded value that is no count (a record edited by hand: ``"1"``, ``None``) did not grow: the
    change is listed as any other (it raised a bare ``TypeError`` from the comparison)."""

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if name == "max_steps":
        return new is None or (count(old) and count(new) and new >= old)
    return count(old) and count(new) and new >= old


#: How a compared setting that is no option of train.py is named in messages and change records.
_LABELS = {"world_size": "processes (torchrun --nproc-per-node x --nnodes)"}


def _label(name: str) -> str:
    """The option's command-line spelling, or what sets a compared value that is no option (world_size)."""
    return _LABELS.get(name, flag(name))


def option_changes(
    stage: str,
    recorded: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    allow: bool,
    source: Path,
    step: int,
) -> list[dict[str, Any]]:
    """The differences between the options ``recorded`` in a checkpoint and the ``current`` ones.

    Args:
        stage: the stage being resumed.
        recorded: ``checkpoint["config"]["args"]`` (plus ``world_size``).
        current: the options now, per-stage defaults resolved (plus ``world_size``).
        allow: ``--allow-option-changes``.
        source: the checkpoint (for the message).
        step: its step (recorded with each change).

    Returns:
        list: one ``{"step", "option", "old", "new"}`` per accepted change (growth of ``--epochs`` /
        ``--max-steps``, and with ``allow`` the training options).

    Raises:
        UsageError: a fixed option differs, or a training option differs without ``allow``; the message lists
            every difference with its old and new value.
    """
    fixed = STAGE_OPTIONS[stage]["fixed"]
    extra = sorted(k for k in current if k not in _CLASSIFIED)  # unclassified: a training option
    compared: Iterable[str] = (*fixed, *STAGE_OPTIONS[stage]["train"], *GROWING_OPTIONS, *extra)
    accepted, refused = [], []
    for name in compared:
        if name not in recorded or name not in current:
            continue  # not recorded by the version that wrote the checkpoint
        old, new = recorded[name], plain(current[name])
        if _same(name, old, new):
            continue
        change = {"step": step, "option": _label(name), "old": old, "new": new}
        if name in GROWING_OPTIONS and _grew(name, old, new):
            accepted.append(change)
        elif name in fixed:
            refused.append(
                f"  {_label(name)}: {old!r} (checkpoint) -> {new!r} (now)  [never changes on resume]"
            )
        elif allow:
            accepted.append(change)
        else:
            refused.append(f"  {_label(name)}: {old!r} (checkpoint) -> {new!r} (now)")
    if refused:
        hint = (
            "Give the checkpoint's values, or --allow-option-changes to change training options "
            "deliberately (each change is recorded in the checkpoint). Options marked 'never changes' define "
            "the weights or the optimizer state: start a new run for them (--overwrite or another "
            "--output-dir)."
        )
        raise UsageError(
            f"--resume {source} (step {step}): options differ from the checkpoint's record:\n"
            + "\n".join(refused)
            + "\n"
            + hint
        )
    return accepted


def run_files(folder: Path, names: Sequence[str] = RUN_FILES) -> list[Path]:
    """The files of a run present in ``folder``, in the order of ``names`` (names or glob patterns; default:
    a stage folder's :data:`RUN_FILES`). A symbolic link counts, also one whose target is gone."""
    found: list[Path] = []
    for name in names:
        if any(c in name for c in "*?["):
            found += sorted(folder.glob(name)) if folder.is_dir() else []
        elif (folder / name).exists() or (folder / name).is_symlink():
            found.append(folder / name)
    return found


def clear_run(folder: Path, names: Sequence[str] = RUN_FILES) -> None:
    """Delete a run's files (:func:`run_files`) from ``folder``, in the order of ``names`` (``--overwrite``;
    the caller holds the folder lock); a symbolic link is removed, not what it points to."""
    for path in run_files(folder, names):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _logged_nothing(log: Path) -> bool:
    """``log.csv`` holds no row (at most its header): its run stopped before its first step."""
    try:
        with open(log, newline="", encoding="utf-8") as fh:
            rows = csv.reader(fh)
            return next(rows, None) is None or next(rows, None) is None  # empty, or a header alone
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def check_new_run(folder: Path, args: argparse.Namespace) -> None:
    """Refuse a new run (no ``--resume``) in a folder holding one, unless ``--overwrite``.

    What a run that stopped before its first step leaves (a ``log.csv`` without rows, and with
    ``--tensorboard`` its event folder) is no run: there is nothing to resume, and the new run replaces it.
    """
    present = run_files(folder)
    log = folder / "log.csv"
    if log in present and _logged_nothing(log):
        leftovers = {log, folder / "tensorboard"}
        if all(p in leftovers for p in present):
            return
    if present and not args.overwrite:
        names = ", ".join(p.name for p in present)
        raise UsageError(
            f"output folder {folder} holds a run ({names}); continue it with --resume, replace it with "
            "--overwrite, or choose another --output-dir (nothing was changed)"
        )
