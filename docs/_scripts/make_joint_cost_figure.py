"""Make ``docs/_static/joint_cost.png``: where the joint step's time and saved memory go.

Reads the committed runs of the current code in ``JOINT_JSONS`` (written by ``benchmarks/bench_joint.py``,
one configuration each: ResNet-18 / 128 px and ResNet-101 / 256 px of 2026-12-06, an AMD EPYC VM of family
26) and draws, per
configuration, one ``joint_hard_ti`` training step as a stacked bar in units of DeepLabV3+ alone's step.
Left, time: DeepLabV3+ counts 1, and the measured overhead above it is split over the other parts in
proportion to their times in the breakdown (each part timed alone, forward + backward; timed alone they add
up to more than the full step, and the VM's speed drifts between the two measurements, so only their shares
are used). Right, the activation bytes each part saves for backward (exact; a storage shared by two parts
counts twice, so the stack can end a little past the full step). A black bar marks the full step as
measured, a red dashed one the target of issue 11 where there is one: drawn behind the bars and taller than
the black one, with a red triangle at each end pointing at the bar, so it shows above and below the bar
even where it falls inside a part (the parts' hatching stays whole) or on the black bar (ResNet-18's memory
target 2.2x against its 2.19x step). Each part has a hatch pattern as well as a colour (Okabe-Ito), so the
parts stay apart with red-green colour blindness and in grayscale print. A part worth a value label
(``LABEL_MIN``) gets it inside its segment where the label fits there, measured in pixels once the layout is
done; otherwise above the bar, joined to its segment by a short leader line.

Run from the repository root: ``python docs/_scripts/make_joint_cost_figure.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[2]
#: the runs drawn, one configuration each (same row and breakdown schema as ``joint.json``, which holds both
#: configurations of 2026-12-01, the code of that day)
JOINT_JSONS = (
    ROOT / "benchmarks" / "results" / "joint_resnet18_20261206_f26_series_10_epyc.json",
    ROOT / "benchmarks" / "results" / "joint_resnet101_20261206_f26_epyc.json",
)
OUT = ROOT / "docs" / "_static" / "joint_cost.png"

#: configurations drawn (top to bottom): key in the results, label, time target, saved-memory target
CONFIGS = (
    ("cpu_resnet18_b2_128", "ResNet-18\nB=2, 128 px", 1.5, 2.2),
    ("cpu_resnet101_b2_256", "ResNet-101\nB=2, 256 px", 1.35, None),
)
PART_COLOURS = {
    "DeepLabV3+": "#9e9e9e",
    "SpixelFCN": "#0072b2",
    "superpixel ids": "#cc79a7",
    "uniformization": "#56b4e9",
    "fusion": "#e69f00",
    "loss": "#009e73",
}
#: the parts' hatch patterns: told apart without their colours
PART_HATCHES = {
    "DeepLabV3+": "",
    "SpixelFCN": "//",
    "superpixel ids": "..",
    "uniformization": "xx",
    "fusion": "\\\\",
    "loss": "++",
}
#: a part's value is written on the figure where it is above this (in units of DeepLabV3+ alone)
LABEL_MIN = 0.12
#: the figure's resolution (labels are fitted to their segments in its pixels)
DPI = 130
#: the bars' half height, the black step bar's and the red target's (in rows; the target reaches past the
#: step bar so it shows where the two fall on one another)
BAR_HALF, STEP_HALF, TARGET_HALF = 0.3, 0.42, 0.56
#: the red of the targets
TARGET_COLOUR = "#c44e52"
#: room in pixels (at the figure's 130 dpi) kept between a value label's box and its segment's edges
LABEL_MARGIN_PX = 0.5


def _ink(colour: str) -> str:
    """Black or white, whichever reads better on ``colour`` (``#rrggbb``): relative luminance above 0.3:
    black."""
    srgb = [int(colour[k : k + 2], 16) / 255 for k in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in srgb]
    return "black" if 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] > 0.3 else "white"


def _row(result: dict[str, Any], variant: str) -> dict[str, Any]:
    for row in result["rows"]:
        if row["variant"] == variant:
            return row
    raise KeyError(f"variant {variant!r} not in the result rows {[r['variant'] for r in result['rows']]}")


def bars(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one configuration, in units of DeepLabV3+ alone's step time and saved bytes."""
    deeplab, joint = _row(result, "deeplab"), _row(result, "joint_hard_ti")
    parts = result["breakdown"]["parts"]
    t0 = deeplab["median_s"]
    m0 = deeplab["memory_bytes"]["saved_activations"]
    # time: DeepLabV3+ counts 1.0; the measured overhead above it is split in proportion to the other parts
    # timed alone (their absolute times drift with the VM between two measurements, their shares less so)
    others = {name: p["median_s"] for name, p in parts.items() if name != "DeepLabV3+"}
    overhead = joint["time_ratio"] - 1.0
    total = sum(others.values())
    time_parts = {"DeepLabV3+": 1.0} | {name: overhead * t / total for name, t in others.items()}
    return {
        "time_parts": time_parts,
        "memory_parts": {name: p["saved_bytes"] / m0 for name, p in parts.items()},
        "time_full": joint["time_ratio"],
        "time_paired": joint["time_ratio_paired"],
        "memory_full": joint["memory_ratio"],
        "deeplab_ms": 1e3 * t0,
        "deeplab_mib": m0 / 2**20,
    }


def load(paths: tuple[Path, ...] = JOINT_JSONS) -> dict[str, Any]:
    """The configurations of the result files ``paths``, merged into one dictionary (a key in two files is an
    error: which run to draw would be ambiguous)."""
    results: dict[str, Any] = {}
    for path in paths:
        for key, result in json.loads(path.read_text()).items():
            if key in results:
                raise ValueError(f"configuration {key!r} in more than one of {[str(p) for p in paths]}")
            results[key] = result
    return results


def _place_labels(fig: Any, labels: list[tuple[Any, Any, Any, float]]) -> None:
    """Keep each value label (text, its segment's bar, its axes, its row) inside its segment where its box
    fits there, measured in pixels on the laid-out figure. Move the others out of the bar: above it (else
    below), at the first place, from the segment's middle outwards, where the box covers no bar, line or
    other text, joined to the segment by a leader line."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for text, bar, ax, y in labels:
        seg = bar.get_window_extent(renderer)
        box = text.get_bbox_patch().get_window_extent(renderer)
        if box.x0 >= seg.x0 + LABEL_MARGIN_PX and box.x1 <= seg.x1 - LABEL_MARGIN_PX:
            continue
        obstacles = (
            [p.get_window_extent(renderer) for p in ax.patches if p.get_width() > 0]
            + [line.get_window_extent(renderer) for line in ax.get_lines()]
            + [(t.get_bbox_patch() or t).get_window_extent(renderer) for t in ax.texts if t is not text]
        )
        mid = bar.get_x() + bar.get_width() / 2
        # rows grow downwards (the y axis is inverted): above the bar is y - BAR_HALF
        sides = ((y - BAR_HALF, y - BAR_HALF - 0.16, "bottom"), (y + BAR_HALF, y + BAR_HALF + 0.16, "top"))
        for edge, end, va in sides:
            mid_px = ax.transData.transform((mid, end))[0]
            for shift in (0, *(sign * step for step in range(2, 80, 2) for sign in (1, -1))):
                x = ax.transData.inverted().transform((mid_px + shift, 0))[0]
                text.set_position((x, end))
                text.set_va(va)
                text.draw(renderer)  # moves its box patch along
                box = text.get_bbox_patch().get_window_extent(renderer)
                if not any(box.overlaps(o) for o in obstacles):
                    ax.plot([mid, x], [edge, end], color="#333333", lw=0.8, zorder=2.5)
                    break
            else:
                continue
            break
        else:
            raise RuntimeError(f"no room for the value label {text.get_text()!r} outside its bar")


def draw(results: dict[str, Any], out: Path) -> None:
    """Draw the figure from the ``bench_joint.py`` results ``results`` (configuration -> result) into ``out``
    (PNG)."""
    configs = [c for c in CONFIGS if c[0] in results]
    if not configs:
        raise ValueError(f"none of {[c[0] for c in CONFIGS]} in the results (keys: {sorted(results)})")
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 1.3 * len(configs)), sharey=True, dpi=DPI)
    labels: list[tuple[Any, Any, Any, float]] = []
    for ax, kind, title in (
        (axes[0], "time", "training step time, x DeepLabV3+ alone"),
        (axes[1], "memory", "activations saved for backward, x DeepLabV3+ alone"),
    ):
        ax.set_axisbelow(True)  # the grid under the targets, the targets under the bars
        for y, (key, _, time_target, memory_target) in enumerate(configs):
            b = bars(results[key])
            left = 0.0
            for name, value in b[f"{kind}_parts"].items():
                colour, hatch = PART_COLOURS.get(name, "#cccccc"), PART_HATCHES.get(name, "")
                (bar,) = ax.barh(
                    y, value, left=left, color=colour, edgecolor="white", hatch=hatch, height=2 * BAR_HALF
                )
                if value > LABEL_MIN:
                    mid, ink = left + value / 2, _ink(colour)
                    box = {"boxstyle": "round,pad=0.15", "facecolor": colour, "edgecolor": "none"}
                    text = ax.text(
                        mid,
                        y,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color=ink,
                        bbox=box,
                        zorder=3,
                    )
                    labels.append((text, bar, ax, y))
                left += value
            full = b[f"{kind}_full"]
            target = time_target if kind == "time" else memory_target
            right = max(full, left, target or 0.0) + 0.05
            ax.plot([full, full], [y - STEP_HALF, y + STEP_HALF], color="black", lw=2.5, zorder=2)
            note = f"step {full:.2f}x" + (f" (paired {b['time_paired']:.2f}x)" if kind == "time" else "")
            ax.text(right, y - 0.18, note, va="center", fontsize=8)
            if target is not None:
                # behind the bars (their hatching stays whole) and past the black bar's ends, with a
                # triangle at each end pointing at the bar: it shows even on the black bar
                ax.plot(
                    [target, target],
                    [y - TARGET_HALF, y + TARGET_HALF],
                    color=TARGET_COLOUR,
                    lw=1.8,
                    ls="--",
                    zorder=0.9,
                )
                for end, marker in ((y - TARGET_HALF, "v"), (y + TARGET_HALF, "^")):
                    ax.plot(
                        [target],
                        [end],
                        marker=marker,
                        color=TARGET_COLOUR,
                        markersize=6,
                        ls="none",
                        zorder=2.6,
                    )
                ax.text(
                    right, y + 0.18, f"target {target:.2f}x", va="center", fontsize=8, color=TARGET_COLOUR
                )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ratio to DeepLabV3+ alone (dotted: 1)", fontsize=9)
        ax.set_xlim(0, 4.2 if kind == "memory" else 2.6)
        ax.axvline(1.0, color="#555555", lw=0.8, ls=":")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(configs)), [c[1] for c in configs], fontsize=9)
    axes[0].set_ylim(len(configs) - 1 + TARGET_HALF + 0.14, -TARGET_HALF - 0.14)  # inverted: first on top
    handles = [
        plt.Rectangle((0, 0), 1, 1, facecolor=c, edgecolor="white", hatch=PART_HATCHES[n])
        for n, c in PART_COLOURS.items()
    ]
    fig.legend(
        handles,
        list(PART_COLOURS),
        loc="lower center",
        ncol=len(PART_COLOURS),
        fontsize=9,
        frameon=False,
        handlelength=3,
        handleheight=1.5,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    _place_labels(fig, labels)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


if __name__ == "__main__":
    draw(load(), OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
    sys.exit(0)
