"""Make ``docs/_static/uniformize_speed.png``: uniformization's forward + backward time against N_s.

Reads committed runs (B=4, C=21, 512 x 512, float32, 2 threads): ``benchmarks/bench_uniformize.py`` with the
current code on the Intel Xeon VM of 2026-11-30 and with the previous implementation (before the bounded
accumulation chains) on the AMD EPYC VM of 2026-11-26, and ``benchmarks/ab_uniformize.py``, the two
implementations alternating on the Xeon in one session. Left: milliseconds of forward + backward per variant
of the current run (log scales). Right: the op's ratio to the ``x * 1`` floor (round-robin sweeps as lines,
paired per-configuration ratios as circles, A/B processes as crosses: x current, + previous), with the
target of issue 9 dash-dotted. Around each N_s the markers are spread side by side, one column per estimate
(previous code's processes left, the paired ratio on the N_s tick, the current code's processes right), so
that none covers another; the x ticks are the measured N_s only.

Run from the repository root: ``python docs/_scripts/make_uniformize_speed_figure.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CURRENT = RESULTS / "bench_uniformize_cpu_20261130_xeon.json"
PREVIOUS = RESULTS / "bench_uniformize_cpu_quiet.json"
AB = RESULTS / "ab_uniformize_20261130_xeon.json"
OUT = ROOT / "docs" / "_static" / "uniformize_speed.png"
TARGET = 1.45
#: horizontal spacing of the marker columns around each N_s on the right panel, in octaves (log2 N_s): one
#: column per estimate, so no two markers overlap whatever their values (an A/B cross is 8 points wide)
STEP = 0.3

#: variants drawn on the left: key in the result files, legend label, colour, marker and line style (markers
#: and styles tell the lines apart without colour: red-green colour blindness, grayscale print)
VARIANTS = (
    ("floor", "floor: y = x * 1", "#9e9e9e", "o", ":"),
    ("scatter", "uniformize (this library)", "#dd8452", "s", "-"),
    ("sparse", 'uniformize, backend="sparse"', "#8172b2", "^", "--"),
    ("paper_coo", "the paper's COO torch.sparse.mm", "#4c72b0", "D", "-."),
    ("torch_scatter", "torch_scatter", "#55a868", "v", (0, (5, 1, 1, 1, 1, 1))),
)


def grid_rows(run: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """``(N_s, results)`` of the grid-label configurations, by ``N_s``."""
    rows = [(c["config"]["N_s"], c["results"]) for c in run["configs"] if c["config"]["labels"] == "grid"]
    if not rows:
        raise ValueError("the run has no grid-label configurations")
    return sorted(rows, key=lambda r: r[0])


def sweep(run: dict[str, Any]) -> list[tuple[int, float]]:
    """``(N_s, x floor)`` of the round-robin sweep's grid rows."""
    return sorted((r["N_s"], r["x_floor"]) for r in run["sweep"]["rows"] if r["labels"] == "grid")


def draw(current: dict[str, Any], previous: dict[str, Any], ab: dict[str, Any], out: Path) -> None:
    """Draw the figure from the three result dictionaries into ``out`` (PNG)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.0))
    rows = grid_rows(current)
    for key, label, colour, marker, style in VARIANTS:
        points = [(n, r[key]["fwd_bwd_ms"]) for n, r in rows if r.get(key, {}).get("fwd_bwd_ms")]
        if points:
            left.plot(*zip(*points, strict=True), color=colour, marker=marker, ls=style, label=label)
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("superpixels per image, N_s (grid labels)")
    left.set_ylabel("forward + backward (ms)")
    date = current["meta"].get("time", "")[:10]
    left.set_title(
        f"current code, Intel Xeon VM, {date}\nmedians of 15 runs (7 for sparse, paper)", fontsize=10
    )
    left.grid(alpha=0.3, which="both")
    left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)

    right.plot(*zip(*sweep(current), strict=True), "-", color="#dd8452", label="current code, Xeon: sweep")
    paired = [(n, r["scatter"]["paired_x_floor"]) for n, r in grid_rows(current)]
    label = "current code, Xeon: paired"
    right.plot(*zip(*paired, strict=True), "o", color="#dd8452", mfc="none", label=label)
    for code, colour, marker, side in (
        ("current", "#dd8452", "x", 1),
        ("previous", "#4c72b0", "+", -1),
    ):
        runs = [r for r in ab["runs"] if r["code"] == code]
        repeats = sorted({r["repeat"] for r in runs})
        # one column per process: STEP, 2 STEP, ... octaves right (current) or left (previous) of the N_s
        points = [
            (r["N_s"] * 2 ** (side * STEP * (1 + repeats.index(r["repeat"]))), r["paired_x_floor"])
            for r in runs
        ]
        label = f"{code} code, Xeon: A/B processes"
        right.plot(*zip(*points, strict=True), marker, ms=8, color=colour, label=label)
    right.plot(*zip(*sweep(previous), strict=True), "--", color="#4c72b0", label="previous code, EPYC: sweep")
    right.axhline(TARGET, color="#c44e52", ls="-.", lw=1.5, label=f"target {TARGET}x (issue 9)")
    right.axhline(1.0, color="#555555", ls=":", lw=0.8)
    right.set_xscale("log", base=2)
    # ticks (and vertical grid lines) only at the measured N_s: each group of markers is centred on its tick
    right.set_xticks([n for n, _ in paired])
    right.xaxis.set_minor_locator(NullLocator())
    right.set_ylim(0.9, 2.4)
    right.set_xlabel("superpixels per image, N_s (grid labels; markers spread around each N_s)")
    right.set_ylabel("forward + backward, x the floor")
    right.set_title("ratio to the floor: flat in N_s; its level moved with the machine", fontsize=10)
    right.grid(alpha=0.3, which="both")
    right.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below: covers no data
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    draw(*(json.loads(path.read_text()) for path in (CURRENT, PREVIOUS, AB)), OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
