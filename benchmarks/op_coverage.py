"""Which ATen ops the library dispatches, and whether each has an MPS and a CUDA kernel (checked statically).

Every public op of ``sparse_ops`` and the ``transparent_init`` layers run on the CPU, forward and backward,
under a ``TorchDispatchMode`` that records each ATen op (its overload), at two sizes (a tiny one, and one with
superpixels large enough for extra accumulators and soft cells of 32 pixels, whose float64 steps then run),
in float32 and float16, NCHW and channels-last, with and without a mask, with ``validate=True`` and
``False``, and both backends. Two paths are recorded:

* ``mps``: the path of a device without float64, simulated as in the tests
  (``tests/sparse_ops/_no_float64.py``): its guard marks which tensors would be on the host, so the ops that
  would run on the CPU there (the float64 steps) are told apart from those that stay on the device. The
  ``"sparse"`` backend is refused there and not recorded.
* ``cuda``: the normal path (every op on the device), both backends.

On a device the CPU-only branches are not taken: the recording replaces ``sparse_ops._kernels._is_rows``
(the per-image ``index_add_`` / ``index_select`` rows of a channels-last CPU input) by ``False``, as on
``mps`` and ``cuda``. The ``transparent_init`` stacks compute their parameters on the CPU (float64); what
runs on their device is recorded by building them on ``meta`` (an op with a ``meta`` tensor is a device op)
and by their forward and backward. A stack on meta computes and writes nothing, so the ``copy_`` of its
parameters into a device's layers is not recorded under ``build`` (``copy_`` has its kernels from the other
cases).

Each device op is then looked up in the ``native_functions.yaml`` that torchgen ships with torch (this
interpreter's, and any given with ``--yaml``): an ``MPS`` / ``CUDA`` dispatch entry (``SparseMPS``,
``SparseCsrCUDA``... for sparse inputs), a ``structured_delegate`` (followed), or a composite entry
(``CompositeExplicitAutograd``, ``CompositeImplicitAutograd``), which runs the ops it decomposes into: those
were recorded too (the ops dispatched while the composite kernel ran on the CPU), and the entry holds if they
have kernels. Known dtype gaps of ops that do have an MPS kernel are not in the yaml: :data:`KNOWN_GAPS` lists
those found in PyTorch's issues, with the issue number. Nothing here runs on MPS or CUDA hardware, and a
check inside a kernel that dispatches nothing (the device cases of ``new_compressed_tensor``, which builds
sparse CSR tensors) is not seen: the notes name the one found.

Usage::

    python benchmarks/op_coverage.py --yaml 2.11=PATH         # writes docs/_static/mps_op_coverage.csv
    python benchmarks/op_coverage.py --quick --out /tmp/c.csv # the tiny size, float32 only
    python benchmarks/op_coverage.py --yaml 2.11=/path/to/torchgen/packaged/ATen/native/native_functions.yaml
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import io
import itertools
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
for _path in (str(ROOT), str(ROOT / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

# imports after the path set-up: noqa E402
import pytest  # noqa: E402
import torch  # noqa: E402
from _atomic import result_path, write_text_atomic  # noqa: E402
from _harness import check_output, run_script  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves, tree_map  # noqa: E402

import sparse_ops as so  # noqa: E402
from sparse_ops import _kernels  # noqa: E402
from tests.sparse_ops._no_float64 import Float64Guard, without_float64  # noqa: E402
from transparent_init import TransparentConv1x1, TransparentLinear  # noqa: E402

OUT = ROOT / "docs" / "_static" / "mps_op_coverage.csv"
PACKAGES = (ROOT / "sparse_ops", ROOT / "transparent_init")

#: Dtype gaps of ops that have an MPS kernel, from PyTorch's issue tracker (the op's name -> the note). The
#: dtypes this library passes are in the table's ``device dtypes`` column; a note says whether they are hit.
KNOWN_GAPS: dict[str, str] = {
    "aminmax": "int64 min/max reductions need macOS 13.3 (pytorch/pytorch#95817; before, a downcast with "
    "a warning); int64 amin/amax of the Metal reductions read 0 from idle lanes in small threadgroups "
    "(#191104, #187976; fixed 2026-07, after the move to Metal in #180752). Ours: range checks of "
    "non-negative ids (min >= 0, max < count), which a spurious 0 cannot pass wrongly",
    "cumsum": "int64 results (cumsum of a bool) need macOS 13.3 (pytorch/pytorch#96610, #95817)",
    "sort.stable": "int64 keys need macOS 13.3 (pytorch/pytorch#95817); stable=True: MPSGraph's sort is "
    "stable (#86750), the Metal sort got a stable single-block path in #181736 (2026-04). Ours: stability "
    "only fixes which accumulator a pixel goes to (bit-identical sums to the CPU), not the error bound",
    "scatter_reduce.two": "amin/amax unsupported for int64 and for int32 on macOS <= 14 "
    "(pytorch/pytorch#141948); signed int64 via Metal on macOS 15+ (#184028). Ours: amax of float values "
    "(int64 only as the index)",
    "index_add": "int64 self with a 0-dim index or a float alpha failed on MPS (pytorch/pytorch#161446). "
    "Ours: float self, 1-dim index (spixel_loss backward)",
    "index_select": "an empty index failed on MPS (pytorch/pytorch#93877, fixed by #94117)",
    "searchsorted.Tensor": "MPS kernel since pytorch/pytorch#112829 (2023); no gap found",
    "_to_sparse_csr": "no sparse CSR tensors on MPS: torch.sparse_csr_tensor fails too "
    "(new_compressed_tensor has no MPS case; pytorch/pytorch#196192, #129842, #196205 open). "
    "SuperpixelAssignment.to_sparse(layout=torch.sparse_csr) refuses it there with a ValueError; COO works",
    "sparse_compressed_tensor.comp_plain_value_size": "composite in the yaml, yet it fails on MPS: "
    "new_compressed_tensor, which it calls without dispatching, has no MPS case (pytorch/pytorch#196192). "
    "Only backend='sparse' (refused on MPS) builds CSR matrices",
    "mm": "dense: MPS kernel; a CSR operand (backend='sparse', refused on MPS) has no SparseCsrMPS kernel",
}


Call = Callable[[], Any]


# ------------------------------------------------------------------------------------------------ recording
@dataclass
class Seen:
    """What was recorded of one ATen overload."""

    runs: set[str] = field(default_factory=set)  # "mps device", "mps host", "cuda device"
    phases: set[str] = field(default_factory=set)  # "fwd", "bwd", "build"
    cases: set[str] = field(default_factory=set)
    where: set[str] = field(default_factory=set)  # module.py:function of our code that called it
    dtypes: set[str] = field(default_factory=set)  # of its tensor arguments, on the device
    layouts: set[str] = field(default_factory=set)  # sparse layouts of its arguments ("coo", "csr")
    children: set[str] = field(default_factory=set)  # ops dispatched while its CPU kernel ran


class Record:
    """The ops of every case: ``ops[overload name] -> Seen``; ``skipped``: cases that raised, with why."""

    def __init__(self) -> None:
        self.ops: dict[str, Seen] = {}
        self.skipped: dict[str, str] = {}
        self.case = ""
        self.phase = "fwd"
        self.path = "cuda"
        self.on = False

    def add(self, func: Any, args: Any, kwargs: Any, host: bool, children: set[str]) -> None:
        if not self.on:
            return
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        layouts = [t.layout for t in tensors] + [kwargs.get("layout")]  # a factory's layout: its dispatch key
        sparse = sorted({_LAYOUTS[layout] for layout in layouts if layout in _LAYOUTS})
        # a sparse call is its own row: its dispatch key is another (mm of a CSR matrix: SparseCsrCUDA)
        seen = self.ops.setdefault(overload(func) + (f" [{','.join(sparse)}]" if sparse else ""), Seen())
        seen.runs.add(f"{self.path} {'host' if host else 'device'}")
        seen.phases.add(self.phase)
        seen.cases.add(self.case)
        seen.where.add(_caller())
        seen.children |= children
        if not host:
            seen.dtypes |= {str(t.dtype).removeprefix("torch.") for t in tensors}
        seen.layouts |= set(sparse)


_LAYOUTS = {torch.sparse_coo: "coo", torch.sparse_csr: "csr"}


def overload(func: Any) -> str:
    """``aten::scatter_add_`` / ``aten::sort.stable``: the name native_functions.yaml gives the overload."""
    schema = func._schema
    return schema.name.removeprefix("aten::") + (f".{schema.overload_name}" if schema.overload_name else "")


def _caller() -> str:
    """``module.py:function`` of the innermost frame of the library (``autograd`` if none: a formula of
    PyTorch's own ops run by the engine)."""
    frame = sys._getframe(2)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if any(path.is_relative_to(p) for p in PACKAGES):
            return f"{path.parent.name}/{path.name}:{frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "autograd"


class _Children(TorchDispatchMode):
    """The ops a composite kernel dispatches (its decomposition, one level)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.names.add(overload(func))
        # a number the composite kernel wrapped as a tensor reaches Python unwrapped: wrap it again
        args = [
            torch.scalar_tensor(a) if isinstance(a, (bool, int, float)) and str(s.type) == "Tensor" else a
            for a, s in zip(args, func._schema.arguments, strict=False)
        ]
        return func(*args, **(kwargs or {}))


def _decomposition(func: Any, args: Any, kwargs: Any, composite: str) -> set[str]:
    """The ops the ``composite`` kernel of ``func`` dispatches, run again on copies of the tensor arguments
    (an in-place op changes only the copies); empty if it cannot run so."""

    def copy(t: Any) -> Any:
        return t.detach().clone() if isinstance(t, torch.Tensor) else t

    children = _Children()
    try:
        with torch.no_grad():  # the copies before the recording: their clone and detach are not the kernel's
            args, kwargs = tree_map(copy, args), tree_map(copy, kwargs)
            with children:
                func._op_dk(getattr(torch._C.DispatchKey, composite), *args, **kwargs)
    except (RuntimeError, TypeError, NotImplementedError):
        return set()
    return children.names


def _children(func: Any, args: Any, kwargs: Any) -> set[str]:
    """For an op whose MPS or CUDA entry is composite, the ops it decomposes into (else none)."""
    for backend in ("MPS", "CUDA"):
        _, composite = kernel(_ENTRIES, overload(func), backend)
        if composite is not None:
            return _decomposition(func, args, kwargs, composite)
    return set()


class HostRecorder(Float64Guard):
    """The guard of the no-float64 simulation, recording every op and whether it runs on the host."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        host = any(self.is_host(t) for t in inputs)
        device = any(not self.is_host(t) for t in inputs)
        on_host = (host and not device) or func is torch.ops.aten.scalar_tensor.default
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.record.on:
            self.record.add(func, args, kwargs, on_host, _children(func, args, kwargs))
        return out


class DeviceRecorder(TorchDispatchMode):
    """Records every op as a device op (a device with float64); with ``meta_only``, only the ops with a
    ``meta`` tensor among their arguments or results (a module built on ``meta``: its device's ops)."""

    def __init__(self, record: Record, meta_only: bool = False) -> None:
        super().__init__()
        self.record, self.meta_only = record, meta_only

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if self.record.on and (not self.meta_only or any(t.is_meta for t in tensors)):
            self.record.add(func, args, kwargs, False, _children(func, args, kwargs))
        return out


# -------------------------------------------------------------------------------------------------- cases
@dataclass
class Variant:
    """One combination of the options every case is run with."""

    large: bool
    dtype: torch.dtype
    channels_last: bool
    masked: bool
    validate: bool
    backend: str
    path: str  # "mps" (the no-float64 simulation) or "cuda"

    def __str__(self) -> str:
        return (
            f"{'large' if self.large else 'tiny'} {str(self.dtype).removeprefix('torch.')} "
            f"{'NHWC' if self.channels_last else 'NCHW'}{' mask' if self.masked else ''} "
            f"validate={self.validate} {self.backend}, {self.path}"
        )


def cases(v: Variant) -> dict[str, Call]:
    """The public ops under variant ``v``: name -> a call returning its outputs (every float input a leaf)."""
    g = torch.Generator().manual_seed(0)
    if v.large:  # 2 x 48 x 48: a superpixel of 1920 pixels (extra accumulators); soft cells of 32 pixels
        h = w = 48
        sp = torch.zeros(2, h, w, dtype=torch.long)
        sp[:, :, 40:] = 1
        sp[1, :4, :4] = 2
        n_s, cell, soft_hw = 3, 32, (64, 40)
    else:
        h = w = 8
        cell = 4
        sp = so.grid_cell_ids(h, w, cell, batch_size=1)
        n_s, soft_hw = so.num_grid_cells(h, w, cell), (h, w)
    b, c = sp.shape[0], 3
    fmt = torch.channels_last if v.channels_last else torch.contiguous_format

    def leaf(*shape: int, dtype: torch.dtype = v.dtype) -> torch.Tensor:
        t = torch.randn(*shape, generator=g).to(dtype)
        return (t.to(memory_format=fmt) if t.dim() == 4 else t).requires_grad_()

    x, small = leaf(b, c, h, w), leaf(b, c, h // 2, w // 2)
    pooled = leaf(b, n_s, c)
    mask = torch.rand(b, h, w, generator=g) > 0.3 if v.masked else None
    sh, sw = soft_hw
    f = leaf(b, c, sh, sw)
    assoc = torch.softmax(torch.randn(b, 9, sh, sw, generator=g), 1).to(v.dtype).requires_grad_()
    soft_mask = torch.rand(b, sh, sw, generator=g) > 0.3 if v.masked else None
    n_h, n_w = so.grid_shape(sh, sw, cell)
    centres = leaf(b, c, n_h, n_w)
    target = torch.randint(0, 4, (b, sh, sw), generator=g)
    soft_target = torch.randn(b, 3, sh, sw, generator=g).to(v.dtype)
    weight = torch.randn(2, c, generator=g).to(v.dtype)
    val, bk = v.validate, cast(Any, v.backend)  # a Literal of the library's signatures

    def pool(reduce: Any) -> Call:
        return lambda: so.superpixel_pool(x, sp, n_s, mask=mask, reduce=reduce, backend=bk, validate=val)

    def assignment() -> tuple[torch.Tensor, ...]:
        a = so.SuperpixelAssignment(sp, n_s, mask=mask, backend=bk, validate=val)
        return a.encode(x), a.decode(pooled), a.uniformize(x), a.pool(x, "max")

    def to_sparse() -> tuple[torch.Tensor, ...]:
        a = so.SuperpixelAssignment(sp, n_s, mask=mask)
        coo = a.to_sparse(torch.sparse_coo, normalized=True).coalesce().values()
        if v.path == "mps":  # CSR is refused there (PyTorch has no CSR tensors on MPS)
            return (coo,)
        return coo, a.to_sparse(torch.sparse_csr, normalized=True).values()

    def segnet() -> tuple[torch.Tensor, ...]:
        out = so.max_pool2d_with_indices(x, 2, validate=val)
        return out.values, so.max_unpool2d(out.values, out.indices, (h, w), validate=val)

    def classifier() -> torch.Tensor:
        module = so.SuperpixelClassifier(c, 2).to(v.dtype)
        return module(small, sp, n_s, mask=mask)

    return {
        "uniformize": lambda: so.uniformize(x, sp, n_s, mask=mask, backend=bk, validate=val),
        **{f"superpixel_pool {r}": pool(r) for r in ("sum", "mean", "max")},
        "superpixel_pool upsample": lambda: so.superpixel_pool(small, sp, n_s, upsample="bilinear"),
        "superpixel_unpool": lambda: so.superpixel_unpool(pooled, sp, validate=val),
        "SuperpixelAssignment": assignment,
        "to_sparse": to_sparse,
        "soft_superpixel_pool": lambda: so.soft_superpixel_pool(f, assoc, cell, mask=soft_mask, validate=val),
        "soft_superpixel_unpool": lambda: so.soft_superpixel_unpool(centres, assoc, cell, validate=val),
        "soft_uniformize": lambda: so.soft_uniformize(f, assoc, cell, mask=soft_mask, validate=val),
        "normalize_assoc": lambda: so.normalize_assoc(assoc, cell, validate=val),
        "hard_superpixels": lambda: so.hard_superpixels(assoc, cell, return_counts=True, validate=val),
        "hard_superpixels connectivity": lambda: so.hard_superpixels(
            assoc.detach(), cell, connectivity=True, min_size=2, validate=val
        ),
        "enforce_connectivity": lambda: so.enforce_connectivity(sp, min_size=2, validate=val),
        "relabel_contiguous": lambda: so.relabel_contiguous(sp * 7, validate=val),
        "spixel_loss labels": lambda: tuple(so.spixel_loss(assoc, target, cell, num_classes=4, validate=val)),
        "spixel_loss soft target": lambda: tuple(so.spixel_loss(assoc, soft_target, cell, validate=val)),
        "SegNet pool, unpool": segnet,
        "superpixel_cam": lambda: so.superpixel_cam(x, sp, n_s, weight=weight, mask=mask, validate=val),
        "superpixel_global_average": lambda: so.superpixel_global_average(small, sp, n_s, mask=mask),
        "SuperpixelClassifier": classifier,
        "grid": lambda: (
            so.grid_cell_ids(h, w, cell, batch_size=b),
            *so.neighbour_cell_ids(h, w, cell),
            so.neighbour_validity(h, w, cell),
            so.pixel_xy(h, w, batch_size=b, dtype=v.dtype),
        ),
    }


def variants(quick: bool, path: str) -> Iterator[Variant]:
    """Every combination of the options (``quick``: the tiny size in float32); ``"sparse"``: ``cuda`` only."""
    sizes = (False,) if quick else (False, True)
    dtypes = (torch.float32,) if quick else (torch.float32, torch.float16)
    backends = ("scatter", "sparse") if path == "cuda" else ("scatter",)
    for large, dtype, cl, masked, validate, backend in itertools.product(
        sizes, dtypes, (False, True), (False, True), (True, False), backends
    ):
        yield Variant(large, dtype, cl, masked, validate, backend, path)


def _outputs(out: Any) -> list[torch.Tensor]:
    items = out if isinstance(out, tuple) else (out,)
    return [t for t in items if isinstance(t, torch.Tensor) and t.requires_grad]


def run_case(record: Record, name: str, call: Call, label: str = "") -> None:
    """Forward, then backward of every differentiable output with a gradient of ones (made unrecorded); a
    case that raises is kept in ``record.skipped`` under ``name [label]``."""
    record.case, record.phase, record.on = name, "fwd", True
    try:
        out = call()
        record.on = False
        outs = _outputs(out)
        grads = [torch.ones_like(t) for t in outs]
        record.phase, record.on = "bwd", True
        if outs:
            torch.autograd.backward(outs, grads)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:  # e.g. no half kernel on CPU
        record.skipped[f"{name} [{label}]"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
    finally:
        record.on = False


@contextmanager
def _on_a_device() -> Iterator[None]:
    """The CPU-only branches off (``_is_rows``), as on ``mps`` and ``cuda``; PyTorch's beta warnings off."""
    patch = pytest.MonkeyPatch()
    patch.setattr(_kernels, "_is_rows", lambda x: False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        patch.undo()


def stacks(record: Record, quick: bool) -> None:
    """The transparent stacks: built on ``meta`` (their device's ops), then forward and backward."""
    for dtype in (torch.float32,) if quick else (torch.float32, torch.float16):
        for cls, shape in ((TransparentLinear, (4, 3)), (TransparentConv1x1, (2, 3, 4, 4))):
            for activation in ("relu", "leaky_relu", None):
                name = f"{cls.__name__}"
                record.case, record.phase, record.on = name, "build", True
                with DeviceRecorder(record, meta_only=True):
                    cls(3, [6], activation=activation, generator=0, device="meta", dtype=dtype)
                record.on = False
                stack = cls(3, [6], activation=activation, generator=0, dtype=dtype)
                x = torch.randn(*shape, dtype=dtype, requires_grad=True)
                with DeviceRecorder(record):
                    run_case(record, name, functools.partial(stack, x), f"{dtype} {activation}")


def record_all(quick: bool = False) -> Record:
    """Every case on both paths (see the module docstring)."""
    record = Record()
    # The once-per-process warm-up of the sparse builds (1 x 1 matrices on the CPU) belongs to no op: spend it
    # here, or the first traced sparse build records it on that path's device.
    with _kernels.quiet_sparse_beta():
        pass
    with _on_a_device():
        for path in ("mps", "cuda"):
            record.path = path
            for v in variants(quick, path):
                for name, call in cases(v).items():
                    label = str(v)
                    if path == "cuda":
                        with DeviceRecorder(record):
                            run_case(record, name, call, label)
                        continue
                    patch = pytest.MonkeyPatch()
                    try:
                        with without_float64(patch, HostRecorder(record)):
                            run_case(record, name, call, label)
                    except AssertionError as err:  # the guard: a float64 tensor on the device
                        raise AssertionError(f"{name} [{label}]: {err}") from err
                    finally:
                        patch.undo()
        for path in ("mps", "cuda"):  # the same ops on both: the parameters are computed on the CPU
            record.path = path
            stacks(record, quick)
    return record


# ----------------------------------------------------------------------------------------- yaml look-ups
@dataclass
class Entry:
    """One ``- func:`` entry of native_functions.yaml: its dispatch keys (``None``: no ``dispatch:`` section,
    an implicit CompositeImplicitAutograd) and its structured delegate."""

    dispatch: set[str] | None = None
    delegate: str | None = None


_FUNC = re.compile(r"^- func: ([\w.]+)\(")
_KEY = re.compile(r"^    ([\w, ]+):")


def parse_yaml(path: Path) -> dict[str, Entry]:
    """The entries of native_functions.yaml by overload name (a line parser: the file's layout is regular)."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    in_dispatch = False
    for line in path.read_text().splitlines():
        if m := _FUNC.match(line):
            current = entries.setdefault(m.group(1), Entry())
            in_dispatch = False
        elif current is None:
            continue
        elif line.startswith("  dispatch:"):
            current.dispatch = current.dispatch or set()
            in_dispatch = True
        elif line.startswith("  ufunc_inner_loop:"):  # code-generated CPU and CUDA kernels
            current.dispatch = (current.dispatch or set()) | {"CPU", "CUDA"}
            in_dispatch = False
        elif line.startswith("  structured_delegate:"):
            current.delegate = line.split(":", 1)[1].split("#")[0].strip()
            in_dispatch = False
        elif in_dispatch and (m := _KEY.match(line)):
            assert current.dispatch is not None
            current.dispatch |= {key.strip() for key in m.group(1).split(",")}
        elif line.startswith("  ") and not line.startswith("    "):
            in_dispatch = False
    return entries


_COMPOSITE = (
    "CompositeExplicitAutograd",
    "CompositeExplicitAutogradNonFunctional",
    "CompositeImplicitAutograd",
)


def kernel(entries: dict[str, Entry], name: str, key: str) -> tuple[str, str | None]:
    """``("kernel", None)``, ``("composite", the composite key)``, ``("none", None)`` or ``("unknown", None)``
    for dispatch key ``key`` of overload ``name`` (structured delegates followed)."""
    entry = entries.get(name)
    if entry is None:
        return "unknown", None
    if entry.dispatch is not None and key in entry.dispatch:
        return "kernel", None
    if entry.delegate is not None:
        return kernel(entries, entry.delegate, key)
    if entry.dispatch is None:
        return "composite", "CompositeImplicitAutograd"
    for composite in _COMPOSITE:
        if composite in entry.dispatch:
            return "composite", composite
    return "none", None


#: Composite kernels that choose their implementation by the device (``ConvBackend`` in ATen's
#: Convolution.cpp): what each runs on MPS and CUDA instead of the CPU's decomposition that was recorded.
BACKEND_CHOICE: dict[str, dict[str, str]] = {
    "convolution": {"MPS": "_convolution", "CUDA": "_convolution"},
    "_convolution": {"MPS": "_mps_convolution", "CUDA": "cudnn_convolution"},
    "convolution_backward": {"MPS": "mps_convolution_backward"},
}


def status(entries: dict[str, Entry], record: Record, name: str, backend: str, depth: int = 0) -> str:
    """``yes``, ``yes (composite: ...)``, ``NO`` or ``unknown`` for ``name`` on ``backend`` (``MPS``,
    ``CUDA``), following a composite entry's recorded decomposition (ops with sparse arguments: the
    ``SparseMPS`` / ``SparseCsrCUDA``... key)."""
    seen = record.ops.get(name)
    layouts = seen.layouts if seen else set()
    op = name.split(" ")[0]  # without the sparse layout
    key = backend
    if "csr" in layouts:
        key = f"SparseCsr{backend}"
    elif "coo" in layouts:
        key = f"Sparse{backend}"
    found, composite = kernel(entries, op, key)
    if found == "kernel":
        return "yes" if key == backend else f"yes ({key})"
    if found != "composite":
        return "NO" if found == "none" else "unknown"
    # the kernel picks an implementation by the device: the CPU's decomposition says nothing of the others'
    chosen = BACKEND_CHOICE.get(op, {}).get(backend)
    children = [chosen] if chosen else sorted(seen.children) if seen and op not in BACKEND_CHOICE else []
    if depth > 2 or not children:
        return f"yes ({composite})"
    missing = [c for c in children if not status(entries, record, c, backend, depth + 1).startswith("yes")]
    if missing:
        return f"NO ({composite} into {', '.join(missing)})"
    return f"yes ({composite})"


def yaml_of() -> Path:
    """This interpreter's torchgen copy of native_functions.yaml."""
    spec = importlib.util.find_spec("torchgen")  # installed with torch; not imported (no type stubs)
    assert spec is not None and spec.origin is not None, "torchgen (installed with torch) is missing"
    return Path(spec.origin).parent / "packaged" / "ATen" / "native" / "native_functions.yaml"


_ENTRIES = parse_yaml(yaml_of())  # this torch's: which ops the recording decomposes


# ---------------------------------------------------------------------------------------------- the table
COLUMNS = ("op", "runs on", "phases", "where", "cases", "device dtypes")


def table(record: Record, yamls: dict[str, Path]) -> list[dict[str, str]]:
    """One row per recorded overload: where it runs, where we call it, and its kernels in every yaml."""
    parsed = {version: parse_yaml(path) for version, path in yamls.items()}
    rows = []
    for name in sorted(record.ops):
        seen = record.ops[name]
        device = any(run.endswith("device") for run in seen.runs)
        row = {
            "op": name,
            "runs on": ", ".join(sorted(seen.runs)),
            "phases": ",".join(p for p in ("build", "fwd", "bwd") if p in seen.phases),
            "where": "; ".join(sorted(seen.where)),
            "cases": "; ".join(sorted(seen.cases)),
            "device dtypes": ",".join(sorted(seen.dtypes)),
        }
        for backend in ("MPS", "CUDA"):
            for version, entries in parsed.items():
                row[f"{backend} {version}"] = status(entries, record, name, backend) if device else "-"
        row["known gaps"] = KNOWN_GAPS.get(name.split(" ")[0], "")
        rows.append(row)
    return rows


def gaps(rows: list[dict[str, str]]) -> list[str]:
    """The device ops of the ``mps`` path without an MPS kernel in some yaml (``op (versions)``)."""
    out = []
    for row in rows:
        if "mps device" not in row["runs on"]:
            continue
        missing = [key.split()[1] for key in row if key.startswith("MPS ") and row[key].startswith("NO")]
        if missing:
            out.append(f"{row['op']} ({', '.join(missing)})")
    return out


def _yaml_pair(text: str) -> tuple[str, Path]:
    """``VERSION=PATH`` as ``(VERSION, PATH)``, the file unchecked."""
    version, _, path = text.partition("=")
    return version, Path(path)


def yaml_spec(text: str) -> tuple[str, Path]:
    """``type=`` of ``--yaml``: ``VERSION=PATH`` of an existing file, as ``(VERSION, PATH)``."""
    _, sep, path = text.partition("=")
    try:
        found = bool(sep) and Path(path).is_file()
    except OSError:  # a name too long for the system, ...: not a traceback
        found = False
    if not found:
        raise argparse.ArgumentTypeError(f"must be VERSION=PATH of an existing file, got {text!r}")
    return _yaml_pair(text)


# documented commands name the reader's paths: they are parsed with ``unchecked`` (tests/test_doc_commands.py)
yaml_spec.checks_path = True  # type: ignore[attr-defined]
yaml_spec.unchecked = _yaml_pair  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    """The command line (``python benchmarks/op_coverage.py --help``)."""
    ap = argparse.ArgumentParser(
        allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="the tiny size in float32 only (a smoke test; writes nothing without --out)",
    )
    ap.add_argument(
        "--yaml",
        action="append",
        type=yaml_spec,
        default=[],
        metavar="VERSION=PATH",
        help="another torch's native_functions.yaml (repeatable; default: none); this interpreter's is "
        "always read",
    )
    ap.add_argument("--out", type=Path, default=None, help=f"the CSV (default: {OUT.relative_to(ROOT)})")
    return ap


def _version(torch_version: str) -> str:
    """``major.minor`` of a torch version string (the column suffix: ``"2.14.1+cpu"`` -> ``"2.14"``, a
    nightly's ``"2.6.0.dev20241112+cpu"`` -> ``"2.6"``)."""
    return ".".join(torch_version.split("+")[0].split(".")[:2])


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make (``ap.error`` on failure): ``--out`` can be written; without it, a
    ``--quick`` run writes nothing, and a full run may replace the committed table only with every torch
    version it has columns for (this interpreter's and the ``--yaml`` ones): a run without ``--yaml`` dropped
    the committed torch 2.11 columns, which the docs cite."""
    check_output(ap, "--out", args.out, default_in=None if args.quick else OUT.parent)
    into_committed = args.out is None or Path(args.out).resolve() == OUT.resolve()
    if not into_committed or not OUT.is_file() or (args.quick and args.out is None):
        return
    if args.quick:  # (--quick --out <the committed table>: its reduced table over the committed one)
        ap.error(
            f"--quick --out {args.out}: a smoke run does not replace the committed table; pass another --out"
        )
    with OUT.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    committed = {col.split(" ", 1)[1] for col in header if col.startswith(("MPS ", "CUDA "))}
    dropped = sorted(committed - {version for version, _ in args.yaml} - {_version(torch.__version__)})
    if dropped:
        ap.error(
            f"{OUT.relative_to(ROOT)} has the columns of torch {', '.join(dropped)}, which this run would "
            "drop: "
            + " ".join(f"pass --yaml {v}=PATH (that torch's ATen native_functions.yaml)" for v in dropped)
            + ", or --out elsewhere"
        )


def main(argv: list[str] | None = None) -> list[dict[str, str]]:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    yamls = dict(args.yaml)
    yamls[_version(torch.__version__)] = yaml_of()
    torch.set_num_threads(1)
    record = record_all(args.quick)
    rows = table(record, dict(sorted(yamls.items())))
    out = result_path(args.out, OUT, args.quick, kind="CSV")  # (a --quick run replaces no committed table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(out, text.getvalue(), newline="")
    wrote = f"; wrote {out}" if out is not None else ""
    print(f"torch {torch.__version__}: {len(rows)} ATen overloads ({', '.join(yamls)}){wrote}")
    for name, why in sorted(record.skipped.items()):
        print(f"  not run: {name}: {why}")
    missing = gaps(rows)
    print("device ops without an MPS kernel:", ", ".join(missing) if missing else "none")
    return rows


if __name__ == "__main__":
    # SIGINT / SIGTERM / SIGHUP: one line and exit status 130 / 143 / 129 instead of a traceback
    raise SystemExit(run_script(main, "op_coverage.py"))
