"""Image preprocessing: `exact` reproduces open_clip's own PIL transform; `fast` resizes tensors on the device."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F

from freezeframe.errors import InputError

Mode = Literal["exact", "fast"]


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

    def describe(self) -> dict:
        return {**asdict(self), "size": list(self.size), "mean": list(self.mean), "std": list(self.std),
                "crop": "center" if self.resize_mode == "shortest" else self.resize_mode}


class ExactPreprocessor:
    """open_clip's evaluation transform applied frame by frame to PIL images (runs in decode workers)."""

    def __init__(self, config: PreprocessConfig) -> None:
        from open_clip.transform import PreprocessCfg, image_transform_v2

        cfg = PreprocessCfg(size=config.size, mean=config.mean, std=config.std, interpolation=config.interpolation,
                            resize_mode=config.resize_mode, fill_color=config.fill_color)
        self._transform = image_transform_v2(cfg, is_train=False)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        from PIL import Image

        with one_torch_thread():  # measured: 2 threads cost 10x the CPU of one on these small per-frame ops
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


def fast_preprocess(frames: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """uint8 (n, H, W, 3) on any device -> normalised float (n, 3, h, w): antialiased resize, center crop.

    Intermediate pixels are rounded to uint8 levels as PIL does, which keeps fast mode close to exact.
    """
    check_fast_supported(config)
    x = frames.permute(0, 3, 1, 2).float()
    height, width = x.shape[-2:]
    out_h, out_w = config.size
    short = out_h  # like torchvision's Resize(int): the short side becomes `short`, the long side is truncated
    if height <= width:
        new_h, new_w = short, int(short * width / height)
    else:
        new_h, new_w = int(short * height / width), short
    if (new_h, new_w) != (height, width):
        mode = "bicubic" if config.interpolation == "bicubic" else "bilinear"
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, antialias=True, align_corners=False)
        x = x.clamp_(0, 255).round_()
    top, left = int(round((new_h - out_h) / 2.0)), int(round((new_w - out_w) / 2.0))
    x = x[..., top:top + out_h, left:left + out_w] / 255.0
    mean = torch.tensor(config.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(config.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
