"""`freezeframe train videoclip`: VideoCLIP towers trained contrastively on cached video and text features."""

from __future__ import annotations

import json

import click

from freezeframe.heads.videoclip_schedule import StepSchedule

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
@click.option("--width", type=int, default=256, show_default=True)
@click.option("--video-layers", type=int, default=2, show_default=True)
@click.option("--text-layers", type=int, default=1, show_default=True)
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
@click.option("--lr", type=float, default=4e-4, show_default=True)
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
def train_videoclip(store, feature_set, text_set, captions, val, out, loss, array, text_layer, width, video_layers,
                    text_layers, heads, dropout, window_seconds, retrieval_augmented, clusters, epochs, batch_size, lr,
                    weight_decay, warmup_epochs, min_steps, warmup_steps, clip_grad, seed, workers, device, resume, trust_checkpoint, no_progress) -> None:
    """VideoCLIP head: video and text transformers over cached features, trained with symmetric InfoNCE."""
    from freezeframe.errors import InputError
    from freezeframe.heads.training import TrainConfig
    from freezeframe.heads.videoclip_training import VideoTextConfig, train_videoclip_run
    from freezeframe.heads.videotext import WindowSampling

    if len(window_seconds) != 2:
        raise InputError(f"--window-seconds takes MIN,MAX (two integers), got {len(window_seconds)} values.")
    if width % heads:
        raise InputError(f"--width {width} must be divisible by --heads {heads}.")
    if batch_size < 2:
        raise InputError("--batch-size must be at least 2: a contrastive batch needs negatives.")
    data = VideoTextConfig(text_set=text_set, loss=loss, array=array, text_layer=text_layer,
                           window=WindowSampling(*window_seconds), retrieval_augmented=retrieval_augmented,
                           clusters=clusters, schedule=StepSchedule(min_steps=min_steps, warmup_steps=warmup_steps,
                                                                     clip_grad=clip_grad))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         warmup_epochs=warmup_epochs, seed=seed, workers=workers, device=device,
                         progress=not no_progress, trust_checkpoint=trust_checkpoint)
    head_options = {"width": width, "video_layers": video_layers, "text_layers": text_layers, "heads": heads,
                    "dropout": dropout}
    metrics = train_videoclip_run(store, feature_set, captions, out, data, val_captions=val, head_options=head_options,
                                  config=config, resume=resume, log=click.echo)
    click.echo(json.dumps({"run": out, **metrics}))
