"""Text<->video retrieval metrics: recall at K and median rank, in both directions, over paired items.

Pairs: item i of the texts matches item i of the videos. When a video has several captions, one caption per
video is its pair (`first_caption_per_video`: the first in file order), so the similarity matrix is square.
Ties count against the true item (its rank is 1 + every other item scoring at least as high).
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import torch

T = TypeVar("T")


def first_caption_per_video(captions: Sequence[T]) -> list[T]:
    """The first caption of each video, in file order (items need a `video_id`)."""
    seen: set[str] = set()
    chosen = []
    for caption in captions:
        if caption.video_id not in seen:
            seen.add(caption.video_id)
            chosen.append(caption)
    return chosen


def ranks_of_pairs(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of the paired column (the diagonal) in each row of a square similarity matrix."""
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"expected a square similarity matrix, got shape {tuple(similarity.shape)}")
    true = similarity.diagonal()[:, None]
    return (similarity >= true).sum(dim=1)  # counts the pair itself, so the best rank is 1


def retrieval_metrics(similarity: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """t2v_r1 ... v2t_median_rank for `similarity[text i, video j]` with text i paired to video i."""
    out: dict[str, float] = {}
    for direction, matrix in (("t2v", similarity), ("v2t", similarity.T)):
        ranks = ranks_of_pairs(matrix.float())
        for k in ks:
            out[f"{direction}_r{k}"] = float((ranks <= k).float().mean())
        out[f"{direction}_median_rank"] = float(ranks.float().median())
    out["num_pairs"] = int(similarity.shape[0])
    return out
