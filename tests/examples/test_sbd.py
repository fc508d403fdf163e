"""The trainaug builder (``examples/voc_joint/sbd.py``) on small folders in the real VOC 2012 and SBD formats:
palette PNGs with a 255 band, SBD ``cls/*.mat`` files holding the ``GTcls`` struct (MATLAB v5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse

pytest.importorskip("torchvision")

from PIL import Image

from examples.voc_joint import sbd
from examples.voc_joint.data import DataError, VOCSegmentation, voc_palette

H, W = 12, 16
VOC_TRAIN = ["2007_000032", "2007_000039", "2008_000002"]
VOC_VAL = ["2007_000033", "2007_000042", "2008_000003"]
SBD_TRAIN = ["2007_000032", "2007_000033", "2008_000100", "2008_000101"]  # a VOC train and a VOC val image
SBD_VAL = ["2007_000042", "2008_000102"]  # another VOC val image


def _labels(cls: int, band: bool) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[3:9, 4:12] = cls
    if band:
        m[2, 4:12] = m[9, 4:12] = 255
    return m


def _write_mat(path: Path, seg: np.ndarray) -> None:
    boundaries = np.empty((1, 20), dtype=object)
    for i in range(20):
        boundaries[0, i] = scipy.sparse.csr_matrix(np.zeros(seg.shape, bool))
    present = np.unique(seg[(seg > 0) & (seg < 255)]).astype(np.uint8)
    scipy.io.savemat(
        path, {"GTcls": {"Segmentation": seg, "Boundaries": boundaries, "CategoriesPresent": present}}
    )


@pytest.fixture
def real_layout(tmp_path: Path) -> tuple[Path, Path]:
    """``VOCdevkit/VOC2012`` and ``benchmark_RELEASE/dataset`` with the names above; VOC masks of class
    ``1 + i`` with a band, SBD masks of class ``10 + i`` without (so the source of a mask shows)."""
    voc, ds = tmp_path / "VOCdevkit" / "VOC2012", tmp_path / "benchmark_RELEASE" / "dataset"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    for d in ("img", "cls", "inst"):
        (ds / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in sorted({*VOC_TRAIN, *VOC_VAL, *SBD_TRAIN, *SBD_VAL}):
        pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(voc / "JPEGImages" / f"{name}.jpg")
        Image.fromarray(pixels).save(ds / "img" / f"{name}.jpg")
    for i, name in enumerate(VOC_TRAIN + VOC_VAL):
        im = Image.fromarray(_labels(1 + i, band=True), mode="P")
        im.putpalette(voc_palette())
        im.save(voc / "SegmentationClass" / f"{name}.png")
    for i, name in enumerate(SBD_TRAIN + SBD_VAL):
        _write_mat(ds / "cls" / f"{name}.mat", _labels(10 + i, band=False))
    lists = voc / "ImageSets" / "Segmentation"
    (lists / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (lists / "val.txt").write_text("\r\n".join(VOC_VAL) + "\r\n\r\n")  # CRLF and a trailing blank line
    (lists / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    (ds / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (ds / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return tmp_path, ds


def test_trainaug_is_the_union_without_voc_val_with_voc_masks_first(real_layout) -> None:
    root, ds = real_layout
    res = sbd.build_trainaug(root / "VOCdevkit", root / "benchmark_RELEASE")
    expected = sorted({*VOC_TRAIN, *SBD_TRAIN, *SBD_VAL} - set(VOC_VAL))
    assert res["train"] == expected and res["val"] == VOC_VAL  # each name once, no val image
    assert res["val_removed"] == ["2007_000033", "2007_000042"]
    voc = root / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "SegmentationAug"
    assert (lists / "train.txt").read_text().split("\n") == [*expected, ""]
    assert (lists / "val.txt").read_text().split("\n") == [*VOC_VAL, ""]
    mask_mode = (voc / "SegmentationClassAug" / f"{VOC_VAL[0]}.png").stat().st_mode & 0o777
    assert {(lists / f).stat().st_mode & 0o777 for f in ("train.txt", "val.txt")} == {mask_mode}  # not 0600
    assert not list(lists.glob(".*.tmp"))
    train = VOCSegmentation(root, "train", sbd=True)
    labels = {train[i]["name"]: set(train[i]["target"].unique().tolist()) for i in range(len(train))}
    assert labels["2007_000032"] == {0, 1, 255}  # in VOC train and SBD train: VOC's mask, band included
    assert labels["2008_000100"] == {0, 12} and labels["2008_000102"] == {0, 15}  # SBD only: SBD's, no band
    val = VOCSegmentation(root, "val", sbd=True)
    assert [set(val[i]["target"].unique().tolist()) for i in range(3)] == [{0, c, 255} for c in (4, 5, 6)]
    assert (res["from_voc"], res["from_sbd"]) == (6, 3)
    with pytest.raises(FileExistsError, match="overwrite"):
        sbd.build_trainaug(voc, ds)
    assert sbd.build_trainaug(voc, ds, overwrite=True)["train"] == expected


def test_sbd_label_files_are_checked_and_named(real_layout, tmp_path) -> None:
    root, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64. HDF5 schema 1.00 .".ljust(116, b" ")
    mat.write_bytes(header + bytes(8) + b"\x00\x02IM" + bytes(512))  # a v7.3 (HDF5) header
    with pytest.raises(DataError, match=r"2008_000100\.mat' is a MATLAB v7\.3 \(HDF5\) file"):
        sbd.build_trainaug(root, ds)
    seg = _labels(3, band=False)
    seg[0, 0] = 40
    _write_mat(mat, seg)
    with pytest.raises(DataError, match=r"2008_000100\.mat' has label values outside \{0\.\.20, 255\}: 40"):
        sbd.build_trainaug(root, ds, overwrite=True)
    _write_mat(mat, np.zeros((H, W + 1), np.uint8))
    with pytest.raises(DataError, match=r"2008_000100\.mat' is 12x17 \(HxW\) but its image .* is 12x16"):
        sbd.build_trainaug(root, ds, overwrite=True)
    scipy.io.savemat(mat, {"other": np.zeros(3)})
    with pytest.raises(DataError, match=r"has no 2-D integer GTcls\.Segmentation"):
        sbd.build_trainaug(root, ds, overwrite=True)
    mat.unlink()
    with pytest.raises(FileNotFoundError, match=r"SBD label file not found: .*2008_000100\.mat"):
        sbd.build_trainaug(root, ds, overwrite=True)
    with pytest.raises(FileNotFoundError, match="no SBD layout under"):
        sbd.build_trainaug(root, tmp_path / "VOCdevkit")
    with pytest.raises(FileNotFoundError, match="no PASCAL VOC 2012 layout") as info:
        sbd.build_trainaug(tmp_path / "nowhere", ds)
    assert "Point --voc-root at" in str(info.value)  # sbd.py's option; it has no --data-root


def test_command_line(real_layout, capsys) -> None:
    root, ds = real_layout
    assert sbd.main(["--voc-root", str(root), "--sbd-root", str(root)]) == 0
    out = capsys.readouterr()
    assert "6 train and 3 val images" in out.out
    assert "trainaug masks" in out.err and "9/9" in out.err  # the progress bar over the masks written
    with pytest.raises(SystemExit) as info:
        sbd.main(["--voc-root", str(root), "--sbd-root", str(root)])
    assert info.value.code == 2 and "--overwrite" in capsys.readouterr().err
    (ds / "cls" / "2008_000101.mat").unlink()
    with pytest.raises(SystemExit) as info:
        sbd.main(["--voc-root", str(root), "--sbd-root", str(root), "--overwrite", "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "2008_000101.mat" in err and "trainaug masks" not in err


def test_a_failed_run_leaves_nothing_that_blocks_the_rerun(real_layout) -> None:
    """A bad label file stops the build; once it is fixed, the same call (no overwrite) runs: the failed run
    wrote no partial SegmentationClassAug (it was refused as 'exist already', naming --overwrite)."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    mat = ds / "cls" / "2008_000102.mat"  # the last name in sorted order: every other mask is written first
    seg = _labels(3, band=False)
    seg[0, 0] = 40
    _write_mat(mat, seg)
    with pytest.raises(DataError, match=r"2008_000102\.mat' has label values outside"):
        sbd.build_trainaug(root, ds)
    assert not (voc / "SegmentationClassAug").exists()
    assert not (voc / "ImageSets" / "SegmentationAug").exists()
    assert [p.name for p in voc.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    _write_mat(mat, _labels(3, band=False))
    res = sbd.build_trainaug(root, ds)
    assert len(list((voc / "SegmentationClassAug").glob("*.png"))) == len(res["train"]) + len(res["val"])
