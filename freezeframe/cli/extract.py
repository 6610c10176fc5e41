"""`freezeframe extract`: video features into a store."""

from __future__ import annotations

import sys

import click

from freezeframe.cli.group import main, option_given, refuse_ignored
from freezeframe.cli.options import BackboneHelpCommand, given_backbone_options, with_backbone_options
from freezeframe.extract.backbones.registry import backbone_names, get_entry
from freezeframe.printable import printable, printable_lines


@main.command(cls=BackboneHelpCommand)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--store", required=True, help="Store directory (created if missing).")
@click.option("--name", default=None, help="Feature-set name [default: derived from model and weights].")
@with_backbone_options
@click.option("--num-frames", type=int, default=None, help="Sample N frames uniformly (segment middles) [default: 8].")
@click.option("--fps", type=float, default=None,
              help="Sample F frames per second of real video time (with --window-frames: the windows' frame rate).")
@click.option("--clips", type=int, default=None, help="Sample K evenly spaced clips (with --frames-per-clip, --stride).")
@click.option("--frames-per-clip", type=int, default=8, show_default=True)
@click.option("--stride", type=int, default=1, show_default=True, help="Frame stride inside a clip.")
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
@click.option("--decoder", type=click.Choice(["auto", "pyav", "torchcodec", "decord"]), default="auto",
              show_default=True, help="auto: PyAV with keyframe seeking; torchcodec and decord if installed.")
@click.option("--seek", type=click.Choice(["exact", "keyframe"]), default="exact", show_default=True,
              help="keyframe: snap each sampled frame to its nearest keyframe (far cheaper; stored indices are real).")
@click.option("--max-pixels", type=int, default=7680 * 4320, show_default=True,
              help="Videos with larger frames fail before decoding (a recorded failure).")
@click.option("--decode-timeout", type=float, default=300.0, show_default=True,
              help="Seconds decoding may deliver nothing before its video fails and its decode worker is killed "
                   "(0: no limit).")
@click.option("--decode-device", default="cpu", show_default=True,
              help="cuda or cuda:N: decode with NVDEC (torchcodec) and resize on the GPU; needs --preprocess fast.")
@click.option("--preprocess", type=click.Choice(["exact", "fast"]), default="exact", show_default=True,
              help="exact: open_clip's PIL transform in decode workers; fast: torchvision v2, resized as decoded, "
                   "cropped on the device.")
@click.option("--batch-size", type=int, default=None, help="Rows per backbone forward [default: 64 frames; 8 windows].")
@click.option("--workers", type=int, default=None, help="Decode worker processes [default: CPU cores - 1, max 8].")
@click.option("--shard-size", type=int, default=64, show_default=True,
              help="At most this many videos per shard (the unit of commit).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--format", "store_format", type=click.Choice(["zarr", "hdf5"]), default="zarr", show_default=True,
              help="Shard format: a Zarr directory or one HDF5 file per shard.")
@click.option("--compression", type=click.Choice(["none", "zstd", "blosc"]), default="none", show_default=True,
              help="Shard compression (recorded per shard; not part of provenance).")
@click.option("--claim-lease", type=float, default=120.0, show_default=True,
              help="Seconds after which another writer takes over the videos of a writer that stopped heartbeating.")
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
    from freezeframe.extract import AugmentConfig, ExtractConfig, collect_sources
    from freezeframe.extract.backbones import config_from_options
    from freezeframe.extract.runner import default_workers

    sampling = _sampling(get_entry(backbone), num_frames, fps, clips, frames_per_clip, stride, window_frames,
                         window_stride, last_window)
    backbone_config = config_from_options(backbone, given_backbone_options(backbone_flags))
    refuse_ignored_options(backbone_config)
    if batch_size is None:
        batch_size = 64 if sampling.frames_per_row == 1 else 8
    config = ExtractConfig(store=store, name=name, sampling=sampling, decoder=decoder, preprocess=preprocess,
                           batch_size=batch_size, workers=default_workers() if workers is None else workers,
                           shard_size=shard_size, device=device, format=store_format, compression=compression,
                           progress=not no_progress, claim_lease=claim_lease, seek=seek, max_pixels=max_pixels,
                           decode_timeout=decode_timeout, decode_device=decode_device,
                           augment=AugmentConfig.parse(views, augment))
    ray_flags = [flag for flag, value in (("--address", address), ("--gpus-per-worker", gpus_per_worker),
                                          ("--ray-workers", ray_workers)) if value is not None]
    if engine != "ray" and ray_flags:
        raise click.UsageError(f"{' and '.join(ray_flags)} need --engine ray.")
    if engine == "ray" and device != "auto":
        raise click.UsageError("--device is for --engine local; Ray actors use a GPU each when --gpus-per-worker "
                               "is above 0.")
    sources = collect_sources(inputs)
    # ---- cheap checks before the model loads; dry run ----
    from freezeframe.extract.runner import check_inputs, check_store

    check_inputs(sources)
    check_store(store)
    if not dry_run:  # (a dry run reports a provenance mismatch instead)
        check_store(store, _name_or_none(config, backbone_config), config)
    if dry_run:
        from freezeframe.extract.backbones import build_backbone
        from freezeframe.devices import resolve_device
        from freezeframe.extract.runner import plan_extraction

        if engine == "ray":
            raise click.UsageError("--dry-run plans a local run; drop --engine ray (the plan is the same).")
        plan = plan_extraction(sources, build_backbone(backbone_config, device=resolve_device(device)), config)
        click.echo(format_plan(plan))
        if plan.provenance_problem:  # the run itself would stop here: exit as it would
            sys.exit(2)
        return
    try:
        report = _run(sources, backbone_config, config, engine, device, address, gpus_per_worker, ray_workers)
    except KeyboardInterrupt:
        _interrupted(sources, config.store, config.name or backbone_config.default_name())
    _print_report(report, store)


def _name_or_none(config, backbone_config) -> str | None:
    """The feature-set name, or None when deriving it needs what only the model build checks (e.g. weights)."""
    from freezeframe.errors import FreezeframeError

    try:
        return config.name or backbone_config.default_name()
    except FreezeframeError:
        return None


def _run(sources, backbone_config, config, engine, device, address, gpus_per_worker, ray_workers):
    """Run the extraction on the chosen engine; returns its ExtractionReport."""
    from freezeframe.extract.backbones import build_backbone
    from freezeframe.devices import resolve_device
    from freezeframe.extract.runner import run_extraction

    if engine == "ray":  # actors pick their device from --gpus-per-worker
        from freezeframe.extract.ray_engine import RayConfig, run_ray_extraction

        ray_config = RayConfig(address=address, workers=ray_workers, gpus_per_worker=gpus_per_worker)
        report = run_ray_extraction(sources, backbone_config, config, ray_config)
    else:
        if config.progress:  # building a model and loading its weights can take a while: say what is happening
            model = getattr(backbone_config, "model", None)
            click.echo(f"loading {model or type(backbone_config).__name__.removesuffix('Config')} ...", err=True)
        report = run_extraction(sources, build_backbone(backbone_config, device=resolve_device(device)), config)
    return report


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


def _interrupted(sources, store: str, name: str) -> None:
    """Ctrl-C: say what is committed and how to resume; exit 130 (128 + SIGINT), never 1 ("some videos failed")."""
    from freezeframe.store import open_store

    committed = 0
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


def _sampling(entry, num_frames, fps, clips, frames_per_clip, stride, window_frames, window_stride, last_window):
    """The sampling the flags choose: windows for window backbones (their registry defaults), else one of count,
    rate or clips."""
    from freezeframe.extract import SamplingConfig

    if entry.windows is not None:
        if num_frames is not None or clips is not None:
            raise click.UsageError(f"--backbone {entry.name} takes windows of frames: use --window-frames, "
                                   "--window-stride and --fps, not --num-frames or --clips.")
        if last_window == "video-features" and fps is not None:
            raise click.UsageError("--last-window video-features takes every decoded frame (the native rate); "
                                   "leave out --fps.")
        frames = entry.windows.frames if window_frames is None else window_frames
        stride = (entry.windows.stride if window_frames is None else frames) if window_stride is None else window_stride
        return SamplingConfig("windows", fps=entry.windows.fps if fps is None else fps, window_frames=frames,
                              window_stride=stride, last_window=last_window or "whole")
    if window_frames is not None or window_stride is not None or last_window is not None:
        windowed = ", ".join(name for name in backbone_names() if get_entry(name).windows)
        raise click.UsageError("--window-frames, --window-stride and --last-window are for window backbones "
                               f"(--backbone {windowed}).")
    chosen = [flag for flag, value in (("--num-frames", num_frames), ("--fps", fps), ("--clips", clips))
              if value is not None]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one sampling strategy, not {' and '.join(chosen)}.")
    if fps is not None:
        return SamplingConfig("fps", fps=fps)
    if clips is not None:
        return SamplingConfig("clips", clips=clips, frames_per_clip=frames_per_clip, stride=stride)
    return SamplingConfig("num_frames", num_frames=8 if num_frames is None else num_frames)
