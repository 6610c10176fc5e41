"""Nearest neighbours behind VideoCLIP's retrieval-augmented batches: exact search, the FAISS IVF index that takes
over on large sets (its neighbours agree with the exact ones), and MMPT's groups of a seed video's neighbours."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from freezeframe.train.nearest import NeighbourSearch, exact_neighbours, nearest_neighbours
from freezeframe.train.neighbourhoods import ModelNeighbourBatches


def clustered(n: int, dim: int, seed: int = 3) -> torch.Tensor:
    """n unit vectors around n / 100 random centres, like embeddings that group by topic."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n // 100, dim, generator=generator), dim=-1)
    members = centres[torch.randint(len(centres), (n,), generator=generator)]
    return F.normalize(members + 0.05 * torch.randn(n, dim, generator=generator), dim=-1)


def recall(exact: torch.Tensor, approx: torch.Tensor) -> float:
    return sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact, approx)) / exact.numel()


def test_exact_neighbours_are_the_nearest_by_distance_query_first():
    points = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    queries = torch.tensor([0, 17, 299])
    found = exact_neighbours(points, queries, 10, chunk=2)
    for query, row in zip(queries, found):
        distances = (points - points[query]).norm(dim=1)
        assert row[0] == query
        assert torch.equal(row, distances.argsort()[:10])


def test_ivf_neighbours_agree_with_exact_ones():
    """6,000 points of 64 dims, 187 queries (one per 32 videos), 64 neighbours; IVF forced (exact_up_to=0):
    77 lists. Measured recall: 0.889 with MMPT's 1 probe (its lists' edges cut some neighbourhoods, and a list
    smaller than 64 leaves -1s), 0.996 with 2."""
    points = clustered(6000, 64)
    queries = torch.randperm(6000, generator=torch.Generator().manual_seed(1))[:6000 // 32]
    exact = exact_neighbours(points, queries, 64)
    for probes, bound in ((1, 0.85), (2, 0.98)):
        search = NeighbourSearch(probes=probes, exact_up_to=0)
        assert search.lists(6000) == 77  # sqrt(n) lists, each trained on 48 points
        approx = nearest_neighbours(points, queries, 64, search, torch.Generator().manual_seed(0))
        assert approx.shape == (len(queries), 64) and torch.equal(approx[:, 0], queries)
        assert recall(exact, approx) >= bound, (probes, recall(exact, approx))
        again = nearest_neighbours(points, queries, 64, search, torch.Generator().manual_seed(0))
        assert torch.equal(approx, again)  # seeded: a resumed run draws the same batches


def test_small_sets_are_searched_exactly():
    points = clustered(2000, 32)
    queries = torch.arange(0, 2000, 50)
    assert torch.equal(nearest_neighbours(points, queries, 64), exact_neighbours(points, queries, 64))
    tiny = torch.randn(40, 8, generator=torch.Generator().manual_seed(2))  # fewer points than a list trains on
    assert NeighbourSearch(exact_up_to=0).lists(40) == 0
    found = nearest_neighbours(tiny, torch.tensor([3]), 64, NeighbourSearch(exact_up_to=0))
    assert found.shape == (1, 40) and found[0, 0] == 3


def test_model_neighbour_groups_are_a_random_seeds_nearest_videos():
    videos, per_batch = 600, 8
    item_videos = [v for v in range(videos) for _ in range(2)]  # two captions per video
    batches = ModelNeighbourBatches(item_videos, per_batch, 2, seed=4, search=NeighbourSearch(k=16))
    batches.points = clustered(videos, 16)
    groups = batches.groups(torch.Generator().manual_seed(0))
    assert len(groups) == len(batches) == videos // per_batch
    # every video with its 16 nearest: a group is 8 of one such neighbourhood (its seed's; the seed may be left out)
    neighbourhoods = [set(row.tolist()) for row in exact_neighbours(batches.points, torch.arange(videos), 17)]
    for group in groups:
        assert len(group) == per_batch == len(set(group))
        assert any(set(group) <= near for near in neighbourhoods), group
    assert len({frozenset(group) for group in groups}) == len(groups)
    batches.set_epoch(1)
    other = batches.groups(batches.generator())
    batches.set_epoch(1)
    assert other == batches.groups(batches.generator()) != groups
