"""The training application: datasets over a store, the one fit loop and its objectives (classification,
contrastive), jobs behind `freezeframe train`/`eval`, run directories, checkpoints, curves and metrics. Heads
themselves are plain modules in `freezeframe.heads`."""

from freezeframe.train.classification import Classification
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate, collate_padded
from freezeframe.train.evaluation import evaluate, predict, topk_accuracy
from freezeframe.train.labels import LabelledVideos, read_label_csv
from freezeframe.train.loop import Objective, TrainConfig, fit
from freezeframe.train.run import RunInfo, load_head

__all__ = [
    "Classification", "FeatureDataset", "FrameSelection", "LabelledVideos", "Objective", "RunInfo", "TrainConfig",
    "collate", "collate_padded", "evaluate", "fit", "load_head", "predict", "read_label_csv", "topk_accuracy",
]
