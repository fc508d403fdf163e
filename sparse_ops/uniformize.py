"""Logit uniformization: every pixel gets the mean logits of its superpixel (paper Eq. 12-13)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sparse_ops import _checks
from sparse_ops.assignment import SuperpixelAssignment

__all__ = ["SuperpixelUniformize", "uniformize"]


def uniformize(
    logits: Tensor,
    superpixels: Tensor,
    num_superpixels: int | Tensor | None = None,
    mask: Tensor | None = None,
    *,
    backend: str = "auto",
    validate: bool = True,
) -> Tensor:
    r"""Replace every pixel's logits by the mean logits of its superpixel.

    .. math::

        y_{b,c,p} = \frac{1}{|S_{b,s_p}|} \sum_{q \in S_{b,s_p}} x_{b,c,q},
        \qquad S_{b,s} = \{q : s_{b,q} = s,\ m_{b,q}\}

    i.e. :math:`Y = D E X = M^\top \operatorname{diag}(1/n) M X` with the binary pixel-to-superpixel matrix
    :math:`M` (paper Eq. 12-13). The map is linear and symmetric (without a mask), so the backward pass is the
    same op applied to the incoming gradient; it is computed by a scatter-sum and a gather, never with anything of
    size :math:`N_s \times N_p`.

    Args:
        logits (Tensor[B, C, H, W]): floating logits (float16/bfloat16 accumulate in float32).
        superpixels (IntTensor[B, H, W] | IntTensor[B, 1, H, W]): superpixel id per pixel, any integer dtype,
            in ``[0, num_superpixels)``; gaps (empty superpixels) are fine.
        num_superpixels (int | LongTensor[B] | None): ``N_s`` (see :class:`SuperpixelAssignment`); ``None``
            infers ``max id + 1`` at the cost of a host-device synchronisation: pass an int in hot loops and under
            ``torch.compile``.
        mask (BoolTensor[B, H, W] | None): pixels that count in the means (e.g. not ignore-labelled). Masked
            pixels still receive their superpixel's mean; a superpixel with no counted pixel leaves its pixels'
            logits unchanged.
        backend (str): ``"auto"``, ``"scatter"`` or ``"sparse"`` (see :class:`SuperpixelAssignment`).
        validate (bool): check the inputs (``False`` skips all checks, e.g. under ``torch.compile``).

    Returns:
        Tensor[B, C, H, W]: the uniformized logits, same shape and dtype as ``logits``.

    .. note::
        Deterministic: the default ``"scatter"`` backend uses ``scatter_add_`` and ``gather``, deterministic on
        CPU and made deterministic on CUDA by ``torch.use_deterministic_algorithms(True)``. To reuse one label map
        for several tensors, build a :class:`SuperpixelAssignment` once.

    Example:
        >>> import torch
        >>> logits = torch.tensor([[[[1., 3., 5.], [7., 9., 11.]]]])
        >>> sp = torch.tensor([[[0, 0, 2], [2, 2, 2]]])  # id 1 is empty
        >>> uniformize(logits, sp)
        tensor([[[[2., 2., 8.],
                  [8., 8., 8.]]]])
    """
    if validate:
        _checks.check_floating(logits, "logits", 4, "[B, C, H, W]")
        if isinstance(superpixels, Tensor):
            _checks.check_same_device(logits, "logits", superpixels, "superpixels")
            sp = _checks.check_superpixels(superpixels)
            _checks.check_spatial_match(logits, "logits", sp)
    assignment = SuperpixelAssignment(superpixels, num_superpixels, mask, backend=backend, validate=validate)
    return assignment.uniformize(logits)


class SuperpixelUniformize(nn.Module):
    """Module form of :func:`uniformize` (no parameters).

    Args:
        num_superpixels (int | None): ``N_s`` for every call (``None``: per call, or inferred).
        backend (str): ``"auto"``, ``"scatter"`` or ``"sparse"``.
        validate (bool): check the inputs.

    Shape:
        - logits: :math:`(B, C, H, W)`
        - superpixels: :math:`(B, H, W)` or :math:`(B, 1, H, W)`, integer
        - mask: :math:`(B, H, W)`, bool, optional
        - output: :math:`(B, C, H, W)`, same dtype as ``logits``

    Example:
        >>> import torch
        >>> op = SuperpixelUniformize(num_superpixels=4)
        >>> op(torch.randn(2, 21, 8, 8), torch.randint(0, 4, (2, 8, 8))).shape
        torch.Size([2, 21, 8, 8])
    """

    def __init__(
        self, num_superpixels: int | None = None, *, backend: str = "auto", validate: bool = True
    ) -> None:
        super().__init__()
        if validate:
            _checks.check_backend(backend)
            _checks.check_num_superpixels(num_superpixels, 0, torch.device("cpu"))
            if isinstance(num_superpixels, Tensor):
                raise TypeError(
                    "num_superpixels of SuperpixelUniformize must be an int or None; pass per-image "
                    "tensors to forward()"
                )
        self.num_superpixels = num_superpixels
        self.backend = backend
        self.validate = validate

    def forward(
        self,
        logits: Tensor,
        superpixels: Tensor,
        mask: Tensor | None = None,
        num_superpixels: int | Tensor | None = None,
    ) -> Tensor:
        """Uniformize ``logits`` over ``superpixels`` (``num_superpixels`` overrides the module's)."""
        n = self.num_superpixels if num_superpixels is None else num_superpixels
        return uniformize(logits, superpixels, n, mask, backend=self.backend, validate=self.validate)

    def extra_repr(self) -> str:
        return f"num_superpixels={self.num_superpixels}, backend={self.backend!r}"
