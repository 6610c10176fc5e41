"""Decoding shards into chunks of frames: for every video, its chunks (preprocessed already in exact mode, resized
to the backbone's short side in fast mode) or a failure if it cannot be read, then a shard end. Run by decode workers
(extract/workers.py), or in the main process with --workers 0, under a time limit per chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from freezeframe.extract.augment import AugmentConfig, with_views
from freezeframe.extract.decode import DecodeOptions, VideoReadError, iter_chunks, open_video
from freezeframe.extract.preprocess import ExactPreprocessor, PreprocessConfig, one_torch_thread
from freezeframe.extract.sampling import ZERO_FRAME, SamplingConfig, sample_indices, snap_to_keyframes
from freezeframe.extract.sources import VideoSource
from freezeframe.extract.timelimit import time_limit
from freezeframe.faults import fault_point
from freezeframe.store.claims import Claims


@dataclass
class Chunk:
    """Consecutive sampled frames of one video; `last` marks the video's final chunk."""

    shard: int
    video_id: str
    frames: torch.Tensor  # exact: float (n, 3, S, S), with views (n, 1 + V, 3, S, S); fast: uint8 (n, h, w, 3),
    # short side S; windows: (n, T, ...) of those
    frame_indices: np.ndarray  # (n,), or (n, T) for windows
    timestamps: np.ndarray  # (n,) seconds; a window's is that of its first frame
    last: bool
    info: dict  # on the last chunk: source path, decoder, frame count and duration of the video


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


Item = Chunk | Failure | ShardEnd | Skipped


@dataclass(frozen=True)
class DecodeSpec:
    """Everything a decode worker needs, picklable."""

    sampling: SamplingConfig
    preprocess: PreprocessConfig
    decoder: str = "auto"
    max_chunk_bytes: int = 64 * 1024 * 1024
    seek: str = "exact"  # "keyframe": each sampled frame snapped to its nearest keyframe
    options: DecodeOptions = DecodeOptions()
    augment: AugmentConfig = AugmentConfig()  # augmented views made beside the exact preprocessing


class ChunkStream:
    """Shards of videos in, items out, in this process (decode workers run it video by video: extract/workers.py);
    with `claims`, each shard's videos are claimed just before it is decoded. With `timeout`, a video whose next
    chunk takes longer than that many seconds to decode fails (extract/timelimit.py says what this cannot stop)."""

    def __init__(self, shards: list[list[VideoSource]], spec: DecodeSpec, claims: Claims | None = None,
                 timeout: float = 0.0) -> None:
        self.shards = shards
        self.spec = spec
        self.claims = claims
        self.timeout = timeout

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
        """The exact-mode transform decode workers apply (None in fast mode: readers resize, the device crops)."""
        return ExactPreprocessor(self.spec.preprocess) if self.spec.preprocess.mode == "exact" else None

    def _limit(self):
        return time_limit(self.timeout, f"decoding stalled: nothing decoded for {self.timeout:g} s (--decode-timeout); "
                                        "the video was abandoned")

    def video_items(self, shard: int, source: VideoSource, preprocess) -> Iterator[Item]:
        """The chunks of one video, or its failure."""
        preprocess = with_views(preprocess, self.spec.preprocess, self.spec.augment, source.video_id)
        try:
            with self._limit():
                fault_point("decode")
                fault_point("decode.hang")
                reader = open_video(source.path, self.spec.decoder, self.spec.options)
        except VideoReadError as exc:
            yield Failure(shard, source.video_id, source.path, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - never let one video stop the batch
            yield Failure(shard, source.video_id, source.path, f"{type(exc).__name__}: {exc}")
            return
        failure = yield from self._chunks(shard, source, reader, preprocess)
        if failure is not None:
            yield Failure(shard, source.video_id, source.path, failure)

    def _chunks(self, shard: int, source: VideoSource, reader, preprocess):
        """Yield the chunks of one video; return None, or the reason it failed."""
        done = 0
        try:
            ts = reader.timestamps
            indices = sample_indices(ts, self.spec.sampling, reader.end, reader.start)
            if self.spec.seek == "keyframe":
                indices = snap_to_keyframes(indices, ts, reader.keyframes)
            info = {"source": source.path, "decoder": reader.name, "source_frames": int(len(ts)),
                    "duration": reader.end}
            per_row = self.spec.sampling.frames_per_row
            # a zero frame (padding of the last window) decodes as the last real frame, then is blacked out
            decoded = np.where(indices == ZERO_FRAME, indices.max(), indices)
            chunks = iter_chunks(reader, decoded, self.spec.max_chunk_bytes, per_row)
            while True:
                # decode and preprocess the next chunk; one torch thread: measured, 2 threads cost 10x the CPU
                with one_torch_thread(), self._limit():
                    if (item := next(chunks, None)) is None:
                        break
                    frames, chunk = item
                    chunk = indices[done:done + len(chunk)]
                    frames[chunk == ZERO_FRAME] = 0
                    pixels = preprocess(frames) if preprocess is not None else torch.from_numpy(frames)
                done += len(chunk)
                last = done == len(indices)
                if per_row > 1:  # one row per window of frames
                    pixels, chunk = pixels.unflatten(0, (-1, per_row)), chunk.reshape(-1, per_row)
                starts = chunk if per_row == 1 else chunk[:, 0]
                yield Chunk(shard, source.video_id, pixels, chunk, ts[starts], last, info if last else {})
        except VideoReadError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        finally:
            reader.close()
        return None
