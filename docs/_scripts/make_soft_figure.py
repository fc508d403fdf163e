"""Draw the 9-neighbour soft association figure used by docs/concepts/soft_association.rst.

Run from the repository root: ``python docs/_scripts/make_soft_figure.py`` (writes
``docs/_static/soft_neighbours.png``). Needs matplotlib.

Each arrow starts at the pixel's dot and its head stops just before its candidate's label. The labels sit
where no other candidate's arrow passes, not at the cells' centres: the centre's label lay next to the dot,
so the arrows running under it seemed to leave from the label, and every head was hidden under its label.
Each cell id goes to a corner of its cell clear of the arrows and labels (they struck through "id 2" and
"id 6"), inside the cell, narrow partial cells included ("id 3" crossed the image's border).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sparse_ops import NEIGHBOUR_OFFSETS as OFFSETS
from sparse_ops import grid_shape

NAMES = ["TL", "T", "TR", "L", "C", "R", "BL", "B", "BR"]
OUT = Path(__file__).resolve().parents[1] / "_static" / "soft_neighbours.png"

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in data units, x0 < x1 and y0 < y1

#: Where a candidate's label sits in its cell: ``(row, column)`` as fractions of the cell drawn (a partial
#: cell's own size, an outside cell's full ``S``); a candidate not named sits at its cell's centre. Chosen so
#: that no arrow passes under another candidate's label: in the interior panel the centre's label moves off
#: the dot, between the arrows to R and BR; in the border panel it goes above the dot, between the arrows to
#: TL and T, and the partial cell keeps its lower right corner for "id 3", right of the arrow to B.
INTERIOR_LABELS = {4: (0.55, 0.72), 5: (0.38, 0.5), 8: (0.6, 0.3)}
BORDER_LABELS = {
    0: (0.8, 0.45),
    1: (0.78, 0.7),
    2: (0.75, 0.6),
    3: (0.45, 0.6),
    4: (0.135, 0.34),
    5: (0.45, 0.5),
    6: (0.3, 0.6),
    7: (0.25, 0.34),
    8: (0.4, 0.5),
}

#: The two panels: ``(H, W, S, pixel (y, x), title, label positions, inches per image pixel)``. The border
#: panel is drawn larger: its 4-pixel-wide partial column holds the dot, a label and an id side by side.
PANELS = (
    (30, 40, 10, (12.5, 21.5), "interior pixel: 9 candidate cells\n(H=30, W=40, S=10)", INTERIOR_LABELS, 0.1),
    (
        26,
        34,
        10,
        (3.5, 31.5),
        "border pixel in a partial cell\n(H=26, W=34, S=10: n_h=3, n_w=4)",
        BORDER_LABELS,
        0.13,
    ),
)

LABEL_FONT, ID_FONT = 10, 9
#: In points: the gap between an arrow's head and its label; an id's inset from its cell's edges; the
#: clearance an id needs from arrows, labels and the dot to keep its preferred corner.
ARROW_GAP, ID_INSET, ID_CLEARANCE = 2.5, 3.0, 6.0


def limits(H: int, W: int, S: int, pixel: tuple[float, float]) -> Box:
    """``(x0, y0, x1, y1)`` a panel draws: the image and its pixel's candidate cells outside it."""
    n_h, n_w = grid_shape(H, W, S)
    ci, cj = int(pixel[0] // S), int(pixel[1] // S)
    cells = [(ci + dy, cj + dx) for dy, dx in OFFSETS]
    outside = [(i, j) for i, j in cells if not (0 <= i < n_h and 0 <= j < n_w)]
    margin = 0.06 * S
    return (
        min([0] + [j * S for _, j in outside]) - margin,
        min([0] + [i * S for i, _ in outside]) - margin,
        max([W] + [j * S + S for _, j in outside]) + margin,
        max([H] + [i * S + S for i, _ in outside]) + margin,
    )


def _data_box(ax, artist, renderer) -> Box:
    """An artist's window extent in data units."""
    corners = ax.transData.inverted().transform(artist.get_window_extent(renderer).get_points())
    (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def _grown(box: Box, by: float) -> Box:
    return box[0] - by, box[1] - by, box[2] + by, box[3] + by


def _entry(p: np.ndarray, q: np.ndarray, box: Box) -> np.ndarray:
    """Where the segment from ``p`` (outside ``box``) to ``q`` (inside it) enters ``box``."""
    times = [  # it enters the box once it has entered the box's slabs along x and along y
        min((lo - p[axis]) / (q[axis] - p[axis]), (hi - p[axis]) / (q[axis] - p[axis]))
        for axis, (lo, hi) in enumerate(((box[0], box[2]), (box[1], box[3])))
        if q[axis] != p[axis]
    ]
    return p + max([0.0, *times]) * (q - p)


def _distance(box: Box, a: np.ndarray, b: np.ndarray | None = None) -> float:
    """Distance from ``box`` to the point ``a``, or to the segment ``a``-``b`` (sampled along it)."""
    xy = a[None] if b is None else a + np.linspace(0.0, 1.0, 200)[:, None] * (b - a)
    dx = np.maximum(np.maximum(box[0] - xy[:, 0], xy[:, 0] - box[2]), 0.0)
    dy = np.maximum(np.maximum(box[1] - xy[:, 1], xy[:, 1] - box[3]), 0.0)
    return float(np.hypot(dx, dy).min())


def _box_distance(a: Box, b: Box) -> float:
    return float(np.hypot(max(a[0] - b[2], b[0] - a[2], 0.0), max(a[1] - b[3], b[1] - a[3], 0.0)))


def panel(
    ax,
    H: int,
    W: int,
    S: int,
    pixel: tuple[float, float],
    title: str,
    label_at: dict[int, tuple[float, float]],
) -> None:
    """Draw the ``H x W`` image's grid of ``S``-pixel cells with their ids, the ``(y, x)`` pixel and an arrow
    from it to each of its 9 candidates' labels (placed by ``label_at``, see ``INTERIOR_LABELS``). The axes'
    place in the figure must be final: the labels are measured to stop the arrows just before them."""
    n_h, n_w = grid_shape(H, W, S)
    py, px = pixel
    ci, cj = int(py // S), int(px // S)
    x0, y0, x1, y1 = limits(H, W, S, pixel)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(Rectangle((0, 0), W, H, fill=False, lw=2, ec="black", zorder=3))

    def extent(i: int, j: int) -> tuple[float, float, float, float]:
        """``(x, y, width, height)`` of cell ``(i, j)``: partial at the image's border, full outside it."""
        inside = 0 <= i < n_h and 0 <= j < n_w
        return j * S, i * S, min(S, W - j * S) if inside else S, min(S, H - i * S) if inside else S

    ids = {}
    for i in range(n_h):
        for j in range(n_w):
            x, y, w, h = extent(i, j)
            ax.add_patch(Rectangle((x, y), w, h, fill=True, fc="#f4f4f4", ec="#888888", lw=1))
            # placed once the arrows are drawn; va="bottom": the position is the text's lower left corner
            ids[i, j] = ax.text(
                x, y, f"id {i * n_w + j}", fontsize=ID_FONT, color="#555555", va="bottom", zorder=4
            )
    x, y, w, h = extent(ci, cj)
    ax.add_patch(Rectangle((x, y), w, h, fill=True, fc="#ffe9a8", ec="#c08000", lw=1.5))

    labels = []
    for k, (dy, dx) in enumerate(OFFSETS):
        i, j = ci + dy, cj + dx
        valid = 0 <= i < n_h and 0 <= j < n_w
        x, y, w, h = extent(i, j)
        if not valid:
            ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="#c03030", lw=0.8, ls="--"))
        fy, fx = label_at.get(k, (0.5, 0.5))
        colour = "#1f5fbf" if valid else "#c03030"
        text = ax.text(
            x + fx * w,
            y + fy * h,
            f"{k} {NAMES[k]}" + ("" if valid else "\n(outside)"),
            ha="center",
            va="center",
            fontsize=LABEL_FONT,
            color=colour,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "lw": 0.8},
            zorder=5,  # over every arrow
        )
        labels.append((text, valid, colour))

    # the labels' and ids' sizes as drawn, in data units
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    pixels_per_unit = ax.transData.transform((1, 0))[0] - ax.transData.transform((0, 0))[0]
    point = ax.figure.dpi / 72 / pixels_per_unit  # one point, in data units
    dot = np.array([px, py], dtype=float)
    label_boxes, arrows = [], []
    for text, valid, colour in labels:
        box = _data_box(ax, text.get_bbox_patch(), renderer)
        end = _entry(dot, np.array(text.get_position(), dtype=float), _grown(box, ARROW_GAP * point))
        label_boxes.append(box)
        arrows.append(end)
        ax.annotate(
            "",
            xy=tuple(end),
            xytext=tuple(dot),
            arrowprops={
                "arrowstyle": "-|>,head_length=0.5,head_width=0.22",
                "mutation_scale": 12,
                "shrinkA": 0,  # from the dot's centre: the dot, drawn over it, shows where it starts
                "shrinkB": 0,  # the head's tip at ``end``, just before the label
                "color": colour,
                "lw": 1.2,
                "ls": "-" if valid else ":",
            },
            zorder=3.5,  # over the image's outline, under the labels
        )

    # each id in the first corner of its cell (bottom left, bottom right, top left, top right) that keeps
    # ID_CLEARANCE from every arrow, label and the dot; failing that, in the clearest corner
    inset, needed = ID_INSET * point, ID_CLEARANCE * point
    for (i, j), text in ids.items():
        x, y, w, h = extent(i, j)
        tx0, ty0, tx1, ty1 = _data_box(ax, text, renderer)
        tw, th = tx1 - tx0, ty1 - ty0
        best: tuple[tuple[float, int], Box] | None = None
        for rank, (left, bottom) in enumerate(((True, True), (False, True), (True, False), (False, False))):
            bx = x + inset if left else x + w - inset - tw
            by = y + h - inset - th if bottom else y + inset
            box = (bx, by, bx + tw, by + th)
            clearance = min(
                [_distance(box, dot, end) for end in arrows]
                + [_box_distance(box, other) for other in label_boxes]
                + [_distance(box, dot) - 3 * point]  # the dot's radius
            )
            key = (min(clearance, needed), -rank)
            if best is None or key > best[0]:
                best = (key, box)
        assert best is not None
        bx, _, _, by1 = best[1]
        text.set_position((bx, by1))
    ax.plot([px], [py], "o", color="black", ms=6, mec="white", mew=0.8, zorder=6)
    ax.set_title(title, fontsize=12, pad=4)


def main(out: Path = OUT) -> None:
    """Draw the figure into ``out`` (PNG); type sizes hold at the docs' column width, about 800 pixels."""
    sizes = []
    for H, W, S, pixel, *_, scale in PANELS:
        x0, y0, x1, y1 = limits(H, W, S, pixel)
        sizes.append(((x1 - x0) * scale, (y1 - y0) * scale))
    gap, titles = 0.3, 0.6  # inches: between the panels, above them for the titles
    width = sum(w for w, _ in sizes) + gap
    height = max(h for _, h in sizes) + titles
    fig = plt.figure(figsize=(width, height))
    left = 0.0
    for (H, W, S, pixel, title, label_at, _), (w, h) in zip(PANELS, sizes, strict=True):
        ax = fig.add_axes((left / width, 0.0, w / width, h / height))  # the images' bottom edges aligned
        panel(ax, H, W, S, pixel, title, label_at)
        left += w + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
