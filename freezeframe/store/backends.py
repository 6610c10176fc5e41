"""Registry of storage backends by format name; every backend reads and writes the same schema.

Compression is a storage detail of each shard (recorded in its commit marker), never part of a
feature set's provenance: shards of one feature set may differ in format and compression.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from freezeframe.errors import StoreError
from freezeframe.store import hdf5_backend, zarr_backend

# name -> the codec it means, identical in both backends (recorded next to the name in each marker)
COMPRESSIONS: dict[str, str] = {
    "none": "uncompressed",
    "zstd": f"zstd level {zarr_backend.ZSTD_LEVEL}",
    "blosc": f"blosc {zarr_backend.BLOSC['cname']} level {zarr_backend.BLOSC['clevel']}, byte shuffle",
}


@dataclass(frozen=True)
class Backend:
    name: str
    extension: str
    writer: Callable[..., object]  # writer(path, compression="none")
    reader: Callable[[Path], object]
    check_compression: Callable[[str], None] = lambda compression: None


BACKENDS: dict[str, Backend] = {
    "zarr": Backend("zarr", zarr_backend.EXTENSION, zarr_backend.ZarrBundleWriter, zarr_backend.ZarrBundleReader,
                    zarr_backend.check_compression),
    "hdf5": Backend("hdf5", hdf5_backend.EXTENSION, hdf5_backend.Hdf5BundleWriter, hdf5_backend.Hdf5BundleReader,
                    hdf5_backend.check_compression),
}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise StoreError(f"unknown store format {name!r}; choose one of: {', '.join(sorted(BACKENDS))}.") from None


def check_compression(name: str) -> str:
    if name not in COMPRESSIONS:
        raise StoreError(f"unknown compression {name!r}; choose one of: {', '.join(COMPRESSIONS)}.")
    return name
