"""Inflated 3D ConvNet (Carreira & Zisserman 2017, "Quo Vadis, Action Recognition?"), RGB stream, per window.

Its parameter names and shapes are those of the public pytorch-i3d RGB checkpoints (`rgb_imagenet.pt`:
ImageNet-inflated, Kinetics-400 trained), so that file loads into it by name (tests/data/i3d_rgb_layout.json).
Convolutions and max pools pad as TensorFlow's 'SAME' does, from the size of their input. The defaults follow
video_features' I3D extraction: stacks of 64 frames every 64, short side 256, centre crop 224, pixels in [-1, 1].
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
                                                center_crop, check_features, check_precision, compute_dtype, frozen_call)
from freezeframe.extract.backbones.inception import add_inception_stages
from freezeframe.extract.backbones.registry import WindowDefaults, register_backbone
from freezeframe.options import FieldError, option
from freezeframe.extract.backbones.s3d import S3DG_INCEPTIONS
from freezeframe.extract.preprocess import VIDEO_FEATURES, PreprocessConfig
from freezeframe.store.provenance import package_version

I3D_FEATURES = ("pooled", "logits", "tokens")
# Inception-v1's blocks and widths, as S3D-G has them, under pytorch-i3d's capitalised names (Mixed_3b, ...)
I3D_INCEPTIONS = tuple((name.capitalize(), widths) for name, widths in S3DG_INCEPTIONS)
I3D_POOLS = {  # the max pool that runs before a block: its name, kernel and stride over (t, h, w)
    "Conv3d_2b_1x1": ("MaxPool3d_2a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_3b": ("MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    "Mixed_4b": ("MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    "Mixed_5b": ("MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
}
LOGITS_POOL = (2, 7, 7)  # the checkpoint's average pool before its 1x1x1 logits (stride 1)
# video_features' I3D: short side 256, centre crop 224, RGB scaled to [-1, 1]
I3D_PREPROCESS = PreprocessConfig(size=(224, 224), interpolation="bilinear", resize_mode=VIDEO_FEATURES,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_to=256)


def same_padding(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad (n, c, T, H, W) as TensorFlow's 'SAME' does: ceil(size / stride) outputs, the odd pixel at the end."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):  # F.pad wants (w, h, t)
        total = max(k - s if size % s == 0 else k - size % s, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """'SAME'-padded Conv3d, then BatchNorm (eps 1e-3) and ReLU; the logits unit has a bias and neither."""

    def __init__(self, dim_in: int, dim_out: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), logits: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(dim_in, dim_out, kernel, stride=stride, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(dim_out, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(same_padding(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    """Max pool with 'SAME' zero padding (every input follows a ReLU, so zeros never win over real values)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(same_padding(x, self.kernel, self.stride), self.kernel, self.stride)


class Inception(nn.Module):
    """An I3D inception block: 1x1x1, two 1x1x1 -> 3x3x3 branches, and 3x3x3 max pool -> 1x1x1, concatenated."""

    def __init__(self, dim_in: int, b0: int, b1_mid: int, b1: int, b2_mid: int, b2: int, b3: int) -> None:
        super().__init__()
        self.b0 = Unit3D(dim_in, b0)
        self.b1a, self.b1b = Unit3D(dim_in, b1_mid), Unit3D(b1_mid, b1, (3, 3, 3))
        self.b2a, self.b2b = Unit3D(dim_in, b2_mid), Unit3D(b2_mid, b2, (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(dim_in, b3)
        self.dim_out = b0 + b1 + b2 + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class InceptionI3d(nn.Module):
    """RGB I3D: (n, 3, T, H, W) pixels in [-1, 1] -> Mixed_5c (n, 1024, T/8, H/32, W/32) and per-block outputs."""

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.stages = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        dim = add_inception_stages(self, self.stages, 192, I3D_INCEPTIONS, Inception, I3D_POOLS, MaxPoolSame)
        self.logits = Unit3D(dim, num_classes, logits=True)

    @property
    def blocks(self) -> list[str]:
        """The inception blocks whose outputs can be stored as token maps, shallow to deep."""
        return [name for name, _ in I3D_INCEPTIONS]

    def forward(self, video: torch.Tensor, keep: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
        """{"pooled": (n, 1024), "logits": (n, classes), block name: (n, C, t, h, w) for each of `keep`}.

        `pooled` is Mixed_5c through the checkpoint's 2x7x7 average pool (stride 1), averaged over what remains;
        `logits` are the per-position logits of that pool, averaged the same way (pytorch-i3d's clip logits).
        """
        out = {}
        x = video
        for name in self.stages:
            x = getattr(self, name)(x)
            if name in keep:
                out[name] = x
        kernel = tuple(min(k, s) for k, s in zip(LOGITS_POOL, x.shape[2:]))  # small windows: pool what there is
        pooled = F.avg_pool3d(x, kernel, stride=1)
        out["pooled"] = pooled.mean(dim=(2, 3, 4))
        out["logits"] = self.logits(pooled).mean(dim=(2, 3, 4))
        return out


@dataclass(frozen=True)
class I3DConfig:
    """Which weights, which features, and video_features' preprocessing sizes."""

    pretrained: str = option("none", WEIGHTS_HELP + " (e.g. pytorch-i3d's rgb_imagenet.pt); nothing is downloaded")
    features: tuple[str, ...] = option(("pooled",), "comma list of pooled (Mixed_5c, average-pooled: "
                                                     "video_features' 1024-d I3D feature), logits, tokens")
    layers: tuple[int, ...] = option((-1,), "inception blocks (Mixed_3b ... Mixed_5c) whose token maps are stored "
                                            "with tokens; negative counts from the end")
    image_size: int = option(224, "centre crop size")
    resize_size: int = option(256, "frames are resized by the short side to this before the centre crop")
    num_classes: int = option(400, "logits of the checkpoint (400 for Kinetics-400 rgb_imagenet.pt)")
    precision: str = option("auto", PRECISION_HELP)
    seed: int = option(0, SEED_HELP)
    trust_checkpoint: bool = option(False, TRUST_HELP)

    def __post_init__(self) -> None:
        check_features(self.features, I3D_FEATURES, self.layers)
        if self.image_size < 2 or self.resize_size < self.image_size:
            raise FieldError("resize_size", "must be at least image_size (e.g. 256 and 224), and image_size at "
                                            "least 2.")
        check_precision(self.precision)

    def default_name(self) -> str:
        """A feature-set name from the weights, e.g. `i3d-rgb_imagenet` or `i3d-random`."""
        weights = "random" if W.is_random(self.pretrained) else Path(self.pretrained).stem
        return re.sub(r"[^a-z0-9._]+", "-", f"i3d-{weights}".lower()).strip("-")


def load_i3d(config: I3DConfig) -> tuple[nn.Module, dict]:
    """The I3D network with seeded random weights, or a pytorch-i3d RGB checkpoint loaded by name (weights only)."""
    net = W.seeded(lambda: InceptionI3d(config.num_classes), config.seed)
    info = {"library": "freezeframe", "version": package_version("freezeframe"), "model": "InceptionI3d-rgb"}
    if W.is_random(config.pretrained):
        return net, {**info, "weights": "none", "seed": config.seed}
    path = W.existing_weights_file(config.pretrained, "the i3d weights file", "rgb_imagenet.pt")
    return net, {**info, **W.load_weights_file(net, path, "the RGB I3D network", config.trust_checkpoint)}


@register_backbone("i3d", config=I3DConfig, required=("pretrained",),
                   windows=WindowDefaults(frames=64, stride=64, fps=25.0),
                   summary="the RGB Inflated 3D ConvNet (pytorch-i3d checkpoint layout), per window",
                   arrays="`pooled` (1024), `logits` (400), `tokens/<block>` (T/8*H/32*W/32 at Mixed_5c, C)",
                   preprocess="video_features' exactly: PIL bilinear short side to `--resize-size` 256, centre "
                              "crop `--image-size` 224 (offsets rounded down), pixels in [-1, 1]")
class I3DBackbone(FrozenBackbone):
    """Frozen RGB I3D: preprocessed windows (n, T, 3, S, S) -> one row of features per window."""

    kind = "i3d"
    takes_windows = True

    def __init__(self, config: I3DConfig, device: str | torch.device = "cpu", model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        if model is None:
            model, self.weights_info = load_i3d(config)
        else:
            self.weights_info = {"library": "in-memory", "model": type(model).__name__, "weights": "in-memory"}
        self.device = torch.device(device)
        self.net = model.eval().requires_grad_(False).to(self.device)
        self.weights_info["weights_sha256"] = W.state_dict_sha256(self.net)
        self.compute_dtype = compute_dtype(config.precision, self.device)
        self.preprocess = replace(I3D_PREPROCESS, size=(config.image_size, config.image_size),
                                  resize_to=config.resize_size)
        self.crop = (config.image_size, config.image_size)
        blocks = self.net.blocks
        chosen = set()
        for layer in config.layers if "tokens" in config.features else ():
            if not -len(blocks) <= layer < len(blocks):
                raise InputError(f"--layers {layer} is out of range for I3D's {len(blocks)} inception blocks.")
            chosen.add(layer % len(blocks))
        self.blocks = sorted(chosen)

    def stored_arrays(self) -> list[str]:
        """Names of the arrays `forward` returns, one row per window."""
        return [f for f in ("pooled", "logits") if f in self.config.features] + [f"tokens/{b}" for b in self.blocks]

    def _run(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        names = [self.net.blocks[b] for b in self.blocks]
        out = self.net(video, keep=tuple(names))
        for b, name in zip(self.blocks, names):
            out[f"tokens/{b}"] = out.pop(name).flatten(2).transpose(1, 2)  # (n, C, t, h, w) -> (n, t*h*w, C)
        return out

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Preprocessed windows (n, T, 3, S, S) -> {array name: (n, ...) tensor} in the compute dtype."""
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise InputError(f"the i3d backbone takes windows shaped (n, T, 3, H, W); got {tuple(clips.shape)}.")
        clips = center_crop(clips.to(self.device, non_blocking=True), self.crop)
        out = frozen_call(self._run, clips.transpose(1, 2), self.compute_dtype, self.device)  # (n, 3, T, h, w)
        return {name: out[name] for name in self.stored_arrays()}

    def provenance(self) -> dict:
        return {**super().provenance(), "layers": self.blocks, "input_crop": list(self.crop)}
