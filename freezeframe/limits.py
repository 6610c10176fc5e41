"""Size limits on the metadata and list files freezeframe parses, so that a wrong or hostile file fails with one
sentence instead of exhausting memory.

Single JSON documents (store schema, provenance, commit markers, claims, run.json) may hold up to 64 MiB; files
that grow with the corpus (index.json, failures.jsonl, metrics.jsonl, input lists, label and caption files) up
to 2 GiB. `FREEZEFRAME_MAX_FILE_MB=N` raises (or lowers) both limits to N MiB.
"""

from __future__ import annotations

import os
from pathlib import Path

from freezeframe.errors import FreezeframeError

MIB = 1024 * 1024
DOCUMENT_BYTES = 64 * MIB
LIST_BYTES = 2048 * MIB


class OversizeFileError(FreezeframeError, ValueError):
    """A metadata or list file larger than freezeframe will parse (a ValueError: a damaged cache is rebuilt)."""


def limit(default: int) -> int:
    """`default`, unless FREEZEFRAME_MAX_FILE_MB sets every limit."""
    override = os.environ.get("FREEZEFRAME_MAX_FILE_MB", "")
    return int(float(override) * MIB) if override else default


def _too_large(path, max_bytes: int, what: str) -> OversizeFileError:
    size = f"{max_bytes / MIB:g} MiB" if max_bytes >= MIB else f"{max_bytes} bytes"
    return OversizeFileError(
        f"{path} is larger than {size}, the limit for {what}; check that it is the right file, "
        "split it (input lists), or raise the limit with FREEZEFRAME_MAX_FILE_MB=N.")


def read_limited(path, max_bytes: int, what: str) -> bytes:
    """The bytes of `path` (a local Path or a UPath), or an OversizeFileError past `max_bytes`."""
    max_bytes = limit(max_bytes)
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(path, max_bytes, what)
    return data


def check_size(path: str | Path, max_bytes: int, what: str) -> None:
    """Refuse a local file past `max_bytes` before a reader streams through it."""
    max_bytes = limit(max_bytes)
    if os.stat(path).st_size > max_bytes:
        raise _too_large(path, max_bytes, what)
