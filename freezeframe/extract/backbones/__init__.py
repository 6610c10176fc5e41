"""Frozen backbones that turn preprocessed frames into named feature arrays."""

from freezeframe.extract.backbones.clip import CLIP_FEATURES, ClipBackbone, ClipConfig

__all__ = ["CLIP_FEATURES", "ClipBackbone", "ClipConfig"]
