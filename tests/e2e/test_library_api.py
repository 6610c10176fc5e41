"""The library entry points (`freezeframe.extract_features`, `train_head`, `create_backbone`, ...) own every default and
refusal: the same job run through the command line and through Python gives the same provenance, arrays and run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import freezeframe
from freezeframe.errors import InputError
from freezeframe.store import open_store
from freezeframe.store.provenance import identity
from freezeframe.synthetic import make_order_dataset, write_labels

TINY = {"model": "ff-tiny-vit", "pretrained": "none"}


def test_import_freezeframe_loads_neither_torch_nor_zarr():
    code = "import sys, freezeframe; print(json.dumps(sorted({'torch', 'zarr', 'click'} & set(sys.modules))))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    assert {"extract_features", "train_head", "create_backbone", "open_store"} <= set(freezeframe.__all__)


def test_the_registries_are_listed():
    assert freezeframe.list_backbones()[:3] == ["clip", "s3d", "s3dg"]
    assert {"probe", "temporal", "evl", "videoclip"} <= set(freezeframe.list_heads())


def test_a_backbone_whose_weights_are_a_file_needs_them_named():
    with pytest.raises(InputError, match=r"--backbone timm needs --pretrained \(pretrained=\.\.\. in Python\)"):
        freezeframe.create_backbone("timm", model="resnet18")
    with pytest.raises(InputError, match="backbone clip has no option 'weights'"):
        freezeframe.create_backbone("clip", weights="x.pt")


def test_window_backbones_get_their_sampling_and_batch_defaults_in_python():
    from freezeframe.api import choose_sampling
    from freezeframe.extract.runner import ExtractConfig

    windows = choose_sampling("s3dg")
    assert windows.describe() == {"strategy": "windows", "fps": 30.0, "window_frames": 30, "window_stride": 30}
    assert choose_sampling("s3dg", window_frames=16).window_stride == 16  # a window length alone: no overlap
    assert ExtractConfig(store="s", sampling=windows).batch_size == 8
    assert ExtractConfig(store="s").batch_size == 64
    assert choose_sampling("clip").describe() == {"strategy": "num_frames", "num_frames": 8}
    with pytest.raises(InputError, match="choose one sampling strategy, not --num-frames and --fps"):
        choose_sampling("clip", num_frames=4, fps=1.0)
    with pytest.raises(InputError, match="are for window backbones"):
        choose_sampling("clip", window_frames=16)


def test_extraction_through_the_cli_and_through_python_is_the_same(run_cli, sample_videos, tmp_path):
    videos = [sample_videos["short_32frames.mp4"], sample_videos["lowfps_6fps.mp4"]]
    result = run_cli("extract", *videos, "--store", tmp_path / "cli", "--model", "ff-tiny-vit", "--pretrained", "none",
                     "--features", "embed,tokens", "--layers", "1", "--fps", "2", "--workers", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    report = freezeframe.extract_features([str(v) for v in videos], str(tmp_path / "py"), "clip",
                                          backbone_options={**TINY, "features": ("embed", "tokens"), "layers": (1,)},
                                          sampling={"fps": 2.0}, workers=0, progress=False)
    assert report.stored == 2 and report.feature_set == "clip-ff-tiny-vit-random"
    cli_set, py_set = open_store(tmp_path / "cli")[report.feature_set], open_store(tmp_path / "py")[report.feature_set]
    assert identity(py_set.provenance) == identity(cli_set.provenance)
    assert py_set.provenance["sampling"] == {"strategy": "fps", "fps": 2.0, "decoder": "auto"}
    assert sorted(py_set.video_ids()) == sorted(cli_set.video_ids())
    for video_id in cli_set.video_ids():
        for array in ("embed", "tokens/1", "block_input/1", "frame_indices", "timestamps"):
            np.testing.assert_array_equal(py_set.read(video_id, array), cli_set.read(video_id, array))


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("api-train")
    rows = make_order_dataset(root, 16, seed=1)
    freezeframe.extract_features([str(root / "videos")], str(root / "store"), backbone_options=TINY,
                                 sampling={"num_frames": 4}, workers=0, progress=False, name="order")
    return root, write_labels(root / "train.csv", rows[:12]), write_labels(root / "val.csv", rows[12:])


@pytest.mark.parametrize("head, options, flags", [
    ("probe", {}, []),
    ("temporal", {"epochs": 2, "batch_size": 4, "depth": 1}, ["--epochs", "2", "--batch-size", "4", "--depth", "1"]),
])
def test_training_through_the_cli_and_through_python_is_the_same(run_cli, labelled_store, head, options, flags):
    root, train, val = labelled_store
    result = run_cli("train", head, "--store", root / "store", "--set", "order", "--labels", train, "--val", val,
                     "--out", root / f"cli-{head}", "--no-progress", *flags)
    assert result.exit_code == 0, result.output
    metrics = freezeframe.train_head(head, str(root / "store"), "order", labels=str(train), val=str(val),
                                     out=str(root / f"py-{head}"), progress=False, log=lambda _: None, **options)
    cli_metrics = json.loads(result.output.strip().splitlines()[-1])
    assert {k: v for k, v in cli_metrics.items() if k not in ("run", "seconds")} == \
        {k: v for k, v in metrics.items() if k != "seconds"}
    cli_run, py_run = (json.loads((root / f"{side}-{head}" / "run.json").read_text()) for side in ("cli", "py"))
    assert {**cli_run, "store": None} == {**py_run, "store": None}
    cli_weights, py_weights = (load_file(root / f"{side}-{head}" / "best.safetensors") for side in ("cli", "py"))
    assert cli_weights.keys() == py_weights.keys()
    for key in cli_weights:
        np.testing.assert_array_equal(cli_weights[key], py_weights[key])


def test_train_head_refuses_what_its_head_does_not_take(labelled_store, tmp_path):
    root, train, _ = labelled_store
    with pytest.raises(InputError, match="head probe takes no option 'lr'"):
        freezeframe.train_head("probe", str(root / "store"), "order", labels=str(train), out=str(tmp_path), lr=0.1)
    with pytest.raises(InputError, match="pass either --epochs or --steps, not both"):
        freezeframe.train_head("temporal", str(root / "store"), "order", labels=str(train), out=str(tmp_path),
                               epochs=1, steps=3)
    with pytest.raises(InputError, match="head temporal trains on labels"):
        freezeframe.train_head("temporal", str(root / "store"), "order", out=str(tmp_path))
    assert not any(Path(tmp_path).iterdir())
