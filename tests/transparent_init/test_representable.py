"""NaN is never hidden: a target the layers' dtype cannot represent raises, on every path writing weights."""

from __future__ import annotations

import re
import unittest.mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from transparent_init import (
    TransparentConv1x1,
    TransparentLinear,
    build_transparent_stack,
    random_uniform_init_,
    transparent_init_,
)
from transparent_init import _affine as af

from ._reference import bound, reported_magnitude, uniform

OVERFLOW = (
    r"cannot be stored in {dtype}: it needs entries up to [0-9.e+]+ in magnitude, above the largest finite"
)
UNDERFLOW = r"cannot realize the target map in {dtype}: .* fall below the smallest normal {dtype}"


FORWARD_OVERFLOW_MESSAGE = "at initialization the stack's sums in this layer reach"
BIAS_OVERFLOW = "the target map's output at x = 0 (its bias, up to"


def _eye(n: int, scale: float) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64) * scale


def _corners(n: int, r: float, dtype: torch.dtype) -> torch.Tensor:
    """Every input of ``{-r, 0, r}^n`` (``3^n`` rows): the corners of the box, where a linear map's outputs
    and the terms of its sums are largest, and the points between them."""
    grid = torch.cartesian_prod(*[torch.tensor([-r, 0.0, r], dtype=torch.float64)] * n)
    return grid.reshape(-1, n).to(dtype)


@pytest.mark.parametrize(
    "dtype,scale",
    [(torch.float16, 1e5), (torch.bfloat16, 1e39), (torch.float32, 1e39)],
    ids=["float16", "bfloat16", "float32"],
)
@pytest.mark.parametrize("cls,kind", [(TransparentLinear, "Linear"), (TransparentConv1x1, "Conv2d")])
def test_overflowing_target_weight_raises(dtype: torch.dtype, scale: float, cls: type, kind: str) -> None:
    with pytest.raises(ValueError, match=rf"^layer 4 \({kind}\) weight " + OVERFLOW.format(dtype=dtype)) as e:
        cls(4, [6, 6], dtype=dtype, target_weight=_eye(4, scale), generator=0)
    assert f"{torch.finfo(dtype).max:.3g}" in str(e.value)
    assert f"max |target_weight| = {scale:.3g}" in str(e.value)


def test_overflowing_target_bias_raises_and_names_it() -> None:
    with pytest.raises(ValueError, match=r"max \|target_bias\| = 1e\+06") as e:
        TransparentLinear(4, [6], dtype=torch.float16, target_bias=torch.full((4,), 1e6), generator=0)
    assert "torch.float16" in str(e.value) and "layer 2 (Linear)" in str(e.value)


@pytest.mark.parametrize("scale", [1e-9, 1e-6])
def test_underflowing_target_raises(scale: float) -> None:
    with pytest.raises(ValueError, match=r"^layer 2 \(Linear\) " + UNDERFLOW.format(dtype=torch.float16)):
        TransparentLinear(4, [6], dtype=torch.float16, target_weight=_eye(4, scale), generator=0)


def test_one_underflowing_output_raises() -> None:
    """Output 1 of ``diag(1, 1e-9)`` would be exactly 0 in float16: refused, naming that output."""
    t_w = torch.diag(torch.tensor([1.0, 1e-9], dtype=torch.float64))
    with pytest.raises(ValueError, match="misses output 1 by 1e-09"):
        TransparentLinear(2, [3], dtype=torch.float16, target_weight=t_w, generator=0)
    TransparentLinear(2, [3], dtype=torch.float32, target_weight=t_w, generator=0)  # representable there


@pytest.mark.parametrize("kind,scale,seed", [("randn", 3e-5, 0), ("eye", 5e-5, 1)])
def test_a_target_losing_a_few_bits_to_subnormals_is_accepted_within_the_slack(
    monkeypatch: pytest.MonkeyPatch, kind: str, scale: float, seed: int
) -> None:
    """A float16 last layer of entries ~1e-5 (subnormal) loses 1-3 bits: the stack misses the target by 2-3x
    the normal-range rounding bound ``u |P| |E|``. Accepted (``REALIZE_SLACK`` = 8), and the stack as stored
    computes the target within that slack."""
    seen: list[tuple[torch.Tensor, ...]] = []
    check = af.check_realized

    def spy(
        p: torch.Tensor,
        g: torch.Tensor,
        exact: torch.Tensor,
        stored: torch.Tensor,
        dtype: torch.dtype,
        name: str,
        weight_divisor: float = 1.0,
    ) -> None:
        seen.append((p, g, exact, stored))
        check(p, g, exact, stored, dtype, name, weight_divisor=weight_divisor)

    monkeypatch.setattr(af, "check_realized", spy)
    g64 = torch.Generator().manual_seed(seed)
    t_w = scale * (
        torch.eye(8, dtype=torch.float64) if kind == "eye" else torch.randn(8, 8, generator=g64).double()
    )
    net = TransparentLinear(8, [16], target_weight=t_w, generator=seed, dtype=torch.float16)
    ((p, g, exact, stored),) = seen
    bound = torch.finfo(torch.float16).eps / 2 * (p.abs() @ exact.abs())
    excess = ((p @ stored - g).abs() - (p @ exact - g).abs()) / bound
    assert 1.5 < float(excess.max()) <= af.REALIZE_SLACK  # beyond the normal-range bound, within the slack
    x = torch.cat([torch.eye(8), torch.zeros(1, 8)]).double()
    with torch.no_grad():
        y = net.double()(x)
    realized = torch.cat([y[:8] - y[8], y[8:]])  # [T^T; t] of the stored stack, in float64
    assert bool(((realized - g).abs() <= af.REALIZE_SLACK * bound + 1e-15).all())


def test_underflow_message_reports_the_stored_magnitudes() -> None:
    """Behind a LeakyReLU the last layer stores its solution divided by ``1 + slope``: the message says so
    (it reported entries of about 0.5 that "fall below" 6.1e-5; here the undivided ones, 7e-5, would not).
    A slope that also underflows the hidden layers is refused before, naming the slope (test_errors)."""
    with pytest.raises(ValueError, match=UNDERFLOW.format(dtype=torch.float16)) as e:
        TransparentLinear(
            8,
            [16, 16],
            activation="leaky_relu",
            negative_slope=10.0,
            dtype=torch.float16,
            target_weight=_eye(8, 1e-4),
            generator=0,
        )
    reported = reported_magnitude(str(e.value))
    assert 0 < reported < torch.finfo(torch.float16).tiny


@pytest.mark.parametrize(
    "dtype,scale",
    [(torch.float16, 3e4), (torch.bfloat16, 3e38), (torch.float32, 3e38), (torch.float64, 1e308)],
    ids=["float16", "bfloat16", "float32", "float64"],
)
@pytest.mark.parametrize("cls", [TransparentLinear, TransparentConv1x1])
def test_a_stack_whose_forward_overflows_where_the_target_does_not_raises(
    dtype: torch.dtype, scale: float, cls: type
) -> None:
    """Before: every parameter was finite and the last layer exact, but the stack's forward returned inf for
    ``x = 1`` (float32, 3e38 I: the target's output 3e38 is finite): the last layer's dense terms cancel, so
    its sums run beyond its outputs. Now refused, naming the layer, the bound and the dtype."""
    with pytest.raises(ValueError, match=r"^layer 2 \((Linear|Conv2d)\): " + FORWARD_OVERFLOW_MESSAGE) as e:
        cls(4, [8], dtype=dtype, target_weight=_eye(4, scale), generator=0)
    assert f"above the largest finite {dtype} ({torch.finfo(dtype).max:.3g})" in str(e.value)
    assert "for inputs with max |x| <= 1," in str(e.value)


def test_the_stacks_the_range_check_refused_did_overflow() -> None:
    """The refused float32 stack, built without the check, really returns inf for a unit input whose target
    output is finite; a target 30x smaller passes the check and stays finite at every corner of the box (the
    bound is a worst case, about 3.5x the target's largest output here: the check accepts up to ~9.7e37)."""
    with unittest.mock.patch.object(af, "check_forward_range"):
        unchecked = TransparentLinear(4, [8], dtype=torch.float32, target_weight=_eye(4, 3e38), generator=0)
    with torch.no_grad():
        assert not bool(unchecked(torch.ones(1, 4)).isfinite().all())
    smaller = TransparentLinear(4, [8], dtype=torch.float32, target_weight=_eye(4, 1e37), generator=0)
    with torch.no_grad():
        assert bool(smaller(_corners(4, 1.0, torch.float32)).isfinite().all())


def test_the_range_check_uses_the_radius_where_the_target_itself_stays_finite() -> None:
    """A target whose own outputs overflow float32 for unit inputs is checked on the smaller box where they do
    not (its radius), and the message names that box (no radius where its bias alone overflows)."""
    t_w = torch.full((2, 2), 2e38, dtype=torch.float64)  # row sums 4e38 > float32 max: radius 0.85
    r = af.unit_input_radius(t_w, None, torch.float32)
    assert r == pytest.approx(torch.finfo(torch.float32).max / 4e38)
    assert af.unit_input_radius(t_w / 100, None, torch.float32) == 1.0
    assert af.unit_input_radius(t_w, torch.full((2,), 4e38, dtype=torch.float64), torch.float32) is None
    with pytest.raises(ValueError, match=FORWARD_OVERFLOW_MESSAGE) as e:
        TransparentLinear(2, [4], dtype=torch.float32, target_weight=t_w, generator=0)
    assert f"for inputs with max |x| <= {r:.3g}," in str(e.value)
    layer = TransparentLinear(2, [4], dtype=torch.float32, target_weight=t_w / 100, generator=0)
    with torch.no_grad():
        assert bool(layer(_corners(2, 1.0, torch.float32)).isfinite().all())


def test_a_target_bias_beyond_the_dtype_is_refused() -> None:
    """Before: a bfloat16 stack towards a bias of -3.4e38 (above the largest bfloat16 in magnitude, with a
    last-layer bias that still fit) built, and returned -inf for every input."""
    t_b = torch.tensor([-3.4e38, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^layer 2 \(Linear\): " + re.escape(BIAS_OVERFLOW) + r" 3.4e\+38"):
        TransparentLinear(2, [4], dtype=torch.bfloat16, target_bias=t_b, generator=0)
    TransparentLinear(2, [4], dtype=torch.float64, target_bias=t_b, generator=0)  # in range there


TOP_DECADES = {torch.float16: (3.0, 5.0), torch.bfloat16: (35.0, 38.6), torch.float32: (35.0, 38.6)}


@given(
    st.sampled_from(sorted(TOP_DECADES, key=str)),
    st.floats(0.0, 1.0),
    st.integers(1, 5),
    st.lists(st.integers(0, 3), min_size=1, max_size=2),
    st.sampled_from([None, "relu", "leaky_relu"]),
    st.floats(0.0, 100.0),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_near_the_top_of_the_range_a_stack_raises_or_stays_finite(
    dtype: torch.dtype,
    where: float,
    n: int,
    extra: list[int],
    act: str | None,
    slope: float,
    with_bias: bool,
    seed: int,
) -> None:
    """Targets within a few decades of the dtype's maximum, any depth, activation and LeakyReLU slope (a
    slope above 1 makes ``|act(-z)|`` larger than ``|z|``): the stack either raises a named ValueError or its
    forward pass in its own dtype is finite at every point of ``{-r, 0, r}^n``."""
    low, high = TOP_DECADES[dtype]
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** (low + where * (high - low))
    t_w = torch.randn(n, n, generator=g, dtype=torch.float64) * scale
    t_b = torch.randn(n, generator=g, dtype=torch.float64) * scale if with_bias else None
    try:
        layer = TransparentLinear(
            n,
            [n + e for e in extra],
            activation=act,
            negative_slope=slope if act == "leaky_relu" else None,
            target_weight=t_w,
            target_bias=t_b,
            dtype=dtype,
            generator=seed,
        )
    except ValueError as e:
        assert str(dtype) in str(e)
        return
    r = af.unit_input_radius(t_w, t_b, dtype)
    assert r is not None
    with torch.no_grad():
        assert bool(layer(_corners(n, r, dtype)).isfinite().all())


LEAKY_OVERFLOW = r"at initialization the LeakyReLU after this layer \(negative_slope={slope}\) outputs up to"


def test_a_leaky_relu_whose_outputs_overflow_the_dtype_raises() -> None:
    """Before: a float16 stack with negative_slope=1.2e4 was accepted and returned inf / NaN at corners of the
    unit box (its sums are bounded, but ``act(-z) = -1.2e4 z`` itself passed 65504 for ``z > 5.5``, and ``z``
    reaches 7.0): the check bounded the terms ``|w| |act|`` (the next weights are divided by ``1 + slope``)
    and never the activation's own outputs. Now refused, naming the layer before it, the slope and the
    dtype; without the check the stack does overflow at the corners ``sign(W_1)``, where ``z`` is largest,
    and a slope the check accepts stays finite there."""
    kwargs = {"activation": "leaky_relu", "dtype": torch.float16, "generator": 0}
    with pytest.raises(
        ValueError, match=r"^layer 0 \(Linear\): " + LEAKY_OVERFLOW.format(slope="12000")
    ) as e:
        TransparentLinear(64, [64], negative_slope=1.2e4, **kwargs)
    assert "above the largest finite torch.float16 (6.55e+04)" in str(e.value)
    assert "use a smaller negative_slope, or keep the stack in a wider dtype such as float32" in str(e.value)
    with unittest.mock.patch.object(af, "check_forward_range"):
        unchecked = TransparentLinear(64, [64], negative_slope=1.2e4, **kwargs)
    with torch.no_grad():
        assert not bool(unchecked(unchecked.layers[0].weight.sign()).isfinite().all())
    layer = TransparentLinear(64, [64], negative_slope=8e3, **kwargs)
    random = (torch.rand(4096, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1).sign().half()
    with torch.no_grad():
        assert bool(layer(torch.cat([layer.layers[0].weight.sign(), random])).isfinite().all())


def test_inplace_refuses_a_leaky_relu_that_overflows_between_other_activations() -> None:
    """A float32 stack whose first LeakyReLU has slope 3e38 (a ReLU before the last layer, so the last
    layer's weights are not divided by it and stay normal) returned inf / NaN for 28 % of the unit box."""
    seq = nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(3e38), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    before = [p.detach().clone() for p in seq.parameters()]
    with pytest.raises(ValueError, match=r"^layer 0 \(Linear\): " + LEAKY_OVERFLOW.format(slope="3e\\+38")):
        transparent_init_(seq, generator=0)
    assert all(torch.equal(p, q) for p, q in zip(before, seq.parameters(), strict=True))
    seq[1].negative_slope = 1e38  # z stays below 2 here: finite at every corner
    transparent_init_(seq, generator=0)
    with torch.no_grad():
        assert bool(seq(_corners(4, 1.0, torch.float32)).isfinite().all())


def test_inplace_refuses_a_forward_that_overflows_and_writes_nothing() -> None:
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
    before = [p.detach().clone() for p in seq.parameters()]
    with pytest.raises(ValueError, match=r"^layer 2 \(Linear\): " + FORWARD_OVERFLOW_MESSAGE):
        transparent_init_(seq, target_weight=_eye(3, 3e38), generator=0)
    assert all(torch.equal(p, q) for p, q in zip(before, seq.parameters(), strict=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_inplace_is_atomic_on_error(dtype: torch.dtype) -> None:
    seq = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)
    before = [p.detach().clone() for p in seq.parameters()]
    with pytest.raises(ValueError, match=rf"layer 2 \(Linear\) weight cannot be stored in {dtype}"):
        transparent_init_(seq, target_weight=_eye(3, 1e39), generator=0)
    assert all(torch.equal(p, q) for p, q in zip(before, seq.parameters(), strict=True))


@pytest.mark.parametrize("explicit", [True, False], ids=["generator", "global_rng"])
def test_a_failed_initialization_leaves_the_generator_as_it_was(explicit: bool) -> None:
    """Before: the hidden layers were drawn, then the last layer failed its dtype check with the generator
    advanced, so a retry in float32 drew other weights than a first try in float32 would have."""
    with torch.random.fork_rng(devices=[]):  # the global RNG is restored for the other tests
        torch.manual_seed(5)
        g = torch.Generator().manual_seed(5) if explicit else None
        source = g if g is not None else torch.default_generator
        seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4)).half()  # draws: before the state
        state = source.get_state()
        with pytest.raises(ValueError, match=r"cannot be stored in torch\.float16"):
            TransparentLinear(4, [6, 6], dtype=torch.float16, target_weight=_eye(4, 1e5), generator=g)
        with pytest.raises(ValueError, match=r"cannot be stored in torch\.float16"):
            transparent_init_(seq, target_weight=_eye(4, 1e5), generator=g)
        assert torch.equal(source.get_state(), state)
        retry = TransparentLinear(4, [6, 6], target_weight=_eye(4, 1e5), generator=g)
        assert not torch.equal(source.get_state(), state)  # the successful call did draw
        source.set_state(state)
        first = TransparentLinear(4, [6, 6], target_weight=_eye(4, 1e5), generator=g)
    assert all(torch.equal(p, q) for p, q in zip(retry.parameters(), first.parameters(), strict=True))


def test_reset_parameters_after_half_raises() -> None:
    layer = TransparentLinear(4, [6], target_weight=_eye(4, 1e5), generator=0)  # fine in float32
    layer.half()  # PyTorch's own cast leaves inf in the last layer
    with pytest.raises(ValueError, match=r"layer 2 \(Linear\) weight cannot be stored in torch\.float16"):
        layer.reset_parameters(generator=0)


def test_mixed_dtypes_per_layer() -> None:
    """A float32 last layer holds what a float16 one cannot: only the last layer's dtype matters here."""
    seq = nn.Sequential(nn.Linear(3, 8).half(), nn.ReLU(), nn.Linear(8, 3))
    transparent_init_(seq, target_weight=_eye(3, 1e5), generator=0)
    assert seq[0].weight.dtype == torch.float16 and bool(seq[2].weight.isfinite().all())
    x = uniform((6, 3), 1.0, 0, torch.float64)
    torch.testing.assert_close(seq.double()(x), x * 1e5, rtol=1e-6, atol=0)  # the stored layers, exactly


def test_random_uniform_bound_beyond_dtype_raises() -> None:
    seq = build_transparent_stack(3, [4], generator=0).half()
    before = [p.detach().clone() for p in seq.parameters()]
    with pytest.raises(ValueError, match=r"bound = 4e\+04 is too large for torch.float16 \(layer '0'\)"):
        random_uniform_init_(seq, bound=4e4, generator=0)
    assert all(torch.equal(p, q) for p, q in zip(before, seq.parameters(), strict=True))
    random_uniform_init_(seq, bound=3e4, generator=0)
    assert all(bool(p.isfinite().all()) for p in seq.parameters())


#: Target scales (decades) that every case of the test below realizes, a decade or two inside each dtype's
#: range (all of them realized, by hand, 2026-12-04: float16 1e-4 to 1e3, bfloat16 and float32 1e-38 to
#: 1e37): a refusal there is a defect, not a limit of the dtype.
REALIZABLE_DECADES = {torch.float16: (-3, 3), torch.bfloat16: (-36, 36), torch.float32: (-36, 36)}


@given(
    st.sampled_from([torch.float16, torch.bfloat16, torch.float32]),
    st.integers(-45, 45) | st.floats(4.0, 5.0) | st.floats(36.0, 39.0),
    st.integers(1, 6),
    st.sampled_from([None, "relu", "leaky_relu"]),
    st.booleans(),
)
def test_raises_or_realizes_the_target(
    dtype: torch.dtype, log_scale: float, n: int, act: str | None, with_bias: bool
) -> None:
    """For any target scale (finely near the float16 and float32 maxima): either a clear ValueError (only
    outside ``REALIZABLE_DECADES``), or finite weights that realize the target and a forward pass in the
    stack's dtype that stays finite wherever the target's does."""
    g = torch.Generator().manual_seed(round(log_scale) + 100)
    t_w = torch.randn(n, n, generator=g, dtype=torch.float64) * 10.0**log_scale
    t_b = torch.randn(n, generator=g, dtype=torch.float64) * 10.0**log_scale if with_bias else None
    try:
        layer = TransparentLinear(
            n, [n + 2], activation=act, target_weight=t_w, target_bias=t_b, dtype=dtype, generator=0
        )
    except ValueError as e:
        low, high = REALIZABLE_DECADES[dtype]
        assert not low <= log_scale <= high, f"a target of scale 1e{log_scale:g} refused in {dtype}: {e}"
        assert str(dtype) in str(e) and f"layer {1 if act is None else 2} (Linear)" in str(e)
        assert any(
            m in str(e)
            for m in (
                "cannot be stored",
                "below the smallest normal",
                FORWARD_OVERFLOW_MESSAGE,
                BIAS_OVERFLOW,
            )
        )
        return
    assert all(bool(p.isfinite().all()) for p in layer.parameters())
    # and the stack as stored, in its own dtype, stays finite wherever the target map does for unit inputs
    r = af.unit_input_radius(t_w, t_b, dtype)
    assert r is not None  # (refused above)
    with torch.no_grad():
        assert bool(layer(_corners(n, r, dtype)).isfinite().all())
    # the stored layers evaluated exactly (float64) realize the target within the last layer's rounding
    x = uniform((9, n), 1.0, 0, dtype)
    b = bound(layer.layers, x, t_w, t_b)
    exact = layer.layers.double()(x.double()).detach()
    assert bool(((exact - b.target).abs() <= 8 * (b.last_rounding + b.solve) + b.forward).all())


def test_the_norm_bound_accepts_what_the_entrywise_bound_alone_refuses() -> None:
    """Mutation pass: ``check_forward_range`` takes the smaller of its entrywise and norm bounds, so that
    ``TransparentLinear(42, [64, 64])`` in float32 accepts identities scaled up to 4.2e37 (as documented);
    the entrywise bound alone refused this one."""
    stack = TransparentLinear(
        42, [64, 64], dtype=torch.float32, target_weight=4e37 * torch.eye(42), generator=0
    )
    x = torch.linspace(-1, 1, 42)
    with torch.no_grad():
        assert bool(torch.isfinite(stack(x)).all())


# check_forward_range: every term of its bound is needed (dropping the LeakyReLU gain of the entrywise sums,
# the bias of the norm bound, or a hidden offset accepted stacks that return inf inside the box)


def test_the_range_check_counts_the_leaky_relu_gain_of_the_sums() -> None:
    """A float32 LeakyReLU stack (slope 3) towards ``3e38 * I``: its last layer's sums reach beyond float32
    for inputs inside the box where the target's outputs are finite, and the check refuses it. Without the
    check the stack returns inf there (a bound without the gain ``g`` of the entrywise sums accepted it)."""
    kwargs = {
        "activation": "leaky_relu",
        "negative_slope": 3.0,
        "target_weight": 3e38 * torch.eye(2, dtype=torch.float64),
        "dtype": torch.float32,
        "generator": 0,
    }
    with pytest.raises(ValueError, match=r"at initialization the stack's sums in this layer reach"):
        TransparentLinear(2, [3], **kwargs)
    r = af.unit_input_radius(kwargs["target_weight"], None, torch.float32)
    assert r is not None
    with unittest.mock.patch.object(af, "check_forward_range"):
        unchecked = TransparentLinear(2, [3], **kwargs)
    x = _corners(2, r * (1 - 1e-6), torch.float32)
    assert bool((x.double() * 3e38).abs().max() < torch.finfo(torch.float32).max)
    with torch.no_grad():
        assert not bool(unchecked(x).isfinite().all())


def _two_layers(b0: float, a: float, b1: float | None) -> tuple[list, list]:
    """``x -> x I + (b0, b0) -> [a, a] . z + b1`` in float32 (no activation): the stored layers and the
    float64 prefix chains ``check_forward_range`` takes."""
    f32 = torch.float32
    w0, bias0 = torch.eye(2, dtype=f32), torch.full((2,), b0, dtype=f32)
    w1 = torch.full((1, 2), a, dtype=f32)
    bias1 = None if b1 is None else torch.full((1,), b1, dtype=f32)
    prefixes = af.prefix_chains([(w0.double(), bias0.double())], 2)
    return [(w0, bias0), (w1, bias1)], prefixes


def _check_two_layers(stored: list, prefixes: list) -> None:
    """``check_forward_range`` of :func:`_two_layers`' layers towards the zero map of 2 inputs (unit box)."""
    af.check_forward_range(
        stored,
        prefixes,
        [None],
        [0.0],
        torch.zeros(1, 2, dtype=torch.float64),
        None,
        [torch.float32, torch.float32],
        ["hidden", "last"],
    )


@pytest.mark.parametrize(
    "b0, a, b1",
    [
        (1e38, 2.0, None),  # the hidden offset |p_l| in z_l and ||p_l|| in zeta_l (mutants m37, m38)
        (0.0, 5e37, 3e38),  # the last bias |b| in the norm bound (mutant m36)
    ],
)
def test_check_forward_range_counts_every_offset(b0: float, a: float, b1: float | None) -> None:
    """``check_forward_range`` on two hand-made float32 layers whose sums reach 4e38 at ``x = (1, 1)``
    (inside the unit box of a zero target map): it must raise, and the layers do return inf there. Each
    offset of the documented bound is needed: without the hidden offset in ``z_l`` (or in ``zeta_l``, the
    norm bound used where the entrywise one fails), or without the bias in the norm bound, it accepted."""
    stored, prefixes = _two_layers(b0, a, b1)
    x = torch.ones(1, 2, dtype=torch.float32)
    (w0, bias0), (w1, bias1) = stored
    out = (x @ w0.T + bias0) @ w1.T + (0 if bias1 is None else bias1)
    assert not bool(out.isfinite().all())  # the layers overflow at x = (1, 1)
    with pytest.raises(ValueError, match=r"^last: at initialization the stack's sums in this layer reach"):
        _check_two_layers(stored, prefixes)


def test_check_forward_range_keeps_the_rounding_slack_of_the_sums() -> None:
    """The documented limit is the dtype's largest finite value *less the rounding of fan_in + 1
    additions* (``max / (1 + (fan_in + 1) eps)``): sums of 0.9999999 of the float32 maximum (2 terms) are
    within ``max`` but beyond that limit, and raise (mutant: ``limit = info.max`` accepted them)."""
    top = torch.finfo(torch.float32).max
    a = float(torch.tensor(top / 2 * (1 - 1e-7), dtype=torch.float32))
    stored, prefixes = _two_layers(0.0, a, None)
    limit = top / (1 + 3 * torch.finfo(torch.float32).eps)
    assert limit < 2 * a <= top
    with pytest.raises(ValueError, match=r"^last: at initialization the stack's sums in this layer reach"):
        _check_two_layers(stored, prefixes)
