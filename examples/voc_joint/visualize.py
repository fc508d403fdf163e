"""PNG panels: image with superpixel contours | ground truth | baseline prediction | joint prediction.

Label maps are drawn in the VOC palette (ignore = 255 in cream), superpixel contours in yellow; small images
are upscaled (nearest) so that the panels stay legible. Pure PIL + numpy (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from examples.voc_joint.data import IGNORE_INDEX, VOC_CLASSES, voc_palette

__all__ = ["colorize", "make_panel", "overlay_contours", "save_panel", "superpixel_contours"]

_PALETTE = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
_TITLE_H = 14
_GAP = 4


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def colorize(labels: Tensor | np.ndarray) -> np.ndarray:
    """VOC colours of a label map (LongTensor[H, W], values 0..255) as a uint8 array [H, W, 3]."""
    lab = _np(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must have shape [H, W], got {lab.shape}")
    if lab.size and (lab.min() < 0 or lab.max() > 255):
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
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"image must have shape [3, H, W], got {img.shape}")
    if img.dtype != np.uint8:
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
) -> Image.Image:
    """Build the four-tile panel as a PIL image.

    Args:
        image (Tensor[3, H, W]): float image in [0, 1] (or uint8).
        target (LongTensor[H, W]): ground truth.
        baseline (LongTensor[H, W] | None): baseline (plain segmentation network) prediction; tile blank if
            None.
        joint (LongTensor[H, W] | None): joint model prediction; tile blank if None.
        superpixels (LongTensor[H, W] | None): contours drawn on the image.
        titles (Sequence[str]): four tile titles.
        min_height (int): upscale (nearest, integer factor) until the tiles are at least this high.
        legend (bool): add a strip naming the classes present (ground truth and predictions).
    """
    img = overlay_contours(image, superpixels)
    h, w = img.shape[:2]
    tiles = [img]
    labels = []
    for lab in (target, baseline, joint):
        if lab is None:
            tiles.append(np.full((h, w, 3), 255, np.uint8))
            continue
        arr = _np(lab)
        if arr.shape != (h, w):
            raise ValueError(f"label maps must be {h}x{w} like the image, got {arr.shape}")
        labels.append(arr)
        tiles.append(colorize(arr))
    factor = max(1, -(-int(min_height) // h))
    tiles = [np.repeat(np.repeat(t, factor, 0), factor, 1) for t in tiles]
    th, tw = h * factor, w * factor
    present = sorted({int(v) for arr in labels for v in np.unique(arr) if v != IGNORE_INDEX})
    legend_h = (_TITLE_H + 2) if legend and present else 0
    canvas = Image.new("RGB", (4 * tw + 3 * _GAP, _TITLE_H + th + legend_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (tile, title) in enumerate(zip(tiles, titles, strict=True)):
        x = i * (tw + _GAP)
        canvas.paste(Image.fromarray(tile), (x, _TITLE_H))
        draw.text((x + 2, 1), str(title), fill=(0, 0, 0))
    if legend_h:
        x, y = 2, _TITLE_H + th + 3
        for c in present:
            name = VOC_CLASSES[c] if c < len(VOC_CLASSES) else str(c)
            draw.rectangle([x, y, x + 9, y + 9], fill=tuple(int(v) for v in _PALETTE[c]), outline=(0, 0, 0))
            draw.text((x + 12, y - 1), name, fill=(0, 0, 0))
            x += 12 + int(draw.textlength(name)) + 8
    return canvas


def save_panel(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """:func:`make_panel` then save as PNG at ``path`` (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_panel(*args, **kwargs).save(path)
    return path
