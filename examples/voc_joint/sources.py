"""The joint stage's source checkpoints (``--seg-checkpoint``, ``--spixel-checkpoint``): their network
configs and SHA-256, read once per file version, recorded in the joint run's checkpoints and checked on
resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from examples.voc_joint.checkpoint import CheckpointError, load_checkpoint_with_sha256
from examples.voc_joint.cli import UsageError, flag

__all__ = [
    "SOURCES",
    "check_sources",
    "joint_sources",
    "network_config",
    "source_facts",
]

#: :func:`source_facts` of the last :data:`_CACHE_SIZE` file versions read (a stage reads two files).
_CACHE: dict[tuple[str, int, int, str], tuple[dict[str, Any], str]] = {}
_CACHE_SIZE = 8
#: The joint stage's source checkpoints: option, network and the stages whose checkpoints hold that network.
SOURCES = {
    "seg_checkpoint": ("deeplab", ("seg", "joint")),
    "spixel_checkpoint": ("spixel", ("spixel", "joint")),
}


def source_facts(path: Path, part: str, option: str) -> tuple[dict[str, Any], str]:
    """The model config of the ``part`` network (``"deeplab"`` / ``"spixel"``) of a seg, spixel or joint
    checkpoint and the checkpoint's SHA-256 (:func:`~examples.voc_joint.checkpoint.payload_sha256`, the hash
    it records, verified on reading and not computed again: ``load_checkpoint_with_sha256``); read once per
    file version (of the last few)."""
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, part)
    if key not in _CACHE:
        stages = next(s for p, s in SOURCES.values() if p == part)
        try:
            ckpt, sha = load_checkpoint_with_sha256(path, expect_stage=stages)  # hashed once, verified
        except CheckpointError as exc:
            raise CheckpointError(f"{option}: {exc}") from exc
        _CACHE[key] = (dict(ckpt["config"]["model"][part]), sha)
        while len(_CACHE) > _CACHE_SIZE:  # the oldest first: no growth over rounds in a process
            del _CACHE[next(iter(_CACHE))]
    config, sha = _CACHE[key]
    return dict(config), sha


def network_config(path: Path, part: str, option: str) -> dict[str, Any]:
    """The model config of the ``part`` network of a seg, spixel or joint checkpoint."""
    return source_facts(path, part, option)[0]


def joint_sources(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    """What the joint stage starts from: ``{"seg_checkpoint": {"path": ..., "sha256": ...}, ...}`` (recorded
    in its checkpoints' ``config["sources"]``; empty for networks started from scratch)."""
    out = {}
    for option, (part, _) in SOURCES.items():
        path = getattr(args, option, None)
        if path is not None:
            try:
                sha = source_facts(Path(path), part, flag(option))[1]
            except OSError as exc:  # gone since it was checked: an error every process raises (see _agree)
                raise CheckpointError(f"{flag(option)}: cannot read {path}: {exc}") from exc
            out[option] = {"path": str(path), "sha256": sha}
    return out


def check_sources(ckpt: dict[str, Any], args: argparse.Namespace, source: Path) -> None:
    """Refuse to resume or skip a joint run whose seg / spixel source checkpoint changed since it started
    (its recorded SHA-256 differs, or the file is gone): its weights came from a network that no longer
    exists (e.g. ``--stage all --resume`` after a new seg stage). Checkpoints without a record pass."""
    recorded = ckpt["config"].get("sources") or {}
    for option, (part, _) in SOURCES.items():
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
        now = source_facts(Path(path), part, spelling)[1]
        if now != before["sha256"]:
            raise UsageError(
                f"joint stage: {was}, which has changed since (SHA-256 now {now[:16]}: other weights); "
                + advice
            )
