"""Staging folders (``examples/voc_joint/staging.py``) on their own: the folder a killed run leaves is found
by the next run, a running run's is not, and no other folder is ever taken for one."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from examples.voc_joint import staging
from examples.voc_joint.staging import new_staging, remove_abandoned_staging, unique_folder

from .helpers import flock_held

fcntl = pytest.importorskip("fcntl")  # without flock nothing is locked and nothing removed (module docstring)


@pytest.mark.parametrize("suffix", ["", ".tmp"])
def test_the_folder_of_a_run_that_ended_without_removing_it_is_removed_next_time(tmp_path, suffix) -> None:
    """What ``new_staging`` makes is what ``remove_abandoned_staging`` looks for: the earlier tests planted
    folders by hand, so a folder name that no longer matched the pattern (one random character short) left
    every killed run's folder behind for good."""
    running, held_running = new_staging(tmp_path, ".panels.", suffix)
    killed, held_killed = new_staging(tmp_path, ".panels.", suffix)
    assert held_killed is not None and held_running is not None
    os.close(held_killed)  # its process is gone: the operating system released the lock
    try:
        assert remove_abandoned_staging(tmp_path, ".panels.", suffix) == [killed]
        assert sorted(tmp_path.iterdir()) == [running]
    finally:
        os.close(held_running)


def test_only_names_of_the_whole_pattern_are_removed(tmp_path) -> None:
    """A folder whose name merely starts like a staging folder's (a user's copy, ``.panels.12345678.keep``)
    is not one, unlocked as it is."""
    for name in (".panels.12345678.keep", ".panels.1234567", ".panels.12345678"):
        (tmp_path / name).mkdir()
    assert remove_abandoned_staging(tmp_path, ".panels.") == [tmp_path / ".panels.12345678"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".panels.1234567", ".panels.12345678.keep"]


def test_the_folder_is_locked_before_it_gets_a_name_another_run_removes(tmp_path, monkeypatch) -> None:
    """A run starting between the folder's rename and its lock would take it for an abandoned one and remove
    it under the running run: the lock comes first."""
    locked_at_rename = []
    real_rename = os.rename

    def rename(src, dst):
        locked_at_rename.append(flock_held(src))
        real_rename(src, dst)

    monkeypatch.setattr(staging.os, "rename", rename)
    folder, held = new_staging(tmp_path, ".panels.")
    monkeypatch.undo()
    assert held is not None
    os.close(held)
    assert locked_at_rename == [True] and folder.is_dir()


def test_a_taken_name_is_drawn_again(tmp_path, monkeypatch) -> None:
    names = iter(["0badc0de", "0badc0de", "600dc0de"])
    monkeypatch.setattr(staging.secrets, "token_hex", lambda n: next(names))
    assert unique_folder(tmp_path, ".set.", ".tmp").name == ".set.0badc0de.tmp"
    assert unique_folder(tmp_path, ".set.", ".tmp").name == ".set.600dc0de.tmp"


def test_nothing_to_remove_in_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    assert remove_abandoned_staging(tmp_path / "missing", ".panels.") == []


@pytest.mark.parametrize("step", ["flock", "rename"])
def test_a_staging_folder_that_cannot_be_locked_or_named_is_not_left_behind(tmp_path, monkeypatch, step):
    """A failing ``flock`` (ENOLCK: an NFS mount without its lock service) or rename left the folder
    ``.panels.unlocked-<random>``, whose name no later run removes (one more per failed evaluation), and its
    open descriptor; the flock's error named no folder ("[Errno 37] No locks available"). The folder and the
    descriptor go now, and the error names the folder and its cause."""
    number = errno.ENOLCK if step == "flock" else errno.EACCES
    real_flock, real_rename, closed = fcntl.flock, os.rename, []
    real_close = os.close

    def flock(fd: int, op: int) -> None:
        if step == "flock":
            raise OSError(number, os.strerror(number))
        real_flock(fd, op)

    def rename(src, dst) -> None:
        if step == "rename":
            raise OSError(number, os.strerror(number), str(src), None, str(dst))
        real_rename(src, dst)

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(staging.fcntl, "flock", flock)
    monkeypatch.setattr(staging.os, "rename", rename)
    monkeypatch.setattr(staging.os, "close", close)
    with pytest.raises(OSError) as info:
        new_staging(tmp_path, ".panels.")
    monkeypatch.undo()
    text = str(info.value)
    assert text.startswith(f"cannot make the staging folder {tmp_path / '.panels.'}"), text
    assert f"{os.strerror(number)} ({errno.errorcode[number]})" in text and "unlocked" not in text, text
    assert info.value.errno == number and list(tmp_path.iterdir()) == [] and len(closed) == 1


def test_a_file_or_a_link_of_a_staging_name_is_not_taken_for_a_folder(tmp_path) -> None:
    """Only a folder of the pattern is a staging folder: a file of that name, or a link to a folder (whose
    files are another folder's), stays and is not reported removed."""
    target = tmp_path / "kept"
    target.mkdir()
    (target / "a.png").write_bytes(b"png")
    (tmp_path / ".panels.0badc0de").symlink_to(target, target_is_directory=True)
    (tmp_path / ".panels.600dc0de").write_bytes(b"not a folder")
    assert remove_abandoned_staging(tmp_path, ".panels.") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [".panels.0badc0de", ".panels.600dc0de", "kept"]
    assert (target / "a.png").read_bytes() == b"png"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts this process's descriptors in /proc")
def test_looking_for_abandoned_folders_leaves_no_descriptor_open(tmp_path) -> None:
    """Each folder probed is opened to try its lock: the descriptor is closed again, whether the folder was
    a running run's (kept) or abandoned (removed): one more open descriptor per folder and call otherwise."""
    running, held = new_staging(tmp_path, ".panels.")
    abandoned, held_abandoned = new_staging(tmp_path, ".panels.")
    assert held is not None and held_abandoned is not None
    os.close(held_abandoned)
    try:
        before = len(os.listdir("/proc/self/fd"))
        assert remove_abandoned_staging(tmp_path, ".panels.") == [abandoned]
        assert len(os.listdir("/proc/self/fd")) == before and running.is_dir()
    finally:
        os.close(held)


def test_the_prefix_and_suffix_are_matched_literally(tmp_path) -> None:
    """The dots of ``.panels.`` and ``.tmp`` are no wildcards: a user's ``_panels_0badc0de_tmp`` is not a
    staging folder and stays."""
    for name in ("_panels_0badc0de_tmp", ".panels.600dc0de.tmp"):
        (tmp_path / name).mkdir()
    assert remove_abandoned_staging(tmp_path, ".panels.", ".tmp") == [tmp_path / ".panels.600dc0de.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == ["_panels_0badc0de_tmp"]


def test_a_folder_whose_lock_cannot_be_probed_is_kept(tmp_path, monkeypatch) -> None:
    """``flock`` failing for another reason than a holder (ENOLCK: an NFS mount without its lock service)
    tells nothing about the folder: it is kept, and no error escapes (``new_staging`` reports one)."""
    folder = tmp_path / ".panels.0badc0de"
    folder.mkdir()
    (folder / "0001.png").write_bytes(b"png")

    def flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(staging.fcntl, "flock", flock)
    assert remove_abandoned_staging(tmp_path, ".panels.") == []
    monkeypatch.undo()
    assert (folder / "0001.png").read_bytes() == b"png"


# ------------------------------------------------------------- kill tests of a mutation pass (2026-12-07)
def test_an_interrupt_while_the_folder_is_locked_leaves_no_unlocked_folder(tmp_path, monkeypatch) -> None:
    """Ctrl-C (KeyboardInterrupt, not an Exception) between the folder's mkdir and its rename: the
    ``<prefix>unlocked-<random>`` folder, which no later run removes, goes, and so does its descriptor;
    the interrupt itself is raised unchanged."""
    closed: list[int] = []
    real_close = os.close

    def flock(fd: int, op: int) -> None:
        raise KeyboardInterrupt

    def close(fd: int) -> None:
        closed.append(fd)
        real_close(fd)

    monkeypatch.setattr(staging.fcntl, "flock", flock)
    monkeypatch.setattr(staging.os, "close", close)
    with pytest.raises(KeyboardInterrupt):
        new_staging(tmp_path, ".panels.")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == [] and len(closed) == 1


def test_the_folders_tempfile_mkdtemp_named_are_removed_too(tmp_path) -> None:
    """``_RANDOM``: ``[a-z0-9_]`` matches the names ``tempfile.mkdtemp`` gave before (any lower-case letter,
    digit or underscore), not hexadecimal digits only."""
    for name in (".panels.k_x9zq1m", ".panels.zzzzzzzz"):
        (tmp_path / name).mkdir()
    assert remove_abandoned_staging(tmp_path, ".panels.") == [
        tmp_path / ".panels.k_x9zq1m",
        tmp_path / ".panels.zzzzzzzz",
    ]
    assert list(tmp_path.iterdir()) == []


def _unlink_failing_for(monkeypatch, name: str) -> None:
    """``os.unlink`` (as ``shutil.rmtree`` calls it) fails with EBUSY for files called ``name`` (an NFS
    ``.nfs*`` file of a deleted file that something still holds open)."""
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.path.basename(path) == name:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)


def test_a_folder_that_cannot_be_removed_entirely_raises_nothing(tmp_path, monkeypatch) -> None:
    """Removing abandoned folders is housekeeping before a run: a file that cannot be removed must not fail
    the run, and the other abandoned folders still go. The folder that stays was returned as removed."""
    stuck, other = tmp_path / ".panels.0badc0de", tmp_path / ".panels.600dc0de"
    for folder in (stuck, other):
        folder.mkdir()
    (stuck / ".nfs0001").write_bytes(b"busy")
    _unlink_failing_for(monkeypatch, ".nfs0001")
    assert remove_abandoned_staging(tmp_path, ".panels.") == [other]  # the stuck one is not called removed
    monkeypatch.undo()
    assert not other.exists() and (stuck / ".nfs0001").is_file()
