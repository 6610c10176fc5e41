"""One training epoch over a large synthetic store: rows/s of a probe and a temporal head, and the read share of a step.

    python benchmarks/train_epoch.py --dir /data/scale --videos 100000 [--batch 256] [--workers 0] [--heads probe,temporal]

Builds (once, under --dir; `benchmarks/store_scale.py`'s builder) a feature set of `--videos` videos of 4 rows of
`embed` (16 x float16) in shards of 64, then for each head times, over the same shuffled DataLoader
(`FeatureDataset`, `uniform:4`), after a warm-up epoch: an epoch that only reads the batches, and an epoch that also trains (forward,
backward, the fused AdamW step `freezeframe train` uses). The read share is read-only seconds over training seconds.
Runs with whatever freezeframe PYTHONPATH selects, so old and new code are measured by running it twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_scale import NAME, ROWS, build  # noqa: E402

from freezeframe.heads import build_head, head_config  # noqa: E402
from freezeframe.store import open_store  # noqa: E402
from freezeframe.train.datasets import FeatureDataset, FrameSelection, collate  # noqa: E402


def epoch_seconds(loader: DataLoader, head: torch.nn.Module | None) -> float:
    """Seconds for one pass over `loader`, training `head` on each batch when given (else only reading)."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-4, fused=True) if head is not None else None
    start = time.perf_counter()
    for batch in loader:
        if head is None:
            continue
        loss = F.cross_entropy(head(batch["inputs"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--heads", default="probe,temporal", help="comma list of heads to time")
    args = parser.parse_args()
    store = args.dir / f"store-{args.videos}"
    build(store, args.videos)
    torch.manual_seed(0)
    fs = open_store(store)[NAME]
    ids = fs.video_ids()
    labels = [i % 10 for i in range(len(ids))]
    result = {"videos": len(ids), "rows_per_video": ROWS, "batch": args.batch, "workers": args.workers, "heads": {}}
    for kind in args.heads.split(","):
        head = build_head(kind, head_config(kind, fs, num_classes=10, num_frames=ROWS))
        dataset = FeatureDataset(store, NAME, ids, head.required_arrays, FrameSelection("uniform", ROWS), labels)
        loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, collate_fn=collate,
                            num_workers=args.workers, persistent_workers=args.workers > 0)
        epoch_seconds(loader, None)  # warm: every shard's reader opened, pages cached
        read_s = epoch_seconds(loader, None)
        train_s = epoch_seconds(loader, head)
        result["heads"][kind] = {"rows_per_s": len(ids) * ROWS / train_s, "read_only_rows_per_s": len(ids) * ROWS / read_s,
                                 "read_share": read_s / train_s, "epoch_s": train_s}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
