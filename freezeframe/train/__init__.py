"""The training application: datasets over a store, the fit loops, jobs behind `freezeframe train`/`eval`,
run directories, curves and metrics. Heads themselves are plain modules in `freezeframe.heads`."""

from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate
from freezeframe.train.evaluation import evaluate, predict, topk_accuracy
from freezeframe.train.loop import TrainConfig, train_classifier
from freezeframe.train.run import RunInfo, load_head

__all__ = [
    "FeatureDataset", "FrameSelection", "RunInfo", "TrainConfig", "collate", "evaluate", "load_head", "predict",
    "topk_accuracy", "train_classifier",
]
