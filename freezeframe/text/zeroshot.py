"""Zero-shot class embeddings: class-name prompts through a CLIP text tower (the job is `train.zeroshot`)."""

from __future__ import annotations

from pathlib import Path

import torch

from freezeframe.errors import InputError
from freezeframe.text.encoders import ClipTextEncoder
from freezeframe.userfiles import read_user_text

DEFAULT_TEMPLATES = ("a video of {}.", "a photo of {}.")


def read_lines(path: str | Path, what: str) -> list[str]:
    """Non-empty stripped lines of a small text file (classes, templates), read with the list-file size limit."""
    lines = [line.strip() for line in read_user_text(path, f"a {what} file").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{what} file {path} is empty.")
    return lines


def class_embeddings(encoder: ClipTextEncoder, classes: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """(classes, dim): per class, the normalised mean of its L2-normalised template prompt embeddings, as
    open_clip's `build_zero_shot_classifier` computes them."""
    from open_clip import build_zero_shot_classifier

    for template in templates:
        if "{}" not in template:
            raise InputError(f"template {template!r} has no {{}} for the class name.")
    return build_zero_shot_classifier(encoder.model, encoder.tokenizer, classes, list(templates),
                                      device=encoder.device).T.float().cpu()


