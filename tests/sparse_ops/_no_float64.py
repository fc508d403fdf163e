"""A device without float64 (Apple's MPS), simulated on the CPU: :func:`without_float64`.

On a real device without float64, making a float64 tensor there raises; the library's float64 steps must then
run on the host (:mod:`sparse_ops._float64`). On a CPU-only machine both "devices" are the CPU, so the
simulation keeps track of which tensors *would* be on the host:

* :func:`sparse_ops._float64.has_float64` answers ``False`` for every device;
* :func:`~sparse_ops._float64.to_host` and :func:`~sparse_ops._float64.to_device` are replaced by autograd
  Functions that copy (as the real ones do) and mark their result as a host tensor, or as a device tensor
  again; their backwards do the same for the gradient, which crosses the other way (and their ``jvp`` for a
  tangent; ``torch.func`` transforms work through them);
* a ``TorchDispatchMode`` sees every ATen op, forward and backward, and applies PyTorch's device rule to the
  marks: an op's results are on the host if its tensor inputs are, and on the device if none of them is; an
  op that mixes host tensors of more than 0 dimensions with device tensors fails (on two real devices it
  raises), and so does any op that makes a float64 tensor on the device (a factory with no tensor input
  counts as the device: the library makes every tensor on its input's device; only a Python number that
  PyTorch wraps as a 0-dim tensor, ``aten.scalar_tensor``, counts as a CPU scalar, as it does in PyTorch).

So a float64 tensor is accepted only downstream of ``to_host``, and ``to_device`` must get a float32 (or
half) tensor. The simulation cannot miss a float64 tensor on the device: every tensor made under it is either
marked as a host tensor (derived from ``to_host`` through ops that keep it there) or checked. It can raise
where real hardware would not (a tensor the library deliberately made on the CPU would count as the device),
never the reverse. It does not model a real device's speed, its float32 kernels (the CPU's run here) or which
ops it implements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from sparse_ops import _float64


class Float64Guard(TorchDispatchMode):
    """The dispatch mode of :func:`without_float64`: marks host tensors, fails on float64 device tensors.

    Attributes:
        to_host_calls (int): tensors copied to the host (forward and backward), to check that a fallback ran.
    """

    def __init__(self) -> None:
        super().__init__()
        self.host: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.to_host_calls = 0

    def is_host(self, t: Tensor) -> bool:
        return t in self.host

    def mark(self, t: Tensor, host: bool) -> None:
        if host:
            self.host[t] = True
        else:
            self.host.pop(t, None)
            if t.dtype == torch.float64:
                raise AssertionError("a float64 tensor was copied to the device without float64")

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)]
        host = [t for t in inputs if self.is_host(t)]
        device = [t for t in inputs if not self.is_host(t)]
        if host and device and any(t.dim() > 0 for t in host):
            raise AssertionError(f"{func} mixes host and device tensors (a device mismatch on real hardware)")
        out = func(*args, **kwargs)
        # a Python number wrapped as a 0-dim tensor (``torch.where(c, t, 0.0)``): a CPU scalar, which PyTorch
        # lets any device's tensors use (its dtype follows the other operand: float64 only beside float64)
        on_host = (bool(host) and not device) or func is torch.ops.aten.scalar_tensor.default
        for t in tree_leaves(out):
            if not isinstance(t, Tensor):
                continue
            if on_host:
                self.host[t] = True
            elif t.dtype == torch.float64:
                raise AssertionError(f"{func} made a float64 tensor on the device without float64")
        return out


_GUARD: list[Float64Guard] = []  # the active guard (one at a time)


def _copy(t: Tensor, host: bool) -> Tensor:
    """A copy of ``t`` marked as a host tensor or as a device tensor (a copy across the two devices)."""
    guard = _GUARD[-1]
    out = t.clone()
    guard.mark(out, host)
    guard.to_host_calls += host
    return out


class _ToHost(torch.autograd.Function):
    """The simulated ``to_host``; its gradient crosses back to the device (``torch.func`` ready)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(t: Tensor) -> Tensor:
        return _copy(t, host=True)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _copy(grad, host=False)

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor) -> Tensor:
        return _copy(tangent, host=True)


class _ToDevice(torch.autograd.Function):
    """The simulated ``to_device``: from the host only (fails on another tensor)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(t: Tensor) -> Tensor:
        assert _GUARD[-1].is_host(t), "to_device got a tensor that is not on the host"
        return _copy(t, host=False)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _copy(grad, host=True)

    @staticmethod
    def jvp(ctx: Any, tangent: Tensor) -> Tensor:
        return _copy(tangent, host=False)


def _to_host(t: Tensor) -> Tensor:
    out: Tensor = _ToHost.apply(t)
    return out


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    out: Tensor = _ToDevice.apply(t)
    return out


@contextlib.contextmanager
def without_float64(
    monkeypatch: pytest.MonkeyPatch, guard: Float64Guard | None = None
) -> Iterator[Float64Guard]:
    """Run the block as on a device without float64 (see the module docstring); yields the guard.

    Make the inputs and the float64 references outside the block: a float64 tensor made inside it counts as
    one on the device. ``guard``: an instance of a subclass to use instead of a new :class:`Float64Guard`
    (``benchmarks/op_coverage.py`` records the ops it sees).
    """
    with monkeypatch.context() as patch:
        patch.setattr(_float64, "has_float64", lambda device: False)
        patch.setattr(_float64, "to_host", _to_host)
        patch.setattr(_float64, "to_device", _to_device)
        guard = Float64Guard() if guard is None else guard
        _GUARD.append(guard)
        try:
            with guard:
                yield guard
        finally:
            _GUARD.pop()
