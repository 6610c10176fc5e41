"""Copy a store into another format or compression, shard by shard, and prove the copy exact.

Every source shard becomes one new shard with the same videos in the same order, written and
committed through the ordinary `ShardWriter` path (temporary name, fsync, rename, marker last).
Right after its commit, each new shard is read back and compared with the source, array by
array and video by video, byte for byte; a shard that differs is retracted (marker removed
first, then its file) and reported. Provenance, failures and the frozen-weights bundle are
copied too. A rerun skips shards whose videos are all committed in the destination already,
and compares those videos with the source again, so a run that died between a commit and its
check is still checked.

The source is verified first (`freezeframe verify`'s checks: hashes, confinement, provenance, frozen weights);
a source with any problem is refused before anything is written, so damaged or foreign bytes are never copied
into a fresh store that would then verify. A write that fails (a full disk) is one sentence; the shard in
flight is removed, and a rerun removes temporaries that dead writers left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from freezeframe.errors import StoreError
from freezeframe.store.backends import get_backend
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.files import append_jsonl, dumps, fsync_dir, read_jsonl
from freezeframe.store.markers import VIDEO_FIELDS, committed_shard_ids, read_marker, shard_file
from freezeframe.store.layout import FAILURES_FILE, SHARDS_DIR, marker_path
from freezeframe.store.location import is_remote, remove_tree, store_path
from freezeframe.store.store import Store
from freezeframe.store.writer import FeatureSetWriter

WINDOW_BYTES = 64 * 1024 * 1024  # rows are copied and compared in windows of about this size (bounded memory)


@dataclass
class SetReport:
    copied_shards: int = 0
    copied_videos: int = 0
    skipped_shards: int = 0
    verified_videos: int = 0
    failures_copied: int = 0


@dataclass
class ConvertReport:
    feature_sets: dict[str, SetReport] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def convert_store(
    src: str | Path,
    dst: str | Path,
    *,
    format: str = "zarr",
    compression: str = "none",
    names: list[str] | tuple[str, ...] | None = None,
    log: Callable[[str], None] | None = None,
) -> ConvertReport:
    """Copy the feature sets `names` (default: all) of store `src` into store `dst` (created if missing)."""
    src_store = Store(src)
    dst = store_path(dst)
    if str(dst) == str(src_store.path) or (not is_remote(dst) and not is_remote(src_store.path)
                                           and dst.exists() and dst.resolve() == src_store.path.resolve()):
        raise StoreError("convert needs a destination store other than the source.")
    get_backend(format)
    available = src_store.names()
    chosen = list(names) if names else available
    missing = [name for name in chosen if name not in available]
    if missing:
        raise StoreError(f"store {src} has no feature set {missing[0]!r}; it has: {', '.join(available) or 'none'}.")
    from freezeframe.store.tools.verify import VerifyReport, verify_feature_set

    checked = VerifyReport()
    for name in chosen:
        verify_feature_set(src_store.path / name, name, checked)
    if checked.problems:
        raise StoreError(f"store {src} fails verification, so it is not converted ({len(checked.problems)} "
                         f"problems; the first: {checked.problems[0]}); run freezeframe verify {src}.")
    report = ConvertReport()
    try:
        for name in chosen:
            report.feature_sets[name] = _convert_set(src_store[name], dst, name, format, compression,
                                                     report.problems, log or (lambda _line: None))
    except OSError as exc:
        raise StoreError(f"convert into {dst} failed: {exc.strerror or exc}; the shard in flight was removed "
                         "and a rerun continues where this one stopped.") from None
    return report


def _convert_set(src_fs: FeatureSet, dst: Path, name: str, format: str, compression: str, problems: list[str],
                 log: Callable[[str], None]) -> SetReport:
    out = SetReport()
    frozen_path, _backend = src_fs.frozen_bundle()
    frozen = src_fs.frozen_weights() if frozen_path is not None else None
    writer = FeatureSetWriter(dst, name, src_fs.provenance, format=format, compression=compression, frozen=frozen)
    committed_before = writer.committed_ids()
    src_shards = src_fs.path / SHARDS_DIR
    owner = {video_id: src_fs.locate(video_id).shard for video_id in src_fs.video_ids()}

    for shard_id in committed_shard_ids(src_shards):
        marker = read_marker(src_shards, shard_id)
        # a video committed twice in the source is read from its earliest shard: copy that one only
        videos = sorted((v for v in marker["videos"] if owner.get(v["id"]) == shard_id), key=lambda v: v["row_start"])
        todo = [v for v in videos if v["id"] not in committed_before]
        if not todo:
            out.skipped_shards += 1
            continue
        reader = get_backend(marker["format"]).reader(src_shards / shard_file(shard_id, marker["format"]))
        try:
            new_marker = _copy_shard(writer, reader, marker, todo, shard_id)
            shard_problems = _check_shard(writer, new_marker, reader, marker, f"{name}/{SHARDS_DIR}/{shard_id}")
        finally:
            reader.close()
        if shard_problems:
            _retract(writer.shards_dir, new_marker)
            problems.extend(shard_problems)
            log(f"{name}: shard {shard_id} differs after copying; the copy was removed")
            continue
        out.copied_shards += 1
        out.copied_videos += len(todo)
        out.verified_videos += len(todo)
        log(f"{name}: shard {shard_id} -> {new_marker['shard_id']} ({len(todo)} videos, verified)")

    # videos committed before this run (a rerun, or a run cut between a commit and its check): compare again
    if committed_before:
        dst_fs = FeatureSet(dst, name)
        for video_id in sorted(committed_before & set(owner)):
            problems.extend(_check_video(src_fs, dst_fs, video_id, name))
            out.verified_videos += 1
        dst_fs.close()

    out.failures_copied = _copy_failures(src_fs.path / FAILURES_FILE, writer.failures_path)
    if frozen is not None:
        problems.extend(_check_frozen(frozen, FeatureSet(dst, name), name))
    writer.write_index()
    return out


def _windows(reader, names: list[str], start: int, n: int):
    row_bytes = sum(int(np.prod(reader.shape(a)[1:], dtype=np.int64)) * reader.dtype(a).itemsize for a in names)
    step = max(1, WINDOW_BYTES // max(1, row_bytes))
    for lo in range(start, start + n, step):
        yield lo, min(start + n, lo + step)


def _copy_shard(writer: FeatureSetWriter, reader, marker: dict, videos: list[dict], src_shard: str) -> dict:
    names = sorted(marker["arrays"])
    shard = writer.new_shard()
    try:
        for video in videos:
            video_id = video["id"]
            for lo, hi in _windows(reader, names, video["row_start"], video["n_rows"]):
                shard.append(video_id, {a: reader.read(a, lo, hi) for a in names})
            if video["n_rows"] == 0:
                shard.append(video_id, {a: reader.read(a, video["row_start"], video["row_start"]) for a in names})
            shard.end_video(video_id, {k: v for k, v in video.items() if k not in VIDEO_FIELDS})
        return shard.commit({"converted_from": src_shard})
    except BaseException:
        shard.abort()
        raise


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return (a.dtype == b.dtype and a.shape == b.shape
            and np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes())


def _check_shard(writer: FeatureSetWriter, new: dict, src_reader, src: dict, where: str) -> list[str]:
    """Read the committed copy back and compare every array of every video with the source, exactly."""
    problems = []
    if sorted(new["arrays"]) != sorted(src["arrays"]):
        problems.append(f"{where}: the copy has arrays {sorted(new['arrays'])}, the source {sorted(src['arrays'])}")
    src_videos = {v["id"]: v for v in src["videos"]}
    dst_reader = get_backend(new["format"]).reader(writer.shards_dir / shard_file(new["shard_id"], new["format"]))
    try:
        for video in new["videos"]:
            video_id, theirs = video["id"], src_videos[video["id"]]
            strip = lambda v: {k: x for k, x in v.items() if k != "row_start"}
            if strip(video) != strip(theirs):
                problems.append(f"{where}: video {video_id!r} is described differently in the copy")
                continue
            for array in sorted(src["arrays"]):
                offset = video["row_start"] - theirs["row_start"]
                for lo, hi in _windows(src_reader, [array], theirs["row_start"], theirs["n_rows"]):
                    if not _same(src_reader.read(array, lo, hi), dst_reader.read(array, lo + offset, hi + offset)):
                        problems.append(f"{where}: video {video_id!r} array {array!r} differs in the copy "
                                        f"(rows {lo - theirs['row_start']}..{hi - theirs['row_start']})")
                        break
    except Exception as exc:  # noqa: BLE001 - an unreadable copy is a mismatch, reported as such
        problems.append(f"{where}: the copy cannot be read back: {exc}")
    finally:
        dst_reader.close()
    return problems


def _check_video(src_fs: FeatureSet, dst_fs: FeatureSet, video_id: str, name: str) -> list[str]:
    where = f"{name}: video {video_id!r}"
    try:
        info, theirs = dst_fs.video_info(video_id), src_fs.video_info(video_id)
        drop = ("shard", "row_start")
        if {k: v for k, v in info.items() if k not in drop} != {k: v for k, v in theirs.items() if k not in drop}:
            return [f"{where} is described differently in the destination"]
        arrays = src_fs.shard_info(theirs["shard"]).arrays
        if sorted(dst_fs.shard_info(info["shard"]).arrays) != sorted(arrays):
            return [f"{where} has different arrays in the destination"]
        n = theirs["n_rows"]
        for array, meta in sorted(arrays.items()):
            row_bytes = int(np.prod(meta["shape"], dtype=np.int64)) * np.dtype(meta["dtype"]).itemsize
            step = max(1, WINDOW_BYTES // max(1, row_bytes))
            for lo in range(0, n, step):
                window = slice(lo, min(n, lo + step))
                if not _same(src_fs.read(video_id, array, window), dst_fs.read(video_id, array, window)):
                    return [f"{where} array {array!r} differs in the destination (rows {lo}..{min(n, lo + step)})"]
    except Exception as exc:  # noqa: BLE001
        return [f"{where} cannot be compared: {exc}"]
    return []


def _check_frozen(frozen: dict[str, np.ndarray], dst_fs: FeatureSet, name: str) -> list[str]:
    try:
        copied = dst_fs.frozen_weights()
    except Exception as exc:  # noqa: BLE001
        return [f"{name}: frozen weights cannot be read in the destination: {exc}"]
    if sorted(copied) != sorted(frozen):
        return [f"{name}: frozen weights hold {sorted(copied)} in the destination, {sorted(frozen)} in the source"]
    return [f"{name}: frozen weight {key!r} differs in the destination" for key in sorted(frozen)
            if not _same(frozen[key], copied[key])]


def _copy_failures(src: Path, dst: Path) -> int:
    """Append the source's failure records that the destination does not hold yet, in order."""
    have = {dumps(record) for record in read_jsonl(dst)}
    added = 0
    for record in read_jsonl(src):
        if dumps(record) not in have:
            append_jsonl(dst, record)
            have.add(dumps(record))
            added += 1
    return added


def _retract(shards_dir: Path, marker: dict) -> None:
    """Un-commit a shard: its marker goes first (readers stop seeing it), then its file."""
    marker_path(shards_dir, marker["shard_id"]).unlink(missing_ok=True)
    fsync_dir(shards_dir)
    remove_tree(shards_dir / shard_file(marker["shard_id"], marker["format"]))
