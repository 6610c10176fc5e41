"""Store commands: inspect, verify, convert, export-memmap."""

from __future__ import annotations

import json
import sys

import click

from freezeframe.cli.group import main


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

    report = verify_store(store)
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
    from freezeframe.summary import plural

    report = convert_store(src, dst, format=store_format, compression=compression, names=names,
                           log=None if quiet else click.echo)
    for name, done in report.feature_sets.items():
        click.echo(f"{name}: copied {plural(done.copied_shards, 'shard')} ({plural(done.copied_videos, 'video')}), "
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


