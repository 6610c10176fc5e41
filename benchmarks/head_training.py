"""Head training speed on cached features versus the frozen backbone in the loop, as ratios in one run.

For the EVL decoder and the temporal transformer, both sides train the same head with the same
batch (videos x frames) for the same number of steps. The in-the-loop side gets its frames already decoded and preprocessed in memory, so the
ratio counts only the backbone forward that the cache removes (decoding would widen it further).

    python benchmarks/head_training.py [--model ViT-B-32] [--batch 4] [--frames 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from freezeframe import open_store
from freezeframe.extract import (
    ClipBackbone, ClipConfig, ExactPreprocessor, ExtractConfig, SamplingConfig, collect_sources, open_video,
    run_extraction,
)
from freezeframe.heads import build_head, head_config
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate

VIDEOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "videos"


SHAPES = {"ViT-B-32": (7, 768, 12), "ViT-B-16": (14, 768, 12), "ViT-L-14": (16, 1024, 24)}  # grid, width, depth


def evl_flop_bound(model: str, layers: int = 4) -> dict[str, float]:
    """FLOPs per frame of the backbone's forward and of a cached EVL step (forward and backward), and the bound they
    put on cached / backbone-in-the-loop: (backbone + head) / head. Counted: matrix products only (2 FLOPs a
    multiply-add); per decoder layer, the frozen q/k recomputation (forward), cross-frame attention maps (forward),
    the relative-offset table product (forward and weight gradient) and the folded one-query attention (forward
    and backward; before the fold: the memory's key and value projections, forward and both gradients)."""
    grid, c, depth = SHAPES[model]
    patches = grid * grid
    n, offsets, heads = patches + 1, (2 * grid - 1) ** 2, c // 64
    backbone = depth * (24 * n * c * c + 4 * n * n * c)
    qk, maps, table = 4 * n * c * c, 4 * patches * patches * c, 8 * patches * offsets * c
    folded, projected = 12 * heads * n * c, 12 * n * c * c
    head = layers * (qk + maps + table + folded)
    before = layers * (qk + maps + 8 * patches * patches * c + projected)  # the per-pair gather, unfolded
    return {"backbone_gflop": backbone / 1e9, "head_gflop": head / 1e9, "bound": (backbone + head) / head,
            "bound_before": (backbone + before) / before}


def train_steps(head: torch.nn.Module, batches, steps: int, features=None, fused: bool = True) -> float:
    """Seconds for `steps` AdamW steps (fused as `freezeframe train` does, or torch's default unfused update);
    `features` turns a batch into head inputs (the backbone, if any)."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4, fused=fused)
    head.train()
    start = time.perf_counter()
    for step in range(steps):
        inputs, labels = batches[step % len(batches)]
        if features is not None:
            inputs = features(inputs)
        loss = F.cross_entropy(head(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--batch", type=int, default=4, help="videos per step")
    parser.add_argument("--frames", type=int, default=8, help="frames per video")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)

    backbone = ClipBackbone(ClipConfig(model=args.model, pretrained="none", features=("embed", "tokens")))
    sources = collect_sources([VIDEOS])
    with tempfile.TemporaryDirectory() as store:
        report = run_extraction(sources, backbone, ExtractConfig(
            store=store, name="bench", sampling=SamplingConfig(num_frames=args.frames), progress=False))
        fs = open_store(store)["bench"]
        ids = fs.video_ids()
        labels = [i % 10 for i in range(len(ids))]
        selection = FrameSelection("uniform", args.frames)

        # The same videos and frames, decoded and preprocessed up front for the in-the-loop side.
        preprocess = ExactPreprocessor(backbone.preprocess)
        pixels = {}
        for source in sources:
            indices = fs.read(source.video_id, "frame_indices")[selection.rows(fs.locate(source.video_id).n_rows)]
            reader = open_video(source.path)
            unique = np.unique(indices)
            pixels[source.video_id] = preprocess(reader.get(unique)[np.searchsorted(unique, indices)])
            reader.close()
        live = [(torch.stack([pixels[v] for v in ids[i:i + args.batch]]), torch.tensor(labels[i:i + args.batch]))
                for i in range(0, len(ids), args.batch)]

        def backbone_features(frames: torch.Tensor) -> dict[str, torch.Tensor]:
            b, t = frames.shape[:2]
            out = {k: v.float().unflatten(0, (b, t)) for k, v in backbone(frames.flatten(0, 1)).items()}
            for block in backbone.blocks:  # a block's input is the previous block's output where that is kept
                out.setdefault(f"block_input/{block}", out.get(f"tokens/{block - 1}"))
            return out

        figures = {"model": args.model, "videos_per_step": args.batch, "frames": args.frames,
                   "torch_threads": torch.get_num_threads(), "extracted_frames": report.frames, "heads": {}}
        for kind in ("evl", "temporal"):
            head = build_head(kind, head_config(kind, fs, num_classes=10, num_frames=args.frames))
            if kind == "evl":
                head.load_frozen_qk(fs.frozen_weights())
            dataset = FeatureDataset(store, "bench", ids, head.required_arrays, selection, labels, preload=True)
            cached = [(b["inputs"], b["label"]) for b in DataLoader(dataset, batch_size=args.batch, collate_fn=collate)]
            train_steps(head, cached, 2)  # warm-up
            for fused in (False, True):  # the optimizer update before (unfused) and since (fused) it was fused
                cached_s = train_steps(head, cached, args.steps, fused=fused)
                live_steps = max(2, args.steps // 5)
                live_s = train_steps(head, live, live_steps, backbone_features, fused=fused)
                cached_rate, live_rate = args.steps / cached_s, live_steps / live_s
                figures["heads"][f"{kind} ({'fused' if fused else 'unfused'} AdamW)"] = {
                    "cached_steps_per_s": cached_rate, "backbone_in_loop_steps_per_s": live_rate,
                    "ratio": cached_rate / live_rate}

    figures["flop_bounds"] = {model: evl_flop_bound(model) for model in SHAPES}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{args.model} features, {args.batch} videos x {args.frames} frames per step, "
          f"{figures['torch_threads']} CPU threads (steps/s: cached features | backbone in the loop | ratio)")
    for kind, f in figures["heads"].items():
        print(f"  {kind:<26} {f['cached_steps_per_s']:9.2f} | {f['backbone_in_loop_steps_per_s']:6.2f} | {f['ratio']:6.1f}x")
    print("EVL FLOP bound on cached / in the loop, 4 decoder layers (GFLOP per frame: backbone | head step | "
          "bound | bound before the fold)")
    for model, b in figures["flop_bounds"].items():
        print(f"  {model:<9} {b['backbone_gflop']:7.2f} | {b['head_gflop']:6.2f} | {b['bound']:5.1f}x | "
              f"{b['bound_before']:5.1f}x")


if __name__ == "__main__":
    main()
