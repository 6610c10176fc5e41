"""`freezeframe demo`: the whole pipeline offline in a few minutes on a CPU.

Synthetic videos whose label is only the order of frames -> frozen features of a small
random-init CLIP -> a mean-pooled probe (near chance, as it must be) and an EVL head (high).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources, run_extraction
from freezeframe.heads.jobs import eval_run, train_run
from freezeframe.heads.training import TrainConfig
from freezeframe.synthetic import make_order_dataset, write_labels

FEATURE_SET = "demo-tiny-clip"


def run_demo(out: str | Path, num_videos: int = 160, epochs: int = 40, seed: int = 0,
             log: Callable[[str], None] = print) -> dict:
    out = Path(out)
    log(f"1/4 writing {num_videos} synthetic videos to {out / 'videos'}")
    rows = make_order_dataset(out, num_videos, seed=seed)
    cut = num_videos * 3 // 4
    train_csv = write_labels(out / "train.csv", rows[:cut])
    test_csv = write_labels(out / "test.csv", rows[cut:])

    log("2/4 extracting frozen features (ff-tiny-vit, random weights): embed + token maps of all 4 blocks")
    backbone = ClipBackbone(ClipConfig(model="ff-tiny-vit", pretrained="none", features=("embed", "tokens"),
                                       layers=(0, 1, 2, 3)))
    config = ExtractConfig(store=str(out / "store"), name=FEATURE_SET, sampling=SamplingConfig(num_frames=8),
                           workers=1, progress=False)
    report = run_extraction(collect_sources([out / "videos"]), backbone, config)
    log(f"    stored {report.stored} videos ({report.frames} frames) in {report.seconds:.1f}s")

    quiet = lambda _message: None  # noqa: E731
    log("3/4 training a mean-pooled linear probe")
    train_run("probe", out / "store", FEATURE_SET, train_csv, out / "run-probe", log=quiet)
    log(f"4/4 training an EVL head for {epochs} epochs")
    train_run("evl", out / "store", FEATURE_SET, train_csv, out / "run-evl", train_frames="uniform:8",
              config=TrainConfig(epochs=epochs, batch_size=16, lr=1e-3, seed=seed, progress=False), log=quiet)
    probe = eval_run(out / "run-probe", test_csv)
    evl = eval_run(out / "run-evl", test_csv)
    return {"probe": probe["top1"], "evl": evl["top1"], "test_videos": evl["num_videos"]}
