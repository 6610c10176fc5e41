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


def retrieval_rows(similarity: torch.Tensor, text_ids: list[str], video_ids: list[str], k: int = 10) -> list[dict]:
    """Per query, both ways: its paired item (`match`), the pair's rank and the top-k ids and scores, from
    `similarity[text i, video j]` with text i paired to video i (ties rank against the pair, as in the metrics)."""
    from freezeframe.train.retrieval import ranks_of_pairs

    rows = []
    for direction, matrix, queries, items in (("t2v", similarity, text_ids, video_ids),
                                              ("v2t", similarity.T, video_ids, text_ids)):
        matrix = matrix.float()
        ranks = ranks_of_pairs(matrix).tolist()
        scores, top = matrix.topk(min(k, matrix.shape[1]), dim=1)
        for i, query in enumerate(queries):
            rows.append({"direction": direction, "query": query, "match": items[i], "rank": int(ranks[i]),
                         "top_ids": [items[j] for j in top[i].tolist()], "top_scores": scores[i].tolist()})
    return rows


def write_retrieval_predictions(path: str | Path, rows: list[dict]) -> None:
    """`retrieval_rows` as JSON lines (.jsonl/.json), or a CSV with top1_id, top1_score, ... columns."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() in (".jsonl", ".json"):
            handle.writelines(json.dumps(row) + "\n" for row in rows)
            return
        flat = [{**{key: row[key] for key in ("direction", "query", "match", "rank")},
                 **{f"top{n}_{what}": value for n, (i, s) in enumerate(zip(row["top_ids"], row["top_scores"]), 1)
                    for what, value in (("id", i), ("score", s))}} for row in rows]
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]) if flat else ["direction"])
        writer.writeheader()
        writer.writerows(flat)
