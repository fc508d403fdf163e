"""The package as a whole: imports, version, exported names, memory bounded for stray ids (subprocesses)."""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import sparse_ops

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_import_loads_neither_transparent_init_nor_scipy() -> None:
    out = _run(
        """
        import json, sys
        import sparse_ops
        print(json.dumps([m for m in ("transparent_init", "scipy") if m in sys.modules]))
        """
    )
    assert json.loads(out) == []


def test_one_version_for_both_packages() -> None:
    transparent_init = pytest.importorskip("transparent_init")
    expected = importlib.metadata.version("transinit")
    assert sparse_ops.__version__ == transparent_init.__version__ == expected


def test_one_version_for_both_packages_in_a_checkout_never_installed() -> None:
    """Without the distribution's metadata (a source checkout on ``PYTHONPATH``, never installed) both
    packages report the version written in ``transparent_init/_version.py``, the one place hatchling reads it
    (``sparse_ops`` said ``0+unknown``), and ``import sparse_ops`` still loads no ``transparent_init``."""
    out = _run(
        """
        import json, sys
        import importlib.metadata as md
        def missing(name):
            raise md.PackageNotFoundError(name)
        md.version = missing
        import sparse_ops
        loaded = "transparent_init" in sys.modules
        import transparent_init
        print(json.dumps([sparse_ops.__version__, transparent_init.__version__, loaded]))
        """
    )
    scope: dict[str, object] = {}
    exec((ROOT / "transparent_init" / "_version.py").read_text(), scope)
    assert json.loads(out) == [scope["__version__"], scope["__version__"], False]


def test_every_exported_name_exists_and_is_documented() -> None:
    """Every name of ``__all__`` has an entry (an autodoc or ``data`` directive) on the API pages;
    ``sparse_ops.__version__`` had none, while ``transparent_init.__version__`` had."""
    api = [*(ROOT / "docs" / "api").glob("sparse_ops_*.rst"), ROOT / "docs" / "api" / "index.rst"]
    documented = "\n".join(p.read_text() for p in api)
    for name in sparse_ops.__all__:
        assert hasattr(sparse_ops, name), name
        assert name in documented, f"{name} is missing from docs/api/sparse_ops_*.rst"
    assert ".. data:: __version__" in (ROOT / "docs" / "api" / "index.rst").read_text()


def test_stray_id_does_not_allocate_by_its_value() -> None:
    """A 4 x 4 label map with the id 2**40: uniformize is right with memory bounded by the pixels.

    Pooling refuses before allocating, soft ops ignore a huge cell size; measured as the peak resident memory
    of a fresh process.
    """
    out = _run(
        """
        import json, resource, torch
        import sparse_ops as so
        x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
        sp = torch.randint(0, 3, (2, 4, 4))
        so.uniformize(x, sp).sum().backward()  # warm up every code path once
        so.soft_uniformize(x, torch.softmax(torch.randn(2, 9, 4, 4), 1), 4)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sp[0, 0, 0] = 2**40
        y = so.uniformize(x, sp)
        y.sum().backward()
        exact = torch.where(sp[:, None] == 2**40, x, 0).sum()  # the stray pixel is its own superpixel
        ok = bool(torch.equal(y[0, :, 0, 0], x[0, :, 0, 0]))
        refused = []
        for call in (lambda: so.superpixel_pool(x, sp), lambda: so.SuperpixelAssignment(sp),
                     lambda: so.superpixel_pool(x, torch.zeros_like(sp), 10**12),
                     lambda: so.spixel_loss(torch.softmax(torch.randn(2, 9, 4, 4), 1), sp, 2)):
            try:
                call()
            except ValueError as err:
                refused.append("relabel_contiguous" in str(err) or "num_classes" in str(err))
        so.soft_uniformize(x, torch.softmax(torch.randn(2, 9, 4, 4), 1), 2**40)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({"ok": ok, "refused": refused, "grown_mb": grown_mb}))
        """
    )
    result = json.loads(out)
    assert result["ok"]
    assert result["refused"] == [True, True, True, True]
    assert result["grown_mb"] < 16, result  # a slot per id value would be 2**40 slots (terabytes)


def test_repr_shows_validate_false() -> None:
    """A module built with ``validate=False`` (no id / association value checks) says so in its repr, as
    ``MaxUnpool`` does: printing a model shows which layers run unchecked. The default stays unprinted."""
    import sparse_ops as so

    modules: dict[str, Callable[..., torch.nn.Module]] = {
        "SuperpixelPool": so.SuperpixelPool,
        "SuperpixelUniformize": so.SuperpixelUniformize,
        "SoftUniformize": lambda **kw: so.SoftUniformize(4, **kw),
        "SpixelLoss": lambda **kw: so.SpixelLoss(4, **kw),
        "SuperpixelClassifier": lambda **kw: so.SuperpixelClassifier(3, 2, **kw),
        "MaxPoolWithIndices": lambda **kw: so.MaxPoolWithIndices(2, **kw),  # (it hid validate=False)
    }
    for name, make in modules.items():
        checked, unchecked = make(), make(validate=False)
        assert "validate" not in checked.extra_repr(), name
        assert unchecked.extra_repr() == checked.extra_repr() + ", validate=False", name
    # every exported module that takes validate is covered (MaxUnpool, whose repr has no other option, above)
    import inspect

    takes = {
        name
        for name in so.__all__
        if isinstance(cls := getattr(so, name), type)
        and issubclass(cls, torch.nn.Module)
        and "validate" in inspect.signature(cls).parameters
    }
    assert takes - {"MaxUnpool"} == set(modules), takes


def test_no_public_name_outside_all() -> None:
    """``dir(sparse_ops)`` shows ``__all__`` and the submodules, nothing else (``version`` and
    ``PackageNotFoundError`` of ``importlib.metadata`` were public attributes)."""
    stray = [n for n in dir(sparse_ops) if not n.startswith("_") and n not in sparse_ops.__all__]
    assert [n for n in stray if not inspect.ismodule(getattr(sparse_ops, n))] == []


@pytest.mark.parametrize(
    "name", [n for n in sparse_ops.__all__ if inspect.isfunction(getattr(sparse_ops, n))]
)
def test_every_public_function_documents_args_returns_and_an_example(name: str) -> None:
    """Every exported function's docstring has an ``Args:`` section, a ``Returns:`` section and a ``>>>``
    example (run by the doctests), as transparent_init's do."""
    doc = inspect.getdoc(getattr(sparse_ops, name)) or ""
    for section in ("\nArgs:\n", "\nReturns:\n", "\n    >>> "):
        assert section in doc, f"{name}: no {section.strip()!r}"


def _sp() -> torch.Tensor:
    return torch.tensor([[[5, 5, 9], [1, 9, 9]]])


def _assoc() -> torch.Tensor:
    return torch.rand(1, 9, 4, 4, generator=torch.Generator().manual_seed(0))


def _features() -> torch.Tensor:
    return torch.rand(1, 3, 2, 3, generator=torch.Generator().manual_seed(1))


#: every public op that returns more than one value: its result (made when the test runs) and its fields
MULTI_VALUE_RETURNS: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
    "relabel_contiguous": (lambda: sparse_ops.relabel_contiguous(_sp()), ("ids", "num_superpixels")),
    "enforce_connectivity": (lambda: sparse_ops.enforce_connectivity(_sp()), ("ids", "num_superpixels")),
    "hard_superpixels(return_counts=True)": (
        lambda: sparse_ops.hard_superpixels(_assoc(), 2, return_counts=True),
        ("ids", "num_superpixels"),
    ),
    "neighbour_cell_ids": (lambda: sparse_ops.neighbour_cell_ids(4, 4, 2), ("ids", "valid")),
    "superpixel_cam(return_superpixel_scores=True)": (
        lambda: sparse_ops.superpixel_cam(
            _features(), _sp(), weight=torch.ones(2, 3), return_superpixel_scores=True
        ),
        ("cam", "superpixel_scores"),
    ),
    "SuperpixelClassifier.cam(return_superpixel_scores=True)": (
        lambda: sparse_ops.SuperpixelClassifier(3, 2).cam(_features(), _sp(), return_superpixel_scores=True),
        ("cam", "superpixel_scores"),
    ),
    "max_pool2d_with_indices": (
        lambda: sparse_ops.max_pool2d_with_indices(_features()),
        ("values", "indices", "input_size"),
    ),
    "spixel_loss": (
        lambda: sparse_ops.spixel_loss(_assoc(), torch.zeros(1, 4, 4, dtype=torch.long), 2),
        ("total", "semantic", "position"),
    ),
}


@pytest.mark.parametrize("call", MULTI_VALUE_RETURNS)
def test_every_multi_value_return_is_an_exported_named_tuple(call: str) -> None:
    """One convention for the ops that return several values: a NamedTuple exported by the package, whose
    fields name the values (``out.num_superpixels``) and which still unpacks as the plain tuple it was."""
    make, fields = MULTI_VALUE_RETURNS[call]
    torch.manual_seed(0)  # (the classifier's initial weights)
    result = make()
    kind = type(result)
    assert isinstance(result, tuple) and kind is not tuple, f"{call} returns a plain {kind.__name__}"
    assert getattr(kind, "_fields", None) == fields, (call, getattr(kind, "_fields", None))
    assert getattr(sparse_ops, kind.__name__, None) is kind and kind.__name__ in sparse_ops.__all__, call
    assert all(value is getattr(result, f) for value, f in zip(result, fields, strict=True))


def test_every_module_names_its_inputs_as_its_function_does() -> None:
    """A module's ``forward`` takes its function's inputs under the same names, so that a keyword call moves
    from one to the other: ``MaxUnpool``'s first input was ``x`` where ``max_unpool2d``'s is ``values``
    (``MaxUnpool()(values=v, indices=i, output_size=s)`` raised "unexpected keyword argument")."""
    import re

    import sparse_ops as so

    pairs = 0
    for name in so.__all__:
        cls = getattr(so, name)
        if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
            continue
        # the function a module wraps is the first one its docstring names ("Module form of :func:`...`")
        found = re.search(r":func:`~?(?:sparse_ops\.)?(\w+)`", cls.__doc__ or "")
        if found is None:
            continue
        function = getattr(so, found.group(1))
        inputs = list(inspect.signature(cls.forward).parameters)[1:]
        assert set(inputs) <= set(inspect.signature(function).parameters), (name, inputs)
        pairs += 1
    assert pairs >= 6  # every module with a function (SuperpixelClassifier has none)
    values, indices, _ = so.max_pool2d_with_indices(torch.arange(16.0).view(1, 1, 4, 4))
    by_keyword = so.MaxUnpool()(values=values, indices=indices, output_size=(4, 4))
    assert torch.equal(by_keyword, so.max_unpool2d(values=values, indices=indices, output_size=(4, 4)))
