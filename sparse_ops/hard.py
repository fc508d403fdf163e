"""Hard superpixels from a soft 9-neighbour association, and an optional connectivity clean-up.

:func:`~sparse_ops.hard_superpixels` gives every pixel the global id of its most associated candidate cell
(arg-max over the 9 candidates). Out-of-image candidates are never chosen. **Ties** go to the centre candidate
(the pixel's own cell) first, then to the lowest neighbour index (TL, T, TR, L, R, BL, B, BR: channel order),
so a uniform association reproduces the regular grid.

:func:`~sparse_ops.enforce_connectivity` splits every superpixel into its connected pieces and merges pieces
smaller than ``min_size`` pixels into the adjacent piece with which they share the longest border (ties: the
lowest id), smallest pieces first; the result is relabelled to contiguous ids ``0..K_b - 1``. It runs on the
CPU with numpy/scipy (a post-processing step, not differentiable) and returns tensors on the input device. It
reads the ids, so it cannot run on the meta device (a ``ValueError`` naming the argument), while
``torch.export`` traces (a ``ValueError``: run it on the exported program's output) or under a
``torch.func.vmap`` over the label map (a ``NotImplementedError``: loop over the label maps), and neither can
``hard_superpixels(..., connectivity=True)`` under a ``vmap`` over the association.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Literal, SupportsIndex, overload

import numpy as np
import torch
from torch import Tensor

from sparse_ops import _checks
from sparse_ops._layout import _functorch_transforms_active
from sparse_ops.grid import NEIGHBOUR_OFFSETS, _pixel_cells, grid_shape, num_grid_cells
from sparse_ops.relabel import SuperpixelIds

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["MIN_SIZE_FRACTION", "enforce_connectivity", "hard_superpixels"]

# candidate order used for the arg-max, so that ties prefer the centre, then the lowest channel index
_TIE_ORDER = (4, 0, 1, 2, 3, 5, 6, 7, 8)
#: Default smallest piece of :func:`hard_superpixels` with ``connectivity``, as a fraction of the mean cell
#: area (SpixelFCN's choice).
MIN_SIZE_FRACTION = 0.06


@overload
def hard_superpixels(
    assoc: Tensor,
    cell_size: SupportsIndex,
    *,
    connectivity: bool = ...,
    min_size: SupportsIndex | None = ...,
    return_counts: Literal[False] = ...,
    validate: bool = ...,
) -> Tensor: ...


@overload
def hard_superpixels(
    assoc: Tensor,
    cell_size: SupportsIndex,
    *,
    connectivity: bool = ...,
    min_size: SupportsIndex | None = ...,
    return_counts: Literal[True],
    validate: bool = ...,
) -> SuperpixelIds: ...


@overload
def hard_superpixels(
    assoc: Tensor,
    cell_size: SupportsIndex,
    *,
    connectivity: bool = ...,
    min_size: SupportsIndex | None = ...,
    return_counts: bool,
    validate: bool = ...,
) -> Tensor | SuperpixelIds: ...


def hard_superpixels(
    assoc: Tensor,
    cell_size: SupportsIndex,
    *,
    connectivity: bool = False,
    min_size: SupportsIndex | None = None,
    return_counts: bool = False,
    validate: bool = True,
) -> Tensor | SuperpixelIds:
    """Arg-max superpixel map of a 9-neighbour association.

    Args:
        assoc (Tensor[B, 9, H, W]): association scores or probabilities (neighbour order TL, T, TR, L, C, R,
            BL, B, BR); any real values but NaN (only their order per pixel matters).
        cell_size (int): grid cell side in pixels.
        connectivity (bool): post-process with :func:`enforce_connectivity` (ids become contiguous per image
            and their count may differ from the number of grid cells).
        min_size (int | None): smallest piece kept by the connectivity step, only with ``connectivity=True``;
            default ``max(1, int(MIN_SIZE_FRACTION * H * W / num_grid_cells))`` (SpixelFCN's choice, 0.06).
        return_counts (bool): also return the number of superpixels of every image.
        validate (bool): check that ``assoc`` has no NaN (a host-device synchronisation); types, shapes and
            devices are always checked.

    Returns:
        LongTensor[B, H, W]: global ids ``i * n_w + j`` in ``[0, num_grid_cells(H, W, cell_size))`` (or
        contiguous ids with ``connectivity``); with ``return_counts`` a :class:`~sparse_ops.SuperpixelIds`
        ``(ids, num_superpixels)``, with the number of superpixels of every image, ``LongTensor[B]``
        (``num_grid_cells`` without ``connectivity``).

    Raises:
        TypeError: ``assoc`` not a floating tensor, or an option of the wrong type.
        ValueError: ``assoc`` not ``[B, 9, H, W]``; ``cell_size`` or ``min_size`` below 1; ``min_size``
            without ``connectivity``; with ``validate``, a NaN in ``assoc`` (its index named); with
            ``connectivity``, an ``assoc`` on the meta device or one that ``torch.export`` traces.
        NotImplementedError: ``connectivity`` under a ``torch.func.vmap`` over ``assoc`` (the ids are
            relabelled on the host).

    Example:
        >>> q = torch.zeros(1, 9, 2, 4); q[:, 4] = 1.0; q[0, 5, :, 0] = 2.0  # left column prefers "R"
        >>> hard_superpixels(q, 2)
        tensor([[[1, 0, 1, 1],
                 [1, 0, 1, 1]]])
    """
    validate = _checks.check_bool(validate, "validate")
    _checks.check_assoc(assoc)
    cell_size = _checks.check_int(cell_size, "cell_size", 1)
    connectivity = _checks.check_bool(connectivity, "connectivity")
    return_counts = _checks.check_bool(return_counts, "return_counts")
    if min_size is not None:
        min_size = _checks.check_int(min_size, "min_size", 1)
        if not connectivity:  # it would do nothing: refused, as a negative_slope without a LeakyReLU is
            raise ValueError(
                f"min_size is the smallest piece kept by the connectivity step, got min_size={min_size} with "
                "connectivity=False: drop min_size or pass connectivity=True"
            )
    if validate and assoc.numel() and not assoc.is_meta:
        _checks.check_validate_reads(assoc, "validate=True checks assoc for NaN")
        # a minimum propagates NaN: one reduction, no mask of the association's size (of the detached values:
        # no graph recorded for an assoc that requires grad)
        if bool(assoc.detach().min().isnan()):
            # only a refused association is scanned again, for the index of its first NaN (as
            # check_assoc_values)
            where = [int(i) for i in assoc.detach().isnan().nonzero()[0]]
            raise ValueError(
                f"assoc must not contain NaN (its arg-max would be arbitrary), got NaN at index {where}"
            )
    B, _, H, W = assoc.shape
    labels = _best_neighbour_ids(assoc.detach(), cell_size)
    if connectivity:
        _checks.check_not_exporting(
            "connectivity=True relabels the ids with numpy on the host",
            "export the network that gives assoc, and call hard_superpixels(assoc, cell_size, "
            "connectivity=True) on the exported program's output",
        )
        _check_host_values(assoc, "assoc", "connectivity=True relabels the ids with numpy on the host")
        _checks.check_not_vmapped(  # (the relabelling failed inside PyTorch, naming no argument)
            assoc,
            "assoc",
            why="connectivity=True relabels the ids with numpy on the host, which torch.func.vmap cannot map",
            fix="loop over the association maps, or map hard_superpixels without connectivity and call "
            "enforce_connectivity on its output outside vmap",
        )
        if min_size is None:
            min_size = max(1, int(MIN_SIZE_FRACTION * H * W / num_grid_cells(H, W, cell_size)))
        labels, counts = _connectivity(labels, min_size)
    else:
        counts = torch.full((B,), num_grid_cells(H, W, cell_size), dtype=torch.long, device=assoc.device)
    return SuperpixelIds(labels, counts) if return_counts else labels


def _best_neighbour_ids(assoc: Tensor, cell_size: int) -> Tensor:
    """Global cell id of the most associated in-image candidate of every pixel (ties in ``_TIE_ORDER``).

    A running maximum over the 9 candidates in tie order with a strict ``>``: the first maximum wins, so a
    uniform association gives the grid. The cell ids and validity of the rows and columns one cell up, here
    and down are two small tables (``[3, H]`` and ``[3, W]``, built once for the 8 neighbours): no [9, H, W]
    tables, no host-to-device copies. An arg-max over dim 1 of the NCHW association made this 37 ms instead of
    11 ms at B=2, 256x256 on 2 CPU threads. The maximum and the labels are updated in place, and an
    out-of-image candidate is left out by its validity rather than by a copy of its scores filled with
    ``-inf`` (the same choices: ``-inf`` never beat the maximum): 3 fewer pixel-sized temporaries and about
    80 fewer ops per candidate set. Inside a ``torch.func`` transform (``vmap``, which has no rule for
    ``out=``) they are updated out of place.
    """
    _, _, height, width = assoc.shape
    n_h, n_w = grid_shape(height, width, cell_size)
    rows, cols = _pixel_cells(height, width, cell_size, assoc.device)
    step = torch.arange(-1, 2, device=assoc.device)[:, None]  # dy or dx + 1 indexes the tables
    r, c = rows + step, cols + step  # [3, H], [3, W]
    row_ids, col_ids = r.clamp(0, n_h - 1) * n_w, c.clamp(0, n_w - 1)
    row_in, col_in = (r >= 0) & (r < n_h), (c >= 0) & (c < n_w)

    in_place = not _functorch_transforms_active()  # vmap has no batching rule for out=
    first, *rest = _TIE_ORDER  # the centre first: always in the image
    best = assoc[:, first].clone()  # updated in place: not a view of the caller's association
    labels = (row_ids[1, :, None] + col_ids[1]).expand_as(best).contiguous()
    for k in rest:
        dy, dx = NEIGHBOUR_OFFSETS[k]
        score = assoc[:, k]
        take = score > best
        take &= row_in[dy + 1, :, None] & col_in[dx + 1]  # an out-of-image candidate never wins
        ids = row_ids[dy + 1, :, None] + col_ids[dx + 1]
        if in_place:
            torch.where(take, score, best, out=best)
            torch.where(take, ids, labels, out=labels)
        else:
            best, labels = torch.where(take, score, best), torch.where(take, ids, labels)
    return labels


def _components(lab: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], int]:
    """4-connected pieces of equal label -> component ids 0..n-1 (row-major order of first pixel).

    One graph of the whole image, an edge between every two 4-neighbours of equal label, and scipy's
    ``connected_components`` (compiled): 6 ms for four 256 x 256 arg-max maps of 256 grid cells each (about
    1.7 pieces per cell) on the 2-core AMD EPYC VM of family 26, where a loop over the labels
    (``ndimage.label`` of each label's mask inside its bounding box) took 24 ms, and the same pieces.
    """
    # scipy: the only use of it in sparse_ops, imported on demand
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = lab.shape
    if h * w == 0:
        return np.zeros((h, w), dtype=np.int64), 0
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    right = lab[:, :-1] == lab[:, 1:]
    down = lab[:-1, :] == lab[1:, :]
    rows = np.concatenate([index[:, :-1][right], index[:-1, :][down]])
    cols = np.concatenate([index[:, 1:][right], index[1:, :][down]])
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(h * w, h * w))
    n, comp = connected_components(graph, directed=False)
    comp = comp.astype(np.int64).reshape(h, w)
    flat = comp.ravel()
    if flat[0] == 0 and bool(np.all(np.diff(np.maximum.accumulate(flat)) <= 1)):
        return comp, n  # numbered by first pixel already (scipy labels in node order)
    # renumber by first occurrence (row-major) for determinism independent of the labelling order
    _, first = np.unique(flat, return_index=True)
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n)
    return rank[comp], n


def _merge_small(comp: npt.NDArray[np.int64], n: int, min_size: int) -> npt.NDArray[np.int64]:
    counts0 = np.bincount(comp.ravel(), minlength=n)
    if n <= 1 or counts0.min() >= min_size:
        return comp
    # border lengths between adjacent components, as encoded pairs a * n + b (both directions)
    keys = []
    for a, b in ((comp[:, :-1], comp[:, 1:]), (comp[:-1, :], comp[1:, :])):
        diff = a != b
        keys += [a[diff] * n + b[diff], b[diff] * n + a[diff]]
    uniq, lengths = np.unique(np.concatenate(keys), return_counts=True)
    adj: list[Counter[int]] = [Counter() for _ in range(n)]
    for key, c in zip(uniq.tolist(), lengths.tolist(), strict=True):
        adj[key // n][key % n] = c
    parent = list(range(n))
    sizes = counts0.tolist()

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a in np.argsort(counts0, kind="stable").tolist():
        if counts0[a] >= min_size:
            break  # visited in increasing original size: the rest were never small
        if parent[a] != a or sizes[a] >= min_size or not adj[a]:
            continue
        best = min(adj[a].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        target = find(best)
        parent[a] = target
        sizes[target] += sizes[a]
        for nb, c in adj[a].items():
            r = find(nb)
            if r != target:
                adj[target][r] += c
                adj[r][target] += c
            adj[r].pop(a, None)
        adj[target].pop(a, None)
        adj[target].pop(target, None)
        adj[a].clear()
    roots = np.array([find(i) for i in range(n)])
    return roots[comp]


def enforce_connectivity(
    superpixels: Tensor, *, min_size: SupportsIndex = 1, validate: bool = True
) -> SuperpixelIds:
    """Split superpixels into 4-connected pieces, merge small pieces, relabel contiguously.

    Args:
        superpixels (LongTensor[B, H, W] | LongTensor[B, 1, H, W] | LongTensor[H, W]): superpixel ids (any
            integer dtype and values).
        min_size (int): pieces with fewer pixels are merged into the neighbouring piece sharing the longest
            border (``1``, the default, only splits: this op knows no grid; :func:`hard_superpixels` with
            ``connectivity=True`` defaults to the SpixelFCN rule, 6 % of a grid cell's pixels).
        validate (bool): kept for the common signature: there is no value to check (types, shapes and devices
            are always checked).

    Returns:
        SuperpixelIds: ``(ids, num_superpixels)``, contiguous ids ``0..K_b - 1`` numbered in row-major order
        of their first pixel, and ``K_b`` per image, in the input's layout (as
        :func:`~sparse_ops.relabel_contiguous`): ``[B, 1, H, W]`` keeps its channel dim, and ``[H, W]`` gives
        ``[H, W]`` ids and a 0-dim ``K``; an empty image, ``H`` or ``W = 0``, has ``K_b = 0``. On the input's
        device.

    Example:
        >>> lab = torch.tensor([[[0, 1, 0], [0, 1, 0], [2, 2, 2]]])
        >>> out, k = enforce_connectivity(lab)  # label 0 has two pieces
        >>> out
        tensor([[[0, 1, 2],
                 [0, 1, 2],
                 [3, 3, 3]]])
        >>> k
        tensor([4])
        >>> enforce_connectivity(lab, min_size=3)[0]  # the 2-pixel pieces merge into their longest border
        tensor([[[0, 0, 0],
                 [0, 0, 0],
                 [1, 1, 1]]])
    """
    validate = _checks.check_bool(validate, "validate")
    labels = _checks.check_label_map(superpixels, unbatched=True)
    _checks.check_not_vmapped(labels, "superpixels")
    min_size = _checks.check_int(min_size, "min_size", 1)
    _checks.check_not_exporting(
        "enforce_connectivity relabels the ids with numpy on the host",
        "export the network that gives superpixels, and call enforce_connectivity(superpixels) on the "
        "exported program's output",
    )
    _check_host_values(labels, "superpixels", "enforce_connectivity relabels them with numpy on the host")
    return SuperpixelIds(*_checks.restore_id_layout(*_connectivity(labels, min_size), superpixels))


def _check_host_values(t: Tensor, name: str, why: str) -> None:
    """Refuse ``t`` on the meta device, which holds no values for the numpy connectivity step (``why``);
    PyTorch's own error there is "Cannot copy out of meta tensor; no data!"."""
    if t.is_meta:
        raise ValueError(f"{name} must hold values ({why}), got a Tensor on the meta device")


def _connectivity(labels: Tensor, min_size: int) -> tuple[Tensor, Tensor]:
    """:func:`enforce_connectivity` of checked ``labels[B, H, W]``."""
    arr = labels.detach().cpu().numpy()
    out = np.empty(arr.shape, dtype=np.int64)
    counts = np.empty(arr.shape[0], dtype=np.int64)
    for b in range(arr.shape[0]):
        if arr[b].size == 0:  # an empty image (H or W = 0): no pieces, nothing to relabel
            counts[b] = 0
            continue
        comp, n = _components(arr[b].astype(np.int64))
        merged = _merge_small(comp, n, min_size)
        _, first, inv = np.unique(merged.ravel(), return_index=True, return_inverse=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        out[b] = rank[inv].reshape(merged.shape)
        counts[b] = len(first)
    result = torch.from_numpy(out).to(labels.device)
    k = torch.from_numpy(counts).to(labels.device)
    return result, k
