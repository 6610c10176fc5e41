"""EVL decoder (Lin et al., "Frozen CLIP Models are Efficient Video Learners", ECCV 2022) on cached features.

One learnable query token attends, layer by layer, to the token maps of the last N frozen
ViT blocks (one decoder layer per block). Before each layer the block's tokens get three
temporal modules, each switchable off: a depthwise temporal convolution, a temporal position
embedding, and cross-frame attention built from the block's own frozen attention q/k
(recomputed from the cached block input, see `freezeframe.heads.qk`).

Dropout: none by default (the paper's 0.5 in the decoder MLPs and before the classifier is for 50k steps on
Kinetics-400; in the default 200 steps on 160 videos it left the decoder at train top-1 0.76 on a motion task
that it fits without dropout);
`--mlp-dropout 0.5 --cls-dropout 0.5` as recipes/evl_k400_b16_8f.sh trains.

Initialisation (`EVLConfig.init`): "reference" as EVL's code does it — Xavier-uniform q, k, v and
output matrices (zero biases), Xavier-uniform MLP matrices with N(0, 1e-6) biases, PyTorch's default
init for the temporal convolution, zero query, temporal position embedding and cross-frame weights.
"identity" zero-initialises the temporal convolution as well (it then starts as an identity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from freezeframe.errors import InputError
from freezeframe.heads.layers import CrossAttentionLayer, QuickGELU
from freezeframe.heads.qk import attention_qk
from freezeframe.heads.registry import FeatureSource, array_shape, register_head
from freezeframe.options import FieldError, option

QK_KEYS = ("norm_weight", "norm_bias", "q_weight", "q_bias", "k_weight", "k_bias")


@dataclass(frozen=True)
class EVLConfig:
    num_classes: int
    width: int  # the backbone's token width; EVL's decoder keeps it
    blocks: tuple[int, ...]  # backbone blocks, shallow to deep, one decoder layer each
    num_frames: int
    grid: tuple[int, int]  # patch grid (rows, columns) of the token maps, CLS excluded
    heads: int = 0  # decoder heads; 0 means width // 64 (12 for ViT-B)
    backbone_heads: int = 12
    backbone_norm_eps: float = 1e-5
    num_layers: int = option(0, "decoder layers, one per stored block: the last N stored blocks (0: all of them)")
    mlp_factor: float = 4.0
    # No dropout by default: the paper's 0.5 and 0.5 (for 50k steps of batch 256 on Kinetics-400) kept a 200-step run
    # on 160 videos from fitting its own training set (docs/training.md, benchmarks/heldout_tasks.py);
    # recipes/evl_k400_b16_8f.sh passes the paper's values.
    mlp_dropout: float = option(0.0, "dropout in the decoder MLPs (the paper's: 0.5, for long Kinetics runs)")
    cls_dropout: float = option(0.0, "dropout before the classifier (the paper's: 0.5, for long Kinetics runs)")
    temporal_conv: bool = option(True, "depthwise temporal convolution on each block's tokens")
    temporal_pos_embed: bool = option(True, "temporal position embedding", flag="temporal_pos")
    cross_frame_attention: bool = option(True, "cross-frame attention from the blocks' own frozen q/k")
    init: str = option("reference", "reference: EVL's own initialisation; identity: the temporal convolution "
                                     "zero-initialised too")

    def __post_init__(self) -> None:
        if self.init not in EVL_INITS:
            raise FieldError("init", f"{self.init!r} is unknown; choose one of {', '.join(EVL_INITS)}.")

    @property
    def decoder_heads(self) -> int:
        return self.heads or max(1, self.width // 64)


class TemporalConv(nn.Module):
    """Depthwise convolution over time, per token and channel (PyTorch's default init, as EVL's reference)."""

    def __init__(self, width: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, L, C)
        b, t, l, c = x.shape
        y = self.conv(x.permute(0, 2, 3, 1).reshape(b * l, c, t))
        return y.reshape(b, l, c, t).permute(0, 3, 1, 2)


class CrossFrameAttention(nn.Module):
    """Attention maps between each frame's patch queries and its neighbours' keys (mean over heads),
    mapped to features by learned weights indexed by the relative position of query and key patches."""

    def __init__(self, grid: tuple[int, int], width: int) -> None:
        super().__init__()
        rows, cols = grid
        self.prev_weight = nn.Parameter(torch.zeros((2 * rows - 1) * (2 * cols - 1), width))
        self.next_weight = nn.Parameter(torch.zeros((2 * rows - 1) * (2 * cols - 1), width))
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
        r, c = r.flatten(), c.flatten()
        # (L, L): the offset of key patch from query patch, row-major in a (2 rows - 1, 2 cols - 1) grid
        relative = (r[:, None] - r[None, :] + rows - 1) * (2 * cols - 1) + (c[:, None] - c[None, :] + cols - 1)
        offsets = self.prev_weight.shape[0]
        self.register_buffer("table_index", (torch.arange(len(r))[:, None] * offsets + relative).flatten(),
                             persistent=False)  # (L * L,): (query, key) -> place in a (L, offsets) table

    def _affinity(self, q: torch.Tensor, k: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """sum over keys of attention(query, key) * weight[offset(query, key)]: (B, T', L, width).

        Each query's attention is first moved to a table by relative offset (no key shares an offset with another
        of the same query), then one matrix product with the weights: a product's backward, not the scatter-add
        that a gather of weights per (query, key) needs (2x faster forward and backward on a CPU)."""
        attn = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(dim=-1).mean(dim=2)  # (B, T', L, L)
        table = attn.new_zeros(*attn.shape[:3], weight.shape[0])  # (B, T', L, offsets)
        table.view(*attn.shape[:2], -1).index_copy_(2, self.table_index, attn.flatten(2))
        return table @ weight  # (B, T', L, offsets) @ (offsets, width)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q, k: (B, T, heads, 1 + L, head_dim) -> features (B, T, 1 + L, width); the CLS row stays zero."""
        q, k = q[..., 1:, :], k[..., 1:, :]
        b, t, _, l, _ = q.shape
        out = q.new_zeros(b, t, l + 1, self.prev_weight.shape[1])
        if t > 1:
            out[:, 1:, 1:] += self._affinity(q[:, 1:], k[:, :-1], self.prev_weight)
            out[:, :-1, 1:] += self._affinity(q[:, :-1], k[:, 1:], self.next_weight)
        return out


def _xavier_attention_and_mlp(layer: CrossAttentionLayer) -> None:
    """EVL's decoder-layer init: Xavier per q, k, v and output matrix, zero attention biases;
    Xavier MLP matrices with N(0, 1e-6) biases."""
    attn, width = layer.attn, layer.attn.embed_dim
    for part in attn.in_proj_weight.data.split(width):  # (3C, C) -> q, k, v, each (C, C)
        nn.init.xavier_uniform_(part)
    nn.init.zeros_(attn.in_proj_bias)
    nn.init.xavier_uniform_(attn.out_proj.weight)
    nn.init.zeros_(attn.out_proj.bias)
    for linear in (layer.mlp[0], layer.mlp[-1]):
        nn.init.xavier_uniform_(linear.weight)
        nn.init.normal_(linear.bias, std=1e-6)


def _init_reference(decoder: "EVLDecoder") -> None:
    for layer in decoder.layers:
        _xavier_attention_and_mlp(layer)


def _init_identity(decoder: "EVLDecoder") -> None:
    _init_reference(decoder)
    for conv in decoder.temporal_conv or ():
        nn.init.zeros_(conv.conv.weight)
        nn.init.zeros_(conv.conv.bias)


EVL_INITS = {"reference": _init_reference, "identity": _init_identity}


def size_evl(feature_set: FeatureSource, num_classes: int, num_frames: int, **options) -> EVLConfig:
    """One decoder layer per stored block (the last `num_layers`), the backbone's width, heads and patch grid."""
    attention = feature_set.provenance.get("attention")
    if not attention:
        raise InputError(f"EVL needs token maps: feature set {feature_set.name!r} was not extracted with --features tokens.")
    stored = sorted(attention["blocks"])
    blocks = tuple(stored[-options["num_layers"]:] if options.get("num_layers") else stored)
    tokens, width = array_shape(feature_set, f"tokens/{blocks[0]}")
    side = math.isqrt(tokens - 1)
    if side * side != tokens - 1:
        raise InputError(f"EVL needs a square patch grid; token maps have {tokens - 1} patch tokens.")
    return EVLConfig(num_classes=num_classes, width=width, blocks=blocks, num_frames=num_frames, grid=(side, side),
                     backbone_heads=attention["num_heads"], backbone_norm_eps=attention["norm_eps"], **options)


def load_qk(head: "EVLDecoder", feature_set: FeatureSource, train_set: Sequence[dict]) -> None:
    """Before training: the backbone's frozen norm and q/k weights, which cross-frame attention recomputes q/k with."""
    if head.config.cross_frame_attention:
        head.load_frozen_qk(feature_set.frozen_weights())


@register_head("evl", config=EVLConfig, size=size_evl, task="classification", prepare=load_qk,
               summary="EVL decoder: a learnable query, one decoder layer per stored block (the last `--num-layers`), "
                       "with depthwise temporal convolution, temporal position embedding and cross-frame attention "
                       "from the blocks' own frozen q/k; width = backbone width, MLP factor 4; EVL's reference "
                       "initialisation (Xavier q/k/v/out and MLP matrices, N(0, 1e-6) MLP biases, the temporal "
                       "convolution's default init)",
               reads="`tokens/<b>`, block inputs")
class EVLDecoder(nn.Module):
    """Logits from `inputs["tokens/<b>"]` (B, T, 1 + L, C) and, with cross-frame attention,
    `inputs["block_input/<b>"]` of the same shape, for every configured block b."""

    def __init__(self, config: EVLConfig) -> None:
        super().__init__()
        self.config = config
        n, width = len(config.blocks), config.width
        self.query = nn.Parameter(torch.zeros(1, 1, width))
        self.layers = nn.ModuleList(
            CrossAttentionLayer(width, config.decoder_heads, config.mlp_factor, config.mlp_dropout, QuickGELU)
            for _ in range(n)
        )
        self.temporal_conv = nn.ModuleList(TemporalConv(width) for _ in range(n)) if config.temporal_conv else None
        self.temporal_pos = (nn.Parameter(torch.zeros(n, config.num_frames, width))
                             if config.temporal_pos_embed else None)
        self.cross_frame = (nn.ModuleList(CrossFrameAttention(config.grid, width) for _ in range(n))
                            if config.cross_frame_attention else None)
        if config.cross_frame_attention:
            for b in config.blocks:  # frozen q/k of the backbone; filled by `load_frozen_qk`
                for key in QK_KEYS:
                    shape = (width,) if key.startswith("norm") or key.endswith("bias") else (width, width)
                    self.register_buffer(f"qk_{b}_{key}", torch.zeros(shape))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(config.cls_dropout), nn.Linear(width, config.num_classes))
        EVL_INITS[config.init](self)

    @property
    def required_arrays(self) -> list[str]:
        arrays = [f"tokens/{b}" for b in self.config.blocks]
        if self.config.cross_frame_attention:
            arrays += [f"block_input/{b}" for b in self.config.blocks]
        return arrays

    def load_frozen_qk(self, frozen: dict[str, np.ndarray]) -> None:
        """Copy the backbone's frozen norm and q/k weights (a feature set's `frozen_weights()`)."""
        for b in self.config.blocks:
            for key in QK_KEYS:
                getattr(self, f"qk_{b}_{key}").copy_(torch.as_tensor(frozen[f"block{b}/{key}"]))

    def block_qk(self, block: int, block_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = {key: getattr(self, f"qk_{block}_{key}") for key in QK_KEYS}
        return attention_qk(block_input, weights, self.config.backbone_heads, self.config.backbone_norm_eps)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        first = inputs[f"tokens/{self.config.blocks[0]}"]
        batch, frames = first.shape[:2]
        if self.temporal_pos is not None and frames > self.config.num_frames:
            raise ValueError(f"{frames} frames exceed num_frames={self.config.num_frames} of this head")
        query = self.query.expand(batch, -1, -1)
        for i, b in enumerate(self.config.blocks):
            x = inputs[f"tokens/{b}"].float()
            if self.temporal_conv is not None:
                x = x + self.temporal_conv[i](x)
            if self.temporal_pos is not None:
                x = x + self.temporal_pos[i, :frames].view(1, frames, 1, -1)
            if self.cross_frame is not None:
                x = x + self.cross_frame[i](*self.block_qk(b, inputs[f"block_input/{b}"]))
            query = self.layers[i](query, x.flatten(1, 2))
        return self.head(query[:, 0])
