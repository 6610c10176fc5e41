"""Commit markers, the truth of a feature set: which shards are committed and what each holds, checked field by field.

A marker lists its shard's videos (id, row_start, n_rows), the rows of the shard (`num_rows`), its format and each
array's per-row shape, dtype and sha256. A row is whatever the set's first axis counts: a frame, a window of frames
(S3D), or a token row of a caption (text sets). Markers written before this vocabulary say `num_frames` and
`n_frames`; they are read under the new names. Shard file names are never taken from a marker: a shard's file is
its id plus its format's extension.
"""

from __future__ import annotations

import os
import numpy as np

from freezeframe.store.confine import plain_name
from freezeframe.store.files import MalformedFileError, read_json
from freezeframe.store.layout import MARKER_SUFFIX, REPLACES_KEY, TEMP_PREFIX
from freezeframe.store.location import StorePath, is_remote

VIDEO_FIELDS = ("id", "row_start", "n_rows")  # per-video marker fields a copy of the video recomputes
OLD_NAMES = {"num_frames": "num_rows", "n_frames": "n_rows"}  # markers written before rows were called rows


def committed_shard_ids(shards_dir: StorePath) -> list[str]:
    """Ids of the shards whose marker exists, from one directory listing (a marker being written sits under a
    temporary name first: not yet a commit)."""
    if is_remote(shards_dir):
        names = [p.name for p in shards_dir.glob(f"*{MARKER_SUFFIX}")] if shards_dir.is_dir() else []
    else:
        try:
            with os.scandir(shards_dir) as entries:
                names = [entry.name for entry in entries]
        except (FileNotFoundError, NotADirectoryError):
            return []
    return sorted(name[: -len(MARKER_SUFFIX)] for name in names
                  if name.endswith(MARKER_SUFFIX) and not name.startswith(TEMP_PREFIX))


def read_marker(shards_dir: StorePath, shard_id: str) -> dict:
    """A commit marker under the current field names, checked field by field (MalformedFileError naming it)."""
    path = shards_dir / f"{shard_id}{MARKER_SUFFIX}"
    marker = rename_old_fields(read_json(path, kind=dict))
    check_marker(marker, shard_id, path)
    return marker


def rename_old_fields(marker: dict) -> dict:
    """`num_frames`/`n_frames` of older markers as `num_rows`/`n_rows` (in place; returns the marker)."""
    for old, new in OLD_NAMES.items():
        if old in marker and new not in marker:
            marker[new] = marker.pop(old)
    for video in marker.get("videos") or ():
        if isinstance(video, dict) and "n_frames" in video and "n_rows" not in video:
            video["n_rows"] = video.pop("n_frames")
    return marker


def shard_file(shard_id: str, format: str) -> str:
    """The file (or folder) name of a shard: its id and its format's extension, never a name read from disk."""
    from freezeframe.store.backends import get_backend

    return f"{shard_id}{get_backend(format).extension}"


def is_count(value: object) -> bool:
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
                or not all(is_count(d) for d in meta["shape"]) or not is_count(meta.get("rows", 0)) \
                or not isinstance(meta.get("dtype"), str) or not isinstance(meta.get("sha256", ""), str):
            raise MalformedFileError(f"{where}: array {name!r} is described wrongly (shape, rows, dtype, sha256).")
        try:
            dtype = np.dtype(meta["dtype"])
        except TypeError:
            raise MalformedFileError(f"{where}: array {name!r} has an unknown dtype {meta['dtype']!r}.") from None
        if dtype.hasobject or dtype.itemsize == 0:
            raise MalformedFileError(f"{where}: array {name!r} has dtype {meta['dtype']!r}, which no store holds.")


def check_marker(marker: dict, shard_id: str, where: object) -> None:
    """Everything of a commit marker that readers, verify and convert use; MalformedFileError naming `where`."""
    from freezeframe.store.backends import BACKENDS

    if marker.get("format") not in BACKENDS:
        raise MalformedFileError(f"{where}: unknown shard format {marker.get('format')!r}.")
    if marker.get("file") != shard_file(shard_id, marker["format"]):
        plain_name(marker.get("file"), "shard file", where)
        raise MalformedFileError(f"{where}: shard file {marker.get('file')!r} is not its shard id "
                                 f"{shard_id!r} with the format's extension.")
    if not is_count(marker.get("num_rows")):
        raise MalformedFileError(f"{where}: 'num_rows' is missing or not a count.")
    check_arrays(marker.get("arrays"), where)
    if not isinstance(marker.get("compression", "none"), str):
        raise MalformedFileError(f"{where}: 'compression' is not a string.")
    replaces = marker.get(REPLACES_KEY, [])
    if not isinstance(replaces, list) or not all(isinstance(old, str) for old in replaces):
        raise MalformedFileError(f"{where}: '{REPLACES_KEY}' is not a list of shard ids.")
    videos = marker.get("videos")
    if not isinstance(videos, list):
        raise MalformedFileError(f"{where}: 'videos' is missing or not a list.")
    rows = marker["num_rows"]
    for video in videos:  # (`type(x) is int` leaves out bools: ~1 us a video, which verify --quick repeats 1M times)
        if type(video) is not dict or type(video.get("id")) is not str or type(video.get("row_start")) is not int \
                or type(video.get("n_rows")) is not int or video["row_start"] < 0 or video["n_rows"] < 0:
            raise MalformedFileError(f"{where}: a video entry lacks a string 'id' or counts "
                                     "'row_start' and 'n_rows'.")
        if video["row_start"] + video["n_rows"] > rows:
            raise MalformedFileError(f"{where}: video {video['id']!r} runs past the shard's {rows} rows.")


def read_markers(shards_dir: StorePath, shard_ids: list[str]) -> dict[str, dict]:
    return {shard_id: read_marker(shards_dir, shard_id) for shard_id in shard_ids}


def served_shards(committed: list[str], replacements: list[tuple[str, str]]) -> list[str]:
    """The committed shards readers use: all but those a committed shard `replaces` ((new, old) pairs)."""
    present = set(committed)
    replaced = {old for new, old in replacements if new in present}
    return [shard_id for shard_id in committed if shard_id not in replaced]


def replacements(markers: dict[str, dict]) -> list[tuple[str, str]]:
    """(replacing shard, replaced shard) pairs named by markers (a removal kept the rest of a shard's videos)."""
    return [(shard_id, old) for shard_id, marker in markers.items() for old in marker.get(REPLACES_KEY, ())]

