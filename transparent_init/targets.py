"""Target maps for transparent stacks: the ``target_weight`` that makes a stack start by selecting channels.

A transparent stack starts as an exact affine map ``y = T x + t``. When a stack is added to join pretrained
networks, the map usually *passes some inputs through unchanged and ignores the others*: ``T`` is a selection
matrix. :func:`selection_weight` builds it in one line.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any, SupportsIndex

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from ._checks import check_dense, check_device, check_dtype, check_matrix_size, check_not_meta, check_width

__all__ = ["selection_weight"]


def _resolve_indices(in_features: int, indices: object) -> list[int] | Tensor:
    """The indices as a list of ints, or, for an index tensor or array, as a 1-D int64 tensor on the CPU
    (range-checked as a tensor: converting ten million indices to Python ints took seconds and hundreds of
    megabytes before an out-of-range one was found)."""
    if isinstance(indices, slice):
        try:
            return list(range(*indices.indices(in_features)))
        except (TypeError, ValueError) as err:  # a non-integer bound, a zero step: Python's bare message
            msg = f"indices must be a slice of ints with a non-zero step, got {indices!r}"
            raise type(err)(msg) from None
    # a range is monotone, so its ends bound it: checked before it is expanded (range(10**9) took minutes and
    # gigabytes to reach selection_weight's bounds check)
    if (
        isinstance(indices, range)
        and indices
        and not -in_features <= min(indices[0], indices[-1]) <= max(indices[0], indices[-1]) < in_features
    ):
        raise ValueError(
            f"indices must lie in [-in_features, in_features) = [-{in_features}, {in_features}), "
            f"got {indices!r} (from {indices[0]} to {indices[-1]})"
        )
    if isinstance(indices, np.ndarray):  # a numpy index array: the same rules as a tensor
        if indices.ndim != 1 or indices.dtype.kind not in "iu":  # named as passed, before the conversion
            raise TypeError(
                f"indices must be a 1-D integer array, "
                f"got dtype {indices.dtype} and shape {list(indices.shape)}"
            )
        if indices.dtype.kind == "u" and indices.size and int(indices.max()) > np.iinfo(np.int64).max:
            raise ValueError(f"indices must lie in int64, got {int(indices.max())}")  # would wrap to negative
        indices = torch.from_numpy(indices.astype(np.int64))
    if isinstance(indices, Tensor):
        check_dense(indices, "indices")
        check_not_meta(indices, "indices", "a 1-D integer tensor", "a list of ints")
        if (
            indices.dim() != 1
            or indices.is_floating_point()
            or indices.is_complex()
            or indices.dtype == torch.bool
        ):
            raise TypeError(
                f"indices must be a 1-D integer tensor, "
                f"got dtype {indices.dtype} and shape {list(indices.shape)}"
            )
        flat = indices.detach().to("cpu")
        if flat.dtype == torch.uint64:  # above 2**63 - 1 (negative as int64): would wrap, as for an array
            wrapped = flat.view(torch.int64) < 0
            if bool(wrapped.any()):
                raise ValueError(f"indices must lie in int64, got {flat[wrapped][0].item()}")
        return flat.to(torch.int64)
    if isinstance(indices, (str, bytes)) or not isinstance(indices, (Sequence, range)):
        raise TypeError(
            f"indices must be a sequence of ints, a range, a slice or a 1-D integer tensor or array, "
            f"got {type(indices).__name__} ({indices!r})"
        )
    out = []
    for k, i in enumerate(indices):
        # Python and numpy ints and 0-d integer tensors, as the other integer arguments (``check_int``)
        scalar = not isinstance(i, Tensor) or (i.dim() == 0 and i.dtype != torch.bool)
        if isinstance(i, bool) or not scalar:
            raise TypeError(f"indices[{k}] must be an int, got {type(i).__name__} ({i!r})")
        check_not_meta(i, f"indices[{k}]", "an int")
        try:
            out.append(operator.index(i))
        except TypeError:  # a float tensor
            raise TypeError(f"indices[{k}] must be an int, got {type(i).__name__} ({i!r})") from None
    return out


def selection_weight(
    in_features: SupportsIndex,
    indices: Sequence[SupportsIndex] | range | slice | Tensor | npt.NDArray[np.integer[Any]],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | int | None = None,
) -> Tensor:
    r"""The ``(out, in)`` weight of the map that selects input channels: ``y = x[..., indices]``.

    Row ``i`` holds a single 1 at column ``indices[i]``:

    .. math::

        T_{i j} = [\, j = \mathrm{indices}_i \,], \qquad T \in \{0, 1\}^{\mathrm{len(indices)} \times
        \mathrm{in\_features}} .

    Pass it as ``target_weight`` of :class:`~transparent_init.TransparentConv1x1`,
    :class:`~transparent_init.TransparentLinear` or :func:`~transparent_init.transparent_init_`. The paper's
    fusion of segmentation logits ``S`` with their superpixel-uniformized copy ``U`` (input ``[S, U]``, ``2C``
    channels) starts as "take ``U``": ``selection_weight(2 * C, range(C, 2 * C))``.

    Args:
        in_features (int): input width (channels).
        indices (Sequence[int] | range | slice | LongTensor[out] | ndarray[out]): the input channel that each
            output channel copies, in output order, each in ``[-in_features, in_features)`` (negative ones
            count from the end, as in ``x[..., indices]``; repeats allowed; a sequence's items are Python or
            numpy ints or 0-d integer tensors); a ``slice`` is resolved against ``in_features``
            (``slice(C, None)`` is the second half of ``2C`` channels).
        dtype (torch.dtype | None): floating dtype of the result, one a stack takes (default:
            ``torch.get_default_dtype()``).
        device (torch.device | str | int | None): device of the result (default: the default device, as for
            ``torch.zeros``).

    Returns:
        Tensor[out, in_features]: the selection matrix, ``out = len(indices)`` (exact: entries are 0 and 1).

    Raises:
        TypeError: ``in_features`` not an int, ``indices`` not integers (or a sparse tensor), ``dtype`` not
            one of the floating dtypes a stack takes (float16, bfloat16, float32, float64), ``device`` not a
            device, a device string or an int index.
        ValueError: ``in_features < 1`` or beyond int64 (``> 2**63 - 1``), no index, an index outside
            ``[-in_features, in_features)``, a ``uint64`` index array or tensor with a value above the int64
            range, index tensors on the meta device (no values), a slice with step 0, a result that would
            exceed ``2**63 - 1`` bytes, or a ``device`` string or index that names no device.

    Example:
        >>> selection_weight(4, range(2, 4))  # [S, U] with C = 2 -> U
        tensor([[0., 0., 1., 0.],
                [0., 0., 0., 1.]])
        >>> selection_weight(3, [2, 0], dtype=torch.float64)
        tensor([[0., 0., 1.],
                [1., 0., 0.]], dtype=torch.float64)
    """
    n_in = check_width(in_features, "in_features")
    idx = _resolve_indices(n_in, indices)
    if len(idx) == 0:
        raise ValueError(f"indices must select at least one of the {n_in} input channels, got none")
    if isinstance(idx, list):
        bad = [i for i in idx if not -n_in <= i < n_in]
    else:
        outside = (idx < -n_in) | (idx >= n_in)
        bad = idx[outside][:5].tolist() if bool(outside.any()) else []
    if bad:
        raise ValueError(
            f"indices must lie in [-in_features, in_features) = [-{n_in}, {n_in}), got {bad[:5]}"
        )
    # a negative index counts from the end, as in x[..., indices]
    columns = torch.as_tensor(idx, dtype=torch.int64, device="cpu") % n_in  # (not on a default meta device)
    # the dtypes a stack takes (float8 was accepted here, and as a target_weight, where a stack refuses it)
    dtype = check_dtype(dtype) or torch.get_default_dtype()
    device = check_device(device)
    check_matrix_size(len(columns), n_in, dtype, "the selection (indices by in_features)")
    weight = torch.zeros(len(columns), n_in, dtype=dtype, device=device)
    weight[torch.arange(len(columns), device=weight.device), columns.to(weight.device)] = 1
    return weight
