"""Export a feature set as one `.npy` per video and array, in freezeframe's layout or a peer's.

`freezeframe` (default): `OUT/<video>_<array>.npy` for every array, in the stored dtype (the array name with `/`
as `-`: `tokens-11`), plus `timestamps_ms` where `timestamps` is stored. `video-features`: exactly what
video_features' `save_numpy` writes for a frame-wise extractor (models/_base/base_framewise_extractor.py,
utils/utils.py: make_path, sanity_check): `OUT/<feature_type>/<model>/<stem>_<feature_type>.npy` (rows x dim,
float64, since it saves `np.array` of Python floats), `<stem>_fps.npy` (a 0-d float64) and
`<stem>_timestamps_ms.npy` (float64), one array only. `clip-video-encode`: its FileWriter's `OUT/<key>.npy`
(frames x dim, the stored dtype; float16 as its CUDA autocast gives), the key being the video id. Video ids are data, not paths: a file name is the id (its
last part for video-features) percent-encoded where needed (`/` as `%2F`, a leading `.` as `%2E`), so no id can
leave OUT; `export.json` maps ids to files. A re-export removes the files the previous `export.json` listed that
it did not write again, and no other file.
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


def plain_stem(name: str) -> str:
    """`name` itself where it is a safe file-name stem (printable, not hidden, short enough), else `file_stem`."""
    safe = name and name.isprintable() and not name.startswith(".") and "\\" not in name and "/" not in name
    return name if safe and len(name.encode()) <= MAX_STEM else file_stem(name)


def array_key(array: str) -> str:
    return array.replace("/", "-")


LAYOUTS = ("freezeframe", "video-features", "clip-video-encode")
LAYOUT_TEXT = {"freezeframe": "<video>_<array>.npy, first axis rows",
               "video-features": "<feature_type>/<model>/<stem>_<feature_type>.npy float64, _fps.npy, "
                                 "_timestamps_ms.npy (video_features save_numpy)",
               "clip-video-encode": "<video>.npy, frames x dim, stored dtype (clip-video-encode's FileWriter)"}
ONE_ARRAY_LAYOUTS = ("video-features", "clip-video-encode")


@dataclass
class ExportReport:
    videos: int
    files: int
    bytes: int
    removed: int = 0  # stale files of the previous export removed


def _vector_array(fs: FeatureSet, names: list[str], layout: str) -> str:
    """The one per-frame vector array a peer's layout holds."""
    if len(names) != 1:
        raise InputError(f"--layout {layout} writes one feature array per video (as {layout} does); "
                         f"pass --arrays with one of: {', '.join(names)}.")
    shape = fs.arrays()[names[0]]["shape"]
    if len(shape) != 1:
        raise InputError(f"--layout {layout} writes per-frame vectors (frames, dim), as {layout} does; "
                         f"{names[0]!r} has rows of shape {tuple(shape)}: pick a vector array such as embed.")
    return names[0]


def _video_features_plan(fs: FeatureSet, names: list[str]) -> tuple[str, str, float]:
    """(folder, feature key, fps) of the video-features layout; one array, timestamps and a fixed fps needed."""
    _vector_array(fs, names, "video-features")
    if "timestamps" not in fs.arrays():
        raise InputError(f"feature set {fs.name!r} stores no timestamps, which --layout video-features writes.")
    sampling, backbone = fs.provenance.get("sampling") or {}, fs.provenance.get("backbone") or {}
    fps = sampling.get("fps") if isinstance(sampling, dict) else None
    if not isinstance(fps, (int, float)) or isinstance(fps, bool) or fps <= 0:
        raise InputError(f"feature set {fs.name!r} was not sampled at a fixed rate; --layout video-features writes "
                         "one fps per video, so extract with --fps.")
    kind = backbone.get("kind") if isinstance(backbone, dict) else None
    model = backbone.get("model") if isinstance(backbone, dict) else None
    feature, model = [file_stem(str(v or "features")).replace("%2F", "_") for v in (kind, model)]
    return f"{feature}/{model}", feature, float(fps)


def _unique_stems(video_ids: list[str], stem_of: Callable[[str], str], named_by: str) -> dict[str, str]:
    """video id -> file stem, refusing two ids that would share one."""
    stems = {v: stem_of(v) for v in video_ids}
    seen: dict[str, str] = {}
    for video_id, stem in stems.items():
        if stem in seen:
            raise InputError(f"videos {seen[stem]!r} and {video_id!r} would both be written as {stem}_*.npy "
                             f"(this layout names files by {named_by}); export them apart.")
        seen[stem] = video_id
    return stems


def _writer(fs: FeatureSet, out: Path, names: list[str], layout: str) -> tuple[Path, Callable[[str], tuple]]:
    """The folder a layout writes into, and video id -> (its files by key, bytes written)."""
    if layout == "video-features":  # video_features names files by the video file's stem
        folder, feature, fps = _video_features_plan(fs, names)
        stems = _unique_stems(fs.video_ids(), lambda v: plain_stem(v.rsplit("/", 1)[-1]), "the last part of the id")
        return out / folder, lambda v: _write_video_features(fs, out, folder, stems[v], v, names[0], feature, fps)
    if layout == "clip-video-encode":  # clip-video-encode names a video's file by its key (the id)
        array = _vector_array(fs, names, layout)
        stems = _unique_stems(fs.video_ids(), plain_stem, "the id")
        return out, lambda v: _write_one(out, f"{stems[v]}.npy", array, fs.read(v, array))
    return out, lambda v: _write_arrays(fs, out, file_stem(v), v, names)


def export_npy(fs: FeatureSet, out: str | Path, arrays: list[str] | None = None,
               log: Callable[[str], None] | None = None, layout: str = "freezeframe") -> ExportReport:
    """Write one `.npy` per committed video and array in `layout` (each file written whole, then renamed)."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    stored = fs.arrays()
    names = arrays or (["embed"] if layout in ONE_ARRAY_LAYOUTS and "embed" in stored else sorted(stored))
    unknown = [a for a in names if a not in stored]
    if unknown:
        raise InputError(f"feature set {fs.name!r} has no array {', '.join(map(repr, unknown))}; it has: "
                         f"{', '.join(stored)}")
    fs.check_index()  # every shard is read anyway: list only the videos the commit markers vouch for
    out = Path(out)
    previous = previous_files(out)
    folder, write = _writer(fs, out, names, layout)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, str]] = {}
    total = 0
    for number, video_id in enumerate(fs.video_ids(), start=1):
        files[video_id], size = write(video_id)
        total += size
        if log and (number % 100 == 0 or number == len(fs)):
            log(f"{fs.name}: exported {number} of {len(fs)} videos")
    manifest = {"feature_set": fs.name, "provenance": fs.provenance, "layout": LAYOUT_TEXT[layout],
                "videos": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    removed = remove_stale(out, previous - {name for v in files.values() for name in v.values()})
    return ExportReport(len(files), sum(len(v) for v in files.values()), total, removed)


def _write_arrays(fs: FeatureSet, out: Path, stem: str, video_id: str, names: list[str]) -> tuple[dict, int]:
    written, total = {}, 0
    for array in names:
        value = fs.read(video_id, array)
        written[array] = _save(out, f"{stem}_{array_key(array)}.npy", value)
        total += value.nbytes
        if array == "timestamps":
            written["timestamps_ms"] = _save(out, f"{stem}_timestamps_ms.npy", value * 1000.0)
    return written, total


def _write_one(out: Path, name: str, array: str, value: np.ndarray) -> tuple[dict, int]:
    return {array: _save(out, name, value)}, value.nbytes


def _write_video_features(fs: FeatureSet, out: Path, folder: str, stem: str, video_id: str, array: str,
                          feature: str, fps: float) -> tuple[dict, int]:
    value = fs.read(video_id, array).astype(np.float64)
    value = value.reshape(len(value), -1)  # video_features' frame-wise features are (frames, dim)
    written = {array: _save(out, f"{folder}/{stem}_{feature}.npy", value),
               "fps": _save(out, f"{folder}/{stem}_fps.npy", np.array(fps, dtype=np.float64)),
               "timestamps_ms": _save(out, f"{folder}/{stem}_timestamps_ms.npy",
                                      fs.read(video_id, "timestamps").astype(np.float64) * 1000.0)}
    return written, value.nbytes


def previous_files(out: Path) -> set[str]:
    """The files a previous export into `out` listed in its export.json (names checked, never followed)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        videos = manifest.get("videos", {})
        return {name for files in videos.values() if isinstance(files, dict) for name in files.values()
                if isinstance(name, str)}
    except (OSError, ValueError, AttributeError):
        return set()


def remove_stale(out: Path, names: set[str]) -> int:
    """Remove these files of a previous export: only `.npy` files strictly inside `out`, never followed links."""
    root = out.resolve()
    removed = 0
    for name in names:
        path = out / name
        if not name.endswith(".npy") or Path(name).is_absolute() or ".." in Path(name).parts:
            continue
        if path.is_symlink() or not path.is_file() or root not in path.resolve().parents:
            continue
        path.unlink()
        removed += 1
    return removed


def _save(out: Path, name: str, value: np.ndarray) -> str:
    target = out / name
    temp = target.parent / f"{TEMP_PREFIX}{os.getpid()}-{target.name}"
    with open(temp, "wb") as handle:
        np.save(handle, np.require(value, requirements="C"), allow_pickle=False)  # keeps a 0-d array 0-d
    os.replace(temp, target)
    return name
