"""Publishing a store for other teams: a verified, read-only copy with a manifest of sha256 hashes.

`publish_store(STORE, DEST)` verifies STORE (a store with any problem is refused), then copies into DEST (an fsspec
URL or a local directory, which must be empty) exactly what readers use: the schema and group files, each feature
set's provenance, failures and frozen-weights bundle, its served shards with their markers, and one index segment
built from those markers. Claims, memmap exports, temporaries, unmarked and replaced shards stay behind. Every file
is hashed while it is copied; `published.json`, the manifest (relative path -> size and sha256), is written last,
so DEST is a published store only once it is whole. Readers (store/published.py) fetch what they read into a local
cache and check each file against the manifest first. A local DEST is left read-only (files 0444, folders 0555).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from freezeframe.errors import StoreError
from freezeframe.store.backends import BACKENDS
from freezeframe.store.confine import open_regular
from freezeframe.store.files import dumps
from freezeframe.store.index import index_from_markers
from freezeframe.store.layout import (FAILURES_FILE, FROZEN_NAME, INDEX_DIR, MARKER_SUFFIX, PROVENANCE_FILE,
                                      PUBLISHED_FILE, SCHEMA_FILE, SEGMENT_SUFFIX, SHARDS_DIR, ZARR_GROUP_FILE)
from freezeframe.store.markers import shard_file
from freezeframe.store.published import PUBLISHED_FORMAT, PUBLISHED_VERSION
from freezeframe.store.store import Store

COPY_BLOCK = 16 * 1024 * 1024


@dataclass
class PublishReport:
    destination: str
    files: int = 0
    bytes: int = 0
    videos: int = 0
    manifest_sha256: str = ""


def publish_store(src: str | Path, dest: str, names: list[str] | tuple[str, ...] | None = None,
                  log: Callable[[str], None] | None = None) -> PublishReport:
    """Verify `src`, copy what readers use into `dest` and write its manifest last (see the module docstring)."""
    import fsspec

    from freezeframe.store.tools.verify import verify_store

    store = Store(src)
    if store.published is not None:
        raise StoreError(f"{src} is a published store already; publish the store it was published from.")
    chosen = list(names) if names else store.names()
    missing = [name for name in chosen if name not in store.names()]
    if missing:
        raise StoreError(f"store {src} has no feature set {missing[0]!r}; it has: "
                         f"{', '.join(store.names()) or 'none'}.")
    checked = verify_store(src)
    if not checked.ok:
        raise StoreError(f"store {src} fails verification, so it is not published ({len(checked.problems)} problems; "
                         f"the first: {checked.problems[0]}); run freezeframe verify {src}.")
    fs, root = fsspec.core.url_to_fs(dest)
    root = root.rstrip("/")
    if fs.exists(root) and fs.ls(root):
        raise StoreError(f"{dest} is not empty; publish into a new location (a published store is never changed).")
    fs.makedirs(root, exist_ok=True)
    report = PublishReport(dest)
    manifest: dict[str, dict] = {}

    def put(relative: str, chunks: Iterator[bytes]) -> None:
        digest, size = hashlib.sha256(), 0
        target = f"{root}/{relative}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(target, "wb") as handle:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                handle.write(chunk)
        manifest[relative] = {"size": size, "sha256": digest.hexdigest()}
        report.files += 1
        report.bytes += size

    for relative in (SCHEMA_FILE, ZARR_GROUP_FILE):
        if (store.path / relative).is_file():
            put(relative, _blocks(store.path / relative))
    for name in chosen:
        fs_dir = store.path / name
        index = index_from_markers(fs_dir)  # the published index is built from the markers alone
        segment = index.merged()
        put(f"{name}/{INDEX_DIR}/published{SEGMENT_SUFFIX}", iter([segment.to_bytes()]))
        report.videos += segment.n
        files = [PROVENANCE_FILE, ZARR_GROUP_FILE, FAILURES_FILE, f"{SHARDS_DIR}/{ZARR_GROUP_FILE}"]
        files += [f"{FROZEN_NAME}{backend.extension}" for backend in BACKENDS.values()]
        for shard_id in index.shard_ids:
            files += [f"{SHARDS_DIR}/{shard_id}{MARKER_SUFFIX}",
                      f"{SHARDS_DIR}/{shard_file(shard_id, index.shard_info(shard_id).format)}"]
        for relative in files:
            for path in _tree(fs_dir / relative):
                put(f"{name}/{path.relative_to(fs_dir).as_posix()}", _blocks(path))
        if log:
            shards = len(index.shard_ids)
            log(f"{name}: {segment.n} video{'s' * (segment.n != 1)} in {shards} shard{'s' * (shards != 1)} published")
    body = dumps({"format": PUBLISHED_FORMAT, "version": PUBLISHED_VERSION, "source": str(store.path),
                  "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "feature_sets": chosen,
                  "files": manifest}, compact=True)
    fs.pipe_file(f"{root}/{PUBLISHED_FILE}", body)
    report.manifest_sha256 = hashlib.sha256(body).hexdigest()
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        _make_read_only(Path(root))
    return report


def _tree(path: Path) -> list[Path]:
    """The regular files of `path` (a file, or a folder walked whole); [] when it does not exist."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []


def _blocks(path: Path) -> Iterator[bytes]:
    with os.fdopen(open_regular(path), "rb") as handle:  # never through a link
        while block := handle.read(COPY_BLOCK):
            yield block


def _make_read_only(root: Path) -> None:
    for directory, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.chmod(os.path.join(directory, name), 0o444)
        os.chmod(directory, 0o555)
