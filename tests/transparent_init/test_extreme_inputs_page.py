"""The "Extreme inputs" list of docs/concepts/transparent_init.rst: its script runs, and what the page says in
words holds for seed 0 here (the exact ranges on the page are one CPU's; these margins are any CPU's)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "_scripts" / "measure_extreme_inputs.py"


@pytest.fixture(scope="module")
def seed0() -> dict[tuple[str, str], float]:
    """What the script prints for seed 0: ``{(section, label): value}`` (the section up to its colon)."""
    spec = importlib.util.spec_from_file_location("measure_extreme_inputs", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
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
