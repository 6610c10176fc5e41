"""Zarr backend: a shard (or the frozen-weights bundle) is one Zarr group of row-major arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

EXTENSION = ".zarr"
CHUNK_BYTES = 2 * 1024 * 1024  # ~2 MiB chunks along the frame axis: small random reads stay cheap


def rows_per_chunk(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return max(1, CHUNK_BYTES // row_bytes)


class ZarrBundleWriter:
    """Appends rows to named arrays of a new Zarr group; arrays are created on first append."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._group = zarr.open_group(str(path), mode="w")
        self._arrays: dict[str, Any] = {}

    def append(self, name: str, block: np.ndarray) -> None:
        array = self._arrays.get(name)
        if array is None:
            row_shape = tuple(block.shape[1:])
            array = self._group.create_array(
                name,
                shape=(0, *row_shape),
                chunks=(rows_per_chunk(row_shape, block.dtype), *row_shape),
                dtype=block.dtype,
                compressors=None,
                fill_value=0,
            )
            self._arrays[name] = array
        array.append(block, axis=0)

    def truncate(self, rows: int) -> None:
        for array in self._arrays.values():
            if array.shape[0] > rows:
                array.resize((rows, *array.shape[1:]))

    def set_attrs(self, attrs: dict) -> None:
        self._group.attrs.update(attrs)

    def close(self) -> None:
        self._arrays.clear()


class ZarrBundleReader:
    """Read-only access to a Zarr group written by `ZarrBundleWriter`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._group = zarr.open_group(str(path), mode="r")
        self._cache: dict[str, Any] = {}

    def array_names(self) -> list[str]:
        return sorted(name for name, node in self._group.members(max_depth=None) if isinstance(node, zarr.Array))

    def _array(self, name: str):
        array = self._cache.get(name)
        if array is None:
            array = self._group[name]
            self._cache[name] = array
        return array

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._array(name).shape)

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self._array(name).dtype)

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        return np.asarray(self._array(name)[start:stop])

    def attrs(self) -> dict:
        return dict(self._group.attrs)

    def close(self) -> None:
        self._cache.clear()
