"""The training read path: uncompressed shards read from memory maps of their chunks, chosen rows copied alone and
straight into a caller's buffer, a DataLoader batch read into one tensor that collate hands on.

One real store, extracted once with the CLI and the bundled tiny model (3 sample videos, 16 frames, token maps of
the last block) with chunks of a few rows, so that reads cross chunk boundaries; an HDF5 copy of it. Expected
values are read with zarr and h5py themselves.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from torch.utils.data import DataLoader

from freezeframe.errors import StoreError
from freezeframe.cli import main
from freezeframe.store import open_store, zarr_backend
from freezeframe.store.confine import UnsafeStoreError
from freezeframe.store.tools.convert import convert_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate, collate_padded

VIDEOS = Path(__file__).parents[1] / "data" / "videos"
FILES = {"short": "short_32frames.mp4", "lowfps": "lowfps_6fps.mp4", "mpeg4": "test_mpeg4.avi"}
ARRAY = "tokens/3"
ROWS = 16


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("readpath")
    listing = root / "videos.csv"
    listing.write_text("video_id,path\n" + "".join(f"{v},{VIDEOS / f}\n" for v, f in FILES.items()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zarr_backend, "CHUNK_BYTES", 10_000)  # a few rows per chunk
        result = CliRunner().invoke(main, ["extract", str(listing), "--store", str(root / "zarr"), "--name", "s",
                                           "--workers", "0", "--model", "ff-tiny-vit", "--pretrained", "none",
                                           "--no-progress", "--num-frames", str(ROWS), "--features", "embed,tokens",
                                           "--layers", "-1", "--shard-size", "2"])
        assert result.exit_code == 0, result.output
        assert convert_store(root / "zarr", root / "hdf5", format="hdf5").ok
    return {"zarr": root / "zarr", "hdf5": root / "hdf5"}


def stored(store: Path, video_id: str) -> np.ndarray:
    """The video's rows as zarr or h5py itself reads them from its shard."""
    fs = open_store(store)["s"]
    entry = fs.locate(video_id)
    shard = next(p for p in (fs.path / "shards").glob(f"{entry.shard}.*") if p.suffix in (".h5", ".zarr"))
    if shard.suffix == ".h5":
        with h5py.File(shard, "r", locking=False) as file:
            return file[ARRAY][entry.row_start:entry.row_start + entry.n_rows]
    return zarr.open_group(str(shard), mode="r")[ARRAY][entry.row_start:entry.row_start + entry.n_rows]


@pytest.mark.parametrize("layout", ["zarr", "hdf5"])
def test_reads_cross_chunks_and_land_in_the_given_buffer(stores, layout):
    fs = open_store(stores[layout])["s"]
    reader_chunk_rows = set()
    for video_id in FILES:
        truth = stored(stores[layout], video_id)
        assert len(truth) == ROWS
        out = np.full_like(truth, 7)
        assert fs.read(video_id, ARRAY, out=out) is out
        np.testing.assert_array_equal(out, truth)
        for rows in ([15, 0, 3, 3, 9, 4], [5], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], []):
            chosen = np.full((len(rows), *truth.shape[1:]), 7, truth.dtype)
            assert fs.read(video_id, ARRAY, np.array(rows, dtype=np.int64), out=chosen) is chosen
            np.testing.assert_array_equal(chosen, truth[rows])
        np.testing.assert_array_equal(fs.read(video_id, ARRAY, slice(1, None, 4)), truth[1::4])
        with pytest.raises(ValueError, match="output buffer"):
            fs.read(video_id, ARRAY, out=np.empty((ROWS - 1, *truth.shape[1:]), truth.dtype))
        reader = fs._reader(fs.locate(video_id).shard, fs.shard_info(fs.locate(video_id).shard))
        reader_chunk_rows.add(reader._raw_array(ARRAY).chunk_rows)  # read from maps, not through zarr/h5py
    assert max(reader_chunk_rows) < ROWS  # every video spans several chunks


def test_chosen_rows_read_only_the_chunks_they_lie_in(stores, tmp_path):
    """A sparse read copies its rows alone: a damaged chunk no chosen row lies in is never touched."""
    copy = tmp_path / "store"
    shutil.copytree(stores["zarr"], copy)
    fs = open_store(copy)["s"]
    entry = fs.locate("short")
    array = fs._reader(entry.shard, fs.shard_info(entry.shard))._raw_array(ARRAY)
    truth = stored(stores["zarr"], "short")
    first, last = entry.row_start // array.chunk_rows, (entry.row_start + ROWS - 1) // array.chunk_rows
    middle = Path(array._chunk_path.format(first + 1))
    assert first + 1 < last and middle.exists()
    middle.write_bytes(middle.read_bytes()[:100])  # truncated
    ends = np.array([0, ROWS - 1])
    np.testing.assert_array_equal(fs.read("short", ARRAY, ends), truth[ends])
    with pytest.raises(StoreError, match="truncated"):  # a damaged chunk is one line naming its shard
        fs.read("short", ARRAY)


@pytest.mark.parametrize("selection", ["uniform:5", "clips-random:2:3", "all"])
def test_a_batch_is_the_tensor_its_items_were_read_into(stores, selection):
    chosen = FrameSelection.parse(selection)
    dataset = FeatureDataset(stores["zarr"], "s", list(FILES), [ARRAY, "embed"], chosen, labels=[0, 1, 2])
    items = dataset.__getitems__([2, 0])
    batch = collate(items)
    tokens = batch["inputs"][ARRAY]
    assert tokens.data_ptr() == items[0]["inputs"][ARRAY].data_ptr()  # the items' tensor itself, no stack
    assert batch["label"].tolist() == [2, 0] and batch["index"].tolist() == [2, 0]
    for b, index in enumerate([2, 0]):
        video_id = list(FILES)[index]
        rows = chosen.rows(ROWS, np.random.default_rng((0, 0, index)))
        expected = torch.from_numpy(np.ascontiguousarray(stored(stores["zarr"], video_id)[rows]))
        torch.testing.assert_close(tokens[b].reshape(expected.shape), expected, rtol=0, atol=0)
        single = dataset[index]["inputs"][ARRAY]
        assert tokens[b].shape == single.shape
        torch.testing.assert_close(tokens[b], single, rtol=0, atol=0)
    built = list(items)  # the items one by one, as a list collates them
    for collated, listed in [(batch, collate(built)), (collate_padded(items), collate_padded(built))]:
        assert collated.keys() == listed.keys() and collated["inputs"].keys() == listed["inputs"].keys()
        for key, value in listed["inputs"].items():
            torch.testing.assert_close(collated["inputs"][key], value, rtol=0, atol=0)
    if selection == "uniform:5":  # DataLoader workers read batches in shared memory and hand over the same values
        loader = DataLoader(dataset, batch_size=2, sampler=[2, 0], collate_fn=collate, num_workers=2)
        (from_workers,) = list(loader)
        torch.testing.assert_close(from_workers["inputs"][ARRAY], tokens, rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["zarr", "hdf5"])
def test_a_batch_read_is_each_video_read(stores, layout):
    fs = open_store(stores[layout])["s"]
    ids = ["mpeg4", "short", "lowfps", "short"]  # two shards (two videos a shard), one video twice
    assert len({fs.locate(v).shard for v in ids}) == 2
    frames = [np.array(rows, dtype=np.int64) for rows in ([15, 0, 3, 3], [1, 2, 3, 4], [9, 9, 9, 9], [0, 5, 10, 15])]
    truths = {v: stored(stores[layout], v) for v in FILES}
    out = np.full((len(ids), 4, *truths["short"].shape[1:]), 7, truths["short"].dtype)
    assert fs.read_batch(ids, ARRAY, frames, out) is out
    for b, (video_id, rows) in enumerate(zip(ids, frames)):
        np.testing.assert_array_equal(out[b], truths[video_id][rows])
    whole = np.empty((2, ROWS, *truths["short"].shape[1:]), truths["short"].dtype)
    fs.read_batch(ids[:2], ARRAY, [None, None], whole)
    np.testing.assert_array_equal(whole, np.stack([truths["mpeg4"], truths["short"]]))
    with pytest.raises(IndexError, match="'lowfps' with 16 frames"):
        fs.read_batch(["short", "lowfps"], ARRAY, [np.array([0]), np.array([ROWS])], out[:2, :1])


def test_maps_are_bounded_and_only_of_regular_files(stores, tmp_path, monkeypatch):
    from freezeframe.store import mapped

    monkeypatch.setattr(mapped, "MAPS_KEPT", 2)
    monkeypatch.setattr(mapped, "_maps", type(mapped._maps)())
    fs = open_store(stores["zarr"])["s"]
    for video_id in FILES:
        np.testing.assert_array_equal(fs.read(video_id, ARRAY), stored(stores["zarr"], video_id))
        assert len(mapped._maps) <= 2
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeStoreError, match="not a regular file"):
        mapped.mapped_file(str(fifo))
    link = tmp_path / "link"
    link.symlink_to(next(Path(p) for p in mapped._maps))
    with pytest.raises(OSError):
        mapped.mapped_file(str(link))
    short = tmp_path / "short"
    short.write_bytes(b"x" * 10)
    assert mapped.mapped_file(str(short), nbytes=11) is None
    files = []
    for i in range(6):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(bytes([i]) * 4096)
    failures = []

    def read_many(seed: int) -> None:  # threads (as verify's) share the table of maps
        rng = np.random.default_rng(seed)
        try:
            for i in rng.integers(0, len(files), 2000):
                assert mapped.mapped_file(str(files[i]), 4096)[0] == i
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
    threads = [threading.Thread(target=read_many, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len(mapped._maps) <= 2
