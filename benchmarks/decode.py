"""CPU milliseconds per sampled frame, per decoder and seek mode, on long generated videos (one run, ratios).

Videos: the sample footage looped into H.264 (High, yuv420p, B-frames) at 360p/720p/1080p with a keyframe every
250 frames, 25 fps, `--seconds` long (default 60). Sampling: 8 and 32 frames a video (segment middles), and 1 fps.
Each cell is the CPU time (user + system of this process, one decoder thread) to open the video and decode the
sampled frames, divided by the frames sampled, the least of `--repeats` rounds that alternate the decoders (on a
shared machine other processes only ever add CPU time); `best exact` is the cheapest exact decoder on the same frames.

Then preprocessing: CPU ms per frame from a decoded frame to what a decode worker ships, for ViT-B-32's input
(224 px, bicubic), one torch thread, on `--preprocess-frames` frames of each video: exact (RGB, open_clip's PIL
transform), fast (RGB, torchvision v2 resize to the short side; and with its device half, crop and normalise, on
the CPU as well), and FFmpeg's swscale resizing straight from YUV (PyAV `reformat`), the alternative fast mode
does not use.

    python benchmarks/decode.py [--seconds 60] [--heights 360,720,1080] [--repeats 3] [--out /tmp/freezeframe-decode-bench]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np
import torch

from freezeframe.extract.decode import DecodeOptions, PyAVReader, open_video
from freezeframe.extract.preprocess import (
    ExactPreprocessor, PreprocessConfig, fast_preprocess, resize_short_side, resized_shape,
)
from freezeframe.extract.sampling import SamplingConfig, sample_indices, snap_to_keyframes

FOOTAGE = Path(__file__).resolve().parents[1] / "tests" / "data" / "videos" / "v_ZNVhz7ctTq0.mp4"
EXACT, FAST = "exact (RGB, open_clip PIL transform)", "fast (RGB, torchvision v2 resize)"
SAMPLINGS = {"8 frames": SamplingConfig("num_frames", num_frames=8), "32 frames": SamplingConfig("num_frames", num_frames=32),
             "1 fps": SamplingConfig("fps", fps=1.0)}


def make_video(path: Path, height: int, seconds: int) -> Path:
    """The footage looped to `seconds` at 25 fps, 16:9 at `height`, GOP 250 (what real long videos look like)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from longvideos import footage, write_video

    if path.exists():
        return path
    width = height * 16 // 9 // 2 * 2
    frames = footage(FOOTAGE, 250, width, height)  # one GOP's worth of distinct frames, looped
    count = seconds * 25
    tmp = path.with_suffix(".tmp.mp4")
    write_video(tmp, [frames[i % 250] for i in range(count)], gop=250, b_frames=3)
    tmp.rename(path)
    return path


def _cpu() -> float:
    return time.process_time()


def measure(path: Path, decoder: str, seek: str, sampling: SamplingConfig) -> tuple[float, int]:
    """CPU ms per sampled frame for one video, and the frames sampled."""
    start = _cpu()
    if decoder == "pyav-sequential":
        reader = PyAVReader(str(path), DecodeOptions(), seek=False)
    else:
        reader = open_video(str(path), decoder, DecodeOptions(threads=1))
    indices = sample_indices(reader.timestamps, sampling)
    if seek == "keyframe":
        indices = snap_to_keyframes(indices, reader.timestamps, reader.keyframes)
    reader.get(np.unique(indices))
    reader.close()
    return (_cpu() - start) * 1000 / len(indices), len(indices)


def available(decoder: str) -> bool:
    module = {"torchcodec": "torchcodec", "decord": "decord"}.get(decoder)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def preprocess_costs(path: Path, count: int, config: PreprocessConfig, repeats: int) -> dict[str, float]:
    """CPU ms per frame of each way from a decoded frame (YUV) to what a decode worker ships, on `count` frames
    (the least of `repeats` rounds)."""
    with av.open(str(path)) as container:
        frames = [frame for frame, _ in zip(container.decode(video=0), range(count))]
    short = config.size[0]
    height, width = resized_shape(frames[0].height, frames[0].width, short)
    exact = ExactPreprocessor(config)

    def rgb() -> np.ndarray:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in frames])

    ways = {
        EXACT: lambda: exact(rgb()),
        FAST: lambda: resize_short_side(torch.from_numpy(rgb()), short, config.interpolation),
        "fast, with crop + normalise on the CPU": lambda: fast_preprocess(torch.from_numpy(rgb()), config),
        "swscale from YUV (PyAV reformat; not used)": lambda: [
            frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC").to_ndarray()
            for frame in frames],
    }
    costs = {}
    for _ in range(repeats):
        for name, way in ways.items():
            start = _cpu()
            way()
            costs[name] = min((_cpu() - start) * 1000 / len(frames), costs.get(name, float("inf")))
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--heights", default="360,720,1080")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preprocess-frames", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("/tmp/freezeframe-decode-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # as in a decode worker
    heights = [int(h) for h in args.heights.split(",")]
    videos = {h: make_video(args.out / f"long_{h}p_{args.seconds}s.mp4", h, args.seconds) for h in heights}
    rows = [("pyav (default, seeks)", "auto", "exact"), ("pyav from the start (before)", "pyav-sequential", "exact"),
            ("torchcodec", "torchcodec", "exact"), ("decord", "decord", "exact"),
            ("pyav --seek keyframe", "auto", "keyframe")]
    rows = [row for row in rows if available(row[1])]
    results = {}
    for h in heights:
        for name, sampling in SAMPLINGS.items():
            for _ in range(args.repeats):
                for label, decoder, seek in rows:
                    if decoder != "pyav-sequential" or name == "8 frames":
                        ms = measure(videos[h], decoder, seek, sampling)[0]
                        results[label, h, name] = min(ms, results.get((label, h, name), ms))
    print(f"CPU ms per sampled frame, {args.seconds} s videos, H.264 GOP 250, one decoder thread, least of "
          f"{args.repeats}\n")
    print("| decoder | " + " | ".join(f"{h}p {s}" for h in heights for s in SAMPLINGS) + " |")
    print("|---|" + "---|" * (len(heights) * len(SAMPLINGS)))
    for label, _, _ in rows:
        cells = [f"{results[label, h, s]:.1f}" if (label, h, s) in results else "" for h in heights for s in SAMPLINGS]
        print(f"| {label} | " + " | ".join(cells) + " |")
    exact = [label for label, _, seek in rows if seek == "exact" and "before" not in label]
    best = [min(results[label, h, s] for label in exact) for h in heights for s in SAMPLINGS]
    default = [results["pyav (default, seeks)", h, s] for h in heights for s in SAMPLINGS]
    key = [results["pyav --seek keyframe", h, s] for h in heights for s in SAMPLINGS]
    print("| best exact | " + " | ".join(f"{b:.1f}" for b in best) + " |")
    print("| default / best exact | " + " | ".join(f"{d / b:.2f}x" for d, b in zip(default, best)) + " |")
    print("| default / keyframe | " + " | ".join(f"{d / k:.1f}x" for d, k in zip(default, key)) + " |")

    config = PreprocessConfig()  # ViT-B-32's: 224 px, bicubic, OpenAI mean/std
    costs = {h: preprocess_costs(videos[h], args.preprocess_frames, config, args.repeats) for h in heights}
    print(f"\nCPU ms per frame, decoded frame to what a decode worker ships (224 px, bicubic, one thread), least "
          f"of {args.repeats}\n")
    print("| preprocessing | " + " | ".join(f"{h}p" for h in heights) + " |")
    print("|---|" + "---|" * len(heights))
    for name in costs[heights[0]]:
        print(f"| {name} | " + " | ".join(f"{costs[h][name]:.2f}" for h in heights) + " |")
    print("| exact / fast | " + " | ".join(f"{costs[h][EXACT] / costs[h][FAST]:.1f}x" for h in heights) + " |")


if __name__ == "__main__":
    main()
