"""Training and evaluation engine of the VOC joint pipeline: losses, one step, one epoch, logging.

:func:`train_one_epoch` runs the optimizer steps of one epoch (or of its remainder after a resume) on a
:class:`TrainState` and returns why it stopped: the epoch ended, ``--max-steps`` was reached, or a signal
asked to stop. It stops only after a completed step, so the state it leaves is always the state "as of the
last completed step", which is what the caller saves. Every step checks that the loss, the gradients (without
AMP, whose scaler skips overflowing steps by design), the weights and the running statistics are finite and
raises :class:`NonFiniteError` before the update otherwise, and the state an epoch returns is checked once
more (:func:`check_updated_state`: the last update has no next step to find it); under DDP the processes
agree on every decision (one small all-reduce per step).

:func:`evaluate_checkpoint` scores a finished stage on the validation split and writes ``eval.json``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import get_total_norm
from torch.utils.checkpoint import checkpoint

from examples.voc_joint import faults
from examples.voc_joint.atomic import os_error_reason, os_error_saying, write_text_atomic
from examples.voc_joint.cli import UsageError
from examples.voc_joint.data import IGNORE_INDEX
from examples.voc_joint.distributed import DistInfo, unwrap_model
from examples.voc_joint.signals import InterruptGuard
from examples.voc_joint.wording import counted

__all__ = [
    "CsvLogger",
    "NonFiniteError",
    "TrainState",
    "check_updated_state",
    "close_loader_iterator",
    "cross_entropy",
    "divergence_advice",
    "evaluate_checkpoint",
    "evaluation_current",
    "evaluation_options",
    "set_bn_eval",
    "stage_loss",
    "superpixel_loss",
    "train_one_epoch",
    "train_step",
]


class NonFiniteError(FloatingPointError):
    """The loss, a gradient, a weight or a running statistic became NaN or infinite: training stops, before
    the update where a step's checks find it, after it where the update itself made the weights so.

    Attributes:
        finding: what was found, without the advice of the message (``"non-finite gradients at step 3
            (epoch 1; loss 0.7)"``), for callers that keep no checkpoint and say so themselves.
        stopped: when training stopped, for those messages: ``"before the update"`` (nothing of the step was
            applied but the BatchNorm statistics of its forward) or ``"after the update"`` (the step's update
            made the weights non-finite; the model in memory holds them, no checkpoint does).
    """

    def __init__(self, message: str, finding: str = "", *, stopped: str = "before the update") -> None:
        super().__init__(message)
        self.finding = finding or message
        self.stopped = stopped


def divergence_advice(use_amp: bool) -> str:
    """The advice of a :class:`NonFiniteError`'s message: ``--amp`` is named only where the run uses it."""
    if use_amp:
        return "Lower the learning rate, check the data, or try without --amp"
    return "Lower the learning rate or check the data"


@dataclass
class TrainState:
    """The live training state that a checkpoint records.

    Attributes:
        stage: ``"seg"``, ``"spixel"`` or ``"joint"``.
        model: the model (never wrapped).
        train_model: what the forward pass calls (``model`` or its ``DistributedDataParallel`` wrapper).
        optimizer, scheduler, scaler: their states go into the checkpoint.
        epoch: completed epochs.
        step: completed optimizer steps.
        samples_in_epoch: samples of the current epoch done by all processes together.
        option_changes: option changes accepted on resume (recorded in every checkpoint).
        sources: joint stage: the seg / spixel checkpoints it started from, with their SHA-256 (recorded in
            every checkpoint as ``config["sources"]``).
        elapsed_s: seconds of training that led to this state, over every resume (the ``elapsed_s`` of
            ``log.csv`` continues from it).
        train_data: the training list the run trains on, ``{"images": n, "names_sha256": ...}``
            (:func:`~examples.voc_joint.train_data.train_list_fingerprint`), recorded in every checkpoint as
            ``config["train_data"]`` and compared on ``--resume``.
    """

    stage: str
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    epoch: int = 0
    step: int = 0
    samples_in_epoch: int = 0
    option_changes: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    train_data: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------------ loss
def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over the non-ignored pixels (0 when every pixel is ignored).

    Args:
        logits (Tensor[B, C, H, W]): class scores.
        target (LongTensor[B, H, W]): labels in ``0..C-1`` or 255 (ignored).

    Example:
        >>> float(cross_entropy(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 255]]])))  # log 2 on one pixel
        0.6931471824645996
    """
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp_min(1)


def superpixel_loss(
    assoc: Tensor,
    target: Tensor,
    cell_size: int,
    *,
    pos_weight: float,
    num_classes: int,
    recompute: bool = False,
) -> Tensor:
    """``sparse_ops.spixel_loss(...).total`` of the association, in float32.

    Args:
        assoc (Tensor[B, 9, H, W]): SpixelFCN's association.
        target (LongTensor[B, H, W]): labels (255 ignored).
        cell_size (int): grid cell size.
        pos_weight (float): weight of the position term.
        num_classes (int): C (the one-hot width; passing it avoids a host-device synchronisation).
        recompute (bool): in training, keep nothing of the loss for backward but its inputs (``assoc`` is
            saved by SpixelFCN's softmax anyway) and recompute its forward in backward (activation
            checkpointing): the loss's own activations (one-hot targets, pooled centres, reconstructions at
            full resolution) are not kept, for one more forward pass of the loss. Same values and gradients.

    The loss reads no tensor value on the host (``validate=False``: the labels come checked from the data
    sets, and a non-finite association gives a non-finite loss, which :func:`train_step` catches).
    """
    import sparse_ops

    def total(q: Tensor) -> Tensor:
        # not validated (no host-device synchronisation mid-step): the data sets check every label value
        # when they read a mask, and a NaN or inf association makes the loss non-finite, which the step
        # checks before any update
        return sparse_ops.spixel_loss(
            q.float(), target, cell_size, pos_weight=pos_weight, num_classes=num_classes, validate=False
        ).total

    if recompute and torch.is_grad_enabled() and assoc.requires_grad:
        out: Tensor = checkpoint(total, assoc, use_reentrant=False, preserve_rng_state=False)
        return out
    return total(assoc)


def stage_loss(
    stage: str, model: nn.Module, batch: dict[str, Any], args: argparse.Namespace, device: torch.device
) -> tuple[Tensor, dict[str, Tensor]]:
    """Forward one batch and return ``(loss, parts)`` (``parts``: detached ``ce`` and/or ``spixel`` terms).

    Raises:
        ValueError: ``stage`` is not ``"seg"``, ``"spixel"`` or ``"joint"``.
    """
    if stage not in ("seg", "spixel", "joint"):  # any other was run as "joint": a TypeError from the forward
        raise ValueError(f"stage must be 'seg', 'spixel' or 'joint', got {stage!r}")
    target = batch["target"].to(device, non_blocking=True)
    if stage == "seg":
        loss = cross_entropy(model(batch["seg_input"].to(device, non_blocking=True)), target)
        return loss, {"ce": loss.detach()}
    if stage == "spixel":
        assoc = model(batch["spixel_input"].to(device, non_blocking=True))
        sl = superpixel_loss(
            assoc,
            target,
            args.cell_size,
            pos_weight=args.pos_weight,
            num_classes=args.num_classes,
            recompute=bool(getattr(args, "recompute_loss", False)),
        )
        return sl, {"spixel": sl.detach()}
    out = model(
        batch["seg_input"].to(device, non_blocking=True), batch["spixel_input"].to(device, non_blocking=True)
    )
    ce = cross_entropy(out["logits"], target)
    loss, parts = ce, {"ce": ce.detach()}
    if args.spixel_loss_weight:
        sl = superpixel_loss(
            out["assoc"],
            target,
            cast(int, unwrap_model(model).cell_size),
            pos_weight=args.pos_weight,
            num_classes=args.num_classes,
            recompute=bool(getattr(args, "recompute_loss", False)),
        )
        loss = loss + args.spixel_loss_weight * sl
        parts["spixel"] = sl.detach()
    return loss, parts


def set_bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer of ``module`` in eval mode (frozen running statistics)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


# ------------------------------------------------------------------------------------------------------ step
def _nonfinite(tensors: list[Tensor], device: torch.device) -> Tensor:
    """1.0 when the L2 norm of ``tensors`` is not finite, else 0.0 (a first pass: :func:`_any_nonfinite`
    tells whether a flagged set really holds a NaN or an inf).

    One fused L2 norm (as ``clip_grad_norm_(error_if_nonfinite=True)``): NaN and inf propagate into it. Its
    sum of squares also overflows for finite values, from about ``sqrt(3.4e38 / n)`` for ``n`` elements in
    float32 (5e15 for ResNet-18's 12 M weights), which no healthy network has. The max-abs norm would be
    exact but is about 8x slower on CPU.
    """
    if not tensors:
        return torch.zeros((), device=device)
    return (~torch.isfinite(get_total_norm(tensors, norm_type=2.0))).float()


def _running_statistics(model: nn.Module) -> list[Tensor]:
    """The floating-point buffers of ``model`` (BatchNorm's running means and variances): a training-mode
    forward updates them and never reads them, so a non-finite one would train on unseen until the
    checkpoint's write refused it."""
    return [b.detach() for b in model.buffers() if b.is_floating_point()]


def _any_nonfinite(tensors: list[Tensor]) -> bool:
    """Whether an element of ``tensors`` is NaN or infinite, exactly (a host synchronisation): the check of a
    flag of :func:`_nonfinite`, whose norm overflowed for finite values of 1e15 to 1e18 and named finite
    weights as non-finite."""
    return any(not bool(torch.isfinite(t).all()) for t in tensors)


def _recheck(flagged: list[bool], sets: list[list[Tensor]], info: DistInfo) -> list[bool]:
    """Which of the flagged ``sets`` really hold a NaN or an inf, agreed by every process (one all-reduce;
    every process comes here, as they agreed on the flags): a flag of :func:`_nonfinite` may be a norm that
    overflowed for finite values, which are no reason to stop, nor to be called non-finite."""
    exact = torch.tensor(
        [float(bad and _any_nonfinite(t)) for bad, t in zip(flagged, sets, strict=True)], device=info.device
    )
    info.any(exact)
    return [bool(f) for f in exact.tolist()]


def _named(**found: bool) -> str:
    """``"loss and running statistics"``: the names (underscores as spaces) of what was found non-finite."""
    return " and ".join(name.replace("_", " ") for name, bad in found.items() if bad)


#: The start of PyTorch's warning about a scheduler stepped before its optimizer (see :func:`train_step`).
_SCHEDULER_FIRST = "Detected call of `lr_scheduler.step()` before `optimizer.step()`"


def train_step(
    state: TrainState,
    batch: dict[str, Any],
    args: argparse.Namespace,
    info: DistInfo,
    guard: InterruptGuard | None,
    use_amp: bool,
) -> tuple[dict[str, float], bool]:
    """One optimizer step; returns ``(values, stop)``.

    ``values`` holds the Python floats ``loss`` and the parts (one device sync), and ``lr``, the learning rate
    of the first parameter group that this step used (before the scheduler's step); ``stop`` is True when a
    signal was recorded (on any process): the step is completed, then the caller stops.

    Raises:
        NonFiniteError: non-finite loss, gradient, weight or running statistic (a BatchNorm buffer, after
            this step's forward; on any process); no parameter, optimizer, scaler or scheduler state was
            updated, and ``state.step`` is unchanged. BatchNorm running statistics did take the batch (in the
            forward, as every forward in training mode does): the last checkpoint written, if any, not the
            model in memory, is the last good state.
    """
    device, step = info.device, state.step + 1
    state.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        loss, parts = stage_loss(state.stage, state.train_model, batch, args, device)
    loss = faults.corrupt_loss(step, loss)
    state.scaler.scale(loss).backward()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in torch (strict)
    faults.hit("step", step)
    faults.corrupt_model(step, state.model)
    params = [p for p in state.model.parameters() if p.requires_grad]
    weights = [p.detach() for p in params]
    grads = [p.grad for p in params if p.grad is not None] if not use_amp else []
    statistics = _running_statistics(state.model)
    flags = torch.stack(
        [
            (~torch.isfinite(loss.detach())).float(),
            _nonfinite(grads, device),
            _nonfinite(weights, device),
            _nonfinite(statistics, device),
            # a fill on the device: torch.tensor(value, device=cuda) copies from the host and waits for the
            # stream (a second synchronisation per step, after the backward)
            # the signal number (the largest over the processes), kept as the guard's agreed stop
            torch.full((), float(guard.requested or 0) if guard is not None else 0.0, device=device),
        ]
    )
    info.any(flags)
    values = torch.cat([loss.detach().float().reshape(1), *(v.float().reshape(1) for v in parts.values())])
    numbers = torch.cat([values, flags]).tolist()
    bad_loss, bad_grad, bad_weight, bad_stat, stop = (bool(f) for f in numbers[-5:])
    if stop and guard is not None:
        guard.agreed = int(numbers[-1])
    if bad_grad or bad_weight or bad_stat:
        bad_grad, bad_weight, bad_stat = _recheck(
            [bad_grad, bad_weight, bad_stat], [grads, weights, statistics], info
        )
    if bad_loss or bad_grad or bad_weight or bad_stat:
        what = _named(loss=bad_loss, gradients=bad_grad, weights=bad_weight, running_statistics=bad_stat)
        # the mean over the processes, as log.csv's: every process is here (they agreed on the flags), and a
        # loss that is non-finite on another process only is not reported as this one's finite value
        mean_loss = info.mean(numbers[0])
        finding = f"non-finite {what} at step {step} (epoch {state.epoch + 1}; loss {mean_loss})"
        raise NonFiniteError(
            f"[{state.stage}] {finding}: training stopped before the update; the last checkpoint written, if "
            f"any, is the last good state. {divergence_advice(use_amp)}",
            finding,
        )
    lr = float(state.optimizer.param_groups[0]["lr"])  # what this update uses; the scheduler sets the next
    state.scaler.step(state.optimizer)
    state.scaler.update()
    with warnings.catch_warnings():
        # a step the AMP scaler skipped (infinite gradients) leaves optimizer.step uncalled, and PyTorch then
        # warns that the scheduler stepped before the optimizer: not so here, the skipped step counts as one
        warnings.filterwarnings("ignore", re.escape(_SCHEDULER_FIRST), UserWarning)
        state.scheduler.step()
    state.step = step
    return {**dict(zip(["loss", *parts], numbers[: 1 + len(parts)], strict=True)), "lr": lr}, stop


# ----------------------------------------------------------------------------------------------------- epoch
def train_one_epoch(
    state: TrainState,
    loader: torch.utils.data.DataLoader[Any],
    args: argparse.Namespace,
    info: DistInfo,
    *,
    steps_per_epoch: int,
    global_batch: int,
    guard: InterruptGuard | None = None,
    logger: CsvLogger | None = None,
    use_amp: bool = False,
    t0: float | None = None,
) -> str:
    """Train on the batches of ``loader`` (the rest of epoch ``state.epoch``); returns why it stopped.

    Returns:
        str: ``"epoch"`` (epoch finished: ``state.epoch`` advanced, ``samples_in_epoch`` reset),
        ``"max_steps"`` (``args.max_steps`` reached) or ``"interrupt"`` (a signal was recorded; the step in
        flight was completed).
    """
    t0 = time.perf_counter() if t0 is None else t0
    state.train_model.train()
    if state.stage == "joint" and args.freeze_bn:
        set_bn_eval(cast(nn.Module, unwrap_model(state.model).deeplab))
    done_before = state.samples_in_epoch // global_batch
    bar = None
    if info.main and not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=steps_per_epoch,
            initial=done_before,
            desc=f"{state.stage} {state.epoch + 1}/{args.epochs}",
            unit="step",
            dynamic_ncols=True,
            leave=True,
        )
    t_epoch, n_img, reason = time.perf_counter(), 0, "epoch"
    batches = iter(loader)
    try:
        for batch in batches:
            values, stop = train_step(state, batch, args, info, guard, use_amp)
            state.samples_in_epoch += global_batch
            n_img += global_batch
            ips = n_img / max(time.perf_counter() - t_epoch, 1e-9)
            if bar is not None:
                bar.set_postfix(loss=f"{values['loss']:.4f}", img_s=f"{ips:.1f}")
                bar.update(1)
            in_epoch = state.samples_in_epoch // global_batch
            # the epoch's last step: no whole batch is left (after a resume at another batch size, off the
            # grid of global_batch, in_epoch stops one short of steps_per_epoch there)
            last = state.samples_in_epoch + global_batch > steps_per_epoch * global_batch
            reached = args.max_steps is not None and state.step >= args.max_steps
            if logger is not None and (state.step % args.log_every == 0 or last or reached):
                # every process's mean, the parts as the loss: loss = ce + weight x spixel holds in the log
                means = {k: info.mean(values[k]) for k in ("loss", "ce", "spixel") if k in values}
                logger.row(
                    stage=state.stage,
                    epoch=state.epoch + 1,
                    step=state.step,
                    loss=f"{means['loss']:.6f}",
                    ce=f"{means['ce']:.6f}" if "ce" in means else "",
                    spixel=f"{means['spixel']:.6f}" if "spixel" in means else "",
                    lr=f"{values['lr']:.6g}",  # the step's own learning rate
                    images_per_s=f"{ips:.2f}",
                    elapsed_s=f"{time.perf_counter() - t0:.3f}",  # ms: step times are read from it
                )
            if in_epoch >= steps_per_epoch:
                state.epoch, state.samples_in_epoch = state.epoch + 1, 0
                reason = "epoch"
            if reached:
                reason = "max_steps"
            if stop:
                reason = "interrupt"
            if reached or stop or in_epoch >= steps_per_epoch:
                break
    finally:
        if bar is not None:
            bar.close()
        close_loader_iterator(batches)
    if reason == "epoch" and state.samples_in_epoch:  # ran out before steps_per_epoch: resumed off-grid
        state.epoch, state.samples_in_epoch = state.epoch + 1, 0
    check_updated_state(state, info, use_amp)
    return reason


def check_updated_state(state: TrainState, info: DistInfo, use_amp: bool = False) -> None:
    """Refuse a state whose last update made a weight or a running statistic NaN or infinite.

    Each step checks the weights before its update, so within an epoch the next step finds what an update
    broke; the last update before the caller saves has no next step, and the checkpoint's write refused it
    naming neither the step nor the last good checkpoint. One check per call (two norms, one host
    synchronisation; every process takes part).

    Raises:
        NonFiniteError: ``stopped="after the update"``; the model in memory holds the values, no checkpoint
            does.
    """
    device = info.device
    weights = [p.detach() for p in state.model.parameters() if p.requires_grad]
    statistics = _running_statistics(state.model)
    flags = torch.stack([_nonfinite(weights, device), _nonfinite(statistics, device)])
    info.any(flags)
    flagged = [bool(f) for f in flags.tolist()]
    if not any(flagged):
        return
    bad_weight, bad_stat = _recheck(flagged, [weights, statistics], info)
    if not (bad_weight or bad_stat):
        return
    what = _named(weights=bad_weight, running_statistics=bad_stat)
    epoch = state.epoch if state.samples_in_epoch == 0 else state.epoch + 1  # the epoch of that step
    finding = f"non-finite {what} after the update of step {state.step} (epoch {epoch})"
    raise NonFiniteError(
        f"[{state.stage}] {finding}: training stopped after the update; the last checkpoint written, if any, "
        f"is the last good state. {divergence_advice(use_amp)}",
        finding,
        stopped="after the update",
    )


def close_loader_iterator(batches: Any) -> None:
    """Stop the DataLoader worker processes of the iterator ``batches`` now (a no-op without workers).

    The training workers ignore SIGINT and SIGTERM (the main process handles them), so they must be told to
    exit, not terminated: at interpreter exit, ``multiprocessing`` terminates the daemonic children that are
    still alive with SIGTERM and then joins them without a timeout. An iterator still referenced by the
    traceback of an error (a data error re-raised from a worker, a second Ctrl-C) would otherwise keep its
    workers alive until then, and the process would never exit. A worker that does not exit on the
    DataLoader's request (stuck in a read) is killed.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is None:
        return
    shutdown()  # the DataLoader's own shutdown: "done" event, sentinels, join with a timeout
    for worker in getattr(batches, "_workers", ()):
        if worker.is_alive():
            worker.kill()
            worker.join(timeout=5.0)


# --------------------------------------------------------------------------------------------------- logging
def read_log_rows(path: Path, resume_step: int) -> list[dict[str, str]]:
    """The rows of the training log ``path`` up to ``resume_step`` (none where it does not exist): what a
    resumed run's new log starts with (:class:`CsvLogger`).

    Raises:
        UsageError: ``path`` is not UTF-8 CSV (named, with the way out).
    """
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if _int_or_none(r.get("step")) is not None]
    except (UnicodeDecodeError, csv.Error) as exc:  # (a traceback that named no file)
        raise UsageError(
            f"cannot read the training log {path} ({type(exc).__name__}: {exc}): --resume keeps its rows up "
            "to the checkpoint's step; repair it, or move it away (the log then starts anew)"
        ) from exc
    return [r for r in rows if int(r["step"]) <= resume_step]


class CsvLogger:
    """``log.csv`` rows (and TensorBoard scalars) on the main process.

    Args:
        folder: the stage folder.
        enabled: False on the other processes (then every method is a no-op).
        tensorboard: also write TensorBoard events (when ``torch.utils.tensorboard`` imports).
        resume_step: None for a new log; else the step of the checkpoint the run resumes from: rows of later
            steps (written after that checkpoint, before a crash) are dropped, so no step appears twice.
        kept: with ``resume_step``, the rows the new log starts with, read before anything of the run was
            changed (:func:`read_log_rows`: of this folder's ``log.csv``, or of the folder of the checkpoint
            it resumes from where that is another folder; rows of another run that this folder's log held
            were kept before, interleaved with the resumed run's); ``None``: read from this folder's log
            here.

    Raises:
        UsageError: with ``resume_step`` and no ``kept``, the log is not UTF-8 CSV (named, with the way out).
    """

    FIELDS = ("stage", "epoch", "step", "loss", "ce", "spixel", "lr", "images_per_s", "elapsed_s")

    def __init__(
        self,
        folder: Path,
        enabled: bool,
        tensorboard: bool,
        resume_step: int | None,
        kept: list[dict[str, str]] | None = None,
    ) -> None:
        self.enabled = enabled
        self.writer: Any = None
        if not enabled:
            return
        self.path = folder / "log.csv"
        if resume_step is None:
            kept = []
        elif kept is None:
            kept = read_log_rows(self.path, resume_step)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        write_text_atomic(self.path, text.getvalue(), newline="")  # csv's own line ends, as the appends below
        self.fh = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115  # kept open for the whole stage
        self.csv = csv.DictWriter(self.fh, fieldnames=self.FIELDS)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else resume_step + 1
                self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=purge)
            except Exception as exc:  # noqa: BLE001  # tensorboard missing or broken: CSV only, say why
                print(f"[train] TensorBoard disabled ({type(exc).__name__}: {exc}); CSV log only", flush=True)

    def row(self, **values: Any) -> None:
        """Append one row (flushed at once)."""
        if not self.enabled:
            return
        try:
            self.csv.writerow({k: values.get(k, "") for k in self.FIELDS})
            self.fh.flush()
        except OSError as exc:  # a full disk: "[Errno 28] No space left on device" names no file
            raise _log_error(self.path, exc) from exc
        if self.writer is not None:
            for k in ("loss", "ce", "spixel", "lr", "images_per_s"):
                if values.get(k, "") != "":
                    self.writer.add_scalar(f"{values['stage']}/{k}", float(values[k]), int(values["step"]))

    def sync(self) -> None:
        """Make the rows written so far durable (``fsync``): called before each checkpoint is written, so that
        a checkpoint on disk never stands for log rows that a power loss could still take back (``row``
        flushes to the operating system only)."""
        if self.enabled:
            try:
                self.fh.flush()
                os.fsync(self.fh.fileno())
            except OSError as exc:
                raise _log_error(self.path, exc) from exc

    def close(self) -> None:
        """Close the file (and the TensorBoard writer)."""
        if self.enabled:
            try:
                self.fh.close()  # writes what a failed flush left in the buffer
            except OSError as exc:
                raise _log_error(self.path, exc) from exc
            if self.writer is not None:
                self.writer.close()


def _log_error(path: Path, exc: OSError) -> OSError:
    """The error of a failed write of the log file ``path``: the class and ``errno`` of ``exc``, a message
    that names the file and the cause (a ``write``, ``flush`` or ``fsync`` names none)."""
    return os_error_saying(exc, f"cannot write {path}: {os_error_reason(exc)}")


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate_checkpoint(
    ckpt_path: Path, args: argparse.Namespace, device: torch.device, root: Path
) -> dict[str, Any]:
    """Evaluate a seg/joint checkpoint on ``args.val_split`` of ``root``; write strict-JSON ``eval.json``.

    With ``args.sbd`` the split is read from the SBD-augmented layout (``ImageSets/SegmentationAug``,
    ``SegmentationClassAug``), as for training and as ``evaluate.py --sbd`` does.

    ``eval.json`` holds the scores, ``checkpoint_step``, the step of the checkpoint evaluated, what was
    evaluated as ``evaluate.py``'s ``metrics.json`` names it (``split``, ``sbd``, ``resolution``: see
    :func:`evaluation_options` and :func:`evaluation_current`), and ``trained_on_evaluated_images`` as
    ``metrics.json`` (a run with ``--allow-val-overlap`` also says so in its line). As ``evaluate.py`` does,
    the PNG panels are made in a staging folder, then replace the earlier evaluation's ``panels/`` together
    with ``eval.json`` (written atomically), once the evaluation is complete: an interrupted evaluation, or a
    failed write of ``eval.json`` (a full disk), leaves the earlier set and its ``eval.json`` as they were,
    and ``eval.json``'s ``panels`` lists the whole set.
    """
    from examples.voc_joint import data
    from examples.voc_joint.checkpoint import load_model_from_checkpoint
    from examples.voc_joint.evaluate import _replace_panels, evaluate, training_overlap
    from examples.voc_joint.metrics import dumps
    from examples.voc_joint.signals import worker_init_fn
    from examples.voc_joint.staging import new_staging, remove_abandoned_staging

    model, config = load_model_from_checkpoint(ckpt_path, map_location=device)
    ds = data.build_dataset(
        root,
        args.val_split,
        sbd=args.sbd,
        crop_size=args.eval_crop,
        max_pixels=args.max_image_pixels,
        num_classes=args.num_classes,
    )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=1,
        shuffle=False,
        num_workers=args.workers,
        worker_init_fn=worker_init_fn(args.workers),
    )
    folder = ckpt_path.parent
    # as evaluate.py: the panels go to a staging folder first, and replace the earlier evaluation's panels
    # together with eval.json once this one is done, never mixed with them (see staging.py for the folders
    # of evaluations killed before their end, removed here)
    remove_abandoned_staging(folder, ".panels.")
    staging, held = new_staging(folder, ".panels.")
    try:
        res = evaluate(
            model,
            loader,
            device=device,
            num_classes=args.num_classes,
            panels_dir=staging,
            progress=not args.no_progress,
        )
        staged = res["panels"]
        # as evaluate.py: a run with --allow-val-overlap scores images it was trained on, and says so
        trained_on = training_overlap(config, ds.names)
        res = {
            "checkpoint_step": config["step"],  # which checkpoint this is (evaluation_current)
            "checkpoint_sha256": config["sha256"],  # and which weights (evaluation_current)
            **evaluation_options(args),  # and on what (evaluation_current)
            "trained_on_evaluated_images": None if trained_on is None else len(trained_on),
            **res,
            "panels": [str(folder / "panels" / Path(p).name) for p in staged],  # once moved into place
            "torch": str(torch.__version__),  # the evaluating torch, as in evaluate.py's metrics.json
            "checkpoint_torch_version": config["torch_version"],  # the training one (None: not recorded)
        }
        # the old panels and eval.json go and the new ones come in one step: a signal waits for its end;
        # panels/ is replaced only once the new eval.json is written (a full disk there leaves both as they
        # were), then that file is renamed into place
        with InterruptGuard() as deferred, deferred.critical():
            write_text_atomic(
                folder / "eval.json",
                dumps(res) + "\n",
                before=lambda: _replace_panels(staged, folder / "panels"),
            )
        deferred.check()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if held is not None:
            os.close(held)
    note = (
        f" (trained on {len(trained_on)} of the {counted(len(ds), 'image')} evaluated: not a held-out score)"
        if trained_on
        else ""
    )
    details = ckpt_path.parent / "eval.json"
    print(f"[eval] {ckpt_path}: mIoU {100 * res['miou']:.2f} %{note}; details in {details}")
    return res


def evaluation_options(args: argparse.Namespace) -> dict[str, Any]:
    """What ``--eval`` evaluates, under the names of ``evaluate.py``'s ``metrics.json``: ``split``
    (``--val-split``), ``sbd`` (``--sbd``) and ``resolution`` (``"full"``, or the ``--eval-crop`` size).

    Example:
        >>> evaluation_options(argparse.Namespace(val_split="val", sbd=False, eval_crop=None))
        {'split': 'val', 'sbd': False, 'resolution': 'full'}
    """
    return {
        "split": args.val_split,
        "sbd": bool(args.sbd),
        "resolution": "full" if args.eval_crop is None else int(args.eval_crop),
    }


def evaluation_current(ckpt_path: Path, step: int, args: argparse.Namespace, sha256: str) -> bool:
    """Whether ``eval.json`` next to ``ckpt_path`` is the evaluation of its checkpoint of step ``step`` and
    content SHA-256 ``sha256`` with the :func:`evaluation_options` of ``args`` (an ``eval.json`` that does not
    record them is not: the step alone took a checkpoint of other weights at the same step, one retrained or
    copied in, for the one evaluated)."""
    import json

    try:
        recorded = json.loads((ckpt_path.parent / "eval.json").read_text(encoding="utf-8"))
        wanted = {"checkpoint_step": step, "checkpoint_sha256": sha256, **evaluation_options(args)}
        return all(key in recorded and recorded[key] == value for key, value in wanted.items())
    except (OSError, ValueError, TypeError):
        return False
