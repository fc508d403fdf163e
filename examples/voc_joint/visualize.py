"""PNG panels: image with superpixel contours | ground truth | baseline prediction | joint prediction.

Label maps are drawn in the VOC palette (ignore = 255 in cream), superpixel contours in yellow; small images
are upscaled (nearest) so that the panels stay legible (a thin one up to 1024 pixels wide). Titles and the
legend grow with the tiles (10 pixels for tiles under 160 pixels wide, up to 18; each title shrinks until it
fits its tile, or is cut at its edge) so that a panel shown scaled down in a page stays readable; the legend
wraps onto more rows rather than run off the panel (which is widened for an entry wider than its tiles).
Pure PIL + numpy (no display needed).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from examples.voc_joint.atomic import write_bytes_atomic
from examples.voc_joint.data import IGNORE_INDEX, VOC_CLASSES, voc_palette
from examples.voc_joint.wording import counted

__all__ = [
    "PANEL_CLASSES_MAX",
    "colorize",
    "make_panel",
    "overlay_contours",
    "save_panel",
    "superpixel_contours",
]

_PALETTE = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
#: How many classes a panel can draw, one per colour of the VOC palette but the last (index 255 is the
#: ignore label's void colour, so a 256th class would be drawn as void and left out of the legend).
PANEL_CLASSES_MAX = len(_PALETTE) - 1
_GAP = 4
#: the widest a tile is upscaled to, pixels (the upscaling for ``min_height`` stops before)
_UPSCALED_WIDTH_MAX = 1024
#: the smallest and largest font size of titles and legend, pixels
_FONT_PX = (10, 18)


def _font(px: int) -> Any:
    """Pillow's default font at ``px`` pixels (scalable from Pillow 10.1, the floor of the ``examples`` extra;
    Pillow 10.0 had only its 10-pixel bitmap, and titles too small to read in the docs)."""
    return ImageFont.load_default(size=px)


def _title_font(titles: Sequence[str], tile_width: int) -> tuple[Any, int]:
    """The font of the titles and the legend and its size in pixels: a 16th of the tile width within
    ``_FONT_PX``, smaller (not under ``_FONT_PX[0]``) until every title fits its tile."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    px = max(_FONT_PX[0], min(_FONT_PX[1], tile_width // 16))
    while px > _FONT_PX[0] and max(draw.textlength(str(t), font=_font(px)) for t in titles) > tile_width - 4:
        px -= 1
    return _font(px), px


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def colorize(labels: Tensor | np.ndarray) -> np.ndarray:
    """VOC colours of a label map (LongTensor[H, W], values 0..255) as a uint8 array [H, W, 3]."""
    lab = _np(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must have shape [H, W], got {lab.shape}")
    if lab.dtype.kind not in "biu":  # a float map: NaN was an IndexError, 1.7 was drawn as class 1
        if lab.dtype.kind != "f":
            raise ValueError(f"labels must be integer class indices in [0, 255], got dtype {lab.dtype}")
        bad = lab[~np.isfinite(lab) | (lab != np.round(lab))]
        if bad.size:
            got = counted(bad.size, "value that is not a whole number", "values that are not whole numbers")
            raise ValueError(
                f"labels must be integer class indices in [0, 255], got {got}, e.g. {bad.flat[0]}"
            )
    if lab.size and (lab.min() < 0 or lab.max() >= len(_PALETTE)):  # the classes and the void label 255
        raise ValueError(f"labels must lie in [0, 255], got range [{lab.min()}, {lab.max()}]")
    return _PALETTE[lab.astype(np.int64)]


def superpixel_contours(superpixels: Tensor | np.ndarray) -> np.ndarray:
    """Bool array [H, W]: pixels whose right or lower neighbour lies in another superpixel (1-px contours)."""
    sp = _np(superpixels)
    if sp.ndim != 2:
        raise ValueError(f"superpixels must have shape [H, W], got {sp.shape}")
    edge = np.zeros(sp.shape, dtype=bool)
    edge[:, :-1] |= sp[:, 1:] != sp[:, :-1]
    edge[:-1, :] |= sp[1:, :] != sp[:-1, :]
    return edge


def _to_uint8_image(image: Tensor | np.ndarray) -> np.ndarray:
    img = _np(image)
    if img.ndim != 3 or img.shape[0] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
        raise ValueError(f"image must have shape [3, H, W] with H, W >= 1, got {img.shape}")
    if img.dtype != np.uint8:
        # an int64 image of 0..255 was clipped to [0, 1] (white), NaN cast to an arbitrary byte (black here)
        if img.dtype.kind != "f":
            raise ValueError(f"image must be float in [0, 1] or uint8, got dtype {img.dtype}")
        nan = int(np.isnan(img).sum())
        if nan:
            raise ValueError(f"image must be float in [0, 1] or uint8, got {counted(nan, 'NaN value')}")
        img = (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(img.transpose(1, 2, 0))


def overlay_contours(
    image: Tensor | np.ndarray,
    superpixels: Tensor | np.ndarray | None,
    color: tuple[int, int, int] = (255, 230, 0),
) -> np.ndarray:
    """The image (Tensor[3, H, W] in [0, 1] or uint8) as uint8 [H, W, 3] with superpixel contours on it."""
    out: np.ndarray = _to_uint8_image(image).copy()
    if superpixels is not None:
        edge = superpixel_contours(superpixels)
        if edge.shape != out.shape[:2]:
            raise ValueError(f"superpixels {edge.shape} and image {out.shape[:2]} differ in size")
        out[edge] = color
    return out


def make_panel(
    image: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    baseline: Tensor | np.ndarray | None,
    joint: Tensor | np.ndarray | None,
    superpixels: Tensor | np.ndarray | None = None,
    *,
    titles: Sequence[str] = ("image + superpixels", "ground truth", "baseline", "joint"),
    min_height: int = 160,
    legend: bool = True,
    class_names: Sequence[str] | None = None,
) -> Image.Image:
    """Build the panel as a PIL image: image, ground truth and two predictions (three tiles where a prediction
    has neither a map nor a title).

    Args:
        image (Tensor[3, H, W]): float image in [0, 1] (or uint8).
        target (LongTensor[H, W]): ground truth.
        baseline (LongTensor[H, W] | None): baseline (plain segmentation network) prediction; tile blank if
            None, left out if its title is empty too.
        joint (LongTensor[H, W] | None): joint model prediction; tile blank if None, left out if its title
            is empty too (a segmentation network's panel: image | ground truth | its prediction).
        superpixels (LongTensor[H, W] | None): contours drawn on the image.
        titles (Sequence[str]): four tile titles.
        min_height (int): upscale (nearest, integer factor) until the tiles are at least this high, but not
            beyond 1024 pixels wide (a thin image is upscaled less, or not at all).
        legend (bool): add a strip naming the classes present (ground truth and predictions).
        class_names (Sequence[str] | None): the legend's name of each class (default: the VOC names; a class
            beyond the names is shown as its number).
    """
    if isinstance(titles, str) or len(titles) != 4:
        raise ValueError(f"titles must be four tile titles, got {titles!r}")
    img = overlay_contours(image, superpixels)
    h, w = img.shape[:2]
    tiles = [img]
    labels = []
    shown = [str(titles[0])]  # the titles of the tiles drawn
    for name, lab, title in zip(
        ("target", "baseline", "joint"), (target, baseline, joint), titles[1:], strict=True
    ):
        if lab is None:
            if name == "target" or str(title):  # (a prediction with no map and no title: no tile at all)
                tiles.append(np.full((h, w, 3), 255, np.uint8))
                shown.append(str(title))
            continue
        shown.append(str(title))
        arr = _np(lab)
        if arr.shape != (h, w):
            raise ValueError(f"{name}: label maps must be {h}x{w} like the image, got {arr.shape}")
        labels.append(arr)
        try:
            tiles.append(colorize(arr))
        except ValueError as exc:  # colorize names its argument "labels": say which map
            raise ValueError(f"{name}: {exc}") from None
    # a thin image (2 x 1000) would be upscaled 80 times into a 320012-pixel-wide panel (1.1 GB while drawing)
    factor = max(1, min(-(-int(min_height) // h), _UPSCALED_WIDTH_MAX // w))
    tiles = [np.repeat(np.repeat(t, factor, 0), factor, 1) for t in tiles]
    th, tw = h * factor, w * factor
    present = sorted({int(v) for arr in labels for v in np.unique(arr) if v != IGNORE_INDEX})
    font, px = _title_font(shown, tw)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))  # measures text
    # high enough for the descenders of a title drawn at y = 1 (px + 4 cut the bottoms of g, p, j at 18 px)
    descended = draw.textbbox((2, 1), "Agjpqy", font=font)[3]
    title_h, width = max(px + 4, int(descended) + 1), len(tiles) * tw + (len(tiles) - 1) * _GAP
    entries, x, row = [], 2, 0  # the legend: (class, name, x, row), wrapped at the panel's width
    right = width  # the canvas's width: the tiles', or that of a legend entry wider alone (narrow tiles)
    names = VOC_CLASSES if class_names is None else class_names
    for c in present if legend else []:
        name = str(names[c]) if c < len(names) else str(c)
        size = px + 2 + int(draw.textlength(name, font=font)) + px - 2
        if x > 2 and x + size > width:
            x, row = 2, row + 1
        entries.append((c, name, x, row))
        x += size
        right = max(right, x)
    legend_h = (row + 1) * (title_h + 2) if entries else 0
    canvas = Image.new("RGB", (right, title_h + th + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (tile, title) in enumerate(zip(tiles, shown, strict=True)):
        x = i * (tw + _GAP)
        canvas.paste(Image.fromarray(tile), (x, title_h))
        # drawn on a strip of the tile's width: a title too long at the smallest font is cut at its tile's
        # edge (on 8-pixel tiles each title ran over the next one's)
        strip = Image.new("RGB", (tw, title_h), (255, 255, 255))
        ImageDraw.Draw(strip).text((2, 1), str(title), fill=(0, 0, 0), font=font)
        canvas.paste(strip, (x, 0))
    for c, name, x, row in entries:
        y = title_h + th + 3 + row * (title_h + 2)
        box = px - 1  # the colour swatch
        draw.rectangle([x, y, x + box, y + box], fill=tuple(int(v) for v in _PALETTE[c]), outline=(0, 0, 0))
        draw.text((x + px + 2, y - 1), name, fill=(0, 0, 0), font=font)
    return canvas


def save_panel(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """:func:`make_panel` then save as PNG at ``path`` (parent folders created); returns the path.

    The file is written whole or not at all (``examples.voc_joint.atomic.write_bytes_atomic``): a save
    that fails (a full disk) or is interrupted leaves the earlier file at ``path``, not a cut PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    make_panel(*args, **kwargs).save(png, format="PNG")
    write_bytes_atomic(path, png.getvalue())
    return path
