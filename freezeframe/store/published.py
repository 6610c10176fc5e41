"""Reading a published store: what is read is fetched into a local cache, each file checked against the manifest.

A published store (store/tools/publish.py) opens through a local mirror, `CACHE/<sha256 of its manifest>/`, laid out as
a store, so every local read path applies (the memory-mapped index, raw chunk reads). Opening fetches what every
reader needs (schema and group files, provenance, failures, markers, the index, frozen weights); a shard is fetched
whole the first time one of its videos is read. Each file is fetched under a temporary name, checked against its
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

from freezeframe.errors import StoreError
from freezeframe.limits import LIST_BYTES
from freezeframe.store.confine import plain_name
from freezeframe.store.files import dumps, parse_json
from freezeframe.store.layout import MARKER_SUFFIX, MIRROR_FILE, PUBLISHED_FILE, SHARDS_DIR, TEMP_PREFIX, \
    temp_owner_tag

CACHE_ENV = "FREEZEFRAME_CACHE_DIR"
READY_FILE = ".metadata-fetched"  # in a mirror: everything but shard bundles is there
PUBLISHED_FORMAT, PUBLISHED_VERSION = "freezeframe-published", 1


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "freezeframe")


class PublishedStore:
    """A published store at `location` (a URL or a local directory) and its local, checked mirror."""

    def __init__(self, location: str, cache_dir: str | Path | None = None) -> None:
        import fsspec

        self.location = location
        self.fs, root = fsspec.core.url_to_fs(location)
        self.root = root.rstrip("/")
        try:
            if self.fs.size(f"{self.root}/{PUBLISHED_FILE}") > LIST_BYTES:
                raise StoreError(f"{location}/{PUBLISHED_FILE} is larger than any manifest freezeframe writes.")
            body = self.fs.cat_file(f"{self.root}/{PUBLISHED_FILE}")
        except FileNotFoundError:
            raise StoreError(f"{location} is not a published store (no {PUBLISHED_FILE}).") from None
        manifest = parse_json(body, f"{location}/{PUBLISHED_FILE}")
        self.files = _checked_files(manifest, location)
        manifest_sha256 = hashlib.sha256(body).hexdigest()
        self.mirror = Path(cache_dir or default_cache_dir()) / "published" / manifest_sha256[:32]
        self.bundles: dict[str, list[str]] = {}  # "NAME/shards/<bundle>" -> its files
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

    def fetch_shard(self, fs_dir: Path, shard_file: str) -> None:
        """Make the shard bundle `shard_file` of the feature set in mirror folder `fs_dir` present, checked."""
        files = self.bundles.get(f"{fs_dir.name}/{SHARDS_DIR}/{shard_file}", [])
        self._fetch([relative for relative in files if not (self.mirror / relative).exists()])

    def fetch_all(self) -> None:
        """Every file of the published store (what a full verify reads)."""
        self._fetch([relative for relative in self.files if not (self.mirror / relative).exists()])

    def _fetch(self, relatives: list[str]) -> None:
        if not relatives:
            return
        try:
            fetched = self.fs.cat([f"{self.root}/{relative}" for relative in relatives])
        except FileNotFoundError:
            raise StoreError(f"{self.location}: a file its manifest lists is missing (one of {relatives[0]}, ...; "
                             f"{len(relatives)} files asked for).") from None
        for relative in relatives:
            data = fetched[f"{self.root}/{relative}"]
            size, digest = self.files[relative]
            if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
                raise StoreError(f"{self.location}/{relative} differs from the manifest of the published store "
                                 "(changed or damaged after publishing); it is not used.")
            self._write(relative, data)

    def _write(self, relative: str, data: bytes) -> None:
        path = self.mirror / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{TEMP_PREFIX}{temp_owner_tag()}-{path.name}")
        temp.write_bytes(data)
        os.replace(temp, path)  # readers of the mirror see no file or the whole checked one


def is_published(location) -> bool:
    """Whether `location` (a local Path or a UPath) holds a published store's manifest."""
    return (location / PUBLISHED_FILE).is_file()


def _bundle_of(relative: str) -> str | None:
    """"NAME/shards/<bundle>" for a file of a shard bundle (fetched when read), else None (fetched on open)."""
    parts = relative.split("/")
    if len(parts) >= 3 and parts[1] == SHARDS_DIR and not parts[2].endswith(MARKER_SUFFIX) \
            and not (len(parts) == 3 and parts[2] == "zarr.json"):
        return "/".join(parts[:3])
    return None


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
        if part.startswith(TEMP_PREFIX) or not isinstance(entry, dict) or not isinstance(entry.get("size"), int) \
                or not isinstance(entry.get("sha256"), str) or len(entry["sha256"]) != 64:
            raise StoreError(f"{where}/{PUBLISHED_FILE}: the entry of {relative!r} is malformed.")
        files[relative] = (entry["size"], entry["sha256"])
    return files
