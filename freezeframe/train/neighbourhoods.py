"""Batches for contrastive training: random ones, clustered ones, and VideoCLIP's videos x clips ones.

Clustered (light towers' `--retrieval-augmented`): each epoch the videos are clustered (k-means on their
L2-normalised pooled input features, O(n*k*d) per iteration, FAISS at scale) and each batch is drawn from
one cluster, so its negatives are similar videos, i.e. hard ones.
Clusters are visited in a nearest-centroid chain, so a batch that runs past the end of a cluster continues
in the closest one. Videos x clips (`VideoClipBatches`) and their model-based neighbourhoods
(`ModelNeighbourBatches`, 16 clips per video re-embedded with the model being trained before every pass; MMPT's
64 nearest videos, seed included, of floor(videos / 32) random seed videos, through a FAISS IVF index of 512 lists
on large sets) are the published recipe's.
All samplers depend only on (seed, epoch) and the model: a resumed run draws the same batches.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from freezeframe.train.nearest import NeighbourSearch, nearest_neighbours


def squared_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(n, k) squared Euclidean distances by one matrix product: |x|^2 - 2 x.c + |c|^2 (clamped at 0)."""
    return (points.square().sum(1, keepdim=True) - 2 * points @ centroids.T
            + centroids.square().sum(1)[None]).clamp_min_(0)


def nearest_centroid(points: torch.Tensor, centroids: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    """Index of each point's nearest centroid, in chunks of points so the (chunk, k) distances stay small."""
    return torch.cat([squared_distances(points[i:i + chunk], centroids).argmin(dim=1)
                      for i in range(0, len(points), chunk)])


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeds in O(n*k*d): the distance to the nearest seed is updated with each new seed only."""
    norms = points.square().sum(1)
    chosen = [int(torch.randint(len(points), (1,), generator=generator))]
    nearest = (norms - 2 * points @ points[chosen[0]] + norms[chosen[0]]).clamp_min_(0)
    while len(chosen) < k:  # next seed drawn in proportion to the squared distance to the nearest one so far
        total = nearest.cumsum(0)
        if total[-1] > 0:  # inverse-CDF draw: one uniform number, one binary search
            draw = torch.rand(1, generator=generator, dtype=total.dtype) * total[-1]
            chosen.append(min(int(torch.searchsorted(total, draw)), len(points) - 1))
        else:
            chosen.append(int(torch.randint(len(points), (1,), generator=generator)))
        distance = (norms - 2 * points @ points[chosen[-1]] + norms[chosen[-1]]).clamp_min_(0)
        torch.minimum(nearest, distance, out=nearest)
    return points[chosen].clone()


def faiss_kmeans(points: torch.Tensor, k: int, seed: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FAISS's k-means (BLAS-backed, random seeds): (assignments, centroids)."""
    from freezeframe.extras import require

    faiss = require("faiss", "--retrieval-augmented batches")

    model = faiss.Kmeans(points.shape[1], k, niter=iterations, seed=seed, max_points_per_centroid=len(points),
                         min_points_per_centroid=1, verbose=False)
    model.train(points.numpy())
    _, assign = model.index.search(points.numpy(), 1)
    return torch.from_numpy(assign[:, 0]).long(), torch.from_numpy(model.centroids).float()


def kmeans(points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 20,
           seeding: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means: (cluster of each point (n,), centroids (k, dim)); O(n*k*d) per iteration.

    Seeds: k-means++ (`plusplus`), k distinct random points (`random`), or `auto`: k-means++ while
    n*k <= 5e7 (its k sequential passes are memory-bound), beyond that FAISS's k-means.
    """
    points = points.float().contiguous()
    k = max(1, min(k, len(points)))
    if seeding == "auto" and len(points) * k > 50_000_000:
        return faiss_kmeans(points, k, int(torch.randint(2**31 - 1, (1,), generator=generator)), iterations)
    if seeding in ("auto", "plusplus"):
        centroids = kmeans_plus_plus(points, k, generator)
    else:
        centroids = points[torch.randperm(len(points), generator=generator)[:k]].clone()
    assign = nearest_centroid(points, centroids)
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)  # an empty cluster keeps its seed
        updated = nearest_centroid(points, centroids)
        if torch.equal(updated, assign):
            break
        assign = updated
    return assign, centroids


def centroid_chain(centroids: torch.Tensor, first: int) -> list[int]:
    """Cluster order starting at `first`, each next cluster the nearest unvisited centroid."""
    distances = squared_distances(centroids, centroids)
    visited = torch.zeros(len(centroids), dtype=torch.bool)
    order = [first]
    visited[first] = True
    for _ in range(len(centroids) - 1):
        row = distances[order[-1]].masked_fill(visited, float("inf"))
        order.append(int(row.argmin()))
        visited[order[-1]] = True
    return order


class RandomBatches(Sampler[list[int]]):
    """Shuffled items cut into batches of `batch_size` (the last one may be smaller)."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 0) -> None:
        self.num_items, self.batch_size, self.seed, self.epoch = num_items, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, stream: int = 0) -> torch.Generator:
        """The epoch's random numbers (stream 0: the batches; another stream for other draws of the same epoch)."""
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + stream * 2**40)

    def __len__(self) -> int:
        return math.ceil(self.num_items / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.num_items, generator=self.generator()).tolist()
        yield from (order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size))


class NeighbourhoodBatches(RandomBatches):
    """Retrieval-augmented batches: items grouped by the cluster of their video, one neighbourhood per batch.

    `item_videos[i]` is the video (row of `pooled`) of item i; `clusters` defaults to one per batch of items.
    """

    def __init__(self, item_videos: Sequence[int], pooled: torch.Tensor, batch_size: int,
                 clusters: int | None = None, seed: int = 0) -> None:
        super().__init__(len(item_videos), batch_size, seed)
        self.item_videos = torch.as_tensor(list(item_videos))
        self.points = F.normalize(pooled.float(), dim=-1)
        self.clusters = clusters or max(1, round(len(item_videos) / batch_size))
        self.last_assignment: torch.Tensor | None = None  # cluster of each video in the latest epoch

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator()
        assign, centroids = kmeans(self.points, self.clusters, generator)
        self.last_assignment = assign
        item_cluster = assign[self.item_videos]
        first = int(torch.randint(len(centroids), (1,), generator=generator))
        order: list[int] = []
        for cluster in centroid_chain(centroids, first):
            members = torch.nonzero(item_cluster == cluster).flatten()
            order += members[torch.randperm(len(members), generator=generator)].tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        yield from (batches[i] for i in torch.randperm(len(batches), generator=generator).tolist())


class VideoClipBatches(RandomBatches):
    """VideoCLIP's batches: `videos_per_batch` videos x `clips_per_video` of each video's captions (clips).

    The clips of one video are each other's negatives. Each epoch every video is in one batch; a video with
    fewer captions gives all it has. `groups()` decides which videos share a batch (random here).
    """

    def __init__(self, item_videos: Sequence[int], videos_per_batch: int, clips_per_video: int,
                 seed: int = 0) -> None:
        super().__init__(len(item_videos), videos_per_batch * clips_per_video, seed)
        self.videos_per_batch, self.clips_per_video = videos_per_batch, clips_per_video
        self.items_of: dict[int, list[int]] = {}
        for item, video in enumerate(item_videos):
            self.items_of.setdefault(int(video), []).append(item)
        self.videos = sorted(self.items_of)

    def __len__(self) -> int:
        return math.ceil(len(self.videos) / self.videos_per_batch)

    def groups(self, generator: torch.Generator) -> list[list[int]]:
        order = [self.videos[i] for i in torch.randperm(len(self.videos), generator=generator).tolist()]
        return [order[i:i + self.videos_per_batch] for i in range(0, len(order), self.videos_per_batch)]

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator()
        for group in self.groups(generator):
            batch = []
            for video in group:
                items = self.items_of[video]
                picked = torch.randperm(len(items), generator=generator)[: self.clips_per_video]
                batch += [items[i] for i in picked.tolist()]
            yield batch


def candidates(seed: int, found: torch.Tensor) -> list[int]:
    """A seed's candidates as MMPT lists them (retri.py `search_by_video_ids`): the seed, then every video found but
    itself, without the -1s of a short IVF list. The seed is among the k found, so k candidates in all."""
    return [seed] + [i for i in found.tolist() if i >= 0 and i != seed]


def mean_points(video: torch.Tensor, text: torch.Tensor, owners: torch.Tensor, count: int,
                normalize: bool = False) -> torch.Tensor:
    """(count, width) points: row j the mean of (video + text) / 2 over the rows owned by j (MMPT's VideoVectorPool);
    L2-normalised with `normalize`."""
    joint = (video.float() + text.float()) / 2
    sums = torch.zeros(count, joint.shape[1]).index_add_(0, owners, joint)
    means = sums / torch.bincount(owners, minlength=count).clamp_min(1)[:, None]
    return F.normalize(means, dim=-1) if normalize else means


class ModelNeighbourBatches(VideoClipBatches):
    """VideoCLIP's retrieval augmentation: batches of videos that are near neighbours under the current model.

    `refresh` (called by the training loop before each pass) re-embeds, with the model being trained, `search.clips`
    captions of every video drawn with replacement (MMPT: 16 `clip_per_video`), and a video's point is the mean
    of (video embedding + text embedding) / 2 over them, un-normalised (`NeighbourSearch` keeps the earlier
    every-caption, normalised points as an option). Groups, as MMPT draws them (tasks/retritask.py
    `VideoRetriPredictor`): floor(videos / `videos_per_batch`) distinct random seed videos (at least one), each
    searched for its `search.k` nearest (exact, or FAISS IVF on large sets: train.nearest), which include itself;
    of those candidates `videos_per_batch` are drawn at random. A pass may repeat a video and miss another.
    """

    def __init__(self, item_videos: Sequence[int], videos_per_batch: int, clips_per_video: int,
                 seed: int = 0, search: NeighbourSearch = NeighbourSearch()) -> None:
        super().__init__(item_videos, videos_per_batch, clips_per_video, seed)
        self.item_videos = torch.as_tensor(list(item_videos))
        self.search = search
        self.points: torch.Tensor | None = None  # (videos, width), rows in `self.videos` order

    def __len__(self) -> int:
        return max(1, len(self.videos) // self.videos_per_batch)

    def point_items(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(items, owners): the items embedded for the points and the row of `self.videos` each belongs to."""
        if self.search.clips is None:
            row_of = {video: row for row, video in enumerate(self.videos)}
            return torch.arange(len(self.item_videos)), torch.tensor([row_of[int(v)] for v in self.item_videos])
        flat = torch.tensor([item for video in self.videos for item in self.items_of[video]])
        counts = torch.tensor([len(self.items_of[video]) for video in self.videos])
        starts = counts.cumsum(0) - counts
        draws = (torch.rand(len(counts), self.search.clips, generator=generator) * counts[:, None]).long()
        picked = flat[starts[:, None] + torch.minimum(draws, counts[:, None] - 1)]
        return picked.flatten(), torch.arange(len(counts)).repeat_interleave(self.search.clips)

    def refresh(self, model, dataset, device) -> None:
        from torch.utils.data import Subset

        from freezeframe.train.videotext import embed_pairs

        items, owners = self.point_items(self.generator(stream=1))
        unique, inverse = items.unique(return_inverse=True)  # a caption drawn twice is embedded once
        video, text = embed_pairs(model, Subset(dataset, unique.tolist()), device=device)
        self.points = mean_points(video[inverse], text[inverse], owners, len(self.videos), self.search.normalize)

    def seed_candidates(self, seeds: torch.Tensor, generator: torch.Generator) -> list[list[int]]:
        """Each seed's candidates (rows of `self.points`): its `search.k` nearest, itself included."""
        found = nearest_neighbours(self.points, seeds, self.search.k, self.search, generator)
        return [candidates(seed, row) for seed, row in zip(seeds.tolist(), found)]

    def groups(self, generator: torch.Generator) -> list[list[int]]:
        if self.points is None:
            return super().groups(generator)[:len(self)]
        seeds = torch.randperm(len(self.videos), generator=generator)[:len(self)]
        groups = []
        for near in self.seed_candidates(seeds, generator):
            picked = torch.randperm(len(near), generator=generator)[:self.videos_per_batch].sort().values
            groups.append([self.videos[near[i]] for i in picked.tolist()])
        return groups
