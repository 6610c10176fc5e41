"""k-means behind retrieval-augmented batches: seconds to cluster n videos into n/32 clusters (torch, and FAISS).

Run: `python benchmarks/kmeans_scaling.py [n ...]`. Prints one line per size: wall seconds on this machine of torch
Lloyd with random seeds and of `kmeans()`'s own choice (k-means++ at small n*k, FAISS beyond), and their ratio in
the same run. The nearest-neighbour search of `--towers bert` batches is measured by benchmarks/neighbour_search.py.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from freezeframe.train.neighbourhoods import kmeans


def main(sizes: list[int], dim: int = 512, batch: int = 32, iterations: int = 20) -> None:
    torch.set_num_threads(torch.get_num_threads())
    for n in sizes:
        points = F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
        k = max(1, round(n / batch))
        started = time.perf_counter()
        kmeans(points, k, torch.Generator().manual_seed(0), iterations=iterations, seeding="random")
        ours = time.perf_counter() - started
        started = time.perf_counter()
        kmeans(points, k, torch.Generator().manual_seed(0), iterations=iterations)  # auto: FAISS at large sizes
        theirs = time.perf_counter() - started
        print(f"n={n} k={k} d={dim}: torch Lloyd (random seeds) {ours:.1f} s, kmeans() auto {theirs:.1f} s "
              f"(ratio auto/torch {theirs / ours:.2f})", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [8_000, 100_000])
