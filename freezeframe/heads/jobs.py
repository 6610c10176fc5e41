"""Train and evaluate a head on a store from label files: what `freezeframe train` and `eval` run."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from freezeframe.errors import InputError
from freezeframe.heads.curves import plot_curves
from freezeframe.heads.evaluation import evaluate
from freezeframe.heads.consensus import attach_consensus
from freezeframe.heads.probe import LinearProbe, pool_frames, sweep_l2
from freezeframe.heads.registry import build_head, config_to_dict, head_config
from freezeframe.heads.run import RunInfo, load_head
from freezeframe.heads.training import (BEST, LAST, METRICS_FILE, TrainConfig, resolve_device, save_atomic, seed_everything,
                                        train_classifier)
from freezeframe.store.datasets import FeatureDataset, FrameSelection, collate, read_labels
from freezeframe.store.feature_set import block_source
from freezeframe.store.store import Store


PRELOAD_LIMIT = 2 * 1024**3


def preload_bytes(fs, video_ids: list[str], arrays: list[str]) -> int:
    """Bytes that preloading `arrays` of these videos takes (each stored array is cached once)."""
    stored = fs.arrays()
    sources = {block_source(array, stored) for array in arrays} & set(stored)
    row_bytes = sum(int(np.prod(stored[s]["shape"], dtype=np.int64)) * np.dtype(stored[s]["dtype"]).itemsize
                    for s in sources)
    return row_bytes * sum(fs.video_info(v)["n_frames"] for v in video_ids if v in fs)


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
    if not train and Store(store)[feature_set].provenance.get("frames_per_view"):
        return "views"
    return "sparse-random:8" if train else "uniform:8"


def _frames_per_item(selection: FrameSelection, store: str | Path, feature_set: str) -> int:
    if selection.mode == "views":
        return Store(store)[feature_set].provenance["frames_per_view"]
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
    preload: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train a head of `kind` on a feature set; returns the final metrics.

    `preload=None` reads the head's arrays into memory once when they fit in `PRELOAD_LIMIT` bytes.
    """
    fs = Store(store)[feature_set]
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
    run = RunInfo(kind, config_to_dict(head_cfg), str(store), feature_set, classes, str(train_sel), str(eval_sel),
                  asdict(config))
    run.save(out)
    if preload is None:
        preload = preload_bytes(fs, ids, arrays) <= PRELOAD_LIMIT
    train_set = FeatureDataset(store, feature_set, ids, arrays, train_sel, labels, preload, config.seed)
    val_set = None
    if val_labels is not None:
        val_ids, val_y, _ = labelled_ids(val_labels, classes)
        val_set = FeatureDataset(store, feature_set, val_ids, arrays, eval_sel, val_y, preload, config.seed)
    if kind == "temporal":
        head.set_input_stats(*channel_stats(train_set, head.config.array))
    if kind == "probe":
        return _train_probe(head, train_set, val_set, config, Path(out), log)
    history = train_classifier(head, train_set, val_set, config, out, resume=resume, log=log)
    return history[-1] if history else {}


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
             batch_size: int = 32, device: str = "auto", workers: int = 0, trust_checkpoint: bool = False) -> dict:
    """top-1/top-5 of a run's best checkpoint on a labelled set (views averaged)."""
    head, info = load_head(run_dir, trust_checkpoint=trust_checkpoint)
    store = store or info.store
    ids, y, _ = labelled_ids(labels, info.classes)
    selection = FrameSelection.parse(frames or info.eval_frames)
    head = attach_consensus(head, selection)
    dataset = FeatureDataset(store, info.feature_set, ids, head.required_arrays, selection, y)
    result = evaluate(head, dataset, batch_size, resolve_device(device), workers)
    return {**result, "head": info.head, "feature_set": info.feature_set, "frames": str(selection)}
