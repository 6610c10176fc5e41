"""A feature set's videos as one labelled xarray Dataset: readable variable names and per-row coordinates.

A shard opened with plain `xarray.open_zarr` has dimension names and `timestamps`/`frame_indices` as coordinates,
but no video coordinate (its rows' videos are in the commit marker) and token maps in a `tokens` group named
`9`, `10`, `11`. `to_xarray` gives what a user browsing features wants instead: `tokens_9`, and coordinates
`video` (each row's id), `time` (seconds) and `frame_index` along the row axis.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from freezeframe.errors import InputError
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.schema import describe_array, row_axis

ROW_ARRAYS = {"timestamps": "time", "frame_indices": "frame_index"}  # stored per-row arrays -> coordinate names


def variable_name(array: str) -> str:
    """`tokens/9` -> `tokens_9`, `views/1/embed` -> `views_1_embed`: a name xarray and attribute access accept."""
    return array.replace("/", "_")


def to_xarray(fs: FeatureSet, video_ids: Sequence[str] | None = None, arrays: Sequence[str] | None = None):
    """An `xarray.Dataset` of these videos' rows (default: every committed video; mind the memory) holding
    `arrays` (default: all but the per-row coordinates), each variable's `stored_as` attribute naming its array."""
    import xarray as xr

    ids = fs.video_ids() if video_ids is None else list(video_ids)
    missing = [v for v in ids if v not in fs]
    if missing:
        raise InputError(f"{len(missing)} video ids are not committed in feature set {fs.name!r} "
                         f"(e.g. {missing[0]!r}).")
    stored = fs.arrays()
    names = list(arrays) if arrays is not None else [a for a in stored if a not in ROW_ARRAYS]
    unknown = [a for a in names if a not in stored]
    if unknown:
        raise InputError(f"feature set {fs.name!r} has no array {unknown[0]!r}; it has: {', '.join(stored)}.")
    rows = row_axis(fs.provenance)
    lengths = [fs.locate(v).n_rows for v in ids]
    coords = {"video": (rows, np.repeat(np.array(ids, dtype=object), lengths))}
    for array, coordinate in ROW_ARRAYS.items():
        if array in stored:
            coords[coordinate] = (rows, _rows(fs, ids, array, stored))
    data = {}
    for array in names:
        dims, text = describe_array(array, (0, *stored[array]["shape"]), rows)
        name = variable_name(array)
        shape = stored[array]["shape"]
        dims = (dims[0], *(f"{name}_{d}" if _clashes(d, size, data) else d for d, size in zip(dims[1:], shape)))
        data[name] = (dims, _rows(fs, ids, array, stored), {"stored_as": array, "description": text})
    return xr.Dataset(data, coords=coords, attrs={"feature_set": fs.name})


def _rows(fs: FeatureSet, ids: list[str], array: str, stored: dict) -> np.ndarray:
    blocks = [fs.read(v, array) for v in ids]
    return np.concatenate(blocks) if blocks else np.empty((0, *stored[array]["shape"]), stored[array]["dtype"])


def _clashes(dim: str, size: int, data: dict) -> bool:
    """Whether another variable already uses dimension `dim` with another size (then this one gets its own)."""
    for dims, values, _ in data.values():
        if dim in dims and values.shape[dims.index(dim)] != size:
            return True
    return False
