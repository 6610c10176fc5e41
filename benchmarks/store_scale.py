"""Store scale: open time and memory, one-video reads, resume start-up, inspect and verify at 10k..1M videos.

    python benchmarks/store_scale.py --dir /data/scale --sizes 10000,100000,1000000

Builds (once; cached and resumable under --dir) one feature set per size with freezeframe's own writer: tiny arrays
(4 rows a video: embed 16 x float16, timestamps, frame_indices), shards of 64 videos, the index written at the
end as an extraction does. Then, each in a fresh interpreter so nothing is warm but the page cache:
- open: `open_store(STORE)[NAME]`, seconds and RSS over the interpreter with freezeframe imported (RssAnon is the
  process's own memory; RssFile the mapped index pages it touched, shared with every other process);
- read: median latency of reading one random video's `embed` (each from another shard: its reader opens too);
- resume: what is left of an input list of every committed video plus 100 new ones (read the list, open the
  writer, list committed ids, filter): what `extract` does before it starts;
- inspect (`store_summary`), verify --quick and full verify (in-process, default parallelism);
- commit: per shard, mean and median over the build (the mean includes the index's occasional merges).

Runs with whatever freezeframe PYTHONPATH selects, so the same script measures the code before a change (point
PYTHONPATH at a checkout of it and use another --dir). Prints one JSON line per size and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

NAME = "fs"
SHARD = 64
ROWS = 4
NEW_VIDEOS = 100
PROVENANCE = {"backbone": {"library": "bench", "model": "tiny"}, "sampling": {"strategy": "num_frames",
                                                                            "num_frames": ROWS}}


def video_id(i: int) -> str:
    return f"vid{i:08d}"


def build(store: Path, n: int) -> dict:
    """Commit videos 0..n-1 in shards of SHARD (continuing a build that stopped); returns commit timings."""
    from freezeframe.store import FeatureSetWriter

    writer = FeatureSetWriter(store, NAME, PROVENANCE)
    done = -(-len(writer.committed_ids()) // SHARD)  # shards are committed in order, the last may be short
    rng = np.random.default_rng(0)
    embed = rng.standard_normal((SHARD * ROWS, 16)).astype(np.float16)
    times = []
    for k in range(done, -(-n // SHARD)):
        shard = writer.new_shard()
        for j, i in enumerate(range(k * SHARD, min(n, (k + 1) * SHARD))):
            shard.append(video_id(i), {"embed": embed[j * ROWS:(j + 1) * ROWS],
                                       "timestamps": np.arange(ROWS, dtype=np.float64),
                                       "frame_indices": np.arange(ROWS, dtype=np.int64)})
            shard.end_video(video_id(i), {"source": f"/videos/{video_id(i)}.mp4"})
        start = time.perf_counter()
        shard.commit()
        times.append(time.perf_counter() - start)
        if k % 500 == 0:
            print(f"  {store.name}: {(k + 1) * SHARD} videos", file=sys.stderr, flush=True)
    start = time.perf_counter()
    writer.write_index()
    return {"commits": len(times), "commit_ms_mean": 1000 * float(np.mean(times)) if times else None,
            "commit_ms_median": 1000 * float(np.median(times)) if times else None,
            "write_index_s": time.perf_counter() - start}


PROBE = """
import json, random, sys, time
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "RssAnon", "RssFile")}
from freezeframe.store import open_store
store, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = rss()
start = time.perf_counter()
fs = open_store(store)[name]
opened = time.perf_counter() - start
after = rss()
ids = random.Random(0).sample(range(n), 200)
latencies = []
for i in ids:
    start = time.perf_counter()
    fs.read(f"vid{i:08d}", "embed")
    latencies.append(time.perf_counter() - start)
latencies.sort()
print(json.dumps({"open_s": opened, "rss_mb": after["VmRSS"] - before["VmRSS"],
                  "rss_anon_mb": after["RssAnon"] - before["RssAnon"],
                  "rss_file_mb": after["RssFile"] - before["RssFile"],
                  "read_ms_median": 1000 * latencies[len(latencies) // 2], "read_ms_p90": 1000 * latencies[180],
                  "rss_after_reads_mb": rss()["VmRSS"] - before["VmRSS"]}))
"""

RESUME = """
import json, sys, time
start = time.perf_counter()
from freezeframe.extract.sources import collect_sources
from freezeframe.store import FeatureSetWriter
try:
    from freezeframe.extract.runner import videos_left
except ImportError:  # the code before this benchmark: the same two lines, inline in run_extraction
    def videos_left(sources, writer):
        committed = writer.committed_ids()
        return [s for s in sources if s.video_id not in committed]
imported = time.perf_counter()
store, name, listing, provenance = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sources = collect_sources([listing])
listed = time.perf_counter()
todo = videos_left(sources, FeatureSetWriter(store, name, provenance))
done = time.perf_counter()
print(json.dumps({"resume_s": done - imported, "list_s": listed - imported, "left": len(todo)}))
"""

TIMED = """
import json, sys, time, inspect
from freezeframe.store import open_store, verify_store
from freezeframe.summary import store_summary
store = sys.argv[1]
out = {}
start = time.perf_counter(); store_summary(open_store(store)); out["inspect_s"] = time.perf_counter() - start
if "quick" in inspect.signature(verify_store).parameters:
    start = time.perf_counter()
    report = verify_store(store, quick=True)
    out["verify_quick_s"] = time.perf_counter() - start
    assert report.ok, report.problems[:3]
if sys.argv[2] == "full":
    start = time.perf_counter(); report = verify_store(store); out["verify_s"] = time.perf_counter() - start
    assert report.ok, report.problems[:3]
print(json.dumps(out))
"""


def run(code: str, *args: str) -> dict:
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                            env=os.environ.copy())
    if result.returncode:
        raise SystemExit(f"probe failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(directory: Path, n: int, full_verify: bool) -> dict:
    store = directory / f"videos-{n}"
    built = build(store, n)
    listing = directory / f"list-{n}.txt"
    if not listing.exists():
        listing.write_text("".join(f"{video_id(i)}.mp4\n" for i in range(n + NEW_VIDEOS)))
    row = {"videos": n, **built}
    row.update(run(PROBE, store, NAME, n))
    row.update(run(RESUME, store, NAME, listing, json.dumps(PROVENANCE)))
    assert row["left"] == NEW_VIDEOS, row
    row.update(run(TIMED, store, "full" if full_verify else "quick"))
    return row


def table(rows: list[dict]) -> str:
    columns = [("videos", "videos", "{:,}"), ("open_s", "open s", "{:.3f}"), ("rss_mb", "open RSS MB", "{:.1f}"),
               ("rss_anon_mb", "of it private", "{:.1f}"), ("read_ms_median", "read ms", "{:.3f}"),
               ("resume_s", "resume s", "{:.2f}"), ("inspect_s", "inspect s", "{:.2f}"),
               ("verify_quick_s", "verify --quick s", "{:.2f}"), ("verify_s", "verify s", "{:.1f}"),
               ("commit_ms_mean", "commit ms/shard (mean)", "{:.1f}"), ("commit_ms_median", "(median)", "{:.1f}")]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) if row.get(key) is not None else "-"
                                       for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", required=True, type=Path, help="Where the stores are built (kept for reruns).")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="Comma list of feature-set sizes in videos.")
    parser.add_argument("--full-verify-max", type=int, default=1_000_000,
                        help="Run the full verify only up to this many videos.")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (int(size) for size in args.sizes.split(",")):
        rows.append(measure(args.dir, n, n <= args.full_verify_max))
        print(json.dumps(rows[-1]), flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
