"""Writes evl_views.json: OpenGVLab/efficient-video-recognition's own RandomResizedCrop of normalised frames.

Run from this repository's root with that repository's git directory (commit b282e8b49e4ecd24f7357361719cf4fa5ab9c40d):
`python tests/data/reference/make_evl_views.py /path/to/efficient-video-recognition.git`.

What runs is EVL's own source, read from that commit and executed unchanged: `_get_param_spatial_crop` and
`random_resized_crop` (video_dataset/transform.py), on frames normalised as video_dataset/dataset.py normalises them
(uint8 / 255, minus CLIP's mean, over its std, laid out C, T, H, W). Adapted: the two functions are executed alone
(transform.py's package imports rand_augment and random_erasing, which these two do not use), with `math`,
`random`, `numpy` and `torch` as their globals. Python's `random` is seeded before each crop; the box it drew is
stored beside the output.
"""

from __future__ import annotations

import ast
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

COMMIT = "b282e8b49e4ecd24f7357361719cf4fa5ab9c40d"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # EVL's CLIP mean/std
FRAMES, HEIGHT, WIDTH, SIZE = 2, 40, 56, 8
SEEDS = (0, 1, 2, 3)


def frames(seed: int = 0) -> np.ndarray:
    """The fixture's uint8 input (FRAMES, HEIGHT, WIDTH, 3): smooth colour ramps plus seeded noise."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    ramps = np.stack([x * 4, y * 6, (x + y) * 2], -1)[None].repeat(FRAMES, 0)
    noise = np.random.default_rng(seed).integers(0, 40, (FRAMES, HEIGHT, WIDTH, 3))
    return np.clip(ramps + noise, 0, 255).astype(np.uint8)


def main(git_dir: str) -> dict:
    text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{COMMIT}:video_dataset/transform.py"], check=True,
                          capture_output=True, text=True).stdout
    scope = {"math": math, "random": random, "np": np, "torch": torch}
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name in ("_get_param_spatial_crop", "random_resized_crop"):
            exec(ast.get_source_segment(text, node), scope)
    video = torch.as_tensor(frames()).float() / 255.
    video = ((video - torch.tensor(MEAN)) / torch.tensor(STD)).permute(3, 0, 1, 2)  # C, T, H, W
    crops = []
    for seed in SEEDS:
        random.seed(seed)
        box = scope["_get_param_spatial_crop"]((0.08, 1.0), (3 / 4, 4 / 3), HEIGHT, WIDTH)
        random.seed(seed)
        out = scope["random_resized_crop"](video, SIZE, SIZE)  # (C, T, SIZE, SIZE)
        crops.append({"seed": seed, "box": list(box), "output": out.permute(1, 0, 2, 3).tolist()})  # T, C, h, w
    return {"reference": f"OpenGVLab/efficient-video-recognition {COMMIT} video_dataset/transform.py",
            "mean": MEAN, "std": STD, "size": SIZE, "crops": crops}


if __name__ == "__main__":
    fixture = main(sys.argv[1])
    Path(__file__).with_name("evl_views.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
