"""The suite's own rules for random inputs, checked on its source: a test's inputs depend on nothing but
the test.

* Every test starts from the global seed (``tests/conftest.py``), so a draw from the global RNG in a test
  body is reproducible; a draw at import time (a module constant) is not: its value depends on which test
  files were collected, and so drew from the global RNG, before.
* Hypothesis does not reseed torch for each example: a ``@given`` test seeds what it draws from a drawn value.
* A ``torch.Generator`` made at module level is fine for module constants, drawn once at import; a test body
  (or a function it calls) drawing from it gets the generator's state after every test of the module that ran
  before it in the same process, so its inputs change with the order, ``-k`` and the pytest-xdist split.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: Calls (functions, then in-place methods) that draw from the global RNG unless given ``generator=``.
DRAWS = {"rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal"}
DRAWS |= {"bernoulli", "normal_", "uniform_", "random_", "bernoulli_", "exponential_", "cauchy_"}


def _is_generator(value: ast.expr) -> bool:
    """``torch.Generator(...)``, possibly followed by ``.manual_seed(...)``."""
    while isinstance(value, ast.Call):
        func = value.func
        if isinstance(func, ast.Attribute) and func.attr == "Generator":
            return True
        if isinstance(func, ast.Attribute) and func.attr == "manual_seed":
            value = func.value
            continue
        return False
    return False


def _functions(tree: ast.Module) -> list[ast.AST]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]


def shared_generator_uses(source: str) -> list[int]:
    """Lines where a function or lambda uses a generator made at module level (make one in the test)."""
    tree = ast.parse(source)
    names = {
        t.id
        for stmt in tree.body
        if isinstance(stmt, ast.Assign) and _is_generator(stmt.value)
        for t in stmt.targets
        if isinstance(t, ast.Name)
    }
    lines = set()
    for fn in _functions(tree):
        for node in ast.walk(fn):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names:
                lines.add(node.lineno)
    return sorted(lines)


def import_time_global_draws(source: str) -> list[int]:
    """Lines where a statement run at import time (module or class body, a decorator, a default value)
    draws from the global RNG (a random-tensor call without ``generator=``; draw from a seeded generator)."""
    tree = ast.parse(source)
    called = set()  # the nodes of function and lambda bodies: they run when called, after the test's seed
    for fn in _functions(tree):
        for part in fn.body if isinstance(fn.body, list) else [fn.body]:
            called.update(id(n) for n in ast.walk(part))
    lines = set()
    for node in ast.walk(tree):
        if id(node) in called:
            continue
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        seeded = any(k.arg == "generator" for k in node.keywords)
        if node.func.attr in DRAWS and not seeded:
            lines.add(node.lineno)
    return sorted(lines)


def _runs_per_example(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A ``@given`` test, a ``@st.composite`` strategy, or an op tester's ``draw_case`` (which its
    ``@given`` test calls for every example)."""
    if fn.name == "draw_case":
        return True
    names = [d.func if isinstance(d, ast.Call) else d for d in fn.decorator_list]
    return any(getattr(d, "id", getattr(d, "attr", None)) in ("given", "composite") for d in names)


def unseeded_draws_in_given_tests(source: str) -> list[int]:
    """Lines where a Hypothesis test (or a strategy or ``draw_case`` it draws its examples with) draws from
    the global RNG without seeding it in its body: Hypothesis does not reseed torch per example, so the draw
    depends on the examples run before it and a failing example replayed from the database gets other values
    (draw a seed with the strategies instead)."""
    tree = ast.parse(source)
    lines = set()
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not _runs_per_example(fn):
            continue
        calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
        if any(c.func.attr == "manual_seed" for c in calls):  # type: ignore[attr-defined]
            continue  # seeded (from a drawn value) in the body
        for c in calls:
            if c.func.attr in DRAWS and not any(k.arg == "generator" for k in c.keywords):  # type: ignore[attr-defined]
                lines.add(c.lineno)
    return sorted(lines)


def _test_sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if p.is_file())


CHECKS = [shared_generator_uses, import_time_global_draws, unseeded_draws_in_given_tests]


@pytest.mark.parametrize("check", CHECKS, ids=lambda f: f.__name__)
def test_no_test_input_depends_on_the_tests_run_before(check) -> None:  # type: ignore[no-untyped-def]
    found = {
        str(p.relative_to(TESTS.parent)): lines for p in _test_sources() if (lines := check(p.read_text()))
    }
    assert not found, f"{check.__name__} (its docstring says why and what to do instead): {found}"


def test_the_checks_find_what_they_look_for() -> None:
    """Each pattern in the form test_autograd.py had it (a shared generator in test bodies, 2026-12-02)."""
    shared = (
        "import torch\n"
        "G = torch.Generator().manual_seed(0)\n"
        "SP = torch.randint(0, 5, (1, 3, 4), generator=G)\n"  # a module constant: fine
        "def test_a():\n"
        "    x = torch.randn(3, generator=G)\n"  # 5
        "F = lambda: torch.rand(2, generator=G)\n"  # 6
        "def test_b():\n"
        "    g = torch.Generator().manual_seed(1)\n"
        "    x = torch.randn(3, generator=g)\n"  # its own: fine
    )
    assert shared_generator_uses(shared) == [5, 6]
    draws = (
        "import torch, pytest\n"
        "X = torch.randn(3)\n"  # 2
        "Y = torch.randn(3, generator=torch.Generator().manual_seed(0))\n"
        "class T:\n"
        "    W = torch.empty(3).normal_()\n"  # 5
        "@pytest.mark.parametrize('x', [torch.rand(2)])\n"  # 6
        "def test_c(x, y=torch.randint(0, 3, (2,))):\n"  # 7
        "    z = torch.randn(3)\n"  # in the body: seeded per test, fine
        "CALLS = [lambda a: torch.randn(2, 3)]\n"  # runs in the test: fine
    )
    assert import_time_global_draws(draws) == [2, 5, 6, 7]
    given = (
        "import torch\n"
        "from hypothesis import given, strategies as st\n"
        "@given(st.integers(1, 4))\n"
        "def test_d(n):\n"
        "    x = torch.randn(5, n)\n"  # 5: as test_targets.py had it
        "@given(st.integers(0, 9))\n"
        "def test_e(seed):\n"
        "    torch.manual_seed(seed)\n"
        "    x = torch.randn(5)\n"  # seeded from the draw: fine
    )
    assert unseeded_draws_in_given_tests(given) == [5]
    per_example = (  # what draws the examples runs per example too (test_soft.py's draw_case had this)
        "import torch\n"
        "from hypothesis import strategies as st\n"
        "class TestOp:\n"
        "    def draw_case(self, data, dtype):\n"
        "        return torch.randn(2, dtype=dtype)\n"  # 5
        "    def small_case(self, dtype):\n"
        "        return torch.randn(2, dtype=dtype)\n"  # a plain test's input: seeded per test, fine
        "@st.composite\n"
        "def cases(draw):\n"
        "    return torch.rand(draw(st.integers(1, 3)))\n"  # 10
    )
    assert unseeded_draws_in_given_tests(per_example) == [5, 10]
