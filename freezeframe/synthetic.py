"""Synthetic labelled videos whose label is carried only by the order of frames.

A square of random colour crosses a noisy background left-to-right or right-to-left. Both
classes show the same kind of frames; only their order differs, so a mean-pooled probe is at
chance while heads that see time can tell them apart. Used by `freezeframe demo`, tests and
benchmarks. A second task (`appearing_square`) shows a still square that appears or disappears: only when it
is shown tells the classes apart (EVL's regression test).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ("left-to-right", "right-to-left")


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8, lossless: bool = False) -> None:
    """Encode uint8 RGB frames (T, H, W, 3) as an H.264 (or MPEG-4 Part 2) video with PyAV; `lossless` encodes
    every frame exactly (x264 qp 0), so no frame is sharper than another."""
    import av

    with av.open(str(path), "w") as container:
        try:
            stream = container.add_stream("libx264", rate=fps)
            # asm=0: x264's assembly paths made the same frames encode differently from run to run
            # (on ~20% of these tiny videos); its C paths are deterministic, and fast enough at this size
            quality = {"qp": "0"} if lossless else {"crf": "18"}
            stream.options = {**quality, "preset": "veryfast", "x264-params": "asm=0"}
        except Exception:  # noqa: BLE001 - builds of FFmpeg without x264
            stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def crossing_square(label: int, rng: np.random.Generator, size: int = 64, num_frames: int = 8) -> np.ndarray:
    """Frames of a square crossing the image; label 0 moves right, label 1 moves left."""
    side = size // 4
    background = rng.integers(0, 60, 3)  # dark background, bright square: position is what the frames show
    colour = rng.integers(180, 256, 3)
    top = int(rng.integers(0, size - side))
    lefts = np.linspace(0, size - side, num_frames).round().astype(int)
    if label == 1:
        lefts = lefts[::-1]
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t, left in enumerate(lefts):
        noise = rng.integers(-20, 21, (size, size, 3))
        frame = np.clip(background + noise, 0, 255)
        frame[top:top + side, left:left + side] = colour
        frames[t] = frame
    return frames


APPEAR_CLASSES = ("appears", "disappears")


def appearing_square(label: int, rng: np.random.Generator, size: int = 64, num_frames: int = 8) -> np.ndarray:
    """Frames of a still square that appears (label 0: shown from frame 3, 4 or 5 on) or disappears (label 1: shown
    until then); every frame of one class has a twin in the other, so only when it is shown tells them apart."""
    side = size // 4
    background = rng.integers(0, 60, 3)
    colour = rng.integers(180, 256, 3)
    top, left = (int(v) for v in rng.integers(0, size - side, 2))
    cut = int(rng.integers(3, 6))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t in range(num_frames):
        frame = np.clip(background + rng.integers(-20, 21, (size, size, 3)), 0, 255)
        if (t >= cut) == (label == 0):
            frame[top:top + side, left:left + side] = colour
        frames[t] = frame
    return frames


def make_order_dataset(out_dir: str | Path, num_videos: int, seed: int = 0, size: int = 64,
                       num_frames: int = 8, lossless: bool = False, task: str = "order") -> list[tuple[str, str]]:
    """Write `num_videos` videos (balanced classes) into `out_dir/videos`; returns (video_id, label) rows.
    `task`: order (`crossing_square`, CLASSES) or appear (`appearing_square`, APPEAR_CLASSES)."""
    frames_of, classes = {"order": (crossing_square, CLASSES), "appear": (appearing_square, APPEAR_CLASSES)}[task]
    rng = np.random.default_rng(seed)
    videos = Path(out_dir) / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(num_videos):
        label = i % len(classes)
        video_id = f"{task}-{seed}-{i:04d}"
        write_video(videos / f"{video_id}.mp4", frames_of(label, rng, size, num_frames), lossless=lossless)
        rows.append((video_id, classes[label]))
    return rows


def write_labels(path: str | Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "label"])
        writer.writerows(rows)
    return Path(path)
