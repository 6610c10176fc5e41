"""Rows of an uncompressed chunked array copied straight from memory maps of its chunks.

A committed shard never changes, so a process maps each chunk (a Zarr chunk file, or an HDF5 chunk's bytes inside
its file) once and copies rows from the page cache: no open/fstat/pread per read, and a sparse selection copies
only the rows it wants, directly into the caller's buffer (a batch tensor). Maps are kept in a bounded table that
drops the oldest first (a hit is one dict lookup, no lock), far below the kernel's limit on maps per process
(vm.max_map_count, 65530 by default).
A file is mapped only when it is a regular file of exactly the expected size; anything else is read the slow way,
which says what is wrong.

Where chunks are a whole number of pages (POSIX), `mapped_in_a_row` maps all of an array's chunk files back to back
into one reserved address range: the array reads as one contiguous memory map, as a raw .npy would, so rows that
cross chunk boundaries cost one copy, not one per chunk.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import stat
import sys
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from freezeframe.errors import OutputBufferError

from freezeframe.store.confine import READ_FLAGS, UnsafeStoreError

MAPS_KEPT = 4096  # memory maps one process keeps open (each costs a kernel map entry, no memory of its own)
CHUNKS_IN_A_ROW = 16384  # chunk maps one process keeps in arrays mapped back to back (an array dropped to make
# room is read chunk by chunk afterwards: mapping a whole array again costs ~11 us a chunk, a read ~60 us)
MAP_FIXED = 0x10  # (the same on Linux and macOS; Python's mmap module does not name it)

_maps: OrderedDict[str, np.ndarray] = OrderedDict()
_in_a_row: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()  # chunk path pattern -> (view, chunks)
_not_in_a_row: set[str] = set()  # patterns found unmappable in a row (read chunk by chunk)
_chunks_in_a_row = 0  # chunk maps held in _in_a_row, all arrays together
_mmap_at = None  # libc's mmap (None: not looked up yet; False: none usable)
_lock = threading.Lock()  # held while the table changes: verify reads in threads


def _new_lock() -> None:
    global _lock
    _lock = threading.Lock()  # a forked child (a DataLoader worker) never inherits a lock held by another thread


os.register_at_fork(after_in_child=_new_lock)


def mapped_file(path: str, nbytes: int | None = None, dtype: np.dtype = np.dtype(np.uint8),
                shape: tuple[int, ...] = (-1,)) -> np.ndarray | None:
    """The bytes of regular file `path` as a read-only array of `dtype` and `shape` (one path is always asked for
    as the same), mapped once per process; None when the file does not hold exactly `nbytes` (any size with None).
    FileNotFoundError when it is absent; never through a symlink or a FIFO."""
    data = _maps.get(path)  # (atomic under the GIL)
    if data is not None:
        return data
    fd = os.open(path, READ_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeStoreError(f"{path} is not a regular file; it is not read.")
        if (nbytes is not None and info.st_size != nbytes) or info.st_size == 0:
            return None
        data = np.frombuffer(mmap.mmap(fd, info.st_size, access=mmap.ACCESS_READ), np.uint8)
        data = data.view(dtype).reshape(shape) if shape != (-1,) or dtype != np.uint8 else data
    finally:
        os.close(fd)
    with _lock:
        _maps[path] = data
        while len(_maps) > MAPS_KEPT:
            _maps.popitem(last=False)  # unmapped once no array still views it
    return data


def _libc_mmap():
    """libc's mmap, which (unlike Python's) places a map at a given address; None off Linux and macOS."""
    global _mmap_at
    if _mmap_at is None:
        _mmap_at = False
        if sys.platform.startswith("linux") or sys.platform == "darwin":
            try:
                function = ctypes.CDLL(None, use_errno=True).mmap
            except (OSError, AttributeError):
                return None
            function.restype = ctypes.c_void_p
            function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                 ctypes.c_int64)
            _mmap_at = function
    return _mmap_at or None


def _map_in_a_row(pattern: str, chunks: int, chunk_bytes: int) -> np.ndarray | None:
    """Chunk files pattern.format(0..chunks-1) mapped back to back as one read-only byte array; None when that
    cannot be done here, or a chunk file is absent (never written, or not yet fetched into a published store's
    cache: it must not be read as zeros)."""
    mmap_at = _libc_mmap()
    if mmap_at is None or chunk_bytes % mmap.PAGESIZE or not 0 < chunks <= CHUNKS_IN_A_ROW:
        return None
    try:  # (a reserved range of address space: no memory)
        region = mmap.mmap(-1, chunks * chunk_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
    except (OSError, ValueError, OverflowError):
        return None
    data = np.frombuffer(region, np.uint8)  # holds the range (every map placed in it) while any array views it
    base = data.ctypes.data
    for number in range(chunks):
        try:
            fd = os.open(pattern.format(number), READ_FLAGS)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size != chunk_bytes:
                return None  # read chunk by chunk, which says what is wrong
            address = base + number * chunk_bytes
            if mmap_at(address, chunk_bytes, mmap.PROT_READ, mmap.MAP_SHARED | MAP_FIXED, fd, 0) != address:
                return None
        finally:
            os.close(fd)
    return data


def mapped_in_a_row(pattern: str, chunks: int, chunk_bytes: int, dtype: np.dtype,
                    shape: tuple[int, ...]) -> np.ndarray | None:
    """An array stored as `chunks` uncompressed chunk files pattern.format(k) of `chunk_bytes` each, as one
    read-only (chunks * rows per chunk, ...) array of `dtype`, mapped once per process; None (read it chunk by
    chunk) where chunks are not whole pages, a file is absent or not exactly one chunk, or the platform cannot."""
    entry = _in_a_row.get(pattern)  # (atomic under the GIL)
    if entry is not None or pattern in _not_in_a_row:
        return entry and entry[0]
    global _chunks_in_a_row
    data = _map_in_a_row(pattern, chunks, chunk_bytes)
    with _lock:
        if data is None:
            _not_in_a_row.add(pattern)
            return None
        data = data.view(dtype).reshape(shape)
        _in_a_row[pattern] = (data, chunks)
        _chunks_in_a_row += chunks  # (a running count: summing the table on each new array costs ~1 ms at 16k)
        while _chunks_in_a_row > CHUNKS_IN_A_ROW and len(_in_a_row) > 1:
            dropped, (_, count) = _in_a_row.popitem(last=False)  # unmapped once no array still views it
            _not_in_a_row.add(dropped)  # from now on chunk by chunk: more arrays than fit are never remapped whole
            _chunks_in_a_row -= count
    return data


def output(rows: int, shape: tuple[int, ...], dtype: np.dtype, out: np.ndarray | None) -> np.ndarray:
    """`out` checked to be a C-contiguous (rows, *shape) `dtype` buffer, or a new one."""
    if out is None:
        return np.empty((rows, *shape), dtype=dtype)
    if out.shape != (rows, *shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise OutputBufferError(f"output buffer is {out.shape} {out.dtype}, not a contiguous {(rows, *shape)} {dtype}")
    return out


def into(out: np.ndarray | None, value: np.ndarray) -> np.ndarray:
    """`value`, copied into `out` when one is given (a reader that cannot read in place)."""
    if out is None:
        return value
    np.copyto(output(len(value), value.shape[1:], value.dtype, out), value)
    return out


def span_take(read_rows: Callable[[int, int], np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Rows `rows` (in range) through `read_rows(lo, hi)`: the one span from the first to the last, indexed."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return read_rows(0, 0)
    lo = int(rows.min())
    return read_rows(lo, int(rows.max()) + 1)[rows - lo]


class ChunkedRows:
    """Reads of an array stored as whole chunks of `chunk_rows` rows; `chunk(k)` gives chunk k as a read-only
    (chunk_rows, ...) array (mapped where it can be) or a scalar fill value for a chunk never written."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype, chunk_rows: int,
                 chunk: Callable[[int], np.ndarray | float | int],
                 in_a_row: Callable[[], np.ndarray | None] | None = None) -> None:
        self.shape, self.dtype, self.chunk_rows, self.chunk = shape, np.dtype(dtype), chunk_rows, chunk
        self.in_a_row = in_a_row  # the whole array as one mapped view, where its chunks map back to back

    def read(self, start: int | None, stop: int | None, out: np.ndarray | None = None) -> np.ndarray:
        """Rows start..stop-1, copied into `out` (or a new array)."""
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        out = output(max(0, stop - start), self.shape[1:], self.dtype, out)
        whole = self.in_a_row() if self.in_a_row is not None else None
        if whole is not None:
            np.copyto(out, whole[start:max(start, stop)])
            return out
        row = start
        while row < stop:
            number, offset = divmod(row, self.chunk_rows)
            take = min(stop - row, self.chunk_rows - offset)
            source = self.chunk(number)
            target = out[row - start:row - start + take]
            if isinstance(source, np.ndarray):
                np.copyto(target, source[offset:offset + take])
            else:
                target[...] = source
            row += take
        return out

    def take(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows `rows` (indices in range, any order, repeats allowed), copied into `out`: only those rows are read."""
        rows = np.asarray(rows, dtype=np.int64)
        out = output(len(rows), self.shape[1:], self.dtype, out)
        if not len(rows):
            return out
        whole = self.in_a_row() if self.in_a_row is not None else None
        if whole is not None:  # 'clip' (rows are in range) avoids numpy's buffered copy
            return whole.take(rows, axis=0, out=out, mode="clip")
        numbers, within = np.divmod(rows, self.chunk_rows)  # each row's chunk, and its place there
        cuts = (np.flatnonzero(numbers[1:] != numbers[:-1]) + 1).tolist() if len(rows) > 1 else []
        lo = 0
        for hi in [*cuts, len(rows)]:  # runs of rows in one chunk
            source = self.chunk(int(numbers[lo]))
            if isinstance(source, np.ndarray):  # 'clip' (rows are in range) avoids numpy's buffered copy
                source.take(within[lo:hi], axis=0, out=out[lo:hi], mode="clip")
            else:
                out[lo:hi] = source
            lo = hi
        return out
