"""Reading the text files a user hands freezeframe (input lists, label, caption, class files): size-limited,
UTF-8 only, CSV errors with the file and line, so that a Latin-1 or UTF-16 file, a short row or a huge field is
one sentence instead of a traceback. Reading stops at the first line longer than LINE_BYTES, so a file of one
huge field costs at most that much memory before its error.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterator

from freezeframe.errors import InputError
from freezeframe.limits import LINE_BYTES, LIST_BYTES, read_limited

_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


def read_user_text(path: str | Path, what: str, max_bytes: int = LIST_BYTES) -> str:
    """The text of a UTF-8 file (a BOM is dropped); other encodings are an InputError naming the file and line."""
    path = Path(path)
    try:
        data = read_limited(path, max_bytes, what, max_line=LINE_BYTES)
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a folder, not a file.") from None
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist.") from None
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            raise InputError(f"{path} is {encoding} text; save {what} as UTF-8.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save {what} as UTF-8 "
                         "(e.g. iconv -f latin1 -t utf-8).") from None


def csv_rows(text: str, path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV whose first non-blank row is the header; a malformed row (a field past csv's
    limit, a stray quote) is an InputError naming the file and line. A short row lacks its last columns."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = None
    try:
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [name.strip() for name in row]
                continue
            yield reader.line_num, {key: value for key, value in zip(header, row) if key}
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: malformed CSV ({exc}).") from None


def csv_header(text: str, path: str | Path) -> list[str]:
    """The stripped column names of a CSV's first non-blank row."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            if row and any(cell.strip() for cell in row):
                return [name.strip() for name in row]
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: malformed CSV header ({exc}).") from None
    return []


def read_labels(path: str | Path) -> list[tuple[str, str]]:
    """A CSV of `video_id,label` (header required, UTF-8); labels are strings. Errors name the file and line."""
    text = read_user_text(path, "a label file")
    if not {"video_id", "label"} <= set(csv_header(text, path)):
        raise InputError(f"{path}: a label file needs the columns video_id,label.")
    labels = []
    for line, row in csv_rows(text, path):
        if not row.get("video_id") or not row.get("label", "").strip():
            raise InputError(f"{path}:{line}: a row needs both a video_id and a label.")
        labels.append((row["video_id"], row["label"].strip()))
    return labels
