"""The one fit loop of gradient-trained heads, classifiers and contrastive towers alike: AdamW (or Adam) with a
warm-up and cosine schedule, gradient clipping, AMP on CUDA, a checkpoint every epoch, exact resume, metrics as
JSON lines, the best weights kept, PNG curves. What differs between tasks (data, loss, validation) is an
`Objective`.

Training length is counted in optimisation steps as well as epochs: a run that would make fewer than
`min_steps` steps gets more of them, either as more epochs (classification: 50 videos in batches of 32 would
otherwise get 20 steps from 10 epochs, too few for any head to learn) or as more passes over the data per epoch
(contrastive: each epoch ends with a retrieval evaluation and a checkpoint of the towers).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from freezeframe.checkpoints import load_checkpoint
from freezeframe.devices import resolve_device
from freezeframe.limits import LIST_BYTES, read_limited
from freezeframe.options import FieldError, option
from freezeframe.store.files import write_atomic
from freezeframe.train.checkpoints import BEST, LAST, rng_state, save_atomic, save_weights, set_rng_state
from freezeframe.train.curves import plot_curves

METRICS_FILE = "metrics.jsonl"
DEFAULT_EPOCHS = 10
WARMUP_CAP = 0.1  # warm-up in steps takes at most this share of the run, so short runs still train
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


def fused_update(params: list[torch.Tensor], device: torch.device) -> dict:
    """`fused=True` where torch has a fused Adam(W) step for these parameters: one pass over each tensor instead of
    about ten (on CPU the unfused update took about a quarter of a cached EVL step)."""
    fusable = device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params)
    return {"fused": True} if fusable and params else {}


@dataclass(frozen=True)
class TrainConfig:
    """How a head is trained; the fields made with `option` are `freezeframe train` options."""

    epochs: int | None = option(None, "epochs to train exactly", shown=f"{DEFAULT_EPOCHS}, more to reach --min-steps")
    steps: int = option(0, "optimisation steps to train, rounded up to whole epochs (0: count epochs)")
    min_steps: int = option(200, "train at least this many steps: small training sets get more epochs (contrastive "
                                 "heads: more passes per epoch)")
    batch_size: int = option(32, "items per optimisation step")
    lr: float = option(4e-4, "peak learning rate")
    weight_decay: float = option(0.05, "AdamW's weight decay (Adam: none)")
    warmup_epochs: float = option(0.0, "linear warm-up, in epochs (0: --warmup-steps)")
    warmup_steps: int = option(0, f"linear warm-up steps, at most {WARMUP_CAP:g} of the run's steps")
    clip_grad: float = option(0.0, "clip the gradient norm to this (0: no clipping)")
    optimizer: str = "adamw"  # a key of OPTIMIZERS
    betas: tuple[float, float] = (0.9, 0.999)
    label_smoothing: float = 0.0
    seed: int = option(0, "seed of the head's initial weights, the data order and random frames")
    workers: int = option(0, "DataLoader worker processes")
    device: str = option("auto", "cpu, cuda, cuda:N, or auto")
    amp: bool = True  # fp16 autocast with loss scaling, on CUDA only
    progress: bool = True
    trust_checkpoint: bool = option(False, "with --resume: load a last.pt that is a full pickle (it can run code; "
                                           "only if you trust it)")

    def __post_init__(self) -> None:
        for name in ("steps", "min_steps", "warmup_steps", "clip_grad", "warmup_epochs", "workers"):
            if getattr(self, name) < 0:
                raise FieldError(name, "must not be negative.")
        if self.epochs is not None and self.epochs < 1:
            raise FieldError("epochs", "must be at least 1.")
        if self.batch_size < 1:
            raise FieldError("batch_size", "must be at least 1.")
        if self.optimizer not in OPTIMIZERS:
            raise FieldError("optimizer", f"{self.optimizer!r} is unknown; choose {' or '.join(OPTIMIZERS)}.")


def plan_length(config: TrainConfig, steps_per_pass: int, more_passes: bool = False) -> tuple[int, int]:
    """(epochs, passes over the data per epoch): `steps` when given, else `epochs` (default 10), with
    `min_steps` reached by more epochs, or by more passes per epoch when `more_passes`."""
    steps_per_pass = max(1, steps_per_pass)
    if more_passes:
        epochs = config.epochs or DEFAULT_EPOCHS
        return epochs, max(1, math.ceil((config.steps or config.min_steps) / (epochs * steps_per_pass)))
    if config.steps:
        return math.ceil(config.steps / steps_per_pass), 1
    if config.epochs is not None:
        return config.epochs, 1
    return max(DEFAULT_EPOCHS, math.ceil(config.min_steps / steps_per_pass)), 1


class Objective(Protocol):
    """What `fit` trains a head on: one task's data, loss and validation."""

    modules: dict[str, nn.Module]  # trained and checkpointed with the head (e.g. a loss's temperature)
    more_passes: bool  # reach min_steps with more passes per epoch instead of more epochs
    score_key: str  # the validation metric that picks the best weights (else the lowest training loss)
    shown: tuple[str, ...]  # metrics logged after each epoch
    unit: str  # what one item is, for the log ("videos", "captions")

    def __len__(self) -> int: ...

    def steps_per_pass(self) -> int: ...

    def batches(self, head: nn.Module, data_pass: int, device: torch.device) -> Iterable:
        """One pass's batches (random draws and order depend only on the seed and `data_pass`)."""

    def loss(self, head: nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, int, dict[str, float]]:
        """The batch's loss, its item count and sums over its items to report as means (e.g. correct predictions)."""

    def validate(self, head: nn.Module, device: torch.device) -> dict:
        """Validation metrics (`val_...`), or nothing without validation data."""


class TrainingInterrupted(Exception):
    """Ctrl-C during training: `message` says which epoch last.pt holds and how to resume."""

    def __init__(self, message: str, epochs_done: int) -> None:
        super().__init__(message)
        self.epochs_done = epochs_done


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    set_rng_state(state["rng"])
    start_epoch, best_score = state["epoch"] + 1, state["best_score"]
    # The checkpoint is the record of past epochs, not metrics.jsonl: a run killed after saving the
    # checkpoint but before (or while) appending that epoch's line must not lose or garble it.
    history = state.get("history") or [h for h in read_metrics(run_dir) if h["epoch"] < start_epoch]
    log(f"resumed from epoch {state['epoch']} in {run_dir}")
    return start_epoch, best_score, history


CURVE_INTERVAL_S = 20.0  # curves.png is redrawn at most this often (and after the last epoch): matplotlib is slow


@contextlib.contextmanager
def ctrl_c_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then deliver it: an epoch's checkpoint files (last.pt, its metrics line)
    are written together, so the interruption message's epoch is the one on disk. Main thread only (elsewhere
    signals cannot be handled, and the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if caught:
        signal.raise_signal(signal.SIGINT)


def finish_epoch(run_dir: Path, parts: dict, history: list[dict], metrics: dict, score: float, best_score: float,
                 config: TrainConfig, shown: Sequence[str], total_epochs: int,
                 log: Callable[[str], None] = print) -> float:
    """Append `metrics` to `history` and checkpoint the epoch: the best weights when `score` beats `best_score`,
    last.pt, its metrics line, curves; log the `shown` metrics. Returns the new best score."""
    improved = score > best_score
    best_score = max(best_score, score)
    history.append(metrics)
    epoch = metrics["epoch"]
    state = {"history": history, "epoch": epoch, **{name: part.state_dict() for name, part in parts.items()},
             "rng": rng_state(), "best_score": best_score, "config": asdict(config)}
    if improved:  # before last.pt: a run killed in between redoes this epoch and rewrites the best weights alike
        save_weights(parts["head"], run_dir / BEST, {"epoch": epoch, "metrics": metrics})
    save_atomic(state, run_dir / LAST)
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(metrics) + "\n")
    curves = run_dir / "curves.png"
    if epoch + 1 >= total_epochs or not curves.exists() or time.time() - curves.stat().st_mtime > CURVE_INTERVAL_S:
        plot_curves(history, curves)
    values = ", ".join(f"{k}={metrics[k]:.4g}" for k in shown if k in metrics)
    log(f"epoch {epoch + 1}/{total_epochs}: {values}{' (best)' if improved else ''}")
    return best_score


def fit(head: nn.Module, objective: Objective, config: TrainConfig, run_dir: str | Path, resume: bool = False,
        log: Callable[[str], None] = print) -> list[dict]:
    """Train `head` on `objective`; one checkpoint per epoch in `run_dir`. Returns the metrics history.

    Ctrl-C raises `TrainingInterrupted` once last.pt holds the last finished epoch (curves redrawn)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    head.to(device)
    for module in objective.modules.values():
        module.to(device)
    params = [p for m in (head, *objective.modules.values()) for p in m.parameters() if p.requires_grad]
    decay = {"weight_decay": config.weight_decay} if config.optimizer == "adamw" else {}
    optimizer = OPTIMIZERS[config.optimizer](params, lr=config.lr, betas=tuple(config.betas), **decay, **fused_update(params, device))
    steps_per_pass = objective.steps_per_pass()
    epochs, passes = plan_length(config, steps_per_pass, objective.more_passes)
    steps_per_epoch = passes * steps_per_pass
    total_steps = epochs * steps_per_epoch
    warmup = (int(config.warmup_epochs * steps_per_epoch) if config.warmup_epochs
              else min(config.warmup_steps, int(WARMUP_CAP * total_steps)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps, warmup))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    parts = {"head": head, **objective.modules, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    start_epoch, best_score, history = restore_last(run_dir, parts, config, device, resume, log)
    write_metrics(run_dir, history)
    if start_epoch == 0:
        each = f", {passes} passes per epoch to reach {config.min_steps} steps" if passes > 1 else ""
        log(f"training {epochs} epochs of {steps_per_epoch} steps ({total_steps} steps, {len(objective)} "
            f"{objective.unit}, batch {config.batch_size}{each})")
    try:
        for epoch in range(start_epoch, epochs):
            started = time.perf_counter()
            sums: dict[str, float] = defaultdict(float)
            total = 0
            for data_pass in range(epoch * passes, (epoch + 1) * passes):
                batches = objective.batches(head, data_pass, device)
                head.train()
                for batch in tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False,
                                  disable=not config.progress):
                    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                        loss, count, extra = objective.loss(head, batch, device)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if config.clip_grad:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(params, config.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    total += count
                    sums["train_loss"] += float(loss.detach()) * count
                    for key, value in extra.items():
                        sums[key] += value
            metrics = {"epoch": epoch, **{k: v / max(total, 1) for k, v in sums.items()},
                       "lr": optimizer.param_groups[0]["lr"], "steps": (epoch + 1) * steps_per_epoch}
            metrics.update(objective.validate(head, device))
            metrics["seconds"] = time.perf_counter() - started
            score = metrics.get(objective.score_key, -metrics["train_loss"])
            with ctrl_c_deferred():
                best_score = finish_epoch(run_dir, parts, history, metrics, score, best_score, config,
                                          objective.shown, epochs, log)
    except KeyboardInterrupt:
        done = len(history)
        if history:
            plot_curves(history, run_dir / "curves.png")
        held = f"last.pt holds epoch {done}/{epochs}" if done else "no epoch had finished"
        raise TrainingInterrupted(f"interrupted during epoch {done + 1}/{epochs}; {held} in {run_dir}", done) from None
    return history
