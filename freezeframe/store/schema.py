"""What a store says about itself to tools that do not know freezeframe (zarr, xarray, h5py).

The store root, each feature set and its `shards/` folder are Zarr v3 groups (a `zarr.json` beside freezeframe's
own files), so `zarr.open_group(STORE)` lists feature sets, shards and arrays. Every array carries dimension names
and a `description` attribute; a feature set's attributes hold its provenance, the schema version, what each array
holds and which shards were committed when it was last indexed. The commit markers stay the truth: these
attributes are a description written for browsing, never read back by freezeframe.
"""

from __future__ import annotations

import re

from freezeframe.store.files import create_json_once, write_json_atomic
from freezeframe.store.layout import SCHEMA_VERSION, ZARR_GROUP_FILE
from freezeframe.store.location import StorePath

# array-name pattern -> (dimension names after the row axis, what it holds); {b} is the block or layer number
ARRAYS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (r"embed", ("embed_dim",), "the backbone's output embedding (CLIP: after the projection), one per row"),
    (r"cls", ("width",), "the class token after the final norm, before the projection"),
    (r"tokens/(?P<b>-?\d+)", ("token", "width"),
     "output of block {b} for every token (text: hidden state {b}); video: token 0 is CLS, then the patches "
     "row-major"),
    (r"block_input/(?P<b>\d+)", ("token", "width"),
     "input of block {b} (kept where block {b}-1's output is not stored); token 0 is CLS"),
    (r"timestamps", (), "seconds into the video of each row (a window: of its first frame)"),
    (r"frame_indices", ("window_frame",), "indices into the decoded video of the frames of each row"),
    (r"video_embedding", ("embed_dim",), "S3D-G's joint text-video embedding of each window"),
    (r"mixed_5c", ("mixed_5c_channel",), "the last S3D block averaged over time and space, per window"),
    (r"logits", ("kinetics_class",), "Kinetics-400 class logits of each window"),
    (r"token_ids", (), "tokenizer id of each token of the caption"),
    (r"attention_mask", (), "1 where the row is a real token of the caption"),
)

ROW_AXES = {"frame": "one row per sampled frame", "window": "one row per window of frames",
            "row": "rows of a caption: its tokens (bert) or one embedding (clip-text)"}


def row_axis(provenance: dict) -> str:
    """The name of the first axis of a feature set's arrays: frame, window, or row (text)."""
    if provenance.get("kind") == "text":
        return "row"
    return "window" if provenance.get("sampling", {}).get("strategy") == "windows" else "frame"


def describe_array(name: str, shape: tuple[int, ...], rows: str | None = "frame") -> tuple[tuple[str, ...], str]:
    """(dimension names, description) of an array of `shape` (rows first, unless `rows` is None)."""
    view = re.fullmatch(r"views/(\d+)/(.+)", name)  # extract --views: augmented view v of a plain array
    if view:
        dims, text = describe_array(view.group(2), shape, rows)
        return dims, f"augmented view {view.group(1)}: {text}" if text else ""
    for pattern, dims, text in ARRAYS:
        match = re.fullmatch(pattern, name)
        if match and rows is not None and len(dims) == len(shape) - 1:
            return (rows, *dims), text.format(**match.groupdict())
    leaf = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "array"
    axes = tuple(f"{leaf}_{i}" for i in range(len(shape)))
    return ((rows, *axes[1:]) if rows is not None and shape else axes), ""


def group_metadata(attrs: dict) -> dict:
    """The zarr.json of a Zarr v3 group with these attributes."""
    return {"zarr_format": 3, "node_type": "group", "attributes": attrs}


def describe_store(store: StorePath) -> None:
    """Make the store root a Zarr group (once) whose attributes say what it is."""
    create_json_once(store / ZARR_GROUP_FILE, group_metadata({"freezeframe": {
        "schema_version": SCHEMA_VERSION,
        "about": "a freezeframe feature store: each child group is a feature set; its shards/ group holds shards "
                 "of flat arrays over all rows of their videos. A shard counts only once its commit marker "
                 "shards/<id>.done.json exists (a shard without one is being written or was abandoned).",
    }}))


def describe_feature_set(path: StorePath, name: str, provenance: dict, arrays: dict[str, dict],
                         shard_ids: list[str], num_videos: int) -> None:
    """(Re)write the feature set's group attributes from its provenance, arrays ({name: {"shape", "dtype"}}) and
    committed shards."""
    rows = row_axis(provenance)
    described: dict[str, dict] = {}
    for array, meta in arrays.items():
        dims, text = describe_array(array, (0, *meta["shape"]), rows)
        described[array] = {"dimension_names": list(dims), "description": text, "row_shape": meta["shape"],
                            "dtype": meta["dtype"]}
    attrs = {"freezeframe": {
        "schema_version": SCHEMA_VERSION,
        "feature_set": name,
        "rows": f"{rows}: {ROW_AXES[rows]}",
        "arrays": dict(sorted(described.items())),
        "committed_shards": sorted(shard_ids),
        "num_videos": num_videos,
        "truth": "shards/<id>.done.json commit markers; this list is a snapshot from the last index write",
        "provenance": provenance,
    }}
    write_json_atomic(path / ZARR_GROUP_FILE, group_metadata(attrs))


def describe_shards_dir(path: StorePath) -> None:
    """Make a feature set's shards/ folder a Zarr group (once), so zarr lists the shards in it."""
    create_json_once(path / "shards" / ZARR_GROUP_FILE, group_metadata({"freezeframe": {
        "about": "shards of this feature set: <id>.zarr groups (or <id>.h5 files) with flat arrays over all rows "
                 "of their videos; <id>.done.json lists each video's row range and commits the shard"}}))
