"""The k nearest neighbours of chosen points among all points: exact for sets up to `exact_up_to` points, a FAISS
IVF index beyond, as fairseq MMPT builds VideoCLIP's retrieval-augmented batches (IndexIVFFlat under L2, at most
4,096 lists, each trained on 48 points, 1 list probed, 64 neighbours). Exact search costs queries x points x dim in
matrix products; IVF pays a k-means over 48 points per list, adds every point to a list, then scans about
points / lists x probes points per query, one query at a time, so on a CPU it wins only on large sets
(benchmarks/neighbour_search.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NeighbourSearch:
    """How neighbours are found. Defaults: MMPT's (64 neighbours; at most 4,096 lists, 48 training points per list,
    1 probe) but at most sqrt(n) lists and 10 k-means iterations to train them (faiss: 25), which cost less here;
    exact search up to 50,000 points, about where IVF becomes the faster on a CPU."""

    k: int = 64
    max_lists: int = 4096
    points_per_list: int = 48
    probes: int = 1
    iterations: int = 10
    exact_up_to: int = 50_000

    def lists(self, n: int) -> int:
        """Inverted lists for `n` points: at most sqrt(n) (cheapest for a pass's n / 32 queries, where adding n
        points to many lists costs most), `max_lists`, and as many as 48 training points each allow."""
        return min(self.max_lists, n // self.points_per_list, math.isqrt(n))


def exact_neighbours(points: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """(queries, k) indices of the k points nearest (L2) to each query point, nearest first; a query's own index
    comes first. `points` (n, dim) float; `queries` (q,) indices into them."""
    norms = points.square().sum(1)
    out = []
    for start in range(0, len(queries), chunk):
        rows = queries[start:start + chunk]
        distances = norms[None] - 2 * points[rows] @ points.T + norms[rows, None]  # (chunk, n)
        distances[torch.arange(len(rows)), rows] = -1.0  # the query itself first, whatever rounding says
        out.append(distances.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def ivf_neighbours(points: torch.Tensor, queries: torch.Tensor, k: int, search: NeighbourSearch,
                   generator: torch.Generator) -> torch.Tensor:
    """As `exact_neighbours`, through a FAISS IndexIVFFlat trained on a random `points_per_list` points per list
    (seeded by `generator`); -1 where a query's probed lists hold fewer than k points."""
    from freezeframe.extras import require

    faiss = require("faiss", "--retrieval-augmented batches")

    lists = search.lists(len(points))
    data = points.float().contiguous().numpy()
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], lists, faiss.METRIC_L2)
    index.cp.seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
    index.cp.niter = search.iterations
    sample = torch.randperm(len(points), generator=generator)[:lists * search.points_per_list]
    index.train(data[sample.numpy()])
    index.add(data)
    index.nprobe = min(search.probes, lists)
    _, found = index.search(data[queries.numpy()], k)
    return torch.from_numpy(found).long()


def nearest_neighbours(points: torch.Tensor, queries: torch.Tensor, k: int, search: NeighbourSearch = NeighbourSearch(),
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(queries, k') indices, k' = min(k, n): exact up to `search.exact_up_to` points, else IVF (entries of -1 where
    it found fewer than k)."""
    k = min(k, len(points))
    if len(points) <= search.exact_up_to or search.lists(len(points)) < 1:  # (IVF cannot train on < 48 points)
        return exact_neighbours(points.float(), queries, k)
    return ivf_neighbours(points, queries, k, search, generator or torch.Generator().manual_seed(0))
