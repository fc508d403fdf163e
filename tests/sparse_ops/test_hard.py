"""hard_superpixels and enforce_connectivity: loop references, tie-breaking, connectivity properties."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from sparse_ops import enforce_connectivity, grid_cell_ids, hard_superpixels, num_grid_cells, uniformize
from tests.hypothesis_budget import budget
from tests.op_tester import Case, OpTester
from tests.sparse_ops._soft_reference import candidates

TIE_ORDER = (4, 0, 1, 2, 3, 5, 6, 7, 8)


def ref_hard(assoc: torch.Tensor, S: int) -> torch.Tensor:
    B, _, H, W = assoc.shape
    n_w = -(-W // S)
    out = torch.empty(B, H, W, dtype=torch.long)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                cands = {k: (i, j) for k, i, j, ok in candidates(y, x, H, W, S) if ok}
                best = None
                for k in TIE_ORDER:  # strict ">" keeps the first in tie order
                    if k in cands and (best is None or assoc[b, k, y, x] > assoc[b, best, y, x]):
                        best = k
                i, j = cands[best]
                out[b, y, x] = i * n_w + j
    return out


class TestHardSuperpixels(OpTester):
    differentiable = False
    half_precision = False  # an arg-max: ties may differ once rounded
    errors = [  # noqa: RUF012  (a table read by the base class)
        ({0: lambda a: a[:, :4]}, ValueError, "assoc must have 9 channels"),
        (
            {0: lambda a: a.index_fill(1, torch.tensor([0]), float("nan"))},
            ValueError,
            "assoc must not contain NaN",
        ),
        ({1: 0}, ValueError, "cell_size must be >= 1"),
        ({"min_size": 0, "connectivity": True}, ValueError, "min_size must be >= 1, got 0"),
    ]

    def op(self, *args: Any, **kwargs: Any) -> Any:
        return hard_superpixels(*args, **kwargs)

    def reference(self, assoc: torch.Tensor, s: int, **_: Any) -> torch.Tensor:
        return ref_hard(assoc, s)

    def draw_case(self, data: st.DataObject, dtype: torch.dtype) -> Case:
        b, h, w = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12))
        levels = data.draw(st.sampled_from([2, 3, 1000]))  # few levels: many ties
        g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
        a = torch.randint(0, levels, (b, 9, h, w), generator=g).to(dtype)
        return Case((a, data.draw(st.integers(1, 5))))

    def small_case(self, dtype: torch.dtype = torch.float64, device: Any = "cpu") -> Case:
        a = torch.randint(0, 3, (3, 9, 5, 7), generator=torch.Generator().manual_seed(0)).to(dtype)
        return Case((a, 3)).map(lambda t: t.to(device))


def test_uniform_assoc_gives_the_grid(device: torch.device) -> None:
    a = torch.full((2, 9, 7, 10), 1 / 9, device=device)
    out, k = hard_superpixels(a, 3, return_counts=True)
    assert torch.equal(out, grid_cell_ids(7, 10, 3, batch_size=2, device=device))
    assert k.tolist() == [num_grid_cells(7, 10, 3)] * 2


def test_vmap_over_associations_equals_the_loop() -> None:
    """``torch.func.vmap`` over a leading dim of the association (validate=False: no value read) gives the
    labels of a loop; the in-place arg-max (``out=``, which vmap has no rule for) is not used there."""
    g = torch.Generator().manual_seed(0)
    qs = torch.softmax(torch.randn(3, 2, 9, 10, 13, generator=g), 2)
    fn = lambda q: hard_superpixels(q, 4, validate=False)  # noqa: E731
    assert torch.equal(torch.func.vmap(fn)(qs), torch.stack([fn(q) for q in qs]))


def test_an_assoc_that_requires_grad_records_no_graph() -> None:
    """The labels are integers (no gradient): the NaN check on an association from a network in training
    records nothing either (it saved the association for a backward that never runs; under
    ``torch.autograd.graph.save_on_cpu`` a copy of it to the host on every call)."""
    assoc = torch.rand(2, 9, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    saved: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hard_superpixels(assoc, 4, connectivity=True)
    assert saved == []


def test_invalid_neighbours_never_chosen():
    a = torch.zeros(1, 9, 4, 4)
    a[:, 0] = 10.0  # everybody prefers top-left, which does not exist for the first row/column of cells
    out = hard_superpixels(a, 2)
    assert out[0, 0, 0] == 0 and out[0, 3, 3] == 0 and out[0, 0, 3] == 1 and out[0, 3, 0] == 2


# ------------------------------------------------------------------------------------------- connectivity
def _is_connected_contiguous(lab: np.ndarray) -> bool:
    k = lab.max() + 1
    if set(np.unique(lab).tolist()) != set(range(k)):
        return False
    return all(ndimage.label(lab == v)[1] == 1 for v in range(k))


@given(
    H=st.integers(1, 12),
    W=st.integers(1, 12),
    n=st.integers(1, 5),
    seed=st.integers(0, 10_000),
    min_size=st.integers(1, 6),
)
@settings(max_examples=budget(40))
def test_enforce_connectivity_properties(H, W, n, seed, min_size):
    rng = np.random.default_rng(seed)
    lab = torch.from_numpy(rng.integers(0, n, (2, H, W)))
    out, k = enforce_connectivity(lab, min_size=min_size)
    assert out.shape == lab.shape and k.shape == (2,)
    for b in range(2):
        o = out[b].numpy()
        assert _is_connected_contiguous(o)
        assert k[b] == o.max() + 1
        sizes = np.bincount(o.ravel())
        assert k[b] == 1 or sizes.min() >= min_size
        # every output region is a union of input-label pieces: refining pairs stay refined when min_size=1
        if min_size == 1:
            for v in range(int(k[b])):
                assert len(np.unique(lab[b].numpy()[o == v])) == 1


def _pieces_reference(lab: np.ndarray) -> np.ndarray:
    """The 4-connected pieces of equal label, slowly: ``ndimage.label`` of every label's mask, then the pieces
    numbered in row-major order of their first pixel."""
    pieces = np.zeros(lab.shape, dtype=np.int64)
    n = 0
    for value in np.unique(lab):
        found, k = ndimage.label(lab == value)
        pieces[found > 0] = found[found > 0] + n
        n += k
    _, first, inverse = np.unique(pieces.ravel(), return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse].reshape(lab.shape)


@given(
    H=st.integers(1, 16),
    W=st.integers(1, 16),
    n=st.integers(1, 6),
    seed=st.integers(0, 10_000),
)
@settings(max_examples=budget(60))
def test_enforce_connectivity_splits_exactly_as_a_slow_reference(H, W, n, seed):
    """``min_size=1``: the ids are the pieces of a per-label ``ndimage.label`` loop, numbered by first pixel,
    exactly (the op labels the whole map in one graph since 2026-12-06)."""
    rng = np.random.default_rng(seed)
    lab = torch.from_numpy(rng.integers(0, n, (2, H, W)) * 7 - 3)  # gaps and negative ids
    out, k = enforce_connectivity(lab)
    for b in range(2):
        want = _pieces_reference(lab[b].numpy())
        assert np.array_equal(out[b].numpy(), want)
        assert k[b] == want.max() + 1


def test_enforce_connectivity_deterministic_first_occurrence_numbering():
    lab = torch.tensor([[5, 5, 7], [9, 5, 7], [9, 9, 7]])
    out, k = enforce_connectivity(lab)
    assert out.tolist() == [[0, 0, 1], [2, 0, 1], [2, 2, 1]] and int(k) == 3
    assert out.dim() == 2 and k.dim() == 0


def test_enforce_connectivity_sparse_and_negative_values():
    lab = torch.tensor([[-(10**12), 3], [10**12, 3]])
    out, k = enforce_connectivity(lab)
    assert out.tolist() == [[0, 1], [2, 1]] and int(k) == 3


def test_enforce_connectivity_merges_into_longest_border():
    lab = torch.tensor([[[0, 0, 0, 0], [0, 2, 1, 1], [1, 1, 1, 1]]])
    out, k = enforce_connectivity(lab, min_size=2)
    # the single pixel "2" touches label 0 on two sides (up, left) and label 1 on two (right, down): tie ->
    # lowest component id, i.e. the piece of label 0
    assert out.tolist() == [[[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]]] and k.tolist() == [2]


def test_enforce_connectivity_prefers_the_longer_border_over_the_lower_id():
    # the single pixel "2" shares one edge with label 0 (left) and three with label 1 (up, right, down): it
    # joins label 1, although label 0 has the lower id
    lab = torch.tensor([[[0, 1, 1], [0, 2, 1], [1, 1, 1]]])
    out, k = enforce_connectivity(lab, min_size=2)
    assert out.tolist() == [[[0, 1, 1], [0, 1, 1], [1, 1, 1]]] and k.tolist() == [2]


def test_a_small_piece_grown_to_min_size_by_a_merge_is_kept():
    # the pixel "2" (size 1) merges into its only neighbour "1" (size 2), which then has min_size = 3 pixels:
    # no longer smaller than min_size, it stays (it is not merged on into "0")
    out, k = enforce_connectivity(torch.tensor([[[0, 0, 0, 0, 1, 1, 2]]]), min_size=3)
    assert out.tolist() == [[[0, 0, 0, 0, 1, 1, 1]]] and k.tolist() == [2]


def test_hard_superpixels_with_connectivity():
    g = torch.Generator().manual_seed(1)
    a = torch.softmax(4 * torch.randn(2, 9, 24, 20, generator=g), dim=1)
    out, k = hard_superpixels(a, 8, connectivity=True, return_counts=True)
    min_size = int(0.06 * 24 * 20 / 9)  # default: 0.06 x mean cell area = 3
    for b in range(2):
        assert _is_connected_contiguous(out[b].numpy())
        assert np.bincount(out[b].numpy().ravel()).min() >= min_size
        assert k[b] == out[b].max() + 1
    plain = hard_superpixels(a, 8)
    expected, _ = enforce_connectivity(plain, min_size=min_size)
    assert torch.equal(out, expected)


def test_the_default_min_size_uses_the_mean_cell_area_of_a_non_square_image() -> None:
    """The default is ``int(0.06 * H * W / num_grid_cells)``: 15 pixels for a 16 x 160 image of 10 cells of
    16 x 16 (a formula with ``H * H`` or ``W * W`` gives 1 or 153). A 2 x 2 island of cell 0 that prefers
    its right neighbour is a 4-pixel piece: merged back into cell 0, while the 16 x 16 cells are kept."""
    a = torch.zeros(1, 9, 16, 160)
    a[:, 4] = 1.0
    a[0, 5, 6:8, 6:8] = 2.0  # interior pixels of cell 0 choose "R" (cell 1): a piece not touching cell 1
    plain = hard_superpixels(a, 16)
    assert enforce_connectivity(plain)[1].tolist() == [11]  # the island is a piece of its own
    out, k = hard_superpixels(a, 16, connectivity=True, return_counts=True)
    assert k.tolist() == [10]
    assert torch.equal(out, enforce_connectivity(plain, min_size=15)[0])
    assert torch.equal(out, grid_cell_ids(16, 160, 16, batch_size=1))


def test_min_size_without_connectivity_is_refused() -> None:
    # min_size belongs to the connectivity step: without connectivity=True it used to be accepted and ignored,
    # so hard_superpixels(assoc, 8, min_size=50) returned the raw arg-max map with its 1-pixel fragments
    a = torch.softmax(4 * torch.randn(1, 9, 24, 20, generator=torch.Generator().manual_seed(1)), dim=1)
    with pytest.raises(ValueError, match=r"min_size=3 .*connectivity=False.*connectivity=True"):
        hard_superpixels(a, 8, min_size=3)
    with pytest.raises(ValueError, match="connectivity=False"):
        hard_superpixels(a, 8, connectivity=False, min_size=3, return_counts=True)
    assert torch.equal(hard_superpixels(a, 8, min_size=None), hard_superpixels(a, 8))


def test_enforce_connectivity_keeps_a_channel_dim() -> None:
    lab = torch.tensor([[[0, 1, 0], [0, 1, 0], [2, 2, 2]]])
    out, k = enforce_connectivity(lab[:, None], min_size=2)
    expected, expected_k = enforce_connectivity(lab, min_size=2)
    assert torch.equal(out, expected[:, None]) and torch.equal(k, expected_k)
    with pytest.raises(ValueError, match="superpixels must have shape"):
        enforce_connectivity(torch.zeros(1, 2, 3, 3, dtype=torch.long))


def test_enforce_connectivity_errors() -> None:
    with pytest.raises(TypeError, match=r"superpixels must have an integer dtype .*got torch\.float32"):
        enforce_connectivity(torch.zeros(3, 3))
    with pytest.raises(
        TypeError, match=r"superpixels must be an integer torch\.Tensor .*torch\.from_numpy\(superpixels\)"
    ):
        enforce_connectivity(np.zeros((3, 3), dtype=int))  # type: ignore[arg-type]  # the error under test
    with pytest.raises(
        ValueError, match=r"superpixels must have shape \[B, H, W\], \[B, 1, H, W\] or \[H, W\], got"
    ):
        enforce_connectivity(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="min_size must be >= 1, got 0"):
        enforce_connectivity(torch.zeros(3, 3, dtype=torch.long), min_size=0)
    assert enforce_connectivity(torch.zeros(3, 3, dtype=torch.long), min_size=np.int64(2))[1] == 1


@given(
    H=st.integers(2, 14),
    W=st.integers(2, 14),
    S=st.integers(2, 5),
    seed=st.integers(0, 10_000),
    connectivity=st.booleans(),
)
@settings(max_examples=budget(20))
def test_consistent_with_uniformize(H, W, S, seed, connectivity):
    g = torch.Generator().manual_seed(seed)
    a = torch.softmax(3 * torch.randn(2, 9, H, W, generator=g), 1)
    logits = torch.randn(2, 4, H, W, generator=g)
    sp, k = hard_superpixels(a, S, connectivity=connectivity, return_counts=True)
    n = int(k.max()) if connectivity else num_grid_cells(H, W, S)
    out = uniformize(logits, sp, num_superpixels=n)
    for b in range(2):
        for v in sp[b].unique().tolist():
            region = out[b][:, sp[b] == v]  # [C, n_pixels]
            assert torch.equal(region, region[:, :1].expand_as(region))
            torch.testing.assert_close(region[:, 0], logits[b][:, sp[b] == v].mean(1))


@pytest.mark.parametrize("shape", [(1, 0, 3), (2, 3, 0), (0, 3), (2, 1, 0, 0)])
def test_enforce_connectivity_of_empty_images_is_empty(shape: tuple[int, ...]) -> None:
    labels = torch.zeros(shape, dtype=torch.int32)
    out, k = enforce_connectivity(labels, min_size=2)
    assert out.shape == labels.shape and out.dtype == torch.long
    expected_k = torch.zeros(shape[0], dtype=torch.long) if len(shape) > 2 else torch.tensor(0)
    assert torch.equal(k, expected_k)


@pytest.mark.parametrize("size", [(0, 4), (4, 0)])
def test_hard_superpixels_refuses_empty_images_naming_assoc(size: tuple[int, int]) -> None:
    with pytest.raises(
        ValueError, match=rf"assoc must have H, W >= 1.*got shape \(1, 9, {size[0]}, {size[1]}\)"
    ):
        hard_superpixels(torch.zeros(1, 9, *size), 2, connectivity=True)


def test_the_connectivity_step_on_meta_names_the_argument() -> None:
    """The numpy connectivity step reads the ids: on the meta device (no values) a ``ValueError`` names the
    argument instead of PyTorch's "Cannot copy out of meta tensor; no data!"; ``hard_superpixels`` without it
    still runs there."""
    with torch.device("meta"):
        labels, assoc = torch.zeros(1, 4, 4, dtype=torch.long), torch.rand(1, 9, 4, 4)
        with pytest.raises(ValueError, match=r"^superpixels must hold values \(enforce_connectivity .*meta"):
            enforce_connectivity(labels)
        with pytest.raises(ValueError, match=r"^assoc must hold values \(connectivity=True .*meta device"):
            hard_superpixels(assoc, 2, connectivity=True)
        assert hard_superpixels(assoc, 2).is_meta


def test_the_border_tie_does_not_depend_on_the_label_values():
    """The tie of test_enforce_connectivity_merges_into_longest_border with other label values (the piece
    that comes first now has the largest value): the lowest id is that of the first piece in row-major
    order, whatever the values."""
    lab = torch.tensor([[[7, 7, 7, 7], [7, 5, 3, 3], [3, 3, 3, 3]]])
    out, k = enforce_connectivity(lab, min_size=2)
    assert out.tolist() == [[[0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]]] and k.tolist() == [2]


def test_an_image_smaller_than_min_size_becomes_one_piece():
    """Every piece is below min_size: they merge until one is left, which has no neighbour to merge into
    (kept, not an error)."""
    out, k = enforce_connectivity(torch.tensor([[[0, 1, 0], [2, 2, 1]]]), min_size=10)
    assert out.tolist() == [[[0, 0, 0], [0, 0, 0]]] and k.tolist() == [1]


def test_the_counts_are_on_the_association_device() -> None:
    """Without connectivity the counts (``num_grid_cells`` per image) are made on ``assoc``'s device: the
    meta device here, which needs no GPU to tell devices apart."""
    labels, counts = hard_superpixels(
        torch.empty(2, 9, 5, 7, device="meta"), 2, return_counts=True, validate=False
    )
    assert labels.is_meta and counts.is_meta and counts.shape == (2,)
    assert hard_superpixels(torch.rand(2, 9, 5, 7), 2, return_counts=True)[1].tolist() == [12, 12]


def test_a_nan_in_assoc_is_refused_with_its_index() -> None:
    """The NaN error gives the actual value and where it lies, as the association check of the soft ops does
    (it named neither: which of the B x 9 x H x W entries was bad was left to the caller to find)."""
    assoc = torch.full((2, 9, 3, 4), 1 / 9)
    assoc[1, 5, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"assoc must not contain NaN .*got NaN at index \[1, 5, 2, 0\]"):
        hard_superpixels(assoc, 2)


# --------------------------------------------------- kill tests of a mutation pass (2026-12-07)
def test_the_nan_error_names_the_first_nan() -> None:
    """With several NaN the error names the first one in row-major order (kills H11: ``nonzero()[-1]``)."""
    assoc = torch.full((2, 9, 3, 4), 1 / 9)
    assoc[0, 2, 1, 3] = float("nan")
    assoc[1, 5, 2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"got NaN at index \[0, 2, 1, 3\]$"):
        hard_superpixels(assoc, 2)


def test_infinite_scores_of_both_signs_are_not_nan() -> None:
    """+inf and -inf are not NaN (only their order matters): no refusal, and +inf wins, -inf never does
    (kills H10: a NaN check by ``sum()``, for which inf + -inf is NaN)."""
    assoc = torch.zeros(1, 9, 4, 4)
    assoc[0, 5, 0, 0] = float("inf")  # pixel (0, 0) prefers its right cell
    assoc[0, 4, 3, 3] = float("-inf")  # pixel (3, 3): any other in-image candidate beats its own cell
    out = hard_superpixels(assoc, 2)
    assert out[0, 0, 0] == 1 and out[0, 3, 3] == 0  # TL of cell 3 is cell 0, first in tie order


def test_cell_size_is_checked_before_the_association_values() -> None:
    """An invalid cell_size is reported as such even when assoc also has a NaN (the argument checks come
    before the value scan; kills H07, which leaves cell_size to grid_shape after the NaN scan)."""
    assoc = torch.full((1, 9, 4, 4), float("nan"))
    with pytest.raises(ValueError, match="cell_size must be >= 1, got 0"):
        hard_superpixels(assoc, 0)


def _island_assoc(h: int, w: int, island: tuple[slice, slice], channel: int) -> torch.Tensor:
    """A uniform association (the grid) except ``island``, whose pixels prefer neighbour ``channel``."""
    assoc = torch.zeros(1, 9, h, w)
    assoc[:, 4] = 1.0
    assoc[0, channel, island[0], island[1]] = 2.0
    return assoc


def test_the_default_min_size_keeps_single_pixels_of_small_cells() -> None:
    """Cells of 2 x 2: ``int(0.06 * 4) = 0``, so the default min_size is 1 and a 1-pixel piece is kept
    (kills H13: ``max(2, ...)``, which merges it)."""
    assoc = _island_assoc(4, 6, (slice(0, 1), slice(0, 1)), 5)  # pixel (0, 0) of cell 0 prefers "R" (cell 1)
    plain = hard_superpixels(assoc, 2)
    assert plain[0, 0, :3].tolist() == [1, 0, 1]  # the pixel is cut off from cell 1 by a pixel of cell 0
    out, k = hard_superpixels(assoc, 2, connectivity=True, return_counts=True)
    assert k.tolist() == [7]  # the 6 cells and the 1-pixel piece
    assert out[0, 0, :3].tolist() == [0, 1, 2]


def test_the_default_min_size_truncates_the_fraction() -> None:
    """14 x 7 pixels, cells of 7: ``0.06 * 49 = 2.94`` gives min_size ``int(2.94) = 2``, so a 2-pixel piece is
    kept (kills H14: ``round``, min_size 3, which merges it)."""
    assoc = _island_assoc(14, 7, (slice(2, 3), slice(2, 4)), 7)  # 2 pixels of cell 0 prefer "B" (cell 1)
    plain = hard_superpixels(assoc, 7)
    assert (plain == 1).sum() == 49 + 2
    out, k = hard_superpixels(assoc, 7, connectivity=True, return_counts=True)
    assert k.tolist() == [3]
    assert int((out == out[0, 2, 2]).sum()) == 2


def test_merged_ids_are_numbered_by_the_first_pixel_of_the_merged_piece() -> None:
    """The 2-pixel piece of label 0 (first in row-major order) merges into the piece of label 2 (longer
    border, 2 edges against 1), which comes after the kept piece of label 1: the merged piece starts at pixel
    (0, 0), so it is id 0 (kills H37: ids in the order of the surviving pieces' own numbers, C = 0)."""
    lab = torch.tensor([[[0, 1, 1, 1], [0, 2, 2, 2], [2, 2, 2, 2]]])
    out, k = enforce_connectivity(lab, min_size=3)
    assert out.tolist() == [[[0, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]] and k.tolist() == [2]


def test_connectivity_under_vmap_is_refused_naming_the_fix() -> None:
    """``hard_superpixels(..., connectivity=True)`` under ``torch.func.vmap`` failed inside PyTorch ("Cannot
    access data pointer of Tensor that doesn't have storage"); the connectivity step reads the ids on the
    host, as ``enforce_connectivity`` does, which refuses a mapped label map with a ``NotImplementedError``
    naming the fix: so does this."""
    qs = torch.softmax(torch.randn(3, 2, 9, 10, 13), 2)
    with pytest.raises(NotImplementedError, match=r"connectivity=True.*loop over the association maps"):
        torch.func.vmap(lambda q: hard_superpixels(q, 4, connectivity=True, validate=False))(qs)
    grid = torch.func.vmap(lambda q: hard_superpixels(q, 4, validate=False))(qs)  # without it: fine
    assert torch.equal(grid, torch.stack([hard_superpixels(q, 4) for q in qs]))


def test_a_merged_piece_still_below_min_size_keeps_merging() -> None:
    """Four 1-pixel pieces in a row, min_size=2: the piece that a small piece was merged into takes over its
    neighbours, so the pieces keep merging until none is smaller than min_size (one piece: the image)."""
    out, k = enforce_connectivity(torch.tensor([[[0, 1, 0, 1]]]), min_size=2)
    assert out.tolist() == [[[0, 0, 0, 0]]] and k.tolist() == [1]
    assert np.bincount(out[0].numpy().ravel()).min() >= 2


def test_the_border_of_a_merged_piece_is_its_true_length() -> None:
    """The border of a merged piece with a neighbour is counted once per pixel edge (no tie in any merge
    here: breaking ties by the highest id gives the same map). A border counted twice after a merge sent the
    right-hand pieces into the left-hand block as well, one 15-pixel piece instead of 9 + 6."""
    lab = torch.tensor([[[2, 1, 2, 4, 5], [3, 3, 3, 1, 5], [4, 5, 5, 1, 5]]])
    out, k = enforce_connectivity(lab, min_size=6)
    assert out.tolist() == [[[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]]
    assert k.tolist() == [2]
