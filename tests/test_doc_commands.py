"""Every command line the docs show parses: the options exist and their values pass the CLI's own checks.

A reader copies commands from the README, the Sphinx pages, the benchmark transcripts and the
module docstrings. This test finds every ``python [-m] <script of this project> ...`` and
``torchrun ... <script>`` in them and runs its arguments through the script's ``build_parser()`` (and
``check_args(parser, args)`` where the script has one, with the command line where it takes one), so a renamed
or removed option fails here instead of in a user's shell. The paths in the docs are placeholders for the
reader's files, so the existence checks of path options are not applied; nothing runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import importlib.util
import inspect
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest

from examples.voc_joint import cli

ROOT = Path(__file__).resolve().parents[1]

#: The command-line scripts of the project: each has a ``build_parser()`` and must appear in the docs.
SCRIPTS = {
    "examples/voc_joint/train.py": "examples.voc_joint.train",
    "examples/voc_joint/evaluate.py": "examples.voc_joint.evaluate",
    "examples/voc_joint/demo.py": "examples.voc_joint.demo",
    "examples/voc_joint/ablation.py": "examples.voc_joint.ablation",
    "examples/voc_joint/synthetic.py": "examples.voc_joint.synthetic",
    "examples/voc_joint/sbd.py": "examples.voc_joint.sbd",
    "examples/transparent_identity.py": "examples.transparent_identity",
    "benchmarks/ab_fusion.py": "benchmarks/ab_fusion.py",
    "benchmarks/ab_uniformize.py": "benchmarks/ab_uniformize.py",
    "benchmarks/bench_joint.py": "benchmarks/bench_joint.py",
    "benchmarks/bench_ops.py": "benchmarks/bench_ops.py",
    "benchmarks/bench_overhead.py": "benchmarks/bench_overhead.py",
    "benchmarks/bench_uniformize.py": "benchmarks/bench_uniformize.py",
    "benchmarks/bench_uniformize_parts.py": "benchmarks/bench_uniformize_parts.py",
    "benchmarks/bench_soft.py": "benchmarks/bench_soft.py",
    "benchmarks/bench_transparent_init.py": "benchmarks/bench_transparent_init.py",
    "benchmarks/gpu_check.py": "benchmarks/gpu_check.py",
    "benchmarks/op_coverage.py": "benchmarks/op_coverage.py",
    "docs/tutorials/own_model.py": "docs/tutorials/own_model.py",
}
_MODULE_NAMES = {mod: script for script, mod in SCRIPTS.items() if "/" not in mod}

#: A command's start: at a line's start, after a blank, ``$`` or ``(``, or after a quote (a command that a
#: message of the code quotes, ``'python .../synthetic.py --output-dir DIR'``: it ends at the closing quote).
_START = re.compile(r"(?:^|[\s$(]|(?P<quote>['\"]))(?P<command>(?:python3?|torchrun)\s.*)$")


@dataclass(frozen=True)
class Command:
    where: str  # "path:line"
    script: str  # a key of SCRIPTS
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: {self.script} {shlex.join(self.argv)}"


def _doc_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for pattern in ("*.rst", "*.txt", "*.md", "*.py"):
        files += sorted((ROOT / "docs").rglob(pattern))
    files += sorted((ROOT / "examples").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    return [f for f in files if "_build" not in f.parts]


def _parse(snippet: str, where: str) -> Command | None:
    """The project command in one shell snippet (``None``: none, or another program such as sphinx)."""
    for chained in re.split(r"&&|;|\|\|?", snippet):
        part = chained.split(" #")[0].split(">")[0]  # a trailing comment, a redirection
        m = _START.search(part.strip())
        if m is None or part.strip()[: m.start()].endswith("prog="):  # a parser's name, not a command
            continue
        text = m.group("command").split(m.group("quote"))[0] if m.group("quote") else m.group("command")
        try:
            tokens = shlex.split(text)
        except ValueError:  # an unbalanced quote: prose, not a command
            continue
        if tokens[0] == "torchrun":  # its own options first, then the script
            tokens = ["python", *tokens[next((i for i, t in enumerate(tokens) if t.endswith(".py")), 0) :]]
        if len(tokens) < 2:
            continue
        if tokens[1] == "-m":
            script = _MODULE_NAMES.get(tokens[2]) if len(tokens) > 2 else None
            argv = tokens[3:]
        else:
            script = tokens[1] if tokens[1] in SCRIPTS else None
            argv = tokens[2:]
        if script is not None:
            return Command(where, script, tuple(t for t in argv if t != "..."))  # "...": "and so on"
    return None


def commands_in(text: str, name: str) -> Iterator[Command]:
    """The project commands in one file's text: inline literals (which may wrap in reST) and plain lines."""
    text = text.replace("\\\\\n", "\\\n")  # a line continuation inside a Python docstring
    inline = r"`([^`\n]+)`" if name.endswith(".md") else r"``((?:(?!``).)+?)``"
    seen: set[tuple[str, tuple[str, ...]]] = set()
    found: list[Command] = []
    for m in re.finditer(inline, text, re.S):
        line = text.count("\n", 0, m.start()) + 1
        cmd = _parse(" ".join(m.group(1).split()), f"{name}:{line}")
        if cmd is not None:
            found.append(cmd)
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        start, snippet = i, lines[i]
        while snippet.endswith("\\") and i + 1 < len(lines):  # shell line continuation
            i += 1
            snippet = snippet[:-1] + " " + lines[i].strip()
        i += 1
        if "`" in snippet or snippet.lstrip().startswith("usage:"):  # inline literals: above; --help output
            continue
        cmd = _parse(snippet, f"{name}:{start + 1}")
        if cmd is not None:
            found.append(cmd)
    for cmd in found:
        if (cmd.script, cmd.argv) not in seen:
            seen.add((cmd.script, cmd.argv))
            yield cmd


def _all_commands() -> list[Command]:
    out = []
    for path in _doc_files():
        out += commands_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    return out


COMMANDS = _all_commands()


def load_script(path: Path, name: str) -> ModuleType:
    """The script at ``path`` (not a package module: a benchmark, a tutorial) imported as module ``name``."""
    sys.path.insert(0, str(path.parent))  # the benchmarks import their sibling _harness
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


@functools.cache
def _module(script: str) -> ModuleType:
    target = SCRIPTS[script]
    if "/" not in target:
        return importlib.import_module(target)
    path = ROOT / target
    return load_script(path, f"_doc_cli_{path.stem}")


#: Functions of the scripts that read a file named by an option (the reader's file: not read here).
FILE_READERS = ("backbone_weights_error",)


def check_command(cmd: Command, capsys: pytest.CaptureFixture[str]) -> None:
    """Parse ``cmd`` as its script would; an ``AssertionError`` names the command and argparse's message."""
    module = _module(cmd.script)
    parser: argparse.ArgumentParser = module.build_parser()
    # every option spelled in full: argparse takes a unique prefix, so a renamed option's old name that is a
    # prefix of the new one (--out of --output-dir) would still parse here
    parser.allow_abbrev = False
    for action in parser._actions:  # the docs' paths are the reader's: do not require them here
        if action.type in (cli.existing_file, cli.existing_dir) or getattr(action.type, "checks_path", False):
            action.type = getattr(action.type, "unchecked", Path)  # (the same value, its file not checked)
    # check_args reads the files some options name (train.py loads --backbone-weights into a meta-device
    # backbone): those files are the reader's too, so that reading is skipped here
    # (patched where check_args looks them up: the module that defines it, train_options for train.py)
    home = sys.modules[module.check_args.__module__] if hasattr(module, "check_args") else module
    reads = [name for name in FILE_READERS if hasattr(home, name)]
    try:
        with contextlib.ExitStack() as stack:
            for name in reads:
                stack.enter_context(mock.patch.object(home, name, lambda *args, **kwargs: None))
            args = parser.parse_args(list(cmd.argv))
            if hasattr(module, "check_args"):
                # the scripts that take the command line tell an option given at its default value (refused
                # where it does not apply: ``train.py --stage seg --lr 1e-06``) from one left out by it
                takes_argv = "argv" in inspect.signature(module.check_args).parameters
                module.check_args(parser, args, *([list(cmd.argv)] if takes_argv else []))
    except SystemExit as exc:
        if exc.code not in (0, None):  # 0: --help
            raise AssertionError(f"{cmd}\n{capsys.readouterr().err}") from None


#: The scripts that import the example pipeline (torchvision): their commands need the examples extra.
NEEDS_EXAMPLES = ("examples/voc_joint/", "benchmarks/bench_joint.py")


@pytest.mark.parametrize(
    "cmd",
    [
        pytest.param(cmd, marks=pytest.mark.examples) if cmd.script.startswith(NEEDS_EXAMPLES) else cmd
        for cmd in COMMANDS
    ],
    ids=str,
)
def test_documented_command_parses(cmd: Command, capsys: pytest.CaptureFixture[str]) -> None:
    check_command(cmd, capsys)


@pytest.mark.examples
def test_every_script_is_documented_and_follows_the_cli_convention() -> None:
    """Each command-line script appears in the docs with a command, and has ``build_parser()``."""
    shown = {cmd.script for cmd in COMMANDS}
    assert sorted(set(SCRIPTS) - shown) == []
    benchmarks = (ROOT / "benchmarks").glob("*.py")
    # (conftest.py: pytest's, for the benchmarks' doctests)
    on_disk = {
        f"benchmarks/{p.name}" for p in benchmarks if not p.name.startswith("_") and p.stem != "conftest"
    }
    assert sorted(on_disk - set(SCRIPTS)) == []  # a new benchmark script joins SCRIPTS
    examples = [*(ROOT / "examples").glob("*.py"), *(ROOT / "examples" / "voc_joint").glob("*.py")]
    main = 'if __name__ == "__main__":'
    entry_points = {str(p.relative_to(ROOT)) for p in examples if main in p.read_text()}
    assert sorted(entry_points - set(SCRIPTS)) == []  # a new example script joins SCRIPTS
    for script in SCRIPTS:
        assert callable(getattr(_module(script), "build_parser", None)), script


def test_the_extraction_sees_wrapped_continued_and_chained_commands() -> None:
    """The forms the docs use: a reST literal that wraps, a shell continuation, ``&&``, comments, ``-m``."""
    text = (
        "Run ``python benchmarks/bench_soft.py --repeats\n3`` or::\n\n"
        "    pip install -e . && python -m examples.voc_joint.train --stage seg \\\n"
        "        --epochs 2   # a comment\n"
        "    torchrun --nproc_per_node 4 examples/voc_joint/train.py --stage joint ...\n"
        "    python -m sphinx -W docs out\n"
    )
    got = [(c.where, c.script, c.argv) for c in commands_in(text, "x.rst")]
    assert got == [
        ("x.rst:1", "benchmarks/bench_soft.py", ("--repeats", "3")),
        ("x.rst:4", "examples/voc_joint/train.py", ("--stage", "seg", "--epochs", "2")),
        ("x.rst:6", "examples/voc_joint/train.py", ("--stage", "joint")),
    ]


def test_the_extraction_sees_a_command_that_a_message_quotes() -> None:
    """A command quoted in a message of the code (``data.py``: "... generate a synthetic set with 'python
    examples/voc_joint/synthetic.py --out DIR'") was not seen (a quote before ``python``), so the message
    kept an option name after its rename; it ends at the closing quote. A parser's ``prog=`` is a name, not
    a command."""
    text = (
        "        \"set with 'python examples/voc_joint/synthetic.py --output-dir DIR'.\"\n"
        '        prog="python examples/voc_joint/train.py",\n'
    )
    got = [(c.where, c.script, c.argv) for c in commands_in(text, "x.py")]
    assert got == [("x.py:1", "examples/voc_joint/synthetic.py", ("--output-dir", "DIR"))]


def _train(argv: str) -> object:
    """A ``train.py`` command line as a parameter (the script needs the examples extra)."""
    return pytest.param(f"``python examples/voc_joint/train.py {argv}``", marks=pytest.mark.examples)


@pytest.mark.parametrize(
    "line",
    [
        _train("--no-such-option"),  # an option that does not exist
        _train("--epochs 0"),  # a value its type refuses
        _train("--overwrite --resume"),  # a combination check_args refuses
        # an option of another stage at its default value: refused by the script, which reads the command line
        _train("--stage seg --lr 1e-06"),
        pytest.param(
            "``python examples/voc_joint/evaluate.py --checkpoint c.pt --batch-size 8``",  # 8: the default
            marks=pytest.mark.examples,
        ),
        "``python benchmarks/gpu_check.py --device cpu``",  # the check's own cross-option rule
        # a command that a message quotes, with an option renamed since (--out of a folder: --output-dir)
        pytest.param(
            "\"... with 'python examples/voc_joint/synthetic.py --out DIR'.\"", marks=pytest.mark.examples
        ),
    ],
)
def test_a_stale_command_fails(line: str, capsys: pytest.CaptureFixture[str]) -> None:
    (cmd,) = commands_in(line, "x.rst")
    with pytest.raises(AssertionError, match=re.escape("x.rst:1")):
        check_command(cmd, capsys)


def test_the_docs_hold_commands() -> None:
    """The search itself works on the real docs (an empty list would make the parametrized test vacuous)."""
    assert len(COMMANDS) >= 20


_SCRIPT_PATH = re.compile(r"(?:^|[\s$(`])python3?\s+([\w./-]+\.py)\b")


def script_paths_in(text: str) -> set[str]:
    """Every ``python <path>.py`` of one file's text, the scripts outside ``SCRIPTS`` included."""
    return set(_SCRIPT_PATH.findall(" ".join(text.split())))


def test_every_documented_script_path_exists() -> None:
    """A ``python <path>.py`` shown in the docs names a file of the checkout (the figure scripts of
    ``docs/_scripts`` and the other scripts without a ``build_parser()`` are not parsed above, so a renamed
    one would pass there)."""
    shown = {(p, str(f.relative_to(ROOT))) for f in _doc_files() for p in script_paths_in(f.read_text())}
    assert {p for p, _ in shown} >= {"docs/_scripts/make_joint_cost_figure.py", "examples/voc_joint/demo.py"}
    assert sorted((p, where) for p, where in shown if not (ROOT / p).is_file()) == []
    assert script_paths_in("run ``python docs/_scripts/gone.py`` and\n$ python3 x/y.py --a") == {
        "docs/_scripts/gone.py",
        "x/y.py",
    }


#: The option tables of the docs (a table whose first column is headed ``option``) and their scripts.
OPTION_TABLES = {"docs/examples/data_and_metrics.rst": "examples/voc_joint/evaluate.py"}


def option_table(text: str) -> dict[str, str]:
    """The rows of the first reST simple table headed ``option`` in ``text``: ``{option: meaning}``, the
    meaning's continuation lines joined."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if re.match(r"option\s{2,}\S", line))
    rule = lines[head - 1]
    width = len(rule.split()[0])
    rows: dict[str, str] = {}
    last = None
    for line in lines[head + 2 :]:
        if line.startswith("="):
            break
        first, meaning = line[:width].strip(), line[width:].strip()
        if first:
            last = re.sub(r"``", "", first).split()[0]
            rows[last] = meaning
        elif last is not None:
            rows[last] += " " + meaning
    return rows


@pytest.mark.examples
@pytest.mark.parametrize("doc", sorted(OPTION_TABLES))
def test_an_option_table_lists_the_options_and_defaults_of_its_script(doc: str) -> None:
    """Every visible option of the script is in the docs' table (one of a ``--x`` / ``--no-x`` pair is
    enough), the table names no option the script lacks, and a ``(default N)`` there is the parser's
    (where the parser has one: ``None`` is a default computed at run time, described in words)."""
    rows = option_table((ROOT / doc).read_text(encoding="utf-8"))
    parser: argparse.ArgumentParser = _module(OPTION_TABLES[doc]).build_parser()
    actions = [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]
    actions = [a for a in actions if not isinstance(a, argparse._HelpAction)]
    known = {opt: a for a in actions for opt in a.option_strings}
    assert sorted(set(rows) - set(known)) == [], f"{doc} lists options that {OPTION_TABLES[doc]} lacks"
    missing = [a.option_strings[0] for a in actions if not set(a.option_strings) & set(rows)]
    assert missing == [], f"{doc}: the table lacks {missing}"
    for opt, meaning in rows.items():
        m = re.search(r"\(default (?:``([^`]+)``|([\w.]+))", meaning)
        default = known[opt].default
        if m is None or default is None:  # none shown, or one described in words (computed at run time)
            continue
        shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
        assert (m.group(1) or m.group(2)) == shown, (
            f"{doc}: {opt} says default {m.group(0)!r}, --help {shown}"
        )


#: Each test file with tests marked ``slow`` and how the README's test command names what ``-m "not slow"``
#: skips there.
SLOW_TESTS = {
    "tests/test_benchmarks.py": "the benchmark smoke runs",
    "tests/test_gpu_check.py": "the GPU check's dry run and collection check",
    "tests/examples/test_demo.py": "the demo smoke tests",
    "tests/examples/test_train.py": "the demo smoke tests",
    "tests/examples/test_faults.py": "the torchrun interrupt-and-resume test",
    "tests/test_strict_warning_modes.py": "the training run with every warning an error",
    "tests/sparse_ops/test_uniformize.py": "the `torch.compile` tests of the uniformization",
}


def test_the_readme_names_every_kind_of_slow_test() -> None:
    """The README's ``pytest -n auto -m "not slow"`` sentence says what that skips: the slow tests of every
    file that has some (the ``torch.compile`` tests of the uniformization, marked slow later, were left
    out)."""
    marked = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "tests").rglob("test_*.py")
        if re.search(
            r"(?m)^\s*(@pytest\.mark\.slow|pytestmark\b.*\bslow\b)|marks=.*pytest\.mark\.slow", p.read_text()
        )
    }
    assert sorted(marked ^ set(SLOW_TESTS)) == [], "a file with slow tests joins SLOW_TESTS (and the README)"
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    sentence = readme[readme.index('`pytest -n auto -m "not slow"` skips') :].split(";")[0]
    assert [what for what in SLOW_TESTS.values() if what not in sentence] == []
    # the installation page says the same, naming each file, and the development page points to it
    # (reST's double backquotes read as the README's single ones)
    install = " ".join((ROOT / "docs" / "installation.rst").read_text(encoding="utf-8").split())
    listing = install[install.index('``-m "not slow"`` skips') :].split(".. code-block::")[0]
    assert [path for path in SLOW_TESTS if f"``{path}``" not in listing] == []
    listing = listing.replace("``", "`")
    assert [what for what in SLOW_TESTS.values() if what not in listing] == []
    development = " ".join((ROOT / "docs" / "development.rst").read_text(encoding="utf-8").split())
    bullet = development[development.index('``-m "not slow"`` skips') :].split(":doc:`installation`")[0]
    bullet = bullet.replace("``", "`")
    assert [what for what in SLOW_TESTS.values() if what not in bullet] == []
