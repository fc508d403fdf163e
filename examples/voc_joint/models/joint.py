"""The joint model: DeepLabV3+ logits refined by SpixelFCN superpixels through uniformization and transparent layers.

Data flow (``mode="hard"``, fusion on)::

    seg_input ──► DeepLabV3+ ──────────────────────────────► S      (B, C, H, W) logits
    spixel_input ─► SpixelFCN ─► Q (B, 9, H, W) ─► hard_superpixels ─► ids (B, H, W)
    U = uniformize(S, ids)                       # superpixel-mean logits ("soft": soft_uniformize(S, Q))
    F = TransparentConv1x1([S, U])               # 2C -> hidden -> C, starts as exactly F = U
    final = uniformize(F, ids)                   # one label per superpixel (consistency 100 %)

Fusion input and target map (a documented design choice, see ``docs/examples/pipeline.rst``): the stack sees
``[S, U(S)]`` and starts as the map ``[0 | I]`` ("take the uniformized half"), so at step 0 the joint output
equals the uniformized output of the pretrained segmentation network up to float32 rounding, while training can
learn to mix raw and superpixel-averaged evidence per class. The authors fed 21 copies of the raw integer
superpixel-id map instead: those channels carry no class information, and their large unnormalized values
(0..1023) inflate the float32 error of the transparent stack about 100-fold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

import sparse_ops as so
from transparent_init import TransparentConv1x1

__all__ = ["MODES", "JointModel", "SegmentationOnly", "fusion_target_weight"]

MODES = ("hard", "soft", "none")


def fusion_target_weight(num_classes: int) -> Tensor:
    """Target map ``[0 | I]`` of shape ``(C, 2C)``: the fusion stack starts by taking the uniformized half.

    Example:
        >>> fusion_target_weight(2)
        tensor([[0., 0., 1., 0.],
                [0., 0., 0., 1.]])
    """
    eye = torch.eye(num_classes, dtype=torch.float64)
    return torch.cat([torch.zeros_like(eye), eye], dim=1).float()


def _contract(logits: Tensor, seg_logits: Tensor, superpixels: Tensor | None, assoc: Tensor | None) -> dict:
    return {"logits": logits, "seg_logits": seg_logits, "superpixels": superpixels, "assoc": assoc}


class SegmentationOnly(nn.Module):
    """Wrap a plain segmentation network (e.g. DeepLabV3+) in the pipeline's model contract.

    Shape:
        - Input: ``seg_input (B, 3, H, W)``; ``spixel_input`` is accepted and ignored.
        - Output: dict with ``logits`` = ``seg_logits`` ``(B, C, H, W)``, ``superpixels`` = ``assoc`` = ``None``.

    Example:
        >>> import torch
        >>> m = SegmentationOnly(torch.nn.Conv2d(3, 21, 1))
        >>> out = m(torch.zeros(1, 3, 5, 7))
        >>> out["logits"].shape, out["superpixels"]
        (torch.Size([1, 21, 5, 7]), None)
    """

    def __init__(self, deeplab: nn.Module) -> None:
        super().__init__()
        self.deeplab = deeplab

    def forward(self, seg_input: Tensor, spixel_input: Tensor | None = None) -> dict[str, Tensor | None]:
        s = self.deeplab(seg_input)
        return _contract(s, s, None, None)


class JointModel(nn.Module):
    """DeepLabV3+ + SpixelFCN joined by superpixel uniformization and a transparent fusion stack.

    Args:
        deeplab: segmentation network, ``(B, 3, H, W) -> (B, C, H, W)`` logits.
        spixelfcn: superpixel network, ``(B, 3, H, W) -> (B, 9, H, W)`` association (softmax over 9).
        num_classes: ``C``.
        cell_size: superpixel grid cell size in pixels (default: ``spixelfcn.cell_size``).
        mode: ``"hard"`` (uniformize with the argmax superpixel ids; no gradient into SpixelFCN from the
            segmentation loss), ``"soft"`` (first uniformization with the soft association: the segmentation
            loss reaches SpixelFCN) or ``"none"`` (no uniformization at all: an ablation).
        fusion: whether the transparent fusion stack is used.
        fusion_hidden: logical hidden widths of the stack (each ``>= 2C``); the paper uses ``(64, 64)``.
        fusion_activation: ``"relu"``, ``"leaky_relu"`` or ``None``.
        generator: seed or generator for the stack's random hidden layers.

    Shape:
        - Input: ``seg_input (B, 3, H, W)``, ``spixel_input (B, 3, H, W)``.
        - Output: dict (the pipeline's model contract): ``logits (B, C, H, W)`` final logits (constant on every
          superpixel unless ``mode="none"``), ``seg_logits (B, C, H, W)`` plain DeepLabV3+ logits,
          ``superpixels`` LongTensor ``(B, H, W)`` hard ids in ``[0, num_grid_cells)``, ``assoc (B, 9, H, W)``.

    The part after the two networks always runs in float32 (autocast disabled), so mixed precision never
    breaks the transparency of the fusion stack.
    """

    def __init__(
        self,
        deeplab: nn.Module,
        spixelfcn: nn.Module,
        num_classes: int = 21,
        *,
        cell_size: int | None = None,
        mode: str = "hard",
        fusion: bool = True,
        fusion_hidden: Sequence[int] = (64, 64),
        fusion_activation: str | None = "relu",
        generator: torch.Generator | int | None = 0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(fusion, bool):
            raise TypeError(f"fusion must be a bool, got {type(fusion).__name__}")
        self.deeplab = deeplab
        self.spixelfcn = spixelfcn
        self.num_classes = int(num_classes)
        self.cell_size = int(cell_size if cell_size is not None else getattr(spixelfcn, "cell_size", 16))
        self.mode = mode
        self.fusion: nn.Module | None = None
        if fusion:
            self.fusion = TransparentConv1x1(
                2 * self.num_classes,
                list(fusion_hidden),
                self.num_classes,
                activation=fusion_activation,
                target_weight=fusion_target_weight(self.num_classes),
                generator=generator,
            )
        self.config: dict[str, Any] = {
            "num_classes": self.num_classes,
            "cell_size": self.cell_size,
            "mode": mode,
            "fusion": fusion,
            "fusion_hidden": [int(h) for h in fusion_hidden],
            "fusion_activation": fusion_activation,
        }

    def superpixels(self, assoc: Tensor) -> Tensor:
        """Hard superpixel ids ``(B, H, W)`` from the association (argmax over the 9 neighbouring cells)."""
        return so.hard_superpixels(assoc.detach(), self.cell_size)

    def refine(self, seg_logits: Tensor, assoc: Tensor) -> tuple[Tensor, Tensor]:
        """Everything after the two networks: ``(final logits, hard ids)`` from ``S`` and ``Q`` (float32)."""
        s = seg_logits.float()
        q = assoc.float()
        ids = self.superpixels(q)
        h, w = s.shape[-2:]
        # one pixel-to-superpixel assignment serves both uniformizations (built and checked once per call)
        n = so.num_grid_cells(h, w, self.cell_size)
        enc = None if self.mode == "none" else so.SuperpixelAssignment(ids, n)
        if self.mode == "hard":
            u = enc.uniformize(s)
        elif self.mode == "soft":
            u = so.soft_uniformize(s, q, self.cell_size)
        else:
            u = s
        x = self.fusion(torch.cat([s, u], dim=1)) if self.fusion is not None else u
        if enc is not None:
            x = enc.uniformize(x)
        return x, ids

    def forward(self, seg_input: Tensor, spixel_input: Tensor) -> dict[str, Tensor | None]:
        s = self.deeplab(seg_input)
        q = self.spixelfcn(spixel_input)
        if s.shape[-2:] != q.shape[-2:]:
            raise ValueError(
                f"seg_input and spixel_input must have the same size, got {tuple(s.shape[-2:])} "
                f"and {tuple(q.shape[-2:])}"
            )
        with torch.autocast(device_type=s.device.type, enabled=False):
            final, ids = self.refine(s, q)
        return _contract(final, s, ids, q)
