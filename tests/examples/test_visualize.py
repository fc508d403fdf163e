"""PNG panels: tiles, colours, contours, errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchvision")

from PIL import Image

from examples.voc_joint.data import voc_palette
from examples.voc_joint.visualize import (
    colorize,
    make_panel,
    overlay_contours,
    save_panel,
    superpixel_contours,
)


def test_colorize_uses_voc_palette():
    lab = torch.tensor([[0, 1, 15], [20, 255, 2]])
    rgb = colorize(lab)
    pal = voc_palette()
    for (y, x), v in np.ndenumerate(lab.numpy()):
        assert tuple(rgb[y, x]) == tuple(pal[3 * v : 3 * v + 3])
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        colorize(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="0, 255"):
        colorize(torch.tensor([[300]]))


def test_contours_and_overlay():
    sp = torch.tensor([[0, 0, 1], [0, 0, 1], [2, 2, 2]])
    edge = superpixel_contours(sp)
    assert edge.tolist() == [[False, True, False], [True, True, True], [False, False, False]]
    img = overlay_contours(torch.zeros(3, 3, 3), sp, color=(1, 2, 3))
    assert img.dtype == np.uint8 and img.shape == (3, 3, 3)
    assert (img[edge] == (1, 2, 3)).all() and (img[~edge] == 0).all()
    assert (overlay_contours(torch.ones(3, 3, 3), None) == 255).all()
    with pytest.raises(ValueError, match="differ in size"):
        overlay_contours(torch.zeros(3, 3, 3), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        overlay_contours(torch.zeros(4, 3, 3), None)


def test_panel_layout(tmp_path):
    h, w = 20, 30
    target = torch.zeros(h, w, dtype=torch.long)
    target[5:15, 5:20] = 15
    target[4, 5:20] = 255
    base = torch.zeros_like(target)
    joint = target.clamp(max=20)
    sp = (torch.arange(h)[:, None] // 5) * 10 + torch.arange(w)[None] // 5
    path = save_panel(tmp_path / "sub" / "p.png", torch.rand(3, h, w), target, base, joint, sp, min_height=40)
    with Image.open(path) as im:
        assert im.mode == "RGB"
        arr = np.asarray(im)
    factor = 2  # 20 px -> 40 px
    tw = w * factor
    assert arr.shape[1] == 4 * tw + 3 * 4
    title_h = 14
    gt_tile = arr[title_h : title_h + h * factor, tw + 4 : 2 * tw + 4]
    assert np.array_equal(gt_tile, np.repeat(np.repeat(colorize(target), 2, 0), 2, 1))
    base_tile = arr[title_h : title_h + h * factor, 2 * (tw + 4) : 2 * (tw + 4) + tw]
    assert (base_tile == 0).all()
    # legend strip exists below the tiles
    assert arr.shape[0] > title_h + h * factor


def test_panel_blank_tiles_and_errors():
    target = torch.zeros(8, 8, dtype=torch.long)
    im = make_panel(torch.rand(3, 8, 8), target, None, None, legend=False, min_height=8)
    arr = np.asarray(im)
    assert arr.shape == (14 + 8, 4 * 8 + 12, 3)
    assert (arr[14:, 2 * 12 : 2 * 12 + 8] == 255).all()
    with pytest.raises(ValueError, match="8x8"):
        make_panel(torch.rand(3, 8, 8), torch.zeros(7, 8, dtype=torch.long), None, None)


def test_a_prediction_without_map_or_title_has_no_tile():
    """A seg checkpoint's panel (``evaluate.py``: the joint map None, its title empty) was laid out for four
    tiles, its right quarter blank and untitled; the docs show "image | ground truth | seg". Without a map
    and a title the tile is left out; a blank tile with a title stays (a missing baseline)."""
    target = torch.zeros(8, 8, dtype=torch.long)
    pred = torch.ones(8, 8, dtype=torch.long)
    titles = ("image", "ground truth", "seg", "")
    arr = np.asarray(
        make_panel(torch.rand(3, 8, 8), target, pred, None, titles=titles, legend=False, min_height=8)
    )
    assert arr.shape[1] == 3 * 8 + 2 * 4
    assert np.array_equal(arr[14 : 14 + 8, 2 * 12 : 2 * 12 + 8], colorize(pred.numpy()))
    blank = make_panel(torch.rand(3, 8, 8), target, None, pred, legend=False, min_height=8)
    assert np.asarray(blank).shape[1] == 4 * 8 + 3 * 4


def test_colorize_refuses_negative_labels():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 255\], got range \[-1, 3\]"):
        colorize(torch.tensor([[-1, 3]]))


def test_float_images_are_rounded_to_the_nearest_uint8():
    img = overlay_contours(torch.full((3, 2, 2), 0.5), None)
    assert (img == 128).all()  # 127.5 rounds up
    img = overlay_contours(torch.full((3, 2, 2), 0.999), None)
    assert (img == 255).all()


def test_tiles_are_upscaled_to_at_least_min_height():
    target = torch.zeros(20, 10, dtype=torch.long)
    arr = np.asarray(make_panel(torch.rand(3, 20, 10), target, None, None, min_height=50, legend=False))
    assert arr.shape[:2] == (14 + 60, 4 * 30 + 3 * 4)  # factor 3: 60 >= 50 px


def test_no_legend_for_ignored_pixels_only():
    ignored = torch.full((8, 8), 255, dtype=torch.long)
    arr = np.asarray(make_panel(torch.rand(3, 8, 8), ignored, ignored, None, min_height=8))
    assert arr.shape[0] == 14 + 8  # no class to name: no legend strip
    arr = np.asarray(make_panel(torch.rand(3, 8, 8), ignored.clamp(max=3), None, None, min_height=8))
    assert arr.shape[0] > 14 + 8


def _ink_rows(arr: np.ndarray, top: int, bottom: int) -> np.ndarray:
    """The rows between ``top`` and ``bottom`` with dark (text) pixels."""
    return np.nonzero((arr[top:bottom].min(axis=2) < 128).any(axis=1))[0] + top


def test_titles_grow_with_the_tiles_and_stay_in_their_tile():
    """The demo's 256-pixel tiles (a 1036-pixel panel, shown about 800 wide in the docs) get titles at
    least 13 pixels tall, not Pillow's 10-pixel bitmap font; the longest demo title stays inside its tile."""
    titles = (
        "image + superpixels",
        "ground truth",
        "baseline (pretrained)",
        "joint (transparent init, fine-tuned)",
    )
    target = torch.zeros(96, 128, dtype=torch.long)
    arr = np.asarray(make_panel(torch.rand(3, 96, 128), target, target, target, titles=titles, legend=False))
    tile_top = arr.shape[0] - 192  # 96 px tiles upscaled twice
    ink = _ink_rows(arr, 0, tile_top)
    assert ink.max() - ink.min() + 1 >= 13
    columns = np.nonzero((arr[:tile_top, :].min(axis=2) < 128).any(axis=0))[0]
    for i in range(4):  # each title's ink lies over its own tile, not in the gap or the next tile
        inside = columns[(columns >= i * 260) & (columns < i * 260 + 260)]
        assert inside.size and inside.max() < i * 260 + 256, titles[i]


def test_legend_wraps_instead_of_running_off_the_panel():
    """All 21 classes on small tiles: every legend entry lies inside the panel, on as many rows as needed."""
    target = (torch.arange(21).repeat_interleave(3)[None].expand(16, -1) % 21).clone()  # 16 x 63
    im = make_panel(torch.rand(3, 16, 63), target, None, None, min_height=16)
    arr = np.asarray(im)
    tiles_end = 14 + 16
    legend = arr[tiles_end:]
    assert legend.shape[0] >= 2 * 14  # wrapped: two rows or more
    dark = np.nonzero((legend.min(axis=2) < 128).any(axis=0))[0]
    assert dark.max() < arr.shape[1] - 1  # nothing cut at the right edge
    # every class swatch is drawn: its palette colour appears in the legend strip
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    for c in range(21):
        if c == 0:
            continue  # black: the outline colour too
        assert (legend == palette[c]).all(axis=2).any(), c


def test_legend_names_come_from_class_names(monkeypatch):
    """The legend named every class by its VOC name, also for a model of 3 classes whose metrics call them
    '0', '1', '2'; with ``class_names`` it uses those (a class beyond them shown as its number)."""
    from PIL import ImageDraw

    drawn: list[str] = []
    text = ImageDraw.ImageDraw.text
    monkeypatch.setattr(
        ImageDraw.ImageDraw,
        "text",
        lambda self, xy, s, *a, **k: (drawn.append(s), text(self, xy, s, *a, **k)),
    )
    target = torch.tensor([[0, 1], [2, 3]])
    make_panel(torch.rand(3, 2, 2), target, None, None, titles=("", "", "", ""), class_names=("0", "1", "2"))
    assert [s for s in drawn if s] == ["0", "1", "2", "3"]
    drawn.clear()
    make_panel(torch.rand(3, 2, 2), target, None, None, titles=("", "", "", ""))
    assert [s for s in drawn if s] == ["background", "aeroplane", "bicycle", "bird"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1.7])
def test_colorize_refuses_float_labels_that_are_not_class_indices(value):
    """A NaN label was an IndexError ("index -9223372036854775808 is out of bounds"), 1.7 was drawn as class
    1: a float map must hold whole numbers (2.0 is class 2)."""
    with pytest.raises(ValueError, match=r"in \[0, 255\], got 1 value that is not a whole number, e\.g\. "):
        colorize(np.array([[value, 2.0]]))
    with pytest.raises(ValueError, match=r"got 2 values that are not whole numbers, e\.g\. "):
        colorize(np.array([[value, 0.5]]))
    assert tuple(colorize(np.array([[2.0]]))[0, 0]) == tuple(voc_palette()[6:9])
    with pytest.raises(ValueError, match="got dtype complex128"):
        colorize(np.array([[1 + 1j]]))


@pytest.mark.parametrize("shape", [(3, 0, 5), (3, 5, 0)])
def test_an_empty_image_is_refused(shape):
    """An image of height 0 was a ZeroDivisionError, one of width 0 a panel of four empty tiles."""
    with pytest.raises(ValueError, match=r"image must have shape \[3, H, W\] with H, W >= 1, got \(3, "):
        make_panel(torch.rand(*shape), torch.zeros(shape[1:], dtype=torch.long), None, None)


def test_a_nan_or_integer_image_is_refused():
    """A NaN pixel was cast to an arbitrary byte (black, with numpy's "invalid value" warning); an int64
    image of 0..255 was clipped to [0, 1] and drawn white: both misleading tiles."""
    img = torch.rand(3, 4, 4)
    img[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"image must be float in \[0, 1\] or uint8, got 1 NaN value"):
        overlay_contours(img, None)
    with pytest.raises(ValueError, match="got dtype int64"):
        overlay_contours(torch.full((3, 2, 2), 128), None)
    assert (overlay_contours(torch.full((3, 2, 2), 128, dtype=torch.uint8), None) == 128).all()


@pytest.mark.parametrize("titles", [("a", "b", "c"), ("a", "b", "c", "d", "e"), "abcd"])
def test_titles_must_be_four(titles):
    """Three or five titles were zip()'s "argument 2 is shorter than argument 1"; a string of four letters
    was four one-letter titles."""
    with pytest.raises(ValueError, match="titles must be four tile titles, got"):
        make_panel(torch.rand(3, 4, 4), torch.zeros(4, 4, dtype=torch.long), None, None, titles=titles)


def test_a_thin_image_is_not_upscaled_into_a_huge_panel():
    """A 2 x 1000 image was upscaled 80 times for ``min_height=160``: a 320012-pixel-wide panel and 1.1 GB
    while drawing. The upscaling stops before a tile is wider than 1024 pixels."""
    target = torch.zeros(2, 1000, dtype=torch.long)
    assert make_panel(torch.rand(3, 2, 1000), target, None, None, legend=False).size[0] == 4 * 1000 + 12
    target = torch.zeros(2, 300, dtype=torch.long)
    assert make_panel(torch.rand(3, 2, 300), target, None, None, legend=False).size[0] == 4 * 900 + 12
    target = torch.zeros(1, 1, dtype=torch.long)
    assert make_panel(torch.rand(3, 1, 1), target, None, None, legend=False).size[0] == 4 * 160 + 12


def test_titles_of_narrow_tiles_stay_in_their_tile():
    """On 8-pixel tiles (a tall thin image) the titles at the smallest font ran over the gap into the next
    tile's title; each is now cut at its tile's edge, and the gaps stay blank."""
    h, w = 300, 8
    arr = np.asarray(
        make_panel(torch.rand(3, h, w), torch.zeros(h, w, dtype=torch.long), None, None, legend=False)
    )
    title_h = arr.shape[0] - h
    ink = (arr[:title_h].min(axis=2) < 128).any(axis=0)
    for i in range(3):
        assert not ink[i * (w + 4) + w : (i + 1) * (w + 4)].any(), i  # the gap after tile i
    assert ink[:w].any()


def _cut_png_writer(monkeypatch):
    """PIL's PNG encoder replaced by one that writes the start of a PNG, then fails as on a full disk."""
    import errno

    Image.init()

    def cut(im, fp, filename, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(Image.SAVE, "PNG", cut)


def test_a_failed_save_leaves_the_earlier_panel_and_no_temporary_file(tmp_path, monkeypatch):
    """save_panel wrote in place (PIL's save): a full disk while it rewrote a panel left a cut PNG where the
    earlier one was. It writes a temporary file renamed into place; and as PNG whatever the file name says
    (a name without a suffix was "unknown file extension", ``.jpg`` a JPEG)."""
    args = (torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.long), None, None)
    path = save_panel(tmp_path / "p.png", *args)
    before = path.read_bytes()
    with monkeypatch.context() as m:
        _cut_png_writer(m)
        with pytest.raises(OSError, match="No space left"):
            save_panel(path, *args)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
    for name in ("panel", "panel.jpg"):
        with Image.open(save_panel(tmp_path / name, *args)) as im:
            assert im.format == "PNG"


@pytest.mark.parametrize("which", ["target", "baseline", "joint"])
def test_a_bad_label_map_is_named(which):
    """A label map of the wrong size or with a value outside [0, 255] was "label maps must be 8x8 like the
    image" / "labels must lie in [0, 255]" without saying which of the three maps was wrong."""
    maps = {"target": torch.zeros(8, 8, dtype=torch.long), "baseline": None, "joint": None}
    image = torch.zeros(3, 8, 8)
    with pytest.raises(ValueError, match=rf"^{which}: label maps must be 8x8 like the image, got \(7, 8\)$"):
        make_panel(image, **{**maps, which: torch.zeros(7, 8, dtype=torch.long)})
    bad = torch.zeros(8, 8, dtype=torch.long)
    bad[0, 0] = 300
    with pytest.raises(ValueError, match=rf"^{which}: labels must lie in \[0, 255\], got range \[0, 300\]$"):
        make_panel(image, **{**maps, which: bad})


def test_a_legend_entry_wider_than_narrow_tiles_widens_the_panel():
    """On the 8-pixel tiles of a 300 x 8 image (a 44-pixel panel) every legend name was cut at the panel's
    right edge ("backgr"): an entry wider than the tiles cannot wrap, so the panel is widened to hold it;
    the tiles keep their place and width."""
    from PIL import ImageDraw

    from examples.voc_joint.visualize import _title_font

    h, w = 300, 8
    target = torch.zeros(h, w, dtype=torch.long)
    target[100:] = 15  # person
    arr = np.asarray(make_panel(torch.zeros(3, h, w), target, target, None))
    font, px = _title_font(("image + superpixels", "ground truth", "baseline", "joint"), w)
    text = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength("background", font=font)
    assert arr.shape[1] >= 2 + px + 2 + text  # swatch and name inside the panel
    title_h = px + 4
    assert np.array_equal(arr[title_h : title_h + h, w + 4 : 2 * w + 4], colorize(target))
    assert (arr[title_h : title_h + h, 4 * w + 12 :] == 255).all()  # white right of the tiles
    legend = arr[title_h + h :]
    dark = np.nonzero((legend.min(axis=2) < 128).any(axis=0))[0]
    assert dark.max() < arr.shape[1] - 1  # nothing cut at the right edge


def test_colorize_takes_label_255_refuses_256_and_keeps_an_empty_map():
    """255 (ignore) is the last palette entry, 256 is named as out of range (not an IndexError); an empty
    map is an empty image, not numpy's "zero-size array to reduction operation"."""
    assert tuple(colorize(torch.tensor([[255]]))[0, 0]) == tuple(voc_palette()[765:768])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 255\], got range \[0, 256\]"):
        colorize(torch.tensor([[0, 256]]))
    assert colorize(np.zeros((0, 5), dtype=np.int64)).shape == (0, 5, 3)


def test_float_images_out_of_range_are_clipped_not_wrapped():
    """An image a little outside [0, 1] (after resampling) is clipped: 1.5 is white and -0.5 black, not the
    wrapped bytes 126 and 129."""
    img = torch.tensor([1.5, -0.5]).view(1, 1, 2).expand(3, 1, 2)
    assert overlay_contours(img, None)[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_title_font_is_a_16th_of_the_tile_and_shrinks_until_the_title_fits_with_its_margins():
    """The module's rule: a 16th of the tile width within 10..18 pixels, smaller until each title fits its
    tile less its 2-pixel margins (this title is 255 pixels wide at 16 pixels: too wide for a 256 tile)."""
    from PIL import ImageDraw

    from examples.voc_joint.visualize import _title_font

    assert [_title_font(("a",) * 4, tw)[1] for tw in (100, 176, 200, 288, 400)] == [10, 11, 12, 18, 18]
    title = "ground truth ground truth ground tr"
    font, px = _title_font((title, "a", "b", "c"), 256)
    assert px < 16
    assert ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=font) <= 256 - 4


def test_legend_rows_are_exactly_as_many_as_needed():
    """Entries wider than the (8-pixel) tiles each take a row, the first one included (no empty first
    row); the strip is one title height plus 2 pixels per row."""
    from examples.voc_joint.visualize import _title_font

    h, w = 300, 8
    target = torch.zeros(h, w, dtype=torch.long)
    target[100:] = 15  # background and person: two entries, each wider than the 44-pixel panel
    arr = np.asarray(make_panel(torch.zeros(3, h, w), target, None, None))
    px = _title_font(("image + superpixels", "ground truth", "baseline", "joint"), w)[1]
    title_h = px + 4
    assert arr.shape[0] == title_h + h + 2 * (title_h + 2)
    legend = arr[title_h + h :]
    ink = (legend.min(axis=2) < 128).any(axis=1)
    assert ink[: title_h + 2].any() and ink[title_h + 2 :].any()  # one entry on each row


def test_legend_swatch_has_its_class_colour():
    """The one entry of a map of class 15 (person) is drawn in person's colour, not a neighbour's."""
    target = torch.full((16, 16), 15, dtype=torch.long)
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    legend = np.asarray(make_panel(torch.zeros(3, 16, 16), target, None, None, min_height=16))[-14:]
    assert (legend == palette[15]).all(axis=2).any()
    assert not (legend == palette[16]).all(axis=2).any() and not (legend == palette[14]).all(axis=2).any()


@pytest.mark.parametrize("width", [160, 288, 500])
def test_title_descenders_are_inside_the_title_strip(width):
    """At the largest font (18 px, tiles 288 px wide and more: every full-size VOC image) the strip was
    ``px + 4`` = 22 rows high and cut the bottoms of g, p and j; it is as high as the font's descenders now,
    and the titles' ink ends above the first row of the tiles."""
    titles = ("image + superpixels", "ground truth", "gjpqy", "joint")
    target = torch.zeros(40, width, dtype=torch.long)
    arr = np.asarray(
        make_panel(
            torch.ones(3, 40, width), target, target, target, titles=titles, legend=False, min_height=40
        )
    )
    tile_top = arr.shape[0] - 40
    ink = _ink_rows(arr, 0, tile_top)
    assert ink.size and ink.max() < tile_top - 1  # one clear row at least between the ink and the tiles
    # the ink the font has below the baseline is all there: the bottom row of ink is the font's descent
    from PIL import Image, ImageDraw

    from examples.voc_joint.visualize import _title_font

    font, _px = _title_font(titles, width)
    bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((2, 1), "gjpqy", font=font)[3]
    assert ink.max() >= bottom - 2


def test_contours_ignore_a_diagonal_only_neighbour() -> None:
    """Contours are drawn against the right and lower neighbours only (4-neighbourhood, 1-px lines): a pixel
    whose only differing neighbour is diagonal is not a contour pixel."""
    sp = np.array([[0, 0], [0, 1]])
    assert superpixel_contours(sp).tolist() == [[False, True], [True, False]]
    sp = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1]])
    assert superpixel_contours(sp).tolist() == [
        [False, False, False],
        [False, False, True],
        [False, True, False],
    ]


def test_default_contours_are_yellow() -> None:
    """The contours are drawn in the module's yellow, (255, 230, 0), unless another colour is given."""
    sp = torch.tensor([[0, 1], [0, 1]])
    img = overlay_contours(torch.zeros(3, 2, 2), sp)
    assert img[0, 0].tolist() == [255, 230, 0] and img[0, 1].tolist() == [0, 0, 0]


def test_an_image_wider_than_the_upscaling_limit_keeps_its_size() -> None:
    """An image wider than 1024 pixels is not upscaled, nor shrunk: its tiles keep its own size."""
    h, w = 2, 1100
    target = torch.zeros(h, w, dtype=torch.long)
    arr = np.asarray(make_panel(torch.rand(3, h, w), target, None, None, legend=False))
    assert arr.shape[1] == 4 * w + 3 * 4 and arr.shape[0] > h
    assert (arr[-h:, w + 4 : 2 * w + 4] == arr[-1, w + 4]).all()  # the ground truth tile, all background


def test_colorize_draws_a_bool_mask_as_classes_0_and_1() -> None:
    """A bool map (a binary mask) is a map of classes 0 and 1, drawn in their VOC colours, not refused."""
    rgb = colorize(np.array([[True, False]]))
    assert rgb.tolist() == [[list(voc_palette()[3:6]), list(voc_palette()[0:3])]]


def test_overlay_leaves_the_callers_image_unchanged() -> None:
    """The contours are drawn on a copy: a uint8 image that is a [3, H, W] view of an [H, W, 3] array (a PIL
    image's pixels permuted into a tensor) keeps its pixels."""
    hwc = np.zeros((2, 2, 3), dtype=np.uint8)
    sp = np.array([[0, 1], [0, 1]])
    out = overlay_contours(hwc.transpose(2, 0, 1), sp)
    assert out[0, 0].tolist() == [255, 230, 0] and (hwc == 0).all()
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    overlay_contours(chw, sp)
    assert (chw == 0).all()


def test_save_panel_whose_rename_fails_leaves_the_earlier_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PNG reaches ``path`` only through the atomic rename: a save whose rename fails (a full disk) raises
    naming the panel and leaves the earlier file byte for byte and no temporary file."""
    import errno

    from examples.voc_joint import atomic

    args = (torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.long), None, None)
    path = save_panel(tmp_path / "p.png", *args)
    before = path.read_bytes()

    def replace(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(path))}: No space left"):
        save_panel(path, torch.ones(3, 4, 4), torch.ones(4, 4, dtype=torch.long), None, None)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
