"""The compute device a `--device` option names: one rule for extraction and training."""

from __future__ import annotations

import torch

from freezeframe.errors import InputError


def resolve_device(spec: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU; an unavailable CUDA device is a one-line error."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise InputError(f"unknown --device {spec!r}; use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {spec} was requested but no CUDA device is available.")
    return device
