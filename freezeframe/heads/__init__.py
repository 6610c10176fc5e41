"""Heads that train on cached features: plain nn.Modules (and their losses), usable in your own training code.

Importing this package registers every built-in head (see `registry`); the training application that fits them
from the CLI lives apart, in `freezeframe.train`.
"""

from freezeframe.heads.registry import REGISTRY, HeadEntry, build_head, get_head, head_config, head_names, register_head
from freezeframe.heads.contrastive import AlproLoss, VideoClipLoss
# the head modules register themselves in this order, the order of `freezeframe train --help` and the README
from freezeframe.heads.probe import LinearProbe, ProbeConfig, sweep_l2
from freezeframe.heads.temporal import TemporalConfig, TemporalTransformer
from freezeframe.heads.evl import EVLConfig, EVLDecoder
from freezeframe.heads.videoclip import VideoCLIP, VideoClipConfig
from freezeframe.heads.videoclip_head import build_videoclip  # noqa: F401 - registers the videoclip head
from freezeframe.heads.zeroshot import ZeroShotClassifier

__all__ = [
    "REGISTRY", "AlproLoss", "EVLConfig", "EVLDecoder", "HeadEntry", "LinearProbe", "ProbeConfig", "TemporalConfig",
    "TemporalTransformer", "VideoCLIP", "VideoClipConfig", "VideoClipLoss", "ZeroShotClassifier", "build_head",
    "get_head", "head_config", "head_names", "register_head", "sweep_l2",
]
