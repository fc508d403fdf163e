"""Deterministic fault injection for the reliability tests (inert unless ``TRANSINIT_FAULT`` is set).

``TRANSINIT_FAULT`` holds comma-separated ``<action>@<point>:<n>`` entries, for example
``sigint@step:3`` or ``sigterm@save:1,nan-loss@step:5``. Points:

==============  ===========================================================================================
``step:N``      inside global optimizer step N (1-based): after the backward pass, before the update
``save:N``      inside the N-th checkpoint write of this process: the data is in the temporary file, not
                yet renamed onto the checkpoint
``epoch-end:N`` after the end-of-epoch checkpoint of epoch N (1-based), where the processes meet at a barrier
==============  ===========================================================================================

Actions: ``sigint``, ``sigterm``, ``sighup``, ``sigkill`` (to this process), ``group-sigint`` and
``group-sighup`` (to its process group, like Ctrl-C in a terminal or a shell that lost its terminal:
DataLoader workers get it too), ``crash`` (``RuntimeError``); at ``step`` points also
``nan-loss``, ``nan-grad`` and ``nan-weight`` (make the loss, one gradient or one weight NaN).

The hooks cost one dictionary lookup when the variable is unset. They exist so that tests hit exact interrupt
points instead of racing a timer.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections import Counter

import torch
from torch import Tensor, nn

__all__ = ["ENV", "corrupt_loss", "corrupt_model", "hit"]

ENV = "TRANSINIT_FAULT"
#: The signal of each signal action (``SIGHUP`` and ``SIGKILL`` are POSIX only: the module imports on Windows,
#: where a ``sighup`` or ``sigkill`` action is refused when it runs).
_SIGNALS = {"sigint": "SIGINT", "sigterm": "SIGTERM", "sighup": "SIGHUP", "sigkill": "SIGKILL"}
#: The signal of each action sent to the process group.
_GROUP_SIGNALS = {"group-sigint": "SIGINT", "group-sighup": "SIGHUP"}
#: The actions that only a ``step`` point runs (they change the loss, a gradient or a weight of that step).
_STEP_ACTIONS = ("nan-loss", "nan-grad", "nan-weight")
_ACTIONS = (*_SIGNALS, *_GROUP_SIGNALS, "crash", *_STEP_ACTIONS)
_POINTS = ("step", "save", "epoch-end")
_counts: Counter[str] = Counter()


@functools.cache
def _parse(spec: str) -> tuple[tuple[str, str, int], ...]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        try:
            action, where = item.split("@")
            point, n = where.split(":")
            entry = (action, point, int(n))
        except ValueError:
            raise ValueError(f"{ENV}: cannot parse {item!r}; expected <action>@<point>:<n>") from None
        if action not in _ACTIONS or point not in _POINTS:
            raise ValueError(f"{ENV}: {item!r}: actions are {_ACTIONS}, points are {_POINTS}")
        if entry[2] < 1:
            raise ValueError(f"{ENV}: {item!r}: <n> counts from 1, got {entry[2]}")
        if action in _STEP_ACTIONS and point != "step":
            raise ValueError(f"{ENV}: {item!r}: {action} acts at step points only (got {point!r})")
        out.append(entry)
    return tuple(out)


def _actions(point: str, n: int | None) -> list[str]:
    return _numbered_actions(point, n)[0]


def _numbered_actions(point: str, n: int | None) -> tuple[list[str], int | None]:
    """The actions registered for ``point`` number ``n`` (``None``: this call's count), and that number."""
    spec = os.environ.get(ENV)
    if not spec:
        return [], n
    if n is None:
        _counts[point] += 1
        n = _counts[point]
    return [a for a, p, k in _parse(spec) if p == point and k == n], n


def hit(point: str, n: int | None = None) -> None:
    """Run the signal / crash actions registered for ``point`` number ``n`` (``None``: count calls)."""
    actions, n = _numbered_actions(point, n)
    for action in actions:
        if action in _SIGNALS:
            os.kill(os.getpid(), _signal(action, _SIGNALS[action]))
        elif action in _GROUP_SIGNALS:
            if not hasattr(os, "killpg"):
                raise RuntimeError(
                    f"{ENV}: {action!r} needs process groups (os.killpg), which {sys.platform} lacks"
                )
            os.killpg(os.getpgid(0), _signal(action, _GROUP_SIGNALS[action]))
        elif action == "crash":
            raise RuntimeError(f"{ENV}: injected crash at {point}:{n}")


def _signal(action: str, name: str) -> int:
    """The number of signal ``name`` for ``action``; a clear error where this platform lacks it."""
    number = getattr(signal, name, None)
    if number is None:
        raise RuntimeError(f"{ENV}: {action!r} needs signal.{name}, which {sys.platform} lacks")
    return int(number)


def corrupt_loss(step: int, loss: Tensor) -> Tensor:
    """``loss`` times NaN when ``nan-loss@step:<step>`` is registered, else ``loss``."""
    if "nan-loss" in _actions("step", step):
        return loss * float("nan")
    return loss


@torch.no_grad()
def corrupt_model(step: int, model: nn.Module) -> None:
    """Write NaN into the first gradient (``nan-grad``) or weight (``nan-weight``) registered for ``step``
    (its first element, indexed: a ``channels_last`` tensor has no flat view)."""
    actions = _actions("step", step)
    params = [p for p in model.parameters() if p.requires_grad]
    if "nan-grad" in actions:
        grad = next(p.grad for p in params if p.grad is not None)
        grad[(0,) * grad.dim()] = float("nan")
    if "nan-weight" in actions:
        params[0][(0,) * params[0].dim()] = float("nan")
