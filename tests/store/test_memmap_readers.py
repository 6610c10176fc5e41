"""The memmap training layout (`export-memmap`) and many readers of a store while a writer commits shards.

Stores are real: extracted with the CLI, the bundled tiny model and the sample videos. The concurrent
writer is a real `freezeframe extract` subprocess appending to the feature set being read.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from freezeframe.cli import main
from freezeframe.store import open_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.layout import TEMP_PREFIX
from freezeframe.store.tools.memmap import MEMMAP_DIR, MEMMAP_INDEX, export_memmap, open_memmap_export
from freezeframe.store.segment import Segment

VIDEOS = Path(__file__).parents[1] / "data" / "videos"
FILES = {"short": "short_32frames.mp4", "lowfps": "lowfps_6fps.mp4", "mpeg4": "test_mpeg4.avi",
         "archery": "archery_demo.mp4"}
TINY = ["--model", "ff-tiny-vit", "--pretrained", "none", "--no-progress"]
LIVE = ["--num-frames", "4", "--shard-size", "1", "--features", "embed,tokens", "--layers", "-1"]


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def extract(store: Path, name: str, files: dict[str, str], *args: str) -> None:
    listing = store.parent / f"{name}-{len(files)}-{'-'.join(files)}.csv"
    listing.write_text("video_id,path\n" + "".join(f"{v},{VIDEOS / f}\n" for v, f in files.items()))
    cli("extract", listing, "--store", store, "--name", name, "--workers", "0", *TINY, *args)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """'fps': 3 of the 4 videos (2 shards), 4 fps, embed+cls+tokens of blocks 0 and 3; 'clips': 3 clips x 4."""
    path = tmp_path_factory.mktemp("memmap") / "store"
    three = {k: FILES[k] for k in ("short", "lowfps", "mpeg4")}
    extract(path, "fps", three, "--fps", "4", "--features", "embed,cls,tokens", "--layers", "0,3", "--shard-size", "2")
    extract(path, "clips", FILES, "--clips", "3", "--frames-per-clip", "4", "--stride", "2", "--features", "embed",
            "--format", "hdf5")
    return path


@pytest.fixture
def store(base, tmp_path) -> Path:
    """A private copy of the base store (tests export into it and commit to it)."""
    shutil.copytree(base, tmp_path / "store")
    return tmp_path / "store"


def items(ds: FeatureDataset, epoch: int = 0) -> list[dict]:
    ds.set_epoch(epoch)
    return [ds[i] for i in range(len(ds))]


def assert_same_items(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["index"] == y["index"] and x.get("label") == y.get("label")
        assert x["inputs"].keys() == y["inputs"].keys()
        for key in x["inputs"]:
            assert x["inputs"][key].dtype == y["inputs"][key].dtype, key
            assert torch.equal(x["inputs"][key], y["inputs"][key]), key


def dataset(store, name, arrays, selection, ids=None) -> FeatureDataset:
    ids = list(ids or open_store(store)[name].video_ids())
    return FeatureDataset(store, name, ids, arrays, FrameSelection.parse(selection), labels=list(range(len(ids))))


# ---- the export -----------------------------------------------------------------------------------------
def test_export_equals_store_reads_exactly(store):
    output = cli("export-memmap", store, "--set", "fps")
    fs = open_store(store)["fps"]
    assert f"exported {len(fs.arrays())} arrays, 3 videos" in output and "tokens/3" in fs.arrays()
    directory = fs.path / MEMMAP_DIR
    index = json.loads((directory / MEMMAP_INDEX).read_text())
    assert index["shards"] == fs.shard_ids and len(fs.shard_ids) == 2
    assert set(index["arrays"]) == set(fs.arrays())
    table = Segment.open(directory / index["video_table"])  # the video index as exported: ids, shards, rows
    assert table.ids() == fs.video_ids()
    assert [tuple(table.entry(i)) for i in range(table.n)] == [tuple(fs.locate(v)) for v in fs.video_ids()]
    offsets = np.load(directory / index["row_offsets"])  # contiguous rows in sorted video id order
    assert offsets.tolist() == np.cumsum([0] + [fs.locate(v).n_rows for v in fs.video_ids()]).tolist()
    assert offsets[-1] == index["num_rows"] == fs.num_rows
    for array, meta in index["arrays"].items():
        flat = np.load(directory / meta["file"], mmap_mode="r")
        assert flat.shape == (fs.num_rows, *fs.arrays()[array]["shape"])
        assert flat.dtype == np.dtype(fs.arrays()[array]["dtype"])
        for i, video_id in enumerate(fs.video_ids()):
            expected = fs.read(video_id, array)
            got = flat[offsets[i]:offsets[i + 1]]
            assert got.dtype == expected.dtype and np.array_equal(got, expected, equal_nan=True), (array, video_id)
    export = open_memmap_export(fs, index["arrays"])
    for video_id in fs.video_ids():
        n = fs.locate(video_id).n_rows
        for frames in (None, slice(1, None, 2), np.array([n - 1, 0, 0, 1]), np.array([], dtype=np.int64)):
            assert np.array_equal(export.read(video_id, "tokens/3", frames), fs.read(video_id, "tokens/3", frames))


def test_export_subset_of_arrays_and_errors(store, run_cli):
    cli("export-memmap", store, "--set", "fps", "--arrays", "embed,block_input/1")  # block_input/1 is tokens/0
    fs = open_store(store)["fps"]
    index = json.loads((fs.path / MEMMAP_DIR / MEMMAP_INDEX).read_text())
    assert sorted(index["arrays"]) == ["embed", "tokens/0"]
    assert open_memmap_export(fs, ["embed"]) is not None
    assert open_memmap_export(fs, ["embed", "cls"]) is None  # not every requested array: not used
    assert not dataset(store, "fps", ["embed", "cls"], "uniform:8").uses_memmap
    assert dataset(store, "fps", ["embed", "block_input/1"], "uniform:8").uses_memmap
    bad = run_cli("export-memmap", store, "--set", "fps", "--arrays", "nope")
    assert bad.exit_code == 2 and "no array 'nope'" in bad.output
    assert run_cli("export-memmap", store, "--set", "missing").exit_code != 0


@pytest.mark.parametrize("name, arrays, selections", [
    ("fps", ["embed", "cls", "tokens/3", "block_input/1", "timestamps", "frame_indices"],
     ["all", "uniform:8", "uniform:50", "sparse-random:5", "sparse-random:50"]),
    ("clips", ["embed", "frame_indices"], ["stored-clips", "uniform:4", "sparse-random:6"]),
])
def test_dataset_items_identical_with_and_without_memmap(store, name, arrays, selections):
    without = {s: dataset(store, name, arrays, s) for s in selections}
    assert not any(ds.uses_memmap for ds in without.values())
    cli("export-memmap", store, "--set", name)
    for selection, plain in without.items():
        mapped = dataset(store, name, arrays, selection)
        assert mapped.uses_memmap
        for epoch in (0, 1):
            assert_same_items(items(plain, epoch), items(mapped, epoch))
    # through DataLoader workers, which open the maps lazily in their own process
    selection = "stored-clips" if name == "clips" else "uniform:8"
    plain, mapped = dataset(store, name, arrays, selection), dataset(store, name, arrays, selection)
    assert mapped.__getstate__()["_memmap"] is None  # a pickled dataset carries no open maps
    a = list(DataLoader(plain, batch_size=2, num_workers=0, collate_fn=collate))
    b = list(DataLoader(mapped, batch_size=2, num_workers=2, collate_fn=collate))
    for x, y in zip(a, b, strict=True):
        for key in x["inputs"]:
            assert torch.equal(x["inputs"][key], y["inputs"][key])


def test_stale_export_is_ignored(store):
    cli("export-memmap", store, "--set", "fps")
    fs = open_store(store)["fps"]
    index = json.loads((fs.path / MEMMAP_DIR / MEMMAP_INDEX).read_text())
    before = dataset(store, "fps", ["embed", "tokens/3"], "all")
    assert before.uses_memmap
    # a new shard committed after the export (the 4th video)
    extract(store, "fps", FILES, "--fps", "4", "--features", "embed,cls,tokens", "--layers", "0,3", "--shard-size", "2")
    fs.refresh()
    assert len(fs) == 4 and len(fs.shard_ids) == 3
    # poison the export: if anything still read it, the comparison below would fail
    for meta in index["arrays"].values():
        flat = np.load(fs.path / MEMMAP_DIR / meta["file"], mmap_mode="r+")
        flat[...] = 0 if flat.dtype.kind in "iu" else -7
        flat.flush()
        del flat
    assert open_memmap_export(fs, ["embed"]) is None
    for ids in (None, ["short", "lowfps"]):  # also when only videos the export holds are asked for
        ds = dataset(store, "fps", ["embed", "tokens/3", "frame_indices"], "all", ids)
        assert not ds.uses_memmap
        for item, video_id in zip(items(ds), ds.video_ids):
            assert np.array_equal(item["inputs"]["embed"].numpy(), fs.read(video_id, "embed"))
            assert np.array_equal(item["inputs"]["tokens/3"].numpy(), fs.read(video_id, "tokens/3"))
    # a dataset opened before the commit keeps its snapshot: the export matched it, and its maps were opened then
    assert before._memmap  # noqa: SLF001
    # re-export: up to date again
    cli("export-memmap", store, "--set", "fps")
    ds = dataset(store, "fps", ["embed"], "all")
    assert ds.uses_memmap
    assert all(np.array_equal(it["inputs"]["embed"].numpy(), fs.read(v, "embed")) for it, v in zip(items(ds), ds.video_ids))


def test_export_is_atomic(store, monkeypatch):
    fs = open_store(store)["fps"]
    # a temporary left by a killed exporter is invisible to readers
    dead = fs.path / f"{TEMP_PREFIX}somehost.999999-{MEMMAP_DIR}-deadbeef0000"
    dead.mkdir()
    (dead / MEMMAP_INDEX).write_text("{\"format\": \"freezeframe-memmap\", \"vers")
    assert open_memmap_export(fs, ["embed"]) is None
    assert not dataset(store, "fps", ["embed"], "all").uses_memmap
    first = export_memmap(fs, ["embed"])
    held = open_memmap_export(fs, ["embed"])  # a reader that mapped the first export
    expected = {v: fs.read(v, "embed") for v in fs.video_ids()}

    # an export interrupted after writing its arrays, before the rename: the first export stays in place
    import freezeframe.store.tools.memmap as memmap_module

    def crash(path):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(memmap_module, "_fsync_tree", crash)
    with pytest.raises(KeyboardInterrupt):
        export_memmap(fs, ["embed", "cls"])
    monkeypatch.undo()
    assert json.loads((fs.path / MEMMAP_DIR / MEMMAP_INDEX).read_text())["export_id"] == first["export_id"]
    assert not [p for p in fs.path.iterdir() if p.name.startswith(TEMP_PREFIX) and p != dead]
    assert open_memmap_export(fs, ["embed", "cls"]) is None
    assert open_memmap_export(fs, ["embed"]).index["export_id"] == first["export_id"]

    # a replacing export: new files only, old ones gone, no temporaries left; the held maps stay readable
    second = export_memmap(fs, ["embed", "cls"])
    names = sorted(p.name for p in (fs.path / MEMMAP_DIR).iterdir())
    assert names == sorted([MEMMAP_INDEX, second["video_table"], second["row_offsets"]]
                           + [m["file"] for m in second["arrays"].values()])
    assert all(second["export_id"] in n for n in names if n != MEMMAP_INDEX)
    assert not [p for p in fs.path.iterdir() if p.name.startswith(TEMP_PREFIX) and p != dead]
    for video_id, value in expected.items():
        assert np.array_equal(held.read(video_id, "embed"), value)
    # an index from one export never pairs with another export's files: a reader of the first index finds
    # its files gone and reads the store (or the new export), never mixes
    assert not (fs.path / MEMMAP_DIR / first["arrays"]["embed"]["file"]).exists()
    assert open_memmap_export(fs, ["embed", "cls"]).index["export_id"] == second["export_id"]


# ---- many readers while a writer commits ------------------------------------------------------------------
LIVE_FILES = ["short_32frames.mp4", "lowfps_6fps.mp4", "test_mpeg4.avi", "archery_demo.mp4", "ntsc_29.97fps.mp4",
              "v_GGSY1Qvo990.mp4"]


def snapshot_read(store: str, name: str, array: str) -> dict[str, tuple[int, bytes]]:
    fs = FeatureSet(Path(store), name)
    return {v: (fs.locate(v).n_rows, fs.read(v, array).tobytes()) for v in fs.video_ids()}


def reader_process(store: str, name: str, stop_file: str, queue) -> None:
    """Polls the store with fresh snapshots until told to stop; reports every (video, n, bytes) it saw."""
    seen: dict[str, set] = {}
    rounds = 0
    fs = FeatureSet(Path(store), name)
    while True:
        stop = Path(stop_file).exists()
        fs.refresh()
        for video_id in fs.video_ids():
            value = fs.read(video_id, "tokens/3")
            seen.setdefault(video_id, set()).add((fs.locate(video_id).n_rows, value.shape[0], value.tobytes()))
        rounds += 1
        if stop:
            break
        time.sleep(0.05)
    queue.put((rounds, {v: sorted(s) for v, s in seen.items()}))


@pytest.fixture
def live_store(tmp_path) -> Path:
    store = tmp_path / "live"
    extract(store, "live", {"first": "lowfps_6fps.mp4"}, *LIVE)
    return store


def test_many_readers_while_extract_commits(live_store, tmp_path):
    store, name = live_store, "live"
    cli("export-memmap", store, "--set", name)  # up to date now, stale after the writer's first commit
    export_shards = json.loads((store / name / MEMMAP_DIR / MEMMAP_INDEX).read_text())["shards"]
    opened_early = FeatureSet(store, name)
    assert opened_early.video_ids() == ["first"]

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    stop_file = tmp_path / "stop"
    readers = [ctx.Process(target=reader_process, args=(str(store), name, str(stop_file), queue)) for _ in range(2)]
    for proc in readers:
        proc.start()
    writer = subprocess.Popen(
        [sys.executable, "-m", "freezeframe.cli", "extract", *[str(VIDEOS / f) for f in LIVE_FILES], "--store",
         str(store), "--name", name, *TINY, *LIVE, "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    counts: list[int] = []  # videos listed, polled every few ms: commits come in a burst after the model loads

    def watch() -> None:
        while writer.poll() is None:
            counts.append(len(FeatureSet(store, name).video_ids()))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    seen: dict[str, set] = {}
    polls = memmap_polls = 0
    while True:
        done = writer.poll() is not None
        ids = FeatureSet(store, name).video_ids()
        ds = FeatureDataset(store, name, ids, ["embed", "tokens/3"], FrameSelection("all"))
        uses = ds.uses_memmap
        assert uses == (ds._open().shard_ids == export_shards)  # noqa: SLF001 - the export only while up to date
        memmap_polls += uses
        for batch in DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate):
            for i, index in enumerate(batch["index"].tolist()):
                value = batch["inputs"]["tokens/3"][i].numpy()
                seen.setdefault(ids[index], set()).add((value.shape[0], value.tobytes()))
        polls += 1
        if done:
            break
    output = writer.communicate()[0]
    watcher.join()
    assert writer.returncode == 0, output
    stop_file.touch()
    results = [queue.get(timeout=60) for _ in readers]
    for proc in readers:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    final = snapshot_read(str(store), name, "tokens/3")
    assert len(final) == 1 + len(LIVE_FILES)  # "first" is a copy of lowfps under another id
    # every read of a listed video returned its full n_frames and the final value (never a partial shard)
    for video_id, values in seen.items():
        assert values == {(4, final[video_id][1])}, video_id
    for rounds, reader_seen in results:
        assert rounds >= 2
        assert set(reader_seen) == set(final)  # the last round, after the writer finished, sees everything
        for video_id, values in reader_seen.items():
            assert values == [(4, 4, final[video_id][1])], video_id
    assert polls >= 2 and set(seen) == set(final)
    # readers saw the store while the writer was half-way (otherwise this test proves little)
    assert any(1 < c < len(final) for c in counts), counts
    # refresh() picks up the shards committed since opening
    assert opened_early.video_ids() == ["first"]
    opened_early.refresh()
    assert opened_early.video_ids() == sorted(final)
    assert len(opened_early.shard_ids) == len(final)
