"""The training loop shared by gradient-trained heads: AdamW + cosine schedule, AMP on CUDA,
a checkpoint every epoch, exact resume, metrics as JSON lines, best checkpoint kept, PNG curves.

Training length is counted in optimisation steps as well as epochs: a small training set gets
more epochs so that training takes at least `min_steps` steps (50 videos in batches of 32 would
otherwise get 20 steps from 10 epochs, too few for any head to learn).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from freezeframe.checkpoints import load_checkpoint
from freezeframe.devices import resolve_device
from freezeframe.train.curves import plot_curves
from freezeframe.limits import LIST_BYTES, read_limited
from freezeframe.train.evaluation import evaluate, to_device
from freezeframe.train.datasets import FeatureDataset, collate
from freezeframe.store.files import write_atomic

METRICS_FILE = "metrics.jsonl"
LAST, BEST = "last.pt", "best.pt"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # raised to reach min_steps, unless min_steps is 0
    steps: int = 0  # when > 0: train for this many steps (rounded up to whole epochs); epochs is ignored
    min_steps: int = 200
    batch_size: int = 32
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    amp: bool = True  # fp16 autocast with loss scaling, on CUDA only
    progress: bool = True
    trust_checkpoint: bool = False  # resume from a last.pt that is a full pickle (it can run code)


def planned_epochs(config: TrainConfig, steps_per_epoch: int) -> int:
    """Epochs to run: enough for `steps` when given, else `epochs` raised to at least `min_steps` steps."""
    steps_per_epoch = max(1, steps_per_epoch)
    if config.steps > 0:
        return math.ceil(config.steps / steps_per_epoch)
    return max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))


class TrainingInterrupted(Exception):
    """Ctrl-C during training: `message` says which epoch last.pt holds and how to resume."""

    def __init__(self, message: str, epochs_done: int) -> None:
        super().__init__(message)
        self.epochs_done = epochs_done


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """Every generator's state, as tensors and plain values (so a weights-only load reads it back)."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gaussian)]
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(obj: object, path: Path) -> None:
    """A checkpoint written whole or not at all (temporary name, fsync, rename)."""
    write_atomic(Path(path), lambda handle: torch.save(obj, handle))


def cosine_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    text = read_limited(path, LIST_BYTES, "a metrics file").decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_metrics(run_dir: str | Path, history: list[dict]) -> None:
    """Rewrite metrics.jsonl whole (atomically) from a history."""
    text = "".join(json.dumps(h) + "\n" for h in history)
    write_atomic(Path(run_dir) / METRICS_FILE, lambda handle: handle.write(text.encode("utf-8")))


def restore_last(run_dir: Path, parts: dict, config: TrainConfig, device: torch.device, resume: bool,
                 log: Callable[[str], None] = print) -> tuple[int, float, list[dict]]:
    """With `resume`, load `last.pt` (if any) into `parts` (name -> object with load_state_dict) and the RNGs.

    Returns (first epoch to run, best score so far, metrics history of the epochs done).
    """
    if not resume or not (run_dir / LAST).exists():
        return 0, -math.inf, []
    state = load_checkpoint(run_dir / LAST, trust=config.trust_checkpoint, map_location=device)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    _set_rng_state(state["rng"])
    start_epoch, best_score = state["epoch"] + 1, state["best_score"]
    # The checkpoint is the record of past epochs, not metrics.jsonl: a run killed after saving the
    # checkpoint but before (or while) appending that epoch's line must not lose or garble it.
    history = state.get("history") or [h for h in read_metrics(run_dir) if h["epoch"] < start_epoch]
    log(f"resumed from epoch {state['epoch']} in {run_dir}")
    return start_epoch, best_score, history


CURVE_INTERVAL_S = 20.0  # curves.png is redrawn at most this often (and after the last epoch): matplotlib is slow


def finish_epoch(run_dir: Path, parts: dict, history: list[dict], metrics: dict, score: float, best_score: float,
                 config: TrainConfig, shown: Sequence[str], log: Callable[[str], None] = print,
                 total_epochs: int | None = None) -> float:
    """Append `metrics` to `history` and checkpoint the epoch: best.pt (head only) when `score` beats `best_score`,
    last.pt, its metrics line, curves; log the `shown` metrics. Returns the new best score."""
    total_epochs = config.epochs if total_epochs is None else total_epochs
    improved = score > best_score
    best_score = max(best_score, score)
    history.append(metrics)
    epoch = metrics["epoch"]
    state = {"history": history, "epoch": epoch, **{name: part.state_dict() for name, part in parts.items()},
             "rng": _rng_state(), "best_score": best_score, "config": asdict(config)}
    if improved:  # before last.pt: a run killed in between redoes this epoch and rewrites best.pt alike
        save_atomic({"epoch": epoch, "head": parts["head"].state_dict(), "metrics": metrics}, run_dir / BEST)
    save_atomic(state, run_dir / LAST)
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(metrics) + "\n")
    curves = run_dir / "curves.png"
    if epoch + 1 >= total_epochs or not curves.exists() or time.time() - curves.stat().st_mtime > CURVE_INTERVAL_S:
        plot_curves(history, curves)
    values = ", ".join(f"{k}={metrics[k]:.4g}" for k in shown if k in metrics)
    log(f"epoch {epoch + 1}/{total_epochs}: {values}{' (best)' if improved else ''}")
    return best_score


def train_classifier(
    head: nn.Module,
    train_set: FeatureDataset,
    val_set: FeatureDataset | None,
    config: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Train `head` on `train_set`; one checkpoint per epoch in `run_dir`. Returns the metrics history.

    Ctrl-C raises `TrainingInterrupted` once last.pt holds the last finished epoch (curves redrawn)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    head.to(device)
    params = [p for p in head.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    epochs = planned_epochs(config, steps_per_epoch)
    schedule = cosine_schedule(epochs * steps_per_epoch, int(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    parts = {"head": head, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    start_epoch, best_score, history = restore_last(run_dir, parts, config, device, resume, log)
    write_metrics(run_dir, history)
    if start_epoch == 0:
        log(f"training {epochs} epochs of {steps_per_epoch} steps ({epochs * steps_per_epoch} steps, "
            f"{len(train_set)} videos, batch {config.batch_size})")
    try:
        _run_epochs(head, train_set, val_set, config, run_dir, parts, history, best_score, range(start_epoch, epochs),
                    epochs, device, use_amp, log)
    except KeyboardInterrupt:
        done = len(history)
        if history:
            plot_curves(history, run_dir / "curves.png")
        held = f"last.pt holds epoch {done}/{epochs}" if done else "no epoch had finished"
        raise TrainingInterrupted(f"interrupted during epoch {done + 1}/{epochs}; {held} in {run_dir}", done) from None
    return history


def _run_epochs(head, train_set, val_set, config: TrainConfig, run_dir: Path, parts: dict, history: list[dict],
                best_score: float, epoch_range: range, epochs: int, device: torch.device, use_amp: bool,
                log: Callable[[str], None]) -> None:
    optimizer, scheduler, scaler = parts["optimizer"], parts["scheduler"], parts["scaler"]
    for epoch in epoch_range:
        started = time.perf_counter()
        train_set.set_epoch(epoch)
        order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=order,
                            collate_fn=collate, num_workers=config.workers, pin_memory=device.type == "cuda")
        head.train()
        total, correct, loss_sum = 0, 0, 0.0
        for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not config.progress):
            inputs, labels = to_device(batch["inputs"], device), batch["label"].to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                logits = head(inputs)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += len(labels)
            correct += int((logits.argmax(1) == labels).sum())
            loss_sum += float(loss.detach()) * len(labels)
        metrics = {"epoch": epoch, "train_loss": loss_sum / total, "train_top1": correct / total,
                   "lr": optimizer.param_groups[0]["lr"]}
        if val_set is not None:
            val = evaluate(head, val_set, config.batch_size, device, config.workers)
            metrics.update({"val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"]})
        metrics["seconds"] = time.perf_counter() - started
        score = metrics.get("val_top1", -metrics["train_loss"])
        shown = [k for k in metrics if k not in ("epoch", "lr", "seconds")]
        best_score = finish_epoch(run_dir, parts, history, metrics, score, best_score, config, shown, log, epochs)
