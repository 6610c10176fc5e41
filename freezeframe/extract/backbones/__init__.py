"""Frozen backbones that turn preprocessed frames (or windows of frames) into named feature arrays."""

from freezeframe.extract.backbones.base import Backbone, BackboneConfig, build_backbone
from freezeframe.extract.backbones.clip import CLIP_FEATURES, ClipBackbone, ClipConfig
from freezeframe.extract.backbones.s3d import S3DG, S3DBackbone, S3DConfig

__all__ = ["CLIP_FEATURES", "S3DG", "Backbone", "BackboneConfig", "ClipBackbone", "ClipConfig", "S3DBackbone",
           "S3DConfig", "build_backbone"]
