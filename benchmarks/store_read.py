"""Random whole-video reads of token features: GB/s per process for each store layout, in one run.

Extracts the bundled sample videos once (ViT-B-32 architecture, random weights, the token maps of the
last two blocks, 32 frames per video), converts that store into zarr and hdf5 x none/zstd/blosc,
exports a memmap training layout (of another zarr copy), and writes a raw numpy memmap (.npy) of the same bytes as the
ceiling. Then, in rounds that alternate the layouts (so machine noise hits all alike), each of
`--processes` processes reads `--reads` random videos (every token array, all frames) and the
GB/s of each process is recorded. Ratios are medians over rounds of layout / ceiling of the same round.

"default training path" is what `FeatureDataset` does with no memmap export: `FeatureSet.read` on the
default store (zarr, no compression). Reads hit a warm OS page cache.

`--loader` adds the training path as training runs it: `FeatureDataset` on the default store through a
DataLoader (batches of `--batch` videos, `num_workers` 0 and 2) for whole videos and sparse selections
(uniform 8 rows, dense-random, clips-random), against a raw memmap dataset through the same DataLoader that
gathers the same rows straight into its batch tensor (the one copy a batch needs).

`--code DIR` (repeatable) measures each checkout of freezeframe in its own process (PYTHONPATH=DIR), in
rounds that alternate them, each against the raw memmap of its own round: old and new side by side.

Each round's process runs with glibc's heap trimming and mmap threshold fixed (MALLOC_TRIM_THRESHOLD_,
MALLOC_MMAP_THRESHOLD_), so that freed read buffers are reused by every layout alike: by default glibc returns a
freed multi-MB buffer to the OS or keeps it depending on the sizes freed before, and every read after a return
page-faults its buffer back (one fault per 4 KiB), which moved single ratios by up to 0.2 (even above 1) between
runs. `--glibc-defaults` measures with the defaults.

    python benchmarks/store_read.py [--work DIR] [--reads 300] [--rounds 5] [--processes 1] [--loader]
                                    [--code OLD --code NEW] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources, run_extraction
from freezeframe.devices import resolve_device
from freezeframe.extract.runner import default_workers
from freezeframe.store import open_store
from freezeframe.store.tools.convert import convert_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate
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
            return sum(x.nbytes for x in [np.array(maps[a][start:start + n]) for a in arrays])  # held together,
            # as a dataset item holds them (the allocator reuses memory differently otherwise)
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
    return lambda video_id: sum(x.nbytes for x in [fs.read(video_id, a) for a in arrays])


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
    """Extract, convert and export once; a kept `--work` folder is reused as it is."""
    if (work / "arrays.json").exists():
        done = json.loads((work / "arrays.json").read_text())
        return done["name"], done["arrays"]
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
    (work / "arrays.json").write_text(json.dumps({"name": name, "arrays": arrays}))
    index, start = {}, 0
    for i, array in enumerate(arrays):
        np.save(ceiling / f"{i}.npy", np.concatenate([fs.read(v, array) for v in fs.video_ids()]))
    for video_id in fs.video_ids():
        n = fs.locate(video_id).n_rows
        index[video_id] = (start, n)
        start += n
    (ceiling / "index.json").write_text(json.dumps(index))
    return name, arrays


SELECTIONS = ("all", "uniform:8", "dense-random:8:2", "clips-random:2:4")
KEEP_FREED_MEMORY = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 28)}


class RawBatches(torch.utils.data.Dataset):
    """The ceiling of a training read: the same rows as `FeatureDataset` gathered from raw .npy memmaps straight
    into one batch tensor per array (in shared memory in a worker, as torch's default_collate does)."""

    def __init__(self, work: str, arrays: list[str], ids: list[str], selection: FrameSelection) -> None:
        self.work, self.arrays, self.ids, self.selection, self.maps, self.epoch = work, arrays, ids, selection, None, 0
        self.index = json.loads((Path(work) / "ceiling" / "index.json").read_text())
        self.fixed: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def _rows(self, index: int, n: int) -> np.ndarray:
        """The rows `FeatureDataset` reads: drawn per (seed, epoch, item) when random, else the same for every
        video of n rows (computed once, as `FeatureDataset` keeps them)."""
        if self.selection.mode == "all":
            return np.arange(n)
        if self.selection.random:
            return self.selection.rows(n, np.random.default_rng((0, self.epoch, index)))
        if n not in self.fixed:
            self.fixed[n] = self.selection.rows(n)
        return self.fixed[n]

    def __getitems__(self, indices):
        if self.maps is None:
            self.maps = [np.load(Path(self.work) / "ceiling" / f"{i}.npy", mmap_mode="r")
                         for i in range(len(self.arrays))]
        spans = [self.index[self.ids[i]] for i in indices]
        rows = [self._rows(i, n) for i, (_, n) in zip(indices, spans)]
        out = {}
        for array, data in zip(self.arrays, self.maps):
            batch = _batch_tensor((len(indices), len(rows[0]), *data.shape[1:]), data.dtype)
            target = batch.numpy()
            for b, ((start, _), chosen) in enumerate(zip(spans, rows)):
                np.take(data, start + chosen, axis=0, out=target[b], mode="clip")
            out[array] = batch
        return out


def _batch_tensor(shape, dtype) -> torch.Tensor:
    dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=dtype).new(storage).resize_(shape)


def _identity(batch):
    return batch


def _batch_bytes(batch) -> int:
    inputs = batch["inputs"] if "inputs" in batch else batch
    return sum(t.numel() * t.element_size() for t in inputs.values())


def _loader(kind: str, work: Path, name: str, arrays: list[str], selection: str, workers: int, batch: int):
    """A DataLoader over the default store (`kind` "freezeframe") or the raw memmaps, warmed by one epoch."""
    ids = open_store(work / "zarr-none")[name].video_ids()
    chosen = FrameSelection.parse(selection)
    if selection == "all":  # whole videos of one length, so that they stack
        lengths = json.loads((work / "ceiling" / "index.json").read_text())
        longest = max(n for _, n in lengths.values())
        ids = [v for v in ids if lengths[v][1] == longest]
    ids = ids * max(1, 64 // len(ids))  # an epoch of at least 64 items
    if kind == "freezeframe":
        dataset, collate_fn = FeatureDataset(work / "zarr-none", name, ids, arrays, chosen), collate
    else:
        dataset, collate_fn = RawBatches(str(work), arrays, ids, chosen), _identity
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                         collate_fn=collate_fn, persistent_workers=workers > 0)
    for _ in loader:  # warm: workers started, files opened, pages cached
        pass
    return loader


def loader_pair(work: Path, name: str, arrays: list[str], selection: str, workers: int, batch: int,
                epochs: int) -> dict[str, float]:
    """GB/s of the raw memmap DataLoader and of FeatureDataset's, epochs alternating; the median of the ratios of
    neighbouring epochs (machine noise hits both alike)."""
    loaders = {kind: _loader(kind, work, name, arrays, selection, workers, batch)
               for kind in ("raw memmap", "freezeframe")}
    speeds: dict[str, list[float]] = {kind: [] for kind in loaders}
    for _ in range(epochs):
        for kind, loader in loaders.items():
            start = time.perf_counter()
            total = sum(_batch_bytes(b) for b in loader)
            speeds[kind].append(total / 1e9 / (time.perf_counter() - start))
    ratios = [f / r for f, r in zip(speeds["freezeframe"], speeds["raw memmap"])]
    return {**{kind: float(np.median(v)) for kind, v in speeds.items()}, "ratio": float(np.median(ratios))}


def measure_round(work: Path, args, seed: int) -> dict[str, float]:
    """GB/s of every layout (and DataLoader case) in one round, in this process's freezeframe."""
    name, arrays = prepare(work, args.model, args.num_frames, args.device)
    ids = open_store(work / "zarr-none")[name].video_ids()
    layouts = ["ceiling", "default training path", "memmap export", *(LAYOUTS if args.all_layouts else
                                                                       ["zarr/none", "hdf5/none"])]
    speeds = {}
    context = mp.get_context("spawn")
    with context.Pool(args.processes) as pool:
        for layout in layouts:
            jobs = [(layout, str(work), name, arrays, ids, args.reads, seed + p) for p in range(args.processes)]
            speeds[layout] = float(np.mean(pool.map(_measure, jobs)))
    if args.loader:
        torch.set_num_threads(1)
        for selection in SELECTIONS:
            for workers in (0, 2):
                pair = loader_pair(work, name, arrays, selection, workers, args.batch, args.epochs)
                for key, value in pair.items():
                    speeds[f"loader {key} {selection} w{workers}"] = value
    return speeds


def ratios_of(speeds: dict[str, float]) -> dict[str, float]:
    """Each layout over the raw memmap of its round; each DataLoader case over the raw memmap DataLoader's."""
    out = {}
    for key, value in speeds.items():
        if key.startswith("loader ratio "):
            out[key.replace("loader ratio ", "loader: ")] = value
        elif not key.startswith("loader"):
            out[key] = value / speeds["ceiling"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=None, help="working directory, kept and reused [default: a temporary one]")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--reads", type=int, default=300, help="random whole-video reads per process and layout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=1, help="processes reading at once (GB/s is per process)")
    parser.add_argument("--all-layouts", action="store_true", help="also the compressed layouts")
    parser.add_argument("--loader", action="store_true", help="also FeatureDataset through a DataLoader")
    parser.add_argument("--batch", type=int, default=8, help="videos per DataLoader batch")
    parser.add_argument("--epochs", type=int, default=5, help="DataLoader epochs per case and round, alternating")
    parser.add_argument("--code", action="append", default=None,
                        help="a freezeframe checkout to measure (repeat for old and new) [default: this one]")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="glibc's default heap trimming in the measuring processes (see above)")
    parser.add_argument("--round-seed", type=int, default=None, help=argparse.SUPPRESS)  # one round, JSON out
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ff-store-read-"))
    if args.round_seed is not None:
        print(json.dumps(measure_round(work, args, args.round_seed)))
        return
    name, arrays = prepare(work, args.model, args.num_frames, args.device)
    codes = args.code or [str(Path(__file__).resolve().parent.parent)]
    rounds: dict[str, list[dict[str, float]]] = {code: [] for code in codes}
    passed = [a for a in sys.argv[1:] if a not in ("--json",)]
    for round_ in range(args.rounds):
        for code in codes:  # alternate checkouts round by round, so machine noise hits them alike
            command = [sys.executable, __file__, *_without(passed, "--code"), "--work", str(work),
                       "--round-seed", str(1000 * round_)]
            env = {**os.environ, "PYTHONPATH": code, **({} if args.glibc_defaults else KEEP_FREED_MEMORY)}
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            rounds[code].append(json.loads(done.stdout.strip().splitlines()[-1]))
    fs = open_store(work / "zarr-none")[name]
    video_bytes = sum(fs.read(v, a).nbytes for v in fs.video_ids() for a in arrays) / len(fs)
    result = {"model": args.model, "videos": len(fs), "frames_per_video": args.num_frames, "arrays": arrays,
              "mb_per_video": video_bytes / 1e6, "processes": args.processes, "reads": args.reads,
              "rounds": args.rounds, "codes": {}}
    for code, measured in rounds.items():
        keys = measured[0]
        result["codes"][code] = {
            "gb_s": {k: float(np.median([m[k] for m in measured])) for k in keys},
            "ratio": {k: float(np.median([ratios_of(m)[k] for m in measured])) for k in ratios_of(measured[0])}}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        _print_table(result, codes)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


def _without(argv: list[str], option: str) -> list[str]:
    """`argv` without `option VALUE` pairs (and without --work, set anew)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in (option, "--work"):
            skip = True
        elif not arg.startswith((option + "=", "--work=")):
            out.append(arg)
    return out


def _print_table(result: dict, codes: list[str]) -> None:
    print(f"{result['videos']} videos x {result['frames_per_video']} frames, arrays {', '.join(result['arrays'])}: "
          f"{result['mb_per_video']:.2f} MB per video; {result['processes']} process(es), median of "
          f"{result['rounds']} rounds; ratio to the raw memmap (GB/s per process)")
    print("| layout | " + " | ".join(codes) + " |")
    print("|---|" + "---|" * len(codes))
    first = result["codes"][codes[0]]
    for key in first["ratio"]:
        gb_key = key if not key.startswith("loader: ") else key.replace("loader: ", "loader freezeframe ")
        cells = [f"{result['codes'][c]['ratio'][key]:.2f} ({result['codes'][c]['gb_s'][gb_key]:.2f})" for c in codes]
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
