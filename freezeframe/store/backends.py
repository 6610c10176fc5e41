"""Registry of storage backends by format name; every backend reads and writes the same schema."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from freezeframe.errors import StoreError
from freezeframe.store import zarr_backend


@dataclass(frozen=True)
class Backend:
    name: str
    extension: str
    writer: Callable[[Path], object]
    reader: Callable[[Path], object]


BACKENDS: dict[str, Backend] = {
    "zarr": Backend("zarr", zarr_backend.EXTENSION, zarr_backend.ZarrBundleWriter, zarr_backend.ZarrBundleReader),
}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise StoreError(f"unknown store format {name!r}; choose one of: {', '.join(sorted(BACKENDS))}.") from None
