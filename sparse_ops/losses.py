"""The SpixelFCN training loss: reconstruct targets and pixel positions through the soft association.

Per-pixel target features ``t(p)`` (a one-hot of the class labels, or dense features such as colours) and the
pixel coordinates ``xy(p)`` are pooled to the superpixel centres and unpooled back
(:func:`~sparse_ops.soft_superpixel_pool`, :func:`~sparse_ops.soft_superpixel_unpool`), giving
reconstructions ``t'(p)`` and ``xy'(p)``. Over the set ``V`` of valid pixels:

.. math::

    L = \\underbrace{\\frac{1}{|V|}\\sum_{p \\in V} d(t(p), t'(p))}_{\\text{semantic}}
      + \\frac{m}{S}\\underbrace{\\frac{1}{|V|}\\sum_{p \\in V} \\lVert xy(p) - xy'(p)
      \\rVert_2}_{\\text{position}}

with ``d`` the cross-entropy ``-sum_c t_c log(t'_c + eps)`` for label maps and the Euclidean distance
``||t - t'||_2`` for dense targets, ``m = pos_weight`` and ``S = cell_size``. A dense target without channels
(``C = 0``, which the soft ops take as well) has a semantic term of 0, the distance between empty vectors:
the loss is then the weighted position term, and so is its gradient.

**Normalization.** The public SpixelFCN code *sums* both terms over pixels (divided by the batch size) and
scales the total by 0.005; we take **means over the valid pixels** of the whole batch instead, so the value
does not grow with the image size and no extra factor is needed. The ratio between the two terms (``m / S``)
is the same. With ``renormalize=False`` (the public code's border rule: its shifts pad with zeros, so a border
pixel's weight on cells outside the image is lost, not rescaled) the loss is the public one times a positive
constant per batch (a port of its pool, unpool and loss in the tests agrees to 1e-7), and so are the
gradients; the default ``renormalize=True`` rescales every pixel's in-image weights to sum to 1, which changes
the border pixels' reconstructions and so their terms beyond that constant.

**Ignored pixels** (``target == ignore_index``, or ``mask == False``) are excluded from both terms *and* from
the pooling (the ``mask`` of :func:`~sparse_ops.soft_superpixel_pool`), so they do not dilute the centres;
they are still reconstructed (unpooled) but not scored. If no pixel is valid the loss is 0 (with a gradient of
0).

**Label targets without a one-hot.** The cross-entropy of a one-hot target reads one channel,
``-log(t'_{t(p)}(p) + eps)``, and the pooled class ``k`` of a cell is the association mass the pixels of class
``k`` give it over the mass all valid pixels give it. So for label maps the loss adds every valid pixel's 9
weights into a small table indexed by (chunk of its cell, class, direction), with chains of at most
:data:`~sparse_ops.soft.CHUNK` pixels and float64 sums after them, and reconstructs only each pixel's own
class (9 products per pixel); the positions take the soft pool. The value is the one-hot formulation's up to
rounding. Forward + backward at B=2, 21 classes, 128 / 256 px on the 2-core CPU: 26 -> 20 ms and 95 -> 65 ms
(the one-hot formulation against this one), saved activations 9.3 -> 7.0 MiB and 37.0 -> 28.1 MiB.

**Host synchronisation.** With ``num_classes`` given and ``validate=False`` the loss reads no tensor value on
the host. ``num_classes=None`` reads the largest label (and refuses one above
``sparse_ops._checks.MAX_INFERRED_CLASSES - 1``, a stray label, before allocating anything per class; fewer
classes are inferred where the grid has fewer than 9 image pixels per cell (cells of 1 or 2 x 2 pixels, or an
image padded to whole cells), whose table of class masses would otherwise outgrow that many classes' one-hot:
``_max_inferred``);
``validate=True`` checks the label range and the association values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, SupportsFloat, SupportsIndex

import torch
from torch import Tensor, nn

from sparse_ops import _checks, _float64
from sparse_ops.grid import pixel_xy
from sparse_ops.soft import (
    _Blocks,
    _blocks,
    _centres,
    _gather_from_neighbours,
    _no_autocast,
    _normalized,
    _pixel_chunks,
    _pool,
    _power_of_two_scale,
    _shift_to_targets,
    _unpool_blocks,
)

__all__ = ["SpixelLoss", "SpixelLossOutput", "spixel_loss"]


class SpixelLossOutput(NamedTuple):
    """:func:`spixel_loss`'s scalar tensors: ``total = semantic + pos_weight / cell_size * position``."""

    total: Tensor
    semantic: Tensor
    position: Tensor


def _check_ignore_index(value: object) -> int:
    """``ignore_index`` as an int in the int64 range (comparing a label map with a larger int overflows)."""
    ignore_index = _checks.check_int(value, "ignore_index")
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index must be an int64 label (in [-2**63, 2**63)), got {ignore_index}")
    return ignore_index


def _check_num_classes(value: object) -> int:
    """``num_classes`` as an int in ``[1, MAX_CLASSES]`` (the loss's table grows with it)."""
    num_classes = _checks.check_int(value, "num_classes", 1)
    if num_classes > _checks.MAX_CLASSES:
        raise ValueError(
            f"num_classes must be at most {_checks.MAX_CLASSES} (the loss keeps a table of the class masses "
            f"of every cell, its size proportional to num_classes), got {num_classes}"
        )
    return num_classes


def _safe_norm(diff: Tensor) -> Tensor:
    """Euclidean norm over dim 1 with a zero (not NaN) gradient where the difference is exactly 0.

    Only an exact 0 is special-cased: a NaN difference gives a NaN norm (a ``sq > 0`` test would map it to 0
    and hide a NaN in the data behind a finite loss). The squares are taken after an exact power-of-two scale
    of every pixel's difference (``sparse_ops.soft._power_of_two_scale``): unscaled, differences beyond
    ``sqrt(max)`` (1.8e19 in float32) overflowed to an infinite norm and those below ``sqrt(tiny)`` (1.1e-19)
    underflowed to a zero or inexact one. Without channels (``diff`` of shape ``[B, 0, H, W]``) every norm is
    that of an empty vector, 0, with a zero gradient (the largest entry, which sets the scale, does not
    exist).
    """
    if diff.shape[1] == 0:  # the empty sum, still in the autograd graph
        return diff.sum(dim=1)
    scale = _power_of_two_scale(diff.detach().abs().amax(dim=1))
    sq = (diff * scale.unsqueeze(1)).square().sum(dim=1)
    zero = sq == 0
    return torch.where(zero, torch.zeros_like(sq), torch.where(zero, torch.ones_like(sq), sq).sqrt() / scale)


def _max_inferred(blocks: _Blocks, height: int, width: int, cell_size: int) -> tuple[int, str]:
    """The most classes ``num_classes=None`` infers for this grid, and why when it is under
    :data:`~sparse_ops._checks.MAX_INFERRED_CLASSES`.

    The loss's table holds ``9 (K + 1)`` class masses per chunk (:func:`_own_label_reconstruction`): per
    pixel, ``K + 1`` for chunks of 9 pixels and more for smaller ones (``9 (K + 1)`` for cells of one
    pixel). ``K`` is inferred only while the table holds at most ``MAX_INFERRED_CLASSES + 1`` values per
    pixel, as it does for that many classes and chunks of 9 pixels or more: a stray label cannot make it 9
    times larger than the bound on a degenerate grid (3.6 GB instead of 0.5 for one label 4095 in a 128 x 128
    map with cells of 2 pixels).
    """
    per_image = 9 * blocks.n_h * blocks.n_w * blocks.chunks  # table values per class and image (>= 9: an
    # image without pixels is refused before)
    limit = min(
        _checks.MAX_INFERRED_CLASSES, (_checks.MAX_INFERRED_CLASSES + 1) * height * width // per_image - 1
    )
    if limit >= _checks.MAX_INFERRED_CLASSES:
        return limit, ""
    return max(limit, 1), (
        f" with cell_size={cell_size} on a {height} x {width} map: the loss keeps 9 (K + 1) class masses per "
        f"cell of its grid (padded to whole cells), which with fewer than 9 image pixels per cell outgrows a "
        f"one-hot of {_checks.MAX_INFERRED_CLASSES} classes"
    )


def _labels(
    target: Tensor,
    ignore_index: int,
    num_classes: int | None,
    validate: bool,
    max_inferred: tuple[int, str] = (_checks.MAX_INFERRED_CLASSES, ""),
) -> tuple[Tensor, Tensor, int]:
    """The valid pixels ``[B, H, W]``, the labels ``[B, H, W]`` (0 at ignored pixels; outside ``[0, K)`` only
    when not validated) and the number of classes ``K`` (inferred from the largest label if ``None``, at least
    1: unvalidated labels that are all below 0 inferred ``K <= 0``, and a table with a negative size).

    The labels are compared with ``ignore_index`` as int64, so every integer dtype behaves as int64 does: in
    the label map's own dtype the comparison wrapped (``ignore_index=256`` is 0 in uint8, which ignored every
    label 0; the default 255 is -1 in int8, which ignored a label -1 instead of refusing it). A uint64 label
    above ``2**63 - 1`` (negative as int64) equals no ``ignore_index``: it is never ignored.
    """
    as_int64 = target.long()
    valid = as_int64 != ignore_index
    wrapped = target.dtype == torch.uint64
    if wrapped:  # above 2**63 - 1: no int64 ignore_index is equal to it
        valid = valid | (as_int64 < 0)
    labels = torch.where(valid, as_int64, 0)
    if labels.is_meta:  # shapes only: nothing to check, nothing to infer from
        if num_classes is None:
            raise ValueError(
                "num_classes must be given for a label map on the meta device (shapes only: no labels to "
                "infer it from), got None"
            )
        return valid, labels, num_classes
    if validate and labels.numel():
        _checks.check_validate_reads(labels, "validate=True checks the labels of target")
    if num_classes is None:
        _checks.check_not_exporting(
            "num_classes=None infers the class count from the largest label of target",
            "pass num_classes (an int)",
        )
        if labels.numel():
            _checks.check_values_readable(
                labels,
                "num_classes=None infers the class count from the largest label of target",
                "pass num_classes (an int)",
            )
    low = largest = 0
    if labels.numel() and (validate or num_classes is None):  # one pass and one read for both bounds
        low, largest = torch.stack(torch.aminmax(labels)).tolist()
    if validate and low < 0:
        if wrapped:  # a uint64 label above 2**63 - 1, read back as int64
            raise ValueError(
                f"target labels must be < num_classes (or ignore_index={ignore_index}), got the uint64 label "
                f"{low + 2**64}"
            )
        raise ValueError(f"target labels must be >= 0 (or ignore_index={ignore_index}), got {low}")
    if num_classes is None:
        most, why = max_inferred
        if largest >= most:
            bound = (
                f"at most {most} are inferred{why}"
                if why
                else f"at most {most} are inferred: a one-hot of that many classes per pixel"
            )
            raise ValueError(
                f"the largest label of target is {largest}, so num_classes would be inferred as "
                f"{largest + 1} ({bound}; it is probably a stray label); pass num_classes, or set "
                "ignore_index to that label"
            )
        num_classes = max(largest, 0) + 1  # unvalidated labels all below 0 are no class: still one class
    elif validate and largest >= num_classes:
        raise ValueError(f"target labels must be < num_classes={num_classes}, got label {largest}")
    return valid, labels, num_classes


def _own_label_reconstruction(
    q: Tensor, counted: Tensor, labels: Tensor, known: Tensor, num_classes: int, blocks: _Blocks
) -> Tensor:
    r"""The reconstruction of every pixel's own class, :math:`t'_{t(p)}(p)` ``[B, H, W]``, without a one-hot.

    With one-hot targets the pooled class ``k`` of cell ``s`` is the association mass that the pixels of class
    ``k`` give ``s``, over the mass all counted pixels give it, and a pixel needs only its own class back:

    .. math::

        c_{k,s} = \frac{\sum_{p:\, t(p) = k} \hat q_s(p)}{\sum_p \hat q_s(p)}, \qquad
        t'_{t(p)}(p) = \sum_{s \in N(p)} \hat q_s(p)\, c_{t(p),s} .

    The 9 weights of every counted pixel are added into a table indexed by (the pixel's chunk of its cell,
    its class, the direction): each entry adds at most :data:`~sparse_ops.soft.CHUNK` pixels (the chain of
    the soft pool), the chunks and classes are then added in float64 (on the host for a device without
    float64, with the shift onto the target cells and the division). A label outside ``[0, K)`` (not
    validated) goes to an extra class that counts in the mass but is never read as a class, like the zero
    row of its one-hot. The table holds ``9 (K + 1)`` entries per chunk: about 3 per pixel for 21 classes when
    a cell's side allows chunks of 64 pixels (e.g. 8, 16, 32), more for other sides (smaller chunks: 7.3 per
    pixel for cells of 9, 15 for cells of 13), 12 for cells of 4, and
    ``9 (K + 1)`` per pixel for cells of one pixel, where it is larger than a one-hot (a degenerate grid).

    Args:
        q (Tensor[B, 9, H, W]): normalized association (:func:`~sparse_ops.soft._normalized`).
        counted (BoolTensor[B, H, W]): the pixels that take part in the pooling.
        labels (LongTensor[B, H, W]): class of every pixel.
        known (BoolTensor[B, H, W]): the pixels whose label is in ``[0, K)``.
        num_classes (int): ``K``.
        blocks (_Blocks): the block layout of the grid (:func:`~sparse_ops.soft._blocks`).
    """
    b, _, height, width = q.shape
    cells = blocks.n_h * blocks.n_w
    slots = num_classes + 1  # the last one: labels outside [0, K)
    slot = torch.where(known, labels, num_classes)
    batch = torch.arange(b, device=q.device).view(b, 1, 1)
    chunk = _pixel_chunks(blocks, height, width, q.device)
    entry = ((batch * cells * blocks.chunks + chunk) * slots + slot).reshape(-1, 1)  # [B*H*W, 1]
    rows = q.permute(0, 2, 3, 1).reshape(-1, 9)  # [B*H*W, 9]
    counted_rows = torch.where(counted.reshape(-1, 1), rows, 0.0)  # left out exactly (a NaN stays out)
    table = rows.new_zeros(b * cells * blocks.chunks * slots, 9)
    table = table.scatter_add(0, entry.expand(-1, 9), counted_rows)
    on_host = not _float64.has_float64(q.device)  # then the float64 steps run on the host
    if on_host:
        table = _float64.to_host(table)
    per_dir = table.view(b, cells, blocks.chunks, slots, 9).double().sum(dim=2)  # [B, cells, K + 1, 9]
    mass = _shift_to_targets(per_dir.sum(dim=2).transpose(1, 2).reshape(b, 1, 9, blocks.n_h, blocks.n_w))
    num = per_dir[:, :, :num_classes].permute(0, 2, 3, 1).reshape(b, num_classes, 9, blocks.n_h, blocks.n_w)
    num = _shift_to_targets(num)
    centres = _centres(num, mass).to(q.dtype)  # [B, K, n_h, n_w]
    if on_host:
        centres = _float64.to_device(centres, q.device)
    around = _gather_from_neighbours(centres).reshape(b, cells, num_classes, 9)
    around = torch.cat([around, around.new_zeros(b, cells, 1, 9)], dim=2).view(-1, 9)
    cell = (batch * cells + chunk // blocks.chunks) * slots + slot
    return (around.index_select(0, cell.reshape(-1)) * rows).sum(dim=1).view(b, height, width)


def spixel_loss(
    assoc: Tensor,
    target: Tensor,
    cell_size: SupportsIndex,
    *,
    mask: Tensor | None = None,
    pos_weight: SupportsFloat = 0.003,
    ignore_index: SupportsIndex = 255,
    num_classes: SupportsIndex | None = None,
    eps: SupportsFloat = 1e-8,
    renormalize: bool = True,
    validate: bool = True,
) -> SpixelLossOutput:
    """SpixelFCN loss of an association map (semantic reconstruction + weighted position reconstruction).

    PyTorch's loss order, the prediction before the target: the association, the per-pixel target,
    ``cell_size``, then keyword-only ``mask``, the options and ``validate``. (The soft ops take the per-pixel
    data first and the association second: ``soft_uniformize(logits, assoc, cell_size)``.)

    Args:
        assoc (Tensor[B, 9, H, W]): association probabilities (softmax over the 9 candidates).
        target (LongTensor[B, H, W] | LongTensor[B, 1, H, W] | Tensor[B, C, H, W]): an integer label map
            (one-hot encoded internally; ``ignore_index`` pixels excluded) or floating dense features (e.g.
            CIELAB colours), compared with the Euclidean distance (``C = 0``: a semantic term of 0).
        cell_size (int): grid cell side ``S`` in pixels.
        mask (BoolTensor[B, H, W] | None): additionally restrict both terms (and the pooling) to these pixels.
        pos_weight (float): ``m``; the position term is weighted by ``m / S``.
        ignore_index (int): label of ignored pixels (integer targets only).
        num_classes (int | None): number of classes of an integer target, at most 65536; inferred as
            ``max label + 1`` (at least 1) if ``None`` (a host synchronisation, and at most 4096 classes,
            fewer where the grid has under 9 image pixels per cell: pass it in training loops).
        eps (float): added inside the logarithm of the cross-entropy.
        renormalize (bool): border convention of the soft pooling (see :mod:`sparse_ops.soft`).
        validate (bool): check the label range and the association's values (a host-device
            synchronisation); types, shapes and devices are always checked.

    Returns:
        SpixelLossOutput: ``(total, semantic, position)`` scalar tensors, means over valid pixels.

    Raises:
        TypeError: ``assoc`` or ``target`` not a dense tensor of a supported dtype (``target``: an integer
            label map or floating features, not bool or complex); an option of the wrong type.
        ValueError: a shape that does not match (``target`` of another batch or image size than ``assoc``, or
            not 3-D or 4-D as its kind needs); ``cell_size`` or ``num_classes`` below 1, ``num_classes``
            above 65536; ``pos_weight`` or ``eps`` negative, NaN or infinite; with ``validate``, a label
            outside ``[0, num_classes)`` (other than ``ignore_index``) or an association value that is
            negative or not finite.

    Example:
        >>> assoc = torch.zeros(1, 9, 4, 4); assoc[:, 4] = 1  # the regular grid
        >>> target = torch.tensor([[[0, 0, 1, 1]] * 4])       # one class per 2 x 2 cell
        >>> out = spixel_loss(assoc, target, cell_size=2)
        >>> round(out.semantic.item(), 6), round(out.position.item(), 4)
        (0.0, 0.7071)
    """
    validate = _checks.check_bool(validate, "validate")
    _checks.check_assoc(assoc)
    cell_size = _checks.check_int(cell_size, "cell_size", 1)
    pos_weight = _checks.check_number(pos_weight, "pos_weight", 0.0, finite=True)
    eps = _checks.check_number(eps, "eps", 0.0, finite=True)
    ignore_index = _check_ignore_index(ignore_index)
    if num_classes is not None:
        num_classes = _check_num_classes(num_classes)
    if not isinstance(target, Tensor):
        raise TypeError(
            "target must be a Tensor of shape [B, H, W] (labels) or [B, C, H, W] (features), got "
            f"{type(target).__name__}{_checks._numpy_hint(target, 'target')}"
        )
    _checks.check_dense(target, "target")  # (a sparse label map failed deep inside, naming no argument)
    if target.dim() < 3:  # (more dimensions: the checks below name the shape each kind of target needs)
        raise ValueError(
            "target must have shape [B, H, W] or [B, 1, H, W] (labels) or [B, C, H, W] (features), got "
            f"shape {tuple(target.shape)}"
        )
    if target.shape[0] != assoc.shape[0] or target.shape[-2:] != assoc.shape[-2:]:
        raise ValueError(
            f"target must have batch size {assoc.shape[0]} and spatial size {tuple(assoc.shape[-2:])} "
            "like "
            f"assoc, got shape {tuple(target.shape)}"
        )
    _checks.check_same_device(assoc, "assoc", target, "target")
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"target must be an integer label map or floating features, got dtype {target.dtype}")
    if target.is_floating_point():
        if target.dim() == 3:  # the shape of a label map
            raise ValueError(
                f"a floating target is read as features [B, C, H, W], got shape {tuple(target.shape)} "
                f"and dtype {target.dtype}; for a label map pass an integer tensor (target.long())"
            )
        _checks.check_floating(target, "target", "[B, C, H, W]")
    elif target.dim() != 3 and not (target.dim() == 4 and target.shape[1] == 1):
        raise ValueError(
            f"an integer target must have shape [B, H, W] or [B, 1, H, W], got {tuple(target.shape)}"
        )
    if mask is not None:
        mask = _checks.check_mask(mask, assoc[:, 0], "assoc")
    if validate:
        _checks.check_assoc_values(assoc)
    b, _, height, width = assoc.shape
    out_dtype = assoc.dtype
    dtype = torch.float32 if out_dtype in (torch.float16, torch.bfloat16) else out_dtype
    is_labels = not target.is_floating_point()
    blocks = _blocks(height, width, cell_size)
    if is_labels:
        valid, labels, num_classes = _labels(
            _checks.drop_channel_dim(target),
            ignore_index,
            num_classes,
            validate,
            _max_inferred(blocks, height, width, cell_size),
        )
    else:
        valid = torch.ones(b, height, width, dtype=torch.bool, device=assoc.device)
    if mask is not None:
        valid = valid & _checks.drop_channel_dim(mask)
    # one image expanded to the batch: a batch_size argument would specialize a symbolic batch under export
    xy = pixel_xy(height, width, dtype=dtype, device=assoc.device).expand(b, 2, height, width)
    with _no_autocast(assoc.device):
        q = _normalized(assoc.to(dtype), cell_size, renormalize)
        if is_labels:  # the one-hot's pooled classes and the own class back, without the one-hot
            assert num_classes is not None
            known = (labels >= 0) & (labels < num_classes)
            own = _own_label_reconstruction(q, valid, labels, known, num_classes, blocks)
            # -sum_k onehot_k log(r_k + eps) = -log(r_label + eps); a label outside [0, K) (not validated)
            # has no one-hot entry: it adds nothing. Pixels that are not scored are left out with a where,
            # before the logarithm (not by a 0 weight after it): their own reconstruction may be 0, and with
            # eps = 0 the value -log(0) * 0 and its gradient would be NaN
            scored = valid & known
            per_pixel = torch.where(scored, -torch.log(torch.where(scored, own, 1.0) + eps), 0.0)
            centres, qb = _pool(xy, q, cell_size, valid)
            recon_xy = _unpool_blocks(centres, qb, blocks, (height, width))
        else:
            # zeroed where not counted: an inf or NaN there must reach neither the loss nor its gradient (a 0
            # weight after the distance would not stop it: inf * 0 = NaN, and the norm's backward multiplies
            # by the difference)
            feats = torch.where(valid.unsqueeze(1), target.to(dtype), 0)
            channels = feats.shape[1]
            centres, qb = _pool(torch.cat([feats, xy], dim=1), q, cell_size, valid)
            recon = _unpool_blocks(centres, qb, blocks, (height, width))
            per_pixel = _safe_norm(recon[:, :channels] - feats)
            recon_xy = recon[:, channels:]
    pos_pix = _safe_norm(recon_xy - xy)
    weight = valid.to(dtype)
    n_valid = valid.sum().clamp_min(1).to(dtype)  # an integer count: exact for any number of pixels
    semantic = (per_pixel * weight).sum() / n_valid
    position = (pos_pix * weight).sum() / n_valid
    total = semantic + (pos_weight / cell_size) * position
    return SpixelLossOutput(total.to(out_dtype), semantic.to(out_dtype), position.to(out_dtype))


class SpixelLoss(nn.Module):
    """Module form of :func:`spixel_loss` (its options are construction options).

    Args:
        cell_size (int): grid cell side in pixels.
        pos_weight (float): weight ``m`` of the position term (scaled by ``1 / cell_size``).
        ignore_index (int): ignored label.
        num_classes (int | None): number of classes of integer targets (inferred if ``None``).
        eps (float): added inside the logarithm of the cross-entropy.
        renormalize (bool): border convention of the soft pooling.
        validate (bool): the value checks of every call (see :func:`spixel_loss`); types, shapes and devices
            are always checked.

    Shape:
        - assoc: :math:`(B, 9, H, W)`
        - target: :math:`(B, H, W)` or :math:`(B, 1, H, W)` integer labels, or :math:`(B, C, H, W)` floating
          features
        - mask: :math:`(B, H, W)`, bool, optional
        - output: :class:`SpixelLossOutput` of scalars

    Example:
        >>> crit = SpixelLoss(cell_size=4, num_classes=3)
        >>> assoc = torch.softmax(torch.randn(2, 9, 8, 8), dim=1)
        >>> out = crit(assoc, torch.randint(0, 3, (2, 8, 8)))
        >>> out.total.shape
        torch.Size([])
    """

    def __init__(
        self,
        cell_size: SupportsIndex,
        *,
        pos_weight: SupportsFloat = 0.003,
        ignore_index: SupportsIndex = 255,
        num_classes: SupportsIndex | None = None,
        eps: SupportsFloat = 1e-8,
        renormalize: bool = True,
        validate: bool = True,
    ) -> None:
        super().__init__()
        self.cell_size = _checks.check_int(cell_size, "cell_size", 1)
        self.pos_weight = _checks.check_number(pos_weight, "pos_weight", 0.0, finite=True)
        self.ignore_index = _check_ignore_index(ignore_index)
        self.num_classes = None if num_classes is None else _check_num_classes(num_classes)
        self.eps = _checks.check_number(eps, "eps", 0.0, finite=True)
        self.renormalize = _checks.check_bool(renormalize, "renormalize")
        self.validate = _checks.check_bool(validate, "validate")

    def forward(self, assoc: Tensor, target: Tensor, *, mask: Tensor | None = None) -> SpixelLossOutput:
        """See :func:`spixel_loss`."""
        return spixel_loss(
            assoc,
            target,
            self.cell_size,
            mask=mask,
            pos_weight=self.pos_weight,
            ignore_index=self.ignore_index,
            num_classes=self.num_classes,
            eps=self.eps,
            renormalize=self.renormalize,
            validate=self.validate,
        )

    if TYPE_CHECKING:  # nn.Module.__call__ is typed (*args, **kwargs) -> Any: give callers forward's
        # signature (tests/test_typing_user.py checks that the two agree)

        def __call__(
            self, assoc: Tensor, target: Tensor, *, mask: Tensor | None = None
        ) -> SpixelLossOutput: ...

    def extra_repr(self) -> str:
        return (
            f"cell_size={self.cell_size}, pos_weight={self.pos_weight}, ignore_index={self.ignore_index}, "
            f"num_classes={self.num_classes}, eps={self.eps}, renormalize={self.renormalize}"
            + ("" if self.validate else ", validate=False")
        )
