"""Make ``docs/_static/uniformize_figure.png``: image, superpixel contours, raw argmax, uniformized argmax.

Synthetic data only (runs offline): a 3-class image of a disc and a square on a background, noisy per-pixel
logits whose argmax is ragged at the boundaries, Voronoi superpixels of jittered grid seeds whose edges follow
the object outlines, and the argmax after :func:`sparse_ops.uniformize`. The three classes are pale grey,
orange and blue (``CLASS_COLOURS``): told apart with red-green colour blindness and in grayscale print.

Run from the repository root: ``python docs/_scripts/make_uniformize_figure.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import ListedColormap
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sparse_ops import relabel_contiguous, uniformize  # noqa: E402

#: background, disc, square: in the image and in the label panels; apart in hue and in lightness
CLASS_COLOURS = ("#d9d9d0", "#e69f00", "#0072b2")


def synthetic(h: int = 120, w: int = 160, seed: int = 0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    target = np.zeros((h, w), dtype=np.int64)
    target[(yy - 60) ** 2 + (xx - 50) ** 2 < 32**2] = 1
    target[(abs(yy - 55) < 28) & (abs(xx - 118) < 26)] = 2
    palette = np.array([[int(c[k : k + 2], 16) / 255 for k in (1, 3, 5)] for c in CLASS_COLOURS])
    image = np.clip(palette[target] + g.normal(0, 0.04, (h, w, 3)), 0, 1)
    # logits: a blurred (hence boundary-smeared) one-hot plus spatially correlated noise
    onehot = np.stack([(target == c).astype(float) for c in range(3)])
    logits = np.stack([gaussian_filter(o, 1.5) for o in onehot]) * 2
    logits += np.stack([gaussian_filter(g.normal(0, 1, (h, w)), 1.0) for _ in range(3)]) * 2.2
    # superpixels: pixels go to the nearest of jittered grid seeds in (y, x, colour) space (a one-step SLIC)
    side_y, side_x = 10, 13
    cy, cx = np.meshgrid(
        (np.arange(side_y) + 0.5) * h / side_y, (np.arange(side_x) + 0.5) * w / side_x, indexing="ij"
    )
    seeds = np.stack([cy.ravel(), cx.ravel()], 1) + g.uniform(-2, 2, (side_y * side_x, 2))
    seeds = np.clip(seeds, 0, [h - 1, w - 1])
    smooth = np.stack([gaussian_filter(image[..., i], 1.5) for i in range(3)], -1)
    seed_col = smooth[seeds[:, 0].astype(int), seeds[:, 1].astype(int)]
    colour_weight = 40.0
    tree = cKDTree(np.concatenate([seeds, seed_col * colour_weight], 1))
    feats = np.concatenate([np.stack([yy.ravel(), xx.ravel()], 1), smooth.reshape(-1, 3) * colour_weight], 1)
    _, sp = tree.query(feats)
    return (
        image,
        target,
        logits.astype(np.float32),
        sp.reshape(h, w) + 1,
    )  # ids start at 1, like skimage's slic


def boundary_segments(sp: np.ndarray) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """The superpixel boundaries as line segments ``((x0, y0), (x1, y1))`` in ``imshow``'s pixel coordinates
    (pixel ``(i, j)`` covers ``j - 0.5 .. j + 0.5`` by ``i - 0.5 .. i + 0.5``): every pixel edge between two
    pixels of different labels, once, with the runs of such edges along a row or a column joined into one
    segment. A contour of a 1-pixel-wide edge mask would trace both sides of it, drawing every boundary twice
    as a thick band over the pixels beside it, which hid the errors of superpixels straddling the true
    boundary."""
    segments = []
    # along x: the edges between pixel rows i and i + 1 (y = i + 0.5); along y (the transposed comparison):
    # the edges between pixel columns i and i + 1 (x = i + 0.5), the ends of a run swapped into (x, y)
    for differ, along_x in ((sp[:-1] != sp[1:], True), ((sp[:, :-1] != sp[:, 1:]).T, False)):
        for i, line in enumerate(differ):
            padded = np.concatenate([[False], line, [False]])
            starts = np.flatnonzero(padded[1:] & ~padded[:-1])  # first edge of each run
            stops = np.flatnonzero(~padded[1:] & padded[:-1])  # one past its last edge
            for a, b in zip(starts, stops, strict=True):
                ends = ((a - 0.5, i + 0.5), (b - 0.5, i + 0.5))
                segments.append(ends if along_x else (ends[0][::-1], ends[1][::-1]))
    return segments


def main(out: Path = ROOT / "docs" / "_static" / "uniformize_figure.png") -> None:
    image, target, logits, sp = synthetic()
    ids, k = relabel_contiguous(torch.from_numpy(sp)[None])
    x = torch.from_numpy(logits)[None]
    y = uniformize(x, ids, k)
    raw = x.argmax(1)[0].numpy()
    uni = y.argmax(1)[0].numpy()
    acc_raw, acc_uni = (raw == target).mean(), (uni == target).mean()
    cmap = ListedColormap(CLASS_COLOURS)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.1))
    panels = [
        (image, None, "synthetic image"),
        (image, None, f"{int(k[0])} superpixels"),
        (raw, cmap, f"raw argmax (pixel acc. {acc_raw:.1%})"),
        (uni, cmap, f"uniformized argmax ({acc_uni:.1%})"),
    ]
    for ax, (img, cm, title) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap=cm, vmin=0, vmax=2, interpolation="nearest")
        if title != "synthetic image":
            lines = LineCollection(
                boundary_segments(sp), colors="black", linewidths=0.4, capstyle="projecting"
            )
            ax.add_collection(lines)  # each boundary once, on the pixel edges
        ax.set_title(title, fontsize=12)
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out} (raw {acc_raw:.3f}, uniformized {acc_uni:.3f})")


if __name__ == "__main__":
    main()
