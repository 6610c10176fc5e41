"""Deleting from a store: whole feature sets, or videos of one, each step a single atomic commit.

The commit markers are the truth, so a deletion is a change of markers:
- a shard losing all its videos: its marker is unlinked (one atomic step; readers stop seeing it), then its file;
- a shard losing some: the videos it keeps are copied into a new shard whose marker names the old one in
  `replaces`; readers and `verify` ignore a shard that a committed marker replaces, so the moment the new marker
  exists the deletion is complete; the old marker and file are then removed (a crash before that leaves only
  garbage that the next `rm` clears);
- a feature set: its directory is renamed to a temporary name (atomic; readers no longer list it), then deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from freezeframe.errors import InputError
from freezeframe.store.backends import get_backend
from freezeframe.store.files import fsync_dir, read_json
from freezeframe.store.markers import VIDEO_FIELDS, committed_shard_ids, read_marker
from freezeframe.store.layout import PROVENANCE_FILE, REPLACES_KEY, TEMP_PREFIX, marker_path, temp_owner_tag
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.location import is_remote, remove_tree, store_path
from freezeframe.store.store import check_writable, open_feature_set

COPY_BYTES = 64 * 1024 * 1024  # rows copied per read when a shard keeps some of its videos


@dataclass
class RemoveReport:
    """What one removal did."""

    feature_set: str
    removed_videos: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # asked for, not committed
    rewritten_shards: int = 0
    dropped_shards: int = 0


def remove_feature_set(store: str | Path, name: str) -> None:
    """Delete feature set `name` whole: one rename makes it invisible, then its files go."""
    fs = _writable_set(store, name)
    root, path = fs.path.parent, fs.path
    if is_remote(path):  # no rename on object stores: the provenance file goes first, which hides the set
        (path / PROVENANCE_FILE).unlink()
        remove_tree(path)
        return
    trash = root / f"{TEMP_PREFIX}{temp_owner_tag()}-removed-{name}"
    path.rename(trash)
    fsync_dir(root)
    remove_tree(trash)


def remove_videos(store: str | Path, name: str, video_ids: Iterable[str]) -> RemoveReport:
    """Delete committed videos of feature set `name`, shard by shard, each shard's change committed atomically."""
    from freezeframe.store.writer import FeatureSetWriter

    fs = _writable_set(store, name)
    root = fs.path.parent
    wanted = set(video_ids)
    if not wanted:
        raise InputError("no videos given to remove.")
    provenance = read_json(fs.path / PROVENANCE_FILE)
    writers: dict[str, FeatureSetWriter] = {}

    def writer_for(fmt: str) -> FeatureSetWriter:  # a copy keeps its shard's format
        if fmt not in writers:
            writers[fmt] = FeatureSetWriter(root, name, provenance, format=fmt)
        return writers[fmt]

    writer = writer_for("zarr")
    clear_replaced(writer.shards_dir)
    report = RemoveReport(name)
    committed = fs.video_ids()
    report.missing = sorted(wanted - set(committed))
    for shard_id in committed_shard_ids(writer.shards_dir):
        marker = read_marker(writer.shards_dir, shard_id)
        gone = [v for v in marker["videos"] if v["id"] in wanted]
        if not gone:
            continue
        kept = [v for v in marker["videos"] if v["id"] not in wanted]
        if kept:
            _copy_videos(writer_for(marker["format"]), marker, kept)
            report.rewritten_shards += 1
        else:
            report.dropped_shards += 1
        _unlink_shard(writer.shards_dir, marker)
        report.removed_videos.extend(v["id"] for v in gone)
    report.removed_videos = sorted(set(report.removed_videos))
    writer.write_index()
    return report


def _writable_set(store: str | Path, name: str) -> FeatureSet:
    """Feature set `name` of a store that may be changed: a published store is refused before anything of it is
    fetched into the local cache."""
    check_writable(store_path(store))
    return open_feature_set(store, name)


def clear_replaced(shards_dir: Path) -> int:
    """Remove shards that a committed marker replaces (left by a removal that crashed half-way); returns how many."""
    markers = {shard_id: read_marker(shards_dir, shard_id) for shard_id in committed_shard_ids(shards_dir)}
    replaced = {old for marker in markers.values() for old in marker.get(REPLACES_KEY, ())}
    for shard_id in sorted(replaced & set(markers)):
        _unlink_shard(shards_dir, markers[shard_id])
    return len(replaced & set(markers))


def _copy_videos(writer, marker: dict, videos: list[dict]) -> dict:
    """Commit a new shard holding `videos` of the shard `marker` describes, marked as replacing it."""
    reader = get_backend(marker["format"]).reader(writer.shards_dir / marker["file"])
    names = sorted(marker["arrays"])
    row_bytes = sum(int(np.prod(reader.shape(a)[1:], dtype=np.int64)) * reader.dtype(a).itemsize for a in names)
    step = max(1, COPY_BYTES // max(1, row_bytes))
    shard = writer.new_shard()
    shard.compression = marker.get("compression", "none")
    try:
        for video in videos:
            start, n = video["row_start"], video["n_rows"]
            for lo in range(start, start + max(n, 1), step):  # a video of 0 rows still gets its (empty) append
                hi = min(start + n, lo + step)
                shard.append(video["id"], {a: reader.read(a, lo, hi) for a in names})
            shard.end_video(video["id"], {k: v for k, v in video.items() if k not in VIDEO_FIELDS})
        return shard.commit({REPLACES_KEY: [marker["shard_id"]]})
    except BaseException:
        shard.abort()
        raise
    finally:
        reader.close()


def _unlink_shard(shards_dir: Path, marker: dict) -> None:
    """Un-commit a shard: its marker first (one atomic step), then its file."""
    marker_path(shards_dir, marker["shard_id"]).unlink(missing_ok=True)
    fsync_dir(shards_dir)
    remove_tree(shards_dir / marker["file"])
