"""ViViT factorised-encoder-style temporal transformer over per-frame embeddings.

A learned [CLS] token and learned temporal position embeddings, then pre-norm transformer
encoder layers across frames; the [CLS] output is classified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from freezeframe.heads.registry import FeatureSource, register_head, vector_width
from freezeframe.options import FieldError, option


@dataclass(frozen=True)
class TemporalConfig:
    num_classes: int
    input_dim: int
    array: str = option("embed", "per-frame array the transformer reads")
    # small and regularised: a head for a few hundred videos (width 256 x 2 layers fitted 160 videos
    # perfectly and did not generalise); measured in the README with benchmarks/heldout_tasks.py
    width: int = option(128, "transformer width")
    depth: int = option(1, "encoder layers")
    heads: int = option(4, "attention heads")
    mlp_factor: float = 4.0
    dropout: float = option(0.1, "dropout in the encoder layers")
    max_frames: int = 64

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise FieldError("width", f"{self.width} must be divisible by heads ({self.heads}).")


def size_temporal(feature_set: FeatureSource, num_classes: int, num_frames: int, **options) -> TemporalConfig:
    array = options.pop("array", TemporalConfig.array)
    return TemporalConfig(num_classes=num_classes, input_dim=vector_width(feature_set, array), array=array,
                          max_frames=max(num_frames, 1), **options)


def channel_stats(items: Sequence[dict], array: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of `array` over every frame of the items."""
    frames = torch.cat([items[i]["inputs"][array].float().flatten(0, -2) for i in range(len(items))])
    return frames.mean(0), frames.std(0)


def standardise_inputs(head: "TemporalTransformer", feature_set: FeatureSource, train_set: Sequence[dict]) -> None:
    """Before training: the input standardisation, from the training items."""
    head.set_input_stats(*channel_stats(train_set, head.config.array))


@register_head("temporal", config=TemporalConfig, size=size_temporal, task="classification",
               prepare=standardise_inputs,
               summary="ViViT factorised-encoder temporal transformer: standardised per-frame vectors, learned [CLS] "
                       "and temporal position embedding, `--depth` pre-norm encoder layers; defaults sized for a few "
                       "hundred videos",
               reads="`--array`")
class TemporalTransformer(nn.Module):
    """Logits from `inputs[array]` of shape (batch, frames, input_dim); padded rows of a batch with
    `inputs["frame_mask"]` (batch, frames) are left out of attention."""

    takes_frame_mask = True

    def __init__(self, config: TemporalConfig) -> None:
        super().__init__()
        self.config = config
        # Per-channel standardisation of the cached inputs (set from training data by `set_input_stats`):
        # frozen embeddings often share a large common component that would drown the frame-to-frame signal.
        self.register_buffer("input_mean", torch.zeros(config.input_dim))
        self.register_buffer("input_std", torch.ones(config.input_dim))
        self.proj = nn.Linear(config.input_dim, config.width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.pos_embed = nn.Parameter(torch.randn(1, config.max_frames + 1, config.width) * 0.02)
        layer = nn.TransformerEncoderLayer(config.width, config.heads, int(config.width * config.mlp_factor),
                                           config.dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.num_classes)

    @property
    def required_arrays(self) -> list[str]:
        return [self.config.array]

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean)
        self.input_std.copy_(std.clamp_min(1e-6))

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.proj((inputs[self.config.array].float() - self.input_mean) / self.input_std)
        frames = x.shape[1]
        if frames > self.config.max_frames:
            raise ValueError(f"{frames} frames exceed max_frames={self.config.max_frames} of this head")
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed[:, : frames + 1]
        mask = inputs.get("frame_mask")
        padding = None if mask is None else torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        return self.head(self.norm(self.encoder(x, src_key_padding_mask=padding)[:, 0]))
