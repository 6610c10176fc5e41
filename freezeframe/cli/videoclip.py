"""`freezeframe train videoclip`: VideoCLIP towers trained contrastively on cached video and text features."""

from __future__ import annotations

import json

import click

from freezeframe.train.schedule import TOWER_OPTIMIZERS, StepSchedule

from freezeframe.cli.group import int_list
from freezeframe.cli.train import train


@train.command("videoclip")
@click.option("--store", required=True, help="Store directory holding the video and the text feature sets.")
@click.option("--set", "feature_set", required=True,
              help="Video feature set: one row per second (S3D-G windows, or CLIP frames at --fps 1).")
@click.option("--text-set", required=True, help="Text feature set of the captions (extract-text --backbone bert).")
@click.option("--captions", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Training captions: JSONL or CSV with video_id, caption_id, start, end, text.")
@click.option("--val", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Validation captions; the best checkpoint has the highest mean of R@1/5/10 both ways.")
@click.option("--out", required=True, help="Run directory for checkpoints, metrics.jsonl and curves.png.")
@click.option("--loss", type=click.Choice(["videoclip", "alpro"]), default="videoclip", show_default=True,
              help="InfoNCE on raw dot products (VideoCLIP) or on cosines over a learnable temperature (ALPRO).")
@click.option("--array", default=None, help="Video array [default: video_embedding if stored, else embed].")
@click.option("--text-layer", type=int, default=None, help="Token states tokens/<L> [default: the last stored].")
@click.option("--towers", type=click.Choice(["light", "bert"]), default="light", show_default=True,
              help="light: random towers on cached token states; bert: VideoCLIP as published, BERT-initialised "
                   "towers from --bert fine-tuned on token ids.")
@click.option("--bert", type=click.Path(exists=True, file_okay=False), default=None,
              help="--towers bert: local transformers BERT directory both towers start from.")
@click.option("--merge-tokens", type=int_list, default=None,
              help="MIN,MAX: join each timed caption with the video's next ones up to a random MIN..MAX token "
                   "budget (--towers bert; VideoCLIP's 8,64).")
@click.option("--normalize-video/--raw-video", default=False, show_default=True,
              help="L2-normalise each second's video feature (VideoCLIP's S3D-G input).")
@click.option("--videos-per-batch", type=int, default=None,
              help="Batches of videos x --clips-per-video captions each (VideoCLIP's 32 x 16) instead of "
                   "--batch-size random captions; with --retrieval-augmented, videos are grouped by nearest "
                   "neighbours under the current model, re-embedded every pass.")
@click.option("--clips-per-video", type=int, default=16, show_default=True)
@click.option("--width", type=int, default=256, show_default=True)
@click.option("--video-layers", type=int, default=None, help="[default: 2 light, 6 bert (its first layers)]")
@click.option("--text-layers", type=int, default=None, help="[default: 1 light, all of the checkpoint's for bert]")
@click.option("--heads", type=int, default=4, show_default=True)
@click.option("--dropout", type=float, default=0.1, show_default=True)
@click.option("--window-seconds", type=int_list, default="3,32", show_default=True,
              help="MIN,MAX seconds of the video window drawn around each timed caption.")
@click.option("--retrieval-augmented/--random-batches", default=False, show_default=True,
              help="Draw each batch from one k-means cluster of the videos' pooled features (re-clustered "
                   "every epoch).")
@click.option("--clusters", type=int, default=None, help="k-means clusters [default: captions / batch size].")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=None, help="[default: 4e-4 light (AdamW), 5e-5 bert (Adam, betas 0.9, 0.98)]")
@click.option("--weight-decay", type=float, default=0.05, show_default=True)
@click.option("--warmup-epochs", type=float, default=0.0, show_default=True,
              help="Warm-up in epochs; 0 uses --warmup-steps.")
@click.option("--min-steps", type=int, default=StepSchedule.min_steps, show_default=True,
              help="Train at least this many optimisation steps: with few captions each epoch makes several passes.")
@click.option("--warmup-steps", type=int, default=StepSchedule.warmup_steps, show_default=True,
              help="Linear warm-up steps (VideoCLIP's 1,000), capped at a tenth of the run's steps.")
@click.option("--clip-grad", type=float, default=StepSchedule.clip_grad, show_default=True,
              help="Clip the gradient norm to this (VideoCLIP's 2.0); 0 turns clipping off.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--device", default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the run's last checkpoint.")
@click.option("--trust-checkpoint", is_flag=True,
              help="With --resume: load a last.pt that is a full pickle (it can run code; only if you trust it).")
@click.option("--no-progress", is_flag=True)
def train_videoclip(store, feature_set, text_set, captions, val, out, loss, array, text_layer, towers, bert,
                    merge_tokens, normalize_video, videos_per_batch, clips_per_video, width, video_layers,
                    text_layers, heads, dropout, window_seconds, retrieval_augmented, clusters, epochs, batch_size, lr,
                    weight_decay, warmup_epochs, min_steps, warmup_steps, clip_grad, seed, workers, device, resume, trust_checkpoint, no_progress) -> None:
    """VideoCLIP head: video and text transformers over cached features, trained with symmetric InfoNCE."""
    from freezeframe.errors import InputError
    from freezeframe.train.loop import TrainConfig
    from freezeframe.train.videoclip import VideoTextConfig, train_videoclip_run
    from freezeframe.train.videotext import WindowSampling

    if len(window_seconds) != 2:
        raise InputError(f"--window-seconds takes MIN,MAX (two integers), got {len(window_seconds)} values.")
    if merge_tokens and len(merge_tokens) != 2:
        raise InputError(f"--merge-tokens takes MIN,MAX (two integers), got {len(merge_tokens)} values.")
    optimizer = TOWER_OPTIMIZERS[towers]
    video_layers_given, text_layers_given = video_layers, text_layers
    video_layers = 2 if video_layers is None else video_layers
    text_layers = 1 if text_layers is None else text_layers
    lr = optimizer["lr"] if lr is None else lr
    if width % heads:
        raise InputError(f"--width {width} must be divisible by --heads {heads}.")
    if batch_size < 2:
        raise InputError("--batch-size must be at least 2: a contrastive batch needs negatives.")
    data = VideoTextConfig(text_set=text_set, loss=loss, array=array, text_layer=text_layer,
                           window=WindowSampling(*window_seconds), retrieval_augmented=retrieval_augmented,
                           clusters=clusters, towers=towers, bert=bert,
                           merge_tokens=tuple(merge_tokens) if merge_tokens else None, normalize_video=normalize_video,
                           videos_per_batch=videos_per_batch, clips_per_video=clips_per_video,
                           schedule=StepSchedule(min_steps=min_steps, warmup_steps=warmup_steps, clip_grad=clip_grad,
                                                 optimizer=optimizer["optimizer"], betas=optimizer["betas"]))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         warmup_epochs=warmup_epochs, seed=seed, workers=workers, device=device,
                         progress=not no_progress, trust_checkpoint=trust_checkpoint)
    head_options = {"width": width, "video_layers": video_layers, "text_layers": text_layers, "heads": heads,
                    "dropout": dropout}
    if towers == "bert":  # the checkpoint sets width, heads and dropout; MMPT's depths unless given
        head_options = {k: v for k, v in (("video_layers", video_layers_given), ("text_layers", text_layers_given))
                        if v is not None}
    metrics = train_videoclip_run(store, feature_set, captions, out, data, val_captions=val, head_options=head_options,
                                  config=config, resume=resume, log=click.echo)
    click.echo(json.dumps({"run": out, **metrics}))
