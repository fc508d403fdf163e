"""Simulate, on Linux, what the standard library lacks on Windows: call :func:`simulate` (or pass
``-p tests.windows_like`` to pytest) before the code under test, in a process of its own; importing the
module changes nothing (pytest imports it to collect doctests).

It imports the third-party packages the project uses first (their own platform code is theirs to test), then
hides the POSIX-only modules (``fcntl``, ``resource``) and removes the POSIX-only names of ``signal`` and
``os`` that the project could reach (``SIGKILL``, ``SIGALRM``, ``os.killpg``, ``os.getloadavg``, ...). It
does not simulate Windows' semantics (file locking, ``os.replace`` onto an open file, process groups): only
that the names are missing, so that an import or a call that needs them fails as it would there.

Example (in a subprocess: the removal cannot be undone)::

    python -c "from tests.windows_like import simulate; simulate(); import examples.voc_joint.train"
    python -m pytest --collect-only -p tests.windows_like tests
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys

# imported before the names go: the third-party packages' own platform code is theirs to test
for _package in ("numpy", "PIL.Image", "torch", "torch.utils.data"):
    importlib.import_module(_package)
with contextlib.suppress(ModuleNotFoundError):  # the examples extra
    importlib.import_module("torchvision")

__all__ = ["MISSING_MODULES", "MISSING_OS", "MISSING_SIGNAL", "pytest_configure", "simulate"]

#: Modules that do not exist on Windows.
MISSING_MODULES = ("fcntl", "resource")
#: ``signal`` names that do not exist on Windows.
MISSING_SIGNAL = (
    "SIGKILL",
    "SIGALRM",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "alarm",
    "setitimer",
    "pause",
)
#: ``os`` names that do not exist on Windows (``os.fork`` and ``os.register_at_fork`` stay: the interpreter
#: and torch use them at exit on Linux).
MISSING_OS = ("killpg", "getpgid", "getpgrp", "getloadavg", "fchmod", "setsid")


def simulate() -> None:
    """Hide :data:`MISSING_MODULES`, remove :data:`MISSING_SIGNAL` and :data:`MISSING_OS` (this process)."""
    for name in MISSING_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]  # "import fcntl" raises ModuleNotFoundError
    for name in MISSING_SIGNAL:
        if hasattr(signal, name):
            delattr(signal, name)
    for name in MISSING_OS:
        if hasattr(os, name):
            delattr(os, name)


def pytest_configure(config: object) -> None:
    """As a pytest plugin (``-p tests.windows_like``): simulate before the test modules are collected."""
    simulate()
