"""The public API's static types from a user's seat: ``mypy --strict`` on the user code of ``tests/typing``.

``tests/typing/user_code.py`` calls the public symbols of both packages the way the docs show, with every
documented argument form (Python and numpy integers, 0-d tensors, seeds, ``Literal`` options, modules called
as ``module(x, ...)``) and states the returned types with ``assert_type``: mypy must accept all of it, and the
runtime must run it. ``tests/typing/wrong_calls.py`` holds calls the hints must reject, each marked with
the expected mypy error code. mypy is in the ``dev`` extra; without it the test skips. About 30 s (a cold mypy
cache in ``tmp_path``: torch's stubs are read once).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_CODE = ROOT / "tests" / "typing" / "user_code.py"
WRONG_CALLS = ROOT / "tests" / "typing" / "wrong_calls.py"
_ERROR = re.compile(r"^(?P<path>.+?):(?P<line>\d+): error: (?P<message>.*?)(?:  \[(?P<code>[a-z-]+)\])?$")


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, list[tuple[int, str, str]]]:
    """``mypy --strict`` on both files (a config of its own, not the project's): ``(line, code, message)`` of
    every error in them, by file. Errors inside the packages are left out, as for an installed package."""
    api = pytest.importorskip("mypy.api", reason="mypy is in the dev extra")
    tmp = tmp_path_factory.mktemp("mypy")
    config = tmp / "mypy.ini"
    config.write_text(f"[mypy]\nmypy_path = {ROOT}\n")
    stdout, stderr, status = api.run(
        [
            "--strict",
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp / "cache"),
            "--no-error-summary",
            "--show-error-codes",
            "--hide-error-context",
            "--no-pretty",
            str(USER_CODE),
            str(WRONG_CALLS),
        ]
    )
    assert status in (0, 1), f"mypy did not run (status {status}): {stderr}{stdout}"
    errors: dict[Path, list[tuple[int, str, str]]] = {USER_CODE: [], WRONG_CALLS: []}
    for line in stdout.splitlines():
        match = _ERROR.match(line)
        if match is not None and Path(match["path"]).resolve() in errors:
            path = Path(match["path"]).resolve()
            errors[path].append((int(match["line"]), match["code"] or "", match["message"]))
    return errors


def test_user_code_type_checks_strictly(mypy_errors: dict[Path, list[tuple[int, str, str]]]) -> None:
    """Every documented call, and every ``assert_type`` of what it returns, passes ``mypy --strict``."""
    shown = "\n".join(f"user_code.py:{n}: {message} [{code}]" for n, code, message in mypy_errors[USER_CODE])
    assert mypy_errors[USER_CODE] == [], f"false errors for correct user code:\n{shown}"


def test_wrong_calls_are_rejected(mypy_errors: dict[Path, list[tuple[int, str, str]]]) -> None:
    """Each line marked ``# error: <code>`` gets that error, and no other line any (so the check above is not
    vacuous: mypy does read the packages' hints)."""
    expected = {
        (n, mark.group(1))
        for n, text in enumerate(WRONG_CALLS.read_text().splitlines(), 1)
        if (mark := re.search(r"# error: ([a-z-]+)$", text))
    }
    assert len(expected) >= 2
    got = {(n, code) for n, code, _ in mypy_errors[WRONG_CALLS]}
    assert got == expected, f"missing: {sorted(expected - got)}, unexpected: {sorted(got - expected)}"


def test_user_code_runs() -> None:
    """The runtime accepts every call the hints accept in the user code."""
    from tests.typing.user_code import user_code

    user_code()
