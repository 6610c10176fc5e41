"""Fault-injection harness for tests/e2e/test_faults.py, tests/e2e/test_many_writers.py and benchmarks/fault_injection.py.

Real `freezeframe extract` subprocesses are killed at named points (`FREEZEFRAME_FAULT=<site>:<n>`, see
freezeframe/faults.py) or refused file space (`RLIMIT_FSIZE`, so a write fails with EFBIG); the checks then
say whether the store recovered: verify passes on what was committed, and after a rerun every video is stored
exactly once with arrays equal to a clean reference run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from freezeframe.store import open_store, verify_store
from freezeframe.store.layout import INDEX_DIR, MARKER_SUFFIX, SHARDS_DIR, TEMP_PREFIX

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO / "tests" / "data" / "videos"
FEATURE_SET = "clip-ff-tiny-vit-random"
# five short real videos; --fps 2 gives them different frame counts (2 to 36), so shards differ in size
FAULT_VIDEOS = ("archery_demo.mp4", "lowfps_6fps.mp4", "short_32frames.mp4", "test_mpeg4.avi", "v_GGSY1Qvo990.mp4")
# batch size 1: every frame's forward is the same whichever videos a (re)run covers, so arrays compare exactly
TINY_OPTIONS = ("--model", "ff-tiny-vit", "--pretrained", "none", "--features", "embed,tokens", "--layers", "-1",
                "--fps", "2", "--batch-size", "1", "--workers", "0", "--no-progress")


def extract_args(inputs: Sequence[Path], store: Path, shard_size: int = 2, *extra: str) -> list[str]:
    """Arguments of `freezeframe extract` for the fault runs (inputs, store, tiny model, shard size)."""
    return [*map(str, inputs), "--store", str(store), *TINY_OPTIONS, "--shard-size", str(shard_size), *extra]


_WITH_FILE_SIZE_LIMIT = ("import resource, runpy, sys; n = int(sys.argv.pop(1)); "
                         "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); sys.argv[0] = 'freezeframe'; "
                         "runpy.run_module('freezeframe.cli', run_name='__main__', alter_sys=True)")


def run_extract(args: Sequence[str], *, fault: str | None = None, file_size_limit: int | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `freezeframe extract ARGS` as a subprocess, armed with a kill point or a file size limit (set in the
    child itself, not by a preexec_fn, so that callers may run several from threads)."""
    env = {key: value for key, value in os.environ.items() if key != "FREEZEFRAME_FAULT"}
    if fault:
        env["FREEZEFRAME_FAULT"] = fault
    head = [sys.executable, "-c", _WITH_FILE_SIZE_LIMIT, str(file_size_limit)] if file_size_limit else \
        [sys.executable, "-m", "freezeframe.cli"]
    return subprocess.run([*head, "extract", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def shards_dir(store: Path) -> Path:
    return store / FEATURE_SET / SHARDS_DIR


def markers(store: Path) -> dict[str, dict]:
    """Committed markers by shard id (a marker under a temporary name is not a commit)."""
    if not shards_dir(store).is_dir():
        return {}
    return {p.name[: -len(MARKER_SUFFIX)]: json.loads(p.read_text()) for p in shards_dir(store).glob(f"*{MARKER_SUFFIX}")
            if not p.name.startswith(TEMP_PREFIX)}


def stored_counts(store: Path) -> Counter:
    """Video id -> how many committed shards hold it (1 everywhere in a good store)."""
    return Counter(video["id"] for marker in markers(store).values() for video in marker["videos"])


def differences(store: Path, reference: Path, video_ids: Sequence[str] | None = None) -> list[str]:
    """What differs between the store's videos (all, or `video_ids`) and the reference's: arrays compared exactly."""
    fs, ref = open_store(store)[FEATURE_SET], open_store(reference)[FEATURE_SET]
    ids = fs.video_ids() if video_ids is None else list(video_ids)
    problems = [] if video_ids is not None or ids == ref.video_ids() else [f"ids {ids} != {ref.video_ids()}"]
    if ids and fs.arrays() != ref.arrays():
        return [*problems, f"arrays {fs.arrays()} != {ref.arrays()}"]
    for video_id in ids:
        for array in fs.arrays():
            got, want = fs.read(video_id, array), ref.read(video_id, array)
            if got.shape != want.shape or got.dtype != want.dtype or not np.array_equal(got, want):
                problems.append(f"{video_id}/{array} differs from the reference")
    return problems


@dataclass
class Outcome:
    """What one fault did to a store, and whether a rerun recovered it."""

    fault: str
    returncode: int
    committed_after_fault: int = 0
    problems_after_fault: list[str] = field(default_factory=list)  # verify problems or wrong committed arrays
    error_line: str = ""  # the last stderr line of a run that failed on its own (not killed)
    rerun_returncode: int | None = None
    duplicates: int = 0  # videos committed more than once after the rerun
    lost: int = 0  # videos missing after the rerun
    problems_after_rerun: list[str] = field(default_factory=list)

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def recovered(self) -> bool:
        return (not self.problems_after_fault and self.rerun_returncode == 0 and not self.duplicates and not self.lost
                and not self.problems_after_rerun)


def check_after_fault(store: Path, reference: Path, outcome: Outcome) -> None:
    """verify passes on whatever was committed, and that is equal to the reference."""
    if not (store / FEATURE_SET / "provenance.json").exists():
        return  # died before the feature set existed
    report = verify_store(store)
    outcome.problems_after_fault += report.problems
    outcome.committed_after_fault = sum(stored_counts(store).values())
    if report.ok:
        outcome.problems_after_fault += differences(store, reference, open_store(store)[FEATURE_SET].video_ids())


def check_after_rerun(store: Path, reference: Path, expected_ids: Sequence[str], outcome: Outcome) -> None:
    """Every video once, nothing missing, arrays equal the reference, verify clean but for ignored orphans."""
    counts = stored_counts(store)
    outcome.duplicates = sum(1 for n in counts.values() if n > 1)
    outcome.lost = sum(1 for video_id in expected_ids if counts[video_id] == 0)
    report = verify_store(store)
    outcome.problems_after_rerun += report.problems
    # a shard renamed into place by a run killed before its marker stays, ignored and reported; nothing else may
    outcome.problems_after_rerun += [w for w in report.warnings if "has no commit marker" not in w]
    temps = [p.name for d in (store / FEATURE_SET, shards_dir(store)) for p in d.iterdir() if p.name.startswith(TEMP_PREFIX)]
    outcome.problems_after_rerun += [f"temporary left: {name}" for name in temps]
    if report.ok:
        outcome.problems_after_rerun += differences(store, reference)


def inject(fault_args: Sequence[str], store: Path, reference: Path, expected_ids: Sequence[str],
           rerun: Callable[[], int], *, fault: str | None = None, file_size_limit: int | None = None) -> Outcome:
    """One fault run, its checks, one rerun (`rerun()` returns its exit status), and the checks after it."""
    result = run_extract(fault_args, fault=fault, file_size_limit=file_size_limit)
    return finish(result, store, reference, expected_ids, rerun, fault or f"file size limit {file_size_limit}")


def finish(result: subprocess.CompletedProcess, store: Path, reference: Path, expected_ids: Sequence[str],
           rerun: Callable[[], int], label: str) -> Outcome:
    """The checks of `inject` for a fault run that already ran (so fault runs can run in parallel)."""
    outcome = Outcome(label, result.returncode)
    lines = result.stderr.strip().splitlines()
    outcome.error_line = lines[-1] if lines else ""
    check_after_fault(store, reference, outcome)
    outcome.rerun_returncode = rerun()
    check_after_rerun(store, reference, expected_ids, outcome)
    return outcome


def file_size_limits(reference: Path) -> list[tuple[int, int]]:
    """(RLIMIT_FSIZE bytes, videos committed before the failing write) pairs that make a run of the reference's
    inputs (one video per shard) fail at a different shard each: every file written before that shard fits
    the limit, and some file of that shard does not. Also one limit that fails before any shard."""
    fs_dir = reference / FEATURE_SET
    before = max(p.stat().st_size for p in fs_dir.rglob("*") if p.is_file() and SHARDS_DIR not in p.parts
                 and INDEX_DIR not in p.parts)
    shard_sizes = []
    for shard_id, marker in sorted(markers(reference).items()):
        files = [p for p in (shards_dir(reference) / marker["file"]).rglob("*") if p.is_file()]
        files.append(shards_dir(reference) / f"{shard_id}{MARKER_SUFFIX}")
        shard_sizes.append((max(p.stat().st_size for p in files), len(marker["videos"])))
    limits = [(512, 0)]  # smaller than provenance.json: fails before any shard
    committed = 0
    for size, videos in shard_sizes:
        if size > before:
            limits.append((before, committed))
        before = max(before, size)
        committed += videos
    return limits
