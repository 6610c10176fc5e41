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


def few_query_attention(attn: nn.MultiheadAttention, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """`attn(query, memory, memory)` (batch first, no dropout) without projecting the memory: equal up to rounding.

    Each head's logits q_h . (W_k,h m + b_k,h) are (W_k,h^T q_h) . m plus a constant that softmax drops, and its
    output W_v,h (sum_j a_j m_j) + b_v,h, so a few queries cost O(heads * queries * N * C) instead of the
    O(N * C^2) of projecting N memory tokens to keys and values: 64x fewer FLOPs for one query at C = 768.
    """
    b, n, c = memory.shape  # memory (B, N, C), query (B, Q, C)
    heads, head_dim = attn.num_heads, c // attn.num_heads
    w_q, w_k, w_v = attn.in_proj_weight.view(3, heads, head_dim, c).unbind(0)  # each (H, hd, C)
    b_q, _, b_v = attn.in_proj_bias.view(3, heads, head_dim).unbind(0)  # each (H, hd)
    q = (torch.einsum("bqc,hdc->bhqd", query, w_q) + b_q[:, None]) / head_dim ** 0.5  # (B, H, Q, hd)
    folded = torch.einsum("bhqd,hdc->bhqc", q, w_k)  # (B, H, Q, C): each head's query in memory space
    weights = (folded.flatten(1, 2) @ memory.transpose(1, 2)).softmax(dim=-1)  # (B, H*Q, N)
    pooled = (weights @ memory).view(b, heads, -1, c)  # (B, H, Q, C)
    values = torch.einsum("bhqc,hdc->bqhd", pooled, w_v) + b_v  # (B, Q, H, hd)
    return attn.out_proj(values.flatten(2))


class CrossAttentionLayer(nn.Module):
    """Pre-norm transformer decoder layer: queries attend to a memory of tokens, then an MLP.

    With few queries (EVL's one) the attention folds the key and value projections into the queries
    (`few_query_attention`); the parameters are those of `nn.MultiheadAttention` either way."""

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
        normed = self.norm_query(query)
        if 2 * query.shape[1] * self.attn.num_heads <= query.shape[2]:  # folding costs fewer FLOPs
            attended = few_query_attention(self.attn, normed, memory)
        else:
            attended = self.attn(normed, memory, memory, need_weights=False)[0]
        query = query + attended
        return query + self.mlp(self.norm_mlp(query))
