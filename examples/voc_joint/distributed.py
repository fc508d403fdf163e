"""Distributed set-up and tear-down of the VOC joint pipeline (``torchrun``, ``env://``); small collectives.

:func:`init_distributed` reads the environment that ``torchrun`` sets (``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``), picks the device, and initializes the process group (``nccl`` on CUDA, ``gloo`` on CPU) when
there is more than one process, and a gloo group of the same processes for :meth:`DistInfo.wait_for_main`.
:func:`cleanup_distributed` destroys them. Without ``WORLD_SIZE`` everything runs in one process and every
collective of :class:`DistInfo` is a no-op.
"""

from __future__ import annotations

import datetime
import gc
import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from examples.voc_joint.cli import UsageError
from examples.voc_joint.wording import counted

__all__ = [
    "MAIN_WORK_TIMEOUT",
    "PEER_LOST_MESSAGES",
    "PRINTED_BY_RANK_0",
    "DistInfo",
    "ProcessLostError",
    "cleanup_distributed",
    "init_distributed",
    "mark_printed_by_rank_0",
    "peer_lost",
    "resolve_device",
    "torchrun_environment",
    "unwrap_model",
]

#: How long :meth:`DistInfo.wait_for_main` waits for rank 0's own work (an evaluation of the validation
#: split): not the process group's timeout (torch's default: 30 minutes with gloo, 10 with NCCL), which a long
#: evaluation outlasts. A process that dies still ends the wait at once (its connection closes).
MAIN_WORK_TIMEOUT = datetime.timedelta(hours=24)

#: What gloo's TCP transport says when the process at the other end of a connection is gone (killed or
#: crashed): the next collective of every other process fails with a ``RuntimeError`` holding one of these.
#: (NCCL reports a lost process otherwise, or only at its timeout: not checked, no multi-GPU machine here.)
PEER_LOST_MESSAGES = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")

#: The attribute of an error that every process raises with the same message (rank 0's refusal passed on, a
#: stop the processes agreed on): set on the copies of the other processes, whose command prints nothing.
PRINTED_BY_RANK_0 = "printed_by_rank_0"

_E = TypeVar("_E", bound=BaseException)


class ProcessLostError(RuntimeError):
    """A collective failed because another process of the group is gone (killed or crashed)."""


def mark_printed_by_rank_0(exc: _E, info: DistInfo) -> _E:
    """``exc``, marked :data:`PRINTED_BY_RANK_0` on every process but rank 0, where every process raises it
    with the same message (a refusal rank 0 decided, a stop they agreed on): the command prints one copy, not
    one per process.

    Example:
        >>> err = mark_printed_by_rank_0(ValueError("bad"), DistInfo(rank=1, world_size=2))
        >>> getattr(err, PRINTED_BY_RANK_0)
        True
    """
    setattr(exc, PRINTED_BY_RANK_0, not info.main)
    return exc


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective's failure because another process is gone (:data:`PEER_LOST_MESSAGES`).

    Example:
        >>> peer_lost(RuntimeError("[pair.cc:534] Connection closed by peer [127.0.0.1]:41234"))
        True
        >>> peer_lost(RuntimeError("shape mismatch"))
        False
    """
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in PEER_LOST_MESSAGES)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper; ``model`` otherwise.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap_model(net) is net
        True
    """
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def resolve_device(device: str | None, local_rank: int = 0, distributed: bool = False) -> torch.device:
    """The device a process uses: ``device`` (default ``cuda`` when available, else ``cpu``).

    Under DDP a CUDA device is ``cuda:<local_rank>``: torchrun gives each process of a machine its own GPU,
    so ``device`` names no index there (``cuda``, not ``cuda:1``).

    Raises:
        ValueError: an unknown device string, a device type this machine does not have, a CUDA index it
            does not have (read off the text: torch would wrap ``cuda:4096`` to ``cuda:0``), or a CPU device
            with an index (``cpu:3``); under DDP, a CUDA device with an index (every process refuses it) or a
            ``local_rank`` the machine has no GPU for (more processes per machine than GPUs).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    want = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(want)
    except (RuntimeError, ValueError):  # (torch's message lists every device type it knows, mps among them)
        use = "cpu or cuda" if distributed else "cpu or cuda[:N]"
        raise ValueError(f"unknown device {want!r}: use {use}") from None
    # torch keeps a device index in 8 bits and wraps a larger one without a word ("cuda:4096" is cuda:0):
    # the index is read off the text itself
    index_text = want.partition(":")[2]
    if index_text.isdecimal() and int(index_text) != dev.index:
        if dev.type == "cuda" and torch.cuda.is_available():
            has = counted(torch.cuda.device_count(), "CUDA device")
            raise ValueError(f"device {want!r} requested but this machine has {has}")
        dev = torch.device(dev.type, 0)  # refused below (no CUDA here, an index on the CPU), with want named
    if dev.type == "cpu":
        if dev.index is not None:  # torch accepts "cpu:3", and runs on the one CPU device anyway
            raise ValueError(f"device {want!r}: the CPU is one device, without an index (use cpu)")
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {want!r} requested but CUDA is not available on this machine")
        has = counted(torch.cuda.device_count(), "CUDA device")
        if not distributed:
            index = dev.index or 0
            if index >= torch.cuda.device_count():
                raise ValueError(f"device 'cuda:{index}' requested but this machine has {has}")
            return torch.device("cuda", index)
        if dev.index is not None:  # (taken as cuda:<local_rank> before, the index ignored without a word)
            raise ValueError(
                f"device {want!r} under torchrun: each process takes the GPU of its LOCAL_RANK (this one "
                f"cuda:{local_rank}); pass cuda, without an index (CUDA_VISIBLE_DEVICES picks the GPUs)"
            )
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={local_rank} takes cuda:{local_rank} but this machine has {has}: start at most "
                f"{torch.cuda.device_count()} processes per machine (torchrun --nproc-per-node)"
            )
        return torch.device("cuda", local_rank)
    raise ValueError(f"device {want!r} is not supported by this pipeline (use cpu or cuda[:N])")


@dataclass(frozen=True)
class DistInfo:
    """Process-group facts of this process.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes.
        local_rank: rank on this machine.
        device: the device this process trains on.
        wait_group: the gloo group of every process that :meth:`wait_for_main` uses (None: the default group).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    wait_group: Any = field(default=None, compare=False, repr=False)

    @property
    def enabled(self) -> bool:
        """More than one process (collectives really communicate)."""
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """The process that writes checkpoints, logs and evaluations (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op in one process)."""
        if self.enabled:
            dist.barrier()

    def wait_for_main(self) -> None:
        """Wait for every process after work that rank 0 alone does (no-op in one process): a barrier of
        :attr:`wait_group`, whose timeout is :data:`MAIN_WORK_TIMEOUT`, not the process group's."""
        if self.enabled:
            if self.wait_group is None:
                dist.barrier()
            else:
                dist.barrier(group=self.wait_group)

    def mean(self, value: float) -> float:
        """Mean of a Python number over the processes."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def any(self, flags: torch.Tensor) -> torch.Tensor:
        """Element-wise "true on any process" of a small float tensor of 0/1 flags (in place; returned): the
        maximum over the processes, so other values give their largest (a signal number)."""
        if self.enabled:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return flags

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj`` (small and picklable), as a list indexed by rank, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def from_main(self, obj: Any) -> Any:
        """The value of ``obj`` on rank 0, on every process (a broadcast of a small picklable object)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def _env_count(
    environ: Mapping[str, str], name: str, default: int, least: int, most: int | None = None, what: str = ""
) -> int:
    """The whole number of environment variable ``name`` (``default`` when unset), in ``[least, most]``;
    ``what`` names the values it may take in the error (default: a whole number >= ``least``)."""
    raw = environ.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if (
        not (text.isascii() and text.isdecimal())
        or int(text) < least
        or (most is not None and int(text) > most)
    ):
        what = what or f"a whole number >= {least} (as torchrun sets it)"
        raise UsageError(f"environment variable {name}={raw!r}: expected {what}, got {raw!r}")
    return int(text)


def torchrun_environment(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """``(WORLD_SIZE, RANK, LOCAL_RANK)`` of ``environ`` (default :data:`os.environ`), checked: unset, they
    are ``(1, 0, 0)`` (one process).

    A value that is no count failed in ``int()`` (``invalid literal for int() with base 10: ''``, naming no
    variable); a ``RANK`` of 1 without ``WORLD_SIZE`` made a process that believed it was not rank 0 and wrote
    no checkpoint; a ``RANK`` not below ``WORLD_SIZE`` waited forever for a rank 0 that never comes. With
    several processes ``MASTER_PORT`` (read by torch, which names neither ``abc`` nor ``70000`` as the
    variable's) is checked too.

    Raises:
        UsageError: naming the variable, the values it may take and its value.

    Example:
        >>> torchrun_environment({})
        (1, 0, 0)
        >>> torchrun_environment({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
        (2, 1, 1)
        >>> try:
        ...     torchrun_environment({"WORLD_SIZE": "2", "RANK": "2"})
        ... except UsageError as exc:
        ...     print(exc)
        environment variable RANK='2': expected a rank below WORLD_SIZE=2 (0 to 1), got '2'
    """
    env = os.environ if environ is None else environ
    world_size = _env_count(env, "WORLD_SIZE", 1, 1)
    rank = _env_count(env, "RANK", 0, 0)
    local_rank = _env_count(env, "LOCAL_RANK", 0, 0)
    size = f"WORLD_SIZE={world_size}" if "WORLD_SIZE" in env else "WORLD_SIZE unset (one process)"
    for name, value in (("RANK", rank), ("LOCAL_RANK", local_rank)):
        if value >= world_size:
            raise UsageError(
                f"environment variable {name}={env[name]!r}: expected a rank below {size} (0 to "
                f"{world_size - 1}), got {env[name]!r}"
            )
    if world_size > 1:
        _env_count(env, "MASTER_PORT", 0, 1, 65535, "a TCP port, 1 to 65535")
    return world_size, rank, local_rank


def init_distributed(device: str | None = None) -> DistInfo:
    """Read the ``torchrun`` environment, choose the device and initialize the process group if needed.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (one process only: under torchrun each process takes
            ``cuda:<LOCAL_RANK>``) or None (CUDA when available).

    Returns:
        DistInfo: this process's rank, world size, local rank and device.

    Raises:
        UsageError: a ``WORLD_SIZE``, ``RANK`` or ``LOCAL_RANK`` that is not a whole number (empty, negative,
            ``abc``), a ``WORLD_SIZE`` of 0, a ``RANK`` or ``LOCAL_RANK`` not below ``WORLD_SIZE`` (1 when
            unset), or, with several processes, a ``MASTER_PORT`` that is not a port (1 to 65535); the
            message names the variable, what it must be and its value (:func:`torchrun_environment`); with
            several processes, a variable of the ``env://`` rendezvous missing (``RANK``, ``MASTER_ADDR``,
            ``MASTER_PORT``: torch's message, which names it); a device :func:`resolve_device` refuses (an
            unknown one, ``cuda:N`` under torchrun, a ``LOCAL_RANK`` the machine has no GPU for).
    """
    world_size, rank, local_rank = torchrun_environment()
    enabled = world_size > 1
    try:
        dev = resolve_device(device, local_rank, enabled)
    except ValueError as exc:  # (a traceback before): named, exit status 2 as the option's other refusals
        raise UsageError(str(exc)) from None
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if enabled and not dist.is_initialized():
        try:
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://")
        except ValueError as exc:  # env:// rendezvous: "environment variable RANK expected, but not set"
            raise UsageError(
                f"{exc} (WORLD_SIZE={world_size}: launch the processes with torchrun, which sets them all)"
            ) from exc
    wait_group = dist.new_group(backend="gloo", timeout=MAIN_WORK_TIMEOUT) if enabled else None
    return DistInfo(
        rank=rank, world_size=world_size, local_rank=local_rank, device=dev, wait_group=wait_group
    )


def cleanup_distributed() -> None:
    """Destroy the process group if one was initialized, after letting go of what the run left.

    A ``DistributedDataParallel`` model holds the process group through its C++ reducer. Freed after the
    group was destroyed, it dropped the group's last reference: the gloo group's destructor then ran with the
    GIL held and waited for its worker thread, which was freeing the work of the last collective and waited
    for the GIL (torch 2.11: a rank hung for good after writing its checkpoint, 1 run in 4 on a loaded 2-core
    machine). So the frames of an exception on its way out (an interrupt raised in a stage keeps the stage's
    model alive through its traceback) are cleared and unreachable objects collected first: the group's last
    reference is then the registry's, whose destructor runs without the GIL.
    """
    if dist.is_available() and dist.is_initialized():
        in_flight = sys.exc_info()[1]
        if in_flight is not None:
            traceback.clear_frames(in_flight.__traceback__)
        gc.collect()
        dist.destroy_process_group()
