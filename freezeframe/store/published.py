"""Reading a published store: what is read is fetched into a local cache, each file checked against the manifest.

A published store (store/tools/publish.py) opens through a local mirror, `CACHE/<sha256 of its manifest>/`, laid out as
a store, so every local read path applies (the memory-mapped index, raw chunk reads). Opening fetches what every
reader needs (schema and group files, provenance, failures, markers, the index, frozen weights); a Zarr shard's
metadata is fetched the first time one of its videos is read, and a read fetches the chunks its rows lie in (an
HDF5 shard, one file, is fetched whole). Each file is fetched under a temporary name, checked against its
size and sha256 in the manifest, then renamed into place, so whatever is in the mirror was checked: a second read,
in this process or a later one (a DataLoader worker, another run), is a cache hit. A file that differs from the
manifest is a StoreError and never enters the cache.

CACHE is `cache_dir`, else $FREEZEFRAME_CACHE_DIR, else ~/.cache/freezeframe. The manifest itself is the root of
trust: compare its sha256 with the one `freezeframe publish` printed to know it is the one published.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

from freezeframe.errors import StoreError
from freezeframe.limits import LIST_BYTES, limit
from freezeframe.store.confine import UnsafeStoreError, open_regular, plain_name, read_regular
from freezeframe.store.files import dumps, parse_json
from freezeframe.store.layout import MARKER_SUFFIX, MIRROR_FILE, PUBLISHED_FILE, PUBLISHING_FILE, SHARDS_DIR, \
    TEMP_PREFIX, temp_owner_tag

CACHE_ENV = "FREEZEFRAME_CACHE_DIR"
READY_FILE = ".metadata-fetched"  # in a mirror: everything but shard bundles is there
PUBLISHED_FORMAT, PUBLISHED_VERSION = "freezeframe-published", 1
COPY_BLOCK = 4 * 1024 * 1024  # a fetched file streams through memory in blocks of this size
BATCH_FILE_BYTES = 1024 * 1024  # remote files up to this size are fetched many at once ...
BATCH_BYTES = 64 * 1024 * 1024  # ... in batches of at most this many declared bytes
RESERVED = {PUBLISHED_FILE, PUBLISHING_FILE, MIRROR_FILE, READY_FILE}  # names a manifest may not list at its top


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "freezeframe")


class PublishedStore:
    """A published store at `location` (a URL or a local directory) and its local, checked mirror."""

    def __init__(self, location: str, cache_dir: str | Path | None = None) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.location = location
        self.fs, root = fsspec.core.url_to_fs(location)
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self.real_root = os.path.realpath(self.root) if self.local else self.root
        if self.fs.exists(f"{self.root}/{PUBLISHING_FILE}"):
            raise StoreError(f"{location} is an incomplete published store (its publish did not finish: "
                             f"{PUBLISHING_FILE} is still there); publish again into a new location.")
        body = self._manifest_bytes()
        manifest = parse_json(body, f"{location}/{PUBLISHED_FILE}")
        self.files = _checked_files(manifest, location)
        manifest_sha256 = hashlib.sha256(body).hexdigest()
        self.mirror = Path(cache_dir or default_cache_dir()) / "published" / manifest_sha256[:32]
        self.bundles: dict[str, list[str]] = {}  # "NAME/shards/<bundle>" -> its files
        self._chunks: dict[str, dict[tuple[str, int], list[str]]] = {}  # bundle -> (array, row chunk) -> its files
        self._chunk_rows: dict[tuple[str, str], int] = {}  # (bundle, array) -> rows per chunk
        metadata = []  # every file outside the shard bundles, fetched when the mirror is made
        for relative in self.files:
            bundle = _bundle_of(relative)
            if bundle:
                self.bundles.setdefault(bundle, []).append(relative)
            else:
                metadata.append(relative)
        if not (self.mirror / READY_FILE).exists():
            self._fetch(metadata)
            self._write(MIRROR_FILE, dumps({"published_store": location, "manifest_sha256": manifest_sha256}))
            self._write(READY_FILE, b"")

    def _manifest_bytes(self) -> bytes:
        """published.json, at most LIST_BYTES, never through a link or from a FIFO (a local one)."""
        where = f"{self.location}/{PUBLISHED_FILE}"
        try:
            if self.local:
                data = read_regular(f"{self.root}/{PUBLISHED_FILE}", limit(LIST_BYTES), where)
            else:
                data = self.fs.cat_file(f"{self.root}/{PUBLISHED_FILE}", start=0, end=limit(LIST_BYTES) + 1)
                data = data if len(data) <= limit(LIST_BYTES) else None
        except FileNotFoundError:
            raise StoreError(f"{self.location} is not a published store (no {PUBLISHED_FILE}).") from None
        if data is None:
            raise StoreError(f"{where} is larger than any manifest freezeframe writes.")
        return data

    def fetch_shard(self, fs_dir: Path, shard_file: str) -> None:
        """Make the shard bundle `shard_file` of the feature set in mirror folder `fs_dir` present, checked: a Zarr
        bundle's metadata only (its chunks come with `fetch_rows`), any other bundle whole."""
        bundle = f"{fs_dir.name}/{SHARDS_DIR}/{shard_file}"
        files = self.bundles.get(bundle, [])
        if _chunked(bundle):
            files = [relative for relative in files if _chunk_of(bundle, relative) is None]
        self._fetch([relative for relative in files if not (self.mirror / relative).exists()])

    def fetch_rows(self, fs_dir: Path, shard_file: str, array: str, lo: int, hi: int) -> None:
        """Make the chunks of `array` that rows [lo, hi) of Zarr bundle `shard_file` lie in present, checked (a chunk
        never written reads as the fill value, so it must be fetched before the read, never after)."""
        bundle = f"{fs_dir.name}/{SHARDS_DIR}/{shard_file}"
        if not _chunked(bundle) or hi <= lo:
            return
        chunks = self._chunks.get(bundle)
        if chunks is None:
            chunks = self._chunks[bundle] = {}
            for relative in self.bundles.get(bundle, []):
                key = _chunk_of(bundle, relative)
                if key is not None:
                    chunks.setdefault(key, []).append(relative)
        rows = self._chunk_rows.get((bundle, array))
        if rows is None:
            rows = self._chunk_rows[(bundle, array)] = _chunk_rows(self.mirror / bundle / array)
        wanted = [relative for number in range(lo // rows, (hi - 1) // rows + 1)
                  for relative in chunks.get((array, number), ()) if not (self.mirror / relative).exists()]
        self._fetch(wanted)

    def fetch_all(self) -> None:
        """Every file of the published store (what a full verify reads)."""
        self._fetch([relative for relative in self.files if not (self.mirror / relative).exists()])

    def mirror_problems(self, quick: bool = False) -> list[str]:
        """Every cached file compared with the manifest (size; and sha256 unless `quick`), and every file in the
        cache that the manifest does not list: what verify reports of the mirror readers are served from."""
        problems = []
        for relative, (size, digest) in sorted(self.files.items()):
            path = self.mirror / relative
            if not os.path.lexists(path):
                continue  # not fetched yet (a quick verify): fetched and checked when read
            try:
                found = os.lstat(path).st_size if quick else _size_and_sha256(path)
            except (OSError, StoreError) as exc:  # a link or special file in the cache is refused
                problems.append(f"cache of {self.location}: {relative} cannot be read: {exc}")
                continue
            if found not in (size, (size, digest)):
                problems.append(f"cache of {self.location}: {relative} differs from the manifest (edited in the "
                                f"cache {self.mirror}); remove the cache folder to fetch it again")
        for directory, _dirs, names in os.walk(self.mirror):
            for name in names:
                relative = Path(directory, name).relative_to(self.mirror).as_posix()
                if relative not in self.files and relative not in RESERVED and not name.startswith(TEMP_PREFIX):
                    problems.append(f"cache of {self.location}: {relative} is not in the manifest (added to the "
                                    f"cache {self.mirror})")
        return problems

    def _fetch(self, relatives: list[str]) -> None:
        """Copy each of `relatives` into the mirror, checked; a local source is read only when it is a regular
        file reached through no link, a remote one never past its declared size."""
        if self.local:
            for relative in relatives:
                self._store(relative, self._local_blocks(relative))
            return
        small = [relative for relative in relatives if 0 < self.files[relative][0] <= BATCH_FILE_BYTES]
        for batch in _batches(small, self.files):
            paths = [f"{self.root}/{relative}" for relative in batch]
            ends = [self.files[relative][0] + 1 for relative in batch]  # one byte more shows a longer file
            for relative, data in zip(batch, self.fs.cat_ranges(paths, [0] * len(batch), ends)):
                if isinstance(data, BaseException):
                    raise self._missing(relative, data)
                self._store(relative, iter([data]))
        batched = set(small)  # (opening a large store fetches thousands of markers: no list lookups)
        for relative in relatives:
            if relative not in batched:
                self._store(relative, self._remote_blocks(relative))

    def _local_blocks(self, relative: str) -> Iterator[bytes]:
        source = f"{self.root}/{relative}"
        parent = os.path.dirname(source)
        if os.path.realpath(parent) != os.path.join(self.real_root, *relative.split("/")[:-1]):
            raise UnsafeStoreError(f"{self.location}/{relative}: a folder on its path is a symbolic link; "
                                   "a published store is never followed out of its folder.")
        try:
            fd = open_regular(source, f"{self.location}/{relative}")
        except FileNotFoundError as exc:
            raise self._missing(relative, exc) from None
        with os.fdopen(fd, "rb") as handle:
            yield from _blocks(handle)

    def _remote_blocks(self, relative: str) -> Iterator[bytes]:
        try:
            handle = self.fs.open(f"{self.root}/{relative}", "rb")
        except FileNotFoundError as exc:
            raise self._missing(relative, exc) from None
        with handle:
            yield from _blocks(handle)

    def _missing(self, relative: str, exc: BaseException) -> StoreError:
        detail = "missing" if isinstance(exc, FileNotFoundError) else f"{type(exc).__name__}: {exc}"
        return StoreError(f"{self.location}/{relative}, a file its manifest lists, cannot be fetched ({detail}).")

    def _store(self, relative: str, blocks: Iterator[bytes]) -> None:
        """Stream `blocks` into a temporary while hashing, stopping the moment they pass the manifest's size;
        renamed into the mirror only when size and sha256 match."""
        size, digest = self.files[relative]
        path = self.mirror / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{TEMP_PREFIX}{temp_owner_tag()}-{path.name}")
        hasher, total = hashlib.sha256(), 0
        try:
            with open(temp, "wb") as out:
                for block in blocks:
                    total += len(block)
                    if total > size:
                        break
                    hasher.update(block)
                    out.write(block)
            if total != size or hasher.hexdigest() != digest:
                raise StoreError(f"{self.location}/{relative} differs from the manifest of the published store "
                                 f"({'larger than' if total > size else 'not'} the {size} bytes it lists, or "
                                 "changed or damaged after publishing); it is not used.")
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        os.replace(temp, path)  # readers of the mirror see no file or the whole checked one

    def _write(self, relative: str, data: bytes) -> None:
        path = self.mirror / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{TEMP_PREFIX}{temp_owner_tag()}-{path.name}")
        temp.write_bytes(data)
        os.replace(temp, path)  # readers of the mirror see no file or the whole checked one


def is_published(location) -> bool:
    """Whether `location` (a local Path or a UPath) holds a published store's manifest, or is one whose publish
    has not finished (opening it then says so)."""
    return (location / PUBLISHED_FILE).exists() or (location / PUBLISHING_FILE).exists()


def _bundle_of(relative: str) -> str | None:
    """"NAME/shards/<bundle>" for a file of a shard bundle (fetched when read), else None (fetched on open)."""
    parts = relative.split("/")
    if len(parts) >= 3 and parts[1] == SHARDS_DIR and not parts[2].endswith(MARKER_SUFFIX) \
            and not (len(parts) == 3 and parts[2] == "zarr.json"):
        return "/".join(parts[:3])
    return None


def _chunked(bundle: str) -> bool:
    """Whether a bundle is fetched chunk by chunk (a Zarr folder: one file per chunk)."""
    return bundle.endswith(".zarr")


def _chunk_of(bundle: str, relative: str) -> tuple[str, int] | None:
    """(array, chunk number along the rows) of a chunk file of a Zarr bundle (`<array>/c/<row chunk>/...`), or None
    for its metadata (zarr.json files)."""
    parts = relative[len(bundle) + 1:].split("/")
    for at in range(len(parts) - 2, 0, -1):
        if parts[at] == "c" and all(part.isdigit() for part in parts[at + 1:]):
            return "/".join(parts[:at]), int(parts[at + 1])
    return None


def _chunk_rows(array_dir: Path) -> int:
    """Rows per chunk of a fetched (checked) Zarr array, from its zarr.json."""
    from freezeframe.limits import DOCUMENT_BYTES

    try:
        meta = parse_json(read_regular(array_dir / "zarr.json", DOCUMENT_BYTES) or b"", array_dir / "zarr.json")
        rows = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    except (OSError, KeyError, TypeError, IndexError) as exc:
        raise StoreError(f"{array_dir}/zarr.json: no chunk grid to fetch by ({exc}).") from None
    if not isinstance(rows, int) or rows < 1:
        raise StoreError(f"{array_dir}/zarr.json: chunk rows {rows!r} are not a positive count; it is not read.")
    return rows


def _checked_files(manifest: object, where: str) -> dict[str, tuple[int, str]]:
    """The manifest's files, relative path -> (size, sha256), every path plain components inside the store."""
    if not isinstance(manifest, dict) or manifest.get("format") != PUBLISHED_FORMAT \
            or manifest.get("version") != PUBLISHED_VERSION \
            or not isinstance(manifest.get("files"), dict):
        raise StoreError(f"{where}/{PUBLISHED_FILE} is not a freezeframe manifest of version {PUBLISHED_VERSION}.")
    files = {}
    for relative, entry in manifest["files"].items():
        for part in str(relative).split("/"):
            plain_name(part, "published file", f"{where}/{PUBLISHED_FILE}")
        if part.startswith(TEMP_PREFIX) or relative in RESERVED or not isinstance(entry, dict) \
                or not isinstance(entry.get("size"), int) or entry["size"] < 0 \
                or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64:
            raise StoreError(f"{where}/{PUBLISHED_FILE}: the entry of {relative!r} is malformed.")
        files[relative] = (entry["size"], entry["sha256"])
    for relative in files:  # a file and a folder of one name cannot both be in a store
        parts = relative.split("/")
        for depth in range(1, len(parts)):
            if "/".join(parts[:depth]) in files:
                raise StoreError(f"{where}/{PUBLISHED_FILE} lists {'/'.join(parts[:depth])!r} both as a file and "
                                 f"as a folder (of {relative!r}); the manifest is malformed.")
    return files


def _size_and_sha256(path: Path) -> tuple[int, str]:
    hasher, size = hashlib.sha256(), 0
    with os.fdopen(open_regular(path), "rb") as handle:
        for block in _blocks(handle):
            hasher.update(block)
            size += len(block)
    return size, hasher.hexdigest()


def _blocks(handle) -> Iterator[bytes]:
    """The bytes of an open file, COPY_BLOCK at a time (a fetched file never sits whole in memory)."""
    while block := handle.read(COPY_BLOCK):
        yield block


def _batches(relatives: list[str], files: dict[str, tuple[int, str]]) -> Iterator[list[str]]:
    """`relatives` in order, grouped so that a group declares at most BATCH_BYTES."""
    batch, total = [], 0
    for relative in relatives:
        if batch and total + files[relative][0] > BATCH_BYTES:
            yield batch
            batch, total = [], 0
        batch.append(relative)
        total += files[relative][0]
    if batch:
        yield batch
