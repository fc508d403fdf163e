"""Draw the figures of docs/examples/data_and_metrics.rst from freshly generated synthetic data.

    python docs/_scripts/make_synthetic_figure.py

writes ``docs/_static/synthetic_voc_samples.png`` (images above their palette masks; cream = ignore band) and
``docs/_static/trimap_bands.png`` (a mask and its trimap bands of width 1, 3 and 5 pixels in colour;
pixels outside the band are faded).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.voc_joint.data import VOCSegmentation  # noqa: E402
from examples.voc_joint.metrics import boundary_band  # noqa: E402
from examples.voc_joint.synthetic import generate_synthetic_voc  # noqa: E402
from examples.voc_joint.visualize import colorize  # noqa: E402

STATIC = ROOT / "docs" / "_static"
GAP = 4
#: the panel titles' font size in pixels: the 1296-pixel figure is shown about 800 pixels wide in the docs
TITLE_PX = 20


def _title_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's default font at ``TITLE_PX`` (a scalable font from Pillow 10.1; before, its small bitmap)."""
    try:
        return ImageFont.load_default(size=TITLE_PX)
    except TypeError:  # Pillow 10.0: no size argument
        return ImageFont.load_default()


def _grid(rows: list[list[np.ndarray]], scale: int) -> Image.Image:
    h, w = rows[0][0].shape[:2]
    h, w = h * scale, w * scale
    canvas = Image.new("RGB", (len(rows[0]) * (w + GAP) - GAP, len(rows) * (h + GAP) - GAP), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            big = np.repeat(np.repeat(tile, scale, 0), scale, 1)
            canvas.paste(Image.fromarray(big), (c * (w + GAP), r * (h + GAP)))
    return canvas


def main(out: Path = STATIC) -> None:
    """Write both figures into the folder ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_synthetic_voc(tmp, num_train=6, num_val=1, seed=0, sbd=False)
        ds = VOCSegmentation(root, "train")
        images, masks = [], []
        for i in range(6):
            image, target = ds.load(i)
            images.append(image.permute(1, 2, 0).numpy())
            masks.append(colorize(target))
        _grid([images, masks], 1).save(out / "synthetic_voc_samples.png", optimize=True)

        image, target = ds.load(1)
        tiles = [image.permute(1, 2, 0).numpy(), colorize(target)]
        for width in (1, 3, 5):
            band = boundary_band(target[None], width)[0].numpy()
            tile = colorize(target).copy()
            tile[~band] = (tile[~band] * 0.25 + 191).astype(np.uint8)
            tiles.append(tile)
        grid = _grid([tiles], 2)
        strip = TITLE_PX + 8
        fig = Image.new("RGB", (grid.width, grid.height + strip), (255, 255, 255))
        fig.paste(grid, (0, strip))
        draw = ImageDraw.Draw(fig)
        w, font = image.shape[-1] * 2, _title_font()
        titles = ["image", "ground truth", *(f"band, width {b} px" for b in (1, 3, 5))]
        for k, title in enumerate(titles):
            draw.text((k * (w + GAP) + 3, 3), title, fill=(0, 0, 0), font=font)
        fig.save(out / "trimap_bands.png", optimize=True)
    print(f"wrote {out / 'synthetic_voc_samples.png'} and {out / 'trimap_bands.png'}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
