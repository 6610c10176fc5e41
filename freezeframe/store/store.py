"""A store: a directory of named feature sets sharing one schema version."""

from __future__ import annotations

from pathlib import Path

from freezeframe.errors import StoreError
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.files import read_json
from freezeframe.store.layout import (MIRROR_FILE, PROVENANCE_FILE, PUBLISHED_FILE, PUBLISHING_FILE, SCHEMA_FILE,
                                      SCHEMA_VERSION, TEMP_PREFIX)
from freezeframe.store.location import StorePath, store_path


def check_schema(path: Path) -> None:
    schema_path = path / SCHEMA_FILE
    if not schema_path.exists():
        raise StoreError(f"{path} is not a freezeframe store (no {SCHEMA_FILE}).")
    version = read_json(schema_path, kind=dict).get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path} has store schema version {version}; this freezeframe reads version {SCHEMA_VERSION}.")


def check_writable(path: StorePath) -> None:
    """Refuse to change a published store, or the local cache of one."""
    if any((path / name).exists() for name in (PUBLISHED_FILE, PUBLISHING_FILE, MIRROR_FILE)):
        raise StoreError(f"{path} is a published store (or the local cache of one), which is read-only; write to "
                         "a store of your own (freezeframe convert copies one).")


class Store:
    """Read access to a store; `store[name]` is a `FeatureSet`.

    A published store (freezeframe publish) is read through a local cache of what was read, each file checked
    against its manifest (store/published.py); `cache_dir` says where (default: $FREEZEFRAME_CACHE_DIR, else
    ~/.cache/freezeframe).
    """

    def __init__(self, path: str | Path, cache_dir: str | Path | None = None) -> None:
        from freezeframe.store.published import PublishedStore, is_published

        self.path = store_path(path)
        if not self.path.is_dir():
            raise StoreError(f"store {self.path} does not exist.")
        self.published = PublishedStore(str(path), cache_dir) if is_published(self.path) else None
        if self.published is not None:
            self.path = self.published.mirror
        check_schema(self.path)
        self._open: dict[str, FeatureSet] = {}

    def names(self) -> list[str]:
        # a set being removed sits under a temporary name first: no longer listed
        return sorted(p.name for p in self.path.iterdir()
                      if not p.name.startswith(TEMP_PREFIX) and (p / PROVENANCE_FILE).is_file())

    def __getitem__(self, name: str) -> FeatureSet:
        if name not in self._open:
            if name not in self.names():
                raise KeyError(f"store {self.path} has no feature set {name!r}; it has: {', '.join(self.names()) or 'none'}")
            self._open[name] = FeatureSet(self.path, name, self.published)
        return self._open[name]

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def __iter__(self):
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, feature_sets={self.names()})"


def open_feature_set(store: str | Path, name: str) -> FeatureSet:
    """Feature set `name` of a store, or a one-line error naming the sets the store has."""
    try:
        return Store(store)[name]
    except KeyError as exc:
        raise StoreError(f"{exc.args[0]}.") from None


def open_store(path: str | Path, cache_dir: str | Path | None = None) -> Store:
    """Open an existing store for reading: a local directory or an fsspec URL (s3://bucket/store, memory://...);
    a published store is read through a local cache in `cache_dir` (see `Store`)."""
    return Store(path, cache_dir)
