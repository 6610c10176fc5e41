"""CPU milliseconds per sampled frame, per decoder and seek mode, on long generated videos (one run, ratios).

Videos: the sample footage looped into H.264 (High, yuv420p, B-frames) at 360p/720p/1080p with a keyframe every
250 frames, 25 fps, `--seconds` long (default 60). Sampling: 8 and 32 frames a video (segment middles), and 1 fps.
Each cell is the CPU time (user + system of this process, one decoder thread) to open the video and decode the
sampled frames, divided by the frames sampled; `best exact` is the cheapest exact decoder on the same frames.

    python benchmarks/decode.py [--seconds 60] [--heights 360,720,1080] [--out /tmp/freezeframe-decode-bench]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from freezeframe.extract.decode import DecodeOptions, PyAVReader, open_video
from freezeframe.extract.sampling import SamplingConfig, sample_indices, snap_to_keyframes

FOOTAGE = Path(__file__).resolve().parents[1] / "tests" / "data" / "videos" / "v_ZNVhz7ctTq0.mp4"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--heights", default="360,720,1080")
    parser.add_argument("--out", type=Path, default=Path("/tmp/freezeframe-decode-bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    heights = [int(h) for h in args.heights.split(",")]
    videos = {h: make_video(args.out / f"long_{h}p_{args.seconds}s.mp4", h, args.seconds) for h in heights}
    rows = [("pyav (default, seeks)", "auto", "exact"), ("pyav from the start (before)", "pyav-sequential", "exact"),
            ("torchcodec", "torchcodec", "exact"), ("decord", "decord", "exact"),
            ("pyav --seek keyframe", "auto", "keyframe")]
    rows = [row for row in rows if available(row[1])]
    print(f"CPU ms per sampled frame, {args.seconds} s videos, H.264 GOP 250, one decoder thread\n")
    print("| decoder | " + " | ".join(f"{h}p {s}" for h in heights for s in SAMPLINGS) + " |")
    print("|---|" + "---|" * (len(heights) * len(SAMPLINGS)))
    results = {}
    for label, decoder, seek in rows:
        cells = []
        for h in heights:
            for name, sampling in SAMPLINGS.items():
                if decoder == "pyav-sequential" and name != "8 frames":
                    cells.append("")
                    continue
                ms, _ = measure(videos[h], decoder, seek, sampling)
                results[label, h, name] = ms
                cells.append(f"{ms:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    exact = [label for label, _, seek in rows if seek == "exact" and "before" not in label]
    best = [min(results[label, h, s] for label in exact) for h in heights for s in SAMPLINGS]
    default = [results["pyav (default, seeks)", h, s] for h in heights for s in SAMPLINGS]
    key = [results["pyav --seek keyframe", h, s] for h in heights for s in SAMPLINGS]
    print("| best exact | " + " | ".join(f"{b:.1f}" for b in best) + " |")
    print("| default / best exact | " + " | ".join(f"{d / b:.2f}x" for d, b in zip(default, best)) + " |")
    print("| default / keyframe | " + " | ".join(f"{d / k:.1f}x" for d, k in zip(default, key)) + " |")


if __name__ == "__main__":
    main()
