"""torchvision's video classifiers per window: r3d_18, mc3_18, r2plus1d_18, mvit_v2_s, swin3d_t and s3d, with the
pooled vector their classifier sees, their logits, and chosen blocks' token maps (forward hooks on the blocks).

Preprocessing is each model's torchvision weights' own (`<Weights>.DEFAULT.transforms()`: the uint8 frames squashed
to the resize size, bilinear without antialiasing, centre crop, mean/std); `--resize short-side` keeps the aspect
ratio instead (the short side resized, antialiased).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from freezeframe.errors import InputError
from freezeframe.extract.backbones import weights as W
from freezeframe.extract.backbones.base import (PRECISION_HELP, SEED_HELP, TRUST_HELP, WEIGHTS_HELP, FrozenBackbone,
                                                center_crop, check_features, check_precision, compute_dtype, frozen_call)
from freezeframe.extract.backbones.registry import WindowDefaults, register_backbone
from freezeframe.options import FieldError, option
from freezeframe.extract.preprocess import PreprocessConfig
from freezeframe.store.provenance import package_version

VIDEO_FEATURES = ("pooled", "logits", "tokens")
RESIZES = ("torchvision", "short-side")


def _ncthw(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (n, C, T, H, W) -> (n, T*H*W, C)


def _nthwc(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1, 3)  # (n, T, H, W, C) -> (n, T*H*W, C)


def _sequence(x) -> torch.Tensor:
    return x[0]  # an MViT block returns (tokens (n, 1 + T*H*W, C), thw)


@dataclass(frozen=True)
class VideoArch:
    """Where an architecture keeps its blocks, what its classifier is fed, and how its block outputs are laid out."""

    blocks: Callable[[nn.Module], list[nn.Module]]
    pooled: Callable[[nn.Module], nn.Module]  # the module whose (first) input, or output, is the pooled vector
    pooled_is_output: bool
    tokens: Callable  # a block's output -> (n, N, C)
    exact_input: Callable[[nn.Module], tuple[int, int]] | None = None  # (frames, size) a network's position
    # embeddings are made for, when it takes no other window (MViT)


def _mvit_input(net: nn.Module) -> tuple[int, int]:
    """The window an MViT's relative position embeddings fit: its token grid times the patch stride."""
    grid, stride = net.pos_encoding, net.conv_proj.stride
    return grid.temporal_size * stride[0], grid.spatial_size[0] * stride[1]


def _resnet_blocks(net: nn.Module) -> list[nn.Module]:
    return [net.layer1, net.layer2, net.layer3, net.layer4]


VIDEO_ARCHS = {
    "r3d_18": VideoArch(_resnet_blocks, lambda net: net.fc, False, _ncthw),
    "mc3_18": VideoArch(_resnet_blocks, lambda net: net.fc, False, _ncthw),
    "r2plus1d_18": VideoArch(_resnet_blocks, lambda net: net.fc, False, _ncthw),
    "mvit_v2_s": VideoArch(lambda net: list(net.blocks), lambda net: net.head, False, _sequence, _mvit_input),
    "swin3d_t": VideoArch(lambda net: list(net.features)[::2], lambda net: net.head, False, _nthwc),
    # S3D's classifier is a 1x1x1 convolution applied after avgpool(2, 7, 7) and before the mean over the remaining
    # grid, so the vector it reads is the mean of avgpool's output (not of the feature map: they differ past 16x224)
    "s3d": VideoArch(lambda net: list(net.features), lambda net: net.avgpool, True, _ncthw),
}


@dataclass(frozen=True)
class TorchvisionVideoConfig:
    """Which torchvision video classifier, which weights file, and which features to capture."""

    model: str = option("r3d_18", "a torchvision video classifier: " + ", ".join(VIDEO_ARCHS))
    pretrained: str = option("none", WEIGHTS_HELP + "; nothing is downloaded")
    features: tuple[str, ...] = option(("pooled",), "comma list of pooled (the classifier's input), logits, tokens "
                                                     "(block outputs, T*H*W tokens)")
    layers: tuple[int, ...] = option((-1,), "blocks (residual stages; MViT blocks; Swin stages; S3D feature "
                                            "modules) whose token maps are stored with tokens; negative from the end")
    image_size: int | None = option(None, "crop size (the resize size is scaled by the same factor, then the "
                                          "frames are centre-cropped to it)")
    resize: str = option("torchvision", "torchvision: the weights' transforms() (uint8 frames squashed to the "
                                        "resize size, bilinear, not antialiased); short-side: aspect kept, antialiased")
    precision: str = option("auto", PRECISION_HELP)
    seed: int = option(0, SEED_HELP)
    trust_checkpoint: bool = option(False, TRUST_HELP)

    def __post_init__(self) -> None:
        if self.model not in VIDEO_ARCHS:
            raise InputError(f"unknown torchvision video model {self.model!r}; choose one of {', '.join(VIDEO_ARCHS)}.")
        check_features(self.features, VIDEO_FEATURES, self.layers)
        if self.resize not in RESIZES:
            raise FieldError("resize", f"must be {' or '.join(RESIZES)}; got {self.resize!r}.")
        if self.image_size is not None and self.image_size < 2:
            raise FieldError("image_size", "must be at least 2 pixels.")
        check_precision(self.precision)

    def default_name(self) -> str:
        """A feature-set name from model and weights, e.g. `tv-r3d_18-r3d_18-b3b3357e` or `tv-r3d_18-random`."""
        weights = "random" if W.is_random(self.pretrained) else Path(self.pretrained).stem
        return re.sub(r"[^a-z0-9._]+", "-", f"tv-{self.model}-{weights}".lower()).strip("-")


def weights_transform(model: str, resize_mode: str = "torchvision",
                      image_size: int | None = None) -> tuple[tuple[int, int], int, PreprocessConfig, dict]:
    """((min frames, min size), crop size, preprocessing, meta) from torchvision's weights entry for `model`; an
    `image_size` crop scales the resize size by the same factor."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(model).DEFAULT
    transform = weights.transforms()
    crop = int(transform.crop_size[0])
    scale = 1.0 if image_size is None else image_size / crop
    size = tuple(max(round(s * scale), image_size or 1) for s in transform.resize_size)
    crop, mode = image_size or crop, "torchvision-squash" if len(size) == 2 else "torchvision-short-side"
    if resize_mode == "short-side":  # the decode workers crop the square too: an even margin makes two crops one
        mode, size = "shortest", (min(size) + (min(size) - crop) % 2,)
    size = size * (3 - len(size))  # (h, w); a short side s as (s, s)
    preprocess = PreprocessConfig(size=size, interpolation="bilinear", mean=tuple(transform.mean),
                                  std=tuple(transform.std), resize_mode=mode)
    minimum = (int(weights.meta.get("min_temporal_size") or 1), int(weights.meta.get("min_size", (1, 1))[0]))
    return minimum, crop, preprocess, {"weights_entry": str(weights), "crop_size": crop, "resize_size": list(size),
                                       "resize": resize_mode}


def load_video_classifier(config: TorchvisionVideoConfig) -> tuple[nn.Module, dict]:
    """torchvision's `model` with seeded random weights, or a local weights file loaded by name (weights only)."""
    from torchvision.models import get_model

    net = W.seeded(lambda: get_model(config.model, weights=None), config.seed)
    info = {"library": "torchvision", "version": package_version("torchvision"), "model": config.model}
    if W.is_random(config.pretrained):
        return net, {**info, "weights": "none", "seed": config.seed}
    path = W.existing_weights_file(config.pretrained, "the torchvision video weights file", f"{config.model}.pth")
    return net, {**info, **W.load_weights_file(net, path, f"torchvision's {config.model}", config.trust_checkpoint)}


@register_backbone("torchvision-video", config=TorchvisionVideoConfig, required=("pretrained",),
                   windows=WindowDefaults(frames=16, stride=16, fps=15.0),
                   summary="torchvision's video classifiers (r3d_18, mc3_18, r2plus1d_18, mvit_v2_s, swin3d_t, s3d), "
                           "per window",
                   arrays="`pooled` (C), `logits` (400), `tokens/<block>` (T*H*W, C; MViT: 1 + T*H*W)",
                   preprocess="the weights' own transforms(): squash (or short side) to the resize size, bilinear "
                              "without antialiasing, centre crop, mean/std")
class TorchvisionVideoBackbone(FrozenBackbone):
    """Frozen torchvision video classifier: preprocessed windows (n, T, 3, S, S) -> one row of features per window."""

    kind = "torchvision-video"
    takes_windows = True

    def __init__(self, config: TorchvisionVideoConfig, device: str | torch.device = "cpu",
                 model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.arch = VIDEO_ARCHS[config.model]
        if model is None:
            model, self.weights_info = load_video_classifier(config)
        else:
            self.weights_info = {"library": "torchvision", "model": config.model, "weights": "in-memory"}
        self.device = torch.device(device)
        self.net = model.eval().requires_grad_(False).to(self.device)
        self.weights_info["weights_sha256"] = W.state_dict_sha256(self.net)
        self.compute_dtype = compute_dtype(config.precision, self.device)
        self.minimum, self.crop, self.preprocess, self.transform_info = weights_transform(
            config.model, config.resize, config.image_size)
        self.exact = self.arch.exact_input(self.net) if self.arch.exact_input else None
        self.blocks = self._blocks() if "tokens" in config.features else []
        self._captured: dict[str, torch.Tensor] = {}
        self._hook()

    def _blocks(self) -> list[int]:
        depth = len(self.arch.blocks(self.net))
        chosen = set()
        for layer in self.config.layers:
            if not -depth <= layer < depth:
                raise InputError(f"--layers {layer} is out of range for {self.config.model}'s {depth} blocks.")
            chosen.add(layer % depth)
        return sorted(chosen)

    def _hook(self) -> None:
        modules = self.arch.blocks(self.net)
        for b in self.blocks:
            def save(_module, _args, output, b=b):
                self._captured[f"tokens/{b}"] = self.arch.tokens(output)

            modules[b].register_forward_hook(save)
        pooled = self.arch.pooled(self.net)
        if self.arch.pooled_is_output:
            pooled.register_forward_hook(lambda _m, _a, out: self._captured.__setitem__("pooled", out.mean((2, 3, 4))))
        else:
            pooled.register_forward_pre_hook(lambda _m, args: self._captured.__setitem__("pooled", args[0].flatten(1)))

    def stored_arrays(self) -> list[str]:
        """Names of the arrays `forward` returns, one row per window."""
        return [f for f in ("pooled", "logits") if f in self.config.features] + [f"tokens/{b}" for b in self.blocks]

    def check_window(self, frames: int, height: int, width: int) -> None:
        """Refuse windows smaller than the weights' minimum (MViT: exactly the window it was made for, 16 x 224 x
        224 for torchvision's)."""
        frames_min, size_min = self.exact or self.minimum
        crop = min(self.crop, height, width)
        if self.exact and (frames, crop) != self.exact:
            raise InputError(f"{self.config.model} has positional encodings for {frames_min} frames of {size_min}x"
                             f"{size_min}; got T={frames}, {crop}x{crop} (use --window-frames {frames_min} and the "
                             "default --image-size).")
        if frames < frames_min or crop < size_min:
            raise InputError(f"{self.config.model} needs windows of at least {frames_min} frames of {size_min}x"
                             f"{size_min} pixels; got T={frames}, {crop}x{crop}.")

    def _run(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        self._captured.clear()
        logits = self.net(video)
        out = {"logits": logits, **self._captured}
        self._captured.clear()
        return out

    @torch.no_grad()
    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        """Preprocessed windows (n, T, 3, S, S) -> {array name: (n, ...) tensor} in the compute dtype."""
        if clips.ndim != 5 or clips.shape[2] != 3:
            raise InputError(f"the {self.config.model} backbone takes windows shaped (n, T, 3, H, W); "
                             f"got {tuple(clips.shape)}.")
        clips = center_crop(clips.to(self.device, non_blocking=True), (self.crop, self.crop))
        self.check_window(clips.shape[1], clips.shape[3], clips.shape[4])
        out = frozen_call(self._run, clips.transpose(1, 2), self.compute_dtype, self.device)  # (n, 3, T, h, w)
        return {name: out[name] for name in self.stored_arrays()}

    def provenance(self) -> dict:
        return {**super().provenance(), "layers": self.blocks, "transform": self.transform_info,
                "input_crop": [self.crop, self.crop]}
