"""Store formats compared on real features, measured in one run.

Extracts the bundled sample videos once (ViT-B-32 architecture, random weights; features embed
and the token maps of the last two blocks; 16 frames per video) into a Zarr store, converts it
with `freezeframe convert` into zarr and hdf5 x none/zstd/blosc, then for each copy prints:
bytes of shard data on disk, compression ratio (raw array bytes / bytes on disk), full-read MB/s
(every array of every video, through `FeatureSet.read`) and per-video read latency (random
videos, median and p95; all arrays, and `embed` alone). Reads hit a warm OS page cache.

    python benchmarks/store_formats.py [--work DIR] [--num-frames 16] [--reads 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources, run_extraction
from freezeframe.devices import resolve_device
from freezeframe.extract.runner import default_workers
from freezeframe.store import open_store
from freezeframe.store.tools.convert import convert_store
from freezeframe.store.layout import MARKER_SUFFIX, SHARDS_DIR

VIDEOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "videos"
FORMATS = ("zarr", "hdf5")
COMPRESSIONS = ("none", "zstd", "blosc")


def shard_bytes(fs_dir: Path) -> int:
    """Apparent size of every shard file (Zarr: all files of its directory), markers excluded."""
    total = 0
    for root, _dirs, files in os.walk(fs_dir / SHARDS_DIR):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files if not f.endswith(MARKER_SUFFIX))
    return total


def measure(store: Path, name: str, reads: int, seed: int) -> dict:
    fs = open_store(store)[name]
    arrays = list(fs.arrays())
    ids = fs.video_ids()
    row_bytes = sum(int(np.prod(m["shape"], dtype=np.int64)) * np.dtype(m["dtype"]).itemsize
                    for m in fs.arrays().values())
    raw = fs.num_rows * row_bytes
    fs.close()
    full = []
    for _ in range(5):  # a fresh FeatureSet each time: opening files is part of a full read
        fs = open_store(store)[name]
        t0 = time.perf_counter()
        got = sum(fs.read(v, a).nbytes for v in ids for a in arrays)
        full.append(time.perf_counter() - t0)
        fs.close()
        assert got == raw
    rng = np.random.default_rng(seed)
    fs = open_store(store)[name]
    for v in ids:  # open every shard once: latency below is per read, not per file open
        fs.read(v, "embed")
    every, embed = [], []
    for v in rng.choice(ids, size=reads):
        t0 = time.perf_counter()
        for a in arrays:
            fs.read(v, a)
        every.append(time.perf_counter() - t0)
    for v in rng.choice(ids, size=reads):
        t0 = time.perf_counter()
        fs.read(v, "embed")
        embed.append(time.perf_counter() - t0)
    fs.close()
    disk = shard_bytes(store / name)
    return {
        "bytes": disk, "raw_bytes": raw, "ratio": raw / disk,
        "full_read_mb_s": raw / 1e6 / float(np.median(full)),
        "video_ms_median": 1e3 * float(np.median(every)), "video_ms_p95": 1e3 * float(np.percentile(every, 95)),
        "embed_us_median": 1e6 * float(np.median(embed)), "embed_us_p95": 1e6 * float(np.percentile(embed, 95)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=None, help="working directory, kept [default: a temporary one]")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--reads", type=int, default=200, help="random per-video reads per store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ff-store-formats-"))
    source = work / "source"
    clip = ClipConfig(model=args.model, pretrained="none", features=("embed", "tokens"), layers=(-2, -1))
    backbone = ClipBackbone(clip, device=resolve_device(args.device))
    config = ExtractConfig(store=str(source), sampling=SamplingConfig("num_frames", num_frames=args.num_frames),
                           workers=default_workers(), batch_size=32, progress=False)
    t0 = time.perf_counter()
    report = run_extraction(collect_sources([str(VIDEOS)]), backbone, config)
    extract_s = time.perf_counter() - t0
    name = report.feature_set

    rows = {}
    for fmt in FORMATS:
        for compression in COMPRESSIONS:
            dst = work / f"{fmt}-{compression}"
            shutil.rmtree(dst, ignore_errors=True)
            t0 = time.perf_counter()
            converted = convert_store(source, dst, format=fmt, compression=compression, names=[name])
            assert converted.ok, converted.problems
            convert_s = time.perf_counter() - t0
            rows[f"{fmt}/{compression}"] = {**measure(dst, name, args.reads, args.seed), "convert_s": convert_s}

    fs = open_store(source)[name]
    meta = {"model": args.model, "weights": "random", "videos": len(fs), "frames": fs.num_rows,
            "arrays": {a: m["shape"] for a, m in fs.arrays().items()}, "extract_s": extract_s, "work": str(work)}
    if args.json:
        print(json.dumps({**meta, "stores": rows}, indent=1))
    else:
        print(f"{meta['videos']} videos, {meta['frames']} frames, {args.model} random weights; arrays "
              + ", ".join(f"{a} {tuple(s)}" for a, s in meta["arrays"].items()))
        header = ("store", "MB on disk", "ratio", "full read MB/s", "video ms (p50/p95)", "embed µs (p50/p95)",
                  "convert s")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for key, r in rows.items():
            print(f"| {key} | {r['bytes'] / 1e6:.2f} | {r['ratio']:.3f} | {r['full_read_mb_s']:.0f} | "
                  f"{r['video_ms_median']:.2f} / {r['video_ms_p95']:.2f} | {r['embed_us_median']:.0f} / "
                  f"{r['embed_us_p95']:.0f} | {r['convert_s']:.1f} |")
        print(f"raw array bytes {next(iter(rows.values()))['raw_bytes'] / 1e6:.2f} MB; stores in {work}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
