"""Output-folder locks: a killed run's forked children (DataLoader workers) never keep its folder locked."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import pytest

fcntl = pytest.importorskip("fcntl")

from examples.voc_joint import locking  # noqa: E402
from examples.voc_joint.locking import FolderLock, FolderLockedError  # noqa: E402

from .helpers import dead_pid  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# Takes the lock, forks a child that lives on (as DataLoader workers do for seconds), waits until the child
# runs Python code (a fork hook would have run by then), prints the child's pid and kills itself with SIGKILL,
# as the OOM killer would.
_KILLED_HOLDER = textwrap.dedent(
    """
    import multiprocessing, os, signal, sys, time
    from examples.voc_joint.locking import FolderLock

    def child(w):
        os.write(w, b"x")
        time.sleep(60)

    lock = FolderLock(sys.argv[1]).acquire()
    r, w = os.pipe()
    proc = multiprocessing.get_context("fork").Process(target=child, args=(w,), daemon=False)
    proc.start()
    assert os.read(r, 1) == b"x"
    print(proc.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_forked_child_does_not_keep_the_lock_of_a_killed_parent(tmp_path: Path) -> None:
    folder = tmp_path / "run" / "joint"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(  # the child keeps the pipe open: read its pid, do not wait for EOF
        [sys.executable, "-c", _KILLED_HOLDER, str(folder)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    child = int(line)
    try:
        assert not _gone(child)  # the forked child outlives its parent, with a copy of its open files
        with FolderLock(folder) as lock:  # ... but not the lock: the folder is free at once
            assert lock.held
    finally:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:  # reaped by init (or a subreaper)
        time.sleep(0.05)


def test_the_lock_stays_with_the_parent_when_a_forked_child_ends(tmp_path: Path) -> None:
    """The child closes its copy without unlocking (the open file is shared: LOCK_UN would free the
    parent's lock)."""
    with FolderLock(tmp_path / "run") as lock:
        pid = os.fork()
        if pid == 0:  # the child: its copy was closed at the fork
            os._exit(0 if not lock.held else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert lock.held
        with pytest.raises(FolderLockedError, match=rf"in use by pid {os.getpid()} .*stop it"):
            FolderLock(tmp_path / "run").acquire()
    with FolderLock(tmp_path / "run"):  # released by the parent
        pass


def test_a_lock_held_for_a_dead_pid_says_so(tmp_path: Path) -> None:
    """Should anything still hold the lock of a dead run, the refusal says that run ended and to retry."""
    folder = tmp_path / "run"
    folder.mkdir()
    pid = dead_pid()
    info = {"host": socket.gethostname(), "pid": pid, "started": "2026-12-01 10:00:00", "command": "train.py"}
    with open(folder / ".lock", "w") as fh:  # a holder that is not this process's FolderLock
        fh.write(json.dumps(info) + "\n")
        fh.flush()
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(FolderLockedError) as exc:
            FolderLock(folder).acquire()
    text = str(exc.value)
    assert f"in use by pid {pid} " in text and "no longer running" in text and "retry" in text
    assert "stop it" not in text


@pytest.mark.parametrize("before", ["dead", "empty"])
def test_a_run_refused_while_the_holder_writes_its_line_names_that_holder(
    tmp_path: Path, before: str
) -> None:
    """A run takes the lock, then writes its line into the lock file. A second run refused in between read
    the previous run's line (an ended process) and said a process that run started still held the lock, or
    read an empty file; it waits a moment for the new line now and names the run that holds the lock."""
    folder = tmp_path / "run"
    folder.mkdir()
    gone = dead_pid()
    old = {
        "host": socket.gethostname(),
        "pid": gone,
        "started": "2026-12-01 10:00:00",
        "command": "a",
    }
    new = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-12-06 10:00:00", "command": "b"}
    with open(folder / ".lock", "w") as fh:  # the new holder, between its flock and its write
        fh.write(json.dumps(old) + "\n" if before == "dead" else "")
        fh.flush()
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)

        def write_line() -> None:
            time.sleep(0.1)
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(new) + "\n")
            fh.flush()

        writer = threading.Thread(target=write_line)
        writer.start()
        try:
            with pytest.raises(FolderLockedError) as exc:
                FolderLock(folder).acquire()
        finally:
            writer.join()
    text = str(exc.value)
    assert f"in use by pid {os.getpid()} " in text and "(command: b)" in text and "stop it" in text, text


@pytest.mark.parametrize("code", ["ENOLCK", "EOPNOTSUPP", "EIO"])
def test_a_file_system_without_locks_is_not_called_a_folder_in_use(tmp_path: Path, monkeypatch, code) -> None:
    """``flock`` fails with ENOLCK on an NFS mount whose lock service does not run: any failure was taken for
    a holder, and the refusal named the previous run's pid, long ended, from the lock file ("no longer
    running, but one it started still holds the lock ... retry": no retry ever succeeds). Only "would
    block" means a holder; another error names the folder and its cause, and nothing is left open."""
    from examples.voc_joint import locking

    folder = tmp_path / "run"
    gone = dead_pid()
    folder.mkdir()
    (folder / ".lock").write_text(
        json.dumps({"host": socket.gethostname(), "pid": gone, "started": "x", "command": "c"}) + "\n"
    )
    number = getattr(errno, code)
    opened: list[object] = []
    real_open = open

    def track(*args, **kwargs):
        fh = real_open(*args, **kwargs)
        opened.append(fh)
        return fh

    def flock(fd: int, op: int) -> None:
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(locking, "open", track, raising=False)
    monkeypatch.setattr(locking.fcntl, "flock", flock)
    lock = FolderLock(folder)
    with pytest.raises(OSError) as info:
        lock.acquire()
    monkeypatch.undo()
    assert not isinstance(info.value, FolderLockedError)
    text = str(info.value)
    assert text.startswith(f"cannot lock the output folder {folder}: flock on {folder / '.lock'} failed: "), (
        text
    )
    assert f"({errno.errorcode[number]})" in text and "in use" not in text and info.value.errno == number, (
        text
    )
    assert text.endswith(
        "its file system may not support locks (on NFS, the lock service must run): use an "
        "output folder on a local disk"
    ), text
    assert not lock.held and all(fh.closed for fh in opened) and len(opened) == 1
    with FolderLock(folder) as again:  # nothing held: the folder locks once flock works
        assert again.held


def test_a_lock_file_that_cannot_be_written_names_it_and_keeps_no_lock(tmp_path: Path, monkeypatch) -> None:
    """A full disk when the holder's description was written into ``.lock`` raised "[Errno 28] No space left
    on device" naming no file (``train.py``: "[train] error: [Errno 28] ..."), and the open lock file went
    with the error: the folder stayed locked by the failed run as long as the error was referenced. The
    error names the lock file and its cause now, and the folder is free at once."""
    from examples.voc_joint import locking

    real_open = open

    class FullDisk:
        def __init__(self, fh) -> None:
            self.fh = fh

        def flush(self) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str):
            return getattr(self.fh, name)

    monkeypatch.setattr(locking, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)
    folder = tmp_path / "run"
    lock = FolderLock(folder)
    with pytest.raises(OSError) as info:
        lock.acquire()
    monkeypatch.undo()
    text = str(info.value)
    assert text == (
        f"cannot lock the output folder {folder}: writing its holder into {folder / '.lock'} failed: "
        "No space left on device (ENOSPC)"
    ), text
    assert not isinstance(info.value, FolderLockedError) and info.value.errno == errno.ENOSPC
    assert not lock.held
    with FolderLock(folder) as again:  # the error (still referenced here) holds no lock
        assert again.held


def _track_open(monkeypatch) -> list:
    """Record the files that ``locking`` opens (the lock file objects)."""
    from examples.voc_joint import locking

    opened: list = []
    real_open = open

    def track(*args, **kwargs):
        fh = real_open(*args, **kwargs)
        opened.append(fh)
        return fh

    monkeypatch.setattr(locking, "open", track, raising=False)
    return opened


def _hold(folder: Path, text: str):
    """Hold the lock of ``folder`` through a file of another open (not a FolderLock), recording ``text``."""
    folder.mkdir(exist_ok=True)
    fh = open(folder / ".lock", "w")  # noqa: SIM115  # closed by the caller: the lock goes with it
    fh.write(text)
    fh.flush()
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    return fh


@pytest.mark.parametrize("text", ["", '{"pid": 12', "[1, 2]\n", '{"pid": 1, "host": "h"}\n'])
def test_a_holder_that_cannot_be_read_is_named_as_such(tmp_path: Path, text: str) -> None:
    """An empty lock file (its holder has not written yet), a cut line, JSON that is not an object or lacks
    a field: the refusal says the description is not readable (and that the run may be running), it does
    not fail on the file."""
    holder = _hold(tmp_path / "run", text)
    try:
        with pytest.raises(FolderLockedError) as info:
            FolderLock(tmp_path / "run").acquire()
    finally:
        holder.close()
    message = str(info.value)
    assert "in use by another process (its description is not readable yet)" in message, message
    assert "stop it" in message, message


def test_a_holder_file_of_other_bytes_than_utf8_is_named_as_unreadable(tmp_path: Path) -> None:
    """A lock file holding bytes that are not UTF-8 (not one a FolderLock wrote: their JSON is ASCII) made
    the refusal itself fail with a UnicodeDecodeError; it says the description is not readable."""
    (tmp_path / "run").mkdir()
    holder = open(tmp_path / "run" / ".lock", "wb")  # noqa: SIM115  # closed below: the lock goes with it
    holder.write(b'{"pid": "\xff\xfe"}\n')
    holder.flush()
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    try:
        with pytest.raises(FolderLockedError) as info:
            FolderLock(tmp_path / "run").acquire()
    finally:
        holder.close()
    assert "in use by another process (its description is not readable yet)" in str(info.value), info.value


@pytest.mark.parametrize("pid", ["4242", 4242])
def test_a_holder_whose_process_cannot_be_probed_may_be_running(tmp_path: Path, monkeypatch, pid) -> None:
    """A pid that is no number, or a process of another user (``os.kill`` raises PermissionError), is not
    called ended: the refusal tells to wait for the run or stop it, not that its process is gone."""
    from examples.voc_joint import locking

    def kill(target: int, signum: int) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    recorded = {"host": socket.gethostname(), "pid": pid, "started": "2026-12-01", "command": "train.py"}
    holder = _hold(tmp_path / "run", json.dumps(recorded) + "\n")
    monkeypatch.setattr(locking.os, "kill", kill)
    try:
        with pytest.raises(FolderLockedError) as info:
            FolderLock(tmp_path / "run").acquire()
    finally:
        monkeypatch.undo()
        holder.close()
    message = str(info.value)
    assert "in use by pid 4242 " in message and "stop it" in message and "no longer" not in message, message


@pytest.mark.parametrize("code", ["EWOULDBLOCK", "EAGAIN", "EACCES"])
def test_a_refused_lock_names_the_holder_and_leaves_no_file_open(tmp_path: Path, monkeypatch, code) -> None:
    """``flock`` built on ``fcntl`` locks says EAGAIN or EACCES where it would block: a holder, named as
    one. The refusal closes the lock file it opened (an error's traceback kept it open)."""
    from examples.voc_joint import locking

    number = getattr(errno, code)
    with FolderLock(tmp_path / "run"):
        opened = _track_open(monkeypatch)

        def flock(fd: int, op: int) -> None:
            raise OSError(number, os.strerror(number))

        monkeypatch.setattr(locking.fcntl, "flock", flock)
        with pytest.raises(FolderLockedError, match=rf"in use by pid {os.getpid()} .*stop it"):
            FolderLock(tmp_path / "run").acquire()
        monkeypatch.undo()
        assert len(opened) == 1 and opened[0].closed


def test_release_closes_the_lock_file_and_unlocks_every_copy_of_it(tmp_path: Path, monkeypatch) -> None:
    """``release`` unlocks the open file (a copy made by a fork outside Python's hooks, or a ``dup``, would
    otherwise keep the folder locked) and closes it (not left to the garbage collector)."""
    opened = _track_open(monkeypatch)
    lock = FolderLock(tmp_path / "run").acquire()
    copy = os.dup(opened[0].fileno())
    try:
        lock.release()
        assert opened[0].closed and not lock.held
        with FolderLock(tmp_path / "run") as again:
            assert again.held
    finally:
        os.close(copy)


def test_a_forked_child_closes_its_copy_of_the_lock_file(tmp_path: Path, monkeypatch) -> None:
    """The child closes its copy at the fork (not left to the garbage collector, which never comes while
    something else refers to the file), and the parent's stays open and locked."""
    opened = _track_open(monkeypatch)
    with FolderLock(tmp_path / "run") as lock:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if opened[0].closed else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert lock.held and not opened[0].closed


def test_the_holder_is_the_last_line_and_one_on_another_host_may_be_running() -> None:
    """The lock file's last line names the holder (trailing blank lines ignored); a holder on another host
    is never called dead from this host's process table."""
    from examples.voc_joint.locking import _describe

    gone = dead_pid()
    line = {"host": socket.gethostname(), "started": "s", "command": "c"}
    text = json.dumps({**line, "pid": 111}) + "\n" + json.dumps({**line, "pid": 222}) + "\n\n\n"
    holder, _, readable = _describe(text)
    assert "pid 222 " in holder and readable
    elsewhere = json.dumps({**line, "host": "elsewhere", "pid": gone})
    assert _describe(elsewhere)[1:] == (True, True)
    assert _describe(json.dumps({**line, "pid": gone}))[1:] == (False, True)


# ------------------------------------------------------------- kill tests of a mutation pass (2026-12-07)
def test_without_fcntl_the_lock_is_held_in_name_and_released(tmp_path: Path, monkeypatch) -> None:
    """Windows: nothing is locked, but the object behaves as a held lock (``held``, re-entrant no-op,
    ``release``), so callers need no platform branch."""
    monkeypatch.setattr(locking, "fcntl", None)
    lock = FolderLock(tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lock.acquire() is lock and lock.held
        assert lock.acquire() is lock  # taking it again is a no-op: no second warning
    assert len(caught) == 1 and "is not locked" in str(caught[0].message)
    assert (tmp_path / "run" / locking.LOCK_NAME).is_file()
    lock.release()
    assert not lock.held


def test_the_not_locked_warning_points_at_the_caller_of_acquire(tmp_path: Path, monkeypatch) -> None:
    """``stacklevel=2``: the warning names the line that took the lock, not a line of locking.py."""
    monkeypatch.setattr(locking, "fcntl", None)
    lock = FolderLock(tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lock.acquire()
    lock.release()
    assert [Path(w.filename).resolve() for w in caught] == [Path(__file__).resolve()]
