"""Hostile inputs, round two: published stores fetched safely, array metadata that cannot hang or balloon a read,
an index that cannot serve another video's rows, output that cannot forge a line, every library error one line.

Each case builds a small real store (Zarr or HDF5, written by freezeframe's writer; published with `publish`),
damages it as an attacker would, then runs the readers under a deadline, in a subprocess with a capped address
space (RLIMIT_AS) where memory is the point.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_hostile_stores import SECRET, _run_limited, deadline, refused_within

from freezeframe.errors import StoreError
from freezeframe.store import FeatureSetWriter, open_store, verify_store
from freezeframe.store.layout import PUBLISHED_FILE, PUBLISHING_FILE
from freezeframe.store.tools.publish import publish_store

NAME = "fs"
VIDEOS = {f"v{i}": np.arange(12, dtype=np.float16).reshape(3, 4) + i for i in range(4)}


def write_store(path: Path, fmt: str = "zarr", per_shard: int = 2) -> Path:
    """A store of the four VIDEOS, `per_shard` videos in each shard."""
    writer = FeatureSetWriter(path, NAME, {"backbone": {"model": "tiny"}}, format=fmt)
    ids = sorted(VIDEOS)
    for k in range(0, len(ids), per_shard):
        shard = writer.new_shard()
        for video_id in ids[k:k + per_shard]:
            shard.append(video_id, {"embed": VIDEOS[video_id]})
            shard.end_video(video_id)
        shard.commit()
    writer.write_index()
    return path


def one_line_error(run_cli, *args) -> str:
    result = run_cli(*args)
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# ---- 1. fetching a published store -------------------------------------------------------------------------------

@pytest.fixture
def published(tmp_path) -> Path:
    """A store published into a local directory, made writable again so that a test can play the attacker."""
    dest = tmp_path / "published"
    publish_store(write_store(tmp_path / "source"), str(dest))
    for path in [dest, *dest.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    return dest


def a_chunk(dest: Path) -> tuple[Path, str]:
    """(path, manifest name) of one published chunk of `embed`."""
    path = next(p for p in sorted(dest.rglob("*")) if p.parent.name == "0" and p.parent.parent.name == "c")
    return path, path.relative_to(dest).as_posix()


def relist(dest: Path, relative: str, data: bytes | None = None, size: int | None = None) -> None:
    """Make the manifest vouch for `relative` as `data` (the attacker writes the manifest too)."""
    manifest = json.loads((dest / PUBLISHED_FILE).read_text())
    entry = manifest["files"][relative]
    if data is not None:
        entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    if size is not None:
        entry["size"] = size
    (dest / PUBLISHED_FILE).write_text(json.dumps(manifest))


def read_all(dest: Path, cache: Path) -> None:
    store = open_store(dest, cache_dir=cache)
    for video_id in VIDEOS:
        store[NAME].read(video_id, "embed")


def test_a_published_file_linked_to_a_host_file_never_enters_the_cache(published, tmp_path):
    outside = tmp_path / "host-file"
    outside.write_bytes(SECRET)
    chunk, relative = a_chunk(published)
    chunk.unlink()
    chunk.symlink_to(outside)
    relist(published, relative, SECRET)  # its hash is known to the attacker: a hash check alone would let it in
    with deadline(20), pytest.raises(StoreError, match="symbolic link"):
        read_all(published, tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and SECRET[:18] in p.read_bytes()]


def test_a_published_folder_linked_elsewhere_is_refused(published, tmp_path):
    chunk, relative = a_chunk(published)
    elsewhere = tmp_path / "elsewhere"
    chunk.parent.rename(elsewhere)
    chunk.parent.symlink_to(elsewhere)  # the file itself is regular; a folder on its path is the link
    with deadline(20), pytest.raises(StoreError, match="symbolic link"):
        read_all(published, tmp_path / "cache")


def test_a_published_link_to_dev_zero_and_a_sparse_giant_are_cut_off(published, tmp_path):
    chunk, _ = a_chunk(published)
    sparse = next(p for p in published.rglob("*") if p.is_file() and p.parent.name == "0" and p != chunk)
    chunk.unlink()
    chunk.symlink_to("/dev/zero")
    with open(sparse, "r+b") as handle:
        handle.truncate(8 << 30)  # 8 GiB on the filesystem, a few bytes on disk
    code = f"""
        from pathlib import Path
        from freezeframe.errors import StoreError
        from freezeframe.store import open_store
        store = open_store({str(published)!r}, cache_dir={str(tmp_path / "cache")!r})
        for video_id in {sorted(VIDEOS)!r}:
            try:
                store["fs"].read(video_id, "embed")
                print("read", video_id)
            except StoreError as exc:
                print("refused:", exc)
    """
    result = _run_limited(code, address_space_mb=3072, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "symbolic link" in result.stdout and "larger than the" in result.stdout, result.stdout
    assert result.stdout.count("refused:") == 4  # two shards of two videos each, both refused


def test_a_published_fifo_is_refused_without_waiting(published, tmp_path, run_cli):
    provenance = published / NAME / "provenance.json"
    provenance.unlink()
    os.mkfifo(provenance)
    with deadline(20):
        line = one_line_error(run_cli, "inspect", published)
    assert "not a regular file" in line and "FIFO" in line


def test_a_manifest_listing_a_file_and_a_folder_of_one_name_is_one_line(published, tmp_path, run_cli, monkeypatch):
    manifest = json.loads((published / PUBLISHED_FILE).read_text())
    manifest["files"]["fs/provenance.json/x"] = {"size": 1, "sha256": "0" * 64}
    (published / PUBLISHED_FILE).write_text(json.dumps(manifest))
    monkeypatch.setenv("FREEZEFRAME_CACHE_DIR", str(tmp_path / "cache"))
    assert "both as a file and as a folder" in one_line_error(run_cli, "inspect", published)


def test_verify_compares_every_cached_file_with_the_manifest(published, tmp_path):
    cache = tmp_path / "cache"
    read_all(published, cache)
    assert verify_store(published, cache_dir=cache).ok
    mirror = open_store(published, cache_dir=cache).path
    markers = sorted((mirror / NAME / "shards").glob("*.done.json"))
    chunks = [next(mirror.glob(f"{NAME}/shards/{m.name[:-10]}.zarr/embed/c/0/0")) for m in markers]
    # an edited cached chunk with its marker edited to match: every check against the markers passes
    chunks[0].write_bytes(chunks[1].read_bytes())
    first, second = (json.loads(m.read_text()) for m in markers)
    first["arrays"]["embed"]["sha256"] = second["arrays"]["embed"]["sha256"]
    markers[0].write_text(json.dumps(first))
    (mirror / NAME / "shards" / "stray.txt").write_bytes(b"added")
    problems = verify_store(published, cache_dir=cache).problems
    assert any("differs from the manifest" in p and chunks[0].relative_to(mirror).as_posix() in p for p in problems)
    assert any("differs from the manifest" in p and markers[0].name in p for p in problems)
    assert any("stray.txt is not in the manifest" in p for p in problems)
    quick = verify_store(published, quick=True, cache_dir=cache).problems
    assert any(markers[0].name in p for p in quick)  # sizes alone: the edited marker's size changed


def test_a_publish_killed_midway_is_recognised_as_incomplete(tmp_path):
    source = write_store(tmp_path / "source")
    dest = tmp_path / "dest"
    result = subprocess.run([sys.executable, "-m", "freezeframe.cli", "publish", str(source), str(dest)],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "FREEZEFRAME_FAULT": "publish.file:6"})
    assert result.returncode == -9, result.stderr
    assert (dest / PUBLISHING_FILE).exists() and not (dest / PUBLISHED_FILE).exists()
    with pytest.raises(StoreError, match="incomplete published store"):
        open_store(dest, cache_dir=tmp_path / "cache")
    with pytest.raises(StoreError, match="read-only"):
        FeatureSetWriter(dest, NAME, {"backbone": {"model": "tiny"}})
    finished = tmp_path / "finished"
    publish_store(source, str(finished))
    assert not (finished / PUBLISHING_FILE).exists()
    np.testing.assert_array_equal(open_store(finished, cache_dir=tmp_path / "c2")[NAME].read("v2", "embed"),
                                  VIDEOS["v2"])


# ---- 2. array metadata that lies, 3. memory bounded by what is asked, decompressed ---------------------------------

def embed_meta(store: Path) -> Path:
    return next(store.glob(f"{NAME}/shards/*.zarr/embed/zarr.json"))


@pytest.mark.parametrize("chunk_rows", [0, -1, 1 << 40])
def test_a_chunk_grid_that_lies_is_one_line_before_any_read(tmp_path, run_cli, chunk_rows):
    store = write_store(tmp_path / "store", per_shard=4)
    meta = json.loads(embed_meta(store).read_text())
    meta["chunk_grid"]["configuration"]["chunk_shape"][0] = chunk_rows
    embed_meta(store).write_text(json.dumps(meta))
    with deadline(20):
        line = one_line_error(run_cli, "export-npy", store, tmp_path / "out", "--set", NAME)
        with pytest.raises(StoreError, match="chunk"):
            open_store(store)[NAME].read("v1", "embed")
        assert any("chunk" in p for p in verify_store(store).problems)
    assert "chunk" in line


def test_an_hdf5_chunk_far_larger_than_its_array_is_refused(tmp_path):
    import h5py

    store = write_store(tmp_path / "store", fmt="hdf5", per_shard=4)
    bundle = next(store.glob(f"{NAME}/shards/*.h5"))
    with h5py.File(bundle, "a") as f:
        data = f["embed"][:]
        del f["embed"]
        f.create_dataset("embed", data=data, maxshape=(None, 4), chunks=(1 << 24, 4))  # one 128 MiB chunk, 12 rows
    with deadline(20), pytest.raises(StoreError, match="larger than the 12 rows"):
        open_store(store)[NAME].read("v1", "embed")


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_a_zstd_chunk_inflating_past_its_chunk_is_refused_before_decompressing(tmp_path, fmt):
    import h5py
    import numcodecs

    store = tmp_path / "store"
    writer = FeatureSetWriter(store, NAME, {"backbone": {"model": "tiny"}}, format=fmt, compression="zstd")
    shard = writer.new_shard()
    shard.append("v0", {"embed": VIDEOS["v0"]})
    shard.end_video("v0")
    shard.commit()
    writer.write_index()
    bomb = bytes(numcodecs.Zstd(level=1).encode(np.zeros(1536 << 20, np.uint8)))  # 48 KB that inflate to 1.5 GiB
    if fmt == "zarr":
        next(store.glob(f"{NAME}/shards/*.zarr/embed/c/0/0")).write_bytes(bomb)
    else:  # (HDF5's filter allocates what the header says)
        with h5py.File(next(store.glob(f"{NAME}/shards/*.h5")), "a") as f:
            f["embed"].id.write_direct_chunk((0, 0), bomb, filter_mask=0)
    out = refused_within("from freezeframe.store import open_store",
                         f"open_store({str(store)!r})[{NAME!r}].read('v0', 'embed')", "StoreError",
                         address_space_mb=1024)
    assert "1610612736 bytes decompressed" in out, out


def test_a_label_file_of_one_huge_field_stops_at_the_line_limit(tmp_path):
    labels = tmp_path / "labels.csv"
    with open(labels, "wb") as handle:
        handle.write(b"video_id,label\nv0,")
        handle.truncate(1 << 30)  # one 1 GiB field (sparse on disk)
    out = refused_within("from freezeframe.userfiles import read_labels", f"read_labels({str(labels)!r})",
                         "FreezeframeError", address_space_mb=1024)
    assert "labels.csv:2: a line longer than" in out, out


# ---- 4. an index segment is a cache, never the truth ---------------------------------------------------------------

def segment_path(store: Path) -> Path:
    (path,) = store.glob(f"{NAME}/index/*.idx")
    return path


def patch_column(store: Path, column: str, dtype: str, change) -> None:
    """Edit one column of the feature set's index segment in place, as an attacker with a hex editor would."""
    path = segment_path(store)
    data = bytearray(path.read_bytes())
    length = int.from_bytes(data[8:16], "little")
    offset, count = json.loads(bytes(data[16:16 + length]))["columns"][column]
    change(np.frombuffer(data, dtype, count, -(-(16 + length) // 64) * 64 + offset))
    path.write_bytes(bytes(data))


def add_ghost(store: Path) -> None:
    from freezeframe.store.segment import Segment

    segment = Segment.open(segment_path(store))
    keys = segment.keys() + [b"ghost"]
    column = {name: np.append(segment.columns[name], value) for name, value in
              (("shard", 0), ("row_start", 0), ("n_rows", 3))}
    shards = {shard_id: segment.shard_info(i) for i, shard_id in enumerate(segment.shard_ids)}
    ghostly = Segment.build(keys, column["shard"], column["row_start"], column["n_rows"], shards, [])[0]
    segment_path(store).write_bytes(ghostly.to_bytes())


def swap_starts(store: Path) -> None:
    def swap(starts):
        starts[[1, 2]] = starts[[2, 1]]
    patch_column(store, "row_start", "<i8", swap)


def list_twice(store: Path) -> None:
    def rename(id_bytes):
        id_bytes[-1] = ord("2")  # "v3" becomes a second "v2": v3 vanishes from the listing
    patch_column(store, "id_bytes", "u1", rename)


@pytest.mark.parametrize("damage", [swap_starts, add_ghost, list_twice])
def test_readers_never_serve_rows_the_markers_do_not_vouch_for(tmp_path, run_cli, damage):
    from freezeframe.train.datasets import FeatureDataset, FrameSelection

    store = write_store(tmp_path / "store", per_shard=4)
    damage(store)
    assert not verify_store(store, quick=True).ok  # what verify already caught; the readers now agree
    fs = open_store(store)[NAME]
    for video_id, rows in VIDEOS.items():
        np.testing.assert_array_equal(fs.read(video_id, "embed"), rows)
    with pytest.raises(KeyError):
        open_store(store)[NAME].read("ghost", "embed")
    dataset = FeatureDataset(store, NAME, sorted(VIDEOS), ["embed"], FrameSelection("all"))
    for i, video_id in enumerate(sorted(VIDEOS)):
        np.testing.assert_array_equal(dataset[i]["inputs"]["embed"].numpy(), VIDEOS[video_id])
    result = run_cli("export-npy", store, tmp_path / "out", "--set", NAME)
    assert result.exit_code == 0, result.output
    exported = json.loads((tmp_path / "out" / "export.json").read_text())["videos"]
    assert sorted(exported) == sorted(VIDEOS)
    for video_id, rows in VIDEOS.items():
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{video_id}_embed.npy"), rows)


# ---- 5. output that cannot forge a line ------------------------------------------------------------------------------

HOSTILE = "bad\x1b]0;pwned\x07\x1b[2J\r\nerror: forged \u202e"  # sets the title, clears the screen, forges a line


def assert_unforged(output: str) -> None:
    assert not any(char in output for char in "\x1b\x07\r\u202e"), repr(output)
    assert not [line for line in output.splitlines() if line.startswith("error: forged")], output


def test_names_from_files_and_stores_never_forge_a_line(tmp_path, sample_videos, tiny_model_name, run_cli):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "good.mp4").write_bytes(sample_videos["short_32frames.mp4"].read_bytes())
    (videos / f"{HOSTILE}.mp4").write_bytes(b"not a video at all")
    store = tmp_path / "store"
    result = run_cli("extract", videos, "--store", store, "--model", tiny_model_name, "--pretrained", "none",
                     "--num-frames", "2", "--workers", "1", "--no-progress")
    assert result.exit_code == 1, result.output
    assert "failed: bad\\x1b]0;pwned\\x07\\x1b[2J\\r\\nerror: forged \\u202e" in result.output
    assert_unforged(result.output)
    (name,) = open_store(store).names()
    (record,) = [json.loads(line) for line in (store / name / "failures.jsonl").read_text().splitlines()]
    assert record["video_id"] == HOSTILE  # failures.jsonl stays exact JSON
    provenance = store / name / "provenance.json"
    provenance.write_text(json.dumps({**json.loads(provenance.read_text()), "backbone": {"model": HOSTILE}}))
    inspected = run_cli("inspect", store)
    assert inspected.exit_code == 0 and "bad\\x1b" in inspected.output
    assert_unforged(inspected.output)
    assert json.loads(run_cli("inspect", store, "--json").output)["feature_sets"][name]["provenance"]["backbone"] \
        == {"model": HOSTILE}
    assert "\\r\\nerror: forged" in one_line_error(run_cli, "inspect", tmp_path / HOSTILE)
    assert_unforged(run_cli("inspect", tmp_path / HOSTILE).output)


# ---- 6. every library error is one line ------------------------------------------------------------------------------

def zarr_meta_edit(change):
    def damage(store: Path) -> None:
        meta = json.loads(embed_meta(store).read_text())
        change(meta)
        embed_meta(store).write_text(json.dumps(meta))
    return damage


def empty_h5(store: Path) -> None:
    next(store.glob(f"{NAME}/shards/*.h5")).write_bytes(b"")


def zip_h5(store: Path) -> None:
    import zipfile

    with zipfile.ZipFile(next(store.glob(f"{NAME}/shards/*.h5")), "w") as archive:
        archive.writestr("embed.npy", b"\x93NUMPY")


DAMAGED_FILES = {
    "zarr fill value": ("zarr", "zstd", zarr_meta_edit(lambda m: m.update(fill_value="not a number"))),
    "zarr codec and dtype at odds": ("zarr", "none", zarr_meta_edit(lambda m: m["codecs"].append(
        {"name": "zstd", "configuration": {"level": 3, "checksum": False}}))),
    "zarr unknown codec": ("zarr", "zstd", zarr_meta_edit(lambda m: m["codecs"].append({"name": "evil"}))),
    "zarr bad data type": ("zarr", "none", zarr_meta_edit(lambda m: m.update(data_type="complex-float16"))),
    "0-byte .h5": ("hdf5", "none", empty_h5),
    "zip named .h5": ("hdf5", "none", zip_h5),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_FILES))
def test_whatever_a_damaged_shard_makes_a_library_raise_is_one_line(tmp_path, run_cli, case):
    from freezeframe.train.datasets import FeatureDataset, FrameSelection

    fmt, compression, damage = DAMAGED_FILES[case]
    writer = FeatureSetWriter(tmp_path / "store", NAME, {"backbone": {"model": "tiny"}}, format=fmt,
                              compression=compression)
    shard = writer.new_shard()
    shard.append("v0", {"embed": VIDEOS["v0"]})
    shard.end_video("v0")
    shard.commit()
    writer.write_index()
    store = tmp_path / "store"
    damage(store)
    with deadline(20):
        line = one_line_error(run_cli, "export-npy", store, tmp_path / "out", "--set", NAME)
        with pytest.raises(StoreError, match="shards"):
            open_store(store)[NAME].read("v0", "embed")
        with pytest.raises(StoreError):
            FeatureDataset(store, NAME, ["v0"], ["embed"], FrameSelection("all"))[0]
    assert "/shards/" in line


# ---- 7. rm while another process extracts into the same set --------------------------------------------------------

def test_rm_while_another_process_extracts_into_the_same_set(tmp_path, sample_videos, tiny_model_name, run_cli):
    import time

    names = sorted(sample_videos)
    store = tmp_path / "store"
    common = ["--store", str(store), "--model", tiny_model_name, "--pretrained", "none", "--num-frames", "2",
              "--name", NAME, "--no-progress", "--shard-size", "1"]
    first = [sample_videos[n] for n in names[:3]]
    assert run_cli("extract", *first, *common, "--workers", "0").exit_code == 0
    fs = open_store(store)[NAME]
    kept = {v: fs.read(v, "embed") for v in fs.video_ids()}
    gone = sorted(kept)[0]
    del kept[gone]
    shards = store / NAME / "shards"
    before = len(list(shards.glob("*.done.json")))
    rest = [str(sample_videos[n]) for n in names[3:]]
    extract = subprocess.Popen([sys.executable, "-m", "freezeframe.cli", "extract", *rest, *common, "--workers", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline_s = time.monotonic() + 240
        while len(list(shards.glob("*.done.json"))) == before and extract.poll() is None:
            assert time.monotonic() < deadline_s, "the extraction committed nothing"
            time.sleep(0.05)
        result = run_cli("rm", store, NAME, "--videos", gone, "--yes")  # while the extraction goes on
        assert result.exit_code == 0, result.output
        output, _ = extract.communicate(timeout=240)
    finally:
        extract.kill()
    assert extract.returncode == 0, output
    assert "removed 1 video" in result.output
    fs = open_store(store)[NAME]
    assert sorted(fs.video_ids()) == sorted([*kept, *(Path(p).stem for p in rest)])
    for video_id, rows in kept.items():
        np.testing.assert_array_equal(fs.read(video_id, "embed"), rows)
    report = verify_store(store)
    assert report.ok, report.problems


# ---- issue 25, item 7: shared stores read by the chunk --------------------------------------------------------------

def test_reading_one_array_of_a_published_store_fetches_only_its_chunks(tmp_path):
    import fsspec

    store = tmp_path / "store"
    writer = FeatureSetWriter(store, NAME, {"backbone": {"model": "tiny"}})
    shard = writer.new_shard()
    tokens = {v: np.full((3, 64, 32), i, np.float16) for i, v in enumerate(sorted(VIDEOS))}
    for video_id in sorted(VIDEOS):
        shard.append(video_id, {"embed": VIDEOS[video_id], "tokens/11": tokens[video_id]})
        shard.end_video(video_id)
    shard.commit()
    writer.write_index()
    url = f"memory://chunked/{os.urandom(6).hex()}"
    publish_store(store, url)
    try:
        cache = tmp_path / "cache"
        fs = open_store(url, cache_dir=cache)[NAME]
        np.testing.assert_array_equal(fs.read("v2", "embed"), VIDEOS["v2"])
        fetched = [p for p in cache.rglob("*") if p.is_file() and "/shards/" in p.as_posix()]
        assert fetched and not [p for p in fetched if "/tokens/11/c/" in p.as_posix()]  # no token chunk
        assert sum(p.stat().st_size for p in fetched) < 8192  # markers and metadata; the tokens are 48 KiB
        np.testing.assert_array_equal(fs.read("v3", "tokens/11"), tokens["v3"])  # fetched when read
        again = open_store(url, cache_dir=cache)[NAME]  # a later process: the cache serves what was fetched
        np.testing.assert_array_equal(again.read("v1", "tokens/11"), tokens["v1"])
        assert verify_store(url, cache_dir=cache).ok
    finally:
        fsspec.filesystem("memory").rm(url, recursive=True)


def test_publish_arrays_shares_only_the_arrays_asked_for(tmp_path, run_cli, monkeypatch):
    store = tmp_path / "store"
    writer = FeatureSetWriter(store, NAME, {"backbone": {"model": "tiny"}})
    tokens = {v: np.full((3, 8, 4), i, np.float16) for i, v in enumerate(sorted(VIDEOS))}
    for k in (0, 2):
        shard = writer.new_shard()
        for video_id in sorted(VIDEOS)[k:k + 2]:
            shard.append(video_id, {"embed": VIDEOS[video_id], "tokens/11": tokens[video_id]})
            shard.end_video(video_id)
        shard.commit()
    writer.write_index()
    monkeypatch.setenv("FREEZEFRAME_CACHE_DIR", str(tmp_path / "cache"))
    for shared, left_out in (("embed", "tokens/11"), ("tokens/11", "embed")):
        dest = tmp_path / f"pub-{left_out.replace('/', '-')}"
        result = run_cli("publish", store, dest, "--arrays", shared)
        assert result.exit_code == 0, result.output
        listed = json.loads((dest / PUBLISHED_FILE).read_text())["files"]
        assert not [f for f in listed if f"/{left_out}/" in f]
        fs = open_store(dest)[NAME]
        assert list(fs.arrays()) == [shared]
        for video_id in VIDEOS:
            expected = VIDEOS[video_id] if shared == "embed" else tokens[video_id]
            np.testing.assert_array_equal(fs.read(video_id, shared), expected)
        with pytest.raises(KeyError):
            fs.read("v0", left_out)
        assert verify_store(dest).ok
    assert "no array 'nope'" in one_line_error(run_cli, "publish", store, tmp_path / "x", "--arrays", "nope")
    h5 = write_store(tmp_path / "h5", fmt="hdf5")
    assert "HDF5 shard" in one_line_error(run_cli, "publish", h5, tmp_path / "y", "--arrays", "embed")
