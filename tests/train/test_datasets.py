"""FeatureDataset: which arrays and which frames an item carries, stored clips, preload, pickling, workers, errors.

One small real store, extracted once per module with the CLI and the bundled tiny model:
  - "fps": 4 real sample videos at 4 frames per second (5 to 40 rows per video), embed + cls +
    token maps of blocks 0, 1 and 3 (so block_input/1 is not stored: it is tokens/0);
  - "clips": the same videos as 3 clips x 4 frames (stride 2), embed + tokens of block 3.
Expected rows are computed here independently (integer arithmetic, `frame_indices` read back).
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from freezeframe.cli import main
from freezeframe.errors import InputError
from freezeframe.store import open_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection, block_source, collate

VIDEOS = Path(__file__).parents[1] / "data" / "videos"
FILES = {  # video id -> file; frame counts 32, 57, 164, 280
    "short": "short_32frames.mp4",
    "lowfps": "lowfps_6fps.mp4",
    "mpeg4": "test_mpeg4.avi",
    "archery": "archery_demo.mp4",
}
CLIPS, PER_CLIP, STRIDE = 3, 4, 2


def extract(store: Path, name: str, *args: str) -> None:
    # a CSV list gives each file a chosen video id
    listing = store.parent / f"{name}.csv"
    listing.write_text("video_id,path\n" + "".join(f"{v},{VIDEOS / f}\n" for v, f in FILES.items()))
    result = CliRunner().invoke(main, [
        "extract", str(listing), "--store", str(store), "--name", name, "--model", "ff-tiny-vit",
        "--pretrained", "none", "--workers", "0", "--no-progress", *args,
    ])
    assert result.exit_code == 0, result.output + repr(result.exception)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("datasets") / "store"
    extract(path, "fps", "--fps", "4", "--features", "embed,cls,tokens", "--layers", "0,1,3")
    extract(path, "clips", "--clips", str(CLIPS), "--frames-per-clip", str(PER_CLIP), "--stride", str(STRIDE),
            "--features", "embed,tokens", "--layers", "3")
    return path


@pytest.fixture(scope="module")
def fs(store):
    return open_store(store)["fps"]


@pytest.fixture(scope="module")
def lengths(fs) -> dict[str, int]:
    out = {v: fs.locate(v).n_rows for v in FILES}
    # the store must give the frame selections something to do: shorter and longer than 8 rows
    assert min(out.values()) < 8 < max(out.values()), out
    assert len(set(out.values())) == len(out), out
    return out


def dataset(store, arrays, selection="uniform:8", ids=tuple(FILES), name="fps", **kw) -> FeatureDataset:
    sel = selection if isinstance(selection, FrameSelection) else FrameSelection.parse(selection)
    return FeatureDataset(store, name, list(ids), arrays, sel, labels=list(range(len(ids))), **kw)


def rows_of(fs, video_id: str, item: dict) -> np.ndarray:
    """Which stored rows an item carries, recovered from its `frame_indices` (distinct per row here)."""
    full = fs.read(video_id, "frame_indices")
    assert (np.diff(full) > 0).all()
    got = item["inputs"]["frame_indices"].numpy()
    rows = np.searchsorted(full, got)
    assert (full[rows] == got).all()
    return rows


def segments(n: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment i of a video with n rows split in t: [i*n//t, max(i*n//t + 1, (i+1)*n//t))."""
    i = np.arange(t)
    low = i * n // t
    return low, np.maximum(low + 1, (i + 1) * n // t)


# ---- arrays --------------------------------------------------------------------------------------
def test_items_carry_the_requested_arrays_at_the_selected_rows(store, fs, lengths):
    ds = dataset(store, ["embed", "tokens/3"], "uniform:8")
    assert len(ds) == len(FILES)
    for index, video_id in enumerate(FILES):
        item = ds[index]
        assert set(item["inputs"]) == {"embed", "tokens/3"}
        assert item["label"] == index and item["index"] == index
        n = lengths[video_id]
        rows = np.minimum((2 * np.arange(8) + 1) * n // 16, n - 1)  # segment middles
        for array in ("embed", "tokens/3"):
            value = item["inputs"][array]
            assert value.dtype == torch.float16
            np.testing.assert_array_equal(value.numpy(), fs.read(video_id, array)[rows])
        assert item["inputs"]["tokens/3"].shape == (8, 17, 64)


def test_datasets_share_the_callers_open_feature_set_and_workers_open_their_own(store):
    """A training run's train and validation datasets read through the feature set the run has open (no store
    opened again); a copy sent to a worker process (pickled) opens its own."""
    opened = open_store(store)["fps"]
    train = FeatureDataset(store, opened, ["short", "lowfps"], ["embed"], FrameSelection.parse("uniform:4"), [0, 1])
    val = FeatureDataset(store, opened, ["archery"], ["embed"], FrameSelection.parse("uniform:4"), [1])
    assert train.feature_set == val.feature_set == "fps"
    assert train._open() is opened and val._open() is opened
    np.testing.assert_array_equal(val[0]["inputs"]["embed"].numpy(),
                                  opened.read("archery", "embed")[val._plan(0)[1]])
    copy = pickle.loads(pickle.dumps(train))
    assert copy._open() is not opened and copy._open().name == "fps"
    np.testing.assert_array_equal(copy[1]["inputs"]["embed"].numpy(), train[1]["inputs"]["embed"].numpy())


@pytest.mark.parametrize("preload", [False, True])
def test_arrays_not_requested_are_never_read(store, tmp_path, preload):
    """Delete every array but `embed` from a copy of the store: an embed-only dataset still works."""
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    shards = sorted((copy / "fps" / "shards").glob("*.zarr"))
    assert shards
    removed = 0
    for shard in shards:
        for array in ("cls", "tokens", "block_input", "timestamps", "frame_indices"):
            if (shard / array).exists():
                shutil.rmtree(shard / array)
                removed += 1
    assert removed >= 5 * len(shards)
    damaged = open_store(copy)["fps"]
    with pytest.raises(Exception):  # the deletion really removed data the dataset could have read
        damaged.read("archery", "tokens/3")

    original = dataset(store, ["embed"], "all")
    ds = dataset(copy, ["embed"], "all", preload=preload)
    for index in range(len(ds)):
        assert set(ds[index]["inputs"]) == {"embed"}
        torch.testing.assert_close(ds[index]["inputs"]["embed"], original[index]["inputs"]["embed"], rtol=0, atol=0)
    # asking for a deleted array does fail: at construction with preload, else at the first item
    with pytest.raises(Exception):
        ds = dataset(copy, ["embed", "tokens/3"], "all", preload=preload)
        ds[0]


def test_unknown_video_ids_are_an_input_error(store):
    with pytest.raises(InputError) as err:
        dataset(store, ["embed"], ids=["archery", "no-such-video", "missing/too"])
    message = str(err.value)
    assert "2 video ids" in message and "'no-such-video'" in message and "'fps'" in message


def test_missing_array_is_an_input_error_listing_what_exists(store):
    with pytest.raises(InputError) as err:
        dataset(store, ["embed", "tokens/2"])
    message = str(err.value)
    assert "'tokens/2'" in message and "'fps'" in message
    assert "tokens/3" in message and "embed" in message  # lists the arrays it has
    with pytest.raises(InputError, match="no array 'block_input/2'"):
        dataset(store, ["block_input/2"], name="clips")  # neither block_input/2 nor tokens/1 stored


def test_block_input_resolves_to_the_previous_blocks_tokens(store, fs):
    stored = fs.arrays()
    assert "block_input/1" not in stored and "tokens/0" in stored  # block 1's input is block 0's output
    assert {"block_input/0", "block_input/3"} <= set(stored)  # blocks 0 and 3 keep their own inputs
    assert block_source("block_input/1", stored) == "tokens/0"
    assert block_source("block_input/2", stored) == "tokens/1"
    assert block_source("block_input/3", stored) == "block_input/3"
    assert block_source("tokens/3", stored) == "tokens/3"

    ds = dataset(store, ["block_input/1", "block_input/3", "tokens/0"], "all")
    for index, video_id in enumerate(FILES):
        item = ds[index]["inputs"]
        np.testing.assert_array_equal(item["block_input/1"].numpy(), fs.read(video_id, "tokens/0"))
        np.testing.assert_array_equal(item["block_input/3"].numpy(), fs.read(video_id, "block_input/3"))
        np.testing.assert_array_equal(fs.block_input(video_id, 1), item["block_input/1"].numpy())
        # block 3's own input is not block 1's output: the resolution must not skip a block
        assert not np.array_equal(item["block_input/3"].numpy(), fs.read(video_id, "tokens/1"))


# ---- frame selections ------------------------------------------------------------------------------
def test_frame_selection_parsing():
    assert FrameSelection.parse("all") == FrameSelection("all")
    assert FrameSelection.parse("stored-clips") == FrameSelection("stored-clips")
    assert FrameSelection.parse("uniform:4") == FrameSelection("uniform", 4)
    assert FrameSelection.parse("sparse-random:16") == FrameSelection("sparse-random", 16)
    assert FrameSelection.parse("12") == FrameSelection("uniform", 12)
    for text in ("all", "stored-clips", "uniform:4", "sparse-random:16"):
        assert str(FrameSelection.parse(text)) == text
    with pytest.raises(InputError, match="unknown frame selection"):
        FrameSelection.parse("random:4")
    with pytest.warns(FutureWarning, match="now called 'stored-clips'"):  # the old name still reads
        assert FrameSelection.parse("views") == FrameSelection("stored-clips")
    with pytest.raises(InputError, match="at least 1"):
        FrameSelection.parse("uniform:0")


def test_all_gives_every_row_and_collate_refuses_ragged_batches(store, fs, lengths):
    ds = dataset(store, ["embed", "frame_indices"], "all")
    for index, video_id in enumerate(FILES):
        item = ds[index]
        assert item["inputs"]["embed"].shape == (lengths[video_id], 32)
        np.testing.assert_array_equal(item["inputs"]["frame_indices"].numpy(), fs.read(video_id, "frame_indices"))
    with pytest.raises(InputError, match="uniform:8"):
        collate([ds[0], ds[1]])


def test_uniform_takes_segment_middles_even_when_a_video_is_shorter(store, fs, lengths):
    ds = dataset(store, ["embed", "frame_indices"], "uniform:8")
    for index, video_id in enumerate(FILES):
        n = lengths[video_id]
        rows = rows_of(fs, video_id, ds[index])
        np.testing.assert_array_equal(rows, np.minimum((2 * np.arange(8) + 1) * n // 16, n - 1))
    short = ds[list(FILES).index("short")]
    assert lengths["short"] < 8 and len(np.unique(rows_of(fs, "short", short))) == lengths["short"]


def test_sparse_random_draws_fresh_frames_each_epoch_inside_the_segments(store, fs, lengths):
    t = 8
    ds = dataset(store, ["embed", "frame_indices"], f"sparse-random:{t}", seed=3)
    drawn: dict[str, list[tuple]] = {v: [] for v in FILES}
    for epoch in range(30):
        ds.set_epoch(epoch)
        for index, video_id in enumerate(FILES):
            item = ds[index]
            rows = rows_of(fs, video_id, item)
            low, high = segments(lengths[video_id], t)
            assert ((rows >= low) & (rows < high)).all(), (video_id, epoch, rows)
            np.testing.assert_array_equal(item["inputs"]["embed"].numpy(), fs.read(video_id, "embed")[rows])
            drawn[video_id].append(tuple(rows))
    for video_id, draws in drawn.items():
        n = lengths[video_id]
        if n < 2 * t:
            continue
        # a long video: different frames in (nearly) every epoch, and every segment explored
        assert len(set(draws)) >= 25, (video_id, len(set(draws)))
        per_segment = np.array(draws).T
        low, high = segments(n, t)
        for seg, values in enumerate(per_segment):
            assert len(set(values)) >= min(3, high[seg] - low[seg]), (video_id, seg, sorted(set(values)))


def test_sparse_random_is_reproducible_for_the_same_seed_epoch_and_index(store):
    a = dataset(store, ["frame_indices"], "sparse-random:8", seed=7)
    b = dataset(store, ["frame_indices"], "sparse-random:8", seed=7)
    other_seed = dataset(store, ["frame_indices"], "sparse-random:8", seed=8)
    index = list(FILES).index("archery")
    a.set_epoch(5)
    b.set_epoch(4)
    first = a[index]["inputs"]["frame_indices"]
    assert not torch.equal(first, b[index]["inputs"]["frame_indices"])
    b.set_epoch(5)
    assert torch.equal(first, b[index]["inputs"]["frame_indices"])  # another instance, same (seed, epoch, index)
    a.set_epoch(0)
    a[index]
    a.set_epoch(5)
    assert torch.equal(first, a[index]["inputs"]["frame_indices"])  # not a stream: going back gives it again
    other_seed.set_epoch(5)
    assert not torch.equal(first, other_seed[index]["inputs"]["frame_indices"])


def test_sparse_random_rows_stay_in_their_segments_for_every_length():
    """Also where floating-point segment edges would land just below a whole number (26 rows in 46)."""
    for n in range(1, 120):
        for t in (1, 2, 3, 7, 8, 16, 22, 26, 46):
            low, high = segments(n, t)
            selection = FrameSelection("sparse-random", t)
            for seed in range(3):
                rows = selection.rows(n, np.random.default_rng(seed))
                assert ((rows >= low) & (rows < high)).all(), (n, t, seed, rows)


def test_stored_clips_are_clip_major_with_frames_per_clip(store):
    clips = open_store(store)["clips"]
    assert clips.provenance["sampling"]["frames_per_clip"] == PER_CLIP
    ds = dataset(store, ["embed", "tokens/3", "block_input/3", "frame_indices"], "stored-clips", name="clips")
    for index, video_id in enumerate(FILES):
        item = ds[index]["inputs"]
        assert item["embed"].shape == (CLIPS, PER_CLIP, 32)
        assert item["tokens/3"].shape == item["block_input/3"].shape == (CLIPS, PER_CLIP, 17, 64)
        stored = clips.read(video_id, "tokens/3")
        np.testing.assert_array_equal(item["tokens/3"].numpy(), stored.reshape(CLIPS, PER_CLIP, 17, 64))
        indices = item["frame_indices"].numpy()
        assert (np.diff(indices, axis=1) == STRIDE).all()  # each clip: consecutive frames, `stride` apart
        source_frames = clips.video_info(video_id)["source_frames"]
        assert indices[0, 0] == 0 and indices[-1, -1] == source_frames - 1  # evenly spread over the video
        assert (np.diff(indices[:, 0]) > 0).all()
    batch = collate([ds[0], ds[1]])
    assert batch["inputs"]["embed"].shape == (2, CLIPS, PER_CLIP, 32)


def test_stored_clips_need_a_clips_extraction(store):
    with pytest.raises(InputError, match="--clips"):
        dataset(store, ["embed"], "stored-clips", name="fps")


# ---- preload, pickling, workers -------------------------------------------------------------------
@pytest.mark.parametrize("selection,name", [("all", "fps"), ("uniform:8", "fps"), ("sparse-random:8", "fps"),
                                            ("stored-clips", "clips")])
def test_preload_gives_identical_items(store, selection, name):
    arrays = ["embed", "tokens/3", "frame_indices"] + (["block_input/1"] if name == "fps" else [])
    lazy = dataset(store, arrays, selection, name=name, seed=1)
    loaded = dataset(store, arrays, selection, name=name, seed=1, preload=True)
    for epoch in (0, 1, 2):
        lazy.set_epoch(epoch)
        loaded.set_epoch(epoch)
        for index in range(len(lazy)):
            a, b = lazy[index], loaded[index]
            assert a["label"] == b["label"] and a["index"] == b["index"] and set(a["inputs"]) == set(b["inputs"])
            for array in a["inputs"]:
                assert a["inputs"][array].dtype == b["inputs"][array].dtype
                assert torch.equal(a["inputs"][array], b["inputs"][array]), (selection, epoch, index, array)


def test_pickling_drops_the_open_store(store):
    ds = dataset(store, ["embed", "tokens/3"], "sparse-random:8", seed=2)
    ds.set_epoch(3)
    before = ds[3]
    assert ds._fs is not None  # reading opened the store
    data = pickle.dumps(ds)
    assert ds._fs is not None  # pickling does not close the original's store
    assert len(data) < 20_000  # ids, arrays and lengths only: no zarr handles, no features
    copy = pickle.loads(data)
    assert copy._fs is None and copy.epoch == 3
    after = copy[3]
    for array in before["inputs"]:
        assert torch.equal(before["inputs"][array], after["inputs"][array])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_the_store(store, fs, context):
    """num_workers=2; with spawn the dataset reaches the workers pickled, so each reopens the store."""
    ds = dataset(store, ["embed", "frame_indices"], "sparse-random:8", seed=4)
    ds[0]  # an open store in the parent must not travel
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate, multiprocessing_context=context)
        batches = list(loader)
        assert len(batches) == len(FILES)
        for index, batch in enumerate(batches):
            expected = ds[index]
            assert batch["index"].tolist() == [index] and batch["label"].tolist() == [index]
            for array in ("embed", "frame_indices"):
                assert torch.equal(batch["inputs"][array][0], expected["inputs"][array]), (context, epoch, index)
        if epoch == 0:
            first = [b["inputs"]["frame_indices"] for b in batches]
    # the workers followed set_epoch: the long videos got other frames in epoch 1
    changed = [not torch.equal(a, b["inputs"]["frame_indices"]) for a, b in zip(first, batches)]
    assert sum(changed) >= 2
