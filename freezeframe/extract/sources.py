"""Inputs to extraction: video files, folders searched recursively, and list files (CSV or one path a line)."""

from __future__ import annotations

import contextlib
import gc
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from freezeframe.errors import InputError
from freezeframe.userfiles import csv_header, csv_rows, read_user_text

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv", ".gif"}
)
LIST_EXTENSIONS = frozenset({".csv", ".txt", ".lst", ".list"})
# what pathlib would change in a list line: absolute, empty or "." components, a trailing "/"
_NOT_PLAIN = re.compile(r"^\.?/|//|/\.(/|$)|/$|^\.$")


@dataclass(frozen=True)
class VideoSource:
    """One video to extract: its id (data, never used as a path) and where to read it."""

    video_id: str
    path: str


def _id_from(path: Path, root: Path | None) -> str:
    """Path relative to `root` (when inside it) without extension, with '/' separators."""
    rel = path
    if root is not None:
        try:
            rel = path.relative_to(root)
        except ValueError:
            rel = path
    return str(PurePosixPath(*rel.parts).with_suffix("")) if rel.suffix else str(PurePosixPath(*rel.parts))


def _scan_folder(folder: Path) -> list[VideoSource]:
    """Every entry with a video extension below `folder`; a folder named like a video is kept (and fails later)."""
    found: list[VideoSource] = []
    stack = [folder]
    while stack:
        directory = stack.pop()
        for entry in sorted(directory.iterdir()):
            if entry.suffix.lower() in VIDEO_EXTENSIONS:
                found.append(VideoSource(_id_from(entry, folder), str(entry)))
            elif entry.is_dir():
                stack.append(entry)
    return sorted(found, key=lambda s: s.video_id)


def _read_list(list_file: Path) -> list[VideoSource]:
    base = list_file.parent
    text = read_user_text(list_file, "an input list")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    if list_file.suffix.lower() == ".csv":
        text = "\n".join(line if line.strip() and not line.lstrip().startswith("#") else "" for line in
                         text.splitlines())  # comments blanked, so line numbers stay the file's
        if "path" not in csv_header(text, list_file):
            raise InputError(f"{list_file}: a CSV list needs a 'path' column (and optionally 'video_id').")
        out = []
        for line, row in csv_rows(text, list_file):
            row = {key: value.strip() for key, value in row.items() if key}
            if not row.get("path"):
                raise InputError(f"{list_file}:{line}: the row has no path.")
            raw = Path(row["path"])
            path = raw if raw.is_absolute() else base / raw
            out.append(VideoSource(row.get("video_id") or _id_from(raw, None), str(path)))
        return out
    out = []
    prefix = "" if str(base) == "." else str(base).rstrip("/") + "/"
    for line in lines:
        text = line.strip()
        if text and not _NOT_PLAIN.search(text):  # what pathlib gives, without building paths: ~1 us a line, not ~20
            name = text.rsplit("/", 1)[-1]
            dot = name.rfind(".")
            out.append(VideoSource(text[:len(text) - len(name) + dot] if 0 < dot < len(name) - 1 else text,
                                   prefix + text))
            continue
        raw = Path(text)
        path = raw if raw.is_absolute() else base / raw
        out.append(VideoSource(_id_from(raw, None) if not raw.is_absolute() else _id_from(raw, base), str(path)))
    return out


def collect_sources(inputs: Sequence[str | Path]) -> list[VideoSource]:
    """Expand inputs into video sources; duplicate ids are an error naming both paths, before any work."""
    if not inputs:
        raise InputError("no inputs given: pass video files, folders or list files.")
    sources: list[VideoSource] = []
    with _collector_paused():
        for item in inputs:
            path = Path(item)
            if path.is_dir():
                sources.extend(_scan_folder(path))
            elif path.is_file() and path.suffix.lower() in LIST_EXTENSIONS:
                sources.extend(_read_list(path))
            elif path.exists():
                sources.append(VideoSource(_id_from(path, path.parent), str(path)))
            else:
                raise InputError(f"input {item} does not exist.")
        check_unique(sources)
    return sources


@contextlib.contextmanager
def _collector_paused():
    """Python's cycle collector off while a list of a million sources is built: they hold no cycles, and its
    passes over every object made so far are half the time of reading such a list."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_unique(sources: Iterable[VideoSource]) -> None:
    seen: dict[str, str] = {}
    for source in sources:
        if source.video_id in seen:
            raise InputError(
                f"duplicate video id {source.video_id!r}: {seen[source.video_id]} and {source.path}; "
                "give them distinct ids with a CSV list (video_id,path)."
            )
        seen[source.video_id] = source.path
