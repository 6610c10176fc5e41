"""`freezeframe extract`: video features into a store."""

from __future__ import annotations

import sys

import click

from freezeframe.cli.group import int_list, main


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--store", required=True, help="Store directory (created if missing).")
@click.option("--name", default=None, help="Feature-set name [default: derived from model and weights].")
@click.option("--model", default="ViT-B-32", show_default=True,
              help="open_clip model name, or a path to an open_clip model-config JSON.")
@click.option("--pretrained", default="openai", show_default=True,
              help="open_clip pretrained tag, a local checkpoint path, or 'none' for random weights.")
@click.option("--trust-checkpoint", is_flag=True,
              help="Load a --pretrained file that is a full pickle (it can run code; only if you trust it).")
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
@click.option("--shard-size", type=int, default=64, show_default=True, help="At most this many videos per shard (the unit of commit).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True,
              help="Compute precision; auto is fp16 on CUDA, fp32 on CPU. Features are stored as float16.")
@click.option("--format", "store_format", type=click.Choice(["zarr", "hdf5"]), default="zarr", show_default=True,
              help="Shard format: a Zarr directory or one HDF5 file per shard.")
@click.option("--compression", type=click.Choice(["none", "zstd", "blosc"]), default="none", show_default=True,
              help="Shard compression (recorded per shard; not part of provenance).")
@click.option("--claim-lease", type=float, default=120.0, show_default=True,
              help="Seconds after which another writer takes over the videos of a writer that stopped heartbeating.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def extract(inputs, store, name, model, pretrained, features, layers, num_frames, fps, clips, frames_per_clip, stride,
            decoder, preprocess, batch_size, workers, shard_size, device, precision, store_format, compression,
            claim_lease, no_progress, trust_checkpoint) -> None:
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
                             layers=int_list(layers), precision=precision, trust_checkpoint=trust_checkpoint)
    config = ExtractConfig(store=store, name=name, sampling=sampling, decoder=decoder, preprocess=preprocess,
                           batch_size=batch_size, workers=default_workers() if workers is None else workers,
                           shard_size=shard_size, device=device, format=store_format, compression=compression,
                           progress=not no_progress, claim_lease=claim_lease)
    sources = collect_sources(inputs)
    backbone = ClipBackbone(clip_config, device=resolve_device(device))
    report = run_extraction(sources, backbone, config)
    from freezeframe.store import open_store
    from freezeframe.summary import format_summary, store_summary

    click.echo(format_summary(store_summary(open_store(store), [report.feature_set])))
    click.echo(
        f"{report.feature_set}: stored {report.stored} videos ({report.frames} frames) in {report.seconds:.1f}s; "
        f"{report.skipped} already committed; "
        f"{f'{report.by_others} by other writers; ' if report.by_others else ''}store {report.store}"
    )
    if report.failures:
        for failure in report.failures:
            click.echo(f"failed: {failure['video_id']} ({failure['path']}): {failure['reason']}", err=True)
        click.echo(f"{len(report.failures)} of {report.total} videos failed; see {report.failures_path}")
        sys.exit(1)


