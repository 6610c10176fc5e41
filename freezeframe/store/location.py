"""Where a store lives: a local directory (`pathlib.Path`) or an fsspec URL (`s3://`, `gs://`, `memory://`, ...).

Remote locations are `upath.UPath`s, which speak the pathlib API over fsspec; the few operations that
object stores lack (rename, hard links, fsync, append) are branched on `is_remote` where they are used.
Credentials and endpoints come from the filesystem's usual settings (e.g. AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID) or fsspec's `FSSPEC_<PROTOCOL>_<OPTION>` variables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from freezeframe.errors import StoreError

StorePath = Union[Path, "UPath"]  # noqa: F821 - upath is imported lazily


def is_url(location: str | os.PathLike) -> bool:
    """True for `protocol://...` strings other than plain local `file://` paths."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def store_path(location: str | os.PathLike) -> StorePath:
    """A local `Path`, or a `UPath` for an fsspec URL; listings are never cached, so new shards are seen at once."""
    if not isinstance(location, (str, os.PathLike)) and hasattr(location, "fs"):
        return location  # already a UPath
    if not is_url(location):
        return Path(str(location)[len("file://"):] if str(location).startswith("file://") else location)
    try:
        from upath import UPath
    except ImportError:
        raise StoreError(f"store {location} is a URL; install universal_pathlib (pip install universal_pathlib) "
                         "and the fsspec filesystem for it (e.g. s3fs).") from None
    try:
        path = UPath(str(location).rstrip("/"), use_listings_cache=False)
        path.fs  # noqa: B018 - builds the filesystem now, so a missing implementation fails here
    except (ImportError, ValueError) as exc:
        raise StoreError(f"cannot open store {location}: {exc}") from None
    return path


def is_remote(path: StorePath) -> bool:
    """True for locations without a local filesystem (no rename, links, fsync or append)."""
    return not isinstance(path, Path)


def remove_tree(path: StorePath) -> None:
    """Delete a file or a directory tree; a missing one is fine."""
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
        return
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def require_local(path: StorePath, what: str) -> Path:
    """`path` itself when it is local; a clear error naming `what` needs a local store otherwise."""
    if is_remote(path):
        raise StoreError(f"{what} needs a store on a local filesystem, not {path}; copy it locally first "
                         "(freezeframe convert URL LOCAL_DIR).")
    return path
