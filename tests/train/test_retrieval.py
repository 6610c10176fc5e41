"""Retrieval metrics against a brute-force ranking, ties, and the one-caption-per-video pair rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from freezeframe.train.retrieval import first_caption_per_video, ranks_of_pairs, retrieval_metrics
from freezeframe.text import Caption


def brute_force(similarity: np.ndarray, k: int) -> tuple[float, float]:
    ranks = []
    for i, row in enumerate(similarity):
        order = list(np.argsort(-row, kind="stable"))
        ranks.append(order.index(i) + 1)
    ranks = np.array(ranks)
    return float((ranks <= k).mean()), float(np.median(ranks))


def test_metrics_equal_a_brute_force_ranking():
    rng = np.random.default_rng(0)
    n = 37
    similarity = rng.standard_normal((n, n)) + 1.5 * np.eye(n)  # no ties
    metrics = retrieval_metrics(torch.from_numpy(similarity))
    for k in (1, 5, 10):
        assert metrics[f"t2v_r{k}"] == pytest.approx(brute_force(similarity, k)[0])
        assert metrics[f"v2t_r{k}"] == pytest.approx(brute_force(similarity.T, k)[0])
    # torch's median of an even count is the lower middle value; n is odd here
    assert metrics["t2v_median_rank"] == brute_force(similarity, 1)[1]
    assert metrics["v2t_median_rank"] == brute_force(similarity.T, 1)[1]
    assert metrics["num_pairs"] == n
    assert 0 < metrics["t2v_r1"] < metrics["t2v_r5"] < metrics["t2v_r10"] < 1


def test_perfect_and_reversed_retrieval_and_ties():
    perfect = torch.eye(4)
    assert retrieval_metrics(perfect) == {**{f"{d}_r{k}": 1.0 for d in ("t2v", "v2t") for k in (1, 5, 10)},
                                           "t2v_median_rank": 1.0, "v2t_median_rank": 1.0, "num_pairs": 4}
    ranks = ranks_of_pairs(-torch.eye(4))  # the pair scores lowest: last
    assert ranks.tolist() == [4, 4, 4, 4]
    assert ranks_of_pairs(torch.ones(3, 3)).tolist() == [3, 3, 3]  # a tie counts against the pair
    with pytest.raises(ValueError, match="square"):
        ranks_of_pairs(torch.ones(2, 3))


def test_one_caption_per_video_is_the_first_in_file_order():
    captions = [Caption("v2", "a", "x"), Caption("v1", "b", "y"), Caption("v2", "c", "z"), Caption("v1", "d", "w")]
    assert [c.caption_id for c in first_caption_per_video(captions)] == ["a", "b"]
