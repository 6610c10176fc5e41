"""Frozen S3D video backbones over windows of frames: MIL-NCE S3D-G (VideoCLIP's) and torchvision's Kinetics S3D.

`S3DG` is the gated S3D of Miech et al. 2020 ("End-to-End Learning of Visual Representations from Uncurated
Instructional Videos") with the space-to-depth stem of the HowTo100M release; its parameter names and shapes are
those of the published `s3d_howto100m.pth`, so that file loads into it. The file also holds the MIL-NCE word
embedding text module (`text_module.*`), which a video backbone never runs: the loader drops those keys and
records how many it dropped in the provenance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from freezeframe.errors import InputError
from freezeframe.extract.backbones import weights as W
from freezeframe.extract.backbones.base import (PRECISION_HELP, SEED_HELP, TRUST_HELP, WEIGHTS_HELP, FrozenBackbone,
                                                check_precision, compute_dtype, frozen_call)
from freezeframe.extract.backbones.inception import add_inception_stages
from freezeframe.extract.backbones.registry import WindowDefaults, register_backbone
from freezeframe.options import FieldError, option
from freezeframe.extract.preprocess import PreprocessConfig
from freezeframe.store.provenance import package_version

S3D_KINDS = ("s3d", "s3dg")
S3D_MIN_WINDOW = (14, 224)  # torchvision's S3D_Weights meta: min_temporal_size, min_size
TEXT_MODULE_PREFIX = "text_module."  # the HowTo100M checkpoint's text tower, unused by the video backbone

# S3D-G (HowTo100M) eats [0, 1] pixels; VideoCLIP's extractor resizes the short side to 224 and center-crops.
S3DG_PREPROCESS = PreprocessConfig(size=(224, 224), interpolation="bilinear", resize_mode="shortest",
                                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
# torchvision's Kinetics-400 S3D normalisation. torchvision's own `S3D_Weights.transforms()` squashes every frame
# to 256x256 (aspect ratio not kept, no antialiasing) and then center-crops 224x224; here the short side is resized
# to 224 (aspect ratio kept) and the center 224x224 is cropped, as for every other freezeframe backbone.
S3D_PREPROCESS = PreprocessConfig(size=(224, 224), interpolation="bilinear", resize_mode="shortest",
                                  mean=(0.43216, 0.394666, 0.37645), std=(0.22803, 0.22145, 0.216989))


# ---- the S3D-G network ----------------------------------------------------------------------------------------

class STConv3d(nn.Module):
    """Conv3d -> BatchNorm -> ReLU; `separable` splits a k*k*k kernel into 1*k*k (space) then k*1*1 (time)."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int | tuple[int, int, int], padding: int | tuple = 0,
                 separable: bool = False) -> None:
        super().__init__()
        if separable:
            k, p = kernel, padding
            self.conv1 = nn.Conv3d(dim_in, dim_out, (1, k, k), padding=(0, p, p), bias=False)
            self.bn1 = nn.BatchNorm3d(dim_out)
            self.conv2 = nn.Conv3d(dim_out, dim_out, (k, 1, 1), padding=(p, 0, 0), bias=False)
            self.bn2 = nn.BatchNorm3d(dim_out)
        else:
            self.conv1 = nn.Conv3d(dim_in, dim_out, kernel, padding=padding, bias=False)
            self.bn1 = nn.BatchNorm3d(dim_out)
            self.conv2 = self.bn2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        if self.conv2 is not None:
            x = F.relu(self.bn2(self.conv2(x)))
        return x


class SelfGating(nn.Module):
    """S3D-G feature gating: channels scaled by a sigmoid of a linear map of their space-time mean."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(x.mean(dim=(2, 3, 4))))
        return x * gate[:, :, None, None, None]


class MaxPool3dSame(nn.Module):
    """Max pool with TensorFlow-'SAME'-style padding as the HowTo100M port does it: fixed zero padding of
    max(kernel - stride, 0) per axis (the extra one at the end), then ceil-mode pooling. Zero padding equals
    -inf padding here because every input follows a ReLU."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        pads = [max(k - s, 0) for k, s in zip(kernel, stride)]  # (t, h, w)
        self.padding = tuple(p for total in reversed(pads) for p in (total // 2, total - total // 2))
        self.pool = nn.MaxPool3d(kernel, stride, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.pad(x, self.padding))


class GatedInception(nn.Module):
    """An S3D-G inception block: 1x1x1, two separable 3x3x3 branches and a pooled branch, each gated."""

    def __init__(self, dim_in: int, b0: int, b1_mid: int, b1: int, b2_mid: int, b2: int, b3: int) -> None:
        super().__init__()
        self.conv_b0 = STConv3d(dim_in, b0, 1)
        self.conv_b1_a = STConv3d(dim_in, b1_mid, 1)
        self.conv_b1_b = STConv3d(b1_mid, b1, 3, padding=1, separable=True)
        self.conv_b2_a = STConv3d(dim_in, b2_mid, 1)
        self.conv_b2_b = STConv3d(b2_mid, b2, 3, padding=1, separable=True)
        self.conv_b3_b = STConv3d(dim_in, b3, 1)
        self.gating_b0, self.gating_b1, self.gating_b2, self.gating_b3 = (SelfGating(d) for d in (b0, b1, b2, b3))
        self.dim_out = b0 + b1 + b2 + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.gating_b0(self.conv_b0(x))
        b1 = self.gating_b1(self.conv_b1_b(self.conv_b1_a(x)))
        b2 = self.gating_b2(self.conv_b2_b(self.conv_b2_a(x)))
        b3 = self.gating_b3(self.conv_b3_b(F.max_pool3d(x, 3, stride=1, padding=1)))
        return torch.cat((b0, b1, b2, b3), dim=1)


# (name, output widths: branch 0, branch 1 reduce/out, branch 2 reduce/out, pooled branch), as in the paper
S3DG_INCEPTIONS = (
    ("mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("mixed_5c", (384, 192, 384, 48, 128, 128)),
)
S3DG_POOLS = {  # the pool that runs before a stage: its name, kernel and stride over (t, h, w)
    "conv_2b": ("maxpool_2a", (1, 3, 3), (1, 2, 2)),
    "mixed_3b": ("maxpool_3a", (1, 3, 3), (1, 2, 2)),
    "mixed_4b": ("maxpool_4a", (3, 3, 3), (2, 2, 2)),
    "mixed_5b": ("maxpool_5a", (2, 2, 2), (2, 2, 2)),
}


class S3DG(nn.Module):
    """MIL-NCE S3D-G video network: (n, 3, T, H, W) pixels in [0, 1], T/H/W even ->
    {"video_embedding": (n, embed_dim), "mixed_5c": (n, 1024) space-time mean of the last block}."""

    def __init__(self, embed_dim: int = 512) -> None:
        super().__init__()
        # space-to-depth stem: 2x2x2 pixel cubes become 24 channels, then a 2x4x4 conv (= a strided 4x8x8 conv)
        self.conv1 = STConv3d(24, 64, (2, 4, 4), padding=(1, 2, 2))
        self.conv_2b = STConv3d(64, 64, 1)
        self.conv_2c = STConv3d(64, 192, 3, padding=1, separable=True)
        self.gating = SelfGating(192)
        self.stages = ["conv_2b", "conv_2c", "gating"]
        dim = add_inception_stages(self, self.stages, 192, S3DG_INCEPTIONS, GatedInception, S3DG_POOLS, MaxPool3dSame)
        self.fc = nn.Linear(dim, embed_dim)

    @staticmethod
    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        """(n, c, T, H, W) -> (n, 8c, T/2, H/2, W/2); channels ordered (dt, dh, dw, c) as the checkpoint expects."""
        n, c, t, h, w = x.shape
        x = x.reshape(n, c, t // 2, 2, h // 2, 2, w // 2, 2)
        return x.permute(0, 3, 5, 7, 1, 2, 4, 6).reshape(n, 8 * c, t // 2, h // 2, w // 2)

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv1(self.space_to_depth(video))[:, :, 1:, 1:, 1:]  # drop the leading pad: TF 'SAME' alignment
        for name in self.stages:
            x = getattr(self, name)(x)
        pooled = x.mean(dim=(2, 3, 4))
        return {"video_embedding": self.fc(pooled), "mixed_5c": pooled}


# ---- configuration and loading --------------------------------------------------------------------------------

@dataclass(frozen=True)
class S3DConfig:
    """Which S3D network (`s3dg`: MIL-NCE HowTo100M S3D-G; `s3d`: torchvision Kinetics-400 S3D) and its weights."""

    kind: str = "s3dg"  # fixed by the registry entry (--backbone s3d or s3dg)
    weights: str = option("none", WEIGHTS_HELP + "; nothing is downloaded", flag="pretrained")
    precision: str = option("auto", PRECISION_HELP)
    seed: int = option(0, SEED_HELP)
    trust_checkpoint: bool = option(False, TRUST_HELP)
    image_size: int = option(224, "frames are resized by the short side and centre-cropped to this square")

    def __post_init__(self) -> None:
        if self.image_size < 2:
            raise FieldError("image_size", "must be at least 2 pixels.")
        if self.kind not in S3D_KINDS:
            raise InputError(f"unknown S3D kind {self.kind!r}; choose s3d (torchvision Kinetics-400) or s3dg "
                             "(MIL-NCE HowTo100M).")
        check_precision(self.precision)

    def default_name(self) -> str:
        """A feature-set name from network and weights, e.g. `s3dg-s3d_howto100m` or `s3d-random`."""
        weights = "random" if W.is_random(self.weights) else Path(self.weights).stem
        return re.sub(r"[^a-z0-9._]+", "-", f"{self.kind}-{weights}".lower()).strip("-")


def build_s3d_network(kind: str) -> nn.Module:
    """An S3D network of `kind` with PyTorch's default random initialisation."""
    if kind == "s3dg":
        return S3DG()
    from torchvision.models.video import s3d

    return s3d(weights=None)


def load_s3d(config: S3DConfig) -> tuple[nn.Module, dict]:
    """Build the network of `config.kind` and load its weights file (weights only), or seed a random init.

    Returns the model and a provenance dict of where its weights came from.
    """
    what = "the MIL-NCE S3D-G network" if config.kind == "s3dg" else "torchvision's Kinetics-400 S3D"
    library = ({"library": "freezeframe", "version": package_version("freezeframe"), "model": "S3DG"}
               if config.kind == "s3dg" else
               {"library": "torchvision", "version": package_version("torchvision"), "model": "s3d"})
    if W.is_random(config.weights):
        torch.manual_seed(config.seed)
        return build_s3d_network(config.kind), {**library, "weights": "none", "seed": config.seed}
    example = "s3d_howto100m.pth" if config.kind == "s3dg" else "s3d-d76dad2f.pth"
    path = W.existing_weights_file(config.weights, f"the {config.kind} weights file", example)
    model = build_s3d_network(config.kind)
    ignore = TEXT_MODULE_PREFIX if config.kind == "s3dg" else None
    info = W.load_weights_file(model, path, what, config.trust_checkpoint, ignore_prefix=ignore)
    if "ignored_keys" in info:
        info["ignored_keys"] += " (the text tower)"
    return model, {**library, **info}


# ---- the backbone the extraction runner drives ----------------------------------------------------------------

VIDEOCLIP_WINDOWS = WindowDefaults(frames=30, stride=30, fps=30.0)  # one row per second of video, as VideoCLIP


@register_backbone("s3dg", config=S3DConfig, preset={"kind": "s3dg"}, windows=VIDEOCLIP_WINDOWS, required=("weights",),
                   summary="the MIL-NCE S3D-G of VideoCLIP (HowTo100M checkpoint layout), per window",
                   arrays="`video_embedding` (512), `mixed_5c` (1024)",
                   preprocess="short side to `--image-size`, centre crop, bilinear, pixels in [0, 1]")
@register_backbone("s3d", config=S3DConfig, preset={"kind": "s3d"}, windows=VIDEOCLIP_WINDOWS, required=("weights",),
                   summary="torchvision's Kinetics-400 S3D, per window",
                   arrays="`logits` (400), `mixed_5c` (1024)",
                   preprocess="short side to `--image-size`, centre crop, bilinear, Kinetics mean/std")
class S3DBackbone(FrozenBackbone):
    """Frozen S3D or S3D-G: preprocessed windows (n, T, 3, H, W) -> one row of features per window."""

    takes_windows = True

    def __init__(self, config: S3DConfig, device: str | torch.device = "cpu", model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.kind = config.kind
        if model is None:
            model, self.weights_info = load_s3d(config)
        else:
            self.weights_info = {"library": "in-memory", "model": type(model).__name__, "weights": "in-memory"}
        self.device = torch.device(device)
        self.net = model.eval().requires_grad_(False).to(self.device)
        self.weights_info["weights_sha256"] = W.state_dict_sha256(self.net)
        self.compute_dtype = compute_dtype(config.precision, self.device)
        preprocess = S3DG_PREPROCESS if self.kind == "s3dg" else S3D_PREPROCESS
        self.preprocess = replace(preprocess, size=(config.image_size, config.image_size))

    def stored_arrays(self) -> list[str]:
        """Names of the arrays `forward` returns, one row per window."""
        return ["video_embedding", "mixed_5c"] if self.kind == "s3dg" else ["logits", "mixed_5c"]

    def check_window(self, frames: int, height: int, width: int) -> None:
        """Refuse, with one sentence, a window size the network cannot take (callers may check before decoding)."""
        if self.kind == "s3dg" and any(d % 2 for d in (frames, height, width)):
            raise InputError(f"the s3dg backbone needs an even number of frames per window and even frame sizes "
                             f"(space-to-depth); got T={frames}, {height}x{width}.")
        if self.kind == "s3d" and (frames < S3D_MIN_WINDOW[0] or min(height, width) < S3D_MIN_WINDOW[1]):
            raise InputError(f"the s3d Kinetics classifier pools a 2x7x7 grid of mixed_5c features, so windows need "
                             f"at least {S3D_MIN_WINDOW[0]} frames of {S3D_MIN_WINDOW[1]}x{S3D_MIN_WINDOW[1]} pixels; "
                             f"got T={frames}, {height}x{width}.")

    def _run(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.kind == "s3dg":
            return self.net(video)
        features = self.net.features(video)
        logits = self.net.classifier(self.net.avgpool(features)).mean(dim=(2, 3, 4))
        return {"logits": logits, "mixed_5c": features.mean(dim=(2, 3, 4))}

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Preprocessed windows (n, T, 3, H, W) -> {array name: (n, D) tensor} in the compute dtype."""
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise InputError(f"the {self.kind} backbone takes windows shaped (n, T, 3, H, W); "
                             f"got {tuple(clips.shape)}.")
        self.check_window(clips.shape[1], clips.shape[3], clips.shape[4])
        video = clips.to(self.device, non_blocking=True).transpose(1, 2)  # (n, 3, T, H, W)
        out = frozen_call(self._run, video, self.compute_dtype, self.device)
        return {name: out[name] for name in self.stored_arrays()}
