"""Small building blocks shared by the heads."""

from __future__ import annotations

import torch
import torch.nn as nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of OpenAI's CLIP (and of EVL's decoder)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def mlp(width: int, factor: float, dropout: float, activation: type[nn.Module] = nn.GELU) -> nn.Sequential:
    hidden = int(width * factor)
    return nn.Sequential(nn.Linear(width, hidden), activation(), nn.Dropout(dropout), nn.Linear(hidden, width))


class CrossAttentionLayer(nn.Module):
    """Pre-norm transformer decoder layer: queries attend to a memory of tokens, then an MLP."""

    def __init__(self, width: int, heads: int, mlp_factor: float = 4.0, mlp_dropout: float = 0.0,
                 activation: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.norm_query = nn.LayerNorm(width)
        self.norm_memory = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = mlp(width, mlp_factor, mlp_dropout, activation)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        memory = self.norm_memory(memory)
        query = query + self.attn(self.norm_query(query), memory, memory, need_weights=False)[0]
        return query + self.mlp(self.norm_mlp(query))
