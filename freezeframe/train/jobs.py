"""Train and evaluate a head on a store from label files: what `freezeframe train` and `eval` run."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from freezeframe.devices import resolve_device
from freezeframe.errors import InputError, StoreError
from freezeframe.heads.registry import HeadEntry, Solution, get_head, head_config
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.provenance import differences
from freezeframe.store.store import open_feature_set
from freezeframe.train.checkpoints import BEST, save_weights
from freezeframe.train.classification import Classification
from freezeframe.train.consensus import attach_consensus
from freezeframe.train.curves import plot_confusion, plot_curves
from freezeframe.train.datasets import FeatureDataset, FrameSelection, read_sources, stored_clip_length
from freezeframe.train.evaluation import predict, scores
from freezeframe.train.labels import read_label_csv
from freezeframe.train.predictions import confusion_matrix, write_predictions
from freezeframe.train.loop import TrainConfig, fit, seed_everything, write_metrics
from freezeframe.train.run import RunInfo, load_head, new_run, prepare_run_dir

# What a run records of its feature set's provenance, and what `eval` requires to match: the numbers of
# another model, weights, preprocessing or frame sampling are not the features the head was trained on.
# (Not `augment`: the plain view of a set with augmented views is the frame of a set without.)
MATCHED_PROVENANCE = ("backbone", "preprocess", "sampling", "compute_dtype")


PRELOAD_LIMIT = 2 * 1024**3


def preload_bytes(fs, video_ids: list[str], arrays: list[str], augmented: bool = False) -> int:
    """Bytes that preloading `arrays` of these videos takes (each stored array is cached once; in training on a set
    with augmented views, every view's)."""
    stored = fs.arrays()
    sources = {s for per_view in read_sources(arrays, stored, fs.provenance, augmented).values() for s in per_view}
    sources &= set(stored)
    row_bytes = sum(int(np.prod(stored[s]["shape"], dtype=np.int64)) * np.dtype(stored[s]["dtype"]).itemsize
                    for s in sources)
    return row_bytes * sum(fs.locate(v).n_rows for v in video_ids if v in fs)


def matched_provenance(fs: FeatureSet) -> dict:
    return {key: fs.provenance.get(key) for key in MATCHED_PROVENANCE}


def check_provenance(run_provenance: dict | None, fs: FeatureSet, allow_mismatch: bool = False) -> list[str]:
    """Keys where the feature set was made differently from the run's training features.

    Raises a one-line `StoreError` naming them unless `allow_mismatch` (then returns them)."""
    if not run_provenance:
        return []
    found = differences({key: run_provenance.get(key) for key in MATCHED_PROVENANCE}, matched_provenance(fs))
    if found and not allow_mismatch:
        keys = ", ".join(line.split(":")[0] for line in found)
        raise StoreError(f"feature set {fs.name!r} was not made like the run's training features (differs in: {keys}); "
                         f"pass --allow-provenance-mismatch to evaluate anyway.")
    return found


def labelled_ids(path: str | Path, classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """Video ids and class indices of a label CSV; classes are the sorted train labels unless given."""
    found = read_label_csv(path, classes)
    return found.video_ids, found.labels, found.classes


def _frames_per_item(selections: list[FrameSelection], fs: FeatureSet, ids: list[str]) -> int:
    """The most frames an item of these selections carries (`all`: the longest of these videos)."""
    def frames(selection: FrameSelection) -> int:
        if selection.mode == "stored-clips":
            return stored_clip_length(fs.provenance)
        if selection.mode == "all":
            return max(fs.locate(v).n_rows for v in ids if v in fs) if any(v in fs for v in ids) else 1
        return selection.num_frames
    return max(frames(selection) for selection in selections)


def _frames(entry: HeadEntry, fs: FeatureSet, train_frames: str | None, eval_frames: str | None) -> tuple[str, str]:
    """Training and evaluation frames: the given ones, else the head's defaults (stored-clips for a --clips set)."""
    train_frames = train_frames or entry.frames[0]
    if eval_frames is None and FrameSelection.parse(train_frames).mode == "clips-random":
        eval_frames = train_frames.replace("clips-random", "clips", 1)  # ClipBERT: the same clips, centred
    if eval_frames is None and entry.frames[1] != "all" and stored_clip_length(fs.provenance):
        eval_frames = "stored-clips"  # (a head that evaluates on `all` frames reads every clip's frames anyway)
    return train_frames, eval_frames or entry.frames[1]


def train_run(
    kind: str,
    store: str | Path,
    feature_set: str,
    train_labels: str | Path,
    out: str | Path,
    *,
    val_labels: str | Path | None = None,
    train_frames: str | None = None,
    eval_frames: str | None = None,
    head_options: dict | None = None,
    config: TrainConfig = TrainConfig(),
    resume: bool = False,
    overwrite: bool = False,
    preload: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train a classification head of `kind` on a feature set; returns the final metrics.

    `preload=None` reads the head's arrays into memory once when they fit in `PRELOAD_LIMIT` bytes.
    An `out` that already holds a run needs `resume` or `overwrite`; a start that fails leaves nothing behind.
    """
    entry = get_head(kind)
    if entry.task != "classification":
        raise InputError(f"head {kind!r} trains on {entry.task} data, not on labels.")
    out = Path(out)
    prepare_run_dir(out, resume, overwrite)
    fs = open_feature_set(store, feature_set)
    train_frames, eval_frames = _frames(entry, fs, train_frames, eval_frames)
    train_sel, eval_sel = FrameSelection.parse(train_frames), FrameSelection.parse(eval_frames)
    ids, labels, classes = labelled_ids(train_labels)
    val_ids, val_y, _ = labelled_ids(val_labels, classes) if val_labels is not None else ([], [], None)
    frames = _frames_per_item([train_sel, eval_sel], fs, ids + val_ids)
    head_cfg = head_config(kind, fs, len(classes), frames, **(head_options or {}))
    seed_everything(config.seed)  # the head's initial weights, too, follow --seed (not the process's RNG state)
    head = attach_consensus(entry.build(head_cfg), train_sel)  # clips:N:T: per-clip logits combined
    arrays = head.required_arrays
    augmented = entry.solve is None  # heads trained by steps read an augmented view per epoch where the set has them
    if preload is None:
        preload = preload_bytes(fs, ids, arrays, augmented) <= PRELOAD_LIMIT
    train_set = FeatureDataset(store, fs, ids, arrays, train_sel, labels, preload, config.seed, augmented,
                               classes=classes)
    val_set = None
    if val_labels is not None:
        val_set = FeatureDataset(store, fs, val_ids, arrays, eval_sel, val_y, preload, config.seed)
    if entry.prepare is not None:
        entry.prepare(head, fs, train_set)
    run = RunInfo(kind, asdict(head_cfg), str(store), feature_set, classes, str(train_sel), str(eval_sel),
                  asdict(config), extra={"provenance": matched_provenance(fs)})
    with new_run(out, run):
        if entry.solve is not None:
            return save_solution(entry.solve(head, train_set, val_set, config.seed), head, out, log)
        history = fit(head, Classification(train_set, val_set, config), config, out, resume=resume, log=log)
    return history[-1] if history else {}


def save_solution(solution: Solution, head: nn.Module, out: Path, log: Callable[[str], None]) -> dict:
    """A closed-form fit's run files: its sweep and final metrics, the sweep's curve and the weights."""
    write_metrics(out, [*({"sweep": True, **row} for row in solution.sweep), solution.metrics])
    plot_curves(solution.sweep, out / "curves.png", x=solution.swept, best=solution.metrics[solution.swept])
    save_weights(head, out / BEST, {"epoch": 0, "metrics": solution.metrics})
    metrics = solution.metrics
    log(f"{solution.swept} {metrics[solution.swept]:.3g} chosen on validation (top-1 {metrics['val_top1']:.3f}); "
        f"refit on {metrics['num_train']} videos")
    return metrics


def eval_run(run_dir: str | Path, labels: str | Path, store: str | Path | None = None, frames: str | None = None,
             batch_size: int = 32, device: str = "auto", workers: int = 0, trust_checkpoint: bool = False,
             allow_provenance_mismatch: bool = False, predictions: str | Path | None = None,
             confusion: str | Path | None = None) -> dict:
    """top-1/top-5 of a run's best checkpoint on a labelled set (stored clips averaged; the plain view).

    The feature set must have been made like the run's training features (`MATCHED_PROVENANCE`);
    `predictions` writes per-video scores (CSV, or JSON lines for a .jsonl name), `confusion` a PNG."""
    head, info = load_head(run_dir, trust_checkpoint=trust_checkpoint)
    store = store or info.store
    fs = open_feature_set(store, info.feature_set)
    mismatched = check_provenance(info.extra.get("provenance"), fs, allow_provenance_mismatch)
    ids, y, _ = labelled_ids(labels, info.classes)
    selection = FrameSelection.parse(frames or info.eval_frames)
    head = attach_consensus(head, selection)
    dataset = FeatureDataset(store, fs, ids, head.required_arrays, selection, y)
    probs, _ = predict(head, dataset, batch_size, resolve_device(device), workers)
    result = scores(probs, torch.as_tensor(y))
    if predictions is not None:
        write_predictions(predictions, ids, probs, y, info.classes)
    if confusion is not None:
        plot_confusion(confusion_matrix(probs.argmax(1), torch.as_tensor(y), len(info.classes)), info.classes, confusion)
    return {**result, "num_classes": len(info.classes), "head": info.head, "feature_set": info.feature_set,
            "frames": str(selection),
            **({"provenance_mismatch": mismatched} if mismatched else {})}
