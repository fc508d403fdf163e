"""The refusal of an unreadable checkpoint says what is wrong with the file, never to load it unsafely."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from examples.voc_joint.checkpoint import CheckpointError, load_checkpoint


def _refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    return str(info.value)


def test_damaged_files_are_called_damaged(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.zeros(64, 64)}}, good)
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "short.pt": data[:10],
        "garbage.pt": b"not a checkpoint at all" * 8,
        "text.pt": b"hello world garbage" * 10,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        message = _refusal(tmp_path / name)
        assert f"refusing checkpoint {tmp_path / name}: the file is damaged" in message, message
        assert "or is not a checkpoint" in message and "weights_only=False" not in message, message
        assert "pickled" not in message, message


def test_pickled_objects_are_named_without_unsafe_advice(tmp_path: Path) -> None:
    path = tmp_path / "objects.pt"
    torch.save({"model": {}, "extra": argparse.Namespace(a=1)}, path)
    message = _refusal(path)
    assert "holds pickled Python objects (first: argparse.Namespace), which are never loaded" in message
    assert "weights_only=False" not in message and "damaged" not in message
