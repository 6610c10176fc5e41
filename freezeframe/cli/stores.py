"""Store commands: inspect, verify, convert, publish, export-memmap, export-npy, rm."""

from __future__ import annotations

import json
import sys

import click

from freezeframe.cli.group import main
from freezeframe.printable import printable


def echo_printable(line: str) -> None:
    """A progress line naming store data, escaped (see freezeframe.printable)."""
    click.echo(printable(line))


@main.command()
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (see README, 'inspect --json').")
@click.option("--videos", "list_videos", is_flag=True,
              help="List the committed video ids of each feature set (with --set, of that one), at most --limit.")
@click.option("--set", "names", multiple=True, help="Feature set to show (repeatable) [default: all].")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="With --videos: ids listed per feature set at most (0: all).")
def inspect(store, as_json, list_videos, names, limit) -> None:
    """Summarise the feature sets of STORE: provenance, videos, rows, arrays, failures."""
    from freezeframe.store import open_store
    from freezeframe.summary import format_summary, store_summary

    opened = open_store(store)
    missing = [name for name in names if name not in opened]
    if missing:
        from freezeframe.errors import InputError

        raise InputError(f"store {store} has no feature set {missing[0]!r}; it has: {', '.join(opened.names())}.")
    if list_videos:
        return _list_videos(opened, list(names) or opened.names(), limit, as_json)
    summary = store_summary(opened, list(names) or None)
    click.echo(json.dumps(summary, indent=1, ensure_ascii=False) if as_json else format_summary(summary))


def _list_videos(opened, names: list[str], limit: int, as_json: bool) -> None:
    """Each feature set's committed ids in order, at most `limit` (0: all), with how many there are."""
    listing = {}
    for name in names:
        ids = opened[name].video_ids()
        listing[name] = {"num_videos": len(ids), "video_ids": ids[:limit] if limit else ids}
    if as_json:
        click.echo(json.dumps({"feature_sets": listing}, ensure_ascii=False))
        return
    for name, found in listing.items():
        shown = len(found["video_ids"])
        more = f" (first {shown}; --limit 0 lists all)" if shown < found["num_videos"] else ""
        click.echo(f"{name}: {found['num_videos']} videos{more}")
        for video_id in found["video_ids"]:  # an id is data: one that would not print plainly is shown escaped
            click.echo(f"  {video_id if video_id.isprintable() else ascii(video_id)}")


@main.command()
@click.argument("store")
@click.option("--quick", is_flag=True, help="Check the commit markers and the index only; read no array.")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Threads that check shards at once [default: the CPUs, at most 8].")
def verify(store, quick, jobs) -> None:
    """Check every committed shard of STORE: readable, checksums and index consistent. Exit 1 on any problem."""
    from freezeframe.store import verify_store
    from freezeframe.summary import plural

    report = verify_store(store, quick=quick, jobs=jobs)
    for warning in report.warnings:
        click.echo(printable(f"warning: {warning}"))
    for problem in report.problems:
        click.echo(printable(f"problem: {problem}"))
    status = "ok:" if report.ok else f"{plural(len(report.problems), 'problem')} found;"
    click.echo(f"{status} {plural(report.checked_shards, 'shard')}, {plural(report.checked_videos, 'video')} checked")
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
    from freezeframe.store.tools.convert import convert_store
    from freezeframe.summary import plural

    report = convert_store(src, dst, format=store_format, compression=compression, names=names,
                           log=None if quiet else echo_printable)
    for name, done in report.feature_sets.items():
        click.echo(f"{name}: copied {plural(done.copied_shards, 'shard')} ({plural(done.copied_videos, 'video')}), "
                   f"skipped {done.skipped_shards} already in {dst}; {done.verified_videos} videos verified equal; "
                   f"{done.failures_copied} failure records copied")
    for problem in report.problems:
        click.echo(printable(f"problem: {problem}"), err=True)
    if not report.ok:
        click.echo(f"convert failed: {len(report.problems)} mismatches between {src} and {dst}", err=True)
        sys.exit(1)
    click.echo(f"ok: {dst} holds an exact {store_format}/{compression} copy")


@main.command()
@click.argument("store")
@click.argument("dest")
@click.option("--set", "names", multiple=True, help="Feature set to publish (repeatable) [default: all].")
@click.option("--arrays", default=None, help="Comma list of arrays to share [default: every array] (zarr shards).")
def publish(store, dest, names, arrays) -> None:
    """Verify STORE and copy it to DEST (an fsspec URL or an empty directory) as a read-only published store.

    DEST gets what readers use and a manifest of sha256 hashes (published.json), written last. Others open it with
    open_store(DEST) (or any command taking a store): what they read is fetched into a local cache
    ($FREEZEFRAME_CACHE_DIR, default ~/.cache/freezeframe) and checked against the manifest first.
    """
    from freezeframe.store.tools.publish import publish_store
    from freezeframe.summary import plural

    chosen = [a.strip() for a in arrays.split(",") if a.strip()] if arrays else None
    report = publish_store(store, dest, names, log=echo_printable, arrays=chosen)
    click.echo(f"published {plural(report.videos, 'video')} in {plural(report.files, 'file')} "
               f"({report.bytes / 1e6:.1f} MB) to {dest}; manifest sha256 {report.manifest_sha256}")


@main.command("export-memmap")
@click.argument("store")
@click.option("--set", "feature_set", required=True, help="Feature-set name inside the store.")
@click.option("--arrays", default=None, help="Comma list of arrays to export [default: all stored arrays].")
def export_memmap_command(store, feature_set, arrays) -> None:
    """Write STORE/SET/memmap/: one flat .npy per array over all committed rows, for fast training reads.

    Built from the shards committed now and swapped in atomically (replacing an older export). Datasets use
    it only while it matches the committed shards; commit more and they read the shards until you re-export.
    """
    from freezeframe.store.tools.memmap import MEMMAP_DIR, export_memmap

    fs = _open_feature_set(store, feature_set)
    names = [a.strip() for a in arrays.split(",") if a.strip()] if arrays else None
    index = export_memmap(fs, names, log=echo_printable)
    click.echo(f"{feature_set}: exported {len(index['arrays'])} arrays, {len(fs)} videos, "
               f"{index['num_rows']} rows from {len(index['shards'])} shards to {fs.path / MEMMAP_DIR}")


@main.command("export-npy")
@click.argument("store")
@click.option("--set", "feature_set", required=True, help="Feature-set name inside the store.")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--arrays", default=None,
              help="Comma list of arrays to export [default: all stored arrays; embed for video-features].")
@click.option("--layout", type=click.Choice(["freezeframe", "video-features", "clip-video-encode"]),
              default="freezeframe", show_default=True,
              help="freezeframe: OUT/<video>_<array>.npy per array; video-features: exactly video_features' "
                   "save_numpy files (OUT/<feature_type>/<model>/<stem>_<feature_type>.npy float64, _fps.npy, "
                   "_timestamps_ms.npy), one array; clip-video-encode: OUT/<video>.npy, one array.")
def export_npy_command(store, feature_set, out, arrays, layout) -> None:
    """Write one .npy per committed video of SET (and array) into OUT.

    freezeframe layout: array names become keys with '/' as '-' (tokens/11 -> <video>_tokens-11.npy); timestamps
    also as <video>_timestamps_ms.npy. Video ids are percent-encoded into file names; OUT/export.json maps them.
    A re-export removes the files of the previous export (as its export.json lists them) that it does not rewrite.
    """
    from freezeframe.store.tools.export_npy import export_npy
    from freezeframe.summary import plural

    fs = _open_feature_set(store, feature_set)
    names = [a.strip() for a in arrays.split(",") if a.strip()] if arrays else None
    report = export_npy(fs, out, names, layout=layout)
    stale = f"; removed {plural(report.removed, 'file')} of the previous export" if report.removed else ""
    click.echo(f"{feature_set}: wrote {plural(report.files, 'file')} for {plural(report.videos, 'video')} "
               f"({report.bytes / 1e6:.1f} MB) to {out}{stale}")


@main.command("rm")
@click.argument("store")
@click.argument("name")
@click.option("--videos", "videos", multiple=True, help="A video id to delete (repeatable) [default: the whole set].")
@click.option("--videos-from", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A file of video ids to delete, one a line.")
@click.option("--yes", is_flag=True, help="Do not ask before deleting.")
def rm_command(store, name, videos, videos_from, yes) -> None:
    """Delete feature set NAME of STORE, or only some of its videos; each step is committed atomically.

    A crash part-way leaves every shard either as it was or as its rewritten copy, never half of one. Run it
    while no extraction writes to NAME.
    """
    from freezeframe.store.tools.remove import remove_feature_set, remove_videos

    ids = list(videos)
    if videos_from:
        from freezeframe.limits import LIST_BYTES, read_limited

        from pathlib import Path

        ids += [line.strip() for line in read_limited(Path(videos_from), LIST_BYTES, "a video list").decode("utf-8")
                .splitlines() if line.strip()]
        if not ids:
            raise click.UsageError(f"--videos-from {videos_from} lists no video ids.")
    fs = _open_feature_set(store, name)
    from freezeframe.errors import InputError
    from freezeframe.summary import plural

    unknown = sorted({v for v in ids if v not in fs})
    if unknown:
        raise InputError(f"{plural(len(unknown), 'video id')} not committed in feature set {name!r}: "
                         f"{', '.join(map(repr, unknown[:5]))}{' ...' if len(unknown) > 5 else ''}; nothing deleted "
                         "(check the ids with inspect --videos, or drop them).")

    what = f"{plural(len(set(ids)), 'video')} of feature set {name}" if ids else f"feature set {name} ({plural(len(fs), 'video')})"
    if not yes:
        click.confirm(f"delete {what} from {store}?", abort=True)
    if not ids:
        remove_feature_set(store, name)
        click.echo(f"removed feature set {name} ({plural(len(fs), 'video')}) from {store}")
        return
    report = remove_videos(store, name, ids)
    missing = f"; not committed, so nothing to do: {', '.join(report.missing[:5])}" if report.missing else ""
    click.echo(printable(f"{name}: removed {plural(len(report.removed_videos), 'video')} "
                         f"({plural(report.dropped_shards, 'shard')} dropped, {report.rewritten_shards} rewritten "
                         f"without them){missing}"))


def _open_feature_set(store: str, name: str):
    """The feature set NAME of STORE (imported here: `-h` of a store command loads no store code)."""
    from freezeframe.store.store import open_feature_set

    return open_feature_set(store, name)
