"""Heads that train on cached features: plain nn.Modules (and their losses), usable in your own training code.

The training application that fits them from the CLI lives apart, in `freezeframe.train`.
"""

from freezeframe.heads.contrastive import AlproLoss, VideoClipLoss
from freezeframe.heads.evl import EVLConfig, EVLDecoder
from freezeframe.heads.probe import LinearProbe, ProbeConfig, sweep_l2
from freezeframe.heads.registry import HEADS, build_head, head_config
from freezeframe.heads.temporal import TemporalConfig, TemporalTransformer
from freezeframe.heads.videoclip import VideoCLIP, VideoClipConfig
from freezeframe.heads.zeroshot import ZeroShotClassifier

__all__ = [
    "AlproLoss", "EVLConfig", "EVLDecoder", "HEADS", "LinearProbe", "ProbeConfig", "TemporalConfig",
    "TemporalTransformer", "VideoCLIP", "VideoClipConfig", "VideoClipLoss", "ZeroShotClassifier", "build_head",
    "head_config", "sweep_l2",
]
