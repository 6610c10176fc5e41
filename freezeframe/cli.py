"""The `freezeframe` command line: extract, inspect, verify."""

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
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def extract(inputs, store, name, model, pretrained, features, layers, num_frames, fps, clips, frames_per_clip, stride,
            decoder, preprocess, batch_size, workers, shard_size, device, precision, no_progress) -> None:
    """Extract frozen CLIP features of videos (files, folders, or CSV/text lists) into STORE."""
    from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources
    from freezeframe.extract.runner import default_workers, resolve_device, run_extraction

    chosen = [flag for flag, value in (("--num-frames", num_frames), ("--fps", fps), ("--clips", clips)) if value]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one sampling strategy, not {' and '.join(chosen)}.")
    if fps is not None:
        sampling = SamplingConfig("fps", fps=fps)
    elif clips is not None:
        sampling = SamplingConfig("clips", clips=clips, frames_per_clip=frames_per_clip, stride=stride)
    else:
        sampling = SamplingConfig("num_frames", num_frames=num_frames or 8)
    clip_config = ClipConfig(model=model, pretrained=pretrained, features=tuple(f.strip() for f in features.split(",")),
                             layers=_int_list(layers), precision=precision)
    config = ExtractConfig(store=store, name=name, sampling=sampling, decoder=decoder, preprocess=preprocess,
                           batch_size=batch_size, workers=default_workers() if workers is None else workers,
                           shard_size=shard_size, device=device, progress=not no_progress)
    sources = collect_sources(inputs)
    backbone = ClipBackbone(clip_config, device=resolve_device(device))
    report = run_extraction(sources, backbone, config)
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


if __name__ == "__main__":
    main()
