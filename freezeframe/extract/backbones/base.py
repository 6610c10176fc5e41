"""What the extraction runner needs of a frozen backbone, and the shared frozen-forward machinery behind each one."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import torch
import torch.nn as nn

from freezeframe.options import FieldError
from freezeframe.extract.preprocess import PreprocessConfig

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# help of the options every backbone shares (written once)
PRECISION_HELP = "compute precision: auto (fp16 on CUDA, fp32 elsewhere), fp32, fp16 or bf16; stored as float16"
SEED_HELP = "seed of the random initialisation when the weights are none"
TRUST_HELP = "load a weights file that is a full pickle (it can run code; only if you trust it)"
WEIGHTS_HELP = "a local checkpoint file (.pt/.pth state dict or .safetensors), or none (random weights, seeded)"


class BackboneConfig(Protocol):
    def default_name(self) -> str:
        """A feature-set name derived from model and weights."""


class Backbone(Protocol):
    """A frozen network: preprocessed inputs (one per stored row) in, named float arrays out.

    Frame backbones take (n, 3, h, w) frames; window backbones (`takes_windows`) take (n, T, 3, h, w) windows.
    """

    kind: str
    takes_windows: bool  # inputs are windows of frames (sampling strategy `windows`), not single frames
    config: BackboneConfig
    device: torch.device
    preprocess: PreprocessConfig

    def __call__(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def stored_arrays(self) -> list[str]: ...

    def provenance(self) -> dict: ...

    def frozen_weights(self) -> dict[str, np.ndarray]: ...

    def check_window(self, frames: int, height: int, width: int) -> None:
        """Window backbones only: raise InputError for a window size the network cannot take."""


def check_precision(precision: str) -> None:
    """Refuse an unknown precision with one sentence (every config calls this from `__post_init__`)."""
    if precision not in ("auto", *PRECISIONS):
        raise FieldError("precision", f"{precision!r} is unknown; choose auto, fp32, fp16 or bf16.")


def check_features(features: tuple[str, ...], known: tuple[str, ...], layers: tuple[int, ...]) -> None:
    """Refuse features a backbone does not compute, and token maps of no block (configs' `__post_init__`)."""
    unknown = set(features) - set(known)
    if unknown or not features:
        raise FieldError("features", f"{sorted(unknown) or '(none)'} unknown; choose from {', '.join(known)}.")
    if "tokens" in features and not layers:
        raise FieldError("layers", "must name at least one block whose tokens are stored.")


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype a forward runs in: the chosen precision, or fp16 on CUDA and fp32 elsewhere for `auto`."""
    if precision != "auto":
        return PRECISIONS[precision]
    return torch.float16 if device.type == "cuda" else torch.float32


def frozen_call(fn: Callable[[torch.Tensor], dict], inputs: torch.Tensor, dtype: torch.dtype,
                device: torch.device) -> dict:
    """`fn(inputs)` in `dtype`: autocast for reduced precision (the weights stay float32, so casting only the input
    fails on CPU), a float32 input otherwise."""
    if dtype != torch.float32:
        with torch.autocast(device.type, dtype=dtype):
            return fn(inputs)
    return fn(inputs.float())


def center_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The centre (h, w) of (..., H, W) images, placed as torchvision's CenterCrop places it.

    Backbones whose reference transform resizes to S and crops a smaller C (timm's `crop_pct`, video_features'
    256 -> 224) let the decode workers resize and crop to S (open_clip's transform) and crop C here: a centre
    crop of a centre crop is the same pixels as one centre crop, because S - C is even.
    """
    height, width = x.shape[-2:]
    out_h, out_w = size
    if (height, width) == (out_h, out_w):
        return x
    top, left = int(round((height - out_h) / 2.0)), int(round((width - out_w) / 2.0))
    return x[..., top:top + out_h, left:left + out_w]


class FrozenBackbone(nn.Module):
    """Shared behaviour of the registered backbones: frozen eval-mode weights on a device, a compute dtype, a
    provenance record, no frozen weights for heads and no window constraint unless a backbone says otherwise."""

    kind: str = ""
    takes_windows = False

    def weights_provenance(self) -> dict:
        """The `backbone` record of the provenance: registry name plus where the weights came from."""
        return {"kind": self.kind, **self.weights_info}

    def provenance(self) -> dict:
        return {
            "backbone": self.weights_provenance(),
            "features": self.stored_arrays(),
            "compute_dtype": str(self.compute_dtype).replace("torch.", ""),
            "dtype": "float16",
        }

    def frozen_weights(self) -> dict[str, np.ndarray]:
        """Nothing by default: only CLIP towers hand over q/k projections for EVL's cross-frame attention."""
        return {}

    def check_window(self, frames: int, height: int, width: int) -> None:
        """Any window size by default."""


def build_backbone(config: BackboneConfig, device: str | torch.device = "cpu") -> Backbone:
    """The backbone a config describes, through the registry entry that owns the config's type."""
    from freezeframe.extract.backbones.registry import entry_for_config

    return entry_for_config(config).build(config, device=device)
