"""The two InfoNCE forms against a hand computation, and what they reward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from freezeframe.heads.contrastive import AlproLoss, VideoClipLoss


def by_hand(logits: torch.Tensor, mean: bool = True) -> float:
    n = len(logits)
    v2t = -sum(math.log(math.exp(logits[i, i]) / sum(math.exp(logits[i, j]) for j in range(n))) for i in range(n)) / n
    t2v = -sum(math.log(math.exp(logits[i, i]) / sum(math.exp(logits[j, i]) for j in range(n))) for i in range(n)) / n
    return (v2t + t2v) / 2 if mean else v2t + t2v


def test_videoclip_form_is_infonce_on_raw_dot_products():
    torch.manual_seed(0)
    video, text = torch.randn(5, 8), torch.randn(5, 8)
    assert VideoClipLoss()(video, text).item() == pytest.approx(by_hand(video @ text.T, mean=False), rel=1e-5)
    # no normalisation: scaling the embeddings changes the loss
    assert VideoClipLoss()(2 * video, text).item() != pytest.approx(VideoClipLoss()(video, text).item())


def test_alpro_form_is_infonce_on_cosines_over_a_learnable_temperature():
    torch.manual_seed(1)
    video, text = torch.randn(6, 8), torch.randn(6, 8)
    loss = AlproLoss(temperature=0.05)
    logits = F.normalize(video, dim=-1) @ F.normalize(text, dim=-1).T / 0.05
    assert loss(video, text).item() == pytest.approx(by_hand(logits), rel=1e-5)
    assert loss(3 * video, text).item() == pytest.approx(loss(video, text).item(), rel=1e-5)  # scale-free
    loss(video, text).backward()
    assert loss.log_inv_temperature.grad is not None and loss.log_inv_temperature.grad.item() != 0


@pytest.mark.parametrize("loss", [VideoClipLoss(), AlproLoss()])
def test_matched_pairs_score_lower_than_shuffled_ones(loss):
    torch.manual_seed(2)
    video = torch.randn(8, 16)
    text = video + 0.1 * torch.randn(8, 16)
    assert loss(video, text).item() < loss(video, text[torch.randperm(8)]).item()
