"""Extraction throughput as a ratio measured in one run.

pipeline frames/s (decode workers + batched forward + background writes into a fresh store)
divided by bare `encode_image` frames/s on the very same preprocessed frames, same batch size;
decoder-only frames/s is printed beside it.

    python benchmarks/extract_throughput.py [--model ViT-B-32] [--num-frames 32] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from freezeframe.extract import (
    ClipBackbone, ClipConfig, ExactPreprocessor, ExtractConfig, SamplingConfig, collect_sources, open_video,
    run_extraction, sample_indices,
)
from freezeframe.extract.preprocess import fast_preprocess
from freezeframe.devices import resolve_device
from freezeframe.extract.runner import default_workers

VIDEOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "videos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--videos", default=str(VIDEOS))
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--preprocess", choices=["exact", "fast"], default="exact")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="alternated bare/pipeline measurements")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    device = resolve_device(args.device)
    sources = collect_sources([args.videos])
    sampling = SamplingConfig("num_frames", num_frames=args.num_frames)
    backbone = ClipBackbone(ClipConfig(model=args.model, pretrained="none", features=("embed",)), device=device)

    # 1. Decoder alone (one process): the sampled frames of every video.
    t0 = time.perf_counter()
    decoded = []
    for source in sources:
        reader = open_video(source.path)
        indices = sample_indices(reader.timestamps, sampling)
        unique = np.unique(indices)
        decoded.append(reader.get(unique)[np.searchsorted(unique, indices)])
        reader.close()
    decode_s = time.perf_counter() - t0
    n_frames = sum(len(d) for d in decoded)

    # 2. Bare backbone forward on the same frames, preprocessed beforehand (not timed).
    pre = ExactPreprocessor(backbone.preprocess)
    if args.preprocess == "exact":
        images = torch.cat([pre(frames) for frames in decoded])
    else:
        images = torch.cat([fast_preprocess(torch.from_numpy(f).to(device), backbone.preprocess).cpu() for f in decoded])

    def bare_forward_seconds() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for start in range(0, len(images), args.batch_size):
            backbone(images[start:start + args.batch_size])["embed"].float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def pipeline_seconds() -> float:
        with tempfile.TemporaryDirectory() as store:
            config = ExtractConfig(store=store, sampling=sampling, batch_size=args.batch_size, workers=args.workers,
                                   preprocess=args.preprocess, device=str(device), progress=False)
            report = run_extraction(sources, backbone, config)
        assert report.frames == n_frames and report.ok, report
        return report.seconds

    # 3. Bare forward and the whole pipeline (into a fresh store), alternated `--repeats` times: on a
    # shared machine the noise hits both alike, and the median ratio of the pairs is reported.
    backbone(images[: args.batch_size])  # warm-up
    pairs = [(bare_forward_seconds(), pipeline_seconds()) for _ in range(args.repeats)]
    ratios = sorted(bare / pipe for bare, pipe in pairs)
    bare_s, pipe_s = sorted(pairs, key=lambda p: p[0] / p[1])[len(pairs) // 2]

    figures = {
        "model": args.model, "device": str(device), "torch_threads": torch.get_num_threads(),
        "workers": args.workers, "preprocess": args.preprocess, "videos": len(sources), "frames": n_frames,
        "decoder_fps": n_frames / decode_s, "bare_forward_fps": n_frames / bare_s,
        "pipeline_fps": n_frames / pipe_s, "ratio": bare_s / pipe_s, "ratios": ratios,
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.model} on {device} ({figures['torch_threads']} torch threads, {args.workers} decode workers, "
          f"{args.preprocess} preprocessing), {len(sources)} videos, {n_frames} frames")
    print(f"  decoder only        {figures['decoder_fps']:8.1f} frames/s")
    print(f"  bare encode_image   {figures['bare_forward_fps']:8.1f} frames/s")
    print(f"  pipeline            {figures['pipeline_fps']:8.1f} frames/s")
    print(f"  ratio pipeline/bare {figures['ratio']:8.2f}   (median of {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
