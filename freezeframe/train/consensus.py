"""ClipBERT-style consensus: a classifier head scores each of N short clips, the logits are combined per video.

`attach_consensus(head, selection)` adds two forward hooks to any classifier head (probe, temporal, EVL):
inputs of (batch, clips, frames, ...) are scored as (batch * clips) items, and the (batch, clips, classes)
logits are reduced by mean, log-sum-exp or max over the clips, inside the loss in training and in evaluation
alike. Hooks leave the head's parameters and state dict unchanged, so a run's checkpoints load as before.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from freezeframe.train.datasets import CLIP_MODES, FrameSelection

REDUCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mean": lambda logits: logits.mean(dim=1),
    "lse": lambda logits: torch.logsumexp(logits, dim=1),
    "max": lambda logits: logits.amax(dim=1),
}


def consensus(logits: torch.Tensor, how: str) -> torch.Tensor:
    """(batch, clips, classes) per-clip logits -> (batch, classes)."""
    return REDUCTIONS[how](logits)


def attach_consensus(head: nn.Module, selection: FrameSelection) -> nn.Module:
    """Score each clip of `clips[-random]:N:T` inputs and combine the logits; other selections leave it alone."""
    if selection.mode not in CLIP_MODES:
        return head
    clips: list[int] = []

    def flatten(module: nn.Module, args: tuple) -> tuple:
        (inputs,) = args  # {array: (batch, clips, frames, ...)}
        first = next(iter(inputs.values()))
        clips[:] = [first.shape[0], first.shape[1]]
        return ({name: value.flatten(0, 1) for name, value in inputs.items()},)

    def combine(module: nn.Module, args: tuple, logits: torch.Tensor) -> torch.Tensor:
        batch, count = clips
        return consensus(logits.view(batch, count, *logits.shape[1:]), selection.consensus)

    head.register_forward_pre_hook(flatten)
    head.register_forward_hook(combine)
    return head
