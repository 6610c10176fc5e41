"""Size limits on the metadata and list files freezeframe parses, so that a wrong or hostile file fails with one
sentence instead of exhausting memory.

Single JSON documents (store schema, provenance, commit markers, claims, run.json) may hold up to 64 MiB; files
that grow with the corpus (index.json, failures.jsonl, metrics.jsonl, input lists, label and caption files) up
to 2 GiB. `FREEZEFRAME_MAX_FILE_MB=N` raises (or lowers) both limits to N MiB. Files are read in blocks, so
a limit is never allocated up front.

One read of a store array (one video's frames, one block of a check) may return at most 4 GiB;
`FREEZEFRAME_MAX_READ_MB=N` sets that cap. Shapes are checked against the commit marker and the cap before any
buffer is allocated, so a tiny hostile file cannot make a read allocate gigabytes.
"""

from __future__ import annotations

import os
from pathlib import Path

from freezeframe.errors import FreezeframeError

MIB = 1024 * 1024
DOCUMENT_BYTES = 64 * MIB
LIST_BYTES = 2048 * MIB
READ_BYTES = 4096 * MIB
READ_BLOCK = MIB
LINE_BYTES = 2 * READ_BLOCK  # one line of a label, caption, class or list file (csv's own field limit is 128 KiB)


class OversizeFileError(FreezeframeError, ValueError):
    """A metadata or list file larger than freezeframe will parse (a ValueError: a damaged cache is rebuilt)."""


class OversizeReadError(FreezeframeError, ValueError):
    """A read of a store array larger than the per-read cap."""


def limit(default: int, variable: str = "FREEZEFRAME_MAX_FILE_MB") -> int:
    """`default`, unless the environment variable (MiB) sets every limit of its kind."""
    override = os.environ.get(variable, "")
    return int(float(override) * MIB) if override else default


def read_cap() -> int:
    """Bytes one array read may return (FREEZEFRAME_MAX_READ_MB)."""
    return limit(READ_BYTES, "FREEZEFRAME_MAX_READ_MB")


def check_read(nbytes: int, where: object) -> None:
    """Refuse a read of `nbytes` past the per-read cap, before anything is allocated."""
    cap = read_cap()
    if nbytes > cap:
        raise OversizeReadError(f"{where}: a read of {nbytes / MIB:.0f} MiB is over the {cap / MIB:g} MiB cap "
                                "on one read; the store declares more data than expected, or raise the cap "
                                "with FREEZEFRAME_MAX_READ_MB=N.")


def _too_large(path, max_bytes: int, what: str) -> OversizeFileError:
    size = f"{max_bytes / MIB:g} MiB" if max_bytes >= MIB else f"{max_bytes} bytes"
    return OversizeFileError(
        f"{path} is larger than {size}, the limit for {what}; check that it is the right file, "
        "split it (input lists), or raise the limit with FREEZEFRAME_MAX_FILE_MB=N.")


def read_limited(path, max_bytes: int, what: str, max_line: int | None = None) -> bytes:
    """The bytes of `path` (a local Path or a UPath), or an OversizeFileError past `max_bytes`; with `max_line`
    (at least READ_BLOCK), also one the moment a line passes `max_line` bytes, before the rest is read."""
    max_bytes = limit(max_bytes)
    parts, total, line, lines = [], 0, 0, 1  # line: bytes of the line being read; lines: its number
    with path.open("rb") as handle:
        while total <= max_bytes:  # in blocks: an 8-byte file never allocates the limit
            part = handle.read(min(READ_BLOCK, max_bytes + 1 - total))
            if not part:
                break
            if max_line is not None:  # a line inside one block is shorter than a block: check the spanning ones
                newline = part.find(b"\n")
                if (line + len(part) if newline < 0 else line + newline) > max_line:
                    raise OversizeFileError(f"{path}:{lines}: a line longer than {max_line // 1024} KiB, the limit "
                                            f"for a line of {what}; check that it is the right file.")
                lines += part.count(b"\n")
                line = line + len(part) if newline < 0 else len(part) - part.rfind(b"\n") - 1
            parts.append(part)
            total += len(part)
    if total > max_bytes:
        raise _too_large(path, max_bytes, what)
    return b"".join(parts)


def check_size(path: str | Path, max_bytes: int, what: str) -> None:
    """Refuse a local file past `max_bytes` before a reader streams through it."""
    max_bytes = limit(max_bytes)
    if os.stat(path).st_size > max_bytes:
        raise _too_large(path, max_bytes, what)
