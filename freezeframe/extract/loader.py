"""Decoding shards into frame windows: for every video, its windows of frames (preprocessed already in exact
mode) or a failure if it cannot be read, then a shard end. Run by decode workers (extract/workers.py), or in
the main process with --workers 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from freezeframe.extract.augment import AugmentConfig, with_views
from freezeframe.extract.decode import DecodeOptions, VideoReadError, iter_windows, open_video
from freezeframe.extract.preprocess import ExactPreprocessor, PreprocessConfig
from freezeframe.extract.sampling import ZERO_FRAME, SamplingConfig, sample_indices, snap_to_keyframes
from freezeframe.extract.sources import VideoSource
from freezeframe.store.claims import Claims


@dataclass
class Window:
    """Consecutive sampled frames of one video; `last` marks the video's final window."""

    shard: int
    video_id: str
    frames: torch.Tensor  # exact: float (n, 3, h, w), with views (n, 1 + V, 3, h, w); fast: uint8 (n, H, W, 3);
    # windows: (n, T, ...) of those
    frame_indices: np.ndarray  # (n,), or (n, T) for windows
    timestamps: np.ndarray  # (n,) seconds; a window's is that of its first frame
    last: bool
    info: dict  # on the last window: source path, decoder, frame count and duration of the video


@dataclass
class Failure:
    shard: int
    video_id: str
    path: str
    reason: str


@dataclass
class ShardEnd:
    shard: int


@dataclass
class Skipped:
    """A video another writer holds a claim on (or committed meanwhile); this process leaves it alone."""

    shard: int
    video_id: str


Item = Window | Failure | ShardEnd | Skipped


@dataclass(frozen=True)
class DecodeSpec:
    """Everything a decode worker needs, picklable."""

    sampling: SamplingConfig
    preprocess: PreprocessConfig
    decoder: str = "auto"
    max_window_bytes: int = 64 * 1024 * 1024
    seek: str = "exact"  # "keyframe": each sampled frame snapped to its nearest keyframe
    options: DecodeOptions = DecodeOptions()
    augment: AugmentConfig = AugmentConfig()  # augmented views made beside the exact preprocessing


class WindowStream:
    """Shards of videos in, items out, in this process (decode workers run it video by video: extract/workers.py);
    with `claims`, each shard's videos are claimed just before it is decoded."""

    def __init__(self, shards: list[list[VideoSource]], spec: DecodeSpec, claims: Claims | None = None) -> None:
        self.shards = shards
        self.spec = spec
        self.claims = claims

    def __iter__(self) -> Iterator[Item]:
        preprocess = self.preprocessor()
        for shard_index in range(len(self.shards)):
            sources = self.shards[shard_index]
            if self.claims is not None:
                held = set(self.claims.claim([source.video_id for source in sources]))
                yield from (Skipped(shard_index, s.video_id) for s in sources if s.video_id not in held)
                sources = [source for source in sources if source.video_id in held]
            for source in sources:
                yield from self.video_items(shard_index, source, preprocess)
            yield ShardEnd(shard_index)

    def preprocessor(self) -> ExactPreprocessor | None:
        """The exact-mode transform decode workers apply (None in fast mode: the main process resizes)."""
        return ExactPreprocessor(self.spec.preprocess) if self.spec.preprocess.mode == "exact" else None

    def video_items(self, shard: int, source: VideoSource, preprocess) -> Iterator[Item]:
        """The windows of one video, or its failure."""
        preprocess = with_views(preprocess, self.spec.preprocess, self.spec.augment, source.video_id)
        try:
            reader = open_video(source.path, self.spec.decoder, self.spec.options)
        except VideoReadError as exc:
            yield Failure(shard, source.video_id, source.path, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - never let one video stop the batch
            yield Failure(shard, source.video_id, source.path, f"{type(exc).__name__}: {exc}")
            return
        failure = yield from self._windows(shard, source, reader, preprocess)
        if failure is not None:
            yield Failure(shard, source.video_id, source.path, failure)

    def _windows(self, shard: int, source: VideoSource, reader, preprocess):
        """Yield the windows of one video; return None, or the reason it failed."""
        done = 0
        try:
            ts = reader.timestamps
            indices = sample_indices(ts, self.spec.sampling)
            if self.spec.seek == "keyframe":
                indices = snap_to_keyframes(indices, ts, reader.keyframes)
            info = {"source": source.path, "decoder": reader.name, "source_frames": int(len(ts)),
                    "duration": float(ts[-1] + (np.median(np.diff(ts)) if len(ts) > 1 else 0.0))}
            per_row = self.spec.sampling.frames_per_row
            # a zero frame (padding of the last window) decodes as the last real frame, then is blacked out
            decoded = np.where(indices == ZERO_FRAME, indices.max(), indices)
            for frames, chunk in iter_windows(reader, decoded, self.spec.max_window_bytes, per_row):
                chunk = indices[done:done + len(chunk)]
                frames[chunk == ZERO_FRAME] = 0
                done += len(chunk)
                pixels = preprocess(frames) if preprocess is not None else torch.from_numpy(frames)
                last = done == len(indices)
                if per_row > 1:  # one row per window of frames
                    pixels, chunk = pixels.unflatten(0, (-1, per_row)), chunk.reshape(-1, per_row)
                starts = chunk if per_row == 1 else chunk[:, 0]
                yield Window(shard, source.video_id, pixels, chunk, ts[starts], last, info if last else {})
        except VideoReadError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        finally:
            reader.close()
        return None
