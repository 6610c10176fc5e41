"""Frozen text encoders: BERT-family token states (Hugging Face transformers) and CLIP text embeddings (open_clip).

Each returns, per caption, the arrays a text feature set stores (rows = tokens for BERT, one row for CLIP).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from freezeframe.errors import BackboneError, InputError
from freezeframe.extract.backbones import weights as W
from freezeframe.offline import hub_offline, quiet_logging
from freezeframe.options import FieldError
from freezeframe.store.provenance import package_version

BACKBONES = ("bert", "clip-text")


@dataclass(frozen=True)
class TextConfig:
    """What to compute for each caption.

    `layers` (bert): hidden_states indices, 0 = embedding output, -1 = last layer; stored as `tokens/<index>`
    with the positive index. `pretrained` (clip-text): open_clip tag, checkpoint path, or none.
    """

    backbone: str = "bert"
    model: str = ""
    pretrained: str = "none"
    layers: tuple[int, ...] = (-1,)
    max_length: int = 64
    seed: int = 0  # clip-text with random weights
    trust_checkpoint: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise FieldError("backbone", f"{self.backbone!r} is unknown; choose {' or '.join(BACKBONES)}.")
        if not self.model:
            raise FieldError("model", "is required: a transformers model directory (bert) or an open_clip model name.")
        if self.max_length < 2:
            raise FieldError("max_length", "must be at least 2 (room for [CLS] and [SEP]).")
        if self.backbone == "bert" and not self.layers:
            raise FieldError("layers", "needs at least one hidden-state index.")


class BertEncoder:
    """Token states of chosen layers of a BERT-family model, unpadded, one row per token."""

    def __init__(self, config: TextConfig, device: torch.device) -> None:
        from freezeframe.extras import require

        require("transformers", "BERT text features")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a progress bar per model load, not wanted in our output

        self.config, self.device = config, device
        local = Path(config.model).is_dir()
        try:
            with quiet_logging(), hub_offline(True):
                self.tokenizer = AutoTokenizer.from_pretrained(config.model)
                self.model = AutoModel.from_pretrained(config.model).eval().to(device)
        except (OSError, ValueError) as exc:
            if local:
                raise BackboneError(f"cannot load a transformers model from {config.model}: "
                                    f"{str(exc).splitlines()[0][:200]}.") from None
            raise BackboneError(f"{config.model!r} is not a local model directory and cannot be downloaded here "
                                "(no network, not in the local cache): pass --model with a directory holding the "
                                "model's config, tokenizer and weights.") from None
        num_layers = self.model.config.num_hidden_layers
        self.layers = []
        for layer in config.layers:
            index = layer + num_layers + 1 if layer < 0 else layer
            if not 0 <= index <= num_layers:
                raise InputError(f"--layers {layer} is out of range: {config.model} has hidden states 0..{num_layers}.")
            self.layers.append(index)
        self.layers = sorted(set(self.layers))
        self.weights_sha256 = W.state_dict_sha256(self.model)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> list[dict[str, np.ndarray]]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_length,
                               return_tensors="pt")
        out = self.model(**{k: v.to(self.device) for k, v in batch.items()}, output_hidden_states=True)
        states = {layer: out.hidden_states[layer].float().cpu().numpy() for layer in self.layers}
        mask = batch["attention_mask"].numpy().astype(bool)
        results = []
        for i in range(len(texts)):
            keep = mask[i]
            arrays = {f"tokens/{layer}": states[layer][i][keep].astype(np.float16) for layer in self.layers}
            arrays["token_ids"] = batch["input_ids"][i].numpy()[keep].astype(np.int32)
            arrays["attention_mask"] = batch["attention_mask"][i].numpy()[keep].astype(np.uint8)
            results.append(arrays)
        return results

    def provenance(self) -> dict:
        model = str(Path(self.config.model).resolve()) if Path(self.config.model).is_dir() else self.config.model
        return {"backbone": {"name": "bert", "library": "transformers", "version": package_version("transformers"),
                             "model": model, "architecture": type(self.model).__name__,
                             "tokenizer": type(self.tokenizer).__name__, "weights_sha256": self.weights_sha256},
                "layers": self.layers, "max_length": self.config.max_length}


class ClipTextEncoder:
    """open_clip's `encode_text` (unnormalised), one row per caption."""

    def __init__(self, config: TextConfig, device: torch.device) -> None:
        import open_clip

        from freezeframe.extract.backbones.clip import load_open_clip

        self.config, self.device = config, device
        self.model, self.weights = load_open_clip(config.model, config.pretrained, seed=config.seed,
                                                  trust_checkpoint=config.trust_checkpoint)
        self.model = self.model.eval().to(device)
        self.tokenizer = open_clip.get_tokenizer(self.weights["model"])
        self.weights_sha256 = W.state_dict_sha256(self.model)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> list[dict[str, np.ndarray]]:
        embed = self.model.encode_text(self.tokenizer(texts).to(self.device)).float().cpu().numpy()
        return [{"embed": row[None].astype(np.float16)} for row in embed]

    def provenance(self) -> dict:
        weights = {k: v for k, v in self.weights.items() if k != "model_config"}
        return {"backbone": {"name": "clip-text", **weights, "weights_sha256": self.weights_sha256}}


def build_text_encoder(config: TextConfig, device: torch.device) -> BertEncoder | ClipTextEncoder:
    return BertEncoder(config, device) if config.backbone == "bert" else ClipTextEncoder(config, device)

