"""The video index of a feature set: video id -> shard and row range, rebuilt from commit markers.

`index.json` is only a cache. It is trusted when it lists exactly the committed shards;
otherwise the index is rebuilt from the markers, which are the source of truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from freezeframe.limits import LIST_BYTES
from freezeframe.store.files import read_json, write_json_atomic
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
    return read_json(shards_dir / f"{shard_id}{MARKER_SUFFIX}")


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
            cached = read_json(cache, LIST_BYTES)
            if sorted(cached["shards"]) == shard_ids:  # (after a crashed removal, rebuilt until it is cleared)
                return Index(shards=cached["shards"], videos=cached["videos"])
        except (ValueError, KeyError, TypeError, OSError):
            pass  # a damaged cache is rebuilt below
    return build_index(shards_dir, shard_ids)


def write_index(feature_set_dir: Path, shards_dir: Path) -> Index:
    index = build_index(shards_dir, committed_shard_ids(shards_dir))
    write_json_atomic(feature_set_dir / INDEX_FILE, index.to_json())
    return index
