"""Uncompressed Zarr arrays whose chunks are whole pages are read as one memory map: every chunk file mapped back
to back in one address range, so that rows crossing chunks are one copy. Expected values are read with zarr itself;
an array with a chunk file absent (all zeros, or not yet fetched from a published store) or not exactly one chunk
is read chunk by chunk."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest
import zarr

from freezeframe.store import mapped, zarr_backend
from freezeframe.store.zarr_backend import ZarrBundleReader, ZarrBundleWriter, chunk_rows

ROW = (4, 256)  # float32: 4096 bytes a row
NEEDS_POSIX_MAPS = pytest.mark.skipif(mapped._libc_mmap() is None or mmap.PAGESIZE > 16384,
                                      reason="maps placed at an address need POSIX mmap and pages up to 16 KiB")


@pytest.fixture
def fresh_tables(monkeypatch):
    monkeypatch.setattr(mapped, "_in_a_row", type(mapped._in_a_row)())
    monkeypatch.setattr(mapped, "_not_in_a_row", set())
    monkeypatch.setattr(mapped, "_chunks_in_a_row", 0)
    monkeypatch.setattr(mapped, "_maps", type(mapped._maps)())


def write_bundle(path: Path, data: np.ndarray, monkeypatch) -> Path:
    monkeypatch.setattr(zarr_backend, "CHUNK_BYTES", 8 * 4096)  # 8 rows a chunk: reads cross chunks
    writer = ZarrBundleWriter(path)
    writer.append("x", data[:40])
    writer.append("x", data[40:])
    writer.close()
    return path


def test_chunk_rows_are_whole_pages_where_rows_allow():
    float16_tokens = (50, 768)  # ViT-B/32: 76,800 bytes a row
    assert chunk_rows(float16_tokens, np.float16, 512) * 76_800 % 16384 == 0
    assert chunk_rows((197, 768), np.float16, 300) * 302_592 % 4096 == 0  # ViT-B/16: 4 KiB pages only
    assert chunk_rows((257, 1024), np.float16, 300) * 526_336 % 4096 == 0  # ViT-L/14
    assert chunk_rows(float16_tokens, np.float16, 20) == 20  # a tiny shard's one chunk is not padded
    assert chunk_rows((7,), np.uint8, 1000) == 1000  # rows too odd for whole pages under 2 x CHUNK_BYTES
    for shape, dtype, first in [(float16_tokens, np.float16, 512), ((197, 768), np.float16, 300), ((512,), np.float16, 210)]:
        rows = chunk_rows(shape, dtype, first)
        assert rows * np.prod(shape) * np.dtype(dtype).itemsize <= 2 * zarr_backend.CHUNK_BYTES


@NEEDS_POSIX_MAPS
def test_an_array_of_page_chunks_reads_as_one_map(tmp_path, monkeypatch, fresh_tables):
    data = np.random.default_rng(0).standard_normal((61, *ROW)).astype(np.float32)
    bundle = write_bundle(tmp_path / "b.zarr", data, monkeypatch)
    truth = zarr.open_group(str(bundle), mode="r")["x"][:]
    np.testing.assert_array_equal(truth, data)
    reader = ZarrBundleReader(bundle)
    np.testing.assert_array_equal(reader.read("x"), data)
    rows = np.array([60, 0, 7, 8, 9, 15, 16, 33, 33, 59], dtype=np.int64)  # across chunks, repeats, any order
    out = np.full((len(rows), *ROW), 7, np.float32)
    assert reader.take("x", rows, out) is out
    np.testing.assert_array_equal(out, data[rows])
    np.testing.assert_array_equal(reader.read("x", 5, 30), data[5:30])
    (view, chunks), = mapped._in_a_row.values()  # read through one view of all 8 chunks, no map per chunk
    assert chunks == 8 and view.shape == (64, *ROW) and not view.flags.writeable and not mapped._maps
    np.testing.assert_array_equal(view[:61], data)
    np.testing.assert_array_equal(view[61:], 0)  # the last chunk's padding


@NEEDS_POSIX_MAPS
def test_an_absent_chunk_is_never_mapped_as_zeros(tmp_path, monkeypatch, fresh_tables):
    data = np.random.default_rng(1).standard_normal((61, *ROW)).astype(np.float32)
    data[8:16] = 0  # one whole chunk of zeros: never written, read as the fill value
    bundle = write_bundle(tmp_path / "b.zarr", data, monkeypatch)
    assert not (bundle / "x" / "c" / "1").exists()
    reader = ZarrBundleReader(bundle)
    np.testing.assert_array_equal(reader.read("x"), data)
    assert not mapped._in_a_row and len(mapped._not_in_a_row) == 1 and mapped._maps
    zeros = np.random.default_rng(2).standard_normal((8, *ROW)).astype(np.float32)
    (bundle / "x" / "c" / "1" / "0").mkdir(parents=True)  # the chunk arrives (a published store's cache)
    (bundle / "x" / "c" / "1" / "0" / "0").write_bytes(zeros.tobytes())
    np.testing.assert_array_equal(reader.read("x", 8, 16), zeros)  # read from the file, not from a zero page


@NEEDS_POSIX_MAPS
def test_a_chunk_that_is_not_one_chunk_is_read_chunk_by_chunk(tmp_path, monkeypatch, fresh_tables):
    data = np.random.default_rng(1).standard_normal((61, *ROW)).astype(np.float32)
    bundle = write_bundle(tmp_path / "b.zarr", data, monkeypatch)
    chunk = bundle / "x" / "c" / "3" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:100])  # truncated
    reader = ZarrBundleReader(bundle)
    ends = np.array([0, 60], dtype=np.int64)
    np.testing.assert_array_equal(reader.take("x", ends), data[ends])  # the damaged chunk is not needed
    assert not mapped._in_a_row and len(mapped._not_in_a_row) == 1
    with pytest.raises(OSError, match="truncated"):
        reader.read("x")


@NEEDS_POSIX_MAPS
def test_arrays_mapped_in_a_row_are_bounded(tmp_path, monkeypatch, fresh_tables):
    monkeypatch.setattr(mapped, "CHUNKS_IN_A_ROW", 12)  # room for one array of 8 chunks
    data = np.arange(61 * 4 * 256, dtype=np.float32).reshape(61, *ROW)
    readers = [ZarrBundleReader(write_bundle(tmp_path / f"{i}.zarr", data + i, monkeypatch)) for i in range(3)]
    for _ in range(2):
        for i, reader in enumerate(readers):
            np.testing.assert_array_equal(reader.read("x", 10, 20), data[10:20] + i)
            assert len(mapped._in_a_row) == 1
    assert len(mapped._not_in_a_row) == 2  # the two dropped are read chunk by chunk, not mapped whole again
