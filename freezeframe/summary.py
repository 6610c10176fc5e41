"""The `inspect` summary of a store, as one JSON-able dict and as text."""

from __future__ import annotations

import re

from freezeframe.printable import printable_lines
from freezeframe.store import Store


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs as numbers: tokens/8, tokens/9, tokens/10 (not tokens/10, tokens/8)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


def plural(n: int, noun: str) -> str:
    """`1 shard`, `2 shards`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def store_summary(store: Store, names: list[str] | None = None) -> dict:
    """The object `freezeframe inspect --json` prints (its shape is a documented contract)."""
    sets = {}
    for name in names or store.names():
        fs = store[name]
        sets[name] = {
            "provenance": fs.provenance,
            "num_videos": len(fs),
            "num_rows": fs.num_rows,
            "num_frames": fs.num_rows,  # the name before rows were called rows (windows and token rows are not frames)
            "num_shards": len(fs.shard_ids),
            "arrays": dict(sorted(fs.arrays().items(), key=lambda item: natural_key(item[0]))),
            "storage": fs.storage(),
            "failures": fs.failures(),
        }
    location = store.published.location if store.published is not None else store.path  # (not its local cache)
    return {"store": str(location), "feature_sets": sets}


def format_summary(summary: dict) -> str:
    lines = [f"store {summary['store']}"]
    if not summary["feature_sets"]:
        lines.append("  (no feature sets)")
    for name, fs in summary["feature_sets"].items():
        p = fs["provenance"]
        backbone = p.get("backbone", {})
        sampling = ", ".join(f"{k}={v}" for k, v in p.get("sampling", {}).items())
        text = p.get("kind") == "text"
        windows = p.get("sampling", {}).get("strategy") == "windows"
        items, row = ("caption", "token row") if text else ("video", "window" if windows else "frame")
        lines.append(f"  {name}: {plural(fs['num_videos'], items)}, {plural(fs['num_rows'], row)} in "
                     f"{plural(fs['num_shards'], 'shard')}")
        lines.append(f"    backbone  {backbone.get('name', '')} {backbone.get('library', '?')} {backbone.get('model', '?')} "
                     f"weights={backbone.get('pretrained', backbone.get('weights_sha256', '?')[:12])}"
                     + ("" if text else f" compute={p.get('compute_dtype', '?')}"))
        if p.get("layers") is not None and text:
            lines.append(f"    text      layers={p.get('layers')} max_length={p.get('max_length')}")
        else:
            lines.append(f"    sampling  {sampling}; preprocess {p.get('preprocess', {}).get('mode', '?')}")
        if isinstance(p.get("augment"), dict):
            a = p["augment"]
            crop = a.get("crop") if isinstance(a.get("crop"), dict) else {}
            lines.append(f"    views     plain + {a.get('views')} augmented per {row} "
                         f"(randaugment={a.get('randaugment')}, crop scale={crop.get('scale')}, flip={a.get('flip')}, "
                         f"seed={a.get('seed')})")
        storage = ", ".join(f"{s['format']}/{s['compression']} ({plural(s['shards'], 'shard')})"
                            for s in fs.get("storage", []))
        lines.append(f"    storage   {storage or 'no shards'}")
        width = max([18, *map(len, fs["arrays"])])
        for array, meta in fs["arrays"].items():
            lines.append(f"    {array:<{width}} {meta['dtype']:<8} per {row} {tuple(meta['shape'])}")
        if fs["failures"]:
            lines.append(f"    failures  {plural(len(fs['failures']), 'video')} (see failures.jsonl)")
    return printable_lines(lines)  # names and provenance come from the store: each line stays one line
