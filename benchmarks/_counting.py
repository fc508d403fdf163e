"""Deterministic per-call cost counters of ``bench_overhead.py``: aten ops, host-device syncs, allocations.

Wall-clock time on a shared VM drifts; these counts do not (the same call gives the same counts every run):

* :class:`OpCounter`: a ``TorchDispatchMode`` that counts the aten ops a call dispatches (the ops the Python
  code asks for; the kernels' own inner ops are not counted) and, among them, the host-device
  synchronisations: ops that read a tensor value on the host (``_local_scalar_dense``: ``.item()``,
  ``int(t)``, ``bool(t)``; ``torch.equal`` and ``torch.allclose``, which return a Python bool), ops whose
  output size depends on the values (``nonzero``, ``unique``, ``masked_select``, boolean indexing,
  ``bincount``, ``repeat_interleave`` without ``output_size``), and ``Tensor.tolist`` /
  ``Tensor.numpy``, which copy the values to the host without dispatching an op on the CPU. On CUDA each
  of these waits for the queued work. ``lift_fresh`` (``torch.tensor(python data)``, a host-to-device copy on
  CUDA) is counted apart.
* :func:`allocations`: the number of allocations, their total bytes and the peak of live bytes of a call, from
  ``torch.profiler`` with ``profile_memory=True`` (every allocator call, kernels' temporaries included).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["AllocationCounts", "OpCounter", "allocations", "is_sync"]

aten = torch.ops.aten

#: Ops that synchronise whatever their arguments: a value read on the host, or an output sized by the values.
SYNC_OPS = frozenset(
    {
        aten._local_scalar_dense.default,
        aten.equal.default,  # a Python bool: the kernel reads its own result (no op the mode sees)
        aten.allclose.default,
        aten.bincount.default,  # max(ids) + 1 entries
        aten.nonzero.default,
        aten.masked_select.default,
        aten._unique.default,
        aten._unique2.default,
        aten.unique_dim.default,
        aten.unique_consecutive.default,
        aten.unique_dim_consecutive.default,
    }
)


def _is_mask(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)


def is_sync(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether the aten op ``func`` called with ``args`` synchronises with the device (see the module)."""
    if func in SYNC_OPS:
        return True
    packet = func.overloadpacket
    if packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_) and len(args) > 1:
        return any(_is_mask(t) for t in args[1])  # a boolean index is a nonzero
    if packet is aten.repeat_interleave and isinstance(args[1] if len(args) > 1 else args[0], torch.Tensor):
        return kwargs.get("output_size") is None  # the output size is the sum of the repeats
    return False


class OpCounter(TorchDispatchMode):
    """Counts aten ops (``ops``), host-device syncs (``syncs``, by name in ``sync_names``) and host-to-device
    copies of Python data (``from_host``) while active; ``Tensor.tolist`` and ``Tensor.numpy`` count as
    syncs."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.syncs = 0
        self.from_host = 0
        self.sync_names: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if is_sync(func, args, kwargs):
            self._sync(str(func.overloadpacket))
        if func is aten.lift_fresh.default:
            self.from_host += 1
        return func(*args, **kwargs)

    def _sync(self, name: str) -> None:
        self.syncs += 1
        self.sync_names[name] += 1

    @contextlib.contextmanager
    def active(self) -> Iterator[OpCounter]:
        """The mode, with ``Tensor.tolist`` and ``Tensor.numpy`` counted too (they dispatch nothing)."""
        originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}

        def counted(name: str) -> Callable[..., Any]:
            def method(t: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
                self._sync(f"Tensor.{name}")
                return originals[name](t, *args, **kwargs)

            return method

        try:
            for name in originals:
                setattr(torch.Tensor, name, counted(name))
            with self:
                yield self
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)


@dataclass(frozen=True)
class AllocationCounts:
    """Allocations of one call: how many, their total bytes, and the peak of the bytes live at once (above
    what was live when the call started)."""

    count: int
    total_bytes: int
    peak_bytes: int


def allocations(fn: Callable[[], object]) -> AllocationCounts:
    """Profile ``fn()`` on the CPU with ``profile_memory=True`` and sum its allocator events."""
    # acc_events: one cycle either way; without it torch 2.11 warns that events are cleared between cycles
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, acc_events=True) as prof:
        fn()
    results = prof.profiler.kineto_results if prof.profiler is not None else None
    events = [] if results is None else [e for e in results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    count = total = live = peak = 0
    for event in events:
        nbytes = event.nbytes()
        if nbytes > 0:
            count += 1
            total += nbytes
        live += nbytes
        peak = max(peak, live)
    return AllocationCounts(count, total, peak)
