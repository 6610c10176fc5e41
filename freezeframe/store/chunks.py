"""Checking how a stored array says it is chunked and compressed before a byte of it is decompressed.

A shard's array metadata (a Zarr `zarr.json`, an HDF5 dataset's layout) and each compressed chunk's header come
from the store, so they are data to check: a chunk grid must be positive and no larger than the rows it covers,
and a compressed chunk must declare (zstd's frame header, blosc's header) no more bytes than its chunk may hold.
Both checks cost a few bytes of metadata, so a 48 KB chunk can never inflate into gigabytes.
"""

from __future__ import annotations

import math

from freezeframe.errors import StoreError

# a chunk may hold more rows than its array (a shard cut short after its first block), up to this many bytes
CHUNK_SLACK_BYTES = 64 * 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
HEADER_BYTES = 18  # the longest zstd frame header (magic, descriptor, window, 4-byte dictionary, 8-byte size)


class ChunkLayoutError(StoreError, ValueError):
    """An array whose chunk grid or compressed chunk disagrees with what its shape allows."""


def check_chunk_grid(chunks: tuple[int, ...] | None, shape: tuple[int, ...], itemsize: int, where: object) -> None:
    """Refuse a chunk grid with a dimension below 1, wider than the array, or deeper than its rows allow."""
    if chunks is None:
        return  # stored contiguously (HDF5): read as the rows asked for
    chunks = tuple(chunks)
    if len(chunks) != len(shape) or any(not isinstance(c, int) or c < 1 for c in chunks):
        raise ChunkLayoutError(f"{where}: chunk shape {list(chunks)} does not fit array shape {list(shape)} "
                               "(every chunk dimension must be a positive size); the store is damaged, not read.")
    if any(c > max(1, d) for c, d in zip(chunks[1:], shape[1:])):
        raise ChunkLayoutError(f"{where}: chunk shape {list(chunks)} is wider than the array {list(shape)}; "
                               "the store is damaged, so it is not read.")
    row_bytes = max(1, math.prod(chunks[1:]) * itemsize)
    if chunks[0] > max(1, shape[0], CHUNK_SLACK_BYTES // row_bytes):
        raise ChunkLayoutError(f"{where}: a chunk of {chunks[0]} rows is larger than the {shape[0]} rows of the "
                               "array it covers; the store is damaged, so it is not read.")


def zstd_content_size(header: bytes) -> int | None:
    """The decompressed size a zstd frame declares in its header, or None when it declares none."""
    if len(header) < 5 or header[:4] != ZSTD_MAGIC:
        raise ValueError("not a zstd frame")
    descriptor = header[4]
    size_flag, single_segment, dictionary_flag = descriptor >> 6, (descriptor >> 5) & 1, descriptor & 3
    offset = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dictionary_flag]
    width = (1 if single_segment else 0, 2, 4, 8)[size_flag]
    if not width:
        return None
    if len(header) < offset + width:
        raise ValueError("a truncated zstd frame header")
    value = int.from_bytes(header[offset:offset + width], "little")
    return value + 256 if width == 2 else value


def blosc_content_size(header: bytes) -> int:
    """The decompressed size a blosc (1.x) chunk declares in its 16-byte header."""
    if len(header) < 16:
        raise ValueError("a truncated blosc header")
    return int.from_bytes(header[4:8], "little")


def check_compressed_chunk(codec: str, header: bytes, chunk_bytes: int, where: object) -> None:
    """Refuse a `codec` ("zstd" or "blosc") chunk whose header declares more than `chunk_bytes` decompressed, or
    (zstd) no size at all, before it is decompressed."""
    try:
        declared = zstd_content_size(header) if codec == "zstd" else blosc_content_size(header)
    except ValueError as exc:
        raise ChunkLayoutError(f"{where}: {exc}; the chunk is damaged, so it is not read.") from None
    if declared is None or declared > chunk_bytes:
        said = "no decompressed size" if declared is None else f"{declared} bytes decompressed"
        raise ChunkLayoutError(f"{where}: the {codec} chunk declares {said}, but a chunk of this array holds "
                               f"{chunk_bytes} bytes; the chunk is damaged or hostile, so it is not decompressed.")
