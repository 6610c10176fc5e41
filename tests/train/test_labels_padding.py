"""Labels as a user hands them to FeatureDataset (checked where they enter) and variable-length items:
`all` on an fps-sampled set, batched with padding and a frame mask that the probe and the temporal head take.

One small real store: 3 real sample videos at 4 frames per second (different row counts), `embed` only,
extracted with the CLI and the bundled tiny model. Expected values are computed here from `fs.read`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader

from freezeframe.cli import main
from freezeframe.errors import InputError
from freezeframe.heads.probe import LinearProbe, ProbeConfig
from freezeframe.heads.temporal import TemporalConfig, TemporalTransformer
from freezeframe.store import open_store
from freezeframe.train import read_label_csv
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate, collate_padded

VIDEOS = Path(__file__).parents[1] / "data" / "videos"
FILES = {"short": "short_32frames.mp4", "lowfps": "lowfps_6fps.mp4", "mpeg4": "test_mpeg4.avi"}
ALL = FrameSelection("all")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("labels")
    listing = root / "videos.csv"
    listing.write_text("video_id,path\n" + "".join(f"{v},{VIDEOS / f}\n" for v, f in FILES.items()))
    result = CliRunner().invoke(main, ["extract", str(listing), "--store", str(root / "store"), "--name", "fps",
                                       "--model", "ff-tiny-vit", "--pretrained", "none", "--workers", "0",
                                       "--no-progress", "--fps", "4", "--features", "embed"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return root / "store"


@pytest.fixture(scope="module")
def fs(store):
    return open_store(store)["fps"]


def labelled(store, labels, **kw) -> FeatureDataset:
    return FeatureDataset(store, "fps", list(FILES), ["embed"], ALL, labels=labels, **kw)


# ---- item 1: labels checked where they enter --------------------------------------------------------
def test_a_mapping_of_id_to_label_gives_each_video_its_label(store):
    ds = labelled(store, {"mpeg4": 2, "short": 0, "lowfps": 1, "unused": 7})
    assert [ds[i]["label"] for i in range(3)] == [0, 1, 2]
    named = labelled(store, {"short": "right", "lowfps": "left", "mpeg4": "right"}, classes=["left", "right"])
    assert [named[i]["label"] for i in range(3)] == [1, 0, 1]
    strings = labelled(store, ["left", "left", "right"], classes=["left", "right"])
    assert strings.labels == [0, 0, 1] and strings.classes == ["left", "right"]


@pytest.mark.parametrize("labels, kw, message", [
    ({"short": "a", "lowfps": "b", "mpeg4": "a"}, {}, "pass classes="),
    (["a", "b", "a"], {}, "pass classes="),
    ({"short": 0, "lowfps": 1}, {}, "no label for 1 of the video ids (e.g. 'mpeg4')"),
    ([0, 1], {}, "2 labels for 3 video ids"),
    ([0, 1.5, 1], {}, "float 1.5"),
    ([0, 1, 2], {"classes": ["a", "b"]}, "label 2 of video 'mpeg4' is not a class index (0 to 1)"),
    ([0, -1, 1], {}, "label -1 of video 'lowfps'"),
    (["a", "c", "a"], {"classes": ["a", "b"]}, "label 'c' of video 'lowfps' is not one of the classes"),
    ("abc", {}, "not one string"),
])
def test_wrong_labels_are_refused_at_construction(store, labels, kw, message):
    with pytest.raises(InputError) as err:
        labelled(store, labels, **kw)
    assert message in str(err.value)


def test_one_string_for_ids_or_arrays_is_refused(store):
    with pytest.raises(InputError, match="list of ids"):
        FeatureDataset(store, "fps", "short", ["embed"], ALL)
    with pytest.raises(InputError, match=r"\['embed'\]"):
        FeatureDataset(store, "fps", list(FILES), "embed", ALL)


def test_read_label_csv_feeds_a_dataset(store, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("video_id,label\nmpeg4,walk\nshort,run\nlowfps,walk\n")
    found = read_label_csv(path)
    assert (found.video_ids, found.labels, found.classes) == (["mpeg4", "short", "lowfps"], [1, 0, 1], ["run", "walk"])
    ds = FeatureDataset(store, "fps", found.video_ids, ["embed"], ALL, labels=found.labels, classes=found.classes)
    assert [ds[i]["label"] for i in range(3)] == [1, 0, 1]
    with pytest.raises(InputError, match="not trained on: walk"):
        read_label_csv(path, classes=["run"])


# ---- item 8: variable-length items, padded with a mask ----------------------------------------------
def test_padded_collate_keeps_every_row_and_marks_the_padding(store, fs):
    lengths = [fs.locate(v).n_rows for v in FILES]
    assert len(set(lengths)) == 3  # the store gives ragged batches
    ds = labelled(store, [0, 1, 0])
    with pytest.raises(InputError, match="frame mask"):
        collate([ds[i] for i in range(3)])
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_padded)))
    embed, mask = batch["inputs"]["embed"], batch["inputs"]["frame_mask"]
    assert embed.shape == (3, max(lengths), 32) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == lengths
    for i, video_id in enumerate(FILES):
        np.testing.assert_array_equal(embed[i, :lengths[i]].numpy(), fs.read(video_id, "embed"))
        assert not embed[i, lengths[i]:].any()
        assert mask[i, :lengths[i]].all() and not mask[i, lengths[i]:].any()


@pytest.mark.parametrize("pooling", ["mean", "middle"])
def test_probe_pools_only_the_real_rows(store, fs, pooling):
    probe = LinearProbe(ProbeConfig(num_classes=2, input_dim=32, pooling=pooling))
    torch.nn.init.normal_(probe.linear.weight)
    batch = collate_padded([labelled(store, [0, 1, 0])[i] for i in range(3)])
    with torch.no_grad():
        logits = probe(batch["inputs"])
    weight, bias = probe.linear.weight.detach().double().numpy(), probe.linear.bias.detach().numpy()
    for i, video_id in enumerate(FILES):
        rows = fs.read(video_id, "embed").astype(np.float64)
        pooled = rows.mean(0) if pooling == "mean" else rows[len(rows) // 2]
        np.testing.assert_allclose(logits[i].numpy(), weight @ pooled + bias, rtol=1e-4, atol=1e-4)


def test_temporal_head_scores_a_padded_video_as_it_scores_it_alone(store, fs):
    torch.manual_seed(0)
    longest = max(fs.locate(v).n_rows for v in FILES)
    head = TemporalTransformer(TemporalConfig(num_classes=3, input_dim=32, max_frames=longest)).eval()
    ds = labelled(store, [0, 1, 2])
    batch = collate_padded([ds[i] for i in range(3)])
    with torch.no_grad():
        together = head(batch["inputs"])
        alone = torch.cat([head({"embed": ds[i]["inputs"]["embed"][None]}) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # without the mask the padding would change the shorter videos' scores
        unmasked = head({"embed": batch["inputs"]["embed"]})
    assert not torch.allclose(unmasked, alone, atol=1e-3)


def test_train_and_eval_a_temporal_head_on_every_row_of_an_fps_set(store, tmp_path, run_cli):
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label\nshort,a\nlowfps,b\nmpeg4,a\n")
    run = tmp_path / "run"
    result = run_cli("train", "temporal", "--store", store, "--set", "fps", "--labels", labels, "--val", labels,
                     "--out", run, "--frames", "all", "--eval-frames", "all", "--epochs", "2",
                     "--batch-size", "3", "--no-progress")
    assert result.exit_code == 0, result.output + repr(result.exception)
    result = run_cli("eval", run, "--labels", labels, "--json")
    assert result.exit_code == 0, result.output + repr(result.exception)


def test_the_training_log_says_how_long_and_ends_with_the_best_epoch(store, tmp_path, run_cli):
    """Steps and epochs first, an estimate from the first steps, epochs numbered as in metrics.jsonl, no top-5
    for 2 classes, and a last line naming the best epoch and where its weights are (before: the last epoch's)."""
    import json

    from freezeframe.train.checkpoints import BEST, saved_info

    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label\nshort,a\nlowfps,b\nmpeg4,a\n")
    run = tmp_path / "run"
    result = run_cli("train", "temporal", "--store", store, "--set", "fps", "--labels", labels, "--val", labels,
                     "--out", run, "--epochs", "6", "--batch-size", "1", "--lr", "3e-3", "--no-progress")
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = result.output.splitlines()
    assert lines[0] == "training 6 epochs of 3 steps (18 steps, 3 videos, batch 1)"
    assert lines[1].startswith("estimate: ") and "s a step over the first 3: about " in lines[1]
    assert "for the 15 steps left" in lines[1]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    console = [line for line in lines if line.startswith("epoch ")]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [line.split(":")[0] for line in console] == [f"epoch {r['epoch']}/6" for r in records]
    assert "top5" not in result.output and not any("val_top5" in r for r in records)
    best = max(records, key=lambda r: (r["val_top1"], -r["epoch"]))
    assert saved_info(run / BEST)["epoch"] == best["epoch"]
    assert lines[-2] == (f"best epoch {best['epoch']}/6 (val_top1 {best['val_top1']:.4g}): weights in "
                         f"{run / BEST}; the last epoch's state in {run / 'last.pt'}")
    assert json.loads(lines[-1])["run"] == str(run)
