"""Image preprocessing. `exact` is open_clip's own PIL transform, run in the decode workers. `fast` is built on
torchvision.transforms.v2 (antialiased): frames are resized to the input's short side in the decode worker as they are
decoded (so full-size frames never leave it), then centre-cropped and normalised on the device."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Literal

import numpy as np
import torch
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from freezeframe.errors import InputError

Mode = Literal["exact", "fast"]
FAST_RESIZE = "in the decode worker, torchvision.transforms.v2, antialiased"  # recorded in fast mode's provenance


@dataclass(frozen=True)
class PreprocessConfig:
    """What a CLIP image tower expects: square `size`, resize kernel and mode, normalisation."""

    mode: Mode = "exact"
    size: tuple[int, int] = (224, 224)
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)
    fill_color: int = 0
    resize_to: int | None = None  # VIDEO_FEATURES: the short side before the crop to `size` (256 for 224)

    def describe(self) -> dict:
        fast = {"resized": FAST_RESIZE} if self.mode == "fast" else {}  # exact sets keep their old description
        full = {k: v for k, v in asdict(self).items() if k != "resize_to" or v is not None}
        return {**full, "size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "crop": "center" if self.resize_mode == "shortest" else self.resize_mode, **fast}


# resize modes of torchvision's video weights' transforms(): uint8 frames resized to a fixed (h, w) (`squash`), or
# by their short side (a one-number resize size: MViT, Swin3D), bilinear without antialiasing
TORCHVISION_RESIZES = {"torchvision-squash": None, "torchvision-short-side": 1}


def torchvision_video_transform(frames: np.ndarray, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, h, w): torchvision's `VideoClassification` preset (a video weights entry's
    `transforms()`) before its centre crop: resize the uint8 frames (as `config.resize_mode` says), then scale to
    [0, 1] and normalise (the backbone crops; cropping commutes with the per-pixel steps)."""
    from torchvision.transforms import InterpolationMode as Mode
    from torchvision.transforms import functional as F

    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    size = list(config.size)[:TORCHVISION_RESIZES[config.resize_mode]]
    video = F.resize(video, size, interpolation=Mode(config.interpolation), antialias=False)
    return F.normalize(F.convert_image_dtype(video, torch.float), mean=list(config.mean), std=list(config.std))


VIDEO_FEATURES = "video-features"  # resize_mode of v-iashin/video_features' I3D transforms


def video_features_transform(frames: np.ndarray, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, S, S) as video_features' I3D (`models/transforms.py`): PIL bilinear resize of
    the short side to `resize_to` (the long side truncated; none at that size), centre crop with its offsets rounded
    down, then 2 x / 255 - 1."""
    from PIL import Image

    short, (crop_h, crop_w) = config.resize_to, config.size
    out = []
    for frame in frames:
        height, width = frame.shape[:2]
        if min(height, width) != short:
            size = (short, int(short * height / width)) if width < height else (int(short * width / height), short)
            frame = np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
        top, left = (frame.shape[0] - crop_h) // 2, (frame.shape[1] - crop_w) // 2
        out.append(torch.from_numpy(np.array(frame[top:top + crop_h, left:left + crop_w])).permute(2, 0, 1).float())
    return 2 * torch.stack(out) / 255 - 1


class ExactPreprocessor:
    """open_clip's evaluation transform applied frame by frame to PIL images (runs in decode workers), or
    torchvision's video preset where the backbone's weights use it (a `resize_mode` of TORCHVISION_RESIZES)."""

    def __init__(self, config: PreprocessConfig) -> None:
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self._config = config
        if config.resize_mode in TORCHVISION_RESIZES or config.resize_mode == VIDEO_FEATURES:
            return

        cfg = PreprocessCfg(size=config.size, mean=config.mean, std=config.std, interpolation=config.interpolation,
                            resize_mode=config.resize_mode, fill_color=config.fill_color)
        self._transform = image_transform_v2(cfg, is_train=False)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        from PIL import Image

        if self._config.resize_mode in TORCHVISION_RESIZES:
            return torchvision_video_transform(frames, self._config)
        if self._config.resize_mode == VIDEO_FEATURES:
            return video_features_transform(frames, self._config)

        return torch.stack([self._transform(Image.fromarray(frame)) for frame in frames])


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with torch on one intra-op thread (as in a decode worker), restoring the count after."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def check_fast_supported(config: PreprocessConfig) -> None:
    """Fast mode mirrors open_clip's square 'shortest side' transform; anything else must use exact mode."""
    if config.resize_mode != "shortest" or config.size[0] != config.size[1]:
        raise InputError(
            f"--preprocess fast supports square inputs resized by their shortest side; this model uses "
            f"resize_mode={config.resize_mode!r} and size={tuple(config.size)}: use --preprocess exact."
        )


def resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) with the short side `short` and the long side truncated, as torchvision's Resize(int) (open_clip's)."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def resize_short_side(frames: torch.Tensor, short: int, interpolation: str) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> uint8 (n, h, w, 3) with short side `short`, antialiased (torchvision.transforms.v2).

    On the CPU torchvision resizes uint8 with kernels that round like PIL's; on CUDA it resizes in float and rounds.
    Frames already at that size come back as they are.
    """
    nchw = frames.permute(0, 3, 1, 2)
    return tvf.resize(nchw, [short], interpolation=InterpolationMode(interpolation), antialias=True).permute(0, 2, 3, 1)


def fast_preprocess(frames: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (n, H, W, 3) on any device -> normalised float (n, 3, S, S): fast mode's device half (centre crop,
    scale, normalise) after the decode worker's resize; frames not resized yet are resized here the same way."""
    check_fast_supported(config)
    x = resize_short_side(frames, config.size[0], config.interpolation).permute(0, 3, 1, 2)
    x = tvf.to_dtype(tvf.center_crop(x, list(config.size)), torch.float32, scale=True)
    return tvf.normalize(x, list(config.mean), list(config.std))
