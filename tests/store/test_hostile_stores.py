"""Stores (and user files) a stranger could hand you: every read stays inside the store, is bounded in time and
memory, and a damaged or hostile file is a one-line error or a verify problem naming the file.

Each case builds a small real Zarr or HDF5 store, damages it the way an attacker would, then tries what applies
of read, FeatureDataset, verify, inspect, convert, export-memmap, and loading a training run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from freezeframe.errors import FreezeframeError, InputError, StoreError
from freezeframe.store import open_store
from freezeframe.store.tools.convert import convert_store
from freezeframe.train.datasets import FeatureDataset, FrameSelection
from freezeframe.userfiles import read_labels
from freezeframe.store.layout import INDEX_DIR, SEGMENT_SUFFIX
from freezeframe.store.tools.memmap import MEMMAP_DIR, MEMMAP_INDEX, export_memmap, open_memmap_export
from freezeframe.store.segment import Segment
from freezeframe.store.tools.verify import verify_store
from freezeframe.store.writer import FeatureSetWriter

SECRET = b"OUTSIDE-THE-STORE-" * 64  # bytes that must never come back from a read
PROVENANCE = {"backbone": {"library": "open_clip", "model": "ff-tiny-vit", "pretrained": "none"}}
EMBED = {"a": np.arange(24, dtype=np.float16).reshape(3, 8), "b": np.full((2, 8), 7, np.float16)}


@contextmanager
def deadline(seconds: int = 10):
    """Fail (instead of hanging the suite) when the body runs longer than `seconds`."""
    def expired(*_):
        raise TimeoutError(f"took longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def make_store(path: Path, fmt: str = "zarr", frozen: bool = True) -> Path:
    writer = FeatureSetWriter(path, "fs", PROVENANCE, format=fmt,
                              frozen={"block0/q_weight": np.ones((4, 4), np.float32)} if frozen else None)
    shard = writer.new_shard()
    for video_id, rows in EMBED.items():
        shard.append(video_id, {"embed": rows})
        shard.end_video(video_id)
    shard.commit()
    writer.write_index()
    return path


def shard_of(store: Path) -> tuple[Path, Path]:
    """(bundle, marker) of the store's only shard."""
    marker = next((store / "fs" / "shards").glob("*.done.json"))
    shard_id = marker.name[:-len(".done.json")]
    bundle = next(p for p in marker.parent.glob(f"{shard_id}.*") if p != marker)
    return bundle, marker


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def drop_index(store: Path) -> None:
    """Remove the video index, so that readers take the (hostile) markers themselves."""
    for segment in (store / "fs" / INDEX_DIR).iterdir():
        segment.unlink()


def problems_of(store: Path) -> list[str]:
    with deadline():
        return verify_store(store).problems


def one_line_error(run_cli, *args) -> str:
    result = run_cli(*args)
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def outside(tmp_path) -> Path:
    path = tmp_path / "outside.bin"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def store(tmp_path) -> Path:
    return make_store(tmp_path / "store")


def test_well_formed_store_reads_and_verifies(store):
    fs = open_store(store)["fs"]
    assert np.array_equal(fs.read("a", "embed"), EMBED["a"]) and np.array_equal(fs.read("b", "embed"), EMBED["b"])
    report = verify_store(store)
    assert report.ok and report.checked_videos == 2 and not report.warnings


# ---- 1. confinement ----------------------------------------------------------------------------------------------

def test_chunk_symlinked_outside_is_refused_by_every_reader(store, outside, tmp_path, run_cli):
    bundle, _ = shard_of(store)
    chunk = bundle / "embed" / "c" / "0" / "0"
    chunk.unlink()
    chunk.symlink_to(outside)
    with deadline(), pytest.raises(StoreError, match="symbolic link|not a regular file"):
        open_store(store)["fs"].read("a", "embed")
    with deadline(), pytest.raises(StoreError):
        FeatureDataset(store, "fs", ["a"], ["embed"], FrameSelection("all"))[0]
    assert any(bundle.name in p and "symbolic link" in p for p in problems_of(store))
    with pytest.raises(StoreError, match="fails verification"):
        convert_store(store, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()  # nothing was copied
    assert "fails verification" in one_line_error(run_cli, "convert", store, tmp_path / "copy2")


def test_symlinked_shard_folder_and_hdf5_file_are_refused(tmp_path, outside):
    zarr_store = make_store(tmp_path / "z")
    bundle, _ = shard_of(zarr_store)
    elsewhere = tmp_path / "elsewhere.zarr"
    bundle.rename(elsewhere)
    bundle.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StoreError):
        open_store(zarr_store)["fs"].read("a", "embed")
    assert problems_of(zarr_store)
    h5_store = make_store(tmp_path / "h", fmt="hdf5")
    bundle, _ = shard_of(h5_store)
    bundle.rename(tmp_path / "elsewhere.h5")
    bundle.symlink_to(tmp_path / "elsewhere.h5")
    with pytest.raises(StoreError, match="not a regular file"):
        open_store(h5_store)["fs"].read("a", "embed")


@pytest.mark.parametrize("name", ["/etc/passwd", "../../outside.bin", "x/../../y", "a\0b"])
def test_marker_file_names_are_never_followed(store, name, run_cli):
    _, marker = shard_of(store)
    edit_json(marker, lambda m: m.update(file=name))
    drop_index(store)
    message = one_line_error(run_cli, "inspect", store)
    assert marker.name in message
    assert any(marker.name[:-len(".done.json")] in p for p in problems_of(store))


@pytest.mark.parametrize("kind", ["external link", "external storage", "virtual dataset"])
def test_hdf5_data_from_other_files_is_refused(tmp_path, outside, kind, run_cli):
    store = make_store(tmp_path / "store", fmt="hdf5")
    bundle, _ = shard_of(store)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["embed"] = np.frombuffer(SECRET[:5 * 16], np.float16).reshape(5, 8)
    with h5py.File(bundle, "a") as f:
        del f["embed"]
        if kind == "external link":
            f["embed"] = h5py.ExternalLink(str(other), "/embed")
        elif kind == "external storage":
            f.create_dataset("embed", shape=(5, 8), dtype=np.float16, external=[(str(outside), 0, 80)])
        else:
            layout = h5py.VirtualLayout(shape=(5, 8), dtype=np.float16)
            layout[:] = h5py.VirtualSource(str(other), "embed", shape=(5, 8))
            f.create_virtual_dataset("embed", layout)
    with deadline(), pytest.raises(StoreError, match="external|virtual|ExternalLink"):
        open_store(store)["fs"].read("a", "embed")
    assert any(bundle.name in p for p in problems_of(store))
    one_line_error(run_cli, "convert", store, tmp_path / "copy")


def test_failures_log_symlinked_outside_is_never_appended(store, outside):
    failures = store / "fs" / "failures.jsonl"
    failures.symlink_to(outside)
    writer = FeatureSetWriter(store, "fs", PROVENANCE)
    with pytest.raises(StoreError, match="symbolic link"):
        writer.record_failure("v", "/x.mp4", "broken")
    assert outside.read_bytes() == SECRET


# ---- 2. bounded cost ---------------------------------------------------------------------------------------------

def _run_limited(code: str, address_space_mb: int = 3072, timeout: int = 60) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter whose address space is capped (RLIMIT_AS), with a timeout."""
    prelude = (f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({address_space_mb} << 20, "
               f"{address_space_mb} << 20))\n")
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def refused_within(setup: str, call: str, error: str, address_space_mb: int = 3072) -> str:
    """The standard output of `call` (after `setup`, both source lines) run under `_run_limited`, which must
    exit cleanly with `call` refused by raising `error` (imported from freezeframe.errors)."""
    result = _run_limited(f"""
{textwrap.dedent(setup)}
from freezeframe.errors import {error}
try:
    {call}
except {error} as exc:
    print("refused:", exc)
""", address_space_mb=address_space_mb)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stdout, result.stdout
    return result.stdout


def test_tiny_metadata_declaring_huge_arrays_allocates_nothing(store, tmp_path):
    bundle, _ = shard_of(store)
    edit_json(bundle / "embed" / "zarr.json", lambda meta: meta.update(shape=[32, 2 ** 26]))
    small = tmp_path / "eight.csv"
    small.write_bytes(b"a,b\n1,2\n")
    result = _run_limited(f"""
        from pathlib import Path
        from freezeframe.errors import StoreError
        from freezeframe.store import open_store
        from freezeframe.store.tools.verify import verify_store
        from freezeframe.limits import read_limited
        assert read_limited(Path({str(small)!r}), 2048 << 20, "a list") == b"a,b\\n1,2\\n"
        try:
            open_store({str(store)!r})["fs"].read("a", "embed")
        except StoreError as exc:
            print("refused:", exc)
        print("problems:", verify_store({str(store)!r}).problems)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused:" in result.stdout and "commit marker says" in result.stdout
    assert "problems: [" in result.stdout and bundle.name.split(".")[0] in result.stdout


def test_marker_and_hdf5_declaring_terabytes_are_a_quick_problem(tmp_path):
    store = make_store(tmp_path / "store", fmt="hdf5")
    bundle, marker = shard_of(store)
    rows = 2 ** 36
    with h5py.File(bundle, "a") as f:
        del f["embed"]
        f.create_dataset("embed", shape=(rows, 8), maxshape=(None, 8), chunks=(4096, 8), dtype=np.float16)

    def declare(m):
        m["num_rows"] = rows
        m["arrays"]["embed"]["rows"] = rows
        m["videos"][-1]["n_rows"] = rows - 3
    edit_json(marker, declare)
    drop_index(store)  # readers take the (hostile) marker itself
    started = time.monotonic()
    problems = problems_of(store)
    assert time.monotonic() - started < 10
    assert any("declares" in p and "on disk" in p for p in problems)
    with deadline(), pytest.raises(FreezeframeError, match="cap"):
        open_store(store)["fs"].read("b", "embed")


def test_fifo_chunk_never_hangs(store):
    bundle, _ = shard_of(store)
    chunk = bundle / "embed" / "c" / "0" / "0"
    chunk.unlink()
    os.mkfifo(chunk)
    with deadline(5), pytest.raises(StoreError, match="FIFO|not a regular file"):
        open_store(store)["fs"].read("a", "embed")
    with deadline(5), pytest.raises(StoreError):
        FeatureDataset(store, "fs", ["a"], ["embed"], FrameSelection("all"))[0]
    assert any("FIFO" in p for p in problems_of(store))


def test_deeply_nested_and_malformed_json_are_one_line(store, run_cli):
    _, marker = shard_of(store)
    drop_index(store)
    marker.write_text("[" * 100_000 + "]" * 100_000)
    assert marker.name in one_line_error(run_cli, "inspect", store)
    marker.write_bytes(b'{"shard_id": "\xff\xfe"}')
    assert "not UTF-8" in one_line_error(run_cli, "inspect", store)
    marker.write_text(json.dumps({"format": "zarr", "file": "x", "num_rows": 1, "arrays": {}}))
    assert marker.name in one_line_error(run_cli, "inspect", store)
    assert problems_of(store)  # verify reports it, never crashes on it
    (store / "freezeframe.json").write_text("[1, 2]")
    assert "freezeframe.json" in one_line_error(run_cli, "verify", store)


# ---- 3. verify covers what readers are served ---------------------------------------------------------------------

def test_index_redirects_are_verify_problems_and_shard_names_are_not_trusted(store, tmp_path):
    bundle, _ = shard_of(store)
    other = bundle.with_name("9999999999999-000000000000.zarr")
    make_store(tmp_path / "other")
    os.rename(shard_of(tmp_path / "other")[0], other)  # an unmarked shard
    (segment_path,) = (store / "fs" / INDEX_DIR).glob(f"*{SEGMENT_SUFFIX}")
    segment = Segment.open(segment_path)
    original = {name: np.array(column) for name, column in segment.columns.items()}  # (the map sees rewrites)

    def rewrite(**columns):
        edited = {**original, **columns}
        segment_path.write_bytes(Segment(edited, segment.layouts, segment.array_sets, segment.replaces,
                                         segment_path).to_bytes())
    name = other.name[:-len(".zarr")].encode()
    rewrite(shard_offsets=np.array([0, len(name)]), shard_bytes=np.frombuffer(name, np.uint8))
    assert np.array_equal(open_store(store)["fs"].read("a", "embed"), EMBED["a"])  # the marked shard, not `other`
    assert verify_store(store).ok and any(INDEX_DIR in w for w in verify_store(store).warnings)
    rewrite(row_start=np.array([0, 0]))  # b pointed at a's rows
    assert any(INDEX_DIR in p and "disagrees" in p for p in problems_of(store))


def test_provenance_and_frozen_edits_are_verify_problems(store):
    edit_json(store / "fs" / "provenance.json", lambda p: p["backbone"].update(pretrained="openai"))
    assert any("provenance.json" in p for p in problems_of(store))
    edit_json(store / "fs" / "provenance.json", lambda p: p["backbone"].update(pretrained="none"))
    assert verify_store(store).ok
    chunk = store / "fs" / "frozen.zarr" / "block0" / "q_weight" / "c" / "0" / "0"
    chunk.write_bytes(np.zeros(16, np.float32).tobytes())
    assert any("frozen" in p for p in problems_of(store))


def test_stores_without_hashes_still_read_and_verify_with_warnings(store):
    _, marker = shard_of(store)
    edit_json(marker, lambda m: (m.pop("provenance_sha256"), m.pop("frozen_sha256")))
    drop_index(store)
    assert np.array_equal(open_store(store)["fs"].read("b", "embed"), EMBED["b"])
    report = verify_store(store)
    assert report.ok
    assert any("provenance hash" in w for w in report.warnings) and any("frozen" in w for w in report.warnings)


def test_memmap_export_is_verified_and_never_serves_outside_files(store, outside):
    fs = open_store(store)["fs"]
    index = export_memmap(fs)
    assert all("sha256" in meta for meta in index["arrays"].values())
    assert verify_store(store).ok
    directory = store / "fs" / MEMMAP_DIR
    npy = directory / index["arrays"]["embed"]["file"]
    data = np.load(npy, mmap_mode="r+")
    data[0, 0] = 99
    data.flush()
    del data
    assert any("checksum mismatch" in p for p in problems_of(store))
    host = outside.with_name("host.npy")
    np.save(host, np.full((5, 8), 3, np.float16))
    edit_json(directory / MEMMAP_INDEX, lambda ix: ix["arrays"]["embed"].update(file=str(host)))
    assert open_memmap_export(open_store(store)["fs"], ["embed"]) is None  # readers fall back to the shards
    ds = FeatureDataset(store, "fs", ["a", "b"], ["embed"], FrameSelection("all"))
    assert not ds.uses_memmap and np.array_equal(ds[1]["inputs"]["embed"].numpy(), EMBED["b"])
    assert any(MEMMAP_INDEX in p for p in problems_of(store))
    edit_json(directory / MEMMAP_INDEX, lambda ix: ix["arrays"]["embed"].update(file=npy.name))
    np.save(directory / index["row_offsets"], np.array([0, 1, 5]))  # a's rows cut short, b's grown
    assert any("rows disagree" in p for p in problems_of(store))


# ---- 4. nothing from a store reaches the network ------------------------------------------------------------------

def test_zeroshot_refuses_hub_models_named_by_a_store(tmp_path):
    from freezeframe.train.zeroshot import run_zeroshot

    store = tmp_path / "store"
    writer = FeatureSetWriter(store, "fs", {"backbone": {"model": "hf-hub:attacker/evil-clip",
                                                         "pretrained": "none"}})
    shard = writer.new_shard()
    shard.append("a", {"embed": np.ones((2, 8), np.float16)})
    shard.end_video("a")
    shard.commit()
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label\na,cat\n")
    with pytest.raises(InputError, match="hf-hub:attacker/evil-clip.*--model"):
        run_zeroshot(store, "fs", ["cat"], labels)


# ---- 5. claims ---------------------------------------------------------------------------------------------------

def test_claims_with_heartbeats_from_the_future_do_not_block(store):
    from freezeframe.store.claims import ClaimOwner, Claims

    other = Claims(store / "fs", ClaimOwner("elsewhere", 4242, "elsewhere.4242.cafe"))
    other.register()
    assert other.claim(["v1"]) == ["v1"]
    year_2100 = 4102444800
    os.utime(other.root / "owners" / "elsewhere.4242.cafe.json", (year_2100, year_2100))
    mine = Claims(store / "fs", ClaimOwner.current())
    mine.register()
    assert "elsewhere pid 4242" in mine.describe_holders(["v1"])
    takeable, held = mine.sort_out(["v1"])
    assert takeable == ["v1"] and held == []


# ---- 6. one-line errors for user files; temporaries cleaned ------------------------------------------------------

@pytest.mark.parametrize("content, match", [
    ("video_id,label\na,caté\n".encode("latin-1"), ":2: not UTF-8"),
    ("video_id,label\na,cat\n".encode("utf-16"), "UTF-16"),
    (b"video_id,label\na,cat\nb\n", ":3: a row needs"),
    (b"video_id,label\na," + b"x" * (200 * 1024) + b"\n", ":2: malformed CSV"),
])
def test_malformed_label_files_are_one_line(tmp_path, content, match):
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as caught:
        read_labels(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_malformed_list_and_caption_files_are_one_line(tmp_path):
    from freezeframe.extract.sources import collect_sources
    from freezeframe.text.captions import read_captions

    listing = tmp_path / "list.csv"
    listing.write_bytes("video_id,path\nä,x.mp4\n".encode("latin-1"))
    with pytest.raises(InputError, match="list.csv:2: not UTF-8"):
        collect_sources([listing])
    listing.write_bytes(b"video_id,path\nv1\n")
    with pytest.raises(InputError, match="list.csv:2: the row has no path"):
        collect_sources([listing])
    captions = tmp_path / "caps.csv"
    captions.write_bytes("video_id,text\nv,".encode() + "a".encode("utf-16"))
    with pytest.raises(InputError, match="caps.csv:2: not UTF-8"):
        read_captions(captions)
    captions.write_bytes(b'video_id,text\nv,"' + b"y" * (200 * 1024) + b'"\n')
    with pytest.raises(InputError, match="caps.csv:2: malformed CSV"):
        read_captions(captions)


def test_hostile_run_json_allocates_nothing_and_is_one_line(tmp_path):
    from freezeframe.train.run import load_head

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"head": "probe", "head_config": {}, "store": "s", "feature_set": "f",
                                              "classes": [], "train_frames": "", "eval_frames": "", "x": 1}))
    with pytest.raises(InputError, match="unknown key"):
        load_head(run)
    (run / "run.json").write_text("[1]")
    with pytest.raises(InputError, match="expected a JSON object"):
        load_head(run)


def test_hostile_run_json_width_is_checked_against_the_checkpoint_first(tmp_path):
    import torch

    from dataclasses import asdict

    from freezeframe.heads.registry import build_head, config_from_dict
    from freezeframe.train.checkpoints import BEST, save_weights
    from freezeframe.train.run import RunInfo, load_head

    kind = "probe"
    config = config_from_dict(kind, {"num_classes": 2, "input_dim": 8})
    head = build_head(kind, config)
    run = tmp_path / "run"
    RunInfo(kind, asdict(config), "s", "f", ["a", "b"], "all", "all").save(run)
    save_weights(head, run / BEST, {})
    assert isinstance(load_head(run)[0], torch.nn.Module)
    edit_json(run / "run.json", lambda info: info["head_config"].update(input_dim=65536, num_classes=65536))
    out = refused_within("from freezeframe.train.run import load_head", f"load_head({str(run)!r})", "InputError",
                         address_space_mb=4096)
    assert "does not match its checkpoint" in out


def test_export_memmap_on_a_full_disk_is_one_line_and_leaves_nothing(store):
    out = refused_within("""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))  # every write past 100 bytes fails: a full disk
        from freezeframe.store import open_store
        from freezeframe.store.tools.memmap import export_memmap
    """, f"export_memmap(open_store({str(store)!r})['fs'])", "StoreError")
    assert "nothing was changed" in out
    assert not list((store / "fs").glob(".tmp-*")) and not (store / "fs" / MEMMAP_DIR).exists()


def test_export_memmap_removes_temporaries_of_dead_exporters(store):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = store / "fs" / f".tmp-{socket.gethostname()}.{dead.stdout.strip()}-memmap-abcdef"
    left.mkdir()
    (left / "000-embed.abcdef.npy").write_bytes(b"partial")
    export_memmap(open_store(store)["fs"])
    assert not left.exists() and (store / "fs" / MEMMAP_DIR / MEMMAP_INDEX).is_file()
