"""One segment of a video index: sorted video ids with their shard, row start and row count, as columns in one file.

Readers memory-map a segment (remote ones are read whole) instead of parsing it, so opening costs the same at 10k
and 1M videos and processes on one machine share its pages. Layout of a segment file:

    8 bytes  b"FFINDEX1"
    8 bytes  little-endian length of the JSON header that follows
    header   {"videos": n, "shards": m, "columns": {name: [offset, count]} (offsets from the first column, which
              starts at the next multiple of 64), "layouts": [[format, compression]],
              "array_sets": [{array: {"shape", "dtype"}}], "replaces": [[new shard, old shard]]}
    columns  64-byte aligned little-endian arrays:
             id_offsets int64 (n + 1), id_bytes uint8 (UTF-8 ids, sorted bytewise = sorted as str),
             shard int32 (n, a position in the shard table), row_start int64 (n), n_rows int64 (n),
             shard_offsets int64 (m + 1), shard_bytes uint8 (shard ids), shard_rows int64 (m),
             shard_layout int32 (m, into "layouts"), shard_arrays int32 (m, into "array_sets")

A segment is data to check, never trusted: the header and the shard table are checked when it opens, every video
entry when it is used (a damaged one raises DamagedIndexError), and shard ids count only where a commit marker of
that id exists. Bounds checked here keep every read inside the shard the entry names.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import dataclass
from typing import Iterable, NamedTuple

import numpy as np

from freezeframe.limits import DOCUMENT_BYTES, limit
from freezeframe.store.confine import open_regular
from freezeframe.store.files import MalformedFileError
from freezeframe.store.location import StorePath, is_remote
from freezeframe.store.markers import check_arrays

MAGIC = b"FFINDEX1"
ALIGN = 64
VIDEO_COLUMNS = {"id_offsets": "<i8", "id_bytes": "u1", "shard": "<i4", "row_start": "<i8", "n_rows": "<i8"}
SHARD_COLUMNS = {"shard_offsets": "<i8", "shard_bytes": "u1", "shard_rows": "<i8", "shard_layout": "<i4",
                 "shard_arrays": "<i4"}
COLUMNS = {**VIDEO_COLUMNS, **SHARD_COLUMNS}


class DamagedIndexError(MalformedFileError):
    """An index segment that is not what its header says (readers fall back to the commit markers)."""


class Entry(NamedTuple):
    """Where one video's rows are: shard id, first row, number of rows."""

    shard: str
    row_start: int
    n_rows: int


@dataclass(frozen=True)
class ShardInfo:
    """What readers need of a committed shard: its format, compression, rows, and arrays' per-row shape and dtype."""

    format: str
    compression: str
    num_rows: int
    arrays: dict  # array -> {"shape": [...], "dtype": str}


class Segment:
    """Sorted video ids and where each video's rows are; built from markers or opened from a file."""

    def __init__(self, columns: dict[str, np.ndarray], layouts: list[tuple[str, str]], array_sets: list[dict],
                 replaces: list[tuple[str, str]], where: object, keep_alive: object = None) -> None:
        self.where = where
        self._keep_alive = keep_alive  # the mmap the columns view
        self.columns = columns
        self.n = len(columns["shard"])
        self.layouts, self.array_sets, self.replaces = layouts, array_sets, replaces
        self.from_markers = False  # built from commit markers (the truth), not opened from a file (a cache)
        self._by_shard: tuple[np.ndarray, np.ndarray] | None = None  # entry positions grouped by shard, when asked
        # scalar access through memoryviews: about 10x faster than indexing numpy arrays one element at a time
        self._off = memoryview(columns["id_offsets"]).cast("B").cast("q")
        self._ids = memoryview(columns["id_bytes"])
        self._shard = memoryview(columns["shard"]).cast("B").cast("i")
        self._start = memoryview(columns["row_start"]).cast("B").cast("q")
        self._rows = memoryview(columns["n_rows"]).cast("B").cast("q")
        try:
            self.shard_ids = [key.decode("utf-8") for key in _split(columns["shard_offsets"], columns["shard_bytes"],
                                                                     where)]
        except UnicodeDecodeError:
            raise DamagedIndexError(f"{where}: a shard id is not UTF-8.") from None
        self._check_shard_table()

    def _check_shard_table(self) -> None:
        c, m = self.columns, len(self.shard_ids)
        if len(set(self.shard_ids)) != m or any(len(c[k]) != m for k in ("shard_rows", "shard_layout", "shard_arrays")):
            raise DamagedIndexError(f"{self.where}: the shard table is inconsistent.")
        if m and (c["shard_rows"].min() < 0
                  or not 0 <= c["shard_layout"].min() <= c["shard_layout"].max() < len(self.layouts)
                  or not 0 <= c["shard_arrays"].min() <= c["shard_arrays"].max() < len(self.array_sets)):
            raise DamagedIndexError(f"{self.where}: a shard entry points outside the segment's tables.")

    # ---- lookups ---------------------------------------------------------------------------------------
    def _key(self, i: int) -> bytes:
        a, b = self._off[i], self._off[i + 1]
        if not 0 <= a <= b <= len(self._ids):
            raise DamagedIndexError(f"{self.where}: video id {i} lies outside the id column.")
        return bytes(self._ids[a:b])

    def find(self, key: bytes) -> int:
        """Position of the video whose UTF-8 id is `key`, or -1 (binary search over the sorted ids)."""
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.n and self._key(lo) == key else -1

    def entry(self, i: int) -> Entry:
        """The checked entry at position `i`: its shard is in the table and its rows inside that shard."""
        shard, start, rows = self._shard[i], self._start[i], self._rows[i]
        if not 0 <= shard < len(self.shard_ids) or start < 0 or rows < 0 \
                or start + rows > int(self.columns["shard_rows"][shard]):
            raise DamagedIndexError(f"{self.where}: the entry of video {i} lies outside its shard.")
        return Entry(self.shard_ids[shard], start, rows)

    def shard_entries(self, position: int) -> list[tuple[bytes, int, int]]:
        """(UTF-8 id, row start, rows) of every entry of the shard at `position` of the table (grouped once per
        segment, on first use: one stable sort of the shard column)."""
        if self._by_shard is None:
            order = np.argsort(self.columns["shard"], kind="stable").astype(np.int32)
            bounds = np.searchsorted(self.columns["shard"][order], np.arange(len(self.shard_ids) + 1))
            self._by_shard = order, bounds
        order, bounds = self._by_shard
        entries = order[bounds[position]:bounds[position + 1]]
        offsets = self.columns["id_offsets"]
        lo, hi = offsets[entries], offsets[entries + 1]
        if len(entries) and (lo.min() < 0 or np.any(hi < lo) or hi.max() > len(self._ids)):
            raise DamagedIndexError(f"{self.where}: a video id lies outside the id column.")
        ids = self._ids
        keys = [bytes(ids[a:b]) for a, b in zip(lo.tolist(), hi.tolist())]
        return list(zip(keys, self.columns["row_start"][entries].tolist(), self.columns["n_rows"][entries].tolist()))

    def check_entries(self) -> None:
        """Every entry at once (`entry` checks one): DamagedIndexError unless all lie inside their shards."""
        c = self.columns
        _check_offsets(c["id_offsets"], c["id_bytes"], self.where)
        if not self.n:
            return
        if c["shard"].min() < 0 or c["shard"].max() >= len(self.shard_ids) or c["row_start"].min() < 0 \
                or c["n_rows"].min() < 0:
            raise DamagedIndexError(f"{self.where}: a video entry lies outside its shard.")
        room = c["shard_rows"][c["shard"]] - c["row_start"]  # (compared without adding: no int64 overflow)
        if np.any(room < 0) or np.any(c["n_rows"] > room):
            raise DamagedIndexError(f"{self.where}: a video entry lies outside its shard.")

    def ids(self) -> list[str]:
        """Every video id, sorted."""
        try:
            return [key.decode("utf-8") for key in self.keys()]
        except UnicodeDecodeError:
            raise DamagedIndexError(f"{self.where}: a video id is not UTF-8.") from None

    def keys(self) -> list[bytes]:
        """Every video id as UTF-8 bytes, sorted."""
        return _split(self.columns["id_offsets"], self.columns["id_bytes"], self.where)

    def shard_info(self, position: int) -> ShardInfo:
        fmt, compression = self.layouts[int(self.columns["shard_layout"][position])]
        return ShardInfo(fmt, compression, int(self.columns["shard_rows"][position]),
                         self.array_sets[int(self.columns["shard_arrays"][position])])

    # ---- building and writing ------------------------------------------------------------------------------
    @classmethod
    def build(cls, keys: list[bytes], shard: np.ndarray, row_start: np.ndarray, n_rows: np.ndarray,
              shards: dict[str, ShardInfo], replaces: Iterable[tuple[str, str]],
              where: object = "index") -> tuple["Segment", list[tuple[str, str, str]]]:
        """A segment of the entries (UTF-8 id, position of its shard in sorted(`shards`), row start, rows), in any
        order, and the duplicates left out: of a video given twice the earliest shard keeps it; the rest are
        returned as (video id, kept shard, other shard)."""
        shard_ids = sorted(shards)
        order = sorted(range(len(keys)), key=keys.__getitem__)  # stable: ties keep the order given
        ordered = [keys[i] for i in order]
        keep = np.ones(len(order), bool)
        duplicates = []
        for j in [j for j in range(1, len(ordered)) if ordered[j] == ordered[j - 1]]:  # rare: a video twice
            first = j - 1
            while not keep[first]:
                first -= 1
            kept, other = (first, j) if shard[order[first]] <= shard[order[j]] else (j, first)
            keep[other] = False
            duplicates.append((ordered[j].decode("utf-8"), shard_ids[shard[order[kept]]],
                               shard_ids[shard[order[other]]]))
        rows = np.asarray(order, np.int64)[keep]
        layouts = sorted({(info.format, info.compression) for info in shards.values()})
        array_keys = sorted({json.dumps(info.arrays, sort_keys=True) for info in shards.values()})
        columns = {
            **_strings([key for key, kept in zip(ordered, keep) if kept], "id"),
            "shard": np.asarray(shard, "<i4")[rows],
            "row_start": np.asarray(row_start, "<i8")[rows],
            "n_rows": np.asarray(n_rows, "<i8")[rows],
            **_strings([s.encode() for s in shard_ids], "shard"),
            "shard_rows": np.array([shards[s].num_rows for s in shard_ids], "<i8"),
            "shard_layout": np.array([layouts.index((shards[s].format, shards[s].compression)) for s in shard_ids],
                                     "<i4"),
            "shard_arrays": np.array([array_keys.index(json.dumps(shards[s].arrays, sort_keys=True))
                                      for s in shard_ids], "<i4"),
        }
        segment = cls(columns, layouts, [json.loads(key) for key in array_keys], sorted(set(replaces)), where)
        return segment, duplicates

    def to_bytes(self) -> bytes:
        """The segment file: magic, header length, header, then the columns (offsets relative to the first)."""
        header = {"videos": self.n, "shards": len(self.shard_ids), "layouts": [list(x) for x in self.layouts],
                  "array_sets": self.array_sets, "replaces": [list(x) for x in self.replaces], "columns": {}}
        parts, offset = [], 0
        for name, dtype in COLUMNS.items():
            data = np.ascontiguousarray(self.columns[name], dtype=dtype).tobytes()
            header["columns"][name] = [offset, len(self.columns[name])]
            parts.append((offset, data))
            offset = _aligned(offset + len(data))
        text = json.dumps(header, sort_keys=True).encode()
        base = _aligned(16 + len(text))
        out = bytearray(base + offset)
        out[:16] = MAGIC + len(text).to_bytes(8, "little")
        out[16:16 + len(text)] = text
        for at, data in parts:
            out[base + at:base + at + len(data)] = data
        return bytes(out)

    # ---- opening ----------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: StorePath) -> "Segment":
        """Map (or, remotely, read) a segment file; DamagedIndexError when its header or shard table is wrong."""
        if is_remote(path):
            with path.open("rb") as handle:
                buffer = handle.read()
            return cls.from_buffer(buffer, path)
        fd = open_regular(path)
        try:
            size = os.fstat(fd).st_size
            if size < 16:
                raise DamagedIndexError(f"{path}: too short to be an index segment.")
            mapped = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        return cls.from_buffer(mapped, path)

    @classmethod
    def from_buffer(cls, buffer, where: object) -> "Segment":
        if len(buffer) < 16 or bytes(buffer[:8]) != MAGIC:
            raise DamagedIndexError(f"{where}: not a freezeframe index segment.")
        length = int.from_bytes(buffer[8:16], "little")
        if length > min(limit(DOCUMENT_BYTES), len(buffer) - 16):
            raise DamagedIndexError(f"{where}: the header runs past the file.")
        try:
            header = json.loads(bytes(buffer[16:16 + length]))
            n, m, base = header["videos"], header["shards"], _aligned(16 + length)
            counts = {"id_offsets": n + 1, "shard": n, "row_start": n, "n_rows": n, "shard_offsets": m + 1,
                      "shard_rows": m, "shard_layout": m, "shard_arrays": m}
            columns = {}
            for name, dtype in COLUMNS.items():
                offset, count = header["columns"][name]
                if not (isinstance(offset, int) and isinstance(count, int) and offset >= 0 and count >= 0
                        and counts.get(name, count) == count):
                    raise DamagedIndexError(f"{where}: column {name} has the wrong length.")
                offset += base
                if offset % ALIGN or offset + count * np.dtype(dtype).itemsize > len(buffer):
                    raise DamagedIndexError(f"{where}: column {name} lies outside the file.")
                columns[name] = np.frombuffer(buffer, dtype, count, offset)
            layouts = [(str(fmt), str(compression)) for fmt, compression in header["layouts"]]
            from freezeframe.store.backends import BACKENDS, COMPRESSIONS

            if any(fmt not in BACKENDS or compression not in COMPRESSIONS for fmt, compression in layouts):
                raise DamagedIndexError(f"{where}: unknown shard format or compression.")
            for arrays in header["array_sets"]:
                check_arrays(arrays, where)
            replaces = [(str(new), str(old)) for new, old in header["replaces"]]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            if isinstance(exc, DamagedIndexError):
                raise
            raise DamagedIndexError(f"{where}: malformed index segment header ({exc}).") from None
        return cls(columns, layouts, header["array_sets"], replaces, where, keep_alive=buffer)


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _strings(values: list[bytes], prefix: str) -> dict[str, np.ndarray]:
    """`<prefix>_offsets` (len + 1) and `<prefix>_bytes` columns holding `values` back to back."""
    offsets = np.zeros(len(values) + 1, "<i8")
    np.cumsum([len(v) for v in values], out=offsets[1:])
    return {f"{prefix}_offsets": offsets, f"{prefix}_bytes": np.frombuffer(b"".join(values), "u1")}


def _check_offsets(offsets: np.ndarray, blob: np.ndarray, where: object) -> None:
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(blob) or np.any(np.diff(offsets) < 0):
        raise DamagedIndexError(f"{where}: a string column's offsets do not fit its bytes.")


def _split(offsets: np.ndarray, blob: np.ndarray, where: object) -> list[bytes]:
    """Every value of an offsets + bytes column pair (DamagedIndexError when the offsets do not fit the bytes)."""
    _check_offsets(offsets, blob, where)
    data = blob.tobytes()
    bounds = offsets.tolist()
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def segment_difference(got: Segment, want: Segment) -> str | None:
    """How `got` differs from `want` (shards, their descriptions, then videos), or None when they are equal;
    DamagedIndexError when `got` is not even well formed."""
    got.check_entries()
    if got.shard_ids != want.shard_ids:
        return f"it serves shards {_id_difference(got.shard_ids, want.shard_ids)}"
    for position, shard_id in enumerate(want.shard_ids):
        if got.shard_info(position) != want.shard_info(position):
            return f"it describes shard {shard_id} differently"
    if got.n != want.n or not all(np.array_equal(got.columns[c], want.columns[c])
                                  for c in ("id_offsets", "id_bytes", "shard", "row_start", "n_rows")):
        got_ids, want_ids = got.ids(), want.ids()
        if got_ids != want_ids:
            return f"it lists videos {_id_difference(got_ids, want_ids)}"
        for i, video_id in enumerate(want_ids):
            if got.entry(i) != want.entry(i):
                return f"video {video_id!r} at {tuple(got.entry(i))}, its marker says {tuple(want.entry(i))}"
    return None


def _id_difference(got: list[str], want: list[str]) -> str:
    extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
    return f"{len(extra)} not committed (e.g. {extra[:2]}) and misses {len(missing)} (e.g. {missing[:2]})"
