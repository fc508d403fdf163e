"""One exit status for an output folder that cannot be used, in every script that writes one.

The rule (the pipeline page, "Exit statuses"): a command that cannot run as given exits with status 2 before
anything runs, and an output folder that is a file, lies below a file or sits where this user may not write
is such a command (``cli.check_output_dir``); a write that fails later (a full disk) is exit status 1. Before,
the same ``--output-dir`` was exit status 1 in ``train.py``, ``evaluate.py`` and ``demo.py`` (an ``OSError``
at the first write, after the data checks), 2 or 1 in ``synthetic.py`` (a file: its own refusal; below a
file: the ``OSError``), and 1 in ``ablation.py`` after its data checks.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.read_only import deny_writes

from .helpers import ROOT, script_env

#: The scripts that write an output folder (``--output-dir``), each with the options it needs to reach its
#: checks (``evaluate.py``: a ``--checkpoint`` file, not read before them).
SCRIPTS: dict[str, Callable[[Path], list[str]]] = {
    "train": lambda tmp: ["--stage", "seg"],
    "evaluate": lambda tmp: ["--checkpoint", str(tmp / "given.pt")],
    "demo": lambda tmp: [],
    "ablation": lambda tmp: [],
    "synthetic": lambda tmp: [],
}

#: How an output folder can be unusable: the ``--output-dir`` value for a scratch folder, and the folder
#: that ``os.access`` reports as not writable (None: none).
CASES: dict[str, Callable[[Path], tuple[Path, Path | None]]] = {
    "a file": lambda tmp: (tmp / "file", None),
    "below a file": lambda tmp: (tmp / "file" / "out", None),
    "a folder without write permission": lambda tmp: (tmp / "locked", tmp / "locked"),
    "to be made in a folder without write permission": lambda tmp: (tmp / "locked" / "new", tmp / "locked"),
    # (os.makedirs fails on it with "File exists", after the data checks)
    "a broken link": lambda tmp: (tmp / "dangling", None),
    "to be made below a broken link": lambda tmp: (tmp / "dangling" / "new", None),
}


def _scratch(tmp: Path) -> None:
    (tmp / "file").write_text("not a folder\n", encoding="utf-8")
    (tmp / "locked").mkdir()
    (tmp / "given.pt").write_bytes(b"a checkpoint, not read before the checks")
    (tmp / "dangling").symlink_to(tmp / "not_made_yet")  # a link to a folder not made (a disk not set up)


def _files(tmp: Path) -> list[Path]:
    return sorted(tmp.rglob("*"))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_an_unusable_output_folder_is_exit_status_2_before_anything_runs(
    script: str,
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _scratch(tmp_path)
    out, locked = CASES[case](tmp_path)
    deny_writes(monkeypatch, locked)
    before = _files(tmp_path)
    module = importlib.import_module(f"examples.voc_joint.{script}")
    with pytest.raises(SystemExit) as exc:
        module.main([*SCRIPTS[script](tmp_path), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert exc.value.code == 2, (exc.value.code, err)
    assert "error: --output-dir: " in err and str(out) in err, err
    assert _files(tmp_path) == before  # nothing made, locked or written


def test_evaluate_names_its_default_output_folder_when_it_cannot_be_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--output-dir`` the results go next to the checkpoint (``eval_<split>``): a checkpoint in a
    folder this user may not write in is refused up front, and the message says the folder is the default."""
    from examples.voc_joint import evaluate

    _scratch(tmp_path)
    deny_writes(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as exc:
        evaluate.main(["--checkpoint", str(tmp_path / "given.pt")])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "--output-dir (not given: its default): " in err and str(tmp_path / "eval_val") in err, err


def test_sbd_refuses_a_voc_folder_it_may_not_write_in_before_reading_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``sbd.py`` writes its layout into ``--voc-root``: a VOC folder this user may not write in is exit
    status 2 with the others (it was exit status 1 once every ``.mat`` file had been read)."""
    from examples.voc_joint import sbd

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets").mkdir()
    for folder in (voc, voc / "ImageSets"):
        monkeypatch.undo()
        deny_writes(monkeypatch, folder)
        with pytest.raises(SystemExit) as exc:
            sbd.main(["--voc-root", str(tmp_path), "--sbd-root", str(tmp_path), "--no-progress"])
        err = capsys.readouterr().err
        assert exc.value.code == 2, err
        expected = "error: --voc-root: the trainaug layout is written into the VOC folder, but this user may "
        assert f"{expected}not write in the folder '{folder}'" in err, err


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_the_script_exits_with_status_2_for_an_output_folder_below_a_file(
    script: str, tmp_path: Path
) -> None:
    """The exit status of the process itself (``python examples/voc_joint/<script>.py``)."""
    _scratch(tmp_path)
    out = tmp_path / "file" / "out"
    proc = subprocess.run(
        [
            sys.executable,
            f"examples/voc_joint/{script}.py",
            *SCRIPTS[script](tmp_path),
            "--output-dir",
            str(out),
        ],
        cwd=ROOT,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"error: --output-dir: '{out}" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_message_says_why_the_folder_cannot_be_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each case of ``cli.output_dir_error`` has its own words: a path below a file ("not a folder" from
    ``os.stat``) is not taken for a name the system cannot look up, and a folder this user may write in but
    not enter (no search permission) cannot hold the output either."""
    import os

    from examples.voc_joint.cli import output_dir_error

    _scratch(tmp_path)
    below = tmp_path / "file" / "out"
    assert output_dir_error(below) == f"{str(below)!r} lies below the file {str(tmp_path / 'file')!r}"
    assert (
        output_dir_error(tmp_path / "file") == f"expected a folder, got the file {str(tmp_path / 'file')!r}"
    )
    locked = tmp_path / "locked"
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: not (Path(path) == locked and mode & os.X_OK) and real(path, mode)
    )
    assert (
        output_dir_error(locked)
        == f"this user may not write in the folder {str(locked)!r} (permission denied)"
    )
    assert output_dir_error(locked / "new") == (
        f"this user may not write in the folder {str(locked)!r}, where {str(locked / 'new')!r} would be made "
        "(permission denied)"
    )
    link, target = tmp_path / "dangling", str(tmp_path / "not_made_yet")
    assert output_dir_error(link) == (
        f"{str(link)!r} is a broken link (to {target!r}, which does not exist): make the folder it points "
        "to, or remove the link"
    )
    assert output_dir_error(link / "new") == (
        f"{str(link)!r} is a broken link (to {target!r}, which does not exist), where "
        f"{str(link / 'new')!r} would be made: make the folder it points to, or remove the link"
    )
    (tmp_path / "linked").symlink_to(tmp_path / "locked")  # a link that points somewhere is a folder
    monkeypatch.undo()
    assert output_dir_error(tmp_path / "linked") is None
    assert output_dir_error(tmp_path / "linked" / "new") is None


def test_a_folder_no_file_can_be_made_in_is_refused_though_access_allows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``os.access`` lets root write anywhere, /proc and /sys included, where no file can be made: the check
    passed, and ``bench_soft.py --out /proc/soft.json`` failed with a traceback after its whole measurement.
    A file is now made (and removed) in the folder; where that fails, the folder is refused with the error."""
    import errno
    import os
    import tempfile

    from examples.voc_joint.cli import output_dir_error

    folder = tmp_path / "mounted read-only"
    folder.mkdir()
    assert output_dir_error(folder) is None and list(folder.iterdir()) == []  # the made file is removed
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assert output_dir_error(folder / "new") == (
        f"no file can be made in the folder {str(folder)!r}, where {str(folder / 'new')!r} would be made "
        f"({os.strerror(errno.EROFS)})"
    )
    proc = Path("/proc")
    if sys.platform.startswith("linux") and proc.is_dir():  # as root too (os.access says yes there)
        monkeypatch.undo()
        assert output_dir_error(proc / "soft") is not None
        open_files = len(list(Path("/proc/self/fd").iterdir()))
        for _ in range(20):  # the file made to tell is closed and removed each time
            assert output_dir_error(folder) is None
        assert len(list(Path("/proc/self/fd").iterdir())) == open_files and list(folder.iterdir()) == []
