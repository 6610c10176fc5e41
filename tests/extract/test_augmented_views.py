"""Cached augmented views (`extract --views 2`): they differ from the plain view, each is reproducible from its seed
(recomputed here from the decoded frames; the same bytes on a rerun with another worker count), every reader serves
them, appending with other augmentation is refused, and training reads a different view each epoch while
evaluation reads the plain one.

One real store per module: 3 sample videos, 4 frames each, the bundled tiny CLIP, `--views 2`.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from freezeframe.cli import main
from freezeframe.errors import InputError
from freezeframe.extract import AugmentConfig, ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig
from freezeframe.extract.augment import ViewDraw, apply_view, draw_view
from freezeframe.extract.preprocess import PreprocessConfig
from freezeframe.extract.decode import PyAVReader
from freezeframe.store import open_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection
from freezeframe.train.jobs import train_run
from freezeframe.train.loop import TrainConfig

VIDEOS = Path(__file__).parents[1] / "data" / "videos"
FILES = {"short": "short_32frames.mp4", "lowfps": "lowfps_6fps.mp4", "archery": "archery_demo.mp4"}
NAME, VIEWS = "aug", 2
ARRAYS = ("embed", "tokens/3", "block_input/3")


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)


def extract(store: Path, *args: str, workers: int = 0):
    listing = store.parent / "videos.csv"
    listing.write_text("video_id,path\n" + "".join(f"{v},{VIDEOS / f}\n" for v, f in FILES.items()))
    # a batch of 3 images is one frame's 3 views: every forward sees the same input whatever the worker count
    return cli("extract", listing, "--store", store, "--name", NAME, "--model", "ff-tiny-vit", "--pretrained", "none",
               "--num-frames", "4", "--features", "embed,tokens", "--layers", "-1", "--batch-size", "3",
               "--workers", str(workers), "--no-progress", *args)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("views") / "store"
    result = extract(path, "--views", str(VIEWS))
    assert result.exit_code == 0, result.output
    assert "views     plain + 2 augmented per frame (randaugment=rand-m7-n4-mstd0.5-inc1" in result.output
    return path


@pytest.fixture(scope="module")
def fs(store):
    return open_store(store)[NAME]


def test_views_are_stored_beside_the_plain_arrays_and_differ_from_them(fs):
    stored = fs.arrays()
    for array in ARRAYS:
        for view in (1, 2):
            assert stored[f"views/{view}/{array}"] == stored[array]
    assert not any(a.startswith("views/") and a.endswith(("timestamps", "frame_indices")) for a in stored)
    for video in FILES:
        plain, one, two = (fs.read(video, a).astype(np.float32) for a in ("embed", "views/1/embed", "views/2/embed"))
        assert plain.shape == one.shape == (4, 32)
        scale = np.abs(plain).max()
        assert np.abs(one - plain).max() > 0.1 * scale and np.abs(two - one).max() > 0.1 * scale
        assert not np.array_equal(fs.read(video, "views/1/tokens/3"), fs.read(video, "tokens/3"))


def test_provenance_records_the_augmentation_and_its_seeding(fs):
    augment = fs.provenance["augment"]
    assert augment["views"] == VIEWS and augment["seed"] == 0
    assert augment["randaugment"] == "rand-m7-n4-mstd0.5-inc1"  # EVL's --auto_augment
    assert augment["crop"] == {"scale": [0.08, 1.0], "ratio": [0.75, 4 / 3]} and augment["flip"] == 0.0
    assert augment["order"].startswith("randaugment on the decoded frame, normalise, crop resized to the input size by "
                                       "F.interpolate")
    assert "sha256(video id)" in augment["seeding"]
    assert "frames_per_view" not in fs.provenance  # clip length lives in sampling only


def test_each_view_is_recomputed_from_its_seed(fs):
    """Decode the stored frames, draw each view from (seed, video id, view), run the same tiny model: the stored
    rows are that, and a wrong seed is not."""
    backbone = ClipBackbone(ClipConfig(model="ff-tiny-vit", pretrained="none", features=("embed",)))
    config = AugmentConfig(views=VIEWS)
    for video, name in FILES.items():
        reader = PyAVReader(str(VIDEOS / name))
        indices = fs.read(video, "frame_indices")
        frames = reader.get(np.unique(indices))[np.searchsorted(np.unique(indices), indices)]
        reader.close()
        for view in (1, 2):
            for seed, matches in ((0, True), (1, False)):
                draw = draw_view(AugmentConfig(views=VIEWS, seed=seed), video, view, *frames.shape[1:3])
                with torch.no_grad():
                    want = backbone(torch.stack([apply_view(f, draw, backbone.preprocess) for f in frames]))["embed"]
                got = fs.read(video, f"views/{view}/embed").astype(np.float32)
                close = np.allclose(got, want.numpy(), rtol=2e-3, atol=2e-3 * float(want.abs().max()))
                assert close == matches, (video, view, seed)
        assert draw_view(config, video, 1, 240, 320) != draw_view(config, video, 2, 240, 320)


EVL = json.loads((Path(__file__).parents[1] / "data" / "reference" / "evl_views.json").read_text())


@pytest.mark.parametrize("crop", EVL["crops"], ids=lambda c: f"seed{c['seed']}")
def test_a_views_crop_is_resized_as_evls_own_random_resized_crop(crop):
    """EVL's own random_resized_crop (tests/data/reference/evl_views.json) on the same normalised frames and the box it
    drew: F.interpolate of the normalised floats, within 1e-5; PIL's resize of the uint8 crop is another picture."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "data" / "reference"))
    from make_evl_views import frames

    preprocess = PreprocessConfig(size=(EVL["size"], EVL["size"]), mean=tuple(EVL["mean"]), std=tuple(EVL["std"]))
    want = torch.tensor(crop["output"])  # (T, C, h, w)
    for resize, equal in (("interpolate", True), ("pil", False)):
        draw = ViewDraw(ops=(), crop=tuple(crop["box"]), flip=False, resize=resize)
        got = torch.stack([apply_view(frame, draw, preprocess) for frame in frames()])
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5) == equal, resize
    assert AugmentConfig().flip == 0.0 and AugmentConfig().resize == "interpolate"  # EVL as it runs: never mirrored


def test_a_rerun_with_two_decode_workers_stores_the_same_bytes(fs, tmp_path):
    result = extract(tmp_path / "again", "--views", str(VIEWS), workers=2)
    assert result.exit_code == 0, result.output
    again = open_store(tmp_path / "again")[NAME]
    assert again.arrays() == fs.arrays()
    for video in FILES:
        for array in fs.arrays():
            assert np.array_equal(again.read(video, array), fs.read(video, array)), (video, array)


@pytest.mark.parametrize("args, message", [
    (["--views", "3"], "augment.views: store has 2, this run has 3"),
    (["--views", "2", "--augment", "flip=0.5"], "augment.flip: store has 0.0, this run has 0.5"),
    ([], "augment: store has {"),
])
def test_appending_with_other_augmentation_is_refused(store, tmp_path, args, message):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    result = extract(copy, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "pass --name" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args, message", [
    (["--views", "2", "--preprocess", "fast"], "use --preprocess exact"),
    (["--augment", "flip=0.5"], "drop --augment"),
    (["--views", "2", "--augment", "resize=area"], "resize is interpolate or pil"),
    (["--views", "2", "--augment", "randaugment=rand-q3"], "cannot read RandAugment 'rand-q3'"),
    (["--views", "2", "--augment", "size=3"], "cannot read --augment 'size=3'"),
    (["--views", "2", "--augment", "scale=0:1"], "scale must lie in (0, 1]"),
])
def test_bad_view_options_are_one_line_errors(tmp_path, args, message):
    result = extract(tmp_path / "s", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_views_need_a_frame_backbone(tmp_path):
    with pytest.raises(InputError, match="takes single frames"):
        ExtractConfig(store=str(tmp_path / "s"), sampling=SamplingConfig("windows"), augment=AugmentConfig(views=1))


def test_every_reader_serves_the_views(store, tmp_path):
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    assert cli("verify", copy).exit_code == 0
    fs = open_store(copy)[NAME]
    # memmap export: the training path reads the views from it, the same items as from the shards
    from_shards = FeatureDataset(copy, NAME, list(FILES), list(ARRAYS), FrameSelection("uniform", 3), augmented=True)
    assert not from_shards.uses_memmap  # checked once per process: this one keeps reading the shards
    assert cli("export-memmap", copy, "--set", NAME).exit_code == 0
    from_maps = FeatureDataset(copy, NAME, list(FILES), list(ARRAYS), FrameSelection("uniform", 3), augmented=True)
    assert from_maps.uses_memmap
    for epoch in (0, 1):
        from_shards.set_epoch(epoch)
        from_maps.set_epoch(epoch)
        for i in range(len(FILES)):
            for array in ARRAYS:
                assert torch.equal(from_shards[i]["inputs"][array], from_maps[i]["inputs"][array])
    # convert to HDF5 (compared byte for byte by convert itself), verify the copy, read it back
    result = cli("convert", copy, tmp_path / "h5", "--format", "hdf5")
    assert result.exit_code == 0, result.output
    assert cli("verify", tmp_path / "h5").exit_code == 0
    h5 = open_store(tmp_path / "h5")[NAME]
    assert h5.arrays() == fs.arrays()
    np.testing.assert_array_equal(h5.read("short", "views/2/tokens/3"), fs.read("short", "views/2/tokens/3"))
    # one .npy per video and array, views included
    result = cli("export-npy", copy, "--set", NAME, tmp_path / "npy", "--arrays", "embed,views/1/embed")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "lowfps_views-1-embed.npy"),
                                  fs.read("lowfps", "views/1/embed"))
    assert json.loads((tmp_path / "npy" / "export.json").read_text())["videos"]["lowfps"]["views/1/embed"] == \
        "lowfps_views-1-embed.npy"


def test_training_reads_a_different_view_each_epoch_and_evaluation_the_plain_one(store, fs):
    ids = list(FILES)
    train = FeatureDataset(store, NAME, ids, ["embed", "frame_indices"], FrameSelection("uniform", 4), seed=5,
                           augmented=True)
    evaluation = FeatureDataset(store, NAME, ids, ["embed"], FrameSelection("uniform", 4), seed=5)
    for index, video in enumerate(ids):
        views = {fs.read(video, f"views/{v}/embed").tobytes(): v for v in (1, 2)}
        seen = []
        for epoch in range(4):
            train.set_epoch(epoch)
            evaluation.set_epoch(epoch)
            item = train[index]["inputs"]
            seen.append(views[item["embed"].numpy().tobytes()])
            assert seen[-1] == train.view(index)
            np.testing.assert_array_equal(item["frame_indices"].numpy(), fs.read(video, "frame_indices"))
            np.testing.assert_array_equal(evaluation[index]["inputs"]["embed"].numpy(), fs.read(video, "embed"))
        assert all(a != b for a, b in zip(seen, seen[1:])), seen  # every epoch a different view, both in turn
    starts = {FeatureDataset(store, NAME, ids, ["embed"], FrameSelection("uniform", 4), seed=s,
                             augmented=True).view(0) for s in range(8)}
    assert starts == {1, 2}  # the first view is drawn per video from the seed


def test_train_run_trains_on_the_views_and_validates_on_the_plain_view(store, fs, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label\nshort,a\nlowfps,b\narchery,a\n")
    config = TrainConfig(epochs=1, min_steps=0, batch_size=3, progress=False)
    train_run("temporal", store, NAME, labels, tmp_path / "run", val_labels=labels, train_frames="uniform:4",
              eval_frames="uniform:4", config=config, log=lambda _: None)
    head = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["head"]
    # the temporal head standardises its inputs by the training items' statistics: epoch 0's augmented views
    train = FeatureDataset(store, NAME, list(FILES), ["embed"], FrameSelection("uniform", 4), seed=0, augmented=True)
    frames = torch.cat([train[i]["inputs"]["embed"].float() for i in range(len(FILES))])
    torch.testing.assert_close(head["input_mean"], frames.mean(0))
    plain = torch.cat([torch.from_numpy(fs.read(v, "embed")).float() for v in FILES])
    assert not torch.allclose(head["input_mean"], plain.mean(0))
    result = cli("eval", tmp_path / "run", "--labels", labels, "--json")
    assert result.exit_code == 0 and json.loads(result.output)["num_videos"] == 3, result.output
