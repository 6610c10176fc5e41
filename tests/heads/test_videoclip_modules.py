"""The VideoCLIP towers: padding is invisible, shapes and limits, and the two towers learn to align."""

from __future__ import annotations

import pytest
import torch

from freezeframe.heads.contrastive import AlproLoss, VideoClipLoss
from freezeframe.heads.videoclip import VideoCLIP, VideoClipConfig, masked_mean

CONFIG = VideoClipConfig(video_dim=12, text_dim=10, width=32, heads=4, dropout=0.0, max_seconds=8, max_tokens=6)


def test_masked_mean_ignores_masked_positions():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


def test_padding_changes_nothing():
    torch.manual_seed(0)
    model = VideoCLIP(CONFIG).eval()
    features, tokens = torch.randn(1, 3, 12), torch.randn(1, 4, 10)
    short = model(features, torch.ones(1, 3), tokens, torch.ones(1, 4))
    padded = model(torch.cat([features, 9 * torch.randn(1, 4, 12)], dim=1),
                   torch.tensor([[1, 1, 1, 0, 0, 0, 0]]),
                   torch.cat([tokens, 9 * torch.randn(1, 2, 10)], dim=1), torch.tensor([[1, 1, 1, 1, 0, 0]]))
    for a, b in zip(short, padded):
        assert a.shape == (1, 32)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="max_seconds"):
        model.video(torch.randn(1, 9, 12), torch.ones(1, 9))


@pytest.mark.parametrize("loss_kind", [VideoClipLoss, AlproLoss])
def test_towers_learn_to_retrieve_paired_items(loss_kind):
    """Synthetic pairs: text tokens and video seconds are noisy views of one latent per item."""
    torch.manual_seed(1)
    latent = torch.randn(16, 6)
    video_map, text_map = torch.randn(6, 12), torch.randn(6, 10)
    features = (latent @ video_map)[:, None].repeat(1, 4, 1) + 0.3 * torch.randn(16, 4, 12)
    tokens = (latent @ text_map)[:, None].repeat(1, 3, 1) + 0.3 * torch.randn(16, 3, 10)
    model, loss = VideoCLIP(CONFIG), loss_kind()
    optimizer = torch.optim.AdamW([*model.parameters(), *loss.parameters()], lr=3e-3)

    def r1() -> float:
        model.eval()
        with torch.no_grad():
            v, t = model(features, torch.ones(16, 4), tokens, torch.ones(16, 3))
        model.train()
        return float(((t @ v.T).argmax(dim=1) == torch.arange(16)).float().mean())

    before = r1()
    for _ in range(150):
        optimizer.zero_grad()
        loss(*model(features, torch.ones(16, 4), tokens, torch.ones(16, 3))).backward()
        optimizer.step()
    assert before <= 0.25 and r1() >= 0.9  # chance is 1/16
