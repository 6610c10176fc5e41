"""HDF5 backend: a shard (or the frozen-weights bundle) is one `.h5` file of row-major datasets.

Same layout as the Zarr backend: resizable datasets chunked along the frame axis (~2 MiB chunks),
nested names such as `tokens/11` as HDF5 groups, the bundle's attrs on the root group.

Files are opened without HDF5's file locking. A shard file is written by one process under a
temporary name nobody else opens, and after its rename it is never opened for writing again, so
there is nothing for a lock to protect: readers of committed shards need no SWMR either (SWMR is
for reading a file *while* it is written, which the store never does). Locks only get in the way:
they fail on filesystems without working `flock` (NFS, Lustre, some FUSE mounts), and a reader that
holds a file open would block any other process that opens it with write intent.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from freezeframe.errors import StoreError, library_errors
from freezeframe.store.chunks import HEADER_BYTES, ChunkLayoutError, check_chunk_grid, check_compressed_chunk
from freezeframe.store.confine import READ_FLAGS, UnsafeStoreError, check_regular
from freezeframe.store.mapped import ChunkedRows, into, mapped_file, span_take
from freezeframe.store.zarr_backend import BLOSC, ZSTD_LEVEL, chunk_rows

EXTENSION = ".h5"
JSON_ATTRS = "__json_attrs__"  # root attribute naming the attrs stored as JSON strings

_plugins_checked = False


def _load_plugins(required: bool) -> None:
    """Register hdf5plugin's filters (zstd, blosc) with HDF5; needed to write and to read compressed shards."""
    global _plugins_checked
    try:
        import hdf5plugin  # noqa: F401 - importing registers the filters
    except ImportError:
        if required:
            raise StoreError("HDF5 compression needs the hdf5plugin package: pip install hdf5plugin.") from None
    _plugins_checked = True


def check_compression(compression: str) -> None:
    """Fail early (before any work) when a compression cannot be written."""
    if compression != "none":
        _load_plugins(required=True)


def _filter_options(compression: str) -> dict:
    if compression == "none":
        return {}
    _load_plugins(required=True)
    import hdf5plugin

    if compression == "zstd":
        return dict(hdf5plugin.Zstd(clevel=ZSTD_LEVEL))
    if compression == "blosc":
        return dict(hdf5plugin.Blosc(shuffle=hdf5plugin.Blosc.SHUFFLE, **BLOSC))
    raise StoreError(f"unknown compression {compression!r}; choose none, zstd or blosc.")


def _open(path: Path, mode: str):
    import h5py

    from freezeframe.store.location import require_local

    require_local(path, "the HDF5 format (h5py reads and writes local files; use --format zarr for URLs)")

    if mode == "r":
        # No chunk cache for readers (HDF5 2.0 keeps 8 MiB per open dataset): a feature set keeps a reader
        # per shard it touched, so caches would grow with the store; random per-video reads rarely hit them.
        return h5py.File(path, "r", locking=False, rdcc_nbytes=0)
    # HDF5 1.10 object formats: a third of the default metadata per dataset (extensible-array chunk
    # indexes instead of v1 B-trees); readable by any HDF5 >= 1.10
    return h5py.File(path, mode, locking=False, libver=("v110", "v110"))


class Hdf5BundleWriter:
    """Appends rows to named datasets of a new HDF5 file; datasets are created on first append."""

    exact = True  # stores every byte appended (so a shard hashes its arrays as it writes them)

    def __init__(self, path: Path, compression: str = "none", row_axis: str | None = "frame") -> None:
        self.path = path
        self.compression = compression
        self.row_axis = row_axis
        self._file = _open(self.path, "w")
        self._arrays: dict[str, Any] = {}

    def append(self, name: str, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block)
        dataset = self._arrays.get(name)
        if dataset is None:
            row_shape = tuple(block.shape[1:])
            # The first block is either a whole (small) shard or a large flush: never pad chunks past it.
            rows = chunk_rows(row_shape, block.dtype, len(block))
            dataset = self._file.create_dataset(
                name,
                shape=(0, *row_shape),
                maxshape=(None, *row_shape),
                chunks=(rows, *(max(1, d) for d in row_shape)),
                dtype=block.dtype,
                **_filter_options(self.compression),
            )
            self._arrays[name] = dataset
            self._describe(dataset, name, block.shape)
        start = dataset.shape[0]
        dataset.resize(start + len(block), axis=0)
        if len(block):
            dataset[start:] = block

    def _describe(self, dataset, name: str, shape: tuple[int, ...]) -> None:
        """Dimension labels and a description, for h5py users browsing a shard without freezeframe."""
        from freezeframe.store.schema import describe_array

        dims, description = describe_array(name, shape, self.row_axis)
        for axis, label in enumerate(dims):
            dataset.dims[axis].label = label
        if description:
            dataset.attrs["description"] = description

    def truncate(self, rows: int) -> None:
        for dataset in self._arrays.values():
            if dataset.shape[0] > rows:
                dataset.resize(rows, axis=0)

    def set_attrs(self, attrs: dict) -> None:
        encoded = set(json.loads(self._file.attrs.get(JSON_ATTRS, "[]")))
        for key, value in attrs.items():
            if _native(value):
                self._file.attrs[key] = value
                encoded.discard(key)
            else:
                self._file.attrs[key] = json.dumps(value, ensure_ascii=False, sort_keys=True)
                encoded.add(key)
        self._file.attrs[JSON_ATTRS] = json.dumps(sorted(encoded))

    def close(self) -> None:
        self._arrays.clear()
        if self._file is not None:
            self._file.close()  # flushes everything to the OS; the shard writer fsyncs before its rename
            self._file = None


def _native(value: object) -> bool:
    """Values h5py stores and returns unchanged: strings, booleans, int64 integers and floats."""
    if isinstance(value, (bool, float, str)):
        return True
    return isinstance(value, int) and -(2**63) <= value < 2**63


def _mapped_dataset(dataset, path: str, base: int) -> ChunkedRows | None:
    """Rows of an uncompressed little-endian dataset chunked by whole rows, copied from a map of its file (at the
    chunks' byte offsets, each checked to lie inside the file), or None: read it through h5py."""
    shape, dtype, chunks = tuple(dataset.shape), np.dtype(dataset.dtype), dataset.chunks
    if (chunks is None or tuple(chunks[1:]) != shape[1:] or dataset.id.get_create_plist().get_nfilters()
            or dtype.byteorder == ">" or dtype.kind not in "biufc" or dtype.fields is not None):
        return None
    chunk_rows, chunk_bytes = chunks[0], int(np.prod(chunks, dtype=np.int64)) * dtype.itemsize
    file = mapped_file(path)
    if file is None:
        return None
    offsets: dict[int, int] = {}
    for number in range(dataset.id.get_num_chunks()):
        info = dataset.id.get_chunk_info(number)
        start = None if info.byte_offset is None else base + info.byte_offset
        if (start is None or info.size != chunk_bytes or info.chunk_offset[0] % chunk_rows
                or start + chunk_bytes > len(file) or any(info.chunk_offset[1:])):
            return None
        offsets[info.chunk_offset[0] // chunk_rows] = start
    fill = dataset.fillvalue

    def chunk(number: int) -> np.ndarray:
        start = offsets.get(number)
        if start is None:  # never written: all fill value
            return fill
        return mapped_file(path)[start:start + chunk_bytes].view(dtype).reshape(chunk_rows, *shape[1:])
    return ChunkedRows(shape, dtype, chunk_rows, chunk)


def _check_confined(file, path: Path) -> None:
    """Refuse an HDF5 file whose data could come from elsewhere: external or soft links, datasets with
    external raw storage, virtual datasets (all of which a reader would otherwise follow)."""
    import h5py

    problems: list[str] = []

    def visit(name: str, link) -> None:  # each link once; external and soft ones are never followed
        if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
            problems.append(f"{name!r} is a {type(link).__name__}")
            return
        node = file.get(name)
        if isinstance(node, h5py.Dataset):
            if node.is_virtual:
                problems.append(f"{name!r} is a virtual dataset")
            elif node.external:
                problems.append(f"{name!r} keeps its data in external files")

    file.visititems_links(visit)
    if problems:
        raise UnsafeStoreError(f"{path}: {problems[0]}; store files hold their own data, so it is not read.")


FILTER_CODECS = {"32015": "zstd", "32001": "blosc"}  # the HDF5 filters freezeframe writes (hdf5plugin's ids)


def _check_compressed_chunks(path: Path, dataset, where: str) -> None:
    """Every compressed chunk of `dataset` must declare (in its zstd or blosc header) no more bytes than a chunk
    holds, before HDF5 decompresses any (its filters allocate what the header says); other filters are refused.
    One pread of a header per chunk, once per dataset and reader."""
    filters = dict(dataset._filters)
    if not filters:
        return
    unknown = sorted(set(filters) - set(FILTER_CODECS))
    if unknown or len(filters) > 1:
        raise ChunkLayoutError(f"{where}: filters {sorted(filters)} are not what freezeframe writes (zstd or blosc "
                               "alone); it is not read.")
    codec = FILTER_CODECS[next(iter(filters))]
    chunk_bytes = math.prod(dataset.chunks) * dataset.dtype.itemsize
    fd = os.open(path, READ_FLAGS)
    try:
        for number in range(dataset.id.get_num_chunks()):
            info = dataset.id.get_chunk_info(number)
            if not info.filter_mask & 1:  # (a set bit: stored as it was, the filter skipped)
                header = os.pread(fd, min(HEADER_BYTES, info.size), info.byte_offset)
                check_compressed_chunk(codec, header, chunk_bytes, f"{where} chunk at {info.chunk_offset}")
    finally:
        os.close(fd)


class Hdf5BundleReader:
    """Read-only access to a file written by `Hdf5BundleWriter`, opened lazily on first use.

    The open handle belongs to the process that opened it: after a fork (DataLoader workers) or
    unpickling, the file is opened anew, so no two processes ever share an h5py handle.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        if not self.path.is_file() and not self.path.is_symlink():
            raise FileNotFoundError(f"no such shard file: {self.path}")
        check_regular(self.path)  # a symlink or FIFO is refused before HDF5 opens (or waits on) it
        self.disk_bytes = self.path.stat().st_size
        self._checked = False
        self._file = None
        self._pid: int | None = None
        self._cache: dict[str, Any] = {}
        self._raw: dict[str, ChunkedRows | None] = {}

    def _handle(self):
        if self._file is None or self._pid != os.getpid():
            # a handle inherited through fork is only dropped: it is this process's own copy, never shared
            self._file, self._cache = None, {}
            if not _plugins_checked:
                _load_plugins(required=False)
            with library_errors(self.path):  # a 0-byte file, a zip named .h5: h5py's OSError, as one line
                self._file = _open(self.path, "r")
            self._pid = os.getpid()
            if not self._checked:
                try:
                    _check_confined(self._file, self.path)
                except BaseException:
                    self._file.close()
                    self._file = None
                    raise
                self._checked = True
        return self._file

    def __getstate__(self) -> dict:
        return {"path": self.path, "disk_bytes": self.disk_bytes, "_checked": self._checked, "_file": None,
                "_pid": None, "_cache": {}, "_raw": {}}

    def array_names(self) -> list[str]:
        import h5py

        names: list[str] = []
        self._handle().visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
        return sorted(names)

    def _array(self, name: str):
        file = self._handle()
        dataset = self._cache.get(name)
        if dataset is None:
            dataset = file[name]
            where = f"{self.path} dataset {name!r}"
            check_chunk_grid(dataset.chunks, dataset.shape, dataset.dtype.itemsize, where)
            _check_compressed_chunks(self.path, dataset, where)
            self._cache[name] = dataset
        return dataset

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._array(name).shape)

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self._array(name).dtype)

    def _raw_array(self, name: str) -> ChunkedRows | None:
        if name not in self._raw:
            self._raw[name] = _mapped_dataset(self._array(name), str(self.path), self._handle().userblock_size)
        return self._raw[name]

    def read(self, name: str, start: int | None = None, stop: int | None = None,
             out: np.ndarray | None = None) -> np.ndarray:
        """Rows start..stop-1 of dataset `name`, into `out` where given."""
        raw = self._raw_array(name)
        if raw is not None:
            return raw.read(start, stop, out)
        dataset = self._array(name)
        lo, hi, _ = slice(start, stop).indices(dataset.shape[0])
        if hi <= lo:
            return into(out, np.empty((0, *dataset.shape[1:]), dtype=dataset.dtype))
        try:
            return into(out, dataset[lo:hi])
        except OSError as exc:
            if dataset.compression is not None or "filter" in str(exc).lower() or "plugin" in str(exc).lower():
                raise StoreError(f"{self.path}: cannot decompress {name!r} ({exc}); is hdf5plugin installed?") from exc
            raise

    def take(self, name: str, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows `rows` (in range) of dataset `name`, into `out` where given: a mapped dataset copies only those."""
        raw = self._raw_array(name)
        if raw is not None:
            return raw.take(rows, out)
        return into(out, span_take(lambda lo, hi: self.read(name, lo, hi), rows))

    def attrs(self) -> dict:
        file = self._handle()
        encoded = set(json.loads(file.attrs.get(JSON_ATTRS, "[]")))
        out = {}
        for key, value in file.attrs.items():
            if key == JSON_ATTRS:
                continue
            if key in encoded:
                out[key] = json.loads(value)
            else:
                out[key] = value.item() if isinstance(value, np.generic) else value
        return out

    def close(self) -> None:
        self._cache.clear()
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None
