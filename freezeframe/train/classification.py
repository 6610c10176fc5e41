"""The classification objective of the fit loop: labelled videos, cross-entropy on the head's logits, top-1/top-5
on the validation videos (the best weights are those of the best validation top-1)."""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from freezeframe.train.datasets import FeatureDataset, collate_for
from freezeframe.train.evaluation import evaluate, to_device
from freezeframe.train.loop import TrainConfig


class Classification:
    """Batches of `config.batch_size` labelled videos in a fresh order each pass (seeded by seed and pass)."""

    more_passes = False
    score_key = "val_top1"
    shown = ("train_loss", "train_top1", "val_loss", "val_top1", "val_top5")
    unit = "videos"

    def __init__(self, train_set: FeatureDataset, val_set: FeatureDataset | None, config: TrainConfig) -> None:
        self.train_set, self.val_set, self.config = train_set, val_set, config
        self.modules: dict[str, nn.Module] = {}
        classes = train_set.classes
        self.top5 = classes is None or len(classes) > 5  # with 5 classes or fewer top-5 is always 100%: not shown
        self.shown = tuple(k for k in self.shown if k != "val_top5" or self.top5)

    def __len__(self) -> int:
        return len(self.train_set)

    def steps_per_pass(self) -> int:
        return math.ceil(len(self.train_set) / self.config.batch_size)

    def batches(self, head: nn.Module, data_pass: int, device: torch.device) -> Iterable:
        self.train_set.set_epoch(data_pass)
        order = torch.Generator().manual_seed(self.config.seed * 100_003 + data_pass)
        return DataLoader(self.train_set, batch_size=self.config.batch_size, shuffle=True, generator=order,
                          collate_fn=collate_for(head), num_workers=self.config.workers, pin_memory=device.type == "cuda")

    def loss(self, head: nn.Module, batch: dict, device: torch.device) -> tuple[torch.Tensor, int, dict[str, float]]:
        labels = batch["label"].to(device)
        logits = head(to_device(batch["inputs"], device))
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        return loss, len(labels), {"train_top1": int((logits.argmax(1) == labels).sum())}

    def validate(self, head: nn.Module, device: torch.device) -> dict:
        if self.val_set is None:
            return {}
        val = evaluate(head, self.val_set, self.config.batch_size, device, self.config.workers)
        return {"val_loss": val["loss"], "val_top1": val["top1"], **({"val_top5": val["top5"]} if self.top5 else {})}
