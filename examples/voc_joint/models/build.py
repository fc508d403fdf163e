"""Rebuild any pipeline model from a plain config dict (what checkpoints store next to the weights).

A config is ``{"arch": "deeplabv3plus" | "spixelfcn" | "joint", "deeplab": {...}, "spixel": {...}, "joint":
{...}}`` holding only the sections the architecture needs; each section is the ``config`` attribute of the
corresponding module (keyword arguments of its constructor).

Configs come from checkpoint files, possibly from elsewhere, so :func:`validate_model_config` checks every key
against :data:`SCHEMAS` (known architecture, known keys, types, sane bounds) before any layer is built: an
absurd width is refused instead of attempting a huge allocation. A model option added later needs one line in
its section's schema.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
from torch import nn

from ._checks import (  # the constructors' bounds (a model that can be built can be loaded); re-exported
    FUSION_LAYER_MAX,
    FUSION_WEIGHTS_MAX,
    MAX_CELL,
    MAX_CENTRE_BIAS,
    MAX_CLASSES,
    MAX_FUSION_DEPTH,
    MAX_FUSION_WIDTH,
    MAX_SPIXEL_WIDTH,
    MAX_WIDTH,
    fusion_weights_problem,
    fusion_widths_problem,
    is_number_within,
    one_of,
)
from .deeplabv3plus import BACKBONES, DeepLabV3Plus
from .joint import (
    FUSION_ACTIVATIONS,
    FUSION_INITS,
    MODES,
    JointModel,
    SegmentationOnly,
    network_channels_last,
)
from .spixelfcn import SpixelFCN

__all__ = [
    "ARCHS",
    "FUSION_LAYER_MAX",
    "FUSION_WEIGHTS_MAX",
    "MAX_CELL",
    "MAX_CENTRE_BIAS",
    "MAX_CLASSES",
    "MAX_FUSION_DEPTH",
    "MAX_FUSION_WIDTH",
    "MAX_SPIXEL_WIDTH",
    "MAX_WIDTH",
    "RUNTIME_KEYS",
    "SCHEMAS",
    "build_model",
    "model_config",
    "validate_model_config",
]

ARCHS = ("deeplabv3plus", "spixelfcn", "joint")
#: Runtime options of :func:`build_model` (how a model runs, never stored in its config).
RUNTIME_KEYS = ("channels_last", "recompute_fusion", "compile_refine")
Check = Callable[[Any], str | None]  # None when fine, else what was expected


def _int(low: int, high: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
        return None if ok else f"an int in [{low}, {high}]"

    return check


def _choice(options: tuple[Any, ...]) -> Check:
    def check(v: Any) -> str | None:
        try:  # only a str, an int or None (``v in options`` compared a tensor: tensor(16) was 16)
            one_of(v, "", options)
        except ValueError:
            return f"one of {options}"
        return None

    return check


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "a bool"


def _finite(bound: float) -> Check:
    def check(v: Any) -> str | None:
        return None if is_number_within(v, bound) else f"a finite number in [-{bound:g}, {bound:g}]"

    return check


def _widths(v: Any) -> str | None:
    return fusion_widths_problem(v)


#: Per section: key -> check; keys marked required must be present.
SCHEMAS: dict[str, dict[str, Check]] = {
    "deeplab": {
        "num_classes": _int(1, MAX_CLASSES),
        "backbone": _choice(BACKBONES),
        "output_stride": _choice((8, 16)),
        "aspp_channels": _int(1, MAX_WIDTH),
        "low_level_channels": _int(1, MAX_WIDTH),
    },
    "spixel": {
        "cell_size": _int(1, MAX_CELL),
        "width": _int(1, MAX_SPIXEL_WIDTH),
        "centre_bias": _finite(MAX_CENTRE_BIAS),
    },
    "joint": {
        "num_classes": _int(1, MAX_CLASSES),
        "cell_size": _int(1, MAX_CELL),
        "mode": _choice(MODES),
        "fusion": _bool,
        "fusion_hidden": _widths,
        "fusion_activation": _choice(FUSION_ACTIVATIONS),
        "fusion_init": _choice(FUSION_INITS),
    },
}
_REQUIRED = {
    "deeplab": ("num_classes", "backbone"),
    "spixel": ("cell_size", "width"),
    "joint": ("num_classes", "mode", "fusion"),
}
_SECTIONS = {"deeplabv3plus": ("deeplab",), "spixelfcn": ("spixel",), "joint": ("deeplab", "spixel", "joint")}


def validate_model_config(config: Any) -> None:
    """Check a model config before anything is built.

    Raises:
        ValueError: not a dict, unknown ``arch``, a missing or unknown section or key, a value of the wrong
            type or out of bounds (e.g. a width above 4096), a joint model inconsistent with its networks, or
            a fusion stack of more than :data:`FUSION_WEIGHTS_MAX` weights.

    Example:
        >>> validate_model_config({"arch": "spixelfcn", "spixel": {"cell_size": 8, "width": 10**9}})
        Traceback (most recent call last):
        ...
        ValueError: invalid model config: spixel.width must be an int in [1, 256], got 1000000000
    """
    if not isinstance(config, dict):
        raise ValueError(f"model config must be a dict, got {type(config).__name__}")
    arch = config.get("arch")
    if arch not in ARCHS:
        raise ValueError(f"invalid model config: config['arch'] must be one of {ARCHS}, got {arch!r}")
    sections = _SECTIONS[arch]
    unknown = sorted(str(k) for k in config if k != "arch" and k not in sections)
    if unknown:
        raise ValueError(
            f"invalid model config: unknown sections {unknown} for arch {arch!r} (expected {sections})"
        )
    for name in sections:
        section = config.get(name)
        if not isinstance(section, dict):
            raise ValueError(
                f"invalid model config: section {name!r} must be a dict, got {type(section).__name__}"
            )
        schema = SCHEMAS[name]
        extra = sorted(str(k) for k in section if k not in schema)
        if extra:
            raise ValueError(
                f"invalid model config: unknown keys {extra} in {name!r} (known: {sorted(schema)})"
            )
        missing = [k for k in _REQUIRED[name] if k not in section]
        if missing:
            raise ValueError(f"invalid model config: {name!r} misses {missing}")
        for key, value in section.items():
            expected = schema[key](value)
            if expected is not None:
                raise ValueError(f"invalid model config: {name}.{key} must be {expected}, got {value!r}")
    if arch == "joint":
        classes = config["joint"]["num_classes"]
        if config["deeplab"]["num_classes"] != classes:
            raise ValueError(
                f"invalid model config: joint.num_classes {classes} differs from deeplab.num_classes "
                f"{config['deeplab']['num_classes']}"
            )
        hidden = config["joint"].get("fusion_hidden", [64, 64])
        if config["joint"]["fusion"] and min(hidden) < 2 * classes:
            raise ValueError(
                f"invalid model config: joint.fusion_hidden {hidden} must be >= 2 x num_classes = "
                f"{2 * classes}"
            )
        too_big = fusion_weights_problem(hidden, classes) if config["joint"]["fusion"] else None
        if too_big is not None:
            raise ValueError(f"invalid model config: joint.fusion_hidden {hidden} {too_big}")


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config dict that :func:`build_model` turns back into an (untrained) copy of ``model``: a deep copy,
    so that editing it (its lists too, e.g. ``fusion_hidden``) leaves the networks' own configs as they were.

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
        return {"arch": "deeplabv3plus", "deeplab": copy.deepcopy(dict(model.config))}
    if isinstance(model, SpixelFCN):
        return {"arch": "spixelfcn", "spixel": copy.deepcopy(dict(model.config))}
    if isinstance(model, JointModel):
        # JointModel takes any two networks; a config names only the pipeline's (an nn.Identity raised a bare
        # AttributeError from nn.Module here, when a checkpoint of such a model was written)
        for name, net, kind in (
            ("deeplab", model.deeplab, DeepLabV3Plus),
            ("spixelfcn", model.spixelfcn, SpixelFCN),
        ):
            if not isinstance(net, kind):
                raise TypeError(
                    f"model is a JointModel whose {name} is a {type(net).__name__}, not a {kind.__name__}: "
                    "only the pipeline's networks have a config"
                )
        return {
            "arch": "joint",
            "deeplab": copy.deepcopy(dict(cast(DeepLabV3Plus, model.deeplab).config)),
            "spixel": copy.deepcopy(dict(cast(SpixelFCN, model.spixelfcn).config)),
            "joint": copy.deepcopy(dict(model.config)),
        }
    raise TypeError(f"model must be a DeepLabV3Plus, SpixelFCN or JointModel, got {type(model).__name__}")


def build_model(config: dict[str, Any], *, runtime: Mapping[str, Any] | None = None) -> nn.Module:
    """Build an untrained model from a config dict made by :func:`model_config`.

    Args:
        config: the model config (validated first).
        runtime: a dict (any mapping) of runtime options, or None for none; not part of the config:
            ``channels_last`` (any architecture: the networks' memory format; ``True``, ``False`` or
            ``"spixelfcn"``, see :func:`~examples.voc_joint.models.joint.network_channels_last`),
            ``recompute_fusion`` and ``compile_refine`` (joint models only; see
            :class:`~examples.voc_joint.models.JointModel`).

    Raises:
        ValueError: an invalid config (:func:`validate_model_config`, checked before any layer is built), an
            unknown runtime option or an invalid ``channels_last``.
        TypeError: ``runtime`` neither a dict (any mapping) nor None, or ``recompute_fusion`` or
            ``compile_refine`` given but not a bool.

    Example:
        >>> build_model({"arch": "spixelfcn", "spixel": {"cell_size": 8, "width": 4}}).cell_size
        8
    """
    validate_model_config(config)
    if runtime is not None and not isinstance(runtime, Mapping):  # "abc" and 5 reached dict(): raw errors,
        # and a falsy value ("", 0, []) passed as no options
        raise TypeError(
            f"runtime must be a dict (or None) of the options {list(RUNTIME_KEYS)}, got "
            f"{type(runtime).__name__} ({runtime!r})"
        )
    runtime = dict(runtime) if runtime is not None else {}
    # sorted by str: keys of several types (1 and "x") made sorted() raise a raw TypeError
    unknown = sorted((k for k in runtime if k not in RUNTIME_KEYS), key=str)
    if unknown:
        raise ValueError(f"unknown runtime options {unknown} (known: {list(RUNTIME_KEYS)})")
    for key in ("recompute_fusion", "compile_refine"):  # passed as they are: bool("false") was True
        if key in runtime and not isinstance(runtime[key], bool):
            raise TypeError(f"runtime option {key} must be a bool, got {runtime[key]!r}")
    arch = config["arch"]
    net: nn.Module
    try:
        if arch == "joint":
            joint = dict(config["joint"])
            deeplab = DeepLabV3Plus(**config["deeplab"])
            spixel = SpixelFCN(**config["spixel"])
            return JointModel(
                deeplab,
                spixel,
                **joint,
                channels_last=runtime.get("channels_last", False),
                recompute_fusion=runtime.get("recompute_fusion", True),
                compile_refine=runtime.get("compile_refine", False),
            )
        net = DeepLabV3Plus(**config["deeplab"]) if arch == "deeplabv3plus" else SpixelFCN(**config["spixel"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"invalid model config for arch {arch!r}: {type(exc).__name__}: {exc}") from exc
    if network_channels_last(
        runtime.get("channels_last", False), "deeplab" if arch == "deeplabv3plus" else "spixelfcn"
    ):
        net.to(memory_format=torch.channels_last)
    return net
