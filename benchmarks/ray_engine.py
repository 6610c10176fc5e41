"""What the Ray engine costs on one machine, as a ratio measured in one run.

Extracts the same videos into fresh stores with `--engine local` and `--engine ray` (runs alternated; the Ray
cluster is started once, outside the timings, as on a real cluster) and prints frames/s of each and ray / local.
Each Ray run includes what a real run pays: building the actor pool, loading the backbone in every actor, and
the driver's metadata writes, a fixed cost of a few seconds that a small workload shows (8 videos x 16 frames on
2 CPUs: 0.70) and a large one hides (x 64 frames: 0.96). On a cluster, throughput grows with the actors it holds.

    python benchmarks/ray_engine.py [--model ViT-B-32] [--num-frames 64] [--ray-workers 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray

from freezeframe.extract import ClipConfig, ExtractConfig, SamplingConfig, collect_sources, run_extraction
from freezeframe.extract.backbones import build_backbone
from freezeframe.extract.ray_engine import RayConfig, run_ray_extraction

VIDEOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "videos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--videos", default=str(VIDEOS))
    parser.add_argument("--num-frames", type=int, default=64)
    parser.add_argument("--ray-workers", type=int, default=2, help="actors (one CPU and one decode process each)")
    parser.add_argument("--shard-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternated local/ray measurements")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    sources = collect_sources([args.videos])
    clip = ClipConfig(model=args.model, pretrained="none", features=("embed",), precision="fp32")

    def config(store: Path) -> ExtractConfig:
        return ExtractConfig(store=str(store), sampling=SamplingConfig("num_frames", num_frames=args.num_frames),
                             batch_size=16, workers=1, shard_size=args.shard_size, progress=False)

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    startup_s = time.perf_counter() - t0
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for engine in ("local", "ray"):
                store = Path(tmp) / f"{engine}-{r}"
                t0 = time.perf_counter()
                if engine == "local":  # the backbone is built inside the timing, as each Ray actor builds its own
                    report = run_extraction(sources, build_backbone(clip, device="cpu"), config(store))
                else:
                    report = run_ray_extraction(sources, clip, config(store), RayConfig(workers=args.ray_workers))
                rates[engine].append(report.frames / (time.perf_counter() - t0))
    ray.shutdown()

    best = {engine: max(values) for engine, values in rates.items()}
    figures = {"model": args.model, "videos": len(sources), "frames": report.frames, "ray_workers": args.ray_workers,
               "cluster_start_s": round(startup_s, 2), "local_fps": round(best["local"], 1),
               "ray_fps": round(best["ray"], 1), "ray_over_local": round(best["ray"] / best["local"], 2),
               "runs": {engine: [round(v, 1) for v in values] for engine, values in rates.items()}}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['videos']} videos, {figures['frames']} frames, {args.model} (random weights), CPU; "
          f"Ray cluster started in {startup_s:.1f} s (not timed below)")
    print(f"local engine : {best['local']:8.1f} frames/s (best of {args.repeats})")
    print(f"ray engine   : {best['ray']:8.1f} frames/s with {args.ray_workers} actor(s)")
    print(f"ray / local  : {figures['ray_over_local']:.2f}")


if __name__ == "__main__":
    main()
