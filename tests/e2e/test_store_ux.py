"""What a new user meets at the command line: no silent no-ops, cheap checks first, dry runs, Ctrl-C, help."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest

from freezeframe.cli import main
from freezeframe.store import open_store
from freezeframe.store.layout import MARKER_SUFFIX, SHARDS_DIR
from freezeframe.store.writer import FeatureSetWriter
from freezeframe.summary import format_summary, natural_key, store_summary

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model", "ff-tiny-vit", "--pretrained", "none", "--num-frames", "2", "--batch-size", "4", "--workers", "0",
        "--no-progress"]
FEATURE_SET = "clip-ff-tiny-vit-random"


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_empty_input_folder_is_an_error_that_creates_nothing(tmp_path, run_cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    store = tmp_path / "store"
    result = run_cli("extract", empty, "--store", store, *TINY)
    assert result.exit_code == 2, result.output  # before: exit 0 and an empty, provenance-locked feature set
    assert result.output.startswith("error: no videos to extract") and result.output.count("\n") == 1
    assert not store.exists()


@pytest.mark.parametrize("args, message", [
    (["--layers", "-1"], "--layers chooses the token maps of --features tokens"),
    (["--features", "embed", "--layers", "0,1"], "--layers chooses the token maps of --features tokens"),
    (["--frames-per-clip", "4"], "--frames-per-clip is for --clips sampling"),
    (["--image-size", "112"], "--image-size is not an option of --backbone clip"),
])
def test_options_that_would_be_ignored_are_refused_before_anything_runs(tmp_path, run_cli, sample_videos, args,
                                                                         message):
    store = tmp_path / "store"
    result = run_cli("extract", sample_videos["short_32frames.mp4"], "--store", store, *TINY, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not store.exists()


def test_extract_text_refuses_options_of_the_other_backbone(tmp_path, run_cli):
    captions = tmp_path / "c.jsonl"
    captions.write_text('{"video_id": "v", "text": "a dog"}\n', encoding="utf-8")
    result = run_cli("extract-text", captions, "--store", tmp_path / "s", "--backbone", "clip-text",
                     "--model", "ff-tiny-vit", "--layers", "3", "--no-progress")
    assert result.exit_code == 2 and "--layers is for --backbone bert" in result.output, result.output
    assert not (tmp_path / "s").exists()


def test_a_store_of_another_schema_is_refused_before_the_model_loads(tmp_path, run_cli, sample_videos):
    store = tmp_path / "store"
    store.mkdir()
    (store / "freezeframe.json").write_text('{"format": "freezeframe", "schema_version": 99}')
    (tmp_path / "file").write_text("x")
    for target, message in ((store, "schema version 99"), (tmp_path / "file", "is a file, not a store directory")):
        # a model that cannot be built: only a check made before building it can give this error
        result = run_cli("extract", sample_videos["short_32frames.mp4"], "--store", target, *TINY[:2],
                         "--pretrained", tmp_path / "missing.pt", "--no-progress")
        assert result.exit_code == 2 and message in result.output, result.output


def test_a_sampling_mismatch_is_refused_before_the_model_loads(tmp_path, run_cli, sample_videos):
    store, video = tmp_path / "store", sample_videos["short_32frames.mp4"]
    assert run_cli("extract", video, "--store", store, *TINY).exit_code == 0
    (store / FEATURE_SET / "provenance.json").rename(tmp_path / "p.json")  # as if made with --pretrained broken.pt
    (store / "clip-ff-tiny-vit-broken").mkdir()
    (tmp_path / "p.json").rename(store / "clip-ff-tiny-vit-broken" / "provenance.json")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    result = run_cli("extract", video, "--store", store, *TINY[:2], "--pretrained", tmp_path / "broken.pt",
                     *TINY[4:], "--num-frames", "3", "--preprocess", "fast")
    assert result.exit_code == 2, result.output  # the model cannot be built: this error comes before it
    assert "was made differently" in result.output and "num_frames: store has 2, this run has 3" in result.output
    assert "mode: store has 'exact', this run has 'fast'" in result.output


def _commands(group: click.Group, prefix=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # (commands load lazily: `group.commands` holds only those loaded)
        command = group.get_command(ctx, name)
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_dash_h_is_help_everywhere(run_cli):
    paths = [()] + list(_commands(main))
    assert len(paths) > 10
    for path in paths:
        result = run_cli(*path, "-h")
        assert result.exit_code == 0 and "Usage:" in result.output and "-h, --help" in result.output, path


def _small_set(store: Path, arrays: dict[str, tuple[int, ...]], videos: int) -> None:
    writer = FeatureSetWriter(store, "s", {"kind": "test"})
    shard = writer.new_shard()
    for v in range(videos):
        shard.append(f"v{v}", {name: np.zeros((2, *shape), np.float16) for name, shape in arrays.items()})
        shard.end_video(f"v{v}")
    shard.commit()
    writer.write_index()


def test_inspect_lists_arrays_in_natural_order_with_correct_plurals(tmp_path, run_cli):
    _small_set(tmp_path / "store", {f"tokens/{b}": (3, 4) for b in (8, 9, 10, 11)} | {"embed": (4,)}, videos=1)
    summary = store_summary(open_store(tmp_path / "store"))
    assert list(summary["feature_sets"]["s"]["arrays"]) == ["embed", "tokens/8", "tokens/9", "tokens/10", "tokens/11"]
    text = format_summary(summary)
    assert "s: 1 video, 2 frames in 1 shard" in text and "zarr/none (1 shard)" in text  # before: "1 shards"
    assert text.index("tokens/9 ") < text.index("tokens/10 ")
    assert sorted(["b10", "b9", "a"], key=natural_key) == ["a", "b9", "b10"]


def test_dry_run_lists_the_work_and_writes_nothing(tmp_path, run_cli, sample_videos):
    store = tmp_path / "store"
    first = sample_videos["short_32frames.mp4"]
    options = [*TINY, "--features", "embed,tokens", "--layers", "-1"]
    assert run_cli("extract", first, "--store", store, *options).exit_code == 0
    before = tree(store)
    result = run_cli("extract", first, sample_videos["lowfps_6fps.mp4"], sample_videos["archery_demo.mp4"],
                     "--store", store, *options, "--shard-size", "1", "--dry-run")
    assert result.exit_code == 0, result.output
    assert tree(store) == before
    out = result.output
    assert "3 given: 2 to extract, 1 already committed" in out and "2 shards of 1 videos" in out
    assert "no video decoded, nothing written" in out and "to do     lowfps_6fps" in out
    stored = open_store(store)[FEATURE_SET].arrays()
    for array in ("embed", "tokens/3", "timestamps", "frame_indices"):
        meta = stored[array]
        assert f"{array:<18} {meta['dtype']:<8} per row {tuple(meta['shape'])}" in out, array
    changed = run_cli("extract", first, "--store", store, *options, "--num-frames", "3", "--dry-run")
    # a dry run of a run that would be refused says so first and exits 2 (before: exit 0, leading with the plan)
    assert changed.exit_code == 2, changed.output
    assert changed.output.startswith("dry run: REFUSED: this run would stop before extracting: feature set "
                                     f"{FEATURE_SET} was made differently (")
    assert "num_frames: store has 2, this run has 3" in changed.output.splitlines()[0]
    assert tree(store) == before


def test_ctrl_c_in_extract_exits_130_and_says_how_to_resume(tmp_path, sample_videos):
    store = tmp_path / "store"
    videos = [str(sample_videos[name]) for name in sorted(sample_videos)]
    command = [sys.executable, "-m", "freezeframe.cli", "extract", *videos, "--store", str(store), *TINY,
               "--shard-size", "1", "--num-frames", "16"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    shards = store / FEATURE_SET / SHARDS_DIR
    deadline = time.monotonic() + 120
    while not list(shards.glob(f"*{MARKER_SUFFIX}")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, (out, err)  # before: "Aborted!" and exit 1, as when videos fail
    committed = len(open_store(store)[FEATURE_SET])
    assert 1 <= committed < len(videos)
    assert f"interrupted: {committed} of {len(videos)} videos are committed" in err
    assert "Run the same command again to resume" in err and "Traceback" not in err


# ---- self-describing stores ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def described_store(tmp_path_factory, sample_videos):
    """Two videos with embed, cls and tokens of blocks 2 and 3, in Zarr; one in HDF5 under another name."""
    from click.testing import CliRunner

    store = tmp_path_factory.mktemp("described") / "store"
    videos = [str(sample_videos["short_32frames.mp4"]), str(sample_videos["lowfps_6fps.mp4"])]
    for extra in ([], ["--format", "hdf5", "--name", "h5", "--shard-size", "2"]):
        result = CliRunner().invoke(main, ["extract", *videos, "--store", str(store), *TINY, "--features",
                                           "embed,cls,tokens", "--layers", "2,3", *extra])
        assert result.exit_code == 0, result.output
    return store


def test_plain_zarr_lists_feature_sets_shards_and_arrays_with_dimension_names(described_store):
    import zarr

    fs = open_store(described_store)[FEATURE_SET]
    root = zarr.open_group(str(described_store), mode="r")  # before: not a Zarr group at all
    assert root.attrs["freezeframe"]["schema_version"] == 1
    assert {FEATURE_SET, "h5"} <= set(dict(root.groups()))
    group = root[FEATURE_SET]
    about = group.attrs["freezeframe"]
    assert about["provenance"] == fs.provenance and about["committed_shards"] == fs.shard_ids
    assert about["num_videos"] == 2 and about["rows"].startswith("frame")
    assert "token 0 is CLS" in about["arrays"]["tokens/3"]["description"]
    assert about["arrays"]["tokens/3"]["dimension_names"] == ["frame", "token", "width"]
    assert sorted(name for name, _ in group["shards"].groups()) == sorted(f"{s}.zarr" for s in fs.shard_ids)
    shard = group["shards"][f"{fs.shard_ids[0]}.zarr"]
    tokens = shard["tokens/3"]
    assert tokens.metadata.dimension_names == ("frame", "token", "width")
    assert "token 0 is CLS" in tokens.attrs["description"]
    assert shard["embed"].metadata.dimension_names == ("frame", "embed_dim")
    assert shard["timestamps"].metadata.dimension_names == ("frame",)
    video = shard.attrs["videos"][0]
    np.testing.assert_array_equal(tokens[video["row_start"]:video["row_start"] + video["n_rows"]],
                                  fs.read(video["id"], "tokens/3"))
    assert "commit marker" in shard.attrs["committed_by"]


def test_xarray_opens_a_shard_with_named_dimensions(described_store):
    xr = pytest.importorskip("xarray")
    fs = open_store(described_store)[FEATURE_SET]
    ds = xr.open_zarr(str(fs.path / SHARDS_DIR / f"{fs.shard_ids[0]}.zarr"), consolidated=False, zarr_format=3)
    assert ds["embed"].dims == ("frame", "embed_dim") and ds["cls"].dims == ("frame", "width")


def test_xarray_gets_row_coordinates_and_readable_names(described_store):
    """Before: a shard opened with plain xarray had no time coordinate, and token maps were variables "2", "3"."""
    xr = pytest.importorskip("xarray")
    from freezeframe.store import to_xarray

    fs = open_store(described_store)[FEATURE_SET]
    shard = xr.open_zarr(str(fs.path / SHARDS_DIR / f"{fs.shard_ids[0]}.zarr"), consolidated=False, zarr_format=3)
    assert {"timestamps", "frame_indices"} <= set(shard["embed"].coords)
    ids = fs.video_ids()
    ds = to_xarray(fs, ids[::-1])
    assert set(ds.data_vars) == {"embed", "cls", "tokens_2", "tokens_3", "block_input_2"}
    assert ds["tokens_3"].dims == ("frame", "token", "width") and ds["tokens_3"].attrs["stored_as"] == "tokens/3"
    lengths = [fs.locate(v).n_rows for v in ids[::-1]]
    assert list(ds["video"].values) == [v for v, n in zip(ids[::-1], lengths) for _ in range(n)]
    for video_id in ids:
        rows = ds.where(ds["video"] == video_id, drop=True)
        np.testing.assert_array_equal(rows["tokens_2"].values, fs.read(video_id, "tokens/2"))
        np.testing.assert_array_equal(rows["time"].values, fs.read(video_id, "timestamps"))
        np.testing.assert_array_equal(rows["frame_index"].values, fs.read(video_id, "frame_indices"))


def test_h5py_sees_dimension_labels_and_descriptions(described_store):
    import h5py

    fs = open_store(described_store)["h5"]
    (shard_id,) = fs.shard_ids
    with h5py.File(fs.path / SHARDS_DIR / f"{shard_id}.h5", "r") as handle:
        tokens = handle["tokens/2"]
        assert [d.label for d in tokens.dims] == ["frame", "token", "width"]
        assert "token 0 is CLS" in tokens.attrs["description"]
        assert [d.label for d in handle["embed"].dims] == ["frame", "embed_dim"]
        assert "commit marker" in handle.attrs["committed_by"]


def test_stores_without_group_metadata_still_read_and_verify(described_store, tmp_path, run_cli):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(described_store, old)
    for path in [old / "zarr.json", *old.glob("*/zarr.json"), *old.glob(f"*/{SHARDS_DIR}/zarr.json")]:
        path.unlink()  # as written before stores described themselves
    fs = open_store(old)[FEATURE_SET]
    np.testing.assert_array_equal(fs.read("short_32frames", "embed"),
                                  open_store(described_store)[FEATURE_SET].read("short_32frames", "embed"))
    assert run_cli("verify", old).exit_code == 0
    result = run_cli("verify", described_store)
    assert result.exit_code == 0 and "warning" not in result.output, result.output


@pytest.mark.parametrize("store_format", ["zarr", "hdf5"])
def test_a_shard_slightly_over_one_chunk_is_not_padded_to_two(tmp_path, store_format):
    from freezeframe.store.zarr_backend import CHUNK_BYTES

    row = (17, 64)  # a tiny ViT's token map: 2176 bytes a row
    rows = CHUNK_BYTES // (17 * 64 * 2) + 40  # 1.04 chunks: before, stored as 2 whole chunks (1.9x the data)
    writer = FeatureSetWriter(tmp_path / "s", "s", {"kind": "test"}, format=store_format)
    shard = writer.new_shard()
    shard.append("v", {"tokens/0": np.ones((rows, *row), np.float16)})
    shard.end_video("v")
    marker = shard.commit()
    path = writer.shards_dir / marker["file"]
    data = rows * 17 * 64 * 2
    stored = (sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")
              if path.is_dir() else path.stat().st_size)
    assert data <= stored < 1.01 * data + 64 * 1024, (stored, data)


# ---- rm and export-npy -----------------------------------------------------------------------------------------

ODD_IDS = ["v0", "dir/v1", "..", "v3 ✓"]


def _video_rows(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    """One video's arrays: `embed` (4), `tokens/10` (3, 4) and a timestamp every half second."""
    return {"embed": rng.standard_normal((rows, 4)).astype(np.float16),
            "tokens/10": rng.standard_normal((rows, 3, 4)).astype(np.float16),
            "timestamps": np.arange(rows) / 2.0}


def _two_shards(store: Path, store_format: str = "zarr") -> dict[str, dict[str, np.ndarray]]:
    """Shard one holds v0, dir/v1 and '..'; shard two holds 'v3 ✓'. Returns id -> array -> rows."""
    writer = FeatureSetWriter(store, "s", {"kind": "test"}, format=store_format)
    rng = np.random.default_rng(0)
    data = {}
    for ids in (ODD_IDS[:3], ODD_IDS[3:]):
        shard = writer.new_shard()
        for number, video_id in enumerate(ids):
            rows = 3 + number
            data[video_id] = _video_rows(rng, rows)
            shard.append(video_id, data[video_id])
            shard.end_video(video_id, {"source": f"{video_id}.mp4"})
        shard.commit()
    writer.write_index()
    return data


def _assert_holds(store: Path, data: dict, ids: list[str]) -> None:
    fs = open_store(store)["s"]
    assert fs.video_ids() == sorted(ids)
    for video_id in ids:
        for array, rows in data[video_id].items():
            np.testing.assert_array_equal(fs.read(video_id, array), rows)
        assert fs.video_info(video_id)["source"] == f"{video_id}.mp4"


@pytest.mark.parametrize("store_format", ["zarr", "hdf5"])
def test_rm_videos_rewrites_their_shards_and_verifies(tmp_path, run_cli, store_format):
    store = tmp_path / "store"
    data = _two_shards(store, store_format)
    refused = run_cli("rm", store, "s", "--videos", "dir/v1", "--videos", "nope", "--yes")
    assert refused.exit_code == 2 and refused.output.count("\n") == 1, refused.output  # before: exit 0
    assert "1 video id not committed in feature set 's': 'nope'; nothing deleted" in refused.output
    _assert_holds(store, data, ODD_IDS)
    result = run_cli("rm", store, "s", "--videos", "dir/v1", "--videos", "v3 ✓", "--yes")
    assert result.exit_code == 0, result.output
    assert "removed 2 videos (1 shard dropped, 1 rewritten without them)" in result.output
    _assert_holds(store, data, ["v0", ".."])
    assert len(open_store(store)["s"].shard_ids) == 1
    check = run_cli("verify", store)
    assert check.exit_code == 0 and "warning" not in check.output, check.output


def test_a_crash_after_the_rewritten_shard_commits_serves_the_new_state(tmp_path, run_cli):
    from freezeframe.store.tools.remove import _copy_videos
    from freezeframe.store.markers import committed_shard_ids, read_marker

    store = tmp_path / "store"
    data = _two_shards(store)
    writer = FeatureSetWriter(store, "s", {"kind": "test"})
    first = read_marker(writer.shards_dir, committed_shard_ids(writer.shards_dir)[0])
    _copy_videos(writer, first, [v for v in first["videos"] if v["id"] != "dir/v1"])  # then the process "dies"
    _assert_holds(store, data, ["v0", "..", "v3 ✓"])  # the replaced shard is not served: no duplicates
    assert run_cli("verify", store).exit_code == 0
    assert run_cli("rm", store, "s", "--videos", "v0", "--yes").exit_code == 0  # finishes the cleanup too
    _assert_holds(store, data, ["..", "v3 ✓"])
    assert len(committed_shard_ids(writer.shards_dir)) == 2


def test_a_crash_before_the_rewritten_shard_commits_changes_nothing(tmp_path):
    store = tmp_path / "store"
    data = _two_shards(store)
    result = subprocess.run([sys.executable, "-m", "freezeframe.cli", "rm", str(store), "s", "--videos", "v0",
                             "--yes"], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO), "FREEZEFRAME_FAULT": "shard.marker:1"})
    assert result.returncode == -signal.SIGKILL, result.stderr
    _assert_holds(store, data, ODD_IDS)
    from freezeframe.store import verify_store

    assert verify_store(store).ok


def test_rm_a_feature_set(tmp_path, run_cli):
    store = tmp_path / "store"
    _two_shards(store)
    assert run_cli("rm", store, "s").exit_code == 1  # asks first; no answer: aborted
    assert "s" in open_store(store)
    result = run_cli("rm", store, "s", "--yes")
    assert result.exit_code == 0 and "removed feature set s (4 videos)" in result.output
    assert open_store(store).names() == [] and [p.name for p in store.iterdir() if p.is_dir()] == []
    result = run_cli("rm", store, "s", "--yes")
    assert result.exit_code == 2 and "has no feature set 's'" in result.output


def test_export_npy_writes_one_file_per_video_and_array(tmp_path, run_cli):
    store, out = tmp_path / "store", tmp_path / "out"
    data = _two_shards(store)
    result = run_cli("export-npy", store, "--set", "s", out)
    assert result.exit_code == 0 and "wrote 16 files for 4 videos" in result.output, result.output
    manifest = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert sorted(manifest["videos"]) == sorted(ODD_IDS)
    assert manifest["videos"]["v0"] == {"embed": "v0_embed.npy", "tokens/10": "v0_tokens-10.npy",
                                        "timestamps": "v0_timestamps.npy", "timestamps_ms": "v0_timestamps_ms.npy"}
    assert manifest["videos"][".."]["embed"] == "%2E._embed.npy" and manifest["videos"]["dir/v1"]["embed"] == \
        "dir%2Fv1_embed.npy"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == []  # no id became a folder or left OUT
    for video_id, arrays in data.items():
        files = manifest["videos"][video_id]
        for array, rows in arrays.items():
            np.testing.assert_array_equal(np.load(out / files[array]), rows)
        np.testing.assert_array_equal(np.load(out / files["timestamps_ms"]), arrays["timestamps"] * 1000)
    result = run_cli("export-npy", store, "--set", "s", out, "--arrays", "embed,nope")
    assert result.exit_code == 2 and "has no array 'nope'" in result.output


def _fps_set(store: Path, ids: list[str], provenance: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """A set sampled at 2 fps by model ViT-B/32 (as video_features names it), `embed` + tokens + timestamps."""
    provenance = provenance or {"backbone": {"kind": "clip", "model": "ViT-B/32"},
                                "sampling": {"strategy": "fps", "fps": 2.0}}
    writer = FeatureSetWriter(store, "s", provenance)
    rng = np.random.default_rng(1)
    shard, data = writer.new_shard(), {}
    for number, video_id in enumerate(ids):
        rows = 3 + number
        data[video_id] = _video_rows(rng, rows)
        shard.append(video_id, data[video_id])
        shard.end_video(video_id)
    shard.commit()
    writer.write_index()
    return data


def test_export_npy_video_features_layout_is_what_video_features_writes(tmp_path, run_cli):
    """video_features (save_numpy, a frame-wise extractor) writes OUT/<feature_type>/<model with / as _>/
    <stem>_<feature_type>.npy as np.array of Python floats (float64, frames x dim), <stem>_fps.npy (0-d float64)
    and <stem>_timestamps_ms.npy (float64)."""
    store, out = tmp_path / "store", tmp_path / "out"
    data = _fps_set(store, ["train/v_abc", "v3 ✓"])
    result = run_cli("export-npy", store, "--set", "s", out, "--layout", "video-features")
    assert result.exit_code == 0 and "wrote 6 files for 2 videos" in result.output, result.output
    folder = out / "clip" / "ViT-B_32"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{stem}_{key}.npy" for stem in ("v_abc", "v3 ✓") for key in ("clip", "fps", "timestamps_ms"))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == \
        sorted(["export.json"] + [str(p.relative_to(out)) for p in folder.iterdir()])
    for video_id, stem in (("train/v_abc", "v_abc"), ("v3 ✓", "v3 ✓")):
        feats = np.load(folder / f"{stem}_clip.npy")
        assert feats.dtype == np.float64 and feats.shape == data[video_id]["embed"].shape
        np.testing.assert_array_equal(feats, data[video_id]["embed"].astype(np.float64))
        fps = np.load(folder / f"{stem}_fps.npy")
        assert fps.dtype == np.float64 and fps.shape == () and float(fps) == 2.0
        times = np.load(folder / f"{stem}_timestamps_ms.npy")
        assert times.dtype == np.float64
        np.testing.assert_array_equal(times, np.arange(len(feats)) * 500.0)
    refused = run_cli("export-npy", store, "--set", "s", out, "--layout", "video-features", "--arrays", "tokens/10")
    assert refused.exit_code == 2 and "per-frame vectors" in refused.output


def test_export_npy_clip_video_encode_layout(tmp_path, run_cli):
    """clip-video-encode's FileWriter: OUT/<key>.npy holding the frames x dim embeddings, nothing else per video."""
    store, out = tmp_path / "store", tmp_path / "out"
    data = _fps_set(store, ["train/v_abc", "v3 ✓"])
    result = run_cli("export-npy", store, "--set", "s", out, "--layout", "clip-video-encode")
    assert result.exit_code == 0 and "wrote 2 files for 2 videos" in result.output, result.output
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "train%2Fv_abc.npy", "v3 ✓.npy"]
    for video_id, name in (("train/v_abc", "train%2Fv_abc.npy"), ("v3 ✓", "v3 ✓.npy")):
        value = np.load(out / name)
        assert value.dtype == np.float16
        np.testing.assert_array_equal(value, data[video_id]["embed"])


@pytest.mark.parametrize("ids, provenance, message", [
    (["a/v", "b/v"], None, "would both be written as v_*.npy"),
    (["v"], {"backbone": {"kind": "clip", "model": "m"}, "sampling": {"strategy": "uniform"}}, "extract with --fps"),
])
def test_export_npy_video_features_refusals(tmp_path, run_cli, ids, provenance, message):
    store = tmp_path / "store"
    _fps_set(store, ids, provenance)
    result = run_cli("export-npy", store, "--set", "s", tmp_path / "out", "--layout", "video-features")
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output, result.output


def test_re_export_removes_the_previous_exports_stale_files_and_nothing_else(tmp_path, run_cli):
    store, out = tmp_path / "store", tmp_path / "out"
    _two_shards(store)
    assert run_cli("export-npy", store, "--set", "s", out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "mine.npy").write_bytes(b"not listed")
    before = {p.name for p in out.iterdir()}
    result = run_cli("export-npy", store, "--set", "s", out, "--arrays", "embed")
    assert result.exit_code == 0 and "removed 12 files of the previous export" in result.output, result.output
    manifest = json.loads((out / "export.json").read_text(encoding="utf-8"))
    listed = {name for files in manifest["videos"].values() for name in files.values()}
    assert {p.name for p in out.iterdir()} == listed | {"export.json", "notes.txt", "mine.npy"}
    assert len(before) == 16 + 3 and len(listed) == 4
    # a doctored export.json naming files outside OUT removes nothing there
    outside = tmp_path / "keep_embed.npy"
    outside.write_bytes(b"x")
    manifest["videos"]["v0"]["embed"] = "../keep_embed.npy"
    (out / "export.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert run_cli("export-npy", store, "--set", "s", out, "--arrays", "embed").exit_code == 0
    assert outside.exists()


# ---- smaller things a user meets (issue 25, item 9) ----------------------------------------------------------

def test_extract_help_shows_the_chosen_backbones_options(run_cli):
    """Before: --model/--pretrained/--features/--layers each merged every backbone's meaning and default."""
    default = run_cli("extract", "-h").output
    model_help = default.split("--model TEXT")[1].split("--pretrained")[0]
    assert "ViT-B-32" in model_help and "resnet50" not in model_help and "timm" not in model_help
    assert "--image-size" not in default  # not an option of clip
    assert "Backbone options above are those of --backbone clip" in " ".join(default.split())
    timm = run_cli("extract", "--backbone", "timm", "-h").output
    model_help = timm.split("--model TEXT")[1].split("--pretrained")[0]
    assert "resnet50" in model_help and "ViT-B-32" not in model_help
    assert "[required]" in timm.split("--pretrained TEXT")[1].split("--features")[0]


def test_help_texts_say_what_the_commands_do(run_cli):
    assert "Threads that check shards at once" in " ".join(run_cli("verify", "-h").output.split())
    text = " ".join(run_cli("extract-text", "-h").output.split())
    assert "[default: openai]" in text.split("--pretrained TEXT")[1].split("--layers")[0]  # as extract's


def test_a_rerun_does_not_repeat_a_failure_line(tmp_path, run_cli):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video at all" * 100)
    store = tmp_path / "store"
    for _ in range(2):
        result = run_cli("extract", videos, "--store", store, *TINY)
        assert result.exit_code == 1, result.output
    lines = (store / FEATURE_SET / "failures.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["video_id"] == "broken"  # before: one line per run


def test_inspect_lists_video_ids_up_to_a_limit(tmp_path, run_cli):
    store = tmp_path / "store"
    _two_shards(store)
    result = run_cli("inspect", store, "--videos", "--limit", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "s: 4 videos (first 2; --limit 0 lists all)" and lines[1:] == ["  ..", "  dir/v1"]
    listing = json.loads(run_cli("inspect", store, "--videos", "--limit", "0", "--json").output)
    assert listing == {"feature_sets": {"s": {"num_videos": 4, "video_ids": sorted(ODD_IDS)}}}
    refused = run_cli("inspect", store, "--videos", "--set", "nope")
    assert refused.exit_code == 2 and "has no feature set 'nope'" in refused.output


def test_the_demo_says_what_chance_looks_like_on_its_held_out_videos(tmp_path, run_cli):
    """Before: a probe at 90% on 10 held-out videos read as a broken claim, with nothing to say how noisy 10 are."""
    from math import comb

    from freezeframe.demo import chance_band

    def central_95(n: int) -> tuple[float, float]:  # the smallest k with P(X <= k) >= 2.5%, and its mirror
        cdf = 0.0
        for k in range(n + 1):
            cdf += comb(n, k) / 2 ** n
            if cdf >= 0.025:
                return k / n, (n - k) / n

    for n in (10, 40, 100):
        assert chance_band(n) == pytest.approx(central_95(n))
    result = run_cli("demo", "--out", tmp_path / "demo", "--videos", "12", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "chance is 50%: on 3 held-out videos guessing alone scores 0-100% 95% of the time" in result.output
    assert "use --videos 160 or more" in result.output
