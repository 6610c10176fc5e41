"""VideoCLIP-style video and text transformers over cached features, pooled into one embedding space.

Video: per-second features -> MLP projection to the hidden width -> [CLS] x [SEP] framing with learned
positions -> BERT-style (post-norm, GELU) encoder layers -> masked mean pooling. Text: cached BERT token
states -> projection -> encoder layers -> masked mean pooling. Train with `heads.contrastive` losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from freezeframe.errors import InputError
from freezeframe.heads.registry import FeatureSource, vector_width
from freezeframe.options import FieldError, option

TOWERS = ("light", "bert")
# VideoCLIP as published (fairseq MMPT): 32-second videos, the checkpoint's first 6 layers for video, all for text
TOWER_DEFAULTS = {"light": {}, "bert": {"max_seconds": 32, "video_layers": 6, "text_layers": 0}}


@dataclass(frozen=True)
class VideoClipConfig:
    video_dim: int  # per-second video feature width (e.g. 512 for S3D-G, a CLIP embed width)
    text_dim: int  # cached BERT hidden width (0 for bert towers, which read token ids)
    towers: str = option("light", "light: random towers on cached token states; bert: VideoCLIP as published, "
                                  "BERT-initialised towers from --bert fine-tuned on token ids")
    checkpoint: str | None = option(None, "bert towers: the local transformers BERT directory both towers start "
                                          "from", flag="bert", shown="none")
    width: int = option(256, "light towers' width (bert: the checkpoint's)")
    video_layers: int = option(2, "video tower layers (bert: the checkpoint's first N, "
                                  f"{TOWER_DEFAULTS['bert']['video_layers']} unless given)")
    text_layers: int = option(1, "text tower layers (bert: the checkpoint's first N, 0 = all of them, "
                                 f"{TOWER_DEFAULTS['bert']['text_layers']} unless given)")
    heads: int = option(4, "light towers' attention heads")
    dropout: float = option(0.1, "light towers' dropout")
    max_seconds: int = 64
    max_tokens: int = 64

    def __post_init__(self) -> None:
        if self.towers not in TOWERS:
            raise FieldError("towers", f"{self.towers!r} is unknown; choose {' or '.join(TOWERS)}.")
        if self.towers == "bert" and not self.checkpoint:
            raise FieldError("checkpoint", "is needed by bert towers: a local BERT checkpoint directory.")
        if self.towers == "light" and self.width % self.heads:
            raise FieldError("width", f"{self.width} must be divisible by heads ({self.heads}).")

    @property
    def reads_token_ids(self) -> bool:
        """Whether the text tower reads token ids (BERT towers) rather than cached token states."""
        return self.towers == "bert"



def default_video_array(feature_set: FeatureSource) -> str:
    """`video_embedding` (S3D-G windows) when the set stores it, else the per-frame `embed`."""
    return "video_embedding" if "video_embedding" in feature_set.arrays() else "embed"


def default_text_layer(text_set: FeatureSource) -> int:
    """The last hidden state the text set stores."""
    layers = text_set.provenance.get("layers") or []
    if not layers:
        raise InputError(f"text set {text_set.name!r} holds no BERT token states (extract it with "
                         "`extract-text --backbone bert`).")
    return max(layers)


def token_states_width(text_set: FeatureSource, layer: int) -> int:
    """The width of the token states `tokens/<layer>` a text set stores; a missing layer names the stored ones."""
    stored = text_set.arrays()
    if f"tokens/{layer}" not in stored:
        layers = [name.split("/")[1] for name in stored if name.startswith("tokens/")]
        raise InputError(f"text set {text_set.name!r} has no layer {layer}; its stored layers are "
                         f"{', '.join(layers) or 'none'}.")
    return stored[f"tokens/{layer}"]["shape"][0]


def check_pair_of_sets(video_set: FeatureSource, text_set: FeatureSource) -> None:
    """A video feature set and a text feature set (made by extract-text), not the other way round."""
    if video_set.provenance.get("kind") == "text":
        raise InputError(f"{video_set.name!r} is a text feature set; pass a video feature set to --set.")
    if text_set.provenance.get("kind") != "text":
        raise InputError(f"{text_set.name!r} is not a text feature set; pass one made by extract-text to --text-set.")


def size_videoclip(video_set: FeatureSource, text_set: FeatureSource, *, array: str | None = None,
                   text_layer: int | None = None, max_tokens: int | None = None, **options) -> VideoClipConfig:
    """Tower input widths from the video set's per-second vectors and the text set's token states (bert towers
    read token ids instead); text length from the text set's `max_length`. `options` set the head's fields; the
    towers' recipe (`TOWER_DEFAULTS`) fills the ones not given."""
    check_pair_of_sets(video_set, text_set)
    towers = options.get("towers", VideoClipConfig.towers)
    if towers not in TOWERS:
        raise FieldError("towers", f"{towers!r} is unknown; choose {' or '.join(TOWERS)}.")
    video_dim = vector_width(video_set, array or default_video_array(video_set))
    layer = default_text_layer(text_set) if text_layer is None and towers != "bert" else text_layer
    text_dim = 0 if towers == "bert" else token_states_width(text_set, layer)
    max_tokens = max_tokens or int(text_set.provenance.get("max_length") or VideoClipConfig.max_tokens)
    return VideoClipConfig(video_dim=video_dim, text_dim=text_dim, max_tokens=max_tokens,
                           **{**TOWER_DEFAULTS[towers], **options})


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the sequence of the positions where `mask` (batch, length) is true."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def _encoder(config: VideoClipConfig, depth: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(config.width, config.heads, 4 * config.width, config.dropout,
                                       activation="gelu", batch_first=True)  # post-norm, as BERT
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class VideoEncoder(nn.Module):
    """(batch, seconds, video_dim) features and a (batch, seconds) mask -> (batch, width) embeddings."""

    def __init__(self, config: VideoClipConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Sequential(nn.Linear(config.video_dim, config.width), nn.GELU(),
                                  nn.Linear(config.width, config.width))
        self.cls = nn.Parameter(torch.randn(1, 1, config.width) * 0.02)
        self.sep = nn.Parameter(torch.randn(1, 1, config.width) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, config.max_seconds + 2, config.width) * 0.02)
        self.norm = nn.LayerNorm(config.width)
        self.encoder = _encoder(config, config.video_layers)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`mask` marks each row's valid seconds, which come first (padding only at the end)."""
        batch, seconds = mask.shape
        if seconds > self.config.max_seconds:
            raise ValueError(f"{seconds} seconds exceed max_seconds={self.config.max_seconds} of this head")
        x = torch.cat([self.cls.expand(batch, -1, -1), self.proj(features.float()),
                       self.sep.new_zeros(batch, 1, self.config.width)], dim=1)
        lengths = mask.bool().sum(dim=1)
        x[torch.arange(batch), lengths + 1] = self.sep[0, 0]  # [SEP] right after each row's last second
        x = self.norm(x + self.pos[:, : seconds + 2])
        framed = torch.arange(seconds + 2, device=mask.device)[None] <= (lengths + 1)[:, None]
        x = self.encoder(x, src_key_padding_mask=~framed)
        return masked_mean(x, framed)


class TextEncoder(nn.Module):
    """(batch, tokens, text_dim) cached token states and a (batch, tokens) mask -> (batch, width) embeddings."""

    def __init__(self, config: VideoClipConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.text_dim, config.width)
        self.pos = nn.Parameter(torch.randn(1, config.max_tokens, config.width) * 0.02)
        self.norm = nn.LayerNorm(config.width)
        self.encoder = _encoder(config, config.text_layers)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = mask.shape[1]
        if length > self.config.max_tokens:
            raise ValueError(f"{length} tokens exceed max_tokens={self.config.max_tokens} of this head")
        x = self.norm(self.proj(tokens.float()) + self.pos[:, :length])
        x = self.encoder(x, src_key_padding_mask=~mask.bool())
        return masked_mean(x, mask.bool())


class VideoCLIP(nn.Module):
    """Both towers; `forward` returns (video embeddings, text embeddings) for a contrastive loss."""

    INPUTS = ("video", "video_mask", "tokens", "text_mask")  # the batch entries `forward` takes, in order

    def __init__(self, config: VideoClipConfig) -> None:
        super().__init__()
        self.config = config
        self.video = VideoEncoder(config)
        self.text = TextEncoder(config)

    def forward(self, features: torch.Tensor, video_mask: torch.Tensor, tokens: torch.Tensor,
                text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.video(features, video_mask), self.text(tokens, text_mask)
