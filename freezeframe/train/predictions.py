"""Per-item prediction files and confusion counts that `eval` and `zeroshot` write: per video its label,
prediction and class probabilities; per retrieval query its top-k matches and scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(true class, predicted class) -> count."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels.numpy(), predicted.numpy()), 1)
    return counts


def write_predictions(path: str | Path, ids: list[str], probs: torch.Tensor, labels: list[int], classes: list[str]) -> None:
    """One row per video: video_id, label, prediction, score (its probability), then every class's probability."""
    path = Path(path)
    predicted = probs.argmax(1).tolist()
    rows = [{"video_id": v, "label": classes[t], "prediction": classes[p], "score": float(probs[i, p]),
             **{f"p:{c}": float(probs[i, j]) for j, c in enumerate(classes)}}
            for i, (v, t, p) in enumerate(zip(ids, labels, predicted))]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() in (".jsonl", ".json"):
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["video_id"])
            writer.writeheader()
            writer.writerows(rows)
