"""Keeping reads and writes inside a store: names from metadata are plain file names, store files are opened
without following symbolic links and only when they are regular files.

A store may come from a stranger (see DESIGN.md, "Threat model"). Names in markers, the index and the memmap
index are data to check, never paths to follow; a symlink or a FIFO inside a store is refused, so no read
leaves the store's directory and none can block.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from freezeframe.errors import StoreError

# no symlink is followed at the last component; a FIFO opens without waiting for a writer (then is refused)
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
WRITE_FLAGS = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class UnsafeStoreError(StoreError, ValueError):
    """A store entry that would lead a read or write outside the store, or that is not a regular file."""


def plain_name(name: object, what: str, where: object) -> str:
    """`name` when it is one plain path component (no '/', '\\', NUL, '.', '..'), else an UnsafeStoreError."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\0" in name):
        raise UnsafeStoreError(f"{where}: {what} {name!r} is not a plain file name inside the store; "
                               "the store is damaged or was edited, so it is not read.")
    return name


def open_regular(path: str | os.PathLike, where: object = None) -> int:
    """A read-only descriptor of `path`, refused (UnsafeStoreError) when it is a symlink or not a regular file."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError as exc:
        if _is_symlink(path):
            raise UnsafeStoreError(f"{where or path} is a symbolic link; store files are never followed out "
                                   "of the store.") from None
        raise exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnsafeStoreError(f"{where or path} is not a regular file (a {_kind(mode)}); it is not read.")
    return fd


def check_regular(path: str | os.PathLike, where: object = None) -> None:
    """Refuse `path` unless it is a regular file itself (not a symlink to one)."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise UnsafeStoreError(f"{where or path} is not a regular file (a {_kind(mode)}); it is not read.")


def check_tree(root: str | os.PathLike, where: object = None) -> int:
    """Refuse a bundle (a file, or a directory tree) holding anything but directories and regular files.

    Returns the bytes its files take on disk. One `lstat` per entry; the bundle's root itself may not be a link.
    """
    root = Path(root)
    mode = os.lstat(root).st_mode
    if stat.S_ISREG(mode):
        return os.lstat(root).st_size
    if not stat.S_ISDIR(mode):
        raise UnsafeStoreError(f"{where or root} is not a regular file or directory (a {_kind(mode)}); "
                               "it is not read.")
    total = 0
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    stack.append(Path(entry.path))
                elif stat.S_ISREG(info.st_mode):
                    total += info.st_size
                else:
                    raise UnsafeStoreError(f"{where or root}: {Path(entry.path).relative_to(root)} is a "
                                           f"{_kind(info.st_mode)}, not a regular file; the bundle is not read.")
    return total


def read_regular(path: str | os.PathLike, max_bytes: int, where: object = None) -> bytes | None:
    """The bytes of a regular store file, read incrementally; None when it is larger than `max_bytes`."""
    fd = open_regular(path, where)
    try:
        return read_fd(fd, max_bytes)
    finally:
        os.close(fd)


def read_fd(fd: int, max_bytes: int, block: int = 1 << 20) -> bytes | None:
    """Read a descriptor to its end in blocks (never allocating `max_bytes`); None past `max_bytes`."""
    parts, total = [], 0
    while True:
        part = os.read(fd, min(block, max_bytes + 1 - total))
        if not part:
            return b"".join(parts)
        parts.append(part)
        total += len(part)
        if total > max_bytes:
            return None


def _is_symlink(path) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "special file"
