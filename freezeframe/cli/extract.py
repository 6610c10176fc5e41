"""`freezeframe extract`: video features into a store. The flags map onto `freezeframe.api.extract_features`, which
owns every default and refusal; the defaults shown in the help are read from the library's configs."""

from __future__ import annotations

import sys
from dataclasses import MISSING, fields

import click

from freezeframe.cli.group import main, option_given, refuse_ignored
from freezeframe.cli.options import BackboneHelpCommand, given_backbone_options, with_backbone_options
from freezeframe.printable import printable, printable_lines
from freezeframe.extract.runner import ExtractConfig
from freezeframe.extract.sampling import SamplingConfig


def default(config: type, name: str) -> str:
    """` [default: X]` of field `name` of a config dataclass, for an option's help."""
    field = next(f for f in fields(config) if f.name == name)
    value = field.default if field.default is not MISSING else field.default_factory()  # type: ignore[misc]
    return f" [default: {value}]"


def _extract_default(name: str) -> str:
    return default(ExtractConfig, name)


@main.command(cls=BackboneHelpCommand)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--store", required=True, help="Store directory (created if missing).")
@click.option("--name", default=None, help="Feature-set name [default: derived from model and weights].")
@with_backbone_options
@click.option("--num-frames", type=int, default=None, help="Sample N frames uniformly (segment middles) [default: 8].")
@click.option("--fps", type=float, default=None,
              help="Sample F frames per second of real video time (with --window-frames: the windows' frame rate).")
@click.option("--clips", type=int, default=None, help="Sample K evenly spaced clips (with --frames-per-clip, --stride).")
@click.option("--frames-per-clip", type=int, default=None, help="Frames per clip." + default(SamplingConfig, "frames_per_clip"))
@click.option("--stride", type=int, default=None, help="Frame stride inside a clip." + default(SamplingConfig, "stride"))
@click.option("--window-frames", type=int, default=None,
              help="S3D backbones: frames per window, one stored row each [default: 30 at --fps 30, as VideoCLIP].")
@click.option("--window-stride", type=int, default=None, help="Frames between window starts [default: --window-frames].")
@click.option("--last-window", type=click.Choice(["whole", "zeros", "video-features"]), default=None,
              help="Window backbones: whole windows only, or also the last partial one padded with black frames "
                   "(zeros: MMPT's S3D-G extraction for VideoCLIP), or video_features' I3D stacks (every decoded "
                   "frame, a window only where one more frame follows it) [default: whole].")
@click.option("--views", type=int, default=0, show_default=True,
              help="Augmented views stored per frame beside the plain one (frame backbones, exact preprocessing).")
@click.option("--augment", default="evl", show_default=True,
              help="How --views are made: evl (EVL's RandAugment and RandomResizedCrop as it runs: no flip) or key=value "
                   "changes, e.g. randaugment=rand-m9-n2,flip=0.5,resize=pil,scale=0.2:1,ratio=0.75:1.33,seed=3.")
@click.option("--decoder", type=click.Choice(["auto", "pyav", "torchcodec", "decord"]), default=None, help="auto: PyAV with keyframe seeking; torchcodec and decord if installed." + _extract_default("decoder"))
@click.option("--seek", type=click.Choice(["exact", "keyframe"]), default=None,
              help="keyframe: snap each sampled frame to its nearest keyframe (far cheaper; stored indices are real)." + _extract_default("seek"))
@click.option("--max-pixels", type=int, default=None,
              help="Videos with larger frames fail before decoding (a recorded failure)." + _extract_default("max_pixels"))
@click.option("--decode-timeout", type=float, default=None,
              help="Seconds decoding may deliver nothing before its video fails and its decode worker is killed "
                   "(0: no limit)." + _extract_default("decode_timeout"))
@click.option("--decode-device", default=None,
              help="cuda or cuda:N: decode with NVDEC (torchcodec) and resize on the GPU; needs --preprocess fast." + _extract_default("decode_device"))
@click.option("--preprocess", type=click.Choice(["exact", "fast"]), default=None,
              help="exact: open_clip's PIL transform in decode workers; fast: torchvision v2, resized as decoded, "
                   "cropped on the device." + _extract_default("preprocess"))
@click.option("--batch-size", type=int, default=None, help="Rows per backbone forward [default: 64 frames; 8 windows].")
@click.option("--workers", type=int, default=None, help="Decode worker processes [default: CPU cores - 1, max 8].")
@click.option("--shard-size", type=int, default=None,
              help="At most this many videos per shard (the unit of commit)." + _extract_default("shard_size"))
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N." + _extract_default("device"))
@click.option("--format", "store_format", type=click.Choice(["zarr", "hdf5"]), default=None,
              help="Shard format: a Zarr directory or one HDF5 file per shard." + _extract_default("format"))
@click.option("--compression", type=click.Choice(["none", "zstd", "blosc"]), default=None,
              help="Shard compression (recorded per shard; not part of provenance)." + _extract_default("compression"))
@click.option("--claim-lease", type=float, default=None,
              help="Seconds after which another writer takes over the videos of a writer that stopped heartbeating." + _extract_default("claim_lease"))
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process and its decode workers; ray: Ray Data actors on a cluster (freezeframe[ray]).")
@click.option("--address", default=None,
              help="Ray cluster to join (auto, or ray://HOST:10001) [default: RAY_ADDRESS, else a new local one].")
@click.option("--gpus-per-worker", type=float, default=None,
              help="GPUs each Ray actor reserves, e.g. 1 or 0.5 [default: 1 on a cluster with GPUs, else 0].")
@click.option("--ray-workers", type=int, default=None,
              help="Ray actors, each loading the backbone once [default: GPUs / --gpus-per-worker; CPUs / 2].")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--dry-run", is_flag=True,
              help="List what the extraction would do (videos to do and already committed, shards, arrays and "
                   "shapes) and exit: builds the backbone (loads its weights) but decodes and writes nothing.")
def extract(inputs, store, name, backbone, num_frames, fps, clips, frames_per_clip, stride, window_frames,
            window_stride, last_window, views, augment, decoder, seek, max_pixels, decode_timeout, decode_device,
            preprocess, batch_size, workers, shard_size, device, store_format, compression, claim_lease, no_progress,
            engine, address, gpus_per_worker, ray_workers, dry_run, **backbone_flags) -> None:
    """Extract frozen backbone features of videos (files, folders, or CSV/text lists) into STORE."""
    from freezeframe.api import extract_features
    from freezeframe.extract import AugmentConfig
    from freezeframe.extract.backbones import config_from_options

    backbone_config = config_from_options(backbone, given_backbone_options(backbone_flags))  # flags -> fields
    refuse_ignored_options(backbone_config)
    sampling = dict(num_frames=num_frames, fps=fps, clips=clips, frames_per_clip=frames_per_clip, stride=stride,
                    window_frames=window_frames, window_stride=window_stride, last_window=last_window)
    settings = {key: value for key, value in dict(
        name=name, decoder=decoder, preprocess=preprocess, batch_size=batch_size, workers=workers,
        shard_size=shard_size, device=device, format=store_format, compression=compression, claim_lease=claim_lease,
        seek=seek, max_pixels=max_pixels, decode_timeout=decode_timeout, decode_device=decode_device).items()
        if value is not None}
    ray = None
    if any(value is not None for value in (address, gpus_per_worker, ray_workers)):
        from freezeframe.extract.ray_engine import RayConfig

        ray = RayConfig(address=address, workers=ray_workers, gpus_per_worker=gpus_per_worker)
    job = dict(backbone_options=_option_fields(backbone_config), sampling=sampling, engine=engine, ray=ray,
               progress=not no_progress, augment=AugmentConfig.parse(views, augment), **settings)
    if dry_run:
        plan = extract_features(inputs, store, backbone, dry_run=True, **job)
        click.echo(format_plan(plan))
        if plan.provenance_problem:  # the run itself would stop here: exit as it would
            sys.exit(2)
        return
    try:
        report = extract_features(inputs, store, backbone, **job)
    except KeyboardInterrupt:
        _interrupted(inputs, store, name or backbone_config.default_name())
    _print_report(report, store)


def _option_fields(config) -> dict:
    """The fields of a backbone config that are options (its entry fixes the others)."""
    from freezeframe.extract.backbones import entry_for_config

    preset = entry_for_config(config).preset
    return {f.name: getattr(config, f.name) for f in fields(config) if f.name not in preset}


def _print_report(report, store) -> None:
    from freezeframe.store import open_store
    from freezeframe.summary import format_summary, plural, store_summary

    click.echo(format_summary(store_summary(open_store(store), [report.feature_set])))
    click.echo(printable(
        f"{report.feature_set}: stored {plural(report.stored, 'video')} ({plural(report.frames, 'frame')}) in "
        f"{report.seconds:.1f}s; "
        f"{report.skipped} already committed; "
        f"{f'{report.by_others} by other writers; ' if report.by_others else ''}store {report.store}"
    ))
    if report.failures:
        for failure in report.failures:
            click.echo(printable(f"failed: {failure['video_id']} ({failure['path']}): {failure['reason']}"),
                       err=True)
        click.echo(f"{len(report.failures)} of {report.total} videos failed; see {report.failures_path}")
        sys.exit(1)


# ---- usage: options that would be ignored, dry-run plans, Ctrl-C ----

def refuse_ignored_options(backbone_config) -> None:
    """A usage error (exit 2) for an option given that this run would silently ignore."""
    features = getattr(backbone_config, "features", ())
    refuse_ignored({
        "layers": ("--layers chooses the token maps of --features tokens", "tokens" in features),
        "frames_per_clip": ("--frames-per-clip is for --clips sampling", option_given("clips")),
        "stride": ("--stride is for --clips sampling", option_given("clips")),
        "augment": ("--augment says how --views are made", option_given("views")),
    })


def format_plan(plan) -> str:
    """The dry-run listing of an ExtractionPlan."""
    refused = ([f"dry run: REFUSED: this run would stop before extracting: feature set {plan.feature_set} was made "
                f"differently ({plan.provenance_problem}); pass --name to extract into a new set"]
               if plan.provenance_problem else [])
    lines = [*refused, f"dry run: feature set {plan.feature_set} in store {plan.store} (backbone built, weights loaded; "
             "no video decoded, nothing written)",
             f"  videos    {plan.total} given: {len(plan.todo)} to extract, {len(plan.committed)} already committed",
             f"  shards    {plan_count(len(plan.shards), 'shard')} of {', '.join(map(str, sorted(set(plan.shards))))} "
             f"videos" if plan.shards else "  shards    none (nothing to do)",
             f"  rows      per video: {plan.rows_per_video}"]
    for array, meta in natural_sorted(plan.arrays):
        lines.append(f"  {array:<18} {meta['dtype']:<8} per row {tuple(meta['shape'])}")
    lines += [f"  to do     {video_id}" for video_id in plan.todo[:20]]
    if len(plan.todo) > 20:
        lines.append(f"  ...       and {len(plan.todo) - 20} more")
    return printable_lines(lines)


def plan_count(n: int, noun: str) -> str:
    from freezeframe.summary import plural

    return plural(n, noun)


def natural_sorted(arrays: dict) -> list:
    from freezeframe.summary import natural_key

    return sorted(arrays.items(), key=lambda item: natural_key(item[0]))


def _interrupted(inputs, store: str, name: str) -> None:
    """Ctrl-C: say what is committed and how to resume; exit 130 (128 + SIGINT), never 1 ("some videos failed")."""
    from freezeframe.extract import collect_sources
    from freezeframe.store import open_store

    committed, sources = 0, collect_sources(inputs)
    try:
        st = open_store(store)
        if name in st:
            done = set(st[name].video_ids())
            committed = sum(source.video_id in done for source in sources)
    except Exception:  # noqa: BLE001 - the store may not exist yet; the message below still holds
        pass
    click.echo("\n" + printable(f"interrupted: {committed} of {len(sources)} videos are committed in feature set "
                                 f"{name} of {store}; shards in flight were discarded. Run the same command again to "
                                 "resume: committed videos are skipped."), err=True)
    sys.exit(130)
