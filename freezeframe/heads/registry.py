"""Head kinds by name: how to size each head from a feature set, and how to rebuild it from a saved config."""

from __future__ import annotations

import math
from dataclasses import asdict, fields

import torch.nn as nn

from freezeframe.errors import InputError
from freezeframe.heads.evl import EVLConfig, EVLDecoder
from freezeframe.heads.probe import LinearProbe, ProbeConfig
from freezeframe.heads.temporal import TemporalConfig, TemporalTransformer
from freezeframe.heads.videoclip import VideoClipConfig, build_videoclip
from freezeframe.store.feature_set import FeatureSet

HEADS: dict[str, tuple[type, type[nn.Module]]] = {
    "probe": (ProbeConfig, LinearProbe),
    "temporal": (TemporalConfig, TemporalTransformer),
    "evl": (EVLConfig, EVLDecoder),
    "videoclip": (VideoClipConfig, build_videoclip),  # trained by heads.videoclip_training
}


def _array_shape(feature_set: FeatureSet, array: str) -> list[int]:
    arrays = feature_set.arrays()
    if array not in arrays:
        raise InputError(f"feature set {feature_set.name!r} has no array {array!r}; it has: {', '.join(arrays)}.")
    return arrays[array]["shape"]


def head_config(kind: str, feature_set: FeatureSet, num_classes: int, num_frames: int, **options):
    """A head config sized from what the feature set stores; `options` override head fields."""
    if kind in ("probe", "temporal"):
        array = options.pop("array", "embed")
        (dim,) = _array_shape(feature_set, array)
        extra = {"max_frames": max(num_frames, 1)} if kind == "temporal" else {}
        return HEADS[kind][0](num_classes=num_classes, input_dim=dim, array=array, **extra, **options)
    if kind == "evl":
        attention = feature_set.provenance.get("attention")
        if not attention:
            raise InputError(f"EVL needs token maps: feature set {feature_set.name!r} was not extracted with --features tokens.")
        depth = options.pop("num_layers", len(attention["blocks"]))
        blocks = tuple(sorted(attention["blocks"])[-depth:])
        tokens, width = _array_shape(feature_set, f"tokens/{blocks[0]}")
        side = math.isqrt(tokens - 1)
        if side * side != tokens - 1:
            raise InputError(f"EVL needs a square patch grid; token maps have {tokens - 1} patch tokens.")
        return EVLConfig(num_classes=num_classes, width=width, blocks=blocks, num_frames=num_frames, grid=(side, side),
                         backbone_heads=attention["num_heads"], backbone_norm_eps=attention["norm_eps"], **options)
    raise InputError(f"unknown head {kind!r}; choose one of {', '.join(HEADS)}.")


def build_head(kind: str, config) -> nn.Module:
    return HEADS[kind][1](config)


def config_to_dict(config) -> dict:
    return asdict(config)


def config_from_dict(kind: str, data: dict):
    cls = HEADS[kind][0]
    names = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**values)
