"""Check a store end to end: everything a reader may be served is covered.

Per feature set: every commit marker well formed; every committed shard a confined bundle (no links, no FIFOs,
no HDF5 external data) whose arrays have the marker's shapes and dtypes and checksums; the index cache equal
to the markers field by field; the provenance and the frozen-weights bundle equal to the hashes the markers
recorded; a memmap export's arrays equal to the checksums in its index and its rows to the committed videos.

Stores written before markers carried provenance and frozen hashes (or exports without checksums) still
verify: what cannot be checked is a warning that says so, never a problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freezeframe.limits import LIST_BYTES, MIB
from freezeframe.store.backends import BACKENDS, get_backend
from freezeframe.store.claims import claimed_videos
from freezeframe.store.files import read_json
from freezeframe.store.index import committed_shard_ids, index_from_markers, read_marker, shard_file
from freezeframe.store.layout import (FROZEN_NAME, INDEX_FILE, MARKER_SUFFIX, PROVENANCE_FILE, SHARDS_DIR, TEMP_PREFIX,
                                      ZARR_GROUP_FILE)
from freezeframe.store.provenance import provenance_sha256
from freezeframe.store.shard import array_sha256
from freezeframe.store.store import Store

# an array may declare at most this many times its bytes on disk (plus a floor), so a tiny file that declares
# terabytes is a problem found at once, not hours of hashing fill values
MAX_EXPANSION = 1024
EXPANSION_FLOOR = 256 * MIB


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked_shards: int = 0
    checked_videos: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(path: str | Path) -> VerifyReport:
    store = Store(path)
    report = VerifyReport()
    for name in store.names():
        try:
            verify_feature_set(store.path / name, name, report)
        except Exception as exc:  # noqa: BLE001 - a feature set that cannot even be listed is one problem
            report.problems.append(f"{name}: cannot be checked: {exc}")
    return report


def declared_bytes(meta: dict, rows: int) -> int:
    return rows * int(np.prod(meta["shape"], dtype=np.int64)) * np.dtype(meta["dtype"]).itemsize


def check_shard(shards_dir: Path, shard_id: str, where: str) -> tuple[dict | None, list[str]]:
    """(marker, problems) of one committed shard: marker well formed, bundle confined, arrays as declared."""
    try:
        marker = read_marker(shards_dir, shard_id)
        reader = get_backend(marker["format"]).reader(shards_dir / shard_file(shard_id, marker["format"]))
        names = reader.array_names()  # HDF5 readers open (and check) their file lazily, here
    except Exception as exc:  # noqa: BLE001 - every unreadable shard is a reported problem
        return None, [f"{where}: cannot open: {exc}"]
    problems = []
    rows_expected = marker["num_frames"]
    if sum(v["n_frames"] for v in marker["videos"]) != rows_expected:
        problems.append(f"{where}: the marker's videos hold {sum(v['n_frames'] for v in marker['videos'])} rows, "
                        f"its num_frames says {rows_expected}")
    if sorted(names) != sorted(marker["arrays"]):
        problems.append(f"{where}: arrays {names} differ from marker {sorted(marker['arrays'])}")
    total = sum(declared_bytes(meta, rows_expected) for meta in marker["arrays"].values())
    disk = getattr(reader, "disk_bytes", None)
    if disk is not None and total > max(EXPANSION_FLOOR, disk * MAX_EXPANSION):
        reader.close()
        return marker, problems + [f"{where}: declares {total / MIB:.0f} MiB of arrays in {disk} bytes on disk; "
                                   "it is not read"]
    try:
        for array, meta in marker["arrays"].items():
            if array not in names:
                continue
            try:
                shape, dtype = reader.shape(array), reader.dtype(array)
                if shape != (rows_expected, *meta["shape"]) or dtype != np.dtype(meta["dtype"]) \
                        or meta.get("rows", rows_expected) != rows_expected:
                    problems.append(f"{where}: array {array!r} is stored as {shape} {dtype}, the marker says "
                                    f"{(rows_expected, *meta['shape'])} {meta['dtype']}")
                    continue
                if array_sha256(reader, array) != meta.get("sha256"):
                    problems.append(f"{where}: array {array!r} checksum mismatch")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{where}: array {array!r} unreadable: {exc}")
    finally:
        reader.close()
    cursor = 0
    for start, n in sorted((v["row_start"], v["n_frames"]) for v in marker["videos"]):
        if start != cursor:
            problems.append(f"{where}: video rows are not contiguous at row {start}")
            break
        cursor = start + n
    return marker, problems


def verify_feature_set(fs_dir: Path, name: str, report: VerifyReport) -> None:
    shards_dir = fs_dir / SHARDS_DIR
    shard_ids = committed_shard_ids(shards_dir)
    markers: dict[str, dict] = {}
    for shard_id in shard_ids:
        marker, problems = check_shard(shards_dir, shard_id, f"{name}/{SHARDS_DIR}/{shard_id}")
        report.problems.extend(problems)
        if marker is not None:
            markers[shard_id] = marker
            report.checked_shards += 1
    index = index_from_markers(markers)
    for video_id, kept, other in index.duplicates:
        report.problems.append(f"{name}: video {video_id!r} is stored twice (shards {kept} and {other})")
    report.checked_videos += len(index.videos)
    _check_provenance(fs_dir, name, markers, report)
    _check_frozen(fs_dir, name, markers, report)
    _check_index_cache(fs_dir, name, shard_ids, index, report)
    from freezeframe.store.memmap import verify_memmap

    verify_memmap(fs_dir, name, shard_ids, index, report)
    for temp in list(fs_dir.glob(f"{TEMP_PREFIX}*")) + list(shards_dir.glob(f"{TEMP_PREFIX}*")):
        report.warnings.append(f"{name}: uncommitted temporary {temp.name} (a writer is running or crashed)")
    claimed = claimed_videos(fs_dir)
    if claimed:
        report.warnings.append(f"{name}: {claimed} videos are claimed by writers that are running or crashed "
                               "(a rerun takes over the claims of crashed ones)")
    committed_files = {shard_file(shard_id, marker["format"]) for shard_id, marker in markers.items()}
    for entry in shards_dir.iterdir() if shards_dir.is_dir() else []:
        if entry.name.startswith(TEMP_PREFIX) or entry.name.endswith(MARKER_SUFFIX) or entry.name == ZARR_GROUP_FILE:
            continue
        if entry.name not in committed_files:
            report.warnings.append(f"{name}: shard {entry.name} has no commit marker and is ignored")


def _check_provenance(fs_dir: Path, name: str, markers: dict[str, dict], report: VerifyReport) -> None:
    try:
        digest = provenance_sha256(read_json(fs_dir / PROVENANCE_FILE, kind=dict))
    except Exception as exc:  # noqa: BLE001
        report.problems.append(f"{name}/{PROVENANCE_FILE}: unreadable: {exc}")
        return
    recorded = {shard_id: m["provenance_sha256"] for shard_id, m in markers.items() if "provenance_sha256" in m}
    for shard_id, value in sorted(recorded.items()):
        if value != digest:
            report.problems.append(f"{name}/{PROVENANCE_FILE} differs from the provenance shard {shard_id} was "
                                   "written with (it was edited or replaced)")
            break
    if markers and len(recorded) < len(markers):
        report.warnings.append(f"{name}: {len(markers) - len(recorded)} shards were written before markers recorded "
                               f"a provenance hash; edits to {PROVENANCE_FILE} cannot be detected for them")


def _check_frozen(fs_dir: Path, name: str, markers: dict[str, dict], report: VerifyReport) -> None:
    recorded = [m["frozen_sha256"] for m in markers.values() if isinstance(m.get("frozen_sha256"), dict)]
    bundles = [(fs_dir / f"{FROZEN_NAME}{b.extension}", b) for b in BACKENDS.values()
               if (fs_dir / f"{FROZEN_NAME}{b.extension}").exists() or (fs_dir / f"{FROZEN_NAME}{b.extension}").is_symlink()]
    if not bundles:
        if recorded:
            report.problems.append(f"{name}: the frozen-weights bundle recorded in the markers is missing")
        return
    path, backend = bundles[0]
    where = f"{name}/{path.name}"
    try:
        reader = backend.reader(path)
        try:
            for array in reader.array_names():
                nbytes = int(np.prod(reader.shape(array), dtype=np.int64)) * reader.dtype(array).itemsize
                disk = getattr(reader, "disk_bytes", None)
                if disk is not None and nbytes > max(EXPANSION_FLOOR, disk * MAX_EXPANSION):
                    raise ValueError(f"array {array!r} declares {nbytes} bytes in {disk} on disk")
            actual = {array: array_sha256(reader, array) for array in reader.array_names()}
        finally:
            reader.close()
    except Exception as exc:  # noqa: BLE001
        report.problems.append(f"{where}: cannot be read: {exc}")
        return
    if not recorded:
        report.warnings.append(f"{where} was written before markers recorded its checksums; it cannot be checked")
    elif any(hashes != actual for hashes in recorded):
        report.problems.append(f"{where}: frozen weights differ from the checksums recorded in the commit markers")


def _check_index_cache(fs_dir: Path, name: str, shard_ids: list[str], index, report: VerifyReport) -> None:
    cache = fs_dir / INDEX_FILE
    if not cache.exists() and not cache.is_symlink():
        return
    try:
        cached = read_json(cache, LIST_BYTES, kind=dict)
    except (ValueError, OSError):
        report.warnings.append(f"{name}: {INDEX_FILE} is unreadable (it is rebuilt from commit markers on read)")
        return
    shards = cached.get("shards")
    if not isinstance(shards, dict) or sorted(shards) != shard_ids:
        report.warnings.append(f"{name}: {INDEX_FILE} is stale (it is rebuilt from commit markers on read)")
        return
    for shard_id in shard_ids:  # every field a reader may use, against the markers
        if shards[shard_id] != index.shards.get(shard_id):
            report.problems.append(f"{name}: {INDEX_FILE} describes shard {shard_id} differently from its "
                                   "commit marker")
            return
    if cached.get("videos") != index.videos:
        report.problems.append(f"{name}: {INDEX_FILE} disagrees with the commit markers")
