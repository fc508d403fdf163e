"""Fusion-initialization ablation of the joint model over seeds: transparent init against the usual choices.

``python examples/voc_joint/ablation.py`` (``--help`` lists the options; about 6 minutes on 2 CPU cores with
its pretraining, ``--quick`` about 3):

1. takes one pair of pretrained checkpoints (``--seg-checkpoint`` / ``--spixel-checkpoint``), or pretrains
   DeepLabV3+ and SpixelFCN once with the demo's recipe on the synthetic VOC set (``<output-dir>/pretrain``,
   reused by later runs into the same folder with the same pretraining options; other ones are refused);
2. for every seed (``--seeds N``, default 3) fine-tunes the joint model (hard uniformization) with each fusion
   initialization of :data:`~examples.voc_joint.models.joint.FUSION_INITS` -- ``transparent`` (the paper),
   ``xavier``, ``kaiming``, ``net2net``, ``zero_residual`` -- and the demo's two controls, ``no_superpixels``
   (DeepLabV3+ fine-tuned alike: mode ``none``, no fusion) and ``no_fusion`` (superpixel uniformization
   alone), all for the same steps with the same learning rates (``--fusion-hidden`` sets the stack's widths
   for every fusion init: the paper's by default). The seed sets the fusion layers' random draws, the data
   order and augmentation, and dropout;
3. scores every run on the validation split (full images) at step 0, every ``--eval-every`` steps and at the
   end (mIoU, boundary mIoU in 1 / 3 / 5 px bands) and records its loss at every step;
4. writes into ``--output-dir``: ``ablation.json`` (``{"rows": [{"init", "seed", "step0_miou", "miou",
   "boundary_miou": {"<band px>": ...}, "curve": [...]}, ...], ...}``; strict JSON, rewritten after every run,
   so an interrupted ablation continues where it stopped, with the same settings only: the pretrained
   checkpoints' SHA-256 and the pretraining epochs among them, compared before the pretraining is reused and,
   within a session, around every run's load of them; ``sessions`` records each session's commit, machine,
   load and time, ``seconds`` their total),
   ``ablation.md`` (mean +- std over seeds per init,
   at step 0 and at the end, and the paired difference to ``transparent`` with its spread) and
   ``ablation.png`` (mIoU and loss against step, one line per init, the seeds' range shaded), both made by
   :mod:`examples.voc_joint.ablation_report`.

It reuses the training pipeline's pieces: the joint stage's model builder, optimizer and parameter groups
(:func:`~examples.voc_joint.train.build_train_state`), its resumable sampler and loader, the engine's epoch
loop (:func:`~examples.voc_joint.engine.train_one_epoch`), :func:`~examples.voc_joint.evaluate.evaluate`, the
output-folder lock and the strict JSON writer. As in the demo, the fine-tuning learning rates are larger than
the paper's (1e-6 / 1e-7 move nothing in a few dozen steps); they are recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from examples.voc_joint.ablation_report import (
    CONTROLS,
    SYNTHETIC,
    VARIANTS,
    _drawable,
    figure_title,
    format_markdown,
    plot,
    reloaded_row,
    summarize,
)
from examples.voc_joint.atomic import write_text_atomic
from examples.voc_joint.cli import (
    DATA_ROOT_HELP,
    FACTOR_MAX,
    SIDE_MAX,
    THREADS_MAX,
    UsageError,
    add_fusion_hidden,
    check_one_process,
    check_output_dir,
    existing_dir,
    existing_file,
    flag,
    float_range,
    fusion_hidden_error,
    int_range,
    output_path,
    run_command,
)
from examples.voc_joint.engine import CsvLogger
from examples.voc_joint.models.joint import DEFAULT_FUSION_HIDDEN, FUSION_INITS
from examples.voc_joint.wording import counted

__all__ = [
    "QUICK",
    "build_parser",
    "check_args",
    "check_pretrained",
    "main",
    "run_ablation",
    "settings_differences",
    "variant_options",
]

#: Defaults of the full run and of ``--quick`` (options left unset on the command line).
DEFAULTS: dict[str, Any] = {
    "steps": 40,
    "eval_every": 10,
    "seg_epochs": 36,
    "spixel_epochs": 16,
    "max_val_images": None,
}
QUICK: dict[str, Any] = {
    "steps": 12,
    "eval_every": 6,
    "seg_epochs": 18,
    "spixel_epochs": 8,
    "max_val_images": 8,
}
#: The superpixel cell size of the pretraining (``--cell-size`` left unset, no checkpoints given).
CELL_SIZE = 8
POS = int_range(1)


def build_parser() -> argparse.ArgumentParser:
    """The command line (every option checked at parse time)."""
    p = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python examples/voc_joint/ablation.py",
        description="Fusion-initialization ablation of the joint DeepLabV3+ + SpixelFCN model on the "
        "synthetic VOC set: every fusion init and the demo's controls fine-tuned from the same pretrained "
        "checkpoints for the same steps, over several seeds; mean +- std tables, paired differences to "
        "transparent init, curves. About 6 minutes on 2 CPU cores, pretraining included (--quick: about 3).",
    )
    p.add_argument(
        "--output-dir",
        type=output_path,
        default=None,
        help="ablation.json / .md / .png and the pretraining go here (default: <cache>/ablation, "
        "<cache>/ablation_quick with --quick)",
    )
    p.add_argument(
        "--data-root",
        type=existing_dir,
        default=None,
        help=DATA_ROOT_HELP,
    )
    p.add_argument(
        "--seg-checkpoint",
        type=existing_file,
        default=None,
        help="pretrained DeepLabV3+ (seg or joint checkpoint); with --spixel-checkpoint: no pretraining",
    )
    p.add_argument(
        "--spixel-checkpoint",
        type=existing_file,
        default=None,
        help="pretrained SpixelFCN (spixel or joint checkpoint); with --seg-checkpoint: no pretraining",
    )
    p.add_argument(
        "--seeds",
        type=int_range(1, 100),
        default=3,
        help="seeds per variant: 0, 1, ... (default: %(default)s)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="what to fine-tune: fusion inits and controls (default: all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a 3-minute version: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    p.add_argument(
        "--steps", type=POS, default=None, help=f"fine-tuning steps per run (default: {DEFAULTS['steps']})"
    )
    p.add_argument(
        "--eval-every",
        type=POS,
        default=None,
        help=f"evaluate every N steps for the mIoU curve (default: {DEFAULTS['eval_every']})",
    )
    p.add_argument(
        "--max-steps",
        type=POS,
        default=None,
        help="cap every stage (pretraining and each fine-tuning) at this many steps (smoke runs)",
    )
    p.add_argument(
        "--seg-epochs",
        type=POS,
        default=None,
        help=f"DeepLabV3+ pretraining epochs (default: {DEFAULTS['seg_epochs']})",
    )
    p.add_argument(
        "--spixel-epochs",
        type=POS,
        default=None,
        help=f"SpixelFCN pretraining epochs (default: {DEFAULTS['spixel_epochs']})",
    )
    p.add_argument(
        "--crop-size", type=int_range(1, SIDE_MAX), default=64, help="training crop (default: %(default)s)"
    )
    p.add_argument(
        "--batch-size",
        type=int_range(2),
        default=8,
        help="training batch, >= 2: BatchNorm (default: %(default)s)",
    )
    p.add_argument(
        "--cell-size",
        type=int_range(1, 1024),
        default=None,
        help=f"superpixel cell size of the pretrained SpixelFCN (default: {CELL_SIZE}; with "
        "--spixel-checkpoint: the checkpoint's, which a value given here must match)",
    )
    p.add_argument(
        "--joint-lr",
        type=float_range(0.0, FACTOR_MAX),
        default=2e-3,
        help="fine-tuning lr of DeepLabV3+; SpixelFCN gets a tenth (default: %(default)s)",
    )
    p.add_argument(
        "--fusion-lr",
        type=float_range(0.0, FACTOR_MAX),
        default=2e-4,
        help="fine-tuning lr of the fusion layers (default: %(default)s)",
    )
    add_fusion_hidden(p)  # (every fusion init gets these widths)
    p.add_argument(
        "--max-val-images",
        type=POS,
        default=None,
        help="evaluate on the first N validation images (default: all)",
    )
    p.add_argument(
        "--threads",
        type=int_range(1, THREADS_MAX),
        default=2,
        help="torch CPU threads (default: %(default)s)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace what the output folder holds (results and pretraining); without it an unfinished "
        "ablation there with the same settings is continued, and a finished one is refused unless this "
        "command asks for runs it lacks (more --seeds, other --variants)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per run instead)")
    return p


def resolve(opts: argparse.Namespace) -> argparse.Namespace:
    """``opts`` with the unset options filled from :data:`DEFAULTS` (or :data:`QUICK`), and without
    checkpoints, ``--cell-size`` from :data:`CELL_SIZE` (with them it is the SpixelFCN checkpoint's:
    :func:`run_ablation` reads it)."""
    out = argparse.Namespace(**vars(opts))
    for key, value in (QUICK if opts.quick else DEFAULTS).items():
        if getattr(out, key) is None:
            setattr(out, key, value)
    if out.cell_size is None and out.spixel_checkpoint is None:
        out.cell_size = CELL_SIZE
    out.run_steps = out.steps if out.max_steps is None else min(out.steps, out.max_steps)
    return out


def variant_options(variant: str, fusion_hidden: Sequence[int] | None = None) -> list[str]:
    """Training-CLI options of one ablation row (all fine-tune the joint stage); ``fusion_hidden``: the
    fusion stack's logical hidden widths of a fusion init (``None``: the training CLI's default)."""
    if variant == "no_superpixels":
        return ["--mode", "none", "--no-fusion"]
    if variant == "no_fusion":
        return ["--mode", "hard", "--no-fusion"]
    if variant not in FUSION_INITS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    widths = [] if fusion_hidden is None else ["--fusion-hidden", *map(str, fusion_hidden)]
    return ["--mode", "hard", "--fusion", "--fusion-init", variant, *widths]


# ------------------------------------------------------------------------------------------------- training
class _Curve(CsvLogger):
    """The engine's logger, kept in memory: one ``{"step", "loss", "ce", "spixel"}`` per step."""

    def __init__(self) -> None:  # no file: every row stays here
        self.enabled, self.writer = True, None
        self.rows: list[dict[str, Any]] = []

    def row(self, **values: Any) -> None:
        entry: dict[str, Any] = {"step": int(values["step"])}
        for key in ("loss", "ce", "spixel"):
            if values.get(key, "") != "":
                entry[key] = float(values[key])
        self.rows.append(entry)

    def close(self) -> None:
        pass


class _Context:
    """What every run shares: data, pretrained checkpoints, validation loader, options."""

    def __init__(
        self,
        opts: argparse.Namespace,
        root: Path,
        out: Path,
        seg: Path,
        spx: Path,
        common: list[str],
        val: Any,
        sha256: dict[str, str],
    ) -> None:
        self.opts, self.root, self.out, self.seg, self.spx = opts, root, out, seg, spx
        self.common, self.val = common, val
        self.step0_cache: dict[str, dict[str, Any]] = {}
        #: the content SHA-256 of ``seg`` and ``spx`` when the ablation started (keys ``"seg"``, ``"spx"``):
        #: every run loads the files again, and must load these
        self.sha256 = sha256

    def check_sources(self) -> None:
        """Refuse a pretrained checkpoint whose content is no longer the one the ablation started from (a
        file replaced during the runs: a training still writing it, a copy over it). Each run loads both
        files, and a step-0 score is shared by the seeds of a control: one ablation from two pretrained
        networks was recorded as complete.

        Raises:
            UsageError: naming the option, the file and both hashes (the finished runs are kept).
        """
        from examples.voc_joint.sources import source_facts

        for key, path, part, option in (
            ("seg", self.seg, "deeplab", "--seg-checkpoint"),
            ("spx", self.spx, "spixel", "--spixel-checkpoint"),
        ):
            expected, now = self.sha256[key], source_facts(path, part, option)[1]
            if now != expected:
                raise UsageError(
                    f"{option} {path} changed during the ablation (sha256 {expected[:16]} when it started, "
                    f"{now[:16]} now): every run must start from the same pretrained networks. The runs "
                    f"finished before it are in {self.out / 'ablation.json'}: restore the file and run "
                    "the same command to continue them, or --overwrite to start over from the new one"
                )


def _scores(res: dict[str, Any]) -> dict[str, Any]:
    return {"miou": res["miou"], "boundary_miou": res["boundary_miou"], "consistency": res["consistency"]}


def finetune(ctx: _Context, variant: str, seed: int, progress: Any = None) -> dict[str, Any]:
    """Fine-tune one variant with one seed; returns its row of ``ablation.json``."""
    from examples.voc_joint import engine, train
    from examples.voc_joint.distributed import DistInfo
    from examples.voc_joint.evaluate import evaluate
    from examples.voc_joint.sampling import begin_epoch
    from examples.voc_joint.train_data import build_train_loader
    from examples.voc_joint.train_options import build_parser, resolve_stage_options

    opts = ctx.opts
    t0 = time.perf_counter()
    argv = [
        *ctx.common,
        "--seg-checkpoint", str(ctx.seg), "--spixel-checkpoint", str(ctx.spx),
        "--lr", str(opts.joint_lr), "--spixel-lr", str(opts.joint_lr / 10),
        "--fusion-lr", str(opts.fusion_lr),
        "--seed", str(seed), "--epochs", str(opts.run_steps), "--log-every", "1", "--no-progress",
        "--output-dir", str(ctx.out),  # nothing is written there: the runs keep no checkpoints
        *variant_options(variant, opts.fusion_hidden),
    ]  # fmt: skip
    args = resolve_stage_options("joint", build_parser().parse_args(argv))
    info = DistInfo(device=torch.device("cpu"))
    loader, sampler = build_train_loader(args, info, ctx.root)
    ctx.check_sources()  # before and after the load: the networks loaded are the ones the ablation records
    state, use_amp = train.build_train_state("joint", args, info, None, sampler.steps_per_epoch)
    ctx.check_sources()

    def score() -> dict[str, Any]:
        # the evaluations leave the RNG alone: the runs do not depend on the evaluation schedule
        with torch.random.fork_rng(devices=[]):
            return _scores(evaluate(state.model, ctx.val, device="cpu", progress=False))

    # step 0 of a model without random draws (the controls) does not depend on the seed
    cached = ctx.step0_cache.get(variant) if variant in CONTROLS else None
    step0 = cached if cached is not None else score()
    if variant in CONTROLS:
        ctx.step0_cache[variant] = step0
    evals = {0: step0}
    logger = _Curve()
    while state.step < opts.run_steps:
        args.max_steps = min(opts.run_steps, (state.step // opts.eval_every + 1) * opts.eval_every)
        begin_epoch(sampler, loader.generator, args.seed, state.epoch, state.samples_in_epoch)
        before = state.step
        try:
            engine.train_one_epoch(
                state,
                loader,
                args,
                info,
                steps_per_epoch=sampler.steps_per_epoch,
                global_batch=sampler.global_batch,
                logger=logger,
                use_amp=use_amp,
            )
        except engine.NonFiniteError as exc:  # its advice names checkpoints and --amp: the runs have neither
            raise engine.NonFiniteError(
                f"[ablation] run {variant}, seed {seed}: {exc.finding}: the run stopped {exc.stopped}; "
                f"the runs finished before it are in {ctx.out / 'ablation.json'} and "
                f"{_same_command(opts.overwrite)} continues from them. Lower --fusion-lr or --joint-lr, or "
                "leave this variant out (--variants)",
                exc.finding,
                stopped=exc.stopped,
            ) from None
        if progress is not None:
            progress.update(state.step - before)
        if state.step == args.max_steps:
            evals[state.step] = score()
    curve: list[dict[str, Any]] = [{"step": 0, "miou": step0["miou"]}]
    for entry in logger.rows:
        if entry["step"] in evals:
            entry["miou"] = evals[entry["step"]]["miou"]
        curve.append(entry)
    final = evals[state.step]
    return {
        "init": variant,
        "seed": seed,
        "step0_miou": step0["miou"],
        "miou": final["miou"],
        "boundary_miou": final["boundary_miou"],
        "step0_boundary_miou": step0["boundary_miou"],
        "consistency": final["consistency"],
        "steps": state.step,
        "curve": curve,
        "seconds": time.perf_counter() - t0,
    }


def _same_command(overwrite: bool) -> str:
    """The command that continues a stopped ablation: the same one, less ``--overwrite`` (with it a rerun
    deletes the finished runs and the pretraining and starts over)."""
    return "the same command without --overwrite" if overwrite else "the same command"


def _stop_note(argv: Sequence[str]) -> str:
    """What the line of an ablation stopped by a signal says after it, for the command line ``argv``: what is
    kept, and the command that continues.

    Example:
        >>> _stop_note(["--quick", "--overwrite"]).split("; ")[1]
        'the same command without --overwrite continues with the others'
    """
    return (
        "ablation.json keeps the finished runs (a stopped pretraining: its checkpoint in pretrain/); "
        f"{_same_command('--overwrite' in argv)} continues with the others"
    )


#: The ``ablation.json`` this process completed (its last write): a stop after it stops the printing only.
_COMPLETED: list[Path] = []


def _stop_note_now(argv: Sequence[str]) -> str:
    """:func:`_stop_note`, or, for an ablation stopped after this process wrote its complete record (while it
    printed its table), where the finished ablation is: the same command would be refused, not continue it."""
    if not _COMPLETED:
        return _stop_note(argv)
    return f"the ablation had finished: {_COMPLETED[-1]} and its ablation.md and ablation.png hold every run"


# ---------------------------------------------------------------------------------------------------- main
#: The settings that name the pretrained checkpoints and their content (known once the pretraining is done).
_CHECKPOINT_SETTINGS = (
    "seg_checkpoint",
    "seg_checkpoint_sha256",
    "spixel_checkpoint",
    "spixel_checkpoint_sha256",
)
#: The settings that are paths: recorded absolute (``resume.absolute_path``, as the training CLI records its
#: path options), so that a continuation from another working folder compares the folders and files they name.
_PATH_SETTINGS = ("data_root", "seg_checkpoint", "spixel_checkpoint")


def _settings(opts: argparse.Namespace, root: Path, seg: Path, spx: Path, val_images: int) -> dict[str, Any]:
    """Everything an ablation's rows depend on: :func:`_run_settings` and the pretrained checkpoints' absolute
    paths with the SHA-256 of their content (the hash each checkpoint records, verified on reading): a
    pretraining trained further, or a ``--seg-checkpoint`` file replaced, gives other weights under the same
    path."""
    from examples.voc_joint.resume import absolute_path
    from examples.voc_joint.sources import source_facts

    return {
        "seg_checkpoint": str(absolute_path(seg)),
        "seg_checkpoint_sha256": source_facts(seg, "deeplab", "--seg-checkpoint")[1],
        "spixel_checkpoint": str(absolute_path(spx)),
        "spixel_checkpoint_sha256": source_facts(spx, "spixel", "--spixel-checkpoint")[1],
        **_run_settings(opts, root, val_images),
    }


def _run_settings(opts: argparse.Namespace, root: Path, val_images: int) -> dict[str, Any]:
    """The settings known before any pretraining: all of :func:`_settings` but
    :data:`_CHECKPOINT_SETTINGS`; the pretraining's epochs and step cap are None with given checkpoints."""
    from examples.voc_joint.resume import absolute_path

    pretrains = opts.seg_checkpoint is None
    return {
        "data_root": str(absolute_path(root)),
        "seg_epochs": opts.seg_epochs if pretrains else None,
        "spixel_epochs": opts.spixel_epochs if pretrains else None,
        "pretrain_max_steps": opts.max_steps if pretrains else None,
        "steps": opts.run_steps,
        "eval_every": opts.eval_every,
        "val_images": val_images,
        "crop_size": opts.crop_size,
        "batch_size": opts.batch_size,
        "cell_size": opts.cell_size,  # the pretrained SpixelFCN's (run_ablation reads a given checkpoint's)
        "joint_lr": opts.joint_lr,
        "spixelfcn_lr": opts.joint_lr / 10,
        "fusion_lr": opts.fusion_lr,
        "fusion_hidden": list(opts.fusion_hidden),
        "threads": opts.threads,
        "torch": torch.__version__,
    }


def settings_differences(
    recorded: Any, current: dict[str, Any], label: str = "unfinished ablation"
) -> list[str]:
    """One line per setting that differs between an unfinished ablation's ``recorded`` settings and the
    ``current`` ones, with both values (``torch``: the torch version, whose kernels may change between
    releases); an unreadable record is one difference.

    Example:
        >>> settings_differences({"steps": 40, "torch": "2.11.0"}, {"steps": 40, "torch": "2.14.1"})
        ["  torch: '2.11.0' (unfinished ablation) -> '2.14.1' (now)"]
    """
    if not isinstance(recorded, dict):
        return [f"  settings: {recorded!r} ({label}) -> {current!r} (now)"]
    old, new = ({k: repr(v) for k, v in d.items()} for d in (recorded, current))
    old_text, new_text = "(not recorded)", "(no such setting)"
    return [
        f"  {key}: {old.get(key, old_text)} ({label}) -> {new.get(key, new_text)} (now)"
        for key in sorted(set(old) | set(new))
        if key not in old or key not in new or recorded[key] != current[key]
    ]


def _check_continuation(previous: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Refuse to continue the unfinished ablation ``previous`` (the content of ``path``) with the settings
    ``current``, all of :func:`_settings` or those known before the pretraining (:func:`_run_settings`: the
    recorded :data:`_CHECKPOINT_SETTINGS` are then not compared), when one of them differs. The paths
    (:data:`_PATH_SETTINGS`) are compared absolute: a relative one that an earlier version recorded as typed
    is taken relative to the current working folder.

    Raises:
        UsageError: naming each differing setting with both values (nothing was changed).
    """
    from examples.voc_joint.metrics import dumps
    from examples.voc_joint.resume import absolute_path

    recorded = previous.get("settings")
    if isinstance(recorded, dict) and "fusion_hidden" not in recorded:  # before --fusion-hidden: the default
        recorded = {**recorded, "fusion_hidden": list(DEFAULT_FUSION_HIDDEN)}
    if isinstance(recorded, dict) and not set(_CHECKPOINT_SETTINGS) <= set(current):
        recorded = {k: v for k, v in recorded.items() if k not in _CHECKPOINT_SETTINGS}
    if isinstance(recorded, dict):  # paths an earlier version recorded as typed: relative to this folder
        recorded = {
            k: str(absolute_path(v)) if k in _PATH_SETTINGS and isinstance(v, str) else v
            for k, v in recorded.items()
        }
        # a checkpoint is its content: the same SHA-256 under another path (the output folder renamed or
        # moved, with its pretraining) is the same checkpoint; the settings then record the new path
        for name in ("seg_checkpoint", "spixel_checkpoint"):
            sha = f"{name}_sha256"
            if sha in current and recorded.get(sha) == current[sha] and name in current:
                recorded = {**recorded, name: current[name]}
    kind = "finished" if previous.get("complete") else "unfinished"
    differences = settings_differences(recorded, json.loads(dumps(current)), f"{kind} ablation")
    if differences:
        raise UsageError(
            f"{path} holds {'a' if kind == 'finished' else 'an'} {kind} ablation with other settings:\n"
            + "\n".join(differences)
            + "\n--overwrite replaces it, or choose another --output-dir (nothing was changed)"
        )


class _Progress:
    """An overall tqdm bar over every fine-tuning step (or plain lines with ``--no-progress``)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="step", desc="ablation", dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the platform has none: Windows)."""
    if not hasattr(os, "getloadavg"):
        return None
    try:
        return list(os.getloadavg())
    except OSError:  # not obtainable
        return None


def _load_text(load: list[float] | None) -> str:
    """The 1-minute load average of :func:`_load_average` for a message (``n/a`` when unknown)."""
    return "n/a" if load is None else f"{load[0]:.2f}"


def _cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``; else ``platform.processor()``; None if unknown)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _commit() -> str | None:
    """The checkout's git commit (None outside a git checkout)."""
    import subprocess

    try:
        res = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    return res.stdout.strip() or None


def _run_line(row: dict[str, Any]) -> str:
    losses = [p["loss"] for p in row["curve"] if "loss" in p]
    loss = f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
    return (
        f"{row['init']:<14} seed {row['seed']}: mIoU {100 * row['step0_miou']:5.1f} % -> "
        f"{100 * row['miou']:5.1f} % (step 0 -> {row['steps']}){loss}, {row['seconds']:.0f} s"
    )


def check_pretrained(seg: Path, spx: Path) -> int:
    """Load both pretrained networks as the joint stage does (:func:`examples.voc_joint.train._pretrained`);
    returns the superpixel cell size of the SpixelFCN.

    Raises:
        CheckpointError: the training CLI's message, naming the option (``--seg-checkpoint: refusing
            checkpoint ...``): an unreadable, corrupt or wrong-stage file.
    """
    from examples.voc_joint.models import SpixelFCN
    from examples.voc_joint.train import _pretrained

    _pretrained(seg, "deeplab", "--seg-checkpoint")
    return cast(SpixelFCN, _pretrained(spx, "spixel", "--spixel-checkpoint")).cell_size


def run_ablation(opts: argparse.Namespace) -> dict[str, Any]:
    """Run the ablation (see the module docstring); returns the content of ``ablation.json``.

    Raises:
        UsageError: the output folder is locked by another run, or holds a finished ablation (or one with
            other settings, or an ``ablation.json`` that is no JSON object, or a pretraining with other
            options) and ``--overwrite`` was not given.
        CheckpointError: ``--seg-checkpoint`` or ``--spixel-checkpoint`` is not a usable checkpoint (checked
            before anything is printed or written).
    """
    from examples.voc_joint import data
    from examples.voc_joint.demo import check_user_data, common_args, pretrain, val_loader
    from examples.voc_joint.distributed import DistInfo
    from examples.voc_joint.locking import FolderLock
    from examples.voc_joint.metrics import dumps

    opts = resolve(opts)
    if opts.seg_checkpoint is not None:  # a bad file fails now, as in train.py: before any plan or output
        cell_size = check_pretrained(Path(opts.seg_checkpoint), Path(opts.spixel_checkpoint))
        if opts.cell_size not in (None, cell_size):
            raise UsageError(
                f"--cell-size {opts.cell_size} contradicts --spixel-checkpoint {opts.spixel_checkpoint} "
                f"(cell size {cell_size}): the runs fine-tune the checkpoint's SpixelFCN; leave --cell-size "
                f"out or give {cell_size}"
            )
        opts.cell_size = cell_size
    t_start, load_start = time.perf_counter(), _load_average()
    # the code and the machine the runs start on (read once: the checkout may get new commits meanwhile)
    machine = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "commit": _commit(),
    }
    torch.set_num_threads(opts.threads)
    root = Path(opts.data_root) if opts.data_root is not None else data.ensure_synthetic_voc()
    check_user_data(opts)  # a user's --data-root: train.py's checks, before anything is written
    out = _output_dir(opts)
    paths = {k: out / f"ablation.{k}" for k in ("json", "md", "png")}
    with FolderLock(out):
        previous: dict[str, Any] | None = None
        extends = 0  # the runs a finished ablation's results lack that this command asks for
        if opts.overwrite and opts.seg_checkpoint is None:  # first: refused while a run holds a stage folder
            _clear_pretraining(out / "pretrain")
        if paths["json"].exists():
            if opts.overwrite:
                for p in paths.values():
                    p.unlink(missing_ok=True)
            else:
                previous = _read_previous(paths["json"])
                if previous.get("complete"):
                    extends = _check_finished(previous, opts, out, paths["json"])
        val = val_loader(root, opts.max_val_images)
        val_images = len(val.dataset)  # type: ignore[arg-type]  # a Subset
        if previous is not None:  # before the pretraining, which --resume would train further in place
            _check_continuation(previous, _run_settings(opts, root, val_images), paths["json"])
        if extends:
            print(
                f"[ablation] {out} holds a finished ablation without {counted(extends, 'run')} of this plan: "
                "continuing it (its finished runs are reused)",
                flush=True,
            )
        print(f"[ablation] data: {root}\n[ablation] outputs: {out}", flush=True)
        common = common_args(opts, root)
        if opts.seg_checkpoint is not None:
            seg, spx = Path(opts.seg_checkpoint), Path(opts.spixel_checkpoint)
            print(f"[ablation] pretrained checkpoints: {seg}, {spx}", flush=True)
        else:
            reuse = ["--overwrite"] if opts.overwrite else ["--resume"]  # a finished pretraining is reused
            if not opts.overwrite:  # one left without ablation.json: stopped in it or in the first run
                _check_pretraining(opts, out / "pretrain")
            try:
                seg, spx = pretrain(opts, [*common, *reuse], out / "pretrain", DistInfo(), tag="ablation")
            except UsageError as exc:  # the training CLI's advice names its own options
                raise UsageError(_pretraining_refusal(str(exc), out / "pretrain")) from None
        settings = _settings(opts, root, seg, spx, val_images)
        rows: list[dict[str, Any]] = []
        earlier = _sessions(previous) if previous is not None else []  # the sessions that ran before this one
        if previous is not None:  # the checkpoints too: their paths and content
            _check_continuation(previous, settings, paths["json"])
            commits = {s["machine"].get("commit") for s in earlier if isinstance(s.get("machine"), dict)}
            if commits - {machine["commit"]}:
                print(
                    f"[ablation] note: the runs so far ran on commit {', '.join(sorted(map(str, commits)))}, "
                    f"this session's on {machine['commit']}: ablation.json records each session's "
                    "('sessions')",
                    flush=True,
                )
            # with the runs an earlier continuation left out: a later plan that asks for them reuses them
            rows = [reloaded_row(r) for r in [*previous.get("rows", []), *previous.get("left_out", [])]]
        plan = _plan(opts)
        # finished runs outside this plan (fewer --seeds or --variants) are not in its summary, but kept
        planned = set(plan)
        left_out = [r for r in rows if (r["init"], int(r["seed"])) not in planned]
        rows = [r for r in rows if (r["init"], int(r["seed"])) in planned]
        if left_out:
            verb = "is" if len(left_out) == 1 else "are"
            print(
                f"[ablation] {counted(len(left_out), 'finished run')} {verb} not in this plan ("
                + ", ".join(f"{r['init']} seed {int(r['seed'])}" for r in left_out)
                + "): left out of the summary, kept in ablation.json under 'left_out'",
                flush=True,
            )
        done = {(r["init"], int(r["seed"])) for r in rows}
        todo = [(v, s) for v, s in plan if (v, s) not in done]
        if done and todo:
            print(
                f"[ablation] continuing: {len(plan) - len(todo)} of {len(plan)} runs already done", flush=True
            )
        print(
            f"\n[ablation] {counted(len(todo), 'fine-tuning run')} "
            f"({counted(len(opts.variants), 'variant')} x {counted(opts.seeds, 'seed')}) "
            f"of {counted(opts.run_steps, 'step')}; "
            f"evaluation on {counted(settings['val_images'], 'validation image')} at "
            f"step 0, every {counted(opts.eval_every, 'step')} and at the end",
            flush=True,
        )
        # the fine-tuning runs take the model options from the checkpoints (given ones may differ)
        ctx = _Context(
            opts,
            root,
            out,
            seg,
            spx,
            common_args(opts, root, model=False),
            val,
            {"seg": settings["seg_checkpoint_sha256"], "spx": settings["spixel_checkpoint_sha256"]},
        )
        progress = _Progress(len(todo) * opts.run_steps, not opts.no_progress)
        data_name = SYNTHETIC if opts.data_root is None else f"data: {root}"
        result: dict[str, Any] = {}
        ran_here = 0  # the runs this session finished

        def save(complete: bool) -> None:
            load_end = _load_average()
            session = {
                "machine": machine,
                "load_average_start": load_start,
                "load_average_end": load_end,
                "seconds": time.perf_counter() - t_start,
                "runs": ran_here,
            }
            sessions = [*earlier, session]
            result.update(
                {
                    "settings": settings,
                    "data": data_name,  # the titles of ablation.md and ablation.png
                    "complete": complete,
                    "rows": rows,
                    **({"left_out": left_out} if left_out else {}),
                    "summary": summarize(rows) if rows else [],
                    # over every session of a continued ablation (each one's in "sessions")
                    "seconds": sum(float(s["seconds"] or 0.0) for s in sessions),
                    "load_average_start": sessions[0].get("load_average_start"),
                    "load_average_end": load_end,
                    "machine": sessions[0]["machine"],  # the code and machine the runs started on
                    "sessions": sessions,
                }
            )
            write_text_atomic(paths["json"], dumps(result) + "\n")

        t_runs = time.perf_counter()
        try:
            for k, (variant, seed) in enumerate(todo, 1):
                row = finetune(ctx, variant, seed, progress)
                rows.append(row)
                ran_here += 1
                save(complete=False)
                eta = (time.perf_counter() - t_runs) / k * (len(todo) - k)
                progress.write(f"[ablation] {k}/{len(todo)} {_run_line(row)}; about {eta / 60:.1f} min left")
        except KeyboardInterrupt:
            # a stop: this session is recorded too (its time, the runs it finished), also one stopped in its
            # first run (a stop in the pretraining, before the settings are known, is not)
            try:
                save(complete=False)
            except OSError as exc:  # (a full disk): the stop stays a stop; the record is the last run's
                print(
                    f"[ablation] this session could not be recorded in {paths['json']} ({exc}); it keeps the "
                    "runs finished before",
                    file=sys.stderr,
                    flush=True,
                )
            raise
        finally:
            progress.close()
        rows.sort(key=lambda r: (VARIANTS.index(r["init"]), r["seed"]))
        summary = summarize(rows) if rows else []
        write_text_atomic(paths["md"], format_markdown(summary, settings, data=data_name))
        plot(rows, paths["png"], figure_title(settings, opts.seeds, data=data_name))
        # "complete" last: an ablation stopped while it wrote the .md or the .png continues (nothing left to
        # train) instead of being a finished one without them, which only --overwrite (all runs again) cleared
        save(complete=True)
        _COMPLETED.append(paths["json"])
    print("\n" + paths["md"].read_text(encoding="utf-8"))
    elapsed = time.perf_counter() - t_start
    total = (
        f"; {result['seconds']:.0f} s over its {len(result['sessions'])} sessions"
        if len(result["sessions"]) > 1
        else ""
    )
    print(
        f"[ablation] finished in {elapsed:.0f} s{total} (load average {_load_text(load_start)} at the start, "
        f"{_load_text(_load_average())} at the end); {paths['json']}, {paths['md']}, {paths['png']}"
    )
    return result


def _plan(opts: argparse.Namespace) -> list[tuple[str, int]]:
    """The runs of the command ``opts``, ``(variant, seed)`` in the order they run (seed by seed)."""
    return [(v, s) for s in range(opts.seeds) for v in opts.variants]


def _check_finished(previous: dict[str, Any], opts: argparse.Namespace, out: Path, path: Path) -> int:
    """Refuse to run again into ``out``, which holds the finished ablation ``previous`` (the content of
    ``path``), when its results hold every run of the new plan already; a plan that asks for runs they lack
    (more ``--seeds``, other ``--variants``, runs an earlier continuation left out) continues it, reusing its
    finished runs (its settings are then compared as an unfinished one's).

    Returns:
        int: how many runs of the plan its results lack (at least 1).

    Raises:
        UsageError: every run of the plan is finished in ``previous`` (nothing was changed).
    """
    summarized = {(r["init"], r["seed"]) for r in previous.get("rows", [])}  # (left out: not in its results)
    missing = [run for run in _plan(opts) if run not in summarized]
    if not missing:
        raise UsageError(
            f"{out} holds a finished ablation ({path}) with every run of this one; --overwrite replaces it, "
            "or choose another --output-dir (nothing was changed)"
        )
    return len(missing)


def _sessions(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """The sessions of an unfinished ablation's record (checked by :func:`_read_previous`); one made of its
    top-level ``machine``, load averages and ``seconds`` for a record written before they were kept."""
    if "sessions" in previous:
        return [dict(s) for s in previous["sessions"]]
    runs = len(previous.get("rows", [])) + len(previous.get("left_out", []))
    keys = ("machine", "load_average_start", "load_average_end", "seconds")
    return [{**{k: previous.get(k) for k in keys}, "runs": runs}]


def _record_problem(previous: dict[str, Any]) -> str | None:
    """What is wrong with the runs and sessions of an ablation's record, in words (None: nothing): rows the
    summary and the figure cannot read (an ``init`` that is no variant, a ``seed`` that is no int, a missing
    score or curve), a run of one init and seed twice (in ``rows`` and ``left_out`` together), sessions
    without their machine or time (``null`` for either, as a record written before the sessions were kept
    gives them, is fine)."""
    for key in ("rows", "left_out"):
        rows = previous.get(key, [])
        if not isinstance(rows, list):
            return f"its {key!r} is no list of runs: {rows!r}"[:200]
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                return f"{key}[{i}] is no run: a JSON {type(row).__name__}, not an object"
            init, seed = row.get("init"), row.get("seed")
            if not (_drawable(row) and init in VARIANTS and type(seed) is int and seed >= 0):
                return (
                    f"{key}[{i}] is no run: init {init!r}, seed {seed!r}, curve "
                    f"{'of steps' if _drawable(row) else repr(row.get('curve'))[:60]} (expected an init of "
                    f"{list(VARIANTS)}, an int seed >= 0 and a curve of points with steps)"
                )
        try:
            summarize([reloaded_row(r) for r in rows])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return f"its {key!r} cannot be summarized ({type(exc).__name__}: {exc})"
    # one run per (init, seed) over both lists, as this script writes them: the summary and the figure would
    # keep the last copy without a word, and a continuation count it twice among the runs done
    first: dict[tuple[str, int], str] = {}
    for key in ("rows", "left_out"):
        for i, row in enumerate(previous.get(key, [])):
            run, where = (row["init"], row["seed"]), f"{key}[{i}]"
            if run in first:
                return f"{where} repeats the run of {first[run]}: init {run[0]!r}, seed {run[1]}"
            first[run] = where
    sessions = previous.get("sessions", [])
    if not isinstance(sessions, list):
        return f"its 'sessions' is no list of sessions: {sessions!r}"[:200]
    for i, session in enumerate(sessions):
        seconds = session.get("seconds", "missing") if isinstance(session, dict) else None
        if not (
            isinstance(session, dict)
            and isinstance(session.get("machine", "missing"), (dict, type(None)))
            and isinstance(seconds, (int, float, type(None)))
            and not isinstance(seconds, bool)
        ):
            return (
                f"sessions[{i}] is no session: {session!r}"[:200]
                + " (expected an object with its machine and seconds)"
            )
    return None


def _read_previous(path: Path) -> dict[str, Any]:
    """The content of the ``ablation.json`` at ``path`` that a run without ``--overwrite`` finds.

    Raises:
        UsageError: the file is no JSON object (empty, cut short, not UTF-8: a file this script did not write,
            which writes it whole), or one whose runs or sessions are damaged (:func:`_record_problem`),
            naming it and what it holds (nothing was changed).
    """
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        found = f"not JSON: {exc}"
    else:
        if isinstance(previous, dict):
            problem = _record_problem(previous)
            if problem is None:
                return cast(dict[str, Any], previous)
            found = f"damaged: {problem}"
        else:
            kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
            found = f"a JSON {kinds.get(type(previous), 'null')}, not an object"
    raise UsageError(
        f"{path} is not an ablation's record ({found}); --overwrite replaces it, or choose another "
        "--output-dir (nothing was changed)"
    )


def _clear_pretraining(folder: Path) -> None:
    """``--overwrite``: delete both pretraining stages' old runs in ``folder`` before the first one starts (as
    ``train.py --stage all --overwrite`` does): each stage cleared only its own folder when it started, so an
    ablation stopped in the DeepLabV3+ pretraining left the old SpixelFCN, which the continuation (the same
    command without ``--overwrite``) then reused as if this pretraining had made it."""
    import contextlib

    from examples.voc_joint.locking import FolderLock
    from examples.voc_joint.resume import clear_run

    stages = [folder / stage for stage in ("seg", "spixel") if (folder / stage).is_dir()]
    with contextlib.ExitStack() as held:
        # every lock first: a training run in either folder refuses this, and nothing is deleted
        for stage in stages:
            held.enter_context(FolderLock(stage))
        for stage in stages:
            clear_run(stage)


def _check_pretraining(opts: argparse.Namespace, folder: Path) -> None:
    """Refuse to reuse the pretraining in ``folder`` (``--resume``) when a stage's checkpoint records other
    epochs or another ``--max-steps`` than ``opts``: the training CLI would train a finished stage further
    (a stopped one with a changed schedule), and ``ablation.json`` would record the new epochs for it.
    The same for another ``--threads`` (the checkpoint's ``cpu_threads``): CPU results depend on it, and
    ``ablation.json`` would record the new count for a pretraining done with the old one.

    Raises:
        UsageError: naming each differing option with both values (nothing was changed).
    """
    from examples.voc_joint.checkpoint import load_checkpoint

    differences = []
    for stage, option, epochs in (
        ("seg", "--seg-epochs", opts.seg_epochs),
        ("spixel", "--spixel-epochs", opts.spixel_epochs),
    ):
        path = folder / stage / "checkpoint.pt"
        if not path.is_file():
            continue
        ckpt = load_checkpoint(path, expect_stage=stage)
        recorded = ckpt["config"].get("args", {})
        for name, key, now in ((option, "epochs", epochs), ("--max-steps", "max_steps", opts.max_steps)):
            if key in recorded and recorded[key] != now:
                differences.append(f"  {name}: {recorded[key]!r} ({path}) -> {now!r} (now)")
        threads = ckpt.get("cpu_threads")  # CPU results depend on it, and ablation.json records --threads
        if isinstance(threads, int) and threads != opts.threads:
            differences.append(f"  --threads: {threads!r} ({path}) -> {opts.threads!r} (now)")
    if differences:
        raise UsageError(
            f"{folder} holds a pretraining with other options (an ablation stopped before its first run "
            "finished):\n"
            + "\n".join(differences)
            + "\nreusing it would train it further or anew under the new options: give its values, "
            "--overwrite to pretrain again, or choose another --output-dir (nothing was changed)"
        )


def _pretraining_refusal(text: str, folder: Path) -> str:
    """The training CLI's refusal ``text`` to reuse the pretraining in ``folder``, with the ablation's advice
    (it has no ``--allow-option-changes``) in place of the training CLI's.

    Example:
        >>> refusal = ("--resume p/seg/checkpoint.pt (step 4): options differ from the checkpoint's "
        ...            "record:\\n  --crop-size: 32 (checkpoint) -> 48 (now)\\nGive the checkpoint's "
        ...            "values, or --allow-option-changes ...")
        >>> _pretraining_refusal(refusal, Path("p")).splitlines()[-1]
        'give its values, --overwrite to pretrain again, or choose another --output-dir (nothing was changed)'
    """
    head, found, _ = text.partition("\nGive the checkpoint's values, or --allow-option-changes")
    if not found:
        return text
    return (
        f"{folder} holds a pretraining with other options: {head}\n"
        "give its values, --overwrite to pretrain again, or choose another --output-dir (nothing was changed)"
    )


def _output_dir(opts: argparse.Namespace) -> Path:
    """Where the ablation writes: ``--output-dir``, or ``ablation`` (``ablation_quick``) in the cache."""
    from examples.voc_joint import data

    default = data.DEFAULT_CACHE / ("ablation_quick" if opts.quick else "ablation")
    return Path(opts.output_dir) if opts.output_dir is not None else default


def check_args(parser: argparse.ArgumentParser, opts: argparse.Namespace) -> None:
    """Checks that involve several options (each option alone was checked by its ``type=``), and that the
    output folder can be written (``cli.check_output_dir``); one process (``cli.check_one_process``)."""
    check_one_process(parser, "ablation.py")
    if (opts.seg_checkpoint is None) != (opts.spixel_checkpoint is None):
        parser.error("--seg-checkpoint and --spixel-checkpoint go together (or neither: pretrain here)")
    if opts.seg_checkpoint is not None:
        for name in ("seg_epochs", "spixel_epochs"):
            if getattr(opts, name) is not None:
                parser.error(
                    f"{flag(name)} {getattr(opts, name)} with --seg-checkpoint / "
                    "--spixel-checkpoint: the epochs are those of the pretraining, which the checkpoints "
                    "replace; drop it"
                )
    if len(set(opts.variants)) != len(opts.variants):
        parser.error(f"--variants lists a variant twice: {opts.variants}")
    from examples.voc_joint.train_options import CHECKPOINT_MODEL_OPTIONS

    # a pretraining here has the training CLI's classes; a given --seg-checkpoint's are checked by the model
    classes = CHECKPOINT_MODEL_OPTIONS["num_classes"].default if opts.seg_checkpoint is None else None
    error = fusion_hidden_error(opts.fusion_hidden, classes)
    if error:
        parser.error(error)
    if opts.fusion_hidden != list(DEFAULT_FUSION_HIDDEN) and not set(opts.variants) & set(FUSION_INITS):
        parser.error(
            f"--fusion-hidden {' '.join(map(str, opts.fusion_hidden))} with --variants "
            f"{' '.join(opts.variants)}: no run has a fusion stack; drop --fusion-hidden or add a fusion init"
        )
    check_output_dir(parser, _output_dir(opts), given=opts.output_dir is not None)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv`` and run the ablation (exit status 2 for a command that cannot run, 1 for what fails
    while it runs: :func:`~examples.voc_joint.cli.run_command`)."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    check_args(parser, opts)
    return run_command(parser, lambda: run_ablation(opts))


if __name__ == "__main__":
    from examples.voc_joint.console import tolerant_output
    from examples.voc_joint.signals import run_stoppable

    tolerant_output()  # a path or a character the console cannot encode is escaped, not fatal

    # SIGINT / SIGTERM / SIGHUP: one line, exit status 130 / 143 / 129 (a pretraining writes its checkpoint
    # first)
    def _cli() -> int:
        main()
        return 0

    sys.exit(run_stoppable(_cli, build_parser().prog, lambda: _stop_note_now(sys.argv[1:])))
