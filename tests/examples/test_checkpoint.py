"""Checkpoints: atomic writes, weights-only reads with clear refusals, RNG states, model rebuilding."""

from __future__ import annotations

import argparse
import errno
import os
import random
import re

import numpy as np
import pytest
import torch

from examples.voc_joint.checkpoint import (
    FORMAT,
    VERSION,
    CheckpointError,
    check_resumable,
    get_rng_state,
    load_checkpoint,
    load_checkpoint_with_sha256,
    load_model_from_checkpoint,
    load_network,
    load_weights_into,
    payload_sha256,
    remove_stale_temporaries,
    save_checkpoint,
    set_rng_state,
    strip_key_prefixes,
)
from examples.voc_joint.models import DeepLabV3Plus, JointModel, SegmentationOnly, SpixelFCN, model_config


def test_payload_hash_covers_dtype_and_shape_and_ignores_key_order() -> None:
    base = payload_sha256({"w": torch.zeros(2), "step": 1, "cfg": {"a": 1, "b": [2, 3]}})
    assert base == payload_sha256({"cfg": {"b": [2, 3], "a": 1}, "step": 1, "w": torch.zeros(2)})
    # the same 8 bytes as another dtype or shape is another checkpoint
    assert base != payload_sha256(
        {"w": torch.zeros(1, dtype=torch.float64), "step": 1, "cfg": {"a": 1, "b": [2, 3]}}
    )
    assert base != payload_sha256({"w": torch.zeros(2, 1), "step": 1, "cfg": {"a": 1, "b": [2, 3]}})


def _training_ckpt() -> dict:
    """A well-formed training checkpoint dict (as ``load_checkpoint`` returns it) of a small network."""
    net = SpixelFCN(cell_size=8, width=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return {
        **_ckpt(net, "spixel"),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": {},
        "rng": [get_rng_state()],
        "world_size": 1,
        "elapsed_s": 2.5,
    }


def _set_in(key: str, value):
    def edit(c: dict) -> None:
        c[key] = value

    return edit


def _set_in_config(key: str, value):
    def edit(c: dict) -> None:
        c["config"] = {**c["config"], key: value}

    return edit


def _first_group_params(params: list):
    def edit(c: dict) -> None:
        groups = [dict(g) for g in c["optimizer"]["param_groups"]]
        groups[0]["params"] = params
        c["optimizer"] = {**c["optimizer"], "param_groups": groups}

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (_set_in("world_size", 0), r"world_size must be an int >= 1, got 0"),
        (_set_in("step", True), r"step must be an int >= 0, got True"),
        (_set_in("elapsed_s", float("inf")), r"elapsed_s must be a finite number >= 0, got inf"),
        (
            _set_in_config("changes", [{"step": 1, "option": "--lr", "old": 0.1}]),
            r"config\['changes'\] must hold \{'step', 'option', 'old', 'new'\} dicts",
        ),
        (
            _set_in_config("sources", {"seg_checkpoint": {"path": "s.pt", "sha256": None}}),
            r"config\['sources'\]\['seg_checkpoint'\] must be a dict of str 'path', 'sha256'",
        ),
        (_first_group_params(["0"]), r"optimizer must be an optimizer state dict"),
        (
            lambda c: c.update(scheduler={**c["scheduler"], "last_epoch": -1}),
            r"scheduler\['last_epoch'\] must be an int >= 0, got -1",
        ),
        (_set_in("rng", []), r"rng holds no process's RNG states"),
        (
            lambda c: c["rng"][0].update(cuda=[torch.zeros(2)]),
            r"rng\[0\] is not an RNG state that can be restored \('cuda' must be a list of byte tensors",
        ),
        (lambda c: c.pop("scaler"), r"holds no training state to resume \(missing keys \['scaler'\]\)"),
    ],
)
def test_check_resumable_names_each_malformed_part(edit, match) -> None:
    """Each part of a training state that would fail (or silently misbehave) inside a resume is refused by
    ``check_resumable`` with its name and value; the unedited state is accepted."""
    ck = _training_ckpt()
    check_resumable(ck, "c.pt")
    edit(ck)
    with pytest.raises(CheckpointError, match=match):
        check_resumable(ck, "c.pt")


def test_payload_hash_covers_the_key_names() -> None:
    """A renamed key (same values in the same sorted order) is another checkpoint: the keys are hashed too."""
    base = payload_sha256({"model": {"a.weight": torch.ones(2)}, "step": 1})
    assert base != payload_sha256({"model": {"b.weight": torch.ones(2)}, "step": 1})
    assert base != payload_sha256({"model": {"a.weight": torch.ones(2)}, "steps": 1})


def test_payload_hash_covers_how_lists_are_nested() -> None:
    """The same values grouped into other lists are another checkpoint: each list's length is hashed."""
    assert payload_sha256({"c": [[1], 2]}) != payload_sha256({"c": [1, [2]]})
    assert payload_sha256({"c": [[1, 2]]}) != payload_sha256({"c": [1, 2]})


def _ckpt(model: torch.nn.Module, stage: str) -> dict:
    return {
        "format": FORMAT,
        "version": 1,
        "stage": stage,
        "config": {"model": model_config(model), "args": {}},
        "model": model.state_dict(),
        "epoch": 3,
        "step": 12,
    }


def test_save_is_atomic_and_round_trips(tmp_path) -> None:
    net = SpixelFCN(cell_size=8, width=4)
    path = save_checkpoint(tmp_path / "sub" / "c.pt", _ckpt(net, "spixel"))
    # no temporary file is left beside it (the check was for "c.pt.tmp", a name the writer never uses)
    assert path.is_file() and sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["c.pt"]
    ck = load_checkpoint(path)
    assert ck["epoch"] == 3 and ck["config"]["model"] == {
        "arch": "spixelfcn",
        "spixel": {"cell_size": 8, "width": 4},
    }
    save_checkpoint(path, {**_ckpt(net, "spixel"), "epoch": 4})  # overwrite in place
    assert load_checkpoint(path)["epoch"] == 4 and sorted(p.name for p in path.parent.iterdir()) == ["c.pt"]


def test_a_temporary_name_another_writer_holds_is_left_to_it(tmp_path, monkeypatch) -> None:
    """Concurrent writers of one path each write their own temporary file: a drawn name that exists (another
    writer's) is drawn again, never opened and overwritten."""
    from examples.voc_joint import checkpoint

    names = iter(["0badc0de", "0badc0de", "600dc0de"])
    monkeypatch.setattr(checkpoint.secrets, "token_hex", lambda n: next(names))
    others = tmp_path / ".c.pt.0badc0de.tmp"
    others.write_bytes(b"another writer's half-written checkpoint")
    save_checkpoint(tmp_path / "c.pt", _ckpt(SpixelFCN(cell_size=8, width=4), "spixel"))
    assert others.read_bytes() == b"another writer's half-written checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.pt.0badc0de.tmp", "c.pt"]
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 3


def test_save_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch) -> None:
    """Durability order of the atomic write: the data fsynced in the temporary file, renamed onto the path,
    then the folder fsynced (so the rename survives a power loss); the file gets 0666 & ~umask, not 0600."""
    import os
    import stat

    import examples.voc_joint.checkpoint as ckpt_mod

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "fsync", fsync)
    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    path = save_checkpoint(tmp_path / "c.pt", _ckpt(SpixelFCN(cell_size=8, width=4), "spixel"))
    monkeypatch.undo()
    assert events == [("fsync", "file"), ("replace", "c.pt"), ("fsync", "dir")]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert load_checkpoint(path)["epoch"] == 3


def test_a_failed_write_keeps_the_previous_file_and_removes_its_temporary(tmp_path, monkeypatch) -> None:
    import examples.voc_joint.checkpoint as ckpt_mod

    net = SpixelFCN(cell_size=8, width=4)
    path = save_checkpoint(tmp_path / "c.pt", _ckpt(net, "spixel"))

    def replace(src, dst) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {**_ckpt(net, "spixel"), "epoch": 4})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]
    assert load_checkpoint(path)["epoch"] == 3


class _FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes, as on a full disk."""

    def __init__(self, fh, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


@pytest.mark.parametrize("room", [2000, 10**9])  # torch's writer fails inside; the final fsync fails
def test_a_full_disk_gives_an_oserror_naming_the_file_and_enospc(tmp_path, monkeypatch, room) -> None:
    """torch's zip writer hides the ENOSPC OSError behind "RuntimeError: [enforce fail at
    inline_container.cc:...] . unexpected pos ...": the error is an OSError (train.py's one-line error, exit
    status 1) that names the file and the cause, and the previous checkpoint stays."""
    import examples.voc_joint.checkpoint as ckpt_mod

    net = SpixelFCN(cell_size=8, width=4)
    path = save_checkpoint(tmp_path / "c.pt", _ckpt(net, "spixel"))
    fdopen = os.fdopen
    monkeypatch.setattr(ckpt_mod.os, "fdopen", lambda fd, mode: _FullDisk(fdopen(fd, mode), room))
    if room > 2000:  # the data fit; the disk is found full when flushing to it

        def fsync(fd: int) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(ckpt_mod.os, "fsync", fsync)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, {**_ckpt(net, "spixel"), "epoch": 4})
    monkeypatch.undo()
    text = str(info.value)
    assert text.startswith(f"cannot write checkpoint {path}: No space left on device (ENOSPC);"), text
    assert "inline_container" not in text and "\n" not in text and info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no temporary left
    assert load_checkpoint(path)["epoch"] == 3


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES", "EROFS"])
@pytest.mark.parametrize("step", ["open", "fsync", "replace"])
def test_every_step_of_a_failed_save_names_the_checkpoint(tmp_path, monkeypatch, step, code) -> None:
    """Only a failed write or fsync was the one-line "cannot write checkpoint <path>: ...": a failing open of
    the temporary file or rename raised the bare OSError naming ``.c.pt.<random>.tmp``, and on a file system
    remounted read-only (EROFS) the clean-up's own failing unlink replaced even the one-line error. Every
    step now gives it, with the errno; the previous checkpoint stays and no temporary file is left."""
    import stat
    from pathlib import Path

    import examples.voc_joint.checkpoint as ckpt_mod

    net = SpixelFCN(cell_size=8, width=4)
    folder = tmp_path / "run \u00e9t\u00e9"
    path = save_checkpoint(folder / "c.pt", _ckpt(net, "spixel"))
    number = getattr(errno, code)
    real_open, real_fsync, real_replace, real_unlink = os.open, os.fsync, os.replace, Path.unlink

    def fail_open(file, flags, *args):
        if step == "open" and flags & os.O_CREAT:
            raise OSError(number, os.strerror(number), str(file))
        return real_open(file, flags, *args)

    def fail_fsync(fd: int) -> None:
        if step == "fsync" and not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(number, os.strerror(number))
        real_fsync(fd)

    def fail_replace(src, dst) -> None:
        if step == "replace":
            raise OSError(number, os.strerror(number), str(src), None, str(dst))
        real_replace(src, dst)

    def unlink(self, missing_ok=False) -> None:
        if code == "EROFS":  # the whole file system refuses writes: the temporary file stays
            raise OSError(number, os.strerror(number), str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(ckpt_mod.os, "open", fail_open)
    monkeypatch.setattr(ckpt_mod.os, "fsync", fail_fsync)
    monkeypatch.setattr(ckpt_mod.os, "replace", fail_replace)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError) as info:
        save_checkpoint(path, {**_ckpt(net, "spixel"), "epoch": 4})
    monkeypatch.undo()
    text = str(info.value)
    assert text.startswith(
        f"cannot write checkpoint {path}: {os.strerror(number)} ({code}); the file was not "
    ), text
    assert ".tmp" not in text and info.value.errno == number, text
    left = sorted(p.name for p in folder.iterdir())
    assert left == ["c.pt"] if code != "EROFS" or step == "open" else len(left) == 2, left
    assert load_checkpoint(path)["epoch"] == 3


def test_a_runtime_error_not_about_writing_is_left_as_it_is(tmp_path, monkeypatch) -> None:
    import examples.voc_joint.checkpoint as ckpt_mod

    def save(obj, f) -> None:
        raise RuntimeError("something else")

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    with pytest.raises(RuntimeError, match=r"^something else$"):
        save_checkpoint(tmp_path / "c.pt", _ckpt(SpixelFCN(cell_size=8, width=4), "spixel"))
    assert list(tmp_path.iterdir()) == []


def test_refuses_pickled_objects(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    net = SpixelFCN(width=4)
    torch.save({**_ckpt(net, "spixel"), "extra": argparse.Namespace(a=1)}, path)
    with pytest.raises(CheckpointError, match=r"refusing checkpoint .*evil\.pt.*weights_only=True"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        load_model_from_checkpoint(path)


def test_a_checkpoint_this_user_may_not_read_is_named_so_not_called_damaged(tmp_path, monkeypatch) -> None:
    """``--checkpoint`` / ``--resume`` of a file with mode 000 (not reproducible as root, hence the stand-in
    for ``open``'s PermissionError) was "the file is damaged (truncated or corrupted)"."""
    locked = tmp_path / "locked.pt"
    save_checkpoint(locked, _ckpt(SpixelFCN(width=4), "spixel"))

    def denied(path: object, **kwargs: object) -> object:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(locked)
    assert str(info.value) == f"cannot read checkpoint {locked}: Permission denied"


def test_refuses_garbage_wrong_keys_and_format(tmp_path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_checkpoint(garbage)
    plain = tmp_path / "state_dict.pt"
    torch.save(SpixelFCN(width=4).state_dict(), plain)
    with pytest.raises(
        CheckpointError, match=r"state_dict\.pt is not a transinit voc_joint checkpoint: missing keys"
    ):
        load_checkpoint(plain)
    other = tmp_path / "other.pt"
    torch.save({**_ckpt(SpixelFCN(width=4), "spixel"), "format": "something-else"}, other)
    with pytest.raises(CheckpointError, match="has format 'something-else'"):
        load_checkpoint(other)
    for version in (VERSION + 1, 0, "3"):  # a newer pipeline's checkpoint, or no version at all
        newer = tmp_path / "newer.pt"
        save_checkpoint(newer, {**_ckpt(SpixelFCN(width=4), "spixel"), "version": version})
        match = f"format version {version!r}, this code reads versions 1 to {VERSION}"
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(newer)
    listing = tmp_path / "list.pt"
    torch.save([1, 2], listing)
    with pytest.raises(CheckpointError, match="must hold a dict, got list"):
        load_checkpoint(listing)


@pytest.mark.parametrize("key", ["format", "version", "stage", "config", "model"])
def test_each_required_key_is_required(tmp_path, key) -> None:
    path = save_checkpoint(
        tmp_path / "c.pt", {k: v for k, v in _ckpt(SpixelFCN(width=4), "spixel").items() if k != key}
    )
    with pytest.raises(
        CheckpointError, match=rf"c\.pt is not a transinit voc_joint checkpoint: missing keys \['{key}'\]"
    ):
        load_checkpoint(path)


def test_a_tensor_claiming_more_elements_than_its_data_is_refused_before_hashing(
    tmp_path, monkeypatch
) -> None:
    """A tensor saved as a zero-stride view keeps its shape and one element of data: a file of 600 KB claiming
    a 200000 x 20000 weight made the content hash allocate 16 GB (and run 100 s) before anything was checked;
    such a tensor is refused, named, before any tensor is read."""
    net = SpixelFCN(width=4)
    ck = _ckpt(net, "spixel")
    ck["model"] = {**ck["model"], "pred.bias": torch.zeros(1).expand(1000, 1000)}
    path = tmp_path / "expanded.pt"
    torch.save({**ck, "sha256": "0" * 64}, path)
    assert path.stat().st_size < 1_000_000

    def no_hash(checkpoint: object) -> str:
        raise AssertionError("the content hash read the tensors of a malformed checkpoint")

    monkeypatch.setattr("examples.voc_joint.checkpoint.payload_sha256", no_hash)
    with pytest.raises(
        CheckpointError,
        match=r"expanded\.pt is malformed: checkpoint\['model'\]\['pred\.bias'\] of shape \(1000, 1000\) and "
        r"strides \(0, 0\) claims 4000000 bytes, its data holds 4$",
    ):
        load_model_from_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants:UserWarning")  # torch's, on loading
@pytest.mark.parametrize("kind", ["meta", "sparse"])
def test_a_tensor_without_data_of_its_own_is_named_not_a_torch_error(tmp_path, kind) -> None:
    """A meta tensor (saved without data) or a sparse one in a file gave torch's NotImplementedError "Cannot
    copy out of meta tensor; no data!" or RuntimeError "unsupported memory format option Contiguous" from the
    content hash, without the file's name."""
    ck = _ckpt(SpixelFCN(width=4), "spixel")
    weight = ck["model"]["pred.weight"]
    ck["model"]["pred.weight"] = (
        torch.empty(weight.shape, device="meta") if kind == "meta" else weight.to_sparse()
    )
    path = tmp_path / f"{kind}.pt"
    torch.save({**ck, "sha256": "0" * 64}, path)
    described = "a tensor on the meta device" if kind == "meta" else "a torch.sparse_coo tensor"
    with pytest.raises(
        CheckpointError,
        match=rf"{kind}\.pt is malformed: checkpoint\['model'\]\['pred\.weight'\] is {described}, "
        "expected a dense tensor with data of its own",
    ):
        load_checkpoint(path)


def test_a_deeply_nested_checkpoint_is_refused_not_a_recursion_error(tmp_path, monkeypatch) -> None:
    """``torch.load(weights_only=True)`` reads a hand-made pickle of 100000 nested lists (torch.save cannot
    write one: the stand-in below returns what it reads); the content hash recursed into it and raised
    RecursionError."""
    path = save_checkpoint(tmp_path / "deep.pt", _ckpt(SpixelFCN(width=4), "spixel"))
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    read = torch.load

    def load_deep(*args: object, **kwargs: object) -> object:
        ckpt = read(*args, **kwargs)
        ckpt["config"]["args"]["deep"] = deep
        return ckpt

    monkeypatch.setattr(torch, "load", load_deep)
    with pytest.raises(
        CheckpointError,
        match=r"deep\.pt is malformed: checkpoint\['config'\]\['args'\]\['deep'\](\[0\]){61} is nested "
        "deeper than 64 levels of dicts, lists and tuples",
    ):
        load_checkpoint(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint file not found: .*nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_model_from_checkpoint(tmp_path / "nope.pt")


def test_folder_given_as_the_checkpoint(tmp_path) -> None:
    """A folder is named as a folder: it used to read "checkpoint file not found" (it exists)."""
    with pytest.raises(IsADirectoryError, match=r"checkpoint: expected a file, got the folder '.*'"):
        load_checkpoint(tmp_path)
    with pytest.raises(IsADirectoryError, match="got the folder"):
        load_model_from_checkpoint(tmp_path)


def test_mismatched_weights(tmp_path) -> None:
    net = SpixelFCN(width=4)
    ck = _ckpt(net, "spixel")
    ck["model"] = {k: v for k, v in ck["model"].items() if not k.startswith("pred")}
    path = save_checkpoint(tmp_path / "m.pt", ck)
    with pytest.raises(CheckpointError, match="does not match its own model config"):
        load_model_from_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_weights_into(SpixelFCN(width=4), path)
    with pytest.raises(CheckpointError, match=r"is a 'spixel' checkpoint .* comes from a 'seg' or 'joint'"):
        load_weights_into(DeepLabV3Plus(21, "resnet18", aspp_channels=8), path, part="deeplab")


def test_load_weights_into_refuses_a_model_of_another_config_that_shapes_do_not_show(tmp_path) -> None:
    """``load_weights_into`` compared keys, shapes and dtypes only: DeepLabV3+ weights of output stride 16
    loaded into a model of output stride 8, and a SpixelFCN of cell size 16 into one of 8, silently (other
    logits, other superpixels). A config value that differs is named now; values that only set the initial
    weights (SpixelFCN's ``centre_bias``) are not compared."""
    deeplab = DeepLabV3Plus(21, "resnet18", aspp_channels=8, output_stride=16)
    path = save_checkpoint(tmp_path / "seg.pt", _ckpt(deeplab, "seg"))
    with pytest.raises(CheckpointError, match=r"other config values \(output_stride: 16 \(checkpoint\) -> 8"):
        load_weights_into(DeepLabV3Plus(21, "resnet18", aspp_channels=8, output_stride=8), path)
    load_weights_into(DeepLabV3Plus(21, "resnet18", aspp_channels=8, output_stride=16), path)
    spixel = SpixelFCN(cell_size=16, width=4)
    path = save_checkpoint(tmp_path / "spixel.pt", _ckpt(spixel, "spixel"))
    with pytest.raises(CheckpointError, match=r"cell_size: 16 \(checkpoint\) -> 8 \(model\)"):
        load_weights_into(SpixelFCN(cell_size=8, width=4), path)
    with pytest.raises(CheckpointError, match=r"cell_size: 16 \(checkpoint\) -> 8 \(model\)"):
        load_weights_into(torch.nn.DataParallel(SpixelFCN(cell_size=8, width=4)), path)
    load_weights_into(SpixelFCN(cell_size=16, width=4, centre_bias=2.0), path)  # an initial value only
    load_weights_into(SpixelFCN(cell_size=8, width=4), path, check_config=False)  # a deliberate change


def test_load_weights_into_compares_the_config_of_every_network_the_pipeline_builds(tmp_path) -> None:
    """The config check unwrapped only a DDP wrapper: ``SegmentationOnly`` (what
    ``load_model_from_checkpoint`` builds for a seg checkpoint) has no config of its own, so its DeepLabV3+
    took weights of another output stride silently. A joint model is compared network by network; without a
    fusion stack, the stack's widths and activation (no weights) are not compared."""
    from examples.voc_joint.models import build_model

    deeplab = DeepLabV3Plus(21, "resnet18", aspp_channels=8, output_stride=16)
    path = save_checkpoint(tmp_path / "seg.pt", _ckpt(deeplab, "seg"))
    other = SegmentationOnly(DeepLabV3Plus(21, "resnet18", aspp_channels=8, output_stride=8))
    with pytest.raises(CheckpointError, match=r"output_stride: 16 \(checkpoint\) -> 8 \(model\)"):
        load_weights_into(other, path)
    config = {
        "arch": "joint",
        "deeplab": {**deeplab.config},
        "spixel": {"cell_size": 8, "width": 4},
        "joint": {
            "num_classes": 21,
            "cell_size": 8,
            "mode": "hard",
            "fusion": False,
            "fusion_hidden": [128, 128],
            "fusion_activation": "relu",
            "fusion_init": "transparent",
        },
    }
    joint = build_model(config)
    path = save_checkpoint(tmp_path / "joint.pt", _ckpt(joint, "joint"))
    narrower = build_model({**config, "joint": {**config["joint"], "fusion_hidden": [64, 64]}})
    load_weights_into(narrower, path)  # no stack: its widths change nothing
    stride8 = build_model({**config, "deeplab": {**config["deeplab"], "output_stride": 8}})
    with pytest.raises(CheckpointError, match=r"deeplab\.output_stride: 16 \(checkpoint\) -> 8 \(model\)"):
        load_weights_into(stride8, path)
    with pytest.raises(CheckpointError, match=r"\(output_stride: 16 \(checkpoint\) -> 8 \(model\)\)"):
        load_weights_into(
            DeepLabV3Plus(21, "resnet18", aspp_channels=8, output_stride=8), path, part="deeplab"
        )
    load_weights_into(DeepLabV3Plus(21, "resnet18", aspp_channels=8, output_stride=16), path, part="deeplab")
    soft = build_model({**config, "joint": {**config["joint"], "mode": "soft"}})
    with pytest.raises(CheckpointError, match=r"joint\.mode: 'hard' \(checkpoint\) -> 'soft' \(model\)"):
        load_weights_into(soft, path)
    leaky = build_model({**config, "joint": {**config["joint"], "fusion_activation": "leaky_relu"}})
    load_weights_into(leaky, path)  # no stack: its activation changes nothing either
    spixel_file = save_checkpoint(tmp_path / "sp.pt", _ckpt(SpixelFCN(cell_size=8, width=4), "spixel"))
    with pytest.raises(
        CheckpointError, match=r"does not match the model: Error\(s\) in loading"
    ):  # no TypeError
        load_weights_into(joint, spixel_file)  # a network the file does not hold


def test_load_weights_into_a_module_of_its_own_compares_only_keys_shapes_and_dtypes(tmp_path) -> None:
    """A module that is none of the pipeline's networks (no config to compare) takes weights of matching
    keys; a float64 file is refused for a float32 model (it was copied, converted); init-only values such as
    ``centre_bias`` are not compared even when both sides set one."""
    spixel = SpixelFCN(cell_size=8, width=4, centre_bias=1.0)
    path = save_checkpoint(tmp_path / "s.pt", _ckpt(spixel, "spixel"))
    load_weights_into(SpixelFCN(cell_size=8, width=4, centre_bias=2.0), path)
    own = torch.nn.Module()
    for name, child in SpixelFCN(cell_size=8, width=4).named_children():
        own.add_module(name, child)
    load_weights_into(own, path)
    assert torch.equal(own.state_dict()["pred.bias"], spixel.state_dict()["pred.bias"])
    deeplab = DeepLabV3Plus(21, "resnet18", aspp_channels=8)
    older = _ckpt(deeplab, "seg")
    del older["config"]["model"]["deeplab"]["low_level_channels"]  # a record without a key the model has
    load_weights_into(
        DeepLabV3Plus(21, "resnet18", aspp_channels=8), save_checkpoint(tmp_path / "o.pt", older)
    )
    wide = save_checkpoint(tmp_path / "d.pt", _ckpt(SpixelFCN(cell_size=8, width=4).double(), "spixel"))
    with pytest.raises(CheckpointError, match="other dtypes"):
        load_weights_into(SpixelFCN(cell_size=8, width=4), wide)


def test_weights_saved_with_the_ddp_module_prefix_load(tmp_path) -> None:
    """A state_dict taken from a DistributedDataParallel wrapper (``module.`` keys) still loads."""
    torch.manual_seed(0)
    net = SpixelFCN(cell_size=8, width=4)
    ck = _ckpt(net, "spixel")
    ck["model"] = {f"module.{k}": v for k, v in ck["model"].items()}
    path = save_checkpoint(tmp_path / "ddp.pt", ck)
    model, _config = load_model_from_checkpoint(path)
    into = SpixelFCN(cell_size=8, width=4)
    load_weights_into(into, path)
    for got in (model.state_dict(), into.state_dict()):
        assert got.keys() == net.state_dict().keys()
        assert all(torch.equal(got[k], v) for k, v in net.state_dict().items())


def test_a_key_with_and_without_the_module_prefix_is_refused_naming_both(tmp_path) -> None:
    """``w`` and ``module.w`` are one weight once the prefix is removed: every loader refuses the file naming
    both keys (one of the two tensors was dropped without a word)."""
    net = SpixelFCN(cell_size=8, width=4)
    ck = _ckpt(net, "spixel")
    ck["model"]["module.pred.bias"] = torch.full_like(ck["model"]["pred.bias"], 7.0)
    path = save_checkpoint(tmp_path / "both.pt", ck)
    both = "the keys 'pred.bias' and 'module.pred.bias' of its model are both 'pred.bias'"
    for load in (
        lambda: load_model_from_checkpoint(path),
        lambda: load_network(path, "spixel"),
        lambda: load_weights_into(SpixelFCN(cell_size=8, width=4), path),
    ):
        with pytest.raises(CheckpointError, match=re.escape(both)) as info:
            load()
        assert str(path) in str(info.value)


def test_load_model_from_checkpoint_returns_the_torch_version_that_trained_it(tmp_path) -> None:
    """The config it returns carries the checkpoint's ``torch_version`` (evaluate.py writes the config into
    metrics.json), None for a checkpoint written before the version was recorded."""
    net = SpixelFCN(cell_size=8, width=4)
    old = save_checkpoint(tmp_path / "old.pt", _ckpt(net, "spixel"))
    new = save_checkpoint(tmp_path / "new.pt", {**_ckpt(net, "spixel"), "torch_version": "2.0.0"})
    assert load_model_from_checkpoint(old)[1]["torch_version"] is None
    assert load_model_from_checkpoint(new)[1]["torch_version"] == "2.0.0"


def test_load_model_from_checkpoint_returns_the_content_hash_of_the_weights(tmp_path) -> None:
    """The config carries the checkpoint's content SHA-256 (evaluate.py records it as ``checkpoint_sha256``):
    a checkpoint of other weights with the same config and step, at the same path, has another."""
    torch.manual_seed(0)
    net = SpixelFCN(cell_size=8, width=4)
    path = save_checkpoint(tmp_path / "a.pt", _ckpt(net, "spixel"))
    config = load_model_from_checkpoint(path)[1]
    first = config["sha256"]
    assert first == load_checkpoint_with_sha256(path)[1] and len(first) == 64
    with torch.no_grad():
        net.pred.bias.add_(1.0)
    save_checkpoint(path, _ckpt(net, "spixel"))
    second = load_model_from_checkpoint(path)[1]
    assert second["sha256"] != first
    config.pop("sha256"), second.pop("sha256")
    assert second == config  # the same config, stage and step: only the weights differ


def test_load_model_from_checkpoint_rebuilds_every_arch(tmp_path) -> None:
    torch.manual_seed(0)
    deeplab, spixel = DeepLabV3Plus(21, "resnet18", aspp_channels=8), SpixelFCN(cell_size=8, width=4)
    joint = JointModel(deeplab, spixel, mode="hard")
    x = torch.randn(1, 3, 24, 40)
    for model, stage in [(deeplab, "seg"), (joint, "joint"), (spixel, "spixel")]:
        path = save_checkpoint(tmp_path / f"{stage}.pt", _ckpt(model, stage))
        rebuilt, config = load_model_from_checkpoint(path)
        assert not rebuilt.training and config["stage"] == stage and config["epoch"] == 3
        model.eval()
        with torch.no_grad():
            if stage == "spixel":
                torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
            else:
                ref = model(x, x) if stage == "joint" else {"logits": model(x)}
                out = rebuilt(x, x)
                torch.testing.assert_close(out["logits"], ref["logits"], rtol=0, atol=0)
        if stage == "seg":
            assert isinstance(rebuilt, SegmentationOnly)
    # sub-network extraction from a joint checkpoint
    fresh = SpixelFCN(cell_size=8, width=4)
    load_weights_into(fresh, tmp_path / "joint.pt", part="spixel")
    for k, v in spixel.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_a_model_built_from_numpy_option_values_round_trips(tmp_path) -> None:
    """Option values given as numpy strings (e.g. read from an array of settings) are stored as plain str:
    such a model's checkpoint was written, then refused on loading ("it holds pickled Python objects (first:
    numpy._core.multiarray.scalar)")."""
    deeplab = DeepLabV3Plus(3, np.str_("resnet18"), 16, aspp_channels=8)
    joint = JointModel(
        deeplab,
        SpixelFCN(cell_size=8, width=4),
        3,
        mode=np.str_("soft"),
        fusion_activation=np.str_("leaky_relu"),
        fusion_init=np.str_("xavier"),
    )
    config = model_config(joint)
    assert all(type(v) is str for v in (config["deeplab"]["backbone"], config["joint"]["mode"]))
    path = save_checkpoint(tmp_path / "joint.pt", _ckpt(joint, "joint"))
    rebuilt, loaded = load_model_from_checkpoint(path)
    assert loaded["model"] == config and model_config(rebuilt) == config


def test_save_refuses_a_config_that_is_not_plain(tmp_path) -> None:
    """A config value that weights-only loading refuses (a numpy scalar, a path, ...) is refused before the
    file is written, with its place, instead of a checkpoint that can never be read back."""
    ck = _ckpt(SpixelFCN(width=4), "spixel")
    ck["config"]["args"] = {"lr": np.float64(0.1), "data": ["a", os.curdir]}
    with pytest.raises(
        CheckpointError,
        match=r"refusing to write checkpoint .*c\.pt: config\['args'\]\['lr'\] = "
        + re.escape(repr(np.float64(0.1)))  # np.float64(0.1) from numpy 2, 0.1 before
        + r" \(numpy\.float64\) is not a plain value",
    ):
        save_checkpoint(tmp_path / "c.pt", ck)
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_a_config_key_that_is_not_plain(tmp_path) -> None:
    """A dict key is checked like a value: a numpy integer key would be written, then refused by every
    weights-only read."""
    ck = _ckpt(SpixelFCN(width=4), "spixel")
    ck["config"]["args"] = {"crop": {np.int64(3): 1}}
    with pytest.raises(
        CheckpointError,
        match=r"a key of config\['args'\]\['crop'\]: " + re.escape(repr(np.int64(3))) + r" \(numpy\.int64\)",
    ):
        save_checkpoint(tmp_path / "c.pt", ck)
    assert list(tmp_path.iterdir()) == []


def test_a_loaded_segmentation_model_saves_and_loads_again(tmp_path) -> None:
    """The SegmentationOnly wrapper of a ``seg`` checkpoint saves its network's state dict (no ``deeplab.``
    prefix, as training saves it) next to its network's config: its checkpoint was refused ("does not match
    its own model config: Missing key(s) ... backbone.conv1.weight"), and so was loading a ``seg``
    checkpoint into a wrapper."""
    torch.manual_seed(0)
    deeplab = DeepLabV3Plus(3, "resnet18", aspp_channels=8)
    first = save_checkpoint(tmp_path / "seg.pt", _ckpt(deeplab, "seg"))
    loaded, _config = load_model_from_checkpoint(first)
    again, _config = load_model_from_checkpoint(save_checkpoint(tmp_path / "again.pt", _ckpt(loaded, "seg")))
    assert isinstance(loaded, SegmentationOnly) and list(loaded.state_dict()) == list(deeplab.state_dict())
    wrapper = SegmentationOnly(DeepLabV3Plus(3, "resnet18", aspp_channels=8))
    load_weights_into(wrapper, first)
    for got in (again.state_dict(), wrapper.state_dict(), wrapper.deeplab.state_dict()):
        assert got.keys() == deeplab.state_dict().keys()
        assert all(torch.equal(got[k], v) for k, v in deeplab.state_dict().items())


def test_an_ambient_or_requested_meta_device_does_not_break_loading(tmp_path) -> None:
    """``map_location="meta"`` failed ("Cannot copy out of meta tensor": the content hash was read after the
    mapping); under ``with torch.device("meta")`` load_model_from_checkpoint built meta parameters that
    loading could not fill (NotImplementedError) and load_network returned such a network, without weights."""
    torch.manual_seed(0)
    net = SpixelFCN(cell_size=8, width=4)
    path = save_checkpoint(tmp_path / "s.pt", _ckpt(net, "spixel"))
    assert all(t.is_meta for t in load_checkpoint(path, map_location="meta")["model"].values())
    assert all(p.is_meta for p in load_model_from_checkpoint(path, map_location="meta")[0].parameters())
    with torch.device("meta"):
        loaded = [load_model_from_checkpoint(path)[0], load_network(path, "spixel")]
        assert not load_checkpoint(path)["model"]["pred.bias"].is_meta
    for model in loaded:
        got = model.state_dict()
        assert all(torch.equal(got[k], v) for k, v in net.state_dict().items())


def test_a_version_1_file_is_hashed_before_its_tensors_go_to_the_meta_device(tmp_path) -> None:
    """A version-1 file (no recorded hash) read by ``load_checkpoint_with_sha256(map_location="meta")`` was
    hashed after its tensors were moved, and meta tensors hold no data: a bare NotImplementedError ("Cannot
    copy out of meta tensor"). It is hashed on the CPU first: the same hash as a CPU read."""

    ck = _ckpt(SpixelFCN(cell_size=8, width=4), "spixel")
    torch.save(ck, tmp_path / "v1.pt")  # as version 1 wrote it: no sha256
    on_cpu, cpu_hash = load_checkpoint_with_sha256(tmp_path / "v1.pt")
    on_meta, meta_hash = load_checkpoint_with_sha256(tmp_path / "v1.pt", map_location="meta")
    assert meta_hash == cpu_hash == payload_sha256(on_cpu)
    assert all(t.is_meta for t in on_meta["model"].values())


def test_weights_of_other_shapes_under_the_same_keys_are_refused_before_building(tmp_path) -> None:
    """The shapes, not only the key names, are compared with a model built on the meta device: a config of
    wider layers than its weights (same keys) is refused before any layer is allocated."""
    ck = _ckpt(SpixelFCN(cell_size=8, width=4), "spixel")
    ck["config"]["model"] = model_config(SpixelFCN(cell_size=8, width=8))
    path = save_checkpoint(tmp_path / "c.pt", ck)
    for read in (load_model_from_checkpoint, lambda p: load_network(p, "spixel")):
        with pytest.raises(
            CheckpointError,
            match=r"does not match its own model config: missing keys \[\], unexpected keys \[\], "
            r"other shapes \[",
        ):
            read(path)


def test_remove_stale_temporaries_removes_only_those_of_its_file(tmp_path) -> None:
    """The leftovers of interrupted writes of ``checkpoint.pt`` are removed; those of another file in the
    folder (another writer's) and other hidden files are not."""
    mine = tmp_path / ".checkpoint.pt.0a1b2c3d.tmp"
    others = [tmp_path / ".seg.pt.0a1b2c3d.tmp", tmp_path / ".notes.tmp", tmp_path / "checkpoint.pt"]
    for p in (mine, *others):
        p.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path / "checkpoint.pt") == [mine]
    assert sorted(tmp_path.iterdir()) == sorted(others)


def test_rng_state_round_trip(tmp_path) -> None:
    gen = torch.Generator().manual_seed(5)
    base = _ckpt(SpixelFCN(width=4), "spixel")
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.normal(), random.gauss(0.0, 1.0)  # a cached gaussian in each (the second of a pair)
    state = get_rng_state(gen)
    path = save_checkpoint(tmp_path / "rng.pt", {**base, "rng": state})
    first = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    cached = (np.random.normal(), random.gauss(0.0, 1.0))
    torch.manual_seed(9), np.random.seed(9), random.seed(9), gen.manual_seed(9)
    np.random.normal(), random.gauss(0.0, 1.0)  # other cached gaussians, replaced by the restore
    set_rng_state(load_checkpoint(path)["rng"], gen)
    again = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2] and torch.equal(first[3], again[3])
    assert (np.random.normal(), random.gauss(0.0, 1.0)) == cached


def test_a_change_to_or_from_the_residual_fusion_init_is_compared(tmp_path) -> None:
    """``fusion_init`` was init-only for every choice, but ``"zero_residual"`` adds ``U`` to the stack's
    output: its checkpoint loaded silently into a ``"transparent"`` model, whose logits then differed by more
    than the largest logit. A change to or from it is refused now; the other inits (weights only) still load
    into each other."""

    def joint(init: str) -> JointModel:
        torch.manual_seed(0)
        deeplab, spixel = DeepLabV3Plus(3, "resnet18", aspp_channels=8), SpixelFCN(cell_size=8, width=4)
        return JointModel(deeplab, spixel, 3, fusion_hidden=[6, 6], fusion_init=init).eval()

    residual = save_checkpoint(tmp_path / "r.pt", _ckpt(joint("zero_residual"), "joint"))
    for init in ("transparent", "xavier", "kaiming", "net2net"):
        with pytest.raises(
            CheckpointError, match=rf"joint.fusion_init: 'zero_residual' \(checkpoint\) -> '{init}' \(model\)"
        ):
            load_weights_into(joint(init), residual)
    load_weights_into(joint("zero_residual"), residual)
    xavier = save_checkpoint(tmp_path / "x.pt", _ckpt(joint("xavier"), "joint"))
    load_weights_into(joint("transparent"), xavier)  # the initial weights only: the same map once loaded
    with pytest.raises(
        CheckpointError,
        match=r"'xavier' \(checkpoint\) -> 'zero_residual' \(model\) \('zero_residual' adds U to the stack's "
        r"output: another map with the same weights\)",
    ):
        load_weights_into(joint("zero_residual"), xavier)

    # without a stack on both sides nothing is added: the init is not compared (nor in a record without one)
    def stackless(init: str) -> JointModel:
        torch.manual_seed(0)
        deeplab, spixel = DeepLabV3Plus(3, "resnet18", aspp_channels=8), SpixelFCN(cell_size=8, width=4)
        return JointModel(deeplab, spixel, 3, fusion=False, fusion_init=init).eval()

    bare = save_checkpoint(tmp_path / "b.pt", _ckpt(stackless("zero_residual"), "joint"))
    load_weights_into(stackless("kaiming"), bare)
    with pytest.raises(CheckpointError) as refused:  # a stack on one side only: refused for its weights
        load_weights_into(joint("kaiming"), bare)
    assert "fusion_init" not in str(refused.value)
    older = _ckpt(joint("zero_residual"), "joint")
    del older["config"]["model"]["joint"]["fusion_init"]
    load_weights_into(joint("kaiming"), save_checkpoint(tmp_path / "o.pt", older))


def test_payload_hash_covers_the_dtype_of_a_tensor_of_the_same_shape_and_bytes() -> None:
    """The same shape and the same bytes as another dtype is another checkpoint: float32 zeros and int32 zeros
    (or 1.0 and the int32 1065353216) hash differently. The existing test changes the shape along with the
    dtype, so a hash without the dtype passed it."""
    base = payload_sha256({"w": torch.zeros(2), "step": 1})
    assert base != payload_sha256({"w": torch.zeros(2, dtype=torch.int32), "step": 1})
    one = torch.ones(3)
    assert payload_sha256({"w": one}) != payload_sha256({"w": one.view(torch.int32)})


@pytest.mark.parametrize(
    ("key", "value", "least"),
    [
        ("step", -1, 0),
        ("epoch", -5, 0),
        ("samples_in_epoch", -1, 0),
        ("batch_in_epoch", -1, 0),
        ("world_size", 0, 1),
    ],
)
def test_check_resumable_refuses_every_count_below_its_least_value(key, value, least) -> None:
    """Every position count of a training state has its lower bound checked, not only ``world_size`` and
    ``step``: a ``samples_in_epoch`` of -1 (an edited record, hash recomputed) resumed with a skip of -1
    batches and a schedule horizon one step longer than the data, an ``epoch`` of -5 from a negative epoch."""
    ck = _training_ckpt()
    check_resumable(ck, "c.pt")
    ck[key] = value
    with pytest.raises(CheckpointError, match=rf"{key} must be an int >= {least}, got {value}"):
        check_resumable(ck, "c.pt")


def test_finite_weights_whose_norm_overflows_are_saved_and_loaded(tmp_path) -> None:
    """The non-finite check of a checkpoint is one fused float32 norm first: finite weights of 1e18 (their
    sum of squares overflows) make it infinite, and only the element-wise look that follows tells them from
    a NaN. ``save_checkpoint`` writes them and ``load_checkpoint`` reads them, while a NaN among them is still
    refused and named."""
    net = SpixelFCN(width=4)
    state = net.state_dict()
    name = max(state, key=lambda k: state[k].numel())
    assert state[name].numel() * 1e36 > 3.4e38  # the norm of 1e18s overflows float32
    state[name] = torch.full_like(state[name], 1e18)
    ck = {**_ckpt(net, "spixel"), "model": state}
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.pt", ck))
    assert torch.equal(loaded["model"][name], state[name])
    state[name].view(-1)[7] = float("nan")
    with pytest.raises(FloatingPointError, match=rf"model\.{re.escape(name)} holds NaN"):
        save_checkpoint(tmp_path / "d.pt", ck)


def test_a_loaded_checkpoint_holds_no_sha256_key(tmp_path) -> None:
    """``load_checkpoint`` returns the checkpoint without its ``sha256`` key (documented): the recorded hash
    is verified and taken out, not left in the dict that a resume edits and writes again."""
    path = save_checkpoint(tmp_path / "c.pt", {**_ckpt(SpixelFCN(width=4), "spixel"), "version": VERSION})
    assert "sha256" in torch.load(path, weights_only=True)
    assert "sha256" not in load_checkpoint(path)


def test_strip_key_prefixes_keeps_the_module_versions_under_the_stripped_names() -> None:
    """The ``_metadata`` of a state dict (module versions) comes along with the keys, its module names
    stripped alike: the wrapped root ``"module"`` becomes the root ``""``. A dict without one gets none."""
    net = SpixelFCN(cell_size=8, width=4)
    own = net.state_dict()
    wrapped = torch.nn.Sequential()
    wrapped.add_module("module", net)  # the names DistributedDataParallel's state dict has
    stripped = strip_key_prefixes(wrapped.state_dict(), ("module.",), "checkpoint c.pt")
    assert list(stripped) == list(own)
    assert stripped._metadata == own._metadata  # type: ignore[attr-defined]
    plain = strip_key_prefixes(dict(wrapped.state_dict()), ("module.",), "checkpoint c.pt")
    assert list(plain) == list(own) and not hasattr(plain, "_metadata")


def test_a_checkpoint_without_a_batchnorm_step_counter_is_refused_by_load_weights_into(tmp_path) -> None:
    """Whole or one network of a joint checkpoint, a file without a BatchNorm's ``num_batches_tracked`` is
    refused, as the network's own ``load_state_dict`` refuses it (was: loaded, the counter set to 0: the
    module versions were dropped on the way and torch took the modules as saved before the counters)."""
    torch.manual_seed(0)
    spixel, deeplab = SpixelFCN(cell_size=8, width=4), DeepLabV3Plus(21, "resnet18", aspp_channels=8)
    joint = JointModel(deeplab, spixel, mode="hard")
    for model, stage, part, key in [
        (spixel, "spixel", None, "enc0.0.1.num_batches_tracked"),
        (joint, "joint", None, "deeplab.backbone.bn1.num_batches_tracked"),
        (spixel, "joint", "spixel", "spixelfcn.enc0.0.1.num_batches_tracked"),
        (deeplab, "joint", "deeplab", "deeplab.backbone.bn1.num_batches_tracked"),
    ]:
        ck = _ckpt(joint if stage == "joint" else model, stage)
        path = save_checkpoint(tmp_path / f"{stage}_{part}.pt", ck)
        load_weights_into(model, path, part=part)  # the whole file loads
        del ck["model"][key]
        save_checkpoint(path, ck)
        missing = key.removeprefix({"spixel": "spixelfcn.", "deeplab": "deeplab.", None: ""}[part])
        with pytest.raises(CheckpointError, match=rf'Missing key\(s\) in state_dict: "{re.escape(missing)}"'):
            load_weights_into(model, path, part=part)
