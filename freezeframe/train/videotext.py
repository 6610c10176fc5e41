"""(video span, caption) pairs read from a video feature set and a text feature set, for VideoCLIP heads.

Video rows are placed in time by their stored `timestamps` (seconds), and each stored row is one position of the
video tower, in time order: a CLIP set of 8 frames of a one-second clip reads as 8 rows, so the tower sees the
motion. `pool_seconds=S` averages the rows into bins of S seconds first (`pooled_rows`; 1 = the one feature per
second VideoCLIP's S3D-G gives, which a set of one row per second already is). A caption
with start/end is paired with the video span VideoCLIP trains on: a random second of the caption is the centre,
a span length is drawn from `SpanSeconds` and the span grows from the centre to either side at random, so video
and text overlap without sharing start and end. A caption without start/end, and every evaluation item, uses the
whole video (evenly thinned to the head's `max_seconds` rows when longer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from freezeframe.errors import InputError
from freezeframe.heads.registry import vector_width
from freezeframe.heads.videoclip import check_pair_of_sets, default_text_layer, default_video_array, token_states_width
from freezeframe.options import FieldError
from freezeframe.store.store import open_feature_set
from freezeframe.text.captions import Caption


@dataclass(frozen=True)
class SpanSeconds:
    """Lengths of the video spans paired with timed captions in training: `min_seconds`..`max_seconds` (uniform),
    around a random second of the caption. VideoCLIP's: 3 to 32 seconds."""

    min_seconds: int = 3
    max_seconds: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min_seconds <= self.max_seconds:
            raise FieldError("span_seconds",
                             f"must satisfy 1 <= MIN <= MAX, got {self.min_seconds},{self.max_seconds}.")


def pooled_rows(features: np.ndarray, timestamps: np.ndarray, seconds: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows averaged into bins of `seconds` by their stored timestamps: (bins, dim) features and each bin's start.

    With `seconds=1`, a CLIP set extracted at `--fps 4` has its four rows of each second averaged into one (the
    one feature per second VideoCLIP's S3D-G gives). Rows already one per bin or sparser come back unchanged.
    Averaging removes the order of the rows inside a bin: a one-second clip of 8 frames becomes one row.
    """
    bins = np.floor(timestamps / seconds + 1e-6).astype(np.int64)
    if len(bins) < 2 or np.all(np.diff(bins) > 0):
        return features, timestamps
    kept, inverse = np.unique(bins, return_inverse=True)
    sums = np.zeros((len(kept), *features.shape[1:]), np.float64)
    np.add.at(sums, inverse, features.astype(np.float64))
    counts = np.bincount(inverse, minlength=len(kept)).reshape(-1, *([1] * (features.ndim - 1)))
    return (sums / counts).astype(np.float32), kept.astype(np.float64) * seconds


def row_step(timestamps: np.ndarray) -> float:
    """Seconds between consecutive rows (the median spacing; 1 s for a single row)."""
    return float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 1.0


def caption_rows(timestamps: np.ndarray, start: float | None, end: float | None) -> np.ndarray:
    """Indices of the rows whose span [t_i, t_i+1) overlaps [start, end); the nearest row when none does."""
    step = row_step(timestamps)
    lo = 0.0 if start is None else start
    hi = np.inf if end is None else end
    row_end = np.append(timestamps[1:], timestamps[-1] + step)
    hit = np.flatnonzero((timestamps < hi) & (row_end > lo))
    if hit.size:
        return hit
    middle = lo if end is None else (lo + hi) / 2
    return np.array([int(np.argmin(np.abs(timestamps - middle)))])


def overlapping_span(timestamps: np.ndarray, start: float | None, end: float | None, spans: SpanSeconds,
                     rng: np.random.Generator, max_rows: int) -> np.ndarray:
    """Contiguous row indices of a training span that overlaps the caption (see the module docstring)."""
    n = len(timestamps)
    center = int(rng.choice(caption_rows(timestamps, start, end)))
    seconds = int(rng.integers(spans.min_seconds, spans.max_seconds + 1))
    length = max(1, min(n, round(seconds / row_step(timestamps))))
    # growing one row at a time to a random side is a binomial split of the extra rows, clipped at the video's ends
    left = min(int(rng.binomial(length - 1, 0.5)), center)
    right = min(length - 1 - left, n - 1 - center)
    left = length - 1 - right
    span = np.arange(center - left, center + right + 1)
    return span[whole_video_rows(len(span), max_rows)]  # rows denser than the head's positions: evenly thinned


def whole_video_rows(n: int, max_rows: int) -> np.ndarray:
    """All rows, or `max_rows` evenly spaced ones when the video has more."""
    if n <= max_rows:
        return np.arange(n)
    return np.linspace(0, n - 1, max_rows).round().astype(np.int64)


class VideoTextPairs(Dataset):
    """Items `{"video": (rows, dim), "tokens": (tokens, text_dim), "text_mask": (tokens,), "index": int}`.

    Everything a run needs is read into memory once (pooled per-second features and token states are small).
    `spans=None` gives every caption the whole video (evaluation); otherwise captions with start/end get
    overlapping spans that depend only on (seed, epoch, index), so a resumed run draws the same ones.
    `token_ids`: "tokens" holds the stored token ids (BERT towers) instead of token states. `merge_tokens`
    (MIN, MAX; training with token ids): a timed caption is joined with the video's next captions until a
    budget drawn from MIN..MAX tokens is reached, and its span is placed on the merged captions' time (VideoCLIP).
    `normalize_video`: each row's feature L2-normalised (VideoCLIP's S3D-G input). `pool_seconds`: the stored rows
    averaged into bins of that many seconds first (0: every stored row kept, in time order).
    """

    def __init__(self, store: str | Path, video_set: str, text_set: str, captions: Sequence[Caption], *,
                 array: str | None = None, text_layer: int | None = None, max_seconds: int = 64,
                 max_tokens: int = 64, spans: SpanSeconds | None = None, seed: int = 0,
                 token_ids: bool = False, merge_tokens: tuple[int, int] | None = None,
                 normalize_video: bool = False, pool_seconds: float = 0.0) -> None:
        videos, texts = open_feature_set(store, video_set), open_feature_set(store, text_set)
        check_pair_of_sets(videos, texts)
        self.array = array or default_video_array(videos)
        self.text_layer = default_text_layer(texts) if text_layer is None else text_layer
        stored, stored_text = videos.arrays(), texts.arrays()
        self.video_dim = vector_width(videos, self.array)
        token_array = "token_ids" if token_ids else f"tokens/{self.text_layer}"
        if token_ids and token_array not in stored_text:
            raise InputError(f"text set {text_set!r} stores no token_ids; BERT towers need a set made by "
                             "`extract-text --backbone bert`.")
        self.text_dim = 0 if token_ids else token_states_width(texts, self.text_layer)
        self.captions = list(captions)
        missing_videos = sorted({c.video_id for c in self.captions if c.video_id not in videos})
        if missing_videos:
            raise InputError(f"{len(missing_videos)} videos of the captions are not in feature set {video_set!r} "
                             f"(e.g. {', '.join(map(repr, missing_videos[:3]))}); extract them or drop their captions.")
        missing_text = [c.caption_id for c in self.captions if c.caption_id not in texts]
        if missing_text:
            raise InputError(f"text set {text_set!r} has no features for {len(missing_text)} captions "
                             f"(e.g. {', '.join(map(repr, missing_text[:3]))}); run extract-text on this captions "
                             f"file with --name {text_set}.")
        timed = any(c.start is not None or c.end is not None for c in self.captions)
        if timed and spans is not None and "timestamps" not in stored:
            raise InputError(f"feature set {video_set!r} stores no timestamps, so caption start/end cannot be placed "
                             "in its videos; re-extract it with this version or drop start/end from the captions.")
        self.video_ids = sorted({c.video_id for c in self.captions})
        self.video_index = {v: i for i, v in enumerate(self.video_ids)}
        self.features, self.timestamps = {}, {}
        for v in self.video_ids:  # the stored rows in time order, or their means over pool_seconds bins
            rows = videos.read(v, self.array)
            times = (videos.read(v, "timestamps").astype(np.float64) if "timestamps" in stored
                     else np.arange(len(rows), dtype=np.float64))
            self.features[v], self.timestamps[v] = (pooled_rows(rows, times, pool_seconds) if pool_seconds > 0
                                                    else (rows, times))
            if normalize_video:
                norms = np.linalg.norm(self.features[v].astype(np.float32), axis=1, keepdims=True)
                self.features[v] = self.features[v].astype(np.float32) / np.maximum(norms, 1e-12)
        self.tokens = [texts.read(c.caption_id, token_array)[:max_tokens] for c in self.captions]
        self.text_masks = [texts.read(c.caption_id, "attention_mask")[:max_tokens].astype(bool)
                           if "attention_mask" in stored_text else np.ones(len(t), bool)
                           for c, t in zip(self.captions, self.tokens)]
        self.max_seconds, self.spans, self.seed, self.epoch = max_seconds, spans, seed, 0
        self.token_ids, self.max_tokens = token_ids, max_tokens
        self.merge_tokens = merge_tokens if token_ids else None
        self.next_caption = _next_captions(self.captions)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.captions)

    def item_videos(self) -> list[int]:
        """Index (into `video_ids`) of each item's video."""
        return [self.video_index[c.video_id] for c in self.captions]

    def pooled_videos(self) -> torch.Tensor:
        """(videos, dim): each video's cached rows averaged, in `video_ids` order (what batches cluster on)."""
        return torch.stack([torch.from_numpy(self.features[v].astype(np.float32)).mean(0) for v in self.video_ids])

    def merged(self, index: int, rng: np.random.Generator) -> tuple[list[int], np.ndarray]:
        """Items joined from `index` on (the video's next captions in time) and their token ids, framed once."""
        low, high = self.merge_tokens
        budget = int(rng.integers(low, high + 1))
        chain, words = [index], list(self.tokens[index][1:-1])
        while len(words) < budget and self.next_caption[chain[-1]] is not None:
            chain.append(self.next_caption[chain[-1]])
            words += list(self.tokens[chain[-1]][1:-1])
        first = self.tokens[index]
        ids = np.array([first[0], *words[: min(budget, self.max_tokens - 2)], first[-1]], dtype=first.dtype)
        return chain, ids

    def rows_and_tokens(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The item's video rows and its tokens (ids or states), drawn for (seed, epoch, index)."""
        caption = self.captions[index]
        timestamps = self.timestamps[caption.video_id]
        if self.spans is None or (caption.start is None and caption.end is None):
            return whole_video_rows(len(timestamps), self.max_seconds), self.tokens[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        tokens, start, end = self.tokens[index], caption.start, caption.end
        if self.merge_tokens is not None:
            chain, tokens = self.merged(index, rng)
            end = self.captions[chain[-1]].end if self.captions[chain[-1]].end is not None else end
        return overlapping_span(timestamps, start, end, self.spans, rng, self.max_seconds), tokens

    def rows(self, index: int) -> np.ndarray:
        return self.rows_and_tokens(index)[0]

    def __getitem__(self, index: int) -> dict:
        rows, tokens = self.rows_and_tokens(index)
        video = self.features[self.captions[index].video_id][rows]
        tokens = torch.from_numpy(tokens.astype(np.int64 if self.token_ids else np.float32))
        mask = torch.ones(len(tokens), dtype=torch.bool) if len(tokens) != len(self.text_masks[index]) \
            else torch.from_numpy(self.text_masks[index])
        return {"video": torch.from_numpy(video.astype(np.float32)), "tokens": tokens, "text_mask": mask,
                "index": index}


def _next_captions(captions: Sequence[Caption]) -> list[int | None]:
    """For each timed caption, the index of the same video's next timed caption by start (None at the end)."""
    following: list[int | None] = [None] * len(captions)
    by_video: dict[str, list[int]] = {}
    for i, caption in enumerate(captions):
        if caption.start is not None:
            by_video.setdefault(caption.video_id, []).append(i)
    for items in by_video.values():
        items.sort(key=lambda i: captions[i].start)
        for here, there in zip(items, items[1:]):
            following[here] = there
    return following


def _pad(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (length, dim) tensors padded with zeros at the end; mask marks the real positions."""
    longest = max(len(v) for v in values)
    out = values[0].new_zeros(len(values), longest, *values[0].shape[1:])
    mask = torch.zeros(len(values), longest, dtype=torch.bool)
    for i, value in enumerate(values):
        out[i, : len(value)] = value
        mask[i, : len(value)] = True
    return out, mask


def collate_pairs(items: list[dict]) -> dict:
    """Pad a batch: video (B, S, D) + video_mask (B, S), tokens (B, L, E) + text_mask (B, L), index (B,)."""
    video, video_mask = _pad([item["video"] for item in items])
    tokens, _ = _pad([item["tokens"] for item in items])
    text_mask, _ = _pad([item["text_mask"] for item in items])
    return {"video": video, "video_mask": video_mask, "tokens": tokens, "text_mask": text_mask.bool(),
            "index": torch.tensor([item["index"] for item in items])}


def embed_pairs(model: nn.Module, dataset: VideoTextPairs, batch_size: int = 64,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(video embeddings, text embeddings), one row per item of `dataset`, in order."""
    device = torch.device(device)
    model.eval().to(device)
    videos, texts = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_pairs):
        v, t = model(*[batch[k].to(device) for k in model.INPUTS])
        videos.append(v.float().cpu())
        texts.append(t.float().cpu())
    return torch.cat(videos), torch.cat(texts)
