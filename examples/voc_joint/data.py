"""PASCAL VOC 2012 (+ SBD-augmented) segmentation data: readers, joint image/mask transforms, normalization.

Layouts read (``root`` may be the ``VOC2012`` folder itself, or a folder containing ``VOC2012`` or
``VOCdevkit/VOC2012``)::

    JPEGImages/<name>.jpg
    SegmentationClass/<name>.png          VOC2012: palette PNGs (index = class, 255 = ignore band)
    ImageSets/Segmentation/<split>.txt    VOC2012 lists: train (1464), val (1449), trainval
    SegmentationClassAug/<name>.png       SBD-augmented: grayscale PNGs of raw labels (sbd=True)
    ImageSets/SegmentationAug/<split>.txt SBD-augmented lists: train (10582 "trainaug"), val (1449)

Joint transforms are ``torchvision.transforms.v2`` transforms applied to a ``tv_tensors.Image`` (float [3, H,
W] in [0, 1]) and a ``tv_tensors.Mask`` ([H, W]) together; their randomness comes from torch's global RNG,
which the training pipeline seeds per sample (:mod:`examples.voc_joint.sampling`), so resumed runs and any
number of ``DataLoader`` workers repeat exactly. Padding fills the image with 0 and the label with 255
(ignored), never with 0 (which would be "background").
"""

from __future__ import annotations

import collections
import contextlib
import functools
import glob
import math
import numbers
import os
import re
import struct
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePath
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from examples.voc_joint.wording import counted

__all__ = [
    "DEFAULT_CACHE",
    "DEFAULT_MAX_PIXELS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NUM_CLASSES",
    "SPIXEL_MEAN",
    "TRAINAUG_UNFINISHED",
    "VOC_CLASSES",
    "DataError",
    "PadIfSmaller",
    "PadToMultiple",
    "RandomScale",
    "VOCSegmentation",
    "build_dataset",
    "ensure_synthetic_voc",
    "eval_transform",
    "file_not_found",
    "missing_file_hint",
    "normalize_seg",
    "normalize_spixel",
    "read_list",
    "shown_names",
    "train_transform",
    "voc_palette",
]

NUM_CLASSES = 21
IGNORE_INDEX = 255
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: SpixelFCN's input normalization is ``x - SPIXEL_MEAN`` on [0, 1] RGB, no division.
SPIXEL_MEAN = (0.411, 0.432, 0.45)
#: Default largest image (and mask) in pixels, PIL's own default ``Image.MAX_IMAGE_PIXELS``.
DEFAULT_MAX_PIXELS = 89_478_485
#: Cache folder of generated data (``$TRANSINIT_CACHE``, default ``~/.cache/transinit``, also where the
#: variable is set but empty: ``Path("")`` was the current folder, which then received ``synthetic_voc/`` and
#: ``demo/``).
DEFAULT_CACHE = Path(os.environ.get("TRANSINIT_CACHE") or "~/.cache/transinit").expanduser()


#: A file that ``examples/voc_joint/sbd.py`` keeps in the ``SegmentationClassAug`` folder it writes while its
#: conversion has not finished (from before its masks move into place until its lists are written): the data
#: set refuses such a folder, and the next conversion completes it without ``--overwrite``.
TRAINAUG_UNFINISHED = ".trainaug-unfinished"


class DataError(ValueError):
    """A file of the data set is unusable (unreadable, too large, a mask of the wrong size or with labels out
    of range, an empty or unsafe list); the message names the file."""


@functools.lru_cache(maxsize=8)
def _valid_labels(num_classes: int) -> np.ndarray:
    """A lookup table over uint8 values: True for ``0..num_classes-1`` and :data:`IGNORE_INDEX` (built once
    per class count, not per mask; read-only)."""
    if not 1 <= num_classes <= IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 1..{IGNORE_INDEX}, got {num_classes}")
    valid = np.zeros(256, dtype=bool)
    valid[:num_classes] = True
    valid[IGNORE_INDEX] = True
    valid.flags.writeable = False  # shared by every call
    return valid


def voc_palette() -> list[int]:
    """The 256-entry VOC colour palette as a flat ``[r0, g0, b0, r1, ...]`` list (768 ints).

    Colour of index ``i``: the bits of ``i`` are dealt out in turn to R, G, B, from the most significant bit
    of each channel downwards. Index 255 (ignore) is (224, 224, 192).

    Example:
        >>> voc_palette()[3:6], voc_palette()[255 * 3:]
        ([128, 0, 0], [224, 224, 192])
    """
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def normalize_seg(image: Tensor) -> Tensor:
    """ImageNet normalization ``(x - mean) / std`` of ``image`` (Tensor[..., 3, H, W] in [0, 1])."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - mean) / std


def normalize_spixel(image: Tensor) -> Tensor:
    """SpixelFCN normalization ``x - (0.411, 0.432, 0.45)`` of ``image`` (Tensor[..., 3, H, W] in [0, 1])."""
    return image - torch.tensor(SPIXEL_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)


# ------------------------------------------------------------------------------------------------------------
# joint transforms (torchvision.transforms.v2 on tv_tensors.Image + tv_tensors.Mask)


def _as_positive_int(value: object) -> int | None:
    """``value`` as an int where it is an integer >= 1 of any type (a NumPy integer too, never a bool), else
    None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        return None
    return int(value)


def _size_pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """``(H, W)`` of a side or a pair of positive ints (:func:`_as_positive_int`)."""
    if isinstance(size, numbers.Integral):
        pair: tuple[object, ...] = (size, size)
    else:
        pair = tuple(size) if isinstance(size, Sequence) else ()
    sides = [_as_positive_int(s) for s in pair]
    if len(sides) != 2 or None in sides:
        raise ValueError(f"{name} must be a positive int or (H, W) of positive ints, got {size!r}")
    return cast(int, sides[0]), cast(int, sides[1])


def _resize_nearest_exact(labels: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-neighbour resize by pixel centres (``src = floor((dst + 0.5) * in / out)``) of any dtype.

    In integers, ``floor((2 dst + 1) in / (2 out))``, so that a centre exactly between two source pixels takes
    the lower-right one as the formula says (a float64 product rounded 24.5 * (2 / 49) below 1: row 24 of 49
    took source row 0 of 2, not 1).
    """
    h, w = labels.shape[-2:]
    oh, ow = size
    rows = ((2 * torch.arange(oh) + 1) * h).div_(2 * oh, rounding_mode="floor")
    cols = ((2 * torch.arange(ow) + 1) * w).div_(2 * ow, rounding_mode="floor")
    return labels[..., rows.to(labels.device), :][..., cols.to(labels.device)]


class RandomScale(v2.Transform):  # type: ignore[misc, unused-ignore]  # torchvision ships no types (strict)
    """Rescale image (bilinear, antialiased) and mask (nearest, pixel-centre aligned) by one random factor.

    torchvision has no transform for a factor relative to each image (``v2.RandomResize`` draws an absolute
    shorter-edge size, ``v2.ScaleJitter`` a factor relative to a fixed target size), hence this small
    ``v2.Transform``. The factor is uniform in ``scale`` (drawn with ``torch.rand``) and applies to both
    sides.

    Args:
        scale (tuple[float, float]): range of the factor (default 0.5 to 2).

    Example:
        >>> img = tv_tensors.Image(torch.rand(3, 4, 6))
        >>> mask = tv_tensors.Mask(torch.zeros(4, 6, dtype=torch.long))
        >>> out_img, out_mask = RandomScale((2.0, 2.0))(img, mask)
        >>> tuple(out_img.shape), tuple(out_mask.shape), type(out_img).__name__, type(out_mask).__name__
        ((3, 8, 12), (8, 12), 'Image', 'Mask')
    """

    def __init__(self, scale: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        try:  # exactly two numbers (no text, no bools): unpacking alone failed without naming scale
            if isinstance(scale, str | bytes) or any(isinstance(s, bool) for s in scale):
                raise TypeError
            lo, hi = (float(s) for s in scale)
        except (TypeError, ValueError):
            raise ValueError(
                f"scale must be a pair (low, high) of numbers with 0 < low <= high (finite), got {scale!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise ValueError(f"scale must satisfy 0 < low <= high (finite), got {scale}")
        self.scale = (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw the factor: ``{"size": [H', W']}`` for the whole sample."""
        lo, hi = self.scale
        factor = lo + (hi - lo) * float(torch.rand(()))
        h, w = v2.query_size(flat_inputs)
        return {"size": [max(1, round(h * factor)), max(1, round(w * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Resize one input of the sample (image bilinear, mask nearest; anything else passes through)."""
        size = params["size"]
        if isinstance(inpt, tv_tensors.Mask):
            return tv_tensors.wrap(_resize_nearest_exact(inpt.as_subclass(Tensor), size), like=inpt)
        if isinstance(inpt, tv_tensors.Image):
            out = TF.resize(inpt, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
            # clamp_ returns a plain Tensor: wrap it again, or later steps that act on Images only skip it
            return tv_tensors.wrap(out.clamp_(0, 1), like=inpt) if out.is_floating_point() else out
        return inpt

    # torchvision < 0.21 calls the private names
    _get_params = make_params
    _transform = transform


class _PadBottomRight(v2.Transform):  # type: ignore[misc, unused-ignore]  # torchvision ships no types (strict)
    """Pad bottom and right; the image with ``fill`` (0), the mask with ``ignore_index`` (255, never 0)."""

    def __init__(self, *, fill: float = 0.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.fill, self.ignore_index = float(fill), int(ignore_index)

    def _target(self, h: int, w: int) -> tuple[int, int]:
        raise NotImplementedError

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """The padding ``[left, top, right, bottom]`` of the whole sample."""
        h, w = v2.query_size(flat_inputs)
        th, tw = self._target(h, w)
        return {"padding": [0, 0, max(0, tw - w), max(0, th - h)]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Pad one input: masks with ``ignore_index``, images with ``fill``."""
        if not any(params["padding"]):
            return inpt
        fill = self.ignore_index if isinstance(inpt, tv_tensors.Mask) else self.fill
        return self._call_kernel(TF.pad, inpt, params["padding"], fill=fill)

    _get_params = make_params
    _transform = transform


class PadIfSmaller(_PadBottomRight):
    """Pad bottom and right up to ``size`` (image 0, mask 255), as in torchvision's segmentation reference.

    Example:
        >>> img = tv_tensors.Image(torch.ones(3, 2, 3))
        >>> mask = tv_tensors.Mask(torch.zeros(2, 3, dtype=torch.long))
        >>> _, out = PadIfSmaller(4)(img, mask)
        >>> out.tolist()
        [[0, 0, 0, 255], [0, 0, 0, 255], [255, 255, 255, 255], [255, 255, 255, 255]]
    """

    def __init__(
        self, size: int | Sequence[int], *, fill: float = 0.0, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__(fill=fill, ignore_index=ignore_index)
        self.size = _size_pair(size, "size")

    def _target(self, h: int, w: int) -> tuple[int, int]:
        return max(h, self.size[0]), max(w, self.size[1])


class PadToMultiple(_PadBottomRight):
    """Pad bottom and right to a multiple of ``multiple`` (image 0, mask 255), e.g. for stride-16 networks."""

    def __init__(self, multiple: int, *, fill: float = 0.0, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(fill=fill, ignore_index=ignore_index)
        checked = _as_positive_int(multiple)
        if checked is None:
            raise ValueError(f"multiple must be an int >= 1, got {multiple!r}")
        self.multiple = checked

    def _target(self, h: int, w: int) -> tuple[int, int]:
        m = self.multiple
        return -(-h // m) * m, -(-w // m) * m


def train_transform(
    crop_size: int | Sequence[int], scale: tuple[float, float] = (0.5, 2.0), *, hflip: bool = True
) -> v2.Compose:
    """Training augmentation: random scale, pad (image 0, label 255), random crop, random horizontal flip.

    Random draws come from torch's global RNG (``torch.rand`` / ``torch.randint``); the training pipeline
    seeds it per sample (:class:`~examples.voc_joint.sampling.SeededDataset`).

    Args:
        crop_size (int | Sequence[int]): output ``(H, W)`` (an int means square).
        scale (tuple[float, float]): range of the random scale factor.
        hflip (bool): flip left-right with probability 0.5.

    Example:
        >>> t = train_transform(8)
        >>> _ = torch.manual_seed(0)
        >>> mask = tv_tensors.Mask(torch.zeros(5, 6, dtype=torch.long))
        >>> img, tgt = t(tv_tensors.Image(torch.rand(3, 5, 6)), mask)
        >>> tuple(img.shape), tuple(tgt.shape)
        ((3, 8, 8), (8, 8))
    """
    size = _size_pair(crop_size, "crop_size")
    steps: list[v2.Transform] = [RandomScale(scale), PadIfSmaller(size), v2.RandomCrop(size)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    return v2.Compose(steps)


def eval_transform(
    crop_size: int | Sequence[int] | None = None, *, pad_to_multiple: int | None = None
) -> v2.Compose:
    """Evaluation transform: ``crop_size`` None keeps the full image (use batch size 1), else centre crop/pad.

    Args:
        crop_size (int | Sequence[int] | None): centre crop ``(H, W)`` (padding bottom/right with image 0 /
            label 255 first where the image is smaller), or None for the full image.
        pad_to_multiple (int | None): additionally pad bottom/right to a multiple (label 255; the data set's
            ``region`` marks the padding, so that no metric counts it).
    """
    steps: list[v2.Transform] = []
    if crop_size is not None:
        size = _size_pair(crop_size, "crop_size")
        steps += [PadIfSmaller(size), v2.CenterCrop(size)]
    if pad_to_multiple is not None:
        if _as_positive_int(pad_to_multiple) is None:  # (PadToMultiple's own error named its "multiple")
            raise ValueError(f"pad_to_multiple must be an int >= 1, got {pad_to_multiple!r}")
        steps.append(PadToMultiple(pad_to_multiple))
    return v2.Compose(steps) if steps else v2.Compose([v2.Identity()])


# ------------------------------------------------------------------------------------------------------------
# data set


def _resolve_root(root: Path, option: str = "--data-root") -> Path:
    """The VOC2012 folder of ``root`` (itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``); the error
    names ``option``, the command-line option that gave ``root``."""
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise FileNotFoundError(
        f"no PASCAL VOC 2012 layout under '{root}': expected the folder '{root / 'JPEGImages'}' (or "
        f"'{root / 'VOCdevkit' / 'VOC2012' / 'JPEGImages'}') next to 'SegmentationClass' (or "
        "'SegmentationClassAug') and 'ImageSets/Segmentation' (or 'ImageSets/SegmentationAug'). "
        f"Point {option} at an extracted VOCtrainval_11-May-2012.tar, or generate a synthetic set with "
        "'python examples/voc_joint/synthetic.py --output-dir DIR'."
    )


def _list_dir(voc_root: Path, sbd: bool) -> Path:
    """The folder of the split lists of a (resolved) VOC root: ``ImageSets/SegmentationAug`` for the
    SBD-augmented layout, else ``ImageSets/Segmentation``."""
    return voc_root / "ImageSets" / ("SegmentationAug" if sbd else "Segmentation")


def _check_pixels(path: Path, kind: str, size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w * h > max_pixels:
        raise DataError(
            f"{kind} file '{path}' is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels} "
            "(max_pixels / --max-image-pixels): refusing to decode it (decompression-bomb guard)"
        )


def _is_16_bit_gray(im: Image.Image) -> bool:
    """Whether ``im`` is a 16-bit grayscale image: mode ``I;16*``, or ``I`` from a PNG (at most 16 bits)."""
    return im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG")


def _check_image_header(path: Path, im: Image.Image) -> None:
    """The rules on an open image that its header decides (PIL mode and format; no pixel is decoded): 32-bit
    modes (``I`` but from a PNG, ``F``: no fixed range) are refused. The per-sample read and the header pass
    (:meth:`VOCSegmentation.header_problems`) both apply it."""
    if _is_16_bit_gray(im):
        return
    if im.mode in ("I", "F") or im.mode.startswith(("I;", "F;")):
        raise DataError(
            f"image file '{path}' has PIL mode '{im.mode}' (32-bit pixels of no fixed range): expected an "
            "8-bit (or 16-bit PNG) grayscale, palette, RGB(A) or CMYK image; convert it to 8 bits first"
        )


def _to_rgb(im: Image.Image, path: Path) -> np.ndarray:
    """The pixels of an open image as uint8 RGB [H, W, 3]: PIL's ``convert("RGB")`` for 8-bit modes; a 16-bit
    grayscale image (``I;16*``, or ``I`` from a PNG, which holds at most 16 bits) scaled to 8 bits (value /
    257, rounded), since PIL's conversion clips it at 255; the other 32-bit modes (``I``, ``F``, no fixed
    range) refused (:func:`_check_image_header`)."""
    _check_image_header(path, im)
    if _is_16_bit_gray(im):
        gray = (np.asarray(im).astype(np.uint32) + 128) // 257  # the decoding happens here
        return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
    return np.array(im.convert("RGB"), dtype=np.uint8)  # the decoding happens here


#: Extensions of a list entry that names its file (``2007_000032.jpg``): the name is without it.
_NAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def missing_file_hint(path: Path) -> str:
    """Why the listed image, mask or SBD label file ``path`` (``<folder>/<name>.jpg``, ``.png`` or ``.mat``),
    which does not exist, may be missing: ``" (found '<file>' in its folder: <why it is not read>)"`` for the
    first near miss, ``""`` when there is none.

    Near misses: a broken symbolic link, a list that gives the names with an extension (``rgb.jpg``:
    ``rgb.jpg.jpg`` is read), a file of another extension (``<name>.png`` or ``<name>.JPG`` images,
    ``<name>.PNG`` masks, ``<name>.MAT`` label files), the file one level too deep (``<folder>/<folder>/``:
    an archive unzipped into a folder of its own name), a name that holds a space (only the first word of a
    list line is read: ``my image 01`` is read as ``my``), the name in another Unicode normal form (``é`` as
    ``e`` + accent: macOS).

    Example:
        >>> missing_file_hint(Path("/nonexistent/JPEGImages/2007_000032.jpg"))
        ''
    """
    if path.is_symlink():
        return f" (a broken link to '{os.readlink(path)}')"
    folder, suffix = path.parent, path.suffix  # ".jpg" for images, ".png" for masks
    name = path.name[: -len(suffix)] if suffix else path.name
    stem, name_suffix = os.path.splitext(name)
    if name_suffix.lower() in _NAME_SUFFIXES and (folder / f"{stem}{suffix}").is_file():
        return f" (found '{stem}{suffix}' in its folder: list the names without '{name_suffix}')"
    if (folder / folder.name / path.name).is_file():  # e.g. an archive unzipped into a folder of its name
        return (
            f" (found '{folder.name}/{path.name}' in its folder: the files lie one level too deep (an "
            f"archive extracted into a folder of its own name?); move them up into '{folder}')"
        )
    reads = {
        ".jpg": "images are read as '<name>.jpg', in any format PIL reads",
        ".mat": "SBD label files are read as '<name>.mat'",  # examples/voc_joint/sbd.py
    }.get(suffix, f"masks are read as '<name>{suffix}'")
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, name)
        if other != name and (folder / f"{other}{suffix}").is_file():
            return (
                f" (found '{other}{suffix}' in its folder: the same name in another Unicode normal form "
                f"({form}), as macOS often writes names; write the list in that form, or rename the files)"
            )
    for pattern, why in (
        (glob.escape(name) + ".*", reads),
        (glob.escape(name) + " *", "a list entry is the first word of its line, so names cannot hold spaces"),
    ):
        found = sorted(p.name for p in folder.glob(pattern) if p.is_file())
        if found:
            return f" (found '{found[0]}' in its folder: {why})"
    return ""


def _pil_limit_note(max_pixels: int) -> str:
    """Why PIL refused an image that ``max_pixels`` allows: its own limit, checked on opening, is twice
    ``PIL.Image.MAX_IMAGE_PIXELS``; ``""`` when ``max_pixels`` is within it."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None or max_pixels <= 2 * limit:
        return ""
    return (
        f"; PIL refuses more than {2 * limit} pixels on its own (twice PIL.Image.MAX_IMAGE_PIXELS), whatever "
        f"max_pixels / --max-image-pixels ({max_pixels}) allows: raise PIL.Image.MAX_IMAGE_PIXELS in your "
        "own code, or cut the image into tiles"
    )


def file_not_found(kind: str, path: Path) -> str:
    """The message for the listed ``kind`` file ``path`` (``"image"``, ``"mask"``, ...) that does not exist,
    with its near miss (:func:`missing_file_hint`); the reader and ``sbd.py`` word it so.

    Example:
        >>> file_not_found("mask", Path("/nonexistent/SegmentationClass/a.png"))
        "mask file not found: '/nonexistent/SegmentationClass/a.png'"
    """
    return f"{kind} file not found: '{path}'{missing_file_hint(path)}"


def _check_file(path: Path, kind: str) -> None:
    """``path`` exists and is not empty (``kind``: "image" or "mask", for the message)."""
    if not path.is_file():
        raise FileNotFoundError(file_not_found(kind, path))
    if path.stat().st_size == 0:
        raise DataError(f"{kind} file '{path}' is empty (0 bytes: an interrupted copy or download?)")


#: What PIL raises on a file it cannot read: ``OSError`` (``UnidentifiedImageError``, a cut file) and, on
#: some damaged files, the others (opening a PGM whose size is no number, decoding a BMP of too many palette
#: colours: ``ValueError``; TIFF: ``TypeError``).
_PIL_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, struct.error, EOFError)


@contextlib.contextmanager
def _open(path: Path, kind: str, max_pixels: int) -> Iterator[Image.Image]:
    """``path`` opened with PIL (its header read, no pixel decoded), after :func:`_check_file`, its size
    checked against ``max_pixels``; PIL's errors (:data:`_PIL_ERRORS`), in the ``with`` block too
    (decoding), become a :class:`DataError` naming the file."""
    _check_file(path, kind)
    try:
        with Image.open(path) as im:
            _check_pixels(path, kind, im.size, max_pixels)
            yield im
    except DataError:  # the file's own problem (a ValueError), already naming it
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{kind} file '{path}' refused as a decompression bomb: {exc}" + _pil_limit_note(max_pixels)
        ) from exc
    except _PIL_ERRORS as exc:
        raise DataError(f"cannot read {kind} file '{path}': {exc}") from exc


def _read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """Read an RGB image as a uint8 tensor [3, H, W] with PIL; errors name the file.

    PIL reads the header first (decoding is lazy), so images above ``max_pixels`` are refused before any
    decoding. (``torchvision.io.decode_image`` gives the same pixels for JPEG, but is deprecated since
    torchvision 0.29.) 16-bit grayscale images are scaled to 8 bits, 32-bit ones refused (:func:`_to_rgb`).
    """
    with _open(path, "image", max_pixels) as im:
        rgb = _to_rgb(im, path)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def _colour_mask_note(im: Image.Image) -> str:
    """For a refused RGB(A) mask: whether its colours are VOC palette colours (a palette mask saved as RGB)
    and how to map them back; ``""`` for other modes."""
    if im.mode not in ("RGB", "RGBA"):
        return ""
    rgb = np.asarray(im.convert("RGB")).reshape(-1, 3)
    colours = np.unique(rgb[:, 0].astype(np.int64) << 16 | rgb[:, 1].astype(np.int64) << 8 | rgb[:, 2])
    palette = np.asarray(voc_palette(), dtype=np.int64).reshape(-1, 3)
    voc = palette[:, 0] << 16 | palette[:, 1] << 8 | palette[:, 2]
    its, one = f"; its {counted(colours.size, 'colour')}", colours.size == 1
    if np.isin(colours, voc).all():
        return (
            f"{its} {'is a colour' if one else 'are all colours'} of the VOC palette (a palette mask saved "
            "as RGB, e.g. read and written by OpenCV): map each colour back to its index in voc_palette() "
            "and save the indices"
        )
    return (
        f"{its} {'is not' if one else 'are not all'} in the VOC palette: a colour-coded mask? map each "
        "colour to its class id and save the ids"
    )


def _check_mask_header(path: Path, im: Image.Image, *, notes: bool = True) -> tuple[int, bool]:
    """The rules on an open mask that its header decides: a palette ("P") or grayscale ("L") PNG, no JPEG
    (lossy), grayscale samples that can be read back as stored (:func:`_gray_decoding`); returns how PIL
    decodes them, ``(factor, inverted)``. ``notes``: for a refused RGB(A) mask, say whether its colours are
    VOC palette colours (decodes the pixels; the header pass leaves it out). The per-sample read and the
    header pass (:meth:`VOCSegmentation.header_problems`) both apply it."""
    if im.format in ("JPEG", "MPO"):  # PIL reads by content, whatever the name
        raise DataError(
            f"mask file '{path}' is a {im.format} file (lossy: the compression changes the labels "
            "along every edge into other classes): save the masks as PNG, from their original labels"
        )
    if im.mode not in ("P", "L"):
        raise DataError(
            f"mask file '{path}' has PIL mode '{im.mode}': expected a palette ('P') or grayscale "
            "('L') PNG whose pixel values are the class indices" + (_colour_mask_note(im) if notes else "")
        )
    decoding = _gray_decoding(im)  # (from the header: read before the pixels are decoded)
    if isinstance(decoding, str):
        raise DataError(
            f"mask file '{path}' {decoding}: expected a palette ('P') or grayscale ('L') PNG whose pixel "
            "values are the class indices"
        )
    return decoding


#: PIL's decodings of grayscale samples that do not give the stored values (the raw mode of an image's tile):
#: ``(factor, inverted)``, a sample ``v`` coming out as ``v * factor`` (0..15 -> 0, 17, ..., 255 at 4 bits),
#: or as ``255 - v * factor`` for a TIFF that stores 0 as white (photometric MinIsWhite); ``R``: a TIFF's
#: bits in reversed order (FillOrder 2), undone by PIL
_GRAY_DECODINGS = {
    "L;2": (85, False),
    "L;4": (17, False),
    "L;2I": (85, True),
    "L;4I": (17, True),
    "L;I": (1, True),
    "L;2R": (85, False),
    "L;4R": (17, False),
    "L;2IR": (85, True),
    "L;4IR": (17, True),
}

#: The grayscale raw modes PIL decodes to the stored 8-bit samples (any other ``L...`` one is refused)
_EXACT_GRAY = frozenset({"L", "L;R", "LX"})  # (LX: a TIFF sample followed by an extra one, dropped)


def _gray_decoding(im: Image.Image) -> tuple[int, bool] | str:
    """For an unread grayscale image (any format PIL reads by content: a PNG, a TIFF or a PGM under a
    ``.png`` name), how PIL turns its stored samples into 8-bit values: ``(factor, inverted)`` of
    :data:`_GRAY_DECODINGS`, ``(1, False)`` where they come out as stored, or why they cannot be read back
    (a PGM of another maximum than 255, which PIL rescales to 0..255; a raw mode this table does not know)."""
    tile: Any = getattr(im, "tile", [])  # (an ImageFile's: the file's decoder, before its pixels are read)
    if im.mode != "L" or len(tile) != 1:
        return 1, False
    codec, args = tile[0][0], tile[0][3]  # (a plain tuple before Pillow 11, a named one since)
    if codec in ("ppm", "ppm_plain") and isinstance(args, tuple) and len(args) > 1 and args[1] != 255:
        return f"is a PGM file of maximum value {args[1]} (PIL rescales its samples to 0..255)"
    raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
    if not isinstance(raw, str) or raw in _EXACT_GRAY:
        return 1, False
    if raw in _GRAY_DECODINGS:
        return _GRAY_DECODINGS[raw]
    if raw.startswith("L"):
        return f"stores its grayscale samples in PIL's raw mode {raw!r}, not read as the stored values"
    return 1, False


def _read_mask(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, num_classes: int = NUM_CLASSES
) -> np.ndarray:
    """Read a label PNG (palette "P" or grayscale "L"; no JPEG, which is lossy) as a uint8 array [H, W] of
    labels in ``0..num_classes-1`` or 255; errors name the file.

    The labels are the stored samples, at every bit depth: PIL reads a grayscale image of 2 or 4 bits per
    sample as 8-bit intensities (a stored 1 as 17 at 4 bits, 85 at 2 bits), and a TIFF that stores 0 as white
    inverted, which are undone here (:func:`_gray_decoding`; a 4-bit mask's class 1 was read as 17, sheep,
    and a 2-bit one's class 3 as 255, ignored)."""
    with _open(path, "mask", max_pixels) as im:
        factor, inverted = _check_mask_header(path, im)
        arr = np.asarray(im, dtype=np.uint8)
    if inverted:
        arr = 255 - arr
    if factor != 1:
        arr = arr // factor  # exact: PIL's samples are multiples of the factor
    bad = ~_valid_labels(num_classes)[arr]
    if bad.any():
        values = np.unique(arr[bad])
        shown = ", ".join(str(int(v)) for v in values[:10]) + (", ..." if values.size > 10 else "")
        raise DataError(
            f"mask file '{path}' has label values outside {{0..{num_classes - 1}, {IGNORE_INDEX}}}: {shown} "
            f"({counted(int(bad.sum()), 'pixel')})"
        )
    return arr


def _check_same_size(
    image_path: Path, image_hw: tuple[int, int], mask_path: Path, mask_hw: tuple[int, int]
) -> None:
    """A mask of the size ``(H, W)`` of its image; for the transposed size, why when the image has an EXIF
    orientation (:func:`_exif_rotation_hint`)."""
    if mask_hw != image_hw:
        raise DataError(
            f"mask file '{mask_path}' is {mask_hw[0]}x{mask_hw[1]} (HxW) but its image "
            f"'{image_path}' is {image_hw[0]}x{image_hw[1]}"
            + (_exif_rotation_hint(image_path) if mask_hw == image_hw[::-1] else "")
        )


def _exif_rotation_hint(path: Path) -> str:
    """For a mask of the transposed size of its image ``path``: why, when the image has an EXIF orientation
    that turns it by 90 degrees (5 to 8), else ``""``."""
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(0x0112)  # the Orientation tag
    except (OSError, SyntaxError, ValueError):
        return ""
    if orientation not in (5, 6, 7, 8):
        return ""
    return (
        f": the image has EXIF orientation {orientation} (shown rotated by 90 degrees), which the reader "
        "ignores, as VOC's masks align with the stored pixels; the mask seems drawn on the rotated view: "
        "store the images upright (PIL.ImageOps.exif_transpose) and keep the masks"
    )


#: The path form of a list entry (``/JPEGImages/<name>.jpg /SegmentationClassAug/<name>.png``, the trainaug
#: lists of the DeepLab ports): the name is the image path's.
_IMAGE_PATH_ENTRY = re.compile(r"/?JPEGImages/(.+)\.jpg")


def shown_names(names: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` image names for a message, quoted, with ``...`` when there are more."""
    return ", ".join(repr(n) for n in names[:limit]) + (", ..." if len(names) > limit else "")


def read_list(list_file: Path) -> list[str]:
    """The image names of a split list (first word of each non-empty line, or the ``<name>`` of a first word
    ``/JPEGImages/<name>.jpg``; a line whose first word starts with ``#`` is a comment); each must stay
    inside the data folders: no absolute path, no ``..``.

    A name is read in its plain form (``./a`` and ``a`` are one image, ``a//b`` is ``a/b``): written both
    ways, one image counted as two, so that a repeat in one list, or a validation image in the training
    list (``train.py``'s overlap check, ``evaluate.py``'s count of trained images), went unnoticed.
    """
    try:  # "-sig": a byte order mark (Windows editors) is no part of the first name
        text = list_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"split list file '{list_file}' is not UTF-8 text: {exc}") from exc
    # a mark inside the text too (lists saved with one, joined with ``cat``): never part of a name
    text = text.replace("\ufeff", "")
    names = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.split()[0].startswith("#"):  # blank, or a comment
            continue
        name = line.split()[0]
        path_form = _IMAGE_PATH_ENTRY.fullmatch(name)
        if path_form:
            name = path_form.group(1)
        pure = PurePath(name)
        if pure.is_absolute() or ".." in pure.parts or "\0" in name or pure.drive:
            raise DataError(
                f"split list file '{list_file}' line {lineno}: entry {name!r} points outside the data "
                "folders (absolute paths and '..' are not allowed)"
            )
        names.append(pure.as_posix())  # the plain form: no "./", no "//" (on Windows, "\\" read as "/" too)
    return names


class VOCSegmentation(Dataset[dict[str, Any]]):
    """PASCAL VOC 2012 semantic segmentation (optionally the SBD-augmented ``SegmentationClassAug`` set).

    Args:
        root (str | Path): the ``VOC2012`` folder (or a folder containing ``VOC2012`` or
            ``VOCdevkit/VOC2012``).
        split (str): list file name without ``.txt``: ``train``, ``val``, ``trainval`` (VOC) or ``train``,
            ``val`` (SBD-augmented).
        sbd (bool): read ``SegmentationClassAug`` masks and ``ImageSets/SegmentationAug`` lists.
        transform (Callable | None): joint transform ``(image, target) -> (image, target)`` on a
            ``tv_tensors.Image`` (float [3, H, W] in [0, 1]) and a ``tv_tensors.Mask`` (uint8 [H, W]), e.g. a
            ``torchvision.transforms.v2`` pipeline (see :func:`train_transform`, :func:`eval_transform`).
        mask_dir (str | Path | None): override the mask folder (absolute, or relative to the resolved root).
        list_file (str | Path | None): override the list file (absolute, or relative to the resolved root).
        max_pixels (int): refuse images and masks with more pixels (read from the file header, before
            decoding: a guard against decompression bombs); default PIL's 89478485.
        num_classes (int): labels must be in ``0..num_classes-1`` or 255 (default 21, VOC's classes).

        with_region (bool): add ``region`` to every sample: the pixels of the image itself (False where the
            transform padded it), so that the metrics can leave padding out (see
            :class:`~examples.voc_joint.metrics.SegmentationMetrics`). It needs a
            ``torchvision.transforms.v2`` transform (one that takes any number of inputs and moves every
            ``Mask`` alike): a mask of ones goes through it with the sample, and padding fills masks with
            anything but 1 (255 here, 0 in torchvision).

    A sample is a dict: ``image`` (Tensor[3, H, W] in [0, 1], for display), ``seg_input``
    (ImageNet-normalized), ``spixel_input`` (SpixelFCN-normalized), ``target`` (LongTensor[H, W] in
    {0..num_classes-1, 255}), ``name`` (str) and, with ``with_region``, ``region`` (BoolTensor[H, W]).

    Raises:
        FileNotFoundError: missing folder or list file (the message names it and the expected layout), or a
            listed image/mask that does not exist (when the sample is read; :meth:`missing_files` lists them
            all at once).
        DataError: (a ``ValueError``) an empty list file, one that is not UTF-8 text or names an image more
            than once, or an entry that leaves the data folders (``..``, absolute path); an unreadable image
            or mask, one above ``max_pixels``, a mask whose size differs from its image, or label values
            outside {0..num_classes-1, 255} (the message names the file and the values).
        TypeError: ``with_region`` with a ``transform`` that is not a ``torchvision.transforms.v2`` transform.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        sbd: bool = False,
        transform: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
        mask_dir: str | Path | None = None,
        list_file: str | Path | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        num_classes: int = NUM_CLASSES,
        with_region: bool = False,
    ) -> None:
        if with_region and transform is not None and not isinstance(transform, v2.Transform):
            raise TypeError(
                "with_region needs a torchvision.transforms.v2 transform (it moves a mask of ones with the "
                f"sample), got transform {type(transform).__name__}"
            )
        self.root = _resolve_root(Path(root).expanduser())
        self.split, self.sbd, self.transform = split, bool(sbd), transform
        self.with_region = bool(with_region)
        self.image_dir = self.root / "JPEGImages"
        default_mask = "SegmentationClassAug" if self.sbd else "SegmentationClass"
        self.mask_dir = self.root / (mask_dir if mask_dir is not None else default_mask)
        if not self.mask_dir.is_dir():
            raise FileNotFoundError(
                f"mask folder not found: '{self.mask_dir}' (expected "
                + (
                    "SBD-augmented label PNGs in 'SegmentationClassAug/'"
                    if self.sbd
                    else "VOC2012 palette PNGs in 'SegmentationClass/'"
                )
                + f" under '{self.root}')"
                + (
                    "; build the trainaug layout from the official SBD release with 'python "
                    f"examples/voc_joint/sbd.py --voc-root {self.root} --sbd-root <benchmark_RELEASE>'"
                    if self.sbd and mask_dir is None
                    else ""
                )
            )
        if self.sbd and (self.mask_dir / TRAINAUG_UNFINISHED).exists():
            raise DataError(
                f"the trainaug layout in '{self.root}' is unfinished: an examples/voc_joint/sbd.py "
                "conversion stopped after its masks moved into place and before it wrote its lists (the file "
                f"'{self.mask_dir / TRAINAUG_UNFINISHED}' says so); run it again to complete it"
            )
        list_dir = _list_dir(self.root, self.sbd)
        self.list_file = self.root / list_file if list_file is not None else list_dir / f"{split}.txt"
        if not self.list_file.is_file():
            found = sorted(p.stem for p in list_dir.glob("*.txt")) if list_dir.is_dir() else []
            raise FileNotFoundError(
                f"split list file not found: '{self.list_file}' (expected one image name per line in "
                f"'{list_dir}/<split>.txt'; available splits: {found or 'none'})"
                + (
                    "; examples/voc_joint/sbd.py writes ImageSets/SegmentationAug/{train,val}.txt"
                    if self.sbd and list_file is None and not found
                    else ""
                )
            )
        self.max_pixels = int(max_pixels)
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")
        self.num_classes = int(num_classes)
        _valid_labels(self.num_classes)  # checks the range
        self.names = read_list(self.list_file)
        if not self.names:
            raise DataError(f"split list file '{self.list_file}' is empty")
        repeated = [name for name, n in collections.Counter(self.names).items() if n > 1]
        if repeated:  # e.g. lists concatenated by hand: each repeat would count twice in an epoch or a score
            raise DataError(
                f"split list file '{self.list_file}' names {counted(len(repeated), 'image')} more than once: "
                f"{shown_names(repeated)} "
                "(each would count twice per epoch or in a score; list every image once, e.g. sort -u)"
            )

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, index: int) -> Path:
        """Path of the JPEG image of sample ``index``."""
        return self.image_dir / f"{self.names[index]}.jpg"

    def mask_path(self, index: int) -> Path:
        """Path of the label PNG of sample ``index``."""
        return self.mask_dir / f"{self.names[index]}.png"

    def missing_files(self) -> list[Path]:
        """The listed images and masks that do not exist (a cheap check of the whole split before a long
        run: a missing file is otherwise found only when its sample is read)."""
        paths = (p for i in range(len(self)) for p in (self.image_path(i), self.mask_path(i)))
        return [p for p in paths if not p.is_file()]

    def header_problems(self, index: int) -> list[str]:
        """Every problem of sample ``index`` that the file headers decide, without decoding a pixel (the
        header pass of ``train.py`` and ``evaluate.py``): a missing or empty file, one PIL cannot identify,
        above ``max_pixels``, a 32-bit image, a mask that is no palette / grayscale PNG, a mask whose size
        differs from its image. The rules and messages are those of :meth:`load`, which finds the same
        problems (one at a time) when it reads the sample; label values and a file cut after its header are
        found only then.

        Returns:
            list[str]: the messages, each naming its file (empty: the headers are fine).
        """
        image_path, mask_path = self.image_path(index), self.mask_path(index)
        problems: list[str] = []
        sizes: list[tuple[int, int]] = []
        checks: tuple[tuple[Path, str, Callable[[Path, Image.Image], object]], ...] = (
            (image_path, "image", _check_image_header),
            (mask_path, "mask", functools.partial(_check_mask_header, notes=False)),
        )
        for path, kind, check in checks:
            try:
                with _open(path, kind, self.max_pixels) as im:
                    check(path, im)
                    sizes.append((im.height, im.width))
            except (DataError, FileNotFoundError) as exc:
                problems.append(str(exc))
        if len(sizes) == 2:
            try:
                _check_same_size(image_path, sizes[0], mask_path, sizes[1])
            except DataError as exc:
                problems.append(str(exc))
        return problems

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """Read sample ``index`` untransformed: image (uint8 Tensor[3, H, W]), target (LongTensor[H, W])."""
        image_path, mask_path = self.image_path(index), self.mask_path(index)
        image = _read_image(image_path, self.max_pixels)
        mask = _read_mask(mask_path, self.max_pixels, self.num_classes)
        _check_same_size(
            image_path, (image.shape[1], image.shape[2]), mask_path, (mask.shape[0], mask.shape[1])
        )
        return image, torch.from_numpy(mask.astype(np.int64))

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_u8, target_long = self.load(index)
        image: Tensor = tv_tensors.Image(image_u8.float().div_(255.0))
        target: Tensor = tv_tensors.Mask(target_long.to(torch.uint8))
        region: Tensor | None = None
        if self.with_region:  # ones, moved (cropped, padded) with the sample: 1 where the image's pixels are
            region = tv_tensors.Mask(torch.ones(target.shape, dtype=torch.uint8))
            if self.transform is not None:  # a v2 transform (checked on construction): any number of inputs
                moves = cast(Callable[..., tuple[Tensor, Tensor, Tensor]], self.transform)
                image, target, region = moves(image, target, region)
        elif self.transform is not None:
            image, target = self.transform(image, target)
        image = image.as_subclass(Tensor).contiguous()
        sample = {
            "image": image,
            "seg_input": normalize_seg(image),
            "spixel_input": normalize_spixel(image),
            "target": target.as_subclass(Tensor).long().contiguous(),
            "name": self.names[index],
        }
        if region is not None:
            sample["region"] = region.as_subclass(Tensor) == 1
        return sample

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root='{self.root}', split='{self.split}', sbd={self.sbd}, "
            f"n={len(self)}, transform={self.transform!r})"
        )


def build_dataset(
    root: str | Path,
    split: str,
    *,
    sbd: bool = False,
    crop_size: int | Sequence[int] | None = None,
    train: bool = False,
    scale: tuple[float, float] = (0.5, 2.0),
    pad_to_multiple: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_classes: int = NUM_CLASSES,
) -> VOCSegmentation:
    """The data set with the standard transforms.

    Args:
        root (str | Path): VOC root (see :class:`VOCSegmentation`).
        split (str): list name (``train``, ``val``, ...).
        sbd (bool): SBD-augmented layout.
        crop_size (int | Sequence[int] | None): training crop, or eval centre crop; None at eval = full image.
        train (bool): training augmentation (:func:`train_transform`, needs ``crop_size``) instead of
            :func:`eval_transform` (whose samples carry ``region``: the metrics leave its padding out).
        scale (tuple[float, float]): random scale range when training.
        pad_to_multiple (int | None): eval only: pad to a multiple (label 255).
        max_pixels (int): largest image accepted (see :class:`VOCSegmentation`).
        num_classes (int): labels accepted: ``0..num_classes-1`` and 255 (see :class:`VOCSegmentation`).

    Raises:
        ValueError: ``train=True`` without ``crop_size``, or with ``pad_to_multiple`` (which only the eval
            transform applies: it was dropped without a word).
    """
    if train:
        if crop_size is None:
            raise ValueError("build_dataset(train=True) needs crop_size (random crops make batches stack)")
        if pad_to_multiple is not None:
            raise ValueError(
                f"build_dataset(train=True) got pad_to_multiple={pad_to_multiple!r}: it applies to "
                "evaluation only (train=False); training crops are crop_size already, so leave it None"
            )
        transform = train_transform(crop_size, scale)
    else:
        transform = eval_transform(crop_size, pad_to_multiple=pad_to_multiple)
    return VOCSegmentation(
        root,
        split,
        sbd=sbd,
        transform=transform,
        max_pixels=max_pixels,
        num_classes=num_classes,
        with_region=not train,
    )


def ensure_synthetic_voc(root: str | Path | None = None, **kw: Any) -> Path:
    """Generate the synthetic VOC set into ``root`` (default ``DEFAULT_CACHE / "synthetic_voc"``) if missing.

    Keyword arguments go to :func:`examples.voc_joint.synthetic.generate_synthetic_voc` (generation is
    idempotent: an existing set made with the same arguments is reused). Returns the root.
    """
    from examples.voc_joint.synthetic import generate_synthetic_voc

    root = DEFAULT_CACHE / "synthetic_voc" if root is None else Path(root).expanduser()
    return generate_synthetic_voc(root, **kw)
