"""Attention queries and keys of a frozen ViT block, recomputed from cached block inputs.

EVL's cross-frame attention needs each block's q and k. The store keeps the block input and
the block's frozen pre-attention norm and q/k projections, so a head gets them exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def attention_qk(
    block_input: torch.Tensor | np.ndarray,
    weights: dict[str, np.ndarray | torch.Tensor],
    num_heads: int,
    norm_eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k of one block: (..., tokens, width) -> two (..., heads, tokens, head_dim) float32 tensors.

    `weights` holds `norm_weight`, `norm_bias`, `q_weight`, `q_bias`, `k_weight`, `k_bias`
    as saved by the extractor. q is not yet scaled by 1/sqrt(head_dim), as inside nn.MultiheadAttention.
    """
    x = torch.as_tensor(block_input).float()
    w = {k: torch.as_tensor(v).float().to(x.device) for k, v in weights.items()}
    y = F.layer_norm(x, (x.shape[-1],), w["norm_weight"], w["norm_bias"], norm_eps)
    q = F.linear(y, w["q_weight"], w["q_bias"])
    k = F.linear(y, w["k_weight"], w["k_bias"])

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (num_heads, -1)).transpose(-3, -2)

    return split(q), split(k)


def stored_qk(feature_set, video_id: str, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """q and k inside block `block`'s attention for every frame of a stored video: two (frames, heads, tokens,
    head_dim) tensors, from the feature set's block input and frozen weights (`FeatureSet.attention_weights`)."""
    weights, num_heads, norm_eps = feature_set.attention_weights(block)
    return attention_qk(feature_set.block_input(video_id, block), weights, num_heads, norm_eps)
