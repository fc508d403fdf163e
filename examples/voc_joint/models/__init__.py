"""Networks of the VOC joint pipeline: DeepLabV3+, SpixelFCN and the joint model; a config-driven builder."""

from .build import build_model, model_config
from .deeplabv3plus import DeepLabV3Plus
from .joint import JointModel, SegmentationOnly
from .spixelfcn import SpixelFCN

__all__ = ["DeepLabV3Plus", "JointModel", "SegmentationOnly", "SpixelFCN", "build_model", "model_config"]
