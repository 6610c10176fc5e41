"""Which frames to keep: a fixed count, a rate in real seconds, clips of consecutive frames, or windows of a
resampled stream (one backbone input of `window_frames` frames per row, for video backbones such as S3D)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

import numpy as np

from freezeframe.errors import InputError
from freezeframe.frames import segment_middles

Strategy = Literal["num_frames", "fps", "clips", "windows"]
STRATEGIES = get_args(Strategy)
LAST_WINDOWS = ("whole", "zeros", "video-features")
ZERO_FRAME = -1  # a frame index that stands for a black (all-zero) frame: the padding of `last_window="zeros"`


@dataclass(frozen=True)
class SamplingConfig:
    """`num_frames`: N segment middles. `fps`: one frame per 1/fps s of real time.
    `clips`: K evenly spaced clips of T frames, `stride` frames apart (EVL/ClipBERT-style multi-clip testing).
    `windows`: the video resampled at `fps` exactly as ffmpeg's `fps` filter does (MMPT's S3D-G extractor runs
    `ffmpeg -vf fps=30`), cut into windows of `window_frames` frames that start every `window_stride` frames; each
    window is one row (VideoCLIP: 30 frames every 30 at 30 fps = one per second).
    `last_window="whole"` keeps whole windows only, except that a video shorter than one window gives one, padded
    with its last frame; `"zeros"` goes on until a window reaches the last frame and pads that window with black
    frames (index -1), as fairseq MMPT's S3D-G extractor pads a video's last partial second for VideoCLIP;
    `"video-features"` takes every decoded frame (the native rate, `fps` unused) and keeps a window only if one more
    frame follows it, as v-iashin/video_features' I3D stacks (its flow needs W + 1 frames); a shorter video has none."""

    strategy: Strategy = "num_frames"
    num_frames: int = 8
    fps: float = 1.0
    clips: int = 1
    frames_per_clip: int = 8
    stride: int = 1
    window_frames: int = 30
    window_stride: int = 30
    last_window: str = "whole"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"unknown sampling strategy {self.strategy!r}.")
        for key in ("num_frames", "clips", "frames_per_clip", "stride", "window_frames", "window_stride"):
            if getattr(self, key) < 1:
                raise InputError(f"--{key.replace('_', '-')} must be at least 1.")
        if not self.fps > 0:
            raise InputError("--fps must be positive.")
        if self.last_window not in LAST_WINDOWS:
            raise InputError(f"unknown --last-window {self.last_window!r}; choose {' or '.join(LAST_WINDOWS)}.")

    def describe(self) -> dict:
        """The parameters that matter for this strategy (recorded in provenance)."""
        keys = {"num_frames": ("num_frames",), "fps": ("fps",), "clips": ("clips", "frames_per_clip", "stride"),
                "windows": ("fps", "window_frames", "window_stride")}
        full = asdict(self)
        # a zero-padded last window is recorded by its presence, so sets written before it existed take appends
        padded = {"last_window": self.last_window} if self.strategy == "windows" and self.last_window != "whole" else {}
        if self.last_window == "video-features":
            keys["windows"] = ("window_frames", "window_stride")  # every decoded frame: no rate
        return {"strategy": self.strategy, **{k: full[k] for k in keys[self.strategy]}, **padded}

    @property
    def frames_per_row(self) -> int:
        """Frames the backbone sees per stored row: a window's length, else 1."""
        return self.window_frames if self.strategy == "windows" else 1


def sample_indices(timestamps: np.ndarray, config: SamplingConfig, end: float | None = None,
                   start: float = 0.0) -> np.ndarray:
    """Indices (decode order) of the frames to keep, given every frame's timestamp in seconds, when the last frame
    ends (`end`; default: the last timestamp plus the median frame step) and how long after the container's start
    the first frame comes (`start`; `windows` count their ticks from the container's start, as ffmpeg does)."""
    n = len(timestamps)
    if n == 0:
        raise ValueError("the video has no frames")
    if config.strategy == "num_frames":
        return segment_middles(n, config.num_frames)
    if config.strategy == "fps":
        return _by_rate(np.asarray(timestamps, dtype=np.float64), config.fps)
    if config.strategy == "windows" and config.last_window == "video-features":
        return _stacks(n, config.window_frames, config.window_stride)
    if config.strategy == "windows":
        return _windows(ffmpeg_fps(np.asarray(timestamps, dtype=np.float64), config.fps, end, start), config.window_frames,
                        config.window_stride, config.last_window)
    return _clips(n, config.clips, config.frames_per_clip, config.stride)


def _float32_slack(ts: np.ndarray, last_duration: float) -> float:
    """Seconds by which a time may be early: decord's timestamps are float32, so a frame starting within float32
    rounding after an instant counts as starting at it (else resampling at the native rate skips and repeats)."""
    return min(2 * float(np.spacing(np.float32(max(abs(ts[-1]), 1.0)))), 0.05 * max(last_duration, 0.0)) or 1e-9


def ffmpeg_fps(ts: np.ndarray, fps: float, end: float | None = None, start: float = 0.0) -> np.ndarray:
    """The frames `ffmpeg -vf fps=...` outputs (the filter's defaults round=near, eof_action=round; the CLI's
    constant-rate output), as indices into `ts` (seconds since the first frame, which comes `start` s after the
    container's start). Each frame's time is rounded to the nearest output tick (halves away from zero); tick k
    shows the last frame whose tick is at most k (the first frame before its own); ticks run from the container's
    start to the rounded end of the last frame (`end`)."""
    last_duration = float(np.median(np.diff(ts))) if len(ts) > 1 else 1.0 / fps
    end = ts[-1] + last_duration if end is None else end
    slack = _float32_slack(ts, last_duration) * fps
    ticks = np.floor((ts - ts[0] + start) * fps + 0.5 + slack)
    count = max(1, int(np.floor((end - ts[0] + start) * fps + 0.5 + slack)))
    return np.maximum(np.searchsorted(ticks, np.arange(count), side="right") - 1, 0).astype(np.int64)


def _by_rate(ts: np.ndarray, fps: float) -> np.ndarray:
    """The frame on screen at t0, t0 + 1/fps, ... up to the end of the last frame."""
    steps = np.diff(ts)
    last_duration = float(np.median(steps)) if len(steps) else 1.0 / fps
    eps = _float32_slack(ts, last_duration)
    end = ts[-1] + last_duration
    times = ts[0] + np.arange(int(np.floor((end - ts[0]) * fps - 1e-9)) + 1) / fps
    times = times[times < end - eps]
    return np.clip(np.searchsorted(ts, times + eps, side="right") - 1, 0, len(ts) - 1).astype(np.int64)


def _windows(stream: np.ndarray, frames: int, stride: int, last: str = "whole") -> np.ndarray:
    """Flattened (windows * frames) indices of whole windows of `stream`; a short stream pads one window. With
    `last="zeros"`, windows go on until one reaches the end, its positions past the end `ZERO_FRAME`; a window
    that would start past the end (a stride longer than a window skips the last frames) is not made."""
    if last == "zeros":
        count = min(1 + -(-max(0, len(stream) - frames) // stride), -(-len(stream) // stride))
        positions = np.arange(count)[:, None] * stride + np.arange(frames)[None, :]
        inside = positions < len(stream)
        return np.where(inside, stream[np.minimum(positions, len(stream) - 1)], ZERO_FRAME).reshape(-1)
    if len(stream) < frames:
        return np.concatenate([stream, np.full(frames - len(stream), stream[-1], dtype=stream.dtype)])
    starts = np.arange(0, len(stream) - frames + 1, stride)
    return stream[starts[:, None] + np.arange(frames)[None, :]].reshape(-1)


def _stacks(n: int, frames: int, stride: int) -> np.ndarray:
    """video_features' I3D windows over every decoded frame: one each `stride` frames that one frame follows."""
    starts = np.arange(0, max(0, n - frames), stride)
    if not len(starts):
        raise ValueError(f"the video has {n} frames; video_features' stacks of {frames} need {frames + 1} (one past "
                         "the stack), so it makes no window of it")
    return (starts[:, None] + np.arange(frames)[None, :]).reshape(-1).astype(np.int64)


def _clips(n: int, clips: int, frames_per_clip: int, stride: int) -> np.ndarray:
    span = (frames_per_clip - 1) * stride + 1
    if clips == 1:
        starts = np.array([max(0, (n - span) // 2)])
    else:
        starts = np.round(np.linspace(0, max(0, n - span), clips)).astype(np.int64)
    offsets = np.arange(frames_per_clip) * stride
    return np.minimum(starts[:, None] + offsets[None, :], n - 1).reshape(-1).astype(np.int64)


SEEK_MODES = ("exact", "keyframe")


def snap_to_keyframes(indices: np.ndarray, timestamps: np.ndarray, keyframes: np.ndarray) -> np.ndarray:
    """`--seek keyframe`: each sampled index replaced by the keyframe nearest to it in time (ties: the earlier).

    A keyframe decodes alone, so a sparse sample costs one decoded frame instead of the walk from its keyframe.
    """
    key_times = timestamps[keyframes]
    after = np.clip(np.searchsorted(key_times, timestamps[indices], side="left"), 0, len(keyframes) - 1)
    before = np.maximum(after - 1, 0)
    closer_before = np.abs(timestamps[indices] - key_times[before]) <= np.abs(key_times[after] - timestamps[indices])
    return keyframes[np.where(closer_before, before, after)].astype(np.int64)
