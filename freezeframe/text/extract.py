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
from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.location import store_path
from freezeframe.store.tools.remove import remove_videos
from freezeframe.store.writer import FeatureSetWriter
from freezeframe.text.captions import Caption, text_sha256
from freezeframe.text.encoders import TextConfig, build_text_encoder


@dataclass
class TextReport:
    """What one `extract_text` run did."""

    store: str
    feature_set: str
    total: int
    stored: int = 0
    skipped: int = 0
    changed: int = 0  # captions whose id was committed with other text: their old rows were removed, then redone
    seconds: float = 0.0


def default_text_set_name(config: TextConfig) -> str:
    path = Path(config.model)
    # a local directory is named by its last part that is not a generic "model" folder
    model = next((p for p in reversed(path.resolve().parts) if p.lower() not in ("model", "models")), path.name) \
        if path.is_dir() else config.model
    weights = "" if config.backbone == "bert" else "-" + (
        "random" if config.pretrained in ("none", "") else Path(config.pretrained).stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{config.backbone}-{model}{weights}").strip("-.").lower()


def committed_text_hashes(store: str | Path, name: str) -> dict[str, str | None]:
    """Caption id -> sha256 of the text its committed rows were made from (None for rows made before it was kept)."""
    fs = FeatureSet(store_path(store), name)
    return {caption_id: info.get("text_sha256") for caption_id, info in fs.video_infos().items()}


def extract_text(captions: Sequence[Caption], store: str | Path, config: TextConfig, *, name: str | None = None,
                 batch_size: int = 64, shard_size: int = 4096, device: str | torch.device = "cpu",
                 progress: bool = True) -> TextReport:
    """Encode every caption not yet in the set `name` and commit them in shards; a rerun resumes.

    A caption counts as done only when its id was committed from the same text (sha256); an id committed from
    other text has its old rows removed (atomically) and is encoded again.
    """
    if not captions:
        raise InputError("no captions to encode.")
    if batch_size < 1 or shard_size < 1:
        raise InputError("--batch-size and --shard-size must be at least 1.")
    device = torch.device(device)
    encoder = build_text_encoder(config, device)
    provenance = prov.stamp({"kind": "text", **encoder.provenance()}, "torch", "transformers", "open_clip_torch")
    name = name or default_text_set_name(config)
    writer = FeatureSetWriter(store, name, provenance)
    stored_texts = committed_text_hashes(store, name)
    changed = [c.caption_id for c in captions
               if c.caption_id in stored_texts and stored_texts[c.caption_id] != text_sha256(c.text)]
    if changed:  # an id whose text changed: its old rows must never be served again
        remove_videos(store, name, changed)
    todo = [c for c in captions if stored_texts.get(c.caption_id) != text_sha256(c.text)]
    report = TextReport(str(store), name, total=len(captions), skipped=len(captions) - len(todo), changed=len(changed))
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
                        shard.end_video(caption.caption_id, {"video_id": caption.video_id,
                                                             "text_sha256": text_sha256(caption.text)})
                    bar.update(len(batch))
                shard.commit()
            except BaseException:
                shard.abort()
                raise
            report.stored += len(part)
    writer.write_index()
    report.seconds = time.perf_counter() - start
    return report
