"""Stores given as fsspec URLs: a real S3-compatible server (moto) on loopback, and fsspec's memory filesystem.

The extraction runs as a separate `freezeframe` process that reaches the server through the usual AWS
variables; everything read back is compared with the same extraction into a local directory.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from freezeframe import open_store
from freezeframe.errors import StoreError
from freezeframe.store import FeatureSetWriter
from freezeframe.store.tools.convert import convert_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate
from freezeframe.store.location import is_remote, store_path

from pathlib import Path

VIDEOS = Path(__file__).parents[1] / "data" / "videos"

FILES = ["short_32frames.mp4", "lowfps_6fps.mp4", "archery_demo.mp4"]
EXTRACT = ["--model", "ff-tiny-vit", "--pretrained", "none", "--features", "embed,tokens", "--layers", "-1",
           "--num-frames", "4", "--shard-size", "2", "--workers", "0", "--no-progress"]
FEATURE_SET = "clip-ff-tiny-vit-random"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (a free port), a bucket, and the environment that points clients at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem().mkdir("bucket")
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def freezeframe(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "freezeframe.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    store = tmp_path_factory.mktemp("local") / "store"
    done = freezeframe("extract", *[VIDEOS / f for f in FILES], "--store", store, *EXTRACT)
    assert done.returncode == 0, done.stderr
    return open_store(store)[FEATURE_SET]


@pytest.fixture(scope="module")
def s3_store(s3):
    url = "s3://bucket/team/store"
    done = freezeframe("extract", *[VIDEOS / f for f in FILES], "--store", url, *EXTRACT, env=s3)
    assert done.returncode == 0, done.stderr
    return url


def assert_same_set(remote, local) -> None:
    assert remote.video_ids() == local.video_ids() == sorted(f.rsplit(".", 1)[0] for f in FILES)
    assert remote.arrays() == local.arrays()
    for video_id in local.video_ids():
        for array in local.arrays():
            np.testing.assert_array_equal(remote.read(video_id, array), local.read(video_id, array), err_msg=array)


def test_extraction_into_s3_reads_back_equal_to_a_local_store(s3_store, local_reference):
    remote = open_store(s3_store)
    assert is_remote(remote.path) and remote.names() == [FEATURE_SET]
    fs = remote[FEATURE_SET]
    assert_same_set(fs, local_reference)
    assert fs.provenance == local_reference.provenance | {"created": fs.provenance["created"]}
    assert len(fs.shard_ids) == 2  # 3 videos, --shard-size 2

    import s3fs

    keys = s3fs.S3FileSystem().find("bucket/team/store")
    # no temporary names on an object store: every shard object sits under its final, committed name
    assert not [key for key in keys if "/.tmp-" in key]
    assert sum(key.endswith(".done.json") for key in keys) == 2


def test_verify_and_inspect_work_on_the_url(s3_store, s3):
    done = freezeframe("verify", s3_store, env=s3)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok: 2 shards, 3 videos checked" in done.stdout
    done = freezeframe("inspect", s3_store, "--json", env=s3)
    assert done.returncode == 0, done.stderr
    assert '"num_videos": 3' in done.stdout


def test_rerun_skips_committed_videos_and_refresh_sees_new_shards(s3):
    url = "s3://bucket/appended"
    done = freezeframe("extract", *[VIDEOS / f for f in FILES[:2]], "--store", url, *EXTRACT, env=s3)
    assert done.returncode == 0, done.stderr
    fs = open_store(url)[FEATURE_SET]
    before = fs.shard_ids
    done = freezeframe("extract", *[VIDEOS / f for f in FILES], "--store", url, *EXTRACT, env=s3)
    assert done.returncode == 0, done.stderr
    assert "stored 1 video" in done.stdout and "2 already committed" in done.stdout
    assert fs.shard_ids == before  # an open reader keeps its view ...
    fs.refresh()  # ... until it refreshes (listings are never cached)
    assert len(fs.shard_ids) == len(before) + 1 and fs.video_ids() == sorted(f.rsplit(".", 1)[0] for f in FILES)


def test_unmarked_shard_on_s3_is_invisible_until_its_marker_is_written(s3, local_reference):
    url = "s3://bucket/commit-protocol"
    writer = FeatureSetWriter(url, "set", local_reference.provenance)
    shard = writer.new_shard()
    assert shard.temp_path == shard.final_path  # written in place: object stores have no rename
    shard.append("v", {"embed": np.ones((3, 4), np.float16)})
    shard.end_video("v")
    shard._flush()  # the shard's arrays are on the server now ...
    assert store_path(url).joinpath("set", "shards", shard.final_path.name).exists()
    fs = open_store(url)["set"]
    assert fs.video_ids() == []  # ... but it is not committed
    shard.commit()
    fs.refresh()
    assert fs.video_ids() == ["v"]
    np.testing.assert_array_equal(fs.read("v", "embed"), np.ones((3, 4), np.float16))
    # an aborted shard leaves nothing behind
    aborted = writer.new_shard()
    aborted.append("w", {"embed": np.zeros((2, 4), np.float16)})
    aborted.end_video("w")
    aborted._flush()
    assert aborted.final_path.exists()
    aborted.abort()
    assert not aborted.final_path.exists()


def test_convert_round_trips_between_s3_and_local_hdf5(s3_store, s3, tmp_path, local_reference):
    local = tmp_path / "as-hdf5"
    report = convert_store(s3_store, local, format="hdf5")
    assert report.ok, report.problems
    assert_same_set(open_store(local)[FEATURE_SET], local_reference)
    back = "s3://bucket/round-trip"
    report = convert_store(local, back, format="zarr", compression="zstd")
    assert report.ok, report.problems
    remote = open_store(back)[FEATURE_SET]
    assert [entry["compression"] for entry in remote.storage()] == ["zstd"]
    assert_same_set(remote, local_reference)


def test_dataloader_workers_read_the_s3_store(s3_store, local_reference):
    ids = local_reference.video_ids()
    dataset = FeatureDataset(s3_store, FEATURE_SET, ids, ["embed"], FrameSelection("all"), labels=list(range(len(ids))))
    loader = DataLoader(dataset, batch_size=1, num_workers=2, collate_fn=collate,
                        multiprocessing_context="spawn")
    seen = {}
    for batch in loader:
        seen[ids[int(batch["index"][0])]] = batch["inputs"]["embed"][0]
    assert sorted(seen) == ids
    for video_id, embed in seen.items():
        torch.testing.assert_close(embed, torch.from_numpy(local_reference.read(video_id, "embed")), rtol=0, atol=0)


def test_memory_urls_work_in_process(run_cli, local_reference):
    url = "memory://freezeframe-tests/store"
    result = run_cli("extract", VIDEOS / FILES[0], "--store", url, *EXTRACT)
    assert result.exit_code == 0, result.output
    fs = open_store(url)[FEATURE_SET]
    np.testing.assert_array_equal(fs.read("short_32frames", "embed"), local_reference.read("short_32frames", "embed"))


def test_what_needs_local_files_says_so(run_cli, s3_store, s3):
    result = run_cli("extract", VIDEOS / FILES[0], "--store", "memory://freezeframe-tests/h5", *EXTRACT,
                     "--format", "hdf5")
    assert result.exit_code == 2
    assert "the HDF5 format" in result.output and "use --format zarr for URLs" in result.output
    result = run_cli("export-memmap", s3_store, "--set", FEATURE_SET)
    assert result.exit_code == 2
    assert result.output.startswith("error: export-memmap needs a store on a local filesystem")
    with pytest.raises(StoreError, match="cannot open store|is not a freezeframe store|does not exist"):
        open_store("nosuchprotocol://bucket/store")
