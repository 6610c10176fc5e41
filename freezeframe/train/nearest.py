"""The k nearest neighbours of chosen points among all points: exact for sets up to `exact_up_to` points, a FAISS
IVF index beyond, as fairseq MMPT builds VideoCLIP's retrieval-augmented batches (mmpt/modules/vectorpool.py
`VideoVectorPool`, mmpt/modules/retri.py `VectorRetriever`: IndexIVFFlat under L2 with 512 lists, trained by FAISS's
k-means on the first 512 x 48 points, one list probed, 64 results per query). Exact search costs queries x points x
dim in matrix products; IVF pays a k-means over 48 points per list, adds every point to a list, then scans about
points / lists x probes points per query, one query at a time, so on a CPU it wins only on large sets
(benchmarks/neighbour_search.py). Exact search returns what the IVF index returns with every list probed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NeighbourSearch:
    """How a seed video's candidates are found and what a video's point is. Defaults: MMPT's.

    `k` results per query, the query among them (MMPT's `num_cands` 64); an IVF index of `max_lists` lists (512),
    trained on `points_per_list` (48) random points each by FAISS's k-means (`iterations` 10 and `kmeans_seed` 1234,
    FAISS's IVF defaults, which MMPT keeps), `probes` lists searched (1); exact search up to `exact_up_to` points.
    A video's point is the mean of (video + text) / 2 over `clips` of its captions drawn with replacement (16, as
    MMPT's `clip_per_video`), un-normalised. `clips=None, normalize=True` is freezeframe's earlier choice: every
    caption once, the mean L2-normalised (cosine neighbourhoods, which ignore how long a video's vector is).
    """

    k: int = 64
    max_lists: int = 512
    points_per_list: int = 48
    probes: int = 1
    iterations: int = 10
    kmeans_seed: int = 1234
    exact_up_to: int = 50_000
    clips: int | None = 16
    normalize: bool = False

    def lists(self, n: int) -> int:
        """Inverted lists for `n` points: `max_lists`, but no more than the points (k-means needs one per list)."""
        return min(self.max_lists, n)


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
                   train_rows: torch.Tensor) -> torch.Tensor:
    """As `exact_neighbours`, through a FAISS IndexIVFFlat whose lists are trained on `train_rows` of `points` (in
    that order: FAISS's k-means seeds from it); -1 where a query's probed lists hold fewer than k points."""
    from freezeframe.extras import require

    faiss = require("faiss", "--retrieval-augmented batches")

    data = points.float().contiguous().numpy()
    lists = search.lists(len(train_rows))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], lists, faiss.METRIC_L2)
    index.cp.seed, index.cp.niter = search.kmeans_seed, search.iterations
    index.train(data[train_rows.numpy()])
    index.add(data)
    index.nprobe = min(search.probes, lists)
    _, found = index.search(data[queries.numpy()], k)
    return torch.from_numpy(found).long()


def nearest_neighbours(points: torch.Tensor, queries: torch.Tensor, k: int, search: NeighbourSearch = NeighbourSearch(),
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(queries, k') indices, k' = min(k, n): exact up to `search.exact_up_to` points, else IVF trained on the first
    lists x points_per_list points of a random order (MMPT: of its loader's shuffled order); -1 where IVF found
    fewer than k."""
    k = min(k, len(points))
    if len(points) <= search.exact_up_to:
        return exact_neighbours(points.float(), queries, k)
    order = torch.randperm(len(points), generator=generator or torch.Generator().manual_seed(0))
    return ivf_neighbours(points, queries, k, search, order[:search.lists(len(points)) * search.points_per_list])
