"""A temporary folder too long for DataLoader workers is refused before the run starts, not left to hang.

The limit is measured, not only computed: a loader with two workers runs under a temporary folder of exactly
:func:`max_tmpdir_bytes` and waits for its first batch under one a byte longer.
"""

from __future__ import annotations

import multiprocessing.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.voc_joint import workers
from examples.voc_joint.workers import (
    max_tmpdir_bytes,
    socket_base_dir,
    socket_path_limit,
    worker_socket_path,
    worker_tmpdir_error,
)

#: whether this Python falls back from a temporary folder too long for its sockets (CPython issue 132124)
FALLBACK = hasattr(multiprocessing.util, "_get_base_temp_dir")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def short_parent() -> Iterator[Path]:
    """A private folder with a short path, to grow folders of an exact length in (``tmp_path`` may already be
    longer than the limit under pytest-xdist)."""
    folder = Path(tempfile.mkdtemp(prefix="w-", dir="/tmp" if os.path.isdir("/tmp") else None))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def folder_of_length(parent: Path, size: int, fill: str = "d") -> Path:
    """A new folder inside ``parent`` whose path is ``size`` bytes long (UTF-8; ``fill`` of 1 or 2 bytes)."""
    room = size - len(os.fsencode(str(parent))) - 1
    width = len(fill.encode())
    assert room >= width and room % width == 0, (parent, size, fill)
    folder = parent / (fill * (room // width))
    folder.mkdir()
    assert len(os.fsencode(str(folder))) == size
    return folder


def test_the_limits_per_platform() -> None:
    extra = 4 if FALLBACK else 0  # the socket is then "sock-XXXXXXXX", 4 bytes shorter than "listener-..."
    assert socket_path_limit("linux") == 107 and max_tmpdir_bytes("linux") == 75 + extra
    assert socket_path_limit("darwin") == 103 and max_tmpdir_bytes("darwin") == 71 + extra
    assert socket_path_limit("freebsd14") == 103
    assert socket_path_limit("win32") is None and max_tmpdir_bytes("win32") is None
    name = "sock" if FALLBACK else "listener"
    assert worker_socket_path("/t") == f"/t/pymp-xxxxxxxx/{name}-xxxxxxxx"


def test_a_python_that_falls_back_to_a_system_folder_is_not_refused(short_parent, monkeypatch) -> None:
    """Python 3.14 (CPython issue 132124) makes its socket folder in /tmp when the temporary folder is too
    long for it, and names the socket "sock-": a long $TMPDIR then runs, and is refused only where the
    fallback finds no system folder (it returns the temporary folder itself)."""
    long_dir = str(folder_of_length(short_parent, 90))
    monkeypatch.setattr(tempfile, "tempdir", long_dir)
    assert worker_tmpdir_error(2, "--workers", platform="linux") is not None or FALLBACK
    monkeypatch.setattr(multiprocessing.util, "_get_base_temp_dir", lambda tf: "/tmp", raising=False)
    assert socket_base_dir() == "/tmp"
    assert worker_socket_path() == "/tmp/pymp-xxxxxxxx/sock-xxxxxxxx"
    assert max_tmpdir_bytes("linux") == 79
    assert worker_tmpdir_error(2, "--workers", platform="linux") is None
    monkeypatch.setattr(multiprocessing.util, "_get_base_temp_dir", lambda tf: tf.gettempdir())
    error = worker_tmpdir_error(2, "--workers", platform="linux")
    assert error is not None and f"the temporary folder {long_dir!r} " in error
    assert "whose path would be 118 bytes, above the 107" in error  # 90 + len("/pymp-xxxxxxxx/sock-xxxxxxxx")
    assert "Set TMPDIR to a folder of at most 79 bytes" in error

    def broken(*args: object) -> str:
        raise TypeError("a changed private signature")

    monkeypatch.setattr(multiprocessing.util, "_get_base_temp_dir", broken)
    assert socket_base_dir() == long_dir  # the temporary folder, as without the fallback
    assert workers._has_fallback()


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_folders_up_to_the_limit_pass_one_byte_more_is_refused(platform, short_parent, monkeypatch) -> None:
    longest = max_tmpdir_bytes(platform)
    assert longest is not None
    monkeypatch.setattr(tempfile, "tempdir", str(folder_of_length(short_parent, longest)))
    assert worker_tmpdir_error(4, "--workers", platform=platform) is None
    too_long = str(folder_of_length(short_parent, longest + 1, fill="e"))
    monkeypatch.setattr(tempfile, "tempdir", too_long)
    error = worker_tmpdir_error(4, "--workers", platform=platform)
    assert error is not None
    assert error.startswith(f"--workers 4: the temporary folder {too_long!r} ")
    limit = socket_path_limit(platform)
    assert f"is {longest + 1} bytes long" in error
    assert f"whose path would be {limit + 1} bytes, above the {limit} this system allows" in error
    assert f"Set TMPDIR to a folder of at most {longest} bytes (TMPDIR=/tmp)" in error
    assert error.endswith("or load in the main process with --workers 0")
    assert worker_tmpdir_error(0, "--workers", platform=platform) is None  # no worker, no socket
    assert worker_tmpdir_error(4, "--workers", platform="win32") is None


def test_the_length_is_counted_in_bytes(short_parent, monkeypatch) -> None:
    """Two-byte characters: the folder is too long in bytes, though not in characters."""
    longest = max_tmpdir_bytes("linux")
    assert longest is not None
    size = longest + 1
    if (size - len(os.fsencode(str(short_parent))) - 1) % 2:
        size += 1  # whole characters
    folder = folder_of_length(short_parent, size, fill="\u0418")
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    assert len(str(folder)) <= longest  # in characters it would pass
    error = worker_tmpdir_error(1, "--workers", platform="linux")
    assert error is not None and f"is {size} bytes long" in error, error  # not its length in characters


def test_the_message_names_the_variable_the_folder_came_from(short_parent, monkeypatch) -> None:
    folder = str(folder_of_length(short_parent, 90))
    monkeypatch.setattr(tempfile, "tempdir", folder)
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    assert "(from tempfile.gettempdir())" in str(worker_tmpdir_error(2, "--workers", platform="linux"))
    monkeypatch.setenv("TMP", folder)
    monkeypatch.setenv("TMPDIR", "/some/other/folder")  # set, but not the one in use (e.g. not writable)
    assert "(from $TMP)" in str(worker_tmpdir_error(2, "--workers", platform="linux"))
    monkeypatch.setenv("TMPDIR", folder)
    assert "(from $TMPDIR)" in str(worker_tmpdir_error(2, "--workers", platform="linux"))
    monkeypatch.setenv("TMPDIR", folder + os.sep)  # as often written: the same folder
    assert "(from $TMPDIR)" in str(worker_tmpdir_error(2, "--workers", platform="linux"))


PROBE = """
import sys
import torch
class Data(torch.utils.data.Dataset):
    def __len__(self): return 4
    def __getitem__(self, i): return torch.zeros(3, 4, 4)
loader = torch.utils.data.DataLoader(Data(), batch_size=2, num_workers=2, timeout=float(sys.argv[1]))
try:
    print(sum(1 for _ in loader))
except RuntimeError as exc:
    print("timed out" if "timed out" in str(exc) else exc)
"""


@pytest.mark.skipif(socket_path_limit() is None, reason="no Unix socket between DataLoader workers here")
def test_the_computed_limit_is_where_workers_stop_delivering(short_parent) -> None:
    """The formula against the system: at the limit two batches arrive, one byte beyond it none does (on a
    Python without the fallback to a system folder; with it, both arrive, as :func:`worker_tmpdir_error`
    predicts)."""
    longest = max_tmpdir_bytes()
    assert longest is not None
    outcomes, predicted = [], []
    for size, fill, timeout in ((longest, "d", "60"), (longest + 1, "e", "5")):
        folder = str(folder_of_length(short_parent, size, fill))
        saved, tempfile.tempdir = tempfile.tempdir, folder
        try:
            predicted.append("2" if worker_tmpdir_error(2, "--workers") is None else "timed out")
        finally:
            tempfile.tempdir = saved
        env = {**os.environ, "TMPDIR": folder, "PYTHONPATH": str(ROOT)}
        run = subprocess.run(
            [sys.executable, "-c", PROBE, timeout],
            check=True,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        outcomes.append(run.stdout.strip())
    assert outcomes == predicted == (["2", "2"] if FALLBACK else ["2", "timed out"])


@pytest.mark.examples
def test_train_and_evaluate_refuse_a_temporary_folder_too_long_for_their_workers(
    short_parent, monkeypatch, capsys
) -> None:
    pytest.importorskip("torchvision")
    from examples.voc_joint import evaluate, train_options

    monkeypatch.setattr(tempfile, "tempdir", str(folder_of_length(short_parent, 90)))
    parser = train_options.build_parser()
    with pytest.raises(SystemExit) as info:
        train_options.check_args(parser, parser.parse_args(["--workers", "3"]))
    assert info.value.code == 2
    assert "error: --workers 3: the temporary folder " in capsys.readouterr().err
    train_options.check_args(parser, parser.parse_args(["--workers", "0"]))
    parser = evaluate.build_parser()
    argv = ["--checkpoint", __file__]
    with pytest.raises(SystemExit) as info:
        evaluate.check_args(parser, parser.parse_args([*argv, "--workers", "1"]))
    assert info.value.code == 2
    assert "error: --workers 1: the temporary folder " in capsys.readouterr().err
    evaluate.check_args(parser, parser.parse_args([*argv, "--workers", "0"]))


@pytest.mark.parametrize("error", [AttributeError, OSError, ValueError])
def test_a_fallback_failing_in_any_way_reads_as_no_fallback(error, tmp_path, monkeypatch):
    """The private fallback may fail with anything (e.g. ``AttributeError`` once a private ``tempfile``
    helper it uses is renamed), not only ``TypeError``: the check then reads the temporary folder and never
    raises."""

    def broken(*args: object) -> str:
        raise error("private internals changed")

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(multiprocessing.util, "_get_base_temp_dir", broken, raising=False)
    assert workers.socket_base_dir() == str(tmp_path)
    workers.worker_tmpdir_error(2, "--workers", platform="linux")  # a str or None, no exception
