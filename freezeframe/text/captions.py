"""Captions files (JSONL or CSV) read into `Caption` records, with errors that name the file and line."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from freezeframe.errors import InputError
from freezeframe.userfiles import csv_header, csv_rows, read_user_text

FIELDS = ("video_id", "caption_id", "start", "end", "text")


@dataclass(frozen=True)
class Caption:
    """One caption of one video; `start`/`end` are seconds into the video, or None for the whole video."""

    video_id: str
    caption_id: str
    text: str
    start: float | None = None
    end: float | None = None


def read_captions(path: str | Path) -> list[Caption]:
    """Read a `.jsonl` (one object a line) or `.csv` (header row) captions file.

    Fields: video_id and text (required), caption_id (default `<video_id>#<text hash>`, see `default_caption_id`),
    start and end in seconds (optional). Caption ids must be unique.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"captions file {path} does not exist")
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path, read_user_text(path, "a captions file"))
    elif path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        rows = _jsonl_rows(path, read_user_text(path, "a captions file"))
    else:
        raise InputError(f"captions file {path}: expected a .jsonl or .csv file")
    captions: list[Caption] = []
    seen: dict[str, int] = {}
    per_video: dict[tuple[str, str], int] = {}
    for line, row in rows:
        caption = _caption(row, per_video, f"{path}:{line}")
        if caption.caption_id in seen:
            raise InputError(f"{path}:{line}: caption_id {caption.caption_id!r} already used on line "
                             f"{seen[caption.caption_id]}")
        seen[caption.caption_id] = line
        captions.append(caption)
    if not captions:
        raise InputError(f"captions file {path} holds no captions")
    return captions


def _jsonl_rows(path: Path, content: str):
    for line, text in enumerate(content.splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{line}: not a JSON object ({exc.msg})") from None
        except RecursionError:
            raise InputError(f"{path}:{line}: JSON nested too deeply") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{line}: expected a JSON object, got {type(row).__name__}")
        yield line, row


def _csv_rows(path: Path, content: str):
    header = csv_header(content, path)
    missing = {"video_id", "text"} - set(header)
    if missing:
        raise InputError(f"{path}: the header row needs columns {', '.join(sorted(missing))} "
                         f"(has {', '.join(header) or 'none'})")
    for line, row in csv_rows(content, path):
        yield line, {key: value for key, value in row.items() if value != ""}


def _caption(row: dict, per_video: dict[str, int], where: str) -> Caption:
    unknown = set(row) - set(FIELDS)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; expected {', '.join(FIELDS)}")
    video_id = row.get("video_id")
    text = row.get("text")
    if not isinstance(video_id, str) or not video_id:
        raise InputError(f"{where}: video_id is missing")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: text is missing or empty")
    if "caption_id" in row:
        caption_id = str(row["caption_id"])
    else:
        repeat = per_video.get((video_id, text), 0)  # the same text twice for one video: #hash, #hash.1, ...
        per_video[(video_id, text)] = repeat + 1
        caption_id = default_caption_id(video_id, text, repeat)
    start, end = _seconds(row.get("start"), "start", where), _seconds(row.get("end"), "end", where)
    if start is not None and end is not None and end <= start:
        raise InputError(f"{where}: end ({end}) must be after start ({start})")
    return Caption(video_id=video_id, caption_id=caption_id, text=text, start=start, end=end)


def text_sha256(text: str) -> str:
    """sha256 of a caption's exact text (UTF-8): recorded with its stored rows, so changed text is re-extracted."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_caption_id(video_id: str, text: str, repeat: int = 0) -> str:
    """`<video_id>#<first 12 hex of the text's sha256>` (`.<n>` for the n-th repeat of that text for that video).

    Derived from the text, not the line number, so the same caption gets the same id in every file (train and test
    files of the same videos never collide) and a caption whose text changes gets a new id.
    """
    return f"{video_id}#{text_sha256(text)[:12]}" + (f".{repeat}" if repeat else "")


def _seconds(value, name: str, where: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InputError(f"{where}: {name} must be a non-negative number of seconds, got {value!r}")
    return seconds
