"""Training the VideoCLIP head on cached video and text features, and its text<->video retrieval evaluation.

What `freezeframe train videoclip` and `freezeframe eval RUN --captions ...` run: the shared fit loop with the
contrastive objective below. The best checkpoint is the one with the highest validation mean recall (R@1/5/10
both ways). Its length is counted in optimisation steps with a floor: when the epochs' passes over a small
caption file give fewer than `min_steps` steps, each epoch makes several passes, so a 64-caption pilot still
learns. Warm-up is in steps and gradients are clipped, as VideoCLIP trains (`CONTRASTIVE_TRAINING`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from freezeframe.errors import InputError
from freezeframe.heads.contrastive import LOSSES
from freezeframe.heads.registry import get_head, head_config
from freezeframe.heads.videoclip import VideoCLIP
from freezeframe.options import FieldError, option
from freezeframe.store.store import open_feature_set
from freezeframe.text.captions import read_captions
from freezeframe.train.loop import TrainConfig, fit, seed_everything
from freezeframe.train.neighbourhoods import (ModelNeighbourBatches, NeighbourhoodBatches, RandomBatches,
                                              VideoClipBatches)
from freezeframe.train.predictions import retrieval_rows, write_retrieval_predictions
from freezeframe.train.retrieval import first_caption_per_video, retrieval_metrics
from freezeframe.train.run import RunInfo, load_head, new_run, prepare_run_dir
from freezeframe.train.videotext import SpanSeconds, VideoTextPairs, collate_pairs, embed_pairs  # noqa: F401

HEAD = "videoclip"
RECALLS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10")
# VideoCLIP's training recipe: 1,000 warm-up steps (capped at a tenth of the run), gradients clipped to norm 2, and
# at least 2,000 steps (freezeframe's floor for small caption files: at 500, light towers on 64 one-second pairs
# still underfit the training pairs and never learn the order of frames, benchmarks/heldout_captions.py); the
# published BERT towers train with Adam at 5e-5, betas (0.9, 0.98) (fairseq MMPT).
CONTRASTIVE_TRAINING = TrainConfig(min_steps=2000, warmup_steps=1000, clip_grad=2.0)
TOWER_TRAINING = {"light": {}, "bert": {"lr": 5e-5, "optimizer": "adam", "betas": (0.9, 0.98)}}


@dataclass(frozen=True)
class VideoTextConfig:
    """What a VideoCLIP run reads and how it pairs and batches; saved with the run (run.json `extra`)."""

    text_set: str = option("", "text feature set of the captions (extract-text --backbone bert)", shown="required")
    loss: str = option("videoclip", "videoclip: InfoNCE on raw dot products (VideoCLIP); alpro: on cosines over a "
                                    "learnable temperature (ALPRO)")
    array: str | None = option(None, "video array", shown="video_embedding if stored, else embed")
    text_layer: int | None = option(None, "token states tokens/<L> the light towers read", shown="the last stored")
    span_seconds: tuple[int, int] = option((3, 32), "MIN,MAX seconds of the video span paired with each timed "
                                                    "caption in training (VideoCLIP's 3,32)")
    retrieval_augmented: bool = option(False, "draw each batch from one k-means cluster of the videos' pooled "
                                              "features (re-clustered every epoch); with --videos-per-batch, from "
                                              "nearest neighbours under the model being trained")
    clusters: int | None = option(None, "k-means clusters", shown="captions / batch size")
    merge_tokens: tuple[int, int] | None = option(None, "MIN,MAX: join each timed caption with the video's next "
                                                        "ones up to a random MIN..MAX token budget (bert towers; "
                                                        "VideoCLIP's 8,64)", shown="off")
    normalize_video: bool = option(False, "L2-normalise each row's video feature (VideoCLIP's S3D-G input)")
    pool_seconds: float = option(0.0, "average the video rows into bins of this many seconds before the video tower "
                                      "(1: one row per second, as VideoCLIP's S3D-G input; 0: every stored row, in "
                                      "time order, so frames inside a second keep their order)")
    videos_per_batch: int | None = option(None, "batches of videos x --clips-per-video captions each (VideoCLIP's "
                                                "32 x 16) instead of --batch-size random captions", shown="off")
    clips_per_video: int = option(16, "captions per video in --videos-per-batch batches")

    def __post_init__(self) -> None:
        if not self.text_set:
            raise FieldError("text_set", "is required: the text feature set of the captions.")
        if self.loss not in LOSSES:
            raise FieldError("loss", f"{self.loss!r} is unknown; choose {' or '.join(LOSSES)}.")
        if self.clusters is not None and self.clusters < 1:
            raise FieldError("clusters", "must be at least 1.")
        if self.merge_tokens is not None and not 2 <= self.merge_tokens[0] <= self.merge_tokens[1]:
            raise FieldError("merge_tokens", "takes MIN,MAX with 2 <= MIN <= MAX.")
        SpanSeconds(*self.span_seconds)
        if self.pool_seconds < 0:
            raise FieldError("pool_seconds", "must not be negative.")

    @classmethod
    def from_saved(cls, saved: dict) -> "VideoTextConfig":
        """The config of a run.json `extra`; runs saved before spans were named keep their `window` lengths, and
        runs saved before `pool_seconds` read their rows averaged into seconds, as they were trained."""
        if "window" in saved:
            saved = {**saved, "span_seconds": (saved["window"]["min_seconds"], saved["window"]["max_seconds"])}
        saved = {"pool_seconds": 1.0, **saved}
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names})


def similarity(video: torch.Tensor, text: torch.Tensor, loss: str) -> torch.Tensor:
    """(texts, videos) scores as the loss trained them: cosines for alpro, raw dot products for videoclip."""
    if loss == "alpro":
        video, text = F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)
    return text.float() @ video.float().T


@torch.no_grad()
def retrieval_eval(model: VideoCLIP, dataset: VideoTextPairs, loss: str, batch_size: int = 64,
                   device: str | torch.device = "cpu") -> dict:
    """Retrieval metrics over a dataset of one caption per video (item i's caption pairs with item i's video)."""
    video, text = embed_pairs(model, dataset, batch_size, device)
    return retrieval_metrics(similarity(video, text, loss))


def mean_recall(metrics: dict) -> float:
    return sum(metrics[k] for k in RECALLS) / len(RECALLS)


class Contrastive:
    """The contrastive objective of the fit loop: (span, caption) pairs in batches from `batches` (random ones of
    `config.batch_size` by default), a symmetric InfoNCE `loss`, retrieval on the validation pairs."""

    more_passes = True
    score_key = "val_mean_recall"
    shown = ("train_loss", "val_t2v_r1", "val_v2t_r1", "val_mean_recall")
    unit = "captions"

    def __init__(self, train_set: VideoTextPairs, val_set: VideoTextPairs | None, config: TrainConfig,
                 loss: str = "videoclip", batches: RandomBatches | None = None) -> None:
        self.train_set, self.val_set, self.config, self.loss_name = train_set, val_set, config, loss
        self.sampler = batches or RandomBatches(len(train_set), config.batch_size, config.seed)
        self.modules: dict[str, nn.Module] = {"loss": LOSSES[loss]()}

    def __len__(self) -> int:
        return len(self.train_set)

    def steps_per_pass(self) -> int:
        return len(self.sampler)

    def batches(self, head: nn.Module, data_pass: int, device: torch.device) -> Iterable:
        self.train_set.set_epoch(data_pass)
        self.sampler.set_epoch(data_pass)
        if hasattr(self.sampler, "refresh"):  # model-based neighbourhoods: re-embed with the current weights
            self.sampler.refresh(head, self.train_set, device)
        return DataLoader(self.train_set, batch_sampler=self.sampler, collate_fn=collate_pairs,
                          num_workers=self.config.workers, pin_memory=device.type == "cuda")

    def loss(self, head: nn.Module, batch: dict, device: torch.device) -> tuple[torch.Tensor, int, dict[str, float]]:
        video, text = head(*[batch[k].to(device, non_blocking=True) for k in head.INPUTS])
        return self.modules["loss"](video, text), len(batch["index"]), {}

    def validate(self, head: nn.Module, device: torch.device) -> dict:
        if self.val_set is None:
            return {}
        val = retrieval_eval(head, self.val_set, self.loss_name, self.config.batch_size, device)
        return {**{f"val_{k}": v for k, v in val.items() if k != "num_pairs"}, "val_mean_recall": mean_recall(val)}


def train_videoclip_run(store: str | Path, video_set: str, captions: str | Path, out: str | Path,
                        data: VideoTextConfig, *, head: str = HEAD, val_captions: str | Path | None = None,
                        head_options: dict | None = None, config: TrainConfig = CONTRASTIVE_TRAINING,
                        resume: bool = False, overwrite: bool = False,
                        log: Callable[[str], None] = print) -> dict:
    """Train a contrastive head (VideoCLIP's by default) from a captions file; returns the final epoch's metrics.

    A contrastive head's config has `max_seconds`, `max_tokens` and `reads_token_ids`, and its module lists the
    batch entries its forward takes in `INPUTS`, returning (video embeddings, text embeddings).

    An `out` that already holds a run needs `resume` or `overwrite`; a start that fails leaves nothing behind."""
    out = Path(out)
    prepare_run_dir(out, resume, overwrite)
    videos, texts = open_feature_set(store, video_set), open_feature_set(store, data.text_set)
    max_tokens = int(texts.provenance.get("max_length") or 64)
    if data.merge_tokens:
        max_tokens = max(max_tokens, data.merge_tokens[1] + 2)
    head_cfg = head_config(head, videos, texts, array=data.array, text_layer=data.text_layer, max_tokens=max_tokens,
                           **(head_options or {}))
    spans = SpanSeconds(*data.span_seconds)
    if spans.max_seconds > head_cfg.max_seconds:
        raise FieldError("span_seconds", f"maximum {spans.max_seconds} exceeds the head's {head_cfg.max_seconds} "
                                         "seconds.")
    read = dict(array=data.array, text_layer=data.text_layer, max_tokens=head_cfg.max_tokens,
                max_seconds=head_cfg.max_seconds, token_ids=head_cfg.reads_token_ids,
                normalize_video=data.normalize_video, pool_seconds=data.pool_seconds)
    train_set = VideoTextPairs(store, video_set, data.text_set, read_captions(captions), spans=spans,
                               seed=config.seed, merge_tokens=data.merge_tokens, **read)
    val_set = None
    if val_captions is not None:
        val_set = VideoTextPairs(store, video_set, data.text_set, first_caption_per_video(read_captions(val_captions)),
                                 **read)
    seed_everything(config.seed)  # initial weights follow --seed
    model = get_head(head).build(head_cfg)
    saved = replace(data, array=train_set.array, text_layer=train_set.text_layer)  # what evaluation reads
    run = RunInfo(head, asdict(head_cfg), str(store), video_set, [],
                  f"overlapped:{spans.min_seconds}-{spans.max_seconds}s", "whole-video", asdict(config),
                  extra=asdict(saved))
    batches = None
    if data.videos_per_batch:
        kind = ModelNeighbourBatches if data.retrieval_augmented else VideoClipBatches
        batches = kind(train_set.item_videos(), data.videos_per_batch, data.clips_per_video, config.seed)
    elif data.retrieval_augmented:
        batches = NeighbourhoodBatches(train_set.item_videos(), train_set.pooled_videos(), config.batch_size,
                                       data.clusters, config.seed)
    with new_run(out, run):
        history = fit(model, Contrastive(train_set, val_set, config, data.loss, batches), config, out, resume, log)
    return history[-1] if history else {}


def eval_videoclip_run(run_dir: str | Path, captions: str | Path, store: str | Path | None = None,
                       text_set: str | None = None, batch_size: int = 64, device: str = "auto",
                       trust_checkpoint: bool = False, predictions: str | Path | None = None) -> dict:
    """Text->video and video->text retrieval of a run's best checkpoint: whole videos, one caption per video.

    `predictions` writes, per query both ways, its pair, the pair's rank and the top-10 ids and scores."""
    from freezeframe.devices import resolve_device

    model, info = load_head(run_dir, trust_checkpoint=trust_checkpoint)
    if get_head(info.head).task != "contrastive":
        raise InputError(f"{run_dir} is a {info.head} run; evaluate it with --labels, not --captions.")
    data = VideoTextConfig.from_saved(info.extra)
    config = model.config
    dataset = VideoTextPairs(store or info.store, info.feature_set, text_set or data.text_set,
                             first_caption_per_video(read_captions(captions)), array=data.array,
                             text_layer=data.text_layer, max_seconds=config.max_seconds, max_tokens=config.max_tokens,
                             token_ids=config.reads_token_ids, normalize_video=data.normalize_video,
                             pool_seconds=data.pool_seconds)
    if dataset.video_dim != config.video_dim or dataset.text_dim != config.text_dim:
        raise InputError(f"features are {dataset.video_dim}-d video / {dataset.text_dim}-d text but the run was "
                         f"trained on {config.video_dim}-d / {config.text_dim}-d; pass the store and text set it "
                         "was trained with.")
    video, text = embed_pairs(model, dataset, batch_size, resolve_device(device))
    scores = similarity(video, text, data.loss)
    result = retrieval_metrics(scores)
    if predictions is not None:
        write_retrieval_predictions(predictions, retrieval_rows(scores, [c.caption_id for c in dataset.captions],
                                                                [c.video_id for c in dataset.captions]))
    return {**result, "head": info.head, "feature_set": info.feature_set, "text_set": text_set or data.text_set}
