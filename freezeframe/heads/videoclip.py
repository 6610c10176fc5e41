"""VideoCLIP-style video and text transformers over cached features, pooled into one embedding space.

Video: per-second features -> MLP projection to the hidden width -> [CLS] x [SEP] framing with learned
positions -> BERT-style (post-norm, GELU) encoder layers -> masked mean pooling. Text: cached BERT token
states -> projection -> encoder layers -> masked mean pooling. Train with `heads.contrastive` losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class VideoClipConfig:
    video_dim: int  # per-second video feature width (e.g. 512 for S3D-G, a CLIP embed width)
    text_dim: int  # cached BERT hidden width
    width: int = 256
    video_layers: int = 2
    text_layers: int = 1  # bert towers: the first N layers of the checkpoint, 0 = all of them
    heads: int = 4
    dropout: float = 0.1
    max_seconds: int = 64
    max_tokens: int = 64
    towers: str = "light"  # light (random towers on cached token states) or bert (heads.videoclip_bert)
    checkpoint: str | None = None  # bert: local transformers BERT directory the towers start from


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


def build_videoclip(config: VideoClipConfig) -> nn.Module:
    """The towers `config.towers` names: light ones here, or BERT-initialised ones (heads.videoclip_bert)."""
    if config.towers == "bert":
        from freezeframe.heads.videoclip_bert import BertVideoCLIP

        return BertVideoCLIP(config)
    return VideoCLIP(config)
