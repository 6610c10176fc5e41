"""Small durable file operations: atomic JSON writes, create-once files, fsync of directories.

On a remote store (an fsspec URL) an object PUT is already all-or-nothing, so a write needs no temporary
name; create-once checks and appends are read-then-write there (one writer per feature set on object stores).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from freezeframe.faults import fault_point
from freezeframe.limits import DOCUMENT_BYTES, LIST_BYTES, read_limited
from freezeframe.store.layout import TEMP_PREFIX, temp_owner_tag
from freezeframe.store.location import StorePath, is_remote


def fsync_dir(path: StorePath) -> None:
    """Make a rename or a new entry in `path` durable (no-op where directories cannot be opened)."""
    if is_remote(path):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f"{TEMP_PREFIX}{temp_owner_tag()}-{path.name}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_json_atomic(path: StorePath, obj: Any) -> None:
    """Write JSON so that a reader sees either the old file or the whole new one."""
    if is_remote(path):
        path.write_bytes(dumps(obj))
        return
    tmp = _write_temp(path, dumps(obj))
    fault_point("json.replace")
    os.replace(tmp, path)
    fsync_dir(path.parent)


def create_json_once(path: StorePath, obj: Any) -> bool:
    """Create `path` with `obj` unless it exists; returns False when another writer was first."""
    if is_remote(path):
        if path.exists():
            return False
        path.write_bytes(dumps(obj))
        return True
    tmp = _write_temp(path, dumps(obj))
    try:
        os.link(tmp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return created


def read_json(path: StorePath, max_bytes: int = DOCUMENT_BYTES) -> Any:
    """Parse a JSON file no larger than `max_bytes` (see freezeframe.limits)."""
    return json.loads(read_limited(path, max_bytes, "a JSON metadata file"))


def append_jsonl(path: StorePath, record: dict) -> None:
    """Append one JSON line in a single write, so concurrent appenders never interleave a line."""
    line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    if is_remote(path):  # objects cannot be appended to: rewrite the whole (small) file
        path.write_bytes((path.read_bytes() if path.exists() else b"") + line)
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: StorePath) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in read_limited(path, LIST_BYTES, "a JSON-lines file").decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash: skip it, keep the rest
    return records
