"""Checkpoints load as weights only: a pickle that would run code is refused (its payload never runs) for backbone
and head checkpoints alike, unless --trust-checkpoint; .safetensors backbones load; metadata and list files are
parsed with size limits.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from freezeframe.checkpoints import UntrustedCheckpointError, load_checkpoint
from freezeframe.cli import main
from freezeframe.extract import ClipBackbone, ClipConfig
from freezeframe.extract.backbones.clip import load_open_clip
from freezeframe.limits import OversizeFileError
from freezeframe.store import open_store, verify_store

VIDEOS = Path(__file__).parents[1] / "data" / "videos"
FEATURE_SET = "fs"
EXTRACT = ["--model", "ff-tiny-vit", "--features", "embed", "--num-frames", "4", "--batch-size", "4", "--workers", "0",
           "--no-progress", "--name", FEATURE_SET]
REFUSED = "is not a plain weights file (loading it would unpickle arbitrary objects, which can run code)"


class Payload:
    """Unpickling this runs `open(marker, "w")`: the file's existence shows the code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture(scope="module")
def clip_state(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The tiny model's weights under seed 1 (not the seed-0 weights that --pretrained none builds)."""
    model, _ = load_open_clip("ff-tiny-vit", "none", seed=1)
    return model.state_dict()


# ---- backbone checkpoints -------------------------------------------------------------------------------------

def test_a_code_running_backbone_checkpoint_is_refused_and_never_runs(clip_state, tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": clip_state, "extra": Payload(marker)}, evil)
    store = tmp_path / "store"

    line = one_error_line(cli("extract", VIDEOS / "short_32frames.mp4", "--store", store, "--pretrained", evil, *EXTRACT))
    assert REFUSED in line and str(evil) in line and "--trust-checkpoint" in line
    assert not marker.exists()
    assert not store.exists()  # refused before anything was written
    with pytest.raises(UntrustedCheckpointError):
        ClipBackbone(ClipConfig(model="ff-tiny-vit", pretrained=str(evil)))
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(evil)
    assert not marker.exists()


def test_weights_load_from_pt_safetensors_and_trusted_full_pickles_alike(clip_state, tmp_path):
    plain, tensors, full = tmp_path / "w.pt", tmp_path / "w.safetensors", tmp_path / "full.pt"
    torch.save(clip_state, plain)
    save_file({k: v.contiguous() for k, v in clip_state.items()}, tensors)
    # a real-world style training checkpoint: weights plus an argparse Namespace, harmless but not plain data
    torch.save({"state_dict": clip_state, "args": argparse.Namespace(lr=0.1, epochs=3)}, full)
    digests = {ClipBackbone(ClipConfig(model="ff-tiny-vit", pretrained=str(p), trust_checkpoint=p == full))
               .weights_info["weights_sha256"] for p in (plain, tensors, full)}
    random = ClipBackbone(ClipConfig(model="ff-tiny-vit", pretrained="none")).weights_info["weights_sha256"]
    assert len(digests) == 1 and random not in digests

    video = VIDEOS / "short_32frames.mp4"
    line = one_error_line(cli("extract", video, "--store", tmp_path / "refused", "--pretrained", full, *EXTRACT))
    assert REFUSED in line
    stores = {}
    for path, extra in ((plain, ()), (tensors, ()), (full, ("--trust-checkpoint",))):
        stores[path] = tmp_path / f"store-{path.name}"
        result = cli("extract", video, "--store", stores[path], "--pretrained", path, *EXTRACT, *extra)
        assert result.exit_code == 0, result.output
    embeds = [open_store(s)[FEATURE_SET].read("short_32frames", "embed") for s in stores.values()]
    assert embeds[0].shape == (4, 32)
    assert all(np.array_equal(embeds[0], e) for e in embeds[1:])


# ---- head checkpoints -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def head_run(tmp_path_factory) -> dict:
    """A temporal head trained for one epoch on four real videos, with its labels."""
    root = tmp_path_factory.mktemp("head")
    videos = sorted(VIDEOS.glob("*.mp4"))[:4]
    result = cli("extract", *videos, "--store", root / "store", "--pretrained", "none", *EXTRACT)
    assert result.exit_code == 0, result.output
    labels = root / "labels.csv"
    labels.write_text("video_id,label\n" + "".join(f"{v.stem},{'ab'[i % 2]}\n" for i, v in enumerate(videos)))
    train = ["train", "temporal", "--store", root / "store", "--set", FEATURE_SET, "--labels", labels,
             "--frames", "uniform:4", "--eval-frames", "uniform:4", "--width", "16", "--depth", "1", "--heads", "2",
             "--batch-size", "2", "--no-progress"]
    result = cli(*train, "--out", root / "run", "--epochs", "1")
    assert result.exit_code == 0, result.output
    evaluated = cli("eval", root / "run", "--labels", labels, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    return {"root": root, "run": root / "run", "labels": labels, "train": train,
            "eval": json.loads(evaluated.output.strip().splitlines()[-1])}


def as_before_safetensors(run: Path) -> None:
    """Rewrite a run as runs were saved before best weights became safetensors: `best.pt`, a dict with `head`."""
    best = run / "best.safetensors"
    torch.save({"epoch": 0, "head": load_file(best), "metrics": {}}, run / "best.pt")
    best.unlink()


def test_runs_saved_before_safetensors_still_load_and_score_the_same(head_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(head_run["run"], run)
    as_before_safetensors(run)
    result = cli("eval", run, "--labels", head_run["labels"], "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == head_run["eval"]


def test_head_checkpoints_are_plain_weights_and_resume_loads_them(head_run, tmp_path):
    assert load_file(head_run["run"] / "best.safetensors")  # the best weights: tensors only
    assert "head" in torch.load(head_run["run"] / "last.pt", weights_only=True)  # raises on anything but plain data
    run = tmp_path / "run"
    shutil.copytree(head_run["run"], run)
    result = cli(*head_run["train"], "--out", run, "--epochs", "2", "--resume")
    assert result.exit_code == 0, result.output
    assert "resumed after epoch 1" in result.output
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1


def test_a_code_running_head_checkpoint_is_refused_and_never_runs(head_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(head_run["run"], run)
    marker = tmp_path / "payload-ran"
    as_before_safetensors(run)
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / name, weights_only=True)
        torch.save({**state, "extra": Payload(marker)}, run / name)

    line = one_error_line(cli("eval", run, "--labels", head_run["labels"]))
    assert REFUSED in line and str(run / "best.pt") in line
    line = one_error_line(cli(*head_run["train"], "--out", run, "--epochs", "2", "--resume"))
    assert REFUSED in line and str(run / "last.pt") in line
    assert not marker.exists()


def test_a_trusted_full_pickle_head_checkpoint_loads(head_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(head_run["run"], run)
    as_before_safetensors(run)
    state = torch.load(run / "best.pt", weights_only=True)
    torch.save({**state, "args": argparse.Namespace(note="saved by another tool")}, run / "best.pt")
    assert REFUSED in one_error_line(cli("eval", run, "--labels", head_run["labels"]))
    result = cli("eval", run, "--labels", head_run["labels"], "--json", "--trust-checkpoint")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == head_run["eval"]


# ---- size limits on metadata and list files -------------------------------------------------------------------

def test_oversize_metadata_and_list_files_fail_with_one_sentence(head_run, tmp_path, monkeypatch):
    from freezeframe.train.run import RunInfo
    from freezeframe.userfiles import read_labels
    from freezeframe.text.captions import read_captions

    captions = tmp_path / "captions.jsonl"
    captions.write_text(json.dumps({"video_id": "short_32frames", "text": "a person shoots an arrow " * 8}) + "\n")
    big_list = tmp_path / "inputs.txt"
    big_list.write_text("\n".join(str(v) for v in sorted(VIDEOS.glob("*.mp4"))) + "\n")
    assert head_run["labels"].stat().st_size > 64 > len((head_run["root"] / "store" / "freezeframe.json").read_bytes())
    monkeypatch.setenv("FREEZEFRAME_MAX_FILE_MB", str(64 / 1024 / 1024))  # 64 bytes

    line = one_error_line(cli("extract", big_list, "--store", tmp_path / "new", "--pretrained", "none", *EXTRACT))
    assert f"{big_list} is larger than" in line and "the limit for an input list" in line
    assert "FREEZEFRAME_MAX_FILE_MB" in line
    line = one_error_line(cli("inspect", head_run["root"] / "store"))
    assert "provenance.json is larger than" in line and "the limit for a JSON metadata file" in line
    for read, what in ((lambda: read_labels(head_run["labels"]), "a label file"),
                       (lambda: RunInfo.load(head_run["run"]), "a run description"),
                       (lambda: read_captions(captions), "a captions file")):
        with pytest.raises(OversizeFileError, match=f"the limit for {what}"):
            read()


def test_an_index_segment_declaring_an_oversize_header_is_ignored(head_run, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(head_run["root"] / "store", store)
    ids = open_store(store)[FEATURE_SET].video_ids()
    (segment,) = (store / FEATURE_SET / "index").iterdir()
    data = segment.read_bytes()
    segment.write_bytes(data[:8] + (2 << 20).to_bytes(8, "little") + data[16:] + b" " * (3 << 20))  # a 2 MiB header
    monkeypatch.setenv("FREEZEFRAME_MAX_FILE_MB", "1")
    assert open_store(store)[FEATURE_SET].video_ids() == ids  # read from the markers instead
    report = verify_store(store)
    assert report.ok and any("not a readable index segment" in w for w in report.warnings), report.warnings


def _huge_header(data: bytes) -> bytes:
    return (1 << 60).to_bytes(8, "little") + data[8:]


def _header_not_json(data: bytes) -> bytes:
    length = int.from_bytes(data[:8], "little")
    return data[:8] + b"!" * length + data[8 + length:]


@pytest.mark.parametrize("damage", [_huge_header, _header_not_json, lambda data: data[:-64]],
                         ids=["huge header length", "header not JSON", "offsets past the end"])
def test_a_damaged_best_safetensors_is_one_line_naming_it(head_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(head_run["run"], run)
    best = run / "best.safetensors"
    best.write_bytes(damage(best.read_bytes()))
    line = one_error_line(cli("eval", run, "--labels", head_run["labels"]))
    assert str(best) in line and "cannot be read" in line


def test_a_truncated_last_checkpoint_is_one_line_on_resume(head_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(head_run["run"], run)
    last = run / "last.pt"
    last.write_bytes(last.read_bytes()[:200])
    line = one_error_line(cli(*head_run["train"], "--out", run, "--epochs", "2", "--resume"))
    assert str(last) in line and "cannot be read" in line
