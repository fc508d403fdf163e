"""Logit uniformization: every pixel gets the mean logits of its superpixel (paper Eq. 12-13)."""

from __future__ import annotations

from typing import TYPE_CHECKING, SupportsIndex

from torch import Tensor, nn

from sparse_ops import _checks
from sparse_ops.assignment import BACKENDS, Backend, SuperpixelAssignment, validate_ids, validate_labels

__all__ = ["SuperpixelUniformize", "uniformize"]


def uniformize(
    logits: Tensor,
    superpixels: Tensor,
    num_superpixels: SupportsIndex | Tensor | None = None,
    *,
    mask: Tensor | None = None,
    backend: Backend = "auto",
    validate: bool = True,
) -> Tensor:
    r"""Replace every pixel's logits by the mean logits of its superpixel.

    .. math::

        y_{b,c,p} = \frac{1}{|S_{b,s_p}|} \sum_{q \in S_{b,s_p}} x_{b,c,q},
        \qquad S_{b,s} = \{q : s_{b,q} = s,\ m_{b,q}\}

    i.e. :math:`Y = D E X = M^\top \operatorname{diag}(1/n) M X` with the binary pixel-to-superpixel matrix
    :math:`M` (paper Eq. 12-13). The map is linear and symmetric (without a mask), so the backward pass is the
    same op applied to the incoming gradient; nothing of size :math:`N_s \times N_p` is formed, and the ids
    are compacted internally, so memory is proportional to the pixels whatever the id values. In float32
    every mean is within :math:`(K + P + 1)\,u \max|x| \le 133\,u \max|x|` of the exact one,
    :math:`u = 2^{-24}`, for any superpixel size; float16/bfloat16 logits get that float32 mean rounded once
    to their dtype (one more error of up to :math:`2^{-11}` / :math:`2^{-8}` of the mean); in float64
    superpixels of more than :math:`P K` pixels get :math:`(K + \lceil n_s / K \rceil)\,u \max|x|`,
    :math:`u = 2^{-53}` (see
    :doc:`/concepts/uniformization`). Applied to a map that is already constant on every superpixel (its own
    output) it returns that map bit for bit in float16/bfloat16 and within these bounds in float32/float64:
    compare with a tolerance there.

    Args:
        logits (Tensor[B, C, H, W]): floating logits (float16/bfloat16 accumulate in float32 and round once).
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel id per pixel, any integer dtype,
            in ``[0, num_superpixels)``; gaps (empty superpixels) are fine.
        num_superpixels (int | LongTensor[B] | None): bound of the ids (see :class:`SuperpixelAssignment`);
            ``None`` reads ``max id + 1`` from the device (a host synchronisation): pass an int in hot loops
            and under ``torch.compile``.
        mask (BoolTensor[B, H, W] | None): pixels that count in the means (e.g. not ignore-labelled). Masked
            pixels still receive their superpixel's mean; a superpixel with no counted pixel leaves its
            pixels' logits unchanged.
        backend (str): ``"auto"``, ``"scatter"`` or ``"sparse"`` (see :class:`SuperpixelAssignment`).
        validate (bool): check the id range (a host-device synchronisation, which breaks ``torch.compile``
            graphs); types, shapes and devices are always checked.

    Returns:
        Tensor[B, C, H, W]: the uniformized logits, same shape and dtype as ``logits``, dense in memory:
        NCHW-contiguous, except that on the CPU a channels-last ``logits`` gives a channels-last result (same
        values).

    .. note::
        Deterministic: the default ``"scatter"`` backend uses ``scatter_add_`` and ``gather`` (on the CPU,
        for channels-last input, ``index_add_`` and ``index_select`` over pixel rows, in the same order),
        deterministic on CPU and made deterministic on CUDA by ``torch.use_deterministic_algorithms(True)``.
        To reuse one label map for several tensors, build a :class:`SuperpixelAssignment` once.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[1., 3., 5.], [7., 9., 11.]]]])
        >>> sp = torch.tensor([[[0, 0, 2], [2, 2, 2]]])  # id 1 is empty
        >>> uniformize(logits, sp)
        tensor([[[[2., 2., 8.],
                  [8., 8., 8.]]]])
    """
    validate = _checks.check_bool(validate, "validate")
    _checks.check_floating(logits, "logits", "[B, C, H, W]", before_labels=True)
    _checks.check_option(backend, "backend", BACKENDS)
    labels, num_superpixels, mask = validate_labels(superpixels, num_superpixels, mask)
    _checks.check_spatial_match(logits, "logits", labels, given=superpixels)
    if validate:
        validate_ids(labels, num_superpixels)
    assignment = SuperpixelAssignment._unchecked(labels, num_superpixels, mask, backend, compact=True)
    return assignment.uniformize(logits)


class SuperpixelUniformize(nn.Module):
    """Module form of :func:`uniformize` (no parameters).

    Args:
        backend (str): ``"auto"``, ``"scatter"`` or ``"sparse"``.
        validate (bool): the id range check of every call; types, shapes and devices are always checked.

    Shape:
        - logits: :math:`(B, C, H, W)`
        - superpixels: :math:`(B, H, W)` or :math:`(B, 1, H, W)`, integer
        - mask: :math:`(B, H, W)`, bool, optional
        - output: :math:`(B, C, H, W)`, same dtype as ``logits`` (and on the CPU the same memory format:
          a channels-last input gives a channels-last output)

    Example:
        >>> import torch
        >>> op = SuperpixelUniformize()
        >>> op(torch.randn(2, 21, 8, 8), torch.randint(0, 4, (2, 8, 8)), 4).shape
        torch.Size([2, 21, 8, 8])
    """

    def __init__(self, *, backend: Backend = "auto", validate: bool = True) -> None:
        super().__init__()
        _checks.check_option(backend, "backend", BACKENDS)
        self.backend: Backend = backend
        self.validate = _checks.check_bool(validate, "validate")

    def forward(
        self,
        logits: Tensor,
        superpixels: Tensor,
        num_superpixels: SupportsIndex | Tensor | None = None,
        *,
        mask: Tensor | None = None,
    ) -> Tensor:
        """See :func:`uniformize`."""
        return uniformize(
            logits, superpixels, num_superpixels, mask=mask, backend=self.backend, validate=self.validate
        )

    if TYPE_CHECKING:  # nn.Module.__call__ is typed (*args, **kwargs) -> Any: give callers forward's
        # signature (tests/test_typing_user.py checks that the two agree)

        def __call__(
            self,
            logits: Tensor,
            superpixels: Tensor,
            num_superpixels: SupportsIndex | Tensor | None = None,
            *,
            mask: Tensor | None = None,
        ) -> Tensor: ...

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}" + ("" if self.validate else ", validate=False")
