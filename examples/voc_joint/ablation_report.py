"""The ablation's report: ``ablation.md`` (mean +- std per variant over seeds, paired differences to
``transparent``) and ``ablation.png`` (mIoU, its paired difference and the loss against step), from the rows
:mod:`examples.voc_joint.ablation` writes into ``ablation.json``.

No training here: :func:`redraw_figure` draws the figure of a finished ablation again from its JSON alone.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from examples.voc_joint.atomic import write_bytes_atomic
from examples.voc_joint.cli import UsageError
from examples.voc_joint.models.joint import DEFAULT_FUSION_HIDDEN, FUSION_INITS
from examples.voc_joint.wording import counted

__all__ = [
    "CONTROLS",
    "PLOT_STYLES",
    "SYNTHETIC",
    "TABLE_BAND",
    "VARIANTS",
    "figure_title",
    "format_markdown",
    "plot",
    "redraw_figure",
    "reloaded_row",
    "summarize",
]

#: The demo's controls: DeepLabV3+ fine-tuned alike (no superpixels), uniformization without fusion.
CONTROLS = ("no_superpixels", "no_fusion")
#: How the titles of ``ablation.md`` and ``ablation.png`` name the bundled data set (else ``data: <root>``).
SYNTHETIC = "synthetic VOC"
#: Every row of the ablation, in table order.
VARIANTS: tuple[str, ...] = (*FUSION_INITS, *CONTROLS)
#: How ``ablation.png`` draws each row: colour (Okabe-Ito, told apart with red-green colour blindness), marker
#: and line style; no two rows share a marker, so the lines stay apart in grayscale too. Controls are dashed.
PLOT_STYLES: dict[str, dict[str, str]] = {
    "transparent": {"color": "#000000", "marker": "o", "linestyle": "-"},
    "xavier": {"color": "#E69F00", "marker": "s", "linestyle": "-"},
    "kaiming": {"color": "#56B4E9", "marker": "^", "linestyle": "-"},
    "net2net": {"color": "#009E73", "marker": "D", "linestyle": "-"},
    "zero_residual": {"color": "#0072B2", "marker": "v", "linestyle": "-"},
    "no_superpixels": {"color": "#D55E00", "marker": "P", "linestyle": "--"},
    "no_fusion": {"color": "#CC79A7", "marker": "X", "linestyle": "--"},
}
#: The boundary band shown in the Markdown table (pixels on each side of a ground-truth edge).
TABLE_BAND = "3"


def reloaded_row(row: Any) -> Any:
    """A row of ``ablation.json`` as it was before it was written: every ``null`` back to NaN.

    ``ablation.json`` is strict JSON, so a NaN score (a validation subset with no valid pixel in a boundary
    band) is written as ``null``; the summary and the figure of a continued ablation read such rows again.

    Example:
        >>> reloaded_row({"miou": None, "boundary_miou": {"3": 0.5}, "curve": [{"step": 0, "miou": None}]})
        {'miou': nan, 'boundary_miou': {'3': 0.5}, 'curve': [{'step': 0, 'miou': nan}]}
    """
    if row is None:
        return math.nan
    if isinstance(row, dict):
        return {k: reloaded_row(v) for k, v in row.items()}
    if isinstance(row, list):
        return [reloaded_row(v) for v in row]
    return row


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value; NaN when a value is NaN or infinite,
    which ``statistics.stdev`` does not compute).

    Example:
        >>> _mean_std([0.5, 0.7]), _mean_std([0.5]), _mean_std([0.5, math.nan])
        ((0.6, 0.14142135623730948), (0.5, None), (nan, nan))
    """
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    return mean, statistics.stdev(values) if all(map(math.isfinite, values)) else math.nan


def summarize(rows: Sequence[dict[str, Any]], band: str = TABLE_BAND) -> list[dict[str, Any]]:
    """Per variant (table order): the seeds, mean and std of step-0 / final mIoU and boundary mIoU, and the
    paired differences to ``transparent`` (same seed) with their spread and the number of seeds it wins.

    Example:
        >>> rows = [
        ...     {"init": i, "seed": s, "step0_miou": m0, "miou": m, "boundary_miou": {"3": m}}
        ...     for i, s, m0, m in [("transparent", 0, .2, .5), ("transparent", 1, .2, .6),
        ...                         ("xavier", 0, .0, .4), ("xavier", 1, .0, .7)]
        ... ]
        >>> s = summarize(rows)[1]
        >>> s["init"], s["seeds"], round(s["miou"][0], 3), round(s["diff_miou"][0], 3), s["wins"]
        ('xavier', 2, 0.55, 0.0, 1)
    """
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["init"], {})[int(r["seed"])] = r
    ref = by.get("transparent", {})
    order = [v for v in VARIANTS if v in by] + sorted(v for v in by if v not in VARIANTS)
    out = []
    for variant in order:
        runs = by[variant]
        seeds = sorted(runs)
        entry: dict[str, Any] = {
            "init": variant,
            "seeds": len(seeds),
            "step0_miou": _mean_std([runs[s]["step0_miou"] for s in seeds]),
            "miou": _mean_std([runs[s]["miou"] for s in seeds]),
            "boundary_miou": _mean_std([runs[s]["boundary_miou"][band] for s in seeds]),
        }
        paired = [s for s in seeds if s in ref]
        if variant != "transparent" and paired:
            diffs = [runs[s]["miou"] - ref[s]["miou"] for s in paired]
            entry["diff_step0_miou"] = _mean_std(
                [runs[s]["step0_miou"] - ref[s]["step0_miou"] for s in paired]
            )
            entry["diff_miou"] = _mean_std(diffs)
            entry["diff_boundary_miou"] = _mean_std(
                [runs[s]["boundary_miou"][band] - ref[s]["boundary_miou"][band] for s in paired]
            )
            entry["paired_seeds"] = len(paired)
            entry["wins"] = sum(d > 0 for d in diffs)
        out.append(entry)
    return out


def _pm(ms: tuple[float, float | None] | None, signed: bool = False) -> str:
    if ms is None:
        return "-"
    mean, std = ms
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    return text + (f" ± {100 * std:.1f}" if std is not None else "")


def format_markdown(
    summary: Sequence[dict[str, Any]], settings: dict[str, Any], *, data: str = SYNTHETIC
) -> str:
    """``ablation.md``: the settings, the mean +- std table and the paired differences to ``transparent``;
    ``data`` names the data set in the title."""
    seeds = max((s["seeds"] for s in summary), default=0)
    lines = [
        f"# Fusion-initialization ablation (joint DeepLabV3+ + SpixelFCN, {data})",
        "",
        f"{counted(settings['steps'], 'fine-tuning step')} per run from one pair of pretrained checkpoints, "
        f"{counted(seeds, 'seed')} per row, "
        f"{counted(settings['val_images'], 'validation image')} (full size); learning rates: "
        f"networks {settings['joint_lr']:g}, SpixelFCN {settings['joint_lr'] / 10:g}, fusion "
        f"{settings['fusion_lr']:g}.{_widths_note(settings)} mIoU in %, mean ± sample std over seeds; "
        f"boundary mIoU in the {TABLE_BAND} px band.",
        "",
        "| init | seeds | step-0 mIoU | final mIoU | final boundary mIoU |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in summary:
        lines.append(
            f"| {s['init']} | {s['seeds']} | {_pm(s['step0_miou'])} | {_pm(s['miou'])} | "
            f"{_pm(s['boundary_miou'])} |"
        )
    diffs = [s for s in summary if "diff_miou" in s]
    if diffs:
        lines += [
            "",
            "Paired differences to `transparent` (same seed: same data order; percentage points, mean ± "
            "sample std over seeds; wins: seeds where the final mIoU is higher than transparent's):",
            "",
            "| init | step-0 mIoU | final mIoU | final boundary mIoU | wins |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in diffs:
            lines.append(
                f"| {s['init']} | {_pm(s['diff_step0_miou'], True)} | {_pm(s['diff_miou'], True)} | "
                f"{_pm(s['diff_boundary_miou'], True)} | {s['wins']}/{s['paired_seeds']} |"
            )
    return "\n".join(lines) + "\n"


def _other_widths(settings: dict[str, Any]) -> str | None:
    """The fusion widths of ``settings`` as text (``"64"``) where they are not the default (the paper's, which
    every ablation recorded before ``--fusion-hidden`` existed had), else ``None``."""
    widths = list(settings.get("fusion_hidden", DEFAULT_FUSION_HIDDEN))
    return None if widths == list(DEFAULT_FUSION_HIDDEN) else " ".join(map(str, widths))


def _widths_note(settings: dict[str, Any]) -> str:
    """`` Fusion stack: hidden widths 64 (not the paper's).`` for widths not the default, else ``""``."""
    widths = _other_widths(settings)
    return "" if widths is None else f" Fusion stack: hidden widths {widths} (not the paper's)."


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """``ablation.png``: against the fine-tuning step, one line per init (the mean over seeds) with the seeds'
    range shaded: validation mIoU; its paired difference to ``transparent`` (same seed); the training loss.

    The loss panel (log scale) shows a centred 5-step running mean of each seed's loss (the per-step loss of a
    batch of 8 crops is noisy). The file is written whole or not at all
    (``examples.voc_joint.atomic.write_bytes_atomic``): a failed or stopped write leaves the earlier one.

    Raises:
        ValueError: ``rows`` is empty (no run to draw).
    """
    if not rows:  # was matplotlib's "number sections must be larger than 0." from the legend
        raise ValueError("rows: expected the rows of at least one run, got none")
    import matplotlib
    import matplotlib.ticker
    import numpy as np
    from matplotlib.figure import Figure

    # a Figure of its own, not pyplot's: the caller's matplotlib backend and pyplot figures are left alone
    # (matplotlib.use("Agg") here switched the backend of the whole process, e.g. of a notebook)
    # 12 pt: the figure is 15 inches wide and the docs show it at about half its size
    with matplotlib.rc_context({"font.size": 12}):
        fig = Figure(figsize=(15, 5.2), layout="constrained")
        ax_m, ax_d, ax_l = fig.subplots(1, 3)
        by: dict[str, dict[int, dict[str, Any]]] = {}
        for r in rows:
            by.setdefault(r["init"], {})[int(r["seed"])] = r
        ref = by.get("transparent", {})
        for variant in (v for v in VARIANTS if v in by):
            runs = by[variant]
            style: dict[str, Any] = {**PLOT_STYLES[variant], "markersize": 6}
            band: dict[str, Any] = {"color": style["color"], "alpha": 0.15, "linewidth": 0}
            first = next(iter(runs.values()))
            steps = [p["step"] for p in first["curve"] if "miou" in p]
            miou = np.array([[_at(r, s, "miou") for s in steps] for r in runs.values()]) * 100
            label = f"{variant} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
            ax_m.plot(steps, miou.mean(0), label=label, **style)
            paired = [s for s in runs if s in ref]
            if variant != "transparent" and paired:
                diff = np.array(
                    [[_at(runs[s], t, "miou") - _at(ref[s], t, "miou") for t in steps] for s in paired]
                )
                ax_d.plot(steps, 100 * diff.mean(0), **style)
            else:
                diff = None
            lsteps = [p["step"] for p in first["curve"] if "loss" in p]
            loss = (
                np.array([_smooth([_at(r, s, "loss") for s in lsteps]) for r in runs.values()])
                if lsteps
                else None
            )
            if loss is not None:
                ax_l.plot(
                    lsteps, loss.mean(0), markevery=max(1, len(lsteps) // 8), **style
                )  # about 8 markers
            if len(runs) > 1:
                ax_m.fill_between(steps, miou.min(0), miou.max(0), **band)
                if diff is not None:
                    ax_d.fill_between(steps, 100 * diff.min(0), 100 * diff.max(0), **band)
                if loss is not None:
                    ax_l.fill_between(lsteps, loss.min(0), loss.max(0), **band)
        ax_m.set(
            xlabel="fine-tuning step",
            ylabel="validation mIoU (%)",
            title="validation mIoU (mean; band: seeds' range)",
        )
        ax_d.set(
            xlabel="fine-tuning step",
            ylabel="mIoU - transparent's, same seed (points)",
            title="paired difference to transparent (symlog)",
        )
        ax_d.axhline(0.0, color="black", linewidth=0.8)
        ax_d.set_yscale("symlog", linthresh=2.0)  # linear within +-2 points, logarithmic beyond
        ax_l.set(
            xlabel="fine-tuning step",
            ylabel="training loss (5-step running mean)",
            title="training loss (log scale)",
            yscale="log",
        )
        ticks = [-100, -30, -10, -3, -1, 0, 1, 3, 10, 30, 100]
        ax_d.yaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        ax_l.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        ax_l.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        for axis in (ax_d.yaxis, ax_l.yaxis):
            axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        for ax in (ax_m, ax_d, ax_l):
            ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncol=min(len(by), 4))
        if title:
            fig.suptitle(title)
        path.parent.mkdir(parents=True, exist_ok=True)
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        write_bytes_atomic(path, png.getvalue())  # a full disk or a stop leaves the earlier figure
    return path


def figure_title(settings: dict[str, Any], seeds: int, *, data: str = SYNTHETIC) -> str:
    """The title of ``ablation.png`` for an ablation of ``settings`` (as ``ablation.json`` records them) over
    ``seeds`` seeds; ``data`` names the data set, as in the title of ``ablation.md``.

    Example:
        >>> figure_title({"steps": 40, "val_images": 16}, 3)
        'joint model, synthetic VOC: 40 fine-tuning steps, 3 seeds, 16 val images'
    """
    widths = _other_widths(settings)
    return (
        f"joint model, {data}: {counted(settings['steps'], 'fine-tuning step')}, {counted(seeds, 'seed')}, "
        f"{counted(settings['val_images'], 'val image')}" + ("" if widths is None else f", fusion {widths}")
    )


def redraw_figure(folder: str | Path) -> Path:
    """Draw ``ablation.png`` again from the rows of the finished ``ablation.json`` in ``folder``, without
    training (after a change of :func:`plot`, or a lost figure).

    Returns:
        Path: the figure written (``folder/ablation.png``).

    Raises:
        UsageError: ``folder`` holds no ``ablation.json``, an unfinished one, or one that is no ablation's
            record (not JSON, not an object, rows or settings missing or of other types), naming the file.
    """
    path = Path(folder) / "ablation.json"
    if not path.is_file():
        raise UsageError(f"folder: expected a folder with an ablation.json, found none in {str(folder)!r}")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # (raw errors before: a cut or foreign file)
        raise UsageError(f"folder: {str(path)!r} is not an ablation's record (not JSON: {exc})") from None
    if not isinstance(result, dict):
        raise UsageError(
            f"folder: {str(path)!r} is not an ablation's record (a JSON {type(result).__name__}, not an "
            "object)"
        )
    if not result.get("complete"):
        raise UsageError(f"folder: {str(path)!r} holds an unfinished ablation (its rerun draws the figure)")
    try:
        if not isinstance(result["rows"], list) or not all(map(_drawable, result["rows"])):
            raise ValueError("a row without init, seed or a curve of steps")
        rows = [reloaded_row(r) for r in result["rows"]]
        seeds = len({int(r["seed"]) for r in rows})
        # "data" is recorded since the title names a --data-root: a JSON without it is of the synthetic set
        title = figure_title(result["settings"], seeds, data=result.get("data", SYNTHETIC))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"folder: {str(path)!r} is not an ablation's record (its rows or settings are damaged: "
            f"{type(exc).__name__}: {exc})"
        ) from None
    if not rows:
        raise UsageError(f"folder: {str(path)!r} holds no rows to draw")
    return plot(rows, path.with_suffix(".png"), title)


def _drawable(row: Any) -> bool:
    """Whether ``row`` has what :func:`plot` reads: ``init``, ``seed``, a ``curve`` of points with steps."""
    return (
        isinstance(row, dict)
        and isinstance(row.get("init"), str)
        and isinstance(row.get("curve"), list)
        and "seed" in row
        and all(isinstance(p, dict) and "step" in p for p in row["curve"])
    )


def _at(row: dict[str, Any], step: int, key: str) -> float:
    return float(next(p[key] for p in row["curve"] if p["step"] == step and key in p))


def _smooth(values: list[float], width: int = 5) -> list[float]:
    half = width // 2
    return [statistics.fmean(values[max(0, i - half) : i + half + 1]) for i in range(len(values))]
