"""Symmetric InfoNCE between paired video and text embeddings, in VideoCLIP's and ALPRO's forms.

Row i of `video` is paired with row i of `text`; every other row of the batch is a negative.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def info_nce(logits: torch.Tensor, mean: bool = True) -> torch.Tensor:
    """The video->text and text->video cross-entropies of a (batch, batch) logit matrix: their mean, or sum."""
    target = torch.arange(len(logits), device=logits.device)
    both = F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)
    return both / 2 if mean else both


class VideoClipLoss(nn.Module):
    """VideoCLIP's form: raw dot products of the pooled outputs, no normalisation and no temperature, and the two
    cross-entropies summed (fairseq MMPT's MMContraLoss: gradients and --clip-grad are on that scale)."""

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return info_nce(video.float() @ text.float().T, mean=False)


class AlproLoss(nn.Module):
    """ALPRO's form: L2-normalised embeddings, cosine similarities over a learnable temperature (init 0.07)."""

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1 / temperature)))

    @property
    def temperature(self) -> float:
        return float(torch.exp(-self.log_inv_temperature))

    def forward(self, video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        similarity = F.normalize(video.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
        return info_nce(similarity * self.log_inv_temperature.clamp(max=math.log(100)).exp())


LOSSES = {"videoclip": VideoClipLoss, "alpro": AlproLoss}
