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
measured, a red dashed one the target of issue 11 where there is one. Each part has a hatch pattern as well
as a colour (Okabe-Ito), so the parts stay apart with red-green colour blindness and in grayscale print.

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


def draw(results: dict[str, Any], out: Path) -> None:
    """Draw the figure from the ``bench_joint.py`` results ``results`` (configuration -> result) into ``out``
    (PNG)."""
    configs = [c for c in CONFIGS if c[0] in results]
    if not configs:
        raise ValueError(f"none of {[c[0] for c in CONFIGS]} in the results (keys: {sorted(results)})")
    fig, axes = plt.subplots(1, 2, figsize=(11, 1.2 + 1.3 * len(configs)), sharey=True)
    for ax, kind, title in (
        (axes[0], "time", "training step time, x DeepLabV3+ alone"),
        (axes[1], "memory", "activations saved for backward, x DeepLabV3+ alone"),
    ):
        for y, (key, _, time_target, memory_target) in enumerate(configs):
            b = bars(results[key])
            left = 0.0
            for name, value in b[f"{kind}_parts"].items():
                colour, hatch = PART_COLOURS.get(name, "#cccccc"), PART_HATCHES.get(name, "")
                ax.barh(y, value, left=left, color=colour, edgecolor="white", hatch=hatch, height=0.6)
                if value > 0.12:
                    mid, ink = left + value / 2, _ink(colour)
                    box = {"boxstyle": "round,pad=0.15", "facecolor": colour, "edgecolor": "none"}
                    ax.text(mid, y, f"{value:.2f}", ha="center", va="center", fontsize=8, color=ink, bbox=box)
                left += value
            full = b[f"{kind}_full"]
            target = time_target if kind == "time" else memory_target
            right = max(full, left, target or 0.0) + 0.05
            ax.plot([full, full], [y - 0.42, y + 0.42], color="black", lw=2.5)
            note = f"step {full:.2f}x" + (f" (paired {b['time_paired']:.2f}x)" if kind == "time" else "")
            ax.text(right, y - 0.18, note, va="center", fontsize=8)
            if target is not None:
                ax.plot([target, target], [y - 0.42, y + 0.42], color="#c44e52", lw=1.8, ls="--")
                ax.text(right, y + 0.18, f"target {target:.2f}x", va="center", fontsize=8, color="#c44e52")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("ratio to DeepLabV3+ alone (dotted: 1)", fontsize=9)
        ax.set_xlim(0, 4.2 if kind == "memory" else 2.6)
        ax.axvline(1.0, color="#555555", lw=0.8, ls=":")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(configs)), [c[1] for c in configs], fontsize=9)
    axes[0].invert_yaxis()
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
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    draw(load(), OUT)
    print(f"wrote {OUT.relative_to(ROOT)}")
    sys.exit(0)
