"""Wall seconds for commands to start, two source trees side by side in one run (ratios, not absolute timings).

Each cell is the least of `--repeats` runs of a fresh `python -m freezeframe.cli ...` (or `python -c "import
freezeframe"`) with PYTHONPATH set to the tree, alternating the trees; the store commands read a one-video store
extracted first with the tiny bundled model. The old tree is a revision of this repository, unpacked by `git archive`.

    python benchmarks/startup.py [--old ab7d09d] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def seconds(tree: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, cwd=tempfile.gettempdir(), check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="ab7d09d", help="the revision to compare with this tree")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="freezeframe-startup-"))
    old = work / "old"
    old.mkdir()
    archive = subprocess.run(["git", "archive", args.old, "freezeframe"], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    store = work / "store"
    subprocess.run([sys.executable, "-m", "freezeframe.cli", "extract", str(ROOT / "tests/data/videos/short_32frames.mp4"),
                    "--store", str(store), "--model", "ff-tiny-vit", "--pretrained", "none", "--workers", "0",
                    "--no-progress"], env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
    cli = ["-m", "freezeframe.cli"]
    jobs = {"import freezeframe": ["-c", "import freezeframe"], "--version": [*cli, "--version"], "-h": [*cli, "-h"],
            "inspect STORE": [*cli, "inspect", str(store)], "verify STORE": [*cli, "verify", str(store)],
            "rm -h": [*cli, "rm", "-h"], "extract -h": [*cli, "extract", "-h"]}
    print(f"| command | {args.old} s | this tree s | ratio |\n|---|---|---|---|")
    for name, job in jobs.items():
        times = {tree: [] for tree in (old, ROOT)}
        for _ in range(args.repeats):
            for tree in times:
                times[tree].append(seconds(tree, job))
        before, after = min(times[old]), min(times[ROOT])
        print(f"| `{name}` | {before:.2f} | {after:.2f} | {before / after:.1f}x |")


if __name__ == "__main__":
    main()
