"""Rows of an uncompressed chunked array copied straight from memory maps of its chunks.

A committed shard never changes, so a process maps each chunk (a Zarr chunk file, or an HDF5 chunk's bytes inside
its file) once and copies rows from the page cache: no open/fstat/pread per read, and a sparse selection copies
only the rows it wants, directly into the caller's buffer (a batch tensor). Maps are kept in a bounded table that
drops the oldest first (a hit is one dict lookup, no lock), far below the kernel's limit on maps per process
(vm.max_map_count, 65530 by default).
A file is mapped only when it is a regular file of exactly the expected size; anything else is read the slow way,
which says what is wrong.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
from collections import OrderedDict
from typing import Callable

import numpy as np

from freezeframe.errors import OutputBufferError

from freezeframe.store.confine import READ_FLAGS, UnsafeStoreError

MAPS_KEPT = 4096  # memory maps one process keeps open (each costs a kernel map entry, no memory of its own)

_maps: OrderedDict[str, np.ndarray] = OrderedDict()
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
                 chunk: Callable[[int], np.ndarray | float | int]) -> None:
        self.shape, self.dtype, self.chunk_rows, self.chunk = shape, np.dtype(dtype), chunk_rows, chunk

    def read(self, start: int | None, stop: int | None, out: np.ndarray | None = None) -> np.ndarray:
        """Rows start..stop-1, copied into `out` (or a new array)."""
        start, stop, _ = slice(start, stop).indices(self.shape[0])
        out = output(max(0, stop - start), self.shape[1:], self.dtype, out)
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
        size = self.chunk_rows
        numbers = [row // size for row in rows.tolist()]  # chunk of each row (few rows: Python beats numpy calls)
        within = rows % size  # each row's place in its chunk
        numbers.append(-1)  # (ends the last run)
        lo = 0
        for hi in range(1, len(numbers)):  # runs of rows in one chunk
            if numbers[hi] == numbers[lo]:
                continue
            source = self.chunk(numbers[lo])
            if isinstance(source, np.ndarray):  # 'clip' (rows are in range) avoids numpy's buffered copy
                source.take(within[lo:hi], axis=0, out=out[lo:hi], mode="clip")
            else:
                out[lo:hi] = source
            lo = hi
        return out
