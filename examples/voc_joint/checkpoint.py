"""Checkpoints of the VOC joint pipeline: atomic writes, weights-only verified reads, RNG states, models.

A checkpoint is a dict of tensors and plain Python containers only, so it is always read with
``torch.load(weights_only=True)`` (no code runs while loading). Keys:

=====================  ================================================================================
``format``             ``"transinit-voc-joint"``
``version``            ``3`` (``2``: ``rng`` of one process only; ``1``: no ``sha256`` either; both read)
``stage``              ``"seg"``, ``"spixel"`` or ``"joint"`` (its model's ``arch``: ``"deeplabv3plus"``,
                       ``"spixelfcn"``, ``"joint"``)
``config``             ``{"model": <models.model_config(...)>, "args": <training options as plain values>,
                       "changes": [<option changes accepted on resume>]}``; joint stage also
                       ``"sources": {"seg_checkpoint": {"path": ..., "sha256": ...}, "spixel_checkpoint":
                       ...}`` (what it was fine-tuned from; checked before it is resumed or skipped)
``model``              the model's ``state_dict`` (without any ``DistributedDataParallel`` ``module.`` prefix)
``optimizer``          optimizer ``state_dict`` (training checkpoints)
``scheduler``          LR scheduler ``state_dict``
``scaler``             AMP ``GradScaler`` ``state_dict``
``epoch``              completed epochs
``step``               optimizer steps taken
``batch_in_epoch``     batches done in the current epoch (non-zero in a mid-epoch checkpoint)
``samples_in_epoch``   samples done in the current epoch by all processes together
``world_size``         processes of the run
``complete``           the stage reached ``--epochs`` or ``--max-steps``
``rng``                RNG states of every process, a list indexed by rank, each: ``torch`` (ByteTensor),
                       ``cuda`` (list), ``numpy``, ``python`` (versions 1-2: one such dict, rank 0's)
``elapsed_s``          seconds of training that led to this state, over every resume (absent before
                       2026-12-01: read as 0)
``cpu_threads``        ``torch.get_num_threads()`` of the process that wrote it (a CPU resume with another
                       count says it is not bit-identical; absent before 2026-12-01)
``channels_last``      the memory format its networks ran in: ``--channels-last`` resolved (``True``,
                       ``False`` or ``"spixelfcn"``; a resume that changes it for a network of the stage says
                       it is not bit-identical; absent before 2026-12-02)
``torch_version``      ``torch.__version__`` of the process that wrote it (a resume under another version says
                       that it may not be bit-identical; absent before 2026-12-02)
``device_type``        the device type its networks ran on (``"cpu"``, ``"cuda"``, ...; a resume on another
                       one says it is not bit-identical; absent before 2026-12-06)
``sha256``             SHA-256 of everything else (:func:`payload_sha256`), verified on every read
=====================  ================================================================================

:func:`save_checkpoint` refuses non-finite weights or optimizer states; :func:`load_checkpoint` refuses files
that are not weights-only loadable, hold a tensor that is not a dense one with data of its own (a shape
claiming more elements than its data holds included) or nest deeper than :data:`MAX_DEPTH`, have wrong keys,
a different content hash, an invalid model config
(:func:`~examples.voc_joint.models.build.validate_model_config`, checked before any layer is built) or one of
another architecture than the stage's, a ``model`` that is not a state dict, NaN or infinite weights or
optimizer states, or, when asked, the wrong stage;
:func:`check_resumable` refuses, for ``--resume``, one without a training state or with a malformed one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import random
import re
import secrets
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from examples.voc_joint.atomic import os_error_reason

__all__ = [
    "FORMAT",
    "INIT_ONLY_CONFIG",
    "MAX_DEPTH",
    "RESIDUAL_FUSION_INIT",
    "STAGE_ARCHS",
    "STAGE_MODELS",
    "TRAINING_KEYS",
    "VERSION",
    "CheckpointError",
    "check_resumable",
    "cuda_states_restorable",
    "get_rng_state",
    "load_checkpoint",
    "load_checkpoint_with_sha256",
    "load_model_from_checkpoint",
    "load_network",
    "load_weights_into",
    "network_config",
    "other_dtypes",
    "payload_sha256",
    "remove_stale_temporaries",
    "save_checkpoint",
    "set_rng_state",
    "strip_key_prefixes",
    "strip_module_prefix",
]

FORMAT = "transinit-voc-joint"
VERSION = 3
_REQUIRED = ("format", "version", "stage", "config", "model")
#: What each stage's checkpoint holds (for messages).
STAGE_MODELS = {"seg": "DeepLabV3+", "spixel": "SpixelFCN", "joint": "the joint model"}
#: The model architecture (``config["model"]["arch"]``) of each stage's checkpoint.
STAGE_ARCHS = {"seg": "deeplabv3plus", "spixel": "spixelfcn", "joint": "joint"}


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


def _tensors(obj: Any, prefix: str) -> list[tuple[str, Tensor]]:
    if isinstance(obj, Tensor):
        return [(prefix, obj)]
    if isinstance(obj, dict):
        return [item for k, v in obj.items() for item in _tensors(v, f"{prefix}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [item for i, v in enumerate(obj) for item in _tensors(v, f"{prefix}.{i}")]
    return []


def _nonfinite(checkpoint: dict[str, Any]) -> str | None:
    """The first weight or optimizer state of ``checkpoint`` holding NaN or infinite values (None: none)."""
    named = [(n, t) for part in ("model", "optimizer") for n, t in _tensors(checkpoint.get(part), part)]
    floats = [(n, t) for n, t in named if t.is_floating_point() and t.numel()]
    if not floats or bool(torch.isfinite(torch.nn.utils.get_total_norm([t for _, t in floats]))):
        return None  # one fused norm: NaN / inf propagate into it
    for name, t in floats:  # name the culprit
        if not bool(torch.isfinite(t).all()):
            return name
    return None


def _refuse_nonfinite(checkpoint: dict[str, Any], path: Path) -> None:
    name = _nonfinite(checkpoint)
    if name is not None:
        raise FloatingPointError(f"refusing to write checkpoint {path}: {name} holds NaN or infinite values")


_PLAIN = (str, int, float, bool, type(None))


def _not_plain(obj: Any, where: str) -> str | None:
    """Where ``obj`` holds anything but plain values (str, int, float, bool, None) in dicts, lists and tuples
    (None: nowhere); e.g. ``"config['model']['deeplab']['output_stride'] = np.int64(16) (numpy.int64)"``."""
    if type(obj) in (dict, OrderedDict, list, tuple):
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in items:
            if type(key) not in _PLAIN:
                return f"a key of {where}: {key!r} ({type(key).__module__}.{type(key).__qualname__})"
            found = _not_plain(value, f"{where}[{key!r}]")
            if found is not None:
                return found
        return None
    if type(obj) in _PLAIN:
        return None
    return f"{where} = {obj!r:.100} ({type(obj).__module__}.{type(obj).__qualname__})"


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)};".encode())
        for value in obj:
            _feed(h, value)
    else:
        h.update(f"S{type(obj).__name__}:{obj!r};".encode())


#: The deepest nesting of dicts, lists and tuples a checkpoint read is accepted with (a pipeline checkpoint
#: nests about 6 levels deep; the content hash and the checks walk it recursively).
MAX_DEPTH = 64


def _content_problem(obj: Any) -> str | None:
    """What in a checkpoint read from a file (``torch.load``: on the CPU) the content hash cannot take, the
    first found (None: nothing): nesting deeper than :data:`MAX_DEPTH`, a tensor without data of its own (a
    meta, sparse or quantized one), or one whose shape claims more elements than its data holds (a tensor
    saved as a view with a zero stride: a file of a few bytes claimed gigabytes, which the hash allocated).
    Walked without recursion, so that a deeply nested file does not raise ``RecursionError`` here."""
    stack: list[tuple[Any, str, int]] = [(obj, "checkpoint", 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, Tensor):
            if item.layout != torch.strided or item.is_quantized or item.device.type != "cpu":
                if item.device.type != "cpu":  # "meta": saved without data
                    kind = f"a tensor on the {item.device.type} device"
                else:
                    kind = "a quantized tensor" if item.is_quantized else f"a {item.layout} tensor"
                return f"{where} is {kind}, expected a dense tensor with data of its own"
            claimed = item.numel() * item.element_size()
            held = item.untyped_storage().nbytes() - item.storage_offset() * item.element_size()
            if claimed > held:
                return (
                    f"{where} of shape {tuple(item.shape)} and strides {item.stride()} claims {claimed} "
                    f"bytes, its data holds {max(held, 0)}"
                )
        elif isinstance(item, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                return f"{where} is nested deeper than {MAX_DEPTH} levels of dicts, lists and tuples"
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((value, f"{where}[{key!r:.50}]", depth + 1) for key, value in pairs)
    return None


def payload_sha256(checkpoint: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's content without its ``sha256`` key: every tensor's dtype, shape and
    bytes and every plain value, in a fixed order (keys sorted), independent of how the file was pickled.

    Example:
        >>> a = payload_sha256({"w": torch.zeros(2), "step": 1})
        >>> b = payload_sha256({"step": 1, "w": torch.zeros(2)})  # key order does not matter
        >>> a == b != payload_sha256({"w": torch.ones(2), "step": 1})
        True
    """
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in checkpoint.items() if k != "sha256"})
    return h.hexdigest()


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` atomically and durably.

    The data goes to a temporary file of a unique name in the same folder (``.<name>.<random>.tmp``), which is
    flushed and fsynced, then renamed onto ``path`` with ``os.replace``, and the folder is fsynced. A crash,
    an interrupt or a ``SIGKILL`` at any moment leaves either the previous file or the new one, never a
    partial one; concurrent writers to the same path each rename a complete file (the last rename wins).

    Returns:
        Path: ``path``.

    Raises:
        FloatingPointError: NaN or infinite weights or optimizer states (named).
        CheckpointError: ``config`` holds anything but plain values (str, int, float, bool, None in dicts,
            lists and tuples; named): :func:`load_checkpoint` could not read the file (weights-only).
    """
    from examples.voc_joint import faults

    path = Path(path)
    _refuse_nonfinite(checkpoint, path)
    found = _not_plain(checkpoint.get("config"), "config")
    if found is not None:
        raise CheckpointError(
            f"refusing to write checkpoint {path}: {found} is not a plain value (str, int, float, bool or "
            "None in dicts, lists and tuples): torch.load(weights_only=True) could not read the file"
        )
    payload = {k: v for k, v in checkpoint.items() if k != "sha256"}
    payload["sha256"] = payload_sha256(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = _new_file(path.parent, f".{path.name}.", ".tmp")
    except OSError as exc:  # names the temporary file only
        raise _write_error(path, exc) from exc
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
                fh.flush()
                os.fsync(fh.fileno())
        except (RuntimeError, OSError) as exc:
            err = _write_error(path, exc)
            if err is exc:
                raise
            raise err from exc
        faults.hit("save")
        try:
            os.replace(tmp, path)
        except OSError as exc:
            raise _write_error(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):  # a file system remounted read-only refuses this too: the error
            tmp.unlink(missing_ok=True)  # is the write's
        raise
    _fsync_dir(path.parent)
    return path


def _new_file(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A new file ``<folder>/<prefix><8 random hexadecimal digits><suffix>``, open for writing, with the mode
    ``open`` gives (``0o666`` less the umask: ``tempfile.mkstemp`` makes private ``0o600`` files, and reading
    the umask takes ``os.umask``, which changes it for every thread of the process for an instant)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free name for a new file '{prefix}<random>{suffix}' in '{folder}'")


def _write_error(path: Path, exc: BaseException) -> BaseException:
    """The error to raise for a failed write of ``path``: an ``OSError`` naming the file and the cause.

    When the disk is full, torch's zip writer hides the ``OSError`` (``ENOSPC``) of the file's ``write``
    behind a ``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected pos ...`` raised while it
    closes the archive; the ``OSError`` is found in the exception's context. Another ``RuntimeError`` (not
    about writing) is returned as it is.
    """
    cause: BaseException | None = exc
    seen: set[int] = set()
    while cause is not None and not isinstance(cause, OSError) and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    text = str(exc).strip()
    if isinstance(cause, OSError):
        code, reason = cause.errno, os_error_reason(cause)
    elif "inline_container" in text or "PytorchStreamWriter" in text:
        code, reason = None, text.splitlines()[0][:200] if text else type(exc).__name__
    else:
        return exc
    err = OSError(
        f"cannot write checkpoint {path}: {reason}; the file was not replaced (a previous checkpoint there "
        "is unchanged)"
    )
    err.errno = code
    return err


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted writes of ``path`` left behind (``SIGKILL``, power loss).

    Only safe while no other process writes ``path`` (the training run holds the output-folder lock).
    """
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _unreadable(path: Path, exc: Exception, what: str = "checkpoint", objects_hint: str = "") -> str:
    """Why ``torch.load(path, weights_only=True)`` failed, without torch's advice to load with
    ``weights_only=False`` (which would run code from the file, and cannot repair a damaged one); ``what``
    names the kind of file (``"checkpoint"``, ``"backbone weights file"``); ``objects_hint`` ends the message
    of a file that holds pickled objects."""
    text = str(exc)
    if isinstance(exc, PermissionError):  # a file this user may not read (chmod 000), not a damaged one (that
        # message sent the reader to fetch a good copy); torch reads a truncated file as OSError(EINVAL)
        return f"cannot read {what} {path}: {exc.strerror or exc}"
    if isinstance(exc, pickle.UnpicklingError) and zipfile.is_zipfile(path):
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        found_at = f" (first: {found.group(1)})" if found else ""
        return (
            f"refusing {what} {path}: it holds pickled Python objects{found_at}, which are never loaded: it "
            "cannot be read with torch.load(weights_only=True), which accepts only tensors and plain "
            f"containers{objects_hint}"
        )
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = first.split(". This is an internal")[0].split(". If you")[0][:200]
    reason = "not a torch.save file"
    if isinstance(exc, RuntimeError) and first:
        reason = f"{type(exc).__name__}: {first}"
    return (
        f"refusing {what} {path}: the file is damaged (truncated or corrupted) or is not a {what}; "
        f"it cannot be read with torch.load(weights_only=True) ({reason})"
    )


def load_checkpoint(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    expect_stage: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Read a pipeline checkpoint with ``torch.load(weights_only=True)`` and check it (the checks of
    :func:`load_checkpoint_with_sha256`, which also returns the content's SHA-256).

    Args:
        path: the file.
        map_location: where tensors go (once the file was read and checked on the CPU; ``"meta"`` too).
        expect_stage: the stage(s) the caller can use (``"seg"``, ``("seg", "joint")``, ...); None: any.

    Returns:
        dict: the checkpoint, without its ``sha256`` key.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        CheckpointError: the file is not a valid pipeline checkpoint of ``expect_stage`` (the cases of
            :func:`load_checkpoint_with_sha256`).
    """
    return _load_verified(Path(path), map_location, expect_stage)[0]


def load_checkpoint_with_sha256(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    expect_stage: str | Sequence[str] | None = None,
) -> tuple[dict[str, Any], str]:
    """:func:`load_checkpoint` and the checkpoint's content SHA-256 (:func:`payload_sha256`), hashed once:
    the recorded hash, once the content was checked against it; a version-1 file (no recorded hash) is
    hashed here. The joint stage records it as the identity of its source checkpoints.

    Args:
        path: the file.
        map_location: where tensors go (once the file was read and checked on the CPU; ``"meta"`` too).
        expect_stage: the stage(s) the caller can use (``"seg"``, ``("seg", "joint")``, ...); None: any.

    Returns:
        tuple[dict, str]: the checkpoint (without its ``sha256`` key) and the SHA-256 of its content (hex).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        CheckpointError: the file holds pickled objects (refused), is not a dict, holds a tensor without
            data of its own (meta, sparse, quantized) or whose shape claims more elements than its data
            holds, or is nested deeper than :data:`MAX_DEPTH` (checked before the content hash reads it),
            has another ``format``, misses one of ``format``, ``version``, ``stage``, ``config``, ``model``,
            its content does not match its ``sha256`` (corrupt or edited), its model config is invalid or
            of another architecture than its stage's (:data:`STAGE_ARCHS`), its ``model`` is not a state
            dict (str keys, tensor values), a weight or optimizer state holds NaN or infinite values, or
            its stage is not ``expect_stage`` (the message says which stage it is and which was expected).
    """
    ckpt, sha256 = _load_verified(Path(path), map_location, expect_stage, hash_version_1=True)
    assert sha256 is not None  # (hashed here for a version-1 file)
    return ckpt, sha256


def _load_verified(
    path: Path,
    map_location: str | torch.device,
    expect_stage: str | Sequence[str] | None,
    *,
    hash_version_1: bool = False,
) -> tuple[dict[str, Any], str | None]:
    """:func:`load_checkpoint_with_sha256` with the recorded SHA-256, verified (None: a version-1 file,
    unless ``hash_version_1``: then its content's, hashed on the CPU before the tensors are moved; hashed
    after a move to ``"meta"`` it raised a bare ``NotImplementedError``, meta tensors holding no data)."""
    from examples.voc_joint.models.build import validate_model_config

    if path.is_dir():
        raise IsADirectoryError(f"checkpoint: expected a file, got the folder '{path}'")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: '{path}'")
    try:  # on the CPU: the content hash reads every tensor (a "meta" one has no data), then moved
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for objects, RuntimeError/EOFError for garbage
        raise CheckpointError(_unreadable(path, exc)) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} must hold a dict, got {type(ckpt).__name__}")
    problem = _content_problem(ckpt)  # before anything reads the tensors (the content hash copies each one)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} is malformed: {problem}")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} is not a transinit voc_joint checkpoint: missing keys {missing} "
            f"(found {sorted(map(str, ckpt))[:10]})"
        )
    if ckpt["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {ckpt['format']!r}, expected {FORMAT!r}")
    if not isinstance(ckpt["version"], int) or not 1 <= ckpt["version"] <= VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {ckpt['version']!r}, this code reads versions 1 to "
            f"{VERSION} (a newer version of the pipeline wrote it: update this checkout)"
        )
    recorded = ckpt.pop("sha256", None)
    if recorded is None and ckpt["version"] != 1:
        raise CheckpointError(f"checkpoint {path} has no 'sha256' content hash (version {ckpt['version']!r})")
    if recorded is not None and recorded != payload_sha256(ckpt):
        raise CheckpointError(
            f"checkpoint {path} is corrupt or was modified: the SHA-256 of its content differs from the one "
            "recorded when it was written"
        )
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["config"].get("model"), dict):
        raise CheckpointError(f"checkpoint {path} has no model config under config['model']")
    try:
        validate_model_config(ckpt["config"]["model"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    if not isinstance(ckpt["stage"], str) or ckpt["stage"] not in STAGE_MODELS:
        raise CheckpointError(f"checkpoint {path} has an unknown stage {ckpt['stage']!r}")
    arch = ckpt["config"]["model"]["arch"]
    if arch != STAGE_ARCHS[ckpt["stage"]]:
        raise CheckpointError(
            f"checkpoint {path} is a {ckpt['stage']!r} checkpoint, whose model must have arch "
            f"{STAGE_ARCHS[ckpt['stage']]!r}, got {arch!r}"
        )
    bad = _not_state_dict(ckpt["model"])
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path}: 'model' must be a state dict (str keys, tensor values), {bad}"
        )
    nonfinite = _nonfinite(ckpt)  # never written (save_checkpoint refuses them): a crafted file
    if nonfinite is not None:  # (a model of NaN weights evaluated to garbage, or trained on to a NaN loss)
        raise CheckpointError(f"checkpoint {path}: {nonfinite} holds NaN or infinite values")
    if expect_stage is not None:
        wanted = (expect_stage,) if isinstance(expect_stage, str) else tuple(expect_stage)
        if ckpt["stage"] not in wanted:
            names = " or ".join(repr(w) for w in wanted)
            raise CheckpointError(
                f"checkpoint {path} is a {ckpt['stage']!r} checkpoint ({STAGE_MODELS[ckpt['stage']]}); "
                f"expected a {names} checkpoint"
            )
    if recorded is None and hash_version_1:
        recorded = payload_sha256(ckpt)
    if torch.device(map_location) != torch.device("cpu"):
        ckpt = _moved(ckpt, torch.device(map_location))
    return ckpt, recorded


def _moved(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in its dicts, lists and tuples moved to ``device``."""
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, _moved(v, device)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_moved(v, device) for v in obj)
    return obj


def _not_state_dict(state: Any) -> str | None:
    """What makes ``state`` no state dict (a dict of str keys to tensors), e.g. ``"got list"``; None if it is
    one."""
    if not isinstance(state, dict):
        return f"got {type(state).__name__}"
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            return f"got the key {key!r:.100} ({type(key).__name__}) -> {type(value).__name__}"
    return None


def get_rng_state(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """All RNG states as tensors and plain values (weights-only loadable)."""
    np_state: Any = np.random.get_state()  # ("MT19937", keys, pos, has_gauss, gauss)
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


def _numpy_state(state: dict[str, Any]) -> tuple[Any, ...]:
    """The ``numpy.random.set_state`` tuple of a :func:`get_rng_state` dict."""
    npst = state["numpy"]
    return ("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["gauss"])


def _python_state(state: dict[str, Any]) -> tuple[Any, ...]:
    """The ``random.setstate`` tuple of a :func:`get_rng_state` dict."""
    pyst = state["python"]
    return (pyst["version"], tuple(int(v) for v in pyst["state"].tolist()), pyst["gauss"])


def cuda_states_restorable(state: dict[str, Any]) -> bool:
    """Whether :func:`set_rng_state` restores the CUDA generators of ``state``: it holds one state per GPU and
    this process sees as many (:func:`~examples.voc_joint.resume_notes.cuda_rng_note` says when it does
    not)."""
    saved = state.get("cuda") or []
    return bool(saved) and torch.cuda.is_available() and len(saved) == torch.cuda.device_count()


def set_rng_state(state: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    """Restore the states saved by :func:`get_rng_state` (the CUDA ones where
    :func:`cuda_states_restorable`)."""
    torch.set_rng_state(state["torch"].cpu())
    if cuda_states_restorable(state):
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    np.random.set_state(_numpy_state(state))
    random.setstate(_python_state(state))
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"].cpu())


def _rng_problem(state: Any) -> str | None:
    """Why ``state`` is no :func:`get_rng_state` dict that :func:`set_rng_state` restores (None: it is one):
    each state is set into a new generator of its kind, the global ones stay as they are."""
    if not isinstance(state, dict):
        return f"got {type(state).__name__}"
    try:
        torch.Generator().set_state(state["torch"])
        cuda = state.get("cuda", [])
        if not isinstance(cuda, list) or not all(
            isinstance(t, Tensor) and t.dtype == torch.uint8 for t in cuda
        ):
            return f"'cuda' must be a list of byte tensors, got {cuda!r:.100}"
        np.random.RandomState().set_state(_numpy_state(state))
        random.Random().setstate(_python_state(state))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, OverflowError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return None


#: The keys besides the model that ``--resume`` reads; every training checkpoint holds them.
TRAINING_KEYS = ("epoch", "step", "optimizer", "scheduler", "scaler", "rng")


def check_resumable(ckpt: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint (as :func:`load_checkpoint` returns it) whose training cannot be continued.

    A checkpoint without a training state (a weights-only file, as written for ``--seg-checkpoint``) and a
    malformed one (its content hash proves nothing about who wrote it) gave a ``KeyError``, a ``TypeError`` or
    an error from inside torch's RNG or optimizer code, or resumed from a negative epoch.

    Raises:
        CheckpointError: a missing :data:`TRAINING_KEYS` entry, or the first malformed value, named.
    """
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} holds no training state to resume (missing keys {missing}): a checkpoint of "
            "weights only can start a joint stage (--seg-checkpoint / --spixel-checkpoint), not continue one"
        )
    problem = _training_state_problem(ckpt)
    if problem is not None:
        raise CheckpointError(f"checkpoint {path} cannot be resumed: {problem}")


def _training_state_problem(ckpt: dict[str, Any]) -> str | None:
    """The first malformed part of a checkpoint's training state (None: none), e.g. ``"epoch must be an int
    >= 0, got -5"``."""
    counts = (("step", 0), ("epoch", 0), ("samples_in_epoch", 0), ("batch_in_epoch", 0), ("world_size", 1))
    for key, least in counts:  # an absent optional one (older checkpoints) reads as its least value
        value = ckpt.get(key, least)
        if type(value) is not int or value < least:
            return f"{key} must be an int >= {least}, got {value!r:.100}"
    elapsed = ckpt.get("elapsed_s", 0.0)
    if type(elapsed) not in (int, float) or not 0 <= elapsed < float("inf"):
        return f"elapsed_s must be a finite number >= 0, got {elapsed!r:.100}"
    config = ckpt["config"]
    for key, kind in (("args", dict), ("changes", list), ("sources", dict)):
        if config.get(key) is not None and not isinstance(config[key], kind):
            return f"config['{key}'] must be a {kind.__name__}, got {type(config[key]).__name__}"
    for change in config.get("changes") or []:
        if not isinstance(change, dict) or not {"step", "option", "old", "new"} <= set(change):
            return (
                f"config['changes'] must hold {{'step', 'option', 'old', 'new'}} dicts, got {change!r:.100}"
            )
    for option, source in (config.get("sources") or {}).items():
        if source and not (
            isinstance(source, dict)
            and isinstance(source.get("path"), str)
            and isinstance(source.get("sha256"), str)
        ):
            return f"config['sources'][{option!r}] must be a dict of str 'path', 'sha256': {source!r:.100}"
    optimizer = ckpt["optimizer"]
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    if not (
        isinstance(optimizer, dict)
        and isinstance(optimizer.get("state"), dict)
        and isinstance(groups, list)
        and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
        and all(type(i) is int for g in groups for i in g["params"])
    ):
        found = f" with keys {sorted(map(str, optimizer))[:5]}" if isinstance(optimizer, dict) else ""
        return (
            "optimizer must be an optimizer state dict ('state', and 'param_groups' with a 'params' list of "
            f"int each), got {type(optimizer).__name__}{found}"
        )
    for key in ("scheduler", "scaler"):
        if not isinstance(ckpt[key], dict):
            return f"{key} must be a state dict, got {type(ckpt[key]).__name__}"
    last = ckpt["scheduler"].get("last_epoch")
    if type(last) is not int or last < 0:
        return f"scheduler['last_epoch'] must be an int >= 0, got {last!r:.100}"
    states = ckpt["rng"] if isinstance(ckpt["rng"], list) else [ckpt["rng"]]
    if not states:
        return "rng holds no process's RNG states"
    for rank, state in enumerate(states):
        problem = _rng_problem(state)
        if problem is not None:
            return f"rng[{rank}] is not an RNG state that can be restored ({problem})"
    return None


def strip_key_prefixes(
    state_dict: dict[str, torch.Tensor],
    prefixes: Sequence[str],
    owner: str,
    *,
    of: str = "",
    error: type[ValueError] = ValueError,
) -> dict[str, torch.Tensor]:
    """``state_dict`` with each of ``prefixes`` removed in turn from the start of its keys (``"module."`` of a
    (Distributed)DataParallel-wrapped model, ``"backbone."`` of a ResNet saved inside a segmentation model).

    The module versions that ``state_dict()`` keeps in its ``_metadata`` attribute come along, their module
    names stripped alike: ``load_state_dict`` reads a module without them as one saved before versions, and
    BatchNorm then takes missing step counters (``num_batches_tracked``) as 0 where it refuses them otherwise.

    Raises:
        ValueError: (``error``) two keys that are one key once the prefixes are removed (``"w"`` and
            ``"module.w"``): one of the two tensors would be dropped without a word; named with ``owner``
            (the file, e.g. ``"checkpoint <path>"``) and ``of`` after the keys (e.g. ``" of its model"``).
    """
    out: dict[str, torch.Tensor] = OrderedDict()
    source: dict[str, str] = {}  # the file's key of each key out
    for key, value in state_dict.items():
        k = key
        for prefix in prefixes:
            k = k.removeprefix(prefix)
        if k in source:
            quoted = [repr(p) for p in prefixes]
            removed = (
                f"the prefix {quoted[0]} is"
                if len(quoted) == 1
                else f"the prefixes {', '.join(quoted[:-1])} and {quoted[-1]} are"
            )
            raise error(
                f"{owner}: the keys {source[k]!r} and {key!r}{of} are both {k!r} once {removed} removed; "
                "keep one of them"
            )
        source[k] = key
        out[k] = value
    return _with_metadata(out, state_dict, lambda name: _strip_module_name(name, prefixes))


def _strip_module_name(name: str, prefixes: Sequence[str]) -> str:
    """A module name of a state dict's ``_metadata`` (``"module.aspp"``; ``""`` the root) with ``prefixes``
    removed in turn as from its keys (``"module"``, the wrapped root, becomes ``""``)."""
    dotted = f"{name}." if name else ""
    for prefix in prefixes:
        dotted = dotted.removeprefix(prefix)
    return dotted[:-1]


def _with_metadata(
    out: dict[str, Tensor], state_dict: dict[str, Tensor], rename: Callable[[str], str | None]
) -> dict[str, Tensor]:
    """``out`` (an ``OrderedDict``) given the ``_metadata`` of ``state_dict``, each module name renamed by
    ``rename`` (``None``: left out), when ``state_dict`` has one; a later entry of the same new name wins (the
    wrapped root ``"module"`` over the wrapper's ``""``)."""
    metadata = getattr(state_dict, "_metadata", None)
    if isinstance(metadata, dict):
        renamed: OrderedDict[str, Any] = OrderedDict()
        for name, entry in metadata.items():
            new = rename(name) if isinstance(name, str) else None
            if new is not None:
                renamed[new] = entry
        setattr(out, "_metadata", renamed)  # noqa: B010  (a dict has no such attribute for mypy)
    return out


def strip_module_prefix(state_dict: dict[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    """``state_dict`` with the ``"module."`` prefix of a (Distributed)DataParallel-wrapped model removed
    (:func:`strip_key_prefixes`).

    Raises:
        CheckpointError: two keys that are one key without the prefix (``"w"`` and ``"module.w"``): one of the
            two tensors would be dropped without a word (named with the file ``path``).
    """
    return strip_key_prefixes(
        state_dict, ("module.",), f"checkpoint {path}", of=" of its model", error=CheckpointError
    )


_PARTS = {"deeplab": ("deeplabv3plus", "deeplab.", "seg"), "spixel": ("spixelfcn", "spixelfcn.", "spixel")}


def _part_state(ckpt: dict[str, Any], path: Path, part: str | None) -> dict[str, Tensor]:
    state = strip_module_prefix(ckpt["model"], path)
    if part is None:
        return state
    own_arch, prefix, stage = _PARTS[part]
    arch = ckpt["config"]["model"]["arch"]
    if arch == "joint":
        part_state: dict[str, Tensor] = OrderedDict(
            (k[len(prefix) :], v) for k, v in state.items() if k.startswith(prefix)
        )
        # the network's own module ("deeplab") is the root; the joint model's other modules are left out
        return _with_metadata(
            part_state,
            state,
            lambda name: _strip_module_name(name, (prefix,)) if f"{name}.".startswith(prefix) else None,
        )
    if arch != own_arch:
        raise CheckpointError(
            f"checkpoint {path} is a {ckpt['stage']!r} checkpoint ({arch}); the {part} network comes from a "
            f"{stage!r} or 'joint' checkpoint"
        )
    return state


def other_dtypes(expected: dict[str, Tensor], state: dict[str, Tensor], whose: str) -> list[str]:
    """The entries of ``state`` of another dtype than those of ``expected`` (a state dict), e.g.
    ``"pred.weight torch.int64 (config: torch.float32)"`` for ``whose="config"``: ``load_state_dict`` copied
    them, converted (an integer or complex file silently became other weights). ``train.py --resume``
    checks its model's state with it too.

    Example:
        >>> other_dtypes({"w": torch.zeros(2)}, {"w": torch.zeros(2, dtype=torch.int64)}, "config")
        ['w torch.int64 (config: torch.float32)']
    """
    return [
        f"{k} {state[k].dtype} ({whose}: {v.dtype})"
        for k, v in expected.items()
        if k in state and state[k].dtype != v.dtype
    ]


def _build_matching(config: dict[str, Any], state: dict[str, Tensor], path: Path) -> nn.Module:
    """``build_model(config)`` on the CPU, whatever the default device (under ``with torch.device("meta")``
    its parameters could not be filled), once the shapes and dtypes of its state dict, built on the meta
    device first (nothing allocated), are those of ``state``: a small crafted file never has a large model
    built.

    Raises:
        CheckpointError: missing or unexpected keys, other shapes or other dtypes (the first five of each).
    """
    from .models import build_model

    with torch.device("meta"):
        meta = build_model(config).state_dict()
    expected = {k: tuple(v.shape) for k, v in meta.items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    dtypes = other_dtypes(meta, state, "config")
    if got != expected or dtypes:
        missing = sorted(set(expected) - set(got))
        unexpected = sorted(set(got) - set(expected))
        shapes = [f"{k} {got[k]} (config: {v})" for k, v in expected.items() if k in got and got[k] != v]
        raise CheckpointError(
            f"checkpoint {path} does not match its own model config: missing keys {missing[:5]}, unexpected "
            f"keys {unexpected[:5]}, other shapes {shapes[:5]}, other dtypes {dtypes[:5]}"
        )
    with torch.device("cpu"):
        return build_model(config)


#: Model config values that only set the initial weights. A model built with other ones holds the same
#: network once a checkpoint's weights are loaded (:func:`load_weights_into` does not compare them), but for
#: one: ``fusion_init="zero_residual"`` also adds ``U`` to the fusion stack's output, so a change to or from
#: it is compared (:data:`RESIDUAL_FUSION_INIT`).
INIT_ONLY_CONFIG = frozenset({"centre_bias", "fusion_init"})

#: The fusion init that changes the forward map (``U + f([S, U])``), not only the initial weights.
RESIDUAL_FUSION_INIT = "zero_residual"


def _other_config(model: nn.Module, recorded: dict[str, Any], part: str | None) -> list[str]:
    """``"<name>: <recorded> (checkpoint) -> <own> (model)"`` for every config value of ``model``'s networks
    (``models.model_config``: a DDP / DataParallel wrapper and ``SegmentationOnly`` unwrapped) that differs
    from the checkpoint's ``recorded`` model config, for ``part`` or for every network the two share. Not
    compared: values one side lacks (a model of another kind, a record of an older version),
    :data:`INIT_ONLY_CONFIG` (a change to or from ``"zero_residual"`` aside), and the fusion stack's widths
    and activation of a joint model without one (no weights: nothing they change)."""
    from .models import model_config

    try:
        own = model_config(model)
    except TypeError:  # not one of the pipeline's networks: no config to compare
        return []
    # a part's network has that part's key in its own config ("deeplab" for a DeepLabV3+, "spixel" for a
    # SpixelFCN); a network of another kind lacks it (and its keys refuse it below)
    keys = [part] if part is not None else [k for k in ("deeplab", "spixel", "joint") if k in own]
    differ = []
    for key in keys:
        mine, theirs = own.get(key), recorded.get(key)
        if not isinstance(mine, dict) or not isinstance(theirs, dict):
            continue
        skip = set(INIT_ONLY_CONFIG)
        if key == "joint" and not mine.get("fusion") and not theirs.get("fusion"):
            skip |= {"fusion_hidden", "fusion_activation"}
        prefix = "" if len(keys) == 1 else f"{key}."
        for name in sorted(set(mine) & set(theirs) - skip, key=str):
            if mine[name] != theirs[name]:
                differ.append(f"{prefix}{name}: {theirs[name]!r} (checkpoint) -> {mine[name]!r} (model)")
        was, now = theirs.get("fusion_init"), mine.get("fusion_init")
        stacks = key == "joint" and mine.get("fusion") and theirs.get("fusion") and None not in (was, now)
        if stacks and (was == RESIDUAL_FUSION_INIT) != (now == RESIDUAL_FUSION_INIT):  # + U, or not
            differ.append(
                f"{prefix}fusion_init: {was!r} (checkpoint) -> {now!r} (model) ({RESIDUAL_FUSION_INIT!r} "
                "adds U to the stack's output: another map with the same weights)"
            )
    return differ


def load_weights_into(
    model: nn.Module, path: str | Path, *, part: str | None = None, check_config: bool = True
) -> dict[str, Any]:
    """Load the weights of a pipeline checkpoint into ``model`` (strict), optionally one sub-network of it.

    Args:
        model: the module to fill.
        path: checkpoint file.
        part: ``None`` (whole model), ``"deeplab"`` or ``"spixel"``: take that sub-network, from a stage
            checkpoint of the same network or from a joint checkpoint.
        check_config: compare ``model``'s config with the checkpoint's record (below); ``False`` for a
            deliberate change that keeps the weights' meaning, e.g. DeepLabV3+ trained at output stride 16
            and evaluated at 8.

    Returns:
        dict: the checkpoint.

    Raises:
        CheckpointError: wrong architecture, the keys/shapes/dtypes do not match ``model``, or the model's
            ``config`` differs from the checkpoint's record in a value that shapes do not show and that still
            matters once the weights are loaded (DeepLabV3+'s ``output_stride``, SpixelFCN's and the joint
            model's ``cell_size``, the joint ``mode``, a ``fusion_init`` changed to or from
            ``"zero_residual"``, which adds ``U`` to the stack's output); values that only set the initial
            weights (:data:`INIT_ONLY_CONFIG`) are not compared.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    state = _part_state(ckpt, path, part)
    dtypes = other_dtypes(model.state_dict(), state, "model")
    if dtypes:
        raise CheckpointError(f"checkpoint {path} does not match the model: other dtypes {dtypes[:5]}")
    differ = _other_config(model, ckpt["config"]["model"], part) if check_config else []
    if differ:
        raise CheckpointError(
            f"checkpoint {path} does not match the model: other config values ({'; '.join(differ[:5])}); "
            "build the model from the checkpoint's config (load_model_from_checkpoint, load_network), or "
            "pass check_config=False for a deliberate change"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the model: {str(exc)[:500]}") from exc
    return ckpt


def _load_part_checkpoint(path: Path, part: str) -> dict[str, Any]:
    """A checkpoint that holds the ``part`` network: one of its own stage, or a joint one."""
    return load_checkpoint(path, expect_stage=(_PARTS[part][2], "joint"))


def network_config(path: str | Path, part: str) -> dict[str, Any]:
    """The model config of the ``part`` network (``"deeplab"`` or ``"spixel"``) of a stage or joint
    checkpoint (a copy; the keyword arguments of its model class).

    Raises:
        CheckpointError: as :func:`load_network`.
    """
    return dict(_load_part_checkpoint(Path(path), part)["config"]["model"][part])


def load_network(path: str | Path, part: str) -> nn.Module:
    """The ``part`` network (``"deeplab"`` or ``"spixel"``) of a stage or joint checkpoint, built from its
    config and filled with its weights.

    Raises:
        CheckpointError: an invalid checkpoint, or one of another network (e.g. a ``spixel`` checkpoint asked
            for ``"deeplab"``: the message says which stage it is and which were expected).
    """
    path = Path(path)
    ckpt = _load_part_checkpoint(path, part)
    state = _part_state(ckpt, path, part)
    net = _build_matching({"arch": _PARTS[part][0], part: ckpt["config"]["model"][part]}, state, path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path} does not match its own model config: {str(exc)[:500]}"
        ) from exc
    return net


def load_model_from_checkpoint(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    expect_stage: str | Sequence[str] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved in a checkpoint, load its weights and put it in eval mode.

    A ``seg`` checkpoint gives ``SegmentationOnly(DeepLabV3Plus)`` and a ``joint`` checkpoint a
    ``JointModel``: both obey the pipeline's model contract (``model(seg_input, spixel_input) -> dict``). A
    ``spixel`` checkpoint gives the bare ``SpixelFCN`` (``model(spixel_input) -> assoc``).

    The model is built on the CPU (whatever the default device, e.g. under ``with torch.device("meta")``),
    once the shapes of the checkpoint's weights are those of its config, filled, then moved.

    Args:
        path: the checkpoint.
        map_location: where the model goes.
        expect_stage: the stage(s) the caller can use (e.g. ``("seg", "joint")`` for evaluation); None: any.

    Returns:
        tuple: ``(model, config)`` with ``config`` the checkpoint's ``config`` dict (``"model"``, ``"args"``)
        plus ``"stage"``, ``"epoch"``, ``"step"``, ``"torch_version"`` (the torch that trained it; None
        for a checkpoint written before 2026-12-02) and ``"sha256"``, the SHA-256 of its content
        (``load_checkpoint_with_sha256``: the identity of the weights, which two runs with the same
        config and step need not share).

    Raises:
        FileNotFoundError: missing file.
        IsADirectoryError: ``path`` is a folder.
        CheckpointError: not a weights-only pipeline checkpoint, corrupt, invalid model config, wrong stage,
            or mismatched weights.
    """
    from .models import SegmentationOnly

    ckpt, sha256 = load_checkpoint_with_sha256(path, map_location="cpu", expect_stage=expect_stage)
    state = strip_module_prefix(ckpt["model"], path)
    model = _build_matching(ckpt["config"]["model"], state, Path(path))  # config checked by load_checkpoint
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {path} does not match its own model config: {str(exc)[:500]}"
        ) from exc
    if ckpt["config"]["model"]["arch"] == "deeplabv3plus":
        model = SegmentationOnly(model)
    model = model.to(map_location).eval()
    config = dict(ckpt["config"])
    config.update(stage=ckpt["stage"], epoch=ckpt.get("epoch"), step=ckpt.get("step"))
    config["torch_version"] = ckpt.get("torch_version")
    config["sha256"] = sha256
    return model, config
