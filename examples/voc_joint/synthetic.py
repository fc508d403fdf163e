"""A synthetic data set in exactly the PASCAL VOC 2012 layout, deterministic from a seed.

Every image shows one to three textured shapes (ellipses, polygons, smooth blobs) of the 20 VOC object classes
on a textured background (class 0); a shape is left out when it covers less than 0.5 % of the image (of
``4 min(H, W)^2`` pixels on a long thin one), or is hidden by a later one, so a few images show fewer. Each
class has its own colour pair, texture (stripes, checkerboard, dots, rings, smooth noise), texture orientation
and preferred shape, so a small network can learn the classes, while the shapes' outlines make boundaries
matter. The texture period is 4 pixels for every class (times 0.85 to 1.15 per shape). As in VOC, a band of
"ignore" pixels (label 255) runs along every object boundary.

Layout written directly under ``root`` (the same as ``VOCdevkit/VOC2012`` plus the SBD-augmented files)::

    JPEGImages/<name>.jpg                   RGB JPEG images
    SegmentationClass/<name>.png            palette ("P") PNGs, VOC palette, labels 0..20 and 255
    ImageSets/Segmentation/train.txt        one image name per line
    ImageSets/Segmentation/val.txt
    ImageSets/Segmentation/trainval.txt
    SegmentationClassAug/<name>.png         (sbd=True) grayscale ("L") PNGs of raw label values
    ImageSets/SegmentationAug/train.txt     (sbd=True) train + the extra "SBD" images
    ImageSets/SegmentationAug/val.txt       (sbd=True) = the VOC val list
    synthetic_voc.json                      the generation parameters (makes generation idempotent)

The extra "SBD" images (``num_sbd_extra``, default ``num_train // 2``) appear only in the augmented train list
and their masks carry no 255 band, like the SBD annotations of the real ``trainaug`` set.

Command line::

    python examples/voc_joint/synthetic.py --output-dir DIR --num-train 64 --num-val 16 --seed 0
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.voc_joint.cli import SIDE_MAX, check_output_dir, int_range, output_path
from examples.voc_joint.data import NUM_CLASSES, voc_palette
from examples.voc_joint.signals import run_stoppable
from examples.voc_joint.staging import remove_abandoned_staging, unique_folder
from examples.voc_joint.wording import counted

#: Largest ``--num-train`` / ``--num-val`` / ``--num-sbd-extra`` (a million images, hours of writing already).
#: A huge count (``2**63``) was a ``MemoryError`` traceback after allocating a list of names until it failed.
IMAGES_MAX = 10**6

try:
    import fcntl
except ImportError:  # Windows: generation is not locked against concurrent generators
    fcntl = None  # type: ignore[assignment]  # checked before use

__all__ = [
    "CLASS_STYLES",
    "IMAGES_MAX",
    "build_parser",
    "check_args",
    "current_folder_error",
    "generate_synthetic_voc",
    "main",
    "render_sample",
]

#: 2: shapes of long thin images are kept (:func:`render_sample`); other sizes give the same files as 1
_FORMAT_VERSION = 2
_MARKER = "synthetic_voc.json"
_TEXTURES = ("stripes", "checker", "dots", "rings", "noise")
_SHAPES = ("ellipse", "polygon", "blob")


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _make_class_styles() -> tuple[dict[str, Any], ...]:
    """Fixed appearance of each class (independent of the seed: it defines the data set's classes)."""
    rng = np.random.default_rng(20100)
    styles: list[dict[str, Any]] = [
        {"texture": "noise", "shape": None}
    ]  # class 0: background, drawn separately
    for c in range(1, NUM_CLASSES):
        hue = (c - 1) / (NUM_CLASSES - 1)
        primary = _hsv_to_rgb(hue, 0.75 + 0.2 * rng.random(), 0.75 + 0.2 * rng.random())
        secondary = _hsv_to_rgb(
            (hue + 0.35 + 0.3 * rng.random()) % 1.0, 0.5 + 0.4 * rng.random(), 0.25 + 0.35 * rng.random()
        )
        styles.append(
            {
                "primary": primary,
                "secondary": secondary,
                "texture": _TEXTURES[(c - 1) % len(_TEXTURES)],
                "shape": _SHAPES[((c - 1) // len(_TEXTURES) + c) % len(_SHAPES)],
                # 4 for every class (as 4 + (c * 7) % 7 always was): the set's images depend on it
                "period": 4.0,
                "angle": float(np.pi * rng.random()),
            }
        )
    return tuple(styles)


#: Appearance of every class (colours, texture kind, texture period (px; 4 for all) and angle, preferred
#: shape).
CLASS_STYLES: tuple[dict[str, Any], ...] = _make_class_styles()


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid bilinearly upsampled to (h, w)."""
    gh, gw = int(np.ceil(h / cell)) + 2, int(np.ceil(w / cell)) + 2
    grid = rng.random((gh, gw)).astype(np.float32)
    ys = np.linspace(0, gh - 2, h, dtype=np.float32)
    xs = np.linspace(0, gw - 2, w, dtype=np.float32)
    out: np.ndarray = ndimage.map_coordinates(
        grid, np.meshgrid(ys, xs, indexing="ij"), order=1, mode="nearest"
    )
    return out


def _texture(rng: np.random.Generator, style: dict[str, Any], yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """An (h, w, 3) float image of the class texture, with a small per-instance jitter."""
    h, w = yy.shape
    period = style["period"] * (0.85 + 0.3 * rng.random())
    angle = style["angle"] + 0.3 * (rng.random() - 0.5)
    u = xx * np.cos(angle) + yy * np.sin(angle) + period * rng.random()
    v = -xx * np.sin(angle) + yy * np.cos(angle) + period * rng.random()
    kind = style["texture"]
    if kind == "stripes":
        t = (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    elif kind == "checker":
        t = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    elif kind == "dots":
        du = (u % period) - period / 2
        dv = (v % period) - period / 2
        t = (du * du + dv * dv < (period / 3) ** 2).astype(np.float32)
    elif kind == "rings":
        cy, cx = h * rng.random(), w * rng.random()
        t = (np.sin(2 * np.pi * np.hypot(yy - cy, xx - cx) / period) > 0).astype(np.float32)
    else:
        t = _value_noise(rng, h, w, period)
    jitter = (rng.random(3).astype(np.float32) - 0.5) * 0.1
    primary = np.clip(style["primary"] + jitter, 0, 1)
    secondary = np.clip(style["secondary"] + jitter, 0, 1)
    out: np.ndarray = (1 - t)[..., None] * primary + t[..., None] * secondary
    return out


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Muted two-colour smooth noise plus a faint gradient and faint stripes (class 0)."""
    h, w = yy.shape
    base = 0.3 + 0.4 * rng.random(3).astype(np.float32)
    other = np.clip(base + (rng.random(3).astype(np.float32) - 0.5) * 0.4, 0, 1)
    t = _value_noise(rng, h, w, max(h, w) / 4)
    img = (1 - t)[..., None] * base + t[..., None] * other
    angle = np.pi * rng.random()
    grad = (xx * np.cos(angle) + yy * np.sin(angle)) / max(h, w)
    img += (0.15 * (grad - 0.5))[..., None]
    across = xx * np.sin(angle) - yy * np.cos(angle)
    img += (0.03 * np.sin(2 * np.pi * across / (3 + 6 * rng.random())))[..., None]
    out: np.ndarray = img.astype(np.float32)
    return out


def _shape_mask(
    rng: np.random.Generator, kind: str, h: int, w: int, yy: np.ndarray, xx: np.ndarray
) -> np.ndarray:
    m = min(h, w)
    cy, cx = h * (0.15 + 0.7 * rng.random()), w * (0.15 + 0.7 * rng.random())
    if kind == "ellipse":
        a, b = m * (0.12 + 0.25 * rng.random()), m * (0.12 + 0.25 * rng.random())
        th = np.pi * rng.random()
        du = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        dv = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        inside: np.ndarray = (du / a) ** 2 + (dv / b) ** 2 <= 1.0
        return inside
    if kind == "polygon":
        k = int(rng.integers(3, 8))
        r = m * (0.18 + 0.22 * rng.random())
        angles = (np.arange(k) + 0.6 * rng.random(k)) * (2 * np.pi / k) + 2 * np.pi * rng.random()
        radii = r * (0.7 + 0.3 * rng.random(k))
        pts = [
            (float(cx + ri * np.cos(a)), float(cy + ri * np.sin(a)))
            for a, ri in zip(angles, radii, strict=True)
        ]
        canvas = Image.new("L", (w, h), 0)
        ImageDraw.Draw(canvas).polygon(pts, fill=1)
        return np.asarray(canvas, dtype=bool)
    # smooth blob: r(theta) = r0 (1 + sum_k a_k cos(k theta + phi_k))
    r0 = m * (0.14 + 0.2 * rng.random())
    theta = np.arctan2(yy - cy, xx - cx)
    radius = np.ones_like(theta)
    for k in (2, 3, 4):
        radius += 0.22 * rng.random() * np.cos(k * theta + 2 * np.pi * rng.random())
    return np.hypot(yy - cy, xx - cx) <= r0 * radius


def render_sample(
    seed: int, index: int, image_size: tuple[int, int] = (96, 128), *, band_radius: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic image and its label map.

    Args:
        seed (int): data-set seed.
        index (int): image index; each image has its own random stream ``(seed, index)``, so an image does not
            depend on how many others are generated.
        image_size (tuple[int, int]): ``(H, W)``.
        band_radius (int): half-width of the ignore band: a pixel becomes 255 when a pixel of another class
            lies within this Chebyshev distance (0: no band).

    Returns:
        tuple: ``image`` (uint8 array [H, W, 3]) and ``label`` (uint8 array [H, W], values in {0..20, 255}).

    Raises:
        TypeError: ``seed``, ``index`` or ``band_radius`` not an int, ``image_size`` not a pair of ints (a
            float was truncated).
        ValueError: ``seed``, ``index`` or ``band_radius`` below 0, ``image_size`` not two sides >= 1 (a
            negative radius drew no band, an empty size an empty image).
    """
    seed, index = _int_arg(seed, "seed", 0), _int_arg(index, "index", 0)
    band_radius = _int_arg(band_radius, "band_radius", 0)
    h, w = _size_arg(image_size, 1)
    rng = np.random.default_rng([seed, index, 7])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = _background(rng, yy, xx)
    label = np.zeros((h, w), dtype=np.uint8)
    n_objects = int(rng.integers(1, 4))
    for c in rng.choice(np.arange(1, NUM_CLASSES), size=n_objects, replace=False):
        style = CLASS_STYLES[int(c)]
        kind = style["shape"] if rng.random() < 0.75 else _SHAPES[int(rng.integers(0, 3))]
        mask = _shape_mask(rng, kind, h, w, yy, xx)
        # a shape is sized by min(h, w): against 0.5 % of h * w alone, a long thin image (16 x 1024) lost
        # nearly every shape (178 of 200 images held none); the area compared stops at 4 min(h, w)^2
        if mask.sum() < 0.005 * min(h * w, 4 * min(h, w) ** 2):
            continue
        image[mask] = _texture(rng, style, yy, xx)[mask]
        label[mask] = c
    image += rng.normal(0.0, 0.02, size=image.shape).astype(np.float32)
    image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if band_radius > 0:
        # a radius of max(h, w) - 1 already reaches every pixel from every pixel: a larger one gives the same
        # band, but scipy's filter buffers grow with it (2**27 on 16 x 16 took 49 s and 2 GB, 2**31 was a
        # MemoryError)
        size = 2 * min(band_radius, max(h, w)) + 1
        edge = ndimage.maximum_filter(label, size=size, mode="nearest") != ndimage.minimum_filter(
            label, size=size, mode="nearest"
        )
        label = label.copy()
        label[edge] = 255
    return image, label


def _list_text(names: Sequence[str]) -> str:
    """The text of a list file of ``names``: one name a line."""
    return "".join(f"{n}\n" for n in names)


def _write_list(path: Path, names: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_list_text(names), encoding="utf-8")


def generate_synthetic_voc(
    root: str | Path,
    *,
    num_train: int = 64,
    num_val: int = 16,
    image_size: tuple[int, int] = (96, 128),
    seed: int = 0,
    sbd: bool = True,
    num_sbd_extra: int | None = None,
    band_radius: int = 1,
    jpeg_quality: int = 92,
) -> Path:
    """Write a synthetic VOC-format segmentation data set under ``root`` and return ``root``.

    Deterministic from ``seed`` (byte-identical files for equal arguments) and idempotent: when ``root``
    already holds a complete set generated with the same arguments, nothing is rewritten.

    Safe against interruption and concurrency: the set is written into a private temporary folder next to
    ``root`` and renamed into place when complete (readers never see a partial set), under an exclusive lock
    of ``<parent>/.<name>.lock`` (concurrent generators, e.g. every process of a ``torchrun`` job, wait and
    then find the set complete). A set of other arguments, or an incomplete one, that the generator wrote is
    replaced; a folder holding anything else, also next to such a set, is refused.

    Args:
        root (str | Path): output folder (created); receives ``JPEGImages``, ``SegmentationClass``,
            ``ImageSets``.
        num_train (int): images in ``ImageSets/Segmentation/train.txt``.
        num_val (int): images in ``ImageSets/Segmentation/val.txt``.
        image_size (tuple[int, int]): ``(H, W)`` of every image.
        seed (int): random seed.
        sbd (bool): also write the SBD-augmented layout (``SegmentationClassAug``,
            ``ImageSets/SegmentationAug``).
        num_sbd_extra (int | None): extra train images listed only in the augmented train list
            (default ``num_train // 2``; checked, then ignored, when ``sbd`` is false).
        band_radius (int): half-width in pixels of the 255 band along object boundaries (0: none).
        jpeg_quality (int): JPEG quality of the images.

    Returns:
        Path: ``root``, absolute.

    Raises:
        TypeError: an argument that is not an int (a bool, a float, a string; ``image_size`` not a pair of
            ints), or ``sbd`` not a bool, naming it.
        ValueError: an argument out of its range, naming it: counts in ``[1, IMAGES_MAX]``
            (``num_sbd_extra`` from 0), ``image_size`` a pair of sides in ``[16, SIDE_MAX]``, ``band_radius``
            in ``[0, SIDE_MAX]``, ``seed >= 0``, ``jpeg_quality`` in ``[0, 100]``; ``root`` the current
            folder or a folder above it (:func:`current_folder_error`).
        FileExistsError: ``root`` holds files the generator did not write (no ``synthetic_voc.json``; or, when
            the set there must be replaced, anything beside the set's own files).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:  # the set, and its lock file beside it, go with tmp
        ...     root = generate_synthetic_voc(Path(tmp) / "voc", num_train=2, num_val=1, image_size=(32, 48))
        ...     sorted(p.name for p in root.iterdir())  # doctest: +NORMALIZE_WHITESPACE
        ['ImageSets', 'JPEGImages', 'SegmentationClass', 'SegmentationClassAug', 'synthetic_voc.json']
    """
    num_train = _int_arg(num_train, "num_train", 1, IMAGES_MAX)
    num_val = _int_arg(num_val, "num_val", 1, IMAGES_MAX)
    h, w = _size_arg(image_size, 16, SIDE_MAX)
    band_radius = _int_arg(band_radius, "band_radius", 0, SIDE_MAX)
    seed = _int_arg(seed, "seed", 0)
    jpeg_quality = _int_arg(jpeg_quality, "jpeg_quality", 0, 100)
    if not isinstance(sbd, bool | np.bool_):  # sbd="no" or "False" wrote the SBD layout
        raise TypeError(f"sbd must be a bool, got {sbd!r}")
    if num_sbd_extra is not None:
        num_sbd_extra = _int_arg(num_sbd_extra, "num_sbd_extra", 0, IMAGES_MAX)
    extra = (num_train // 2 if num_sbd_extra is None else num_sbd_extra) if sbd else 0
    # absolute (lexically, as the shell means it): the lock, temporary and swapped-out folders go next to the
    # set, in its parent; "." (whose parent is ".") put the lock into the set's own folder, which was then
    # refused as holding a file the generator did not write
    root = Path(os.path.abspath(root))
    error = current_folder_error(root)
    if error is not None:
        raise ValueError(f"root {error}")
    params = {
        "format_version": _FORMAT_VERSION,
        "num_train": num_train,
        "num_val": num_val,
        "image_size": [h, w],
        "seed": seed,
        "sbd": bool(sbd),
        "num_sbd_extra": extra,
        "band_radius": band_radius,
        "jpeg_quality": jpeg_quality,
    }
    with _generation_lock(root):
        _remove_abandoned(root)
        if _is_complete(root, params):
            return root
        if root.is_dir() and any(root.iterdir()) and not (root / _MARKER).is_file():
            raise FileExistsError(
                f"refusing to write the synthetic set into {root}: it holds files that the generator did not "
                f"write (no {_MARKER}); choose a new or empty folder"
            )
        if root.exists() and not root.is_dir():
            raise FileExistsError(f"refusing to write the synthetic set into {root}: it is not a folder")
        foreign = _foreign_files(root) if root.is_dir() else []
        if foreign:  # the old set and its folder are removed: these would go with them
            raise FileExistsError(
                f"refusing to replace the synthetic set in {root}: it also holds "
                f"{counted(len(foreign), 'file or folder', 'files or folders')} that the generator did not "
                f"write, e.g. {foreign[0]}; move them out or choose a "
                "new folder"
            )
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = unique_folder(root.parent, f".{root.name}.", ".tmp")  # mkdir's mode, as the set gets
        try:
            _write_set(tmp, params)
            _replace_folder(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root


#: Files a file manager writes into a folder it shows (not data: replaced with the set they lie in).
_OS_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def _foreign_files(root: Path) -> list[Path]:
    """The entries of the set's folder ``root`` that the generator does not write (every entry but the
    marker, ``JPEGImages/synth_<n>.jpg``, ``SegmentationClass[Aug]/synth_<n>.png`` and
    ``ImageSets/Segmentation[Aug]/{train,val,trainval}.txt``): a set of other arguments is replaced by
    removing its folder, which took a checkpoint or a real VOC image put into it along."""
    images = {"JPEGImages": ".jpg", "SegmentationClass": ".png", "SegmentationClassAug": ".png"}
    lists = ("train.txt", "val.txt", "trainval.txt")
    foreign: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name == _MARKER and entry.is_file():
            continue
        if entry.name in images and entry.is_dir() and not entry.is_symlink():
            suffix = images[entry.name]
            foreign += [
                p
                for p in sorted(entry.iterdir())
                if not (_is_synth_name(p.name, suffix) and p.is_file() and not p.is_symlink())
            ]
        elif entry.name == "ImageSets" and entry.is_dir() and not entry.is_symlink():
            for sub in sorted(entry.iterdir()):
                if sub.name in ("Segmentation", "SegmentationAug") and sub.is_dir() and not sub.is_symlink():
                    foreign += [p for p in sorted(sub.iterdir()) if not (p.name in lists and p.is_file())]
                else:
                    foreign.append(sub)
        else:
            foreign.append(entry)
    # a file manager's own notes (macOS Finder's .DS_Store and ._ files, Windows Explorer's) go with the set
    return [p for p in foreign if not (p.name in _OS_FILES or p.name.startswith("._"))]


def _is_synth_name(name: str, suffix: str) -> bool:
    """``name`` is ``synth_<6 or more digits><suffix>`` (:func:`_names`)."""
    stem = name[len("synth_") : -len(suffix)]
    return (
        name.startswith("synth_")
        and name.endswith(suffix)
        and len(stem) >= 6
        and stem.isascii()
        and stem.isdigit()
    )


def _size_arg(image_size: object, low: int, high: int | None = None) -> tuple[int, int]:
    """``image_size`` as ``(H, W)``, two ints in ``[low, high]``; else a ``TypeError`` (not a pair of ints:
    a number, a float side) or a ``ValueError`` (another length, a side out of range), naming it."""
    expected = f"ints >= {low}" if high is None else f"ints in [{low}, {high}]"
    message = f"image_size must be a pair (H, W) of {expected}, got {image_size!r}"
    try:
        size: tuple[object, ...] = tuple(image_size)  # type: ignore[arg-type]  # any object: TypeError checks
    except TypeError:
        raise TypeError(message) from None
    if len(size) != 2:
        raise ValueError(message)
    try:
        h, w = (_int_arg(side, "image_size", low, high) for side in size)
    except TypeError:
        raise TypeError(message) from None
    except ValueError:
        raise ValueError(message) from None
    return h, w


def _int_arg(value: object, name: str, low: int, high: int | None = None) -> int:
    """``value`` as a Python int in ``[low, high]`` (an int or a numpy integer): a ``TypeError`` for another
    type (a bool, a float, a string), a ``ValueError`` out of the range, naming ``name``, the range and the
    value. A float was truncated (``num_train=2.7`` wrote 2 images), a negative seed was numpy's "expected
    non-negative integer"."""
    expected = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"
    if isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    try:
        out = operator.index(value)  # type: ignore[arg-type]  # any object: the TypeError is the check
    except TypeError:
        raise TypeError(f"{name} must be {expected}, got {value!r}") from None
    if out < low or (high is not None and out > high):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return out


def _names(params: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """``(train, val, sbd_only)`` image names."""
    num_train, num_val, extra = params["num_train"], params["num_val"], params["num_sbd_extra"]
    names = [f"synth_{i:06d}" for i in range(num_train + num_val + extra)]
    n_voc = num_train + num_val
    return names[:num_train], names[num_train:n_voc], names[n_voc:]


def _is_complete(root: Path, params: dict[str, Any]) -> bool:
    """``root`` holds a complete set made with ``params``: its marker, every image and mask, and every list
    file with its names (a deleted or emptied list was taken for a complete set, and never written again)."""
    marker = root / _MARKER
    if not marker.is_file():
        return False
    try:
        if json.loads(marker.read_text(encoding="utf-8")) != params:
            return False
    except (json.JSONDecodeError, OSError):
        return False
    train, val, sbd_only = _names(params)
    names = train + val + sbd_only
    expected = [root / "JPEGImages" / f"{n}.jpg" for n in names]
    expected += [root / "SegmentationClass" / f"{n}.png" for n in train + val]
    expected += [root / "SegmentationClassAug" / f"{n}.png" for n in names] if params["sbd"] else []
    if not all(p.is_file() for p in expected):
        return False
    return all(_list_is(path, listed) for path, listed in _lists(root, params).items())


def _lists(root: Path, params: dict[str, Any]) -> dict[Path, list[str]]:
    """The list files of the set made with ``params`` in ``root`` and the names each lists."""
    train, val, sbd_only = _names(params)
    lists = {
        root / "ImageSets" / "Segmentation" / "train.txt": train,
        root / "ImageSets" / "Segmentation" / "val.txt": val,
        root / "ImageSets" / "Segmentation" / "trainval.txt": train + val,
    }
    if params["sbd"]:
        lists[root / "ImageSets" / "SegmentationAug" / "train.txt"] = train + sbd_only
        lists[root / "ImageSets" / "SegmentationAug" / "val.txt"] = val
    return lists


def _list_is(path: Path, names: Sequence[str]) -> bool:
    """``path`` is the list file of ``names`` (:func:`_list_text`)."""
    try:
        return path.read_text(encoding="utf-8") == _list_text(names)
    except (OSError, UnicodeDecodeError):
        return False


def _write_set(root: Path, params: dict[str, Any]) -> None:
    """Write every file of the set into the (new, private) folder ``root``; the marker last."""
    train, val, sbd_only = _names(params)
    (h, w), seed, sbd = params["image_size"], params["seed"], params["sbd"]
    jpeg_dir, mask_dir, aug_dir = (
        root / "JPEGImages",
        root / "SegmentationClass",
        root / "SegmentationClassAug",
    )
    for d in (jpeg_dir, mask_dir) + ((aug_dir,) if sbd else ()):
        d.mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    n_voc = len(train) + len(val)
    for index, name in enumerate(train + val + sbd_only):
        in_voc = index < n_voc
        image, label = render_sample(seed, index, (h, w), band_radius=params["band_radius"] if in_voc else 0)
        Image.fromarray(image).save(jpeg_dir / f"{name}.jpg", quality=params["jpeg_quality"])
        if in_voc:
            png = Image.fromarray(label)
            png.putpalette(palette)
            png.save(mask_dir / f"{name}.png")
        if sbd:
            Image.fromarray(label).save(aug_dir / f"{name}.png")
    for path, names in _lists(root, params).items():
        _write_list(path, names)
    (root / _MARKER).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")


def current_folder_error(root: Path) -> str | None:
    """Why the absolute ``root`` cannot take the set: it is the current folder or holds it (``None`` when it
    can). The finished set replaces its folder with renames, which would leave this process and the shell that
    started it in a deleted folder, the new set unseen there."""
    try:
        cwd = Path.cwd()
    except OSError:  # the current folder itself was deleted: nothing to protect
        return None
    if root != cwd and root not in cwd.parents:
        return None
    return (
        f"'{root}' is the current folder{'' if root == cwd else ' or holds it'}: the finished set replaces "
        "its folder, which would leave this process and your shell in a deleted folder; pass a path outside "
        f"it (from the folder above: {root.name})"
    )


def _replace_folder(new: Path, root: Path) -> None:
    """Move the finished folder ``new`` to ``root`` with renames (an older generated set is swapped out)."""
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
        os.replace(root, old / root.name)
        try:
            os.replace(new, root)
        except BaseException:  # (Ctrl-C between the renames): the older set goes back, not left to removal
            if not root.exists():
                os.replace(old / root.name, root)
                old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, root)


def _remove_abandoned(root: Path) -> None:
    """Remove what generations of ``root`` stopped by SIGTERM or SIGKILL left next to it: their temporary
    folder (``.<name>.<random>.tmp``) and a swapped-out older set (``.<name>.<random>.old``), with
    :func:`~examples.voc_joint.staging.remove_abandoned_staging`. Called under :func:`_generation_lock`,
    which no other generator of ``root`` holds meanwhile, so none of them is in use (nothing is removed
    without ``fcntl``); the random part is 8 characters, so a sibling set's folders
    (``.<name>.x.<random>.tmp``) never match."""
    for suffix in (".tmp", ".old"):
        remove_abandoned_staging(root.parent, f".{root.name}.", suffix)


@contextmanager
def _generation_lock(root: Path) -> Iterator[None]:
    """Exclusive lock of the generation of ``root`` (``<parent>/.<name>.lock``): concurrent generators (e.g.
    the processes of a torchrun job) wait, then find the set complete."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a", encoding="utf-8") as fh:
        if fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_parser() -> argparse.ArgumentParser:
    """The generator's command line (``python examples/voc_joint/synthetic.py --help``)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python examples/voc_joint/synthetic.py",
        description="Write a synthetic PASCAL VOC 2012 format segmentation data set (deterministic from "
        "--seed).",
    )
    parser.add_argument(
        "--output-dir",
        required=True,
        type=output_path,
        help="output folder (the VOC2012 layout is written into it; a folder holding other files is refused)",
    )
    parser.add_argument(
        "--num-train", type=int_range(1, IMAGES_MAX), default=64, help="number of train images (default: 64)"
    )
    parser.add_argument(
        "--num-val", type=int_range(1, IMAGES_MAX), default=16, help="number of val images (default: 16)"
    )
    parser.add_argument(
        "--height", type=int_range(16, SIDE_MAX), default=96, help="image height in pixels (default: 96)"
    )
    parser.add_argument(
        "--width", type=int_range(16, SIDE_MAX), default=128, help="image width in pixels (default: 128)"
    )
    parser.add_argument("--seed", type=int_range(0, 2**63 - 1), default=0, help="random seed (default: 0)")
    parser.add_argument("--no-sbd", action="store_true", help="do not write the SBD-augmented layout")
    parser.add_argument(
        "--num-sbd-extra",
        type=int_range(0, IMAGES_MAX),
        default=None,
        help="extra train images only in the SBD-augmented list (default: num-train // 2)",
    )
    parser.add_argument(
        "--band-radius",
        type=int_range(0, SIDE_MAX),
        default=1,
        help="half-width of the 255 ignore band along boundaries in pixels (default: 1)",
    )
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks that involve several options (each option alone was checked by its ``type=``), and that
    ``--output-dir`` can be written (``cli.check_output_dir``)."""
    if args.no_sbd and args.num_sbd_extra is not None:
        parser.error(
            f"--num-sbd-extra {args.num_sbd_extra} with --no-sbd: the extra images exist only in the "
            "SBD-augmented layout, which --no-sbd does not write; drop one of the two"
        )
    check_output_dir(parser, args.output_dir)
    error = current_folder_error(Path(os.path.abspath(args.output_dir)))
    if error is not None:
        parser.error(f"--output-dir {error}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python examples/voc_joint/synthetic.py --help``): exit status 0; 2 for a
    bad option or an ``--output-dir`` that cannot be used (a file, a path below a file, a folder this user
    may not write in: found before anything is written; or a folder that holds other files); 1 for a write
    that fails during the generation (a full disk)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    # SIGINT, SIGTERM and SIGHUP stop the generation at once (its temporary folder removed) with one line,
    # exit status 130 / 143 / 129
    return run_stoppable(
        lambda: _main(parser, args),
        parser.prog,
        f"the set is built in a temporary folder and only a finished one is moved to {args.output_dir}",
    )


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """:func:`main` after the options were parsed and checked."""
    start = time.perf_counter()
    try:
        root = generate_synthetic_voc(
            args.output_dir,
            num_train=args.num_train,
            num_val=args.num_val,
            image_size=(args.height, args.width),
            seed=args.seed,
            sbd=not args.no_sbd,
            num_sbd_extra=args.num_sbd_extra,
            band_radius=args.band_radius,
        )
    except OSError as exc:
        # the generator's own refusals (a folder holding other files, a file) are FileExistsErrors without an
        # errno: exit status 2; an OS error while writing (a full disk; a folder made unwritable meanwhile:
        # check_args refuses one that is so already) is exit status 1, one line naming the path (train.py)
        own = isinstance(exc, FileExistsError) and exc.errno is None
        parser.exit(2 if own else 1, f"{parser.prog}: error: {exc}\n")
    n = len(list((root / "JPEGImages").glob("*.jpg")))
    print(
        f"synthetic VOC data set: {counted(n, 'image')} of {args.height}x{args.width} in {root} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    from examples.voc_joint.console import tolerant_output

    tolerant_output()  # a path or a character the console cannot encode is escaped, not fatal
    raise SystemExit(main())
