"""Any mix of valid and odd-but-plausible arguments builds an exact stack or raises ValueError / TypeError.

A compact form of the API fuzzing of 2026-12-01 (about 50 000 examples over every public function): each
argument is drawn from valid values and from values a user might pass by mistake (bools and floats for ints,
bool and non-0-d tensors, sparse and meta tensors, NaN / inf / huge reals, unsupported activation names and
modules, wrong shapes and dtypes). The claim is the one of ``test_errors.py`` at large: no other exception
type escapes from PyTorch or Python (``RuntimeError``, ``NotImplementedError``, ``OverflowError``,
``AttributeError`` did before the fixes of that day), and what builds is finite and exact to rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from tests.hypothesis_budget import budget
from transparent_init import (
    TransparentConv1x1,
    TransparentLinear,
    max_abs_error,
    recovery_rate,
    selection_weight,
)

from ._reference import check, uniform

ODD_INTS = [0, -1, True, 4.0, np.float64(3.0), torch.tensor(3.0), torch.tensor(True), torch.tensor([3]), "3"]
ODD_SLOPES = [-0.1, math.nan, math.inf, 10**400, "0.1", torch.tensor(True), torch.tensor([0.2]), True]
ODD_ACTIVATIONS = ["ReLU", "gelu", "", nn.ReLU(), nn.ReLU, b"relu"]


@st.composite
def arguments(draw: st.DrawFn) -> dict:
    """Constructor arguments, valid but for at most one (named in ``odd``)."""
    n_in = draw(st.integers(1, 5))
    odd = draw(
        st.sampled_from([None, None, "in", "hidden", "act", "slope", "target", "bias", "gen", "dtype"])
    )
    out = draw(st.integers(1, 5))
    t_w = torch.randn(
        out, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(draw(st.integers(0, 99)))
    )
    if odd == "target":
        t_w = draw(
            st.sampled_from(
                [
                    t_w.to_sparse(),
                    t_w.to("meta"),
                    t_w.T,
                    t_w.to(torch.complex64),
                    t_w > 0,
                    t_w.numpy(),
                    t_w * math.nan,
                    t_w * 1e300,
                    t_w * 1e-320,
                ]
            )
        )
    act = draw(st.sampled_from([None, "relu", "leaky_relu"]))
    return {
        "odd": odd,
        "cls": draw(st.sampled_from([TransparentLinear, TransparentConv1x1])),
        "in": draw(st.sampled_from(ODD_INTS)) if odd == "in" else n_in,
        "hidden": (
            draw(
                st.sampled_from([[], [0], [torch.tensor(True)], [[n_in]], "44", {n_in}, torch.tensor([2.0])])
            )
            if odd == "hidden"
            else [n_in + draw(st.integers(0, 3)) for _ in range(draw(st.integers(1, 3)))]
        ),
        "act": draw(st.sampled_from(ODD_ACTIVATIONS)) if odd == "act" else act,
        "slope": (
            draw(st.sampled_from(ODD_SLOPES))
            if odd == "slope"
            else (draw(st.sampled_from([None, 0.0, 0.2, 3.0])) if act == "leaky_relu" else None)
        ),
        "bias": draw(st.sampled_from([0, 1, None, "yes"])) if odd == "bias" else draw(st.booleans()),
        "t_w": t_w,
        "gen": draw(st.sampled_from([1.5, 2**64, torch.tensor(True)]))
        if odd == "gen"
        else draw(st.integers(0, 9)),
        "dtype": (
            draw(st.sampled_from([torch.int64, torch.complex64, "float32"]))
            if odd == "dtype"
            else draw(st.sampled_from([torch.float32, torch.float64]))
        ),
    }


@settings(max_examples=budget(60))
@given(arguments())
def test_constructors_build_exact_stacks_or_raise_value_or_type_errors(a: dict) -> None:
    try:
        stack = a["cls"](
            a["in"],
            a["hidden"],
            activation=a["act"],
            negative_slope=a["slope"],
            bias=a["bias"],
            target_weight=a["t_w"],
            generator=a["gen"],
            dtype=a["dtype"],
        )
    except (ValueError, TypeError):
        if a["odd"] is None:  # every argument valid: the stack must build
            raise
        return
    assert all(bool(p.isfinite().all()) for p in stack.parameters())
    n_in = stack.layers[0].weight.shape[1]
    x = uniform((3, n_in), 2.0, 0, stack.layers[0].weight.dtype)
    check(stack, x.T.reshape(1, n_in, 3, 1) if a["cls"] is TransparentConv1x1 else x, a["t_w"])


@pytest.mark.parametrize("metric", [recovery_rate, max_abs_error])
@given(
    module=st.sampled_from([nn.Identity(), nn.ReLU(), nn.LSTM(2, 2), nn.Flatten(0)]),
    x=st.sampled_from(
        [torch.ones(3, 2), torch.ones(3, 2, device="meta"), torch.eye(2).to_sparse(), torch.ones(0, 2), [1.0]]
    ),
    target=st.sampled_from(
        [None, torch.zeros(3, 2), torch.zeros(3, 2, device="meta"), torch.eye(2).to_sparse()]
    ),
)
def test_metrics_return_a_number_or_raise_value_or_type_errors(metric, module, x, target) -> None:  # type: ignore[no-untyped-def]
    try:
        value = metric(module, x, target=target)
    except (ValueError, TypeError):
        return
    assert isinstance(value, float) and value >= 0


@given(
    indices=st.sampled_from(
        [
            [0, 2],
            [torch.tensor(1)],
            [torch.tensor(True)],
            slice(None, None, 0),
            slice(0.5, 2),
            torch.tensor([0, 1]).to_sparse(),
            np.array([2**64 - 1], dtype=np.uint64),
            "01",
            [],
        ]
    ),
    dtype=st.sampled_from([None, torch.float16, torch.int64, torch.float8_e4m3fn]),
)
def test_selection_weight_selects_or_raises_value_or_type_errors(indices: object, dtype: object) -> None:
    try:
        weight = selection_weight(3, indices, dtype=dtype)  # type: ignore[arg-type]  # odd values are the point
    except (ValueError, TypeError):
        return
    assert bool((weight.float().sum(1) == 1).all())
