"""Argument types shared by the command lines of the VOC joint pipeline: every value is checked at parse time.

Each factory returns a callable for ``argparse``'s ``type=``; a bad value makes argparse exit with status 2
and a message naming the option, the expected range and the value given, before anything runs.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> _ = p.add_argument("--n", type=int_range(1))
    >>> p.parse_args(["--n", "3"]).n
    3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import errno
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = [
    "AMP_HELP",
    "DATA_ROOT_HELP",
    "DEVICE_HELP",
    "EVAL_DATA_ROOT_HELP",
    "FACTOR_MAX",
    "SCALE_MAX",
    "SEED_MAX",
    "SIDE_MAX",
    "THREADS_MAX",
    "WORKERS_MAX",
    "DefaultsHelpFormatter",
    "UsageError",
    "add_fusion_hidden",
    "archive_hint",
    "broken_link_error",
    "check_one_process",
    "check_output_dir",
    "device_arg",
    "error_text",
    "existing_dir",
    "existing_file",
    "flag",
    "float_range",
    "fusion_hidden_error",
    "given_options",
    "int_range",
    "one_process_error",
    "option_given",
    "out_of_memory_error",
    "output_dir_error",
    "output_path",
    "resume_arg",
    "run_command",
    "spelled",
    "split_name",
]

#: ``--help`` of the options that mean the same in every script that has them (one text: the scripts described
#: one option three ways, ``cuda if available`` and ``cuda when available``, ``float16 autocast on CUDA`` and
#: ``mixed precision (CUDA only; ignored on CPU)``).
DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when available)"
AMP_HELP = "float16 mixed precision (CUDA only; ignored on CPU)"
_DATA_FOLDERS = (
    "VOC2012 folder (JPEGImages, SegmentationClass, ImageSets/...) or a folder above it (VOCdevkit or its "
    "parent)"
)
DATA_ROOT_HELP = f"{_DATA_FOLDERS}; default: the synthetic set in $TRANSINIT_CACHE (generated if missing)"
#: ``evaluate.py``'s: a checkpoint is scored on the data it was trained on unless told otherwise.
EVAL_DATA_ROOT_HELP = (
    f"{_DATA_FOLDERS}; default: the folder the checkpoint's run trained on (its recorded --data-root; the "
    "synthetic set in $TRANSINIT_CACHE where it used that)"
)
#: Largest accepted ``--seed`` (``torch.manual_seed`` takes 64-bit seeds; numpy gets ``seed % 2**32``).
SEED_MAX = 2**63 - 1
#: Largest image side, crop, padding multiple or band width in pixels an option accepts (beyond it torch's and
#: numpy's size arithmetic overflows: a traceback after the run started, not a usage error).
SIDE_MAX = 2**14
#: Largest ``--threads`` (torch accepts up to 2**31 - 1, then crashes creating that many threads).
THREADS_MAX = 1024
#: Largest ``--workers``: the DataLoader starts its worker processes one by one, so a huge
#: count (``2**63``) forks until the machine runs out of processes or memory instead of being refused.
WORKERS_MAX = 256
#: Largest random training scale (``--scale-min`` / ``--scale-max``): a 500-pixel image scaled 16 times is
#: 8000 pixels wide; far larger factors overflow the resize (``1e308``: an ``OverflowError``).
SCALE_MAX = 16.0
#: Largest learning rate, multiplier, loss weight or power accepted: the optimizers compute in float32, and a
#: learning rate beyond its range (``--seg-lr 1e308``) is a RuntimeError at the first step.
FACTOR_MAX = 1e6
_SPLIT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
#: How torch's CPU allocator words a failed allocation: after posix_memalign (Linux, macOS), after
#: _aligned_malloc (Windows).
_CPU_ALLOCATOR_FAILED = ("can't allocate memory", "DefaultCPUAllocator: not enough memory")


class UsageError(ValueError):
    """A command that cannot run as given, found after parsing: the command lines exit with status 2."""


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default stated once: argparse's ``(default: X)`` is added unless the help
    text already states the default (it says "default") or the default is ``None`` (which means what the help
    text says, never the word None).

    Example:
        >>> p = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
        >>> _ = p.add_argument("--n", type=int, default=3, help="count")
        >>> _ = p.add_argument("--root", default=None, help="folder (default: the cache)")
        >>> _ = p.add_argument("--cap", type=int, default=None, help="at most this many")
        >>> [line.split(None, 2)[-1] for line in p.format_help().splitlines()[-3:]]
        ['count (default: 3)', 'folder (default: the cache)', 'at most this many']
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or re.search(r"\bdefault\b", text, flags=re.IGNORECASE):
            return action.help
        return super()._get_help_string(action)


def flag(name: str) -> str:
    """The command-line spelling of option ``name`` (its ``dest``).

    Example:
        >>> flag("seg_lr")
        '--seg-lr'
    """
    return "--" + name.replace("_", "-")


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str]) -> frozenset[str]:
    """The destinations of the options that ``argv`` gives, whatever their values (a value equal to the
    default counts): ``argv`` parsed again with every default suppressed.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> _ = p.add_argument("--lr", type=float, default=0.1)
        >>> _ = p.add_argument("--seed", type=int, default=0)
        >>> sorted(given_options(p, ["--lr", "0.1"]))
        ['lr']
    """
    probe = copy.deepcopy(parser)
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    probe._defaults.clear()
    return frozenset(vars(probe.parse_args(list(argv))))


def spelled(name: str, value: object) -> str:
    """Option ``name`` with ``value`` as typed on the command line.

    Example:
        >>> spelled("compile", True), spelled("freeze_bn", False), spelled("lr", 0.01)
        ('--compile', '--no-freeze-bn', '--lr 0.01')
        >>> spelled("fusion_hidden", [64, 64])
        '--fusion-hidden 64 64'
    """
    if isinstance(value, bool):
        return flag(name) if value else "--no-" + flag(name)[2:]
    if isinstance(value, (list, tuple)):
        return " ".join([flag(name), *map(str, value)])
    return f"{flag(name)} {value}"


def option_given(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str] | None
) -> Callable[[str], bool]:
    """Whether each option was given: from ``argv`` (:func:`given_options`) when the caller has it, else
    when its value in ``args`` is not the default."""
    if argv is None:
        return lambda name: bool(getattr(args, name) != parser.get_default(name))
    given = given_options(parser, argv)
    return given.__contains__


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """``type=`` for an integer in ``[low, high]`` (no upper bound when ``high`` is None)."""
    span = f">= {low}" if high is None else f"in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be an integer {span}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def add_fusion_hidden(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--fusion-hidden``, the fusion stack's logical hidden widths, with one type, default and help text
    in every script that has it: ``train.py``, ``ablation.py`` and ``bench_joint.py`` worded it three ways
    (``ablation.py`` alone said that one width is one hidden layer, ``train.py`` alone gave the depth limit,
    and ``bench_joint.py`` named no default value). The values are checked by :func:`fusion_hidden_error`
    (or by the training CLI, which words its own), once the class count is known.

    Example:
        >>> p = argparse.ArgumentParser()
        >>> add_fusion_hidden(p)
        >>> p.parse_args(["--fusion-hidden", "64"]).fusion_hidden, p.parse_args([]).fusion_hidden
        ([64], [64, 64])
    """
    from examples.voc_joint.models._checks import MAX_FUSION_DEPTH, MAX_FUSION_WIDTH
    from examples.voc_joint.models.joint import DEFAULT_FUSION_HIDDEN

    default = " ".join(map(str, DEFAULT_FUSION_HIDDEN))
    parser.add_argument(
        "--fusion-hidden",
        type=int_range(1, MAX_FUSION_WIDTH),
        nargs="+",
        default=list(DEFAULT_FUSION_HIDDEN),
        metavar="WIDTH",
        help="logical hidden widths of the fusion stack, one per hidden layer: 1 to "
        f"{MAX_FUSION_DEPTH} widths, each >= 2 x classes (42 for 21 classes) (default: {default})",
    )


def fusion_hidden_error(hidden: Sequence[int], num_classes: int | None) -> str | None:
    """The error of ``--fusion-hidden`` widths for a fusion stack over ``num_classes`` classes (``None``: they
    are fine): more than 16 widths or a layer too wide
    (:func:`~examples.voc_joint.models._checks.fusion_widths_problem`), a width below the stack's input (the
    ``2 x num_classes`` channels of ``[S, U(S)]``), or more weights than
    :func:`~examples.voc_joint.models._checks.fusion_weights_problem` allows. ``num_classes=None`` (not known
    yet: a checkpoint's) checks the widths and the hidden layers' weights; the model checks the rest when it
    is built. The training CLI
    words its own (its classes come from ``--num-classes`` or a checkpoint); ``ablation.py`` and
    ``bench_joint.py`` use this one.

    Example:
        >>> fusion_hidden_error([64, 64], 21) is None
        True
        >>> fusion_hidden_error([40, 64], 21)[:60]
        '--fusion-hidden 40 64: every hidden width of a transparent s'
    """
    from examples.voc_joint.models._checks import (
        FUSION_WEIGHTS_MAX,
        fusion_weights,
        fusion_weights_problem,
        fusion_widths_problem,
    )

    given = " ".join(map(str, hidden))
    problem = fusion_widths_problem(list(hidden))
    if problem:
        return f"--fusion-hidden must be {problem}, got {given}"
    if num_classes is None:  # the hidden layers alone bound the weights from below
        hidden_weights = fusion_weights(list(hidden), 0)
        if hidden_weights <= FUSION_WEIGHTS_MAX:
            return None
        return (
            f"--fusion-hidden {given}: its hidden layers alone make {hidden_weights} fusion weights, at most "
            f"{FUSION_WEIGHTS_MAX}"
        )
    small = [h for h in hidden if h < 2 * num_classes]
    if small:
        return (
            f"--fusion-hidden {given}: every hidden width of a transparent stack must be at least its input "
            f"width, the {2 * num_classes} channels of [S, U(S)] (2 x {num_classes} classes), got "
            f"{' '.join(map(str, small))}"
        )
    too_big = fusion_weights_problem(list(hidden), num_classes)
    return None if too_big is None else f"--fusion-hidden {given} {too_big}"


def float_range(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """``type=`` for a finite float in a range (``low_open`` / ``high_open``: exclude the bound).

    Example:
        >>> float_range(0.0, 1.0, high_open=True)("0.9")
        0.9
    """
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    span = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {span}, got {text!r}") from None
        bad = not math.isfinite(value)
        if low is not None:
            bad = bad or value < low or (low_open and value == low)
        if high is not None:
            bad = bad or value > high or (high_open and value == high)
        if bad:
            raise argparse.ArgumentTypeError(f"must be {span}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def error_text(exc: BaseException) -> str:
    """The message of ``exc`` for a one-line error; an error re-raised from a DataLoader worker (its message
    holds the worker's whole traceback) gives its original message and the worker's number.

    Example:
        >>> error_text(ValueError("Caught DataError in DataLoader worker process 1.\\nTraceback ...\\n"
        ...                       "examples.voc_joint.data.DataError: bad mask 'a.png'"))
        "bad mask 'a.png' (DataLoader worker 1)"
    """
    text = str(exc)
    worker = re.match(r"Caught \w+ in DataLoader worker process (\d+)\.", text)
    if worker is None:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    message = re.sub(r"^[\w.]+: ", "", last.strip(), count=1)
    return f"{message} (DataLoader worker {worker.group(1)})"


def out_of_memory_error(exc: BaseException) -> str | None:
    """The one-line message for ``exc`` when it is an allocation that failed (``torch.OutOfMemoryError``,
    the CPU allocator's ``RuntimeError``: "can't allocate memory" on Linux and macOS, "not enough memory" on
    Windows; a ``MemoryError``), else None: a ``--crop-size`` or ``--batch-size`` within its bounds but too
    large for the machine ends in this line (exit status 1), not a traceback.

    Example:
        >>> out_of_memory_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
        "out of memory (a smaller --crop-size or --batch-size needs less): DefaultCPUAllocator: can't ..."
        >>> out_of_memory_error(RuntimeError("shape mismatch")) is None
        True
    """
    import torch

    if not isinstance(exc, (MemoryError, torch.OutOfMemoryError)) and not (
        isinstance(exc, RuntimeError) and any(words in str(exc) for words in _CPU_ALLOCATOR_FAILED)
    ):
        return None
    first = error_text(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"out of memory (a smaller --crop-size or --batch-size needs less): {first}"


_T = TypeVar("_T")


def run_command(parser: argparse.ArgumentParser, run: Callable[[], _T]) -> _T:
    """``run()``, with what it raises as the pipeline's exit statuses and one line on stderr,
    ``<prog>: error: <message>``, instead of a traceback:

    * 2, a command that cannot run: :class:`UsageError` (an output folder that holds another run, ...) and a
      refused checkpoint (``CheckpointError``);
    * 1, what failed while running: the data (``DataError``, condensed by :func:`error_text` when a DataLoader
      worker raised it), an ``OSError`` (a file that cannot be written, a full disk), training that diverged
      (the engine's ``NonFiniteError``, a ``FloatingPointError``: as ``train.py`` says it) and an allocation
      that failed (:func:`out_of_memory_error`).

    Anything else propagates (a bug: its traceback is the report). ``demo.py`` and ``ablation.py`` run
    through it.

    Example:
        >>> run_command(argparse.ArgumentParser(prog="demo"), lambda: 3)
        3
    """
    from examples.voc_joint.checkpoint import CheckpointError  # both import torch: only when a command runs
    from examples.voc_joint.data import DataError

    try:
        return run()
    except (UsageError, CheckpointError) as exc:
        parser.exit(2, f"{parser.prog}: error: {error_text(exc)}\n")
    except (OSError, DataError, FloatingPointError) as exc:  # FloatingPointError: NonFiniteError
        parser.exit(1, f"{parser.prog}: error: {error_text(exc)}\n")
    except (MemoryError, RuntimeError) as exc:  # a --crop-size or --batch-size too large for the machine
        message = out_of_memory_error(exc)
        if message is None:
            raise
        parser.exit(1, f"{parser.prog}: error: {message}\n")


def device_arg(text: str) -> str:
    """``type=`` for ``--device``: a device torch knows (``cpu``, ``cuda``, ``cuda:N``) that exists (an empty
    string, e.g. an unset shell variable, is refused rather than taken as the default)."""
    from examples.voc_joint.distributed import resolve_device

    if not text:
        raise argparse.ArgumentTypeError("expected cpu, cuda or cuda:N, got ''")
    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def output_path(text: str) -> Path:
    """``type=`` for an output folder or file: any path but the empty string (an unset shell variable, which
    ``Path`` would take as the current folder).

    Example:
        >>> output_path("runs").name
        'runs'
    """
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got ''")
    return _expanded(text, "a path")  # (as the input paths: --output-dir=~/runs, where no shell expands it)


def one_process_error(script: str, environ: Mapping[str, str] | None = None) -> str | None:
    """Why ``script`` (evaluate.py, demo.py, ablation.py) refuses to run as one of several ``torchrun``
    processes (None: one process). Only ``train.py`` splits its work between processes; launched under
    ``torchrun`` the others ran once per process, writing the same files at the same time.

    Example:
        >>> one_process_error("evaluate.py", {"WORLD_SIZE": "1"}) is None
        True
        >>> one_process_error("evaluate.py", {"WORLD_SIZE": "2"})[:31]
        'evaluate.py runs in one process'
    """
    raw = (os.environ if environ is None else environ).get("WORLD_SIZE", "").strip()
    # unset, 1, or no count (train.py names a malformed one); str.isdigit alone takes "²", which int() refuses
    if not (raw.isascii() and raw.isdigit()) or int(raw) <= 1:
        return None
    return (
        f"{script} runs in one process, got WORLD_SIZE={int(raw)} (a torchrun launch): each process would "
        "run it whole and write the same files; run it without torchrun (train.py is the script that trains "
        "on several processes)"
    )


def output_dir_error(path: Path) -> str | None:
    """Why ``path`` cannot be an output folder (None: it can, as far as can be told before writing): an
    existing file, a path below a file, a broken symbolic link on the path (no folder can be made in its
    place), a folder this user may not write in (``path`` itself, or the nearest existing folder above it,
    where it would be made), or a name the system cannot look up.

    Such a folder is a usage error (exit status 2, found before anything runs), as every other value a
    command cannot use; what fails later while writing (a full disk) is exit status 1.

    Example:
        >>> output_dir_error(Path("runs/voc_joint")) is None  # made in the current folder
        True
    """
    try:
        chain = (path, *path.parents)
        existing = next((p for p in chain if _exists(p)), None)
        is_dir = existing is not None and existing.is_dir()
        # a link below the nearest existing folder: one that points nowhere
        below = chain[: chain.index(existing)] if existing is not None else ()
        broken = next((p for p in below if broken_link_error(p) is not None), None)
    except OSError as exc:  # a name too long for the system, ...: not a traceback
        return f"{str(path)!r} cannot be used: {exc.strerror}"
    if broken is not None:  # no folder can be made in its place: os.makedirs fails with "File exists"
        where = "" if broken == path else f", where {str(path)!r} would be made"
        return f"{broken_link_error(broken)}{where}: make the folder it points to, or remove the link"
    if existing is None:  # only a drive that does not exist holds no existing folder above the path
        return f"{str(path)!r} cannot be made: none of the folders above it exists"
    if not is_dir:
        if existing == path:
            return f"expected a folder, got the file {str(path)!r}"
        return f"{str(path)!r} lies below the file {str(existing)!r}"
    where = "" if existing == path else f", where {str(path)!r} would be made"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"this user may not write in the folder {str(existing)!r}{where} (permission denied)"
    problem = _cannot_create_in(existing)  # root passes os.access on /proc, /sys, ...: making a file tells
    if problem is not None:
        return f"no file can be made in the folder {str(existing)!r}{where} ({problem})"
    return None


def broken_link_error(link: Path) -> str | None:
    """``"'<link>' is a broken link (to '<target>', which does not exist)"`` (or ``..., a loop of links)``)
    where ``link`` is a symbolic link that cannot be followed; None for anything else.

    Example:
        >>> broken_link_error(Path("runs/voc_joint")) is None  # no link
        True
    """
    if not link.is_symlink():
        return None
    try:
        os.stat(link)
    except OSError as exc:
        why = "a loop of links" if exc.errno == errno.ELOOP else "which does not exist"
        return f"{str(link)!r} is a broken link (to {os.readlink(link)!r}, {why})"
    return None


def _cannot_create_in(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` (its error's text), or None where one can: a file is made (a
    hidden, uniquely named one) and removed at once."""
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; an ``OSError`` other than "no such file" or "not a folder" (a name too long,
    ...) is raised, unlike ``os.path.exists``, which takes any error for "does not exist"."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise
    return True


def check_output_dir(parser: argparse.ArgumentParser, path: Path, *, given: bool = True) -> None:
    """``parser.error`` (exit status 2) naming ``--output-dir`` where ``path`` cannot be an output folder
    (:func:`output_dir_error`); ``given=False``: ``path`` comes from the option's default, which the
    message says.

    Example:
        >>> check_output_dir(argparse.ArgumentParser(), Path("runs"))  # a folder to make here: no error
    """
    error = output_dir_error(path)
    if error is not None:
        parser.error(f"--output-dir{'' if given else ' (not given: its default)'}: {error}")


def check_one_process(parser: argparse.ArgumentParser, script: str) -> None:
    """``parser.error`` (exit status 2) where ``script`` was launched as one of several ``torchrun``
    processes (:func:`one_process_error`).

    Example:
        >>> check_one_process(argparse.ArgumentParser(), "demo.py")  # one process here: no error
    """
    error = one_process_error(script)
    if error is not None:
        parser.error(error)


def _expanded(text: str, what: str) -> Path:
    """``Path(text)`` with a leading ``~`` or ``~user`` expanded; the ``ArgumentTypeError`` where that names
    no home folder (an unknown user; no ``HOME`` and no password entry) instead of ``Path.expanduser``'s
    ``RuntimeError`` (a traceback)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"expected {what}, got {text!r}: its '~' names no home folder (no such user, or HOME unset)"
        ) from None


def _check_usable(text: str, what: str) -> None:
    """Raise the ``ArgumentTypeError`` for a ``text`` that cannot even be looked up as a path (a name too long
    for the system, a ``~user`` of no user, ...), instead of the ``OSError`` or ``RuntimeError`` (a traceback)
    that ``Path.is_file`` or ``Path.expanduser`` raises for it; a path that does not exist passes (the caller
    says so)."""
    try:
        _expanded(text, what).stat()
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}: {exc.strerror}") from None


def existing_file(text: str) -> Path:
    """``type=`` for a path that must be an existing file."""
    if not text:
        raise argparse.ArgumentTypeError("expected a file, got ''")
    _check_usable(text, "a file")
    path = _expanded(text, "a file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file, got the folder {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {text!r}")
    return path


def existing_dir(text: str) -> Path:
    """``type=`` for a path that must be an existing folder (not the empty string, which ``Path`` would take
    as the current folder)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a folder, got ''")
    _check_usable(text, "a folder")
    path = _expanded(text, "a folder")
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a folder, got the file {text!r}{archive_hint(path)}")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder not found: {text!r}")
    return path


#: The names of the archives a data set comes in (VOC's ``.tar``, SBD's ``benchmark.tgz``) and their command
#: (no suffix ends another: the first that matches is the one).
_ARCHIVES = {".tar": "tar -xf", ".tgz": "tar -xzf", ".tar.gz": "tar -xzf", ".zip": "unzip"}


def archive_hint(path: Path) -> str:
    """What to do with an archive passed where its folder is expected ('' for another file).

    Example:
        >>> archive_hint(Path("/data/benchmark.tgz"))
        ' (an archive: extract it first, tar -xzf benchmark.tgz, and pass the folder it makes)'
    """
    name = path.name.lower()
    for suffix, command in _ARCHIVES.items():
        if name.endswith(suffix):
            return f" (an archive: extract it first, {command} {path.name}, and pass the folder it makes)"
    return ""


def split_name(text: str) -> str:
    """``type=`` for a split list name (``train``, ``val``, ...): a plain file stem, never a path."""
    if not _SPLIT.match(text):
        raise argparse.ArgumentTypeError(
            "must be a list name such as 'train' or 'val' (letters, digits, '_', '.', '-'; no path), "
            f"got {text!r}"
        )
    return text


def resume_arg(text: str) -> str:
    """``type=`` for ``--resume PATH``: an existing checkpoint file (``--resume`` alone means ``auto``)."""
    if text == "auto":
        return text
    _check_usable(text, "a checkpoint file")
    path = _expanded(text, "a checkpoint file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"--resume expects a checkpoint file, got the folder {text!r}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"--resume checkpoint not found: {text!r}")
    return str(path)
