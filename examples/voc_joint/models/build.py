"""Rebuild any pipeline model from a plain config dict (what checkpoints store next to the weights).

A config is ``{"arch": "deeplabv3plus" | "spixelfcn" | "joint", "deeplab": {...}, "spixel": {...}, "joint":
{...}}`` holding only the sections the architecture needs; each section is the ``config`` attribute of the
corresponding module (keyword arguments of its constructor).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .deeplabv3plus import DeepLabV3Plus
from .joint import JointModel, SegmentationOnly
from .spixelfcn import SpixelFCN

__all__ = ["ARCHS", "build_model", "model_config"]

ARCHS = ("deeplabv3plus", "spixelfcn", "joint")


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config dict that :func:`build_model` turns back into an (untrained) copy of ``model``.

    Example:
        >>> net = SpixelFCN(cell_size=8, width=4)
        >>> model_config(net)
        {'arch': 'spixelfcn', 'spixel': {'cell_size': 8, 'width': 4}}
    """
    from examples.voc_joint.distributed import unwrap_model

    model = unwrap_model(model)
    if isinstance(model, SegmentationOnly):
        model = model.deeplab
    if isinstance(model, DeepLabV3Plus):
        return {"arch": "deeplabv3plus", "deeplab": dict(model.config)}
    if isinstance(model, SpixelFCN):
        return {"arch": "spixelfcn", "spixel": dict(model.config)}
    if isinstance(model, JointModel):
        return {
            "arch": "joint",
            "deeplab": dict(model.deeplab.config),
            "spixel": dict(model.spixelfcn.config),
            "joint": dict(model.config),
        }
    raise TypeError(f"model must be a DeepLabV3Plus, SpixelFCN or JointModel, got {type(model).__name__}")


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build an untrained model from a config dict made by :func:`model_config`.

    Raises:
        ValueError: unknown ``arch`` or a missing/invalid section.

    Example:
        >>> build_model({"arch": "spixelfcn", "spixel": {"cell_size": 8, "width": 4}}).cell_size
        8
    """
    if not isinstance(config, dict) or config.get("arch") not in ARCHS:
        got = config.get("arch") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"config['arch'] must be one of {ARCHS}, got {got!r}")
    arch = config["arch"]
    try:
        if arch == "deeplabv3plus":
            return DeepLabV3Plus(**config["deeplab"])
        if arch == "spixelfcn":
            return SpixelFCN(**config["spixel"])
        joint = dict(config["joint"])
        deeplab = DeepLabV3Plus(**config["deeplab"])
        spixel = SpixelFCN(**config["spixel"])
        return JointModel(deeplab, spixel, **joint)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"invalid model config for arch {arch!r}: {type(exc).__name__}: {exc}") from exc
