"""VideoCLIP's retrieval-augmented batches against fairseq MMPT's own sampler (tests/data/reference/
mmpt_retrieval.json, made by make_mmpt_retrieval.py from MMPT's retri.py, vectorpool.py and retritask.py): the
points, the seed count, the IVF and exact candidates and the draw of a video's clips; then exact search itself and
the groups a pass draws."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from freezeframe.train.nearest import NeighbourSearch, exact_neighbours, ivf_neighbours, nearest_neighbours
from freezeframe.train.neighbourhoods import ModelNeighbourBatches, candidates, mean_points

REFERENCE = Path(__file__).parents[1] / "data" / "reference"
MMPT = json.loads((REFERENCE / "mmpt_retrieval.json").read_text())
SEEDS = torch.tensor(MMPT["seeds"])


def clustered(n: int, dim: int, seed: int = 3) -> torch.Tensor:
    """n unit vectors around n / 100 random centres, like embeddings that group by topic."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(n // 100, dim, generator=generator), dim=-1)
    members = centres[torch.randint(len(centres), (n,), generator=generator)]
    return F.normalize(members + 0.05 * torch.randn(n, dim, generator=generator), dim=-1)


@pytest.fixture(scope="module")
def points() -> torch.Tensor:
    """freezeframe's points of the fixture's videos, from the same 16 clip embeddings MMPT's model stand-in gave."""
    sys.path.insert(0, str(REFERENCE))
    from make_mmpt_retrieval import clip_embeddings

    video, text = (torch.from_numpy(x) for x in clip_embeddings())
    videos, clips, dim = video.shape
    assert NeighbourSearch().clips == clips == 16
    return mean_points(video.reshape(-1, dim), text.reshape(-1, dim), torch.arange(videos).repeat_interleave(clips),
                       videos, NeighbourSearch().normalize)


def digest(rows: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def candidate_lists(found: torch.Tensor) -> list[list[int]]:
    return [candidates(seed, row) for seed, row in zip(SEEDS.tolist(), found)]


def test_points_equal_mmpts_video_vector_pool(points):
    """MMPT's VideoVectorPool: the un-normalised mean of (video + text) / 2 over a video's 16 clips."""
    torch.testing.assert_close(points[:4], torch.tensor(MMPT["points"]["first"]), atol=1e-6, rtol=1e-6)
    assert points.double().sum().item() == pytest.approx(MMPT["points"]["sum"], abs=1e-2)
    assert points.double().abs().sum().item() == pytest.approx(MMPT["points"]["abs_sum"], rel=1e-7)
    assert points.double().abs().sum().item() != pytest.approx(  # the earlier normalised points are not MMPT's
        F.normalize(points, dim=-1).double().abs().sum().item(), rel=1e-2)


def test_seed_count_is_mmpts_floor_of_videos_per_32():
    videos = MMPT["inputs"]["videos"]
    assert len(MMPT["seeds"]) == len(set(MMPT["seeds"])) == videos // 32
    for n in (videos, videos + 31, 31):
        batches = ModelNeighbourBatches(list(range(n)), 32, 16)
        assert len(batches) == max(1, n // 32)


def test_ivf_candidates_equal_mmpts(points):
    """MMPT's IndexIVFFlat (512 lists trained on its first 512 x 48 points, FAISS seed 1234, 1 probe), fed the same
    training points in the same order: the same 64 candidates, seed first, for all 800 seeds (fewer where the
    seed's one list holds fewer than 64 videos: 25,600 videos over 512 lists)."""
    search = NeighbourSearch(exact_up_to=0)
    assert search.lists(len(points)) == MMPT["index"]["lists"] == 512
    assert search.lists(len(points)) * search.points_per_list == MMPT["index"]["train_points"]
    found = ivf_neighbours(points, SEEDS, search.k, search, torch.arange(MMPT["index"]["train_points"]))
    ours = candidate_lists(found)
    assert ours[:len(MMPT["candidates"]["shown"])] == MMPT["candidates"]["shown"]
    assert [len(c) for c in ours] == MMPT["candidates"]["lengths"] and max(map(len, ours)) == 64
    assert digest(ours) == MMPT["candidates"]["sha256"]


def test_exact_search_equals_mmpts_ivf_probing_every_list(points):
    """Up to 50,000 videos freezeframe searches exactly: MMPT's IVF with every list probed gives the same 64
    candidates in the same order; the earlier normalised points share only part of them."""
    batches = ModelNeighbourBatches(list(range(len(points))), 32, 16)
    batches.points = points
    ours = batches.seed_candidates(SEEDS, batches.generator())
    assert ours[:len(MMPT["exact"]["shown"])] == MMPT["exact"]["shown"]
    assert digest(ours) == MMPT["exact"]["sha256"] and {len(c) for c in ours} == {64}
    cosine = candidate_lists(nearest_neighbours(F.normalize(points, dim=-1), SEEDS, 64))
    shared = np.mean([len(set(a) & set(b)) / 64 for a, b in zip(ours, cosine)])
    assert shared < 0.9, shared


def test_point_clips_are_drawn_as_mmpts_aligner():
    """MMPT draws a video's 16 clips uniformly with replacement (FixedLenAligner, clip_per_video 16): the mean
    number of distinct captions among them matches the fixture's for videos of 1 to 40 captions."""
    for count, drawn in MMPT["clip_draws"].items():
        count, videos = int(count), 500
        item_videos = [v for v in range(videos) for _ in range(count)]
        batches = ModelNeighbourBatches(item_videos, 32, 16, seed=1)
        items, owners = batches.point_items(torch.Generator().manual_seed(0))
        assert len(items) == videos * drawn["clips"] and torch.equal(torch.tensor(item_videos)[items], owners)
        distinct = np.mean([len(set(items[owners == v].tolist())) for v in range(videos)])
        assert distinct == pytest.approx(drawn["mean_distinct"], abs=0.2), (count, distinct)
        again, _ = batches.point_items(torch.Generator().manual_seed(0))
        assert torch.equal(items, again)  # seeded: a resumed run embeds the same clips
    every = ModelNeighbourBatches([0, 0, 1, 1, 1], 2, 2, search=NeighbourSearch(clips=None, normalize=True))
    items, owners = every.point_items(torch.Generator())
    assert items.tolist() == [0, 1, 2, 3, 4] and owners.tolist() == [0, 0, 1, 1, 1]


def test_ivf_probing_every_list_is_exact_search():
    points = clustered(3000, 16) * torch.linspace(0.5, 2, 3000)[:, None]
    queries = torch.arange(0, 3000, 37)
    search = NeighbourSearch(max_lists=32, probes=32, exact_up_to=0)
    found = ivf_neighbours(points, queries, 64, search, torch.randperm(3000, generator=torch.Generator())[:1536])
    assert torch.equal(found, exact_neighbours(points, queries, 64))


def test_exact_neighbours_are_the_nearest_by_distance_query_first():
    points = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    queries = torch.tensor([0, 17, 299])
    found = exact_neighbours(points, queries, 10, chunk=2)
    for query, row in zip(queries, found):
        distances = (points - points[query]).norm(dim=1)
        assert row[0] == query
        assert torch.equal(row, distances.argsort()[:10])


def test_tiny_sets_train_no_more_lists_than_points():
    tiny = torch.randn(40, 8, generator=torch.Generator().manual_seed(2))
    assert NeighbourSearch(exact_up_to=0).lists(40) == 40
    found = nearest_neighbours(tiny, torch.tensor([3]), 64, NeighbourSearch(exact_up_to=0))
    assert found.shape == (1, 40) and found[0, 0] == 3


def test_model_neighbour_groups_are_a_random_seeds_nearest_videos():
    videos, per_batch = 600, 8
    item_videos = [v for v in range(videos) for _ in range(2)]  # two captions per video
    batches = ModelNeighbourBatches(item_videos, per_batch, 2, seed=4, search=NeighbourSearch(k=16))
    batches.points = clustered(videos, 16)
    groups = batches.groups(torch.Generator().manual_seed(0))
    assert len(groups) == len(batches) == videos // per_batch
    # each video's 16 candidates (itself among them): a group is 8 of one of them (its seed's; maybe without it)
    neighbourhoods = [set(row.tolist()) for row in exact_neighbours(batches.points, torch.arange(videos), 16)]
    for group in groups:
        assert len(group) == per_batch == len(set(group))
        assert any(set(group) <= near for near in neighbourhoods), group
    assert len({frozenset(group) for group in groups}) == len(groups)
    batches.set_epoch(1)
    other = batches.groups(batches.generator())
    batches.set_epoch(1)
    assert other == batches.groups(batches.generator()) != groups
