"""TransparentLinear / TransparentConv1x1 against the float64 target map, within the rounding bound.

The specification: at initialization ``stack(x)`` is the target map ``x T^T + t`` up to the rounding error
of evaluating the stored layers in their dtype (``_reference.bound``, the textbook worst case, computed in
float64 from the stored parameters), for any widths, depths, activations, slopes, targets and input ranges.
Tighter statistical figures (the paper's Table 3 at its sizes, and the sizes users build) are pinned
separately.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from transparent_init import (
    TransparentConv1x1,
    TransparentLinear,
    build_transparent_stack,
    init_rate,
    max_abs_error,
    recovery_rate,
    selection_weight,
    transparent_init_,
)
from transparent_init._affine import MIN_ABS_FRACTION

from ._reference import check, uniform

ACTS = [None, "relu", "leaky_relu"]
HALF = [torch.float16, torch.bfloat16]


# ---------------------------------------------------------------- properties over random stacks


def _power_of_10(e: float) -> float:
    return 10.0**e


@st.composite
def stacks(draw: st.DrawFn, dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)) -> dict:
    in_f = draw(st.integers(1, 12))
    depth = draw(st.integers(2, 5))
    hidden = [in_f + draw(st.integers(0, 8)) for _ in range(depth - 1)]
    act = draw(st.sampled_from(ACTS))
    return {
        "in_f": in_f,
        "hidden": hidden,
        "act": act,
        # 0: LeakyReLU(0) is a ReLU; then the usual range, and the tiny and large slopes the library accepts
        "slope": draw(st.one_of(st.just(0.0), st.floats(0.01, 4.0), st.floats(-8.0, 4.0).map(_power_of_10))),
        "bias": draw(st.booleans()),
        "dtype": draw(st.sampled_from(dtypes)),
        "conv": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "magnitude": 10.0 ** draw(st.one_of(st.integers(-3, 3), st.integers(-30, 30))),  # and extreme ranges
        "offset": draw(st.sampled_from([0.0, 1.0, -100.0, 1e6])),
        "batch": draw(st.sampled_from([1, 5, 17])),
    }


def _make(cfg: dict, out_f: int | None = None, t_w=None, t_b=None) -> TransparentLinear | TransparentConv1x1:
    cls = TransparentConv1x1 if cfg["conv"] else TransparentLinear
    return cls(
        cfg["in_f"],
        cfg["hidden"],
        out_f,
        activation=cfg["act"],
        negative_slope=cfg["slope"] if cfg["act"] == "leaky_relu" else None,
        bias=cfg["bias"],
        target_weight=t_w,
        target_bias=t_b,
        generator=cfg["seed"],
        dtype=cfg["dtype"],
    )


def _input(cfg: dict, offset: float | None = None) -> torch.Tensor:
    shape = (cfg["batch"], cfg["in_f"], 2, 3) if cfg["conv"] else (cfg["batch"], cfg["in_f"])
    off = cfg["offset"] if offset is None else offset
    return uniform(shape, cfg["magnitude"], cfg["seed"] % 9973, cfg["dtype"], offset=off)


@given(stacks())
def test_identity_within_rounding_bound(cfg: dict) -> None:
    layer = _make(cfg)
    check(layer, _input(cfg))


@given(stacks(), st.integers(1, 12), st.integers(-2, 2), st.sampled_from([1.0, 1.0, 1e-5, 1e-20, 0.0]))
def test_target_map_within_rounding_bound(cfg: dict, out_f: int, log_scale: int, weight: float) -> None:
    """Also targets whose weight is tiny or zero beside their bias (a constant map ``y = t``): the float64
    solve's error is relative to the whole target, bias included, and the input multiplies it."""
    g = torch.Generator().manual_seed(cfg["seed"])
    t_w = torch.randn(out_f, cfg["in_f"], generator=g, dtype=torch.float64) * 10.0**log_scale * weight
    t_b = torch.randn(out_f, generator=g, dtype=torch.float64) * 10.0**log_scale if cfg["bias"] else None
    layer = _make(cfg, out_f, t_w, t_b)
    assert (layer.out_channels if cfg["conv"] else layer.out_features) == out_f
    check(layer, _input(cfg), t_w, t_b)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("weight", [0.0, 1e-5])
def test_a_float64_target_of_a_tiny_weight_beside_its_bias_within_the_bound(
    act: str | None, weight: float
) -> None:
    """``y = t`` (and ``y = 1e-5 x T^T + t``) in float64 on inputs of size 1e4: the last layer's weight is
    zero (tiny) but the solve leaves entries of a few epsilons of ``|t|`` there, which the input multiplies.
    The bound's solve slack was relative to ``|x| |T|^T + 1 + |t|`` row by row, which these stacks exceeded
    11x (an audit, 2026-12-06); it is relative to the target column's largest entry times ``sum |x| + 1``."""
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        t_w = weight * torch.randn(8, 8, generator=g, dtype=torch.float64)
        t_b = torch.randn(8, generator=g, dtype=torch.float64)
        stack = TransparentLinear(
            8, [8], activation=act, target_weight=t_w, target_bias=t_b, generator=seed, dtype=torch.float64
        )
        check(stack, uniform((17, 8), 1e4, seed, torch.float64), t_w, t_b)


@given(stacks(dtypes=tuple(HALF)))
def test_half_precision_within_rounding_bound(cfg: dict) -> None:
    """float16 / bfloat16 stacks: the same claim with the half unit roundoff (inputs kept below overflow: a
    LeakyReLU's negative half is the slope times the input, so slope times range stays at most 400). Slopes
    stop at 100: from about 1e3 the next layer's weights, divided by 1 + slope, fall below float16's smallest
    normal number, which the constructor may refuse (a documented ValueError; 1 of 1000 draws at 1e3-1e4,
    none of 6000 at 10-100)."""
    cfg["offset"] = 0.0
    cfg["slope"] = min(cfg["slope"], 100.0)
    slope = cfg["slope"] if cfg["act"] == "leaky_relu" else 0.0
    cfg["magnitude"] = min(cfg["magnitude"], 100.0, 400.0 / max(1.0, slope))
    layer = _make(cfg)
    assert all(p.dtype == cfg["dtype"] and bool(p.isfinite().all()) for p in layer.parameters())
    check(layer, _input(cfg))


def test_the_bound_leaves_little_room_at_the_smallest_stacks() -> None:
    """The transparent-init page: the bound is a ceiling, and the smallest stacks come within 2x of it, over
    inputs of the property tests' space (400 stacks of 2 inputs and 2 or 3 hidden units). How close depends on
    the CPU's float32 products: the worst was 0.77 of the bound on the AMD EPYC VM (seed 187, 2 -> [2]) and
    0.54 on the Intel Xeon VM (seed 104, 2 -> [3]), where seed 187 gives 0.39; one pinned case of 0.77 failed
    there. Before the page's figures, it said 0.45 at most."""
    worst = 0.0
    for seed in range(200):
        for hidden in ([2], [3]):
            cfg = {
                "in_f": 2,
                "hidden": hidden,
                "act": None,
                "slope": 0.0,
                "bias": False,
                "dtype": torch.float32,
            }
            cfg |= {"conv": False, "seed": seed, "magnitude": 1e-3, "offset": 1.0, "batch": 17}
            worst = max(worst, check(_make(cfg), _input(cfg)))  # (check asserts every error <= the bound)
    assert 0.5 <= worst <= 1.0


# ---------------------------------------------------------------- figures (tight, at the sizes that matter)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("conv", [False, True])
def test_paper_table3_size(seed: int, conv: bool) -> None:
    """42 -> [64, 64] -> 42, ReLU, float32 inputs in [-10, 10]: max error <= 3e-5 (measured 6.7e-6 median,
    paper 6.6e-5) and every output within 1e-4."""
    layer = (TransparentConv1x1 if conv else TransparentLinear)(42, [64, 64], generator=seed)
    x = uniform((2, 42, 32, 32) if conv else (4096, 42), 10.0, 100 + seed)
    assert max_abs_error(layer, x) <= 3e-5
    assert recovery_rate(layer, x, 1e-4) == 1.0


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("width", [42, 256])
def test_error_linear_in_range_up_to_1000(act: str | None, width: int) -> None:
    """max |y - x| / r for r = 1 .. 1000 stays at the float32 matmul floor.

    Measured (3 seeds, 2048 rows): width 42 0.67-1.2e-6, 256 1.2-2.0e-6, 1024 1.5-2.3e-6; three chained
    random orthogonal float32 matmuls give 0.83e-6 / 1.6e-6 / 2.0e-6 at the same widths.
    """
    layer = TransparentLinear(width, [width, width], activation=act, generator=1)
    allowed = 2e-6 if width == 42 else 4e-6
    for r in (1.0, 10.0, 100.0, 1000.0):
        x = uniform((1024, width), r, 5)
        assert max_abs_error(layer, x) <= allowed * r, r


@pytest.mark.parametrize("act", ACTS)
def test_without_bias_the_error_is_relative_from_1e_minus_30_to_1e38(act: str | None) -> None:
    """The "Extreme inputs" list of the transparent-init page: without biases nothing has a fixed size, so the
    float32 error scales with the input (measured 5-7e-7 of r) until the hidden sums leave the range."""
    layer = TransparentLinear(42, [64, 64], activation=act, generator=0, bias=False)
    for r in (1e-30, 1e-10, 1.0, 1e20, 1e38):
        x = uniform((256, 42), r, 1)
        assert max_abs_error(layer, x) <= 2e-6 * r, r


@pytest.mark.parametrize("act", ACTS)
def test_float64_relative_error(act: str | None) -> None:
    """The transparent-init page: "In float64 the stack reproduces its input to ~1e-14 relative" (measured
    1.9-2.8e-15 of r over seeds 0-2 and the three activations; this allowed 1e-12, 100 times the page)."""
    layer = TransparentLinear(42, [64, 64], activation=act, generator=0, dtype=torch.float64)
    x = uniform((1024, 42), 1000.0, 1, torch.float64)
    assert max_abs_error(layer, x) <= 1e-14 * 1000.0


@pytest.mark.parametrize("depth", [2, 5])
@pytest.mark.parametrize("act", ACTS)
def test_init_rate_dense(depth: int, act: str | None) -> None:
    """The paper's "init rate" (share of parameters with |w| > 1e-4) is 99.9 %; ours is at least that."""
    layer = TransparentLinear(42, [64] * (depth - 1), activation=act, generator=depth)
    assert init_rate(layer) >= 0.999


def test_init_rate_of_a_wide_stack_is_set_by_its_last_layer() -> None:
    """The transparent-init page: the hidden draws are pushed away from zero, the last layer (the exact
    solution, entries of scale 1 / sqrt(h)) is not, so at h = 1024 about 0.26 % of its entries are within 1e-4
    of zero and the init rate is 99.87 %, below the 99.9 % of the paper's widths."""
    layer = TransparentLinear(1024, [1024], generator=0)
    first, last = (m for m in layer.layers if isinstance(m, nn.Linear))
    assert init_rate(first) == 1.0
    assert 0.996 <= init_rate(last) <= 0.998
    assert 0.998 <= init_rate(layer) < 0.999


def test_hidden_draws_are_scaled_isometries_pushed_away_from_zero() -> None:
    """Hidden layer ``l`` is a semi-orthogonal ``A_l`` of entry scale ``1 / sqrt(h_l)``: after a LeakyReLU the
    real weight holds ``A_l / (1 + slope)`` (the read-back gain), so ``(1 + slope) W`` is the isometry; every
    hidden weight and bias is at least ``MIN_ABS_FRACTION / sqrt(h_l)`` in magnitude."""
    slope, h = 1.0, 256
    layer = TransparentLinear(4, [h, h], activation="leaky_relu", negative_slope=slope, generator=0)
    first, second = layer.layers[0], layer.layers[2]
    logical = (1 + slope) * second.weight.detach().double()[:h, :h]  # [A, -A] / g -> A
    sv = torch.linalg.svdvals(logical)
    assert float((sv - 1).abs().max()) < 0.05  # orthogonal up to the ~1 % pushed-away entries
    floor = MIN_ABS_FRACTION / h**0.5
    for weight, bias in ((first.weight, first.bias), ((1 + slope) * second.weight, second.bias)):
        assert float(weight.detach().abs().min()) >= floor * (1 - 1e-6)
        assert float(bias.detach().abs().min()) >= floor * (1 - 1e-6)


# ---------------------------------------------------------------- structure


@pytest.mark.parametrize("act,mod", [(None, None), ("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU)])
def test_layers_are_plain_and_doubled(act: str | None, mod: type | None) -> None:
    layer = TransparentLinear(
        3,
        [4, 5],
        2,
        activation=act,
        negative_slope=0.3 if act == "leaky_relu" else None,
        target_weight=torch.ones(2, 3),
        generator=0,
    )
    m = 1 if act is None else 2
    assert list(layer.children()) == [layer.layers]
    lins = [x for x in layer.layers if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in lins] == [(3, 4 * m), (4 * m, 5 * m), (5 * m, 2)]
    acts = [x for x in layer.layers if not isinstance(x, nn.Linear)]
    assert [type(a) for a in acts] == ([] if mod is None else [mod, mod])
    if act == "leaky_relu":
        assert all(a.negative_slope == 0.3 for a in acts)
    assert layer.in_features == 3 and layer.hidden_features == (4, 5) and layer.out_features == 2


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


@pytest.mark.parametrize("cls", [TransparentLinear, TransparentConv1x1])
def test_shape_and_activation_attributes_are_read_only(cls) -> None:
    """The layers were built for the widths, the activation and the slope: assigning another value would
    change what the module reports but not what it computes, so it is refused."""
    stack = cls(3, [4], activation="leaky_relu", negative_slope=0.5, generator=0)
    assert (stack.activation, stack.negative_slope) == ("leaky_relu", 0.5)
    width = "in_features" if cls is TransparentLinear else "in_channels"
    for name in ("activation", "negative_slope", width):
        with pytest.raises(AttributeError):
            setattr(stack, name, None)
    assert (stack.activation, stack.negative_slope) == ("leaky_relu", 0.5)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", None])
@pytest.mark.parametrize("cls", [TransparentLinear, TransparentConv1x1])
def test_a_stacks_own_attributes_rebuild_its_configuration(cls: type, activation: str | None) -> None:
    """``negative_slope`` gives 0.0 for a ReLU and 1.0 without an activation, and the constructor refused
    those with a "drop negative_slope" error: a stack rebuilt from its own attributes failed but for the
    LeakyReLU. The activation's own slope is accepted now; any other is still refused."""
    kind = "features" if cls is TransparentLinear else "channels"
    m = cls(3, [4, 5], 3, activation, **({"negative_slope": 0.25} if activation == "leaky_relu" else {}))
    widths = [getattr(m, f"{part}_{kind}") for part in ("in", "hidden", "out")]
    again = cls(*widths, m.activation, m.negative_slope, generator=0)
    assert again.extra_repr() == m.extra_repr() and again.negative_slope == m.negative_slope
    if activation != "leaky_relu":
        own = m.negative_slope
        with pytest.raises(
            ValueError, match=rf"with activation={activation!r} \(whose slope is {own}\): drop "
        ):
            cls(*widths, activation, 0.5)


def test_extra_repr_names_the_slope_and_bias_only_where_they_apply() -> None:
    """The stack's own line (``extra_repr``, not the child layers' ``bias=False``) shows ``negative_slope``
    only for a LeakyReLU and ``bias=False`` only for a stack without biases."""
    assert TransparentLinear(3, [4], generator=0).extra_repr() == (
        "in_features=3, hidden_features=[4], out_features=3, activation='relu'"
    )
    assert TransparentConv1x1(3, [4], activation=None, bias=False, generator=0).extra_repr() == (
        "in_channels=3, hidden_channels=[4], out_channels=3, activation=None, bias=False"
    )
    leaky = TransparentLinear(3, [4], activation="leaky_relu", negative_slope=0.5, generator=0)
    assert leaky.extra_repr().endswith("activation='leaky_relu', negative_slope=0.5")


def test_the_target_map_is_shown_by_the_repr_and_readable() -> None:
    """An identity stack and a channel-swapping one of the same shape printed the same line, and the map a
    stack was built for (and ``reset_parameters`` redraws towards) had no public name: the repr now says
    ``target=custom`` for a given target, and ``target_weight`` / ``target_bias`` give float64 copies."""
    from transparent_init import selection_weight

    identity = TransparentLinear(2, [4], generator=0)
    swap = TransparentLinear(
        2, [4], target_weight=selection_weight(2, [1, 0]), target_bias=torch.tensor([0.5, 0.0]), generator=0
    )
    assert repr(identity) != repr(swap) and swap.extra_repr().endswith(", target=custom")
    assert "target" not in identity.extra_repr()
    assert (
        torch.equal(identity.target_weight, torch.eye(2, dtype=torch.float64))
        and identity.target_bias is None
    )
    assert torch.equal(swap.target_weight, torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
    assert torch.equal(swap.target_bias, torch.tensor([0.5, 0.0], dtype=torch.float64))
    assert swap.target_weight.dtype == swap.target_bias.dtype == torch.float64  # (equal compares values only)
    swap.target_weight.zero_()  # a copy: the stack's map is unchanged
    swap.reset_parameters(generator=1)
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(swap.double()(x), x.flip(1) + torch.tensor([0.5, 0.0], dtype=torch.float64))
    tenth = torch.tensor([[0.1, 0.0], [0.0, 1.0]], dtype=torch.float64)  # kept in float64 (not float32-exact)
    scaled = TransparentLinear(2, [4], target_weight=tenth, generator=0)
    scaled.target_weight.zero_()
    assert torch.equal(scaled.target_weight, tenth) and scaled.extra_repr().endswith(", target=custom")
    bias_only = TransparentLinear(2, [4], target_bias=torch.tensor([0.5, 0.0]), generator=0)
    assert bias_only.extra_repr().endswith(", target=custom")  # the identity plus a bias: another map


def test_the_default_negative_slope_is_nn_leaky_relus() -> None:
    """``negative_slope=None`` is documented as 0.01, ``nn.LeakyReLU``'s default: in the attribute, in every
    LeakyReLU of the stack and in the repr, for the classes and for build_transparent_stack."""
    assert nn.LeakyReLU().negative_slope == 0.01
    for stack in (
        TransparentLinear(3, [4, 4], activation="leaky_relu", generator=0),
        TransparentConv1x1(3, [4, 4], activation="leaky_relu", generator=0),
    ):
        assert stack.negative_slope == 0.01 and "negative_slope=0.01" in stack.extra_repr()
        acts = [m for m in stack.layers if isinstance(m, nn.LeakyReLU)]
        assert len(acts) == 2 and all(a.negative_slope == 0.01 for a in acts)
    seq = build_transparent_stack(3, [4], activation="leaky_relu", generator=0)
    assert seq[1].negative_slope == 0.01


@pytest.mark.parametrize("cls", [TransparentLinear, TransparentConv1x1])
@pytest.mark.parametrize("act", ["relu", "leaky_relu", None])
def test_negative_slope_is_the_activations_slope_for_negative_inputs(cls, act) -> None:
    """``negative_slope`` reads what the stack's activation does to a negative input: a ReLU's 0.0 and the
    identity's 1.0 without an activation (it read LeakyReLU's default 0.01 for both), a LeakyReLU's slope."""
    stack = cls(3, [4], activation=act, generator=0)
    acts = [m for m in stack.layers if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert len(acts) == (0 if act is None else 1)
    minus_one = torch.tensor([-1.0])
    out = acts[0](minus_one) if acts else minus_one
    assert stack.negative_slope == {"relu": 0.0, "leaky_relu": 0.01, None: 1.0}[act]
    assert -out.item() == pytest.approx(stack.negative_slope, abs=0.0, rel=1e-7)  # 0.01 in float32


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


def test_reset_parameters_keeps_a_copy_of_the_target() -> None:
    """The target is copied at construction: in-place changes of the caller's tensor (float64 CPU, which
    the conversion would otherwise alias) do not move the map that reset_parameters() redraws towards."""
    target = torch.tensor([[2.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    bias = torch.tensor([0.5, -0.25], dtype=torch.float64)
    f64 = torch.float64
    layer = TransparentLinear(2, [4], target_weight=target, target_bias=bias, generator=0, dtype=f64)
    expected = (target.clone(), bias.clone())
    target.mul_(3)
    bias.zero_()
    layer.reset_parameters(generator=1)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ expected[0].T + expected[1])


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
    t_w.mul_(100.0)  # the layer keeps its own copy of the target
    layer.reset_parameters(generator=1)
    assert not torch.equal(before[0], layer.layers[0].weight)
    check(layer, uniform((10, 4), 10.0, 0), t_w / 100.0)
    layer.reset_parameters(generator=0)
    assert all(torch.equal(p, q) for p, q in zip(before, layer.parameters(), strict=True))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_reset_parameters_follows_dtype_changes(dtype: torch.dtype) -> None:
    layer = TransparentLinear(5, [6, 7], activation="leaky_relu", generator=0).to(dtype)
    layer.reset_parameters(generator=3)
    assert all(p.dtype == dtype for p in layer.parameters())
    check(layer, uniform((20, 5), 10.0, 0, dtype))


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
def test_torchscript_keeps_python_properties_out() -> None:
    layer = TransparentConv1x1(3, [4], activation="leaky_relu", generator=0)
    scripted = torch.jit.script(layer)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(scripted(x), layer(x))


def test_torch_compile_fullgraph() -> None:
    layer = TransparentLinear(4, [6], generator=0)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = torch.randn(3, 4)
    torch.testing.assert_close(compiled(x), layer(x), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- devices


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *HALF], ids=str)
@pytest.mark.parametrize("conv", [False, True])
def test_device_and_dtype(
    device: torch.device, dtype: torch.dtype, conv: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TF32 convolutions (cuDNN's default on Ampere and newer) round inputs to 10 bits: exactness needs it off
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cls = TransparentConv1x1 if conv else TransparentLinear
    layer = cls(3, [5, 4], activation="leaky_relu", generator=0, device=device, dtype=dtype)
    assert all(p.device.type == device.type and p.dtype == dtype for p in layer.parameters())
    x = uniform((2, 3, 4, 4) if conv else (7, 3), 10.0, 0, dtype, device=device)
    check(layer, x)


def test_generator_on_device(device: torch.device) -> None:
    g = torch.Generator(device=device).manual_seed(0)
    layer = TransparentLinear(3, [4], generator=g, device=device)
    check(layer, uniform((5, 3), 1.0, 0, device=device))


def test_construction_runs_on_the_cpu_whatever_the_default_device() -> None:
    """The float64 construction (draws, chain, solve) happens on the CPU, not on the default device: under
    ``with torch.device("meta")`` (standing in for a default CUDA device, where the solver's LAPACK driver
    does not exist) CPU stacks still come out exact, and stacks left to the default device land there."""
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    with torch.device("meta"):
        layer = TransparentLinear(4, [8, 6], activation="leaky_relu", generator=0, device="cpu")
        seq = nn.Sequential(nn.Linear(4, 8, device="cpu"), nn.ReLU(), nn.Linear(8, 4, device="cpu"))
        transparent_init_(seq, generator=0)
        on_default = TransparentLinear(4, [8], generator=0)
    assert max_abs_error(layer, x) <= 1e-6 and max_abs_error(seq, x) <= 1e-6
    assert on_default.layers[0].weight.device.type == "meta"


def test_a_meta_target_builds_on_meta_by_shape_and_is_refused_elsewhere() -> None:
    """A target built under ``with torch.device("meta")`` holds no values: the deferred-init pattern (build on
    meta, materialize later) builds by shape, which needs none; layers that hold values cannot be computed
    from it, and the error names the argument, its device and the fix (it was PyTorch's "Cannot copy out of
    meta tensor")."""
    with torch.device("meta"):
        fuse = TransparentConv1x1(4, [4], out_channels=2, target_weight=selection_weight(4, [0, 1]))
    assert [tuple(p.shape) for p in fuse.parameters()] == [(8, 4, 1, 1), (8,), (2, 8, 1, 1), (2,)]
    assert all(p.is_meta for p in fuse.parameters())
    fuse.reset_parameters(generator=0)  # still on meta: by shape again
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).to("meta")
    t_w, t_b = torch.ones(2, 4, device="meta"), torch.zeros(2, device="meta")
    assert transparent_init_(seq, target_weight=t_w, target_bias=t_b, generator=0) is seq
    with pytest.raises(ValueError, match=r"target_weight must have shape \[2, 4\], got \[4, 2\]"):
        transparent_init_(seq, target_weight=t_w.T)  # shapes are still checked
    fix = r"\(shapes only, no values\), got device meta, .* create {} outside the meta context"
    cpu = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(
        ValueError, match=r"target_weight is on the meta device " + fix.format("target_weight")
    ):
        transparent_init_(cpu, target_weight=t_w)
    with pytest.raises(ValueError, match=r"target_bias is on the meta device " + fix.format("target_bias")):
        transparent_init_(cpu, target_weight=torch.ones(2, 4), target_bias=t_b)
    with pytest.raises(ValueError, match=r"target_weight is on the meta device"):
        TransparentLinear(4, [4], 2, target_weight=t_w, device="cpu")
    fuse.to_empty(device="cpu")  # materialized: the kept target has no values to redraw towards
    with pytest.raises(  # it said "create target_weight outside the meta context": no argument takes it here
        ValueError,
        match=r"TransparentConv1x1 was built with target_weight on the meta device .* now hold values "
        r"\(device cpu\), so reset_parameters has no map to redraw towards: build it with target_weight made "
        r"outside the meta context \(e\.g\. selection_weight\(\.\.\., device='cpu'\)",
    ):
        fuse.reset_parameters(generator=0)
    with torch.device("meta"):  # what the message says: a target with values, kept for reset_parameters
        fuse = TransparentConv1x1(
            4, [4], out_channels=2, target_weight=selection_weight(4, [2, 3], device="cpu")
        )
    fuse.to_empty(device="cpu")
    fuse.reset_parameters(generator=0)
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fuse(x), x[:, 2:], atol=1e-5, rtol=0)


def test_a_stack_partly_on_meta_is_refused() -> None:
    """Layers some on meta and some holding values were accepted: the values were written, the meta layers
    stayed on meta, and the stack was left half-initialized."""
    seq = nn.Sequential(nn.Linear(4, 8, device="meta"), nn.ReLU(), nn.Linear(8, 4))
    before = seq[2].weight.detach().clone()
    with pytest.raises(
        ValueError,
        match=r"layer 2 \(Linear\) has its weight on device cpu but layer 0 has its weight on meta",
    ):
        transparent_init_(seq, generator=0)
    assert torch.equal(seq[2].weight, before) and seq[0].weight.is_meta
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))
    seq[2].bias = nn.Parameter(torch.empty(4, device="meta"))
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\) has its bias on device meta but layer 0 has"):
        transparent_init_(seq, generator=0)


def test_a_stack_on_meta_computes_nothing_whatever_the_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by fuzzing the API: "built on the meta device, a stack computes no values" held for a target on
    meta only; the identity default and CPU targets ran the whole float64 draw and solve (3.7 s at width
    1024, a float64 identity of 512 MB at 8192, an allocation error for a width of 2**40) and wrote the
    result into meta tensors, i.e. nowhere. Materialized, the stack is initialized as usual."""
    import transparent_init.inplace as inplace

    def computed(*args: object, **kwargs: object) -> None:
        raise AssertionError("the layers are on meta: nothing should be computed")

    real = inplace.transparent_parameters
    monkeypatch.setattr(inplace, "transparent_parameters", computed)
    seq = nn.Sequential(nn.Linear(4, 8, device="meta"), nn.ReLU(), nn.Linear(8, 4, device="meta"))
    rng = torch.get_rng_state()
    ident = TransparentLinear(4, [8], device="meta")
    TransparentConv1x1(4, [8], 2, target_weight=torch.ones(2, 4), target_bias=torch.ones(2), device="meta")
    transparent_init_(seq)
    ident.reset_parameters()
    assert torch.equal(torch.get_rng_state(), rng)  # no draw either
    monkeypatch.setattr(inplace, "transparent_parameters", real)
    ident.to_empty(device="cpu")
    ident.reset_parameters(generator=0)
    check(ident, uniform((5, 4), 1.0, 0))


def test_leaky_relu_with_slope_0_is_a_relu() -> None:
    """``LeakyReLU(0.0)`` (a slope left at 0 in a config) is accepted, in a stack and in a user's Sequential,
    and gives the same exact identity as ReLU."""
    x = uniform((64, 5), 10.0, 3)
    layer = TransparentLinear(5, [7, 6], activation="leaky_relu", negative_slope=0.0, generator=0)
    seq = nn.Sequential(nn.Linear(5, 12), nn.LeakyReLU(0.0), nn.Linear(12, 5))
    transparent_init_(seq, generator=0)
    assert max_abs_error(layer, x) <= 1e-5 and max_abs_error(seq, x) <= 1e-5


def test_identity_placeholders_are_skipped() -> None:
    """``nn.Identity`` anywhere in a user's Sequential (a layer switched off in a config) is no map: skipped,
    the stack is exact; two activations around one still count as in a row."""
    x = uniform((64, 3), 10.0, 4)
    seq = nn.Sequential(
        nn.Identity(),
        nn.Linear(3, 8),
        nn.Identity(),
        nn.ReLU(),
        nn.Identity(),
        nn.Linear(8, 3),
        nn.Identity(),
    )
    transparent_init_(seq, generator=0)
    assert max_abs_error(seq, x) <= 1e-5
    with pytest.raises(ValueError, match="two activations in a row"):
        transparent_init_(
            nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Identity(), nn.ReLU(), nn.Linear(8, 3))
        )


@pytest.mark.parametrize(
    "dropout",
    [nn.Dropout(0.5), nn.Dropout1d(0.5), nn.AlphaDropout(0.5), nn.FeatureAlphaDropout(0.5)],
    ids=lambda m: type(m).__name__,
)
def test_dropout_is_skipped_and_exact_in_eval_mode(dropout: nn.Module) -> None:
    """A head with dropout (a user's MLP) is initialized around it: exact in eval mode; in training mode the
    dropout still drops units (the skipped module is kept, not removed)."""
    x = uniform((64, 3), 10.0, 4)
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), dropout, nn.Linear(8, 3))
    transparent_init_(seq, generator=0).eval()
    assert max_abs_error(seq, x) <= 1e-5
    torch.manual_seed(0)
    assert max_abs_error(seq.train(), x) > 1e-2


def test_the_kept_target_is_float32_when_that_is_exact() -> None:
    """The copy kept for reset_parameters() is float32 when float32 holds the target exactly (half the size
    in a pickled module, the same redraw), float64 otherwise."""
    exact = TransparentLinear(
        4, [6], 2, target_weight=torch.tensor([[0.0, 1, 0, 0], [0, 0, 0.5, 0]]), generator=0
    )
    assert exact._target_weight is not None and exact._target_weight.dtype == torch.float32
    before = [p.detach().clone() for p in exact.parameters()]
    exact.reset_parameters(generator=0)
    assert all(torch.equal(p, q) for p, q in zip(before, exact.parameters(), strict=True))
    fine = torch.tensor([[1.0 + 2.0**-40]], dtype=torch.float64)  # not a float32 value
    wide = TransparentLinear(1, [2], target_weight=fine, generator=0, dtype=torch.float64)
    assert wide._target_weight is not None and torch.equal(wide._target_weight, fine)
    # exact in float32 but subnormal there (it would read as 0 under torch.set_flush_denormal(True))
    tiny = torch.tensor([[2.0**-140]], dtype=torch.float64)
    kept = TransparentLinear(1, [2], target_weight=tiny, generator=0, dtype=torch.float64)._target_weight
    assert kept is not None and kept.dtype == torch.float64


@pytest.mark.parametrize("dims", [1, 3])
def test_pointwise_conv1d_and_conv3d_stacks(dims: int) -> None:
    """1x1 ``nn.Conv1d`` / ``nn.Conv3d`` layers are the same per-position affine maps as 1x1 ``nn.Conv2d``."""
    conv = nn.Conv1d if dims == 1 else nn.Conv3d
    seq = nn.Sequential(conv(3, 8, 1), nn.LeakyReLU(0.1), conv(8, 10, 1), nn.ReLU(), conv(10, 3, 1))
    transparent_init_(seq, generator=0)
    x = torch.empty((2, 3) + (5,) * dims).uniform_(-10, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((seq(x) - x).abs().max()) <= 1e-5


def test_dilation_of_a_1x1_conv_is_irrelevant_and_accepted() -> None:
    """With kernel size 1 a conv's dilation has no effect (one tap, nothing to space out): such layers were
    refused as "stride (1,) / dilation (3,)"; they are the same pointwise map, initialized exactly."""
    seq = nn.Sequential(
        nn.Conv2d(4, 8, 1, dilation=3), nn.ReLU(), nn.Conv2d(8, 4, 1, dilation=(2, 1), padding="same")
    )
    transparent_init_(seq, generator=0)
    check(seq, uniform((2, 4, 5, 6), 10.0, 0))
    seq2 = nn.Sequential(nn.Conv2d(3, 6, 1, dilation=(2, 5)), nn.LeakyReLU(0.1), nn.Conv2d(6, 3, 1))
    t_w = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    transparent_init_(seq2, target_weight=t_w, generator=0)
    check(seq2, uniform((2, 3, 4, 5), 10.0, 1), t_w)
    seq1 = nn.Sequential(nn.Conv1d(4, 8, 1, dilation=3), nn.ReLU(), nn.Conv1d(8, 4, 1))
    transparent_init_(seq1, generator=0)
    x = uniform((2, 4, 7), 10.0, 2)
    assert max_abs_error(seq1, x) <= 1e-5
    with pytest.raises(
        ValueError, match=r"layer 0 \(Conv1d\) is not supported: stride \(2,\) \(only stride 1"
    ):
        transparent_init_(nn.Sequential(nn.Conv1d(4, 8, 1, stride=2, dilation=3), nn.Conv1d(8, 4, 1)))


# ---------------------------------------------------------------- argument checks


class _OnlyTheFirstWidth(Sequence[int]):
    """A billion hidden widths, the first of them 1; reading any other fails the test (they were all read,
    and converted, before the first was compared with in_features)."""

    def __len__(self) -> int:
        return 10**9

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[int]: ...

    def __getitem__(self, index: int | slice) -> int | Sequence[int]:
        assert index == 0, f"hidden width {index} read after width 0 was refused"
        return 1


@pytest.mark.parametrize("cls,name", [(TransparentLinear, "features"), (TransparentConv1x1, "channels")])
def test_hidden_widths_are_checked_as_read_and_iterators_are_refused(cls: type, name: str) -> None:
    """hidden widths were all read and converted before the first comparison with the input width:
    ``itertools.count(1)`` hung, ``range(1, 3 * 10**6)`` took 1.6 s to be refused. Each width is checked as
    it is read now, and an iterator or a generator (endless or used up once read) is refused unread."""
    narrow = rf"hidden_{name}\[{{}}\] \(hidden layer {{}}\) has width 1 < in_{name} = 2"
    with pytest.raises(ValueError, match=narrow.format(0, 0)):
        cls(2, _OnlyTheFirstWidth())
    with pytest.raises(ValueError, match=narrow.format(0, 0)):
        cls(2, range(1, 3 * 10**6))
    with pytest.raises(ValueError, match=narrow.format(1, 1)):  # the first bad width, whatever comes after
        cls(2, [4, 1, "x"])

    def endless() -> Iterator[int]:
        for n in itertools.count():
            assert n < 100, "an endless generator of widths was read on"
            yield 4

    for widths in (endless(), iter([4, 6]), (w for w in [4, 6]), map(int, ["4"]), itertools.count(4)):
        with pytest.raises(
            TypeError,
            match=rf"hidden_{name} must be a sequence of ints, got {type(widths).__name__} .*a list or tuple",
        ):
            cls(2, widths)
    assert next(widths) == 4  # not read
    # sequences, tensors and arrays are still widths
    for widths in ([4, 6], (4, 6), range(4, 7, 2), torch.tensor([4, 6]), np.array([4, 6])):
        assert cls(2, widths, generator=0).layers[0].weight.shape[0] == 8


@pytest.mark.parametrize("cls,name", [(TransparentLinear, "features"), (TransparentConv1x1, "channels")])
def test_widths_beyond_int64_are_named(cls: type, name: str) -> None:
    """Widths beyond int64, or whose ReLU doubling is, raised PyTorch's "Overflow when unpacking long long"
    (a ValueError, or a TypeError with a C++ stack) naming no argument: each is refused by name now."""
    with pytest.raises(ValueError, match=rf"in_{name} must be an int <= {2**63 - 1} \(.*\), got {2**63}"):
        cls(2**63, [2**63])
    with pytest.raises(ValueError, match=rf"out_{name} must be an int <= {2**63 - 1} \(.*\), got {2**63}"):
        cls(2, [4], 2**63)
    doubled = rf"hidden_{name}\[1\] must be an int <= {2**62 - 1} \(.*an activation doubles a hidden width"
    for act in ("relu", "leaky_relu", None):  # one bound whatever the activation
        with pytest.raises(ValueError, match=doubled + rf".*, got {2**62}"):
            cls(2, [4, 2**62], activation=act)
    # the largest widths pass (shapes only, on meta: 2**62 - 1 float16 entries are 2**63 - 2 bytes)
    wide = cls(1, [2**62 - 1], activation=None, device="meta", dtype=torch.float16)
    assert wide.layers[0].weight.shape[0] == 2**62 - 1
    from transparent_init._checks import check_width  # (new: imported here, after the checks above)

    assert check_width(2**63 - 1, "w") == 2**63 - 1
    assert check_width(2**62 - 1, "w", doubled=True) == 2**62 - 1


def test_selection_weight_in_features_beyond_int64_is_named() -> None:
    """``selection_weight(2**63, [0])`` raised PyTorch's "Overflow when unpacking long long" (a TypeError)."""
    with pytest.raises(ValueError, match=rf"in_features must be an int <= {2**63 - 1} \(.*\), got {2**63}"):
        selection_weight(2**63, [0])
    assert selection_weight(2**60, [0], device="meta").shape == (1, 2**60)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_layer_no_tensor_can_hold_is_named_before_it_is_built(device: str) -> None:
    """Widths within int64 whose weight exceeds 2**63 - 1 bytes got PyTorch's "Storage size calculation
    overflowed" (or "numel: integer multiplication overflow"), naming no argument; the layer and the
    arguments that give its shape are named now, and a large stack a tensor can hold still builds on meta."""
    cases = [
        (
            lambda: TransparentLinear(2**62 - 1, [2**62 - 1], device=device),
            r"layer 0 \(in_features and hidden_features\[0\]\)",
        ),
        (
            lambda: TransparentLinear(2**40, [2**40], device=device),
            r"layer 0 \(in_features and hidden_features\[0\]\) would be a 2199023255552 x 1099511627776",
        ),
        (
            lambda: TransparentConv1x1(4, [4, 2**60], activation=None, device=device),
            r"layer 1 \(hidden_channels\[0\] and hidden_channels\[1\]\)",
        ),
        (
            lambda: TransparentLinear(1, [2**60], out_features=4, activation=None, device=device),
            r"layer 1 \(hidden_features\[0\] and out_features\)",
        ),
        (
            lambda: selection_weight(2**63 - 1, [0], device=device),
            r"the selection \(indices by in_features\) would be a 1 x 9223372036854775807",
        ),
    ]
    for build, match in cases:
        with pytest.raises(ValueError, match=rf"{match}.*more than a tensor can hold"):
            build()
    if device == "meta":
        big = TransparentLinear(2**20, [2**20], activation=None, device="meta")
        assert big.layers[0].weight.shape == (2**20, 2**20)


def test_the_target_properties_are_copies_of_a_float64_target() -> None:
    """``target_weight`` / ``target_bias`` are float64 *copies*: writing into what they return leaves the
    kept target (towards which ``reset_parameters`` redraws) as it was, also for a target kept in float64
    (0.1 is not exact in float32), where ``.double()`` alone returns the kept tensor itself (mutants: the
    ``.clone()`` dropped)."""
    t_w = 0.1 * torch.eye(3, dtype=torch.float64)
    t_b = torch.full((3,), 0.1, dtype=torch.float64)
    stack = TransparentLinear(3, [4], target_weight=t_w, target_bias=t_b, generator=0)
    stack.target_weight.add_(1.0)
    stack.target_bias.add_(1.0)
    assert torch.equal(stack.target_weight, t_w) and torch.equal(stack.target_bias, t_b)
    stack.reset_parameters(generator=1)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(stack(x).double(), x.double() @ t_w.T + t_b, atol=1e-5, rtol=0)


def test_reset_parameters_of_a_stack_partly_materialized_names_the_meta_layers() -> None:
    """A stack built on meta (target on meta too) whose layers are only partly materialized: the error is the
    one about layers partly on meta ("materialize the meta ones first"), not the one for a stack whose layers
    all hold values (mutant: ``not all(p.is_meta ...)`` in reset_parameters' check)."""
    with torch.device("meta"):
        stack = TransparentLinear(3, [4], target_weight=torch.eye(3), generator=0)
    stack.layers[0].to_empty(device="cpu")
    with pytest.raises(ValueError, match=r"must be all on the meta device .* or all hold values"):
        stack.reset_parameters()
