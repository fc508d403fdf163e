"""Checkpoints of the VOC joint pipeline: atomic writes, weights-only reads, RNG states, model rebuilding.

A checkpoint is a dict of tensors and plain Python containers only, so it is always read with
``torch.load(weights_only=True)`` (no code runs while loading). Keys:

=================  =====================================================================================
``format``         ``"transinit-voc-joint"``
``version``        ``1``
``stage``          ``"seg"``, ``"spixel"`` or ``"joint"``
``config``         ``{"model": <models.model_config(...)>, "args": <training options as plain values>}``
``model``          the model's ``state_dict`` (without any ``DistributedDataParallel`` ``module.`` prefix)
``optimizer``      optimizer ``state_dict`` (training checkpoints)
``scheduler``      LR scheduler ``state_dict``
``scaler``         AMP ``GradScaler`` ``state_dict``
``epoch``          completed epochs
``step``           optimizer steps taken
``batch_in_epoch`` batches already done in the current epoch (non-zero only in an interrupt checkpoint)
``rng``            RNG states: ``torch`` (ByteTensor), ``cuda`` (list), ``numpy``, ``python``, ``loader``
=================  =====================================================================================
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "FORMAT",
    "CheckpointError",
    "get_rng_state",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "load_weights_into",
    "remove_stale_temporaries",
    "save_checkpoint",
    "set_rng_state",
]

FORMAT = "transinit-voc-joint"
VERSION = 1
_REQUIRED = ("format", "version", "stage", "config", "model")
_UMASK = os.umask(0)  # read the process umask (set it back at once)
os.umask(_UMASK)


class CheckpointError(ValueError):
    """Not a valid pipeline checkpoint (unreadable with ``weights_only=True``, wrong keys or config, ...)."""


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` atomically and durably.

    The data goes to a temporary file of a unique name in the same folder (``.<name>.<random>.tmp``), which is
    flushed and fsynced, then renamed onto ``path`` with ``os.replace``, and the folder is fsynced. A crash,
    an interrupt or a ``SIGKILL`` at any moment leaves either the previous file or the new one, never a
    partial one; concurrent writers to the same path each rename a complete file (the last rename wins).

    Returns:
        Path: ``path``.
    """
    from examples.voc_joint import faults

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; a checkpoint gets the usual 0666 & ~umask
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as fh:
            torch.save(checkpoint, fh)
            fh.flush()
            os.fsync(fh.fileno())
        faults.hit("save")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted writes of ``path`` left behind (``SIGKILL``, power loss).

    Only safe while no other process writes ``path`` (the training run holds the output-folder lock).
    """
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a pipeline checkpoint with ``torch.load(weights_only=True)`` and check its keys.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file holds pickled objects (refused), is not a dict, has another ``format``, or
            misses one of ``format``, ``version``, ``stage``, ``config``, ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError for arbitrary objects, RuntimeError/EOFError for garbage
        raise CheckpointError(
            f"refusing checkpoint {path}: it cannot be read with torch.load(weights_only=True) (only tensors "
            f"and plain containers are accepted, no pickled objects): {type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} must hold a dict, got {type(ckpt).__name__}")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is not a transinit voc_joint checkpoint: missing keys {missing} "
            f"(found {sorted(map(str, ckpt))[:10]})"
        )
    if ckpt["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {ckpt['format']!r}, expected {FORMAT!r}")
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["config"].get("model"), dict):
        raise CheckpointError(f"checkpoint {path} has no model config under config['model']")
    return ckpt


def get_rng_state(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """All RNG states as tensors and plain values (weights-only loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss": py_state[2],
        },
    }
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    """Restore the states saved by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    npst = state["numpy"]
    np.random.set_state(
        ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])
    )
    pyst = state["python"]
    random.setstate((pyst["version"], tuple(int(v) for v in pyst["state"].tolist()), pyst["gauss"]))
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"].cpu())


def _strip_module(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[7:] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def load_weights_into(model: nn.Module, path: str | Path, *, part: str | None = None) -> dict[str, Any]:
    """Load the weights of a pipeline checkpoint into ``model`` (strict), optionally one sub-network of it.

    Args:
        model: the module to fill.
        path: checkpoint file.
        part: ``None`` (whole model), ``"deeplab"`` or ``"spixel"``: take that sub-network, from a stage
            checkpoint of the same network or from a joint checkpoint.

    Returns:
        dict: the checkpoint.

    Raises:
        CheckpointError: wrong architecture or the keys/shapes do not match ``model``.
    """
    ckpt = load_checkpoint(path)
    state = _strip_module(ckpt["model"])
    arch = ckpt["config"]["model"].get("arch")
    if part is not None:
        parts = {"deeplab": ("deeplabv3plus", "deeplab."), "spixel": ("spixelfcn", "spixelfcn.")}
        own_arch, prefix = parts[part]
        if arch == "joint":
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        elif arch != own_arch:
            raise CheckpointError(
                f"checkpoint {path} holds a {arch!r} model; expected {own_arch!r} or 'joint'"
            )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the model: {str(exc)[:500]}") from exc
    return ckpt


def load_model_from_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in a checkpoint, load its weights and put it in eval mode.

    A ``seg`` checkpoint gives ``SegmentationOnly(DeepLabV3Plus)`` and a ``joint`` checkpoint a
    ``JointModel``: both obey the pipeline's model contract (``model(seg_input, spixel_input) -> dict``). A
    ``spixel`` checkpoint gives the bare ``SpixelFCN`` (``model(spixel_input) -> assoc``).

    Returns:
        tuple: ``(model, config)`` with ``config`` the checkpoint's ``config`` dict (``"model"``, ``"args"``)
        plus ``"stage"``, ``"epoch"`` and ``"step"``.

    Raises:
        FileNotFoundError: missing file.
        CheckpointError: not a weights-only pipeline checkpoint, unknown architecture, or mismatched weights.
    """
    from .models import SegmentationOnly, build_model

    ckpt = load_checkpoint(path, map_location="cpu")
    try:
        model = build_model(ckpt["config"]["model"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    try:
        model.load_state_dict(_strip_module(ckpt["model"]), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path} does not match its own model config: {str(exc)[:500]}"
        ) from exc
    if ckpt["config"]["model"]["arch"] == "deeplabv3plus":
        model = SegmentationOnly(model)
    model = model.to(map_location).eval()
    config = dict(ckpt["config"])
    config.update(stage=ckpt["stage"], epoch=ckpt.get("epoch"), step=ckpt.get("step"))
    return model, config
