"""The trainaug builder (``examples/voc_joint/sbd.py``) on small folders in the real VOC 2012 and SBD formats:
palette PNGs with a 255 band, SBD ``cls/*.mat`` files holding the ``GTcls`` struct (MATLAB v5)."""

from __future__ import annotations

import errno
import io
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import scipy.sparse

pytest.importorskip("torchvision")

from PIL import Image

from examples.voc_joint import sbd
from examples.voc_joint.data import TRAINAUG_UNFINISHED, DataError, VOCSegmentation, voc_palette

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


@pytest.mark.parametrize(
    ("name", "command"),
    [("benchmark.tgz", "tar -xzf"), ("VOCtrainval_11-May-2012.tar", "tar -xf"), ("data.TAR.GZ", "tar -xzf")],
)
def test_an_archive_passed_for_its_folder_says_to_extract_it(
    tmp_path, capsys, name: str, command: str
) -> None:
    """The documented hint for the un-extracted ``benchmark.tgz`` was never printed from the command line:
    ``--sbd-root``'s type refused the file first ("expected a folder, got the file"). The option types of
    every script now name the archive and the command that extracts it."""
    archive = tmp_path / name
    archive.write_bytes(b"\x1f\x8b")
    for argv in (["--voc-root", str(tmp_path), "--sbd-root", str(archive)], ["--voc-root", str(archive)]):
        with pytest.raises(SystemExit) as info:
            sbd.main([*argv, "--no-progress"])
        err = capsys.readouterr().err
        assert info.value.code == 2, err
        assert (
            f"got the file {str(archive)!r} (an archive: extract it first, {command} {name}, and pass" in err
        )


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


def _compressed_mat() -> bytes:
    """A small SBD-like label file as MATLAB writes it by default (v5, compressed)."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"GTcls": {"Segmentation": _labels(3, band=False)}}, do_compression=True)
    return buffer.getvalue()


def _flipped(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: b"", "is empty (0 bytes"),
        (lambda d: d[:16], "cannot read SBD label file"),  # scipy: MatReadError
        (lambda d: d[:64], "cannot read SBD label file"),  # scipy: IndexError
        (lambda d: _flipped(d, 140), "cannot read SBD label file"),  # scipy: zlib.error
    ],
    ids=["empty", "cut_in_header", "cut_in_tag", "bad_compressed_byte"],
)
def test_a_damaged_label_file_is_a_data_error_naming_it(real_layout, damage, expected) -> None:
    """scipy's reader raises many types on a damaged file (MatReadError, IndexError, zlib.error, ...): each
    escaped as itself before, a traceback on the command line."""
    root, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    mat.write_bytes(damage(_compressed_mat()))
    with pytest.raises(DataError, match=r"2008_000100\.mat") as info:
        sbd.build_trainaug(root, ds)
    assert expected in str(info.value) and "benchmark.tgz" in str(info.value), info.value


@pytest.mark.parametrize("which", ["voc_val", "sbd_train"])
def test_an_empty_list_file_is_refused(real_layout, which) -> None:
    """An empty VOC val.txt (an interrupted copy) put every VOC val image SBD holds into the training list;
    an empty SBD train.txt gave a small training list; both silently."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    path = voc / "ImageSets" / "Segmentation" / "val.txt" if which == "voc_val" else ds / "train.txt"
    path.write_text("\r\n")
    with pytest.raises(
        DataError, match=r"list file '.*val\.txt' is empty" if which == "voc_val" else "is empty"
    ):
        sbd.build_trainaug(root, ds)
    assert not (voc / "SegmentationClassAug").exists()


def test_every_missing_file_is_named_at_once_before_a_mask_is_read(real_layout, monkeypatch) -> None:
    """A missing file stopped the build alone, after every mask before it had been read (minutes with the
    real sets); all are named at once now, first, with the near misses of the VOC reader."""
    root, ds = real_layout
    (ds / "cls" / "2008_000101.mat").unlink()
    (ds / "cls" / "2008_000102.mat").rename(ds / "cls" / "2008_000102.MAT")
    (ds / "train.txt").write_text("2007_000032\n2007_000033\n2008_000100.jpg\n2008_000101\n")  # one as a file
    (root / "VOCdevkit" / "VOC2012" / "SegmentationClass" / f"{VOC_VAL[2]}.png").unlink()
    monkeypatch.setattr(sbd, "read_sbd_mask", lambda *a: pytest.fail("a mask was read"))
    with pytest.raises(FileNotFoundError) as info:
        sbd.build_trainaug(root, ds)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("5 files the trainaug set needs do not exist"), lines
    assert f"mask file not found: '{root / 'VOCdevkit' / 'VOC2012' / 'SegmentationClass'}" in lines[1], lines
    assert (
        "2008_000100.jpg.jpg' (found '2008_000100.jpg' in its folder: list the names without '.jpg')"
        in (lines[2])
    )
    assert (
        "SBD label file not found" in lines[3] and "2008_000100.jpg.mat' (found '2008_000100.mat'" in lines[3]
    )
    assert (
        "2008_000101.mat'" in lines[4]
        and "2008_000102.mat' (found '2008_000102.MAT' in its folder: SBD " in (lines[5])
    ), lines


def test_the_near_misses_of_the_shown_missing_files_only_are_looked_for(real_layout, monkeypatch) -> None:
    """The near miss of every missing file was looked for (a listing of its folder: 30 ms in a folder of
    VOC's 17125 JPEGs), though 20 are shown: an SBD release half extracted (thousands of label files
    missing) took minutes to be refused."""
    root, ds = real_layout
    (ds / "train.txt").write_text("".join(f"2011_{i:06d}\n" for i in range(30)))
    found, looked_for = sbd.file_not_found, []
    monkeypatch.setattr(sbd, "file_not_found", lambda kind, p: looked_for.append(p) or found(kind, p))
    with pytest.raises(FileNotFoundError) as info:
        sbd.build_trainaug(root, ds)
    lines = str(info.value).splitlines()
    assert lines[0].startswith("60 files the trainaug set needs do not exist"), lines
    assert lines[-1] == "  ... and 40 more", lines
    assert len(looked_for) == 20, looked_for


def test_every_bad_label_file_and_image_is_named_at_once(real_layout) -> None:
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    seg = _labels(3, band=False)
    seg[0, 0] = 40
    _write_mat(ds / "cls" / "2008_000100.mat", seg)
    _write_mat(ds / "cls" / "2008_000101.mat", _labels(3, band=False).T.copy())
    (voc / "JPEGImages" / "2008_000102.jpg").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError) as info:
        sbd.build_trainaug(root, ds)
    text = str(info.value)
    assert text.startswith("3 problems in the files of the trainaug set") and "nothing was written" in text, (
        text
    )
    assert "2008_000100.mat' has label values outside {0..20, 255}: 40 (1 pixel)" in text, text
    assert "2008_000101.mat' is 16x12 (HxW) but its image" in text and "transposed" in text, text
    assert "cannot read image file '" in text and "2008_000102.jpg'" in text, text
    assert not (voc / "SegmentationClassAug").exists() and not [p for p in voc.iterdir() if p.name[0] == "."]


def _struct_array() -> np.ndarray:
    arr = np.empty((1, 2), dtype=[("Segmentation", object)])
    arr[0, 0]["Segmentation"] = arr[0, 1]["Segmentation"] = _labels(3, band=False)
    return arr


def _cell_of_struct() -> np.ndarray:
    """A 1x1 cell array holding SBD's struct (``{GTcls}``): no struct itself."""
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = {"Segmentation": _labels(3, band=False)}
    return cell


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"GTinst": {"Segmentation": _labels(3, band=False)}}, "no variable 'GTcls' (its variables: GTinst)"),
        (
            {"GTcls": {"Boundaries": _labels(3, band=False)}},
            "'GTcls' has no field 'Segmentation' (its fields: ",
        ),
        ({"GTcls": _labels(3, band=False)}, "'GTcls' is a uint8 array of shape (12, 16), not a struct"),
        ({"GTcls": _struct_array()}, "'GTcls' is a struct array of 2 elements: expected one"),
        ({"GTcls": _cell_of_struct()}, "'GTcls' is a object array of shape (1, 1), not a struct"),
        ({"GTcls": {"Segmentation": np.zeros((H, W, 3), np.uint8)}}, "uint8 array of shape (12, 16, 3)"),
        ({"GTcls": {"Segmentation": np.zeros((0, 0), np.uint8)}}, "uint8 array of shape (0, 0): expected"),
        ({"GTcls": {"Segmentation": "abc"}}, "<U3 array of shape (1,): expected a 2-D array"),
        ({"GTcls": {"Segmentation": {"a": np.zeros(2)}}}, "object array of shape (1, 1): expected integer"),
        ({"GTcls": {"Segmentation": np.full((H, W), 0.5)}}, "non-integer values: 0.5"),
        (
            {"GTcls": {"Segmentation": np.full((H, W), 300, np.uint16)}},
            "outside {0..20, 255}: 300 (192 pixels)",
        ),
        ({"GTcls": {"Segmentation": np.full((H, W), -1, np.int32)}}, "outside {0..20, 255}: -1 (192 pixels)"),
        (
            {"GTcls": {"Segmentation": np.full((H, W), 2.0**70)}},
            f"outside {{0..20, 255}}: {2**70} (192 pixels)",
        ),
    ],
    ids=[
        "no_GTcls",
        "no_Segmentation",
        "not_a_struct",
        "struct_array",
        "cell_of_struct",
        "3d",
        "empty",
        "string",
        "nested_struct",
        "fractional",
        "300",
        "negative",
        "huge_double",
    ],
)
def test_a_label_file_of_another_structure_says_what_it_holds(real_layout, content, expected) -> None:
    _, ds = real_layout
    scipy.io.savemat(ds / "cls" / "2008_000100.mat", content)
    with pytest.raises(DataError) as info:
        sbd.read_sbd_mask(ds / "cls" / "2008_000100.mat")
    assert (
        "2008_000100.mat' has no 2-D integer GTcls.Segmentation" in str(info.value) or "outside" in expected
    )
    assert expected in str(info.value), info.value


def test_a_matlab_double_label_array_of_whole_numbers_is_read(real_layout) -> None:
    """MATLAB's default type is double: a label file saved again from MATLAB holds whole-number doubles."""
    _, ds = real_layout
    scipy.io.savemat(
        ds / "cls" / "2008_000100.mat", {"GTcls": {"Segmentation": _labels(7, False).astype(float)}}
    )
    labels = sbd.read_sbd_mask(ds / "cls" / "2008_000100.mat")
    assert labels.dtype == np.uint8 and np.array_equal(labels, _labels(7, band=False))


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("cls", "is the 'cls' folder of the SBD layout: pass its parent '"),
        ("nested", "found the SBD layout in '"),
        ("inst_only", "has 'inst/' (the instance labels) but no 'cls/'"),
        ("archive", "is a file: extract it first"),
        ("no_lists", "has 'cls/' but no 'train.txt': extract the list files of benchmark.tgz too)"),
        ("missing", "does not exist)"),
    ],
)
def test_a_near_miss_of_the_sbd_layout_is_named(real_layout, where, expected) -> None:
    root, ds = real_layout
    if where == "cls":
        arg = ds / "cls"
    elif where == "nested":  # extracted into a folder of the same name
        (root / "outer").mkdir()
        (root / "benchmark_RELEASE").rename(root / "outer" / "benchmark_RELEASE")
        (root / "outer").rename(root / "benchmark_RELEASE")
        arg = root
    elif where == "inst_only":
        shutil.rmtree(ds / "cls")
        arg = root
    elif where == "no_lists":
        (ds / "train.txt").unlink()
        arg = root
    elif where == "missing":
        arg = root / "nowhere"
    else:
        arg = root / "benchmark.tgz"
        arg.write_bytes(b"\x1f\x8b")
    with pytest.raises(FileNotFoundError, match="no SBD layout under") as info:
        sbd.resolve_sbd_root(arg)
    assert expected in str(info.value), info.value
    if where == "nested":
        assert str(root / "benchmark_RELEASE" / "benchmark_RELEASE" / "dataset") in str(info.value)


def test_command_line_write_errors_and_interrupts_leave_nothing(real_layout, monkeypatch, capsys) -> None:
    """A VOC folder that cannot be written, a full disk: one line naming the folder, exit status 1, no
    traceback (the OSError escaped before), nothing left behind; Ctrl-C: exit status 130."""
    root, _ = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    argv = ["--voc-root", str(root), "--sbd-root", str(root), "--no-progress"]
    real_mkdir = os.mkdir

    def read_only(path: Any, *args: Any) -> None:
        if Path(path).parent == voc:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_mkdir(path, *args)

    monkeypatch.setattr(os, "mkdir", read_only)
    with pytest.raises(SystemExit) as info:
        sbd.main(argv)
    err = capsys.readouterr().err
    assert (
        info.value.code == 1 and f"cannot write into the VOC folder '{voc}'" in err and "writable" in err
    ), err
    monkeypatch.undo()
    real_save, calls = Image.Image.save, []

    def full_disk(self: Image.Image, fp: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(fp)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(SystemExit) as info:
        sbd.main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 1 and "No space left on device" in err and "nothing was written" in err, err
    assert sorted(p.name for p in voc.iterdir()) == ["ImageSets", "JPEGImages", "SegmentationClass"]
    monkeypatch.undo()
    monkeypatch.setattr(sbd, "read_sbd_mask", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    assert sbd.main(argv) == 130
    assert "stopped by SIGINT (exit status 130)" in capsys.readouterr().err
    assert sorted(p.name for p in voc.iterdir()) == ["ImageSets", "JPEGImages", "SegmentationClass"]


def test_an_interrupt_while_the_masks_move_into_place_leaves_no_partial_folder(
    real_layout, monkeypatch
) -> None:
    """The staged masks were moved one by one: Ctrl-C between two left a partial SegmentationClassAug, which
    the next run refused as existing. The staging folder is renamed into place in one step now."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    real_replace, calls = os.replace, []

    def interrupted(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sbd.build_trainaug(root, ds)
    masks = voc / "SegmentationClassAug"
    assert not masks.exists() or len(list(masks.glob("*.png"))) == 9
    assert not [p for p in voc.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("existing", [False, True], ids=["new folder", "overwrite"])
@pytest.mark.parametrize(
    "stop",
    [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
    ids=["Ctrl-C", "full disk"],
)
def test_a_run_stopped_before_its_lists_are_written_is_refused_and_completed_by_the_next(
    real_layout, monkeypatch, existing: bool, stop: BaseException
) -> None:
    """Stopped after the masks moved into place and before the lists were written: the masks were left
    without their lists, which the data set could not read and the plain rerun refused as existing. The mask
    folder now says the run is unfinished (``.trainaug-unfinished``): the data set refuses it naming that
    file, and the same call completes it, without ``overwrite``, to the output of an uninterrupted run."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    masks = voc / "SegmentationClassAug"
    if existing:  # (a pre-built archive's folder, replaced with overwrite=True)
        masks.mkdir()
        Image.fromarray(_labels(7, band=False)).save(masks / "2008_000100.png")
    real_write = sbd.write_text_atomic

    def stopped(path: Path, text: str) -> None:
        if path.name == "train.txt":  # after val.txt: the window at its widest
            raise stop
        real_write(path, text)

    monkeypatch.setattr(sbd, "write_text_atomic", stopped)
    with pytest.raises(type(stop)) as info:
        sbd.build_trainaug(root, ds, overwrite=existing)
    if isinstance(stop, OSError):  # the folder, the cause, and what to do
        assert "trainaug lists into" in str(info.value) and "run the same command again" in str(info.value)
    assert (masks / TRAINAUG_UNFINISHED).is_file()
    with pytest.raises(DataError, match=r"unfinished: .*run it again to complete it"):
        VOCSegmentation(root, "val", sbd=True)
    monkeypatch.undo()
    res = sbd.build_trainaug(root, ds)  # no overwrite: its own unfinished output
    assert not (masks / TRAINAUG_UNFINISHED).exists()
    assert [VOCSegmentation(root, split, sbd=True).names for split in ("train", "val")] == [
        res["train"],
        res["val"],
    ]
    with pytest.raises(FileExistsError, match="exist already"):  # finished: refused again
        sbd.build_trainaug(root, ds)


def test_overwrite_into_a_mask_folder_on_another_file_system(real_layout, monkeypatch) -> None:
    """A SegmentationClassAug that links to a folder on another disk: a rename into it fails with EXDEV
    (simulated), which stopped the --overwrite run; such a mask is copied over the old one instead."""
    root, ds = real_layout
    masks = root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug"
    masks.mkdir()
    Image.fromarray(_labels(7, band=False)).save(masks / "2008_000100.png")  # an older mask, replaced
    real_replace = os.replace

    def across_devices(src: Any, dst: Any) -> None:
        if Path(dst).parent == masks:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", across_devices)
    res = sbd.build_trainaug(root, ds, overwrite=True)
    assert sorted(p.stem for p in masks.iterdir()) == sorted(res["train"] + res["val"])
    with Image.open(masks / "2008_000100.png") as im:
        assert set(np.unique(np.asarray(im)).tolist()) == {0, 12}  # SBD's labels of that image


def test_a_run_removes_the_staging_folders_of_killed_runs_not_of_running_ones(real_layout) -> None:
    """A conversion stopped by SIGTERM or SIGKILL left its ``.SegmentationClassAug.<random>.tmp`` folder of
    partial masks in the VOC folder, and no later run removed it: one more per killed run. A run now removes
    those that no process holds (each holds an flock on its own while it runs); a running one's stays, and
    the masks folder it renames into place keeps the umask's permissions."""
    fcntl = pytest.importorskip("fcntl")
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    killed, running = voc / ".SegmentationClassAug.0badc0de.tmp", voc / ".SegmentationClassAug.running1.tmp"
    for folder in (killed, running):
        folder.mkdir()
        (folder / "2008_000002.png").write_bytes(b"partial")
    held = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        sbd.build_trainaug(root, ds)
        assert sorted(p.name for p in voc.iterdir() if p.name.startswith(".")) == [running.name]
    finally:
        os.close(held)
    umask = os.umask(0)
    os.umask(umask)
    assert (voc / "SegmentationClassAug").stat().st_mode & 0o777 == 0o777 & ~umask
    sbd.build_trainaug(root, ds, overwrite=True)
    assert [p.name for p in voc.iterdir() if p.name.startswith(".")] == []


@pytest.mark.skipif(not hasattr(os, "kill") or os.name == "nt", reason="SIGTERM to oneself: POSIX")
def test_cli_sigterm_is_one_line_with_exit_status_143_and_no_staging_folder(real_layout, monkeypatch, capsys):
    """``sbd.py`` stopped by SIGTERM ended silently and left its ``.SegmentationClassAug.<random>.tmp``
    folder of partial masks until the next run. It now prints one line naming the signal, exits 143 and
    removes the folder (Ctrl-C already did)."""
    import signal

    class Stopped(Exception):
        pass

    def stopped(signum, frame):  # where sbd.py handles no SIGTERM (its default would end pytest)
        raise Stopped

    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    real_read, calls = sbd.read_sbd_mask, []

    def read(*args):  # SIGTERM while the second SBD mask is converted
        calls.append(args)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_read(*args)

    monkeypatch.setattr(sbd, "read_sbd_mask", read)
    previous = signal.signal(signal.SIGTERM, stopped)
    try:
        assert sbd.main(["--voc-root", str(root), "--sbd-root", str(ds), "--no-progress"]) == 143
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err
    assert "stopped by SIGTERM (exit status 143)" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in voc.iterdir()) == ["ImageSets", "JPEGImages", "SegmentationClass"]


def _thin_labels(shape: tuple[int, int]) -> np.ndarray:
    """Labels of ``shape`` holding every valid value in turn (0..20 and 255), so a lost or transposed axis
    shows."""
    values = np.array([*range(21), 255], np.uint8)
    return values[np.arange(shape[0] * shape[1]) % values.size].reshape(shape)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
@pytest.mark.parametrize("shape", [(1, W), (H, 1), (1, 1), (H, W)], ids=["1xW", "Hx1", "1x1", "HxW"])
def test_a_label_file_of_an_image_one_pixel_high_or_wide_is_read(real_layout, shape, compressed) -> None:
    """``squeeze_me`` turned the [1, W] and [H, 1] labels of such an image into a 1-D array (and [1, 1] into
    a scalar), which was refused as 'no 2-D integer GTcls.Segmentation' although the file is valid."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    seg = _thin_labels(shape)
    if compressed:  # as MATLAB saves it by default
        scipy.io.savemat(mat, {"GTcls": {"Segmentation": seg}}, do_compression=True)
    else:
        _write_mat(mat, seg)
    labels = sbd.read_sbd_mask(mat)
    assert labels.dtype == np.uint8 and labels.shape == shape and np.array_equal(labels, seg), labels
    scipy.io.savemat(mat, {"GTcls": {"Segmentation": seg.astype(float)}})  # MATLAB's double
    assert np.array_equal(sbd.read_sbd_mask(mat), seg)


@pytest.mark.parametrize("shape", [(1, W), (H, 1), (1, 1)], ids=["1xW", "Hx1", "1x1"])
def test_trainaug_writes_the_mask_of_an_image_one_pixel_high_or_wide(real_layout, shape) -> None:
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    seg = _thin_labels(shape)
    seg[seg == 255] = 0
    Image.fromarray(np.zeros((*shape, 3), np.uint8)).save(voc / "JPEGImages" / "2008_000100.jpg")
    _write_mat(ds / "cls" / "2008_000100.mat", seg)
    sbd.build_trainaug(root, ds)
    with Image.open(voc / "SegmentationClassAug" / "2008_000100.png") as im:
        assert im.mode == "L" and np.array_equal(np.asarray(im), seg)


def test_a_label_file_that_unpacks_beyond_max_pixels_is_refused_before_it_is_read(real_layout, monkeypatch):
    """A small compressed label file that unpacks to gigabytes (a decompression bomb: 486 KB held 500 million
    labels) was read whole whatever max_pixels said, 3.3 GB and 30 s, then refused for its size; 5 MB took
    the machine's memory. Its unpacked size is counted first now, in pieces; labels above max_pixels are
    refused too."""
    root, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    scipy.io.savemat(mat, {"GTcls": {"Segmentation": np.zeros((1024, 2048), np.uint8)}}, do_compression=True)
    assert mat.stat().st_size < 10_000  # 2 MiB of labels
    loadmat, read = scipy.io.loadmat, []

    def recorded(path: str, **kw: Any) -> Any:
        read.append(Path(path))
        return loadmat(path, **kw)

    monkeypatch.setattr(scipy.io, "loadmat", recorded)
    expected = r"2008_000100\.mat' unpacks to more than 1051648 bytes.*\(decompression-bomb guard"
    with pytest.raises(DataError, match=expected):
        sbd.read_sbd_mask(mat, max_pixels=H * W)  # 16 bytes a pixel + 1 MiB
    with pytest.raises(DataError, match=expected):
        sbd.build_trainaug(root, ds, max_pixels=H * W)
    assert mat not in read and len(read) == 2, read  # the other two label files
    assert not (root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug").exists()
    _write_mat(mat, np.zeros((H, W + 1), np.uint8))  # small: read, and its labels counted
    with pytest.raises(DataError, match=r"mat' holds 12x17 = 204 labels, more than the limit of 203 pixels"):
        sbd.read_sbd_mask(mat, max_pixels=H * (W + 1) - 1)
    assert sbd.read_sbd_mask(mat, max_pixels=H * (W + 1)).shape == (H, W + 1)


def test_a_damaged_element_ahead_of_a_decompression_bomb_does_not_hide_it(real_layout, monkeypatch) -> None:
    """The bytes count stopped at the first damaged compressed element (a bad zlib checksum), and the rest of
    the file went uncounted; ``loadmat`` skips an element it is not asked for, so a bomb behind a damaged
    ``other`` was unpacked whole. The count now goes on with the next element."""
    _, ds = real_layout
    other, bomb = io.BytesIO(), io.BytesIO()
    # 320 kB of noise: more than loadmat inflates of an element it skips (the header, not the checksum)
    noise = np.random.default_rng(0).random(40_000)
    scipy.io.savemat(other, {"other": noise}, do_compression=True)
    scipy.io.savemat(bomb, {"GTcls": {"Segmentation": np.zeros((1024, 2048), np.uint8)}}, do_compression=True)
    damaged = bytearray(other.getvalue())
    damaged[-1] ^= 0xFF  # the last byte of the zlib stream's Adler-32 checksum
    mat = ds / "cls" / "2008_000100.mat"
    mat.write_bytes(bytes(damaged) + bomb.getvalue()[128:])  # one header, then both elements
    assert scipy.io.loadmat(str(mat), variable_names=["GTcls"])["GTcls"].shape == (1, 1)  # readable
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **kw: pytest.fail("loadmat ran"))
    with pytest.raises(DataError, match=r"2008_000100\.mat' unpacks to more than 1051648 bytes"):
        sbd.read_sbd_mask(mat, max_pixels=H * W)


def _claimed_elements(content: dict[str, Any], dims: tuple[int, int], new_dims: tuple[int, int]) -> bytes:
    """``content`` as an uncompressed MATLAB v5 file whose array header of ``dims`` claims ``new_dims``."""
    out = io.BytesIO()
    scipy.io.savemat(out, content, do_compression=False)
    data = out.getvalue()
    header = struct.pack("<II2i", 5, 8, *dims)  # the dimensions sub-element (miINT32, 8 bytes)
    assert data.count(header) == 1
    return data.replace(header, struct.pack("<II2i", 5, 8, *new_dims))


def _compressed(data: bytes) -> bytes:
    """The uncompressed MATLAB v5 file ``data`` with its one array stored as a zlib element."""
    return data[:128] + struct.pack("<II", 15, len(packed := zlib.compress(data[128:]))) + packed


def _fieldless_struct_array(n: int) -> bytes:
    """A MATLAB v5 file whose ``GTcls`` is a 1 x ``n`` struct array without fields (nothing stored per
    element), written by hand: savemat writes no such array."""
    body = struct.pack("<II2I", 6, 8, 2, 0)  # array flags: class 2, a struct
    body += struct.pack("<II2i", 5, 8, 1, n) + struct.pack("<II", 1, 5) + b"GTcls\0\0\0"
    body += struct.pack("<HHi", 5, 4, 2) + struct.pack("<II", 1, 0)  # field name length 2, no names
    return b"MATLAB 5.0 MAT-file".ljust(124) + b"\x00\x01IM" + struct.pack("<II", 14, len(body)) + body


@pytest.mark.parametrize(
    "kind", ["cell", "struct_array", "compressed_struct_array", "fieldless_struct_array"]
)
def test_a_label_file_claiming_billions_of_cells_is_refused_before_it_is_read(real_layout, monkeypatch, kind):
    """A label file of a few hundred bytes whose cell or struct array header claims 500 million elements: each
    becomes a Python object, so scipy.io.loadmat took 3.8 GB and 19 s before it found the data missing (a
    struct array without fields stores nothing per element: it ran on without end). The byte guard of
    max_pixels saw nothing (the file unpacks to a few hundred bytes). The elements of the cell and struct
    arrays (a struct's once per field) are counted from their headers first now, and more than 2**16 are
    refused."""
    root, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    empty = np.zeros((0, 0))
    if kind == "cell":
        cells = np.empty((1, 2), dtype=object)
        cells[0, 0] = cells[0, 1] = empty
        data = _claimed_elements({"GTcls": {"Segmentation": cells}}, (1, 2), (1, 500_000_000))
    elif kind == "fieldless_struct_array":
        data = _fieldless_struct_array(500_000_000)
    else:
        arr = np.empty((1, 2), dtype=[("Segmentation", object)])
        arr[0, 0]["Segmentation"] = arr[0, 1]["Segmentation"] = empty
        data = _claimed_elements({"GTcls": arr}, (1, 2), (1, 500_000_000))
        data = _compressed(data) if kind == "compressed_struct_array" else data
    mat.write_bytes(data)
    assert mat.stat().st_size < 1000
    loadmat, read = scipy.io.loadmat, []

    def recorded(path: str, **kw: Any) -> Any:
        read.append(Path(path))
        if Path(path) == mat:  # not read here: it would take gigabytes
            pytest.fail(f"{path} was read")
        return loadmat(path, **kw)

    monkeypatch.setattr(scipy.io, "loadmat", recorded)
    expected = (
        r"2008_000100\.mat' holds cell or struct arrays of 50000000[01] elements or more in all, more than "
        r"the limit of 65536"
    )
    with pytest.raises(DataError, match=expected):
        sbd.read_sbd_mask(mat)
    with pytest.raises(DataError, match=expected):
        sbd.build_trainaug(root, ds)
    assert mat not in read and len(read) == 2, read  # the other two label files
    assert not (root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug").exists()


def test_a_fieldless_struct_array_of_few_elements_is_read_as_before(real_layout) -> None:
    """The element count refuses only what passes its limit: 3 elements are read and named as before."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    mat.write_bytes(_fieldless_struct_array(3))
    with pytest.raises(DataError, match="'GTcls' is a struct array of 3 elements: expected one struct"):
        sbd.read_sbd_mask(mat)
    compressed = _compressed(
        _claimed_elements({"GTcls": {"Segmentation": _labels(3, band=False)}}, (H, W), (H, W))
    )
    mat.write_bytes(compressed)
    assert np.array_equal(sbd.read_sbd_mask(mat), _labels(3, band=False))


def _nested_cells(depth: int, mx_class: int = 1, order: str = "<") -> bytes:
    """A MATLAB v5 file whose ``GTcls`` is a chain of ``depth`` 1 x 1 cells around an empty array, written by
    hand (savemat recurses as deep as the chain); ``mx_class`` 16: of function handles (one array each);
    ``order`` ``">"``: big-endian."""

    def element(mdtype: int, data: bytes) -> bytes:
        return struct.pack(order + "II", mdtype, len(data)) + data + b"\0" * (-len(data) % 8)

    def cell(child: bytes, name: bytes = b"") -> bytes:
        body = (
            element(6, struct.pack(order + "2I", mx_class, 0))
            + element(5, struct.pack(order + "2i", 1, 1))
            + element(1, name)
        )
        return struct.pack(order + "II", 14, len(body + child)) + body + child

    x = struct.pack(order + "II", 14, 0)  # an empty array at the bottom
    for _ in range(depth - 1):
        x = cell(x)
    return (
        b"MATLAB 5.0 MAT-file".ljust(124)
        + (b"\x00\x01IM" if order == "<" else b"\x01\x00MI")
        + cell(x, b"GTcls")
    )


@pytest.mark.parametrize("compressed", [False, True])
def test_arrays_nested_too_deep_are_refused_before_loadmat_runs(real_layout, monkeypatch, compressed) -> None:
    """A chain of 5000 1 x 1 cells (about 200 kB) made scipy.io.loadmat overflow the C stack: the process
    ended with a segmentation fault, no error and no file named. The nesting is measured from the array
    headers first now, and more than 32 levels (SBD's files nest 3) are refused naming the file; 30 levels
    still reach loadmat (and its own report of what the file holds)."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    deep = _nested_cells(5000)
    mat.write_bytes(_compressed(deep) if compressed else deep)
    loadmat, read = scipy.io.loadmat, []

    def recorded(path: str, **kw: Any) -> Any:
        if Path(path) == mat and not read and mat.stat().st_size == len(written[0]):
            pytest.fail(f"{path} (the chain of 5000 cells) was read: it could end the process")
        read.append(Path(path))
        return loadmat(path, **kw)

    written = [_compressed(deep) if compressed else deep]

    monkeypatch.setattr(scipy.io, "loadmat", recorded)
    with pytest.raises(DataError, match=r"2008_000100\.mat' nests arrays in arrays deeper than 32 levels"):
        sbd.read_sbd_mask(mat)
    assert read == []
    shallow = _nested_cells(30)
    mat.write_bytes(_compressed(shallow) if compressed else shallow)
    with pytest.raises(DataError, match="'GTcls' is a object array of shape"):
        sbd.read_sbd_mask(mat)
    assert read == [mat]


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("mx_class, kind", [(16, "function handle"), (17, "opaque object"), (40, "unknown")])
def test_function_handles_and_opaque_objects_are_refused_before_loadmat_runs(
    real_layout, monkeypatch, compressed, mx_class, kind
) -> None:
    """scipy.io.loadmat reads the array inside a function handle (class 16) as deep as the chain goes, as it
    does a cell's: a chain of 100000 (4.8 MB, far less compressed) ended the process with a segmentation
    fault; the nesting guard measured cell, struct and object arrays only. No SBD label file holds a function
    handle or an opaque object (17, also read recursively) or a class above: a chain of 1000 and one of 2
    are refused naming the file and the class before loadmat runs."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **kw: pytest.fail("loadmat ran"))
    for depth in (1000, 2):
        chain = _nested_cells(depth, mx_class=mx_class)
        mat.write_bytes(_compressed(chain) if compressed else chain)
        expected = rf"2008_000100\.mat' holds a MATLAB {kind} array \(class {mx_class}\), which no SBD label"
        with pytest.raises(DataError, match=expected):
            sbd.read_sbd_mask(mat)


@pytest.mark.parametrize("order", ["<", ">"], ids=["little_endian", "big_endian"])
def test_the_nesting_limit_is_32_levels_in_either_byte_order(real_layout, monkeypatch, order) -> None:
    """32 levels of arrays (31 cells around an empty array) reach loadmat, 33 are refused; a big-endian file
    (its header's endian indicator 'MI') is measured in its own byte order."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    loadmat, read = scipy.io.loadmat, []

    def recorded(path: str, **kw: Any) -> Any:
        read.append(Path(path))
        return loadmat(path, **kw)

    monkeypatch.setattr(scipy.io, "loadmat", recorded)
    for depth in (32, 5000):
        mat.write_bytes(_nested_cells(depth, order=order))
        with pytest.raises(
            DataError, match=r"2008_000100\.mat' nests arrays in arrays deeper than 32 levels"
        ):
            sbd.read_sbd_mask(mat)
    assert read == []
    mat.write_bytes(_nested_cells(31, order=order))
    with pytest.raises(DataError, match="'GTcls' is a object array of shape"):
        sbd.read_sbd_mask(mat)
    assert read == [mat]


@pytest.mark.parametrize("compressed", [False, True])
def test_a_deep_chain_in_a_later_field_of_gtcls_is_refused(real_layout, monkeypatch, compressed) -> None:
    """SBD's shape: the labels in 'Segmentation', then a second field; a chain of 40 cells there (41 levels
    below GTcls) is found behind the label data and refused before loadmat runs."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    chain: Any = np.zeros((0, 0))
    for _ in range(40):
        cell = np.empty((1, 1), dtype=object)
        cell[0, 0] = chain
        chain = cell
    content = {"GTcls": {"Segmentation": _labels(3, band=False), "Boundaries": chain}}
    scipy.io.savemat(mat, content, do_compression=compressed)
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **kw: pytest.fail("loadmat ran"))
    with pytest.raises(DataError, match=r"2008_000100\.mat' nests arrays in arrays deeper than 32 levels"):
        sbd.read_sbd_mask(mat)


def test_the_element_limit_is_65536(real_layout, monkeypatch) -> None:
    """65536 struct array elements reach loadmat (and its own report of what the file holds), 65537 are
    refused before it runs."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    mat.write_bytes(_fieldless_struct_array(2**16))
    with pytest.raises(DataError, match="'GTcls' is a struct array of 65536 elements: expected one struct"):
        sbd.read_sbd_mask(mat)
    mat.write_bytes(_fieldless_struct_array(2**16 + 1))
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **kw: pytest.fail("loadmat ran"))
    with pytest.raises(DataError, match="holds cell or struct arrays of 65537 elements or more in all"):
        sbd.read_sbd_mask(mat)


def _mat_element(mdtype: int, data: bytes, order: str = "<") -> bytes:
    """A data element of a MATLAB v5 file: its tag, ``data`` and the padding to 8 bytes."""
    return struct.pack(order + "II", mdtype, len(data)) + data + b"\0" * (-len(data) % 8)


def _mat_array(
    mx_class: int, dims: tuple[int, ...], rest: bytes = b"", name: bytes = b"", order: str = "<"
) -> bytes:
    """An array (``miMATRIX`` element) of class ``mx_class``, written by hand: its flags, dimensions and
    name, then ``rest`` (a struct's field names, the elements)."""
    body = (
        _mat_element(6, struct.pack(order + "2I", mx_class, 0), order)
        + _mat_element(5, struct.pack(f"{order}{len(dims)}i", *dims), order)
        + _mat_element(1, name, order)
        + rest
    )
    return struct.pack(order + "II", 14, len(body)) + body


def _mat_file(*elements: bytes, order: str = "<") -> bytes:
    """A MATLAB v5 file of the data elements ``elements`` (in the byte order ``order``)."""
    return (
        b"MATLAB 5.0 MAT-file".ljust(124)
        + (b"\x00\x01IM" if order == "<" else b"\x01\x00MI")
        + b"".join(elements)
    )


def _field_names(names: tuple[str, ...], order: str = "<") -> bytes:
    """A struct's field name length (a small element, as MATLAB writes it) and its names, 32 bytes each."""
    return struct.pack(order + "Ii", 4 << 16 | 5, 32) + _mat_element(
        1, b"".join(n.encode().ljust(32, b"\0") for n in names), order
    )


@pytest.mark.parametrize(
    ("kind", "order"),
    [("struct", "<"), ("struct", ">"), ("object", "<"), ("object", ">")],
    ids=["struct_little_endian", "struct_big_endian", "object_little_endian", "object_big_endian"],
)
def test_a_struct_or_object_array_counts_once_per_field(real_layout, monkeypatch, kind, order) -> None:
    """A 1 x 40000 struct array of 2 fields holds 80000 values: refused before loadmat runs, in either byte
    order (the field name length is a small element, read in the file's order) and for an object array
    (its class name comes before the field names)."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    fields = ("Segmentation", "Boundaries")
    rest = (_mat_element(1, b"myclass", order) if kind == "object" else b"") + _field_names(fields, order)
    mat.write_bytes(
        _mat_file(_mat_array(3 if kind == "object" else 2, (1, 40000), rest, b"GTcls", order), order=order)
    )
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **kw: pytest.fail("loadmat ran"))
    with pytest.raises(DataError, match="holds cell or struct arrays of 80000 elements or more in all"):
        sbd.read_sbd_mask(mat)


def test_the_element_limit_counts_the_elements_after_one_that_reaches_it(real_layout, monkeypatch) -> None:
    """A cell of 2 whose first element (a fieldless struct array of 65534) brings the count to the limit
    exactly: the second element (1 more) is counted too, and the file refused."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    fieldless = struct.pack("<Ii", 4 << 16 | 5, 2) + _mat_element(1, b"")
    children = _mat_array(2, (1, 65534), fieldless) + _mat_array(2, (1, 1), fieldless)
    mat.write_bytes(_mat_file(_mat_array(1, (1, 2), children, b"GTcls")))
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **kw: pytest.fail("loadmat ran"))
    with pytest.raises(DataError, match="holds cell or struct arrays of 65537 elements or more in all"):
        sbd.read_sbd_mask(mat)


def _many_structs(n: int) -> bytes:
    """A fieldless struct array of ``n`` elements (no name): what a stray ``miMATRIX`` tag would claim."""
    return _mat_array(2, (1, n), struct.pack("<Ii", 4 << 16 | 5, 2) + _mat_element(1, b""))


@pytest.mark.parametrize(
    ("elements", "expected"),
    [
        ((_mat_element(15, zlib.compress(_many_structs(3) + _many_structs(4))),), 7),
        ((_mat_element(15, zlib.compress(_mat_element(5, _many_structs(100_000)))),), 0),
        ((_mat_element(15, zlib.compress(_many_structs(3) + bytes(2**21))),), 3),
        ((_mat_element(5, _many_structs(100_000)),), 0),
        ((_mat_element(5, _many_structs(100_000)[8:]),), 0),
        ((_mat_array(1, (1, 2), _mat_element(5, _many_structs(100_000)) + _many_structs(3)),), 2),
    ],
    ids=[
        "two_arrays_in_one_compressed_element",
        "no_array_in_a_compressed_element",
        "bytes_after_the_array_of_a_compressed_element",
        "no_array_element",
        "array_body_in_no_array_element",
        "no_array_in_a_cell",
    ],
)
def test_the_scan_counts_the_arrays_of_every_element_and_every_unpacked_byte(tmp_path, elements, expected):
    """``_mat_scan``: every array of a compressed element is counted, and every byte it unpacks to (those
    after its arrays too); an element that is no array (type 5) is skipped whole, and so is the rest of a
    cell after such an element (a damaged file: loadmat names the damage), not read as array headers."""
    mat = tmp_path / "x.mat"
    mat.write_bytes(_mat_file(*elements))
    unpacked = sum(
        len(zlib.decompress(e[8 : 8 + struct.unpack("<I", e[4:8])[0]]))
        if e[:4] == b"\x0f\0\0\0"
        else len(e) - 8
        for e in elements
    )
    assert sbd._mat_scan(mat, 2**40, 2**16) == (unpacked, expected)


def test_a_cut_label_file_claiming_gigabytes_is_damaged_not_a_bomb(real_layout, monkeypatch) -> None:
    """An uncompressed label file cut short whose array claims 2 GiB: it unpacks to no more than it holds, so
    it is named as damaged (loadmat's error), not as a decompression bomb."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    out = io.BytesIO()
    scipy.io.savemat(out, {"GTcls": {"Segmentation": _labels(3, band=False)}}, do_compression=False)
    data = out.getvalue()
    mat.write_bytes(data[:128] + struct.pack("<II", 14, 2**31) + data[136:-100])
    with pytest.raises(DataError, match=r"cannot read SBD label file '.*2008_000100\.mat'"):
        sbd.read_sbd_mask(mat, max_pixels=H * W)


def test_the_byte_limit_is_what_a_compressed_file_unpacks_to_exactly(real_layout) -> None:
    """A compressed label file (of incompressible data: its stored bytes near what it unpacks to) that unpacks
    to exactly 16 bytes a pixel of max_pixels + 1 MiB is read; with one pixel less it is refused. Its stored
    (compressed) bytes are not counted on top."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    noise = np.random.default_rng(0).integers(0, 256, 1_200_000, dtype=np.uint8)
    for n in range(noise.size - 16, noise.size):
        out = io.BytesIO()
        content = {"Segmentation": _labels(3, band=False), "Boundaries": noise[:n]}
        scipy.io.savemat(out, {"GTcls": content}, do_compression=True)
        data = out.getvalue()
        unpacked = len(zlib.decompress(data[136:]))
        if (unpacked - 2**20) % 16 == 0:
            break
    assert len(data) - 136 > 1_100_000 and 2**20 < unpacked < 2 * 2**20
    mat.write_bytes(data)
    max_pixels = (unpacked - 2**20) // 16
    assert np.array_equal(sbd.read_sbd_mask(mat, max_pixels=max_pixels), _labels(3, band=False))
    with pytest.raises(DataError, match=rf"unpacks to more than {unpacked - 16} bytes"):
        sbd.read_sbd_mask(mat, max_pixels=max_pixels - 1)


def test_a_matlab_v4_label_file_is_read_as_one_not_scanned_as_v5(real_layout) -> None:
    """A MATLAB v4 file has no v5 elements (its data is not scanned as such: bytes 0x55 read as
    tags claiming 1.4 GB each: a bomb) and holds no structs, which its message says."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    scipy.io.savemat(mat, {"GTcls": np.full((1100, 1000), 0x55, np.uint8)}, format="4")
    assert mat.stat().st_size > 16 * H * W + 2**20
    with pytest.raises(
        DataError, match=r"'GTcls' is a uint8 array of shape \(1100, 1000\), not a struct \(a MATLAB v4 file"
    ):
        sbd.read_sbd_mask(mat, max_pixels=H * W)


@pytest.mark.parametrize(
    ("count", "shown"),
    [
        (10, "30, 31, 32, 33, 34, 35, 36, 37, 38, 39 (10 pixels)"),
        (11, "30, 31, 32, 33, 34, 35, 36, 37, 38, 39, ... (11 pixels)"),
    ],
)
def test_ten_bad_label_values_are_listed_then_an_ellipsis(real_layout, count, shown) -> None:
    _, ds = real_layout
    seg = _labels(3, band=False)
    seg[0, :count] = np.arange(30, 30 + count)
    _write_mat(ds / "cls" / "2008_000100.mat", seg)
    with pytest.raises(DataError, match="has label values outside") as info:
        sbd.read_sbd_mask(ds / "cls" / "2008_000100.mat")
    assert str(info.value).endswith(f"outside {{0..20, 255}}: {shown}"), info.value


def test_voc_trainval_is_optional_and_its_names_keep_voc_masks(real_layout) -> None:
    """Without VOC's trainval.txt the build runs as before; an image it lists (and VOC's train and val lists
    do not) gets VOC's mask, though SBD has one too."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation" / "trainval.txt").unlink()
    res = sbd.build_trainaug(root, ds)
    assert (res["from_voc"], res["from_sbd"]) == (6, 3)
    im = Image.fromarray(_labels(7, band=True), mode="P")
    im.putpalette(voc_palette())
    im.save(voc / "SegmentationClass" / "2008_000100.png")
    (voc / "ImageSets" / "Segmentation" / "trainval.txt").write_text(
        "\n".join([*VOC_TRAIN, *VOC_VAL, "2008_000100"])
    )
    res = sbd.build_trainaug(root, ds, overwrite=True)
    assert (res["from_voc"], res["from_sbd"]) == (7, 2)
    with Image.open(voc / "SegmentationClassAug" / "2008_000100.png") as mask:
        assert set(np.unique(np.asarray(mask)).tolist()) == {0, 7, 255}  # VOC's, band included


def test_a_name_listed_twice_in_voc_val_is_written_once(real_layout) -> None:
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join([*VOC_VAL, VOC_VAL[0]]) + "\n")
    assert sbd.build_trainaug(root, ds)["val"] == VOC_VAL
    assert (voc / "ImageSets" / "SegmentationAug" / "val.txt").read_text().split() == VOC_VAL


@pytest.mark.parametrize("existing", ["train.txt", "val.txt"])
def test_an_existing_list_alone_is_not_overwritten(real_layout, monkeypatch, existing) -> None:
    root, ds = real_layout
    lists = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "SegmentationAug"
    lists.mkdir(parents=True)
    (lists / existing).write_text("mine\n")
    monkeypatch.setattr(sbd, "read_sbd_mask", lambda *a: pytest.fail("a mask was read"))
    with pytest.raises(
        FileExistsError, match=rf"SegmentationAug.{existing}'\] exist already: pass overwrite"
    ):
        sbd.build_trainaug(root, ds)
    assert (lists / existing).read_text() == "mine\n"


def test_one_missing_file_is_named_in_the_singular(real_layout) -> None:
    root, ds = real_layout
    (ds / "cls" / "2008_000101.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"^1 file the trainaug set needs does not exist"):
        sbd.build_trainaug(root, ds)


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_a_64_bit_integer_label_array_is_read(real_layout, dtype) -> None:
    """MATLAB's int64 and uint64 arrays (classes 14 and 15, the highest read) hold labels like any integer
    type: not refused as an array of an unknown class."""
    _, ds = real_layout
    mat = ds / "cls" / "2008_000100.mat"
    scipy.io.savemat(mat, {"GTcls": {"Segmentation": _labels(7, band=False).astype(dtype)}})
    assert np.array_equal(sbd.read_sbd_mask(mat), _labels(7, band=False))


@pytest.mark.parametrize(
    "kw, error, expected",
    [
        ({"max_pixels": -46761}, ValueError, "max_pixels must be >= 1, got -46761"),
        ({"max_pixels": 0}, ValueError, "max_pixels must be >= 1, got 0"),
        ({"max_pixels": 1e6}, TypeError, "max_pixels must be an int, got float 1000000.0"),
        ({"max_pixels": True}, TypeError, "max_pixels must be an int, got bool True"),
        ({"num_classes": 0}, ValueError, r"num_classes must be in 1\.\.255, got 0"),
        ({"num_classes": 256}, ValueError, r"num_classes must be in 1\.\.255, got 256"),
        ({"num_classes": "21"}, TypeError, "num_classes must be an int, got str '21'"),
    ],
)
def test_bad_limits_are_refused_naming_them_before_a_file_is_read(real_layout, kw, error, expected) -> None:
    """A negative max_pixels refused every label file as a decompression bomb "of -46761 pixels", and
    build_trainaug checked num_classes only after reading its first mask: both are named at once now."""
    root, ds = real_layout
    with pytest.raises(error, match=expected):
        sbd.read_sbd_mask(ds / "cls" / "2008_000100.mat", **kw)
    with pytest.raises(error, match=expected):
        sbd.build_trainaug(root, ds, **kw)
    assert not (root / "VOCdevkit" / "VOC2012" / "SegmentationClassAug").exists()
    assert sbd.read_sbd_mask(ds / "cls" / "2008_000100.mat", max_pixels=H * W, num_classes=255).shape == (
        H,
        W,
    )


def test_names_in_subfolders_are_written_and_overwritten_as_the_data_set_reads_them(real_layout) -> None:
    """A listed name with a folder part ("sub/x", which VOCSegmentation reads as JPEGImages/sub/x.jpg) failed
    with "cannot write the trainaug masks ... free some space": its mask's folder was never made, and with
    ``overwrite`` a staged subfolder was renamed over the existing one."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages" / "sub").mkdir()
    shutil.copyfile(voc / "JPEGImages" / "2008_000100.jpg", voc / "JPEGImages" / "sub" / "x.jpg")
    (ds / "cls" / "sub").mkdir()
    _write_mat(ds / "cls" / "sub" / "x.mat", _labels(7, band=False))
    (ds / "train.txt").write_text("\n".join([*SBD_TRAIN, "sub/x"]) + "\n")
    for overwrite in (False, True):
        res = sbd.build_trainaug(voc, ds, overwrite=overwrite)
        assert "sub/x" in res["train"] and res["from_sbd"] == 4
        train = VOCSegmentation(root, "train", sbd=True)
        sample = train[train.names.index("sub/x")]
        assert set(sample["target"].unique().tolist()) == {0, 7}
    assert sorted(p.name for p in (voc / "SegmentationClassAug" / "sub").iterdir()) == ["x.png"]


def test_a_mask_folder_that_is_a_broken_link_is_named_before_any_mask_is_read(real_layout, capsys) -> None:
    """A ``SegmentationClassAug`` linking to a folder not made yet (a data disk not set up) failed after every
    mask was converted, with "[Errno 20] Not a directory: '.../.SegmentationClassAug.<hex>.tmp' -> ...": the
    rename into place took the link for a missing folder."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    target = root / "not_made_yet"
    (voc / "SegmentationClassAug").symlink_to(target)
    with pytest.raises(FileNotFoundError, match=r"is a broken link \(to '.*not_made_yet', which does not"):
        sbd.build_trainaug(voc, ds)
    with pytest.raises(SystemExit) as info:
        sbd.main(["--voc-root", str(root), "--sbd-root", str(root), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--voc-root" in err and "SegmentationClassAug' is a broken link" in err
    assert not list(voc.glob(".SegmentationClassAug.*"))  # nothing staged: refused before the conversion
    target.mkdir()
    assert sbd.build_trainaug(voc, ds, overwrite=True)["from_sbd"] == 3
    assert len(list(target.glob("*.png"))) == 9


def test_a_mask_folder_that_is_a_loop_of_links_says_so(real_layout) -> None:
    """A ``SegmentationClassAug`` that links to itself has no folder to make: the refusal says it is a loop
    (it said "which does not exist: make the folder it points to")."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "SegmentationClassAug").symlink_to("SegmentationClassAug")
    loop = r"is a broken link \(to 'SegmentationClassAug', a loop of links\)"
    with pytest.raises(FileNotFoundError, match=loop):
        sbd.build_trainaug(voc, ds)


def _add_name(voc, ds, name, cls):
    folder = name.rpartition("/")[0]
    if folder:
        (voc / "JPEGImages" / folder).mkdir(parents=True, exist_ok=True)
        (ds / "cls" / folder).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(voc / "JPEGImages" / "2008_000100.jpg", voc / "JPEGImages" / f"{name}.jpg")
    _write_mat(ds / "cls" / f"{name}.mat", _labels(cls, band=False))


def _aug_target(root, name):
    train = VOCSegmentation(root, "train", sbd=True)
    return set(train[train.names.index(name)]["target"].unique().tolist())


def test_overwrite_replaces_the_mask_of_a_name_in_a_subfolder(real_layout) -> None:
    """With ``--overwrite`` a staged mask in a subfolder replaces the existing one, at its own path (not at
    ``SegmentationClassAug/<basename>``, and not left behind in the staging folder)."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    _add_name(voc, ds, "sub/x", 7)
    (ds / "train.txt").write_text("\n".join([*SBD_TRAIN, "sub/x"]) + "\n")
    sbd.build_trainaug(voc, ds)
    assert _aug_target(root, "sub/x") == {0, 7}
    _write_mat(ds / "cls" / "sub" / "x.mat", _labels(9, band=False))  # new labels
    sbd.build_trainaug(voc, ds, overwrite=True)
    assert _aug_target(root, "sub/x") == {0, 9}
    assert not (voc / "SegmentationClassAug" / "x.png").exists()


def test_overwrite_makes_a_subfolder_the_existing_mask_folder_lacks(real_layout) -> None:
    """With ``--overwrite`` into a mask folder without the subfolder a new name needs, it is made."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    sbd.build_trainaug(voc, ds)
    _add_name(voc, ds, "sub/deeper/x", 5)
    (ds / "train.txt").write_text("\n".join([*SBD_TRAIN, "sub/deeper/x"]) + "\n")
    sbd.build_trainaug(voc, ds, overwrite=True)
    assert _aug_target(root, "sub/deeper/x") == {0, 5}


def test_the_unfinished_marker_moves_before_any_mask(real_layout, monkeypatch) -> None:
    """With ``--overwrite`` the unfinished marker goes in before any mask (a mask named '+x' sorts before
    ``.trainaug-unfinished``): a run stopped at its first mask leaves a layout the data set refuses."""
    root, ds = real_layout
    voc = root / "VOCdevkit" / "VOC2012"
    sbd.build_trainaug(voc, ds)
    _add_name(voc, ds, "+x", 6)
    (ds / "train.txt").write_text("\n".join([*SBD_TRAIN, "+x"]) + "\n")
    real_move, moved = sbd._move, []

    def interrupted(src, dst):
        moved.append(dst.name)
        if dst.suffix == ".png":
            raise KeyboardInterrupt
        real_move(src, dst)

    monkeypatch.setattr(sbd, "_move", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sbd.build_trainaug(voc, ds, overwrite=True)
    assert (voc / "SegmentationClassAug" / TRAINAUG_UNFINISHED).is_file(), moved


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_a_non_finite_double_label_is_named_as_non_integer(tmp_path: Path, value: float) -> None:
    """``inf`` equals its own rounding: without the finiteness check it reached the label check, whose
    ``int(inf)`` was an OverflowError traceback instead of a DataError naming the file."""
    seg = np.zeros((H, W))
    seg[0, 0] = value
    mat = tmp_path / "x.mat"
    scipy.io.savemat(mat, {"GTcls": {"Segmentation": seg}})
    with pytest.raises(
        DataError,
        match=rf"x\.mat' has no 2-D integer GTcls\.Segmentation: it is float64 "
        rf"with non-integer values: {value}",
    ):
        sbd.read_sbd_mask(mat)


@pytest.mark.parametrize("shape", [(0, 0), (1, 0)])
def test_an_empty_struct_array_is_a_data_error_naming_it(tmp_path: Path, shape: tuple[int, int]) -> None:
    """A struct array of no element is refused as one of any other count but 1 (``.item()`` of it was a
    ValueError traceback)."""
    mat = tmp_path / "x.mat"
    scipy.io.savemat(mat, {"GTcls": np.empty(shape, dtype=[("Segmentation", object)])})
    with pytest.raises(DataError, match="'GTcls' is a struct array of 0 elements: expected one struct"):
        sbd.read_sbd_mask(mat)


def test_a_negative_dimension_does_not_lower_the_element_count(tmp_path: Path, monkeypatch) -> None:
    """An array header claiming a negative dimension (a damaged or crafted file) counts no element: it must
    not subtract from the count, which then let a following ``GTcls`` of 65537 struct elements reach
    ``loadmat`` (which ``variable_names=['GTcls']`` makes skip the damaged array)."""
    fieldless = struct.pack("<Ii", 4 << 16 | 5, 2) + _mat_element(1, b"")
    data = (
        b"MATLAB 5.0 MAT-file".ljust(124)
        + b"\x00\x01IM"
        + _mat_array(1, (-1, 2**30), b"", b"junk")
        + _mat_array(2, (1, 2**16 + 1), fieldless, b"GTcls")
    )
    mat = tmp_path / "x.mat"
    mat.write_bytes(data)
    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **kw: pytest.fail("loadmat ran"))
    with pytest.raises(DataError, match="holds cell or struct arrays of 65537 elements or more in all"):
        sbd.read_sbd_mask(mat)


def test_the_byte_guard_stops_inflating_once_the_limit_is_passed(tmp_path: Path, monkeypatch) -> None:
    """A decompression bomb is inflated only until its unpacked bytes pass the limit (16 bytes a pixel of
    max_pixels + 1 MiB), plus at most one piece of 1 MiB: not on to twice the limit, nor whole."""
    import zlib

    mat = tmp_path / "x.mat"
    scipy.io.savemat(mat, {"GTcls": {"Segmentation": np.zeros((8192, 8192), np.uint8)}}, do_compression=True)
    real, inflated = zlib.decompressobj, [0]

    class Counting:
        def __init__(self) -> None:
            self.inner = real()

        @property
        def unconsumed_tail(self) -> bytes:
            return self.inner.unconsumed_tail

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self.inner.decompress(data, max_length)
            inflated[0] += len(out)
            return out

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    max_pixels = 2**20
    limit = 16 * max_pixels + 2**20
    with pytest.raises(DataError, match=rf"unpacks to more than {limit} bytes"):
        sbd.read_sbd_mask(mat, max_pixels=max_pixels)
    assert limit < inflated[0] <= limit + 2**20 + 64, inflated[0]


SMALL_VOC_TRAIN, SMALL_VOC_VAL, SMALL_SBD_TRAIN, SMALL_SBD_VAL = ["a1"], ["v1"], ["a1", "s1"], ["s2"]


@pytest.fixture
def small_layout(tmp_path: Path) -> tuple[Path, Path]:
    """A VOC 2012 folder and an SBD dataset folder of a few 12 x 16 images."""
    from PIL import Image

    from examples.voc_joint.data import voc_palette

    voc, ds = tmp_path / "VOC2012", tmp_path / "dataset"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    (ds / "cls").mkdir(parents=True)
    labels = np.zeros((H, W), np.uint8)
    labels[3:9, 4:12] = 2
    for name in {*SMALL_VOC_TRAIN, *SMALL_VOC_VAL, *SMALL_SBD_TRAIN, *SMALL_SBD_VAL}:
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
    for name in SMALL_VOC_TRAIN + SMALL_VOC_VAL:
        im = Image.fromarray(labels, mode="P")
        im.putpalette(voc_palette())
        im.save(voc / "SegmentationClass" / f"{name}.png")
    for name in SMALL_SBD_TRAIN + SMALL_SBD_VAL:
        scipy.io.savemat(ds / "cls" / f"{name}.mat", {"GTcls": {"Segmentation": labels}})
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(f"{n}\n" for n in SMALL_VOC_TRAIN))
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{n}\n" for n in SMALL_VOC_VAL))
    (ds / "train.txt").write_text("".join(f"{n}\n" for n in SMALL_SBD_TRAIN))
    (ds / "val.txt").write_text("".join(f"{n}\n" for n in SMALL_SBD_VAL))
    return voc, ds


def test_a_voc_mask_of_another_size_gets_the_voc_readers_message(small_layout: tuple[Path, Path]) -> None:
    """A VOC mask whose size differs from its image is named as a mask file (as the data set names it), not
    as an SBD label file with SBD's advice."""
    from PIL import Image

    voc, ds = small_layout
    Image.fromarray(np.zeros((H, W + 1), np.uint8), mode="L").save(voc / "SegmentationClass" / "v1.png")
    with pytest.raises(DataError) as info:
        sbd.build_trainaug(voc, ds)
    text = str(info.value)
    assert "mask file '" in text and "v1.png' is 12x17 (HxW) but its image" in text, text
    assert "SBD label file" not in text and "benchmark.tgz" not in text, text
