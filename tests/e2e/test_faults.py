"""Fault injection: real `freezeframe extract` runs SIGKILLed at 21 named points of the write path, and runs whose
writes fail (RLIMIT_FSIZE) at every shard. After each fault, verify passes on what was committed (equal to a
clean run), and a rerun completes the store with nothing lost or duplicated and arrays equal to the clean run.

Fault runs are subprocesses (two at a time); reruns and the clean reference run in this process.
More points, random ones included: benchmarks/fault_injection.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from faults import (FAULT_VIDEOS, FEATURE_SET, VIDEOS, extract_args, file_size_limits, finish, markers, run_extract,
                    stored_counts)
from freezeframe.cli import main
from freezeframe.store import open_store

INPUTS = [VIDEOS / name for name in FAULT_VIDEOS]
IDS = sorted(Path(name).stem for name in FAULT_VIDEOS)
# (site, n): die at the n-th arrival. Five videos in shards of two: 5 claims, 5 or more chunks (one or more per
# video), 3 shards of 5 arrays each, 3 renames, markers and commits, 4 JSON replaces (markers, index), 1 index.
KILL_POINTS = [
    "claim:1", "claim:4", "chunk:1", "chunk:3", "chunk:5",
    "shard.array:1", "shard.array:5", "shard.array:8", "shard.array:14",
    "shard.rename:1", "shard.rename:2", "shard.rename:3", "shard.marker:1", "shard.marker:3",
    "json.replace:1", "json.replace:2", "json.replace:4", "committed:1", "committed:2", "committed:3", "index:1",
]


def extract_here(args: list[str]) -> int:
    """Run `freezeframe extract ARGS` in this process; returns its exit status."""
    result = CliRunner().invoke(main, ["extract", *args], catch_exceptions=False)
    return result.exit_code


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A clean run over the five videos, one video per shard (the file size limits are read off its files)."""
    store = tmp_path_factory.mktemp("reference") / "store"
    assert extract_here(extract_args(INPUTS, store, 1)) == 0
    assert open_store(store)[FEATURE_SET].video_ids() == IDS
    return store


def _fault_runs(jobs: dict[str, dict], tmp_path: Path, shard_size: int) -> dict[str, tuple]:
    """Run every fault job (two subprocesses at a time) into its own store; returns label -> (result, store)."""
    stores = {label: tmp_path / f"store-{i}" for i, label in enumerate(jobs)}
    with ThreadPoolExecutor(2) as pool:
        futures = {label: pool.submit(run_extract, extract_args(INPUTS, stores[label], shard_size), **job)
                   for label, job in jobs.items()}
        return {label: (future.result(), stores[label]) for label, future in futures.items()}


def test_sigkill_at_21_points_always_recovers(reference, tmp_path):
    runs = _fault_runs({point: {"fault": point} for point in KILL_POINTS}, tmp_path, shard_size=2)
    outcomes = []
    for point, (result, store) in runs.items():
        rerun_args = extract_args(INPUTS, store, 2)
        outcomes.append(finish(result, store, reference, IDS, lambda: extract_here(rerun_args), point))

    not_killed = [(o.fault, o.returncode, o.error_line) for o in outcomes if not o.killed]
    assert not not_killed, f"these points were never reached: {not_killed}"
    failed = [(o.fault, o.problems_after_fault, o.rerun_returncode, o.duplicates, o.lost, o.problems_after_rerun)
              for o in outcomes if not o.recovered]
    assert not failed
    assert sum(o.duplicates for o in outcomes) == 0 and sum(o.lost for o in outcomes) == 0
    # the kills landed at different stages: before any commit, between commits, after the last one
    assert {o.committed_after_fault for o in outcomes} >= {0, 2, 4, 5}
    by_point = {o.fault: o for o in outcomes}
    assert by_point["shard.marker:1"].committed_after_fault == 0  # renamed, never marked: invisible
    assert by_point["committed:3"].committed_after_fault == 5  # all committed, killed before giving back claims


def test_failing_writes_stop_with_one_error_line_and_recover(reference, tmp_path):
    limits = file_size_limits(reference)
    assert [committed for _limit, committed in limits][:2] == [0, 0] and len(limits) >= 3, limits
    runs = _fault_runs({f"limit {limit}": {"file_size_limit": limit} for limit, _ in limits}, tmp_path, shard_size=1)
    for (limit, expected), (label, (result, store)) in zip(limits, runs.items()):
        assert result.returncode == 2, (label, result.stderr[-2000:])
        assert result.stderr.strip().splitlines()[-1].startswith(f"error: writing to store {store} failed (File too large)")
        assert "Traceback" not in result.stderr
        outcome = finish(result, store, reference, IDS, lambda s=store: extract_here(extract_args(INPUTS, s, 1)), label)
        assert outcome.committed_after_fault == expected, (label, outcome)
        assert outcome.recovered, outcome
        assert sorted(stored_counts(store).values()) == [1] * len(IDS)
        assert len(markers(store)) == len(IDS)
