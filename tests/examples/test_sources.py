"""The joint stage's source checkpoints (``examples/voc_joint/sources.py``) on their own: the cache key of a
source checkpoint's facts, the copies it hands out, and ``check_sources`` / ``joint_sources`` (written from a
mutation pass, 2026-12-07: each test pins what a surviving mutant changed)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from examples.voc_joint import sources
from examples.voc_joint.checkpoint import CheckpointError
from examples.voc_joint.cli import UsageError


def _fake_loads(monkeypatch) -> list[Path]:
    """Replace the checkpoint reader by one whose facts are the file's bytes (per network part)."""
    loads: list[Path] = []

    def fake_load(path, expect_stage=None):
        loads.append(Path(path))
        data = Path(path).read_bytes().decode()
        model = {"deeplab": {"tag": f"deeplab {data}"}, "spixel": {"tag": f"spixel {data}"}}
        return {"config": {"model": model}}, data.ljust(64, "0")

    monkeypatch.setattr(sources, "load_checkpoint_with_sha256", fake_load)
    monkeypatch.setattr(sources, "_CACHE", {})
    return loads


@pytest.mark.parametrize(
    "before, after, tick",
    [
        ("aaaa", "bbbb", 2),  # same size, another mtime: new weights of the same shapes
        ("aa", "aaaa", 1),  # same mtime (a coarse file-system clock), another size
    ],
)
def test_a_rewritten_file_is_read_again(tmp_path, monkeypatch, before: str, after: str, tick: int) -> None:
    """Same path, another file version (by its mtime or by its size): its facts are read again."""
    _fake_loads(monkeypatch)
    path = tmp_path / "seg.pt"
    path.write_text(before)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert sources.source_facts(path, "deeplab", "--seg-checkpoint")[0] == {"tag": f"deeplab {before}"}
    path.write_text(after)
    os.utime(path, ns=(tick * 1_000_000_000, tick * 1_000_000_000))
    config, sha = sources.source_facts(path, "deeplab", "--seg-checkpoint")
    assert config == {"tag": f"deeplab {after}"} and sha.startswith(after)


def test_the_two_networks_of_one_joint_checkpoint_are_cached_apart(tmp_path, monkeypatch) -> None:
    """A joint checkpoint holds both networks: its deeplab facts are not its spixel facts."""
    _fake_loads(monkeypatch)
    path = tmp_path / "joint.pt"
    path.write_text("j")
    assert sources.network_config(path, "deeplab", "--seg-checkpoint") == {"tag": "deeplab j"}
    assert sources.network_config(path, "spixel", "--spixel-checkpoint") == {"tag": "spixel j"}


def test_a_caller_changing_the_config_it_got_does_not_change_the_cache(tmp_path, monkeypatch) -> None:
    loads = _fake_loads(monkeypatch)
    path = tmp_path / "seg.pt"
    path.write_text("a")
    sources.network_config(path, "deeplab", "--seg-checkpoint")["tag"] = "changed by a caller"
    assert sources.network_config(path, "deeplab", "--seg-checkpoint") == {"tag": "deeplab a"}
    assert len(loads) == 1  # still read once


def test_a_source_checkpoint_of_another_stage_is_refused_naming_the_option(tmp_path, monkeypatch) -> None:
    """A spixel checkpoint given as ``--seg-checkpoint`` (or a seg one as ``--spixel-checkpoint``) holds
    no such network: refused, naming the option; a joint checkpoint is a source of either network."""
    from tests.examples.helpers import untrained_checkpoints

    monkeypatch.setattr(sources, "_CACHE", {})
    seg, spixel = untrained_checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match=r"^--seg-checkpoint: "):
        sources.source_facts(spixel, "deeplab", "--seg-checkpoint")
    with pytest.raises(CheckpointError, match=r"^--spixel-checkpoint: "):
        sources.source_facts(seg, "spixel", "--spixel-checkpoint")


def test_a_joint_checkpoint_is_a_source_of_both_networks(tmp_path, monkeypatch) -> None:
    """``SOURCES``: a joint stage's checkpoint holds the deeplab and the spixel network, so it is a valid
    ``--seg-checkpoint`` and ``--spixel-checkpoint``."""
    import torch

    from examples.voc_joint.checkpoint import FORMAT, save_checkpoint
    from examples.voc_joint.models import DeepLabV3Plus, JointModel, SpixelFCN, model_config

    monkeypatch.setattr(sources, "_CACHE", {})
    torch.manual_seed(0)
    net = JointModel(DeepLabV3Plus(21, "resnet18", aspp_channels=8), SpixelFCN(cell_size=8, width=4), 21)
    config = {"model": model_config(net), "args": {}}
    ckpt = {"format": FORMAT, "version": 1, "stage": "joint", "config": config, "model": net.state_dict()}
    path = save_checkpoint(tmp_path / "joint" / "checkpoint.pt", ckpt)
    assert sources.source_facts(path, "deeplab", "--seg-checkpoint")[0]["backbone"] == "resnet18"
    assert sources.source_facts(path, "spixel", "--spixel-checkpoint")[0]["cell_size"] == 8


def test_joint_sources_names_the_option_of_a_file_gone_since_it_was_checked(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sources, "_CACHE", {})
    args = argparse.Namespace(seg_checkpoint=str(tmp_path / "gone.pt"), spixel_checkpoint=None)
    with pytest.raises(CheckpointError, match=rf"^--seg-checkpoint: cannot read {tmp_path / 'gone.pt'}: "):
        sources.joint_sources(args)


def _recorded(path: Path, sha: str) -> dict:
    return {"config": {"sources": {"seg_checkpoint": {"path": str(path), "sha256": sha}}}}


def test_a_recorded_source_that_is_not_given_now_is_not_checked(tmp_path) -> None:
    """A joint run resumed without ``--seg-checkpoint`` (None), or a source given now that the checkpoint
    does not record: nothing to compare, no error."""
    ckpt = _recorded(tmp_path / "seg.pt", "0" * 64)
    sources.check_sources(ckpt, argparse.Namespace(seg_checkpoint=None, spixel_checkpoint=None), tmp_path)
    other = tmp_path / "spixel.pt"
    other.write_text("s")
    args = argparse.Namespace(seg_checkpoint=None, spixel_checkpoint=str(other))
    sources.check_sources(ckpt, args, tmp_path)


def test_a_checkpoint_without_a_sources_record_passes(tmp_path) -> None:
    """Docstring: "Checkpoints without a record pass" (one written before sources were recorded)."""
    path = tmp_path / "seg.pt"
    path.write_text("s")
    args = argparse.Namespace(seg_checkpoint=str(path), spixel_checkpoint=None)
    sources.check_sources({"config": {"model": {}}}, args, tmp_path)


def test_a_changed_source_given_by_a_relative_path_is_refused(tmp_path, monkeypatch) -> None:
    """The recorded path is absolute, the one given now relative to the working folder: the same file,
    whose change is refused (not taken for another file given)."""
    _fake_loads(monkeypatch)
    path = tmp_path / "seg.pt"
    path.write_text("new weights")
    ckpt = _recorded(path, "old weights".ljust(64, "0"))
    monkeypatch.chdir(tmp_path)
    args = argparse.Namespace(seg_checkpoint="seg.pt", spixel_checkpoint=None)
    with pytest.raises(UsageError, match="which has changed since"):
        sources.check_sources(ckpt, args, tmp_path)
