"""The heads' building blocks against torch's own modules."""

from __future__ import annotations

import pytest
import torch

from freezeframe.heads.layers import CrossAttentionLayer, few_query_attention


@pytest.mark.parametrize("heads,queries", [(12, 1), (4, 3)])
def test_few_query_attention_equals_torchs_multihead_attention(heads, queries):
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(96, heads, batch_first=True)
    for bias in (attn.in_proj_bias, attn.out_proj.bias):  # (zero by default: biases must count too)
        torch.nn.init.normal_(bias, std=0.5)
    query = torch.randn(3, queries, 96, requires_grad=True)
    memory = torch.randn(3, 40, 96, requires_grad=True)
    leaves = [query, memory, attn.in_proj_weight, attn.out_proj.weight]

    expected = attn(query, memory, memory, need_weights=False)[0]
    expected_grads = torch.autograd.grad((expected * torch.linspace(-1, 1, 96)).sum(), leaves)
    got = few_query_attention(attn, query, memory)
    grads = torch.autograd.grad((got * torch.linspace(-1, 1, 96)).sum(), leaves)

    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for grad, wanted in zip(grads, expected_grads):
        torch.testing.assert_close(grad, wanted, atol=1e-5, rtol=1e-4)


def test_cross_attention_layer_folds_only_where_it_saves_work():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(64, heads=4).eval()
    memory = torch.randn(2, 30, 64)
    for queries in (1, 16):  # 2 * 1 * 4 <= 64 folds; 2 * 16 * 4 > 64 runs MultiheadAttention
        query = torch.randn(2, queries, 64)
        normed = layer.norm_query(query)
        attended = layer.attn(normed, layer.norm_memory(memory), layer.norm_memory(memory), need_weights=False)[0]
        expected = query + attended
        expected = expected + layer.mlp(layer.norm_mlp(expected))
        torch.testing.assert_close(layer(query, memory), expected, atol=1e-5, rtol=1e-5)


def test_cross_frame_attention_weights_each_key_by_its_offset_from_the_query():
    """EVL's cross-frame features, written out: for frame t, patch (i, j) gets sum over the previous frame's patches
    (u, v) of attention * prev_weight[offset (i - u, j - v)], plus the same with the next frame and next_weight."""
    from freezeframe.heads.evl import CrossFrameAttention

    torch.manual_seed(0)
    rows, cols, width, heads, dim, frames = 2, 3, 5, 2, 4, 3
    module = CrossFrameAttention((rows, cols), width)
    torch.nn.init.normal_(module.prev_weight)
    torch.nn.init.normal_(module.next_weight)
    q, k = torch.randn(2, frames, heads, 1 + rows * cols, dim), torch.randn(2, frames, heads, 1 + rows * cols, dim)
    got = module(q, k)

    def attention(t_q: int, t_k: int) -> torch.Tensor:  # (B, L, L), mean over heads, CLS dropped
        logits = q[:, t_q, :, 1:] @ k[:, t_k, :, 1:].transpose(-1, -2) / dim ** 0.5
        return logits.softmax(-1).mean(1)

    expected = torch.zeros(2, frames, 1 + rows * cols, width)
    patches = [(i, j) for i in range(rows) for j in range(cols)]
    for t in range(frames):
        for other, weight in ((t - 1, module.prev_weight), (t + 1, module.next_weight)):
            if not 0 <= other < frames:
                continue
            attn = attention(t, other)
            for a, (i, j) in enumerate(patches):
                for b, (u, v) in enumerate(patches):
                    offset = (i - u + rows - 1) * (2 * cols - 1) + (j - v + cols - 1)
                    expected[:, t, 1 + a] += attn[:, a, b, None] * weight[offset]
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-5)
