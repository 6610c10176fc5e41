"""One shard: a temporary bundle filled video by video, renamed into place, then marked committed.

On a remote store (no rename) the bundle is written under its final name; the marker, written last, is
still what commits it, so readers never see it half-written.

Rows of every array are the set's rows (frames, windows or token rows); each video owns a contiguous row range. A
video can be discarded until it is ended (a decode error half-way through loses nothing else).

A commit costs little beyond the bytes: each array's sha256 is computed from the blocks as they are written (read
back only after a discarded video cut rows already written, or where zarr may store other bytes), and the bundle's
files and folders are fsynced all at once from a thread pool (the filesystem commits them together) before the
rename.
"""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from freezeframe.faults import fault_point
from freezeframe.store.backends import COMPRESSIONS, Backend
from freezeframe.store.files import fsync_dir, write_json_atomic
from freezeframe.store.layout import MARKER_SUFFIX, TEMP_PREFIX, marker_path, new_shard_id, temp_owner_tag
from freezeframe.store.location import StorePath, is_remote, remove_tree

FLUSH_BYTES = 32 * 1024 * 1024
HASH_BLOCK_BYTES = 16 * 1024 * 1024
FSYNC_THREADS = 16
_fsync_pool: ThreadPoolExecutor | None = None


def array_sha256(reader, name: str) -> str:
    """sha256 of an array's C-order bytes, read in blocks of rows to bound memory."""
    shape = reader.shape(name)
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * reader.dtype(name).itemsize)
    step = max(1, HASH_BLOCK_BYTES // row_bytes)
    digest = hashlib.sha256()
    for start in range(0, shape[0], step):
        digest.update(np.ascontiguousarray(reader.read(name, start, start + step)).tobytes())
    return digest.hexdigest()


@dataclass
class _OpenVideo:
    video_id: str
    row_start: int
    n_rows: int = 0


@dataclass
class ShardWriter:
    """Writes one shard of a feature set; `commit()` makes it visible, `abort()` removes it."""

    shards_dir: StorePath
    backend: Backend
    shard_id: str = field(default_factory=new_shard_id)
    compression: str = "none"  # a storage detail recorded in the marker, not part of provenance
    marker_extra: dict = field(default_factory=dict)  # e.g. provenance and frozen-bundle hashes, for verify
    row_axis: str = "frame"  # the name of the arrays' first dimension (frame, window, or row for text)
    on_commit: Callable[[dict], None] | None = None  # called with the marker once committed (e.g. to index it)

    def __post_init__(self) -> None:
        self.final_path = self.shards_dir / f"{self.shard_id}{self.backend.extension}"
        self.temp_path = self.shards_dir / f"{TEMP_PREFIX}{temp_owner_tag()}-{self.shard_id}{self.backend.extension}"
        if is_remote(self.shards_dir):
            self.temp_path = self.final_path  # invisible until its marker exists
        self._bundle = None
        self._rows_written = 0  # rows flushed to the bundle
        self._pending: dict[str, list[np.ndarray]] = {}
        self._pending_bytes = 0
        self._open: dict[str, _OpenVideo] = {}
        self._row_cursor = 0  # rows appended so far, flushed or not
        self.videos: list[dict] = []
        self._array_meta: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._digests: dict[str, "hashlib._Hash"] | None = {}  # sha256 of the rows flushed; None: read back
        self._array_rows: dict[str, int] = {}  # rows flushed per array

    @property
    def num_videos(self) -> int:
        return len(self.videos)

    def append(self, video_id: str, arrays: dict[str, np.ndarray]) -> None:
        """Append rows of one video; every array must have the same number of rows."""
        rows = {len(block) for block in arrays.values()}
        if len(rows) != 1:
            raise ValueError(f"arrays for {video_id!r} disagree on the number of rows: {sorted(rows)}")
        (n,) = rows
        video = self._open.get(video_id)
        if video is None:
            if self._open:
                raise RuntimeError("a shard writes one video at a time; end or discard the open one first")
            video = self._open[video_id] = _OpenVideo(video_id, self._row_cursor)
        for name, block in arrays.items():
            if not block.dtype.isnative:  # stored and hashed in the machine's byte order, as readers return it
                block = block.astype(block.dtype.newbyteorder("="))
            meta = (block.shape[1:], block.dtype)  # (str of a dtype costs ~7 us: once per array, at commit)
            known = self._array_meta.setdefault(name, meta)
            if known != meta:
                raise ValueError(f"array {name!r} changed shape or dtype within a shard: {known} then {meta}")
            self._pending.setdefault(name, []).append(block)
            self._pending_bytes += block.nbytes
        video.n_rows += n
        self._row_cursor += n
        if self._pending_bytes >= FLUSH_BYTES:
            self._flush()

    def end_video(self, video_id: str, info: dict | None = None) -> None:
        """Close a video: its rows become part of the shard (still invisible until commit)."""
        video = self._open.pop(video_id, None)
        if video is None:
            raise KeyError(f"video {video_id!r} has no rows in this shard")
        self.videos.append({"id": video_id, "row_start": video.row_start, "n_rows": video.n_rows, **(info or {})})

    def discard_video(self, video_id: str) -> None:
        """Drop every row of an open video (e.g. its decoding failed half-way)."""
        video = self._open.pop(video_id, None)
        if video is None:
            return
        keep = video.row_start
        if self._rows_written > keep:
            self._bundle.truncate(keep)
            self._rows_written = keep
            self._digests = None  # the hashes covered the rows cut: read the arrays back at commit
            self._array_rows = {name: min(rows, keep) for name, rows in self._array_rows.items()}
            self._pending = {}  # every pending row came after the flushed ones: all belong to this video
        else:
            # pending rows of earlier, ended videos stay; only this video's tail is dropped
            keep_pending = keep - self._rows_written
            kept: dict[str, list[np.ndarray]] = {}
            for name, blocks in self._pending.items():
                block = (np.concatenate(blocks) if len(blocks) > 1 else blocks[0])[:keep_pending]
                if len(block):
                    kept[name] = [block]
            self._pending = kept
        self._pending_bytes = sum(block.nbytes for blocks in self._pending.values() for block in blocks)
        self._row_cursor = keep

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._bundle is None:
            self._bundle = self.backend.writer(self.temp_path, compression=self.compression, row_axis=self.row_axis)
        rows = 0
        for name, blocks in self._pending.items():
            block = np.ascontiguousarray(np.concatenate(blocks) if len(blocks) > 1 else blocks[0])
            self._bundle.append(name, block)
            if self._digests is not None:
                self._digests.setdefault(name, hashlib.sha256()).update(block.data)
            self._array_rows[name] = self._array_rows.get(name, 0) + len(block)
            fault_point("shard.array")
            rows = len(block)
        self._rows_written += rows
        self._pending = {}
        self._pending_bytes = 0

    def commit(self, extra: dict | None = None) -> dict:
        """Write the shard whole, rename it into place, then write its marker last. Returns the marker."""
        if self._open:
            raise RuntimeError(f"cannot commit with open videos: {sorted(self._open)}")
        if not self.videos:
            raise RuntimeError("cannot commit an empty shard")
        self._flush()
        self._bundle.set_attrs({"shard_id": self.shard_id, "videos": self.videos,
                                "committed_by": f"the commit marker {self.shard_id}{MARKER_SUFFIX} beside this shard; "
                                                "without it the shard is not part of the store"})
        self._bundle.close()
        expected_rows = sum(video["n_rows"] for video in self.videos)
        for name, rows in self._array_rows.items():
            if rows != expected_rows:
                raise RuntimeError(f"array {name!r} has {rows} rows, expected {expected_rows}")
        arrays = {name: {"shape": list(shape), "dtype": str(dtype), "rows": expected_rows}
                  for name, (shape, dtype) in sorted(self._array_meta.items())}
        if self._digests is not None and self._bundle.exact:
            for name, meta in arrays.items():
                meta["sha256"] = self._digests[name].hexdigest()
        else:
            reader = self.backend.reader(self.temp_path)
            try:
                for name, meta in arrays.items():
                    if reader.shape(name) != (expected_rows, *meta["shape"]):
                        raise RuntimeError(f"array {name!r} is stored as {reader.shape(name)}, expected "
                                           f"{(expected_rows, *meta['shape'])}")
                    meta["sha256"] = array_sha256(reader, name)
            finally:
                reader.close()
        fault_point("shard.rename")
        if self.temp_path != self.final_path:
            _fsync_tree(self.temp_path)
            self.temp_path.rename(self.final_path)
            fsync_dir(self.shards_dir)
        fault_point("shard.marker")
        marker = {
            "shard_id": self.shard_id,
            "format": self.backend.name,
            "compression": self.compression,
            "codec": COMPRESSIONS[self.compression],
            "file": self.final_path.name,
            "num_rows": expected_rows,
            "videos": self.videos,
            "arrays": arrays,
            "committed": time.time(),
            "writer": temp_owner_tag(),
            **self.marker_extra,
            **(extra or {}),
        }
        write_json_atomic(marker_path(self.shards_dir, self.shard_id), marker, compact=True)
        if self.on_commit is not None:
            self.on_commit(marker)
        return marker

    def abort(self) -> None:
        """Remove whatever was written; nothing becomes visible."""
        if self._bundle is not None:
            self._bundle.close()  # closes an HDF5 file before it is unlinked
            self._bundle = None
        # a commit that failed after the rename but before its marker leaves an unmarked (invisible) shard
        paths = [self.temp_path]
        if not marker_path(self.shards_dir, self.shard_id).exists():
            paths.append(self.final_path)
        for path in paths:
            remove_tree(path)  # a bundle: a directory tree (Zarr) or one file (HDF5)


def _fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync every file and directory of a freshly written bundle before it is renamed into place, all at once.

    A single-file bundle (HDF5) is fsynced itself; the rename that follows is made durable by
    the caller's fsync of the parent directory.
    """
    if not path.is_dir():
        _fsync_file(path)  # raises if the bundle is missing: never rename what was not written
        return
    calls = []
    for root, _dirs, files in os.walk(path):
        calls += [(_fsync_file, os.path.join(root, name)) for name in files]
        calls.append((fsync_dir, Path(root)))
    global _fsync_pool
    if _fsync_pool is None:
        _fsync_pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="freezeframe-fsync")
    # concurrent fsyncs are committed together by the filesystem's journal: ~2 ms for a bundle instead of ~3 ms each
    for _done in _fsync_pool.map(lambda call: call[0](call[1]), calls):
        pass
