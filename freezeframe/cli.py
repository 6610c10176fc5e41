"""The `freezeframe` command line: extract, inspect, verify, convert, export-memmap, train, eval, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from freezeframe.errors import FreezeframeError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None


class _Group(click.Group):
    """Turns freezeframe's own errors into one line on stderr and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FreezeframeError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="freezeframe")
def main() -> None:
    """Run frozen video and text backbones once; cache multi-layer features; train light heads on the cache."""


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--store", required=True, help="Store directory (created if missing).")
@click.option("--name", default=None, help="Feature-set name [default: derived from model and weights].")
@click.option("--model", default="ViT-B-32", show_default=True,
              help="open_clip model name, or a path to an open_clip model-config JSON.")
@click.option("--pretrained", default="openai", show_default=True,
              help="open_clip pretrained tag, a local checkpoint path, or 'none' for random weights.")
@click.option("--features", default="embed", show_default=True, help="Comma list of: embed, cls, tokens.")
@click.option("--layers", default="-4,-3,-2,-1", show_default=True,
              help="Blocks whose token maps are stored with --features tokens (negative counts from the end).")
@click.option("--num-frames", type=int, default=None, help="Sample N frames uniformly (segment middles) [default: 8].")
@click.option("--fps", type=float, default=None, help="Sample F frames per second of real video time.")
@click.option("--clips", type=int, default=None, help="Sample K evenly spaced clips (with --frames-per-clip, --stride).")
@click.option("--frames-per-clip", type=int, default=8, show_default=True)
@click.option("--stride", type=int, default=1, show_default=True, help="Frame stride inside a clip.")
@click.option("--decoder", type=click.Choice(["auto", "decord", "pyav"]), default="auto", show_default=True,
              help="auto: decord, then PyAV for files decord cannot read.")
@click.option("--preprocess", type=click.Choice(["exact", "fast"]), default="exact", show_default=True,
              help="exact: open_clip's PIL transform in decode workers; fast: tensor resize on the device.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Frames per backbone forward.")
@click.option("--workers", type=int, default=None, help="Decode worker processes [default: CPU cores - 1, max 8].")
@click.option("--shard-size", type=int, default=64, show_default=True, help="Videos per shard (the unit of commit).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True,
              help="Compute precision; auto is fp16 on CUDA, fp32 on CPU. Features are stored as float16.")
@click.option("--format", "store_format", type=click.Choice(["zarr", "hdf5"]), default="zarr", show_default=True,
              help="Shard format: a Zarr directory or one HDF5 file per shard.")
@click.option("--compression", type=click.Choice(["none", "zstd", "blosc"]), default="none", show_default=True,
              help="Shard compression (recorded per shard; not part of provenance).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def extract(inputs, store, name, model, pretrained, features, layers, num_frames, fps, clips, frames_per_clip, stride,
            decoder, preprocess, batch_size, workers, shard_size, device, precision, store_format, compression,
            no_progress) -> None:
    """Extract frozen CLIP features of videos (files, folders, or CSV/text lists) into STORE."""
    from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources
    from freezeframe.extract.runner import default_workers, resolve_device, run_extraction

    chosen = [flag for flag, value in (("--num-frames", num_frames), ("--fps", fps), ("--clips", clips))
              if value is not None]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one sampling strategy, not {' and '.join(chosen)}.")
    if fps is not None:
        sampling = SamplingConfig("fps", fps=fps)
    elif clips is not None:
        sampling = SamplingConfig("clips", clips=clips, frames_per_clip=frames_per_clip, stride=stride)
    else:
        sampling = SamplingConfig("num_frames", num_frames=8 if num_frames is None else num_frames)
    clip_config = ClipConfig(model=model, pretrained=pretrained, features=tuple(f.strip() for f in features.split(",")),
                             layers=_int_list(layers), precision=precision)
    config = ExtractConfig(store=store, name=name, sampling=sampling, decoder=decoder, preprocess=preprocess,
                           batch_size=batch_size, workers=default_workers() if workers is None else workers,
                           shard_size=shard_size, device=device, format=store_format, compression=compression,
                           progress=not no_progress)
    sources = collect_sources(inputs)
    backbone = ClipBackbone(clip_config, device=resolve_device(device))
    report = run_extraction(sources, backbone, config)
    from freezeframe.store import open_store
    from freezeframe.summary import format_summary, store_summary

    click.echo(format_summary(store_summary(open_store(store), [report.feature_set])))
    click.echo(
        f"{report.feature_set}: stored {report.stored} videos ({report.frames} frames) in {report.seconds:.1f}s; "
        f"{report.skipped} already committed; store {report.store}"
    )
    if report.failures:
        for failure in report.failures:
            click.echo(f"failed: {failure['video_id']} ({failure['path']}): {failure['reason']}", err=True)
        click.echo(f"{len(report.failures)} of {report.total} videos failed; see {report.failures_path}")
        sys.exit(1)


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (see README, 'inspect --json').")
def inspect(store, as_json) -> None:
    """Summarise the feature sets of STORE: provenance, videos, frames, arrays, failures."""
    from freezeframe.store import open_store
    from freezeframe.summary import format_summary, store_summary

    summary = store_summary(open_store(store))
    click.echo(json.dumps(summary, indent=1, ensure_ascii=False) if as_json else format_summary(summary))


@main.command()
@click.argument("store")
def verify(store) -> None:
    """Check every committed shard of STORE: readable, checksums and index consistent. Exit 1 on any problem."""
    from freezeframe.store import verify_store

    report = verify_store(Path(store))
    for warning in report.warnings:
        click.echo(f"warning: {warning}")
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    status = "ok" if report.ok else f"{len(report.problems)} problems"
    click.echo(f"{status}: {report.checked_shards} shards, {report.checked_videos} videos checked")
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("src")
@click.argument("dst")
@click.option("--format", "store_format", type=click.Choice(["zarr", "hdf5"]), default="zarr", show_default=True,
              help="Format of the new shards.")
@click.option("--compression", type=click.Choice(["none", "zstd", "blosc"]), default="none", show_default=True,
              help="Compression of the new shards.")
@click.option("--set", "names", multiple=True, help="Feature set to copy (repeatable) [default: all].")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
def convert(src, dst, store_format, compression, names, quiet) -> None:
    """Copy SRC into DST shard by shard in another format/compression; every copy is verified exactly.

    Resumable: a rerun skips shards already committed in DST (and checks them again). Exit 1 on any mismatch.
    """
    from freezeframe.store.convert import convert_store

    report = convert_store(src, dst, format=store_format, compression=compression, names=names,
                           log=None if quiet else click.echo)
    for name, done in report.feature_sets.items():
        click.echo(f"{name}: copied {done.copied_shards} shards ({done.copied_videos} videos), "
                   f"skipped {done.skipped_shards} already in {dst}; {done.verified_videos} videos verified equal; "
                   f"{done.failures_copied} failure records copied")
    for problem in report.problems:
        click.echo(f"problem: {problem}", err=True)
    if not report.ok:
        click.echo(f"convert failed: {len(report.problems)} mismatches between {src} and {dst}", err=True)
        sys.exit(1)
    click.echo(f"ok: {dst} holds an exact {store_format}/{compression} copy")


@main.command("export-memmap")
@click.argument("store")
@click.option("--set", "feature_set", required=True, help="Feature-set name inside the store.")
@click.option("--arrays", default=None, help="Comma list of arrays to export [default: all stored arrays].")
def export_memmap_command(store, feature_set, arrays) -> None:
    """Write STORE/SET/memmap/: one flat .npy per array over all committed frames, for fast training reads.

    Built from the shards committed now and swapped in atomically (replacing an older export). Datasets use
    it only while it matches the committed shards; commit more and they read the shards until you re-export.
    """
    from freezeframe.store import open_store
    from freezeframe.store.memmap import MEMMAP_DIR, export_memmap

    st = open_store(store)
    if feature_set not in st:
        raise click.UsageError(f"store {store} has no feature set {feature_set!r}; it has: {', '.join(st.names())}")
    fs = st[feature_set]
    names = [a.strip() for a in arrays.split(",") if a.strip()] if arrays else None
    index = export_memmap(fs, names, log=click.echo)
    click.echo(f"{feature_set}: exported {len(index['arrays'])} arrays, {len(index['videos'])} videos, "
               f"{index['num_frames']} frames from {len(index['shards'])} shards to {fs.path / MEMMAP_DIR}")


def _train_options(func):
    """Options every `train` subcommand shares."""
    options = [
        click.option("--store", required=True, help="Store directory."),
        click.option("--set", "feature_set", required=True, help="Feature-set name inside the store."),
        click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
                     help="Training labels: CSV with video_id,label."),
        click.option("--val", type=click.Path(exists=True, dir_okay=False), default=None,
                     help="Validation labels (CSV); picks the best checkpoint (and the probe's L2)."),
        click.option("--out", required=True, help="Run directory for checkpoints, metrics.jsonl and curves.png."),
        click.option("--frames", default=None,
                     help="Training frames per video: all, uniform:T, sparse-random:T [default: sparse-random:8; probe: all]."),
        click.option("--eval-frames", default=None,
                     help="Evaluation frames: all, uniform:T or views [default: views for --clips stores, else uniform:8]."),
        click.option("--epochs", type=int, default=10, show_default=True),
        click.option("--batch-size", type=int, default=32, show_default=True),
        click.option("--lr", type=float, default=4e-4, show_default=True),
        click.option("--weight-decay", type=float, default=0.05, show_default=True),
        click.option("--warmup-epochs", type=float, default=0.0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes."),
        click.option("--device", default="auto", show_default=True),
        click.option("--preload/--no-preload", default=None,
                     help="Read the head's arrays into memory once [default: when they fit in 2 GiB]."),
        click.option("--resume", is_flag=True, help="Continue from the run's last checkpoint."),
        click.option("--no-progress", is_flag=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_training(kind: str, head_options: dict, **kw) -> None:
    from freezeframe.heads.jobs import train_run
    from freezeframe.heads.training import TrainConfig

    config = TrainConfig(epochs=kw["epochs"], batch_size=kw["batch_size"], lr=kw["lr"], weight_decay=kw["weight_decay"],
                         warmup_epochs=kw["warmup_epochs"], seed=kw["seed"], workers=kw["workers"],
                         device=kw["device"], progress=not kw["no_progress"])
    metrics = train_run(kind, kw["store"], kw["feature_set"], kw["labels"], kw["out"], val_labels=kw["val"],
                        train_frames=kw["frames"], eval_frames=kw["eval_frames"], head_options=head_options,
                        config=config, resume=kw["resume"], preload=kw["preload"], log=click.echo)
    click.echo(json.dumps({"run": kw["out"], **metrics}))


@main.group()
def train() -> None:
    """Train a head on cached features (probe, temporal, evl)."""


@train.command("probe")
@_train_options
@click.option("--array", default="embed", show_default=True, help="Per-frame array to probe (embed or cls).")
@click.option("--pooling", type=click.Choice(["mean", "middle"]), default="mean", show_default=True)
def train_probe(array, pooling, **kw) -> None:
    """Logistic-regression probe (L-BFGS, L2 swept on validation, refit on train + val)."""
    _run_training("probe", {"array": array, "pooling": pooling}, **kw)


@train.command("temporal")
@_train_options
@click.option("--array", default="embed", show_default=True)
@click.option("--width", type=int, default=256, show_default=True)
@click.option("--depth", type=int, default=2, show_default=True)
@click.option("--heads", type=int, default=4, show_default=True)
@click.option("--dropout", type=float, default=0.1, show_default=True)
def train_temporal(array, width, depth, heads, dropout, **kw) -> None:
    """ViViT-style temporal transformer over per-frame embeddings."""
    _run_training("temporal", {"array": array, "width": width, "depth": depth, "heads": heads, "dropout": dropout}, **kw)


@train.command("evl")
@_train_options
@click.option("--num-layers", type=int, default=None, help="Decoder layers = last N stored blocks [default: all stored].")
@click.option("--mlp-dropout", type=float, default=0.5, show_default=True)
@click.option("--cls-dropout", type=float, default=0.5, show_default=True)
@click.option("--no-temporal-conv", is_flag=True)
@click.option("--no-temporal-pos", is_flag=True)
@click.option("--no-cross-frame-attention", is_flag=True)
def train_evl(num_layers, mlp_dropout, cls_dropout, no_temporal_conv, no_temporal_pos, no_cross_frame_attention,
              **kw) -> None:
    """EVL decoder over the token maps of the last stored blocks."""
    options = {"mlp_dropout": mlp_dropout, "cls_dropout": cls_dropout, "temporal_conv": not no_temporal_conv,
               "temporal_pos_embed": not no_temporal_pos, "cross_frame_attention": not no_cross_frame_attention}
    if num_layers:
        options["num_layers"] = num_layers
    _run_training("evl", options, **kw)


@main.command("eval")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False), help="CSV video_id,label.")
@click.option("--store", default=None, help="Store to read [default: the run's training store].")
@click.option("--frames", default=None, help="Override the run's evaluation frames (uniform:T, views, all).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with top1, top5, num_videos.")
def eval_command(run, labels, store, frames, batch_size, device, as_json) -> None:
    """Top-1 and top-5 accuracy of RUN's best checkpoint on labelled videos (views averaged)."""
    from freezeframe.heads.jobs import eval_run

    result = eval_run(run, labels, store=store, frames=frames, batch_size=batch_size, device=device)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['head']} on {result['num_videos']} videos ({result['frames']}): "
                   f"top-1 {100 * result['top1']:.1f}%  top-5 {100 * result['top5']:.1f}%")


@main.command()
@click.option("--out", default="freezeframe-demo", show_default=True, help="Working directory for videos, store, runs.")
@click.option("--videos", type=int, default=160, show_default=True, help="Synthetic videos (75% train, 25% test).")
@click.option("--epochs", type=int, default=40, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out, videos, epochs, seed) -> None:
    """Offline end to end: synthetic videos -> features of a small random CLIP -> probe and EVL accuracies."""
    from freezeframe.demo import run_demo

    result = run_demo(out, num_videos=videos, epochs=epochs, seed=seed, log=click.echo)
    click.echo(f"probe (mean-pooled) top-1 {100 * result['probe']:.1f}%   EVL top-1 {100 * result['evl']:.1f}%   "
               f"(chance 50%, {result['test_videos']} held-out videos)")


if __name__ == "__main__":
    main()
