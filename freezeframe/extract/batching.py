"""Batching frames across videos: windows of any size in, fixed-size backbone batches, results out in order."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch


@dataclass
class _Entry:
    item: object
    pixels: torch.Tensor | None
    n: int
    sliced: int = 0  # frames handed to a batch
    done: int = 0  # frames computed
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)


class FrameBatcher:
    """Feeds `forward` full batches of `batch_size` frames taken from queued items, first in, first out.

    `put` and `flush` return `(item, outputs)` pairs for every finished item, in the order items
    were put; items without pixels (failures, shard ends) finish once everything before them has.
    """

    def __init__(self, batch_size: int, forward: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> None:
        self.batch_size = batch_size
        self.forward = forward
        self._entries: deque[_Entry] = deque()
        self._waiting: deque[_Entry] = deque()  # entries with frames not yet computed
        self._waiting_frames = 0

    def put(self, item: object, pixels: torch.Tensor | None = None) -> list[tuple[object, dict[str, np.ndarray]]]:
        entry = _Entry(item, pixels, 0 if pixels is None else len(pixels))
        self._entries.append(entry)
        if entry.n:
            self._waiting.append(entry)
            self._waiting_frames += entry.n
        while self._waiting_frames >= self.batch_size:
            self._run(self.batch_size)
        return self._finished()

    def flush(self) -> list[tuple[object, dict[str, np.ndarray]]]:
        while self._waiting_frames:
            self._run(min(self.batch_size, self._waiting_frames))
        return self._finished()

    def _run(self, n: int) -> None:
        pieces: list[tuple[_Entry, int, int]] = []
        need = n
        while need:
            entry = self._waiting[0]
            take = min(need, entry.n - entry.sliced)
            pieces.append((entry, entry.sliced, take))
            entry.sliced += take
            need -= take
            if entry.sliced == entry.n:
                self._waiting.popleft()
        batch = torch.cat([entry.pixels[start:start + take] for entry, start, take in pieces])
        for entry, _start, _take in pieces:
            if entry.sliced == entry.n:
                entry.pixels = None  # free decoded frames as soon as they are in a batch
        outputs = {k: v.detach().to("cpu", torch.float16).numpy() for k, v in self.forward(batch).items()}
        offset = 0
        for entry, _start, take in pieces:
            entry.parts.append({k: v[offset:offset + take] for k, v in outputs.items()})
            entry.done += take
            offset += take
        self._waiting_frames -= n

    def _finished(self) -> list[tuple[object, dict[str, np.ndarray]]]:
        out = []
        while self._entries and self._entries[0].done == self._entries[0].n:
            entry = self._entries.popleft()
            arrays = {k: np.concatenate([p[k] for p in entry.parts]) for k in entry.parts[0]} if entry.parts else {}
            out.append((entry.item, arrays))
        return out
