"""Check a store end to end: every committed shard readable, checksums and index consistent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from freezeframe.limits import LIST_BYTES
from freezeframe.store.backends import get_backend
from freezeframe.store.claims import claimed_videos
from freezeframe.store.files import read_json
from freezeframe.store.index import committed_shard_ids, index_from_markers, read_marker
from freezeframe.store.layout import INDEX_FILE, MARKER_SUFFIX, SHARDS_DIR, TEMP_PREFIX, ZARR_GROUP_FILE
from freezeframe.store.shard import array_sha256
from freezeframe.store.store import Store


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
        _verify_feature_set(store.path / name, name, report)
    return report


def _verify_feature_set(fs_dir: Path, name: str, report: VerifyReport) -> None:
    shards_dir = fs_dir / SHARDS_DIR
    shard_ids = committed_shard_ids(shards_dir)
    markers: dict[str, dict] = {}
    committed_files: set[str] = set()
    for shard_id in shard_ids:
        where = f"{name}/{SHARDS_DIR}/{shard_id}"
        try:
            marker = read_marker(shards_dir, shard_id)
            committed_files.add(marker["file"])
            reader = get_backend(marker["format"]).reader(shards_dir / marker["file"])
            names = reader.array_names()  # HDF5 readers open their file lazily, here
        except Exception as exc:  # noqa: BLE001 - every unreadable shard is a reported problem
            report.problems.append(f"{where}: cannot open: {exc}")
            continue
        expected_rows = sum(v["n_frames"] for v in marker["videos"])
        if sorted(names) != sorted(marker["arrays"]):
            report.problems.append(f"{where}: arrays {names} differ from marker {sorted(marker['arrays'])}")
        for array, meta in marker["arrays"].items():
            try:
                rows = reader.shape(array)[0]
                digest = array_sha256(reader, array)
            except Exception as exc:  # noqa: BLE001
                report.problems.append(f"{where}: array {array!r} unreadable: {exc}")
                continue
            if rows != expected_rows or rows != meta["rows"]:
                report.problems.append(f"{where}: array {array!r} has {rows} rows, marker says {expected_rows}")
            if digest != meta["sha256"]:
                report.problems.append(f"{where}: array {array!r} checksum mismatch")
        starts = sorted((v["row_start"], v["n_frames"]) for v in marker["videos"])
        cursor = 0
        for start, n in starts:
            if start != cursor:
                report.problems.append(f"{where}: video rows are not contiguous at row {start}")
                break
            cursor = start + n
        reader.close()
        markers[shard_id] = marker
        report.checked_shards += 1
    index = index_from_markers(markers)
    for video_id, kept, other in index.duplicates:
        report.problems.append(f"{name}: video {video_id!r} is stored twice (shards {kept} and {other})")
    report.checked_videos += len(index.videos)
    cache = fs_dir / INDEX_FILE
    try:
        cached = read_json(cache, LIST_BYTES) if cache.exists() else None
        if cached is not None and not isinstance(cached, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError):
        cached = None
        report.warnings.append(f"{name}: {INDEX_FILE} is unreadable (it is rebuilt from commit markers on read)")
    if cached is not None:
        if sorted(cached.get("shards", {})) != shard_ids:
            report.warnings.append(f"{name}: {INDEX_FILE} is stale (it is rebuilt from commit markers on read)")
        elif cached.get("videos") != index.videos:
            report.problems.append(f"{name}: {INDEX_FILE} disagrees with the commit markers")
    for temp in list(fs_dir.glob(f"{TEMP_PREFIX}*")) + list(shards_dir.glob(f"{TEMP_PREFIX}*")):
        report.warnings.append(f"{name}: uncommitted temporary {temp.name} (a writer is running or crashed)")
    claimed = claimed_videos(fs_dir)
    if claimed:
        report.warnings.append(f"{name}: {claimed} videos are claimed by writers that are running or crashed "
                               "(a rerun takes over the claims of crashed ones)")
    for entry in shards_dir.iterdir() if shards_dir.is_dir() else []:
        if entry.name.startswith(TEMP_PREFIX) or entry.name.endswith(MARKER_SUFFIX) or entry.name == ZARR_GROUP_FILE:
            continue
        if entry.name not in committed_files:
            report.warnings.append(f"{name}: shard {entry.name} has no commit marker and is ignored")
