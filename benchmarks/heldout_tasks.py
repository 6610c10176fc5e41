"""Held-out synthetic motion tasks for tuning head defaults, kept out of the tests (which use `freezeframe.synthetic`).

A battery of small tasks (64x64 videos, 8 frames, a noisy background of random colour) in which only motion tells
the classes apart; in every task but `speed` a single frame (and so any mean-pooled feature) carries no label:

- direction:  a square moves in one of 4 directions (right, left, down, up) from a random place;
- rotation:   a bar rotates clockwise or counter-clockwise from a random angle;
- speed:      a square moves slowly (2 px a frame) or fast (6 px a frame), in a random direction;
- grow-shrink: a square grows or shrinks (the order of frames alone tells them apart);
- appear:     a square appears (present from a random frame on) or disappears (present until it).

    python benchmarks/heldout_tasks.py make OUT_DIR [--tasks direction,rotation] [--videos 200] [--seed 7]
        [--model ff-tiny-vit]
writes, per task, OUT_DIR/TASK/videos, train.csv (80%), test.csv and a store OUT_DIR/TASK/store (set "motion")
extracted with random weights (the embedding and the token maps of the last 4 blocks).

    python benchmarks/heldout_tasks.py train OUT_DIR [--tasks ...] [--heads evl,temporal,probe] [--json F]
        [--markdown F] [--threads 1] [-o lr=1e-3 ...]
trains each head with `freezeframe train`'s defaults (through `freezeframe.api.train_head`) on train.csv and
prints a table: task, head, train and held-out top-1 of the last epoch's weights (the probe: its one solution),
steps and seconds. The benchmark is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from freezeframe.synthetic import write_labels, write_video

SIZE, FRAMES = 64, 8


def _background(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.integers(0, 70, 3) + rng.integers(-20, 21, (FRAMES, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def _square(frames: np.ndarray, t: int, cy: float, cx: float, side: int, colour: np.ndarray) -> None:
    top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    frames[t, max(0, top):max(0, top + side), max(0, left):max(0, left + side)] = colour


def _moving_square(rng: np.random.Generator, heading: int | None, step: int, side: int) -> np.ndarray:
    """A square moving by `step` px a frame towards DIRECTIONS[heading] (a random one for None) from a random place
    that keeps it inside the frame."""
    frames, colour = _background(rng), rng.integers(170, 256, 3)
    dy, dx = DIRECTIONS[int(rng.integers(4)) if heading is None else heading]
    span = step * (FRAMES - 1)
    lo, hi = side // 2, SIZE - side // 2
    cy0 = rng.uniform(lo + (span if dy < 0 else 0), hi - (span if dy > 0 else 0))
    cx0 = rng.uniform(lo + (span if dx < 0 else 0), hi - (span if dx > 0 else 0))
    for t in range(FRAMES):
        _square(frames, t, cy0 + dy * step * t, cx0 + dx * step * t, side, colour)
    return frames


DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # right, left, down, up


def direction(label: int, rng: np.random.Generator) -> np.ndarray:
    """A square moving right, left, down or up (label 0-3) by 5 px a frame from a random place."""
    return _moving_square(rng, label, step=5, side=14)


def rotation(label: int, rng: np.random.Generator) -> np.ndarray:
    """A bar through the centre turning clockwise (0) or counter-clockwise (1) by 22.5 degrees a frame."""
    frames, colour = _background(rng), rng.integers(170, 256, 3)
    start, sign = rng.uniform(0, np.pi), (1 if label == 0 else -1)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - (SIZE - 1) / 2
    for t in range(FRAMES):
        angle = start + sign * t * np.pi / 8
        along = xx * np.cos(angle) + yy * np.sin(angle)
        across = -xx * np.sin(angle) + yy * np.cos(angle)
        frames[t][(np.abs(across) <= 3) & (np.abs(along) <= 28)] = colour
    return frames


def speed(label: int, rng: np.random.Generator) -> np.ndarray:
    """A square moving slowly (0: 2 px a frame) or fast (1: 6 px a frame) in a random one of 4 directions."""
    return _moving_square(rng, None, step=(2, 6)[label], side=12)


def grow_shrink(label: int, rng: np.random.Generator) -> np.ndarray:
    """A square of random colour and place growing (0) or shrinking (1)."""
    frames, colour = _background(rng), rng.integers(170, 256, 3)
    sides = np.linspace(6, SIZE // 2, FRAMES).round().astype(int)
    if label == 1:
        sides = sides[::-1]
    cy, cx = (int(v) for v in rng.integers(SIZE // 4, 3 * SIZE // 4, 2))
    for t, side in enumerate(sides):
        _square(frames, t, cy, cx, int(side), colour)
    return frames


def appear(label: int, rng: np.random.Generator) -> np.ndarray:
    """A still square present from a random frame on (0: appears) or until it (1: disappears)."""
    frames, colour, side = _background(rng), rng.integers(170, 256, 3), 16
    cut = int(rng.integers(2, FRAMES - 1))  # 2..6: both halves have 2 frames or more
    cy, cx = (float(v) for v in rng.uniform(side / 2, SIZE - side / 2, 2))
    for t in range(FRAMES):
        if (t >= cut) == (label == 0):
            _square(frames, t, cy, cx, side, colour)
    return frames


TASKS = {
    "direction": (direction, ("right", "left", "down", "up")),
    "rotation": (rotation, ("clockwise", "counter-clockwise")),
    "speed": (speed, ("slow", "fast")),
    "grow-shrink": (grow_shrink, ("grows", "shrinks")),
    "appear": (appear, ("appears", "disappears")),
}
SET = "motion"


def make_task(out: Path, task: str, videos: int, seed: int, model: str = "ff-tiny-vit") -> None:
    """Videos, 80/20 label CSVs and a store of random-weight CLIP features (embed + the last 4 blocks' tokens)."""
    from freezeframe.extract import ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources, \
        run_extraction

    generate, classes = TASKS[task]
    rng = np.random.default_rng(seed)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(videos):
        video_id = f"{task}-{seed}-{i:04d}"
        write_video(out / "videos" / f"{video_id}.mp4", generate(i % len(classes), rng))
        rows.append((video_id, classes[i % len(classes)]))
    order = rng.permutation(videos)
    cut = videos * 4 // 5
    write_labels(out / "train.csv", [rows[i] for i in sorted(order[:cut])])
    write_labels(out / "test.csv", [rows[i] for i in sorted(order[cut:])])
    backbone = ClipBackbone(ClipConfig(model=model, pretrained="none", features=("embed", "tokens")))
    run_extraction(collect_sources([out / "videos"]), backbone,
                   ExtractConfig(store=str(out / "store"), name=SET, sampling=SamplingConfig(num_frames=FRAMES),
                                 workers=1, progress=False))


def top1(run_dir: Path, checkpoint: str, store: Path, labels: Path, frames: str) -> float:
    """Top-1 of a run's `checkpoint` weights on a labelled set (eval mode), as `freezeframe eval` scores it."""
    import torch

    from freezeframe.train.datasets import FeatureDataset, FrameSelection
    from freezeframe.train.evaluation import predict, scores
    from freezeframe.train.jobs import labelled_ids
    from freezeframe.train.run import load_head

    head, info = load_head(run_dir, checkpoint)
    ids, y, _ = labelled_ids(labels, info.classes)
    dataset = FeatureDataset(str(store), SET, ids, head.required_arrays, FrameSelection.parse(frames), y)
    probs, _ = predict(head, dataset, 32, torch.device("cpu"), 0)
    return float(scores(probs, torch.as_tensor(y))["top1"])


def train_one(task_dir: Path, head: str, options: dict) -> dict:
    from freezeframe.api import train_head
    from freezeframe.train.loop import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.perf_counter()
        train_head(head, str(task_dir / "store"), SET, out=str(out), labels=str(task_dir / "train.csv"),
                   val=str(task_dir / "test.csv"), progress=False, log=lambda line: None, **options)
        seconds = time.perf_counter() - started
        history = [h for h in read_metrics(out) if not h.get("sweep")]
        solved = "steps" not in history[-1]
        checkpoint = "best" if solved else "last"  # the probe has one solution; the others: the last epoch's weights
        frames = json.loads((out / "run.json").read_text())["eval_frames"]
        return {"task": task_dir.name, "head": head,
                "train_top1": top1(out, checkpoint, task_dir / "store", task_dir / "train.csv", frames),
                "heldout_top1": top1(out, checkpoint, task_dir / "store", task_dir / "test.csv", frames),
                "steps": 0 if solved else history[-1]["steps"], "epochs": 0 if solved else len(history),
                "seconds": seconds}


def markdown(rows: list[dict]) -> str:
    lines = ["| task | head | train top-1 | held-out top-1 | steps | seconds |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['task']} | {r['head']} | {r['train_top1']:.2f} | {r['heldout_top1']:.2f} | "
              f"{r['steps'] or 'closed form'} | {r['seconds']:.0f} |" for r in rows]
    return "\n".join(lines)


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("make", "train"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default="ff-tiny-vit", help="open_clip model (random weights) for `make`")
    parser.add_argument("--heads", default="evl,temporal,probe")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="HEAD:KEY=VALUE",
                        help="a train_head option for every head (KEY=VALUE) or one head (HEAD:KEY=VALUE)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown here")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")

    import torch

    torch.set_num_threads(args.threads)
    if args.command == "make":
        for task in tasks:
            started = time.perf_counter()
            make_task(args.out / task, task, args.videos, args.seed, args.model)
            print(f"{task}: {args.videos} videos and a store in {time.perf_counter() - started:.0f} s")
        return
    rows = []
    for task in tasks:
        for head in [h for h in args.heads.split(",") if h]:
            options = {}
            for item in args.option:
                target, _, assignment = item.rpartition(":")
                if target in ("", head):
                    key, _, value = assignment.partition("=")
                    options[key] = parse_value(value)
            row = train_one(args.out / task, head, options)
            rows.append(row)
            print(f"{row['task']:<12} {head:<9} train {row['train_top1']:.2f}  held-out {row['heldout_top1']:.2f}  "
                  f"{row['steps'] or '-':>4} steps  {row['seconds']:5.0f} s", flush=True)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(rows) + "\n")


if __name__ == "__main__":
    main()
