"""SpixelFCN (Yang et al., CVPR 2020): an encoder-decoder that predicts the 9-neighbour grid association.

For every pixel the network outputs a softmax over the 9 grid cells around the pixel's own cell (channel order
TL, T, TR, L, C, R, BL, B, BR, as in :func:`sparse_ops.soft_uniformize`). The cells are ``cell_size`` pixels
wide; the network itself predicts at full resolution and never uses the cell size (it is stored for the ops:
:func:`sparse_ops.hard_superpixels`, :func:`sparse_ops.spixel_loss`).

Layers: ``conv`` = 3x3 Conv (no bias) + BN + LeakyReLU(0.1); ``deconv`` = 4x4 stride-2 ConvTranspose +
LeakyReLU(0.1). Encoder widths 16, 32, 64, 128, 256 (x ``width / 16``), four stride-2 stages (1/16
resolution); U-Net style decoder with skip concatenations back to full resolution; a 3x3 conv to 9 channels
and a softmax. Inputs of any size are padded (edge replication) to a multiple of 16 and the output is cropped
back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import MAX_CELL, MAX_CENTRE_BIAS, MAX_SPIXEL_WIDTH, bounded_int, check_images, finite_number

__all__ = ["SpixelFCN"]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.1, inplace=True)
    )


def _cat(a: Tensor, b: Tensor) -> Tensor:
    return torch.cat([a, b], dim=1)


class SpixelFCN(nn.Module):
    """SpixelFCN superpixel network: image -> 9-channel soft association to the neighbouring grid cells.

    Args:
        cell_size: grid cell size in pixels (16 in the paper); stored for the superpixel ops.
        width: width of the first stage (16 in the paper); the others are 2x, 4x, 8x, 16x.
        centre_bias: initial bias of the centre-cell logit (0 in the paper). A positive value makes the
            untrained network start close to the regular grid (every pixel in its own cell), which helps very
            short pretraining runs such as the demo.

    Raises:
        ValueError: ``cell_size`` not an int in ``[1, 1024]``, ``width`` not one in ``[1, 256]`` or
            ``centre_bias`` not a number in ``[-100, 100]`` (the bounds of a checkpoint's config); in
            ``forward``, ``x`` not ``(B, 3, H, W)`` with ``H, W >= 1``, or one image of at most 16 x 16 pixels
            while the BatchNorm layers train (one value per channel at the 1/16 stage), or on another device
            than the weights.
        TypeError: in ``forward``, ``x`` not floating-point (e.g. raw ``uint8`` images) or, outside
            ``torch.autocast``, of another dtype than the weights (:attr:`input_weight`).

    Shape:
        - Input: ``(B, 3, H, W)`` images normalized as ``x - (0.411, 0.432, 0.45)`` (values in [0, 1] before).
        - Output: ``(B, 9, H, W)`` association, non-negative, summing to 1 over the 9 channels.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = SpixelFCN(cell_size=8).eval()
        >>> q = net(torch.randn(2, 3, 21, 30))
        >>> q.shape, bool(torch.allclose(q.sum(1), torch.ones(2, 21, 30)))
        (torch.Size([2, 9, 21, 30]), True)
    """

    #: the encoder's total stride (four stride-2 stages): inputs are padded (replicate) to a multiple of it
    stride: int = 16

    def __init__(self, cell_size: int = 16, width: int = 16, *, centre_bias: float = 0.0) -> None:
        super().__init__()
        # the bounds of a checkpoint's config (models.build.SCHEMAS): what can be built can be loaded
        bounded_int(cell_size, "cell_size", MAX_CELL)
        bounded_int(width, "width", MAX_SPIXEL_WIDTH)
        finite_number(centre_bias, "centre_bias", MAX_CENTRE_BIAS)
        self.cell_size = cell_size
        c = [width * m for m in (1, 2, 4, 8, 16)]
        self.enc0 = nn.Sequential(_conv(3, c[0]), _conv(c[0], c[0]))
        self.enc1 = nn.Sequential(_conv(c[0], c[1], 2), _conv(c[1], c[1]))
        self.enc2 = nn.Sequential(_conv(c[1], c[2], 2), _conv(c[2], c[2]))
        self.enc3 = nn.Sequential(_conv(c[2], c[3], 2), _conv(c[3], c[3]))
        self.enc4 = nn.Sequential(_conv(c[3], c[4], 2), _conv(c[4], c[4]))
        self.up3, self.dec3 = _deconv(c[4], c[3]), _conv(2 * c[3], c[3])
        self.up2, self.dec2 = _deconv(c[3], c[2]), _conv(2 * c[2], c[2])
        self.up1, self.dec1 = _deconv(c[2], c[1]), _conv(2 * c[1], c[1])
        self.up0, self.dec0 = _deconv(c[1], c[0]), _conv(2 * c[0], c[0])
        self.pred = nn.Conv2d(c[0], 9, 3, padding=1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, a=0.1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.pred.bias[4] = float(centre_bias)  # type: ignore[index]  # Conv2d(bias=True) has a bias
        self.config: dict[str, Any] = {"cell_size": cell_size, "width": width}
        if centre_bias:
            self.config["centre_bias"] = float(centre_bias)

    @property
    def input_weight(self) -> Tensor:
        """The first weight the images meet (the first convolution's): the inputs need its device and, outside
        ``torch.autocast``, its dtype."""
        first: Any = self.enc0[0]  # _conv's Sequential: Conv2d, BatchNorm2d, LeakyReLU
        weight: Tensor = first[0].weight
        return weight

    def check_input(self, x: Tensor, name: str = "x") -> None:
        """What :meth:`forward` checks of its images (see *Raises*), the errors calling them ``name``."""
        check_images(x, name, self.input_weight)
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if (
            self.training
            and x.shape[0] * (h + ph) * (w + pw) == self.stride**2
            and any(  # not SyncBatchNorm (--sync-bn): it counts the pixels of every process
                m.training and not isinstance(m, nn.SyncBatchNorm)
                for m in self.enc4.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)
            )
        ):  # (the mode first: no shape guard in eval mode, for torch.export with a dynamic batch)
            raise ValueError(  # PyTorch's error names neither the layer nor the remedy
                f"{name} must not be a single image of at most {self.stride} x {self.stride} pixels in "
                f"training mode: the BatchNorm of the 1/{self.stride} stage sees one value per channel, got "
                f"{name} of shape {tuple(x.shape)} (use 2 images or more, a larger image, eval() or frozen "
                "BatchNorm)"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(_cat(self.up3(e4), e3))
        d2 = self.dec2(_cat(self.up2(d3), e2))
        d1 = self.dec1(_cat(self.up1(d2), e1))
        d0 = self.dec0(_cat(self.up0(d1), e0))
        assoc = F.softmax(self.pred(d0), dim=1)
        return assoc[:, :, :h, :w]
