"""The HDF5 backend, shard compression and `freezeframe convert`, on real extractions and real files.

Two real CLI extractions of the 8 sample videos (plus one unreadable file) with the bundled tiny model,
one per format, are shared by the module; everything else converts or writes shards from them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import freezeframe.store.shard as shard_module
from freezeframe.errors import StoreError
from freezeframe.store import FeatureSetWriter, hdf5_backend, open_store, verify_store
from freezeframe.store import provenance as prov
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate
from freezeframe.store.files import read_jsonl
from freezeframe.store.layout import FAILURES_FILE, MARKER_SUFFIX, PROVENANCE_FILE, SHARDS_DIR, TEMP_PREFIX
from freezeframe.heads.qk import stored_qk

VIDEOS = Path(__file__).resolve().parents[1] / "data" / "videos"
NAME = "clip-ff-tiny-vit-random"
CODECS = {"none": "uncompressed", "zstd": "zstd level 3", "blosc": "blosc zstd level 5, byte shuffle"}
EXTRACT = ["--model", "ff-tiny-vit", "--pretrained", "none", "--features", "embed,tokens", "--num-frames", "4",
           "--shard-size", "3", "--batch-size", "8", "--workers", "1", "--no-progress"]


def _inputs(base: Path) -> Path:
    inputs = base / "in"
    inputs.mkdir()
    for video in sorted(VIDEOS.iterdir()):
        if video.suffix in (".mp4", ".avi"):
            (inputs / video.name).symlink_to(video)
    (inputs / "broken.mp4").write_bytes(b"not a video at all\n" * 20)
    return inputs


def _extract(run_cli, base: Path, fmt: str) -> Path:
    store = base / fmt
    result = run_cli("extract", base / "in", "--store", store, *EXTRACT, "--format", fmt)
    assert result.exit_code == 1, result.output  # the broken input fails, the 8 videos are stored
    assert "stored 8 videos (32 frames)" in result.output, result.output
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(zarr store, hdf5 store): the same extraction in both formats, through the CLI."""
    from click.testing import CliRunner

    from freezeframe.cli import main

    def run_cli(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    base = tmp_path_factory.mktemp("formats")
    _inputs(base)
    return _extract(run_cli, base, "zarr"), _extract(run_cli, base, "hdf5")


def markers(store: Path, name: str = NAME) -> list[dict]:
    shards = store / name / SHARDS_DIR
    return [json.loads(p.read_text()) for p in sorted(shards.glob(f"*{MARKER_SUFFIX}"))
            if not p.name.startswith(TEMP_PREFIX)]


def shard_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in (store / NAME / SHARDS_DIR).rglob("*")
               if p.is_file() and not p.name.endswith(MARKER_SUFFIX))


def assert_same_store(got: Path, want: Path, copy: bool = True) -> None:
    """Every array of every video byte-equal, same provenance, failures, frozen weights, shard grouping.

    A copy keeps provenance and failure records exactly; two extractions differ in their times only.
    """
    a, b = open_store(got)[NAME], open_store(want)[NAME]
    assert a.video_ids() == b.video_ids() and len(a) == 8
    assert a.arrays() == b.arrays()
    for video_id in b.video_ids():
        strip = lambda info: {k: v for k, v in info.items() if k not in ("shard", "row_start")}
        assert strip(a.video_info(video_id)) == strip(b.video_info(video_id))
        for array in b.arrays():
            x, y = a.read(video_id, array), b.read(video_id, array)
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (video_id, array)
    failures = [read_jsonl(store / NAME / FAILURES_FILE) for store in (got, want)]
    if copy:
        assert a.provenance == b.provenance and failures[0] == failures[1]
    else:
        assert prov.identity(a.provenance) == prov.identity(b.provenance)
        assert [{**f, "time": 0} for f in failures[0]] == [{**f, "time": 0} for f in failures[1]]
    assert len(failures[0]) == 1
    fa, fb = a.frozen_weights(), b.frozen_weights()
    assert sorted(fa) == sorted(fb) and all(fa[k].tobytes() == fb[k].tobytes() for k in fb)
    groups = lambda store: sorted(sorted(v["id"] for v in m["videos"]) for m in markers(store))
    assert groups(got) == groups(want)


# ---- extraction in HDF5 -------------------------------------------------------------------------


def test_hdf5_extraction_equals_zarr_and_reads_the_same(stores, run_cli):
    zarr_store, h5_store = stores
    shard_files = sorted(p.name for p in (h5_store / NAME / SHARDS_DIR).iterdir()
                         if not p.name.endswith(MARKER_SUFFIX) and p.name != "zarr.json")  # (shards/ is a Zarr group)
    assert len(shard_files) == 3 and all(name.endswith(".h5") for name in shard_files)
    assert all((h5_store / NAME / SHARDS_DIR / f).is_file() for f in shard_files)  # one file per shard
    assert (h5_store / NAME / "frozen.h5").is_file() and not (h5_store / NAME / "frozen.zarr").exists()
    assert {(m["format"], m["compression"]) for m in markers(h5_store)} == {("hdf5", "none")}
    assert {(m["format"], m["compression"]) for m in markers(zarr_store)} == {("zarr", "none")}
    with h5py.File(h5_store / NAME / SHARDS_DIR / shard_files[0], "r") as f:
        assert isinstance(f["tokens"], h5py.Group) and f["tokens/3"].shape[1:] == (17, 64)
        assert f["tokens/3"].maxshape[0] is None and f["tokens/3"].chunks[0] <= f["tokens/3"].shape[0]
        assert isinstance(f.attrs["shard_id"], str) and isinstance(json.loads(f.attrs["videos"]), list)
    reader = hdf5_backend.Hdf5BundleReader(h5_store / NAME / SHARDS_DIR / shard_files[0])
    marker = next(m for m in markers(h5_store) if m["file"] == shard_files[0])
    attrs = reader.attrs()
    assert attrs.pop("committed_by").startswith(f"the commit marker {marker['shard_id']}.done.json")
    assert attrs == {"shard_id": marker["shard_id"], "videos": marker["videos"]}
    assert reader.array_names() == sorted(marker["arrays"])
    reader.close()

    assert_same_store(h5_store, zarr_store, copy=False)  # identical numbers, bit for bit
    h5, zr = open_store(h5_store)[NAME], open_store(zarr_store)[NAME]
    assert h5.arrays()["tokens/3"] == {"shape": [17, 64], "dtype": "float16"}
    assert h5.read("archery_demo", "tokens/2", np.array([3, 0])).tobytes() == \
        zr.read("archery_demo", "tokens/2")[[3, 0]].tobytes()
    for block in (0, 3):  # block 0 from its stored input, block 3 from tokens/2; both via frozen.h5
        for x, y in zip(stored_qk(h5, "archery_demo", block), stored_qk(zr, "archery_demo", block)):
            assert x.shape == (4, 2, 17, 32) and torch.equal(x, y)

    inspected = {}
    for store in stores:
        result = run_cli("inspect", store, "--json")
        assert result.exit_code == 0, result.output
        inspected[store.name] = json.loads(result.output)["feature_sets"][NAME]
        assert run_cli("verify", store).exit_code == 0
    assert inspected["hdf5"]["storage"] == [{"format": "hdf5", "compression": "none", "shards": 3}]
    assert inspected["zarr"]["storage"] == [{"format": "zarr", "compression": "none", "shards": 3}]
    for key in ("num_videos", "num_frames", "num_shards", "arrays"):
        assert inspected["hdf5"][key] == inspected["zarr"][key], key
    assert prov.identity(inspected["hdf5"]["provenance"]) == prov.identity(inspected["zarr"]["provenance"])
    assert "format" not in inspected["hdf5"]["provenance"] and "compression" not in inspected["hdf5"]["provenance"]
    assert [f["video_id"] for f in inspected["hdf5"]["failures"]] == ["broken"]
    assert "hdf5/none (3 shards)" in run_cli("inspect", h5_store).output


def test_verify_detects_a_flipped_byte_and_a_damaged_h5_file(stores, tmp_path, run_cli):
    store = tmp_path / "copy"
    shutil.copytree(stores[1], store, symlinks=True)
    first, second = sorted((store / NAME / SHARDS_DIR).glob("*.h5"))[:2]
    with h5py.File(first, "r") as f:  # where tokens/3's first chunk lies in the file
        chunk = f["tokens/3"].id.get_chunk_info(0)
    assert chunk.size > 200
    data = bytearray(first.read_bytes())
    data[chunk.byte_offset + 100] ^= 0x80
    first.write_bytes(bytes(data))
    result = run_cli("verify", store)
    assert result.exit_code == 1
    assert "'tokens/3' checksum mismatch" in result.output
    assert result.output.count("problem:") == 1

    second.write_bytes(second.read_bytes()[:1000])  # a truncated file: reported, never a traceback
    result = run_cli("verify", store)
    assert result.exit_code == 1, result.output
    assert f"{second.stem}: cannot open" in result.output and "Traceback" not in result.output


# ---- atomic commits with a single-file backend ------------------------------------------------------


def _arrays(fs, seed: int, n: int) -> dict[str, np.ndarray]:
    """n rows of every array of the feature set, shaped like its own, with values distinct per seed."""
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((n, *meta["shape"])).astype(meta["dtype"]) for name, meta in fs.arrays().items()}


def test_uncommitted_h5_shards_are_invisible_and_aborts_remove_files(stores, tmp_path, monkeypatch):
    store = tmp_path / "store"
    shutil.copytree(stores[1], store, symlinks=True)
    shards = store / NAME / SHARDS_DIR
    provenance = json.loads((store / NAME / PROVENANCE_FILE).read_text())
    writer = FeatureSetWriter(store, NAME, provenance, format="hdf5", compression="zstd")
    fs = open_store(store)[NAME]
    before = fs.video_ids()

    fsynced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    monkeypatch.setattr(shard_module, "FLUSH_BYTES", 1)  # rows reach the temporary file at every append

    in_flight = writer.new_shard()  # written, never renamed: a crash here leaves only a temporary .h5
    in_flight.append("temp-video", _arrays(fs, 0, 3))
    in_flight.end_video("temp-video")
    assert in_flight.temp_path.is_file() and in_flight.temp_path.suffix == ".h5"
    assert in_flight.temp_path.name.startswith(TEMP_PREFIX)

    renamed = writer.new_shard()  # renamed, but the marker never written: still invisible
    renamed.append("unmarked-video", _arrays(fs, 1, 2))
    renamed.end_video("unmarked-video")
    with monkeypatch.context() as m:
        m.setattr(shard_module, "write_json_atomic", lambda path, obj, **_: (_ for _ in ()).throw(OSError("crash")))
        with pytest.raises(OSError, match="crash"):
            renamed.commit()
    assert renamed.final_path.is_file() and not renamed.temp_path.exists()
    assert str(renamed.temp_path) in fsynced  # the file itself was fsynced before its rename

    fs.refresh()
    assert fs.video_ids() == before and "temp-video" not in fs and "unmarked-video" not in fs
    report = verify_store(store)
    assert report.ok, report.problems
    assert any("uncommitted temporary" in w for w in report.warnings)
    assert any(f"{renamed.final_path.name} has no commit marker" in w for w in report.warnings)

    in_flight.abort()  # the open HDF5 file is closed and unlinked
    renamed.abort()  # a renamed file without a marker is removed too
    assert not in_flight.temp_path.exists() and not renamed.final_path.exists()

    # discard a video whose rows were already flushed (HDF5 datasets are truncated), then commit compressed
    shard = writer.new_shard()
    shard.append("a", _arrays(fs, 2, 5))
    shard.end_video("a", {"source": "a.mp4"})
    shard.append("dropped", _arrays(fs, 3, 4))
    shard.discard_video("dropped")
    shard.append("b", _arrays(fs, 4, 2))
    shard.end_video("b")
    marker = shard.commit()
    assert (marker["format"], marker["compression"], marker["num_rows"]) == ("hdf5", "zstd", 7)
    fs.refresh()
    for video_id, seed, n in (("a", 2, 5), ("b", 4, 2)):
        for array, want in _arrays(fs, seed, n).items():
            assert fs.read(video_id, array).tobytes() == want.tobytes()
    assert "dropped" not in fs and fs.video_info("a")["source"] == "a.mp4"
    assert fs.storage() == [{"format": "hdf5", "compression": "none", "shards": 3},
                            {"format": "hdf5", "compression": "zstd", "shards": 1}]
    writer.write_index()
    report = verify_store(store)
    assert report.ok and not report.warnings, (report.problems, report.warnings)

    # a temporary .h5 of a dead writer on this host is removed by the next writer
    dead = shards / in_flight.temp_path.name.replace(f".{os.getpid()}-", ".999999999-")
    dead.write_bytes(b"half a file")
    FeatureSetWriter(store, NAME, provenance, format="hdf5")
    assert not dead.exists()


def test_hdf5_compression_without_hdf5plugin_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_plugin(name, *args, **kwargs):
        if name == "hdf5plugin":
            raise ImportError("no hdf5plugin here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_plugin)
    with pytest.raises(StoreError, match="pip install hdf5plugin"):
        FeatureSetWriter(tmp_path / "s", "x", {"backbone": {}}, format="hdf5", compression="zstd")
    assert not (tmp_path / "s" / "x").exists()  # refused before anything was created
    with pytest.raises(StoreError, match="unknown compression"):
        FeatureSetWriter(tmp_path / "s", "x", {"backbone": {}}, format="zarr", compression="gzip")


# ---- convert ------------------------------------------------------------------------------------


def test_convert_round_trips_zarr_hdf5_zarr_and_resumes(stores, tmp_path, run_cli):
    zarr_store = stores[0]
    h5, back = tmp_path / "h5", tmp_path / "back"
    result = run_cli("convert", zarr_store, h5, "--format", "hdf5", "--compression", "zstd")
    assert result.exit_code == 0, result.output
    assert "copied 3 shards (8 videos)" in result.output and "8 videos verified equal" in result.output
    assert {(m["format"], m["compression"]) for m in markers(h5)} == {("hdf5", "zstd")}
    assert (h5 / NAME / "frozen.h5").is_file()
    result = run_cli("convert", h5, back, "--format", "zarr", "--quiet")
    assert result.exit_code == 0, result.output
    for store in (h5, back):
        assert_same_store(store, zarr_store)
        assert verify_store(store).ok
    a, b = open_store(back)[NAME], open_store(zarr_store)[NAME]
    for block in (0, 3):
        for x, y in zip(stored_qk(a, "v_GGSY1Qvo990", block), stored_qk(b, "v_GGSY1Qvo990", block)):
            assert torch.equal(x, y)
    assert (back / NAME / PROVENANCE_FILE).read_bytes() == (zarr_store / NAME / PROVENANCE_FILE).read_bytes()

    # a rerun copies nothing and checks everything again
    result = run_cli("convert", zarr_store, h5, "--format", "hdf5", "--compression", "zstd")
    assert result.exit_code == 0, result.output
    assert "copied 0 shards (0 videos), skipped 3" in result.output and "8 videos verified equal" in result.output
    assert "0 failure records copied" in result.output
    assert len(read_jsonl(h5 / NAME / FAILURES_FILE)) == 1

    # a run cut short: one shard missing in DST; the rerun (another compression: allowed) copies just that one
    lost = markers(h5)[1]
    (h5 / NAME / SHARDS_DIR / f"{lost['shard_id']}{MARKER_SUFFIX}").unlink()
    (h5 / NAME / SHARDS_DIR / lost["file"]).unlink()
    result = run_cli("convert", zarr_store, h5, "--format", "hdf5", "--compression", "blosc")
    assert result.exit_code == 0, result.output
    assert "copied 1 shard (3 videos), skipped 2" in result.output
    assert sorted(m["compression"] for m in markers(h5)) == ["blosc", "zstd", "zstd"]
    assert_same_store(h5, zarr_store)
    summary = json.loads(run_cli("inspect", h5, "--json").output)["feature_sets"][NAME]
    assert summary["storage"] == [{"format": "hdf5", "compression": "blosc", "shards": 1},
                                  {"format": "hdf5", "compression": "zstd", "shards": 2}]

    # usage errors: one line, exit 2
    result = run_cli("convert", zarr_store, tmp_path / "x", "--set", "nope")
    assert result.exit_code == 2 and "no feature set 'nope'" in result.output
    result = run_cli("convert", zarr_store, zarr_store)
    assert result.exit_code == 2 and "other than the source" in result.output


def test_zstd_and_blosc_are_smaller_on_real_features_and_read_back_equal(stores, tmp_path, run_cli):
    sizes = {}
    for fmt in ("zarr", "hdf5"):
        for compression in ("none", "zstd", "blosc"):
            dst = tmp_path / f"{fmt}-{compression}"
            result = run_cli("convert", stores[0], dst, "--format", fmt, "--compression", compression, "--set", NAME)
            assert result.exit_code == 0, result.output
            sizes[fmt, compression] = shard_bytes(dst)
            fs = open_store(dst)[NAME]
            assert fs.storage() == [{"format": fmt, "compression": compression, "shards": 3}]
            assert {m["codec"] for m in markers(dst)} == {CODECS[compression]}
    raw = sum(open_store(stores[0])[NAME].read(v, a).nbytes for v in open_store(stores[0])[NAME].video_ids()
              for a in open_store(stores[0])[NAME].arrays())
    for fmt in ("zarr", "hdf5"):
        assert sizes[fmt, "zstd"] < 0.97 * sizes[fmt, "none"], sizes
        assert sizes[fmt, "blosc"] < 0.97 * sizes[fmt, "none"], sizes
    assert sizes["hdf5", "none"] >= raw  # uncompressed: every byte is there

    for compression in ("zstd", "blosc"):  # the features themselves shrink (HDF5 file metadata aside)
        stored = 0
        for path in (tmp_path / f"hdf5-{compression}" / NAME / SHARDS_DIR).glob("*.h5"):
            with h5py.File(path, "r") as f:
                names: list[str] = []
                f.visititems(lambda name, node, names=names:
                             names.append(name) if isinstance(node, h5py.Dataset) else None)
                stored += sum(f[name].id.get_storage_size() for name in names)
        assert stored < 0.95 * raw
    for fmt, compression in sizes:
        assert_same_store(tmp_path / f"{fmt}-{compression}", stores[0])
        assert verify_store(tmp_path / f"{fmt}-{compression}").ok
    # compression is a storage detail: provenance identical in all six copies
    provenances = {(tmp_path / f"{f}-{c}" / NAME / PROVENANCE_FILE).read_bytes() for f, c in sizes}
    assert len(provenances) == 1


def test_convert_reports_mismatches_and_retracts_the_bad_shard(stores, tmp_path, run_cli, monkeypatch):
    zarr_store = stores[0]
    dst = tmp_path / "dst"
    real_append = hdf5_backend.Hdf5BundleWriter.append
    calls = []

    def corrupting_append(self, name, block):  # fault injection: one value of one array changes on its way
        if name == "tokens/3" and not calls:
            calls.append(name)
            block = block.copy()
            block[0, 0, 0] += 1
        return real_append(self, name, block)

    monkeypatch.setattr(hdf5_backend.Hdf5BundleWriter, "append", corrupting_append)
    result = run_cli("convert", zarr_store, dst, "--format", "hdf5")
    assert result.exit_code == 1, result.output
    assert "array 'tokens/3' differs in the copy" in result.output and "convert failed: 1 mismatches" in result.output
    assert len(markers(dst)) == 2  # the bad shard was retracted: no marker, no file
    assert len(list((dst / NAME / SHARDS_DIR).glob("*.h5"))) == 2
    assert verify_store(dst).ok

    monkeypatch.undo()
    result = run_cli("convert", zarr_store, dst, "--format", "hdf5")  # the rerun redoes just that shard
    assert result.exit_code == 0, result.output
    assert "copied 1 shard" in result.output
    assert_same_store(dst, zarr_store)

    # a destination whose committed copy of a video differs (same provenance, other numbers) is caught too
    fs = open_store(dst)[NAME]
    victim = fs.video_info("archery_demo")
    marker = next(m for m in markers(dst) if m["shard_id"] == victim["shard"])
    path = dst / NAME / SHARDS_DIR / marker["file"]
    with h5py.File(path, "r+") as f:
        f["embed"][victim["row_start"], 0] += 1
    result = run_cli("convert", zarr_store, dst, "--format", "hdf5")
    assert result.exit_code == 1
    assert "video 'archery_demo' array 'embed' differs in the destination" in result.output


# ---- DataLoader workers over HDF5 -------------------------------------------------------------------


def test_dataloader_workers_read_an_hdf5_store_the_main_process_holds_open(stores, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(stores[1], store, symlinks=True)
    fs = open_store(store)[NAME]
    ids = fs.video_ids()
    dataset = FeatureDataset(store, NAME, ids, ["embed", "tokens/3", "block_input/3"], FrameSelection("all"),
                             labels=list(range(len(ids))))
    expected = [dataset[i] for i in range(len(ids))]  # the main process opens every shard
    reader = dataset._fs._readers[dataset._fs.video_info(ids[0])["shard"]]
    assert reader._file is not None and reader._file.id.valid and reader._pid == os.getpid()
    assert pickle.loads(pickle.dumps(dataset))._fs is None  # what spawn workers receive: no open handle

    # another process commits a new shard while the workers read (readers never see it half-written)
    provenance = json.loads((store / NAME / PROVENANCE_FILE).read_text())
    shard = FeatureSetWriter(store, NAME, provenance, format="hdf5").new_shard()
    shard.append("late", _arrays(fs, 7, 2))
    shard.end_video("late")

    def inherited_open_handles(_worker: int) -> None:  # forked workers get the main process's open readers...
        readers = torch.utils.data.get_worker_info().dataset._fs._readers
        assert readers and all(r._file is not None and r._pid != os.getpid() for r in readers.values())
        # ...and reopen each file on first use instead of sharing the parent's h5py handle

    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate, shuffle=False,
                        worker_init_fn=inherited_open_handles, multiprocessing_context="fork")
    seen = 0
    for epoch in range(2):
        for batch in loader:
            for row, index in enumerate(batch["index"].tolist()):
                for array in ("embed", "tokens/3", "block_input/3"):
                    assert torch.equal(batch["inputs"][array][row], expected[index]["inputs"][array])
                assert batch["label"][row] == index
                seen += 1
            if epoch == 0 and seen == 3:
                shard.commit()
    assert seen == 2 * len(ids)
    # the main process's handles still work, and a refresh sees the new shard
    assert torch.equal(dataset[0]["inputs"]["embed"], expected[0]["inputs"]["embed"])
    assert reader._file.id.valid
    fs.refresh()
    assert "late" in fs and fs.read("late", "embed").tobytes() == _arrays(fs, 7, 2)["embed"].tobytes()
