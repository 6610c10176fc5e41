"""Random whole-video reads of token features: GB/s per process for each store layout, in one run.

Extracts the bundled sample videos once (ViT-B-32 architecture, random weights, the token maps of the
last two blocks, 32 frames per video), converts that store into zarr and hdf5 x none/zstd/blosc,
exports a memmap training layout (of another zarr copy), and writes a raw numpy memmap (.npy) of the same bytes as the
ceiling. Then, in rounds that alternate the layouts (so machine noise hits all alike), each of
`--processes` processes reads `--reads` random videos (every token array, all frames) and the
GB/s of each process is recorded. Ratios are medians over rounds of layout / ceiling of the same round.

"default training path" is what `FeatureDataset` does with no memmap export: `FeatureSet.read` on the
default store (zarr, no compression). Reads hit a warm OS page cache.

    python benchmarks/store_read.py [--work DIR] [--reads 300] [--rounds 5] [--processes 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources, run_extraction
from freezeframe.devices import resolve_device
from freezeframe.extract.runner import default_workers
from freezeframe.store import open_store
from freezeframe.store.tools.convert import convert_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection
from freezeframe.store.tools.memmap import export_memmap

VIDEOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "videos"
LAYOUTS = [f"{fmt}/{compression}" for fmt in ("zarr", "hdf5") for compression in ("none", "zstd", "blosc")]


def _reader(layout: str, work: Path, name: str, arrays: list[str]):
    """A function video_id -> total bytes read, for one layout (opened once, as a training worker would)."""
    if layout == "ceiling":
        index = json.loads((work / "ceiling" / "index.json").read_text())
        maps = {a: np.load(work / "ceiling" / f"{i}.npy", mmap_mode="r") for i, a in enumerate(arrays)}

        def read(video_id):
            start, n = index[video_id]
            return sum(np.array(maps[a][start:start + n]).nbytes for a in arrays)
        return read
    if layout in ("default training path", "memmap export"):
        store = work / ("zarr-none" if layout == "default training path" else "exported")
        fs = open_store(store)[name]
        dataset = FeatureDataset(store, name, fs.video_ids(), arrays, FrameSelection("all"))
        assert dataset.uses_memmap == (layout == "memmap export")
        position = {v: i for i, v in enumerate(fs.video_ids())}

        def read(video_id):
            return sum(t.numel() * t.element_size() for t in dataset[position[video_id]]["inputs"].values())
        return read
    fs = open_store(work / layout.replace("/", "-"))[name]
    return lambda video_id: sum(fs.read(video_id, a).nbytes for a in arrays)


def _measure(args) -> float:
    layout, work, name, arrays, ids, reads, seed = args
    read = _reader(layout, Path(work), name, arrays)
    for video_id in ids:  # warm: files opened, pages cached
        read(video_id)
    order = np.random.default_rng(seed).choice(ids, size=reads)
    t0 = time.perf_counter()
    total = sum(read(video_id) for video_id in order)
    return total / 1e9 / (time.perf_counter() - t0)


def prepare(work: Path, model: str, num_frames: int, device: str) -> tuple[str, list[str]]:
    source = work / "zarr-none"
    clip = ClipConfig(model=model, pretrained="none", features=("embed", "tokens"), layers=(-2, -1))
    config = ExtractConfig(store=str(source), sampling=SamplingConfig("num_frames", num_frames=num_frames),
                           workers=default_workers(), batch_size=32, progress=False)
    report = run_extraction(collect_sources([str(VIDEOS)]), ClipBackbone(clip, device=resolve_device(device)), config)
    name = report.feature_set
    fs = open_store(source)[name]
    arrays = sorted(a for a in fs.arrays() if a.startswith("tokens/"))
    for layout in LAYOUTS[1:]:
        fmt, compression = layout.split("/")
        done = convert_store(source, work / layout.replace("/", "-"), format=fmt, compression=compression)
        assert done.ok, done.problems
    exported = work / "exported"
    assert convert_store(source, exported).ok
    export_memmap(open_store(exported)[name], arrays)
    ceiling = work / "ceiling"
    ceiling.mkdir()
    index, start = {}, 0
    for i, array in enumerate(arrays):
        np.save(ceiling / f"{i}.npy", np.concatenate([fs.read(v, array) for v in fs.video_ids()]))
    for video_id in fs.video_ids():
        n = fs.locate(video_id).n_rows
        index[video_id] = (start, n)
        start += n
    (ceiling / "index.json").write_text(json.dumps(index))
    return name, arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=None, help="working directory, kept [default: a temporary one]")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--reads", type=int, default=300, help="random whole-video reads per process and layout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1, help="processes reading at once (GB/s is per process)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ff-store-read-"))
    name, arrays = prepare(work, args.model, args.num_frames, args.device)
    fs = open_store(work / "zarr-none")[name]
    ids = fs.video_ids()
    video_bytes = sum(fs.read(v, a).nbytes for v in ids for a in arrays) / len(ids)
    layouts = ["ceiling", "default training path", "memmap export", *LAYOUTS]
    speeds: dict[str, list[float]] = {layout: [] for layout in layouts}
    ratios: dict[str, list[float]] = {layout: [] for layout in layouts}
    context = mp.get_context("spawn")
    with context.Pool(args.processes) as pool:
        for round_ in range(args.rounds):
            this_round = {}
            for layout in layouts:
                jobs = [(layout, str(work), name, arrays, ids, args.reads, 1000 * round_ + p)
                        for p in range(args.processes)]
                this_round[layout] = float(np.mean(pool.map(_measure, jobs)))
                speeds[layout].append(this_round[layout])
            for layout in layouts:
                ratios[layout].append(this_round[layout] / this_round["ceiling"])
    result = {
        "model": args.model, "videos": len(ids), "frames_per_video": args.num_frames, "arrays": arrays,
        "mb_per_video": video_bytes / 1e6, "processes": args.processes, "reads": args.reads, "rounds": args.rounds,
        "layouts": {layout: {"gb_s_per_process": float(np.median(speeds[layout])),
                             "ratio_to_ceiling": float(np.median(ratios[layout]))} for layout in layouts},
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{len(ids)} videos x {args.num_frames} frames, arrays {', '.join(arrays)}: "
              f"{video_bytes / 1e6:.2f} MB per video; {args.processes} process(es), median of {args.rounds} rounds")
        print("| layout | GB/s per process | ratio to raw memmap |")
        print("|---|---|---|")
        for layout, row in result["layouts"].items():
            print(f"| {layout} | {row['gb_s_per_process']:.2f} | {row['ratio_to_ceiling']:.2f} |")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
