"""One training epoch over a large synthetic store: rows/s of a probe, a temporal head and VideoCLIP's towers, and
the read share of a step.

    python benchmarks/train_epoch.py --dir /data/scale --videos 100000 [--batch 256] [--workers 0]
                                     [--heads probe,temporal,videoclip]

Builds (once, under --dir; `benchmarks/store_scale.py`'s builder) a feature set of `--videos` videos of 4 rows of
`embed` (16 x float16) in shards of 64 and, for VideoCLIP, a text set of one caption per video (8 token states of
16 x float16). For each head it times, over the same shuffled batches (`FeatureDataset`, `uniform:4`, through a
DataLoader; VideoCLIP: `VideoTextPairs`, each caption with its whole 4-second video, in random batches), after a
warm-up epoch: an epoch that only reads the batches, and an epoch that also trains (forward, backward, the fused
AdamW step `freezeframe train` uses); for heads other than the probe only the first `--batches` batches of each.
The read share is read-only seconds per row over training seconds per row.
Runs with whatever freezeframe PYTHONPATH selects, so old and new code are measured by running it twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_scale import NAME, ROWS, build  # noqa: E402

from freezeframe.heads import build_head, head_config  # noqa: E402
from freezeframe.store import FeatureSetWriter, open_store  # noqa: E402
from freezeframe.text.captions import Caption  # noqa: E402
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate  # noqa: E402
from freezeframe.train.neighbourhoods import RandomBatches  # noqa: E402
from freezeframe.train.videoclip import LOSSES  # noqa: E402
from freezeframe.train.videotext import VideoTextPairs, collate_pairs  # noqa: E402

TEXT, TOKENS = "text", 8


def build_text(store: Path, ids: list[str]) -> None:
    """A text set of one caption per video (its id), once: token states of one layer and their mask."""
    if TEXT in open_store(store).names():
        return
    writer = FeatureSetWriter(store, TEXT, {"kind": "text", "layers": [1], "max_length": TOKENS})
    states = np.random.default_rng(1).standard_normal((TOKENS, 16)).astype(np.float16)
    for start in range(0, len(ids), 64):
        shard = writer.new_shard()
        for video_id in ids[start:start + 64]:
            shard.append(video_id, {"tokens/1": states, "attention_mask": np.ones(TOKENS, np.uint8)})
            shard.end_video(video_id)
        shard.commit()
    writer.write_index()


def train_step(head: torch.nn.Module, optimizer, batch: dict, loss_fn) -> None:
    if loss_fn is None:
        loss = F.cross_entropy(head(batch["inputs"]), batch["label"])
    else:  # contrastive: (video, text) embeddings of the batch's pairs
        loss = loss_fn(*head(*[batch[k] for k in head.INPUTS]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def epoch_seconds(loader: DataLoader, head: torch.nn.Module | None, loss_fn=None,
                  batches: int | None = None) -> tuple[float, int]:
    """(seconds, rows) for one pass over `loader` (its first `batches` batches if given), training `head` on each
    batch when given (else only reading)."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4, fused=True) if head is not None else None
    rows = 0
    start = time.perf_counter()
    for number, batch in enumerate(loader):
        if batches is not None and number == batches:
            break
        rows += ROWS * len(batch["index"])
        if head is not None:
            train_step(head, optimizer, batch, loss_fn)
    return time.perf_counter() - start, rows


def loader_for(kind: str, store: Path, fs, labels: list[int], args) -> tuple[DataLoader, torch.nn.Module]:
    """The shuffled batches of one epoch over feature set `fs` of `store` and a freshly built head of `kind`."""
    ids = fs.video_ids()
    workers = dict(num_workers=args.workers, persistent_workers=args.workers > 0)
    if kind == "videoclip":
        build_text(store, ids)
        pairs = VideoTextPairs(store, NAME, TEXT, [Caption(v, v, v) for v in ids], max_tokens=TOKENS)
        head = build_head(kind, head_config(kind, fs, open_store(store)[TEXT], max_tokens=TOKENS))
        return DataLoader(pairs, batch_sampler=RandomBatches(len(pairs), args.batch), collate_fn=collate_pairs,
                          **workers), head
    head = build_head(kind, head_config(kind, fs, num_classes=10, num_frames=ROWS))
    dataset = FeatureDataset(store, NAME, ids, head.required_arrays, FrameSelection("uniform", ROWS), labels)
    return DataLoader(dataset, batch_size=args.batch, shuffle=True, collate_fn=collate, **workers), head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--heads", default="probe,temporal,videoclip", help="comma list of heads to time")
    parser.add_argument("--batches", type=int, default=40,
                        help="batches timed per epoch for the heads other than the probe (their model dominates)")
    args = parser.parse_args()
    store = args.dir / f"store-{args.videos}"
    build(store, args.videos)
    torch.manual_seed(0)
    fs = open_store(store)[NAME]
    ids = fs.video_ids()
    labels = [i % 10 for i in range(len(ids))]
    result = {"videos": len(ids), "rows_per_video": ROWS, "batch": args.batch, "workers": args.workers, "heads": {}}
    for kind in args.heads.split(","):
        loader, head = loader_for(kind, store, fs, labels, args)
        loss_fn = LOSSES["videoclip"]() if kind == "videoclip" else None
        epoch_seconds(loader, None)  # warm: every shard's reader opened, pages cached
        limit = None if kind == "probe" else args.batches
        read_s, read_rows = epoch_seconds(loader, None, batches=limit)
        train_s, rows = epoch_seconds(loader, head, loss_fn, limit)
        result["heads"][kind] = {"rows_per_s": rows / train_s, "read_only_rows_per_s": read_rows / read_s,
                                 "read_share": (read_s / read_rows) / (train_s / rows), "batches_timed": limit or "all"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
