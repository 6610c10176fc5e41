"""Read access to one feature set: committed videos only, arrays by video id, provenance, failures."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from freezeframe.errors import API_ERRORS, FreezeframeError, StoreError, library_error, library_errors
from freezeframe.store.backends import BACKENDS, get_backend
from freezeframe.store.files import read_json, read_jsonl
from freezeframe.limits import check_read, read_cap
from freezeframe.store.confine import UnsafeStoreError
from freezeframe.store.index import index_from_markers, load_index
from freezeframe.store.location import is_remote
from freezeframe.store.layout import FAILURES_FILE, FROZEN_NAME, INDEX_DIR, PROVENANCE_FILE, SHARDS_DIR
from freezeframe.store.markers import read_marker, read_markers, shard_file
from freezeframe.store.segment import DamagedIndexError, Entry, Segment, ShardInfo
from freezeframe.store.location import store_path as store_path_of

if TYPE_CHECKING:
    from freezeframe.store.published import PublishedStore

LOCATED_KEPT = 1 << 20  # video entries `locate` keeps (about 200 bytes each)
MARKERS_KEPT = 256  # markers `video_info` keeps parsed (about 10 KB each for 64 videos)


def block_source(array: str, stored: dict) -> str:
    """The stored array to read for `array`: `block_input/<b>` is kept only where `tokens/<b-1>` is not."""
    if array in stored or not array.startswith("block_input/"):
        return array
    previous = f"tokens/{int(array.split('/')[1]) - 1}"
    return previous if previous in stored else array


def frame_rows(start: int, n: int, frames: np.ndarray | slice | None,
               video_id: str) -> tuple[np.ndarray | None, int, int]:
    """The flat rows to read of one video stored at rows [start, start + n): (None, lo, hi) for the span lo..hi-1
    (all frames, or a slice with step 1), else (rows, lo, hi) for chosen rows, all in [lo, hi)."""
    if frames is None:
        return None, start, start + n
    if isinstance(frames, slice):
        lo, hi, step = frames.indices(n)
        if step == 1:
            return None, start + lo, start + max(lo, hi)
        frames = np.arange(lo, hi, step)
    frames = np.asarray(frames, dtype=np.int64)
    if not frames.size:
        return frames, start, start
    if frames.size <= 64:  # a training selection: Python's min/max of a short list beat two numpy reductions
        listed = frames.tolist()
        first, last = min(listed), max(listed)
    else:
        first, last = int(frames.min()), int(frames.max())
    if first < 0 or last >= n:
        raise IndexError(f"frame index out of range for {video_id!r} with {n} frames")
    return start + frames, start + first, start + last + 1


class FeatureSet:
    """A named set of features in a store, e.g. `store["clip-vit-b-32-openai"]`.

    Only committed shards are visible; call `refresh()` to see shards committed since opening. Rows are the first
    axis of every array: frames, windows of frames (S3D) or a caption's token rows (text sets).
    """

    def __init__(self, store_path: Path, name: str, published: "PublishedStore | None" = None) -> None:
        self.name = name
        self.published = published  # shards of a published store are fetched (and checked) when first read
        self.path = store_path_of(store_path) / name
        if not is_remote(self.path) and (self.path.is_symlink() or (self.path / SHARDS_DIR).is_symlink()
                                         or (self.path / INDEX_DIR).is_symlink()):
            raise UnsafeStoreError(f"{self.path} (or its {SHARDS_DIR} or {INDEX_DIR} folder) is a symbolic link; a "
                                   "feature set is read only inside its store.")
        provenance_path = self.path / PROVENANCE_FILE
        if not provenance_path.exists():
            raise StoreError(f"{self.path} is not a feature set (no {PROVENANCE_FILE}).")
        self.provenance: dict = read_json(provenance_path, kind=dict)
        self._readers: dict[str, object] = {}
        self._markers: OrderedDict[str, dict] = OrderedDict()  # recently read markers, for video_info
        self._checked: set[tuple[str, str]] = set()  # (shard, array) whose stored shape matched the marker
        self._vouched: set[str] = set()  # shards whose index entries matched their commit marker
        self._arrays_read: dict[tuple[str, str], tuple] = {}  # (shard, array) -> checked (reader, row bytes, name)
        self.refresh()

    def refresh(self) -> None:
        """Look at the commit markers again, so that newly committed shards become visible."""
        self._index = load_index(self.path)
        self._vouched = set()

    @property
    def _index(self):
        return self._current_index

    @_index.setter
    def _index(self, index) -> None:
        self._current_index = index
        self._located: dict[str, Entry] = {}  # video id -> entry, looked up in this index (a training epoch asks
        # for each video again; a binary search of the index costs ~10 us)

    def _from_index(self, lookup):
        """`lookup(index)`, or, when the index turns out damaged, the same from an index built from the markers."""
        try:
            return lookup(self._index)
        except DamagedIndexError:
            self._index = index_from_markers(self.path)  # the markers are the truth; verify reports the damage
            return lookup(self._index)

    # ---- listing ---------------------------------------------------------------------------
    def video_ids(self) -> list[str]:
        return list(self._from_index(lambda index: index.video_ids()))

    def __len__(self) -> int:
        return self._from_index(len)

    def __contains__(self, video_id: object) -> bool:
        return isinstance(video_id, str) and self._from_index(lambda index: video_id in index)

    @property
    def num_rows(self) -> int:
        """Rows of all committed videos (frames, windows, or caption token rows)."""
        return self._from_index(lambda index: index.num_rows)

    @property
    def shard_ids(self) -> list[str]:
        return list(self._index.shard_ids)

    def arrays(self) -> dict[str, dict]:
        """Array name -> {"shape": per-row dims, "dtype": str}, as committed."""
        return self._index.arrays()

    def storage(self) -> list[dict]:
        """How the committed shards are stored: [{"format", "compression", "shards"}], one entry per combination."""
        return self._index.storage()

    def video_table(self) -> Segment:
        """The whole index as one segment: every committed video's id, shard and rows (e.g. for an export)."""
        return self._from_index(lambda index: index.merged())

    def shard_info(self, shard_id: str) -> ShardInfo:
        """Format, compression, rows and arrays of a served shard."""
        return self._index.shard_info(shard_id)

    def locate(self, video_id: str) -> Entry:
        """Where a committed video's rows are: (shard, row_start, n_rows); KeyError when it is not committed."""
        entry = self._located.get(video_id)
        if entry is None:
            entry = self._from_index(lambda index: index.locate(video_id))
            if entry is None:
                raise KeyError(f"video {video_id!r} is not committed in feature set {self.name!r}")
            if len(self._located) < LOCATED_KEPT:
                self._located[video_id] = entry
        return entry

    def video_info(self, video_id: str) -> dict:
        """Where a video lives and how it was decoded: shard, row_start, n_rows, source, decoder, ... (its marker's
        entry, which the index must agree with)."""
        for _attempt in range(2):
            entry = self.locate(video_id)
            video = next((v for v in self._marker(entry.shard)["videos"] if v["id"] == video_id), None)
            if video is not None and (video["row_start"], video["n_rows"]) == entry[1:]:
                return {"shard": entry.shard, **{k: v for k, v in video.items() if k != "id"}}
            self._index = index_from_markers(self.path)  # the index disagrees with the marker, the truth
        raise StoreError(f"feature set {self.name!r}: video {video_id!r} is not where its marker says; run "
                         "freezeframe verify.")

    def video_infos(self) -> dict[str, dict]:
        """`video_info` of every committed video, reading each served shard's marker once."""
        out: dict[str, dict] = {}
        for shard_id in self.shard_ids:  # sorted: a video committed twice is served from its earliest shard
            for video in self._marker(shard_id, keep=False)["videos"]:
                out.setdefault(video["id"], {"shard": shard_id, **{k: v for k, v in video.items() if k != "id"}})
        return out

    def _marker(self, shard_id: str, keep: bool = True) -> dict:
        marker = self._markers.get(shard_id)
        if marker is not None:
            self._markers.move_to_end(shard_id)  # least recently used goes first
        else:
            marker = read_marker(self.path / SHARDS_DIR, shard_id)
            if keep:
                self._markers[shard_id] = marker
                if len(self._markers) > MARKERS_KEPT:
                    self._markers.popitem(last=False)
        return marker

    def failures(self) -> list[dict]:
        """The latest failure of each video that is still not committed."""
        latest: dict[str, dict] = {}
        for record in read_jsonl(self.path / FAILURES_FILE):
            latest[record.get("video_id")] = record
        return [record for video_id, record in latest.items() if video_id not in self]

    # ---- reading ---------------------------------------------------------------------------
    def _reader(self, shard_id: str, shard: ShardInfo):
        reader = self._readers.get(shard_id)
        if reader is None:
            if self.published is not None:
                self.published.fetch_shard(self.path, shard_file(shard_id, shard.format))
            reader = get_backend(shard.format).reader(self.path / SHARDS_DIR / shard_file(shard_id, shard.format))
            self._readers[shard_id] = reader
        return reader

    def read(self, video_id: str, array: str, frames: np.ndarray | slice | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Array `array` of one video; the first axis is rows (optionally only the rows `frames`). With `out` (a
        contiguous buffer of the result's shape and dtype, e.g. a row of a batch tensor) the rows land there."""
        entry = self.locate(video_id)
        if entry.shard not in self._vouched:
            entry = self._vouch(video_id, entry)
        reader, row_bytes, where = self._arrays_read.get((entry.shard, array)) or self._open_array(entry.shard, array)
        rows, lo, hi = frame_rows(entry.row_start, entry.n_rows, frames, video_id)
        check_read((hi - lo if rows is None else len(rows)) * row_bytes, where)
        if self.published is not None:  # only the chunks these rows lie in are fetched
            self._fetch_rows(entry.shard, array, lo, hi)
        try:  # (inline, not a context manager: free when nothing is raised)
            return reader.read(array, lo, hi, out) if rows is None else reader.take(array, rows, out)
        except (FreezeframeError, *API_ERRORS):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes a library raise: one line
            raise library_error(f"{self.path / SHARDS_DIR / entry.shard} array {array!r}", exc) from None

    def read_batch(self, video_ids: Sequence[str], array: str, frames: Sequence[np.ndarray | None],
                   out: np.ndarray) -> np.ndarray:
        """`read(video_ids[i], array, frames[i], out[i])` for every i: one batch of a training read (`out` is its
        contiguous (videos, rows, ...) tensor), checked and located once per batch; the chosen rows of videos in
        one shard are copied by one reader call."""
        if self.published is not None or any(f is None or isinstance(f, slice) for f in frames):
            for video_id, chosen, slot in zip(video_ids, frames, out):  # whole videos: a copy each outweighs this
                self.read(video_id, array, chosen, slot)
            return out
        chosen = np.asarray(frames, dtype=np.int64).reshape(len(video_ids), -1)  # (videos, rows)
        entries = []
        for video_id in video_ids:
            entry = self.locate(video_id)
            entries.append(entry if entry.shard in self._vouched else self._vouch(video_id, entry))
        if chosen.size:  # (two reductions for the batch, not two per video)
            lows, highs = chosen.min(axis=1).tolist(), chosen.max(axis=1).tolist()
            for video_id, entry, low, high in zip(video_ids, entries, lows, highs):
                if low < 0 or high >= entry.n_rows:
                    raise IndexError(f"frame index out of range for {video_id!r} with {entry.n_rows} frames")
        flat = chosen + np.array([entry.row_start for entry in entries], dtype=np.int64)[:, None]
        cap = read_cap()  # (once a batch: an environment lookup)
        begin = 0
        for end in range(1, len(entries) + 1):  # runs of videos in one shard
            shard = entries[begin].shard
            if end < len(entries) and entries[end].shard == shard:
                continue
            reader, row_bytes, where = self._arrays_read.get((shard, array)) or self._open_array(shard, array)
            if chosen.shape[1] * row_bytes > cap:
                check_read(chosen.shape[1] * row_bytes, where)  # (says why)
            rows = out[begin:end].reshape(-1, *out.shape[2:])
            try:
                reader.take(array, flat[begin:end].ravel(), rows)
            except (FreezeframeError, *API_ERRORS):
                raise
            except Exception as exc:  # noqa: BLE001 - as in `read`
                raise library_error(f"{self.path / SHARDS_DIR / shard} array {array!r}", exc) from None
            begin = end
        return out

    def _open_array(self, shard_id: str, array: str) -> tuple:
        """(reader, bytes per row, name for messages) of an array of a served shard, checked against its commit
        marker once: every later read of it goes straight to the reader."""
        shard = self.shard_info(shard_id)
        if array not in shard.arrays:
            raise KeyError(
                f"feature set {self.name!r} has no array {array!r}; it has: {', '.join(sorted(shard.arrays))}"
            )
        reader = self._reader(shard_id, shard)
        meta = shard.arrays[array]
        where = self.path / SHARDS_DIR / shard_file(shard_id, shard.format)
        if (shard_id, array) not in self._checked:
            with library_errors(where):
                self._check_stored(reader, shard_id, array, meta, shard)
        row_bytes = math.prod(meta["shape"]) * np.dtype(meta["dtype"]).itemsize
        access = self._arrays_read[(shard_id, array)] = (reader, row_bytes,
                                                         f"{self.name}/{SHARDS_DIR}/{shard_id} array {array!r}")
        return access

    def _fetch_rows(self, shard_id: str, array: str, lo: int, hi: int) -> None:
        """Fetch into the cache the chunks of `array` that rows [lo, hi) of a published shard lie in."""
        self.published.fetch_rows(self.path, shard_file(shard_id, self.shard_info(shard_id).format), array, lo, hi)

    def _vouch(self, video_id: str, entry: Entry) -> Entry:
        """`entry` once the index's entries of its shard match the shard's commit marker (checked the first time
        a shard is read); when they do not, the index is rebuilt from the markers and the video located again
        (KeyError when no marker has it), so no read serves rows the markers do not vouch for."""
        try:
            self._index.vouch(entry.shard, self._marker(entry.shard))
        except DamagedIndexError:
            self._index = index_from_markers(self.path)  # the markers are the truth; verify reports the damage
            entry = self.locate(video_id)
        self._vouched.add(entry.shard)
        return entry

    def check_index(self) -> None:
        """Vouch for every served shard at once (a whole-set export reads them all anyway), so that the ids listed
        afterwards are the committed ones; a damaged index is replaced by one built from the markers."""
        try:
            for shard_id, marker in read_markers(self.path / SHARDS_DIR, self.shard_ids).items():
                self._index.vouch(shard_id, marker)
                self._vouched.add(shard_id)
        except DamagedIndexError:
            self._index = index_from_markers(self.path)
            self._vouched = set(self._index.shard_ids)

    def _check_stored(self, reader, shard_id: str, array: str, meta: dict, shard: ShardInfo) -> None:
        """The stored array must have the shape and dtype its commit marker declares, before anything is read."""
        where = self.path / SHARDS_DIR / shard_file(shard_id, shard.format)
        rows = shard.num_rows
        shape, dtype = reader.shape(array), reader.dtype(array)
        if shape != (rows, *meta["shape"]) or dtype != np.dtype(meta["dtype"]):
            raise StoreError(f"{where}: array {array!r} is stored as {shape} {dtype}, but its commit marker says "
                             f"{(rows, *meta['shape'])} {meta['dtype']}; run freezeframe verify.")
        self._checked.add((shard_id, array))

    def frozen_weights(self) -> dict[str, np.ndarray]:
        """Frozen backbone weights stored once per feature set (e.g. the blocks' norm and q/k projections)."""
        path, backend = self.frozen_bundle()
        if path is not None:
            with library_errors(path):
                reader = backend.reader(path)
                try:
                    for name in reader.array_names():
                        nbytes = int(np.prod(reader.shape(name), dtype=np.int64)) * reader.dtype(name).itemsize
                        check_read(nbytes, f"{path} array {name!r}")
                    return {name: reader.read(name) for name in reader.array_names()}
                finally:
                    reader.close()
        raise StoreError(f"feature set {self.name!r} keeps no frozen weights (extract with --features tokens).")

    def frozen_bundle(self):
        """(path, backend) of the frozen-weights bundle in whichever registered format holds it, or (None, None)."""
        for backend in BACKENDS.values():
            path = self.path / f"{FROZEN_NAME}{backend.extension}"
            if path.exists():
                return path, backend
        return None, None

    def block_input(self, video_id: str, block: int) -> np.ndarray:
        """Input tokens of ViT block `block`: the previous block's output where stored, else its own copy."""
        return self.read(video_id, block_source(f"block_input/{block}", self.arrays()))

    def attention_weights(self, block: int) -> tuple[dict[str, np.ndarray], int, float]:
        """Block `block`'s frozen pre-attention norm and q/k projection (arrays by name), its head count and norm
        eps: with `block_input`, what recomputing q and k needs (`freezeframe.heads.qk.stored_qk` does it)."""
        attention = self.provenance.get("attention")
        if not attention or block not in attention["blocks"]:
            raise StoreError(f"feature set {self.name!r} keeps no attention weights for block {block}.")
        frozen = self.frozen_weights()
        weights = {key: frozen[f"block{block}/{key}"] for key in attention["weights"]}
        return weights, attention["num_heads"], attention["norm_eps"]

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()
        self._arrays_read.clear()

    def __repr__(self) -> str:
        return f"FeatureSet({self.name!r}, videos={len(self)}, rows={self.num_rows})"
