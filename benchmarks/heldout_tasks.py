"""Held-out synthetic tasks for tuning head defaults, kept out of the tests (which use `freezeframe.synthetic`).

"grow-shrink": a square of random colour and place grows or shrinks over 8 frames; as in the order
task only the order of frames tells the classes apart, but the frames, motion and sizes differ.

    python benchmarks/heldout_tasks.py OUT_DIR [--videos 200] [--seed 7]
writes OUT_DIR/videos, OUT_DIR/train.csv (80%), OUT_DIR/test.csv and an ff-tiny-vit store OUT_DIR/store (set "order").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from freezeframe.synthetic import write_labels, write_video

CLASSES = ("grows", "shrinks")


def grow_shrink(label: int, rng: np.random.Generator, size: int = 64, num_frames: int = 8) -> np.ndarray:
    background = rng.integers(0, 70, 3)
    colour = rng.integers(170, 256, 3)
    sides = np.linspace(6, size // 2, num_frames).round().astype(int)
    if label == 1:
        sides = sides[::-1]
    cy, cx = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t, side in enumerate(sides):
        frame = np.clip(background + rng.integers(-20, 21, (size, size, 3)), 0, 255)
        top, left = max(0, cy - side // 2), max(0, cx - side // 2)
        frame[top:top + side, left:left + side] = colour
        frames[t] = frame
    return frames


def make_task(out: Path, videos: int, seed: int) -> None:
    from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources, run_extraction

    rng = np.random.default_rng(seed)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(videos):
        video_id = f"gs-{seed}-{i:04d}"
        write_video(out / "videos" / f"{video_id}.mp4", grow_shrink(i % 2, rng))
        rows.append((video_id, CLASSES[i % 2]))
    cut = videos * 4 // 5
    write_labels(out / "train.csv", rows[:cut])
    write_labels(out / "test.csv", rows[cut:])
    backbone = ClipBackbone(ClipConfig(model="ff-tiny-vit", pretrained="none", features=("embed", "tokens"),
                                       layers=(0, 1, 2, 3)))
    run_extraction(collect_sources([out / "videos"]), backbone,
                   ExtractConfig(store=str(out / "store"), name="order", sampling=SamplingConfig(num_frames=8),
                                 workers=1, progress=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    make_task(args.out, args.videos, args.seed)
