"""Writes ffmpeg_fps30.json: which source frame each output frame of MMPT's S3D-G decoding command is.

fairseq examples/MMPT/scripts/video_feature_extractor/videoreader.py decodes with ffmpeg-python:
`ffmpeg.input(path).filter('fps', fps=30).filter('scale', w, h)...output('pipe:', format='rawvideo', pix_fmt='rgb24')`,
i.e. the command below (scale left out: it does not change which frames come out). Run from the repository root:
`python tests/data/reference/make_ffmpeg_fps.py` (needs the `ffmpeg` program on PATH; records its version).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from stamped_clips import CONTAINERS, HEIGHT, RATES, WIDTH, frame_count, make_clip, read_stamp  # noqa: E402

REAL = ("v_GGSY1Qvo990.mp4", "ntsc_29.97fps.mp4", "archery_demo.mp4", "lowfps_6fps.mp4", "test_mpeg4.avi",
        "short_32frames.mp4", "v_ZNVhz7ctTq0.mp4", "ntu_1080p.avi")


def ffmpeg_rgb(path: Path, graph: str, width: int, height: int, passthrough: bool = False) -> np.ndarray:
    """rgb24 frames (n, height, width, 3) of `ffmpeg -i path -filter_complex [0]graph[s0] ... -f rawvideo pipe:`."""
    timing = ["-fps_mode", "passthrough"] if passthrough else []
    cmd = ["ffmpeg", "-nostdin", "-i", str(path), "-filter_complex", f"[0]{graph}[s0]", "-map", "[s0]", *timing,
           "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"]
    out = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


def stamped() -> list[dict]:
    """Each generated clip: its inputs (rate, frames, container, pts) and the frame ffmpeg's fps=30 outputs."""
    import av

    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, rate in RATES.items():
            for container in CONTAINERS:
                path = Path(tmp) / f"clip_{name}.{container}"
                make_clip(path, rate, frame_count(rate))
                with av.open(str(path)) as handle:
                    stream = handle.streams.video[0]
                    pts = sorted(int(p.pts) for p in handle.demux(stream) if p.size)
                    time_base = str(stream.time_base)
                selected = [read_stamp(f) for f in ffmpeg_rgb(path, "fps=fps=30", WIDTH, HEIGHT)]
                clips.append({"rate": name, "container": container, "frames": frame_count(rate),
                              "time_base": time_base, "pts": pts, "ffmpeg_fps30": selected})
    return clips


def real() -> dict:
    """Each sample video: the source frame(s) whose pixels equal each output frame (both decoded by ffmpeg at
    48x32 nearest-neighbour; a list where static footage makes several frames identical)."""
    found = {}
    for name in REAL:
        path = ROOT / "tests" / "data" / "videos" / name
        every = ffmpeg_rgb(path, "scale=48:32:flags=neighbor", 48, 32, passthrough=True).reshape(-1, 48 * 32 * 3)
        out = ffmpeg_rgb(path, "fps=fps=30,scale=48:32:flags=neighbor", 48, 32).reshape(-1, 48 * 32 * 3)
        hits = [np.flatnonzero((every == frame).all(1)).tolist() for frame in out]
        assert all(hits), name
        found[name] = [h[0] if len(h) == 1 else h for h in hits]
    return found


if __name__ == "__main__":
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    fixture = {"reference": version, "command": "ffmpeg -i IN -filter_complex [0]fps=fps=30[s0] -map [s0] "
               "-f rawvideo -pix_fmt rgb24 pipe:", "stamped": stamped(), "real": real()}
    Path(__file__).with_name("ffmpeg_fps30.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
