"""The pipeline off Linux, simulated on Linux: Windows' missing POSIX names, consoles and locales that cannot
encode every character. (DataLoader workers started with ``spawn``, the default on macOS and Windows: see
``test_train_loader_same_batches_under_every_worker_start_method`` in test_train.py.)

Nothing here runs on Windows or macOS itself; each test removes, in a subprocess, what differs there.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torchvision")

from .helpers import untrained_checkpoints

ROOT = Path(__file__).resolve().parents[2]

#: The start of the code a test runs in a subprocess: what Windows lacks is removed (tests/windows_like.py).
_WINDOWS_LIKE = "import os, sys\nfrom tests.windows_like import simulate\nsimulate()\n"


def _python(
    code: str, *, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``code`` with this interpreter in the repository root (``env`` added to a copy of the
    environment); the completed process, output captured as bytes."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    full.pop("TRANSINIT_FAULT", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, timeout=timeout, check=False
    )


def test_every_script_imports_without_the_posix_only_names() -> None:
    """Windows has no fcntl, signal.SIGKILL, os.killpg or os.getloadavg: the scripts import, and the fault
    actions that need them are refused with the missing name (faults.py took signal.SIGKILL at import)."""
    code = _WINDOWS_LIKE + (
        "import importlib\n"
        "for name in ('train', 'evaluate', 'demo', 'ablation', 'sbd', 'synthetic', 'locking', 'faults'):\n"
        "    importlib.import_module('examples.voc_joint.' + name)\n"
        "from examples.voc_joint import faults\n"
        "for action in ('sigkill', 'group-sigint', 'sighup', 'group-sighup'):\n"
        "    os.environ[faults.ENV] = action + '@save:1'\n"
        "    try:\n"
        "        faults.hit('save', 1)\n"
        "    except RuntimeError as exc:\n"
        "        print(exc)\n"
    )
    res = _python(code)
    out, err = res.stdout.decode(), res.stderr.decode()
    assert res.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4, out
    assert "'sigkill' needs signal.SIGKILL" in lines[0] and sys.platform in lines[0], out
    assert "'group-sigint' needs process groups (os.killpg)" in lines[1], out
    assert "'sighup' needs signal.SIGHUP" in lines[2], out
    assert "'group-sighup' needs process groups (os.killpg)" in lines[3], out


def test_text_files_are_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """Under a locale whose encoding is not UTF-8 (a legacy Windows code page; here ASCII, the strictest),
    the files the pipeline writes are UTF-8: before, ablation.md's "±" was written in the locale's encoding
    (cp1252 bytes on Windows, a UnicodeEncodeError under ASCII)."""
    path = tmp_path / "table.md"
    code = (
        "import locale, sys\n"
        "assert locale.getpreferredencoding(False).lower() in ('ascii', 'ansi_x3.4-1968'), "
        "locale.getpreferredencoding(False)\n"
        "from pathlib import Path\n"
        "from examples.voc_joint.atomic import write_text_atomic\n"
        f"write_text_atomic(Path({str(path)!r}), 'mean \\u00b1 std\\n')\n"
    )
    res = _python(code, env={"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"})
    assert res.returncode == 0, res.stderr.decode()
    assert path.read_bytes() == "mean ± std\n".encode()


def test_output_a_console_cannot_encode_is_escaped(tmp_path: Path) -> None:
    """A path the console's encoding cannot represent (stdout redirected to a file on Windows: the locale's
    code page) is printed escaped; before, the print raised UnicodeEncodeError and the command failed."""
    out = tmp_path / "Zo\u00eb-\u0418\u0432\u0430\u043d"
    argv = ["--output-dir", str(out), "--num-train", "1", "--num-val", "1", "--height", "16", "--width", "16"]
    code = f"import runpy, sys\nsys.argv = {['synthetic.py', *argv]!r}\n"
    code += "runpy.run_path('examples/voc_joint/synthetic.py', run_name='__main__')\n"
    res = _python(code, env={"PYTHONIOENCODING": "ascii"})
    assert res.returncode == 0, res.stderr.decode()
    assert "Zo\\xeb-\\u0418\\u0432\\u0430\\u043d" in res.stdout.decode("ascii")


def test_ablation_on_a_windows_like_platform(tmp_path: Path) -> None:
    """ablation.py end to end without os.getloadavg (Windows: it raised AttributeError before the first run)
    on an ASCII console and locale: ablation.json records no load average, ablation.md is UTF-8 with its
    "±", and the table it prints is escaped where the console cannot encode it."""
    seg, spx = untrained_checkpoints(tmp_path / "ck")
    from examples.voc_joint.synthetic import generate_synthetic_voc

    root = generate_synthetic_voc(tmp_path / "voc", num_train=2, num_val=1, image_size=(36, 44), seed=1)
    out = tmp_path / "abl"
    argv = ["--data-root", str(root), "--output-dir", str(out), "--seg-checkpoint", str(seg)]
    argv += ["--spixel-checkpoint", str(spx), "--variants", "no_fusion", "--seeds", "1", "--crop-size", "32"]
    argv += ["--batch-size", "2", "--no-progress", "--threads", "1", "--max-steps", "1"]
    code = _WINDOWS_LIKE + f"import runpy\nsys.argv = {['ablation.py', *argv]!r}\n"
    code += "runpy.run_path('examples/voc_joint/ablation.py', run_name='__main__')\n"
    res = _python(code, env={"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"})
    stdout = res.stdout.decode("ascii")
    assert res.returncode == 0, res.stderr.decode()
    result = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    assert result["complete"] and result["load_average_start"] is None and result["load_average_end"] is None
    assert " ± " in (out / "ablation.md").read_text(encoding="utf-8")
    assert " \\xb1 " in stdout and "load average n/a at the start, n/a at the end" in stdout, stdout


def test_escape_keeps_undecodable_bytes_next_to_an_escaped_character() -> None:
    """A run the console cannot encode that holds both a file name's undecodable bytes and another character:
    the bytes are written back, the character escaped (before, the whole run was escaped: ``\\udcc3``)."""
    from examples.voc_joint.console import ESCAPE

    assert "a\udcc3\udcab\u00b1\udcc3b".encode("ascii", errors=ESCAPE) == b"a\xc3\xab\\xb1\xc3b"
    assert "\u00b1\u0418 \udcff".encode("ascii", errors=ESCAPE) == b"\\xb1\\u0418 \xff"


def test_escape_writes_back_only_the_bytes_of_surrogateescape() -> None:
    """``surrogateescape`` stands for a byte 0x80-0xff by U+DC80-U+DCFF only: another lone surrogate
    (U+DC41, from a broken JSON string, say) is escaped, not written as the byte 0x41 ("A"); a decoding error
    handled with the same handler is escaped too."""
    from examples.voc_joint.console import ESCAPE

    assert "\udc41\udc7f\udc80".encode("ascii", errors=ESCAPE) == b"\\udc41\\udc7f\x80"
    assert b"a\xffb".decode("ascii", errors=ESCAPE) == "a\\xffb"


@pytest.mark.parametrize(
    ("errors", "expected"),
    [("strict", "transinit-escape"), ("surrogateescape", "transinit-escape"), ("replace", "replace")],
)
def test_tolerant_output_makes_stdout_escape_what_it_cannot_encode(
    errors: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standard output that raises on a character its encoding lacks, as under a POSIX ``C`` locale
    (``surrogateescape``) or with ``PYTHONIOENCODING=ascii`` (``strict``), escapes it after
    :func:`tolerant_output`, and writes a file name's undecodable bytes back as they were; one that already
    replaces such characters is left as it is."""
    import io

    from examples.voc_joint.console import ESCAPE, tolerant_output

    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", errors=errors)
    monkeypatch.setattr(sys, "stdout", stream)
    tolerant_output()
    assert stream.errors == expected
    if expected == ESCAPE:
        stream.write("\u00b1 \udcff\n")
        stream.flush()
        assert raw.getvalue() == b"\\xb1 \xff\n"


def test_train_on_a_windows_like_platform(tiny_voc: Path, tmp_path: Path) -> None:
    """train.py end to end without the POSIX-only names: the output folder is not locked (a warning says so)
    and the checkpoint is written without ``os.fchmod`` (Windows before Python 3.13); nothing else ran the
    training command there (ablation.py fine-tunes from given checkpoints)."""
    from .helpers import train_args

    out = tmp_path / "out"
    argv = train_args(tiny_voc, out, "--stage", "spixel", "--epochs", "1", "--threads", "1")
    code = _WINDOWS_LIKE + f"import runpy\nsys.argv = {['train.py', *argv]!r}\n"
    code += "runpy.run_path('examples/voc_joint/train.py', run_name='__main__')\n"
    res = _python(code)
    err = res.stderr.decode()
    assert res.returncode == 0, err[-3000:]
    assert f"output folder {out / 'spixel'} is not locked" in err, err[-3000:]
    assert (out / "spixel" / "checkpoint.pt").is_file()


def test_the_not_locked_warning_made_an_error_leaves_no_file_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without fcntl, under ``-W error``, the warning that the folder is not locked is raised before the lock
    file is opened: before, that open file was left to the garbage collector (a ResourceWarning)."""
    from examples.voc_joint import locking

    monkeypatch.setattr(locking, "fcntl", None)
    lock = locking.FolderLock(tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(UserWarning, match="is not locked"):
            lock.acquire()
        gc.collect()
    assert not lock.held
    assert [str(w.message) for w in caught] == []


def test_tolerant_output_leaves_a_stdout_that_is_no_text_file_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """``pythonw.exe`` on Windows has no standard output (``sys.stdout is None``) and an IDE may put a writer
    without ``errors`` there: :func:`tolerant_output` leaves both as they are instead of raising
    ``AttributeError`` before the command starts."""
    from examples.voc_joint.console import tolerant_output

    class Writer:
        def write(self, text: str) -> int:
            return len(text)

    for stream in (None, Writer()):
        monkeypatch.setattr(sys, "stdout", stream)
        tolerant_output()
        assert sys.stdout is stream
