"""A training layout of a feature set: one flat memory-mappable `.npy` per array over all committed frames.

`export_memmap` writes `NAME/memmap/` from one snapshot of the committed shards:

    memmap/index.json               export id, shard ids it was built from, arrays (file, shape, dtype,
                                    sha256 of the rows), video id -> row_start, n_frames, shard
    memmap/NNN-<array>.<export-id>.npy  rows = frames of every video, videos in sorted id order

It is written under a temporary name (`.tmp-<host>.<pid>-memmap-<id>`), fsynced, then renamed into
place; an older export is moved aside first and deleted after. File names carry the export id, so a
reader that read one export's index never opens another export's arrays (a replaced file is simply
missing and the reader falls back to the shards). `open_memmap_export` returns a reader only when
the export was built from exactly the shards the caller sees as committed and holds every array asked
for; anything else (missing, stale, partial, replaced meanwhile) gives None: read the store instead.

The arrays are written with plain writes (never through a map, so a full disk is an error, not a SIGBUS);
a failed export removes its temporary folder, and the next export removes those of dead exporters. File
names in the index must be plain names of regular files in `memmap/`; `verify` checks every array's sha256
and every video's rows against the commit markers (an export without checksums is a warning).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from freezeframe.errors import StoreError
from freezeframe.limits import LIST_BYTES
from freezeframe.store.feature_set import FeatureSet, block_source, read_frames
from freezeframe.store.confine import UnsafeStoreError, check_regular, plain_name
from freezeframe.store.files import dumps, fsync_dir, read_json
from freezeframe.store.layout import TEMP_PREFIX, temp_owner_tag
from freezeframe.store.location import is_remote, remove_tree, require_local
from freezeframe.store.shard import _fsync_tree

MEMMAP_DIR = "memmap"
MEMMAP_INDEX = "index.json"
MEMMAP_FORMAT = "freezeframe-memmap"
MEMMAP_VERSION = 1


def _file_name(position: int, array: str, export_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", array)  # readable only: the position keeps names distinct
    return f"{position:03d}-{safe}.{export_id}.npy"


def export_memmap(fs: FeatureSet, arrays: Sequence[str] | None = None, log=None) -> dict:
    """Write `fs.path / "memmap"` for the shards `fs` currently sees as committed; returns its index.

    `arrays` are stored array names (a `block_input/<b>` kept as `tokens/<b-1>` is exported under the
    stored name); default: every stored array. Replaces an older export.
    """
    require_local(fs.path, "export-memmap")
    stored = fs.arrays()
    if not len(fs):
        raise StoreError(f"feature set {fs.name!r} has no committed videos to export.")
    names: list[str] = []
    for array in arrays or list(stored):
        source = block_source(array, stored)
        if source not in stored:
            raise StoreError(f"feature set {fs.name!r} has no array {array!r}; it has: {', '.join(stored)}.")
        if source not in names:
            names.append(source)
    export_id = secrets.token_hex(6)
    video_ids = fs.video_ids()
    shard_ids = fs.shard_ids
    videos: dict[str, dict] = {}
    row = 0
    for video_id in video_ids:
        info = fs.video_info(video_id)
        videos[video_id] = {"row_start": row, "n_frames": info["n_frames"], "shard": info["shard"]}
        row += info["n_frames"]
    total = row
    index = {
        "format": MEMMAP_FORMAT, "version": MEMMAP_VERSION, "export_id": export_id, "feature_set": fs.name,
        "shards": shard_ids, "num_frames": total, "arrays": {}, "videos": videos,
    }
    remove_stale_exports(fs.path)
    temp = fs.path / f"{TEMP_PREFIX}{temp_owner_tag()}-{MEMMAP_DIR}-{export_id}"
    temp.mkdir()
    try:
        for position, name in enumerate(names):
            meta = stored[name]
            file_name = _file_name(position, name, export_id)
            digest = _write_npy(temp / file_name, fs, name, meta, video_ids, videos, total)
            index["arrays"][name] = {"file": file_name, "shape": list(meta["shape"]), "dtype": meta["dtype"],
                                     "sha256": digest}
            if log:
                log(f"{name}: {total} rows -> {file_name}")
        (temp / MEMMAP_INDEX).write_bytes(dumps(index))
        _fsync_tree(temp)
        _swap_into_place(temp, fs.path / MEMMAP_DIR, export_id)
    except OSError as exc:  # a full disk, a quota: one sentence, nothing left behind
        remove_tree(temp)
        raise StoreError(f"export-memmap of {fs.name!r} failed writing {temp}: {exc.strerror or exc}; "
                         "nothing was changed.") from None
    except BaseException:
        remove_tree(temp)
        raise
    return index


def _write_npy(path: Path, fs: FeatureSet, name: str, meta: dict, video_ids: list[str], videos: dict,
               total: int) -> str:
    """Write one array's .npy with plain writes, video after video in row order; returns sha256 of its rows."""
    dtype = np.dtype(meta["dtype"])
    digest = hashlib.sha256()
    with open(path, "xb") as handle:
        np.lib.format.write_array_header_2_0(handle, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                      "fortran_order": False, "shape": (total, *meta["shape"])})
        for video_id in video_ids:  # row_start follows this order, so the file is written front to back
            where = videos[video_id]
            value = fs.read(video_id, name)
            if value.shape != (where["n_frames"], *meta["shape"]):
                raise StoreError(f"{fs.name}: array {name!r} of {video_id!r} has shape {value.shape}, "
                                 f"expected {(where['n_frames'], *meta['shape'])}.")
            data = np.ascontiguousarray(value, dtype=dtype).tobytes()
            digest.update(data)
            handle.write(data)
        handle.flush()
    return digest.hexdigest()


def remove_stale_exports(fs_path: Path) -> None:
    """Delete temporary export folders left on this host by exporters that are gone (crashed, killed)."""
    from freezeframe.store.claims import process_alive

    host = socket.gethostname()
    for temp in fs_path.glob(f"{TEMP_PREFIX}{host}.*-{MEMMAP_DIR}-*"):
        pid_text = temp.name[len(TEMP_PREFIX) + len(host) + 1:].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not process_alive(int(pid_text)):
            remove_tree(temp)


def _swap_into_place(temp: Path, final: Path, export_id: str) -> None:
    """Rename `temp` to `final`, moving an older export aside first (readers see the old, none, or the new)."""
    old = None
    if final.exists():
        old = final.with_name(f"{TEMP_PREFIX}{temp_owner_tag()}-{MEMMAP_DIR}-old-{export_id}")
        os.rename(final, old)
    os.rename(temp, final)
    fsync_dir(final.parent)
    if old is not None:
        remove_tree(old)  # readers that mapped its files keep them until they close them


class MemmapExport:
    """Read-only memory maps of one export; `read` mirrors `FeatureSet.read` for the exported arrays."""

    def __init__(self, directory: Path, index: dict, maps: dict[str, np.ndarray]) -> None:
        self.directory = directory
        self.index = index
        self.maps = maps
        self.videos: dict[str, dict] = index["videos"]

    @property
    def shard_ids(self) -> list[str]:
        return list(self.index["shards"])

    def read(self, video_id: str, array: str, frames: np.ndarray | slice | None = None) -> np.ndarray:
        where = self.videos[video_id]
        data = self.maps[array]
        # private, writable copies (never views of the map)
        return read_frames(lambda lo, hi: np.array(data[lo:hi]), where["row_start"], where["n_frames"], frames,
                           video_id)


def read_memmap_index(fs_path: Path) -> dict | None:
    try:
        index = read_json(fs_path / MEMMAP_DIR / MEMMAP_INDEX, LIST_BYTES)
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("format") != MEMMAP_FORMAT or index.get("version") != MEMMAP_VERSION:
        return None
    return index


def open_memmap_export(fs: FeatureSet, arrays: Iterable[str], video_ids: Iterable[str] = ()) -> MemmapExport | None:
    """The export of `fs` if it is up to date (built from exactly `fs.shard_ids`) and holds `arrays`, else None."""
    arrays = list(dict.fromkeys(arrays))
    if is_remote(fs.path):
        return None  # exports are local files
    for _attempt in range(2):  # once more if the export was replaced between reading its index and its files
        directory = fs.path / MEMMAP_DIR
        index = read_memmap_index(fs.path)
        if index is None:
            return None
        try:
            if list(index["shards"]) != fs.shard_ids or any(a not in index["arrays"] for a in arrays):
                return None
            for video_id in video_ids:
                where = index["videos"].get(video_id)
                if where is None or where["n_frames"] != fs.video_info(video_id)["n_frames"]:
                    return None
            check_export_index(index, directory)
            maps = {}
            for array in arrays:
                meta = index["arrays"][array]
                check_regular(directory / meta["file"])  # never a symlink out of the store, never a FIFO
                data = np.load(directory / meta["file"], mmap_mode="r")
                if data.shape != (index["num_frames"], *meta["shape"]) or data.dtype != np.dtype(meta["dtype"]):
                    return None
                maps[array] = data
        except FileNotFoundError:
            continue
        except (KeyError, TypeError, ValueError):
            return None
        return MemmapExport(directory, index, maps)
    return None


def check_export_index(index: dict, where: object) -> None:
    """Names are plain file names; every video's rows lie inside the export (UnsafeStoreError / ValueError)."""
    total = index["num_frames"]
    if not isinstance(total, int) or total < 0:
        raise ValueError(f"{where}: bad num_frames")
    for meta in index["arrays"].values():
        plain_name(meta["file"], "memmap file", where)
    for where_video in index["videos"].values():
        start, n = where_video["row_start"], where_video["n_frames"]
        if not (isinstance(start, int) and isinstance(n, int) and 0 <= start and 0 <= n and start + n <= total):
            raise ValueError(f"{where}: a video's rows lie outside the export")


def verify_memmap(fs_dir: Path, name: str, shard_ids: list[str], committed, report) -> None:
    """Add to `report` what is wrong with the memmap export of a feature set (if it has one)."""
    directory = fs_dir / MEMMAP_DIR
    if not directory.exists() and not directory.is_symlink():
        return
    where = f"{name}/{MEMMAP_DIR}"
    if directory.is_symlink():
        report.problems.append(f"{where} is a symbolic link; exports live inside the store")
        return
    try:
        index = read_json(directory / MEMMAP_INDEX, LIST_BYTES, kind=dict)
        if index.get("format") != MEMMAP_FORMAT or index.get("version") != MEMMAP_VERSION:
            raise ValueError("not a freezeframe memmap index of this version")
        check_export_index(index, f"{where}/{MEMMAP_INDEX}")
    except (KeyError, TypeError, ValueError, OSError) as exc:
        report.problems.append(f"{where}/{MEMMAP_INDEX}: malformed: {exc}")
        return
    if list(index["shards"]) != shard_ids:
        report.warnings.append(f"{where}: the export is stale (built from other shards); readers ignore it")
        return
    expected, row = {}, 0
    for video_id in sorted(committed.videos):
        n = committed.videos[video_id]["n_frames"]
        expected[video_id] = {"row_start": row, "n_frames": n, "shard": committed.videos[video_id]["shard"]}
        row += n
    if index["videos"] != expected or index["num_frames"] != row:
        report.problems.append(f"{where}/{MEMMAP_INDEX}: its videos' rows disagree with the commit markers")
    for array, meta in sorted(index["arrays"].items()):
        path = directory / meta["file"]
        try:
            check_regular(path)
            data = np.load(path, mmap_mode="r")
            if data.shape != (index["num_frames"], *meta["shape"]) or data.dtype != np.dtype(meta["dtype"]):
                report.problems.append(f"{where}/{meta['file']}: stored as {data.shape} {data.dtype}, the index "
                                       f"says {(index['num_frames'], *meta['shape'])} {meta['dtype']}")
                continue
            if "sha256" not in meta:
                report.warnings.append(f"{where}: array {array!r} was exported without a checksum; export again "
                                       "to let verify check it")
                continue
            digest = hashlib.sha256()
            step = max(1, (16 << 20) // max(1, data[0:1].nbytes))
            for lo in range(0, len(data), step):
                digest.update(np.ascontiguousarray(data[lo:lo + step]).tobytes())
            if digest.hexdigest() != meta["sha256"]:
                report.problems.append(f"{where}/{meta['file']}: checksum mismatch (array {array!r})")
        except (OSError, ValueError, UnsafeStoreError) as exc:
            report.problems.append(f"{where}/{meta['file']}: unreadable: {exc}")
