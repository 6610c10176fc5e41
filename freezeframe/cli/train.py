"""`freezeframe train {probe,temporal,evl}` and `freezeframe eval`."""

from __future__ import annotations

import json
import sys

import click

from freezeframe.cli.group import main


def _common_options(val_help: str, frames_help: str):
    """Options every `train` subcommand shares, with help worded for that head."""
    return [
        click.option("--store", required=True, help="Store directory."),
        click.option("--set", "feature_set", required=True, help="Feature-set name inside the store."),
        click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
                     help="Training labels: CSV with video_id,label."),
        click.option("--val", type=click.Path(exists=True, dir_okay=False), default=None, help=val_help),
        click.option("--out", required=True, help="Run directory (run.json, checkpoints, metrics.jsonl, curves.png)."),
        click.option("--frames", default=None, help=frames_help),
        click.option("--eval-frames", default=None,
                     help="Evaluation frames: all, uniform:T or stored-clips [default: stored-clips for --clips "
                          "stores, else uniform:8]."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--preload/--no-preload", default=None,
                     help="Read the head's arrays into memory once [default: when they fit in 2 GiB]."),
        click.option("--overwrite", is_flag=True, help="Replace the run already in --out (its checkpoints and metrics)."),
        click.option("--no-progress", is_flag=True, help="Hide progress bars."),
    ]


GRADIENT_OPTIONS = [
    click.option("--epochs", type=int, default=None, help="Epochs to train exactly [default: 10, raised to reach --min-steps]."),
    click.option("--steps", type=int, default=None, help="Optimisation steps to train (rounded up to whole epochs)."),
    click.option("--min-steps", type=int, default=200, show_default=True,
                 help="Without --epochs/--steps: train at least this many steps (small sets get more epochs)."),
    click.option("--batch-size", type=int, default=32, show_default=True),
    click.option("--lr", type=float, default=4e-4, show_default=True),
    click.option("--weight-decay", type=float, default=0.05, show_default=True),
    click.option("--warmup-epochs", type=float, default=0.0, show_default=True),
    click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes."),
    click.option("--device", default="auto", show_default=True),
    click.option("--resume", is_flag=True, help="Continue from the run's last checkpoint."),
    click.option("--trust-checkpoint", is_flag=True,
                 help="With --resume: load a last.pt that is a full pickle (it can run code; only if you trust it)."),
]
PROBE_DEFAULTS = {"epochs": None, "steps": None, "min_steps": 0, "batch_size": 32, "lr": 0.0, "weight_decay": 0.0,
                  "warmup_epochs": 0.0, "workers": 0, "device": "cpu", "resume": False, "trust_checkpoint": False}


def _apply(options, func):
    for option in reversed(options):
        func = option(func)
    return func


def _probe_options(func):
    return _apply(_common_options("Validation labels (CSV) that pick the L2 strength [default: 20% of --labels].",
                                  "Frames per video that are pooled: all or uniform:T [default: all]."), func)


def _gradient_options(func):
    common = _common_options("Validation labels (CSV); pick the best checkpoint.",
                             "Training frames per video: all, uniform:T or sparse-random:T [default: sparse-random:8].")
    return _apply(common + GRADIENT_OPTIONS, func)


def _train_config(kw: dict):
    from freezeframe.train.loop import TrainConfig

    length = {"epochs": kw["epochs"], "min_steps": 0} if kw["epochs"] is not None else {"min_steps": kw["min_steps"]}
    if kw["steps"] is not None:
        length = {"steps": kw["steps"], "min_steps": 0}
    return TrainConfig(**length, batch_size=kw["batch_size"], lr=kw["lr"], weight_decay=kw["weight_decay"],
                       warmup_epochs=kw["warmup_epochs"], seed=kw["seed"], workers=kw["workers"],
                       device=kw["device"], progress=not kw["no_progress"], trust_checkpoint=kw["trust_checkpoint"])


def _run_training(kind: str, head_options: dict, **kw) -> None:
    from freezeframe.train.jobs import train_run
    from freezeframe.train.loop import TrainingInterrupted

    if kw["epochs"] is not None and kw["steps"] is not None:
        raise click.UsageError("pass either --epochs or --steps, not both.")
    try:
        metrics = train_run(kind, kw["store"], kw["feature_set"], kw["labels"], kw["out"], val_labels=kw["val"],
                            train_frames=kw["frames"], eval_frames=kw["eval_frames"], head_options=head_options,
                            config=_train_config(kw), resume=kw["resume"], overwrite=kw["overwrite"],
                            preload=kw["preload"], log=click.echo)
    except (KeyboardInterrupt, TrainingInterrupted) as exc:
        done = getattr(exc, "epochs_done", 0)
        where = str(exc) if isinstance(exc, TrainingInterrupted) else "interrupted before training started"
        advice = ("continue with the same command and --resume" if done
                  else "nothing was kept; run the command again to start over")
        click.echo(f"{where}; {advice}.", err=True)
        sys.exit(130)
    click.echo(json.dumps({"run": kw["out"], **metrics}))


@main.group()
def train() -> None:
    """Train a head on cached features (probe, temporal, evl, videoclip)."""


@train.command("probe")
@_probe_options
@click.option("--array", default="embed", show_default=True, help="Per-frame array to probe (embed or cls).")
@click.option("--pooling", type=click.Choice(["mean", "middle"]), default="mean", show_default=True)
def train_probe(array, pooling, **kw) -> None:
    """Logistic-regression probe (L-BFGS, L2 swept on validation, refit on train + val)."""
    _run_training("probe", {"array": array, "pooling": pooling}, **PROBE_DEFAULTS, **kw)


@train.command("temporal")
@_gradient_options
@click.option("--array", default="embed", show_default=True)
@click.option("--width", type=int, default=128, show_default=True)
@click.option("--depth", type=int, default=1, show_default=True)
@click.option("--heads", type=int, default=4, show_default=True)
@click.option("--dropout", type=float, default=0.1, show_default=True)
def train_temporal(array, width, depth, heads, dropout, **kw) -> None:
    """ViViT-style temporal transformer over per-frame embeddings."""
    _run_training("temporal", {"array": array, "width": width, "depth": depth, "heads": heads, "dropout": dropout}, **kw)


@train.command("evl")
@_gradient_options
@click.option("--num-layers", type=int, default=None, help="Decoder layers = last N stored blocks [default: all stored].")
@click.option("--mlp-dropout", type=float, default=0.5, show_default=True)
@click.option("--cls-dropout", type=float, default=0.5, show_default=True)
@click.option("--no-temporal-conv", is_flag=True)
@click.option("--no-temporal-pos", is_flag=True)
@click.option("--no-cross-frame-attention", is_flag=True)
@click.option("--init", type=click.Choice(["reference", "identity"]), default="reference", show_default=True,
              help="reference: EVL's own init; identity: temporal convolution zero-initialised too.")
def train_evl(num_layers, mlp_dropout, cls_dropout, no_temporal_conv, no_temporal_pos, no_cross_frame_attention, init,
              **kw) -> None:
    """EVL decoder over the token maps of the last stored blocks."""
    options = {"mlp_dropout": mlp_dropout, "cls_dropout": cls_dropout, "temporal_conv": not no_temporal_conv,
               "temporal_pos_embed": not no_temporal_pos, "cross_frame_attention": not no_cross_frame_attention,
               "init": init}
    if num_layers:
        options["num_layers"] = num_layers
    _run_training("evl", options, **kw)


@main.command("eval")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV video_id,label (classifier runs).")
@click.option("--captions", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Captions JSONL/CSV (videoclip runs): whole videos, each video's first caption as its pair.")
@click.option("--text-set", default=None, help="Text feature set of --captions [default: the run's].")
@click.option("--store", default=None, help="Store to read [default: the run's training store].")
@click.option("--frames", default=None, help="Override the run's evaluation frames (uniform:T, stored-clips, all).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (top1, top5, num_videos; or t2v_r1 ... num_pairs for videoclip runs).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Load a checkpoint that is a full pickle (it can run code; only if you trust it).")
@click.option("--allow-provenance-mismatch", is_flag=True,
              help="Evaluate a feature set made differently (model, weights, preprocessing, sampling) from the run's.")
@click.option("--predictions", type=click.Path(dir_okay=False), default=None,
              help="Write per-video label, prediction, score and class probabilities (CSV; JSON lines for .jsonl).")
@click.option("--confusion", type=click.Path(dir_okay=False), default=None, help="Write a confusion-matrix PNG.")
def eval_command(run, labels, captions, text_set, store, frames, batch_size, device, as_json, trust_checkpoint,
                 allow_provenance_mismatch, predictions, confusion) -> None:
    """Top-1/top-5 accuracy (classifiers) or text<->video retrieval (videoclip) of RUN's best checkpoint."""
    from freezeframe.errors import InputError
    from freezeframe.train.jobs import eval_run
    from freezeframe.train.run import RunInfo

    if RunInfo.load(run).head == "videoclip":
        if captions is None or labels is not None:
            raise InputError(f"{run} is a videoclip run: pass --captions (not --labels) to evaluate retrieval.")
        from freezeframe.train.videoclip import eval_videoclip_run

        result = eval_videoclip_run(run, captions, store=store, text_set=text_set, batch_size=batch_size,
                                    device=device, trust_checkpoint=trust_checkpoint)
        recalls = {way: " ".join(f"R@{k} {100 * result[f'{way}_r{k}']:.1f}%" for k in (1, 5, 10))
                   for way in ("t2v", "v2t")}
        click.echo(json.dumps(result) if as_json else f"videoclip on {result['num_pairs']} video/caption pairs: "
                   f"text->video {recalls['t2v']}; video->text {recalls['v2t']}")
        return
    if labels is None or captions is not None:
        raise InputError(f"{run} is a classifier run: pass --labels (not --captions) with a CSV video_id,label.")
    result = eval_run(run, labels, store=store, frames=frames, batch_size=batch_size, device=device,
                      trust_checkpoint=trust_checkpoint, allow_provenance_mismatch=allow_provenance_mismatch,
                      predictions=predictions, confusion=confusion)
    for line in result.get("provenance_mismatch", []):
        click.echo(f"warning: provenance differs: {line}", err=True)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['head']} on {result['num_videos']} videos ({result['frames']}): "
                   f"top-1 {100 * result['top1']:.1f}%  top-5 {100 * result['top5']:.1f}%")


