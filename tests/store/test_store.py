"""The store format: round trips, atomic visibility, discards, provenance, the index cache, verify, failures, inspect.

Most tests write shards directly with synthetic arrays; a few drive the real CLI with the bundled tiny model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import freezeframe.store.shard as shard_module
from freezeframe.errors import StoreError
from freezeframe.store import FeatureSetWriter, ShardWriter, open_store, verify_store
from freezeframe.store import provenance as prov
from freezeframe.store.layout import MARKER_SUFFIX, SHARDS_DIR, TEMP_PREFIX, temp_owner_tag

REPO = Path(__file__).resolve().parents[2]
VIDEOS = REPO / "tests" / "data" / "videos"
FREEZEFRAME = [sys.executable, "-m", "freezeframe.cli"]
NAME = "fs"

BASE_PROVENANCE = {
    "backbone": {"library": "open_clip", "model": "ff-tiny-vit", "pretrained": "none", "checkpoint_sha256": None},
    "compute_dtype": "float32",
    "preprocess": {"size": 64, "mode": "exact", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    "sampling": {"strategy": "num_frames", "num_frames": 4, "decoder": "auto"},
}


def provenance(**overrides) -> dict:
    return prov.stamp({**BASE_PROVENANCE, **overrides})


def video_arrays(seed: int, n: int) -> dict[str, np.ndarray]:
    """Per-frame arrays shaped like an extraction's, with distinct values per video."""
    rng = np.random.default_rng(seed)
    return {
        "embed": rng.standard_normal((n, 8)).astype(np.float16),
        "tokens/3": rng.standard_normal((n, 5, 4)).astype(np.float16),
        "timestamps": np.sort(rng.uniform(0, 100, n)),
        "frame_indices": np.sort(rng.integers(0, 10_000, n)).astype(np.int64),
    }


def write_shard(writer: FeatureSetWriter, videos: dict[str, dict[str, np.ndarray]], split: int = 1) -> dict:
    """Write `videos` into one new shard (each video appended in `split` parts) and commit it."""
    shard = writer.new_shard()
    for video_id, arrays in videos.items():
        n = len(arrays["embed"])
        bounds = np.linspace(0, n, split + 1).astype(int)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if hi > lo:
                shard.append(video_id, {k: v[lo:hi] for k, v in arrays.items()})
        shard.end_video(video_id, {"source": f"/videos/{video_id}"})
    return shard.commit()


def assert_video_equal(fs, video_id: str, expected: dict[str, np.ndarray]) -> None:
    for name, want in expected.items():
        got = fs.read(video_id, name)
        assert got.dtype == want.dtype, (video_id, name)
        assert got.shape == want.shape, (video_id, name)
        np.testing.assert_array_equal(got, want, err_msg=f"{video_id!r} {name}")


@pytest.fixture
def three_shards(tmp_path):
    """A store with three committed shards of synthetic videos; returns (store path, writer, expected arrays)."""
    store = tmp_path / "store"
    writer = FeatureSetWriter(store, NAME, provenance())
    plan = [[("v0", 5), ("v1", 1), ("v2", 7)], [("v3", 3)], [("v4", 4), ("v5", 2)]]
    expected = {}
    seed = 0
    for shard_videos in plan:
        videos = {}
        for video_id, n in shard_videos:
            videos[video_id] = video_arrays(seed, n)
            seed += 1
        write_shard(writer, videos, split=2)
        expected.update(videos)
    return store, writer, expected


def shard_files(store: Path) -> list[Path]:
    return sorted((store / NAME / SHARDS_DIR).iterdir())


def ff_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FREEZEFRAME, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


# ---- round trips ---------------------------------------------------------------------------


def test_read_returns_what_was_written_across_shards(three_shards):
    store, _writer, expected = three_shards
    fs = open_store(store)[NAME]
    assert fs.video_ids() == sorted(expected)
    assert len(fs.shard_ids) == 3
    assert fs.num_rows == sum(len(a["embed"]) for a in expected.values()) == 22
    for video_id, arrays in expected.items():
        assert_video_equal(fs, video_id, arrays)
        assert fs.video_info(video_id)["n_rows"] == len(arrays["embed"])
        assert fs.video_info(video_id)["source"] == f"/videos/{video_id}"
    assert fs.arrays() == {
        "embed": {"shape": [8], "dtype": "float16"},
        "frame_indices": {"shape": [], "dtype": "int64"},
        "timestamps": {"shape": [], "dtype": "float64"},
        "tokens/3": {"shape": [5, 4], "dtype": "float16"},
    }
    # sparse frame access agrees with the full read
    full = expected["v2"]["tokens/3"]
    np.testing.assert_array_equal(fs.read("v2", "tokens/3", np.array([6, 0, 3])), full[[6, 0, 3]])
    np.testing.assert_array_equal(fs.read("v2", "embed", slice(1, 6, 2)), expected["v2"]["embed"][1:6:2])
    with pytest.raises(KeyError):
        fs.read("nope", "embed")
    with pytest.raises(KeyError, match="no array"):
        fs.read("v0", "cls")


def test_weird_video_ids_are_data_never_file_names(tmp_path):
    store = tmp_path / "store"
    ids = ["../../outside-zq1", "a/b/zq2", "/abs/zq3", "zq4 ☃ 日本 ünï", "zq5 with  spaces ", "..", ".",
           "zq6.done.json", ".tmp-zq7", "zq8\\back"]
    writer = FeatureSetWriter(store, NAME, provenance())
    expected = {video_id: video_arrays(i, i % 3 + 1) for i, video_id in enumerate(ids)}
    write_shard(writer, dict(list(expected.items())[:5]))
    write_shard(writer, dict(list(expected.items())[5:]))
    writer.write_index()

    fs = open_store(store)[NAME]
    assert fs.video_ids() == sorted(ids)
    for video_id, arrays in expected.items():
        assert_video_equal(fs, video_id, arrays)
    # nothing was created outside the store, and no file or folder name carries a video id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    for root, dirs, files in os.walk(store):
        for entry in dirs + files:
            assert "zq" not in entry and "☃" not in entry and " " not in entry, entry
            assert entry not in ("..", "."), entry
    assert verify_store(store).ok


def test_uncommitted_shards_are_invisible_and_refresh_sees_new_commits(three_shards, monkeypatch):
    store, writer, expected = three_shards
    fs = open_store(store)[NAME]
    before = fs.video_ids()

    # 1) a shard still being written: its rows are flushed into a temporary bundle
    monkeypatch.setattr(shard_module, "FLUSH_BYTES", 1)
    in_flight = writer.new_shard()
    in_flight.append("temp-video", video_arrays(100, 3))
    in_flight.end_video("temp-video")
    assert in_flight.temp_path.is_dir() and in_flight.temp_path.name.startswith(TEMP_PREFIX)

    # 2) a shard renamed into place whose marker was never written (crash between rename and marker)
    renamed = writer.new_shard()
    renamed.append("unmarked-video", video_arrays(101, 2))
    renamed.end_video("unmarked-video")

    def no_marker(path, obj, **_options):
        raise OSError("simulated crash before the commit marker")

    monkeypatch.setattr(shard_module, "write_json_atomic", no_marker)
    with pytest.raises(OSError, match="simulated"):
        renamed.commit()
    monkeypatch.undo()
    assert renamed.final_path.is_dir()

    # 3) a marker caught half-way through its atomic write (still under its temporary name)
    real_marker = next((store / NAME / SHARDS_DIR).glob(f"*{MARKER_SUFFIX}"))
    body = json.loads(real_marker.read_text())
    body["videos"] = [{"id": "temp-marker-video", "row_start": 0, "n_frames": 1}]
    (store / NAME / SHARDS_DIR / f"{TEMP_PREFIX}{temp_owner_tag()}-{real_marker.name}").write_text(json.dumps(body))

    for reader in (fs, open_store(store)[NAME]):
        reader.refresh()
        assert reader.video_ids() == before
        for hidden in ("temp-video", "unmarked-video", "temp-marker-video"):
            assert hidden not in reader
            with pytest.raises(KeyError):
                reader.read(hidden, "embed")
    report = verify_store(store)
    assert report.ok, report.problems
    assert any("no commit marker" in w for w in report.warnings)
    assert any("uncommitted temporary" in w for w in report.warnings)

    # a new commit is invisible to an open feature set until refresh()
    in_flight.commit()
    assert fs.video_ids() == before
    fs.refresh()
    assert fs.video_ids() == sorted([*before, "temp-video"])
    assert_video_equal(fs, "temp-video", video_arrays(100, 3))
    for video_id, arrays in expected.items():
        assert_video_equal(fs, video_id, arrays)


# ---- discarding a video ----------------------------------------------------------------------


@pytest.mark.parametrize("flush_bytes", [1, 700, 10**9], ids=["flush-every-append", "flush-mid-video", "never-flush"])
def test_discard_video_after_partial_appends(tmp_path, monkeypatch, flush_bytes):
    monkeypatch.setattr(shard_module, "FLUSH_BYTES", flush_bytes)
    store = tmp_path / "store"
    writer = FeatureSetWriter(store, NAME, provenance())
    shard = writer.new_shard()
    kept = {}

    def add(video_id, seed, n, parts, end=True):
        arrays = video_arrays(seed, n)
        for block in np.array_split(np.arange(n), parts):
            shard.append(video_id, {k: v[block] for k, v in arrays.items()})
        if end:
            shard.end_video(video_id)
            kept[video_id] = arrays

    add("first-discarded", 0, 4, 2, end=False)
    shard.discard_video("first-discarded")
    add("a", 1, 6, 3)
    add("b-discarded", 2, 9, 3, end=False)
    shard.discard_video("b-discarded")
    add("c", 3, 5, 2)
    add("d-discarded", 4, 3, 1, end=False)
    shard.discard_video("d-discarded")
    add("e", 5, 2, 1)
    add("last-discarded", 6, 7, 4, end=False)
    shard.discard_video("last-discarded")
    shard.discard_video("never-appended")  # a no-op
    marker = shard.commit()

    assert [v["id"] for v in marker["videos"]] == ["a", "c", "e"]
    assert [(v["row_start"], v["n_rows"]) for v in marker["videos"]] == [(0, 6), (6, 5), (11, 2)]
    assert marker["num_rows"] == 13
    assert all(meta["rows"] == 13 for meta in marker["arrays"].values())
    fs = open_store(store)[NAME]
    assert fs.video_ids() == ["a", "c", "e"]
    for video_id, arrays in kept.items():
        assert_video_equal(fs, video_id, arrays)
    report = verify_store(store)
    assert report.ok and not report.warnings, (report.problems, report.warnings)


def test_shard_writer_refuses_inconsistent_use(tmp_path):
    writer = FeatureSetWriter(tmp_path / "store", NAME, provenance())
    shard = writer.new_shard()
    with pytest.raises(RuntimeError, match="empty"):
        shard.commit()
    shard.append("a", video_arrays(0, 2))
    with pytest.raises(RuntimeError, match="one video at a time"):
        shard.append("b", video_arrays(1, 2))
    with pytest.raises(RuntimeError, match="open videos"):
        shard.commit()
    with pytest.raises(ValueError, match="disagree"):
        shard.append("a", {"embed": np.zeros((2, 8), np.float16), "timestamps": np.zeros(3)})
    with pytest.raises(ValueError, match="changed shape or dtype"):
        shard.append("a", {**video_arrays(2, 1), "embed": np.zeros((1, 8), np.float32)})
    shard.abort()
    assert not shard.temp_path.exists() and not shard.final_path.exists()
    assert isinstance(shard, ShardWriter)


# ---- provenance ------------------------------------------------------------------------------


def test_provenance_must_match_to_append(tmp_path):
    store = tmp_path / "store"
    first = provenance()
    FeatureSetWriter(store, NAME, first)

    other_model = {**BASE_PROVENANCE, "backbone": {**BASE_PROVENANCE["backbone"], "model": "ViT-B-32"}}
    with pytest.raises(StoreError) as excinfo:
        FeatureSetWriter(store, NAME, prov.stamp(other_model))
    message = str(excinfo.value)
    assert "backbone.model" in message and "'ff-tiny-vit'" in message and "'ViT-B-32'" in message

    other_sampling = {**BASE_PROVENANCE, "sampling": {**BASE_PROVENANCE["sampling"], "num_frames": 16}}
    with pytest.raises(StoreError, match=r"sampling\.num_frames: store has 4, this run has 16"):
        FeatureSetWriter(store, NAME, prov.stamp(other_sampling))

    with pytest.raises(StoreError, match="compute_dtype"):
        FeatureSetWriter(store, NAME, provenance(compute_dtype="float16"))
    with pytest.raises(StoreError, match="extra"):  # a key the stored provenance lacks is a difference too
        FeatureSetWriter(store, NAME, provenance(extra=1))

    # only the volatile part differs: accepted, and the stored provenance is kept as it was
    volatile = {**first, "created": "1999-01-01T00:00:00Z", "software": {"python": "0.0", "zarr": "0"}}
    writer = FeatureSetWriter(store, NAME, volatile)
    assert writer.provenance == first
    write_shard(writer, {"v": video_arrays(0, 2)})
    assert open_store(store)[NAME].provenance == first


# ---- verify --------------------------------------------------------------------------------


def test_verify_passes_on_a_good_store(three_shards):
    store, writer, _expected = three_shards
    writer.write_index()
    report = verify_store(store)
    assert report.ok and not report.warnings
    assert (report.checked_shards, report.checked_videos) == (3, 6)
    result = ff_cli("verify", str(store))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 3 shards, 6 videos checked" in result.stdout


def test_verify_detects_a_flipped_byte_in_a_chunk(three_shards):
    store, writer, _expected = three_shards
    writer.write_index()
    shard_dir = next(p for p in shard_files(store) if p.suffix == ".zarr")
    chunks = sorted(p for p in (shard_dir / "embed").rglob("*") if p.is_file() and p.name != "zarr.json")
    assert chunks, "expected chunk files under the embed array"
    data = bytearray(chunks[0].read_bytes())
    data[5] ^= 0x01  # inside the first frame's row (a chunk file may be padded well past the array's end)
    chunks[0].write_bytes(bytes(data))

    report = verify_store(store)
    assert not report.ok
    assert any("'embed' checksum mismatch" in p and shard_dir.stem in p for p in report.problems), report.problems
    result = ff_cli("verify", str(store))
    assert result.returncode == 1
    assert "checksum mismatch" in result.stdout and "problem" in result.stdout


def test_verify_detects_a_deleted_shard(three_shards):
    store, writer, _expected = three_shards
    writer.write_index()
    shard_dir = next(p for p in shard_files(store) if p.suffix == ".zarr")
    shutil.rmtree(shard_dir)
    report = verify_store(store)
    assert not report.ok
    assert any(shard_dir.stem in p and "cannot open" in p for p in report.problems), report.problems
    assert ff_cli("verify", str(store)).returncode == 1


def test_verify_detects_a_video_stored_twice(three_shards):
    store, writer, expected = three_shards
    # a second writer that did not know v3 was committed already commits it again
    write_shard(writer, {"v3": expected["v3"], "new": video_arrays(77, 2)})
    report = verify_store(store)
    assert not report.ok
    assert any("'v3' is stored twice" in p for p in report.problems), report.problems
    # readers still see exactly one copy, from the earliest shard
    fs = open_store(store)[NAME]
    assert fs.video_ids().count("v3") == 1
    assert_video_equal(fs, "v3", expected["v3"])
    result = ff_cli("verify", str(store))
    assert result.returncode == 1 and "stored twice" in result.stdout


# ---- failures ------------------------------------------------------------------------------


def test_failures_lists_only_videos_still_not_committed(three_shards):
    store, writer, _expected = three_shards
    writer.record_failure("flaky", "/videos/flaky.mp4", "decode error at frame 10")
    writer.record_failure("broken ☃/x", "/videos/broken.mp4", "not a video")
    writer.record_failure("broken ☃/x", "/videos/broken.mp4", "still not a video")
    with open(writer.failures_path, "a", encoding="utf-8") as handle:
        handle.write('{"video_id": "torn line from a cra')  # a crash mid-append
    fs = open_store(store)[NAME]
    assert sorted(f["video_id"] for f in fs.failures()) == ["broken ☃/x", "flaky"]

    write_shard(writer, {"flaky": video_arrays(9, 3)})  # a later run succeeded
    fs.refresh()
    failures = fs.failures()
    assert [f["video_id"] for f in failures] == ["broken ☃/x"]
    assert failures[0]["reason"] == "still not a video" and failures[0]["path"] == "/videos/broken.mp4"


# ---- CLI: extract + inspect --json ------------------------------------------------------------


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """A real extraction of three sample videos plus one unreadable file, through the CLI."""
    base = tmp_path_factory.mktemp("cli")
    inputs = base / "in"
    (inputs / "sub dir").mkdir(parents=True)
    for name, target in [("a.mp4", "short_32frames.mp4"), ("sub dir/b ü.avi", "test_mpeg4.avi"),
                         ("c.mp4", "lowfps_6fps.mp4")]:
        (inputs / name).symlink_to(VIDEOS / target)
    (inputs / "broken.mp4").write_bytes(b"this is not a video\n" * 10)
    store = base / "store"
    result = ff_cli("extract", str(inputs), "--store", str(store), "--model", "ff-tiny-vit", "--pretrained", "none",
                     "--features", "embed,tokens", "--layers", "-1", "--num-frames", "3", "--workers", "0",
                     "--shard-size", "2", "--batch-size", "4", "--no-progress")
    return store, result


def test_inspect_json_matches_the_extraction(extracted):
    store, extract = extracted
    assert extract.returncode == 1, extract.stdout + extract.stderr  # one input failed
    match = re.search(r"(\S+): stored (\d+) videos? \((\d+) frames?\) .*; (\d+) already committed", extract.stdout)
    assert match, extract.stdout
    name, stored, frames, skipped = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
    assert (stored, frames, skipped) == (3, 9, 0)
    assert "failed: broken" in extract.stderr

    result = ff_cli("inspect", str(store), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert list(summary["feature_sets"]) == [name]
    fs_summary = summary["feature_sets"][name]
    assert fs_summary["num_videos"] == stored == 3
    assert fs_summary["num_rows"] == fs_summary["num_frames"] == frames == 9  # the old name kept beside the new
    assert fs_summary["provenance"]["backbone"]["model"] == "ff-tiny-vit"
    assert fs_summary["provenance"]["sampling"]["num_frames"] == 3
    arrays = fs_summary["arrays"]
    assert arrays["embed"] == {"shape": [32], "dtype": "float16"}
    assert arrays["tokens/3"] == {"shape": [17, 64], "dtype": "float16"}
    assert arrays["timestamps"] == {"shape": [], "dtype": "float64"}
    assert arrays["frame_indices"] == {"shape": [], "dtype": "int64"}
    assert [f["video_id"] for f in fs_summary["failures"]] == ["broken"]

    fs = open_store(store)[name]
    assert fs.video_ids() == ["a", "c", "sub dir/b ü"]
    assert len(fs.shard_ids) == 2
    for video_id in fs.video_ids():
        for array, meta in arrays.items():
            data = fs.read(video_id, array)
            assert data.shape == (3, *meta["shape"]) and str(data.dtype) == meta["dtype"]
        assert np.isfinite(fs.read(video_id, "embed").astype(np.float32)).all()
        assert np.all(np.diff(fs.read(video_id, "frame_indices")) > 0)
    np.testing.assert_array_equal(fs.read("a", "frame_indices"), [5, 16, 26])  # middles of 3 segments of 32 frames
    np.testing.assert_allclose(fs.read("a", "timestamps"), np.array([5, 16, 26]) / 30, atol=2e-3)
    assert verify_store(store).ok


def test_verify_cli_on_an_extracted_store_with_a_flipped_byte(extracted, tmp_path):
    store = tmp_path / "copy"
    shutil.copytree(extracted[0], store, symlinks=True)
    assert ff_cli("verify", str(store)).returncode == 0
    shard_dir = next(p for p in sorted(store.rglob("*.zarr")) if p.parent.name == SHARDS_DIR)
    chunk = next(p for p in sorted((shard_dir / "tokens" / "3").rglob("*")) if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0x80  # inside the first frame's token map
    chunk.write_bytes(bytes(data))
    result = ff_cli("verify", str(store))
    assert result.returncode == 1
    assert "'tokens/3' checksum mismatch" in result.stdout


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_zarr_reads_equal_zarrs_own_for_every_row_range(tmp_path, compression):
    """Uncompressed local Zarr arrays are read straight from their chunk files (no zarr call per read);
    whatever the path, every row range must equal what zarr itself returns, across chunk borders, for
    chunks never written (all fill value) and for reads past the end."""
    import zarr

    from freezeframe.store.zarr_backend import CHUNK_BYTES, ZarrBundleReader, ZarrBundleWriter

    rng = np.random.default_rng(0)
    rows_per_chunk = CHUNK_BYTES // (17 * 64 * 2)
    n = 2 * rows_per_chunk + 50
    data = {"tokens": rng.standard_normal((n, 17, 64)).astype(np.float16), "frame_indices": np.arange(n),
            "zeros": np.zeros((n, 3), np.float32), "timestamps": rng.random(n)}
    writer = ZarrBundleWriter(tmp_path / "a.zarr", compression=compression)
    for start in range(0, n, rows_per_chunk + 7):  # appends that do not line up with chunks
        for name, value in data.items():
            writer.append(name, value[start:start + rows_per_chunk + 7])
    writer.close()
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert not any((tmp_path / "a.zarr" / "zeros" / "c").rglob("*"))  # zarr skips all-fill chunks
    reader = ZarrBundleReader(tmp_path / "a.zarr")
    for name, value in data.items():
        for start, stop in [(None, None), (0, 1), (rows_per_chunk - 3, rows_per_chunk + 3), (5, 2 * rows_per_chunk + 9),
                            (n - 1, n), (n - 5, n + 100), (7, 7)]:
            got = reader.read(name, start, stop)
            assert got.dtype == value.dtype
            np.testing.assert_array_equal(got, np.asarray(group[name][start:stop]))
            np.testing.assert_array_equal(got, value[start:stop])
        assert (reader._raw[name] is not None) == (compression == "none"), name
