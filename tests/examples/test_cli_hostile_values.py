"""Hostile values for every option of every command line: a usage error naming the option, or accepted on
purpose.

Every option that takes a value, of every script's parser (read from ``parser._actions``: a new option is
swept too), gets each value of :data:`HOSTILE`. ``parse_args`` and then ``check_args`` (what ``main`` runs
before anything else) must end in ``SystemExit(2)`` whose message names the option, or accept the value:
exactly the values :data:`ACCEPTED` lists for that option, each group with its reason. An option added
without a type check accepts ``nan`` or ``''`` and fails here until it gets one (or an entry saying why).
Nothing runs: no data is read, no folder is written.

``-inf`` is not among the values: argparse takes an argument that starts with ``-`` and is not a number for
an option, so ``--seed -inf`` is its own "expected one argument" usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import inspect
import io
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("torchvision")  # the pipeline's scripts, and bench_joint.py, import it

from tests.test_doc_commands import SCRIPTS as DOC_SCRIPTS
from tests.test_doc_commands import load_script

ROOT = Path(__file__).resolve().parents[2]

#: Every command line: the documented scripts, and sbd.py.
SCRIPTS = sorted({*DOC_SCRIPTS, "examples/voc_joint/sbd.py"})

#: Options hidden from ``--help`` (``help=argparse.SUPPRESS``): the protocol between a benchmark and the
#: subprocesses it starts itself (a JSON configuration, a worker's arguments), never typed by a user.
INTERNAL = {
    ("benchmarks/ab_uniformize.py", "--worker"),
    ("benchmarks/bench_ops.py", "--worker"),
    ("benchmarks/bench_soft.py", "--worker"),
    ("benchmarks/bench_uniformize.py", "--_child"),
    ("benchmarks/bench_uniformize.py", "--_sweep"),
    ("benchmarks/gpu_check.py", "--_train"),
}


def _hostile(tmp: Path) -> dict[str, str]:
    """The values tried on every option, by name."""
    (tmp / "folder").mkdir(exist_ok=True)
    (tmp / "junk.pt").write_bytes(b"not a checkpoint")
    return {
        "empty": "",  # an unset shell variable
        "blank": " ",
        "negative": "-1",
        "zero": "0",
        "fraction": "1.5",
        "exponent": "1e3",
        "nan": "nan",
        "inf": "inf",
        "huge": str(2**70),
        "unicode": "é字",
        "long_path": "/" + "a" * 5000,  # longer than any file name the system takes
        "missing": str(tmp / "missing"),
        "folder": str(tmp / "folder"),
        "file": str(tmp / "junk.pt"),
    }


#: The names of the values of :func:`_hostile`.
HOSTILE = ("empty", "blank", "negative", "zero", "fraction", "exponent", "nan", "inf", "huge", "unicode")
HOSTILE += ("long_path", "missing", "folder", "file")

_ALL = frozenset(HOSTILE)
#: An output folder: any path but the empty string (the current folder), a file or a path below one, and a
#: name the system cannot look up (or a folder this user may not write in), refused before anything runs
#: (``cli.check_output_dir``); what fails later, while writing (a full disk), is exit status 1.
_OUTPUT = _ALL - {"empty", "file", "long_path"}
#: A benchmark's result file: any path but a folder or one below a file (and the empty string, the
#: current folder), refused by ``check_output`` before the measurements.
_RESULT_FILE = _ALL - {"empty", "folder"}
#: A split list name (``train``, ``val``): any plain file stem, digits included.
_SPLIT = frozenset({"zero", "fraction", "exponent", "nan", "inf", "huge"})
#: A count that only makes the run longer (Ctrl-C stops it); a batch larger than the data set is refused
#: when the data is read.
_LONG = frozenset({"huge"})
#: A rate, weight or power inside its documented range (0, 1.5 and 1000 are all finite and <= 1e6).
_RATE = frozenset({"zero", "fraction", "exponent"})

#: (script, option) -> (the values accepted, why). An option missing here accepts none of them.
ACCEPTED: dict[tuple[str, str], tuple[frozenset[str], str]] = {}


def _accept(script: str, options: str, values: frozenset[str], why: str) -> None:
    for option in options.split():
        ACCEPTED[(script, option)] = (values, why)


_T, _E, _D, _A, _S = (
    f"examples/voc_joint/{s}.py" for s in ("train", "evaluate", "demo", "ablation", "synthetic")
)
_I = "examples/transparent_identity.py"
_accept(_I, "--range", frozenset({"fraction", "exponent"}), "in (0, 1e6]")
_accept(_I, "--seed", frozenset({"zero"}), "in [0, 2**63 - 1]")
_accept(_T, "--output-dir", _OUTPUT, "an output folder")
_accept(_E, "--output-dir", _OUTPUT, "an output folder")
_accept(_D, "--output-dir", _OUTPUT, "an output folder")
_accept(_A, "--output-dir", _OUTPUT, "an output folder")
_accept(_S, "--output-dir", _OUTPUT, "an output folder")
_accept(_T, "--data-root", frozenset({"folder"}), "an existing folder (what it holds is checked next)")
_accept(_E, "--data-root", frozenset({"folder"}), "an existing folder (what it holds is checked next)")
_accept(_D, "--data-root", frozenset({"folder"}), "an existing folder (what it holds is checked next)")
_accept(_A, "--data-root", frozenset({"folder"}), "an existing folder (what it holds is checked next)")
_accept(_T, "--train-split", _SPLIT, "a list name (--val-split alone: 'only applies with --eval')")
_accept(_E, "--split", _SPLIT, "a list name")
_accept(
    _T, "--seg-checkpoint --spixel-checkpoint", frozenset({"file"}), "an existing file, read by its stage"
)
_accept(_E, "--checkpoint", frozenset({"file"}), "an existing file, read next (exit status 2)")
_accept(_T, "--seg-lr --head-lr-mult --spixel-pretrain-lr --lr --spixel-lr --fusion-lr", _RATE, "in range")
_accept(_T, "--weight-decay --poly-power --spixel-loss-weight --pos-weight", _RATE, "in range")
_accept(_T, "--momentum", frozenset({"zero"}), "in [0, 1)")
_accept(_T, "--scale-min --scale-max", frozenset({"fraction"}), "in (0, 16]")
_accept(_T, "--spixel-centre-bias", frozenset({"zero", "negative", "fraction"}), "in [-100, 100]")
_accept(_T, "--seed", frozenset({"zero"}), "in [0, 2**63 - 1]")
_accept(_T, "--workers", frozenset({"zero"}), "0: load in the main process")
_accept(_T, "--batch-size --epochs --max-steps --log-every", _LONG, "a longer run")
_accept(_T, "--max-image-pixels", _LONG, "no decompression-bomb guard, as asked")
_accept(_E, "--workers --boundary-tolerance", frozenset({"zero"}), "0 is meaningful")
_accept(_E, "--max-panels", frozenset({"zero", "huge"}), "0: no panels; more than the images: all of them")
_accept(_E, "--max-image-pixels", _LONG, "no decompression-bomb guard, as asked")
for _script in (_D, _A):
    _accept(_script, "--joint-lr --fusion-lr", _RATE, "in range")
    _accept(_script, "--max-steps --batch-size --max-val-images", _LONG, "a longer run")
_accept(_D, "--seg-epochs --spixel-epochs --joint-epochs", _LONG, "a longer run")
_accept(_A, "--seg-epochs --spixel-epochs --steps --eval-every", _LONG, "a longer run")
_accept(_S, "--seed", frozenset({"zero"}), "in [0, 2**63 - 1]")
_accept(_S, "--num-sbd-extra --band-radius", frozenset({"zero"}), "0 is meaningful")
_accept(
    "examples/voc_joint/sbd.py", "--voc-root --sbd-root", frozenset({"folder"}), "read next: exit 1 naming it"
)

_B = "benchmarks/"
for _script, _option in (
    ("ab_fusion", "--out"),
    ("ab_uniformize", "--out"),
    ("bench_ops", "--out"),
    ("bench_overhead", "--out"),
    ("bench_soft", "--out"),
    ("bench_transparent_init", "--out"),
    ("bench_uniformize", "--out"),
    ("bench_uniformize_parts", "--out"),
    ("op_coverage", "--out"),
):
    _accept(f"{_B}{_script}.py", _option, _RESULT_FILE - {"long_path"}, "a result file to write")
_accept(  # it adds its entry to the file's others: a file that holds no JSON object is refused before the run
    f"{_B}bench_joint.py", "--out", _RESULT_FILE - {"long_path", "file"}, "a result file to write or add to"
)
_accept(
    f"{_B}gpu_check.py", "--output-dir", _ALL - {"empty", "file", "long_path"}, "a results folder to make"
)
_accept(f"{_B}ab_fusion.py", "--rounds", _LONG, "a longer run")
_accept(f"{_B}ab_uniformize.py", "--rounds --repeats", _LONG, "a longer run")
_accept(f"{_B}bench_joint.py", "--rounds --warmup", _LONG, "a longer run")
_accept(f"{_B}bench_joint.py", "--warmup", frozenset({"zero", "huge"}), "0: no warm-up; or a longer run")
_accept(f"{_B}bench_ops.py", "--repeats", _LONG, "a longer run")
_accept(f"{_B}bench_soft.py", "--repeats", _LONG, "a longer run")
_accept(f"{_B}bench_transparent_init.py", "--seeds", _LONG, "a longer run")
_accept(f"{_B}bench_uniformize.py", "--repeats", _LONG, "a longer run")
_accept(f"{_B}bench_uniformize_parts.py", "--repeats", _LONG, "a longer run")
_accept(
    f"{_B}bench_uniformize.py",
    "--dense-max-gb",
    _RATE | {"huge"},
    "a memory budget for the dense variant (0: skip it); a huge one runs it wherever it fits",
)
_accept(f"{_B}gpu_check.py", "--budget", frozenset({"exponent", "huge"}), "seconds (stages fit)")


@functools.cache
def _module(script: str) -> ModuleType:
    if script.startswith("examples/"):
        return importlib.import_module(script[:-3].replace("/", "."))
    path = ROOT / script
    return load_script(path, f"_hostile_cli_{path.stem}")


def _base(script: str, tmp: Path) -> list[str]:
    """The required options of ``script``, with harmless values."""
    (tmp / "junk.pt").write_bytes(b"not a checkpoint")
    return {
        "examples/voc_joint/evaluate.py": ["--checkpoint", str(tmp / "junk.pt")],
        "examples/voc_joint/sbd.py": ["--voc-root", str(tmp), "--sbd-root", str(tmp)],
        "examples/voc_joint/synthetic.py": ["--output-dir", str(tmp / "syn")],
        "benchmarks/ab_fusion.py": ["--previous", str(ROOT)],
        "benchmarks/ab_uniformize.py": ["--previous", str(ROOT)],
    }.get(script, [])


def _checks(script: str) -> Callable[[list[str]], object]:
    """What ``main`` of ``script`` runs on ``argv`` before anything else."""
    module = _module(script)

    def run(argv: list[str]) -> object:
        parser = module.build_parser()
        args = parser.parse_args(argv)
        check = getattr(module, "check_args", None)
        if check is not None:
            if "argv" in inspect.signature(check).parameters:
                check(parser, args, argv)
            else:
                check(parser, args)
        if "--device" in argv and hasattr(module, "cli_device"):  # the benchmarks check it next
            module.cli_device(parser, args.device)
        return args

    return run


def _options(script: str) -> list[argparse.Action]:
    return [
        a
        for a in _module(script).build_parser()._actions
        if a.option_strings and a.nargs != 0 and a.help != argparse.SUPPRESS
    ]


def _cases() -> list[object]:
    return [
        pytest.param(script, action.option_strings[0], id=f"{Path(script).name}{action.option_strings[0]}")
        for script in SCRIPTS
        for action in _options(script)
    ]


def outcome(script: str, argv: list[str]) -> tuple[str, str]:
    """``("accepted", "")`` or ``("refused", the last line of the message)``; anything else fails."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _checks(script)(argv)
    except SystemExit as exc:
        lines = err.getvalue().strip().splitlines()
        assert exc.code == 2, (argv, exc.code, err.getvalue()[-500:])
        assert len(lines) >= 1, argv
        return "refused", lines[-1]
    return "accepted", ""


@pytest.mark.parametrize("script, option", _cases())
def test_every_option_refuses_hostile_values_or_accepts_them_on_purpose(
    script: str, option: str, tmp_path: Path
) -> None:
    action = next(a for a in _options(script) if a.option_strings[0] == option)
    width = action.nargs if isinstance(action.nargs, int) else 1
    accepted = set()
    for name, value in _hostile(tmp_path).items():
        result, message = outcome(script, [*_base(script, tmp_path), option, *[value] * width])
        if result == "accepted":
            accepted.add(name)
        else:
            assert any(o in message for o in action.option_strings), (value[:40], message)
            assert "Traceback" not in message
    expected, why = ACCEPTED.get((script, option), (frozenset(), "nothing"))
    assert accepted == expected, (
        f"{script} {option} accepts {sorted(accepted)}; ACCEPTED: {sorted(expected)} ({why})"
    )


def test_the_sweep_reaches_every_script_and_the_table_names_only_real_options(tmp_path: Path) -> None:
    assert tuple(_hostile(tmp_path)) == HOSTILE
    assert all(values <= _ALL for values, _ in ACCEPTED.values())
    swept = {(c.values[0], c.values[1]) for c in _cases()}  # type: ignore[attr-defined]
    assert {s for s, _ in swept} == set(SCRIPTS)
    assert len(swept) > 150
    assert set(ACCEPTED) <= swept, sorted(set(ACCEPTED) - swept)
    hidden = {
        (s, a.option_strings[0])
        for s in SCRIPTS
        for a in _module(s).build_parser()._actions
        if a.option_strings and a.help == argparse.SUPPRESS
    }
    assert hidden == INTERNAL


def test_an_option_added_without_a_type_check_is_swept_and_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    script = "benchmarks/bench_overhead.py"
    module = _module(script)
    build = module.build_parser

    def with_new_option() -> argparse.ArgumentParser:
        parser = build()
        parser.add_argument("--new-count", type=int, default=1, help="a count")
        return parser

    monkeypatch.setattr(module, "build_parser", with_new_option)
    assert "--new-count" in [a.option_strings[0] for a in _options(script)]
    assert outcome(script, ["--new-count", "-1"]) == ("accepted", "")
    assert (script, "--new-count") not in ACCEPTED


_NO_MEMORY = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 3221225472 bytes"
#: (script, the function its main runs) of the two scripts that share ``cli.run_command``
_RUNNERS = [("demo", "run_demo"), ("ablation", "run_ablation")]


def _raising(exc: BaseException) -> Callable[..., object]:
    """A stand-in for a script's run function that raises ``exc``."""

    def run(*args: object, **kwargs: object) -> object:
        raise exc

    return run


@pytest.mark.parametrize("script, runner", _RUNNERS)
def test_a_run_too_large_for_the_machine_is_one_line_with_exit_status_1(
    script: str,
    runner: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A value within its bounds can still not fit (``--crop-size 16384`` on a CPU machine: the allocator
    refuses 3 GB); that was the allocator's RuntimeError traceback. Any other RuntimeError propagates."""
    module = importlib.import_module(f"examples.voc_joint.{script}")
    monkeypatch.setattr(module, runner, _raising(RuntimeError(_NO_MEMORY)))
    with pytest.raises(SystemExit) as info:
        module.main(["--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 1 and err.count("\n") == 1, err
    assert err.startswith(
        f"python examples/voc_joint/{script}.py: error: out of memory (a smaller --crop-size"
    )
    assert _NO_MEMORY in err
    monkeypatch.setattr(module, runner, _raising(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        module.main(["--output-dir", str(tmp_path / "out")])


@pytest.mark.parametrize("script, runner", _RUNNERS)
def test_what_a_run_raises_is_one_line_with_the_pipelines_exit_status(
    script: str,
    runner: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One rule for both scripts (``cli.run_command``): 2 for a command that cannot run, 1 for what fails
    while it runs, one line each. A data error re-raised from a DataLoader worker was printed with the
    worker's whole traceback in its "one line" (``train.py`` and ``evaluate.py`` already condensed it), and
    training that diverges (``--joint-lr 1e6``, within its bounds: the engine's NonFiniteError) was a
    traceback."""
    from examples.voc_joint.checkpoint import CheckpointError
    from examples.voc_joint.cli import UsageError
    from examples.voc_joint.data import DataError
    from examples.voc_joint.engine import NonFiniteError

    module = importlib.import_module(f"examples.voc_joint.{script}")
    worker = DataError(
        "Caught DataError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
        "  File \"data.py\", line 1, in read\nexamples.voc_joint.data.DataError: bad mask 'a.png'\n"
    )
    diverged = "[joint] non-finite loss and gradients at step 2 (epoch 1; loss nan): training stopped"
    for exc, status, message in (
        (UsageError("the output folder holds another run"), 2, "the output folder holds another run"),
        (CheckpointError("--seg-checkpoint: not a checkpoint"), 2, "--seg-checkpoint: not a checkpoint"),
        (worker, 1, "bad mask 'a.png' (DataLoader worker 3)"),
        (OSError(28, "No space left on device"), 1, "[Errno 28] No space left on device"),
        (NonFiniteError(diverged), 1, diverged),
    ):
        monkeypatch.setattr(module, runner, _raising(exc))
        with pytest.raises(SystemExit) as info:
            module.main(["--output-dir", str(tmp_path / "out")])
        err = capsys.readouterr().err
        prog = f"python examples/voc_joint/{script}.py"
        assert (info.value.code, err) == (status, f"{prog}: error: {message}\n")
    monkeypatch.setattr(module, runner, lambda *args, **kwargs: {"rows": []})
    assert module.main(["--output-dir", str(tmp_path / "out")]) == {"rows": []}


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError(_NO_MEMORY),  # the CPU allocator on Linux and macOS (posix_memalign)
        RuntimeError(  # on Windows (_aligned_malloc): the same failure, other words
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to "
            "allocate 3221225472 bytes."
        ),
        MemoryError(),  # Python's own, usually without a message
    ],
    ids=["posix", "windows", "memoryerror"],
)
def test_every_failed_allocation_is_an_out_of_memory_line(exc: BaseException) -> None:
    from examples.voc_joint.cli import out_of_memory_error

    message = out_of_memory_error(exc)
    assert message is not None and message.startswith("out of memory (a smaller --crop-size or --batch-size")
    assert message.endswith(str(exc) or type(exc).__name__), message


def test_a_gpu_out_of_memory_error_is_an_out_of_memory_line_and_other_runtime_errors_are_not() -> None:
    import torch

    from examples.voc_joint.cli import out_of_memory_error

    gpu = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert str(out_of_memory_error(gpu)).endswith(": CUDA out of memory. Tried to allocate 2.00 GiB")
    assert out_of_memory_error(RuntimeError("Trying to resize storage that is not resizable")) is None
    assert out_of_memory_error(RuntimeError("the model could not allocate its buffers")) is None


@pytest.mark.parametrize(
    "make, text, accepted",
    [
        (lambda cli: cli.int_range(1, 5), "5", True),  # the upper bound itself is in the range
        (lambda cli: cli.int_range(1, 5), "6", False),
        (lambda cli: cli.int_range(1, 5), "1", True),
        (lambda cli: cli.float_range(0.0, 1.0, high_open=True), "1", False),  # --momentum 1: [0, 1)
        (lambda cli: cli.float_range(0.0, 1.0, high_open=True), "0.999", True),
        (lambda cli: cli.float_range(0.0, 1.0), "1", True),
        (lambda cli: cli.float_range(0.0, 16.0, low_open=True), "0", False),  # --scale-min 0: (0, 16]
    ],
)
def test_the_range_types_take_their_bounds_as_documented(
    make: Callable[[ModuleType], Callable[[str], object]], text: str, accepted: bool
) -> None:
    """The sweep's values (0, 1.5, 1e3, 2**70, ...) never sit on an upper bound: a closed one taken for open
    (``value >= high``) or an open one taken for closed (``--momentum 1``) passed it."""
    from examples.voc_joint import cli

    parse = make(cli)
    if accepted:
        assert parse(text) == float(text)
    else:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got {text}$"):
            parse(text)


@pytest.mark.parametrize("text", ["val/../train", "val/", "a b", "val\\x", "trainé"])
def test_a_split_name_that_starts_as_a_list_name_is_still_refused_whole(text: str) -> None:
    """The sweep's paths start with ``/``; a value whose first characters form a list name (``val/../train``)
    must be refused for what follows them."""
    from examples.voc_joint.cli import split_name

    with pytest.raises(argparse.ArgumentTypeError, match="no path"):
        split_name(text)
    assert split_name("train_aug-2012.v1") == "train_aug-2012.v1"


def test_resume_arg_gives_the_checkpoint_path_with_the_home_folder_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--resume ~/run/checkpoint.pt`` is checked and used as the same file: the path it returns is the
    expanded one (``train.py`` compares it with the stage's checkpoint), ``auto`` stays ``auto``."""
    from examples.voc_joint.cli import resume_arg

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "checkpoint.pt").write_bytes(b"a checkpoint, not read here")
    assert resume_arg("~/checkpoint.pt") == str(tmp_path / "checkpoint.pt")
    assert resume_arg("auto") == "auto"
    with pytest.raises(argparse.ArgumentTypeError, match=r"--resume checkpoint not found: '~/missing\.pt'"):
        resume_arg("~/missing.pt")


def test_the_range_types_name_the_expected_range_and_the_value_given() -> None:
    """A refused value's message names the expected range, each bound with its own comparison (``>=`` for a
    closed bound, ``<`` for an open one, joined by "and", a fractional bound written as given) and the value
    typed, also when it is no number at all."""
    from examples.voc_joint import cli

    with pytest.raises(argparse.ArgumentTypeError) as info:
        cli.int_range(1, 5)("x3")
    assert str(info.value) == "expected an integer in [1, 5], got 'x3'"
    with pytest.raises(argparse.ArgumentTypeError) as info:
        cli.float_range(0.0, 1.0, high_open=True)("1")
    assert str(info.value) == "must be a finite number >= 0 and < 1, got 1"
    with pytest.raises(argparse.ArgumentTypeError) as info:
        cli.float_range(0.5, 16.0)("0.25")
    assert str(info.value) == "must be a finite number >= 0.5 and <= 16, got 0.25"


@pytest.mark.parametrize("text", ["inf", "nan", "1e999"])
def test_a_float_range_without_an_upper_bound_still_refuses_infinity(text: str) -> None:
    """``float_range`` takes finite numbers only: without an upper bound no comparison refuses ``inf``, the
    finiteness check must."""
    from examples.voc_joint import cli

    with pytest.raises(argparse.ArgumentTypeError, match=f"must be a finite number >= 0, got {text}$"):
        cli.float_range(0.0)(text)


def test_the_help_states_a_default_its_text_already_states_only_once() -> None:
    """``DefaultsHelpFormatter`` adds ``(default: X)`` only where the help text does not state the default
    itself, whatever the case of the word ("Default ..." at the start of a sentence)."""
    from examples.voc_joint.cli import DefaultsHelpFormatter

    p = argparse.ArgumentParser(prog="p", formatter_class=DefaultsHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 64], help="widths (default: 64 64)")
    p.add_argument("--root", default="cache", help="a folder. Default: the cache")
    p.add_argument("--n", type=int, default=3, help="count")
    text = " ".join(p.format_help().split())
    assert "widths (default: 64 64) --root" in text
    assert "a folder. Default: the cache --n" in text
    assert text.endswith("count (default: 3)")
    assert text.lower().count("default") == 3


@pytest.mark.parametrize("text", [".hidden", "..", ".train"])
def test_a_split_name_starting_with_a_dot_is_refused(text: str) -> None:
    """A list name starts with a letter, digit or ``_``: a leading dot (a hidden file, ``..``) is no
    plain list name."""
    from examples.voc_joint.cli import split_name

    with pytest.raises(argparse.ArgumentTypeError, match="no path"):
        split_name(text)


def test_a_file_given_for_a_folder_is_named_a_file_with_an_archives_hint(tmp_path: Path) -> None:
    """``existing_dir`` on an existing file says it is a file (not "folder not found"), and for a data set's
    archive how to extract it."""
    from examples.voc_joint.cli import existing_dir

    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "VOCtrainval.tar").write_bytes(b"")
    with pytest.raises(argparse.ArgumentTypeError) as info:
        existing_dir(str(tmp_path / "notes.txt"))
    assert str(info.value) == f"expected a folder, got the file {str(tmp_path / 'notes.txt')!r}"
    with pytest.raises(argparse.ArgumentTypeError) as info:
        existing_dir(str(tmp_path / "VOCtrainval.tar"))
    assert str(info.value).endswith(
        " (an archive: extract it first, tar -xf VOCtrainval.tar, and pass the folder it makes)"
    )


def test_an_empty_file_argument_is_refused_as_empty_not_as_the_current_folder() -> None:
    """``existing_file("")`` (an unset shell variable) says it got an empty value; ``Path("")`` would be the
    current folder, "got the folder ''" names a folder the user never typed."""
    from examples.voc_joint.cli import existing_file

    with pytest.raises(argparse.ArgumentTypeError) as info:
        existing_file("")
    assert str(info.value) == "expected a file, got ''"


def test_a_path_below_a_file_is_not_found_rather_than_unusable(tmp_path: Path) -> None:
    """A path below a file (``ENOTDIR``) does not exist: ``existing_file`` and ``resume_arg`` say "not
    found", as for any missing path, not a lookup error of the system."""
    from examples.voc_joint.cli import existing_file, resume_arg

    (tmp_path / "a.pt").write_bytes(b"x")
    below = str(tmp_path / "a.pt" / "b.pt")
    with pytest.raises(argparse.ArgumentTypeError) as info:
        existing_file(below)
    assert str(info.value) == f"file not found: {below!r}"
    with pytest.raises(argparse.ArgumentTypeError) as info:
        resume_arg(below)
    assert str(info.value) == f"--resume checkpoint not found: {below!r}"


@pytest.mark.parametrize(
    "name, command",
    [
        ("benchmark.tgz", "tar -xzf"),
        ("VOC.tar.gz", "tar -xzf"),
        ("VOC2012.TAR", "tar -xf"),
        ("a.Zip", "unzip"),
    ],
)
def test_the_archive_hint_names_the_command_of_each_archive_whatever_its_case(
    name: str, command: str
) -> None:
    """``archive_hint`` gives each archive's own command (``.tar.gz`` is gzipped: ``-xzf``), also for a name
    in capitals."""
    from examples.voc_joint.cli import archive_hint

    assert archive_hint(Path("/data") / name) == (
        f" (an archive: extract it first, {command} {name}, and pass the folder it makes)"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this system")
def test_resume_refuses_an_existing_path_that_is_no_regular_file(tmp_path: Path) -> None:
    """``--resume`` takes a checkpoint file: an existing path that is neither a file nor a folder (a named
    pipe) is refused at parse time, not opened (a pipe blocks the load)."""
    from examples.voc_joint.cli import resume_arg

    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(argparse.ArgumentTypeError, match="--resume checkpoint not found"):
        resume_arg(str(pipe))


def test_the_hidden_layers_may_hold_exactly_the_most_fusion_weights() -> None:
    """With the classes not known yet the hidden layers' own weights are bounded: exactly
    ``FUSION_WEIGHTS_MAX`` of them is allowed, one layer more is refused naming both counts."""
    from examples.voc_joint.cli import fusion_hidden_error
    from examples.voc_joint.models._checks import FUSION_WEIGHTS_MAX

    assert FUSION_WEIGHTS_MAX == 4 * 8192 * 8192  # four products of 8192 x 8192
    assert fusion_hidden_error([8192] * 5, None) is None
    assert fusion_hidden_error([8192] * 5 + [1], None) == (
        f"--fusion-hidden {' '.join(['8192'] * 5)} 1: its hidden layers alone make "
        f"{FUSION_WEIGHTS_MAX + 8192} fusion weights, at most {FUSION_WEIGHTS_MAX}"
    )


def test_without_argv_an_option_counts_as_given_only_when_its_value_differs_from_the_default() -> None:
    """``option_given`` without ``argv`` compares values: a float or a list parsed from the command line equal
    to the default (a new object, not the default's) is not given; another value is."""
    from examples.voc_joint.cli import option_given

    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 64])
    given = option_given(p, p.parse_args(["--lr", "0.1", "--widths", "64", "64"]), None)
    assert not given("lr") and not given("widths")
    given = option_given(p, p.parse_args(["--lr", "0.2", "--widths", "64"]), None)
    assert given("lr") and given("widths")
