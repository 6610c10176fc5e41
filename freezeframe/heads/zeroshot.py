"""Zero-shot classification: videos' mean frame embeddings against fixed class (prompt) embeddings, no training."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ZeroShotClassifier(nn.Module):
    """Cosine similarity of each video's mean L2-normalised frame embedding to each class embedding.

    Input (videos, frames, dim) or (videos, dim); output logits (videos, classes), scaled by `logit_scale`.
    """

    def __init__(self, class_embeddings: torch.Tensor, logit_scale: float = 100.0) -> None:
        super().__init__()
        self.register_buffer("classes", F.normalize(class_embeddings.float(), dim=-1))
        self.logit_scale = logit_scale

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = F.normalize(embeddings.float(), dim=-1)
        if x.dim() == 3:
            x = F.normalize(x.mean(dim=1), dim=-1)
        return self.logit_scale * x @ self.classes.T
