"""Zarr backend: a shard (or the frozen-weights bundle) is one Zarr group of row-major arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

EXTENSION = ".zarr"
CHUNK_BYTES = 2 * 1024 * 1024  # ~2 MiB chunks along the frame axis: small random reads stay cheap
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
    from freezeframe.errors import StoreError

    raise StoreError(f"unknown compression {compression!r}; choose none, zstd or blosc.")


def check_compression(compression: str) -> None:
    compressors(compression)


def rows_per_chunk(row_shape: tuple[int, ...], dtype: np.dtype) -> int:
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize)
    return max(1, CHUNK_BYTES // row_bytes)


class ZarrBundleWriter:
    """Appends rows to named arrays of a new Zarr group; arrays are created on first append."""

    def __init__(self, path: Path, compression: str = "none") -> None:
        self.path = path
        self._compressors = compressors(compression)
        self._group = zarr.open_group(str(path), mode="w")
        self._arrays: dict[str, Any] = {}

    def append(self, name: str, block: np.ndarray) -> None:
        array = self._arrays.get(name)
        if array is None:
            row_shape = tuple(block.shape[1:])
            array = self._group.create_array(
                name,
                shape=(0, *row_shape),
                # The first block is either a whole (small) shard or a large flush: never pad chunks past it.
                chunks=(max(1, min(rows_per_chunk(row_shape, block.dtype), len(block))), *row_shape),
                dtype=block.dtype,
                compressors=self._compressors,
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
