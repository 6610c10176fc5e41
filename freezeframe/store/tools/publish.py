"""Publishing a store for other teams: a verified, read-only copy with a manifest of sha256 hashes.

`publish_store(STORE, DEST)` verifies STORE (a store with any problem is refused), then copies into DEST (an fsspec
URL or a local directory, which must be empty) exactly what readers use: the schema and group files, each feature
set's provenance, failures and frozen-weights bundle, its served shards with their markers, and one index segment
built from those markers. Claims, memmap exports, temporaries, unmarked and replaced shards stay behind. Every file
is hashed while it is copied; `publishing.json` is written first and removed last, after `published.json`, the
manifest (relative path -> size and sha256), so a publish killed midway leaves a DEST that readers refuse as
incomplete and writers as read-only. Readers (store/published.py) fetch what they read into a local
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
from freezeframe.faults import fault_point
from freezeframe.store.backends import BACKENDS
from freezeframe.store.confine import open_regular
from freezeframe.store.files import dumps
from freezeframe.store.index import segment_from_markers
from freezeframe.store.layout import (FAILURES_FILE, FROZEN_NAME, INDEX_DIR, MARKER_SUFFIX, PROVENANCE_FILE,
                                      PUBLISHED_FILE, PUBLISHING_FILE, SCHEMA_FILE,
                                      SEGMENT_SUFFIX, SHARDS_DIR, ZARR_GROUP_FILE)
from freezeframe.store.markers import committed_shard_ids, read_markers, replacements, served_shards, shard_file
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
                  log: Callable[[str], None] | None = None,
                  arrays: list[str] | tuple[str, ...] | None = None) -> PublishReport:
    """Verify `src`, copy what readers use into `dest` and write its manifest last (see the module docstring);
    `arrays`: share only these arrays of each shard (Zarr shards; their markers and the index say so)."""
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
    fs.pipe_file(f"{root}/{PUBLISHING_FILE}", dumps({"source": str(store.path)}))  # removed last: until then,
    report = PublishReport(dest)  # readers see an incomplete published store, writers a read-only one
    manifest: dict[str, dict] = {}

    def put(relative: str, chunks: Iterator[bytes]) -> None:
        fault_point("publish.file")
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
        videos, shards = _publish_set(store.path / name, name, put, arrays)
        report.videos += videos
        if log:
            log(f"{name}: {videos} video{'s' * (videos != 1)} in {shards} shard{'s' * (shards != 1)} published")
    body = dumps({"format": PUBLISHED_FORMAT, "version": PUBLISHED_VERSION, "source": str(store.path),
                  "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "feature_sets": chosen,
                  "files": manifest}, compact=True)
    fs.pipe_file(f"{root}/{PUBLISHED_FILE}", body)
    fs.rm_file(f"{root}/{PUBLISHING_FILE}")
    report.manifest_sha256 = hashlib.sha256(body).hexdigest()
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        _make_read_only(Path(root))
    return report


def _publish_set(fs_dir: Path, name: str, put: Callable, arrays) -> tuple[int, int]:
    """Copy what readers use of one feature set through `put`; returns (videos, shards)."""
    shards_dir = fs_dir / SHARDS_DIR
    markers = read_markers(shards_dir, committed_shard_ids(shards_dir))
    served = served_shards(sorted(markers), replacements(markers))
    markers = {shard_id: _only_arrays(markers[shard_id], arrays, f"{name}/{SHARDS_DIR}/{shard_id}")
               for shard_id in served}
    segment = segment_from_markers(markers, served)[0]  # the published index is built from the markers alone
    put(f"{name}/{INDEX_DIR}/published{SEGMENT_SUFFIX}", iter([segment.to_bytes()]))
    files = [PROVENANCE_FILE, ZARR_GROUP_FILE, FAILURES_FILE, f"{SHARDS_DIR}/{ZARR_GROUP_FILE}"]
    files += [f"{FROZEN_NAME}{backend.extension}" for backend in BACKENDS.values()]
    for relative in files:
        for path in _tree(fs_dir / relative):
            put(f"{name}/{path.relative_to(fs_dir).as_posix()}", _blocks(path))
    for shard_id, marker in markers.items():
        marker_file = f"{SHARDS_DIR}/{shard_id}{MARKER_SUFFIX}"
        put(f"{name}/{marker_file}", iter([dumps(marker)]) if arrays else _blocks(fs_dir / marker_file))
        bundle = shards_dir / shard_file(shard_id, marker["format"])
        for path in _tree(bundle):
            inside = path.relative_to(bundle).as_posix() if path != bundle else ""
            if not arrays or _shared(inside, arrays):
                put(f"{name}/{path.relative_to(fs_dir).as_posix()}", _blocks(path))
    return segment.n, len(markers)


def _only_arrays(marker: dict, arrays, where: str) -> dict:
    """`marker` describing only `arrays` (all of them when None); a shard lacking one, or an HDF5 shard (one
    file, not split here), is a StoreError."""
    if not arrays:
        return marker
    missing = [array for array in arrays if array not in marker["arrays"]]
    if missing:
        raise StoreError(f"{where} has no array {missing[0]!r}; it has: {', '.join(sorted(marker['arrays']))}.")
    if marker["format"] != "zarr":
        raise StoreError(f"{where} is an HDF5 shard, which --arrays cannot split; convert the store to zarr first "
                         "(freezeframe convert) or publish every array.")
    return {**marker, "arrays": {array: marker["arrays"][array] for array in arrays}}


def _shared(inside: str, arrays) -> bool:
    """Whether a file of a Zarr bundle (its path inside the bundle) belongs to a shared array or to the groups
    that hold them."""
    if inside == ZARR_GROUP_FILE:
        return True
    for array in arrays:
        parts = array.split("/")
        groups = {"/".join(parts[:depth] + [ZARR_GROUP_FILE]) for depth in range(1, len(parts))}
        if inside.startswith(f"{array}/") or inside in groups:
            return True
    return False


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
