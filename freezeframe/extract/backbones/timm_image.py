"""Any timm image model, per frame: the pooled pre-logits embedding, the logits, and chosen blocks' token maps.

Token maps come from timm's own `forward_intermediates` (block outputs, prefix tokens such as CLS first, then the
spatial grid row-major); preprocessing is `timm.data.resolve_model_data_config` of the model. Weights come from a
local file (safetensors, or a weights-only torch.load) or are seeded random: nothing is downloaded.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from freezeframe.errors import BackboneError, InputError
from freezeframe.extract.backbones import weights as W
from freezeframe.extract.backbones.base import (PRECISION_HELP, SEED_HELP, TRUST_HELP, WEIGHTS_HELP, FrozenBackbone,
                                                center_crop, check_features, check_precision, compute_dtype, frozen_call)
from freezeframe.extract.backbones.registry import register_backbone
from freezeframe.options import option
from freezeframe.extract.preprocess import PreprocessConfig
from freezeframe.store.provenance import package_version

TIMM_FEATURES = ("embed", "logits", "tokens")
BUNDLED_CONFIGS = Path(__file__).parent / "configs"  # ff-tiny-timm-vit: a tiny ViT for tests and offline demos


@dataclass(frozen=True)
class TimmConfig:
    """Which timm model, which weights file, and which features to capture."""

    model: str = option("resnet50", "a timm model name, or a JSON file {\"model\": NAME, \"kwargs\": {...}} of "
                                    "timm.create_model arguments (bundled: ff-tiny-timm-vit)")
    pretrained: str = option("none", WEIGHTS_HELP + "; nothing is downloaded")
    features: tuple[str, ...] = option(("embed",), "comma list of embed (pooled pre-logits), logits, tokens "
                                                    "(block outputs from forward_intermediates, prefix tokens first)")
    layers: tuple[int, ...] = option((-1,), "blocks (forward_intermediates indices) whose token maps are stored with "
                                            "tokens; negative counts from the end")
    precision: str = option("auto", PRECISION_HELP)
    seed: int = option(0, SEED_HELP)
    trust_checkpoint: bool = option(False, TRUST_HELP)

    def __post_init__(self) -> None:
        check_features(self.features, TIMM_FEATURES, self.layers)
        check_precision(self.precision)

    def default_name(self) -> str:
        """A feature-set name from model and weights, e.g. `timm-resnet50-resnet50_a1_in1k` or `timm-vit-random`."""
        weights = "random" if W.is_random(self.pretrained) else Path(self.pretrained).stem
        return re.sub(r"[^a-z0-9._]+", "-", f"timm-{Path(self.model).stem}-{weights}".lower()).strip("-")


def model_spec(model: str) -> tuple[str, dict]:
    """(timm architecture name, create_model keyword arguments) of a name, a bundled config or a JSON file."""
    path = Path(model).expanduser()
    if not path.suffix == ".json" and (BUNDLED_CONFIGS / f"{model}.json").is_file():
        path = BUNDLED_CONFIGS / f"{model}.json"
    if path.suffix != ".json":
        return model, {}
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        return str(spec["model"]), dict(spec.get("kwargs", {}))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BackboneError(f"cannot read the timm model config {model}: {exc}; it must be JSON "
                            '{"model": NAME, "kwargs": {...}}.') from None


def load_timm(config: TimmConfig) -> tuple[nn.Module, dict]:
    """Build the timm model (random init, seeded) and load its weights file by parameter name, weights only."""
    import timm

    name, kwargs = model_spec(config.model)
    if not timm.is_model(name):
        raise BackboneError(f"unknown timm model {name!r}; see timm.list_models() or pass a model-config JSON.")
    what = f"timm model {name}"

    def build() -> nn.Module:
        try:
            return timm.create_model(name, pretrained=False, **kwargs)
        except Exception as exc:  # noqa: BLE001 - bad kwargs in a config file are one sentence
            raise BackboneError(f"cannot build {what} with {kwargs}: {str(exc).splitlines()[0][:300]}.") from None

    net = W.seeded(build, config.seed)
    info = {"library": "timm", "version": package_version("timm"), "model": name, "model_kwargs": kwargs}
    if W.is_random(config.pretrained):
        return net, {**info, "weights": "none", "seed": config.seed}
    path = W.existing_weights_file(config.pretrained, "the timm weights file", f"{name}.safetensors")
    return net, {**info, **W.load_weights_file(net, path, what, config.trust_checkpoint)}


def timm_preprocess(net: nn.Module) -> tuple[PreprocessConfig, tuple[int, int], dict]:
    """(decode-worker preprocessing, final crop, timm's data config) of a model.

    timm resizes to floor(size / crop_pct) and centre-crops `size`: the decode workers resize and crop the square
    of the resize size (open_clip's transform), the backbone crops the rest. Exact for `squash`, and for `center`
    when resize and crop sizes differ by an even number of pixels (else the long side's crop may sit 1 px off).
    """
    import timm.data

    data = timm.data.resolve_model_data_config(net)
    crop = tuple(int(s) for s in data["input_size"][-2:])
    mode = data.get("crop_mode", "center")
    if mode not in ("center", "squash"):
        raise BackboneError(f"timm crop_mode {mode!r} is not supported; use a model with center or squash cropping.")
    scale = tuple(math.floor(s / (data.get("crop_pct") or 1.0)) for s in crop)
    if mode == "center" and scale[0] != scale[1]:
        raise BackboneError(f"timm model input {crop} is not square; freezeframe resizes to squares.")
    interpolation = data.get("interpolation", "bicubic")
    if interpolation not in ("bicubic", "bilinear"):
        interpolation = "bicubic" if interpolation == "random" else "bilinear"
    preprocess = PreprocessConfig(size=scale, interpolation=interpolation,
                                  resize_mode="shortest" if mode == "center" else "squash",
                                  mean=tuple(data["mean"]), std=tuple(data["std"]))
    return preprocess, crop, {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@register_backbone("timm", config=TimmConfig, required=("pretrained",),
                   summary="any timm image model, per frame",
                   arrays="`embed` (pooled pre-logits), `logits` (classes), `tokens/<block>` (prefix + H*W, C)",
                   preprocess="timm's `resolve_model_data_config`: resize to size / crop_pct, centre crop, mean/std")
class TimmBackbone(FrozenBackbone):
    """Frozen timm image model: preprocessed frames (n, 3, S, S) -> the chosen features, one row per frame."""

    kind = "timm"

    def __init__(self, config: TimmConfig, device: str | torch.device = "cpu", model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        if model is None:
            model, self.weights_info = load_timm(config)
        else:
            self.weights_info = {"library": "timm", "model": type(model).__name__, "weights": "in-memory"}
        self.device = torch.device(device)
        self.net = model.eval().requires_grad_(False).to(self.device)
        self.weights_info["weights_sha256"] = W.state_dict_sha256(self.net)
        self.compute_dtype = compute_dtype(config.precision, self.device)
        self.preprocess, self.crop, self.data_config = timm_preprocess(self.net)
        self.blocks = self._blocks() if "tokens" in config.features else []

    def _blocks(self) -> list[int]:
        if not hasattr(self.net, "forward_intermediates"):
            raise BackboneError(f"{type(self.net).__name__} has no forward_intermediates, so no token maps: use "
                                "--features embed or logits.")
        depth = len(getattr(self.net, "feature_info", None) or getattr(self.net, "blocks", None) or [])
        blocks = set()
        for layer in self.config.layers:
            if not -depth <= layer < depth:
                raise InputError(f"--layers {layer} is out of range for a model with {depth} intermediate blocks.")
            blocks.add(layer % depth)
        return sorted(blocks)

    def stored_arrays(self) -> list[str]:
        """Names of the arrays `forward` returns, one row per frame."""
        return [f for f in ("embed", "logits") if f in self.config.features] + [f"tokens/{b}" for b in self.blocks]

    def _run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.net
        if self.blocks:
            extra = ({"return_prefix_tokens": True}
                     if "return_prefix_tokens" in inspect.signature(net.forward_intermediates).parameters else {})
            final, intermediates = net.forward_intermediates(images, indices=self.blocks, **extra)
        else:
            final, intermediates = net.forward_features(images), []
        out = {f"tokens/{b}": as_tokens(x) for b, x in zip(self.blocks, intermediates)}
        if "embed" in self.config.features:
            out["embed"] = net.forward_head(final, pre_logits=True)
        if "logits" in self.config.features:
            out["logits"] = net.forward_head(final)
        return out

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Preprocessed frames (n, 3, S, S) -> {array name: (n, ...) tensor} in the compute dtype."""
        images = center_crop(images.to(self.device, non_blocking=True), self.crop)  # (n, 3, h, w): timm's input
        out = frozen_call(self._run, images, self.compute_dtype, self.device)
        return {name: out[name] for name in self.stored_arrays()}

    def provenance(self) -> dict:
        return {**super().provenance(), "layers": self.blocks, "timm_data_config": self.data_config,
                "input_crop": list(self.crop)}


def as_tokens(x: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A forward_intermediates output as tokens (n, N, C): (n, C, H, W) maps row-major, after prefix tokens
    (n, P, C) when the model returns them; (n, N, C) sequences as they are."""
    prefix = None
    if isinstance(x, (tuple, list)):
        x, prefix = x
    if x.ndim == 4:
        x = x.flatten(2).transpose(1, 2)  # (n, C, H, W) -> (n, H*W, C)
    return x if prefix is None or prefix.shape[1] == 0 else torch.cat([prefix, x], dim=1)
