"""The public API's static types from a user's seat: ``mypy --strict`` on the user code of ``tests/typing``.

``tests/typing/user_code.py`` calls the public symbols of both packages the way the docs show, with every
documented argument form (Python and numpy integers, 0-d tensors, seeds, ``Literal`` options, modules called
as ``module(x, ...)``) and states the returned types with ``assert_type``: mypy must accept all of it, and the
runtime must run it. ``tests/typing/wrong_calls.py`` holds calls the hints must reject, each marked with
the expected mypy error code. mypy is in the ``dev`` extra; without it the test skips. About 30 s (a cold mypy
cache in ``tmp_path``: torch's stubs are read once).
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
from torch import nn

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


def _public_modules() -> list[type[nn.Module]]:
    import sparse_ops
    import transparent_init

    return [
        obj
        for package in (sparse_ops, transparent_init)
        for name in package.__all__
        if isinstance(obj := getattr(package, name), type) and issubclass(obj, nn.Module)
    ]


def _signatures(functions: list[ast.FunctionDef]) -> list[tuple[list[str], str, str | None]]:
    """Decorators (``overload``), parameters and return annotation of each function."""
    return [
        (
            [ast.unparse(d) for d in f.decorator_list],
            ast.dump(f.args),
            ast.unparse(f.returns) if f.returns else None,
        )
        for f in functions
    ]


def _call_and_forward(cls: type[nn.Module]) -> tuple[list[ast.FunctionDef], list[ast.FunctionDef]]:
    """The ``def __call__`` under ``if TYPE_CHECKING:`` and the ``def forward`` (overloads included, in order)
    of the class of the package that defines ``cls.forward`` (a base class for the transparent stacks)."""
    owner = next(c for c in cls.__mro__ if "forward" in vars(c))
    tree = ast.parse(Path(inspect.getfile(owner)).read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == owner.__name__)
    forward = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "forward"]
    calls = [
        n
        for block in node.body
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
        for n in block.body
        if isinstance(n, ast.FunctionDef) and n.name == "__call__"
    ]
    return calls, forward


@pytest.mark.parametrize("cls", _public_modules(), ids=lambda cls: cls.__name__)
def test_module_call_is_typed_as_its_forward(cls: type[nn.Module]) -> None:
    """``nn.Module.__call__`` is typed ``(*args, **kwargs) -> Any``: every public module declares, for type
    checkers only, a ``__call__`` with exactly ``forward``'s parameters and return type, so ``module(x, ...)``
    is checked like a function call (a forward changed without its ``__call__`` fails here)."""
    calls, forward = _call_and_forward(cls)
    assert calls, f"{cls.__name__} has no `if TYPE_CHECKING: def __call__(...)`"
    assert _signatures(calls) == _signatures(forward), f"{cls.__name__}.__call__ and forward differ"


def test_every_public_module_is_found() -> None:
    names = {cls.__name__ for cls in _public_modules()}
    assert {"SuperpixelUniformize", "SpixelLoss", "MaxUnpool", "TransparentLinear"} <= names
    assert len(names) == 9
