"""A store: a directory of named feature sets sharing one schema version."""

from __future__ import annotations

from pathlib import Path

from freezeframe.errors import StoreError
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.files import read_json
from freezeframe.store.layout import PROVENANCE_FILE, SCHEMA_FILE, SCHEMA_VERSION, TEMP_PREFIX
from freezeframe.store.location import store_path


def check_schema(path: Path) -> None:
    schema_path = path / SCHEMA_FILE
    if not schema_path.exists():
        raise StoreError(f"{path} is not a freezeframe store (no {SCHEMA_FILE}).")
    version = read_json(schema_path, kind=dict).get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path} has store schema version {version}; this freezeframe reads version {SCHEMA_VERSION}.")


class Store:
    """Read access to a store; `store[name]` is a `FeatureSet`."""

    def __init__(self, path: str | Path) -> None:
        self.path = store_path(path)
        if not self.path.is_dir():
            raise StoreError(f"store {self.path} does not exist.")
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
            self._open[name] = FeatureSet(self.path, name)
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


def open_store(path: str | Path) -> Store:
    """Open an existing store for reading: a local directory or an fsspec URL (s3://bucket/store, memory://...)."""
    return Store(path)
