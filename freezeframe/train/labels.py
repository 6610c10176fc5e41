"""Labels a user hands a dataset: a label CSV read into ids, class indices and classes, and the forms
`FeatureDataset(labels=...)` accepts (class indices in the ids' order, a mapping id -> label, or label strings
with a class list), checked where they enter so that a wrong form is one sentence, not a collate error later."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import Mapping, Sequence

from freezeframe.errors import InputError
from freezeframe.userfiles import read_labels


@dataclass(frozen=True)
class LabelledVideos:
    """A label file's videos: `labels[i]` is the index into `classes` of `video_ids[i]`."""

    video_ids: list[str]
    labels: list[int]
    classes: list[str]


def read_label_csv(path: str | Path, classes: Sequence[str] | None = None) -> LabelledVideos:
    """Read a `video_id,label` CSV; classes are its sorted labels unless given (then a label outside them is
    an error). Pass `video_ids`, `labels` and `classes` straight to `FeatureDataset`."""
    rows = read_labels(path)
    if not rows:
        raise InputError(f"{path} lists no videos.")
    classes = sorted({label for _, label in rows}) if classes is None else list(classes)
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted({label for _, label in rows if label not in index})
    if unknown:
        raise InputError(f"{path} has labels the run was not trained on: {', '.join(unknown[:5])}.")
    return LabelledVideos([v for v, _ in rows], [index[label] for _, label in rows], classes)


def _index(label: object, classes: Sequence[str] | None, where: str) -> int:
    """One label as a class index: an int in range, or a string found in `classes`."""
    if isinstance(label, str):
        if classes is None:
            raise InputError(f"label {label!r} of {where} is a string; pass classes=[...] to map label strings to "
                             "class indices.")
        if label not in classes:
            raise InputError(f"label {label!r} of {where} is not one of the classes ({', '.join(classes[:5])}...).")
        return list(classes).index(label)
    if isinstance(label, bool) or not isinstance(label, Integral):
        raise InputError(f"label of {where} is {type(label).__name__} {label!r}; labels are class indices (int) "
                         "or class names (str).")
    if label < 0 or (classes is not None and label >= len(classes)):
        allowed = f"0 to {len(classes) - 1}" if classes is not None else "0 or more"
        raise InputError(f"label {int(label)} of {where} is not a class index ({allowed}).")
    return int(label)


def resolve_labels(video_ids: Sequence[str], labels: Sequence | Mapping | None,
                   classes: Sequence[str] | None = None) -> list[int] | None:
    """Class indices in `video_ids`' order from a sequence (same length), or a mapping that holds every id."""
    if labels is None:
        return None
    if isinstance(labels, (str, bytes)):
        raise InputError("labels must be a sequence or a mapping video_id -> label, not one string.")
    if isinstance(labels, Mapping):
        missing = [v for v in video_ids if v not in labels]
        if missing:
            raise InputError(f"labels has no label for {len(missing)} of the video ids "
                             f"(e.g. {', '.join(map(repr, missing[:3]))}).")
        return [_index(labels[v], classes, f"video {v!r}") for v in video_ids]
    labels = list(labels)
    if len(labels) != len(video_ids):
        raise InputError(f"{len(labels)} labels for {len(video_ids)} video ids; give one label per video "
                         "(or a mapping video_id -> label).")
    return [_index(label, classes, f"video {v!r}") for v, label in zip(video_ids, labels)]
