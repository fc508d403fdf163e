"""Make ``docs/_static/joint_runs.png``: every committed run of the joint step's cost, against its target.

Reads every ``benchmarks/results/joint_[levers_]resnet{18,101}_YYYYMMDD_*.json`` measured on the AMD EPYC
VMs (``epyc`` in the name; ``benchmarks/bench_joint.py``, each with the training CLI's defaults of its day)
and draws, per configuration, the paired time ratio of ``joint_hard_ti`` to DeepLabV3+ alone (the median over
rounds of the per-round ratio) of each run, in the order they ran: the runs of the current code (857b2f8 on,
measured on an EPYC of family 26) as filled diamonds, those of the code before it (98aee38 to c021a06) as
filled circles, those of earlier code as hollow squares, the current code's runs on an EPYC of family 25
(Zen 3, AVX2 only, 2026-12-07) as filled triangles, and the target of issue 11 as a dashed line. Only the
entry of the paper's fusion widths is read from a file that holds other widths too.

Run from the repository root: ``python docs/_scripts/make_joint_runs_figure.py``.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "_static" / "joint_runs.png"

#: configurations drawn (left to right): key in the results, title, the target of issue 11
CONFIGS = (
    ("cpu_resnet18_b2_128", "ResNet-18, B=2, 128 px", 1.5),
    ("cpu_resnet101_b2_256", "ResNet-101, B=2, 256 px", 1.35),
)
#: The runs of the current code of the CPU step on the AMD EPYC VMs, by file-name prefix: since 857b2f8
#: (2026-12-06: a bias's gradient as a sum, chunks of 16384 pixels), measured on an EPYC of family 26 (``f26``
#: in the name; ``cpu_model`` records the family since then), a faster CPU than the EPYC runs before it
#: (DeepLabV3+ alone 113-120 ms a step against 205-242 ms). Its Intel Xeon runs (``_xeon`` files) are not
#: drawn here; the main table of its lever study there is.
LATEST = (
    "joint_resnet18_20261206_f26_",
    "joint_levers_resnet18_20261206_f26_",
    "joint_resnet101_20261206_f26_",
)
#: The runs of the same code on an AMD EPYC of family 25 (Zen 3, AVX2 only; ``f25`` in the name), a slower CPU
#: than family 26 (DeepLabV3+ alone 422-503 ms a step): drawn apart, as a CPU of its own.
LATEST_F25 = ("joint_resnet18_20261207_f25_",)
#: The runs of the code before it, by file-name prefix: from 98aee38 (2026-12-05, evening: the fusion stack's
#: first layer one oneDNN convolution that adds into its superpixel term in place) to c021a06 nothing in the
#: step changed. Every other run drawn is of earlier code.
PREVIOUS = (
    "joint_resnet18_20261205_convadd_",
    "joint_resnet18_20261205_widths_convadd_",
    "joint_levers_resnet18_20261205_epyc",
    "joint_resnet18_20261206_series_",
    "joint_resnet101_20261205_convadd_",
    "joint_resnet101_20261205_transcript_",
)
_NAME = re.compile(r"joint_(?:levers_)?resnet(?:18|101)_(\d{8})_\w*\.json")
#: the kinds of run, in drawing order, with their legend labels
KINDS = {
    "earlier": "earlier code",
    "previous": "code of 98aee38-c021a06",
    "latest": "current code (857b2f8 on), EPYC family 26",
    "latest_f25": "current code, EPYC family 25",
}
#: how the kinds of run are drawn: apart by marker and fill, not by colour alone
STYLES = {
    "latest": {"marker": "D", "color": "#0072b2", "markerfacecolor": "#0072b2", "linestyle": "none"},
    "previous": {"marker": "o", "color": "#000000", "markerfacecolor": "#000000", "linestyle": "none"},
    "earlier": {"marker": "s", "color": "#777777", "markerfacecolor": "none", "linestyle": "none"},
    "latest_f25": {"marker": "^", "color": "#009e73", "markerfacecolor": "#009e73", "linestyle": "none"},
}


def kind_of(name: str) -> str:
    """``"latest"``, ``"latest_f25"``, ``"previous"`` or ``"earlier"``: the code a result file's runs are of
    (and, for the current code, the CPU), by its name."""
    if name.startswith(LATEST_F25):
        return "latest_f25"
    if name.startswith(LATEST):
        return "latest"
    return "previous" if name.startswith(PREVIOUS) else "earlier"


def runs(key: str, results: Path = RESULTS) -> list[dict[str, Any]]:
    """The runs of configuration ``key`` in the order they ran (by the date in the file name, then the time
    a run records, then the name with its numbers as numbers; runs that record no time, before 2026-12-05
    evening, count as earlier that day): ``{"name", "date", "time", "paired", "kind"}`` each (``kind``:
    :func:`kind_of`)."""
    found = []
    for path in sorted(results.glob("joint_*resnet*_2026*.json")):
        match = _NAME.fullmatch(path.name)
        if match is None or "epyc" not in path.name:
            continue
        entry = json.loads(path.read_text(encoding="utf-8")).get(key)
        if entry is None:
            continue
        row = next(r for r in entry["rows"] if r["variant"] == "joint_hard_ti")
        found.append(
            {
                "name": path.name,
                "date": match.group(1),
                "time": str(entry.get("machine", {}).get("time", "")),
                "paired": float(row["time_ratio_paired"]),
                "kind": kind_of(path.name),
            }
        )
    return sorted(found, key=lambda r: (r["date"], r["time"], natural_key(r["name"])))


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """``name`` ordered with its numbers as numbers: runs of a series that record the same minute stay in the
    order they ran (``..._sort_9_...`` before ``..._sort_10_...``)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part)


def summary(rows: list[dict[str, Any]]) -> str:
    """``"n runs, median m (lo-hi)"`` of the paired ratios of ``rows``."""
    values = [r["paired"] for r in rows]
    return (
        f"{len(values)} run{'s' if len(values) != 1 else ''}, median {statistics.median(values):.2f}x "
        f"({min(values):.2f}-{max(values):.2f}x)"
    )


def draw(out: Path = OUT, results: Path = RESULTS) -> Path:
    """Draw the figure into ``out``.

    Raises:
        ValueError: a configuration of :data:`CONFIGS` without a run of the current code (:data:`LATEST`).
    """
    drawn = []
    for key, _, _ in CONFIGS:
        rows = runs(key, results)
        if not any(r["kind"] == "latest" for r in rows):
            raise ValueError(f"{key}: no run of the latest code (a name starting with one of {LATEST})")
        drawn.append(rows)
    with plt.rc_context({"font.size": 11}):
        fig, axes = plt.subplots(len(CONFIGS), 1, figsize=(11, 4 * len(CONFIGS)), layout="constrained")
        for ax, (_, title, target), rows in zip(axes, CONFIGS, drawn, strict=True):
            for kind, name in KINDS.items():
                picked = [(i, r["paired"]) for i, r in enumerate(rows) if r["kind"] == kind]
                if picked:
                    xs, ys = zip(*picked, strict=True)
                    label = f"{name}: " + summary([r for r in rows if r["kind"] == kind])
                    ax.plot(xs, ys, markersize=6, label=label, **STYLES[kind])
            ax.axhline(target, color="#d55e00", linestyle="--", linewidth=1.5, label=f"target <= {target}x")
            dates = sorted({r["date"] for r in rows})
            starts = [next(i for i, r in enumerate(rows) if r["date"] == d) for d in dates]
            ends = [*starts[1:], len(rows)]
            for start, end in list(zip(starts, ends, strict=True))[1::2]:  # every other date shaded
                ax.axvspan(start - 0.5, end - 0.5, color="#000000", alpha=0.06, linewidth=0)
            ax.set_xticks(
                [(a + b - 1) / 2 for a, b in zip(starts, ends, strict=True)],
                [f"{d[4:6]}-{d[6:]}" for d in dates],
            )
            ax.set_xlim(-0.8, len(rows) - 0.2)
            values = [r["paired"] for r in rows]
            low, high = min(*values, target), max(*values, target)
            ax.set_ylim(low - 0.03, high + 0.12 * (high - low + 0.1) + 0.1)
            ax.set(
                title=title,
                xlabel="run, in the order they ran (2026, date: month-day)",
                ylabel="joint step / DeepLabV3+ step (paired)",
            )
            ax.grid(axis="y", alpha=0.3)
            ax.legend(loc="upper right", fontsize=10)
        fig.suptitle(
            "Joint training step (joint_hard_ti, the training CLI's defaults) against DeepLabV3+ alone:\n"
            "every committed run of bench_joint.py, CPU, 2 threads, AMD EPYC VMs"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        plt.close(fig)
    return out


def main(out: Path = OUT) -> None:
    """Draw the figure into ``out`` (PNG); type sizes hold at the docs' column width, about 800 pixels."""
    print(f"wrote {draw(out)}")


if __name__ == "__main__":
    main()
