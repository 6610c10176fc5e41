"""Published stores: a verified, read-only copy with a manifest of sha256 hashes, read through a local cache of what
was read, every fetched file checked against the manifest.

Published into a local directory and into fsspec's memory filesystem (a real fsspec filesystem, in this process);
the source is a real Zarr store written with freezeframe's writer.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
from torch.utils.data import DataLoader

from freezeframe.errors import StoreError
from freezeframe.store import FeatureSetWriter, open_store, verify_store
from freezeframe.store.layout import PUBLISHED_FILE
from freezeframe.store.tools.publish import publish_store
from freezeframe.store.tools.remove import remove_videos
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate

NAME = "fs"
VIDEOS = {f"v{i}": np.arange(12, dtype=np.float16).reshape(3, 4) + i for i in range(8)}


@pytest.fixture
def source(tmp_path) -> Path:
    """A store of 8 videos in 4 shards, one of them with a frozen-weights bundle and a failure record."""
    store = tmp_path / "source"
    writer = FeatureSetWriter(store, NAME, {"backbone": {"model": "tiny"}}, frozen={"w": np.ones((2, 2), np.float32)})
    ids = sorted(VIDEOS)
    for k in range(4):
        shard = writer.new_shard()
        for video_id in ids[2 * k:2 * k + 2]:
            shard.append(video_id, {"embed": VIDEOS[video_id], "timestamps": np.arange(3, dtype=np.float64)})
            shard.end_video(video_id)
        shard.commit()
    writer.record_failure("broken", "/videos/broken.mp4", "no video stream")
    writer.write_index()
    return store


@pytest.fixture
def memory_dest():
    url = f"memory://published/{os.urandom(6).hex()}"
    yield url
    if fsspec.filesystem("memory").exists(url):
        fsspec.filesystem("memory").rm(url, recursive=True)


def assert_same(published, store: Path) -> None:
    reference = open_store(store)[NAME]
    assert published.video_ids() == reference.video_ids() and published.arrays() == reference.arrays()
    for video_id in reference.video_ids():
        for array in reference.arrays():
            np.testing.assert_array_equal(published.read(video_id, array), reference.read(video_id, array))
    assert published.provenance == reference.provenance and published.failures() == reference.failures()
    assert published.frozen_weights().keys() == {"w"}


def test_publish_to_memory_reads_back_equal_fetching_only_what_is_read(source, memory_dest, tmp_path):
    report = publish_store(source, memory_dest)
    assert report.videos == 8
    cache = tmp_path / "cache"
    store = open_store(memory_dest, cache_dir=cache)
    fs = store[NAME]
    np.testing.assert_array_equal(fs.read("v3", "embed"), VIDEOS["v3"])
    fetched = {p.name for p in (store.path / NAME / "shards").iterdir() if p.suffix == ".zarr"}
    assert fetched == {f"{fs.locate('v3').shard}.zarr"}  # one shard of four, not the whole store
    assert_same(fs, source)
    assert verify_store(memory_dest, cache_dir=cache).ok


def test_a_second_read_is_a_cache_hit(source, memory_dest, tmp_path):
    publish_store(source, memory_dest)
    cache = tmp_path / "cache"
    first = open_store(memory_dest, cache_dir=cache)[NAME]
    np.testing.assert_array_equal(first.read("v0", "embed"), VIDEOS["v0"])
    remote = fsspec.filesystem("memory")
    for path in remote.find(memory_dest):
        if "/shards/" in path and ".zarr/" in path:
            remote.rm(path)  # the published shards are gone: only the cache can serve them now
    again = open_store(memory_dest, cache_dir=cache)[NAME]  # a new reader (as a new process would be)
    np.testing.assert_array_equal(again.read("v0", "embed"), VIDEOS["v0"])
    np.testing.assert_array_equal(again.read("v1", "embed"), VIDEOS["v1"])  # same shard: fetched with v0
    with pytest.raises(StoreError, match="missing"):
        again.read("v7", "embed")  # never read before, so never cached


@pytest.mark.parametrize("target", ["chunk", "marker", "index"])
def test_a_tampered_published_file_is_detected_and_never_cached(source, memory_dest, tmp_path, target):
    publish_store(source, memory_dest)
    remote = fsspec.filesystem("memory")
    files = [p for p in remote.find(memory_dest)]
    path = next(p for p in files if (target == "chunk" and "/embed/c/" in p) or
                (target == "marker" and p.endswith(".done.json")) or (target == "index" and p.endswith(".idx")))
    data = bytearray(remote.cat_file(path))
    data[-1] ^= 1
    remote.pipe_file(path, bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(StoreError, match="differs from the manifest"):
        store = open_store(memory_dest, cache_dir=cache)
        for video_id in VIDEOS:
            store[NAME].read(video_id, "embed")
    relative = path.split(memory_dest[len("memory:/"):] + "/", 1)[1]
    assert not [p for p in cache.rglob("*") if p.as_posix().endswith(relative)]


def test_publish_to_a_directory_is_read_only_and_serves_dataloader_workers(source, tmp_path, monkeypatch):
    dest = tmp_path / "published"
    result = subprocess.run([sys.executable, "-m", "freezeframe.cli", "publish", str(source), str(dest)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = (dest / PUBLISHED_FILE).read_bytes()
    import hashlib

    assert f"manifest sha256 {hashlib.sha256(manifest).hexdigest()}" in result.stdout
    assert not [f for f in json.loads(manifest)["files"] if "claims" in f or "memmap" in f]
    assert all(stat.S_IMODE(p.stat().st_mode) in (0o444, 0o555) for p in dest.rglob("*"))
    monkeypatch.setenv("FREEZEFRAME_CACHE_DIR", str(tmp_path / "cache"))
    assert_same(open_store(dest)[NAME], source)
    data = FeatureDataset(dest, NAME, sorted(VIDEOS), ["embed"], FrameSelection("all"))
    batches = list(DataLoader(data, batch_size=4, num_workers=2, collate_fn=collate))
    np.testing.assert_array_equal(np.concatenate([b["inputs"]["embed"].numpy() for b in batches]),
                                  np.stack([VIDEOS[v] for v in sorted(VIDEOS)]))
    with pytest.raises(StoreError, match="read-only"):
        FeatureSetWriter(dest, NAME, {"backbone": {"model": "tiny"}})
    with pytest.raises(StoreError, match="read-only"):
        remove_videos(dest, NAME, ["v0"])


def test_publish_refuses_a_store_that_fails_verify_and_a_non_empty_destination(source, tmp_path, memory_dest):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "something").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        publish_store(source, str(dest))
    chunk = next(p for p in source.rglob("embed/c/*/*") if p.is_file())
    chunk.write_bytes(b"\0" * len(chunk.read_bytes()))
    with pytest.raises(StoreError, match="fails verification"):
        publish_store(source, memory_dest)
    assert not fsspec.filesystem("memory").exists(f"{memory_dest}/{PUBLISHED_FILE}")
