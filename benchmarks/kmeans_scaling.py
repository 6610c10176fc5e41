"""k-means behind retrieval-augmented batches: seconds to cluster n videos into n/32 clusters (torch, and FAISS).

Run: `python benchmarks/kmeans_scaling.py [n ...]`. Prints one line per size and method; times are wall
seconds on this machine, the ratio is FAISS / torch in the same run.
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
        line = f"n={n} k={k} d={dim}: torch Lloyd (random seeds) {ours:.1f} s"
        try:
            import faiss

            started = time.perf_counter()
            kmeans(points, k, torch.Generator().manual_seed(0), iterations=iterations)  # auto: FAISS at this size
            theirs = time.perf_counter() - started
            line += f", kmeans() with faiss-cpu {theirs:.1f} s (ratio faiss/torch {theirs / ours:.2f})"
        except ImportError:
            pass
        print(line, flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [8_000, 100_000])
