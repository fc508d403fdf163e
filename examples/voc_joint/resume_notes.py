"""The notes a resume prints when its continuation will not be bit-identical to an uninterrupted run: another
CPU thread count, memory format, ``--compile``, torch version, device type, or GPUs whose RNG states cannot be
restored.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal

import torch

from examples.voc_joint.checkpoint import cuda_states_restorable
from examples.voc_joint.models.joint import ChannelsLast, network_channels_last
from examples.voc_joint.train_options import runtime_options
from examples.voc_joint.wording import counted

__all__ = [
    "cuda_rng_note",
    "device_note",
    "numerics_note",
    "thread_count_note",
    "torch_version_note",
]


def thread_count_note(stage: str, ckpt: dict[str, Any], device: torch.device) -> str | None:
    """The note a CPU resume prints when the checkpoint's CPU run used another torch thread count (``None``:
    the same count, a CUDA resume, a run trained on another device (:func:`device_note` says so; its thread
    count did not shape its arithmetic, and passing it would not make the result bit-identical), or a
    checkpoint written before the count was recorded).

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
        >>> on_gpu = {"cpu_threads": n + 1, "device_type": "cuda"}  # trained on a GPU
        >>> thread_count_note("seg", on_gpu, torch.device("cpu")) is None
        True
    """
    recorded, current = ckpt.get("cpu_threads"), torch.get_num_threads()
    if device.type != "cpu" or ckpt.get("device_type") not in (None, "cpu"):
        return None
    if recorded is None or int(recorded) == current:
        return None
    return (
        f"[{stage}] the run used {int(recorded)} CPU threads, this process {current}: PyTorch rounds "
        "differently with another thread count, so the result will not be bit-identical to an uninterrupted "
        f"run; pass --threads {int(recorded)} to continue it bit for bit"
    )


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


def device_note(stage: str, ckpt: dict[str, Any], device: torch.device) -> str | None:
    """The note a resume prints when the checkpoint's run trained on another device type (``None``: the same
    type, or a checkpoint written before it was recorded).

    Another device's kernels round differently, and its random draws (dropout on a GPU) come from another
    generator, so the continuation is not bit-identical to an uninterrupted run.

    Example:
        >>> device_note("seg", {"device_type": "cpu"}, torch.device("cpu")) is None
        True
        >>> device_note("seg", {"device_type": "cuda"}, torch.device("cpu")).endswith("--device cuda")
        True
    """
    recorded = ckpt.get("device_type")
    if recorded is None or str(recorded) == device.type:
        return None
    return (
        f"[{stage}] the run was trained on {recorded}, this process runs on {device.type}: another device "
        "rounds differently and draws other random numbers, so the result will not be bit-identical to an "
        f"uninterrupted run; to continue on the run's device, pass --device {recorded}"
    )


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
