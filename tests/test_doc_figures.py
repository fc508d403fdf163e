"""The figures of the docs: the scripts under ``docs/_scripts`` still read the committed benchmark results,
and every result file the docs cite is committed."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "_scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_joint_cost_figure_from_the_committed_results(tmp_path: Path) -> None:
    fig = _load("make_joint_cost_figure")
    results = fig.load()
    for key, *_ in fig.CONFIGS:
        b = fig.bars(results[key])
        joint = next(r for r in results[key]["rows"] if r["variant"] == "joint_hard_ti")
        # the time stack ends at the measured step ratio; DeepLabV3+ counts 1
        assert sum(b["time_parts"].values()) == pytest.approx(joint["time_ratio"])
        assert b["time_parts"]["DeepLabV3+"] == 1.0
        assert set(b["time_parts"]) == set(fig.PART_COLOURS) == set(b["memory_parts"])
        # the memory parts are the breakdown's exact bytes; shared storages count twice, never less
        assert sum(b["memory_parts"].values()) >= joint["memory_ratio"] - 1e-9
        assert sum(b["memory_parts"].values()) == pytest.approx(joint["memory_ratio"], rel=0.05)
    out = tmp_path / "joint_cost.png"
    fig.draw(results, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_joint_cost_figure_reads_one_run_per_configuration(tmp_path: Path) -> None:
    """The figure draws every configuration from the committed runs it names; a configuration in two files is
    refused (which run is drawn would depend on the order)."""
    fig = _load("make_joint_cost_figure")
    assert set(fig.load()) == {key for key, *_ in fig.CONFIGS}
    with pytest.raises(ValueError, match="more than one"):
        fig.load((fig.JOINT_JSONS[0], fig.JOINT_JSONS[0]))


def test_joint_cost_figure_refuses_results_without_its_configurations(tmp_path: Path) -> None:
    fig = _load("make_joint_cost_figure")
    with pytest.raises(ValueError, match="cpu_resnet18_b2_128"):
        fig.draw({"cuda_resnet18_b2_128": {}}, tmp_path / "x.png")


def test_uniformize_speed_figure_from_the_committed_results(tmp_path: Path) -> None:
    fig = _load("make_uniformize_speed_figure")
    current, previous, ab = (json.loads(p.read_text()) for p in (fig.CURRENT, fig.PREVIOUS, fig.AB))
    for run in (current, previous):
        rows = fig.grid_rows(run)
        assert [n for n, _ in rows] == sorted(n for n, _ in rows) and len(rows) >= 3
        assert all("paired_x_floor" in r["scatter"] and r["floor"]["fwd_bwd_ms"] > 0 for _, r in rows)
        assert [n for n, _ in fig.sweep(run)] == [n for n, _ in rows]
    assert {r["code"] for r in ab["runs"]} == {"previous", "current"}
    out = tmp_path / "uniformize_speed.png"
    fig.draw(current, previous, ab, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no grid-label configurations"):
        fig.grid_rows({"configs": []})


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the scripts draw, kept from ``plt.close`` to be inspected."""
    import matplotlib.pyplot as plt

    figures: list[Any] = []
    monkeypatch.setattr(plt, "close", figures.append)
    return figures


def _soft_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """soft_neighbours.png's figure as ``make_soft_figure.py`` draws it, rendered (text extents known)."""
    figures = _drawn(monkeypatch)
    _load("make_soft_figure").main(tmp_path / "f.png")
    (fig,) = figures
    fig.canvas.draw()
    return fig


def _nothing_cut_and_legends_clear(fig: Any) -> None:
    """Everything drawn lies inside the figure (no label cut at its edge), and no legend covers a drawn line
    or marker (sampled along each line's segments, in pixels)."""
    import numpy as np

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    drawn = fig.get_tightbbox(renderer)  # inches, every artist drawn
    width, height = fig.get_size_inches()
    assert drawn.x0 > -0.01 and drawn.y0 > -0.01, f"cut at the left or bottom edge: {drawn}"
    assert drawn.x1 < width + 0.01 and drawn.y1 < height + 0.01, f"cut at the right or top edge: {drawn}"
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        for line in ax.get_lines():
            xy = line.get_transform().transform(line.get_xydata())
            if len(xy) > 1 and line.get_linestyle() not in ("None", ""):
                t = np.linspace(0, 1, 50)[:, None]
                xy = np.concatenate([a + t * (b - a) for a, b in itertools.pairwise(xy)])
            inside = (xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) & (xy[:, 1] < box.y1)
            assert not inside.any(), f"the legend covers {line.get_label()!r}"


def _lines_apart_without_colour(ax: Any) -> None:
    """The lines of ``ax`` differ by marker or line style, not only by colour (red-green colour blindness,
    grayscale print)."""
    looks = [(line.get_marker(), line.get_linestyle(), line.get_label()) for line in ax.get_lines()]
    assert len({look[:2] for look in looks}) == len(looks), looks


#: Colour-blind views of linear RGB (Machado, Oliveira and Fernandes 2009, severity 1).
_DEUTERANOPIA = (
    (0.367322, 0.860646, -0.227968),
    (0.280085, 0.672501, 0.047413),
    (-0.011820, 0.042940, 0.968881),
)
_PROTANOPIA = (
    (0.152286, 1.052583, -0.204868),
    (0.114503, 0.786281, 0.099216),
    (-0.003882, -0.048116, 1.051998),
)


def _views(colours: tuple[str, ...]) -> dict[str, Any]:
    """``#rrggbb`` colours as seen with deuteranopia and protanopia (sRGB in [0, 1], ``[n, 3]``) and printed
    in grayscale (lightness in [0, 1], ``[n, 1]``)."""
    import numpy as np

    srgb = np.array([[int(c[k : k + 2], 16) / 255 for k in (1, 3, 5)] for c in colours])
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)

    def back(x: Any) -> Any:
        x = np.clip(x, 0.0, 1.0)
        return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)

    return {
        "deuteranopia": back(lin @ np.array(_DEUTERANOPIA).T),
        "protanopia": back(lin @ np.array(_PROTANOPIA).T),
        "grayscale": back(lin @ np.array([[0.2126], [0.7152], [0.0722]])),
    }


def test_views_of_known_colours() -> None:
    """The simulation itself: gray stays gray; the green and the red of the old uniformization figure, far
    apart for most readers, nearly merge with deuteranopia and protanopia, where its blue stays apart; in
    grayscale all three print alike."""
    import numpy as np

    views = _views(("#808080", "#5a8c5a", "#d94c40", "#4066d9"))
    for view in views.values():
        assert np.allclose(view[0], view[0].mean(), atol=0.01)
    gap = {k: lambda i, j, v=v: float(np.abs(v[i] - v[j]).max()) for k, v in views.items()}
    for name in ("deuteranopia", "protanopia"):
        assert gap[name](1, 2) < 0.15 < 0.5 < gap[name](2, 3)
    assert max(gap["grayscale"](1, 2), gap["grayscale"](1, 3), gap["grayscale"](2, 3)) < 0.1


def test_uniformize_figure_classes_apart_for_colour_blind_readers_and_in_print() -> None:
    """uniformize_figure.png's three classes (background, disc, square) stay apart with deuteranopia and
    protanopia (the old green background and red disc nearly merged) and in grayscale (all three printed as
    the same grey)."""
    import numpy as np

    pytest.importorskip("scipy")
    colours = _load("make_uniformize_figure").CLASS_COLOURS
    for name, view in _views(colours).items():
        for i, j in itertools.combinations(range(len(colours)), 2):
            gap = float(np.abs(view[i] - view[j]).max())
            assert gap >= (0.15 if name == "grayscale" else 0.3), (name, colours[i], colours[j], gap)


def test_joint_cost_figure_reads_without_colour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """joint_cost.png: bars of different parts (colours) differ by hatch too, in the panels and in the legend
    (orange fusion and green loss looked alike with red-green colour blindness, and every part in grayscale);
    nothing is cut at the figure's edge."""
    from matplotlib.colors import to_hex

    fig = _load("make_joint_cost_figure")
    figures = _drawn(monkeypatch)
    fig.draw(fig.load(), tmp_path / "j.png")
    (drawn,) = figures
    patches = [p for ax in drawn.axes for p in ax.patches] + list(drawn.legends[0].get_patches())
    hatch_of: dict[str, set[str | None]] = {}
    for patch in patches:
        hatch_of.setdefault(to_hex(patch.get_facecolor()), set()).add(patch.get_hatch() or None)
    assert len(hatch_of) == len(fig.PART_COLOURS)
    assert all(len(h) == 1 for h in hatch_of.values()), hatch_of  # one hatch per part, legend included
    assert len({h for hs in hatch_of.values() for h in hs}) == len(hatch_of), hatch_of  # all different
    _nothing_cut_and_legends_clear(drawn)


def test_uniformize_speed_figure_reads_without_colour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uniformize_speed.png: the lines of each panel differ by marker or line style, no text is cut at the
    figure's edge (the left y label was), no legend covers data."""
    fig = _load("make_uniformize_speed_figure")
    figures = _drawn(monkeypatch)
    fig.draw(*(json.loads(p.read_text()) for p in (fig.CURRENT, fig.PREVIOUS, fig.AB)), tmp_path / "u.png")
    (drawn,) = figures
    for ax in drawn.axes:
        _lines_apart_without_colour(ax)
    _nothing_cut_and_legends_clear(drawn)


def _marker_boxes(line: Any, renderer: Any) -> list[Any]:
    """The display-space bounding box of every marker glyph of ``line``: the marker's path at its size, plus
    half its edge width on every side."""
    import numpy as np
    from matplotlib.markers import MarkerStyle
    from matplotlib.transforms import Affine2D, Bbox

    style = MarkerStyle(line.get_marker())
    points_to_px = renderer.points_to_pixels(1.0)
    size = line.get_markersize() * points_to_px
    unit = style.get_path().transformed(style.get_transform() + Affine2D().scale(size)).get_extents()
    pad = line.get_markeredgewidth() * points_to_px / 2
    centres = line.get_transform().transform(np.column_stack([line.get_xdata(), line.get_ydata()]))
    return [
        Bbox.from_extents(x + unit.x0 - pad, y + unit.y0 - pad, x + unit.x1 + pad, y + unit.y1 + pad)
        for x, y in centres
    ]


def test_uniformize_speed_figure_markers_do_not_cover_one_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uniformize_speed.png, right panel: every estimate the caption names apart (the paired circles, the
    current and previous code's A/B processes) is a glyph of its own, no two overlapping. The circles sat on
    the N_s and the crosses only x1.06 / x0.94 from it: at 2^8 and 2^12 a current-code cross covered the
    paired circle, and the two previous-code '+' of one N_s merged (an outside review, 2026-12-06)."""
    fig = _load("make_uniformize_speed_figure")
    figures = _drawn(monkeypatch)
    fig.draw(*(json.loads(p.read_text()) for p in (fig.CURRENT, fig.PREVIOUS, fig.AB)), tmp_path / "u.png")
    (drawn,) = figures
    drawn.canvas.draw()
    renderer = drawn.canvas.get_renderer()
    glyphs = [
        (line.get_label(), i, box)
        for line in drawn.axes[1].get_lines()
        if line.get_marker() not in (None, "None", "", " ")
        for i, box in enumerate(_marker_boxes(line, renderer))
    ]
    assert len(glyphs) == 20, [g[0] for g in glyphs]  # 4 paired circles, 8 + 8 A/B processes
    overlapping = [
        f"{a} #{i} and {b} #{j}"
        for (a, i, box_a), (b, j, box_b) in itertools.combinations(glyphs, 2)
        if box_a.overlaps(box_b)
    ]
    assert not overlapping, "marker glyphs overlap:\n" + "\n".join(overlapping)


def _path_points(path: Any, step: float = 0.05) -> tuple[float, Any]:
    """``(length, points)`` of a matplotlib path of line segments: its length (a closed subpath counts its
    closing segment) and points along it every ``step`` data units or closer."""
    import numpy as np
    from matplotlib.path import Path as MplPath

    total, start, prev, out = 0.0, None, None, []
    for vertices, code in path.iter_segments(simplify=False, curves=False):
        point = np.asarray(vertices[-2:], dtype=float)
        if code == MplPath.CLOSEPOLY:
            point = start
        if code == MplPath.MOVETO:
            start = point
        elif prev is not None:
            total += float(np.hypot(*(point - prev)))
            n = max(2, int(np.ceil(np.hypot(*(point - prev)) / step)) + 1)
            out.append(prev + np.linspace(0, 1, n)[:, None] * (point - prev))
        prev = point
    return total, (np.concatenate(out) if out else np.empty((0, 2)))


def test_uniformize_figure_draws_every_superpixel_boundary_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uniformize_figure.png: in each panel with superpixels the boundary lines run along every pixel edge
    between two superpixels, once: their length is the number of such edges. A contour at 0.5 of a 1-pixel
    edge mask traced both sides of it (about 1.6x the length): doubled dark bands that, in the last panel, hid
    the wrong pixels of superpixels straddling the true boundary (an outside review, 2026-12-06)."""
    import numpy as np

    scipy_spatial = pytest.importorskip("scipy.spatial")
    module = _load("make_uniformize_figure")
    sp = module.synthetic()[3]
    i, j = np.nonzero(sp[:-1] != sp[1:])  # the edge between (i, j) and (i + 1, j): midpoint (j, i + 0.5)
    k, m = np.nonzero(sp[:, :-1] != sp[:, 1:])  # between (k, m) and (k, m + 1): midpoint (m + 0.5, k)
    midpoints = np.concatenate([np.column_stack([j, i + 0.5]), np.column_stack([m + 0.5, k])]).astype(float)
    assert len(midpoints) > 1000
    figures = _drawn(monkeypatch)
    module.main(tmp_path / "f.png")
    (fig,) = figures
    for ax in fig.axes[1:]:  # the superpixels, the raw argmax and the uniformized argmax
        paths = [p for c in ax.collections for p in c.get_paths()] + [ln.get_path() for ln in ax.get_lines()]
        measured = [_path_points(p) for p in paths]
        assert measured, f"no boundary lines in {ax.get_title()!r}"
        length = sum(t for t, _ in measured)
        assert length == pytest.approx(len(midpoints), rel=0.01), (ax.get_title(), length, len(midpoints))
        distance, _ = scipy_spatial.cKDTree(np.concatenate([pts for _, pts in measured])).query(midpoints)
        assert (distance < 0.05).all(), f"{ax.get_title()!r}: {(distance >= 0.05).sum()} edges not drawn"


_VALUE = re.compile(r"^\d+\.\d\d$")
_TARGET_RED = "#c44e52"


def _cost_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Any]:
    """joint_cost.png's module and figure, drawn at the PNG's resolution (measured in its pixels)."""
    module = _load("make_joint_cost_figure")
    figures = _drawn(monkeypatch)
    module.draw(module.load(), tmp_path / "j.png")
    (fig,) = figures
    fig.set_dpi(130)
    fig.canvas.draw()
    return module, fig


def _bars(ax: Any, renderer: Any) -> list[tuple[Any, Any]]:
    return [(p, p.get_window_extent(renderer)) for p in ax.patches if p.get_width() > 0]


def test_joint_cost_values_inside_their_segment_or_outside_every_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """joint_cost.png: a segment's value lies inside that segment, or outside every bar with a leader line to
    it; no labelled value is lost. The ResNet-101 SpixelFCN value (0.13 on a 0.126-wide segment) spilled over
    the DeepLabV3+ bar and the line at 1 (an outside review, 2026-12-06)."""
    module, fig = _cost_figure(tmp_path, monkeypatch)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        bars = _bars(ax, renderer)
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 2]
        labels = [t for t in ax.texts if t.get_visible() and _VALUE.match(t.get_text())]
        for text in labels:
            box = (text.get_bbox_patch() or text).get_window_extent(renderer)
            value = text.get_text()
            home = [
                p
                for p, e in bars
                if e.expanded(1.0, 1.0).padded(0.5).contains(box.x0, box.y0)
                and e.padded(0.5).contains(box.x1, box.y1)
            ]
            if home:
                assert f"{home[0].get_width():.2f}" == value, (value, home[0].get_width())
                continue
            covered = [f"{p.get_width():.3f}" for p, e in bars if box.overlaps(e)]
            assert not covered, f"{value!r} in {ax.get_title()!r} spills over the segments {covered}"
            segments = [e for p, e in bars if f"{p.get_width():.2f}" == value]
            ends = [ln.get_transform().transform(ln.get_xydata()) for ln in lines]
            assert any(
                box.expanded(1.05, 1.2).contains(*a) and s.expanded(1.0, 1.02).contains(*b)
                for s in segments
                for xy in ends
                for a, b in (xy, xy[::-1])
            ), f"{value!r} outside its bar without a leader line to its segment"
        shown = [t.get_text() for t in labels]
        for p, _ in bars:
            if p.get_width() > module.LABEL_MIN:
                assert f"{p.get_width():.2f}" in shown, (ax.get_title(), p.get_width())


def test_joint_cost_targets_show_clear_of_the_bars_and_under_the_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """joint_cost.png: each of the three targets shows at least 10 px of its height clear of every bar and
    step bar, and lies under the segments it crosses. The 2.20x memory target sat on the 2.19x step bar (a
    1-2 px fringe), and the 1.50x one hid the loss segment's hatching (an outside review, 2026-12-06)."""
    from matplotlib.colors import to_hex

    _, fig = _cost_figure(tmp_path, monkeypatch)
    renderer = fig.canvas.get_renderer()
    count = 0
    for ax in fig.axes:
        bars = _bars(ax, renderer)
        reds = [ln for ln in ax.get_lines() if to_hex(ln.get_color()) == _TARGET_RED]
        steps = [ln.get_window_extent(renderer) for ln in ax.get_lines() if ln not in reds]
        for target in reds:
            xs = target.get_xdata()
            if len(xs) != 2 or xs[0] != xs[1]:
                continue  # (its end marks)
            count += 1
            (x, ya), (_, yb) = target.get_transform().transform(target.get_xydata())
            spans = sorted(
                (max(min(ya, yb), e.y0), min(max(ya, yb), e.y1))
                for e in [e for _, e in bars] + steps
                if e.x0 - 3 <= x <= e.x1 + 3
            )
            hidden, reach = 0.0, min(ya, yb)
            for lo, hi in spans:  # the length of the union of the covering intervals
                start = max(lo, reach)
                if hi > start:
                    hidden, reach = hidden + hi - start, hi
            assert abs(yb - ya) - hidden >= 10, (ax.get_title(), xs[0], abs(yb - ya) - hidden)
            for p, e in bars:
                if e.x0 < x < e.x1:
                    assert target.get_zorder() < p.get_zorder(), (xs[0], p.get_width())
    assert count == 3  # time 1.5x and 1.35x, memory 2.2x


def _sampled(path_xy: Any, n: int = 40) -> Any:
    """Points along the polyline ``path_xy`` (``[m, 2]``), ``n`` per segment."""
    import numpy as np

    t = np.linspace(0.0, 1.0, n)[:, None]
    return np.concatenate([a + t * (b - a) for a, b in itertools.pairwise(path_xy)])


def _inside(xy: Any, box: Any, margin: float = 0.0) -> Any:
    """Which points of ``xy`` lie inside ``box`` grown by ``margin`` pixels on every side."""
    return (
        (xy[:, 0] > box.x0 - margin)
        & (xy[:, 0] < box.x1 + margin)
        & (xy[:, 1] > box.y0 - margin)
        & (xy[:, 1] < box.y1 + margin)
    )


def test_soft_figure_arrows_run_from_the_pixel_to_just_before_their_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """soft_neighbours.png: every candidate's arrow starts at the pixel's dot and its head ends just before
    that candidate's label, outside it (the arrows ran to the labels' centres, their heads hidden under the
    labels, and seemed to leave from the "4 C" label); no arrow passes under another label or over a cell id
    ("id 2", "id 6" were struck through); every cell id lies inside its own cell (the partial column's
    "id 3", "id 7", "id 11" crossed the image's border). An outside review, 2026-12-06."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import to_hex
    from matplotlib.patches import Rectangle

    fig = _soft_figure(tmp_path, monkeypatch)
    renderer = fig.canvas.get_renderer()
    px_per_pt = fig.dpi / 72
    problems = []
    for ax in fig.axes:
        where = ax.get_title().splitlines()[0]
        (marker,) = [line for line in ax.get_lines() if line.get_marker() == "o"]
        dot = ax.transData.transform((marker.get_xdata()[0], marker.get_ydata()[0]))
        labels = [t for t in ax.texts if t.get_bbox_patch() is not None]  # the candidates', in channel order
        label_boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in labels]
        ids = [t for t in ax.texts if t.get_text().startswith("id ")]
        arrows = [c.arrow_patch for c in ax.get_children() if isinstance(c, plt.Annotation)]
        assert len(labels) == len(arrows) == 9, where
        assert [t.get_text().split()[0] for t in labels] == [str(k) for k in range(9)], where
        for arrow, label, box in zip(arrows, labels, label_boxes, strict=True):
            name = f"{label.get_text().splitlines()[0]!r} ({where})"
            polylines = arrow.get_path().to_polygons(arrow.get_transform(), closed_only=False)
            xy = np.concatenate(polylines)  # the shaft and the head, in pixels
            points = np.concatenate([_sampled(line) for line in polylines])
            start = np.hypot(*(xy - dot).T).min()  # it starts at the dot (within the marker's radius)
            if start > marker.get_markersize() / 2 * px_per_pt:
                problems.append(f"{name}: the arrow starts {start:.1f} px from the pixel")
            # and its head's tip (its farthest point) stops just before its label, outside it
            tip = xy[np.argmax(np.hypot(*(xy - dot).T))]
            gap = np.hypot(max(box.x0 - tip[0], tip[0] - box.x1, 0), max(box.y0 - tip[1], tip[1] - box.y1, 0))
            if not 0.5 * px_per_pt <= gap <= 6 * px_per_pt:
                problems.append(f"{name}: the arrow's head ends {gap:.1f} px from its label (0 = under it)")
            if _inside(points, box).any():
                problems.append(f"{name}: the arrow runs under its own label")
            for other, other_box in zip(labels, label_boxes, strict=True):
                if other is not label and _inside(points, other_box, 1.0).any():
                    problems.append(f"{name}: the arrow passes under {other.get_text().splitlines()[0]!r}")
            for text in ids:
                if _inside(points, text.get_window_extent(renderer), 1.0).any():
                    problems.append(f"{name}: the arrow crosses {text.get_text()!r}")
        # every id inside its own cell, clear of the image's thick outline (the grey cells are drawn in
        # row-major order, like the ids)
        cells = [
            p
            for p in ax.patches
            if isinstance(p, Rectangle) and p.get_fill() and to_hex(p.get_facecolor()) == "#f4f4f4"
        ]
        assert len(cells) == len(ids), where
        outline = max(p.get_linewidth() for p in ax.patches) * px_per_pt / 2
        for text in ids:
            inner = cells[int(text.get_text().split()[1])].get_window_extent(renderer).padded(-outline - 1.0)
            extent = text.get_window_extent(renderer)
            if not (
                inner.x0 <= extent.x0
                and extent.x1 <= inner.x1
                and inner.y0 <= extent.y0
                and extent.y1 <= inner.y1
            ):
                problems.append(f"{text.get_text()!r} ({where}) leaves its cell")
    assert not problems, "\n".join(problems)


#: Where figures are quoted: every result file they cite must be committed.
_QUOTING = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.rst"))]
_RESULTS = ROOT / "benchmarks" / "results"
#: A result file named without its folder (``soft.json``): the names the benchmarks write.
_RESULT_NAME = re.compile(
    r"(?<![\w/<])((?:bench_|soft|joint|ab_|memory_format|fusion_|transparent_init)\w*\.json)"
)


def _committed_results() -> set[str]:
    """The files under ``benchmarks/results/`` that git tracks (outside a git checkout, e.g. an sdist: the
    files on disk), relative to that folder."""
    res = subprocess.run(
        ["git", "ls-files", "-z", "--", "benchmarks/results"], cwd=ROOT, capture_output=True, check=False
    )
    tracked = [p for p in res.stdout.decode().split("\0") if p]
    if res.returncode == 0 and tracked:
        return {p.removeprefix("benchmarks/results/") for p in tracked}
    return {p.relative_to(_RESULTS).as_posix() for p in _RESULTS.rglob("*") if p.is_file()}


def test_every_result_file_the_docs_cite_is_committed() -> None:
    """A figure's source file cited by path (``benchmarks/results/<name>``) or by name is tracked by git
    under ``benchmarks/results/``, unless the text within 300 characters of the name says it is kept only in
    the git history (or was removed). Catches a result file renamed, removed or never added while the docs
    quote it."""
    committed = _committed_results()
    names = {Path(p).name for p in committed}
    missing = []
    for page in _QUOTING:
        text = page.read_text()
        for m in re.finditer(r"benchmarks/results/([\w./-]*\w)", text):
            cited = m.group(1)
            if cited not in committed and not any(p.startswith(cited + "/") for p in committed):
                missing.append(f"{page.relative_to(ROOT)}: benchmarks/results/{cited}")
        for m in _RESULT_NAME.finditer(text):
            around = " ".join(text[max(0, m.start() - 300) : m.end() + 300].split())
            if m.group(1) not in names and "git history" not in around and "removed" not in around:
                missing.append(f"{page.relative_to(ROOT)}: {m.group(1)}")
    assert not missing, "cited but not committed:\n" + "\n".join(sorted(set(missing)))


_IMAGE = re.compile(r"^(?P<indent> *)\.\. (?:image|figure):: *(?P<path>\S+)")


def _images(text: str) -> list[tuple[int, str, dict[str, str]]]:
    """``(line, path, options)`` of each ``.. image::`` / ``.. figure::`` of reStructuredText ``text``; an
    option's text continues on its more indented lines."""
    lines = text.splitlines()
    found = []
    for k, line in enumerate(lines):
        m = _IMAGE.match(line)
        if m is None:
            continue
        options: dict[str, str] = {}
        key = ""
        for option in lines[k + 1 :]:
            if not option.strip() or len(option) - len(option.lstrip()) <= len(m["indent"]):
                break  # the options end at a blank line or at text no more indented than the directive
            o = re.match(r"\s*:(\w+):(.*)", option)
            if o is not None:
                key = o.group(1)
                options[key] = o.group(2).strip()
            elif key:
                options[key] += " " + option.strip()
        found.append((k + 1, m["path"], options))
    return found


def _images_without_alt(text: str) -> list[str]:
    """The images of reStructuredText ``text`` whose options give no ``:alt:`` text, or one that only
    repeats the file name (what a screen reader says otherwise), and the Markdown images with empty ``![]()``
    alt text."""
    missing = []
    for line, path, options in _images(text):
        alt, name = options.get("alt", ""), Path(path).name
        if not alt or alt in (name, Path(name).stem):
            missing.append(f"line {line}: {path}")
    missing += [f"markdown image {m.group(1)}" for m in re.finditer(r"!\[\s*\]\(([^)]*)\)", text)]
    return missing


def test_alt_text_check_itself() -> None:
    text = """
.. image:: a.png

.. figure:: /_static/b.png
   :width: 80%

   A caption is not alt text.

.. image:: c.png
   :alt: c.png

   .. figure:: d.png
      :alt: the speckle of the raw argmax gone after uniformization

![](e.png) ![a bar chart of step times](f.png)
"""
    assert _images_without_alt(text) == [
        "line 2: a.png",
        "line 4: /_static/b.png",
        "line 9: c.png",
        "markdown image e.png",
    ]


def test_every_image_in_the_docs_has_alt_text() -> None:
    """A reader who cannot see a figure hears its ``:alt:`` text: every image and figure of the docs and the
    README has one that says what it shows."""
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.rst"))]
    missing = [
        f"{page.relative_to(ROOT)} {where}"
        for page in pages
        for where in _images_without_alt(page.read_text())
    ]
    assert not missing, "images without alt text:\n" + "\n".join(missing)


#: About the width in pixels of the docs' text column (furo): a wider image is shown scaled down.
_COLUMN_PX = 800


def test_wide_figures_link_to_their_full_size() -> None:
    """An image wider than the docs' column is shown scaled down, its labels smaller than they were drawn; a
    ``:width:`` option makes Sphinx link the image to its full-size file, one click away."""
    pages = sorted((ROOT / "docs").rglob("*.rst"))
    narrow = []
    for page in pages:
        for line, path, options in _images(page.read_text()):
            file = ROOT / "docs" / path.lstrip("/") if path.startswith("/") else page.parent / path
            header = file.read_bytes()[:24]
            assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{page.relative_to(ROOT)}:{line}: {path} is not a PNG"
            if int.from_bytes(header[16:20], "big") > _COLUMN_PX and "width" not in options:
                narrow.append(f"{page.relative_to(ROOT)}:{line}: {path}")
    assert not narrow, "wide images shown scaled down without a link to their full size:\n" + "\n".join(
        narrow
    )


def test_trimap_figure_titles_readable_at_the_column_width(tmp_path: Path) -> None:
    """trimap_bands.png (1296 pixels wide) is shown scaled to the docs' column: its panel titles must still
    be at least 9 pixels tall there (Pillow's default bitmap font came out 6)."""
    import numpy as np
    from PIL import Image

    pytest.importorskip("torchvision")  # the synthetic data set's reader
    _load("make_synthetic_figure").main(tmp_path)
    gray = np.asarray(Image.open(tmp_path / "trimap_bands.png").convert("L"))
    tiles = next(r for r in range(gray.shape[0]) if (gray[r] < 250).mean() > 0.5)  # first row of the tiles
    ink = np.nonzero((gray[:tiles] < 128).any(axis=1))[0]
    shown = (ink.max() - ink.min() + 1) * min(1.0, _COLUMN_PX / gray.shape[1])
    assert shown >= 9, f"titles {ink.max() - ink.min() + 1} px tall, {shown:.1f} px at the column width"


def _smallest_text_px(fig: Any) -> tuple[float, str]:
    """The smallest visible text of a matplotlib figure, in pixels once the figure is shown at most
    ``_COLUMN_PX`` wide (a wider figure is scaled down to the column), with its text."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    width_in = float(fig.get_size_inches()[0])
    scale = min(1.0, _COLUMN_PX / (width_in * 72))  # pixels per point, at 72 points an inch
    texts = [t for t in fig.findobj(plt.Text) if t.get_visible() and t.get_text().strip()]
    smallest = min(texts, key=lambda t: t.get_fontsize())
    return smallest.get_fontsize() * scale, smallest.get_text()


#: The smallest type a figure of the docs may show at the column width, in pixels (about 6 pt in print).
_SMALLEST_PX = 8.0


@pytest.mark.parametrize(
    "script",
    [
        "make_joint_cost_figure",
        "make_uniformize_speed_figure",
        "make_soft_figure",
        "make_uniformize_figure",
        "make_joint_runs_figure",
    ],
)
def test_doc_figure_type_readable_at_the_column_width(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No text of a docs figure comes out under ``_SMALLEST_PX`` pixels when the figure is scaled to the docs'
    column (7-point legends and value labels on 11-inch figures came out 7 pixels)."""
    if script == "make_uniformize_figure":
        pytest.importorskip("scipy")
    module = _load(script)
    figures = _drawn(monkeypatch)
    out = tmp_path / "f.png"
    if script == "make_joint_cost_figure":
        module.draw(module.load(), out)
    elif script == "make_uniformize_speed_figure":
        module.draw(*(json.loads(p.read_text()) for p in (module.CURRENT, module.PREVIOUS, module.AB)), out)
    else:
        module.main(out)
    (fig,) = figures
    px, text = _smallest_text_px(fig)
    assert px >= _SMALLEST_PX, f"{text!r} is {px:.1f} px at the column width"


def test_soft_figure_labels_do_not_cover_one_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No two texts of the soft-association figure overlap, none lies under the pixel's marker, and every
    candidate's label lies above the arrows: the id of the narrow partial cell ("id 3") was written under the
    border pixel's marker and its arrows, and the later candidates' arrows crossed the centre's label."""
    import matplotlib.pyplot as plt

    fig = _soft_figure(tmp_path, monkeypatch)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        texts = [t for t in ax.texts if t.get_visible() and t.get_text().strip()]
        boxes = [  # a label's box where it has one (drawn white over what lies below), else its letters
            (t.get_text(), (t.get_bbox_patch() or t).get_window_extent(renderer)) for t in texts
        ]
        for i, (a, box_a) in enumerate(boxes):
            for b, box_b in boxes[i + 1 :]:
                assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r} in {ax.get_title()!r}"
        (marker,) = [line for line in ax.get_lines() if line.get_marker() == "o"]
        x, y = ax.transData.transform((marker.get_xdata()[0], marker.get_ydata()[0]))
        for name, box in boxes:
            assert not box.expanded(1.2, 1.2).contains(x, y), f"{name!r} lies under the pixel's marker"
        arrows = [c.get_zorder() for c in ax.get_children() if isinstance(c, plt.Annotation)]
        labels = [t.get_zorder() for t in texts if t.get_bbox_patch() is not None]
        assert len(labels) == 9 and min(labels) > max(arrows)


def test_joint_runs_figure_draws_every_committed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """joint_runs.png: every committed EPYC run of both configurations in the order they ran, the newest
    ResNet-18 run (the README's) among the current code's (``LATEST``, ``LATEST_F25``); the four kinds of run
    (the current code on each EPYC family, the code before it, earlier code) apart by marker and fill as well
    as colour; nothing cut, no legend
    over a run; a configuration without a run of the current code is refused."""
    module = _load("make_joint_runs_figure")
    results = ROOT / "benchmarks" / "results"
    for key, _, _ in module.CONFIGS:
        rows = module.runs(key)
        on_disk = [
            p.name
            for p in results.glob("joint_*resnet*_2026*.json")
            if "epyc" in p.name and key in json.loads(p.read_text())
        ]
        assert sorted(r["name"] for r in rows) == sorted(on_disk)
        assert [r["date"] for r in rows] == sorted(r["date"] for r in rows)
        kinds = [r["kind"] for r in rows]
        assert kinds.count("latest") >= 1 and kinds.count("previous") >= 2 and kinds.count("earlier") >= 3
    resnet18 = module.runs("cpu_resnet18_b2_128")
    newest = sorted(resnet18, key=lambda r: (r["date"], r["time"], module.natural_key(r["name"])))[-1]
    assert module.natural_key("a_sort_9_b") < module.natural_key("a_sort_10_b")
    assert newest["kind"] in ("latest", "latest_f25") and resnet18[-1] == newest
    assert module.kind_of("joint_resnet18_20261206_f26_series_1_epyc.json") == "latest"
    assert module.kind_of("joint_resnet18_20261207_f25_series_1_epyc.json") == "latest_f25"
    assert module.kind_of("joint_resnet18_20261206_series_1_epyc.json") == "previous"
    assert module.kind_of("joint_resnet18_20261203_ucells_epyc.json") == "earlier"
    figures = _drawn(monkeypatch)
    module.draw(tmp_path / "r.png")
    (drawn,) = figures
    for ax in drawn.axes:
        _lines_apart_without_colour(ax)
        assert sum(len(line.get_xdata()) for line in ax.get_lines() if line.get_marker() in "osD^") == len(
            module.runs(module.CONFIGS[drawn.axes.index(ax)][0])
        )
    _nothing_cut_and_legends_clear(drawn)
    with pytest.raises(ValueError, match="no run of the latest code"):
        module.draw(tmp_path / "x.png", results=tmp_path)


def _page(name: str = "benchmarks.rst") -> str:
    """A page under docs/ (default docs/benchmarks.rst) with its whitespace runs made single spaces (captions
    wrap anywhere)."""
    return " ".join((ROOT / "docs" / name).read_text().split())


def test_joint_cost_figure_draws_the_hard_step_and_the_targets_its_caption_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """joint_cost.png: the runs its caption cites, the ``joint_hard_ti`` step of each (its time ratio, paired
    ratio and memory ratio as measured, DeepLabV3+ alone's step and bytes as the units), the paired ratio on
    the time panel only, and the caption's targets: time 1.5x and 1.35x, memory 2.2x at ResNet-18."""
    module = _load("make_joint_cost_figure")
    page = _page()
    for path in module.JOINT_JSONS:
        assert path.name in page, path.name
    results = module.load()
    for key, *_ in module.CONFIGS:
        rows = {r["variant"]: r for r in results[key]["rows"]}
        deeplab, joint = rows["deeplab"], rows["joint_hard_ti"]
        b = module.bars(results[key])
        assert b["time_full"] == joint["time_ratio"] and b["time_paired"] == joint["time_ratio_paired"]
        assert b["memory_full"] == joint["memory_ratio"]
        # the black bar is the step as measured, not the parts' sum (a storage shared by two parts counts
        # twice in the parts: the stack can end past the full step)
        shared = json.loads(json.dumps(results[key]))
        shared["breakdown"]["parts"]["SpixelFCN"]["saved_bytes"] *= 2
        assert module.bars(shared)["memory_full"] == joint["memory_ratio"]
        assert b["deeplab_ms"] == pytest.approx(1e3 * deeplab["median_s"])
        assert b["deeplab_mib"] == pytest.approx(deeplab["memory_bytes"]["saved_activations"] / 2**20)
    assert "(time 1.5x and 1.35x, memory 2.2x at ResNet-18)" in page
    figures = _drawn(monkeypatch)
    module.draw(results, tmp_path / "j.png")
    (fig,) = figures
    time_ax, memory_ax = fig.axes[:2]
    notes = {
        ax: [t.get_text() for t in ax.texts if t.get_text().startswith(("step", "target"))]
        for ax in (time_ax, memory_ax)
    }
    r18, r101 = (module.bars(results[key]) for key, *_ in module.CONFIGS)
    assert notes[time_ax] == [
        f"step {r18['time_full']:.2f}x (paired {r18['time_paired']:.2f}x)",
        "target 1.50x",
        f"step {r101['time_full']:.2f}x (paired {r101['time_paired']:.2f}x)",
        "target 1.35x",
    ]
    assert notes[memory_ax] == [
        f"step {r18['memory_full']:.2f}x",
        "target 2.20x",
        f"step {r101['memory_full']:.2f}x",
    ]


def test_joint_runs_figure_matches_its_caption(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """joint_runs.png: the counts and ranges of paired ratios the benchmarks page gives for each kind of run
    are those of the runs the figure draws (each the ``joint_hard_ti`` row's ``time_ratio_paired``), and each
    kind's legend entry is its summary: count, median, range."""
    module = _load("make_joint_runs_figure")
    page = _page()
    r18 = module.runs("cpu_resnet18_b2_128")
    for row in r18:  # the paired ratio of the hard joint step, as the file records it
        entry = json.loads((module.RESULTS / row["name"]).read_text())["cpu_resnet18_b2_128"]
        (hard,) = [r for r in entry["rows"] if r["variant"] == "joint_hard_ti"]
        assert row["paired"] == hard["time_ratio_paired"]

    def span(rows: list[dict[str, Any]]) -> str:
        values = [r["paired"] for r in rows]
        return f"{len(values)} runs {min(values):.2f}-{max(values):.2f}x"

    latest = [r for r in r18 if r["kind"] == "latest"]
    series = [r for r in latest if not r["name"].startswith("joint_levers_")]
    (levers,) = [r for r in latest if r["name"].startswith("joint_levers_")]
    f25 = [r for r in r18 if r["kind"] == "latest_f25"]
    previous = [r for r in r18 if r["kind"] == "previous"]
    caption = (
        f"the current code's {span(series)} on family 26 (and the main table of its lever study, "
        f"{levers['paired']:.2f}x) and {span(f25)} on family 25, the code before it {span(previous)}"
    )
    assert caption in page, caption
    r101 = module.runs("cpu_resnet101_b2_256")
    (now,) = [r["paired"] for r in r101 if r["kind"] == "latest"]
    before = sorted(r["paired"] for r in r101 if r["kind"] == "previous")
    assert f"ResNet-101 (below): {now:.2f}x, and {before[0]:.2f}x and {before[1]:.2f}x before" in page
    assert (
        module.summary([{"paired": 1.0}, {"paired": 1.1}, {"paired": 2.0}])
        == "3 runs, median 1.10x (1.00-2.00x)"
    )
    assert module.summary([{"paired": 1.26}]) == "1 run, median 1.26x (1.26-1.26x)"
    figures = _drawn(monkeypatch)
    module.draw(tmp_path / "r.png")
    (fig,) = figures
    labels = [line.get_label() for line in fig.axes[0].get_lines() if line.get_marker() in "osD^"]
    assert labels == [
        f"{name}: {module.summary([r for r in r18 if r['kind'] == kind])}"
        for kind, name in module.KINDS.items()
    ]


def test_joint_runs_figure_refuses_a_configuration_with_only_runs_of_older_code(tmp_path: Path) -> None:
    """A configuration whose runs are all of the code before the current one (``PREVIOUS``) has no run of the
    current code (:data:`LATEST`): refused, not drawn."""
    module = _load("make_joint_runs_figure")
    for name in ("joint_resnet18_20261206_series_1_epyc.json", "joint_resnet101_20261205_convadd_epyc.json"):
        (tmp_path / name).write_text((module.RESULTS / name).read_text())
        assert module.kind_of(name) == "previous"
    with pytest.raises(ValueError, match="no run of the latest code"):
        module.draw(tmp_path / "x.png", results=tmp_path)


def test_uniformize_speed_figure_plots_each_run_where_its_caption_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uniformize_speed.png: left, each variant's forward + backward ms of the current run; right, the current
    run's sweep and paired ratios, the A/B processes of each code at their paired ratio (current code's right
    of its N_s, previous code's left), the previous run's sweep dashed, and the 1.45x target the caption
    names."""
    module = _load("make_uniformize_speed_figure")
    current, previous, ab = (json.loads(p.read_text()) for p in (module.CURRENT, module.PREVIOUS, module.AB))
    figures = _drawn(monkeypatch)
    module.draw(current, previous, ab, tmp_path / "u.png")
    (fig,) = figures
    left, right = fig.axes[:2]
    rows = module.grid_rows(current)
    drawn = {line.get_label(): line for line in left.get_lines()}
    for key, label, *_ in module.VARIANTS:
        points = [(n, r[key]["fwd_bwd_ms"]) for n, r in rows if r.get(key, {}).get("fwd_bwd_ms")]
        if points:
            assert list(zip(drawn[label].get_xdata(), drawn[label].get_ydata(), strict=True)) == points
    lines = {line.get_label(): line for line in right.get_lines()}

    def xy(label: str) -> list[tuple[float, float]]:
        return list(zip(lines[label].get_xdata(), lines[label].get_ydata(), strict=True))

    assert xy("current code, Xeon: sweep") == module.sweep(current)
    assert xy("previous code, EPYC: sweep") == module.sweep(previous)
    assert xy("current code, Xeon: paired") == [(n, r["scatter"]["paired_x_floor"]) for n, r in rows]
    for code, side in (("current", 1), ("previous", -1)):
        runs = [r for r in ab["runs"] if r["code"] == code]
        points = xy(f"{code} code, Xeon: A/B processes")
        assert sorted(y for _, y in points) == sorted(r["paired_x_floor"] for r in runs)
        assert all((x - r["N_s"]) * side > 0 for (x, _), r in zip(points, runs, strict=True))
    assert (
        "target 1.45x (issue 9)" in lines and list(lines["target 1.45x (issue 9)"].get_ydata()) == [1.45] * 2
    )
    page = _page("concepts/uniformization.rst")
    assert "The red dash-dotted line is the 1.45x target" in page


def test_soft_figure_names_each_candidate_by_its_offset_and_marks_those_outside() -> None:
    """soft_neighbours.png: candidate ``k`` is named after its offset ``NEIGHBOUR_OFFSETS[k]`` (T / B for the
    row above / below, L / R for the column left / right, C the pixel's own cell), and a candidate is marked
    "(outside)" exactly when its cell lies outside the grid."""
    import matplotlib.pyplot as plt

    module = _load("make_soft_figure")
    for name, (dy, dx) in zip(module.NAMES, module.OFFSETS, strict=True):
        want = {-1: "T", 1: "B", 0: ""}[dy] + {-1: "L", 1: "R", 0: ""}[dx]
        assert name == (want or "C"), (name, dy, dx)
    for H, W, S, pixel, title, label_at, _ in module.PANELS:
        fig = plt.figure(figsize=(4, 4))
        ax = fig.add_axes((0, 0, 1, 1))
        module.panel(ax, H, W, S, pixel, title, label_at)
        n_h, n_w = module.grid_shape(H, W, S)
        ci, cj = int(pixel[0] // S), int(pixel[1] // S)
        texts = [t.get_text() for t in ax.texts if t.get_text().strip() and not t.get_text().startswith("id")]
        labels = {text.split()[0]: text for text in texts}
        for k, (dy, dx) in enumerate(module.OFFSETS):
            outside = not (0 <= ci + dy < n_h and 0 <= cj + dx < n_w)
            assert labels[str(k)].endswith("(outside)") == outside, (title, labels[str(k)])
        plt.close(fig)


def test_trimap_figure_fades_the_pixels_outside_bands_of_widths_1_3_5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trimap_bands.png: the bands drawn are of the widths the titles name (1, 3, 5 pixels) and the pixels
    outside each band are the faded ones: the wider the band, the fewer faded pixels."""
    import numpy as np
    from PIL import Image

    pytest.importorskip("torchvision")  # the synthetic data set's reader
    module = _load("make_synthetic_figure")
    widths = []
    band = module.boundary_band
    monkeypatch.setattr(module, "boundary_band", lambda t, w: widths.append(w) or band(t, w))
    module.main(tmp_path)
    assert widths == [1, 3, 5]
    png = np.asarray(Image.open(tmp_path / "trimap_bands.png").convert("RGB"))
    strip = module.TITLE_PX + 8
    w = (png.shape[1] - 4 * module.GAP) // 5
    faded = []
    for k in (2, 3, 4):
        tile = png[strip:, k * (w + module.GAP) : k * (w + module.GAP) + w]
        faded.append(float((tile >= 191).all(axis=-1).mean()))
    assert faded[0] > faded[1] > faded[2], faded


def test_synthetic_samples_figure_shows_images_above_their_palette_masks(tmp_path: Path) -> None:
    """synthetic_voc_samples.png: the lower row holds the palette masks (a few flat colours), the upper row
    the images (noisy: many colours)."""
    import numpy as np
    from PIL import Image

    pytest.importorskip("torchvision")
    module = _load("make_synthetic_figure")
    module.main(tmp_path)
    png = np.asarray(Image.open(tmp_path / "synthetic_voc_samples.png").convert("RGB"))
    h = (png.shape[0] - module.GAP) // 2
    top, bottom = png[:h], png[h + module.GAP :]
    assert len(np.unique(bottom.reshape(-1, 3), axis=0)) <= 25
    assert len(np.unique(top.reshape(-1, 3), axis=0)) > 1000


def test_uniformize_figure_panels_show_what_their_titles_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uniformize_figure.png: the image without superpixel lines, then the superpixel count of the caption
    (130), the raw argmax and the argmax after ``uniformize``, with the pixel accuracy of each in its
    title."""
    import numpy as np
    import torch

    pytest.importorskip("scipy")
    module = _load("make_uniformize_figure")
    _, target, logits, sp = module.synthetic()
    ids, k = module.relabel_contiguous(torch.from_numpy(sp)[None])
    x = torch.from_numpy(logits)[None]
    raw = x.argmax(1)[0].numpy()
    uni = module.uniformize(x, ids, k).argmax(1)[0].numpy()
    assert not np.array_equal(raw, uni)
    figures = _drawn(monkeypatch)
    module.main(tmp_path / "f.png")
    (fig,) = figures
    axes = fig.axes
    assert not axes[0].collections  # the image alone
    assert axes[1].get_title() == "130 superpixels"
    page = _page("concepts/uniformization.rst")
    assert "its 130 superpixels" in page
    assert np.array_equal(axes[2].images[0].get_array(), raw)
    assert np.array_equal(axes[3].images[0].get_array(), uni)
    assert axes[2].get_title() == f"raw argmax (pixel acc. {(raw == target).mean():.1%})"
    assert axes[3].get_title() == f"uniformized argmax ({(uni == target).mean():.1%})"


def test_joint_runs_are_in_the_order_they_ran() -> None:
    """Within a day the runs are ordered by the time they record (those that record none first), and runs of
    one minute by their names' numbers: the ``sort`` series of 2026-12-06 07:34 as 1, 2, ..., 10."""
    module = _load("make_joint_runs_figure")
    rows = module.runs("cpu_resnet18_b2_128")
    assert [(r["date"], r["time"]) for r in rows] == sorted((r["date"], r["time"]) for r in rows)
    sort = [r["name"] for r in rows if "_f26_sort_" in r["name"]]
    assert sort == [f"joint_resnet18_20261206_f26_sort_{i}_epyc.json" for i in range(1, 11)]


def test_uniformize_speed_grid_rows_come_by_n_s() -> None:
    """``grid_rows``: the grid-label configurations of a run, ordered by ``N_s`` whatever their order in the
    file."""
    module = _load("make_uniformize_speed_figure")
    shapes = ((1024, "grid"), (64, "random"), (256, "grid"), (4096, "grid"))
    run = {"configs": [{"config": {"N_s": n, "labels": labels}, "results": {"n": n}} for n, labels in shapes]}
    assert module.grid_rows(run) == [(256, {"n": 256}), (1024, {"n": 1024}), (4096, {"n": 4096})]


def test_soft_figure_panels_hold_every_candidate_cell() -> None:
    """soft_neighbours.png: each panel's limits (:func:`limits`) take in the whole image and all 9 candidate
    cells of its pixel, the outside ones included (the border panel's dashed cells above and right of the
    image), also for a pixel on one border only (its outside cells in one column or row)."""
    module = _load("make_soft_figure")
    more = [(30, 40, 10, (12.5, 38.5)), (30, 40, 10, (28.5, 12.5)), (30, 40, 10, (12.5, 1.5))]
    for H, W, S, pixel, *_ in [*module.PANELS, *more]:
        x0, y0, x1, y1 = module.limits(H, W, S, pixel)
        ci, cj = int(pixel[0] // S), int(pixel[1] // S)
        n_h, n_w = module.grid_shape(H, W, S)
        assert x0 <= 0 and y0 <= 0 and x1 >= W and y1 >= H
        for dy, dx in module.OFFSETS:
            i, j = ci + dy, cj + dx
            right = min((j + 1) * S, W) if 0 <= j < n_w else (j + 1) * S  # a partial cell ends at W
            bottom = min((i + 1) * S, H) if 0 <= i < n_h else (i + 1) * S
            assert x0 <= j * S and right <= x1 and y0 <= i * S and bottom <= y1, (i, j)
