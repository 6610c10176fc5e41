"""Writes video_features_i3d.json: v-iashin/video_features' own I3D windows and RGB pixels on small inputs.

Run from this repository's root with a checkout of video_features (commit a2f61b7a4cf0ca6a2d91dcc2182f57e7cfd12664)
and opencv-python-headless importable:
`PYTHONPATH=/tmp/ref/cvpkgs python tests/data/reference/make_video_features_i3d.py /tmp/ref/video_features`.

Adaptations (nothing that touches frames or windows): the I3D and RAFT networks are not loaded; stand-in modules
satisfy extract_i3d.py's imports of them (its RGB-only path still builds an InputPadder, which it uses for flow
only: the stand-in returns None), and `load_model` returns a recorder in place of the RGB I3D network, so
`ExtractI3D.extract` (its OpenCV decoding, resize, stacking and stream transforms) runs unchanged and the recorder
sees each stack exactly as I3D would.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from stamped_clips import make_halves_clip, read_halves  # noqa: E402

FRAME_COUNTS = (63, 64, 65, 128, 129, 200)  # around one and two stacks of 64 (+1)
SIZES = ((270, 480), (360, 480), (256, 340), (480, 272))  # 16:9, 4:3, short side already 256, portrait
SEED = 0


def _import_reference(checkout: Path):
    """extract_i3d.ExtractI3D with its network imports satisfied by stand-ins (the networks are never run)."""
    sys.path.insert(0, str(checkout))
    stand_ins = {"models.i3d.i3d_src.i3d_net": {"I3D": None}, "models.raft.extract_raft":
                 {"DATASET_to_RAFT_CKPT_PATHS": {"sintel": None}}, "models.raft.raft_src.raft":
                 {"RAFT": None, "InputPadder": lambda shape: None}}  # made for the flow stream only
    for name, attrs in stand_ins.items():
        sys.modules[name] = types.SimpleNamespace(**attrs)
    from models.i3d.extract_i3d import ExtractI3D

    return ExtractI3D


def _extractor(ExtractI3D, tmp: str, stacks: list):
    def record(stream_slice, features=True):
        stacks.append(stream_slice.clone())  # (1, 3, T, 224, 224), what I3D gets
        return torch.zeros(1, 1024)

    ExtractI3D.load_model = lambda self: {"model": {"rgb": record}}
    args = types.SimpleNamespace(feature_type="i3d", on_extraction="print", tmp_path=tmp, output_path=tmp,
                                 keep_tmp_files=False, device="cpu", streams="rgb", flow_type="raft",
                                 extraction_fps=None, step_size=None, stack_size=None, show_pred=False)
    return ExtractI3D(args)


def windows(ExtractI3D) -> list[dict]:
    """For each clip length: the source frame of every position of every stack, read back from its pixels."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for frames in FRAME_COUNTS:
            path = Path(tmp) / f"halves_{frames}.mp4"
            make_halves_clip(path, frames)
            stacks: list = []
            _extractor(ExtractI3D, tmp, stacks).extract(str(path))
            rows = []
            for stack in stacks:
                grey = (stack[0, 0] + 1) * 255 / 2  # (T, 224, 224), back to 0..255
                rows.append([read_halves(float(g[:, 10:100].mean()), float(g[:, 140:210].mean())) for g in grey])
            out.append({"frames": frames, "rate": 25, "size": [270, 480], "stacks": rows})
    return out


def pixels(ExtractI3D) -> list[dict]:
    """video_features' resize and RGB stream transforms on seeded random frames: output shape and sha256."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        extractor = _extractor(ExtractI3D, tmp, [])
        for height, width in SIZES:
            frames = np.random.default_rng(SEED).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
            resized = torch.cat([extractor.resize_transforms(f).unsqueeze(0) for f in frames])
            x = extractor.i3d_transforms["rgb"](resized)  # (1, 3, T, 224, 224)
            data = x.contiguous().numpy().astype(np.float32)
            out.append({"size": [height, width], "seed": SEED, "shape": list(data.shape),
                        "sha256": hashlib.sha256(data.tobytes()).hexdigest(), "sum": float(data.astype(np.float64).sum())})
    return out


if __name__ == "__main__":
    reference = _import_reference(Path(sys.argv[1]))
    fixture = {"reference": "v-iashin/video_features a2f61b7a4cf0ca6a2d91dcc2182f57e7cfd12664 models/i3d/extract_i3d.py",
               "windows": windows(reference), "pixels": pixels(reference)}
    Path(__file__).with_name("video_features_i3d.json").write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
