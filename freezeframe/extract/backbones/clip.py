"""Frozen open_clip image tower: per-frame embeddings, pre-projection CLS and chosen blocks' token maps.

Token maps come from open_clip's `forward_intermediates` (block outputs, CLS first); for EVL's
cross-frame attention the backbone also stores each chosen block's input (the previous block's output)
and hands over its frozen pre-attention norm and q/k projection (see `freezeframe.heads.qk`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from freezeframe.checkpoints import UntrustedCheckpointError
from freezeframe.errors import BackboneError, InputError
from freezeframe.extract.backbones import weights as W
from freezeframe.extract.backbones.base import (PRECISION_HELP, SEED_HELP, TRUST_HELP, FrozenBackbone, check_precision,
                                                check_features, compute_dtype, frozen_call)
from freezeframe.extract.backbones.registry import register_backbone
from freezeframe.options import option
from freezeframe.extract.preprocess import PreprocessConfig
from freezeframe.offline import hub_offline, quiet_logging
from freezeframe.store.provenance import file_sha256, package_version

CLIP_FEATURES = ("embed", "cls", "tokens")
BUNDLED_CONFIGS = Path(__file__).parent / "configs"  # small architectures for tests and the offline demo


@dataclass(frozen=True)
class ClipConfig:
    """Which open_clip model, which weights, and which features to capture."""

    model: str = option("ViT-B-32", "an open_clip model name, or a path to an open_clip model-config JSON")
    pretrained: str = option("openai", "an open_clip pretrained tag, a local checkpoint path (.pt/.bin state dict "
                                       "or .safetensors), or none (random weights, seeded)")
    features: tuple[str, ...] = option(("embed",), "comma list of embed (the model's encode_image), cls "
                                                    "(pre-projection CLS after the final norm), tokens (block "
                                                    "outputs incl. CLS)")
    layers: tuple[int, ...] = option((-4, -3, -2, -1), "blocks whose token maps are stored with tokens; negative "
                                                       "counts from the end")
    precision: str = option("auto", PRECISION_HELP)
    seed: int = option(0, SEED_HELP)
    trust_checkpoint: bool = option(False, TRUST_HELP)

    def __post_init__(self) -> None:
        check_features(self.features, CLIP_FEATURES, self.layers)
        check_precision(self.precision)

    def default_name(self) -> str:
        """A feature-set name derived from model and weights, e.g. `clip-vit-b-32-openai`."""
        path = W.checkpoint_path(self.pretrained)
        weights = "random" if W.is_random(self.pretrained) else (path.stem if path else self.pretrained)
        model = Path(self.model).stem if self.model.endswith(".json") else self.model
        return re.sub(r"[^a-z0-9.]+", "-", f"clip-{model}-{weights}".lower()).strip("-")


def resolve_model_name(model: str) -> str:
    """An open_clip model name; a path to a model-config JSON is registered under its file stem."""
    import open_clip

    if model not in open_clip.list_models():
        open_clip.add_model_config(BUNDLED_CONFIGS)
    if model.endswith(".json"):
        path = Path(model)
        if not path.is_file():
            raise BackboneError(f"model config {model} does not exist.")
        open_clip.add_model_config(path)
        return path.stem
    if model not in open_clip.list_models() and not model.startswith(("hf-hub:", "local-dir:")):
        raise BackboneError(
            f"unknown open_clip model {model!r}; see open_clip.list_models() or pass a model-config JSON path."
        )
    return model


def load_open_clip(model: str, pretrained: str, seed: int = 0, trust_checkpoint: bool = False) -> tuple[nn.Module, dict]:
    """Build an open_clip model and load its weights; returns the model and a provenance dict of the weights.

    A checkpoint file is loaded as weights only (safetensors, or torch.load(weights_only=True)); one that is a
    full pickle is refused unless `trust_checkpoint`.
    """
    import open_clip

    name = resolve_model_name(model)
    what = f"open_clip model {name}"
    path = W.checkpoint_path(pretrained)
    with quiet_logging():
        if W.is_random(pretrained):
            torch.manual_seed(seed)
            clip_model = open_clip.create_model(name, pretrained=None)
            source = {"pretrained": "none", "seed": seed}
        elif path is not None:
            clip_model = open_clip.create_model(name, pretrained=None)
            try:
                W.load_checkpoint_into(clip_model, path, trust_checkpoint)
            except UntrustedCheckpointError:
                raise
            except Exception as exc:  # noqa: BLE001 - any loading failure becomes one sentence
                raise W.load_error(what, str(path), exc) from None
            source = {"pretrained": str(path.resolve()), "checkpoint_sha256": file_sha256(path)}
        else:
            tags = open_clip.list_pretrained_tags_by_model(name)
            if pretrained not in tags:
                raise BackboneError(
                    f"{pretrained!r} is neither a checkpoint file nor a pretrained tag of {name} "
                    f"(tags: {', '.join(tags) or 'none'}); pass a checkpoint path, a tag, or none."
                )
            pretrained_cfg = open_clip.get_pretrained_cfg(name, pretrained)
            hosts = W.download_hosts(pretrained_cfg)
            offline = not any(W.host_reachable(host) for host in hosts)
            # open_clip builds the config's activation and only warns when the tag's weights were trained with
            # QuickGELU (e.g. ViT-B-32 + openai); build the activation the weights were trained with.
            quick_gelu = bool(pretrained_cfg.get("quick_gelu")) and not (
                (open_clip.get_model_config(name) or {}).get("quick_gelu", False))
            try:
                with hub_offline(offline):
                    clip_model = open_clip.create_model(name, pretrained=pretrained, force_quick_gelu=quick_gelu)
            except Exception as exc:  # noqa: BLE001
                if offline:
                    raise BackboneError(W.missing_weights_message(what, pretrained)) from None
                raise W.load_error(what, pretrained, exc) from None
            source = {"pretrained": pretrained, **({"force_quick_gelu": True} if quick_gelu else {})}
    config = open_clip.get_model_config(name)
    return clip_model, {"library": "open_clip", "version": package_version("open_clip_torch"), "model": name,
                        "model_config": config, **source}


@register_backbone("clip", config=ClipConfig, summary="an open_clip image tower, per frame",
                   arrays="`embed` (D), `cls` (C), `tokens/<block>` (N, C) and `block_input/<block>` (N, C), with "
                          "the blocks' frozen norm and q/k for EVL",
                   preprocess="open_clip's own transform of the model (size, resize, mean/std)")
class ClipBackbone(FrozenBackbone):
    """Frozen CLIP image tower returning the chosen features of a batch of preprocessed frames."""

    kind = "clip"

    def __init__(self, config: ClipConfig, device: str | torch.device = "cpu", model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        if model is None:
            model, self.weights_info = load_open_clip(config.model, config.pretrained, config.seed,
                                                      config.trust_checkpoint)
        else:
            self.weights_info = {"library": "open_clip", "version": package_version("open_clip_torch"),
                                 "model": config.model, "pretrained": "in-memory"}
        self.device = torch.device(device)
        self.visual = model.visual.eval().requires_grad_(False).to(self.device)
        self.weights_info["weights_sha256"] = W.state_dict_sha256(self.visual)
        self.compute_dtype = compute_dtype(config.precision, self.device)
        preprocess_cfg = dict(getattr(self.visual, "preprocess_cfg", {}) or {})
        size = preprocess_cfg.get("size", self.visual.image_size)
        self.preprocess = PreprocessConfig(
            size=tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size)),
            interpolation=preprocess_cfg.get("interpolation", "bicubic"),
            resize_mode=preprocess_cfg.get("resize_mode", "shortest"),
            mean=tuple(preprocess_cfg.get("mean", PreprocessConfig.mean)),
            std=tuple(preprocess_cfg.get("std", PreprocessConfig.std)),
            fill_color=preprocess_cfg.get("fill_color", 0),
        )
        self.blocks: list[int] = []
        self._first_block_input: list[torch.Tensor] = []
        if "tokens" in config.features:
            self._choose_blocks()
        if "cls" in config.features and (getattr(self.visual, "attn_pool", None) is not None
                                         or not hasattr(self.visual, "ln_post")):
            raise BackboneError(f"'cls' is defined for ViT towers with token pooling; {self.config.model} has none.")

    # ---- set-up ----------------------------------------------------------------------------
    def _resblocks(self) -> nn.ModuleList:
        transformer = getattr(self.visual, "transformer", None)
        blocks = getattr(transformer, "resblocks", None)
        if blocks is None:
            raise BackboneError(
                f"token maps need an open_clip VisionTransformer image tower; {self.config.model} has "
                f"{type(self.visual).__name__} (use --features embed)."
            )
        return blocks

    def _choose_blocks(self) -> None:
        resblocks = self._resblocks()
        depth = len(resblocks)
        blocks = set()
        for layer in self.config.layers:
            if not -depth <= layer < depth:
                raise InputError(f"--layers {layer} is out of range for a {depth}-block image tower.")
            blocks.add(layer % depth)
        self.blocks = sorted(blocks)
        if 0 in self.blocks:
            # The one capture forward_intermediates cannot give: block 0's input (the patch embeddings after
            # ln_pre) is no block's output, so a pre-hook keeps it. Every other block input is an intermediate.
            batch_first = getattr(self.visual.transformer, "batch_first", True)

            def keep_input(_module, args) -> None:
                self._first_block_input.append(args[0] if batch_first else args[0].transpose(0, 1))

            resblocks[0].register_forward_pre_hook(keep_input)

    def _taken_blocks(self) -> list[int]:
        """Block outputs to take from forward_intermediates: the chosen blocks, the block before each one (its
        input, for EVL), and the last block when `cls` is stored (pooled from it as open_clip pools)."""
        taken = set(self.blocks) | {b - 1 for b in self.blocks if b > 0}
        if "cls" in self.config.features:
            taken.add(len(self._resblocks()) - 1)
        return sorted(taken)

    # ---- outputs -----------------------------------------------------------------------------
    def stored_arrays(self) -> list[str]:
        """Names of the arrays `forward` returns (block inputs only where not already stored as tokens)."""
        names = [f for f in ("embed", "cls") if f in self.config.features]
        names += [f"tokens/{b}" for b in self.blocks]
        names += [f"block_input/{b}" for b in self.blocks if b - 1 not in self.blocks]
        return names

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Preprocessed images (n, 3, h, w) -> {array name: (n, ...) tensor} in the compute dtype."""
        images = images.to(self.device, non_blocking=True)
        taken = self._taken_blocks()
        if not taken:  # embeddings only: the tower's own forward (any open_clip tower, ViT or not)
            embed = frozen_call(self.visual, images, self.compute_dtype, self.device)
            return {"embed": embed[0] if isinstance(embed, tuple) else embed}
        out = frozen_call(lambda x: self._intermediates(x, taken), images, self.compute_dtype, self.device)
        return {name: out[name] for name in self.stored_arrays()}

    def _intermediates(self, images: torch.Tensor, taken: list[int]) -> dict[str, torch.Tensor]:
        self._first_block_input.clear()
        out = self.visual.forward_intermediates(images, indices=taken, output_fmt="NLC", output_extra_tokens=True)
        outputs = {b: torch.cat([prefix, patches], dim=1) for b, prefix, patches in
                   zip(taken, out["image_intermediates_prefix"], out["image_intermediates"])}  # (n, 1 + L, C)
        arrays = {"embed": out["image_features"]}
        for b in self.blocks:
            arrays[f"tokens/{b}"] = outputs[b]
            arrays[f"block_input/{b}"] = outputs[b - 1] if b > 0 else self._first_block_input.pop()
        if "cls" in self.config.features:
            arrays["cls"] = self.visual._pool(outputs[taken[-1]])[0]
        return arrays

    # ---- what the store records ---------------------------------------------------------------
    def provenance(self) -> dict:
        info = {
            "backbone": self.weights_provenance(),
            "features": list(self.config.features),
            "layers": self.blocks,
            "compute_dtype": str(self.compute_dtype).replace("torch.", ""),
            "dtype": "float16",
        }
        if self.blocks:
            info["attention"] = self.attention_info()
        return info

    def _attention_modules(self, b: int) -> tuple[nn.Module, nn.Module]:
        block = self._resblocks()[b]
        attn = block.attn
        if getattr(attn, "logit_scale", None) is not None or not isinstance(getattr(attn, "ln_q", nn.Identity()), nn.Identity):
            raise BackboneError(f"block {b} of {self.config.model} uses a custom attention whose q/k are not exported.")
        return block.ln_1, attn

    def attention_info(self) -> dict:
        norm, attn = self._attention_modules(self.blocks[0])
        return {"blocks": self.blocks, "num_heads": int(attn.num_heads), "norm_eps": float(norm.eps),
                "weights": ["norm_weight", "norm_bias", "q_weight", "q_bias", "k_weight", "k_bias"]}

    def frozen_weights(self) -> dict[str, np.ndarray]:
        """Each chosen block's pre-attention norm and q/k projections, float32, for `store.qk.attention_qk`."""
        out = {}
        for b in self.blocks:
            norm, attn = self._attention_modules(b)
            width = attn.in_proj_weight.shape[1]
            weight = attn.in_proj_weight.detach().float().cpu().numpy()
            bias = (attn.in_proj_bias.detach().float().cpu().numpy() if attn.in_proj_bias is not None
                    else np.zeros(3 * width, np.float32))
            out.update({
                f"block{b}/norm_weight": norm.weight.detach().float().cpu().numpy(),
                f"block{b}/norm_bias": norm.bias.detach().float().cpu().numpy(),
                f"block{b}/q_weight": weight[:width], f"block{b}/q_bias": bias[:width],
                f"block{b}/k_weight": weight[width:2 * width], f"block{b}/k_bias": bias[width:2 * width],
            })
        return out
