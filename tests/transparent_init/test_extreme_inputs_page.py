"""The "Extreme inputs" list of docs/concepts/transparent_init.rst: its script runs, and what the page says in
words holds for seed 0 here (the exact ranges on the page are one CPU's; these margins are any CPU's)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "_scripts" / "measure_extreme_inputs.py"


def _extreme_script():
    """The measuring script, loaded as a module."""
    spec = importlib.util.spec_from_file_location("measure_extreme_inputs", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="module")
def seed0() -> dict[tuple[str, str], float]:
    """What the script prints for seed 0: ``{(section, label): value}`` (the section up to its colon)."""
    script = _extreme_script()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        script.main(["--seeds", "1"])
    header, *lines = out.getvalue().splitlines()
    assert header.startswith("torch ") and header.endswith("seeds 0-0; each figure's range over the seeds")
    values: dict[tuple[str, str], float] = {}
    for line in lines:
        if line.startswith("-- "):
            section = line[3:].split(":")[0]
        else:
            label, value = line.rsplit(maxsplit=1)
            values[section, label.strip()] = float(value)  # one seed: one value, not a range
    assert len(values) == len(script.figures()) == 36
    return values


def test_the_page_cites_the_script_and_its_recipe() -> None:
    page = (ROOT / "docs" / "concepts" / "transparent_init.rst").read_text()
    assert "``python docs/_scripts/measure_extreme_inputs.py``" in page
    assert "``torch.Generator().manual_seed(s)``" in page
    assert "by hand, 2026-12-01" not in page  # the list is no longer an unkept measurement


def test_what_the_page_says_in_words_holds_for_seed_0(seed0: dict[tuple[str, str], float]) -> None:
    value = seed0
    assert all(math.isfinite(v) and v > 0 for v in value.values())
    # tiny inputs: an absolute floor below 1e-7 from r = 1e-10 down, the same at 1e-30
    floor = value["tiny inputs", "float32, r = 1e-10"]
    assert 0 < floor < 1e-7
    assert value["tiny inputs", "float32, r = 1e-30"] == pytest.approx(floor, rel=0.05)
    # bias=False: relative, within 1e-6 of r from 1e-30 to 1e38; worse for subnormal inputs
    for r in ("1e-30", "1", "1e+20", "1e+38"):
        assert value["tiny and huge inputs", f"float32, r = {r}"] < 1e-6
    assert 1e-6 < value["tiny and huge inputs", "float32, r = 1e-38"] < 1e-5
    assert 1e-5 < value["tiny and huge inputs", "float32, r = 1e-40"] < 1e-3
    for r in ("1", "10", "100", "1000"):  # about two units of roundoff of the range (2**-11, 2**-8)
        assert value["half precision", f"float16, r = {r}"] < 2e-3
        assert value["half precision", f"bfloat16, r = {r}"] < 1.6e-2
    for r in ("1e-30", "1", "1e+30"):  # bfloat16: a few units of its roundoff (2**-8)
        assert value["tiny and huge inputs", f"bfloat16, r = {r}"] < 1e-2
    # huge inputs: float16 overflows from about half of 65504, float32 and bfloat16 between 1e38 and 2e38; a
    # slope a lowers the float32 limit by about a
    assert 2.5e4 < value["huge inputs", "float16"] < 4e4
    relu = value["huge inputs", "float32"]
    assert 1e38 < relu <= 2e38
    assert 1e38 < value["huge inputs", "bfloat16"] <= 2e38
    for a in (4, 100):
        assert relu / a / 1.5 < value["huge inputs", f"float32, LeakyReLU slope {a}"] < relu / a * 1.5
    assert 1.5 < value["huge inputs", "largest hidden pre-activation / max |x|"] < 42**0.5
    # targets come out relatively, at any scale the dtype stores
    for scale in ("1e-38", "1e-36", "1", "1e+36"):
        assert value["targets", f"target_weight = {scale} * I"] < 1e-6
    assert value["targets", "target_bias = 1e30"] < 1e-6


def test_the_draw_is_the_recipe_on_the_page() -> None:
    """Seed ``s``: 256 rows of 42 entries uniform in [-1, 1] from ``torch.Generator().manual_seed(s)``, the
    stack ``TransparentLinear(42, [64, 64], generator=s)``; ``r u`` is taken in float64 before its rounding
    to the dtype (``1e-40 u`` keeps its subnormal digits)."""
    script = _extreme_script()
    u = torch.empty(256, 42).uniform_(-1, 1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(script.directions(3), u)
    for r in (1e-40, 1e-38, 1e20):
        assert torch.equal(script.inputs(3, r), u.double().mul(r).float())
    a, b = script.stack(0), script.stack(1)
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)
    assert torch.equal(
        a.layers[0].weight, script.TransparentLinear(42, [64, 64], generator=0).layers[0].weight
    )


def test_the_first_non_finite_input_is_found_to_a_tenth_of_a_percent() -> None:
    """``first_non_finite`` returns an ``r`` whose output is not all finite, with a finite output at 0.1 %
    below it; a bracket that does not hold the limit is refused."""
    script = _extreme_script()
    layer = script.stack(0, torch.float16)

    def finite(r: float) -> bool:
        with torch.no_grad():
            return bool(torch.isfinite(layer(script.inputs(0, r, torch.float16))).all())

    r = script.first_non_finite(0, torch.float16, 1e3, 1e5)
    assert not finite(r) and finite(r / 1.001)
    with pytest.raises(SystemExit, match="widen the bracket"):
        script.first_non_finite(0, torch.float16, 1e3, 2e3)


def test_each_overflow_figure_is_measured_in_the_dtype_it_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """The "huge inputs" limits: float16, float32 and bfloat16 each in that dtype; the LeakyReLU ones in
    float32 with the slope named."""
    script = _extreme_script()
    calls: dict[str, tuple[torch.dtype, dict[str, object]]] = {}
    label = ""  # the figure being measured

    def first_non_finite(seed: int, dtype: torch.dtype, lo: float, hi: float, **kwargs: object) -> float:
        calls[label] = (dtype, kwargs)
        return 1.0

    monkeypatch.setattr(script, "first_non_finite", first_non_finite)
    for section, label, value, _ in script.figures():  # the fake reads the label being measured
        if section.startswith("huge inputs") and label != "largest hidden pre-activation / max |x|":
            value(0)
    assert calls == {
        "float16": (torch.float16, {}),
        "float32": (torch.float32, {}),
        "bfloat16": (torch.bfloat16, {}),
        "float32, LeakyReLU slope 4": (torch.float32, {"activation": "leaky_relu", "negative_slope": 4.0}),
        "float32, LeakyReLU slope 100": (
            torch.float32,
            {"activation": "leaky_relu", "negative_slope": 100.0},
        ),
    }


def test_the_figures_are_the_list_on_the_page() -> None:
    """The labels of each section are the radii, dtypes and targets the page's list quotes."""
    script = _extreme_script()
    labels: dict[str, list[str]] = {}
    for section, label, _, _ in script.figures():
        labels.setdefault(section.split(":")[0], []).append(label)
    assert labels["tiny inputs"] == [f"float32, r = {r}" for r in ("1", "0.0001", "1e-10", "1e-20", "1e-30")]
    assert labels["half precision"] == [
        f"{d}, r = {r}" for d in ("float16", "bfloat16") for r in (1, 10, 100, 1000)
    ]
    assert labels["tiny and huge inputs"] == [
        *(f"float32, r = {r}" for r in ("1e-40", "1e-38", "1e-30", "1", "1e+20", "1e+38")),
        *(f"bfloat16, r = {r}" for r in ("1e-38", "1e-30", "1", "1e+30")),
    ]
    assert labels["targets"] == [
        *(f"target_weight = {s} * I" for s in ("1e-38", "1e-36", "1e-10", "1", "1e+10", "1e+36")),
        "target_bias = 1e30",
    ]


def test_the_hidden_ratio_is_the_largest_pre_activation_over_the_largest_input_entry() -> None:
    """``largest hidden pre-activation / max |x|``: at most the largest row's Euclidean norm over ``max |x|``
    (the widening first layer preserves the norm), and 1.8-2.3 over the seeds 0-4, as the page says."""
    script = _extreme_script()
    for seed in range(5):
        u = script.directions(seed)
        bound = (u.norm(dim=1).max() / u.abs().max()).item()
        value = script.hidden_ratio(seed)
        assert value <= bound * (1 + 1e-5) and 1.75 <= value <= 2.35, (seed, value)


def test_the_target_figures_use_every_row_of_the_draw() -> None:
    """A target figure: ``TransparentLinear(8, [16, 16], generator=s)`` built for ``s I`` and ``b``, on all
    256 rows of the seed's ``u`` (its first 8 columns), relative to ``max |s x + b|``."""
    script = _extreme_script()
    for scale, bias in ((1e10, 0.0), (1.0, 1e30)):
        layer = script.TransparentLinear(
            8, [16, 16], generator=0, target_weight=scale * torch.eye(8), target_bias=torch.full((8,), bias)
        )
        x = script.directions(0)[:, :8]
        with torch.no_grad():
            want = x.double() * scale + bias
            error = ((layer(x).double() - want).abs().max() / want.abs().max()).item()
        assert script.target_error(0, scale, bias) == error


@pytest.mark.parametrize("seeds", ["0", "-2"])
def test_the_script_refuses_fewer_than_one_seed(seeds: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``--seeds 0`` is a usage error naming the option (it was an IndexError from ``range(0)[-1]``)."""
    with pytest.raises(SystemExit) as exc:
        _extreme_script().main(["--seeds", seeds])
    assert exc.value.code == 2
    assert f"argument --seeds: must be an integer >= 1, got {seeds}" in capsys.readouterr().err
