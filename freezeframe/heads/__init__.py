"""Heads that train on cached features: plain nn.Modules, usable in your own training code too."""

from freezeframe.heads.contrastive import AlproLoss, VideoClipLoss
from freezeframe.heads.evaluation import evaluate, predict, topk_accuracy
from freezeframe.heads.evl import EVLConfig, EVLDecoder
from freezeframe.heads.probe import LinearProbe, ProbeConfig, sweep_l2
from freezeframe.heads.registry import HEADS, build_head, head_config
from freezeframe.heads.run import RunInfo, load_head
from freezeframe.heads.temporal import TemporalConfig, TemporalTransformer
from freezeframe.heads.training import TrainConfig, train_classifier
from freezeframe.heads.videoclip import VideoCLIP, VideoClipConfig
from freezeframe.heads.zeroshot import ZeroShotClassifier

__all__ = [
    "AlproLoss", "VideoCLIP", "VideoClipConfig", "VideoClipLoss", "ZeroShotClassifier",
    "EVLConfig", "EVLDecoder", "HEADS", "LinearProbe", "ProbeConfig", "RunInfo", "TemporalConfig",
    "TemporalTransformer", "TrainConfig", "build_head", "evaluate", "head_config", "load_head", "predict",
    "sweep_l2", "topk_accuracy", "train_classifier",
]
