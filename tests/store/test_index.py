"""The video index: columnar segments that readers memory-map, kept incrementally by writers, rebuilt from the
commit markers (the truth), checked by verify, and never followed when damaged or hostile.

Shards are written directly with synthetic arrays (real Zarr bundles, real markers, real segment files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from freezeframe.errors import StoreError
from freezeframe.store import FeatureSetWriter, open_store, verify_store
from freezeframe.store.index import INDEX_EVERY, index_from_markers, segment_from_markers
from freezeframe.store.layout import INDEX_DIR, LEGACY_INDEX_FILE, MARKER_SUFFIX, SEGMENT_SUFFIX, SHARDS_DIR
from freezeframe.store.markers import committed_shard_ids, read_markers
from freezeframe.store.segment import Segment

NAME = "fs"
PROVENANCE = {"backbone": {"model": "tiny"}, "sampling": {"strategy": "num_frames", "num_frames": 3}}


def rows_of(i: int) -> int:
    return 1 + i % 4


def embed_of(i: int) -> np.ndarray:
    return np.full((rows_of(i), 4), i, np.float16)


def commit_shards(writer: FeatureSetWriter, first_shard: int, count: int, per_shard: int = 3) -> None:
    for k in range(first_shard, first_shard + count):
        shard = writer.new_shard()
        for i in range(k * per_shard, (k + 1) * per_shard):
            shard.append(f"v{i:03d}", {"embed": embed_of(i)})
            shard.end_video(f"v{i:03d}", {"source": f"/videos/v{i:03d}.mp4"})
        shard.commit()


def segments_of(store: Path) -> list[Path]:
    return sorted((store / NAME / INDEX_DIR).glob(f"*{SEGMENT_SUFFIX}"))


def assert_reads(store: Path, n: int) -> None:
    fs = open_store(store)[NAME]
    assert fs.video_ids() == [f"v{i:03d}" for i in range(n)] and len(fs) == n
    assert fs.num_rows == sum(rows_of(i) for i in range(n))
    for i in range(n):
        np.testing.assert_array_equal(fs.read(f"v{i:03d}", "embed"), embed_of(i))
    assert "never-committed" not in fs


def truth(store: Path) -> Segment:
    shards_dir = store / NAME / SHARDS_DIR
    return segment_from_markers(read_markers(shards_dir, committed_shard_ids(shards_dir)),
                                committed_shard_ids(shards_dir))[0]


def rewrite(path: Path, edit) -> None:
    """Rewrite a segment file with `edit(columns)` applied to copies of its columns."""
    segment = Segment.open(path)
    columns = {name: np.array(column) for name, column in segment.columns.items()}
    edit(columns)
    path.write_bytes(Segment(columns, segment.layouts, segment.array_sets, segment.replaces, path).to_bytes())


@pytest.fixture
def indexed(tmp_path):
    """20 shards of 3 videos, indexed into one segment as at the end of a run."""
    store = tmp_path / "store"
    writer = FeatureSetWriter(store, NAME, PROVENANCE)
    commit_shards(writer, 0, 20)
    writer.write_index()
    return store, writer


def test_writers_index_every_batch_of_commits_and_merge_at_the_end(tmp_path):
    store = tmp_path / "store"
    writer = FeatureSetWriter(store, NAME, PROVENANCE)
    commit_shards(writer, 0, INDEX_EVERY - 1)
    assert segments_of(store) == []  # nothing indexed yet: readers read the markers
    assert_reads(store, 3 * (INDEX_EVERY - 1))
    commit_shards(writer, INDEX_EVERY - 1, 1)
    (first,) = segments_of(store)
    assert Segment.open(first).n == 3 * INDEX_EVERY
    commit_shards(writer, INDEX_EVERY, INDEX_EVERY - 1)  # commits between batches leave the index as it is
    assert segments_of(store) == [first] and first.stat().st_mtime_ns == first.stat().st_mtime_ns
    commit_shards(writer, 2 * INDEX_EVERY - 1, 1)  # a second batch the same size: merged into one segment
    (merged,) = segments_of(store)
    assert merged != first and Segment.open(merged).n == 6 * INDEX_EVERY
    commit_shards(writer, 2 * INDEX_EVERY, 5)  # 5 more shards, committed but not indexed
    assert_reads(store, 3 * (2 * INDEX_EVERY + 5))
    writer.write_index()
    (final,) = segments_of(store)
    built = Segment.open(final)
    assert built.ids() == truth(store).ids() and built.shard_ids == truth(store).shard_ids
    assert np.array_equal(built.columns["row_start"], truth(store).columns["row_start"])
    report = verify_store(store)
    assert report.ok and not report.warnings, (report.problems, report.warnings)


def test_index_is_only_a_cache_of_the_markers(indexed):
    store, writer = indexed
    n = 60
    for segment in segments_of(store):
        segment.unlink()
    assert_reads(store, n)  # rebuilt from the markers in memory
    built = index_from_markers(store / NAME)
    assert built.video_ids() == truth(store).ids()
    fs = open_store(store)[NAME]
    for i in range(n):
        marker_entry = fs.video_info(f"v{i:03d}")
        assert marker_entry["n_rows"] == rows_of(i) and marker_entry["source"] == f"/videos/v{i:03d}.mp4"
        assert tuple(fs.locate(f"v{i:03d}")) == (marker_entry["shard"], marker_entry["row_start"], rows_of(i))
    commit_shards(writer, 20, 2)  # stale: committed after the index was written
    assert_reads(store, n + 6)
    writer.write_index()
    assert len(segments_of(store)) == 1 and verify_store(store).ok


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "column past the end", "ids out of order",
                                    "entry past its shard", "shard out of range", "uncommitted shard id",
                                    "a symlink to a segment elsewhere"])
def test_a_damaged_or_hostile_segment_is_never_followed(indexed, damage, tmp_path):
    store, _writer = indexed
    (path,) = segments_of(store)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "column past the end":
        data = bytearray(path.read_bytes())
        length = int.from_bytes(data[8:16], "little")
        header = json.loads(data[16:16 + length])
        header["columns"]["row_start"][0] += 1 << 40
        text = json.dumps(header).encode().ljust(length)
        path.write_bytes(bytes(data[:16]) + text + bytes(data[16 + length:]))
    elif damage == "ids out of order":
        rewrite(path, lambda c: c["id_offsets"].__setitem__(5, 10 ** 9))
    elif damage == "entry past its shard":
        rewrite(path, lambda c: c["row_start"].__setitem__(7, 10 ** 12))
    elif damage == "shard out of range":
        rewrite(path, lambda c: c["shard"].__setitem__(7, 10 ** 6))
    elif damage == "uncommitted shard id":  # a shard table naming a path outside: never a committed shard
        segment = Segment.open(path)
        shard_ids = list(segment.shard_ids)
        shard_ids[0] = "../../../etc/passwd"
        offsets = np.zeros(len(shard_ids) + 1, np.int64)
        np.cumsum([len(s) for s in shard_ids], out=offsets[1:])
        rewrite(path, lambda c: c.update(shard_offsets=offsets,
                                         shard_bytes=np.frombuffer("".join(shard_ids).encode(), np.uint8)))
    else:
        elsewhere = tmp_path / "elsewhere.idx"
        path.rename(elsewhere)
        path.symlink_to(elsewhere)
    assert_reads(store, 60)
    report = verify_store(store)
    assert report.ok, report.problems  # readers never serve it, so it is a warning, not a problem
    assert any(INDEX_DIR in warning for warning in report.warnings), report.warnings


def test_a_well_formed_segment_that_disagrees_with_the_markers_is_a_verify_problem(indexed):
    store, _writer = indexed
    (path,) = segments_of(store)
    rewrite(path, lambda c: c["row_start"].__setitem__(1, c["row_start"][0]))  # v001 pointed at v000's rows
    report = verify_store(store, quick=True)
    assert not report.ok and any("disagrees with the commit markers" in p and "'v001'" in p for p in report.problems)
    fs = open_store(store)[NAME]
    info = fs.video_info("v001")  # the marker is the truth: the reader notices and rebuilds from the markers
    assert (info["row_start"], info["n_rows"]) == (rows_of(0), rows_of(1))
    np.testing.assert_array_equal(fs.read("v001", "embed"), embed_of(1))


def test_overlapping_segments_of_racing_writers_are_tolerated_and_merged(indexed):
    store, writer = indexed
    (path,) = segments_of(store)
    copy = path.with_name(f"0{path.name}")
    copy.write_bytes(path.read_bytes())  # two writers indexed the same shards at once
    commit_shards(writer, 20, 1)
    assert_reads(store, 63)
    report = verify_store(store)
    assert report.ok and any("stale" in warning for warning in report.warnings), report.warnings
    writer.write_index()
    assert len(segments_of(store)) == 1 and not verify_store(store).warnings


def test_a_symlinked_index_folder_is_refused(indexed, tmp_path):
    store, _writer = indexed
    index_dir = store / NAME / INDEX_DIR
    index_dir.rename(tmp_path / "elsewhere")
    index_dir.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(StoreError, match="symbolic link"):
        open_store(store)[NAME]
    assert not verify_store(store).ok


def test_a_store_written_before_rows_and_segments_opens_and_is_reindexed(indexed):
    store, writer = indexed
    for path in segments_of(store):
        path.unlink()
    for marker in (store / NAME / SHARDS_DIR).glob(f"*{MARKER_SUFFIX}"):  # the field names of older markers
        body = json.loads(marker.read_text())
        body["num_frames"] = body.pop("num_rows")
        for video in body["videos"]:
            video["n_frames"] = video.pop("n_rows")
        marker.write_text(json.dumps(body, indent=1))
    (store / NAME / LEGACY_INDEX_FILE).write_text(json.dumps({"shards": {}, "videos": {"v000": {}}}))
    assert_reads(store, 60)
    assert open_store(store)[NAME].video_info("v005")["n_rows"] == rows_of(5)
    report = verify_store(store)
    assert report.ok and any(LEGACY_INDEX_FILE in warning for warning in report.warnings), report.warnings
    writer.write_index()
    assert not (store / NAME / LEGACY_INDEX_FILE).exists() and len(segments_of(store)) == 1
    report = verify_store(store)
    assert report.ok and not report.warnings, report.warnings


def test_removed_and_replaced_shards_are_not_served_from_an_older_segment(indexed):
    from freezeframe.store.tools.remove import remove_videos

    store, _writer = indexed
    before = segments_of(store)
    report = remove_videos(store, NAME, ["v004", "v030", "v031", "v032"])  # one shard rewritten, one dropped
    assert (report.rewritten_shards, report.dropped_shards) == (1, 1)
    fs = open_store(store)[NAME]
    assert len(fs) == 56 and "v004" not in fs and "v030" not in fs
    np.testing.assert_array_equal(fs.read("v005", "embed"), embed_of(5))
    assert segments_of(store) != before and verify_store(store).ok


def test_verify_quick_reads_markers_and_index_only(indexed):
    store, _writer = indexed
    result = subprocess.run([sys.executable, "-m", "freezeframe.cli", "verify", str(store), "--quick", "--jobs", "2"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok: 20 shards, 60 videos checked" in result.stdout, result.stdout
    chunk = next(p for p in (store / NAME / SHARDS_DIR).rglob("embed/c/*/*") if p.is_file())
    chunk.write_bytes(b"\xff" * len(chunk.read_bytes()))  # array bytes: only the full verify reads them
    assert verify_store(store, quick=True).ok
    full = verify_store(store, jobs=2)
    assert not full.ok and any("checksum mismatch" in p for p in full.problems)
    marker = next((store / NAME / SHARDS_DIR).glob(f"*{MARKER_SUFFIX}"))
    marker.write_text("{")
    assert any(marker.name in p for p in verify_store(store, quick=True).problems)


def test_a_rerun_has_exactly_the_uncommitted_videos_left(indexed):
    from freezeframe.extract.runner import videos_left
    from freezeframe.extract.sources import VideoSource
    from freezeframe.store.tools.remove import remove_videos

    store, writer = indexed
    remove_videos(store, NAME, ["v010", "v011"])  # committed once, removed since: to do again
    commit_shards(writer, 20, 1)  # committed after the index was merged: read from its marker
    wanted = ["new-1", "v000", "v010", "v059", "v062", "new-2", "v011", "dir/../v000"]
    sources = [VideoSource(video_id, f"/videos/{video_id}.mp4") for video_id in wanted]
    left = videos_left(sources, FeatureSetWriter(store, NAME, PROVENANCE))
    assert [s.video_id for s in left] == ["new-1", "v010", "new-2", "v011", "dir/../v000"]
