"""Neighbours behind VideoCLIP's retrieval-augmented batches: exact search against a FAISS IVF index.

A pass queries the 64 nearest neighbours of n / 32 random seed videos among n. Points are synthetic clustered
embeddings (a mixture of n / 100 Gaussians on the unit sphere, like video embeddings that group by topic).
Prints per size: seconds for exact search and for IVF (train, add and search together, with the defaults of
`NeighbourSearch`), the ratio IVF / exact measured in the same run, and IVF's recall of the exact neighbours on 500
of the queries.

Run: `python benchmarks/neighbour_search.py [n ...] [--dim 768]`.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from freezeframe.train.nearest import NeighbourSearch, exact_neighbours, ivf_neighbours


def clustered(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(max(1, n // 100), dim, generator=generator), dim=-1)
    members = centres[torch.randint(len(centres), (n,), generator=generator)]
    return F.normalize(members + 0.05 * torch.randn(n, dim, generator=generator), dim=-1)


def main(sizes: list[int], dim: int, batch: int = 32, k: int = 64) -> None:
    search = NeighbourSearch(k=k)
    for n in sizes:
        points = clustered(n, dim)
        queries = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:max(1, n // batch)]
        started = time.perf_counter()
        exact = exact_neighbours(points, queries, k)
        exact_s = time.perf_counter() - started
        started = time.perf_counter()
        train = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:search.lists(n) * search.points_per_list]
        approx = ivf_neighbours(points, queries, k, search, train)
        ivf_s = time.perf_counter() - started
        sample = slice(0, 500)
        recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(exact[sample], approx[sample]))
        recall /= exact[sample].numel()
        print(f"n={n} dim={dim} queries={len(queries)} lists={search.lists(n)} probes={search.probes}: "
              f"exact {exact_s:.2f} s, IVF {ivf_s:.2f} s (IVF / exact {ivf_s / exact_s:.2f}), recall@{k} {recall:.3f}",
              flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 50_000, 100_000])
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    main(args.sizes, args.dim)
