"""The command-line scripts as one family: one name per idea, and a help text for every option.

A reader who learned ``train.py --workers`` and a benchmark's ``--out`` types them into the next script too:
``evaluate.py --num-workers`` and ``bench_joint.py --output`` / ``ab_uniformize.py --output`` were such
traps (an ``unrecognized arguments`` error, or worse, an abbreviation that matched another option), as was
``bench_joint.py --recompute`` for the training CLI's ``--recompute-fusion``. The scripts are those of
``tests/test_doc_commands.py`` (every script of the project, each with ``build_parser()``).
"""

from __future__ import annotations

import argparse

import pytest

from tests.test_doc_commands import NEEDS_EXAMPLES, SCRIPTS, _module

#: Names of one idea that a script must not use, with the name the other scripts use for it.
OTHER_NAMES = {
    "--output": "--out",  # a result file (the benchmarks); a folder is --output-dir (train, demo, ablation)
    "--out-dir": "--output-dir",
    "--output-file": "--out",
    "--num-workers": "--workers",  # DataLoader worker processes
    "--num-threads": "--threads",
    "--recompute": "--recompute-fusion",  # the training CLI's name of the fusion stack's recomputation
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
