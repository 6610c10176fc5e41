"""Caching text features: captions in, one text feature set out, keyed by caption id, committed shard by shard."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from freezeframe.errors import InputError
from freezeframe.store import provenance as prov
from freezeframe.store.writer import FeatureSetWriter
from freezeframe.text.captions import Caption
from freezeframe.text.encoders import TextConfig, build_text_encoder


@dataclass
class TextReport:
    """What one `extract_text` run did."""

    store: str
    feature_set: str
    total: int
    stored: int = 0
    skipped: int = 0
    seconds: float = 0.0


def default_text_set_name(config: TextConfig) -> str:
    path = Path(config.model)
    # a local directory is named by its last part that is not a generic "model" folder
    model = next((p for p in reversed(path.resolve().parts) if p.lower() not in ("model", "models")), path.name) \
        if path.is_dir() else config.model
    weights = "" if config.backbone == "bert" else "-" + (
        "random" if config.pretrained in ("none", "") else Path(config.pretrained).stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{config.backbone}-{model}{weights}").strip("-.").lower()


def extract_text(captions: Sequence[Caption], store: str | Path, config: TextConfig, *, name: str | None = None,
                 batch_size: int = 64, shard_size: int = 4096, device: str | torch.device = "cpu",
                 progress: bool = True) -> TextReport:
    """Encode every caption not yet in the set `name` and commit them in shards; a rerun resumes."""
    if batch_size < 1 or shard_size < 1:
        raise InputError("--batch-size and --shard-size must be at least 1.")
    device = torch.device(device)
    encoder = build_text_encoder(config, device)
    provenance = prov.stamp({"kind": "text", **encoder.provenance()}, "torch", "transformers", "open_clip_torch")
    name = name or default_text_set_name(config)
    writer = FeatureSetWriter(store, name, provenance)
    committed = writer.committed_ids()
    todo = [c for c in captions if c.caption_id not in committed]
    report = TextReport(str(store), name, total=len(captions), skipped=len(captions) - len(todo))
    start = time.perf_counter()
    with tqdm(total=len(todo), unit="caption", disable=not progress, dynamic_ncols=True) as bar:
        for first in range(0, len(todo), shard_size):
            shard = writer.new_shard()
            try:
                part = todo[first:first + shard_size]
                for lo in range(0, len(part), batch_size):
                    batch = part[lo:lo + batch_size]
                    for caption, arrays in zip(batch, encoder.encode([c.text for c in batch])):
                        shard.append(caption.caption_id, arrays)
                        shard.end_video(caption.caption_id, {"video_id": caption.video_id})
                    bar.update(len(batch))
                shard.commit()
            except BaseException:
                shard.abort()
                raise
            report.stored += len(part)
    writer.write_index()
    report.seconds = time.perf_counter() - start
    return report
