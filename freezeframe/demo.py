"""`freezeframe demo`: the whole pipeline offline in about a minute on a CPU.

Synthetic videos whose label is only the order of frames -> frozen features of a small
random-init CLIP -> a mean-pooled probe (at chance in expectation: both classes show the same frames) and an
EVL head (high), both with their default settings. Few held-out videos make any accuracy noisy, so the demo
prints the range that guessing alone reaches 95% of the time (`chance_band`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources, run_extraction
from freezeframe.train.jobs import eval_run, train_run
from freezeframe.train.loop import TrainConfig
from freezeframe.synthetic import make_order_dataset, write_labels

FEATURE_SET = "demo-tiny-clip"
PROGRESS_INTERVAL_S = 5.0


def _every(seconds: float, log: Callable[[str], None]) -> Callable[[str], None]:
    """A log that passes on the first message, then at most one message per `seconds` (and the last epoch's)."""
    last = [-float("inf")]

    def throttled(message: str) -> None:
        now = time.monotonic()
        head = message.split(":")[0]
        final = head.startswith("epoch ") and head.split()[1].split("/")[0] == head.split("/")[-1]
        if now - last[0] >= seconds or final:
            last[0] = now
            log(f"    {message}")

    return throttled


def chance_band(num_videos: int, num_classes: int = 2) -> tuple[float, float]:
    """The central 95% range of the accuracy of guessing on `num_videos` held-out videos (binomial)."""
    from scipy.stats import binom

    low, high = binom.interval(0.95, num_videos, 1 / num_classes)
    return float(low) / num_videos, float(high) / num_videos


def run_demo(out: str | Path, num_videos: int = 160, epochs: int | None = None, seed: int = 0,
             log: Callable[[str], None] = print) -> dict:
    """Run the demo in `out` (reused with fresh runs); `epochs=None` trains EVL with its default length."""
    out = Path(out)
    started = time.monotonic()
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

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # heads this small train fastest on one thread (more only spin on a busy machine)
    try:
        log("3/4 training a mean-pooled linear probe")
        train_run("probe", out / "store", FEATURE_SET, train_csv, out / "run-probe", overwrite=True,
                  log=_every(PROGRESS_INTERVAL_S, log))
        log("4/4 training an EVL head (default settings)")
        train_run("evl", out / "store", FEATURE_SET, train_csv, out / "run-evl", overwrite=True,
                  config=TrainConfig(epochs=epochs, seed=seed, progress=False), log=_every(PROGRESS_INTERVAL_S, log))
        probe = eval_run(out / "run-probe", test_csv)
        evl = eval_run(out / "run-evl", test_csv)
    finally:
        torch.set_num_threads(threads)
    return {"probe": probe["top1"], "evl": evl["top1"], "test_videos": evl["num_videos"],
            "seconds": time.monotonic() - started}
