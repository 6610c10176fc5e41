"""Fault injection at many more points than tests/e2e/test_faults.py, with the counts of what recovered.

Faults, each on its own store, each followed by the checks of tests/faults.py (verify passes on what was committed
and it equals a clean run; after a rerun every video is stored exactly once, arrays equal the clean run):

- every named kill point at every arrival: FREEZEFRAME_FAULT=<site>:<n> for n = 1, 2, ... until a run finishes
  without reaching it (freezeframe/faults.py lists the sites);
- SIGKILL of the whole process group after a random delay while a clean run of the same command would be
  writing (from its feature set's first file to its exit: most of a tiny run is start-up);
- file size limits (RLIMIT_FSIZE) that make a write fail at each shard;
- two writers at once on overlapping inputs, one of them killed at a named point: the survivor must finish the
  store alone (it takes over the dead writer's claims), before any rerun.

Five short sample videos, the bundled tiny model, shards of two videos (one for the size limits).

    python benchmarks/fault_injection.py [--work DIR] [--random 20] [--seed 0] [--parallel 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from faults import (FAULT_VIDEOS, FEATURE_SET, VIDEOS, Outcome, check_after_fault, check_after_rerun,  # noqa: E402
                    extract_args, file_size_limits, finish, run_extract)

from freezeframe.faults import SITES  # noqa: E402

INPUTS = [VIDEOS / name for name in FAULT_VIDEOS]
IDS = sorted(Path(name).stem for name in FAULT_VIDEOS)


def rerun(store: Path, shard_size: int) -> int:
    return run_extract(extract_args(INPUTS, store, shard_size)).returncode


def named_points(work: Path, reference: Path, parallel: int) -> list[Outcome]:
    """Every site at every arrival, `parallel` arrivals of a site at a time, until a run outlives the site."""
    outcomes: list[Outcome] = []
    with ThreadPoolExecutor(parallel) as pool:
        for site in (site for site in SITES if not site.endswith(".hang")):  # a hang is not a kill point
            n = 1
            while True:
                points = [f"{site}:{k}" for k in range(n, n + parallel)]
                stores = [work / f"{site}-{k}" for k in range(n, n + parallel)]
                results = list(pool.map(lambda p_s: run_extract(extract_args(INPUTS, p_s[1], 2), fault=p_s[0]),
                                        zip(points, stores)))
                checked = list(pool.map(lambda r_p_s: finish(r_p_s[0], r_p_s[2], reference, IDS,
                                                             lambda: rerun(r_p_s[2], 2), r_p_s[1]),
                                        zip(results, points, stores)))
                outcomes += [o for o in checked if o.killed]
                if not all(o.killed for o in checked):
                    break
                n += parallel
    return outcomes


def _start(store: Path) -> subprocess.Popen:
    args = extract_args(INPUTS, store, 2, "--workers", "1")
    return subprocess.Popen([sys.executable, "-m", "freezeframe.cli", "extract", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def writing_window(work: Path) -> tuple[float, float]:
    """Seconds from start at which a clean run creates its feature set, and at which it exits."""
    store = work / "timing"
    shutil.rmtree(store, ignore_errors=True)
    started = time.perf_counter()
    proc = _start(store)
    first_write = None
    while proc.poll() is None:
        if first_write is None and (store / FEATURE_SET).exists():
            first_write = time.perf_counter() - started
        time.sleep(0.005)
    assert proc.returncode == 0, proc.stderr.read()
    return first_write or 0.0, time.perf_counter() - started


def random_kills(work: Path, reference: Path, count: int, seed: int) -> list[Outcome]:
    """SIGKILL of the process group (the decode worker too) after a uniform random delay in the writing window."""
    low, high = writing_window(work)
    rng = random.Random(seed)
    outcomes = []
    for i in range(count):
        store, delay = work / f"random-{i}", rng.uniform(low, high)
        proc = _start(store)
        time.sleep(delay)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
        result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
        outcomes.append(finish(result, store, reference, IDS, lambda: rerun(store, 2), f"random kill {delay:.2f}s"))
    return outcomes


def size_limits(work: Path, reference: Path) -> list[Outcome]:
    outcomes = []
    for limit, _committed in file_size_limits(reference):
        store = work / f"limit-{limit}"
        result = run_extract(extract_args(INPUTS, store, 1), file_size_limit=limit)
        outcomes.append(finish(result, store, reference, IDS, lambda: rerun(store, 1), f"file size limit {limit}"))
    return outcomes


def killed_peer(work: Path, reference: Path, points: list[str]) -> list[Outcome]:
    """Two writers over overlapping inputs; one dies at `point`; the other alone must complete the store."""
    outcomes = []
    for point in points:
        store = work / f"peer-{point}"
        survivor_args = extract_args(INPUTS, store, 2, "--workers", "1")
        with ThreadPoolExecutor(2) as pool:
            doomed = pool.submit(run_extract, extract_args(INPUTS[1:], store, 2), fault=point)
            survivor = pool.submit(run_extract, survivor_args)
            doomed_result, survivor_result = doomed.result(), survivor.result()
        outcome = Outcome(f"peer killed at {point}", doomed_result.returncode, rerun_returncode=survivor_result.returncode)
        check_after_fault(store, reference, outcome)
        check_after_rerun(store, reference, IDS, outcome)  # the survivor is the "rerun": no other run happens
        outcomes.append(outcome)
    return outcomes


def summarize(name: str, outcomes: list[Outcome]) -> dict:
    return {"kind": name, "faults": len(outcomes), "killed": sum(o.killed for o in outcomes),
            "recovered": sum(o.recovered for o in outcomes), "duplicates": sum(o.duplicates for o in outcomes),
            "lost": sum(o.lost for o in outcomes),
            "verify_failed_after_fault": sum(bool(o.problems_after_fault) for o in outcomes),
            "committed_after_fault": sorted({o.committed_after_fault for o in outcomes}),
            "not_recovered": [o.fault for o in outcomes if not o.recovered]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None, help="Folder for the stores [default: a temporary one].")
    parser.add_argument("--random", type=int, default=20, help="Kills after a random delay.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parallel", type=int, default=2, help="Fault runs at a time.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="freezeframe-faults-"))
    work.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    reference = work / "reference"
    result = run_extract(extract_args(INPUTS, reference, 1))
    assert result.returncode == 0, result.stderr
    clean_seconds = time.perf_counter() - started

    kinds = {
        "named kill points": named_points(work, reference, args.parallel),
        "random kills": random_kills(work, reference, args.random, args.seed),
        "file size limits": size_limits(work, reference),
        "killed peer": killed_peer(work, reference, ["claim:2", "chunk:2", "shard.rename:1", "shard.rename:2",
                                                     "shard.marker:1", "committed:1"]),
    }
    rows = [summarize(name, outcomes) for name, outcomes in kinds.items()]
    total = summarize("all", [o for outcomes in kinds.values() for o in outcomes])
    report = {"rows": rows, "total": total, "clean_run_seconds": round(clean_seconds, 2),
              "seconds": round(time.perf_counter() - started, 1), "work": str(work)}
    if args.json:
        print(json.dumps(report))
        return
    print(f"{'kind':<20}{'faults':>8}{'killed':>8}{'recovered':>11}{'duplicates':>12}{'lost':>6}  committed after fault")
    for row in [*rows, total]:
        print(f"{row['kind']:<20}{row['faults']:>8}{row['killed']:>8}{row['recovered']:>11}{row['duplicates']:>12}"
              f"{row['lost']:>6}  {row['committed_after_fault']}")
        if row["not_recovered"]:
            print(f"  not recovered: {row['not_recovered']}")
    print(f"clean run {report['clean_run_seconds']}s; all faults {report['seconds']}s; stores in {work}")


if __name__ == "__main__":
    main()
