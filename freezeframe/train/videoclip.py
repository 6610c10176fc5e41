"""Training the VideoCLIP head on cached video and text features, and its text<->video retrieval evaluation.

What `freezeframe train videoclip` and `freezeframe eval RUN --captions ...` run. The loop shares the
classifier loop's parts (cosine schedule, AMP on CUDA, last/best checkpoints, metrics.jsonl, exact resume);
the best checkpoint is the one with the highest validation mean recall (R@1/5/10 both ways). Its length is
counted in optimisation steps with a floor (`StepSchedule.min_steps`): when `epochs` passes over a small
caption file give fewer steps, each epoch makes several passes, so a 64-caption pilot still learns. Warm-up
is in steps and gradients are clipped, as VideoCLIP trains.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from freezeframe.errors import InputError
from freezeframe.heads.contrastive import LOSSES
from freezeframe.train.neighbourhoods import (ModelNeighbourBatches, NeighbourhoodBatches, RandomBatches,
                                              VideoClipBatches)
from freezeframe.train.retrieval import first_caption_per_video, retrieval_metrics
from freezeframe.train.run import RunInfo, load_head
from freezeframe.train.loop import (TrainConfig, cosine_schedule, finish_epoch, resolve_device, restore_last,
                                        seed_everything, write_metrics)
from freezeframe.heads.videoclip import VideoCLIP, VideoClipConfig, build_videoclip
from freezeframe.train.schedule import StepSchedule
from freezeframe.train.videotext import VideoTextPairs, WindowSampling, collate_pairs, open_set
from freezeframe.text.captions import read_captions

HEAD = "videoclip"
TOWERS = ("light", "bert")
RECALLS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10")


OPTIMIZER_CLASSES = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}


@dataclass(frozen=True)
class VideoTextConfig:
    """What a VideoCLIP run reads and how it batches; saved with the run (run.json `extra`)."""

    text_set: str
    loss: str = "videoclip"  # videoclip (raw dot products) or alpro (cosines over a learnable temperature)
    array: str | None = None  # video array [default: video_embedding if stored, else embed]
    text_layer: int | None = None  # tokens/<L> [default: the last stored layer]
    window: WindowSampling = field(default_factory=WindowSampling)
    retrieval_augmented: bool = False
    clusters: int | None = None  # k-means clusters per epoch [default: one per batch of captions]
    schedule: StepSchedule = field(default_factory=StepSchedule)
    towers: str = "light"  # light, or bert: the published recipe (heads.videoclip_bert)
    bert: str | None = None  # bert towers: the local BERT checkpoint directory
    merge_tokens: tuple[int, int] | None = None  # bert: adjacent captions merged to a MIN..MAX token budget
    normalize_video: bool = False  # each second's feature L2-normalised (the published recipe's S3D-G input)
    videos_per_batch: int | None = None  # bert: batches of videos x clips (VideoCLIP's 32 x 16)
    clips_per_video: int = 16

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}; choose {' or '.join(LOSSES)}.")
        if self.clusters is not None and self.clusters < 1:
            raise InputError("--clusters must be at least 1.")
        if self.towers not in TOWERS:
            raise InputError(f"unknown towers {self.towers!r}; choose {' or '.join(TOWERS)}.")
        if self.towers == "bert" and not self.bert:
            raise InputError("--towers bert needs --bert: a local BERT checkpoint directory.")
        if self.merge_tokens is not None and not 2 <= self.merge_tokens[0] <= self.merge_tokens[1]:
            raise InputError("--merge-tokens takes MIN,MAX with 2 <= MIN <= MAX.")

    @property
    def token_ids(self) -> bool:
        """Whether the text tower reads token ids (BERT towers) rather than cached token states."""
        return self.towers == "bert"


def similarity(video: torch.Tensor, text: torch.Tensor, loss: str) -> torch.Tensor:
    """(texts, videos) scores as the loss trained them: cosines for alpro, raw dot products for videoclip."""
    if loss == "alpro":
        video, text = F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)
    return text.float() @ video.float().T


@torch.no_grad()
def embed_pairs(model: VideoCLIP, dataset: VideoTextPairs, batch_size: int = 64,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(video embeddings, text embeddings), one row per item of `dataset`, in order."""
    device = torch.device(device)
    model.eval().to(device)
    videos, texts = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_pairs):
        v, t = model(*[batch[k].to(device) for k in model.INPUTS])
        videos.append(v.float().cpu())
        texts.append(t.float().cpu())
    return torch.cat(videos), torch.cat(texts)


def retrieval_eval(model: VideoCLIP, dataset: VideoTextPairs, loss: str, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> dict:
    """Retrieval metrics over a dataset of one caption per video (item i's caption pairs with item i's video)."""
    video, text = embed_pairs(model, dataset, batch_size, device)
    return retrieval_metrics(similarity(video, text, loss))


def mean_recall(metrics: dict) -> float:
    return sum(metrics[k] for k in RECALLS) / len(RECALLS)


def train_videoclip(model: VideoCLIP, train_set: VideoTextPairs, val_set: VideoTextPairs | None,
                    config: TrainConfig, run_dir: str | Path, *, loss: str = "videoclip",
                    batches: RandomBatches | None = None, schedule: StepSchedule = StepSchedule(),
                    resume: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    """Contrastive training of `model` on (window, caption) pairs; one checkpoint per epoch. Returns the history.

    `batches` defaults to random batches of `config.batch_size`; pass `NeighbourhoodBatches` for
    retrieval-augmented ones. An epoch is `schedule.passes_per_epoch` passes over the captions.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    criterion = LOSSES[loss]().to(device)
    model.to(device)
    params = [p for p in [*model.parameters(), *criterion.parameters()] if p.requires_grad]
    decay = {"weight_decay": config.weight_decay} if schedule.optimizer == "adamw" else {}
    optimizer = OPTIMIZER_CLASSES[schedule.optimizer](params, lr=config.lr, betas=tuple(schedule.betas), **decay)
    batches = batches or RandomBatches(len(train_set), config.batch_size, config.seed)
    passes = schedule.passes_per_epoch(config.epochs, len(batches))
    steps_per_epoch = passes * len(batches)
    total_steps = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch) if config.warmup_epochs else schedule.warmup(total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps, warmup))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    parts = {"head": model, "loss": criterion, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
    start_epoch, best_score, history = restore_last(run_dir, parts, config, device, resume, log)
    write_metrics(run_dir, history)
    if start_epoch == 0 and passes > 1:
        log(f"{len(train_set)} captions make {len(batches)} steps a pass: {passes} passes per epoch, "
            f"{total_steps} steps in all (--min-steps {schedule.min_steps})")

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        total, loss_sum = 0, 0.0
        for data_pass in range(epoch * passes, (epoch + 1) * passes):
            train_set.set_epoch(data_pass)
            batches.set_epoch(data_pass)
            if hasattr(batches, "refresh"):  # model-based neighbourhoods: re-embed with the current weights
                batches.refresh(model, train_set, device)
            loader = DataLoader(train_set, batch_sampler=batches, collate_fn=collate_pairs,
                                num_workers=config.workers, pin_memory=device.type == "cuda")
            model.train()
            for batch in tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                              disable=not config.progress):
                inputs = [batch[k].to(device, non_blocking=True) for k in model.INPUTS]
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    video, text = model(*inputs)
                    value = criterion(video, text)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(value).backward()
                if schedule.clip_grad:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, schedule.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total += len(batch["index"])
                loss_sum += float(value.detach()) * len(batch["index"])
        metrics = {"epoch": epoch, "train_loss": loss_sum / max(total, 1), "lr": optimizer.param_groups[0]["lr"],
                   "steps": (epoch + 1) * steps_per_epoch}
        if val_set is not None:
            val = retrieval_eval(model, val_set, loss, config.batch_size, device)
            metrics.update({f"val_{k}": v for k, v in val.items() if k != "num_pairs"})
            metrics["val_mean_recall"] = mean_recall(val)
        metrics["seconds"] = time.perf_counter() - started
        score = metrics.get("val_mean_recall", -metrics["train_loss"])
        shown = ("train_loss", "val_t2v_r1", "val_v2t_r1", "val_mean_recall")
        best_score = finish_epoch(run_dir, parts, history, metrics, score, best_score, config, shown, log)
    return history


def train_videoclip_run(store: str | Path, video_set: str, captions: str | Path, out: str | Path,
                        data: VideoTextConfig, *, val_captions: str | Path | None = None,
                        head_options: dict | None = None, config: TrainConfig = TrainConfig(),
                        resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train a VideoCLIP head from a captions file; returns the final epoch's metrics."""
    texts = open_set(store, data.text_set, "text feature set")
    max_tokens = int(texts.provenance.get("max_length") or 64)
    if data.merge_tokens:
        max_tokens = max(max_tokens, data.merge_tokens[1] + 2)
    defaults = {"towers": data.towers, "checkpoint": data.bert, "max_seconds": VideoClipConfig.max_seconds}
    if data.towers == "bert":
        defaults.update(max_seconds=32, video_layers=6, text_layers=0)  # MMPT: 32 s, 6 video layers, all text
    options = {"max_tokens": max_tokens, **defaults, **(head_options or {})}
    if data.window.max_seconds > options["max_seconds"]:
        raise InputError(f"--window-seconds maximum {data.window.max_seconds} exceeds the head's "
                         f"{options['max_seconds']} seconds.")
    read = dict(array=data.array, text_layer=data.text_layer, max_tokens=options["max_tokens"],
                max_seconds=options["max_seconds"], token_ids=data.token_ids, normalize_video=data.normalize_video)
    train_set = VideoTextPairs(store, video_set, data.text_set, read_captions(captions), sampling=data.window,
                               seed=config.seed, merge_tokens=data.merge_tokens, **read)
    val_set = None
    if val_captions is not None:
        val_set = VideoTextPairs(store, video_set, data.text_set, first_caption_per_video(read_captions(val_captions)),
                                 **read)
    head_config = VideoClipConfig(video_dim=train_set.video_dim, text_dim=train_set.text_dim, **options)
    seed_everything(config.seed)  # initial weights follow --seed
    model = build_videoclip(head_config)
    saved = replace(data, array=train_set.array, text_layer=train_set.text_layer)  # what evaluation reads
    RunInfo(HEAD, asdict(head_config), str(store), video_set, [],
            f"overlapped:{data.window.min_seconds}-{data.window.max_seconds}s", "whole-video", asdict(config),
            extra=asdict(saved)).save(out)
    batches = None
    if data.videos_per_batch:
        kind = ModelNeighbourBatches if data.retrieval_augmented else VideoClipBatches
        batches = kind(train_set.item_videos(), data.videos_per_batch, data.clips_per_video, config.seed)
    elif data.retrieval_augmented:
        batches = NeighbourhoodBatches(train_set.item_videos(), train_set.pooled_videos(), config.batch_size,
                                       data.clusters, config.seed)
    history = train_videoclip(model, train_set, val_set, config, out, loss=data.loss, batches=batches,
                              schedule=data.schedule, resume=resume, log=log)
    return history[-1] if history else {}


def load_text_config(info: RunInfo) -> VideoTextConfig:
    extra = dict(info.extra)
    extra["window"] = WindowSampling(**extra.get("window", {}))
    if extra.get("merge_tokens") is not None:
        extra["merge_tokens"] = tuple(extra["merge_tokens"])
    schedule = dict(extra.get("schedule", {}))
    extra["schedule"] = StepSchedule(**{**schedule, **({"betas": tuple(schedule["betas"])} if "betas" in schedule else {})})
    return VideoTextConfig(**extra)


def eval_videoclip_run(run_dir: str | Path, captions: str | Path, store: str | Path | None = None,
                       text_set: str | None = None, batch_size: int = 64, device: str = "auto",
                       trust_checkpoint: bool = False) -> dict:
    """Text->video and video->text retrieval of a run's best checkpoint: whole videos, one caption per video."""
    model, info = load_head(run_dir, trust_checkpoint=trust_checkpoint)
    if info.head != HEAD:
        raise InputError(f"{run_dir} is a {info.head} run; evaluate it with --labels, not --captions.")
    data = load_text_config(info)
    config = model.config
    dataset = VideoTextPairs(store or info.store, info.feature_set, text_set or data.text_set,
                             first_caption_per_video(read_captions(captions)), array=data.array,
                             text_layer=data.text_layer, max_seconds=config.max_seconds, max_tokens=config.max_tokens,
                             token_ids=data.token_ids, normalize_video=data.normalize_video)
    if dataset.video_dim != config.video_dim or dataset.text_dim != config.text_dim:
        raise InputError(f"features are {dataset.video_dim}-d video / {dataset.text_dim}-d text but the run was "
                         f"trained on {config.video_dim}-d / {config.text_dim}-d; pass the store and text set it "
                         "was trained with.")
    result = retrieval_eval(model, dataset, data.loss, batch_size, resolve_device(device))
    return {**result, "head": info.head, "feature_set": info.feature_set, "text_set": text_set or data.text_set}
