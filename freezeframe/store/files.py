"""Small durable file operations: atomic JSON writes, create-once files, fsync of directories.

On a remote store (an fsspec URL) an object PUT is already all-or-nothing, so a write needs no temporary
name; create-once checks and appends are read-then-write there (one writer per feature set on object stores).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable

from freezeframe.errors import StoreError
from freezeframe.faults import fault_point
from freezeframe.limits import DOCUMENT_BYTES, LIST_BYTES, _too_large, limit, read_limited
from freezeframe.store.confine import WRITE_FLAGS, read_regular
from freezeframe.store.layout import TEMP_PREFIX, temp_owner_tag
from freezeframe.store.location import StorePath, is_remote


class MalformedFileError(StoreError, ValueError):
    """A store file that cannot be parsed (bad JSON, bad UTF-8, nested too deeply, wrong type)."""


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


def _write_temp(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """`write` a handle to a new temporary beside `path`, flushed and fsynced; returns the temporary's path."""
    tmp = path.with_name(f"{TEMP_PREFIX}{temp_owner_tag()}-{path.name}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover of a crashed writer with this pid (or a planted link): never written through
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | WRITE_FLAGS, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a local file so that a reader sees either the old file or the whole new one, durably: a temporary
    name, fsync, rename, fsync of the directory. (Checkpoints use it as well as store metadata.)"""
    tmp = _write_temp(path, write)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def dumps(obj: Any, compact: bool = False) -> bytes:
    """UTF-8 JSON with sorted keys; indented for people, or `compact` on one line (json's C encoder: ~10x faster
    on a commit marker of 64 videos)."""
    if compact:
        return (json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_json_atomic(path: StorePath, obj: Any, compact: bool = False) -> None:
    """Write JSON so that a reader sees either the old file or the whole new one."""
    write_bytes_atomic(path, dumps(obj, compact), fault="json.replace")


def write_bytes_atomic(path: StorePath, data: bytes, fault: str | None = None) -> None:
    """Write a store file so that a reader sees either the old file or the whole new one, durably (`fault`: the
    fault-injection point between the temporary's fsync and its rename)."""
    if is_remote(path):
        path.write_bytes(data)
        return
    tmp = _write_temp(path, lambda handle: handle.write(data))
    if fault:
        fault_point(fault)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def create_json_once(path: StorePath, obj: Any) -> bool:
    """Create `path` with `obj` unless it exists; returns False when another writer was first."""
    if is_remote(path):
        if path.exists():
            return False
        path.write_bytes(dumps(obj))
        return True
    tmp = _write_temp(path, lambda handle: handle.write(dumps(obj)))
    try:
        os.link(tmp, path)
        created = True
    except FileExistsError:
        created = False
    finally:
        os.unlink(tmp)
    fsync_dir(path.parent)
    return created


def read_store_bytes(path: StorePath, max_bytes: int, what: str) -> bytes:
    """A store file's bytes: a local one only when it is a regular file (no symlink, no FIFO), read in blocks."""
    if is_remote(path):
        return read_limited(path, max_bytes, what)
    max_bytes = limit(max_bytes)
    data = read_regular(path, max_bytes)
    if data is None:
        raise _too_large(path, max_bytes, what)
    return data


def parse_json(data: bytes, where: object) -> Any:
    """JSON from bytes, or one MalformedFileError naming `where` (and the line) for any malformed document."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedFileError(f"{where} is not UTF-8 text (byte {exc.start}); the file is damaged.") from None
    except json.JSONDecodeError as exc:
        raise MalformedFileError(f"{where}:{exc.lineno}: not valid JSON ({exc.msg}).") from None
    except RecursionError:  # the parser's depth limit: a document nested thousands deep
        raise MalformedFileError(f"{where}: JSON nested too deeply to be a freezeframe file.") from None


def read_json(path: StorePath, max_bytes: int = DOCUMENT_BYTES, kind: type | None = None) -> Any:
    """Parse a JSON store file no larger than `max_bytes` (see freezeframe.limits); `kind` its top-level type."""
    value = parse_json(read_store_bytes(path, max_bytes, "a JSON metadata file"), path)
    if kind is not None and not isinstance(value, kind):
        raise MalformedFileError(f"{path}: expected a JSON {'object' if kind is dict else kind.__name__}, "
                                 f"found {type(value).__name__}.")
    return value


def append_jsonl(path: StorePath, record: dict) -> None:
    """Append one JSON line in a single write, so concurrent appenders never interleave a line."""
    line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    if is_remote(path):  # objects cannot be appended to: rewrite the whole (small) file
        path.write_bytes((path.read_bytes() if path.exists() else b"") + line)
        return
    try:  # never through a symlink (one planted in a store would append outside it)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | WRITE_FLAGS, 0o644)
    except OSError as exc:
        if os.path.islink(path):
            raise StoreError(f"{path} is a symbolic link; freezeframe never writes through one.") from None
        raise exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StoreError(f"{path} is not a regular file; freezeframe does not append to it.")
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: StorePath) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for line in read_store_bytes(path, LIST_BYTES, "a JSON-lines file").decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a line cut by a crash (or garbage): skip it, keep the rest
        if isinstance(record, dict):
            records.append(record)
    return records
