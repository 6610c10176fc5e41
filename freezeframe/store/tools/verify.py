"""Check a store end to end: everything a reader may be served is covered.

Per feature set: every commit marker well formed; every committed shard a confined bundle (no links, no FIFOs,
no HDF5 external data) whose arrays have the marker's shapes and dtypes and checksums; the video index readers
use equal to the markers entry by entry; the provenance and the frozen-weights bundle equal to the hashes the
markers recorded; a memmap export's arrays equal to the checksums in its index and its rows to the committed videos.

`quick` checks the markers and the index only (nothing of the arrays is read). A full check reads shards in `jobs`
threads at once (reading and hashing release the GIL, so big shards check in parallel).

Stores written before markers carried provenance and frozen hashes (or exports without checksums) still
verify: what cannot be checked is a warning that says so, never a problem.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from freezeframe.limits import MIB
from freezeframe.store.backends import BACKENDS, get_backend
from freezeframe.store.claims import claimed_videos
from freezeframe.store.files import MalformedFileError, read_json
from freezeframe.store.index import load_index, open_segments, segment_from_markers
from freezeframe.store.layout import (FROZEN_NAME, INDEX_DIR, LEGACY_INDEX_FILE, MARKER_SUFFIX, PROVENANCE_FILE,
                                      SHARDS_DIR, TEMP_PREFIX, ZARR_GROUP_FILE)
from freezeframe.store.tools.memmap import verify_memmap
from freezeframe.store.markers import committed_shard_ids, read_marker, replacements, served_shards, shard_file
from freezeframe.store.provenance import provenance_sha256
from freezeframe.store.segment import DamagedIndexError, Segment, segment_difference
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


def default_jobs() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def verify_store(path: str | Path, quick: bool = False, jobs: int | None = None,
                 cache_dir: str | Path | None = None) -> VerifyReport:
    """Check every feature set of the store at `path` (see the module's docstring); `quick`: markers and index.

    A published store is checked in its local cache (`cache_dir`), after fetching (and checking against its
    manifest) every file a full verify reads."""
    store = Store(path, cache_dir)
    if store.published is not None and not quick:
        store.published.fetch_all()
    report = VerifyReport()
    if store.published is not None:
        report.problems += store.published.mirror_problems(quick)
    for name in store.names():
        try:
            verify_feature_set(store.path / name, name, report, quick=quick, jobs=jobs or default_jobs())
        except Exception as exc:  # noqa: BLE001 - a feature set that cannot even be listed is one problem
            report.problems.append(f"{name}: cannot be checked: {exc}")
    return report


def declared_bytes(meta: dict, rows: int) -> int:
    return rows * int(np.prod(meta["shape"], dtype=np.int64)) * np.dtype(meta["dtype"]).itemsize


def check_shard(shards_dir: Path, shard_id: str, where: str, quick: bool = False) -> tuple[dict | None, list[str]]:
    """(marker, problems) of one committed shard: marker well formed and, unless `quick`, its bundle confined
    and its arrays as declared."""
    try:
        marker = read_marker(shards_dir, shard_id)
    except Exception as exc:  # noqa: BLE001 - every unreadable shard is a reported problem
        return None, [f"{where}: cannot open: {exc}"]
    problems = _check_rows(marker, where)
    if not quick:
        problems += _check_bundle(shards_dir, shard_id, marker, where)
    return marker, problems


def _check_rows(marker: dict, where: str) -> list[str]:
    rows = sum(v["n_rows"] for v in marker["videos"])
    problems = [] if rows == marker["num_rows"] else \
        [f"{where}: the marker's videos hold {rows} rows, its num_rows says {marker['num_rows']}"]
    cursor = 0
    for start, n in sorted((v["row_start"], v["n_rows"]) for v in marker["videos"]):
        if start != cursor:
            problems.append(f"{where}: video rows are not contiguous at row {start}")
            break
        cursor = start + n
    return problems


def _check_bundle(shards_dir: Path, shard_id: str, marker: dict, where: str) -> list[str]:
    try:
        reader = get_backend(marker["format"]).reader(shards_dir / shard_file(shard_id, marker["format"]))
        names = reader.array_names()  # HDF5 readers open (and check) their file lazily, here
    except Exception as exc:  # noqa: BLE001
        return [f"{where}: cannot open: {exc}"]
    problems = []
    rows_expected = marker["num_rows"]
    if sorted(names) != sorted(marker["arrays"]):
        problems.append(f"{where}: arrays {names} differ from marker {sorted(marker['arrays'])}")
    total = sum(declared_bytes(meta, rows_expected) for meta in marker["arrays"].values())
    disk = getattr(reader, "disk_bytes", None)
    if disk is not None and total > max(EXPANSION_FLOOR, disk * MAX_EXPANSION):
        reader.close()
        return problems + [f"{where}: declares {total / MIB:.0f} MiB of arrays in {disk} bytes on disk; it is not read"]
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
    return problems


def check_shards(shards_dir, shard_ids: list[str], name: str, quick: bool, jobs: int):
    """(marker, problems) of every shard, in order; a full check in `jobs` threads (markers alone are parsed here:
    JSON holds the GIL)."""
    def check(shard_id: str):
        return check_shard(shards_dir, shard_id, f"{name}/{SHARDS_DIR}/{shard_id}", quick)
    if quick or jobs <= 1:
        return [check(shard_id) for shard_id in shard_ids]
    with ThreadPoolExecutor(jobs, thread_name_prefix="freezeframe-verify") as pool:
        return list(pool.map(check, shard_ids))


def verify_feature_set(fs_dir: Path, name: str, report: VerifyReport, quick: bool = False, jobs: int = 1) -> None:
    shards_dir = fs_dir / SHARDS_DIR
    shard_ids = committed_shard_ids(shards_dir)
    markers: dict[str, dict] = {}
    for shard_id, (marker, problems) in zip(shard_ids, check_shards(shards_dir, shard_ids, name, quick, jobs)):
        report.problems.extend(problems)
        if marker is not None:
            markers[shard_id] = marker
            report.checked_shards += 1
    served = served_shards(sorted(markers), replacements(markers))
    truth, duplicates = segment_from_markers(markers, served)
    for video_id, kept, other in duplicates:
        report.problems.append(f"{name}: video {video_id!r} is stored twice (shards {kept} and {other})")
    report.checked_videos += truth.n
    _check_provenance(fs_dir, name, markers, report)
    _check_index(fs_dir, name, truth, report)
    if not quick:
        _check_frozen(fs_dir, name, markers, report)
        verify_memmap(fs_dir, name, truth, report)
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


def _check_index(fs_dir: Path, name: str, truth: Segment, report: VerifyReport) -> None:
    """The index readers load (its segments, and the markers of shards no segment covers) against the markers."""
    where = f"{name}/{INDEX_DIR}"
    legacy = fs_dir / LEGACY_INDEX_FILE
    if legacy.exists() or legacy.is_symlink():
        report.warnings.append(f"{name}: {LEGACY_INDEX_FILE} (the index of older versions) is ignored; the next "
                               "write replaces it")
    if (fs_dir / INDEX_DIR).is_symlink():
        report.problems.append(f"{where} is a symbolic link; the index lives inside the store")
        return
    segments = open_segments(fs_dir)
    listed = [p.name for p in (fs_dir / INDEX_DIR).iterdir()] if (fs_dir / INDEX_DIR).is_dir() else []
    for file_name in sorted(set(listed) - set(segments)):
        if not file_name.startswith(TEMP_PREFIX):
            report.warnings.append(f"{where}/{file_name} is not a readable index segment; readers ignore it")
    try:
        index = load_index(fs_dir, segments.values())
        difference = segment_difference(index.merged(), truth)
    except DamagedIndexError as exc:
        report.warnings.append(f"{where}: damaged ({exc}); readers that meet the damage read the markers instead")
        return
    except MalformedFileError:
        return  # a marker the index would need is malformed: a problem reported with its shard
    for file_name, segment in sorted(segments.items()):
        if segment not in index.segments:
            report.warnings.append(f"{where}/{file_name} is stale (its shards were removed or indexed again); "
                                   "readers ignore it")
    if difference:
        report.problems.append(f"{where} disagrees with the commit markers: {difference}")
