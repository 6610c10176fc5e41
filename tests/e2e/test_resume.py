"""Resume and crash safety of real extractions: reruns skip committed videos, a SIGKILLed run resumes to the
same store an uninterrupted run makes, and a writer that crashes mid-commit leaves no visible partial shard.

Every run is a real `python -m freezeframe.cli extract` subprocess with the bundled tiny model.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from freezeframe.store import open_store, verify_store
from freezeframe.store.layout import MARKER_SUFFIX, SHARDS_DIR, TEMP_PREFIX

REPO = Path(__file__).resolve().parents[2]
VIDEOS = REPO / "tests" / "data" / "videos"
SAMPLES = sorted(p for p in VIDEOS.iterdir() if p.suffix in (".mp4", ".avi"))
EXTRACT_OPTIONS = ["--model", "ff-tiny-vit", "--pretrained", "none", "--features", "embed,tokens", "--layers", "-1",
                   "--num-frames", "4", "--batch-size", "4", "--shard-size", "1", "--workers", "1", "--no-progress"]
FEATURE_SET = "clip-ff-tiny-vit-random"
EXACT_ARRAYS = ("timestamps", "frame_indices")


def extract_command(inputs: Path, store: Path, python_code: str | None = None) -> list[str]:
    head = [sys.executable, "-c", python_code] if python_code else [sys.executable, "-m", "freezeframe.cli"]
    return [*head, "extract", str(inputs), "--store", str(store), *EXTRACT_OPTIONS]


def extract(inputs: Path, store: Path, python_code: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(extract_command(inputs, store, python_code), capture_output=True, text=True, timeout=300,
                          cwd=REPO)


def summary_line(stdout: str) -> tuple[int, int]:
    """(stored, already committed) from the extract command's last line."""
    match = re.search(r"stored (\d+) videos? \(\d+ frames?\) in [\d.]+s; (\d+) already committed", stdout)
    assert match, stdout
    return int(match.group(1)), int(match.group(2))


def shards_dir(store: Path) -> Path:
    return store / FEATURE_SET / SHARDS_DIR


def markers(store: Path) -> dict[str, dict]:
    """Committed markers by shard id (temporary names are not commits)."""
    return {p.name[: -len(MARKER_SUFFIX)]: json.loads(p.read_text())
            for p in shards_dir(store).glob(f"*{MARKER_SUFFIX}") if not p.name.startswith(TEMP_PREFIX)}


def marker_video_counts(store: Path) -> Counter:
    return Counter(video["id"] for marker in markers(store).values() for video in marker["videos"])


def assert_same_features(store: Path, reference: Path, video_ids: list[str] | None = None) -> None:
    """Every array of every video (or of `video_ids`) equal to the reference store's."""
    fs, ref = open_store(store)[FEATURE_SET], open_store(reference)[FEATURE_SET]
    assert fs.arrays() == ref.arrays()
    ids = fs.video_ids() if video_ids is None else video_ids
    if video_ids is None:
        assert ids == ref.video_ids()
    for video_id in ids:
        info, ref_info = fs.video_info(video_id), ref.video_info(video_id)
        assert (info["n_rows"], Path(info["source"]).name, info["decoder"]) == \
            (ref_info["n_rows"], Path(ref_info["source"]).name, ref_info["decoder"])
        for array in fs.arrays():
            got, want = fs.read(video_id, array), ref.read(video_id, array)
            assert got.dtype == want.dtype and got.shape == want.shape, (video_id, array)
            if array in EXACT_ARRAYS:
                np.testing.assert_array_equal(got, want, err_msg=f"{video_id} {array}")
            else:
                np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-3, atol=2e-3,
                                           err_msg=f"{video_id} {array}")


def assert_clean(store: Path, allow_orphans: bool = False, cli: bool = True) -> None:
    """verify passes, no video is claimed by two markers, no temporary is left (orphaned shards only if allowed)."""
    report = verify_store(store)
    assert report.ok, report.problems
    assert all(n == 1 for n in marker_video_counts(store).values()), marker_video_counts(store).most_common(3)
    leftovers = [p.name for p in shards_dir(store).iterdir() if p.name.startswith(TEMP_PREFIX)]
    leftovers += [p.name for p in (store / FEATURE_SET).iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert not leftovers, leftovers
    if allow_orphans:
        assert all("has no commit marker and is ignored" in w for w in report.warnings), report.warnings
    else:
        assert not report.warnings, report.warnings
    if cli:
        result = subprocess.run([sys.executable, "-m", "freezeframe.cli", "verify", str(store)], capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """24 inputs: three differently named links to each of the 8 sample videos, some in a folder with a space."""
    root = tmp_path_factory.mktemp("corpus") / "videos"
    (root / "set b").mkdir(parents=True)
    for copy in range(3):
        for sample in SAMPLES:
            folder = root / "set b" if copy == 1 else root
            (folder / f"{sample.stem}-{copy}{sample.suffix}").symlink_to(sample)
    assert len(list(root.rglob("*-[0-9].*"))) == 24
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """An uninterrupted extraction of the whole corpus."""
    store = tmp_path_factory.mktemp("reference") / "store"
    result = extract(corpus, store)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_line(result.stdout) == (24, 0)
    fs = open_store(store)[FEATURE_SET]
    assert len(fs) == 24 and len(fs.shard_ids) == 24 and fs.num_rows == 24 * 4
    return store


def _tree(store: Path) -> dict[str, bytes | None]:
    """Every file of a store with its bytes (chunk files by size only)."""
    out = {}
    for path in sorted(store.rglob("*")):
        if path.is_file():
            rel = str(path.relative_to(store))
            out[rel] = path.read_bytes() if path.suffix == ".json" else path.stat().st_size
    return out


def test_rerun_of_a_finished_extraction_changes_nothing(reference, corpus, tmp_path):
    store = tmp_path / "store"
    subprocess.run(["cp", "-a", str(reference), str(store)], check=True)
    before = _tree(store)
    shard_ids = sorted(markers(store))

    result = extract(corpus, store)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_line(result.stdout) == (0, 24)
    assert "stored 0 videos (0 frames)" in result.stdout
    assert sorted(markers(store)) == shard_ids
    assert _tree(store) == before
    assert_same_features(store, reference)
    assert_clean(store, cli=False)


def test_sigkilled_run_resumes_to_the_same_store(reference, corpus, tmp_path):
    store = tmp_path / "store"
    log = tmp_path / "killed.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(extract_command(corpus, store), stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=REPO)
    pgid = proc.pid  # session (and process group) leader: the group holds the decode workers too
    deadline = time.monotonic() + 240
    done = 0
    try:
        while True:
            done = len(markers(store)) if shards_dir(store).is_dir() else 0
            if done >= 2 or proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        finished = proc.poll() is not None
        os.killpg(pgid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not finished, f"the run ended before it could be killed mid-way:\n{log.read_text()}"
    assert proc.returncode == -signal.SIGKILL
    for _ in range(200):  # the decode worker dies with its group
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("processes of the killed run are still alive")

    committed = len(markers(store))
    assert 2 <= committed < 24, committed
    # what the killed run committed is complete, readable and equal to the reference; nothing else is visible
    fs = open_store(store)[FEATURE_SET]
    assert len(fs) == committed
    assert_same_features(store, reference, fs.video_ids())
    report = verify_store(store)
    assert report.ok, report.problems

    result = extract(corpus, store)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_line(result.stdout) == (24 - committed, committed)
    assert_same_features(store, reference)
    assert_clean(store, allow_orphans=True)
    assert len(markers(store)) == 24


CRASHING_CLI = textwrap.dedent("""
    import sys
    import freezeframe.store.shard as shard

    point, fail_at = sys.argv.pop(1), int(sys.argv.pop(1))
    original = getattr(shard, point)
    calls = []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device (simulated)")
        return original(*args, **kwargs)

    setattr(shard, point, crash)
    from freezeframe.cli import main
    sys.argv[0] = "freezeframe"
    main()
""")


def _crash_run(inputs: Path, store: Path, point: str, fail_at: int) -> None:
    command = extract_command(inputs, store, CRASHING_CLI)
    command[3:3] = [point, str(fail_at)]
    crashed = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert crashed.returncode != 0, crashed.stdout + crashed.stderr
    assert "No space left on device (simulated)" in crashed.stderr


def _only_committed_shards(store: Path) -> None:
    """The shards folder holds committed shards and their markers, nothing else."""
    assert sorted(p.name for p in shards_dir(store).iterdir()) == sorted(["zarr.json"] + [  # shards/ is a Zarr group
        name for shard_id in markers(store) for name in (f"{shard_id}.zarr", f"{shard_id}{MARKER_SUFFIX}")])


def test_writer_crash_leaves_no_partial_shard(reference, corpus, tmp_path):
    inputs = tmp_path / "few"
    inputs.mkdir()
    names = sorted(p.name for p in corpus.iterdir() if p.is_file())[:5]
    for name in names:
        (inputs / name).symlink_to(corpus / name)
    ids = [Path(name).stem for name in names]
    store = tmp_path / "store"

    # 1) the third shard's commit fails before its bundle is renamed into place
    _crash_run(inputs, store, "_fsync_tree", 3)
    assert open_store(store)[FEATURE_SET].video_ids() == ids[:2]
    _only_committed_shards(store)
    assert_same_features(store, reference, ids[:2])
    assert_clean(store, cli=False)

    # 2) the rerun's second commit fails after the rename, before its marker is written
    _crash_run(inputs, store, "write_json_atomic", 2)
    assert open_store(store)[FEATURE_SET].video_ids() == ids[:3]
    _only_committed_shards(store)
    assert_same_features(store, reference, ids[:3])
    assert_clean(store, cli=False)

    # 3) a plain rerun finishes the job
    result = extract(inputs, store)
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary_line(result.stdout) == (2, 3)
    assert open_store(store)[FEATURE_SET].video_ids() == ids
    assert_same_features(store, reference, ids)
    assert_clean(store, cli=False)
