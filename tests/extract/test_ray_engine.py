"""The Ray engine on a real local Ray cluster (2 CPUs, shared by this module): the same store as local extraction,
failures recorded by the driver, a killed actor retried with nothing lost or duplicated, reruns skipping what is
committed. Real sample videos and the bundled tiny model with random weights.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner

from faults import FAULT_VIDEOS, FEATURE_SET, VIDEOS, extract_args, markers, shards_dir, stored_counts
from freezeframe.cli import main
from freezeframe.extract import ClipConfig, ExtractConfig, SamplingConfig, collect_sources
from freezeframe.extract.ray_engine import RayConfig, WorkerError, run_ray_extraction
from freezeframe.store import open_store, verify_store
from freezeframe.store.layout import INDEX_DIR, TEMP_PREFIX
from freezeframe.store.segment import Segment
from freezeframe.summary import plural

ALL = sorted(p for p in VIDEOS.iterdir() if p.suffix in (".mp4", ".avi"))
IDS = [p.stem for p in ALL]
RAY = ("--engine", "ray", "--ray-workers", "2")
FAULT_INPUTS = [VIDEOS / name for name in FAULT_VIDEOS]
FAULT_IDS = [Path(name).stem for name in FAULT_VIDEOS]
TINY_CLIP = ClipConfig(model="ff-tiny-vit", pretrained="none", features=("embed", "tokens"), layers=(-1,))


def tiny_config(store: Path) -> ExtractConfig:
    """The settings of tests/faults.py's TINY_OPTIONS with shards of two videos, for the Python API."""
    return ExtractConfig(store=str(store), sampling=SamplingConfig("fps", fps=2), batch_size=1, workers=0,
                         shard_size=2, progress=False)


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    """One real local Ray cluster for the module."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """Local extraction of the eight sample videos."""
    store = tmp_path_factory.mktemp("local") / "store"
    result = CliRunner().invoke(main, ["extract", *extract_args(ALL, store, 1)])
    assert result.exit_code == 0, result.output
    return store


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory):
    """Ray extraction of the eight sample videos and one corrupt file: (store, CLI result)."""
    root = tmp_path_factory.mktemp("ray")
    corrupt = root / "inputs" / "corrupt.mp4"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    store = root / "store"
    result = CliRunner().invoke(main, ["extract", *extract_args([*ALL, corrupt], store, 2, *RAY)])
    return store, result, corrupt


def assert_same_as(store: Path, reference: Path, ids: list[str]) -> None:
    """The store holds exactly `ids`, each once, every array of every video equal to the reference's."""
    fs, ref = open_store(store)[FEATURE_SET], open_store(reference)[FEATURE_SET]
    assert fs.video_ids() == sorted(ids)
    assert sorted(stored_counts(store).items()) == [(video_id, 1) for video_id in sorted(ids)]
    assert fs.arrays() == ref.arrays() and len(fs.arrays()) >= 4  # embed, tokens of one block, timestamps, indices
    for video_id in ids:
        for array in fs.arrays():
            np.testing.assert_array_equal(fs.read(video_id, array), ref.read(video_id, array),
                                          err_msg=f"{video_id}/{array}")


def failure_records(store: Path) -> list[dict]:
    path = store / FEATURE_SET / "failures.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_ray_extraction_equals_local_and_the_driver_records_failures(ray_run, reference, run_cli):
    store, result, corrupt = ray_run
    assert result.exit_code == 1, result.output  # one video failed; the other eight are stored
    assert "stored 8 videos" in result.output and "1 of 9 videos failed" in result.output
    assert_same_as(store, reference, IDS)
    records = failure_records(store)
    assert [(r["video_id"], r["path"]) for r in records] == [("corrupt", str(corrupt))]
    # the driver wrote the index; actors wrote the shards (none of them in this, the driver's, process)
    (segment,) = (store / FEATURE_SET / INDEX_DIR).iterdir()
    index = Segment.open(segment)
    assert index.ids() == sorted(IDS) and index.shard_ids == sorted(markers(store))
    writers = {marker["writer"] for marker in markers(store).values()}
    assert writers and all(not w.endswith(f".{os.getpid()}") for w in writers), writers
    assert [p.name for p in shards_dir(store).iterdir() if p.name.startswith(TEMP_PREFIX)] == []
    verified = run_cli("verify", store)
    assert verified.exit_code == 0, verified.output
    assert verify_store(store).ok and not verify_store(store).warnings


def test_rerun_on_ray_skips_committed_videos(ray_run, tmp_path, run_cli):
    source, _result, corrupt = ray_run
    store = tmp_path / "store"
    shutil.copytree(source, store)
    before = markers(store)
    # only the corrupt file is left to do: it goes to an actor and fails again, the same failure (not a new line)
    result = run_cli("extract", *extract_args([*ALL, corrupt], store, 2, *RAY))
    assert result.exit_code == 1, result.output
    assert "stored 0 videos (0 frames)" in result.output and "8 already committed" in result.output
    assert markers(store) == before
    assert [r["video_id"] for r in failure_records(store)] == ["corrupt"]
    # with only the good videos, nothing is left: nothing runs
    result = run_cli("extract", *extract_args(ALL, store, 2, *RAY))
    assert result.exit_code == 0, result.output
    assert "stored 0 videos (0 frames)" in result.output and "8 already committed" in result.output
    assert markers(store) == before


def test_an_actor_killed_mid_shard_is_retried_and_the_store_stays_valid(reference, tmp_path):
    """SIGKILL inside the actor, once, after it wrote part of its first shard (a half-written temporary): Ray
    restarts the actor and retries the shard. (A kill after a commit: the next test.)"""
    died = tmp_path / "died"
    env = {"FREEZEFRAME_FAULT": "shard.array:2", "FREEZEFRAME_FAULT_ONCE": str(died)}
    report = run_ray_extraction(collect_sources(FAULT_INPUTS), TINY_CLIP, tiny_config(tmp_path / "store"),
                                RayConfig(workers=1, runtime_env={"env_vars": env}))
    assert died.exists()  # the actor reached the kill point (and was SIGKILLed there)
    assert report.failures == [] and report.stored == len(FAULT_IDS)
    store = tmp_path / "store"
    assert_same_as(store, reference, FAULT_IDS)
    verified = verify_store(store)
    assert verified.ok and not verified.warnings, (verified.problems, verified.warnings)
    leftovers = [p.name for d in (store / FEATURE_SET, shards_dir(store)) for p in d.iterdir()
                 if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == []
    assert list((store / FEATURE_SET / "claims").glob("*.json")) == []


def test_actors_that_keep_dying_stop_the_run_with_one_sentence_and_a_rerun_finishes(reference, tmp_path):
    """Every actor process dies after its first commit, before returning the summary: the retry on the restarted
    actor finds that shard committed and stores it no second time; past the restart limit the run stops with
    WorkerError; what was committed is valid, and a rerun (the local engine: same provenance) finishes the store."""
    store = tmp_path / "store"
    env = {"FREEZEFRAME_FAULT": "committed:1"}
    with pytest.raises(WorkerError, match="died 2 times .* a rerun finishes the rest"):
        run_ray_extraction(collect_sources(FAULT_INPUTS), TINY_CLIP, tiny_config(store),
                           RayConfig(workers=1, max_restarts=1, max_task_retries=1, runtime_env={"env_vars": env}))
    committed = open_store(store)[FEATURE_SET].video_ids()
    assert 2 <= len(committed) < len(FAULT_IDS)  # each death committed a shard first; the retry skipped it
    assert verify_store(store).ok
    assert_same_as(store, reference, committed)
    result = CliRunner().invoke(main, ["extract", *extract_args(FAULT_INPUTS, store, 2)])
    assert result.exit_code == 0, result.output
    assert f"stored {plural(len(FAULT_IDS) - len(committed), 'video')} (" in result.output
    assert_same_as(store, reference, FAULT_IDS)


def test_ray_options_need_the_ray_engine(run_cli, tmp_path):
    video = VIDEOS / "short_32frames.mp4"
    result = run_cli("extract", video, "--store", tmp_path / "s", "--ray-workers", "2", "--gpus-per-worker", "1")
    assert result.exit_code == 2 and "--gpus-per-worker and --ray-workers need --engine ray" in result.output
    result = run_cli("extract", video, "--store", tmp_path / "s", "--engine", "ray", "--device", "cpu")
    assert result.exit_code == 2 and "--device is for --engine local" in result.output
    assert not (tmp_path / "s").exists()


def test_an_actor_on_another_machine_leaves_live_peers_claims_alone(tmp_path):
    """Actors claim with the driver's identity (its host and pid) from other machines: a peer writer on the
    driver's host whose pid happens not to exist where the actor runs is judged by its heartbeat, not killed off."""
    import subprocess
    import sys

    from freezeframe.store.claims import ClaimOwner, Claims

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    peer_pid = int(gone.stdout)  # no such process here; on the driver's machine it is a live writer
    peer = Claims(tmp_path, ClaimOwner("driver-machine", peer_pid, f"driver-machine.{peer_pid}.aa"))
    peer.register()
    assert peer.claim(["v1"]) == ["v1"]
    actor = Claims(tmp_path, ClaimOwner("driver-machine", 4242, "driver-machine.4242.bb"))  # the driver's claims
    actor.register()
    assert actor.claim(["v1", "v2"]) == ["v2"]
    assert actor.sort_out(["v1"]) == ([], ["v1"])
