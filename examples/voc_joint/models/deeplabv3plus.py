"""DeepLabV3+ on a torchvision ResNet (18/34/50/101/152), output stride 16 or 8, no download ever.

Architecture (Chen et al., ECCV 2018), built from torchvision layers:

* backbone: ``torchvision.models.resnetXX(weights=None)``; the last one (OS16) or two (OS8) stages trade their
  stride for dilation. Bottleneck ResNets (50/101/152) use torchvision's ``replace_stride_with_dilation``;
  torchvision refuses dilation in ``BasicBlock`` (ResNet-18/34), so for those the strides and dilations of
  the built convolutions are rewritten here: the strided convolution (the first block's ``conv1``) keeps the
  previous dilation and every later 3x3 convolution of the stage, the first block's ``conv2`` included, uses
  the new one (the exact a-trous conversion: after the removed stride each of them sees a grid twice as dense;
  torchvision's rule for its Bottleneck, whose blocks have one 3x3 convolution, per convolution);
* ASPP: a 1x1 branch, three 3x3 atrous branches with rates (6, 12, 18) at OS16 or (12, 24, 36) at OS8, and an
  image-pooling branch; concatenation, 1x1 projection, dropout 0.5;
* decoder: the stride-4 ``layer1`` feature projected to 48 channels, concatenated with the upsampled ASPP
  output, two 3x3 conv-BN-ReLU blocks (dropout 0.5 / 0.1) and a 1x1 classifier;
* logits bilinearly upsampled to the input size (any size, odd sizes included).

Backbone weights can come from a LOCAL file (``backbone_weights=PATH``), read with
``torch.load(weights_only=True)``; nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    MAX_CLASSES,
    MAX_WIDTH,
    bounded_int,
    check_images,
    is_number_within,
    one_of,
    type_name,
)

__all__ = ["ASPP", "BACKBONES", "DeepLabV3Plus", "build_resnet_backbone", "load_backbone_weights"]

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
#: Bounds of ASPP's atrous rates (each one a dilation and a padding; the paper's largest is 36) and of their
#: number (each one a branch of ``in_channels x out_channels x 9`` weights; the paper has three).
MAX_ASPP_RATE, MAX_ASPP_RATES = 1024, 8


def _conv_bn_relu(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Sequential:
    pad = 0 if k == 1 else dilation
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _dilate_basic_stage(stage: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Turn a strided BasicBlock stage into a dilated one in place (stride 1, dilated 3x3 convs): the first
    block's strided ``conv1`` keeps ``previous_dilation``, every later 3x3 conv gets ``dilation``."""
    block: Any  # torchvision BasicBlock (untyped attributes)
    for i, block in enumerate(stage):
        d1 = previous_dilation if i == 0 else dilation
        block.conv1.stride = (1, 1)
        block.conv1.dilation = (d1, d1)
        block.conv1.padding = (d1, d1)
        block.conv2.dilation = (dilation, dilation)
        block.conv2.padding = (dilation, dilation)
        block.stride = 1
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


def build_resnet_backbone(name: str, output_stride: int) -> tuple[nn.Module, int, int]:
    """Build an untrained torchvision ResNet with the requested output stride.

    Args:
        name: one of :data:`BACKBONES`.
        output_stride: 16 (``layer4`` dilated) or 8 (``layer3`` and ``layer4`` dilated).

    Returns:
        tuple: ``(resnet, low_level_channels, high_level_channels)``; ``resnet.fc`` and ``resnet.avgpool`` are
        replaced by ``nn.Identity``.
    """
    import torchvision

    name = one_of(name, "backbone", BACKBONES)
    output_stride = one_of(output_stride, "output_stride", (8, 16), "8 or 16")
    dilate = [False, output_stride == 8, True]
    ctor = getattr(torchvision.models, name)
    basic = name in ("resnet18", "resnet34")
    if basic:
        net = ctor(weights=None)
        prev = 1
        for stage, flag in zip((net.layer2, net.layer3, net.layer4), dilate, strict=True):
            if flag:
                new = prev * 2
                _dilate_basic_stage(stage, prev, new)
                prev = new
        low, high = 64, 512
    else:
        net = ctor(weights=None, replace_stride_with_dilation=dilate)
        low, high = 256, 2048
    net.fc = nn.Identity()
    net.avgpool = nn.Identity()
    return net, low, high


def _check_weights_path(path: object, name: str, or_none: bool = False) -> None:
    """A ``TypeError`` naming ``name`` unless ``path`` is a str or an ``os.PathLike`` returning str (or None
    where ``or_none``): 5 and b"/tmp/x" reached ``Path()``, a raw error naming no argument."""
    if isinstance(path, str) or (or_none and path is None):
        return
    returning = ""
    if isinstance(path, os.PathLike):
        fspath: object = path.__fspath__()  # called as os.fspath() does (which refuses an int with no name)
        if isinstance(fspath, str):
            return
        returning = f" whose __fspath__() returns {type(fspath).__name__}"
    raise TypeError(
        f"{name} must be {'None, ' if or_none else ''}a str or an os.PathLike returning str (the path of a "
        f"local file), got {type(path).__name__}{returning} ({path!r})"
    )


#: First key parts of a segmentation head (this pipeline's DeepLabV3+ and the public codes').
_HEAD_PREFIXES = ("aspp", "decoder", "low_level", "classifier", "last_conv")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet (or any) ResNet weights from a local file into ``backbone`` (``fc.*`` keys ignored).

    The file must hold a state dict (optionally under ``"state_dict"`` or ``"model"``) readable with
    ``torch.load(weights_only=True)``; an optional ``"backbone."`` / ``"module."`` key prefix is stripped.
    BatchNorm ``num_batches_tracked`` counters may be absent (files saved before torch 0.4.1, such as
    torchvision's original ImageNet weights): they start at 0, as in torch's own loading.

    Raises:
        TypeError: ``backbone`` not an ``nn.Module``, or ``path`` not a str or an ``os.PathLike`` returning
            str (e.g. bytes).
        FileNotFoundError: the file does not exist.
        IsADirectoryError: ``path`` is a folder.
        ValueError: the file is damaged, holds pickled objects or is not a state dict (str keys, tensor
            values; the first other key is named), or its keys/shapes do not match the backbone, or a weight
            is not a dense floating-point tensor with data (a meta or sparse one) or holds NaN or infinite
            values (named).
    """
    if not isinstance(backbone, nn.Module):  # (was: "'NoneType' object has no attribute 'state_dict'")
        raise TypeError(f"backbone must be an nn.Module, got {type_name(backbone)} ({backbone!r})")
    _check_weights_path(path, "path")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"backbone weights: expected a file, got the folder '{path}'")
    if not path.is_file():
        raise FileNotFoundError(
            f"backbone weights file not found: '{path}' (nothing is downloaded; give a local file)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for objects, RuntimeError/EOFError for a damaged file
        from examples.voc_joint.checkpoint import _unreadable  # the checkpoints' wording for either case

        hint = (  # e.g. a training framework's checkpoint holding its state dict next to such objects
            "; a file you trust can be converted once: load it in full in Python, and torch.save its state "
            "dict of tensors on its own as the file to pass"
        )
        raise ValueError(_unreadable(path, exc, "backbone weights file", hint)) from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    from examples.voc_joint.checkpoint import _not_state_dict, strip_key_prefixes

    bad = _not_state_dict(state)  # names the first key that is no str or holds no tensor
    if bad is not None:  # (a non-str key reached ``key.startswith`` below: AttributeError)
        raise ValueError(f"backbone weights {path} must be a state dict (str keys, tensor values), {bad}")
    # two weights for one parameter (with and without a prefix) are refused: the later replaced the earlier
    stripped = strip_key_prefixes(state, ("module.", "backbone."), f"backbone weights {path}")
    cleaned = {k: v for k, v in stripped.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    for k in own:  # weights saved before torch 0.4.1 (torchvision's original ImageNet files, Caffe
        # conversions) have no BatchNorm step counters: torch's own BatchNorm loading starts them at 0
        if k.endswith(".num_batches_tracked") and k not in cleaned:
            cleaned[k] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(own) - set(cleaned))
    unexpected = sorted(set(cleaned) - set(own))
    bad_shape = [k for k in own if k in cleaned and own[k].shape != cleaned[k].shape]
    # DeepLab heads (this pipeline's, its joint model's under "deeplab.", the public DeepLabV3+ codes'): the
    # file is a whole model
    head = [k for k in unexpected if k.removeprefix("deeplab.").split(".", 1)[0] in _HEAD_PREFIXES]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"backbone weights {path} do not match the backbone: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}, shape mismatches {bad_shape[:5]}"
            f"{'...' if len(bad_shape) > 5 else ''}"
            + "".join(  # the shapes of each: which ResNet the file holds
                f"; {k}: file {tuple(cleaned[k].shape)}, backbone {tuple(own[k].shape)}"
                for k in bad_shape[:5]
            )
            + (
                f"; {head[0]!r} is a segmentation head's key: a whole segmentation model's checkpoint? "
                "backbone weights are an ImageNet ResNet's state dict"
                if head
                else ""
            )
        )
    for k, v in own.items():  # load_state_dict casts any dtype silently (complex: the real part) and copies
        # NaN / inf, which only show as a non-finite loss once training runs
        w = cleaned[k]
        if w.is_meta or w.layout != torch.strided:  # a model saved from the meta device, a sparse tensor:
            # torch's "Tensor.item() cannot be called on meta tensors" / sparse NotImplementedError
            kind = "meta tensor (no data)" if w.is_meta else f"{w.layout} tensor"
            raise ValueError(f"backbone weights {path}: {k} must be a dense tensor with data, got a {kind}")
        if not v.is_floating_point():  # BatchNorm step counters
            continue
        if not w.is_floating_point():
            raise ValueError(f"backbone weights {path}: {k} must be floating-point, got {w.dtype}")
        # in the backbone's dtype, as it will hold them: a float64 value beyond float32's range loaded as inf
        # (its check in float64 passed), and torch has no isfinite for some float8 dtypes
        if not bool(torch.isfinite(w.to(v.dtype)).all()):
            held = (
                f" once converted to the backbone's {v.dtype} (from {w.dtype})" if w.dtype != v.dtype else ""
            )
            raise ValueError(f"backbone weights {path}: {k} holds NaN or infinite values{held}")
    backbone.load_state_dict(cleaned, strict=True)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three atrous 3x3 branches, image pooling, then a 1x1 projection.

    Args:
        in_channels: input channels (512 for ResNet-18/34, 2048 for ResNet-50+).
        out_channels: channels of every branch and of the output (256 in the paper).
        rates: the atrous rates, one 3x3 branch each ((6, 12, 18) at OS16, (12, 24, 36) at OS8): a sequence
            (not a str or bytes) of 1 to 8 ints in ``[1, 1024]``.
        dropout: dropout probability after the projection, in ``[0, 1)``.

    Raises:
        ValueError: ``in_channels`` or ``out_channels`` not an int in ``[1, 4096]`` (the widths'
            bounds of :class:`DeepLabV3Plus`), ``rates`` not 1 to 8 ints in ``[1, 1024]`` (bools refused),
            ``dropout`` not a finite number in ``[0, 1)``.
        TypeError: ``rates`` not a sequence (e.g. one int), or a str or bytes.

    Shape:
        - Input: ``(B, C_in, h, w)``.
        - Output: ``(B, C_out, h, w)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        # the widths' bounds of DeepLabV3Plus (aspp_channels); checked before any layer is built (a raw
        # "negative dimension" RuntimeError, 0 accepted, a float's "divisible by groups")
        bounded_int(in_channels, "in_channels", MAX_WIDTH)
        bounded_int(out_channels, "out_channels", MAX_WIDTH)
        if isinstance(rates, (str, bytes, bytearray)) or not isinstance(rates, Sequence):
            raise TypeError(f"rates must be a sequence of ints, got {type_name(rates)} ({rates!r})")
        rates = tuple(rates)
        if not 1 <= len(rates) <= MAX_ASPP_RATES or not all(
            isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= MAX_ASPP_RATE for r in rates
        ):  # each one a dilation and a padding: 0 and 6.5 were accepted
            raise ValueError(
                f"rates must be 1 to {MAX_ASPP_RATES} ints in [1, {MAX_ASPP_RATE}], got {rates!r}"
            )
        if not is_number_within(dropout, 1.0) or not 0 <= dropout < 1:  # NaN was accepted
            raise ValueError(f"dropout must be a finite number in [0, 1), got {dropout!r}")
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, out_channels, 1)]
            + [_conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.project = nn.Sequential(
            _conv_bn_relu(out_channels * (len(rates) + 2), out_channels, 1), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        feats = [b(x) for b in self.branches]
        pooled = self.pool(x)
        feats.append(F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False))
        out: Tensor = self.project(torch.cat(feats, dim=1))
        return out


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ semantic segmentation network on a torchvision ResNet.

    Args:
        num_classes: output classes (21 for PASCAL VOC).
        backbone: one of ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``resnet152``.
        output_stride: 16 or 8 (dilation replaces the stride of the last one or two stages).
        backbone_weights: optional path to a LOCAL ResNet state dict (read with ``weights_only=True``): None,
            a str or an ``os.PathLike`` returning str (e.g. a :class:`~pathlib.Path`).
        aspp_channels: width of ASPP and of the decoder (256 in the paper).
        low_level_channels: width of the low-level projection (48 in the paper).

    Raises:
        ValueError: ``num_classes`` not an int in ``[1, 1024]`` or a width not one in ``[1, 4096]`` (the
            bounds of a checkpoint's config), an unknown ``backbone``, ``output_stride`` not 8 or 16, a
            ``backbone_weights`` file that :func:`load_backbone_weights` refuses (damaged, no state dict,
            keys or shapes not the backbone's, non-finite weights); in ``forward``, ``x`` not
            ``(B, 3, H, W)`` with ``H, W >= 1``, or a single image while the BatchNorm layers train (the
            image-pooling branch needs ``B >= 2``; under ``SyncBatchNorm`` PyTorch counts the images of every
            process instead), or ``x`` on another device than the weights.
        TypeError: ``backbone_weights`` not None, a str or an ``os.PathLike`` returning str (checked before
            the backbone is built); in ``forward``, ``x`` not floating-point (e.g. raw ``uint8`` images) or,
            outside ``torch.autocast``, of another dtype than the weights (:attr:`input_weight`).
        FileNotFoundError: ``backbone_weights`` does not exist.
        IsADirectoryError: ``backbone_weights`` is a folder.

    Shape:
        - Input: ``(B, 3, H, W)`` ImageNet-normalized images, any ``H, W >= 1``; ``B >= 2`` in training mode
          unless the BatchNorm layers are ``SyncBatchNorm``.
        - Output: ``(B, num_classes, H, W)`` logits.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> net = DeepLabV3Plus(21, "resnet18", aspp_channels=32).eval()
        >>> net(torch.randn(1, 3, 37, 45)).shape
        torch.Size([1, 21, 37, 45])
    """

    def __init__(
        self,
        num_classes: int = 21,
        backbone: str = "resnet101",
        output_stride: int = 16,
        backbone_weights: str | Path | None = None,
        *,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
    ) -> None:
        super().__init__()
        # the bounds of a checkpoint's config (models.build.SCHEMAS): what can be built can be loaded
        bounded_int(num_classes, "num_classes", MAX_CLASSES)
        bounded_int(aspp_channels, "aspp_channels", MAX_WIDTH)
        bounded_int(low_level_channels, "low_level_channels", MAX_WIDTH)
        # stored as the plain option (a numpy scalar in the config would make the checkpoint unreadable)
        backbone = one_of(backbone, "backbone", BACKBONES)
        output_stride = one_of(output_stride, "output_stride", (8, 16), "8 or 16")
        # before the backbone is built (a second or more for a ResNet-101), not when the file is read
        _check_weights_path(backbone_weights, "backbone_weights", or_none=True)
        self.backbone, low_c, high_c = build_resnet_backbone(backbone, output_stride)
        if backbone_weights is not None:
            load_backbone_weights(self.backbone, backbone_weights)
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(high_c, aspp_channels, rates)
        self.low_level = _conv_bn_relu(low_c, low_level_channels, 1)
        self.decoder = nn.Sequential(
            _conv_bn_relu(aspp_channels + low_level_channels, aspp_channels, 3),
            nn.Dropout(0.5),
            _conv_bn_relu(aspp_channels, aspp_channels, 3),
            nn.Dropout(0.1),
        )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)
        self._init_head()
        self.config: dict[str, Any] = {
            "num_classes": num_classes,
            "backbone": backbone,
            "output_stride": output_stride,
            "aspp_channels": aspp_channels,
            "low_level_channels": low_level_channels,
        }

    def _init_head(self) -> None:
        for m in [*self.aspp.modules(), *self.low_level.modules(), *self.decoder.modules(), self.classifier]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of the ResNet (the paper's 1x learning-rate group)."""
        return list(self.backbone.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of ASPP, low-level projection, decoder and classifier (the 10x learning-rate group)."""
        ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    @property
    def input_weight(self) -> Tensor:
        """The first weight the images meet (the backbone's first convolution's): the inputs need its device
        and, outside ``torch.autocast``, its dtype."""
        backbone: Any = self.backbone  # a torchvision ResNet
        weight: Tensor = backbone.conv1.weight
        return weight

    def check_input(self, x: Tensor, name: str = "x") -> None:
        """What :meth:`forward` checks of its images (see *Raises*), the errors calling them ``name``."""
        check_images(x, name, self.input_weight)
        # the mode first (no shape guard in eval mode); PyTorch's error names neither the layer nor the fix.
        # Not for SyncBatchNorm (--sync-bn): it counts the images of every process, so one per process runs.
        bn = self.aspp.pool[2]
        if bn.training and x.shape[0] == 1 and not isinstance(bn, nn.SyncBatchNorm):
            raise ValueError(
                f"{name} must hold at least 2 images in training mode: the BatchNorm of ASPP's image-pooling "
                f"branch sees one value per channel, got {name} of shape {tuple(x.shape)} (use eval() or "
                "freeze BatchNorm)"
            )

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        size = x.shape[-2:]
        b: Any = self.backbone  # a torchvision ResNet
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        low = b.layer1(x)
        high = b.layer4(b.layer3(b.layer2(low)))
        high = self.aspp(high)
        low = self.low_level(low)
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.classifier(self.decoder(torch.cat([high, low], dim=1)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
