"""Draw the 9-neighbour soft association figure used by docs/concepts/soft_association.rst.

Run from the repository root: ``python docs/_scripts/make_soft_figure.py`` (writes
``docs/_static/soft_neighbours.png``). Needs matplotlib.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from sparse_ops import NEIGHBOUR_OFFSETS as OFFSETS
from sparse_ops import grid_shape

NAMES = ["TL", "T", "TR", "L", "C", "R", "BL", "B", "BR"]
OUT = Path(__file__).resolve().parents[1] / "_static" / "soft_neighbours.png"


def panel(ax, H: int, W: int, S: int, pixel: tuple[float, float], title: str) -> None:
    n_h, n_w = grid_shape(H, W, S)
    ax.set_xlim(-1.1 * S, n_w * S + 1.1 * S)
    ax.set_ylim(n_h * S + 1.1 * S, -1.1 * S)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(Rectangle((0, 0), W, H, fill=False, lw=2, ec="black"))
    for i in range(n_h):
        for j in range(n_w):
            h = min(S, H - i * S)
            w = min(S, W - j * S)
            ax.add_patch(Rectangle((j * S, i * S), w, h, fill=True, fc="#f4f4f4", ec="#888888", lw=1))
            # in the bottom-left corner: the candidates' labels sit at the cells' centres, and the id of a
            # narrow partial cell written at its top lay under the border pixel's marker ("id 3")
            ax.text(j * S + 0.15 * S, i * S + h - 0.12 * S, f"id {i * n_w + j}", fontsize=9, color="#555555")
    py, px = pixel
    ci, cj = int(py // S), int(px // S)
    ax.add_patch(
        Rectangle(
            (cj * S, ci * S),
            min(S, W - cj * S),
            min(S, H - ci * S),
            fill=True,
            fc="#ffe9a8",
            ec="#c08000",
            lw=1.5,
        )
    )
    for k, (dy, dx) in enumerate(OFFSETS):
        i, j = ci + dy, cj + dx
        valid = 0 <= i < n_h and 0 <= j < n_w
        cy, cx = (i + 0.5) * S, (j + 0.5) * S
        if not valid:
            ax.add_patch(Rectangle((j * S, i * S), S, S, fill=False, ec="#c03030", lw=0.8, ls="--"))
        else:
            cy = i * S + min(S, H - i * S) / 2
            cx = j * S + min(S, W - j * S) / 2
        colour = "#1f5fbf" if valid else "#c03030"
        ax.annotate(
            "",
            xy=(cx, cy),
            xytext=(px, py),
            arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.2, "ls": "-" if valid else ":"},
        )
        label = f"{k} {NAMES[k]}" + ("" if valid else "\n(outside)")
        ax.text(
            cx,
            cy,
            label,
            ha="center",
            va="center",
            fontsize=10,
            color=colour,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": colour, "lw": 0.8},
            zorder=5,  # over every arrow: the later candidates' arrows crossed the centre's label
        )
    ax.plot([px], [py], "o", color="black", ms=5)
    ax.set_title(title, fontsize=12, pad=4)


def main(out: Path = OUT) -> None:
    """Draw the figure into ``out`` (PNG); type sizes hold at the docs' column width, about 800 pixels."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    panel(axes[0], 30, 40, 10, (12.5, 21.5), "interior pixel: 9 candidate cells\n(H=30, W=40, S=10)")
    panel(
        axes[1], 26, 34, 10, (3.5, 31.5), "border pixel in a partial cell\n(H=26, W=34, S=10: n_h=3, n_w=4)"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight", pad_inches=0.1)  # without the empty band below the grids
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
