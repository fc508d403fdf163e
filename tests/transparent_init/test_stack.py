"""TransparentLinear / TransparentConv1x1: recovery, density, reproducibility, serialization, compilers."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from transparent_init import TransparentConv1x1, TransparentLinear, init_rate, max_abs_error, recovery_rate

ACTS = [None, "relu", "leaky_relu"]


def _uniform(
    shape: tuple[int, ...], mag: float, seed: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1).mul(mag).to(dtype)


# ---------------------------------------------------------------- headline (the numbers)


@pytest.mark.parametrize("seed", range(3))
def test_headline_float32_recovery(seed: int) -> None:
    """42 -> [64, 64] -> 42, ReLU, float32 inputs in [-10, 10]: max error <= 3e-5 and 100 % within 1e-4."""
    layer = TransparentLinear(42, [64, 64], activation="relu", generator=seed)
    x = _uniform((4096, 42), 10.0, 100 + seed)
    assert max_abs_error(layer, x) <= 3e-5
    assert recovery_rate(layer, x, 1e-4) == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_headline_conv_float32_recovery(seed: int) -> None:
    layer = TransparentConv1x1(42, [64, 64], activation="relu", generator=seed)
    x = _uniform((2, 42, 32, 32), 10.0, 200 + seed)
    assert max_abs_error(layer, x) <= 3e-5
    assert recovery_rate(layer, x, 1e-4) == 1.0


@pytest.mark.parametrize("act", ACTS)
def test_headline_float64_relative(act: str | None) -> None:
    layer = TransparentLinear(42, [64, 64], activation=act, generator=0, dtype=torch.float64)
    x = _uniform((1024, 42), 10.0, 1, torch.float64)
    assert max_abs_error(layer, x) <= 1e-10 * 10.0


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("seed", range(3))
def test_headline_init_rate(act: str | None, seed: int) -> None:
    assert init_rate(TransparentLinear(42, [64, 64], activation=act, generator=seed)) >= 0.999


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
@pytest.mark.parametrize("act", ACTS)
def test_error_small_across_depths(depth: int, act: str | None) -> None:
    layer = TransparentLinear(42, [64] * (depth - 1), activation=act, generator=depth)
    x = _uniform((2048, 42), 10.0, depth)
    assert max_abs_error(layer, x) <= 3e-5
    assert init_rate(layer) >= 0.999


def test_error_grows_linearly_with_magnitude() -> None:
    layer = TransparentLinear(42, [64, 64], generator=0)
    errs = [max_abs_error(layer, _uniform((2048, 42), mag, 5)) for mag in (1.0, 10.0, 100.0, 1000.0)]
    for mag, e in zip((1.0, 10.0, 100.0, 1000.0), errs, strict=True):
        assert e <= 3e-6 * mag + 1e-6, (mag, e)


# ---------------------------------------------------------------- properties


@st.composite
def _configs(draw: st.DrawFn) -> dict:
    in_f = draw(st.integers(1, 10))
    depth = draw(st.integers(2, 5))
    hidden = [in_f + draw(st.integers(0, 8)) for _ in range(depth - 1)]
    act = draw(st.sampled_from(ACTS))
    slope = draw(st.sampled_from([0.01, 0.2, 1.0, 3.0]))
    mag = draw(st.sampled_from([1e-3, 1e-1, 1.0, 10.0, 1e3]))
    batch = draw(st.sampled_from([(1,), (5,), (2, 3), (2, 1, 3)]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    return {
        "in_f": in_f,
        "hidden": hidden,
        "act": act,
        "slope": slope,
        "mag": mag,
        "batch": batch,
        "dtype": dtype,
        "seed": draw(st.integers(0, 2**31 - 1)),
        "bias": draw(st.booleans()),
    }


def _bound(cfg: dict, scale: float = 1.0) -> float:
    """Error allowed: linear in the input magnitude (plus the unit-scale bias), growing with depth.

    Measured worst cases sit 3-8x below it. The float64 constant is larger: there the float64 solve's own
    rounding (SVD, ~cond * n * eps) is no longer hidden below the forward pass's.
    """
    eps = torch.finfo(cfg["dtype"]).eps
    depth = len(cfg["hidden"]) + 1
    const = 8.0 if cfg["dtype"] == torch.float32 else 64.0
    return const * eps * depth * scale * (cfg["mag"] + 1.0)


@settings(max_examples=60)
@given(_configs())
def test_identity_recovery_property(cfg: dict) -> None:
    layer = TransparentLinear(
        cfg["in_f"],
        cfg["hidden"],
        activation=cfg["act"],
        negative_slope=cfg["slope"],
        bias=cfg["bias"],
        generator=cfg["seed"],
        dtype=cfg["dtype"],
    )
    x = _uniform((*cfg["batch"], cfg["in_f"]), cfg["mag"], cfg["seed"] % 1000, cfg["dtype"])
    y = layer(x)
    assert y.dtype == cfg["dtype"] and y.shape == x.shape
    assert float((y - x).detach().abs().max()) <= _bound(cfg)


@settings(max_examples=40)
@given(_configs(), st.integers(1, 10))
def test_target_map_recovery_property(cfg: dict, out_f: int) -> None:
    g = torch.Generator().manual_seed(cfg["seed"])
    t_w = torch.randn(out_f, cfg["in_f"], generator=g, dtype=torch.float64)
    t_b = torch.randn(out_f, generator=g, dtype=torch.float64) if cfg["bias"] else None
    layer = TransparentLinear(
        cfg["in_f"],
        cfg["hidden"],
        out_f,
        activation=cfg["act"],
        negative_slope=cfg["slope"],
        bias=cfg["bias"],
        target_weight=t_w,
        target_bias=t_b,
        generator=g,
        dtype=cfg["dtype"],
    )
    assert layer.out_features == out_f
    x = _uniform((*cfg["batch"], cfg["in_f"]), cfg["mag"], 7, cfg["dtype"])
    ref = x.double() @ t_w.T + (0 if t_b is None else t_b)
    scale = 1.0 + float(t_w.abs().sum(1).max()) + (0 if t_b is None else float(t_b.abs().max()))
    assert float((layer(x).detach().double() - ref).abs().max()) <= _bound(cfg, scale)


@settings(max_examples=15)
@given(_configs())
def test_conv1x1_equals_linear_property(cfg: dict) -> None:
    kw = {
        "activation": cfg["act"],
        "negative_slope": cfg["slope"],
        "bias": cfg["bias"],
        "dtype": cfg["dtype"],
    }
    lin = TransparentLinear(cfg["in_f"], cfg["hidden"], generator=cfg["seed"], **kw)
    conv = TransparentConv1x1(cfg["in_f"], cfg["hidden"], generator=cfg["seed"], **kw)
    for ml, mc in zip(lin.layers, conv.layers, strict=True):
        if isinstance(ml, nn.Linear):
            assert torch.equal(ml.weight, mc.weight[:, :, 0, 0])
    x = _uniform((2, cfg["in_f"], 3, 4), cfg["mag"], 3, cfg["dtype"])
    y_lin = lin(x.movedim(1, -1)).movedim(-1, 1)
    torch.testing.assert_close(conv(x), y_lin, atol=_bound(cfg), rtol=0)


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize("act,mod", [(None, None), ("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU)])
def test_layers_are_plain_and_doubled(act: str | None, mod: type | None) -> None:
    layer = TransparentLinear(
        3, [4, 5], 2, activation=act, negative_slope=0.3, target_weight=torch.ones(2, 3), generator=0
    )
    m = 1 if act is None else 2
    lins = [x for x in layer.layers if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in lins] == [(3, 4 * m), (4 * m, 5 * m), (5 * m, 2)]
    acts = [x for x in layer.layers if not isinstance(x, nn.Linear)]
    assert len(acts) == (0 if act is None else 2)
    if mod is not None:
        assert all(type(a) is mod for a in acts)
    if act == "leaky_relu":
        assert all(a.negative_slope == 0.3 for a in acts)
    assert layer.in_features == 3 and layer.hidden_features == (4, 5) and layer.out_features == 2
    x = torch.randn(5, 3)
    assert torch.equal(layer(x), layer.layers(x))


def test_conv_properties_and_repr() -> None:
    conv = TransparentConv1x1(3, [4], activation="leaky_relu", negative_slope=0.5, bias=False, generator=0)
    assert conv.in_channels == 3 and conv.hidden_channels == (4,) and conv.out_channels == 3
    r = repr(conv)
    assert "in_channels=3, hidden_channels=[4], out_channels=3" in r and "negative_slope=0.5" in r
    assert "bias=False" in r and "Conv2d(3, 8, kernel_size=(1, 1)" in r
    assert all(
        isinstance(m, nn.Conv2d) and m.bias is None for m in conv.layers if not isinstance(m, nn.LeakyReLU)
    )
    assert "in_features=3, hidden_features=[4, 4], out_features=3, activation='relu'" in repr(
        TransparentLinear(3, [4, 4], generator=0)
    )


@pytest.mark.parametrize("act", ACTS)
def test_every_layer_gets_dense_gradient_at_step_0(act: str | None) -> None:
    layer = TransparentLinear(6, [8, 8, 8], activation=act, generator=0)
    x = torch.randn(256, 6, generator=torch.Generator().manual_seed(0))
    y = layer(x)
    ((y - torch.randn_like(y)) ** 2).mean().backward()
    for p in layer.parameters():
        assert p.grad is not None
        # every layer learns at step 0; a ReLU unit idle on the whole batch leaves its own row/column at 0
        assert float(p.grad.abs().max()) > 0
        assert float((p.grad != 0).double().mean()) >= 0.9


def test_reproducible_from_seed_and_generator() -> None:
    a = TransparentLinear(5, [7, 6], generator=123)
    b = TransparentLinear(5, [7, 6], generator=torch.Generator().manual_seed(123))
    c = TransparentLinear(5, [7, 6], generator=124)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)
    torch.manual_seed(0)
    d = TransparentLinear(5, [7, 6])
    torch.manual_seed(0)
    e = TransparentLinear(5, [7, 6])
    assert all(torch.equal(p, q) for p, q in zip(d.parameters(), e.parameters(), strict=True))


def test_reset_parameters_redraws_and_stays_transparent() -> None:
    t_w = torch.randn(2, 4)
    layer = TransparentLinear(4, [6], 2, target_weight=t_w, generator=0)
    before = [p.detach().clone() for p in layer.parameters()]
    layer.reset_parameters(generator=1)
    assert not torch.equal(before[0], layer.layers[0].weight)
    x = torch.randn(10, 4)
    torch.testing.assert_close(layer(x), x @ t_w.T, atol=1e-5, rtol=0)
    layer.reset_parameters(generator=0)
    assert all(torch.equal(p, q) for p, q in zip(before, layer.parameters(), strict=True))


def test_reset_parameters_follows_dtype_changes() -> None:
    layer = TransparentLinear(5, [6, 7], activation="leaky_relu", generator=0).double()
    layer.reset_parameters(generator=3)
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    x = torch.randn(20, 5, dtype=torch.float64) * 10
    assert float((layer(x) - x).detach().abs().max()) <= 1e-10 * 10


def test_no_bias_attribute_clash() -> None:
    """Generic code doing ``if m.bias is not None`` over ``modules()`` must only meet real layers' biases."""
    layer = TransparentLinear(3, [4], generator=0)
    assert not hasattr(layer, "bias")


def test_state_dict_round_trip() -> None:
    a = TransparentConv1x1(3, [4, 4], generator=0)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = TransparentConv1x1(3, [4, 4], generator=1)
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(a(x), b(x))
    # the same keys as the plain nn.Sequential holding the same layers
    assert list(a.state_dict()) == ["layers." + k for k in a.layers.state_dict()]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_torchscript_matches_eager() -> None:
    layer = TransparentConv1x1(3, [4], activation="leaky_relu", generator=0)
    scripted = torch.jit.script(layer)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(scripted(x), layer(x))


def test_torch_compile_matches_eager() -> None:
    layer = TransparentLinear(4, [6], generator=0)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 4)
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_torch_compile_inductor_matches_eager() -> None:
    """The default backend (generates C++ on CPU: ~30 s on the CI machines, hence slow)."""
    layer = TransparentConv1x1(3, [4], activation="leaky_relu", generator=0)
    compiled = torch.compile(layer)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-6, rtol=0)


def test_device_and_dtype(device: torch.device, dtype: torch.dtype) -> None:
    layer = TransparentConv1x1(3, [5, 4], generator=0, device=device, dtype=dtype)
    assert all(p.device.type == device.type and p.dtype == dtype for p in layer.parameters())
    x = torch.randn(2, 3, 4, 4, device=device, dtype=dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(layer(x), x, atol=tol, rtol=0)


def test_generator_on_device(device: torch.device) -> None:
    g = torch.Generator(device=device).manual_seed(0)
    layer = TransparentLinear(3, [4], generator=g, device=device)
    x = torch.randn(5, 3, device=device)
    torch.testing.assert_close(layer(x), x, atol=1e-5, rtol=0)


def test_gradcheck_float64() -> None:
    """No custom autograd here, but the stack must be differentiable like the plain layers it is."""
    layer = TransparentLinear(
        3, [4], activation="leaky_relu", negative_slope=0.2, generator=0, dtype=torch.float64
    )
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    assert torch.autograd.gradgradcheck(layer, (x,))
