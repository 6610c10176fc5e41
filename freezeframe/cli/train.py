"""`freezeframe train HEAD` (one subcommand per registered head) and `freezeframe eval`.

Each head's command is generated from the head registry when it is asked for: the options of its task (labels
or captions) and the options `freezeframe.api.option_groups` lists (training, the head's own, contrastive data).
The flags map onto `freezeframe.api.train_head`, which owns every default, recipe and refusal. Library configs
name their fields in errors; the command names the flag instead.
"""

from __future__ import annotations

import json
import sys
from typing import Callable

import click

from freezeframe.cli.group import main, refuse_ignored
from freezeframe.cli.options import given, with_options
from freezeframe.errors import InputError
from freezeframe.options import FieldError, format_default, given_values, options_of, options_table

def _classification_data(frames: tuple[str, str]) -> list[Callable]:
    return [
        click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
                     help="Training labels: CSV with video_id,label."),
        click.option("--frames", default=None, help="Training frames per video: all, uniform:T, sparse-random:T, "
                                                     f"dense-random:T:STRIDE or clips-random:N:T:CONSENSUS [default: "
                                                     f"{frames[0]}]."),
        click.option("--eval-frames", default=None, help="Evaluation frames: all, uniform:T, dense:T:STRIDE, "
                                                          f"clips:N:T:CONSENSUS or stored-clips [default: {frames[1]}; "
                                                          "stored-clips for a --clips set]."),
        click.option("--preload/--no-preload", default=None,
                     help="Read the head's arrays into memory once [default: when they fit in 2 GiB]."),
    ]


CONTRASTIVE_DATA = [
    click.option("--captions", required=True, type=click.Path(exists=True, dir_okay=False),
                 help="Training captions: JSONL or CSV with video_id, caption_id, start, end, text."),
]
RUN_OPTIONS = [
    click.option("--out", required=True, help="Run directory (run.json, checkpoints, metrics.jsonl, curves.png)."),
    click.option("--overwrite", is_flag=True, help="Replace the run already in --out (its checkpoints and metrics)."),
    click.option("--no-progress", is_flag=True, help="Hide progress bars."),
]
RESUME = click.option("--resume", is_flag=True, help="Continue from the run's last checkpoint.")


def _apply(options: list[Callable], command: Callable) -> Callable:
    for option in reversed(options):
        command = option(command)
    return command


def _store_options(task: str, solved: bool) -> list[Callable]:
    video = ("Video feature set: one row per second (S3D-G windows, or CLIP frames at --fps 1)."
             if task == "contrastive" else "Feature-set name inside the store.")
    val = {"classification": "Validation labels (CSV); pick the best checkpoint.",
           "contrastive": "Validation captions; the best checkpoint has the highest mean of R@1/5/10 both ways."}[task]
    if solved:
        val = "Validation labels (CSV) that pick the L2 strength [default: 20% of --labels]."
    return [click.option("--store", required=True, help="Store directory."),
            click.option("--set", "feature_set", required=True, help=video),
            click.option("--val", type=click.Path(exists=True, dir_okay=False), default=None, help=val)]


def head_command(name: str) -> click.Command:
    """The `freezeframe train NAME` command of a registered head."""
    from freezeframe.api import option_groups
    from freezeframe.heads.registry import get_head

    entry = get_head(name)
    groups = option_groups(name)
    generated = [o for group in groups.values() for o in group]
    flags = [o.flag for o in generated]
    if len(set(flags)) != len(flags):
        shared = sorted(f for f in flags if flags.count(f) > 1)[0]
        raise TypeError(f"head {name!r}: two config fields share the option {shared}")

    def run(**kw) -> None:
        values = {group: given_values(options, given(options, kw)) for group, options in groups.items()}
        flag_of = {o.field: o.flag for o in generated}
        try:
            _run_training(entry, values, kw)
        except FieldError as exc:
            raise InputError(f"{flag_of.get(exc.field, exc.field)} {exc.problem}") from None

    solved = entry.solve is not None
    data = _classification_data(entry.frames) if entry.task == "classification" else CONTRASTIVE_DATA
    options = _store_options(entry.task, solved) + data + RUN_OPTIONS + ([] if solved else [RESUME])
    summary = entry.summary.split(";")[0].split(":")[0]
    return click.command(name, help=f"{summary[0].upper()}{summary[1:]}.", short_help=summary)(
        _apply(options, with_options(generated)(run)))


def _run_training(entry, values: dict[str, dict], kw: dict) -> None:
    from freezeframe.api import train_head
    from freezeframe.train.loop import TrainingInterrupted

    options = {field: value for group in values.values() for field, value in group.items()}
    task = dict(labels=kw["labels"], frames=kw["frames"], eval_frames=kw["eval_frames"], preload=kw["preload"]) \
        if entry.task == "classification" else dict(captions=kw["captions"])
    try:
        metrics = train_head(entry.name, kw["store"], kw["feature_set"], out=kw["out"], val=kw["val"],
                             resume=kw.get("resume", False), overwrite=kw["overwrite"], progress=not kw["no_progress"],
                             log=click.echo, **task, **options)
    except (KeyboardInterrupt, TrainingInterrupted) as exc:
        done = getattr(exc, "epochs_done", 0)
        where = str(exc) if isinstance(exc, TrainingInterrupted) else "interrupted before training started"
        advice = ("continue with the same command and --resume" if done
                  else "nothing was kept; run the command again to start over")
        click.echo(f"{where}; {advice}.", err=True)
        sys.exit(130)
    click.echo(json.dumps({"run": kw["out"], **metrics}))


class HeadCommands(click.Group):
    """One subcommand per registered head, generated when asked for, so a head registered at run time has one."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from freezeframe.heads.registry import head_names

        return head_names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return head_command(name) if name in self.list_commands(ctx) else None


@main.group(cls=HeadCommands)
def train() -> None:
    """Train a head on cached features (probe, temporal, evl, videoclip, and any registered head)."""


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
              help="Write per-video label, prediction, score and class probabilities; for videoclip runs per query "
                   "(both ways) its pair's rank and the top-10 ids and scores (CSV; JSON lines for .jsonl).")
@click.option("--confusion", type=click.Path(dir_okay=False), default=None,
              help="Write a confusion-matrix PNG (classifier runs).")
def eval_command(run, labels, captions, text_set, store, frames, batch_size, device, as_json, trust_checkpoint,
                 allow_provenance_mismatch, predictions, confusion) -> None:
    """Top-1/top-5 accuracy (classifiers) or text<->video retrieval (contrastive heads) of RUN's best checkpoint."""
    from freezeframe.heads.registry import get_head
    from freezeframe.train.jobs import eval_run
    from freezeframe.train.run import RunInfo

    head = RunInfo.load(run).head
    retrieval = get_head(head).task == "contrastive"
    kind = f"{head} run (retrieval)" if retrieval else "classifier run"
    refuse_ignored({"confusion": (f"--confusion plots classes, which a {kind} has not; --predictions lists each "
                                  "query's top matches", not retrieval),
                    "frames": (f"--frames chooses a classifier's frames; a {kind} reads whole videos", not retrieval),
                    "allow_provenance_mismatch": ("--allow-provenance-mismatch is for classifier runs", not retrieval),
                    "text_set": (f"--text-set is for videoclip runs; this is a {kind}", retrieval)})
    if retrieval:
        if captions is None or labels is not None:
            raise InputError(f"{run} is a {head} run: pass --captions (not --labels) to evaluate retrieval.")
        from freezeframe.train.videoclip import eval_videoclip_run

        result = eval_videoclip_run(run, captions, store=store, text_set=text_set, batch_size=batch_size,
                                    device=device, trust_checkpoint=trust_checkpoint, predictions=predictions)
        recalls = {way: " ".join(f"R@{k} {100 * result[f'{way}_r{k}']:.1f}%" for k in (1, 5, 10))
                   for way in ("t2v", "v2t")}
        click.echo(json.dumps(result) if as_json else f"{head} on {result['num_pairs']} video/caption pairs: "
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
        top5 = f"  top-5 {100 * result['top5']:.1f}%" if result["num_classes"] > 5 else ""  # else always 100%
        click.echo(f"{result['head']} on {result['num_videos']} videos ({result['frames']}): "
                   f"top-1 {100 * result['top1']:.1f}%{top5}")


def markdown_tables() -> str:
    """The README's tables of the `train` options that are not a head's own: training (with each task's default)
    and the contrastive heads' data options, generated from the configs as the commands are."""
    from freezeframe.api import SOLVER_TRAIN_OPTIONS
    from freezeframe.train.loop import TrainConfig
    from freezeframe.train.videoclip import CONTRASTIVE_TRAINING, TOWER_TRAINING, VideoTextConfig

    classification, contrastive = options_of(TrainConfig), options_of(TrainConfig, defaults=CONTRASTIVE_TRAINING)
    lines = ["| option | classification heads | contrastive heads | meaning |", "|---|---|---|---|"]
    for a, b in zip(classification, contrastive):
        closed = " (probe: this one only)" if a.field in SOLVER_TRAIN_OPTIONS else ""
        lines.append(f"| `{a.flag}` | `{a.shown}`{closed} | `{b.shown}` | {a.help} |")
    bert = ", ".join(f"{name} {format_default(value)}" for name, value in TOWER_TRAINING["bert"].items())
    lines += ["", f"With `--towers bert` (VideoCLIP as published) the contrastive defaults change to: {bert}.", "",
              "| option | default | meaning |", "|---|---|---|", *options_table(options_of(VideoTextConfig))]
    return "\n".join(lines)
