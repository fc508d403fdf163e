"""Shared fixtures: device/dtype parametrization, hypothesis profiles and a time limit per test.

CUDA and MPS cases run when the device exists and are skipped cleanly (with a reason) otherwise. A test body
that runs past ``tests/time_limit.py``'s limit (600 s) fails with a ``TimeoutError`` instead of hanging the
suite.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

# the deterministic-mode tests run cuBLAS matrix products: releases that still check this variable raise
# without it (it must be set before the first CUDA call; a no-op on the CPU and where already set)
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import pytest
import torch
from hypothesis import HealthCheck, settings

from tests.time_limit import limit_test_call

settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=400,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# one thread per test process: the suite runs under pytest-xdist on a 2-core machine (no oversubscription)
torch.set_num_threads(1)

# Ctrl-C as in a terminal, wherever the suite runs: a suite that a script starts in the background
# (``.ci/run`` under ``nohup ... &``) inherits SIGINT ignored, which the scripts' signal guard leaves ignored,
# so the tests of what SIGINT does (sent to this process or to a script it starts) would see nothing happen.
# A Python handler here also gives the scripts the tests start the default SIGINT (exec resets handled
# signals, not ignored ones); a test of the ignored case sets it in its child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# SIGHUP likewise: ``nohup`` starts the suite with it ignored, which every process it starts inherits, so the
# tests of what SIGHUP does would see nothing happen. The suite itself should still outlive a closed terminal
# (the reason for ``nohup``): a Python handler that does nothing keeps it alive, while the scripts and
# pytest-xdist workers it starts get the default SIGHUP (exec resets handled signals); the workers, told so
# through the environment, install the same handler.
def _outlive_hangup(signum: int, frame: object) -> None:
    """Ignore SIGHUP in this process only (a handled signal, not an inherited ``SIG_IGN``)."""


_HUP_IGNORED = "TRANSINIT_TESTS_STARTED_WITH_SIGHUP_IGNORED"
if hasattr(signal, "SIGHUP") and (
    signal.getsignal(signal.SIGHUP) is signal.SIG_IGN or os.environ.get(_HUP_IGNORED) == "1"
):
    os.environ[_HUP_IGNORED] = "1"
    signal.signal(signal.SIGHUP, _outlive_hangup)


#: The global RNG seed of every test (``TRANSINIT_TEST_SEED``, default 0).
TEST_SEED = int(os.environ.get("TRANSINIT_TEST_SEED", "0"))


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    """Every test starts from the same global RNG state (inputs drawn without an explicit generator): a
    failure reproduces, and a test cannot pass or fail by the luck of the draw of the tests before it.
    ``TRANSINIT_TEST_SEED=<n>`` draws other inputs (to look for tests that pass only by that luck)."""
    torch.manual_seed(TEST_SEED)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """Every test starts on one torch thread, as the suite set above. The in-process runs of the scripts
    (``train.main([..., "--threads", "2"])``, a benchmark's ``main``) set the process-wide count and left it
    for the tests after them, which then ran on 1 or 2 threads by the order and the pytest-xdist split."""
    torch.set_num_threads(1)


#: Without the examples extra (torchvision), the tests of the example pipeline are skipped: everything under
#: tests/examples and every test marked ``examples`` (benchmarks and documented commands that run it).
try:
    import torchvision  # noqa: F401
except ModuleNotFoundError:
    HAS_TORCHVISION = False
else:
    HAS_TORCHVISION = True
_EXAMPLE_TESTS = Path(__file__).resolve().parent / "examples"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_TORCHVISION:
        return
    skip = pytest.mark.skip(reason='needs torchvision: pip install -e ".[examples]"')
    for item in items:
        if item.get_closest_marker("examples") or _EXAMPLE_TESTS in item.path.parents:
            item.add_marker(skip)


CUDA = torch.cuda.is_available()
MPS = torch.backends.mps.is_available()
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="CUDA is not available")],
    ),
    pytest.param(
        "mps",
        id="mps",
        marks=[pytest.mark.mps, pytest.mark.skipif(not MPS, reason="MPS is not available")],
    ),
]


@pytest.fixture
def deterministic() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` for one test (the earlier setting restored)."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(was)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Every device the machine has: ``cpu`` always, ``cuda`` and ``mps`` when available (else skipped).

    MPS has no float64: a test that also takes the ``dtype`` fixture skips its float64 case there.
    """
    return torch.device(request.param)


@pytest.fixture(params=DEVICES[1:])
def accelerator(request: pytest.FixtureRequest) -> torch.device:
    """Every device but the CPU (``cuda``, ``mps``; each skipped where absent), for a test that compares a
    device's result with the CPU's: on the CPU it would compare the CPU with itself, which cannot fail."""
    return torch.device(request.param)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """The floating dtypes every op must support exactly (float64 skipped on MPS, which has none)."""
    on_mps = "device" in request.fixturenames and request.getfixturevalue("device").type == "mps"
    if request.param == torch.float64 and on_mps:
        pytest.skip("MPS has no float64")
    return request.param


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``error_case`` with the ``errors`` table of an ``OpTester`` subclass (op_tester.py)."""
    if "error_case" in metafunc.fixturenames:
        errors = getattr(metafunc.cls, "errors", None) or []
        metafunc.parametrize("error_case", errors or [None], ids=[m[2][:40] for m in errors] or ["none"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):  # type: ignore[no-untyped-def]
    """Every test body runs under the suite's time limit (see ``tests/time_limit.py``)."""
    yield from limit_test_call(item.nodeid)
