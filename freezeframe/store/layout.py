"""Names and paths of everything inside a store directory (one place, so readers and writers agree)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

SCHEMA_FILE = "freezeframe.json"
SCHEMA_VERSION = 1
PROVENANCE_FILE = "provenance.json"
ZARR_GROUP_FILE = "zarr.json"  # makes the store root, a feature set and its shards/ Zarr groups (store/schema.py)
SHARDS_DIR = "shards"
INDEX_DIR = "index"  # the video index: segment files (store/segment.py)
SEGMENT_SUFFIX = ".idx"
LEGACY_INDEX_FILE = "index.json"  # the JSON index of stores written before segments; removed when indexed again
FAILURES_FILE = "failures.jsonl"
FROZEN_NAME = "frozen"
MARKER_SUFFIX = ".done.json"
TEMP_PREFIX = ".tmp-"
PUBLISHED_FILE = "published.json"  # the manifest of a published store (store/tools/publish.py), written last
PUBLISHING_FILE = "publishing.json"  # written first by publish, removed last: a destination holding it is incomplete
MIRROR_FILE = "published-mirror.json"  # marks a local cache of a published store (store/published.py)
REPLACES_KEY = "replaces"  # marker field: shard ids this shard supersedes (a removal kept the rest of their videos)


def new_shard_id() -> str:
    """A time-ordered, collision-free shard id that never contains a video id."""
    return f"{time.time_ns() // 1_000_000:013d}-{secrets.token_hex(6)}"


def temp_owner_tag() -> str:
    """Host and pid of the writing process, embedded in temporary names to find stale ones."""
    return f"{socket.gethostname()}.{os.getpid()}"


def marker_path(shards: Path, shard_id: str) -> Path:
    return shards / f"{shard_id}{MARKER_SUFFIX}"


def shard_id_of_marker(marker: Path) -> str:
    return marker.name[: -len(MARKER_SUFFIX)]
