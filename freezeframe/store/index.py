"""The video index of a feature set: video id -> shard and row range, rebuilt from commit markers.

`index.json` is only a cache. It is used when it lists exactly the committed shards and every entry is well
formed; otherwise the index is rebuilt from the markers, which are the source of truth. Shard file names are
never taken from it (nor from markers): a shard's file is its id plus its format's extension. `verify` compares
the cache with the markers field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freezeframe.limits import LIST_BYTES
from freezeframe.store.confine import plain_name
from freezeframe.store.files import MalformedFileError, read_json, write_json_atomic
from freezeframe.store.layout import INDEX_FILE, MARKER_SUFFIX, REPLACES_KEY, TEMP_PREFIX, shard_id_of_marker


@dataclass
class Index:
    # shard id -> {"file", "format", "compression", "arrays", "num_frames"}
    shards: dict[str, dict] = field(default_factory=dict)
    videos: dict[str, dict] = field(default_factory=dict)  # video id -> {"shard", "row_start", "n_frames", ...}
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)  # (video id, kept shard, other shard)

    def to_json(self) -> dict:
        return {"shards": self.shards, "videos": self.videos}


def committed_shard_ids(shards_dir: Path) -> list[str]:
    if not shards_dir.is_dir():
        return []
    # a marker being written atomically sits under a temporary name first: not (yet) a commit
    return sorted(shard_id_of_marker(p) for p in shards_dir.glob(f"*{MARKER_SUFFIX}")
                  if not p.name.startswith(TEMP_PREFIX))


def read_marker(shards_dir: Path, shard_id: str) -> dict:
    """A commit marker, checked field by field (MalformedFileError naming it otherwise)."""
    path = shards_dir / f"{shard_id}{MARKER_SUFFIX}"
    marker = read_json(path, kind=dict)
    check_marker(marker, shard_id, path)
    return marker


def shard_file(shard_id: str, format: str) -> str:
    """The file (or folder) name of a shard: its id and its format's extension, never a name read from disk."""
    from freezeframe.store.backends import get_backend

    return f"{shard_id}{get_backend(format).extension}"


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_array_name(name: object, where: object) -> str:
    """An array name: `embed`, `tokens/11`: plain components joined by '/'."""
    if not isinstance(name, str):
        raise MalformedFileError(f"{where}: array name {name!r} is not a string.")
    for part in name.split("/"):
        plain_name(part, "array name", where)
    return name


def check_arrays(arrays: object, where: object) -> None:
    if not isinstance(arrays, dict):
        raise MalformedFileError(f"{where}: 'arrays' is not an object.")
    for name, meta in arrays.items():
        check_array_name(name, where)
        if not isinstance(meta, dict) or not isinstance(meta.get("shape"), list) \
                or not all(_count(d) for d in meta["shape"]) or not _count(meta.get("rows", 0)) \
                or not isinstance(meta.get("dtype"), str) or not isinstance(meta.get("sha256", ""), str):
            raise MalformedFileError(f"{where}: array {name!r} is described wrongly (shape, rows, dtype, sha256).")
        try:
            dtype = np.dtype(meta["dtype"])
        except TypeError:
            raise MalformedFileError(f"{where}: array {name!r} has an unknown dtype {meta['dtype']!r}.") from None
        if dtype.hasobject or dtype.itemsize == 0:
            raise MalformedFileError(f"{where}: array {name!r} has dtype {meta['dtype']!r}, which no store holds.")


def check_shard_entry(entry: object, shard_id: str, where: object) -> None:
    """The fields of a marker (or of a cached shard entry) that readers use."""
    from freezeframe.store.backends import BACKENDS

    if not isinstance(entry, dict):
        raise MalformedFileError(f"{where}: a shard entry is not a JSON object.")
    if entry.get("format") not in BACKENDS:
        raise MalformedFileError(f"{where}: unknown shard format {entry.get('format')!r}.")
    if entry.get("file") != shard_file(shard_id, entry["format"]):
        plain_name(entry.get("file"), "shard file", where)
        raise MalformedFileError(f"{where}: shard file {entry.get('file')!r} is not its shard id "
                                 f"{shard_id!r} with the format's extension.")
    if not _count(entry.get("num_frames")):
        raise MalformedFileError(f"{where}: 'num_frames' is missing or not a count.")
    check_arrays(entry.get("arrays"), where)


def check_marker(marker: dict, shard_id: str, where: object) -> None:
    """Everything of a commit marker that readers, verify and convert use; MalformedFileError naming `where`."""
    check_shard_entry(marker, shard_id, where)
    videos = marker.get("videos")
    if not isinstance(videos, list):
        raise MalformedFileError(f"{where}: 'videos' is missing or not a list.")
    for video in videos:
        if not isinstance(video, dict) or not isinstance(video.get("id"), str) \
                or not _count(video.get("row_start")) or not _count(video.get("n_frames")):
            raise MalformedFileError(f"{where}: a video entry lacks a string 'id' or counts "
                                     "'row_start' and 'n_frames'.")
        if video["row_start"] + video["n_frames"] > marker["num_frames"]:
            raise MalformedFileError(f"{where}: video {video['id']!r} runs past the shard's {marker['num_frames']} rows.")


def _check_cache(cached: object, shard_ids: list[str], where: object) -> Index:
    """The cached index when it lists exactly `shard_ids` and every entry is well formed, else a ValueError."""
    if not isinstance(cached, dict) or not isinstance(cached.get("shards"), dict) \
            or not isinstance(cached.get("videos"), dict) or sorted(cached["shards"]) != shard_ids:
        raise ValueError("stale or not an index")
    for shard_id, entry in cached["shards"].items():
        check_shard_entry(entry, shard_id, where)
    for video in cached["videos"].values():
        if not isinstance(video, dict) or video.get("shard") not in cached["shards"] \
                or not _count(video.get("row_start")) or not _count(video.get("n_frames")) \
                or video["row_start"] + video["n_frames"] > cached["shards"][video["shard"]]["num_frames"]:
            raise ValueError("a video entry is malformed")
    return Index(shards=cached["shards"], videos=cached["videos"])


def index_from_markers(markers: dict[str, dict]) -> Index:
    """On a video committed twice, keep the earliest shard and note the other; a replaced shard is not served."""
    index = Index()
    replaced = {old for marker in markers.values() for old in marker.get(REPLACES_KEY, ())}
    for shard_id in sorted(set(markers) - replaced):
        marker = markers[shard_id]
        index.shards[shard_id] = {key: marker[key] for key in ("file", "format", "arrays", "num_frames")}
        index.shards[shard_id]["compression"] = marker.get("compression", "none")
        for video in marker["videos"]:
            video_id = video["id"]
            if video_id in index.videos:
                index.duplicates.append((video_id, index.videos[video_id]["shard"], shard_id))
                continue
            index.videos[video_id] = {"shard": shard_id, **{k: v for k, v in video.items() if k != "id"}}
    return index


def build_index(shards_dir: Path, shard_ids: list[str]) -> Index:
    return index_from_markers({shard_id: read_marker(shards_dir, shard_id) for shard_id in shard_ids})


def load_index(feature_set_dir: Path, shards_dir: Path) -> Index:
    shard_ids = committed_shard_ids(shards_dir)
    cache = feature_set_dir / INDEX_FILE
    if cache.exists():
        try:
            # (after a crashed removal the cache is stale, and rebuilt, until the replaced shard is cleared)
            return _check_cache(read_json(cache, LIST_BYTES), shard_ids, cache)
        except (ValueError, KeyError, TypeError, OSError):
            pass  # a stale, damaged or malformed cache is rebuilt below (verify reports one that disagrees)
    return build_index(shards_dir, shard_ids)


def write_index(feature_set_dir: Path, shards_dir: Path) -> Index:
    index = build_index(shards_dir, committed_shard_ids(shards_dir))
    write_json_atomic(feature_set_dir / INDEX_FILE, index.to_json())
    return index
