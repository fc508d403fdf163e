"""The shared op test base (the shape of torchvision's ``RoIOpTester`` and kornia's ``BaseTester``).

A subclass describes one op; the base runs the same checks on every op:

* ``test_matches_reference``: the op against its slow, obvious reference over hypothesis-drawn inputs, float32
  and float64;
* ``test_gradcheck``: float64 ``gradcheck`` (and ``gradgradcheck`` for ops whose backward is differentiable),
  batched gradients too (``check_batched_grad``: the backward that ``is_grads_batched=True`` and
  ``torch.autograd.functional.jacobian(vectorize=True)`` run);
* ``test_saved_tensor_hooks``: under ``torch.autograd.graph.save_on_cpu(pin_memory=True)`` and under hooks
  that copy what is saved, the gradients of the plain run; what the op saves passes through the hooks only;
* ``test_inplace_on_outputs``: outputs changed in place before the backward (``relu_``, ``mul_``) give the
  gradients of the same change out of place, for contiguous and channels-last inputs;
* ``test_layouts``: non-contiguous, channels-last and expanded (stride-0) inputs give the results of
  contiguous copies, forward and backward;
* ``test_autocast``: under ``torch.autocast`` the op computes what it computes outside (no silent downcast);
* ``test_half_precision``: float16/bfloat16 inputs give the float32 result rounded once;
* ``test_compile``: ``torch.compile(fullgraph=True)`` gives the eager values and gradients (where supported),
  for contiguous and channels-last inputs;
* ``test_empty_batch``: a batch of 0 images gives empty results and gradients;
* ``test_device``: every accelerator (``cuda``, ``mps``; skipped cleanly without one) gives the CPU result;
* ``test_errors``: every bad input raises the documented error naming the argument.

A subclass sets ``op`` (a function of the case's positional and keyword arguments), ``reference`` (float64,
any implementation sharing no code with the op), ``draw_case`` (hypothesis) and ``small_case`` (a fixed small
input), and the class attributes below.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from tests.hypothesis_budget import budget

#: ``assert_close`` tolerances against a float64 reference, per computation dtype.
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
}


@dataclass
class Case:
    """Inputs of one call: ``op(*args, **kwargs)``; ``data``: the positions of the floating data arguments."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    data: tuple[int, ...] = (0,)

    def map(self, fn: Callable[[Tensor], Tensor], positions: tuple[int, ...] | None = None) -> Case:
        """Apply ``fn`` to the tensor arguments (all of them, or those at ``positions``)."""
        args = tuple(
            fn(a) if isinstance(a, Tensor) and (positions is None or i in positions) else a
            for i, a in enumerate(self.args)
        )
        return replace(self, args=args)

    def map_all(self, fn: Callable[[Tensor], Tensor]) -> Case:
        """Apply ``fn`` to every tensor argument, the keyword ones too (a mask, a classifier weight)."""
        kwargs = {k: fn(v) if isinstance(v, Tensor) else v for k, v in self.kwargs.items()}
        return replace(self.map(fn), kwargs=kwargs)

    def with_data(self, fn: Callable[[Tensor], Tensor]) -> Case:
        return self.map(fn, self.data)


def outputs(result: Any) -> list[Tensor]:
    """The floating tensors of an op's result (a tensor, a tuple or a named tuple)."""
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    return [t for t in items if isinstance(t, Tensor) and t.is_floating_point()]


def all_outputs(result: Any) -> list[Tensor]:
    items = list(result) if isinstance(result, (tuple, list)) else [result]
    return [t for t in items if isinstance(t, Tensor)]


def _strided(t: Tensor) -> Tensor:
    """The same values in a non-contiguous layout."""
    if t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if t.dim() == 1:
        return torch.stack([t, t], dim=-1)[..., 0]
    return t


def _channels_last(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else _strided(t)


class OpTester:
    """Base class of the op tests (see the module docstring)."""

    #: the floating dtypes of ``test_matches_reference``
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.float64)
    #: gradients flow to the data arguments
    differentiable: ClassVar[bool] = True
    #: run gradgradcheck too
    gradgrad: ClassVar[bool] = True
    #: compare half precision with the float32 result rounded once
    half_precision: ClassVar[bool] = True
    #: keyword arguments for a fullgraph-compilable call, or None (not supported)
    compile_kwargs: ClassVar[dict[str, Any] | None] = {"validate": False}
    #: ``(override, exception type, message regex)``: an override maps an argument position (a value, or a
    #: function of the original) or a keyword to its bad value in ``small_case``; one test per row
    errors: ClassVar[list[tuple[dict[Any, Any], type[Exception], str]]] = []

    # ---------------------------------------------------------------- to implement
    def op(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def reference(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        raise NotImplementedError

    def small_case(self, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Case:
        raise NotImplementedError

    def tolerance(self, dtype: torch.dtype) -> dict[str, float]:
        return TOLERANCES[dtype]

    # ---------------------------------------------------------------- helpers
    def call(self, case: Case, **extra: Any) -> Any:
        return self.op(*case.args, **{**case.kwargs, **extra})

    def _backward(
        self, case: Case, *, between: Callable[[Any, list[Tensor]], None] | None = None, **extra: Any
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Forward the case with gradients on its data arguments; return (outputs, their gradients).

        ``between(result, leaves)``: called after the forward, before the backward (the graph alive)."""
        leaves = []

        def leaf(t: Tensor) -> Tensor:
            t = t.detach().requires_grad_()
            leaves.append(t)
            return t

        args = list(case.args)
        for i in case.data:
            if self.differentiable and args[i].is_floating_point():
                args[i] = leaf(args[i])
        result = self.op(*args, **{**case.kwargs, **extra})
        if between is not None:
            between(result, leaves)
        outs = [o for o in outputs(result) if o.requires_grad]
        grads: list[Tensor | None] = [None] * len(leaves)
        if outs:
            weights = [
                torch.linspace(-1, 1, o.numel(), dtype=o.dtype, device=o.device).view_as(o) for o in outs
            ]
            loss = sum((o * w).sum() for o, w in zip(outs, weights, strict=True))
            grads = list(torch.autograd.grad(loss, leaves, allow_unused=True))
        return [o.detach() for o in all_outputs(result)], grads

    #: hypothesis examples of ``test_matches_reference``
    examples: ClassVar[int] = 12

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give every subclass its own hypothesis test (its own example database and ``examples`` setting)."""
        super().__init_subclass__(**kwargs)

        def test_matches_reference(self: OpTester, data: st.DataObject) -> None:
            self.check_reference(data)

        cls.test_matches_reference = settings(max_examples=budget(cls.examples))(  # type: ignore[method-assign]
            given(data=st.data())(test_matches_reference)
        )

    # ---------------------------------------------------------------- shared tests
    def check_reference(self, data: st.DataObject) -> None:
        """The op against its reference on a drawn case, for every dtype of :attr:`dtypes`."""
        if not self.dtypes:  # integer-only ops draw their own cases in their own tests
            case = self.small_case()
            got, expected = (
                all_outputs(self.call(case)),
                all_outputs(self.reference(*case.args, **case.kwargs)),
            )
            assert len(got) == len(expected) and all(
                torch.equal(g, e) for g, e in zip(got, expected, strict=True)
            )
            return
        for dtype in self.dtypes:
            case = self.draw_case(data, dtype)
            got = all_outputs(self.call(case))
            expected = all_outputs(self.reference(*case.args, **case.kwargs))
            assert len(got) == len(expected)
            for g, e in zip(got, expected, strict=True):
                assert g.shape == e.shape
                if g.is_floating_point():
                    assert g.dtype == dtype
                    torch.testing.assert_close(g.double().cpu(), e.double().cpu(), **self.tolerance(dtype))
                else:
                    assert torch.equal(g.cpu(), e.cpu())

    #: gradcheck in fast mode (one random direction; for ops with a high fixed cost per call)
    fast_gradcheck: ClassVar[bool] = False

    def test_gradcheck(self) -> None:
        if not self.differentiable:
            pytest.skip("not differentiable")
        case = self.small_case(torch.float64)

        def fn(*data: Tensor) -> tuple[Tensor, ...]:
            args = list(case.args)
            for i, t in zip(case.data, data, strict=True):
                args[i] = t
            return tuple(outputs(self.op(*args, **case.kwargs)))

        inputs = tuple(case.args[i].detach().requires_grad_() for i in case.data)
        fast = self.fast_gradcheck
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast, check_batched_grad=True)
        if self.gradgrad:
            assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=fast, check_batched_grad=True)

    @pytest.mark.parametrize("hooks", ["save_on_cpu", "copies"])
    def test_saved_tensor_hooks(self, hooks: str) -> None:
        """The gradients of the plain run when saved tensors are packed (CPU offloading, or copies): every
        saved tensor goes through the pack hook (it can be moved or copied), none is kept alive past the
        forward by anything else (a ``ctx`` attribute, a cache), except the case's own tensors, and the
        backward unpacks every one of them: a tensor saved for a node that the backward never runs (a graph
        recorded by an input check on a tensor that requires grad) is work for nothing, and under
        ``save_on_cpu`` a copy to the host."""
        if not self.differentiable:
            pytest.skip("not differentiable")
        case = self.small_case(torch.float64)
        expected = self._backward(case)[1]
        packed: list[weakref.ref[Tensor]] = []
        unpacked: set[int] = set()

        def pack(t: Tensor) -> tuple[int, Tensor]:
            packed.append(weakref.ref(t))
            return len(packed) - 1, t.clone()

        def unpack(saved: tuple[int, Tensor]) -> Tensor:
            unpacked.add(saved[0])
            return saved[1]

        def nothing_else_keeps_them(result: Any, leaves: list[Tensor]) -> None:
            """While the graph lives, only the caller holds an original of a saved tensor (the case's tensors,
            the leaves and the outputs): the graph holds the packed copies."""
            assert packed, "nothing was saved through the hooks"
            held = [*case.args, *case.kwargs.values(), *leaves, *all_outputs(result)]
            gc.collect()
            alive = [t for t in (r() for r in packed) if t is not None and not any(t is h for h in held)]
            assert not alive, f"saved tensors kept alive outside the hooks: {[tuple(t.shape) for t in alive]}"

        if hooks == "save_on_cpu":
            with torch.autograd.graph.save_on_cpu(pin_memory=True):
                got = self._backward(case)[1]
        else:
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                got = self._backward(case, between=nothing_else_keeps_them)[1]
            never = sorted(set(range(len(packed))) - unpacked)
            assert not never, f"{len(never)} of {len(packed)} saved tensors never unpacked by the backward"
        # copies keep the strides: the same gradients; save_on_cpu saves contiguous copies, whose products may
        # round otherwise (as nn.Linear's do)
        exact = {"rtol": 0.0, "atol": 0.0} if hooks == "copies" else {}
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e, **exact)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_inplace_on_outputs(self, layout: str) -> None:
        """``out.mul_(2)`` on every floating output (as ``F.relu(out, inplace=True)`` would change it) before
        the backward gives twice the gradients: no "view created inside a custom Function" error."""
        if not self.differentiable:
            pytest.skip("not differentiable")
        case = self.small_case(torch.float64)
        if layout == "channels_last":
            case = case.with_data(_channels_last)
        expected = self._backward(case)[1]

        def double(result: Any, leaves: list[Tensor]) -> None:
            for o in outputs(result):
                if o.requires_grad:
                    o.mul_(2.0)

        got = self._backward(case, between=double)[1]
        for g, e in zip(got, expected, strict=True):
            assert (g is None) == (e is None)
            if g is not None and e is not None:
                torch.testing.assert_close(g, 2 * e)

    @pytest.mark.parametrize("layout", ["non_contiguous", "channels_last", "expanded"])
    def test_layouts(self, layout: str) -> None:
        case = self.small_case(torch.float32)
        if layout == "expanded":  # every batched tensor repeats its first image through a stride-0 dim
            batch = case.args[0].shape[0]
            case = case.map(lambda t: t[:1].expand_as(t) if t.dim() and t.shape[0] == batch else t)
            transformed = case
            case = case.map(lambda t: t.contiguous())
        else:
            transformed = case.map(_strided if layout == "non_contiguous" else _channels_last)
            assert any(not t.is_contiguous() for t in transformed.args if isinstance(t, Tensor))
        if self.differentiable:
            (got, got_grads), (exp, exp_grads) = self._backward(transformed), self._backward(case)
            for g, e in zip(got_grads, exp_grads, strict=True):
                torch.testing.assert_close(g, e)
        else:
            got, exp = all_outputs(self.call(transformed)), all_outputs(self.call(case))
        assert len(got) == len(exp) > 0
        for g, e in zip(got, exp, strict=True):
            torch.testing.assert_close(g, e)

    #: the op computes in the input dtype under autocast
    autocast: ClassVar[bool] = True

    def test_autocast(self, device: torch.device) -> None:
        if not self.autocast or not self.dtypes:
            pytest.skip("autocast applies (a linear layer), or no floating data")
        case = self.small_case(torch.float32, device)
        low = torch.float16 if device.type == "cuda" else torch.bfloat16
        with torch.autocast(device_type=device.type, dtype=low):
            got = outputs(self.call(case))
        for g, e in zip(got, outputs(self.call(case)), strict=True):
            assert g.dtype == e.dtype == torch.float32
            torch.testing.assert_close(g, e)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
    def test_half_precision(self, dtype: torch.dtype) -> None:
        if not self.half_precision:
            pytest.skip("no half-precision contract")
        case = self.small_case(torch.float32).with_data(lambda t: t.to(dtype))
        got = outputs(self.call(case))
        rounded = [o.to(dtype) for o in outputs(self.call(case.with_data(lambda t: t.float())))]
        assert got and len(got) == len(rounded)
        for g, r in zip(got, rounded, strict=True):
            assert g.dtype == dtype
            assert torch.equal(g, r)

    @pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
    def test_compile(self, layout: str) -> None:
        """``torch.compile(fullgraph=True)`` gives the eager values and gradients, also for channels-last
        inputs (on the CPU they take the row path of the hard ops, whose layout tests must trace)."""
        if self.compile_kwargs is None:
            pytest.skip("not compilable with fullgraph=True")
        case = self.small_case(torch.float32)
        if layout == "channels_last":
            case = case.with_data(_channels_last)
        compiled = torch.compile(self.op, fullgraph=True, backend="aot_eager")
        got, got_grads = self._compiled_backward(compiled, case)
        exp, exp_grads = self._backward(case, **self.compile_kwargs)
        assert len(got) == len(exp) > 0
        for g, e in zip(got, exp, strict=True):
            torch.testing.assert_close(g, e)
        for g, e in zip(got_grads, exp_grads, strict=True):
            torch.testing.assert_close(g, e)

    def _compiled_backward(self, compiled: Callable[..., Any], case: Case) -> tuple[list[Tensor], list[Any]]:
        original = self.op
        try:
            self.op = compiled  # type: ignore[method-assign]  # run the shared forward/backward through it
            return self._backward(case, **(self.compile_kwargs or {}))
        finally:
            self.op = original  # type: ignore[method-assign]

    def test_device(self, accelerator: torch.device) -> None:
        """Every accelerator gives the CPU's result (a ``cpu`` case compared the CPU with itself: none)."""
        device = accelerator
        case = self.small_case(torch.float32)
        on_device = case.map_all(lambda t: t.to(device))
        if device.type == "mps" and case.kwargs.get("backend") == "sparse":  # no CSR tensors on MPS
            with pytest.raises(ValueError, match="backend='sparse' is not supported on mps"):
                self.call(on_device)
            return
        got = all_outputs(self.call(on_device))
        for g, e in zip(got, all_outputs(self.call(case)), strict=True):
            assert g.device.type == device.type
            torch.testing.assert_close(g.cpu(), e, rtol=1e-5, atol=1e-5)

    def test_empty_batch(self) -> None:
        """A batch of 0 images gives empty results (a loss: 0) and empty gradients, like any other batch."""
        case = self.small_case(torch.float32)
        batch = case.args[0].shape[0]
        assert batch > 0

        def no_images(t: Tensor) -> Tensor:
            return t[:0] if t.dim() and t.shape[0] == batch else t

        empty = case.map_all(no_images)
        full = all_outputs(self.call(case))
        if self.differentiable:
            got, grads = self._backward(empty)
            leaves = [empty.args[i] for i in empty.data if empty.args[i].is_floating_point()]
            for g, leaf in zip(grads, leaves, strict=True):
                assert g is None or g.shape == leaf.shape
        else:
            got = all_outputs(self.call(empty))
        assert len(got) == len(full) > 0
        for g, f in zip(got, full, strict=True):
            assert g.shape == ((0, *f.shape[1:]) if f.dim() else ())
            assert g.dtype == f.dtype
            if not g.dim():
                assert g.item() == 0

    def test_errors(self, error_case: tuple[dict[Any, Any], type[Exception], str] | None) -> None:
        if error_case is None:
            pytest.skip("no error table")
        override, exc, match = error_case
        case = self.small_case(torch.float32)
        args = list(case.args)
        kwargs = dict(case.kwargs)
        for key, value in override.items():
            if isinstance(key, int):
                args[key] = value(args[key]) if callable(value) else value
            else:
                kwargs[key] = value
        with pytest.raises(exc, match=match):
            self.op(*args, **kwargs)
