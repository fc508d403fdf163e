"""The header pass (examples/voc_joint/headers.py): every listed file's header read before a run, every
problem named at once, with the reader's own rules and messages."""

from __future__ import annotations

import shutil
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchvision")

from PIL import Image

from examples.voc_joint import headers, train, train_data, train_options
from examples.voc_joint.data import DataError, VOCSegmentation
from examples.voc_joint.distributed import DistInfo

from .helpers import train_args


def _names(root: Path, split: str = "train") -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def _image(root: Path, name: str) -> Path:
    return root / "JPEGImages" / f"{name}.jpg"


def _mask(root: Path, name: str) -> Path:
    return root / "SegmentationClass" / f"{name}.png"


def _small_mask(root: Path, name: str) -> Path:
    Image.new("L", (40, 30)).save(_mask(root, name))  # the images are 44x36
    return _mask(root, name)


def _rgb_mask(root: Path, name: str) -> Path:
    Image.open(_mask(root, name)).convert("RGB").save(_mask(root, name))
    return _mask(root, name)


def _jpeg_mask(root: Path, name: str) -> Path:
    Image.open(_mask(root, name)).convert("L").save(_mask(root, name), format="JPEG")
    return _mask(root, name)


def _float_image(root: Path, name: str) -> Path:
    Image.fromarray(np.zeros((36, 44), np.float32)).save(_image(root, name), format="TIFF")  # mode "F"
    return _image(root, name)


def _empty_mask(root: Path, name: str) -> Path:
    _mask(root, name).write_bytes(b"")
    return _mask(root, name)


def _cut_image(root: Path, name: str) -> Path:
    path = _image(root, name)
    path.write_bytes(path.read_bytes()[:12])  # the header cut: PIL cannot identify it
    return path


BREAKS: dict[str, Callable[[Path, str], Path]] = {
    "mask of another size": _small_mask,
    "RGB mask": _rgb_mask,
    "JPEG mask": _jpeg_mask,
    "32-bit image": _float_image,
    "empty mask": _empty_mask,
    "truncated header": _cut_image,
}


@pytest.fixture
def voc(tiny_voc: Path, tmp_path: Path) -> Path:
    """A copy of the tiny set (4 train / 2 val images of 44x36) to damage."""
    return Path(shutil.copytree(tiny_voc, tmp_path / "voc"))


@pytest.mark.parametrize("kind", list(BREAKS))
def test_the_header_pass_gives_the_message_of_the_reader(voc, kind) -> None:
    """Each header rule lives in one place: the pass reports what reading the sample raises, word for word
    (the RGB mask's colour note, which needs the pixels, comes with the read only)."""
    name = _names(voc)[1]
    BREAKS[kind](voc, name)
    ds = VOCSegmentation(voc, "train")
    problems = ds.header_problems(1)
    with pytest.raises(DataError) as info:
        ds.load(1)
    assert len(problems) == 1, problems
    assert str(info.value).startswith(problems[0]), (problems, str(info.value))
    assert (str(info.value) == problems[0]) == (kind != "RGB mask")
    assert ds.header_problems(0) == []


def test_the_header_pass_names_every_problem_of_a_sample_and_the_missing_files(voc) -> None:
    name = _names(voc)[2]
    _float_image(voc, name)
    _jpeg_mask(voc, name)
    _mask(voc, _names(voc)[3]).unlink()
    ds = VOCSegmentation(voc, "train")
    two = ds.header_problems(2)
    assert len(two) == 2 and "PIL mode 'F'" in two[0] and "is a JPEG file" in two[1], two
    assert ds.header_problems(3) == [f"mask file not found: '{_mask(voc, _names(voc)[3])}'"]


def test_the_header_pass_decodes_no_pixel(voc, monkeypatch) -> None:
    """Only the headers are read: decoding (``Image.load``) never runs, even for a mask of another size."""
    _small_mask(voc, _names(voc)[0])
    ds = VOCSegmentation(voc, "train")

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError(f"pixels of {self.filename} decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    problems = headers.header_problems([ds])
    assert len(problems) == 1 and "is 30x40 (HxW) but its image" in problems[0], problems


def test_the_error_lists_the_first_problems_and_counts_the_others() -> None:
    problems = [f"file {i} is bad" for i in range(25)]
    text = headers.problems_message(problems, 50)
    lines = text.splitlines()
    assert lines[0].startswith("25 problems in the headers of the 50 listed images and masks"), text
    assert lines[1:21] == [f"  file {i} is bad" for i in range(20)] and lines[21:] == ["  ... and 5 more"]
    one_line = headers.problems_message(problems[:2], 4, one_line=True)
    assert "\n" not in one_line and one_line.endswith(": file 0 is bad; file 1 is bad"), one_line


def test_exactly_the_shown_number_of_problems_has_no_count_of_others() -> None:
    """``limit`` problems are all shown, with no "... and 0 more"; one problem is "1 problem", none "0
    problems"."""
    problems = [f"file {i} is bad" for i in range(3)]
    text = headers.problems_message(problems, 6, limit=3)
    assert text.splitlines()[1:] == [f"  file {i} is bad" for i in range(3)], text
    assert (
        headers.shown_problems(problems, limit=3, one_line=True)
        == " file 0 is bad; file 1 is bad; file 2 is bad"
    )
    assert headers.problems_message(problems[:1], 2).startswith("1 problem in the headers of the 2 listed")
    assert headers.problems_message([], 2).startswith("0 problems in the headers of the 2 listed")


def _stop_at_training(monkeypatch) -> list[str]:
    """Make train.run_stage record its stage instead of training: the checks before it run for real."""
    started: list[str] = []

    def run_stage(stage, *args, **kwargs):
        started.append(stage)
        return Path("unused")

    monkeypatch.setattr(train, "run_stage", run_stage)
    return started


def test_train_names_three_bad_files_at_once_before_any_step(voc, tmp_path, monkeypatch) -> None:
    """Three different bad files that exist (each found alone, when the sampler reached it): one error names
    all three, before any stage starts or any output folder is made."""
    started = _stop_at_training(monkeypatch)
    names = _names(voc)
    bad = [_small_mask(voc, names[0]), _rgb_mask(voc, names[1]), _float_image(voc, names[3])]
    argv = train_args(voc, tmp_path / "out", "--stage", "seg", "--max-steps", "1")
    with pytest.raises(DataError) as info:
        train.main(argv)
    text = str(info.value)
    assert text.startswith("3 problems in the headers of the 8 listed images and masks"), text
    for path in bad:
        assert f"'{path}'" in text, (path, text)
    assert started == [] and not (tmp_path / "out").exists()


def test_train_checks_the_eval_split_too(voc, tmp_path, monkeypatch) -> None:
    started = _stop_at_training(monkeypatch)
    bad = _jpeg_mask(voc, _names(voc, "val")[0])
    argv = train_args(voc, tmp_path / "out", "--stage", "seg", "--max-steps", "1", "--eval")
    with pytest.raises(DataError, match="1 problem in the headers of the 12 listed") as info:
        train.main(argv)
    assert f"'{bad}'" in str(info.value) and started == []


def test_a_clean_set_passes_and_the_duration_is_printed(tiny_voc, tmp_path, monkeypatch, capsys) -> None:
    started = _stop_at_training(monkeypatch)
    train.main(train_args(tiny_voc, tmp_path / "out", "--stage", "seg", "--max-steps", "1"))
    assert started == ["seg"]
    out = capsys.readouterr().out
    assert "[data] read the headers of 8 listed images and masks in " in out, out


def test_no_check_files_skips_the_pass(voc, tmp_path, monkeypatch, capsys) -> None:
    """--no-check-files: no header is read; the bad file is left to the reader (a missing file is still
    named before the run: that check costs no file opening)."""
    started = _stop_at_training(monkeypatch)
    _small_mask(voc, _names(voc)[0])

    def header_problems(self, index):
        raise AssertionError("a header was read")

    monkeypatch.setattr(VOCSegmentation, "header_problems", header_problems)
    train.main(train_args(voc, tmp_path / "out", "--stage", "seg", "--max-steps", "1", "--no-check-files"))
    assert started == ["seg"] and "read the headers" not in capsys.readouterr().out


def test_a_resumed_run_checks_the_headers_too(voc, tmp_path, monkeypatch) -> None:
    """--resume runs the same checks first (a file replaced since the run began is named before it goes on);
    --check-files is a run option: changing it on resume is no option change."""
    from examples.voc_joint.resume import RUNTIME_OPTIONS

    started = _stop_at_training(monkeypatch)
    _rgb_mask(voc, _names(voc)[2])
    argv = train_args(voc, tmp_path / "out", "--stage", "seg", "--max-steps", "1", "--resume")
    with pytest.raises(DataError, match="1 problem in the headers"):
        train.main(argv)
    assert started == [] and "check_files" in RUNTIME_OPTIONS


class _Rank(DistInfo):
    """A process of a two-process group whose broadcast gives ``main_value`` (rank 0's), not its own."""

    def __init__(self, rank: int, main_value: object) -> None:
        super().__init__(rank=rank, world_size=2)
        self.main_value = main_value

    def from_main(self, obj: object) -> object:
        assert (obj is None) == (self.rank != 0)  # other ranks send nothing
        return obj if self.rank == 0 else self.main_value


def test_under_ddp_only_rank_0_reads_the_headers(voc, monkeypatch) -> None:
    """Rank 0 reads the headers; every other process waits for its verdict and raises the same error."""
    _small_mask(voc, _names(voc)[0])
    ds = VOCSegmentation(voc, "train")
    args = train_options.build_parser().parse_args(["--no-progress"])
    with pytest.raises(DataError) as info:
        train_data._check_headers([ds], args, _Rank(0, None))
    message = str(info.value)
    monkeypatch.setattr(VOCSegmentation, "header_problems", lambda self, i: pytest.fail("rank 1 read"))
    with pytest.raises(DataError) as other:
        train_data._check_headers([ds], args, _Rank(1, message))
    assert str(other.value) == message
    train_data._check_headers([ds], args, _Rank(1, None))  # rank 0 found nothing


def test_the_progress_bar_follows_no_progress(tiny_voc, monkeypatch) -> None:
    """A tqdm bar over the files, shown once the pass has taken 2 s; without ``progress`` tqdm is not even
    imported."""
    ds = VOCSegmentation(tiny_voc, "train")
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # importing it fails
    assert headers.check_headers([ds], prefix=None) >= 0
    with pytest.raises(ImportError):
        headers.check_headers([ds], progress=True, prefix=None)
    bars: list[dict] = []

    class Bar:
        def __init__(self, **kwargs) -> None:
            self.state = {**kwargs, "done": 0, "closed": False}
            bars.append(self.state)

        def update(self, n: int) -> None:
            self.state["done"] += n

        def close(self) -> None:
            self.state["closed"] = True

    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=Bar))
    headers.check_headers([ds], progress=True, prefix=None)
    assert len(bars) == 1 and bars[0]["total"] == bars[0]["done"] == 2 * len(ds) and bars[0]["closed"]
    assert bars[0]["delay"] == 2.0 and bars[0]["unit"] == "file"


def test_a_listed_pair_is_read_once_across_splits(tiny_voc, monkeypatch) -> None:
    calls: list[int] = []
    original = VOCSegmentation.header_problems

    def count(self, index):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(VOCSegmentation, "header_problems", count)
    ds = VOCSegmentation(tiny_voc, "train")
    assert headers.header_problems([ds, VOCSegmentation(tiny_voc, "train")]) == []
    assert sorted(calls) == list(range(len(ds)))


def test_a_pair_listed_by_two_splits_is_counted_once(tiny_voc, capsys) -> None:
    """The number of files the pass reports is that of the files it read: a pair listed by two splits (a
    validation split that repeats training images) counts once."""
    ds = VOCSegmentation(tiny_voc, "train")
    headers.check_headers([ds, VOCSegmentation(tiny_voc, "train")], prefix="data")
    out = capsys.readouterr().out
    assert f"[data] read the headers of {2 * len(ds)} listed images and masks in " in out, out


def test_check_headers_returns_the_duration_it_prints(tiny_voc, monkeypatch, capsys) -> None:
    ticks = iter([10.0, 12.5])
    monkeypatch.setattr(headers, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks)))
    assert headers.check_headers([VOCSegmentation(tiny_voc, "val")], prefix="data") == 2.5
    assert capsys.readouterr().out.endswith(" in 2.5 s\n")


def test_the_reader_still_refuses_a_mask_of_another_size_with_the_exif_note(voc) -> None:
    """The shared size rule keeps the EXIF note: a mask of the transposed size of an image shown rotated."""
    name = _names(voc)[0]
    image = Image.open(_image(voc, name)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(_image(voc, name), exif=exif)
    Image.new("L", (36, 44)).save(_mask(voc, name))
    ds = VOCSegmentation(voc, "train")
    (problem,) = ds.header_problems(0)
    assert "is 44x36 (HxW) but its image" in problem and "EXIF orientation 6" in problem, problem


def test_an_image_listed_with_two_masks_has_both_masks_checked(tiny_voc, tmp_path):
    """The pass reads each (image, mask) pair once, not each image: the same image listed with a mask of
    another folder (``mask_dir``) has that mask checked too."""
    voc = Path(shutil.copytree(tiny_voc, tmp_path / "voc"))
    other = voc / "OtherMasks"
    shutil.copytree(voc / "SegmentationClass", other)
    name = _names(voc)[0]
    Image.new("L", (40, 30)).save(other / f"{name}.png")  # the images are 44x36
    datasets = [VOCSegmentation(voc, "train"), VOCSegmentation(voc, "train", mask_dir="OtherMasks")]
    problems = headers.header_problems(datasets)
    assert len(problems) == 1 and str(other / f"{name}.png") in problems[0], problems


def test_an_empty_prefix_still_prints_the_duration(tiny_voc, capsys):
    """Only ``prefix=None`` leaves the line out (documented: "None: no line")."""
    headers.check_headers([VOCSegmentation(tiny_voc, "val")], prefix="")
    assert capsys.readouterr().out.startswith("[] read the headers of 4 listed images and masks in ")
