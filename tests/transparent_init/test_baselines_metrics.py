"""Baseline initializers (paper Table 2) and the metrics, on hand-made examples."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor, nn

from transparent_init import (
    TransparentLinear,
    init_rate,
    max_abs_error,
    net2net_identity_init_,
    random_uniform_init_,
    recovery_rate,
    xavier_init_,
)


def _stack(act: bool = True) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Linear(6, 16)]
    if act:
        mods.append(nn.ReLU())
    mods.append(nn.Linear(16, 6))
    return nn.Sequential(*mods)


# ---------------------------------------------------------------- metrics


def test_init_rate_counts_weights_and_biases() -> None:
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0, 1e-5], [2e-4, -3.0, 0.0]]))
        lin.bias.copy_(torch.tensor([-1e-4, 5.0]))
    # > 1e-4 strictly: 1.0, 2e-4, -3.0, 5.0 -> 4 of 8
    assert init_rate(lin) == 0.5
    assert init_rate(lin, threshold=0.0) == 6 / 8
    assert init_rate(lin, threshold=2.5) == 2 / 8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_init_rate_compares_with_the_threshold_exactly_in_every_dtype(dtype: torch.dtype) -> None:
    """The threshold was rounded to each parameter's dtype first: 1e-4 reads 1.0001659e-4 in float16, so a
    float16 weight of that value counted as not above 1e-4 (0.0) while the same value in float64 did (1.0)."""
    lin = nn.Linear(1, 1, bias=False, dtype=dtype)
    for threshold in (1e-4, 0.1, 1e-30, 1e30):
        near = torch.tensor(threshold, dtype=torch.float64).to(dtype)  # the dtype's nearest value
        with torch.no_grad():
            lin.weight.fill_(near)
        assert init_rate(lin, threshold) == float(float(near) > threshold), threshold
        nxt = torch.nextafter(near, torch.tensor(math.inf, dtype=dtype))  # the next one up: above
        with torch.no_grad():
            lin.weight.fill_(nxt)
        assert init_rate(lin, threshold) == float(float(nxt) > threshold), threshold


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool], ids=str)
def test_init_rate_compares_integer_parameters_exactly(dtype: torch.dtype) -> None:
    """Integer parameters were compared as ``p.abs() > threshold``: ``abs`` wraps int8's -128 onto itself
    (counted as not above 1e-4) and the comparison with a float rounded both to float32 (int32 16777217
    read as not above 16777216.5); a bool parameter raised NotImplementedError from ``abs``."""
    info = torch.iinfo(torch.uint8 if dtype == torch.bool else dtype)
    values = sorted({info.min, info.min + 1, -1 if info.min else 0, 0, 1, 2, info.max - 1, info.max})
    if dtype == torch.bool:
        values = [0, 1]
    module = nn.Module()
    module.p = nn.Parameter(torch.tensor(values).to(dtype), requires_grad=False)
    for threshold in (0.0, 1e-4, 1.0, 1.5, 2**24 + 0.5, info.max - 0.5, info.max + 0.5, 1e300):
        expected = sum(abs(v) > threshold for v in values) / len(values)  # Python ints: exact
        assert init_rate(module, threshold) == expected, threshold


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64], ids=str)
def test_init_rate_counts_wide_unsigned_parameters_exactly(dtype: torch.dtype) -> None:
    """uint16/32/64 have no comparison kernels: init_rate raised NotImplementedError ("ge_cpu" not
    implemented for 'UInt16'). Now compared as int64, a uint64 value above 2**63 - 1 as held."""
    top = torch.iinfo(dtype).max if dtype != torch.uint64 else 2**64 - 1
    values = [0, 1, 2, 2**15, top // 2, top // 2 + 1, top - 1, top]
    module = nn.Module()
    module.p = nn.Parameter(torch.tensor(values, dtype=dtype), requires_grad=False)
    for threshold in (0.0, 1e-4, 1.5, 2**15 - 0.5, float(top // 2), float(2**63), 1e300):
        expected = sum(v > threshold for v in values) / len(values)  # Python numbers: exact
        assert init_rate(module, threshold) == expected, threshold


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
def test_init_rate_counts_float8_parameters(dtype: torch.dtype) -> None:
    """float8 has no comparison kernels: init_rate raised NotImplementedError ("gt_cpu" not implemented for
    'Float8_e4m3fn'). Now compared in float32, which holds each float8 value exactly."""
    module = nn.Module()
    values = torch.tensor([0.0, 0.5, -2.0, 1.0]).to(dtype)
    module.p = nn.Parameter(values, requires_grad=False)
    assert init_rate(module) == 0.75
    assert init_rate(module, 0.5) == 0.5 and init_rate(module, 1.0) == 0.25


def test_init_rate_is_nan_when_a_parameter_is_nan_and_counts_infinities() -> None:
    # a NaN entry is neither above nor below the threshold: it was counted as "not initialized", so a stack
    # with a NaN weight read 99.8 % (TransparentLinear(4, [8, 8]) with one NaN) instead of showing the NaN
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.fill_(1.0)
        lin.weight[0, 0] = float("inf")
        lin.bias[1] = float("-inf")
    assert init_rate(lin) == 1.0
    with torch.no_grad():
        lin.weight[1, 2] = float("nan")
    assert math.isnan(init_rate(lin))
    assert math.isnan(init_rate(lin, threshold=0.0))


def test_recovery_rate_and_max_error_by_hand() -> None:
    shift = nn.Sequential(nn.Identity())
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert recovery_rate(shift, x) == 1.0 and max_abs_error(shift, x) == 0.0

    class AddOffsets(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return t + torch.tensor([[0.0, 5e-5], [2e-4, 1.0]])

    m = AddOffsets()
    assert recovery_rate(m, x) == 0.5  # 0 and 5e-5 are < 1e-4
    assert recovery_rate(m, x, eps=1e-3) == 0.75
    assert max_abs_error(m, x) == pytest.approx(1.0)
    assert recovery_rate(m, x, target=x + 1.0) == 0.25
    assert max_abs_error(m, x, target=x + 1.0) == pytest.approx(1.0)
    zeros = torch.zeros(4, dtype=torch.float64)  # an error of exactly eps is not recovered (strict <)
    assert recovery_rate(nn.Identity(), zeros, eps=0.25, target=zeros + 0.25) == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
def test_recovery_rate_compares_with_eps_exactly(dtype: torch.dtype) -> None:
    """The error (float32 at least) was compared with ``eps`` rounded to its dtype: float32's nearest value to
    1e-4, 9.9999997e-5, lies below 1e-4 but read as not recovered (0.0); the same error in float64, 1.0."""
    zero = torch.zeros(1, dtype=dtype)
    for eps in (1e-4, 0.1, 1e-30, 1e30):
        for near in (torch.tensor([eps], dtype=torch.float64).to(dtype), torch.tensor([eps], dtype=dtype)):
            for err in (near, torch.nextafter(near, torch.zeros(1, dtype=dtype))):  # and the one below
                expected = float(float(err) < eps)  # exactly, in float64
                assert recovery_rate(nn.Identity(), zero, eps, target=err) == expected, (eps, float(err))
    nan = torch.tensor([math.nan, 0.0], dtype=dtype)
    assert recovery_rate(nn.Identity(), nan, target=torch.zeros(2, dtype=dtype)) == 0.5  # NaN: not recovered


def test_metrics_of_an_in_place_module_compare_against_the_input_as_passed() -> None:
    """An in-place module (``nn.ReLU(inplace=True)``) overwrote ``x``, the default reference, before the
    comparison: the metrics read a perfect recovery (1.0, error 0.0) and the caller's tensor was changed."""
    x = torch.tensor([-1.0, 2.0, -3.0, 4.0])
    assert recovery_rate(nn.ReLU(inplace=True), x) == 0.5
    assert max_abs_error(nn.ReLU(inplace=True), x) == 3.0
    target = x.clone()
    assert max_abs_error(nn.ReLU(inplace=True), x, target=target) == 3.0
    assert torch.equal(x, torch.tensor([-1.0, 2.0, -3.0, 4.0])) and torch.equal(target, x)


def test_metrics_of_an_input_that_requires_grad_are_plain_numbers() -> None:
    """Logits straight from a network require grad: the metrics build no graph and warn about nothing."""
    x = torch.tensor([[-1.0, 2.0, -3.0]], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "Converting a tensor with requires_grad=True to a scalar"
        assert max_abs_error(nn.ReLU(), x * 1) == 3.0
        assert max_abs_error(nn.Identity(), x, target=torch.zeros(1, 3)) == 3.0
        assert recovery_rate(nn.ReLU(), x * 1) == pytest.approx(1 / 3)
    assert x.grad is None


def test_metrics_do_not_round_the_target_to_the_output_dtype() -> None:
    """The difference is taken in the promoted dtype (at least float32, float64 for integer outputs): the
    target was cast to the output's dtype first, so a float16 or integer output was compared against a
    rounded target and the error under-reported (0.0 instead of 4e-4 / 0.5)."""
    y16 = torch.tensor([1.0], dtype=torch.float16)
    near = torch.tensor([1.0004])
    assert max_abs_error(nn.Identity(), y16, target=near) == pytest.approx(4e-4, rel=1e-3)
    assert recovery_rate(nn.Identity(), y16, target=near) == 0.0
    assert recovery_rate(nn.Identity(), y16, eps=1e-3, target=near) == 1.0
    assert max_abs_error(nn.Identity(), torch.tensor([0, 1]), target=torch.tensor([0.5, 1.5])) == 0.5
    fine = torch.tensor([1.0 + 1e-12], dtype=torch.float64)  # float64 target, float32 output: float64
    assert max_abs_error(nn.Identity(), torch.tensor([1.0]), target=fine) == pytest.approx(1e-12, rel=1e-3)
    bf16 = torch.tensor([1.0], dtype=torch.bfloat16)
    target16 = torch.tensor([1.0 + 2.0**-10], dtype=torch.float16)  # 1.0 in bfloat16
    assert max_abs_error(nn.Identity(), bf16, target=target16) == 2.0**-10  # two half types: float32


def test_metrics_of_one_narrow_dtype_do_not_overflow_or_wrap() -> None:
    """Output and target of the same narrow dtype are still compared in float32 (float64 for integers and
    bools): in float16, 60000 - (-60000) overflows to inf; in int8, 100 - (-100) wraps around to -56; two bool
    tensors cannot be subtracted at all."""
    h = torch.tensor([60000.0, 1.0], dtype=torch.float16)
    assert max_abs_error(nn.Identity(), h, target=-h) == 120000.0
    i8 = torch.tensor([100, 0], dtype=torch.int8)
    assert max_abs_error(nn.Identity(), i8, target=-i8) == 200.0
    assert recovery_rate(nn.Identity(), i8, eps=100.0, target=-i8) == 0.5  # |200| >= 100, |0| < 100
    b = torch.tensor([True, False, True])
    assert max_abs_error(nn.Identity(), b, target=torch.tensor([True, True, True])) == 1.0
    assert recovery_rate(nn.Identity(), b, target=torch.tensor([True, True, True])) == pytest.approx(2 / 3)


def test_metrics_of_an_integer_output_or_target_beside_a_float_one_are_taken_in_float64() -> None:
    """An integer output against a float32 target (or a float32 output against an integer target) was
    compared in float32, their promoted dtype, not in float64 as documented for integers: the integer
    16777217 (2**24 + 1) was rounded to 16777216 first, so an error of 1 read 0 and counted as recovered."""
    big = torch.tensor([2**24 + 1, 3], dtype=torch.int32)
    near = torch.tensor([2.0**24, 3.0])
    assert max_abs_error(nn.Identity(), big, target=near) == 1.0
    assert recovery_rate(nn.Identity(), big, eps=0.5, target=near) == 0.5
    assert max_abs_error(nn.Identity(), near, target=big) == 1.0
    assert recovery_rate(nn.Identity(), near, eps=0.5, target=big) == 0.5


@pytest.mark.parametrize(
    ("out", "target", "error"),
    [
        (torch.tensor([2**53 + 1]), torch.tensor([2**53]), 1.0),
        (torch.tensor([2**60 + 1]), torch.tensor([2**60]), 1.0),
        (torch.tensor([2**53 + 1]), torch.tensor([2.0**53], dtype=torch.float64), 1.0),
        (torch.tensor([2.0**62], dtype=torch.float64), torch.tensor([2**62 + 3]), 3.0),
        (torch.tensor([2**64 - 1], dtype=torch.uint64), torch.tensor([2**64 - 2], dtype=torch.uint64), 1.0),
        (torch.tensor([2**63 - 1]), torch.tensor([-(2**63)]), float(2**64 - 1)),
        (torch.tensor([2**32 + 1]), torch.tensor([0]), float(2**32 + 1)),  # high and low parts both differ
    ],
    ids=["int64", "int64-2**60", "int64-float64", "float64-int64", "uint64", "int64-extremes", "both-parts"],
)
def test_metrics_of_integers_beyond_2_to_the_53_are_exact(out: Tensor, target: Tensor, error: float) -> None:
    """Integers were cast to float64 before the difference: beyond 2**53 that rounded them, so an int64
    output 2**53 + 1 against 2**53 read an error of 0 and counted as recovered. The difference is taken on
    parts that float64 holds exactly now (correctly rounded: 2**64 - 1 reads 2**64)."""
    assert max_abs_error(nn.Identity(), out, target=target) == error
    assert recovery_rate(nn.Identity(), out, eps=0.5, target=target) == 0.0
    assert max_abs_error(nn.Identity(), out, target=out) == 0.0


@pytest.mark.parametrize(
    ("out", "target"),
    [
        (torch.tensor([-1.0000001]), torch.tensor([-1], dtype=torch.int32)),
        (torch.tensor([-1327.0 - 2e-7], dtype=torch.float64), torch.tensor([-1327])),
        (torch.tensor([-1327.9542376797378], dtype=torch.float64), torch.tensor([-1327])),
        (torch.tensor([2.0**40 + 0.25], dtype=torch.float64), torch.tensor([2**40 + 2**31])),
        (torch.tensor([3e-9], dtype=torch.float64), torch.tensor([0], dtype=torch.uint64)),
        (torch.tensor([-(2.0**63)], dtype=torch.float64), torch.tensor([2**63 - 1])),
        (
            torch.tensor([-2146483647.7], dtype=torch.float64),
            torch.tensor([-(2**31)]),
        ),  # lo at -2**31 exactly
        (torch.tensor([2148483647.7], dtype=torch.float64), torch.tensor([2**31])),
    ],
)
def test_metrics_of_a_float_beside_an_integer_lose_no_small_error(out: Tensor, target: Tensor) -> None:
    """The split of an integer into exact parts put a small negative integer's high part at -2**32: a float
    output near it was shifted by 2**32 and rounded to steps of 9.5e-7, so -1.0000001 against -1 read an
    error of 0. The high part is the multiple of 2**32 nearest the integer now: the small errors are
    exact, as float64 gives them for integers it holds."""
    small = (
        max(abs(v) for v in target.tolist()) < 2**53
    )  # then float64 holds the integers: the plain difference
    expected = float((out.double() - target.double()).abs().max()) if small else None
    got = max_abs_error(nn.Identity(), out, target=target)
    if expected is not None:
        assert got == expected, (got, expected)
    else:
        assert got == float(2**64 - 1), got  # -(2**63) - (2**63 - 1), correctly rounded
    assert recovery_rate(nn.Identity(), out, eps=got / 2, target=target) == (0.0 if got > 0 else 1.0)


def test_a_complex_output_against_an_integer_target_keeps_its_imaginary_part() -> None:
    """A complex output against an integer target is compared in complex128, not split as a real one."""
    out = torch.tensor([1 + 2j], dtype=torch.complex64)
    assert max_abs_error(nn.Identity(), out, target=torch.tensor([1])) == 2.0


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.float8_e5m2], ids=str)
def test_recovery_rate_and_max_error_of_a_float8_output(dtype: torch.dtype) -> None:
    """A float8 output or target raised RuntimeError "Promotion for Float8 Types is not supported"; now
    read as float32, which holds each float8 value exactly, as a float16 one is."""
    x = torch.tensor([0.5, -2.0, 1.0]).to(dtype)
    assert recovery_rate(nn.Identity(), x) == 1.0 and max_abs_error(nn.Identity(), x) == 0.0
    target = torch.tensor([0.5, -2.0, 1.25])
    assert max_abs_error(nn.Identity(), x, target=target) == 0.25
    assert recovery_rate(nn.Identity(), target, eps=0.25, target=x) == pytest.approx(2 / 3)
    assert (
        max_abs_error(nn.Identity(), torch.tensor([1, 2]), target=torch.tensor([1.0, 2.5]).to(dtype)) == 0.5
    )


def test_metric_errors() -> None:
    with pytest.raises(TypeError, match=r"module must be an nn\.Module, got int"):
        init_rate(3)
    with pytest.raises(ValueError, match="threshold must be a finite real >= 0, got -1"):
        init_rate(nn.Linear(2, 2), threshold=-1)
    with pytest.raises(ValueError, match="module has no parameters"):
        init_rate(nn.ReLU())
    with pytest.raises(ValueError, match=r"module has no parameters, got ReLU without any"):
        init_rate(nn.ReLU())
    # parameters, all empty: not "no parameters" (it has two), and the shapes are the actual value
    with warnings.catch_warnings():  # torch: "Initializing zero-element tensors is a no-op"
        warnings.simplefilter("ignore", UserWarning)
        empty = nn.Linear(0, 0)
    with pytest.raises(
        ValueError,
        match=r"module has no parameter entries, got Linear whose 2 parameters are all empty \(shapes "
        r"\[\[0, 0\], \[0\]\]\): no entry to count",
    ):
        init_rate(empty)
    with pytest.raises(ValueError, match="eps must be a finite real > 0, got 0"):
        recovery_rate(nn.Identity(), torch.ones(2), eps=0)
    with pytest.raises(TypeError, match=r"x must be a torch\.Tensor, got list"):
        recovery_rate(nn.Identity(), [1.0])
    with pytest.raises(ValueError, match=r"module output shape \[2, 3\] != x shape \[2, 2\]; pass target="):
        max_abs_error(nn.Linear(2, 3), torch.ones(2, 2))
    with pytest.raises(TypeError, match=r"target must be a torch\.Tensor or None, got float"):
        max_abs_error(nn.Identity(), torch.ones(2), target=1.0)
    with pytest.raises(ValueError, match=r"x must not be empty, got shape \[0\]"):
        max_abs_error(nn.Identity(), torch.ones(0))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")
def test_metrics_refuse_an_empty_output() -> None:
    """A zero-width layer with an empty target of its shape: recovery_rate divided by zero
    (ZeroDivisionError) and max_abs_error reduced an empty tensor (RuntimeError from PyTorch)."""
    for metric in (recovery_rate, max_abs_error):
        with pytest.raises(ValueError, match=r"module output must not be empty, got shape \[4, 0\]"):
            metric(nn.Linear(3, 0), torch.ones(4, 3), target=torch.ones(4, 0))


def test_metrics_refuse_what_holds_no_values_and_non_tensor_outputs() -> None:
    """Found by fuzzing the API: a meta tensor or module reached ``.item()`` / a copy out of meta
    (RuntimeError, NotImplementedError from PyTorch) and an ``nn.LSTM``'s tuple output ``.shape``
    (AttributeError)."""
    x = torch.ones(3, 2)
    with pytest.raises(TypeError, match=r"module must return a torch\.Tensor, got tuple"):
        recovery_rate(nn.LSTM(2, 2), x)
    for metric in (recovery_rate, max_abs_error):
        with pytest.raises(
            ValueError, match=r"x must hold values, got a tensor on the meta device \(shape \[3, 2\]\)"
        ):
            metric(nn.Identity(), x.to("meta"))
        with pytest.raises(ValueError, match="target must hold values, got a tensor on the meta device"):
            metric(nn.Identity(), x, target=x.to("meta"))
    with pytest.raises(ValueError, match=r"module parameter 'layers\.0\.weight' is on the meta device"):
        init_rate(TransparentLinear(2, [2], device="meta"))


def test_init_rate_counts_wide_unsigned_values_just_above_a_threshold_beyond_int64() -> None:
    """A uint64 value one above the threshold, beyond 2**63 (held as a negative int64), counts as above."""
    module = nn.Module()
    values = [2**63, 2**63 + 1, 2**63 + 2048, 2**64 - 1]
    module.p = nn.Parameter(torch.tensor(values, dtype=torch.uint64), requires_grad=False)
    assert init_rate(module, float(2**63)) == 0.75  # 2**63 + 1 is the first above
    assert init_rate(module, float(2**63 + 2048)) == 0.25


def test_init_rate_counts_complex_parameters_by_magnitude() -> None:
    module = nn.Module()
    values = torch.tensor([1 + 1j, 0.5j, 0, 1e-5], dtype=torch.complex64)
    module.p = nn.Parameter(values, requires_grad=False)
    assert init_rate(module) == 0.5  # |1 + 1j| and |0.5j|
    assert init_rate(module, 0.6) == 0.25  # |1 + 1j| = 1.414 only


def test_recovery_rate_of_a_map_to_another_width_counts_output_entries() -> None:
    """The share is over the output's entries (the target's), not the input's."""
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]])  # the third column is off
    assert recovery_rate(lin, x, target=target) == pytest.approx(4 / 6)
    assert max_abs_error(lin, x, target=target) == 7.0


def test_max_abs_error_is_nan_when_a_difference_is_nan() -> None:
    """As documented: a NaN difference is not hidden behind the largest finite one."""
    x = torch.tensor([0.0, math.nan, 2.0])
    assert math.isnan(max_abs_error(nn.Identity(), x, target=torch.zeros(3)))
    assert math.isnan(max_abs_error(nn.Identity(), torch.zeros(3), target=x))


# ---------------------------------------------------------------- baselines


def test_random_uniform_bounds_and_reproducibility() -> None:
    a = random_uniform_init_(_stack(), generator=0)
    b = random_uniform_init_(_stack(), generator=0)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
        fan_in = 6 if name.startswith("0.") else 16
        assert float(p.detach().abs().max()) <= 1 / math.sqrt(fan_in)
    conv = random_uniform_init_(nn.Conv2d(3, 4, 3), generator=0)  # fan_in = 3 * 3 * 3 for a 3 x 3 kernel
    assert float(conv.bias.detach().abs().max()) <= 1 / math.sqrt(27)
    assert 0.8 / math.sqrt(27) < float(conv.weight.detach().abs().max()) <= 1 / math.sqrt(27)  # 108 draws
    c = random_uniform_init_(_stack(), bound=0.01, generator=1)
    assert all(float(p.detach().abs().max()) <= 0.01 for p in c.parameters())
    with pytest.raises(ValueError, match="bound must be a finite real > 0, got 0"):
        random_uniform_init_(_stack(), bound=0)


def test_random_uniform_draws_on_both_sides_of_zero() -> None:
    """``U(-a, a)``: the draws fill the whole interval, negative half included."""
    for bound in (None, 0.5):
        lin = random_uniform_init_(nn.Linear(16, 16), bound=bound, generator=0)
        a = 0.25 if bound is None else bound  # 1 / sqrt(16)
        for p in (lin.weight, lin.bias):
            assert float(p.detach().min()) < -0.8 * a and float(p.detach().max()) > 0.8 * a


def test_random_uniform_bound_checks_every_layer_and_accepts_half_the_largest_value() -> None:
    """The bound is checked against each layer's dtype (a float16 layer after a float32 one), before any
    write; ``2 * bound`` equal to the dtype's largest finite value is representable and accepted."""
    seq = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3).half())
    before = [p.detach().clone() for p in seq.parameters()]
    with pytest.raises(ValueError, match=r"bound = 4e\+04 is too large for torch.float16 \(layer '1'\)"):
        random_uniform_init_(seq, bound=4e4, generator=0)
    assert all(torch.equal(p, q) for p, q in zip(before, seq.parameters(), strict=True))
    half_max = torch.finfo(torch.float16).max / 2
    random_uniform_init_(seq, bound=half_max, generator=0)
    assert all(
        bool(p.isfinite().all()) and float(p.detach().abs().max()) <= half_max for p in seq.parameters()
    )


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")  # PyTorch's own init
def test_baselines_name_a_bare_layer_module() -> None:
    """A layer passed on its own (no parent) is named ``module`` in the errors."""
    with pytest.raises(ValueError, match=r"layer module \(Linear\) has out_features = 0"):
        xavier_init_(nn.Linear(4, 0))


def test_xavier_statistics() -> None:
    net = xavier_init_(nn.Sequential(nn.Linear(200, 300)), generator=0)
    std = float(net[0].weight.detach().std())
    assert std == pytest.approx(math.sqrt(2.0 / 500), rel=0.05)
    # normal, not uniform (same std): draws beyond the uniform's bound sqrt(3) * std
    assert float(net[0].weight.detach().abs().max()) > math.sqrt(6.0 / 500)
    assert float(net[0].bias.detach().abs().sum()) == 0.0


def test_net2net_identity_exact_without_relu_but_sparse() -> None:
    net = net2net_identity_init_(_stack(act=False))
    x = torch.randn(50, 6)
    assert torch.equal(net(x), x)
    assert recovery_rate(net, x) == 1.0
    assert init_rate(net) == pytest.approx((6 + 6) / (6 * 16 + 16 + 16 * 6 + 6))  # only the eye entries


def test_net2net_identity_fails_through_relu() -> None:
    net = net2net_identity_init_(_stack(act=True))
    x = torch.randn(2000, 6)
    assert torch.equal(net(x), torch.relu(x))
    assert 0.4 < recovery_rate(net, x) < 0.6


def test_net2net_identity_of_a_3x3_same_conv_and_refusals() -> None:
    net = net2net_identity_init_(nn.Sequential(nn.Conv2d(3, 3, 3, padding="same")))
    x = torch.randn(2, 3, 5, 4)
    assert torch.equal(net(x), x)
    for bad in (nn.Conv2d(4, 4, 1, groups=2), nn.Conv2d(2, 2, 2, padding="same")):
        before = bad.weight.detach().clone()
        with pytest.raises(ValueError, match="needs groups=1 and odd kernel sizes"):
            net2net_identity_init_(nn.Sequential(nn.Linear(2, 2), bad))
        assert torch.equal(bad.weight, before)


@pytest.mark.parametrize("conv", [nn.Conv1d, nn.Conv2d, nn.Conv3d], ids=lambda c: c.__name__)
def test_net2net_docstring_and_refusals_cover_every_conv_dimension(conv: type) -> None:
    """The docstring said ``Conv2d`` only; Conv1d / Conv2d / Conv3d get the same centre tap and the same
    refusals, as documented now."""
    doc = " ".join((net2net_identity_init_.__doc__ or "").split())
    assert "An ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Conv3d`` gets a 1 at the centre tap" in doc
    assert "for a grouped ``nn.ConvNd`` (1d, 2d or 3d)" in doc
    net = net2net_identity_init_(nn.Sequential(conv(3, 3, 3, padding="same")))
    x = torch.randn((2, 3) + (5,) * int(conv.__name__[-2]))
    assert torch.equal(net(x), x)
    with pytest.raises(
        ValueError, match=rf"^layer 1 \({conv.__name__}\) needs groups=1 and odd kernel sizes"
    ):
        net2net_identity_init_(nn.Sequential(nn.Linear(2, 2), conv(4, 4, 1, groups=2)))


def test_net2net_identity_of_a_conv_whose_kernel_dimensions_are_not_mergeable() -> None:
    """A conv weight with transposed kernel dimensions (strides the kernel cannot be flattened with) made
    ``weight.view(out, in, -1)`` raise PyTorch's RuntimeError after the layers before it were written."""
    conv = nn.Conv2d(2, 2, 3, padding="same")
    conv.weight = nn.Parameter(torch.randn(2, 2, 3, 3).transpose(2, 3))
    net = net2net_identity_init_(nn.Sequential(nn.Conv2d(2, 2, 1), conv))
    x = torch.randn(1, 2, 5, 5)
    assert torch.equal(net(x), x)
    assert conv.weight.stride() == (18, 9, 1, 3)  # written in place, not replaced


def test_net2net_conv_identity() -> None:
    net = net2net_identity_init_(nn.Sequential(nn.Conv2d(3, 5, 1), nn.Conv2d(5, 3, 1)))
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(net(x), x)


def test_random_and_xavier_do_not_recover() -> None:
    x = torch.rand(500, 6) * 2 - 1
    for init in (random_uniform_init_, xavier_init_):
        net = init(_stack(act=False), generator=0)
        assert recovery_rate(net, x) < 0.01
        assert init_rate(net) > 0.99 or init is xavier_init_


def test_ours_dense_and_exact_with_relu() -> None:
    ours = TransparentLinear(6, [8], generator=0)
    x = torch.rand(500, 6) * 2 - 1
    assert recovery_rate(ours, x) == 1.0 and init_rate(ours) >= 0.999


def test_baseline_errors() -> None:
    with pytest.raises(ValueError, match=r"module has no nn\.Linear or nn\.Conv1d/2d/3d layer: ReLU"):
        xavier_init_(nn.ReLU())
    with pytest.raises(TypeError, match=r"module must be an nn\.Module, got str"):
        net2net_identity_init_("net")


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")  # PyTorch's own init
@pytest.mark.parametrize("init", [random_uniform_init_, xavier_init_, net2net_identity_init_])
@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: nn.Sequential(nn.Linear(4, 4), nn.Linear(0, 2)), r"layer 1 \(Linear\) has in_features = 0"),
        (lambda: nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 0)), r"layer 1 \(Linear\) has out_features = 0"),
        (
            lambda: nn.Sequential(nn.Conv2d(4, 4, 1), nn.Conv2d(4, 0, 3)),
            r"layer 1 \(Conv2d\) has out_channels = 0",
        ),
    ],
    ids=["in-0", "out-0", "conv-out-0"],
)
def test_baselines_refuse_zero_widths_before_writing(init, make, match: str) -> None:  # type: ignore[no-untyped-def]
    """A zero-width layer (legal in PyTorch) has no fan-in or no diagonal: it is refused, naming the layer,
    before anything is written (random_uniform_init_ divided by zero or indexed out of bounds after it had
    rewritten the layers before it; net2net_identity_init_ failed reshaping an empty tensor)."""
    net = make()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=match + r": the baselines need every width >= 1"):
        init(net)
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters(), strict=True))


@pytest.mark.filterwarnings("ignore:Complex modules are a new feature")  # PyTorch's notice
@pytest.mark.parametrize("init", [random_uniform_init_, xavier_init_, net2net_identity_init_])
@pytest.mark.parametrize("dtype", [torch.float8_e4m3fn, torch.complex64], ids=str)
def test_baselines_refuse_unsupported_dtypes_before_writing(init, dtype: torch.dtype) -> None:  # type: ignore[no-untyped-def]
    """A float8 layer was accepted: the layers before it were rewritten, then PyTorch's NotImplementedError
    ("normal_kernel_cpu" not implemented for 'Float8_e4m3fn'); refused now as transparent_init_ refuses it."""
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4).to(dtype))
    before = net[0].weight.detach().clone()
    with pytest.raises(
        ValueError,
        match=rf"layer 1 \(Linear\) has a weight of dtype {dtype}: only torch.float16, torch.bfloat16",
    ):
        init(net)
    assert torch.equal(net[0].weight, before)


@pytest.mark.filterwarnings("ignore:Lazy modules are a new feature")  # PyTorch's notice
@pytest.mark.parametrize("init", [random_uniform_init_, xavier_init_, net2net_identity_init_])
def test_baselines_name_a_lazy_layer_without_weights(init) -> None:  # type: ignore[no-untyped-def]
    """Found by fuzzing the API: an uninitialized ``nn.LazyLinear`` was refused as a zero-width layer
    ("has in_features = 0"), a wrong reason; it gets transparent_init_'s advice now, and works after a
    forward pass."""
    net = nn.Sequential(nn.LazyLinear(4))
    with pytest.raises(ValueError, match=r"layer 0 \(LazyLinear\) has no weights yet: run one forward pass"):
        init(net)
    net(torch.ones(2, 3))
    init(net)


@pytest.mark.parametrize("init", [random_uniform_init_, xavier_init_])
def test_seeded_baselines_draw_the_same_values_on_every_device(init, device) -> None:  # type: ignore[no-untyped-def]
    """An int seed is a CPU generator: the draws are made there and copied (CUDA modules raised)."""
    on_cpu = init(nn.Sequential(nn.Linear(3, 5), nn.Conv2d(5, 2, 1)), generator=7)
    on_device = init(nn.Sequential(nn.Linear(3, 5), nn.Conv2d(5, 2, 1)).to(device), generator=7)
    for a, b in zip(on_cpu.parameters(), on_device.parameters(), strict=True):
        assert b.device.type == device.type
        assert torch.equal(a, b.cpu())


def test_baselines_take_the_pointwise_convs_transparent_init_takes() -> None:
    """Conv1d / Conv3d stacks, which transparent_init_ takes, are re-initialized by the baselines too."""
    for conv in (nn.Conv1d, nn.Conv3d):
        seq = nn.Sequential(conv(3, 6, 1), nn.ReLU(), conv(6, 3, 1))
        before = [p.detach().clone() for p in seq.parameters()]
        xavier_init_(seq, generator=0)
        assert all(
            not torch.equal(p, q) for p, q in zip(before, seq.parameters(), strict=True) if p.dim() > 1
        )
        net2net_identity_init_(seq)
        x = torch.rand((2, 3) + (4,) * (1 if conv is nn.Conv1d else 3))
        with torch.no_grad():
            assert torch.equal(seq(x), x)  # non-negative inputs pass the ReLU


def test_metrics_of_a_uint64_above_int64_against_a_small_one_read_its_full_size() -> None:
    """Kills X62: a uint64 value from 2**63 on is not read as the negative int64 of its bits: 2**64 - 1
    against 0 is an error of 2**64 - 1 (correctly rounded to 2**64 in float64), not 1."""
    out = torch.tensor([2**64 - 1, 2**63], dtype=torch.uint64)
    target = torch.tensor([0, 2**63], dtype=torch.uint64)
    assert max_abs_error(nn.Identity(), out, target=target) == float(2**64)
    assert recovery_rate(nn.Identity(), out, eps=0.5, target=target) == 0.5
    assert max_abs_error(nn.Identity(), target, target=out) == float(2**64)
