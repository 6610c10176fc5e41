"""The demo's mean-pooled probe on the order task, over seeds and sizes: is it at chance?

Both classes of the order task show the same frames in opposite orders, so a probe of mean-pooled frame features
has no signal; with few held-out videos its accuracy still spreads widely. `--lossless` encodes the videos
exactly, ruling out compression artifacts (an I-frame sharper than the rest) as a signal.

    python benchmarks/demo_probe_chance.py OUT_DIR [--videos 40] [--seeds 0,1,2] [--lossless]
prints, per seed, the probe's held-out top-1 and the range guessing reaches 95% of the time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from freezeframe.demo import chance_band
from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources, run_extraction
from freezeframe.synthetic import make_order_dataset, write_labels
from freezeframe.train.jobs import eval_run, train_run


def probe_top1(out: Path, videos: int, seed: int, lossless: bool) -> tuple[float, int]:
    """Held-out top-1 of the demo's probe on a fresh order task (75% train, as the demo), and the test count."""
    rows = make_order_dataset(out, videos, seed=seed, lossless=lossless)
    cut = videos * 3 // 4
    train, test = write_labels(out / "train.csv", rows[:cut]), write_labels(out / "test.csv", rows[cut:])
    backbone = ClipBackbone(ClipConfig(model="ff-tiny-vit", pretrained="none", features=("embed",)))
    run_extraction(collect_sources([out / "videos"]), backbone,
                   ExtractConfig(store=str(out / "store"), name="order", sampling=SamplingConfig(num_frames=8),
                                 workers=0, progress=False))
    train_run("probe", out / "store", "order", train, out / "probe", overwrite=True, log=lambda message: None)
    return eval_run(out / "probe", test)["top1"], len(rows) - cut


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--videos", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lossless", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        top1, held_out = probe_top1(args.out / f"{'lossless' if args.lossless else 'crf18'}-{args.videos}-{seed}",
                                    args.videos, seed, args.lossless)
        low, high = chance_band(held_out)
        print(f"videos {args.videos} seed {seed} {'lossless' if args.lossless else 'crf 18'}: probe top-1 "
              f"{100 * top1:.0f}% on {held_out} held out (guessing: {100 * low:.0f}-{100 * high:.0f}%)")


if __name__ == "__main__":
    main()
