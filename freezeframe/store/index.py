"""The video index of a feature set: video id -> shard, row start and row count, for every committed video.

A cache of the commit markers, which stay the truth. It lives in `NAME/index/` as immutable segment files
(store/segment.py) that readers memory-map, so opening a feature set of a million videos parses no per-video JSON.

Writers keep it incremental: every INDEX_EVERY commits a writer indexes its own new shards as one small segment and
merges it with existing segments while the next larger one is at most GROWTH times its size (so a commit never
rewrites an index proportional to the store, and there are O(log n) segments); at the end of a run everything is
merged into one segment. Segments are written under a temporary name and renamed, and a merge deletes the segments
it replaced, so concurrent writers need no lock: readers tolerate overlapping, stale or missing segments.

Readers use a segment only when every shard in it is committed and served (not replaced by a removal) and no larger
chosen segment holds any of its shards; shards that no chosen segment covers are read from their markers. On a video
committed twice, the copy in the earliest shard (by shard id) is served, as when the index is built from markers.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import numpy as np

from freezeframe.store.confine import UnsafeStoreError
from freezeframe.store.files import write_bytes_atomic
from freezeframe.store.layout import INDEX_DIR, LEGACY_INDEX_FILE, SEGMENT_SUFFIX, SHARDS_DIR, TEMP_PREFIX, new_shard_id
from freezeframe.store.location import StorePath, remove_tree
from freezeframe.store.markers import committed_shard_ids, read_markers, replacements, served_shards
from freezeframe.store.segment import DamagedIndexError, Entry, Segment, ShardInfo

INDEX_EVERY = 16  # a writer indexes its own commits in batches of this many shards
GROWTH = 4  # a new segment is merged into every existing one at most this many times its size


class VideoIndex:
    """The served shards of a feature set and where every committed video's rows are."""

    def __init__(self, segments: list[Segment], shard_ids: list[str]) -> None:
        self.segments = segments
        self.shard_ids = shard_ids  # served shards, sorted
        self._shards = {shard_id: (segment, position) for segment in segments
                        for position, shard_id in enumerate(segment.shard_ids)}
        self._merged: Segment | None = None
        self._ids: list[str] | None = None

    def locate(self, video_id: str) -> Entry | None:
        """Where the video's rows are, or None when it is not committed."""
        key = video_id.encode("utf-8")
        found = None
        for segment in self.segments:
            position = segment.find(key)
            if position >= 0:
                entry = segment.entry(position)
                if found is None or entry.shard < found.shard:
                    found = entry
        return found

    def __contains__(self, video_id: str) -> bool:
        return self.locate(video_id) is not None

    def merged(self) -> Segment:
        """The whole index as one segment (merged once, when there are several)."""
        if self._merged is None:
            self._merged = self.segments[0] if len(self.segments) == 1 else merge_segments(self.segments)
        return self._merged

    def video_ids(self) -> list[str]:
        """Every committed video id, sorted (decoded once per index)."""
        if self._ids is None:
            self._ids = self.merged().ids()
        return self._ids

    def __len__(self) -> int:
        return self.merged().n

    @property
    def num_rows(self) -> int:
        """Rows of every committed video (a video committed twice counts once)."""
        return int(self.merged().columns["n_rows"].sum())

    def shard_info(self, shard_id: str) -> ShardInfo:
        segment, position = self._shards[shard_id]
        return segment.shard_info(position)

    def vouch(self, shard_id: str, marker: dict) -> None:
        """DamagedIndexError unless what the index says of `shard_id` is what its commit marker says: the shard's
        description, and its entries exactly the marker's videos (a video the marker lists may instead be served
        from an earlier shard that holds it too). A segment built from the markers needs no check."""
        segment, position = self._shards[shard_id]
        if segment.from_markers:
            return
        where = f"{segment.where}: shard {shard_id}"
        if segment.shard_info(position) != shard_info_of(marker):
            raise DamagedIndexError(f"{where} is described otherwise than its commit marker says.")
        listed = {video["id"].encode("utf-8"): (video["row_start"], video["n_rows"]) for video in marker["videos"]}
        held = segment.shard_entries(position)
        if len({key for key, _, _ in held}) != len(held) \
                or any(listed.get(key) != (start, rows) for key, start, rows in held):
            raise DamagedIndexError(f"{where}: an entry is not what the commit marker says (an id it does not list, "
                                    "one listed twice, or other rows).")
        for key in listed.keys() - {key for key, _, _ in held}:  # rare: a video committed twice
            found = self.locate(key.decode("utf-8"))
            if found is None or found.shard >= shard_id:
                raise DamagedIndexError(f"{where}: video {key.decode('utf-8')!r} of its marker is not served.")

    def arrays(self) -> dict[str, dict]:
        """Array name -> {"shape", "dtype"} over the served shards (the first shard's description of each)."""
        out: dict[str, dict] = {}
        for segment in self.segments:
            for set_index in np.unique(segment.columns["shard_arrays"]):
                for name, meta in segment.array_sets[set_index].items():
                    out.setdefault(name, {"shape": list(meta["shape"]), "dtype": meta["dtype"]})
        return dict(sorted(out.items()))

    def storage(self) -> list[dict]:
        """[{"format", "compression", "shards"}], one entry per combination among the served shards."""
        counts: dict[tuple[str, str], int] = {}
        for segment in self.segments:
            for layout, n in zip(*np.unique(segment.columns["shard_layout"], return_counts=True)):
                counts[segment.layouts[layout]] = counts.get(segment.layouts[layout], 0) + int(n)
        return [{"format": fmt, "compression": compression, "shards": n}
                for (fmt, compression), n in sorted(counts.items())]


# ---- building from markers ------------------------------------------------------------------------------------

def shard_info_of(marker: dict) -> ShardInfo:
    arrays = {name: {"shape": list(meta["shape"]), "dtype": meta["dtype"]} for name, meta in marker["arrays"].items()}
    return ShardInfo(marker["format"], marker.get("compression", "none"), marker["num_rows"], arrays)


def segment_from_markers(markers: dict[str, dict], shard_ids: Iterable[str]) -> tuple[Segment, list]:
    """A segment of the videos of `shard_ids` (their markers in `markers`) and the duplicates found: on a video
    committed twice, the earliest shard keeps it."""
    shard_ids = sorted(shard_ids)
    keys, shard, starts, rows = [], [], [], []
    for position, shard_id in enumerate(shard_ids):
        videos = markers[shard_id]["videos"]
        keys += [video["id"].encode("utf-8") for video in videos]
        shard += [position] * len(videos)
        starts += [video["row_start"] for video in videos]
        rows += [video["n_rows"] for video in videos]
    shards = {shard_id: shard_info_of(markers[shard_id]) for shard_id in shard_ids}
    segment, duplicates = Segment.build(keys, np.array(shard, np.int64), np.array(starts, np.int64),
                                        np.array(rows, np.int64), shards, replacements(markers))
    segment.from_markers = True
    return segment, duplicates


def merge_segments(segments: list[Segment]) -> Segment:
    """One segment of all videos and shards of `segments` (shards held twice are taken once; on a video held
    twice, the earliest shard keeps it)."""
    shards: dict[str, ShardInfo] = {}
    for segment in segments:
        segment.check_entries()
        for position, shard_id in enumerate(segment.shard_ids):
            shards.setdefault(shard_id, segment.shard_info(position))
    table = {shard_id: position for position, shard_id in enumerate(sorted(shards))}
    keys = [key for segment in segments for key in segment.keys()]
    shard = np.concatenate([np.array([table[s] for s in segment.shard_ids], np.int64)[segment.columns["shard"]]
                            for segment in segments])
    starts = np.concatenate([segment.columns["row_start"] for segment in segments])
    rows = np.concatenate([segment.columns["n_rows"] for segment in segments])
    pairs = [pair for segment in segments for pair in segment.replaces]
    return Segment.build(keys, shard, starts, rows, shards, pairs)[0]


# ---- reading ----------------------------------------------------------------------------------------------------

def segment_files(fs_dir: StorePath) -> list[StorePath]:
    directory = fs_dir / INDEX_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if p.name.endswith(SEGMENT_SUFFIX) and not p.name.startswith(TEMP_PREFIX))


def open_segments(fs_dir: StorePath) -> dict[str, Segment]:
    """The segment files present now, by name; a damaged one is left out (its shards are read from markers)."""
    for _attempt in range(3):  # a merge may delete a listed segment before it is opened: list again
        segments = {}
        try:
            for path in segment_files(fs_dir):
                # damaged, a link, a special file or unreadable: not used (verify names it)
                with contextlib.suppress(DamagedIndexError, UnsafeStoreError, PermissionError):
                    segments[path.name] = Segment.open(path)
            return segments
        except FileNotFoundError:
            continue
    return {}


def choose_segments(segments: Iterable[Segment], served: set[str]) -> list[Segment]:
    """Segments whose shards are all served and held by no larger chosen segment, largest first."""
    chosen, covered = [], set()
    for segment in sorted(segments, key=lambda s: (-len(s.shard_ids), s.shard_ids[:1])):
        shards = set(segment.shard_ids)
        if shards and shards <= served and covered.isdisjoint(shards):
            chosen.append(segment)
            covered |= shards
    return chosen


def load_index(fs_dir: StorePath, segments: Iterable[Segment] | None = None) -> VideoIndex:
    """The index readers use: chosen segments, plus one built from the markers of the served shards they miss."""
    shards_dir = fs_dir / SHARDS_DIR
    committed = committed_shard_ids(shards_dir)
    segments = list(open_segments(fs_dir).values()) if segments is None else list(segments)
    pairs = {pair for segment in segments for pair in segment.replaces}
    indexed = {shard_id for segment in segments for shard_id in segment.shard_ids}
    markers: dict[str, dict] = {}
    while True:  # a marker read here may replace a shard a segment holds: choose again until nothing changes
        served = served_shards(committed, pairs)
        chosen = choose_segments(segments, set(served))
        covered = {shard_id for segment in chosen for shard_id in segment.shard_ids}
        replaced = set(committed) - set(served)
        need = [s for s in served if s not in covered and s not in markers] + \
               [s for s in replaced if s not in markers and s not in indexed]  # whose own replacements we lack
        if not need:
            break
        markers.update(read_markers(shards_dir, need))
        pairs |= set(replacements(markers))
    pending = [s for s in served if s not in covered]
    if pending or not chosen:
        chosen.append(segment_from_markers(markers, pending)[0])
    return VideoIndex(chosen, served)


def index_from_markers(fs_dir: StorePath) -> VideoIndex:
    """The index built from the commit markers alone (what the cache must equal)."""
    return load_index(fs_dir, segments=[])


# ---- writing ----------------------------------------------------------------------------------------------------

def _write_segment(fs_dir: StorePath, segment: Segment) -> str:
    directory = fs_dir / INDEX_DIR
    directory.mkdir(exist_ok=True)
    name = f"{new_shard_id()}{SEGMENT_SUFFIX}"
    write_bytes_atomic(directory / name, segment.to_bytes())
    return name


def _delete_segments(fs_dir: StorePath, names: Iterable[str]) -> None:
    for name in names:
        remove_tree(fs_dir / INDEX_DIR / name)


def add_to_index(fs_dir: StorePath, markers: dict[str, dict]) -> None:
    """Index freshly committed shards (their markers): one new segment, merged into existing segments while the
    next larger one is at most GROWTH times its size. (A video also in another segment, committed twice, needs
    no merge: readers serve its earliest shard whichever segments hold it.)"""
    if not markers:
        return
    on_disk = open_segments(fs_dir)
    names = {id(segment): name for name, segment in on_disk.items()}
    held = {shard_id for segment in on_disk.values() for shard_id in segment.shard_ids}
    fresh = [shard_id for shard_id in markers if shard_id not in held]  # a concurrent full merge took the rest
    if not fresh:
        return
    new = segment_from_markers(markers, fresh)[0]
    merged = []
    # (segments holding shards removed since are merged as they are: readers skip the result, the next write_index
    # rebuilds it; listing every marker here would cost ~20 ms at a million videos)
    for segment in sorted(choose_segments(on_disk.values(), held), key=lambda s: s.n):
        if segment.n > GROWTH * new.n:
            break
        new = merge_segments([segment, new])
        merged.append(names[id(segment)])
    _write_segment(fs_dir, new)
    _delete_segments(fs_dir, merged)


def write_index(fs_dir: StorePath) -> VideoIndex:
    """Merge the index into one segment covering every served shard (end of a run, after a removal); returns it."""
    on_disk = open_segments(fs_dir)
    index = load_index(fs_dir, on_disk.values())
    if len(on_disk) != 1 or len(index.segments) > 1 or index.segments[0] not in on_disk.values():
        segment = index.merged()
        name = _write_segment(fs_dir, segment)
        _delete_segments(fs_dir, [n for n in on_disk if n != name])
        index = VideoIndex([segment], index.shard_ids)
    remove_tree(fs_dir / LEGACY_INDEX_FILE)  # the JSON index of stores written before segments: stale from now on
    return index

