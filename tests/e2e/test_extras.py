"""Dependencies by use: reading a store works without the training and text extras (faiss, transformers,
matplotlib, scipy), and a command that needs a missing extra stops with one line naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import freezeframe
from freezeframe.errors import InputError
from freezeframe.extras import require
from freezeframe.synthetic import make_order_dataset, write_labels

EXTRAS = ("faiss", "transformers", "matplotlib", "scipy", "threadpoolctl", "sklearn")
ROOT = Path(__file__).resolve().parents[2]


def run_without(modules, code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python where importing any of `modules` fails as if it were not installed."""
    prelude = f"import sys\nfor m in {list(modules)!r}: sys.modules[m] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("extras")
    rows = make_order_dataset(root, 6, seed=2)
    freezeframe.extract_features([str(root / "videos")], str(root / "store"),
                                 backbone_options={"model": "ff-tiny-vit", "pretrained": "none"},
                                 sampling={"num_frames": 4}, workers=0, progress=False, name="order")
    return root, write_labels(root / "labels.csv", rows)


def test_reading_a_store_needs_no_extra(store):
    root, _ = store
    code = f"""
import freezeframe
from freezeframe.train import FeatureDataset, FrameSelection
fs = freezeframe.open_store({str(root / 'store')!r})["order"]
ids = fs.video_ids()
data = FeatureDataset({str(root / 'store')!r}, "order", ids, ["embed"], FrameSelection.parse("all"), [0] * len(ids))
print(fs.read(ids[0], "embed").shape, data[0]["inputs"]["embed"].shape)
from freezeframe.cli import main
for command in ("inspect", "verify"):
    try:
        main([command, {str(root / 'store')!r}])
    except SystemExit as exit:
        assert not exit.code, (command, exit.code)
blocked = [m for m in {list(EXTRAS)!r} if sys.modules.get(m) is not None]
print("imported extras:", blocked)
"""
    result = run_without(EXTRAS, code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(4, 32) torch.Size([4, 32])" in result.stdout and "imported extras: []" in result.stdout
    assert "order: 6 videos" in result.stdout and "ok: 1 shard, 6 videos checked" in result.stdout


@pytest.mark.parametrize("missing, needed_by", [("matplotlib", "training (curves.png)"),
                                                ("scipy", "the linear probe's L-BFGS-B solver")])
def test_training_without_its_extra_is_one_line_naming_it(store, tmp_path, missing, needed_by):
    root, labels = store
    code = f"""
from freezeframe.cli import main
main(["train", "probe", "--store", {str(root / 'store')!r}, "--set", "order", "--labels", {str(labels)!r},
      "--out", {str(tmp_path / 'run')!r}, "--no-progress"])
"""
    result = run_without([missing], code)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == f"error: {needed_by} needs {missing}, which is not installed: " \
                                    "pip install 'freezeframe[train]'."
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_require_names_the_extra_and_lets_other_import_errors_through():
    assert require("json", "anything").dumps([]) == "[]"
    with pytest.raises(InputError, match=r"^BERT text features needs no_such_package_ff, which is not installed: "
                                         r"pip install 'freezeframe\[all\]'\.$"):
        require("no_such_package_ff", "BERT text features")
