"""Frozen backbones that turn preprocessed frames (or windows of frames) into named feature arrays.

Importing this package registers every built-in backbone (see `registry`); each module is one family.
"""

from freezeframe.extract.backbones.base import Backbone, BackboneConfig, FrozenBackbone, build_backbone
from freezeframe.extract.backbones.registry import (REGISTRY, BackboneEntry, backbone_config, backbone_names,
                                                    config_from_options, entry_for_config, get_entry,
                                                    register_backbone)
from freezeframe.extract.backbones.clip import CLIP_FEATURES, ClipBackbone, ClipConfig  # noqa: E402 - registers
from freezeframe.extract.backbones.s3d import S3DG, S3DBackbone, S3DConfig  # noqa: E402
from freezeframe.extract.backbones.timm_image import TimmBackbone, TimmConfig  # noqa: E402
from freezeframe.extract.backbones.tv_video import TorchvisionVideoBackbone, TorchvisionVideoConfig  # noqa: E402
from freezeframe.extract.backbones.i3d import I3DBackbone, I3DConfig, InceptionI3d  # noqa: E402

__all__ = ["CLIP_FEATURES", "I3DBackbone", "I3DConfig", "InceptionI3d", "REGISTRY", "S3DG", "Backbone", "BackboneConfig", "BackboneEntry", "ClipBackbone",
           "ClipConfig", "FrozenBackbone", "S3DBackbone", "S3DConfig", "TimmBackbone", "TimmConfig", "TorchvisionVideoBackbone",
           "TorchvisionVideoConfig", "backbone_config", "backbone_names", "build_backbone", "entry_for_config",
           "config_from_options", "get_entry", "register_backbone"]
