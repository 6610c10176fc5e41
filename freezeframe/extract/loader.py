"""Decode workers: a torch IterableDataset that turns shard specs into frame windows, in worker processes.

Each worker owns whole shards and yields, in order, for every video: its windows of frames
(preprocessed already in exact mode), a failure if the video cannot be read, and a shard end.
The main process batches frames across videos and never decodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from freezeframe.extract.decode import PyAVReader, VideoReadError, iter_windows, open_video
from freezeframe.extract.preprocess import ExactPreprocessor, PreprocessConfig
from freezeframe.extract.sampling import SamplingConfig, sample_indices
from freezeframe.extract.sources import VideoSource
from freezeframe.store.claims import Claims


@dataclass
class Window:
    """Consecutive sampled frames of one video; `last` marks the video's final window."""

    shard: int
    video_id: str
    frames: torch.Tensor  # exact: float (n, 3, h, w); fast: uint8 (n, H, W, 3); windows: (n, T, ...) of those
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


class WindowStream(IterableDataset):
    """Shards of videos in, items out; with `claims`, each shard's videos are claimed just before it is decoded."""

    def __init__(self, shards: list[list[VideoSource]], spec: DecodeSpec, claims: Claims | None = None) -> None:
        self.shards = shards
        self.spec = spec
        self.claims = claims

    def __iter__(self) -> Iterator[Item]:
        worker = get_worker_info()
        wid, nworkers = (worker.id, worker.num_workers) if worker else (0, 1)
        if worker is not None:
            torch.set_num_threads(1)  # many decode workers share the cores; one thread each avoids oversubscription
        preprocess = ExactPreprocessor(self.spec.preprocess) if self.spec.preprocess.mode == "exact" else None
        for shard_index in range(wid, len(self.shards), nworkers):
            sources = self.shards[shard_index]
            if self.claims is not None:
                held = set(self.claims.claim([source.video_id for source in sources]))
                yield from (Skipped(shard_index, s.video_id) for s in sources if s.video_id not in held)
                sources = [source for source in sources if source.video_id in held]
            for source in sources:
                yield from self._video(shard_index, source, preprocess)
            yield ShardEnd(shard_index)

    def _video(self, shard: int, source: VideoSource, preprocess) -> Iterator[Item]:
        try:
            reader = open_video(source.path, self.spec.decoder)
        except VideoReadError as exc:
            yield Failure(shard, source.video_id, source.path, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - never let one video stop the batch
            yield Failure(shard, source.video_id, source.path, f"{type(exc).__name__}: {exc}")
            return
        failure = yield from self._windows(shard, source, reader, preprocess)
        if failure is not None and failure[1] and self.spec.decoder == "auto" and reader.name == "decord":
            # decord opened the file but cannot decode it (e.g. H.264 in MPEG-TS), and nothing of it was
            # yielded yet: `auto` promises PyAV for files decord cannot read.
            try:
                fallback = PyAVReader(source.path)
            except VideoReadError as exc:
                failure = (f"decord: {failure[0]}; pyav: {exc}", False)
            else:
                retry = yield from self._windows(shard, source, fallback, preprocess)
                failure = None if retry is None else (f"decord: {failure[0]}; pyav: {retry[0]}", False)
        if failure is not None:
            yield Failure(shard, source.video_id, source.path, failure[0])

    def _windows(self, shard: int, source: VideoSource, reader, preprocess):
        """Yield the windows of one video; return None, or (reason, whether a decoder retry is safe)."""
        done = 0
        try:
            ts = reader.timestamps
            indices = sample_indices(ts, self.spec.sampling)
            info = {"source": source.path, "decoder": reader.name, "source_frames": int(len(ts)),
                    "duration": float(ts[-1] + (np.median(np.diff(ts)) if len(ts) > 1 else 0.0))}
            per_row = self.spec.sampling.frames_per_row
            for frames, chunk in iter_windows(reader, indices, self.spec.max_window_bytes, per_row):
                done += len(chunk)
                pixels = preprocess(frames) if preprocess is not None else torch.from_numpy(frames)
                last = done == len(indices)
                if per_row > 1:  # one row per window of frames
                    pixels, chunk = pixels.unflatten(0, (-1, per_row)), chunk.reshape(-1, per_row)
                starts = chunk if per_row == 1 else chunk[:, 0]
                yield Window(shard, source.video_id, pixels, chunk, ts[starts], last, info if last else {})
        except VideoReadError as exc:
            return str(exc), done == 0
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}", False
        finally:
            reader.close()
        return None
