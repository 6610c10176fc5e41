"""Torch datasets over a feature set: labelled videos, chosen arrays, chosen frames per item, and which view.

The store is opened lazily in each DataLoader worker, so a dataset pickles cheaply and many
workers read at once. Frame selection happens here, not in the head:
`all`, `uniform:T`, `sparse-random:T` (fresh random frames each epoch, ClipBERT-style), and
`stored-clips` (every stored clip of a `--clips` extraction, for multi-clip evaluation), `dense-random:T:STRIDE`
(EVL's random dense clip; `dense:T:STRIDE` centred) and `clips-random:N:T:CONSENSUS` (ClipBERT's N short
clips; `clips:N:T:CONSENSUS` centred in their segments; see train.consensus).
On a set extracted with `--views V`, a training dataset (`augmented=True`) reads one of the V augmented
views of each video per epoch, a different one each epoch; otherwise the plain view.

Where `freezeframe export-memmap` left an up-to-date `memmap/` export (built from exactly the
committed shards the worker sees, holding every array read here), each worker reads its memory
maps instead of the shards; otherwise it reads the shards. Both give identical items.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from freezeframe.errors import InputError, StoreError
from freezeframe.frames import segment_middles
from freezeframe.store.feature_set import FeatureSet, block_source
from freezeframe.store.mapped import into
from freezeframe.store.store import Store
from freezeframe.train.labels import resolve_labels
from freezeframe.views import augmented_views, view_array

FRAME_MODES = ("all", "uniform", "sparse-random", "stored-clips", "dense", "dense-random", "clips", "clips-random")
WHOLE_MODES = ("all", "stored-clips")  # every stored row
RANDOM_MODES = ("sparse-random", "dense-random", "clips-random")  # redrawn each epoch
DENSE_MODES = ("dense", "dense-random")
CLIP_MODES = ("clips", "clips-random")
CONSENSUS = ("mean", "lse", "max")
VIEW_STREAM = 7  # seeds each video's order of augmented views apart from its frame draws


def stored_clip_length(provenance: dict) -> int | None:
    """Frames per clip of a set extracted with `--clips` (its rows are clip-major), else None."""
    sampling = provenance.get("sampling") or {}
    return sampling.get("frames_per_clip") if sampling.get("strategy") == "clips" else None


def read_sources(arrays: Sequence[str], stored: dict, provenance: dict, augmented: bool) -> dict[str, list[str]]:
    """array -> the stored arrays a dataset reads for it: [plain], or with `augmented` on a set with V views one per
    augmented view 1..V (`views/<v>/...`; `timestamps` and `frame_indices` have no copies: the plain one V times)."""
    views = range(1, augmented_views(provenance) + 1) if augmented else ()

    def per_view(source: str) -> list[str]:
        return [view_array(v, source) if view_array(v, source) in stored else source for v in views] or [source]
    return {a: per_view(block_source(a, stored)) for a in arrays}


@dataclass(frozen=True)
class FrameSelection:
    """Which rows of a video an item carries.

    `num_frames` applies to all but `all` and `stored-clips`; `stride` (rows between frames) to the dense and clips
    modes; `num_clips` and `consensus` (how per-clip logits combine) to the clips modes. Each `-random` mode
    draws afresh every epoch; its plain twin (`dense`, `clips`) takes the centred rows, for evaluation.
    """

    mode: str = "uniform"
    num_frames: int = 8
    stride: int = 1
    num_clips: int = 1
    consensus: str = "mean"

    def __post_init__(self) -> None:
        if self.mode not in FRAME_MODES:
            raise InputError(f"unknown frame selection {self.mode!r}; choose one of {', '.join(FRAME_MODES)}.")
        if self.num_frames < 1 or self.stride < 1 or self.num_clips < 1:
            raise InputError("frames per item, stride and clips must each be at least 1.")
        if self.consensus not in CONSENSUS:
            raise InputError(f"unknown consensus {self.consensus!r}; choose {', '.join(CONSENSUS)}.")

    @classmethod
    def parse(cls, text: str) -> "FrameSelection":
        """`all`, `stored-clips`, `uniform:8`, `sparse-random:8` (a bare number means `uniform:N`),
        `dense[-random]:T:STRIDE` (T frames STRIDE rows apart from a random start, or centred), `clips[-random]:N:T[:mean|lse|max]`
        (ClipBERT: N clips of T consecutive rows, one in each of N equal segments, logits combined by the
        consensus). `views`, the old name of `stored-clips`, is read as it with a warning."""
        mode, *values = text.split(":")
        if mode == "views":
            warnings.warn("frame selection 'views' is now called 'stored-clips' (every stored clip of a --clips "
                          "extraction); 'view' now means an augmented view (extract --views).", FutureWarning,
                          stacklevel=2)
            mode = "stored-clips"
        try:
            if mode.isdigit():
                return cls("uniform", int(mode))
            if mode in DENSE_MODES:
                return cls(mode, int(values[0]), stride=int(values[1]) if len(values) > 1 else 1)
            if mode in CLIP_MODES:
                return cls(mode, int(values[1]), num_clips=int(values[0]), consensus=values[2] if len(values) > 2
                           else "mean")
            return cls(mode, int(values[0])) if values else cls(mode)
        except (IndexError, ValueError):
            raise InputError(f"cannot read frame selection {text!r}; e.g. uniform:8, dense-random:8:16, "
                             "clips:4:2:lse.") from None

    def __str__(self) -> str:
        if self.mode in DENSE_MODES:
            return f"{self.mode}:{self.num_frames}:{self.stride}"
        if self.mode in CLIP_MODES:
            return f"{self.mode}:{self.num_clips}:{self.num_frames}:{self.consensus}"
        return self.mode if self.mode in WHOLE_MODES else f"{self.mode}:{self.num_frames}"

    @property
    def random(self) -> bool:
        return self.mode in RANDOM_MODES

    def rows(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Row indices into a video of `n` stored frames (segments when `n` < `num_frames` repeat rows)."""
        if self.mode in WHOLE_MODES:
            return np.arange(n)
        t = self.num_frames
        rng = rng if self.random else None
        if self.mode in DENSE_MODES:
            return self._dense(n, 0, n, rng)
        if self.mode in CLIP_MODES:  # clip i lies in segment i of num_clips equal segments
            edges = np.arange(self.num_clips + 1, dtype=np.int64) * n // self.num_clips
            return np.concatenate([self._dense(n, lo, max(lo + 1, hi), rng) for lo, hi in zip(edges, edges[1:])])
        if self.mode == "uniform" or rng is None:
            return segment_middles(n, t)
        # segment i is [i*n//t, (i+1)*n//t), at least one row; integer arithmetic, since floating-point
        # edges (np.linspace) land just below whole numbers, e.g. 12.999999999999998 for n=26, t=46.
        edges = np.arange(t + 1, dtype=np.int64) * n // t
        low = edges[:-1]
        high = np.maximum(low + 1, edges[1:])
        return np.minimum(rng.integers(low, high), n - 1)

    def _dense(self, n: int, lo: int, hi: int, rng: np.random.Generator | None) -> np.ndarray:
        """`num_frames` rows `stride` apart starting in [lo, hi): a random start, or centred without `rng`;
        rows past the video's end repeat its last row."""
        span = (self.num_frames - 1) * self.stride + 1
        room = max(0, hi - lo - span)
        start = lo + (int(rng.integers(0, room + 1)) if rng is not None else room // 2)
        return np.minimum(start + self.stride * np.arange(self.num_frames), n - 1)


class FeatureDataset(Dataset):
    """Items are `{"inputs": {array: tensor (frames, ...)}, "label": int, "index": int}`.

    `labels` are class indices in `video_ids`' order, a mapping video_id -> label, or label strings with
    `classes` (the list they index into); see `train.labels.read_label_csv` for a label CSV.

    `feature_set` is a name in the store at `store_path`, or a FeatureSet the caller has open: this process then
    reads through it (a training run's train and validation sets share one), and worker processes open their own.

    With `stored-clips`, each input has shape (clips, frames_per_clip, ...). `preload=True` reads every
    requested array into memory once (worth it for small arrays such as `embed`). `augmented=True`
    (training) reads, on a set extracted with `--views V`, augmented view 1 + (o + epoch) % V of each video,
    o drawn once per video from the seed: every view in turn, a different one each epoch.
    """

    def __init__(
        self,
        store_path: str | Path,
        feature_set: str | FeatureSet,
        video_ids: Sequence[str],
        arrays: Sequence[str],
        selection: FrameSelection = FrameSelection(),
        labels: Sequence[int] | Sequence[str] | Mapping[str, int | str] | None = None,
        preload: bool = False,
        seed: int = 0,
        augmented: bool = False,
        classes: Sequence[str] | None = None,
    ) -> None:
        if isinstance(video_ids, str):
            raise InputError("video_ids must be a list of ids, not one string.")
        self.store_path = str(store_path)
        self._given = None  # (the caller's open FeatureSet, the process it belongs to)
        if isinstance(feature_set, FeatureSet):
            self._given, feature_set = (feature_set, os.getpid()), feature_set.name
        self.feature_set = feature_set
        self.video_ids = list(video_ids)
        self.classes = list(classes) if classes is not None else None
        self.labels = resolve_labels(self.video_ids, labels, self.classes)
        if isinstance(arrays, str):
            raise InputError(f"arrays must be a list of array names, e.g. [{arrays!r}], not one string.")
        if not isinstance(selection, FrameSelection):
            raise InputError(f"selection must be a FrameSelection (e.g. FrameSelection.parse('uniform:8')), "
                             f"not {type(selection).__name__}.")
        self.arrays = list(arrays)
        self.selection = selection
        self.seed = seed
        self.epoch = 0
        self._fs = None
        self._memmap = None  # False: checked, none usable; else a MemmapExport (per process, like _fs)
        fs = self._open()
        stored = fs.arrays()
        missing_ids = [v for v in self.video_ids if v not in fs]
        if missing_ids:  # a damaged index may hide a committed video: check it against the markers, then again
            fs.check_index()
            missing_ids = [v for v in self.video_ids if v not in fs]
        if missing_ids:
            raise InputError(
                f"{len(missing_ids)} video ids are not committed in feature set {feature_set!r} "
                f"(e.g. {', '.join(map(repr, missing_ids[:3]))})."
            )
        self._sources = read_sources(self.arrays, stored, fs.provenance, augmented)  # array -> one source per view
        missing = [a for a, sources in self._sources.items() if any(src not in stored for src in sources)]
        if missing:
            raise InputError(
                f"feature set {feature_set!r} has no array {missing[0]!r}; it has: {', '.join(stored)}."
            )
        self.clip_length = stored_clip_length(fs.provenance)
        if selection.mode == "stored-clips" and not self.clip_length:
            raise InputError(f"feature set {feature_set!r} was not extracted with --clips, so it has no stored clips.")
        self.views = augmented_views(fs.provenance) if augmented else 0  # augmented views read in turn
        self.row_shapes = {a: tuple(stored[sources[0]]["shape"]) for a, sources in self._sources.items()}
        self._dtypes = {src: np.dtype(stored[src]["dtype"]) for src in self.stored_arrays}
        self._fixed_rows: dict[int, np.ndarray] = {}  # video length -> rows, for selections that draw none
        self.lengths = {v: fs.locate(v).n_rows for v in self.video_ids}
        self._cache: dict[tuple[str, str], np.ndarray] | None = None
        if preload:
            self._cache = {(v, src): fs.read(v, src) for v in self.video_ids for src in self.stored_arrays}
        self._fs = None  # reopened lazily, once per worker process
        self._memmap = None

    def _open(self):
        if self._fs is None and self._given is not None and self._given[1] == os.getpid():
            self._fs = self._given[0]
        if self._fs is None:
            store = Store(self.store_path)
            if self.feature_set not in store:
                raise StoreError(f"store {self.store_path} has no feature set {self.feature_set!r}.")
            self._fs = store[self.feature_set]
            self._memmap = None
        return self._fs

    def _open_memmap(self):
        """The up-to-date memmap export of this worker's snapshot of the feature set, or None."""
        fs = self._open()
        if self._memmap is None:
            from freezeframe.store.tools.memmap import open_memmap_export

            export = open_memmap_export(fs, self.stored_arrays)
            self._memmap = export if export is not None else False
        return self._memmap or None

    @property
    def stored_arrays(self) -> list[str]:
        """Every stored array this dataset may read (each augmented view's, in training on a set with views)."""
        return list(dict.fromkeys(src for sources in self._sources.values() for src in sources))

    def view(self, index: int) -> int:
        """The view item `index` reads this epoch: 0 (plain), or augmented view 1..V, each in turn."""
        if not self.views:
            return 0
        offset = int(np.random.default_rng((self.seed, index, VIEW_STREAM)).integers(self.views))
        return 1 + (offset + self.epoch) % self.views

    @property
    def uses_memmap(self) -> bool:
        """Whether this process reads a memmap export (checked once per process, when first read)."""
        return self._cache is None and self._open_memmap() is not None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None, "_memmap": None, "_given": None}

    def set_epoch(self, epoch: int) -> None:
        """Re-draws random frames and turns augmented views: items depend only on (seed, epoch, index), also after
        resume."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.video_ids)

    def _read(self, video_id: str, source: str, rows: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
        if self._cache is not None:
            full = self._cache[(video_id, source)]
            return into(out, full if rows is None else full[rows])
        export = self._open_memmap()
        if export is not None:
            return export.read(video_id, source, rows, out)
        return self._open().read(video_id, source, rows, out)

    def _read_batch(self, plans: list[tuple], sources: tuple[str, ...], out: np.ndarray) -> None:
        """Each planned item's rows of its source into its slot of `out`: one `FeatureSet.read_batch` when every
        item reads the same stored array from the store."""
        if self._cache is None and self._open_memmap() is None and len(set(sources)) == 1:
            self._open().read_batch([video_id for video_id, _, _ in plans], sources[0],
                                    [rows for _, rows, _ in plans], out)
            return
        for slot, (video_id, rows, _), source in zip(out, plans, sources):
            self._read(video_id, source, rows, slot)

    def _plan(self, index: int) -> tuple[str, np.ndarray | None, int]:
        """(video id, rows to read or None for all, view) of item `index` this epoch."""
        video_id = self.video_ids[index]
        n = self.lengths[video_id]
        if self.selection.mode in WHOLE_MODES:
            rows = None
        elif self.selection.random:
            rows = self.selection.rows(n, np.random.default_rng((self.seed, self.epoch, index)))
        else:  # the same rows for every video of n rows
            rows = self._fixed_rows.get(n)
            if rows is None:
                rows = self._fixed_rows[n] = self.selection.rows(n)
        return video_id, rows, self.view(index)

    def _shaped(self, value: torch.Tensor) -> torch.Tensor:
        if self.selection.mode == "stored-clips":
            return value.reshape(-1, self.clip_length, *value.shape[1:])
        if self.selection.mode in CLIP_MODES:  # (clips, frames, ...): train.consensus scores each clip
            return value.reshape(self.selection.num_clips, -1, *value.shape[1:])
        return value

    def _item(self, index: int, inputs: dict) -> dict:
        item = {"inputs": inputs, "index": index}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item

    def __getitem__(self, index: int) -> dict:
        video_id, rows, view = self._plan(index)
        cache: dict[str, np.ndarray] = {}
        inputs = {}
        for array, sources in self._sources.items():
            source = sources[max(0, view - 1)]  # sources hold views 1..V, or the plain view alone
            if source not in cache:
                cache[source] = self._read(video_id, source, rows)
            inputs[array] = self._shaped(torch.from_numpy(np.ascontiguousarray(cache[source])))
        return self._item(index, inputs)

    def __getitems__(self, indices: list[int]) -> "Sequence[dict]":
        """The items of one batch (what a DataLoader asks for), each array read straight into one batch tensor: a
        `ReadBatch`, which `collate` hands on as it is, copying nothing. Items of different lengths are read one
        by one."""
        plans = [self._plan(index) for index in indices]
        counts = {self.lengths[video_id] if rows is None else len(rows) for video_id, rows, _ in plans}
        if len(counts) != 1:
            return [self[index] for index in indices]
        count = counts.pop()
        batches: dict[tuple[str, ...], torch.Tensor] = {}  # the sources read per item -> their batch tensor
        inputs: dict[str, torch.Tensor] = {}
        for array, sources in self._sources.items():
            per_item = tuple(sources[max(0, view - 1)] for _, _, view in plans)
            batch = batches.get(per_item)
            if batch is None:
                batch = batches[per_item] = batch_tensor((len(plans), count, *self.row_shapes[array]),
                                                         self._dtypes[per_item[0]])
                self._read_batch(plans, per_item, batch.numpy())
            inputs[array] = batch
        return ReadBatch(self, list(indices), inputs)


class ReadBatch(Sequence):
    """The items of one batch as `FeatureDataset.__getitems__` read them, each array one (videos, rows, ...) batch
    tensor: item b (a dict, as `dataset[index]` gives) is built only when asked for, and `collate` takes the
    tensors as they are."""

    def __init__(self, dataset: FeatureDataset, indices: list[int], inputs: dict[str, torch.Tensor]) -> None:
        self.dataset, self.indices, self.inputs = dataset, indices, inputs

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, b):
        if isinstance(b, slice):
            return [self[i] for i in range(*b.indices(len(self)))]
        shaped = self.dataset._shaped
        return self.dataset._item(self.indices[b], {array: shaped(batch[b]) for array, batch in self.inputs.items()})

    def __reduce__(self):  # sent to another process (a worker's batch without collate) as the plain list of items
        return list, (list(self),)

    def collated(self, pad: bool = False) -> dict:
        """What `collate` makes of these items, without building them: the batch tensors themselves."""
        dataset = self.dataset
        out: dict = {"index": torch.tensor(self.indices)}
        if dataset.labels is not None:
            out["label"] = torch.tensor([dataset.labels[index] for index in self.indices])
        size = len(self.indices)
        inputs = {array: batch.view(size, *dataset._shaped(batch[0]).shape) for array, batch in self.inputs.items()}
        if pad:  # all of one length: nothing to pad, every row real
            inputs[FRAME_MASK] = torch.ones(size, next(iter(inputs.values())).shape[1], dtype=torch.bool)
        out["inputs"] = inputs
        return out


def batch_tensor(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised tensor for a batch; in a DataLoader worker it is made in shared memory, so handing it to
    the main process copies nothing (as torch's default_collate does)."""
    dtype = torch.from_numpy(np.empty(0, dtype)).dtype
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).resize_(shape)


FRAME_MASK = "frame_mask"  # inputs key of a padded batch: (batch, frames) bool, True on a video's real rows


def collate(items: list[dict], pad: bool = False) -> dict:
    """Stack items. Videos with different frame counts (`all` on an fps-sampled set) need `pad=True`: each array
    is zero-padded along frames to the batch's longest video and `inputs["frame_mask"]` marks the real rows."""
    if isinstance(items, ReadBatch):
        return items.collated(pad)
    out: dict = {"index": torch.tensor([item["index"] for item in items])}
    if "label" in items[0]:
        out["label"] = torch.tensor([item["label"] for item in items])
    inputs = {}
    for array in items[0]["inputs"]:
        values = [item["inputs"][array] for item in items]
        if pad:
            inputs[array] = torch.nn.utils.rnn.pad_sequence(values, batch_first=True)
            continue
        if len({tuple(v.shape) for v in values}) > 1:
            raise InputError(
                f"videos in a batch have different numbers of frames for {array!r}; use a fixed frame "
                "selection such as uniform:8 instead of all, or a head that takes a frame mask (probe, temporal)."
            )
        inputs[array] = torch.stack(values)
    if pad:
        lengths = torch.tensor([len(next(iter(item["inputs"].values()))) for item in items])
        inputs[FRAME_MASK] = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    out["inputs"] = inputs
    return out


def collate_padded(items: list[dict]) -> dict:
    """`collate` with padding and a frame mask, for heads that take one (`takes_frame_mask`)."""
    return collate(items, pad=True)


def collate_for(head: torch.nn.Module):
    """The collate a head's batches need: padded with a frame mask where the head takes one, else stacked."""
    return collate_padded if getattr(head, "takes_frame_mask", False) else collate
