"""``torch.export`` of every public ``sparse_ops`` module (``validate=False``): the exported program gives the
eager values bitwise, also after a save/load round trip and a second export; value checks, sizes read from
the ids and the numpy connectivity step are refused with an error that says what to do.

The deployment recipe these tests pin down is the one of ``docs/deployment.rst``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import torch
from torch import Tensor, nn
from torch.export import Dim

import sparse_ops as so

B, C, H, W, CELL, N_S = 2, 5, 16, 16, 4, 10


def _inputs(b: int = B) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(b)
    return {
        "x": torch.randn(b, C, H, W, generator=g),
        "coarse": torch.randn(b, C, H // 2, W // 2, generator=g),
        "ids": torch.randint(0, N_S, (b, H, W), generator=g),
        "assoc": torch.softmax(torch.randn(b, 9, H, W, generator=g), dim=1),
        "labels": torch.randint(0, 3, (b, H, W), generator=g),
        "mask": torch.rand(b, H, W, generator=g) > 0.3,
        "pooled": torch.randn(b, N_S, C, generator=g),
        # 2 superpixels of about 2048 pixels: several lanes and extra accumulators per superpixel
        "x_large": torch.randn(b, C, 64, 64, generator=g) * 100 + 1000,
        "ids_large": torch.randint(0, 2, (b, 64, 64), generator=g),
    }


class _Unpool(nn.Module):
    """``superpixel_unpool`` (a function only) as a module."""

    def forward(self, pooled: Tensor, superpixels: Tensor) -> Tensor:
        return so.superpixel_unpool(pooled, superpixels, validate=False)


class _Hard(nn.Module):
    """``hard_superpixels`` and an assignment built from its ids, as a deployed model runs them."""

    def forward(self, logits: Tensor, assoc: Tensor) -> Tensor:
        ids = so.hard_superpixels(assoc, CELL, validate=False)
        n = so.num_grid_cells(assoc.shape[-2], assoc.shape[-1], CELL)
        return so.SuperpixelAssignment(ids, n, validate=False).uniformize(logits)


class _SegNet(nn.Module):
    """A SegNet stage: pool with indices, scale, unpool to the recorded size."""

    def __init__(self) -> None:
        super().__init__()
        self.pool, self.unpool = so.MaxPoolWithIndices(2, validate=False), so.MaxUnpool(validate=False)

    def forward(self, x: Tensor) -> Tensor:
        p = self.pool(x)
        out: Tensor = self.unpool(p.values * 2, p)
        return out


class Export(NamedTuple):
    """A module and how to call it (positional inputs by name or as ints, keyword inputs by name)."""

    module: Callable[[], nn.Module]
    args: tuple[str | int, ...]
    kwargs: tuple[str, ...] = ()

    def call(self, data: dict[str, Tensor]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        args = tuple(data[a] if isinstance(a, str) else a for a in self.args)
        return args, {k: data[k] for k in self.kwargs}


#: One entry per public module (and per reduce / option that takes another code path).
CASES: dict[str, Export] = {
    "SuperpixelUniformize": Export(lambda: so.SuperpixelUniformize(validate=False), ("x", "ids", N_S)),
    "SuperpixelUniformize-mask": Export(
        lambda: so.SuperpixelUniformize(validate=False), ("x", "ids", N_S), ("mask",)
    ),
    "SuperpixelUniformize-sparse": Export(
        lambda: so.SuperpixelUniformize(backend="sparse", validate=False), ("x", "ids", N_S)
    ),
    "SuperpixelUniformize-large": Export(
        lambda: so.SuperpixelUniformize(validate=False), ("x_large", "ids_large", 2)
    ),
    "SuperpixelPool-mean": Export(lambda: so.SuperpixelPool(validate=False), ("x", "ids", N_S)),
    "SuperpixelPool-sum": Export(lambda: so.SuperpixelPool(reduce="sum", validate=False), ("x", "ids", N_S)),
    "SuperpixelPool-max": Export(lambda: so.SuperpixelPool(reduce="max", validate=False), ("x", "ids", N_S)),
    "SuperpixelPool-bilinear": Export(
        lambda: so.SuperpixelPool(upsample="bilinear", validate=False), ("coarse", "ids", N_S)
    ),
    "superpixel_unpool": Export(_Unpool, ("pooled", "ids")),
    "SuperpixelClassifier": Export(
        lambda: so.SuperpixelClassifier(C, 3, validate=False), ("coarse", "ids", N_S)
    ),
    "SoftUniformize": Export(lambda: so.SoftUniformize(CELL, validate=False), ("x", "assoc")),
    "MaxPoolWithIndices": Export(lambda: so.MaxPoolWithIndices(2, validate=False), ("x",)),
    "MaxPoolWithIndices+MaxUnpool": Export(_SegNet, ("x",)),
    "SpixelLoss": Export(lambda: so.SpixelLoss(CELL, num_classes=3, validate=False), ("assoc", "labels")),
    "SpixelLoss-features": Export(lambda: so.SpixelLoss(CELL, validate=False), ("assoc", "x")),
    "hard_superpixels+SuperpixelAssignment": Export(_Hard, ("x", "assoc")),
}


def _tensors(out: Any) -> list[Tensor]:
    return [out] if isinstance(out, Tensor) else [t for t in out if isinstance(t, Tensor)]


def _assert_same(got: Any, expected: Any) -> None:
    got_t, exp_t = _tensors(got), _tensors(expected)
    assert len(got_t) == len(exp_t) > 0
    for g, e in zip(got_t, exp_t, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        assert torch.equal(g, e)


def _export(case: Export, *, dynamic_batch: bool = False, strict: bool = False) -> tuple[Any, nn.Module]:
    module = case.module().eval()
    args, kwargs = case.call(_inputs())
    dynamic: Any = None
    if dynamic_batch:
        batch = Dim("batch", min=1, max=64)
        spec = [{0: batch} if isinstance(a, Tensor) else None for a in args]
        dynamic = {
            **dict(zip(_arg_names(module, len(args)), spec, strict=True)),
            **{k: {0: batch} for k in kwargs},
        }
    return torch.export.export(module, args, kwargs, dynamic_shapes=dynamic, strict=strict), module


def _arg_names(module: nn.Module, count: int) -> list[str]:
    import inspect

    return list(inspect.signature(module.forward).parameters)[:count]


def test_every_public_module_is_exported() -> None:
    """A new module of ``sparse_ops.__all__`` gets a case here (the list is not silently incomplete)."""
    public = {
        n for n in so.__all__ if isinstance(getattr(so, n), type) and issubclass(getattr(so, n), nn.Module)
    }
    covered = {part for name in CASES for part in name.split("-")[0].split("+")}
    assert public <= covered, f"no export case for {sorted(public - covered)}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_matches_eager(name: str) -> None:
    """Non-strict export (the mode torch recommends) of the module gives its eager outputs bitwise."""
    program, module = _export(CASES[name])
    args, kwargs = CASES[name].call(_inputs())
    got, expected = program.module()(*args, **kwargs), module(*args, **kwargs)
    if name.endswith("-sparse"):  # no sparse tensors in an exported graph: the scatter kernels, same maps
        torch.testing.assert_close(got, expected)
        return
    _assert_same(got, expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_export_with_a_dynamic_batch(name: str) -> None:
    """With the batch dimension dynamic, one program serves other batch sizes (the accumulator layout is built
    for the whole batch at once while exporting: slicing it into blocks specialized the batch size)."""
    program, module = _export(CASES[name], dynamic_batch=True)
    for b in (1, 3):
        args, kwargs = CASES[name].call(_inputs(b))
        _assert_same(program.module()(*args, **kwargs), module(*args, **kwargs))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "name", ["SuperpixelUniformize-mask", "SuperpixelPool-max", "SuperpixelPool-bilinear", "SoftUniformize"]
)
def test_export_in_half_precision(name: str, dtype: torch.dtype) -> None:
    """A model converted with ``.half()`` / ``.to(torch.bfloat16)`` feeds half features: eager values."""
    case = CASES[name]
    data = {k: v.to(dtype) if v.is_floating_point() else v for k, v in _inputs().items()}
    module = case.module().eval()
    args, kwargs = case.call(data)
    program = torch.export.export(module, args, kwargs)
    _assert_same(program.module()(*args, **kwargs), module(*args, **kwargs))
    assert program.module()(*args, **kwargs).dtype == dtype


@pytest.mark.parametrize("name", ["SuperpixelUniformize", "SuperpixelPool-max", "SoftUniformize"])
def test_strict_export_matches_eager(name: str) -> None:
    program, module = _export(CASES[name], strict=True)
    args, kwargs = CASES[name].call(_inputs())
    _assert_same(program.module()(*args, **kwargs), module(*args, **kwargs))


def test_saved_program_and_a_second_export_give_the_same_values() -> None:
    """``torch.export.save`` / ``load`` round trip, and export of the exported program's ``.module()``."""
    case = CASES["SuperpixelUniformize-mask"]
    program, module = _export(case)
    args, kwargs = case.call(_inputs())
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer)
    again = torch.export.export(program.module(), args, kwargs)
    expected = module(*args, **kwargs)
    _assert_same(loaded.module()(*args, **kwargs), expected)
    _assert_same(again.module()(*args, **kwargs), expected)


def test_export_under_no_grad() -> None:
    case = CASES["SuperpixelPool-mean"]
    with torch.no_grad():
        program, module = _export(case)
    args, kwargs = case.call(_inputs())
    _assert_same(program.module()(*args, **kwargs), module(*args, **kwargs))


@pytest.mark.parametrize("name", ["SuperpixelUniformize-large", "SuperpixelPool-mean", "SpixelLoss"])
def test_export_on_a_device_without_float64(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """With ``has_float64`` answering ``False`` (MPS) the float64 steps' copies to the host and back trace
    into the program (a dynamic batch included), which gives the float64 path's values bitwise."""
    from sparse_ops import _float64

    copies: list[Tensor] = []
    to_host = _float64.to_host
    with monkeypatch.context() as patch:
        patch.setattr(_float64, "has_float64", lambda device: False)
        patch.setattr(_float64, "to_host", lambda t: copies.append(t) or to_host(t))
        program, module = _export(CASES[name], dynamic_batch=True)
    assert copies  # the host path was traced
    for b in (2, 3):
        args, kwargs = CASES[name].call(_inputs(b))
        _assert_same(program.module()(*args, **kwargs), module(*args, **kwargs))


class _ChannelsLastHead(nn.Module):
    """A 1x1 conv (parameters that require grad) whose channels-last output is uniformized."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, C, 1)

    def forward(self, x: Tensor, superpixels: Tensor) -> Tensor:
        return so.uniformize(self.conv(x), superpixels, N_S, validate=False)


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_export_of_channels_last_features_that_require_grad(grad: bool) -> None:
    """The CPU's channels-last path writes with ``out=``, which export refuses inside the Function; exporting
    takes the other path (the same values)."""
    module = _ChannelsLastHead().to(memory_format=torch.channels_last).eval()
    data = _inputs()
    x = data["x"].contiguous(memory_format=torch.channels_last)
    with torch.set_grad_enabled(grad):
        program = torch.export.export(module, (x, data["ids"]))
    _assert_same(program.module()(x, data["ids"]), module(x, data["ids"]))


class _Fn(nn.Module):
    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Tensor) -> Any:
        return self.fn(*args)


_REFUSED: dict[str, tuple[Callable[..., Any], tuple[str, ...], str]] = {
    "uniformize validate": (
        lambda x, ids: so.uniformize(x, ids, N_S),
        ("x", "ids"),
        "validate=True checks the ids of superpixels by reading them .*export with validate=False",
    ),
    "pool validate": (
        lambda x, ids: so.superpixel_pool(x, ids, N_S),
        ("x", "ids"),
        "validate=True checks the ids of superpixels",
    ),
    "unpool validate": (
        so.superpixel_unpool,
        ("pooled", "ids"),
        "validate=True checks the ids of superpixels",
    ),
    "soft validate": (
        lambda x, q: so.soft_uniformize(x, q, CELL),
        ("x", "assoc"),
        "validate=True checks the values of assoc",
    ),
    "max_unpool2d validate": (
        lambda x: so.max_unpool2d(*so.max_pool2d_with_indices(x, 2)),
        ("x",),
        "validate=True checks the range of indices",
    ),
    "hard_superpixels validate": (
        lambda q: so.hard_superpixels(q, CELL),
        ("assoc",),
        "validate=True checks assoc for NaN",
    ),
    "spixel_loss validate": (
        lambda q, t: so.spixel_loss(q, t, CELL, num_classes=3)[0],
        ("assoc", "labels"),
        "validate=True checks the values of assoc",
    ),
    "num_superpixels None": (
        lambda x, ids: so.uniformize(x, ids, validate=False),
        ("x", "ids"),
        r"num_superpixels=None \(N_s = max id \+ 1\) reads a size from tensor values.*pass an int "
        r"num_superpixels.*num_grid_cells",
    ),
    "num_superpixels Tensor": (
        lambda x, ids: so.superpixel_pool(x, ids, ids.new_full((B,), N_S), validate=False),
        ("x", "ids"),
        r"num_superpixels=a Tensor \(N_s = its maximum\) reads a size from tensor values",
    ),
    "num_superpixels uint64 Tensor": (  # its values were read for the int64 range before the refusal
        lambda x, ids: so.superpixel_pool(x, ids, torch.full((B,), N_S, dtype=torch.uint64), validate=False),
        ("x", "ids"),
        r"num_superpixels=a Tensor \(N_s = its maximum\) reads a size from tensor values",
    ),
    "num_superpixels 0-dim Tensor": (
        lambda x, ids: so.uniformize(x, ids, torch.tensor(N_S), validate=False),
        ("x", "ids"),
        r"num_superpixels=a 0-dim Tensor reads a size from its value.*pass an int num_superpixels",
    ),
    "num_classes None": (
        lambda q, t: so.spixel_loss(q, t, CELL, validate=False)[0],
        ("assoc", "labels"),
        "num_classes=None infers the class count .*pass num_classes",
    ),
    "connectivity": (
        lambda q: so.hard_superpixels(q, CELL, connectivity=True, validate=False),
        ("assoc",),
        "connectivity=True relabels the ids with numpy on the host.*on the exported program's output",
    ),
    "enforce_connectivity": (  # before: "RuntimeError: .numpy() is not supported for tensor subclasses"
        lambda ids: so.enforce_connectivity(ids)[0],
        ("ids",),
        "enforce_connectivity relabels the ids with numpy on the host.*on the exported program's output",
    ),
}


@pytest.mark.parametrize("name", sorted(_REFUSED))
def test_export_refuses_what_reads_values_with_a_clear_error(name: str) -> None:
    """A value check, a size read from the ids or the numpy post-process says what to do (PyTorch's own error
    is a data-dependent guard deep in the tracer); eager calls are unaffected."""
    fn, names, message = _REFUSED[name]
    data = _inputs()
    args = tuple(data[n] for n in names)
    fn(*args)  # runs eagerly
    with pytest.raises(ValueError, match=message):
        torch.export.export(_Fn(fn), args)


def test_torch_compile_still_runs_the_value_checks() -> None:
    """The refusal is for export only: a compiled op with ``validate=True`` still checks (graph break)."""
    data = _inputs()
    compiled = torch.compile(lambda x, ids: so.uniformize(x, ids, N_S), backend="aot_eager")
    with pytest.raises(ValueError, match="ids must be < num_superpixels"):
        compiled(data["x"], data["ids"] + N_S)


def test_a_dynamic_image_size_is_guarded_not_silently_wrong() -> None:
    """The documented limitation: the hard ops' accumulator layout depends on the pixel count, so a program
    exported with a dynamic height and width fails on another pixel count (a guard), never returning values
    of another layout. If this starts passing, the "Deployment" page's limitation can go."""
    module = so.SuperpixelUniformize(validate=False)
    data = _inputs()
    height, width = Dim("height", min=2, max=1024), Dim("width", min=2, max=1024)
    program = torch.export.export(
        module,
        (data["x"], data["ids"], N_S),
        dynamic_shapes=({2: height, 3: width}, {1: height, 2: width}, None),
    )
    _assert_same(program.module()(data["x"], data["ids"], N_S), module(data["x"], data["ids"], N_S))
    x, ids = torch.randn(B, C, 64, 64), torch.randint(0, N_S, (B, 64, 64))
    with pytest.raises(Exception, match="Guard failed"):  # AssertionError or RuntimeError across releases
        program.module()(x, ids, N_S)


def test_soft_ops_refuse_a_dynamic_image_size() -> None:
    """The soft ops build their blocks from the image size: export says it was specialized."""
    data = _inputs()
    height, width = Dim("height", min=8, max=1024), Dim("width", min=8, max=1024)
    with pytest.raises(Exception, match="specialized"):
        torch.export.export(
            so.SoftUniformize(CELL, validate=False),
            (data["x"], data["assoc"]),
            dynamic_shapes=({2: height, 3: width}, {2: height, 3: width}),
        )
