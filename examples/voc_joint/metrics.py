r"""Segmentation, boundary and superpixel metrics, accumulated over a whole data set.

Everything is computed from integer maps: predictions ``pred`` (LongTensor[B, H, W] in ``0..C-1``),
ground truth ``target`` (LongTensor[B, H, W] in ``0..C-1`` or ``ignore_index``) and optionally superpixels
(LongTensor[B, H, W] of non-negative ids, any numbering).

* **Confusion matrix** :math:`M_{ij}` = number of valid pixels (``target != ignore_index``) of true class
  :math:`i` predicted as :math:`j`, summed over the whole set (not averaged per image), as in the DeepLab
  evaluators.
* **IoU** of class :math:`c`: :math:`M_{cc} / (\sum_j M_{cj} + \sum_i M_{ic} - M_{cc})`; NaN when the class is
  neither present nor predicted; **mIoU** is the NaN-mean over classes. **Pixel accuracy**
  :math:`\sum_c M_{cc} / \sum_{ij} M_{ij}`; **mean class accuracy** the NaN-mean of
  :math:`M_{cc}/\sum_j M_{cj}`.
* **Boundary (trimap) mIoU** of width :math:`w`: the mIoU of the confusion matrix restricted to the band of
  the :math:`w` pixels on each side of every ground-truth label change (:func:`boundary_band`).
* **Superpixel quality** (needs superpixels): achievable segmentation accuracy
  :math:`\mathrm{ASA} = \sum_s \max_c |s \cap g_c| / \sum_s |s|` over valid pixels (the best accuracy any
  prediction constant on superpixels can reach), boundary recall with a tolerance of :math:`t` pixels (share
  of ground-truth edge pixels with a superpixel edge pixel within Chebyshev distance :math:`t`), and the mean
  number of (non-empty) superpixels per image. ASA and boundary recall are pooled over the whole set.
* **Consistency** (needs superpixels): the share of superpixels whose pixels all get the same predicted label
  (``consistency``) and the share of pixels whose prediction equals their superpixel's majority prediction
  (``consistency_pixels``); both are 1 (100 %) for predictions uniformized on the same superpixels. All pixels
  count here, ignored ones included, because the property concerns the prediction alone.
* **Padding**: pixels outside ``region`` (the images' own pixels; the evaluation data sets give it with every
  sample) count in no metric, and the border of the region is no edge, like the image border: padding is
  labelled ``ignore_index`` like a VOC void band, but a void band is a boundary, padding is not.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from examples.voc_joint.data import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from sparse_ops import relabel_contiguous

__all__ = [
    "SegmentationMetrics",
    "boundary_band",
    "confusion_matrix",
    "dumps",
    "format_per_class_table",
    "format_table",
    "iou_from_confusion",
    "label_edges",
    "superpixel_scores",
    "to_jsonable",
]


def _integer(name: str, value: Any, least: int | None, shown: Any = None) -> int:
    """``value`` as an int >= ``least`` (any int for None); a float (2.5) or a bool is refused, not
    truncated. ``shown``: the value named in the errors (default ``value``)."""
    shown = value if shown is None else shown
    wanted = "an integer" if least is None else f"an integer >= {least}"
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {wanted}, got {shown!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be {wanted}, got {shown!r}") from None
    if least is not None and number < least:
        raise ValueError(f"{name} must be >= {least}, got {shown}")
    return number


#: Integer dtypes without min / max kernels in PyTorch: their values are compared as int64.
_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def _as_held(value: int, dtype: torch.dtype) -> int:
    """A value read back as int64 (``.long()``), as a ``dtype`` tensor holds it: a uint64 value above
    ``2**63 - 1`` wrapped to a negative int64."""
    return value + 2**64 if dtype == torch.uint64 and value < 0 else value


def _check_maps(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int) -> Tensor:
    """Check the two maps; return ``target`` as int64 (compared with ``ignore_index`` in a narrower dtype,
    e.g. uint8, the label would wrap around: -1 would match 255)."""
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(
                f"{name} must be an integer tensor [B, H, W], got {type(t).__name__} "
                f"{getattr(t, 'dtype', '')}"
            )
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape [B, H, W], got {tuple(t.shape)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    target_dtype = target.dtype
    target = target.long()
    if not pred.numel():
        return target
    # the ranges of pred and of the valid target pixels in one pass each and one read on the host (no
    # gather of the valid pixels: a boolean index costs more than the whole check)
    valid = target != ignore_index
    # uint16/32/64 have no aminmax kernel: compared as int64 (a uint64 above 2**63 - 1 is negative there)
    lo, hi = torch.aminmax(pred.long() if pred.dtype in _WIDE_UNSIGNED else pred)
    tlo, thi = torch.aminmax(torch.where(valid, target, 0))
    pred_lo, pred_hi, target_lo, target_hi = torch.stack(
        [lo.long(), hi.long(), tlo.long(), thi.long()]
    ).tolist()
    if pred_lo < 0 or pred_hi >= num_classes:
        if pred.dtype == torch.uint64 and pred_lo < 0:  # the range as pred holds it
            as_int64 = pred.long()
            wrapped = as_int64 < 0
            pred_hi = _as_held(int(as_int64[wrapped].max()), pred.dtype)
            pred_lo = int(as_int64[~wrapped].min()) if bool((~wrapped).any()) else pred_lo + 2**64
        raise ValueError(f"pred values must lie in [0, {num_classes}), got range [{pred_lo}, {pred_hi}]")
    if target_lo < 0 or target_hi >= num_classes:
        tv = target[valid]
        bad = torch.unique(tv[(tv < 0) | (tv >= num_classes)]).tolist()
        bad = sorted(_as_held(v, target_dtype) for v in bad)[:10]
        raise ValueError(f"target values must lie in [0, {num_classes}) or be {ignore_index}, got {bad}")
    return target


def _check_region(region: Tensor | None, target: Tensor, name: str = "region") -> Tensor | None:
    """``region`` as a boolean map on ``target``'s device, checked against ``target``'s shape (``name``: the
    argument named in the errors)."""
    if region is None:
        return None
    if not isinstance(region, Tensor) or region.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a boolean tensor [B, H, W], got "
            f"{type(region).__name__} {getattr(region, 'dtype', '')}"
        )
    if region.shape != target.shape:
        raise ValueError(
            f"{name} must have the shape of target {tuple(target.shape)}, got {tuple(region.shape)}"
        )
    return region.to(target.device)


def _counted(target: Tensor, ignore_index: int, region: Tensor | None) -> Tensor:
    """The pixels every accuracy metric counts (Bool[B, H, W]): not ``ignore_index``, inside ``region``."""
    valid = target != ignore_index
    return valid if region is None else valid & region


def confusion_matrix(
    pred: Tensor,
    target: Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    mask: Tensor | None = None,
) -> Tensor:
    """Confusion matrix (rows: ground truth, columns: prediction) over valid pixels.

    Args:
        pred (LongTensor[B, H, W]): predicted classes in ``0..num_classes-1``.
        target (LongTensor[B, H, W]): ground truth, ``ignore_index`` pixels are skipped.
        num_classes (int): C.
        ignore_index (int): label to skip.
        mask (BoolTensor[B, H, W] | None): count only these pixels.

    Returns:
        LongTensor[C, C] (on the CPU).

    Raises:
        TypeError: ``pred`` or ``target`` not an integer tensor, ``mask`` not a boolean tensor,
            ``num_classes`` or ``ignore_index`` not an integer.
        ValueError: maps (or ``mask``) of different shapes or not ``[B, H, W]``, labels out of range,
            ``num_classes`` < 1.

    Example:
        >>> p = torch.tensor([[[0, 1], [1, 1]]]); t = torch.tensor([[[0, 0], [1, 255]]])
        >>> confusion_matrix(p, t, num_classes=2).tolist()
        [[1, 1], [0, 1]]
    """
    num_classes = _integer("num_classes", num_classes, 1)  # a float failed in bincount, naming "minlength"
    ignore_index = _integer("ignore_index", ignore_index, None)
    target = _check_maps(pred, target, num_classes, ignore_index)
    # a mask of another dtype is refused, not cast: a float mask of weights or probabilities would count
    # every non-zero pixel
    mask = _check_region(mask, target, "mask")
    valid = target != ignore_index if mask is None else (target != ignore_index) & mask
    return _confusion(_pair_index(pred, target, num_classes), valid, num_classes)


def _pair_index(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """``target * C + pred`` (LongTensor[B, H, W]): the confusion-matrix cell of each pixel (meaningful where
    the target is valid)."""
    return target.long() * num_classes + pred.long()


def _confusion(index: Tensor, counted: Tensor, num_classes: int) -> Tensor:
    """The confusion matrix (LongTensor[C, C], on the CPU) of the cells ``index`` (LongTensor[B, H, W], from
    :func:`_pair_index`) of the pixels ``counted`` (Bool[B, H, W]).

    The pixels not counted go to one extra bin, dropped: one pass over the map, where a boolean index would
    gather the counted pixels first (several times slower).
    """
    cells = num_classes * num_classes
    bins = torch.where(counted, index, cells).reshape(-1)
    return torch.bincount(bins, minlength=cells + 1)[:cells].reshape(num_classes, num_classes).cpu()


def iou_from_confusion(cm: Tensor) -> Tensor:
    """Per-class IoU (Tensor[C], float64) of a confusion matrix; NaN for classes absent and not predicted."""
    # a NumPy matrix failed with "'numpy.ndarray' object has no attribute 'dim'"
    if not isinstance(cm, Tensor):
        raise TypeError(f"cm must be a tensor [C, C], got {type(cm).__name__}")
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square matrix [C, C], got shape {tuple(cm.shape)}")
    cm = cm.double()
    inter = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))


def _nanmean(x: Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(x.mean()) if x.numel() else float("nan")


def _check_labels(labels: Any, name: str) -> None:
    """A ``TypeError`` naming ``name`` for a label map that is no tensor (a list, a NumPy array failed with
    an ``AttributeError``: "'list' object has no attribute 'dim'")."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a tensor [B, H, W], got {type(labels).__name__}")


def label_edges(labels: Tensor, region: Tensor | None = None) -> Tensor:
    """Pixels next to a label change, ``labels[p] != labels[q]`` for a 4-neighbour ``q`` (Bool[B, H, W]).

    Both sides of a change are marked; the image border is not an edge, nor is the border of ``region``
    (Bool[B, H, W], the images' own pixels: padding is no image content). ``ignore_index`` counts as a label,
    so a VOC void band yields edges on both of its sides.

    Example:
        >>> t = torch.tensor([[[0, 0, 1, 255]]])
        >>> label_edges(t).int().tolist(), label_edges(t, t != 255).int().tolist()
        ([[[0, 1, 1, 1]]], [[[0, 1, 1, 0]]])
    """
    _check_labels(labels, "labels")
    if labels.dim() != 3:
        raise ValueError(f"labels must have shape [B, H, W], got {tuple(labels.shape)}")
    region = _check_region(region, labels)
    edges = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    dx = labels[:, :, 1:] != labels[:, :, :-1]
    dy = labels[:, 1:, :] != labels[:, :-1, :]
    if region is not None:  # a change between two pixels of the image only
        dx &= region[:, :, 1:] & region[:, :, :-1]
        dy &= region[:, 1:, :] & region[:, :-1, :]
    edges[:, :, 1:] |= dx
    edges[:, :, :-1] |= dx
    edges[:, 1:, :] |= dy
    edges[:, :-1, :] |= dy
    return edges


def _window_any(mask: Tensor, radius: int, dim: int) -> Tensor:
    """``out[i] = any(mask[i - radius .. i + radius])`` along ``dim`` (the window clipped at the borders).

    Shifted ORs that double the window each time: about ``log2(2 radius + 1)`` passes over a boolean map.
    A radius of ``n - 1`` already spans the whole dimension from every entry: a wider one is cut to it (the
    padding below grows with the radius, so ``boundary_band(target, 2**33)`` allocated gigabytes).
    """
    n = mask.shape[dim]
    radius = min(radius, max(n - 1, 0))
    pad_shape = list(mask.shape)
    pad_shape[dim] = radius
    # acc[i] = any(padded[i - span + 1 .. i]); padded = mask then `radius` False entries
    acc = torch.cat([mask, mask.new_zeros(pad_shape)], dim)
    size, span, length = n + radius, 1, 2 * radius + 1
    while span < length:
        step = min(span, length - span)
        if step < size:
            out = acc.clone()
            out.narrow(dim, step, size - step).logical_or_(acc.narrow(dim, 0, size - step))
            acc = out
        span += step
    return acc.narrow(dim, radius, n)  # window [i - radius, i + radius] of mask


def _dilate(mask: Tensor, radius: int) -> Tensor:
    """Pixels within Chebyshev distance ``radius`` of a ``True`` pixel of ``mask`` (Bool[B, H, W]).

    The (2r+1)^2 square window is a row window then a column window, each a few shifted ORs
    (:func:`_window_any`): the pixels of a stride-1 max-pool of that window, for a fraction of its cost.
    """
    if radius <= 0 or mask.numel() == 0:
        return mask
    return _window_any(_window_any(mask, radius, -1), radius, -2).contiguous()


def boundary_band(target: Tensor, width: int, region: Tensor | None = None) -> Tensor:
    r"""Trimap band of ``width`` pixels on each side of every label change of ``target``.

    The band is :math:`\{p : d_\infty(p, E) \le w - 1\}` with :math:`E` = :func:`label_edges` (pixels adjacent
    to a change): the dilation of :math:`E` by a :math:`(2w-1)^2` square, the pixels of a stride-1 max-pool
    of that window. For a vertical step edge between columns 4 and 5, width 1 gives columns 4-5 and width 3
    columns 2-7.

    Args:
        target (LongTensor[B, H, W]): label map (``ignore_index`` included as a label).
        width (int): w >= 1.
        region (BoolTensor[B, H, W] | None): the images' own pixels (see :func:`label_edges`); None: all.

    Returns:
        BoolTensor[B, H, W].
    """
    _check_labels(target, "target")
    width = _integer("width", width, 1)
    return _dilate(label_edges(target, region), width - 1)


def superpixel_scores(
    pred: Tensor,
    target: Tensor,
    superpixels: Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
    tolerance: int = 2,
    region: Tensor | None = None,
) -> dict[str, float]:
    """Raw sums of the superpixel metrics of one batch (see :class:`SegmentationMetrics` for their pooling).

    ``region`` (BoolTensor[B, H, W] | None): the images' own pixels; padding (False) is left out of every sum
    and makes no edge (see :func:`label_edges`). None: every pixel is the image's.

    Raises:
        ValueError: ``pred``, ``target``, ``superpixels`` or ``region`` of different shapes, labels out of
            range (as :func:`confusion_matrix`), negative superpixel ids, a negative ``tolerance`` or
            ``num_classes`` < 1.
        TypeError: maps that are not integer tensors, a ``region`` that is not boolean, a ``tolerance``,
            ``num_classes`` or ``ignore_index`` that is not an integer.

    Returns a dict of sums: ``asa_hits``, ``asa_pixels``, ``br_hits``, ``br_edges``, ``pure_superpixels``,
    ``superpixels``, ``majority_pixels``, ``pixels``, ``images``.
    """
    num_classes = _integer("num_classes", num_classes, 1)  # a float failed in bincount, naming "minlength"
    ignore_index = _integer("ignore_index", ignore_index, None)
    # an out-of-range label would count in another bin
    target = _check_maps(pred, target, num_classes, ignore_index)
    region = _check_region(region, target)
    tolerance = _integer("tolerance", tolerance, 0)
    return _superpixel_sums(pred, target, superpixels, num_classes, ignore_index, tolerance, region=region)


def _superpixel_sums(
    pred: Tensor,
    target: Tensor,
    superpixels: Tensor,
    num_classes: int,
    ignore_index: int,
    tolerance: int,
    target_edges: Tensor | None = None,
    region: Tensor | None = None,
    counted: Tensor | None = None,
) -> dict[str, float]:
    """:func:`superpixel_scores` of maps ``pred`` and ``target`` (int64) and ``region`` already checked
    (:func:`_check_maps`, :func:`_check_region`) and a ``tolerance`` >= 0; ``target_edges``:
    :func:`label_edges` of ``target`` and ``region``, ``counted``: :func:`_counted`, when already at hand."""
    if (
        not isinstance(superpixels, Tensor)
        or superpixels.dtype.is_floating_point
        or superpixels.dtype == torch.bool
    ):
        raise TypeError(
            "superpixels must be an integer tensor [B, H, W], got "
            f"{type(superpixels).__name__} {getattr(superpixels, 'dtype', '')}"
        )
    if superpixels.dim() == 4 and superpixels.shape[1] == 1:
        superpixels = superpixels[:, 0]
    if superpixels.shape != target.shape:
        raise ValueError(
            f"superpixels must have shape {tuple(target.shape)} (like target), got {tuple(superpixels.shape)}"
        )
    superpixels = superpixels.to(target.device)
    # unsigned ids are never negative (and uint16/32/64 have no min kernel)
    if superpixels.numel() and superpixels.is_signed() and int(superpixels.min()) < 0:
        raise ValueError(f"superpixel ids must be >= 0, got min {int(superpixels.min())}")
    edges = label_edges(target, region) if target_edges is None else target_edges
    valid = _counted(target, ignore_index, region) if counted is None else counted
    gt_edges = edges & valid
    sp_near = _dilate(label_edges(superpixels, region), tolerance)
    local_ids, per_image = relabel_contiguous(superpixels)  # ids 0..K_b-1 per image
    sizes = per_image.tolist()
    # the counts stay on the device and are read on the host at once: two reads per batch, not six per image
    # (each a synchronisation on an accelerator); integer totals, the same as sums of per-image counts
    boundary = [(gt_edges & sp_near).sum(), gt_edges.sum()]
    counts = []
    for b, k in enumerate(sizes):
        inverse = local_ids[b].reshape(-1)
        p, t, ok = pred[b].reshape(-1).long(), target[b].reshape(-1), valid[b].reshape(-1)
        cells = inverse * num_classes
        if region is not None:  # padding in one extra bin, dropped: superpixels of padding alone are empty
            cells = torch.where(region[b].reshape(-1), cells, k * num_classes)
        hist_pred = torch.bincount(cells + p, minlength=k * num_classes + num_classes)[: k * num_classes]
        hist_pred = hist_pred.view(k, num_classes)
        size = hist_pred.sum(1)
        top = hist_pred.max(1).values
        # ignored pixels in one extra bin, dropped (no gather of the valid pixels)
        hist_gt = torch.bincount(
            torch.where(ok, inverse * num_classes + t, k * num_classes), minlength=k * num_classes + 1
        )
        hits = hist_gt[: k * num_classes].view(k, num_classes).max(1).values.sum()
        nonempty = size > 0
        counts.append(
            torch.stack(
                [hits, ok.sum(), (nonempty & (top == size)).sum(), top.sum(), size.sum(), nonempty.sum()]
            )
        )
    per_batch = torch.stack(counts).sum(0) if counts else torch.zeros(6, dtype=torch.long, device=pred.device)
    totals = torch.cat([torch.stack(boundary), per_batch]).tolist()
    br_hits, br_edges, asa_hits, asa_pixels, pure, majority, pixels, superpixel_count = map(float, totals)
    return {
        "asa_hits": asa_hits,
        "asa_pixels": asa_pixels,
        "br_hits": br_hits,
        "br_edges": br_edges,
        "pure_superpixels": pure,
        "superpixels": superpixel_count,
        "majority_pixels": majority,
        "pixels": pixels,
        "images": float(len(sizes)),
    }


def _one_image(labels: Any) -> Any:
    """A map of one image (``[H, W]``, or ``[1, H, W]``, ``[1, 1, H, W]``) as ``[1, H, W]``; anything else as
    it is, for the checks to refuse by its name and shape (a reshape failed with "shape '[1, H, W]' is
    invalid for input of size ...", naming no argument)."""
    if (
        isinstance(labels, Tensor)
        and labels.dim() >= 2
        and labels.numel() == labels.shape[-2] * labels.shape[-1]
    ):
        return labels.reshape(1, *labels.shape[-2:])
    return labels


class SegmentationMetrics:
    """Accumulate confusion matrices (whole image, boundary bands) and superpixel statistics over a data set.

    Args:
        num_classes (int): C (21 for VOC).
        ignore_index (int): ground-truth label skipped by every accuracy metric (255).
        boundary_widths (Sequence[int]): trimap band widths in pixels (on each side of a label change).
        boundary_tolerance (int): tolerance in pixels of the superpixel boundary recall.
        class_names (Sequence[str] | None): names for the per-class table (default the VOC names when C = 21).

    Example:
        >>> m = SegmentationMetrics(num_classes=2, boundary_widths=(1,))
        >>> m.update(torch.tensor([[[0, 1], [1, 1]]]), torch.tensor([[[0, 0], [1, 1]]]))
        >>> round(m.compute()["miou"], 4)
        0.5833
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        boundary_widths: Sequence[int] = (1, 3, 5),
        *,
        boundary_tolerance: int = 2,
        class_names: Sequence[str] | None = None,
    ) -> None:
        num_classes = _integer("num_classes", num_classes, 1)
        given = tuple(boundary_widths)
        widths = tuple(_integer("boundary_widths", w, 1, given) for w in given)
        boundary_tolerance = _integer("boundary_tolerance", boundary_tolerance, 0)
        if class_names is None:
            class_names = VOC_CLASSES if num_classes == NUM_CLASSES else [str(c) for c in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(f"class_names must have {num_classes} entries, got {len(class_names)}")
        # int() truncated: ignore_index=2.5 skipped the pixels of class 2
        self.num_classes, self.ignore_index = num_classes, _integer("ignore_index", ignore_index, None)
        self.boundary_widths, self.boundary_tolerance = widths, boundary_tolerance
        self.class_names = tuple(class_names)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        c = self.num_classes
        self.confusion = torch.zeros(c, c, dtype=torch.long)
        self.band_confusion = {w: torch.zeros(c, c, dtype=torch.long) for w in self.boundary_widths}
        self.superpixel_sums: dict[str, float] = {}
        self.num_images = 0

    @torch.no_grad()
    def update(
        self, pred: Tensor, target: Tensor, superpixels: Tensor | None = None, region: Tensor | None = None
    ) -> None:
        """Add a batch.

        Args:
            pred (LongTensor[B, H, W]): predicted classes.
            target (LongTensor[B, H, W]): ground truth (``ignore_index`` skipped).
            superpixels (LongTensor[B, H, W] | None): superpixel ids of the same images.
            region (BoolTensor[B, H, W] | None): the images' own pixels: padding (False) counts in no metric
                and makes no edge (its border is the image border), also where its label is
                ``ignore_index`` like a VOC void band. None: every pixel is the image's.
        """
        if isinstance(pred, Tensor) and pred.dim() == 2:  # one image [H, W]
            pred = pred[None]
            target = target[None] if isinstance(target, Tensor) and target.dim() == 2 else target
            superpixels, region = _one_image(superpixels), _one_image(region)
        # the maps are checked, and the cells, valid pixels and label edges found, once for every accumulator
        target = _check_maps(pred, target, self.num_classes, self.ignore_index)
        region = _check_region(region, target)
        index = _pair_index(pred, target, self.num_classes)
        valid = _counted(target, self.ignore_index, region)
        edges = label_edges(target, region)
        self.confusion += _confusion(index, valid, self.num_classes)
        # the band of width w = the band of a smaller width v dilated by w - v more pixels (squares add up)
        band, band_width = edges, 1
        for w in sorted(self.band_confusion):
            band, band_width = _dilate(band, w - band_width), w
            self.band_confusion[w] += _confusion(index, valid & band, self.num_classes)
        if superpixels is not None:
            sums = _superpixel_sums(
                pred,
                target,
                superpixels,
                self.num_classes,
                self.ignore_index,
                self.boundary_tolerance,
                edges,
                region,
                valid,
            )
            for key, value in sums.items():
                self.superpixel_sums[key] = self.superpixel_sums.get(key, 0.0) + value
        self.num_images += int(pred.shape[0])

    def compute(self) -> dict[str, Any]:
        """All metrics as a dict of Python numbers (fractions in [0, 1]; NaN where undefined).

        Keys: ``miou``, ``pixel_accuracy``, ``mean_class_accuracy``, ``per_class_iou`` ({class name: IoU}),
        ``boundary_miou`` ({str(width): mIoU}), ``boundary_pixels`` ({str(width): count}), ``consistency``,
        ``consistency_pixels``, ``asa``, ``boundary_recall``, ``num_superpixels``, ``boundary_tolerance``,
        ``num_images``, ``num_pixels``, ``confusion_matrix`` (list of lists).
        """
        cm = self.confusion.double()
        iou = iou_from_confusion(self.confusion)
        rows = cm.sum(1)
        nan = torch.full_like(rows, float("nan"))
        class_acc = torch.where(rows > 0, cm.diagonal() / rows.clamp_min(1), nan)
        total = float(cm.sum())
        s = self.superpixel_sums

        def ratio(a: str, b: str) -> float:
            return s[a] / s[b] if s.get(b) else float("nan")

        return {
            "miou": _nanmean(iou),
            "pixel_accuracy": float(cm.diagonal().sum()) / total if total else float("nan"),
            "mean_class_accuracy": _nanmean(class_acc),
            "per_class_iou": {n: float(v) for n, v in zip(self.class_names, iou, strict=True)},
            "boundary_miou": {
                str(w): _nanmean(iou_from_confusion(m)) for w, m in self.band_confusion.items()
            },
            "boundary_pixels": {str(w): int(m.sum()) for w, m in self.band_confusion.items()},
            "consistency": ratio("pure_superpixels", "superpixels"),
            "consistency_pixels": ratio("majority_pixels", "pixels"),
            "asa": ratio("asa_hits", "asa_pixels"),
            "boundary_recall": ratio("br_hits", "br_edges"),
            "num_superpixels": ratio("superpixels", "images"),
            "boundary_tolerance": self.boundary_tolerance,
            "num_images": self.num_images,
            "num_pixels": int(total),
            "confusion_matrix": self.confusion.tolist(),
        }


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}"


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _some(results: Mapping[str, Any]) -> None:
    """Refuse an empty ``results``: its first result set was read with ``next``, whose ``StopIteration``
    named nothing."""
    if not results:
        raise ValueError("results must hold a result set (a compute() dict, or {name: dict}), got {}")


def _metric_rows(results: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    values = list(results.values())
    rows: list[tuple[str, list[str]]] = [
        ("mIoU (%)", [_pct(r["miou"]) for r in values]),
        ("pixel accuracy (%)", [_pct(r.get("pixel_accuracy")) for r in values]),
        ("mean class accuracy (%)", [_pct(r.get("mean_class_accuracy")) for r in values]),
    ]
    # the widths of every result set, in order of appearance ("-" where a set has none): the first set's
    # alone dropped the others' (or failed with a KeyError on a width one of them lacked)
    for w in dict.fromkeys(w for r in values for w in r["boundary_miou"]):
        rows.append((f"boundary mIoU, {w} px (%)", [_pct(r["boundary_miou"].get(w)) for r in values]))
    rows += [
        ("consistency, superpixels (%)", [_pct(r.get("consistency")) for r in values]),
        ("consistency, pixels (%)", [_pct(r.get("consistency_pixels")) for r in values]),
        ("superpixel ASA (%)", [_pct(r.get("asa")) for r in values]),
    ]
    # one row per tolerance, in order of appearance ("-" where a set has another): the first set's alone
    # labelled every set's recall with it
    for tol in dict.fromkeys(r.get("boundary_tolerance", "?") for r in values):
        recall = [
            _pct(r.get("boundary_recall") if r.get("boundary_tolerance", "?") == tol else None)
            for r in values
        ]
        rows.append((f"boundary recall, {tol} px (%)", recall))
    rows += [
        (
            "superpixels per image",
            [_num(r.get("num_superpixels"), "{:.1f}") for r in values],
        ),
        ("images", [_num(r.get("num_images"), "{}") for r in values]),
    ]
    return rows


def format_table(
    results: Mapping[str, Mapping[str, Any]] | Mapping[str, Any],
    *,
    title: str | None = None,
    metrics: Sequence[str] | None = None,
    transpose: bool = False,
) -> str:
    """Plain-text table of results (values in percent).

    Args:
        results: one :meth:`SegmentationMetrics.compute` dict, or ``{name: dict}`` (e.g. ``{"baseline": ...,
            "joint": ...}``).
        title: a first line.
        metrics: the metric rows to keep, by their labels (e.g. ``("mIoU (%)", "boundary mIoU, 3 px (%)")``);
            all by default.
        transpose: one row per result set and one column per metric (the layout of the paper's tables)
            instead of one row per metric.

    Example:
        >>> r = {"miou": 0.5, "boundary_miou": {"3": 0.25}, "consistency": float("nan")}
        >>> cols = ("mIoU (%)", "consistency, superpixels (%)")
        >>> print(format_table({"a": r}, metrics=cols, transpose=True))
        name  mIoU (%)  consistency, superpixels (%)
        --------------------------------------------
        a        50.00                             -
    """
    if "miou" in results:
        results = {"value": results}
    _some(results)
    rows = _metric_rows(results)
    if metrics is not None:
        by_label = dict(rows)
        unknown = [m for m in metrics if m not in by_label]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {list(by_label)}")
        rows = [(m, by_label[m]) for m in metrics]
    if transpose:
        body = [[name, *(vals[i] for _, vals in rows)] for i, name in enumerate(results)]
        return _render(["name", *(label for label, _ in rows)], body, title)
    return _render(["metric", *results], [[name, *vals] for name, vals in rows], title)


def format_per_class_table(
    results: Mapping[str, Mapping[str, Any]] | Mapping[str, Any], *, title: str | None = None
) -> str:
    """Plain-text per-class IoU table (percent), one column per result set."""
    by_name: Mapping[str, Mapping[str, Any]] = {"IoU (%)": results} if "miou" in results else results
    _some(by_name)
    # the classes of every result set, in order of appearance ("-" where a set has none)
    names = list(dict.fromkeys(n for r in by_name.values() for n in r["per_class_iou"]))
    body = [[n, *[_pct(r["per_class_iou"].get(n)) for r in by_name.values()]] for n in names]
    body.append(["mean", *[_pct(r["miou"]) for r in by_name.values()]])
    return _render(["class", *by_name], body, title)


def _render(header: list[str], body: list[list[str]], title: str | None) -> str:
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        cells = (str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(row))
        return "  ".join(cells)

    rule = "-" * len(line(header))
    out = ([title] if title else []) + [line(header), rule] + [line(r) for r in body]
    return "\n".join(out)


def to_jsonable(obj: Any) -> Any:
    """Replace NaN/inf floats by None (recursively) so that the result is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return to_jsonable(obj.tolist())
    return obj


def dumps(results: Mapping[str, Any]) -> str:
    """Strict JSON text of a results dict (NaN -> null)."""
    return json.dumps(to_jsonable(results), indent=2, allow_nan=False)
