"""Train and evaluate a head on a store from label files: what `freezeframe train` and `eval` run."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from freezeframe.errors import InputError, StoreError
from freezeframe.train.consensus import attach_consensus
from freezeframe.train.curves import plot_confusion, plot_curves
from freezeframe.train.evaluation import predict, scores
from freezeframe.heads.probe import LinearProbe, pool_frames, sweep_l2
from freezeframe.heads.registry import build_head, config_to_dict, head_config
from freezeframe.train.run import RunInfo, load_head
from freezeframe.train.loop import (BEST, LAST, METRICS_FILE, TrainConfig, resolve_device, save_atomic, seed_everything,
                                        train_classifier)
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate, read_sources, stored_clip_length
from freezeframe.userfiles import read_labels
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.provenance import differences
from freezeframe.store.store import Store

# What a run records of its feature set's provenance, and what `eval` requires to match: the numbers of
# another model, weights, preprocessing or frame sampling are not the features the head was trained on.
# (Not `augment`: the plain view of a set with augmented views is the frame of a set without.)
MATCHED_PROVENANCE = ("backbone", "preprocess", "sampling", "compute_dtype")
# Everything a training run writes into its directory (an --overwrite removes these and nothing else).
RUN_FILES = ("run.json", LAST, BEST, METRICS_FILE, "curves.png")


PRELOAD_LIMIT = 2 * 1024**3


def preload_bytes(fs, video_ids: list[str], arrays: list[str], augmented: bool = False) -> int:
    """Bytes that preloading `arrays` of these videos takes (each stored array is cached once; in training on a set
    with augmented views, every view's)."""
    stored = fs.arrays()
    sources = {s for per_view in read_sources(arrays, stored, fs.provenance, augmented).values() for s in per_view}
    sources &= set(stored)
    row_bytes = sum(int(np.prod(stored[s]["shape"], dtype=np.int64)) * np.dtype(stored[s]["dtype"]).itemsize
                    for s in sources)
    return row_bytes * sum(fs.video_info(v)["n_frames"] for v in video_ids if v in fs)


def open_feature_set(store: str | Path, feature_set: str) -> FeatureSet:
    """The feature set, or a one-line error naming the sets the store has."""
    try:
        return Store(store)[feature_set]
    except KeyError as exc:
        raise StoreError(f"{exc.args[0]}.") from None


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


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a directory that holds a run unless told to continue it or replace it."""
    present = [name for name in RUN_FILES if (out / name).exists()]
    if resume and overwrite:
        raise InputError("pass either --resume or --overwrite, not both.")
    if not present or resume:
        return
    if not overwrite:
        raise InputError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it "
                         f"or --overwrite to replace it.")
    for name in present:
        (out / name).unlink()


def labelled_ids(path: str | Path, classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    """Video ids and class indices of a label CSV; classes are the sorted train labels unless given."""
    rows = read_labels(path)
    if not rows:
        raise InputError(f"{path} lists no videos.")
    if classes is None:
        classes = sorted({label for _, label in rows})
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted({label for _, label in rows if label not in index})
    if unknown:
        raise InputError(f"{path} has labels the run was not trained on: {', '.join(unknown[:5])}.")
    return [v for v, _ in rows], [index[label] for _, label in rows], classes


def default_frames(kind: str, store: str | Path, feature_set: str, train: bool) -> str:
    if kind == "probe":
        return "all"
    if not train and stored_clip_length(Store(store)[feature_set].provenance):
        return "stored-clips"
    return "sparse-random:8" if train else "uniform:8"


def _frames_per_item(selection: FrameSelection, store: str | Path, feature_set: str) -> int:
    if selection.mode == "stored-clips":
        return stored_clip_length(Store(store)[feature_set].provenance)
    return selection.num_frames


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
    """Train a head of `kind` on a feature set; returns the final metrics.

    `preload=None` reads the head's arrays into memory once when they fit in `PRELOAD_LIMIT` bytes.
    An `out` that already holds a run needs `resume` or `overwrite`; a start that fails leaves nothing behind.
    """
    out = Path(out)
    prepare_run_dir(out, resume, overwrite)
    fs = open_feature_set(store, feature_set)
    train_frames = train_frames or default_frames(kind, store, feature_set, train=True)
    if eval_frames is None and FrameSelection.parse(train_frames).mode == "clips-random":
        eval_frames = train_frames.replace("clips-random", "clips", 1)  # ClipBERT: the same clips, centred
    eval_frames = eval_frames or default_frames(kind, store, feature_set, train=False)
    train_sel, eval_sel = FrameSelection.parse(train_frames), FrameSelection.parse(eval_frames)
    ids, labels, classes = labelled_ids(train_labels)
    head_cfg = head_config(kind, fs, len(classes), _frames_per_item(eval_sel, store, feature_set),
                           **(head_options or {}))
    seed_everything(config.seed)  # the head's initial weights, too, follow --seed (not the process's RNG state)
    head = attach_consensus(build_head(kind, head_cfg), train_sel)  # clips:N:T: per-clip logits combined
    if kind == "evl" and head_cfg.cross_frame_attention:
        head.load_frozen_qk(fs.frozen_weights())
    arrays = head.required_arrays
    augmented = kind != "probe"  # gradient-trained heads read an augmented view per epoch where the set has them
    if preload is None:
        preload = preload_bytes(fs, ids, arrays, augmented) <= PRELOAD_LIMIT
    train_set = FeatureDataset(store, feature_set, ids, arrays, train_sel, labels, preload, config.seed, augmented)
    val_set = None
    if val_labels is not None:
        val_ids, val_y, _ = labelled_ids(val_labels, classes)
        val_set = FeatureDataset(store, feature_set, val_ids, arrays, eval_sel, val_y, preload, config.seed)
    if kind == "temporal":
        head.set_input_stats(*channel_stats(train_set, head.config.array))
    run = RunInfo(kind, config_to_dict(head_cfg), str(store), feature_set, classes, str(train_sel), str(eval_sel),
                  asdict(config), extra={"provenance": matched_provenance(fs)})
    existed = out.exists()
    run.save(out)
    try:
        if kind == "probe":
            return _train_probe(head, train_set, val_set, config, out, log)
        history = train_classifier(head, train_set, val_set, config, out, resume=resume, log=log)
    except Exception:
        if not (out / LAST).exists():  # nothing trained yet: leave no half-made run behind
            _remove_run(out, existed)
        raise
    return history[-1] if history else {}


def _remove_run(out: Path, keep_dir: bool) -> None:
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if not keep_dir and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def channel_stats(dataset: FeatureDataset, array: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of `array` over every frame of the dataset's items."""
    frames = torch.cat([dataset[i]["inputs"][array].float().flatten(0, -2) for i in range(len(dataset))])
    return frames.mean(0), frames.std(0)


def _pooled(probe: LinearProbe, dataset: FeatureDataset) -> tuple[torch.Tensor, torch.Tensor]:
    feats, labels = [], []
    array = probe.config.array
    for batch in DataLoader(dataset, batch_size=1 if dataset.selection.mode == "all" else 64, collate_fn=collate):
        feats.append(pool_frames(batch["inputs"][array], probe.config.pooling))
        labels.append(batch["label"])
    return torch.cat(feats), torch.cat(labels)


def _train_probe(probe: LinearProbe, train_set, val_set, config: TrainConfig, out: Path, log) -> dict:
    """Sweep L2 on the validation split (or 20% of train when none is given), refit on train + val."""
    x, y = _pooled(probe, train_set)
    if val_set is not None:
        vx, vy = _pooled(probe, val_set)
        fit_x, fit_y, sweep_train = torch.cat([x, vx]), torch.cat([y, vy]), (x, y)
    else:
        order = list(range(len(y)))
        random.Random(config.seed).shuffle(order)
        cut = max(1, len(order) // 5)
        val_idx, tr_idx = torch.tensor(order[:cut]), torch.tensor(order[cut:])
        sweep_train, (vx, vy) = (x[tr_idx], y[tr_idx]), (x[val_idx], y[val_idx])
        fit_x, fit_y = x, y
    best_l2, sweep = sweep_l2(probe, sweep_train, (vx, vy))
    probe.fit(fit_x, fit_y, l2=best_l2)
    with torch.no_grad():
        train_top1 = float((probe.linear(x).argmax(1) == y).float().mean())
    metrics = {"epoch": 0, "l2": best_l2, "train_top1": train_top1,
               "val_top1": max(r["val_top1"] for r in sweep), "num_train": int(len(fit_y))}
    with open(out / METRICS_FILE, "w", encoding="utf-8") as handle:
        for row in sweep:
            handle.write(json.dumps({"sweep": True, **row}) + "\n")
        handle.write(json.dumps(metrics) + "\n")
    plot_curves(sweep, out / "curves.png", x="l2")
    state = {"epoch": 0, "head": probe.state_dict(), "metrics": metrics}
    save_atomic(state, out / BEST)
    save_atomic(state, out / LAST)
    log(f"probe: L2 {best_l2:.3g} chosen on validation (top-1 {metrics['val_top1']:.3f}); refit on {len(fit_y)} videos")
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
    dataset = FeatureDataset(store, info.feature_set, ids, head.required_arrays, selection, y)
    probs, _ = predict(head, dataset, batch_size, resolve_device(device), workers)
    result = scores(probs, torch.as_tensor(y))
    if predictions is not None:
        write_predictions(predictions, ids, probs, y, info.classes)
    if confusion is not None:
        plot_confusion(confusion_matrix(probs.argmax(1), torch.as_tensor(y), len(info.classes)), info.classes, confusion)
    return {**result, "head": info.head, "feature_set": info.feature_set, "frames": str(selection),
            **({"provenance_mismatch": mismatched} if mismatched else {})}


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(true class, predicted class) -> count."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels.numpy(), predicted.numpy()), 1)
    return counts


def write_predictions(path: str | Path, ids: list[str], probs: torch.Tensor, labels: list[int], classes: list[str]) -> None:
    """One row per video: video_id, label, prediction, score (its probability), then every class's probability."""
    path = Path(path)
    predicted = probs.argmax(1).tolist()
    rows = [{"video_id": v, "label": classes[t], "prediction": classes[p], "score": float(probs[i, p]),
             **{f"p:{c}": float(probs[i, j]) for j, c in enumerate(classes)}}
            for i, (v, t, p) in enumerate(zip(ids, labels, predicted))]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if path.suffix.lower() in (".jsonl", ".json"):
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["video_id"])
            writer.writeheader()
            writer.writerows(rows)
