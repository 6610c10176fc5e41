"""Predictions and top-k accuracy of a head over a dataset, averaging over stored clips."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from freezeframe.train.datasets import FeatureDataset, collate_for


def to_device(inputs: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}


@torch.no_grad()
def predict(head: nn.Module, dataset: FeatureDataset, batch_size: int = 32, device: str | torch.device = "cpu",
            workers: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities (videos, classes), averaged over clips when the dataset yields stored clips."""
    device = torch.device(device)
    head.eval().to(device)
    clips = dataset.selection.mode == "stored-clips"
    padded = getattr(head, "takes_frame_mask", False)
    size = 1 if dataset.selection.mode == "all" and not padded else batch_size
    probs, labels = [], []
    for batch in DataLoader(dataset, batch_size=size, collate_fn=collate_for(head), num_workers=workers):
        inputs = to_device(batch["inputs"], device)
        if clips:
            b, c = next(iter(inputs.values())).shape[:2]
            inputs = {k: x.flatten(0, 1) for k, x in inputs.items()}
            probs.append(F.softmax(head(inputs).float(), dim=-1).view(b, c, -1).mean(1).cpu())
        else:
            probs.append(F.softmax(head(inputs).float(), dim=-1).cpu())
        if "label" in batch:
            labels.append(batch["label"])
    return torch.cat(probs), (torch.cat(labels) if labels else None)


def topk_accuracy(probs: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    k = min(k, probs.shape[1])
    return float((probs.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean())


def evaluate(head: nn.Module, dataset: FeatureDataset, batch_size: int = 32, device: str | torch.device = "cpu",
             workers: int = 0) -> dict:
    """top-1, top-5 (or top-k with k = classes when fewer), mean negative log-likelihood, video count."""
    probs, labels = predict(head, dataset, batch_size, device, workers)
    return scores(probs, labels)


def scores(probs: torch.Tensor, labels: torch.Tensor) -> dict:
    """The metrics of `evaluate` from class probabilities (videos, classes) and labels (videos,)."""
    nll = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), labels))
    return {"top1": topk_accuracy(probs, labels, 1), "top5": topk_accuracy(probs, labels, 5), "loss": nll,
            "num_videos": len(labels)}
