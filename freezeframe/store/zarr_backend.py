"""Zarr backend: a shard (or the frozen-weights bundle) is one Zarr group of row-major arrays."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from freezeframe.errors import StoreError, library_errors
from freezeframe.store.chunks import HEADER_BYTES, ChunkLayoutError, check_chunk_grid, check_compressed_chunk
from freezeframe.store.confine import READ_FLAGS, UnsafeStoreError, check_tree, read_regular
from freezeframe.store.location import is_remote, remove_tree
from freezeframe.store.mapped import ChunkedRows, into, mapped_file, mapped_in_a_row, span_take

METADATA_BYTES = 1024 * 1024  # an array's zarr.json is a few hundred bytes

EXTENSION = ".zarr"
CHUNK_BYTES = 2 * 1024 * 1024  # ~2 MiB chunks along the frame axis: small random reads stay cheap
PAGE_BYTES = (16384, 4096)  # chunks of several pages are made of whole pages of either size, where rows allow
ZSTD_LEVEL = 3
# with byte shuffle (Zarr 3's BloscCodec defaults): on float16 features it compresses best of the choices and
# decompresses fastest, at a slower write; blosc-lz4 (the Zarr v2 default) gains nothing on float16 features
BLOSC = {"cname": "zstd", "clevel": 5}


def compressors(compression: str) -> tuple | None:
    """The Zarr 3 codecs of a store compression name (the same settings as the HDF5 backend's filters)."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if compression == "none":
        return None
    if compression == "zstd":
        return (ZstdCodec(level=ZSTD_LEVEL),)
    if compression == "blosc":
        return (BloscCodec(shuffle="shuffle", **BLOSC),)
    raise StoreError(f"unknown compression {compression!r}; choose none, zstd or blosc.")


def check_compression(compression: str) -> None:
    compressors(compression)


def _zarr_store(path, read_only: bool = False):
    """What zarr.open_group takes: the local path as a string, or an FsspecStore for a remote location."""
    if not is_remote(path):
        return str(path)
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(str(path), storage_options=dict(path.storage_options), read_only=read_only)


def rows_per_chunk(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return max(1, CHUNK_BYTES // row_bytes)


# per-row arrays every video shard holds: xarray reads them as coordinates of the others (CF `coordinates`)
ROW_COORDINATES = ("timestamps", "frame_indices")
ROW_COORDINATE_AXES = ("frame", "window")


def chunk_rows(row_shape: tuple[int, ...], dtype: np.dtype, first_rows: int) -> int:
    """Rows per chunk for an array whose first block has `first_rows` rows (a whole small shard, or a big flush).

    About CHUNK_BYTES, and the first block split into equal chunks: a stored chunk is always whole, so a shard
    of 1.1 chunks would otherwise take 2 chunks on disk (padding small shards by up to half their size). Chunks
    are whole pages (16 KiB, else 4 KiB, where that keeps them under 2 x CHUNK_BYTES), so that a reader maps them
    back to back as one array (`store.mapped`); that pads a shard by under a chunk, which tiny shards are spared.
    """
    limit = rows_per_chunk(row_shape, dtype)
    chunks = max(1, -(-first_rows // limit))
    rows = max(1, -(-first_rows // chunks))
    row_bytes = max(1, math.prod(row_shape) * np.dtype(dtype).itemsize)
    for page in PAGE_BYTES:
        step = page // math.gcd(row_bytes, page)  # rows in the smallest chunk of whole pages
        if step <= 2 * limit and (first_rows > limit or 8 * step <= first_rows):  # (not a tiny shard's one chunk)
            return -(-rows // step) * step
    return rows


def chunk_path_pattern(directory: Path, dims: int) -> str:
    """The path of first-axis chunk k of a local array as pattern.format(k): c/k/0/.../0 (a string, as pathlib
    costs ~15 us a chunk)."""
    folder = str(directory).replace("{", "{{").replace("}", "}}")  # (format fields only at k)
    return os.path.join(folder, "c", "{}") + "/0" * (dims - 1)


class ZarrBundleWriter:
    """Appends rows to named arrays of a new Zarr group; arrays are created on first append.

    Uncompressed arrays of a local bundle are written straight to their chunk files (`_RawChunkWriter`, the
    layout `_RawChunks` reads); through zarr, creating a shard's few arrays costs ~5 ms, most of a commit.
    """

    def __init__(self, path: Path, compression: str = "none", row_axis: str | None = "frame") -> None:
        self.path = path
        self.row_axis = row_axis
        self._compressors = compressors(compression)
        self._raw = compression == "none" and not is_remote(path)
        self._zarr_group = None
        if self._raw:
            remove_tree(path)
            path.mkdir()
            _write_group(path, {})
        else:
            self._zarr_group = zarr.open_group(_zarr_store(path), mode="w")
        self._arrays: dict[str, Any] = {}
        # whether every byte appended is stored as given: zarr itself leaves out chunks equal to the fill value
        # (-0.0 among them, for 0.0), so a shard with zarr-written arrays hashes what was stored by reading it back
        self.exact = True

    @property
    def _group(self):
        if self._zarr_group is None:
            self._zarr_group = zarr.open_group(str(self.path), mode="a")
        return self._zarr_group

    def append(self, name: str, block: np.ndarray) -> None:
        array = self._arrays.get(name)
        if array is None:
            from freezeframe.store.schema import describe_array

            row_shape = tuple(block.shape[1:])
            dims, description = describe_array(name, block.shape, self.row_axis)
            attributes = {"description": description} if description else {}
            if self.row_axis in ROW_COORDINATE_AXES and name not in ROW_COORDINATES:
                attributes["coordinates"] = " ".join(ROW_COORDINATES)  # xarray makes them this array's coordinates
            # The first block is either a whole (small) shard or a large flush: never pad chunks past it.
            chunks = (chunk_rows(row_shape, block.dtype, len(block)), *row_shape)
            if self._raw and block.dtype.kind in "biufc" and not block.dtype.fields:
                array = self._arrays[name] = _RawChunkWriter(self.path, name, block.dtype, chunks, dims, attributes)
                array.append(block)
                return
            self.exact = False
            array = self._group.create_array(
                name,
                data=block,  # created holding the first block: one metadata write, not a create and a resize
                chunks=chunks,
                compressors=self._compressors,
                fill_value=0,
                dimension_names=dims,
                attributes=attributes or None,
            )
            self._arrays[name] = array
            return
        array.append(block, axis=0)

    def truncate(self, rows: int) -> None:
        for array in self._arrays.values():
            if array.shape[0] > rows:
                array.resize((rows, *array.shape[1:]))

    def set_attrs(self, attrs: dict) -> None:
        """Replace the group's attributes: its zarr.json written directly (through zarr it costs ~5 ms a shard)."""
        _write_group(self.path, attrs)

    def close(self) -> None:
        for array in self._arrays.values():
            if isinstance(array, _RawChunkWriter):
                array.close()
        self._arrays.clear()


def _write_group(path: Path, attrs: dict) -> None:
    from freezeframe.store.files import dumps
    from freezeframe.store.schema import group_metadata

    (path / "zarr.json").write_bytes(dumps(group_metadata(attrs), compact=True))


class _RawChunkWriter:
    """An uncompressed little-endian Zarr 3 array written chunk by chunk to its files (what `_RawChunks` reads).

    Rows gather in one chunk-sized buffer; each full chunk is written to `c/<k>/0/...`, and `close` writes the
    last one (padded with the fill value, as zarr stores every chunk whole) and the array's zarr.json.
    """

    def __init__(self, bundle: Path, name: str, dtype: np.dtype, chunks: tuple[int, ...], dims: tuple[str, ...],
                 attributes: dict) -> None:
        self.directory = bundle / name
        for depth in range(1, len(name.split("/"))):  # the groups a nested name (tokens/11) passes through
            parent = bundle.joinpath(*name.split("/")[:depth])
            if not (parent / "zarr.json").exists():
                parent.mkdir(exist_ok=True)
                _write_group(parent, {})
        self.directory.mkdir()
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.chunks, self.dims, self.attributes = chunks, dims, attributes
        self.buffer = np.zeros(chunks, self.dtype)
        self.written = 0  # chunks written
        self.tail = 0  # rows in the buffer
        self._chunk_path = chunk_path_pattern(self.directory, len(chunks))

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.written * self.chunks[0] + self.tail, *self.chunks[1:])

    def append(self, block: np.ndarray, axis: int = 0) -> None:
        done = 0
        while done < len(block):
            take = min(self.chunks[0] - self.tail, len(block) - done)
            self.buffer[self.tail:self.tail + take] = block[done:done + take]
            self.tail += take
            done += take
            if self.tail == self.chunks[0]:
                self._write_chunk()

    def _write_chunk(self) -> None:
        path = self._chunk_path.format(self.written)
        if self.buffer.view(np.uint8).any():  # a chunk of zero bytes is left out, as zarr does: read as the fill
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(self.buffer.data)
        self.written += 1
        self.tail = 0

    def resize(self, shape: tuple[int, ...]) -> None:
        """Keep the first shape[0] rows (only ever fewer)."""
        rows = shape[0]
        chunk, self.tail = divmod(rows, self.chunks[0])
        if chunk < self.written:  # the cut falls in a chunk already written: take it back into the buffer
            path = self._chunk_path.format(chunk)
            self.buffer[:] = np.fromfile(path, self.dtype).reshape(self.chunks) if os.path.exists(path) else 0
            for number in range(chunk, self.written):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._chunk_path.format(number))
            self.written = chunk

    def close(self) -> None:
        shape = self.shape
        if self.tail:
            self.buffer[self.tail:] = 0
            self._write_chunk()
        meta = {"zarr_format": 3, "node_type": "array", "shape": list(shape), "data_type": self.dtype.name,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(self.chunks)}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": _fill_value(self.dtype), "codecs": [{"name": "bytes",
                                                                   "configuration": {"endian": "little"}}],
                "attributes": self.attributes, "dimension_names": list(self.dims), "storage_transformers": []}
        (self.directory / "zarr.json").write_text(json.dumps(meta))


def _fill_value(dtype: np.dtype):
    """Zero in a Zarr 3 JSON fill value of `dtype`."""
    return {"b": False, "f": 0.0, "c": [0.0, 0.0]}.get(dtype.kind, 0)


class _RawChunks:
    """An uncompressed, little-endian Zarr 3 array on local disk, read straight from its chunk files.

    Such chunks hold the array's bytes as they are, so each chunk file is memory-mapped once (`store.mapped`) and
    rows are copied from it into the output: this skips zarr's per-call overhead (about 1 ms) and the per-read
    open/pread, which dominate random whole-video and sparse reads in training. Any other array (compressed,
    big-endian, sharded, remote) is read through zarr.
    """

    def __init__(self, directory: Path, shape: tuple[int, ...], dtype: np.dtype, chunk_rows: int, fill) -> None:
        self.directory, self.shape, self.dtype, self.chunk_rows, self.fill = directory, shape, dtype, chunk_rows, fill
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        # chunk k's file is c/k/0/.../0: built as a string per read (pathlib costs ~15 us a chunk)
        self._chunk_path = chunk_path_pattern(directory, len(shape))
        self._chunk_shape, self._chunk_bytes = (chunk_rows, *shape[1:]), chunk_rows * self.row_bytes
        self._chunks = -(-shape[0] // chunk_rows)
        self.rows = ChunkedRows(shape, dtype, chunk_rows, self._chunk, self._in_a_row)

    @classmethod
    def open(cls, directory: Path) -> "_RawChunks | None":
        try:
            data = read_regular(directory / "zarr.json", METADATA_BYTES)
            if data is None:
                return None
            meta = json.loads(data)
            shape = tuple(meta["shape"])
            chunks = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
            codecs = meta["codecs"]
            plain = (meta.get("zarr_format") == 3 and meta["chunk_grid"]["name"] == "regular"
                     and meta["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
                     and len(codecs) == 1 and codecs[0]["name"] == "bytes"
                     and codecs[0].get("configuration", {}).get("endian", "little") == "little"
                     and not meta.get("storage_transformers") and len(shape) >= 1 and chunks[1:] == shape[1:])
            dtype = np.dtype(meta["data_type"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None
        if not plain or dtype.byteorder == ">" or dtype.hasobject or chunks[0] < 1:
            return None
        return cls(directory, shape, dtype, chunks[0], meta.get("fill_value") or 0)

    def _in_a_row(self) -> np.ndarray | None:
        """Every chunk mapped back to back, where they can be (`store.mapped`)."""
        return mapped_in_a_row(self._chunk_path, self._chunks, self._chunk_bytes, self.dtype,
                               (self._chunks * self.chunk_rows, *self.shape[1:]))

    def _chunk(self, number: int) -> np.ndarray | float | int:
        """Chunk `number` as a read-only (chunk_rows, ...) array mapped from its file; the fill value when it was
        never written (all fill); read with pread, which says what is wrong, when it is not exactly one chunk."""
        path = self._chunk_path.format(number)
        nbytes = self._chunk_bytes
        try:
            data = mapped_file(path, nbytes, self.dtype, self._chunk_shape)
        except FileNotFoundError:  # a chunk that was all fill value is never written
            return self.fill
        if data is not None:
            return data
        data = np.empty(nbytes, np.uint8)
        fd = os.open(path, READ_FLAGS)
        try:
            got = os.preadv(fd, [data], 0)
        finally:
            os.close(fd)
        if got != nbytes:
            raise OSError(f"chunk {path} is truncated: read {got} of {nbytes} bytes")
        return data.view(self.dtype).reshape(self.chunk_rows, *self.shape[1:])

    def read(self, start: int | None, stop: int | None, out: np.ndarray | None = None) -> np.ndarray:
        return self.rows.read(start, stop, out)

    def take(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return self.rows.take(rows, out)


class ZarrBundleReader:
    """Read-only access to a Zarr group written by `ZarrBundleWriter`.

    Plain local arrays are described and read from their own files (`_RawChunks`); zarr opens the group only for
    anything else (compressed or remote arrays, listing, attributes), so a first read of a shard costs ~0.3 ms.
    Each array's chunk grid is checked once, when it is first described, and each compressed chunk's header
    before zarr decompresses it (store/chunks.py).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # one lstat per entry, once per reader: no symlink (to a file or a folder) or FIFO is ever opened
        self.disk_bytes = None if is_remote(path) else check_tree(path)
        self._zarr_group = None
        self._cache: dict[str, Any] = {}
        self._raw: dict[str, _RawChunks | None] = {}
        self._codec: dict[str, str | None] = {}  # compressed array -> "zstd" or "blosc" (None: uncompressed)
        self._headers_checked: set[tuple[str, int]] = set()  # (array, first-axis chunk) whose header was checked

    @property
    def _group(self):
        if self._zarr_group is None:
            with zarr_errors(self.path):
                self._zarr_group = zarr.open_group(_zarr_store(self.path, read_only=True), mode="r")
        return self._zarr_group

    def array_names(self) -> list[str]:
        with zarr_errors(self.path):
            return sorted(name for name, node in self._group.members(max_depth=None) if isinstance(node, zarr.Array))

    def _array(self, name: str):
        array = self._cache.get(name)
        if array is None:
            with zarr_errors(self.path / name):
                array = self._group[name]
                self._codec[name] = _checked_codecs(array.metadata.to_dict(), self.path / name)
                check_chunk_grid(tuple(array.chunks), tuple(array.shape), np.dtype(array.dtype).itemsize,
                                 self.path / name)
            self._cache[name] = array
        return array

    def _raw_array(self, name: str) -> _RawChunks | None:
        if name not in self._raw:
            raw = None if is_remote(self.path) else _RawChunks.open(self.path / name)
            if raw is not None:
                check_chunk_grid((raw.chunk_rows, *raw.shape[1:]), raw.shape, raw.dtype.itemsize, self.path / name)
            self._raw[name] = raw
        return self._raw[name]

    def shape(self, name: str) -> tuple[int, ...]:
        raw = self._raw_array(name)
        return raw.shape if raw is not None else tuple(self._array(name).shape)

    def dtype(self, name: str) -> np.dtype:
        raw = self._raw_array(name)
        return raw.dtype if raw is not None else np.dtype(self._array(name).dtype)

    def read(self, name: str, start: int | None = None, stop: int | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Rows start..stop-1 of array `name`, into `out` where given."""
        raw = self._raw_array(name)
        if raw is not None:
            return raw.read(start, stop, out)
        array = self._array(name)
        if self._codec[name]:
            self._check_headers(name, array, start, stop)
        with zarr_errors(self.path / name):
            return into(out, np.asarray(array[start:stop]))

    def take(self, name: str, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows `rows` (in range) of array `name`, into `out` where given: a mapped array copies only those."""
        raw = self._raw_array(name)
        if raw is not None:
            return raw.take(rows, out)
        return into(out, span_take(lambda lo, hi: self.read(name, lo, hi), rows))

    def _check_headers(self, name: str, array, start: int | None, stop: int | None) -> None:
        """Each compressed chunk a read of rows [start, stop) decompresses must declare at most a chunk's bytes."""
        lo, hi, _ = slice(start, stop).indices(array.shape[0])
        rows = array.chunks[0]
        chunk_bytes = math.prod(array.chunks) * np.dtype(array.dtype).itemsize
        across = [range(-(-d // c)) for d, c in zip(array.shape[1:], array.chunks[1:])]
        for number in range(lo // rows, -(-hi // rows)) if hi > lo else ():
            if (name, number) in self._headers_checked:
                continue
            for rest in itertools.product(*across):
                key = "/".join(str(k) for k in ("c", number, *rest))
                header = _chunk_header(self.path / name, key)
                if header is not None:
                    check_compressed_chunk(self._codec[name], header, chunk_bytes, self.path / name / key)
            self._headers_checked.add((name, number))

    def attrs(self) -> dict:
        with zarr_errors(self.path):
            return dict(self._group.attrs)

    def close(self) -> None:
        self._cache.clear()
        self._raw.clear()


PLAIN_CODECS = {"bytes", "zstd", "blosc"}  # what freezeframe writes: bytes, then at most one compressor


def _checked_codecs(meta: dict, where: object) -> str | None:
    """The compressor of an array freezeframe could have written ("zstd", "blosc" or None); any other codec chain
    or chunk key layout is refused, so no chunk is decoded that could not first have its size checked."""
    names = [codec.get("name") if isinstance(codec, dict) else None for codec in meta.get("codecs", ())]
    key_encoding = meta.get("chunk_key_encoding", {})
    if not names or names[0] != "bytes" or len(names) > 2 or not set(names) <= PLAIN_CODECS \
            or meta.get("chunk_grid", {}).get("name") != "regular" or key_encoding.get("name") != "default" \
            or key_encoding.get("configuration", {}).get("separator", "/") != "/":
        raise ChunkLayoutError(f"{where}: codecs {names} or its chunk layout are not what freezeframe writes "
                               "(bytes, then zstd or blosc, in a regular grid); it is not read.")
    return names[1] if len(names) == 2 else None


def _chunk_header(array_dir, key: str) -> bytes | None:
    """The first bytes of a chunk file (None when the chunk was never written: it reads as the fill value)."""
    if is_remote(array_dir):
        try:
            return array_dir.fs.cat_file(f"{array_dir.path}/{key}", start=0, end=HEADER_BYTES)
        except FileNotFoundError:
            return None
    try:
        fd = os.open(os.path.join(str(array_dir), key), READ_FLAGS)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeStoreError(f"chunk {array_dir}/{key} is not a regular file; it is not read.")
        return os.pread(fd, HEADER_BYTES, 0)
    finally:
        os.close(fd)


def zarr_errors(where: object):
    """Whatever zarr raises on a malformed array (bad fill value, codec and dtype at odds, an unknown codec) as one
    StoreError naming the file; freezeframe's own errors, and KeyError for a missing array, pass as they are."""
    return library_errors(where)
