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
an error naming the file.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a file: put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from examples.voc_joint.data import (
    DEFAULT_MAX_PIXELS,
    IGNORE_INDEX,
    NUM_CLASSES,
    DataError,
    _list_dir,
    _read_mask,
    _resolve_root,
    _valid_labels,
    read_list,
)
from examples.voc_joint.engine import write_text_atomic

__all__ = ["build_trainaug", "main", "read_sbd_mask", "resolve_sbd_root"]

#: Mask folder written into the VOC root (the one ``sbd=True`` reads; its lists: ``_list_dir(voc, True)``).
MASK_DIR = "SegmentationClassAug"


def resolve_sbd_root(root: str | Path) -> Path:
    """The SBD folder holding ``cls/``, ``train.txt`` and ``val.txt``: ``root`` itself, ``root/dataset`` or
    ``root/benchmark_RELEASE/dataset``.

    Raises:
        FileNotFoundError: none of them has that layout (the message names the root and the layout).
    """
    root = Path(root).expanduser()
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir() and (candidate / "train.txt").is_file():
            return candidate
    raise FileNotFoundError(
        f"no SBD layout under '{root}': expected 'cls/<name>.mat', 'train.txt' and 'val.txt' in '{root}', "
        f"'{root / 'dataset'}' or '{root / 'benchmark_RELEASE' / 'dataset'}' (extract benchmark.tgz of the "
        "Semantic Boundaries Dataset)"
    )


def read_sbd_mask(path: Path, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The class labels of an SBD ``cls/<name>.mat`` file (``GTcls.Segmentation``) as a uint8 array [H, W].

    Raises:
        FileNotFoundError: the file does not exist.
        DataError: a MATLAB v7.3 (HDF5) file, an unreadable file, no ``GTcls.Segmentation``, not a 2-D integer
            array, or labels outside ``0..num_classes-1`` (and 255); the message names the file.
    """
    import scipy.io

    if not path.is_file():
        raise FileNotFoundError(f"SBD label file not found: '{path}'")
    try:
        version = scipy.io.matlab.matfile_version(str(path))
        if version[0] == 2:
            raise DataError(
                f"SBD label file '{path}' is a MATLAB v7.3 (HDF5) file, which is not read: the SBD release "
                "holds MATLAB v5 files (re-extract benchmark.tgz, or save it again with MATLAB's "
                "save(..., '-v7'))"
            )
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False, variable_names=["GTcls"])
    except DataError:
        raise
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise DataError(f"cannot read SBD label file '{path}': {exc}") from exc
    seg: Any = getattr(mat.get("GTcls"), "Segmentation", None)
    if not isinstance(seg, np.ndarray) or seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise DataError(
            f"SBD label file '{path}' has no 2-D integer GTcls.Segmentation (found "
            f"{type(seg).__name__ if not isinstance(seg, np.ndarray) else f'{seg.dtype} {seg.shape}'})"
        )
    if seg.size and (seg.min() < 0 or seg.max() > IGNORE_INDEX):
        bad_values = np.unique(seg[(seg < 0) | (seg > IGNORE_INDEX)])[:10].tolist()
        raise DataError(f"SBD label file '{path}' has label values outside 0..255: {bad_values}")
    labels = seg.astype(np.uint8)
    bad = ~_valid_labels(num_classes)[labels]
    if bad.any():
        values = ", ".join(str(int(v)) for v in np.unique(labels[bad])[:10])
        raise DataError(
            f"SBD label file '{path}' has label values outside {{0..{num_classes - 1}, {IGNORE_INDEX}}}: "
            f"{values} ({int(bad.sum())} pixels)"
        )
    return labels


def _union(*lists: Sequence[str]) -> list[str]:
    return sorted(set().union(*lists))


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
    ``JPEGImages/<name>.jpg``. The masks are written into a temporary folder and moved into place once all
    of them are read, so a run that fails on a file writes nothing: fix the file and run it again.

    Args:
        voc_root: the VOC folder (``VOC2012``, ``VOCdevkit`` or the folder above it).
        sbd_root: the SBD folder (``benchmark_RELEASE``, its ``dataset`` folder or the folder above it).
        overwrite: replace an existing ``SegmentationClassAug`` / ``SegmentationAug`` (else refused).
        num_classes: labels accepted: ``0..num_classes-1`` and 255.
        max_pixels: largest image and mask accepted (read from the header).
        progress: show a tqdm progress bar over the masks written (about 12000 with the real data sets; tqdm
            is imported only then).

    Returns:
        dict: ``voc_root``, ``train`` and ``val`` (the lists written), ``from_voc`` and ``from_sbd`` (how many
        masks came from each), ``val_removed`` (SBD images left out because they are VOC val images).

    Raises:
        FileExistsError: the output exists and ``overwrite`` is False.
        FileNotFoundError: a missing folder, list, image or label file (named).
        DataError: an unreadable label file, labels out of range, a mask whose size differs from its image.
    """
    voc = _resolve_root(Path(voc_root).expanduser(), option="--voc-root")
    sbd = resolve_sbd_root(sbd_root)
    seg_lists = _list_dir(voc, False)
    lists: dict[str, list[str]] = {}
    for key, path in (
        ("voc_train", seg_lists / "train.txt"),
        ("voc_val", seg_lists / "val.txt"),
        ("sbd_train", sbd / "train.txt"),
        ("sbd_val", sbd / "val.txt"),
    ):
        if not path.is_file():
            raise FileNotFoundError(f"list file not found: '{path}'")
        lists[key] = read_list(path)
    voc_annotated = set(lists["voc_train"]) | set(lists["voc_val"])
    if (seg_lists / "trainval.txt").is_file():
        voc_annotated |= set(read_list(seg_lists / "trainval.txt"))
    val = list(dict.fromkeys(lists["voc_val"]))
    sbd_names = _union(lists["sbd_train"], lists["sbd_val"])
    val_set = set(val)
    train = [n for n in _union(lists["voc_train"], sbd_names) if n not in val_set]
    out_masks, out_lists = voc / MASK_DIR, _list_dir(voc, True)
    existing = [p for p in (out_masks, out_lists / "train.txt", out_lists / "val.txt") if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{[str(p) for p in existing]} exist already: pass overwrite=True (--overwrite) to replace them"
        )
    # the masks are written into a temporary folder first and moved into place once every one of them has
    # been read: a run that fails on a file (a bad .mat, a missing image) leaves no partial output behind,
    # so the same command runs again once the file is fixed
    staging = Path(tempfile.mkdtemp(prefix=f".{MASK_DIR}.", suffix=".tmp", dir=voc))
    try:
        from_voc, from_sbd = _write_masks(
            voc, sbd, sorted(set(train) | val_set), voc_annotated, staging, num_classes, max_pixels, progress
        )
        out_masks.mkdir(exist_ok=True)
        for staged in sorted(staging.iterdir()):
            os.replace(staged, out_masks / staged.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    out_lists.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_lists / "val.txt", "".join(f"{n}\n" for n in val))  # readable by all, as the masks
    write_text_atomic(out_lists / "train.txt", "".join(f"{n}\n" for n in train))
    return {
        "voc_root": voc,
        "train": train,
        "val": val,
        "from_voc": from_voc,
        "from_sbd": from_sbd,
        "val_removed": sorted(set(sbd_names) & val_set),
    }


def _write_masks(
    voc: Path,
    sbd: Path,
    names: Sequence[str],
    voc_annotated: set[str],
    out: Path,
    num_classes: int,
    max_pixels: int,
    progress: bool,
) -> tuple[int, int]:
    """Write the PNG mask of every name into ``out``; returns how many came from VOC and from SBD."""
    from_voc = from_sbd = 0
    items: Any = names
    if progress:  # tqdm (the examples extra) only when a bar is wanted
        from tqdm.auto import tqdm

        items = tqdm(names, desc="trainaug masks", unit="mask", dynamic_ncols=True)
    for name in items:
        image = voc / "JPEGImages" / f"{name}.jpg"
        if not image.is_file():
            raise FileNotFoundError(f"image file not found: '{image}' (listed for the trainaug set)")
        if name in voc_annotated:
            source = voc / "SegmentationClass" / f"{name}.png"
            labels = _read_mask(source, max_pixels, num_classes)
            from_voc += 1
        else:
            source = sbd / "cls" / f"{name}.mat"
            labels = read_sbd_mask(source, num_classes)
            from_sbd += 1
        with Image.open(image) as im:
            width, height = im.size
        if labels.shape != (height, width):
            raise DataError(
                f"label file '{source}' is {labels.shape[0]}x{labels.shape[1]} (HxW) but its image '{image}' "
                f"is {height}x{width}"
            )
        Image.fromarray(labels).save(out / f"{name}.png")  # uint8 [H, W]: mode "L"
    return from_voc, from_sbd


def build_parser() -> argparse.ArgumentParser:
    """The command line (``python examples/voc_joint/sbd.py --help``)."""
    parser = argparse.ArgumentParser(
        prog="python examples/voc_joint/sbd.py",
        description="Write the SBD-augmented trainaug layout (SegmentationClassAug, "
        "ImageSets/SegmentationAug/{train,val}.txt) into a VOC 2012 folder, from the official SBD release: "
        "VOC train + SBD train + SBD val, minus VOC val, VOC's masks where VOC annotates an image.",
    )
    parser.add_argument("--voc-root", required=True, type=Path, help="VOC2012 folder (or VOCdevkit)")
    parser.add_argument("--sbd-root", required=True, type=Path, help="benchmark_RELEASE (or its dataset/)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing trainaug layout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; data errors exit with status 1 and one line naming the file."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        res = build_trainaug(
            args.voc_root, args.sbd_root, overwrite=args.overwrite, progress=not args.no_progress
        )
    except FileExistsError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except (FileNotFoundError, DataError) as exc:
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
