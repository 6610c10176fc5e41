"""A training layout of a feature set: one flat memory-mappable `.npy` per array over all committed rows.

`export_memmap` writes `NAME/memmap/` from one snapshot of the committed shards:

    memmap/index.json               export id, shard ids it was built from, total rows, arrays (file, shape,
                                    dtype, sha256 of the rows), the names of the two files below
    memmap/videos.<export-id>.idx   the feature set's video index at export time (one segment, store/segment.py):
                                    sorted video ids with their source shard and rows
    memmap/rows.<export-id>.npy     int64 (videos + 1): video i's rows are [rows[i], rows[i + 1]) of every array
    memmap/NNN-<array>.<export-id>.npy  rows of every video, videos in sorted id order

It is written under a temporary name (`.tmp-<host>.<pid>-memmap-<id>`), fsynced, then renamed into
place; an older export is moved aside first and deleted after. File names carry the export id, so a
reader that read one export's index never opens another export's arrays (a replaced file is simply
missing and the reader falls back to the shards). `open_memmap_export` returns a reader only when
the export was built from exactly the shards the caller sees as committed and holds every array asked
for; anything else (missing, stale, partial, replaced meanwhile) gives None: read the store instead.

The arrays are written with plain writes (never through a map, so a full disk is an error, not a SIGBUS);
a failed export removes its temporary folder, and the next export removes those of dead exporters. File
names in the index must be plain names of regular files in `memmap/`; `verify` checks every array's sha256
and every video's rows against the commit markers (an export without checksums is a warning). Workers
memory-map the video table and row offsets as they map the arrays, so none parses per-video JSON.
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
from freezeframe.store.feature_set import FeatureSet, block_source, frame_rows
from freezeframe.store.confine import UnsafeStoreError, check_regular, plain_name
from freezeframe.store.files import dumps, fsync_dir, read_json
from freezeframe.store.layout import TEMP_PREFIX, temp_owner_tag
from freezeframe.store.location import is_remote, remove_tree, require_local
from freezeframe.store.mapped import into, output
from freezeframe.store.segment import DamagedIndexError, Segment, segment_difference
from freezeframe.store.shard import _fsync_tree
from freezeframe.store.store import check_writable

MEMMAP_DIR = "memmap"
MEMMAP_INDEX = "index.json"
MEMMAP_FORMAT = "freezeframe-memmap"
MEMMAP_VERSION = 2  # 1 kept every video's rows in index.json; such exports are ignored (export again)


def _file_name(position: int, array: str, export_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", array)  # readable only: the position keeps names distinct
    return f"{position:03d}-{safe}.{export_id}.npy"


def export_memmap(fs: FeatureSet, arrays: Sequence[str] | None = None, log=None) -> dict:
    """Write `fs.path / "memmap"` for the shards `fs` currently sees as committed; returns its index.

    `arrays` are stored array names (a `block_input/<b>` kept as `tokens/<b-1>` is exported under the
    stored name); default: every stored array. Replaces an older export.
    """
    require_local(fs.path, "export-memmap")
    check_writable(fs.path.parent)
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
    fs.check_index()  # every shard is read anyway: export only the videos the commit markers vouch for
    table = fs.video_table()
    video_ids = table.ids()
    offsets = np.zeros(table.n + 1, np.int64)
    np.cumsum(table.columns["n_rows"], out=offsets[1:])
    total = int(offsets[-1])
    index = {
        "format": MEMMAP_FORMAT, "version": MEMMAP_VERSION, "export_id": export_id, "feature_set": fs.name,
        "shards": table.shard_ids, "num_rows": total, "arrays": {},
        "video_table": f"videos.{export_id}.idx", "row_offsets": f"rows.{export_id}.npy",
    }
    remove_stale_exports(fs.path)
    temp = fs.path / f"{TEMP_PREFIX}{temp_owner_tag()}-{MEMMAP_DIR}-{export_id}"
    temp.mkdir()
    try:
        (temp / index["video_table"]).write_bytes(table.to_bytes())
        np.save(temp / index["row_offsets"], offsets)
        for position, name in enumerate(names):
            meta = stored[name]
            file_name = _file_name(position, name, export_id)
            digest = _write_npy(temp / file_name, fs, name, meta, video_ids, offsets)
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


def _write_npy(path: Path, fs: FeatureSet, name: str, meta: dict, video_ids: list[str], offsets: np.ndarray) -> str:
    """Write one array's .npy with plain writes, video after video in row order; returns sha256 of its rows."""
    dtype = np.dtype(meta["dtype"])
    digest = hashlib.sha256()
    with open(path, "xb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": (int(offsets[-1]), *meta["shape"])}
        np.lib.format.write_array_header_2_0(handle, header)
        for i, video_id in enumerate(video_ids):  # the offsets follow this order: the file is written front to back
            value = fs.read(video_id, name)
            n = int(offsets[i + 1] - offsets[i])
            if value.shape != (n, *meta["shape"]):
                raise StoreError(f"{fs.name}: array {name!r} of {video_id!r} has shape {value.shape}, "
                                 f"expected {(n, *meta['shape'])}.")
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

    def __init__(self, directory: Path, index: dict, table: Segment, offsets: np.ndarray,
                 maps: dict[str, np.ndarray]) -> None:
        self.directory = directory
        self.index = index
        self.table = table
        self.offsets = offsets
        self.maps = maps

    @property
    def shard_ids(self) -> list[str]:
        return list(self.index["shards"])

    def rows(self, video_id: str) -> tuple[int, int]:
        """(row_start, n_rows) of a video in the export (StoreError when the export does not hold it)."""
        i = self.table.find(video_id.encode("utf-8"))
        start, stop = (int(self.offsets[i]), int(self.offsets[i + 1])) if i >= 0 else (0, -1)
        if not 0 <= start <= stop <= self.index["num_rows"]:
            raise StoreError(f"{self.directory}: the export has no rows for {video_id!r}; run freezeframe verify.")
        return start, stop - start

    def read(self, video_id: str, array: str, frames: np.ndarray | slice | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Private, writable copies (never views of the map), into `out` where given; chosen frames copy only those."""
        start, n = self.rows(video_id)
        data = self.maps[array]
        rows, lo, hi = frame_rows(start, n, frames, video_id)
        if rows is None:
            return np.array(data[lo:hi]) if out is None else into(out, data[lo:hi])
        target = output(len(rows), data.shape[1:], data.dtype, out)
        return np.take(data, rows, axis=0, out=target, mode="clip")  # rows are checked in range


def read_memmap_index(fs_path: Path) -> dict | None:
    try:
        index = read_json(fs_path / MEMMAP_DIR / MEMMAP_INDEX)
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("format") != MEMMAP_FORMAT or index.get("version") != MEMMAP_VERSION:
        return None
    return index


def open_memmap_export(fs: FeatureSet, arrays: Iterable[str]) -> MemmapExport | None:
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
            table, offsets = open_video_table(index, directory)
            maps = {}
            for array in arrays:
                meta = index["arrays"][array]
                check_regular(directory / meta["file"])  # never a symlink out of the store, never a FIFO
                data = np.load(directory / meta["file"], mmap_mode="r")
                if data.shape != (index["num_rows"], *meta["shape"]) or data.dtype != np.dtype(meta["dtype"]):
                    return None
                maps[array] = data
        except FileNotFoundError:
            continue
        except (KeyError, TypeError, ValueError):
            return None
        return MemmapExport(directory, index, table, offsets, maps)
    return None


def open_video_table(index: dict, directory: Path) -> tuple[Segment, np.ndarray]:
    """The export's video table and row offsets, checked: plain file names, offsets inside the export (ValueError)."""
    total = index["num_rows"]
    if not isinstance(total, int) or total < 0:
        raise ValueError(f"{directory}: bad num_rows")
    for meta in index["arrays"].values():
        plain_name(meta["file"], "memmap file", directory)
    table_path = directory / plain_name(index["video_table"], "memmap file", directory)
    offsets_path = directory / plain_name(index["row_offsets"], "memmap file", directory)
    table = Segment.open(table_path)
    check_regular(offsets_path)
    offsets = np.load(offsets_path, mmap_mode="r")
    if offsets.dtype != np.int64 or offsets.shape != (table.n + 1,) or offsets[0] != 0 or offsets[-1] != total:
        raise ValueError(f"{directory}: the row offsets do not fit the export")
    return table, offsets


def verify_memmap(fs_dir: Path, name: str, truth: Segment, report) -> None:
    """Add to `report` what is wrong with the memmap export of a feature set (if it has one); `truth` is the
    index built from the commit markers."""
    directory = fs_dir / MEMMAP_DIR
    if not directory.exists() and not directory.is_symlink():
        return
    where = f"{name}/{MEMMAP_DIR}"
    if directory.is_symlink():
        report.problems.append(f"{where} is a symbolic link; exports live inside the store")
        return
    try:
        index = read_json(directory / MEMMAP_INDEX, kind=dict)
        if index.get("format") != MEMMAP_FORMAT or index.get("version") != MEMMAP_VERSION:
            report.warnings.append(f"{where}: an export of another version; readers ignore it (export again)")
            return
        table, offsets = open_video_table(index, directory)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        report.problems.append(f"{where}/{MEMMAP_INDEX}: malformed: {exc}")
        return
    if list(index["shards"]) != truth.shard_ids:
        report.warnings.append(f"{where}: the export is stale (built from other shards); readers ignore it")
        return
    try:
        difference = segment_difference(table, truth)
    except DamagedIndexError as exc:
        difference = str(exc)
    if difference is None and np.any(np.diff(offsets) != table.columns["n_rows"]):
        difference = "its row offsets do not add up the videos' rows"
    if difference:
        report.problems.append(f"{where}/{index['video_table']}: its videos' rows disagree with the commit markers "
                               f"({difference})")
    for array, meta in sorted(index["arrays"].items()):
        path = directory / meta["file"]
        try:
            check_regular(path)
            data = np.load(path, mmap_mode="r")
            if data.shape != (index["num_rows"], *meta["shape"]) or data.dtype != np.dtype(meta["dtype"]):
                report.problems.append(f"{where}/{meta['file']}: stored as {data.shape} {data.dtype}, the index "
                                       f"says {(index['num_rows'], *meta['shape'])} {meta['dtype']}")
                continue
            digest = hashlib.sha256()
            step = max(1, (16 << 20) // max(1, data[0:1].nbytes))
            for lo in range(0, len(data), step):
                digest.update(np.ascontiguousarray(data[lo:lo + step]).tobytes())
            if digest.hexdigest() != meta.get("sha256"):
                report.problems.append(f"{where}/{meta['file']}: checksum mismatch (array {array!r})")
        except (OSError, ValueError, UnsafeStoreError) as exc:
            report.problems.append(f"{where}/{meta['file']}: unreadable: {exc}")
