"""The command-line scripts as one family: one name per idea, and a help text for every option.

A reader who learned ``train.py --workers`` and a benchmark's ``--out`` types them into the next script too:
``evaluate.py --num-workers`` and ``bench_joint.py --output`` / ``ab_uniformize.py --output`` were such
traps (an ``unrecognized arguments`` error, or worse, an abbreviation that matched another option), as was
``bench_joint.py --recompute`` for the training CLI's ``--recompute-fusion``. So was ``--out``, a result file
of the benchmarks but the output folder of ``evaluate.py``, ``synthetic.py`` and ``gpu_check.py``: one name
per kind of output path, ``--output-dir`` for a folder and ``--out`` for a file. The scripts are those of
``tests/test_doc_commands.py`` (every script of the project, each with ``build_parser()``).
"""

from __future__ import annotations

import argparse
import inspect
import re

import pytest

from tests.test_doc_commands import NEEDS_EXAMPLES, ROOT, SCRIPTS, _module

#: Names of one idea that a script must not use, with the name the other scripts use for it.
OTHER_NAMES = {
    "--output": "--out",  # a result file (the benchmarks); a folder is --output-dir (train, demo, ablation)
    "--out-dir": "--output-dir",
    "--output-file": "--out",
    "--num-workers": "--workers",  # DataLoader worker processes
    "--num-threads": "--threads",
    "--recompute": "--recompute-fusion",  # the training CLI's name of the fusion stack's recomputation
}


#: The option of each kind of output path.
OUTPUT_OPTION = {"folder": "--output-dir", "file": "--out"}

#: What each script writes to a path given on its command line: a folder, a file, or nothing (``None``:
#: ``sbd.py`` writes into the VOC folder it reads, ``--voc-root``; the others print). A new script joins here.
OUTPUT_KIND: dict[str, str | None] = {
    "examples/voc_joint/train.py": "folder",  # <output-dir>/<stage>/: checkpoint, log, evaluation
    "examples/voc_joint/evaluate.py": "folder",  # metrics.json and panels/
    "examples/voc_joint/demo.py": "folder",  # checkpoints, logs, panels, results
    "examples/voc_joint/ablation.py": "folder",  # ablation.json / .md / .png and the pretraining
    "examples/voc_joint/synthetic.py": "folder",  # the VOC2012 layout
    "examples/voc_joint/sbd.py": None,
    "examples/transparent_identity.py": None,
    "benchmarks/ab_fusion.py": "file",  # the JSON
    "benchmarks/ab_uniformize.py": "file",  # the JSON
    "benchmarks/bench_joint.py": "file",
    "benchmarks/bench_ops.py": "file",
    "benchmarks/bench_overhead.py": "file",
    "benchmarks/bench_uniformize.py": "file",
    "benchmarks/bench_uniformize_parts.py": "file",
    "benchmarks/bench_soft.py": "file",
    "benchmarks/bench_transparent_init.py": "file",
    "benchmarks/gpu_check.py": "folder",  # the report's .json and .txt
    "benchmarks/op_coverage.py": "file",  # the CSV
    "docs/tutorials/own_model.py": None,
}


def _options(script: str) -> list[argparse.Action]:
    """The visible options of ``script``'s parser (``--help`` and the hidden worker options left out)."""
    parser: argparse.ArgumentParser = _module(script).build_parser()
    return [
        a
        for a in parser._actions
        if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
    ]


_PARAMS = [
    pytest.param(script, marks=pytest.mark.examples) if script.startswith(NEEDS_EXAMPLES) else script
    for script in SCRIPTS
]


@pytest.mark.parametrize("script", _PARAMS)
def test_one_name_per_idea(script: str) -> None:
    """No script names an idea differently from the others (:data:`OTHER_NAMES`)."""
    used = {opt for action in _options(script) for opt in action.option_strings}
    wrong = {opt: OTHER_NAMES[opt] for opt in sorted(used & set(OTHER_NAMES))}
    assert not wrong, f"{script}: rename {wrong} (the name the other scripts use)"


def test_every_script_says_what_it_writes() -> None:
    """:data:`OUTPUT_KIND` names every script (a new one states whether it writes a folder or a file)."""
    assert sorted(set(SCRIPTS) ^ set(OUTPUT_KIND)) == []


@pytest.mark.parametrize("script", _PARAMS)
def test_one_name_per_kind_of_output_path(script: str) -> None:
    """A script's output path is ``--output-dir`` when it is a folder, ``--out`` when it is a file, and a
    script that writes no path of its own has neither: ``evaluate.py --out``, ``synthetic.py --out`` and
    ``gpu_check.py --out`` named folders, as ``--output-dir`` does in ``train.py``, ``demo.py`` and
    ``ablation.py``."""
    used = {opt for action in _options(script) for opt in action.option_strings}
    kind = OUTPUT_KIND[script]
    expected = {OUTPUT_OPTION[kind]} if kind is not None else set()
    got = used & set(OUTPUT_OPTION.values())
    writes = f"a {kind}" if kind is not None else "no path of its own"
    assert got == expected, (
        f"{script} writes {writes}: expected the options {sorted(expected)}, got {sorted(got)}"
    )


@pytest.mark.parametrize("script", _PARAMS)
def test_options_are_taken_by_their_whole_name(script: str) -> None:
    """No parser takes a prefix of an option for the option (``allow_abbrev=False``): a prefix is an alias
    that nobody declared, which a later option can make ambiguous, and which kept a renamed option's old name
    working where it is a prefix of the new one (see the next test)."""
    assert _module(script).build_parser().allow_abbrev is False, f"{script}: pass allow_abbrev=False"


@pytest.mark.parametrize(
    ("script", "required"),
    [
        pytest.param(
            "examples/voc_joint/evaluate.py", ["--checkpoint", __file__], marks=pytest.mark.examples
        ),
        pytest.param("examples/voc_joint/synthetic.py", [], marks=pytest.mark.examples),
        ("benchmarks/gpu_check.py", []),
    ],
)
def test_the_old_name_of_an_output_folder_is_refused(
    script: str, required: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--out`` of a folder was renamed ``--output-dir`` (0.x: no alias), but argparse took ``--out DIR`` as
    an abbreviation of ``--output-dir`` and ran on: ``--out`` named a folder there and a file elsewhere."""
    parser: argparse.ArgumentParser = _module(script).build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([*required, "--output-dir", "kept", "--out", "taken"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --out taken" in capsys.readouterr().err


@pytest.mark.parametrize("script", _PARAMS)
def test_every_option_has_a_help_text(script: str) -> None:
    """``--help`` says what every option does (an option without a help text is a bare name there)."""
    bare = [action.option_strings[0] for action in _options(script) if not (action.help or "").strip()]
    assert not bare, f"{script}: options without a help text: {bare}"


@pytest.mark.parametrize("script", _PARAMS)
def test_every_default_is_in_the_help(script: str) -> None:
    """``--help`` names the default of every option that has one (a flag aside; ``None`` is a default that
    the help text describes in words): ``evaluate.py --batch-size``, ``bench_joint.py --rounds`` and 14
    others did not."""
    parser: argparse.ArgumentParser = _module(script).build_parser()
    formatter = parser._get_formatter()
    silent = [
        action.option_strings[0]
        for action in _options(script)
        if action.default is not None
        and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        and "default" not in formatter._expand_help(action).lower()
    ]
    assert not silent, f"{script}: --help does not name the default of {silent}"


@pytest.mark.parametrize("script", _PARAMS)
def test_every_help_words_its_default_one_way(script: str) -> None:
    """``--help`` words every default as argparse does, ``(default: X)``: the help texts that state their own
    default said ``(default 8)``, in 15 scripts, beside the formatter's ``(default: 64 64)`` in the same
    listing."""
    parser: argparse.ArgumentParser = _module(script).build_parser()
    formatter = parser._get_formatter()
    other = [
        (action.option_strings[0], m.group(0))
        for action in _options(script)
        for m in re.finditer(r"\(default\b(?!: )[^)]{0,24}", formatter._expand_help(action))
    ]
    assert not other, f"{script}: write these defaults as '(default: X)': {other}"


#: The example scripts (the benchmarks share ``benchmarks/_harness.run_script`` instead).
_EXAMPLES = [
    pytest.param(s, marks=pytest.mark.examples) for s in SCRIPTS if s.startswith("examples/voc_joint/")
]
_EXAMPLES.append("examples/transparent_identity.py")


@pytest.mark.parametrize("script", _EXAMPLES)
def test_every_example_script_has_the_same_shape(script: str) -> None:
    """``build_parser()`` whose usage names the command as typed (``python examples/...``), ``main(argv)``
    for tests and callers, and a ``__main__`` block that makes stdout escape what the console cannot encode
    (``console.tolerant_output``): ``transparent_identity.py`` had none of the three (``usage:
    transparent_identity.py``, ``main(argv: list[str])``, a ``UnicodeEncodeError`` possible)."""
    module = _module(script)
    assert module.build_parser().prog == f"python {script}"
    argv = inspect.signature(module.main).parameters.get("argv")
    assert argv is not None and argv.default is None, f"{script}: main(argv=None)"
    source = (ROOT / script).read_text(encoding="utf-8")
    block = source.split('if __name__ == "__main__":', 1)[1]
    assert "tolerant_output()" in block, f"{script}: call console.tolerant_output() in the __main__ block"


#: Options that mean the same in every example script that has them: one ``--help`` text (``cli.*_HELP``).
SAME_HELP = ("--device", "--amp", "--data-root")


@pytest.mark.examples
@pytest.mark.parametrize("option", SAME_HELP)
def test_an_option_of_the_same_meaning_has_the_same_help_in_every_example_script(option: str) -> None:
    """``evaluate.py --device`` said "cuda, cuda:1, ... (default: cuda if available)" and ``train.py`` "cuda:N
    (default: cuda when available)"; ``--amp`` was "float16 autocast on CUDA" and "mixed precision (CUDA only;
    ignored on CPU)"; ``demo.py --data-root`` "VOC folder" where ``train.py`` says which folders it takes.
    (``evaluate.py --data-root`` names the same folders, with its own default: the checkpoint's data.)"""
    helps = {
        script: action.help
        for script in SCRIPTS
        if script.startswith("examples/")
        for action in _options(script)
        if option in action.option_strings
    }
    if (
        option == "--data-root"
    ):  # evaluate.py's default is the checkpoint's data: the same folders, said alike
        from examples.voc_joint.cli import DATA_ROOT_HELP, EVAL_DATA_ROOT_HELP

        assert helps.pop("examples/voc_joint/evaluate.py") == EVAL_DATA_ROOT_HELP
        assert EVAL_DATA_ROOT_HELP.split("; default")[0] == DATA_ROOT_HELP.split("; default")[0]
        assert set(helps.values()) == {DATA_ROOT_HELP}
    assert len(helps) >= 2 and len(set(helps.values())) == 1, helps


@pytest.mark.examples
def test_fusion_hidden_is_one_option_in_every_script() -> None:
    """``--fusion-hidden`` of ``train.py``, ``ablation.py`` and ``bench_joint.py``: one help text, metavar,
    default and range (``cli.add_fusion_hidden``). They were worded three ways: only ``ablation.py`` said that
    one width is one hidden layer, only ``train.py`` gave the depth limit, and ``bench_joint.py`` named no
    default value."""
    scripts = ("examples/voc_joint/train.py", "examples/voc_joint/ablation.py", "benchmarks/bench_joint.py")
    actions = {
        script: next(a for a in _options(script) if "--fusion-hidden" in a.option_strings)
        for script in scripts
    }
    seen = {(a.help, a.metavar, tuple(a.default), a.nargs) for a in actions.values()}
    assert len(seen) == 1, seen
    ((text, metavar, default, _),) = seen
    assert "default: 64 64" in text and "16 widths" in text and metavar == "WIDTH" and default == (64, 64)
    for script, action in actions.items():  # one range: 1 to MAX_FUSION_WIDTH per width
        assert action.type("65536") == 65536, script
        with pytest.raises(argparse.ArgumentTypeError):
            action.type("65537")
        with pytest.raises(argparse.ArgumentTypeError):
            action.type("0")
