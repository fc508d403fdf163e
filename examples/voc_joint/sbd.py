"""Build the SBD-augmented ``trainaug`` layout from PASCAL VOC 2012 and the official SBD release.

The standard 10582-image training set is the union of VOC 2012 ``train`` and SBD ``train`` + ``val``, minus
every image of VOC 2012 ``val``: SBD's sets hold many VOC 2012 val images, which must never be trained
on. Each image is listed once. Images annotated by VOC (``SegmentationClass``) keep VOC's mask, with its 255
void band; the others get SBD's (``cls/<name>.mat``: ``GTcls.Segmentation``, labels 0..20, no void band).

Inputs: the VOC folder (as for :class:`~examples.voc_joint.data.VOCSegmentation`) and the SBD folder from
``benchmark.tgz`` (``benchmark_RELEASE``, its ``dataset`` folder, or any folder holding ``cls/`` and
``train.txt`` / ``val.txt``). Written into the VOC folder, the layout ``sbd=True`` / ``--sbd`` reads::

    SegmentationClassAug/<name>.png         grayscale ("L") PNGs of the labels (train + val images)
    ImageSets/SegmentationAug/train.txt     the trainaug list (10582 names with the real data sets)
    ImageSets/SegmentationAug/val.txt       = VOC 2012 val (1449 names)

Command line::

    python examples/voc_joint/sbd.py --voc-root ~/data/VOCdevkit/VOC2012 --sbd-root ~/data/benchmark_RELEASE

SBD's ``.mat`` files are MATLAB v5 files (read with ``scipy.io.loadmat``); v7.3 (HDF5) files are refused with
an error naming the file, as are damaged ones and, before they are read, those that unpack to more than the
labels of ``max_pixels`` pixels take (a decompression bomb) or whose array headers claim more than 65536
cell or struct array elements, or nest arrays more than 32 levels deep (``scipy.io.loadmat`` can overflow
the C stack on a deeper chain). Every missing file is named before a mask is read, every bad file after all
are read; nothing is written unless all are good.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import shutil
import struct
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.voc_joint.atomic import write_text_atomic
from examples.voc_joint.cli import broken_link_error, existing_dir, output_dir_error
from examples.voc_joint.data import (
    DEFAULT_MAX_PIXELS,
    IGNORE_INDEX,
    NUM_CLASSES,
    TRAINAUG_UNFINISHED,
    DataError,
    _check_file,
    _check_same_size,
    _list_dir,
    _open,
    _read_mask,
    _resolve_root,
    _valid_labels,
    file_not_found,
    read_list,
)
from examples.voc_joint.headers import shown_problems
from examples.voc_joint.signals import run_stoppable
from examples.voc_joint.staging import new_staging, remove_abandoned_staging
from examples.voc_joint.wording import counted

__all__ = ["build_parser", "build_trainaug", "check_args", "main", "read_sbd_mask", "resolve_sbd_root"]

#: Mask folder written into the VOC root (the one ``sbd=True`` reads; its lists are ``_list_dir(voc, True)``).
MASK_DIR = "SegmentationClassAug"


def _is_sbd_layout(folder: Path) -> bool:
    return (folder / "cls").is_dir() and (folder / "train.txt").is_file()


def _found_below(root: Path, depth: int = 3) -> Iterator[Path]:
    """The folders up to ``depth`` levels below ``root`` that hold the SBD layout (the data folders ``cls``,
    ``inst`` and ``img``, with thousands of files each, are not entered)."""
    if depth == 0:
        return
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("cls", "inst", "img"))
    except OSError:
        return
    for child in children:
        if _is_sbd_layout(child):
            yield child
        else:
            yield from _found_below(child, depth - 1)


def _sbd_layout_hint(root: Path, candidates: Sequence[Path]) -> str:
    """Why ``root`` holds no SBD layout, when a near miss shows it: ``" ('...': <why>)"``, else ``""``."""
    if root.is_file():
        return f" ('{root}' is a file: extract it first (tar -xzf {root.name}) and pass the folder it makes)"
    if not root.is_dir():
        return f" ('{root}' does not exist)"
    if _is_sbd_layout(root.parent):  # cls/, inst/ or img/ itself
        return f" ('{root}' is the '{root.name}' folder of the SBD layout: pass its parent '{root.parent}')"
    for folder in candidates:
        if (folder / "inst").is_dir() and not (folder / "cls").is_dir():
            return (
                f" ('{folder}' has 'inst/' (the instance labels) but no 'cls/' (the class labels read here): "
                "extract cls/ from benchmark.tgz too)"
            )
        if (folder / "cls").is_dir():
            return f" ('{folder}' has 'cls/' but no 'train.txt': extract the list files of benchmark.tgz too)"
    found = next(_found_below(root), None)
    if found is not None:
        return f" (found the SBD layout in '{found}': pass that folder)"
    return ""


def resolve_sbd_root(root: str | Path) -> Path:
    """The SBD folder holding ``cls/``, ``train.txt`` and ``val.txt``: ``root`` itself, ``root/dataset`` or
    ``root/benchmark_RELEASE/dataset``.

    Raises:
        FileNotFoundError: none of them has that layout (the message names the root and the layout, and a
            near miss: an archive not extracted, a folder inside the layout (``cls``), ``inst/`` without
            ``cls/``, the layout a few levels deeper).
    """
    root = Path(root).expanduser()
    candidates = (root, root / "dataset", root / "benchmark_RELEASE" / "dataset")
    for candidate in candidates:
        if _is_sbd_layout(candidate):
            return candidate
    raise FileNotFoundError(
        f"no SBD layout under '{root}': expected 'cls/<name>.mat', 'train.txt' and 'val.txt' in '{root}', "
        f"'{root / 'dataset'}' or '{root / 'benchmark_RELEASE' / 'dataset'}' (extract benchmark.tgz of the "
        "Semantic Boundaries Dataset)" + _sbd_layout_hint(root, candidates)
    )


#: What a damaged label file needs (the end of its message).
_REEXTRACT = "a damaged or cut download? extract it again from benchmark.tgz"


def _describe(value: Any) -> str:
    """A value read from a ``.mat`` file, for a message: ``uint8 array of shape (12, 16)``, ``str``."""
    if isinstance(value, np.ndarray | np.generic):
        return f"{value.dtype} array of shape {np.shape(value)}"
    return type(value).__name__


def _segmentation(path: Path, mat: dict[str, Any], v4: bool) -> Any:
    """``GTcls.Segmentation`` of a loaded label file (``struct_as_record=False``, no ``squeeze_me``: every
    array keeps MATLAB's 2 or more dimensions, so the labels of an image 1 pixel high or wide stay [1, W] or
    [H, 1]; ``v4``: a MATLAB v4 file); a :class:`DataError` saying what the file holds instead."""
    head = f"SBD label file '{path}' has no 2-D integer GTcls.Segmentation: "
    gt = mat.get("GTcls")
    if gt is None:
        import scipy.io

        variables = ", ".join(name for name, _, _ in scipy.io.whosmat(str(path))) or "none"
        raise DataError(
            head + f"no variable 'GTcls' (its variables: {variables}); expected SBD's cls/<name>.mat (inst/ "
            "files hold GTinst, the instance labels)"
        )
    if isinstance(gt, np.ndarray) and gt.dtype == object:  # a struct array: [1, 1] for one struct
        if gt.size != 1:
            raise DataError(head + f"'GTcls' is a struct array of {gt.size} elements: expected one struct")
        gt = gt.item()  # a cell array's element is an array: refused below as no struct
    fields = getattr(gt, "_fieldnames", None)
    if fields is None:
        raise DataError(
            head
            + f"'GTcls' is a {_describe(gt)}, not a struct"
            + (" (a MATLAB v4 file holds no structs)" if v4 else "")
            + ": expected SBD's struct with the field 'Segmentation'"
        )
    if "Segmentation" not in fields:
        raise DataError(
            head + f"'GTcls' has no field 'Segmentation' (its fields: {', '.join(fields) or 'none'})"
        )
    seg = gt.Segmentation
    if not isinstance(seg, np.ndarray) or seg.ndim != 2 or seg.size == 0:
        raise DataError(head + f"it is a {_describe(seg)}: expected a 2-D array [H, W] of class labels")
    if np.issubdtype(seg.dtype, np.floating):  # MATLAB's default type: whole numbers are labels
        fractional = ~np.isfinite(seg) | (seg != np.round(seg))
        if fractional.any():
            values = ", ".join(str(v) for v in np.unique(seg[fractional])[:10].tolist())
            raise DataError(head + f"it is {seg.dtype} with non-integer values: {values}")
        return seg
    if not np.issubdtype(seg.dtype, np.integer) and seg.dtype != bool:
        raise DataError(head + f"it is a {_describe(seg)}: expected integer class labels")
    return seg


#: The most bytes a label file may unpack to, per pixel of ``max_pixels`` (plus 1 MiB): a ``double`` label
#: array (MATLAB's default type) and as much again for the rest of ``GTcls`` (its boundaries).
_MAT_BYTES_PER_PIXEL = 16
#: The data type of a compressed element of a MATLAB v5 file (a zlib stream).
_MI_COMPRESSED = 15


#: The most elements of cell, struct and object arrays a label file may hold in all, a struct's counted once
#: per field (SBD's hold 23: the 3 fields of the ``GTcls`` struct and its 20 ``Boundaries``). Each becomes a
#: Python object, and the few bytes of an array header can claim billions of them (a struct array without
#: fields stores nothing per element).
_MAT_MAX_ELEMENTS = 2**16
#: The deepest nesting of arrays in arrays a label file may have (SBD's: 3, the ``GTcls`` struct, its
#: ``Boundaries`` cell and the sparse arrays in it). A chain of a few thousand 1-element cells (a few tens
#: of kB) made ``scipy.io.loadmat`` overflow the C stack: the process ended with a segmentation fault.
_MAT_MAX_DEPTH = 32
#: The data type of a MATLAB array (``miMATRIX``) and the classes whose elements are arrays of their own.
_MI_MATRIX = 14
_MX_CONTAINERS = (1, 2, 3)  # cell, struct, object
#: The highest class of the arrays a label file may hold (cell, struct, object, char, sparse and the numeric
#: ones are 1-15). Above: function handles (16) and opaque objects (17), which no SBD file holds and inside
#: which ``scipy.io.loadmat`` reads arrays as deep as they nest (a chain of function handles ended the process
#: with a segmentation fault, as a chain of cells did).
_MX_MAX_READ = 15
_MX_NAMES = {16: "function handle", 17: "opaque object"}


class _Cut(Exception):
    """The data of a MATLAB file ends early (a damaged file: ``scipy.io.loadmat`` names the damage)."""


class _Foreign(Exception):
    """An array of a class above :data:`_MX_MAX_READ` (``args[0]``: the class)."""


class _TooDeep(Exception):
    """Arrays of a MATLAB file nest deeper than :data:`_MAT_MAX_DEPTH`."""


class _Unpacked:
    """The unpacked bytes of one data element of a MATLAB v5 file: read as stored, or inflated in pieces."""

    def __init__(self, f: Any, nbytes: int, compressed: bool, unpacked: list[int], limit: int) -> None:
        self.f, self.left, self.buf, self.pos = f, nbytes, b"", 0
        self.inflate = zlib.decompressobj() if compressed else None
        # the file's unpacked bytes so far (shared by its elements), and the most it may unpack to
        self.unpacked, self.limit = unpacked, limit

    def _more(self) -> bool:
        """Inflate the next piece into the buffer, counting its bytes into ``unpacked``; False when nothing is
        left to inflate, or once the file's unpacked bytes have passed ``limit`` (nothing more is inflated:
        the file is refused)."""
        if self.inflate is None or self.unpacked[0] > self.limit:
            return False
        data = self.inflate.unconsumed_tail
        if not data:
            if self.left <= 0:
                return False
            data = self.f.read(min(self.left, 1 << 16))
            if not data:
                return False
            self.left -= len(data)
        try:
            piece = self.inflate.decompress(data, 1 << 20)
        except zlib.error:
            return False
        self.unpacked[0] += len(piece)
        self.buf += piece
        return True

    def read(self, n: int) -> bytes:
        """``n`` bytes; :class:`_Cut` where the data ends before."""
        if self.inflate is None:
            data = self.f.read(min(n, self.left)) if n <= self.left else b""
            self.left -= len(data)
        else:
            while len(self.buf) < n and self._more():
                pass
            data, self.buf = (self.buf[:n], self.buf[n:]) if len(self.buf) >= n else (b"", self.buf)
        if len(data) < n:
            raise _Cut
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if self.inflate is None and 0 < n <= self.left:  # stored as it is: no need to read it
            self.f.seek(n, os.SEEK_CUR)
            self.left -= n
            self.pos += n
            return
        while n > 0:
            n -= len(self.read(min(n, 1 << 20)))

    def drain(self) -> None:
        """Inflate the rest of the element, counting its bytes, keeping none."""
        self.buf = b""
        while self._more():
            self.buf = b""

    def done(self) -> bool:
        """Whether every byte has been read."""
        if self.inflate is None:
            return self.left <= 0
        while not self.buf:
            if not self._more():
                return True
        return False


def _mat_tag(src: _Unpacked, order: str) -> tuple[int, int, bytes | None]:
    """The type, byte count and (for the small element format) the data of the next element."""
    mdtype, nbytes = struct.unpack(order + "II", src.read(8))
    if mdtype >> 16:  # small data element: type and count in the first word, the data in the second
        return mdtype & 0xFFFF, mdtype >> 16, struct.pack(order + "I", nbytes)[: mdtype >> 16]
    return mdtype, nbytes, None


def _mat_data(src: _Unpacked, order: str) -> bytes:
    """The data of the next (small) sub-element of an array: its bytes, padding skipped."""
    _, nbytes, small = _mat_tag(src, order)
    if small is not None:
        return small
    if nbytes > 1 << 20:  # a name or dimensions: never that long in a label file; skipped, not kept
        src.skip(nbytes + -nbytes % 8)
        return b""
    data = src.read(nbytes)
    src.skip(-nbytes % 8)
    return data


def _mat_count_elements(
    src: _Unpacked, order: str, nbytes: int, counted: list[int], cap: int, depth: int = 1
) -> None:
    """Add the elements of the cell, struct and object arrays of the array whose body (``nbytes``) follows
    to ``counted[0]``, its nested ones included, stopping above ``cap``; the body is then skipped.

    Raises:
        _TooDeep: the array is nested ``depth`` > :data:`_MAT_MAX_DEPTH` levels deep.
        _Foreign: the array or one inside is of a class above :data:`_MX_MAX_READ`.
    """
    if depth > _MAT_MAX_DEPTH:
        raise _TooDeep
    end = src.pos + nbytes
    if nbytes:
        flags = _mat_data(src, order)
        dims = _mat_data(src, order)
        _mat_data(src, order)  # the name
        mx_class = struct.unpack(order + "I", flags[:4])[0] & 0xFF if len(flags) >= 4 else 0
        if mx_class in _MX_CONTAINERS:
            count = max(math.prod(struct.unpack(f"{order}{len(dims) // 4}i", dims[: len(dims) // 4 * 4])), 0)
            fields = 1
            if mx_class != 1:  # struct or object: (an object's class name,) field name length, the names
                if mx_class == 3:
                    _mat_data(src, order)
                length = _mat_data(src, order)
                name_len = struct.unpack(order + "i", length[:4])[0] if len(length) >= 4 else 0
                _, names, small = _mat_tag(src, order)  # only their length is needed
                if small is None:
                    src.skip(names + -names % 8)
                fields = names // name_len if name_len > 0 else 0
            counted[0] += count * max(fields, 1)  # a struct: a value per element and field
            if counted[0] > cap:
                return
            for _ in range(count * fields):
                mdtype, child, _small = _mat_tag(src, order)
                if mdtype != _MI_MATRIX:
                    return  # no array: a damaged file
                _mat_count_elements(src, order, child, counted, cap, depth + 1)
                if counted[0] > cap:
                    return
        elif mx_class > _MX_MAX_READ:
            raise _Foreign(mx_class)
    if src.pos < end:
        src.skip(end - src.pos)


def _mat_scan(path: Path, limit: int, cap: int) -> tuple[int, int]:
    """``(bytes, elements)`` of the MATLAB v5 file ``path``, in one pass over it, building nothing.

    ``bytes``: what its data elements unpack to, counted until they pass ``limit``. Compressed elements are
    inflated in pieces and thrown away, so a small file that unpacks to gigabytes (a decompression bomb) is
    found without unpacking it whole. ``elements``: those of its cell, struct and object arrays, nested ones
    included, counted from the array headers until they pass ``cap``. A damaged element is counted as far as
    it reads and the count goes on with the next one (``scipy.io.loadmat`` names the damage, or skips an
    element it is not asked for).

    Raises:
        _TooDeep: arrays nest deeper than :data:`_MAT_MAX_DEPTH` levels.
        _Foreign: an array is of a class above :data:`_MX_MAX_READ` (a function handle, an opaque object).
    """
    unpacked, counted = [0], [0]
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        order = "<" if f.read(128)[126:128] == b"IM" else ">"  # the endian indicator
        while unpacked[0] <= limit and counted[0] <= cap:
            tag = f.read(8)
            if len(tag) < 8:
                break
            mdtype, nbytes = struct.unpack(order + "II", tag)
            start = f.tell()
            compressed = mdtype == _MI_COMPRESSED
            if not compressed:  # read as it is stored: at most the rest of the file
                unpacked[0] += min(nbytes, size - start)
            src = _Unpacked(f, nbytes, compressed, unpacked, limit)
            try:
                if compressed:
                    while counted[0] <= cap and not src.done():
                        inner, inner_bytes, _small = _mat_tag(src, order)
                        if inner != _MI_MATRIX:
                            break
                        _mat_count_elements(src, order, inner_bytes, counted, cap)
                elif mdtype == _MI_MATRIX:
                    _mat_count_elements(src, order, nbytes, counted, cap)
            except _Cut:
                pass
            if compressed and counted[0] <= cap:
                src.drain()  # the bytes of what the walk did not need to read
            f.seek(start + nbytes)
    return unpacked[0], counted[0]


def _check_limits(num_classes: int, max_pixels: int) -> None:
    """Refuse a ``num_classes`` outside ``1..255`` or a ``max_pixels`` below 1 (or either not an int), naming
    it: a negative ``max_pixels`` refused every label file as a decompression bomb of "-N pixels"."""
    for name, value in (("num_classes", num_classes), ("max_pixels", max_pixels)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    _valid_labels(int(num_classes))
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {max_pixels}")


def read_sbd_mask(
    path: Path, num_classes: int = NUM_CLASSES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """The class labels of an SBD ``cls/<name>.mat`` file (``GTcls.Segmentation``) as a uint8 array [H, W].

    Labels of any integer type are read, and whole numbers of a floating type (MATLAB's default ``double``).
    A file that unpacks to more than 16 bytes a pixel of ``max_pixels`` (plus 1 MiB) is refused before it is
    read (a decompression bomb: a few MB of zlib data can unpack to gigabytes), and so are more labels than
    ``max_pixels`` and, counted from the array headers before it is read, more than 65536 elements of cell
    and struct arrays in all, a struct's once per field (SBD's files hold 23; each is a Python object), or
    arrays nested more than 32 levels deep (SBD's: 3; ``scipy.io.loadmat`` can end the process with a
    segmentation fault on a deeper chain), or a function handle or opaque object anywhere (no SBD file holds
    one; ``loadmat`` reads what is inside one as deep as it nests).

    Raises:
        TypeError: ``num_classes`` or ``max_pixels`` is not an int.
        ValueError: ``num_classes`` outside ``1..255``, or ``max_pixels`` below 1.
        FileNotFoundError: the file does not exist (with a near miss in its folder, e.g. ``<name>.MAT``).
        DataError: an empty, damaged or MATLAB v7.3 (HDF5) file, one that unpacks beyond ``max_pixels`` or
            holds more than 65536 cell and struct array elements, arrays nested more than 32 levels deep or
            a function handle or opaque object (no SBD file holds one), no
            ``GTcls.Segmentation`` (the message says what the file holds), not a 2-D array of whole numbers,
            more labels than ``max_pixels``, or labels outside ``0..num_classes-1`` (and 255); the message
            names the file.
    """
    import scipy.io

    _check_limits(num_classes, max_pixels)
    try:
        _check_file(path, "SBD label")
    except DataError as exc:  # an empty file
        raise DataError(f"{exc}; extract it again from benchmark.tgz") from None
    try:
        version = scipy.io.matlab.matfile_version(str(path))
    except Exception as exc:  # scipy raises several types on a file that is no MAT-file
        raise DataError(
            f"cannot read SBD label file '{path}' ({type(exc).__name__}: {exc}): {_REEXTRACT}"
        ) from exc
    if version[0] == 2:
        raise DataError(
            f"SBD label file '{path}' is a MATLAB v7.3 (HDF5) file, which is not read: the SBD release "
            "holds MATLAB v5 files (re-extract benchmark.tgz, or save it again with MATLAB's "
            "save(..., '-v7'))"
        )
    limit = _MAT_BYTES_PER_PIXEL * max_pixels + 2**20
    if version[0] == 1:  # v4 files are stored unpacked and hold no cell or struct arrays
        try:
            unpacked, elements = _mat_scan(path, limit, _MAT_MAX_ELEMENTS)
        except _TooDeep:
            raise DataError(
                f"SBD label file '{path}' nests arrays in arrays deeper than {_MAT_MAX_DEPTH} levels (SBD's "
                f"nest 3; scipy.io.loadmat can overflow the C stack on such a file and end the process): "
                f"refusing to read it ({_REEXTRACT})"
            ) from None
        except _Foreign as exc:
            kind = _MX_NAMES.get(exc.args[0], "unknown")
            raise DataError(
                f"SBD label file '{path}' holds a MATLAB {kind} array (class {exc.args[0]}), which no SBD "
                "label file holds (they hold structs, cells, sparse and numeric arrays; scipy.io.loadmat "
                "reads such an array's contents as deep as they nest and can end the process): refusing to "
                f"read it ({_REEXTRACT})"
            ) from None
        if unpacked > limit:
            raise DataError(
                f"SBD label file '{path}' unpacks to more than {limit} bytes, more than the labels of "
                f"{max_pixels} pixels (max_pixels) take ({_MAT_BYTES_PER_PIXEL} bytes a pixel, + 1 MiB): "
                f"refusing to read it (decompression-bomb guard; {_REEXTRACT})"
            )
        if elements > _MAT_MAX_ELEMENTS:
            raise DataError(
                f"SBD label file '{path}' holds cell or struct arrays of {elements} elements or more in all, "
                f"more than the limit of {_MAT_MAX_ELEMENTS} (SBD's hold 23; each would be a Python object): "
                f"refusing to read it ({_REEXTRACT})"
            )
    try:
        # no squeeze_me: it made the [1, W], [H, 1] and [1, 1] labels of a thin image 1-D arrays or scalars
        mat = scipy.io.loadmat(str(path), struct_as_record=False, variable_names=["GTcls"])
    except Exception as exc:  # a damaged file: MatReadError, IndexError, zlib.error, OSError, ValueError, ...
        raise DataError(
            f"cannot read SBD label file '{path}' ({type(exc).__name__}: {exc}): {_REEXTRACT}"
        ) from exc
    seg = _segmentation(path, mat, v4=version[0] == 0)
    if seg.size > max_pixels:
        raise DataError(
            f"SBD label file '{path}' holds {seg.shape[0]}x{seg.shape[1]} = {seg.size} labels, more than the "
            f"limit of {max_pixels} pixels (max_pixels)"
        )
    bad = (seg < 0) | (seg > IGNORE_INDEX)  # in the file's own type: no wrap-around, no overflow
    labels = np.zeros(seg.shape, np.uint8)
    labels[~bad] = seg[~bad]
    bad |= ~_valid_labels(num_classes)[labels]
    if bad.any():
        values = np.unique(seg[bad])
        shown = ", ".join(str(int(v)) for v in values[:10]) + (", ..." if values.size > 10 else "")
        raise DataError(
            f"SBD label file '{path}' has label values outside {{0..{num_classes - 1}, {IGNORE_INDEX}}}: "
            f"{shown} ({counted(int(bad.sum()), 'pixel')})"
        )
    return labels


def _union(*lists: Sequence[str]) -> list[str]:
    return sorted(set().union(*lists))


#: Where each list of the build comes from (for the message of an empty one).
_LIST_ORIGIN = {
    "voc_train": "VOCtrainval_11-May-2012.tar",
    "voc_val": "VOCtrainval_11-May-2012.tar",
    "sbd_train": "benchmark.tgz",
    "sbd_val": "benchmark.tgz",
}


def _read_lists(voc: Path, sbd: Path) -> dict[str, list[str]]:
    """The four lists of the build (``voc_train``, ``voc_val``, ``sbd_train``, ``sbd_val``); a missing or
    empty one is refused: an empty VOC ``val.txt`` would put the VOC val images SBD holds into the training
    list, an empty SBD list would shrink it, both silently."""
    seg_lists = _list_dir(voc, False)
    lists: dict[str, list[str]] = {}
    for key, path in (
        ("voc_train", seg_lists / "train.txt"),
        ("voc_val", seg_lists / "val.txt"),
        ("sbd_train", sbd / "train.txt"),
        ("sbd_val", sbd / "val.txt"),
    ):
        if not path.is_file():
            raise FileNotFoundError(f"{file_not_found('list', path)} (it comes with {_LIST_ORIGIN[key]})")
        lists[key] = read_list(path)
        if not lists[key]:
            raise DataError(
                f"split list file '{path}' is empty: expected one image name a line (an interrupted copy or "
                f"download? extract it again from {_LIST_ORIGIN[key]})"
            )
    return lists


def build_trainaug(
    voc_root: str | Path,
    sbd_root: str | Path,
    *,
    overwrite: bool = False,
    num_classes: int = NUM_CLASSES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> dict[str, Any]:
    """Write ``SegmentationClassAug`` and ``ImageSets/SegmentationAug/{train,val}.txt`` into the VOC root.

    ``train`` = (VOC train | SBD train | SBD val) - VOC val, each name once, sorted; ``val`` = VOC val. A
    mask comes from VOC's ``SegmentationClass`` when VOC annotates the image (VOC ``train``, ``val`` or
    ``trainval`` lists), else from SBD's ``cls/<name>.mat``; it must have the size of its image
    ``JPEGImages/<name>.jpg``.

    Every needed file that does not exist is named at once before a mask is read; every bad label file or
    image at once after all are read. The masks are written into a temporary folder, which becomes
    ``SegmentationClassAug`` in one rename once all of them are written (with ``overwrite`` and an existing
    folder they are moved into it one by one, over the files of the same names; its other files stay), so a
    run that fails (a bad file, a full disk) or is interrupted before that writes nothing: fix it and run it
    again. From before the masks move into place until both lists are written, the mask folder holds the
    file ``.trainaug-unfinished`` (:data:`~examples.voc_joint.data.TRAINAUG_UNFINISHED`): a run stopped in
    between leaves a layout that the data set refuses, and that the next run completes (no ``overwrite``
    needed: it is its own output).

    Args:
        voc_root: the VOC folder (``VOC2012``, ``VOCdevkit`` or the folder above it).
        sbd_root: the SBD folder (``benchmark_RELEASE``, its ``dataset`` folder or the folder above it).
        overwrite: write over an existing ``SegmentationClassAug`` / ``SegmentationAug`` (else refused).
        num_classes: labels accepted: ``0..num_classes-1`` and 255.
        max_pixels: largest image, mask and SBD label array accepted (read from the header; a label file's
            unpacked size is counted before it is read: :func:`read_sbd_mask`).
        progress: show a tqdm progress bar over the masks written (about 12000 with the real data sets; tqdm
            is imported only then).

    Returns:
        dict: ``voc_root``, ``train`` and ``val`` (the lists written), ``from_voc`` and ``from_sbd`` (how many
        masks came from each), ``val_removed`` (SBD images left out because they are VOC val images).

    Raises:
        TypeError: ``num_classes`` or ``max_pixels`` is not an int.
        ValueError: ``num_classes`` outside ``1..255``, or ``max_pixels`` below 1 (before anything is read).
        FileExistsError: the output exists, is not an unfinished run's, and ``overwrite`` is False.
        FileNotFoundError: a missing folder or list; missing images or label files (all named); a
            ``SegmentationClassAug`` that is a broken link.
        DataError: an empty list, unreadable label files or images, labels out of range, masks whose size
            differs from their image (all named).
        OSError: the VOC folder cannot be written (the message names it; nothing was written).
    """
    _check_limits(num_classes, max_pixels)  # before anything is read
    voc = _resolve_root(Path(voc_root).expanduser(), option="--voc-root")
    sbd = resolve_sbd_root(sbd_root)
    lists = _read_lists(voc, sbd)
    seg_lists = _list_dir(voc, False)
    voc_annotated = set(lists["voc_train"]) | set(lists["voc_val"])
    if (seg_lists / "trainval.txt").is_file():
        voc_annotated |= set(read_list(seg_lists / "trainval.txt"))
    val = list(dict.fromkeys(lists["voc_val"]))
    sbd_names = _union(lists["sbd_train"], lists["sbd_val"])
    val_set = set(val)
    train = [n for n in _union(lists["voc_train"], sbd_names) if n not in val_set]
    out_masks, out_lists = voc / MASK_DIR, _list_dir(voc, True)
    broken = broken_link_error(out_masks)  # (the rename into place failed on it, after every mask)
    if broken is not None:
        raise FileNotFoundError(f"{broken}: make the folder it points to, or remove the link")
    existing = [p for p in (out_masks, out_lists / "train.txt", out_lists / "val.txt") if p.exists()]
    unfinished = out_masks / TRAINAUG_UNFINISHED
    if existing and not overwrite and not unfinished.is_file():  # (an unfinished run's: completed now)
        raise FileExistsError(
            f"{[str(p) for p in existing]} exist already: pass overwrite=True (--overwrite) to replace them "
            "(the masks of the listed images are written over the files of the same names; other files stay)"
        )
    names = sorted(set(train) | val_set)
    sources = {
        name: (
            voc / "JPEGImages" / f"{name}.jpg",
            voc / "SegmentationClass" / f"{name}.png"
            if name in voc_annotated
            else sbd / "cls" / f"{name}.mat",
        )
        for name in names
    }
    _check_exist(sources)
    # the masks go to a staging folder, renamed into place once complete; those of runs killed before
    # (SIGTERM, SIGKILL: no finally) are removed here, those of a running conversion stay (see staging.py)
    remove_abandoned_staging(voc, f".{MASK_DIR}.", ".tmp")
    try:
        staging, held = new_staging(voc, f".{MASK_DIR}.", ".tmp")  # the umask's permissions, as the folder
    except OSError as exc:
        raise type(exc)(
            f"cannot write into the VOC folder '{voc}' ({exc.strerror or exc}): the trainaug layout is "
            "written into it; make it writable, or copy the VOC folder to a writable place and pass that"
        ) from exc
    try:
        from_voc, from_sbd = _write_masks(sources, voc_annotated, staging, num_classes, max_pixels, progress)
        # the marker goes in with the masks (in the one rename, or before the first mask moved): whatever
        # stops the run from here on leaves a layout the data set refuses and the next run completes
        (staging / TRAINAUG_UNFINISHED).touch()
        if not out_masks.exists():
            os.replace(staging, out_masks)  # one step: an interrupt leaves no partial folder
        else:
            _move(staging / TRAINAUG_UNFINISHED, unfinished)
            # file by file, into subfolders too (names with a folder part, as the data set reads them)
            for staged in sorted(f for f in staging.rglob("*") if not f.is_dir()):
                target = out_masks / staged.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                _move(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if held is not None:
            os.close(held)
    try:
        out_lists.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out_lists / "val.txt", "".join(f"{n}\n" for n in val))  # readable by all
        write_text_atomic(out_lists / "train.txt", "".join(f"{n}\n" for n in train))
    except OSError as exc:
        raise type(exc)(
            exc.errno,
            f"cannot write the trainaug lists into '{out_lists}': {exc.strerror or exc} (the masks are in "
            "place: free some space, or fix the folder, and run the same command again to complete it)",
        ) from exc
    unfinished.unlink()  # finished
    return {
        "voc_root": voc,
        "train": train,
        "val": val,
        "from_voc": from_voc,
        "from_sbd": from_sbd,
        "val_removed": sorted(set(sbd_names) & val_set),
    }


def _move(src: Path, dst: Path) -> None:
    """Move the file ``src`` over ``dst``: renamed, or copied when ``dst`` lies on another file system (a
    mask folder that links to another disk)."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copyfile(src, dst)
        src.unlink()


def _check_exist(sources: dict[str, tuple[Path, Path]]) -> None:
    """Every image and label file of ``sources`` (name -> (image, label file)) exists, else one
    FileNotFoundError that counts them all and names the first 20 with their near misses
    (:func:`~examples.voc_joint.data.file_not_found`)."""
    missing: list[tuple[str, Path]] = []
    for image, source in sources.values():
        kind = "SBD label" if source.suffix == ".mat" else "mask"
        missing += [(what, path) for path, what in ((image, "image"), (source, kind)) if not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{counted(len(missing), 'file')} the trainaug set needs "
            f"{'do' if len(missing) != 1 else 'does'} not exist (an "
            "incomplete extraction of VOCtrainval_11-May-2012.tar or benchmark.tgz, or lists of another "
            "release?):" + shown_problems(missing, describe=lambda item: file_not_found(*item))
        )


def _check_size(image: Path, image_hw: tuple[int, int], source: Path, labels: np.ndarray) -> None:
    """The labels of ``source`` have the size ``(H, W)`` of their image, else a DataError (an SBD file: why;
    a VOC mask: the message of the VOC reader)."""
    hw = (labels.shape[0], labels.shape[1])
    if source.suffix != ".mat":
        _check_same_size(image, image_hw, source, hw)
    elif hw != image_hw:
        raise DataError(
            f"SBD label file '{source}' is {hw[0]}x{hw[1]} (HxW) but its image '{image}' is "
            f"{image_hw[0]}x{image_hw[1]}"
            + (
                ": the transposed size (labels saved from a [W, H] array?)"
                if hw == image_hw[::-1]
                else ": SBD's images are VOC's own JPEGs, so the file belongs to another image (renamed or "
                "mixed up?); extract it again from benchmark.tgz"
            )
        )


def _write_masks(
    sources: dict[str, tuple[Path, Path]],
    voc_annotated: set[str],
    out: Path,
    num_classes: int,
    max_pixels: int,
    progress: bool,
) -> tuple[int, int]:
    """Write the PNG mask of every name of ``sources`` (name -> (image, label file)) into ``out``; returns
    how many came from VOC and from SBD. Bad files are all named at the end, in one DataError; a write error
    (a full disk) stops at once."""
    from_voc = from_sbd = 0
    items: Any = sources.items()
    if progress:  # tqdm (the examples extra) only when a bar is wanted
        from tqdm.auto import tqdm

        items = tqdm(items, desc="trainaug masks", unit="mask", dynamic_ncols=True)
    problems: list[str] = []
    for name, (image, source) in items:
        try:
            if name in voc_annotated:
                labels = _read_mask(source, max_pixels, num_classes)
            else:
                labels = read_sbd_mask(source, num_classes, max_pixels)
            with _open(image, "image", max_pixels) as im:
                image_hw = (im.height, im.width)
            _check_size(image, image_hw, source, labels)
        except DataError as exc:
            problems.append(str(exc))
            continue
        from_voc += name in voc_annotated
        from_sbd += name not in voc_annotated
        if problems:
            continue  # nothing is written any more: only the other problems are looked for
        try:
            target = out / f"{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)  # a name with a folder part ("sub/x")
            Image.fromarray(labels).save(target)  # uint8 [H, W]: mode "L"
        except OSError as exc:
            raise type(exc)(
                exc.errno,
                f"cannot write the trainaug masks into '{out.parent}': {exc.strerror or exc} (nothing was "
                "written: free some space, or fix the folder, and run it again)",
            ) from exc
    if problems:
        raise DataError(
            f"{counted(len(problems), 'problem')} in the files of the trainaug set "
            "(nothing was written: fix or replace the files and run it again):" + shown_problems(problems)
        )
    return from_voc, from_sbd


def build_parser() -> argparse.ArgumentParser:
    """The command line (``python examples/voc_joint/sbd.py --help``)."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python examples/voc_joint/sbd.py",
        description="Write the SBD-augmented trainaug layout (SegmentationClassAug, "
        "ImageSets/SegmentationAug/{train,val}.txt) into a VOC 2012 folder, from the official SBD release: "
        "VOC train + SBD train + SBD val, minus VOC val, VOC's masks where VOC annotates an image.",
    )
    parser.add_argument("--voc-root", required=True, type=existing_dir, help="VOC2012 folder (or VOCdevkit)")
    parser.add_argument(
        "--sbd-root", required=True, type=existing_dir, help="benchmark_RELEASE (or its dataset/)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing trainaug layout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``parser.error`` (exit status 2) naming ``--voc-root`` where the folders the trainaug layout goes into
    cannot be written (``cli.output_dir_error``: no write permission, a file in the
    way), before any ``.mat`` file is read. A ``--voc-root`` without the VOC layout is left to the
    conversion, whose message says what it expected."""
    try:
        voc = _resolve_root(Path(args.voc_root).expanduser(), option="--voc-root")
    except OSError:
        return
    for folder in (voc / MASK_DIR, _list_dir(voc, True)):
        error = output_dir_error(folder)
        if error is not None:
            parser.error(f"--voc-root: the trainaug layout is written into the VOC folder, but {error}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: exit status 0; 1 for bad data or a write that fails during the conversion
    (the message names the files); 2 for a root that is not a folder (or the empty string, an unset shell
    variable, which was taken as the current folder), a VOC folder this user may not write in, or an output
    that exists already; 130 when stopped by SIGINT (Ctrl-C), 143 by SIGTERM, 129 by SIGHUP (a closed
    terminal)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    # SIGINT, SIGTERM and SIGHUP stop the conversion at once (its staging folder removed) with one line,
    # exit status 130 / 143 / 129
    return run_stoppable(
        lambda: _main(parser, args),
        parser.prog,
        "a conversion stopped before its masks moved into place wrote nothing; one stopped after that is "
        "completed by the same command",
    )


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """:func:`main` after the options were parsed."""
    try:
        res = build_trainaug(
            args.voc_root, args.sbd_root, overwrite=args.overwrite, progress=not args.no_progress
        )
    except FileExistsError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except (OSError, DataError) as exc:  # the data; a VOC folder that cannot be written, a full disk
        parser.exit(1, f"{parser.prog}: error: {exc}\n")
    print(
        f"trainaug: {len(res['train'])} train and {len(res['val'])} val images in {res['voc_root']} "
        f"({res['from_voc']} masks from VOC, {res['from_sbd']} from SBD; {len(res['val_removed'])} SBD "
        "images of VOC val left out). The real data sets give 10582 train and 1449 val images."
    )
    return 0


if __name__ == "__main__":
    from examples.voc_joint.console import tolerant_output

    tolerant_output()  # a path or a character the console cannot encode is escaped, not fatal
    raise SystemExit(main())
