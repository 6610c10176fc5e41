"""Batches for contrastive training: plain random ones, or VideoCLIP's retrieval-augmented ones.

Retrieval-augmented: each epoch the videos are clustered (k-means in torch on their L2-normalised pooled
features) and each batch is drawn from one cluster, so its negatives are similar videos, i.e. hard ones.
Clusters are visited in a nearest-centroid chain, so a batch that runs past the end of a cluster continues
in the closest one. Both samplers depend only on (seed, epoch): a resumed run draws the same batches.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler


def kmeans(points: torch.Tensor, k: int, generator: torch.Generator, iterations: int = 25) -> tuple[torch.Tensor,
                                                                                                     torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding: (cluster of each point (n,), centroids (k, dim))."""
    points = points.float()
    k = max(1, min(k, len(points)))
    centroids = points[torch.randint(len(points), (1,), generator=generator)]
    while len(centroids) < k:  # k-means++: next seed drawn in proportion to the squared distance to the nearest one
        nearest = torch.cdist(points, centroids).min(dim=1).values.square()
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)
        centroids = torch.cat([centroids, points[torch.multinomial(weights, 1, generator=generator)]])
    assign = torch.cdist(points, centroids).argmin(dim=1)
    for _ in range(iterations):
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)  # an empty cluster keeps its seed
        updated = torch.cdist(points, centroids).argmin(dim=1)
        if torch.equal(updated, assign):
            break
        assign = updated
    return assign, centroids


def centroid_chain(centroids: torch.Tensor, first: int) -> list[int]:
    """Cluster order starting at `first`, each next cluster the nearest unvisited centroid."""
    order, left = [first], set(range(len(centroids))) - {first}
    while left:
        candidates = sorted(left)
        distances = torch.cdist(centroids[order[-1]][None], centroids[candidates])[0]
        order.append(candidates[int(distances.argmin())])
        left.remove(order[-1])
    return order


class RandomBatches(Sampler[list[int]]):
    """Shuffled items cut into batches of `batch_size` (the last one may be smaller)."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 0) -> None:
        self.num_items, self.batch_size, self.seed, self.epoch = num_items, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

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
