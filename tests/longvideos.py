"""Long test videos generated with PyAV from the sample footage: several GOPs, B-frames, variable frame rate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def footage(source: Path, count: int, width: int, height: int) -> list[np.ndarray]:
    """`count` RGB frames of `source`, resized to width x height, looping the clip when it is shorter."""
    frames = []
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.reformat(width=width, height=height, format="rgb24").to_ndarray())
            if len(frames) == count:
                break
    return [frames[i % len(frames)] for i in range(count)]


def write_video(path: Path, frames: list[np.ndarray], *, gop: int = 25, b_frames: int = 2,
                durations_ms: list[int] | None = None, codec: str = "libx264", rate: int = 25) -> Path:
    """H.264 (yuv420p) of `frames`, keyframe every `gop` frames; `durations_ms` per frame makes it variable-rate."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = b_frames
        stream.options = {"preset": "ultrafast" if b_frames == 0 else "superfast", "sc_threshold": "0",
                          "keyint_min": str(gop), "threads": "1"}
        if durations_ms is not None:
            stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
        pts = 0
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if durations_ms is not None:
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                pts += durations_ms[i]
            else:
                frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
