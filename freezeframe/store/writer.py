"""Writing side of a feature set: provenance checked once, shards committed atomically, failures logged."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np

from freezeframe.errors import StoreError
from freezeframe.store import provenance as prov
from freezeframe.store import schema
from freezeframe.store.claims import process_alive
from freezeframe.store.backends import BACKENDS, check_compression, get_backend
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.files import append_jsonl, create_json_once, fsync_dir, read_json, read_jsonl
from freezeframe.store.index import INDEX_EVERY, VideoIndex, add_to_index, write_index
from freezeframe.store.layout import (
    FAILURES_FILE, FROZEN_NAME, PROVENANCE_FILE, SCHEMA_FILE, SCHEMA_VERSION, SHARDS_DIR, TEMP_PREFIX, ZARR_GROUP_FILE,
    temp_owner_tag,
)
from freezeframe.store.location import is_remote, remove_tree
from freezeframe.store.location import store_path as store_path_of
from freezeframe.store.shard import ShardWriter, _fsync_tree
from freezeframe.store.store import check_schema, check_writable


class FeatureSetWriter:
    """Opens (or creates) a feature set for appending; refuses provenance that differs from the stored one."""

    def __init__(
        self,
        store_path: str | Path,
        name: str,
        provenance: dict,
        *,
        format: str = "zarr",
        compression: str = "none",
        frozen: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.store_path = store_path_of(store_path)
        self.name = name
        self.backend = get_backend(format)
        # a storage detail of each shard (recorded in its marker), deliberately not part of the provenance
        self.compression = check_compression(compression)
        self.backend.check_compression(compression)
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise StoreError(f"invalid feature set name {name!r}: use letters, digits, '-', '_' and '.'.")
        check_writable(self.store_path)
        self.store_path.mkdir(parents=True, exist_ok=True)
        create_json_once(self.store_path / SCHEMA_FILE, {"format": "freezeframe", "schema_version": SCHEMA_VERSION})
        check_schema(self.store_path)
        self.path = self.store_path / name
        self.shards_dir = self.path / SHARDS_DIR
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        self.provenance = self._claim_provenance(provenance)
        self.row_axis = schema.row_axis(self.provenance)
        schema.describe_store(self.store_path)
        schema.describe_shards_dir(self.path)
        if not (self.path / ZARR_GROUP_FILE).exists():
            schema.describe_feature_set(self.path, self.name, self.provenance, {}, [], 0)
        if frozen:
            self._write_frozen_once(frozen)
        self.remove_stale_temps()
        self.marker_extra = {"provenance_sha256": prov.provenance_sha256(self.provenance),
                             **frozen_hashes(self.path)}
        self._unindexed: dict[str, dict] = {}  # markers this writer committed and has not indexed yet

    def _claim_provenance(self, provenance: dict) -> dict:
        path = self.path / PROVENANCE_FILE
        if create_json_once(path, provenance):
            return provenance
        stored = read_json(path)
        prov.refuse_append(self.name, self.store_path, prov.differences(prov.identity(stored), prov.identity(provenance)))
        return stored

    def _write_frozen_once(self, frozen: dict[str, np.ndarray]) -> None:
        # one frozen bundle per feature set, in whichever format wrote it first
        if any((self.path / f"{FROZEN_NAME}{backend.extension}").exists() for backend in BACKENDS.values()):
            return
        final = self.path / f"{FROZEN_NAME}{self.backend.extension}"
        if is_remote(final):  # no rename: written in place; a concurrent identical bundle is harmless
            self._write_bundle(final, frozen)
            return
        temp = self.path / f"{TEMP_PREFIX}{temp_owner_tag()}-{final.name}"
        self._write_bundle(temp, frozen)
        _fsync_tree(temp)
        try:
            if temp.is_dir():
                temp.rename(final)  # fails if another writer's directory is already there
            else:
                os.link(temp, final)  # a file rename would silently replace another writer's bundle
        except OSError:
            pass  # another writer was first; theirs is identical
        remove_tree(temp)  # the link's other name, or the loser of the race (gone after a rename)
        fsync_dir(self.path)

    def _write_bundle(self, path, arrays: dict[str, np.ndarray]) -> None:
        bundle = self.backend.writer(path, row_axis=None)  # frozen weights: no rows
        for key, value in sorted(arrays.items()):
            bundle.append(key, np.ascontiguousarray(value))
        bundle.close()

    def remove_stale_temps(self) -> None:
        """Delete temporary shards left by crashed writers on this host (their pid is gone)."""
        if is_remote(self.path):
            return  # remote writers use no temporary names
        host = socket.gethostname()
        for directory in (self.path, self.shards_dir):
            for temp in directory.glob(f"{TEMP_PREFIX}{host}.*"):
                pid_text = temp.name[len(TEMP_PREFIX) + len(host) + 1:].split("-", 1)[0]
                if pid_text.isdigit() and not process_alive(int(pid_text)):
                    remove_tree(temp)

    def committed_ids(self) -> set[str]:
        return set(FeatureSet(self.store_path, self.name).video_ids())

    def new_shard(self) -> ShardWriter:
        return ShardWriter(self.shards_dir, self.backend, compression=self.compression,
                           marker_extra=self.marker_extra, row_axis=self.row_axis, on_commit=self._committed)

    def _committed(self, marker: dict) -> None:
        """Index this writer's commits every INDEX_EVERY shards (readers read the markers of the rest)."""
        self._unindexed[marker["shard_id"]] = marker
        if len(self._unindexed) >= INDEX_EVERY:
            add_to_index(self.path, self._unindexed)
            self._unindexed = {}

    @property
    def failures_path(self) -> Path:
        return self.path / FAILURES_FILE

    def record_failure(self, video_id: str, path: str, reason: str) -> None:
        """Append a failure, unless the file already records this video failing from this path for this reason
        (a rerun retries failed videos: the same failure again is not a new line)."""
        if any(record.get("video_id") == video_id and record.get("path") == path and record.get("reason") == reason
               for record in read_jsonl(self.failures_path)):
            return
        append_jsonl(self.failures_path, {"video_id": video_id, "path": path, "reason": reason, "time": time.time()})

    def write_index(self) -> VideoIndex:
        """Merge the video index into one segment covering every committed shard, and rewrite the feature set's
        self-description with it."""
        index = write_index(self.path)
        self._unindexed = {}
        schema.describe_feature_set(self.path, self.name, self.provenance, index.arrays(), index.shard_ids, len(index))
        return index


def frozen_hashes(fs_path) -> dict:
    """{"frozen_sha256": {array: sha256}} of the feature set's frozen-weights bundle (a few MB), or {} without one."""
    from freezeframe.store.shard import array_sha256

    for backend in BACKENDS.values():
        path = fs_path / f"{FROZEN_NAME}{backend.extension}"
        if path.exists():
            reader = backend.reader(path)
            try:
                return {"frozen_sha256": {name: array_sha256(reader, name) for name in reader.array_names()}}
            finally:
                reader.close()
    return {}

