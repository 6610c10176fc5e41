"""Export a feature set as one `.npy` per video and array, in video_features' `save_numpy` layout.

video_features writes `OUT/<video stem>_<key>.npy` (e.g. `v_abc_clip.npy`, `v_abc_timestamps_ms.npy`), which
temporal-localisation code reads directly. Here the key is the array name (`/` becomes `-`: `tokens-11`), and
`timestamps_ms` is added where `timestamps` is stored. Video ids are data, not paths: a file name is the id
percent-encoded (`/` as `%2F`, a leading `.` as `%2E`), so no id can leave OUT; `export.json` maps ids to files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import numpy as np

from freezeframe.errors import InputError
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.layout import TEMP_PREFIX

MAX_STEM = 180  # bytes of a file-name stem before it is shortened with a hash (file names stop at 255)
MANIFEST = "export.json"


def file_stem(video_id: str) -> str:
    """A file-name stem for a video id: reversible percent-encoding, never a path, never hidden."""
    stem = quote(video_id, safe="")
    if stem.startswith("."):
        stem = "%2E" + stem[1:]
    if len(stem.encode()) > MAX_STEM or not stem:
        stem = f"{stem[:MAX_STEM - 17]}~{hashlib.sha256(video_id.encode()).hexdigest()[:16]}"
    return stem


def array_key(array: str) -> str:
    return array.replace("/", "-")


@dataclass
class ExportReport:
    videos: int
    files: int
    bytes: int


def export_npy(fs: FeatureSet, out: str | Path, arrays: list[str] | None = None,
               log: Callable[[str], None] | None = None) -> ExportReport:
    """Write `OUT/<video>_<array>.npy` for every committed video (each file written whole, then renamed)."""
    stored = fs.arrays()
    names = arrays or sorted(stored)
    unknown = [a for a in names if a not in stored]
    if unknown:
        raise InputError(f"feature set {fs.name!r} has no array {', '.join(map(repr, unknown))}; it has: "
                         f"{', '.join(stored)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    total = 0
    for number, video_id in enumerate(fs.video_ids(), start=1):
        stem = file_stem(video_id)
        written = files[video_id] = {}
        for array in names:
            value = fs.read(video_id, array)
            written[array] = _save(out, f"{stem}_{array_key(array)}.npy", value)
            total += value.nbytes
            if array == "timestamps":
                written["timestamps_ms"] = _save(out, f"{stem}_timestamps_ms.npy", value * 1000.0)
        if log and (number % 100 == 0 or number == len(fs)):
            log(f"{fs.name}: exported {number} of {len(fs)} videos")
    manifest = {"feature_set": fs.name, "provenance": fs.provenance, "layout": "<video>_<array>.npy, first axis rows",
                "videos": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    return ExportReport(len(files), sum(len(v) for v in files.values()), total)


def _save(out: Path, name: str, value: np.ndarray) -> str:
    temp = out / f"{TEMP_PREFIX}{os.getpid()}-{name}"
    with open(temp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(value), allow_pickle=False)
    os.replace(temp, out / name)
    return name
